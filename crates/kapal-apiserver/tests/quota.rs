//! ResourceQuota admission: creates beyond a namespace's quota fail with upstream's 403, and
//! admitted creates are charged to the quota's `status.used` at once. No quota controller runs
//! here; each test writes the quota status the controller would have written.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ResourceQuota};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

struct Server {
    running: kapal_apiserver::Running,
    client: Client,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.running.shutdown();
    }
}

async fn server() -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = kapal_apiserver::Config::new(dir.path().to_path_buf());
    config.port = 0;
    config.bind_address = "127.0.0.1".parse().unwrap();
    let running = kapal_apiserver::start(config).await.unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&running.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    let client = Client::try_from(cfg).unwrap();
    Server { running, client, _dir: dir }
}

async fn namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap())
        .await
        .unwrap();
}

/// A quota with `spec` (merged into `{"hard": hard}`) and the status the controller would write:
/// `status.hard` from the spec and `status.used` as given.
async fn quota(client: &Client, ns: &str, name: &str, hard: Value, used: Option<Value>, extra: Value) {
    let api: Api<ResourceQuota> = Api::namespaced(client.clone(), ns);
    let mut spec = json!({"hard": hard});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let body = json!({"metadata": {"name": name}, "spec": spec});
    api.create(&PostParams::default(), &serde_json::from_value(body).unwrap()).await.unwrap();
    let mut status = json!({"hard": hard});
    if let Some(used) = used {
        status["used"] = used;
    }
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await.unwrap();
}

async fn used(client: &Client, ns: &str, name: &str) -> Value {
    let api: Api<ResourceQuota> = Api::namespaced(client.clone(), ns);
    serde_json::to_value(api.get(name).await.unwrap().status.unwrap().used).unwrap()
}

fn pod(name: &str, resources: Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]}}))
    .unwrap()
}

/// The 403's message, or a panic if the call did not fail with 403.
fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            assert_eq!(status.reason, "Forbidden");
            status.message
        }
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_pods_beyond_the_quota_is_forbidden_with_upstreams_message() {
    let s = server().await;
    namespace(&s.client, "q1").await;
    quota(&s.client, "q1", "q", json!({"pods": "2"}), Some(json!({"pods": "0"})), json!({})).await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "q1");
    for name in ["a", "b"] {
        pods.create(&PostParams::default(), &pod(name, json!({}))).await.unwrap();
    }
    assert_eq!(used(&s.client, "q1", "q").await, json!({"pods": "2"}));
    let message = forbidden(pods.create(&PostParams::default(), &pod("c", json!({}))).await);
    assert_eq!(message, "pods \"c\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2");
    assert!(pods.get_opt("c").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_quotas_require_requests_and_add_them_up() {
    let s = server().await;
    namespace(&s.client, "q2").await;
    let hard = json!({"requests.cpu": "1", "limits.memory": "1Gi"});
    quota(&s.client, "q2", "compute", hard, Some(json!({"requests.cpu": "0", "limits.memory": "0"})), json!({})).await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "q2");
    let message = forbidden(pods.create(&PostParams::default(), &pod("bare", json!({}))).await);
    assert_eq!(
        message,
        "pods \"bare\" is forbidden: failed quota: compute: must specify limits.memory for: c; requests.cpu for: c"
    );
    let sized = json!({"requests": {"cpu": "600m"}, "limits": {"memory": "512Mi"}});
    pods.create(&PostParams::default(), &pod("one", sized.clone())).await.unwrap();
    assert_eq!(used(&s.client, "q2", "compute").await, json!({"limits.memory": "512Mi", "requests.cpu": "600m"}));
    let message = forbidden(pods.create(&PostParams::default(), &pod("two", sized)).await);
    assert_eq!(
        message,
        "pods \"two\" is forbidden: exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_never_take_the_same_last_slot() {
    let s = server().await;
    namespace(&s.client, "q3").await;
    quota(&s.client, "q3", "objects", json!({"configmaps": "5"}), Some(json!({"configmaps": "0"})), json!({})).await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "q3");
        tasks.push(tokio::spawn(async move {
            let cm = serde_json::from_value(json!({"metadata": {"name": format!("cm-{i}")}})).unwrap();
            api.create(&PostParams::default(), &cm).await
        }));
    }
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(e) => assert!(forbidden::<()>(Err(e)).contains("exceeded quota: objects"), "unexpected refusal"),
        }
    }
    assert_eq!(created, 5);
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "q3");
    let stored = api.list(&Default::default()).await.unwrap().items;
    assert_eq!(stored.iter().filter(|c| c.name_any().starts_with("cm-")).count(), 5);
    assert_eq!(used(&s.client, "q3", "objects").await, json!({"configmaps": "5"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_without_usage_refuse_dry_runs_charge_nothing_and_scopes_select_pods() {
    let s = server().await;
    namespace(&s.client, "q4").await;
    quota(&s.client, "q4", "fresh", json!({"count/configmaps": "10"}), None, json!({})).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(s.client.clone(), "q4");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
    let message = forbidden(configmaps.create(&PostParams::default(), &cm).await);
    assert_eq!(message, "configmaps \"x\" is forbidden: status unknown for quota: fresh, resources: count/configmaps");

    let scoped = json!({"scopes": ["BestEffort"]});
    quota(&s.client, "q4", "besteffort", json!({"pods": "1"}), Some(json!({"pods": "0"})), scoped).await;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "q4");
    pods.create(&PostParams { dry_run: true, ..Default::default() }, &pod("dry", json!({}))).await.unwrap();
    assert_eq!(used(&s.client, "q4", "besteffort").await, json!({"pods": "0"}));
    pods.create(&PostParams::default(), &pod("first", json!({}))).await.unwrap();
    let message = forbidden(pods.create(&PostParams::default(), &pod("second", json!({}))).await);
    assert!(message.contains("exceeded quota: besteffort, requested: pods=1"), "{message}");
    // A pod with requests is not BestEffort, so the scoped quota does not count it.
    pods.create(&PostParams::default(), &pod("burstable", json!({"requests": {"cpu": "100m"}}))).await.unwrap();
    assert_eq!(used(&s.client, "q4", "besteffort").await, json!({"pods": "1"}));
}
