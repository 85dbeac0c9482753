//! Kapal's versioned key-value store.
//!
//! The contract is what kube-apiserver asks of etcd, and no more: get, range list at a
//! revision, create-if-absent, update and delete guarded by the key's last modification
//! revision, watch a prefix from a revision, and compaction of old history. Every write bumps
//! one global, monotonic revision; the API server uses it as `resourceVersion`.
//!
//! [`sqlite::SqliteStore`] is the embedded default.

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub mod etcd;
pub mod sqlite;

/// A store revision. Revision 0 means "before anything was written".
pub type Revision = i64;

/// One key and its value as of some revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Arc<[u8]>,
    /// The revision that created this key (its current incarnation).
    pub create_revision: Revision,
    /// The revision that last wrote this key; for a deleted key, the deletion's revision.
    pub mod_revision: Revision,
}

/// What a write did to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Create,
    Update,
    Delete,
}

/// One change, as delivered to watchers.
///
/// For a delete, `kv.value` is the last value the key had and `kv.mod_revision` the revision
/// of the deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// A page of a range list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// How many more keys in the range follow the last one returned.
    pub remaining: usize,
}

/// Errors of the store contract. The API server maps each to a `metav1.Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    /// The guard revision did not match; `current` is the key's value now.
    #[error("key {key} was modified (now at revision {})", current.as_ref().map_or(0, |c| c.mod_revision))]
    Conflict { key: String, current: Option<KeyValue> },
    /// The requested revision is older than the oldest retained one.
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted { requested: Revision, compacted: Revision },
    /// The requested revision is newer than the store's.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision { requested: Revision, current: Revision },
    /// A watcher fell too far behind the writer and must start over.
    #[error("watch fell behind the store and was closed")]
    WatchLagged,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store failure: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A stream of events in revision order.
pub type WatchStream = BoxStream<'static, Result<Event>>;

/// The store contract.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The current value of a key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys under `prefix` in key order, starting after `start_after`, at most `limit` of them
    /// (0 = no limit), as of `revision` (`None` = now).
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListPage>;

    /// Creates a key that must not exist.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue>;

    /// Replaces a key's value if its mod revision is still `expected`.
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue>;

    /// Deletes a key, if its mod revision is `expected` when given. Returns the last value,
    /// with `mod_revision` set to the deletion's revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue>;

    /// Every event under `prefix` with a revision greater than `after`, in order, then live.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// Forgets history up to and including `revision`.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The revision of the last acknowledged write.
    fn current_revision(&self) -> Revision;

    /// The newest compacted revision; watches must start at or after it.
    fn compacted_revision(&self) -> Revision;
}

/// How much history automatic compaction keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Keep at least this many of the newest revisions.
    pub min_revisions: i64,
    /// Keep at least this much time of history.
    pub min_age: std::time::Duration,
    /// How often to compact.
    pub interval: std::time::Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            min_revisions: 10_000,
            min_age: std::time::Duration::from_secs(300),
            interval: std::time::Duration::from_secs(60),
        }
    }
}

/// Starts a task that compacts `store` every `retention.interval`, keeping at least
/// `min_revisions` revisions and `min_age` of history. Works for every backend; with several
/// servers on one etcd, each compacts and etcd keeps the newest compaction.
pub fn spawn_compactor(store: std::sync::Arc<dyn Store>, retention: Retention) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut samples: std::collections::VecDeque<(std::time::Instant, Revision)> = std::collections::VecDeque::new();
        let mut ticker = tokio::time::interval(retention.interval);
        loop {
            ticker.tick().await;
            let now = std::time::Instant::now();
            let current = store.current_revision();
            samples.push_back((now, current));
            // The newest revision that is at least `min_age` old.
            let mut by_age = 0;
            while let Some(&(at, rev)) = samples.front() {
                if now.duration_since(at) < retention.min_age {
                    break;
                }
                by_age = rev;
                samples.pop_front();
            }
            let target = by_age.min(current - retention.min_revisions);
            if target > store.compacted_revision()
                && let Err(e) = store.compact(target).await
            {
                tracing::warn!(error = %e, target, "compaction failed");
            }
        }
    })
}

/// The end of a prefix range: the smallest string greater than every string with `prefix`.
pub fn prefix_end(prefix: &str) -> String {
    // Keys are UTF-8 paths; bumping the last byte of an ASCII prefix is enough for our keys,
    // and U+10FFFF is appended otherwise so that every extension sorts before the end.
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            if let Ok(s) = String::from_utf8(bytes.clone()) {
                return s;
            }
        }
    }
    format!("{prefix}\u{10FFFF}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_the_range() {
        assert_eq!(prefix_end("/registry/pods/"), "/registry/pods0");
        assert!("/registry/pods/zzz" < prefix_end("/registry/pods/").as_str());
        assert!("/registry/podsx" > prefix_end("/registry/pods/").as_str());
    }
}
