//! The Job controller runs pods to completion, gives up on failures and deadlines, tracks every
//! finished pod exactly once and cleans up after a TTL.

mod common;

use std::time::Duration;

use common::{Cluster, set_finished};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn create_job(cluster: &Cluster, ns: &str, name: &str, spec: serde_json::Value) -> Api<Job> {
    let mut spec = spec;
    spec["template"] = json!({"metadata": {"labels": {"app": name}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "work", "image": "busybox"}]}});
    let job = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), ns);
    jobs.create(&PostParams::default(), &job).await.unwrap();
    jobs
}

fn condition(job: &Job, kind: &str) -> Option<(String, String)> {
    let c = job.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind && c.status == "True")?;
    Some((c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
}

async fn job_pods(cluster: &Cluster, ns: &str, job: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"))).await.unwrap().items
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

async fn event_reasons(cluster: &Cluster, ns: &str, name: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), ns);
    let list = events.list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

async fn wait_condition(cluster: &Cluster, jobs: &Api<Job>, name: &str, kind: &str) -> Job {
    cluster
        .eventually(&format!("job {name} to get condition {kind}"), WAIT, || async {
            let job = jobs.get(name).await.unwrap();
            condition(&job, kind).map(|_| job)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_run_at_most_parallelism_pods_and_complete_the_job() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("batch").await;
    let jobs = create_job(&cluster, &ns, "five", json!({"completions": 5, "parallelism": 2})).await;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let job = jobs.get("five").await.unwrap();
        if condition(&job, "Complete").is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "job never completed: {:?}", job.status);
        cluster.run_pods(&ns, "node-a").await;
        let pods = job_pods(&cluster, &ns, "five").await;
        let running: Vec<&Pod> = pods.iter().filter(|p| !matches!(phase(p), "Succeeded" | "Failed")).collect();
        assert!(running.len() <= 2, "{} pods running at once with parallelism 2", running.len());
        for pod in running.iter().filter(|p| phase(p) == "Running") {
            set_finished(&api, pod, true).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = jobs.get("five").await.unwrap();
    let status = job.status.clone().unwrap();
    assert_eq!(status.succeeded, Some(5));
    assert_eq!(status.active, Some(0));
    assert!(status.completion_time.is_some() && status.start_time.is_some());
    assert_eq!(
        condition(&job, "Complete"),
        Some(("CompletionsReached".into(), "Reached expected number of succeeded pods".into()))
    );
    assert!(condition(&job, "SuccessCriteriaMet").is_some(), "SuccessCriteriaMet comes with Complete");
    let pods = job_pods(&cluster, &ns, "five").await;
    assert_eq!(pods.len(), 5, "exactly one pod per completion");
    for pod in &pods {
        assert!(pod.finalizers().is_empty(), "{} still holds the tracking finalizer", pod.name_any());
        let labels = pod.labels();
        assert_eq!(labels["job-name"], "five");
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], job.uid().unwrap());
        assert_eq!(labels["app"], "five");
    }
    let events = cluster
        .eventually("the Completed event", WAIT, || async {
            let events = event_reasons(&cluster, &ns, "five").await;
            events.iter().any(|(r, _)| r == "Completed").then_some(events)
        })
        .await;
    let mut created: Vec<&String> = events
        .iter()
        .filter(|(r, n)| r == "SuccessfulCreate" && n.starts_with("Created pod: five-"))
        .map(|(_, n)| n)
        .collect();
    created.dedup();
    assert_eq!(created.len(), 5, "one SuccessfulCreate per pod: {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_beyond_the_backoff_limit_fail_the_job_after_a_backoff() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("batch").await;
    let jobs = create_job(&cluster, &ns, "flaky", json!({"backoffLimit": 1})).await;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let first = cluster
        .eventually("the first pod", WAIT, || async { job_pods(&cluster, &ns, "flaky").await.into_iter().next() })
        .await;
    // The API keeps times to the second, and the back-off counts from the stored finish time, so
    // the bound is the second in which the pod was marked failed.
    let failed_at = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap();
    set_finished(&api, &first, false).await;
    let second = cluster
        .eventually("a replacement pod", WAIT, || async {
            job_pods(&cluster, &ns, "flaky").await.into_iter().find(|p| p.name_any() != first.name_any())
        })
        .await;
    let created = second.creation_timestamp().unwrap().0;
    assert!(
        created.duration_since(failed_at) >= jiff::SignedDuration::from_secs(10),
        "the replacement came {} after the failure, before the 10s back-off",
        created.duration_since(failed_at)
    );
    assert!(condition(&jobs.get("flaky").await.unwrap(), "Failed").is_none(), "one failure is within the limit");
    set_finished(&api, &second, false).await;
    let job = wait_condition(&cluster, &jobs, "flaky", "Failed").await;
    let expected = Some(("BackoffLimitExceeded".into(), "Job has reached the specified backoff limit".into()));
    assert_eq!(condition(&job, "Failed"), expected);
    assert_eq!(condition(&job, "FailureTarget"), expected);
    assert_eq!(job.status.as_ref().unwrap().failed, Some(2));
    assert!(condition(&job, "Complete").is_none());
    let pods = job_pods(&cluster, &ns, "flaky").await;
    assert_eq!(pods.len(), 2, "no pod after the limit");
    cluster
        .eventually("the BackoffLimitExceeded event", WAIT, || async {
            event_reasons(&cluster, &ns, "flaky").await.iter().any(|(r, _)| r == "BackoffLimitExceeded").then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_jobs_run_each_index_once_and_report_completed_indexes() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("batch").await;
    let jobs =
        create_job(&cluster, &ns, "idx", json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}))
            .await;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let pods = cluster
        .eventually("three indexed pods", WAIT, || async {
            let pods = job_pods(&cluster, &ns, "idx").await;
            (pods.len() == 3).then_some(pods)
        })
        .await;
    let mut indexes: Vec<(String, String)> = pods
        .iter()
        .map(|p| {
            let index = p.annotations()["batch.kubernetes.io/job-completion-index"].clone();
            assert_eq!(p.labels()["batch.kubernetes.io/job-completion-index"], index);
            (index, p.spec.as_ref().unwrap().hostname.clone().unwrap())
        })
        .collect();
    indexes.sort();
    assert_eq!(
        indexes,
        [("0", "idx-0"), ("1", "idx-1"), ("2", "idx-2")].map(|(a, b)| (a.to_string(), b.to_string())).to_vec()
    );
    cluster.run_pods(&ns, "node-a").await;
    let by_index = |i: &str| pods.iter().find(|p| p.annotations()["batch.kubernetes.io/job-completion-index"] == i);
    set_finished(&api, by_index("1").unwrap(), true).await;
    cluster
        .eventually("completedIndexes to be 1", WAIT, || async {
            let job = jobs.get("idx").await.unwrap();
            (job.status?.completed_indexes.as_deref() == Some("1")).then_some(())
        })
        .await;
    // A failed index is retried under the same index.
    set_finished(&api, by_index("0").unwrap(), false).await;
    let retry = cluster
        .eventually("a retry of index 0", Duration::from_secs(30), || async {
            job_pods(&cluster, &ns, "idx")
                .await
                .into_iter()
                .find(|p| p.annotations()["batch.kubernetes.io/job-completion-index"] == "0" && phase(p) == "Pending")
        })
        .await;
    cluster.run_pods(&ns, "node-a").await;
    set_finished(&api, &api.get(&retry.name_any()).await.unwrap(), true).await;
    set_finished(&api, by_index("2").unwrap(), true).await;
    let job = wait_condition(&cluster, &jobs, "idx", "Complete").await;
    let status = job.status.unwrap();
    assert_eq!(status.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!((status.succeeded, status.failed), (Some(3), Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_deleted_after_its_ttl() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("batch").await;
    let jobs = create_job(&cluster, &ns, "brief", json!({"ttlSecondsAfterFinished": 2})).await;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let pod = cluster
        .eventually("the pod", WAIT, || async { job_pods(&cluster, &ns, "brief").await.into_iter().next() })
        .await;
    set_finished(&api, &pod, true).await;
    wait_condition(&cluster, &jobs, "brief", "Complete").await;
    assert!(jobs.get_opt("brief").await.unwrap().is_some(), "the job stays for its TTL");
    cluster
        .eventually("the job to be deleted", WAIT, || async {
            jobs.get_opt("brief").await.unwrap().is_none().then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_deadline_ends_the_job_and_stops_its_pods() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("batch").await;
    let jobs = create_job(&cluster, &ns, "slow", json!({"activeDeadlineSeconds": 2})).await;
    cluster.eventually("the pod", WAIT, || async { job_pods(&cluster, &ns, "slow").await.into_iter().next() }).await;
    cluster.run_pods(&ns, "node-a").await;
    let job = wait_condition(&cluster, &jobs, "slow", "FailureTarget").await;
    assert_eq!(condition(&job, "FailureTarget").unwrap().0, "DeadlineExceeded");
    assert!(condition(&job, "Failed").is_none(), "Failed waits for the pods to stop");
    cluster
        .eventually("the pod to be terminating", WAIT, || async {
            let pods = job_pods(&cluster, &ns, "slow").await;
            pods.iter().all(|p| p.metadata.deletion_timestamp.is_some()).then_some(())
        })
        .await;
    cluster.reap_terminating(&ns).await;
    let job = wait_condition(&cluster, &jobs, "slow", "Failed").await;
    assert_eq!(
        condition(&job, "Failed"),
        Some(("DeadlineExceeded".into(), "Job was active longer than specified deadline".into()))
    );
    let status = job.status.unwrap();
    assert_eq!(status.failed.unwrap_or(0), 0, "pods stopped by the controller are not failures");
    assert!(status.completion_time.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_finished_while_the_controller_was_down_are_counted_exactly_once() {
    let mut cluster = Cluster::start().await;
    let ns = cluster.namespace("batch").await;
    let jobs = create_job(&cluster, &ns, "pair", json!({"completions": 2, "parallelism": 2})).await;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    cluster
        .eventually("two pods", WAIT, || async { (job_pods(&cluster, &ns, "pair").await.len() == 2).then_some(()) })
        .await;
    cluster.run_pods(&ns, "node-a").await;
    cluster.stop_controllers();
    let pods = job_pods(&cluster, &ns, "pair").await;
    for pod in &pods {
        set_finished(&api, pod, true).await;
    }
    // A user deletes one finished pod; the tracking finalizer keeps it until it is counted.
    api.delete(&pods[0].name_any(), &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt(&pods[0].name_any()).await.unwrap().is_some(), "the finalizer holds the deleted pod");
    cluster.start_controllers();
    let job = wait_condition(&cluster, &jobs, "pair", "Complete").await;
    let status = job.status.unwrap();
    assert_eq!((status.succeeded, status.failed.unwrap_or(0)), (Some(2), 0));
    cluster
        .eventually("the deleted pod to go once counted", WAIT, || async {
            api.get_opt(&pods[0].name_any()).await.unwrap().is_none().then_some(())
        })
        .await;
    assert_eq!(job_pods(&cluster, &ns, "pair").await.len(), 1, "no extra pod was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_job_runs_nothing_until_resumed() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("batch").await;
    let jobs = create_job(&cluster, &ns, "later", json!({"suspend": true})).await;
    let job = wait_condition(&cluster, &jobs, "later", "Suspended").await;
    assert_eq!(condition(&job, "Suspended").unwrap().0, "JobSuspended");
    assert!(job.status.as_ref().unwrap().start_time.is_none());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(job_pods(&cluster, &ns, "later").await.is_empty(), "a suspended job creates no pods");
    jobs.patch("later", &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspend": false}}))).await.unwrap();
    cluster
        .eventually("a pod after resuming", WAIT, || async {
            (!job_pods(&cluster, &ns, "later").await.is_empty()).then_some(())
        })
        .await;
    // The pod may show before the status that says the job resumed.
    let job = cluster
        .eventually("the job to report it resumed", WAIT, || async {
            let job = jobs.get("later").await.unwrap();
            condition(&job, "Suspended").is_none().then_some(job)
        })
        .await;
    assert!(job.status.unwrap().start_time.is_some());
}

/// Reports a pod failed with `code`, as a kubelet would.
async fn fail_with(api: &Api<Pod>, pod: &Pod, code: i32) {
    let now = jiff::Timestamp::now().to_string();
    let status = json!({"status": {"phase": "Failed", "containerStatuses": [{"name": "work", "image": "busybox",
        "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": code, "reason": "Error", "startedAt": now, "finishedAt": now}}}]}});
    api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_failure_policy_ignores_or_fails_by_exit_code() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("batch").await;
    let policy = json!({"rules": [
        {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}},
        {"action": "FailJob", "onExitCodes": {"containerName": "work", "operator": "In", "values": [42]}}]});
    let jobs = create_job(&cluster, &ns, "picky", json!({"backoffLimit": 6, "podFailurePolicy": policy})).await;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let first = cluster
        .eventually("the first pod", WAIT, || async { job_pods(&cluster, &ns, "picky").await.into_iter().next() })
        .await;
    fail_with(&api, &first, 3).await;
    let second = cluster
        .eventually("a replacement without back-off", Duration::from_secs(5), || async {
            job_pods(&cluster, &ns, "picky").await.into_iter().find(|p| p.name_any() != first.name_any())
        })
        .await;
    let job = jobs.get("picky").await.unwrap();
    assert_eq!(job.status.as_ref().unwrap().failed.unwrap_or(0), 0, "an ignored failure is not counted");
    fail_with(&api, &second, 42).await;
    let job = wait_condition(&cluster, &jobs, "picky", "Failed").await;
    let (reason, message) = condition(&job, "Failed").unwrap();
    assert_eq!(reason, "PodFailurePolicy");
    assert_eq!(
        message,
        format!(
            "Container work for pod {ns}/{} failed with exit code 42 matching FailJob rule at index 1",
            second.name_any()
        )
    );
    assert_eq!(job.status.unwrap().failed, Some(1));
}
