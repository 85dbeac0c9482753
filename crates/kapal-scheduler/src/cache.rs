//! The scheduler's view of the cluster: one [`NodeInfo`] per node with the pods on it, including
//! pods the scheduler has *assumed* (placed, binding in flight) so that the next cycle already
//! counts them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Taint};

use crate::podinfo::{HostPort, PodInfo};
use crate::resources::{Resources, node_allocatable};

/// A node and what is placed on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// The node object as last seen.
    pub node: Arc<Node>,
    /// The node's labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Taints from `spec.taints`.
    pub taints: Vec<Taint>,
    /// `spec.unschedulable`, kept here because the filter reads it for every node of every cycle
    /// and the node object itself is a cache miss away.
    pub unschedulable: bool,
    /// `status.allocatable` (or capacity).
    pub allocatable: Resources,
    /// Sum of the pods' requests.
    pub requested: Resources,
    /// Sum of the pods' requests with defaults for missing cpu/memory (scoring).
    pub non_zero_requested: Resources,
    /// Pods on the node, by key.
    pub pods: HashMap<String, Arc<PodInfo>>,
    /// Host ports in use.
    pub used_ports: Vec<HostPort>,
    /// Pods on the node with any (anti-)affinity term.
    pub pods_with_affinity: usize,
    /// Pods on the node with a required anti-affinity term.
    pub pods_with_required_anti_affinity: usize,
    /// Image name → size in bytes, from `status.images`.
    pub images: HashMap<String, i64>,
}

impl NodeInfo {
    /// A node with no pods.
    pub fn for_node(node: Arc<Node>) -> NodeInfo {
        let mut info = NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            node: node.clone(),
            labels: Default::default(),
            taints: Vec::new(),
            unschedulable: false,
            allocatable: Resources::default(),
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            pods: HashMap::new(),
            used_ports: Vec::new(),
            pods_with_affinity: 0,
            pods_with_required_anti_affinity: 0,
            images: HashMap::new(),
        };
        info.set_node(node);
        info
    }

    fn set_node(&mut self, node: Arc<Node>) {
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        self.taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        self.unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
        self.allocatable = node_allocatable(&node);
        self.images = node
            .status
            .as_ref()
            .and_then(|s| s.images.as_ref())
            .into_iter()
            .flatten()
            .flat_map(|img| {
                let size = img.size_bytes.unwrap_or(0);
                img.names.iter().flatten().map(move |n| (normalized_image(n), size))
            })
            .collect();
        self.node = node;
    }

    /// Whether `spec.unschedulable` is set.
    pub fn unschedulable(&self) -> bool {
        self.unschedulable
    }

    /// Accounts a pod on the node.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        if let Some(old) = self.pods.remove(&pod.key) {
            self.account(&old, false);
        }
        self.account(&pod, true);
        self.pods.insert(pod.key.clone(), pod);
    }

    /// Removes a pod from the node; returns whether it was there.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        match self.pods.remove(key) {
            Some(old) => {
                self.account(&old, false);
                true
            }
            None => false,
        }
    }

    fn account(&mut self, pod: &PodInfo, add: bool) {
        if add {
            self.requested.add(&pod.requests);
            self.non_zero_requested.add(&pod.non_zero);
            self.used_ports.extend(pod.host_ports.iter().cloned());
        } else {
            self.requested.sub(&pod.requests);
            self.non_zero_requested.sub(&pod.non_zero);
            for p in &pod.host_ports {
                if let Some(i) = self.used_ports.iter().position(|u| u == p) {
                    self.used_ports.swap_remove(i);
                }
            }
        }
        let delta = |n: &mut usize, cond: bool| {
            if cond {
                *n = if add { *n + 1 } else { n.saturating_sub(1) };
            }
        };
        delta(&mut self.pods_with_affinity, pod.has_affinity());
        delta(&mut self.pods_with_required_anti_affinity, !pod.required_anti_affinity.is_empty());
    }
}

/// Image names as the kubelet reports them and as pods write them: `docker.io/library/` and a
/// missing `:latest` tag are implied.
pub fn normalized_image(name: &str) -> String {
    let mut n = name.to_string();
    let last = n.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && !last.contains('@') {
        n.push_str(":latest");
    }
    let first = n.split('/').next().unwrap_or("");
    let has_registry = n.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if !has_registry {
        n = if n.contains('/') { format!("docker.io/{n}") } else { format!("docker.io/library/{n}") };
    }
    n
}

/// All nodes and the pods placed on them.
#[derive(Debug, Default)]
pub struct Cache {
    /// Nodes in a stable order, for the rotating search.
    nodes: Vec<NodeInfo>,
    /// Node name → position in `nodes`.
    index: HashMap<String, usize>,
    /// Pod key → node name, for every pod accounted (bound or assumed).
    pod_nodes: HashMap<String, String>,
    /// Pods placed by this scheduler whose binding the API has not confirmed yet.
    assumed: HashSet<String>,
    /// Pods on nodes not (yet) known, kept so they count once the node appears.
    orphans: HashMap<String, Arc<PodInfo>>,
    /// Accounted pods with any (anti-)affinity term.
    affinity_pods: usize,
    /// Accounted pods with a required anti-affinity term.
    required_anti_affinity_pods: usize,
    /// Namespace labels, for affinity terms with a `namespaceSelector`.
    namespaces: crate::podinfo::NamespaceLabels,
}

impl Cache {
    /// Adds or updates a node; returns true when something scheduling-relevant changed.
    pub fn apply_node(&mut self, node: Arc<Node>) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        match self.index.get(&name).and_then(|i| self.nodes.get_mut(*i)) {
            Some(info) => {
                let relevant = |n: &Node| {
                    (
                        n.metadata.labels.clone(),
                        n.spec.as_ref().map(|s| (s.taints.clone(), s.unschedulable)),
                        n.status.as_ref().map(|s| (s.allocatable.clone(), s.capacity.clone(), s.images.clone())),
                    )
                };
                let changed = relevant(&info.node) != relevant(&node);
                info.set_node(node);
                changed
            }
            None => {
                let mut info = NodeInfo::for_node(node);
                let adopted: Vec<String> =
                    self.orphans.iter().filter(|(_, p)| p.node_name() == Some(&name)).map(|(k, _)| k.clone()).collect();
                for key in adopted {
                    if let Some(p) = self.orphans.remove(&key) {
                        info.add_pod(p);
                    }
                }
                self.index.insert(name, self.nodes.len());
                self.nodes.push(info);
                true
            }
        }
    }

    /// Removes a node. Its pods stay accounted as orphans until they are deleted.
    pub fn delete_node(&mut self, name: &str) {
        if let Some(i) = self.index.remove(name) {
            let info = self.nodes.swap_remove(i);
            if let Some(moved) = self.nodes.get(i) {
                self.index.insert(moved.name.clone(), i);
            }
            for (key, pod) in info.pods {
                self.orphans.insert(key, pod);
            }
        }
    }

    /// Accounts a bound pod (confirming it if it was assumed).
    pub fn apply_pod(&mut self, pod: Arc<PodInfo>) {
        let Some(node) = pod.node_name().map(str::to_string) else { return };
        self.assumed.remove(&pod.key);
        if let Some(old) = self.pod_nodes.get(&pod.key).cloned() {
            self.remove_from(&old, &pod.key);
        }
        self.track(&pod, true);
        self.pod_nodes.insert(pod.key.clone(), node.clone());
        match self.index.get(&node).and_then(|i| self.nodes.get_mut(*i)) {
            Some(info) => info.add_pod(pod),
            None => {
                self.orphans.insert(pod.key.clone(), pod);
            }
        }
    }

    /// Places a pod on a node before the API has confirmed the binding.
    pub fn assume(&mut self, pod: Arc<PodInfo>) {
        let key = pod.key.clone();
        self.apply_pod(pod);
        self.assumed.insert(key);
    }

    /// Whether a pod is assumed and not yet confirmed.
    pub fn is_assumed(&self, key: &str) -> bool {
        self.assumed.contains(key)
    }

    /// Drops an assumption whose binding failed; returns whether it was assumed.
    pub fn forget(&mut self, key: &str) -> bool {
        if self.assumed.remove(key) {
            self.remove_pod(key);
            return true;
        }
        false
    }

    /// Removes a pod (deleted or finished); returns whether it was accounted.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        self.assumed.remove(key);
        match self.pod_nodes.remove(key) {
            Some(node) => {
                self.remove_from(&node, key);
                true
            }
            None => false,
        }
    }

    fn remove_from(&mut self, node: &str, key: &str) {
        let info = self.index.get(node).and_then(|i| self.nodes.get_mut(*i));
        let on_node = info.and_then(|info| info.pods.get(key).cloned().map(|p| (info, p)));
        let removed = match on_node {
            Some((info, p)) => {
                info.remove_pod(key);
                Some(p)
            }
            None => None,
        };
        if let Some(p) = removed.or_else(|| self.orphans.remove(key)) {
            self.track(&p, false);
        }
    }

    fn track(&mut self, pod: &PodInfo, add: bool) {
        let step = |n: &mut usize, cond: bool| {
            if cond {
                *n = if add { *n + 1 } else { n.saturating_sub(1) };
            }
        };
        step(&mut self.affinity_pods, pod.has_affinity());
        step(&mut self.required_anti_affinity_pods, !pod.required_anti_affinity.is_empty());
    }

    /// Whether any accounted pod has an (anti-)affinity term.
    pub fn any_affinity_pods(&self) -> bool {
        self.affinity_pods > 0
    }

    /// Whether any accounted pod has a required anti-affinity term.
    pub fn any_required_anti_affinity_pods(&self) -> bool {
        self.required_anti_affinity_pods > 0
    }

    /// The labels of every namespace.
    pub fn namespace_labels(&self) -> &crate::podinfo::NamespaceLabels {
        &self.namespaces
    }

    /// Sets a namespace's labels (`None`: the namespace is gone); returns whether they changed.
    pub fn set_namespace(&mut self, name: &str, labels: Option<std::collections::BTreeMap<String, String>>) -> bool {
        match labels {
            Some(labels) => self.namespaces.insert(name.to_string(), labels.clone()).is_none_or(|old| old != labels),
            None => self.namespaces.remove(name).is_some(),
        }
    }

    /// Replaces every namespace's labels with a fresh listing; returns whether anything changed.
    pub fn replace_namespaces(&mut self, namespaces: crate::podinfo::NamespaceLabels) -> bool {
        let changed = self.namespaces != namespaces;
        self.namespaces = namespaces;
        changed
    }

    /// The node a pod is accounted on.
    pub fn node_of(&self, key: &str) -> Option<&str> {
        self.pod_nodes.get(key).map(String::as_str)
    }

    /// Keys of every accounted pod (bound or assumed).
    pub fn pod_keys(&self) -> Vec<String> {
        self.pod_nodes.keys().cloned().collect()
    }

    /// Names of every node.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).and_then(|i| self.nodes.get(*i))
    }

    /// The node at a position of the search order.
    pub fn node_at(&self, i: usize) -> Option<&NodeInfo> {
        self.nodes.get(i)
    }

    /// Nodes in the stable search order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter()
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": "4", "pods": "110"}}}),
            )
            .unwrap(),
        )
    }

    fn pod(name: &str, node: Option<&str>, cpu: &str) -> Arc<PodInfo> {
        let p = json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"nodeName": node,
            "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}},
                "ports": [{"containerPort": 80, "hostPort": 8080}]}]}});
        Arc::new(PodInfo::new(Arc::new(serde_json::from_value(p).unwrap())))
    }

    #[test]
    fn assumed_pods_count_until_forgotten_and_confirmation_keeps_them() {
        let mut c = Cache::default();
        c.apply_node(node("n1"));
        c.assume(pod("a", Some("n1"), "1"));
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 1000);
        assert_eq!(c.node("n1").unwrap().used_ports.len(), 1);
        assert!(c.forget("default/a"));
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 0);
        assert!(c.node("n1").unwrap().used_ports.is_empty());

        c.assume(pod("b", Some("n1"), "2"));
        c.apply_pod(pod("b", Some("n1"), "2"));
        assert!(!c.is_assumed("default/b"));
        assert!(!c.forget("default/b"), "a confirmed pod is not forgotten");
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 2000);
    }

    #[test]
    fn pods_on_unknown_nodes_count_once_the_node_appears() {
        let mut c = Cache::default();
        c.apply_pod(pod("a", Some("n2"), "1"));
        c.apply_node(node("n2"));
        assert_eq!(c.node("n2").unwrap().pods.len(), 1);
        assert!(c.remove_pod("default/a"));
        assert_eq!(c.node("n2").unwrap().requested.milli_cpu, 0);
        assert!(!c.remove_pod("default/a"));
    }

    #[test]
    fn deleting_a_node_keeps_the_others_addressable() {
        let mut c = Cache::default();
        for n in ["a", "b", "c"] {
            c.apply_node(node(n));
        }
        c.apply_pod(pod("p", Some("a"), "1"));
        c.delete_node("a");
        assert_eq!(c.len(), 2);
        assert_eq!(c.node("c").unwrap().name, "c");
        assert_eq!(c.node("b").unwrap().name, "b");
        assert!(c.node("a").is_none());
        c.apply_node(node("a"));
        assert_eq!(c.node("a").unwrap().requested.milli_cpu, 1000, "its pods come back with it");
    }

    #[test]
    fn node_heartbeats_are_not_relevant_changes() {
        let mut c = Cache::default();
        assert!(c.apply_node(node("n1")));
        assert!(!c.apply_node(node("n1")));
        let mut tainted = (*node("n1")).clone();
        tainted.spec = Some(serde_json::from_value(json!({"taints": [{"key": "k", "effect": "NoSchedule"}]})).unwrap());
        assert!(c.apply_node(Arc::new(tainted)));
    }

    #[test]
    fn cordoning_and_uncordoning_a_known_node_is_seen() {
        let mut c = Cache::default();
        c.apply_node(node("n1"));
        assert!(!c.node("n1").unwrap().unschedulable());
        let mut cordoned = (*node("n1")).clone();
        cordoned.spec = Some(serde_json::from_value(json!({"unschedulable": true})).unwrap());
        assert!(c.apply_node(Arc::new(cordoned)));
        assert!(c.node("n1").unwrap().unschedulable());
        assert!(c.apply_node(node("n1")));
        assert!(!c.node("n1").unwrap().unschedulable());
    }

    #[test]
    fn a_namespace_relist_drops_namespaces_whose_deletion_was_missed() {
        let mut c = Cache::default();
        let labels = |team: &str| std::collections::BTreeMap::from([("team".to_string(), team.to_string())]);
        assert!(c.set_namespace("team-a", Some(labels("a"))));
        assert!(c.set_namespace("gone", Some(labels("x"))));
        assert!(!c.set_namespace("team-a", Some(labels("a"))), "the same labels are no change");
        let listed = crate::podinfo::NamespaceLabels::from([("team-a".to_string(), labels("a"))]);
        assert!(c.replace_namespaces(listed.clone()), "a namespace went away");
        assert_eq!(c.namespace_labels(), &listed);
        assert!(!c.replace_namespaces(listed), "the same listing is no change");
    }

    #[test]
    fn image_names_are_normalized() {
        assert_eq!(normalized_image("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(normalized_image("quay.io/a/b:1"), "quay.io/a/b:1");
        assert_eq!(normalized_image("me/app"), "docker.io/me/app:latest");
    }
}
