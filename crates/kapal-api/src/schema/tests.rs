use serde_json::json;

use super::*;

fn field<'a>(schema: &'a TypeSchema, node: NodeId, name: &str) -> &'a Field {
    match schema.lookup(node, name) {
        Lookup::Declared(field) => field,
        other => panic!("{name}: {other:?}"),
    }
}

fn path(schema: &TypeSchema, names: &[&str]) -> NodeId {
    let mut node = schema.root();
    for name in names {
        node = match *name {
            "[]" => schema.items(node),
            name => field(schema, node, name).node,
        };
    }
    node
}

fn list(schema: &TypeSchema, id: NodeId) -> &ListNode {
    match schema.node(id) {
        Node::List(list) => list,
        other => panic!("not a list: {other:?}"),
    }
}

fn object(schema: &TypeSchema, id: NodeId) -> &ObjectNode {
    match schema.node(id) {
        Node::Object(object) => object,
        other => panic!("not an object: {other:?}"),
    }
}

#[test]
fn pod_containers_merge_by_name_for_both_patch_kinds() {
    let pod = builtin_schema("io.k8s.api.core.v1.Pod").unwrap();
    let spec = path(&pod, &["spec"]);
    let containers = field(&pod, spec, "containers");
    assert!(containers.patch.merge);
    assert_eq!(containers.merge_key.as_deref(), Some("name"));
    assert_eq!(
        list(&pod, containers.node).list_type,
        ListType::Map(vec![ListKey { name: "name".into(), default: Some(json!("")) }])
    );
}

#[test]
fn container_ports_differ_between_smp_and_ssa() {
    let deploy = builtin_schema("io.k8s.api.apps.v1.Deployment").unwrap();
    let container = path(&deploy, &["spec", "template", "spec", "containers", "[]"]);
    let ports = field(&deploy, container, "ports");
    assert_eq!(ports.merge_key.as_deref(), Some("containerPort"));
    assert_eq!(
        list(&deploy, ports.node).list_type,
        ListType::Map(vec![
            ListKey { name: "containerPort".into(), default: Some(json!(0)) },
            ListKey { name: "protocol".into(), default: Some(json!("TCP")) },
        ])
    );
}

#[test]
fn tolerations_are_replaced_and_atomic() {
    let pod = builtin_schema("io.k8s.api.core.v1.Pod").unwrap();
    let tolerations = field(&pod, path(&pod, &["spec"]), "tolerations");
    assert_eq!(tolerations.patch, PatchStrategy::default());
    assert_eq!(list(&pod, tolerations.node).list_type, ListType::Atomic);
}

#[test]
fn finalizers_are_a_set_and_owner_references_keyed_by_uid() {
    let cm = builtin_schema("io.k8s.api.core.v1.ConfigMap").unwrap();
    let meta = path(&cm, &["metadata"]);
    assert_eq!(list(&cm, field(&cm, meta, "finalizers").node).list_type, ListType::Set);
    let owners = path(&cm, &["metadata", "ownerReferences"]);
    assert!(matches!(&list(&cm, owners).list_type, ListType::Map(keys) if keys[0].name == "uid"));
    // OwnerReference is an atomic struct.
    assert!(object(&cm, cm.items(owners)).atomic);
}

#[test]
fn atomic_maps_structs_and_field_overrides() {
    let pod = builtin_schema("io.k8s.api.core.v1.Pod").unwrap();
    let node_selector = path(&pod, &["spec", "nodeSelector"]);
    assert!(object(&pod, node_selector).atomic);
    assert_eq!(*pod.node(object(&pod, node_selector).additional.unwrap()), Node::Scalar);
    let labels = path(&pod, &["metadata", "labels"]);
    assert!(!object(&pod, labels).atomic);

    let deploy = builtin_schema("io.k8s.api.apps.v1.Deployment").unwrap();
    assert!(object(&deploy, path(&deploy, &["spec", "selector"])).atomic);
    let strategy = field(&deploy, path(&deploy, &["spec"]), "strategy");
    assert!(strategy.patch.retain_keys && !strategy.patch.merge);

    let pdb = builtin_schema("io.k8s.api.policy.v1.PodDisruptionBudget").unwrap();
    assert!(field(&pdb, path(&pdb, &["spec"]), "selector").patch.replace);

    let pv = builtin_schema("io.k8s.api.core.v1.PersistentVolume").unwrap();
    assert!(!object(&pv, path(&pv, &["spec", "claimRef"])).atomic);
    let event = builtin_schema("io.k8s.api.core.v1.Event").unwrap();
    assert!(object(&event, path(&event, &["involvedObject"])).atomic);
}

#[test]
fn service_account_secret_names_have_no_default() {
    let sa = builtin_schema("io.k8s.api.core.v1.ServiceAccount").unwrap();
    let secrets = path(&sa, &["secrets"]);
    assert_eq!(list(&sa, secrets).list_type, ListType::Map(vec![ListKey { name: "name".into(), default: None }]));
}

#[test]
fn quantities_and_raw_extensions() {
    let pod = builtin_schema("io.k8s.api.core.v1.Pod").unwrap();
    let limits = path(&pod, &["spec", "containers", "[]", "resources", "limits"]);
    let quantity = object(&pod, limits).additional.unwrap();
    assert_eq!(*pod.node(quantity), Node::Scalar);
    let revision = builtin_schema("io.k8s.api.apps.v1.ControllerRevision").unwrap();
    assert_eq!(*revision.node(path(&revision, &["data"])), Node::Any { atomic: false });
    assert!(builtin_schema("io.k8s.api.core.v1.NoSuchThing").is_none());
}

#[test]
fn extensions_match_upstream_openapi() {
    let ext = |d: &str, f: &str| extensions_for(d, f);
    assert_eq!(
        ext("io.k8s.api.core.v1.Container", "ports"),
        vec![
            ("x-kubernetes-list-map-keys", json!(["containerPort", "protocol"])),
            ("x-kubernetes-list-type", json!("map")),
            ("x-kubernetes-patch-merge-key", json!("containerPort")),
            ("x-kubernetes-patch-strategy", json!("merge")),
        ]
    );
    assert_eq!(ext("io.k8s.api.core.v1.PodSpec", "tolerations"), vec![("x-kubernetes-list-type", json!("atomic"))]);
    assert_eq!(ext("io.k8s.api.core.v1.PodSpec", "nodeSelector"), vec![("x-kubernetes-map-type", json!("atomic"))]);
    assert_eq!(ext("io.k8s.api.core.v1.PodSpec", "hostname"), vec![]);
    assert_eq!(
        ext("io.k8s.api.core.v1.PodStatus", "hostIPs"),
        vec![
            ("x-kubernetes-list-type", json!("atomic")),
            ("x-kubernetes-patch-merge-key", json!("ip")),
            ("x-kubernetes-patch-strategy", json!("merge")),
        ]
    );
    assert_eq!(
        ext("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers"),
        vec![("x-kubernetes-list-type", json!("set")), ("x-kubernetes-patch-strategy", json!("merge"))]
    );
    assert_eq!(
        ext("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector", ""),
        vec![("x-kubernetes-map-type", json!("atomic"))]
    );
    assert_eq!(
        ext("io.k8s.api.policy.v1.PodDisruptionBudgetSpec", "selector"),
        vec![("x-kubernetes-patch-strategy", json!("replace"))]
    );
}

#[test]
fn unknown_fields_use_strict_decoding_paths() {
    let deploy = builtin_schema("io.k8s.api.apps.v1.Deployment").unwrap();
    let obj = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"any/key": "x"}, "colour": "red"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "a", "image": "nginx", "resources": {"limits": {"cpu": "1"}}},
                    {"name": "b", "imagee": "nginx", "ports": [{"containerPort": 80, "proto": "TCP"}]}
                ]}
            }
        },
        "extra": true
    });
    assert_eq!(
        unknown_fields(&deploy, &obj),
        vec![
            "metadata.colour",
            "spec.template.spec.containers[1].imagee",
            "spec.template.spec.containers[1].ports[0].proto",
            "extra",
        ]
    );
}

#[test]
fn zero_object_has_go_value_structs() {
    let deploy = builtin_schema("io.k8s.api.apps.v1.Deployment").unwrap();
    assert_eq!(
        deploy.zero_object(),
        json!({
            "metadata": {},
            "spec": {"selector": null, "strategy": {}, "template": {"metadata": {}, "spec": {"containers": null}}},
            "status": {}
        })
    );
    let cm = builtin_schema("io.k8s.api.core.v1.ConfigMap").unwrap();
    assert_eq!(cm.zero_object(), json!({"metadata": {}}));
    let mut stored = json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}});
    deploy.fill_zero(&mut stored);
    assert_eq!(
        stored,
        json!({
            "spec": {"template": {"spec": {"containers": [{"name": "a", "resources": {}}]}, "metadata": {}}, "strategy": {}},
            "metadata": {},
            "status": {}
        })
    );
}

fn crontab_schema() -> Arc<TypeSchema> {
    from_openapi_v3(&json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "cronSpec": {"type": "string"},
                    "replicas": {"type": "integer"},
                    "port": {"x-kubernetes-int-or-string": true},
                    "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "env": {"type": "object", "additionalProperties": {"type": "string"}},
                    "selector": {"type": "object", "x-kubernetes-map-type": "atomic", "properties": {"app": {"type": "string"}}},
                    "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                    "workers": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name", "zone"],
                        "items": {"type": "object", "properties": {
                            "name": {"type": "string"},
                            "zone": {"type": "string", "default": "a"},
                            "size": {"type": "integer"}
                        }}
                    },
                    "template": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true},
                    "empty": {"type": "object"}
                }
            },
            "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
        }
    }))
}

#[test]
fn crd_schema_reads_extensions() {
    let crd = crontab_schema();
    let spec = path(&crd, &["spec"]);
    assert_eq!(list(&crd, field(&crd, spec, "tags").node).list_type, ListType::Set);
    assert_eq!(
        list(&crd, field(&crd, spec, "workers").node).list_type,
        ListType::Map(vec![
            ListKey { name: "name".into(), default: None },
            ListKey { name: "zone".into(), default: Some(json!("a")) },
        ])
    );
    assert!(object(&crd, field(&crd, spec, "selector").node).atomic);
    assert_eq!(*crd.node(field(&crd, spec, "port").node), Node::Scalar);
    // The root always has ObjectMeta metadata.
    let meta = path(&crd, &["metadata"]);
    assert!(object(&crd, meta).fields.contains_key("labels"));
    // An embedded resource has its own metadata too.
    let template = path(&crd, &["spec", "template"]);
    assert!(object(&crd, template).fields.contains_key("metadata"));
}

#[test]
fn crd_unknown_fields_and_pruning() {
    let crd = crontab_schema();
    let mut obj = json!({
        "apiVersion": "stable.example.com/v1",
        "kind": "CronTab",
        "metadata": {"name": "c", "bogus": 1},
        "spec": {
            "cronSpec": "* * * * *",
            "config": {"anything": {"deep": [1, 2]}},
            "env": {"A": "1"},
            "workers": [{"name": "w", "size": 2, "colour": "blue"}],
            "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "nope": 1}, "spec": {"x": 1}},
            "empty": {"a": 1},
            "unknown": 1
        },
        "status": {"phase": "ok", "extra": 1}
    });
    assert_eq!(
        unknown_fields(&crd, &obj),
        vec![
            "metadata.bogus",
            "spec.workers[0].colour",
            "spec.template.metadata.nope",
            "spec.empty.a",
            "spec.unknown",
            "status.extra",
        ]
    );
    prune(&crd, &mut obj);
    assert!(unknown_fields(&crd, &obj).is_empty());
    assert_eq!(obj["spec"]["config"], json!({"anything": {"deep": [1, 2]}}));
    assert_eq!(obj["spec"]["template"]["spec"], json!({"x": 1}));
    assert_eq!(obj["spec"]["empty"], json!({}));
    assert_eq!(obj["spec"]["workers"], json!([{"name": "w", "size": 2}]));
}

#[test]
fn preserve_unknown_root_and_patch_strategy_fallback() {
    let crd = from_openapi_v3(&json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {"items": {
            "type": "array",
            "x-kubernetes-patch-strategy": "merge",
            "x-kubernetes-patch-merge-key": "id",
            "items": {"type": "object", "properties": {"id": {"type": "string"}}}
        }}
    }));
    assert!(
        unknown_fields(&crd, &json!({"anything": {"goes": 1}, "items": [{"id": "a", "x": 1}]})) == vec!["items[0].x"]
    );
    let items = field(&crd, crd.root(), "items");
    assert!(items.patch.merge);
    assert!(matches!(&list(&crd, items.node).list_type, ListType::Map(keys) if keys[0].name == "id"));
}

#[test]
fn hostile_input_does_not_panic() {
    let crd = from_openapi_v3(&json!({"type": "array", "items": 5, "properties": "x"}));
    assert!(unknown_fields(&crd, &json!([1, {"a": null}])).is_empty());
    // Without a usable schema everything is kept.
    let crd = from_openapi_v3(&json!("not a schema"));
    let mut value = json!({"a": 1, "apiVersion": "v1"});
    prune(&crd, &mut value);
    assert_eq!(value, json!({"a": 1, "apiVersion": "v1"}));
    let pod = builtin_schema("io.k8s.api.core.v1.Pod").unwrap();
    assert_eq!(unknown_fields(&pod, &json!({"spec": "text", "metadata": [1]})), Vec::<String>::new());
    assert_eq!(pod.node(usize::MAX), &Node::Any { atomic: true });
}

#[test]
fn custom_resource_metadata_keeps_managed_fields_free_form() {
    let schema = from_openapi_v3(
        &json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}),
    );
    let obj = json!({
        "apiVersion": "e.com/v1", "kind": "W",
        "metadata": {"name": "w", "managedFields": [{"manager": "m", "operation": "Update", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:annotations": {}}, "f:spec": {"f:size": {}}}}]},
        "spec": {"size": 1, "junk": 2}
    });
    assert_eq!(unknown_fields(&schema, &obj), ["spec.junk"]);
}
