//! PodGC removes pods of deleted nodes and terminated pods beyond the threshold.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kapal_controllers::podgc::{Settings, run_with};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

async fn bind(client: &Client, ns: &str, name: &str, node: &str) {
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    let request = http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{name}/binding"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).unwrap())
        .unwrap();
    client.request_text(request).await.unwrap();
}

async fn pod(api: &Api<Pod>, name: &str) {
    let pod = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    api.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_deleted_nodes_and_surplus_terminated_pods_are_removed() {
    let cluster = common::Cluster::server_only().await;
    let ns = cluster.namespace("podgc").await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "alive"}})).unwrap())
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for name in ["on-alive", "on-ghost"] {
        pod(&pods, name).await;
    }
    bind(&client, &ns, "on-alive", "alive").await;
    bind(&client, &ns, "on-ghost", "ghost").await;
    for (i, name) in ["done-0", "done-1", "done-2", "done-3"].iter().enumerate() {
        pod(&pods, name).await;
        bind(&client, &ns, name, "alive").await;
        let phase = if i % 2 == 0 { "Succeeded" } else { "Failed" };
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({"status": {"phase": phase}})))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await; // distinct creation seconds
    }
    let settings = Settings {
        period: Duration::from_millis(200),
        terminated_threshold: 2,
        quarantine: Duration::from_millis(500),
    };
    tokio::spawn(run_with(client.clone(), settings));

    let left = cluster
        .eventually(
            "PodGC to remove the ghost's pod and the oldest terminated pods",
            Duration::from_secs(20),
            || async {
                let mut names: Vec<String> =
                    pods.list(&ListParams::default()).await.unwrap().iter().map(|p| p.name_any()).collect();
                names.sort();
                (names.len() == 3).then_some(names)
            },
        )
        .await;
    assert_eq!(left, ["done-2", "done-3", "on-alive"]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(pods.list(&ListParams::default()).await.unwrap().items.len(), 3, "nothing else goes");
}
