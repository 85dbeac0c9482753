//! Server-side printing: the `Table` rows that `kubectl get` asks for.
//!
//! This mirrors kube-apiserver: the built-in printers of `pkg/printers/internalversion`, the
//! default table convertor (`Name` + `Created At`) for kinds without a printer, and the
//! apiextensions convertor for custom resources (`additionalPrinterColumns`). Everything works
//! on `serde_json::Value` objects and never panics: a missing or malformed field prints the way
//! upstream prints the zero value of that field.
//!
//! The server always prints "wide": every column, including the priority-1 ones kubectl only
//! shows with `-o wide`, gets a cell.
//!
//! Upstream decodes stored objects through defaulting before it prints them, so a field that
//! defaulting always fills (Deployment `spec.replicas`, Service `spec.type`, ...) is printed with
//! its default when it is absent here.

mod apps;
mod autoscaling;
mod batch;
mod cluster;
mod corev1;
mod crd;
mod duration;
mod event;
mod format;
mod jsonpath;
mod networking;
mod pod;
mod rbac;
mod service;
mod storage;

use jiff::Timestamp;
use serde_json::{Value, json};

pub use crd::{crd_cells, crd_columns};
pub use duration::human_duration;

/// `metav1.ObjectMeta` documentation of `name`, the description of every Name column.
const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// `metav1.ObjectMeta` documentation of `creationTimestamp`, the description of every Age column.
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// One `TableColumnDefinition`.
#[derive(Debug, Clone, Copy)]
struct Col {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i32,
}

impl Col {
    /// A string column shown without `-o wide`.
    const fn string(name: &'static str, description: &'static str) -> Col {
        Col { name, ty: "string", format: "", description, priority: 0 }
    }

    /// An integer column shown without `-o wide`.
    const fn integer(name: &'static str, description: &'static str) -> Col {
        Col { name, ty: "integer", format: "", description, priority: 0 }
    }

    /// A column of another OpenAPI type (`boolean`, `date`, ...).
    const fn typed(name: &'static str, ty: &'static str, description: &'static str) -> Col {
        Col { name, ty, format: "", description, priority: 0 }
    }

    /// The same column, shown only with `-o wide`.
    const fn wide(self) -> Col {
        Col { priority: 1, ..self }
    }

    fn to_value(self) -> Value {
        json!({
            "name": self.name,
            "type": self.ty,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

const NAME: Col = Col { name: "Name", ty: "string", format: "name", description: NAME_DESC, priority: 0 };
const AGE: Col = Col::string("Age", AGE_DESC);
const CONTAINERS: Col = Col::string("Containers", "Names of each container in the template.").wide();
const IMAGES: Col = Col::string("Images", "Images referenced by each container in the template.").wide();

/// The columns of the default table convertor, used by every kind without a printer.
const DEFAULT_COLUMNS: &[Col] = &[NAME, Col::typed("Created At", "date", AGE_DESC)];

/// A built-in printer: its columns and the function that fills one row.
struct Printer {
    columns: &'static [Col],
    cells: fn(&Value, Timestamp) -> Vec<Value>,
}

/// The printer of a built-in kind, if upstream has one.
fn printer(group: &str, kind: &str) -> Option<&'static Printer> {
    let printer = match (group, kind) {
        ("", "Pod") => &pod::POD,
        ("", "Node") => &corev1::NODE,
        ("", "Namespace") => &corev1::NAMESPACE,
        ("", "ConfigMap") => &corev1::CONFIG_MAP,
        ("", "Secret") => &corev1::SECRET,
        ("", "ServiceAccount") => &corev1::SERVICE_ACCOUNT,
        ("", "PodTemplate") => &corev1::POD_TEMPLATE,
        ("", "ReplicationController") => &corev1::REPLICATION_CONTROLLER,
        ("", "ResourceQuota") => &corev1::RESOURCE_QUOTA,
        ("", "ComponentStatus") => &corev1::COMPONENT_STATUS,
        ("", "Service") => &service::SERVICE,
        ("", "Endpoints") => &service::ENDPOINTS,
        ("", "Event") => &event::CORE_EVENT,
        ("events.k8s.io", "Event") => &event::EVENTS_EVENT,
        ("", "PersistentVolume") => &storage::PERSISTENT_VOLUME,
        ("", "PersistentVolumeClaim") => &storage::PERSISTENT_VOLUME_CLAIM,
        ("storage.k8s.io", "StorageClass") => &storage::STORAGE_CLASS,
        ("apps", "Deployment") => &apps::DEPLOYMENT,
        ("apps", "ReplicaSet") => &apps::REPLICA_SET,
        ("apps", "StatefulSet") => &apps::STATEFUL_SET,
        ("apps", "DaemonSet") => &apps::DAEMON_SET,
        ("apps", "ControllerRevision") => &apps::CONTROLLER_REVISION,
        ("batch", "Job") => &batch::JOB,
        ("batch", "CronJob") => &batch::CRON_JOB,
        ("autoscaling", "HorizontalPodAutoscaler") => &autoscaling::HORIZONTAL_POD_AUTOSCALER,
        ("discovery.k8s.io", "EndpointSlice") => &networking::ENDPOINT_SLICE,
        ("networking.k8s.io", "Ingress") => &networking::INGRESS,
        ("networking.k8s.io", "IngressClass") => &networking::INGRESS_CLASS,
        ("networking.k8s.io", "NetworkPolicy") => &networking::NETWORK_POLICY,
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => &rbac::ROLE_BINDING,
        ("coordination.k8s.io", "Lease") => &cluster::LEASE,
        ("node.k8s.io", "RuntimeClass") => &cluster::RUNTIME_CLASS,
        ("scheduling.k8s.io", "PriorityClass") => &cluster::PRIORITY_CLASS,
        ("policy", "PodDisruptionBudget") => &cluster::POD_DISRUPTION_BUDGET,
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration") => {
            &cluster::WEBHOOK_CONFIGURATION
        }
        _ => return None,
    };
    Some(printer)
}

/// The `columnDefinitions` of a Table of `group`/`kind` (the core group is `""`).
///
/// Kinds without an upstream printer (Role, ClusterRole, LimitRange,
/// CustomResourceDefinition, ...) get the default convertor's `Name` and `Created At`.
/// Custom resources use [`crd_columns`] instead.
pub fn columns(group: &str, kind: &str) -> Vec<Value> {
    printer(group, kind).map_or(DEFAULT_COLUMNS, |p| p.columns).iter().map(|c| c.to_value()).collect()
}

/// The cells of one object's row, in the order of [`columns`] and as many.
///
/// `now` is the instant ages are measured from (`AGE`, `RESTARTS (5m ago)`, job `DURATION`).
pub fn cells(group: &str, kind: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    match printer(group, kind) {
        Some(p) => (p.cells)(obj, now),
        None => vec![format::name(obj), Value::from(duration::created_at(&obj["metadata"]["creationTimestamp"]))],
    }
}

/// The row `conditions` of one object, when upstream sets any.
///
/// Only pods have them: a `Completed` condition (reason `Succeeded` or `Failed`) on pods in a
/// terminal phase, which `kubectl get -w` uses to tell finished pods apart.
pub fn row_conditions(group: &str, kind: &str, obj: &Value) -> Option<Value> {
    match (group, kind) {
        ("", "Pod") => pod::row_conditions(obj),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
