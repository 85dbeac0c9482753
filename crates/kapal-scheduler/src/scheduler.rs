//! The scheduler's shared state and its scheduling loop: pop a pod, run the framework against
//! the cache, assume the pod on the chosen node, and bind it asynchronously.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, PodStatus};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use crate::binder::Binder;
use crate::cache::Cache;
use crate::framework::Framework;
use crate::nominations::Nominations;
use crate::podinfo::{PodInfo, pod_key};
use crate::preemption::{self, Candidate};
use crate::queue::{QueuedPod, SchedulingQueue};

/// The scheduler name this scheduler answers to.
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// Bindings (and failure reports) in flight at once.
pub const BIND_CONCURRENCY: usize = 256;
/// `Scheduled` events in flight at once; they do not hold up bindings.
pub const EVENT_CONCURRENCY: usize = 256;

/// Everything the event handlers and the scheduling loop share, behind one lock.
#[derive(Debug, Default)]
pub struct State {
    /// Nodes and the pods on them.
    pub cache: Cache,
    /// Pods waiting to be scheduled.
    pub queue: SchedulingQueue,
    /// The scheduling algorithm.
    pub framework: Framework,
    /// PriorityClass values by name, for pods the API admitted without `spec.priority`.
    pub priority_classes: HashMap<String, i32>,
    /// Pods nominated to nodes by preemption.
    pub nominations: Nominations,
    /// PodDisruptionBudgets by `namespace/name`, which preemption tries not to break.
    pub budgets: HashMap<String, preemption::Budget>,
    /// Pods whose binding is in flight, to requeue if it fails.
    binding: HashMap<String, QueuedPod>,
    /// Keys seen since the current relist of pods began.
    pods_listing: Option<HashSet<String>>,
    /// Names seen since the current relist of nodes began.
    nodes_listing: Option<HashSet<String>>,
}

fn responsible(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).is_none_or(|n| n.is_empty() || n == SCHEDULER_NAME)
}

fn terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// Drops what the scheduler never reads from a pod before it is kept: the scheduler holds every
/// pod in the cluster and deep-copies each one it assumes. Managed fields are most of a pod's
/// bytes; of the containers only name, image (image locality), resources, ports (host ports) and
/// restart policy (sidecars) count; container statuses and annotations are not read. The
/// vectors kept are rebuilt or shrunk to their length: serde grows a vector's capacity in steps
/// of four and more, and four `Container`s are 8 KiB.
pub fn slim(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    if let Some(owners) = pod.metadata.owner_references.as_mut() {
        owners.shrink_to_fit();
    }
    if let Some(spec) = pod.spec.as_mut() {
        let keep = |c: &mut Container| Container {
            name: std::mem::take(&mut c.name),
            image: c.image.take(),
            resources: c.resources.take(),
            ports: c.ports.take(),
            restart_policy: c.restart_policy.take(),
            ..Container::default()
        };
        let mut containers = Vec::with_capacity(spec.containers.len());
        containers.extend(spec.containers.iter_mut().map(keep));
        spec.containers = containers;
        if let Some(init) = spec.init_containers.as_mut() {
            let mut kept = Vec::with_capacity(init.len());
            kept.extend(init.iter_mut().map(keep));
            *init = kept;
        }
        spec.ephemeral_containers = None;
        if let Some(tolerations) = spec.tolerations.as_mut() {
            tolerations.shrink_to_fit();
        }
    }
    if let Some(status) = pod.status.as_mut() {
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
        if let Some(conditions) = status.conditions.as_mut() {
            conditions.shrink_to_fit();
        }
    }
}

/// Whether `arrived`, a pod newly placed on a node, can make `waiting` schedulable (upstream's
/// queueing hints for an assigned pod being added): it can satisfy one of its required pod
/// affinity terms, or count towards one of its topology spread constraints (raising the least
/// populated domain). It never helps a pod that failed on resources, ports or anti-affinity.
fn may_be_helped_by(waiting: &PodInfo, arrived: &PodInfo, namespaces: &crate::podinfo::NamespaceLabels) -> bool {
    waiting.required_affinity.iter().any(|term| term.matches(arrived, namespaces))
        || (waiting.namespace == arrived.namespace
            && waiting.spread.iter().any(|c| c.hard && c.selector.matches_btree(&arrived.labels)))
}

/// What is kept of a bound pod once its requests, host ports, labels and affinity terms are
/// parsed into its [`PodInfo`]: its identity (preemption deletes it by name and UID and records
/// an event on it), deletion timestamp, node and phase.
fn bound_only(pod: &mut Pod) {
    let meta = &mut pod.metadata;
    meta.labels = None;
    meta.owner_references = None;
    meta.generate_name = None;
    meta.finalizers = None;
    let node_name = pod.spec.as_mut().and_then(|s| s.node_name.take());
    pod.spec = Some(PodSpec { node_name, ..PodSpec::default() });
    let phase = pod.status.as_mut().and_then(|s| s.phase.take());
    pod.status = phase.map(|phase| PodStatus { phase: Some(phase), ..PodStatus::default() });
}

impl State {
    /// A pod was added or changed. Returns whether pods may have become schedulable.
    pub fn apply_pod(&mut self, mut pod: Pod) -> bool {
        slim(&mut pod);
        if let Some(seen) = self.pods_listing.as_mut() {
            seen.insert(pod_key(&pod));
        }
        let mut info = PodInfo::new(Arc::new(pod));
        if let Some(spec) = info.pod.spec.as_ref()
            && spec.priority.is_none()
            && let Some(value) = spec.priority_class_name.as_ref().and_then(|c| self.priority_classes.get(c))
        {
            info.priority = *value;
        }
        // A bound pod's requests, host ports, labels and affinity terms are parsed now; the rest
        // matters only while a pod waits to be placed.
        if info.node_name().is_some()
            && let Some(pod) = Arc::get_mut(&mut info.pod)
        {
            bound_only(pod);
        }
        let info = Arc::new(info);
        let key = info.key.clone();
        if terminal(&info.pod) {
            self.queue.delete(&key);
            self.nominations.remove(&key);
            return self.cache.remove_pod(&key);
        }
        if info.node_name().is_some() {
            self.queue.delete(&key);
            self.nominations.remove(&key);
            let arrived = self.cache.node_of(&key).is_none() || self.cache.is_assumed(&key);
            if arrived {
                let namespaces = self.cache.namespace_labels();
                self.queue.move_unschedulable_where(|waiting| may_be_helped_by(waiting, &info, namespaces));
            }
            self.cache.apply_pod(info);
            return false;
        }
        if self.cache.is_assumed(&key) {
            // A stale version from before our binding; the bound one is on its way.
            return false;
        }
        let mut freed = false;
        if self.cache.node_of(&key).is_some() {
            // Same name, new incarnation (deleted and re-created while we were not watching).
            freed = self.cache.remove_pod(&key);
        }
        if let Some(qp) = self.binding.get_mut(&key) {
            qp.info = info;
            return freed;
        }
        if responsible(&info.pod) && info.pod.metadata.deletion_timestamp.is_none() {
            let nominated = info.pod.status.as_ref().and_then(|s| s.nominated_node_name.clone());
            self.nominations.set(&info, nominated.as_deref());
            self.queue.add_or_update(info);
        } else {
            self.nominations.remove(&key);
            self.queue.delete(&key);
        }
        freed
    }

    /// A pod was deleted. Returns whether pods may have become schedulable.
    pub fn delete_pod(&mut self, key: &str) -> bool {
        self.queue.delete(key);
        self.nominations.remove(key);
        self.cache.remove_pod(key)
    }

    /// A node was added or changed. Returns whether pods may have become schedulable.
    pub fn apply_node(&mut self, mut node: Node) -> bool {
        node.metadata.managed_fields = None;
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(seen) = self.nodes_listing.as_mut() {
            seen.insert(name);
        }
        self.cache.apply_node(Arc::new(node))
    }

    /// A node was deleted.
    pub fn delete_node(&mut self, name: &str) {
        self.cache.delete_node(name);
    }

    /// A relist of pods begins.
    pub fn pods_relist_started(&mut self) {
        self.pods_listing = Some(HashSet::new());
    }

    /// A relist of pods ended: pods not listed were deleted while we were not watching.
    pub fn pods_relist_done(&mut self) -> bool {
        let Some(seen) = self.pods_listing.take() else { return false };
        let mut known: HashSet<String> = self.cache.pod_keys().into_iter().collect();
        known.extend(self.queue.keys());
        let mut freed = false;
        for key in known.difference(&seen) {
            if !self.binding.contains_key(key) {
                freed |= self.delete_pod(key);
            }
        }
        freed
    }

    /// A relist of nodes begins.
    pub fn nodes_relist_started(&mut self) {
        self.nodes_listing = Some(HashSet::new());
    }

    /// A relist of nodes ended: nodes not listed are gone.
    pub fn nodes_relist_done(&mut self) {
        let Some(seen) = self.nodes_listing.take() else { return };
        let gone: Vec<String> = self.cache.node_names().into_iter().filter(|n| !seen.contains(n)).collect();
        for name in gone {
            self.delete_node(&name);
        }
    }

    /// One scheduling cycle for a popped pod.
    fn schedule_one(&mut self, qp: QueuedPod) -> Outcome {
        let info = qp.info.clone();
        match self.framework.schedule(&info, &self.cache, &self.nominations) {
            Ok(placement) => {
                let mut pod = (*info.pod).clone();
                pod.spec.get_or_insert_default().node_name = Some(placement.node.clone());
                let assumed = PodInfo { pod: Arc::new(pod), ..(*info).clone() };
                self.cache.assume(Arc::new(assumed));
                tracing::debug!(pod = %info.key, node = %placement.node, evaluated = placement.evaluated,
                    feasible = placement.feasible, "assumed");
                self.binding.insert(info.key.clone(), qp);
                Outcome::Bind { pod: info.pod.clone(), node: placement.node }
            }
            Err(diagnosis) => {
                let mut message = diagnosis.message();
                let reason = if diagnosis.num_nodes == 0 { "SchedulerError" } else { "Unschedulable" };
                let mut preempt = None;
                if diagnosis.num_nodes > 0 {
                    let nominated = self.nominations.node_of(&info.key);
                    let post = match preemption::ineligible(&info, &self.cache, nominated) {
                        Some(why) => Err(format!("preemption: {why}")),
                        None => {
                            let budgets: Vec<preemption::Budget> = self.budgets.values().cloned().collect();
                            preemption::find(&info, &self.cache, &diagnosis.per_node, &budgets)
                        }
                    };
                    match post {
                        Ok(candidate) => {
                            self.nominations.set(&info, Some(&candidate.node));
                            preempt = Some(candidate);
                        }
                        Err(why) => message = format!("{message} {why}"),
                    }
                }
                tracing::info!(pod = %info.key, %message, preempting = ?preempt.as_ref().map(|c| &c.node), "unschedulable");
                self.queue.add_unschedulable(qp);
                Outcome::Failed { pod: info.pod.clone(), reason, message, preempt }
            }
        }
    }

    /// The binding of `key` finished; on failure the assumption is dropped and the pod retried.
    fn bind_finished(&mut self, key: &str, retry: Option<bool>) -> bool {
        let qp = self.binding.remove(key);
        let Some(retry) = retry else { return false };
        let freed = self.cache.forget(key);
        if freed {
            self.queue.move_all_unschedulable();
        }
        if let (true, Some(qp)) = (retry, qp) {
            self.queue.add_backoff(qp);
        }
        true
    }
}

enum Outcome {
    Bind { pod: Arc<Pod>, node: String },
    Failed { pod: Arc<Pod>, reason: &'static str, message: String, preempt: Option<Candidate> },
}

/// What must be listed before the first scheduling cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Informer {
    /// Nodes.
    Nodes,
    /// Pods.
    Pods,
    /// PriorityClasses.
    PriorityClasses,
    /// Namespaces (their labels decide affinity terms with a `namespaceSelector`).
    Namespaces,
}

/// How many [`Informer`]s there are.
const INFORMERS: usize = Informer::Namespaces as usize + 1;

/// The scheduler: shared state, a wake-up for the loop, and the binder.
#[derive(Debug)]
pub struct Scheduler {
    state: Mutex<State>,
    wake: Notify,
    binder: Binder,
    /// Which informers have listed once.
    synced: watch::Sender<[bool; INFORMERS]>,
}

impl Scheduler {
    /// A scheduler writing through `binder`.
    pub fn new(binder: Binder) -> Scheduler {
        Scheduler {
            state: Mutex::default(),
            wake: Notify::new(),
            binder,
            synced: watch::Sender::new([false; INFORMERS]),
        }
    }

    /// Locks the state (a poisoned lock is still usable: every update leaves it consistent).
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a change under the lock; moves unschedulable pods and wakes the loop as needed.
    pub fn update(&self, f: impl FnOnce(&mut State) -> bool) {
        let mut st = self.state();
        if f(&mut st) {
            st.queue.move_all_unschedulable();
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Marks an informer as listed.
    pub fn mark_synced(&self, informer: Informer) {
        self.synced.send_modify(|s| s[informer as usize] = true);
    }

    /// Moves back-off expiries and long-waiting unschedulable pods to the active queue, every second.
    pub async fn flush_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let moved = self.state().queue.flush();
            if moved > 0 {
                self.wake.notify_one();
            }
        }
    }

    /// The scheduling loop; runs until dropped.
    pub async fn schedule_loop(self: Arc<Self>) {
        let mut rx = self.synced.subscribe();
        if rx.wait_for(|s| s.iter().all(|done| *done)).await.is_err() {
            return;
        }
        tracing::info!("caches synced; scheduling");
        let slots = Arc::new(Semaphore::new(BIND_CONCURRENCY));
        let event_slots = Arc::new(Semaphore::new(EVENT_CONCURRENCY));
        let mut tasks = JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            let Ok(permit) = slots.clone().acquire_owned().await else { return };
            let outcome = {
                let mut st = self.state();
                st.queue.pop().map(|qp| st.schedule_one(qp))
            };
            let Some(outcome) = outcome else {
                drop(permit);
                let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
                continue;
            };
            let this = self.clone();
            match outcome {
                Outcome::Bind { pod, node } => {
                    let event_slots = event_slots.clone();
                    tasks.spawn(async move {
                        let key = pod_key(&pod);
                        let result = this.binder.bind(&pod, &node).await;
                        let retry = match &result {
                            Ok(()) => None,
                            Err(e) => {
                                tracing::warn!(pod = %key, node = %node, error = %e, "binding failed");
                                Some(!e.is_final())
                            }
                        };
                        let wake = this.state().bind_finished(&key, retry);
                        if wake {
                            this.wake.notify_one();
                        }
                        drop(permit);
                        if result.is_ok()
                            && let Ok(_event_permit) = event_slots.acquire().await
                        {
                            this.binder.record_scheduled(&pod, &node).await;
                        }
                    });
                }
                Outcome::Failed { pod, reason, message, preempt } => {
                    tasks.spawn(async move {
                        let nominated = preempt.as_ref().map(|c| c.node.as_str());
                        if let Some(c) = &preempt {
                            let victims: Vec<Arc<Pod>> = c.victims.iter().map(|v| v.pod.clone()).collect();
                            this.binder.preempt(&pod, &c.node, &victims).await;
                        }
                        this.binder.record_failure(&pod, reason, &message, nominated).await;
                        drop(permit);
                    });
                }
            }
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_bound_pod_is_kept_as_its_parsed_info_and_its_identity() {
        let mut st = State::default();
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
        .unwrap();
        st.apply_node(node);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default", "uid": "u1", "resourceVersion": "7",
                "labels": {"app": "web"}, "generateName": "web-",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs", "controller": true}],
                "managedFields": [{"manager": "m"}]},
            "spec": {"nodeName": "n1", "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "500m"}},
                    "ports": [{"containerPort": 80, "hostPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 0}]}
        }))
        .unwrap();
        st.apply_pod(pod);

        let n1 = st.cache.node("n1").unwrap();
        let info = &n1.pods["default/web-1"];
        // What scheduling reads was parsed before the object was cut down …
        assert_eq!(n1.requested.milli_cpu, 500);
        assert_eq!(n1.used_ports.len(), 1);
        assert_eq!(info.labels.get("app").map(String::as_str), Some("web"));
        // … and the object keeps only what preemption and the cache read.
        let kept = &info.pod;
        assert_eq!(
            (kept.metadata.name.as_deref(), kept.metadata.uid.as_deref(), kept.metadata.resource_version.as_deref()),
            (Some("web-1"), Some("u1"), Some("7"))
        );
        assert_eq!(info.node_name(), Some("n1"));
        assert_eq!(kept.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running"));
        let spec = kept.spec.as_ref().unwrap();
        assert!(spec.containers.is_empty() && spec.tolerations.is_none());
        assert!(kept.metadata.labels.is_none() && kept.metadata.owner_references.is_none());
        assert!(kept.metadata.managed_fields.is_none());
        assert!(kept.status.as_ref().unwrap().conditions.is_none());
    }
}
