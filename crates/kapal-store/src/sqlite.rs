//! The embedded default store: SQLite in WAL mode with one writer thread and group commit.
//!
//! Every write appends a row to `kv` (the log, whose primary key is the revision) and points
//! `current` at it; history rows make watches from a revision and consistent paginated lists
//! possible, and compaction removes rows that are superseded. Writes queue to one thread that
//! applies everything waiting in one transaction and acknowledges each only after the commit
//! is durable (`synchronous=FULL`). Watch events are published by that thread after the commit:
//! nothing polls. Readers use their own connections and never block the writer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{Event, EventKind, KeyValue, ListPage, Result, Revision, Store, StoreError, WatchStream, prefix_end};

/// `PRAGMA application_id` of a Kapal database ("KAPL").
const APPLICATION_ID: i64 = 0x4B41_504C;
const SCHEMA_VERSION: i64 = 1;
/// Most writes applied in one transaction.
const MAX_BATCH: usize = 512;
/// Events buffered per watcher before it is considered lagging (the channel keeps this many
/// alive whether or not anyone lags; the watch cache resumes a lagging watch from history).
const WATCH_BUFFER: usize = 4 * 1024;
const READERS: usize = 4;

pub use crate::Retention;

enum Op {
    Create { key: String, value: Vec<u8> },
    Update { key: String, value: Vec<u8>, expected: Revision },
    Delete { key: String, expected: Option<Revision> },
    Compact { revision: Revision },
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<KeyValue>>,
}

struct Shared {
    path: PathBuf,
    revision: AtomicI64,
    compacted: AtomicI64,
    events: broadcast::Sender<Arc<Event>>,
    readers: Mutex<Vec<Connection>>,
}

/// The SQLite store. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
    writes: mpsc::UnboundedSender<Request>,
}

impl SqliteStore {
    /// Opens (or creates) the database file at `path` and starts its writer thread.
    ///
    /// A file that is not SQLite, or a SQLite database that Kapal did not create, is refused
    /// with an error that names the file; nothing in it is changed.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let mut conn = open_connection(path, true)?;
        init_schema(&mut conn, path)?;
        let revision = query_i64(&conn, "SELECT COALESCE(MAX(rev), 0) FROM kv")?;
        let compacted = query_i64(&conn, "SELECT value FROM meta WHERE name = 'compacted'")?;
        let revision = revision.max(query_i64(&conn, "SELECT value FROM meta WHERE name = 'revision'")?);
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open_connection(path, false)?);
        }
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
            events,
            readers: Mutex::new(readers),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("kapal-store-writer".into())
            .spawn(move || Writer { conn, shared: writer_shared, rx }.run())
            .map_err(|e| StoreError::Internal(format!("starting store writer: {e}")))?;
        tracing::info!(path = %path.display(), revision, compacted, "opened sqlite store");
        Ok(SqliteStore { shared, writes: tx })
    }

    /// Starts the background task that compacts history by `retention`.
    pub fn spawn_compactor(&self, retention: Retention) -> tokio::task::JoinHandle<()> {
        crate::spawn_compactor(Arc::new(self.clone()), retention)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    async fn write(&self, op: Op) -> Result<KeyValue> {
        let (reply, rx) = oneshot::channel();
        self.writes
            .send(Request { op, reply })
            .map_err(|_| StoreError::Unavailable("store writer has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("store writer has stopped".into()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let conn = shared.readers.lock().ok().and_then(|mut pool| pool.pop());
            let conn = match conn {
                Some(c) => c,
                None => open_connection(&shared.path, false)?,
            };
            let result = f(&conn).map_err(sql_error);
            if let Ok(mut pool) = shared.readers.lock()
                && pool.len() < READERS
            {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store reader panicked: {e}")))?
    }
}

fn sql_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
            StoreError::Unavailable(format!("disk full: {e}"))
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

fn open_connection(path: &Path, create: bool) -> Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Internal(format!("opening {}: {e}", path.display())))?;
    // The writer (opened with `create`) keeps a 16 MB page cache for its index lookups. Readers
    // serve only what the API server's watch cache does not (old revisions, Events), and a page
    // cache fills up to its size over time: 2 MB each.
    let cache_kib = if create { 16_000 } else { 2_000 };
    let setup = format!("PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = OFF; PRAGMA cache_size = -{cache_kib};");
    conn.execute_batch(&setup)
        .map_err(|e| StoreError::Internal(format!("{} is not a usable SQLite database: {e}", path.display())))?;
    Ok(conn)
}

fn query_i64(conn: &Connection, sql: &str) -> Result<i64> {
    Ok(conn.query_row(sql, [], |r| r.get::<_, i64>(0)).optional().map_err(sql_error)?.unwrap_or(0))
}

fn init_schema(conn: &mut Connection, path: &Path) -> Result<()> {
    let not_ours = |detail: String| {
        StoreError::Internal(format!(
            "{} is not a Kapal database ({detail}); refusing to touch it — move it away or choose another --data-dir",
            path.display()
        ))
    };
    let app_id: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| not_ours(format!("cannot read it as SQLite: {e}")))?;
    let tables: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0))
        .map_err(|e| not_ours(format!("cannot read it as SQLite: {e}")))?;
    if app_id != APPLICATION_ID && (app_id != 0 || tables != 0) {
        return Err(not_ours(format!("application_id {app_id:#x}, {tables} tables")));
    }
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;").map_err(sql_error)?;
    let tx = conn.transaction().map_err(sql_error)?;
    tx.execute_batch(&format!(
        "PRAGMA application_id = {APPLICATION_ID};
         CREATE TABLE IF NOT EXISTS kv (
             rev INTEGER PRIMARY KEY,
             key TEXT NOT NULL,
             create_rev INTEGER NOT NULL,
             prev_rev INTEGER NOT NULL,
             deleted INTEGER NOT NULL,
             value BLOB NOT NULL
         );
         CREATE INDEX IF NOT EXISTS kv_key_rev ON kv (key, rev);
         CREATE TABLE IF NOT EXISTS current (key TEXT PRIMARY KEY, rev INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
         INSERT OR IGNORE INTO meta (name, value) VALUES ('schema', {SCHEMA_VERSION}), ('compacted', 0), ('revision', 0);"
    ))
    .map_err(sql_error)?;
    let schema: i64 =
        tx.query_row("SELECT value FROM meta WHERE name = 'schema'", [], |r| r.get(0)).map_err(sql_error)?;
    if schema != SCHEMA_VERSION {
        return Err(not_ours(format!("schema version {schema}, this Kapal knows {SCHEMA_VERSION}")));
    }
    tx.commit().map_err(sql_error)
}

const ROW: &str = "kv.key, kv.value, kv.create_rev, kv.rev";

fn row_kv(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    let value: Vec<u8> = r.get(1)?;
    Ok(KeyValue { key: r.get(0)?, value: value.into(), create_revision: r.get(2)?, mod_revision: r.get(3)? })
}

fn current_kv(conn: &Connection, key: &str) -> rusqlite::Result<Option<KeyValue>> {
    conn.query_row(
        &format!("SELECT {ROW} FROM current JOIN kv ON kv.rev = current.rev WHERE current.key = ?1"),
        [key],
        row_kv,
    )
    .optional()
}

struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Request>,
}

/// What one applied write produced, before the commit makes it visible.
struct Applied {
    reply: oneshot::Sender<Result<KeyValue>>,
    result: Result<KeyValue>,
    event: Option<Event>,
}

impl Writer {
    fn run(mut self) {
        while let Some(first) = self.rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }
            self.apply_batch(batch);
        }
        tracing::debug!("store writer stopped");
    }

    fn apply_batch(&mut self, batch: Vec<Request>) {
        let start_rev = self.shared.revision.load(Ordering::SeqCst);
        let mut rev = start_rev;
        let mut applied = Vec::with_capacity(batch.len());
        let mut compacted = self.shared.compacted.load(Ordering::SeqCst);
        let outcome = (|| -> rusqlite::Result<()> {
            // IMMEDIATE: take the write lock up front, under the busy timeout, rather than
            // upgrading a read snapshot later (which fails at once with "database is locked"
            // if a checkpoint moved the WAL on meanwhile).
            let mut tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for req in batch {
                // Each write in its own savepoint: one that fails half-way leaves nothing behind
                // and uses no revision, while the rest of the batch still commits.
                let before = (rev, compacted);
                let mut sp = tx.savepoint()?;
                let (result, event) = match apply_op(&sp, &req.op, &mut rev, &mut compacted) {
                    Ok(pair) => {
                        sp.commit()?;
                        pair
                    }
                    Err(e) => {
                        sp.rollback()?;
                        drop(sp);
                        (rev, compacted) = before;
                        (Err(sql_error(e)), None)
                    }
                };
                applied.push(Applied { reply: req.reply, result, event });
            }
            if rev != start_rev {
                tx.execute("UPDATE meta SET value = ?1 WHERE name = 'revision'", [rev])?;
            }
            tx.commit()
        })();
        match outcome {
            Ok(()) => {
                // Only a committed compaction may make readers refuse old revisions.
                self.shared.compacted.store(compacted, Ordering::SeqCst);
                self.shared.revision.store(rev, Ordering::SeqCst);
                for a in applied {
                    if let Some(ev) = a.event {
                        // No receivers is fine: nobody is watching.
                        let _ = self.shared.events.send(Arc::new(ev));
                    }
                    let _ = a.reply.send(a.result);
                }
            }
            Err(e) => {
                let err = sql_error(e);
                tracing::error!(error = %err, "store transaction failed; no write in it was applied");
                for a in applied {
                    let _ = a.reply.send(Err(err.clone()));
                }
            }
        }
    }
}

type OpOutcome = (Result<KeyValue>, Option<Event>);

fn apply_op(
    tx: &rusqlite::Savepoint<'_>,
    op: &Op,
    rev: &mut Revision,
    compacted: &mut Revision,
) -> rusqlite::Result<OpOutcome> {
    match op {
        Op::Create { key, value } => {
            if current_kv(tx, key)?.is_some() {
                return Ok((Err(StoreError::AlreadyExists(key.clone())), None));
            }
            let prev = tx.query_row("SELECT MAX(rev) FROM kv WHERE key = ?1", [key], |r| r.get::<_, Option<i64>>(0))?;
            *rev += 1;
            let kv = insert(tx, key, value, *rev, *rev, prev.unwrap_or(0), false)?;
            Ok((Ok(kv.clone()), Some(Event { kind: EventKind::Create, kv })))
        }
        Op::Update { key, value, expected } => {
            let Some(cur) = current_kv(tx, key)? else {
                return Ok((Err(StoreError::NotFound(key.clone())), None));
            };
            if cur.mod_revision != *expected {
                return Ok((Err(StoreError::Conflict { key: key.clone(), current: Some(cur) }), None));
            }
            *rev += 1;
            let kv = insert(tx, key, value, *rev, cur.create_revision, cur.mod_revision, false)?;
            Ok((Ok(kv.clone()), Some(Event { kind: EventKind::Update, kv })))
        }
        Op::Delete { key, expected } => {
            let Some(cur) = current_kv(tx, key)? else {
                return Ok((Err(StoreError::NotFound(key.clone())), None));
            };
            if expected.is_some_and(|e| e != cur.mod_revision) {
                return Ok((Err(StoreError::Conflict { key: key.clone(), current: Some(cur) }), None));
            }
            *rev += 1;
            insert(tx, key, &cur.value, *rev, cur.create_revision, cur.mod_revision, true)?;
            let kv = KeyValue { mod_revision: *rev, ..cur };
            Ok((Ok(kv.clone()), Some(Event { kind: EventKind::Delete, kv })))
        }
        Op::Compact { revision } => {
            let target = (*revision).min(*rev);
            if target > *compacted {
                compact(tx, *compacted, target)?;
                *compacted = target;
            }
            let kv =
                KeyValue { key: String::new(), value: Arc::from(&[][..]), create_revision: 0, mod_revision: target };
            Ok((Ok(kv), None))
        }
    }
}

fn insert(
    tx: &rusqlite::Savepoint<'_>,
    key: &str,
    value: &[u8],
    rev: Revision,
    create_rev: Revision,
    prev_rev: Revision,
    deleted: bool,
) -> rusqlite::Result<KeyValue> {
    tx.prepare_cached(
        "INSERT INTO kv (rev, key, create_rev, prev_rev, deleted, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![rev, key, create_rev, prev_rev, deleted as i64, value])?;
    if deleted {
        tx.prepare_cached("DELETE FROM current WHERE key = ?1")?.execute([key])?;
    } else {
        tx.prepare_cached(
            "INSERT INTO current (key, rev) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET rev = excluded.rev",
        )?
        .execute(params![key, rev])?;
    }
    Ok(KeyValue { key: key.to_string(), value: Arc::from(value), create_revision: create_rev, mod_revision: rev })
}

/// Removes rows superseded at or before `target`, and tombstones at or before it.
/// Incremental: only rows written after the previous compaction can supersede anything new.
fn compact(tx: &rusqlite::Savepoint<'_>, from: Revision, target: Revision) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM kv WHERE rev IN (SELECT prev_rev FROM kv WHERE rev > ?1 AND rev <= ?2 AND prev_rev > 0)",
        params![from, target],
    )?;
    tx.execute("DELETE FROM kv WHERE deleted = 1 AND rev <= ?1", [target])?;
    tx.execute("UPDATE meta SET value = ?1 WHERE name = 'compacted'", [target])?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.read(move |conn| current_kv(conn, &key)).await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListPage> {
        let current = self.current_revision();
        let compacted = self.compacted_revision();
        if let Some(r) = revision {
            if r > current {
                return Err(StoreError::FutureRevision { requested: r, current });
            }
            if r < compacted {
                return Err(StoreError::Compacted { requested: r, compacted });
            }
        }
        let prefix = prefix.to_string();
        // The range starts at the prefix, or after `start_after` when that is later.
        let start = match start_after.map(|s| format!("{s}\0")) {
            Some(after) if after > prefix => after,
            _ => prefix.clone(),
        };
        let end = prefix_end(&prefix);
        let read_rev = revision.unwrap_or(i64::MAX);
        let (items, remaining, at) = self
            .read(move |conn| {
                // One read snapshot: the rows, the revision and the compaction state agree.
                let tx = conn.unchecked_transaction()?;
                if let Some(r) = revision {
                    let compacted = snapshot_compacted(&tx)?;
                    if r < compacted {
                        return Ok(Err(StoreError::Compacted { requested: r, compacted }));
                    }
                }
                Ok(Ok(list_rows(&tx, &start, &end, limit, read_rev)?))
            })
            .await??;
        let revision = revision.unwrap_or(at);
        Ok(ListPage { items, revision, remaining })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        self.write(Op::Create { key: key.to_string(), value }).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue> {
        self.write(Op::Update { key: key.to_string(), value, expected }).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        self.write(Op::Delete { key: key.to_string(), expected }).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // Subscribe before reading history so that nothing falls in between; duplicates are
        // dropped by revision.
        let live = self.shared.events.subscribe();
        let compacted = self.compacted_revision();
        if after < compacted {
            return Err(StoreError::Compacted { requested: after, compacted });
        }
        let current = self.current_revision();
        if after > current {
            return Err(StoreError::FutureRevision { requested: after, current });
        }
        let history = {
            let (start, end) = (prefix.to_string(), prefix_end(prefix));
            self.read(move |conn| {
                // A compaction may have committed since the check above: look again inside the
                // snapshot the history is read from, so a watch never starts with a gap.
                let tx = conn.unchecked_transaction()?;
                let compacted = snapshot_compacted(&tx)?;
                if after < compacted {
                    return Ok(Err(StoreError::Compacted { requested: after, compacted }));
                }
                Ok(Ok(history_rows(&tx, &start, &end, after)?))
            })
            .await??
        };
        let last = history.last().map_or(after, |e| e.kv.mod_revision);
        let history = futures::stream::iter(history.into_iter().map(Ok));
        // The live part reads the writer's broadcast directly: no task or channel per watcher.
        let state = Live { rx: live, last, prefix: prefix.to_string(), done: false };
        let live = futures::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            loop {
                match st.rx.recv().await {
                    Ok(ev) => {
                        if ev.kv.mod_revision <= st.last || !ev.kv.key.starts_with(&st.prefix) {
                            continue;
                        }
                        st.last = ev.kv.mod_revision;
                        return Some((Ok((*ev).clone()), st));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        st.done = true;
                        return Some((Err(StoreError::WatchLagged), st));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(history.chain(live).boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.write(Op::Compact { revision }).await.map(|_| ())
    }

    fn current_revision(&self) -> Revision {
        self.shared.revision.load(Ordering::SeqCst)
    }

    fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::SeqCst)
    }
}

/// The state of a watch's live part.
struct Live {
    rx: broadcast::Receiver<Arc<Event>>,
    last: Revision,
    prefix: String,
    done: bool,
}

type Rows = (Vec<KeyValue>, usize, Revision);

fn snapshot_compacted(conn: &Connection) -> rusqlite::Result<Revision> {
    conn.query_row("SELECT value FROM meta WHERE name = 'compacted'", [], |r| r.get(0))
}

fn list_rows(conn: &Connection, start: &str, end: &str, limit: usize, at: Revision) -> rusqlite::Result<Rows> {
    let now: Revision = conn.query_row("SELECT COALESCE(MAX(rev), 0) FROM kv", [], |r| r.get(0))?;
    let now = now.max(conn.query_row("SELECT value FROM meta WHERE name = 'revision'", [], |r| r.get(0))?);
    let limit_sql = if limit == 0 { -1 } else { limit as i64 + 1 };
    let mut items = if at >= now {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ROW} FROM current JOIN kv ON kv.rev = current.rev
             WHERE current.key >= ?1 AND current.key < ?2 ORDER BY current.key LIMIT ?3"
        ))?;
        stmt.query_map(params![start, end, limit_sql], row_kv)?.collect::<rusqlite::Result<Vec<_>>>()?
    } else {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ROW} FROM kv JOIN (SELECT key AS k, MAX(rev) AS r FROM kv
                 WHERE key >= ?1 AND key < ?2 AND rev <= ?3 GROUP BY key) latest ON kv.rev = latest.r
             WHERE kv.deleted = 0 ORDER BY kv.key LIMIT ?4"
        ))?;
        stmt.query_map(params![start, end, at, limit_sql], row_kv)?.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut remaining = 0;
    if limit > 0 && items.len() > limit {
        items.truncate(limit);
        let last = items.last().map(|kv| format!("{}\0", kv.key)).unwrap_or_default();
        let count: i64 = if at >= now {
            conn.query_row("SELECT COUNT(*) FROM current WHERE key >= ?1 AND key < ?2", params![last, end], |r| {
                r.get(0)
            })?
        } else {
            conn.query_row(
                "SELECT COUNT(*) FROM kv JOIN (SELECT MAX(rev) AS r FROM kv
                     WHERE key >= ?1 AND key < ?2 AND rev <= ?3 GROUP BY key) latest ON kv.rev = latest.r
                 WHERE kv.deleted = 0",
                params![last, end, at],
                |r| r.get(0),
            )?
        };
        remaining = count as usize;
    }
    Ok((items, remaining, now))
}

fn history_rows(conn: &Connection, start: &str, end: &str, after: Revision) -> rusqlite::Result<Vec<Event>> {
    let mut stmt = conn.prepare_cached(
        "SELECT key, value, create_rev, rev, deleted, prev_rev FROM kv
         WHERE rev > ?1 AND key >= ?2 AND key < ?3 ORDER BY rev",
    )?;
    let rows = stmt.query_map(params![after, start, end], |r| {
        let value: Vec<u8> = r.get(1)?;
        let kv = KeyValue { key: r.get(0)?, value: value.into(), create_revision: r.get(2)?, mod_revision: r.get(3)? };
        let deleted: i64 = r.get(4)?;
        let prev: i64 = r.get(5)?;
        let kind = if deleted != 0 {
            EventKind::Delete
        } else if kv.create_revision == kv.mod_revision || prev == 0 {
            EventKind::Create
        } else {
            EventKind::Update
        };
        Ok(Event { kind, kv })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests;
