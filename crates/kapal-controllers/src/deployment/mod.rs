//! The Deployment controller: rolls a Deployment's pod template out through ReplicaSets.
//!
//! One ReplicaSet per distinct template, named `<deployment>-<pod-template-hash>`; the "new" one
//! matches the current template, the others are "old". A sync claims the ReplicaSets, then either
//! only scales (paused, or `spec.replicas` changed mid-rollout) or takes one step of the strategy
//! (`RollingUpdate` in [`rolling`], `Recreate` in [`recreate`]), and always ends by writing the
//! status and conditions that `kubectl rollout status` reads ([`status`]). Every step is computed
//! from the ReplicaSets as the API returns them now, so a restart at any point resumes the
//! rollout where it stood.

mod history;
mod recreate;
mod rolling;
mod status;
mod sync;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use crate::podtemplate;

pub use history::{compute_hash, equal_ignore_hash};

/// The name events carry as their reporting controller.
pub const REPORTER: &str = "deployment-controller";
/// The label (and selector requirement) that ties a ReplicaSet to one pod template.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision of a ReplicaSet, copied to its Deployment.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions of a ReplicaSet that was rolled back to.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's `spec.replicas` when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// What can go wrong syncing one Deployment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading deployment {0}: {1}")]
    Get(String, #[source] kube::Error),
    #[error("listing {what} for deployment {key}: {source}")]
    List { what: &'static str, key: String, source: kube::Error },
    #[error("deployment {0} has an invalid selector: {1}")]
    Selector(String, String),
    #[error("deployment {0} has an invalid rolling update parameter: {1}")]
    Strategy(String, String),
    #[error("{verb} replicaset {namespace}/{name}: {source}")]
    ReplicaSet { verb: &'static str, namespace: String, name: String, source: kube::Error },
    #[error("updating deployment {0}: {1}")]
    Update(String, #[source] kube::Error),
    #[error("replicaset {0} exists with another template; collision count raised")]
    Collision(String),
}

struct Ctx {
    client: Client,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    let controller = Controller::new(deployments, watcher::Config::default());
    let store = controller.store();
    controller
        .owns(sets.clone(), watcher::Config::default())
        .watches(sets, watcher::Config::default(), move |rs| orphan_owners(&store, &rs))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "deployment reconcile failed");
            }
        })
        .await;
    Ok(())
}

/// The Deployments that may adopt an orphan ReplicaSet.
fn orphan_owners(store: &Store<Deployment>, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
    if podtemplate::controller_of(&rs.metadata).is_some() {
        return Vec::new();
    }
    let namespace = rs.namespace();
    store
        .state()
        .iter()
        .filter(|d| d.namespace() == namespace)
        .filter(|d| {
            podtemplate::label_selector(d.spec.as_ref().map(|s| &s.selector))
                .is_ok_and(|sel| !sel.is_empty() && podtemplate::selects(&sel, &rs.metadata))
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

fn error_policy(d: Arc<Deployment>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(deployment = %key(&d), %error, "deployment sync failed");
    Action::requeue(Duration::from_secs(1))
}

fn key(d: &Deployment) -> String {
    format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any())
}

#[tracing::instrument(skip_all, fields(deployment = %key(&cached)))]
async fn reconcile(cached: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let namespace = cached.namespace().unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let deployment = match api.get_opt(&cached.name_any()).await.map_err(|e| Error::Get(key(&cached), e))? {
        Some(d) if d.uid() == cached.uid() => d,
        _ => return Ok(Action::await_change()),
    };
    let mut sync = sync::Sync::new(ctx.client.clone(), deployment);
    sync.run().await?;
    Ok(sync.next_action())
}

/// Spec values with their API defaults.
pub(crate) fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub(crate) fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub(crate) fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

/// The ReplicaSets of `sets` with any pods wanted (upstream `FilterActiveReplicaSets`).
pub(crate) fn active<'a>(sets: impl IntoIterator<Item = &'a ReplicaSet>) -> Vec<&'a ReplicaSet> {
    sets.into_iter().filter(|rs| rs_replicas(rs) > 0).collect()
}

/// Publishes an event about `d` (a fresh recorder per event, see `replicaset::record`).
pub(crate) async fn record(client: &Client, d: &Deployment, type_: EventType, reason: &str, note: String) {
    let recorder = Recorder::new(client.clone(), Reporter { controller: REPORTER.into(), instance: None });
    let event = Event { type_, reason: reason.into(), note: Some(note), action: reason.into(), secondary: None };
    if let Err(error) = recorder.publish(&event, &d.object_ref(&())).await {
        tracing::debug!(%error, reason, "publishing event failed");
    }
}

/// The ReplicaSets of the Deployment's namespace, listed now.
async fn list_sets(api: &Api<ReplicaSet>, d: &Deployment) -> Result<Vec<ReplicaSet>, Error> {
    let list = api.list(&ListParams::default()).await.map_err(|source| Error::List {
        what: "replicasets",
        key: key(d),
        source,
    })?;
    Ok(list.items)
}
