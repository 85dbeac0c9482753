//! NodeAffinity: `nodeSelector` and required node affinity as a filter; preferred node affinity
//! as a score (weight 2).

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};

use crate::cache::NodeInfo;
use crate::podinfo::PodInfo;

/// Upstream `ErrReasonPod`.
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) =
                (value.and_then(|v| v.parse::<i64>().ok()), values.first().and_then(|b| b.parse::<i64>().ok()))
            else {
                return false;
            };
            if r.operator == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

/// Whether a node selector term matches a node (all expressions and fields; an empty term matches nothing).
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, Some(&node.name)))
}

/// Whether the node satisfies the pod's `nodeSelector` and required node affinity.
pub fn matches_required(pod: &PodInfo, node: &NodeInfo) -> bool {
    let Some(spec) = pod.pod.spec.as_ref() else { return true };
    if let Some(sel) = &spec.node_selector
        && !sel.iter().all(|(k, v)| node.labels.get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        Some(sel) => sel.node_selector_terms.iter().any(|t| term_matches(t, node)),
        None => true,
    }
}

/// The filter.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Option<Vec<String>> {
    (!matches_required(pod, node)).then(|| vec![REASON.to_string()])
}

/// The raw score: the sum of the weights of matching preferred terms.
pub fn score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let preferred = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.preferred_during_scheduling_ignored_during_execution.as_ref());
    preferred
        .into_iter()
        .flatten()
        .filter(|p| p.weight != 0 && term_matches(&p.preference, node))
        .map(|p| i64::from(p.weight))
        .sum()
}

/// Whether the pod has preferred node affinity (otherwise scoring is skipped).
pub fn has_preferred(pod: &PodInfo) -> bool {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.preferred_during_scheduling_ignored_during_execution.as_ref())
        .is_some_and(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn node_selector_must_match_every_label() {
        let p = pod(json!({"nodeSelector": {"disk": "ssd", "zone": "a"}}));
        assert!(filter(&p, &node("n", json!({"labels": {"disk": "ssd", "zone": "a", "x": "y"}}), json!({}))).is_none());
        let miss = filter(&p, &node("n", json!({"labels": {"disk": "ssd"}}), json!({})));
        assert_eq!(miss, Some(vec![REASON.to_string()]));
    }

    #[test]
    fn required_terms_are_ored_and_expressions_anded() {
        let p = pod(json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]},
                                  {"key": "gen", "operator": "Gt", "values": ["3"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["special"]}]},
        ]}}}}));
        assert!(filter(&p, &node("n", json!({"labels": {"zone": "b", "gen": "4"}}), json!({}))).is_none());
        assert!(filter(&p, &node("n", json!({"labels": {"zone": "b", "gen": "3"}}), json!({}))).is_some());
        assert!(filter(&p, &node("n", json!({"labels": {"zone": "c", "gen": "9"}}), json!({}))).is_some());
        assert!(filter(&p, &node("special", json!({}), json!({}))).is_none());
        let not_in = pod(json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]},
                                                        {"key": "gpu", "operator": "DoesNotExist"}]}]}}}}));
        assert!(filter(&not_in, &node("n", json!({}), json!({}))).is_none());
        assert!(filter(&not_in, &node("n", json!({"labels": {"gpu": "1"}}), json!({}))).is_some());
    }

    #[test]
    fn preferred_terms_add_their_weights() {
        let p = pod(json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
            {"weight": 5, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}},
        ]}}}));
        assert_eq!(score(&p, &node("n", json!({"labels": {"zone": "a", "disk": "x"}}), json!({}))), 15);
        assert_eq!(score(&p, &node("n", json!({"labels": {"disk": "x"}}), json!({}))), 5);
        assert_eq!(score(&p, &node("n", json!({}), json!({}))), 0);
    }
}
