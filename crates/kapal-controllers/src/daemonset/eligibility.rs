//! Which nodes a DaemonSet's pod belongs on, and how its pod is pinned there (upstream
//! `NodeShouldRunDaemonPod`, `AddOrUpdateDaemonPodTolerations`,
//! `ReplaceDaemonSetPodNodeNameNodeAffinity`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Taint,
    Toleration,
};
use kube::ResourceExt;

use crate::tainteviction::tolerates;

/// The field a DaemonSet pod's node affinity pins it by.
const NODE_NAME_FIELD: &str = "metadata.name";

/// Whether a daemon pod should be started on a node, and whether one already there may stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    /// A pod should run there (counted in `desiredNumberScheduled`).
    pub should_run: bool,
    /// A pod already there may keep running (only an untolerated NoExecute taint or a changed
    /// selector/affinity evicts it).
    pub may_stay: bool,
}

/// Where the DaemonSet's pod spec fits `node`.
pub fn fit(spec: &PodSpec, node: &Node) -> Fit {
    let labels = node.labels();
    let selector_ok = spec.node_selector.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    let affinity_ok = required.is_none_or(|sel| sel.node_selector_terms.iter().any(|t| term_matches(t, node)));
    if !selector_ok || !affinity_ok {
        return Fit { should_run: false, may_stay: false };
    }
    let tolerations = with_daemon_tolerations(spec);
    let untolerated = |effects: &[&str]| {
        node.spec.as_ref().and_then(|s| s.taints.as_ref()).into_iter().flatten().any(|taint: &Taint| {
            effects.contains(&taint.effect.as_str()) && !tolerations.iter().any(|t| tolerates(t, taint))
        })
    };
    Fit { should_run: !untolerated(&["NoSchedule", "NoExecute"]), may_stay: !untolerated(&["NoExecute"]) }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.labels();
    let name = node.name_any();
    expressions.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| r.key == NODE_NAME_FIELD && requirement_matches(r, Some(&name)))
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (value.and_then(number), values.first().and_then(|s| number(s))) else {
                return false;
            };
            if r.operator == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

/// The pod spec's tolerations plus those every daemon pod gets (reference §5.2): never evicted
/// for not-ready/unreachable, scheduled despite pressure and cordoning.
pub fn with_daemon_tolerations(spec: &PodSpec) -> Vec<Toleration> {
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    let mut automatic = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        automatic.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    for (key, effect) in automatic {
        let toleration = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            value: None,
            toleration_seconds: None,
        };
        tolerations.retain(|t| !(t.key.as_deref() == Some(key) && t.effect.as_deref() == Some(effect)));
        tolerations.push(toleration);
    }
    tolerations
}

/// Pins `spec` to `node` with a required node affinity on `metadata.name`, keeping the user's
/// label expressions in every term.
pub fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let requirement = NodeSelectorRequirement {
        key: NODE_NAME_FIELD.into(),
        operator: "In".into(),
        values: Some(vec![node.to_string()]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    let required = node_affinity
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector { node_selector_terms: Vec::new() });
    if required.node_selector_terms.is_empty() {
        required.node_selector_terms.push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        term.match_fields = Some(vec![requirement.clone()]);
    }
}

/// The node a daemon pod is bound or pinned to (upstream `GetTargetNodeName`).
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(name) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(name.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().flat_map(|t| t.match_fields.iter().flatten()).find_map(|r| {
        let values = r.values.as_deref().unwrap_or_default();
        (r.key == NODE_NAME_FIELD && r.operator == "In" && values.len() == 1).then(|| values[0].clone())
    })
}

/// The pods grouped by the node they target; pods targeting no node are left out.
pub fn by_node(pods: &[Pod]) -> BTreeMap<String, Vec<&Pod>> {
    let mut map: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in pods {
        if let Some(node) = target_node(pod) {
            map.entry(node).or_default().push(pod);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn selectors_affinity_and_taints_decide_eligibility() {
        let n = node(json!({"metadata": {"name": "n1", "labels": {"disk": "ssd", "cores": "8"}},
            "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}));
        let plain = spec(json!({"containers": []}));
        assert_eq!(fit(&plain, &n), Fit { should_run: false, may_stay: true });
        let tolerant = spec(json!({"containers": [], "tolerations": [{"key": "dedicated", "operator": "Exists"}]}));
        assert_eq!(fit(&tolerant, &n), Fit { should_run: true, may_stay: true });
        let mut other = tolerant.clone();
        other.node_selector = Some([("disk".to_string(), "hdd".to_string())].into());
        assert_eq!(fit(&other, &n), Fit { should_run: false, may_stay: false });
        let mut gt = tolerant.clone();
        gt.affinity = serde_json::from_value(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]}]}}}))
        .unwrap();
        assert!(fit(&gt, &n).should_run);
        let evicting = node(json!({"metadata": {"name": "n2"},
            "spec": {"taints": [{"key": "gone", "effect": "NoExecute"}]}}));
        assert_eq!(fit(&plain, &evicting), Fit { should_run: false, may_stay: false });
        let cordoned = node(json!({"metadata": {"name": "n3"}, "spec": {"taints": [
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]}}));
        assert_eq!(fit(&plain, &cordoned), Fit { should_run: true, may_stay: true });
    }

    #[test]
    fn pinning_keeps_user_expressions_and_is_found_again() {
        let mut s = spec(
            json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "Exists"}]}]}}}}),
        );
        pin_to_node(&mut s, "n1");
        let pod = Pod { spec: Some(s.clone()), ..Pod::default() };
        assert_eq!(target_node(&pod).as_deref(), Some("n1"));
        let term = &s
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms[0];
        assert_eq!(term.match_expressions.as_ref().unwrap()[0].key, "disk");
        let tolerations = with_daemon_tolerations(&spec(json!({"containers": [], "hostNetwork": true})));
        assert_eq!(tolerations.len(), 7);
        assert!(tolerations.iter().all(|t| t.operator.as_deref() == Some("Exists") && t.toleration_seconds.is_none()));
    }
}
