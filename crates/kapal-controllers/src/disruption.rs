//! The disruption controller: keeps each PodDisruptionBudget's status — how many pods it expects,
//! how many are healthy, how many must stay healthy, and how many voluntary disruptions are
//! allowed now. The API server's eviction subresource reads `status.disruptionsAllowed`,
//! decrements it and records the pod in `status.disruptedPods`; this controller recomputes the
//! figures from the pods and clears `disruptedPods` entries once the pods are gone (or were not
//! deleted within two minutes).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

/// The reporting controller of this controller's events, as upstream.
pub const REPORTER: &str = "controllermanager";
/// How long a pod recorded in `disruptedPods` may take to be deleted before it counts again.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);
/// The condition this controller keeps on every budget.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";

/// How often a budget is recomputed even when none of its pods changed (its controllers may
/// have been scaled).
const RESYNC: Duration = Duration::from_secs(30);

/// What can go wrong while computing a budget's status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing pods for {pdb}: {source}")]
    ListPods { pdb: String, source: kube::Error },
    #[error("invalid selector of {pdb}: {message}")]
    Selector { pdb: String, message: String },
    #[error("found no controllers for pod {0:?}")]
    NoController(String),
    #[error("reading the scale of {kind} {name}: {source}")]
    Scale { kind: String, name: String, source: kube::Error },
    #[error("invalid {field} {value:?}: must be an integer or a percentage")]
    IntOrPercent { field: &'static str, value: String },
    #[error("updating the status of {pdb}: {source}")]
    Status { pdb: String, source: kube::Error },
}

struct Ctx {
    client: Client,
    /// One recorder for the controller's life, so that a repeated event (`NoPods` on every
    /// sync) becomes one series with a count rather than a new Event each time.
    recorder: Recorder,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let budgets: Api<PodDisruptionBudget> = Api::all(client.clone());
    let reporter = Reporter { controller: REPORTER.into(), instance: None };
    let controller = Controller::new(budgets, watcher::Config::default().any_semantic());
    let store = controller.store();
    let pods: Api<Pod> = Api::all(client.clone());
    controller
        .watches(pods, watcher::Config::default().any_semantic(), move |pod| budgets_of(&store, &pod))
        .run(reconcile, error_policy, Arc::new(Ctx { recorder: Recorder::new(client.clone(), reporter), client }))
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "disruption reconcile failed");
            }
        })
        .await;
    Ok(())
}

/// The budgets in the pod's namespace whose selector selects it.
fn budgets_of(store: &Store<PodDisruptionBudget>, pod: &Pod) -> Vec<ObjectRef<PodDisruptionBudget>> {
    let namespace = pod.namespace();
    store
        .state()
        .iter()
        .filter(|pdb| {
            pdb.namespace() == namespace && selector(pdb).ok().flatten().is_some_and(|s| s.matches(pod.labels()))
        })
        .map(|pdb| ObjectRef::from_obj(pdb.as_ref()))
        .collect()
}

fn error_policy(pdb: Arc<PodDisruptionBudget>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, pdb = %name_of(&pdb), "disruption controller");
    Action::requeue(Duration::from_secs(2))
}

fn name_of(pdb: &PodDisruptionBudget) -> String {
    format!("{}/{}", pdb.namespace().unwrap_or_default(), pdb.name_any())
}

/// The budget's selector; `None` selects nothing (an empty selector selects every pod).
fn selector(pdb: &PodDisruptionBudget) -> Result<Option<Selector>, Error> {
    let Some(selector) = pdb.spec.as_ref().and_then(|s| s.selector.clone()) else { return Ok(None) };
    Selector::try_from(selector).map(Some).map_err(|e| Error::Selector { pdb: name_of(pdb), message: e.to_string() })
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let events = Events { recorder: &ctx.recorder, pdb: &pdb };
    let pods = pods_of(&ctx.client, &pdb).await?;
    if pods.is_empty() {
        events.publish(EventType::Normal, "NoPods", "No matching pods found".into()).await;
    }
    let now = jiff::Timestamp::now();
    let (disrupted, recheck) = disrupted_pods(&pdb, &pods, now);
    for pod in expired_disruptions(&pdb, &pods, now) {
        let note = format!("Pod was expected by PDB {} to be deleted but it wasn't", name_of(&pdb));
        tracing::warn!(pdb = %name_of(&pdb), pod = %pod, "disrupted pod was not deleted in time");
        events.publish(EventType::Warning, "NotDeleted", note).await;
    }
    let status = match expected_pods(&ctx.client, &pdb, &pods, &events).await {
        Ok(Expected { expected, desired_healthy }) => {
            let healthy = current_healthy(&pods, &disrupted, now);
            computed_status(&pdb, expected, desired_healthy, healthy, disrupted, now)
        }
        Err(error) => {
            tracing::warn!(%error, pdb = %name_of(&pdb), "computing the expected pods");
            let note = format!("Failed to calculate the number of expected pods: {error}");
            events.publish(EventType::Warning, "CalculateExpectedPodCountFailed", note).await;
            fail_safe_status(&pdb, &error, now)
        }
    };
    write_status(&ctx.client, &pdb, status).await?;
    let requeue = recheck
        .and_then(|at| Duration::try_from(at.duration_since(jiff::Timestamp::now())).ok())
        .map_or(RESYNC, |until| until.min(RESYNC));
    Ok(Action::requeue(requeue))
}

struct Events<'a> {
    recorder: &'a Recorder,
    pdb: &'a PodDisruptionBudget,
}

impl Events<'_> {
    async fn publish(&self, type_: EventType, reason: &str, note: String) {
        let event = Event { type_, reason: reason.into(), note: Some(note), action: reason.into(), secondary: None };
        if let Err(error) = self.recorder.publish(&event, &self.pdb.object_ref(&())).await {
            tracing::debug!(%error, reason, "publishing event failed");
        }
    }
}

async fn pods_of(client: &Client, pdb: &PodDisruptionBudget) -> Result<Vec<Pod>, Error> {
    let Some(selector) = selector(pdb)? else { return Ok(Vec::new()) };
    let api: Api<Pod> = Api::namespaced(client.clone(), &pdb.namespace().unwrap_or_default());
    let pods = api
        .list(&ListParams::default().labels_from(&selector))
        .await
        .map_err(|source| Error::ListPods { pdb: name_of(pdb), source })?;
    Ok(pods.items)
}

fn disrupted_at(pdb: &PodDisruptionBudget, pod: &str) -> Option<jiff::Timestamp> {
    pdb.status.as_ref()?.disrupted_pods.as_ref()?.get(pod).map(|t| t.0)
}

fn deadline(disrupted: jiff::Timestamp) -> jiff::Timestamp {
    let timeout = jiff::SignedDuration::from_secs(DELETION_TIMEOUT.as_secs() as i64);
    disrupted.saturating_add(timeout).unwrap_or(disrupted)
}

/// The `disruptedPods` entries still in force: pods that exist, are not being deleted yet, and
/// were disrupted less than [`DELETION_TIMEOUT`] ago; with the time the earliest runs out.
fn disrupted_pods(
    pdb: &PodDisruptionBudget,
    pods: &[Pod],
    now: jiff::Timestamp,
) -> (BTreeMap<String, Time>, Option<jiff::Timestamp>) {
    let mut kept = BTreeMap::new();
    let mut recheck: Option<jiff::Timestamp> = None;
    for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let name = pod.name_any();
        let Some(at) = disrupted_at(pdb, &name) else { continue };
        let until = deadline(at);
        if until < now {
            continue;
        }
        recheck = Some(recheck.map_or(until, |r| r.min(until)));
        kept.insert(name, Time(at));
    }
    (kept, recheck)
}

/// Pods recorded as disrupted that should have been deleted by now but were not.
fn expired_disruptions(pdb: &PodDisruptionBudget, pods: &[Pod], now: jiff::Timestamp) -> Vec<String> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .filter(|name| disrupted_at(pdb, name).is_some_and(|at| deadline(at) < now))
        .collect()
}

fn pod_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Ready pods that are neither being deleted nor recently disrupted.
fn current_healthy(pods: &[Pod], disrupted: &BTreeMap<String, Time>, now: jiff::Timestamp) -> i32 {
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| disrupted.get(&p.name_any()).is_none_or(|at| deadline(at.0) < now))
        .filter(|p| pod_ready(p))
        .count();
    i32::try_from(healthy).unwrap_or(i32::MAX)
}

/// How many pods a budget expects and how many of them must stay healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expected {
    expected: i32,
    desired_healthy: i32,
}

/// `value` scaled against `total`: an integer as is, a percentage rounded up, as upstream's
/// `GetScaledValueFromIntOrPercent(…, roundUp=true)`.
pub fn scaled(value: &IntOrString, total: i32, field: &'static str) -> Result<i32, Error> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let bad = || Error::IntOrPercent { field, value: s.clone() };
            let percent: i64 = s.strip_suffix('%').ok_or_else(bad)?.parse().map_err(|_| bad())?;
            let scaled = (percent * i64::from(total) + 99).div_euclid(100);
            Ok(i32::try_from(scaled).unwrap_or(i32::MAX))
        }
    }
}

async fn expected_pods(
    client: &Client,
    pdb: &PodDisruptionBudget,
    pods: &[Pod],
    events: &Events<'_>,
) -> Result<Expected, Error> {
    let spec = pdb.spec.clone().unwrap_or_default();
    if let Some(max_unavailable) = &spec.max_unavailable {
        let expected = expected_scale(client, pdb, pods, events).await?;
        let unavailable = scaled(max_unavailable, expected, "maxUnavailable")?;
        return Ok(Expected { expected, desired_healthy: (expected - unavailable).max(0) });
    }
    match &spec.min_available {
        Some(IntOrString::Int(n)) => {
            Ok(Expected { expected: i32::try_from(pods.len()).unwrap_or(i32::MAX), desired_healthy: *n })
        }
        Some(percent) => {
            let expected = expected_scale(client, pdb, pods, events).await?;
            Ok(Expected { expected, desired_healthy: scaled(percent, expected, "minAvailable")? })
        }
        None => Ok(Expected { expected: 0, desired_healthy: 0 }),
    }
}

/// The sum of the scales of the controllers of the pods, each controller counted once (a
/// Deployment, not its ReplicaSets). Pods without a controller are left out, with a warning.
async fn expected_scale(
    client: &Client,
    pdb: &PodDisruptionBudget,
    pods: &[Pod],
    events: &Events<'_>,
) -> Result<i32, Error> {
    let namespace = pdb.namespace().unwrap_or_default();
    let mut resolved: HashMap<String, String> = HashMap::new();
    let mut scales: HashMap<String, i32> = HashMap::new();
    let mut unmanaged = Vec::new();
    for pod in pods {
        let Some(owner) = pod.owner_references().iter().find(|o| o.controller == Some(true)) else {
            unmanaged.push(pod.name_any());
            continue;
        };
        if resolved.contains_key(&owner.uid) {
            continue;
        }
        let Some((uid, scale)) = controller_scale(client, &namespace, owner).await? else {
            let error = Error::NoController(pod.name_any());
            events.publish(EventType::Warning, "NoControllers", error.to_string()).await;
            return Err(error);
        };
        resolved.insert(owner.uid.clone(), uid.clone());
        scales.insert(uid, scale);
    }
    if !unmanaged.is_empty() {
        tracing::warn!(pdb = %name_of(pdb), pods = ?unmanaged, "pods without a controller are not counted");
        let selector = selector(pdb).ok().flatten().map(|s| s.to_string()).unwrap_or_default();
        let note = format!(
            "Pods selected by this PodDisruptionBudget (selector: {selector}) were found to be unmanaged. As a result, \
             the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account \
             for these pods please set \".spec.minAvailable\" field of the PDB to an integer value."
        );
        events.publish(EventType::Warning, "UnmanagedPods", note).await;
    }
    Ok(scales.values().fold(0i32, |sum, s| sum.saturating_add(*s)))
}

/// The controller a pod's controllerRef points at, as (uid, scale): a ReplicaSet owned by a
/// Deployment resolves to the Deployment. `None` if it is gone or is another object now.
async fn controller_scale(
    client: &Client,
    namespace: &str,
    owner: &OwnerReference,
) -> Result<Option<(String, i32)>, Error> {
    let fail = |kind: &str, name: &str| {
        let (kind, name) = (kind.to_string(), name.to_string());
        move |source| Error::Scale { kind, name, source }
    };
    if owner.kind == "ReplicaSet" && owner.api_version == "apps/v1" {
        let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
        let Some(rs) = sets.get_opt(&owner.name).await.map_err(fail(&owner.kind, &owner.name))? else {
            return Ok(None);
        };
        if rs.uid().as_deref() != Some(owner.uid.as_str()) {
            return Ok(None);
        }
        if let Some(deployment) =
            rs.owner_references().iter().find(|o| o.controller == Some(true) && o.kind == "Deployment")
        {
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            let Some(d) = deployments.get_opt(&deployment.name).await.map_err(fail("Deployment", &deployment.name))?
            else {
                return Ok(None);
            };
            if d.uid().as_deref() != Some(deployment.uid.as_str()) {
                return Ok(None);
            }
            return Ok(Some((deployment.uid.clone(), d.spec.and_then(|s| s.replicas).unwrap_or(1))));
        }
        return Ok(Some((owner.uid.clone(), rs.spec.and_then(|s| s.replicas).unwrap_or(1))));
    }
    let Some(resource) = scalable(client, owner).await else { return Ok(None) };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    match api.get_scale(&owner.name).await {
        Ok(scale) if scale.metadata.uid.as_deref().is_none_or(|uid| uid == owner.uid) => {
            Ok(Some((owner.uid.clone(), scale.spec.and_then(|s| s.replicas).unwrap_or(0))))
        }
        Ok(_) => Ok(None),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(source) => Err(fail(&owner.kind, &owner.name)(source)),
    }
}

/// The resource of the owner's kind, if the API serves it (with, one hopes, a scale subresource).
async fn scalable(client: &Client, owner: &OwnerReference) -> Option<ApiResource> {
    let (group, version) = match owner.api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", owner.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &owner.kind);
    let known = match (group, owner.kind.as_str()) {
        ("apps", "Deployment") => Some("deployments"),
        ("apps", "StatefulSet") => Some("statefulsets"),
        ("", "ReplicationController") => Some("replicationcontrollers"),
        _ => None,
    };
    if let Some(plural) = known {
        return Some(ApiResource::from_gvk_with_plural(&gvk, plural));
    }
    match kube::discovery::pinned_kind(client, &gvk).await {
        Ok((resource, _)) => Some(resource),
        Err(error) => {
            tracing::debug!(%error, kind = %owner.kind, "no such kind");
            None
        }
    }
}

/// The status for the computed figures.
fn computed_status(
    pdb: &PodDisruptionBudget,
    expected: i32,
    desired_healthy: i32,
    current_healthy: i32,
    disrupted: BTreeMap<String, Time>,
    now: jiff::Timestamp,
) -> PodDisruptionBudgetStatus {
    let allowed = if expected <= 0 { 0 } else { (current_healthy - desired_healthy).max(0) };
    let generation = pdb.metadata.generation;
    let (status, reason) = if allowed > 0 { ("True", "SufficientPods") } else { ("False", "InsufficientPods") };
    let old = pdb.status.clone().unwrap_or_default();
    PodDisruptionBudgetStatus {
        current_healthy,
        desired_healthy,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: generation,
        conditions: Some(set_condition(old.conditions.unwrap_or_default(), status, reason, "", generation, now)),
    }
}

/// The status of a budget whose figures could not be computed: no disruption allowed.
fn fail_safe_status(pdb: &PodDisruptionBudget, error: &Error, now: jiff::Timestamp) -> PodDisruptionBudgetStatus {
    let old = pdb.status.clone().unwrap_or_default();
    let generation = old.observed_generation;
    PodDisruptionBudgetStatus {
        disruptions_allowed: 0,
        conditions: Some(set_condition(
            old.conditions.clone().unwrap_or_default(),
            "False",
            "SyncFailed",
            &error.to_string(),
            generation,
            now,
        )),
        ..old
    }
}

/// Sets the `DisruptionAllowed` condition as `meta.SetStatusCondition` does: the transition time
/// moves only when the status changes.
fn set_condition(
    mut conditions: Vec<Condition>,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> Vec<Condition> {
    let fresh = |transition: Time| Condition {
        type_: DISRUPTION_ALLOWED.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: transition,
    };
    match conditions.iter_mut().find(|c| c.type_ == DISRUPTION_ALLOWED) {
        Some(c) if c.status == status => *c = fresh(c.last_transition_time.clone()),
        Some(c) => *c = fresh(Time(now)),
        None => conditions.push(fresh(Time(now))),
    }
    conditions
}

async fn write_status(
    client: &Client,
    pdb: &PodDisruptionBudget,
    status: PodDisruptionBudgetStatus,
) -> Result<(), Error> {
    if pdb.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let name = pdb.name_any();
    tracing::info!(pdb = %name_of(pdb), expected = status.expected_pods, healthy = status.current_healthy,
        desired = status.desired_healthy, allowed = status.disruptions_allowed, "updating budget status");
    let mut updated = pdb.clone();
    updated.status = Some(status);
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &pdb.namespace().unwrap_or_default());
    match api.replace_status(&name, &PostParams::default(), &updated).await {
        Ok(_) => Ok(()),
        // A newer budget (or the eviction subresource) got there first; its change requeues us.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(source) => Err(Error::Status { pdb: name_of(pdb), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pdb(v: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3, "minAvailable").unwrap(), 2);
        assert_eq!(scaled(&IntOrString::String("34%".into()), 3, "maxUnavailable").unwrap(), 2);
        assert_eq!(scaled(&IntOrString::String("100%".into()), 7, "minAvailable").unwrap(), 7);
        assert_eq!(scaled(&IntOrString::String("0%".into()), 7, "minAvailable").unwrap(), 0);
        assert_eq!(scaled(&IntOrString::Int(4), 7, "minAvailable").unwrap(), 4);
        assert!(scaled(&IntOrString::String("half".into()), 7, "minAvailable").is_err());
    }

    #[test]
    fn disruptions_allowed_never_go_negative_and_need_expected_pods() {
        let now = "2026-01-01T00:00:00Z".parse().unwrap();
        let budget = pdb(json!({"metadata": {"name": "b", "namespace": "n", "generation": 3}, "spec": {}}));
        let status = computed_status(&budget, 3, 2, 3, BTreeMap::new(), now);
        assert_eq!(status.disruptions_allowed, 1);
        assert_eq!(status.observed_generation, Some(3));
        let condition = &status.conditions.as_ref().unwrap()[0];
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("True", "SufficientPods"));
        let short = computed_status(&budget, 3, 3, 1, BTreeMap::new(), now);
        assert_eq!(short.disruptions_allowed, 0);
        assert_eq!(short.conditions.unwrap()[0].reason, "InsufficientPods");
        assert_eq!(computed_status(&budget, 0, 0, 2, BTreeMap::new(), now).disruptions_allowed, 0);
    }

    #[test]
    fn disrupted_pods_count_as_unhealthy_until_they_time_out() {
        let now: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let budget = pdb(json!({"metadata": {"name": "b", "namespace": "n"}, "spec": {},
            "status": {"disruptedPods": {"recent": "2026-01-01T00:09:00Z", "stale": "2026-01-01T00:00:00Z",
                "gone": "2026-01-01T00:09:30Z"}}}));
        let ready = |name: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
            .unwrap()
        };
        let pods = [ready("recent"), ready("stale"), ready("other")];
        let (kept, recheck) = disrupted_pods(&budget, &pods, now);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["recent"]);
        assert_eq!(recheck, Some("2026-01-01T00:11:00Z".parse().unwrap()));
        assert_eq!(expired_disruptions(&budget, &pods, now), ["stale"]);
        assert_eq!(current_healthy(&pods, &kept, now), 2);
    }

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let first = set_condition(Vec::new(), "False", "InsufficientPods", "", Some(1), t0);
        let same = set_condition(first.clone(), "False", "InsufficientPods", "", Some(2), t1);
        assert_eq!(same[0].last_transition_time, Time(t0));
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = set_condition(same, "True", "SufficientPods", "", Some(2), t1);
        assert_eq!(flipped[0].last_transition_time, Time(t1));
    }
}
