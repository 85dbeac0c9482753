//! Building causes with upstream's wording, rendering values the way Go's `%#v` does, and
//! reading JSON fields without trusting their types.
//!
//! Upstream prints a bad value by its Go type: strings quoted, numbers bare, maps and structs
//! as `map[string]string{"a":"b"}`. The helpers here reproduce that for the shapes users meet
//! (labels, selectors, string lists) so a Kapal message reads like kube-apiserver's.

use serde_json::{Map, Value};

use super::path::Path;
use crate::status::Cause;

/// A causes list being filled by a validator.
pub(crate) type Errs = Vec<Cause>;

// ---- causes -------------------------------------------------------------------------------

/// `Required value` or `Required value: detail`.
pub(crate) fn required(path: &Path, detail: &str) -> Cause {
    if detail.is_empty() {
        Cause::required(path)
    } else {
        Cause::new("FieldValueRequired", path, format!("Required value: {detail}"))
    }
}

/// `Invalid value: "s": detail`.
pub(crate) fn invalid_str(path: &Path, s: &str, detail: &str) -> Cause {
    Cause::invalid(path, &Value::String(s.to_string()), detail)
}

/// `Invalid value: 5: detail`.
pub(crate) fn invalid_int(path: &Path, i: i64, detail: &str) -> Cause {
    Cause::invalid(path, &Value::from(i), detail)
}

/// `Invalid value: <shown>: detail` with `shown` already rendered (Go `%#v` style); an empty
/// detail leaves just `Invalid value: <shown>`, as upstream prints it.
pub(crate) fn invalid_raw(path: &Path, shown: &str, detail: &str) -> Cause {
    let message =
        if detail.is_empty() { format!("Invalid value: {shown}") } else { format!("Invalid value: {shown}: {detail}") };
    Cause::new("FieldValueInvalid", path, message)
}

/// `Invalid value: <json>: detail` for a value with no better Go rendering.
pub(crate) fn invalid_json(path: &Path, value: &Value, detail: &str) -> Cause {
    Cause::invalid(path, value, detail)
}

/// `Forbidden: detail`.
pub(crate) fn forbidden(path: &Path, detail: &str) -> Cause {
    Cause::forbidden(path, detail)
}

/// `Duplicate value: "s"`.
pub(crate) fn duplicate_str(path: &Path, s: &str) -> Cause {
    Cause::duplicate(path, &Value::String(s.to_string()))
}

/// `Duplicate value: <shown>` with a pre-rendered value.
pub(crate) fn duplicate_raw(path: &Path, shown: &str) -> Cause {
    Cause::new("FieldValueDuplicate", path, format!("Duplicate value: {shown}"))
}

/// `Unsupported value: "v": supported values: "a", "b"`.
pub(crate) fn not_supported(path: &Path, value: &str, supported: &[&str]) -> Cause {
    Cause::not_supported(path, &Value::String(value.to_string()), supported)
}

/// `Unsupported value: <shown>: supported values: "a", "b"` with a pre-rendered value.
pub(crate) fn not_supported_raw(path: &Path, shown: &str, supported: &[&str]) -> Cause {
    let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
    Cause::new(
        "FieldValueNotSupported",
        path,
        format!("Unsupported value: {shown}: supported values: {}", list.join(", ")),
    )
}

/// `Not found: "s"`.
pub(crate) fn not_found(path: &Path, s: &str) -> Cause {
    Cause::new("FieldValueNotFound", path, format!("Not found: {}", go_quote(s)))
}

/// `Too long: may not be more than N bytes`.
pub(crate) fn too_long(path: &Path, max: usize) -> Cause {
    Cause::too_long(path, max)
}

/// `Too many: N: must have at most M items`.
pub(crate) fn too_many(path: &Path, actual: usize, max: usize) -> Cause {
    Cause::new("FieldValueTooMany", path, format!("Too many: {actual}: must have at most {max} items"))
}

/// `field is immutable` on a value rendered by the caller.
pub(crate) fn immutable_raw(path: &Path, shown: &str) -> Cause {
    invalid_raw(path, shown, "field is immutable")
}

/// A wrong JSON type, worded as kube-apiserver words schema type errors.
pub(crate) fn type_invalid(path: &Path, value: &Value, expected: &str) -> Cause {
    let actual = json_type(value);
    Cause::new(
        "FieldValueTypeInvalid",
        path,
        format!("Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""),
    )
}

/// The JSON type name of a value, as OpenAPI names them.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

// ---- format checks ------------------------------------------------------------------------

/// Reports a present, non-empty string field whose value is not one of `supported`.
pub(crate) fn check_enum(v: &Value, key: &str, path: &Path, supported: &[&str], errs: &mut Errs) {
    if let Some(s) = str_at(v, key, path, errs)
        && !s.is_empty()
        && !supported.contains(&s)
    {
        errs.push(not_supported(&path.child(key), s, supported));
    }
}

/// One cause per problem of `v` as a DNS label.
pub(crate) fn dns_label(v: &str, path: &Path, errs: &mut Errs) {
    for msg in super::names::is_dns1123_label(v) {
        errs.push(invalid_str(path, v, &msg));
    }
}

/// One cause per problem of `v` as a DNS subdomain.
pub(crate) fn dns_subdomain(v: &str, path: &Path, errs: &mut Errs) {
    for msg in super::names::is_dns1123_subdomain(v) {
        errs.push(invalid_str(path, v, &msg));
    }
}

/// One cause per problem of `v` as a qualified name.
pub(crate) fn qualified_name(v: &str, path: &Path, errs: &mut Errs) {
    for msg in super::names::is_qualified_name(v) {
        errs.push(invalid_str(path, v, &msg));
    }
}

// ---- Go-style rendering -------------------------------------------------------------------

/// A string quoted as Go's `%q` quotes it (close enough: JSON escaping).
pub(crate) fn go_quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// `map[string]string{"a":"b", "c":"d"}` (keys sorted, as fmt prints maps), or
/// `map[string]string(nil)` when absent.
pub(crate) fn go_string_map(map: Option<&Map<String, Value>>) -> String {
    let Some(map) = map else { return "map[string]string(nil)".to_string() };
    let mut pairs: Vec<(&String, String)> = map.iter().map(|(k, v)| (k, scalar_text(v))).collect();
    pairs.sort();
    let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v))).collect();
    format!("map[string]string{{{}}}", body.join(", "))
}

/// `[]string{"a", "b"}`, or `[]string(nil)` when absent.
pub(crate) fn go_string_slice(list: Option<&Vec<Value>>) -> String {
    let Some(list) = list else { return "[]string(nil)".to_string() };
    let items: Vec<String> = list.iter().map(|v| go_quote(&scalar_text(v))).collect();
    format!("[]string{{{}}}", items.join(", "))
}

/// A `metav1.LabelSelector` as `%#v` prints it after pointer dereference:
/// `v1.LabelSelector{MatchLabels:map[string]string{"app":"web"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}`.
pub(crate) fn go_label_selector(sel: Option<&Value>) -> String {
    let Some(Value::Object(sel)) = sel else { return "null".to_string() };
    let labels = go_string_map(sel.get("matchLabels").and_then(Value::as_object));
    let exprs = match sel.get("matchExpressions").and_then(Value::as_array) {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(list) => {
            let items: Vec<String> = list
                .iter()
                .map(|e| {
                    let key = e.get("key").map(scalar_text).unwrap_or_default();
                    let op = e.get("operator").map(scalar_text).unwrap_or_default();
                    let values = go_string_slice(e.get("values").and_then(Value::as_array));
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{values}}}",
                        go_quote(&key),
                        go_quote(&op)
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}")
}

/// The text of a scalar: strings as-is, anything else as JSON.
pub(crate) fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---- typed field access -------------------------------------------------------------------

/// A field of an object, treating JSON `null` and non-objects as absent.
pub(crate) fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v.get(key) {
        None | Some(Value::Null) => None,
        Some(x) => Some(x),
    }
}

/// A string field; a non-string is reported and read as absent.
pub(crate) fn str_at<'a>(v: &'a Value, key: &str, path: &Path, errs: &mut Errs) -> Option<&'a str> {
    let x = get(v, key)?;
    match x.as_str() {
        Some(s) => Some(s),
        None => {
            errs.push(type_invalid(&path.child(key), x, "string"));
            None
        }
    }
}

/// A string field, `""` when absent or of the wrong type (the type is reported).
pub(crate) fn str_or_empty<'a>(v: &'a Value, key: &str, path: &Path, errs: &mut Errs) -> &'a str {
    str_at(v, key, path, errs).unwrap_or("")
}

/// An integer field; a non-integer is reported and read as absent.
pub(crate) fn int_at(v: &Value, key: &str, path: &Path, errs: &mut Errs) -> Option<i64> {
    let x = get(v, key)?;
    match x.as_i64() {
        Some(i) => Some(i),
        None => {
            errs.push(type_invalid(&path.child(key), x, "integer"));
            None
        }
    }
}

/// A boolean field; a non-boolean is reported and read as absent.
pub(crate) fn bool_at(v: &Value, key: &str, path: &Path, errs: &mut Errs) -> Option<bool> {
    let x = get(v, key)?;
    match x.as_bool() {
        Some(b) => Some(b),
        None => {
            errs.push(type_invalid(&path.child(key), x, "boolean"));
            None
        }
    }
}

/// An object field; a non-object is reported and read as absent.
pub(crate) fn obj_at<'a>(v: &'a Value, key: &str, path: &Path, errs: &mut Errs) -> Option<&'a Value> {
    let x = get(v, key)?;
    if x.is_object() {
        Some(x)
    } else {
        errs.push(type_invalid(&path.child(key), x, "object"));
        None
    }
}

/// An array field; a non-array is reported and read as absent.
pub(crate) fn arr_at<'a>(v: &'a Value, key: &str, path: &Path, errs: &mut Errs) -> Option<&'a Vec<Value>> {
    let x = get(v, key)?;
    match x.as_array() {
        Some(a) => Some(a),
        None => {
            errs.push(type_invalid(&path.child(key), x, "array"));
            None
        }
    }
}

/// The elements of an array field, empty when absent.
pub(crate) fn items<'a>(v: &'a Value, key: &str, path: &Path, errs: &mut Errs) -> &'a [Value] {
    arr_at(v, key, path, errs).map(Vec::as_slice).unwrap_or(&[])
}

/// A list of strings; elements of the wrong type are reported at their index and skipped.
pub(crate) fn str_list<'a>(v: &'a Value, key: &str, path: &Path, errs: &mut Errs) -> Vec<&'a str> {
    let p = path.child(key);
    items(v, key, path, errs)
        .iter()
        .enumerate()
        .filter_map(|(i, x)| match x.as_str() {
            Some(s) => Some(s),
            None => {
                errs.push(type_invalid(&p.index(i), x, "string"));
                None
            }
        })
        .collect()
}

/// A `map[string]string` field (labels, annotations, data): `None` when absent; values of the
/// wrong type are reported at their key and skipped.
pub(crate) fn str_map<'a>(v: &'a Value, key: &str, path: &Path, errs: &mut Errs) -> Option<Vec<(&'a str, &'a str)>> {
    let x = get(v, key)?;
    let p = path.child(key);
    let Some(map) = x.as_object() else {
        errs.push(type_invalid(&p, x, "object"));
        return None;
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, val) in map {
        match val {
            Value::String(s) => out.push((k.as_str(), s.as_str())),
            // Upstream decodes a null map value as "".
            Value::Null => out.push((k.as_str(), "")),
            other => errs.push(type_invalid(&p.key(k), other, "string")),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_rendering_matches_fmt() {
        let labels = json!({"b": "2", "a": "1"});
        assert_eq!(go_string_map(labels.as_object()), r#"map[string]string{"a":"1", "b":"2"}"#);
        assert_eq!(go_string_map(None), "map[string]string(nil)");
        let sel = json!({"matchLabels": {"app": "b"}});
        assert_eq!(
            go_label_selector(Some(&sel)),
            r#"v1.LabelSelector{MatchLabels:map[string]string{"app":"b"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"#
        );
    }

    #[test]
    fn wrong_types_are_reported_not_trusted() {
        let v = json!({"replicas": "three", "name": 5});
        let mut errs = Vec::new();
        assert_eq!(int_at(&v, "replicas", &Path::new("spec"), &mut errs), None);
        assert_eq!(str_at(&v, "name", &Path::new("metadata"), &mut errs), None);
        assert_eq!(errs[0].reason, "FieldValueTypeInvalid");
        assert_eq!(errs[0].field, "spec.replicas");
        assert_eq!(
            errs[0].message,
            r#"Invalid value: "string": spec.replicas in body must be of type integer: "string""#
        );
        assert_eq!(errs[1].field, "metadata.name");
    }
}
