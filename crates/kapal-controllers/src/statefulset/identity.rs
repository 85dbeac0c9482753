//! A StatefulSet pod's identity: its name and ordinal, network identity, labels and claims.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use super::revision::HASH_LABEL;
use super::{POD_INDEX_LABEL, POD_NAME_LABEL};
use crate::podtemplate;

/// The first ordinal (`spec.ordinals.start`, default 0).
pub fn start(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.ordinals.as_ref()).and_then(|o| o.start).unwrap_or(0)
}

/// `spec.replicas`, default 1.
pub fn replicas(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// The ordinal of a pod named `<set>-<ordinal>`, if `pod_name` is one of the set's names.
pub fn ordinal(set_name: &str, pod_name: &str) -> Option<i32> {
    let digits = pod_name.strip_prefix(set_name)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

/// The name of the pod with `ordinal`.
pub fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{ordinal}", set.name_any())
}

/// The name of the claim from `template` for the pod with `ordinal`.
pub fn claim_name(template: &PersistentVolumeClaim, set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{}-{ordinal}", template.name_any(), set.name_any())
}

/// The revision (the ControllerRevision name) a pod was made from.
pub fn revision_of(pod: &Pod) -> Option<&str> {
    pod.labels().get(HASH_LABEL).map(String::as_str)
}

/// The pod with `ordinal` made from `template` at `revision`: stable name, hostname and
/// subdomain, identity labels, and its claims mounted in place of same-named volumes.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let name = pod_name(set, ordinal);
    let mut pod = podtemplate::pod_from_template(template, "", podtemplate::controller_ref(set));
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(name.clone());
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(HASH_LABEL.into(), revision.into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name);
    if let Some(service) = set.spec.as_ref().and_then(|s| s.service_name.clone()).filter(|s| !s.is_empty()) {
        spec.subdomain = Some(service);
    }
    let mut volumes = spec.volumes.take().unwrap_or_default();
    for claim in claim_templates(set) {
        volumes.retain(|v| v.name != claim.name_any());
        volumes.push(Volume {
            name: claim.name_any(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(claim, set, ordinal),
                read_only: None,
            }),
            ..Volume::default()
        });
    }
    if !volumes.is_empty() {
        spec.volumes = Some(volumes);
    }
    pod
}

/// The set's `volumeClaimTemplates`.
pub fn claim_templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    set.spec.as_ref().and_then(|s| s.volume_claim_templates.as_deref()).unwrap_or_default()
}

/// The claims the pod with `ordinal` needs: each template's spec, its labels plus the set's
/// `matchLabels`, named `<claim>-<set>-<ordinal>`.
pub fn new_claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let match_labels = set.spec.as_ref().and_then(|s| s.selector.match_labels.clone()).unwrap_or_default();
    claim_templates(set)
        .iter()
        .map(|template| {
            let mut labels = template.metadata.labels.clone().unwrap_or_default();
            labels.extend(match_labels.clone());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(template, set, ordinal)),
                    labels: Some(labels),
                    annotations: template.metadata.annotations.clone(),
                    ..ObjectMeta::default()
                },
                spec: template.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// The ownerReferences a claim should have under `persistentVolumeClaimRetentionPolicy`: the set
/// when `whenDeleted: Delete`; the pod when `whenScaled: Delete` and the pod is condemned. The
/// garbage collector then deletes the claim with its owner. References to anything else stay.
pub fn claim_owners(set: &StatefulSet, pod: &Pod, condemned: bool, current: &[OwnerReference]) -> Vec<OwnerReference> {
    let policy = set.spec.as_ref().and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let delete_on =
        |f: fn(&k8s_openapi::api::apps::v1::StatefulSetPersistentVolumeClaimRetentionPolicy) -> Option<&String>| {
            policy.and_then(f).is_some_and(|v| v == "Delete")
        };
    let set_uid = set.uid().unwrap_or_default();
    let pod_uid = pod.uid().unwrap_or_default();
    let mut refs: Vec<OwnerReference> =
        current.iter().filter(|r| r.uid != set_uid && r.uid != pod_uid).cloned().collect();
    let plain = |mut r: OwnerReference| {
        r.controller = None;
        r.block_owner_deletion = None;
        r
    };
    if delete_on(|p| p.when_deleted.as_ref()) {
        refs.push(plain(podtemplate::controller_ref(set)));
    }
    if condemned && delete_on(|p| p.when_scaled.as_ref()) {
        refs.push(plain(podtemplate::controller_ref(pod)));
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set() -> StatefulSet {
        serde_json::from_value(json!({"metadata": {"name": "web", "uid": "u1"}, "spec": {
            "serviceName": "nginx", "selector": {"matchLabels": {"app": "web"}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Delete"},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}],
                "volumes": [{"name": "www", "emptyDir": {}}, {"name": "other", "emptyDir": {}}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "www", "labels": {"tier": "data"}},
                "spec": {"accessModes": ["ReadWriteOnce"]}}]}}))
        .unwrap()
    }

    #[test]
    fn ordinals_parse_only_the_sets_own_names() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-01"), None);
        assert_eq!(ordinal("web", "web-x"), None);
        assert_eq!(ordinal("web", "webb-1"), None);
        assert_eq!(ordinal("web", "web-api-1"), None);
    }

    #[test]
    fn a_new_pod_carries_its_identity_and_claims() {
        let s = set();
        let pod = new_pod(&s, &s.spec.as_ref().unwrap().template, "web-abc", 3);
        assert_eq!(pod.metadata.name.as_deref(), Some("web-3"));
        assert_eq!(pod.metadata.generate_name, None);
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[POD_NAME_LABEL], "web-3");
        assert_eq!(labels[POD_INDEX_LABEL], "3");
        assert_eq!(labels[HASH_LABEL], "web-abc");
        let spec = pod.spec.unwrap();
        assert_eq!((spec.hostname.as_deref(), spec.subdomain.as_deref()), (Some("web-3"), Some("nginx")));
        let volumes = spec.volumes.unwrap();
        assert_eq!(volumes.len(), 2);
        let www = volumes.iter().find(|v| v.name == "www").unwrap();
        assert_eq!(www.persistent_volume_claim.as_ref().unwrap().claim_name, "www-web-3");
        let claims = new_claims(&s, 3);
        assert_eq!(claims[0].name_any(), "www-web-3");
        assert_eq!(claims[0].labels()["app"], "web");
        assert_eq!(claims[0].labels()["tier"], "data");
    }

    #[test]
    fn retention_owns_claims_by_the_pod_only_when_condemned() {
        let s = set();
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web-1", "uid": "p1"}})).unwrap();
        assert!(claim_owners(&s, &pod, false, &[]).is_empty());
        let refs = claim_owners(&s, &pod, true, &[]);
        assert_eq!(refs.len(), 1);
        assert_eq!((refs[0].uid.as_str(), refs[0].kind.as_str(), refs[0].controller), ("p1", "Pod", None));
        assert!(claim_owners(&s, &pod, false, &refs).is_empty());
    }
}
