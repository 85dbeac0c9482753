//! InterPodAffinity: required pod affinity and anti-affinity, and existing pods' required
//! anti-affinity, as a filter; preferred terms (both ways) as a score (weight 2).

use std::collections::HashMap;

use crate::cache::{Cache, NodeInfo};
use crate::podinfo::{AffinityTerm, PodInfo};

/// Upstream `ErrReasonAffinityRulesNotMatch`.
pub const AFFINITY_REASON: &str = "node(s) didn't match pod affinity rules";
/// Upstream `ErrReasonAntiAffinityRulesNotMatch`.
pub const ANTI_AFFINITY_REASON: &str = "node(s) didn't match pod anti-affinity rules";
/// Upstream `ErrReasonExistingAntiAffinityRulesNotMatch`.
pub const EXISTING_ANTI_AFFINITY_REASON: &str = "node(s) didn't satisfy existing pods anti-affinity rules";

/// Counts per (topology key, value).
type TopologyCounts = HashMap<(String, String), i64>;

/// What the filter needs, computed once per scheduling cycle.
#[derive(Debug, Default)]
pub struct FilterState {
    /// Domains where an existing pod's required anti-affinity matches the incoming pod.
    existing_anti: TopologyCounts,
    /// Per required affinity term: matching pods per domain.
    affinity: Vec<TopologyCounts>,
    /// Per required anti-affinity term: matching pods per domain.
    anti: Vec<TopologyCounts>,
    /// The incoming pod matches all of its own required affinity terms.
    self_match: bool,
}

fn bump(counts: &mut TopologyCounts, node: &NodeInfo, key: &str, by: i64) {
    if let Some(value) = node.labels.get(key) {
        *counts.entry((key.to_string(), value.clone())).or_default() += by;
    }
}

fn not_terminating(pod: &PodInfo) -> bool {
    pod.pod.metadata.deletion_timestamp.is_none()
}

/// PreFilter; `None` when neither the pod nor any existing pod has required terms.
pub fn pre_filter(pod: &PodInfo, cache: &Cache) -> Option<FilterState> {
    let own = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
    let existing = cache.any_required_anti_affinity_pods();
    if !own && !existing {
        return None;
    }
    let ns = cache.namespace_labels();
    let mut state = FilterState {
        self_match: pod.required_affinity.iter().all(|t| t.matches(pod, ns)),
        existing_anti: HashMap::new(),
        affinity: vec![HashMap::new(); pod.required_affinity.len()],
        anti: vec![HashMap::new(); pod.required_anti_affinity.len()],
    };
    for node in cache.nodes() {
        if !own && node.pods_with_required_anti_affinity == 0 {
            continue;
        }
        for other in node.pods.values().filter(|p| p.key != pod.key) {
            for term in &other.required_anti_affinity {
                if term.matches(pod, ns) {
                    bump(&mut state.existing_anti, node, &term.topology_key, 1);
                }
            }
            if !own || !not_terminating(other) {
                continue;
            }
            for (i, term) in pod.required_affinity.iter().enumerate() {
                if term.matches(other, ns) {
                    bump(&mut state.affinity[i], node, &term.topology_key, 1);
                }
            }
            for (i, term) in pod.required_anti_affinity.iter().enumerate() {
                if term.matches(other, ns) {
                    bump(&mut state.anti[i], node, &term.topology_key, 1);
                }
            }
        }
    }
    Some(state)
}

fn count_at(counts: &TopologyCounts, term: &AffinityTerm, node: &NodeInfo) -> Option<i64> {
    let value = node.labels.get(&term.topology_key)?;
    Some(counts.get(&(term.topology_key.clone(), value.clone())).copied().unwrap_or(0))
}

/// The filter.
pub fn filter(pod: &PodInfo, state: Option<&FilterState>, node: &NodeInfo) -> Option<Vec<String>> {
    let state = state?;
    if !pod.required_affinity.is_empty() {
        let everywhere_empty = state.affinity.iter().all(HashMap::is_empty);
        let satisfied =
            pod.required_affinity.iter().zip(&state.affinity).all(|(t, c)| count_at(c, t, node).is_some_and(|n| n > 0));
        // The first pod of a group that selects itself may go to any node with the topology keys.
        let self_match = everywhere_empty
            && state.self_match
            && pod.required_affinity.iter().all(|t| node.labels.contains_key(&t.topology_key));
        if !satisfied && !self_match {
            return Some(vec![AFFINITY_REASON.to_string()]);
        }
    }
    if pod.required_anti_affinity.iter().zip(&state.anti).any(|(t, c)| count_at(c, t, node).is_some_and(|n| n > 0)) {
        return Some(vec![ANTI_AFFINITY_REASON.to_string()]);
    }
    let existing = state.existing_anti.keys().any(|(k, v)| node.labels.get(k) == Some(v));
    existing.then(|| vec![EXISTING_ANTI_AFFINITY_REASON.to_string()])
}

/// PreScore: per domain, the preference of the incoming pod for it (its preferred terms against
/// existing pods, and existing pods' terms against it). `None` when nothing applies.
pub fn pre_score(pod: &PodInfo, cache: &Cache) -> Option<TopologyCounts> {
    let own = !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
    if !own && !cache.any_affinity_pods() {
        return None;
    }
    let ns = cache.namespace_labels();
    let mut scores = TopologyCounts::new();
    for node in cache.nodes() {
        if !own && node.pods_with_affinity == 0 {
            continue;
        }
        for other in node.pods.values().filter(|p| p.key != pod.key) {
            if own {
                for w in &pod.preferred_affinity {
                    if w.term.matches(other, ns) {
                        bump(&mut scores, node, &w.term.topology_key, w.weight);
                    }
                }
                for w in &pod.preferred_anti_affinity {
                    if w.term.matches(other, ns) {
                        bump(&mut scores, node, &w.term.topology_key, -w.weight);
                    }
                }
            }
            for w in &other.preferred_affinity {
                if w.term.matches(pod, ns) {
                    bump(&mut scores, node, &w.term.topology_key, w.weight);
                }
            }
            for w in &other.preferred_anti_affinity {
                if w.term.matches(pod, ns) {
                    bump(&mut scores, node, &w.term.topology_key, -w.weight);
                }
            }
            // hardPodAffinityWeight: existing pods' required affinity attracts matching pods.
            for t in &other.required_affinity {
                if t.matches(pod, ns) {
                    bump(&mut scores, node, &t.topology_key, 1);
                }
            }
        }
    }
    (!scores.is_empty()).then_some(scores)
}

/// The raw score of a node: the sum over its domains.
pub fn score(scores: &TopologyCounts, node: &NodeInfo) -> i64 {
    node.labels.iter().filter_map(|(k, v)| scores.get(&(k.clone(), v.clone()))).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{cache_of, labeled_pod};
    use serde_json::json;

    fn anti(app: &str) -> serde_json::Value {
        json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}]}})
    }

    #[test]
    fn anti_affinity_keeps_matching_pods_apart() {
        let cache = cache_of(
            &[("n1", json!({"zone": "a"})), ("n2", json!({"zone": "a"}))],
            &[("n1", labeled_pod("w1", json!({"app": "web"}), json!({})))],
        );
        let p = labeled_pod("w2", json!({"app": "web"}), anti("web"));
        let st = pre_filter(&p, &cache);
        assert_eq!(filter(&p, st.as_ref(), cache.node("n1").unwrap()).unwrap(), [ANTI_AFFINITY_REASON]);
        assert!(filter(&p, st.as_ref(), cache.node("n2").unwrap()).is_none());
    }

    #[test]
    fn existing_pods_anti_affinity_repels_the_incoming_pod() {
        let cache = cache_of(
            &[("n1", json!({})), ("n2", json!({}))],
            &[("n1", labeled_pod("db", json!({"app": "db"}), anti("web")))],
        );
        let p = labeled_pod("w", json!({"app": "web"}), json!({}));
        let st = pre_filter(&p, &cache);
        assert_eq!(filter(&p, st.as_ref(), cache.node("n1").unwrap()).unwrap(), [EXISTING_ANTI_AFFINITY_REASON]);
        assert!(filter(&p, st.as_ref(), cache.node("n2").unwrap()).is_none());
    }

    #[test]
    fn affinity_follows_matching_pods_by_zone_and_the_first_pod_may_go_anywhere() {
        let aff = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}]}});
        let nodes = [
            ("n1", json!({"zone": "a"})),
            ("n2", json!({"zone": "a"})),
            ("n3", json!({"zone": "b"})),
            ("n4", json!({})),
        ];
        let cache = cache_of(&nodes, &[("n1", labeled_pod("c", json!({"app": "cache"}), json!({})))]);
        let p = labeled_pod("web", json!({"app": "web"}), aff.clone());
        let st = pre_filter(&p, &cache);
        assert!(filter(&p, st.as_ref(), cache.node("n2").unwrap()).is_none(), "same zone as the cache pod");
        assert_eq!(filter(&p, st.as_ref(), cache.node("n3").unwrap()).unwrap(), [AFFINITY_REASON]);
        assert!(filter(&p, st.as_ref(), cache.node("n4").unwrap()).is_some());

        let empty = cache_of(&nodes, &[]);
        let first = labeled_pod("c2", json!({"app": "cache"}), aff);
        let st = pre_filter(&first, &empty);
        assert!(filter(&first, st.as_ref(), empty.node("n3").unwrap()).is_none());
        assert!(filter(&first, st.as_ref(), empty.node("n4").unwrap()).is_some(), "needs the topology key");
    }

    #[test]
    fn preferred_terms_score_domains() {
        let pref = json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 3, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}}]}});
        let cache = cache_of(
            &[("n1", json!({"zone": "a"})), ("n2", json!({"zone": "a"})), ("n3", json!({"zone": "b"}))],
            &[
                ("n1", labeled_pod("db", json!({"app": "db"}), json!({}))),
                ("n1", labeled_pod("w1", json!({"app": "web"}), json!({}))),
            ],
        );
        let p = labeled_pod("w2", json!({"app": "web"}), pref);
        let scores = pre_score(&p, &cache).unwrap();
        assert_eq!(score(&scores, cache.node("n1").unwrap()), 7);
        assert_eq!(score(&scores, cache.node("n2").unwrap()), 10);
        assert_eq!(score(&scores, cache.node("n3").unwrap()), 0);
    }
}
