//! A pod as the scheduler sees it: parsed once (requests, ports, affinity terms with compiled
//! selectors), shared by the queue, the cache and the plugins.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, TopologySpreadConstraint};
use kapal_api::selector::LabelSelector;

use crate::resources::{Resources, pod_non_zero_requests, pod_requests};

/// `namespace/name`.
pub fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or("default"), pod.metadata.name.as_deref().unwrap_or(""))
}

/// One host port a pod asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The host IP; `0.0.0.0` means every address.
    pub ip: String,
    /// The port number.
    pub port: i32,
}

impl HostPort {
    /// Whether two host ports collide (same protocol and port, overlapping addresses).
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// A pod (anti-)affinity term with its selector compiled.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    /// Namespaces the term looks in; empty with `all_namespaces` false means none besides these.
    pub namespaces: BTreeSet<String>,
    /// A `namespaceSelector: {}` selects every namespace.
    pub all_namespaces: bool,
    /// A non-empty `namespaceSelector`: namespaces whose labels it matches count too.
    pub namespace_selector: Option<LabelSelector>,
    /// Which pods the term counts.
    pub selector: LabelSelector,
    /// The node label whose value forms a topology domain.
    pub topology_key: String,
}

impl AffinityTerm {
    fn parse(term: &PodAffinityTerm, own_namespace: &str, own_labels: &BTreeMap<String, String>) -> AffinityTerm {
        let mut selector = term
            .label_selector
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| LabelSelector::from_json(&v).ok())
            .unwrap_or_else(LabelSelector::nothing);
        // matchLabelKeys adds `key in (own value)` requirements (upstream merges them at admission).
        for key in term.match_label_keys.iter().flatten() {
            if let Some(value) = own_labels.get(key) {
                selector = add_requirement(selector, key, value);
            }
        }
        let mut namespaces: BTreeSet<String> = term.namespaces.iter().flatten().cloned().collect();
        let all_namespaces = term.namespace_selector.as_ref().is_some_and(|s| {
            s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
        });
        if namespaces.is_empty() && term.namespace_selector.is_none() {
            namespaces.insert(own_namespace.to_string());
        }
        // An unusable selector selects no namespace, as upstream's conversion error leaves it.
        let namespace_selector = term
            .namespace_selector
            .as_ref()
            .filter(|_| !all_namespaces)
            .map(|s| serde_json::to_value(s).ok().and_then(|v| LabelSelector::from_json(&v).ok()))
            .map(|s| s.unwrap_or_else(LabelSelector::nothing));
        AffinityTerm {
            namespaces,
            all_namespaces,
            namespace_selector,
            selector,
            topology_key: term.topology_key.clone(),
        }
    }

    /// Whether `pod` is one the term counts; `namespaces` holds the labels of each namespace,
    /// for a `namespaceSelector`.
    pub fn matches(&self, pod: &PodInfo, namespaces: &NamespaceLabels) -> bool {
        let in_scope = self.all_namespaces
            || self.namespaces.contains(&pod.namespace)
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| namespaces.get(&pod.namespace).is_some_and(|labels| s.matches_btree(labels)));
        in_scope && self.selector.matches_btree(&pod.labels)
    }
}

fn add_requirement(selector: LabelSelector, key: &str, value: &str) -> LabelSelector {
    if selector.is_nothing() {
        return selector;
    }
    let mut reqs: Vec<_> = selector.requirements().to_vec();
    if let Ok(r) = kapal_api::selector::Requirement::new(key, kapal_api::selector::LabelOp::In, vec![value.to_string()])
    {
        reqs.push(r);
    }
    let text = reqs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",");
    LabelSelector::parse(&text).unwrap_or(selector)
}

/// The labels of each namespace, by name.
pub type NamespaceLabels = std::collections::HashMap<String, BTreeMap<String, String>>;

/// A preferred (anti-)affinity term and its weight.
#[derive(Debug, Clone)]
pub struct WeightedTerm {
    /// 1–100.
    pub weight: i64,
    /// The term.
    pub term: AffinityTerm,
}

/// A topology spread constraint with its selector compiled.
#[derive(Debug, Clone)]
pub struct SpreadConstraint {
    /// The largest allowed difference between domains.
    pub max_skew: i64,
    /// The node label forming domains.
    pub topology_key: String,
    /// True for `DoNotSchedule` (a filter), false for `ScheduleAnyway` (a score).
    pub hard: bool,
    /// Which pods count (in the pod's namespace).
    pub selector: LabelSelector,
    /// `minDomains` (only with `DoNotSchedule`).
    pub min_domains: Option<i64>,
    /// `nodeAffinityPolicy: Honor` (the default): only nodes matching the pod's node affinity count.
    pub honor_node_affinity: bool,
    /// `nodeTaintsPolicy: Honor`: only nodes whose taints the pod tolerates count.
    pub honor_node_taints: bool,
}

impl SpreadConstraint {
    fn parse(c: &TopologySpreadConstraint, own_labels: &BTreeMap<String, String>) -> SpreadConstraint {
        let mut selector = c
            .label_selector
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| LabelSelector::from_json(&v).ok())
            .unwrap_or_else(LabelSelector::nothing);
        for key in c.match_label_keys.iter().flatten() {
            if let Some(value) = own_labels.get(key) {
                selector = add_requirement(selector, key, value);
            }
        }
        SpreadConstraint {
            max_skew: i64::from(c.max_skew),
            topology_key: c.topology_key.clone(),
            hard: c.when_unsatisfiable == "DoNotSchedule",
            selector,
            min_domains: c.min_domains.map(i64::from),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }
}

/// A pod parsed for scheduling.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// `namespace/name`.
    pub key: String,
    /// The namespace.
    pub namespace: String,
    /// The object as last seen.
    pub pod: Arc<Pod>,
    /// `spec.priority` (0 when unset).
    pub priority: i32,
    /// Effective requests (filtering).
    pub requests: Resources,
    /// Requests with defaults for missing cpu/memory (scoring).
    pub non_zero: Resources,
    /// Host ports the pod binds.
    pub host_ports: Vec<HostPort>,
    /// The pod's labels.
    pub labels: BTreeMap<String, String>,
    /// Required pod affinity terms.
    pub required_affinity: Vec<AffinityTerm>,
    /// Required pod anti-affinity terms.
    pub required_anti_affinity: Vec<AffinityTerm>,
    /// Preferred pod affinity terms.
    pub preferred_affinity: Vec<WeightedTerm>,
    /// Preferred pod anti-affinity terms.
    pub preferred_anti_affinity: Vec<WeightedTerm>,
    /// Topology spread constraints.
    pub spread: Vec<SpreadConstraint>,
}

impl PodInfo {
    /// Parses a pod.
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let key = pod_key(&pod);
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let host_ports = spec
            .into_iter()
            .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.is_some_and(|hp| hp > 0))
            .map(|p| HostPort {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                ip: p.host_ip.clone().filter(|ip| !ip.is_empty()).unwrap_or_else(|| "0.0.0.0".to_string()),
                port: p.host_port.unwrap_or(0),
            })
            .collect();
        let affinity = spec.and_then(|s| s.affinity.as_ref());
        let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
        let paa = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let parse = |t: &PodAffinityTerm| AffinityTerm::parse(t, &namespace, &labels);
        let required_affinity = pa
            .into_iter()
            .flat_map(|a| a.required_during_scheduling_ignored_during_execution.iter().flatten())
            .map(parse)
            .collect();
        let required_anti_affinity = paa
            .into_iter()
            .flat_map(|a| a.required_during_scheduling_ignored_during_execution.iter().flatten())
            .map(parse)
            .collect();
        let preferred_affinity = pa
            .into_iter()
            .flat_map(|a| a.preferred_during_scheduling_ignored_during_execution.iter().flatten())
            .map(|w| WeightedTerm { weight: i64::from(w.weight), term: parse(&w.pod_affinity_term) })
            .collect();
        let preferred_anti_affinity = paa
            .into_iter()
            .flat_map(|a| a.preferred_during_scheduling_ignored_during_execution.iter().flatten())
            .map(|w| WeightedTerm { weight: i64::from(w.weight), term: parse(&w.pod_affinity_term) })
            .collect();
        let spread = spec
            .into_iter()
            .flat_map(|s| s.topology_spread_constraints.iter().flatten())
            .map(|c| SpreadConstraint::parse(c, &labels))
            .collect();
        PodInfo {
            key,
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            requests: pod_requests(&pod),
            non_zero: pod_non_zero_requests(&pod),
            host_ports,
            required_affinity,
            required_anti_affinity,
            preferred_affinity,
            preferred_anti_affinity,
            spread,
            labels,
            namespace,
            pod,
        }
    }

    /// The node the pod is bound to, if any.
    pub fn node_name(&self) -> Option<&str> {
        self.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
    }

    /// Whether the pod has any (anti-)affinity term, required or preferred.
    pub fn has_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }
}
