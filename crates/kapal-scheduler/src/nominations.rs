//! Nominated pods (`status.nominatedNodeName`): a preemptor waits for its victims to leave, and
//! meanwhile pods of no higher priority must not take the room freed for it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::podinfo::PodInfo;

/// Which pod is nominated to which node.
#[derive(Debug, Default)]
pub struct Nominations {
    node_of: HashMap<String, String>,
    by_node: HashMap<String, Vec<Arc<PodInfo>>>,
}

impl Nominations {
    /// Records (or, with `None`, clears) the nomination of a pod.
    pub fn set(&mut self, pod: &Arc<PodInfo>, node: Option<&str>) {
        self.remove(&pod.key);
        if let Some(node) = node.filter(|n| !n.is_empty()) {
            self.node_of.insert(pod.key.clone(), node.to_string());
            self.by_node.entry(node.to_string()).or_default().push(pod.clone());
        }
    }

    /// Forgets a pod's nomination (bound or deleted).
    pub fn remove(&mut self, key: &str) {
        if let Some(node) = self.node_of.remove(key)
            && let Some(pods) = self.by_node.get_mut(&node)
        {
            pods.retain(|p| p.key != key);
            if pods.is_empty() {
                self.by_node.remove(&node);
            }
        }
    }

    /// The node a pod is nominated to.
    pub fn node_of(&self, key: &str) -> Option<&str> {
        self.node_of.get(key).map(String::as_str)
    }

    /// Pods other than `pod` nominated to `node` with at least its priority.
    pub fn competing<'a>(&'a self, pod: &'a PodInfo, node: &str) -> impl Iterator<Item = &'a Arc<PodInfo>> {
        self.by_node.get(node).into_iter().flatten().filter(move |p| p.key != pod.key && p.priority >= pod.priority)
    }

    /// Whether nobody is nominated anywhere.
    pub fn is_empty(&self) -> bool {
        self.node_of.is_empty()
    }
}
