//! An in-process API server on an ephemeral port with the controller manager running against it
//! through kube-rs, and helpers that play the parts of the scheduler and the kubelet where a test
//! needs pods bound and ready.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// A server with controllers; everything stops when it is dropped.
pub struct Cluster {
    pub client: Client,
    running: kapal_apiserver::Running,
    controllers: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// A fresh server with the whole controller manager running.
    pub async fn start() -> Cluster {
        let mut cluster = Cluster::server_only().await;
        cluster.start_controllers();
        cluster
    }

    /// A fresh server with no controllers (start them with [`Cluster::start_controllers`]).
    pub async fn server_only() -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let mut config = kapal_apiserver::Config::new(dir.path().to_path_buf());
        config.port = 0;
        config.bind_address = "127.0.0.1".parse().unwrap();
        let running = kapal_apiserver::start(config).await.unwrap();
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&running.kubeconfig).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        let client = Client::try_from(cfg).unwrap();
        Cluster { client, running, controllers: None, _dir: dir }
    }

    /// Starts (or restarts) the controller manager.
    pub fn start_controllers(&mut self) {
        self.stop_controllers();
        let client = self.client.clone();
        self.controllers = Some(tokio::spawn(async move {
            if let Err(e) = kapal_controllers::run(client).await {
                eprintln!("controllers stopped: {e:#}");
            }
        }));
    }

    /// Kills the controller manager mid-flight, as a crash would.
    pub fn stop_controllers(&mut self) {
        if let Some(handle) = self.controllers.take() {
            handle.abort();
        }
    }

    /// Creates a namespace for one test.
    pub async fn namespace(&self, name: &str) -> String {
        let api: Api<Namespace> = Api::all(self.client.clone());
        api.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap())
            .await
            .unwrap();
        name.to_string()
    }

    /// Binds every unbound pod in `namespace` to `node` and reports it Running and Ready — the
    /// scheduler's and the kubelet's parts, for tests of controllers alone.
    pub async fn run_pods(&self, namespace: &str, node: &str) -> usize {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut started = 0;
        for pod in api.list(&ListParams::default()).await.unwrap() {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let name = pod.name_any();
            if pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none() {
                let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                let body = serde_json::to_vec(&binding).unwrap();
                let request = http::Request::post(format!("/api/v1/namespaces/{namespace}/pods/{name}/binding"))
                    .header("content-type", "application/json")
                    .body(body)
                    .unwrap();
                if self.client.request_text(request).await.is_err() {
                    continue;
                }
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
            if phase == "Pending" {
                set_running(&api, &pod, started).await;
                started += 1;
            }
        }
        started
    }

    /// Waits until `check` returns `Some`, polling; panics after `timeout` with `what`.
    pub async fn eventually<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Cluster {
    /// `(reason, message)` of every event about the object `name` in `namespace`, oldest first,
    /// as `kubectl describe` lists them.
    pub async fn events_for(&self, namespace: &str, name: &str) -> Vec<(String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), namespace);
        let mut events: Vec<_> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        events.into_iter().map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default())).collect()
    }

    /// Pods in `namespace` that are not being deleted.
    pub async fn live_pods(&self, namespace: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }
}

/// Reports a pod Running and Ready, as a kubelet would.
pub async fn set_running(api: &Api<Pod>, pod: &Pod, n: usize) {
    let now = jiff::Timestamp::now().to_string();
    let containers: Vec<_> = pod.spec.as_ref().map(|s| s.containers.iter().collect()).unwrap_or_default();
    let statuses: Vec<_> = containers
        .iter()
        .map(|c| {
            json!({"name": c.name, "image": c.image, "imageID": "", "ready": true, "started": true,
            "restartCount": 0, "state": {"running": {"startedAt": now}}})
        })
        .collect();
    let condition = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
    let status = json!({"status": {
        "phase": "Running",
        "podIP": format!("10.42.{}.{}", 1 + n / 250, 2 + n % 250),
        "hostIP": "192.0.2.1",
        "startTime": now,
        "conditions": [condition("PodScheduled"), condition("Initialized"), condition("ContainersReady"), condition("Ready")],
        "containerStatuses": statuses,
    }});
    let _ = api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await;
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_controllers();
        self.running.shutdown();
    }
}

/// Reports a pod finished, as a kubelet would once its containers exit: phase `Succeeded` (exit
/// code 0) or `Failed` (exit code 1), with terminated container states and Ready false.
pub async fn set_finished(api: &Api<Pod>, pod: &Pod, succeeded: bool) {
    let now = jiff::Timestamp::now().to_string();
    let (phase, code, reason) = if succeeded { ("Succeeded", 0, "Completed") } else { ("Failed", 1, "Error") };
    let statuses: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| json!({"name": c.name, "image": c.image, "imageID": "", "ready": false, "started": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": code, "reason": reason, "startedAt": now, "finishedAt": now}}}))
        .collect();
    let condition = |t: &str, s: &str| json!({"type": t, "status": s, "lastTransitionTime": now});
    let status = json!({"status": {
        "phase": phase,
        "conditions": [condition("PodScheduled", "True"), condition("Initialized", "True"),
            condition("ContainersReady", "False"), condition("Ready", "False")],
        "containerStatuses": statuses,
    }});
    api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

impl Cluster {
    /// Finishes the graceful deletion of every terminating pod in `namespace`, as a kubelet does
    /// once the containers have stopped; returns how many went away.
    pub async fn reap_terminating(&self, namespace: &str) -> usize {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut reaped = 0;
        for pod in api.list(&ListParams::default()).await.unwrap() {
            if pod.metadata.deletion_timestamp.is_some()
                && api.delete(&pod.name_any(), &kube::api::DeleteParams::default().grace_period(0)).await.is_ok()
            {
                reaped += 1;
            }
        }
        reaped
    }
}

/// A fake kubelet's heartbeats for one node: it posts the node's `Ready` condition with a fresh
/// `lastHeartbeatTime` and renews the node's Lease, every interval, until dropped.
pub struct Heartbeats {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Cluster {
    /// Registers a Node that reports itself Ready (with no pressure), and its Lease in
    /// `kube-node-lease`, as a kubelet does when it starts.
    pub async fn register_node(&self, name: &str) {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        let node = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}, "spec": {}});
        nodes.create(&PostParams::default(), &serde_json::from_value(node).unwrap()).await.unwrap();
        let now = jiff::Timestamp::now().to_string();
        let condition = |kind: &str, status: &str, reason: &str| {
            json!({"type": kind, "status": status, "reason": reason, "message": reason,
                "lastHeartbeatTime": now, "lastTransitionTime": now})
        };
        let status = json!({"status": {"conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID"),
            condition("Ready", "True", "KubeletReady"),
        ]}});
        nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), "kube-node-lease");
        let lease = json!({"metadata": {"name": name},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro_now()}});
        leases.create(&PostParams::default(), &serde_json::from_value(lease).unwrap()).await.unwrap();
    }

    /// Starts heartbeats for a registered node, reporting `Ready` as `ready` ("True" or
    /// "False"); they stop when the returned value is dropped.
    pub fn heartbeats(&self, name: &str, ready: &str, every: Duration) -> Heartbeats {
        self.pulse(name, ready, every, true, true)
    }

    /// Heartbeats of one kind only: status posts (`post_status`), Lease renewals (`renew_lease`)
    /// or both.
    pub fn pulse(&self, name: &str, ready: &str, every: Duration, post_status: bool, renew_lease: bool) -> Heartbeats {
        let (client, name, ready) = (self.client.clone(), name.to_string(), ready.to_string());
        let task = tokio::spawn(async move {
            let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
            let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client, "kube-node-lease");
            loop {
                let now = jiff::Timestamp::now().to_string();
                let reason = if ready == "True" { "KubeletReady" } else { "KubeletNotReady" };
                let status = json!({"status": {"conditions": [{"type": "Ready", "status": ready, "reason": reason,
                    "message": reason, "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
                if post_status {
                    let _ = nodes.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&status)).await;
                }
                let renew = json!({"spec": {"renewTime": micro_now()}});
                if renew_lease {
                    let _ = leases.patch(&name, &PatchParams::default(), &Patch::Merge(&renew)).await;
                }
                tokio::time::sleep(every).await;
            }
        });
        Heartbeats { task }
    }
}

/// Now, as a `MicroTime` string.
pub fn micro_now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl Cluster {
    /// The admin kubeconfig the server wrote, with the cluster CA.
    pub fn kubeconfig(&self) -> String {
        self.running.kubeconfig.clone()
    }
}

impl Cluster {
    /// A client that hands 429s and 503s to the caller instead of retrying them (kube's default
    /// client retries them for minutes), to see what kubectl sees.
    pub async fn client_without_retries(&self) -> Client {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.running.kubeconfig).unwrap();
        let mut cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        cfg.default_retry = false;
        Client::try_from(cfg).unwrap()
    }
}

impl Cluster {
    /// Binds every unbound pod in `namespace` that is pinned to a node by a required node
    /// affinity on `metadata.name` (DaemonSet pods) to that node, and reports every pending pod
    /// Running and Ready — the scheduler's and the kubelets' parts; returns how many started.
    pub async fn run_pinned_pods(&self, namespace: &str) -> usize {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut started = 0;
        for pod in api.list(&ListParams::default()).await.unwrap() {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let spec = pod.spec.clone().unwrap_or_default();
            if spec.node_name.is_none() {
                let pinned = spec
                    .affinity
                    .and_then(|a| a.node_affinity)
                    .and_then(|n| n.required_during_scheduling_ignored_during_execution)
                    .and_then(|r| r.node_selector_terms.into_iter().next())
                    .and_then(|t| t.match_fields)
                    .and_then(|f| f.into_iter().find(|r| r.key == "metadata.name"))
                    .and_then(|r| r.values)
                    .and_then(|v| v.into_iter().next());
                let Some(node) = pinned else { continue };
                let name = pod.name_any();
                let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                let request = http::Request::post(format!("/api/v1/namespaces/{namespace}/pods/{name}/binding"))
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&binding).unwrap())
                    .unwrap();
                if self.client.request_text(request).await.is_err() {
                    continue;
                }
            }
            if pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending") == "Pending" {
                set_running(&api, &pod, started).await;
                started += 1;
            }
        }
        started
    }
}

impl Cluster {
    /// Runs the real kubectl (`$KUBECTL`, else `/usr/bin/kubectl`) against this server; returns
    /// whether it succeeded and its stdout followed by its stderr. Blocking: call it from
    /// `spawn_blocking` when the test must act while kubectl waits.
    pub fn kubectl_command(&self) -> impl Fn(&[&str]) -> (bool, String) + Send + Sync + 'static {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), self.kubeconfig()).unwrap();
        let file = std::sync::Arc::new(file);
        let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into());
        move |args: &[&str]| {
            let out = std::process::Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(file.path())
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("running {kubectl}: {e}"));
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            (out.status.success(), text)
        }
    }
}

/// A background task (a scheduler, simulated nodes) that ends with the test.
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
