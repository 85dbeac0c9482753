//! Tables of custom resources, from a CRD version's `additionalPrinterColumns` (the
//! apiextensions-apiserver table convertor).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::duration::{human_duration, parse_time};
use super::format::{go_json, go_number, int, name, text};
use super::jsonpath::JsonPath;
use super::{AGE_DESC, NAME};

/// One printer column with its parsed path.
struct Column<'a> {
    name: &'a str,
    ty: &'a str,
    format: &'a str,
    description: String,
    priority: i64,
    path: Option<JsonPath>,
}

/// A version without printer columns gets `Age` from `.metadata.creationTimestamp`.
fn effective_columns(printer_columns: &[Value]) -> Vec<Column<'_>> {
    if printer_columns.is_empty() {
        return vec![Column {
            name: "Age",
            ty: "date",
            format: "",
            description: AGE_DESC.to_string(),
            priority: 0,
            path: JsonPath::parse(".metadata.creationTimestamp").ok(),
        }];
    }
    printer_columns
        .iter()
        .map(|c| {
            // `jsonPath` in apiextensions.k8s.io/v1, `JSONPath` in v1beta1.
            let path = match text(&c["jsonPath"]) {
                "" => text(&c["JSONPath"]),
                p => p,
            };
            let description = match text(&c["description"]) {
                "" => format!("Custom resource definition column (in JSONPath format): {path}"),
                d => d.to_string(),
            };
            Column {
                name: text(&c["name"]),
                ty: text(&c["type"]),
                format: text(&c["format"]),
                description,
                priority: int(&c["priority"]),
                path: JsonPath::parse(path).ok(),
            }
        })
        .collect()
}

/// The `columnDefinitions` of a custom resource's Table: `Name`, then one column per
/// `additionalPrinterColumns` entry of the served version (name, type, format, description,
/// priority), or `Age` when the version declares none.
pub fn crd_columns(printer_columns: &[Value]) -> Vec<Value> {
    let mut out = vec![NAME.to_value()];
    out.extend(effective_columns(printer_columns).into_iter().map(|c| {
        json!({
            "name": c.name,
            "type": c.ty,
            "format": c.format,
            "description": c.description,
            "priority": c.priority,
        })
    }));
    out
}

/// One custom resource's row for [`crd_columns`]: its name, then each column's JSONPath
/// evaluated on `obj` and typed by the column.
///
/// The first value a path selects is used. A missing value, an invalid path or a value of
/// the wrong type gives a null cell; `date` columns render as an age measured from `now`
/// (`<invalid>` when unparsable, `<unknown>` when empty).
pub fn crd_cells(printer_columns: &[Value], obj: &Value, now: Timestamp) -> Vec<Value> {
    let mut out = vec![name(obj)];
    out.extend(effective_columns(printer_columns).iter().map(|c| {
        let found = c.path.as_ref().and_then(|p| p.find(obj).ok()).and_then(|found| found.first().copied());
        match found {
            Some(value) => cell(c.ty, value, now),
            None => Value::Null,
        }
    }));
    out
}

fn cell(ty: &str, value: &Value, now: Timestamp) -> Value {
    match (ty, value) {
        ("string", v) => Value::from(printed(v)),
        (_, Value::Null) => Value::Null,
        ("integer", Value::Number(_)) => Value::from(int(value)),
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, Value::from),
        ("boolean", Value::Bool(b)) => Value::from(*b),
        ("date", Value::String(s)) => Value::from(date(s, now)),
        _ => Value::Null,
    }
}

/// How client-go's JSONPath printer shows a value: strings raw, numbers and booleans the way Go
/// prints them, maps and lists as JSON.
fn printed(value: &Value) -> String {
    match value {
        Value::Null => "<no value>".to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_number(n),
        Value::Array(_) | Value::Object(_) => go_json(value),
    }
}

/// A `date` cell: the age of an RFC 3339 timestamp.
fn date(s: &str, now: Timestamp) -> String {
    if s.is_empty() || s == "null" {
        return "<unknown>".to_string();
    }
    if s.parse::<Timestamp>().is_err() {
        return "<invalid>".to_string();
    }
    match parse_time(&Value::from(s)) {
        Some(t) => human_duration(now.duration_since(t)),
        None => "<unknown>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    fn printer_columns() -> Vec<Value> {
        serde_json::from_value(json!([
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Readiness"},
            {"name": "Ratio", "type": "number", "jsonPath": ".spec.ratio", "priority": 1},
            {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"},
            {"name": "Started", "type": "date", "jsonPath": ".status.startedAt"},
            {"name": "First", "type": "string", "jsonPath": ".spec.items[0].name"},
            {"name": "Port", "type": "string", "format": "int32", "JSONPath": ".spec.port"},
            {"name": "Tags", "type": "string", "jsonPath": ".spec.tags"},
            {"name": "Nothing", "type": "string", "jsonPath": ".spec.nothing"},
            {"name": "Bad", "type": "string", "jsonPath": ".spec["},
        ]))
        .unwrap()
    }

    #[test]
    fn columns_start_with_name_and_copy_the_definition() {
        let cols = crd_columns(&printer_columns());
        assert_eq!(cols.len(), 11);
        assert_eq!(cols[0]["name"], "Name");
        assert_eq!(cols[0]["format"], "name");
        assert_eq!(
            cols[1],
            json!({"name": "Replicas", "type": "integer", "format": "", "priority": 0,
                   "description": "Custom resource definition column (in JSONPath format): .spec.replicas"})
        );
        assert_eq!(cols[2]["description"], "Readiness");
        assert_eq!(cols[3]["priority"], 1);
        assert_eq!(cols[7]["format"], "int32");
        assert_eq!(cols[7]["description"], "Custom resource definition column (in JSONPath format): .spec.port");
    }

    #[test]
    fn default_columns_are_name_and_age() {
        let cols = crd_columns(&[]);
        assert_eq!(cols.len(), 2);
        assert_eq!(cols[1]["name"], "Age");
        assert_eq!(cols[1]["type"], "date");
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2025-05-29T08:00:00Z"}});
        assert_eq!(crd_cells(&[], &obj, now()), vec![json!("x"), json!("3d4h")]);
        assert_eq!(crd_cells(&[], &json!({}), now()), vec![json!(""), Value::Null]);
    }

    #[test]
    fn cells_are_typed_by_column() {
        let obj = json!({
            "metadata": {"name": "db"},
            "spec": {"replicas": 3, "ratio": 0.25, "paused": false, "port": 5432, "items": [{"name": "a"}, {"name": "b"}],
                     "tags": {"z": 1, "a": [true, "x<y"]}, "nothing": null},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "startedAt": "2025-06-01T11:57:30Z"},
        });
        let cells = crd_cells(&printer_columns(), &obj, now());
        assert_eq!(
            cells,
            vec![
                json!("db"),
                json!(3),
                json!("True"),
                json!(0.25),
                json!(false),
                json!("2m30s"),
                json!("a"),
                json!("5432"),
                json!(r#"{"a":[true,"x\u003cy"],"z":1}"#),
                json!("<no value>"),
                Value::Null,
            ]
        );
    }

    #[test]
    fn type_mismatches_and_bad_dates() {
        let cols: Vec<Value> = serde_json::from_value(json!([
            {"name": "I", "type": "integer", "jsonPath": ".a"},
            {"name": "N", "type": "number", "jsonPath": ".b"},
            {"name": "B", "type": "boolean", "jsonPath": ".c"},
            {"name": "D", "type": "date", "jsonPath": ".d"},
            {"name": "E", "type": "date", "jsonPath": ".e"},
            {"name": "F", "type": "date", "jsonPath": ".f"},
            {"name": "O", "type": "object", "jsonPath": ".a"},
        ]))
        .unwrap();
        let obj = json!({"a": 2.9, "b": 4, "c": "yes", "d": "yesterday", "e": "", "f": 7});
        let cells = crd_cells(&cols, &obj, now());
        assert_eq!(
            cells[1..],
            [json!(2), json!(4.0), Value::Null, json!("<invalid>"), json!("<unknown>"), Value::Null, Value::Null]
        );
        let strings = json!({"a": "3", "b": "1.5", "c": "true"});
        assert_eq!(crd_cells(&cols, &strings, now())[1..4], [Value::Null, Value::Null, Value::Null]);
    }
}
