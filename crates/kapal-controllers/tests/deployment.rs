//! The Deployment controller rolls templates out through ReplicaSets the way `kubectl rollout`
//! users know: within maxSurge/maxUnavailable, with revisions, rollback, pause, history cleanup,
//! progress deadlines, and across a restart of the controller manager.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

use common::Cluster;

const WAIT: Duration = Duration::from_secs(30);
const REVISION: &str = "deployment.kubernetes.io/revision";

fn deployment(name: &str, replicas: i32, strategy: Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "strategy": strategy,
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}
    }))
    .unwrap()
}

fn rolling(surge: Value, unavailable: Value) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

async fn set_image(api: &Api<Deployment>, name: &str, image: &str) {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

async fn patch_spec(api: &Api<Deployment>, name: &str, spec: Value) {
    api.patch(name, &PatchParams::default(), &Patch::Merge(&json!({"spec": spec}))).await.unwrap();
}

fn revision_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> i64 {
    meta.annotations.as_ref().and_then(|a| a.get(REVISION)).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// The Deployment's ReplicaSets, oldest revision first.
async fn sets(cluster: &Cluster, ns: &str) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), ns);
    let mut sets = api.list(&ListParams::default()).await.unwrap().items;
    sets.retain(|rs| rs.metadata.deletion_timestamp.is_none());
    sets.sort_by_key(|rs| revision_of(&rs.metadata));
    sets
}

fn image_of(rs: &ReplicaSet) -> String {
    rs.spec.as_ref().unwrap().template.as_ref().unwrap().spec.as_ref().unwrap().containers[0].image.clone().unwrap()
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().unwrap().replicas.unwrap()
}

fn condition<'a>(d: &'a Deployment, type_: &str) -> Option<&'a DeploymentCondition> {
    d.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// kubectl's `rollout status` verdict for a Deployment: `Ok(true)` when rolled out,
/// `Err(message)` when the deadline passed.
fn rollout_status(d: &Deployment) -> Result<bool, String> {
    let status = d.status.clone().unwrap_or_default();
    if d.metadata.generation > status.observed_generation {
        return Ok(false);
    }
    if let Some(c) = condition(d, "Progressing").filter(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
        return Err(format!("deployment {:?} exceeded its progress deadline: {:?}", d.name_any(), c.message));
    }
    let want = d.spec.as_ref().unwrap().replicas.unwrap();
    let updated = status.updated_replicas.unwrap_or(0);
    Ok(updated >= want && status.replicas.unwrap_or(0) <= updated && status.available_replicas.unwrap_or(0) >= updated)
}

/// Plays scheduler and kubelet until `kubectl rollout status` would say "successfully rolled
/// out", calling `each_step` between steps.
async fn roll_out(cluster: &Cluster, ns: &str, name: &str) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    cluster
        .eventually("the rollout to finish", WAIT, || async {
            cluster.run_pods(ns, "node-1").await;
            cluster.reap_terminating(ns).await;
            let d = api.get(name).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            (rollout_status(&d) == Ok(true)).then_some(d)
        })
        .await
}

/// Watches pods and ReplicaSets until stopped, recording the extremes a user could observe.
struct Sampler {
    stop: Arc<AtomicBool>,
    pods: tokio::task::JoinHandle<Sampled>,
    sets: tokio::task::JoinHandle<usize>,
}

/// What the watches saw.
#[derive(Default)]
struct Sampled {
    /// The largest sum of the ReplicaSets' `spec.replicas` at any moment.
    most_wanted: i32,
    /// The fewest Ready pods (not being deleted) at any moment.
    fewest_ready: usize,
    /// Every pod ever seen, by UID, with its labels (a pod created and deleted at once counts).
    seen: BTreeMap<String, BTreeMap<String, String>>,
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Follows a watch of `api`, keeping the live objects (by UID) current and calling `observe`
/// after every change once the initial list is complete; `on_seen` gets every object.
async fn follow<K>(
    api: Api<K>,
    stop: Arc<AtomicBool>,
    ready: tokio::sync::oneshot::Sender<()>,
    mut on_seen: impl FnMut(&K),
    mut observe: impl FnMut(&BTreeMap<String, K>),
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let mut live: BTreeMap<String, K> = BTreeMap::new();
    let mut buffer: BTreeMap<String, K> = BTreeMap::new();
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
    let mut ready = Some(ready);
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(50), stream.next()).await else { continue };
        let gone = |k: &K| k.meta().deletion_timestamp.is_some();
        match event.unwrap() {
            watcher::Event::Init => buffer.clear(),
            watcher::Event::InitApply(k) => {
                on_seen(&k);
                if !gone(&k) {
                    buffer.insert(k.meta().uid.clone().unwrap(), k);
                }
                continue;
            }
            watcher::Event::InitDone => {
                live = std::mem::take(&mut buffer);
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
            watcher::Event::Apply(k) => {
                on_seen(&k);
                let uid = k.meta().uid.clone().unwrap();
                if gone(&k) {
                    live.remove(&uid);
                } else {
                    live.insert(uid, k);
                }
            }
            watcher::Event::Delete(k) => {
                live.remove(k.meta().uid.as_ref().unwrap());
            }
        }
        if ready.is_none() {
            observe(&live);
        }
    }
}

impl Sampler {
    async fn start(cluster: &Cluster, ns: &str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let (pods_ready, pods_rx) = tokio::sync::oneshot::channel();
        let (sets_ready, sets_rx) = tokio::sync::oneshot::channel();
        let pod_api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
        let flag = stop.clone();
        let pods = tokio::spawn(async move {
            let mut sampled = Sampled { fewest_ready: usize::MAX, ..Sampled::default() };
            let mut seen = BTreeMap::new();
            let mut fewest = usize::MAX;
            follow(
                pod_api,
                flag,
                pods_ready,
                |p: &Pod| {
                    seen.insert(p.uid().unwrap(), p.labels().clone());
                },
                |live| fewest = fewest.min(live.values().filter(|p| is_ready(p)).count()),
            )
            .await;
            sampled.seen = seen;
            sampled.fewest_ready = fewest;
            sampled
        });
        let set_api: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), ns);
        let flag = stop.clone();
        let sets = tokio::spawn(async move {
            let mut most = 0;
            follow(
                set_api,
                flag,
                sets_ready,
                |_| {},
                |live| {
                    most = most.max(live.values().map(spec_replicas).sum::<i32>() as usize);
                },
            )
            .await;
            most
        });
        pods_rx.await.unwrap();
        sets_rx.await.unwrap();
        Sampler { stop, pods, sets }
    }

    async fn finish(self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        let mut sampled = self.pods.await.unwrap();
        sampled.most_wanted = self.sets.await.unwrap() as i32;
        sampled
    }
}

fn has_event(events: &[(String, String)], reason: &str, message: &str) -> bool {
    events.iter().any(|(r, m)| r == reason && m == message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_stays_within_surge_and_unavailability_at_every_step() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("deploy-rolling").await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &deployment("web", 10, rolling(json!(3), json!("25%")))).await.unwrap();
    let d = roll_out(&cluster, &ns, "web").await;

    let first = sets(&cluster, &ns).await;
    assert_eq!(first.len(), 1);
    let v1 = &first[0];
    let hash = v1.labels()["pod-template-hash"].clone();
    assert_eq!(v1.name_any(), format!("web-{hash}"));
    assert_eq!(v1.spec.as_ref().unwrap().selector.match_labels.as_ref().unwrap()["pod-template-hash"], hash);
    assert_eq!(revision_of(&v1.metadata), 1);
    assert_eq!(revision_of(&d.metadata), 1);
    assert!(cluster.live_pods(&ns).await.iter().all(|p| p.labels()["pod-template-hash"] == hash));
    let status = d.status.clone().unwrap();
    assert_eq!(
        (status.replicas, status.updated_replicas, status.ready_replicas, status.available_replicas),
        (Some(10), Some(10), Some(10), Some(10))
    );
    assert_eq!(status.unavailable_replicas, Some(0));
    assert_eq!(status.observed_generation, d.metadata.generation);
    let progressing = condition(&d, "Progressing").unwrap();
    assert_eq!(progressing.reason.as_deref(), Some("NewReplicaSetAvailable"));
    assert_eq!(
        progressing.message.as_deref(),
        Some(format!("ReplicaSet \"web-{hash}\" has successfully progressed.").as_str())
    );
    let available = condition(&d, "Available").unwrap();
    assert_eq!((available.status.as_str(), available.reason.as_deref()), ("True", Some("MinimumReplicasAvailable")));
    assert_eq!(available.message.as_deref(), Some("Deployment has minimum availability."));

    // 10 replicas, maxSurge 3, maxUnavailable 25% -> 2: never more than 13 pods, never fewer
    // than 8 ready.
    let sampler = Sampler::start(&cluster, &ns).await;
    set_image(&api, "web", "busybox:2").await;
    let d = roll_out(&cluster, &ns, "web").await;
    let Sampled { most_wanted, fewest_ready, .. } = sampler.finish().await;
    assert_eq!(most_wanted, 13, "the rollout should use its whole surge and no more");
    assert!(fewest_ready >= 8, "only {fewest_ready} pods ready at one point");

    let all = sets(&cluster, &ns).await;
    assert_eq!(all.len(), 2);
    let (old, new) = (&all[0], &all[1]);
    assert_eq!((spec_replicas(old), spec_replicas(new)), (0, 10));
    assert_eq!(revision_of(&new.metadata), 2);
    assert_eq!(revision_of(&d.metadata), 2);
    assert_eq!(new.annotations()["deployment.kubernetes.io/desired-replicas"], "10");
    assert_eq!(new.annotations()["deployment.kubernetes.io/max-replicas"], "13");
    let live = cluster.live_pods(&ns).await;
    assert_eq!(live.len(), 10);
    assert!(live.iter().all(|p| p.labels()["pod-template-hash"] == new.labels()["pod-template-hash"]));

    let events = cluster.events_for(&ns, "web").await;
    let (old_name, new_name) = (old.name_any(), new.name_any());
    assert!(
        has_event(&events, "ScalingReplicaSet", &format!("Scaled up replica set {old_name} from 0 to 10")),
        "{events:?}"
    );
    assert!(
        has_event(&events, "ScalingReplicaSet", &format!("Scaled up replica set {new_name} from 0 to 3")),
        "{events:?}"
    );
    assert!(
        has_event(&events, "ScalingReplicaSet", &format!("Scaled down replica set {old_name} from 10 to 8")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(_, m)| m.starts_with(&format!("Scaled down replica set {old_name} from")) && m.ends_with(" to 0"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_reuses_the_old_replica_set_with_a_new_revision() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("deploy-undo").await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &deployment("web", 4, rolling(json!(1), json!(1)))).await.unwrap();
    roll_out(&cluster, &ns, "web").await;
    set_image(&api, "web", "busybox:2").await;
    roll_out(&cluster, &ns, "web").await;

    // What `kubectl rollout undo` sends: revision 1's template minus the hash label, and the
    // ReplicaSet's annotations except the controller's own, which keep the Deployment's values.
    let v1 = sets(&cluster, &ns).await.into_iter().find(|rs| revision_of(&rs.metadata) == 1).unwrap();
    let mut template = serde_json::to_value(v1.spec.as_ref().unwrap().template.as_ref().unwrap()).unwrap();
    template["metadata"]["labels"].as_object_mut().unwrap().remove("pod-template-hash");
    let skip = [
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
    ];
    let current = api.get("web").await.unwrap();
    let mut annotations: BTreeMap<String, String> = current
        .annotations()
        .iter()
        .filter(|(k, _)| skip.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.extend(
        v1.annotations().iter().filter(|(k, _)| !skip.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())),
    );
    let undo = json!([{"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations}]);
    api.patch("web", &PatchParams::default(), &Patch::<()>::Json(serde_json::from_value(undo).unwrap())).await.unwrap();
    let d = roll_out(&cluster, &ns, "web").await;

    let all = sets(&cluster, &ns).await;
    assert_eq!(all.len(), 2, "no third ReplicaSet");
    let current = all.iter().find(|rs| rs.uid() == v1.uid()).unwrap();
    assert_eq!(revision_of(&current.metadata), 3);
    assert_eq!(current.annotations()["deployment.kubernetes.io/revision-history"], "1");
    assert_eq!(spec_replicas(current), 4);
    assert_eq!(revision_of(&d.metadata), 3);
    assert!(all.iter().all(|rs| rs.uid() == v1.uid() || spec_replicas(rs) == 0));
    assert!(
        cluster
            .live_pods(&ns)
            .await
            .iter()
            .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("busybox:1"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deployment_scales_but_does_not_roll_out_until_resumed() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("deploy-pause").await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &deployment("web", 2, rolling(json!("25%"), json!("25%")))).await.unwrap();
    roll_out(&cluster, &ns, "web").await;

    patch_spec(&api, "web", json!({"paused": true})).await;
    set_image(&api, "web", "busybox:2").await;
    patch_spec(&api, "web", json!({"replicas": 3})).await;
    let d = cluster
        .eventually("the paused condition", WAIT, || async {
            let d = api.get("web").await.unwrap();
            let c = condition(&d, "Progressing")?;
            let observed = d.status.as_ref()?.observed_generation >= d.metadata.generation;
            (observed && c.reason.as_deref() == Some("DeploymentPaused")).then_some(d)
        })
        .await;
    let c = condition(&d, "Progressing").unwrap();
    assert_eq!((c.status.as_str(), c.message.as_deref()), ("Unknown", Some("Deployment is paused")));
    cluster
        .eventually("the paused deployment scaled to 3", WAIT, || async {
            let all = sets(&cluster, &ns).await;
            (all.len() == 1 && spec_replicas(&all[0]) == 3).then_some(())
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = sets(&cluster, &ns).await;
    assert_eq!(all.len(), 1, "no rollout while paused");
    assert_eq!(image_of(&all[0]), "busybox:1");

    patch_spec(&api, "web", json!({"paused": false})).await;
    let d = roll_out(&cluster, &ns, "web").await;
    let all = sets(&cluster, &ns).await;
    assert_eq!(all.len(), 2);
    assert_eq!((image_of(&all[1]), spec_replicas(&all[1]), spec_replicas(&all[0])), ("busybox:2".into(), 3, 0));
    assert_eq!(condition(&d, "Progressing").unwrap().reason.as_deref(), Some("NewReplicaSetAvailable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_replica_sets_beyond_the_history_limit_are_deleted() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("deploy-history").await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    let mut d = deployment("web", 1, rolling(json!(1), json!(0)));
    d.spec.as_mut().unwrap().revision_history_limit = Some(1);
    api.create(&PostParams::default(), &d).await.unwrap();
    roll_out(&cluster, &ns, "web").await;
    for image in ["busybox:2", "busybox:3", "busybox:4"] {
        set_image(&api, "web", image).await;
        roll_out(&cluster, &ns, "web").await;
    }
    let all = cluster
        .eventually("two replica sets left", WAIT, || async {
            let all = sets(&cluster, &ns).await;
            (all.len() == 2).then_some(all)
        })
        .await;
    let revisions: Vec<_> = all.iter().map(|rs| revision_of(&rs.metadata)).collect();
    assert_eq!(revisions, [3, 4]);
    assert_eq!(image_of(&all[0]), "busybox:3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_stops_every_old_pod_before_starting_new_ones() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("deploy-recreate").await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &deployment("web", 3, json!({"type": "Recreate"}))).await.unwrap();
    roll_out(&cluster, &ns, "web").await;
    set_image(&api, "web", "busybox:2").await;

    cluster
        .eventually("the old pods terminating", WAIT, || async {
            (cluster.live_pods(&ns).await.is_empty()).then_some(())
        })
        .await;
    // The old pods are still shutting down: no new pod may start yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let everything = pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(everything.len(), 3, "only the 3 terminating old pods");
    assert!(everything.iter().all(|p| p.metadata.deletion_timestamp.is_some()));

    let d = roll_out(&cluster, &ns, "web").await;
    let live = cluster.live_pods(&ns).await;
    assert_eq!(live.len(), 3);
    assert!(live.iter().all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("busybox:2")));
    assert_eq!(revision_of(&d.metadata), 2);
    let events = cluster.events_for(&ns, "web").await;
    let old = sets(&cluster, &ns).await[0].name_any();
    assert!(
        has_event(&events, "ScalingReplicaSet", &format!("Scaled down replica set {old} from 3 to 0")),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_rollout_reports_progress_deadline_exceeded() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("deploy-deadline").await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    let mut d = deployment("web", 2, rolling(json!(1), json!(0)));
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(2);
    api.create(&PostParams::default(), &d).await.unwrap();
    // No pod ever starts.
    let d = cluster
        .eventually("the deadline to pass", WAIT, || async {
            let d = api.get("web").await.unwrap();
            rollout_status(&d).is_err().then_some(d)
        })
        .await;
    let rs = sets(&cluster, &ns).await[0].name_any();
    let c = condition(&d, "Progressing").unwrap();
    assert_eq!(c.status, "False");
    assert_eq!(c.message.as_deref(), Some(format!("ReplicaSet \"{rs}\" has timed out progressing.").as_str()));
    let a = condition(&d, "Available").unwrap();
    assert_eq!((a.status.as_str(), a.reason.as_deref()), ("False", Some("MinimumReplicasUnavailable")));
    assert_eq!(a.message.as_deref(), Some("Deployment does not have minimum availability."));

    // Pods that finally start complete the rollout after all.
    let d = roll_out_ignoring_deadline(&cluster, &ns).await;
    assert_eq!(condition(&d, "Progressing").unwrap().reason.as_deref(), Some("NewReplicaSetAvailable"));
}

async fn roll_out_ignoring_deadline(cluster: &Cluster, ns: &str) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    cluster
        .eventually("the late rollout to finish", WAIT, || async {
            cluster.run_pods(ns, "node-1").await;
            let d = api.get("web").await.unwrap();
            let c = condition(&d, "Progressing")?;
            (c.reason.as_deref() == Some("NewReplicaSetAvailable")).then_some(d)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_mid_rollout_spreads_replicas_in_proportion() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("deploy-proportional").await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &deployment("web", 10, rolling(json!(3), json!(2)))).await.unwrap();
    roll_out(&cluster, &ns, "web").await;
    set_image(&api, "web", "busybox:2").await;
    // New pods never become ready: the rollout stops at old 8 + new 5 = 13.
    cluster
        .eventually("the rollout to stall at 8 old and 5 new", WAIT, || async {
            let all = sets(&cluster, &ns).await;
            (all.len() == 2 && spec_replicas(&all[0]) == 8 && spec_replicas(&all[1]) == 5).then_some(())
        })
        .await;
    patch_spec(&api, "web", json!({"replicas": 20})).await;
    // 20 + a surge of 3 = 23 in total, spread by the sizes at max-replicas 13:
    // 8·23/13 → 14 and 5·23/13 → 9.
    let all = cluster
        .eventually("old 14 and new 9", WAIT, || async {
            let all = sets(&cluster, &ns).await;
            (spec_replicas(&all[0]) == 14 && spec_replicas(&all[1]) == 9).then_some(all)
        })
        .await;
    let (old, new) = (all[0].name_any(), all[1].name_any());
    let wanted =
        [format!("Scaled up replica set {old} from 8 to 14"), format!("Scaled up replica set {new} from 5 to 9")];
    cluster
        .eventually("both proportional scaling events", WAIT, || async {
            let events = cluster.events_for(&ns, "web").await;
            wanted.iter().all(|m| has_event(&events, "ScalingReplicaSet", m)).then_some(())
        })
        .await;
    let d = roll_out(&cluster, &ns, "web").await;
    assert_eq!(d.status.unwrap().updated_replicas, Some(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_manager_finishes_a_rollout_without_duplicate_or_lost_pods() {
    let mut cluster = Cluster::start().await;
    let ns = cluster.namespace("deploy-restart").await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &deployment("web", 20, rolling(json!("25%"), json!("25%")))).await.unwrap();
    roll_out(&cluster, &ns, "web").await;

    let sampler = Sampler::start(&cluster, &ns).await;
    set_image(&api, "web", "busybox:2").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let d = loop {
        cluster.stop_controllers();
        cluster.start_controllers();
        tokio::time::sleep(Duration::from_millis(200)).await;
        cluster.run_pods(&ns, "node-1").await;
        cluster.reap_terminating(&ns).await;
        let d = api.get("web").await.unwrap();
        if rollout_status(&d) == Ok(true) {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "the rollout did not finish across restarts");
    };
    let Sampled { most_wanted, fewest_ready, seen } = sampler.finish().await;
    assert!(most_wanted <= 25, "{most_wanted} pods wanted at once");
    assert!(fewest_ready >= 15, "only {fewest_ready} ready at one point");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = sets(&cluster, &ns).await;
    assert_eq!(all.len(), 2);
    let new = &all[1];
    assert_eq!((spec_replicas(&all[0]), spec_replicas(new)), (0, 20));
    let live = cluster.live_pods(&ns).await;
    assert_eq!(live.len(), 20);
    assert!(live.iter().all(|p| p.labels()["pod-template-hash"] == new.labels()["pod-template-hash"]));
    // Every pod of the new template that ever existed is one of the 20: none was created twice.
    let new_hash = &new.labels()["pod-template-hash"];
    let ever = seen.values().filter(|labels| labels.get("pod-template-hash") == Some(new_hash)).count();
    assert_eq!(ever, 20);
    let status = d.status.unwrap();
    assert_eq!((status.replicas, status.updated_replicas, status.available_replicas), (Some(20), Some(20), Some(20)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_restart_replaces_every_pod_through_a_new_revision() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("deploy-restart-annotation").await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &deployment("web", 3, rolling(json!("25%"), json!("25%")))).await.unwrap();
    roll_out(&cluster, &ns, "web").await;
    let before: Vec<String> = cluster.live_pods(&ns).await.iter().map(|p| p.name_any()).collect();

    // What `kubectl rollout restart` sends.
    let at = "2026-11-27T02:00:00Z";
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": at}}}}});
    api.patch("web", &PatchParams::default(), &Patch::Strategic(&patch)).await.unwrap();
    let d = roll_out(&cluster, &ns, "web").await;

    assert_eq!(revision_of(&d.metadata), 2);
    let live = cluster.live_pods(&ns).await;
    assert_eq!(live.len(), 3);
    assert!(live.iter().all(|p| !before.contains(&p.name_any())));
    assert!(live.iter().all(|p| p.annotations()["kubectl.kubernetes.io/restartedAt"] == at));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_deployment_adopts_the_replica_set_its_predecessor_orphaned() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("deploy-adopt").await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    let spec = deployment("web", 3, rolling(json!("25%"), json!("25%")));
    api.create(&PostParams::default(), &spec).await.unwrap();
    roll_out(&cluster, &ns, "web").await;
    let pods_before: Vec<String> = cluster.live_pods(&ns).await.iter().map(|p| p.name_any()).collect();
    let rs_before = sets(&cluster, &ns).await.remove(0);

    // `kubectl delete deployment web --cascade=orphan`
    api.delete("web", &kube::api::DeleteParams::orphan()).await.unwrap();
    cluster
        .eventually("the replica set orphaned", WAIT, || async {
            let gone = api.get_opt("web").await.unwrap().is_none();
            let all = sets(&cluster, &ns).await;
            (gone && all.len() == 1 && all[0].owner_references().is_empty()).then_some(())
        })
        .await;

    let d = api.create(&PostParams::default(), &spec).await.unwrap();
    cluster
        .eventually("the orphan adopted", WAIT, || async {
            let all = sets(&cluster, &ns).await;
            let adopted = all.len() == 1 && all[0].owner_references().iter().any(|r| Some(&r.uid) == d.uid().as_ref());
            let status = api.get("web").await.unwrap();
            (adopted && rollout_status(&status) == Ok(true)).then_some(())
        })
        .await;
    let all = sets(&cluster, &ns).await;
    assert_eq!(all.len(), 1, "no new replica set");
    assert_eq!(all[0].uid(), rs_before.uid());
    let mut pods_after: Vec<String> = cluster.live_pods(&ns).await.iter().map(|p| p.name_any()).collect();
    pods_after.sort();
    let mut pods_before = pods_before;
    pods_before.sort();
    assert_eq!(pods_after, pods_before, "the same pods keep running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_collision_raises_the_collision_count_and_picks_another_hash() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("deploy-collision").await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    // Paused, the Deployment creates no ReplicaSet yet; its stored (defaulted) template gives
    // the name the controller will want.
    let mut spec = deployment("web", 2, rolling(json!("25%"), json!("25%")));
    spec.spec.as_mut().unwrap().paused = Some(true);
    let d = api.create(&PostParams::default(), &spec).await.unwrap();
    let template = d.spec.as_ref().unwrap().template.clone();
    let taken = format!("web-{}", kapal_controllers::deployment::compute_hash(&template, None));
    let squatter: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": taken, "labels": {"app": "other"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "other"}},
            "template": {"metadata": {"labels": {"app": "other"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}
    }))
    .unwrap();
    let sets_api: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), &ns);
    sets_api.create(&PostParams::default(), &squatter).await.unwrap();

    patch_spec(&api, "web", json!({"paused": false})).await;
    let d = roll_out(&cluster, &ns, "web").await;
    assert_eq!(d.status.as_ref().unwrap().collision_count, Some(1));
    let ours: Vec<ReplicaSet> = sets(&cluster, &ns)
        .await
        .into_iter()
        .filter(|rs| rs.owner_references().iter().any(|r| Some(&r.uid) == d.uid().as_ref()))
        .collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].name_any(), format!("web-{}", kapal_controllers::deployment::compute_hash(&template, Some(1))));
    assert_eq!(spec_replicas(&sets_api.get(&taken).await.unwrap()), 0, "the squatter is left alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_that_cannot_create_pods_shows_on_the_deployment() {
    use k8s_openapi::api::core::v1::ResourceQuota;
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("deploy-quota").await;
    let quotas: Api<ResourceQuota> = Api::namespaced(cluster.client.clone(), &ns);
    let quota = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}});
    quotas.create(&PostParams::default(), &serde_json::from_value(quota).unwrap()).await.unwrap();
    let status = json!({"status": {"hard": {"pods": "1"}, "used": {"pods": "0"}}});
    quotas.patch_status("q", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();

    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &deployment("web", 2, rolling(json!("25%"), json!("25%")))).await.unwrap();
    let failure = cluster
        .eventually("the ReplicaFailure condition on the deployment", WAIT, || async {
            condition(&api.get("web").await.unwrap(), "ReplicaFailure").cloned()
        })
        .await;
    assert_eq!((failure.status.as_str(), failure.reason.as_deref()), ("True", Some("FailedCreate")));
    assert!(failure.message.unwrap().contains("exceeded quota: q"));
}
