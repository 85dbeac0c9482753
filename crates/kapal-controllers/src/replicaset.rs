//! The ReplicaSet controller: keeps `spec.replicas` active pods matching the selector.
//!
//! Pods are read from the shared [`PodCache`] (indexed by controller, so a sync looks only at its
//! own pods, its Deployment's other ReplicaSets' pods and the namespace's orphans), the
//! ReplicaSet itself from the API. A cache lags behind writes, so every sync first waits until
//! the cache has seen this ReplicaSet's own last write (its resourceVersion): a stale cache can
//! never make it create a pod twice, and kube-rs' per-key queue guarantees one sync per
//! ReplicaSet at a time. It claims pods like upstream's controllerRef manager (adopting matching
//! orphans, releasing owned pods that stopped matching), creates missing pods in slow-start
//! batches, deletes surplus pods in upstream's ranking order, and writes status.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::podcache::{self, Feed, PodCache};
use crate::podtemplate::{self, api_message, is_status};

/// The name events carry as their reporting controller.
pub const REPORTER: &str = "replicaset-controller";
/// At most this many pods are created or deleted in one sync (upstream `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;
/// The annotation that lowers a pod's cost of deletion on scale-down.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// How long a sync waits for the cache to see its ReplicaSet's last write before it retries.
const CATCH_UP: Duration = Duration::from_secs(10);

/// What can go wrong reconciling one ReplicaSet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading replicaset {0}: {1}")]
    Get(String, #[source] kube::Error),
    #[error("replicaset {0} has an invalid selector: {1}")]
    Selector(String, String),
    #[error("{verb} pod {namespace}/{pod}: {source}")]
    Claim { verb: &'static str, namespace: String, pod: String, source: kube::Error },
    #[error("updating status of replicaset {0}: {1}")]
    Status(String, #[source] kube::Error),
    #[error("managing replicas of replicaset {0}: {1}")]
    Manage(String, String),
}

struct Ctx {
    client: Client,
    pods: Arc<PodCache>,
    sets: Store<ReplicaSet>,
    /// ReplicaSet uid → the resourceVersion of its last pod write the cache has not yet shown.
    written: Mutex<HashMap<String, u64>>,
}

impl Ctx {
    fn wrote(&self, rs: &ReplicaSet, pod: &Pod) {
        let (Some(uid), revision) = (rs.uid(), podcache::revision_of(pod)) else { return };
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        let last = written.entry(uid).or_default();
        *last = (*last).max(revision);
    }

    /// Waits until the cache shows this ReplicaSet's own writes; false if it did not in time.
    async fn caught_up(&self, rs: &ReplicaSet) -> bool {
        let uid = rs.uid().unwrap_or_default();
        let pending = self.written.lock().unwrap_or_else(|e| e.into_inner()).get(&uid).copied();
        let Some(revision) = pending else { return true };
        if !self.pods.caught_up(revision, CATCH_UP).await {
            return false;
        }
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if written.get(&uid) == Some(&revision) {
            written.remove(&uid);
        }
        true
    }
}

/// Runs the controller with a pod cache of its own.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let pods = PodCache::start(client.clone());
    run_with(client, pods).await
}

/// Runs the controller on a shared pod cache.
pub async fn run_with(client: Client, pods: Arc<PodCache>) -> anyhow::Result<()> {
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    let triggers = triggers(&pods, store.clone());
    pods.synced().await;
    let ctx = Arc::new(Ctx { client, pods, sets: store, written: Mutex::default() });
    controller
        .reconcile_on(triggers)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "replicaset reconcile failed");
            }
        })
        .await;
    Ok(())
}

/// The ReplicaSets to sync after pod changes: the controllers of the pod before and after, and
/// for an orphan every ReplicaSet that may adopt it. A relist, or falling behind, syncs them all.
fn triggers(pods: &PodCache, store: Store<ReplicaSet>) -> impl Stream<Item = ObjectRef<ReplicaSet>> + use<> {
    futures::stream::unfold(pods.subscribe(), move |mut feed| {
        let store = store.clone();
        async move {
            let refs: Vec<ObjectRef<ReplicaSet>> = match feed.recv().await {
                Ok(Feed::Changed(change)) => {
                    let mut refs = Vec::new();
                    for pod in change.old.iter().chain(change.new.iter()) {
                        refs.extend(podcache::controller_ref_of(pod, "ReplicaSet"));
                    }
                    if let Some(pod) = &change.new {
                        refs.extend(orphan_owners(&store, pod));
                    }
                    refs.dedup();
                    refs
                }
                Ok(Feed::Resync) | Err(RecvError::Lagged(_)) => {
                    store.state().iter().map(|rs| ObjectRef::from_obj(rs.as_ref())).collect()
                }
                Err(RecvError::Closed) => return None,
            };
            Some((futures::stream::iter(refs), feed))
        }
    })
    .flatten()
}

/// The selector of a ReplicaSet's candidate pods: its own, or for a Deployment's ReplicaSet the
/// Deployment's (its selector without `pod-template-hash`), so that ranking on scale-down sees
/// the sibling ReplicaSets' pods too.
fn candidate_selector(rs: &ReplicaSet) -> Result<kapal_api::selector::LabelSelector, String> {
    let mut selector = rs.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
    if podtemplate::controller_of(&rs.metadata).is_some_and(|o| o.kind == "Deployment")
        && let Some(labels) = selector.match_labels.as_mut()
    {
        labels.remove("pod-template-hash");
    }
    podtemplate::label_selector(Some(&selector))
}

/// The uids of the ReplicaSets with the same controller (Deployment) as `rs`, itself included.
fn siblings(store: &Store<ReplicaSet>, rs: &ReplicaSet) -> HashSet<String> {
    let mut uids: HashSet<String> = rs.uid().into_iter().collect();
    if let Some(owner) = podtemplate::controller_of(&rs.metadata) {
        let namespace = rs.namespace();
        uids.extend(
            store
                .state()
                .iter()
                .filter(|s| s.namespace() == namespace)
                .filter(|s| podtemplate::controller_of(&s.metadata).is_some_and(|o| o.uid == owner.uid))
                .filter_map(|s| s.uid()),
        );
    }
    uids
}

/// The ReplicaSets that may adopt an orphan pod: those in its namespace whose selector matches.
fn orphan_owners(store: &Store<ReplicaSet>, pod: &Pod) -> Vec<ObjectRef<ReplicaSet>> {
    if podtemplate::controller_of(&pod.metadata).is_some() || !podtemplate::is_active(pod) {
        return Vec::new();
    }
    let namespace = pod.namespace();
    store
        .state()
        .iter()
        .filter(|rs| rs.namespace() == namespace)
        .filter(|rs| {
            podtemplate::label_selector(rs.spec.as_ref().map(|s| &s.selector))
                .is_ok_and(|sel| !sel.is_empty() && podtemplate::selects(&sel, &pod.metadata))
        })
        .map(|rs| ObjectRef::from_obj(rs.as_ref()))
        .collect()
}

fn error_policy(rs: Arc<ReplicaSet>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(replicaset = %key(&rs), %error, "replicaset sync failed");
    match error {
        // A refused create (quota, admission) rarely clears in a second; each retry records a
        // FailedCreate event, so retry less eagerly than after a conflict.
        Error::Manage(..) => Action::requeue(Duration::from_secs(5)),
        _ => Action::requeue(Duration::from_secs(1)),
    }
}

fn key(rs: &ReplicaSet) -> String {
    format!("{}/{}", rs.namespace().unwrap_or_default(), rs.name_any())
}

#[tracing::instrument(skip_all, fields(replicaset = %key(&cached)))]
async fn reconcile(cached: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let namespace = cached.namespace().unwrap_or_default();
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    // The cached copy may lag behind a scale that a Deployment just wrote; act on the truth.
    let rs = match sets.get_opt(&cached.name_any()).await.map_err(|e| Error::Get(key(&cached), e))? {
        Some(rs) if rs.uid() == cached.uid() => rs,
        _ => return Ok(Action::await_change()),
    };
    if !ctx.caught_up(&rs).await {
        tracing::debug!("the pod cache has not caught up with this replicaset's writes yet");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let spec = rs.spec.clone().unwrap_or_default();
    let selector = podtemplate::label_selector(Some(&spec.selector)).map_err(|e| Error::Selector(key(&rs), e))?;
    let candidates = candidate_selector(&rs).map_err(|e| Error::Selector(key(&rs), e))?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    // This ReplicaSet's pods (matching or not: those that stopped matching are released), its
    // siblings' and the orphans that match the candidate selector.
    let uid = rs.uid().unwrap_or_default();
    let siblings = siblings(&ctx.sets, &rs);
    let mut active: Vec<Pod> = ctx
        .pods
        .controlled_by(&uid)
        .into_iter()
        .chain(siblings.iter().filter(|s| **s != uid).flat_map(|s| ctx.pods.controlled_by(s)))
        .chain(ctx.pods.orphans(&namespace))
        .filter(|p| podtemplate::is_active(p))
        .filter(|p| {
            podtemplate::controller_of(&p.metadata).is_some_and(|o| o.uid == uid)
                || podtemplate::selects(&candidates, &p.metadata)
        })
        .map(|p| Pod::clone(&p))
        .collect();
    active.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let owned = claim_pods(&ctx, &pods, &rs, &selector, active.clone()).await?;

    let manage_error = if rs.metadata.deletion_timestamp.is_none() {
        let related: Vec<Pod> = active
            .iter()
            .filter(|p| podtemplate::controller_of(&p.metadata).is_some_and(|o| siblings.contains(&o.uid)))
            .cloned()
            .collect();
        manage_replicas(&ctx, &pods, &rs, &owned, &related).await
    } else {
        None
    };
    let desired = spec.replicas.unwrap_or(1);
    let now = jiff::Timestamp::now();
    let status = calculate_status(&rs, &owned, manage_error.as_ref(), now);
    if rs.status.as_ref() != Some(&status) {
        let mut body = serde_json::to_value(&status).unwrap_or_default();
        // A merge patch leaves absent fields alone; a cleared condition list must be sent as null.
        body["conditions"] = json!(status.conditions);
        let patch = json!({"status": body});
        sets.patch_status(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::Status(key(&rs), e))?;
    }
    if let Some(ManageError { message, .. }) = manage_error {
        return Err(Error::Manage(key(&rs), message));
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let waiting_for_availability = status.ready_replicas != status.available_replicas;
    if min_ready > 0 && waiting_for_availability && status.replicas == desired {
        return Ok(Action::requeue(Duration::from_secs(u64::try_from(min_ready).unwrap_or(1))));
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// The active pods this ReplicaSet controls after adopting and releasing, as upstream's
/// `ClaimPods`.
async fn claim_pods(
    ctx: &Ctx,
    pods: &Api<Pod>,
    rs: &ReplicaSet,
    selector: &kapal_api::selector::LabelSelector,
    active: Vec<Pod>,
) -> Result<Vec<Pod>, Error> {
    let uid = rs.uid().unwrap_or_default();
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let mut owned = Vec::new();
    for pod in active {
        let matches = !selector.is_empty() && podtemplate::selects(selector, &pod.metadata);
        match podtemplate::controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches || deleting {
                    owned.push(pod);
                } else if let Some(released) = set_owner(pods, &pod, None, "releasing").await? {
                    ctx.wrote(rs, &released);
                }
            }
            Some(_) => {}
            None if matches && !deleting => {
                if let Some(adopted) = set_owner(pods, &pod, Some(podtemplate::controller_ref(rs)), "adopting").await? {
                    ctx.wrote(rs, &adopted);
                    owned.push(adopted);
                }
            }
            None => {}
        }
    }
    Ok(owned)
}

async fn set_owner(
    pods: &Api<Pod>,
    pod: &Pod,
    owner: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    verb: &'static str,
) -> Result<Option<Pod>, Error> {
    let claimed = podtemplate::set_controller(pods, pod, owner).await.map_err(|source| Error::Claim {
        verb,
        namespace: pod.namespace().unwrap_or_default(),
        pod: pod.name_any(),
        source,
    })?;
    if claimed.is_some() {
        tracing::info!(pod = %pod.name_any(), verb, "claimed pod");
    }
    Ok(claimed)
}

/// Why creating or deleting pods stopped.
struct ManageError {
    reason: &'static str,
    message: String,
}

/// Creates or deletes pods so that `owned` reaches `spec.replicas`; returns the first failure.
/// `related` are the active pods of the ReplicaSet and its siblings, counted per node in ranking.
async fn manage_replicas(
    ctx: &Ctx,
    pods: &Api<Pod>,
    rs: &ReplicaSet,
    owned: &[Pod],
    related: &[Pod],
) -> Option<ManageError> {
    let desired = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let desired = usize::try_from(desired).unwrap_or(0);
    if owned.len() < desired {
        let missing = (desired - owned.len()).min(BURST_REPLICAS);
        create_pods(ctx, pods, rs, missing).await
    } else if owned.len() > desired {
        let surplus = (owned.len() - desired).min(BURST_REPLICAS);
        let victims = pods_to_delete(owned, related, surplus, jiff::Timestamp::now());
        delete_pods(ctx, pods, rs, victims).await
    } else {
        None
    }
}

/// Creates `count` pods in batches of 1, 2, 4, … and stops at the first batch with an error, so a
/// quota or admission failure costs one request instead of hundreds (upstream `slowStartBatch`).
async fn create_pods(ctx: &Ctx, pods: &Api<Pod>, rs: &ReplicaSet, count: usize) -> Option<ManageError> {
    let client = &ctx.client;
    let Some(template) = rs.spec.as_ref().and_then(|s| s.template.as_ref()) else {
        return Some(ManageError { reason: "FailedCreate", message: "replicaset has no pod template".into() });
    };
    let prefix = format!("{}-", rs.name_any());
    let pod = podtemplate::pod_from_template(template, &prefix, podtemplate::controller_ref(rs));
    let params = PostParams::default();
    let mut remaining = count;
    let mut batch = 1.min(remaining);
    while batch > 0 {
        let results = futures::future::join_all((0..batch).map(|_| pods.create(&params, &pod))).await;
        let mut failure = None;
        for result in results {
            match result {
                Ok(created) => {
                    ctx.wrote(rs, &created);
                    tracing::info!(pod = %created.name_any(), "created pod");
                    record(
                        client,
                        rs,
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {}", created.name_any()),
                    )
                    .await;
                }
                Err(e) => {
                    let message = api_message(&e);
                    tracing::warn!(error = %message, "creating pod failed");
                    record(client, rs, EventType::Warning, "FailedCreate", format!("Error creating: {message}")).await;
                    failure.get_or_insert(ManageError { reason: "FailedCreate", message });
                }
            }
        }
        if failure.is_some() {
            return failure;
        }
        remaining -= batch;
        batch = (batch * 2).min(remaining);
    }
    None
}

async fn delete_pods(ctx: &Ctx, pods: &Api<Pod>, rs: &ReplicaSet, victims: Vec<&Pod>) -> Option<ManageError> {
    let client = &ctx.client;
    let deletions = victims.iter().map(|pod| async move {
        let name = pod.name_any();
        (name.clone(), pods.delete(&name, &DeleteParams::default()).await)
    });
    let mut failure = None;
    for (name, result) in futures::future::join_all(deletions).await {
        match result {
            Ok(gone) => {
                if let Some(pod) = gone.left() {
                    ctx.wrote(rs, &pod);
                }
                tracing::info!(pod = %name, "deleted pod");
                record(client, rs, EventType::Normal, "SuccessfulDelete", format!("Deleted pod: {name}")).await;
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => {
                let message = api_message(&e);
                record(client, rs, EventType::Warning, "FailedDelete", format!("Error deleting: {message}")).await;
                failure.get_or_insert(ManageError { reason: "FailedDelete", message });
            }
        }
    }
    failure
}

/// Publishes an event about `rs`. A fresh recorder per event: kube's recorder folds events with
/// the same reason into one series and keeps the first message, which would hide every pod name
/// after the first.
async fn record(client: &Client, rs: &ReplicaSet, type_: EventType, reason: &str, note: String) {
    let recorder = Recorder::new(client.clone(), Reporter { controller: REPORTER.into(), instance: None });
    let event = Event { type_, reason: reason.into(), note: Some(note), action: reason.into(), secondary: None };
    if let Err(error) = recorder.publish(&event, &rs.object_ref(&())).await {
        tracing::debug!(%error, reason, "publishing event failed");
    }
}

/// The `count` pods to delete first, in upstream's `ActivePodsWithRanks` order.
/// `related` are the pods counted per node for rule 5 ("doubled up" pods go first).
pub fn pods_to_delete<'a>(pods: &'a [Pod], related: &[Pod], count: usize, now: jiff::Timestamp) -> Vec<&'a Pod> {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for pod in related {
        if let Some(node) = node_of(pod) {
            *per_node.entry(node).or_default() += 1;
        }
    }
    let mut ranked: Vec<(&Pod, usize)> =
        pods.iter().map(|p| (p, node_of(p).and_then(|n| per_node.get(n).copied()).unwrap_or(0))).collect();
    ranked.sort_by(|a, b| compare_for_deletion(a, b, now));
    ranked.into_iter().take(count).map(|(p, _)| p).collect()
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match podtemplate::phase(pod) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.annotations().get(DELETION_COST).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

/// Upstream's `ActivePodsWithRanks.Less`: "less" pods are deleted first.
fn compare_for_deletion(a: &(&Pod, usize), b: &(&Pod, usize), now: jiff::Timestamp) -> Ordering {
    let (pa, ra) = (a.0, a.1);
    let (pb, rb) = (b.0, b.1);
    node_of(pa)
        .is_some()
        .cmp(&node_of(pb).is_some())
        .then_with(|| phase_ordinal(pa).cmp(&phase_ordinal(pb)))
        .then_with(|| podtemplate::is_ready(pa).cmp(&podtemplate::is_ready(pb)))
        .then_with(|| deletion_cost(pa).cmp(&deletion_cost(pb)))
        .then_with(|| rb.cmp(&ra))
        .then_with(|| match (podtemplate::ready_since(pa), podtemplate::ready_since(pb)) {
            (Some(ta), Some(tb)) if ta != tb => newer_first(ta, tb, pa, pb, now),
            _ => Ordering::Equal,
        })
        .then_with(|| max_restarts(pb).cmp(&max_restarts(pa)))
        .then_with(|| {
            let ca = pa.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let cb = pb.metadata.creation_timestamp.as_ref().map(|t| t.0);
            match (ca, cb) {
                (Some(ta), Some(tb)) if ta != tb => newer_first(ta, tb, pa, pb, now),
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                _ => Ordering::Equal,
            }
        })
}

/// The more recent time first, compared on a log₂ scale of the age (LogarithmicScaleDown);
/// within one bucket the UID decides, which spreads deletions pseudo-randomly.
fn newer_first(ta: jiff::Timestamp, tb: jiff::Timestamp, pa: &Pod, pb: &Pod, now: jiff::Timestamp) -> Ordering {
    let bucket = |t: jiff::Timestamp| {
        let age = now.as_nanosecond() - t.as_nanosecond();
        if age > 0 { (age as f64).log2() as i64 } else { -1 }
    };
    match bucket(ta).cmp(&bucket(tb)) {
        Ordering::Equal => pa.metadata.uid.cmp(&pb.metadata.uid),
        other => other,
    }
}

/// The status a sync of `owned` pods reports (upstream `calculateStatus`).
fn calculate_status(
    rs: &ReplicaSet,
    owned: &[Pod],
    error: Option<&ManageError>,
    now: jiff::Timestamp,
) -> ReplicaSetStatus {
    let spec = rs.spec.clone().unwrap_or_default();
    let template_labels: BTreeMap<String, String> =
        spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let count = |f: &dyn Fn(&Pod) -> bool| i32::try_from(owned.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX);
    let fully_labeled = count(&|p| template_labels.iter().all(|(k, v)| p.labels().get(k) == Some(v)));
    let previous = rs.status.clone().unwrap_or_default();
    let mut conditions = previous.conditions.clone().unwrap_or_default();
    let failing = conditions.iter().any(|c| c.type_ == "ReplicaFailure");
    match error {
        Some(e) if !failing => conditions.push(ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some(e.reason.into()),
            message: Some(e.message.clone()),
            last_transition_time: Some(Time(now)),
        }),
        None if failing => conditions.retain(|c| c.type_ != "ReplicaFailure"),
        _ => {}
    }
    ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(fully_labeled),
        ready_replicas: Some(count(&podtemplate::is_ready)),
        available_replicas: Some(count(&|p| podtemplate::is_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation,
        conditions: if conditions.is_empty() { None } else { Some(conditions) },
        terminating_replicas: previous.terminating_replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn names<'a>(pods: &[&'a Pod]) -> Vec<&'a str> {
        pods.iter().map(|p| p.metadata.name.as_deref().unwrap()).collect()
    }

    #[test]
    fn unscheduled_then_pending_then_not_ready_pods_go_first() {
        let ready = json!([{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        let pods = vec![
            pod(
                json!({"metadata": {"name": "running-ready", "uid": "1"}, "spec": {"nodeName": "n1", "containers": []},
                "status": {"phase": "Running", "conditions": ready}}),
            ),
            pod(json!({"metadata": {"name": "running", "uid": "2"}, "spec": {"nodeName": "n1", "containers": []},
                "status": {"phase": "Running"}})),
            pod(json!({"metadata": {"name": "pending", "uid": "3"}, "spec": {"nodeName": "n1", "containers": []},
                "status": {"phase": "Pending"}})),
            pod(json!({"metadata": {"name": "unscheduled", "uid": "4"}, "spec": {"containers": []}})),
        ];
        let now = "2026-01-02T00:00:00Z".parse().unwrap();
        assert_eq!(
            names(&pods_to_delete(&pods, &pods, 4, now)),
            ["unscheduled", "pending", "running", "running-ready"]
        );
        assert_eq!(names(&pods_to_delete(&pods, &pods, 1, now)), ["unscheduled"]);
    }

    #[test]
    fn deletion_cost_then_crowded_nodes_then_newer_pods_go_first() {
        let ready = |t: &str| json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]);
        let mk = |name: &str, node: &str, cost: &str, t: &str| {
            pod(json!({"metadata": {"name": name, "uid": name, "annotations": {DELETION_COST: cost},
                    "creationTimestamp": t},
                "spec": {"nodeName": node, "containers": []}, "status": {"phase": "Running", "conditions": ready(t)}}))
        };
        let pods = vec![
            mk("cheap", "n1", "-5", "2026-01-01T00:00:00Z"),
            mk("old-alone", "n2", "0", "2025-01-01T00:00:00Z"),
            mk("crowded-a", "n3", "0", "2025-01-01T00:00:00Z"),
            mk("crowded-b", "n3", "0", "2025-01-01T00:00:00Z"),
            mk("young-alone", "n4", "0", "2026-01-01T23:59:00Z"),
        ];
        let now = "2026-01-02T00:00:00Z".parse().unwrap();
        let order = names(&pods_to_delete(&pods, &pods, 5, now));
        assert_eq!(order[0], "cheap");
        assert_eq!(&order[1..3], ["crowded-a", "crowded-b"]);
        assert_eq!(&order[3..], ["young-alone", "old-alone"]);
    }

    #[test]
    fn pods_doubled_up_with_sibling_replica_sets_go_first() {
        let mk = |name: &str, node: &str| {
            pod(json!({"metadata": {"name": name, "uid": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"nodeName": node, "containers": []}, "status": {"phase": "Running"}}))
        };
        let owned = vec![mk("on-n1", "n1"), mk("on-n2", "n2")];
        let mut related = owned.clone();
        related.push(mk("sibling", "n2"));
        let now = "2026-01-02T00:00:00Z".parse().unwrap();
        assert_eq!(names(&pods_to_delete(&owned, &related, 1, now)), ["on-n2"]);
        let mut related = owned.clone();
        related.push(mk("sibling", "n1"));
        assert_eq!(names(&pods_to_delete(&owned, &related, 1, now)), ["on-n1"]);
    }

    #[test]
    fn a_create_error_sets_replica_failure_and_success_clears_it() {
        let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "web", "generation": 3},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b", "c": "d"}}}}}))
        .unwrap();
        let now = jiff::Timestamp::now();
        let pods = vec![pod(json!({"metadata": {"labels": {"a": "b"}}, "status": {"phase": "Running"}}))];
        let error = ManageError { reason: "FailedCreate", message: "exceeded quota".into() };
        let status = calculate_status(&rs, &pods, Some(&error), now);
        assert_eq!((status.replicas, status.fully_labeled_replicas, status.observed_generation), (1, Some(0), Some(3)));
        let cond = &status.conditions.as_ref().unwrap()[0];
        assert_eq!((cond.type_.as_str(), cond.reason.as_deref()), ("ReplicaFailure", Some("FailedCreate")));
        let rs = ReplicaSet { status: Some(status), ..rs };
        assert!(calculate_status(&rs, &pods, None, now).conditions.is_none());
    }
}
