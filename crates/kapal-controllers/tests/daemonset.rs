//! The DaemonSet controller: one pod per eligible node as nodes come, go, get labelled and
//! tainted; rolling updates within maxUnavailable/maxSurge; status; restarts.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn agent(extra: Value) -> DaemonSet {
    let mut v = json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "agent", "image": "agent:1"}]}}}
    });
    if let (Value::Object(spec), Value::Object(extra)) = (&mut v["spec"], extra) {
        spec.extend(extra);
    }
    serde_json::from_value(v).unwrap()
}

/// Live pods by the node they are pinned to.
async fn pods_by_node(cluster: &common::Cluster, ns: &str) -> BTreeMap<String, Vec<Pod>> {
    let mut map: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for pod in cluster.live_pods(ns).await {
        map.entry(pinned_node(&pod)).or_default().push(pod);
    }
    map
}

fn pinned_node(pod: &Pod) -> String {
    let spec = pod.spec.as_ref().unwrap();
    let term = &spec
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .node_selector_terms[0];
    let field = &term.match_fields.as_ref().unwrap()[0];
    assert_eq!((field.key.as_str(), field.operator.as_str()), ("metadata.name", "In"));
    field.values.as_ref().unwrap()[0].clone()
}

fn nodes_of(map: &BTreeMap<String, Vec<Pod>>) -> BTreeSet<String> {
    map.keys().cloned().collect()
}

fn set_of(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn on_nodes(cluster: &common::Cluster, ns: &str, nodes: &[&str]) {
    cluster
        .eventually(&format!("one pod on each of {nodes:?}"), WAIT, || async {
            let map = pods_by_node(cluster, ns).await;
            (nodes_of(&map) == set_of(nodes) && map.values().all(|p| p.len() == 1)).then_some(())
        })
        .await;
}

async fn patch_node(cluster: &common::Cluster, name: &str, patch: Value) {
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    nodes.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// Nodes that report Ready for the whole test (heartbeats keep the lifecycle controller away).
async fn nodes(cluster: &common::Cluster, names: &[&str]) -> Vec<common::Heartbeats> {
    let mut beats = Vec::new();
    for name in names {
        cluster.register_node(name).await;
        beats.push(cluster.heartbeats(name, "True", Duration::from_secs(2)));
    }
    beats
}

/// The status once it has caught up with `desired` nodes all updated and available.
async fn settled(api: &Api<DaemonSet>, desired: i32) -> bool {
    let ds = api.get("agent").await.unwrap();
    let Some(s) = ds.status else { return false };
    s.observed_generation == ds.metadata.generation
        && s.desired_number_scheduled == desired
        && s.current_number_scheduled == desired
        && s.number_ready == desired
        && s.updated_number_scheduled == Some(desired)
        && s.number_available == Some(desired)
        && s.number_misscheduled == 0
}

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
                cluster.run_pinned_pods(ns).await;
                None
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pod_per_node_follows_nodes_labels_and_taints() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("ds-nodes").await;
    let _beats = nodes(&cluster, &["n1", "n2"]).await;
    let api: Api<DaemonSet> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &agent(json!({}))).await.unwrap();
    on_nodes(&cluster, &ns, &["n1", "n2"]).await;
    let pod = cluster.live_pods(&ns).await.remove(0);
    assert!(pod.name_any().starts_with("agent-"));
    assert!(pod.spec.as_ref().unwrap().node_name.is_none(), "left to the scheduler to bind");
    let tolerations = pod.spec.as_ref().unwrap().tolerations.clone().unwrap();
    for (key, effect) in
        [("node.kubernetes.io/unreachable", "NoExecute"), ("node.kubernetes.io/unschedulable", "NoSchedule")]
    {
        assert!(
            tolerations.iter().any(|t| t.key.as_deref() == Some(key)
                && t.effect.as_deref() == Some(effect)
                && t.operator.as_deref() == Some("Exists")
                && t.toleration_seconds.is_none()),
            "{key}: {tolerations:?}"
        );
    }
    assert!(pod.labels().contains_key("controller-revision-hash"));
    assert_eq!(pod.labels()["pod-template-generation"], "1");
    drive(&cluster, &ns, "2 available", || settled(&api, 2)).await;
    let status = api.get("agent").await.unwrap().status.unwrap();
    assert_eq!(status.number_unavailable, Some(0));

    // A new node gets a pod; a cordoned one keeps its pod.
    let _more = nodes(&cluster, &["n3"]).await;
    on_nodes(&cluster, &ns, &["n1", "n2", "n3"]).await;
    patch_node(
        &cluster,
        "n3",
        json!({"spec": {"unschedulable": true,
        "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}),
    )
    .await;
    drive(&cluster, &ns, "3 available", || settled(&api, 3)).await;

    // A NoExecute taint evicts; a NoSchedule taint keeps the pod but it is no longer desired.
    patch_node(
        &cluster,
        "n2",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoExecute"}]}}),
    )
    .await;
    on_nodes(&cluster, &ns, &["n1", "n3"]).await;
    patch_node(
        &cluster,
        "n1",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
    )
    .await;
    cluster
        .eventually("n1 misscheduled", WAIT, || async {
            let s = api.get("agent").await.unwrap().status?;
            (s.desired_number_scheduled == 1 && s.number_misscheduled == 1).then_some(())
        })
        .await;
    on_nodes(&cluster, &ns, &["n1", "n3"]).await;

    // A removed node's pod goes.
    let node_api: Api<Node> = Api::all(cluster.client.clone());
    node_api.delete("n3", &DeleteParams::default()).await.unwrap();
    on_nodes(&cluster, &ns, &["n1"]).await;
    let events = cluster.events_for(&ns, "agent").await;
    assert_eq!(
        events.iter().filter(|(r, m)| r == "SuccessfulCreate" && m.starts_with("Created pod: agent-")).count(),
        3
    );
    assert!(events.iter().any(|(r, m)| r == "SuccessfulDelete" && m.starts_with("Deleted pod: agent-")), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selector_picks_labelled_nodes() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("ds-select").await;
    let _beats = nodes(&cluster, &["n1", "n2", "n3"]).await;
    patch_node(&cluster, "n1", json!({"metadata": {"labels": {"role": "edge"}}})).await;
    let api: Api<DaemonSet> = Api::namespaced(cluster.client.clone(), &ns);
    let extra = json!({"template": {"metadata": {"labels": {"app": "agent"}},
        "spec": {"nodeSelector": {"role": "edge"}, "containers": [{"name": "agent", "image": "agent:1"}]}}});
    api.create(&PostParams::default(), &agent(extra)).await.unwrap();
    on_nodes(&cluster, &ns, &["n1"]).await;
    patch_node(&cluster, "n3", json!({"metadata": {"labels": {"role": "edge"}}})).await;
    on_nodes(&cluster, &ns, &["n1", "n3"]).await;
    patch_node(&cluster, "n1", json!({"metadata": {"labels": {"role": null}}})).await;
    on_nodes(&cluster, &ns, &["n3"]).await;
    drive(&cluster, &ns, "1 available", || settled(&api, 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_replaces_one_node_at_a_time_and_rolls_back() {
    let mut cluster = common::Cluster::start().await;
    let ns = cluster.namespace("ds-roll").await;
    let _beats = nodes(&cluster, &["n1", "n2", "n3"]).await;
    let api: Api<DaemonSet> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &agent(json!({}))).await.unwrap();
    drive(&cluster, &ns, "3 available", || settled(&api, 3)).await;
    let first_hash = cluster.live_pods(&ns).await[0].labels()["controller-revision-hash"].clone();

    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "agent:2"}]}}}});
    api.patch("agent", &PatchParams::default(), &Patch::Strategic(&image)).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let mut restarted = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !settled(&api, 3).await
        || cluster.live_pods(&ns).await.iter().any(|p| p.labels()["controller-revision-hash"] == first_hash)
    {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for the rollout");
        let all = pods.list(&ListParams::default()).await.unwrap().items;
        let down = all.iter().filter(|p| p.metadata.deletion_timestamp.is_some() || !ready(p)).count();
        assert!(down <= 1, "maxUnavailable 1 exceeded: {down} pods down");
        let updated = all.iter().filter(|p| p.labels()["controller-revision-hash"] != first_hash).count();
        if updated == 1 && !restarted {
            // Kill the manager mid-rollout: a new one must finish it without duplicates.
            cluster.stop_controllers();
            cluster.start_controllers();
            restarted = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        cluster.reap_terminating(&ns).await;
        cluster.run_pinned_pods(&ns).await;
    }
    assert!(restarted);
    let map = pods_by_node(&cluster, &ns).await;
    assert_eq!(nodes_of(&map), set_of(&["n1", "n2", "n3"]));
    assert!(map.values().all(|p| p.len() == 1));
    assert!(map.values().flatten().all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("agent:2")));
    assert!(map.values().flatten().all(|p| p.labels()["pod-template-generation"] == "2"));

    let revisions: Api<ControllerRevision> = Api::namespaced(cluster.client.clone(), &ns);
    let mut list = revisions.list(&ListParams::default()).await.unwrap().items;
    list.sort_by_key(|r| r.revision);
    assert_eq!(list.iter().map(|r| r.revision).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(list[0].name_any(), format!("agent-{first_hash}"));
    assert_eq!(list[0].labels()["app"], "agent", "kubectl finds revisions by the selector");

    // `kubectl rollout undo daemonset/agent`.
    let data = list[0].data.clone().unwrap().0;
    api.patch("agent", &PatchParams::default(), &Patch::Strategic(&data)).await.unwrap();
    drive(&cluster, &ns, "rolled back", || async {
        settled(&api, 3).await
            && cluster.live_pods(&ns).await.iter().all(|p| p.labels()["controller-revision-hash"] == first_hash)
    })
    .await;
    assert_eq!(revisions.get(&list[0].name_any()).await.unwrap().revision, 3);
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_surge_starts_the_new_pod_before_stopping_the_old() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("ds-surge").await;
    let _beats = nodes(&cluster, &["n1", "n2"]).await;
    let api: Api<DaemonSet> = Api::namespaced(cluster.client.clone(), &ns);
    let extra =
        json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}});
    api.create(&PostParams::default(), &agent(extra)).await.unwrap();
    drive(&cluster, &ns, "2 available", || settled(&api, 2)).await;

    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "agent:2"}]}}}});
    api.patch("agent", &PatchParams::default(), &Patch::Strategic(&image)).await.unwrap();
    let surged = cluster
        .eventually("a surge pod", WAIT, || async {
            let map = pods_by_node(&cluster, &ns).await;
            map.into_iter().find(|(_, p)| p.len() == 2)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let map = pods_by_node(&cluster, &ns).await;
    assert_eq!(map.values().map(Vec::len).sum::<usize>(), 3, "one surge pod, no old pod stopped yet: {map:?}");
    assert_eq!(map[&surged.0].len(), 2);
    drive(&cluster, &ns, "surge rollout done", || async {
        settled(&api, 2).await && pods_by_node(&cluster, &ns).await.values().all(|p| p.len() == 1)
    })
    .await;
    let status = api.get("agent").await.unwrap().status.unwrap();
    assert_eq!(status.updated_number_scheduled, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_status_get_history_and_undo() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("ds-kubectl").await;
    let _beats = nodes(&cluster, &["n1", "n2"]).await;
    let kubectl = std::sync::Arc::new(cluster.kubectl_command());
    let api: Api<DaemonSet> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &agent(json!({}))).await.unwrap();
    let run = |args: Vec<String>| {
        let kubectl = kubectl.clone();
        tokio::task::spawn_blocking(move || kubectl(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let status: Vec<String> =
        ["-n", &ns, "rollout", "status", "daemonset/agent", "--timeout=30s"].iter().map(|s| s.to_string()).collect();
    for step in ["created", "updated", "rolled back"] {
        let task = run(status.clone());
        while !task.is_finished() {
            cluster.reap_terminating(&ns).await;
            cluster.run_pinned_pods(&ns).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (ok, out) = task.await.unwrap();
        assert!(ok && out.contains("daemon set \"agent\" successfully rolled out"), "{step}: {out}");
        let (ok, out) = kubectl(&["-n", &ns, "get", "daemonset", "agent", "--no-headers"]);
        assert!(ok, "{out}");
        assert_eq!(
            out.split_whitespace().take(7).collect::<Vec<_>>(),
            ["agent", "2", "2", "2", "2", "2", "<none>"],
            "{step}: {out}"
        );
        let images: BTreeSet<String> = cluster
            .live_pods(&ns)
            .await
            .iter()
            .map(|p| p.spec.as_ref().unwrap().containers[0].image.clone().unwrap())
            .collect();
        let expected = if step == "updated" { "agent:2" } else { "agent:1" };
        assert_eq!(images, set_of(&[expected]), "{step}");
        match step {
            "created" => {
                let (ok, out) = kubectl(&["-n", &ns, "set", "image", "daemonset/agent", "agent=agent:2"]);
                assert!(ok, "{out}");
            }
            "updated" => {
                let (ok, out) = kubectl(&["-n", &ns, "rollout", "history", "daemonset/agent"]);
                assert!(ok, "{out}");
                let revisions: Vec<&str> = out.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
                assert_eq!(revisions, ["1", "2"], "{out}");
                let (ok, out) = kubectl(&["-n", &ns, "rollout", "undo", "daemonset/agent"]);
                assert!(ok && out.contains("daemonset.apps/agent rolled back"), "{out}");
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_daemon_pod_is_replaced() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("ds-failed").await;
    let _beats = nodes(&cluster, &["n1"]).await;
    let api: Api<DaemonSet> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &agent(json!({}))).await.unwrap();
    drive(&cluster, &ns, "1 available", || settled(&api, 1)).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let failed = cluster.live_pods(&ns).await.remove(0);
    common::set_finished(&pods, &failed, false).await;
    drive(&cluster, &ns, "a replacement", || async {
        let live = cluster.live_pods(&ns).await;
        settled(&api, 1).await && live.len() == 1 && live[0].name_any() != failed.name_any()
    })
    .await;
    let events = cluster.events_for(&ns, "agent").await;
    let message = format!("Found failed daemon pod {ns}/{} on node n1, will try to kill it", failed.name_any());
    assert!(events.contains(&("FailedDaemonPod".into(), message)), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_places_daemon_pods_on_simulated_nodes() {
    let cluster = common::Cluster::start().await;
    let ns = cluster.namespace("ds-sim").await;
    let _scheduler = common::AbortOnDrop(tokio::spawn(kapal_scheduler::run(cluster.client.clone())));
    let sim = kapal_node::simulate::Simulation { nodes: 3, prefix: "sim".into(), ..Default::default() };
    let _nodes = common::AbortOnDrop(tokio::spawn(kapal_node::simulate::run(cluster.client.clone(), sim)));
    let api: Api<DaemonSet> = Api::namespaced(cluster.client.clone(), &ns);
    api.create(&PostParams::default(), &agent(json!({}))).await.unwrap();
    cluster.eventually("3 available on simulated nodes", WAIT, || async { settled(&api, 3).await.then_some(()) }).await;
    let bound: BTreeSet<String> = cluster
        .live_pods(&ns)
        .await
        .iter()
        .map(|p| {
            let node = p.spec.as_ref().unwrap().node_name.clone().unwrap();
            assert_eq!(node, pinned_node(p), "bound where it was pinned");
            node
        })
        .collect();
    assert_eq!(bound, set_of(&["sim-0", "sim-1", "sim-2"]));

    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "agent:2"}]}}}});
    api.patch("agent", &PatchParams::default(), &Patch::Strategic(&image)).await.unwrap();
    cluster
        .eventually("rolled out on simulated nodes", WAIT, || async {
            let live = cluster.live_pods(&ns).await;
            let done = settled(&api, 3).await
                && live.len() == 3
                && live.iter().all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("agent:2"));
            done.then_some(())
        })
        .await;
}
