//! The node lifecycle and taint eviction controllers: a node whose kubelet goes quiet is marked
//! Unknown and tainted, its pods are marked not ready and evicted when their tolerations run out;
//! condition and cordon taints follow the node.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::api::events::v1::Event;
use kapal_controllers::settings::Settings;
use kapal_controllers::{nodelifecycle, tainteviction};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use common::Cluster;

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const NOT_READY: &str = "node.kubernetes.io/not-ready";
const HEARTBEAT: Duration = Duration::from_millis(300);

fn fast() -> Settings {
    Settings {
        node_monitor_period: Duration::from_millis(200),
        node_monitor_grace_period: Duration::from_secs(2),
        node_startup_grace_period: Duration::from_secs(3),
        ..Settings::default()
    }
}

/// A server with the two node controllers running on fast timings.
async fn cluster() -> (Cluster, Vec<tokio::task::JoinHandle<()>>) {
    let cluster = Cluster::server_only().await;
    let (a, b) = (cluster.client.clone(), cluster.client.clone());
    let tasks = vec![
        tokio::spawn(async move { nodelifecycle::run_with(a, fast()).await.unwrap() }),
        tokio::spawn(async move { tainteviction::run_with(b, fast()).await.unwrap() }),
    ];
    (cluster, tasks)
}

async fn create_pod(client: &Client, ns: &str, name: &str, tolerations: serde_json::Value) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}],
        "tolerations": tolerations}});
    pods.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.unwrap();
}

fn taints(node: &Node) -> Vec<Taint> {
    node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default()
}

fn has_taint(node: &Node, key: &str, effect: &str) -> bool {
    taints(node).iter().any(|t| t.key == key && t.effect == effect)
}

fn node_condition(node: &Node, kind: &str) -> Option<(String, String, String)> {
    let c = node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind)?;
    Some((c.status.clone(), c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
}

fn pod_condition(pod: &Pod, kind: &str) -> Option<(String, String)> {
    let c = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind)?;
    Some((c.status.clone(), c.reason.clone().unwrap_or_default()))
}

async fn events_about(client: &Client, ns: &str, name: &str, reason: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let all = events.list(&ListParams::default()).await.unwrap().items;
    all.into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name) && e.reason.as_deref() == Some(reason)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_node_goes_unknown_and_its_pods_are_evicted_when_their_tolerations_run_out() {
    let (cluster, _tasks) = cluster().await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    cluster.register_node("quiet").await;
    cluster.register_node("steady").await;
    let quiet = cluster.heartbeats("quiet", "True", HEARTBEAT);
    let _steady = cluster.heartbeats("steady", "True", HEARTBEAT);
    let ns = cluster.namespace("apps").await;
    let unreachable = |seconds: Option<i64>| json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}]);
    create_pod(&client, &ns, "brief", unreachable(Some(2))).await;
    create_pod(&client, &ns, "loyal", unreachable(None)).await;
    create_pod(&client, &ns, "defaulted", json!([])).await;
    assert_eq!(cluster.run_pods(&ns, "quiet").await, 3);

    // Heartbeats keep the node healthy well past the grace period.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let node = nodes.get("quiet").await.unwrap();
    assert_eq!(node_condition(&node, "Ready").unwrap().0, "True");
    assert!(taints(&node).is_empty(), "a healthy node is not tainted: {:?}", taints(&node));

    drop(quiet);
    let node = cluster
        .eventually("the quiet node to go Unknown", Duration::from_secs(10), || async {
            let node = nodes.get("quiet").await.unwrap();
            (node_condition(&node, "Ready")?.0 == "Unknown").then_some(node)
        })
        .await;
    let stopped =
        ("Unknown".to_string(), "NodeStatusUnknown".to_string(), "Kubelet stopped posting node status.".into());
    for kind in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(node_condition(&node, kind), Some(stopped.clone()), "{kind}");
    }
    let node = cluster
        .eventually("the unreachable taints", Duration::from_secs(5), || async {
            let node = nodes.get("quiet").await.unwrap();
            (has_taint(&node, UNREACHABLE, "NoExecute") && has_taint(&node, UNREACHABLE, "NoSchedule")).then_some(node)
        })
        .await;
    let no_execute = taints(&node).into_iter().find(|t| t.effect == "NoExecute").unwrap();
    let added = no_execute.time_added.expect("a NoExecute taint carries timeAdded").0;
    let steady = nodes.get("steady").await.unwrap();
    assert!(taints(&steady).is_empty(), "the healthy node stays untainted: {:?}", taints(&steady));

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    cluster
        .eventually("the quiet node's pods to be marked not ready", Duration::from_secs(5), || async {
            let all = pods.list(&ListParams::default()).await.unwrap().items;
            all.iter().all(|p| pod_condition(p, "Ready").is_some_and(|(s, _)| s == "False")).then_some(())
        })
        .await;
    let not_ready = events_about(&client, &ns, "loyal", "NodeNotReady").await;
    assert_eq!(not_ready.first().and_then(|e| e.note.as_deref()), Some("Node is not ready"));
    assert_eq!(not_ready[0].reporting_controller.as_deref(), Some("node-controller"));
    let about_node = events_about(&client, "default", "quiet", "NodeNotReady").await;
    assert_eq!(about_node.first().and_then(|e| e.note.as_deref()), Some("Node quiet status is now: NodeNotReady"));

    let brief = cluster
        .eventually("the briefly tolerating pod to be evicted", Duration::from_secs(10), || async {
            let pod = pods.get("brief").await.unwrap();
            pod.metadata.deletion_timestamp.is_some().then_some(pod)
        })
        .await;
    assert_eq!(pod_condition(&brief, "DisruptionTarget"), Some(("True".into(), "DeletionByTaintManager".into())));
    let marked = events_about(&client, &ns, "brief", "TaintManagerEviction").await;
    let event = marked.first().expect("a TaintManagerEviction event");
    assert_eq!(event.note.as_deref(), Some("Marking for deletion Pod apps/brief"));
    assert_eq!(event.reporting_controller.as_deref(), Some("taint-eviction-controller"));
    let when = event.event_time.as_ref().expect("the event's time").0;
    assert!(when >= added + jiff::SignedDuration::from_secs(2), "evicted at {when}, the taint was added at {added}");

    // The others tolerate the taint for ever or for the default 300 s.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for name in ["loyal", "defaulted"] {
        let pod = pods.get(name).await.unwrap();
        assert!(pod.metadata.deletion_timestamp.is_none(), "{name} must stay");
        assert_eq!(pod_condition(&pod, "DisruptionTarget"), None, "{name}");
    }

    let _back = cluster.heartbeats("quiet", "True", HEARTBEAT);
    cluster
        .eventually("the taints to go once heartbeats resume", Duration::from_secs(10), || async {
            let node = nodes.get("quiet").await.unwrap();
            (node_condition(&node, "Ready")?.0 == "True" && taints(&node).is_empty()).then_some(())
        })
        .await;
    assert!(pods.get("loyal").await.unwrap().metadata.deletion_timestamp.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_posted_status_is_marked_never_updated_after_the_startup_grace() {
    let (cluster, _tasks) = cluster().await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let node = json!({"metadata": {"name": "mute"}});
    nodes.create(&PostParams::default(), &serde_json::from_value(node).unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let early = nodes.get("mute").await.unwrap();
    assert_eq!(node_condition(&early, "Ready"), None, "still within the startup grace period");
    let node = cluster
        .eventually("the mute node to be marked", Duration::from_secs(10), || async {
            let node = nodes.get("mute").await.unwrap();
            node_condition(&node, "Ready").is_some().then_some(node)
        })
        .await;
    let never =
        ("Unknown".to_string(), "NodeStatusNeverUpdated".to_string(), "Kubelet never posted node status.".into());
    for kind in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(node_condition(&node, kind), Some(never.clone()), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_and_cordon_taints_follow_the_node() {
    let (cluster, _tasks) = cluster().await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    for name in ["sick", "busy", "fine"] {
        cluster.register_node(name).await;
    }
    let _sick = cluster.heartbeats("sick", "False", HEARTBEAT);
    let _busy = cluster.heartbeats("busy", "True", HEARTBEAT);
    let _fine = cluster.heartbeats("fine", "True", HEARTBEAT);

    cluster
        .eventually("the not-ready taints on the node reporting Ready=False", Duration::from_secs(5), || async {
            let node = nodes.get("sick").await.unwrap();
            (has_taint(&node, NOT_READY, "NoExecute") && has_taint(&node, NOT_READY, "NoSchedule")).then_some(())
        })
        .await;

    let cordon = json!({"spec": {"unschedulable": true}});
    nodes.patch("busy", &PatchParams::default(), &Patch::Merge(&cordon)).await.unwrap();
    let pressure = json!({"status": {"conditions": [{"type": "MemoryPressure", "status": "True",
        "reason": "KubeletHasInsufficientMemory", "lastHeartbeatTime": jiff::Timestamp::now().to_string()}]}});
    nodes.patch_status("busy", &PatchParams::default(), &Patch::Strategic(&pressure)).await.unwrap();
    cluster
        .eventually("the unschedulable and memory-pressure taints", Duration::from_secs(5), || async {
            let node = nodes.get("busy").await.unwrap();
            (has_taint(&node, "node.kubernetes.io/unschedulable", "NoSchedule")
                && has_taint(&node, "node.kubernetes.io/memory-pressure", "NoSchedule"))
            .then_some(())
        })
        .await;
    let busy = nodes.get("busy").await.unwrap();
    assert!(taints(&busy).iter().all(|t| t.effect == "NoSchedule" && t.time_added.is_none()), "{:?}", taints(&busy));

    let uncordon = json!({"spec": {"unschedulable": false}});
    nodes.patch("busy", &PatchParams::default(), &Patch::Merge(&uncordon)).await.unwrap();
    let relief = json!({"status": {"conditions": [{"type": "MemoryPressure", "status": "False",
        "reason": "KubeletHasSufficientMemory"}]}});
    nodes.patch_status("busy", &PatchParams::default(), &Patch::Strategic(&relief)).await.unwrap();
    cluster
        .eventually("the taints to be removed", Duration::from_secs(5), || async {
            taints(&nodes.get("busy").await.unwrap()).is_empty().then_some(())
        })
        .await;
    assert!(taints(&nodes.get("fine").await.unwrap()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_no_node_is_ready_no_noexecute_taint_is_added() {
    let (cluster, _tasks) = cluster().await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    cluster.register_node("only").await;
    let heartbeats = cluster.heartbeats("only", "True", HEARTBEAT);
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(heartbeats);
    cluster
        .eventually("the NoSchedule unreachable taint", Duration::from_secs(10), || async {
            has_taint(&nodes.get("only").await.unwrap(), UNREACHABLE, "NoSchedule").then_some(())
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!has_taint(&nodes.get("only").await.unwrap(), UNREACHABLE, "NoExecute"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taint_eviction_counts_from_time_added_so_a_restart_does_not_restart_the_clock() {
    let cluster = Cluster::server_only().await;
    let client = cluster.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let added = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(10)).to_string();
    let node = json!({"metadata": {"name": "tainted"}, "spec": {"taints": [
        {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": added},
        {"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}});
    nodes.create(&PostParams::default(), &serde_json::from_value(node).unwrap()).await.unwrap();
    let ns = cluster.namespace("restart").await;
    let tolerate = |seconds: i64| json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}]);
    create_pod(&client, &ns, "overdue", tolerate(5)).await;
    create_pod(&client, &ns, "patient", tolerate(3600)).await;
    cluster.run_pods(&ns, "tainted").await;
    let maintenance = json!({"metadata": {"name": "drained"}, "spec": {"taints": [
        {"key": "example.com/maintenance", "effect": "NoExecute"}]}});
    nodes.create(&PostParams::default(), &serde_json::from_value(maintenance).unwrap()).await.unwrap();
    let other = cluster.namespace("maintenance").await;
    create_pod(&client, &other, "intolerant", json!([])).await;
    create_pod(&client, &other, "tolerant", json!([{"key": "example.com/maintenance", "operator": "Exists"}])).await;
    cluster.run_pods(&other, "drained").await;

    let started = std::time::Instant::now();
    let evictor = client.clone();
    let _task = tokio::spawn(async move { tainteviction::run_with(evictor, fast()).await.unwrap() });
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let others: Api<Pod> = Api::namespaced(client.clone(), &other);
    for (api, name) in [(&pods, "overdue"), (&others, "intolerant")] {
        cluster
            .eventually(&format!("{name} to be evicted at once"), Duration::from_secs(5), || async {
                api.get(name).await.unwrap().metadata.deletion_timestamp.is_some().then_some(())
            })
            .await;
    }
    assert!(started.elapsed() < Duration::from_secs(4), "the deadline was counted from timeAdded");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(pods.get("patient").await.unwrap().metadata.deletion_timestamp.is_none());
    assert!(others.get("tolerant").await.unwrap().metadata.deletion_timestamp.is_none());
    let names: Vec<String> = pods.list(&ListParams::default()).await.unwrap().iter().map(|p| p.name_any()).collect();
    assert_eq!(names.len(), 2, "evicted pods terminate gracefully: {names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_lease_renewals_or_status_heartbeats_alone_keep_a_node_healthy() {
    let (cluster, _tasks) = cluster().await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    cluster.register_node("leased").await;
    cluster.register_node("posting").await;
    cluster.register_node("helper").await;
    let leased = cluster.pulse("leased", "True", HEARTBEAT, false, true);
    let _posting = cluster.pulse("posting", "True", HEARTBEAT, true, false);
    let _helper = cluster.heartbeats("helper", "True", HEARTBEAT);
    tokio::time::sleep(Duration::from_secs(4)).await;
    for name in ["leased", "posting"] {
        let node = nodes.get(name).await.unwrap();
        assert_eq!(node_condition(&node, "Ready").unwrap().0, "True", "{name}");
        assert!(taints(&node).is_empty(), "{name}: {:?}", taints(&node));
    }
    drop(leased);
    cluster
        .eventually("the node whose lease stopped to go Unknown", Duration::from_secs(10), || async {
            (node_condition(&nodes.get("leased").await.unwrap(), "Ready")?.0 == "Unknown").then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_nodes_stay_ready_on_their_lease_renewals() {
    let cluster = Cluster::server_only().await;
    // The simulated kubelet renews its Lease every 10 s and posts its status only once.
    let settings = Settings { node_monitor_grace_period: Duration::from_secs(12), ..fast() };
    let client = cluster.client.clone();
    let _controller = tokio::spawn(async move { nodelifecycle::run_with(client, settings).await.unwrap() });
    let sim = kapal_node::simulate::Simulation { nodes: 2, prefix: "sim".into(), ..Default::default() };
    let _nodes = tokio::spawn(kapal_node::simulate::run(cluster.client.clone(), sim));
    tokio::time::sleep(Duration::from_secs(15)).await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    for name in ["sim-0", "sim-1"] {
        let node = nodes.get(name).await.unwrap();
        assert_eq!(node_condition(&node, "Ready").unwrap().0, "True", "{name}");
        assert!(taints(&node).is_empty(), "{name}: {:?}", taints(&node));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_lost_together_are_tainted_noexecute_one_at_a_time() {
    let cluster = Cluster::server_only().await;
    let settings = Settings { node_eviction_rate: 0.5, ..fast() };
    let client = cluster.client.clone();
    let _controller = tokio::spawn(async move { nodelifecycle::run_with(client, settings).await.unwrap() });
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let names = ["n-0", "n-1", "n-2", "n-3", "n-4"];
    let mut beats = Vec::new();
    for name in names {
        cluster.register_node(name).await;
        beats.push(cluster.heartbeats(name, "True", HEARTBEAT));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Two of five go quiet at once: not a partial disruption, so both are tainted, 2 s apart.
    beats.truncate(3);
    let added = cluster
        .eventually("both quiet nodes to be tainted NoExecute", Duration::from_secs(12), || async {
            let mut added = Vec::new();
            for name in ["n-3", "n-4"] {
                let node = nodes.get(name).await.unwrap();
                let taint = taints(&node).into_iter().find(|t| t.key == UNREACHABLE && t.effect == "NoExecute")?;
                added.push(taint.time_added?.0);
            }
            Some(added)
        })
        .await;
    let apart = added[0].duration_since(added[1]).abs();
    assert!(apart >= jiff::SignedDuration::from_secs(1), "tainted {apart:?} apart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partially_disrupted_small_zone_gets_no_new_noexecute_taints() {
    // A fast eviction rate, so that without the zone rule every quiet node would be tainted.
    let cluster = Cluster::server_only().await;
    let settings = Settings { node_eviction_rate: 100.0, ..fast() };
    let client = cluster.client.clone();
    let _controller = tokio::spawn(async move { nodelifecycle::run_with(client, settings).await.unwrap() });
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let names = ["z-0", "z-1", "z-2", "z-3"];
    let mut beats = Vec::new();
    for name in names {
        cluster.register_node(name).await;
        beats.push(cluster.heartbeats(name, "True", HEARTBEAT));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Three of four go quiet: the zone is partially disrupted (75% >= 55%) and small.
    beats.truncate(1);
    cluster
        .eventually("the three quiet nodes to go unreachable", Duration::from_secs(10), || async {
            for name in &names[1..] {
                if !has_taint(&nodes.get(name).await.unwrap(), UNREACHABLE, "NoSchedule") {
                    return None;
                }
            }
            Some(())
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The first node to be noticed may be tainted while the others still look healthy (1 of 4
    // is no disruption); once the zone counts as disrupted, no further node is.
    let mut tainted = Vec::new();
    for name in &names[1..] {
        let node = nodes.get(name).await.unwrap();
        if has_taint(&node, UNREACHABLE, "NoExecute") {
            tainted.push(name.to_string());
        }
    }
    assert!(tainted.len() <= 1, "tainted NoExecute in a disrupted zone: {tainted:?}");
}
