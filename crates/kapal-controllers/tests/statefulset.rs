//! The StatefulSet controller: stable names and storage, ordered creation and scale-down,
//! rolling updates with a partition, history for `kubectl rollout undo`, and restarts.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn web(replicas: i32, extra: Value) -> StatefulSet {
    let mut v = json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "serviceName": "nginx", "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "www"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}
    });
    if let (Value::Object(spec), Value::Object(extra)) = (&mut v["spec"], extra) {
        spec.extend(extra);
    }
    serde_json::from_value(v).unwrap()
}

fn names(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter().map(|p| p.name_any()).collect()
}

fn set_of(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn revision_label(pod: &Pod) -> String {
    pod.labels().get("controller-revision-hash").cloned().unwrap_or_default()
}

async fn all_pods(cluster: &common::Cluster, ns: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    api.list(&ListParams::default()).await.unwrap().items
}

/// Plays the kubelet until `done` holds: finishes deletions and starts pending pods.
async fn drive<F, Fut>(cluster: &common::Cluster, ns: &str, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    cluster
        .eventually(what, WAIT, || {
            let fut = done();
            async move {
                if fut.await {
                    return Some(());
                }
                cluster.reap_terminating(ns).await;
                cluster.run_pods(ns, "node-1").await;
                None
            }
        })
        .await;
}

async fn ready_replicas(api: &Api<StatefulSet>, n: i32) -> bool {
    let set = api.get("web").await.unwrap();
    let status = set.status.unwrap_or_default();
    status.ready_replicas == Some(n)
        && status.replicas == n
        && status.observed_generation == set.metadata.generation
        && status.current_revision == status.update_revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_created_one_at_a_time_in_order_with_their_claims() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("sts-ordered").await;
    let api: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), &ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), &ns);
    let created = api.create(&PostParams::default(), &web(3, json!({}))).await.unwrap();

    let pod = cluster
        .eventually("web-0", WAIT, || async {
            cluster.live_pods(&ns).await.into_iter().find(|p| p.name_any() == "web-0")
        })
        .await;
    let labels = pod.labels();
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-0");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "0");
    assert!(labels["controller-revision-hash"].starts_with("web-"), "{labels:?}");
    let spec = pod.spec.clone().unwrap();
    assert_eq!((spec.hostname.as_deref(), spec.subdomain.as_deref()), (Some("web-0"), Some("nginx")));
    let volume = spec.volumes.unwrap().into_iter().find(|v| v.name == "www").unwrap();
    assert_eq!(volume.persistent_volume_claim.unwrap().claim_name, "www-web-0");
    let claim = claims.get("www-web-0").await.unwrap();
    assert_eq!(claim.labels()["app"], "web");

    // web-1 waits until web-0 is Running and Ready.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(names(&cluster.live_pods(&ns).await), set_of(&["web-0"]));
    assert_eq!(api.get("web").await.unwrap().status.unwrap().ready_replicas, Some(0));

    for (i, expect) in [&["web-0", "web-1"][..], &["web-0", "web-1", "web-2"][..]].into_iter().enumerate() {
        cluster.run_pods(&ns, "node-1").await;
        cluster
            .eventually(&format!("step {i}"), WAIT, || async {
                (names(&cluster.live_pods(&ns).await) == set_of(expect)).then_some(())
            })
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(names(&cluster.live_pods(&ns).await), set_of(expect));
    }
    cluster.run_pods(&ns, "node-1").await;
    cluster.eventually("3 ready replicas", WAIT, || async { ready_replicas(&api, 3).await.then_some(()) }).await;
    let status = api.get("web").await.unwrap().status.unwrap();
    assert_eq!(status.available_replicas, Some(3));
    assert_eq!((status.current_replicas, status.updated_replicas), (Some(3), Some(3)));
    assert_eq!(status.observed_generation, created.metadata.generation);
    let revision = status.update_revision.clone().unwrap();
    assert!(cluster.live_pods(&ns).await.iter().all(|p| revision_label(p) == revision));

    let claim_names: BTreeSet<String> =
        claims.list(&ListParams::default()).await.unwrap().iter().map(|c| c.name_any()).collect();
    assert_eq!(claim_names, set_of(&["www-web-0", "www-web-1", "www-web-2"]));
    let events = cluster.events_for(&ns, "web").await;
    for i in 0..3 {
        let pod = ("SuccessfulCreate".to_string(), format!("create Pod web-{i} in StatefulSet web successful"));
        let claim = (
            "SuccessfulCreate".to_string(),
            format!("create Claim www-web-{i} Pod web-{i} in StatefulSet web success"),
        );
        assert!(events.contains(&pod) && events.contains(&claim), "{events:?}");
    }
    let revisions: Api<ControllerRevision> = Api::namespaced(cluster.client.clone(), &ns);
    let list = revisions.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].name_any(), list[0].revision), (revision, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_removes_the_highest_ordinal_first_and_keeps_claims() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("sts-scale").await;
    let api: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &web(3, json!({}))).await.unwrap();
    drive(&cluster, &ns, "3 ready", || ready_replicas(&api, 3)).await;

    api.patch("web", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 1}}))).await.unwrap();
    let terminating = |pods: Vec<Pod>| -> BTreeSet<String> {
        pods.into_iter().filter(|p| p.metadata.deletion_timestamp.is_some()).map(|p| p.name_any()).collect()
    };
    cluster
        .eventually("web-2 terminating", WAIT, || async {
            (terminating(all_pods(&cluster, &ns).await) == set_of(&["web-2"])).then_some(())
        })
        .await;
    // web-1 stays until web-2 is fully gone.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(terminating(all_pods(&cluster, &ns).await), set_of(&["web-2"]));
    cluster.reap_terminating(&ns).await;
    cluster
        .eventually("web-1 terminating", WAIT, || async {
            (terminating(all_pods(&cluster, &ns).await) == set_of(&["web-1"])).then_some(())
        })
        .await;
    cluster.reap_terminating(&ns).await;
    cluster.eventually("1 ready replica", WAIT, || async { ready_replicas(&api, 1).await.then_some(()) }).await;
    assert_eq!(names(&all_pods(&cluster, &ns).await), set_of(&["web-0"]));
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), &ns);
    assert_eq!(claims.list(&ListParams::default()).await.unwrap().items.len(), 3, "claims are retained by default");
    let events = cluster.events_for(&ns, "web").await;
    let deleted: Vec<&String> = events.iter().filter(|(r, _)| r == "SuccessfulDelete").map(|(_, m)| m).collect();
    assert_eq!(
        deleted,
        ["delete Pod web-2 in StatefulSet web successful", "delete Pod web-1 in StatefulSet web successful"]
    );

    // Scaling back up reuses the kept claims: no new claim events.
    api.patch("web", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 2}}))).await.unwrap();
    drive(&cluster, &ns, "2 ready", || ready_replicas(&api, 2)).await;
    let events = cluster.events_for(&ns, "web").await;
    assert_eq!(events.iter().filter(|(_, m)| m.starts_with("create Claim")).count(), 3, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_creates_at_once_and_when_scaled_delete_removes_claims() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("sts-parallel").await;
    let api: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), &ns);
    let extra = json!({"podManagementPolicy": "Parallel", "ordinals": {"start": 5},
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Delete"}});
    api.create(&PostParams::default(), &web(3, extra)).await.unwrap();
    cluster
        .eventually("3 pods before any is ready", WAIT, || async {
            (names(&cluster.live_pods(&ns).await) == set_of(&["web-5", "web-6", "web-7"])).then_some(())
        })
        .await;
    drive(&cluster, &ns, "3 ready", || ready_replicas(&api, 3)).await;

    api.patch("web", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 1}}))).await.unwrap();
    drive(&cluster, &ns, "1 ready", || ready_replicas(&api, 1)).await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), &ns);
    cluster
        .eventually("the scaled-away claims deleted", WAIT, || async {
            let left: BTreeSet<String> =
                claims.list(&ListParams::default()).await.unwrap().iter().map(|c| c.name_any()).collect();
            (left == set_of(&["www-web-5"])).then_some(())
        })
        .await;
    assert_eq!(names(&cluster.live_pods(&ns).await), set_of(&["web-5"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_honours_the_partition_and_rolls_back_from_history() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("sts-roll").await;
    let api: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let extra = json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}});
    api.create(&PostParams::default(), &web(3, extra)).await.unwrap();
    drive(&cluster, &ns, "3 ready", || ready_replicas(&api, 3)).await;
    let first = api.get("web").await.unwrap().status.unwrap().current_revision.unwrap();

    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:2"}]}}}});
    api.patch("web", &PatchParams::default(), &Patch::Strategic(&image)).await.unwrap();
    let image_of = |p: &Pod| p.spec.as_ref().unwrap().containers[0].image.clone().unwrap_or_default();
    drive(&cluster, &ns, "web-2 updated", || async {
        let s = api.get("web").await.unwrap().status.unwrap_or_default();
        let p = pods.get("web-2").await.ok();
        s.updated_replicas == Some(1) && s.ready_replicas == Some(3) && p.is_some_and(|p| image_of(&p) == "nginx:2")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = api.get("web").await.unwrap().status.unwrap();
    let second = status.update_revision.clone().unwrap();
    assert_ne!(second, first);
    assert_eq!(status.current_revision.as_deref(), Some(first.as_str()), "partitioned: current stays");
    for name in ["web-0", "web-1"] {
        let pod = pods.get(name).await.unwrap();
        assert_eq!((image_of(&pod), revision_label(&pod)), ("nginx:1".to_string(), first.clone()), "{name}");
        assert!(pod.metadata.deletion_timestamp.is_none());
    }
    assert_eq!(revision_label(&pods.get("web-2").await.unwrap()), second);

    // Lifting the partition updates web-1, then web-0: never more than one down at a time.
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ready_replicas(&api, 3).await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for the rollout");
        let all = pods.list(&ListParams::default()).await.unwrap().items;
        let down: Vec<String> = all
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some() || !is_ready(p))
            .map(|p| p.name_any())
            .collect();
        assert!(down.len() <= 1, "more than one pod down at once: {down:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        cluster.reap_terminating(&ns).await;
        cluster.run_pods(&ns, "node-1").await;
    }
    let events = cluster.events_for(&ns, "web").await;
    let deleted: Vec<&String> = events.iter().filter(|(r, _)| r == "SuccessfulDelete").map(|(_, m)| m).collect();
    assert_eq!(
        deleted,
        [
            "delete Pod web-2 in StatefulSet web successful",
            "delete Pod web-1 in StatefulSet web successful",
            "delete Pod web-0 in StatefulSet web successful"
        ]
    );
    let status = api.get("web").await.unwrap().status.unwrap();
    assert_eq!(status.current_revision.as_deref(), Some(second.as_str()));
    assert_eq!((status.current_replicas, status.updated_replicas), (Some(3), Some(3)));

    // `kubectl rollout undo`: apply the first revision's data as a strategic merge patch.
    let revisions: Api<ControllerRevision> = Api::namespaced(cluster.client.clone(), &ns);
    let old = revisions.get(&first).await.unwrap();
    assert_eq!(old.revision, 1);
    assert_eq!(revisions.get(&second).await.unwrap().revision, 2);
    let data = old.data.unwrap().0;
    api.patch("web", &PatchParams::default(), &Patch::Strategic(&data)).await.unwrap();
    drive(&cluster, &ns, "rolled back", || async {
        ready_replicas(&api, 3).await
            && api.get("web").await.unwrap().status.unwrap().update_revision.as_deref() == Some(first.as_str())
    })
    .await;
    assert_eq!(revisions.get(&first).await.unwrap().revision, 3, "a rollback renumbers the old revision");
    assert!(pods.list(&ListParams::default()).await.unwrap().iter().all(|p| image_of(p) == "nginx:1"));
    assert_eq!(revisions.list(&ListParams::default()).await.unwrap().items.len(), 2);
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_rollout_finishes_with_no_duplicate_or_lost_pods() {
    let mut cluster = common::Cluster::start().await;
    let ns = cluster.namespace("sts-restart").await;
    let api: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &web(4, json!({}))).await.unwrap();
    cluster.eventually("web-0", WAIT, || async { (!cluster.live_pods(&ns).await.is_empty()).then_some(()) }).await;
    cluster.run_pods(&ns, "node-1").await;
    cluster.eventually("web-1", WAIT, || async { (cluster.live_pods(&ns).await.len() == 2).then_some(()) }).await;
    cluster.stop_controllers();
    cluster.run_pods(&ns, "node-1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cluster.live_pods(&ns).await.len(), 2, "nothing moves while the controllers are down");
    cluster.start_controllers();
    drive(&cluster, &ns, "4 ready", || ready_replicas(&api, 4)).await;

    // Now mid-update: kill the manager after the first replacement, then let a new one finish.
    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:2"}]}}}});
    api.patch("web", &PatchParams::default(), &Patch::Strategic(&image)).await.unwrap();
    cluster
        .eventually("web-3 replaced", WAIT, || async {
            let all = all_pods(&cluster, &ns).await;
            all.iter().any(|p| p.name_any() == "web-3" && p.metadata.deletion_timestamp.is_some()).then_some(())
        })
        .await;
    cluster.stop_controllers();
    cluster.reap_terminating(&ns).await;
    cluster.start_controllers();
    drive(&cluster, &ns, "updated and ready", || async {
        let s = api.get("web").await.unwrap().status.unwrap_or_default();
        ready_replicas(&api, 4).await && s.updated_replicas == Some(4)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = all_pods(&cluster, &ns).await;
    assert_eq!(names(&all), set_of(&["web-0", "web-1", "web-2", "web-3"]));
    let events = cluster.events_for(&ns, "web").await;
    let creates = events.iter().filter(|(r, m)| r == "SuccessfulCreate" && m.starts_with("create Pod")).count();
    assert_eq!(creates, 8, "4 pods, each replaced once: {events:?}");
}

/// The real kubectl against the test's server.
type Kubectl = std::sync::Arc<dyn Fn(&[&str]) -> (bool, String) + Send + Sync>;

/// Runs kubectl in the background while playing the kubelet, until kubectl exits.
async fn kubectl_while_driving(
    cluster: &common::Cluster,
    ns: &str,
    kubectl: &Kubectl,
    args: &[&str],
) -> (bool, String) {
    let (kubectl, args): (_, Vec<String>) = (kubectl.clone(), args.iter().map(|s| s.to_string()).collect());
    let task = tokio::task::spawn_blocking(move || kubectl(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    while !task.is_finished() {
        cluster.reap_terminating(ns).await;
        cluster.run_pods(ns, "node-1").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    task.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_status_history_and_undo() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("sts-kubectl").await;
    let kubectl: Kubectl = std::sync::Arc::new(cluster.kubectl_command());
    let api: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &web(2, json!({}))).await.unwrap();
    let status = ["-n", &ns, "rollout", "status", "statefulset/web", "--timeout=30s"];
    let (ok, out) = kubectl_while_driving(&cluster, &ns, &kubectl, &status).await;
    assert!(ok, "{out}");
    let first = api.get("web").await.unwrap().status.unwrap().update_revision.unwrap();
    // The API server defaults `rollingUpdate.partition` to 0, so kubectl takes its partitioned
    // branch, as against Kubernetes.
    assert!(out.contains("partitioned roll out complete: 2 new pods have been updated..."), "{out}");

    let (ok, out) = kubectl(&["-n", &ns, "set", "image", "statefulset/web", "nginx=nginx:2"]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl_while_driving(&cluster, &ns, &kubectl, &status).await;
    assert!(ok, "{out}");
    let second = api.get("web").await.unwrap().status.unwrap().update_revision.unwrap();
    assert_ne!(first, second);
    assert!(out.contains("partitioned roll out complete: 2 new pods have been updated..."), "{out}");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    for p in pods.list(&ListParams::default()).await.unwrap() {
        assert_eq!(revision_label(&p), second, "{}", p.name_any());
    }

    let (ok, out) = kubectl(&["-n", &ns, "rollout", "history", "statefulset/web"]);
    assert!(ok, "{out}");
    let revisions: Vec<&str> = out.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revisions, ["1", "2"], "{out}");
    let (ok, out) = kubectl(&["-n", &ns, "rollout", "undo", "statefulset/web"]);
    assert!(ok && out.contains("statefulset.apps/web rolled back"), "{out}");
    let (ok, out) = kubectl_while_driving(&cluster, &ns, &kubectl, &status).await;
    assert!(ok && out.contains("partitioned roll out complete: 2 new pods have been updated..."), "{out}");
    assert_eq!(api.get("web").await.unwrap().status.unwrap().update_revision, Some(first));
    let (ok, out) = kubectl(&["-n", &ns, "get", "statefulset", "web", "--no-headers"]);
    assert!(ok, "{out}");
    assert_eq!(out.split_whitespace().take(2).collect::<Vec<_>>(), ["web", "2/2"], "{out}");
    let images: Vec<String> = cluster
        .live_pods(&ns)
        .await
        .iter()
        .map(|p| p.spec.as_ref().unwrap().containers[0].image.clone().unwrap())
        .collect();
    assert_eq!(images, ["nginx:1", "nginx:1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pod_comes_back_under_its_name_and_claims_can_go_with_the_set() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("sts-failed").await;
    let api: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), &ns);
    let extra = json!({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"}});
    api.create(&PostParams::default(), &web(2, extra)).await.unwrap();
    drive(&cluster, &ns, "2 ready", || ready_replicas(&api, 2)).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let old = pods.get("web-1").await.unwrap();
    common::set_finished(&pods, &old, false).await;
    drive(&cluster, &ns, "web-1 back", || async {
        // Between the failed pod's deletion and its replacement there is no web-1 at all.
        ready_replicas(&api, 2).await && pods.get_opt("web-1").await.unwrap().is_some_and(|p| p.uid() != old.uid())
    })
    .await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), &ns);
    let claim = claims.get("www-web-1").await.unwrap();
    let set_uid = api.get("web").await.unwrap().uid();
    assert!(claim.owner_references().iter().any(|r| Some(&r.uid) == set_uid.as_ref() && r.kind == "StatefulSet"));

    api.delete("web", &Default::default()).await.unwrap();
    cluster
        .eventually("claims deleted with the set", WAIT, || async {
            cluster.reap_terminating(&ns).await;
            claims.list(&ListParams::default()).await.unwrap().items.is_empty().then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_set_comes_up_on_simulated_nodes_with_the_scheduler() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("sts-sim").await;
    let _scheduler = common::AbortOnDrop(tokio::spawn(kapal_scheduler::run(cluster.client.clone())));
    let sim = kapal_node::simulate::Simulation { nodes: 2, prefix: "sim".into(), ..Default::default() };
    let _nodes = common::AbortOnDrop(tokio::spawn(kapal_node::simulate::run(cluster.client.clone(), sim)));
    let api: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &web(3, json!({}))).await.unwrap();
    cluster.eventually("3 ready", WAIT, || async { ready_replicas(&api, 3).await.then_some(()) }).await;
    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:2"}]}}}});
    api.patch("web", &PatchParams::default(), &Patch::Strategic(&image)).await.unwrap();
    cluster
        .eventually("rolled out", WAIT, || async {
            let s = api.get("web").await.unwrap().status?;
            (ready_replicas(&api, 3).await && s.updated_replicas == Some(3)).then_some(())
        })
        .await;
    let live = cluster.live_pods(&ns).await;
    assert_eq!(names(&live), set_of(&["web-0", "web-1", "web-2"]));
    assert!(live.iter().all(|p| p.spec.as_ref().unwrap().node_name.as_deref().is_some_and(|n| n.starts_with("sim-"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_unavailable_replaces_several_pods_at_once_but_no_more() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("sts-maxunavailable").await;
    let api: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let extra = json!({"podManagementPolicy": "Parallel",
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}});
    api.create(&PostParams::default(), &web(4, extra)).await.unwrap();
    drive(&cluster, &ns, "4 ready", || ready_replicas(&api, 4)).await;
    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:2"}]}}}});
    api.patch("web", &PatchParams::default(), &Patch::Strategic(&image)).await.unwrap();
    let terminating = cluster
        .eventually("two pods replaced at once", WAIT, || async {
            let all = pods.list(&ListParams::default()).await.unwrap().items;
            let t: BTreeSet<String> =
                all.iter().filter(|p| p.metadata.deletion_timestamp.is_some()).map(|p| p.name_any()).collect();
            (t.len() == 2).then_some(t)
        })
        .await;
    assert_eq!(terminating, set_of(&["web-2", "web-3"]), "highest ordinals first");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.iter().filter(|p| p.metadata.deletion_timestamp.is_some()).count(), 2, "never more than 2");
    drive(&cluster, &ns, "rolled out", || async {
        let s = api.get("web").await.unwrap().status.unwrap_or_default();
        ready_replicas(&api, 4).await && s.updated_replicas == Some(4)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_ready_seconds_holds_the_next_pod_and_availability() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("sts-minready").await;
    let api: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &web(2, json!({"minReadySeconds": 2}))).await.unwrap();
    cluster.eventually("web-0", WAIT, || async { (!cluster.live_pods(&ns).await.is_empty()).then_some(()) }).await;
    cluster.run_pods(&ns, "node-1").await;
    let ready_at = tokio::time::Instant::now();
    cluster
        .eventually("web-0 ready", WAIT, || async {
            let s = api.get("web").await.unwrap().status?;
            (s.ready_replicas == Some(1)).then_some(())
        })
        .await;
    let status = api.get("web").await.unwrap().status.unwrap();
    assert_eq!(status.available_replicas, Some(0), "ready but not yet available");
    assert_eq!(cluster.live_pods(&ns).await.len(), 1, "web-1 waits for web-0 to be available");
    cluster
        .eventually("web-1 after minReadySeconds", WAIT, || async {
            (cluster.live_pods(&ns).await.len() == 2).then_some(())
        })
        .await;
    // Conditions carry whole seconds, so 2 s may be as little as just over 1 s of wall time.
    assert!(ready_at.elapsed() >= Duration::from_millis(900), "{:?}", ready_at.elapsed());
    cluster
        .eventually("web-0 available", WAIT, || async {
            (api.get("web").await.unwrap().status?.available_replicas == Some(1)).then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_orphans_that_carry_its_names_are_adopted() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("sts-claim").await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let orphan = |name: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1"}]}}))
        .unwrap()
    };
    // web-0 carries one of the set's names and its labels; `stray` only the labels.
    pods.create(&PostParams::default(), &orphan("web-0")).await.unwrap();
    pods.create(&PostParams::default(), &orphan("stray")).await.unwrap();
    let api: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), &ns);
    let set = api.create(&PostParams::default(), &web(1, json!({}))).await.unwrap();
    let uid = set.uid().unwrap();
    let controller = |pod: &Pod| {
        pod.owner_references().iter().find(|r| r.controller == Some(true)).map(|r| (r.kind.clone(), r.uid.clone()))
    };
    cluster
        .eventually("web-0 adopted", WAIT, || async {
            let pod = pods.get("web-0").await.ok()?;
            (controller(&pod) == Some(("StatefulSet".to_string(), uid.clone()))).then_some(())
        })
        .await;
    drive(&cluster, &ns, "1 ready", || ready_replicas(&api, 1)).await;
    assert_eq!(controller(&pods.get("stray").await.unwrap()), None, "a pod without the set's name was adopted");
}
