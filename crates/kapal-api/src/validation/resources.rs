//! Compute resource names and quantities of containers (`validateResourceRequirements`):
//! names must be standard or fully qualified extended resources, quantities must parse and not
//! be negative, requests may not exceed limits.

use serde_json::Value;

use super::names::is_qualified_name;
use super::path::Path;
use super::quantity::{self, Quantity};
use super::report::{Errs, forbidden, get, invalid_str, obj_at, required, type_invalid};

/// Resource names Kubernetes defines (`IsStandardResourceName`), besides `hugepages-*`.
const STANDARD_RESOURCES: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "storage",
    "requests.storage",
    "services.nodeports",
    "services.loadbalancers",
];

fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-")
}

fn is_standard_resource(name: &str) -> bool {
    STANDARD_RESOURCES.contains(&name) || is_hugepages(name) || name.starts_with("requests.hugepages-")
}

fn is_standard_container_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || is_hugepages(name)
}

/// Native resources are unprefixed or in the `kubernetes.io` domain.
fn is_native_resource(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

fn is_extended_resource(name: &str) -> bool {
    if is_native_resource(name) || name.starts_with("requests.") {
        return false;
    }
    is_qualified_name(&format!("requests.{name}")).is_empty()
}

/// Resources that may not be overcommitted: requests must equal limits.
fn is_overcommit_allowed(name: &str) -> bool {
    is_native_resource(name) && !is_hugepages(name)
}

/// Resources counted in whole units.
fn is_integer_resource(name: &str) -> bool {
    is_extended_resource(name)
}

/// `validateResourceName`: a qualified name, and standard unless fully qualified.
pub(crate) fn validate_resource_name(name: &str, path: &Path, errs: &mut Errs) -> bool {
    let before = errs.len();
    for msg in is_qualified_name(name) {
        errs.push(invalid_str(path, name, &msg));
    }
    if errs.len() == before && !name.contains('/') && !is_standard_resource(name) {
        errs.push(invalid_str(path, name, "must be a standard resource type or fully qualified"));
    }
    errs.len() == before
}

/// `validateContainerResourceName`.
fn validate_container_resource_name(name: &str, path: &Path, errs: &mut Errs) {
    validate_resource_name(name, path, errs);
    if !name.contains('/') {
        if !is_standard_container_resource(name) {
            errs.push(invalid_str(path, name, "must be a standard resource for containers"));
        }
    } else if !is_native_resource(name) && !is_extended_resource(name) {
        errs.push(invalid_str(path, name, "doesn't follow extended resource name standard"));
    }
}

/// Parses the quantity at `path`, reporting a malformed one.
pub(crate) fn quantity_at(v: &Value, path: &Path, errs: &mut Errs) -> Option<Quantity> {
    match v {
        Value::String(_) | Value::Number(_) => match quantity::parse_json(v) {
            Ok(q) => Some(q),
            Err(msg) => {
                errs.push(invalid_str(path, &super::report::scalar_text(v), msg));
                None
            }
        },
        other => {
            errs.push(type_invalid(path, other, "string"));
            None
        }
    }
}

/// `ValidateResourceQuantityValue`: not negative, and whole for integer resources.
pub(crate) fn validate_quantity_value(name: &str, q: &Quantity, path: &Path, errs: &mut Errs) {
    if q.is_negative() {
        errs.push(invalid_str(path, &q.text, "must be greater than or equal to 0"));
    }
    if is_integer_resource(name) && !q.is_integer() {
        errs.push(invalid_str(path, &q.text, "must be an integer"));
    }
}

/// The parsed entries of a resource list (`limits`, `requests`) at `parent.key`.
fn resource_list(parent: &Value, key: &str, path: &Path, errs: &mut Errs) -> Vec<(String, Quantity)> {
    let Some(list) = obj_at(parent, key, path, errs) else { return Vec::new() };
    let p = path.child(key);
    let mut out = Vec::new();
    for (name, v) in list.as_object().into_iter().flatten() {
        let fp = p.key(name);
        validate_container_resource_name(name, &fp, errs);
        if let Some(q) = quantity_at(v, &fp, errs) {
            validate_quantity_value(name, &q, &fp, errs);
            out.push((name.clone(), q));
        }
    }
    out
}

/// Validates a container's `resources` (or a pod's `overhead`, given as `limits` only).
pub(crate) fn validate_resource_requirements(res: &Value, path: &Path, errs: &mut Errs) {
    if !res.is_object() {
        errs.push(type_invalid(path, res, "object"));
        return;
    }
    let limits = resource_list(res, "limits", path, errs);
    let requests = resource_list(res, "requests", path, errs);
    let req_path = path.child("requests");
    for (name, q) in &requests {
        match limits.iter().find(|(n, _)| n == name) {
            Some((_, limit)) => {
                let ord = q.cmp_value(limit);
                if ord != std::cmp::Ordering::Equal && !is_overcommit_allowed(name) {
                    errs.push(invalid_str(
                        &req_path,
                        &q.text,
                        &format!("must be equal to {name} limit of {}", limit.text),
                    ));
                } else if ord == std::cmp::Ordering::Greater {
                    errs.push(invalid_str(
                        &req_path,
                        &q.text,
                        &format!("must be less than or equal to {name} limit of {}", limit.text),
                    ));
                }
            }
            None if !is_overcommit_allowed(name) => {
                errs.push(required(&path.child("limits"), "Limit must be set for non overcommitable resources"));
            }
            None => {}
        }
    }
    let has_cpu_mem = |list: &[(String, Quantity)]| list.iter().any(|(n, _)| n == "cpu" || n == "memory");
    let has_huge = |list: &[(String, Quantity)]| list.iter().any(|(n, _)| is_hugepages(n));
    if !has_cpu_mem(&limits) && !has_cpu_mem(&requests) && (has_huge(&limits) || has_huge(&requests)) {
        errs.push(forbidden(path, "HugePages require cpu or memory"));
    }
    if let Some(claims) = get(res, "claims").and_then(Value::as_array) {
        for (i, c) in claims.iter().enumerate() {
            if c.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                errs.push(required(&path.child("claims").index(i), ""));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(res: Value) -> Errs {
        let mut errs = Vec::new();
        validate_resource_requirements(
            &res,
            &Path::new("spec").child("containers").index(0).child("resources"),
            &mut errs,
        );
        errs
    }

    #[test]
    fn requests_within_limits() {
        assert!(
            run(json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m", "memory": "512Mi"}}))
                .is_empty()
        );
        let errs = run(json!({"limits": {"cpu": "500m"}, "requests": {"cpu": "1"}}));
        assert_eq!(errs[0].field, "spec.containers[0].resources.requests");
        assert_eq!(errs[0].message, "Invalid value: \"1\": must be less than or equal to cpu limit of 500m");
    }

    #[test]
    fn quantities_must_parse_and_not_be_negative() {
        let errs = run(json!({"limits": {"memory": "lots"}, "requests": {"cpu": "-1"}}));
        assert_eq!(errs[0].field, "spec.containers[0].resources.limits[memory]");
        assert_eq!(errs[0].message, format!("Invalid value: \"lots\": {}", quantity::FORMAT_ERROR));
        assert_eq!(errs[1].field, "spec.containers[0].resources.requests[cpu]");
        assert_eq!(errs[1].message, "Invalid value: \"-1\": must be greater than or equal to 0");
    }

    #[test]
    fn resource_names() {
        let errs = run(json!({"limits": {"gpu": "1", "requests.cpu": "1", "example.com/gpu": "500m"}}));
        let msgs: Vec<&str> = errs.iter().map(|c| c.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "Invalid value: \"gpu\": must be a standard resource type or fully qualified",
                "Invalid value: \"gpu\": must be a standard resource for containers",
                "Invalid value: \"requests.cpu\": must be a standard resource for containers",
                "Invalid value: \"500m\": must be an integer",
            ]
        );
        let errs = run(json!({"requests": {"example.com/gpu": "1"}}));
        assert_eq!(errs[0].message, "Required value: Limit must be set for non overcommitable resources");
    }
}
