//! The CronJob controller starts Jobs at schedule times: only the most recent missed one, with
//! the concurrency policy and history limits users set.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Cluster;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn cronjob(name: &str, spec: serde_json::Value) -> CronJob {
    let mut spec = spec;
    spec["jobTemplate"] = json!({"metadata": {"labels": {"made-by": name}}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn job_names(jobs: &Api<Job>) -> Vec<String> {
    let mut names: Vec<String> =
        jobs.list(&ListParams::default()).await.unwrap().iter().map(|j| j.name_any()).collect();
    names.sort();
    names
}

fn minutes(t: Timestamp) -> i64 {
    t.as_second().div_euclid(60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cronjob_behind_schedule_starts_only_its_most_recent_missed_run() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("cron").await;
    let cronjobs: Api<CronJob> = Api::namespaced(cluster.client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &ns);
    cronjobs
        .create(&PostParams::default(), &cronjob("tick", json!({"schedule": "* * * * *", "suspend": true})))
        .await
        .unwrap();
    // Ten minutes behind: the last run was scheduled long ago.
    let behind = Timestamp::now() - SignedDuration::from_mins(10);
    let status = json!({"status": {"lastScheduleTime": behind.strftime("%Y-%m-%dT%H:%M:00Z").to_string()}});
    cronjobs.patch_status("tick", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(job_names(&jobs).await.is_empty(), "a suspended cronjob starts nothing");
    cronjobs.patch("tick", &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspend": false}}))).await.unwrap();
    let names = cluster
        .eventually("a job for the missed run", WAIT, || async {
            let names = job_names(&jobs).await;
            (!names.is_empty()).then_some(names)
        })
        .await;
    let now = minutes(Timestamp::now());
    let expected = [format!("tick-{now}"), format!("tick-{}", now - 1)];
    assert_eq!(names.len(), 1, "missed runs are not replayed one by one: {names:?}");
    assert!(expected.contains(&names[0]), "{} is not the most recent minute", names[0]);
    let job = jobs.get(&names[0]).await.unwrap();
    assert_eq!(job.labels()["made-by"], "tick");
    assert!(job.annotations().contains_key("batch.kubernetes.io/cronjob-scheduled-timestamp"));
    let cj = cluster
        .eventually("status to record the run", WAIT, || async {
            let cj = cronjobs.get("tick").await.unwrap();
            let status = cj.status.clone()?;
            (status.active.as_ref()?.len() == 1).then_some(cj)
        })
        .await;
    let status = cj.status.unwrap();
    let scheduled = status.last_schedule_time.unwrap().0;
    assert_eq!(format!("tick-{}", minutes(scheduled)), names[0]);
    assert_eq!(status.active.unwrap()[0].name.as_deref(), Some(names[0].as_str()));
    let events = cluster
        .eventually("the SuccessfulCreate event", WAIT, || async {
            let events = cluster.events_for(&ns, "tick").await;
            events.iter().any(|(r, _)| r == "SuccessfulCreate").then_some(events)
        })
        .await;
    assert!(events.contains(&("SuccessfulCreate".into(), format!("Created job {}", names[0]))), "{events:?}");
}

/// A controller on a clock the test moves.
struct FakeClock(Arc<Mutex<Timestamp>>);

impl FakeClock {
    fn set(&self, t: Timestamp) {
        *self.0.lock().unwrap() = t;
    }
}

async fn start_on_fake_clock(cluster: &Cluster, start: Timestamp) -> FakeClock {
    let now = Arc::new(Mutex::new(start));
    let read = now.clone();
    let clock: kapal_controllers::cronjob::Clock = Arc::new(move || *read.lock().unwrap());
    let client = cluster.client.clone();
    tokio::spawn(async move { kapal_controllers::cronjob::run_with_clock(client, clock).await });
    FakeClock(now)
}

async fn touch(cronjobs: &Api<CronJob>, name: &str, n: u32) {
    let patch = json!({"metadata": {"annotations": {"test/touch": n.to_string()}}});
    cronjobs.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

async fn complete(jobs: &Api<Job>, name: &str, at: Timestamp) {
    let t = at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let status = json!({"status": {"startTime": t, "completionTime": t, "succeeded": 1, "conditions": [
        {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": t},
        {"type": "Complete", "status": "True", "lastTransitionTime": t}]}});
    jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_policies_and_history_limits_on_a_fake_clock() {
    let cluster = Cluster::server_only().await;
    let ns = cluster.namespace("cron").await;
    let cronjobs: Api<CronJob> = Api::namespaced(cluster.client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &ns);
    let spec = json!({"schedule": "*/5 * * * *", "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 1});
    let created = cronjobs.create(&PostParams::default(), &cronjob("every5", spec)).await.unwrap();
    let t0 = created.creation_timestamp().unwrap().0;
    // The first five-minute boundary after creation, and the ones after it.
    let first = Timestamp::from_second((minutes(t0) / 5 + 1) * 300).unwrap();
    let boundary = |n: i64| first + SignedDuration::from_mins(5 * n);
    let name = |n: i64| format!("every5-{}", minutes(boundary(n)));
    let clock = start_on_fake_clock(&cluster, t0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(job_names(&jobs).await.is_empty(), "nothing before the first schedule time");

    clock.set(boundary(0) + SignedDuration::from_secs(1));
    touch(&cronjobs, "every5", 1).await;
    cluster.eventually("the first job", WAIT, || async { (job_names(&jobs).await == [name(0)]).then_some(()) }).await;

    // Forbid: the next run is skipped while the first job runs.
    clock.set(boundary(1) + SignedDuration::from_secs(1));
    touch(&cronjobs, "every5", 2).await;
    cluster
        .eventually("JobAlreadyActive", WAIT, || async {
            let events = cluster.events_for(&ns, "every5").await;
            events.iter().any(|(r, _)| r == "JobAlreadyActive").then_some(())
        })
        .await;
    assert_eq!(job_names(&jobs).await, [name(0)]);

    // Once it finishes, the still-due run starts, and the success is recorded.
    complete(&jobs, &name(0), boundary(1)).await;
    cluster
        .eventually("the second job", WAIT, || async { (job_names(&jobs).await == [name(0), name(1)]).then_some(()) })
        .await;
    let status = cluster
        .eventually("lastSuccessfulTime", WAIT, || async {
            let status = cronjobs.get("every5").await.unwrap().status?;
            status.last_successful_time.is_some().then_some(status)
        })
        .await;
    assert_eq!(status.last_schedule_time.unwrap().0, boundary(1));

    // History: with a limit of one successful job, the older one goes.
    complete(&jobs, &name(1), boundary(2)).await;
    cluster
        .eventually("the oldest finished job to be deleted", WAIT, || async {
            (job_names(&jobs).await == [name(1)]).then_some(())
        })
        .await;

    // Replace: a running job is deleted for the new run.
    let replace = json!({"spec": {"concurrencyPolicy": "Replace"}});
    cronjobs.patch("every5", &PatchParams::default(), &Patch::Merge(&replace)).await.unwrap();
    clock.set(boundary(2) + SignedDuration::from_secs(1));
    touch(&cronjobs, "every5", 3).await;
    cluster
        .eventually("the third job", WAIT, || async { (job_names(&jobs).await == [name(1), name(2)]).then_some(()) })
        .await;
    clock.set(boundary(3) + SignedDuration::from_secs(1));
    touch(&cronjobs, "every5", 4).await;
    cluster
        .eventually("the running job replaced", WAIT, || async {
            (job_names(&jobs).await == [name(1), name(3)]).then_some(())
        })
        .await;
    let events = cluster.events_for(&ns, "every5").await;
    assert!(events.contains(&("SuccessfulDelete".into(), format!("Deleted job {}", name(2)))), "{events:?}");
    assert!(events.iter().any(|(r, n)| r == "SawCompletedJob" && n.contains(&name(0))), "{events:?}");
}
