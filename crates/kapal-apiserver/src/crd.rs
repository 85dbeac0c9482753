//! Custom resources: CRD status, and pruning, defaulting and validation of custom objects by
//! their structural OpenAPI v3 schema, with upstream's messages.

use kapal_api::Cause;
use serde_json::{Map, Value, json};

use crate::objects;

/// Sets a CRD's `status`: accepted names and the Established and NamesAccepted conditions.
/// Kapal serves a CRD's resources as soon as it is stored, so both are true at once.
pub fn set_crd_status(crd: &mut Value) {
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let mut accepted = names.clone();
    if accepted.get("singular").is_none()
        && let Some(kind) = names.get("kind").and_then(Value::as_str)
    {
        accepted["singular"] = json!(kind.to_lowercase());
    }
    if accepted.get("listKind").is_none()
        && let Some(kind) = names.get("kind").and_then(Value::as_str)
    {
        accepted["listKind"] = json!(format!("{kind}List"));
    }
    let now = objects::now_rfc3339();
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| vs.iter().filter(|v| v["storage"] == json!(true)).map(|v| v["name"].clone()).collect())
        .unwrap_or_default();
    let keep_time = |ty: &str| -> String {
        crd.pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == ty && c["status"] == "True"))
            .and_then(|c| c["lastTransitionTime"].as_str())
            .map(String::from)
            .unwrap_or_else(|| now.clone())
    };
    let conditions = json!([
        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": keep_time("NamesAccepted")},
        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": keep_time("Established")},
    ]);
    crd["status"] = json!({"acceptedNames": accepted, "conditions": conditions, "storedVersions": stored});
}

fn is_preserving(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true)
}

/// Removes fields the schema does not declare and fills in schema defaults.
/// `apiVersion`, `kind` and `metadata` at the root are always kept.
pub fn prune_and_default(schema: &Value, obj: &mut Value) {
    walk_prune(schema, obj, true);
}

fn walk_prune(schema: &Value, value: &mut Value, root: bool) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            if let Some(props) = props {
                for (name, sub) in props {
                    if !map.contains_key(name)
                        && let Some(d) = sub.get("default")
                    {
                        map.insert(name.clone(), d.clone());
                    }
                }
            }
            let preserve = is_preserving(schema);
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let sub = props.and_then(|p| p.get(&key)).or_else(|| additional.filter(|a| a.is_object()));
                match sub {
                    Some(sub) => {
                        if let Some(v) = map.get_mut(&key) {
                            walk_prune(sub, v, false);
                        }
                    }
                    None if preserve || additional == Some(&json!(true)) => {}
                    None => {
                        map.remove(&key);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    walk_prune(item_schema, item, false);
                }
            }
        }
        _ => {}
    }
}

/// Validates a custom object against its schema. Causes name fields like upstream
/// (`spec.size`) and use its messages (`spec.size in body should be greater than or equal to 1`).
pub fn validate_custom(schema: &Value, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(map) = obj.as_object() else { return causes };
    let props = schema.get("properties").and_then(Value::as_object);
    for (key, value) in map {
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(sub) = props.and_then(|p| p.get(key)) {
            check(sub, value, key, &mut causes);
        }
    }
    required(schema, map, "", &mut causes);
    causes
}

fn required(schema: &Value, map: &Map<String, Value>, path: &str, causes: &mut Vec<Cause>) {
    for r in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        if let Some(name) = r.as_str()
            && !map.contains_key(name)
            && !(path.is_empty() && name == "metadata")
        {
            causes.push(Cause::required(join(path, name)));
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn type_name(v: &Value) -> &'static str {
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

fn check(schema: &Value, value: &Value, path: &str, causes: &mut Vec<Cause>) {
    if value.is_null() && schema.get("nullable").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    if int_or_string {
        if !matches!(type_name(value), "integer" | "string") {
            causes.push(Cause::new(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: {}: {path} in body must be of type integer,string: \"{}\"",
                    value,
                    type_name(value)
                ),
            ));
        }
        return;
    }
    if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(value);
        let ok = actual == ty || (ty == "number" && actual == "integer");
        if !ok {
            causes.push(Cause::new(
                "FieldValueTypeInvalid",
                path,
                format!("Invalid value: \"{actual}\": {path} in body must be of type {ty}: \"{actual}\""),
            ));
            return;
        }
    }
    check_enum(schema, value, path, causes);
    match value {
        Value::Number(n) => check_number(schema, n.as_f64().unwrap_or(0.0), value, path, causes),
        Value::String(s) => check_string(schema, s, value, path, causes),
        Value::Array(items) => {
            let n = items.len() as i64;
            if let Some(max) = schema.get("maxItems").and_then(Value::as_i64)
                && n > max
            {
                causes.push(Cause::new(
                    "FieldValueTooMany",
                    path,
                    format!("Too many: {n}: must have at most {max} items"),
                ));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_i64)
                && n < min
            {
                causes.push(Cause::invalid(path, value, &format!("{path} in body should have at least {min} items")));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), causes);
                }
            }
        }
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, v) in map {
                if let Some(sub) = props.and_then(|p| p.get(key)).or(additional) {
                    check(sub, v, &join(path, key), causes);
                }
            }
            required(schema, map, path, causes);
            let n = map.len() as i64;
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_i64)
                && n > max
            {
                causes.push(Cause::new(
                    "FieldValueTooMany",
                    path,
                    format!("Too many: {n}: must have at most {max} items"),
                ));
            }
        }
        _ => {}
    }
}

fn check_enum(schema: &Value, value: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
        causes.push(Cause::new(
            "FieldValueNotSupported",
            path,
            format!("Unsupported value: {value}: supported values: {}", list.join(", ")),
        ));
    }
}

fn check_number(schema: &Value, n: f64, value: &Value, path: &str, causes: &mut Vec<Cause>) {
    let bound = |k: &str| schema.get(k).and_then(Value::as_f64);
    let excl = |k: &str| schema.get(k).and_then(Value::as_bool) == Some(true);
    let show = |b: f64| if b.fract() == 0.0 { format!("{}", b as i64) } else { b.to_string() };
    if let Some(min) = bound("minimum")
        && (n < min || (excl("exclusiveMinimum") && n <= min))
    {
        let rel = if excl("exclusiveMinimum") { "greater than" } else { "greater than or equal to" };
        causes.push(Cause::invalid(path, value, &format!("{path} in body should be {rel} {}", show(min))));
    }
    if let Some(max) = bound("maximum")
        && (n > max || (excl("exclusiveMaximum") && n >= max))
    {
        let rel = if excl("exclusiveMaximum") { "less than" } else { "less than or equal to" };
        causes.push(Cause::invalid(path, value, &format!("{path} in body should be {rel} {}", show(max))));
    }
    if let Some(m) = bound("multipleOf")
        && m != 0.0
        && (n / m).fract() != 0.0
    {
        causes.push(Cause::invalid(path, value, &format!("{path} in body should be a multiple of {}", show(m))));
    }
}

fn check_string(schema: &Value, s: &str, value: &Value, path: &str, causes: &mut Vec<Cause>) {
    let len = s.chars().count() as i64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_i64)
        && len > max
    {
        causes.push(Cause::new("FieldValueTooLong", path, format!("Too long: may not be more than {max} bytes")));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_i64)
        && len < min
    {
        causes.push(Cause::invalid(path, value, &format!("{path} in body should be at least {min} chars long")));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(s) => {
                causes.push(Cause::invalid(path, value, &format!("{path} in body should match '{pattern}'")));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widget_schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }}
        }})
    }

    #[test]
    fn validates_with_upstream_messages() {
        let s = widget_schema();
        let causes = validate_custom(&s, &json!({"spec": {"size": 0}}));
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.size");
        assert_eq!(causes[0].message, "Invalid value: 0: spec.size in body should be greater than or equal to 1");
        let causes = validate_custom(&s, &json!({"spec": {"size": "big", "color": "green", "tags": ["long"]}}));
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.size", "spec.color", "spec.tags[0]"]);
        let causes = validate_custom(&s, &json!({"spec": {}}));
        assert_eq!(causes[0].message, "Required value");
        assert!(validate_custom(&s, &json!({"spec": {"size": 3}})).is_empty());
    }

    #[test]
    fn prunes_unknown_and_defaults() {
        let s = widget_schema();
        let mut obj = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"},
            "spec": {"size": 1, "junk": 1, "extra": {"anything": {"goes": 1}}}, "top": 1});
        prune_and_default(&s, &mut obj);
        assert_eq!(obj["spec"], json!({"size": 1, "extra": {"anything": {"goes": 1}}, "color": "red"}));
        assert!(obj.get("top").is_none());
        assert_eq!(obj["metadata"]["name"], "a");
    }

    #[test]
    fn crd_status_is_established() {
        let mut crd = json!({"spec": {"names": {"kind": "Widget", "plural": "widgets"}, "versions": [{"name": "v1", "storage": true}]}});
        set_crd_status(&mut crd);
        assert_eq!(crd["status"]["acceptedNames"]["singular"], "widget");
        assert_eq!(crd["status"]["conditions"][1]["type"], "Established");
        assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    }
}
