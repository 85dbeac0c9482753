//! `autoscaling/v2` HorizontalPodAutoscalers.

use serde_json::{Value, json};

use super::duration::age;
use super::format::{int, items, name, quantity_ptr, text};
use super::{AGE, Col, NAME, Printer};

pub(super) static HORIZONTAL_POD_AUTOSCALER: Printer = Printer {
    columns: &[
        NAME,
        Col::string(
            "Reference",
            "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count.",
        ),
        Col::string(
            "Targets",
            "metrics contains the specifications for which to use to calculate the desired replica count.",
        ),
        Col::string(
            "MinPods",
            "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.",
        ),
        Col::string(
            "MaxPods",
            "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up.",
        ),
        Col::string(
            "Replicas",
            "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler.",
        ),
        AGE,
    ],
    cells: |obj, now| {
        let (spec, status) = (&obj["spec"], &obj["status"]);
        let target = &spec["scaleTargetRef"];
        // autoscaling/v2 defaulting: minReplicas 1, and 80% CPU when no metric is given.
        let min_pods = if spec["minReplicas"].is_number() { int(&spec["minReplicas"]) } else { 1 };
        let default_metrics = json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]);
        let metrics = if spec["metrics"].is_array() { &spec["metrics"] } else { &default_metrics };
        vec![
            name(obj),
            Value::from(format!("{}/{}", text(&target["kind"]), text(&target["name"]))),
            Value::from(targets(metrics, &status["currentMetrics"])),
            Value::from(min_pods.to_string()),
            Value::from(int(&spec["maxReplicas"])),
            Value::from(int(&status["currentReplicas"])),
            age(obj, now),
        ]
    },
};

/// One `current/target` entry per metric, at most two, joined by `, `.
fn targets(specs: &Value, statuses: &Value) -> String {
    let specs = items(specs);
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let statuses = items(statuses);
    let list: Vec<String> = specs.iter().enumerate().map(|(i, spec)| metric(spec, statuses.get(i))).collect();
    let shown = list.iter().take(2).cloned().collect::<Vec<_>>().join(", ");
    if list.len() > 2 { format!("{shown} + {} more...", list.len() - 2) } else { shown }
}

/// One metric's entry: `cpu: 30%/80%`, `memory: 100Mi/500Mi`, `5/10`, `5/10 (avg)`.
fn metric(spec: &Value, status: Option<&Value>) -> String {
    // The status block of the same type, when the status at this index has one.
    let current = |field: &str| status.map(|s| &s[field]).filter(|v| v.is_object()).map(|v| &v["current"]);
    match text(&spec["type"]) {
        "External" | "Object" => {
            let field = if text(&spec["type"]) == "External" { "external" } else { "object" };
            let target = &spec[field]["target"];
            if target["averageValue"].is_null() {
                let cur = current(field).map_or_else(|| "<unknown>".to_string(), |c| quantity_ptr(&c["value"]));
                format!("{cur}/{}", quantity_ptr(&target["value"]))
            } else {
                let cur = current(field)
                    .filter(|c| !c["averageValue"].is_null())
                    .map_or_else(|| "<unknown>".to_string(), |c| quantity_ptr(&c["averageValue"]));
                format!("{cur}/{} (avg)", quantity_ptr(&target["averageValue"]))
            }
        }
        "Pods" => {
            let cur = current("pods").map_or_else(|| "<unknown>".to_string(), |c| quantity_ptr(&c["averageValue"]));
            format!("{cur}/{}", quantity_ptr(&spec["pods"]["target"]["averageValue"]))
        }
        "Resource" => resource_metric(&spec["resource"], current("resource")),
        "ContainerResource" => resource_metric(&spec["containerResource"], current("containerResource")),
        _ => "<unknown type>".to_string(),
    }
}

/// A Resource or ContainerResource metric, prefixed with the resource name.
fn resource_metric(source: &Value, current: Option<&Value>) -> String {
    let target = &source["target"];
    let value = if target["averageValue"].is_null() {
        let cur = current
            .filter(|c| c["averageUtilization"].is_number())
            .map_or_else(|| "<unknown>".to_string(), |c| format!("{}%", int(&c["averageUtilization"])));
        let goal = if target["averageUtilization"].is_number() {
            format!("{}%", int(&target["averageUtilization"]))
        } else {
            "<auto>".to_string()
        };
        format!("{cur}/{goal}")
    } else {
        let cur = current.map_or_else(|| "<unknown>".to_string(), |c| quantity_ptr(&c["averageValue"]));
        format!("{cur}/{}", quantity_ptr(&target["averageValue"]))
    };
    format!("{}: {value}", text(&source["name"]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn cpu_utilization_hpa() {
        let hpa = json!({
            "metadata": {"name": "php-apache", "creationTimestamp": "2025-06-01T11:59:42Z"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "php-apache"},
                     "minReplicas": 1, "maxReplicas": 10,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]},
            "status": {"currentReplicas": 1, "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 0, "averageValue": "1m"}}}]},
        });
        let cells = (HORIZONTAL_POD_AUTOSCALER.cells)(&hpa, now());
        assert_eq!(cells.len(), HORIZONTAL_POD_AUTOSCALER.columns.len());
        assert_eq!(
            cells,
            vec![
                json!("php-apache"),
                json!("Deployment/php-apache"),
                json!("cpu: 0%/50%"),
                json!("1"),
                json!(10),
                json!(1),
                json!("18s")
            ]
        );
    }

    #[test]
    fn defaults_apply_when_absent() {
        let hpa = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3}});
        let cells = (HORIZONTAL_POD_AUTOSCALER.cells)(&hpa, now());
        assert_eq!(cells[2..4], [json!("cpu: <unknown>/80%"), json!("1")]);
        let none = json!({"spec": {"metrics": []}});
        assert_eq!((HORIZONTAL_POD_AUTOSCALER.cells)(&none, now())[2], "<none>");
    }

    #[test]
    fn every_metric_kind() {
        let specs = json!([
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}}},
            {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
            {"type": "Object", "object": {"target": {"type": "Value", "value": "2k"}}},
            {"type": "External", "external": {"target": {"type": "AverageValue", "averageValue": "30"}}},
            {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app", "target": {"type": "Utilization"}}},
            {"type": "Magic"},
        ]);
        let statuses = json!([
            {"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "100Mi"}}},
            {"type": "Pods", "pods": {"current": {"averageValue": "5"}}},
            {"type": "Object", "object": {"current": {"value": "1500"}}},
            {"type": "External", "external": {"current": {"value": "7"}}},
        ]);
        let specs = items(&specs);
        let statuses = items(&statuses);
        let all: Vec<String> = specs.iter().enumerate().map(|(i, s)| metric(s, statuses.get(i))).collect();
        assert_eq!(
            all,
            ["memory: 100Mi/500Mi", "5/10", "1500/2k", "<unknown>/30 (avg)", "cpu: <unknown>/<auto>", "<unknown type>"]
        );
    }

    #[test]
    fn at_most_two_targets() {
        let m = json!({"type": "Pods", "pods": {"target": {"averageValue": "1"}}});
        let specs = json!([m, m, m, m]);
        assert_eq!(targets(&specs, &Value::Null), "<unknown>/1, <unknown>/1 + 2 more...");
    }
}
