//! The ServiceAccount controller and the root CA publisher: every active namespace gets a
//! `default` ServiceAccount and a `kube-root-ca.crt` ConfigMap (key `ca.crt`) holding the CA
//! bundle that verifies the API server; both come back when deleted.
//!
//! The CA bundle is read through the API, as any client would: from the `kubeconfig` of the
//! `kube-public/cluster-info` ConfigMap (the bootstrap-token convention), else from the
//! `client-ca-file` of `kube-system/extension-apiserver-authentication`. Until one of them
//! exists only the ServiceAccounts are made.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

/// The ServiceAccount every namespace gets.
pub const DEFAULT_ACCOUNT: &str = "default";
/// The ConfigMap holding the cluster's root CA in every namespace.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// The key of the CA bundle in [`ROOT_CA_CONFIG_MAP`].
pub const ROOT_CA_KEY: &str = "ca.crt";

const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal \
endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across \
distributions of Kubernetes clusters.";

/// Where the CA bundle is read from, in order: (namespace, ConfigMap).
const CA_SOURCES: [(&str, &str); 2] =
    [("kube-public", "cluster-info"), ("kube-system", "extension-apiserver-authentication")];

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ensuring serviceaccount {namespace}/default: {source}")]
    Account { namespace: String, source: kube::Error },
    #[error("ensuring configmap {namespace}/kube-root-ca.crt: {source}")]
    RootCa { namespace: String, source: kube::Error },
    #[error("reading the cluster CA from {namespace}/{name}: {source}")]
    ReadCa { namespace: String, name: String, source: kube::Error },
}

struct Ctx {
    client: Client,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let controller = Controller::new(namespaces, watcher::Config::default());
    let store = controller.store();
    let by_namespace = |obj: ObjectMeta| obj.namespace.map(|ns| ObjectRef::<Namespace>::new(&ns));
    let mut controller = controller
        .watches(
            Api::<ServiceAccount>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={DEFAULT_ACCOUNT}")),
            move |sa| by_namespace(sa.metadata),
        )
        .watches(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={ROOT_CA_CONFIG_MAP}")),
            move |cm| by_namespace(cm.metadata),
        );
    for (namespace, name) in CA_SOURCES {
        let every = store.clone();
        controller = controller.watches(
            Api::<ConfigMap>::namespaced(client.clone(), namespace),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
            move |_| all_namespaces(&every),
        );
    }
    let ctx = Arc::new(Ctx { client });
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "serviceaccount reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn all_namespaces(store: &Store<Namespace>) -> Vec<ObjectRef<Namespace>> {
    store.state().iter().map(|ns| ObjectRef::from_obj(&**ns)).collect()
}

fn error_policy(_ns: Arc<Namespace>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "serviceaccount controller");
    Action::requeue(Duration::from_secs(2))
}

fn terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// Whether a write failed only because the namespace is going away or the object appeared.
fn benign(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 404 || (s.code == 403 && s.reason == "Forbidden" && s.message.contains("terminat")))
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if terminating(&ns) {
        return Ok(Action::await_change());
    }
    let namespace = ns.name_any();
    ensure_account(&ctx.client, &namespace).await?;
    match cluster_ca(&ctx.client).await? {
        Some(ca) => ensure_root_ca(&ctx.client, &namespace, &ca).await?,
        None => tracing::debug!(namespace = %namespace, "no cluster CA published yet; kube-root-ca.crt waits"),
    }
    Ok(Action::await_change())
}

async fn ensure_account(client: &Client, namespace: &str) -> Result<(), Error> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let fail = |source| Error::Account { namespace: namespace.to_string(), source };
    if api.get_opt(DEFAULT_ACCOUNT).await.map_err(fail)?.is_some() {
        return Ok(());
    }
    let account = ServiceAccount {
        metadata: ObjectMeta { name: Some(DEFAULT_ACCOUNT.into()), ..ObjectMeta::default() },
        ..ServiceAccount::default()
    };
    match api.create(&PostParams::default(), &account).await {
        Ok(_) => {
            tracing::info!(namespace, "created the default serviceaccount");
            Ok(())
        }
        Err(e) if benign(&e) => Ok(()),
        Err(e) => Err(fail(e)),
    }
}

async fn ensure_root_ca(client: &Client, namespace: &str, ca: &str) -> Result<(), Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let fail = |source| Error::RootCa { namespace: namespace.to_string(), source };
    let data = BTreeMap::from([(ROOT_CA_KEY.to_string(), ca.to_string())]);
    let description = BTreeMap::from([("kubernetes.io/description".to_string(), DESCRIPTION.to_string())]);
    let result = match api.get_opt(ROOT_CA_CONFIG_MAP).await.map_err(fail)? {
        Some(current) if current.data.as_ref() == Some(&data) => return Ok(()),
        Some(mut current) => {
            current.data = Some(data);
            current.binary_data = None;
            api.replace(ROOT_CA_CONFIG_MAP, &PostParams::default(), &current).await
        }
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(ROOT_CA_CONFIG_MAP.into()),
                    annotations: Some(description),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..ConfigMap::default()
            };
            api.create(&PostParams::default(), &cm).await
        }
    };
    match result {
        Ok(_) => {
            tracing::info!(namespace, "published the cluster CA");
            Ok(())
        }
        Err(e) if benign(&e) => Ok(()),
        Err(e) => Err(fail(e)),
    }
}

/// The cluster CA bundle from the first source that has one.
async fn cluster_ca(client: &Client) -> Result<Option<String>, Error> {
    for (namespace, name) in CA_SOURCES {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let fail = |source| Error::ReadCa { namespace: namespace.into(), name: name.into(), source };
        let Some(cm) = api.get_opt(name).await.map_err(fail)? else { continue };
        if let Some(ca) = ca_of(&cm) {
            return Ok(Some(ca));
        }
    }
    Ok(None)
}

/// The CA bundle in a source ConfigMap: `certificate-authority-data` of the first cluster of a
/// `kubeconfig` key, or a `client-ca-file` key.
pub fn ca_of(cm: &ConfigMap) -> Option<String> {
    let data = cm.data.as_ref()?;
    if let Some(kubeconfig) = data.get("kubeconfig") {
        let parsed = kube::config::Kubeconfig::from_yaml(kubeconfig).ok()?;
        let cluster = parsed.clusters.first()?.cluster.as_ref()?;
        let encoded = cluster.certificate_authority_data.as_ref()?;
        let pem = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
        return String::from_utf8(pem).ok().filter(|s| s.contains("BEGIN CERTIFICATE"));
    }
    data.get("client-ca-file").filter(|s| s.contains("BEGIN CERTIFICATE")).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn reads_the_ca_from_a_cluster_info_kubeconfig() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(PEM);
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority-data: {b64}\n"
        );
        let cm: ConfigMap = serde_json::from_value(json!({"data": {"kubeconfig": kubeconfig}})).unwrap();
        assert_eq!(ca_of(&cm).as_deref(), Some(PEM));
    }

    #[test]
    fn reads_the_ca_from_the_authentication_config_map_and_rejects_garbage() {
        let cm: ConfigMap = serde_json::from_value(json!({"data": {"client-ca-file": PEM}})).unwrap();
        assert_eq!(ca_of(&cm).as_deref(), Some(PEM));
        let bad: ConfigMap = serde_json::from_value(json!({"data": {"client-ca-file": "nope"}})).unwrap();
        assert_eq!(ca_of(&bad), None);
    }
}
