//! Events about pods (`events.k8s.io/v1`, served as core/v1 too, so `kubectl describe` shows
//! them), from reporting controller `default-scheduler`. A repeated event (same pod, reason and
//! message) becomes a series on the first one instead of a new object.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};

/// The reporting controller, as upstream.
pub const REPORTER: &str = "default-scheduler";

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Something worked.
    Normal,
    /// Something needs attention.
    Warning,
}

#[derive(Debug, Clone)]
struct Seen {
    name: String,
    count: i32,
}

/// Writes events for pods.
pub struct EventSink {
    client: Client,
    instance: String,
    /// (pod uid, reason, message) → the event written for it; only for warnings, which repeat.
    series: Mutex<HashMap<(String, String, String), Seen>>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink").field("instance", &self.instance).finish_non_exhaustive()
    }
}

impl EventSink {
    /// A sink writing through `client`.
    pub fn new(client: Client) -> EventSink {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let instance = format!("{REPORTER}-{}", host.trim());
        EventSink { client, instance, series: Mutex::default() }
    }

    /// Publishes one event about `pod`.
    pub async fn publish(
        &self,
        pod: &Pod,
        kind: Kind,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let key = (uid, reason.to_string(), note.to_string());
        let now = MicroTime(Timestamp::now());
        let previous = match kind {
            Kind::Warning => self.series.lock().ok().and_then(|m| m.get(&key).cloned()),
            Kind::Normal => None,
        };
        if let Some(seen) = previous {
            let count = seen.count + 1;
            let series = EventSeries { count, last_observed_time: now.clone() };
            let patch = serde_json::json!({"series": series});
            if api.patch(&seen.name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
                if let Ok(mut m) = self.series.lock() {
                    m.insert(key, Seen { name: seen.name, count });
                }
                return Ok(());
            }
        }
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let name = format!("{pod_name}.{:x}", now.0.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(ns), ..Default::default() },
            event_time: Some(now),
            type_: Some(
                match kind {
                    Kind::Normal => "Normal",
                    Kind::Warning => "Warning",
                }
                .to_string(),
            ),
            reason: Some(reason.to_string()),
            action: Some(action.to_string()),
            note: Some(note.to_string()),
            regarding: Some(reference(pod)),
            reporting_controller: Some(REPORTER.to_string()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        // The created event is not needed back: skip decoding it (with its managed fields) for
        // every pod scheduled.
        let body = serde_json::to_vec(&event).map_err(kube::Error::SerdeError)?;
        let request = kube::core::Request::new(Event::url_path(&(), event.metadata.namespace.as_deref()))
            .create(&PostParams::default(), body)
            .map_err(kube::Error::BuildRequest)?;
        self.client.request_text(request).await?;
        if kind == Kind::Warning
            && let Ok(mut m) = self.series.lock()
        {
            // Bounded: forget everything now and then rather than track pod deletions here.
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(key, Seen { name, count: 1 });
        }
        Ok(())
    }
}

/// A reference to a pod for `regarding`.
pub fn reference(pod: &Pod) -> ObjectReference {
    let mut r = pod.object_ref(&());
    r.field_path = None;
    r
}
