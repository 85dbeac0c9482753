//! Deployment status and conditions, with upstream's reasons and messages, so that
//! `kubectl rollout status` and `kubectl describe` read what they read on Kubernetes.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::sync::Sync;
use super::{Error, replicas, rs_available, rs_replicas};

/// Condition types and reasons (upstream `deploymentutil`).
pub const PROGRESSING: &str = "Progressing";
pub const AVAILABLE: &str = "Available";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
pub const RS_CREATE_ERROR: &str = "ReplicaSetCreateError";

/// A condition stamped `now` (both times, as `NewDeploymentCondition`).
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// The condition of `type_`, if any.
pub fn get<'a>(status: Option<&'a DeploymentStatus>, type_: &str) -> Option<&'a DeploymentCondition> {
    status?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

fn remove(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
    }
}

/// Upstream `SetDeploymentCondition`: a condition with the same status and reason is left as it
/// is; the transition time survives a change of reason without a change of status.
pub fn set(status: &mut DeploymentStatus, mut new: DeploymentCondition) {
    if let Some(current) = get(Some(status), &new.type_) {
        if current.status == new.status && current.reason == new.reason {
            return;
        }
        if current.status == new.status {
            new.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove(status, &new.type_);
    status.conditions.get_or_insert_with(Vec::new).push(new);
}

/// Whether a progress deadline applies (`progressDeadlineSeconds` set and not "forever").
pub fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).is_some_and(|s| s != i32::MAX)
}

/// Every pod updated, available, with no old ones left, for the current generation.
pub fn deployment_complete(d: &Deployment, status: Option<&DeploymentStatus>) -> bool {
    let Some(s) = status else { return false };
    let want = replicas(d);
    s.updated_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Whether `new` shows progress over the Deployment's recorded status.
fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || new_old < old_old
        || new.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || new.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

/// Whether the last progress is older than the deadline.
fn deployment_timed_out(d: &Deployment, status: &DeploymentStatus, now: jiff::Timestamp) -> bool {
    if !has_progress_deadline(d) {
        return false;
    }
    let Some(cond) = get(Some(status), PROGRESSING) else { return false };
    match cond.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => {
            let deadline = i64::from(d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).unwrap_or(600));
            cond.last_update_time.as_ref().is_some_and(|t| t.0.as_second() + deadline < now.as_second())
        }
    }
}

/// Upstream `calculateStatus`: counts from the ReplicaSets plus the Available condition.
pub fn calculate(
    d: &Deployment,
    old: &[ReplicaSet],
    new: Option<&ReplicaSet>,
    max_unavailable: i32,
    now: jiff::Timestamp,
) -> DeploymentStatus {
    let all = || old.iter().chain(new);
    let actual = |rs: &ReplicaSet| rs.status.as_ref().map_or(0, |s| s.replicas);
    let ready = |rs: &ReplicaSet| rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    let available: i32 = all().map(rs_available).sum();
    let total: i32 = all().map(rs_replicas).sum();
    let previous = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all().map(actual).sum()),
        updated_replicas: Some(new.map_or(0, actual)),
        ready_replicas: Some(all().map(ready).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: previous.collision_count,
        conditions: previous.conditions,
        terminating_replicas: previous.terminating_replicas,
    };
    let available_condition = if available >= replicas(d) - max_unavailable {
        condition(AVAILABLE, "True", "MinimumReplicasAvailable", "Deployment has minimum availability.".into(), now)
    } else {
        condition(
            AVAILABLE,
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            now,
        )
    };
    set(&mut status, available_condition);
    status
}

/// The ReplicaFailure of the new ReplicaSet, else of any other (upstream `getReplicaFailures`).
fn replica_failure(old: &[ReplicaSet], new: Option<&ReplicaSet>) -> Option<DeploymentCondition> {
    let failure = |rs: &ReplicaSet| {
        rs.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == REPLICA_FAILURE).map(|c| {
            DeploymentCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time.clone(),
            }
        })
    };
    new.and_then(failure).or_else(|| old.iter().chain(new).find_map(failure))
}

/// A Progressing condition's message names the new ReplicaSet when there is one.
fn progress_message(d: &Deployment, new: Option<&ReplicaSet>, rs_text: &str, d_text: &str) -> String {
    match new {
        Some(rs) => format!("ReplicaSet \"{}\" {rs_text}", rs.name_any()),
        None => format!("Deployment \"{}\" {d_text}", d.name_any()),
    }
}

impl Sync {
    /// Writes counts and conditions only (paused Deployments and scaling events).
    pub async fn sync_deployment_status(&mut self, old: &[ReplicaSet], new: Option<&ReplicaSet>) -> Result<(), Error> {
        let status = calculate(&self.d, old, new, self.unavailable, jiff::Timestamp::now());
        self.write_status(status).await
    }

    /// Writes counts and conditions and judges progress against the deadline (upstream
    /// `syncRolloutStatus`).
    pub async fn sync_rollout_status(&mut self, old: &[ReplicaSet], new: Option<&ReplicaSet>) -> Result<(), Error> {
        let now = jiff::Timestamp::now();
        let mut status = calculate(&self.d, old, new, self.unavailable, now);
        if !has_progress_deadline(&self.d) {
            remove(&mut status, PROGRESSING);
        }
        let current = get(self.d.status.as_ref(), PROGRESSING).cloned();
        let complete_before = status.replicas == status.updated_replicas
            && current.as_ref().is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
        if has_progress_deadline(&self.d) && !complete_before {
            if deployment_complete(&self.d, Some(&status)) {
                let message =
                    progress_message(&self.d, new, "has successfully progressed.", "has successfully progressed.");
                set(&mut status, condition(PROGRESSING, "True", NEW_RS_AVAILABLE, message, now));
            } else if deployment_progressing(&self.d, &status) {
                let message = progress_message(&self.d, new, "is progressing.", "is progressing.");
                let mut cond = condition(PROGRESSING, "True", RS_UPDATED, message, now);
                // Progress moves lastUpdateTime even when the reason stays the same.
                if let Some(current) = current.as_ref().filter(|c| c.status == "True") {
                    cond.last_transition_time = current.last_transition_time.clone();
                }
                remove(&mut status, PROGRESSING);
                set(&mut status, cond);
            } else if deployment_timed_out(&self.d, &status, now) {
                let message =
                    progress_message(&self.d, new, "has timed out progressing.", "has timed out progressing.");
                set(&mut status, condition(PROGRESSING, "False", TIMED_OUT, message, now));
            }
        }
        match replica_failure(old, new) {
            Some(failure) => set(&mut status, failure),
            None => remove(&mut status, REPLICA_FAILURE),
        }
        self.write_status(status).await?;
        self.requeue_stuck();
        Ok(())
    }

    /// Looks again when the deadline of an unfinished rollout passes, since nothing else would
    /// wake the controller then.
    fn requeue_stuck(&mut self) {
        if !has_progress_deadline(&self.d) || deployment_complete(&self.d, self.d.status.as_ref()) {
            return;
        }
        let Some(cond) = get(self.d.status.as_ref(), PROGRESSING) else { return };
        if cond.reason.as_deref() == Some(TIMED_OUT) {
            return;
        }
        let Some(updated) = cond.last_update_time.as_ref() else { return };
        let deadline = i64::from(self.d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).unwrap_or(600));
        let left = updated.0.as_second() + deadline - jiff::Timestamp::now().as_second();
        self.requeue_after(Duration::from_secs(u64::try_from(left + 1).unwrap_or(0).max(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rs(spec: i32, actual: i32, available: i32) -> ReplicaSet {
        serde_json::from_value(json!({"metadata": {"name": "web-abc"}, "spec": {"replicas": spec, "selector": {}},
            "status": {"replicas": actual, "readyReplicas": available, "availableReplicas": available}}))
        .unwrap()
    }

    #[test]
    fn status_sums_replica_sets_and_judges_availability() {
        let d: Deployment = serde_json::from_value(json!({"metadata": {"generation": 2},
            "spec": {"replicas": 4, "selector": {}, "template": {}}}))
        .unwrap();
        let now = jiff::Timestamp::now();
        let status = calculate(&d, &[rs(2, 2, 2)], Some(&rs(3, 3, 1)), 1, now);
        assert_eq!(status.replicas, Some(5));
        assert_eq!(status.updated_replicas, Some(3));
        assert_eq!(status.available_replicas, Some(3));
        assert_eq!(status.unavailable_replicas, Some(2));
        assert_eq!(status.observed_generation, Some(2));
        let available = get(Some(&status), AVAILABLE).unwrap();
        assert_eq!(
            (available.status.as_str(), available.reason.as_deref()),
            ("True", Some("MinimumReplicasAvailable"))
        );
        let status = calculate(&d, &[], Some(&rs(4, 4, 2)), 1, now);
        assert_eq!(get(Some(&status), AVAILABLE).unwrap().status, "False");
    }

    #[test]
    fn setting_the_same_condition_keeps_its_times() {
        let earlier = jiff::Timestamp::from_second(1_000).unwrap();
        let later = jiff::Timestamp::from_second(2_000).unwrap();
        let mut status = DeploymentStatus::default();
        set(&mut status, condition(PROGRESSING, "True", RS_UPDATED, "a".into(), earlier));
        set(&mut status, condition(PROGRESSING, "True", RS_UPDATED, "b".into(), later));
        assert_eq!(get(Some(&status), PROGRESSING).unwrap().message.as_deref(), Some("a"));
        set(&mut status, condition(PROGRESSING, "True", NEW_RS_AVAILABLE, "c".into(), later));
        let cond = get(Some(&status), PROGRESSING).unwrap();
        assert_eq!(cond.last_transition_time.as_ref().unwrap().0, earlier);
        assert_eq!(cond.last_update_time.as_ref().unwrap().0, later);
    }
}
