//! Integration tests: an in-process API server on an ephemeral port, driven by kube-rs over
//! HTTPS with the generated admin kubeconfig, exactly as any client would.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// Every test runs on both stores: the embedded SQLite and a real etcd.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Etcd,
}

struct Server {
    running: kapal_apiserver::Running,
    client: Client,
    _dir: tempfile::TempDir,
    _etcd: Option<Etcd>,
}

/// A single etcd member on free loopback ports, killed on drop.
struct Etcd {
    endpoint: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free(), free());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = std::process::Command::new("/usr/bin/etcd")
            .arg("--data-dir")
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", client)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Etcd { endpoint, child, _dir: dir }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn etcd_missing() -> bool {
    let missing = !std::path::Path::new("/usr/bin/etcd").exists();
    if missing {
        eprintln!("SKIPPED: /usr/bin/etcd is not installed (Debian etcd-server; scripts/test.sh installs it)");
    }
    missing
}

fn config_on(backend: Backend, dir: &std::path::Path, etcd: Option<&Etcd>) -> kapal_apiserver::Config {
    let mut config = kapal_apiserver::Config::new(dir.to_path_buf());
    config.port = 0;
    config.bind_address = "127.0.0.1".parse().unwrap();
    if let (Backend::Etcd, Some(e)) = (backend, etcd) {
        config.datastore_endpoint = Some(e.endpoint.clone());
    }
    config
}

async fn client_of(running: &kapal_apiserver::Running) -> Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&running.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    Client::try_from(cfg).unwrap()
}

async fn server_on(backend: Backend, history: usize) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let etcd = matches!(backend, Backend::Etcd).then(Etcd::start);
    let mut config = config_on(backend, dir.path(), etcd.as_ref());
    config.watch_cache_history = history;
    let running = kapal_apiserver::start(config).await.unwrap();
    let client = client_of(&running).await;
    Server { running, client, _dir: dir, _etcd: etcd }
}

const HISTORY: usize = kapal_apiserver::cache::DEFAULT_HISTORY;

/// Runs a test body once per backend, as `<name>::sqlite` and `<name>::etcd`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                if super::etcd_missing() {
                    return;
                }
                super::$name(super::Backend::Etcd).await
            }
        }
    )*};
}

on_both_stores!(
    crud_with_optimistic_concurrency,
    invalid_objects_get_422_with_causes,
    watch_delivers_changes_in_order,
    watch_from_a_forgotten_revision_is_410_gone,
    pagination_with_continue_is_consistent,
    label_and_field_selectors,
    server_side_apply_tracks_owners_and_conflicts,
    strategic_merge_patch_merges_containers_by_name,
    services_get_cluster_ips_and_node_ports,
    namespaces_terminate_and_refuse_new_content,
    data_and_certificates_survive_restart,
    unauthenticated_requests_get_401,
    autoscalers_are_served_at_v1_and_v2_from_one_store,
    events_written_as_events_k8s_io_are_core_events_too,
    events_are_read_from_the_store_and_watched_like_anything_else,
    evictions_honour_disruption_budgets,
    agents_fetch_a_ca_vouched_for_by_the_token,
    pods_take_the_priority_of_their_class,
);

fn cm(name: &str, data: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}))
        .unwrap()
}

async fn crud_with_optimistic_concurrency(backend: Backend) {
    let s = server_on(backend, HISTORY).await;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let created = api.create(&PostParams::default(), &cm("c1", json!({"a": "1"}))).await.unwrap();
    let rv = created.resource_version().unwrap();
    assert!(created.uid().is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let dup = api.create(&PostParams::default(), &cm("c1", json!({}))).await.unwrap_err();
    assert!(matches!(dup, kube::Error::Api(ref e) if e.code == 409 && e.reason == "AlreadyExists"), "{dup:?}");

    let mut next = created.clone();
    next.data = Some([("a".to_string(), "2".to_string())].into());
    let updated = api.replace("c1", &PostParams::default(), &next).await.unwrap();
    assert_ne!(updated.resource_version().unwrap(), rv);
    // The old resourceVersion is stale now: 409 Conflict.
    let stale = api.replace("c1", &PostParams::default(), &next).await.unwrap_err();
    assert!(matches!(stale, kube::Error::Api(ref e) if e.code == 409 && e.reason == "Conflict"), "{stale:?}");

    assert_eq!(api.get("c1").await.unwrap().data.unwrap()["a"], "2");
    api.delete("c1", &DeleteParams::default()).await.unwrap();
    let gone = api.get("c1").await.unwrap_err();
    assert!(
        matches!(gone, kube::Error::Api(ref e) if e.code == 404 && e.message == "configmaps \"c1\" not found"),
        "{gone:?}"
    );
}

async fn invalid_objects_get_422_with_causes(backend: Backend) {
    let s = server_on(backend, HISTORY).await;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let err = api.create(&PostParams::default(), &cm("Bad_Name", json!({}))).await.unwrap_err();
    match err {
        kube::Error::Api(e) => {
            assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
            assert!(e.message.contains("metadata.name: Invalid value: \"Bad_Name\""), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    // Creating in a namespace that does not exist is a 404 naming the namespace.
    let missing: Api<ConfigMap> = Api::namespaced(s.client.clone(), "nope");
    let err = missing.create(&PostParams::default(), &cm("x", json!({}))).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 404 && e.message.contains("namespaces \"nope\" not found")),
        "{err:?}"
    );
}

async fn watch_delivers_changes_in_order(backend: Backend) {
    let s = server_on(backend, HISTORY).await;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut stream = api.watch(&WatchParams::default().timeout(10), &rv).await.unwrap().boxed();
    api.create(&PostParams::default(), &cm("w", json!({"a": "1"}))).await.unwrap();
    api.patch("w", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": "2"}}))).await.unwrap();
    api.delete("w", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await.unwrap().unwrap().unwrap() {
            WatchEvent::Added(o) => seen.push(("ADDED", o.data.unwrap()["a"].clone())),
            WatchEvent::Modified(o) => seen.push(("MODIFIED", o.data.unwrap()["a"].clone())),
            WatchEvent::Deleted(o) => seen.push(("DELETED", o.data.unwrap()["a"].clone())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, [("ADDED", "1".into()), ("MODIFIED", "2".into()), ("DELETED", "2".into())]);
}

async fn watch_from_a_forgotten_revision_is_410_gone(backend: Backend) {
    let s = server_on(backend, 5).await;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let first = api.create(&PostParams::default(), &cm("g0", json!({}))).await.unwrap();
    for i in 1..20 {
        api.create(&PostParams::default(), &cm(&format!("g{i}"), json!({}))).await.unwrap();
    }
    let rv = first.resource_version().unwrap();
    let mut stream = api.watch(&WatchParams::default().timeout(5), &rv).await.unwrap().boxed();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 error event, got {other:?}"),
    }
}

async fn pagination_with_continue_is_consistent(backend: Backend) {
    let s = server_on(backend, HISTORY).await;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    for i in 0..30 {
        api.create(&PostParams::default(), &cm(&format!("p{i:02}"), json!({}))).await.unwrap();
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut lp = ListParams::default().limit(7);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        if pages == 0 {
            // Written after the first page: must not show up in later pages of this list.
            api.create(&PostParams::default(), &cm("p99-late", json!({}))).await.unwrap();
            assert_eq!(page.metadata.remaining_item_count, Some(23));
        }
        pages += 1;
        names.extend(page.items.iter().map(|c| c.name_any()));
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(names.len(), 30);
    assert!(!names.contains(&"p99-late".to_string()));
}

async fn label_and_field_selectors(backend: Backend) {
    let s = server_on(backend, HISTORY).await;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    for (name, tier) in [("a", "web"), ("b", "db"), ("c", "web")] {
        let mut c = cm(name, json!({}));
        c.metadata.labels = Some([("tier".to_string(), tier.to_string())].into());
        api.create(&PostParams::default(), &c).await.unwrap();
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| l.items.iter().map(|c| c.name_any()).collect::<Vec<_>>();
    assert_eq!(names(api.list(&ListParams::default().labels("tier=web")).await.unwrap()), ["a", "c"]);
    assert_eq!(names(api.list(&ListParams::default().labels("tier notin (web)")).await.unwrap()), ["b"]);
    assert_eq!(names(api.list(&ListParams::default().fields("metadata.name=c")).await.unwrap()), ["c"]);
    let bad = api.list(&ListParams::default().fields("spec.nothing=x")).await.unwrap_err();
    assert!(matches!(bad, kube::Error::Api(ref e) if e.code == 400), "{bad:?}");
}

async fn server_side_apply_tracks_owners_and_conflicts(backend: Backend) {
    let s = server_on(backend, HISTORY).await;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}});
    let cm1 = api.patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(&applied)).await.unwrap();
    let mf = cm1.metadata.managed_fields.unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("alice"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    let mut other = applied.clone();
    other["data"]["a"] = json!("2");
    let err = api.patch("ssa", &PatchParams::apply("bob"), &Patch::Apply(&other)).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref e) if e.code == 409 && e.message.contains("conflict")), "{err:?}");
    let forced = api.patch("ssa", &PatchParams::apply("bob").force(), &Patch::Apply(&other)).await.unwrap();
    assert_eq!(forced.data.unwrap()["a"], "2");
}

async fn strategic_merge_patch_merges_containers_by_name(backend: Backend) {
    let s = server_on(backend, HISTORY).await;
    let api: Api<Deployment> = Api::namespaced(s.client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]}}}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let spec = created.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1), "defaulted");
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "nginx"}]}}}});
    let patched = api.patch("web", &PatchParams::default(), &Patch::Strategic(patch)).await.unwrap();
    let containers = patched.spec.unwrap().template.spec.unwrap().containers;
    let images: Vec<_> = containers.iter().map(|c| (c.name.as_str(), c.image.as_deref().unwrap())).collect();
    assert_eq!(images, [("a", "busybox"), ("b", "nginx")]);
    assert_eq!(patched.metadata.generation, Some(2));
    // A status write does not touch the spec or the generation.
    let st = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 5}, "spec": {"replicas": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.unwrap().replicas, Some(5));
    assert_eq!(st.spec.unwrap().replicas, Some(1));
    assert_eq!(st.metadata.generation, Some(2));
    let scale = api.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
}

async fn services_get_cluster_ips_and_node_ports(backend: Backend) {
    let s = server_on(backend, HISTORY).await;
    let api: Api<Service> = Api::namespaced(s.client.clone(), "default");
    let kubernetes = api.get("kubernetes").await.unwrap();
    assert_eq!(kubernetes.spec.unwrap().cluster_ip.as_deref(), Some("10.43.0.1"));
    let svc: Service =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np"},
        "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80}]}}))
        .unwrap();
    let created = api.create(&PostParams::default(), &svc).await.unwrap();
    let spec = created.spec.unwrap();
    let ip: std::net::Ipv4Addr = spec.cluster_ip.unwrap().parse().unwrap();
    assert_eq!(ip.octets()[..2], [10, 43]);
    let port = &spec.ports.unwrap()[0];
    assert!((30000..=32767).contains(&port.node_port.unwrap()));
    assert_eq!(port.target_port, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(80)));
    let mut taken: Service =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "clash"},
        "spec": {"clusterIP": ip.to_string(), "ports": [{"port": 80}]}}))
        .unwrap();
    let err = api.create(&PostParams::default(), &taken).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 422 && e.message.contains("already allocated")),
        "{err:?}"
    );
    api.delete("np", &DeleteParams::default()).await.unwrap();
    // Released with the Service: the address can be taken again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    taken.metadata.name = Some("reuse".into());
    api.create(&PostParams::default(), &taken).await.unwrap();
}

async fn namespaces_terminate_and_refuse_new_content(backend: Backend) {
    let s = server_on(backend, HISTORY).await;
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    let created = namespaces.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    namespaces.delete("doomed", &DeleteParams::default()).await.unwrap();
    let terminating = namespaces.get("doomed").await.unwrap();
    assert_eq!(terminating.status.unwrap().phase.as_deref(), Some("Terminating"));
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "doomed");
    let err = cms.create(&PostParams::default(), &cm("late", json!({}))).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 403 && e.message.contains("being terminated")),
        "{err:?}"
    );
    // Without the namespace controller, the namespace stays until its finalizer is released.
    let finalize =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}, "spec": {"finalizers": []}});
    namespaces.replace_subresource("finalize", "doomed", &PostParams::default(), &finalize).await.unwrap();
    assert!(namespaces.get_opt("doomed").await.unwrap().is_none());
}

async fn data_and_certificates_survive_restart(backend: Backend) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let etcd = matches!(backend, Backend::Etcd).then(Etcd::start);
    let config = config_on(backend, dir.path(), etcd.as_ref());
    let first = kapal_apiserver::start(config.clone()).await.unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&first.kubeconfig).unwrap();
    let client =
        Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()).unwrap();
    Api::<ConfigMap>::namespaced(client, "default")
        .create(&PostParams::default(), &cm("kept", json!({"k": "v"})))
        .await
        .unwrap();
    let ca = first.pki.ca.cert.clone();
    first.shutdown();
    drop(first);
    let second = kapal_apiserver::start(config).await.unwrap();
    assert_eq!(second.pki.ca.cert, ca);
    let kc = kube::config::Kubeconfig::from_yaml(&second.kubeconfig).unwrap();
    let client =
        Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()).unwrap();
    let kept = Api::<ConfigMap>::namespaced(client, "default").get("kept").await.unwrap();
    assert_eq!(kept.data.unwrap()["k"], "v");
}

async fn unauthenticated_requests_get_401(backend: Backend) {
    let s = server_on(backend, HISTORY).await;
    let url = format!("{}/api/v1/namespaces", s.running.loopback_url());
    let out = std::process::Command::new("curl").args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &url]).output();
    if let Ok(out) = out {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    }
    let out = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &format!("{}/readyz", s.running.loopback_url())])
        .output();
    if let Ok(out) = out {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    }
}

async fn autoscalers_are_served_at_v1_and_v2_from_one_store(backend: Backend) {
    use k8s_openapi::api::autoscaling::{v1, v2};
    let s = server_on(backend, HISTORY).await;
    let v1_api: Api<v1::HorizontalPodAutoscaler> = Api::namespaced(s.client.clone(), "default");
    let v2_api: Api<v2::HorizontalPodAutoscaler> = Api::namespaced(s.client.clone(), "default");
    let hpa: v1::HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50}
    }))
    .unwrap();
    let created = v1_api.create(&PostParams::default(), &hpa).await.unwrap();
    assert_eq!(created.spec.unwrap().target_cpu_utilization_percentage, Some(50));
    let as_v2 = v2_api.get("web").await.unwrap();
    let metric = &as_v2.spec.unwrap().metrics.unwrap()[0];
    assert_eq!(metric.resource.as_ref().unwrap().target.average_utilization, Some(50));
    v1_api
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"targetCPUUtilizationPercentage": 70}})))
        .await
        .unwrap();
    let listed = v2_api.list(&ListParams::default()).await.unwrap();
    let spec = listed.items[0].spec.clone().unwrap();
    assert_eq!(spec.metrics.unwrap()[0].resource.as_ref().unwrap().target.average_utilization, Some(70));
    assert_eq!(spec.min_replicas, Some(1), "defaulted as v2");
}

async fn events_written_as_events_k8s_io_are_core_events_too(backend: Backend) {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    let s = server_on(backend, HISTORY).await;
    let new_api: Api<Event> = Api::namespaced(s.client.clone(), "default");
    let core_api: Api<CoreEvent> = Api::namespaced(s.client.clone(), "default");
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"name": "web.1"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "regarding": {"kind": "Pod", "namespace": "default", "name": "web"},
        "reason": "Pulled", "note": "image pulled", "type": "Normal", "action": "Pull",
        "reportingController": "kapal/agent", "reportingInstance": "node-1"
    }))
    .unwrap();
    let created = new_api.create(&PostParams::default(), &ev).await.unwrap();
    assert_eq!(created.note.as_deref(), Some("image pulled"));
    // kubectl describe reads core/v1 events by the involved object.
    let listed = core_api.list(&ListParams::default().fields("involvedObject.name=web")).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let core = &listed.items[0];
    assert_eq!(core.message.as_deref(), Some("image pulled"));
    assert_eq!(core.involved_object.kind.as_deref(), Some("Pod"));
    assert_eq!(core.reporting_component.as_deref(), Some("kapal/agent"));
    assert_eq!(new_api.list(&ListParams::default()).await.unwrap().items[0].reason.as_deref(), Some("Pulled"));
}

/// Events are kept out of the watch cache (as upstream's): every verb must still work on them.
async fn events_are_read_from_the_store_and_watched_like_anything_else(backend: Backend) {
    use k8s_openapi::api::core::v1::Event;
    let s = server_on(backend, HISTORY).await;
    let api: Api<Event> = Api::namespaced(s.client.clone(), "default");
    let event = |name: &str, pod: &str| -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": pod},
            "reason": "Scheduled", "message": format!("assigned {pod}"), "type": "Normal", "count": 1
        }))
        .unwrap()
    };
    let start = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut stream = api.watch(&WatchParams::default().timeout(10), &start).await.unwrap().boxed();
    for i in 0..5 {
        api.create(&PostParams::default(), &event(&format!("e{i}"), &format!("p{}", i % 2))).await.unwrap();
    }
    let e = api.create(&PostParams::default(), &event("e0", "p0")).await.unwrap_err();
    assert!(matches!(e, kube::Error::Api(ref s) if s.code == 409), "{e:?}");

    // Get, a consistent list, a field selector, pages.
    assert_eq!(api.get("e3").await.unwrap().message.as_deref(), Some("assigned p1"));
    assert!(matches!(api.get("nope").await.unwrap_err(), kube::Error::Api(ref s) if s.code == 404));
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 5);
    let p1 = api.list(&ListParams::default().fields("involvedObject.name=p1")).await.unwrap();
    assert_eq!(p1.items.iter().map(|e| e.name_any()).collect::<Vec<_>>(), ["e1", "e3"]);
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().unwrap();
    api.create(&PostParams::default(), &event("e9-late", "p0")).await.unwrap();
    let rest = api.list(&ListParams::default().continue_token(&token)).await.unwrap();
    let names: Vec<String> = first.items.iter().chain(&rest.items).map(|e| e.name_any()).collect();
    assert_eq!(names, ["e0", "e1", "e2", "e3", "e4"], "a continued list stays at its first page's revision");

    // Patch (as event recorders do to count repeats), then an update with a stale version.
    let patched = api.patch("e0", &PatchParams::default(), &Patch::Merge(json!({"count": 2}))).await.unwrap();
    assert_eq!(patched.count, Some(2));
    let mut stale = api.get("e1").await.unwrap();
    api.patch("e1", &PatchParams::default(), &Patch::Merge(json!({"count": 3}))).await.unwrap();
    stale.count = Some(9);
    let e = api.replace("e1", &PostParams::default(), &stale).await.unwrap_err();
    assert!(matches!(e, kube::Error::Api(ref s) if s.code == 409), "{e:?}");

    // Deletes, one and a collection.
    api.delete("e2", &DeleteParams::default()).await.unwrap();
    api.delete_collection(&DeleteParams::default(), &ListParams::default().fields("involvedObject.name=p1"))
        .await
        .unwrap();
    let left: Vec<String> =
        api.list(&ListParams::default()).await.unwrap().items.iter().map(|e| e.name_any()).collect();
    assert_eq!(left, ["e0", "e4", "e9-late"]);

    // The watch saw everything in order: 6 creations, 2 patches, 3 deletions.
    let mut seen = Vec::new();
    while seen.len() < 11 {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await.unwrap().unwrap().unwrap() {
            WatchEvent::Added(e) => seen.push(format!("ADDED {}", e.name_any())),
            WatchEvent::Modified(e) => seen.push(format!("MODIFIED {} {}", e.name_any(), e.count.unwrap_or(0))),
            WatchEvent::Deleted(e) => seen.push(format!("DELETED {}", e.name_any())),
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected = ["ADDED e0", "ADDED e1", "ADDED e2", "ADDED e3", "ADDED e4", "ADDED e9-late", "MODIFIED e0 2"];
    assert_eq!(&seen[..7], expected);
    assert_eq!(seen[7], "MODIFIED e1 3");
    assert_eq!(seen[8], "DELETED e2");
    let mut last: Vec<&str> = seen[9..].iter().map(String::as_str).collect();
    last.sort();
    assert_eq!(last, ["DELETED e1", "DELETED e3"]);

    // A watch from "now" (no resourceVersion) starts with what exists.
    let mut fresh = api.watch(&WatchParams::default().timeout(5), "0").await.unwrap().boxed();
    let mut initial = Vec::new();
    while initial.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(5), fresh.try_next()).await.unwrap().unwrap().unwrap() {
            WatchEvent::Added(e) => initial.push(e.name_any()),
            other => panic!("unexpected {other:?}"),
        }
    }
    initial.sort();
    assert_eq!(initial, ["e0", "e4", "e9-late"]);
}

async fn evictions_honour_disruption_budgets(backend: Backend) {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::api::EvictParams;
    let s = server_on(backend, HISTORY).await;
    // kube-rs retries 429s by default (for minutes); drain-like callers want the answer.
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&s.running.kubeconfig).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    cfg.default_retry = false;
    let client = Client::try_from(cfg).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let running = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
    for name in ["web-1", "web-2", "other"] {
        let app = if name == "other" { "other" } else { "web" };
        // On a node, so that a delete is graceful and the evicted pod can be looked at.
        let pod = json!({"metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}});
        pods.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.unwrap();
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&running)).await.unwrap();
    }
    let disruption_target = |pod: &Pod| {
        let conditions = pod.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        conditions.into_iter().find(|c| c.type_ == "DisruptionTarget").map(|c| (c.status, c.reason.unwrap_or_default()))
    };
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let pdb =
        json!({"metadata": {"name": "web"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}});
    pdbs.create(&PostParams::default(), &serde_json::from_value(pdb).unwrap()).await.unwrap();
    let budget = |allowed: i64| {
        json!({"status": {"observedGeneration": 1, "disruptionsAllowed": allowed, "currentHealthy": 2,
            "desiredHealthy": 1, "expectedPods": 2}})
    };

    // A pod no budget covers goes at once.
    pods.evict("other", &EvictParams::default()).await.unwrap();
    assert!(pods.get_opt("other").await.unwrap().is_none_or(|p| p.metadata.deletion_timestamp.is_some()));

    // A budget the controller has not processed yet, then one with no disruptions left: 429.
    let unprocessed = pods.evict("web-1", &EvictParams::default()).await.unwrap_err();
    assert!(matches!(unprocessed, kube::Error::Api(ref e) if e.code == 429), "{unprocessed:?}");
    pdbs.patch_status("web", &PatchParams::default(), &Patch::Merge(&budget(0))).await.unwrap();
    let refused = pods.evict("web-1", &EvictParams::default()).await.unwrap_err();
    match refused {
        kube::Error::Api(e) => {
            assert_eq!((e.code, e.reason.as_str()), (429, "TooManyRequests"));
            assert_eq!(e.message, "Cannot evict pod as it would violate the pod's disruption budget.");
        }
        other => panic!("{other:?}"),
    }
    assert!(pods.get("web-1").await.unwrap().metadata.deletion_timestamp.is_none());

    // One disruption allowed: the first eviction spends it, the second is refused.
    pdbs.patch_status("web", &PatchParams::default(), &Patch::Merge(&budget(1))).await.unwrap();
    pods.evict("web-1", &EvictParams::default()).await.unwrap();
    let status = pdbs.get("web").await.unwrap().status.unwrap();
    assert_eq!(status.disruptions_allowed, 0);
    assert!(status.disrupted_pods.unwrap().contains_key("web-1"));
    // The evicted pod says why it is going.
    let evicted = pods.get("web-1").await.unwrap();
    assert!(evicted.metadata.deletion_timestamp.is_some());
    assert_eq!(disruption_target(&evicted), Some(("True".into(), "EvictionByEvictionAPI".into())));
    let second = pods.evict("web-2", &EvictParams::default()).await.unwrap_err();
    assert!(matches!(second, kube::Error::Api(ref e) if e.code == 429), "{second:?}");
    assert_eq!(disruption_target(&pods.get("web-2").await.unwrap()), None, "a refused eviction marked the pod");
    let missing = pods.evict("nope", &EvictParams::default()).await.unwrap_err();
    assert!(matches!(missing, kube::Error::Api(ref e) if e.code == 404), "{missing:?}");
}

async fn agents_fetch_a_ca_vouched_for_by_the_token(backend: Backend) {
    let s = server_on(backend, HISTORY).await;
    let request = http::Request::get("/cacerts").body(Vec::new()).unwrap();
    let pem = s.client.request_text(request).await.unwrap();
    assert_eq!(pem, s.running.pki.ca.cert);
    // Anyone may fetch it: the HMAC under the token is what an agent checks.
    let out = std::process::Command::new("curl")
        .args(["-sk", "-D", "-", &format!("{}/cacerts", s.running.loopback_url())])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.contains("kapal-ca-hmac: "), "{text}");
    assert!(text.contains("-----begin certificate-----"), "{text}");
}

async fn pods_take_the_priority_of_their_class(backend: Backend) {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let s = server_on(backend, HISTORY).await;
    let classes: Api<PriorityClass> = Api::all(s.client.clone());
    let high = json!({"metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"});
    classes.create(&PostParams::default(), &serde_json::from_value(high).unwrap()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let pod = |name: &str, class: &str| {
        serde_json::from_value::<Pod>(json!({"metadata": {"name": name},
            "spec": {"priorityClassName": class, "containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap()
    };
    let created = pods.create(&PostParams::default(), &pod("important", "high")).await.unwrap();
    let spec = created.spec.unwrap();
    assert_eq!((spec.priority, spec.preemption_policy.as_deref()), (Some(1000), Some("Never")));
    let refused = pods.create(&PostParams::default(), &pod("lost", "nope")).await.unwrap_err();
    match refused {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 403);
            assert_eq!(e.message, "pods \"lost\" is forbidden: no PriorityClass with name nope was found");
        }
        other => panic!("{other:?}"),
    }

    // Without a class a pod has priority 0 until a class is the global default; then it gets
    // that class.
    let plain = pods.create(&PostParams::default(), &pod("plain", "")).await.unwrap().spec.unwrap();
    assert_eq!((plain.priority, plain.priority_class_name.as_deref()), (Some(0), Some("")));
    let normal = json!({"metadata": {"name": "normal"}, "value": 100, "globalDefault": true});
    classes.create(&PostParams::default(), &serde_json::from_value(normal).unwrap()).await.unwrap();
    let defaulted = pods.create(&PostParams::default(), &pod("defaulted", "")).await.unwrap().spec.unwrap();
    assert_eq!(
        (defaulted.priority, defaulted.priority_class_name.as_deref(), defaulted.preemption_policy.as_deref()),
        (Some(100), Some("normal"), Some("PreemptLowerPriority"))
    );
    // Only one class may be the default.
    let second = json!({"metadata": {"name": "second"}, "value": 5, "globalDefault": true});
    match classes.create(&PostParams::default(), &serde_json::from_value(second).unwrap()).await.unwrap_err() {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 403);
            assert_eq!(
                e.message,
                "priorityclasses.scheduling.k8s.io \"second\" is forbidden: PriorityClass normal is already marked as default. Only one default can exist"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_pods_tolerate_unhealthy_nodes_for_the_configured_seconds() {
    use k8s_openapi::api::core::v1::Pod;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_on(Backend::Sqlite, dir.path(), None);
    config.default_not_ready_toleration_seconds = 30;
    config.default_unreachable_toleration_seconds = 60;
    let running = kapal_apiserver::start(config).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client_of(&running).await, "default");
    let pod = |name: &str, tolerations: serde_json::Value| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"tolerations": tolerations, "containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap()
    };
    let seconds = |p: &Pod| -> Vec<(String, Option<i64>)> {
        let spec = p.spec.as_ref().unwrap();
        spec.tolerations.iter().flatten().map(|t| (t.key.clone().unwrap_or_default(), t.toleration_seconds)).collect()
    };
    let plain = pods.create(&PostParams::default(), &pod("plain", json!([]))).await.unwrap();
    assert_eq!(
        seconds(&plain),
        [
            ("node.kubernetes.io/not-ready".to_string(), Some(30)),
            ("node.kubernetes.io/unreachable".to_string(), Some(60))
        ]
    );
    // A pod's own toleration of a taint stands; only the other one is added.
    let own = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]);
    let patient = pods.create(&PostParams::default(), &pod("patient", own)).await.unwrap();
    assert_eq!(
        seconds(&patient),
        [
            ("node.kubernetes.io/unreachable".to_string(), Some(5)),
            ("node.kubernetes.io/not-ready".to_string(), Some(30))
        ]
    );
    // Updates do not add them again.
    let mut changed = plain.clone();
    changed.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
    let updated = pods.replace("plain", &PostParams::default(), &changed).await.unwrap();
    assert_eq!(seconds(&updated).len(), 2);
}
