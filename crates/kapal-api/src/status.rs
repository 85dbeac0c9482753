//! `metav1.Status` errors with the reasons, codes and messages Kubernetes uses.

use serde_json::{Value, json};

/// One field-level cause of an error (`details.causes[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldManagerConflict`, …
    pub reason: String,
    pub message: String,
    pub field: String,
}

impl Cause {
    pub fn new(reason: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause { reason: reason.into(), field: field.into(), message: message.into() }
    }

    /// `Required value`.
    pub fn required(field: impl Into<String>) -> Self {
        Cause::new("FieldValueRequired", field, "Required value")
    }

    /// `Invalid value: "x": detail`. `value` is a JSON value so strings are quoted and numbers bare.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        let shown = match value {
            Value::Null => "null".to_string(),
            v => v.to_string(),
        };
        Cause::new("FieldValueInvalid", field, format!("Invalid value: {shown}: {detail}"))
    }

    /// `Unsupported value: "x": supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Cause::new(
            "FieldValueNotSupported",
            field,
            format!("Unsupported value: {value}: supported values: {}", list.join(", ")),
        )
    }

    /// `Forbidden: detail`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Cause::new("FieldValueForbidden", field, format!("Forbidden: {detail}"))
    }

    /// `Duplicate value: x`.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Cause::new("FieldValueDuplicate", field, format!("Duplicate value: {value}"))
    }

    /// `Too long: may not be more than N bytes` style.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Cause::new("FieldValueTooLong", field, format!("Too long: may not be more than {max} bytes"))
    }
}

/// An API error: everything needed to render a `metav1.Status` body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub group: Option<String>,
    /// The resource plural, or for 422 Invalid the Kind, as upstream does.
    pub kind: Option<String>,
    pub name: Option<String>,
    pub causes: Vec<Cause>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason.into(),
            message: message.into(),
            group: None,
            kind: None,
            name: None,
            causes: Vec::new(),
            retry_after: None,
        }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.group = Some(group.into());
        self.kind = Some(kind.into());
        if !name.is_empty() {
            self.name = Some(name.into());
        }
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 404 for a named object: `deployments.apps "web" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let resource = qualified(group, plural);
        ApiError::new(404, "NotFound", format!("{resource} \"{name}\" not found")).with_details(group, plural, name)
    }

    /// 404 for a path the server does not serve.
    pub fn no_route() -> Self {
        ApiError::new(404, "NotFound", "the server could not find the requested resource")
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let resource = qualified(group, plural);
        ApiError::new(409, "AlreadyExists", format!("{resource} \"{name}\" already exists"))
            .with_details(group, plural, name)
    }

    /// 409 Conflict: `Operation cannot be fulfilled on pods "x": <detail>`.
    pub fn conflict(group: &str, plural: &str, name: &str, detail: &str) -> Self {
        let resource = qualified(group, plural);
        ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on {resource} \"{name}\": {detail}"))
            .with_details(group, plural, name)
    }

    /// The optimistic-concurrency conflict of an update with a stale resourceVersion.
    pub fn stale(group: &str, plural: &str, name: &str) -> Self {
        ApiError::conflict(
            group,
            plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid with field causes: `ConfigMap "x" is invalid: [a: Required value, …]`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let parts: Vec<String> = causes
            .iter()
            .map(|c| if c.field.is_empty() { c.message.clone() } else { format!("{}: {}", c.field, c.message) })
            .collect();
        let body = if parts.len() == 1 { parts[0].clone() } else { format!("[{}]", parts.join(", ")) };
        let mut err = ApiError::new(422, "Invalid", format!("{kind} \"{name}\" is invalid: {body}"))
            .with_details(group, kind, name);
        err.causes = causes;
        err
    }

    pub fn method_not_allowed(group: &str, plural: &str, verb: &str) -> Self {
        ApiError::new(405, "MethodNotAllowed", format!("{verb} is not supported on resources of kind \"{plural}\""))
            .with_details(group, plural, "")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(403, "Forbidden", message)
    }

    pub fn expired(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    pub fn gone_too_old(requested: i64, oldest: i64) -> Self {
        ApiError::expired(format!("too old resource version: {requested} ({oldest})"))
    }

    pub fn unsupported_media_type(content_type: &str, accepted: &[&str]) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {} (got {content_type})",
                accepted.join(", ")
            ),
        )
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        ApiError::new(413, "RequestEntityTooLarge", message)
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        ApiError::new(406, "NotAcceptable", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "InternalError", format!("Internal error occurred: {}", message.into()))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = ApiError::new(503, "ServiceUnavailable", message);
        e.retry_after = Some(1);
        e
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        let mut e = ApiError::new(504, "Timeout", message);
        e.retry_after = Some(1);
        e
    }

    /// The `metav1.Status` JSON body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        let mut details = serde_json::Map::new();
        if let Some(name) = &self.name {
            details.insert("name".into(), json!(name));
        }
        if let Some(group) = &self.group {
            details.insert("group".into(), json!(group));
        }
        if let Some(kind) = &self.kind {
            details.insert("kind".into(), json!(kind));
        }
        if !self.causes.is_empty() {
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if let Some(secs) = self.retry_after {
            details.insert("retryAfterSeconds".into(), json!(secs));
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }
}

fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() { plural.to_string() } else { format!("{plural}.{group}") }
}

/// A success `Status`, as returned by deletes that finish at once for some kinds.
pub fn success_status(group: &str, plural: &str, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": group, "kind": plural, "uid": uid},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_names_group_qualified_resource() {
        let e = ApiError::not_found("apps", "deployments", "web");
        assert_eq!(e.message, "deployments.apps \"web\" not found");
        let s = e.to_status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"]["kind"], "deployments");
    }

    #[test]
    fn invalid_lists_causes_like_upstream() {
        let e = ApiError::invalid(
            "",
            "ConfigMap",
            "Bad_Name",
            vec![Cause::invalid("metadata.name", &json!("Bad_Name"), "a lowercase RFC 1123 subdomain")],
        );
        assert_eq!(
            e.message,
            "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
        );
        assert_eq!(e.to_status()["details"]["causes"][0]["reason"], "FieldValueInvalid");
    }
}
