//! Built-in type graphs: k8s-openapi's JSON schemas plus the merge metadata Kubernetes 1.33
//! carries in its Go struct tags and `+listType`/`+mapType`/`+structType` markers, which
//! k8s-openapi does not ship. The tables follow the Kubernetes API types (k8s.io/api v0.33,
//! Apache-2.0) field by field.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use k8s_openapi::api;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::{GraphBuilder, TypeSchema};

macro_rules! core {
    ($name:literal) => {
        concat!("io.k8s.api.core.v1.", $name)
    };
}
macro_rules! apps {
    ($name:literal) => {
        concat!("io.k8s.api.apps.v1.", $name)
    };
}
macro_rules! batch {
    ($name:literal) => {
        concat!("io.k8s.api.batch.v1.", $name)
    };
}
macro_rules! meta {
    ($name:literal) => {
        concat!("io.k8s.apimachinery.pkg.apis.meta.v1.", $name)
    };
}
macro_rules! crd {
    ($name:literal) => {
        concat!("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.", $name)
    };
}

/// Adds one root type (and everything it references) to the generator.
type Root = fn(&mut SchemaGenerator) -> schemars::Schema;

/// Every type whose graph is built: the kinds the registry serves, the kinds their
/// subresources take or return, and a few more of the same groups. The one place that maps
/// schema names to Rust types.
#[rustfmt::skip]
const ROOTS: &[Root] = {
    use api::core::v1 as core;
    use api::apps::v1 as apps;
    use api::batch::v1 as batch;
    use api::networking::v1 as networking;
    use api::rbac::v1 as rbac;
    use api::storage::v1 as storage;
    &[
        SchemaGenerator::subschema_for::<core::Namespace>,
        SchemaGenerator::subschema_for::<core::Pod>,
        SchemaGenerator::subschema_for::<core::Service>,
        SchemaGenerator::subschema_for::<core::Endpoints>,
        SchemaGenerator::subschema_for::<core::ConfigMap>,
        SchemaGenerator::subschema_for::<core::Secret>,
        SchemaGenerator::subschema_for::<core::ServiceAccount>,
        SchemaGenerator::subschema_for::<core::Node>,
        SchemaGenerator::subschema_for::<core::Event>,
        SchemaGenerator::subschema_for::<core::PersistentVolume>,
        SchemaGenerator::subschema_for::<core::PersistentVolumeClaim>,
        SchemaGenerator::subschema_for::<core::LimitRange>,
        SchemaGenerator::subschema_for::<core::ResourceQuota>,
        SchemaGenerator::subschema_for::<core::PodTemplate>,
        SchemaGenerator::subschema_for::<core::ReplicationController>,
        SchemaGenerator::subschema_for::<core::Binding>,
        SchemaGenerator::subschema_for::<core::ComponentStatus>,
        SchemaGenerator::subschema_for::<apps::Deployment>,
        SchemaGenerator::subschema_for::<apps::ReplicaSet>,
        SchemaGenerator::subschema_for::<apps::StatefulSet>,
        SchemaGenerator::subschema_for::<apps::DaemonSet>,
        SchemaGenerator::subschema_for::<apps::ControllerRevision>,
        SchemaGenerator::subschema_for::<batch::Job>,
        SchemaGenerator::subschema_for::<batch::CronJob>,
        SchemaGenerator::subschema_for::<api::autoscaling::v1::Scale>,
        SchemaGenerator::subschema_for::<api::autoscaling::v2::HorizontalPodAutoscaler>,
        SchemaGenerator::subschema_for::<api::autoscaling::v1::HorizontalPodAutoscaler>,
        SchemaGenerator::subschema_for::<api::discovery::v1::EndpointSlice>,
        SchemaGenerator::subschema_for::<api::coordination::v1::Lease>,
        SchemaGenerator::subschema_for::<api::events::v1::Event>,
        SchemaGenerator::subschema_for::<api::policy::v1::PodDisruptionBudget>,
        SchemaGenerator::subschema_for::<api::policy::v1::Eviction>,
        SchemaGenerator::subschema_for::<networking::NetworkPolicy>,
        SchemaGenerator::subschema_for::<networking::Ingress>,
        SchemaGenerator::subschema_for::<networking::IngressClass>,
        SchemaGenerator::subschema_for::<networking::ServiceCIDR>,
        SchemaGenerator::subschema_for::<networking::IPAddress>,
        SchemaGenerator::subschema_for::<rbac::Role>,
        SchemaGenerator::subschema_for::<rbac::RoleBinding>,
        SchemaGenerator::subschema_for::<rbac::ClusterRole>,
        SchemaGenerator::subschema_for::<rbac::ClusterRoleBinding>,
        SchemaGenerator::subschema_for::<storage::StorageClass>,
        SchemaGenerator::subschema_for::<storage::CSIDriver>,
        SchemaGenerator::subschema_for::<storage::CSINode>,
        SchemaGenerator::subschema_for::<storage::VolumeAttachment>,
        SchemaGenerator::subschema_for::<api::node::v1::RuntimeClass>,
        SchemaGenerator::subschema_for::<api::scheduling::v1::PriorityClass>,
        SchemaGenerator::subschema_for::<api::authentication::v1::TokenRequest>,
        SchemaGenerator::subschema_for::<apiextensions::CustomResourceDefinition>,
    ]
};

static DEFINITIONS: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    let mut generator = SchemaSettings::openapi3().into_generator();
    for root in ROOTS {
        let _ = root(&mut generator);
    }
    generator.take_definitions(false)
});

/// Every built-in definition, as k8s-openapi's schemars impls produce it (without merge
/// metadata).
pub(crate) fn definitions() -> &'static Map<String, Value> {
    &DEFINITIONS
}

static SCHEMAS: LazyLock<HashMap<String, Arc<TypeSchema>>> = LazyLock::new(|| {
    let defs = definitions();
    let mut builder = GraphBuilder::new(defs, true);
    let ids: Vec<(String, usize)> = defs.keys().map(|name| (name.clone(), builder.named(name))).collect();
    let nodes = builder.finish();
    ids.into_iter().map(|(name, id)| (name, Arc::new(TypeSchema::from_parts(nodes.clone(), id)))).collect()
});

/// The type graph of a built-in type by its schema name (`io.k8s.api.apps.v1.Deployment`, the
/// registry's `schema_name`), built once. Any definition reachable from a served kind works.
pub fn builtin_schema(schema_name: &str) -> Option<Arc<TypeSchema>> {
    SCHEMAS.get(schema_name).cloned()
}

/// Strategic-merge-patch metadata (struct tags): definition, field, strategy, merge key.
#[rustfmt::skip]
const PATCH_STRATEGIES: &[(&str, &str, &str, Option<&str>)] = &[
    (core!("ComponentStatus"), "conditions", "merge", Some("type")),
    (core!("Container"), "env", "merge", Some("name")),
    (core!("Container"), "ports", "merge", Some("containerPort")),
    (core!("Container"), "volumeDevices", "merge", Some("devicePath")),
    (core!("Container"), "volumeMounts", "merge", Some("mountPath")),
    (core!("ContainerStatus"), "allocatedResourcesStatus", "merge", Some("name")),
    (core!("ContainerStatus"), "volumeMounts", "merge", Some("mountPath")),
    (core!("EphemeralContainer"), "env", "merge", Some("name")),
    (core!("EphemeralContainer"), "ports", "merge", Some("containerPort")),
    (core!("EphemeralContainer"), "volumeDevices", "merge", Some("devicePath")),
    (core!("EphemeralContainer"), "volumeMounts", "merge", Some("mountPath")),
    (core!("NamespaceStatus"), "conditions", "merge", Some("type")),
    (core!("NodeSpec"), "podCIDRs", "merge", None),
    (core!("NodeStatus"), "addresses", "merge", Some("type")),
    (core!("NodeStatus"), "conditions", "merge", Some("type")),
    (core!("PersistentVolumeClaimStatus"), "conditions", "merge", Some("type")),
    (core!("PodSpec"), "containers", "merge", Some("name")),
    (core!("PodSpec"), "ephemeralContainers", "merge", Some("name")),
    (core!("PodSpec"), "hostAliases", "merge", Some("ip")),
    (core!("PodSpec"), "imagePullSecrets", "merge", Some("name")),
    (core!("PodSpec"), "initContainers", "merge", Some("name")),
    (core!("PodSpec"), "resourceClaims", "merge,retainKeys", Some("name")),
    (core!("PodSpec"), "schedulingGates", "merge", Some("name")),
    (core!("PodSpec"), "topologySpreadConstraints", "merge", Some("topologyKey")),
    (core!("PodSpec"), "volumes", "merge,retainKeys", Some("name")),
    (core!("PodStatus"), "conditions", "merge", Some("type")),
    (core!("PodStatus"), "hostIPs", "merge", Some("ip")),
    (core!("PodStatus"), "podIPs", "merge", Some("ip")),
    (core!("PodStatus"), "resourceClaimStatuses", "merge,retainKeys", Some("name")),
    (core!("ReplicationControllerStatus"), "conditions", "merge", Some("type")),
    (core!("ServiceAccount"), "secrets", "merge", Some("name")),
    (core!("ServiceSpec"), "ports", "merge", Some("port")),
    (core!("ServiceStatus"), "conditions", "merge", Some("type")),
    (apps!("DaemonSetStatus"), "conditions", "merge", Some("type")),
    (apps!("DeploymentSpec"), "strategy", "retainKeys", None),
    (apps!("DeploymentStatus"), "conditions", "merge", Some("type")),
    (apps!("ReplicaSetStatus"), "conditions", "merge", Some("type")),
    (apps!("StatefulSetStatus"), "conditions", "merge", Some("type")),
    (batch!("JobStatus"), "conditions", "merge", Some("type")),
    ("io.k8s.api.networking.v1.ServiceCIDRStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetSpec", "selector", "replace", None),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.storage.v1.CSINodeSpec", "drivers", "merge", Some("name")),
    (meta!("ObjectMeta"), "finalizers", "merge", None),
    (meta!("ObjectMeta"), "ownerReferences", "merge", Some("uid")),
    (crd!("JSONSchemaProps"), "x-kubernetes-validations", "merge", Some("rule")),
];

/// Server-side apply list types that are not `atomic`: definition, field, map keys (empty for
/// a `set`). Every other list is atomic.
#[rustfmt::skip]
const LIST_TYPES: &[(&str, &str, &[&str])] = &[
    (core!("ComponentStatus"), "conditions", &["type"]),
    (core!("Container"), "env", &["name"]),
    (core!("Container"), "ports", &["containerPort", "protocol"]),
    (core!("Container"), "volumeDevices", &["devicePath"]),
    (core!("Container"), "volumeMounts", &["mountPath"]),
    (core!("ContainerStatus"), "allocatedResourcesStatus", &["name"]),
    (core!("ContainerStatus"), "volumeMounts", &["mountPath"]),
    (core!("EphemeralContainer"), "env", &["name"]),
    (core!("EphemeralContainer"), "ports", &["containerPort", "protocol"]),
    (core!("EphemeralContainer"), "volumeDevices", &["devicePath"]),
    (core!("EphemeralContainer"), "volumeMounts", &["mountPath"]),
    (core!("NamespaceStatus"), "conditions", &["type"]),
    (core!("NodeSpec"), "podCIDRs", &[]),
    (core!("NodeStatus"), "addresses", &["type"]),
    (core!("NodeStatus"), "conditions", &["type"]),
    (core!("PersistentVolumeClaimStatus"), "conditions", &["type"]),
    (core!("PodSpec"), "containers", &["name"]),
    (core!("PodSpec"), "ephemeralContainers", &["name"]),
    (core!("PodSpec"), "hostAliases", &["ip"]),
    (core!("PodSpec"), "imagePullSecrets", &["name"]),
    (core!("PodSpec"), "initContainers", &["name"]),
    (core!("PodSpec"), "resourceClaims", &["name"]),
    (core!("PodSpec"), "schedulingGates", &["name"]),
    (core!("PodSpec"), "topologySpreadConstraints", &["topologyKey", "whenUnsatisfiable"]),
    (core!("PodSpec"), "volumes", &["name"]),
    (core!("PodStatus"), "conditions", &["type"]),
    (core!("PodStatus"), "podIPs", &["ip"]),
    (core!("PodStatus"), "resourceClaimStatuses", &["name"]),
    (core!("ReplicationControllerStatus"), "conditions", &["type"]),
    (core!("ResourceRequirements"), "claims", &["name"]),
    (core!("ResourceStatus"), "resources", &["resourceID"]),
    (core!("ServiceAccount"), "secrets", &["name"]),
    (core!("ServiceSpec"), "ports", &["port", "protocol"]),
    (core!("ServiceStatus"), "conditions", &["type"]),
    (apps!("DaemonSetStatus"), "conditions", &["type"]),
    (apps!("DeploymentStatus"), "conditions", &["type"]),
    (apps!("ReplicaSetStatus"), "conditions", &["type"]),
    (apps!("StatefulSetStatus"), "conditions", &["type"]),
    (batch!("PodFailurePolicyOnExitCodesRequirement"), "values", &[]),
    (batch!("UncountedTerminatedPods"), "failed", &[]),
    (batch!("UncountedTerminatedPods"), "succeeded", &[]),
    ("io.k8s.api.discovery.v1.Endpoint", "addresses", &[]),
    ("io.k8s.api.networking.v1.ServiceCIDRStatus", "conditions", &["type"]),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", "conditions", &["type"]),
    ("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "conditions", &["type"]),
    ("io.k8s.api.storage.v1.CSIDriverSpec", "volumeLifecycleModes", &[]),
    ("io.k8s.api.storage.v1.CSINodeSpec", "drivers", &["name"]),
    (meta!("ObjectMeta"), "finalizers", &[]),
    (meta!("ObjectMeta"), "ownerReferences", &["uid"]),
    (crd!("CustomResourceDefinitionStatus"), "conditions", &["type"]),
    (crd!("JSONSchemaProps"), "x-kubernetes-validations", &["rule"]),
];

/// Key defaults that differ from the zero value of the key's type: definition, list field,
/// key, default (`None`: the key has no default and must be present).
#[rustfmt::skip]
const KEY_DEFAULTS: &[(&str, &str, &str, Option<&str>)] = &[
    (core!("Container"), "ports", "protocol", Some("TCP")),
    (core!("EphemeralContainer"), "ports", "protocol", Some("TCP")),
    (core!("ServiceSpec"), "ports", "protocol", Some("TCP")),
    (core!("ServiceAccount"), "secrets", "name", None),
];

/// Maps that server-side apply owns as one value.
const ATOMIC_MAPS: &[(&str, &str)] = &[
    (core!("PodSpec"), "nodeSelector"),
    (core!("ServiceSpec"), "selector"),
    (core!("ReplicationControllerSpec"), "selector"),
    ("io.k8s.api.node.v1.Scheduling", "nodeSelector"),
];

/// Fields explicitly marked granular (overriding an atomic struct, or stated for clarity).
const GRANULAR_FIELDS: &[(&str, &str)] =
    &[(core!("PersistentVolumeSpec"), "claimRef"), (core!("PersistentVolumeClaimStatus"), "allocatedResourceStatuses")];

/// Structs marked `+structType=atomic`.
#[rustfmt::skip]
const ATOMIC_STRUCTS: &[&str] = &[
    core!("ConfigMapKeySelector"),
    core!("SecretKeySelector"),
    core!("ObjectFieldSelector"),
    core!("ResourceFieldSelector"),
    core!("LocalObjectReference"),
    core!("SecretReference"),
    core!("ObjectReference"),
    core!("TypedLocalObjectReference"),
    core!("NodeSelector"),
    core!("NodeSelectorTerm"),
    core!("TopologySelectorTerm"),
    core!("ScopeSelector"),
    core!("EndpointAddress"),
    core!("EndpointPort"),
    "io.k8s.api.discovery.v1.EndpointPort",
    "io.k8s.api.networking.v1.ServiceBackendPort",
    "io.k8s.api.rbac.v1.Subject",
    "io.k8s.api.rbac.v1.RoleRef",
    meta!("LabelSelector"),
    meta!("OwnerReference"),
];

/// Non-pointer struct fields below the top level of a kind: Go encodes them even when empty.
/// (A kind's own `metadata`, `spec` and `status` are always such fields.)
#[rustfmt::skip]
const ZERO_PRESENT: &[(&str, &str)] = &[
    (core!("PodTemplateSpec"), "metadata"),
    (core!("PodTemplateSpec"), "spec"),
    (core!("PodTemplate"), "template"),
    (core!("Container"), "resources"),
    (core!("EphemeralContainer"), "resources"),
    (core!("PersistentVolumeClaimSpec"), "resources"),
    (core!("ServiceStatus"), "loadBalancer"),
    (core!("NodeStatus"), "daemonEndpoints"),
    (core!("NodeStatus"), "nodeInfo"),
    (core!("NodeDaemonEndpoints"), "kubeletEndpoint"),
    (core!("Event"), "involvedObject"),
    (core!("Event"), "source"),
    (core!("Binding"), "target"),
    (apps!("DeploymentSpec"), "template"),
    (apps!("DeploymentSpec"), "strategy"),
    (apps!("ReplicaSetSpec"), "template"),
    (apps!("StatefulSetSpec"), "template"),
    (apps!("StatefulSetSpec"), "updateStrategy"),
    (apps!("DaemonSetSpec"), "template"),
    (apps!("DaemonSetSpec"), "updateStrategy"),
    (batch!("JobSpec"), "template"),
    (batch!("CronJobSpec"), "jobTemplate"),
    (batch!("JobTemplateSpec"), "metadata"),
    (batch!("JobTemplateSpec"), "spec"),
    ("io.k8s.api.events.v1.Event", "regarding"),
    ("io.k8s.api.events.v1.Event", "deprecatedSource"),
    ("io.k8s.api.rbac.v1.RoleBinding", "roleRef"),
    ("io.k8s.api.rbac.v1.ClusterRoleBinding", "roleRef"),
    ("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec", "scaleTargetRef"),
    (crd!("CustomResourceDefinitionSpec"), "names"),
    (crd!("CustomResourceDefinitionStatus"), "acceptedNames"),
];

/// Whether `definition.field` is present in an empty Go object of its kind.
pub(crate) fn zero_present(definition: &str, field: &str) -> bool {
    if ZERO_PRESENT.contains(&(definition, field)) {
        return true;
    }
    matches!(field, "metadata" | "spec" | "status") && is_kind(definition)
}

/// A definition with `apiVersion`, `kind` and `metadata` is a kind.
fn is_kind(definition: &str) -> bool {
    let Some(properties) = definitions().get(definition).and_then(|d| d.get("properties")) else { return false };
    ["apiVersion", "kind", "metadata"].iter().all(|p| properties.get(p).is_some())
}

/// The default of key `key` of list `definition.field` when Kapal's tables set one:
/// `Some(Some(v))` a default, `Some(None)` explicitly none, `None` not in the tables.
pub(crate) fn key_default(definition: &str, field: &str, key: &str) -> Option<Option<Value>> {
    KEY_DEFAULTS
        .iter()
        .find(|(d, f, k, _)| *d == definition && *f == field && *k == key)
        .map(|(_, _, _, default)| default.map(|v| Value::String(v.to_string())))
}

/// The `x-kubernetes-*` extensions upstream's OpenAPI carries for a property of a built-in
/// definition: `x-kubernetes-list-map-keys`, `x-kubernetes-list-type`,
/// `x-kubernetes-map-type`, `x-kubernetes-patch-merge-key`, `x-kubernetes-patch-strategy`, in
/// that (alphabetical, Go map) order. With an empty `field`, the extensions of the definition
/// itself (`x-kubernetes-map-type: atomic` for atomic structs).
pub fn extensions_for(definition: &str, field: &str) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    if field.is_empty() {
        if ATOMIC_STRUCTS.contains(&definition) {
            out.push(("x-kubernetes-map-type", json!("atomic")));
        }
        return out;
    }
    let property = definitions().get(definition).and_then(|d| d.get("properties")).and_then(|p| p.get(field));
    let is_array = property.and_then(|p| p.get("type")).and_then(Value::as_str) == Some("array");
    let is_map = property.is_some_and(|p| p.get("additionalProperties").is_some());
    if let Some((_, _, keys)) = LIST_TYPES.iter().find(|(d, f, _)| *d == definition && *f == field) {
        if keys.is_empty() {
            out.push(("x-kubernetes-list-type", json!("set")));
        } else {
            out.push(("x-kubernetes-list-map-keys", json!(keys)));
            out.push(("x-kubernetes-list-type", json!("map")));
        }
    } else if is_array && !(field == "items" && definition.ends_with("List")) {
        out.push(("x-kubernetes-list-type", json!("atomic")));
    }
    if is_map && ATOMIC_MAPS.contains(&(definition, field)) {
        out.push(("x-kubernetes-map-type", json!("atomic")));
    } else if GRANULAR_FIELDS.contains(&(definition, field)) {
        out.push(("x-kubernetes-map-type", json!("granular")));
    }
    if let Some((_, _, strategy, key)) = PATCH_STRATEGIES.iter().find(|(d, f, _, _)| *d == definition && *f == field) {
        if let Some(key) = key {
            out.push(("x-kubernetes-patch-merge-key", json!(key)));
        }
        out.push(("x-kubernetes-patch-strategy", json!(strategy)));
    }
    out
}
