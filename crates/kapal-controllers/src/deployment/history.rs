//! Revisions and templates: which ReplicaSet is the new one, its `pod-template-hash`, the
//! revision annotations that `kubectl rollout history/undo` read, and history cleanup.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

use super::{DESIRED_REPLICAS, HASH_LABEL, MAX_REPLICAS, REVISION, REVISION_HISTORY};

/// Upstream's limit on the length of `deployment.kubernetes.io/revision-history`.
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// The alphabet of `rand.SafeEncodeString`: no vowels, no look-alike digits, so hashes never
/// spell words.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The `pod-template-hash` of a template: FNV-32a over the template, then the collision count as
/// 8 little-endian bytes when set, written in decimal and mapped into the safe alphabet (the
/// shape of upstream's `ComputeHash`).
///
/// Upstream hashes Go's `%#v` rendering of the struct; we hash its canonical JSON. The value is
/// therefore not byte-identical to a kube-controller-manager's, which nothing relies on: kubectl
/// and this controller find a Deployment's ReplicaSets by comparing templates, not hashes.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hash = Fnv32a::new();
    hash.write(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(count) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&count.to_le_bytes());
        hash.write(&bytes);
    }
    safe_encode(&hash.0.to_string())
}

struct Fnv32a(u32);

impl Fnv32a {
    fn new() -> Fnv32a {
        Fnv32a(0x811c_9dc5)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
}

/// Upstream's `rand.SafeEncodeString`: each byte mapped into the safe alphabet.
pub fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()])).collect()
}

/// Whether two templates are equal once the `pod-template-hash` label is ignored (upstream
/// `EqualIgnoreHash`, with nil and empty collections equal as in `apiequality.Semantic`).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    normalized(a) == normalized(b)
}

fn normalized(template: &PodTemplateSpec) -> Value {
    let mut value = serde_json::to_value(template).unwrap_or_default();
    if let Some(labels) = value.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(HASH_LABEL);
    }
    prune_empty(&mut value);
    value
}

fn prune_empty(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.values_mut().for_each(prune_empty);
            map.retain(|_, v| !is_empty(v));
        }
        Value::Array(items) => items.iter_mut().for_each(prune_empty),
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The revision of a ReplicaSet or Deployment; 0 when absent or unreadable.
pub fn revision(annotations: Option<&BTreeMap<String, String>>) -> i64 {
    annotations.and_then(|a| a.get(REVISION)).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// The highest revision among `sets`.
pub fn max_revision<'a>(sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    sets.into_iter().map(|rs| revision(rs.metadata.annotations.as_ref())).max().unwrap_or(0)
}

/// Sorts oldest first, by name between equals (upstream `ReplicaSetsByCreationTimestamp`).
pub fn sort_by_creation(sets: &mut [ReplicaSet]) {
    sets.sort_by(|a, b| {
        let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
        ta.cmp(&tb).then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// Splits `sets` into the new ReplicaSet (the oldest whose template equals the Deployment's) and
/// the old ones, oldest first.
pub fn split_new(deployment: &Deployment, mut sets: Vec<ReplicaSet>) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
    sort_by_creation(&mut sets);
    let template = deployment.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let position = sets.iter().position(|rs| {
        rs.spec.as_ref().and_then(|s| s.template.as_ref()).is_some_and(|t| equal_ignore_hash(t, &template))
    });
    let new = position.map(|i| sets.remove(i));
    (new, sets)
}

/// Annotations never copied from a Deployment to its ReplicaSets.
fn skip_copy(key: &str) -> bool {
    matches!(key, REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS)
        || key == "kubectl.kubernetes.io/last-applied-configuration"
}

/// Copies the Deployment's own annotations onto the ReplicaSet; true when anything changed.
fn copy_annotations(deployment: &Deployment, rs: &mut ReplicaSet) -> bool {
    let mut changed = false;
    let target = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in deployment.metadata.annotations.iter().flatten() {
        if skip_copy(k) || target.get(k) == Some(v) {
            continue;
        }
        target.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// Sets `desired-replicas` and `max-replicas`; true when either changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.to_string(), value);
            changed = true;
        }
    }
    changed
}

/// Whether `set_replicas_annotations` would change anything.
pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    set_replicas_annotations(&mut rs.clone(), desired, max)
}

/// Upstream `SetNewReplicaSetAnnotations`: copies the Deployment's annotations, raises the
/// revision to `new_revision` (recording the earlier one in `revision-history` when this is a
/// rollback to an existing ReplicaSet) and, for a ReplicaSet about to be created, sets the replica
/// annotations. True when anything changed.
pub fn set_new_replica_set_annotations(
    deployment: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
    max_surge: i32,
) -> bool {
    let mut changed = copy_annotations(deployment, rs);
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let old = annotations.get(REVISION).cloned();
    let old_revision = match old.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(r)) => r,
        Some(Err(_)) => return changed,
    };
    if old_revision < new_revision {
        annotations.insert(REVISION.to_string(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = append_history(annotations.get(REVISION_HISTORY).map(String::as_str).unwrap_or(""), &old);
            if let Some(history) = history {
                annotations.insert(REVISION_HISTORY.to_string(), history);
            }
        }
    }
    if !exists {
        let desired = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        changed |= set_replicas_annotations(rs, desired, desired + max_surge);
    }
    changed
}

/// The history with `old` appended, dropping the oldest entries beyond the length limit.
fn append_history(history: &str, old: &str) -> Option<String> {
    if history.is_empty() {
        return Some(old.to_string());
    }
    let entries: Vec<&str> = history.split(',').collect();
    let mut total = history.len() + old.len() + 1;
    let mut start = 0;
    while total > MAX_REVISION_HISTORY_CHARS && start < entries.len() {
        total -= entries[start].len() + 1;
        start += 1;
    }
    if total > MAX_REVISION_HISTORY_CHARS {
        return None;
    }
    let mut kept: Vec<&str> = entries[start..].to_vec();
    kept.push(old);
    Some(kept.join(","))
}

/// The old ReplicaSets to delete beyond `limit`, lowest revision first: only those fully scaled
/// down, settled and not already being deleted (upstream `cleanupDeployment`).
pub fn cleanable(old: &[ReplicaSet], limit: i32) -> Vec<&ReplicaSet> {
    let mut alive: Vec<&ReplicaSet> = old.iter().filter(|rs| rs.metadata.deletion_timestamp.is_none()).collect();
    let excess = alive.len().saturating_sub(usize::try_from(limit).unwrap_or(0));
    if excess == 0 {
        return Vec::new();
    }
    alive.sort_by(|a, b| {
        let ra = revision(a.metadata.annotations.as_ref());
        let rb = revision(b.metadata.annotations.as_ref());
        let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
        ra.cmp(&rb).then(ta.cmp(&tb)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    alive
        .into_iter()
        .take(excess)
        .filter(|rs| {
            let status = rs.status.clone().unwrap_or_default();
            status.replicas == 0
                && rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) == 0
                && rs.metadata.generation.unwrap_or(0) <= status.observed_generation.unwrap_or(0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(v: Value) -> PodTemplateSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn safe_encoding_maps_digits_into_the_alphabet() {
        // '0' is byte 48, 48 % 27 = 21 -> '4'; '9' is 57 % 27 = 3 -> 'f' (as in upstream's "7d948bd89d").
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn fnv32a_matches_the_reference_vectors() {
        let mut h = Fnv32a::new();
        h.write(b"");
        assert_eq!(h.0, 0x811c_9dc5);
        let mut h = Fnv32a::new();
        h.write(b"a");
        assert_eq!(h.0, 0xe40c_292c);
        let mut h = Fnv32a::new();
        h.write(b"foobar");
        assert_eq!(h.0, 0xbf9c_f968);
    }

    #[test]
    fn the_hash_changes_with_the_template_and_the_collision_count() {
        let t = template(
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "a"}]}}),
        );
        let u = template(
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "b"}]}}),
        );
        let h = compute_hash(&t, None);
        assert!(!h.is_empty() && h.len() <= 10 && h.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
        assert_eq!(h, compute_hash(&t, None));
        assert_ne!(h, compute_hash(&u, None));
        assert_ne!(h, compute_hash(&t, Some(1)));
    }

    #[test]
    fn templates_compare_without_the_hash_label_and_empty_collections() {
        let a =
            template(json!({"metadata": {"labels": {"app": "web", HASH_LABEL: "abc"}}, "spec": {"containers": []}}));
        let b = template(json!({"metadata": {"labels": {"app": "web"}, "annotations": {}}}));
        let c = template(json!({"metadata": {"labels": {"app": "db"}}}));
        assert!(equal_ignore_hash(&a, &b));
        assert!(!equal_ignore_hash(&a, &c));
    }

    #[test]
    fn rolling_back_raises_the_revision_and_keeps_the_history() {
        let d: Deployment = serde_json::from_value(json!({"metadata": {"annotations": {"team": "a", REVISION: "3"}},
            "spec": {"replicas": 4, "selector": {}, "template": {}}}))
        .unwrap();
        let mut rs: ReplicaSet =
            serde_json::from_value(json!({"metadata": {"annotations": {REVISION: "1", REVISION_HISTORY: "0"}}}))
                .unwrap();
        assert!(set_new_replica_set_annotations(&d, &mut rs, 4, true, 1));
        let a = rs.metadata.annotations.unwrap();
        assert_eq!(a[REVISION], "4");
        assert_eq!(a[REVISION_HISTORY], "0,1");
        assert_eq!(a["team"], "a");
        assert!(!a.contains_key(DESIRED_REPLICAS));
        let mut fresh = ReplicaSet::default();
        set_new_replica_set_annotations(&d, &mut fresh, 5, false, 1);
        let a = fresh.metadata.annotations.unwrap();
        assert_eq!((a[REVISION].as_str(), a[DESIRED_REPLICAS].as_str(), a[MAX_REPLICAS].as_str()), ("5", "4", "5"));
        assert!(!a.contains_key(REVISION_HISTORY));
    }

    #[test]
    fn cleanup_keeps_the_limit_and_only_removes_scaled_down_sets() {
        let rs = |name: &str, rev: i64, replicas: i32| -> ReplicaSet {
            serde_json::from_value(json!({"metadata": {"name": name, "annotations": {REVISION: rev.to_string()}},
                "spec": {"replicas": replicas, "selector": {}}, "status": {"replicas": replicas}}))
            .unwrap()
        };
        let old = vec![rs("c", 3, 0), rs("a", 1, 0), rs("b", 2, 2), rs("d", 4, 0)];
        let names: Vec<_> = cleanable(&old, 1).iter().map(|r| r.metadata.name.clone().unwrap()).collect();
        assert_eq!(names, ["a", "c"]);
        assert!(cleanable(&old, 4).is_empty());
    }
}
