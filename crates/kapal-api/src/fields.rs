//! Field selectors per kind: which field labels kube-apiserver accepts for each kind (its field
//! label conversion functions) and how each field is read from an object (its
//! `ToSelectableFields`/`GetAttrs` functions).
//!
//! Two layers, as upstream: [`check_supported`] rejects a selector that names a field the
//! kind does not offer, with upstream's error text (the API server answers 400 Bad Request
//! with it); [`field_value`] reads a field for matching. A selectable field that is missing
//! from an object reads as the empty string, and booleans read `"true"`/`"false"`.

use serde_json::Value;

use crate::registry;
use crate::selector::FieldSelector;

const META: &[&str] = &["metadata.name", "metadata.namespace"];

const POD: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
    // Old v1 clients send `spec.host`; upstream maps it to spec.nodeName.
    "spec.host",
];

const CORE_EVENT: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];

const EVENTS_EVENT: &[&str] = &[
    "reason",
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reportingController",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];

/// The field labels a kind's conversion function accepts, for kinds that register one.
/// Other built-in kinds accept only `metadata.name` and `metadata.namespace`.
fn conversion_labels(group: &str, kind: &str) -> Option<&'static [&'static str]> {
    Some(match (group, kind) {
        ("", "Pod") => POD,
        ("", "Node") => &["metadata.name", "spec.unschedulable"],
        ("", "ReplicationController") => &["metadata.name", "metadata.namespace", "status.replicas"],
        ("", "Event") => CORE_EVENT,
        ("events.k8s.io", "Event") => EVENTS_EVENT,
        ("", "Namespace") => &["status.phase", "metadata.name"],
        ("", "Secret") => &["type", "metadata.namespace", "metadata.name"],
        ("", "Service") => &["metadata.namespace", "metadata.name", "spec.clusterIP", "spec.type"],
        ("batch", "Job") => &["metadata.name", "metadata.namespace", "status.successful"],
        ("certificates.k8s.io", "CertificateSigningRequest" | "ClusterTrustBundle") => {
            &["metadata.name", "spec.signerName"]
        }
        _ => return None,
    })
}

fn is_builtin(group: &str, kind: &str) -> bool {
    conversion_labels(group, kind).is_some()
        || registry::builtin_resources().iter().any(|r| r.group == group && r.kind == kind)
}

/// Checks that every field a selector names is one the kind supports, returning upstream's
/// error for the first one that is not:
///
/// - kinds with their own conversion function (pods, nodes, events, namespaces, secrets,
///   services, replication controllers, jobs, certificate signing requests):
///   `field label not supported: <field>`;
/// - other built-in kinds: `"<field>" is not a known field selector: only "metadata.name",
///   "metadata.namespace"`;
/// - custom resources (kinds not built in): `field label not supported: <field>`; they
///   support `metadata.name` and `metadata.namespace` only (see [`check_supported_custom`]
///   for CRD `selectableFields` and cluster scope).
pub fn check_supported(group: &str, kind: &str, sel: &FieldSelector) -> Result<(), String> {
    for (field, _, _) in sel.requirements() {
        check_label(group, kind, field)?;
    }
    Ok(())
}

fn check_label(group: &str, kind: &str, field: &str) -> Result<(), String> {
    if let Some(labels) = conversion_labels(group, kind) {
        return if labels.contains(&field) { Ok(()) } else { Err(not_supported(field)) };
    }
    if META.contains(&field) {
        return Ok(());
    }
    if is_builtin(group, kind) {
        return Err(format!(
            "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
            quote(field)
        ));
    }
    Err(not_supported(field))
}

fn not_supported(field: &str) -> String {
    format!("field label not supported: {field}")
}

fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// Checks a selector against a custom resource's supported fields: `metadata.name`,
/// `metadata.namespace` when the resource is namespaced, and the CRD version's
/// `selectableFields` (given as field labels, i.e. their JSON paths without the leading dot).
pub fn check_supported_custom(sel: &FieldSelector, namespaced: bool, selectable: &[&str]) -> Result<(), String> {
    for (field, _, _) in sel.requirements() {
        let ok =
            field == "metadata.name" || (namespaced && field == "metadata.namespace") || selectable.contains(&field);
        if !ok {
            return Err(not_supported(field));
        }
    }
    Ok(())
}

/// Reads a custom resource's field by its dotted path (`spec.color`), as CRD
/// `selectableFields` do: strings as they are, integers and booleans formatted. `None` when
/// the path is missing or holds another type (upstream then matches it as the empty string).
pub fn custom_field_value(obj: &Value, field: &str) -> Option<String> {
    let mut cur = obj;
    for part in field.split('.') {
        cur = cur.get(part)?;
    }
    scalar(cur)
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// The value of a selectable field of a built-in object, or `None` when the kind has no
/// such field. `metadata.name` and `metadata.namespace` exist for every kind (the namespace
/// of a cluster-scoped object is empty). Fields the kind offers but the object lacks read as
/// `""` (or `"false"`/`"0"` for booleans and counters, as upstream renders zero values).
///
/// This answers for every field in upstream's selectable set, including a few its conversion
/// functions refuse (apps/v1 ReplicaSet `status.replicas`); [`check_supported`] decides what
/// a client may ask for. events.k8s.io field names (`regarding.*`, `reportingController`) and
/// core ones (`involvedObject.*`, `reportingComponent`) are both understood for Events, and
/// either object shape is read.
pub fn field_value(group: &str, kind: &str, obj: &Value, field: &str) -> Option<String> {
    match field {
        "metadata.name" => return Some(text(obj, &["metadata", "name"])),
        "metadata.namespace" => return Some(text(obj, &["metadata", "namespace"])),
        _ => {}
    }
    match (group, kind) {
        ("", "Pod") => pod_field(obj, field),
        ("", "Node") => (field == "spec.unschedulable").then(|| flag(obj, &["spec", "unschedulable"])),
        ("", "ReplicationController") | ("apps", "ReplicaSet") => {
            (field == "status.replicas").then(|| count(obj, &["status", "replicas"]))
        }
        ("", "Event") | ("events.k8s.io", "Event") => event_field(obj, field),
        ("", "Namespace") => namespace_field(obj, field),
        ("", "Secret") => (field == "type").then(|| text(obj, &["type"])),
        ("", "Service") => service_field(obj, field),
        ("batch", "Job") => (field == "status.successful").then(|| count(obj, &["status", "succeeded"])),
        ("certificates.k8s.io", "CertificateSigningRequest" | "ClusterTrustBundle") => {
            (field == "spec.signerName").then(|| text(obj, &["spec", "signerName"]))
        }
        _ => None,
    }
}

/// Whether an object matches a field selector, reading fields with [`field_value`].
pub fn matches(group: &str, kind: &str, obj: &Value, sel: &FieldSelector) -> bool {
    sel.matches(|field| field_value(group, kind, obj, field))
}

fn at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |cur, key| cur.get(key))
}

/// A string field, `""` when missing or not a string.
fn text(obj: &Value, path: &[&str]) -> String {
    at(obj, path).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// A boolean field as `strconv.FormatBool` renders it, `"false"` when missing.
fn flag(obj: &Value, path: &[&str]) -> String {
    at(obj, path).and_then(Value::as_bool).unwrap_or(false).to_string()
}

/// An integer field as `strconv.Itoa` renders it, `"0"` when missing.
fn count(obj: &Value, path: &[&str]) -> String {
    at(obj, path).and_then(Value::as_i64).unwrap_or(0).to_string()
}

fn pod_field(obj: &Value, field: &str) -> Option<String> {
    Some(match field {
        "spec.nodeName" | "spec.host" => text(obj, &["spec", "nodeName"]),
        "spec.restartPolicy" => text(obj, &["spec", "restartPolicy"]),
        "spec.schedulerName" => text(obj, &["spec", "schedulerName"]),
        "spec.serviceAccountName" => text(obj, &["spec", "serviceAccountName"]),
        "spec.hostNetwork" => flag(obj, &["spec", "hostNetwork"]),
        "status.phase" => text(obj, &["status", "phase"]),
        "status.podIP" => pod_ip(obj),
        "status.nominatedNodeName" => text(obj, &["status", "nominatedNodeName"]),
        // Accepted by upstream's conversion but absent from its field set: always "".
        "status.podIPs" => String::new(),
        _ => return None,
    })
}

/// The pod's primary IP: `status.podIP`, else the first of `status.podIPs` (the v1 to
/// internal conversion makes the two agree, with podIP authoritative).
fn pod_ip(obj: &Value) -> String {
    let ip = text(obj, &["status", "podIP"]);
    if !ip.is_empty() {
        return ip;
    }
    let first = at(obj, &["status", "podIPs"]).and_then(|ips| ips.get(0));
    first.map(|ip| text(ip, &["ip"])).unwrap_or_default()
}

fn namespace_field(obj: &Value, field: &str) -> Option<String> {
    match field {
        "status.phase" => Some(text(obj, &["status", "phase"])),
        // Upstream keeps a bare `name` in the namespace field set for compatibility.
        "name" => Some(text(obj, &["metadata", "name"])),
        _ => None,
    }
}

fn service_field(obj: &Value, field: &str) -> Option<String> {
    match field {
        "spec.clusterIP" => Some(text(obj, &["spec", "clusterIP"])),
        "spec.type" => Some(text(obj, &["spec", "type"])),
        _ => None,
    }
}

fn event_field(obj: &Value, field: &str) -> Option<String> {
    if let Some(part) = field.strip_prefix("involvedObject.").or_else(|| field.strip_prefix("regarding.")) {
        const PARTS: &[&str] = &["kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"];
        return PARTS.contains(&part).then(|| first_text(obj, &[&["involvedObject", part], &["regarding", part]]));
    }
    Some(match field {
        "reason" => text(obj, &["reason"]),
        "type" => text(obj, &["type"]),
        "reportingComponent" | "reportingController" => reporting_controller(obj),
        "source" => event_source(obj),
        _ => return None,
    })
}

/// The first non-empty string among several paths (core and events.k8s.io shapes).
fn first_text(obj: &Value, paths: &[&[&str]]) -> String {
    paths.iter().map(|p| text(obj, p)).find(|s| !s.is_empty()).unwrap_or_default()
}

fn reporting_controller(obj: &Value) -> String {
    first_text(obj, &[&["reportingComponent"], &["reportingController"]])
}

/// `source.component`, falling back to the reporting controller, as upstream selects it.
fn event_source(obj: &Value) -> String {
    let component = first_text(obj, &[&["source", "component"], &["deprecatedSource", "component"]]);
    if component.is_empty() { reporting_controller(obj) } else { component }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(s: &str) -> FieldSelector {
        FieldSelector::parse(s).unwrap()
    }

    #[test]
    fn pod_fields() {
        let pod = json!({
            "metadata": {"name": "web-0", "namespace": "default"},
            "spec": {"restartPolicy": "Always", "schedulerName": "default-scheduler", "serviceAccountName": "sa"},
            "status": {"phase": "Pending", "podIPs": [{"ip": "10.42.0.7"}]}
        });
        let get = |f| field_value("", "Pod", &pod, f);
        assert_eq!(get("metadata.name").as_deref(), Some("web-0"));
        assert_eq!(get("metadata.namespace").as_deref(), Some("default"));
        assert_eq!(get("spec.nodeName").as_deref(), Some(""), "unscheduled pod has empty nodeName");
        assert_eq!(get("spec.hostNetwork").as_deref(), Some("false"));
        assert_eq!(get("status.podIP").as_deref(), Some("10.42.0.7"));
        assert_eq!(get("spec.serviceAccountName").as_deref(), Some("sa"));
        assert_eq!(get("spec.containers"), None);
        assert!(matches("", "Pod", &pod, &sel("spec.nodeName=,status.phase!=Running")));
        assert!(!matches("", "Pod", &pod, &sel("spec.nodeName=node-1")));
        let bound = json!({"spec": {"nodeName": "node-1", "hostNetwork": true}});
        assert!(matches("", "Pod", &bound, &sel("spec.host=node-1,spec.hostNetwork=true")));
    }

    #[test]
    fn supported_pod_fields_and_upstream_errors() {
        assert!(check_supported("", "Pod", &sel("spec.nodeName=a,status.phase=Running,spec.host=x")).is_ok());
        assert_eq!(
            check_supported("", "Pod", &sel("spec.containers=x")).unwrap_err(),
            "field label not supported: spec.containers"
        );
        assert_eq!(
            check_supported("networking.k8s.io", "Ingress", &sel("foo.bar=baz")).unwrap_err(),
            "\"foo.bar\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
        assert!(check_supported("apps", "Deployment", &sel("metadata.name=a,metadata.namespace=b")).is_ok());
        assert!(check_supported("apps", "ReplicaSet", &sel("status.replicas=1")).is_err());
        assert!(check_supported("", "ConfigMap", &sel("metadata.namespace!=default")).is_ok());
    }

    #[test]
    fn cluster_scoped_kinds_with_conversions() {
        assert_eq!(
            check_supported("", "Node", &sel("metadata.namespace=x")).unwrap_err(),
            "field label not supported: metadata.namespace"
        );
        assert!(check_supported("", "Node", &sel("spec.unschedulable=true")).is_ok());
        let node = json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}});
        assert_eq!(field_value("", "Node", &node, "spec.unschedulable").as_deref(), Some("true"));
        assert_eq!(field_value("", "Node", &json!({}), "spec.unschedulable").as_deref(), Some("false"));
        assert_eq!(field_value("", "Node", &node, "metadata.namespace").as_deref(), Some(""));
        let ns = json!({"metadata": {"name": "kube-system"}, "status": {"phase": "Terminating"}});
        assert!(matches("", "Namespace", &ns, &sel("status.phase=Terminating")));
        assert!(check_supported("", "Namespace", &sel("metadata.namespace=x")).is_err());
    }

    #[test]
    fn custom_resources_support_only_metadata() {
        assert!(check_supported("example.com", "Widget", &sel("metadata.name=a")).is_ok());
        assert_eq!(
            check_supported("example.com", "Widget", &sel("spec.color=red")).unwrap_err(),
            "field label not supported: spec.color"
        );
        let w = json!({"metadata": {"name": "w"}, "spec": {"color": "red", "size": 3, "on": true}});
        assert_eq!(field_value("example.com", "Widget", &w, "spec.color"), None);
        assert!(check_supported_custom(&sel("spec.color=red"), true, &["spec.color"]).is_ok());
        assert!(check_supported_custom(&sel("metadata.namespace=a"), false, &[]).is_err());
        assert_eq!(custom_field_value(&w, "spec.color").as_deref(), Some("red"));
        assert_eq!(custom_field_value(&w, "spec.size").as_deref(), Some("3"));
        assert_eq!(custom_field_value(&w, "spec.on").as_deref(), Some("true"));
        assert_eq!(custom_field_value(&w, "spec.missing"), None);
    }

    #[test]
    fn core_event_fields() {
        let ev = json!({
            "metadata": {"name": "web.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "uid": "u1"},
            "reason": "Scheduled", "type": "Normal", "reportingComponent": "default-scheduler",
            "source": {}
        });
        let sel = sel("involvedObject.kind=Pod,involvedObject.name=web,type=Normal,source=default-scheduler");
        assert!(check_supported("", "Event", &sel).is_ok());
        assert!(matches("", "Event", &ev, &sel));
        assert_eq!(field_value("", "Event", &ev, "involvedObject.fieldPath").as_deref(), Some(""));
        assert_eq!(field_value("", "Event", &ev, "reportingComponent").as_deref(), Some("default-scheduler"));
        assert!(check_supported("", "Event", &FieldSelector::parse("regarding.name=web").unwrap()).is_err());
    }

    #[test]
    fn events_k8s_io_fields() {
        let ev = json!({
            "metadata": {"name": "web.1", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "web"},
            "reason": "Pulled", "type": "Normal", "reportingController": "kubelet",
            "deprecatedSource": {"component": "kubelet"}
        });
        let sel = sel("regarding.kind=Pod,regarding.name=web,reportingController=kubelet,source=kubelet");
        assert!(check_supported("events.k8s.io", "Event", &sel).is_ok());
        assert!(matches("events.k8s.io", "Event", &ev, &sel));
        assert!(
            check_supported("events.k8s.io", "Event", &FieldSelector::parse("involvedObject.name=web").unwrap())
                .is_err()
        );
    }

    #[test]
    fn other_kind_fields() {
        let secret = json!({"type": "kubernetes.io/tls"});
        assert!(matches("", "Secret", &secret, &sel("type=kubernetes.io/tls")));
        let svc = json!({"spec": {"type": "ClusterIP", "clusterIP": "None"}});
        assert!(matches("", "Service", &svc, &sel("spec.clusterIP=None,spec.type=ClusterIP")));
        let job = json!({"status": {"succeeded": 2}});
        assert_eq!(field_value("batch", "Job", &job, "status.successful").as_deref(), Some("2"));
        assert_eq!(field_value("batch", "Job", &json!({}), "status.successful").as_deref(), Some("0"));
        let rc = json!({"status": {"replicas": 3}});
        assert!(check_supported("", "ReplicationController", &sel("status.replicas=3")).is_ok());
        assert!(matches("", "ReplicationController", &rc, &sel("status.replicas=3")));
        let csr = json!({"spec": {"signerName": "kubernetes.io/kube-apiserver-client"}});
        let csr_sel = sel("spec.signerName=kubernetes.io/kube-apiserver-client");
        assert!(check_supported("certificates.k8s.io", "CertificateSigningRequest", &csr_sel).is_ok());
        assert!(matches("certificates.k8s.io", "CertificateSigningRequest", &csr, &csr_sel));
    }

    #[test]
    fn odd_objects_never_panic() {
        for obj in [json!(null), json!([]), json!("x"), json!({"status": {"podIPs": "x"}, "spec": 1})] {
            for field in ["status.podIP", "spec.nodeName", "metadata.name", "source", "regarding.kind"] {
                let _ = field_value("", "Pod", &obj, field);
                let _ = field_value("", "Event", &obj, field);
            }
        }
        assert_eq!(field_value("", "Pod", &json!({"status": {"podIPs": "x"}}), "status.podIP").as_deref(), Some(""));
    }
}
