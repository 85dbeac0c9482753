//! ControllerRevisions: the history of a StatefulSet's or DaemonSet's pod template, as upstream
//! keeps it (`pkg/controller/history`), so that `kubectl rollout history/undo` work.
//!
//! A revision's `data` is the strategic-merge patch that puts its template back
//! (`{"spec":{"template":{…,"$patch":"replace"}}}`), which is exactly what `kubectl rollout undo`
//! applies. Its name is `<owner>-<hash>`, the hash being FNV-32a over that data plus the owner's
//! collision count, written in upstream's safe alphabet.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::podtemplate::{self, is_status};

/// The label on revisions and pods naming the revision (the hash for DaemonSets, the revision
/// name for StatefulSets).
pub const HASH_LABEL: &str = "controller-revision-hash";

/// The label every revision carries with its hash (upstream `ControllerRevisionHashLabel`).
pub const REVISION_HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// The alphabet of `rand.SafeEncodeString`.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// What can go wrong keeping the history.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing controllerrevisions in {namespace}: {source}")]
    List { namespace: String, source: kube::Error },
    #[error("{verb} controllerrevision {namespace}/{name}: {source}")]
    Write { verb: &'static str, namespace: String, name: String, source: kube::Error },
}

/// The revision data that restores `template`.
pub fn patch_data(template: &PodTemplateSpec) -> Value {
    let mut template = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut template {
        map.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// The template a revision restores, if its data holds one.
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    if let Value::Object(map) = &mut template {
        map.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// The hash of revision data with the owner's collision count (upstream `HashControllerRevision`).
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut write = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    write(&serde_json::to_vec(data).unwrap_or_default());
    if let Some(c) = collision_count {
        write(&c.to_le_bytes());
    }
    h.to_string().bytes().map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()])).collect()
}

/// The revisions `owner_uid` controls in `namespace`, oldest revision first.
pub async fn owned(
    api: &Api<ControllerRevision>,
    namespace: &str,
    owner_uid: &str,
) -> Result<Vec<ControllerRevision>, Error> {
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List { namespace: namespace.to_string(), source })?;
    let mut revisions: Vec<_> = list
        .items
        .into_iter()
        .filter(|r| podtemplate::controller_of(&r.metadata).is_some_and(|o| o.uid == owner_uid))
        .collect();
    revisions.sort_by(|a, b| a.revision.cmp(&b.revision).then_with(|| a.name_any().cmp(&b.name_any())));
    Ok(revisions)
}

/// The revision for `template`, created or renumbered as upstream does: an identical revision
/// that is not the newest gets the next number (a rollback); none creates one, raising
/// `collision_count` while another revision holds the name. Returns the revision and the
/// collision count to report. The revision is labelled like the template, plus
/// `controller-revision-hash` when `hash_label` (DaemonSets do so).
pub async fn ensure(
    api: &Api<ControllerRevision>,
    namespace: &str,
    owner: &OwnerReference,
    template: &PodTemplateSpec,
    hash_label: bool,
    existing: &[ControllerRevision],
    mut collision_count: i32,
) -> Result<(ControllerRevision, i32), Error> {
    let data = patch_data(template);
    let next = existing.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
    let namespace = namespace.to_string();
    if let Some(equal) = existing.iter().rev().find(|r| r.data.as_ref().map(|d| &d.0) == Some(&data)) {
        if existing.last().map(|r| r.name_any()) == Some(equal.name_any()) {
            return Ok((equal.clone(), collision_count));
        }
        let patch = json!({"revision": next});
        let updated = api
            .patch(&equal.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::Write { verb: "renumbering", namespace, name: equal.name_any(), source })?;
        return Ok((updated, collision_count));
    }
    loop {
        let h = hash(&data, (collision_count > 0).then_some(collision_count));
        let name = format!("{}-{h}", owner.name);
        let mut labels: BTreeMap<String, String> =
            template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
        labels.insert(REVISION_HASH_LABEL.into(), h.clone());
        if hash_label {
            labels.insert(HASH_LABEL.into(), h.clone());
        }
        let revision = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                owner_references: Some(vec![owner.clone()]),
                ..ObjectMeta::default()
            },
            data: Some(RawExtension(data.clone())),
            revision: next,
        };
        match api.create(&PostParams::default(), &revision).await {
            Ok(created) => return Ok((created, collision_count)),
            Err(e) if is_status(&e, 409) => {
                let found = api.get_opt(&name).await.map_err(|source| Error::Write {
                    verb: "reading",
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source,
                })?;
                match found {
                    Some(found)
                        if found.data.as_ref().map(|d| &d.0) == Some(&data)
                            && podtemplate::controller_of(&found.metadata).is_some_and(|o| o.uid == owner.uid) =>
                    {
                        return Ok((found, collision_count));
                    }
                    // Deleted meanwhile: try the same name again.
                    None => {}
                    Some(_) => collision_count += 1,
                }
            }
            Err(source) => return Err(Error::Write { verb: "creating", namespace, name, source }),
        }
    }
}

/// Deletes the oldest revisions beyond `limit`, never one named in `live` (used by a pod or
/// current/update revisions).
pub async fn truncate(
    api: &Api<ControllerRevision>,
    revisions: &[ControllerRevision],
    live: &BTreeSet<String>,
    limit: i32,
) -> Result<(), Error> {
    let old: Vec<_> = revisions.iter().filter(|r| !live.contains(&r.name_any())).collect();
    let excess = old.len().saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
    for r in old.into_iter().take(excess) {
        match api.delete(&r.name_any(), &DeleteParams::default()).await {
            Ok(_) => tracing::debug!(revision = %r.name_any(), "deleted old controllerrevision"),
            Err(e) if is_status(&e, 404) => {}
            Err(source) => {
                return Err(Error::Write {
                    verb: "deleting",
                    namespace: r.namespace().unwrap_or_default(),
                    name: r.name_any(),
                    source,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}]}}))
        .unwrap()
    }

    #[test]
    fn data_restores_the_template_and_hashes_stably() {
        let t = template("nginx:1");
        let data = patch_data(&t);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let rev = ControllerRevision { data: Some(RawExtension(data.clone())), ..Default::default() };
        assert_eq!(template_of(&rev), Some(t));
        let h = hash(&data, None);
        assert_eq!(h, hash(&data, None));
        assert_ne!(h, hash(&data, Some(1)));
        assert_ne!(h, hash(&patch_data(&template("nginx:2")), None));
        assert!(h.bytes().all(|b| ALPHABET.contains(&b)) && !h.is_empty() && h.len() <= 10);
    }
}
