//! Services (`ValidateService`, `ValidateServiceUpdate`): ports, types, cluster IPs, node
//! ports, traffic policies.

use std::collections::HashSet;

use serde_json::Value;

use super::container::port_num_or_name;
use super::labels::validate_labels_at;
use super::names::{
    is_dns1123_label, is_dns1123_subdomain, is_qualified_name, is_valid_cidr, is_valid_ip, is_valid_port_num,
};
use super::path::Path;
use super::report::check_enum;
use super::report::{
    Errs, duplicate_raw, forbidden, get, go_quote, go_string_slice, int_at, invalid_int, invalid_raw, invalid_str,
    items, not_supported, obj_at, required, str_list, str_or_empty,
};

/// The node port range Kapal allocates from (kube-apiserver's default
/// `--service-node-port-range`).
pub const NODE_PORT_RANGE: (i64, i64) = (30000, 32767);

/// The effective `clusterIPs`: the list, or `[clusterIP]` when only that is set (the
/// strategy syncs them before validation upstream).
fn cluster_ips(spec: &Value) -> Vec<String> {
    let list: Vec<String> = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    if !list.is_empty() {
        return list;
    }
    match spec.get("clusterIP").and_then(Value::as_str) {
        Some(ip) if !ip.is_empty() => vec![ip.to_string()],
        _ => Vec::new(),
    }
}

fn is_headless(ips: &[String]) -> bool {
    ips.len() == 1 && ips[0] == "None"
}

fn ips_value(ips: &[String]) -> String {
    let values: Vec<Value> = ips.iter().map(|s| Value::String(s.clone())).collect();
    go_string_slice(if ips.is_empty() { None } else { Some(&values) })
}

/// `ValidateService` beyond metadata.
pub(crate) fn validate_service(svc: &Value, errs: &mut Errs) {
    let sp = Path::new("spec");
    let empty = Value::Object(Default::default());
    let spec = obj_at(svc, "spec", &Path::new(""), errs).unwrap_or(&empty);
    let svc_type = str_or_empty(spec, "type", &sp, errs);
    let effective_type = if svc_type.is_empty() { "ClusterIP" } else { svc_type };
    let ips = cluster_ips(spec);
    let headless = is_headless(&ips);
    let ports = items(spec, "ports", &sp, errs);

    if ports.is_empty() && !headless && effective_type != "ExternalName" {
        errs.push(required(&sp.child("ports"), ""));
    }
    match effective_type {
        "LoadBalancer" | "NodePort" if headless => errs.push(invalid_str(
            &sp.child("clusterIPs").index(0),
            "None",
            &format!("may not be set to 'None' for {effective_type} services"),
        )),
        "ExternalName" => {
            if !ips.is_empty() {
                errs.push(forbidden(&sp.child("clusterIPs"), "may not be set for ExternalName services"));
            }
            if spec.get("ipFamilies").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
                errs.push(forbidden(&sp.child("ipFamilies"), "may not be set for ExternalName services"));
            }
            if get(spec, "ipFamilyPolicy").is_some() {
                errs.push(forbidden(&sp.child("ipFamilyPolicy"), "may not be set for ExternalName services"));
            }
            let name = str_or_empty(spec, "externalName", &sp, errs);
            let cname = name.strip_suffix('.').unwrap_or(name);
            if cname.is_empty() {
                errs.push(required(&sp.child("externalName"), ""));
            } else {
                for msg in is_dns1123_subdomain(cname) {
                    errs.push(invalid_str(&sp.child("externalName"), cname, &msg));
                }
            }
        }
        _ => {}
    }

    let pp = sp.child("ports");
    let mut names: HashSet<String> = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        validate_service_port(port, ports.len() > 1, &mut names, &pp.index(i), errs);
    }

    validate_labels_at(spec, "selector", &sp, errs);
    match str_or_empty(spec, "sessionAffinity", &sp, errs) {
        "" => {}
        "ClientIP" => {
            if let Some(timeout) =
                spec.pointer("/sessionAffinityConfig/clientIP/timeoutSeconds").and_then(Value::as_i64)
                && !(1..=86400).contains(&timeout)
            {
                errs.push(invalid_int(
                    &sp.child("sessionAffinityConfig").child("clientIP").child("timeoutSeconds"),
                    timeout,
                    "must be greater than 0 and less than 86400",
                ));
            }
        }
        "None" => {
            if get(spec, "sessionAffinityConfig").is_some() {
                errs.push(forbidden(
                    &sp.child("sessionAffinityConfig"),
                    "must not be set when session affinity is None",
                ));
            }
        }
        other => errs.push(not_supported(&sp.child("sessionAffinity"), other, &["ClientIP", "None"])),
    }

    if effective_type != "ExternalName" {
        validate_cluster_ips(spec, &ips, &sp, errs);
    }
    for (i, ip) in str_list(spec, "externalIPs", &sp, errs).iter().enumerate() {
        for msg in is_valid_ip(ip) {
            errs.push(invalid_str(&sp.child("externalIPs").index(i), ip, &msg));
        }
    }
    check_enum(spec, "type", &sp, &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"], errs);
    validate_node_ports(ports, effective_type, &pp, errs);
    validate_duplicate_ports(ports, &pp, errs);

    if let Some(ranges) = spec.get("loadBalancerSourceRanges").and_then(Value::as_array).filter(|a| !a.is_empty()) {
        // Upstream's own capitalisation of this path.
        let rp = sp.child("LoadBalancerSourceRanges");
        if effective_type != "LoadBalancer" {
            errs.push(forbidden(&rp, "may only be used when `type` is 'LoadBalancer'"));
        }
        for (i, r) in ranges.iter().enumerate() {
            let r = r.as_str().unwrap_or("").trim();
            for msg in is_valid_cidr(r) {
                errs.push(invalid_str(&rp.index(i), r, &msg));
            }
        }
    }
    if get(spec, "allocateLoadBalancerNodePorts").is_some() && effective_type != "LoadBalancer" {
        errs.push(forbidden(
            &sp.child("allocateLoadBalancerNodePorts"),
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    validate_traffic_policies(spec, effective_type, &sp, errs);
}

fn validate_service_port(port: &Value, require_name: bool, names: &mut HashSet<String>, p: &Path, errs: &mut Errs) {
    if !port.is_object() {
        errs.push(super::report::type_invalid(p, port, "object"));
        return;
    }
    let name = str_or_empty(port, "name", p, errs);
    if require_name && name.is_empty() {
        errs.push(required(&p.child("name"), ""));
    } else if !name.is_empty() {
        for msg in is_dns1123_label(name) {
            errs.push(invalid_str(&p.child("name"), name, &msg));
        }
        if !names.insert(name.to_string()) {
            errs.push(super::report::duplicate_str(&p.child("name"), name));
        }
    }
    let number = int_at(port, "port", p, errs).unwrap_or(0);
    for msg in is_valid_port_num(number) {
        errs.push(invalid_int(&p.child("port"), number, &msg));
    }
    check_enum(port, "protocol", p, &["SCTP", "TCP", "UDP"], errs);
    if let Some(target) = get(port, "targetPort") {
        port_num_or_name(Some(target), &p.child("targetPort"), errs);
    }
    if let Some(app) = super::report::str_at(port, "appProtocol", p, errs) {
        for msg in is_qualified_name(app) {
            errs.push(invalid_str(&p.child("appProtocol"), app, &msg));
        }
    }
}

fn validate_cluster_ips(spec: &Value, ips: &[String], sp: &Path, errs: &mut Errs) {
    let field = sp.child("clusterIPs");
    let cluster_ip = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("");
    let listed = spec.get("clusterIPs").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if !cluster_ip.is_empty() && listed && ips.first().map(String::as_str) != Some(cluster_ip) {
        errs.push(invalid_raw(&field, &ips_value(ips), "first value must match `clusterIP`"));
    }
    let families = sp.child("ipFamilies");
    let mut seen: HashSet<&str> = HashSet::new();
    for (i, f) in spec.get("ipFamilies").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let f = f.as_str().unwrap_or("");
        if f != "IPv4" && f != "IPv6" {
            errs.push(not_supported(&families.index(i), f, &["IPv4", "IPv6"]));
        }
        if !seen.insert(f) {
            errs.push(super::report::duplicate_str(&families.index(i), f));
        }
    }
    check_enum(spec, "ipFamilyPolicy", sp, &["PreferDualStack", "RequireDualStack", "SingleStack"], errs);
    let mut bad = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == "None" {
            if ips.len() > 1 {
                bad = true;
                errs.push(invalid_raw(&field, &ips_value(ips), "'None' must be the first and only value"));
            }
            continue;
        }
        for msg in is_valid_ip(ip) {
            bad = true;
            errs.push(invalid_str(&field.index(i), ip, &msg));
        }
    }
    if ips.len() > 2 {
        errs.push(invalid_raw(&field, &ips_value(ips), "may only hold up to 2 values"));
    }
    if !bad && ips.len() == 2 {
        let v6 = |s: &str| s.contains(':');
        if v6(&ips[0]) == v6(&ips[1]) {
            errs.push(invalid_raw(&field, &ips_value(ips), "may specify no more than one IP for each IP family"));
        }
    }
}

fn validate_node_ports(ports: &[Value], svc_type: &str, pp: &Path, errs: &mut Errs) {
    let mut seen: HashSet<(String, i64)> = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let Some(node_port) = port.get("nodePort").and_then(Value::as_i64).filter(|n| *n != 0) else { continue };
        let np = pp.index(i).child("nodePort");
        if svc_type == "ClusterIP" {
            errs.push(forbidden(&np, "may not be used when `type` is 'ClusterIP'"));
        } else if svc_type != "ExternalName" && !(NODE_PORT_RANGE.0..=NODE_PORT_RANGE.1).contains(&node_port) {
            errs.push(invalid_int(
                &np,
                node_port,
                &format!(
                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                    NODE_PORT_RANGE.0, NODE_PORT_RANGE.1
                ),
            ));
        }
        let proto = port.get("protocol").and_then(Value::as_str).filter(|p| !p.is_empty()).unwrap_or("TCP");
        if !seen.insert((proto.to_string(), node_port)) {
            errs.push(duplicate_raw(&np, &node_port.to_string()));
        }
    }
}

fn validate_duplicate_ports(ports: &[Value], pp: &Path, errs: &mut Errs) {
    let mut seen: HashSet<(String, i64)> = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let proto = port.get("protocol").and_then(Value::as_str).filter(|p| !p.is_empty()).unwrap_or("TCP");
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !seen.insert((proto.to_string(), number)) {
            errs.push(duplicate_raw(
                &pp.index(i),
                &format!(
                    "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{number}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                    go_quote(proto)
                ),
            ));
        }
    }
}

fn validate_traffic_policies(spec: &Value, svc_type: &str, sp: &Path, errs: &mut Errs) {
    let has_external_ips = spec.get("externalIPs").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    let external = matches!(svc_type, "NodePort" | "LoadBalancer") || (svc_type == "ClusterIP" && has_external_ips);
    let etp = spec.get("externalTrafficPolicy").and_then(Value::as_str).unwrap_or("");
    if !external {
        if !etp.is_empty() {
            errs.push(invalid_str(
                &sp.child("externalTrafficPolicy"),
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else {
        check_enum(spec, "externalTrafficPolicy", sp, &["Cluster", "Local"], errs);
    }
    let needs_health_check = svc_type == "LoadBalancer" && etp == "Local";
    if let Some(hc) = spec.get("healthCheckNodePort").and_then(Value::as_i64).filter(|n| *n != 0) {
        if !needs_health_check {
            errs.push(invalid_int(
                &sp.child("healthCheckNodePort"),
                hc,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            ));
        } else {
            for msg in is_valid_port_num(hc) {
                errs.push(invalid_int(&sp.child("healthCheckNodePort"), hc, &msg));
            }
        }
    }
    check_enum(spec, "internalTrafficPolicy", sp, &["Cluster", "Local"], errs);
    check_enum(spec, "trafficDistribution", sp, &["PreferClose"], errs);
}

/// `ValidateServiceUpdate` beyond metadata and the new object's own validity: cluster IPs
/// may not change once set, and a health-check node port stays.
pub(crate) fn validate_service_update(new: &Value, old: &Value, errs: &mut Errs) {
    let empty = Value::Object(Default::default());
    let new_spec = get(new, "spec").unwrap_or(&empty);
    let old_spec = get(old, "spec").unwrap_or(&empty);
    let type_of =
        |s: &Value| s.get("type").and_then(Value::as_str).filter(|t| !t.is_empty()).unwrap_or("ClusterIP").to_string();
    if type_of(new_spec) == "ExternalName" || type_of(old_spec) == "ExternalName" {
        return;
    }
    let old_ips = cluster_ips(old_spec);
    let mut new_ips = cluster_ips(new_spec);
    // kube-apiserver copies allocated values the update leaves out (`patchAllocatedValues`).
    if new_ips.is_empty() {
        new_ips = old_ips.clone();
    }
    if is_headless(&old_ips) && is_headless(&new_ips) {
        return;
    }
    let field = Path::new("spec").child("clusterIPs");
    let shown = ips_value(&new_ips);
    match old_ips.len().cmp(&new_ips.len()) {
        std::cmp::Ordering::Equal => {
            for (i, ip) in old_ips.iter().enumerate() {
                if *ip != new_ips[i] {
                    errs.push(invalid_raw(&field.index(i), &shown, "may not change once set"));
                }
            }
        }
        std::cmp::Ordering::Greater => {
            if new_ips[0] != old_ips[0] {
                errs.push(invalid_raw(&field.index(0), &shown, "may not change once set"));
            }
            if new_ips.len() == 1 && new_spec.get("ipFamilyPolicy").and_then(Value::as_str) != Some("SingleStack") {
                let policy =
                    new_spec.get("ipFamilyPolicy").and_then(Value::as_str).map_or("null".to_string(), go_quote);
                errs.push(invalid_raw(
                    &Path::new("spec").child("ipFamilyPolicy"),
                    &policy,
                    "must be set to 'SingleStack' when releasing the secondary clusterIP",
                ));
            }
        }
        std::cmp::Ordering::Less => {
            if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
                errs.push(invalid_raw(&field.index(0), &shown, "may not change once set"));
            }
        }
    }
    let needs_hc = |s: &Value| {
        type_of(s) == "LoadBalancer" && s.get("externalTrafficPolicy").and_then(Value::as_str) == Some("Local")
    };
    if needs_hc(old_spec) && needs_hc(new_spec) {
        let new_hc = new_spec.get("healthCheckNodePort").and_then(Value::as_i64).unwrap_or(0);
        let old_hc = old_spec.get("healthCheckNodePort").and_then(Value::as_i64).unwrap_or(0);
        if new_hc != 0 && new_hc != old_hc {
            errs.push(forbidden(&Path::new("spec").child("healthCheckNodePort"), "field is immutable"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(spec: Value) -> Vec<String> {
        let mut errs = Vec::new();
        validate_service(&json!({"spec": spec}), &mut errs);
        errs.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn a_plain_service_is_valid() {
        assert!(run(json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]})).is_empty());
        assert!(run(json!({"clusterIP": "None"})).is_empty());
        assert!(run(json!({"type": "ExternalName", "externalName": "example.com."})).is_empty());
    }

    #[test]
    fn ports_are_required_and_named_when_several() {
        assert_eq!(run(json!({})), ["spec.ports: Required value"]);
        let m = run(json!({"ports": [{"port": 80}, {"port": 0, "name": "b", "protocol": "HTTP"}]}));
        assert_eq!(
            m,
            [
                "spec.ports[0].name: Required value",
                "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ]
        );
        let m = run(json!({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "a"}]}));
        assert_eq!(m[0], "spec.ports[1].name: Duplicate value: \"a\"");
        assert!(m[1].starts_with("spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\""));
    }

    #[test]
    fn types_and_node_ports() {
        let m = run(json!({"type": "Magic", "ports": [{"port": 80}]}));
        assert_eq!(
            m,
            [
                "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
            ]
        );
        let m = run(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}));
        assert_eq!(
            m,
            [
                "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"
            ]
        );
        let m = run(json!({"ports": [{"port": 80, "nodePort": 30080}]}));
        assert_eq!(m, ["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]);
        let m = run(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}));
        assert_eq!(m, ["spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"]);
    }

    #[test]
    fn selector_and_external_name() {
        let m = run(json!({"ports": [{"port": 80}], "selector": {"app": "a b"}}));
        assert!(m[0].starts_with("spec.selector: Invalid value: \"a b\""));
        let m = run(json!({"type": "ExternalName"}));
        assert_eq!(m, ["spec.externalName: Required value"]);
    }

    #[test]
    fn cluster_ip_is_immutable() {
        let old = json!({"spec": {"clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"], "ports": [{"port": 53}]}});
        let mut errs = Vec::new();
        validate_service_update(
            &json!({"spec": {"clusterIP": "10.43.0.11", "ports": [{"port": 53}]}}),
            &old,
            &mut errs,
        );
        assert_eq!(errs[0].field, "spec.clusterIPs[0]");
        assert_eq!(errs[0].message, "Invalid value: []string{\"10.43.0.11\"}: may not change once set");
        let mut errs = Vec::new();
        validate_service_update(&json!({"spec": {"ports": [{"port": 54}]}}), &old, &mut errs);
        assert!(errs.is_empty(), "a left-out clusterIP keeps the allocated one");
    }
}
