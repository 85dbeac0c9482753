//! One sync of a DaemonSet: its revision, claiming pods, one pod per eligible node, one step of
//! the update strategy, status and history cleanup (upstream `syncDaemonSet`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::eligibility::{self, Fit};
use super::{Error, TEMPLATE_GENERATION_LABEL, key, record};
use crate::podtemplate::{self, api_message, is_status};
use crate::statefulset::revision::{self, HASH_LABEL};
use crate::statefulset::scaled;

/// One sync of one DaemonSet, acting on what the API returns now.
pub struct Sync {
    client: Client,
    ds: DaemonSet,
    namespace: String,
    pods: Api<Pod>,
    /// The hash of the current template's revision.
    hash: String,
    /// Some pod is Ready but not yet available for `minReadySeconds`.
    waiting_for_availability: bool,
}

/// The rolling update parameters, resolved against the number of nodes that want a pod.
struct Budget {
    max_surge: i32,
    max_unavailable: i32,
}

impl Sync {
    /// A sync of `ds` (as just read from the API).
    pub fn new(client: Client, ds: DaemonSet) -> Sync {
        let namespace = ds.namespace().unwrap_or_default();
        Sync {
            pods: Api::namespaced(client.clone(), &namespace),
            client,
            ds,
            namespace,
            hash: String::new(),
            waiting_for_availability: false,
        }
    }

    /// Runs the sync; the action says when to look again.
    pub async fn run(mut self) -> Result<Action, Error> {
        let spec = self.ds.spec.clone().unwrap_or_default();
        let revisions: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &self.namespace);
        let uid = self.ds.uid().unwrap_or_default();
        let existing = revision::owned(&revisions, &self.namespace, &uid)
            .await
            .map_err(|source| Error::Revision { key: key(&self.ds), source })?;
        let collision = self.ds.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
        let owner = podtemplate::controller_ref(&self.ds);
        let (current, collision) =
            revision::ensure(&revisions, &self.namespace, &owner, &spec.template, true, &existing, collision)
                .await
                .map_err(|source| Error::Revision { key: key(&self.ds), source })?;
        self.hash = current.labels().get(HASH_LABEL).cloned().unwrap_or_default();

        let nodes: Api<Node> = Api::all(self.client.clone());
        let nodes = nodes.list(&ListParams::default()).await.map_err(|source| Error::List {
            what: "nodes",
            key: key(&self.ds),
            source,
        })?;
        let selector =
            podtemplate::label_selector(Some(&spec.selector)).map_err(|e| Error::Selector(key(&self.ds), e))?;
        let owned = self.claim_pods(&selector).await?;
        if self.ds.metadata.deletion_timestamp.is_none() {
            let changed = self.manage(&nodes.items, &owned).await?;
            if !changed {
                self.update(&nodes.items, &owned).await?;
            }
        }

        let owned = self.claim_pods(&selector).await?;
        let status = self.status(&nodes.items, &owned, collision);
        self.write_status(&status).await?;
        let hashes: BTreeSet<&str> =
            owned.iter().filter_map(|p| p.labels().get(HASH_LABEL)).map(String::as_str).collect();
        let mut history: Vec<ControllerRevision> =
            existing.into_iter().filter(|r| r.name_any() != current.name_any()).collect();
        history.push(current.clone());
        let live: BTreeSet<String> = history
            .iter()
            .filter(|r| {
                r.name_any() == current.name_any()
                    || r.labels().get(HASH_LABEL).is_some_and(|h| hashes.contains(h.as_str()))
            })
            .map(|r| r.name_any())
            .collect();
        revision::truncate(&revisions, &history, &live, spec.revision_history_limit.unwrap_or(10))
            .await
            .map_err(|source| Error::Revision { key: key(&self.ds), source })?;
        Ok(if self.waiting_for_availability {
            Action::requeue(Duration::from_secs(1))
        } else {
            Action::requeue(Duration::from_secs(300))
        })
    }

    /// The pods this DaemonSet controls (active or failed, not being deleted excluded later),
    /// adopting matching orphans and releasing owned pods that stopped matching.
    async fn claim_pods(&self, selector: &kapal_api::selector::LabelSelector) -> Result<Vec<Pod>, Error> {
        let list = self.pods.list(&ListParams::default()).await.map_err(|source| Error::List {
            what: "pods",
            key: key(&self.ds),
            source,
        })?;
        let candidates = list.items.into_iter().filter(|p| podtemplate::phase(p) != "Succeeded").collect();
        podtemplate::claim(&self.pods, &self.ds, selector, candidates, |_| true).await.map_err(|e| Error::Pod {
            verb: e.verb,
            namespace: self.namespace.clone(),
            name: e.name,
            source: e.source,
        })
    }

    fn template_spec(&self) -> k8s_openapi::api::core::v1::PodSpec {
        self.ds.spec.as_ref().and_then(|s| s.template.spec.clone()).unwrap_or_default()
    }

    fn budget(&self, desired: i32) -> Result<Budget, String> {
        let rolling = self
            .ds
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.rolling_update.clone())
            .unwrap_or_default();
        let resolve = |v: Option<IntOrString>, default: i32| match v {
            Some(v) => scaled(&v, desired),
            None => Ok(default),
        };
        let max_surge = resolve(rolling.max_surge, 0)?;
        let mut max_unavailable = resolve(rolling.max_unavailable, 1)?;
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        Ok(Budget { max_surge, max_unavailable })
    }

    /// Creates the missing daemon pods and deletes failed, surplus and misplaced ones; `true`
    /// when it changed anything (the update step then waits for the next sync).
    async fn manage(&mut self, nodes: &[Node], owned: &[Pod]) -> Result<bool, Error> {
        let spec = self.template_spec();
        let live: Vec<Pod> = owned.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).cloned().collect();
        let mut on_node = eligibility::by_node(&live);
        // A percentage rounds up, so any non-zero maxSurge resolves to at least 1 here.
        let surge = self.budget(1).map_err(|e| Error::Spec(key(&self.ds), e))?.max_surge > 0;
        let mut create = Vec::new();
        let mut delete: Vec<Pod> = Vec::new();
        for node in nodes {
            let name = node.name_any();
            let pods = on_node.remove(&name).unwrap_or_default();
            let Fit { should_run, may_stay } = eligibility::fit(&spec, node);
            if !may_stay {
                delete.extend(pods.into_iter().cloned());
                continue;
            }
            let (failed, running): (Vec<&Pod>, Vec<&Pod>) =
                pods.into_iter().partition(|p| podtemplate::phase(p) == "Failed");
            for pod in failed {
                let note = format!(
                    "Found failed daemon pod {}/{} on node {name}, will try to kill it",
                    self.namespace,
                    pod.name_any()
                );
                record(&self.client, &self.ds, EventType::Warning, "FailedDaemonPod", note).await;
                delete.push(pod.clone());
            }
            if should_run && running.is_empty() {
                create.push(name);
            } else if running.len() > 1 {
                delete.extend(self.surplus(running, surge));
            }
        }
        // Pods pinned to nodes that no longer exist.
        delete.extend(on_node.into_values().flatten().cloned());
        let changed = !create.is_empty() || !delete.is_empty();
        for node in create {
            self.create_pod(&node).await?;
        }
        for pod in &delete {
            self.delete_pod(pod).await?;
        }
        Ok(changed)
    }

    /// The pods to delete from a node running more than one: all but the oldest, except that
    /// during a surge an unavailable new pod may run beside an available old one.
    fn surplus(&mut self, mut pods: Vec<&Pod>, surge: bool) -> Vec<Pod> {
        pods.sort_by(|a, b| a.creation_timestamp().cmp(&b.creation_timestamp()).then(a.name_any().cmp(&b.name_any())));
        let (new, old): (Vec<&Pod>, Vec<&Pod>) = pods.iter().partition(|p| self.is_new(p));
        let keep: Vec<&Pod> = match (new.first(), old.first()) {
            (Some(n), Some(o)) if surge && !self.available(n) && self.available(o) => vec![n, o],
            (Some(n), _) if surge => vec![n],
            _ => pods.first().into_iter().copied().collect(),
        };
        pods.into_iter().filter(|p| !keep.iter().any(|k| k.uid() == p.uid())).cloned().collect()
    }

    fn is_new(&self, pod: &Pod) -> bool {
        let labels = pod.labels();
        match labels.get(HASH_LABEL) {
            Some(h) => *h == self.hash,
            None => {
                let generation = self.ds.metadata.generation.map(|g| g.to_string());
                generation.is_some() && labels.get(TEMPLATE_GENERATION_LABEL) == generation.as_ref()
            }
        }
    }

    fn available(&mut self, pod: &Pod) -> bool {
        let min_ready = self.ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let available = podtemplate::is_available(pod, min_ready, jiff::Timestamp::now());
        if !available && podtemplate::is_ready(pod) {
            self.waiting_for_availability = true;
        }
        available
    }

    /// One step of `RollingUpdate` (`OnDelete` waits for the user).
    async fn update(&mut self, nodes: &[Node], owned: &[Pod]) -> Result<(), Error> {
        let strategy = self.ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.type_.clone());
        if strategy.as_deref().unwrap_or("RollingUpdate") != "RollingUpdate" {
            return Ok(());
        }
        let spec = self.template_spec();
        let live: Vec<Pod> = owned.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).cloned().collect();
        let on_node = eligibility::by_node(&live);
        let wanted: Vec<String> =
            nodes.iter().filter(|n| eligibility::fit(&spec, n).should_run).map(|n| n.name_any()).collect();
        let budget =
            self.budget(i32::try_from(wanted.len()).unwrap_or(i32::MAX)).map_err(|e| Error::Spec(key(&self.ds), e))?;
        let mut unavailable = 0;
        let mut old_unavailable: Vec<Pod> = Vec::new();
        let mut old_available: Vec<(String, Pod)> = Vec::new();
        let mut surging = 0;
        let mut replace_now: Vec<String> = Vec::new();
        let mut old_after_new: Vec<Pod> = Vec::new();
        for node in &wanted {
            let pods = on_node.get(node).cloned().unwrap_or_default();
            let (new, old): (Vec<&Pod>, Vec<&Pod>) = pods.iter().partition(|p| self.is_new(p));
            if new.len() > 1 || old.len() > 1 {
                continue;
            }
            match (new.first(), old.first()) {
                (None, None) => unavailable += 1,
                (Some(n), None) => {
                    if !self.available(n) {
                        unavailable += 1;
                    }
                }
                (None, Some(o)) => {
                    if self.available(o) {
                        old_available.push((node.clone(), (*o).clone()));
                    } else {
                        unavailable += 1;
                        old_unavailable.push((*o).clone());
                        replace_now.push(node.clone());
                    }
                }
                (Some(n), Some(o)) => {
                    if self.available(n) {
                        old_after_new.push((*o).clone());
                    } else {
                        surging += 1;
                    }
                }
            }
        }
        if budget.max_surge > 0 {
            for pod in &old_after_new {
                self.delete_pod(pod).await?;
            }
            // An old pod that is unavailable anyway is replaced at once, outside the budget.
            for node in &replace_now {
                self.create_pod(node).await?;
            }
            let room = usize::try_from((budget.max_surge - surging).max(0)).unwrap_or(0);
            for (node, _) in old_available.iter().take(room) {
                self.create_pod(node).await?;
            }
            return Ok(());
        }
        for pod in &old_unavailable {
            self.delete_pod(pod).await?;
        }
        let room = usize::try_from((budget.max_unavailable - unavailable).max(0)).unwrap_or(0);
        for (_, pod) in old_available.iter().take(room) {
            self.delete_pod(pod).await?;
        }
        Ok(())
    }

    async fn create_pod(&self, node: &str) -> Result<(), Error> {
        let spec = self.ds.spec.clone().unwrap_or_default();
        let name = self.ds.name_any();
        let mut pod =
            podtemplate::pod_from_template(&spec.template, &format!("{name}-"), podtemplate::controller_ref(&self.ds));
        let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(HASH_LABEL.into(), self.hash.clone());
        if let Some(generation) = self.ds.metadata.generation {
            labels.insert(TEMPLATE_GENERATION_LABEL.into(), generation.to_string());
        }
        let pod_spec = pod.spec.get_or_insert_with(Default::default);
        pod_spec.tolerations = Some(eligibility::with_daemon_tolerations(pod_spec));
        eligibility::pin_to_node(pod_spec, node);
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(created) => {
                tracing::info!(pod = %created.name_any(), node, "created daemon pod");
                record(
                    &self.client,
                    &self.ds,
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!("Created pod: {}", created.name_any()),
                )
                .await;
                Ok(())
            }
            Err(source) => {
                let note = format!("Error creating: {}", api_message(&source));
                record(&self.client, &self.ds, EventType::Warning, "FailedCreate", note).await;
                Err(Error::Pod {
                    verb: "creating",
                    namespace: self.namespace.clone(),
                    name: format!("{name}-*"),
                    source,
                })
            }
        }
    }

    async fn delete_pod(&self, pod: &Pod) -> Result<(), Error> {
        let name = pod.name_any();
        match self.pods.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(pod = %name, "deleted daemon pod");
                record(&self.client, &self.ds, EventType::Normal, "SuccessfulDelete", format!("Deleted pod: {name}"))
                    .await;
                Ok(())
            }
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(source) => {
                let note = format!("Error deleting: {}", api_message(&source));
                record(&self.client, &self.ds, EventType::Warning, "FailedDelete", note).await;
                Err(Error::Pod { verb: "deleting", namespace: self.namespace.clone(), name, source })
            }
        }
    }

    fn status(&mut self, nodes: &[Node], owned: &[Pod], collision: i32) -> DaemonSetStatus {
        let spec = self.template_spec();
        let live: Vec<Pod> = owned
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && podtemplate::phase(p) != "Failed")
            .cloned()
            .collect();
        let on_node = eligibility::by_node(&live);
        let mut status = DaemonSetStatus {
            observed_generation: self.ds.metadata.generation,
            collision_count: Some(collision),
            conditions: self.ds.status.as_ref().and_then(|s| s.conditions.clone()),
            ..DaemonSetStatus::default()
        };
        let (mut available, mut updated) = (0, 0);
        for node in nodes {
            let pods = on_node.get(&node.name_any()).map(Vec::as_slice).unwrap_or_default();
            if !eligibility::fit(&spec, node).should_run {
                if !pods.is_empty() {
                    status.number_misscheduled += 1;
                }
                continue;
            }
            status.desired_number_scheduled += 1;
            // The pod that counts for the node: the updated one if any, else the oldest.
            let Some(pod) = pods.iter().find(|p| self.is_new(p)).or_else(|| pods.first()) else { continue };
            status.current_number_scheduled += 1;
            if podtemplate::is_ready(pod) {
                status.number_ready += 1;
                if self.available(pod) {
                    available += 1;
                }
            }
            if self.is_new(pod) {
                updated += 1;
            }
        }
        status.number_available = Some(available);
        status.updated_number_scheduled = Some(updated);
        status.number_unavailable = Some((status.desired_number_scheduled - available).max(0));
        status
    }

    async fn write_status(&self, status: &DaemonSetStatus) -> Result<(), Error> {
        if self.ds.status.as_ref() == Some(status) {
            return Ok(());
        }
        let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let patch = json!({"status": status});
        api.patch_status(&self.ds.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::Status(key(&self.ds), e))?;
        Ok(())
    }
}
