//! The node lifecycle controller: notices nodes whose kubelet went quiet, marks them and their
//! pods, and keeps the condition taints (`node.kubernetes.io/*`) in step with node conditions.
//!
//! Health is judged as upstream does, on this controller's own clock: a node is healthy while
//! its Lease (`kube-node-lease/<node>`) or its `Ready` condition's `lastHeartbeatTime` changed
//! within the grace period, counted from when this controller last *saw* either change, so a
//! kubelet whose clock is off does not matter. Taints are computed from the conditions on every
//! pass (level-triggered), so a restart or a missed event never leaves them wrong.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;

use crate::podcache::PodCache;
use crate::settings::Settings;

/// The reporting controller of this controller's events, as upstream.
pub const REPORTER: &str = "node-controller";
/// Tainted on nodes whose `Ready` condition is `False`.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// Tainted on nodes whose `Ready` condition is `Unknown`.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// Tainted (NoSchedule) on nodes under memory pressure.
pub const MEMORY_PRESSURE_TAINT: &str = "node.kubernetes.io/memory-pressure";
/// Tainted (NoSchedule) on nodes under disk pressure.
pub const DISK_PRESSURE_TAINT: &str = "node.kubernetes.io/disk-pressure";
/// Tainted (NoSchedule) on nodes under PID pressure.
pub const PID_PRESSURE_TAINT: &str = "node.kubernetes.io/pid-pressure";
/// Tainted (NoSchedule) on nodes whose network is not set up.
pub const NETWORK_UNAVAILABLE_TAINT: &str = "node.kubernetes.io/network-unavailable";
/// Tainted (NoSchedule) on cordoned nodes (`spec.unschedulable`).
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
/// Where kubelets keep their Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

const NO_SCHEDULE: &str = "NoSchedule";
const NO_EXECUTE: &str = "NoExecute";
/// The conditions the controller sets to `Unknown` when the kubelet goes quiet.
const WATCHED_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
/// Condition (type, status) → the NoSchedule taint it calls for (TaintNodesByCondition).
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", NOT_READY_TAINT),
    ("Ready", "Unknown", UNREACHABLE_TAINT),
    ("MemoryPressure", "True", MEMORY_PRESSURE_TAINT),
    ("DiskPressure", "True", DISK_PRESSURE_TAINT),
    ("PIDPressure", "True", PID_PRESSURE_TAINT),
    ("NetworkUnavailable", "True", NETWORK_UNAVAILABLE_TAINT),
];

/// What can go wrong while reconciling one node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("marking node {node} unknown: {source}")]
    NodeStatus { node: String, source: kube::Error },
    #[error("updating the taints of node {node}: {source}")]
    Taints { node: String, source: kube::Error },
    #[error("marking pod {pod} not ready: {source}")]
    PodStatus { pod: String, source: kube::Error },
    #[error("a watch stopped before it listed everything")]
    WatchStopped,
}

/// Runs the controller with upstream's timings.
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_with(client, Settings::default()).await
}

/// Runs the controller with the given timings; returns only if a watch ends.
pub async fn run_with(client: Client, settings: Settings) -> anyhow::Result<()> {
    let pods = PodCache::start(client.clone());
    run_shared(client, settings, pods).await
}

/// Runs the controller on a shared pod cache; returns only if a watch ends.
pub async fn run_shared(client: Client, settings: Settings, pods: Arc<PodCache>) -> anyhow::Result<()> {
    let (nodes, node_writer) = reflector::store();
    let (leases, lease_writer) = reflector::store();
    let monitor = Monitor {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), Reporter { controller: REPORTER.into(), instance: None }),
        settings,
        probes: HashMap::new(),
        disrupted: false,
        limiter: Limiter::default(),
    };
    tokio::select! {
        () = mirror(Api::<Node>::all(client.clone()), node_writer, None, slim_node) => {
            anyhow::bail!("the node watch ended")
        }
        () = mirror(Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE), lease_writer, None, |_| {}) => {
            anyhow::bail!("the lease watch ended")
        }
        result = monitor.run(Stores { nodes, leases, pods }) => result.map_err(Into::into),
    }
}

/// Keeps `writer` in step with the API, waking `changed` (if any) after every event. Watch errors
/// are retried with back-off, so this returns only if the stream ends. `managedFields` are
/// dropped (nobody here reads them, and they are a good part of every object's size), and `slim`
/// drops whatever else the caller does not read before the object is stored.
pub(crate) async fn mirror<K>(api: Api<K>, writer: Writer<K>, changed: Option<Arc<Notify>>, slim: fn(&mut K))
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(move |object| {
            object.managed_fields_mut().clear();
            slim(object);
        })
        .reflect(writer)
        .for_each(|event| {
            if let Err(error) = event {
                tracing::debug!(%error, kind = %K::kind(&K::DynamicType::default()), "watch failed; retrying");
            }
            if let Some(changed) = &changed {
                changed.notify_one();
            }
            futures::future::ready(())
        })
        .await;
}

struct Stores {
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Arc<PodCache>,
}

/// What this controller last saw of a node's kubelet, and when (on its own clock).
#[derive(Debug, Clone)]
struct Probe {
    uid: String,
    probed_at: Instant,
    heartbeat: Option<jiff::Timestamp>,
    renewed: Option<jiff::Timestamp>,
    ready: Option<String>,
}

struct Monitor {
    client: Client,
    recorder: Recorder,
    settings: Settings,
    probes: HashMap<String, Probe>,
    /// Whether the last pass found no node ready.
    disrupted: bool,
    limiter: Limiter,
}

impl Monitor {
    async fn run(mut self, stores: Stores) -> Result<(), Error> {
        stores.nodes.wait_until_ready().await.map_err(|_| Error::WatchStopped)?;
        stores.leases.wait_until_ready().await.map_err(|_| Error::WatchStopped)?;
        stores.pods.synced().await;
        let mut tick = tokio::time::interval(self.settings.node_monitor_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.pass(&stores).await;
        }
    }

    /// One monitoring pass over every node.
    async fn pass(&mut self, stores: &Stores) {
        let now = Instant::now();
        let mut nodes = stores.nodes.state();
        let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        self.probes.retain(|name, _| names.contains(name));
        let mut unready = HashSet::new();
        for node in &mut nodes {
            let name = node.name_any();
            let lease = stores.leases.get(&ObjectRef::new(&name).within(NODE_LEASE_NAMESPACE));
            let was_ready = self.probes.get(&name).and_then(|p| p.ready.clone());
            if self.observe(node, lease.as_deref(), now) {
                match self.mark_unknown(node).await {
                    Ok(Some(updated)) => *node = Arc::new(updated),
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, node = %name, "node lifecycle"),
                }
            }
            let ready = condition(node, "Ready").map(|c| c.status.clone());
            if let Some(probe) = self.probes.get_mut(&name) {
                probe.heartbeat = condition(node, "Ready").and_then(|c| c.last_heartbeat_time.as_ref()).map(|t| t.0);
                probe.ready.clone_from(&ready);
            }
            if self.pods_need_marking(node, was_ready.as_deref(), ready.as_deref()).await {
                unready.insert(name);
            }
        }
        self.mark_pods(&unready, &stores.pods).await;
        let zones = zone_states(&nodes, self.settings.unhealthy_zone_threshold);
        let disrupted = !zones.is_empty() && zones.values().all(|z| z.state == ZoneState::Full);
        if disrupted != self.disrupted {
            if disrupted {
                tracing::warn!(
                    nodes = nodes.len(),
                    "no node is ready: entering full disruption, NoExecute taints held back"
                );
            } else {
                tracing::info!(nodes = nodes.len(), "some nodes are ready: leaving full disruption");
            }
            self.disrupted = disrupted;
        }
        for node in &nodes {
            let zone = zones.get(&zone_of(node)).copied();
            if let Err(error) = self.update_taints(node, !disrupted, zone, now).await {
                tracing::warn!(%error, node = %node.name_any(), "node lifecycle");
            }
        }
    }

    /// Records what the node and its Lease say now; returns whether the kubelet has been quiet
    /// for longer than its grace period.
    fn observe(&mut self, node: &Node, lease: Option<&Lease>, now: Instant) -> bool {
        let name = node.name_any();
        let uid = node.uid().unwrap_or_default();
        let ready = condition(node, "Ready");
        let heartbeat = ready.and_then(|c| c.last_heartbeat_time.as_ref()).map(|t| t.0);
        let renewed = lease.and_then(|l| l.spec.as_ref()).and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
        let fresh =
            Probe { uid: uid.clone(), probed_at: now, heartbeat, renewed, ready: ready.map(|c| c.status.clone()) };
        let probe = self.probes.entry(name).or_insert_with(|| fresh.clone());
        if probe.uid != uid {
            *probe = fresh;
        }
        if probe.heartbeat != heartbeat {
            probe.heartbeat = heartbeat;
            probe.probed_at = now;
        }
        if renewed > probe.renewed {
            probe.renewed = renewed;
            probe.probed_at = now;
        }
        let grace = if ready.is_none() {
            self.settings.node_startup_grace_period
        } else {
            self.settings.node_monitor_grace_period
        };
        now.duration_since(probe.probed_at) > grace
    }

    /// Sets the watched conditions to `Unknown`; returns the updated node, or `None` if they
    /// already were.
    async fn mark_unknown(&self, node: &Node) -> Result<Option<Node>, Error> {
        let conditions = unknown_conditions(node, jiff::Timestamp::now());
        if conditions.is_empty() {
            return Ok(None);
        }
        let name = node.name_any();
        tracing::info!(node = %name, "kubelet stopped posting node status; marking the node unknown");
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "status": {"conditions": conditions},
        });
        let api: Api<Node> = Api::all(self.client.clone());
        match api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
            Ok(updated) => Ok(Some(updated)),
            // The kubelet (or a newer view of the node) got there first: the next pass decides.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
            Err(source) => Err(Error::NodeStatus { node: name, source }),
        }
    }

    /// Whether the node's pods are to be marked not ready: when it stopped being ready (which is
    /// also told in an event), and for as long as the controller itself holds the node `Unknown`
    /// (nobody else will).
    async fn pods_need_marking(&self, node: &Node, was: Option<&str>, now: Option<&str>) -> bool {
        let transition = was == Some("True") && now != Some("True");
        if transition {
            let event = Event {
                type_: EventType::Normal,
                reason: "NodeNotReady".into(),
                note: Some(format!("Node {} status is now: NodeNotReady", node.name_any())),
                action: "NodeNotReady".into(),
                secondary: None,
            };
            self.publish(&event, &node.object_ref(&())).await;
        }
        transition || now == Some("Unknown")
    }

    /// Marks the ready pods on these nodes not ready.
    async fn mark_pods(&self, nodes: &HashSet<String>, pods: &PodCache) {
        if nodes.is_empty() {
            return;
        }
        let on_nodes = pods.all().into_iter().filter(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some_and(|n| nodes.contains(n))
                && pod_ready(p) == Some(true)
        });
        for pod in on_nodes {
            match self.mark_pod_not_ready(&pod).await {
                Ok(()) => {
                    let event = Event {
                        type_: EventType::Warning,
                        reason: "NodeNotReady".into(),
                        note: Some("Node is not ready".into()),
                        action: "NodeNotReady".into(),
                        secondary: None,
                    };
                    self.publish(&event, &pod.object_ref(&())).await;
                }
                Err(error) => tracing::warn!(%error, "node lifecycle"),
            }
        }
    }

    async fn mark_pod_not_ready(&self, pod: &Pod) -> Result<(), Error> {
        let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let now = jiff::Timestamp::now().to_string();
        let patch = json!({
            "metadata": {"uid": pod.uid()},
            "status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}]},
        });
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        match api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{namespace}/{name}"), "marked pod not ready");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(source) => Err(Error::PodStatus { pod: format!("{namespace}/{name}"), source }),
        }
    }

    /// Brings the node's condition taints in line with its conditions. A node that is to get a
    /// NoExecute taint it does not have yet (swapping not-ready for unreachable does not count)
    /// needs a token from its zone's rate limiter, as upstream.
    async fn update_taints(
        &mut self,
        node: &Node,
        no_execute: bool,
        zone: Option<Zone>,
        now: Instant,
    ) -> Result<(), Error> {
        let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        let mut desired = desired_taints(node, no_execute);
        let has_no_execute = current.iter().any(|t| t.effect == NO_EXECUTE && managed(t));
        if !has_no_execute && desired.iter().any(|(_, effect)| *effect == NO_EXECUTE) {
            let rate = zone.map_or(self.settings.node_eviction_rate, |z| self.taint_rate(z));
            if !self.limiter.take(zone_of(node), rate, now) {
                tracing::debug!(node = %node.name_any(), rate, "NoExecute taint rate-limited in its zone");
                desired.retain(|(_, effect)| *effect != NO_EXECUTE);
            }
        }
        let Some(taints) = reconcile_taints(&current, &desired, jiff::Timestamp::now()) else {
            return Ok(());
        };
        let name = node.name_any();
        tracing::info!(node = %name, taints = ?taints.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>(),
            "updating node taints");
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "spec": {"taints": taints},
        });
        let api: Api<Node> = Api::all(self.client.clone());
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(source) => Err(Error::Taints { node: name, source }),
        }
    }

    /// How many nodes per second may newly get a NoExecute taint in a zone in this state.
    fn taint_rate(&self, zone: Zone) -> f64 {
        match zone.state {
            ZoneState::Normal | ZoneState::Full => self.settings.node_eviction_rate,
            ZoneState::Partial if zone.size > self.settings.large_cluster_size_threshold => {
                self.settings.secondary_node_eviction_rate
            }
            ZoneState::Partial => 0.0,
        }
    }

    async fn publish(&self, event: &Event, reference: &k8s_openapi::api::core::v1::ObjectReference) {
        if let Err(error) = self.recorder.publish(event, reference).await {
            tracing::debug!(%error, reason = %event.reason, "publishing event failed");
        }
    }
}

/// Wakes `changed` after every change the pod cache sees; returns only if the cache closes.
pub(crate) async fn notify_on_changes(pods: &PodCache, changed: &Notify) {
    let mut feed = pods.subscribe();
    loop {
        match feed.recv().await {
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => changed.notify_one(),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A node as the node lifecycle, taint eviction and pod GC controllers keep it: its metadata,
/// taints, `unschedulable` and conditions, which is all they read; the vectors kept are shrunk to
/// their length (serde grows capacities in steps of four and more).
pub(crate) fn slim_node(node: &mut Node) {
    if let Some(spec) = node.spec.as_mut()
        && let Some(taints) = spec.taints.as_mut()
    {
        taints.shrink_to_fit();
    }
    if let Some(status) = node.status.take() {
        let conditions = status.conditions.map(|mut c| {
            c.shrink_to_fit();
            c
        });
        node.status = Some(NodeStatus { conditions, ..NodeStatus::default() });
    }
}

fn condition<'a>(node: &'a Node, kind: &str) -> Option<&'a NodeCondition> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
}

/// The pod's `Ready` condition, if it has one.
fn pod_ready(pod: &Pod) -> Option<bool> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status == "True")
}

/// The watched conditions that must change to `Unknown`, as they should read after the change.
fn unknown_conditions(node: &Node, now: jiff::Timestamp) -> Vec<NodeCondition> {
    let now = Time(now);
    WATCHED_CONDITIONS
        .iter()
        .filter_map(|kind| match condition(node, kind) {
            Some(c) if c.status == "Unknown" => None,
            Some(c) => Some(NodeCondition {
                status: "Unknown".into(),
                reason: Some("NodeStatusUnknown".into()),
                message: Some("Kubelet stopped posting node status.".into()),
                last_transition_time: Some(now.clone()),
                ..c.clone()
            }),
            None => Some(NodeCondition {
                type_: (*kind).into(),
                status: "Unknown".into(),
                reason: Some("NodeStatusNeverUpdated".into()),
                message: Some("Kubelet never posted node status.".into()),
                last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                last_transition_time: Some(now.clone()),
            }),
        })
        .collect()
}

/// Nodes with this label are left out of their zone's health.
pub const EXCLUDE_DISRUPTION_LABEL: &str = "node.kubernetes.io/exclude-disruption";

/// A zone's health, as upstream judges it from its nodes' `Ready` conditions. When every zone
/// is fully disrupted the controller assumes its own view is broken rather than every node,
/// and holds back (and takes away) all NoExecute taints: evicting everything would help no one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZoneState {
    Normal,
    /// More than two nodes and at least the unhealthy threshold of them not ready.
    Partial,
    /// No node ready.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Zone {
    state: ZoneState,
    size: usize,
}

/// The node's zone, from its region and zone labels.
fn zone_of(node: &Node) -> String {
    let labels = node.labels();
    let label =
        |current: &str, beta: &str| labels.get(current).or_else(|| labels.get(beta)).cloned().unwrap_or_default();
    let region = label("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region");
    let zone = label("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone");
    format!("{region}:\0:{zone}")
}

fn zone_states(nodes: &[Arc<Node>], unhealthy_threshold: f64) -> HashMap<String, Zone> {
    let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
    for node in nodes.iter().filter(|n| !n.labels().contains_key(EXCLUDE_DISRUPTION_LABEL)) {
        let (ready, not_ready) = counts.entry(zone_of(node)).or_default();
        if condition(node, "Ready").is_some_and(|c| c.status == "True") {
            *ready += 1;
        } else {
            *not_ready += 1;
        }
    }
    counts
        .into_iter()
        .map(|(zone, (ready, not_ready))| {
            let size = ready + not_ready;
            let state = if ready == 0 && not_ready > 0 {
                ZoneState::Full
            } else if not_ready > 2 && not_ready as f64 / size as f64 >= unhealthy_threshold {
                ZoneState::Partial
            } else {
                ZoneState::Normal
            };
            (zone, Zone { state, size })
        })
        .collect()
}

/// Token buckets (burst 1) per zone for adding NoExecute taints.
#[derive(Debug, Default)]
struct Limiter {
    next: HashMap<String, Instant>,
}

impl Limiter {
    /// Takes the zone's token if there is one at `rate` per second.
    fn take(&mut self, zone: String, rate: f64, now: Instant) -> bool {
        if rate <= 0.0 || !rate.is_finite() {
            return false;
        }
        if self.next.get(&zone).is_some_and(|next| now < *next) {
            return false;
        }
        self.next.insert(zone, now + std::time::Duration::from_secs_f64((1.0 / rate).min(1e9)));
        true
    }
}

/// The condition taints the node should carry, as (key, effect).
fn desired_taints(node: &Node, no_execute: bool) -> Vec<(&'static str, &'static str)> {
    let mut taints: Vec<_> = CONDITION_TAINTS
        .iter()
        .filter(|(kind, status, _)| condition(node, kind).is_some_and(|c| c.status == *status))
        .map(|(_, _, key)| (*key, NO_SCHEDULE))
        .collect();
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        taints.push((UNSCHEDULABLE_TAINT, NO_SCHEDULE));
    }
    if no_execute {
        match condition(node, "Ready").map(|c| c.status.as_str()) {
            Some("False") => taints.push((NOT_READY_TAINT, NO_EXECUTE)),
            Some("Unknown") => taints.push((UNREACHABLE_TAINT, NO_EXECUTE)),
            _ => {}
        }
    }
    taints
}

/// Whether this controller owns taints with this key and effect.
fn managed(taint: &Taint) -> bool {
    match taint.effect.as_str() {
        NO_SCHEDULE => CONDITION_TAINTS.iter().any(|(_, _, key)| *key == taint.key) || taint.key == UNSCHEDULABLE_TAINT,
        NO_EXECUTE => taint.key == NOT_READY_TAINT || taint.key == UNREACHABLE_TAINT,
        _ => false,
    }
}

/// The node's taints with the managed ones made to match `desired`, or `None` if they already
/// do. Other taints are kept as they are; a NoExecute taint added now carries `timeAdded`, and
/// one already there keeps its own, which taint eviction counts from.
fn reconcile_taints(current: &[Taint], desired: &[(&str, &str)], now: jiff::Timestamp) -> Option<Vec<Taint>> {
    let wanted = |t: &Taint| desired.iter().any(|(key, effect)| t.key == *key && t.effect == *effect);
    let mut taints: Vec<Taint> = current.iter().filter(|t| !managed(t) || wanted(t)).cloned().collect();
    let removed = taints.len() != current.len();
    let mut added = false;
    for (key, effect) in desired {
        if taints.iter().any(|t| t.key == *key && t.effect == *effect) {
            continue;
        }
        let time_added = (*effect == NO_EXECUTE).then_some(Time(now));
        taints.push(Taint { key: (*key).into(), effect: (*effect).into(), time_added, value: None });
        added = true;
    }
    (removed || added).then_some(taints)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(conditions: serde_json::Value, spec: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": spec, "status": {"conditions": conditions}}))
        .unwrap()
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint { key: key.into(), effect: effect.into(), ..Taint::default() }
    }

    #[test]
    fn conditions_call_for_their_taints() {
        let n = node(
            json!([{"type": "Ready", "status": "Unknown"}, {"type": "DiskPressure", "status": "True"},
                {"type": "MemoryPressure", "status": "False"}]),
            json!({"unschedulable": true}),
        );
        assert_eq!(
            desired_taints(&n, true),
            vec![
                (UNREACHABLE_TAINT, NO_SCHEDULE),
                (DISK_PRESSURE_TAINT, NO_SCHEDULE),
                (UNSCHEDULABLE_TAINT, NO_SCHEDULE),
                (UNREACHABLE_TAINT, NO_EXECUTE)
            ]
        );
        let not_ready = node(json!([{"type": "Ready", "status": "False"}]), json!({}));
        assert_eq!(
            desired_taints(&not_ready, true),
            vec![(NOT_READY_TAINT, NO_SCHEDULE), (NOT_READY_TAINT, NO_EXECUTE)]
        );
        assert_eq!(desired_taints(&not_ready, false), vec![(NOT_READY_TAINT, NO_SCHEDULE)]);
    }

    #[test]
    fn taints_are_swapped_and_others_kept() {
        let now: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let earlier = Time("2026-01-01T00:00:00Z".parse().unwrap());
        let current = vec![
            taint("dedicated", NO_SCHEDULE),
            Taint { time_added: Some(earlier.clone()), ..taint(UNREACHABLE_TAINT, NO_EXECUTE) },
            taint(UNREACHABLE_TAINT, NO_SCHEDULE),
        ];
        let same = [(UNREACHABLE_TAINT, NO_SCHEDULE), (UNREACHABLE_TAINT, NO_EXECUTE)];
        assert_eq!(reconcile_taints(&current, &same, now), None);
        let swapped = reconcile_taints(&current, &[(NOT_READY_TAINT, NO_EXECUTE)], now).unwrap();
        assert_eq!(
            swapped,
            vec![
                taint("dedicated", NO_SCHEDULE),
                Taint { time_added: Some(Time(now)), ..taint(NOT_READY_TAINT, NO_EXECUTE) }
            ]
        );
        assert_eq!(reconcile_taints(&current, &[], now).unwrap(), vec![taint("dedicated", NO_SCHEDULE)]);
    }

    #[test]
    fn quiet_conditions_go_unknown_and_missing_ones_never_updated() {
        let now: jiff::Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
        let n = node(
            json!([{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": "2026-01-01T00:01:00Z"}, {"type": "DiskPressure", "status": "Unknown"}]),
            json!({}),
        );
        let changed = unknown_conditions(&n, now);
        let kinds: Vec<_> = changed.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(kinds, ["Ready", "MemoryPressure", "PIDPressure"]);
        assert_eq!(changed[0].reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(changed[0].message.as_deref(), Some("Kubelet stopped posting node status."));
        assert_eq!(changed[0].last_heartbeat_time, Some(Time("2026-01-01T00:01:00Z".parse().unwrap())));
        assert_eq!(changed[1].reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert_eq!(changed[1].message.as_deref(), Some("Kubelet never posted node status."));
    }

    #[test]
    fn zones_are_judged_by_their_ready_nodes() {
        let in_zone = |zone: &str, ready: &str| {
            let mut n = node(json!([{"type": "Ready", "status": ready}]), json!({}));
            n.metadata.labels = Some([("topology.kubernetes.io/zone".to_string(), zone.to_string())].into());
            Arc::new(n)
        };
        let nodes = vec![
            in_zone("a", "Unknown"),
            in_zone("a", "Unknown"),
            in_zone("a", "False"),
            in_zone("a", "True"),
            in_zone("b", "Unknown"),
            in_zone("c", "True"),
            in_zone("c", "Unknown"),
        ];
        let zones = zone_states(&nodes, 0.55);
        let state = |zone: &str| zones[&zone_of(&in_zone(zone, "True"))].state;
        assert_eq!(state("a"), ZoneState::Partial, "3 of 4 not ready");
        assert_eq!(state("b"), ZoneState::Full);
        assert_eq!(state("c"), ZoneState::Normal, "two unready nodes are never a partial disruption");
        assert!(zone_states(&[], 0.55).is_empty());
    }

    #[test]
    fn the_limiter_hands_out_one_token_per_interval() {
        let mut limiter = Limiter::default();
        let t0 = Instant::now();
        assert!(limiter.take("z".into(), 0.1, t0));
        assert!(!limiter.take("z".into(), 0.1, t0 + std::time::Duration::from_secs(9)));
        assert!(limiter.take("other".into(), 0.1, t0), "zones have their own buckets");
        assert!(limiter.take("z".into(), 0.1, t0 + std::time::Duration::from_secs(10)));
        assert!(!limiter.take("z".into(), 0.0, t0 + std::time::Duration::from_secs(100)));
    }
}
