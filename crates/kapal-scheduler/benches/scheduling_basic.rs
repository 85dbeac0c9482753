//! The scheduler's own work on the scheduler_perf "SchedulingBasic" shape, without the API:
//! 5,000 nodes, 1,000 pods already bound, then 10,000 pods each going through what the
//! scheduler does for it — the add event, a scheduling cycle, the assumption, and the bound
//! pod coming back as an update. Prints the time per pod; run with
//! `cargo bench -p kapal-scheduler --bench scheduling_basic` (or under callgrind).

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, Pod};
use kapal_scheduler::podinfo::PodInfo;
use kapal_scheduler::scheduler::State;
use serde_json::json;

fn node(i: usize) -> Node {
    let name = format!("node-{i}");
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
        "status": {
            "capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }))
    .expect("a valid node")
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "basic"}},
        "spec": {"schedulerName": "default-scheduler", "priority": 0, "containers": [{"name": "pause",
            "image": "registry.k8s.io/pause:3.10", "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]},
        "status": {"phase": "Pending"},
    }))
    .expect("a valid pod")
}

/// Schedules `pods` pods one by one as the loop does; returns how many were placed.
fn schedule(st: &mut State, prefix: &str, pods: usize) -> usize {
    let mut placed = 0;
    for i in 0..pods {
        st.apply_pod(pod(&format!("{prefix}-{i}")));
        while let Some(qp) = st.queue.pop() {
            let Ok(placement) = st.framework.schedule(&qp.info, &st.cache, &st.nominations) else { continue };
            let mut bound = (*qp.info.pod).clone();
            bound.spec.get_or_insert_default().node_name = Some(placement.node);
            st.cache.assume(Arc::new(PodInfo { pod: Arc::new(bound.clone()), ..(*qp.info).clone() }));
            // The binding's watch event.
            st.apply_pod(bound);
            placed += 1;
        }
    }
    placed
}

fn main() {
    let nodes: usize = std::env::var("NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000);
    let pods: usize = std::env::var("PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let mut st = State::default();
    for i in 0..nodes {
        st.apply_node(node(i));
    }
    schedule(&mut st, "init", 1_000);
    let t = Instant::now();
    let placed = schedule(&mut st, "pod", pods);
    let elapsed = t.elapsed();
    assert_eq!(placed, pods, "every pod fits");
    println!(
        "{nodes} nodes: {pods} pods in {:.3} s, {:.1} µs per pod ({:.0} pods/s of one core)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / pods as f64,
        pods as f64 / elapsed.as_secs_f64()
    );
}
