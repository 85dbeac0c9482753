//! Crash safety of the SQLite store.
//!
//! A child process (this test binary re-executed, running only `crash_child`) writes through
//! [`WRITERS`] concurrent clients and is killed with SIGKILL at a random moment; the parent then
//! reopens the store, checks every acknowledged write, and starts the next child on the same
//! database, so that recovery after a crash is itself crashed into, round after round.
//!
//! Each writer owns its keys and does one write at a time. Only after the store acknowledged a
//! write does the writer append `key rev value-hash seq` to its own log and fsync it, so the logs
//! are a subset of the acknowledged writes, and the store may hold at most one write per writer
//! that is not in its log: the one that writer had in flight. That makes the check exact.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use kapal_store::sqlite::{Retention, SqliteStore};
use kapal_store::{Revision, Store};

/// Set in the child's environment: the data directory it writes to.
const CHILD_DIR: &str = "KAPAL_CRASH_CHILD_DIR";
/// Set in the child's environment: which round it is.
const CHILD_ROUND: &str = "KAPAL_CRASH_CHILD_ROUND";
/// Overrides the number of kill-and-restart rounds.
const ROUNDS_VAR: &str = "KAPAL_CRASH_ROUNDS";
const DEFAULT_ROUNDS: u32 = 30;
const DB: &str = "state.db";
const WRITERS: usize = 16;
const KEYS_PER_WRITER: usize = 24;
const VALUE_LEN: usize = 1024;
/// A child that was never killed (its parent died) stops by itself.
const CHILD_LIFETIME: Duration = Duration::from_secs(10);

#[test]
fn acknowledged_writes_survive_sigkill() {
    let rounds = std::env::var(ROUNDS_VAR).ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_ROUNDS);
    let dir = tempfile::tempdir().unwrap();
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("crash test: {rounds} rounds in {}, kill-delay seed {seed}", dir.path().display());
    let mut rng = SplitMix64(seed);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut checker = Checker::default();
    let started = Instant::now();
    let (mut total_acks, mut rounds_with_acks, mut in_flight_landed) = (0, 0, 0);
    for round in 0..rounds {
        let delay = Duration::from_millis(50 + rng.next() % 451);
        run_and_kill_child(dir.path(), round, delay);
        let report = runtime.block_on(checker.check_round(dir.path(), round));
        eprintln!(
            "round {round:2}: killed after {:3} ms, {:4} acks, {:2} in-flight writes landed, revision {}, compacted {}",
            delay.as_millis(),
            report.acks,
            report.in_flight_landed,
            report.revision,
            report.compacted
        );
        total_acks += report.acks;
        rounds_with_acks += usize::from(report.acks > 0);
        in_flight_landed += report.in_flight_landed;
    }
    eprintln!(
        "crash test: {total_acks} acknowledged writes checked, {in_flight_landed} unacknowledged ones landed, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // A child killed before it acknowledged anything tests only recovery; most rounds must
    // have been killed in the middle of a stream of writes for the test to mean anything.
    assert!(
        rounds_with_acks * 2 >= rounds as usize,
        "only {rounds_with_acks} of {rounds} rounds acknowledged a write before the kill"
    );
}

/// The store must not reuse or step back revisions across restarts, even when every row that
/// held the newest revision has been deleted and compacted away.
#[tokio::test]
async fn reopened_store_continues_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB);
    let mut last = 0;
    for cycle in 0..6i64 {
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.current_revision(), last, "cycle {cycle}: revision after reopen");
        let key = format!("/r/{cycle}");
        let created = store.create(&key, vec![1; 16]).await.unwrap();
        assert_eq!(created.mod_revision, last + 1, "cycle {cycle}: first write after reopen");
        let updated = store.update(&key, vec![2; 16], created.mod_revision).await.unwrap();
        assert_eq!(updated.mod_revision, last + 2);
        if cycle % 2 == 1 {
            // Empty the log entirely: no row holds the current revision any more.
            for kv in store.list("/r/", None, 0, None).await.unwrap().items {
                store.delete(&kv.key, Some(kv.mod_revision)).await.unwrap();
            }
            store.compact(store.current_revision()).await.unwrap();
            assert!(store.list("/r/", None, 0, None).await.unwrap().items.is_empty());
        }
        last = store.current_revision();
        let compacted = store.compacted_revision();
        drop(store);
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(reopened.current_revision(), last, "cycle {cycle}: revision survives reopen");
        assert_eq!(reopened.compacted_revision(), compacted, "cycle {cycle}: compaction survives reopen");
    }
}

/// The child: runs only when re-executed by `acknowledged_writes_survive_sigkill`.
#[test]
#[ignore = "the child process of acknowledged_writes_survive_sigkill, which runs it"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let round: u32 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(child_main(PathBuf::from(dir), round));
}

fn run_and_kill_child(dir: &Path, round: u32, delay: Duration) {
    let stderr_path = dir.join(format!("child-r{round}.stderr"));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_ROUND, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    if let Some(status) = child.try_wait().unwrap() {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        panic!("round {round}: the child exited ({status}) before it was killed:\n{stderr}");
    }
    // std's kill is SIGKILL on Unix.
    child.kill().unwrap();
    child.wait().unwrap();
}

async fn child_main(dir: PathBuf, round: u32) {
    let store = SqliteStore::open(&dir.join(DB)).unwrap();
    // Compaction runs too, so that kills also land in compacting transactions.
    let retention = Retention { min_revisions: 300, min_age: Duration::ZERO, interval: Duration::from_millis(20) };
    let _compactor = store.spawn_compactor(retention);
    let deadline = Instant::now() + CHILD_LIFETIME;
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        writers.spawn(child_writer(store.clone(), dir.clone(), round, w, deadline));
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
}

async fn child_writer(store: SqliteStore, dir: PathBuf, round: u32, w: usize, deadline: Instant) {
    // The keys this writer created in earlier rounds, and their revisions, as recovered.
    let mut keys: Vec<(String, Revision)> = store
        .list(&writer_prefix(w), None, 0, None)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| (kv.key, kv.mod_revision))
        .collect();
    let path = ack_log(&dir, round, w);
    let mut log = Some(File::options().create(true).append(true).open(path).unwrap());
    let mut rng = SplitMix64(u64::from(round) << 32 | w as u64);
    let mut seq = 0;
    while Instant::now() < deadline {
        let create = keys.len() < KEYS_PER_WRITER && (keys.is_empty() || rng.next().is_multiple_of(4));
        let kv = if create {
            let key = key_name(w, keys.len());
            let value = make_value(w, round, seq, &key);
            let kv = store.create(&key, value).await.unwrap_or_else(|e| panic!("writer {w}: {e}"));
            keys.push((key, kv.mod_revision));
            kv
        } else {
            let i = (rng.next() % keys.len() as u64) as usize;
            let (key, expected) = &mut keys[i];
            let value = make_value(w, round, seq, key);
            let kv = store.update(key, value, *expected).await.unwrap_or_else(|e| panic!("writer {w}: {e}"));
            *expected = kv.mod_revision;
            kv
        };
        let line = format!("{} {} {:016x} {seq}\n", kv.key, kv.mod_revision, fnv1a(&kv.value));
        let mut file = log.take().unwrap();
        let file = tokio::task::spawn_blocking(move || {
            file.write_all(line.as_bytes())?;
            file.sync_data()?;
            std::io::Result::Ok(file)
        })
        .await
        .unwrap()
        .unwrap();
        log = Some(file);
        seq += 1;
    }
}

/// One acknowledged write, as its writer logged it.
#[derive(Debug)]
struct Ack {
    key: String,
    rev: Revision,
    hash: u64,
    seq: u64,
}

/// What the store holds for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    mod_revision: Revision,
    create_revision: Revision,
    hash: u64,
    round: u32,
    seq: u64,
}

/// What the parent knows from the rounds it has checked.
#[derive(Default)]
struct Checker {
    /// Every key as the store held it at the end of the previous round (checked then).
    state: BTreeMap<String, Stored>,
    /// Every acknowledged revision so far, across rounds.
    acked: HashSet<Revision>,
    /// The store's revision at the end of the previous round.
    revision: Revision,
}

struct RoundReport {
    acks: usize,
    in_flight_landed: usize,
    revision: Revision,
    compacted: Revision,
}

impl Checker {
    async fn check_round(&mut self, dir: &Path, round: u32) -> RoundReport {
        let store =
            SqliteStore::open(&dir.join(DB)).unwrap_or_else(|e| panic!("round {round}: reopening after SIGKILL: {e}"));
        let revision = store.current_revision();
        let compacted = store.compacted_revision();
        assert!(compacted <= revision, "round {round}: compacted {compacted} > revision {revision}");

        let acks: Vec<Vec<Ack>> = (0..WRITERS).map(|w| read_ack_log(&ack_log(dir, round, w))).collect();
        let expected = self.apply_acks(round, &acks, revision);
        let actual = read_state(&store, round).await;

        let mut in_flight_landed = 0;
        for (w, writer_acks) in acks.iter().enumerate() {
            let prefix = writer_prefix(w);
            let mine = |m: &BTreeMap<String, Stored>| -> BTreeMap<String, Stored> {
                m.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)).map(clone_pair).collect()
            };
            in_flight_landed += self.check_writer(round, w, writer_acks, &mine(&expected), &mine(&actual));
        }

        check_rows(dir, round, revision, actual.len());
        check_history(&store, round, revision, compacted).await;
        self.state = actual;
        self.revision = revision;
        RoundReport { acks: acks.iter().map(Vec::len).sum(), in_flight_landed, revision, compacted }
    }

    /// Checks that a writer's keys are as its acknowledged writes left them, except at most one
    /// key holding its in-flight write; returns how many in-flight writes landed (0 or 1).
    fn check_writer(
        &self,
        round: u32,
        w: usize,
        acks: &[Ack],
        want: &BTreeMap<String, Stored>,
        got: &BTreeMap<String, Stored>,
    ) -> usize {
        let differing: BTreeMap<&String, (Option<&Stored>, Option<&Stored>)> = want
            .keys()
            .chain(got.keys())
            .map(|k| (k, (want.get(k), got.get(k))))
            .filter(|(_, (a, b))| a != b)
            .collect();
        assert!(
            differing.len() <= 1,
            "round {round}: writer {w} has {} keys that differ from its acknowledged writes, but at most \
             one write was in flight; (acknowledged, stored):\n{differing:#?}",
            differing.len()
        );
        let Some((&key, &(acked, stored))) = differing.iter().next() else {
            return 0;
        };
        let Some(landed) = stored else {
            panic!("round {round}: acknowledged write lost: {key} should be {acked:?}, the store has nothing");
        };
        let next_seq = acks.last().map_or(0, |a| a.seq + 1);
        let last_rev = acks.last().map_or(self.revision, |a| a.rev);
        assert!(
            landed.round == round && landed.seq == next_seq && landed.mod_revision > last_rev,
            "round {round}: {key} is {landed:?}, which is neither the last acknowledged write {acked:?} \
             nor writer {w}'s in-flight write (round {round}, seq {next_seq}, after revision {last_rev})"
        );
        let create_revision = acked.map_or(landed.mod_revision, |s| s.create_revision);
        assert_eq!(landed.create_revision, create_revision, "round {round}: {key} create revision");
        assert!(!self.acked.contains(&landed.mod_revision), "round {round}: {key} reuses an acknowledged revision");
        1
    }

    /// The state the acknowledged writes of this round lead to from the previous round's.
    fn apply_acks(&mut self, round: u32, acks: &[Vec<Ack>], revision: Revision) -> BTreeMap<String, Stored> {
        let mut expected = self.state.clone();
        for (w, writer_acks) in acks.iter().enumerate() {
            for (i, ack) in writer_acks.iter().enumerate() {
                assert!(ack.key.starts_with(&writer_prefix(w)), "round {round}: writer {w} wrote {}", ack.key);
                assert_eq!(ack.seq, i as u64, "round {round}: writer {w} logged seq {} as its ack #{i}", ack.seq);
                assert!(
                    ack.rev > self.revision,
                    "round {round}: {} acknowledged at revision {}, not after the revision {} the store had \
                     when it was restarted",
                    ack.key,
                    ack.rev,
                    self.revision
                );
                assert!(
                    ack.rev <= revision,
                    "round {round}: acknowledged revision {} > store revision {revision}",
                    ack.rev
                );
                assert!(self.acked.insert(ack.rev), "round {round}: revision {} acknowledged twice", ack.rev);
                let create_revision = match expected.get(&ack.key) {
                    Some(prev) => {
                        assert!(ack.rev > prev.mod_revision, "round {round}: {} went back in revision", ack.key);
                        prev.create_revision
                    }
                    None => ack.rev,
                };
                let stored = Stored { mod_revision: ack.rev, create_revision, hash: ack.hash, round, seq: ack.seq };
                expected.insert(ack.key.clone(), stored);
            }
        }
        expected
    }
}

fn clone_pair((k, v): (&String, &Stored)) -> (String, Stored) {
    (k.clone(), v.clone())
}

/// Every key under `/crash/`, through the store's API, with each value checked to be whole.
async fn read_state(store: &SqliteStore, round: u32) -> BTreeMap<String, Stored> {
    let page = store.list("/crash/", None, 0, None).await.unwrap();
    let mut state = BTreeMap::new();
    for kv in page.items {
        let value = parse_value(&kv.value).unwrap_or_else(|e| panic!("round {round}: {}: {e}", kv.key));
        assert_eq!(value.key, kv.key, "round {round}: a value written for {} is stored under {}", value.key, kv.key);
        assert!(
            kv.key.starts_with(&writer_prefix(value.writer)),
            "round {round}: {} written by writer {}",
            kv.key,
            value.writer
        );
        assert!(
            kv.mod_revision <= page.revision,
            "round {round}: {} at revision {} > {}",
            kv.key,
            kv.mod_revision,
            page.revision
        );
        assert_eq!(store.get(&kv.key).await.unwrap().as_ref(), Some(&kv), "round {round}: get and list disagree");
        let stored = Stored {
            mod_revision: kv.mod_revision,
            create_revision: kv.create_revision,
            hash: fnv1a(&kv.value),
            round: value.round,
            seq: value.seq,
        };
        state.insert(kv.key, stored);
    }
    // Keys are created in order and never deleted: each writer's are k0000..kNNNN, no holes.
    for w in 0..WRITERS {
        let prefix = writer_prefix(w);
        let keys: Vec<&String> = state.keys().filter(|k| k.starts_with(&prefix)).collect();
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(**key, key_name(w, i), "round {round}: writer {w}'s keys have a hole");
        }
    }
    state
}

/// Row-level checks on the file itself: SQLite's own integrity check, and no row of the log or
/// of the current-key index that is half-written or points nowhere.
fn check_rows(dir: &Path, round: u32, revision: Revision, live_keys: usize) {
    let conn = rusqlite::Connection::open(dir.join(DB)).unwrap();
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok", "round {round}: integrity check");
    let mut stmt = conn.prepare("SELECT rev, key, create_rev, deleted, value FROM kv").unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Vec<u8>>(4)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (rev, key, create_rev, deleted, value) = row.unwrap();
        assert!(0 < rev && rev <= revision, "round {round}: row {rev} of {key} is outside 1..={revision}");
        assert!(0 < create_rev && create_rev <= rev, "round {round}: row {rev} of {key} created at {create_rev}");
        assert_eq!(deleted, 0, "round {round}: row {rev}: nothing is ever deleted in this test");
        let parsed = parse_value(&value).unwrap_or_else(|e| panic!("round {round}: row {rev} of {key}: {e}"));
        assert_eq!(parsed.key, key, "round {round}: row {rev}");
    }
    let dangling: i64 = conn
        .query_row("SELECT COUNT(*) FROM current LEFT JOIN kv ON kv.rev = current.rev AND kv.key = current.key WHERE kv.rev IS NULL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(dangling, 0, "round {round}: current points at missing rows");
    let current: i64 = conn.query_row("SELECT COUNT(*) FROM current", [], |r| r.get(0)).unwrap();
    assert_eq!(current as usize, live_keys, "round {round}: current rows vs listed keys");
}

/// The retained history replays in strictly increasing revisions, with whole values, up to the
/// current revision (the newest write is never superseded, so it is always retained).
async fn check_history(store: &SqliteStore, round: u32, revision: Revision, compacted: Revision) {
    if revision == 0 {
        return;
    }
    let mut watch = store.watch("/crash/", compacted).await.unwrap();
    let mut last = compacted;
    while last < revision {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap_or_else(|_| panic!("round {round}: history from {compacted} stopped at {last} < {revision}"))
            .unwrap()
            .unwrap();
        assert!(event.kv.mod_revision > last, "round {round}: history out of order at {}", event.kv.mod_revision);
        parse_value(&event.kv.value)
            .unwrap_or_else(|e| panic!("round {round}: history event {}: {e}", event.kv.mod_revision));
        last = event.kv.mod_revision;
    }
    assert_eq!(last, revision, "round {round}: history ends past the current revision");
}

fn read_ack_log(path: &Path) -> Vec<Ack> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new(); // killed before this writer opened its log
    };
    // A line cut short by the kill was never completely logged; everything before it was.
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let [key, rev, hash, seq] = fields[..] else { panic!("{}: bad ack line {line:?}", path.display()) };
            Ack {
                key: key.to_string(),
                rev: rev.parse().unwrap(),
                hash: u64::from_str_radix(hash, 16).unwrap(),
                seq: seq.parse().unwrap(),
            }
        })
        .collect()
}

fn ack_log(dir: &Path, round: u32, w: usize) -> PathBuf {
    dir.join(format!("acks-r{round:02}-w{w:02}.log"))
}

fn writer_prefix(w: usize) -> String {
    format!("/crash/w{w:02}/")
}

fn key_name(w: usize, i: usize) -> String {
    format!("/crash/w{w:02}/k{i:04}")
}

/// What a value says about itself.
#[derive(Debug)]
struct Value {
    writer: usize,
    round: u32,
    seq: u64,
    key: String,
}

/// A 1 KiB value: a header naming who wrote it, filler derived from the header, and a hash of
/// both, so that a torn or mixed-up value cannot pass [`parse_value`].
fn make_value(w: usize, round: u32, seq: u64, key: &str) -> Vec<u8> {
    let mut body = format!("kapal-crash w={w} r={round} s={seq} key={key}\n").into_bytes();
    let mut rng = SplitMix64(fnv1a(&body));
    while body.len() < VALUE_LEN - 16 {
        body.push(b"0123456789abcdef"[(rng.next() % 16) as usize]);
    }
    let hash = fnv1a(&body);
    body.extend_from_slice(format!("{hash:016x}").as_bytes());
    body
}

fn parse_value(bytes: &[u8]) -> Result<Value, String> {
    if bytes.len() != VALUE_LEN {
        return Err(format!("value is {} bytes, not {VALUE_LEN}", bytes.len()));
    }
    let header = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let header = std::str::from_utf8(header).map_err(|_| "value header is not UTF-8".to_string())?;
    let fields: Vec<&str> = header.split(' ').collect();
    let bad = || format!("bad value header {header:?}");
    let ["kapal-crash", w, r, s, key] = fields[..] else { return Err(bad()) };
    let field = |f: &str, name: &str| f.strip_prefix(name).map(str::to_string).ok_or_else(bad);
    let value = Value {
        writer: field(w, "w=")?.parse().map_err(|_| bad())?,
        round: field(r, "r=")?.parse().map_err(|_| bad())?,
        seq: field(s, "s=")?.parse().map_err(|_| bad())?,
        key: field(key, "key=")?,
    };
    if make_value(value.writer, value.round, value.seq, &value.key) != bytes {
        return Err(format!("value of {header:?} is corrupt (its body or hash does not match)"));
    }
    Ok(value)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// A tiny deterministic generator, so that a child's writes follow from its round and writer.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
