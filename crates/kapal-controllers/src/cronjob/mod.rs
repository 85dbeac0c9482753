//! The CronJob controller: creates a Job named `<cronjob>-<scheduled minutes since epoch>` at
//! each schedule time (in `spec.timeZone`), starting only the most recent missed time, within
//! `startingDeadlineSeconds`, honouring `concurrencyPolicy` and `suspend`, and keeps
//! `successfulJobsHistoryLimit`/`failedJobsHistoryLimit` finished Jobs.
//!
//! The clock is injectable ([`run_with_clock`]) so that tests need not wait for minutes.

pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tracing::Instrument;

use crate::podtemplate::{controller_of, controller_ref};
use schedule::Schedule;

/// The annotation with the schedule time a Job was created for (RFC 3339, in the time zone).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// The controller's idea of "now".
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing jobs of cronjob {cronjob}: {source}")]
    ListJobs { cronjob: String, source: kube::Error },
    #[error("creating job {job} for cronjob {cronjob}: {source}")]
    CreateJob { cronjob: String, job: String, source: kube::Error },
    #[error("deleting job {job} of cronjob {cronjob}: {source}")]
    DeleteJob { cronjob: String, job: String, source: kube::Error },
    #[error("writing the status of cronjob {cronjob}: {source}")]
    Status { cronjob: String, source: kube::Error },
}

struct Ctx {
    client: Client,
    recorder: Recorder,
    clock: Clock,
}

/// Runs the controller on the system clock.
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_with_clock(client, Arc::new(Timestamp::now)).await
}

/// Runs the controller with `clock` as its idea of now.
pub async fn run_with_clock(client: Client, clock: Clock) -> anyhow::Result<()> {
    let cronjobs: Api<CronJob> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    let recorder = Recorder::new(client.clone(), "cronjob-controller".into());
    let ctx = Arc::new(Ctx { client, recorder, clock });
    Controller::new(cronjobs, watcher::Config::default())
        .owns(jobs, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "cronjob reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(_cj: Arc<CronJob>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "cronjob controller");
    Action::requeue(Duration::from_secs(1))
}

fn key(cj: &CronJob) -> String {
    format!("{}/{}", cj.namespace().unwrap_or_default(), cj.name_any())
}

/// `Complete` or `Failed`, once the Job has finished.
fn finished(job: &Job) -> Option<&str> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

/// The name of the Job for a schedule time: the CronJob's name and the time in minutes.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// The Job for `scheduled`, from the CronJob's template, owned by it.
pub fn job_for(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let template = cj.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        scheduled.to_zoned(tz.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&cj.name_any(), scheduled)),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The schedule times missed since `since` (the last schedule time, else the creation time),
/// looking back no further than `startingDeadlineSeconds` before `now`.
pub fn due(
    parsed: &Schedule,
    tz: &TimeZone,
    since: Timestamp,
    starting_deadline: Option<i64>,
    now: Timestamp,
) -> schedule::Missed {
    let earliest = starting_deadline.and_then(|d| now.checked_sub(jiff::SignedDuration::from_secs(d)).ok());
    let since = earliest.map_or(since, |e| since.max(e));
    schedule::missed(parsed, tz, since, now)
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: Some(job.name_any()),
        namespace: job.namespace(),
        uid: job.uid(),
        resource_version: job.resource_version(),
        ..ObjectReference::default()
    }
}

/// The time zone of the CronJob: `spec.timeZone`, else the controller's local zone (upstream
/// uses the controller manager's local time), else UTC.
fn time_zone(cj: &CronJob) -> Result<TimeZone, String> {
    match cj.spec.as_ref().and_then(|s| s.time_zone.as_deref()) {
        Some(name) => TimeZone::get(name).map_err(|e| format!("invalid timeZone: {name:?}: {e}")),
        None => Ok(TimeZone::try_system().unwrap_or(TimeZone::UTC)),
    }
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let span = tracing::debug_span!("reconcile cronjob", cronjob = %key(&cj));
    Pass { ctx: &ctx, cj: (*cj).clone(), now: (ctx.clock)() }.run().instrument(span).await
}

/// One pass over a CronJob.
struct Pass<'a> {
    ctx: &'a Ctx,
    cj: CronJob,
    now: Timestamp,
}

impl Pass<'_> {
    async fn run(mut self) -> Result<Action, Error> {
        let jobs = self.owned_jobs().await?;
        let before = self.cj.status.clone().unwrap_or_default();
        self.track_active(&jobs).await;
        self.clean_history(&jobs).await?;
        let action = if self.cj.metadata.deletion_timestamp.is_some()
            || self.cj.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false)
        {
            Action::await_change()
        } else {
            self.schedule(&jobs).await?
        };
        if self.cj.status.clone().unwrap_or_default() != before {
            let api: Api<CronJob> = Api::namespaced(self.ctx.client.clone(), &self.cj.namespace().unwrap_or_default());
            api.replace_status(&self.cj.name_any(), &PostParams::default(), &self.cj)
                .await
                .map_err(|source| Error::Status { cronjob: key(&self.cj), source })?;
        }
        Ok(action)
    }

    async fn owned_jobs(&self) -> Result<Vec<Job>, Error> {
        let api: Api<Job> = Api::namespaced(self.ctx.client.clone(), &self.cj.namespace().unwrap_or_default());
        let uid = self.cj.uid().unwrap_or_default();
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|source| Error::ListJobs { cronjob: key(&self.cj), source })?;
        Ok(list.items.into_iter().filter(|j| controller_of(&j.metadata).is_some_and(|r| r.uid == uid)).collect())
    }

    /// Rebuilds `status.active` from the owned Jobs, noting the ones that finished.
    async fn track_active(&mut self, jobs: &[Job]) {
        let status = self.cj.status.get_or_insert_default();
        let was_active: Vec<String> = status.active.iter().flatten().filter_map(|r| r.uid.clone()).collect();
        let mut saw = Vec::new();
        for job in jobs {
            let Some(outcome) = finished(job) else { continue };
            if was_active.iter().any(|u| Some(u) == job.uid().as_ref()) {
                saw.push(format!("Saw completed job: {}, status: {outcome}", job.name_any()));
            }
            if outcome == "Complete"
                && let Some(done) = job.status.as_ref().and_then(|s| s.completion_time.as_ref())
                && status.last_successful_time.as_ref().is_none_or(|t| t.0 < done.0)
            {
                status.last_successful_time = Some(done.clone());
            }
        }
        let active: Vec<ObjectReference> = jobs
            .iter()
            .filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
            .map(job_ref)
            .collect();
        status.active = (!active.is_empty()).then_some(active);
        for note in saw {
            self.event(EventType::Normal, "SawCompletedJob", note).await;
        }
    }

    /// Deletes the oldest finished Jobs beyond the history limits.
    async fn clean_history(&self, jobs: &[Job]) -> Result<(), Error> {
        let spec = self.cj.spec.clone().unwrap_or_default();
        for (outcome, limit) in [
            ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
            ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
        ] {
            let mut done: Vec<&Job> = jobs.iter().filter(|j| finished(j) == Some(outcome)).collect();
            let limit = usize::try_from(limit.max(0)).unwrap_or(0);
            if done.len() <= limit {
                continue;
            }
            done.sort_by_key(|j| {
                let started = j.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0);
                (started.or(j.creation_timestamp().map(|t| t.0)), j.name_any())
            });
            let excess = done.len() - limit;
            for job in done.into_iter().take(excess) {
                self.delete_job(job).await?;
            }
        }
        Ok(())
    }

    async fn delete_job(&self, job: &Job) -> Result<(), Error> {
        let api: Api<Job> = Api::namespaced(self.ctx.client.clone(), &self.cj.namespace().unwrap_or_default());
        let name = job.name_any();
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(source) => return Err(Error::DeleteJob { cronjob: key(&self.cj), job: name, source }),
        }
        tracing::info!(cronjob = %key(&self.cj), job = %name, "deleted job");
        self.event(EventType::Normal, "SuccessfulDelete", format!("Deleted job {name}")).await;
        Ok(())
    }

    /// Starts the Job of the most recent missed schedule time, if policy allows; returns when
    /// to look again.
    async fn schedule(&mut self, jobs: &[Job]) -> Result<Action, Error> {
        let spec = self.cj.spec.clone().unwrap_or_default();
        let tz = match time_zone(&self.cj) {
            Ok(tz) => tz,
            Err(message) => {
                self.event(EventType::Warning, "UnknownTimeZone", message).await;
                return Ok(Action::await_change());
            }
        };
        let parsed = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                self.event(EventType::Warning, "UnparseableSchedule", format!("unparseable schedule: {e}")).await;
                return Ok(Action::await_change());
            }
        };
        let last = self.cj.status.as_ref().and_then(|s| s.last_schedule_time.as_ref()).map(|t| t.0);
        let created = self.cj.creation_timestamp().map_or(self.now, |t| t.0);
        let missed = due(&parsed, &tz, last.unwrap_or(created), spec.starting_deadline_seconds, self.now);
        let requeue = |next: Option<Timestamp>, now: Timestamp| match next {
            Some(next) => Action::requeue(now.duration_until(next).unsigned_abs() + Duration::from_millis(100)),
            None => Action::await_change(),
        };
        let Some(scheduled) = missed.most_recent else { return Ok(requeue(missed.next, self.now)) };
        if missed.count > 100 {
            let note = format!(
                "too many missed start times: {}. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
                missed.count
            );
            self.event(EventType::Warning, "TooManyMissedTimes", note).await;
        }
        if let Some(deadline) = spec.starting_deadline_seconds
            && scheduled.as_second() + deadline < self.now.as_second()
        {
            self.event(
                EventType::Warning,
                "MissSchedule",
                format!("Missed scheduled time to start a job: {scheduled}"),
            )
            .await;
            return Ok(requeue(missed.next, self.now));
        }
        let name = job_name(&self.cj.name_any(), scheduled);
        if jobs.iter().any(|j| j.name_any() == name) {
            self.cj.status.get_or_insert_default().last_schedule_time = Some(Time(scheduled));
            return Ok(requeue(missed.next, self.now));
        }
        let active: Vec<Job> =
            jobs.iter().filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none()).cloned().collect();
        match spec.concurrency_policy.as_deref() {
            Some("Forbid") if !active.is_empty() => {
                let note = "Not starting job because prior execution is running and concurrency policy is Forbid";
                self.event(EventType::Normal, "JobAlreadyActive", note.into()).await;
                // Retried when the running Job finishes (an owned-Job event) or at the next time.
                return Ok(requeue(missed.next, self.now));
            }
            Some("Replace") => {
                for job in &active {
                    self.delete_job(job).await?;
                }
                self.cj.status.get_or_insert_default().active = None;
            }
            _ => {}
        }
        let job = self.create_job(&job_for(&self.cj, scheduled, &tz)).await?;
        let status = self.cj.status.get_or_insert_default();
        status.active.get_or_insert_default().push(job_ref(&job));
        status.last_schedule_time = Some(Time(scheduled));
        Ok(requeue(missed.next, self.now))
    }

    async fn create_job(&self, job: &Job) -> Result<Job, Error> {
        let api: Api<Job> = Api::namespaced(self.ctx.client.clone(), &self.cj.namespace().unwrap_or_default());
        let name = job.name_any();
        let fail = |source| Error::CreateJob { cronjob: key(&self.cj), job: name.clone(), source };
        match api.create(&PostParams::default(), job).await {
            Ok(created) => {
                tracing::info!(cronjob = %key(&self.cj), job = %name, "created job");
                self.event(EventType::Normal, "SuccessfulCreate", format!("Created job {name}")).await;
                Ok(created)
            }
            // Created by an earlier pass whose status write was lost.
            Err(kube::Error::Api(e)) if e.code == 409 => api.get(&name).await.map_err(fail),
            Err(e) => Err(fail(e)),
        }
    }

    async fn event(&self, type_: EventType, reason: &str, note: String) {
        // kube's recorder folds events with equal reason and action into one series, whatever
        // their notes; the note as action keeps "Created pod: a" and "Created pod: b" apart
        // while true repeats still fold.
        let action = note.chars().take(128).collect();
        let event = Event { type_, reason: reason.into(), note: Some(note), action, secondary: None };
        if let Err(e) = self.ctx.recorder.publish(&event, &self.cj.object_ref(&())).await {
            tracing::debug!(error = %e, cronjob = %key(&self.cj), reason, "recording an event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_starting_deadline_limits_how_far_back_runs_are_started() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let every5 = Schedule::parse("*/5 * * * *").unwrap();
        let long_ago = at("2026-03-01T00:00:00Z");
        // Without a deadline the most recent of many missed runs starts.
        let m = due(&every5, &TimeZone::UTC, long_ago, None, at("2026-03-01T10:01:30Z"));
        assert_eq!((m.most_recent, m.count), (Some(at("2026-03-01T10:00:00Z")), 120));
        // With 60 s, the 10:00 run is still due at 10:00:59 but not at 10:01:30.
        let m = due(&every5, &TimeZone::UTC, long_ago, Some(60), at("2026-03-01T10:00:59Z"));
        assert_eq!((m.most_recent, m.count), (Some(at("2026-03-01T10:00:00Z")), 1));
        let m = due(&every5, &TimeZone::UTC, long_ago, Some(60), at("2026-03-01T10:01:30Z"));
        assert_eq!((m.most_recent, m.next), (None, Some(at("2026-03-01T10:05:00Z"))));
    }

    #[test]
    fn jobs_are_named_after_the_schedule_minute_and_carry_the_template() {
        let cj: CronJob = serde_json::from_value(json!({
            "metadata": {"name": "nightly", "namespace": "ns", "uid": "c1"},
            "spec": {"schedule": "0 0 * * *", "jobTemplate": {"metadata": {"labels": {"app": "n"}},
                "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}}
        }))
        .unwrap();
        let at: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let job = job_for(&cj, at, &tz);
        assert_eq!(job.name_any(), format!("nightly-{}", at.as_second() / 60));
        assert_eq!(job.labels()["app"], "n");
        assert_eq!(job.annotations()[SCHEDULED_TIMESTAMP], "2026-03-01T01:00:00+01:00");
        let owner = controller_of(&job.metadata).unwrap();
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("CronJob", "c1"));
    }
}
