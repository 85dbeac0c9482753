//! The OpenAPI documents the API server serves: `/openapi/v3` (an index and one document per
//! group-version) and `/openapi/v2` (JSON, or protobuf for kubectl).
//!
//! kubectl reads them for `explain`, to learn whether the server takes `fieldValidation`, and to
//! compute client-side apply patches. What it needs, and so what these documents guarantee:
//! every operation carries `x-kubernetes-group-version-kind` as one `{group, version, kind}`
//! object (group `""` for core), every kind's schema carries the same object inside an array,
//! every write operation lists `fieldValidation`, `dryRun` and `fieldManager` among its own
//! parameters, and every `$ref` resolves inside its document.
//!
//! Built-in schemas come from k8s-openapi's `JsonSchema` impls (generated once per process,
//! then cloned); custom resources bring the `openAPIV3Schema` of their CRD version. Documents are
//! deterministic: paths and schemas are sorted, so equal input gives equal bytes, whatever the
//! order of the resources.

mod catalog;
mod model;
mod operations;
mod protobuf;
mod v2;
mod v3;

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

use crate::registry::ResourceInfo;

/// The content type kubectl asks `/openapi/v2` for.
pub const V2_PROTOBUF_ACCEPT: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The content type of a protobuf `/openapi/v2` response (note `.v1.0`, not `@v1.0`).
pub const V2_PROTOBUF_CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The key of a group-version in the v3 index and in its URL: `api/v1` for core,
/// `apis/<group>/<version>` otherwise.
pub fn document_key(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// The OpenAPI 3.0 document of one group-version, served at `/openapi/v3/<document_key>`.
///
/// Only the resources of `group`/`version` are described; others in `resources` are ignored.
/// A resource whose `schema_name` names a built-in k8s-openapi type gets that schema, with
/// merge metadata, and accepts strategic merge patches. Any other resource is a custom resource:
/// its schema is `custom_schemas["<group>/<version>/<kind>"]`, or else `custom_schemas[kind]`
/// (the CRD version's `openAPIV3Schema`), or an open object when neither is given.
pub fn v3_document(
    group: &str,
    version: &str,
    resources: &[ResourceInfo],
    custom_schemas: &HashMap<String, Value>,
) -> Value {
    let resources = resources.iter().filter(|r| r.group == group && r.version == version);
    v3::document(model::assemble(resources, custom_schemas))
}

/// The `/openapi/v3` index: `docs` pairs each [`document_key`] with the hash of its document,
/// which becomes part of the document's URL so that clients can cache it for good.
pub fn v3_index(docs: &[(String, String)]) -> Value {
    let sorted: BTreeMap<&str, &str> = docs.iter().map(|(key, hash)| (key.as_str(), hash.as_str())).collect();
    let paths: Map<String, Value> = sorted
        .into_iter()
        .map(|(key, hash)| (key.to_string(), json!({ "serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}") })))
        .collect();
    json!({ "paths": paths })
}

/// The Swagger 2.0 document of every resource in `resources`, served at `/openapi/v2` as JSON
/// (or encoded with [`v2_protobuf`]). Schemas are chosen as for [`v3_document`]; since custom
/// resources of different groups may share a kind, prefer `<group>/<version>/<kind>` keys in
/// `custom_schemas` here.
pub fn v2_document(resources: &[ResourceInfo], custom_schemas: &HashMap<String, Value>) -> Value {
    v2::document(model::assemble(resources, custom_schemas))
}

/// Encodes a document from [`v2_document`] as gnostic's `openapi.v2.Document` protobuf message,
/// the form kubectl requests (`Accept:` [`V2_PROTOBUF_ACCEPT`]); kubectl 1.27 and 1.28 cannot
/// `explain` without it.
pub fn v2_protobuf(doc: &Value) -> Vec<u8> {
    protobuf::encode_document(doc)
}

#[cfg(test)]
mod tests;
