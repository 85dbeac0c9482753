//! Events (`pkg/apis/core/validation/events.go`), kept light: the namespace rules of
//! `core/v1` Events and the required fields of `events.k8s.io/v1` Events.

use serde_json::Value;

use super::names::{is_dns1123_subdomain, is_qualified_name};
use super::path::Path;
use super::report::{Errs, get, invalid_str, required};

const REPORTING_INSTANCE_LIMIT: usize = 128;
const ACTION_LIMIT: usize = 128;
const REASON_LIMIT: usize = 128;
const NOTE_LIMIT: usize = 1024;

fn text<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn has_time(v: &Value, key: &str) -> bool {
    get(v, key).and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

fn limited(value: &str, path: &str, limit: usize, errs: &mut Errs) {
    if value.len() > limit {
        errs.push(invalid_str(&Path::new(path), "", &format!("can have at most {limit} characters")));
    }
}

fn reporting_fields(controller: &str, controller_path: &str, instance: &str, action: &str, errs: &mut Errs) {
    if controller.is_empty() {
        errs.push(required(&Path::new(controller_path), ""));
    }
    for msg in is_qualified_name(controller) {
        errs.push(invalid_str(&Path::new(controller_path), controller, &msg));
    }
    if instance.is_empty() {
        errs.push(required(&Path::new("reportingInstance"), ""));
    }
    limited(instance, "reportingInstance", REPORTING_INSTANCE_LIMIT, errs);
    if action.is_empty() {
        errs.push(required(&Path::new("action"), ""));
    }
    limited(action, "action", ACTION_LIMIT, errs);
}

/// `legacyValidateEvent` for a `core/v1` Event (upstream applies no other validation to them).
pub(crate) fn validate_core_event(event: &Value, errs: &mut Errs) {
    let namespace = text(event, "/metadata/namespace");
    let involved_ns = text(event, "/involvedObject/namespace");
    let ip = Path::new("involvedObject").child("namespace");
    if !has_time(event, "eventTime") {
        let mismatch = if involved_ns.is_empty() {
            !namespace.is_empty() && namespace != "default"
        } else {
            namespace != involved_ns
        };
        if mismatch {
            errs.push(invalid_str(&ip, involved_ns, "does not match event.namespace"));
        }
    } else {
        if involved_ns.is_empty() && namespace != "default" && namespace != "kube-system" {
            errs.push(invalid_str(&ip, involved_ns, "does not match event.namespace"));
        }
        reporting_fields(
            text(event, "/reportingComponent"),
            "source",
            text(event, "/reportingInstance"),
            text(event, "/action"),
            errs,
        );
    }
    for msg in is_dns1123_subdomain(namespace) {
        errs.push(invalid_str(&Path::new("namespace"), namespace, &msg));
    }
}

/// The strict rules of an `events.k8s.io/v1` Event.
pub(crate) fn validate_events_v1(event: &Value, errs: &mut Errs) {
    if !has_time(event, "eventTime") {
        errs.push(required(&Path::new("eventTime"), ""));
    }
    let event_type = text(event, "/type");
    if event_type != "Normal" && event_type != "Warning" {
        errs.push(invalid_str(&Path::new("type"), "", &format!("has invalid value: {event_type}")));
    }
    if has_time(event, "deprecatedFirstTimestamp") {
        errs.push(invalid_str(&Path::new("deprecatedFirstTimestamp"), "", "needs to be unset"));
    }
    if has_time(event, "deprecatedLastTimestamp") {
        errs.push(invalid_str(&Path::new("deprecatedLastTimestamp"), "", "needs to be unset"));
    }
    if event.pointer("/deprecatedCount").and_then(Value::as_i64).is_some_and(|c| c != 0) {
        errs.push(invalid_str(&Path::new("deprecatedCount"), "", "needs to be unset"));
    }
    reporting_fields(
        text(event, "/reportingController"),
        "reportingController",
        text(event, "/reportingInstance"),
        text(event, "/action"),
        errs,
    );
    let reason = text(event, "/reason");
    if reason.is_empty() {
        errs.push(required(&Path::new("reason"), ""));
    }
    limited(reason, "reason", REASON_LIMIT, errs);
    limited(text(event, "/note"), "note", NOTE_LIMIT, errs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(errs: &Errs) -> Vec<String> {
        errs.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn core_events_follow_their_object_namespace() {
        let mut errs = Vec::new();
        validate_core_event(&json!({"metadata": {"namespace": "a"}, "involvedObject": {"namespace": "a"}}), &mut errs);
        assert!(errs.is_empty());
        let mut errs = Vec::new();
        validate_core_event(&json!({"metadata": {"namespace": "a"}, "involvedObject": {"namespace": "b"}}), &mut errs);
        assert_eq!(msgs(&errs), ["involvedObject.namespace: Invalid value: \"b\": does not match event.namespace"]);
        let mut errs = Vec::new();
        validate_core_event(
            &json!({"metadata": {"namespace": "default"}, "involvedObject": {"kind": "Node"}}),
            &mut errs,
        );
        assert!(errs.is_empty());
    }

    #[test]
    fn events_v1_need_reporting_fields() {
        let mut errs = Vec::new();
        validate_events_v1(&json!({"type": "Info"}), &mut errs);
        assert_eq!(
            msgs(&errs),
            [
                "eventTime: Required value",
                "type: Invalid value: \"\": has invalid value: Info",
                "reportingController: Required value",
                "reportingController: Invalid value: \"\": name part must be non-empty",
                "reportingController: Invalid value: \"\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                "reportingInstance: Required value",
                "action: Required value",
                "reason: Required value",
            ]
        );
    }
}
