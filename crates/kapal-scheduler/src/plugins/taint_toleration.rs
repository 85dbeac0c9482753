//! TaintToleration: untolerated `NoSchedule`/`NoExecute` taints filter a node out; untolerated
//! `PreferNoSchedule` taints lower its score (weight 3). Also the NodeUnschedulable filter.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::cache::NodeInfo;
use crate::podinfo::PodInfo;

/// Upstream NodeUnschedulable `ErrReasonUnschedulable`.
pub const UNSCHEDULABLE_REASON: &str = "node(s) were unschedulable";

/// Whether a toleration tolerates a taint (`Toleration.ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

fn tolerations(pod: &PodInfo) -> &[Toleration] {
    pod.pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default()
}

/// Whether the pod tolerates `taint`.
pub fn pod_tolerates(pod: &PodInfo, taint: &Taint) -> bool {
    tolerations(pod).iter().any(|t| tolerates(t, taint))
}

/// The TaintToleration filter: the first untolerated `NoSchedule`/`NoExecute` taint.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Option<Vec<String>> {
    let taint = node
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !pod_tolerates(pod, t))?;
    Some(vec![format!("node(s) had untolerated taint {{{}: {}}}", taint.key, taint.value.as_deref().unwrap_or(""))])
}

/// Whether every `NoSchedule`/`NoExecute` taint of the node is tolerated.
pub fn tolerates_hard_taints(pod: &PodInfo, node: &NodeInfo) -> bool {
    filter(pod, node).is_none()
}

/// The NodeUnschedulable filter: `spec.unschedulable` unless the pod tolerates the
/// `node.kubernetes.io/unschedulable:NoSchedule` taint.
pub fn filter_unschedulable(pod: &PodInfo, node: &NodeInfo) -> Option<Vec<String>> {
    if !node.unschedulable() {
        return None;
    }
    let taint =
        Taint { key: "node.kubernetes.io/unschedulable".into(), effect: "NoSchedule".into(), ..Default::default() };
    (!pod_tolerates(pod, &taint)).then(|| vec![UNSCHEDULABLE_REASON.to_string()])
}

/// The raw score: how many `PreferNoSchedule` taints the pod does not tolerate (lower is better).
pub fn score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let prefer: Vec<&Toleration> = tolerations(pod)
        .iter()
        .filter(|t| t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "PreferNoSchedule"))
        .collect();
    node.taints.iter().filter(|t| t.effect == "PreferNoSchedule" && !prefer.iter().any(|tol| tolerates(tol, t))).count()
        as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    fn tainted(taints: serde_json::Value) -> NodeInfo {
        node("n", json!({}), json!({"taints": taints}))
    }

    #[test]
    fn untolerated_taints_name_the_first_one() {
        let n = tainted(json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]));
        let reasons = filter(&pod(json!({})), &n).unwrap();
        assert_eq!(reasons, ["node(s) had untolerated taint {dedicated: gpu}"]);
        let cp = tainted(json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]));
        assert_eq!(
            filter(&pod(json!({})), &cp).unwrap(),
            ["node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"]
        );
    }

    #[test]
    fn tolerations_match_by_key_value_operator_and_effect() {
        let n = tainted(json!([{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]));
        let equal = pod(json!({"tolerations": [{"key": "dedicated", "value": "gpu"}]}));
        let exists = pod(json!({"tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}]}));
        let wrong_effect =
            pod(json!({"tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]}));
        let wrong_value = pod(json!({"tolerations": [{"key": "dedicated", "value": "cpu"}]}));
        let everything = pod(json!({"tolerations": [{"operator": "Exists"}]}));
        assert!(filter(&equal, &n).is_none());
        assert!(filter(&exists, &n).is_none());
        assert!(filter(&everything, &n).is_none());
        assert!(filter(&wrong_effect, &n).is_some());
        assert!(filter(&wrong_value, &n).is_some());
        let soft = tainted(json!([{"key": "a", "effect": "PreferNoSchedule"}]));
        assert!(filter(&pod(json!({})), &soft).is_none());
    }

    #[test]
    fn prefer_no_schedule_taints_count_against_the_score() {
        let n =
            tainted(json!([{"key": "a", "effect": "PreferNoSchedule"}, {"key": "b", "effect": "PreferNoSchedule"}]));
        assert_eq!(score(&pod(json!({})), &n), 2);
        assert_eq!(score(&pod(json!({"tolerations": [{"key": "a", "operator": "Exists"}]})), &n), 1);
    }

    #[test]
    fn cordoned_nodes_are_unschedulable_unless_tolerated() {
        let n = node("n", json!({}), json!({"unschedulable": true}));
        assert_eq!(filter_unschedulable(&pod(json!({})), &n).unwrap(), [UNSCHEDULABLE_REASON]);
        let tol = pod(
            json!({"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        assert!(filter_unschedulable(&tol, &n).is_none());
    }
}
