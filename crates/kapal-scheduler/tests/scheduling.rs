//! The scheduler against an in-process API server: what a user sees with kubectl.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{cluster, start_scheduler, wait, wait_for};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_spread_over_nodes_and_are_bound_with_a_scheduled_event() {
    let c = cluster().await;
    for n in ["n1", "n2", "n3"] {
        c.node(n, "4", json!({}), json!([])).await;
    }
    let _s = start_scheduler(&c.client);
    for i in 0..6 {
        c.pod(&format!("p{i}"), "1", json!({}), json!({})).await;
    }
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for i in 0..6 {
        *per_node.entry(c.bound(&format!("p{i}")).await).or_default() += 1;
    }
    assert_eq!(per_node.len(), 3, "LeastAllocated spreads: {per_node:?}");
    assert!(per_node.values().all(|n| *n == 2), "{per_node:?}");

    let node = c.node_of("p0").await.unwrap();
    let e = wait_for("Scheduled event", || async {
        c.events_of("p0").await.into_iter().find(|e| e.reason.as_deref() == Some("Scheduled"))
    })
    .await;
    assert_eq!(e.type_.as_deref(), Some("Normal"));
    assert_eq!(e.message.as_deref(), Some(format!("Successfully assigned default/p0 to {node}").as_str()));
    assert_eq!(e.reporting_component.as_deref(), Some("default-scheduler"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_fits_nowhere_says_why_and_binds_once_a_node_is_added() {
    let c = cluster().await;
    for n in ["small-1", "small-2", "small-3"] {
        c.node(n, "1", json!({}), json!([])).await;
    }
    let _s = start_scheduler(&c.client);
    c.pod("big", "2", json!({}), json!({})).await;
    let (reason, message) = c.unschedulable("big").await;
    assert_eq!(reason, "Unschedulable");
    // Upstream's text, including what preemption (PostFilter) found.
    let expected = "0/3 nodes are available: 3 Insufficient cpu. \
                    preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
    assert_eq!(message, expected);
    wait("FailedScheduling event", || async {
        c.events_of("big").await.iter().any(|e| {
            e.reason.as_deref() == Some("FailedScheduling")
                && e.type_.as_deref() == Some("Warning")
                && e.message.as_deref() == Some(expected)
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.node_of("big").await, None);

    c.node("large", "4", json!({}), json!([])).await;
    assert_eq!(c.bound("big").await, "large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_frees_room_for_a_waiting_one() {
    let c = cluster().await;
    c.node("only", "2", json!({}), json!([])).await;
    let _s = start_scheduler(&c.client);
    c.pod("a", "1", json!({}), json!({})).await;
    c.pod("b", "1", json!({}), json!({})).await;
    c.bound("a").await;
    c.bound("b").await;
    c.pod("c", "1", json!({}), json!({})).await;
    let (_, message) = c.unschedulable("c").await;
    assert_eq!(
        message,
        "0/1 nodes are available: 1 Insufficient cpu. \
         preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
    );
    c.pods().delete("a", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    assert_eq!(c.bound("c").await, "only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taints_repel_pods_without_a_matching_toleration() {
    let c = cluster().await;
    c.node("gpu", "4", json!({"kind": "gpu"}), json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]))
        .await;
    c.node("plain", "4", json!({}), json!([])).await;
    let _s = start_scheduler(&c.client);
    c.pod("anywhere", "100m", json!({}), json!({})).await;
    c.pod(
        "tolerant",
        "100m",
        json!({}),
        json!({"nodeSelector": {"kind": "gpu"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}),
    )
    .await;
    c.pod("intolerant", "100m", json!({}), json!({"nodeSelector": {"kind": "gpu"}})).await;
    assert_eq!(c.bound("anywhere").await, "plain");
    assert_eq!(c.bound("tolerant").await, "gpu");
    let (_, message) = c.unschedulable("intolerant").await;
    assert_eq!(
        message,
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) had untolerated taint {dedicated: gpu}. \
         preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_affinity_required_and_preferred() {
    let c = cluster().await;
    for z in ["a", "b", "c"] {
        c.node(&format!("node-{z}"), "4", json!({"topology.kubernetes.io/zone": z}), json!([])).await;
    }
    let _s = start_scheduler(&c.client);
    let required = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["b"]}]}]}}}});
    let preferred = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["c"]}]}}]}}});
    let impossible = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["mars"]}]}]}}}});
    for i in 0..3 {
        c.pod(&format!("req-{i}"), "100m", json!({}), required.clone()).await;
        c.pod(&format!("pref-{i}"), "100m", json!({}), preferred.clone()).await;
    }
    c.pod("nowhere", "100m", json!({}), impossible).await;
    for i in 0..3 {
        assert_eq!(c.bound(&format!("req-{i}")).await, "node-b");
        assert_eq!(c.bound(&format!("pref-{i}")).await, "node-c");
    }
    let (_, message) = c.unschedulable("nowhere").await;
    assert_eq!(
        message,
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_anti_affinity_puts_one_replica_per_node() {
    let c = cluster().await;
    for n in ["n1", "n2", "n3"] {
        c.node(n, "4", json!({}), json!([])).await;
    }
    let _s = start_scheduler(&c.client);
    let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    for i in 0..4 {
        c.pod(&format!("web-{i}"), "100m", json!({"app": "web"}), anti.clone()).await;
    }
    let mut nodes = HashSet::new();
    let mut pending = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait("three bound", || async {
        let mut bound = 0;
        for i in 0..4 {
            if c.node_of(&format!("web-{i}")).await.is_some() {
                bound += 1;
            }
        }
        bound == 3
    })
    .await;
    for i in 0..4 {
        match c.node_of(&format!("web-{i}")).await {
            Some(n) => assert!(nodes.insert(n), "two replicas on one node"),
            None => pending.push(format!("web-{i}")),
        }
    }
    assert_eq!(pending.len(), 1);
    let (_, message) = c.unschedulable(&pending[0]).await;
    assert_eq!(
        message,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
    // A pod without the term is kept away by the existing pods' anti-affinity only if it matches.
    c.pod("other", "100m", json!({"app": "other"}), json!({})).await;
    c.bound("other").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_spread_balances_zones() {
    let c = cluster().await;
    for (n, z) in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")] {
        c.node(n, "4", json!({"topology.kubernetes.io/zone": z}), json!([])).await;
    }
    let _s = start_scheduler(&c.client);
    let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "db"}}}]});
    for i in 0..6 {
        c.pod(&format!("db-{i}"), "100m", json!({"app": "db"}), spread.clone()).await;
    }
    let mut zones: HashMap<char, usize> = HashMap::new();
    for i in 0..6 {
        let node = c.bound(&format!("db-{i}")).await;
        *zones.entry(node.chars().next().unwrap_or('?')).or_default() += 1;
    }
    assert_eq!(zones.get(&'a'), Some(&3), "{zones:?}");
    assert_eq!(zones.get(&'b'), Some(&3), "{zones:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_schedulers_pods_and_gated_pods_are_left_alone() {
    let c = cluster().await;
    c.node("n1", "4", json!({}), json!([])).await;
    let _s = start_scheduler(&c.client);
    c.pod("mine", "100m", json!({}), json!({})).await;
    c.pod("theirs", "100m", json!({}), json!({"schedulerName": "other-scheduler"})).await;
    c.pod("gated", "100m", json!({}), json!({"schedulingGates": [{"name": "example.com/wait"}]})).await;
    c.bound("mine").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.node_of("theirs").await, None);
    assert_eq!(c.node_of("gated").await, None);
    c.pods()
        .patch(
            "gated",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
            {"op": "remove", "path": "/spec/schedulingGates"}]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(c.bound("gated").await, "n1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduler_binds_everything_exactly_once() {
    let c = cluster().await;
    for i in 0..5 {
        c.node(&format!("n{i}"), "100", json!({}), json!([])).await;
    }
    // Record every node assignment a watcher sees.
    let pods = c.pods();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<String, HashSet<String>>::new()));
    let recorder = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let stream = watcher::watcher(pods, watcher::Config::default());
            futures::pin_mut!(stream);
            while let Ok(Some(ev)) = stream.try_next().await {
                if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = ev
                    && let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone())
                {
                    seen.lock().unwrap().entry(p.metadata.name.clone().unwrap_or_default()).or_default().insert(node);
                }
            }
        })
    };
    const N: usize = 500;
    let creates = futures::stream::iter(0..N).map(|i| {
        let c = &c;
        async move { c.pod(&format!("p{i}"), "100m", json!({}), json!({})).await }
    });
    creates.buffer_unordered(8).collect::<Vec<()>>().await;
    let first = start_scheduler(&c.client);
    wait("some pods bound", || async {
        let list = c.pods().list(&ListParams::default()).await.unwrap();
        bound_count(&list.items) >= 20
    })
    .await;
    first.abort();
    let _ = first.await;
    let bound_before = bound_count(&c.pods().list(&ListParams::default()).await.unwrap().items);
    let _second = start_scheduler(&c.client);
    wait("all bound", || async { bound_count(&c.pods().list(&ListParams::default()).await.unwrap().items) == N }).await;
    eprintln!("bound by the first scheduler: {bound_before}/{N}");
    assert!(bound_before < N, "the restart happened after everything was bound; the test proves nothing");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), N);
    for (pod, nodes) in &seen {
        assert_eq!(nodes.len(), 1, "{pod} was bound to {nodes:?}");
    }
    for i in 0..N {
        let scheduled = c
            .events_of(&format!("p{i}"))
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Scheduled"))
            .count();
        assert!(scheduled <= 1, "p{i} has {scheduled} Scheduled events");
    }
    recorder.abort();
}

fn bound_count(pods: &[Pod]) -> usize {
    pods.iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_priority_pod_preempts_the_least_important_victim() {
    let c = cluster().await;
    let classes: Api<PriorityClass> = Api::all(c.client.clone());
    for (name, value) in [("low", 10), ("high", 1000)] {
        let pc: PriorityClass = serde_json::from_value(json!({"apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass", "metadata": {"name": name}, "value": value}))
        .unwrap();
        classes.create(&PostParams::default(), &pc).await.unwrap();
    }
    c.node("n1", "2", json!({}), json!([])).await;
    let _s = start_scheduler(&c.client);
    c.pod("low-1", "1", json!({}), json!({"priorityClassName": "low"})).await;
    c.bound("low-1").await;
    c.pod("low-2", "1", json!({}), json!({"priorityClassName": "low"})).await;
    c.bound("low-2").await;

    c.pod("high", "1", json!({}), json!({"priorityClassName": "high"})).await;
    let nominated = common::wait_for("nominatedNodeName", || async {
        c.pods().get("high").await.unwrap().status.and_then(|s| s.nominated_node_name)
    })
    .await;
    assert_eq!(nominated, "n1");
    // Exactly one victim (one cpu is enough), marked and deleted gracefully.
    let victims = common::wait_for("a terminating victim", || async {
        let pods = c.pods().list(&ListParams::default()).await.unwrap().items;
        let v: Vec<Pod> = pods.into_iter().filter(|p| p.metadata.deletion_timestamp.is_some()).collect();
        (!v.is_empty()).then_some(v)
    })
    .await;
    assert_eq!(victims.len(), 1);
    let victim = victims[0].metadata.name.clone().unwrap();
    assert!(victim.starts_with("low-"));
    let cond = victims[0]
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionTarget").cloned());
    let cond = cond.expect("DisruptionTarget condition");
    assert_eq!((cond.status.as_str(), cond.reason.as_deref()), ("True", Some("PreemptionByScheduler")));
    wait("Preempted event", || async {
        c.events_of(&victim).await.iter().any(|e| e.reason.as_deref() == Some("Preempted"))
    })
    .await;

    // A low-priority pod arriving now must not take the room freed for the preemptor.
    c.pod("low-3", "1", json!({}), json!({"priorityClassName": "low"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The node's agent would finish the victim; do it by hand.
    c.pods().delete(&victim, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    assert_eq!(c.bound("high").await, "n1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.node_of("low-3").await, None, "the low-priority newcomer stays pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_waiting_for_affinity_binds_when_a_matching_pod_lands() {
    let c = cluster().await;
    for n in ["n1", "n2", "n3"] {
        c.node(n, "4", json!({}), json!([])).await;
    }
    let _s = start_scheduler(&c.client);
    let with_db = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    c.pod("web", "100m", json!({"app": "web"}), with_db).await;
    let (_, message) = c.unschedulable("web").await;
    assert!(message.contains("didn't match pod affinity rules"), "{message}");
    // A pod that cannot help (no matching labels) lands: web stays where it is.
    c.pod("cache", "100m", json!({"app": "cache"}), json!({"nodeName": "n1"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.node_of("web").await, None);
    // A db pod lands on n2 without the scheduler: web is retried at once (not after the
    // five-minute flush of unschedulable pods) and follows it.
    c.pod("db", "100m", json!({"app": "db"}), json!({"nodeName": "n2"})).await;
    assert_eq!(c.bound("web").await, "n2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_spares_pods_a_disruption_budget_protects() {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let c = cluster().await;
    let classes: Api<PriorityClass> = Api::all(c.client.clone());
    for (name, value) in [("lowest", 1), ("low", 10), ("high", 1000)] {
        let pc: PriorityClass = serde_json::from_value(json!({"apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass", "metadata": {"name": name}, "value": value}))
        .unwrap();
        classes.create(&PostParams::default(), &pc).await.unwrap();
    }
    // The least important pod is protected by a budget with no disruptions left.
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.client.clone(), "default");
    let pdb =
        json!({"metadata": {"name": "db"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}});
    pdbs.create(&PostParams::default(), &serde_json::from_value(pdb).unwrap()).await.unwrap();
    let status = json!({"status": {"observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 1,
        "desiredHealthy": 1, "expectedPods": 1}});
    pdbs.patch_status("db", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    c.node("n1", "1", json!({}), json!([])).await;
    c.node("n2", "1", json!({}), json!([])).await;
    let _s = start_scheduler(&c.client);
    c.pod("db", "1", json!({"app": "db"}), json!({"priorityClassName": "lowest", "nodeName": "n1"})).await;
    c.pod("batch", "1", json!({"app": "batch"}), json!({"priorityClassName": "low", "nodeName": "n2"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    c.pod("high", "1", json!({}), json!({"priorityClassName": "high"})).await;
    let nominated = common::wait_for("nominatedNodeName", || async {
        c.pods().get("high").await.unwrap().status.and_then(|s| s.nominated_node_name)
    })
    .await;
    assert_eq!(nominated, "n2", "preemption broke the budget although another node needed no breach");
    assert!(c.pods().get("db").await.unwrap().metadata.deletion_timestamp.is_none());
    let batch = c.pods().get("batch").await.unwrap();
    assert!(batch.metadata.deletion_timestamp.is_some(), "the unprotected pod is the victim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_affinity_with_a_namespace_selector_counts_pods_in_the_selected_namespaces() {
    use k8s_openapi::api::core::v1::Namespace;
    let c = cluster().await;
    let namespaces: Api<Namespace> = Api::all(c.client.clone());
    for (name, team) in [("team-a", "a"), ("team-b", "b")] {
        let ns = json!({"metadata": {"name": name, "labels": {"team": team}}});
        namespaces.create(&PostParams::default(), &serde_json::from_value(ns).unwrap()).await.unwrap();
    }
    c.node("n1", "4", json!({}), json!([])).await;
    c.node("n2", "4", json!({}), json!([])).await;
    // A database in team-a's namespace sits on n1; one in team-b's on n2.
    for (ns, node) in [("team-a", "n1"), ("team-b", "n2")] {
        let pod = json!({"metadata": {"name": "db", "labels": {"app": "db"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}});
        let api: Api<Pod> = Api::namespaced(c.client.clone(), ns);
        api.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.unwrap();
    }
    let _s = start_scheduler(&c.client);
    // A pod in `default` that must keep away from team-a's databases only.
    let away = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "namespaceSelector": {"matchLabels": {"team": "a"}},
         "topologyKey": "kubernetes.io/hostname"}]}}});
    for i in 0..3 {
        c.pod(&format!("web-{i}"), "100m", json!({"app": "web"}), away.clone()).await;
    }
    for i in 0..3 {
        assert_eq!(c.bound(&format!("web-{i}")).await, "n2", "web-{i} was placed next to team-a's database");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduling_waits_for_namespace_labels() {
    use k8s_openapi::api::core::v1::Namespace;
    let c = cluster().await;
    let ns = json!({"metadata": {"name": "team-a", "labels": {"team": "a"}}});
    Api::<Namespace>::all(c.client.clone())
        .create(&PostParams::default(), &serde_json::from_value(ns).unwrap())
        .await
        .unwrap();
    // Scoring alone would choose the emptier n1, where team-a's database runs.
    c.node("n1", "64", json!({}), json!([])).await;
    c.node("n2", "2", json!({}), json!([])).await;
    let db = json!({"metadata": {"name": "db", "labels": {"app": "db"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}});
    let team_a: Api<Pod> = Api::namespaced(c.client.clone(), "team-a");
    team_a.create(&PostParams::default(), &serde_json::from_value(db).unwrap()).await.unwrap();
    // The scheduler's client holds its namespace LIST until the pod is there.
    let (open, gate) = tokio::sync::watch::channel(false);
    let inner = c.client.clone();
    let held = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let (inner, mut gate) = (inner.clone(), gate.clone());
        async move {
            let query = req.uri().query().unwrap_or_default();
            if req.uri().path() == "/api/v1/namespaces" && !query.contains("watch=true") {
                let _ = gate.wait_for(|open| *open).await;
            }
            inner.send(req).await
        }
    });
    let _s = start_scheduler(&kube::Client::new(held, "default"));
    let away = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "namespaceSelector": {"matchLabels": {"team": "a"}},
         "topologyKey": "kubernetes.io/hostname"}]}}});
    c.pod("web", "1", json!({"app": "web"}), away).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.node_of("web").await, None, "web was placed before the namespace labels were known");
    open.send(true).unwrap();
    assert_eq!(c.bound("web").await, "n2");
}
