//! NodeResourcesFit (filter, and LeastAllocated score with weight 1) and
//! NodeResourcesBalancedAllocation (score, weight 1).

use crate::cache::NodeInfo;
use crate::plugins::MAX_NODE_SCORE;
use crate::podinfo::PodInfo;

/// Upstream `ErrReasonTooManyPods`.
pub const TOO_MANY_PODS: &str = "Too many pods";

/// The filter: pod count first, then cpu, memory, ephemeral storage and extended resources.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Option<Vec<String>> {
    let mut reasons = Vec::new();
    if node.pods.len() as i64 + 1 > node.allocatable.pods {
        reasons.push(TOO_MANY_PODS.to_string());
    }
    let req = &pod.requests;
    let (alloc, used) = (&node.allocatable, &node.requested);
    if req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu - used.milli_cpu {
        reasons.push("Insufficient cpu".to_string());
    }
    if req.memory > 0 && req.memory > alloc.memory - used.memory {
        reasons.push("Insufficient memory".to_string());
    }
    if req.ephemeral_storage > 0 && req.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage {
        reasons.push("Insufficient ephemeral-storage".to_string());
    }
    for (name, amount) in &req.scalar {
        let free = alloc.scalar.get(name).copied().unwrap_or(0) - used.scalar.get(name).copied().unwrap_or(0);
        if *amount > 0 && *amount > free {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    (!reasons.is_empty()).then_some(reasons)
}

fn cpu_mem_after(pod: &PodInfo, node: &NodeInfo) -> [(i64, i64); 2] {
    [
        (node.non_zero_requested.milli_cpu + pod.non_zero.milli_cpu, node.allocatable.milli_cpu),
        (node.non_zero_requested.memory + pod.non_zero.memory, node.allocatable.memory),
    ]
}

/// LeastAllocated: the mean over cpu and memory of the free share after placing the pod, 0–100.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let scores = cpu_mem_after(pod, node).map(|(requested, capacity)| {
        if capacity == 0 || requested > capacity { 0 } else { (capacity - requested) * MAX_NODE_SCORE / capacity }
    });
    scores.iter().sum::<i64>() / scores.len() as i64
}

/// BalancedAllocation: 100 × (1 − the standard deviation of the cpu and memory fractions).
pub fn balanced_allocation(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let fractions = cpu_mem_after(pod, node)
        .map(|(requested, capacity)| if capacity == 0 { 1.0 } else { (requested as f64 / capacity as f64).min(1.0) });
    let std = (fractions[0] - fractions[1]).abs() / 2.0;
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node_with_pods, pod};
    use serde_json::json;

    fn requesting(cpu: &str, mem: &str) -> PodInfo {
        pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}))
    }

    #[test]
    fn insufficient_resources_are_all_named_after_too_many_pods() {
        let n = node_with_pods(json!({"cpu": "2", "memory": "4Gi", "pods": "1"}), &[requesting("1", "1Gi")]);
        let reasons = filter(&requesting("1500m", "4Gi"), &n).unwrap();
        assert_eq!(reasons, ["Too many pods", "Insufficient cpu", "Insufficient memory"]);
        let n = node_with_pods(json!({"cpu": "2", "memory": "4Gi", "pods": "10"}), &[requesting("1", "1Gi")]);
        assert!(filter(&requesting("1", "3Gi"), &n).is_none(), "exactly full fits");
    }

    #[test]
    fn extended_resources_missing_on_the_node_are_insufficient() {
        let gpu = pod(json!({"containers": [{"name": "c", "resources": {"limits": {"example.com/gpu": "1"}}}]}));
        let plain = node_with_pods(json!({"cpu": "2", "pods": "10"}), &[]);
        assert_eq!(filter(&gpu, &plain).unwrap(), ["Insufficient example.com/gpu"]);
        let with = node_with_pods(json!({"cpu": "2", "pods": "10", "example.com/gpu": "2"}), &[]);
        assert!(filter(&gpu, &with).is_none());
    }

    #[test]
    fn least_allocated_prefers_emptier_nodes_and_balanced_prefers_even_use() {
        let p = requesting("1", "1Gi");
        let empty = node_with_pods(json!({"cpu": "4", "memory": "4Gi", "pods": "10"}), &[]);
        let busy = node_with_pods(json!({"cpu": "4", "memory": "4Gi", "pods": "10"}), &[requesting("2", "2Gi")]);
        assert_eq!(least_allocated(&p, &empty), 75);
        assert_eq!(least_allocated(&p, &busy), 25);
        assert_eq!(balanced_allocation(&p, &empty), 100);
        let skewed = node_with_pods(json!({"cpu": "4", "memory": "4Gi", "pods": "10"}), &[requesting("2", "0")]);
        // cpu 3/4 and memory 1/4 (+ nothing defaulted, the pod named memory 0): deviation 0.25.
        assert_eq!(balanced_allocation(&p, &skewed), 75);
    }
}
