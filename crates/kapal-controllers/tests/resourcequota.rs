//! The ResourceQuota controller keeps `status.hard` and `status.used` right: what `kubectl
//! describe quota` shows, and what quota admission in the API server checks creates against.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, ResourceQuota, Service};
use kapal_controllers::resourcequota;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use common::Cluster;

async fn cluster() -> (Cluster, tokio::task::JoinHandle<()>) {
    let cluster = Cluster::server_only().await;
    let client = cluster.client.clone();
    let task = tokio::spawn(async move { resourcequota::run(client).await.unwrap() });
    (cluster, task)
}

async fn create<K>(client: &Client, ns: &str, object: Value) -> Result<K, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &serde_json::from_value(object).unwrap()).await
}

fn pod(name: &str, cpu: &str, memory_limit: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox",
        "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}, "limits": {"memory": memory_limit}}}]}})
}

/// Waits until the quota's `status.used`, as text, is `want`; returns the quota.
async fn used_becomes(cluster: &Cluster, ns: &str, name: &str, want: Value) -> ResourceQuota {
    let api: Api<ResourceQuota> = Api::namespaced(cluster.client.clone(), ns);
    let mut last = Value::Null;
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let quota = api.get(name).await.unwrap();
            last = serde_json::to_value(quota.status.as_ref().and_then(|s| s.used.clone())).unwrap();
            if last == want {
                return quota;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("quota {ns}/{name} used stayed {last}, wanted {want}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_hard_and_what_the_namespace_uses() {
    let (cluster, _task) = cluster().await;
    let ns = cluster.namespace("rq-usage").await;
    let c = &cluster.client;
    let _: Pod = create(c, &ns, pod("a", "250m", "128Mi")).await.unwrap();
    let _: Pod = create(c, &ns, pod("b", "500m", "128Mi")).await.unwrap();
    let _: Service = create(
        c,
        &ns,
        json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}}),
    )
    .await
    .unwrap();
    let _: ConfigMap = create(c, &ns, json!({"metadata": {"name": "settings"}})).await.unwrap();
    let hard = json!({"pods": "10", "requests.cpu": "2", "limits.memory": "1Gi", "services": "5",
        "services.nodeports": "3", "services.loadbalancers": "1", "configmaps": "4",
        "count/deployments.apps": "2", "secrets": "3"});
    let _: ResourceQuota = create(c, &ns, json!({"metadata": {"name": "q"}, "spec": {"hard": hard}})).await.unwrap();
    let quota = used_becomes(
        &cluster,
        &ns,
        "q",
        json!({"configmaps": "1", "count/deployments.apps": "0", "limits.memory": "256Mi", "pods": "2",
            "requests.cpu": "750m", "secrets": "0", "services": "1", "services.loadbalancers": "0",
            "services.nodeports": "2"}),
    )
    .await;
    let status_hard = serde_json::to_value(quota.status.unwrap().hard).unwrap();
    assert_eq!(status_hard, hard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_and_deleted_objects_give_their_quota_back() {
    let (cluster, _task) = cluster().await;
    let ns = cluster.namespace("rq-release").await;
    let c = &cluster.client;
    let hard = json!({"pods": "2", "configmaps": "1"});
    let _: ResourceQuota = create(c, &ns, json!({"metadata": {"name": "q"}, "spec": {"hard": hard}})).await.unwrap();
    used_becomes(&cluster, &ns, "q", json!({"configmaps": "0", "pods": "0"})).await;
    let first: Pod = create(c, &ns, pod("one", "100m", "64Mi")).await.unwrap();
    let _: Pod = create(c, &ns, pod("two", "100m", "64Mi")).await.unwrap();
    let _: ConfigMap = create(c, &ns, json!({"metadata": {"name": "cm"}})).await.unwrap();
    used_becomes(&cluster, &ns, "q", json!({"configmaps": "1", "pods": "2"})).await;
    let refused = create::<Pod>(c, &ns, pod("three", "100m", "64Mi")).await.unwrap_err();
    assert!(refused.to_string().contains("exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"));

    // A pod that finished no longer counts: a new one fits.
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    common::set_finished(&pods, &first, true).await;
    used_becomes(&cluster, &ns, "q", json!({"configmaps": "1", "pods": "1"})).await;
    let _: Pod = create(c, &ns, pod("three", "100m", "64Mi")).await.unwrap();

    let configmaps: Api<ConfigMap> = Api::namespaced(c.clone(), &ns);
    configmaps.delete("cm", &DeleteParams::default()).await.unwrap();
    used_becomes(&cluster, &ns, "q", json!({"configmaps": "0", "pods": "2"})).await;
    let _: ConfigMap = create(c, &ns, json!({"metadata": {"name": "cm2"}})).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_quotas_count_only_the_pods_in_their_scope() {
    let (cluster, _task) = cluster().await;
    let ns = cluster.namespace("rq-scopes").await;
    let c = &cluster.client;
    let mut job_pod = pod("deadline", "100m", "64Mi");
    job_pod["spec"]["activeDeadlineSeconds"] = json!(60);
    let _: Pod = create(c, &ns, job_pod).await.unwrap();
    let _: Pod = create(c, &ns, pod("service", "200m", "64Mi")).await.unwrap();
    // Priority admission refuses a class that does not exist, as upstream does.
    let classes: Api<k8s_openapi::api::scheduling::v1::PriorityClass> = Api::all(c.clone());
    let class = json!({"metadata": {"name": "high"}, "value": 1000});
    classes.create(&Default::default(), &serde_json::from_value(class).unwrap()).await.unwrap();
    let mut high = pod("high", "300m", "64Mi");
    high["spec"]["priorityClassName"] = json!("high");
    let _: Pod = create(c, &ns, high).await.unwrap();
    let hard = json!({"pods": "5", "requests.cpu": "4"});
    let quotas = [
        ("terminating", json!({"hard": hard, "scopes": ["Terminating"]})),
        ("long-running", json!({"hard": hard, "scopes": ["NotTerminating"]})),
        (
            "high",
            json!({"hard": hard, "scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}),
        ),
    ];
    for (name, spec) in quotas {
        let _: ResourceQuota = create(c, &ns, json!({"metadata": {"name": name}, "spec": spec})).await.unwrap();
    }
    used_becomes(&cluster, &ns, "terminating", json!({"pods": "1", "requests.cpu": "100m"})).await;
    used_becomes(&cluster, &ns, "long-running", json!({"pods": "2", "requests.cpu": "500m"})).await;
    used_becomes(&cluster, &ns, "high", json!({"pods": "1", "requests.cpu": "300m"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_created_after_its_objects_counts_them_before_limiting_more() {
    let mut cluster = Cluster::server_only().await;
    let ns = cluster.namespace("rq-late").await;
    let c = cluster.client.clone();
    for name in ["a", "b"] {
        let _: k8s_openapi::api::core::v1::Secret = create(&c, &ns, json!({"metadata": {"name": name}})).await.unwrap();
    }
    let _: ResourceQuota =
        create(&c, &ns, json!({"metadata": {"name": "q"}, "spec": {"hard": {"count/secrets": "2"}}})).await.unwrap();
    // The whole controller manager, as `kapal server` runs it.
    cluster.start_controllers();
    let quota = used_becomes(&cluster, &ns, "q", json!({"count/secrets": "2"})).await;
    assert_eq!(quota.name_any(), "q");
    let refused =
        create::<k8s_openapi::api::core::v1::Secret>(&c, &ns, json!({"metadata": {"name": "c"}})).await.unwrap_err();
    assert!(
        refused.to_string().contains(
            "secrets \"c\" is forbidden: exceeded quota: q, requested: count/secrets=1, used: count/secrets=2, limited: count/secrets=2"
        ),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describes_the_quota_and_is_refused_beyond_it() {
    let (cluster, _task) = cluster().await;
    let ns = cluster.namespace("rq-kubectl").await;
    let kubectl = cluster.kubectl_command();
    let (ok, out) = kubectl(&["-n", &ns, "create", "quota", "q", "--hard=configmaps=1,pods=3"]);
    assert!(ok, "{out}");
    used_becomes(&cluster, &ns, "q", json!({"configmaps": "0", "pods": "0"})).await;
    let (ok, out) = kubectl(&["-n", &ns, "create", "configmap", "first"]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&["-n", &ns, "create", "configmap", "second"]);
    assert!(!ok);
    assert!(
        out.contains(
            "configmaps \"second\" is forbidden: exceeded quota: q, requested: configmaps=1, used: configmaps=1, limited: configmaps=1"
        ),
        "{out}"
    );
    let (ok, out) = kubectl(&["-n", &ns, "describe", "quota", "q"]);
    assert!(ok, "{out}");
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(rows.contains(&vec!["Resource", "Used", "Hard"]), "{out}");
    assert!(rows.contains(&vec!["configmaps", "1", "1"]), "{out}");
    assert!(rows.contains(&vec!["pods", "0", "3"]), "{out}");
}
