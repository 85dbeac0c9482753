//! One sync of one Deployment: claiming ReplicaSets, finding or creating the new one, scaling,
//! pausing and history cleanup. The strategies live in `rolling` and `recreate`, status in
//! `status`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::rolling::{fenceposts, is_rolling, new_rs_new_replicas, spec_sum};
use super::status::{self, PROGRESSING, condition, has_progress_deadline};
use super::{DESIRED_REPLICAS, Error, HASH_LABEL, MAX_REPLICAS, REVISION, active, history, key, list_sets, record};
use super::{replicas, rs_available, rs_replicas};
use crate::podtemplate::{self, api_message, is_status};

/// How long to wait before looking again when nothing else will wake the controller.
const RESYNC: Duration = Duration::from_secs(300);

/// The state of one sync: the Deployment as last read or written, and API handles.
pub struct Sync {
    pub client: Client,
    pub d: Deployment,
    pub deployments: Api<Deployment>,
    pub sets: Api<ReplicaSet>,
    pub pods: Api<Pod>,
    /// maxSurge and maxUnavailable resolved against `spec.replicas`.
    pub surge: i32,
    pub unavailable: i32,
    requeue: Option<Duration>,
}

impl Sync {
    /// A sync of `d`, as just read from the API.
    pub fn new(client: Client, d: Deployment) -> Sync {
        let namespace = d.namespace().unwrap_or_default();
        Sync {
            deployments: Api::namespaced(client.clone(), &namespace),
            sets: Api::namespaced(client.clone(), &namespace),
            pods: Api::namespaced(client.clone(), &namespace),
            client,
            d,
            surge: 0,
            unavailable: 0,
            requeue: None,
        }
    }

    /// Asks to look again within `after`.
    pub fn requeue_after(&mut self, after: Duration) {
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }

    /// When the controller should look at this Deployment again without a watch event.
    pub fn next_action(&self) -> Action {
        Action::requeue(self.requeue.unwrap_or(RESYNC))
    }

    /// Upstream `syncDeployment`.
    pub async fn run(&mut self) -> Result<(), Error> {
        (self.surge, self.unavailable) = fenceposts(&self.d).map_err(|e| Error::Strategy(key(&self.d), e))?;
        let spec = self.d.spec.clone().unwrap_or_default();
        let selector =
            podtemplate::label_selector(Some(&spec.selector)).map_err(|e| Error::Selector(key(&self.d), e))?;
        if selector.is_empty() {
            return self.refuse_selecting_all().await;
        }
        let sets = self.claim_sets(&selector).await?;
        let (new, old) = self.new_and_old(sets).await?;
        if self.d.metadata.deletion_timestamp.is_some() {
            return self.sync_deployment_status(&old, new.as_ref()).await;
        }
        self.check_paused_conditions().await?;
        if spec.paused == Some(true) || self.is_scaling_event(new.as_ref(), &old) {
            return self.scale_only(new, old).await;
        }
        if is_rolling(&self.d) { self.rollout_rolling(new, old).await } else { self.rollout_recreate(new, old).await }
    }

    async fn refuse_selecting_all(&mut self) -> Result<(), Error> {
        let note = "This deployment is selecting all pods. A non-empty selector is required.".to_string();
        record(&self.client, &self.d, EventType::Warning, "SelectingAll", note).await;
        let mut status = self.d.status.clone().unwrap_or_default();
        if status.observed_generation < self.d.metadata.generation {
            status.observed_generation = self.d.metadata.generation;
            self.write_status(status).await?;
        }
        Ok(())
    }

    /// The ReplicaSets this Deployment controls, after adopting matching orphans and releasing
    /// those that stopped matching.
    async fn claim_sets(&self, selector: &kapal_api::selector::LabelSelector) -> Result<Vec<ReplicaSet>, Error> {
        let uid = self.d.uid().unwrap_or_default();
        let deleting = self.d.metadata.deletion_timestamp.is_some();
        let mut owned = Vec::new();
        for rs in list_sets(&self.sets, &self.d).await? {
            let matches = podtemplate::selects(selector, &rs.metadata);
            let claim = match podtemplate::controller_of(&rs.metadata) {
                Some(r) if r.uid == uid && (matches || deleting) => {
                    owned.push(rs);
                    continue;
                }
                Some(r) if r.uid == uid => None,
                None if matches && !deleting && rs.metadata.deletion_timestamp.is_none() => {
                    Some(podtemplate::controller_ref(&self.d))
                }
                _ => continue,
            };
            let adopting = claim.is_some();
            let verb = if adopting { "adopting" } else { "releasing" };
            let claimed = podtemplate::set_controller(&self.sets, &rs, claim)
                .await
                .map_err(|source| self.rs_error(verb, &rs, source))?;
            tracing::info!(replicaset = %rs.name_any(), verb, "claimed replicaset");
            if let Some(adopted) = claimed.filter(|_| adopting) {
                owned.push(adopted);
            }
        }
        Ok(owned)
    }

    fn rs_error(&self, verb: &'static str, rs: &ReplicaSet, source: kube::Error) -> Error {
        Error::ReplicaSet { verb, namespace: rs.namespace().unwrap_or_default(), name: rs.name_any(), source }
    }

    /// Splits the ReplicaSets into the new one (if it exists) and the old ones, and brings the
    /// revision annotations of the new one and of the Deployment up to date (upstream
    /// `getAllReplicaSetsAndSyncRevision` without creation).
    async fn new_and_old(&mut self, sets: Vec<ReplicaSet>) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), Error> {
        let (existing, old) = history::split_new(&self.d, sets);
        let Some(mut rs) = existing else { return Ok((None, old)) };
        let new_revision = history::max_revision(&old) + 1;
        let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        let mut copy = rs.clone();
        let annotated = history::set_new_replica_set_annotations(&self.d, &mut copy, new_revision, true, self.surge);
        let rs_spec = copy.spec.get_or_insert_with(ReplicaSetSpec::default);
        if annotated || rs_spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0) {
            rs_spec.min_ready_seconds = min_ready;
            rs = self
                .sets
                .replace(&rs.name_any(), &PostParams::default(), &copy)
                .await
                .map_err(|e| self.rs_error("updating", &rs, e))?;
        }
        let revision = rs.annotations().get(REVISION).cloned().unwrap_or_default();
        self.set_revision(&revision).await?;
        if has_progress_deadline(&self.d) && status::get(self.d.status.as_ref(), PROGRESSING).is_none() {
            let message = format!("Found new replica set \"{}\"", rs.name_any());
            let mut s = self.d.status.clone().unwrap_or_default();
            status::set(&mut s, condition(PROGRESSING, "True", status::FOUND_NEW_RS, message, jiff::Timestamp::now()));
            self.write_status(s).await?;
        }
        Ok((Some(rs), old))
    }

    /// Creates the ReplicaSet for the current template (upstream `getNewReplicaSet` with
    /// creation).
    pub async fn create_new_replica_set(&mut self, old: &[ReplicaSet]) -> Result<ReplicaSet, Error> {
        let rs = self.new_replica_set_object(old);
        let name = rs.name_any();
        let wanted = rs_replicas(&rs);
        let (created, existed) = match self.sets.create(&PostParams::default(), &rs).await {
            Ok(created) => (created, false),
            Err(e) if is_status(&e, 409) => (self.existing_or_collision(&name).await?, true),
            Err(e) => return Err(self.failed_to_create(&rs, e).await),
        };
        if !existed && wanted > 0 {
            let note = format!("Scaled up replica set {name} from 0 to {wanted}");
            record(&self.client, &self.d, EventType::Normal, "ScalingReplicaSet", note).await;
        }
        let revision = (history::max_revision(old) + 1).to_string();
        self.set_revision(&revision).await?;
        if !existed && has_progress_deadline(&self.d) {
            let message = format!("Created new replica set \"{name}\"");
            let mut s = self.d.status.clone().unwrap_or_default();
            status::set(
                &mut s,
                condition(PROGRESSING, "True", status::NEW_RS_CREATED, message, jiff::Timestamp::now()),
            );
            self.write_status(s).await?;
        }
        Ok(created)
    }

    fn new_replica_set_object(&self, old: &[ReplicaSet]) -> ReplicaSet {
        let spec = self.d.spec.clone().unwrap_or_default();
        let hash = history::compute_hash(&spec.template, self.d.status.as_ref().and_then(|s| s.collision_count));
        let mut template = spec.template.clone();
        let template_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
        template_meta.labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.clone());
        let labels = template_meta.labels.clone();
        let mut selector = spec.selector.clone();
        selector.match_labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.clone());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", self.d.name_any())),
                namespace: self.d.namespace(),
                labels,
                owner_references: Some(vec![podtemplate::controller_ref(&self.d)]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let wanted = new_rs_new_replicas(&self.d, spec_sum(old), 0, self.surge);
        if let Some(s) = rs.spec.as_mut() {
            s.replicas = Some(wanted);
        }
        history::set_new_replica_set_annotations(&self.d, &mut rs, history::max_revision(old) + 1, false, self.surge);
        rs
    }

    /// After `AlreadyExists`: our own ReplicaSet for this template (a previous sync created it)
    /// is used; anything else is a hash collision, answered by raising `collisionCount`.
    async fn existing_or_collision(&mut self, name: &str) -> Result<ReplicaSet, Error> {
        let existing = self.sets.get(name).await.map_err(|source| Error::ReplicaSet {
            verb: "reading",
            namespace: self.d.namespace().unwrap_or_default(),
            name: name.into(),
            source,
        })?;
        let ours =
            podtemplate::controller_of(&existing.metadata).is_some_and(|r| Some(&r.uid) == self.d.uid().as_ref());
        let template = self.d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let same = existing
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| history::equal_ignore_hash(t, &template));
        if ours && same {
            return Ok(existing);
        }
        let mut s = self.d.status.clone().unwrap_or_default();
        s.collision_count = Some(s.collision_count.unwrap_or(0) + 1);
        self.write_status(s).await?;
        tracing::info!(replicaset = name, "hash collision; raised collisionCount");
        Err(Error::Collision(name.into()))
    }

    async fn failed_to_create(&mut self, rs: &ReplicaSet, source: kube::Error) -> Error {
        let message = format!("Failed to create new replica set \"{}\": {}", rs.name_any(), api_message(&source));
        record(&self.client, &self.d, EventType::Warning, status::RS_CREATE_ERROR, message.clone()).await;
        if has_progress_deadline(&self.d) {
            let mut s = self.d.status.clone().unwrap_or_default();
            status::set(
                &mut s,
                condition(PROGRESSING, "False", status::RS_CREATE_ERROR, message, jiff::Timestamp::now()),
            );
            if let Err(e) = self.write_status(s).await {
                tracing::warn!(error = %e, "recording the create failure");
            }
        }
        self.rs_error("creating", rs, source)
    }

    /// Sets the Deployment's revision annotation.
    async fn set_revision(&mut self, revision: &str) -> Result<(), Error> {
        if revision.is_empty() || self.d.annotations().get(REVISION).map(String::as_str) == Some(revision) {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
        let updated = self
            .deployments
            .patch(&self.d.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::Update(key(&self.d), e))?;
        self.d.metadata.annotations = updated.metadata.annotations;
        Ok(())
    }

    /// Writes `status` if it differs from the recorded one.
    pub async fn write_status(&mut self, status: DeploymentStatus) -> Result<(), Error> {
        if self.d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let mut body = serde_json::to_value(&status).unwrap_or_default();
        body["conditions"] = json!(status.conditions);
        let updated = self
            .deployments
            .patch_status(&self.d.name_any(), &PatchParams::default(), &Patch::Merge(&json!({"status": body})))
            .await
            .map_err(|e| Error::Update(key(&self.d), e))?;
        self.d.status = updated.status;
        Ok(())
    }

    /// Upstream `checkPausedConditions`: an Unknown Progressing condition marks pause and resume
    /// (unless the rollout already timed out).
    async fn check_paused_conditions(&mut self) -> Result<(), Error> {
        if !has_progress_deadline(&self.d) {
            return Ok(());
        }
        let reason = status::get(self.d.status.as_ref(), PROGRESSING).and_then(|c| c.reason.clone());
        if reason.as_deref() == Some(status::TIMED_OUT) {
            return Ok(());
        }
        let paused = self.d.spec.as_ref().and_then(|s| s.paused) == Some(true);
        let marked = reason.as_deref() == Some(status::PAUSED);
        let (new_reason, message) = match (paused, marked) {
            (true, false) => (status::PAUSED, "Deployment is paused"),
            (false, true) => (status::RESUMED, "Deployment is resumed"),
            _ => return Ok(()),
        };
        let mut s = self.d.status.clone().unwrap_or_default();
        status::set(&mut s, condition(PROGRESSING, "Unknown", new_reason, message.into(), jiff::Timestamp::now()));
        self.write_status(s).await
    }

    /// Whether `spec.replicas` changed since the active ReplicaSets were last scaled.
    fn is_scaling_event(&self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> bool {
        let want = replicas(&self.d);
        active(old.iter().chain(new)).iter().any(|rs| {
            rs.annotations().get(DESIRED_REPLICAS).and_then(|v| v.parse::<i32>().ok()).is_some_and(|d| d != want)
        })
    }

    /// Scaling without rolling out (upstream `sync`): paused, or a replica count change.
    async fn scale_only(&mut self, mut new: Option<ReplicaSet>, mut old: Vec<ReplicaSet>) -> Result<(), Error> {
        self.scale(&mut new, &mut old).await?;
        if self.d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
            self.cleanup(&old).await?;
        }
        self.sync_deployment_status(&old, new.as_ref()).await
    }

    /// Upstream `scale`: the only active ReplicaSet takes all replicas; a saturated new one
    /// retires the old; otherwise a rolling Deployment spreads the change in proportion.
    async fn scale(&self, new: &mut Option<ReplicaSet>, old: &mut [ReplicaSet]) -> Result<(), Error> {
        let want = replicas(&self.d);
        let active_count = active(old.iter().chain(new.iter())).len();
        let target: Option<&mut ReplicaSet> = match active_count {
            0 if new.is_some() => new.as_mut(),
            0 => old
                .iter_mut()
                .max_by(|a, b| creation(a).cmp(&creation(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name))),
            1 => new.iter_mut().chain(old.iter_mut()).find(|rs| rs_replicas(rs) > 0),
            _ => None,
        };
        if let Some(rs) = target {
            self.scale_and_record(rs, want).await?;
            return Ok(());
        }
        if new.as_ref().is_some_and(|rs| self.is_saturated(rs)) {
            for rs in old.iter_mut().filter(|rs| rs_replicas(rs) > 0) {
                self.scale_and_record(rs, 0).await?;
            }
            return Ok(());
        }
        if is_rolling(&self.d) {
            self.scale_proportionally(new, old).await?;
        }
        Ok(())
    }

    fn is_saturated(&self, rs: &ReplicaSet) -> bool {
        let want = replicas(&self.d);
        let desired = rs.annotations().get(DESIRED_REPLICAS).and_then(|v| v.parse::<i32>().ok());
        rs_replicas(rs) == want && desired == Some(want) && rs_available(rs) == want
    }

    /// Spreads `replicas + maxSurge - current` over the active ReplicaSets in proportion to their
    /// size when the rollout started (their `max-replicas` annotation); leftovers go to the
    /// largest.
    async fn scale_proportionally(&self, new: &mut Option<ReplicaSet>, old: &mut [ReplicaSet]) -> Result<(), Error> {
        let want = replicas(&self.d);
        let mut sets: Vec<&mut ReplicaSet> =
            new.iter_mut().chain(old.iter_mut()).filter(|rs| rs_replicas(rs) > 0).collect();
        let current: i32 = sets.iter().map(|rs| rs_replicas(rs)).sum();
        let allowed = if want > 0 { want + self.surge } else { 0 };
        let to_add = allowed - current;
        sets.sort_by(|a, b| {
            let by_age = creation(a).cmp(&creation(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name));
            // Larger first; between equals, newer first when growing and older first when shrinking.
            rs_replicas(b).cmp(&rs_replicas(a)).then(if to_add > 0 { by_age.reverse() } else { by_age })
        });
        let mut sizes = Vec::with_capacity(sets.len());
        let mut added = 0;
        for rs in &sets {
            let proportion = if to_add == 0 { 0 } else { self.proportion(rs, to_add, added) };
            sizes.push(rs_replicas(rs) + proportion);
            added += proportion;
        }
        if let Some(first) = sizes.first_mut() {
            *first = (*first + to_add - added).max(0);
        }
        for (rs, size) in sets.into_iter().zip(sizes) {
            self.scale_replica_set(rs, size).await?;
        }
        Ok(())
    }

    /// Upstream `GetProportion`.
    fn proportion(&self, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
        if rs_replicas(rs) == 0 || to_add == added {
            return 0;
        }
        let fraction = self.fraction(rs);
        let allowed = to_add - added;
        if to_add > 0 { fraction.min(allowed) } else { fraction.max(allowed) }
    }

    /// Upstream `getReplicaSetFraction`.
    fn fraction(&self, rs: &ReplicaSet) -> i32 {
        let want = replicas(&self.d);
        if want == 0 {
            return -rs_replicas(rs);
        }
        let total = want + self.surge;
        let annotated = rs
            .annotations()
            .get(MAX_REPLICAS)
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or_else(|| self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
        if annotated == 0 {
            return 0;
        }
        let size = (f64::from(rs_replicas(rs)) * f64::from(total) / f64::from(annotated)).round();
        size as i32 - rs_replicas(rs)
    }

    /// Scales `rs` to `size` if it is not there yet (upstream `scaleReplicaSetAndRecordEvent`).
    pub async fn scale_and_record(&self, rs: &mut ReplicaSet, size: i32) -> Result<bool, Error> {
        if rs_replicas(rs) == size {
            return Ok(false);
        }
        self.scale_replica_set(rs, size).await
    }

    /// Writes the size and the replica annotations; records `ScalingReplicaSet` when the size
    /// changed. Returns whether it did.
    async fn scale_replica_set(&self, rs: &mut ReplicaSet, size: i32) -> Result<bool, Error> {
        let want = replicas(&self.d);
        let from = rs_replicas(rs);
        let resize = from != size;
        if !resize && !history::replicas_annotations_need_update(rs, want, want + self.surge) {
            return Ok(false);
        }
        let mut copy = rs.clone();
        copy.spec.get_or_insert_with(ReplicaSetSpec::default).replicas = Some(size);
        history::set_replicas_annotations(&mut copy, want, want + self.surge);
        *rs = self
            .sets
            .replace(&rs.name_any(), &PostParams::default(), &copy)
            .await
            .map_err(|e| self.rs_error("scaling", rs, e))?;
        if resize {
            let direction = if size > from { "up" } else { "down" };
            let note = format!("Scaled {direction} replica set {} from {from} to {size}", rs.name_any());
            tracing::info!(replicaset = %rs.name_any(), from, to = size, "scaled replicaset");
            record(&self.client, &self.d, EventType::Normal, "ScalingReplicaSet", note).await;
        }
        Ok(resize)
    }

    /// Deletes old ReplicaSets beyond `revisionHistoryLimit`.
    pub async fn cleanup(&self, old: &[ReplicaSet]) -> Result<(), Error> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else { return Ok(()) };
        if limit == i32::MAX {
            return Ok(());
        }
        for rs in history::cleanable(old, limit) {
            tracing::info!(replicaset = %rs.name_any(), "deleting old replicaset beyond the revision history limit");
            match self.sets.delete(&rs.name_any(), &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(self.rs_error("deleting", rs, e)),
            }
        }
        Ok(())
    }
}

fn creation(rs: &ReplicaSet) -> Option<jiff::Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}
