//! Every namespace gets a `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap, and
//! both come back when deleted.

mod common;

use std::time::Duration;

use common::Cluster;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_gets_a_default_service_account_that_comes_back() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("team-a").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), &ns);
    let first = cluster
        .eventually("the default serviceaccount", WAIT, || async { accounts.get_opt("default").await.unwrap() })
        .await;
    let system: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), "kube-system");
    cluster
        .eventually("kube-system's default serviceaccount", WAIT, || async { system.get_opt("default").await.unwrap() })
        .await;
    accounts.delete("default", &DeleteParams::default()).await.unwrap();
    let again = cluster
        .eventually("a new default serviceaccount", WAIT, || async {
            accounts.get_opt("default").await.unwrap().filter(|sa| sa.metadata.uid != first.metadata.uid)
        })
        .await;
    assert!(again.metadata.uid.is_some());
}

/// The server's CA, as the admin kubeconfig carries it (base64 of the PEM).
fn ca_data(cluster: &Cluster) -> String {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&cluster.kubeconfig()).unwrap();
    kubeconfig.clusters[0].cluster.as_ref().unwrap().certificate_authority_data.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_ca_is_published_in_every_namespace_and_restored() {
    let cluster = Cluster::start().await;
    let data = ca_data(&cluster);
    use base64::Engine;
    let pem = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(&data).unwrap()).unwrap();
    assert!(pem.contains("BEGIN CERTIFICATE"));
    // The server publishes kube-public/cluster-info at start: a kubeconfig with the cluster's
    // address and CA, no credentials.
    let public: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "kube-public");
    let info = public.get("cluster-info").await.unwrap().data.unwrap();
    assert!(info["kubeconfig"].contains(&format!("certificate-authority-data: {data}")), "{info:?}");
    assert!(!info["kubeconfig"].contains("token") && !info["kubeconfig"].contains("client-key"));
    let ns = cluster.namespace("team-b").await;
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let root_ca =
        || async { maps.get_opt("kube-root-ca.crt").await.unwrap().and_then(|cm| cm.data?.get("ca.crt").cloned()) };
    let published = cluster.eventually("kube-root-ca.crt", WAIT, root_ca).await;
    assert_eq!(published, pem);
    let defaults: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    cluster
        .eventually("kube-root-ca.crt in default", WAIT, || async {
            defaults.get_opt("kube-root-ca.crt").await.unwrap().and_then(|cm| cm.data?.get("ca.crt").cloned())
        })
        .await;

    maps.delete("kube-root-ca.crt", &DeleteParams::default()).await.unwrap();
    cluster
        .eventually("kube-root-ca.crt to come back", WAIT, || async { root_ca().await.filter(|ca| *ca == pem) })
        .await;
    let tampered = json!({"data": {"ca.crt": "not a certificate"}});
    maps.patch("kube-root-ca.crt", &PatchParams::default(), &Patch::Merge(&tampered)).await.unwrap();
    cluster
        .eventually("kube-root-ca.crt to be restored", WAIT, || async { root_ca().await.filter(|ca| *ca == pem) })
        .await;
}
