//! The taint eviction controller (formerly the taint manager): deletes pods from nodes with
//! `NoExecute` taints they do not tolerate, at once, or when their `tolerationSeconds` run out.
//!
//! Level-triggered and restart-safe: every pass recomputes each pod's deadline from the taints'
//! `timeAdded` (set by the node lifecycle controller), so a restarted controller evicts on time
//! rather than starting the clocks again. A taint without `timeAdded` counts from when this
//! controller first saw it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::nodelifecycle::{mirror, notify_on_changes, slim_node};
use crate::podcache::PodCache;
use crate::settings::Settings;

/// The reporting controller of this controller's events, as upstream.
pub const REPORTER: &str = "taint-eviction-controller";
/// The reason of the `DisruptionTarget` condition this controller puts on the pods it deletes.
pub const DISRUPTION_REASON: &str = "DeletionByTaintManager";

/// How long to gather watch events before a pass, so a burst of changes costs one pass.
const SETTLE: Duration = Duration::from_millis(50);

/// What can go wrong while evicting a pod.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("marking pod {pod} as a disruption target: {source}")]
    Condition { pod: String, source: kube::Error },
    #[error("deleting pod {pod}: {source}")]
    Delete { pod: String, source: kube::Error },
    #[error("a watch stopped before it listed everything")]
    WatchStopped,
}

/// Runs the controller with upstream's timings.
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_with(client, Settings::default()).await
}

/// Runs the controller; every pod is looked at again at least once per
/// `settings.node_monitor_period`, and at once when a node or pod changes.
pub async fn run_with(client: Client, settings: Settings) -> anyhow::Result<()> {
    let pods = PodCache::start(client.clone());
    run_shared(client, settings, pods).await
}

/// Runs the controller on a shared pod cache.
pub async fn run_shared(client: Client, settings: Settings, pods: Arc<PodCache>) -> anyhow::Result<()> {
    let (nodes, node_writer) = reflector::store();
    let changed = Arc::new(Notify::new());
    let evictor = Evictor {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), Reporter { controller: REPORTER.into(), instance: None }),
        first_seen: HashMap::new(),
        scheduled: HashMap::new(),
        evicted: HashSet::new(),
    };
    tokio::select! {
        () = mirror(Api::<Node>::all(client.clone()), node_writer, Some(changed.clone()), slim_node) => {
            anyhow::bail!("the node watch ended")
        }
        () = notify_on_changes(&pods, &changed) => anyhow::bail!("the pod cache closed"),
        result = evictor.run(nodes, pods.clone(), changed.clone(), settings.node_monitor_period) => {
            result.map_err(Into::into)
        }
    }
}

/// What is to become of a pod on a tainted node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It tolerates every NoExecute taint of its node for ever.
    Keep,
    /// It is to be deleted at this time (at once if that has passed).
    EvictAt(jiff::Timestamp),
}

/// The verdict for a pod with `tolerations` on a node with these NoExecute `taints`, each with
/// the time it was added. A taint the pod does not tolerate evicts it at once; otherwise each
/// taint allows the shortest `tolerationSeconds` among the tolerations that match it (none given:
/// for ever), counted from when it was added.
pub fn verdict(tolerations: &[Toleration], taints: &[(Taint, jiff::Timestamp)], now: jiff::Timestamp) -> Verdict {
    let mut deadline: Option<jiff::Timestamp> = None;
    for (taint, added) in taints {
        let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Verdict::EvictAt(now);
        }
        let Some(seconds) = matching.iter().filter_map(|t| t.toleration_seconds).min() else { continue };
        let at = added.saturating_add(jiff::SignedDuration::from_secs(seconds.max(0))).unwrap_or(*added);
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
    }
    deadline.map_or(Verdict::Keep, Verdict::EvictAt)
}

/// Whether `toleration` tolerates `taint`, with upstream's matching rules.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    let key = toleration.key.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => toleration.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
        _ => false,
    }
}

type TaintId = (String, String, String, String);

struct Evictor {
    client: Client,
    recorder: Recorder,
    /// When this controller first saw each taint that has no `timeAdded`, by (node, key, value, effect).
    first_seen: HashMap<TaintId, jiff::Timestamp>,
    /// Pods with a deletion pending, by uid, with their `namespace/name`.
    scheduled: HashMap<String, String>,
    /// Pods already deleted, by uid, until the watch shows them terminating or gone.
    evicted: HashSet<String>,
}

impl Evictor {
    async fn run(
        mut self,
        nodes: Store<Node>,
        pods: Arc<PodCache>,
        changed: Arc<Notify>,
        resync: Duration,
    ) -> Result<(), Error> {
        nodes.wait_until_ready().await.map_err(|_| Error::WatchStopped)?;
        pods.synced().await;
        loop {
            let now = jiff::Timestamp::now();
            let next = self.pass(&nodes, &pods, now).await;
            let wait = next
                .and_then(|at| Duration::try_from(at.duration_since(jiff::Timestamp::now())).ok())
                .map_or(resync, |until| until.min(resync));
            tokio::select! {
                () = changed.notified() => tokio::time::sleep(SETTLE).await,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Evicts every pod whose time has come; returns the next deadline, if any.
    async fn pass(&mut self, nodes: &Store<Node>, pods: &PodCache, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let tainted = self.no_execute_taints(&nodes.state(), now);
        if tainted.is_empty() && self.scheduled.is_empty() && self.evicted.is_empty() {
            return None;
        }
        let pods = pods.all();
        let live: HashSet<&str> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        self.evicted.retain(|uid| live.contains(uid.as_str()));
        let mut next: Option<jiff::Timestamp> = None;
        let mut pending = HashMap::new();
        for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
            let Some(taints) = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).and_then(|n| tainted.get(n)) else {
                continue;
            };
            let uid = pod.uid().unwrap_or_default();
            if self.evicted.contains(&uid) {
                continue;
            }
            let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
            match verdict(tolerations, taints, now) {
                Verdict::Keep => {}
                Verdict::EvictAt(at) if at <= now => match self.evict(pod).await {
                    Ok(()) => {
                        self.evicted.insert(uid.clone());
                        self.scheduled.remove(&uid);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "taint eviction");
                        let retry = now.saturating_add(jiff::SignedDuration::from_secs(1)).unwrap_or(now);
                        next = Some(next.map_or(retry, |n| n.min(retry)));
                    }
                },
                Verdict::EvictAt(at) => {
                    tracing::debug!(pod = %key(pod), at = %at, "pod scheduled for taint eviction");
                    pending.insert(uid, key(pod));
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
        }
        self.cancel_unscheduled(pending, &pods).await;
        next
    }

    /// Every node's NoExecute taints with the time each was added.
    fn no_execute_taints(
        &mut self,
        nodes: &[Arc<Node>],
        now: jiff::Timestamp,
    ) -> HashMap<String, Vec<(Taint, jiff::Timestamp)>> {
        let mut seen = HashSet::new();
        let mut tainted = HashMap::new();
        for node in nodes {
            let name = node.name_any();
            let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
            let no_execute: Vec<_> = taints
                .iter()
                .filter(|t| t.effect == "NoExecute")
                .map(|t| {
                    let id = (name.clone(), t.key.clone(), t.value.clone().unwrap_or_default(), t.effect.clone());
                    let added = match &t.time_added {
                        Some(time) => time.0,
                        None => *self.first_seen.entry(id.clone()).or_insert(now),
                    };
                    seen.insert(id);
                    (t.clone(), added)
                })
                .collect();
            if !no_execute.is_empty() {
                tainted.insert(name, no_execute);
            }
        }
        self.first_seen.retain(|id, _| seen.contains(id));
        tainted
    }

    /// Tells about pods whose deletion was pending and no longer is (their node lost the taint).
    async fn cancel_unscheduled(&mut self, pending: HashMap<String, String>, pods: &[Arc<Pod>]) {
        let cancelled: Vec<String> = self.scheduled.keys().filter(|uid| !pending.contains_key(*uid)).cloned().collect();
        for uid in cancelled {
            let Some(name) = self.scheduled.remove(&uid) else { continue };
            let Some(pod) = pods.iter().find(|p| p.uid().as_deref() == Some(uid.as_str())) else { continue };
            if pod.metadata.deletion_timestamp.is_some() || self.evicted.contains(&uid) {
                continue;
            }
            tracing::info!(pod = %name, "cancelling taint eviction");
            self.publish(pod, "Cancel", format!("Cancelling deletion of Pod {name}")).await;
        }
        self.scheduled.extend(pending);
    }

    /// Marks the pod as a disruption target, then deletes it.
    async fn evict(&self, pod: &Pod) -> Result<(), Error> {
        let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let pod_key = key(pod);
        tracing::info!(pod = %pod_key, "evicting pod from a NoExecute-tainted node");
        self.publish(pod, "Delete", format!("Marking for deletion Pod {pod_key}")).await;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        if !marked(pod) {
            let now = jiff::Timestamp::now().to_string();
            let condition = json!({"type": "DisruptionTarget", "status": "True", "reason": DISRUPTION_REASON,
                "message": "Taint manager: deleting due to NoExecute taint", "lastTransitionTime": now});
            let patch = json!({"metadata": {"uid": pod.uid()}, "status": {"conditions": [condition]}});
            match api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                Err(source) => return Err(Error::Condition { pod: pod_key, source }),
            }
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(source) => Err(Error::Delete { pod: pod_key, source }),
        }
    }

    /// Publishes a `TaintManagerEviction` event. The two kinds differ in `action`, which keeps
    /// kube's recorder from folding a cancellation and a deletion into one series.
    async fn publish(&self, pod: &Pod, action: &str, note: String) {
        let event = Event {
            type_: EventType::Normal,
            reason: "TaintManagerEviction".into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &pod.object_ref(&())).await {
            tracing::debug!(%error, "publishing event failed");
        }
    }
}

fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// Whether the pod already carries this controller's `DisruptionTarget` condition.
fn marked(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    conditions
        .iter()
        .any(|c| c.type_ == "DisruptionTarget" && c.status == "True" && c.reason.as_deref() == Some(DISRUPTION_REASON))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toleration(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    fn taint(key: &str, value: Option<&str>) -> Taint {
        Taint { key: key.into(), value: value.map(Into::into), effect: "NoExecute".into(), time_added: None }
    }

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn tolerations_match_as_upstream() {
        let t = taint("node.kubernetes.io/unreachable", None);
        assert!(tolerates(&toleration(json!({"operator": "Exists"})), &t));
        assert!(tolerates(&toleration(json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists"})), &t));
        assert!(tolerates(&toleration(json!({"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"})), &t));
        assert!(!tolerates(&toleration(json!({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"})), &t));
        assert!(!tolerates(&toleration(json!({"key": "other", "operator": "Exists"})), &t));
        let valued = taint("dedicated", Some("db"));
        assert!(tolerates(&toleration(json!({"key": "dedicated", "value": "db"})), &valued));
        assert!(!tolerates(&toleration(json!({"key": "dedicated", "value": "web"})), &valued));
    }

    #[test]
    fn deadlines_count_from_when_the_taint_was_added() {
        let added = at("2026-01-01T00:00:00Z");
        let now = at("2026-01-01T00:00:10Z");
        let taints = [(taint("node.kubernetes.io/unreachable", None), added)];
        assert_eq!(verdict(&[], &taints, now), Verdict::EvictAt(now));
        let for_ever = [toleration(json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists"}))];
        assert_eq!(verdict(&for_ever, &taints, now), Verdict::Keep);
        let for_300 = [toleration(
            json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300}),
        )];
        assert_eq!(verdict(&for_300, &taints, now), Verdict::EvictAt(at("2026-01-01T00:05:00Z")));
        let both = [for_ever[0].clone(), toleration(json!({"operator": "Exists", "tolerationSeconds": 2}))];
        assert_eq!(verdict(&both, &taints, now), Verdict::EvictAt(at("2026-01-01T00:00:02Z")));
        let two = [taints[0].clone(), (taint("dedicated", None), added)];
        assert_eq!(verdict(&for_300, &two, now), Verdict::EvictAt(now), "one taint is not tolerated");
    }
}
