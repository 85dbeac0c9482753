//! The namespace controller empties a deleted namespace and then lets it go.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_removes_its_content_then_the_namespace() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("doomed").await;
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    for i in 0..5 {
        let cm = serde_json::from_value(json!({"metadata": {"name": format!("cm-{i}")}})).unwrap();
        maps.create(&PostParams::default(), &cm).await.unwrap();
    }
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    namespaces.delete(&ns, &DeleteParams::default()).await.unwrap();
    cluster
        .eventually("the namespace to disappear", Duration::from_secs(20), || async {
            namespaces.get_opt(&ns).await.unwrap().is_none().then_some(())
        })
        .await;
    let leftover = kube::Api::<ConfigMap>::namespaced(cluster.client.clone(), &ns);
    assert!(leftover.list(&Default::default()).await.unwrap().items.is_empty());
}
