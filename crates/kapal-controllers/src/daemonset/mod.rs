//! The DaemonSet controller: one pod per eligible node, rolled out node by node.
//!
//! Each pod is pinned to its node with a required node affinity on `metadata.name` (as upstream)
//! and bound by the scheduler, so resource accounting, `FailedScheduling` events and preemption
//! work for daemon pods as for any other. Each reconcile reads the DaemonSet, the nodes, its pods
//! and its ControllerRevisions from the API (lists are read-your-writes) and creates a pod only
//! for a node that has none, so a restart never leaves a node with two. [`eligibility`] decides
//! where pods belong; [`sync`] creates and deletes them, takes one step of the update strategy
//! and writes status.

mod eligibility;
mod sync;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::statefulset::revision;

/// The name events carry as their reporting controller.
pub const REPORTER: &str = "daemonset-controller";
/// The deprecated label holding the DaemonSet generation a pod was made from.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

/// What can go wrong syncing one DaemonSet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading daemonset {0}: {1}")]
    Get(String, #[source] kube::Error),
    #[error("listing {what} for daemonset {key}: {source}")]
    List { what: &'static str, key: String, source: kube::Error },
    #[error("daemonset {0} has an invalid selector: {1}")]
    Selector(String, String),
    #[error("daemonset {0}: {1}")]
    Spec(String, String),
    #[error("{verb} pod {namespace}/{name}: {source}")]
    Pod { verb: &'static str, namespace: String, name: String, source: kube::Error },
    #[error("updating status of daemonset {0}: {1}")]
    Status(String, #[source] kube::Error),
    #[error("daemonset {key}: {source}")]
    Revision { key: String, source: revision::Error },
}

struct Ctx {
    client: Client,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let sets: Api<DaemonSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    Controller::new(sets, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .reconcile_all_on(placement_changes(nodes))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "daemonset reconcile failed");
            }
        })
        .await;
    Ok(())
}

/// One item whenever a node appears, goes, or changes what decides where daemon pods belong
/// (labels, taints); heartbeats and other status writes are ignored.
fn placement_changes(nodes: Api<Node>) -> impl futures::Stream<Item = ()> + Send + 'static {
    let mut seen: HashMap<String, u64> = HashMap::new();
    watcher(nodes, watcher::Config::default()).default_backoff().filter_map(move |event| {
        let changed = match event {
            Ok(watcher::Event::Apply(node) | watcher::Event::InitApply(node)) => {
                let print = placement_fingerprint(&node);
                seen.insert(node.name_any(), print) != Some(print)
            }
            Ok(watcher::Event::Delete(node)) => {
                seen.remove(&node.name_any());
                true
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => false,
            Err(error) => {
                tracing::debug!(%error, "watching nodes for daemonsets");
                false
            }
        };
        std::future::ready(changed.then_some(()))
    })
}

fn placement_fingerprint(node: &Node) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    node.labels().hash(&mut hasher);
    serde_json::to_string(&node.spec.as_ref().map(|s| &s.taints)).unwrap_or_default().hash(&mut hasher);
    hasher.finish()
}

fn error_policy(ds: Arc<DaemonSet>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(daemonset = %key(&ds), %error, "daemonset sync failed");
    Action::requeue(Duration::from_secs(1))
}

fn key(ds: &DaemonSet) -> String {
    format!("{}/{}", ds.namespace().unwrap_or_default(), ds.name_any())
}

#[tracing::instrument(skip_all, fields(daemonset = %key(&cached)))]
async fn reconcile(cached: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let namespace = cached.namespace().unwrap_or_default();
    let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let ds = match api.get_opt(&cached.name_any()).await.map_err(|e| Error::Get(key(&cached), e))? {
        Some(ds) if ds.uid() == cached.uid() => ds,
        _ => return Ok(Action::await_change()),
    };
    sync::Sync::new(ctx.client.clone(), ds).run().await
}

/// Publishes an event about `ds` (a fresh recorder per event, as `replicaset::record`).
pub(crate) async fn record(client: &Client, ds: &DaemonSet, type_: EventType, reason: &str, note: String) {
    let recorder = Recorder::new(client.clone(), Reporter { controller: REPORTER.into(), instance: None });
    let event = Event { type_, reason: reason.into(), note: Some(note), action: reason.into(), secondary: None };
    if let Err(error) = recorder.publish(&event, &ds.object_ref(&())).await {
        tracing::debug!(%error, reason, "publishing event failed");
    }
}
