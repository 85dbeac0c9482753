//! Core (`v1`) kinds other than pods, services, events and volumes: nodes, namespaces,
//! config, service accounts, pod templates, replication controllers, quotas, component
//! statuses.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::Value;

use super::duration::age;
use super::format::{containers, int, items, labels, len_of, name, or_none, quantity, text};
use super::{AGE, CONTAINERS, Col, IMAGES, NAME, Printer};

pub(super) static NODE: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Status", "The status of the node"),
        Col::string("Roles", "The roles of the node"),
        AGE,
        Col::string("Version", "Kubelet Version reported by the node."),
        Col::string("Internal-IP", "List of addresses reachable to the node.").wide(),
        Col::string("External-IP", "List of addresses reachable to the node.").wide(),
        Col::string(
            "OS-Image",
            "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
        )
        .wide(),
        Col::string(
            "Kernel-Version",
            "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
        )
        .wide(),
        Col::string(
            "Container-Runtime",
            "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
        )
        .wide(),
    ],
    cells: node,
};

fn node(obj: &Value, now: Timestamp) -> Vec<Value> {
    let info = &obj["status"]["nodeInfo"];
    let unknown = |s: &str| {
        if s.is_empty() { "<unknown>".to_string() } else { s.to_string() }
    };
    vec![
        name(obj),
        Value::from(node_status(obj)),
        Value::from(or_none(&node_roles(&obj["metadata"]["labels"]).join(","))),
        age(obj, now),
        Value::from(text(&info["kubeletVersion"])),
        Value::from(node_address(obj, "InternalIP")),
        Value::from(node_address(obj, "ExternalIP")),
        Value::from(unknown(text(&info["osImage"]))),
        Value::from(unknown(text(&info["kernelVersion"]))),
        Value::from(unknown(text(&info["containerRuntimeVersion"]))),
    ]
}

/// `Ready`, `NotReady` or `Unknown` from the Ready condition, plus `,SchedulingDisabled` when
/// cordoned.
fn node_status(obj: &Value) -> String {
    // Upstream indexes conditions by type, so the last Ready condition wins.
    let ready = items(&obj["status"]["conditions"]).iter().rev().find(|c| text(&c["type"]) == "Ready");
    let mut status = match ready {
        Some(c) if text(&c["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }
    .to_string();
    if obj["spec"]["unschedulable"].as_bool() == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// Roles from `node-role.kubernetes.io/<role>` keys and the `kubernetes.io/role` value, sorted.
fn node_roles(node_labels: &Value) -> Vec<String> {
    let mut roles = BTreeSet::new();
    for (key, value) in node_labels.as_object().into_iter().flatten() {
        if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.insert(role.to_string());
            }
        } else if key == "kubernetes.io/role" && !text(value).is_empty() {
            roles.insert(text(value).to_string());
        }
    }
    roles.into_iter().collect()
}

fn node_address(obj: &Value, kind: &str) -> String {
    let found = items(&obj["status"]["addresses"]).iter().find(|a| text(&a["type"]) == kind);
    found.map_or_else(|| "<none>".to_string(), |a| text(&a["address"]).to_string())
}

pub(super) static NAMESPACE: Printer = Printer {
    columns: &[NAME, Col::string("Status", "The status of the namespace"), AGE],
    cells: |obj, now| {
        // Namespace defaulting sets the phase to Active.
        let phase = match text(&obj["status"]["phase"]) {
            "" => "Active",
            p => p,
        };
        vec![name(obj), Value::from(phase), age(obj, now)]
    },
};

pub(super) static CONFIG_MAP: Printer = Printer {
    columns: &[
        NAME,
        Col::string(
            "Data",
            "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
        ),
        AGE,
    ],
    cells: |obj, now| vec![name(obj), Value::from(len_of(&obj["data"]) + len_of(&obj["binaryData"])), age(obj, now)],
};

pub(super) static SECRET: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Type", "Used to facilitate programmatic handling of secret data."),
        Col::string(
            "Data",
            "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
        ),
        AGE,
    ],
    cells: |obj, now| {
        // Secret defaulting sets the type to Opaque.
        let kind = match text(&obj["type"]) {
            "" => "Opaque",
            t => t,
        };
        vec![name(obj), Value::from(kind), Value::from(len_of(&obj["data"])), age(obj, now)]
    },
};

pub(super) static SERVICE_ACCOUNT: Printer = Printer {
    columns: &[
        NAME,
        Col::string(
            "Secrets",
            "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
        ),
        AGE,
    ],
    cells: |obj, now| vec![name(obj), Value::from(len_of(&obj["secrets"])), age(obj, now)],
};

pub(super) static POD_TEMPLATE: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Containers", "Names of each container in the template."),
        Col::string("Images", "Images referenced by each container in the template."),
        Col::string("Pod Labels", "The labels for the pod template."),
    ],
    cells: |obj, _| {
        let template = &obj["template"];
        let (names, images) = containers(&template["spec"]);
        vec![name(obj), names, images, Value::from(labels(&template["metadata"]["labels"]))]
    },
};

pub(super) static REPLICATION_CONTROLLER: Printer = Printer {
    columns: &[
        NAME,
        Col::integer("Desired", "Replicas is the number of desired replicas."),
        Col::integer("Current", "Replicas is the most recently observed number of replicas."),
        Col::integer("Ready", "The number of ready replicas for this replication controller."),
        AGE,
        CONTAINERS,
        IMAGES,
        Col::string("Selector", "Selector is a label query over pods that should match the Replicas count.").wide(),
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
            Value::from(labels(&spec["selector"])),
        ]
    },
};

/// `spec.replicas` of a workload, defaulted to 1 like v1 defaulting does.
pub(super) fn replicas(spec: &Value) -> i64 {
    if spec["replicas"].is_number() { int(&spec["replicas"]) } else { 1 }
}

pub(super) static RESOURCE_QUOTA: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Request", "Request represents a minimum amount of cpu/memory that a container may consume."),
        Col::string(
            "Limit",
            "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
        ),
        AGE,
    ],
    cells: |obj, now| {
        let (requests, limits) = quota_usage(&obj["status"]);
        vec![name(obj), Value::from(requests), Value::from(limits), age(obj, now)]
    },
};

/// `<resource>: <used>/<hard>` entries of `status.hard`, sorted, split into requests and
/// `limits.*`.
fn quota_usage(status: &Value) -> (String, String) {
    let mut resources: Vec<&String> = status["hard"].as_object().map(|m| m.keys().collect()).unwrap_or_default();
    resources.sort();
    let (mut requests, mut limits) = (Vec::new(), Vec::new());
    for resource in resources {
        let entry = format!(
            "{resource}: {}/{}",
            quantity(&status["used"][resource.as_str()]),
            quantity(&status["hard"][resource.as_str()])
        );
        match resource.split_once('.') {
            Some(("limits", _)) => limits.push(entry),
            _ => requests.push(entry),
        }
    }
    (requests.join(", "), limits.join(", "))
}

pub(super) static COMPONENT_STATUS: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Status", "Status of the component conditions"),
        Col::string("Message", "Message of the component conditions"),
        Col::string("Error", "Error of the component conditions"),
    ],
    cells: |obj, _| {
        let healthy = items(&obj["conditions"]).iter().find(|c| text(&c["type"]) == "Healthy");
        let (status, message, error) = match healthy {
            Some(c) => {
                let status = if text(&c["status"]) == "True" { "Healthy" } else { "Unhealthy" };
                (status, text(&c["message"]), text(&c["error"]))
            }
            None => ("Unknown", "", ""),
        };
        vec![name(obj), Value::from(status), Value::from(message), Value::from(error)]
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn node_status_roles_and_addresses() {
        let node_obj = json!({
            "metadata": {"name": "n1", "creationTimestamp": "2025-05-29T08:00:00Z", "labels": {
                "node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/": "x",
                "kubernetes.io/role": "master", "node-role.kubernetes.io/etcd": "true"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "192.168.1.5"},
                              {"type": "InternalIP", "address": "192.168.1.6"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12 (bookworm)"},
            },
        });
        let cells = (NODE.cells)(&node_obj, now());
        assert_eq!(cells.len(), NODE.columns.len());
        assert_eq!(
            cells,
            vec![
                json!("n1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,etcd,master"),
                json!("3d4h"),
                json!("v1.33.0"),
                json!("192.168.1.5"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("<unknown>"),
                json!("<unknown>"),
            ]
        );
    }

    #[test]
    fn node_without_conditions_is_unknown() {
        let cells = (NODE.cells)(&json!({"metadata": {"name": "n"}}), now());
        assert_eq!(cells[1..3], [json!("Unknown"), json!("<none>")]);
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!((NODE.cells)(&not_ready, now())[1], "NotReady");
    }

    #[test]
    fn config_counts_are_integers() {
        let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!((CONFIG_MAP.cells)(&cm, now())[1], json!(3));
        let secret =
            json!({"metadata": {"name": "s"}, "data": {"tls.crt": "", "tls.key": ""}, "type": "kubernetes.io/tls"});
        assert_eq!((SECRET.cells)(&secret, now())[1..3], [json!("kubernetes.io/tls"), json!(2)]);
        assert_eq!((SECRET.cells)(&json!({}), now())[1..3], [json!("Opaque"), json!(0)]);
        assert_eq!((SERVICE_ACCOUNT.cells)(&json!({"secrets": [{"name": "x"}]}), now())[1], json!(1));
    }

    #[test]
    fn quota_splits_requests_and_limits() {
        let rq = json!({"status": {
            "hard": {"pods": "10", "limits.cpu": "2", "requests.cpu": "1", "limits.memory": "1Gi", "limitsx": "3"},
            "used": {"pods": "1", "limits.cpu": "500m", "requests.cpu": "250m"},
        }});
        let cells = (RESOURCE_QUOTA.cells)(&rq, now());
        assert_eq!(cells[1], "limitsx: 0/3, pods: 1/10, requests.cpu: 250m/1");
        assert_eq!(cells[2], "limits.cpu: 500m/2, limits.memory: 0/1Gi");
        assert_eq!(cells[3], "<unknown>");
    }

    #[test]
    fn pod_template_and_replication_controller() {
        let pt = json!({"metadata": {"name": "t"}, "template": {"metadata": {"labels": {"app": "x"}},
                        "spec": {"containers": [{"name": "a", "image": "i:1"}, {"name": "b", "image": "j"}]}}});
        assert_eq!((POD_TEMPLATE.cells)(&pt, now()), vec![json!("t"), json!("a,b"), json!("i:1,j"), json!("app=x")]);
        let rc = json!({"spec": {"selector": {"app": "x"}}, "status": {"replicas": 2, "readyReplicas": 1}});
        let cells = (REPLICATION_CONTROLLER.cells)(&rc, now());
        assert_eq!(cells[1..4], [json!(1), json!(2), json!(1)]);
        assert_eq!(cells[7], "app=x");
    }

    #[test]
    fn namespace_and_component_status() {
        let ns = json!({"metadata": {"name": "kube-system"}, "status": {"phase": "Terminating"}});
        assert_eq!((NAMESPACE.cells)(&ns, now())[1], "Terminating");
        assert_eq!((NAMESPACE.cells)(&json!({}), now())[1], "Active");
        let cs = json!({"conditions": [{"type": "Healthy", "status": "True", "message": "ok"}]});
        assert_eq!((COMPONENT_STATUS.cells)(&cs, now())[1..], [json!("Healthy"), json!("ok"), json!("")]);
    }
}
