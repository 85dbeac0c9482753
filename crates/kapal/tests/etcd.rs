//! Two `kapal server` processes on one real etcd serve the same API.

mod common;

use common::{Cluster, Etcd, eventually, kubectls};

#[test]
fn two_servers_share_one_etcd() {
    let Some(etcd) = Etcd::start() else { return };
    let a = Cluster::start_with(&["--datastore-endpoint", &etcd.endpoint]);
    let b = Cluster::start_sharing(&a, &["--datastore-endpoint", &etcd.endpoint]);
    let k = &kubectls()[kubectls().len() - 1];
    a.ok(k, &["create", "ns", "shared"]);
    a.ok(k, &["create", "cm", "from-a", "-n", "shared", "--from-literal=k=v"]);
    assert!(
        eventually(10, || b.kubectl(k, &["get", "cm", "from-a", "-n", "shared"]).status.success()),
        "B does not see A's write"
    );
    b.ok(k, &["patch", "cm", "from-a", "-n", "shared", "--type=merge", "-p", r#"{"data":{"k":"w"}}"#]);
    assert!(eventually(10, || a.ok(k, &["get", "cm", "from-a", "-n", "shared", "-o", "jsonpath={.data.k}"]) == "w"));
    // Optimistic concurrency holds across servers: a write with A's old version fails on B.
    let old = a.ok(k, &["get", "cm", "from-a", "-n", "shared", "-o", "json"]);
    a.ok(k, &["patch", "cm", "from-a", "-n", "shared", "--type=merge", "-p", r#"{"data":{"k":"x"}}"#]);
    assert!(eventually(10, || b.ok(k, &["get", "cm", "from-a", "-n", "shared", "-o", "jsonpath={.data.k}"]) == "x"));
    let out = b.fails(k, &["replace", "-f", "-"], Some(&old));
    assert!(out.contains("Conflict"), "{out}");
    // Services get distinct cluster IPs whichever server allocates them.
    for i in 0..5 {
        a.ok(k, &["create", "service", "clusterip", &format!("a{i}"), "-n", "shared", "--tcp=80"]);
        b.ok(k, &["create", "service", "clusterip", &format!("b{i}"), "-n", "shared", "--tcp=80"]);
    }
    let ips = a.ok(k, &["get", "svc", "-n", "shared", "-o", "jsonpath={.items[*].spec.clusterIP}"]);
    let mut list: Vec<&str> = ips.split_whitespace().collect();
    assert_eq!(list.len(), 10);
    list.sort();
    list.dedup();
    assert_eq!(list.len(), 10, "duplicate cluster IPs: {ips}");
    // Both servers trust the same CA and admin identity, fetched from the store with the token.
    let ca = |c: &Cluster| std::fs::read_to_string(c.dir.path().join("data/tls/ca.crt")).unwrap();
    assert_eq!(ca(&a), ca(&b));
    // A server with another token cannot join, and says why.
    let stranger = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kapal"))
        .args(["server", "--bind-address", "127.0.0.1", "--https-listen-port", "0", "--token", "not-the-token"])
        .arg("--data-dir")
        .arg(stranger.path())
        .args(["--datastore-endpoint", &etcd.endpoint])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token"), "{err}");
    // One namespace controller (the Lease holder) empties and removes the namespace.
    b.ok(k, &["delete", "ns", "shared", "--timeout=60s"]);
    assert!(!a.kubectl(k, &["get", "ns", "shared"]).status.success());
}

async fn kube_client(c: &Cluster) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let yaml = std::fs::read_to_string(&c.kubeconfig).unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()).unwrap()
}

fn config_map(name: &str) -> k8s_openapi::api::core::v1::ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_survives_losing_one_of_three_etcd_members() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};
    let Some(mut etcd) = Etcd::cluster(3) else { return };
    let c = Cluster::start_with(&["--datastore-endpoint", &etcd.endpoint.clone()]);
    let api: Api<ConfigMap> = Api::namespaced(kube_client(&c).await, "default");
    api.create(&PostParams::default(), &config_map("before")).await.unwrap();
    for member in [0, 1] {
        // Lose one member (the first time possibly the leader), then bring it back.
        etcd.stop_member(member);
        let name = format!("without-m{member}");
        let mut created = false;
        for _ in 0..20 {
            if api.create(&PostParams::default(), &config_map(&name)).await.is_ok() {
                created = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        assert!(created, "writes stopped with one of three members down:\n{}", c.log());
        assert_eq!(api.get(&name).await.unwrap().data.unwrap()["k"], "v");
        assert!(api.get("before").await.is_ok());
        etcd.start_member(member);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_503_while_etcd_is_down_and_recovers() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};
    let Some(mut etcd) = Etcd::start() else { return };
    let c = Cluster::start_with(&["--datastore-endpoint", &etcd.endpoint.clone()]);
    let api: Api<ConfigMap> = Api::namespaced(kube_client(&c).await, "default");
    api.create(&PostParams::default(), &config_map("kept")).await.unwrap();
    etcd.stop_member(0);
    // curl, because client libraries retry 503s with Retry-After by themselves.
    let tls = c.dir.path().join("data/tls");
    let started = std::time::Instant::now();
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "30", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"during"}}"#,
        ])
        .arg("--cacert")
        .arg(tls.join("ca.crt"))
        .arg("--cert")
        .arg(tls.join("admin.crt"))
        .arg("--key")
        .arg(tls.join("admin.key"))
        .arg(format!("https://127.0.0.1:{}/api/v1/namespaces/default/configmaps", c.port))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "503", "a write while etcd is down");
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "the write hung for {:?}", started.elapsed());
    // Reads are served from the watch cache meanwhile.
    assert!(api.get("kept").await.is_ok());
    etcd.start_member(0);
    let mut recovered = false;
    for _ in 0..40 {
        if api.create(&PostParams::default(), &config_map("after")).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(recovered, "the API did not recover after etcd came back:\n{}", c.log());
    // The cache follows the store again: a new write is visible at once.
    assert_eq!(api.get("after").await.unwrap().data.unwrap()["k"], "v");
}
