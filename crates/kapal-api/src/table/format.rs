//! Field access and the formatting helpers the printers share (labels, selectors, access
//! modes, container lists, Go-style numbers).
//!
//! Accessors return the Go zero value for a missing or mistyped field, which is what the
//! upstream printers see after decoding.

use std::collections::BTreeSet;

use serde_json::{Number, Value};

/// A string field, `""` when absent.
pub(super) fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// An integer field, `0` when absent; floats are truncated.
pub(super) fn int(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).unwrap_or(0),
        _ => 0,
    }
}

/// A boolean field, `false` when absent.
pub(super) fn flag(v: &Value) -> bool {
    v.as_bool().unwrap_or(false)
}

/// The elements of a list field, empty when absent.
pub(super) fn items(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// The number of entries of a list or map field (`len()` in Go).
pub(super) fn len_of(v: &Value) -> i64 {
    let n = match v {
        Value::Array(a) => a.len(),
        Value::Object(m) => m.len(),
        _ => 0,
    };
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `s`, or `<none>` when it is empty.
pub(super) fn or_none(s: &str) -> String {
    if s.is_empty() { "<none>".to_string() } else { s.to_string() }
}

/// The Name cell: `metadata.name`.
pub(super) fn name(obj: &Value) -> Value {
    Value::from(text(&obj["metadata"]["name"]))
}

/// `labels.FormatLabels`: `k=v` pairs sorted as whole strings, joined by `,`; `<none>` if empty.
pub(super) fn labels(map: &Value) -> String {
    let mut pairs: Vec<String> = match map.as_object() {
        Some(m) => m.iter().map(|(k, v)| format!("{k}={}", text(v))).collect(),
        None => Vec::new(),
    };
    pairs.sort();
    or_none(&pairs.join(","))
}

/// `metav1.FormatLabelSelector`: the selector string, `<none>` when it selects everything or
/// nothing, `<error>` when it is invalid.
pub(super) fn label_selector(selector: &Value) -> String {
    match selector_string(selector) {
        Some(s) => or_none(&s),
        None => "<error>".to_string(),
    }
}

/// `LabelSelectorAsSelector(..).String()`: `""` for a nil or empty selector, `None` when the
/// selector is invalid (bad key or value, unknown operator, wrong number of values).
pub(super) fn selector_string(selector: &Value) -> Option<String> {
    let sel = match selector {
        Value::Null => return Some(String::new()),
        Value::Object(sel) => sel,
        _ => return None,
    };
    // (key, rendered requirement); sorted by key like `labels.Selector.Add`.
    let mut requirements: Vec<(&str, String)> = Vec::new();
    match sel.get("matchLabels").unwrap_or(&Value::Null) {
        Value::Null => {}
        Value::Object(m) => {
            for (key, value) in m {
                let value = value.as_str()?;
                if !is_qualified_name(key) || !is_label_value(value) {
                    return None;
                }
                requirements.push((key, format!("{key}={value}")));
            }
        }
        _ => return None,
    }
    match sel.get("matchExpressions").unwrap_or(&Value::Null) {
        Value::Null => {}
        Value::Array(exprs) => {
            for expr in exprs {
                let (key, rendered) = expression(expr)?;
                requirements.push((key, rendered));
            }
        }
        _ => return None,
    }
    requirements.sort_by(|a, b| a.0.cmp(b.0));
    Some(requirements.into_iter().map(|(_, r)| r).collect::<Vec<_>>().join(","))
}

/// One `matchExpressions` entry as a requirement string (`k in (a,b)`, `!k`, ...).
fn expression(expr: &Value) -> Option<(&str, String)> {
    let key = expr["key"].as_str()?;
    let mut values: Vec<&str> = match &expr["values"] {
        Value::Null => Vec::new(),
        Value::Array(vs) => vs.iter().map(Value::as_str).collect::<Option<_>>()?,
        _ => return None,
    };
    if !is_qualified_name(key) || !values.iter().all(|v| is_label_value(v)) {
        return None;
    }
    let rendered = match text(&expr["operator"]) {
        op @ ("In" | "NotIn") => {
            if values.is_empty() {
                return None;
            }
            values.sort_unstable();
            let word = if op == "In" { "in" } else { "notin" };
            format!("{key} {word} ({})", values.join(","))
        }
        "Exists" if values.is_empty() => key.to_string(),
        "DoesNotExist" if values.is_empty() => format!("!{key}"),
        _ => return None,
    };
    Some((key, rendered))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if prefix.is_some_and(|p| !is_dns_subdomain(p)) {
        return false;
    }
    !name.is_empty() && is_label_value(name)
}

/// A label value: empty, or at most 63 alphanumerics, `-`, `_` and `.`, alphanumeric at both
/// ends.
fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (None, _) | (_, None) => true,
        (Some(first), Some(last)) => {
            bytes.len() <= 63
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
    }
}

/// An RFC 1123 DNS subdomain: dot-separated lower-case labels, at most 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let bytes = label.as_bytes();
            match (bytes.first(), bytes.last()) {
                (Some(first), Some(last)) => {
                    is_lower_alnum(*first)
                        && is_lower_alnum(*last)
                        && bytes.iter().all(|b| is_lower_alnum(*b) || *b == b'-')
                }
                _ => false,
            }
        })
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// The wide CONTAINERS and IMAGES cells of a pod spec: names and images in order, joined by
/// `,`.
pub(super) fn containers(pod_spec: &Value) -> (Value, Value) {
    let list = items(&pod_spec["containers"]);
    let names: Vec<&str> = list.iter().map(|c| text(&c["name"])).collect();
    let images: Vec<&str> = list.iter().map(|c| text(&c["image"])).collect();
    (Value::from(names.join(",")), Value::from(images.join(",")))
}

/// `GetAccessModesAsString`: de-duplicated, always in the order RWO, ROX, RWX, RWOP.
pub(super) fn access_modes(modes: &Value) -> String {
    let present: BTreeSet<&str> = items(modes).iter().map(text).collect();
    [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")]
        .iter()
        .filter(|(mode, _)| present.contains(mode))
        .map(|(_, short)| *short)
        .collect::<Vec<_>>()
        .join(",")
}

/// A resource quantity as stored (already canonical after defaulting); `0` when absent.
pub(super) fn quantity(v: &Value) -> String {
    match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => "0".to_string(),
    }
}

/// `Quantity.String()` on a pointer: like [`quantity`], but `<nil>` when absent.
pub(super) fn quantity_ptr(v: &Value) -> String {
    if v.is_null() { "<nil>".to_string() } else { quantity(v) }
}

/// An IntOrString field: a string as-is, a number as digits, `None` when absent.
pub(super) fn int_or_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) => Some(int(v).to_string()),
        _ => None,
    }
}

/// `net.JoinHostPort`: IPv6 hosts are bracketed.
pub(super) fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// The first `max` entries joined by `,`, with ` + N more...` when `count` exceeds them.
/// `empty` is used when nothing was listed.
pub(super) fn list_with_more(list: &[String], count: usize, max: usize, empty: &str) -> String {
    let shown = list.iter().take(max).cloned().collect::<Vec<_>>().join(",");
    if count > max {
        format!("{shown} + {} more...", count - max)
    } else if shown.is_empty() {
        empty.to_string()
    } else {
        shown
    }
}

/// The values of load-balancer ingress points (`ip`, else `hostname`), de-duplicated and
/// sorted.
pub(super) fn load_balancer_ingress(ingress: &Value) -> Vec<String> {
    let set: BTreeSet<&str> = items(ingress)
        .iter()
        .map(|i| if text(&i["ip"]).is_empty() { text(&i["hostname"]) } else { text(&i["ip"]) })
        .filter(|s| !s.is_empty())
        .collect();
    set.into_iter().map(str::to_string).collect()
}

/// A JSON number the way Go's `fmt.Print` shows the value the JSON decoder produced: integers as
/// digits, floats in `%v` (`%g`, shortest) form such as `1.5` or `1e+06`.
pub(super) fn go_number(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    let Some((neg, digits, exp)) = float_parts(f) else {
        return "0".to_string();
    };
    let sign = if neg { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{dot}e{esign}{:02}", exp.unsigned_abs())
    } else {
        format!("{sign}{}", fixed(&digits, exp))
    }
}

/// The sign, shortest round-trip decimal digits and decimal exponent of a finite, non-zero
/// float (`1234.5` → `(false, "12345", 3)`); `None` for zero and non-finite values.
fn float_parts(f: f64) -> Option<(bool, String, i32)> {
    if f == 0.0 || !f.is_finite() {
        return None;
    }
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e')?;
    let exp: i32 = exp.parse().ok()?;
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    Some((f < 0.0, digits, exp))
}

/// Digits placed around the decimal point for exponent `exp` (`("15", 0)` → `1.5`).
fn fixed(digits: &str, exp: i32) -> String {
    let point = exp + 1;
    let len = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point >= len {
        format!("{digits}{}", "0".repeat((point - len) as usize))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{int}.{frac}")
    }
}

/// A value the way Go's `encoding/json` marshals the decoded form: object keys sorted, `<`,
/// `>` and `&` escaped, floats without a trailing `.0`.
pub(super) fn go_json(v: &Value) -> String {
    let mut out = String::new();
    write_go_json(v, &mut out);
    out
}

fn write_go_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&go_json_number(n)),
        Value::String(s) => out.push_str(&go_json_string(s)),
        Value::Array(list) => {
            out.push('[');
            for (i, item) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&go_json_string(key));
                out.push(':');
                write_go_json(value, out);
            }
            out.push('}');
        }
    }
}

fn go_json_number(n: &Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    let Some((neg, digits, exp)) = float_parts(f) else {
        return "0".to_string();
    };
    let sign = if neg { "-" } else { "" };
    let abs = f.abs();
    if !(1e-6..1e21).contains(&abs) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{dot}e{esign}{}", exp.unsigned_abs())
    } else {
        format!("{sign}{}", fixed(&digits, exp))
    }
}

fn go_json_string(s: &str) -> String {
    serde_json::to_string(s)
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_sort_whole_pairs() {
        assert_eq!(labels(&json!({"b": "1", "a": "2", "a.b": "x"})), "a.b=x,a=2,b=1");
        assert_eq!(labels(&json!({})), "<none>");
        assert_eq!(labels(&Value::Null), "<none>");
    }

    #[test]
    fn selectors_render_like_apimachinery() {
        let sel = json!({
            "matchLabels": {"tier": "web", "app": "shop"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "zone", "operator": "NotIn", "values": ["b", "a"]},
                {"key": "gpu", "operator": "Exists"},
                {"key": "spot", "operator": "DoesNotExist", "values": []},
            ]
        });
        assert_eq!(label_selector(&sel), "app=shop,env in (dev,prod),gpu,!spot,tier=web,zone notin (a,b)");
        assert_eq!(label_selector(&json!({})), "<none>");
        assert_eq!(label_selector(&json!({"matchLabels": {}})), "<none>");
        assert_eq!(label_selector(&Value::Null), "<none>");
        assert_eq!(selector_string(&Value::Null).as_deref(), Some(""));
    }

    #[test]
    fn invalid_selectors_are_errors() {
        for bad in [
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
            json!({"matchLabels": {"bad key": "x"}}),
            json!({"matchLabels": {"a": "-x"}}),
            json!({"matchLabels": {"Example.com/a": "x"}}),
            json!({"matchLabels": "a=b"}),
            json!("a=b"),
        ] {
            assert_eq!(label_selector(&bad), "<error>", "{bad}");
        }
        assert_eq!(
            label_selector(&json!({"matchLabels": {"app.kubernetes.io/name": "x", "e": ""}})),
            "app.kubernetes.io/name=x,e="
        );
    }

    #[test]
    fn access_modes_have_a_fixed_order() {
        let modes = json!(["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce", "ReadWriteOncePod", "ReadOnlyMany"]);
        assert_eq!(access_modes(&modes), "RWO,ROX,RWX,RWOP");
        assert_eq!(access_modes(&Value::Null), "");
    }

    #[test]
    fn list_with_more_counts_the_hidden_entries() {
        let list: Vec<String> = ["a", "b", "c", "d", "e"].iter().map(|s| s.to_string()).collect();
        assert_eq!(list_with_more(&list, 5, 3, "<unset>"), "a,b,c + 2 more...");
        assert_eq!(list_with_more(&list[..2], 2, 3, "<unset>"), "a,b");
        assert_eq!(list_with_more(&[], 0, 3, "<unset>"), "<unset>");
    }

    #[test]
    fn go_numbers() {
        let n = |v: Value| match v {
            Value::Number(n) => go_number(&n),
            _ => unreachable!(),
        };
        assert_eq!(n(json!(3)), "3");
        assert_eq!(n(json!(-7)), "-7");
        assert_eq!(n(json!(1.5)), "1.5");
        assert_eq!(n(json!(3.0)), "3");
        assert_eq!(n(json!(123456.0)), "123456");
        assert_eq!(n(json!(1000000.0)), "1e+06");
        assert_eq!(n(json!(1234567.5)), "1.2345675e+06");
        assert_eq!(n(json!(0.0001)), "0.0001");
        assert_eq!(n(json!(0.00001)), "1e-05");
        assert_eq!(n(json!(0.0)), "0");
    }

    #[test]
    fn go_json_sorts_keys_and_escapes_html() {
        let v = json!({"b": [1, 2.5, 3.0], "a": {"z": null, "y": "<&>"}, "c": 1e21});
        assert_eq!(go_json(&v), r#"{"a":{"y":"\u003c\u0026\u003e","z":null},"b":[1,2.5,3],"c":1e+21}"#);
    }

    #[test]
    fn join_host_port_brackets_ipv6() {
        assert_eq!(join_host_port("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(join_host_port("fd00::1", 80), "[fd00::1]:80");
    }
}
