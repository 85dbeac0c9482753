//! Job conditions and the arithmetic of `status`, kept apart from the API calls so that they can
//! be tested alone.

use std::collections::BTreeSet;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::indexes;

/// Why a Job is ending, as its conditions' reason and message say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Enough pods succeeded.
    Completed,
    /// More failures than `backoffLimit`.
    BackoffLimitExceeded,
    /// `activeDeadlineSeconds` passed.
    DeadlineExceeded,
    /// A FailJob rule of the podFailurePolicy matched; the message names the pod and rule.
    PodFailurePolicy,
}

impl Ending {
    /// The interim condition type (`SuccessCriteriaMet` or `FailureTarget`).
    pub fn interim(self) -> &'static str {
        if self == Ending::Completed { "SuccessCriteriaMet" } else { "FailureTarget" }
    }

    /// The terminal condition type (`Complete` or `Failed`).
    pub fn terminal(self) -> &'static str {
        if self == Ending::Completed { "Complete" } else { "Failed" }
    }

    /// The condition reason.
    pub fn reason(self) -> &'static str {
        match self {
            Ending::Completed => "CompletionsReached",
            Ending::BackoffLimitExceeded => "BackoffLimitExceeded",
            Ending::DeadlineExceeded => "DeadlineExceeded",
            Ending::PodFailurePolicy => "PodFailurePolicy",
        }
    }

    /// The condition message (for [`Ending::PodFailurePolicy`] the interim condition has the
    /// real one).
    pub fn message(self) -> &'static str {
        match self {
            Ending::Completed => "Reached expected number of succeeded pods",
            Ending::BackoffLimitExceeded => "Job has reached the specified backoff limit",
            Ending::DeadlineExceeded => "Job was active longer than specified deadline",
            Ending::PodFailurePolicy => "Job failed by its pod failure policy",
        }
    }

    /// The ending an interim condition records, if `c` is one.
    pub fn from_condition(c: &JobCondition) -> Option<Ending> {
        if c.status != "True" {
            return None;
        }
        match (c.type_.as_str(), c.reason.as_deref()) {
            ("SuccessCriteriaMet", _) => Some(Ending::Completed),
            ("FailureTarget", Some("DeadlineExceeded")) => Some(Ending::DeadlineExceeded),
            ("FailureTarget", Some("PodFailurePolicy")) => Some(Ending::PodFailurePolicy),
            ("FailureTarget", _) => Some(Ending::BackoffLimitExceeded),
            _ => None,
        }
    }
}

/// The first condition of `kind` with status True.
pub fn condition<'a>(status: &'a JobStatus, kind: &str) -> Option<&'a JobCondition> {
    status.conditions.iter().flatten().find(|c| c.type_ == kind && c.status == "True")
}

/// The terminal condition (`Complete` or `Failed`) of a finished Job.
pub fn finished(job: &Job) -> Option<&JobCondition> {
    let status = job.status.as_ref()?;
    condition(status, "Complete").or_else(|| condition(status, "Failed"))
}

/// The ending the Job already committed to with an interim condition.
pub fn committed(status: &JobStatus) -> Option<Ending> {
    status.conditions.iter().flatten().find_map(Ending::from_condition)
}

/// Sets condition `kind` to `status` (True/False), changing the transition time only when the
/// status changes; returns whether anything changed.
pub fn set_condition(
    status: &mut JobStatus,
    kind: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> bool {
    let conditions = status.conditions.get_or_insert_default();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == kind) {
        if c.status == value && c.reason.as_deref() == Some(reason) {
            return false;
        }
        if c.status != value {
            c.last_transition_time = Some(Time(now));
        }
        c.status = value.to_string();
        c.reason = Some(reason.to_string());
        c.message = Some(message.to_string());
        c.last_probe_time = Some(Time(now));
        return true;
    }
    conditions.push(JobCondition {
        type_: kind.to_string(),
        status: value.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
    true
}

/// The Job's shape as the controller needs it, with the API defaults filled in.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Pods to run at once.
    pub parallelism: i32,
    /// Successes needed; `None` for a work queue (one success, then drain).
    pub completions: Option<i32>,
    /// Failures tolerated.
    pub backoff_limit: i32,
    /// `completionMode: Indexed` (with completions).
    pub indexed: bool,
    /// `restartPolicy: OnFailure`: container restarts count as failures.
    pub on_failure_restarts: bool,
    /// `activeDeadlineSeconds`.
    pub active_deadline: Option<i64>,
    /// `suspend`.
    pub suspend: bool,
}

impl Shape {
    /// Reads the Job's spec.
    pub fn of(job: &Job) -> Shape {
        let spec = job.spec.clone().unwrap_or_default();
        let completions = match (spec.completions, spec.parallelism) {
            (None, None) => Some(1),
            (c, _) => c,
        };
        Shape {
            parallelism: spec.parallelism.unwrap_or(1).max(0),
            completions,
            backoff_limit: spec.backoff_limit.unwrap_or(6),
            indexed: spec.completion_mode.as_deref() == Some("Indexed") && completions.is_some(),
            on_failure_restarts: spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref())
                == Some("OnFailure"),
            active_deadline: spec.active_deadline_seconds,
            suspend: spec.suspend.unwrap_or(false),
        }
    }

    /// Whether enough pods succeeded: `completions` successes (or completed indexes), or, for a
    /// work-queue Job without completions, one success with nothing left running.
    pub fn succeeded_enough(&self, succeeded: i32, completed: &BTreeSet<i32>, active: usize) -> bool {
        match (self.completions, self.indexed) {
            (Some(c), true) => completed.len() >= usize::try_from(c).unwrap_or(0),
            (Some(c), false) => succeeded >= c,
            (None, _) => succeeded > 0 && active == 0,
        }
    }

    /// How many pods should run now, given the successes so far and the running ones.
    pub fn wanted_active(&self, succeeded: i32, completed: &BTreeSet<i32>, active: usize) -> usize {
        let parallelism = usize::try_from(self.parallelism).unwrap_or(0);
        match self.completions {
            Some(c) if self.indexed => {
                let left = usize::try_from(c).unwrap_or(0).saturating_sub(completed.len());
                left.min(parallelism)
            }
            Some(c) => usize::try_from(c.saturating_sub(succeeded)).unwrap_or(0).min(parallelism),
            None if succeeded > 0 => active.min(parallelism),
            None => parallelism,
        }
    }

    /// The time left at `now` before `activeDeadlineSeconds` runs out for a Job started at
    /// `start` (zero once it has); `None` without a deadline.
    pub fn deadline_remaining(
        &self,
        start: Option<jiff::Timestamp>,
        now: jiff::Timestamp,
    ) -> Option<std::time::Duration> {
        let (deadline, start) = (self.active_deadline?, start?);
        let end = start.checked_add(jiff::SignedDuration::from_secs(deadline)).ok()?;
        Some(if now >= end { std::time::Duration::ZERO } else { now.duration_until(end).unsigned_abs() })
    }
}

/// The completed indexes recorded in the status.
pub fn completed_indexes(status: &JobStatus, shape: &Shape) -> BTreeSet<i32> {
    match (shape.indexed, shape.completions) {
        (true, Some(c)) => indexes::parse(status.completed_indexes.as_deref().unwrap_or(""), c),
        _ => BTreeSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(spec: serde_json::Value) -> Shape {
        let job: Job = serde_json::from_value(json!({"spec": spec})).unwrap();
        Shape::of(&job)
    }

    #[test]
    fn parallelism_caps_active_pods_and_completions_cap_the_rest() {
        let s = shape(json!({"completions": 5, "parallelism": 2, "template": {}}));
        assert_eq!(s.wanted_active(0, &BTreeSet::new(), 0), 2);
        assert_eq!(s.wanted_active(4, &BTreeSet::new(), 1), 1);
        assert!(!s.succeeded_enough(4, &BTreeSet::new(), 1));
        assert!(s.succeeded_enough(5, &BTreeSet::new(), 0));
    }

    #[test]
    fn a_work_queue_job_stops_creating_after_a_success() {
        let s = shape(json!({"parallelism": 3, "template": {}}));
        assert_eq!(s.wanted_active(0, &BTreeSet::new(), 0), 3);
        assert_eq!(s.wanted_active(1, &BTreeSet::new(), 2), 2);
        assert!(!s.succeeded_enough(1, &BTreeSet::new(), 2));
        assert!(s.succeeded_enough(1, &BTreeSet::new(), 0));
    }

    #[test]
    fn deadline_counts_from_the_start_time() {
        let s = shape(json!({"activeDeadlineSeconds": 30, "template": {}}));
        let start: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let before: jiff::Timestamp = "2026-01-01T00:00:20Z".parse().unwrap();
        let after: jiff::Timestamp = "2026-01-01T00:00:30Z".parse().unwrap();
        assert_eq!(s.deadline_remaining(Some(start), before), Some(std::time::Duration::from_secs(10)));
        assert_eq!(s.deadline_remaining(Some(start), after), Some(std::time::Duration::ZERO));
        assert_eq!(shape(json!({"template": {}})).deadline_remaining(Some(start), after), None);
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let mut status = JobStatus::default();
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        assert!(set_condition(&mut status, "Suspended", "True", "JobSuspended", "Job suspended", t0));
        assert!(!set_condition(&mut status, "Suspended", "True", "JobSuspended", "Job suspended", t1));
        assert!(set_condition(&mut status, "Suspended", "False", "JobResumed", "Job resumed", t1));
        let c = &status.conditions.as_ref().unwrap()[0];
        assert_eq!(c.last_transition_time.as_ref().unwrap().0, t1);
        assert_eq!(committed(&status), None);
    }
}
