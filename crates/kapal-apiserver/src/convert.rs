//! Conversion between a resource's served version and the version it is stored at.
//!
//! Built-in resources served at several versions are stored at one (autoscaling/v1
//! HorizontalPodAutoscalers are stored as autoscaling/v2, as upstream does); custom resources
//! with several versions and no conversion webhook differ only in `apiVersion`.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

use crate::resources::Served;

const HPA_V1: &str = "autoscaling/v1";
const HPA_V2: &str = "autoscaling/v2";
const EVENTS_V1: &str = "events.k8s.io/v1";

fn is_hpa(served: &Served) -> bool {
    !served.is_custom() && served.info.group == "autoscaling" && served.info.kind == "HorizontalPodAutoscaler"
}

fn is_new_event(served: &Served) -> bool {
    !served.is_custom() && served.info.group == "events.k8s.io" && served.info.kind == "Event"
}

/// The group, version and kind objects of this resource are stored as.
pub fn storage_gvk(served: &Served) -> (String, String, String) {
    let info = &served.info;
    if is_hpa(served) {
        return ("autoscaling".into(), "v2".into(), info.kind.clone());
    }
    if is_new_event(served) {
        return (String::new(), "v1".into(), "Event".into());
    }
    match &served.custom {
        Some(c) if !c.storage_version.is_empty() => (info.group.clone(), c.storage_version.clone(), info.kind.clone()),
        _ => (info.group.clone(), info.version.clone(), info.kind.clone()),
    }
}

/// The `apiVersion` objects of this resource are stored at.
pub fn storage_api_version(served: &Served) -> String {
    let (group, version, _) = storage_gvk(served);
    kapal_api::registry::api_version(&group, &version)
}

/// Whether objects of this resource need converting between the request and the store.
pub fn converts(served: &Served) -> bool {
    storage_api_version(served) != served.info.api_version()
}

/// A stored object as the served version shows it.
pub fn from_storage<'a>(served: &Served, obj: &'a Value) -> Cow<'a, Value> {
    let want = served.info.api_version();
    if obj.get("apiVersion").and_then(Value::as_str) == Some(want.as_str()) {
        return Cow::Borrowed(obj);
    }
    if is_hpa(served) && want == HPA_V1 {
        return Cow::Owned(hpa_v2_to_v1(obj));
    }
    if is_new_event(served) {
        return Cow::Owned(rename_event(obj, EVENTS_V1, EVENT_FIELDS.iter().map(|(core, new)| (*core, *new))));
    }
    let mut o = obj.clone();
    o["apiVersion"] = Value::String(want);
    Cow::Owned(o)
}

/// A request's object in the stored version. `old` is the stored object an update replaces:
/// what the served version cannot express is kept from it.
pub fn to_storage(served: &Served, obj: Value, old: Option<&Value>) -> Value {
    let target = storage_api_version(served);
    if obj.get("apiVersion").and_then(Value::as_str) == Some(target.as_str()) {
        return obj;
    }
    if is_hpa(served) && target == HPA_V2 {
        return hpa_v1_to_v2(&obj, old);
    }
    if is_new_event(served) {
        return rename_event(&obj, "v1", EVENT_FIELDS.iter().map(|(core, new)| (*new, *core)));
    }
    let mut o = obj;
    o["apiVersion"] = Value::String(target);
    o
}

/// core/v1 Event fields and their events.k8s.io/v1 names; the rest are the same in both.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn rename_event<'a>(obj: &Value, api_version: &str, renames: impl Iterator<Item = (&'a str, &'a str)>) -> Value {
    let mut out = obj.as_object().cloned().unwrap_or_default();
    for (from, to) in renames {
        if let Some(v) = out.remove(from) {
            out.insert(to.to_string(), v);
        }
    }
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

fn cpu_utilization(metrics: Option<&Value>, field: &str) -> Option<Value> {
    metrics?.as_array()?.iter().find_map(|m| {
        let resource = m.get("resource")?;
        (m.get("type")? == "Resource" && resource.get("name")? == "cpu")
            .then(|| resource.get(field)?.get("averageUtilization").cloned())?
    })
}

fn is_cpu_resource(metric: &Value) -> bool {
    metric.get("type").and_then(Value::as_str) == Some("Resource")
        && metric.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
}

fn hpa_v2_to_v1(obj: &Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(HPA_V1));
    out.insert("kind".into(), json!("HorizontalPodAutoscaler"));
    if let Some(m) = obj.get("metadata") {
        out.insert("metadata".into(), m.clone());
    }
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let mut v1_spec = Map::new();
    for field in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if let Some(v) = spec.get(field) {
            v1_spec.insert(field.into(), v.clone());
        }
    }
    if let Some(pct) = cpu_utilization(spec.get("metrics"), "target") {
        v1_spec.insert("targetCPUUtilizationPercentage".into(), pct);
    }
    out.insert("spec".into(), Value::Object(v1_spec));
    if let Some(status) = obj.get("status") {
        let mut v1_status = Map::new();
        for field in ["observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"] {
            if let Some(v) = status.get(field) {
                v1_status.insert(field.into(), v.clone());
            }
        }
        if let Some(pct) = cpu_utilization(status.get("currentMetrics"), "current") {
            v1_status.insert("currentCPUUtilizationPercentage".into(), pct);
        }
        v1_status.entry("currentReplicas").or_insert(json!(0));
        v1_status.entry("desiredReplicas").or_insert(json!(0));
        out.insert("status".into(), Value::Object(v1_status));
    }
    Value::Object(out)
}

fn hpa_v1_to_v2(obj: &Value, old: Option<&Value>) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(HPA_V2));
    out.insert("kind".into(), json!("HorizontalPodAutoscaler"));
    if let Some(m) = obj.get("metadata") {
        out.insert("metadata".into(), m.clone());
    }
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let mut v2_spec = Map::new();
    for field in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if let Some(v) = spec.get(field) {
            v2_spec.insert(field.into(), v.clone());
        }
    }
    // Metrics v1 cannot express (memory, custom, external) survive a v1 write.
    let mut metrics: Vec<Value> = old
        .and_then(|o| o.pointer("/spec/metrics"))
        .and_then(Value::as_array)
        .map(|ms| ms.iter().filter(|m| !is_cpu_resource(m)).cloned().collect())
        .unwrap_or_default();
    if let Some(pct) = spec.get("targetCPUUtilizationPercentage").filter(|p| !p.is_null()) {
        metrics.insert(
            0,
            json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": pct}}}),
        );
    }
    if !metrics.is_empty() {
        v2_spec.insert("metrics".into(), Value::Array(metrics));
    }
    if let Some(behavior) = old.and_then(|o| o.pointer("/spec/behavior")) {
        v2_spec.insert("behavior".into(), behavior.clone());
    }
    out.insert("spec".into(), Value::Object(v2_spec));
    if let Some(status) = obj.get("status") {
        let mut v2_status = old.and_then(|o| o.get("status")).and_then(Value::as_object).cloned().unwrap_or_default();
        for field in ["observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"] {
            match status.get(field) {
                Some(v) => v2_status.insert(field.into(), v.clone()),
                None => v2_status.remove(field),
            };
        }
        if let Some(pct) = status.get("currentCPUUtilizationPercentage").filter(|p| !p.is_null()) {
            let mut current: Vec<Value> = v2_status
                .get("currentMetrics")
                .and_then(Value::as_array)
                .map(|ms| ms.iter().filter(|m| !is_cpu_resource(m)).cloned().collect())
                .unwrap_or_default();
            current.insert(
                0,
                json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": pct}}}),
            );
            v2_status.insert("currentMetrics".into(), Value::Array(current));
        }
        out.insert("status".into(), Value::Object(v2_status));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;

    #[test]
    fn hpa_round_trips_between_v1_and_v2() {
        let resources = Resources::new();
        let snap = resources.snapshot();
        let v1 = snap.get("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        assert!(converts(v1));
        let request = json!({
            "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"}, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50}
        });
        let old = json!({"spec": {"metrics": [{"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 70}}}]}});
        let stored = to_storage(v1, request.clone(), Some(&old));
        assert_eq!(stored["apiVersion"], "autoscaling/v2");
        assert_eq!(stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 50);
        assert_eq!(stored["spec"]["metrics"][1]["resource"]["name"], "memory", "v1 cannot say it, so it is kept");
        let shown = from_storage(v1, &stored);
        assert_eq!(shown["spec"], request["spec"]);
        let v2 = snap.get("autoscaling", "v2", "horizontalpodautoscalers").unwrap();
        assert_eq!(storage_gvk(v1), ("autoscaling".into(), "v2".into(), "HorizontalPodAutoscaler".into()));
        assert!(!converts(v2));
        assert!(matches!(from_storage(v2, &stored), Cow::Borrowed(_)));
    }

    #[test]
    fn events_are_core_events_under_other_names() {
        let resources = Resources::new();
        let snap = resources.snapshot();
        let new = snap.get("events.k8s.io", "v1", "events").unwrap();
        let request = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "pulled", "reason": "Pulled", "reportingController": "kapal"});
        let stored = to_storage(new, request.clone(), None);
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(stored["message"], "pulled");
        assert_eq!(stored["reportingComponent"], "kapal");
        assert_eq!(from_storage(new, &stored).into_owned(), request);
    }
}
