//! One scheduling cycle: PreFilter, Filter over a rotating subset of nodes, Score with upstream
//! weights, and selection of the best node (ties broken at random).

use rand::Rng;

use crate::cache::{Cache, NodeInfo};
use crate::message::Diagnosis;
use crate::nominations::Nominations;
use crate::plugins::{
    self, image_locality, inter_pod_affinity, node_affinity, node_ports, node_resources, taint_toleration,
    topology_spread,
};
use crate::podinfo::PodInfo;

/// Score weights of the default profile.
mod weight {
    pub const TAINT_TOLERATION: i64 = 3;
    pub const NODE_AFFINITY: i64 = 2;
    pub const NODE_RESOURCES_FIT: i64 = 1;
    pub const BALANCED_ALLOCATION: i64 = 1;
    pub const POD_TOPOLOGY_SPREAD: i64 = 2;
    pub const INTER_POD_AFFINITY: i64 = 2;
    pub const IMAGE_LOCALITY: i64 = 1;
}

/// Minimum feasible nodes to look for (upstream `minFeasibleNodesToFind`).
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// Lowest adaptive percentage (upstream `minFeasibleNodesPercentageToFind`).
const MIN_FEASIBLE_PERCENTAGE: usize = 5;

/// How many feasible nodes to find before scoring (`percentageOfNodesToScore`; 0 is adaptive).
pub fn num_feasible_nodes_to_find(num_nodes: usize, percentage: u32) -> usize {
    let percentage = percentage as usize;
    if num_nodes < MIN_FEASIBLE_NODES_TO_FIND || percentage >= 100 {
        return num_nodes;
    }
    let pct = if percentage == 0 {
        (50usize.saturating_sub(num_nodes / 125)).max(MIN_FEASIBLE_PERCENTAGE)
    } else {
        percentage
    };
    (num_nodes * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// The outcome of a successful cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The chosen node.
    pub node: String,
    /// Nodes the filter visited.
    pub evaluated: usize,
    /// Nodes that passed the filter.
    pub feasible: usize,
}

struct PreFilter {
    inter_pod: Option<inter_pod_affinity::FilterState>,
    spread: Option<Vec<topology_spread::Domains>>,
}

/// Runs the filter plugins in the default profile's order; the first failing plugin's reasons.
fn filter(pod: &PodInfo, pre: &PreFilter, node: &NodeInfo) -> Option<Vec<String>> {
    taint_toleration::filter_unschedulable(pod, node)
        .or_else(|| node_ports::filter_name(pod, node))
        .or_else(|| taint_toleration::filter(pod, node))
        .or_else(|| node_affinity::filter(pod, node))
        .or_else(|| node_ports::filter(pod, node))
        .or_else(|| node_resources::filter(pod, node))
        .or_else(|| topology_spread::filter(pod, pre.spread.as_ref(), node))
        .or_else(|| inter_pod_affinity::filter(pod, pre.inter_pod.as_ref(), node))
}

/// Scores feasible nodes; each plugin normalized to 0–100 and weighted.
pub fn score(pod: &PodInfo, cache: &Cache, nodes: &[&NodeInfo]) -> Vec<i64> {
    let mut total = vec![0i64; nodes.len()];
    let mut add = |scores: &[i64], w: i64| total.iter_mut().zip(scores).for_each(|(t, s)| *t += s * w);

    let mut taints: Vec<i64> = nodes.iter().map(|n| taint_toleration::score(pod, n)).collect();
    plugins::default_normalize(&mut taints, true);
    add(&taints, weight::TAINT_TOLERATION);

    if node_affinity::has_preferred(pod) {
        let mut s: Vec<i64> = nodes.iter().map(|n| node_affinity::score(pod, n)).collect();
        plugins::default_normalize(&mut s, false);
        add(&s, weight::NODE_AFFINITY);
    }

    let least: Vec<i64> = nodes.iter().map(|n| node_resources::least_allocated(pod, n)).collect();
    add(&least, weight::NODE_RESOURCES_FIT);
    let balanced: Vec<i64> = nodes.iter().map(|n| node_resources::balanced_allocation(pod, n)).collect();
    add(&balanced, weight::BALANCED_ALLOCATION);

    if let Some(state) = topology_spread::pre_score(pod, cache) {
        let mut raw: Vec<Option<i64>> = nodes.iter().map(|n| topology_spread::score(pod, &state, n)).collect();
        add(&plugins::spread_normalize(&mut raw), weight::POD_TOPOLOGY_SPREAD);
    }

    if let Some(state) = inter_pod_affinity::pre_score(pod, cache) {
        let mut s: Vec<i64> = nodes.iter().map(|n| inter_pod_affinity::score(&state, n)).collect();
        plugins::min_max_normalize(&mut s);
        add(&s, weight::INTER_POD_AFFINITY);
    }

    let images = image_locality::pod_images(pod);
    if !images.is_empty() && nodes.iter().any(|n| !n.images.is_empty()) {
        let spread = image_locality::spread(&images, cache.nodes());
        let s: Vec<i64> =
            nodes.iter().map(|n| image_locality::score(&images, &spread, cache.len() as i64, n)).collect();
        add(&s, weight::IMAGE_LOCALITY);
    }
    total
}

/// The scheduling algorithm with its rotating start position.
#[derive(Debug, Default)]
pub struct Framework {
    next_start: usize,
    /// `percentageOfNodesToScore`; 0 is adaptive.
    pub percentage_of_nodes_to_score: u32,
}

impl Framework {
    /// Finds a node for `pod`, or explains why none fits. Pods nominated to a node (of at least
    /// the pod's priority) count there as if placed; the pod's own nominated node is tried first.
    pub fn schedule(
        &mut self,
        pod: &PodInfo,
        cache: &Cache,
        nominations: &Nominations,
    ) -> Result<Placement, Diagnosis> {
        let n = cache.len();
        let mut diagnosis = Diagnosis { num_nodes: n, ..Default::default() };
        if n == 0 {
            return Err(diagnosis);
        }
        let pre = PreFilter {
            inter_pod: inter_pod_affinity::pre_filter(pod, cache),
            spread: topology_spread::pre_filter(pod, cache),
        };
        let check = |node: &NodeInfo| {
            if nominations.is_empty() {
                return filter(pod, &pre, node);
            }
            let mut competing = nominations.competing(pod, &node.name).peekable();
            if competing.peek().is_none() {
                return filter(pod, &pre, node);
            }
            let mut with = node.clone();
            competing.for_each(|p| with.add_pod(p.clone()));
            filter(pod, &pre, &with)
        };
        if let Some(node) = nominations.node_of(&pod.key).and_then(|n| cache.node(n))
            && check(node).is_none()
        {
            return Ok(Placement { node: node.name.clone(), evaluated: 1, feasible: 1 });
        }
        let to_find = num_feasible_nodes_to_find(n, self.percentage_of_nodes_to_score);
        let start = self.next_start % n;
        let mut feasible: Vec<&NodeInfo> = Vec::new();
        let mut evaluated = 0;
        for i in 0..n {
            let Some(node) = cache.node_at((start + i) % n) else { continue };
            evaluated += 1;
            match check(node) {
                None => feasible.push(node),
                Some(reasons) => diagnosis.add_node(&node.name, reasons),
            }
            if feasible.len() >= to_find {
                break;
            }
        }
        self.next_start = (start + evaluated) % n;
        let chosen = match feasible.len() {
            0 => return Err(diagnosis),
            1 => feasible[0],
            _ => {
                let scores = score(pod, cache, &feasible);
                feasible[select(&scores)]
            }
        };
        Ok(Placement { node: chosen.name.clone(), evaluated, feasible: feasible.len() })
    }
}

/// The index of the highest score; ties broken uniformly at random (reservoir sampling).
fn select(scores: &[i64]) -> usize {
    let mut rng = rand::rng();
    let (mut best, mut ties) = (0, 0u32);
    for (i, s) in scores.iter().enumerate() {
        if i == 0 || *s > scores[best] {
            best = i;
            ties = 1;
        } else if *s == scores[best] {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = i;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{cache_of, labeled_pod, pod};
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn adaptive_percentage_matches_the_reference_table() {
        assert_eq!(num_feasible_nodes_to_find(50, 0), 50);
        assert_eq!(num_feasible_nodes_to_find(500, 0), 230);
        assert_eq!(num_feasible_nodes_to_find(5000, 0), 500);
        assert_eq!(num_feasible_nodes_to_find(6000, 0), 300);
        assert_eq!(num_feasible_nodes_to_find(10_000, 0), 500);
        assert_eq!(num_feasible_nodes_to_find(150, 0), 100, "at least 100");
        assert_eq!(num_feasible_nodes_to_find(1000, 100), 1000);
        assert_eq!(num_feasible_nodes_to_find(1000, 20), 200);
    }

    #[test]
    fn search_stops_at_enough_feasible_nodes_and_rotates() {
        let nodes: Vec<(String, serde_json::Value)> = (0..500).map(|i| (format!("n{i:03}"), json!({}))).collect();
        let refs: Vec<(&str, serde_json::Value)> = nodes.iter().map(|(n, l)| (n.as_str(), l.clone())).collect();
        let cache = cache_of(&refs, &[]);
        let mut fw = Framework::default();
        let p = pod(json!({}));
        let first = fw.schedule(&p, &cache, &Nominations::default()).unwrap();
        assert_eq!((first.evaluated, first.feasible), (230, 230));
        assert_eq!(fw.next_start, 230);
        fw.schedule(&p, &cache, &Nominations::default()).unwrap();
        assert_eq!(fw.next_start, 460);
        fw.schedule(&p, &cache, &Nominations::default()).unwrap();
        assert_eq!(fw.next_start, 190, "wraps around");
    }

    #[test]
    fn failures_are_counted_per_node_and_reason() {
        let cache = cache_of(&[("a", json!({"disk": "ssd"})), ("b", json!({})), ("c", json!({}))], &[]);
        let p = pod(json!({"nodeSelector": {"disk": "ssd"},
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "8"}}}]}));
        let d = Framework::default().schedule(&p, &cache, &Nominations::default()).unwrap_err();
        assert_eq!(
            d.message(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector."
        );
    }

    #[test]
    fn scoring_prefers_the_least_allocated_node() {
        let busy =
            pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "3", "memory": "6Gi"}}}]}));
        let cache = cache_of(&[("busy", json!({})), ("idle", json!({}))], &[("busy", busy)]);
        let p =
            pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]}));
        let mut fw = Framework::default();
        for _ in 0..10 {
            assert_eq!(fw.schedule(&p, &cache, &Nominations::default()).unwrap().node, "idle");
        }
    }

    #[test]
    fn prefer_no_schedule_taints_weigh_more_than_resources() {
        let mut cache = cache_of(&[("free", json!({}))], &[]);
        let tainted: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
            "metadata": {"name": "tainted", "labels": {"kubernetes.io/hostname": "tainted"}},
            "spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
        .unwrap();
        cache.apply_node(Arc::new(tainted));
        let p = labeled_pod("x", json!({}), json!({}));
        let mut fw = Framework::default();
        for _ in 0..10 {
            assert_eq!(fw.schedule(&p, &cache, &Nominations::default()).unwrap().node, "free");
        }
    }

    #[test]
    fn room_kept_for_a_nominated_pod_is_not_given_to_lower_priority_pods() {
        let cache = cache_of(&[("n1", json!({})), ("n2", json!({}))], &[]);
        let mut noms = Nominations::default();
        let preemptor = pod(json!({"priority": 100,
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "3"}}}]}));
        let preemptor = Arc::new(crate::podinfo::PodInfo { key: "default/preemptor".into(), ..preemptor });
        noms.set(&preemptor, Some("n1"));
        let low = pod(json!({"priority": 1, "containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}));
        let mut fw = Framework::default();
        for _ in 0..10 {
            assert_eq!(fw.schedule(&low, &cache, &noms).unwrap().node, "n2");
        }
        // The nominated pod itself goes to its node first.
        assert_eq!(fw.schedule(&preemptor, &cache, &noms).unwrap().node, "n1");
        // A pod of higher priority than the nominee is not held back.
        let higher = pod(json!({"priority": 500, "nodeSelector": {"kubernetes.io/hostname": "n1"},
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}));
        assert_eq!(fw.schedule(&higher, &cache, &noms).unwrap().node, "n1");
    }

    #[test]
    fn ties_are_broken_among_the_best_only() {
        for _ in 0..50 {
            let i = select(&[5, 9, 1, 9]);
            assert!(i == 1 || i == 3);
        }
        let picks: std::collections::HashSet<usize> = (0..200).map(|_| select(&[7, 7, 7])).collect();
        assert_eq!(picks.len(), 3, "every tied node gets picked sometimes");
    }
}
