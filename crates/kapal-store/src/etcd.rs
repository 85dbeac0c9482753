//! The HA backend: Kapal's store contract on a real etcd v3 cluster.
//!
//! Everything maps onto etcd's own machinery, as kube-apiserver does it: revisions are etcd's,
//! guarded writes are transactions comparing a key's create or mod revision, lists are ranges at
//! a revision, watches are etcd watches with previous values, compaction is etcd's. Kapal's
//! `/registry` tree is stored under the configured prefix, so that several Kapal clusters can
//! share one etcd.
//!
//! Any failure to reach etcd becomes [`StoreError::Unavailable`]. Every operation has a
//! deadline; within it, attempts that never reached a member able to act on them (connection
//! refused, connection already closed by a member that died, no leader) are tried again, and so
//! are reads, but a write whose request broke on the way is not: its outcome is unknown, and the
//! caller must decide. etcd-client reconnects by itself, so the store recovers when members
//! return. A watch whose connection breaks ends with an error item, so that its consumer lists
//! again.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KvClient, PutOptions, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchClient, WatchOptions, WatchResponse,
};
use futures::StreamExt;
use tokio::time::Instant;

use crate::{Event, EventKind, KeyValue, ListPage, Result, Revision, Store, StoreError, WatchStream, prefix_end};

mod config;
mod failure;

pub use config::{DEFAULT_PREFIX, EtcdConfig, InvalidEndpoint};
use failure::{Attempt, Failure, Retry, classify};

/// The only tree of Kapal keys; it is stored under [`EtcdConfig::prefix`].
const ROOT: &str = "/registry";
/// Largest gRPC message accepted, as kube-apiserver sets it: whole-prefix lists are big.
const MAX_MESSAGE: usize = i32::MAX as usize;
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(250);
/// How long to wait for etcd to report its compaction revision on a watch.
const COMPACTION_PROBE: Duration = Duration::from_secs(1);

/// The etcd store. Cheap to clone; clones share one client and one revision tracker.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    // Kept so that the client's endpoint set lives as long as the store.
    _client: Client,
    kv: KvClient,
    watch: WatchClient,
    /// The etcd key standing for [`ROOT`], without a trailing slash.
    prefix: String,
    /// The endpoints, for messages.
    endpoints: String,
    request_timeout: Duration,
    revision: AtomicI64,
    compacted: AtomicI64,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.endpoints)
            .field("prefix", &self.inner.prefix)
            .field("revision", &self.current_revision())
            .finish()
    }
}

impl EtcdStore {
    /// Connects to the cluster and reads its current revision.
    ///
    /// Fails with [`StoreError::Unavailable`] naming the endpoints when no member answers
    /// within the dial timeout, and with [`StoreError::Internal`] when the configuration or
    /// its TLS files are unusable.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdStore> {
        let prefix = config.checked_prefix()?;
        let endpoints = config.endpoint_list();
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.dial_timeout)
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
            // A member cut off from the quorum refuses requests instead of stalling them.
            .with_require_leader(true);
        if let Some(tls) = config.tls_options()? {
            options = options.with_tls(tls);
        }
        // The client dials lazily: errors here are about the configuration, not the network.
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|e| StoreError::Internal(format!("configuring the etcd client for {endpoints}: {e}")))?;
        let inner = Inner {
            kv: client.kv_client().max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE),
            watch: client.watch_client().max_decoding_message_size(MAX_MESSAGE),
            _client: client,
            prefix,
            endpoints,
            request_timeout: config.request_timeout,
            revision: AtomicI64::new(0),
            compacted: AtomicI64::new(0),
        };
        let store = EtcdStore { inner: Arc::new(inner) };
        let revision = store.inner.etcd_revision(config.dial_timeout).await?;
        store.inner.saw(revision);
        tracing::info!(endpoints = %store.inner.endpoints, prefix = %store.inner.prefix, revision, "connected to etcd");
        Ok(store)
    }
}

impl Inner {
    /// Records a revision committed under this store's prefix (or, at connect, etcd's own).
    fn saw(&self, revision: Revision) {
        self.revision.fetch_max(revision, Ordering::SeqCst);
    }

    fn etcd_key(&self, key: &str) -> Result<Vec<u8>> {
        match key.strip_prefix(ROOT) {
            Some(rest) if rest.starts_with('/') => Ok(format!("{}{rest}", self.prefix).into_bytes()),
            _ => {
                Err(StoreError::Internal(format!("key {key:?} is outside {ROOT}/, the only tree the etcd store maps")))
            }
        }
    }

    fn kapal_key(&self, key: &[u8]) -> Result<String> {
        key.strip_prefix(self.prefix.as_bytes())
            .filter(|rest| rest.first() == Some(&b'/'))
            .and_then(|rest| std::str::from_utf8(rest).ok())
            .map(|rest| format!("{ROOT}{rest}"))
            .ok_or_else(|| {
                StoreError::Internal(format!(
                    "etcd key {:?} is not a UTF-8 key under {}",
                    String::from_utf8_lossy(key),
                    self.prefix
                ))
            })
    }

    /// The etcd range `[start, end)` holding the Kapal keys that start with `prefix`.
    fn range(&self, prefix: &str) -> Result<(Vec<u8>, Vec<u8>)> {
        let start = self.etcd_key(prefix)?;
        let end = String::from_utf8(start.clone()).map(|s| prefix_end(&s).into_bytes());
        let end = end.map_err(|e| StoreError::Internal(format!("prefix {prefix:?}: {e}")))?;
        Ok((start, end))
    }

    fn kv(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        Ok(KeyValue {
            key: self.kapal_key(kv.key())?,
            value: Arc::from(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }

    fn unavailable(&self, what: &str, detail: impl fmt::Display) -> Failure {
        Failure::Unavailable(format!("{what}: etcd at {} is unavailable: {detail}", self.endpoints))
    }

    /// Runs `attempt` until it succeeds, fails for good, or the request timeout passes.
    async fn call<T, F, Fut>(&self, what: &str, retry: Retry, attempt: F) -> std::result::Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.call_within(self.request_timeout, what, retry, attempt).await
    }

    async fn call_within<T, F, Fut>(
        &self,
        timeout: Duration,
        what: &str,
        retry: Retry,
        mut attempt: F,
    ) -> std::result::Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + timeout;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let error = match tokio::time::timeout_at(deadline, attempt()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => e,
                Err(_) => return Err(self.unavailable(what, format_args!("no answer within {timeout:?}"))),
            };
            let detail = match classify(error) {
                Attempt::NotSent(detail) => detail,
                Attempt::Broken(detail) if retry == Retry::Always => detail,
                Attempt::Broken(detail) => {
                    return Err(
                        self.unavailable(what, format_args!("{detail} (the write may or may not have happened)"))
                    );
                }
                Attempt::Final(failure) => return Err(failure),
            };
            if Instant::now() + backoff >= deadline {
                return Err(self.unavailable(what, format_args!("{detail} (gave up after {timeout:?})")));
            }
            tracing::debug!(what, error = %detail, "etcd request failed; trying again");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// etcd's current revision, from a response header.
    async fn etcd_revision(&self, timeout: Duration) -> Result<Revision> {
        let what = "reading the current revision";
        let key = self.prefix.clone().into_bytes();
        let resp = self
            .call_within(timeout, what, Retry::Always, || {
                let (mut kv, key) = (self.kv.clone(), key.clone());
                async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        header_revision(resp.header(), what)
    }

    /// Learns etcd's compaction revision, known to be above `floor`.
    ///
    /// etcd reports it only to a watch that starts below it, so this opens one from revision 1
    /// on a key Kapal never writes (the bare prefix) and waits for the compaction notice.
    async fn learn_compacted(&self, floor: Revision) -> Revision {
        let known = self.compacted.fetch_max(floor, Ordering::SeqCst).max(floor);
        let key = self.prefix.clone().into_bytes();
        let probe = async {
            let mut watch = self.watch.clone();
            let mut stream = watch.watch(key, Some(WatchOptions::new().with_start_revision(1))).await.ok()?;
            while let Ok(Some(resp)) = stream.message().await {
                if resp.compact_revision() > 0 {
                    return Some(resp.compact_revision());
                }
            }
            None
        };
        match tokio::time::timeout(COMPACTION_PROBE.min(self.request_timeout), probe).await {
            Ok(Some(rev)) => {
                self.compacted.fetch_max(rev, Ordering::SeqCst);
                rev.max(known)
            }
            _ => known,
        }
    }

    async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse> {
        let resp = self
            .call(what, Retry::IfNotSent, || {
                let (mut kv, txn) = (self.kv.clone(), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await?;
        Ok(resp)
    }

    /// The error for a guarded write whose comparison failed; the transaction's else branch read
    /// the key.
    fn guard_failed(&self, key: &str, resp: &TxnResponse) -> StoreError {
        let current = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get.kvs().first().map(|kv| self.kv(kv))),
            _ => None,
        });
        match current {
            Some(Some(Ok(kv))) => StoreError::Conflict { key: key.to_string(), current: Some(kv) },
            Some(None) => StoreError::NotFound(key.to_string()),
            Some(Some(Err(e))) => e,
            None => StoreError::Internal(format!("etcd answered a failed write of {key} without reading the key")),
        }
    }

    /// The events in one watch response, appended to `out`.
    fn events(&self, resp: &WatchResponse, last: &mut Revision, out: &mut VecDeque<Event>) -> Result<()> {
        if resp.compact_revision() > 0 {
            self.compacted.fetch_max(resp.compact_revision(), Ordering::SeqCst);
            return Err(StoreError::Compacted { requested: *last, compacted: resp.compact_revision() });
        }
        if resp.canceled() {
            return Err(StoreError::Unavailable(format!(
                "etcd at {} cancelled the watch: {}",
                self.endpoints,
                resp.cancel_reason()
            )));
        }
        for ev in resp.events() {
            let event = self.event(ev)?;
            *last = event.kv.mod_revision;
            self.saw(event.kv.mod_revision);
            out.push_back(event);
        }
        Ok(())
    }

    fn event(&self, ev: &etcd_client::Event) -> Result<Event> {
        let kv = ev.kv().ok_or_else(|| StoreError::Internal("etcd sent a watch event without a key".into()))?;
        match ev.event_type() {
            EventType::Put => {
                let kind = if kv.version() == 1 { EventKind::Create } else { EventKind::Update };
                Ok(Event { kind, kv: self.kv(kv)? })
            }
            EventType::Delete => {
                let key = self.kapal_key(kv.key())?;
                let Some(prev) = ev.prev_kv() else {
                    return Err(StoreError::Internal(format!(
                        "etcd sent the deletion of {key} at revision {} without its last value",
                        kv.mod_revision()
                    )));
                };
                let kv = KeyValue {
                    key,
                    value: Arc::from(prev.value()),
                    create_revision: prev.create_revision(),
                    mod_revision: kv.mod_revision(),
                };
                Ok(Event { kind: EventKind::Delete, kv })
            }
        }
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>, what: &str) -> Result<Revision> {
    header.map(|h| h.revision()).ok_or_else(|| StoreError::Internal(format!("{what}: etcd answered without a header")))
}

/// State of one watch stream handed to a caller.
struct Watcher {
    inner: Arc<Inner>,
    stream: etcd_client::WatchStream,
    pending: VecDeque<Event>,
    /// An error to deliver once `pending` is drained; the stream ends after it.
    error: Option<StoreError>,
    done: bool,
    /// The revision of the last event delivered (or the watch's start).
    last: Revision,
    prefix: String,
}

impl Watcher {
    async fn next(mut self) -> Option<(Result<Event>, Watcher)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if let Some(error) = self.error.take() {
                self.done = true;
                return Some((Err(error), self));
            }
            if self.done {
                return None;
            }
            match self.stream.message().await {
                Ok(Some(resp)) => {
                    if let Err(e) = self.inner.events(&resp, &mut self.last, &mut self.pending) {
                        self.error = Some(e);
                    }
                }
                Ok(None) => {
                    self.error = Some(StoreError::Unavailable(format!(
                        "watching {}: etcd at {} closed the watch",
                        self.prefix, self.inner.endpoints
                    )));
                }
                Err(e) => {
                    let failure = match classify(e) {
                        Attempt::NotSent(d) | Attempt::Broken(d) => {
                            self.inner.unavailable(&format!("watching {}", self.prefix), d)
                        }
                        Attempt::Final(f) => f,
                    };
                    self.error = Some(failure.into());
                }
            }
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let inner = &self.inner;
        let etcd_key = inner.etcd_key(key)?;
        let resp = inner
            .call(&format!("reading {key}"), Retry::Always, || {
                let (mut kv, etcd_key) = (inner.kv.clone(), etcd_key.clone());
                async move { kv.get(etcd_key, None).await }
            })
            .await?;
        resp.kvs().first().map(|kv| inner.kv(kv)).transpose()
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListPage> {
        let inner = &self.inner;
        let (mut start, end) = inner.range(prefix)?;
        if let Some(after) = start_after {
            start = inner.etcd_key(after)?;
            start.push(0);
        }
        let mut options = GetOptions::new().with_range(end).with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        if let Some(r) = revision {
            options = options.with_revision(r);
        }
        let result = inner
            .call(&format!("listing {prefix}"), Retry::Always, || {
                let (mut kv, start, options) = (inner.kv.clone(), start.clone(), options.clone());
                async move { kv.get(start, Some(options)).await }
            })
            .await;
        let requested = revision.unwrap_or(0);
        let resp = match result {
            Ok(resp) => resp,
            Err(Failure::Compacted) => {
                let compacted = inner.learn_compacted(requested + 1).await;
                return Err(StoreError::Compacted { requested, compacted });
            }
            Err(Failure::FutureRevision) => {
                let current =
                    inner.etcd_revision(inner.request_timeout).await.unwrap_or_else(|_| self.current_revision());
                return Err(StoreError::FutureRevision { requested, current });
            }
            Err(other) => return Err(other.into()),
        };
        let items = resp.kvs().iter().map(|kv| inner.kv(kv)).collect::<Result<Vec<_>>>()?;
        let remaining = match resp.more() {
            true => usize::try_from(resp.count()).unwrap_or(0).saturating_sub(items.len()),
            false => 0,
        };
        // Not folded into `current_revision`: with a shared etcd the header counts writes of
        // other prefixes, which never arrive on this store's watches.
        let revision = match revision {
            Some(r) => r,
            None => header_revision(resp.header(), "listing")?,
        };
        Ok(ListPage { items, revision, remaining })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        let inner = &self.inner;
        let etcd_key = inner.etcd_key(key)?;
        let value: Arc<[u8]> = value.into();
        let txn = Txn::new()
            .when([Compare::create_revision(etcd_key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(etcd_key, value.to_vec(), None)]);
        let resp = inner.txn(&format!("creating {key}"), txn).await?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        let revision = header_revision(resp.header(), "creating")?;
        inner.saw(revision);
        Ok(KeyValue { key: key.to_string(), value, create_revision: revision, mod_revision: revision })
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue> {
        let inner = &self.inner;
        let etcd_key = inner.etcd_key(key)?;
        let value: Arc<[u8]> = value.into();
        let txn = Txn::new()
            .when([
                // A missing key has mod revision 0: the second comparison keeps `expected == 0`
                // from creating it.
                Compare::mod_revision(etcd_key.clone(), CompareOp::Equal, expected),
                Compare::version(etcd_key.clone(), CompareOp::Greater, 0),
            ])
            .and_then([TxnOp::put(etcd_key.clone(), value.to_vec(), Some(PutOptions::new().with_prev_key()))])
            .or_else([TxnOp::get(etcd_key, None)]);
        let resp = inner.txn(&format!("updating {key}"), txn).await?;
        if !resp.succeeded() {
            return Err(inner.guard_failed(key, &resp));
        }
        let revision = header_revision(resp.header(), "updating")?;
        inner.saw(revision);
        let create_revision = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Put(put) => put.prev_key().map(|kv| kv.create_revision()),
            _ => None,
        });
        let create_revision = create_revision
            .ok_or_else(|| StoreError::Internal(format!("etcd updated {key} without returning its previous value")))?;
        Ok(KeyValue { key: key.to_string(), value, create_revision, mod_revision: revision })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let inner = &self.inner;
        let etcd_key = inner.etcd_key(key)?;
        let mut guard = vec![Compare::version(etcd_key.clone(), CompareOp::Greater, 0)];
        if let Some(expected) = expected {
            guard.push(Compare::mod_revision(etcd_key.clone(), CompareOp::Equal, expected));
        }
        let txn = Txn::new()
            .when(guard)
            .and_then([TxnOp::delete(etcd_key.clone(), Some(DeleteOptions::new().with_prev_key()))])
            .or_else([TxnOp::get(etcd_key, None)]);
        let resp = inner.txn(&format!("deleting {key}"), txn).await?;
        if !resp.succeeded() {
            return Err(inner.guard_failed(key, &resp));
        }
        let revision = header_revision(resp.header(), "deleting")?;
        inner.saw(revision);
        let last = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Delete(delete) => delete.prev_kvs().first().map(|kv| inner.kv(kv)),
            _ => None,
        });
        let last =
            last.ok_or_else(|| StoreError::Internal(format!("etcd deleted {key} without returning its last value")))??;
        Ok(KeyValue { mod_revision: revision, ..last })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let inner = &self.inner;
        let (start, end) = inner.range(prefix)?;
        let compacted = self.compacted_revision();
        if after < compacted {
            return Err(StoreError::Compacted { requested: after, compacted });
        }
        let options = WatchOptions::new().with_range(end).with_start_revision(after + 1).with_prev_key();
        let what = format!("watching {prefix} from revision {after}");
        // Opening counts as done once etcd has answered the creation.
        let (stream, first) = inner
            .call(&what, Retry::Always, || {
                let (mut watch, start, options) = (inner.watch.clone(), start.clone(), options.clone());
                async move {
                    let mut stream = watch.watch(start, Some(options)).await?;
                    let first = stream.message().await?;
                    Ok((stream, first))
                }
            })
            .await?;
        let Some(first) = first else {
            return Err(StoreError::Unavailable(format!("{what}: etcd at {} closed the watch", inner.endpoints)));
        };
        if first.created()
            && let Some(current) = first.header().map(|h| h.revision())
            && after > current
        {
            return Err(StoreError::FutureRevision { requested: after, current });
        }
        let mut watcher = Watcher {
            inner: inner.clone(),
            stream,
            pending: VecDeque::new(),
            error: None,
            done: false,
            last: after,
            prefix: prefix.to_string(),
        };
        inner.events(&first, &mut watcher.last, &mut watcher.pending)?;
        Ok(futures::stream::unfold(watcher, Watcher::next).boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let inner = &self.inner;
        let mut target = revision;
        // Like the SQLite store, compacting past the newest revision compacts up to it; at most
        // twice round, since the second target comes from etcd itself.
        for _ in 0..2 {
            if target <= self.compacted_revision() {
                return Ok(());
            }
            let result = inner
                .call(&format!("compacting to revision {target}"), Retry::Always, || {
                    let mut kv = inner.kv.clone();
                    async move { kv.compact(target, None).await }
                })
                .await;
            match result {
                Ok(_) => {
                    inner.compacted.fetch_max(target, Ordering::SeqCst);
                    return Ok(());
                }
                // Someone compacted at least this far already.
                Err(Failure::Compacted) => {
                    inner.learn_compacted(target).await;
                    return Ok(());
                }
                Err(Failure::FutureRevision) => target = inner.etcd_revision(inner.request_timeout).await?,
                Err(other) => return Err(other.into()),
            }
        }
        Err(StoreError::Internal(format!("compacting to revision {revision}: etcd's revision kept moving")))
    }

    /// The newest revision this process saw committed under its prefix: its own writes,
    /// events on its watches, and etcd's revision at connect time. Revisions of other
    /// prefixes' writes that only show in response headers are left out, since a watch cache
    /// waiting for them would never see them arrive.
    fn current_revision(&self) -> Revision {
        self.inner.revision.load(Ordering::SeqCst)
    }

    /// The newest compaction revision this process knows of: its own compactions and those
    /// etcd reported on watches and reads.
    fn compacted_revision(&self) -> Revision {
        self.inner.compacted.load(Ordering::SeqCst)
    }
}
