//! The `Recreate` strategy: scale every old ReplicaSet to zero, wait until none of their pods
//! runs any more, then scale the new ReplicaSet up to `spec.replicas`.

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::ListParams;

use super::sync::Sync;
use super::{Error, active, key, replicas};
use crate::podtemplate;

/// How often to look again while old pods are still shutting down: their disappearance changes
/// no ReplicaSet, so no watch event would wake the controller.
const OLD_PODS_POLL: Duration = Duration::from_secs(1);

impl Sync {
    /// One step of a recreate rollout.
    pub async fn rollout_recreate(&mut self, new: Option<ReplicaSet>, mut old: Vec<ReplicaSet>) -> Result<(), Error> {
        let mut scaled_down = false;
        for rs in old.iter_mut() {
            if active([&*rs]).is_empty() {
                continue;
            }
            scaled_down |= self.scale_and_record(rs, 0).await?;
        }
        if scaled_down {
            return self.sync_rollout_status(&old, new.as_ref()).await;
        }
        if self.old_pods_running(new.as_ref(), &old).await? {
            self.requeue_after(OLD_PODS_POLL);
            return self.sync_rollout_status(&old, new.as_ref()).await;
        }
        let mut new = match new {
            Some(rs) => rs,
            None => self.create_new_replica_set(&old).await?,
        };
        let desired = replicas(&self.d);
        self.scale_and_record(&mut new, desired).await?;
        if super::status::deployment_complete(&self.d, self.d.status.as_ref()) {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(&old, Some(&new)).await
    }

    /// Whether any pod of an old ReplicaSet may still run: any old ReplicaSet reports pods, or a
    /// pod it controls is not terminal — terminating pods count, they may still be serving
    /// (upstream `oldPodsRunning`).
    async fn old_pods_running(&self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> Result<bool, Error> {
        if old.iter().any(|rs| rs.status.as_ref().is_some_and(|s| s.replicas > 0)) {
            return Ok(true);
        }
        let old_uids: Vec<String> = old.iter().filter_map(|rs| rs.uid()).collect();
        let new_uid = new.and_then(|rs| rs.uid());
        let selector = podtemplate::label_selector(self.d.spec.as_ref().map(|s| &s.selector))
            .map(|s| s.to_string())
            .unwrap_or_default();
        let pods = self.pods.list(&ListParams::default().labels(&selector)).await.map_err(|source| Error::List {
            what: "pods",
            key: key(&self.d),
            source,
        })?;
        Ok(pods.items.iter().any(|pod: &Pod| {
            let Some(owner) = podtemplate::controller_of(&pod.metadata) else { return false };
            Some(&owner.uid) != new_uid.as_ref()
                && old_uids.contains(&owner.uid)
                && !matches!(podtemplate::phase(pod), "Succeeded" | "Failed")
        }))
    }
}
