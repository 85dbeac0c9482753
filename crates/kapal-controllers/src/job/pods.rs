//! What the Job controller reads from and writes into its pods: the pods it makes, how it sees
//! them (active, finished, failed) and the back-off before replacing failed ones.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use kube::ResourceExt;

use super::indexes::INDEX_KEY;
use crate::podtemplate::{self, controller_ref, pod_from_template};

/// The finalizer that keeps a finished pod until the controller has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The label naming the Job's UID on its pods.
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// The label naming the Job on its pods.
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";

const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// How a finished pod counts for its Job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Counts towards completions.
    Succeeded,
    /// Counts towards the backoff limit.
    Failed,
}

/// A new pod for `job`, with the Job's labels, the tracking finalizer and, for Indexed Jobs, its
/// completion index as annotation, label, hostname and `JOB_COMPLETION_INDEX`.
pub fn new_pod(job: &Job, index: Option<i32>) -> Pod {
    let name = job.name_any();
    let uid = job.uid().unwrap_or_default();
    let template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let generate_name = match index {
        Some(i) => format!("{name}-{i}-"),
        None => format!("{name}-"),
    };
    let mut pod = pod_from_template(&template, &generate_name, controller_ref(job));
    let labels = pod.metadata.labels.get_or_insert_default();
    for (key, value) in [(CONTROLLER_UID, &uid), ("controller-uid", &uid), (JOB_NAME, &name), ("job-name", &name)] {
        labels.entry(key.to_string()).or_insert_with(|| value.clone());
    }
    pod.metadata.finalizers.get_or_insert_default().push(TRACKING_FINALIZER.to_string());
    if let Some(index) = index {
        labels.insert(INDEX_KEY.to_string(), index.to_string());
        pod.metadata.annotations.get_or_insert_default().insert(INDEX_KEY.to_string(), index.to_string());
        if let Some(spec) = pod.spec.as_mut() {
            spec.hostname = Some(format!("{name}-{index}"));
            let env = EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: format!("metadata.annotations['{INDEX_KEY}']"),
                        api_version: None,
                    }),
                    ..EnvVarSource::default()
                }),
                value: None,
            };
            for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
                c.env.get_or_insert_default().push(env.clone());
            }
        }
    }
    pod
}

/// Whether the pod still holds the tracking finalizer.
pub fn is_tracked(pod: &Pod) -> bool {
    pod.metadata.finalizers.iter().flatten().any(|f| f == TRACKING_FINALIZER)
}

/// Whether the pod is being deleted but has not finished.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some() && !matches!(podtemplate::phase(pod), "Succeeded" | "Failed")
}

/// How a pod counts once it is done, or `None` while it still runs. Without a podFailurePolicy
/// (and with the default replacement policy) a pod being deleted counts as failed at once, so
/// that a pod that never reaches a terminal phase is not lost (upstream `isPodFailed`).
pub fn outcome(pod: &Pod, job: &Job) -> Option<Outcome> {
    match podtemplate::phase(pod) {
        "Succeeded" => return Some(Outcome::Succeeded),
        "Failed" => return Some(Outcome::Failed),
        _ => {}
    }
    (pod.metadata.deletion_timestamp.is_some() && !replaces_only_failed(job)).then_some(Outcome::Failed)
}

/// Whether pods are replaced only once they have failed, not while they terminate
/// (`podReplacementPolicy: Failed`, the default with a podFailurePolicy).
pub fn replaces_only_failed(job: &Job) -> bool {
    job.spec
        .as_ref()
        .is_some_and(|s| s.pod_failure_policy.is_some() || s.pod_replacement_policy.as_deref() == Some("Failed"))
}

/// Container restarts of a running pod, which count as failures with `restartPolicy: OnFailure`.
pub fn restarts(pod: &Pod) -> i32 {
    let status = pod.status.as_ref();
    status.and_then(|s| s.container_statuses.as_ref()).into_iter().flatten().map(|c| c.restart_count).sum()
}

/// When a pod finished: the latest container termination, else its last condition change.
pub fn finish_time(pod: &Pod) -> Option<jiff::Timestamp> {
    let status = pod.status.as_ref()?;
    let terminated = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0))
        .max();
    let changed = status.conditions.iter().flatten().filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0)).max();
    terminated.or(changed).or(status.start_time.as_ref().map(|t| t.0))
}

/// The delay before replacing a pod after `failures` consecutive failures: 10 s doubled per
/// failure, capped at 6 minutes; zero without failures.
pub fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
    BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX)
}

/// How long to wait at `now` before creating replacement pods, given the Job's finished pods:
/// the failures since the last success set the back-off, counted from the latest failure.
pub fn backoff_remaining(finished: &[(Outcome, Option<jiff::Timestamp>)], now: jiff::Timestamp) -> Duration {
    let mut ordered: Vec<_> = finished.iter().filter_map(|(o, t)| Some((t.as_ref()?, *o))).collect();
    ordered.sort_by_key(|(t, _)| **t);
    let since_success: Vec<_> =
        ordered.iter().rev().take_while(|(_, o)| *o == Outcome::Failed).map(|(t, _)| **t).collect();
    let Some(last) = since_success.first() else { return Duration::ZERO };
    let delay = backoff(u32::try_from(since_success.len()).unwrap_or(u32::MAX));
    let elapsed = now.duration_since(*last).unsigned_abs();
    if now < *last { delay } else { delay.saturating_sub(elapsed) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_six_minutes() {
        let secs: Vec<u64> = (0..8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 320, 360]);
        assert_eq!(backoff(100).as_secs(), 360);
    }

    #[test]
    fn backoff_counts_failures_since_the_last_success_from_the_latest_failure() {
        let f = |t: &str| (Outcome::Failed, Some(at(t)));
        let s = |t: &str| (Outcome::Succeeded, Some(at(t)));
        let finished = [
            f("2026-01-01T00:00:00Z"),
            s("2026-01-01T00:00:05Z"),
            f("2026-01-01T00:00:10Z"),
            f("2026-01-01T00:00:20Z"),
        ];
        // Two failures since the success: 20 s from the last one.
        assert_eq!(backoff_remaining(&finished, at("2026-01-01T00:00:25Z")), Duration::from_secs(15));
        assert_eq!(backoff_remaining(&finished, at("2026-01-01T00:00:45Z")), Duration::ZERO);
        assert_eq!(backoff_remaining(&finished[..2], at("2026-01-01T00:00:06Z")), Duration::ZERO);
    }

    #[test]
    fn indexed_pods_carry_their_index_and_hostname() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "work", "namespace": "ns", "uid": "u1"},
            "spec": {"template": {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
        }))
        .unwrap();
        let pod = new_pod(&job, Some(3));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[INDEX_KEY], "3");
        assert_eq!(labels[CONTROLLER_UID], "u1");
        assert_eq!(labels["job-name"], "work");
        assert_eq!(labels["app"], "w");
        assert_eq!(pod.metadata.annotations.as_ref().unwrap()[INDEX_KEY], "3");
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("work-3-"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("work-3"));
        assert_eq!(spec.containers[0].env.as_ref().unwrap()[0].name, "JOB_COMPLETION_INDEX");
        assert!(is_tracked(&pod));
    }

    #[test]
    fn a_deleted_unfinished_pod_counts_as_failed() {
        let job: Job = serde_json::from_value(json!({"metadata": {"name": "j"}, "spec": {"template": {}}})).unwrap();
        let pod: Pod = serde_json::from_value(json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Running"}}))
        .unwrap();
        assert_eq!(outcome(&pod, &job), Some(Outcome::Failed));
        let running: Pod = serde_json::from_value(json!({"status": {"phase": "Running"}})).unwrap();
        assert_eq!(outcome(&running, &job), None);
    }
}
