//! Encodes a Swagger 2.0 JSON document as the protobuf message `openapi.v2.Document` of gnostic
//! (`google/gnostic-models`, `openapiv2/OpenAPIv2.proto`), which is what kubectl asks
//! `/openapi/v2` for.
//!
//! Only the messages a Kubernetes document uses are written: info, paths with their operations,
//! parameters and responses, definitions (schemas), and security. Vendor extensions become
//! `NamedAny` entries whose `yaml` is the value written as JSON: JSON is YAML, and the Go side
//! reads extensions with a YAML decoder.

use serde_json::{Map, Value};

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

fn varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push(((value & 0x7f) as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

fn tag(buf: &mut Vec<u8>, field: u32, wire: u32) {
    varint(buf, u64::from((field << 3) | wire));
}

fn bytes(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    tag(buf, field, LEN);
    varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

/// A nested message, always written (presence matters for messages).
fn message(buf: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    write(&mut inner);
    bytes(buf, field, &inner);
}

/// A proto3 string field; empty strings are the default and are not written.
fn string(buf: &mut Vec<u8>, field: u32, value: Option<&Value>) {
    if let Some(s) = value.and_then(Value::as_str).filter(|s| !s.is_empty()) {
        bytes(buf, field, s.as_bytes());
    }
}

fn strings(buf: &mut Vec<u8>, field: u32, value: Option<&Value>) {
    for s in value.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        bytes(buf, field, s.as_bytes());
    }
}

fn boolean(buf: &mut Vec<u8>, field: u32, value: Option<&Value>) {
    if value.and_then(Value::as_bool) == Some(true) {
        tag(buf, field, VARINT);
        varint(buf, 1);
    }
}

fn int64(buf: &mut Vec<u8>, field: u32, value: Option<&Value>) {
    if let Some(n) = value.and_then(Value::as_i64).filter(|n| *n != 0) {
        tag(buf, field, VARINT);
        varint(buf, n as u64);
    }
}

fn double(buf: &mut Vec<u8>, field: u32, value: Option<&Value>) {
    if let Some(n) = value.and_then(Value::as_f64) {
        tag(buf, field, FIXED64);
        buf.extend_from_slice(&n.to_le_bytes());
    }
}

/// `Any { yaml = 2 }` holding a JSON value.
fn any(buf: &mut Vec<u8>, field: u32, value: &Value) {
    let text = value.to_string();
    message(buf, field, |any| bytes(any, 2, text.as_bytes()));
}

/// Every `x-` key of an object as `NamedAny { name = 1; value = 2 }`.
fn extensions(buf: &mut Vec<u8>, field: u32, map: &Map<String, Value>) {
    for (name, value) in map.iter().filter(|(name, _)| name.starts_with("x-")) {
        message(buf, field, |named| {
            bytes(named, 1, name.as_bytes());
            any(named, 2, value);
        });
    }
}

/// A `Named<T> { name = 1; value = 2 }` entry.
fn named(buf: &mut Vec<u8>, field: u32, name: &str, write: impl FnOnce(&mut Vec<u8>)) {
    message(buf, field, |entry| {
        bytes(entry, 1, name.as_bytes());
        message(entry, 2, write);
    });
}

fn object(value: Option<&Value>) -> Option<&Map<String, Value>> {
    value.and_then(Value::as_object)
}

/// `openapi.v2.Document`.
pub(crate) fn encode_document(doc: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    let Some(doc) = doc.as_object() else {
        return buf;
    };
    string(&mut buf, 1, doc.get("swagger"));
    if let Some(info) = object(doc.get("info")) {
        message(&mut buf, 2, |b| {
            string(b, 1, info.get("title"));
            string(b, 2, info.get("version"));
            string(b, 3, info.get("description"));
        });
    }
    string(&mut buf, 3, doc.get("host"));
    string(&mut buf, 4, doc.get("basePath"));
    strings(&mut buf, 5, doc.get("schemes"));
    strings(&mut buf, 6, doc.get("consumes"));
    strings(&mut buf, 7, doc.get("produces"));
    if let Some(paths) = object(doc.get("paths")) {
        message(&mut buf, 8, |b| encode_paths(b, paths));
    }
    if let Some(definitions) = object(doc.get("definitions")) {
        message(&mut buf, 9, |b| {
            for (name, schema) in definitions {
                named(b, 1, name, |s| encode_schema(s, schema));
            }
        });
    }
    for requirement in doc.get("security").and_then(Value::as_array).into_iter().flatten() {
        message(&mut buf, 12, |b| encode_security_requirement(b, requirement));
    }
    if let Some(definitions) = object(doc.get("securityDefinitions")) {
        message(&mut buf, 13, |b| {
            for (name, scheme) in definitions {
                if scheme.get("type").and_then(Value::as_str) == Some("apiKey") {
                    // SecurityDefinitionsItem { api_key_security = 2 }
                    named(b, 1, name, |item| {
                        message(item, 2, |s| {
                            string(s, 1, scheme.get("type"));
                            string(s, 2, scheme.get("name"));
                            string(s, 3, scheme.get("in"));
                            string(s, 4, scheme.get("description"));
                        })
                    });
                }
            }
        });
    }
    extensions(&mut buf, 16, doc);
    buf
}

/// `SecurityRequirement { repeated NamedStringArray additional_properties = 1 }`.
fn encode_security_requirement(buf: &mut Vec<u8>, requirement: &Value) {
    for (name, scopes) in requirement.as_object().into_iter().flatten() {
        named(buf, 1, name, |array| strings(array, 1, Some(scopes)));
    }
}

/// `Paths { vendor_extension = 1; repeated NamedPathItem path = 2 }`.
fn encode_paths(buf: &mut Vec<u8>, paths: &Map<String, Value>) {
    extensions(buf, 1, paths);
    for (path, item) in paths.iter().filter(|(path, _)| !path.starts_with("x-")) {
        let Some(item) = item.as_object() else {
            continue;
        };
        named(buf, 2, path, |b| {
            string(b, 1, item.get("$ref"));
            for (field, method) in
                [(2, "get"), (3, "put"), (4, "post"), (5, "delete"), (6, "options"), (7, "head"), (8, "patch")]
            {
                if let Some(op) = object(item.get(method)) {
                    message(b, field, |o| encode_operation(o, op));
                }
            }
            encode_parameters(b, 9, item.get("parameters"));
            extensions(b, 10, item);
        });
    }
}

/// `Operation`.
fn encode_operation(buf: &mut Vec<u8>, op: &Map<String, Value>) {
    strings(buf, 1, op.get("tags"));
    string(buf, 2, op.get("summary"));
    string(buf, 3, op.get("description"));
    string(buf, 5, op.get("operationId"));
    strings(buf, 6, op.get("produces"));
    strings(buf, 7, op.get("consumes"));
    encode_parameters(buf, 8, op.get("parameters"));
    if let Some(responses) = object(op.get("responses")) {
        message(buf, 9, |b| encode_responses(b, responses));
    }
    strings(buf, 10, op.get("schemes"));
    boolean(buf, 11, op.get("deprecated"));
    for requirement in op.get("security").and_then(Value::as_array).into_iter().flatten() {
        message(buf, 12, |b| encode_security_requirement(b, requirement));
    }
    extensions(buf, 13, op);
}

/// `repeated ParametersItem`: `{ Parameter parameter = 1 | JsonReference json_reference = 2 }`.
fn encode_parameters(buf: &mut Vec<u8>, field: u32, params: Option<&Value>) {
    for param in params.and_then(Value::as_array).into_iter().flatten() {
        let Some(param) = param.as_object() else {
            continue;
        };
        message(buf, field, |item| {
            if param.contains_key("$ref") {
                message(item, 2, |r| {
                    string(r, 1, param.get("$ref"));
                    string(r, 2, param.get("description"));
                });
            } else {
                message(item, 1, |p| encode_parameter(p, param));
            }
        });
    }
}

/// `Parameter { BodyParameter body_parameter = 1 | NonBodyParameter non_body_parameter = 2 }`.
fn encode_parameter(buf: &mut Vec<u8>, param: &Map<String, Value>) {
    let location = param.get("in").and_then(Value::as_str).unwrap_or_default();
    if location == "body" {
        message(buf, 1, |b| {
            string(b, 1, param.get("description"));
            string(b, 2, param.get("name"));
            string(b, 3, param.get("in"));
            boolean(b, 4, param.get("required"));
            if let Some(schema) = param.get("schema") {
                message(b, 5, |s| encode_schema(s, schema));
            }
            extensions(b, 6, param);
        });
        return;
    }
    // NonBodyParameter's oneof: header = 1, formData = 2, query = 3, path = 4. Query and
    // formData share one field layout, path and header another.
    let (choice, wide) = match location {
        "header" => (1, false),
        "formData" => (2, true),
        "query" => (3, true),
        "path" => (4, false),
        _ => return,
    };
    message(buf, 2, |non_body| {
        message(non_body, choice, |b| {
            boolean(b, 1, param.get("required"));
            string(b, 2, param.get("in"));
            string(b, 3, param.get("description"));
            string(b, 4, param.get("name"));
            let shift = u32::from(wide);
            if wide {
                boolean(b, 5, param.get("allowEmptyValue"));
            }
            string(b, 5 + shift, param.get("type"));
            string(b, 6 + shift, param.get("format"));
            string(b, 8 + shift, param.get("collectionFormat"));
            if let Some(default) = param.get("default") {
                any(b, 9 + shift, default);
            }
            boolean(b, 19 + shift, param.get("uniqueItems"));
            for value in param.get("enum").and_then(Value::as_array).into_iter().flatten() {
                any(b, 20 + shift, value);
            }
            extensions(b, 22 + shift, param);
        });
    });
}

/// `Responses { repeated NamedResponseValue response_code = 1; vendor_extension = 2 }`.
fn encode_responses(buf: &mut Vec<u8>, responses: &Map<String, Value>) {
    for (code, response) in responses.iter().filter(|(code, _)| !code.starts_with("x-")) {
        let Some(response) = response.as_object() else {
            continue;
        };
        // ResponseValue { Response response = 1 | JsonReference json_reference = 2 }
        named(buf, 1, code, |value| {
            if response.contains_key("$ref") {
                message(value, 2, |r| string(r, 1, response.get("$ref")));
                return;
            }
            message(value, 1, |r| {
                string(r, 1, response.get("description"));
                if let Some(schema) = response.get("schema") {
                    // SchemaItem { Schema schema = 1 }
                    message(r, 2, |item| message(item, 1, |s| encode_schema(s, schema)));
                }
                extensions(r, 5, response);
            });
        });
    }
    extensions(buf, 2, responses);
}

/// `Schema`.
fn encode_schema(buf: &mut Vec<u8>, schema: &Value) {
    let Some(s) = schema.as_object() else { return };
    string(buf, 1, s.get("$ref"));
    string(buf, 2, s.get("format"));
    string(buf, 3, s.get("title"));
    string(buf, 4, s.get("description"));
    if let Some(default) = s.get("default") {
        any(buf, 5, default);
    }
    double(buf, 6, s.get("multipleOf"));
    double(buf, 7, s.get("maximum"));
    boolean(buf, 8, s.get("exclusiveMaximum"));
    double(buf, 9, s.get("minimum"));
    boolean(buf, 10, s.get("exclusiveMinimum"));
    int64(buf, 11, s.get("maxLength"));
    int64(buf, 12, s.get("minLength"));
    string(buf, 13, s.get("pattern"));
    int64(buf, 14, s.get("maxItems"));
    int64(buf, 15, s.get("minItems"));
    boolean(buf, 16, s.get("uniqueItems"));
    int64(buf, 17, s.get("maxProperties"));
    int64(buf, 18, s.get("minProperties"));
    strings(buf, 19, s.get("required"));
    for value in s.get("enum").and_then(Value::as_array).into_iter().flatten() {
        any(buf, 20, value);
    }
    match s.get("additionalProperties") {
        // AdditionalPropertiesItem { Schema schema = 1 | bool boolean = 2 }; a oneof member is
        // written even when false.
        Some(Value::Bool(b)) => message(buf, 21, |item| {
            tag(item, 2, VARINT);
            varint(item, u64::from(*b));
        }),
        Some(inner @ Value::Object(_)) => message(buf, 21, |item| message(item, 1, |x| encode_schema(x, inner))),
        _ => {}
    }
    match s.get("type") {
        Some(Value::String(_)) => message(buf, 22, |t| string(t, 1, s.get("type"))),
        Some(Value::Array(_)) => message(buf, 22, |t| strings(t, 1, s.get("type"))),
        _ => {}
    }
    match s.get("items") {
        Some(items @ Value::Object(_)) => message(buf, 23, |item| message(item, 1, |x| encode_schema(x, items))),
        Some(Value::Array(items)) => message(buf, 23, |item| {
            for inner in items {
                message(item, 1, |x| encode_schema(x, inner));
            }
        }),
        _ => {}
    }
    for inner in s.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        message(buf, 24, |x| encode_schema(x, inner));
    }
    // An empty `properties` is left out: the Go model parser tells objects from maps by
    // whether the message is present.
    if let Some(properties) = object(s.get("properties")).filter(|p| !p.is_empty()) {
        message(buf, 25, |b| {
            for (name, inner) in properties {
                named(b, 1, name, |x| encode_schema(x, inner));
            }
        });
    }
    string(buf, 26, s.get("discriminator"));
    boolean(buf, 27, s.get("readOnly"));
    if let Some(example) = s.get("example") {
        any(buf, 30, example);
    }
    extensions(buf, 31, s);
}
