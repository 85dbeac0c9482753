//! The built-in schemas: every definition reachable from the built-in kinds, generated once
//! from k8s-openapi's `JsonSchema` impls, decorated with merge metadata and group-version-kind
//! markers, and shared by every document.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use k8s_openapi::api;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

/// Where v3 documents keep their schemas; `$ref`s are this prefix plus the definition name.
pub(crate) const REF_PREFIX: &str = "#/components/schemas/";

pub(crate) const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
pub(crate) const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
pub(crate) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(crate) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(crate) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

const GVK_EXTENSION: &str = "x-kubernetes-group-version-kind";

const API_VERSION_DESCRIPTION: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DESCRIPTION: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
const METADATA_DESCRIPTION: &str = "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const LIST_METADATA_DESCRIPTION: &str = "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";

/// The `x-kubernetes-group-version-kind` value of one kind. Keys are in the order Go's JSON
/// encoder writes map keys, so our bytes look like upstream's.
pub(crate) fn gvk_value(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

/// A `$ref` to a definition.
pub(crate) fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("{REF_PREFIX}{name}") })
}

/// One type whose schema (and everything it references) goes into the catalog.
struct Root {
    /// The kind this schema is the root of, if it is an API kind.
    gvk: Option<(&'static str, &'static str, &'static str)>,
    name: fn() -> Cow<'static, str>,
    add: fn(&mut SchemaGenerator) -> Schema,
}

fn kind<T: JsonSchema>(group: &'static str, version: &'static str, kind: &'static str) -> Root {
    Root { gvk: Some((group, version, kind)), name: T::schema_name, add: SchemaGenerator::subschema_for::<T> }
}

fn plain<T: JsonSchema>() -> Root {
    Root { gvk: None, name: T::schema_name, add: SchemaGenerator::subschema_for::<T> }
}

/// Every kind the server may serve as a built-in, plus the kinds its subresources return and
/// the meta types operations refer to. A built-in missing here still gets served, with an
/// opaque schema (see [`Catalog::is_builtin`]).
#[rustfmt::skip]
fn roots() -> Vec<Root> {
    use api::core::v1 as corev1;
    vec![
        kind::<corev1::Namespace>("", "v1", "Namespace"),
        kind::<corev1::Pod>("", "v1", "Pod"),
        kind::<corev1::Service>("", "v1", "Service"),
        kind::<corev1::Endpoints>("", "v1", "Endpoints"),
        kind::<corev1::ConfigMap>("", "v1", "ConfigMap"),
        kind::<corev1::Secret>("", "v1", "Secret"),
        kind::<corev1::ServiceAccount>("", "v1", "ServiceAccount"),
        kind::<corev1::Node>("", "v1", "Node"),
        kind::<corev1::Event>("", "v1", "Event"),
        kind::<corev1::PersistentVolume>("", "v1", "PersistentVolume"),
        kind::<corev1::PersistentVolumeClaim>("", "v1", "PersistentVolumeClaim"),
        kind::<corev1::LimitRange>("", "v1", "LimitRange"),
        kind::<corev1::ResourceQuota>("", "v1", "ResourceQuota"),
        kind::<corev1::PodTemplate>("", "v1", "PodTemplate"),
        kind::<corev1::ReplicationController>("", "v1", "ReplicationController"),
        kind::<corev1::ComponentStatus>("", "v1", "ComponentStatus"),
        kind::<corev1::Binding>("", "v1", "Binding"),
        kind::<api::apps::v1::Deployment>("apps", "v1", "Deployment"),
        kind::<api::apps::v1::ReplicaSet>("apps", "v1", "ReplicaSet"),
        kind::<api::apps::v1::StatefulSet>("apps", "v1", "StatefulSet"),
        kind::<api::apps::v1::DaemonSet>("apps", "v1", "DaemonSet"),
        kind::<api::apps::v1::ControllerRevision>("apps", "v1", "ControllerRevision"),
        kind::<api::batch::v1::Job>("batch", "v1", "Job"),
        kind::<api::batch::v1::CronJob>("batch", "v1", "CronJob"),
        kind::<api::autoscaling::v2::HorizontalPodAutoscaler>("autoscaling", "v2", "HorizontalPodAutoscaler"),
        kind::<api::autoscaling::v1::HorizontalPodAutoscaler>("autoscaling", "v1", "HorizontalPodAutoscaler"),
        kind::<api::autoscaling::v1::Scale>("autoscaling", "v1", "Scale"),
        kind::<api::discovery::v1::EndpointSlice>("discovery.k8s.io", "v1", "EndpointSlice"),
        kind::<api::coordination::v1::Lease>("coordination.k8s.io", "v1", "Lease"),
        kind::<api::events::v1::Event>("events.k8s.io", "v1", "Event"),
        kind::<api::policy::v1::PodDisruptionBudget>("policy", "v1", "PodDisruptionBudget"),
        kind::<api::policy::v1::Eviction>("policy", "v1", "Eviction"),
        kind::<api::networking::v1::NetworkPolicy>("networking.k8s.io", "v1", "NetworkPolicy"),
        kind::<api::networking::v1::Ingress>("networking.k8s.io", "v1", "Ingress"),
        kind::<api::networking::v1::IngressClass>("networking.k8s.io", "v1", "IngressClass"),
        kind::<api::networking::v1::ServiceCIDR>("networking.k8s.io", "v1", "ServiceCIDR"),
        kind::<api::networking::v1::IPAddress>("networking.k8s.io", "v1", "IPAddress"),
        kind::<api::rbac::v1::Role>("rbac.authorization.k8s.io", "v1", "Role"),
        kind::<api::rbac::v1::RoleBinding>("rbac.authorization.k8s.io", "v1", "RoleBinding"),
        kind::<api::rbac::v1::ClusterRole>("rbac.authorization.k8s.io", "v1", "ClusterRole"),
        kind::<api::rbac::v1::ClusterRoleBinding>("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding"),
        kind::<api::storage::v1::StorageClass>("storage.k8s.io", "v1", "StorageClass"),
        kind::<api::storage::v1::CSIDriver>("storage.k8s.io", "v1", "CSIDriver"),
        kind::<api::storage::v1::CSINode>("storage.k8s.io", "v1", "CSINode"),
        kind::<api::storage::v1::VolumeAttachment>("storage.k8s.io", "v1", "VolumeAttachment"),
        kind::<api::node::v1::RuntimeClass>("node.k8s.io", "v1", "RuntimeClass"),
        kind::<api::scheduling::v1::PriorityClass>("scheduling.k8s.io", "v1", "PriorityClass"),
        kind::<apiextensions::CustomResourceDefinition>("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        kind::<api::authentication::v1::TokenRequest>("authentication.k8s.io", "v1", "TokenRequest"),
        kind::<meta::Status>("", "v1", "Status"),
        plain::<meta::ObjectMeta>(),
        plain::<meta::ListMeta>(),
        plain::<meta::DeleteOptions>(),
        plain::<meta::Patch>(),
        plain::<meta::WatchEvent<corev1::Pod>>(),
    ]
}

/// The built-in definitions, decorated and indexed.
pub(crate) struct Catalog {
    definitions: HashMap<String, Value>,
    by_gvk: HashMap<(String, String, String), String>,
}

impl Catalog {
    /// A built-in definition by name.
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.definitions.get(name)
    }

    /// Whether `name` is a definition generated from k8s-openapi (and so carries merge metadata).
    pub(crate) fn is_builtin(&self, name: &str) -> bool {
        self.definitions.contains_key(name)
    }

    /// The definition name of a built-in kind, e.g. `autoscaling/v1 Scale`.
    pub(crate) fn name_of(&self, group: &str, version: &str, kind: &str) -> Option<&str> {
        self.by_gvk.get(&(group.to_string(), version.to_string(), kind.to_string())).map(String::as_str)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.definitions.len()
    }
}

static CATALOG: LazyLock<Catalog> = LazyLock::new(build);

/// The catalog, built on first use.
pub(crate) fn catalog() -> &'static Catalog {
    &CATALOG
}

/// Generates the catalog; [`catalog`] does it once per process.
pub(crate) fn build() -> Catalog {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut by_gvk: HashMap<(String, String, String), String> = HashMap::new();
    for root in roots() {
        let _ = (root.add)(&mut generator);
        if let Some((group, version, kind)) = root.gvk {
            by_gvk.insert((group.into(), version.into(), kind.into()), (root.name)().into_owned());
        }
    }
    let mut definitions: HashMap<String, Value> = generator.take_definitions(true).into_iter().collect();
    for (name, schema) in definitions.iter_mut() {
        decorate(name, schema);
    }
    for ((group, version, kind), name) in &by_gvk {
        if let Some(Value::Object(schema)) = definitions.get_mut(name) {
            schema.insert(GVK_EXTENSION.into(), Value::Array(vec![gvk_value(group, version, kind)]));
        }
    }
    Catalog { definitions, by_gvk }
}

/// The one place where merge metadata (patch strategy, merge keys, list and map types) enters
/// the documents: `field` is a property of `definition`, or empty for the definition itself.
fn extensions(definition: &str, field: &str) -> Vec<(&'static str, Value)> {
    crate::schema::extensions_for(definition, field)
}

/// Adds merge metadata to a definition and to each of its properties.
fn decorate(definition: &str, schema: &mut Value) {
    let Value::Object(schema) = schema else {
        return;
    };
    for (key, value) in extensions(definition, "") {
        schema.insert(key.to_string(), value);
    }
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (field, property) in properties.iter_mut() {
        let found = extensions(definition, field);
        if found.is_empty() {
            continue;
        }
        if let Value::Object(property) = property {
            for (key, value) in found {
                property.insert(key.to_string(), value);
            }
            wrap_ref_siblings(property);
        }
    }
}

/// OpenAPI 3.0 ignores the siblings of `$ref`; upstream wraps the reference in `allOf` instead.
fn wrap_ref_siblings(schema: &mut Map<String, Value>) {
    if schema.len() > 1
        && let Some(reference) = schema.remove("$ref")
    {
        schema.insert("allOf".into(), json!([{ "$ref": reference }]));
    }
}

/// The definition name upstream gives a custom resource: the group reversed, then version and
/// kind (`stable.example.com/v1 CronTab` → `com.example.stable.v1.CronTab`).
pub(crate) fn custom_resource_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().filter(|s| !s.is_empty()).collect();
    if reversed.is_empty() { format!("{version}.{kind}") } else { format!("{}.{version}.{kind}", reversed.join(".")) }
}

/// The component schema of a custom resource: the CRD version's `openAPIV3Schema` with the
/// standard `apiVersion`, `kind` and `metadata` properties and its group-version-kind marker.
/// Without a schema the object is accepted as-is.
pub(crate) fn custom_resource_schema(group: &str, version: &str, kind: &str, schema: Option<&Value>) -> Value {
    let mut schema = match schema {
        Some(Value::Object(schema)) => schema.clone(),
        _ => Map::from_iter([("x-kubernetes-preserve-unknown-fields".to_string(), Value::Bool(true))]),
    };
    schema.entry("type").or_insert_with(|| json!("object"));
    let mut properties = Map::new();
    properties.insert("apiVersion".into(), json!({ "description": API_VERSION_DESCRIPTION, "type": "string" }));
    properties.insert("kind".into(), json!({ "description": KIND_DESCRIPTION, "type": "string" }));
    properties
        .insert("metadata".into(), json!({ "allOf": [schema_ref(OBJECT_META)], "description": METADATA_DESCRIPTION }));
    if let Some(Value::Object(own)) = schema.remove("properties") {
        for (field, property) in own {
            if !properties.contains_key(&field) {
                properties.insert(field, property);
            }
        }
    }
    schema.insert("properties".into(), Value::Object(properties));
    schema.insert(GVK_EXTENSION.into(), json!([gvk_value(group, version, kind)]));
    Value::Object(schema)
}

/// The schema of a list kind (`PodList`) whose items are the definition `item`.
pub(crate) fn list_schema(group: &str, version: &str, list_kind: &str, item_kind: &str, item: &str) -> Value {
    json!({
        "description": format!("{list_kind} is a list of {item_kind} objects."),
        "type": "object",
        "properties": {
            "apiVersion": { "description": API_VERSION_DESCRIPTION, "type": "string" },
            "items": {
                "description": format!("The {item_kind} objects in the list."),
                "type": "array",
                "items": schema_ref(item),
            },
            "kind": { "description": KIND_DESCRIPTION, "type": "string" },
            "metadata": { "allOf": [schema_ref(LIST_META)], "description": LIST_METADATA_DESCRIPTION },
        },
        "required": ["items"],
        GVK_EXTENSION: [gvk_value(group, version, list_kind)],
    })
}

/// Every definition name that `value` refers to with a local `$ref`.
pub(crate) fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(reference)) => {
                        if let Some(name) = reference.strip_prefix(REF_PREFIX) {
                            out.push(name.to_string());
                        }
                    }
                    _ => refs(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, out)),
        _ => {}
    }
}

/// Adds to `schemas` every built-in definition reachable from `seeds` or from the schemas
/// already present, so that every `$ref` resolves.
pub(crate) fn close_over(schemas: &mut BTreeMap<String, Value>, seeds: Vec<String>) {
    let mut pending = seeds;
    for schema in schemas.values() {
        refs(schema, &mut pending);
    }
    let catalog = catalog();
    while let Some(name) = pending.pop() {
        if schemas.contains_key(&name) {
            continue;
        }
        if let Some(schema) = catalog.get(&name) {
            refs(schema, &mut pending);
            schemas.insert(name, schema.clone());
        }
    }
}
