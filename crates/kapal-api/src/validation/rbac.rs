//! Roles, ClusterRoles and their bindings (`pkg/apis/rbac/validation`). Paths start at the
//! object's top level (`rules[0].verbs`), as upstream reports them.

use serde_json::Value;

use super::labels::validate_label_selector;
use super::names::{NameRule, is_valid_path_segment_name};
use super::path::Path;
use super::report::{
    Errs, get, go_quote, go_string_slice, invalid_raw, invalid_str, items, not_supported, required, str_or_empty,
};

const GROUP: &str = "rbac.authorization.k8s.io";

/// `ValidatePolicyRule` for each of `rules`.
pub(crate) fn validate_rules(role: &Value, namespaced: bool, errs: &mut Errs) {
    let rp = Path::new("rules");
    for (i, rule) in items(role, "rules", &Path::new(""), errs).iter().enumerate() {
        let p = rp.index(i);
        let non_empty = |key: &str| rule.get(key).and_then(Value::as_array).is_some_and(|a| !a.is_empty());
        if !non_empty("verbs") {
            errs.push(required(&p.child("verbs"), "verbs must contain at least one value"));
        }
        if non_empty("nonResourceURLs") {
            let shown = go_string_slice(rule.get("nonResourceURLs").and_then(Value::as_array));
            if namespaced {
                errs.push(invalid_raw(
                    &p.child("nonResourceURLs"),
                    &shown,
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if non_empty("apiGroups") || non_empty("resources") || non_empty("resourceNames") {
                errs.push(invalid_raw(
                    &p.child("nonResourceURLs"),
                    &shown,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if !non_empty("apiGroups") {
            errs.push(required(&p.child("apiGroups"), "resource rules must supply at least one api group"));
        }
        if !non_empty("resources") {
            errs.push(required(&p.child("resources"), "resource rules must supply at least one resource"));
        }
    }
}

/// `ValidateClusterRole` beyond metadata and rules: the aggregation rule.
pub(crate) fn validate_aggregation_rule(role: &Value, errs: &mut Errs) {
    let Some(rule) = get(role, "aggregationRule") else { return };
    let p = Path::new("aggregationRule").child("clusterRoleSelectors");
    let selectors = items(rule, "clusterRoleSelectors", &Path::new("aggregationRule"), errs);
    if selectors.is_empty() {
        errs.push(required(&p, "at least one clusterRoleSelector required if aggregationRule is non-nil"));
    }
    for (i, sel) in selectors.iter().enumerate() {
        validate_label_selector(sel, &p.index(i), errs);
    }
}

fn role_ref(binding: &Value) -> (&str, &str, &str) {
    let field = |k: &str| binding.get("roleRef").and_then(|r| r.get(k)).and_then(Value::as_str).unwrap_or("");
    (field("apiGroup"), field("kind"), field("name"))
}

/// `ValidateRoleBinding` / `ValidateClusterRoleBinding` beyond metadata.
pub(crate) fn validate_binding(binding: &Value, namespaced: bool, errs: &mut Errs) {
    let rp = Path::new("roleRef");
    let (group, kind, name) = role_ref(binding);
    if group != GROUP {
        errs.push(not_supported(&rp.child("apiGroup"), group, &[GROUP]));
    }
    let kinds: &[&str] = if namespaced { &["Role", "ClusterRole"] } else { &["ClusterRole"] };
    if !kinds.contains(&kind) {
        errs.push(not_supported(&rp.child("kind"), kind, kinds));
    }
    if name.is_empty() {
        errs.push(required(&rp.child("name"), ""));
    } else {
        for msg in is_valid_path_segment_name(name) {
            errs.push(invalid_str(&rp.child("name"), name, &msg));
        }
    }
    let sp = Path::new("subjects");
    for (i, subject) in items(binding, "subjects", &Path::new(""), errs).iter().enumerate() {
        let p = sp.index(i);
        let name = str_or_empty(subject, "name", &p, errs);
        let api_group = subject.get("apiGroup").and_then(Value::as_str);
        if name.is_empty() {
            errs.push(required(&p.child("name"), ""));
        }
        match str_or_empty(subject, "kind", &p, errs) {
            "ServiceAccount" => {
                if !name.is_empty() {
                    for msg in NameRule::DnsSubdomain.check(name, false) {
                        errs.push(invalid_str(&p.child("name"), name, &msg));
                    }
                }
                if let Some(g) = api_group.filter(|g| !g.is_empty()) {
                    errs.push(not_supported(&p.child("apiGroup"), g, &[""]));
                }
                if !namespaced && subject.get("namespace").and_then(Value::as_str).is_none_or(str::is_empty) {
                    errs.push(required(&p.child("namespace"), ""));
                }
            }
            // `apiGroup` defaults to the RBAC group for users and groups.
            "User" | "Group" => {
                if let Some(g) = api_group
                    && g != GROUP
                {
                    errs.push(not_supported(&p.child("apiGroup"), g, &[GROUP]));
                }
            }
            other => errs.push(not_supported(&p.child("kind"), other, &["ServiceAccount", "User", "Group"])),
        }
    }
}

/// A binding's `roleRef` may not change.
pub(crate) fn validate_binding_update(new: &Value, old: &Value, errs: &mut Errs) {
    if role_ref(new) != role_ref(old) {
        let (group, kind, name) = role_ref(new);
        errs.push(invalid_raw(
            &Path::new("roleRef"),
            &format!("rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}", go_quote(group), go_quote(kind), go_quote(name)),
            "cannot change roleRef",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(errs: &Errs) -> Vec<String> {
        errs.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn rules_need_verbs_groups_and_resources() {
        let mut errs = Vec::new();
        validate_rules(
            &json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, {}]}),
            true,
            &mut errs,
        );
        assert_eq!(
            msgs(&errs),
            [
                "rules[1].verbs: Required value: verbs must contain at least one value",
                "rules[1].apiGroups: Required value: resource rules must supply at least one api group",
                "rules[1].resources: Required value: resource rules must supply at least one resource",
            ]
        );
        let mut errs = Vec::new();
        validate_rules(&json!({"rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]}), true, &mut errs);
        assert_eq!(
            msgs(&errs),
            [
                "rules[0].nonResourceURLs: Invalid value: []string{\"/healthz\"}: namespaced rules cannot apply to non-resource URLs"
            ]
        );
    }

    #[test]
    fn bindings() {
        let b = json!({"roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "sa"}, {"kind": "Robot", "name": "x"}]});
        let mut errs = Vec::new();
        validate_binding(&b, true, &mut errs);
        assert_eq!(
            msgs(&errs),
            [
                "subjects[1].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\""
            ]
        );
        let mut errs = Vec::new();
        validate_binding(&b, false, &mut errs);
        assert_eq!(errs[0].message, "Unsupported value: \"Role\": supported values: \"ClusterRole\"");
        assert_eq!(errs[1].field, "subjects[0].namespace");
        let mut other = b.clone();
        other["roleRef"]["name"] = json!("r2");
        let mut errs = Vec::new();
        validate_binding_update(&other, &b, &mut errs);
        assert_eq!(
            msgs(&errs),
            [
                "roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"r2\"}: cannot change roleRef"
            ]
        );
    }
}
