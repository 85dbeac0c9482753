//! An in-process API server driven by kube-rs, with the scheduler running against it.

#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

pub struct Cluster {
    pub running: kapal_apiserver::Running,
    pub client: Client,
    _dir: tempfile::TempDir,
}

pub async fn cluster() -> Cluster {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = kapal_apiserver::Config::new(dir.path().to_path_buf());
    config.port = 0;
    config.bind_address = "127.0.0.1".parse().unwrap();
    let running = kapal_apiserver::start(config).await.unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&running.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    let client = Client::try_from(cfg).unwrap();
    Cluster { running, client, _dir: dir }
}

/// Runs the scheduler in a task; abort the handle to "kill" it.
pub fn start_scheduler(client: &Client) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(e) = kapal_scheduler::run(client).await {
            panic!("scheduler stopped: {e}");
        }
    })
}

impl Cluster {
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// A Ready node with the given cpu and labels, 8 GiB and 110 pods, and optional taints.
    pub async fn node(&self, name: &str, cpu: &str, labels: Value, taints: Value) {
        let mut labels = if labels.is_object() { labels } else { json!({}) };
        labels["kubernetes.io/hostname"] = json!(name);
        let status = json!({
            "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready"}],
        });
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
            "status": status,
        }))
        .unwrap();
        self.nodes().create(&PostParams::default(), &node).await.unwrap();
        self.nodes()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
            .await
            .unwrap();
    }

    /// A pod with one container requesting `cpu`, plus extra spec fields and labels.
    pub async fn pod(&self, name: &str, cpu: &str, labels: Value, extra: Value) {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels}, "spec": spec,
        }))
        .unwrap();
        self.pods().create(&PostParams::default(), &pod).await.unwrap();
    }

    pub async fn node_of(&self, pod: &str) -> Option<String> {
        let p = self.pods().get(pod).await.unwrap();
        p.spec.and_then(|s| s.node_name)
    }

    /// Waits until the pod is bound; returns the node.
    pub async fn bound(&self, pod: &str) -> String {
        wait_for(&format!("pod {pod} bound"), || self.node_of(pod)).await
    }

    /// Waits for `PodScheduled=False`; returns (reason, message).
    pub async fn unschedulable(&self, pod: &str) -> (String, String) {
        wait_for(&format!("pod {pod} PodScheduled=False"), || async {
            let p = self.pods().get(pod).await.unwrap();
            let c = p.status.and_then(|s| s.conditions).into_iter().flatten().find(|c| c.type_ == "PodScheduled");
            c.filter(|c| c.status == "False").map(|c| (c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
        })
        .await
    }

    /// Core/v1 events about a pod (what `kubectl describe pod` lists).
    pub async fn events_of(&self, pod: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items.into_iter().filter(|e| e.involved_object.name.as_deref() == Some(pod)).collect()
    }
}

/// Polls `check` every 50 ms for up to 20 s.
pub async fn wait<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(what, || {
        let f = check();
        async move { f.await.then_some(()) }
    })
    .await
}

/// Polls `check` every 50 ms for up to 20 s until it returns a value.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}
