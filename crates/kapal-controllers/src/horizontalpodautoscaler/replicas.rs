//! Upstream's replica calculator for Resource metrics (`GetResourceReplicas` and
//! `GetRawResourceReplicas`): the desired replica count is `ceil(current × usage / target)`,
//! computed over ready pods, kept as is within the tolerance, and made conservative when pods
//! are unready or have no metrics (they count as 0 % on a scale-up and 100 % on a scale-down,
//! and a change of direction caused by that cancels the scaling).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use kapal_api::quota::Amount;

use super::settings::Settings;

/// One pod's usage of a resource, as the metrics API reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodMetric {
    /// In thousandths of the resource's unit (millicores, millibytes).
    pub value: i64,
    /// When the sample was taken.
    pub timestamp: Timestamp,
    /// Over how long it was averaged.
    pub window: Duration,
}

/// Metrics by pod name.
pub type PodMetrics = BTreeMap<String, PodMetric>;

/// What a Resource metric aims for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `averageUtilization`: percent of the pods' requests.
    Utilization(i32),
    /// `averageValue`, in thousandths.
    AverageValue(i64),
}

/// What is measured: a resource of the whole pod, or of one of its containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    /// `cpu`, `memory`, …
    pub resource: &'a str,
    /// For ContainerResource metrics, the container.
    pub container: Option<&'a str>,
}

/// The calculator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The replica count this metric asks for.
    pub replicas: i32,
    /// The current utilization in percent of requests, for Utilization targets.
    pub utilization: Option<i32>,
    /// The pods' average usage, in thousandths.
    pub average: i64,
}

/// How the pods of the target split up for the calculation (upstream `groupPods`).
struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

fn time(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Timestamp {
    t.0
}

fn group_pods(pods: &[Pod], metrics: &PodMetrics, resource: &str, settings: &Settings, now: Timestamp) -> Groups {
    let mut groups = Groups { ready: 0, unready: BTreeSet::new(), missing: BTreeSet::new(), ignored: BTreeSet::new() };
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        if pod.metadata.deletion_timestamp.is_some() || phase == "Failed" {
            groups.ignored.insert(name);
            continue;
        }
        if phase == "Pending" {
            groups.unready.insert(name);
            continue;
        }
        let Some(metric) = metrics.get(&name) else {
            groups.missing.insert(name);
            continue;
        };
        if resource == "cpu" && cpu_unready(pod, metric, settings, now) {
            groups.unready.insert(name);
            continue;
        }
        groups.ready += 1;
    }
    groups
}

/// Whether a pod's cpu sample must be ignored: it is not ready, or it is still starting up and
/// the sample may include start-up work.
fn cpu_unready(pod: &Pod, metric: &PodMetric, settings: &Settings, now: Timestamp) -> bool {
    let status = pod.status.as_ref();
    let ready = status.and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    let (Some(ready), Some(start)) = (ready, status.and_then(|s| s.start_time.as_ref()).map(time)) else {
        return true;
    };
    let transition = ready.last_transition_time.as_ref().map(time).unwrap_or(start);
    let span = |d: Duration| SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    if start + span(settings.cpu_initialization_period) > now {
        ready.status == "False" || metric.timestamp < transition + span(metric.window)
    } else {
        ready.status == "False" && start + span(settings.initial_readiness_delay) > transition
    }
}

/// Each pod's request of the resource (of one container, or of all), in thousandths (upstream `calculatePodRequests`); an error
/// names the container without one.
fn pod_requests(pods: &[Pod], source: Source<'_>) -> Result<BTreeMap<String, i64>, String> {
    let resource = source.resource;
    let mut requests = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut sum = 0i64;
        let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
        for c in containers.filter(|c| source.container.is_none_or(|name| name == c.name)) {
            let request = c.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get(resource));
            let Some(request) = request else {
                return Err(format!("missing request for {resource} in container {} of Pod {name}", c.name));
            };
            let milli = Amount::parse(&request.0).map_err(|e| e.to_string())?.milli_value();
            sum = sum.saturating_add(milli);
        }
        requests.insert(name, sum);
    }
    Ok(requests)
}

/// Upstream `GetResourceUtilizationRatio`: (usage ratio, utilization %, average usage).
fn utilization_ratio(
    metrics: &PodMetrics,
    requests: &BTreeMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), String> {
    let (mut total, mut requested, mut entries) = (0i64, 0i64, 0i64);
    for (name, metric) in metrics {
        let Some(request) = requests.get(name) else { continue };
        total = total.saturating_add(metric.value);
        requested = requested.saturating_add(*request);
        entries += 1;
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = i32::try_from(total.saturating_mul(100) / requested).unwrap_or(i32::MAX);
    Ok((f64::from(utilization) / f64::from(target), utilization, total / entries))
}

/// Upstream `GetMetricUsageRatio`: (usage ratio, average usage).
fn usage_ratio(metrics: &PodMetrics, target: i64) -> (f64, i64) {
    let total: i64 = metrics.values().map(|m| m.value).sum();
    let average = total / i64::try_from(metrics.len().max(1)).unwrap_or(1);
    (average as f64 / target as f64, average)
}

/// The replica count a Resource metric asks for, given the target's current `replicas`, its
/// pods and their metrics.
pub fn resource_replicas(
    replicas: i32,
    target: Target,
    source: Source<'_>,
    pods: &[Pod],
    mut metrics: PodMetrics,
    settings: &Settings,
    now: Timestamp,
) -> Result<Proposal, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let groups = group_pods(pods, &metrics, source.resource, settings, now);
    metrics.retain(|name, _| !groups.ignored.contains(name) && !groups.unready.contains(name));
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let requests = match target {
        Target::Utilization(_) => pod_requests(pods, source)?,
        Target::AverageValue(_) => BTreeMap::new(),
    };
    let ratio = |metrics: &PodMetrics| -> Result<(f64, Option<i32>, i64), String> {
        match target {
            Target::Utilization(t) => utilization_ratio(metrics, &requests, t).map(|(r, u, a)| (r, Some(u), a)),
            Target::AverageValue(t) => {
                let (r, a) = usage_ratio(metrics, t);
                Ok((r, None, a))
            }
        }
    };
    let (usage, utilization, average) = ratio(&metrics)?;
    let keep = Proposal { replicas, utilization, average };
    let scale_up_with_unready = !groups.unready.is_empty() && usage > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if (1.0 - usage).abs() <= settings.tolerance {
            return Ok(keep);
        }
        return Ok(Proposal { replicas: ceil(usage * groups.ready as f64), ..keep });
    }
    if usage < 1.0 {
        // On a scale-down, pods without metrics count as using what they request (or the target,
        // when it is above 100 %).
        for name in &groups.missing {
            let value = match target {
                Target::Utilization(t) => {
                    requests.get(name).copied().unwrap_or(0).saturating_mul(i64::from(t.max(100))) / 100
                }
                Target::AverageValue(t) => t,
            };
            metrics.insert(name.clone(), PodMetric { value, timestamp: now, window: Duration::ZERO });
        }
    } else if usage > 1.0 {
        for name in &groups.missing {
            metrics.insert(name.clone(), PodMetric { value: 0, timestamp: now, window: Duration::ZERO });
        }
    }
    if scale_up_with_unready {
        for name in &groups.unready {
            metrics.insert(name.clone(), PodMetric { value: 0, timestamp: now, window: Duration::ZERO });
        }
    }
    let (new_usage, _, _) = ratio(&metrics)?;
    let flipped = (usage < 1.0 && new_usage > 1.0) || (usage > 1.0 && new_usage < 1.0);
    if (1.0 - new_usage).abs() <= settings.tolerance || flipped {
        return Ok(keep);
    }
    let proposed = ceil(new_usage * metrics.len() as f64);
    if (new_usage < 1.0 && proposed > replicas) || (new_usage > 1.0 && proposed < replicas) {
        return Ok(keep);
    }
    Ok(Proposal { replicas: proposed, ..keep })
}

fn ceil(x: f64) -> i32 {
    let c = x.ceil();
    if c >= f64::from(i32::MAX) { i32::MAX } else { c as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> Settings {
        Settings::default()
    }

    fn now() -> Timestamp {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    /// A pod requesting `request` cpu, Running and Ready for an hour.
    fn pod(name: &str, request: &str) -> Pod {
        let started = "2026-01-01T11:00:00Z";
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": request, "memory": "100Mi"}}}]},
            "status": {"phase": "Running", "startTime": started,
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}]}}))
        .unwrap()
    }

    fn metrics(values: &[(&str, i64)]) -> PodMetrics {
        values
            .iter()
            .map(|(n, v)| {
                let m = PodMetric { value: *v, timestamp: now(), window: Duration::from_secs(30) };
                (n.to_string(), m)
            })
            .collect()
    }

    fn run(replicas: i32, target: Target, pods: &[Pod], m: PodMetrics) -> Result<Proposal, String> {
        resource_replicas(replicas, target, Source { resource: "cpu", container: None }, pods, m, &settings(), now())
    }

    #[test]
    fn utilization_scales_by_the_ratio_rounding_up() {
        let pods = [pod("a", "100m"), pod("b", "100m"), pod("c", "100m")];
        // 90 % against 50 %: ceil(3 × 1.8) = 6.
        let p = run(3, Target::Utilization(50), &pods, metrics(&[("a", 90), ("b", 90), ("c", 90)])).unwrap();
        assert_eq!(p, Proposal { replicas: 6, utilization: Some(90), average: 90 });
        // 20 % against 50 %: ceil(3 × 0.4) = 2.
        let p = run(3, Target::Utilization(50), &pods, metrics(&[("a", 20), ("b", 20), ("c", 20)])).unwrap();
        assert_eq!(p.replicas, 2);
    }

    #[test]
    fn changes_within_the_tolerance_keep_the_replica_count() {
        let pods = [pod("a", "100m"), pod("b", "100m")];
        // 54 % against 50 % is a ratio of 1.08: within 10 %.
        let p = run(2, Target::Utilization(50), &pods, metrics(&[("a", 54), ("b", 54)])).unwrap();
        assert_eq!(p.replicas, 2);
        let p = run(2, Target::Utilization(50), &pods, metrics(&[("a", 56), ("b", 56)])).unwrap();
        assert_eq!(p.replicas, 3);
    }

    #[test]
    fn pods_without_metrics_count_against_the_direction_of_scaling() {
        let pods = [pod("a", "100m"), pod("b", "100m"), pod("c", "100m")];
        // Scale-up: the missing pod counts as 0 %: (100 + 100 + 0) / 3 = 66 % against 50 % → 4.
        let p = run(3, Target::Utilization(50), &pods, metrics(&[("a", 100), ("b", 100)])).unwrap();
        assert_eq!(p.replicas, 4);
        // Scale-down: the missing pod counts as 100 %, which flips the direction: no change.
        let p = run(3, Target::Utilization(50), &pods, metrics(&[("a", 10), ("b", 10)])).unwrap();
        assert_eq!(p.replicas, 3);
    }

    #[test]
    fn unready_pods_count_as_idle_on_scale_up_and_are_ignored_otherwise() {
        let mut starting = pod("c", "100m");
        starting.status.as_mut().unwrap().phase = Some("Pending".into());
        let pods = [pod("a", "100m"), pod("b", "100m"), starting];
        let p = run(3, Target::Utilization(50), &pods, metrics(&[("a", 100), ("b", 100)])).unwrap();
        assert_eq!(p.replicas, 4);
        let p = run(3, Target::Utilization(50), &pods, metrics(&[("a", 10), ("b", 10)])).unwrap();
        assert_eq!(p.replicas, 1);
    }

    #[test]
    fn container_metrics_compare_against_that_containers_request() {
        let mut pod = pod("a", "100m");
        let mut sidecar = pod.spec.as_ref().unwrap().containers[0].clone();
        sidecar.name = "sidecar".into();
        sidecar.resources = None;
        pod.spec.as_mut().unwrap().containers.push(sidecar);
        let app = Source { resource: "cpu", container: Some("c") };
        let p = resource_replicas(
            1,
            Target::Utilization(50),
            app,
            &[pod.clone()],
            metrics(&[("a", 100)]),
            &settings(),
            now(),
        );
        assert_eq!(p.unwrap(), Proposal { replicas: 2, utilization: Some(100), average: 100 });
        let whole = Source { resource: "cpu", container: None };
        let e =
            resource_replicas(1, Target::Utilization(50), whole, &[pod], metrics(&[("a", 100)]), &settings(), now());
        assert_eq!(e.unwrap_err(), "missing request for cpu in container sidecar of Pod a");
    }

    #[test]
    fn average_value_targets_compare_raw_usage() {
        let pods = [pod("a", "100m"), pod("b", "100m")];
        // 300m average against 100m: ceil(2 × 3) = 6.
        let p = run(2, Target::AverageValue(100), &pods, metrics(&[("a", 300), ("b", 300)])).unwrap();
        assert_eq!(p, Proposal { replicas: 6, utilization: None, average: 300 });
    }

    #[test]
    fn missing_requests_and_missing_pods_are_errors() {
        let mut bare = pod("a", "100m");
        bare.spec.as_mut().unwrap().containers[0].resources = None;
        let e = run(1, Target::Utilization(50), &[bare], metrics(&[("a", 10)])).unwrap_err();
        assert_eq!(e, "missing request for cpu in container c of Pod a");
        let e = run(1, Target::Utilization(50), &[], metrics(&[])).unwrap_err();
        assert_eq!(e, "no pods returned by selector while calculating replica count");
        let mut pending = pod("a", "1");
        pending.status.as_mut().unwrap().phase = Some("Pending".into());
        let e = run(1, Target::Utilization(50), &[pending], metrics(&[("a", 1)])).unwrap_err();
        assert_eq!(e, "did not receive metrics for targeted pods (pods might be unready)");
        let e = run(1, Target::Utilization(50), &[pod("a", "1")], metrics(&[("a", 500), ("zz", 9000)]));
        // Metrics of pods the selector does not return are ignored: 50 % against 50 %.
        assert_eq!(e.unwrap(), Proposal { replicas: 1, utilization: Some(50), average: 500 });
    }
}
