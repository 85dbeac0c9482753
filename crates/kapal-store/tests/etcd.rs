//! The store contract on real etcd processes (Debian `etcd-server`), started by each test on
//! free loopback ports with their data in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kapal_store::etcd::{EtcdConfig, EtcdStore};
use kapal_store::{EventKind, Store, StoreError};

const ETCD: &str = "/usr/bin/etcd";

/// Whether etcd is installed; says so loudly when it is not.
fn etcd_available() -> bool {
    if Path::new(ETCD).exists() {
        return true;
    }
    eprintln!("SKIPPED: {ETCD} is missing (apt-get install etcd-server); the etcd store was not tested");
    false
}

fn free_ports(n: usize) -> Vec<u16> {
    // Holding all listeners until every port is chosen keeps them distinct.
    let listeners: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Certificates for a TLS member: a CA, a serving certificate for 127.0.0.1, a client one.
struct TlsFiles {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// One to three etcd members on loopback; every process is killed on drop.
struct Cluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial_cluster: String,
    tls: Option<TlsFiles>,
}

impl Cluster {
    fn start(size: usize) -> Cluster {
        Cluster::start_with(size, false)
    }

    fn start_with(size: usize, tls: bool) -> Cluster {
        // etcd fsyncs every write; memory-backed storage keeps the tests fast.
        let dir = match Path::new("/dev/shm").is_dir() {
            true => tempfile::Builder::new().prefix("kapal-etcd-").tempdir_in("/dev/shm").unwrap(),
            false => tempfile::tempdir().unwrap(),
        };
        let ports = free_ports(size * 2);
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let tls = tls.then(|| make_certs(dir.path()));
        let mut cluster = Cluster { dir, members, initial_cluster, tls };
        for i in 0..size {
            cluster.start_member(i);
        }
        cluster
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    fn endpoint(&self, i: usize) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.members[i].client_port)
    }

    fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    fn start_member(&mut self, i: usize) {
        let client_url = self.endpoint(i);
        let m = &self.members[i];
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name))).unwrap();
        let mut cmd = Command::new(ETCD);
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.path().join(&m.name))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", m.peer_port)])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{}", m.peer_port)])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &format!("kapal-test-{}", self.members[0].peer_port)])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500", "--logger", "zap"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file").arg(&tls.server_cert).arg("--key-file").arg(&tls.server_key);
            cmd.arg("--trusted-ca-file").arg(&tls.ca).arg("--client-cert-auth");
        }
        self.members[i].child = Some(cmd.spawn().unwrap());
    }

    fn stop_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn config(&self, prefix: &str) -> EtcdConfig {
        let mut config = EtcdConfig::new(self.endpoints());
        config.prefix = prefix.to_string();
        config.dial_timeout = Duration::from_secs(15);
        if let Some(tls) = &self.tls {
            config.ca_file = Some(tls.ca.clone());
            config.cert_file = Some(tls.client_cert.clone());
            config.key_file = Some(tls.client_key.clone());
        }
        config
    }

    /// A store on the whole cluster; waits for etcd to come up.
    async fn store(&self) -> EtcdStore {
        self.store_with_prefix("/registry").await
    }

    async fn store_with_prefix(&self, prefix: &str) -> EtcdStore {
        EtcdStore::connect(self.config(prefix)).await.unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
    }
}

fn make_certs(dir: &Path) -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "kapal test etcd ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = write("ca.pem", ca_cert.pem());
    let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap();
    let leaf = |cn: &str, usage: ExtendedKeyUsagePurpose| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf("etcd", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf("kapal", ExtendedKeyUsagePurpose::ClientAuth);
    TlsFiles {
        ca,
        server_cert: write("server.pem", server_cert),
        server_key: write("server-key.pem", server_key),
        client_cert: write("client.pem", client_cert),
        client_key: write("client-key.pem", client_key),
    }
}

/// Retries `f` until it succeeds or `within` passes.
async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + within;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("still failing after {within:?}: {e}"),
        }
    }
}

#[tokio::test]
async fn create_update_delete_follow_revisions() {
    if !etcd_available() {
        return;
    }
    let etcd = Cluster::start(1);
    let s = etcd.store().await;
    let a = s.create("/registry/r/a", b"1".to_vec()).await.unwrap();
    assert_eq!(a.create_revision, a.mod_revision);
    assert_eq!(s.current_revision(), a.mod_revision);
    assert_eq!(s.create("/registry/r/a", b"x".to_vec()).await, Err(StoreError::AlreadyExists("/registry/r/a".into())));
    let stale = s.update("/registry/r/a", b"2".to_vec(), 0).await;
    match stale {
        Err(StoreError::Conflict { key, current: Some(current) }) => {
            assert_eq!(key, "/registry/r/a");
            assert_eq!((current.mod_revision, &*current.value), (a.mod_revision, &b"1"[..]));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let b = s.update("/registry/r/a", b"2".to_vec(), a.mod_revision).await.unwrap();
    assert_eq!((b.create_revision, b.mod_revision), (a.create_revision, a.mod_revision + 1));
    let got = s.get("/registry/r/a").await.unwrap().unwrap();
    assert_eq!((&*got.value, got.mod_revision, got.create_revision), (&b"2"[..], b.mod_revision, a.mod_revision));
    assert!(matches!(s.delete("/registry/r/a", Some(a.mod_revision)).await, Err(StoreError::Conflict { .. })));
    let d = s.delete("/registry/r/a", Some(b.mod_revision)).await.unwrap();
    assert_eq!((d.mod_revision, &*d.value, d.create_revision), (b.mod_revision + 1, &b"2"[..], a.create_revision));
    assert_eq!(s.get("/registry/r/a").await.unwrap(), None);
    assert_eq!(s.current_revision(), d.mod_revision);
    assert_eq!(s.delete("/registry/r/a", None).await, Err(StoreError::NotFound("/registry/r/a".into())));
    assert_eq!(s.update("/registry/r/a", b"3".to_vec(), 0).await, Err(StoreError::NotFound("/registry/r/a".into())));
    assert_eq!(s.get("/registry/r/a").await.unwrap(), None, "an update with expected 0 must not create the key");
    let again = s.create("/registry/r/a", b"3".to_vec()).await.unwrap();
    assert_eq!(again.create_revision, d.mod_revision + 1);
    let gone = s.delete("/registry/r/a", None).await.unwrap();
    assert_eq!(&*gone.value, b"3");
    assert!(matches!(s.get("/elsewhere").await, Err(StoreError::Internal(m)) if m.contains("outside /registry/")));
}

#[tokio::test]
async fn list_pages_and_reads_old_revisions() {
    if !etcd_available() {
        return;
    }
    let etcd = Cluster::start(1);
    let s = etcd.store().await;
    let mut made = Vec::new();
    for i in 0..10u8 {
        made.push(s.create(&format!("/registry/r/k{i}"), vec![i]).await.unwrap());
    }
    s.create("/registry/rx", b"outside".to_vec()).await.unwrap();
    let page = s.list("/registry/r/", None, 4, None).await.unwrap();
    let keys: Vec<_> = page.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/registry/r/k0", "/registry/r/k1", "/registry/r/k2", "/registry/r/k3"]);
    assert_eq!(page.remaining, 6);
    assert_eq!(page.revision, s.current_revision());
    let at = page.revision;
    s.delete("/registry/r/k5", None).await.unwrap();
    s.update("/registry/r/k6", b"new".to_vec(), made[6].mod_revision).await.unwrap();
    let next = s.list("/registry/r/", Some(&page.items[3].key), 3, Some(at)).await.unwrap();
    let keys: Vec<_> = next.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/registry/r/k4", "/registry/r/k5", "/registry/r/k6"]);
    assert_eq!((next.revision, next.remaining), (at, 3));
    assert_eq!(&*next.items[2].value, &[6u8][..]);
    let last = s.list("/registry/r/", Some(&next.items[2].key), 0, Some(at)).await.unwrap();
    assert_eq!((last.items.len(), last.remaining), (3, 0));
    let now = s.list("/registry/r/", None, 0, None).await.unwrap();
    assert_eq!(now.items.len(), 9);
    assert_eq!(now.items[5].key, "/registry/r/k6");
    assert_eq!(&*now.items[5].value, b"new");
    let future = s.current_revision() + 100;
    assert!(matches!(
        s.list("/registry/r/", None, 0, Some(future)).await,
        Err(StoreError::FutureRevision { requested, .. }) if requested == future
    ));
}

#[tokio::test]
async fn watch_replays_history_then_goes_live() {
    if !etcd_available() {
        return;
    }
    let etcd = Cluster::start(1);
    let s = etcd.store().await;
    let a = s.create("/registry/r/a", b"1".to_vec()).await.unwrap();
    let b = s.create("/registry/r/b", b"1".to_vec()).await.unwrap();
    s.create("/registry/other", b"1".to_vec()).await.unwrap();
    let mut w = s.watch("/registry/r/", a.mod_revision).await.unwrap();
    let first = w.next().await.unwrap().unwrap();
    assert_eq!((first.kind, first.kv.key.as_str()), (EventKind::Create, "/registry/r/b"));
    assert_eq!(first.kv.mod_revision, b.mod_revision);
    let up = s.update("/registry/r/a", b"2".to_vec(), a.mod_revision).await.unwrap();
    let del = s.delete("/registry/r/b", None).await.unwrap();
    let ev = w.next().await.unwrap().unwrap();
    assert_eq!((ev.kind, ev.kv.mod_revision, &*ev.kv.value), (EventKind::Update, up.mod_revision, &b"2"[..]));
    let ev = w.next().await.unwrap().unwrap();
    assert_eq!((ev.kind, &*ev.kv.value), (EventKind::Delete, &b"1"[..]));
    assert_eq!((ev.kv.mod_revision, ev.kv.create_revision), (del.mod_revision, b.create_revision));
    assert!(s.current_revision() >= del.mod_revision);

    // A watch from "now" sees only what follows, and a watch from the future is refused.
    let mut live = s.watch("/registry/", s.current_revision()).await.unwrap();
    let c = s.create("/registry/r/c", b"1".to_vec()).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), live.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((ev.kv.key.as_str(), ev.kv.mod_revision), ("/registry/r/c", c.mod_revision));
    let ahead = s.current_revision() + 10;
    assert!(matches!(
        s.watch("/registry/", ahead).await.err(),
        Some(StoreError::FutureRevision { requested, .. }) if requested == ahead
    ));
}

#[tokio::test]
async fn compaction_removes_history_and_expires_old_watches() {
    if !etcd_available() {
        return;
    }
    let etcd = Cluster::start(1);
    let s = etcd.store().await;
    let mut kv = s.create("/registry/r/a", b"1".to_vec()).await.unwrap();
    let early = kv.mod_revision;
    for i in 1..20u8 {
        kv = s.update("/registry/r/a", vec![i], kv.mod_revision).await.unwrap();
    }
    s.create("/registry/r/gone", b"x".to_vec()).await.unwrap();
    let gone = s.delete("/registry/r/gone", None).await.unwrap();
    let target = gone.mod_revision;
    s.compact(target).await.unwrap();
    assert_eq!(s.compacted_revision(), target);
    assert_eq!(
        s.watch("/registry/r/", early).await.err(),
        Some(StoreError::Compacted { requested: early, compacted: target })
    );
    assert!(matches!(
        s.list("/registry/r/", None, 0, Some(early)).await,
        Err(StoreError::Compacted { requested, compacted }) if requested == early && compacted == target
    ));
    assert_eq!(s.list("/registry/r/", None, 0, None).await.unwrap().items.len(), 1);
    s.compact(target).await.unwrap();
    s.compact(s.current_revision() + 1000).await.unwrap();
    assert_eq!(s.compacted_revision(), s.current_revision(), "compaction stops at the newest revision");

    // Another process knows nothing of the compaction until etcd tells it.
    let other = etcd.store().await;
    assert_eq!(other.compacted_revision(), 0);
    assert!(matches!(
        other.list("/registry/r/", None, 0, Some(early)).await,
        Err(StoreError::Compacted { compacted, .. }) if compacted == s.compacted_revision()
    ));
    assert_eq!(other.compacted_revision(), s.compacted_revision());
    let third = etcd.store().await;
    let failed = match third.watch("/registry/r/", early).await {
        Err(e) => e,
        Ok(mut w) => tokio::time::timeout(Duration::from_secs(5), w.next()).await.unwrap().unwrap().unwrap_err(),
    };
    assert!(
        matches!(failed, StoreError::Compacted { compacted, .. } if compacted == s.compacted_revision()),
        "{failed}"
    );
    assert_eq!(third.compacted_revision(), s.compacted_revision());
}

#[tokio::test]
async fn concurrent_writers_all_land_with_unique_revisions() {
    if !etcd_available() {
        return;
    }
    let etcd = Cluster::start(1);
    let s = etcd.store().await;
    let start = s.current_revision();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..50 {
                revs.push(s.create(&format!("/registry/r/{w}/{i}"), vec![0; 64]).await.unwrap().mod_revision);
            }
            revs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 800);
    assert_eq!(all.first().copied(), Some(start + 1));
    assert_eq!(s.current_revision(), start + 800);
    // Racing guarded updates of one key: exactly one wins each round.
    let key = "/registry/r/contended";
    let base = s.create(key, b"0".to_vec()).await.unwrap();
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.update(key, vec![i], base.mod_revision).await })
        })
        .collect();
    let mut wins = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict { current: Some(_), .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn a_custom_prefix_isolates_clusters_on_one_etcd() {
    if !etcd_available() {
        return;
    }
    let etcd = Cluster::start(1);
    let a = etcd.store_with_prefix("/kapal-a").await;
    let b = etcd.store_with_prefix("/kapal-b/").await;
    let default = etcd.store().await;
    let mut watch_a = a.watch("/registry/", a.current_revision()).await.unwrap();
    let in_a = a.create("/registry/pods/x", b"a".to_vec()).await.unwrap();
    b.create("/registry/pods/x", b"b".to_vec()).await.unwrap();
    b.create("/registry/pods/y", b"b".to_vec()).await.unwrap();
    assert_eq!(&*a.get("/registry/pods/x").await.unwrap().unwrap().value, b"a");
    assert_eq!(&*b.get("/registry/pods/x").await.unwrap().unwrap().value, b"b");
    assert_eq!(a.list("/registry/", None, 0, None).await.unwrap().items.len(), 1);
    // Reads see etcd's global revision in their headers; a watch cache waiting for the store's
    // revision would wait forever for B's writes, which never arrive on A's watch.
    assert_eq!(a.current_revision(), in_a.mod_revision, "another prefix's writes do not move this store's revision");
    assert_eq!(b.list("/registry/", None, 0, None).await.unwrap().items.len(), 2);
    assert!(default.list("/registry/", None, 0, None).await.unwrap().items.is_empty());
    let a2 = a.create("/registry/pods/z", b"a".to_vec()).await.unwrap();
    let first = watch_a.next().await.unwrap().unwrap();
    let second = watch_a.next().await.unwrap().unwrap();
    assert_eq!((first.kv.key.as_str(), second.kv.mod_revision), ("/registry/pods/x", a2.mod_revision));

    // The layout in etcd itself: `<prefix>/<rest of the Kapal key>`.
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None).await.unwrap();
    let resp = raw.get("/kapal-a/pods/x", None).await.unwrap();
    assert_eq!(resp.kvs()[0].value(), b"a");
    let resp = raw.get("/registry/pods/x", None).await.unwrap();
    assert!(resp.kvs().is_empty());
}

/// The id of the member that leads, asked of `endpoint`.
async fn leader_seen_by(endpoint: &str) -> Option<u64> {
    let mut client = etcd_client::Client::connect([endpoint], None).await.ok()?;
    let status = tokio::time::timeout(Duration::from_secs(1), client.status()).await.ok()?.ok()?;
    Some(status.leader()).filter(|l| *l != 0)
}

async fn member_id(endpoint: &str) -> u64 {
    let mut client = etcd_client::Client::connect([endpoint], None).await.unwrap();
    client.status().await.unwrap().header().unwrap().member_id()
}

/// Writes, reads, lists and a watch, all of which must work at once.
async fn serve_some(s: &EtcdStore, round: usize) {
    let from = s.current_revision();
    for i in 0..20 {
        let key = format!("/registry/r/{round}/{i}");
        let kv = s.create(&key, b"v".to_vec()).await.unwrap_or_else(|e| panic!("creating {key}: {e}"));
        s.update(&key, b"w".to_vec(), kv.mod_revision).await.unwrap_or_else(|e| panic!("updating {key}: {e}"));
        assert_eq!(&*s.get(&key).await.unwrap().unwrap().value, b"w");
    }
    assert_eq!(s.list(&format!("/registry/r/{round}/"), None, 0, None).await.unwrap().items.len(), 20);
    let mut w = s.watch(&format!("/registry/r/{round}/"), from).await.unwrap();
    for _ in 0..40 {
        w.next().await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn three_members_keep_serving_when_one_stops() {
    if !etcd_available() {
        return;
    }
    let mut etcd = Cluster::start(3);
    let s = etcd.store().await;
    serve_some(&s, 0).await;
    let ids =
        [member_id(&etcd.endpoint(0)).await, member_id(&etcd.endpoint(1)).await, member_id(&etcd.endpoint(2)).await];
    let leader_id = leader_seen_by(&etcd.endpoint(0)).await.unwrap();
    let leader = ids.iter().position(|id| *id == leader_id).unwrap();
    let follower = (leader + 1) % 3;

    // A follower goes away: nothing to wait for.
    etcd.stop_member(follower);
    let started = Instant::now();
    serve_some(&s, 1).await;
    eprintln!("served a round without a follower in {:?}", started.elapsed());
    etcd.start_member(follower);
    let back = etcd.endpoint(follower);
    eventually(Duration::from_secs(15), || async {
        leader_seen_by(&back).await.ok_or_else(|| StoreError::Unavailable("follower not back".into()))
    })
    .await;

    // The leader goes away: once the others elect a new one, everything works again.
    let mut watch = s.watch("/registry/", s.current_revision()).await.unwrap();
    etcd.stop_member(leader);
    let survivor = etcd.endpoint(follower);
    let started = Instant::now();
    eventually(Duration::from_secs(10), || async {
        match leader_seen_by(&survivor).await {
            Some(id) if id != leader_id => Ok(id),
            _ => Err(StoreError::Unavailable("no new leader yet".into())),
        }
    })
    .await;
    eprintln!("new leader after {:?}", started.elapsed());
    let kv = s.create("/registry/r/after-leader-loss", b"1".to_vec()).await.unwrap();
    serve_some(&s, 2).await;
    // The old watch either still runs (its member survived) or ended with Unavailable;
    // a consumer that re-watches from its last revision misses nothing.
    match tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap() {
        Some(Ok(ev)) => assert_eq!(ev.kv.mod_revision, kv.mod_revision),
        Some(Err(StoreError::Unavailable(_))) | None => {
            let mut again = s.watch("/registry/", kv.mod_revision - 1).await.unwrap();
            let ev = again.next().await.unwrap().unwrap();
            assert_eq!(ev.kv.mod_revision, kv.mod_revision);
        }
        Some(Err(e)) => panic!("unexpected watch error {e}"),
    }
}

#[tokio::test]
async fn all_members_down_is_unavailable_quickly_and_recovers() {
    if !etcd_available() {
        return;
    }
    let mut etcd = Cluster::start(1);
    let mut config = etcd.config("/registry");
    config.request_timeout = Duration::from_secs(1);
    let s = EtcdStore::connect(config.clone()).await.unwrap();
    let kv = s.create("/registry/r/a", b"1".to_vec()).await.unwrap();
    let mut watch = s.watch("/registry/", kv.mod_revision).await.unwrap();

    etcd.stop_member(0);
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("the watch must not hang");
    assert!(matches!(ended, Some(Err(StoreError::Unavailable(_)))), "{ended:?}");
    assert!(watch.next().await.is_none(), "a broken watch ends after its error");

    let endpoint = etcd.endpoint(0);
    // Arguments are evaluated in order: the clock starts before the operation.
    let timed = |op: &'static str, started: Instant, result: Result<(), StoreError>| {
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "{op} with etcd down took {took:?}");
        match result {
            Err(StoreError::Unavailable(m)) => assert!(m.contains(&endpoint), "{op}: {m}"),
            other => panic!("{op} with etcd down: {other:?}"),
        }
    };
    timed("get", Instant::now(), s.get("/registry/r/a").await.map(drop));
    timed("list", Instant::now(), s.list("/registry/", None, 0, None).await.map(drop));
    timed("create", Instant::now(), s.create("/registry/r/b", b"1".to_vec()).await.map(drop));
    timed("update", Instant::now(), s.update("/registry/r/a", b"2".to_vec(), kv.mod_revision).await.map(drop));
    timed("delete", Instant::now(), s.delete("/registry/r/a", None).await.map(drop));
    timed("watch", Instant::now(), s.watch("/registry/", kv.mod_revision).await.map(drop));
    timed("compact", Instant::now(), s.compact(kv.mod_revision).await);
    config.dial_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let refused = EtcdStore::connect(config).await.unwrap_err();
    assert!(matches!(&refused, StoreError::Unavailable(m) if m.contains(&endpoint)), "{refused}");
    assert!(started.elapsed() < Duration::from_secs(4));

    etcd.start_member(0);
    // A create that timed out while the member was starting may have landed all the same: the
    // retry then finds the key, and reads it.
    let b = eventually(Duration::from_secs(15), || async {
        match s.create("/registry/r/b", b"1".to_vec()).await {
            Err(StoreError::AlreadyExists(_)) => Ok(s.get("/registry/r/b").await?.expect("the key exists")),
            other => other,
        }
    })
    .await;
    assert!(b.mod_revision > kv.mod_revision);
    assert_eq!(&*s.get("/registry/r/a").await.unwrap().unwrap().value, b"1");
    let mut again = s.watch("/registry/", kv.mod_revision).await.unwrap();
    assert_eq!(again.next().await.unwrap().unwrap().kv.key, "/registry/r/b");
}

#[tokio::test]
async fn tls_with_client_certificates() {
    if !etcd_available() {
        return;
    }
    let etcd = Cluster::start_with(1, true);
    let s = etcd.store().await;
    let kv = s.create("/registry/r/a", b"secret".to_vec()).await.unwrap();
    assert_eq!(s.get("/registry/r/a").await.unwrap().unwrap(), kv);
    let value = format!("https://127.0.0.1:{}", etcd.members[0].client_port);
    let parsed = EtcdConfig::parse_endpoint(&value).unwrap();
    assert!(parsed.uses_tls());

    let mut no_identity = etcd.config("/registry");
    no_identity.cert_file = None;
    no_identity.key_file = None;
    no_identity.dial_timeout = Duration::from_secs(2);
    let refused = EtcdStore::connect(no_identity).await.unwrap_err();
    assert!(matches!(&refused, StoreError::Unavailable(m) if m.contains(&value)), "{refused}");

    let mut wrong_ca = etcd.config("/registry");
    wrong_ca.ca_file = etcd.tls.as_ref().map(|t| t.client_cert.clone());
    wrong_ca.dial_timeout = Duration::from_secs(2);
    let refused = EtcdStore::connect(wrong_ca).await.unwrap_err();
    assert!(matches!(&refused, StoreError::Unavailable(_)), "{refused}");
}
