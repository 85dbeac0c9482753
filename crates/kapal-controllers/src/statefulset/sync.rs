//! One sync of a StatefulSet: revisions, claiming pods, creating/deleting pods in order, one step
//! of the update strategy, claim retention, status and history cleanup (upstream
//! `defaultStatefulSetControl.UpdateStatefulSet`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::identity::{self, ordinal, revision_of};
use super::{Error, key, record, revision};
use crate::podtemplate::{self, api_message, is_status};

/// Whether management may go on after a step, or must wait for the cluster to move.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Continue,
    Wait,
}

/// One sync of one StatefulSet, acting on what the API returns now.
pub struct Sync {
    client: Client,
    set: StatefulSet,
    namespace: String,
    pods: Api<Pod>,
    claims: Api<PersistentVolumeClaim>,
    revisions: Api<ControllerRevision>,
    /// A pod became Ready but is not yet available for `minReadySeconds`.
    waiting_for_availability: bool,
}

/// The set's pods by role: `replicas[i]` holds ordinal `start + i`; `condemned` are the owned
/// pods outside that range, highest ordinal first.
struct Pods {
    replicas: Vec<Option<Pod>>,
    condemned: Vec<Pod>,
}

impl Sync {
    /// A sync of `set` (as just read from the API).
    pub fn new(client: Client, set: StatefulSet) -> Sync {
        let namespace = set.namespace().unwrap_or_default();
        Sync {
            pods: Api::namespaced(client.clone(), &namespace),
            claims: Api::namespaced(client.clone(), &namespace),
            revisions: Api::namespaced(client.clone(), &namespace),
            client,
            set,
            namespace,
            waiting_for_availability: false,
        }
    }

    /// Runs the sync; the action says when to look again.
    pub async fn run(mut self) -> Result<Action, Error> {
        let spec = self.set.spec.clone().unwrap_or_default();
        let uid = self.set.uid().unwrap_or_default();
        let existing = revision::owned(&self.revisions, &self.namespace, &uid)
            .await
            .map_err(|source| Error::Revision { key: key(&self.set), source })?;
        let collision = self.set.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
        let owner = podtemplate::controller_ref(&self.set);
        let (update, collision) =
            revision::ensure(&self.revisions, &self.namespace, &owner, &spec.template, false, &existing, collision)
                .await
                .map_err(|source| Error::Revision { key: key(&self.set), source })?;
        let mut history: Vec<ControllerRevision> =
            existing.into_iter().filter(|r| r.name_any() != update.name_any()).collect();
        history.push(update.clone());
        let wanted_current = self.set.status.as_ref().and_then(|s| s.current_revision.clone());
        let current = wanted_current
            .and_then(|name| history.iter().find(|r| r.name_any() == name).cloned())
            .unwrap_or_else(|| update.clone());
        let current_template = revision::template_of(&current).unwrap_or_else(|| spec.template.clone());

        let selector =
            podtemplate::label_selector(Some(&spec.selector)).map_err(|e| Error::Selector(key(&self.set), e))?;
        let owned = self.claim_pods(&selector).await?;
        if self.set.metadata.deletion_timestamp.is_none() {
            let pods = self.split(owned);
            self.retain_claims(&pods).await?;
            self.manage(pods, &current, &current_template, &update).await?;
        }

        let owned = self.claim_pods(&selector).await?;
        let status = self.status(&owned, &current, &update, collision);
        self.write_status(&status).await?;
        let mut live: BTreeSet<String> = owned.iter().filter_map(|p| revision_of(p).map(String::from)).collect();
        live.extend(status.current_revision.clone());
        live.extend(status.update_revision.clone());
        revision::truncate(&self.revisions, &history, &live, spec.revision_history_limit.unwrap_or(10))
            .await
            .map_err(|source| Error::Revision { key: key(&self.set), source })?;
        Ok(if self.waiting_for_availability {
            Action::requeue(Duration::from_secs(1))
        } else {
            Action::requeue(Duration::from_secs(300))
        })
    }

    /// The pods this set controls, adopting matching orphans that carry one of its names and
    /// releasing owned pods that stopped matching (upstream `ClaimPods` with the set's filter).
    async fn claim_pods(&self, selector: &kapal_api::selector::LabelSelector) -> Result<Vec<Pod>, Error> {
        let list = self.pods.list(&ListParams::default()).await.map_err(|source| Error::List {
            what: "pods",
            key: key(&self.set),
            source,
        })?;
        let name = self.set.name_any();
        let named = |pod: &Pod| ordinal(&name, &pod.name_any()).is_some();
        podtemplate::claim(&self.pods, &self.set, selector, list.items, named).await.map_err(|e| Error::Write {
            verb: e.verb,
            what: "pod",
            namespace: self.namespace.clone(),
            name: e.name,
            source: e.source,
        })
    }

    fn split(&self, owned: Vec<Pod>) -> Pods {
        let start = identity::start(&self.set);
        let count = identity::replicas(&self.set).max(0);
        let mut replicas: Vec<Option<Pod>> = (0..count).map(|_| None).collect();
        let mut condemned = Vec::new();
        let name = self.set.name_any();
        for pod in owned {
            let Some(ord) = ordinal(&name, &pod.name_any()) else { continue };
            match usize::try_from(ord - start).ok().filter(|i| *i < replicas.len()) {
                Some(i) => replicas[i] = Some(pod),
                None => condemned.push(pod),
            }
        }
        condemned.sort_by_key(|p| std::cmp::Reverse(ordinal(&name, &p.name_any())));
        Pods { replicas, condemned }
    }

    /// Creates pods and claims, deletes failed and surplus pods, then takes one update step.
    async fn manage(
        &mut self,
        pods: Pods,
        current: &ControllerRevision,
        current_template: &PodTemplateSpec,
        update: &ControllerRevision,
    ) -> Result<(), Error> {
        let spec = self.set.spec.clone().unwrap_or_default();
        let ordered = spec.pod_management_policy.as_deref() != Some("Parallel");
        let start = identity::start(&self.set);
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        let rolling = strategy.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate";
        let partition = strategy.rolling_update.as_ref().and_then(|r| r.partition).unwrap_or(0);
        let claims = self.existing_claims().await?;

        for (i, slot) in pods.replicas.iter().enumerate() {
            let ord = start + i32::try_from(i).unwrap_or(i32::MAX);
            let step = match slot {
                None => {
                    let index = i32::try_from(i).unwrap_or(i32::MAX);
                    let (template, revision) = if rolling && index < partition {
                        (current_template, current.name_any())
                    } else {
                        (&spec.template, update.name_any())
                    };
                    self.create_pod(&claims, template, &revision, ord).await?;
                    Step::Wait
                }
                Some(pod) if matches!(podtemplate::phase(pod), "Failed" | "Succeeded") => {
                    if pod.metadata.deletion_timestamp.is_none() {
                        self.delete_pod(pod).await?;
                    }
                    Step::Wait
                }
                Some(pod) if pod.metadata.deletion_timestamp.is_some() => Step::Wait,
                Some(pod) => {
                    self.create_claims(&claims, &pod.name_any(), ord).await?;
                    if self.healthy(pod) { Step::Continue } else { Step::Wait }
                }
            };
            if ordered && step == Step::Wait {
                return Ok(());
            }
        }
        for pod in &pods.condemned {
            if pod.metadata.deletion_timestamp.is_none() {
                self.delete_pod(pod).await?;
            }
            if ordered {
                return Ok(());
            }
        }
        if !rolling {
            return Ok(());
        }
        self.roll(&pods.replicas, partition, strategy.rolling_update.and_then(|r| r.max_unavailable), update).await
    }

    /// One step of `RollingUpdate`: replaces outdated pods from the highest ordinal down to the
    /// partition, while fewer than `maxUnavailable` (default 1) of those are unavailable.
    async fn roll(
        &mut self,
        replicas: &[Option<Pod>],
        partition: i32,
        max_unavailable: Option<IntOrString>,
        update: &ControllerRevision,
    ) -> Result<(), Error> {
        let total = i32::try_from(replicas.len()).unwrap_or(i32::MAX);
        let max_unavailable = match max_unavailable {
            Some(v) => scaled(&v, total).map_err(|e| Error::Spec(key(&self.set), e))?.max(1),
            None => 1,
        };
        let first = usize::try_from(partition.max(0)).unwrap_or(0);
        let range = replicas.get(first..).unwrap_or_default();
        let mut unavailable = range.iter().filter(|p| !p.as_ref().is_some_and(|p| self.healthy(p))).count();
        let budget = usize::try_from(max_unavailable).unwrap_or(1);
        for pod in range.iter().rev().flatten() {
            if unavailable >= budget {
                return Ok(());
            }
            let outdated = revision_of(pod) != Some(update.name_any().as_str());
            if outdated && pod.metadata.deletion_timestamp.is_none() {
                let was_healthy = self.healthy(pod);
                self.delete_pod(pod).await?;
                if was_healthy {
                    unavailable += 1;
                }
            }
        }
        Ok(())
    }

    /// Running and Ready, not being deleted, and available for `minReadySeconds`.
    fn healthy(&mut self, pod: &Pod) -> bool {
        if pod.metadata.deletion_timestamp.is_some() || podtemplate::phase(pod) != "Running" {
            return false;
        }
        if !podtemplate::is_ready(pod) {
            return false;
        }
        let min_ready = self.set.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let available = podtemplate::is_available(pod, min_ready, jiff::Timestamp::now());
        if !available {
            self.waiting_for_availability = true;
        }
        available
    }

    async fn existing_claims(&self) -> Result<BTreeMap<String, PersistentVolumeClaim>, Error> {
        if identity::claim_templates(&self.set).is_empty() {
            return Ok(BTreeMap::new());
        }
        let list = self.claims.list(&ListParams::default()).await.map_err(|source| Error::List {
            what: "persistentvolumeclaims",
            key: key(&self.set),
            source,
        })?;
        Ok(list.items.into_iter().map(|c| (c.name_any(), c)).collect())
    }

    /// Creates the claims of the pod with `ordinal` that do not exist yet.
    async fn create_claims(
        &self,
        existing: &BTreeMap<String, PersistentVolumeClaim>,
        pod: &str,
        ordinal: i32,
    ) -> Result<(), Error> {
        let set = self.set.name_any();
        for claim in identity::new_claims(&self.set, ordinal) {
            let name = claim.name_any();
            if existing.contains_key(&name) {
                continue;
            }
            match self.claims.create(&PostParams::default(), &claim).await {
                Ok(_) => {
                    let note = format!("create Claim {name} Pod {pod} in StatefulSet {set} success");
                    record(&self.client, &self.set, EventType::Normal, "SuccessfulCreate", note).await;
                }
                Err(e) if is_status(&e, 409) => {}
                Err(source) => {
                    let note = format!(
                        "create Claim {name} for Pod {pod} in StatefulSet {set} failed error: {}",
                        api_message(&source)
                    );
                    record(&self.client, &self.set, EventType::Warning, "FailedCreate", note).await;
                    let namespace = self.namespace.clone();
                    return Err(Error::Write {
                        verb: "creating",
                        what: "persistentvolumeclaim",
                        namespace,
                        name,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    async fn create_pod(
        &self,
        claims: &BTreeMap<String, PersistentVolumeClaim>,
        template: &PodTemplateSpec,
        revision: &str,
        ordinal: i32,
    ) -> Result<(), Error> {
        let pod = identity::new_pod(&self.set, template, revision, ordinal);
        let name = pod.name_any();
        self.create_claims(claims, &name, ordinal).await?;
        let set = self.set.name_any();
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                tracing::info!(pod = %name, revision, "created pod");
                let note = format!("create Pod {name} in StatefulSet {set} successful");
                record(&self.client, &self.set, EventType::Normal, "SuccessfulCreate", note).await;
                Ok(())
            }
            // Still terminating, or made by an earlier sync the list did not show: wait for it.
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(source) => {
                let note = format!("create Pod {name} in StatefulSet {set} failed error: {}", api_message(&source));
                record(&self.client, &self.set, EventType::Warning, "FailedCreate", note).await;
                Err(Error::Write { verb: "creating", what: "pod", namespace: self.namespace.clone(), name, source })
            }
        }
    }

    async fn delete_pod(&self, pod: &Pod) -> Result<(), Error> {
        let name = pod.name_any();
        let set = self.set.name_any();
        // Only the pod we looked at: a replacement with the same name must survive a stale view.
        let params = DeleteParams {
            preconditions: Some(kube::api::Preconditions { uid: pod.uid(), resource_version: None }),
            ..DeleteParams::default()
        };
        match self.pods.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(pod = %name, "deleted pod");
                let note = format!("delete Pod {name} in StatefulSet {set} successful");
                record(&self.client, &self.set, EventType::Normal, "SuccessfulDelete", note).await;
                Ok(())
            }
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(source) => {
                let note = format!("delete Pod {name} in StatefulSet {set} failed error: {}", api_message(&source));
                record(&self.client, &self.set, EventType::Warning, "FailedDelete", note).await;
                Err(Error::Write { verb: "deleting", what: "pod", namespace: self.namespace.clone(), name, source })
            }
        }
    }

    /// Sets the ownerReferences of each pod's claims from the retention policy, so that the
    /// garbage collector deletes them with the set or with a scaled-away pod.
    async fn retain_claims(&self, pods: &Pods) -> Result<(), Error> {
        if identity::claim_templates(&self.set).is_empty() {
            return Ok(());
        }
        let existing = self.existing_claims().await?;
        let name = self.set.name_any();
        let roles = pods.replicas.iter().flatten().map(|p| (p, false)).chain(pods.condemned.iter().map(|p| (p, true)));
        for (pod, condemned) in roles {
            let Some(ord) = ordinal(&name, &pod.name_any()) else { continue };
            for template in identity::claim_templates(&self.set) {
                let claim_name = identity::claim_name(template, &self.set, ord);
                let Some(claim) = existing.get(&claim_name) else { continue };
                let current = claim.metadata.owner_references.clone().unwrap_or_default();
                let wanted = identity::claim_owners(&self.set, pod, condemned, &current);
                if wanted == current {
                    continue;
                }
                let patch = json!({"metadata": {"ownerReferences": wanted,
                    "resourceVersion": claim.metadata.resource_version}});
                match self.claims.patch(&claim_name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => tracing::info!(claim = %claim_name, condemned, "updated claim owners"),
                    Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                    Err(source) => {
                        let namespace = self.namespace.clone();
                        let name = claim_name;
                        return Err(Error::Write {
                            verb: "updating",
                            what: "persistentvolumeclaim",
                            namespace,
                            name,
                            source,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn status(
        &mut self,
        owned: &[Pod],
        current: &ControllerRevision,
        update: &ControllerRevision,
        collision: i32,
    ) -> StatefulSetStatus {
        let name = self.set.name_any();
        let pods: Vec<&Pod> = owned.iter().filter(|p| ordinal(&name, &p.name_any()).is_some()).collect();
        let (current_name, update_name) = (current.name_any(), update.name_any());
        let live = |p: &&&Pod| p.metadata.deletion_timestamp.is_none();
        let replicas = count(pods.len());
        let ready =
            count(pods.iter().filter(|p| podtemplate::phase(p) == "Running" && podtemplate::is_ready(p)).count());
        let available = count(pods.iter().filter(|p| self.healthy(p)).count());
        let at = |rev: &str| count(pods.iter().filter(live).filter(|p| revision_of(p) == Some(rev)).count());
        let (mut current_replicas, updated) = (at(&current_name), at(&update_name));
        let rolling = self
            .set
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
        let mut current_revision = current_name;
        if rolling && updated == replicas && ready == replicas && replicas == identity::replicas(&self.set) {
            current_revision = update_name.clone();
            current_replicas = updated;
        }
        StatefulSetStatus {
            observed_generation: self.set.metadata.generation,
            replicas,
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            current_replicas: Some(current_replicas),
            updated_replicas: Some(updated),
            current_revision: Some(current_revision),
            update_revision: Some(update_name),
            collision_count: Some(collision),
            conditions: self.set.status.as_ref().and_then(|s| s.conditions.clone()),
        }
    }

    async fn write_status(&self, status: &StatefulSetStatus) -> Result<(), Error> {
        if self.set.status.as_ref() == Some(status) {
            return Ok(());
        }
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let patch = json!({"status": status});
        api.patch_status(&self.set.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::Status(key(&self.set), e))?;
        Ok(())
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A count or percentage of `total`, percentages rounded up (upstream resolves the
/// StatefulSet's `maxUnavailable` with rounding up).
pub(crate) fn scaled(value: &IntOrString, total: i32) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let scaled = (percent * i64::from(total) + 99).div_euclid(100);
            i32::try_from(scaled).map_err(|_| format!("{s} of {total} is out of range"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&IntOrString::String("25%".into()), 5), Ok(2));
        assert_eq!(scaled(&IntOrString::String("10%".into()), 3), Ok(1));
        assert_eq!(scaled(&IntOrString::Int(2), 10), Ok(2));
        assert!(scaled(&IntOrString::String("x".into()), 10).is_err());
    }
}
