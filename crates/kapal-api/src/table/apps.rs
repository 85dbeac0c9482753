//! `apps/v1`: Deployments, ReplicaSets, StatefulSets, DaemonSets, ControllerRevisions.

use jiff::Timestamp;
use serde_json::Value;

use super::corev1::replicas;
use super::duration::age;
use super::format::{containers, flag, int, items, label_selector, labels, name, selector_string, text};
use super::{AGE, CONTAINERS, Col, IMAGES, NAME, Printer};

pub(super) static DEPLOYMENT: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Ready", "Number of the pod with ready state"),
        Col::string("Up-to-date", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
        Col::string("Available", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
        AGE,
        CONTAINERS,
        IMAGES,
        Col::string("Selector", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.").wide(),
    ],
    cells: deployment,
};

fn deployment(obj: &Value, now: Timestamp) -> Vec<Value> {
    let (spec, status) = (&obj["spec"], &obj["status"]);
    let (names, images) = containers(&spec["template"]["spec"]);
    // Unlike other printers, a Deployment shows an empty selector as "" and a bad one as <invalid>.
    let selector = selector_string(&spec["selector"]).unwrap_or_else(|| "<invalid>".to_string());
    vec![
        name(obj),
        Value::from(format!("{}/{}", int(&status["readyReplicas"]), replicas(spec))),
        Value::from(int(&status["updatedReplicas"])),
        Value::from(int(&status["availableReplicas"])),
        age(obj, now),
        names,
        images,
        Value::from(selector),
    ]
}

pub(super) static REPLICA_SET: Printer = Printer {
    columns: &[
        NAME,
        Col::integer("Desired", "Replicas is the number of desired replicas."),
        Col::integer("Current", "Replicas is the most recently observed number of replicas."),
        Col::integer("Ready", "The number of ready replicas for this replica set."),
        AGE,
        CONTAINERS,
        IMAGES,
        Col::string("Selector", "Selector is a label query over pods that should match the replica count.").wide(),
    ],
    cells: |obj, now| {
        let (spec, status) = (&obj["spec"], &obj["status"]);
        let (names, images) = containers(&spec["template"]["spec"]);
        vec![
            name(obj),
            Value::from(replicas(spec)),
            Value::from(int(&status["replicas"])),
            Value::from(int(&status["readyReplicas"])),
            age(obj, now),
            names,
            images,
            Value::from(label_selector(&spec["selector"])),
        ]
    },
};

pub(super) static STATEFUL_SET: Printer = Printer {
    columns: &[NAME, Col::string("Ready", "Number of the pod with ready state"), AGE, CONTAINERS, IMAGES],
    cells: |obj, now| {
        let spec = &obj["spec"];
        let (names, images) = containers(&spec["template"]["spec"]);
        let ready = format!("{}/{}", int(&obj["status"]["readyReplicas"]), replicas(spec));
        vec![name(obj), Value::from(ready), age(obj, now), names, images]
    },
};

pub(super) static DAEMON_SET: Printer = Printer {
    columns: &[
        NAME,
        Col::integer(
            "Desired",
            "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).",
        ),
        Col::integer(
            "Current",
            "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
        ),
        Col::integer(
            "Ready",
            "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
        ),
        Col::integer("Up-to-date", "The total number of nodes that are running updated daemon pod"),
        Col::integer(
            "Available",
            "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
        ),
        Col::string("Node Selector", "NodeSelector is a selector which must be true for the pod to fit on a node."),
        AGE,
        CONTAINERS,
        IMAGES,
        Col::string("Selector", "A label query over pods that are managed by the daemon set.").wide(),
    ],
    cells: |obj, now| {
        let (spec, status) = (&obj["spec"], &obj["status"]);
        let pod_spec = &spec["template"]["spec"];
        let (names, images) = containers(pod_spec);
        vec![
            name(obj),
            Value::from(int(&status["desiredNumberScheduled"])),
            Value::from(int(&status["currentNumberScheduled"])),
            Value::from(int(&status["numberReady"])),
            Value::from(int(&status["updatedNumberScheduled"])),
            Value::from(int(&status["numberAvailable"])),
            Value::from(labels(&pod_spec["nodeSelector"])),
            age(obj, now),
            names,
            images,
            Value::from(label_selector(&spec["selector"])),
        ]
    },
};

pub(super) static CONTROLLER_REVISION: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Controller", "Controller of the object"),
        Col::string("Revision", "Revision indicates the revision of the state represented by Data."),
        AGE,
    ],
    cells: |obj, now| vec![name(obj), Value::from(controller(obj)), Value::from(int(&obj["revision"])), age(obj, now)],
};

/// The controlling owner as `kind.group/name` in lower case (`statefulset.apps/web`), or
/// `<none>`.
fn controller(obj: &Value) -> String {
    let owners = items(&obj["metadata"]["ownerReferences"]);
    let Some(owner) = owners.iter().find(|o| flag(&o["controller"])) else {
        return "<none>".to_string();
    };
    let owner_name = text(&owner["name"]);
    // The group of `group/version`; a bare `v1` is the core group.
    let group = text(&owner["apiVersion"]).split_once('/').map_or("", |(group, _)| group);
    let kind = text(&owner["kind"]);
    match (kind, group) {
        ("", "") => owner_name.to_string(),
        (kind, "") => format!("{}/{owner_name}", kind.to_lowercase()),
        (kind, group) => format!("{}.{}/{owner_name}", kind.to_lowercase(), group.to_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    fn template() -> Value {
        json!({"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}, {"name": "sidecar", "image": "envoy"}]}})
    }

    #[test]
    fn deployment_two_of_three_ready() {
        let deploy = json!({
            "metadata": {"name": "web", "creationTimestamp": "2025-06-01T09:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template()},
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
        });
        let cells = (DEPLOYMENT.cells)(&deploy, now());
        assert_eq!(cells.len(), DEPLOYMENT.columns.len());
        assert_eq!(
            cells,
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("3h"),
                json!("nginx,sidecar"),
                json!("nginx:1.27,envoy"),
                json!("app=web")
            ]
        );
    }

    #[test]
    fn deployment_defaults_and_selector_quirks() {
        let cells = (DEPLOYMENT.cells)(&json!({"spec": {"selector": {}}}), now());
        assert_eq!(cells[1..4], [json!("0/1"), json!(0), json!(0)]);
        assert_eq!(cells[7], "");
        let bad = json!({"spec": {"replicas": 0, "selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}});
        let cells = (DEPLOYMENT.cells)(&bad, now());
        assert_eq!(cells[1], "0/0");
        assert_eq!(cells[7], "<invalid>");
    }

    #[test]
    fn replica_set_row() {
        let rs = json!({
            "metadata": {"name": "web-6d4cf56db6"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"pod-template-hash": "6d4cf56db6", "app": "web"}}, "template": template()},
            "status": {"replicas": 3, "readyReplicas": 1},
        });
        let cells = (REPLICA_SET.cells)(&rs, now());
        assert_eq!(cells.len(), REPLICA_SET.columns.len());
        assert_eq!(cells[1..4], [json!(3), json!(3), json!(1)]);
        assert_eq!(cells[7], "app=web,pod-template-hash=6d4cf56db6");
        assert_eq!((REPLICA_SET.cells)(&json!({}), now())[7], "<none>");
    }

    #[test]
    fn stateful_set_and_daemon_set() {
        let sts = json!({"spec": {"replicas": 2, "template": template()}, "status": {"readyReplicas": 2}});
        let cells = (STATEFUL_SET.cells)(&sts, now());
        assert_eq!(cells.len(), STATEFUL_SET.columns.len());
        assert_eq!(cells[1], "2/2");

        let ds = json!({
            "spec": {"selector": {"matchLabels": {"app": "fluentd"}},
                     "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": [{"name": "f", "image": "fluentd"}]}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2, "updatedNumberScheduled": 3, "numberAvailable": 2},
        });
        let cells = (DAEMON_SET.cells)(&ds, now());
        assert_eq!(cells.len(), DAEMON_SET.columns.len());
        assert_eq!(cells[1..7], [json!(3), json!(3), json!(2), json!(3), json!(2), json!("kubernetes.io/os=linux")]);
        assert_eq!(cells[10], "app=fluentd");
        assert_eq!((DAEMON_SET.cells)(&json!({}), now())[6], "<none>");
    }

    #[test]
    fn controller_revision_owner() {
        let cr = |owners: Value| json!({"metadata": {"name": "web-7b9f", "ownerReferences": owners}, "revision": 2});
        let sts = cr(json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]));
        let cells = (CONTROLLER_REVISION.cells)(&sts, now());
        assert_eq!(cells[1..3], [json!("statefulset.apps/web"), json!(2)]);
        let core = cr(json!([{"apiVersion": "v1", "kind": "Pod", "name": "p", "controller": false},
                             {"apiVersion": "v1", "kind": "Node", "name": "n", "controller": true}]));
        assert_eq!((CONTROLLER_REVISION.cells)(&core, now())[1], "node/n");
        assert_eq!((CONTROLLER_REVISION.cells)(&cr(Value::Null), now())[1], "<none>");
    }
}
