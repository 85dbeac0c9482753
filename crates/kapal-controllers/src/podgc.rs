//! PodGC: removes pods nothing else will remove.
//!
//! Every check period it deletes, as upstream does:
//! - pods bound to a node that no longer exists (first marked Failed with the
//!   `DisruptionTarget` condition, reason `DeletionByPodGC`), once the node has been missing for
//!   a quarantine period, so that a node being re-registered is not mistaken for a gone one;
//! - pods being deleted that were never scheduled (no kubelet will confirm them);
//! - terminated pods beyond `--terminated-pod-gc-threshold`, oldest first.
//!
//! It reads pods from the controller manager's shared [`PodCache`], so it holds no copy of its own.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::nodelifecycle::mirror;
use crate::podcache::PodCache;

/// How PodGC is tuned.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often it looks (upstream: 20 s).
    pub period: Duration,
    /// How many terminated pods may stay (upstream `--terminated-pod-gc-threshold`: 12,500).
    pub terminated_threshold: usize,
    /// How long a node must be missing before its pods are collected (upstream: 40 s).
    pub quarantine: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { period: Duration::from_secs(20), terminated_threshold: 12_500, quarantine: Duration::from_secs(40) }
    }
}

/// Runs PodGC with upstream's settings.
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_with(client, Settings::default()).await
}

/// Runs PodGC on its own pod cache.
pub async fn run_with(client: Client, settings: Settings) -> anyhow::Result<()> {
    let pods = PodCache::start(client.clone());
    run_shared(client, settings, pods).await
}

/// Runs PodGC on a shared pod cache; returns only if the node watch ends.
pub async fn run_shared(client: Client, settings: Settings, pods: Arc<PodCache>) -> anyhow::Result<()> {
    let (nodes, node_writer) = reflector::store();
    let collector = async {
        pods.synced().await;
        nodes.wait_until_ready().await?;
        let mut missing_since: HashMap<String, Instant> = HashMap::new();
        loop {
            tokio::time::sleep(settings.period).await;
            collect(&client, &pods.all(), &nodes, &settings, &mut missing_since).await;
        }
    };
    let only_names = |n: &mut Node| {
        n.spec = None;
        n.status = None;
    };
    tokio::select! {
        () = mirror(Api::<Node>::all(client.clone()), node_writer, None, only_names) => {
            anyhow::bail!("the node watch ended")
        }
        result = collector => result,
    }
}

async fn collect(
    client: &Client,
    pods: &[Arc<Pod>],
    nodes: &Store<Node>,
    settings: &Settings,
    missing_since: &mut HashMap<String, Instant>,
) {
    let existing: HashSet<String> = nodes.state().iter().map(|n| n.name_any()).collect();
    let now = Instant::now();
    let mut referenced = HashSet::new();
    for pod in pods {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            if pod.metadata.deletion_timestamp.is_some() {
                force_delete(client, pod, "terminating pod that was never scheduled").await;
            }
            continue;
        };
        if existing.contains(&node) {
            continue;
        }
        referenced.insert(node.clone());
        let since = *missing_since.entry(node).or_insert(now);
        if now.duration_since(since) >= settings.quarantine {
            fail_orphan(client, pod).await;
            force_delete(client, pod, "pod whose node is gone").await;
        }
    }
    missing_since.retain(|node, _| referenced.contains(node));
    for pod in excess_terminated(pods, settings.terminated_threshold) {
        force_delete(client, pod, "terminated pod beyond the threshold").await;
    }
}

/// The oldest terminated pods beyond `threshold`.
fn excess_terminated(pods: &[Arc<Pod>], threshold: usize) -> Vec<&Arc<Pod>> {
    let mut terminated: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    if terminated.len() <= threshold {
        return Vec::new();
    }
    terminated.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let excess = terminated.len() - threshold;
    terminated.truncate(excess);
    terminated
}

async fn fail_orphan(client: &Client, pod: &Pod) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if matches!(phase, "Succeeded" | "Failed") {
        return;
    }
    let now = jiff::Timestamp::now().to_string();
    let status = json!({"status": {"phase": "Failed", "conditions": [{"type": "DisruptionTarget", "status": "True",
        "reason": "DeletionByPodGC", "message": "PodGC: node no longer exists", "lastTransitionTime": now}]}});
    if let Err(e) = api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(&status)).await {
        tracing::debug!(pod = %pod.name_any(), error = %e, "marking orphaned pod failed");
    }
}

async fn force_delete(client: &Client, pod: &Pod, why: &str) {
    let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => tracing::info!(pod = %format!("{namespace}/{name}"), why, "PodGC deleted pod"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "PodGC could not delete pod"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str, created: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": created},
                "status": {"phase": phase}}))
            .unwrap(),
        )
    }

    #[test]
    fn the_oldest_terminated_pods_beyond_the_threshold_go() {
        let pods = vec![
            pod("new", "Succeeded", "2026-01-03T00:00:00Z"),
            pod("running", "Running", "2026-01-01T00:00:00Z"),
            pod("old", "Failed", "2026-01-01T00:00:00Z"),
            pod("mid", "Succeeded", "2026-01-02T00:00:00Z"),
        ];
        let names: Vec<String> = excess_terminated(&pods, 1).iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["old", "mid"]);
        assert!(excess_terminated(&pods, 3).is_empty());
    }
}
