//! Per-kind behaviour of writes: what Kubernetes calls a resource's strategy.
//!
//! The generic handlers call these hooks; each hook dispatches on the kind. Built-in kinds
//! use kapal-api's defaulting, validation and merge rules; custom resources use their CRD's
//! schema.

use std::sync::Arc;

use kapal_api::schema::TypeSchema;
use kapal_api::{ApiError, Cause};
use serde_json::{Value, json};

use crate::handlers::DeleteOptions;
use crate::objects;
use crate::resources::Served;

fn gk(served: &Served) -> (&str, &str) {
    (served.info.group.as_str(), served.info.kind.as_str())
}

/// The type graph used for unknown-field detection and merges; `None` when the kind has no
/// schema (a CRD without one), which merges as untyped JSON and knows no unknown fields.
pub fn type_schema(served: &Served) -> Option<Arc<TypeSchema>> {
    match &served.custom {
        Some(custom) => custom.schema.as_ref().map(kapal_api::schema::from_openapi_v3),
        None => served.info.schema_name.as_deref().and_then(kapal_api::schema::builtin_schema),
    }
}

/// The type graph, or the untyped one.
pub fn merge_schema(served: &Served) -> Arc<TypeSchema> {
    type_schema(served).unwrap_or_else(kapal_api::schema::untyped)
}

/// Fields in `obj` that the kind's schema does not know.
pub fn unknown_fields(served: &Served, obj: &Value) -> Vec<String> {
    match type_schema(served) {
        Some(schema) => kapal_api::schema::unknown_fields(&schema, obj),
        None => Vec::new(),
    }
}

/// Decodes through the typed model (built-ins) or prunes and defaults by schema (custom).
pub fn normalize(served: &Served, obj: &mut Value) -> Result<(), ApiError> {
    let info = &served.info;
    match &served.custom {
        None => {
            let Some(schema_name) = info.schema_name.as_deref() else { return Ok(()) };
            match crate::typed::normalize(schema_name, obj) {
                Ok(Some(v)) => *obj = v,
                Ok(None) => {}
                Err(e) => {
                    return Err(ApiError::bad_request(format!(
                        "{} in version \"{}\" cannot be handled as a {}: {e}",
                        info.kind, info.version, info.kind
                    )));
                }
            }
        }
        Some(custom) => {
            if let Some(schema) = &custom.schema {
                crate::crd::prune_and_default(schema, obj);
            }
        }
    }
    Ok(())
}

/// Kinds whose `metadata.generation` tracks spec changes: the ones whose upstream strategy
/// sets it (workloads, autoscalers, policies, CRDs and all custom resources).
pub fn tracks_generation(served: &Served) -> bool {
    served.is_custom()
        || matches!(
            gk(served),
            ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
                | ("batch", "Job" | "CronJob")
                | ("autoscaling", "HorizontalPodAutoscaler")
                | ("policy", "PodDisruptionBudget")
                | ("networking.k8s.io", "NetworkPolicy" | "Ingress" | "IngressClass")
                | ("discovery.k8s.io", "EndpointSlice")
                | ("apiextensions.k8s.io", "CustomResourceDefinition")
                | ("", "ReplicationController")
        )
}

/// Create-time preparation: the status a client may not set, and server-set fields.
pub fn prepare_create(served: &Served, obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else { return };
    match gk(served) {
        // Nodes may be created with their status (the agent registers that way).
        ("", "Node") => {}
        ("", "Pod") => {
            map.insert("status".into(), json!({"phase": "Pending"}));
        }
        ("", "Namespace") => {
            map.insert("status".into(), json!({"phase": "Active"}));
        }
        ("", "PersistentVolume") | ("", "PersistentVolumeClaim") => {
            map.insert("status".into(), json!({"phase": "Pending"}));
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            crate::crd::set_crd_status(obj);
        }
        _ if served.info.has_status() => {
            map.remove("status");
        }
        _ => {}
    }
    if let ("", "Pod") = gk(served) {
        crate::podqos::set_qos_class(obj);
    }
    if !served.is_custom() {
        let (group, kind) = gk(served);
        kapal_api::defaults::prepare_for_create(group, kind, obj);
    }
}

/// Update-time preparation: the spec/status split and generation.
pub fn prepare_update(served: &Served, obj: &mut Value, old: &Value, subresource: Option<&str>) {
    match subresource {
        Some("status") => {
            // A status write changes the status and nothing else.
            let status = obj.get("status").cloned();
            let mut next = old.clone();
            match status {
                Some(s) => next["status"] = s,
                None => {
                    if let Some(m) = next.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if let Some(mf) = obj.pointer("/metadata/managedFields").cloned() {
                next["metadata"]["managedFields"] = mf;
            }
            *obj = next;
        }
        _ => {
            if served.info.has_status() && gk(served) != ("", "Node") {
                match old.get("status") {
                    Some(s) => obj["status"] = s.clone(),
                    None => {
                        if let Some(m) = obj.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            if gk(served) == ("", "Namespace") {
                // spec.finalizers changes only through /finalize.
                if let Some(f) = old.pointer("/spec/finalizers") {
                    obj["spec"]["finalizers"] = f.clone();
                }
            }
            if gk(served) == ("apiextensions.k8s.io", "CustomResourceDefinition") {
                crate::crd::set_crd_status(obj);
            }
            if tracks_generation(served) && objects::spec_differs(obj, old) {
                let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
                if let Some(meta) = objects::meta_mut(obj) {
                    meta.insert("generation".into(), json!(generation + 1));
                }
            }
        }
    }
}

/// Applies create- and update-time defaults.
pub fn defaults(served: &Served, obj: &mut Value) {
    if served.is_custom() {
        return;
    }
    let (group, kind) = gk(served);
    kapal_api::defaults::apply_defaults(group, kind, obj);
}

/// Validates an object (against `old` on update). Empty means valid.
pub fn validate(served: &Served, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let (group, kind) = gk(served);
    if !served.is_custom() && kapal_api::validation::is_known(group, kind) {
        // Built-in validation covers metadata, the spec and update rules.
        return match old {
            None => kapal_api::validation::validate(group, kind, obj),
            Some(old) => kapal_api::validation::validate_update(group, kind, obj, old),
        };
    }
    let rule = kapal_api::validation::NameRule::DnsSubdomain;
    let mut causes = kapal_api::validation::validate_object_meta(obj, served.info.namespaced(), rule);
    if let Some(old) = old {
        causes.extend(kapal_api::validation::validate_object_meta_update(obj, old));
    }
    if let Some(schema) = served.custom.as_ref().and_then(|c| c.schema.as_ref()) {
        causes.extend(crate::crd::validate_custom(schema, obj));
    }
    causes
}

/// The type graph of the stored version (what managed fields are tracked against).
fn storage_schema(served: &Served) -> Arc<TypeSchema> {
    if !served.is_custom() && crate::convert::converts(served) {
        let (group, version, kind) = crate::convert::storage_gvk(served);
        if let Some(info) = kapal_api::registry::builtin_by_kind(&group, &version, &kind)
            && let Some(schema) = info.schema_name.as_deref().and_then(kapal_api::schema::builtin_schema)
        {
            return schema;
        }
    }
    merge_schema(served)
}

/// Records a non-apply write in `metadata.managedFields`.
pub fn track_fields(served: &Served, old: Option<&Value>, obj: &mut Value, manager: &str, subresource: Option<&str>) {
    let schema = storage_schema(served);
    let now = objects::now_rfc3339();
    kapal_api::merge::track_update(old, obj, manager, subresource, &schema, &now);
}

/// Kinds that a PUT may create, as upstream allows.
pub fn allows_create_on_update(served: &Served) -> bool {
    matches!(
        gk(served),
        ("", "Endpoints")
            | ("", "Event")
            | ("events.k8s.io", "Event")
            | ("coordination.k8s.io", "Lease")
            | ("", "Node")
    )
}

/// Whether an object being deleted has no finalizers left (namespaces also have spec's).
pub fn finalizers_done(served: &Served, obj: &Value) -> bool {
    if !objects::finalizers(obj).is_empty() {
        return false;
    }
    if gk(served) == ("", "Namespace") {
        return obj.pointer("/spec/finalizers").and_then(Value::as_array).is_none_or(|a| a.is_empty());
    }
    true
}

/// What a delete does to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletePlan {
    /// Remove it from the store now.
    Immediate,
    /// Mark it (deletionTimestamp, finalizers); something else finishes the deletion.
    Marked,
    /// It is already being deleted and nothing changes.
    Unchanged,
}

/// Decides how to delete `obj`, marking it in place when it is not deleted at once.
pub fn plan_delete(served: &Served, obj: &mut Value, opts: &DeleteOptions) -> DeletePlan {
    let already = objects::is_deleting(obj);
    let (group, kind) = gk(served);
    let mut finalizers = objects::finalizers(obj);
    let gc_finalizer = match opts.propagation.as_deref() {
        Some("Orphan") => Some("orphan"),
        Some("Foreground") => Some("foregroundDeletion"),
        _ => None,
    };
    let mut changed = false;
    if let Some(f) = gc_finalizer
        && !finalizers.iter().any(|x| x == f)
    {
        finalizers.push(f.to_string());
        changed = true;
    }
    let grace = graceful_period(served, obj, opts);
    let namespace_pending = (group, kind) == ("", "Namespace")
        && obj.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if finalizers.is_empty() && grace.is_none() && !namespace_pending {
        return DeletePlan::Immediate;
    }
    if already && !changed {
        // A shorter grace period may still shorten a pod's pending deletion.
        if let (Some(g), Some(cur)) =
            (grace, obj.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64))
            && g < cur
        {
            set_deletion(obj, g);
            return DeletePlan::Marked;
        }
        if grace == Some(0) && finalizers.is_empty() {
            return DeletePlan::Immediate;
        }
        return DeletePlan::Unchanged;
    }
    if let Some(meta) = objects::meta_mut(obj) {
        meta.insert("finalizers".into(), json!(finalizers));
        if finalizers.is_empty() {
            meta.remove("finalizers");
        }
    }
    if !already {
        set_deletion(obj, grace.unwrap_or(0));
    }
    if (group, kind) == ("", "Namespace") {
        obj["status"]["phase"] = json!("Terminating");
    }
    DeletePlan::Marked
}

fn set_deletion(obj: &mut Value, grace: i64) {
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
    let Some(meta) = objects::meta_mut(obj) else { return };
    meta.insert("deletionTimestamp".into(), json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
}

/// The graceful deletion period of a pod that a node must stop first; `None` otherwise.
fn graceful_period(served: &Served, obj: &Value, opts: &DeleteOptions) -> Option<i64> {
    if gk(served) != ("", "Pod") {
        return None;
    }
    let scheduled = obj.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
    let phase = obj.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    if !scheduled || phase == "Succeeded" || phase == "Failed" {
        return None;
    }
    let grace = opts
        .grace_period
        .or_else(|| obj.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
        .unwrap_or(30)
        .max(0);
    if grace == 0 { None } else { Some(grace) }
}

/// A strategic merge patch error as a Status.
pub fn patch_error(e: kapal_api::merge::PatchError) -> ApiError {
    let err = e.to_api_error();
    // Upstream answers some malformed patches with a 500; they are user input, so 400.
    if err.code >= 500 { ApiError::bad_request(err.message) } else { err }
}

/// A server-side apply error as a Status: 409 with one cause per conflicting field.
pub fn apply_error(served: &Served, obj: &Value, e: kapal_api::merge::ApplyError) -> ApiError {
    let info = &served.info;
    let mut err = match e {
        // Upstream answers a configuration that does not fit the schema with a 500; it is the
        // user's input, so Kapal says 400.
        kapal_api::merge::ApplyError::Invalid(message) => ApiError::bad_request(message),
        other => other.to_api_error(),
    };
    if err.code == 409 {
        err.group = Some(info.group.clone());
        err.kind = Some(info.plural.clone());
        err.name = objects::name(obj).map(String::from);
    }
    err
}
