//! What a document holds before it is written in one OpenAPI version: paths with their
//! operations, and every schema those operations reach.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::catalog::{self, DELETE_OPTIONS, PATCH, STATUS, catalog};
use super::operations::{self, Body, Operation, Schemas, Sub};
use crate::registry::{Gvk, ResourceInfo, Subresource};

/// Subresources that stream or proxy rather than read and write an object; they get no
/// operations (kubectl never looks them up in OpenAPI).
const STREAMING: &[&str] = &["log", "exec", "attach", "portforward", "proxy"];

/// Paths and schemas of a set of resources, sorted so that output never depends on input order.
pub(crate) struct Model {
    pub paths: BTreeMap<String, Vec<Operation>>,
    /// Definitions by name, with `$ref`s in the v3 form (`#/components/schemas/<name>`).
    pub schemas: BTreeMap<String, Value>,
}

/// Builds the paths of `resources` and the closure of the schemas they use.
pub(crate) fn assemble<'a>(
    resources: impl IntoIterator<Item = &'a ResourceInfo>,
    custom_schemas: &HashMap<String, Value>,
) -> Model {
    let mut paths = BTreeMap::new();
    let mut schemas = BTreeMap::new();
    for resource in resources {
        for (path, ops) in resource_model(resource, custom_schemas, &mut schemas) {
            paths.insert(path, ops);
        }
    }
    let mut seeds = vec![DELETE_OPTIONS.to_string(), STATUS.to_string(), PATCH.to_string()];
    for op in paths.values().flatten() {
        if let Some(Body::Object(name)) = &op.body {
            seeds.push(name.clone());
        }
        seeds.extend(op.responses.iter().filter_map(|r| r.schema.clone()));
    }
    catalog::close_over(&mut schemas, seeds);
    Model { paths, schemas }
}

/// The custom schema given for a resource: by `group/version/kind` first, then by kind.
fn custom_schema<'a>(custom_schemas: &'a HashMap<String, Value>, r: &ResourceInfo) -> Option<&'a Value> {
    custom_schemas.get(&format!("{}/{}/{}", r.group, r.version, r.kind)).or_else(|| custom_schemas.get(&r.kind))
}

fn resource_model(
    r: &ResourceInfo,
    custom_schemas: &HashMap<String, Value>,
    schemas: &mut BTreeMap<String, Value>,
) -> Vec<(String, Vec<Operation>)> {
    let known = catalog();
    let kind_name = match &r.schema_name {
        Some(name) => name.clone(),
        None => catalog::custom_resource_name(&r.group, &r.version, &r.kind),
    };
    let builtin = known.is_builtin(&kind_name);
    if !builtin {
        let schema = catalog::custom_resource_schema(&r.group, &r.version, &r.kind, custom_schema(custom_schemas, r));
        schemas.insert(kind_name.clone(), schema);
    }

    let list_kind = if r.list_kind.is_empty() { format!("{}List", r.kind) } else { r.list_kind.clone() };
    let list_name = match kind_name.strip_suffix(r.kind.as_str()) {
        Some(stem) => format!("{stem}{list_kind}"),
        None => format!("{kind_name}List"),
    };
    schemas.insert(list_name.clone(), catalog::list_schema(&r.group, &r.version, &list_kind, &r.kind, &kind_name));

    let subresources: Vec<Subresource> = r.subresources.iter().filter_map(|s| subresource_kind(r, s)).collect();
    let subs: Vec<Sub> = subresources
        .iter()
        .filter_map(|info| {
            if info.kind == r.gvk() {
                return Some(Sub { info, schema: kind_name.clone(), strategic: builtin });
            }
            let schema = known.name_of(&info.kind.group, &info.kind.version, &info.kind.kind)?;
            Some(Sub { info, schema: schema.to_string(), strategic: true })
        })
        .collect();
    let names = Schemas { kind: &kind_name, list: &list_name, strategic: builtin };
    operations::resource_paths(r, &names, &subs)
}

/// A subresource with the kind its operations carry; `None` for streaming subresources.
/// `status` always returns the parent kind and `scale` always `autoscaling/v1 Scale`,
/// whatever a hand-written registry entry says.
fn subresource_kind(r: &ResourceInfo, sub: &Subresource) -> Option<Subresource> {
    if STREAMING.contains(&sub.name.as_str()) {
        return None;
    }
    let mut sub = sub.clone();
    match sub.name.as_str() {
        "status" => sub.kind = r.gvk(),
        "scale" => sub.kind = Gvk::new("autoscaling", "v1", "Scale"),
        _ => {}
    }
    Some(sub)
}
