//! The watch cache: an in-memory mirror of the whole store, fed by one store watch.
//!
//! Gets, lists and watches are served from here; the store sees writes and the initial load.
//! The cache keeps a bounded history of recent events so that watches can resume from a
//! recent resourceVersion; older ones get 410 Gone, as from Kubernetes' own watch cache.
//! Reads that must be consistent wait until the cache has caught up with the store's revision.
//!
//! Events are not held, as upstream keeps them out of its watch cache (`DefaultWatchCacheSizes`):
//! there are a few per pod, they expire after an hour, and only `kubectl describe` and `kubectl
//! get events` read them. Their changes still pass through the feed, so watches on them work like
//! any other; gets and lists of them read the store ([`WatchCache::get_current`] and friends).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kapal_store::{EventKind, KeyValue, Revision, Store, StoreError};
use serde_json::Value;
use tokio::sync::{broadcast, watch};

/// Root of every key Kapal stores objects under.
pub const ROOT: &str = "/registry/";
/// Events kept for resuming watches, unless configured otherwise.
pub const DEFAULT_HISTORY: usize = 20_000;
/// Key prefixes whose objects the cache does not hold (see the module doc).
const UNCACHED: [&str; 1] = ["/registry/core/events/"];
/// Events a slow watcher may fall behind before it is closed (and resumes from its last RV).
const FANOUT_BUFFER: usize = 16 * 1024;

/// An object as of one revision, kept as its JSON encoding (with `metadata.resourceVersion`
/// set) so that lists and watches send it without re-encoding, plus the few fields that
/// selectors need. [`Cached::object`] decodes the rest on demand.
#[derive(Debug, Clone)]
pub struct Cached {
    pub key: Arc<str>,
    pub revision: Revision,
    pub bytes: Arc<[u8]>,
    meta: Arc<Meta>,
}

#[derive(Debug, Default)]
struct Meta {
    name: String,
    namespace: String,
    api_version: String,
    labels: serde_json::Map<String, Value>,
    deleting: bool,
}

impl Cached {
    /// Encodes an object (whose `metadata.resourceVersion` is already `revision`).
    pub fn new(key: Arc<str>, revision: Revision, object: &Value) -> Cached {
        let meta_of = |field: &str| object.get("metadata").and_then(|m| m.get(field));
        let str_of = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
        let meta = Meta {
            name: str_of(meta_of("name")),
            namespace: str_of(meta_of("namespace")),
            api_version: str_of(object.get("apiVersion")),
            labels: meta_of("labels").and_then(Value::as_object).cloned().unwrap_or_default(),
            deleting: meta_of("deletionTimestamp").is_some_and(|t| !t.is_null()),
        };
        let bytes: Arc<[u8]> = serde_json::to_vec(object).unwrap_or_default().into();
        Cached { key, revision, bytes, meta: Arc::new(meta) }
    }

    /// The decoded object.
    pub fn object(&self) -> Arc<Value> {
        Arc::new(serde_json::from_slice(&self.bytes).unwrap_or(Value::Null))
    }

    pub fn name(&self) -> &str {
        &self.meta.name
    }

    pub fn namespace(&self) -> &str {
        &self.meta.namespace
    }

    pub fn api_version(&self) -> &str {
        &self.meta.api_version
    }

    pub fn labels(&self) -> &serde_json::Map<String, Value> {
        &self.meta.labels
    }

    pub fn is_deleting(&self) -> bool {
        self.meta.deleting
    }
}

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Modified,
    Deleted,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "ADDED",
            Change::Modified => "MODIFIED",
            Change::Deleted => "DELETED",
        }
    }
}

/// One change to one key. For deletes `object` is the last state (with the delete's revision).
#[derive(Debug, Clone)]
pub struct CacheEvent {
    pub change: Change,
    pub key: Arc<str>,
    pub object: Cached,
    pub prev: Option<Cached>,
    pub revision: Revision,
}

/// Something that reacts to changes inside the cache's feed, before watchers see them
/// (the CRD registry).
pub type Hook = Box<dyn Fn(&CacheEvent) + Send + Sync>;

struct State {
    objects: BTreeMap<Arc<str>, Cached>,
    revision: Revision,
    history: VecDeque<Arc<CacheEvent>>,
    /// Watches may resume from any revision ≥ this one.
    oldest: Revision,
}

/// The cache. Create with [`WatchCache::start`].
pub struct WatchCache {
    state: RwLock<State>,
    fanout: broadcast::Sender<Arc<CacheEvent>>,
    revision: watch::Sender<Revision>,
    store: Arc<dyn Store>,
    hooks: RwLock<Vec<(String, Hook)>>,
    history: usize,
}

/// Why a watch cannot start.
#[derive(Debug)]
pub enum WatchStartError {
    /// The revision is older than the retained history.
    TooOld { requested: Revision, oldest: Revision },
}

/// A watch subscription: the events to replay, then the live feed.
pub struct Subscription {
    pub replay: Vec<Arc<CacheEvent>>,
    pub live: broadcast::Receiver<Arc<CacheEvent>>,
    /// Events at or below this revision on `live` were already replayed.
    pub after: Revision,
}

impl WatchCache {
    /// Loads the store and starts following it.
    pub async fn start(store: Arc<dyn Store>, history: usize) -> Result<Arc<WatchCache>, StoreError> {
        let (fanout, _) = broadcast::channel(FANOUT_BUFFER);
        let (revision, _) = watch::channel(0);
        let cache = Arc::new(WatchCache {
            state: RwLock::new(State { objects: BTreeMap::new(), revision: 0, history: VecDeque::new(), oldest: 0 }),
            fanout,
            revision,
            store,
            hooks: RwLock::new(Vec::new()),
            history: history.max(1),
        });
        let rev = cache.load().await?;
        let feed = cache.clone();
        tokio::spawn(async move { feed.follow(rev).await });
        Ok(cache)
    }

    /// Registers a hook for events under a key prefix, and runs it on what is cached now.
    pub fn add_hook(&self, prefix: &str, hook: Hook) {
        let existing: Vec<CacheEvent> = self
            .list(prefix)
            .into_iter()
            .map(|c| CacheEvent {
                change: Change::Added,
                key: c.key.clone(),
                revision: c.revision,
                object: c,
                prev: None,
            })
            .collect();
        for ev in &existing {
            hook(ev);
        }
        if let Ok(mut hooks) = self.hooks.write() {
            hooks.push((prefix.to_string(), hook));
        }
    }

    /// Replaces the whole cache with a fresh list of the store. Returns the list's revision.
    async fn load(&self) -> Result<Revision, StoreError> {
        let page = self.store.list(ROOT, None, 0, None).await?;
        let mut objects = BTreeMap::new();
        for kv in page.items.iter().filter(|kv| is_cached(&kv.key)) {
            if let Some(c) = decode(kv) {
                objects.insert(c.key.clone(), c);
            }
        }
        let count = objects.len();
        {
            let mut st = self.write_state();
            st.objects = objects;
            st.revision = page.revision;
            st.history.clear();
            st.oldest = page.revision;
        }
        self.revision.send_replace(page.revision);
        tracing::info!(objects = count, revision = page.revision, "watch cache loaded");
        Ok(page.revision)
    }

    async fn follow(self: Arc<Self>, mut rev: Revision) {
        'watch: loop {
            match self.store.watch(ROOT, rev).await {
                Ok(mut events) => {
                    while let Some(item) = events.next().await {
                        match item {
                            Ok(ev) => {
                                rev = ev.kv.mod_revision;
                                self.apply(ev.kind, &ev.kv);
                            }
                            // Fell behind the store's live feed: resume from its history.
                            Err(StoreError::WatchLagged) => {
                                tracing::debug!(revision = rev, "store watch lagged; resuming from history");
                                continue 'watch;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "store watch ended; reloading the cache");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "store watch failed; reloading the cache"),
            }
            // Whatever went wrong, start over from a fresh list: level-triggered, nothing missed.
            // Watchers are cut off (their history is gone) and resume or relist by themselves.
            loop {
                match self.load().await {
                    Ok(r) => {
                        rev = r;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reloading the watch cache failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            self.reset_watchers();
        }
    }

    fn reset_watchers(&self) {
        // A revision-0 Deleted event on the root key tells every watcher to stop.
        let ev = CacheEvent {
            change: Change::Deleted,
            key: Arc::from(""),
            object: Cached::new(Arc::from(""), 0, &Value::Null),
            prev: None,
            revision: 0,
        };
        let _ = self.fanout.send(Arc::new(ev));
    }

    fn apply(&self, kind: EventKind, kv: &KeyValue) {
        let Some(cached) = decode(kv) else {
            tracing::warn!(key = %kv.key, "skipping undecodable object in the store");
            return;
        };
        let event = {
            let mut st = self.write_state();
            let (change, prev) = if !is_cached(&cached.key) {
                // Not held: the store's revisions tell a new object from a changed one.
                let change = match kind {
                    EventKind::Delete => Change::Deleted,
                    _ if kv.create_revision == kv.mod_revision => Change::Added,
                    _ => Change::Modified,
                };
                (change, None)
            } else {
                let prev = st.objects.get(&cached.key).cloned();
                let change = match kind {
                    EventKind::Delete => {
                        st.objects.remove(&cached.key);
                        Change::Deleted
                    }
                    _ => {
                        st.objects.insert(cached.key.clone(), cached.clone());
                        if prev.is_some() { Change::Modified } else { Change::Added }
                    }
                };
                (change, prev)
            };
            let event = Arc::new(CacheEvent {
                change,
                key: cached.key.clone(),
                object: cached,
                prev,
                revision: kv.mod_revision,
            });
            st.revision = kv.mod_revision;
            st.history.push_back(event.clone());
            if st.history.len() > self.history
                && let Some(old) = st.history.pop_front()
            {
                st.oldest = old.revision;
            }
            event
        };
        if let Ok(hooks) = self.hooks.read() {
            for (prefix, hook) in hooks.iter() {
                if event.key.starts_with(prefix.as_str()) {
                    hook(&event);
                }
            }
        }
        let _ = self.fanout.send(event);
        self.revision.send_replace(kv.mod_revision);
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        match self.state.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        match self.state.read() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    /// The revision the cache reflects.
    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }

    /// Waits until the cache reflects at least `rev` (a write just acknowledged by the store),
    /// for at most `timeout`. Returns whether it got there.
    pub async fn wait_for(&self, rev: Revision, timeout: Duration) -> bool {
        let mut rx = self.revision.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= rev)).await.is_ok_and(|r| r.is_ok())
    }

    /// Waits until the cache has everything the store has acknowledged: a consistent read.
    pub async fn sync(&self) -> bool {
        self.wait_for(self.store.current_revision(), Duration::from_secs(3)).await
    }

    /// A held object (never one of the [`UNCACHED`] kinds; see [`WatchCache::get_current`]).
    pub fn get(&self, key: &str) -> Option<Cached> {
        self.read_state().objects.get(key).cloned()
    }

    /// The object at `key` now: from the cache if it holds such objects, else from the store.
    /// For held objects this is as fresh as the cache; call [`WatchCache::sync`] first for a
    /// consistent read.
    pub async fn get_current(&self, key: &str) -> Result<Option<Cached>, StoreError> {
        if is_cached(key) {
            return Ok(self.get(key));
        }
        Ok(self.store.get(key).await?.as_ref().and_then(decode))
    }

    /// Every object under `prefix` now, from the cache or (for objects it does not hold) from
    /// the store, with the revision the list is consistent at.
    pub async fn list_current(&self, prefix: &str) -> Result<(Vec<Cached>, Revision), StoreError> {
        if is_cached(prefix) {
            return Ok(self.list_from(prefix, None, usize::MAX));
        }
        let page = self.store.list(prefix, None, 0, None).await?;
        Ok((page.items.iter().filter_map(decode).collect(), page.revision))
    }

    /// Every object under a prefix, in key order.
    pub fn list(&self, prefix: &str) -> Vec<Cached> {
        self.list_from(prefix, None, usize::MAX).0
    }

    /// Objects under a prefix after `start_after`, at most `limit`, with the cache revision.
    pub fn list_from(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> (Vec<Cached>, Revision) {
        let st = self.read_state();
        let lower: Bound<&str> = match start_after {
            Some(s) => Bound::Excluded(s),
            None => Bound::Included(prefix),
        };
        let items = st
            .objects
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(_, v)| v.clone())
            .collect();
        (items, st.revision)
    }

    /// Calls `f` on every object under `prefix` until it returns false. Avoids cloning lists.
    pub fn scan(&self, prefix: &str, start_after: Option<&str>, mut f: impl FnMut(&Cached) -> bool) -> Revision {
        let st = self.read_state();
        let lower: Bound<&str> = match start_after {
            Some(s) => Bound::Excluded(s),
            None => Bound::Included(prefix),
        };
        for (k, v) in st.objects.range::<str, _>((lower, Bound::Unbounded)) {
            if !k.starts_with(prefix) || !f(v) {
                break;
            }
        }
        st.revision
    }

    /// Subscribes to events after `after`, with the retained events to replay first.
    pub fn subscribe(&self, after: Revision) -> Result<Subscription, WatchStartError> {
        let st = self.read_state();
        if after < st.oldest {
            return Err(WatchStartError::TooOld { requested: after, oldest: st.oldest });
        }
        let live = self.fanout.subscribe();
        let replay = st.history.iter().filter(|e| e.revision > after).cloned().collect();
        Ok(Subscription { replay, live, after: st.revision.max(after) })
    }

    /// Subscribes at the current revision, returning the current objects under `prefix`, from
    /// the store for objects the cache does not hold.
    pub async fn subscribe_with_state_current(&self, prefix: &str) -> Result<(Vec<Cached>, Subscription), StoreError> {
        if is_cached(prefix) {
            return Ok(self.subscribe_with_state(prefix));
        }
        // Subscribe first, then list: every change after the list's revision is on `live`, and
        // the ones at or below it are already in the list.
        let live = self.fanout.subscribe();
        let after = self.revision();
        let page = self.store.list(prefix, None, 0, None).await?;
        let items = page.items.iter().filter_map(decode).collect();
        Ok((items, Subscription { replay: Vec::new(), live, after: page.revision.max(after) }))
    }

    /// Subscribes at the current revision, returning the current objects under `prefix`.
    pub fn subscribe_with_state(&self, prefix: &str) -> (Vec<Cached>, Subscription) {
        let st = self.read_state();
        let live = self.fanout.subscribe();
        let items = st
            .objects
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        (items, Subscription { replay: Vec::new(), live, after: st.revision })
    }

    /// The store behind the cache.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.read_state().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether the cache holds the objects under `key` (a key or a prefix).
pub fn is_cached(key: &str) -> bool {
    !UNCACHED.iter().any(|prefix| key.starts_with(prefix))
}

/// Decodes a stored object and stamps its resourceVersion.
pub fn decode(kv: &KeyValue) -> Option<Cached> {
    let mut object: Value = serde_json::from_slice(&kv.value).ok()?;
    set_resource_version(&mut object, kv.mod_revision);
    Some(Cached::new(Arc::from(kv.key.as_str()), kv.mod_revision, &object))
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(object: &mut Value, rev: Revision) {
    if let Some(meta) = object.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use kapal_store::sqlite::SqliteStore;
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn events_pass_through_the_feed_but_are_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("kapal.db")).unwrap());
        let body = |name: &str| serde_json::to_vec(&json!({"metadata": {"name": name, "namespace": "ns"}})).unwrap();
        store.create("/registry/core/events/ns/old", body("old")).await.unwrap();
        store.create("/registry/core/configmaps/ns/cm", body("cm")).await.unwrap();
        let cache = WatchCache::start(store.clone(), 100).await.unwrap();
        let (_, mut sub) = cache.subscribe_with_state("/registry/core/events/");
        let created = store.create("/registry/core/events/ns/new", body("new")).await.unwrap();
        let updated = store.update("/registry/core/events/ns/new", body("new"), created.mod_revision).await.unwrap();
        assert!(cache.wait_for(updated.mod_revision, Duration::from_secs(5)).await);

        assert_eq!(cache.len(), 1, "only the ConfigMap is held");
        assert!(cache.get("/registry/core/events/ns/old").is_none());
        let got = cache.get_current("/registry/core/events/ns/old").await.unwrap().unwrap();
        assert_eq!(got.name(), "old");
        let (all, revision) = cache.list_current("/registry/core/events/ns/").await.unwrap();
        assert_eq!(all.iter().map(Cached::name).collect::<Vec<_>>(), ["new", "old"]);
        assert_eq!(revision, updated.mod_revision);
        let (initial, _) = cache.subscribe_with_state_current("/registry/core/events/").await.unwrap();
        assert_eq!(initial.len(), 2);

        // A new key is ADDED, a changed one MODIFIED, though the cache never held either.
        let first = sub.live.recv().await.unwrap();
        let second = sub.live.recv().await.unwrap();
        assert_eq!((first.change, second.change), (Change::Added, Change::Modified));
        assert!(second.prev.is_none());
    }
}
