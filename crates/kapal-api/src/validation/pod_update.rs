//! What an update may change in a Pod (`ValidatePodUpdate`): container images, a shorter
//! `activeDeadlineSeconds`, added tolerations, removed scheduling gates — nothing else.

use serde_json::Value;

use super::equality::{diff, semantic_eq};
use super::names::inclusive_range_error;
use super::path::Path;
use super::report::{Errs, forbidden, get, invalid_int, invalid_raw, required};

const UPDATABLE_FIELDS: &[&str] = &[
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
];

fn list<'a>(spec: &'a Value, key: &str) -> &'a [Value] {
    spec.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// `ValidateContainerUpdates`: same number of containers, each with an image. Returns whether
/// validation should stop (containers were added or removed).
fn container_updates(new: &[Value], old: &[Value], path: &Path, errs: &mut Errs) -> bool {
    if new.len() != old.len() {
        errs.push(forbidden(path, "pod updates may not add or remove containers"));
        return true;
    }
    for (i, c) in new.iter().enumerate() {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        if image.is_empty() {
            errs.push(required(&path.index(i).child("image"), ""));
        }
        if image.trim() != image {
            errs.push(super::report::invalid_str(
                &path.index(i).child("image"),
                image,
                "must not have leading or trailing whitespace",
            ));
        }
    }
    false
}

/// Validates the spec changes of a Pod update.
pub(crate) fn validate_pod_update(new: &Value, old: &Value, errs: &mut Errs) {
    let empty = Value::Object(Default::default());
    let new_spec = get(new, "spec").filter(|s| s.is_object()).unwrap_or(&empty);
    let old_spec = get(old, "spec").filter(|s| s.is_object()).unwrap_or(&empty);
    let sp = Path::new("spec");

    for key in ["containers", "initContainers"] {
        if container_updates(list(new_spec, key), list(old_spec, key), &sp.child(key), errs) {
            return;
        }
    }

    let ads_path = sp.child("activeDeadlineSeconds");
    let old_ads = old_spec.get("activeDeadlineSeconds").and_then(Value::as_i64);
    match new_spec.get("activeDeadlineSeconds").and_then(Value::as_i64) {
        Some(n) => {
            if !(0..=i64::from(i32::MAX)).contains(&n) {
                errs.push(invalid_int(&ads_path, n, &inclusive_range_error(0, i64::from(i32::MAX))));
                return;
            }
            if old_ads.is_some_and(|o| o < n) {
                errs.push(invalid_int(&ads_path, n, "must be less than or equal to previous value"));
                return;
            }
        }
        None if old_ads.is_some() => {
            errs.push(invalid_raw(&ads_path, "null", "must not update from a positive integer to nil value"));
        }
        None => {}
    }

    only_added_tolerations(
        list(new_spec, "tolerations"),
        list(old_spec, "tolerations"),
        &sp.child("tolerations"),
        errs,
    );
    only_deleted_scheduling_gates(new_spec, old_spec, &sp.child("schedulingGates"), errs);

    if semantic_eq(Some(new_spec), Some(old_spec)) {
        return;
    }
    let munged = munge(new_spec, old_spec);
    if !semantic_eq(Some(&munged), Some(old_spec)) {
        errs.push(forbidden(
            &sp,
            &format!(
                "pod updates may not change fields other than {}\n{}",
                UPDATABLE_FIELDS.join(","),
                diff("core.PodSpec", old_spec, &munged)
            ),
        ));
    }
}

/// The new spec with every field an update may change set back to its old value.
fn munge(new_spec: &Value, old_spec: &Value) -> Value {
    let mut m = new_spec.clone();
    let Some(obj) = m.as_object_mut() else { return m };
    for key in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = obj.get_mut(key) {
            for (c, o) in cs.iter_mut().zip(list(old_spec, key)) {
                if let Some(c) = c.as_object_mut() {
                    match o.get("image") {
                        Some(img) => c.insert("image".into(), img.clone()),
                        None => c.remove("image"),
                    };
                }
            }
        }
    }
    for key in ["activeDeadlineSeconds", "schedulingGates", "tolerations"] {
        match old_spec.get(key) {
            Some(v) => obj.insert(key.into(), v.clone()),
            None => obj.remove(key),
        };
    }
    let old_grace = old_spec.get("terminationGracePeriodSeconds").and_then(Value::as_i64);
    let new_grace = obj.get("terminationGracePeriodSeconds").and_then(Value::as_i64);
    if old_grace.is_some_and(|g| g < 0)
        && new_grace == Some(1)
        && let Some(g) = old_spec.get("terminationGracePeriodSeconds")
    {
        obj.insert("terminationGracePeriodSeconds".into(), g.clone());
    }
    m
}

/// Every old toleration must still be there, except that its `tolerationSeconds` may change.
fn only_added_tolerations(new: &[Value], old: &[Value], path: &Path, errs: &mut Errs) {
    let without_seconds = |t: &Value| {
        let mut t = t.clone();
        if let Some(o) = t.as_object_mut() {
            o.remove("tolerationSeconds");
        }
        t
    };
    let all_kept = old.iter().all(|o| {
        let o = without_seconds(o);
        new.iter().any(|n| semantic_eq(Some(&without_seconds(n)), Some(&o)))
    });
    if !all_kept {
        errs.push(forbidden(path, "existing toleration can not be modified except its tolerationSeconds"));
    }
    // The new tolerations themselves are checked with the rest of the new spec.
}

fn only_deleted_scheduling_gates(new_spec: &Value, old_spec: &Value, path: &Path, errs: &mut Errs) {
    let name = |g: &Value| g.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    let old: Vec<String> = list(old_spec, "schedulingGates").iter().map(name).collect();
    for (i, g) in list(new_spec, "schedulingGates").iter().enumerate() {
        let n = name(g);
        if !old.contains(&n) {
            errs.push(forbidden(
                &path.index(i).child("name"),
                &format!("only deletion is allowed, but found new scheduling gate '{n}'"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec})
    }

    fn run(new: Value, old: Value) -> Errs {
        let mut errs = Vec::new();
        validate_pod_update(&pod(new), &pod(old), &mut errs);
        errs
    }

    #[test]
    fn image_changes_are_allowed() {
        let old = json!({"containers": [{"name": "a", "image": "nginx:1"}]});
        let new = json!({"containers": [{"name": "a", "image": "nginx:2"}]});
        assert!(run(new, old).is_empty());
    }

    #[test]
    fn other_changes_are_forbidden_with_upstreams_message() {
        let old = json!({"containers": [{"name": "a", "image": "nginx"}], "nodeSelector": {"a": "b"}});
        let new = json!({"containers": [{"name": "a", "image": "nginx"}], "nodeSelector": {"a": "c"}});
        let errs = run(new, old);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec");
        assert!(errs[0].message.starts_with(
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"
        ));
        assert!(errs[0].message.contains("NodeSelector"));
    }

    #[test]
    fn containers_may_not_be_added() {
        let old = json!({"containers": [{"name": "a", "image": "x"}]});
        let new = json!({"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]});
        let errs = run(new, old);
        assert_eq!(errs[0].message, "Forbidden: pod updates may not add or remove containers");
    }

    #[test]
    fn deadline_may_only_shrink() {
        let c = json!([{"name": "a", "image": "x"}]);
        let errs = run(
            json!({"containers": c, "activeDeadlineSeconds": 20}),
            json!({"containers": c, "activeDeadlineSeconds": 10}),
        );
        assert_eq!(errs[0].message, "Invalid value: 20: must be less than or equal to previous value");
        assert!(
            run(
                json!({"containers": c, "activeDeadlineSeconds": 5}),
                json!({"containers": c, "activeDeadlineSeconds": 10})
            )
            .is_empty()
        );
        assert!(run(json!({"containers": c, "activeDeadlineSeconds": 5}), json!({"containers": c})).is_empty());
    }

    #[test]
    fn tolerations_may_only_be_added() {
        let c = json!([{"name": "a", "image": "x"}]);
        let t1 = json!({"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5});
        let t1b = json!({"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 50});
        let t2 = json!({"key": "j", "operator": "Exists"});
        assert!(
            run(json!({"containers": c, "tolerations": [t1b, t2]}), json!({"containers": c, "tolerations": [t1]}))
                .is_empty()
        );
        let errs = run(json!({"containers": c, "tolerations": [t2]}), json!({"containers": c, "tolerations": [t1]}));
        assert_eq!(errs[0].message, "Forbidden: existing toleration can not be modified except its tolerationSeconds");
    }
}
