//! Events, served as `v1` and as `events.k8s.io/v1`.
//!
//! Upstream converts both to the internal core Event before printing, so the two share one
//! layout; only the field names differ (`involvedObject` vs `regarding`, `message` vs `note`,
//! `deprecated*` timestamps and count).

use jiff::Timestamp;
use serde_json::Value;

use super::duration::{parse_time, since};
use super::format::{int, text};
use super::{Col, NAME_DESC, Printer};

const COLUMNS: &[Col] = &[
    Col::string("Last Seen", "The time at which the most recent occurrence of this event was recorded."),
    Col::string("Type", "Type of this event (Normal, Warning), new types could be added in the future"),
    Col::string("Reason", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
    Col::string("Object", "The object that this event is about."),
    Col::string("Subobject", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].").wide(),
    Col::string("Source", "The component reporting this event. Should be a short machine understandable string.").wide(),
    Col::string("Message", "A human-readable description of the status of this operation."),
    Col::string("First Seen", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)").wide(),
    Col::string("Count", "The number of times this event has occurred.").wide(),
    Col { name: "Name", ty: "string", format: "name", description: NAME_DESC, priority: 1 },
];

pub(super) static CORE_EVENT: Printer = Printer { columns: COLUMNS, cells: |obj, now| event(&Fields::CORE, obj, now) };

pub(super) static EVENTS_EVENT: Printer =
    Printer { columns: COLUMNS, cells: |obj, now| event(&Fields::EVENTS, obj, now) };

/// Where each internal Event field lives in one API version.
struct Fields {
    regarding: &'static str,
    message: &'static str,
    first: &'static str,
    last: &'static str,
    count: &'static str,
    source: &'static str,
    reporting_controller: &'static str,
}

impl Fields {
    const CORE: Fields = Fields {
        regarding: "involvedObject",
        message: "message",
        first: "firstTimestamp",
        last: "lastTimestamp",
        count: "count",
        source: "source",
        reporting_controller: "reportingComponent",
    };
    const EVENTS: Fields = Fields {
        regarding: "regarding",
        message: "note",
        first: "deprecatedFirstTimestamp",
        last: "deprecatedLastTimestamp",
        count: "deprecatedCount",
        source: "deprecatedSource",
        reporting_controller: "reportingController",
    };
}

fn event(f: &Fields, obj: &Value, now: Timestamp) -> Vec<Value> {
    let first_seen = match parse_time(&obj[f.first]) {
        Some(_) => since(&obj[f.first], now),
        None => since(&obj["eventTime"], now),
    };
    let mut last_seen = match parse_time(&obj[f.last]) {
        Some(_) => since(&obj[f.last], now),
        None => first_seen.clone(),
    };
    let series = &obj["series"];
    let count = if !series.is_null() {
        last_seen = since(&series["lastObservedTime"], now);
        int(&series["count"])
    } else {
        // Singleton events of the new API have no count.
        match int(&obj[f.count]) {
            0 => 1,
            n => n,
        }
    };

    let regarding = &obj[f.regarding];
    let kind = text(&regarding["kind"]).to_lowercase();
    let target = match text(&regarding["name"]) {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let component = first_non_empty(text(&obj[f.source]["component"]), text(&obj[f.reporting_controller]));
    let host = first_non_empty(text(&obj[f.source]["host"]), text(&obj["reportingInstance"]));
    let source = if host.is_empty() { component.to_string() } else { format!("{component}, {host}") };

    vec![
        Value::from(last_seen),
        Value::from(text(&obj["type"])),
        Value::from(text(&obj["reason"])),
        Value::from(target),
        Value::from(text(&regarding["fieldPath"])),
        Value::from(source),
        Value::from(text(&obj[f.message]).trim()),
        Value::from(first_seen),
        Value::from(count),
        Value::from(text(&obj["metadata"]["name"])),
    ]
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn core_event_row() {
        let ev = json!({
            "metadata": {"name": "web.17f"},
            "involvedObject": {"kind": "Pod", "name": "web-7c5b", "fieldPath": "spec.containers{app}"},
            "reason": "Pulled", "type": "Normal", "message": "  Container image pulled\n",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2025-06-01T11:00:00Z", "lastTimestamp": "2025-06-01T11:58:00Z", "count": 4,
        });
        let cells = (CORE_EVENT.cells)(&ev, now());
        assert_eq!(cells.len(), COLUMNS.len());
        assert_eq!(
            cells,
            vec![
                json!("2m"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web-7c5b"),
                json!("spec.containers{app}"),
                json!("kubelet, n1"),
                json!("Container image pulled"),
                json!("60m"),
                json!(4),
                json!("web.17f"),
            ]
        );
    }

    #[test]
    fn new_style_event_through_v1() {
        let ev = json!({
            "metadata": {"name": "e"}, "involvedObject": {"kind": "Node"},
            "eventTime": "2025-06-01T11:59:30.000001Z", "reportingComponent": "kapal-scheduler", "reportingInstance": "s-1",
        });
        let cells = (CORE_EVENT.cells)(&ev, now());
        assert_eq!(cells[0], "29s");
        assert_eq!(cells[3], "node");
        assert_eq!(cells[5], "kapal-scheduler, s-1");
        assert_eq!(cells[7], "29s");
        assert_eq!(cells[8], json!(1));
    }

    #[test]
    fn series_overrides_last_seen_and_count() {
        let ev = json!({
            "eventTime": "2025-06-01T10:00:00Z", "lastTimestamp": "2025-06-01T10:30:00Z", "count": 2,
            "series": {"count": 17, "lastObservedTime": "2025-06-01T11:55:00.000000Z"},
        });
        let cells = (CORE_EVENT.cells)(&ev, now());
        assert_eq!(cells[0], "5m");
        assert_eq!(cells[7], "120m");
        assert_eq!(cells[8], json!(17));
    }

    #[test]
    fn events_k8s_io_fields() {
        let ev = json!({
            "metadata": {"name": "e2"}, "regarding": {"kind": "Deployment", "name": "web"}, "note": "Scaled up",
            "reason": "ScalingReplicaSet", "type": "Normal", "reportingController": "deployment-controller",
            "deprecatedFirstTimestamp": "2025-06-01T11:00:00Z", "deprecatedCount": 3,
        });
        let cells = (EVENTS_EVENT.cells)(&ev, now());
        assert_eq!(cells[0], "60m");
        assert_eq!(cells[3], "deployment/web");
        assert_eq!(cells[5], "deployment-controller");
        assert_eq!(cells[6], "Scaled up");
        assert_eq!(cells[8], json!(3));
    }

    #[test]
    fn empty_event() {
        let cells = (CORE_EVENT.cells)(&json!({}), now());
        assert_eq!(cells[0], "<unknown>");
        assert_eq!(cells[3], "");
        assert_eq!(cells[8], json!(1));
    }
}
