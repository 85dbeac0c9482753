//! DefaultPreemption (PostFilter): for a pod that fits nowhere, find a node where evicting pods
//! of lower priority makes room, evicting as few and as unimportant pods as possible, and
//! breaking as few PodDisruptionBudgets as possible.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kapal_api::selector::LabelSelector;

use crate::cache::{Cache, NodeInfo};
use crate::message::Diagnosis;
use crate::plugins::{
    inter_pod_affinity, node_affinity, node_ports, node_resources, taint_toleration, topology_spread,
};
use crate::podinfo::PodInfo;

/// Upstream's reason for nodes where removing pods cannot help.
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Upstream's reason for nodes where removing lower-priority pods is not enough.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// A node and the pods to evict from it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The node.
    pub node: String,
    /// Pods to evict, most important first.
    pub victims: Vec<Arc<PodInfo>>,
    /// How many of the victims a PodDisruptionBudget does not allow to go.
    pub budget_violations: usize,
}

/// A PodDisruptionBudget as preemption reads it.
#[derive(Debug, Clone)]
pub struct Budget {
    namespace: String,
    selector: LabelSelector,
    /// `status.disruptionsAllowed`.
    allowed: i32,
    /// `status.disruptedPods`: already counted against the budget.
    disrupted: HashSet<String>,
}

impl Budget {
    /// Parses a PodDisruptionBudget; one with an unusable selector selects nothing.
    pub fn new(pdb: &PodDisruptionBudget) -> Budget {
        let selector = pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| LabelSelector::from_json(&v).ok())
            .unwrap_or_else(LabelSelector::nothing);
        let status = pdb.status.as_ref();
        Budget {
            namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
            selector,
            allowed: status.map_or(0, |s| s.disruptions_allowed),
            disrupted: status
                .and_then(|s| s.disrupted_pods.as_ref())
                .into_iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .collect(),
        }
    }

    fn covers(&self, pod: &PodInfo) -> bool {
        let name = pod.key.rsplit('/').next().unwrap_or_default();
        self.namespace == pod.namespace && !self.disrupted.contains(name) && self.selector.matches_btree(&pod.labels)
    }
}

/// Splits `pods` (most important first) into those whose eviction would break a budget and
/// those it would not, spending each budget's allowance in order (upstream
/// `filterPodsWithPDBViolation`).
fn split_by_budgets(pods: Vec<Arc<PodInfo>>, budgets: &[Budget]) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i32> = budgets.iter().map(|b| b.allowed).collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for pod in pods {
        let mut violates = false;
        for (i, budget) in budgets.iter().enumerate() {
            if budget.covers(&pod) {
                allowed[i] -= 1;
                violates |= allowed[i] < 0;
            }
        }
        if violates { violating.push(pod) } else { fine.push(pod) }
    }
    (violating, fine)
}

/// Whether a filter reason means no eviction can fix the node (upstream `UnschedulableAndUnresolvable`).
pub fn unresolvable(reason: &str) -> bool {
    reason == node_affinity::REASON
        || reason == node_ports::NAME_REASON
        || reason == taint_toleration::UNSCHEDULABLE_REASON
        || reason.starts_with("node(s) had untolerated taint")
        || reason == inter_pod_affinity::AFFINITY_REASON
        || reason == topology_spread::MISSING_LABEL_REASON
}

/// Why the pod may not preempt at all, if it may not.
pub fn ineligible(pod: &PodInfo, cache: &Cache, nominated_node: Option<&str>) -> Option<&'static str> {
    let policy = pod.pod.spec.as_ref().and_then(|s| s.preemption_policy.as_deref());
    if policy == Some("Never") {
        return Some("not eligible due to preemptionPolicy=Never.");
    }
    let node = cache.node(nominated_node?)?;
    let terminating_lower =
        node.pods.values().any(|p| p.pod.metadata.deletion_timestamp.is_some() && p.priority < pod.priority);
    terminating_lower.then_some("not eligible due to a terminating pod on the nominated node.")
}

fn fits(pod: &PodInfo, node: &NodeInfo) -> bool {
    node_resources::filter(pod, node).is_none() && node_ports::filter(pod, node).is_none()
}

/// The smallest set of lower-priority pods whose eviction lets `pod` fit on `node`, and how
/// many of them break a budget: pods a budget protects are reprieved first, then the rest, most
/// important first within each group (upstream `selectVictimsOnNode`).
fn victims_on(pod: &PodInfo, node: &NodeInfo, budgets: &[Budget]) -> Option<(Vec<Arc<PodInfo>>, usize)> {
    let mut trial = node.clone();
    let mut lower: Vec<Arc<PodInfo>> = node.pods.values().filter(|p| p.priority < pod.priority).cloned().collect();
    if lower.is_empty() {
        return None;
    }
    for p in &lower {
        trial.remove_pod(&p.key);
    }
    if !fits(pod, &trial) {
        return None;
    }
    lower.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.key.cmp(&b.key)));
    let (violating, fine) = split_by_budgets(lower, budgets);
    let mut victims = Vec::new();
    let mut violations = 0;
    for (group, protected) in [(violating, true), (fine, false)] {
        for p in group {
            trial.add_pod(p.clone());
            if !fits(pod, &trial) {
                trial.remove_pod(&p.key);
                victims.push(p);
                violations += usize::from(protected);
            }
        }
    }
    victims.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.key.cmp(&b.key)));
    (!victims.is_empty()).then_some((victims, violations))
}

/// Finds the best candidate, or the `preemption: …` explanation of why there is none.
/// `failures` maps each node the filter rejected to its reasons.
pub fn find(
    pod: &PodInfo,
    cache: &Cache,
    failures: &HashMap<String, Vec<String>>,
    budgets: &[Budget],
) -> Result<Candidate, String> {
    let mut diagnosis = Diagnosis { num_nodes: cache.len(), ..Default::default() };
    let mut candidates = Vec::new();
    for node in cache.nodes() {
        let reasons = failures.get(&node.name);
        if reasons.is_none_or(|r| r.iter().any(|r| unresolvable(r))) {
            diagnosis.add(vec![NOT_HELPFUL.to_string()]);
            continue;
        }
        // Only resource and port conflicts are resolved by eviction here.
        let resolvable_here = reasons.is_some_and(|r| {
            r.iter().all(|r| {
                r.starts_with("Insufficient ") || r == node_resources::TOO_MANY_PODS || r == node_ports::PORTS_REASON
            })
        });
        match resolvable_here.then(|| victims_on(pod, node, budgets)).flatten() {
            Some((victims, budget_violations)) => {
                candidates.push(Candidate { node: node.name.clone(), victims, budget_violations })
            }
            None => diagnosis.add(vec![NO_VICTIMS.to_string()]),
        }
    }
    // Upstream pickOneNodeForPreemption: fewest budget violations, then lowest top victim
    // priority, then lowest priority sum, then fewest victims.
    candidates
        .into_iter()
        .min_by_key(|c| {
            let top = c.victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN);
            let sum: i64 = c.victims.iter().map(|v| i64::from(v.priority) + i64::from(i32::MAX) + 1).sum();
            (c.budget_violations, top, sum, c.victims.len())
        })
        .ok_or_else(|| format!("preemption: {}", diagnosis.message()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::cache_of;
    use serde_json::json;

    fn prio(name: &str, priority: i32, cpu: &str) -> PodInfo {
        let p = json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"priority": priority,
            "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}});
        PodInfo::new(Arc::new(serde_json::from_value(p).unwrap()))
    }

    fn failures(nodes: &[&str], reason: &str) -> HashMap<String, Vec<String>> {
        nodes.iter().map(|n| (n.to_string(), vec![reason.to_string()])).collect()
    }

    #[test]
    fn evicts_the_fewest_least_important_pods() {
        let cache = cache_of(
            &[("n1", json!({})), ("n2", json!({}))],
            &[
                ("n1", prio("a", 10, "2")),
                ("n1", prio("b", 5, "2")),
                ("n2", prio("c", 50, "2")),
                ("n2", prio("d", 1, "2")),
            ],
        );
        let pod = prio("high", 100, "2");
        let c = find(&pod, &cache, &failures(&["n1", "n2"], "Insufficient cpu"), &[]).unwrap();
        // n1's top victim would be priority 5, n2's priority 1.
        assert_eq!(c.node, "n2");
        assert_eq!(c.victims.iter().map(|v| v.key.as_str()).collect::<Vec<_>>(), ["default/d"]);
    }

    #[test]
    fn no_lower_priority_pods_means_no_victims_and_taints_are_not_helped() {
        let cache = cache_of(&[("n1", json!({})), ("n2", json!({}))], &[("n1", prio("a", 100, "4"))]);
        let pod = prio("same", 100, "2");
        let mut f = failures(&["n1"], "Insufficient cpu");
        f.insert("n2".into(), vec!["node(s) had untolerated taint {a: b}".into()]);
        let msg = find(&pod, &cache, &f, &[]).unwrap_err();
        assert_eq!(
            msg,
            "preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, \
             1 Preemption is not helpful for scheduling."
        );
    }

    fn budget(selector: serde_json::Value, allowed: i32) -> Budget {
        let pdb = json!({"metadata": {"name": "b", "namespace": "default"}, "spec": {"selector": selector},
            "status": {"disruptionsAllowed": allowed, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}});
        Budget::new(&serde_json::from_value(pdb).unwrap())
    }

    fn labelled(name: &str, priority: i32, cpu: &str, app: &str) -> PodInfo {
        let p = json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
            "spec": {"priority": priority, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}});
        PodInfo::new(Arc::new(serde_json::from_value(p).unwrap()))
    }

    #[test]
    fn victims_a_budget_protects_are_spared_when_others_will_do() {
        // n1 holds a protected pod and an unprotected one of the same size; either makes room.
        let cache = cache_of(
            &[("n1", json!({}))],
            &[("n1", labelled("db", 10, "2", "db")), ("n1", labelled("batch", 1, "2", "batch"))],
        );
        let pod = prio("high", 100, "2");
        let protect_db = [budget(json!({"matchLabels": {"app": "db"}}), 0)];
        let c = find(&pod, &cache, &failures(&["n1"], "Insufficient cpu"), &protect_db).unwrap();
        assert_eq!(
            (c.victims.iter().map(|v| v.key.as_str()).collect::<Vec<_>>(), c.budget_violations),
            (vec!["default/batch"], 0)
        );
        // A budget with room left does not protect: the least important pod goes as before.
        let roomy = [budget(json!({"matchLabels": {"app": "batch"}}), 1)];
        let c = find(&pod, &cache, &failures(&["n1"], "Insufficient cpu"), &roomy).unwrap();
        assert_eq!((c.victims[0].key.as_str(), c.budget_violations), ("default/batch", 0));
    }

    #[test]
    fn the_node_breaking_fewer_budgets_wins_over_less_important_victims() {
        // n1's victim is less important but protected; n2's is more important and free to go.
        let cache = cache_of(
            &[("n1", json!({})), ("n2", json!({}))],
            &[("n1", labelled("db", 1, "4", "db")), ("n2", labelled("web", 50, "4", "web"))],
        );
        let pod = prio("high", 100, "2");
        let protect_db = [budget(json!({"matchLabels": {"app": "db"}}), 0)];
        let c = find(&pod, &cache, &failures(&["n1", "n2"], "Insufficient cpu"), &protect_db).unwrap();
        assert_eq!((c.node.as_str(), c.budget_violations), ("n2", 0));
        // When every node breaks a budget, preemption still goes ahead (upstream does too).
        let protect_all = [budget(json!({}), 0)];
        let c = find(&pod, &cache, &failures(&["n1", "n2"], "Insufficient cpu"), &protect_all).unwrap();
        assert_eq!((c.node.as_str(), c.budget_violations), ("n1", 1));
    }

    #[test]
    fn preemption_policy_never_is_not_eligible() {
        let p = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"preemptionPolicy": "Never", "containers": []}});
        let pod = PodInfo::new(Arc::new(serde_json::from_value(p).unwrap()));
        assert_eq!(ineligible(&pod, &Cache::default(), None), Some("not eligible due to preemptionPolicy=Never."));
    }
}
