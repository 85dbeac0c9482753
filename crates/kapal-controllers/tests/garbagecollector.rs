//! The garbage collector: background, foreground and orphan propagation, dangling owners, and
//! dependents with several owners.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn cluster() -> common::Cluster {
    let cluster = common::Cluster::server_only().await;
    tokio::spawn(kapal_controllers::garbagecollector::run(cluster.client.clone()));
    cluster
}

async fn owner(api: &Api<ConfigMap>, name: &str) -> ConfigMap {
    api.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap())
        .await
        .unwrap()
}

fn reference(owner: &ConfigMap, block: bool) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "name": owner.name_any(), "uid": owner.uid().unwrap(),
        "blockOwnerDeletion": block})
}

async fn dependent(api: &Api<ConfigMap>, name: &str, owners: Vec<serde_json::Value>, finalizers: &[&str]) {
    let cm = json!({"metadata": {"name": name, "ownerReferences": owners, "finalizers": finalizers}});
    api.create(&PostParams::default(), &serde_json::from_value(cm).unwrap()).await.unwrap();
}

async fn gone(cluster: &common::Cluster, api: &Api<ConfigMap>, name: &str) {
    cluster
        .eventually(&format!("configmap {name} to be deleted"), WAIT, || async {
            api.get_opt(name).await.unwrap().is_none().then_some(())
        })
        .await
}

fn configmaps(client: &Client, ns: &str) -> Api<ConfigMap> {
    Api::namespaced(client.clone(), ns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_deletion_removes_dependents_and_dangling_references_are_collected() {
    let cluster = cluster().await;
    let api = configmaps(&cluster.client, &cluster.namespace("gc-bg").await);
    let parent = owner(&api, "parent").await;
    for i in 0..3 {
        dependent(&api, &format!("child-{i}"), vec![reference(&parent, false)], &[]).await;
    }
    let ghost = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "00000000-0000-0000-0000-000000000000"});
    dependent(&api, "orphaned-at-birth", vec![ghost], &[]).await;
    gone(&cluster, &api, "orphaned-at-birth").await;
    // The children are still there while their owner is.
    assert!(api.get_opt("child-0").await.unwrap().is_some());

    api.delete("parent", &DeleteParams::background()).await.unwrap();
    for i in 0..3 {
        gone(&cluster, &api, &format!("child-{i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_deletion_keeps_dependents_and_strips_the_reference() {
    let cluster = cluster().await;
    let api = configmaps(&cluster.client, &cluster.namespace("gc-orphan").await);
    let parent = owner(&api, "parent").await;
    dependent(&api, "child", vec![reference(&parent, true)], &[]).await;
    api.delete("parent", &DeleteParams::orphan()).await.unwrap();
    gone(&cluster, &api, "parent").await;
    let child = api.get("child").await.unwrap();
    assert!(child.owner_references().is_empty(), "{:?}", child.owner_references());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(api.get_opt("child").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let cluster = cluster().await;
    let api = configmaps(&cluster.client, &cluster.namespace("gc-fg").await);
    let parent = owner(&api, "parent").await;
    dependent(&api, "held", vec![reference(&parent, true)], &["example.com/hold"]).await;
    dependent(&api, "free", vec![reference(&parent, true)], &[]).await;
    api.delete("parent", &DeleteParams::foreground()).await.unwrap();
    gone(&cluster, &api, "free").await;
    // "held" is being deleted but keeps its finalizer, so the parent must wait.
    let held = cluster
        .eventually("held to be marked for deletion", WAIT, || async {
            api.get("held").await.ok().filter(|cm| cm.metadata.deletion_timestamp.is_some())
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = api.get("parent").await.unwrap();
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert!(waiting.finalizers().contains(&"foregroundDeletion".to_string()));

    let release = json!({"metadata": {"resourceVersion": held.resource_version(), "finalizers": []}});
    api.patch("held", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();
    gone(&cluster, &api, "held").await;
    gone(&cluster, &api, "parent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_with_another_live_owner_survives_and_loses_only_the_dead_reference() {
    let cluster = cluster().await;
    let api = configmaps(&cluster.client, &cluster.namespace("gc-two").await);
    let (a, b) = (owner(&api, "a").await, owner(&api, "b").await);
    dependent(&api, "shared", vec![reference(&a, false), reference(&b, false)], &[]).await;
    api.delete("a", &DeleteParams::background()).await.unwrap();
    let remaining = cluster
        .eventually("the dead owner to be dropped", WAIT, || async {
            let refs = api.get("shared").await.unwrap().owner_references().to_vec();
            (refs.len() == 1).then_some(refs)
        })
        .await;
    assert_eq!(remaining[0].name, "b");
    api.delete("b", &DeleteParams::background()).await.unwrap();
    gone(&cluster, &api, "shared").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_deleted_while_the_collector_was_down_are_noticed() {
    let cluster = common::Cluster::server_only().await;
    let api = configmaps(&cluster.client, &cluster.namespace("gc-down").await);
    let parent = owner(&api, "parent").await;
    dependent(&api, "child", vec![reference(&parent, false)], &[]).await;
    api.delete("parent", &DeleteParams::background()).await.unwrap();
    tokio::spawn(kapal_controllers::garbagecollector::run(cluster.client.clone()));
    gone(&cluster, &api, "child").await;
}
