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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_held_up_by_finalizers_says_so_in_the_namespace_status() {
    use kube::api::{Patch, PatchParams};
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("held").await;
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let held = json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}});
    maps.create(&PostParams::default(), &serde_json::from_value(held).unwrap()).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    namespaces.delete(&ns, &DeleteParams::default()).await.unwrap();

    let condition = |n: &Namespace, kind: &str| {
        let conditions = n.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        conditions
            .into_iter()
            .find(|c| c.type_ == kind)
            .map(|c| (c.status, c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
    };
    let reported = cluster
        .eventually("deletion conditions", Duration::from_secs(20), || async {
            let n = namespaces.get(&ns).await.unwrap();
            condition(&n, "NamespaceFinalizersRemaining").is_some_and(|c| c.0 == "True").then_some(n)
        })
        .await;
    assert_eq!(
        condition(&reported, "NamespaceContentRemaining"),
        Some((
            "True".into(),
            "SomeResourcesRemain".into(),
            "Some resources are remaining: configmaps has 1 resource instances".into()
        ))
    );
    assert_eq!(
        condition(&reported, "NamespaceFinalizersRemaining").map(|c| c.2),
        Some("Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances".into())
    );
    assert_eq!(condition(&reported, "NamespaceDeletionDiscoveryFailure").map(|c| c.0), Some("False".into()));
    assert_eq!(reported.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Terminating"));

    // Once the finalizer goes, so do the object and the namespace.
    maps.patch("held", &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"finalizers": null}})))
        .await
        .unwrap();
    cluster
        .eventually("the namespace to disappear", Duration::from_secs(20), || async {
            namespaces.get_opt(&ns).await.unwrap().is_none().then_some(())
        })
        .await;
}
