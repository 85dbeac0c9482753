//! What controllers that own pods share: making a pod from a template with a controller
//! reference, and reading a pod's state the way the upstream controllers do.

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

/// An ownerReference marking `owner` as the controller of a dependent, with
/// `blockOwnerDeletion`, as every workload controller sets it.
pub fn controller_ref<K>(owner: &K) -> OwnerReference
where
    K: Resource<DynamicType = ()>,
{
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The controller reference of an object, if it has one.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.as_ref()?.iter().find(|r| r.controller == Some(true))
}

/// A pod for `template`, named `<generate_name><random>` by the API server, owned by `owner`.
pub fn pod_from_template(template: &PodTemplateSpec, generate_name: &str, owner: OwnerReference) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name.to_string()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// A label selector in the text form of the `labelSelector` list parameter; `None` when it
/// uses an operator this form cannot express.
pub fn selector_query(selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> Option<String> {
    let mut parts: Vec<String> = selector.match_labels.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            _ => return None,
        });
    }
    Some(parts.join(","))
}

/// The pod's phase, `Pending` when it has none yet.
pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

/// Active: not finished and not being deleted (upstream `IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    condition_true(pod, "Ready")
}

/// Whether the pod has been Ready for at least `min_ready_seconds` at `now` (upstream
/// `IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    let Some(ready) = ready_condition(pod) else { return false };
    if ready.status != "True" {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match &ready.last_transition_time {
        Some(t) => t.0.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
        None => false,
    }
}

/// When the pod last became Ready, if it is Ready now.
pub fn ready_since(pod: &Pod) -> Option<jiff::Timestamp> {
    let ready = ready_condition(pod)?;
    if ready.status != "True" {
        return None;
    }
    ready.last_transition_time.as_ref().map(|t| t.0)
}

/// A `metav1.LabelSelector` as a selector to evaluate; `None` selects nothing, as upstream.
pub fn label_selector(
    selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Result<kapal_api::selector::LabelSelector, String> {
    let Some(selector) = selector else { return Ok(kapal_api::selector::LabelSelector::nothing()) };
    let value = serde_json::to_value(selector).map_err(|e| e.to_string())?;
    kapal_api::selector::LabelSelector::from_json(&value)
}

/// Whether `selector` matches the labels of `meta`.
pub fn selects(selector: &kapal_api::selector::LabelSelector, meta: &ObjectMeta) -> bool {
    match &meta.labels {
        Some(labels) => selector.matches_btree(labels),
        None => selector.matches_btree(&Default::default()),
    }
}

/// The message a user should read for a failed API call: the Status message when the server
/// sent one.
pub fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// Whether the API call failed with `code`.
pub fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// A failed adoption or release in [`claim`].
#[derive(Debug)]
pub struct ClaimError {
    /// `adopting` or `releasing`.
    pub verb: &'static str,
    /// The dependent's name.
    pub name: String,
    pub source: kube::Error,
}

/// Upstream's `ClaimObjects` (controller_ref_manager.go): of `candidates`, those `owner`
/// controls. Owned objects that still match `selector` are kept (all owned ones while the owner
/// is being deleted); owned ones that stopped matching are released; matching orphans that
/// `may_adopt` accepts are adopted, unless the owner or the orphan is being deleted. An empty
/// selector matches nothing.
pub async fn claim<K, O>(
    api: &kube::Api<K>,
    owner: &O,
    selector: &kapal_api::selector::LabelSelector,
    candidates: Vec<K>,
    may_adopt: impl Fn(&K) -> bool,
) -> Result<Vec<K>, ClaimError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    O: Resource<DynamicType = ()>,
{
    let uid = owner.uid().unwrap_or_default();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let mut owned = Vec::new();
    for obj in candidates {
        let meta = obj.meta();
        let matches = !selector.is_empty() && selects(selector, meta);
        let (verb, owner_ref) = match controller_of(meta) {
            Some(r) if r.uid == uid && (matches || deleting) => {
                owned.push(obj);
                continue;
            }
            Some(r) if r.uid == uid => ("releasing", None),
            None if matches && !deleting && meta.deletion_timestamp.is_none() && may_adopt(&obj) => {
                ("adopting", Some(controller_ref(owner)))
            }
            _ => continue,
        };
        let adopting = owner_ref.is_some();
        let claimed = set_controller(api, &obj, owner_ref).await.map_err(|source| ClaimError {
            verb,
            name: obj.name_any(),
            source,
        })?;
        tracing::info!(name = %obj.name_any(), kind = %O::kind(&()), verb, "claimed");
        owned.extend(claimed.filter(|_| adopting));
    }
    Ok(owned)
}

/// Makes `owner` the controller of `obj`, or drops its controller reference when `owner` is
/// `None` (adoption and release). The object's resourceVersion guards the write, so a concurrent
/// claim by another controller wins cleanly; `Ok(None)` when the object changed or went away.
pub async fn set_controller<K>(
    api: &kube::Api<K>,
    obj: &K,
    owner: Option<OwnerReference>,
) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let meta = obj.meta();
    let mut refs: Vec<_> =
        meta.owner_references.clone().unwrap_or_default().into_iter().filter(|r| r.controller != Some(true)).collect();
    refs.extend(owner);
    let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "resourceVersion": meta.resource_version}});
    let name = meta.name.clone().unwrap_or_default();
    match api.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await {
        Ok(updated) => Ok(Some(updated)),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(None),
        Err(e) => Err(e),
    }
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")
}

fn condition_true(pod: &Pod, kind: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let p = pod(json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}));
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        assert!(is_available(&p, 0, at("2026-01-01T00:00:00Z")));
        assert!(!is_available(&p, 10, at("2026-01-01T00:00:09Z")));
        assert!(is_available(&p, 10, at("2026-01-01T00:00:10Z")));
        assert!(is_ready(&p) && is_active(&p));
    }

    #[test]
    fn finished_or_deleted_pods_are_not_active() {
        assert!(!is_active(&pod(json!({"status": {"phase": "Succeeded"}}))));
        assert!(!is_active(&pod(json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}))));
        assert!(is_active(&pod(json!({}))));
    }
}
