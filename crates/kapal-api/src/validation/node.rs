//! Nodes and Namespaces: taints, pod CIDRs, and namespace finalizers.

use std::collections::HashSet;

use serde_json::Value;

use super::labels::validate_label_name;
use super::names::{is_qualified_name, is_valid_cidr, is_valid_label_value};
use super::path::Path;
use super::report::{
    Errs, duplicate_raw, forbidden, get, go_quote, invalid_str, items, not_supported, required, str_list,
};

/// `validateNodeTaints`. Upstream roots the path at `metadata` (`metadata.taints[0].key`).
fn validate_taints(spec: &Value, errs: &mut Errs) {
    let p = Path::new("metadata").child("taints");
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for (i, t) in items(spec, "taints", &Path::new("spec"), errs).iter().enumerate() {
        let tp = p.index(i);
        let key = t.get("key").and_then(Value::as_str).unwrap_or("");
        let value = t.get("value").and_then(Value::as_str).unwrap_or("");
        let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
        validate_label_name(key, &tp.child("key"), errs);
        let msgs = is_valid_label_value(value);
        if !msgs.is_empty() {
            errs.push(invalid_str(&tp.child("value"), value, &msgs.join(";")));
        }
        match effect {
            "" => errs.push(required(&tp.child("effect"), "")),
            "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            other => {
                errs.push(not_supported(&tp.child("effect"), other, &["NoSchedule", "PreferNoSchedule", "NoExecute"]))
            }
        }
        if !seen.insert((effect.to_string(), key.to_string())) {
            let mut cause = duplicate_raw(
                &tp,
                &format!(
                    "core.Taint{{Key:{}, Value:{}, Effect:{}, TimeAdded:(*v1.Time)(nil)}}",
                    go_quote(key),
                    go_quote(value),
                    go_quote(effect)
                ),
            );
            cause.message.push_str(": taints must be unique by key and effect pair");
            errs.push(cause);
        }
    }
}

/// `ValidateNode` beyond metadata.
pub(crate) fn validate_node(node: &Value, errs: &mut Errs) {
    let Some(spec) = get(node, "spec") else { return };
    validate_taints(spec, errs);
    let cp = Path::new("spec").child("podCIDRs");
    let cidrs = str_list(spec, "podCIDRs", &Path::new("spec"), errs);
    for (i, c) in cidrs.iter().enumerate() {
        for msg in is_valid_cidr(c) {
            errs.push(invalid_str(&cp.index(i), c, &msg));
        }
    }
    if cidrs.len() > 1 {
        let v6 = cidrs.iter().filter(|c| c.contains(':')).count();
        if cidrs.len() > 2 || v6 != 1 {
            errs.push(super::report::invalid_raw(
                &cp,
                &super::report::go_string_slice(spec.get("podCIDRs").and_then(Value::as_array)),
                "may specify no more than one CIDR for each IP family",
            ));
        }
        let mut seen = HashSet::new();
        for (i, c) in cidrs.iter().enumerate() {
            if !seen.insert(*c) {
                errs.push(super::report::duplicate_str(&cp.index(i), c));
            }
        }
    }
}

/// `ValidateNodeUpdate` beyond metadata and the new object's own validity: pod CIDRs and the
/// provider ID may be set once.
pub(crate) fn validate_node_update(new: &Value, old: &Value, errs: &mut Errs) {
    let list = |v: &Value| -> Vec<String> {
        v.pointer("/spec/podCIDRs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(String::from))
            .collect()
    };
    let (new_cidrs, old_cidrs) = (list(new), list(old));
    if !old_cidrs.is_empty() && new_cidrs != old_cidrs {
        errs.push(forbidden(
            &Path::new("spec").child("podCIDRs"),
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
    let provider = |v: &Value| v.pointer("/spec/providerID").and_then(Value::as_str).unwrap_or("").to_string();
    if !provider(old).is_empty() && provider(old) != provider(new) {
        errs.push(forbidden(
            &Path::new("spec").child("providerID"),
            "node updates may not change providerID except from \"\" to valid",
        ));
    }
    let external = |v: &Value| v.pointer("/spec/externalID").cloned();
    if external(new) != external(old) {
        errs.push(forbidden(&Path::new("spec").child("externalID"), "may not be updated"));
    }
}

/// `ValidateNamespace` beyond metadata: `spec.finalizers` names.
pub(crate) fn validate_namespace(ns: &Value, errs: &mut Errs) {
    let Some(spec) = get(ns, "spec") else { return };
    let p = Path::new("spec").child("finalizers");
    for f in str_list(spec, "finalizers", &Path::new("spec"), errs) {
        for msg in is_qualified_name(f) {
            errs.push(invalid_str(&p, f, &msg));
        }
        if !f.contains('/') && f != "kubernetes" && f != "orphan" && f != "foregroundDeletion" {
            errs.push(invalid_str(&p, f, "name is neither a standard finalizer name nor is it fully qualified"));
        }
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
    fn taints() {
        let mut errs = Vec::new();
        validate_node(
            &json!({"spec": {"taints": [
                {"key": "k", "value": "v", "effect": "NoSchedule"},
                {"key": "k", "value": "w", "effect": "NoSchedule"},
                {"key": "k2", "effect": "Sometimes"},
            ]}}),
            &mut errs,
        );
        assert_eq!(
            msgs(&errs),
            [
                "metadata.taints[1]: Duplicate value: core.Taint{Key:\"k\", Value:\"w\", Effect:\"NoSchedule\", TimeAdded:(*v1.Time)(nil)}: taints must be unique by key and effect pair",
                "metadata.taints[2].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
            ]
        );
    }

    #[test]
    fn pod_cidrs_are_set_once() {
        let old = json!({"spec": {"podCIDRs": ["10.42.0.0/24"]}});
        let mut errs = Vec::new();
        validate_node_update(&json!({"spec": {"podCIDRs": ["10.42.1.0/24"]}}), &old, &mut errs);
        assert_eq!(
            msgs(&errs),
            ["spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"]
        );
        let mut errs = Vec::new();
        validate_node_update(&old, &json!({"spec": {}}), &mut errs);
        assert!(errs.is_empty());
        let mut errs = Vec::new();
        validate_node(&json!({"spec": {"podCIDRs": ["10.42.0.0/33"]}}), &mut errs);
        assert_eq!(errs[0].field, "spec.podCIDRs[0]");
    }

    #[test]
    fn namespace_finalizers() {
        let mut errs = Vec::new();
        validate_namespace(&json!({"spec": {"finalizers": ["kubernetes", "mine", "example.com/x"]}}), &mut errs);
        assert_eq!(
            msgs(&errs),
            [
                "spec.finalizers: Invalid value: \"mine\": name is neither a standard finalizer name nor is it fully qualified"
            ]
        );
    }
}
