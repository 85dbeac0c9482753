//! The default profile's filter and score plugins, one module each. Plugins are plain functions
//! over a [`PodInfo`](crate::podinfo::PodInfo) and a [`NodeInfo`](crate::cache::NodeInfo); the
//! [`framework`](crate::framework) runs them in upstream's order.

pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_ports;
pub mod node_resources;
pub mod taint_toleration;
pub mod topology_spread;

/// The highest normalized score a plugin gives.
pub const MAX_NODE_SCORE: i64 = 100;

/// Upstream `DefaultNormalizeScore`: scales scores to 0–100 by the maximum; `reverse` turns
/// "higher raw is worse" into "higher is better". All zero stays zero (or 100 when reversed).
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

/// Min-max normalization to 0–100 (InterPodAffinity); equal scores become 0.
pub fn min_max_normalize(scores: &mut [i64]) {
    let (min, max) = (scores.iter().copied().min().unwrap_or(0), scores.iter().copied().max().unwrap_or(0));
    let diff = max - min;
    for s in scores.iter_mut() {
        *s = if diff > 0 { MAX_NODE_SCORE * (*s - min) / diff } else { 0 };
    }
}

/// PodTopologySpread normalization: `100 × (max + min − s) / max`; nodes without the labels get 0.
pub fn spread_normalize(scores: &mut [Option<i64>]) -> Vec<i64> {
    let present = scores.iter().flatten();
    let (min, max) = (present.clone().copied().min().unwrap_or(0), present.copied().max().unwrap_or(0));
    scores
        .iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max == 0 => MAX_NODE_SCORE,
            Some(s) => MAX_NODE_SCORE * (max + min - s) / max,
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builders for plugin tests.

    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::{Value, json};

    use crate::cache::{Cache, NodeInfo};
    use crate::podinfo::PodInfo;

    /// A pod `default/p` with the given spec fields (and one container unless given).
    pub fn pod(spec: Value) -> PodInfo {
        let mut s = json!({"containers": [{"name": "c"}]});
        if let (Some(m), Some(e)) = (s.as_object_mut(), spec.as_object()) {
            m.extend(e.clone());
        }
        PodInfo::new(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default"}, "spec": s})).unwrap(),
        ))
    }

    /// A pod object with labels, an affinity and optional spread constraints.
    pub fn pod_obj(name: &str, labels: Value, affinity: Value, spread: Option<Value>) -> Arc<Pod> {
        let mut spec = json!({"containers": [{"name": "c"}], "affinity": affinity});
        if let Some(s) = spread {
            spec["topologySpreadConstraints"] = s;
        }
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name, "namespace": "default", "labels": labels}, "spec": spec}),
            )
            .unwrap(),
        )
    }

    /// A pod with labels and an affinity.
    pub fn labeled_pod(name: &str, labels: Value, affinity: Value) -> PodInfo {
        PodInfo::new(pod_obj(name, labels, affinity, None))
    }

    /// A pod with labels and topology spread constraints.
    pub fn spread_pod(name: &str, labels: Value, spread: Value) -> PodInfo {
        PodInfo::new(pod_obj(name, labels, json!({}), Some(spread)))
    }

    fn node_obj(name: &str, labels: Value, spec: Value, allocatable: Value) -> Arc<Node> {
        let mut labels = if labels.is_object() { labels } else { json!({}) };
        labels["kubernetes.io/hostname"] = json!(name);
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": spec,
                "status": {"allocatable": allocatable}}))
            .unwrap(),
        )
    }

    /// A node with labels (under `"labels"`) and a spec, 4 cpu, 8 GiB and 110 pods.
    pub fn node(name: &str, meta: Value, spec: Value) -> NodeInfo {
        let n = node_obj(name, meta["labels"].clone(), spec, json!({"cpu": "4", "memory": "8Gi", "pods": "110"}));
        NodeInfo::for_node(n)
    }

    /// Node `n` with the given allocatable and pods.
    pub fn node_with_pods(allocatable: Value, pods: &[PodInfo]) -> NodeInfo {
        let mut n = NodeInfo::for_node(node_obj("n", json!({}), json!({}), allocatable));
        for p in pods {
            n.add_pod(Arc::new(p.clone()));
        }
        n
    }

    /// A cache with nodes (name, labels) and pods placed on them.
    pub fn cache_of(nodes: &[(&str, Value)], pods: &[(&str, PodInfo)]) -> Cache {
        let mut c = Cache::default();
        for (name, labels) in nodes {
            c.apply_node(node_obj(
                name,
                labels.clone(),
                json!({}),
                json!({"cpu": "4", "memory": "8Gi", "pods": "110"}),
            ));
        }
        for (node, p) in pods {
            let mut pod = (*p.pod).clone();
            pod.spec.get_or_insert_default().node_name = Some(node.to_string());
            c.apply_pod(Arc::new(PodInfo::new(Arc::new(pod))));
        }
        c
    }

    impl NodeInfo {
        /// The same node with `status` fields replaced (for image lists).
        pub fn with_status(&self, status: Value) -> NodeInfo {
            let mut n = (*self.node).clone();
            let mut s = serde_json::to_value(&n.status).unwrap();
            if let (Some(m), Some(e)) = (s.as_object_mut(), status.as_object()) {
                m.extend(e.clone());
            }
            n.status = serde_json::from_value(s).unwrap();
            NodeInfo::for_node(Arc::new(n))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizations_follow_upstream() {
        let mut s = [0, 5, 10];
        default_normalize(&mut s, false);
        assert_eq!(s, [0, 50, 100]);
        let mut s = [0, 1, 2];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 50, 0]);
        let mut s = [0, 0];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 100]);
        let mut s = [-10, 0, 10];
        min_max_normalize(&mut s);
        assert_eq!(s, [0, 50, 100]);
        assert_eq!(spread_normalize(&mut [Some(2), Some(6), None]), [100, 33, 0]);
    }
}
