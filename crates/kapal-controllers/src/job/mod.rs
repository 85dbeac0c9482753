//! The Job controller: runs pods from a Job's template until enough of them succeed
//! (`completions`, `parallelism`, Indexed completion), gives up after `backoffLimit` failures or
//! `activeDeadlineSeconds`, honours `suspend`, and deletes finished Jobs after
//! `ttlSecondsAfterFinished`.
//!
//! Finished pods are counted exactly once through the `batch.kubernetes.io/job-tracking`
//! finalizer, as upstream does: a finished pod's UID is first written to
//! `status.uncountedTerminatedPods`, then its finalizer is removed, then the UID moves into
//! `status.succeeded`/`status.failed`. A crash between any two steps repeats only that step.

mod failurepolicy;
mod indexes;
mod pods;
mod status;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use crate::podtemplate::{self, controller_of};
use pods::{Outcome, TRACKING_FINALIZER};
use status::{Ending, Shape};

pub use indexes::INDEX_KEY;
pub use pods::{CONTROLLER_UID, JOB_NAME};

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing pods of job {job}: {source}")]
    ListPods { job: String, source: kube::Error },
    #[error("creating a pod for job {job}: {source}")]
    CreatePod { job: String, source: kube::Error },
    #[error("deleting pod {pod} of job {job}: {source}")]
    DeletePod { job: String, pod: String, source: kube::Error },
    #[error("removing the tracking finalizer of pod {pod}: {source}")]
    Release { pod: String, source: kube::Error },
    #[error("writing the status of job {job}: {source}")]
    Status { job: String, source: kube::Error },
    #[error("deleting finished job {job}: {source}")]
    DeleteJob { job: String, source: kube::Error },
}

struct Ctx {
    client: Client,
    recorder: Recorder,
}

/// Runs the controller: Jobs and the pods they own, plus a watch that releases the tracking
/// finalizer of pods whose Job is gone.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let jobs: Api<Job> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let recorder = Recorder::new(client.clone(), "job-controller".into());
    let ctx = Arc::new(Ctx { client: client.clone(), recorder });
    let jobs_loop = Controller::new(jobs, watcher::Config::default())
        .owns(pods.clone(), watcher::Config::default().labels(CONTROLLER_UID))
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "job reconcile failed");
            }
        });
    let orphans = Controller::new(pods, watcher::Config::default().labels(CONTROLLER_UID))
        .run(release_orphan, orphan_error_policy, ctx)
        .for_each(|_| async {});
    futures::future::join(jobs_loop, orphans).await;
    Ok(())
}

fn error_policy(_job: Arc<Job>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    if let Error::Status { source: kube::Error::Api(e), .. } = error
        && e.code == 409
    {
        // A stale copy of the Job; the fresh one is on its way through the watch.
        tracing::debug!(%error, "job controller");
        return Action::requeue(Duration::from_millis(200));
    }
    tracing::warn!(%error, "job controller");
    Action::requeue(Duration::from_secs(1))
}

fn orphan_error_policy(_pod: Arc<Pod>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "job controller: orphaned pod");
    Action::requeue(Duration::from_secs(2))
}

fn key(job: &Job) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

/// The pods a Job owns: matched by its selector and controlled by it.
async fn owned_pods(client: &Client, job: &Job) -> Result<Vec<Pod>, Error> {
    let ns = job.namespace().unwrap_or_default();
    let uid = job.uid().unwrap_or_default();
    let selector = job
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .and_then(podtemplate::selector_query)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{CONTROLLER_UID}={uid}"));
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::ListPods { job: key(job), source })?;
    Ok(list.items.into_iter().filter(|p| controller_of(&p.metadata).is_some_and(|r| r.uid == uid)).collect())
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let now = jiff::Timestamp::now();
    let job = (*job).clone();
    let pods = owned_pods(&ctx.client, &job).await?;
    if job.metadata.deletion_timestamp.is_some() {
        release_all(&ctx, &pods).await?;
        return Ok(Action::await_change());
    }
    if let Some(done) = status::finished(&job) {
        let finished_at =
            job.status.as_ref().and_then(|s| s.completion_time.as_ref()).or(done.last_transition_time.as_ref());
        let finished_at = finished_at.map(|t| t.0);
        release_all(&ctx, &pods).await?;
        return expire(&ctx, &job, finished_at, now).await;
    }
    let span = tracing::debug_span!("reconcile job", job = %key(&job));
    async move {
        let job = record_finished(&ctx, job, &pods).await?;
        Pass { ctx: &ctx, job, pods, now }.run().await
    }
    .instrument(span)
    .await
}

/// Writes newly finished pods into `uncountedTerminatedPods` (and, for Indexed Jobs, their index
/// into `completedIndexes`), before anything removes their finalizer.
async fn record_finished(ctx: &Ctx, mut job: Job, pods: &[Pod]) -> Result<Job, Error> {
    let shape = Shape::of(&job);
    let mut status = job.status.clone().unwrap_or_default();
    let mut completed = status::completed_indexes(&status, &shape);
    let committed = status::committed(&status).is_some();
    let mut fail_job: Option<String> = None;
    let mut ignored: Vec<&Pod> = Vec::new();
    let uncounted = status.uncounted_terminated_pods.get_or_insert_default();
    let mut changed = false;
    for pod in pods.iter().filter(|p| pods::is_tracked(p)) {
        let (Some(outcome), Some(uid)) = (pods::outcome(pod, &job), pod.uid()) else { continue };
        if outcome == Outcome::Failed {
            match failurepolicy::judge(&job, pod) {
                failurepolicy::Verdict::Ignore => {
                    ignored.push(pod);
                    continue;
                }
                failurepolicy::Verdict::FailJob(message) => {
                    fail_job.get_or_insert(message);
                }
                failurepolicy::Verdict::Count => {}
            }
        }
        let list = match outcome {
            Outcome::Succeeded => uncounted.succeeded.get_or_insert_default(),
            Outcome::Failed => uncounted.failed.get_or_insert_default(),
        };
        if list.contains(&uid) {
            continue;
        }
        list.push(uid);
        changed = true;
        if let (Outcome::Succeeded, true, Some(c)) = (outcome, shape.indexed, shape.completions)
            && let Some(index) = indexes::of_pod(&pod.metadata, c)
        {
            completed.insert(index);
        }
    }
    for pod in ignored {
        tracing::info!(job = %key(&job), pod = %pod.name_any(), "pod failure ignored by the pod failure policy");
        release(&ctx.client, pod).await?;
    }
    if !changed {
        return Ok(job);
    }
    if shape.indexed {
        status.completed_indexes = Some(indexes::format(&completed));
    }
    if let Some(message) = fail_job.filter(|_| !committed) {
        let ending = Ending::PodFailurePolicy;
        status::set_condition(&mut status, ending.interim(), "True", ending.reason(), &message, jiff::Timestamp::now());
    }
    job.status = Some(status);
    write_status(ctx, &job).await
}

async fn write_status(ctx: &Ctx, job: &Job) -> Result<Job, Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    api.replace_status(&job.name_any(), &PostParams::default(), job)
        .await
        .map_err(|source| Error::Status { job: key(job), source })
}

/// Removes the tracking finalizer; a pod already gone is fine. The resourceVersion in the patch
/// makes it fail rather than overwrite a concurrent change of the finalizer list.
async fn release(client: &Client, pod: &Pod) -> Result<(), Error> {
    if !pods::is_tracked(pod) {
        return Ok(());
    }
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let rest: Vec<&String> = pod.metadata.finalizers.iter().flatten().filter(|f| *f != TRACKING_FINALIZER).collect();
    let patch = json!({"metadata": {"resourceVersion": pod.resource_version(), "finalizers": rest}});
    match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Release { pod: name, source }),
    }
}

async fn release_all(ctx: &Ctx, pods: &[Pod]) -> Result<(), Error> {
    for pod in pods {
        release(&ctx.client, pod).await?;
    }
    Ok(())
}

/// Deletes a finished Job once its TTL has passed; otherwise waits for it.
async fn expire(
    ctx: &Ctx,
    job: &Job,
    finished_at: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> Result<Action, Error> {
    let ttl = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished);
    let (Some(ttl), Some(finished_at)) = (ttl, finished_at) else { return Ok(Action::await_change()) };
    let expires = finished_at.checked_add(jiff::SignedDuration::from_secs(i64::from(ttl))).unwrap_or(finished_at);
    if now < expires {
        return Ok(Action::requeue(now.duration_until(expires).unsigned_abs() + Duration::from_millis(100)));
    }
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let mut params = DeleteParams::background();
    params.preconditions = Some(kube::api::Preconditions { uid: job.uid(), resource_version: None });
    match api.delete(&job.name_any(), &params).await {
        Ok(_) => tracing::info!(job = %key(job), ttl, "deleted finished job after its ttl"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(source) => return Err(Error::DeleteJob { job: key(job), source }),
    }
    Ok(Action::await_change())
}

/// Releases the finalizer of a Job pod whose Job no longer exists (or is another Job now).
async fn release_orphan(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !pods::is_tracked(&pod) {
        return Ok(Action::await_change());
    }
    let Some(owner) = controller_of(&pod.metadata) else {
        release(&ctx.client, &pod).await?;
        return Ok(Action::await_change());
    };
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let job = match api.get_opt(&owner.name).await {
        Ok(job) => job,
        Err(e) => {
            tracing::debug!(error = %e, pod = %pod.name_any(), "looking up the job of a pod");
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };
    let gone = job.as_ref().is_none_or(|j| j.uid().as_deref() != Some(owner.uid.as_str()));
    if gone {
        release(&ctx.client, &pod).await?;
    }
    Ok(Action::await_change())
}

/// One pass of a running Job: count, decide, create or delete pods, write the status.
struct Pass<'a> {
    ctx: &'a Ctx,
    job: Job,
    pods: Vec<Pod>,
    now: jiff::Timestamp,
}

impl Pass<'_> {
    async fn run(mut self) -> Result<Action, Error> {
        let shape = Shape::of(&self.job);
        let before = self.job.status.clone().unwrap_or_default();
        let mut status = before.clone();
        self.count_released(&mut status).await?;

        let mut active: Vec<Pod> = self.pods.iter().filter(|p| podtemplate::is_active(p)).cloned().collect();
        let mut requeue: Option<Duration> = None;
        if shape.suspend {
            self.delete_pods(&active).await?;
            active.clear();
            if status::set_condition(&mut status, "Suspended", "True", "JobSuspended", "Job suspended", self.now) {
                self.event(EventType::Normal, "Suspended", "Job suspended".into()).await;
            }
            status.start_time = None;
        } else {
            if status::condition(&status, "Suspended").is_some() {
                status::set_condition(&mut status, "Suspended", "False", "JobResumed", "Job resumed", self.now);
                self.event(EventType::Normal, "Resumed", "Job resumed".into()).await;
                status.start_time = None;
            }
            if status.start_time.is_none() {
                status.start_time = Some(Time(self.now));
            }
            let ending = match status::committed(&status) {
                Some(ending) => Some(ending),
                None => self.judge(&shape, &status, &active, &mut requeue),
            };
            match ending {
                Some(ending) => {
                    if status::set_condition(
                        &mut status,
                        ending.interim(),
                        "True",
                        ending.reason(),
                        ending.message(),
                        self.now,
                    ) {
                        tracing::info!(job = %key(&self.job), reason = ending.reason(), "job is ending");
                    }
                    let had_active = !active.is_empty();
                    self.delete_pods(&active).await?;
                    active.clear();
                    if !had_active {
                        self.finish(ending, &mut status).await;
                    }
                }
                None => {
                    let wait = self.manage(&shape, &status, &mut active).await?;
                    requeue = min_some(requeue, wait);
                }
            }
        }

        status.active = Some(count(active.len()));
        status.ready = Some(count(active.iter().filter(|p| podtemplate::is_ready(p)).count()));
        let terminating = self.pods.iter().filter(|p| pods::is_terminating(p)).count();
        status.terminating = Some(count(terminating));
        if status != before {
            self.job.status = Some(status);
            write_status(self.ctx, &self.job).await?;
        }
        Ok(requeue.map_or_else(Action::await_change, |d| Action::requeue(d + Duration::from_millis(50))))
    }

    /// Removes the finalizer of every pod recorded as uncounted, then moves those UIDs into the
    /// counters.
    async fn count_released(&self, status: &mut JobStatus) -> Result<(), Error> {
        let uncounted = status.uncounted_terminated_pods.take().unwrap_or_default();
        let mut left = UncountedTerminatedPods::default();
        for (uids, counter, rest) in [
            (uncounted.succeeded.unwrap_or_default(), &mut status.succeeded, &mut left.succeeded),
            (uncounted.failed.unwrap_or_default(), &mut status.failed, &mut left.failed),
        ] {
            for uid in uids {
                if let Some(pod) = self.pods.iter().find(|p| p.uid().as_deref() == Some(uid.as_str())) {
                    release(&self.ctx.client, pod).await?;
                }
                *counter = Some(counter.unwrap_or(0) + 1);
            }
            if rest.as_ref().is_some_and(Vec::is_empty) {
                *rest = None;
            }
        }
        status.uncounted_terminated_pods = Some(left);
        Ok(())
    }

    /// Decides whether a running Job has failed or succeeded.
    fn judge(
        &self,
        shape: &Shape,
        status: &JobStatus,
        active: &[Pod],
        requeue: &mut Option<Duration>,
    ) -> Option<Ending> {
        let mut failures = status.failed.unwrap_or(0);
        if shape.on_failure_restarts {
            failures += active.iter().map(pods::restarts).sum::<i32>();
        }
        if failures > shape.backoff_limit {
            return Some(Ending::BackoffLimitExceeded);
        }
        let start = status.start_time.as_ref().map(|t| t.0);
        match shape.deadline_remaining(start, self.now) {
            Some(Duration::ZERO) => return Some(Ending::DeadlineExceeded),
            Some(left) => *requeue = min_some(*requeue, Some(left)),
            None => {}
        }
        let completed = status::completed_indexes(status, shape);
        shape.succeeded_enough(status.succeeded.unwrap_or(0), &completed, active.len()).then_some(Ending::Completed)
    }

    /// Adds the terminal condition once no pod of the Job runs or terminates any more.
    async fn finish(&self, ending: Ending, status: &mut JobStatus) {
        let terminating = self.pods.iter().any(pods::is_terminating);
        if terminating {
            return;
        }
        let message = status::condition(status, ending.interim())
            .and_then(|c| c.message.clone())
            .unwrap_or_else(|| ending.message().to_string());
        if !status::set_condition(status, ending.terminal(), "True", ending.reason(), &message, self.now) {
            return;
        }
        if ending == Ending::Completed {
            status.completion_time = Some(Time(self.now));
            self.event(EventType::Normal, "Completed", "Job completed".into()).await;
        } else {
            self.event(EventType::Warning, ending.reason(), message).await;
        }
        tracing::info!(job = %key(&self.job), condition = ending.terminal(), reason = ending.reason(), "job finished");
    }

    /// Creates or deletes pods towards the wanted number; returns the back-off left, if any.
    async fn manage(
        &self,
        shape: &Shape,
        status: &JobStatus,
        active: &mut Vec<Pod>,
    ) -> Result<Option<Duration>, Error> {
        let completed = status::completed_indexes(status, shape);
        let wanted = shape.wanted_active(status.succeeded.unwrap_or(0), &completed, active.len());
        if active.len() > wanted {
            active.sort_by_key(|p| (podtemplate::is_ready(p), std::cmp::Reverse(p.creation_timestamp().map(|t| t.0))));
            let excess: Vec<Pod> = active.drain(..active.len() - wanted).collect();
            self.delete_pods(&excess).await?;
            return Ok(None);
        }
        // With `podReplacementPolicy: Failed` a terminating pod holds its slot until it has
        // failed for good.
        let replace_only_failed = pods::replaces_only_failed(&self.job);
        let waiting: Vec<&Pod> = self.pods.iter().filter(|p| replace_only_failed && pods::is_terminating(p)).collect();
        let missing = wanted.saturating_sub(active.len() + waiting.len());
        if missing == 0 {
            return Ok(None);
        }
        let counted = |p: &&Pod| failurepolicy::judge(&self.job, p) != failurepolicy::Verdict::Ignore;
        let finished: Vec<_> = self
            .pods
            .iter()
            .filter(counted)
            .filter_map(|p| Some((pods::outcome(p, &self.job)?, pods::finish_time(p))))
            .collect();
        let wait = pods::backoff_remaining(&finished, self.now);
        if !wait.is_zero() {
            tracing::debug!(job = %key(&self.job), wait_secs = wait.as_secs(), "backing off before replacing failed pods");
            return Ok(Some(wait));
        }
        let new_indexes: Vec<Option<i32>> = match (shape.indexed, shape.completions) {
            (true, Some(c)) => {
                let running: BTreeSet<i32> = active
                    .iter()
                    .chain(waiting.iter().copied())
                    .filter_map(|p| indexes::of_pod(&p.metadata, c))
                    .collect();
                (0..c).filter(|i| !completed.contains(i) && !running.contains(i)).take(missing).map(Some).collect()
            }
            _ => vec![None; missing],
        };
        for index in new_indexes {
            active.push(self.create_pod(index).await?);
        }
        Ok(None)
    }

    async fn create_pod(&self, index: Option<i32>) -> Result<Pod, Error> {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.job.namespace().unwrap_or_default());
        let pod = pods::new_pod(&self.job, index);
        let created = api
            .create(&PostParams::default(), &pod)
            .await
            .map_err(|source| Error::CreatePod { job: key(&self.job), source })?;
        let name = created.name_any();
        tracing::info!(job = %key(&self.job), pod = %name, "created pod");
        self.event(EventType::Normal, "SuccessfulCreate", format!("Created pod: {name}")).await;
        Ok(created)
    }

    /// Deletes pods the Job no longer wants; their finalizer goes first so that they are not
    /// counted as failures.
    async fn delete_pods(&self, victims: &[Pod]) -> Result<(), Error> {
        for pod in victims {
            release(&self.ctx.client, pod).await?;
            let name = pod.name_any();
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &pod.namespace().unwrap_or_default());
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => continue,
                Err(source) => return Err(Error::DeletePod { job: key(&self.job), pod: name, source }),
            }
            self.event(EventType::Normal, "SuccessfulDelete", format!("Deleted pod: {name}")).await;
        }
        Ok(())
    }

    async fn event(&self, type_: EventType, reason: &str, note: String) {
        // kube's recorder folds events with equal reason and action into one series, whatever
        // their notes; the note as action keeps "Created pod: a" and "Created pod: b" apart
        // while true repeats still fold.
        let action = note.chars().take(128).collect();
        let event = Event { type_, reason: reason.into(), note: Some(note), action, secondary: None };
        if let Err(e) = self.ctx.recorder.publish(&event, &self.job.object_ref(&())).await {
            tracing::debug!(error = %e, job = %key(&self.job), reason, "recording an event");
        }
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn min_some(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
