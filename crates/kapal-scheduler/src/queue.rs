//! The scheduling queue (upstream `PriorityQueue`): an active queue ordered by priority then
//! enqueue order, a back-off queue, an unschedulable pool, and a holding area for gated pods.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::podinfo::PodInfo;

/// `podInitialBackoffSeconds`.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// `podMaxBackoffSeconds`.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// `podMaxInUnschedulablePodsDuration`.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

/// Back-off after `attempts` failed attempts: 1s·2^(n−1), at most 10s.
pub fn backoff(attempts: u32) -> Duration {
    if attempts == 0 {
        return Duration::ZERO;
    }
    let shift = (attempts - 1).min(16);
    INITIAL_BACKOFF.saturating_mul(1u32 << shift).min(MAX_BACKOFF)
}

/// Where a queued pod waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Ready to be scheduled.
    Active,
    /// Waiting out its back-off.
    Backoff,
    /// Failed; waits for a cluster event (or 5 minutes).
    Unschedulable,
    /// Has scheduling gates.
    Gated,
}

/// A pod in the queue with its attempt history.
#[derive(Debug, Clone)]
pub struct QueuedPod {
    /// The pod.
    pub info: Arc<PodInfo>,
    /// Scheduling attempts so far.
    pub attempts: u32,
    /// When the pod first entered the queue.
    pub first_seen: Instant,
    /// When the last attempt failed.
    pub last_failure: Option<Instant>,
    place: Place,
    /// Bumped whenever the pod moves, to invalidate old heap entries.
    generation: u64,
}

impl QueuedPod {
    fn backoff_expiry(&self) -> Option<Instant> {
        self.last_failure.map(|t| t + backoff(self.attempts))
    }
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveEntry {
    priority: i32,
    seq: u64,
    key: String,
    generation: u64,
}

impl Ord for ActiveEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority.cmp(&other.priority).then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The scheduling queue. Time comes from `tokio::time`, so tests can pause it.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    pods: HashMap<String, QueuedPod>,
    active: BinaryHeap<ActiveEntry>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    unschedulable_since: HashMap<String, Instant>,
    seq: u64,
    generation: u64,
}

fn gated(info: &PodInfo) -> bool {
    info.pod.spec.as_ref().and_then(|s| s.scheduling_gates.as_ref()).is_some_and(|g| !g.is_empty())
}

impl SchedulingQueue {
    /// Adds a new pending pod, or updates one already queued. An update that changes the pod's
    /// spec or labels moves it out of the unschedulable pool (it may fit now).
    pub fn add_or_update(&mut self, info: Arc<PodInfo>) {
        let now = Instant::now();
        let key = info.key.clone();
        match self.pods.get_mut(&key) {
            None => {
                let qp = QueuedPod {
                    info: info.clone(),
                    attempts: 0,
                    first_seen: now,
                    last_failure: None,
                    place: Place::Gated,
                    generation: 0,
                };
                self.pods.insert(key.clone(), qp);
                if gated(&info) {
                    return;
                }
                self.move_to_active(&key);
            }
            Some(qp) => {
                let changed =
                    qp.info.pod.spec != info.pod.spec || qp.info.pod.metadata.labels != info.pod.metadata.labels;
                qp.info = info.clone();
                let place = qp.place;
                if gated(&info) {
                    if place != Place::Gated {
                        self.set_place(&key, Place::Gated);
                    }
                    return;
                }
                match place {
                    Place::Gated => self.move_to_active(&key),
                    Place::Unschedulable if changed => self.move_to_backoff_or_active(&key, now),
                    _ => {}
                }
            }
        }
    }

    /// Removes a pod (deleted, bound elsewhere, or handed to another scheduler).
    pub fn delete(&mut self, key: &str) -> Option<QueuedPod> {
        self.unschedulable_since.remove(key);
        self.pods.remove(key)
    }

    /// Whether the queue holds `key` anywhere.
    pub fn contains(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// Where a pod waits.
    pub fn place(&self, key: &str) -> Option<Place> {
        self.pods.get(key).map(|p| p.place)
    }

    /// Keys of every queued pod.
    pub fn keys(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    /// Number of pods in the queue, wherever they wait.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Takes the highest-priority, earliest-enqueued active pod, counting an attempt.
    pub fn pop(&mut self) -> Option<QueuedPod> {
        while let Some(entry) = self.active.pop() {
            let live =
                self.pods.get(&entry.key).is_some_and(|p| p.place == Place::Active && p.generation == entry.generation);
            if live && let Some(mut qp) = self.pods.remove(&entry.key) {
                qp.attempts += 1;
                return Some(qp);
            }
        }
        None
    }

    /// Returns a pod that failed to fit: it waits in the unschedulable pool.
    pub fn add_unschedulable(&mut self, mut qp: QueuedPod) {
        let now = Instant::now();
        qp.last_failure = Some(now);
        let key = qp.info.key.clone();
        self.pods.insert(key.clone(), qp);
        self.unschedulable_since.insert(key.clone(), now);
        self.set_place(&key, Place::Unschedulable);
    }

    /// Returns a pod whose attempt failed for another reason (an API error): it backs off.
    pub fn add_backoff(&mut self, mut qp: QueuedPod) {
        let now = Instant::now();
        qp.last_failure = Some(now);
        let key = qp.info.key.clone();
        self.pods.insert(key.clone(), qp);
        self.move_to_backoff_or_active(&key, now);
    }

    /// A cluster event that may make pods fit: every unschedulable pod moves to the back-off
    /// queue, or straight to the active queue when its back-off is over.
    pub fn move_all_unschedulable(&mut self) {
        let now = Instant::now();
        let keys: Vec<String> = self.unschedulable_since.keys().cloned().collect();
        for key in keys {
            self.move_to_backoff_or_active(&key, now);
        }
    }

    /// A cluster event that can only help some pods: the unschedulable ones `may_help` picks
    /// move as in [`SchedulingQueue::move_all_unschedulable`]; the rest stay.
    pub fn move_unschedulable_where(&mut self, may_help: impl Fn(&PodInfo) -> bool) {
        let now = Instant::now();
        let keys: Vec<String> = self
            .unschedulable_since
            .keys()
            .filter(|k| self.pods.get(*k).is_some_and(|qp| may_help(&qp.info)))
            .cloned()
            .collect();
        for key in keys {
            self.move_to_backoff_or_active(&key, now);
        }
    }

    /// Periodic work: back-off expiries into the active queue, and pods that waited more than
    /// five minutes in the unschedulable pool back into circulation. Returns how many became active.
    pub fn flush(&mut self) -> usize {
        let now = Instant::now();
        let stale: Vec<String> = self
            .unschedulable_since
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= MAX_UNSCHEDULABLE)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.move_to_backoff_or_active(&key, now);
        }
        let mut moved = 0;
        while let Some(Reverse((at, generation, _))) = self.backoff.peek() {
            if *at > now {
                break;
            }
            let generation = *generation;
            let Some(Reverse((_, _, key))) = self.backoff.pop() else { break };
            if self.pods.get(&key).is_some_and(|p| p.place == Place::Backoff && p.generation == generation) {
                self.move_to_active(&key);
                moved += 1;
            }
        }
        moved
    }

    /// Whether any pod is ready to pop.
    pub fn has_active(&self) -> bool {
        self.pods.values().any(|p| p.place == Place::Active)
    }

    fn move_to_backoff_or_active(&mut self, key: &str, now: Instant) {
        let expiry = self.pods.get(key).and_then(QueuedPod::backoff_expiry);
        match expiry {
            Some(at) if at > now => {
                let generation = self.set_place(key, Place::Backoff);
                self.backoff.push(Reverse((at, generation, key.to_string())));
            }
            _ => self.move_to_active(key),
        }
    }

    fn move_to_active(&mut self, key: &str) {
        let generation = self.set_place(key, Place::Active);
        if let Some(qp) = self.pods.get(key) {
            self.seq += 1;
            self.active.push(ActiveEntry {
                priority: qp.info.priority,
                seq: self.seq,
                key: key.to_string(),
                generation,
            });
        }
    }

    fn set_place(&mut self, key: &str, place: Place) -> u64 {
        self.generation += 1;
        let generation = self.generation;
        if place != Place::Unschedulable {
            self.unschedulable_since.remove(key);
        }
        if let Some(qp) = self.pods.get_mut(key) {
            qp.place = place;
            qp.generation = generation;
        }
        generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, priority: i32) -> Arc<PodInfo> {
        pod_with(name, priority, json!({}))
    }

    fn pod_with(name: &str, priority: i32, extra: serde_json::Value) -> Arc<PodInfo> {
        let mut spec = json!({"priority": priority, "containers": [{"name": "c"}]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let p = json!({"metadata": {"name": name, "namespace": "ns"}, "spec": spec});
        Arc::new(PodInfo::new(Arc::new(serde_json::from_value(p).unwrap())))
    }

    fn popped_names(q: &mut SchedulingQueue) -> Vec<String> {
        std::iter::from_fn(|| q.pop()).map(|p| p.info.key.clone()).collect()
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_ten() {
        let secs: Vec<u64> = (1..=6).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn active_queue_orders_by_priority_then_arrival() {
        let mut q = SchedulingQueue::default();
        q.add_or_update(pod("low-1", 0));
        q.add_or_update(pod("high", 100));
        q.add_or_update(pod("low-2", 0));
        q.add_or_update(pod("mid", 50));
        assert_eq!(popped_names(&mut q), ["ns/high", "ns/mid", "ns/low-1", "ns/low-2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pods_wait_for_an_event_then_honour_backoff() {
        let mut q = SchedulingQueue::default();
        q.add_or_update(pod("a", 0));
        let a = q.pop().unwrap();
        q.add_unschedulable(a);
        q.flush();
        assert!(q.pop().is_none(), "an unschedulable pod stays put without an event");
        tokio::time::advance(Duration::from_millis(500)).await;
        q.move_all_unschedulable();
        assert_eq!(q.place("ns/a"), Some(Place::Backoff));
        assert_eq!(q.flush(), 0);
        assert!(q.pop().is_none(), "still backing off after 0.5 s of a 1 s back-off");
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(q.flush(), 1);
        let a = q.pop().unwrap();
        assert_eq!(a.attempts, 2);
        // Second failure: 2 s back-off.
        q.add_unschedulable(a);
        q.move_all_unschedulable();
        tokio::time::advance(Duration::from_millis(1900)).await;
        q.flush();
        assert!(q.pop().is_none());
        tokio::time::advance(Duration::from_millis(200)).await;
        q.flush();
        assert!(q.pop().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pods_retry_after_five_minutes_regardless() {
        let mut q = SchedulingQueue::default();
        q.add_or_update(pod("a", 0));
        let a = q.pop().unwrap();
        q.add_unschedulable(a);
        tokio::time::advance(Duration::from_secs(299)).await;
        q.flush();
        assert!(q.pop().is_none());
        tokio::time::advance(Duration::from_secs(2)).await;
        q.flush();
        assert!(q.pop().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn errors_back_off_without_an_event() {
        let mut q = SchedulingQueue::default();
        q.add_or_update(pod("a", 0));
        let a = q.pop().unwrap();
        q.add_backoff(a);
        assert!(q.pop().is_none());
        tokio::time::advance(Duration::from_secs(1)).await;
        q.flush();
        assert!(q.pop().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn gated_pods_wait_until_their_gates_are_removed() {
        let mut q = SchedulingQueue::default();
        q.add_or_update(pod_with("g", 0, json!({"schedulingGates": [{"name": "wait"}]})));
        assert_eq!(q.place("ns/g"), Some(Place::Gated));
        assert!(q.pop().is_none());
        q.add_or_update(pod("g", 0));
        assert_eq!(q.pop().unwrap().info.key, "ns/g");
    }

    #[tokio::test(start_paused = true)]
    async fn spec_updates_move_unschedulable_pods_and_deletes_remove_them() {
        let mut q = SchedulingQueue::default();
        q.add_or_update(pod("a", 0));
        q.add_or_update(pod("b", 0));
        let a = q.pop().unwrap();
        q.add_unschedulable(a);
        // A status-only update (same spec) leaves it in the pool.
        q.add_or_update(pod("a", 0));
        assert_eq!(q.place("ns/a"), Some(Place::Unschedulable));
        tokio::time::advance(Duration::from_secs(2)).await;
        q.add_or_update(pod_with("a", 0, json!({"nodeSelector": {"x": "y"}})));
        assert_eq!(q.place("ns/a"), Some(Place::Active));
        q.delete("ns/b");
        assert_eq!(popped_names(&mut q), ["ns/a"]);
    }
}
