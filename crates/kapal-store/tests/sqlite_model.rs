//! Model-based test of the SQLite store.
//!
//! Random sequences of writes (right and wrong guards), reads at old revisions, watches from
//! past revisions, compactions and restarts run against [`SqliteStore`] and against [`Model`], a
//! map plus an event log that is obviously right. Every result must be the model's, and at the
//! end every watcher must have received exactly the model's events after its start revision:
//! in order, none twice, none missing.
//!
//! The sequential model cannot produce races between a compaction and a read or watch that is
//! being set up; the tests at the end of the file race them on purpose.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use kapal_store::sqlite::SqliteStore;
use kapal_store::{Event, EventKind, KeyValue, ListPage, Revision, Store, StoreError, WatchStream};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const KEYS: [&str; 6] = ["/m/a/0", "/m/a/1", "/m/b/0", "/m/b/1", "/m/c", "/n/0"];
const PREFIXES: [&str; 5] = ["/", "/m/", "/m/a/", "/m/b/", "/n/"];
/// Overrides the number of generated cases.
const CASES_VAR: &str = "PROPTEST_CASES";
const DEFAULT_CASES: u32 = 64;

/// The revision a guarded write names.
#[derive(Debug, Clone, Copy)]
enum Guard {
    /// The key's current mod revision.
    Current,
    /// The key's current mod revision plus this (never 0): a stale or invented revision.
    Off(i64),
}

/// A point in the history that exists when the op runs: a fraction of the current revision.
#[derive(Debug, Clone, Copy)]
struct At(u16);

impl At {
    /// A revision in `0..=max`.
    fn within(self, max: Revision) -> Revision {
        i64::from(self.0) * (max + 1) / 65536
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        key: usize,
        value: Vec<u8>,
    },
    Update {
        key: usize,
        value: Vec<u8>,
        guard: Guard,
    },
    Delete {
        key: usize,
        guard: Option<Guard>,
    },
    Get {
        key: usize,
    },
    /// `at` ranges one past the current revision, to ask for the future too.
    List {
        prefix: usize,
        start_after: Option<usize>,
        limit: usize,
        at: Option<At>,
    },
    /// `at` ranges one past the current revision, to ask for the future too.
    Watch {
        prefix: usize,
        at: At,
    },
    Compact {
        at: At,
    },
    /// Closes the store (ending every watch on it) and opens the file again.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    let value = prop::collection::vec(any::<u8>(), 0..6);
    let guard = prop_oneof![3 => Just(Guard::Current), 1 => prop_oneof![-3i64..0, 1i64..4].prop_map(Guard::Off)];
    let at = any::<u16>().prop_map(At);
    prop_oneof![
        5 => (key.clone(), value.clone()).prop_map(|(key, value)| Op::Create { key, value }),
        5 => (key.clone(), value, guard.clone()).prop_map(|(key, value, guard)| Op::Update { key, value, guard }),
        2 => (key.clone(), prop::option::of(guard)).prop_map(|(key, guard)| Op::Delete { key, guard }),
        1 => key.clone().prop_map(|key| Op::Get { key }),
        2 => (0..PREFIXES.len(), prop::option::of(key), 0usize..4, prop::option::of(at.clone()))
            .prop_map(|(prefix, start_after, limit, at)| Op::List { prefix, start_after, limit, at }),
        3 => (0..PREFIXES.len(), at.clone()).prop_map(|(prefix, at)| Op::Watch { prefix, at }),
        2 => at.prop_map(|at| Op::Compact { at }),
        1 => Just(Op::Reopen),
    ]
}

/// The reference: the live keys, and every event ever written.
#[derive(Default)]
struct Model {
    revision: Revision,
    compacted: Revision,
    live: BTreeMap<String, KeyValue>,
    log: Vec<Event>,
}

impl Model {
    fn guard(&self, key: &str, guard: Guard) -> Revision {
        let current = self.live.get(key).map_or(0, |kv| kv.mod_revision);
        match guard {
            Guard::Current => current,
            Guard::Off(d) => current + d,
        }
    }

    fn write(&mut self, kind: EventKind, kv: KeyValue) -> KeyValue {
        self.revision = kv.mod_revision;
        if kind == EventKind::Delete {
            self.live.remove(&kv.key);
        } else {
            self.live.insert(kv.key.clone(), kv.clone());
        }
        self.log.push(Event { kind, kv: kv.clone() });
        kv
    }

    fn create(&mut self, key: &str, value: &[u8]) -> Result<KeyValue, StoreError> {
        if self.live.contains_key(key) {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        let rev = self.revision + 1;
        let kv = KeyValue { key: key.to_string(), value: value.into(), create_revision: rev, mod_revision: rev };
        Ok(self.write(EventKind::Create, kv))
    }

    fn update(&mut self, key: &str, value: &[u8], expected: Revision) -> Result<KeyValue, StoreError> {
        let Some(current) = self.live.get(key).cloned() else {
            return Err(StoreError::NotFound(key.to_string()));
        };
        if current.mod_revision != expected {
            return Err(StoreError::Conflict { key: key.to_string(), current: Some(current) });
        }
        let kv = KeyValue { value: value.into(), mod_revision: self.revision + 1, ..current };
        Ok(self.write(EventKind::Update, kv))
    }

    fn delete(&mut self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        let Some(current) = self.live.get(key).cloned() else {
            return Err(StoreError::NotFound(key.to_string()));
        };
        if expected.is_some_and(|e| e != current.mod_revision) {
            return Err(StoreError::Conflict { key: key.to_string(), current: Some(current) });
        }
        let kv = KeyValue { mod_revision: self.revision + 1, ..current };
        Ok(self.write(EventKind::Delete, kv))
    }

    fn compact(&mut self, revision: Revision) {
        self.compacted = self.compacted.max(revision.min(self.revision));
    }

    fn check_readable(&self, requested: Revision) -> Result<(), StoreError> {
        if requested > self.revision {
            return Err(StoreError::FutureRevision { requested, current: self.revision });
        }
        if requested < self.compacted {
            return Err(StoreError::Compacted { requested, compacted: self.compacted });
        }
        Ok(())
    }

    /// The live keys as of `revision`, replayed from the log.
    fn state_at(&self, revision: Revision) -> BTreeMap<String, KeyValue> {
        let mut state = BTreeMap::new();
        for event in self.log.iter().take_while(|e| e.kv.mod_revision <= revision) {
            if event.kind == EventKind::Delete {
                state.remove(&event.kv.key);
            } else {
                state.insert(event.kv.key.clone(), event.kv.clone());
            }
        }
        state
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListPage, StoreError> {
        if let Some(r) = revision {
            self.check_readable(r)?;
        }
        let at = revision.unwrap_or(self.revision);
        let matching: Vec<KeyValue> = self
            .state_at(at)
            .into_values()
            .filter(|kv| kv.key.starts_with(prefix) && start_after.is_none_or(|s| kv.key.as_str() > s))
            .collect();
        let take = if limit == 0 { matching.len() } else { limit.min(matching.len()) };
        let remaining = matching.len() - take;
        Ok(ListPage { items: matching.into_iter().take(take).collect(), revision: at, remaining })
    }

    /// The events a watch of `prefix` from `after` must deliver, up to `until` if it was closed.
    fn events(&self, prefix: &str, after: Revision, until: Option<Revision>) -> Vec<Event> {
        self.log
            .iter()
            .filter(|e| e.kv.mod_revision > after && until.is_none_or(|u| e.kv.mod_revision <= u))
            .filter(|e| e.kv.key.starts_with(prefix))
            .cloned()
            .collect()
    }
}

struct Watcher {
    /// The op that started it, for messages.
    op: usize,
    prefix: &'static str,
    after: Revision,
    /// The revision at which the store it watches was closed.
    closed_at: Option<Revision>,
    stream: WatchStream,
}

fn config() -> ProptestConfig {
    let cases = std::env::var(CASES_VAR).ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES);
    // No regression files: this test must not write into the source tree. A failure prints the
    // minimal sequence of ops, which is what a regression test would be written from.
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..48)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run_case(ops))?;
    }
}

async fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = SqliteStore::open(&path).unwrap();
    let mut model = Model::default();
    let mut watchers: Vec<Watcher> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Create { key, value } => {
                let key = KEYS[*key];
                let want = model.create(key, value);
                prop_assert_eq!(store.create(key, value.clone()).await, want, "op {}: {:?}", i, op);
            }
            Op::Update { key, value, guard } => {
                let key = KEYS[*key];
                let expected = model.guard(key, *guard);
                let want = model.update(key, value, expected);
                prop_assert_eq!(store.update(key, value.clone(), expected).await, want, "op {}: {:?}", i, op);
            }
            Op::Delete { key, guard } => {
                let key = KEYS[*key];
                let expected = guard.map(|g| model.guard(key, g));
                let want = model.delete(key, expected);
                prop_assert_eq!(store.delete(key, expected).await, want, "op {}: {:?}", i, op);
            }
            Op::Get { key } => {
                let key = KEYS[*key];
                prop_assert_eq!(store.get(key).await, Ok(model.live.get(key).cloned()), "op {}: {:?}", i, op);
            }
            Op::List { prefix, start_after, limit, at } => {
                // A start key outside the prefix lists keys outside it
                // (`list_start_after_outside_prefix_stays_in_prefix`); the API server never asks.
                let prefix = PREFIXES[*prefix];
                let start_after = start_after.map(|k| KEYS[k]).filter(|k| k.starts_with(prefix));
                let revision = at.map(|a| a.within(model.revision + 1));
                let want = model.list(prefix, start_after, *limit, revision);
                let got = store.list(prefix, start_after, *limit, revision).await;
                check_list(got, want, revision.is_some()).map_err(|e| fail(i, op, revision, e))?;
            }
            Op::Watch { prefix, at } => {
                let (prefix, after) = (PREFIXES[*prefix], at.within(model.revision + 1));
                match (store.watch(prefix, after).await, model.check_readable(after)) {
                    (Ok(stream), Ok(())) => watchers.push(Watcher { op: i, prefix, after, closed_at: None, stream }),
                    (Err(got), Err(want)) => prop_assert_eq!(got, want, "op {}: {:?} from {}", i, op, after),
                    (Ok(_), Err(want)) => return Err(fail(i, op, Some(after), format!("watch started, want {want}"))),
                    (Err(got), Ok(())) => return Err(fail(i, op, Some(after), format!("watch failed: {got}"))),
                }
            }
            Op::Compact { at } => {
                let revision = at.within(model.revision);
                model.compact(revision);
                prop_assert_eq!(store.compact(revision).await, Ok(()), "op {}: {:?}", i, op);
            }
            Op::Reopen => {
                drop(store);
                for w in watchers.iter_mut().filter(|w| w.closed_at.is_none()) {
                    w.closed_at = Some(model.revision);
                }
                store = SqliteStore::open(&path).unwrap();
            }
        }
        prop_assert_eq!(store.current_revision(), model.revision, "after op {}: {:?}", i, op);
        prop_assert_eq!(store.compacted_revision(), model.compacted, "after op {}: {:?}", i, op);
    }
    check_watchers(&model, &mut watchers).await
}

fn fail(i: usize, op: &Op, revision: Option<Revision>, e: String) -> TestCaseError {
    TestCaseError::fail(format!("op {i}: {op:?} at revision {revision:?}: {e}"))
}

/// A list must return the model's items; `remaining` is exact for a list of the present and
/// only checked for "more or not" at a past revision, where the SQLite store does not count
/// (see `list_at_old_revision_counts_remaining_keys`).
fn check_list(
    got: Result<ListPage, StoreError>,
    want: Result<ListPage, StoreError>,
    at_revision: bool,
) -> Result<(), String> {
    match (got, want) {
        (Ok(got), Ok(want)) => {
            let remaining_ok =
                if at_revision { (got.remaining > 0) == (want.remaining > 0) } else { got.remaining == want.remaining };
            if got.items != want.items || got.revision != want.revision || !remaining_ok {
                return Err(format!("got {got:#?}\nwant {want:#?}"));
            }
            Ok(())
        }
        (got, want) if got == want => Ok(()),
        (got, want) => Err(format!("got {got:?}, want {want:?}")),
    }
}

/// Every watcher gets exactly the model's events after its start: for a watch on a store that
/// was closed, those up to the close and then the end of the stream; otherwise those up to now
/// and then nothing more.
async fn check_watchers(model: &Model, watchers: &mut [Watcher]) -> Result<(), TestCaseError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut received = Vec::with_capacity(watchers.len());
    for w in watchers.iter_mut() {
        let want = model.events(w.prefix, w.after, w.closed_at);
        let mut got = Vec::new();
        while got.len() < want.len() {
            match tokio::time::timeout_at(deadline, w.stream.next()).await {
                Ok(Some(Ok(event))) => got.push(event),
                Ok(Some(Err(e))) => return Err(watcher_fail(w, format!("error after {} events: {e}", got.len()))),
                Ok(None) | Err(_) => break,
            }
        }
        if w.closed_at.is_some() {
            match tokio::time::timeout_at(deadline, w.stream.next()).await {
                Ok(None) => {}
                Ok(Some(extra)) => got.push(extra.map_err(|e| watcher_fail(w, format!("error at the end: {e}")))?),
                Err(_) => return Err(watcher_fail(w, "its store was closed but the stream did not end".into())),
            }
        }
        received.push((want, got));
    }
    // Give anything that should not come time to arrive, once for all watchers.
    tokio::time::sleep(Duration::from_millis(30)).await;
    for (w, (want, mut got)) in watchers.iter_mut().zip(received) {
        if w.closed_at.is_none()
            && let Some(Some(extra)) = w.stream.next().now_or_never()
        {
            got.push(extra.map_err(|e| watcher_fail(w, format!("error at the end: {e}")))?);
        }
        if got != want {
            return Err(watcher_fail(
                w,
                format!("got {} events {:#?}\nwant {} events {:#?}", got.len(), got, want.len(), want),
            ));
        }
    }
    Ok(())
}

fn watcher_fail(w: &Watcher, e: String) -> TestCaseError {
    TestCaseError::fail(format!(
        "watch of {:?} from {} (op {}, closed at {:?}): {e}",
        w.prefix, w.after, w.op, w.closed_at
    ))
}

async fn open_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    (dir, store)
}

/// `ListPage::remaining` is documented as how many keys follow the page; at a past revision
/// the SQLite store answers 1 whatever the number.
#[tokio::test]

async fn list_at_old_revision_counts_remaining_keys() {
    let (_dir, store) = open_store().await;
    for i in 0..5 {
        store.create(&format!("/r/{i}"), vec![i]).await.unwrap();
    }
    let at = store.current_revision();
    store.create("/r/9", vec![9]).await.unwrap();
    let now = store.list("/r/", None, 2, None).await.unwrap();
    assert_eq!(now.remaining, 4, "present");
    let past = store.list("/r/", None, 2, Some(at)).await.unwrap();
    assert_eq!(past.remaining, 3, "past revision {at}");
}

/// `list` promises keys under the prefix only; a `start_after` that sorts before the prefix
/// makes the SQLite store return every key between the two.
#[tokio::test]

async fn list_start_after_outside_prefix_stays_in_prefix() {
    let (_dir, store) = open_store().await;
    store.create("/a/x", vec![1]).await.unwrap();
    store.create("/b/x", vec![2]).await.unwrap();
    let page = store.list("/b/", Some("/a/"), 0, None).await.unwrap();
    let keys: Vec<&str> = page.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/b/x"]);
}

/// Keeps one key changing, every revision an update of it, while another task compacts up to
/// the present as fast as it can. Returns the stop flag and the tasks to join.
fn churn_and_compact(store: &SqliteStore) -> (Arc<AtomicBool>, Vec<tokio::task::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rev = store.create("/r/k", vec![0]).await.unwrap().mod_revision;
            while !stop.load(Ordering::Relaxed) {
                rev = store.update("/r/k", rev.to_be_bytes().to_vec(), rev).await.unwrap().mod_revision;
            }
        })
    };
    let compactor = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                store.compact(store.current_revision()).await.unwrap();
            }
        })
    };
    (stop, vec![writer, compactor])
}

/// A watch from a revision that was retained when it was asked for must deliver every event
/// after it, or fail with `Compacted`; a compaction that commits while the watch reads its
/// history must not silently cut events out of it.
///
/// `SqliteStore::watch` checks `after` against the compacted revision and only then reads the
/// history on a reader connection; a compaction that commits in between deletes rows the watch
/// was promised, and the watch starts with a gap instead of failing with `Compacted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn watch_racing_compaction_skips_no_event() {
    let (_dir, store) = open_store().await;
    let (stop, tasks) = churn_and_compact(&store);
    let (mut watches, mut compacted, mut gaps) = (0, 0, Vec::new());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) && gaps.len() < 5 {
        let after = store.compacted_revision();
        if after == 0 {
            tokio::task::yield_now().await;
            continue;
        }
        match store.watch("/r/", after).await {
            Err(StoreError::Compacted { .. }) => compacted += 1,
            Err(e) => panic!("watch from {after}: {e}"),
            Ok(mut stream) => {
                watches += 1;
                let first =
                    tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap().unwrap();
                // Every revision is an update of /r/k, so the first event is the next revision.
                if first.kv.mod_revision != after + 1 {
                    gaps.push((after, first.kv.mod_revision));
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("{watches} watches, {compacted} refused as compacted, {} with gaps", gaps.len());
    assert!(watches > 0, "no watch was started");
    assert!(gaps.is_empty(), "watches from (revision, first event delivered): {gaps:?}");
}

/// A list at a revision that was retained when it was asked for must show the key as it was
/// then, or fail with `Compacted`; never an empty list because a compaction committed while it
/// read.
///
/// `SqliteStore::list` checks the revision against the compacted revision before it opens its
/// read snapshot; a compaction that commits in between deletes the rows of that revision, and
/// the list comes back wrong (here: empty) instead of failing with `Compacted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn list_racing_compaction_is_consistent() {
    let (_dir, store) = open_store().await;
    let (stop, tasks) = churn_and_compact(&store);
    let (mut lists, mut compacted, mut wrong) = (0, 0, Vec::new());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) && wrong.len() < 5 {
        let at = store.compacted_revision();
        if at == 0 {
            tokio::task::yield_now().await;
            continue;
        }
        match store.list("/r/", None, 0, Some(at)).await {
            Err(StoreError::Compacted { .. }) => compacted += 1,
            Err(e) => panic!("list at {at}: {e}"),
            Ok(page) => {
                lists += 1;
                // /r/k exists at every revision from 1 on; at `at` it was written at `at`.
                let revs: Vec<Revision> = page.items.iter().map(|kv| kv.mod_revision).collect();
                if revs != [at] {
                    wrong.push((at, revs));
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("{lists} lists, {compacted} refused as compacted, {} wrong", wrong.len());
    assert!(lists > 0, "no list was served");
    assert!(wrong.is_empty(), "lists at (revision, mod revisions returned): {wrong:?}");
}
