//! The HorizontalPodAutoscaler controller (autoscaling/v2): every sync period it reads the
//! target's `scale` subresource, asks the metrics source for the pods' usage, computes the
//! replica count with upstream's algorithm ([`replicas`]), stabilises and rate-limits it
//! ([`normalize`]), scales through the `scale` subresource, and reports status, conditions and
//! events as upstream does — including, while no metrics API is served, a truthful
//! `ScalingActive=False FailedGetResourceMetric`.

pub mod metrics;
pub mod normalize;
pub mod replicas;
pub mod settings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricStatus, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kapal_api::quota::Amount;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use metrics::{MetricsApi, MetricsSource};
use normalize::{Behavior, History};
use replicas::Target;
pub use settings::Settings;

/// The name events carry as their reporting controller.
pub const REPORTER: &str = "horizontal-pod-autoscaler";

/// What can go wrong syncing one HPA (failures to scale are reported in its status instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading horizontalpodautoscaler {0}: {1}")]
    Get(String, #[source] kube::Error),
    #[error("updating status of horizontalpodautoscaler {0}: {1}")]
    Status(String, #[source] kube::Error),
}

struct Ctx {
    client: Client,
    metrics: Arc<dyn MetricsSource>,
    settings: Settings,
    histories: Mutex<HashMap<String, History>>,
    /// When each HPA was last evaluated, and at which generation.
    evaluated: Mutex<HashMap<String, (std::time::Instant, Option<i64>)>>,
    /// The HPAs that exist, to drop the memory of deleted ones (which are never reconciled).
    known: Store<HorizontalPodAutoscaler>,
}

impl Ctx {
    /// How long to wait before evaluating `key` again: nothing when its spec changed or a sync
    /// period has passed. Status writes (ours included) wake the controller, but evaluating more
    /// often than the sync period would double events and defeat the policies' periods, so, as
    /// upstream's rate-limited queue does, such wake-ups are deferred.
    fn defer(&self, key: &str, generation: Option<i64>) -> Option<std::time::Duration> {
        let mut evaluated = self.evaluated.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if let Some((at, seen)) = evaluated.get(key)
            && *seen == generation
        {
            let due = *at + self.settings.sync_period;
            if due > now {
                return Some(due - now);
            }
        }
        evaluated.insert(key.to_string(), (now, generation));
        None
    }

    fn forget(&self, key: &str) {
        self.histories.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        self.evaluated.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// Drops the memory of HPAs that no longer exist, once there is more memory than HPAs.
    fn prune(&self) {
        let live = self.known.state();
        let mut histories = self.histories.lock().unwrap_or_else(|e| e.into_inner());
        if histories.len() <= live.len() {
            return;
        }
        let keys: std::collections::HashSet<String> = live.iter().map(|h| key(h)).collect();
        histories.retain(|k, _| keys.contains(k));
        self.evaluated.lock().unwrap_or_else(|e| e.into_inner()).retain(|k, _| keys.contains(k));
    }

    fn history<T>(&self, key: &str, f: impl FnOnce(&mut History) -> T) -> T {
        let mut all = self.histories.lock().unwrap_or_else(|e| e.into_inner());
        f(all.entry(key.to_string()).or_default())
    }
}

/// Runs the controller against the cluster's resource metrics API.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let metrics = Arc::new(MetricsApi::new(client.clone()));
    run_with(client, metrics, Settings::default()).await
}

/// Runs the controller with the given metrics source and tuning.
pub async fn run_with(client: Client, metrics: Arc<dyn MetricsSource>, settings: Settings) -> anyhow::Result<()> {
    let hpas: Api<HorizontalPodAutoscaler> = Api::all(client.clone());
    let controller = Controller::new(hpas, watcher::Config::default());
    let ctx = Arc::new(Ctx {
        client,
        metrics,
        settings,
        histories: Mutex::new(HashMap::new()),
        evaluated: Mutex::new(HashMap::new()),
        known: controller.store(),
    });
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "horizontalpodautoscaler reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(hpa: Arc<HorizontalPodAutoscaler>, error: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!(horizontalpodautoscaler = %key(&hpa), %error, "horizontalpodautoscaler sync failed");
    Action::requeue(ctx.settings.sync_period)
}

fn key(hpa: &HorizontalPodAutoscaler) -> String {
    format!("{}/{}", hpa.namespace().unwrap_or_default(), hpa.name_any())
}

/// One evaluation's working state: the conditions as they are being set, and events to send.
struct Sync<'a> {
    ctx: &'a Ctx,
    hpa: &'a HorizontalPodAutoscaler,
    conditions: Vec<HorizontalPodAutoscalerCondition>,
    now: Timestamp,
}

impl Sync<'_> {
    /// Sets a condition, keeping its transition time unless its status changes.
    fn condition(&mut self, kind: &str, status: bool, reason: &str, message: String) {
        let status = if status { "True" } else { "False" }.to_string();
        let now = Some(Time(self.now));
        match self.conditions.iter_mut().find(|c| c.type_ == kind) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status;
                c.reason = Some(reason.into());
                c.message = Some(message);
            }
            None => self.conditions.push(HorizontalPodAutoscalerCondition {
                type_: kind.into(),
                status,
                reason: Some(reason.into()),
                message: Some(message),
                last_transition_time: now,
            }),
        }
    }

    async fn event(&self, type_: EventType, reason: &str, note: String) {
        let recorder = Recorder::new(self.ctx.client.clone(), Reporter { controller: REPORTER.into(), instance: None });
        let event = Event { type_, reason: reason.into(), note: Some(note), action: reason.into(), secondary: None };
        if let Err(error) = recorder.publish(&event, &self.hpa.object_ref(&())).await {
            tracing::debug!(%error, reason, "publishing event failed");
        }
    }
}

#[tracing::instrument(skip_all, fields(horizontalpodautoscaler = %key(&cached)))]
async fn reconcile(cached: Arc<HorizontalPodAutoscaler>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let namespace = cached.namespace().unwrap_or_default();
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &namespace);
    let hpa_key = key(&cached);
    let hpa = match api.get_opt(&cached.name_any()).await.map_err(|e| Error::Get(hpa_key.clone(), e))? {
        Some(h) if h.uid() == cached.uid() && h.metadata.deletion_timestamp.is_none() => h,
        _ => {
            ctx.forget(&hpa_key);
            return Ok(Action::await_change());
        }
    };
    ctx.prune();
    if let Some(wait) = ctx.defer(&hpa_key, hpa.metadata.generation) {
        return Ok(Action::requeue(wait));
    }
    let old_status = hpa.status.clone().unwrap_or_default();
    let mut sync = Sync {
        ctx: &ctx,
        hpa: &hpa,
        conditions: old_status.conditions.clone().unwrap_or_default(),
        now: Timestamp::now(),
    };
    let status = evaluate(&mut sync, &hpa_key, &old_status).await;
    let status = HorizontalPodAutoscalerStatus { conditions: Some(sync.conditions), ..status };
    if status != old_status {
        let mut body = serde_json::to_value(&status).unwrap_or_default();
        for field in ["currentMetrics", "lastScaleTime"] {
            if body.get(field).is_none() {
                body[field] = serde_json::Value::Null;
            }
        }
        api.patch_status(&hpa.name_any(), &PatchParams::default(), &Patch::Merge(&json!({ "status": body })))
            .await
            .map_err(|e| Error::Status(hpa_key, e))?;
    }
    Ok(Action::requeue(ctx.settings.sync_period))
}

/// One evaluation of the HPA (upstream `reconcileAutoscaler`); returns the new status without
/// conditions (those are in `sync`).
async fn evaluate(
    sync: &mut Sync<'_>,
    hpa_key: &str,
    old: &HorizontalPodAutoscalerStatus,
) -> HorizontalPodAutoscalerStatus {
    let hpa = sync.hpa;
    let spec = hpa.spec.clone().unwrap_or_default();
    let namespace = hpa.namespace().unwrap_or_default();
    let target = &spec.scale_target_ref;
    let reference = format!("{}/{}/{}", target.kind, namespace, target.name);
    let keep = |current: i32, metrics: Option<Vec<MetricStatus>>| HorizontalPodAutoscalerStatus {
        current_replicas: Some(current),
        desired_replicas: old.desired_replicas,
        current_metrics: metrics,
        last_scale_time: old.last_scale_time.clone(),
        observed_generation: hpa.metadata.generation,
        conditions: None,
    };
    let (scales, scale) = match get_scale(&sync.ctx.client, &namespace, target).await {
        Ok(found) => found,
        Err(error) => {
            sync.event(EventType::Warning, "FailedGetScale", error.clone()).await;
            sync.condition(
                "AbleToScale",
                false,
                "FailedGetScale",
                format!("the HPA controller was unable to get the target's current scale: {error}"),
            );
            tracing::info!(target = %reference, %error, "failed to query scale subresource");
            return keep(old.current_replicas.unwrap_or(0), old.current_metrics.clone());
        }
    };
    sync.condition(
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale".into(),
    );
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    sync.ctx.history(hpa_key, |h| h.record_initial(current, sync.now));
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let mut statuses = None;
    let (desired, reason) = if current == 0 && min != 0 {
        sync.condition(
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
        );
        (current, String::new())
    } else if current > max {
        (max, "Current number of replicas above Spec.MaxReplicas".to_string())
    } else if current < min {
        (min, "Current number of replicas below Spec.MinReplicas".to_string())
    } else {
        let metric_specs = spec.metrics.clone().filter(|m| !m.is_empty()).unwrap_or_else(default_metrics);
        let (proposal, found) = compute_replicas(sync, &scale, current, &metric_specs).await;
        statuses = Some(found);
        let Some((proposed, metric_name)) = proposal else {
            return keep(current, statuses);
        };
        let reason = if proposed > current {
            format!("{metric_name} above target")
        } else if proposed < current {
            "All metrics below target".to_string()
        } else {
            String::new()
        };
        let behavior =
            spec.behavior.as_ref().map(|b| Behavior::from_spec(b, sync.ctx.settings.downscale_stabilization));
        let window = sync.ctx.settings.downscale_stabilization;
        let now = sync.now;
        let normalized =
            sync.ctx.history(hpa_key, |h| h.normalize(behavior.as_ref(), current, proposed, min, max, window, now));
        let able = normalized.able_to_scale;
        sync.condition("AbleToScale", able.status, able.reason, able.message.into());
        let limited = normalized.scaling_limited;
        sync.condition("ScalingLimited", limited.status, limited.reason, limited.message.into());
        (normalized.replicas, reason)
    };
    let mut status = keep(current, statuses);
    status.desired_replicas = current;
    if desired == current {
        return status;
    }
    match set_scale(&scales, &target.name, scale, desired).await {
        Ok(()) => {
            sync.condition(
                "AbleToScale",
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {desired}"),
            );
            sync.event(EventType::Normal, "SuccessfulRescale", format!("New size: {desired}; reason: {reason}")).await;
            let behavior =
                spec.behavior.as_ref().map(|b| Behavior::from_spec(b, sync.ctx.settings.downscale_stabilization));
            let now = sync.now;
            sync.ctx.history(hpa_key, |h| h.record_scale(behavior.as_ref(), current, desired, now));
            tracing::info!(target = %reference, from = current, to = desired, %reason, "rescaled");
            status.desired_replicas = desired;
            status.last_scale_time = Some(Time(sync.now));
        }
        Err(error) => {
            sync.event(
                EventType::Warning,
                "FailedRescale",
                format!("New size: {desired}; reason: {reason}; error: {error}"),
            )
            .await;
            sync.condition(
                "AbleToScale",
                false,
                "FailedUpdateScale",
                format!("the HPA controller was unable to update the target scale: {error}"),
            );
            status.desired_replicas = old.desired_replicas;
        }
    }
    status
}

/// The metric an HPA without metrics uses: 80 % cpu utilization.
fn default_metrics() -> Vec<MetricSpec> {
    serde_json::from_value(json!([{"type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]))
    .unwrap_or_default()
}

/// Upstream `computeReplicasForMetrics`: the highest proposal over the metrics and its metric's
/// name, or `None` when no replica count can be trusted (all metrics failed, or some failed and
/// the others would scale down); and the status of each metric.
async fn compute_replicas(
    sync: &mut Sync<'_>,
    scale: &Scale,
    current: i32,
    specs: &[MetricSpec],
) -> (Option<(i32, String)>, Vec<MetricStatus>) {
    let selector = scale.status.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
    if selector.is_empty() {
        sync.event(EventType::Warning, "SelectorRequired", "selector is required".into()).await;
        sync.condition(
            "ScalingActive",
            false,
            "InvalidSelector",
            "the HPA target's scale is missing a selector".into(),
        );
        return (None, Vec::new());
    }
    if let Err(e) = kapal_api::selector::LabelSelector::parse(&selector) {
        let message = format!("couldn't convert selector into a corresponding internal selector object: {e}");
        sync.event(EventType::Warning, "InvalidSelector", message.clone()).await;
        sync.condition("ScalingActive", false, "InvalidSelector", message);
        return (None, Vec::new());
    }
    let mut statuses = Vec::with_capacity(specs.len());
    let mut best: Option<(i32, String)> = None;
    let mut failures: Vec<(&'static str, String)> = Vec::new();
    for spec in specs {
        match resource_proposal(sync.ctx, &sync.hpa.namespace().unwrap_or_default(), &selector, current, spec, sync.now)
            .await
        {
            Ok((replicas, name, status)) => {
                statuses.push(status);
                if best.as_ref().is_none_or(|(r, _)| replicas > *r) {
                    best = Some((replicas, name));
                }
            }
            Err((reason, error)) => {
                statuses.push(MetricStatus { type_: String::new(), ..Default::default() });
                failures.push((reason, error));
            }
        }
    }
    for (reason, error) in &failures {
        sync.event(EventType::Warning, reason, error.clone()).await;
    }
    if let Some((reason, error)) = failures.first() {
        let scales_down = best.as_ref().is_some_and(|(r, _)| *r < current);
        if failures.len() >= specs.len() || scales_down {
            // The first failing metric's condition stands for them all.
            let message = format!("the HPA was unable to compute the replica count: {error}");
            sync.condition("ScalingActive", false, reason, message);
            let message =
                format!("invalid metrics ({} invalid out of {}), first error is: {error}", failures.len(), specs.len());
            sync.event(EventType::Warning, "FailedComputeMetricsReplicas", message).await;
            return (None, statuses);
        }
    }
    let name = best.as_ref().map(|(_, n)| n.clone()).unwrap_or_default();
    sync.condition(
        "ScalingActive",
        true,
        "ValidMetricFound",
        format!("the HPA was able to successfully calculate a replica count from {name}"),
    );
    (best, statuses)
}

/// One Resource or ContainerResource metric's proposal: (replicas, metric name for messages, status); or the
/// condition reason and error.
async fn resource_proposal(
    ctx: &Ctx,
    namespace: &str,
    selector: &str,
    current: i32,
    spec: &MetricSpec,
    now: Timestamp,
) -> Result<(i32, String, MetricStatus), (&'static str, String)> {
    let (resource, container, target, reason) = match (spec.type_.as_str(), &spec.resource, &spec.container_resource) {
        ("Resource", Some(r), _) => (r.name.as_str(), None, &r.target, "FailedGetResourceMetric"),
        ("ContainerResource", _, Some(r)) => {
            (r.name.as_str(), Some(r.container.as_str()), &r.target, "FailedGetContainerResourceMetric")
        }
        (kind @ ("Resource" | "ContainerResource"), _, _) => {
            return Err((
                "InvalidMetricSourceType",
                format!("invalid metric source: {kind} metric without its {kind} source"),
            ));
        }
        (kind @ ("Pods" | "Object" | "External"), _, _) => {
            let reason = match kind {
                "Pods" => "FailedGetPodsMetric",
                "Object" => "FailedGetObjectMetric",
                _ => "FailedGetExternalMetric",
            };
            let what = kind.to_lowercase();
            return Err((
                reason,
                format!("unable to get {what} metric: Kapal serves no custom or external metrics API"),
            ));
        }
        (other, _, _) => return Err(("InvalidMetricSourceType", format!("unknown metric source type {other:?}"))),
    };
    let target = match (&target.average_value, target.average_utilization) {
        (Some(value), _) => match Amount::parse(&value.0) {
            Ok(v) => Target::AverageValue(v.milli_value()),
            Err(e) => return Err((reason, format!("failed to get {resource} usage: {e}"))),
        },
        (None, Some(utilization)) => Target::Utilization(utilization),
        (None, None) => {
            return Err((
                reason,
                "invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".into(),
            ));
        }
    };
    let what = match target {
        Target::Utilization(_) => "utilization",
        Target::AverageValue(_) => "usage",
    };
    let failed = |e: String| (reason, format!("failed to get {resource} {what}: {e}"));
    let samples = ctx
        .metrics
        .pod_metrics(namespace, selector)
        .await
        .map_err(|e| failed(format!("unable to get metrics for resource {resource}: {e}")))?;
    let metrics = metrics::resource_metrics(&samples, resource, container)
        .map_err(|e| failed(format!("unable to get metrics for resource {resource}: {e}")))?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| failed(format!("unable to get pods while calculating replica count: {e}")))?;
    let source = replicas::Source { resource, container };
    let proposal = replicas::resource_replicas(current, target, source, &pods.items, metrics, &ctx.settings, now)
        .map_err(failed)?;
    let kind = if container.is_some() { "container resource" } else { "resource" };
    let name = match target {
        Target::Utilization(_) => format!("{resource} {kind} utilization (percentage of request)"),
        // Upstream names average-value metrics the same for pods and containers.
        Target::AverageValue(_) => format!("{resource} resource"),
    };
    let current = MetricValueStatus {
        average_utilization: proposal.utilization,
        average_value: Some(Quantity(Amount::from_milli(proposal.average).to_string())),
        value: None,
    };
    let status = match container {
        None => MetricStatus {
            type_: "Resource".into(),
            resource: Some(ResourceMetricStatus { name: resource.into(), current }),
            ..Default::default()
        },
        Some(container) => MetricStatus {
            type_: "ContainerResource".into(),
            container_resource: Some(ContainerResourceMetricStatus {
                name: resource.into(),
                container: container.into(),
                current,
            }),
            ..Default::default()
        },
    };
    Ok((proposal.replicas, name, status))
}

/// The target's `scale` subresource, through discovery of its kind.
async fn get_scale(
    client: &Client,
    namespace: &str,
    target: &k8s_openapi::api::autoscaling::v2::CrossVersionObjectReference,
) -> Result<(Api<DynamicObject>, Scale), String> {
    let api_version = target.api_version.clone().unwrap_or_else(|| "v1".into());
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.clone()),
    };
    if version.is_empty() || api_version.matches('/').count() > 1 {
        return Err(format!("unexpected GroupVersion string: {api_version}"));
    }
    let gvk = GroupVersionKind { group, version, kind: target.kind.clone() };
    let (resource, _): (ApiResource, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("no matches for kind \"{}\" in group \"{}\": {e}", gvk.kind, gvk.group))?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let scale = api.get_scale(&target.name).await.map_err(|e| crate::podtemplate::api_message(&e))?;
    Ok((api, scale))
}

/// Writes `replicas` through the scale subresource, guarded by the scale's resourceVersion.
async fn set_scale(api: &Api<DynamicObject>, name: &str, mut scale: Scale, replicas: i32) -> Result<(), String> {
    scale.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
    api.replace_scale(name, &PostParams::default(), &scale)
        .await
        .map(|_| ())
        .map_err(|e| crate::podtemplate::api_message(&e))
}
