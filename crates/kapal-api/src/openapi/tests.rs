use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use serde_json::{Value, json};

use super::*;
use crate::registry::{Gvk, Scope, Subresource, builtin_resources};

fn builtin_gvs() -> BTreeSet<(String, String)> {
    builtin_resources().iter().map(|r| (r.group.clone(), r.version.clone())).collect()
}

fn core_v1() -> Value {
    v3_document("", "v1", builtin_resources(), &HashMap::new())
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "version": version, "kind": kind })
}

/// Follows `$ref` (directly or as the single member of `allOf`) to the schema it names.
fn deref<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let reference = schema["$ref"].as_str().or_else(|| schema["allOf"][0]["$ref"].as_str());
    match reference {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").expect("local ref");
            let target = &doc["components"]["schemas"][name];
            assert!(target.is_object(), "unresolved {r}");
            target
        }
        None => schema,
    }
}

/// Walks a dotted field path the way `kubectl explain` does.
fn explain<'a>(doc: &'a Value, kind_schema: &str, path: &[&str]) -> (&'a Value, &'a Value) {
    let mut schema = &doc["components"]["schemas"][kind_schema];
    let mut field = schema;
    for name in path {
        let resolved = deref(doc, schema);
        let resolved = if resolved["type"] == "array" { deref(doc, &resolved["items"]) } else { resolved };
        field = &resolved["properties"][*name];
        assert!(field.is_object(), "no field {name} in {kind_schema}");
        schema = field;
    }
    let target = deref(doc, field);
    let target = if target["type"] == "array" { deref(doc, &target["items"]) } else { target };
    (field, target)
}

fn refs_in(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                // A string `$ref` is a reference; anything else is a property named `$ref`
                // (JSONSchemaProps has one).
                if let ("$ref", Value::String(r)) = (key.as_str(), inner) {
                    out.push(r.clone());
                } else {
                    refs_in(inner, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs_in(item, out)),
        _ => {}
    }
}

fn assert_refs_resolve(doc: &Value, prefix: &str, definitions: &Value) {
    let mut refs = Vec::new();
    refs_in(doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r.strip_prefix(prefix).unwrap_or_else(|| panic!("{r} is not under {prefix}"));
        assert!(definitions.get(name).is_some(), "{r} does not resolve");
    }
}

fn crontab() -> ResourceInfo {
    ResourceInfo {
        group: "stable.example.com".into(),
        version: "v1".into(),
        kind: "CronTab".into(),
        list_kind: "CronTabList".into(),
        plural: "crontabs".into(),
        singular: "crontab".into(),
        scope: Scope::Namespaced,
        short_names: vec!["ct".into()],
        categories: vec![],
        verbs: ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        subresources: vec![
            Subresource {
                name: "status".into(),
                kind: Gvk::new("stable.example.com", "v1", "CronTab"),
                verbs: vec!["get".into(), "patch".into(), "update".into()],
            },
            Subresource {
                name: "scale".into(),
                kind: Gvk::new("autoscaling", "v1", "Scale"),
                verbs: vec!["get".into(), "patch".into(), "update".into()],
            },
        ],
        schema_name: None,
    }
}

fn crontab_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "description": "What the cron tab runs.",
                "properties": {
                    "cronSpec": { "type": "string", "description": "The schedule." },
                    "replicas": { "type": "integer", "nullable": true },
                    "ports": { "type": "array", "items": { "x-kubernetes-int-or-string": true, "anyOf": [{ "type": "integer" }, { "type": "string" }] } },
                },
            },
            "metadata": { "type": "object" },
        },
    })
}

#[test]
fn pod_item_path_has_a_patch_operation_kubectl_can_verify() {
    let doc = core_v1();
    let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"], json!({"group": "", "version": "v1", "kind": "Pod"}));
    assert_eq!(patch["x-kubernetes-action"], "patch");
    let params = patch["parameters"].as_array().expect("parameters");
    for name in ["fieldValidation", "dryRun", "fieldManager", "force"] {
        assert!(params.iter().any(|p| p["name"] == name && p["in"] == "query"), "patch lacks {name}");
    }
    let content = patch["requestBody"]["content"].as_object().expect("content");
    for ty in [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
        "application/strategic-merge-patch+json",
    ] {
        assert!(content.contains_key(ty), "patch lacks {ty}");
    }
    for path in
        ["/api/v1/namespaces/{namespace}/pods", "/api/v1/pods", "/api/v1/namespaces/{namespace}/pods/{name}/status"]
    {
        assert!(doc["paths"][path].is_object(), "missing {path}");
    }
    let create = &doc["paths"]["/api/v1/namespaces/{namespace}/pods"]["post"];
    assert!(create["parameters"].as_array().expect("params").iter().any(|p| p["name"] == "fieldValidation"));
    assert_eq!(doc["paths"]["/api/v1/namespaces"]["get"]["x-kubernetes-action"], "list");
}

#[test]
fn every_operation_carries_a_complete_gvk_object() {
    for (group, version) in builtin_gvs() {
        let doc = v3_document(&group, &version, builtin_resources(), &HashMap::new());
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                let gvk =
                    op["x-kubernetes-group-version-kind"].as_object().unwrap_or_else(|| panic!("{method} {path}"));
                assert_eq!(gvk.len(), 3, "{method} {path}");
                assert!(["group", "version", "kind"].iter().all(|k| gvk[*k].is_string()), "{method} {path}");
            }
        }
    }
}

#[test]
fn kind_schemas_carry_their_gvk_in_an_array() {
    let doc = core_v1();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"],
        json!([{"group": "", "kind": "Pod", "version": "v1"}])
    );
    assert_eq!(
        schemas["io.k8s.api.core.v1.PodList"]["x-kubernetes-group-version-kind"],
        json!([{"group": "", "kind": "PodList", "version": "v1"}])
    );
    let apps = v3_document("apps", "v1", builtin_resources(), &HashMap::new());
    let scale = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
    assert_eq!(scale["x-kubernetes-group-version-kind"], gvk("autoscaling", "v1", "Scale"));
    assert_eq!(
        apps["components"]["schemas"]["io.k8s.api.autoscaling.v1.Scale"]["x-kubernetes-group-version-kind"],
        json!([gvk("autoscaling", "v1", "Scale")])
    );
}

/// kubectl explain's lookup: the GVK of an operation on a resource path must equal an element
/// of some schema's GVK array.
#[test]
fn every_resource_is_explainable() {
    for (group, version) in builtin_gvs() {
        let doc = v3_document(&group, &version, builtin_resources(), &HashMap::new());
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for r in builtin_resources().iter().filter(|r| r.group == group && r.version == version) {
            let path = format!("{}/{}", operations::prefix(&r.group, &r.version), r.plural);
            let ns_path = format!("{}/namespaces/{{namespace}}/{}", operations::prefix(&r.group, &r.version), r.plural);
            let item = doc["paths"].get(&path).or_else(|| doc["paths"].get(&ns_path)).expect("resource path");
            let op_gvk = &item["get"]["x-kubernetes-group-version-kind"];
            assert_eq!(op_gvk, &gvk(&r.group, &r.version, &r.kind));
            let matching = schemas
                .values()
                .filter(|s| s["x-kubernetes-group-version-kind"].as_array().is_some_and(|a| a.contains(op_gvk)))
                .count();
            assert_eq!(matching, 1, "{} {}/{}", r.kind, group, version);
        }
    }
}

#[test]
fn every_builtin_resource_has_a_generated_schema() {
    for r in builtin_resources() {
        let name = r.schema_name.as_deref().expect("built-ins name their schema");
        assert!(catalog::catalog().is_builtin(name), "{name} is not in the catalog");
    }
}

#[test]
fn refs_resolve_in_every_document() {
    for (group, version) in builtin_gvs() {
        let doc = v3_document(&group, &version, builtin_resources(), &HashMap::new());
        assert_refs_resolve(&doc, "#/components/schemas/", &doc["components"]["schemas"]);
    }
    let mut custom = HashMap::new();
    custom.insert("CronTab".to_string(), crontab_schema());
    let doc = v3_document("stable.example.com", "v1", &[crontab()], &custom);
    assert_refs_resolve(&doc, "#/components/schemas/", &doc["components"]["schemas"]);
    let mut resources = builtin_resources().to_vec();
    resources.push(crontab());
    let v2 = v2_document(&resources, &custom);
    assert_refs_resolve(&v2, "#/definitions/", &v2["definitions"]);
}

#[test]
fn explain_walks_pod_spec_containers() {
    let doc = core_v1();
    let (field, container) = explain(&doc, "io.k8s.api.core.v1.Pod", &["spec", "containers"]);
    assert!(field["description"].as_str().is_some_and(|d| d.starts_with("List of containers")));
    assert_eq!(field["type"], "array");
    assert!(container["description"].as_str().is_some_and(|d| d.contains("container")));
    let (image, _) = explain(&doc, "io.k8s.api.core.v1.Pod", &["spec", "containers", "image"]);
    assert_eq!(image["type"], "string");
    let (labels, _) = explain(&doc, "io.k8s.api.core.v1.Pod", &["metadata", "labels"]);
    assert!(labels["description"].is_string());
}

#[test]
fn documents_do_not_depend_on_input_order() {
    let mut reversed = builtin_resources().to_vec();
    reversed.reverse();
    let a = serde_json::to_string(&v3_document("", "v1", builtin_resources(), &HashMap::new())).expect("json");
    let b = serde_json::to_string(&v3_document("", "v1", &reversed, &HashMap::new())).expect("json");
    assert_eq!(a, b);
    let a = serde_json::to_vec(&v2_document(builtin_resources(), &HashMap::new())).expect("json");
    let b = serde_json::to_vec(&v2_document(&reversed, &HashMap::new())).expect("json");
    assert_eq!(a, b);
}

#[test]
fn custom_resources_get_their_crd_schema() {
    let mut custom = HashMap::new();
    custom.insert("CronTab".to_string(), crontab_schema());
    let doc = v3_document("stable.example.com", "v1", &[crontab()], &custom);
    let schema = &doc["components"]["schemas"]["com.example.stable.v1.CronTab"];
    assert_eq!(schema["x-kubernetes-group-version-kind"], json!([gvk("stable.example.com", "v1", "CronTab")]));
    assert_eq!(
        schema["properties"]["metadata"]["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    assert_eq!(schema["properties"]["apiVersion"]["type"], "string");
    assert_eq!(schema["properties"]["spec"]["properties"]["cronSpec"]["description"], "The schedule.");
    assert!(doc["components"]["schemas"]["com.example.stable.v1.CronTabList"].is_object());

    let item = &doc["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"];
    assert_eq!(item["patch"]["x-kubernetes-group-version-kind"], gvk("stable.example.com", "v1", "CronTab"));
    let content = item["patch"]["requestBody"]["content"].as_object().expect("content");
    assert!(content.contains_key("application/merge-patch+json"));
    assert!(!content.contains_key("application/strategic-merge-patch+json"), "CRDs take no strategic merge patch");
    let status = &doc["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}/status"];
    assert_eq!(status["put"]["operationId"], "replaceStableExampleComV1NamespacedCronTabStatus");
    let scale = &doc["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}/scale"];
    assert_eq!(scale["get"]["x-kubernetes-group-version-kind"], gvk("autoscaling", "v1", "Scale"));

    // Without a schema the object is open, but still explainable and patchable.
    let doc = v3_document("stable.example.com", "v1", &[crontab()], &HashMap::new());
    let schema = &doc["components"]["schemas"]["com.example.stable.v1.CronTab"];
    assert_eq!(schema["x-kubernetes-preserve-unknown-fields"], true);
    assert!(schema["x-kubernetes-group-version-kind"].is_array());
}

#[test]
fn index_points_at_hashed_documents() {
    let index = v3_index(&[("apis/apps/v1".to_string(), "B2".to_string()), (document_key("", "v1"), "A1".to_string())]);
    assert_eq!(index["paths"]["api/v1"]["serverRelativeURL"], "/openapi/v3/api/v1?hash=A1");
    assert_eq!(index["paths"]["apis/apps/v1"]["serverRelativeURL"], "/openapi/v3/apis/apps/v1?hash=B2");
    let keys: Vec<&str> = index["paths"].as_object().expect("paths").keys().map(String::as_str).collect();
    assert_eq!(keys, ["api/v1", "apis/apps/v1"]);
}

#[test]
fn v2_document_is_swagger_kubectl_can_parse() {
    let mut custom = HashMap::new();
    custom.insert("stable.example.com/v1/CronTab".to_string(), crontab_schema());
    let mut resources = builtin_resources().to_vec();
    resources.push(crontab());
    let doc = v2_document(&resources, &custom);
    assert_eq!(doc["swagger"], "2.0");
    let definitions = doc["definitions"].as_object().expect("definitions");
    assert_eq!(
        definitions["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"],
        json!([gvk("apps", "v1", "Deployment")])
    );
    let metadata = &definitions["io.k8s.api.core.v1.Pod"]["properties"]["metadata"];
    assert_eq!(metadata["$ref"], "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");
    assert!(metadata.get("allOf").is_none());
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"], gvk("apps", "v1", "Deployment"));
    assert!(patch["parameters"].as_array().expect("params").iter().any(|p| p["name"] == "fieldValidation"));
    assert!(patch["parameters"].as_array().expect("params").iter().any(|p| p["in"] == "body"));

    // What kube-openapi's model parser rejects: several types, arrays without items, and
    // keywords Swagger does not have.
    fn check(schema: &Value, at: &str) {
        let Some(map) = schema.as_object() else {
            return;
        };
        assert!(!map.contains_key("nullable") && !map.contains_key("anyOf") && !map.contains_key("oneOf"), "{at}");
        if let Some(ty) = map.get("type") {
            assert!(ty.is_string(), "{at}");
            if ty == "array" {
                assert!(map["items"].is_object(), "{at}");
            }
        }
        for (name, inner) in map.get("properties").and_then(Value::as_object).into_iter().flatten() {
            check(inner, &format!("{at}.{name}"));
        }
        if let Some(items) = map.get("items") {
            check(items, &format!("{at}[]"));
        }
        if let Some(inner) = map.get("additionalProperties") {
            check(inner, &format!("{at}{{}}"));
        }
    }
    for (name, schema) in definitions {
        check(schema, name);
    }
}

/// A minimal protobuf reader: the fields of one message, in order.
fn fields(mut buf: &[u8]) -> Vec<(u32, Value)> {
    fn varint(buf: &mut &[u8]) -> u64 {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = buf[0];
            *buf = &buf[1..];
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
        }
        value
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf);
        let (field, wire) = ((key >> 3) as u32, key & 7);
        let value = match wire {
            0 => json!(varint(&mut buf)),
            1 => {
                let bits = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
                buf = &buf[8..];
                json!(f64::from_bits(bits))
            }
            2 => {
                let len = varint(&mut buf) as usize;
                let bytes = buf[..len].to_vec();
                buf = &buf[len..];
                json!(bytes)
            }
            other => panic!("unexpected wire type {other}"),
        };
        out.push((field, value));
    }
    out
}

fn bytes_of(value: &Value) -> Vec<u8> {
    value.as_array().expect("bytes").iter().map(|b| b.as_u64().expect("byte") as u8).collect()
}

fn all(buf: &[u8], field: u32) -> Vec<Vec<u8>> {
    fields(buf).into_iter().filter(|(f, _)| *f == field).map(|(_, v)| bytes_of(&v)).collect()
}

fn one(buf: &[u8], field: u32) -> Vec<u8> {
    let mut found = all(buf, field);
    assert_eq!(found.len(), 1, "field {field}");
    found.remove(0)
}

fn text(buf: &[u8], field: u32) -> String {
    String::from_utf8(one(buf, field)).expect("utf-8")
}

/// A `Named*` entry of a repeated field whose name is `name`; returns its value message.
fn named(buf: &[u8], field: u32, name: &str) -> Vec<u8> {
    all(buf, field)
        .into_iter()
        .find(|entry| text(entry, 1) == name)
        .map(|entry| one(&entry, 2))
        .unwrap_or_else(|| panic!("no entry {name}"))
}

#[test]
fn v2_protobuf_decodes_back() {
    let doc = v2_document(builtin_resources(), &HashMap::new());
    let bytes = v2_protobuf(&doc);
    assert_eq!(text(&bytes, 1), "2.0");

    // Document.definitions(9) → NamedSchema(1) → Schema.
    let pod = named(&one(&bytes, 9), 1, "io.k8s.api.core.v1.Pod");
    assert!(text(&pod, 4).starts_with("Pod is a collection of containers"));
    assert_eq!(text(&one(&pod, 22), 1), "object");
    let gvk_yaml = text(&named(&pod, 31, "x-kubernetes-group-version-kind"), 2);
    assert_eq!(serde_json::from_str::<Value>(&gvk_yaml).expect("json is yaml"), json!([gvk("", "v1", "Pod")]));
    // Schema.properties(25) → NamedSchema "metadata" → Schema._ref(1).
    let metadata = named(&one(&pod, 25), 1, "metadata");
    assert_eq!(text(&metadata, 1), "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");

    // Document.paths(8) → NamedPathItem(2) → PathItem.patch(8) → Operation.
    let item = named(&one(&bytes, 8), 2, "/api/v1/namespaces/{namespace}/pods/{name}");
    let patch = one(&item, 8);
    assert_eq!(text(&patch, 5), "patchCoreV1NamespacedPod");
    let gvk_yaml = text(&named(&patch, 13, "x-kubernetes-group-version-kind"), 2);
    assert_eq!(serde_json::from_str::<Value>(&gvk_yaml).expect("json is yaml"), gvk("", "v1", "Pod"));
    // Operation.parameters(8) → ParametersItem.parameter(1) → Parameter.non_body(2) → query(3).
    let query_names: Vec<String> = all(&patch, 8)
        .iter()
        .filter_map(|item| all(item, 1).pop())
        .filter_map(|param| all(&param, 2).pop())
        .filter_map(|non_body| all(&non_body, 3).pop())
        .map(|query| text(&query, 4))
        .collect();
    assert!(query_names.iter().any(|n| n == "fieldValidation"), "{query_names:?}");
}

#[test]
fn generating_every_document_is_fast() {
    let start = Instant::now();
    let fresh = catalog::build();
    let catalog_time = start.elapsed();
    let start = Instant::now();
    let mut bytes = 0;
    for (group, version) in builtin_gvs() {
        let doc = v3_document(&group, &version, builtin_resources(), &HashMap::new());
        bytes += serde_json::to_vec(&doc).expect("json").len();
    }
    let v3_time = start.elapsed();
    let start = Instant::now();
    let v2 = v2_document(builtin_resources(), &HashMap::new());
    let proto = v2_protobuf(&v2);
    let v2_time = start.elapsed();
    println!(
        "openapi: catalog of {} definitions {:?}; {} v3 documents ({} bytes) {:?}; v2 + protobuf ({} bytes) {:?}",
        fresh.len(),
        catalog_time,
        builtin_gvs().len(),
        bytes,
        v3_time,
        proto.len(),
        v2_time
    );
}
