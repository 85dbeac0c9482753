//! Simulated nodes, the kwok idea: Node objects with capacity and fresh Leases, whose pods move
//! through their lifecycle (Pending → Running and Ready with a pod IP; run-to-completion pods
//! → Succeeded) without anything being run. For tests and scale benchmarks of the control plane.
//!
//! Two annotations on a pod shape what the simulated kubelet does with it:
//! - `sim.kapal.io/run-seconds`: how long a pod with `restartPolicy` Never or OnFailure runs
//!   before it exits (default 0);
//! - `sim.kapal.io/exit-code`: its exit code (default 0: Succeeded; otherwise Failed).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// How long a pod runs before it exits, for pods that run to completion.
pub const RUN_SECONDS: &str = "sim.kapal.io/run-seconds";
/// The exit code of a pod that runs to completion.
pub const EXIT_CODE: &str = "sim.kapal.io/exit-code";
/// Label on every simulated node.
pub const SIMULATED_LABEL: &str = "node.kapal.io/simulated";

const LEASE_SECONDS: i32 = 40;
/// The kubelet renews its Lease every quarter of its duration.
const RENEW_INTERVAL: Duration = Duration::from_secs(10);
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// How many nodes.
    pub nodes: usize,
    /// Node names are `<prefix>-<index>`.
    pub prefix: String,
    /// Capacity of each node.
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
}

impl Default for Simulation {
    fn default() -> Self {
        Simulation { nodes: 1, prefix: "kapal-sim".into(), cpu: "32".into(), memory: "256Gi".into(), pods: 110 }
    }
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("registering node {node}: {source}")]
    Register { node: String, source: kube::Error },
    #[error("updating pod {pod}: {source}")]
    Pod { pod: String, source: kube::Error },
}

impl Simulation {
    fn name(&self, index: usize) -> String {
        format!("{}-{index}", self.prefix)
    }

    /// Node `index`'s address, from the benchmarking range 198.18.0.0/15 (never routed).
    fn node_ip(index: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + 1 + index as u32 % ((1 << 17) - 2))
    }
}

/// Registers the nodes, keeps their Leases fresh and runs their pods, until an error that
/// retrying cannot fix.
/// Dropping the future stops everything, heartbeats included.
pub async fn run(client: Client, sim: Simulation) -> Result<(), Error> {
    register_all(&client, &sim).await?;
    tracing::info!(nodes = sim.nodes, prefix = %sim.prefix, "simulated nodes registered");
    let _leases = AbortOnDrop(tokio::spawn(renew_leases(client.clone(), sim.clone())));
    let _status = AbortOnDrop(tokio::spawn(keep_status(client.clone(), sim.clone())));
    run_pods(client, sim).await
}

/// A background task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Re-posts a node's status when the API shows it not Ready (the node controller marks a node
/// Unknown after a missed heartbeat), as a kubelet does when its computed status differs from
/// the API's.
async fn keep_status(client: Client, sim: Simulation) {
    let names: HashMap<String, usize> = (0..sim.nodes).map(|i| (sim.name(i), i)).collect();
    let nodes: Api<Node> = Api::all(client);
    let config = watcher::Config::default().labels(&format!("{SIMULATED_LABEL}=true")).any_semantic();
    let mut events = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(watcher(nodes.clone(), config)));
    while let Some(event) = events.next().await {
        let Ok(node) = event else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let Some(index) = names.get(&node.name_any()) else { continue };
        if is_ready(&node) {
            continue;
        }
        let status = json!({"status": node_status(&sim, *index)});
        if let Err(e) = nodes.patch_status(&node.name_any(), &PatchParams::default(), &Patch::Strategic(&status)).await
        {
            tracing::warn!(node = %node.name_any(), error = %e, "re-posting node status");
        }
    }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn register_all(client: &Client, sim: &Simulation) -> Result<(), Error> {
    let results: Vec<Result<(), Error>> =
        futures::stream::iter(0..sim.nodes).map(|i| register(client, sim, i)).buffer_unordered(32).collect().await;
    results.into_iter().collect()
}

async fn register(client: &Client, sim: &Simulation, index: usize) -> Result<(), Error> {
    let name = sim.name(index);
    let fail = |source| Error::Register { node: name.clone(), source };
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(node_object(sim, index)).map_err(|e| fail(kube::Error::SerdeError(e)))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(fail(e)),
    }
    let status = json!({"status": node_status(sim, index)});
    nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await.map_err(fail)?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": [
            {"apiVersion": "v1", "kind": "Node", "name": name, "uid": nodes.get(&name).await.map_err(fail)?.uid()}]},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_micro()},
    }))
    .map_err(|e| fail(kube::Error::SerdeError(e)))?;
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => renew(&leases, &name).await.map_err(fail),
        Err(e) => Err(fail(e)),
    }
}

fn node_object(sim: &Simulation, index: usize) -> Value {
    let name = sim.name(index);
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                SIMULATED_LABEL: "true",
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
    })
}

fn node_status(sim: &Simulation, index: usize) -> Value {
    let now = jiff::Timestamp::now().to_string();
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let resources = json!({"cpu": sim.cpu, "memory": sim.memory, "pods": sim.pods.to_string(),
        "ephemeral-storage": "100Gi"});
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": Simulation::node_ip(index).to_string()},
            {"type": "Hostname", "address": sim.name(index)},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": "simulated", "osImage": "Kapal simulated node",
            "containerRuntimeVersion": "kapal-sim://0.1.0",
            "kubeletVersion": "v1.33.0", "kubeProxyVersion": "v1.33.0",
            "operatingSystem": "linux", "architecture": "amd64",
        },
    })
}

fn now_micro() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

async fn renew(leases: &Api<Lease>, name: &str) -> Result<(), kube::Error> {
    let patch = json!({"spec": {"holderIdentity": name, "renewTime": now_micro()}});
    leases.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
}

/// Renews every node's Lease once per interval, spread evenly over it.
async fn renew_leases(client: Client, sim: Simulation) {
    let leases: Api<Lease> = Api::namespaced(client, NODE_LEASE_NAMESPACE);
    let gap = RENEW_INTERVAL / sim.nodes.max(1) as u32;
    loop {
        let round = tokio::time::Instant::now();
        for i in 0..sim.nodes {
            tokio::time::sleep_until(round + gap * i as u32).await;
            let (leases, name) = (leases.clone(), sim.name(i));
            tokio::spawn(async move {
                if let Err(e) = renew(&leases, &name).await {
                    tracing::warn!(node = %name, error = %e, "renewing node lease");
                }
            });
        }
        tokio::time::sleep_until(round + RENEW_INTERVAL).await;
    }
}

/// The simulated kubelets' shared state: which nodes are ours and the pod IPs they handed out.
struct Kubelets {
    client: Client,
    nodes: HashMap<String, usize>,
    ips: Mutex<HashMap<usize, PodIps>>,
}

/// Node `index` hands out pod IPs from 100.64.0.0/10 (shared address space, never routed
/// here): 512 addresses per node.
#[derive(Default)]
struct PodIps {
    next: u32,
    by_pod: HashMap<String, Ipv4Addr>,
}

impl Kubelets {
    fn pod_ip(&self, node: usize, uid: &str) -> Ipv4Addr {
        let mut ips = self.ips.lock().unwrap_or_else(|e| e.into_inner());
        let node_ips = ips.entry(node).or_default();
        if let Some(ip) = node_ips.by_pod.get(uid) {
            return *ip;
        }
        let host = 1 + node_ips.next % 510;
        node_ips.next += 1;
        let base = u32::from(Ipv4Addr::new(100, 64, 0, 0)) + (node as u32 % 8192) * 512;
        let ip = Ipv4Addr::from(base + host);
        node_ips.by_pod.insert(uid.to_string(), ip);
        ip
    }

    fn forget(&self, node: usize, uid: &str) {
        let mut ips = self.ips.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(node_ips) = ips.get_mut(&node) {
            node_ips.by_pod.remove(uid);
        }
    }
}

async fn run_pods(client: Client, sim: Simulation) -> Result<(), Error> {
    let nodes = (0..sim.nodes).map(|i| (sim.name(i), i)).collect();
    let kubelets = Arc::new(Kubelets { client: client.clone(), nodes, ips: Mutex::default() });
    let pods: Api<Pod> = Api::all(client);
    Controller::new(pods, watcher::Config::default().any_semantic())
        .run(
            reconcile,
            |_, error, _| {
                tracing::warn!(%error, "simulated kubelet");
                Action::requeue(Duration::from_secs(1))
            },
            kubelets,
        )
        .for_each(|_| async {})
        .await;
    Ok(())
}

/// What the simulated kubelet does next with a pod.
#[derive(Debug, PartialEq)]
enum Step {
    /// Not ours, or nothing to do.
    Nothing,
    /// Confirm the deletion of a pod that is being deleted: its containers are "stopped".
    Remove,
    /// Report it Running (and Ready if it keeps running).
    Start,
    /// Report it finished with this exit code, after the given wait.
    Finish { after: Duration, exit_code: i32 },
}

fn step(pod: &Pod, now: jiff::Timestamp) -> Step {
    if pod.metadata.deletion_timestamp.is_some() {
        return Step::Remove;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let restart = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always");
    match phase {
        "Pending" => Step::Start,
        "Running" if restart != "Always" => {
            let annotation = |key: &str| pod.annotations().get(key).and_then(|v| v.parse::<i64>().ok());
            let run = annotation(RUN_SECONDS).unwrap_or(0).max(0);
            let started = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0).unwrap_or(now);
            let elapsed = now.as_second() - started.as_second();
            let exit_code = annotation(EXIT_CODE).unwrap_or(0) as i32;
            Step::Finish { after: Duration::from_secs((run - elapsed).max(0) as u64), exit_code }
        }
        _ => Step::Nothing,
    }
}

async fn reconcile(pod: Arc<Pod>, kubelets: Arc<Kubelets>) -> Result<Action, Error> {
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).and_then(|n| kubelets.nodes.get(n)) else {
        return Ok(Action::await_change());
    };
    let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let fail = |source| Error::Pod { pod: format!("{namespace}/{name}"), source };
    let api: Api<Pod> = Api::namespaced(kubelets.client.clone(), &namespace);
    let uid = pod.uid().unwrap_or_default();
    match step(&pod, jiff::Timestamp::now()) {
        Step::Nothing => Ok(Action::await_change()),
        Step::Remove => {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(fail(e)),
            }
            kubelets.forget(*node, &uid);
            Ok(Action::await_change())
        }
        Step::Start => {
            let ip = kubelets.pod_ip(*node, &uid);
            let status = running_status(&pod, ip, *node);
            patch_status(&api, &name, status).await.map_err(fail)?;
            Ok(Action::await_change())
        }
        Step::Finish { after, .. } if !after.is_zero() => Ok(Action::requeue(after)),
        Step::Finish { exit_code, .. } => {
            patch_status(&api, &name, finished_status(&pod, exit_code)).await.map_err(fail)?;
            kubelets.forget(*node, &uid);
            Ok(Action::await_change())
        }
    }
}

async fn patch_status(api: &Api<Pod>, name: &str, status: Value) -> Result<(), kube::Error> {
    match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

fn condition(kind: &str, status: bool, now: &str) -> Value {
    json!({"type": kind, "status": if status { "True" } else { "False" }, "lastProbeTime": null,
        "lastTransitionTime": now})
}

fn container_statuses(pod: &Pod, state: impl Fn(&str) -> (Value, bool)) -> Vec<Value> {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    containers
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            let (state, ready) = state(&image);
            json!({"name": c.name, "image": image, "imageID": format!("sim://{image}"),
                "containerID": format!("sim://{}", c.name), "ready": ready, "started": ready,
                "restartCount": 0, "state": state})
        })
        .collect()
}

fn running_status(pod: &Pod, ip: Ipv4Addr, node: usize) -> Value {
    let now = jiff::Timestamp::now().to_string();
    let statuses = container_statuses(pod, |_| (json!({"running": {"startedAt": now}}), true));
    json!({
        "phase": "Running",
        "hostIP": Simulation::node_ip(node).to_string(),
        "hostIPs": [{"ip": Simulation::node_ip(node).to_string()}],
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "startTime": now,
        "conditions": [
            condition("PodReadyToStartContainers", true, &now),
            condition("Initialized", true, &now),
            condition("Ready", true, &now),
            condition("ContainersReady", true, &now),
            condition("PodScheduled", true, &now),
        ],
        "containerStatuses": statuses,
    })
}

fn finished_status(pod: &Pod, exit_code: i32) -> Value {
    let now = jiff::Timestamp::now().to_string();
    let started = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0.to_string());
    let reason = if exit_code == 0 { "Completed" } else { "Error" };
    let statuses = container_statuses(pod, |_| {
        let terminated = json!({"exitCode": exit_code, "reason": reason, "startedAt": started, "finishedAt": now});
        (json!({"terminated": terminated}), false)
    });
    json!({
        "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
        "conditions": [
            condition("PodReadyToStartContainers", false, &now),
            condition("Initialized", true, &now),
            condition("Ready", false, &now),
            condition("ContainersReady", false, &now),
            condition("PodScheduled", true, &now),
        ],
        "containerStatuses": statuses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn pods_start_then_run_to_completion_only_when_they_do_not_restart() {
        let now = "2026-01-01T00:00:10Z".parse().unwrap();
        assert_eq!(step(&pod(json!({"spec": {"containers": []}})), now), Step::Start);
        let running = json!({"spec": {"containers": [], "restartPolicy": "Always"},
            "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z"}});
        assert_eq!(step(&pod(running), now), Step::Nothing);
        let job = json!({
            "metadata": {"annotations": {RUN_SECONDS: "15", EXIT_CODE: "3"}},
            "spec": {"containers": [], "restartPolicy": "Never"},
            "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z"}});
        assert_eq!(step(&pod(job), now), Step::Finish { after: Duration::from_secs(5), exit_code: 3 });
        let deleting = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"containers": []}});
        assert_eq!(step(&pod(deleting), now), Step::Remove);
    }

    #[tokio::test]
    async fn pod_ips_are_unique_per_node_and_stable_per_pod() {
        let kubelets = Kubelets { client: test_client(), nodes: HashMap::new(), ips: Mutex::default() };
        let a = kubelets.pod_ip(3, "a");
        let b = kubelets.pod_ip(3, "b");
        let other = kubelets.pod_ip(4, "a");
        assert_ne!(a, b);
        assert_ne!(a, other);
        assert_eq!(kubelets.pod_ip(3, "a"), a);
        assert_eq!(a, Ipv4Addr::new(100, 64, 6, 1));
    }

    fn test_client() -> Client {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        Client::try_from(config).unwrap()
    }

    #[test]
    fn node_status_reports_capacity_and_readiness() {
        let sim = Simulation { nodes: 2, ..Simulation::default() };
        let status = node_status(&sim, 1);
        assert_eq!(status["allocatable"]["cpu"], "32");
        assert_eq!(status["addresses"][0]["address"], "198.18.0.2");
        let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!(ready["status"], "True");
    }
}
