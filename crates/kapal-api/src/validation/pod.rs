//! Pod specs (`ValidatePodSpec` and friends in `pkg/apis/core/validation/validation.go`):
//! volumes, containers, ports, env, mounts, probes, and the pod-level fields kubectl users set.
//!
//! Objects usually arrive here already defaulted; a field that defaulting fills (restart
//! policy, protocols, pull policy, probe thresholds, …) is therefore only checked when it is
//! present and non-empty, so an undefaulted object is not rejected for leaving it out.

use std::collections::HashSet;

use serde_json::Value;

use super::container::{MAX_INT32, id_in_range, validate_containers, validate_init_containers, validate_seccomp};
use super::labels::{validate_label_name, validate_label_selector, validate_labels_at};
use super::names::{NameRule, inclusive_range_error, is_dns1123_subdomain, is_valid_ip, is_valid_label_value};
use super::path::Path;
use super::report::{
    Errs, check_enum, dns_label, dns_subdomain, duplicate_str, forbidden, get, int_at, invalid_int, invalid_json,
    invalid_str, items, not_supported, obj_at, qualified_name, required, str_at, str_list, str_or_empty, type_invalid,
};
use super::resources::validate_resource_requirements;
use super::volume::validate_volumes;

/// Where a pod spec sits: in a Pod, or in a template of some workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpecOf {
    Pod,
    Template,
}

/// Validates a pod spec at `path` (`spec`, `spec.template.spec`, …).
pub(crate) fn validate_pod_spec(spec: &Value, path: &Path, of: SpecOf, errs: &mut Errs) {
    if !spec.is_object() {
        errs.push(type_invalid(path, spec, "object"));
        return;
    }
    let grace = int_at(spec, "terminationGracePeriodSeconds", path, errs).unwrap_or(30);
    let volumes = validate_volumes(spec, path, errs);
    validate_containers(spec, &volumes, grace, path, errs);
    validate_init_containers(spec, &volumes, grace, path, errs);
    validate_host_network(spec, path, of, errs);

    check_enum(spec, "restartPolicy", path, &["Always", "OnFailure", "Never"], errs);
    check_enum(spec, "dnsPolicy", path, &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"], errs);
    validate_labels_at(spec, "nodeSelector", path, errs);
    validate_pod_security_context(spec, path, errs);
    validate_dns_config(spec, path, errs);
    validate_readiness_gates(spec, path, errs);
    validate_scheduling_gates(spec, path, errs);
    validate_topology_spread(spec, path, errs);

    for (key, rule) in [
        ("serviceAccountName", NameRule::DnsSubdomain),
        ("nodeName", NameRule::DnsSubdomain),
        ("priorityClassName", NameRule::DnsSubdomain),
        ("runtimeClassName", NameRule::DnsSubdomain),
    ] {
        if let Some(v) = str_at(spec, key, path, errs)
            && !v.is_empty()
        {
            for msg in rule.check(v, false) {
                errs.push(invalid_str(&path.child(key), v, &msg));
            }
        }
    }
    if let Some(ads) = int_at(spec, "activeDeadlineSeconds", path, errs)
        && !(1..=MAX_INT32).contains(&ads)
    {
        errs.push(invalid_int(&path.child("activeDeadlineSeconds"), ads, &inclusive_range_error(1, MAX_INT32)));
    }
    for key in ["hostname", "subdomain"] {
        if let Some(v) = str_at(spec, key, path, errs)
            && !v.is_empty()
        {
            dns_label(v, &path.child(key), errs);
        }
    }
    validate_tolerations(spec, path, errs);
    validate_host_aliases(spec, path, errs);
    check_enum(spec, "preemptionPolicy", path, &["PreemptLowerPriority", "Never"], errs);
    if let Some(overhead) = obj_at(spec, "overhead", path, errs) {
        let wrapped = serde_json::json!({ "limits": overhead });
        let mut inner = Vec::new();
        validate_resource_requirements(&wrapped, &path.child("overhead"), &mut inner);
        // The wrapper adds a `limits` segment upstream does not have.
        for mut c in inner {
            c.field = c.field.replacen("overhead.limits", "overhead", 1);
            errs.push(c);
        }
    }
    if let Some(os) = obj_at(spec, "os", path, errs) {
        let p = path.child("os");
        match str_or_empty(os, "name", &p, errs) {
            "" => errs.push(required(&p.child("name"), "cannot be empty")),
            "linux" | "windows" => {}
            other => errs.push(not_supported(&p, other, &["linux", "windows"])),
        }
    }
}

// ---- pod-level fields ---------------------------------------------------------------------

fn validate_host_network(spec: &Value, path: &Path, of: SpecOf, errs: &mut Errs) {
    if spec.get("hostNetwork").and_then(Value::as_bool) != Some(true) {
        return;
    }
    let cp = path.child("containers");
    for (i, c) in spec.get("containers").and_then(Value::as_array).into_iter().flatten().enumerate() {
        for (j, port) in c.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let cport = port.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
            // An absent hostPort is defaulted to containerPort in a Pod.
            let Some(hp) = port.get("hostPort").and_then(Value::as_i64) else { continue };
            if (of == SpecOf::Pod || hp != 0) && hp != cport {
                errs.push(invalid_int(
                    &cp.index(i).child("ports").index(j).child("hostPort"),
                    hp,
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
    }
}

fn validate_pod_security_context(spec: &Value, path: &Path, errs: &mut Errs) {
    let Some(sc) = obj_at(spec, "securityContext", path, errs) else { return };
    let p = path.child("securityContext");
    id_in_range(sc, "fsGroup", &p, errs);
    id_in_range(sc, "runAsUser", &p, errs);
    id_in_range(sc, "runAsGroup", &p, errs);
    for (i, g) in items(sc, "supplementalGroups", &p, errs).iter().enumerate() {
        if let Some(g) = g.as_i64()
            && !(0..=MAX_INT32).contains(&g)
        {
            errs.push(invalid_int(&p.child("supplementalGroups").index(i), g, &inclusive_range_error(0, MAX_INT32)));
        }
    }
    if sc.get("shareProcessNamespace").and_then(Value::as_bool) == Some(true)
        && spec.get("hostPID").and_then(Value::as_bool) == Some(true)
    {
        errs.push(super::report::invalid_raw(
            &p.child("shareProcessNamespace"),
            "true",
            "ShareProcessNamespace and HostPID cannot both be enabled",
        ));
    }
    let sp = p.child("sysctls");
    let mut names: HashSet<&str> = HashSet::new();
    for (i, s) in items(sc, "sysctls", &p, errs).iter().enumerate() {
        let name = s.get("name").and_then(Value::as_str).unwrap_or("");
        let np = sp.index(i).child("name");
        if name.is_empty() {
            errs.push(required(&np, ""));
        } else if !is_sysctl_name(name) {
            errs.push(invalid_str(
                &np,
                name,
                "must have at most 253 characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$",
            ));
        } else if !names.insert(name) {
            errs.push(duplicate_str(&np, name));
        }
    }
    check_enum(sc, "fsGroupChangePolicy", &p, &["Always", "OnRootMismatch"], errs);
    validate_seccomp(sc, &p, errs);
}

fn is_sysctl_name(name: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    name.len() <= 253
        && name.split(['.', '/']).all(|seg| {
            let b = seg.as_bytes();
            !b.is_empty()
                && alnum(b[0])
                && alnum(b[b.len() - 1])
                && b.iter().all(|&c| alnum(c) || c == b'-' || c == b'_')
        })
}

fn validate_dns_config(spec: &Value, path: &Path, errs: &mut Errs) {
    let p = path.child("dnsConfig");
    let config = obj_at(spec, "dnsConfig", path, errs);
    let policy = spec.get("dnsPolicy").and_then(Value::as_str);
    if policy == Some("None") {
        let Some(config) = config else {
            errs.push(required(&p, "must provide `dnsConfig` when `dnsPolicy` is None"));
            return;
        };
        if config.get("nameservers").and_then(Value::as_array).is_none_or(Vec::is_empty) {
            errs.push(required(
                &p.child("nameservers"),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            ));
            return;
        }
    }
    let Some(config) = config else { return };
    let nameservers = str_list(config, "nameservers", &p, errs);
    if nameservers.len() > 3 {
        errs.push(invalid_json(
            &p.child("nameservers"),
            &config["nameservers"],
            "must not have more than 3 nameservers",
        ));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        for m in is_valid_ip(ns) {
            errs.push(invalid_str(&p.child("nameservers").index(i), ns, &m));
        }
    }
    let searches = str_list(config, "searches", &p, errs);
    if searches.len() > 32 {
        errs.push(invalid_json(&p.child("searches"), &config["searches"], "must not have more than 32 search paths"));
    }
    if searches.join(" ").len() > 2048 {
        errs.push(invalid_json(
            &p.child("searches"),
            &config["searches"],
            "must not have more than 2048 characters (including spaces) in the search list",
        ));
    }
    for (i, s) in searches.iter().enumerate() {
        if *s != "." {
            let trimmed = s.strip_suffix('.').unwrap_or(s);
            // Relaxed DNS search validation (default since 1.32) also allows underscores.
            let relaxed = trimmed.replace('_', "a");
            if !is_dns1123_subdomain(&relaxed).is_empty() {
                dns_subdomain(trimmed, &p.child("searches").index(i), errs);
            }
        }
    }
    for (i, o) in items(config, "options", &p, errs).iter().enumerate() {
        if o.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
            errs.push(required(&p.child("options").index(i), "must not be empty"));
        }
    }
}

fn validate_readiness_gates(spec: &Value, path: &Path, errs: &mut Errs) {
    let p = path.child("readinessGates");
    for (i, g) in items(spec, "readinessGates", path, errs).iter().enumerate() {
        let t = g.get("conditionType").and_then(Value::as_str).unwrap_or("");
        qualified_name(t, &p.index(i).child("conditionType"), errs);
    }
}

fn validate_scheduling_gates(spec: &Value, path: &Path, errs: &mut Errs) {
    let p = path.child("schedulingGates");
    let mut seen: HashSet<&str> = HashSet::new();
    for (i, g) in items(spec, "schedulingGates", path, errs).iter().enumerate() {
        let name = g.get("name").and_then(Value::as_str).unwrap_or("");
        qualified_name(name, &p.index(i), errs);
        if !seen.insert(name) {
            errs.push(duplicate_str(&p.index(i), name));
        }
    }
}

fn validate_topology_spread(spec: &Value, path: &Path, errs: &mut Errs) {
    let p = path.child("topologySpreadConstraints");
    let constraints = items(spec, "topologySpreadConstraints", path, errs);
    for (i, c) in constraints.iter().enumerate() {
        let cp = p.index(i);
        let skew = c.get("maxSkew").and_then(Value::as_i64).unwrap_or(0);
        if skew <= 0 {
            errs.push(invalid_int(&cp.child("maxSkew"), skew, "must be greater than zero"));
        }
        let key = c.get("topologyKey").and_then(Value::as_str).unwrap_or("");
        if key.is_empty() {
            errs.push(required(&cp.child("topologyKey"), "can not be empty"));
        }
        let action = c.get("whenUnsatisfiable").and_then(Value::as_str).unwrap_or("");
        if action != "DoNotSchedule" && action != "ScheduleAnyway" {
            errs.push(not_supported(&cp.child("whenUnsatisfiable"), action, &["DoNotSchedule", "ScheduleAnyway"]));
        }
        let repeated = constraints[i + 1..].iter().any(|o| {
            o.get("topologyKey").and_then(Value::as_str).unwrap_or("") == key
                && o.get("whenUnsatisfiable").and_then(Value::as_str).unwrap_or("") == action
        });
        if repeated {
            errs.push(super::report::duplicate_raw(
                &cp.child("{topologyKey, whenUnsatisfiable}"),
                &super::report::go_quote(&format!("{{{key}, {action}}}")),
            ));
        }
        if let Some(sel) = get(c, "labelSelector") {
            validate_label_selector(sel, &cp.child("labelSelector"), errs);
        }
    }
}

/// `ValidateTolerations`.
pub(crate) fn validate_tolerations(spec: &Value, path: &Path, errs: &mut Errs) {
    let p = path.child("tolerations");
    for (i, t) in items(spec, "tolerations", path, errs).iter().enumerate() {
        let tp = p.index(i);
        if !t.is_object() {
            errs.push(type_invalid(&tp, t, "object"));
            continue;
        }
        let key = str_or_empty(t, "key", &tp, errs);
        let op = str_or_empty(t, "operator", &tp, errs);
        let value = str_or_empty(t, "value", &tp, errs);
        let effect = str_or_empty(t, "effect", &tp, errs);
        if !key.is_empty() {
            validate_label_name(key, &tp.child("key"), errs);
        }
        if key.is_empty() && op != "Exists" {
            errs.push(invalid_str(
                &tp.child("operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if get(t, "tolerationSeconds").is_some() && effect != "NoExecute" {
            errs.push(invalid_str(
                &tp.child("effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "Equal" | "" => {
                let msgs = is_valid_label_value(value);
                if !msgs.is_empty() {
                    errs.push(invalid_str(&tp.child("operator"), value, &msgs.join(";")));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.push(invalid_str(
                        &tp.child("operator"),
                        value,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(not_supported(&tp.child("operator"), other, &["Equal", "Exists"])),
        }
        if !effect.is_empty() && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
            errs.push(not_supported(&tp.child("effect"), effect, &["NoSchedule", "PreferNoSchedule", "NoExecute"]));
        }
    }
}

fn validate_host_aliases(spec: &Value, path: &Path, errs: &mut Errs) {
    let p = path.child("hostAliases");
    for (i, a) in items(spec, "hostAliases", path, errs).iter().enumerate() {
        let ap = p.index(i);
        let ip = a.get("ip").and_then(Value::as_str).unwrap_or("");
        for m in is_valid_ip(ip) {
            errs.push(invalid_str(&ap.child("ip"), ip, &m));
        }
        for (j, h) in str_list(a, "hostnames", &ap, errs).iter().enumerate() {
            dns_subdomain(h, &ap.child("hostnames").index(j), errs);
        }
    }
}

// ---- templates and pods -------------------------------------------------------------------

/// `ValidatePodTemplateSpec` on the template at `path` (`spec.template`, `template`).
/// Upstream reports template labels on `<path>.labels`, not `<path>.metadata.labels`.
pub(crate) fn validate_pod_template(template: &Value, path: &Path, errs: &mut Errs) {
    if !template.is_object() {
        errs.push(type_invalid(path, template, "object"));
        return;
    }
    let empty = Value::Object(Default::default());
    let meta = obj_at(template, "metadata", path, errs).unwrap_or(&empty);
    let mut meta_errs = Vec::new();
    validate_labels_at(meta, "labels", path, &mut meta_errs);
    super::labels::validate_annotations_at(meta, "annotations", path, &mut meta_errs);
    errs.extend(meta_errs);
    let Some(spec) = get(template, "spec") else {
        // An absent spec still has no containers.
        errs.push(required(&path.child("spec").child("containers"), ""));
        return;
    };
    validate_pod_spec(spec, &path.child("spec"), SpecOf::Template, errs);
    if spec.get("ephemeralContainers").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
        errs.push(forbidden(
            &path.child("spec").child("ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
}

/// The pod-only checks of a Pod being created (`ValidatePodCreate` beyond the spec).
pub(crate) fn validate_pod(pod: &Value, creating: bool, errs: &mut Errs) {
    let path = Path::new("spec");
    let Some(spec) = obj_at(pod, "spec", &Path::new(""), errs) else {
        errs.push(required(&path.child("containers"), ""));
        return;
    };
    validate_pod_spec(spec, &path, SpecOf::Pod, errs);
    for list in ["containers", "initContainers"] {
        for (i, c) in spec.get(list).and_then(Value::as_array).into_iter().flatten().enumerate() {
            if let Some(image) = c.get("image").and_then(Value::as_str)
                && image.trim() != image
            {
                errs.push(invalid_str(
                    &path.child(list).index(i).child("image"),
                    image,
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
    if creating {
        if spec.get("ephemeralContainers").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
            errs.push(forbidden(&path.child("ephemeralContainers"), "cannot be set on create"));
        }
        let node = spec.get("nodeName").and_then(Value::as_str).unwrap_or("");
        if !node.is_empty() && spec.get("schedulingGates").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
            errs.push(forbidden(&path.child("nodeName"), "cannot be set until all schedulingGates have been cleared"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec_errs(spec: Value) -> Errs {
        let mut errs = Vec::new();
        validate_pod_spec(&spec, &Path::new("spec"), SpecOf::Pod, &mut errs);
        errs
    }

    fn fields(errs: &Errs) -> Vec<&str> {
        errs.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn a_plain_pod_spec_is_valid() {
        let errs = spec_errs(json!({
            "containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80, "name": "http"}],
                "env": [{"name": "A", "value": "1"}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}},
                "livenessProbe": {"httpGet": {"path": "/", "port": "http"}, "successThreshold": 1},
                "readinessProbe": {"tcpSocket": {"port": 80}}}],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
        }));
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn containers_are_required_and_named_uniquely() {
        let errs = spec_errs(json!({}));
        assert_eq!(fields(&errs), ["spec.containers"]);
        assert_eq!(errs[0].message, "Required value");
        let errs = spec_errs(json!({"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "x"}]}));
        assert_eq!(fields(&errs), ["spec.containers[1].name"]);
        assert_eq!(errs[0].reason, "FieldValueDuplicate");
        assert_eq!(errs[0].message, "Duplicate value: \"a\"");
    }

    #[test]
    fn container_name_and_image() {
        let errs = spec_errs(json!({"containers": [{"name": "Web_1"}]}));
        assert_eq!(fields(&errs), ["spec.containers[0].name", "spec.containers[0].image"]);
        assert!(errs[0].message.starts_with("Invalid value: \"Web_1\": a lowercase RFC 1123 label"));
        assert_eq!(errs[1].message, "Required value");
    }

    #[test]
    fn ports() {
        let errs = spec_errs(json!({"containers": [{"name": "a", "image": "x", "ports": [
            {"containerPort": 70000, "protocol": "HTTP", "name": "HTTP"},
            {"name": "p"}, {"containerPort": 80, "name": "p"}, {"containerPort": 81, "name": "p"}
        ]}]}));
        let msgs: Vec<String> = errs.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert_eq!(
            msgs,
            [
                "spec.containers[0].ports[0].name: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.containers[0].ports[0].name: Invalid value: \"HTTP\": must contain at least one letter (a-z)",
                "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.containers[0].ports[1].containerPort: Required value",
                "spec.containers[0].ports[2].name: Duplicate value: \"p\"",
                "spec.containers[0].ports[3].name: Duplicate value: \"p\"",
            ]
        );
    }

    #[test]
    fn env_and_env_from() {
        let errs = spec_errs(json!({"containers": [{"name": "a", "image": "x",
            "env": [{"name": ""}, {"name": "A=B"}, {"name": "C", "value": "v", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                    {"name": "D", "valueFrom": {}}],
            "envFrom": [{}]}]}));
        assert_eq!(
            fields(&errs),
            [
                "spec.containers[0].env[0].name",
                "spec.containers[0].env[1].name",
                "spec.containers[0].env[2].valueFrom",
                "spec.containers[0].env[3].valueFrom",
                "spec.containers[0].envFrom",
            ]
        );
        assert_eq!(errs[2].message, "Invalid value: \"\": may not be specified when `value` is not empty");
    }

    #[test]
    fn volumes_and_mounts() {
        let errs = spec_errs(json!({
            "containers": [{"name": "a", "image": "x", "volumeMounts": [
                {"name": "missing", "mountPath": "/a"}, {"name": "ok", "mountPath": "/a"}, {"name": "two", "mountPath": "/b"}]}],
            "volumes": [{"name": "ok", "emptyDir": {}}, {"name": "ok", "emptyDir": {}}, {"name": "none"},
                        {"name": "two", "emptyDir": {}, "configMap": {"name": "c"}}]
        }));
        let msgs: Vec<String> = errs.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert_eq!(
            msgs,
            [
                "spec.volumes[1].name: Duplicate value: \"ok\"",
                "spec.volumes[2]: Required value: must specify a volume type",
                "spec.volumes[3].configMap: Forbidden: may not specify more than 1 volume type",
                "spec.containers[0].volumeMounts[0].name: Not found: \"missing\"",
                "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/a\": must be unique",
                "spec.containers[0].volumeMounts[2].name: Not found: \"two\"",
            ]
        );
    }

    #[test]
    fn pod_level_enums_and_ranges() {
        let errs = spec_errs(json!({"containers": [{"name": "a", "image": "x"}],
            "restartPolicy": "Sometimes", "dnsPolicy": "Mine", "activeDeadlineSeconds": 0, "hostname": "A.b"}));
        let msgs: Vec<String> = errs.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert_eq!(
            msgs[0],
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        );
        assert_eq!(
            msgs[1],
            "spec.dnsPolicy: Unsupported value: \"Mine\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\""
        );
        assert_eq!(
            msgs[2],
            "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive"
        );
        assert_eq!(fields(&errs)[3], "spec.hostname");
    }

    #[test]
    fn probes() {
        let errs = spec_errs(json!({"containers": [{"name": "a", "image": "x",
            "livenessProbe": {"successThreshold": 2, "exec": {"command": ["true"]}, "tcpSocket": {"port": 1}},
            "readinessProbe": {"httpGet": {"port": 0}, "periodSeconds": -1},
            "startupProbe": {}}]}));
        let msgs: Vec<String> = errs.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert_eq!(
            msgs,
            [
                "spec.containers[0].livenessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
                "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
                "spec.containers[0].readinessProbe.httpGet.port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.containers[0].readinessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
                "spec.containers[0].startupProbe: Required value: must specify a handler type",
            ]
        );
    }

    #[test]
    fn init_containers() {
        let errs = spec_errs(json!({"containers": [{"name": "a", "image": "x"}],
            "initContainers": [{"name": "a", "image": "x", "livenessProbe": {"exec": {"command": ["x"]}}},
                               {"name": "side", "image": "x", "restartPolicy": "Never"}]}));
        let msgs: Vec<String> = errs.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert_eq!(
            msgs,
            [
                "spec.initContainers[0].name: Duplicate value: \"a\"",
                "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
                "spec.initContainers[1].restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            ]
        );
    }

    #[test]
    fn tolerations_and_host_ports() {
        let errs = spec_errs(json!({"containers": [{"name": "a", "image": "x",
                "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81, "hostPort": 8080}]}],
            "tolerations": [{"operator": "Equal", "value": "x"}, {"key": "k", "operator": "Exists", "value": "v"}]}));
        let msgs: Vec<String> = errs.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert_eq!(
            msgs,
            [
                "spec.containers[0].ports[1].hostPort: Duplicate value: \"TCP//8080\"",
                "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                "spec.tolerations[1].operator: Invalid value: \"v\": value must be empty when `operator` is 'Exists'",
            ]
        );
    }

    #[test]
    fn wrong_types_are_reported() {
        let errs = spec_errs(json!({"containers": [{"name": 1, "image": ["x"], "ports": "80", "env": {"A": "b"}}],
            "volumes": [7], "restartPolicy": true}));
        assert!(errs.iter().any(|c| c.field == "spec.containers[0].name" && c.reason == "FieldValueTypeInvalid"));
        assert!(errs.iter().any(|c| c.field == "spec.containers[0].ports" && c.reason == "FieldValueTypeInvalid"));
        assert!(errs.iter().any(|c| c.field == "spec.volumes[0]"));
        assert!(errs.iter().any(|c| c.field == "spec.restartPolicy"));
        for junk in [json!(null), json!([]), json!({"containers": [null, 1, "x"]}), json!({"containers": {"a": 1}})] {
            let _ = spec_errs(junk);
        }
    }
}
