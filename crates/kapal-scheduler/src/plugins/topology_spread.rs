//! PodTopologySpread: `DoNotSchedule` constraints as a filter, `ScheduleAnyway` constraints as a
//! score (weight 2).

use std::collections::HashMap;

use crate::cache::{Cache, NodeInfo};
use crate::plugins::{node_affinity, taint_toleration};
use crate::podinfo::{PodInfo, SpreadConstraint};

/// Upstream `ErrReasonConstraintsNotMatch`.
pub const REASON: &str = "node(s) didn't match pod topology spread constraints";
/// Upstream `ErrReasonNodeLabelNotMatch`.
pub const MISSING_LABEL_REASON: &str = "node(s) didn't match pod topology spread constraints (missing required label)";

/// Matching pods per domain value of one constraint.
#[derive(Debug, Default, Clone)]
pub struct Domains {
    counts: HashMap<String, i64>,
    min: i64,
}

fn eligible(pod: &PodInfo, c: &SpreadConstraint, constraints: &[&SpreadConstraint], node: &NodeInfo) -> bool {
    constraints.iter().all(|c| node.labels.contains_key(&c.topology_key))
        && (!c.honor_node_affinity || node_affinity::matches_required(pod, node))
        && (!c.honor_node_taints || taint_toleration::tolerates_hard_taints(pod, node))
}

fn count_domains(pod: &PodInfo, constraints: &[&SpreadConstraint], cache: &Cache) -> Vec<Domains> {
    constraints
        .iter()
        .map(|c| {
            let mut counts: HashMap<String, i64> = HashMap::new();
            for node in cache.nodes().filter(|n| eligible(pod, c, constraints, n)) {
                let Some(value) = node.labels.get(&c.topology_key) else { continue };
                let matching = node
                    .pods
                    .values()
                    .filter(|p| {
                        p.key != pod.key && p.namespace == pod.namespace && p.pod.metadata.deletion_timestamp.is_none()
                    })
                    .filter(|p| c.selector.matches_btree(&p.labels))
                    .count() as i64;
                *counts.entry(value.clone()).or_default() += matching;
            }
            let mut min = counts.values().copied().min().unwrap_or(0);
            if c.min_domains.is_some_and(|m| (counts.len() as i64) < m) {
                min = 0;
            }
            Domains { counts, min }
        })
        .collect()
}

/// PreFilter state: per hard constraint, the counts. `None` without hard constraints.
pub fn pre_filter(pod: &PodInfo, cache: &Cache) -> Option<Vec<Domains>> {
    let hard: Vec<&SpreadConstraint> = pod.spread.iter().filter(|c| c.hard).collect();
    (!hard.is_empty()).then(|| count_domains(pod, &hard, cache))
}

/// The filter.
pub fn filter(pod: &PodInfo, state: Option<&Vec<Domains>>, node: &NodeInfo) -> Option<Vec<String>> {
    let state = state?;
    for (c, domains) in pod.spread.iter().filter(|c| c.hard).zip(state) {
        let Some(value) = node.labels.get(&c.topology_key) else {
            return Some(vec![MISSING_LABEL_REASON.to_string()]);
        };
        let self_match = i64::from(c.selector.matches_btree(&pod.labels));
        let skew = domains.counts.get(value).copied().unwrap_or(0) + self_match - domains.min;
        if skew > c.max_skew {
            return Some(vec![REASON.to_string()]);
        }
    }
    None
}

/// PreScore state: per soft constraint, counts and the weight `ln(domains + 2)`.
pub fn pre_score(pod: &PodInfo, cache: &Cache) -> Option<Vec<(Domains, f64)>> {
    let soft: Vec<&SpreadConstraint> = pod.spread.iter().filter(|c| !c.hard).collect();
    if soft.is_empty() {
        return None;
    }
    let domains = count_domains(pod, &soft, cache);
    Some(
        domains
            .into_iter()
            .map(|d| {
                let w = ((d.counts.len() + 2) as f64).ln();
                (d, w)
            })
            .collect(),
    )
}

/// The raw score (lower is better); `None` for nodes lacking a constraint's label.
pub fn score(pod: &PodInfo, state: &[(Domains, f64)], node: &NodeInfo) -> Option<i64> {
    let mut total = 0.0;
    for (c, (domains, weight)) in pod.spread.iter().filter(|c| !c.hard).zip(state) {
        let value = node.labels.get(&c.topology_key)?;
        let count = domains.counts.get(value).copied().unwrap_or(0);
        total += count as f64 * weight + (c.max_skew - 1) as f64;
    }
    Some(total.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{cache_of, labeled_pod, spread_pod};
    use serde_json::json;

    fn spread(max_skew: i32, key: &str, when: &str) -> serde_json::Value {
        json!([{"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": when,
                "labelSelector": {"matchLabels": {"app": "web"}}}])
    }

    fn web(name: &str) -> PodInfo {
        labeled_pod(name, json!({"app": "web"}), json!({}))
    }

    #[test]
    fn do_not_schedule_limits_skew_between_zones() {
        let nodes = [("a1", json!({"zone": "a"})), ("b1", json!({"zone": "b"})), ("x", json!({}))];
        let cache = cache_of(&nodes, &[("a1", web("w1")), ("a1", web("w2")), ("b1", web("w3"))]);
        let p = spread_pod("w4", json!({"app": "web"}), spread(1, "zone", "DoNotSchedule"));
        let st = pre_filter(&p, &cache);
        assert_eq!(filter(&p, st.as_ref(), cache.node("a1").unwrap()).unwrap(), [REASON]);
        assert!(filter(&p, st.as_ref(), cache.node("b1").unwrap()).is_none());
        assert_eq!(filter(&p, st.as_ref(), cache.node("x").unwrap()).unwrap(), [MISSING_LABEL_REASON]);
    }

    #[test]
    fn schedule_anyway_scores_emptier_domains_lower() {
        let nodes = [("a1", json!({"zone": "a"})), ("b1", json!({"zone": "b"}))];
        let cache = cache_of(&nodes, &[("a1", web("w1")), ("a1", web("w2"))]);
        let p = spread_pod("w4", json!({"app": "web"}), spread(1, "zone", "ScheduleAnyway"));
        let st = pre_score(&p, &cache).unwrap();
        let a = score(&p, &st, cache.node("a1").unwrap()).unwrap();
        let b = score(&p, &st, cache.node("b1").unwrap()).unwrap();
        assert!(a > b, "{a} > {b}");
        assert!(pre_filter(&p, &cache).is_none());
    }
}
