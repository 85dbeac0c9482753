//! Small API groups with one short printer each: coordination (Lease), node (RuntimeClass),
//! scheduling (PriorityClass), policy (PodDisruptionBudget) and admissionregistration
//! (webhook configurations).

use serde_json::Value;

use super::duration::age;
use super::format::{flag, int, int_or_string, len_of, name, text};
use super::{AGE, Col, NAME, Printer};

pub(super) static LEASE: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Holder", "holderIdentity contains the identity of the holder of a current lease."),
        AGE,
    ],
    cells: |obj, now| vec![name(obj), Value::from(text(&obj["spec"]["holderIdentity"])), age(obj, now)],
};

pub(super) static RUNTIME_CLASS: Printer = Printer {
    columns: &[
        NAME,
        Col::string(
            "Handler",
            "handler specifies the underlying runtime and configuration that the CRI implementation will use to handle pods of this class.",
        ),
        AGE,
    ],
    cells: |obj, now| vec![name(obj), Value::from(text(&obj["handler"])), age(obj, now)],
};

pub(super) static PRIORITY_CLASS: Printer = Printer {
    columns: &[
        NAME,
        Col::integer("Value", "value represents the integer value of this priority class."),
        Col::typed(
            "Global-Default",
            "boolean",
            "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class.",
        ),
        AGE,
        Col::string("PreemptionPolicy", "preemptionPolicy is the Policy for preempting pods with lower priority."),
    ],
    cells: |obj, now| {
        // PriorityClass defaulting sets the preemption policy.
        let policy = match text(&obj["preemptionPolicy"]) {
            "" => "PreemptLowerPriority",
            p => p,
        };
        vec![
            name(obj),
            Value::from(int(&obj["value"])),
            Value::from(flag(&obj["globalDefault"])),
            age(obj, now),
            Value::from(policy),
        ]
    },
};

pub(super) static POD_DISRUPTION_BUDGET: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Min Available", "The minimum number of pods that must be available."),
        Col::string("Max Unavailable", "The maximum number of pods that may be unavailable."),
        Col::integer("Allowed Disruptions", "Calculated number of pods that may be disrupted at this time."),
        AGE,
    ],
    cells: |obj, now| {
        let spec = &obj["spec"];
        let or_na = |v: &Value| int_or_string(v).unwrap_or_else(|| "N/A".to_string());
        vec![
            name(obj),
            Value::from(or_na(&spec["minAvailable"])),
            Value::from(or_na(&spec["maxUnavailable"])),
            Value::from(int(&obj["status"]["disruptionsAllowed"])),
            age(obj, now),
        ]
    },
};

pub(super) static WEBHOOK_CONFIGURATION: Printer = Printer {
    columns: &[
        NAME,
        Col::integer("Webhooks", "Webhooks indicates the number of webhooks registered in this configuration"),
        AGE,
    ],
    cells: |obj, now| vec![name(obj), Value::from(len_of(&obj["webhooks"])), age(obj, now)],
};

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use serde_json::json;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn priority_class_keeps_json_types() {
        let pc = json!({"metadata": {"name": "system-node-critical"}, "value": 2000001000, "globalDefault": false});
        let cells = (PRIORITY_CLASS.cells)(&pc, now());
        assert_eq!(
            cells,
            vec![
                json!("system-node-critical"),
                json!(2000001000),
                json!(false),
                json!("<unknown>"),
                json!("PreemptLowerPriority")
            ]
        );
        let never = json!({"preemptionPolicy": "Never", "globalDefault": true});
        assert_eq!((PRIORITY_CLASS.cells)(&never, now())[2..], [json!(true), json!("<unknown>"), json!("Never")]);
    }

    #[test]
    fn pod_disruption_budget_int_or_string() {
        let pdb = json!({"spec": {"minAvailable": 2}, "status": {"disruptionsAllowed": 1}});
        assert_eq!((POD_DISRUPTION_BUDGET.cells)(&pdb, now())[1..4], [json!("2"), json!("N/A"), json!(1)]);
        let pct = json!({"spec": {"maxUnavailable": "25%"}});
        assert_eq!((POD_DISRUPTION_BUDGET.cells)(&pct, now())[1..4], [json!("N/A"), json!("25%"), json!(0)]);
    }

    #[test]
    fn lease_runtime_class_webhooks() {
        let lease = json!({"metadata": {"name": "kube-scheduler"}, "spec": {"holderIdentity": "node-1_abc"}});
        assert_eq!((LEASE.cells)(&lease, now())[1], "node-1_abc");
        assert_eq!((LEASE.cells)(&json!({}), now())[1], "");
        assert_eq!((RUNTIME_CLASS.cells)(&json!({"handler": "runc"}), now())[1], "runc");
        let hooks = json!({"webhooks": [{"name": "a"}, {"name": "b"}]});
        assert_eq!((WEBHOOK_CONFIGURATION.cells)(&hooks, now())[1], json!(2));
    }
}
