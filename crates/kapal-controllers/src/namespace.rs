//! The namespace controller: empties a namespace that is being deleted, then releases its
//! `kubernetes` finalizer so the API server removes it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

/// The finalizer this controller owns, in `spec.finalizers`.
pub const FINALIZER: &str = "kubernetes";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("discovering namespaced resources: {0}")]
    Discovery(#[source] kube::Error),
    #[error("deleting {resource} in namespace {namespace}: {source}")]
    Delete { resource: String, namespace: String, source: kube::Error },
    #[error("finalizing namespace {0}: {1}")]
    Finalize(String, #[source] kube::Error),
}

struct Ctx {
    client: Client,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    Controller::new(namespaces, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "namespace reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(_ns: Arc<Namespace>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "namespace controller");
    Action::requeue(Duration::from_secs(2))
}

fn holds_finalizer(ns: &Namespace) -> bool {
    ns.spec.as_ref().and_then(|s| s.finalizers.as_ref()).is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_none() || !holds_finalizer(&ns) {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let remaining = delete_content(&ctx.client, &name).await?;
    if remaining > 0 {
        tracing::info!(namespace = %name, remaining, "waiting for namespace content to go away");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let mut finalized = (*ns).clone();
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers =
            Some(spec.finalizers.take().unwrap_or_default().into_iter().filter(|f| f != FINALIZER).collect());
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api.replace_subresource("finalize", &name, &PostParams::default(), &finalized).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(Error::Finalize(name, e)),
    }
    tracing::info!(namespace = %name, "namespace finalized");
    Ok(Action::await_change())
}

/// Deletes every namespaced object in `namespace`; returns how many are still there.
async fn delete_content(client: &Client, namespace: &str) -> Result<usize, Error> {
    let discovery = Discovery::new(client.clone()).run().await.map_err(Error::Discovery)?;
    let mut remaining = 0;
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !deletable(&caps) {
                continue;
            }
            remaining += delete_all(client, namespace, &ar).await?;
        }
    }
    Ok(remaining)
}

fn deletable(caps: &ApiCapabilities) -> bool {
    caps.scope == Scope::Namespaced
        && caps.supports_operation(verbs::DELETE_COLLECTION)
        && caps.supports_operation(verbs::LIST)
}

async fn delete_all(client: &Client, namespace: &str, ar: &ApiResource) -> Result<usize, Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
    let fail = |source| Error::Delete { resource: ar.plural.clone(), namespace: namespace.to_string(), source };
    match api.delete_collection(&DeleteParams::background(), &ListParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => return Ok(0),
        Err(e) => return Err(fail(e)),
    }
    let left = api.list_metadata(&ListParams::default().limit(1)).await.map_err(fail)?;
    Ok(left.items.len())
}
