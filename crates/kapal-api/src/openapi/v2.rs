//! Writes a [`Model`] as a Swagger 2.0 document.
//!
//! The schemas are converted from their OpenAPI 3 form, and made safe for the model parser
//! kubectl runs over `/openapi/v2` (kube-openapi `pkg/util/proto`): one failing definition
//! fails the whole model, and with it `kubectl explain` on 1.27/1.28.

use serde_json::{Map, Value, json};

use super::catalog::{self, DELETE_OPTIONS, PATCH, REF_PREFIX};
use super::model::Model;
use super::operations::{Body, In, Operation, Param};
use super::v3::STRATEGIC_PATCH;

const DEFINITIONS_PREFIX: &str = "#/definitions/";

/// Schema keywords Swagger 2.0 knows; everything else except `x-` extensions is dropped.
const KEYWORDS: &[&str] = &[
    "$ref",
    "format",
    "title",
    "description",
    "default",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
    "required",
    "enum",
    "additionalProperties",
    "type",
    "items",
    "allOf",
    "properties",
    "discriminator",
    "readOnly",
    "example",
];

const TYPES: &[&str] = &["object", "array", "string", "integer", "number", "boolean"];

pub(crate) fn document(model: Model) -> Value {
    let mut paths = Map::new();
    for (path, ops) in &model.paths {
        let item: Map<String, Value> = ops.iter().map(|op| (op.method.as_str().to_string(), operation(op))).collect();
        paths.insert(path.clone(), Value::Object(item));
    }
    let definitions: Map<String, Value> =
        model.schemas.iter().map(|(name, schema)| (name.clone(), convert_schema(schema))).collect();
    json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": "unversioned" },
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "type": "apiKey",
                "name": "authorization",
                "in": "header",
            },
        },
        "security": [{ "BearerToken": [] }],
    })
}

fn definition_ref(name: &str) -> Value {
    json!({ "$ref": format!("{DEFINITIONS_PREFIX}{name}") })
}

fn operation(op: &Operation) -> Value {
    let mut out = Map::new();
    out.insert("description".into(), json!(op.description));
    let consumes: Vec<&str> = match &op.body {
        Some(Body::Patch { strategic }) => {
            let mut types = vec!["application/json-patch+json", "application/merge-patch+json"];
            if *strategic {
                types.push(STRATEGIC_PATCH);
            }
            types.push("application/apply-patch+yaml");
            types
        }
        _ => vec!["*/*"],
    };
    out.insert("consumes".into(), json!(consumes));
    let produces = if op.watches() {
        json!(["application/json", "application/json;stream=watch"])
    } else {
        json!(["application/json"])
    };
    out.insert("produces".into(), produces);
    out.insert("schemes".into(), json!(["https"]));
    out.insert("tags".into(), json!([op.tag]));
    out.insert("operationId".into(), json!(op.id));
    let mut params: Vec<Value> = op.params.iter().map(parameter).collect();
    if let Some(body) = &op.body {
        params.push(body_parameter(body));
    }
    out.insert("parameters".into(), Value::Array(params));
    let mut responses = Map::new();
    for response in &op.responses {
        let mut r = Map::new();
        r.insert("description".into(), json!(response.description));
        if let Some(schema) = &response.schema {
            r.insert("schema".into(), definition_ref(schema));
        }
        responses.insert(response.code.into(), Value::Object(r));
    }
    out.insert("responses".into(), Value::Object(responses));
    out.insert("x-kubernetes-action".into(), json!(op.action));
    let (group, version, kind) = &op.gvk;
    out.insert("x-kubernetes-group-version-kind".into(), catalog::gvk_value(group, version, kind));
    Value::Object(out)
}

fn parameter(param: &Param) -> Value {
    let mut out = Map::new();
    out.insert("uniqueItems".into(), json!(true));
    out.insert("type".into(), json!(param.ty));
    out.insert("description".into(), json!(param.description));
    out.insert("name".into(), json!(param.name));
    match param.location {
        In::Path => {
            out.insert("in".into(), json!("path"));
            out.insert("required".into(), json!(true));
        }
        In::Query => {
            out.insert("in".into(), json!("query"));
        }
    }
    Value::Object(out)
}

fn body_parameter(body: &Body) -> Value {
    let (schema, required) = match body {
        Body::Object(name) => (name.as_str(), true),
        Body::Patch { .. } => (PATCH, true),
        Body::Delete => (DELETE_OPTIONS, false),
    };
    json!({ "name": "body", "in": "body", "required": required, "schema": definition_ref(schema) })
}

/// Converts one OpenAPI 3 schema to Swagger 2.0: `$ref`s point into `#/definitions/`, an
/// `allOf` of a single reference becomes the reference itself (as upstream writes v2),
/// keywords Swagger lacks (`nullable`, `oneOf`, `anyOf`, `not`) go, `type` is one known type,
/// and an array always has `items`.
pub(crate) fn convert_schema(schema: &Value) -> Value {
    let Value::Object(map) = schema else {
        // `true`/`false` schemas: Swagger has no such thing; accept anything.
        return json!({});
    };
    let mut out = Map::new();
    for (key, value) in map {
        let converted = match key.as_str() {
            "$ref" => match value.as_str() {
                Some(reference) => json!(rewrite_ref(reference)),
                None => continue,
            },
            "allOf" => continue,
            "properties" => match value {
                Value::Object(properties) => {
                    Value::Object(properties.iter().map(|(k, v)| (k.clone(), convert_schema(v))).collect())
                }
                _ => continue,
            },
            "items" => match value {
                Value::Array(items) => match items.first() {
                    Some(first) => convert_schema(first),
                    None => json!({}),
                },
                other => convert_schema(other),
            },
            "additionalProperties" => match value {
                Value::Bool(b) => Value::Bool(*b),
                other => convert_schema(other),
            },
            "type" => match single_type(value) {
                Some(ty) => json!(ty),
                None => continue,
            },
            key if key.starts_with("x-") || KEYWORDS.contains(&key) => value.clone(),
            _ => continue,
        };
        out.insert(key.clone(), converted);
    }
    if let Some(Value::Array(all_of)) = map.get("allOf") {
        merge_all_of(&mut out, all_of);
    }
    if out.get("type").and_then(Value::as_str) == Some("array") && !out.contains_key("items") {
        out.insert("items".into(), json!({}));
    }
    Value::Object(out)
}

fn merge_all_of(out: &mut Map<String, Value>, all_of: &[Value]) {
    let single_ref = match all_of {
        [only] => only.as_object().filter(|o| o.len() == 1).and_then(|o| o.get("$ref")).and_then(Value::as_str),
        _ => None,
    };
    match single_ref {
        Some(reference) if !out.contains_key("$ref") => {
            out.insert("$ref".into(), json!(rewrite_ref(reference)));
        }
        _ if !all_of.is_empty() => {
            out.insert("allOf".into(), all_of.iter().map(convert_schema).collect());
        }
        _ => {}
    }
}

fn rewrite_ref(reference: &str) -> String {
    match reference.strip_prefix(REF_PREFIX) {
        Some(name) => format!("{DEFINITIONS_PREFIX}{name}"),
        None => reference.to_string(),
    }
}

/// The one type a Swagger schema may have: a known type name, or the first non-null entry of
/// a list of types.
fn single_type(value: &Value) -> Option<&str> {
    match value {
        Value::String(ty) => Some(ty.as_str()).filter(|ty| TYPES.contains(ty)),
        Value::Array(types) => types.iter().filter_map(Value::as_str).find(|ty| TYPES.contains(ty)),
        _ => None,
    }
}
