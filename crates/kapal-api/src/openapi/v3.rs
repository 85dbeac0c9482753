//! Writes a [`Model`] as an OpenAPI 3.0 document.

use serde_json::{Map, Value, json};

use super::catalog::{self, DELETE_OPTIONS, PATCH, schema_ref};
use super::model::Model;
use super::operations::{Body, In, Operation, Param};

/// Patch content types every resource accepts.
const PATCH_TYPES: &[&str] =
    &["application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json"];
/// Offered only where the schema carries the merge metadata: kubectl 1.29+ computes a
/// strategic merge patch from the v3 schema when it sees this type, and would compute a wrong
/// one without the metadata.
pub(crate) const STRATEGIC_PATCH: &str = "application/strategic-merge-patch+json";

pub(crate) fn document(model: Model) -> Value {
    let mut paths = Map::new();
    for (path, ops) in &model.paths {
        let item: Map<String, Value> = ops.iter().map(|op| (op.method.as_str().to_string(), operation(op))).collect();
        paths.insert(path.clone(), Value::Object(item));
    }
    let schemas: Map<String, Value> = model.schemas.into_iter().collect();
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "unversioned" },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header",
                },
            },
        },
        "security": [{ "BearerToken": [] }],
    })
}

fn operation(op: &Operation) -> Value {
    let mut out = Map::new();
    out.insert("tags".into(), json!([op.tag]));
    out.insert("description".into(), json!(op.description));
    out.insert("operationId".into(), json!(op.id));
    out.insert("parameters".into(), op.params.iter().map(parameter).collect());
    if let Some(body) = &op.body {
        out.insert("requestBody".into(), request_body(body));
    }
    let mut responses = Map::new();
    for response in &op.responses {
        let mut r = Map::new();
        r.insert("description".into(), json!(response.description));
        if let Some(schema) = &response.schema {
            let mut content = Map::new();
            content.insert("application/json".into(), json!({ "schema": schema_ref(schema) }));
            if op.watches() {
                content.insert("application/json;stream=watch".into(), json!({ "schema": schema_ref(schema) }));
            }
            r.insert("content".into(), Value::Object(content));
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
    out.insert("name".into(), json!(param.name));
    match param.location {
        In::Path => {
            out.insert("in".into(), json!("path"));
            out.insert("description".into(), json!(param.description));
            out.insert("required".into(), json!(true));
        }
        In::Query => {
            out.insert("in".into(), json!("query"));
            out.insert("description".into(), json!(param.description));
        }
    }
    out.insert("schema".into(), json!({ "type": param.ty, "uniqueItems": true }));
    Value::Object(out)
}

fn request_body(body: &Body) -> Value {
    match body {
        Body::Object(name) => {
            json!({ "content": { "*/*": { "schema": schema_ref(name) } }, "required": true })
        }
        Body::Delete => json!({ "content": { "*/*": { "schema": schema_ref(DELETE_OPTIONS) } } }),
        Body::Patch { strategic } => {
            let mut content = Map::new();
            for ty in PATCH_TYPES {
                content.insert(ty.to_string(), json!({ "schema": schema_ref(PATCH) }));
            }
            if *strategic {
                content.insert(STRATEGIC_PATCH.into(), json!({ "schema": schema_ref(PATCH) }));
            }
            json!({ "content": content, "required": true })
        }
    }
}
