use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::schema::{builtin_schema, untyped};

fn schema(name: &str) -> Arc<TypeSchema> {
    builtin_schema(name).unwrap()
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}, "finalizers": ["a", "b"]},
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "nginx",
                        "image": "nginx:1.14",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
                    }],
                    "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}],
                    "securityContext": {"runAsUser": 1000},
                    "volumes": [{"name": "data", "emptyDir": {}}]
                }
            }
        }
    })
}

fn patch_deployment(patch: Value) -> Result<Value> {
    strategic_merge(&deployment(), &patch, &schema("io.k8s.api.apps.v1.Deployment"))
}

fn pod_spec_patch(spec: Value) -> Value {
    json!({"spec": {"template": {"spec": spec}}})
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect()
}

#[test]
fn containers_merge_by_name() {
    let out =
        patch_deployment(pod_spec_patch(json!({"containers": [{"name": "nginx", "image": "nginx:1.16"}]}))).unwrap();
    let containers = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().unwrap().len(), 1);
    assert_eq!(containers[0]["image"], "nginx:1.16");
    assert_eq!(containers[0]["ports"], json!([{"containerPort": 80, "protocol": "TCP"}]));
    assert_eq!(out["spec"]["replicas"], 2);
}

#[test]
fn new_container_goes_first_without_set_element_order() {
    let out =
        patch_deployment(pod_spec_patch(json!({"containers": [{"name": "sidecar", "image": "busybox"}]}))).unwrap();
    assert_eq!(names(&out["spec"]["template"]["spec"]["containers"]), ["sidecar", "nginx"]);
}

#[test]
fn set_element_order_decides_the_order() {
    let out = patch_deployment(pod_spec_patch(json!({
        "$setElementOrder/containers": [{"name": "nginx"}, {"name": "sidecar"}],
        "containers": [{"name": "sidecar", "image": "busybox"}]
    })))
    .unwrap();
    assert_eq!(names(&out["spec"]["template"]["spec"]["containers"]), ["nginx", "sidecar"]);

    let original = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}],
        "containers": [{"name": "c", "image": "x"}]
    }});
    let out = strategic_merge(&original, &patch, &schema("io.k8s.api.core.v1.Pod")).unwrap();
    assert_eq!(out["spec"]["containers"], json!([{"name": "c", "image": "x"}, {"name": "a"}, {"name": "b"}]));

    // Only the order changes when the list itself is not in the patch.
    let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}});
    let out = strategic_merge(&original, &patch, &schema("io.k8s.api.core.v1.Pod")).unwrap();
    assert_eq!(names(&out["spec"]["containers"]), ["b", "a", "c"]);
}

#[test]
fn set_element_order_must_match_the_patch_list() {
    let err = patch_deployment(pod_spec_patch(json!({
        "$setElementOrder/containers": [{"name": "nginx"}],
        "containers": [{"name": "sidecar", "image": "busybox"}]
    })))
    .unwrap_err();
    assert_eq!(err.code(), 500);
    assert_eq!(
        err.to_string(),
        "the order in patch list:\n[map[image:busybox name:sidecar]]\n doesn't match $setElementOrder list:\n[map[name:nginx]]"
    );
    let err = patch_deployment(pod_spec_patch(json!({"$setElementOrder": []}))).unwrap_err();
    assert_eq!(err, PatchError::BadSetElementOrder);
    assert_eq!(err.to_api_error().code, 400);
}

#[test]
fn ports_merge_by_container_port_only() {
    let add =
        patch_deployment(pod_spec_patch(json!({"containers": [{"name": "nginx", "ports": [{"containerPort": 443}]}]})))
            .unwrap();
    assert_eq!(
        add["spec"]["template"]["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 443}, {"containerPort": 80, "protocol": "TCP"}])
    );
    // Same port, other protocol: SMP's single merge key collapses them (kubernetes#39188).
    let udp = patch_deployment(pod_spec_patch(
        json!({"containers": [{"name": "nginx", "ports": [{"containerPort": 80, "protocol": "UDP"}]}]}),
    ))
    .unwrap();
    assert_eq!(
        udp["spec"]["template"]["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 80, "protocol": "UDP"}])
    );
}

#[test]
fn env_merges_by_name_and_patch_delete_removes() {
    let out = patch_deployment(pod_spec_patch(json!({"containers": [{
        "name": "nginx",
        "env": [{"name": "B", "value": "two"}, {"name": "A", "$patch": "delete"}, {"name": "C", "value": "3"}]
    }]})))
    .unwrap();
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "B", "value": "two"}, {"name": "C", "value": "3"}])
    );
}

#[test]
fn tolerations_are_replaced() {
    let out = patch_deployment(pod_spec_patch(json!({"tolerations": [{"key": "c", "operator": "Exists"}]}))).unwrap();
    assert_eq!(out["spec"]["template"]["spec"]["tolerations"], json!([{"key": "c", "operator": "Exists"}]));
}

#[test]
fn null_deletes_and_unmatched_nulls_are_dropped() {
    let out = patch_deployment(json!({
        "metadata": {"labels": {"tier": null, "missing": null, "new": "x"}},
        "spec": {"template": {"spec": {"nodeSelector": {"disk": "ssd", "zone": null}}}}
    }))
    .unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "new": "x"}));
    assert_eq!(out["spec"]["template"]["spec"]["nodeSelector"], json!({"disk": "ssd"}));
}

#[test]
fn patch_delete_and_replace_on_maps() {
    let out = patch_deployment(pod_spec_patch(json!({
        "securityContext": {"$patch": "delete"},
        "affinity": {"$patch": "delete"}
    })))
    .unwrap();
    assert_eq!(out["spec"]["template"]["spec"]["securityContext"], json!({}));
    assert!(out["spec"]["template"]["spec"].get("affinity").is_none());

    let out = patch_deployment(json!({"metadata": {"labels": {"$patch": "replace", "only": "me"}}})).unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"only": "me"}));

    let err = patch_deployment(json!({"metadata": {"labels": {"$patch": "merge"}}})).unwrap_err();
    assert_eq!(err.to_string(), "unknown patch type: merge in map: map[$patch:merge]");
    assert_eq!(err.code(), 500);

    let whole = patch_deployment(json!({"$patch": "replace", "kind": "Deployment"})).unwrap();
    assert_eq!(whole, json!({"kind": "Deployment"}));
}

#[test]
fn patch_replace_element_replaces_a_merge_list() {
    let out = patch_deployment(pod_spec_patch(json!({"containers": [
        {"$patch": "replace"},
        {"name": "only", "image": "busybox"}
    ]})))
    .unwrap();
    assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([{"name": "only", "image": "busybox"}]));
    let err = patch_deployment(pod_spec_patch(json!({"containers": [{"$patch": "merge"}]}))).unwrap_err();
    assert_eq!(err, PatchError::MergeListDirective);
}

#[test]
fn missing_merge_key_fails() {
    let err = patch_deployment(pod_spec_patch(json!({"containers": [{"image": "x"}]}))).unwrap_err();
    assert_eq!(err.to_string(), "map: map[image:x] does not contain declared merge key: name");
    let api = err.to_api_error();
    assert_eq!((api.code, api.reason.as_str()), (500, ""));
    let err = patch_deployment(pod_spec_patch(json!({"containers": [{"$patch": "delete"}]}))).unwrap_err();
    assert_eq!(err.to_string(), "map: map[$patch:delete] does not contain declared merge key: name");
}

#[test]
fn primitive_merge_lists_are_sets() {
    let out = patch_deployment(json!({"metadata": {"finalizers": ["c", "a"]}})).unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
    let out = patch_deployment(json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})).unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    let out = patch_deployment(json!({"metadata": {
        "$setElementOrder/finalizers": ["b", "c"],
        "$deleteFromPrimitiveList/finalizers": ["a"],
        "finalizers": ["c"]
    }}))
    .unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
    // Deleting from a replace list works too.
    let out = patch_deployment(pod_spec_patch(
        json!({"containers": [{"name": "nginx", "$deleteFromPrimitiveList/args": ["x"]}]}),
    ))
    .unwrap();
    assert!(out["spec"]["template"]["spec"]["containers"][0].get("args").is_none());
    let err = patch_deployment(json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}})).unwrap_err();
    assert_eq!(err, PatchError::BadPrimitiveList);
}

#[test]
fn retain_keys_clears_other_union_members() {
    let out = patch_deployment(json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}})).unwrap();
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));

    let out = patch_deployment(pod_spec_patch(json!({"volumes": [
        {"name": "data", "$retainKeys": ["hostPath", "name"], "hostPath": {"path": "/x"}}
    ]})))
    .unwrap();
    assert_eq!(out["spec"]["template"]["spec"]["volumes"], json!([{"name": "data", "hostPath": {"path": "/x"}}]));

    let err =
        patch_deployment(json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}})).unwrap_err();
    assert_eq!(err, PatchError::BadRetainKeys);
    assert_eq!(err.to_api_error().message, "invalid patch format of retainKeys");
}

#[test]
fn replace_strategy_on_a_struct() {
    let pdb = json!({"spec": {"selector": {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]}}});
    let patch = json!({"spec": {"selector": {"matchLabels": {"c": "3"}}}});
    let out = strategic_merge(&pdb, &patch, &schema("io.k8s.api.policy.v1.PodDisruptionBudget")).unwrap();
    assert_eq!(out["spec"]["selector"], json!({"matchLabels": {"c": "3"}}));
    // Deployment selectors have no strategy: they merge.
    let out = patch_deployment(json!({"spec": {"selector": {"matchLabels": {"c": "3"}}}})).unwrap();
    assert_eq!(out["spec"]["selector"], json!({"matchLabels": {"c": "3"}}));
}

#[test]
fn new_values_lose_nulls_and_directives() {
    let out = patch_deployment(pod_spec_patch(json!({
        "dnsConfig": {"options": [{"name": "ndots", "value": null}], "searches": null},
        "affinity": {"nodeAffinity": {"$patch": "replace"}, "podAffinity": {}}
    })))
    .unwrap();
    let spec = &out["spec"]["template"]["spec"];
    assert_eq!(spec["dnsConfig"], json!({"options": [{"name": "ndots"}]}));
    assert_eq!(spec["affinity"], json!({"podAffinity": {}}));
}

#[test]
fn type_changes_take_the_patch_value() {
    let out = patch_deployment(json!({"spec": {"replicas": "three", "strategy": "odd"}})).unwrap();
    assert_eq!(out["spec"]["replicas"], "three");
    assert_eq!(out["spec"]["strategy"], "odd");
}

#[test]
fn lists_of_lists_are_unprocessable() {
    let original = json!({"metadata": {"finalizers": [["a"]]}});
    let err =
        strategic_merge(&original, &json!({"metadata": {"finalizers": [["b"]]}}), &schema("io.k8s.api.core.v1.Pod"))
            .unwrap_err();
    assert_eq!(err, PatchError::ListOfLists);
    assert_eq!(err.to_api_error().code, 422);
}

#[test]
fn untyped_objects_merge_maps_and_replace_lists() {
    let original = json!({"spec": {"items": [1, 2], "nested": {"a": 1, "b": 2}}, "keep": true});
    let patch = json!({"spec": {"items": [3], "nested": {"b": null, "c": 3}}});
    let out = strategic_merge(&original, &patch, &untyped()).unwrap();
    assert_eq!(out, json!({"spec": {"items": [3], "nested": {"a": 1, "c": 3}}, "keep": true}));
}

#[test]
fn bad_patches_are_bad_requests() {
    let err = patch_deployment(json!([1])).unwrap_err();
    assert_eq!(err, PatchError::BadJsonDoc);
    assert_eq!(err.to_api_error().code, 400);
    let err = patch_deployment(json!({"spec": {"strategy": {"$retainKeys": "type"}}})).unwrap_err();
    assert_eq!(err, PatchError::BadRetainKeys);
}

#[test]
fn merge_keys_compare_type_and_value() {
    let original = json!({"spec": {"ports": [{"port": 80, "name": "http"}]}});
    let patch = json!({"spec": {"ports": [{"port": "80", "name": "text"}]}});
    let out = strategic_merge(&original, &patch, &schema("io.k8s.api.core.v1.Service")).unwrap();
    assert_eq!(out["spec"]["ports"].as_array().unwrap().len(), 2);
}

#[test]
fn hostile_patches_do_not_panic() {
    let pod = schema("io.k8s.api.core.v1.Pod");
    let cases = [
        json!({"spec": {"containers": [null]}}),
        json!({"spec": {"containers": [1, {"name": "a"}]}}),
        json!({"spec": {"containers": "x", "$setElementOrder/containers": [1]}}),
        json!({"spec": {"$setElementOrder/containers": "x"}}),
        json!({"spec": {"$setElementOrder/volumes": [{"name": "a"}], "volumes": [{"$patch": "replace"}]}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [{"a": 1}]}}),
        json!({"metadata": {"finalizers": [{"$patch": "delete"}]}}),
        json!({"$retainKeys": [1, null]}),
        json!({"$patch": 7}),
    ];
    let original =
        json!({"metadata": {"finalizers": ["x"]}, "spec": {"containers": [{"name": "a"}], "volumes": [{"name": "v"}]}});
    for patch in cases {
        let _ = strategic_merge(&original, &patch, &pod);
    }
    let mut deep = json!({"a": 1});
    for _ in 0..300 {
        deep = json!({"x": deep});
    }
    let _ = strategic_merge(&deep, &deep, &untyped());
}
