//! One watch of every pod, shared by the controllers that read pods — kube-controller-manager's
//! shared pod informer. Every pod in the cluster is held once, slimmed to what those controllers
//! read, and indexed by its controller's uid so that a ReplicaSet finds its pods without looking
//! at the other fifty thousand.
//!
//! Reads from a cache can lag behind writes. A controller that must not act twice on its own
//! writes (the ReplicaSet controller creating pods) notes the `resourceVersion` of its last
//! write and waits with [`PodCache::caught_up`] until the cache has seen that revision. Kapal's
//! resourceVersions are the store's revisions, one increasing sequence for all objects, and the
//! pod watch delivers pod writes in that order, so once the cache has seen a revision it has seen
//! every pod write up to it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodSpec, PodStatus};
use kube::api::Api;
use kube::runtime::watcher::{self, Event, watcher};
use kube::runtime::{WatchStreamExt, reflector::ObjectRef};
use kube::{Client, ResourceExt};
use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;

use crate::podtemplate;

/// The pod annotations kept in the cache (the rest, `kubectl.kubernetes.io/last-applied-configuration`
/// among them, can be large and nobody here reads them).
const KEPT_ANNOTATIONS: [&str; 1] = [crate::replicaset::DELETION_COST];
/// Changes a subscriber may fall behind before it is told to resync. The channel keeps this many
/// changes (with the pod versions they name) alive whether or not anyone lags, so it is small.
const FEED_BUFFER: usize = 4 * 1024;

/// A change to one pod: `old` is `None` for a new pod, `new` is `None` for a deleted one.
#[derive(Debug)]
pub struct Change {
    pub old: Option<Arc<Pod>>,
    pub new: Option<Arc<Pod>>,
}

/// What subscribers receive.
#[derive(Debug, Clone)]
pub enum Feed {
    /// One pod changed.
    Changed(Arc<Change>),
    /// The cache was replaced by a relist (or the subscriber fell behind): look at everything.
    Resync,
}

type Key = (String, String);

#[derive(Default)]
struct State {
    pods: HashMap<Key, Arc<Pod>>,
    /// Controller uid → its pods.
    by_controller: HashMap<String, HashSet<Key>>,
    /// Namespace → pods without a controller.
    orphans: HashMap<String, HashSet<String>>,
}

impl State {
    fn insert(&mut self, pod: Arc<Pod>) -> Option<Arc<Pod>> {
        let key = key_of(&pod);
        let old = self.remove(&key);
        match podtemplate::controller_of(&pod.metadata) {
            Some(owner) => self.by_controller.entry(owner.uid.clone()).or_default().insert(key.clone()),
            None => self.orphans.entry(key.0.clone()).or_default().insert(key.1.clone()),
        };
        self.pods.insert(key, pod);
        old
    }

    fn remove(&mut self, key: &Key) -> Option<Arc<Pod>> {
        let old = self.pods.remove(key)?;
        match podtemplate::controller_of(&old.metadata) {
            Some(owner) => {
                if let Some(set) = self.by_controller.get_mut(&owner.uid) {
                    set.remove(key);
                    if set.is_empty() {
                        self.by_controller.remove(&owner.uid);
                    }
                }
            }
            None => {
                if let Some(set) = self.orphans.get_mut(&key.0) {
                    set.remove(&key.1);
                    if set.is_empty() {
                        self.orphans.remove(&key.0);
                    }
                }
            }
        }
        Some(old)
    }
}

/// The shared pod cache. [`PodCache::start`] spawns its watch; a default one stays empty.
pub struct PodCache {
    state: RwLock<State>,
    feed: broadcast::Sender<Feed>,
    /// The highest resourceVersion seen; 0 until the first list is in.
    revision: watch::Sender<u64>,
    /// The watch feeding the cache, stopped when the cache is dropped.
    task: Mutex<Option<AbortHandle>>,
}

impl Drop for PodCache {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

impl Default for PodCache {
    fn default() -> PodCache {
        PodCache {
            state: RwLock::default(),
            feed: broadcast::channel(FEED_BUFFER).0,
            revision: watch::channel(0).0,
            task: Mutex::default(),
        }
    }
}

impl PodCache {
    /// Starts watching every pod; the cache fills in the background.
    pub fn start(client: Client) -> Arc<PodCache> {
        let cache = Arc::new(PodCache::default());
        let task = tokio::spawn(follow(Arc::downgrade(&cache), Api::all(client)));
        *cache.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        cache
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces everything with a fresh list.
    fn replace(&self, pods: Vec<Arc<Pod>>) {
        let top = pods.iter().map(|p| revision_of(p)).max().unwrap_or(0);
        {
            let mut state = self.state_mut();
            *state = State::default();
            for pod in pods {
                state.insert(pod);
            }
        }
        // A list is consistent as of its own revision, which may be above every pod's.
        self.advance(top.max(1));
        let _ = self.feed.send(Feed::Resync);
    }

    fn apply(&self, pod: Arc<Pod>) {
        let revision = revision_of(&pod);
        let old = self.state_mut().insert(pod.clone());
        self.advance(revision);
        let _ = self.feed.send(Feed::Changed(Arc::new(Change { old, new: Some(pod) })));
    }

    fn delete(&self, pod: &Pod) {
        let revision = revision_of(pod);
        let old = self.state_mut().remove(&key_of(pod));
        self.advance(revision);
        if let Some(old) = old {
            let _ = self.feed.send(Feed::Changed(Arc::new(Change { old: Some(old), new: None })));
        }
    }

    fn advance(&self, revision: u64) {
        self.revision.send_if_modified(|seen| {
            let newer = revision > *seen;
            if newer {
                *seen = revision;
            }
            newer
        });
    }

    /// Subscribes to changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Feed> {
        self.feed.subscribe()
    }

    /// Waits until the first list is in.
    pub async fn synced(&self) {
        let mut seen = self.revision.subscribe();
        let _ = seen.wait_for(|r| *r > 0).await;
    }

    /// Waits (at most `limit`) until the cache has seen `revision`; returns whether it has.
    pub async fn caught_up(&self, revision: u64, limit: Duration) -> bool {
        let mut seen = self.revision.subscribe();
        tokio::time::timeout(limit, seen.wait_for(|r| *r >= revision)).await.is_ok_and(|r| r.is_ok())
    }

    /// A pod by namespace and name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.state().pods.get(&(namespace.to_string(), name.to_string())).cloned()
    }

    /// The pods whose controller has this uid.
    pub fn controlled_by(&self, uid: &str) -> Vec<Arc<Pod>> {
        let state = self.state();
        let Some(keys) = state.by_controller.get(uid) else { return Vec::new() };
        keys.iter().filter_map(|k| state.pods.get(k).cloned()).collect()
    }

    /// The pods in a namespace that have no controller.
    pub fn orphans(&self, namespace: &str) -> Vec<Arc<Pod>> {
        let state = self.state();
        let Some(names) = state.orphans.get(namespace) else { return Vec::new() };
        names.iter().filter_map(|n| state.pods.get(&(namespace.to_string(), n.clone())).cloned()).collect()
    }

    /// Every pod (for resyncs and scans).
    pub fn all(&self) -> Vec<Arc<Pod>> {
        self.state().pods.values().cloned().collect()
    }

    /// The number of pods held.
    pub fn len(&self) -> usize {
        self.state().pods.len()
    }

    /// Whether no pod is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Feeds the cache from a watch of every pod, for as long as the cache exists.
async fn follow(cache: Weak<PodCache>, api: Api<Pod>) {
    let mut listing: Vec<Arc<Pod>> = Vec::new();
    let mut events =
        std::pin::pin!(watcher(api, watcher::Config::default().any_semantic()).default_backoff().modify(slim));
    while let Some(event) = events.next().await {
        let Some(cache) = cache.upgrade() else { return };
        match event {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(pod)) => listing.push(Arc::new(pod)),
            Ok(Event::InitDone) => cache.replace(std::mem::take(&mut listing)),
            Ok(Event::Apply(pod)) => cache.apply(Arc::new(pod)),
            Ok(Event::Delete(pod)) => cache.delete(&pod),
            Err(error) => tracing::debug!(%error, "pod cache watch failed; retrying"),
        }
    }
}

/// A resourceVersion as the store revision it is (0 if it is not a number).
pub fn revision_of(pod: &Pod) -> u64 {
    pod.metadata.resource_version.as_deref().and_then(|rv| rv.parse().ok()).unwrap_or(0)
}

/// The ReplicaSet-style object reference of a pod's controller, if its controller is of `kind`.
pub fn controller_ref_of<K>(pod: &Pod, kind: &str) -> Option<ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()>,
{
    let owner = podtemplate::controller_of(&pod.metadata).filter(|o| o.kind == kind)?;
    Some(ObjectRef::new(&owner.name).within(&pod.namespace().unwrap_or_default()))
}

fn key_of(pod: &Pod) -> Key {
    (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default())
}

/// A pod as the cache keeps it: metadata without managedFields and with only the annotations
/// read here; of the spec, the node and tolerations; of the status, phase, the `Ready` condition
/// and the highest restart count of its containers. Every vector is exactly as long as what it
/// holds (the cache holds every pod in the cluster).
pub fn slim(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    if let Some(annotations) = pod.metadata.annotations.as_mut() {
        annotations.retain(|k, _| KEPT_ANNOTATIONS.contains(&k.as_str()));
        if annotations.is_empty() {
            pod.metadata.annotations = None;
        }
    }
    if let Some(owners) = pod.metadata.owner_references.as_mut() {
        owners.shrink_to_fit();
    }
    if let Some(finalizers) = pod.metadata.finalizers.as_mut() {
        finalizers.shrink_to_fit();
    }
    if let Some(spec) = pod.spec.take() {
        let tolerations = spec.tolerations.map(|mut t| {
            t.shrink_to_fit();
            t
        });
        pod.spec = Some(PodSpec { node_name: spec.node_name, tolerations, ..PodSpec::default() });
    }
    if let Some(status) = pod.status.take() {
        // Of the container statuses only the highest restart count is read (the ReplicaSet
        // ranks pods to delete by it): kept as one status, and none while it is 0 — a
        // `ContainerStatus` is 752 bytes.
        let restarts = status.container_statuses.iter().flatten().map(|c| c.restart_count).max().unwrap_or(0);
        let containers =
            (restarts > 0).then(|| vec![ContainerStatus { restart_count: restarts, ..ContainerStatus::default() }]);
        // Of the conditions only `Ready` is read (readiness, availability, marking pods not
        // ready). A new vector: serde grows a vector's capacity in steps of four and more, and
        // `into_iter().filter().collect()` would keep that buffer.
        let ready = status.conditions.map(|cs| {
            let mut kept = Vec::with_capacity(1);
            kept.extend(cs.into_iter().filter(|c| c.type_ == "Ready"));
            kept
        });
        pod.status = Some(PodStatus {
            phase: status.phase,
            conditions: ready,
            container_statuses: containers,
            ..PodStatus::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, owner: Option<&str>, rv: u64) -> Arc<Pod> {
        let owners = owner.map(|uid| {
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": true}])
        });
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv.to_string(),
                "ownerReferences": owners, "managedFields": [{"manager": "m"}],
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                    "controller.kubernetes.io/pod-deletion-cost": "5"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                "containerStatuses": [{"name": "c", "image": "i", "imageID": "x", "ready": true, "restartCount": 2}]}
        }))
        .unwrap();
        slim(&mut pod);
        Arc::new(pod)
    }

    #[test]
    fn slim_pods_keep_what_controllers_read() {
        let p = pod("a", Some("u1"), 3);
        assert!(p.metadata.managed_fields.is_none());
        assert_eq!(p.annotations().len(), 1);
        assert_eq!(p.spec.as_ref().unwrap().node_name.as_deref(), Some("n1"));
        assert!(p.spec.as_ref().unwrap().containers.is_empty());
        let status = p.status.as_ref().unwrap();
        assert_eq!(status.container_statuses.as_ref().unwrap()[0].restart_count, 2);
        assert!(status.pod_ip.is_none());
    }

    #[test]
    fn slim_pods_keep_the_highest_restart_count_and_no_spare_capacity() {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}],
                "tolerations": [{"key": "k1", "operator": "Exists"}, {"key": "k2", "operator": "Exists"}]},
            "status": {"phase": "Running",
                "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"},
                    {"type": "Initialized", "status": "True"}],
                "containerStatuses": [{"name": "a", "image": "i", "imageID": "", "ready": true, "restartCount": 1},
                    {"name": "b", "image": "i", "imageID": "", "ready": true, "restartCount": 4}]}
        }))
        .unwrap();
        slim(&mut p);
        let (spec, status) = (p.spec.as_ref().unwrap(), p.status.as_ref().unwrap());
        let containers = status.container_statuses.as_ref().unwrap();
        assert_eq!(containers.iter().map(|c| c.restart_count).collect::<Vec<_>>(), [4]);
        let conditions = status.conditions.as_ref().unwrap();
        assert_eq!(conditions.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(), ["Ready"]);
        let tolerations = spec.tolerations.as_ref().unwrap();
        let owners = p.metadata.owner_references.as_ref().unwrap();
        assert_eq!(
            [containers.capacity(), conditions.capacity(), tolerations.capacity(), owners.capacity()],
            [1, 1, 2, 1]
        );
        // Containers that never restarted leave nothing behind.
        let mut fresh = (*pod("q", None, 1)).clone();
        fresh.status.as_mut().unwrap().container_statuses.as_mut().unwrap()[0].restart_count = 0;
        slim(&mut fresh);
        assert!(fresh.status.unwrap().container_statuses.is_none());
    }

    #[tokio::test]
    async fn pods_are_indexed_by_controller_and_orphans_by_namespace() {
        let cache = PodCache::default();
        let mut feed = cache.subscribe();
        cache.replace(vec![pod("a", Some("u1"), 3), pod("b", None, 4)]);
        assert!(matches!(feed.recv().await.unwrap(), Feed::Resync));
        cache.apply(pod("c", Some("u1"), 7));
        assert_eq!(cache.controlled_by("u1").len(), 2);
        assert_eq!(cache.orphans("ns").len(), 1);
        // Adoption moves a pod from the orphans to its controller.
        cache.apply(pod("b", Some("u2"), 8));
        assert!(cache.orphans("ns").is_empty());
        assert_eq!(cache.controlled_by("u2").len(), 1);
        cache.delete(&pod("a", Some("u1"), 9));
        assert_eq!(cache.controlled_by("u1").iter().map(|p| p.name_any()).collect::<Vec<_>>(), ["c"]);
        assert_eq!(cache.len(), 2);
        let Feed::Changed(change) = feed.recv().await.unwrap() else { panic!("expected a change") };
        assert!(change.old.is_none() && change.new.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn writers_wait_until_the_cache_saw_their_revision() {
        let cache = Arc::new(PodCache::default());
        assert!(!cache.caught_up(5, Duration::from_secs(1)).await);
        cache.replace(vec![pod("a", None, 3)]);
        assert!(cache.caught_up(3, Duration::from_secs(1)).await);
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.caught_up(10, Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        cache.apply(pod("b", None, 10));
        assert!(waiter.await.unwrap());
        // Revisions only go forward.
        cache.apply(pod("c", None, 4));
        assert_eq!(*cache.revision.borrow(), 10);
    }
}
