//! Validation of objects as kube-apiserver validates them, with the same field paths and
//! messages, so that a 422 from Kapal reads like one from Kubernetes:
//!
//! ```text
//! ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of …
//! ```
//!
//! The entry points are [`validate`] (create) and [`validate_update`] (update) for built-in
//! kinds, and [`validate_object_meta`] / [`validate_object_meta_update`] for the metadata of
//! any object, custom resources included. Every function returns `details.causes[]` ready for
//! [`crate::ApiError::invalid`]; an empty list means the object is valid. Nothing here panics
//! on odd input: a field of the wrong JSON type is reported as a `FieldValueTypeInvalid` cause.
//!
//! Objects are expected to be defaulted first, as upstream validates after defaulting; a
//! field that defaulting would fill is only checked when present, so an undefaulted object is
//! not rejected merely for leaving it out.

mod apps;
mod batch;
mod config;
mod container;
mod crd;
mod cron;
mod endpointslice;
mod equality;
mod event;
mod ingress;
mod labels;
mod lease;
mod meta;
pub mod names;
mod node;
mod path;
mod pod;
mod pod_update;
mod pvc;
pub mod quantity;
mod rbac;
mod report;
mod resources;
mod service;
mod volume;

use serde_json::Value;

pub use cron::{GoDuration, go_duration};
pub use meta::{name_rule, validate_object_meta, validate_object_meta_update};
pub use names::NameRule;

use crate::registry::builtin_resources;
use crate::status::Cause;
use path::Path;
use report::Errs;

/// Whether `group`/`kind` is a built-in kind that [`validate`] knows (any built-in of the
/// registry). For other kinds, such as custom resources, [`validate`] returns nothing and the
/// caller validates metadata itself with [`validate_object_meta`].
pub fn is_known(group: &str, kind: &str) -> bool {
    namespaced(group, kind).is_some()
}

/// The scope of a built-in kind: `Some(true)` when namespaced, `None` when not built in.
fn namespaced(group: &str, kind: &str) -> Option<bool> {
    builtin_resources().iter().find(|r| r.group == group && r.kind == kind).map(|r| r.namespaced())
}

/// Validates a built-in object about to be created: its metadata (name format of the kind,
/// namespace presence, labels, annotations, owner references, finalizers) and its spec.
/// Returns no causes for kinds that are not built in (see [`is_known`]).
pub fn validate(group: &str, kind: &str, obj: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    check(group, kind, obj, None, &mut errs);
    errs
}

/// Validates an update of a built-in object: the new object as [`validate`] would, the
/// metadata fields that may not change, and each kind's own immutability rules (workload
/// selectors, most of a Pod's spec, immutable ConfigMaps and Secrets, Service cluster IPs,
/// Job templates, …). Returns no causes for kinds that are not built in.
pub fn validate_update(group: &str, kind: &str, new: &Value, old: &Value) -> Vec<Cause> {
    if !is_known(group, kind) {
        return Vec::new();
    }
    let mut errs = if (group, kind) == ("", "Event") { Vec::new() } else { validate_object_meta_update(new, old) };
    match (group, kind) {
        ("", "Pod") => pod_update::validate_pod_update(new, old, &mut errs),
        ("", "Service") => service::validate_service_update(new, old, &mut errs),
        ("", "ConfigMap") => config::validate_config_map_update(new, old, &mut errs),
        ("", "Secret") => config::validate_secret_update(new, old, &mut errs),
        ("", "Node") => node::validate_node_update(new, old, &mut errs),
        ("", "PersistentVolumeClaim") => pvc::validate_pvc_update(new, old, &mut errs),
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") => apps::validate_selector_immutable(new, old, &mut errs),
        ("apps", "StatefulSet") => apps::validate_stateful_set_update(new, old, &mut errs),
        ("batch", "Job") => batch::validate_job_update(new, old, &mut errs),
        ("discovery.k8s.io", "EndpointSlice") => endpointslice::validate_endpoint_slice_update(new, old, &mut errs),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            rbac::validate_binding_update(new, old, &mut errs)
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd::validate_crd_update(new, old, &mut errs),
        _ => {}
    }
    check(group, kind, new, Some(old), &mut errs);
    errs
}

/// Metadata and kind-specific validation of `obj`; `old` is the stored object on update.
fn check(group: &str, kind: &str, obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let Some(namespaced) = namespaced(group, kind) else { return };
    if !obj.is_object() {
        errs.push(report::type_invalid(&Path::new(""), obj, "object"));
        return;
    }
    // core/v1 Events only get their legacy checks upstream.
    if (group, kind) != ("", "Event") {
        errs.extend(validate_object_meta(obj, namespaced, name_rule(group, kind)));
        if group != "apiextensions.k8s.io" {
            meta::validate_kube_finalizers(obj, errs);
        }
    }
    match (group, kind) {
        ("", "Pod") => pod::validate_pod(obj, old.is_none(), errs),
        ("", "PodTemplate") => {
            let empty = Value::Object(Default::default());
            let template = report::obj_at(obj, "template", &Path::new(""), errs).unwrap_or(&empty);
            pod::validate_pod_template(template, &Path::new("template"), errs);
        }
        ("", "Service") => service::validate_service(obj, errs),
        ("", "ConfigMap") => config::validate_config_map(obj, errs),
        ("", "Secret") => config::validate_secret(obj, errs),
        ("", "Namespace") => node::validate_namespace(obj, errs),
        ("", "Node") => node::validate_node(obj, errs),
        ("", "PersistentVolumeClaim") => pvc::validate_pvc(obj, errs),
        ("", "Event") => event::validate_core_event(obj, errs),
        ("events.k8s.io", "Event") => event::validate_events_v1(obj, errs),
        ("apps", "Deployment") => apps::validate_deployment(obj, errs),
        ("apps", "ReplicaSet") => apps::validate_replica_set(obj, errs),
        ("apps", "StatefulSet") => apps::validate_stateful_set(obj, errs),
        ("apps", "DaemonSet") => apps::validate_daemon_set(obj, errs),
        ("batch", "Job") => batch::validate_job(obj, errs),
        ("batch", "CronJob") => batch::validate_cron_job(obj, old, errs),
        ("coordination.k8s.io", "Lease") => lease::validate_lease(obj, errs),
        ("discovery.k8s.io", "EndpointSlice") => endpointslice::validate_endpoint_slice(obj, errs),
        ("networking.k8s.io", "Ingress") => ingress::validate_ingress(obj, errs),
        ("rbac.authorization.k8s.io", "Role") => rbac::validate_rules(obj, true, errs),
        ("rbac.authorization.k8s.io", "ClusterRole") => {
            rbac::validate_rules(obj, false, errs);
            rbac::validate_aggregation_rule(obj, errs);
        }
        ("rbac.authorization.k8s.io", "RoleBinding") => rbac::validate_binding(obj, true, errs),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => rbac::validate_binding(obj, false, errs),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd::validate_crd(obj, errs),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
