//! Talking back to the API: bindings through `pods/binding`, the `PodScheduled` condition on
//! `pods/status`, and the events about both.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::events::{EventSink, Kind};
use crate::podinfo::pod_key;

/// Errors talking to the API.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The binding was refused or failed.
    #[error("binding pod {pod} to node {node}: {source}")]
    Bind {
        /// `namespace/name`.
        pod: String,
        /// The target node.
        node: String,
        /// The API error.
        source: kube::Error,
    },
}

impl BindError {
    /// Whether the API says the pod is gone or already bound: nothing to retry.
    pub fn is_final(&self) -> bool {
        matches!(self, BindError::Bind { source: kube::Error::Api(s), .. } if s.code == 404 || s.code == 409)
    }
}

/// Writes bindings, conditions and events.
#[derive(Clone)]
pub struct Binder {
    client: Client,
    events: Arc<EventSink>,
}

fn pods(client: &Client, pod: &Pod) -> Api<Pod> {
    Api::namespaced(client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"))
}

impl std::fmt::Debug for Binder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binder").finish_non_exhaustive()
    }
}

impl Binder {
    /// A binder using `client`.
    pub fn new(client: Client) -> Binder {
        Binder { events: Arc::new(EventSink::new(client.clone())), client }
    }

    /// Binds `pod` to `node`.
    pub async fn bind(&self, pod: &Pod, node: &str) -> Result<(), BindError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let key = pod_key(pod);
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": pod.metadata.namespace, "uid": pod.metadata.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        pods(&self.client, pod)
            .create_subresource::<_, serde_json::Value>("binding", &name, &PostParams::default(), &binding)
            .await
            .map_err(|source| BindError::Bind { pod: key.clone(), node: node.to_string(), source })?;
        Ok(())
    }

    /// Records `Scheduled` for a pod bound to `node`.
    pub async fn record_scheduled(&self, pod: &Pod, node: &str) {
        let key = pod_key(pod);
        let note = format!("Successfully assigned {key} to {node}");
        if let Err(error) = self.events.publish(pod, Kind::Normal, "Scheduled", "Binding", &note).await {
            tracing::warn!(pod = %key, %error, "recording the Scheduled event");
        }
    }

    /// Records a failed attempt: `PodScheduled=False` (unless already saying the same) and a
    /// `FailedScheduling` warning.
    pub async fn record_failure(&self, pod: &Pod, reason: &str, message: &str, nominated: Option<&str>) {
        let key = pod_key(pod);
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
        let same = current.is_some_and(|c| {
            c.status == "False" && c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message)
        });
        let nomination_changed =
            nominated.is_some_and(|n| pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()) != Some(n));
        if !same || nomination_changed {
            // The transition time moves only when the status does.
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let since = current.filter(|c| c.status == "False").and_then(|c| c.last_transition_time.as_ref());
            let since = since.map(|t| t.0.to_string()).unwrap_or(now);
            let mut patch = json!({"status": {"conditions": [{
                "type": "PodScheduled", "status": "False", "reason": reason, "message": message,
                "lastProbeTime": null, "lastTransitionTime": since,
            }]}});
            if let Some(node) = nominated {
                patch["status"]["nominatedNodeName"] = json!(node);
            }
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            if let Err(error) =
                pods(&self.client, pod).patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch)).await
            {
                tracing::warn!(pod = %key, %error, "updating the PodScheduled condition");
            }
        }
        if let Err(error) = self.events.publish(pod, Kind::Warning, "FailedScheduling", "Scheduling", message).await {
            tracing::warn!(pod = %key, %error, "recording the FailedScheduling event");
        }
    }

    /// Evicts preemption victims: a `DisruptionTarget` condition, a `Preempted` event, then a
    /// graceful delete.
    pub async fn preempt(&self, preemptor: &Pod, node: &str, victims: &[Arc<Pod>]) {
        let uid = preemptor.metadata.uid.clone().unwrap_or_default();
        for victim in victims {
            let key = pod_key(victim);
            let name = victim.metadata.name.as_deref().unwrap_or_default();
            let api = pods(&self.client, victim);
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let patch = json!({"status": {"conditions": [{
                "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                "message": "default-scheduler: preempting to accommodate a higher priority pod",
                "lastTransitionTime": now,
            }]}});
            if let Err(error) = api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
                tracing::warn!(pod = %key, %error, "marking a preemption victim");
            }
            let note = format!("Preempted by pod {uid} on node {node}");
            if let Err(error) = self.events.publish(victim, Kind::Normal, "Preempted", "Preempting", &note).await {
                tracing::warn!(pod = %key, %error, "recording the Preempted event");
            }
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(pod = %key, preemptor = %pod_key(preemptor), %node, "preempted"),
                Err(error) => tracing::warn!(pod = %key, %error, "deleting a preemption victim"),
            }
        }
    }
}
