//! Containers (`validateContainers`, `validateInitContainers`, `validateContainerCommon`):
//! names, images, ports, env, mounts, devices, resources, security contexts, probes and
//! lifecycle hooks.

use std::collections::HashSet;

use serde_json::Value;

use super::names::{
    NameRule, inclusive_range_error, is_config_map_key, is_env_var_name, is_http_header_name, is_valid_port_name,
    is_valid_port_num,
};
use super::path::Path;
use super::report::{
    Errs, bool_at, check_enum, dns_label, dns_subdomain, duplicate_str, forbidden, get, int_at, invalid_int,
    invalid_json, invalid_str, items, not_found, not_supported, obj_at, qualified_name, required, str_at, str_list,
    str_or_empty, type_invalid,
};
use super::resources::{quantity_at, validate_resource_requirements};
use super::volume::{Volumes, local_descending_path};

/// The largest value of an `int32` field.
pub(crate) const MAX_INT32: i64 = i32::MAX as i64;

/// `validateContainers`: at least one container, unique names, and each valid.
pub(crate) fn validate_containers(spec: &Value, volumes: &Volumes, grace: i64, path: &Path, errs: &mut Errs) {
    let cp = path.child("containers");
    let containers = items(spec, "containers", path, errs);
    if containers.is_empty() {
        errs.push(required(&cp, ""));
        return;
    }
    let mut names: HashSet<&str> = HashSet::new();
    for (i, c) in containers.iter().enumerate() {
        let p = cp.index(i);
        if !c.is_object() {
            errs.push(type_invalid(&p, c, "object"));
            continue;
        }
        validate_container_common(c, volumes, &p, errs);
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        if !names.insert(name) {
            errs.push(duplicate_str(&p.child("name"), name));
        }
        validate_lifecycle_and_probes(c, grace, &p, errs);
        if get(c, "restartPolicy").is_some() {
            errs.push(forbidden(&p.child("restartPolicy"), "may not be set for non-init containers"));
        }
    }
    host_port_conflicts(containers, &cp, errs);
}

/// `validateInitContainers`: names unique across all containers, and probes or hooks only on
/// sidecars (`restartPolicy: Always`).
pub(crate) fn validate_init_containers(spec: &Value, volumes: &Volumes, grace: i64, path: &Path, errs: &mut Errs) {
    let ip = path.child("initContainers");
    let mut names: HashSet<&str> = spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    for (i, c) in items(spec, "initContainers", path, errs).iter().enumerate() {
        let p = ip.index(i);
        if !c.is_object() {
            errs.push(type_invalid(&p, c, "object"));
            continue;
        }
        validate_container_common(c, volumes, &p, errs);
        let restart = str_at(c, "restartPolicy", &p, errs);
        if let Some(r) = restart
            && r != "Always"
        {
            errs.push(not_supported(&p.child("restartPolicy"), r, &["Always"]));
        }
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        if names.contains(name) {
            errs.push(duplicate_str(&p.child("name"), name));
        } else if !name.is_empty() {
            names.insert(name);
        }
        host_port_conflicts(std::slice::from_ref(c), &ip, errs);
        if restart == Some("Always") {
            validate_lifecycle_and_probes(c, grace, &p, errs);
        } else {
            for key in ["lifecycle", "livenessProbe", "readinessProbe", "startupProbe"] {
                if get(c, key).is_some() {
                    errs.push(forbidden(
                        &p.child(key),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
    }
}

/// `validateContainerCommon`: what every kind of container must satisfy.
fn validate_container_common(c: &Value, volumes: &Volumes, p: &Path, errs: &mut Errs) {
    let name = str_or_empty(c, "name", p, errs);
    if name.is_empty() {
        errs.push(required(&p.child("name"), ""));
    } else {
        dns_label(name, &p.child("name"), errs);
    }
    if str_or_empty(c, "image", p, errs).is_empty() {
        errs.push(required(&p.child("image"), ""));
    }
    check_enum(c, "terminationMessagePolicy", p, &["File", "FallbackToLogsOnError"], errs);
    validate_container_ports(c, p, errs);
    validate_env(c, p, errs);
    validate_env_from(c, p, errs);
    validate_volume_mounts(c, volumes, p, errs);
    validate_volume_devices(c, volumes, p, errs);
    check_enum(c, "imagePullPolicy", p, &["Always", "IfNotPresent", "Never"], errs);
    if let Some(res) = get(c, "resources") {
        validate_resource_requirements(res, &p.child("resources"), errs);
    }
    validate_resize_policy(c, p, errs);
    if let Some(sc) = obj_at(c, "securityContext", p, errs) {
        validate_security_context(sc, &p.child("securityContext"), errs);
    }
}

fn validate_container_ports(c: &Value, p: &Path, errs: &mut Errs) {
    let pp = p.child("ports");
    let mut names: HashSet<&str> = HashSet::new();
    for (i, port) in items(c, "ports", p, errs).iter().enumerate() {
        let ip = pp.index(i);
        if !port.is_object() {
            errs.push(type_invalid(&ip, port, "object"));
            continue;
        }
        let name = str_or_empty(port, "name", &ip, errs);
        if !name.is_empty() {
            let msgs = is_valid_port_name(name);
            if !msgs.is_empty() {
                for m in msgs {
                    errs.push(invalid_str(&ip.child("name"), name, &m));
                }
            } else if !names.insert(name) {
                errs.push(duplicate_str(&ip.child("name"), name));
            }
        }
        match int_at(port, "containerPort", &ip, errs) {
            None if get(port, "containerPort").is_none() => errs.push(required(&ip.child("containerPort"), "")),
            Some(0) => errs.push(required(&ip.child("containerPort"), "")),
            Some(n) => {
                for m in is_valid_port_num(n) {
                    errs.push(invalid_int(&ip.child("containerPort"), n, &m));
                }
            }
            None => {}
        }
        if let Some(hp) = int_at(port, "hostPort", &ip, errs)
            && hp != 0
        {
            for m in is_valid_port_num(hp) {
                errs.push(invalid_int(&ip.child("hostPort"), hp, &m));
            }
        }
        check_enum(port, "protocol", &ip, &["SCTP", "TCP", "UDP"], errs);
    }
}

/// `checkHostPortConflicts`: a host port is used once per protocol and host IP.
fn host_port_conflicts(containers: &[Value], cp: &Path, errs: &mut Errs) {
    let mut seen: HashSet<String> = HashSet::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi, port) in c.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let Some(hp) = port.get("hostPort").and_then(Value::as_i64).filter(|p| *p != 0) else { continue };
            let proto = port.get("protocol").and_then(Value::as_str).filter(|p| !p.is_empty()).unwrap_or("TCP");
            let ip = port.get("hostIP").and_then(Value::as_str).unwrap_or("");
            let key = format!("{proto}/{ip}/{hp}");
            if !seen.insert(key.clone()) {
                errs.push(duplicate_str(&cp.index(ci).child("ports").index(pi).child("hostPort"), &key));
            }
        }
    }
}

fn validate_env(c: &Value, p: &Path, errs: &mut Errs) {
    let ep = p.child("env");
    for (i, ev) in items(c, "env", p, errs).iter().enumerate() {
        let ip = ep.index(i);
        if !ev.is_object() {
            errs.push(type_invalid(&ip, ev, "object"));
            continue;
        }
        let name = str_or_empty(ev, "name", &ip, errs);
        if name.is_empty() {
            errs.push(required(&ip.child("name"), ""));
        } else {
            for m in is_env_var_name(name) {
                errs.push(invalid_str(&ip.child("name"), name, &m));
            }
        }
        let value = str_or_empty(ev, "value", &ip, errs);
        let Some(from) = obj_at(ev, "valueFrom", &ip, errs) else { continue };
        let fp = ip.child("valueFrom");
        let mut sources = 0;
        if let Some(f) = get(from, "fieldRef") {
            sources += 1;
            object_field_selector(
                f,
                &[
                    "metadata.name",
                    "metadata.namespace",
                    "metadata.uid",
                    "spec.nodeName",
                    "spec.serviceAccountName",
                    "status.hostIP",
                    "status.hostIPs",
                    "status.podIP",
                    "status.podIPs",
                ],
                &fp.child("fieldRef"),
                errs,
            );
        }
        if let Some(r) = get(from, "resourceFieldRef") {
            sources += 1;
            resource_field_selector(r, &fp.child("resourceFieldRef"), false, errs);
        }
        for kind in ["configMapKeyRef", "secretKeyRef"] {
            if let Some(s) = get(from, kind) {
                sources += 1;
                key_selector(s, &fp.child(kind), errs);
            }
        }
        if sources == 0 {
            errs.push(invalid_str(
                &fp,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !value.is_empty() {
            errs.push(invalid_str(&fp, "", "may not be specified when `value` is not empty"));
        } else if sources > 1 {
            errs.push(invalid_str(&fp, "", "may not have more than one field specified at a time"));
        }
    }
}

/// A downward-API `fieldRef`: a supported field path, or labels/annotations with a subscript.
pub(crate) fn object_field_selector(f: &Value, supported: &[&str], p: &Path, errs: &mut Errs) {
    if !f.is_object() {
        errs.push(type_invalid(p, f, "object"));
        return;
    }
    // `apiVersion` defaults to v1.
    let api_version = str_at(f, "apiVersion", p, errs).unwrap_or("v1");
    if api_version.is_empty() {
        errs.push(required(&p.child("apiVersion"), ""));
        return;
    }
    let field_path = str_or_empty(f, "fieldPath", p, errs);
    if field_path.is_empty() {
        errs.push(required(&p.child("fieldPath"), ""));
        return;
    }
    if api_version != "v1" {
        errs.push(invalid_str(
            &p.child("fieldPath"),
            field_path,
            &format!("error converting fieldPath: unsupported pod version: {api_version}"),
        ));
        return;
    }
    if let Some((base, rest)) = field_path.split_once('[') {
        let subscript = rest.strip_suffix(']').map(|s| s.trim_matches('\'')).unwrap_or(rest);
        match base {
            "metadata.annotations" => qualified_name(&subscript.to_lowercase(), p, errs),
            "metadata.labels" => qualified_name(subscript, p, errs),
            _ => errs.push(invalid_str(p, base, "does not support subscript")),
        }
    } else if !supported.contains(&field_path) {
        let mut sorted = supported.to_vec();
        sorted.sort_unstable();
        errs.push(not_supported(&p.child("fieldPath"), field_path, &sorted));
    }
}

/// A downward-API `resourceFieldRef`.
pub(crate) fn resource_field_selector(r: &Value, p: &Path, volume: bool, errs: &mut Errs) {
    const SUPPORTED: &[&str] = &[
        "limits.cpu",
        "limits.ephemeral-storage",
        "limits.memory",
        "requests.cpu",
        "requests.ephemeral-storage",
        "requests.memory",
    ];
    let container = str_or_empty(r, "containerName", p, errs);
    let resource = str_or_empty(r, "resource", p, errs);
    if volume && container.is_empty() {
        errs.push(required(&p.child("containerName"), ""));
    } else if resource.is_empty() {
        errs.push(required(&p.child("resource"), ""));
    } else if !SUPPORTED.contains(&resource)
        && !resource.starts_with("requests.hugepages-")
        && !resource.starts_with("limits.hugepages-")
    {
        errs.push(not_supported(&p.child("resource"), resource, SUPPORTED));
    }
    if let Some(d) = get(r, "divisor") {
        quantity_at(d, &p.child("divisor"), errs);
    }
}

fn key_selector(s: &Value, p: &Path, errs: &mut Errs) {
    if !s.is_object() {
        errs.push(type_invalid(p, s, "object"));
        return;
    }
    let name = str_or_empty(s, "name", p, errs);
    dns_subdomain(name, &p.child("name"), errs);
    let key = str_or_empty(s, "key", p, errs);
    if key.is_empty() {
        errs.push(required(&p.child("key"), ""));
    } else {
        for m in is_config_map_key(key) {
            errs.push(invalid_str(&p.child("key"), key, &m));
        }
    }
}

fn validate_env_from(c: &Value, p: &Path, errs: &mut Errs) {
    let ep = p.child("envFrom");
    for (i, ev) in items(c, "envFrom", p, errs).iter().enumerate() {
        let ip = ep.index(i);
        if !ev.is_object() {
            errs.push(type_invalid(&ip, ev, "object"));
            continue;
        }
        let prefix = str_or_empty(ev, "prefix", &ip, errs);
        if !prefix.is_empty() {
            for m in is_env_var_name(prefix) {
                errs.push(invalid_str(&ip.child("prefix"), prefix, &m));
            }
        }
        let mut sources = 0;
        for kind in ["configMapRef", "secretRef"] {
            let Some(r) = get(ev, kind) else { continue };
            sources += 1;
            let rp = ip.child(kind);
            let name = str_or_empty(r, "name", &rp, errs);
            if name.is_empty() {
                errs.push(required(&rp.child("name"), ""));
            } else {
                for m in NameRule::DnsSubdomain.check(name, true) {
                    errs.push(invalid_str(&rp.child("name"), name, &m));
                }
            }
        }
        if sources == 0 {
            errs.push(invalid_str(&ep, "", "must specify one of: `configMapRef` or `secretRef`"));
        } else if sources > 1 {
            errs.push(invalid_str(&ep, "", "may not have more than one field specified at a time"));
        }
    }
}

fn validate_volume_mounts(c: &Value, volumes: &Volumes, p: &Path, errs: &mut Errs) {
    let mp = p.child("volumeMounts");
    let device_names: Vec<&str> = c
        .get("volumeDevices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("name").and_then(Value::as_str))
        .collect();
    let device_paths: Vec<&str> = c
        .get("volumeDevices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("devicePath").and_then(Value::as_str))
        .collect();
    let privileged = c.pointer("/securityContext/privileged").and_then(Value::as_bool) == Some(true);
    let mut mount_points: HashSet<&str> = HashSet::new();
    for (i, m) in items(c, "volumeMounts", p, errs).iter().enumerate() {
        let ip = mp.index(i);
        if !m.is_object() {
            errs.push(type_invalid(&ip, m, "object"));
            continue;
        }
        let name = str_or_empty(m, "name", &ip, errs);
        if name.is_empty() {
            errs.push(required(&ip.child("name"), ""));
        }
        if !volumes.contains_key(name) {
            errs.push(not_found(&ip.child("name"), name));
        }
        let mount_path = str_or_empty(m, "mountPath", &ip, errs);
        if mount_path.is_empty() {
            errs.push(required(&ip.child("mountPath"), ""));
        }
        if !mount_points.insert(mount_path) {
            errs.push(invalid_str(&ip.child("mountPath"), mount_path, "must be unique"));
        }
        if device_names.contains(&name) {
            errs.push(invalid_str(&ip.child("name"), name, "must not already exist in volumeDevices"));
        }
        if device_paths.contains(&mount_path) {
            errs.push(invalid_str(
                &ip.child("mountPath"),
                mount_path,
                "must not already exist as a path in volumeDevices",
            ));
        }
        let sub_path = str_or_empty(m, "subPath", &ip, errs);
        let sub_path_expr = str_or_empty(m, "subPathExpr", &ip, errs);
        if volumes.get(name) == Some(&"image") {
            if !sub_path.is_empty() {
                errs.push(invalid_str(&ip.child("subPath"), sub_path, "not allowed in image volume sources"));
            }
            if !sub_path_expr.is_empty() {
                errs.push(invalid_str(&ip.child("subPathExpr"), sub_path_expr, "not allowed in image volume sources"));
            }
        }
        // Upstream reports these two on the list's path, without the index.
        if !sub_path.is_empty() {
            local_descending_path(sub_path, &mp.child("subPath"), errs);
        }
        if !sub_path_expr.is_empty() {
            if !sub_path.is_empty() {
                errs.push(invalid_str(
                    &ip.child("subPathExpr"),
                    sub_path_expr,
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            local_descending_path(sub_path_expr, &mp.child("subPathExpr"), errs);
        }
        if let Some(prop) = str_at(m, "mountPropagation", &ip, errs) {
            let pp = mp.child("mountPropagation");
            if !["Bidirectional", "HostToContainer", "None"].contains(&prop) {
                errs.push(not_supported(&pp, prop, &["Bidirectional", "HostToContainer", "None"]));
            }
            if prop == "Bidirectional" && !privileged {
                errs.push(forbidden(&pp, "Bidirectional mount propagation is available only to privileged containers"));
            }
        }
        if let Some(rro) = str_at(m, "recursiveReadOnly", &ip, errs) {
            let rp = mp.child("recursiveReadOnly");
            match rro {
                "Disabled" => {}
                "Enabled" | "IfPossible" => {
                    if m.get("readOnly").and_then(Value::as_bool) != Some(true) {
                        errs.push(forbidden(&rp, "may only be specified when readOnly is true"));
                    }
                    if m.get("mountPropagation").and_then(Value::as_str).is_some_and(|p| p != "None") {
                        errs.push(forbidden(
                            &rp,
                            "may only be specified when mountPropagation is None or not specified",
                        ));
                    }
                }
                other => errs.push(not_supported(&rp, other, &["Disabled", "Enabled", "IfPossible"])),
            }
        }
    }
}

fn validate_volume_devices(c: &Value, volumes: &Volumes, p: &Path, errs: &mut Errs) {
    let dp = p.child("volumeDevices");
    let mut names: HashSet<&str> = HashSet::new();
    let mut paths: HashSet<&str> = HashSet::new();
    for (i, d) in items(c, "volumeDevices", p, errs).iter().enumerate() {
        let ip = dp.index(i);
        let name = str_or_empty(d, "name", &ip, errs);
        let device_path = str_or_empty(d, "devicePath", &ip, errs);
        if name.is_empty() {
            errs.push(required(&ip.child("name"), ""));
        }
        if !names.insert(name) {
            errs.push(invalid_str(&ip.child("name"), name, "must be unique"));
        }
        match volumes.get(name) {
            None => errs.push(not_found(&ip.child("name"), name)),
            Some(&src) if src != "persistentVolumeClaim" && src != "ephemeral" => errs.push(invalid_str(
                &ip.child("name"),
                name,
                "can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode",
            )),
            Some(_) => {}
        }
        if device_path.is_empty() {
            errs.push(required(&ip.child("devicePath"), ""));
        }
        if !paths.insert(device_path) {
            errs.push(invalid_str(&ip.child("devicePath"), device_path, "must be unique"));
        }
    }
}

fn validate_resize_policy(c: &Value, p: &Path, errs: &mut Errs) {
    let rp = p.child("resizePolicy");
    let mut seen: HashSet<&str> = HashSet::new();
    for (i, policy) in items(c, "resizePolicy", p, errs).iter().enumerate() {
        let name = policy.get("resourceName").and_then(Value::as_str).unwrap_or("");
        if !seen.insert(name) {
            errs.push(duplicate_str(&rp.index(i), name));
        }
        match name {
            "cpu" | "memory" => {}
            "" => errs.push(required(&rp, "")),
            other => errs.push(not_supported(&rp, other, &["cpu", "memory"])),
        }
        match policy.get("restartPolicy").and_then(Value::as_str).unwrap_or("") {
            "NotRequired" | "RestartContainer" => {}
            "" => errs.push(required(&rp, "")),
            other => errs.push(not_supported(&rp, other, &["NotRequired", "RestartContainer"])),
        }
    }
}

/// A user or group ID field, 0 to 2147483647.
pub(crate) fn id_in_range(v: &Value, key: &str, p: &Path, errs: &mut Errs) {
    if let Some(id) = int_at(v, key, p, errs)
        && !(0..=MAX_INT32).contains(&id)
    {
        errs.push(invalid_int(&p.child(key), id, &inclusive_range_error(0, MAX_INT32)));
    }
}

fn validate_security_context(sc: &Value, p: &Path, errs: &mut Errs) {
    id_in_range(sc, "runAsUser", p, errs);
    id_in_range(sc, "runAsGroup", p, errs);
    check_enum(sc, "procMount", p, &["Default", "Unmasked"], errs);
    validate_seccomp(sc, p, errs);
    if bool_at(sc, "allowPrivilegeEscalation", p, errs) == Some(false) {
        if bool_at(sc, "privileged", p, errs) == Some(true) {
            errs.push(invalid_json(p, sc, "cannot set `allowPrivilegeEscalation` to false and `privileged` to true"));
        }
        let adds = sc.pointer("/capabilities/add").and_then(Value::as_array);
        if adds.into_iter().flatten().any(|c| c.as_str() == Some("CAP_SYS_ADMIN")) {
            errs.push(invalid_json(
                p,
                sc,
                "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            ));
        }
    }
}

/// `seccompProfile` of a pod or container security context.
pub(crate) fn validate_seccomp(sc: &Value, p: &Path, errs: &mut Errs) {
    let Some(profile) = obj_at(sc, "seccompProfile", p, errs) else { return };
    let sp = p.child("seccompProfile");
    match str_or_empty(profile, "type", &sp, errs) {
        "Localhost" => {
            if str_or_empty(profile, "localhostProfile", &sp, errs).is_empty() {
                errs.push(required(&sp.child("localhostProfile"), "must be set when seccomp type is Localhost"));
            }
        }
        "RuntimeDefault" | "Unconfined" => {
            if get(profile, "localhostProfile").is_some() {
                errs.push(invalid_json(
                    &sp.child("localhostProfile"),
                    get(profile, "localhostProfile").unwrap_or(&Value::Null),
                    "can only be set when seccomp type is Localhost",
                ));
            }
        }
        "" => errs.push(required(&sp.child("type"), "type is required when seccompProfile is set")),
        other => errs.push(not_supported(&sp.child("type"), other, &["Localhost", "RuntimeDefault", "Unconfined"])),
    }
}

// ---- probes and lifecycle -----------------------------------------------------------------

fn validate_lifecycle_and_probes(c: &Value, grace: i64, p: &Path, errs: &mut Errs) {
    if let Some(lc) = obj_at(c, "lifecycle", p, errs) {
        let lp = p.child("lifecycle");
        for hook in ["postStart", "preStop"] {
            if let Some(h) = obj_at(lc, hook, &lp, errs) {
                validate_handler(h, &["exec", "httpGet", "tcpSocket", "sleep"], grace, &lp.child(hook), errs);
            }
        }
    }
    for (key, success_must_be_one) in [("livenessProbe", true), ("readinessProbe", false), ("startupProbe", true)] {
        let Some(probe) = obj_at(c, key, p, errs) else { continue };
        let pp = p.child(key);
        validate_handler(probe, &["exec", "httpGet", "tcpSocket", "grpc"], grace, &pp, errs);
        for field in ["initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"]
        {
            if let Some(n) = int_at(probe, field, &pp, errs)
                && n < 0
            {
                errs.push(invalid_int(&pp.child(field), n, "must be greater than or equal to 0"));
            }
        }
        if let Some(t) = int_at(probe, "terminationGracePeriodSeconds", &pp, errs) {
            if key == "readinessProbe" {
                errs.push(invalid_int(
                    &pp.child("terminationGracePeriodSeconds"),
                    t,
                    "must not be set for readinessProbes",
                ));
            } else if t <= 0 {
                errs.push(invalid_int(&pp.child("terminationGracePeriodSeconds"), t, "must be greater than 0"));
            }
        }
        if success_must_be_one
            && let Some(n) = probe.get("successThreshold").and_then(Value::as_i64)
            && n != 1
        {
            errs.push(invalid_int(&pp.child("successThreshold"), n, "must be 1"));
        }
    }
}

fn validate_handler(h: &Value, kinds: &[&str], grace: i64, p: &Path, errs: &mut Errs) {
    let mut found = false;
    for &kind in kinds {
        let Some(action) = get(h, kind) else { continue };
        let ap = p.child(kind);
        if found {
            errs.push(forbidden(&ap, "may not specify more than 1 handler type"));
            continue;
        }
        found = true;
        match kind {
            "exec" if str_list(action, "command", &ap, errs).is_empty() => {
                errs.push(required(&ap.child("command"), ""));
            }
            "httpGet" => {
                port_num_or_name(action.get("port"), &ap.child("port"), errs);
                check_enum(action, "scheme", &ap, &["HTTP", "HTTPS"], errs);
                for header in items(action, "httpHeaders", &ap, errs) {
                    let name = header.get("name").and_then(Value::as_str).unwrap_or("");
                    for m in is_http_header_name(name) {
                        errs.push(invalid_str(&ap.child("httpHeaders"), name, &m));
                    }
                }
            }
            "tcpSocket" => port_num_or_name(action.get("port"), &ap.child("port"), errs),
            "grpc" => match action.get("port") {
                Some(Value::Number(_)) | None => port_num_or_name(action.get("port"), &ap.child("port"), errs),
                Some(other) => errs.push(type_invalid(&ap.child("port"), other, "integer")),
            },
            "sleep" => {
                let seconds = int_at(action, "seconds", &ap, errs).unwrap_or(0);
                if seconds < 0 || seconds > grace {
                    errs.push(invalid_int(
                        &ap,
                        seconds,
                        &format!("must be non-negative and less than terminationGracePeriodSeconds ({grace})"),
                    ));
                }
            }
            _ => {}
        }
    }
    if !found {
        errs.push(required(p, "must specify a handler type"));
    }
}

/// `ValidatePortNumOrName` on an int-or-string port (absent reads as 0).
pub(crate) fn port_num_or_name(port: Option<&Value>, p: &Path, errs: &mut Errs) {
    match port {
        None | Some(Value::Null) => errs.push(invalid_int(p, 0, &inclusive_range_error(1, 65535))),
        Some(Value::String(s)) => {
            for m in is_valid_port_name(s) {
                errs.push(invalid_str(p, s, &m));
            }
        }
        Some(v) => match v.as_i64() {
            Some(n) => {
                for m in is_valid_port_num(n) {
                    errs.push(invalid_int(p, n, &m));
                }
            }
            None => errs.push(type_invalid(p, v, "integer")),
        },
    }
}
