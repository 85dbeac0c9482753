//! The ReplicaSet controller keeps the wanted number of pods, claims pods by selector, and never
//! creates one too many — not even across a restart.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn replica_set(name: &str, replicas: i32) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap()
}

fn owned_by<'a>(pods: &'a [Pod], rs: &ReplicaSet) -> Vec<&'a Pod> {
    pods.iter()
        .filter(|p| {
            p.owner_references().iter().any(|r| r.controller == Some(true) && Some(&r.uid) == rs.uid().as_ref())
        })
        .collect()
}

async fn scale(api: &Api<ReplicaSet>, name: &str, replicas: i32) {
    api.patch(name, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": replicas}}))).await.unwrap();
}

fn count(events: &[(String, String)], reason: &str) -> usize {
    events.iter().filter(|(r, _)| r == reason).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_creates_and_deletes_exactly_the_difference_with_events() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("rs-scale").await;
    let api: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), &ns);
    let rs = api.create(&PostParams::default(), &replica_set("web", 3)).await.unwrap();

    cluster.eventually("3 pods", WAIT, || async { (cluster.live_pods(&ns).await.len() == 3).then_some(()) }).await;
    cluster.run_pods(&ns, "node-1").await;
    let status = cluster
        .eventually("3 ready and available replicas", WAIT, || async {
            let s = api.get("web").await.unwrap().status?;
            (s.ready_replicas == Some(3) && s.available_replicas == Some(3)).then_some(s)
        })
        .await;
    assert_eq!(status.replicas, 3);
    assert_eq!(status.fully_labeled_replicas, Some(3));
    assert_eq!(status.observed_generation, rs.metadata.generation);

    let pods = cluster.live_pods(&ns).await;
    assert_eq!(owned_by(&pods, &rs).len(), 3);
    assert!(pods.iter().all(|p| p.name_any().starts_with("web-") && p.name_any().len() == "web-".len() + 5));
    let events = cluster
        .eventually("3 creation events", WAIT, || async {
            let events = cluster.events_for(&ns, "web").await;
            (count(&events, "SuccessfulCreate") == 3).then_some(events)
        })
        .await;
    let mut created: Vec<String> = events
        .iter()
        .filter(|(r, _)| r == "SuccessfulCreate")
        .map(|(_, m)| m.strip_prefix("Created pod: ").unwrap().to_string())
        .collect();
    created.sort();
    let mut names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    names.sort();
    assert_eq!(created, names);

    // One more, still pending: on scale-down the unscheduled pod goes first.
    scale(&api, "web", 4).await;
    cluster.eventually("a 4th pod", WAIT, || async { (cluster.live_pods(&ns).await.len() == 4).then_some(()) }).await;
    let pending = cluster
        .live_pods(&ns)
        .await
        .into_iter()
        .find(|p| p.spec.as_ref().unwrap().node_name.is_none())
        .unwrap()
        .name_any();
    scale(&api, "web", 3).await;
    cluster
        .eventually("the pending pod deleted", WAIT, || async {
            let live = cluster.live_pods(&ns).await;
            (live.len() == 3 && live.iter().all(|p| p.name_any() != pending)).then_some(())
        })
        .await;
    scale(&api, "web", 1).await;
    cluster.eventually("1 pod left", WAIT, || async { (cluster.live_pods(&ns).await.len() == 1).then_some(()) }).await;
    let events = cluster
        .eventually("3 deletion events", WAIT, || async {
            let events = cluster.events_for(&ns, "web").await;
            (count(&events, "SuccessfulDelete") == 3).then_some(events)
        })
        .await;
    assert!(events.contains(&("SuccessfulDelete".into(), format!("Deleted pod: {pending}"))), "{events:?}");
    cluster
        .eventually("status replicas 1", WAIT, || async {
            (api.get("web").await.unwrap().status?.replicas == 1).then_some(())
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cluster.live_pods(&ns).await.len(), 1);
    assert_eq!(
        count(&cluster.events_for(&ns, "web").await, "SuccessfulCreate"),
        4,
        "no pod created beyond the 4 wanted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_orphans_are_adopted_and_non_matching_pods_released() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("rs-adopt").await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    for i in 0..2 {
        let pod = json!({"metadata": {"name": format!("orphan-{i}"), "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        pods.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.unwrap();
    }
    let api: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), &ns);
    let rs = api.create(&PostParams::default(), &replica_set("web", 3)).await.unwrap();
    cluster
        .eventually("3 owned pods", WAIT, || async {
            let live = cluster.live_pods(&ns).await;
            (owned_by(&live, &rs).len() == 3 && live.len() == 3).then_some(())
        })
        .await;
    let live = cluster.live_pods(&ns).await;
    assert!(owned_by(&live, &rs).iter().any(|p| p.name_any() == "orphan-0"));
    assert!(owned_by(&live, &rs).iter().any(|p| p.name_any() == "orphan-1"));
    cluster
        .eventually("one creation event", WAIT, || async {
            (count(&cluster.events_for(&ns, "web").await, "SuccessfulCreate") == 1).then_some(())
        })
        .await;

    pods.patch("orphan-0", &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"labels": {"app": "other"}}})))
        .await
        .unwrap();
    cluster
        .eventually("orphan-0 released and replaced", WAIT, || async {
            let live = cluster.live_pods(&ns).await;
            let released = live.iter().find(|p| p.name_any() == "orphan-0")?.owner_references().is_empty();
            (released && owned_by(&live, &rs).len() == 3 && live.len() == 4).then_some(())
        })
        .await;

    // An orphan created later is adopted too, and the surplus it makes is removed.
    let pod = json!({"metadata": {"name": "late", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    pods.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.unwrap();
    cluster
        .eventually("the surplus removed after adoption", WAIT, || async {
            let live = cluster.live_pods(&ns).await;
            let events = cluster.events_for(&ns, "web").await;
            (owned_by(&live, &rs).len() == 3 && count(&events, "SuccessfulDelete") == 1).then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_manager_during_creation_never_duplicates_pods() {
    let mut cluster = common::Cluster::start().await;
    let ns = cluster.namespace("rs-restart").await;
    // Every pod that ever exists, even one created and deleted at once, by UID.
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let watch = {
        let seen = seen.clone();
        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(pods, watcher::Config::default()).applied_objects());
            while let Some(Ok(pod)) = stream.next().await {
                seen.lock().unwrap().insert(pod.uid().unwrap());
            }
        })
    };
    let api: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &replica_set("web", 30)).await.unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        cluster.stop_controllers();
        cluster.start_controllers();
    }
    cluster.eventually("30 pods", WAIT, || async { (cluster.live_pods(&ns).await.len() == 30).then_some(()) }).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    watch.abort();
    assert_eq!(cluster.live_pods(&ns).await.len(), 30);
    assert_eq!(seen.lock().unwrap().len(), 30, "pods created beyond the 30 wanted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_waits_for_min_ready_seconds() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("rs-minready").await;
    let api: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), &ns);
    let mut rs = replica_set("web", 2);
    rs.spec.as_mut().unwrap().min_ready_seconds = Some(2);
    api.create(&PostParams::default(), &rs).await.unwrap();
    cluster.eventually("2 pods", WAIT, || async { (cluster.live_pods(&ns).await.len() == 2).then_some(()) }).await;
    cluster.run_pods(&ns, "node-1").await;
    let status = cluster
        .eventually("2 ready", WAIT, || async {
            let s = api.get("web").await.unwrap().status?;
            (s.ready_replicas == Some(2)).then_some(s)
        })
        .await;
    assert_eq!(status.available_replicas, Some(0));
    cluster
        .eventually("2 available after minReadySeconds", WAIT, || async {
            (api.get("web").await.unwrap().status?.available_replicas == Some(2)).then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_create_is_reported_and_cleared_once_pods_fit() {
    use k8s_openapi::api::core::v1::ResourceQuota;
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("rs-quota").await;
    let quotas: Api<ResourceQuota> = Api::namespaced(cluster.client.clone(), &ns);
    let quota = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "2"}}});
    quotas.create(&PostParams::default(), &serde_json::from_value(quota).unwrap()).await.unwrap();
    let status = json!({"status": {"hard": {"pods": "2"}, "used": {"pods": "0"}}});
    quotas.patch_status("q", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();

    let api: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &replica_set("web", 3)).await.unwrap();
    let condition = cluster
        .eventually("the ReplicaFailure condition", WAIT, || async {
            let status = api.get("web").await.unwrap().status?;
            status.conditions?.into_iter().find(|c| c.type_ == "ReplicaFailure")
        })
        .await;
    assert_eq!((condition.status.as_str(), condition.reason.as_deref()), ("True", Some("FailedCreate")));
    let message = condition.message.unwrap();
    assert!(message.starts_with("pods \"web-") && message.contains("exceeded quota: q"), "{message}");
    let events = cluster
        .eventually("a FailedCreate event", WAIT, || async {
            let events = cluster.events_for(&ns, "web").await;
            (count(&events, "FailedCreate") > 0).then_some(events)
        })
        .await;
    assert!(
        events.iter().any(|(r, m)| r == "FailedCreate" && m == &format!("Error creating: {message}")),
        "{events:?}"
    );
    assert_eq!(cluster.live_pods(&ns).await.len(), 2);

    let raised = json!({"spec": {"hard": {"pods": "3"}}, "status": {"hard": {"pods": "3"}}});
    quotas.patch("q", &PatchParams::default(), &Patch::Merge(&raised)).await.unwrap();
    quotas.patch_status("q", &PatchParams::default(), &Patch::Merge(&raised)).await.unwrap();
    cluster
        .eventually("the third pod and the condition cleared", WAIT, || async {
            let status = api.get("web").await.unwrap().status?;
            let cleared = status.conditions.is_none_or(|cs| cs.iter().all(|c| c.type_ != "ReplicaFailure"));
            (cleared && status.replicas == 3).then_some(())
        })
        .await;
}
