//! Ingresses (`pkg/apis/networking/validation`): rules, hosts, paths and backends.

use serde_json::Value;

use super::names::{
    NameRule, is_dns1123_subdomain, is_valid_path_segment_name, is_valid_port_name, is_valid_port_num,
    is_wildcard_dns1123_subdomain, parse_ip_sloppy,
};
use super::path::Path;
use super::report::{
    Errs, get, invalid_int, invalid_str, items, not_supported, obj_at, required, str_list, str_or_empty,
};

const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];

fn validate_host(host: &str, p: &Path, errs: &mut Errs) {
    if parse_ip_sloppy(host).is_some() {
        errs.push(invalid_str(p, host, "must be a DNS name, not an IP address"));
    }
    let msgs = if host.contains('*') { is_wildcard_dns1123_subdomain(host) } else { is_dns1123_subdomain(host) };
    for msg in msgs {
        errs.push(invalid_str(p, host, &msg));
    }
}

fn validate_backend(backend: &Value, p: &Path, errs: &mut Errs) {
    let resource = get(backend, "resource");
    let service = get(backend, "service");
    match (resource, service) {
        (Some(_), Some(_)) => errs.push(invalid_str(p, "", "cannot set both resource and service backends")),
        (Some(r), None) => {
            let rp = p.child("resource");
            for (key, what) in [("kind", "kind is required"), ("name", "name is required")] {
                let v = str_or_empty(r, key, &rp, errs);
                if v.is_empty() {
                    errs.push(required(&rp.child(key), what));
                } else {
                    for msg in is_valid_path_segment_name(v) {
                        errs.push(invalid_str(&rp.child(key), v, &msg));
                    }
                }
            }
        }
        (None, Some(s)) => {
            let sp = p.child("service");
            let name = str_or_empty(s, "name", &sp, errs);
            if name.is_empty() {
                errs.push(required(&sp.child("name"), ""));
            } else {
                for msg in NameRule::Dns1035Label.check(name, false) {
                    errs.push(invalid_str(&sp.child("name"), name, &msg));
                }
            }
            let pp = sp.child("port");
            let port_name = s.pointer("/port/name").and_then(Value::as_str).unwrap_or("");
            let port_number = s.pointer("/port/number").and_then(Value::as_i64).unwrap_or(0);
            match (port_name.is_empty(), port_number == 0) {
                (false, false) => errs.push(invalid_str(p, "", "cannot set both port name & port number")),
                (false, true) => {
                    for msg in is_valid_port_name(port_name) {
                        errs.push(invalid_str(&pp.child("name"), port_name, &msg));
                    }
                }
                (true, false) => {
                    for msg in is_valid_port_num(port_number) {
                        errs.push(invalid_int(&pp.child("number"), port_number, &msg));
                    }
                }
                (true, true) => errs.push(required(p, "port name or number is required")),
            }
        }
        (None, None) => errs.push(invalid_str(p, "", "resource or service backend is required")),
    }
}

fn validate_http_path(path: &Value, p: &Path, errs: &mut Errs) {
    let value = str_or_empty(path, "path", p, errs);
    match path.get("pathType").and_then(Value::as_str) {
        None => {
            errs.push(required(&p.child("pathType"), "pathType must be specified"));
            return;
        }
        Some("Exact" | "Prefix") => {
            if !value.starts_with('/') {
                errs.push(invalid_str(&p.child("path"), value, "must be an absolute path"));
            }
            for seq in ["//", "/./", "/../", "%2f", "%2F"] {
                if value.contains(seq) {
                    errs.push(invalid_str(&p.child("path"), value, &format!("must not contain '{seq}'")));
                }
            }
            for suffix in ["/..", "/."] {
                if value.ends_with(suffix) {
                    errs.push(invalid_str(&p.child("path"), value, &format!("cannot end with '{suffix}'")));
                }
            }
        }
        Some("ImplementationSpecific") => {
            if !value.is_empty() && !value.starts_with('/') {
                errs.push(invalid_str(&p.child("path"), value, "must be an absolute path"));
            }
        }
        Some(other) => errs.push(not_supported(&p.child("pathType"), other, PATH_TYPES)),
    }
    let empty = Value::Object(Default::default());
    validate_backend(get(path, "backend").unwrap_or(&empty), &p.child("backend"), errs);
}

/// `ValidateIngressSpec`.
pub(crate) fn validate_ingress(ing: &Value, errs: &mut Errs) {
    let sp = Path::new("spec");
    let empty = Value::Object(Default::default());
    let spec = obj_at(ing, "spec", &Path::new(""), errs).unwrap_or(&empty);
    let rules = items(spec, "rules", &sp, errs);
    let default_backend = get(spec, "defaultBackend");
    if rules.is_empty() && default_backend.is_none() {
        errs.push(super::report::invalid_raw(
            &sp,
            "[]networking.IngressRule(nil)",
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(b) = default_backend {
        validate_backend(b, &sp.child("defaultBackend"), errs);
    }
    let rp = sp.child("rules");
    for (i, rule) in rules.iter().enumerate() {
        let p = rp.index(i);
        let host = str_or_empty(rule, "host", &p, errs);
        if !host.is_empty() {
            validate_host(host, &p.child("host"), errs);
        }
        if let Some(http) = obj_at(rule, "http", &p, errs) {
            let hp = p.child("http");
            let paths = items(http, "paths", &hp, errs);
            if paths.is_empty() {
                errs.push(required(&hp.child("paths"), ""));
            }
            for (j, path) in paths.iter().enumerate() {
                validate_http_path(path, &hp.child("paths").index(j), errs);
            }
        }
    }
    let tp = sp.child("tls");
    for (i, tls) in items(spec, "tls", &sp, errs).iter().enumerate() {
        for (j, host) in str_list(tls, "hosts", &tp.index(i), errs).iter().enumerate() {
            let p = tp.index(i).child("hosts").index(j);
            let msgs =
                if host.contains('*') { is_wildcard_dns1123_subdomain(host) } else { is_dns1123_subdomain(host) };
            for msg in msgs {
                errs.push(invalid_str(&p, host, &msg));
            }
        }
    }
    if let Some(class) = spec.get("ingressClassName").and_then(Value::as_str) {
        for msg in is_dns1123_subdomain(class) {
            errs.push(invalid_str(&sp.child("ingressClassName"), class, &msg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(ing: Value) -> Vec<String> {
        let mut errs = Vec::new();
        validate_ingress(&ing, &mut errs);
        errs.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn a_plain_ingress_is_valid() {
        let m = msgs(json!({"spec": {"rules": [{"host": "example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}));
        assert!(m.is_empty(), "{m:?}");
    }

    #[test]
    fn rules_paths_and_backends() {
        assert_eq!(
            msgs(json!({"spec": {}})),
            [
                "spec: Invalid value: []networking.IngressRule(nil): either `defaultBackend` or `rules` must be specified"
            ]
        );
        let m = msgs(json!({"spec": {"rules": [{"host": "10.0.0.1", "http": {"paths": [
            {"path": "api", "pathType": "Prefix", "backend": {"service": {"name": "web"}}},
            {"path": "/"},
            {"path": "/", "pathType": "Regex", "backend": {}}]}}]}}));
        assert_eq!(
            m,
            [
                "spec.rules[0].host: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address",
                "spec.rules[0].http.paths[0].path: Invalid value: \"api\": must be an absolute path",
                "spec.rules[0].http.paths[0].backend: Required value: port name or number is required",
                "spec.rules[0].http.paths[1].pathType: Required value: pathType must be specified",
                "spec.rules[0].http.paths[2].pathType: Unsupported value: \"Regex\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\"",
                "spec.rules[0].http.paths[2].backend: Invalid value: \"\": resource or service backend is required",
            ]
        );
    }
}
