//! CustomResourceDefinitions (`apiextensions-apiserver/pkg/apis/apiextensions/validation`):
//! names, group, scope, versions, and the basics of structural schemas.

use std::collections::HashSet;

use serde_json::Value;

use super::names::{is_dns1035_label, is_dns1123_subdomain};
use super::path::Path;
use super::report::{
    Errs, get, go_quote, immutable_raw, invalid_json, invalid_str, items, not_supported, obj_at, required, str_or_empty,
};

const SCHEMA_TYPES: &[&str] = &["array", "boolean", "integer", "number", "object", "string"];

/// `ValidateCustomResourceDefinition` beyond generic metadata.
pub(crate) fn validate_crd(crd: &Value, errs: &mut Errs) {
    let sp = Path::new("spec");
    let empty = Value::Object(Default::default());
    let spec = obj_at(crd, "spec", &Path::new(""), errs).unwrap_or(&empty);
    let group = str_or_empty(spec, "group", &sp, errs);
    let plural = spec.pointer("/names/plural").and_then(Value::as_str).unwrap_or("");

    let name = crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    if !name.is_empty() && name != format!("{plural}.{group}") {
        errs.push(invalid_str(
            &Path::new("metadata").child("name"),
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }

    let gp = sp.child("group");
    if group.is_empty() {
        errs.push(required(&gp, ""));
    } else {
        let msgs = is_dns1123_subdomain(group);
        if !msgs.is_empty() {
            errs.push(invalid_str(&gp, group, &msgs.join(",")));
        } else if !group.contains('.') {
            errs.push(invalid_str(&gp, group, "should be a domain with at least one dot"));
        }
    }
    match str_or_empty(spec, "scope", &sp, errs) {
        "" => errs.push(required(&sp.child("scope"), "")),
        "Cluster" | "Namespaced" => {}
        other => errs.push(not_supported(&sp.child("scope"), other, &["Cluster", "Namespaced"])),
    }
    validate_versions(spec, &sp, errs);
    validate_names(spec, &sp, errs);
}

fn validate_versions(spec: &Value, sp: &Path, errs: &mut Errs) {
    let vp = sp.child("versions");
    let versions = items(spec, "versions", sp, errs);
    let shown: Vec<Value> =
        versions.iter().map(|v| v.get("name").cloned().unwrap_or(Value::String(String::new()))).collect();
    let shown = Value::Array(shown);
    let mut names: HashSet<&str> = HashSet::new();
    let mut unique = true;
    let mut storage = 0;
    for (i, v) in versions.iter().enumerate() {
        let p = vp.index(i);
        let name = str_or_empty(v, "name", &p, errs);
        if v.get("storage").and_then(Value::as_bool) == Some(true) {
            storage += 1;
        }
        if !names.insert(name) {
            unique = false;
        }
        let msgs = is_dns1035_label(name);
        if !msgs.is_empty() {
            errs.push(invalid_str(&p.child("name"), name, &msgs.join(",")));
        }
        let schema_path = p.child("schema").child("openAPIV3Schema");
        match v.pointer("/schema/openAPIV3Schema").filter(|s| !s.is_null()) {
            None => errs.push(required(&schema_path, "schemas are required")),
            Some(schema) => validate_structural(schema, &schema_path, Level::Root, errs),
        }
    }
    if !unique {
        errs.push(invalid_json(&vp, &shown, "must contain unique version names"));
    }
    if storage != 1 {
        errs.push(invalid_json(&vp, &shown, "must have exactly one version marked as storage version"));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Field,
    Item,
    /// Inside `additionalProperties`, `allOf`, …: types are optional there.
    Other,
}

/// The structural-schema rules every CRD schema must meet: a type everywhere it matters,
/// `object` at the root, known type names, and `items` for arrays.
fn validate_structural(s: &Value, p: &Path, level: Level, errs: &mut Errs) {
    if !s.is_object() {
        errs.push(super::report::type_invalid(p, s, "object"));
        return;
    }
    let ty = str_or_empty(s, "type", p, errs);
    let flag = |k: &str| s.get(k).and_then(Value::as_bool) == Some(true);
    let typeless_ok = flag("x-kubernetes-int-or-string") || flag("x-kubernetes-preserve-unknown-fields");
    if ty.is_empty() {
        match level {
            Level::Root => errs.push(required(&p.child("type"), "must not be empty at the root")),
            Level::Field if !typeless_ok => {
                errs.push(required(&p.child("type"), "must not be empty for specified object fields"))
            }
            Level::Item if !typeless_ok => {
                errs.push(required(&p.child("type"), "must not be empty for specified array items"))
            }
            _ => {}
        }
    } else {
        if !SCHEMA_TYPES.contains(&ty) {
            errs.push(not_supported(&p.child("type"), ty, SCHEMA_TYPES));
        }
        if level == Level::Root && ty != "object" {
            errs.push(invalid_str(&p.child("type"), ty, "must be object at the root"));
        }
    }
    if ty == "array" && level != Level::Other && get(s, "items").is_none() {
        errs.push(required(&p.child("items"), "must be specified"));
    }
    // Below a value validation (`allOf`, …) types stay optional all the way down.
    let (field_level, item_level) =
        if level == Level::Other { (Level::Other, Level::Other) } else { (Level::Field, Level::Item) };
    if let Some(props) = get(s, "properties").and_then(Value::as_object) {
        for (name, sub) in props {
            validate_structural(sub, &p.child("properties").key(name), field_level, errs);
        }
    }
    if let Some(item) = get(s, "items") {
        validate_structural(item, &p.child("items"), item_level, errs);
    }
    if let Some(extra) = get(s, "additionalProperties").filter(|a| a.is_object()) {
        if level == Level::Root {
            errs.push(super::report::forbidden(&p.child("additionalProperties"), "must not be used at the root"));
        }
        validate_structural(extra, &p.child("additionalProperties"), field_level, errs);
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        for (i, sub) in s.get(combinator).and_then(Value::as_array).into_iter().flatten().enumerate() {
            validate_structural(sub, &p.child(combinator).index(i), Level::Other, errs);
        }
    }
}

fn validate_names(spec: &Value, sp: &Path, errs: &mut Errs) {
    let np = sp.child("names");
    let empty = Value::Object(Default::default());
    let names = obj_at(spec, "names", sp, errs).unwrap_or(&empty);
    let field = |k: &str| names.get(k).and_then(Value::as_str).unwrap_or("");
    let (plural, singular, kind, list_kind) = (field("plural"), field("singular"), field("kind"), field("listKind"));
    if plural.is_empty() {
        errs.push(required(&np.child("plural"), ""));
    }
    if kind.is_empty() {
        errs.push(required(&np.child("kind"), ""));
        // `singular` and `listKind` default from `kind`, so they are only missing without it.
        if singular.is_empty() {
            errs.push(required(&np.child("singular"), ""));
        }
        if list_kind.is_empty() {
            errs.push(required(&np.child("listKind"), ""));
        }
    }
    for (key, value) in [("plural", plural), ("singular", singular)] {
        let msgs = is_dns1035_label(value);
        if !value.is_empty() && !msgs.is_empty() {
            errs.push(invalid_str(&np.child(key), value, &msgs.join(",")));
        }
    }
    for (key, value) in [("kind", kind), ("listKind", list_kind)] {
        let msgs = is_dns1035_label(&value.to_lowercase());
        if !value.is_empty() && !msgs.is_empty() {
            errs.push(invalid_str(
                &np.child(key),
                value,
                &format!("may have mixed case, but should otherwise match: {}", msgs.join(",")),
            ));
        }
    }
    for key in ["shortNames", "categories"] {
        for (i, v) in names.get(key).and_then(Value::as_array).into_iter().flatten().enumerate() {
            let v = v.as_str().unwrap_or("");
            let msgs = is_dns1035_label(v);
            if !msgs.is_empty() {
                errs.push(invalid_str(&np.child(key).index(i), v, &msgs.join(",")));
            }
        }
    }
    if !kind.is_empty() && kind == list_kind {
        errs.push(invalid_str(&np.child("listKind"), list_kind, "kind and listKind may not be the same"));
    }
}

/// `ValidateCustomResourceDefinitionSpecUpdate`: group and plural never change; scope and
/// kind not once the CRD is established.
pub(crate) fn validate_crd_update(new: &Value, old: &Value, errs: &mut Errs) {
    let sp = Path::new("spec");
    let text = |v: &Value, ptr: &str| v.pointer(ptr).and_then(Value::as_str).unwrap_or("").to_string();
    let established = old.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("Established")
            && c.get("status").and_then(Value::as_str) == Some("True")
    });
    let mut checks =
        vec![("/spec/group", sp.child("group")), ("/spec/names/plural", sp.child("names").child("plural"))];
    if established {
        checks.insert(0, ("/spec/scope", sp.child("scope")));
        checks.insert(1, ("/spec/names/kind", sp.child("names").child("kind")));
    }
    for (ptr, path) in checks {
        let new_v = text(new, ptr);
        if new_v != text(old, ptr) {
            errs.push(immutable_raw(&path, &go_quote(&new_v)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(errs: &Errs) -> Vec<String> {
        errs.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    fn crd() -> Value {
        json!({"metadata": {"name": "widgets.example.com"}, "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object",
                    "properties": {"size": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}}}}}}]
        }})
    }

    #[test]
    fn a_plain_crd_is_valid() {
        let mut errs = Vec::new();
        validate_crd(&crd(), &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn name_must_be_plural_dot_group() {
        let mut c = crd();
        c["metadata"]["name"] = json!("widget.example.com");
        let mut errs = Vec::new();
        validate_crd(&c, &mut errs);
        assert_eq!(
            msgs(&errs),
            ["metadata.name: Invalid value: \"widget.example.com\": must be spec.names.plural+\".\"+spec.group"]
        );
    }

    #[test]
    fn versions_storage_and_schemas() {
        let mut c = crd();
        c["spec"]["versions"] = json!([
            {"name": "v1", "storage": true, "schema": {"openAPIV3Schema": {"type": "string"}}},
            {"name": "v2", "storage": true},
        ]);
        let mut errs = Vec::new();
        validate_crd(&c, &mut errs);
        assert_eq!(
            msgs(&errs),
            [
                "spec.versions[0].schema.openAPIV3Schema.type: Invalid value: \"string\": must be object at the root",
                "spec.versions[1].schema.openAPIV3Schema: Required value: schemas are required",
                "spec.versions: Invalid value: [\"v1\",\"v2\"]: must have exactly one version marked as storage version",
            ]
        );
        c["spec"]["versions"] = json!([{"name": "v1", "storage": true, "schema": {"openAPIV3Schema": {
            "properties": {"a": {}, "b": {"type": "array"}, "c": {"type": "thing"}}}}}]);
        let mut errs = Vec::new();
        validate_crd(&c, &mut errs);
        assert_eq!(
            msgs(&errs),
            [
                "spec.versions[0].schema.openAPIV3Schema.type: Required value: must not be empty at the root",
                "spec.versions[0].schema.openAPIV3Schema.properties[a].type: Required value: must not be empty for specified object fields",
                "spec.versions[0].schema.openAPIV3Schema.properties[b].items: Required value: must be specified",
                "spec.versions[0].schema.openAPIV3Schema.properties[c].type: Unsupported value: \"thing\": supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\"",
            ]
        );
    }

    #[test]
    fn value_validations_need_no_types() {
        let mut c = crd();
        c["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = json!({"type": "object",
            "properties": {"v": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]}},
            "allOf": [{"properties": {"v": {"properties": {"x": {}}}}}]});
        let mut errs = Vec::new();
        validate_crd(&c, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn names_group_and_scope() {
        let mut c = crd();
        c["spec"]["group"] = json!("example");
        c["spec"]["scope"] = json!("Global");
        c["spec"]["names"] = json!({"plural": "Widgets"});
        c["metadata"]["name"] = json!("Widgets.example");
        let mut errs = Vec::new();
        validate_crd(&c, &mut errs);
        let fields: Vec<&str> = errs.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.group",
                "spec.scope",
                "spec.names.kind",
                "spec.names.singular",
                "spec.names.listKind",
                "spec.names.plural",
            ]
        );
        assert_eq!(errs[0].message, "Invalid value: \"example\": should be a domain with at least one dot");
    }

    #[test]
    fn group_and_plural_are_immutable() {
        let old = crd();
        let mut new = crd();
        new["spec"]["group"] = json!("example.org");
        let mut errs = Vec::new();
        validate_crd_update(&new, &old, &mut errs);
        assert_eq!(msgs(&errs), ["spec.group: Invalid value: \"example.org\": field is immutable"]);
    }
}
