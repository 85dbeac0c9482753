//! Equality of JSON objects as `apiequality.Semantic.DeepEqual` sees the typed objects they
//! decode to: a missing field equals its zero value, empty and absent lists and maps are
//! equal, and quantities compare by value.

use serde_json::Value;

use super::quantity;

/// Maps whose values are quantities.
const QUANTITY_MAPS: &[&str] = &["limits", "requests", "overhead", "capacity", "hard", "allocatable"];

fn is_zero(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => !b,
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
    }
}

/// Whether `a` and `b` are semantically equal.
pub(crate) fn semantic_eq(a: Option<&Value>, b: Option<&Value>) -> bool {
    eq(a, b, false)
}

fn eq(a: Option<&Value>, b: Option<&Value>, quantities: bool) -> bool {
    if is_zero(a) && is_zero(b) {
        return true;
    }
    match (a, b) {
        // Inside a quantity map (`limits`, …) every value is a quantity.
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            x.keys().chain(y.keys()).all(|k| eq(x.get(k), y.get(k), quantities || QUANTITY_MAPS.contains(&k.as_str())))
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| eq(Some(p), Some(q), false))
        }
        (Some(x), Some(y)) if quantities => match (quantity::parse_json(x), quantity::parse_json(y)) {
            (Ok(p), Ok(q)) => p.cmp_value(&q) == std::cmp::Ordering::Equal,
            _ => x == y,
        },
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// A field-by-field account of how `new` differs from `old`, shaped like the `cmp.Diff`
/// output upstream appends to "may not change" errors: one `-`/`+` pair per changed field.
pub(crate) fn diff(type_name: &str, old: &Value, new: &Value) -> String {
    let mut out = format!("  {type_name}{{\n");
    let empty = serde_json::Map::new();
    let o = old.as_object().unwrap_or(&empty);
    let n = new.as_object().unwrap_or(&empty);
    for k in o.keys().chain(n.keys().filter(|k| !o.contains_key(*k))) {
        if semantic_eq(o.get(k), n.get(k)) {
            continue;
        }
        let field = go_field_name(k);
        let show = |v: Option<&Value>| v.map_or_else(|| "nil".to_string(), Value::to_string);
        out.push_str(&format!("- \t{field}: {},\n+ \t{field}: {},\n", show(o.get(k)), show(n.get(k))));
    }
    out.push_str("  }\n");
    out
}

fn go_field_name(json_name: &str) -> String {
    let mut chars = json_name.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn zero_values_and_quantities() {
        assert!(semantic_eq(Some(&json!({"a": [], "b": ""})), Some(&json!({}))));
        assert!(semantic_eq(
            Some(&json!({"resources": {"limits": {"cpu": "1000m"}}})),
            Some(&json!({"resources": {"limits": {"cpu": "1"}}}))
        ));
        assert!(!semantic_eq(Some(&json!({"env": [{"value": "1"}]})), Some(&json!({"env": [{"value": "1.0"}]}))));
        assert!(!semantic_eq(Some(&json!({"a": 1})), Some(&json!({"a": 2}))));
    }

    #[test]
    fn diff_names_changed_fields() {
        let d = diff("core.PodSpec", &json!({"a": 1, "b": 2}), &json!({"a": 1, "b": 3, "cD": true}));
        assert_eq!(d, "  core.PodSpec{\n- \tB: 2,\n+ \tB: 3,\n- \tCD: nil,\n+ \tCD: true,\n  }\n");
    }
}
