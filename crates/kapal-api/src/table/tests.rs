//! Invariants across every printer: shape of the column definitions, one cell per column, no
//! panic on odd input.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::*;
use crate::registry::builtin_resources;

fn now() -> Timestamp {
    "2025-06-01T12:00:00Z".parse().unwrap()
}

/// Objects that break every assumption a printer could make about field types.
fn odd_objects() -> Vec<Value> {
    vec![
        json!({}),
        Value::Null,
        json!([1, 2]),
        json!("pod"),
        json!({"metadata": 5, "spec": "x", "status": [1]}),
        json!({"metadata": {"name": 7, "labels": [], "annotations": "a", "ownerReferences": {}, "deletionTimestamp": 1},
               "spec": {"containers": {}, "ports": "80", "selector": [1], "replicas": "3", "metrics": {}, "rules": 1,
                        "template": {"spec": {"containers": [null, 1, {"name": 2}]}}, "claimRef": "x", "capacity": []},
               "status": {"conditions": [null, "Ready", {"type": 1}], "containerStatuses": [{"state": 1}], "hard": {"a": {}},
                          "loadBalancer": {"ingress": "x"}, "podIPs": [null]},
               "subsets": [{"addresses": [1], "ports": [{"port": "x"}]}], "series": 1, "involvedObject": [],
               "endpoints": [{"addresses": [1, null]}], "ports": [null], "subjects": "x", "webhooks": 3}),
    ]
}

fn printed_kinds() -> Vec<(&'static str, &'static str)> {
    let mut kinds: Vec<(&str, &str)> =
        builtin_resources().iter().map(|r| (r.group.as_str(), r.kind.as_str())).collect();
    kinds.extend([
        ("", "ReplicationController"),
        ("", "ComponentStatus"),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
        ("example.com", "Widget"),
    ]);
    kinds
}

#[test]
fn every_kind_has_one_cell_per_column() {
    for (group, kind) in printed_kinds() {
        let cols = columns(group, kind);
        for obj in odd_objects() {
            assert_eq!(cells(group, kind, &obj, now()).len(), cols.len(), "{group}/{kind} on {obj}");
        }
    }
}

#[test]
fn column_definitions_have_all_five_fields() {
    for (group, kind) in printed_kinds() {
        let cols = columns(group, kind);
        assert!(!cols.is_empty());
        for col in &cols {
            let obj = col.as_object().unwrap();
            assert_eq!(obj.len(), 5, "{group}/{kind}: {col}");
            for key in ["name", "type", "format", "description", "priority"] {
                assert!(obj.contains_key(key), "{group}/{kind}: {col} lacks {key}");
            }
            assert!(["string", "integer", "number", "boolean", "date"].contains(&col["type"].as_str().unwrap()));
        }
        // kubectl rewrites the first `format: name` column for `--show-kind`; every table has one.
        let named: Vec<_> = cols.iter().filter(|c| c["format"] == "name").collect();
        assert_eq!(named.len(), 1, "{group}/{kind}");
        assert_eq!(named[0]["name"], "Name");
    }
}

#[test]
fn kinds_without_printer_use_the_default_convertor() {
    for (group, kind) in [
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("", "LimitRange"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ("example.com", "Widget"),
    ] {
        let cols = columns(group, kind);
        assert_eq!(cols.len(), 2);
        assert_eq!(cols[0]["name"], "Name");
        assert_eq!(
            cols[1],
            json!({"name": "Created At", "type": "date", "format": "", "description": AGE_DESC, "priority": 0})
        );
    }
    let role = json!({"metadata": {"name": "reader", "creationTimestamp": "2025-04-23T10:15:30Z"}});
    assert_eq!(
        cells("rbac.authorization.k8s.io", "Role", &role, now()),
        vec![json!("reader"), json!("2025-04-23T10:15:30Z")]
    );
}

#[test]
fn printers_are_keyed_by_group() {
    // A Deployment-like kind in another group is not printed as a Deployment.
    assert_eq!(columns("example.com", "Deployment").len(), 2);
    assert_eq!(columns("apps", "Deployment").len(), 8);
    assert_eq!(columns("events.k8s.io", "Event"), columns("", "Event"));
    assert_eq!(
        columns("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        columns("rbac.authorization.k8s.io", "RoleBinding")
    );
}

#[test]
fn pod_columns_and_wide_priorities() {
    let cols = columns("", "Pod");
    let names: Vec<&str> = cols.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"]
    );
    let priorities: Vec<i64> = cols.iter().map(|c| c["priority"].as_i64().unwrap()).collect();
    assert_eq!(priorities, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
}

#[test]
fn column_orders_of_1_33() {
    let names = |group: &str, kind: &str| -> Vec<String> {
        columns(group, kind).iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names("", "ResourceQuota"), ["Name", "Request", "Limit", "Age"]);
    assert_eq!(
        names("batch", "Job"),
        ["Name", "Status", "Completions", "Duration", "Age", "Containers", "Images", "Selector"]
    );
    assert_eq!(
        names("batch", "CronJob"),
        [
            "Name",
            "Schedule",
            "Timezone",
            "Suspend",
            "Active",
            "Last Schedule",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    assert_eq!(
        names("", "Event"),
        ["Last Seen", "Type", "Reason", "Object", "Subobject", "Source", "Message", "First Seen", "Count", "Name"]
    );
    assert_eq!(
        names("scheduling.k8s.io", "PriorityClass"),
        ["Name", "Value", "Global-Default", "Age", "PreemptionPolicy"]
    );
    assert_eq!(
        names("", "PersistentVolume"),
        [
            "Name",
            "Capacity",
            "Access Modes",
            "Reclaim Policy",
            "Status",
            "Claim",
            "StorageClass",
            "VolumeAttributesClass",
            "Reason",
            "Age",
            "VolumeMode"
        ]
    );
}

#[test]
fn row_conditions_only_for_pods() {
    let done = json!({"status": {"phase": "Succeeded"}});
    assert!(row_conditions("", "Pod", &done).is_some());
    assert!(row_conditions("batch", "Job", &done).is_none());
    assert!(row_conditions("", "Pod", &json!({})).is_none());
}
