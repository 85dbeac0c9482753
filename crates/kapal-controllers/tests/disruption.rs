//! The disruption controller keeps PodDisruptionBudget status: expected pods from the pods'
//! controllers, healthy pods, the healthy pods required, and the disruptions allowed.

mod common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use kapal_controllers::disruption;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use common::Cluster;

async fn cluster() -> (Cluster, tokio::task::JoinHandle<()>) {
    let cluster = Cluster::server_only().await;
    let client = cluster.client.clone();
    let task = tokio::spawn(async move { disruption::run(client).await.unwrap() });
    (cluster, task)
}

async fn create<K>(client: &Client, ns: &str, object: Value) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &serde_json::from_value(object).unwrap()).await.unwrap()
}

fn template(app: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

/// `count` pods labelled `app` and controlled by `owner`; the first `ready` of them Running and Ready.
async fn pods(cluster: &Cluster, ns: &str, app: &str, owner: Value, count: usize, ready: usize) {
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    for i in 0..count {
        let pod = json!({"metadata": {"name": format!("{app}-{i}"), "labels": {"app": app}, "ownerReferences": [owner]},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        let pod: Pod = create(&cluster.client, ns, pod).await;
        if i < ready {
            common::set_running(&api, &pod, i).await;
        }
    }
}

fn owner<K: Resource<DynamicType = ()>>(object: &K) -> Value {
    json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "name": object.name_any(),
        "uid": object.uid(), "controller": true, "blockOwnerDeletion": true})
}

async fn budget(cluster: &Cluster, ns: &str, name: &str, app: &str, spec: Value) {
    let mut spec = spec;
    spec["selector"] = json!({"matchLabels": {"app": app}});
    let _: PodDisruptionBudget = create(&cluster.client, ns, json!({"metadata": {"name": name}, "spec": spec})).await;
}

/// (expectedPods, desiredHealthy, currentHealthy, disruptionsAllowed)
type Figures = (i32, i32, i32, i32);

fn figures(status: &PodDisruptionBudgetStatus) -> Figures {
    (status.expected_pods, status.desired_healthy, status.current_healthy, status.disruptions_allowed)
}

async fn status_becomes(cluster: &Cluster, ns: &str, name: &str, want: Figures) -> PodDisruptionBudget {
    let api: Api<PodDisruptionBudget> = Api::namespaced(cluster.client.clone(), ns);
    let mut last = None;
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let pdb = api.get(name).await.unwrap();
            let now = pdb.status.as_ref().map(figures);
            if now == Some(want) && pdb.status.as_ref().and_then(|s| s.observed_generation) == pdb.metadata.generation {
                return pdb;
            }
            last = now;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{ns}/{name}: wanted {want:?}, last saw {last:?}"))
}

fn allowed_condition(pdb: &PodDisruptionBudget) -> (String, String) {
    let conditions = pdb.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let c = conditions.iter().find(|c| c.type_ == "DisruptionAllowed").expect("a DisruptionAllowed condition");
    (c.status.clone(), c.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_count_against_the_scale_of_the_pods_controllers() {
    let (cluster, _task) = cluster().await;
    let ns = cluster.namespace("budgets").await;
    let client = cluster.client.clone();
    // A ReplicaSet that wants 4 pods has 4, of which 3 are ready.
    let rs: ReplicaSet = create(
        &client,
        &ns,
        json!({"metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}}, "template": template("web")}}),
    )
    .await;
    pods(&cluster, &ns, "web", owner(&rs), 4, 3).await;

    budget(&cluster, &ns, "min-int", "web", json!({"minAvailable": 2})).await;
    budget(&cluster, &ns, "min-percent", "web", json!({"minAvailable": "60%"})).await;
    budget(&cluster, &ns, "max-int", "web", json!({"maxUnavailable": 1})).await;
    budget(&cluster, &ns, "max-percent", "web", json!({"maxUnavailable": "30%"})).await;

    let min_int = status_becomes(&cluster, &ns, "min-int", (4, 2, 3, 1)).await;
    assert_eq!(allowed_condition(&min_int), ("True".into(), "SufficientPods".into()));
    // 60% of 4 is 2.4, rounded up to 3.
    status_becomes(&cluster, &ns, "min-percent", (4, 3, 3, 0)).await;
    let max_int = status_becomes(&cluster, &ns, "max-int", (4, 3, 3, 0)).await;
    assert_eq!(allowed_condition(&max_int), ("False".into(), "InsufficientPods".into()));
    // 30% of 4 is 1.2, rounded up to 2 that may be unavailable.
    status_becomes(&cluster, &ns, "max-percent", (4, 2, 3, 1)).await;

    // The fourth pod becomes ready: every budget follows.
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    common::set_running(&api, &api.get("web-3").await.unwrap(), 3).await;
    status_becomes(&cluster, &ns, "min-int", (4, 2, 4, 2)).await;
    status_becomes(&cluster, &ns, "min-percent", (4, 3, 4, 1)).await;
    let max_int = status_becomes(&cluster, &ns, "max-int", (4, 3, 4, 1)).await;
    assert_eq!(allowed_condition(&max_int), ("True".into(), "SufficientPods".into()));

    // Editing the spec recomputes and records the generation observed.
    let edit = json!({"spec": {"minAvailable": 4}});
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    budgets.patch("min-int", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    let edited = status_becomes(&cluster, &ns, "min-int", (4, 4, 4, 0)).await;
    assert_eq!(edited.metadata.generation, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployments_pods_count_against_the_deployment_and_statefulsets_through_their_scale() {
    let (cluster, _task) = cluster().await;
    let ns = cluster.namespace("owners").await;
    let client = cluster.client.clone();
    let selector = json!({"matchLabels": {"app": "api"}});
    let deployment: Deployment = create(
        &client,
        &ns,
        json!({"metadata": {"name": "api"},
        "spec": {"replicas": 5, "selector": selector, "template": template("api")}}),
    )
    .await;
    // Two ReplicaSets mid-rollout, with 2 and 1 replicas; the Deployment's 5 is what counts.
    for (name, replicas) in [("api-old", 2), ("api-new", 1)] {
        let rs: ReplicaSet = create(
            &client,
            &ns,
            json!({"metadata": {"name": name, "ownerReferences": [owner(&deployment)]},
            "spec": {"replicas": replicas, "selector": selector, "template": template("api")}}),
        )
        .await;
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        for i in 0..replicas {
            let pod = json!({"metadata": {"name": format!("{name}-{i}"), "labels": {"app": "api"}, "ownerReferences": [owner(&rs)]},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
            let pod: Pod = create(&client, &ns, pod).await;
            common::set_running(&api, &pod, i).await;
        }
    }
    // 50% of 5 is 2.5, rounded up to 3.
    budget(&cluster, &ns, "api", "api", json!({"minAvailable": "50%"})).await;
    status_becomes(&cluster, &ns, "api", (5, 3, 3, 0)).await;

    let set: StatefulSet = create(&client, &ns, json!({"metadata": {"name": "db"},
        "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": template("db")}}))
    .await;
    pods(&cluster, &ns, "db", owner(&set), 3, 3).await;
    // 50% of 3 is 1.5, rounded up to 2 that may be unavailable.
    budget(&cluster, &ns, "db", "db", json!({"maxUnavailable": "50%"})).await;
    status_becomes(&cluster, &ns, "db", (3, 1, 3, 2)).await;

    // Scaling the StatefulSet up changes what is expected.
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    sets.patch("db", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 6}}))).await.unwrap();
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    // Nudge the budget rather than wait for the periodic resync.
    let nudge = json!({"metadata": {"labels": {"nudged": "yes"}}});
    budgets.patch("db", &PatchParams::default(), &Patch::Merge(&nudge)).await.unwrap();
    status_becomes(&cluster, &ns, "db", (6, 3, 3, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disrupted_pods_count_as_unhealthy_and_are_forgotten_once_gone() {
    let (cluster, _task) = cluster().await;
    let ns = cluster.namespace("evictions").await;
    let client = cluster.client.clone();
    let rs: ReplicaSet = create(
        &client,
        &ns,
        json!({"metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template("web")}}),
    )
    .await;
    pods(&cluster, &ns, "web", owner(&rs), 3, 3).await;
    budget(&cluster, &ns, "web", "web", json!({"minAvailable": 1})).await;
    status_becomes(&cluster, &ns, "web", (3, 1, 3, 2)).await;

    // What the eviction subresource records: one disruption used, the pod about to go, and a pod
    // that is already gone.
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    let now = jiff::Timestamp::now().to_string();
    let evicted = json!({"status": {"disruptionsAllowed": 1, "disruptedPods": {"web-0": now, "ghost": now}}});
    budgets.patch_status("web", &PatchParams::default(), &Patch::Merge(&evicted)).await.unwrap();
    let pdb = status_becomes(&cluster, &ns, "web", (3, 1, 2, 1)).await;
    let disrupted = pdb.status.unwrap().disrupted_pods.unwrap_or_default();
    assert_eq!(disrupted.keys().collect::<Vec<_>>(), ["web-0"], "the gone pod is forgotten");

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.delete("web-0", &kube::api::DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
        .await
        .unwrap();
    let pdb = status_becomes(&cluster, &ns, "web", (2, 1, 2, 1)).await;
    assert_eq!(pdb.status.unwrap().disrupted_pods.unwrap_or_default().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_without_pods_allows_no_disruption() {
    let (cluster, _task) = cluster().await;
    let ns = cluster.namespace("empty").await;
    budget(&cluster, &ns, "nothing", "none", json!({"maxUnavailable": 1})).await;
    let pdb = status_becomes(&cluster, &ns, "nothing", (0, 0, 0, 0)).await;
    assert_eq!(allowed_condition(&pdb), ("False".into(), "InsufficientPods".into()));
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), &ns);
    let no_pods = cluster
        .eventually("a NoPods event", Duration::from_secs(5), || async {
            let all = events.list(&Default::default()).await.unwrap().items;
            all.into_iter().find(|e| e.reason.as_deref() == Some("NoPods"))
        })
        .await;
    assert_eq!(no_pods.note.as_deref(), Some("No matching pods found"));
    assert_eq!(no_pods.reporting_controller.as_deref(), Some("controllermanager"));
    assert_eq!(no_pods.regarding.and_then(|r| r.name).as_deref(), Some("nothing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evictions_spend_the_disruptions_the_controller_allows() {
    let (cluster, _task) = cluster().await;
    let ns = cluster.namespace("drain").await;
    let client = cluster.client.clone();
    let rs: ReplicaSet = create(
        &client,
        &ns,
        json!({"metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template("web")}}),
    )
    .await;
    pods(&cluster, &ns, "web", owner(&rs), 3, 3).await;
    budget(&cluster, &ns, "web", "web", json!({"minAvailable": 2})).await;
    status_becomes(&cluster, &ns, "web", (3, 2, 3, 1)).await;

    // kube's default client would retry the 429 for minutes; kubectl drain sees it at once.
    let api: Api<Pod> = Api::namespaced(cluster.client_without_retries().await, &ns);
    api.evict("web-0", &Default::default()).await.expect("the first eviction is allowed");
    match api.evict("web-1", &Default::default()).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 429, "{e:?}"),
        other => panic!("the second eviction must be refused, got {other:?}"),
    }
    // web-0 is gone; the budget is recomputed from the two pods left.
    let pdb = status_becomes(&cluster, &ns, "web", (2, 2, 2, 0)).await;
    assert_eq!(allowed_condition(&pdb), ("False".into(), "InsufficientPods".into()));

    // A replacement becomes ready (as the ReplicaSet controller and the kubelet would make it):
    // one disruption is allowed again.
    let replacement: Pod = create(
        &client,
        &ns,
        json!({"metadata": {"name": "web-3", "labels": {"app": "web"},
        "ownerReferences": [owner(&rs)]}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;
    common::set_running(&api, &replacement, 3).await;
    status_becomes(&cluster, &ns, "web", (3, 2, 3, 1)).await;
    api.evict("web-1", &Default::default()).await.expect("the budget allows one again");
}
