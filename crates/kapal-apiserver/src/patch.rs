//! The four patch types: JSON patch, JSON merge patch, strategic merge patch, apply.

use kapal_api::ApiError;
use serde_json::Value;

use crate::http::decode_body;
use crate::resources::Served;

/// A PATCH request's type, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

const ACCEPTED: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

impl PatchKind {
    pub fn from_content_type(ct: &str, custom: bool) -> Result<PatchKind, ApiError> {
        match ct {
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/strategic-merge-patch+json" if custom => Err(ApiError::unsupported_media_type(
                ct,
                &["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"],
            )),
            "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
            "application/apply-patch+yaml" => Ok(PatchKind::Apply),
            other => Err(ApiError::unsupported_media_type(other, ACCEPTED)),
        }
    }
}

/// Decodes a patch body.
pub fn decode(kind: PatchKind, body: &[u8]) -> Result<Value, ApiError> {
    let v = match kind {
        PatchKind::Apply => decode_body("application/apply-patch+yaml", body)?,
        _ => decode_body("application/json", body)?,
    };
    match (kind, &v) {
        (PatchKind::Json, Value::Array(_)) => Ok(v),
        (PatchKind::Json, _) => Err(ApiError::bad_request("the JSON patch must be an array of operations")),
        (_, Value::Object(_)) => Ok(v),
        _ => Err(ApiError::bad_request("the patch must be a JSON object")),
    }
}

/// A `metadata.resourceVersion` inside a merge, strategic or apply patch is a precondition.
pub fn resource_version_precondition(kind: PatchKind, patch: &Value) -> Option<String> {
    match kind {
        PatchKind::Json => None,
        _ => patch.get("metadata")?.get("resourceVersion")?.as_str().filter(|s| !s.is_empty()).map(String::from),
    }
}

fn schema_of(served: &Served) -> std::sync::Arc<kapal_api::schema::TypeSchema> {
    crate::strategy::merge_schema(served)
}

/// Applies a patch to the current object, giving the object to admit.
pub fn apply_patch(
    served: &Served,
    kind: PatchKind,
    current: &Value,
    patch: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, ApiError> {
    match kind {
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is malformed: {e}")))?;
            let mut doc = current.clone();
            json_patch::patch(&mut doc, &ops).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
            Ok(doc)
        }
        PatchKind::Merge => {
            let mut doc = current.clone();
            json_patch::merge(&mut doc, patch);
            Ok(doc)
        }
        PatchKind::Strategic => {
            let schema = schema_of(served);
            kapal_api::merge::strategic_merge(current, patch, &schema).map_err(crate::strategy::patch_error)
        }
        PatchKind::Apply => {
            let schema = schema_of(served);
            let now = crate::objects::now_rfc3339();
            kapal_api::merge::apply(Some(current), patch, manager, force, &schema, &now)
                .map_err(|e| crate::strategy::apply_error(served, current, e))
        }
    }
}

/// Server-side apply onto an object that does not exist yet.
pub fn apply_to_nothing(served: &Served, applied: &Value, manager: &str) -> Result<Value, ApiError> {
    let schema = schema_of(served);
    let now = crate::objects::now_rfc3339();
    kapal_api::merge::apply(None, applied, manager, false, &schema, &now)
        .map_err(|e| crate::strategy::apply_error(served, applied, e))
}
