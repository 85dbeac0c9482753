//! Workloads of `apps/v1`: Deployments, ReplicaSets, StatefulSets, DaemonSets
//! (`pkg/apis/apps/validation`), and the selector-versus-template rule they share with Jobs.

use serde_json::Value;

use super::equality::semantic_eq;
use super::labels::{selector_is_convertible, selector_is_empty, selector_matches, validate_label_selector};
use super::names::is_valid_percent;
use super::path::Path;
use super::pod::validate_pod_template;
use super::report::check_enum;
use super::report::{
    Errs, forbidden, get, go_label_selector, go_quote, go_string_map, immutable_raw, int_at, invalid_int, invalid_raw,
    not_supported, not_supported_raw, obj_at, required, str_or_empty, type_invalid,
};

/// `ValidateNonnegativeField` on an optional integer field.
pub(crate) fn nonnegative(v: &Value, key: &str, path: &Path, errs: &mut Errs) {
    if let Some(n) = int_at(v, key, path, errs)
        && n < 0
    {
        errs.push(invalid_int(&path.child(key), n, "must be greater than or equal to 0"));
    }
}

/// The object at `obj.spec`, or an empty one.
pub(crate) fn spec_of(obj: &Value, errs: &mut Errs) -> Value {
    obj_at(obj, "spec", &Path::new(""), errs).cloned().unwrap_or_else(|| Value::Object(Default::default()))
}

/// What a workload's `spec.selector` turned out to be.
pub(crate) enum Selector<'a> {
    /// Not given.
    Absent,
    /// Given, and convertible to a label selector.
    Usable(&'a Value),
    /// Given, but with operators or values that make no selector.
    Unconvertible,
}

impl<'a> Selector<'a> {
    /// The selector when usable.
    pub(crate) fn usable(&self) -> Option<&'a Value> {
        match self {
            Selector::Usable(s) => Some(s),
            _ => None,
        }
    }
}

/// Validates `spec.selector` as workloads require it: present (unless `optional`), well
/// formed, and — when `empty_word` names the kind for the message — not empty. Returns the
/// selector when it converts to a label selector.
pub(crate) fn validate_workload_selector<'a>(
    spec: &'a Value,
    sp: &Path,
    empty_word: Option<&str>,
    optional: bool,
    errs: &mut Errs,
) -> Selector<'a> {
    let sel_path = sp.child("selector");
    let Some(sel) = obj_at(spec, "selector", sp, errs) else {
        if !optional {
            errs.push(required(&sel_path, ""));
        }
        return Selector::Absent;
    };
    validate_label_selector(sel, &sel_path, errs);
    if let Some(word) = empty_word
        && selector_is_empty(sel)
    {
        errs.push(invalid_raw(
            &sel_path,
            &go_label_selector(Some(sel)),
            &format!("empty selector is invalid for {word}"),
        ));
    }
    if selector_is_convertible(sel) { Selector::Usable(sel) } else { Selector::Unconvertible }
}

/// The template labels must satisfy the selector (an absent selector selects nothing, an
/// empty one everything).
pub(crate) fn check_selector_matches_template(selector: Option<&Value>, spec: &Value, sp: &Path, errs: &mut Errs) {
    let labels = spec.pointer("/template/metadata/labels").filter(|l| !l.is_null());
    let matches = match selector {
        None => false,
        Some(s) if selector_is_empty(s) => true,
        Some(s) => selector_matches(s, labels),
    };
    if !matches {
        errs.push(invalid_raw(
            &sp.child("template").child("metadata").child("labels"),
            &go_string_map(labels.and_then(Value::as_object)),
            "`selector` does not match template `labels`",
        ));
    }
}

/// The template rules of controllers whose pods always restart.
fn validate_always_restarting_template(spec: &Value, sp: &Path, kind: &str, errs: &mut Errs) {
    let tp = sp.child("template");
    let empty = Value::Object(Default::default());
    let template = obj_at(spec, "template", sp, errs).unwrap_or(&empty);
    validate_pod_template(template, &tp, errs);
    let pod_spec = tp.child("spec");
    if let Some(policy) = template.pointer("/spec/restartPolicy").and_then(Value::as_str)
        && !policy.is_empty()
        && policy != "Always"
    {
        errs.push(not_supported(&pod_spec.child("restartPolicy"), policy, &["Always"]));
    }
    if template.pointer("/spec/activeDeadlineSeconds").is_some_and(|v| !v.is_null()) {
        errs.push(forbidden(
            &pod_spec.child("activeDeadlineSeconds"),
            &format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
}

/// `ValidatePodTemplateSpecForReplicaSet` after the selector checks of Deployments and
/// ReplicaSets.
fn validate_replicated_template(spec: &Value, sp: &Path, kind_word: &str, errs: &mut Errs) {
    match validate_workload_selector(spec, sp, Some(kind_word), false, errs) {
        Selector::Unconvertible => {
            let sel = get(spec, "selector");
            errs.push(invalid_raw(&sp.child("selector"), &go_label_selector(sel), "invalid label selector"));
        }
        selector => {
            check_selector_matches_template(selector.usable(), spec, sp, errs);
            validate_always_restarting_template(spec, sp, "ReplicaSet", errs);
        }
    }
}

/// Renders an int-or-string as Go prints `intstr.IntOrString`.
fn go_intstr(v: &Value) -> String {
    match v {
        Value::String(s) => format!("intstr.IntOrString{{Type:1, IntVal:0, StrVal:{}}}", go_quote(s)),
        other => format!("intstr.IntOrString{{Type:0, IntVal:{}, StrVal:\"\"}}", other.as_i64().unwrap_or(0)),
    }
}

/// `ValidatePositiveIntOrPercent` plus the 100% cap; returns the value (percent or count).
fn int_or_percent(parent: &Value, key: &str, default: i64, path: &Path, errs: &mut Errs) -> i64 {
    let p = path.child(key);
    let Some(v) = get(parent, key) else { return default };
    match v {
        Value::String(s) => {
            for msg in is_valid_percent(s) {
                errs.push(invalid_raw(&p, &go_intstr(v), &msg));
            }
            let value = s.strip_suffix('%').and_then(|d| d.parse::<i64>().ok());
            if let Some(pct) = value
                && pct > 100
            {
                errs.push(invalid_raw(&p, &go_intstr(v), "must not be greater than 100%"));
            }
            value.unwrap_or(0)
        }
        Value::Number(n) => match n.as_i64() {
            Some(i) => {
                if i < 0 {
                    errs.push(invalid_int(&p, i, "must be greater than or equal to 0"));
                }
                i
            }
            None => {
                errs.push(type_invalid(&p, v, "integer"));
                0
            }
        },
        other => {
            errs.push(invalid_raw(&p, &other.to_string(), "must be an integer or percentage (e.g '5%')"));
            0
        }
    }
}

fn validate_deployment_strategy(spec: &Value, sp: &Path, errs: &mut Errs) {
    let Some(strategy) = obj_at(spec, "strategy", sp, errs) else { return };
    let p = sp.child("strategy");
    let rolling = get(strategy, "rollingUpdate");
    match str_or_empty(strategy, "type", &p, errs) {
        "Recreate" => {
            if rolling.is_some() {
                errs.push(forbidden(
                    &p.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" | "" => {
            if let Some(ru) = rolling {
                let rp = p.child("rollingUpdate");
                let unavailable = int_or_percent(ru, "maxUnavailable", 25, &rp, errs);
                let surge = int_or_percent(ru, "maxSurge", 25, &rp, errs);
                if unavailable == 0 && surge == 0 {
                    let shown = get(ru, "maxUnavailable").map_or_else(|| go_intstr(&Value::from(0)), go_intstr);
                    errs.push(invalid_raw(&rp.child("maxUnavailable"), &shown, "may not be 0 when `maxSurge` is 0"));
                }
            }
        }
        other => errs.push(not_supported_raw(
            &p,
            &format!(
                "apps.DeploymentStrategy{{Type:{}, RollingUpdate:(*apps.RollingUpdateDeployment)(nil)}}",
                go_quote(other)
            ),
            &["Recreate", "RollingUpdate"],
        )),
    }
}

/// `ValidateDeploymentSpec`.
pub(crate) fn validate_deployment(obj: &Value, errs: &mut Errs) {
    let sp = Path::new("spec");
    let spec = spec_of(obj, errs);
    nonnegative(&spec, "replicas", &sp, errs);
    validate_replicated_template(&spec, &sp, "deployment", errs);
    validate_deployment_strategy(&spec, &sp, errs);
    nonnegative(&spec, "minReadySeconds", &sp, errs);
    nonnegative(&spec, "revisionHistoryLimit", &sp, errs);
    if let Some(deadline) = int_at(&spec, "progressDeadlineSeconds", &sp, errs) {
        let p = sp.child("progressDeadlineSeconds");
        if deadline < 0 {
            errs.push(invalid_int(&p, deadline, "must be greater than or equal to 0"));
        }
        let min_ready = spec.get("minReadySeconds").and_then(Value::as_i64).unwrap_or(0);
        if deadline <= min_ready {
            errs.push(invalid_int(&p, deadline, "must be greater than minReadySeconds"));
        }
    }
}

/// `ValidateReplicaSetSpec`.
pub(crate) fn validate_replica_set(obj: &Value, errs: &mut Errs) {
    let sp = Path::new("spec");
    let spec = spec_of(obj, errs);
    nonnegative(&spec, "replicas", &sp, errs);
    nonnegative(&spec, "minReadySeconds", &sp, errs);
    // Upstream's message says "deployment" for ReplicaSets too.
    validate_replicated_template(&spec, &sp, "deployment", errs);
}

/// `ValidateDaemonSetSpec`.
pub(crate) fn validate_daemon_set(obj: &Value, errs: &mut Errs) {
    let sp = Path::new("spec");
    let spec = spec_of(obj, errs);
    let selector = validate_workload_selector(&spec, &sp, Some("daemonset"), true, errs);
    if !matches!(selector, Selector::Unconvertible) {
        check_selector_matches_template(selector.usable(), &spec, &sp, errs);
    }
    validate_always_restarting_template(&spec, &sp, "DaemonSet", errs);
    nonnegative(&spec, "minReadySeconds", &sp, errs);
    nonnegative(&spec, "templateGeneration", &sp, errs);
    nonnegative(&spec, "revisionHistoryLimit", &sp, errs);
    let Some(strategy) = obj_at(&spec, "updateStrategy", &sp, errs) else { return };
    let p = sp.child("updateStrategy");
    match str_or_empty(strategy, "type", &p, errs) {
        "OnDelete" => {}
        "RollingUpdate" | "" => {
            if let Some(ru) = get(strategy, "rollingUpdate") {
                let rp = p.child("rollingUpdate");
                let unavailable = int_or_percent(ru, "maxUnavailable", 1, &rp, errs);
                let surge = int_or_percent(ru, "maxSurge", 0, &rp, errs);
                if unavailable != 0 && surge != 0 {
                    let shown = get(ru, "maxSurge").map_or_else(String::new, go_intstr);
                    errs.push(invalid_raw(
                        &rp.child("maxSurge"),
                        &shown,
                        "may not be set when maxUnavailable is non-zero",
                    ));
                } else if unavailable == 0 && surge == 0 {
                    errs.push(required(&rp.child("maxUnavailable"), "cannot be 0 when maxSurge is 0"));
                }
            }
        }
        other => errs.push(not_supported_raw(
            &p,
            &format!(
                "apps.DaemonSetUpdateStrategy{{Type:{}, RollingUpdate:(*apps.RollingUpdateDaemonSet)(nil)}}",
                go_quote(other)
            ),
            &["RollingUpdate", "OnDelete"],
        )),
    }
}

/// `ValidateStatefulSetSpec`. Upstream checks only the labels and annotations of the pod
/// template here (its volume mounts may name claim templates); the pod spec is validated
/// when the controller creates pods.
pub(crate) fn validate_stateful_set(obj: &Value, errs: &mut Errs) {
    let sp = Path::new("spec");
    let spec = spec_of(obj, errs);
    match str_or_empty(&spec, "podManagementPolicy", &sp, errs) {
        "" | "OrderedReady" | "Parallel" => {}
        other => errs.push(super::report::invalid_str(
            &sp.child("podManagementPolicy"),
            other,
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    if let Some(strategy) = obj_at(&spec, "updateStrategy", &sp, errs) {
        let p = sp.child("updateStrategy");
        let rolling = get(strategy, "rollingUpdate");
        match str_or_empty(strategy, "type", &p, errs) {
            "OnDelete" => {
                if let Some(ru) = rolling {
                    errs.push(super::report::invalid_json(
                        &p.child("rollingUpdate"),
                        ru,
                        "only allowed for updateStrategy 'RollingUpdate'",
                    ));
                }
            }
            "RollingUpdate" | "" => {
                if let Some(ru) = rolling {
                    let rp = p.child("rollingUpdate");
                    nonnegative(ru, "partition", &rp, errs);
                    if get(ru, "maxUnavailable").is_some() && int_or_percent(ru, "maxUnavailable", 1, &rp, errs) == 0 {
                        let shown = get(ru, "maxUnavailable").map_or_else(String::new, go_intstr);
                        errs.push(invalid_raw(&rp.child("maxUnavailable"), &shown, "cannot be 0"));
                    }
                }
            }
            other => errs.push(super::report::invalid_raw(
                &p,
                &format!(
                    "apps.StatefulSetUpdateStrategy{{Type:{}, RollingUpdate:(*apps.RollingUpdateStatefulSetStrategy)(nil)}}",
                    go_quote(other)
                ),
                "must be 'RollingUpdate' or 'OnDelete'",
            )),
        }
    }
    if let Some(policy) = obj_at(&spec, "persistentVolumeClaimRetentionPolicy", &sp, errs) {
        let p = sp.child("persistentVolumeClaimRetentionPolicy");
        check_enum(policy, "whenDeleted", &p, &["Retain", "Delete"], errs);
        check_enum(policy, "whenScaled", &p, &["Retain", "Delete"], errs);
    }
    nonnegative(&spec, "replicas", &sp, errs);
    nonnegative(&spec, "minReadySeconds", &sp, errs);
    if let Some(start) = spec.pointer("/ordinals/start").and_then(Value::as_i64)
        && start < 0
    {
        errs.push(invalid_int(&sp.child("ordinals.start"), start, "must be greater than or equal to 0"));
    }
    match validate_workload_selector(&spec, &sp, Some("statefulset"), false, errs) {
        Selector::Unconvertible => {
            errs.push(invalid_raw(&sp.child("selector"), &go_label_selector(get(&spec, "selector")), ""))
        }
        selector => {
            check_selector_matches_template(selector.usable(), &spec, &sp, errs);
            let tp = sp.child("template");
            if let Some(meta) = spec.pointer("/template/metadata").filter(|m| m.is_object()) {
                super::labels::validate_labels_at(meta, "labels", &tp, errs);
                super::labels::validate_annotations_at(meta, "annotations", &tp, errs);
            }
        }
    }
    let pod_spec = sp.child("template").child("spec");
    if let Some(policy) = spec.pointer("/template/spec/restartPolicy").and_then(Value::as_str)
        && !policy.is_empty()
        && policy != "Always"
    {
        errs.push(not_supported(&pod_spec.child("restartPolicy"), policy, &["Always"]));
    }
    if spec.pointer("/template/spec/activeDeadlineSeconds").is_some_and(|v| !v.is_null()) {
        errs.push(forbidden(
            &pod_spec.child("activeDeadlineSeconds"),
            "activeDeadlineSeconds in StatefulSet is not Supported",
        ));
    }
}

/// `spec.selector` may not change (`apps/v1` update strategies).
pub(crate) fn validate_selector_immutable(new: &Value, old: &Value, errs: &mut Errs) {
    let new_sel = new.pointer("/spec/selector").filter(|s| !s.is_null());
    let old_sel = old.pointer("/spec/selector").filter(|s| !s.is_null());
    if !semantic_eq(new_sel, old_sel) {
        errs.push(immutable_raw(&Path::new("spec").child("selector"), &go_label_selector(new_sel)));
    }
}

/// `ValidateStatefulSetUpdate`: only some spec fields may change.
pub(crate) fn validate_stateful_set_update(new: &Value, old: &Value, errs: &mut Errs) {
    const MUTABLE: &[&str] = &[
        "replicas",
        "ordinals",
        "template",
        "updateStrategy",
        "persistentVolumeClaimRetentionPolicy",
        "minReadySeconds",
    ];
    let strip = |obj: &Value| {
        let mut spec = obj.get("spec").cloned().unwrap_or_else(|| Value::Object(Default::default()));
        if let Some(o) = spec.as_object_mut() {
            o.retain(|k, _| !MUTABLE.contains(&k.as_str()));
        }
        spec
    };
    if !semantic_eq(Some(&strip(new)), Some(&strip(old))) {
        errs.push(forbidden(
            &Path::new("spec"),
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
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

    fn deployment(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn template(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}})
    }

    #[test]
    fn a_plain_deployment_is_valid() {
        let mut errs = Vec::new();
        validate_deployment(
            &deployment(
                json!({"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "web"}))}),
            ),
            &mut errs,
        );
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn mismatched_selector_is_reported_on_template_labels() {
        let mut errs = Vec::new();
        validate_deployment(
            &deployment(
                json!({"selector": {"matchLabels": {"app": "api"}}, "template": template(json!({"app": "web"}))}),
            ),
            &mut errs,
        );
        assert_eq!(
            msgs(&errs),
            [
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"
            ]
        );
    }

    #[test]
    fn selector_is_required_and_not_empty() {
        let mut errs = Vec::new();
        validate_deployment(&deployment(json!({"template": template(json!({"app": "web"}))})), &mut errs);
        assert_eq!(
            msgs(&errs),
            [
                "spec.selector: Required value",
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`",
            ]
        );
        let mut errs = Vec::new();
        validate_deployment(
            &deployment(json!({"selector": {}, "template": template(json!({"app": "web"}))})),
            &mut errs,
        );
        assert_eq!(
            msgs(&errs),
            [
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"
            ]
        );
    }

    #[test]
    fn replicas_strategy_and_restart_policy() {
        let mut t = template(json!({"app": "web"}));
        t["spec"]["restartPolicy"] = json!("Never");
        let mut errs = Vec::new();
        validate_deployment(
            &deployment(json!({"replicas": -1, "selector": {"matchLabels": {"app": "web"}}, "template": t,
                "strategy": {"type": "Rolling"}})),
            &mut errs,
        );
        assert_eq!(
            msgs(&errs),
            [
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
                "spec.strategy: Unsupported value: apps.DeploymentStrategy{Type:\"Rolling\", RollingUpdate:(*apps.RollingUpdateDeployment)(nil)}: supported values: \"Recreate\", \"RollingUpdate\"",
            ]
        );
        let mut errs = Vec::new();
        validate_deployment(
            &deployment(
                json!({"selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "web"})),
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}}),
            ),
            &mut errs,
        );
        assert_eq!(
            msgs(&errs),
            [
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"0%\"}: may not be 0 when `maxSurge` is 0"
            ]
        );
    }

    #[test]
    fn pod_template_problems_surface_with_template_paths() {
        let mut errs = Vec::new();
        validate_deployment(
            &deployment(json!({"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web"}]}}})),
            &mut errs,
        );
        assert_eq!(msgs(&errs), ["spec.template.spec.containers[0].image: Required value"]);
    }

    #[test]
    fn selector_is_immutable() {
        let old = deployment(json!({"selector": {"matchLabels": {"app": "a"}}}));
        let new = deployment(json!({"selector": {"matchLabels": {"app": "b"}}}));
        let mut errs = Vec::new();
        validate_selector_immutable(&new, &old, &mut errs);
        assert_eq!(
            msgs(&errs),
            [
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"b\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
            ]
        );
    }

    #[test]
    fn stateful_sets() {
        let sts = json!({"spec": {"selector": {"matchLabels": {"app": "db"}}, "serviceName": "db",
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "pg",
                "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}}]}});
        let mut errs = Vec::new();
        validate_stateful_set(&sts, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        let mut changed = sts.clone();
        changed["spec"]["serviceName"] = json!("other");
        let mut errs = Vec::new();
        validate_stateful_set_update(&changed, &sts, &mut errs);
        assert_eq!(errs[0].field, "spec");
        let mut scaled = sts.clone();
        scaled["spec"]["replicas"] = json!(5);
        let mut errs = Vec::new();
        validate_stateful_set_update(&scaled, &sts, &mut errs);
        assert!(errs.is_empty());
    }

    #[test]
    fn daemon_sets() {
        let ds = json!({"spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": template(json!({"app": "agent"})),
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}}});
        let mut errs = Vec::new();
        validate_daemon_set(&ds, &mut errs);
        assert_eq!(
            msgs(&errs),
            ["spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"]
        );
    }
}
