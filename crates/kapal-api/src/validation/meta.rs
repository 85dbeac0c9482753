//! `metadata` validation shared by every kind (`k8s.io/apimachinery/pkg/api/validation/objectmeta.go`):
//! names, namespaces, labels, annotations, owner references, finalizers, and the fields an
//! update may not change.

use serde_json::Value;

use super::labels::{validate_annotations_at, validate_labels_at};
use super::names::{NameRule, is_qualified_name};
use super::path::Path;
use super::report::{
    Errs, forbidden, get, go_quote, immutable_raw, invalid_int, invalid_json, invalid_raw, invalid_str, items,
    required, scalar_text, str_list, str_or_empty, type_invalid,
};
use crate::status::Cause;

/// The finalizers Kubernetes itself defines, allowed without a domain prefix.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// How names of `group`/`kind` objects are checked, as each kind's upstream `ValidateXName`
/// does: Namespaces and StatefulSets are DNS labels, Services DNS-1035 labels, RBAC objects
/// any path segment, and everything else (Pods, ConfigMaps, Secrets, Deployments, custom
/// resources, …) DNS subdomains.
pub fn name_rule(group: &str, kind: &str) -> NameRule {
    match (group, kind) {
        ("", "Namespace") => NameRule::DnsLabel,
        ("", "Service") => NameRule::Dns1035Label,
        ("apps", "StatefulSet") => NameRule::DnsLabel,
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding") => {
            NameRule::PathSegment
        }
        _ => NameRule::DnsSubdomain,
    }
}

/// The `metadata` object of `obj`, or `None` (reported) when it is not an object.
fn metadata<'a>(obj: &'a Value, errs: &mut Errs) -> Option<&'a Value> {
    match obj.get("metadata") {
        None | Some(Value::Null) => None,
        Some(m) if m.is_object() => Some(m),
        Some(other) => {
            errs.push(type_invalid(&Path::new("metadata"), other, "object"));
            None
        }
    }
}

/// Validates `metadata` of an object being created, as `ValidateObjectMeta` does.
///
/// `metadata.name` is required unless `generateName` is set (the name is then generated
/// later); it must follow `name_rule`. A namespaced object needs a valid namespace (a DNS
/// label); a cluster-scoped one must have none — callers clear it first for cluster-scoped
/// kinds, as kube-apiserver's `BeforeCreate` does. Labels, annotations (at most 256 KiB in
/// total), owner references and finalizers are checked too.
pub fn validate_object_meta(obj: &Value, namespaced: bool, name_rule: NameRule) -> Vec<Cause> {
    let mut errs = Vec::new();
    let empty = Value::Object(Default::default());
    let meta = metadata(obj, &mut errs).unwrap_or(&empty);
    let path = Path::new("metadata");

    let generate_name = str_or_empty(meta, "generateName", &path, &mut errs);
    if !generate_name.is_empty() {
        for msg in name_rule.check(generate_name, true) {
            errs.push(invalid_str(&path.child("generateName"), generate_name, &msg));
        }
    }
    let name = str_or_empty(meta, "name", &path, &mut errs);
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(required(&path.child("name"), "name or generateName is required"));
        }
    } else {
        for msg in name_rule.check(name, false) {
            errs.push(invalid_str(&path.child("name"), name, &msg));
        }
    }

    let namespace = str_or_empty(meta, "namespace", &path, &mut errs);
    if namespaced {
        if namespace.is_empty() {
            errs.push(required(&path.child("namespace"), ""));
        } else {
            for msg in NameRule::DnsLabel.check(namespace, false) {
                errs.push(invalid_str(&path.child("namespace"), namespace, &msg));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(forbidden(&path.child("namespace"), "not allowed on this type"));
    }

    validate_meta_common(meta, &path, &mut errs);
    errs
}

/// The checks of `metadata` that apply on create and update alike.
fn validate_meta_common(meta: &Value, path: &Path, errs: &mut Errs) {
    if let Some(generation) = super::report::int_at(meta, "generation", path, errs)
        && generation < 0
    {
        errs.push(invalid_int(&path.child("generation"), generation, "must be greater than or equal to 0"));
    }
    validate_labels_at(meta, "labels", path, errs);
    validate_annotations_at(meta, "annotations", path, errs);
    validate_owner_references(meta, path, errs);
    validate_finalizers(meta, path, errs);
}

fn validate_owner_references(meta: &Value, path: &Path, errs: &mut Errs) {
    let p = path.child("ownerReferences");
    let refs = items(meta, "ownerReferences", path, errs);
    let mut first_controller: Option<String> = None;
    for (i, r) in refs.iter().enumerate() {
        if !r.is_object() {
            errs.push(type_invalid(&p.index(i), r, "object"));
            continue;
        }
        // Upstream reports these on the list's path, without the index.
        let api_version = str_or_empty(r, "apiVersion", &p, errs);
        let kind = str_or_empty(r, "kind", &p, errs);
        let (group, version) = crate::registry::split_api_version(api_version);
        if version.is_empty() {
            errs.push(invalid_str(&p.child("apiVersion"), api_version, "version must not be empty"));
        }
        if kind.is_empty() {
            errs.push(invalid_str(&p.child("kind"), kind, "must not be empty"));
        }
        let name = str_or_empty(r, "name", &p, errs);
        if name.is_empty() {
            errs.push(invalid_str(&p.child("name"), name, "must not be empty"));
        }
        let uid = str_or_empty(r, "uid", &p, errs);
        if uid.is_empty() {
            errs.push(invalid_str(&p.child("uid"), uid, "must not be empty"));
        }
        if group.is_empty() && version == "v1" && kind == "Event" {
            errs.push(invalid_json(&p, r, "/v1, Kind=Event is disallowed from being an owner"));
        }
        if get(r, "controller").and_then(Value::as_bool) == Some(true) {
            let current = format!("{kind}/{name}");
            match &first_controller {
                Some(first) => errs.push(invalid_json(
                    &p,
                    get(meta, "ownerReferences").unwrap_or(&Value::Null),
                    &format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"
                    ),
                )),
                None => first_controller = Some(current),
            }
        }
    }
}

fn validate_finalizers(meta: &Value, path: &Path, errs: &mut Errs) {
    let p = path.child("finalizers");
    let finalizers = str_list(meta, "finalizers", path, errs);
    for f in &finalizers {
        for msg in is_qualified_name(f) {
            errs.push(invalid_str(&p, f, &msg));
        }
    }
    if finalizers.contains(&"orphan") && finalizers.contains(&"foregroundDeletion") {
        errs.push(invalid_raw(
            &p,
            &super::report::go_string_slice(get(meta, "finalizers").and_then(Value::as_array)),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

/// The extra finalizer rule built-in kinds have (`validateKubeFinalizerName`): a finalizer
/// without a domain prefix must be one Kubernetes defines.
pub(crate) fn validate_kube_finalizers(obj: &Value, errs: &mut Errs) {
    let Some(meta) = get(obj, "metadata") else { return };
    let p = Path::new("metadata").child("finalizers");
    let Some(list) = get(meta, "finalizers").and_then(Value::as_array) else { return };
    for (i, f) in list.iter().enumerate() {
        if let Some(f) = f.as_str()
            && !f.contains('/')
            && !STANDARD_FINALIZERS.contains(&f)
        {
            errs.push(invalid_str(
                &p.index(i),
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
}

/// A timestamp as Go prints a `metav1.Time`: `2024-05-01 10:00:00 +0000 UTC`.
fn go_time(v: Option<&Value>) -> String {
    let Some(text) = v.and_then(Value::as_str) else { return "0001-01-01 00:00:00 +0000 UTC".to_string() };
    match text.parse::<jiff::Timestamp>() {
        Ok(ts) => ts.strftime("%Y-%m-%d %H:%M:%S +0000 UTC").to_string(),
        Err(_) => go_quote(text),
    }
}

/// Validates the `metadata` changes of an update (`ValidateObjectMetaUpdate`): `name`,
/// `namespace`, `uid`, `creationTimestamp`, `deletionTimestamp` and
/// `deletionGracePeriodSeconds` may not change (`field is immutable`), and no finalizer may be
/// added once deletion has begun. A field the new object leaves out is taken as unchanged, as
/// kube-apiserver copies `uid` and timestamps from the stored object before validating.
///
/// This covers only what is specific to updates; run [`validate_object_meta`] on the new
/// object as well (the kind validators of this module do both).
pub fn validate_object_meta_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let empty = Value::Object(Default::default());
    let new_meta = metadata(new, &mut errs).unwrap_or(&empty);
    let old_meta = old.get("metadata").filter(|m| m.is_object()).unwrap_or(&empty);
    let path = Path::new("metadata");

    if get(old_meta, "deletionTimestamp").is_some() {
        let mut ignored = Vec::new();
        let old_finalizers = str_list(old_meta, "finalizers", &path, &mut ignored);
        let mut added: Vec<&str> = str_list(new_meta, "finalizers", &path, &mut ignored)
            .into_iter()
            .filter(|f| !old_finalizers.contains(f))
            .collect();
        added.sort_unstable();
        added.dedup();
        if !added.is_empty() {
            let shown: Vec<String> = added.iter().map(|f| go_quote(f)).collect();
            errs.push(forbidden(
                &path.child("finalizers"),
                &format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    shown.join(", ")
                ),
            ));
        }
    }

    for key in ["name", "namespace", "uid"] {
        let new_v = get(new_meta, key).map(scalar_text).unwrap_or_default();
        let old_v = get(old_meta, key).map(scalar_text).unwrap_or_default();
        let left_out = key == "uid" && new_v.is_empty();
        if new_v != old_v && !left_out {
            errs.push(immutable_raw(&path.child(key), &go_quote(&new_v)));
        }
    }
    for key in ["creationTimestamp", "deletionTimestamp"] {
        let new_v = get(new_meta, key);
        let old_v = get(old_meta, key);
        let same_instant = match (new_v.and_then(Value::as_str), old_v.and_then(Value::as_str)) {
            (Some(a), Some(b)) => {
                a == b
                    || matches!((a.parse::<jiff::Timestamp>(), b.parse::<jiff::Timestamp>()), (Ok(x), Ok(y)) if x == y)
            }
            _ => new_v == old_v,
        };
        if new_v.is_some() && !same_instant {
            errs.push(immutable_raw(&path.child(key), &go_time(new_v)));
        }
    }
    let new_grace = get(new_meta, "deletionGracePeriodSeconds");
    if new_grace.is_some() && new_grace != get(old_meta, "deletionGracePeriodSeconds") {
        errs.push(immutable_raw(
            &path.child("deletionGracePeriodSeconds"),
            &new_grace.map(scalar_text).unwrap_or_else(|| "null".to_string()),
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn bad_configmap_name_reads_like_upstream() {
        let cm = json!({"metadata": {"name": "Bad_Name", "namespace": "default"}});
        let errs = validate_object_meta(&cm, true, name_rule("", "ConfigMap"));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].reason, "FieldValueInvalid");
        assert_eq!(errs[0].field, "metadata.name");
        assert!(errs[0].message.starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"));
    }

    #[test]
    fn name_or_generate_name_is_required() {
        let errs = validate_object_meta(&json!({"metadata": {"namespace": "ns"}}), true, NameRule::DnsSubdomain);
        assert_eq!(errs[0].field, "metadata.name");
        assert_eq!(errs[0].message, "Required value: name or generateName is required");
        let errs = validate_object_meta(
            &json!({"metadata": {"generateName": "web-", "namespace": "ns"}}),
            true,
            NameRule::DnsSubdomain,
        );
        assert!(errs.is_empty(), "{errs:?}");
        let errs = validate_object_meta(
            &json!({"metadata": {"generateName": "Web-", "namespace": "ns"}}),
            true,
            NameRule::DnsSubdomain,
        );
        assert_eq!(fields(&errs), ["metadata.generateName"]);
        let errs = validate_object_meta(&json!({}), false, NameRule::DnsSubdomain);
        assert_eq!(fields(&errs), ["metadata.name"]);
    }

    #[test]
    fn name_rules_per_kind() {
        assert_eq!(name_rule("", "Namespace"), NameRule::DnsLabel);
        assert_eq!(name_rule("", "Service"), NameRule::Dns1035Label);
        assert_eq!(name_rule("", "Pod"), NameRule::DnsSubdomain);
        assert_eq!(name_rule("rbac.authorization.k8s.io", "ClusterRole"), NameRule::PathSegment);
        let svc = json!({"metadata": {"name": "1web", "namespace": "ns"}});
        let errs = validate_object_meta(&svc, true, name_rule("", "Service"));
        assert!(errs[0].message.contains("a DNS-1035 label"));
        let ns = json!({"metadata": {"name": "a.b"}});
        let errs = validate_object_meta(&ns, false, name_rule("", "Namespace"));
        assert_eq!(errs[0].message, "Invalid value: \"a.b\": must not contain dots");
        let role = json!({"metadata": {"name": "system:controller:x", "namespace": "ns"}});
        assert!(validate_object_meta(&role, true, name_rule("rbac.authorization.k8s.io", "Role")).is_empty());
    }

    #[test]
    fn namespace_presence_follows_scope() {
        let errs = validate_object_meta(&json!({"metadata": {"name": "a"}}), true, NameRule::DnsSubdomain);
        assert_eq!(fields(&errs), ["metadata.namespace"]);
        assert_eq!(errs[0].message, "Required value");
        let errs =
            validate_object_meta(&json!({"metadata": {"name": "a", "namespace": "x"}}), false, NameRule::DnsSubdomain);
        assert_eq!(errs[0].message, "Forbidden: not allowed on this type");
        let errs =
            validate_object_meta(&json!({"metadata": {"name": "a", "namespace": "Bad"}}), true, NameRule::DnsSubdomain);
        assert_eq!(fields(&errs), ["metadata.namespace"]);
    }

    #[test]
    fn labels_annotations_and_finalizers() {
        let obj = json!({"metadata": {
            "name": "a", "namespace": "ns",
            "labels": {"app": "bad value", "-bad": "ok"},
            "annotations": {"Example.com/Key": "x", "a/b/c": "y"},
            "finalizers": ["example.com/f", "bad name"],
        }});
        let errs = validate_object_meta(&obj, true, NameRule::DnsSubdomain);
        assert_eq!(
            fields(&errs),
            ["metadata.labels", "metadata.labels", "metadata.annotations", "metadata.finalizers"],
            "{errs:?}"
        );
        assert!(errs[0].message.starts_with("Invalid value: \"bad value\": a valid label must be an empty string"));
        assert!(errs[1].message.starts_with("Invalid value: \"-bad\": name part must consist of"));
        let mut kube = Vec::new();
        validate_kube_finalizers(&json!({"metadata": {"finalizers": ["kubernetes", "custom"]}}), &mut kube);
        assert_eq!(fields(&kube), ["metadata.finalizers[1]"]);
        assert_eq!(
            kube[0].message,
            "Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"
        );
    }

    #[test]
    fn owner_references_basics() {
        let obj = json!({"metadata": {"name": "a", "namespace": "ns", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "1", "controller": true},
            {"apiVersion": "", "kind": "", "name": "", "uid": "", "controller": true},
        ]}});
        let errs = validate_object_meta(&obj, true, NameRule::DnsSubdomain);
        assert_eq!(
            fields(&errs),
            [
                "metadata.ownerReferences.apiVersion",
                "metadata.ownerReferences.kind",
                "metadata.ownerReferences.name",
                "metadata.ownerReferences.uid",
                "metadata.ownerReferences"
            ]
        );
        assert!(errs[4].message.ends_with("Found \"true\" in references for ReplicaSet/rs and /"));
    }

    #[test]
    fn updates_keep_identity() {
        let old = json!({"metadata": {"name": "a", "namespace": "ns", "uid": "u1",
            "creationTimestamp": "2024-05-01T10:00:00Z"}});
        assert!(validate_object_meta_update(&old, &old).is_empty());
        let left_out = json!({"metadata": {"name": "a", "namespace": "ns"}});
        assert!(validate_object_meta_update(&left_out, &old).is_empty());
        let changed = json!({"metadata": {"name": "b", "namespace": "ns", "uid": "u2",
            "creationTimestamp": "2025-01-01T00:00:00Z"}});
        let errs = validate_object_meta_update(&changed, &old);
        assert_eq!(fields(&errs), ["metadata.name", "metadata.uid", "metadata.creationTimestamp"]);
        assert_eq!(errs[0].message, "Invalid value: \"b\": field is immutable");
        assert_eq!(errs[2].message, "Invalid value: 2025-01-01 00:00:00 +0000 UTC: field is immutable");
    }

    #[test]
    fn no_new_finalizers_while_deleting() {
        let old =
            json!({"metadata": {"name": "a", "deletionTimestamp": "2024-05-01T10:00:00Z", "finalizers": ["x/a"]}});
        let new = json!({"metadata": {"name": "a", "finalizers": ["x/a", "x/b"]}});
        let errs = validate_object_meta_update(&new, &old);
        assert_eq!(
            errs[0].message,
            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"x/b\"}"
        );
    }

    #[test]
    fn wrong_types_never_panic() {
        for obj in [json!(null), json!("x"), json!({"metadata": 5}), json!({"metadata": {"name": 1, "labels": [1]}})] {
            let _ = validate_object_meta(&obj, true, NameRule::DnsSubdomain);
            let _ = validate_object_meta_update(&obj, &obj);
        }
        let errs = validate_object_meta(
            &json!({"metadata": {"name": "a", "namespace": "n", "labels": {"a": 1}}}),
            true,
            NameRule::DnsSubdomain,
        );
        assert_eq!(errs[0].field, "metadata.labels[a]");
        assert_eq!(errs[0].reason, "FieldValueTypeInvalid");
    }
}
