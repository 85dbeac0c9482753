//! The StatefulSet controller: pods with stable names (`<set>-<ordinal>`), stable storage (one
//! PersistentVolumeClaim per claim template and ordinal) and ordered rollouts.
//!
//! Each reconcile reads the StatefulSet, its pods, claims and ControllerRevisions from the API
//! (lists are read-your-writes), so it acts on the truth. Pod names are fixed by ordinal, so a
//! second create of the same pod fails with AlreadyExists instead of making a duplicate: a
//! restart at any point resumes where the rollout stood. [`revision`] keeps the template history
//! (shared with the DaemonSet controller), [`identity`] builds pods and claims, [`sync`] takes one
//! step of `OrderedReady`/`Parallel` management and of the update strategy, then writes status.

mod identity;
pub(crate) mod revision;
mod sync;

pub(crate) use sync::scaled;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

/// The name events carry as their reporting controller.
pub const REPORTER: &str = "statefulset-controller";
/// The label naming a StatefulSet pod (for per-pod Services).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label holding a StatefulSet pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// What can go wrong syncing one StatefulSet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading statefulset {0}: {1}")]
    Get(String, #[source] kube::Error),
    #[error("listing {what} for statefulset {key}: {source}")]
    List { what: &'static str, key: String, source: kube::Error },
    #[error("statefulset {0} has an invalid selector: {1}")]
    Selector(String, String),
    #[error("statefulset {0}: {1}")]
    Spec(String, String),
    #[error("{verb} {what} {namespace}/{name}: {source}")]
    Write { verb: &'static str, what: &'static str, namespace: String, name: String, source: kube::Error },
    #[error("updating status of statefulset {0}: {1}")]
    Status(String, #[source] kube::Error),
    #[error("statefulset {key}: {source}")]
    Revision { key: String, source: revision::Error },
}

struct Ctx {
    client: Client,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let sets: Api<StatefulSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    Controller::new(sets, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "statefulset reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(set: Arc<StatefulSet>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(statefulset = %key(&set), %error, "statefulset sync failed");
    Action::requeue(Duration::from_secs(1))
}

fn key(set: &StatefulSet) -> String {
    format!("{}/{}", set.namespace().unwrap_or_default(), set.name_any())
}

#[tracing::instrument(skip_all, fields(statefulset = %key(&cached)))]
async fn reconcile(cached: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let namespace = cached.namespace().unwrap_or_default();
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let set = match api.get_opt(&cached.name_any()).await.map_err(|e| Error::Get(key(&cached), e))? {
        Some(s) if s.uid() == cached.uid() => s,
        _ => return Ok(Action::await_change()),
    };
    sync::Sync::new(ctx.client.clone(), set).run().await
}

/// Publishes an event about `set` (a fresh recorder per event, as `replicaset::record`).
pub(crate) async fn record(client: &Client, set: &StatefulSet, type_: EventType, reason: &str, note: String) {
    let recorder = Recorder::new(client.clone(), Reporter { controller: REPORTER.into(), instance: None });
    let event = Event { type_, reason: reason.into(), note: Some(note), action: reason.into(), secondary: None };
    if let Err(error) = recorder.publish(&event, &set.object_ref(&())).await {
        tracing::debug!(%error, reason, "publishing event failed");
    }
}
