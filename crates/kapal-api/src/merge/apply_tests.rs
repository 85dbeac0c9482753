use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::schema::{builtin_schema, from_openapi_v3};

const T0: &str = "2025-05-01T10:00:00Z";
const T1: &str = "2025-05-01T11:00:00Z";
const T2: &str = "2025-05-01T12:00:00Z";

fn schema(name: &str) -> Arc<TypeSchema> {
    builtin_schema(name).unwrap()
}

fn configmaps() -> Arc<TypeSchema> {
    schema("io.k8s.api.core.v1.ConfigMap")
}

fn deployments() -> Arc<TypeSchema> {
    schema("io.k8s.api.apps.v1.Deployment")
}

fn cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "default"}, "data": data})
}

/// A stored object: what the server keeps after a create (uid set).
fn stored(mut object: Value) -> Value {
    object["metadata"]["uid"] = json!("7d3c");
    object["metadata"]["resourceVersion"] = json!("1");
    object
}

fn entries(object: &Value) -> Vec<(String, String, Value)> {
    object["metadata"]["managedFields"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap().to_string(),
                        e["operation"].as_str().unwrap().to_string(),
                        e["fieldsV1"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn apply_cm(live: Option<&Value>, data: Value, manager: &str, force: bool, now: &str) -> Result<Value, ApplyError> {
    apply(live, &cm(data), manager, force, &configmaps(), now)
}

#[test]
fn apply_creates_and_records_an_apply_entry() {
    let out = apply_cm(None, json!({"a": "1"}), "kubectl", false, T0).unwrap();
    assert_eq!(out["data"], json!({"a": "1"}));
    assert_eq!(
        out["metadata"]["managedFields"],
        json!([{
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "v1",
            "time": T0,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {"f:a": {}}}
        }])
    );
}

#[test]
fn deployment_apply_records_list_map_keys_with_defaults() {
    let config = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]}
            }
        }
    });
    let out = apply(None, &config, "kubectl", false, &deployments(), T0).unwrap();
    assert_eq!(
        out["metadata"]["managedFields"][0]["fieldsV1"],
        json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                        ".": {},
                        "f:image": {},
                        "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                    }}}
                }
            }
        })
    );
    assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["ports"], json!([{"containerPort": 80}]));
}

#[test]
fn conflict_with_client_side_apply_manager() {
    let mut live = stored(cm(json!({"a": "1"})));
    track_update(None, &mut live, "kubectl-client-side-apply", None, &configmaps(), T0);
    let err = apply_cm(Some(&live), json!({"a": "2"}), "other", false, T1).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using v1: .data.a"#
    );
    let status = err.to_api_error();
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        status.causes,
        vec![Cause::new("FieldManagerConflict", ".data.a", r#"conflict with "kubectl-client-side-apply" using v1"#)]
    );
}

#[test]
fn same_value_is_shared_and_force_takes_ownership() {
    let mut live = stored(cm(json!({"a": "1", "b": "2"})));
    track_update(None, &mut live, "kubectl-create", None, &configmaps(), T0);
    assert_eq!(
        entries(&live),
        vec![("kubectl-create".into(), "Update".into(), json!({"f:data": {".": {}, "f:a": {}, "f:b": {}}}))]
    );

    // Applying the value already there does not conflict: both own it.
    let shared = apply_cm(Some(&live), json!({"a": "1"}), "applier", false, T1).unwrap();
    assert_eq!(shared["data"], json!({"a": "1", "b": "2"}));
    assert_eq!(
        entries(&shared),
        vec![
            ("applier".into(), "Apply".into(), json!({"f:data": {"f:a": {}}})),
            ("kubectl-create".into(), "Update".into(), json!({"f:data": {".": {}, "f:a": {}, "f:b": {}}})),
        ]
    );
    // Nothing changed, so the applier gets no time.
    assert!(shared["metadata"]["managedFields"][0].get("time").is_none());

    // A changed value conflicts; force moves the field.
    assert!(
        matches!(apply_cm(Some(&shared), json!({"a": "9"}), "applier", false, T2), Err(ApplyError::Conflicts(c)) if c.len() == 1)
    );
    let forced = apply_cm(Some(&shared), json!({"a": "9"}), "applier", true, T2).unwrap();
    assert_eq!(forced["data"], json!({"a": "9", "b": "2"}));
    assert_eq!(
        entries(&forced),
        vec![
            ("applier".into(), "Apply".into(), json!({"f:data": {"f:a": {}}})),
            ("kubectl-create".into(), "Update".into(), json!({"f:data": {".": {}, "f:b": {}}})),
        ]
    );
    assert_eq!(forced["metadata"]["managedFields"][0]["time"], T2);
}

#[test]
fn fields_no_longer_applied_are_removed_unless_owned_elsewhere() {
    let first = apply_cm(None, json!({"a": "1", "b": "2", "c": "3"}), "applier", false, T0).unwrap();
    let mut first = stored(first);
    // Someone else updates c: they own it now.
    let mut edited = first.clone();
    edited["data"]["c"] = json!("33");
    track_update(Some(&first), &mut edited, "kubectl-edit", None, &configmaps(), T1);
    first = edited;

    let second = apply_cm(Some(&first), json!({"a": "1"}), "applier", false, T2).unwrap();
    assert_eq!(second["data"], json!({"a": "1", "c": "33"}));
    assert_eq!(
        entries(&second),
        vec![
            ("applier".into(), "Apply".into(), json!({"f:data": {"f:a": {}}})),
            ("kubectl-edit".into(), "Update".into(), json!({"f:data": {"f:c": {}}})),
        ]
    );

    // The applier's last key goes; the editor's stays.
    let third = apply_cm(Some(&stored(second)), json!({}), "applier", false, T2).unwrap();
    assert_eq!(third["data"], json!({"c": "33"}));
}

#[test]
fn containers_of_two_appliers_and_their_conflicts() {
    let deploy = |containers: Value| {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": containers}}}
        })
    };
    let s = deployments();
    let a = apply(None, &deploy(json!([{"name": "web", "image": "nginx:1"}])), "a", false, &s, T0).unwrap();
    let b =
        apply(Some(&stored(a)), &deploy(json!([{"name": "sidecar", "image": "envoy"}])), "b", false, &s, T1).unwrap();
    // Results hold the empty structs Go encodes (`resources: {}`), as upstream's do.
    let containers = &b["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        containers,
        &json!([{"name": "web", "image": "nginx:1", "resources": {}}, {"name": "sidecar", "image": "envoy", "resources": {}}])
    );

    let err = apply(Some(&b), &deploy(json!([{"name": "web", "image": "nginx:2"}])), "b", false, &s, T2).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "a": .spec.template.spec.containers[name="web"].image"#
    );

    // "a" changes its own image and stops applying nothing else: the sidecar stays, b's.
    let a2 = apply(Some(&b), &deploy(json!([{"name": "web", "image": "nginx:2"}])), "a", false, &s, T2).unwrap();
    assert_eq!(
        a2["spec"]["template"]["spec"]["containers"],
        json!([{"name": "web", "image": "nginx:2", "resources": {}}, {"name": "sidecar", "image": "envoy", "resources": {}}])
    );
    // "b" stops applying its sidecar: it is pruned.
    let b2 = apply(Some(&a2), &deploy(json!([])), "b", false, &s, T2).unwrap();
    assert_eq!(
        b2["spec"]["template"]["spec"]["containers"],
        json!([{"name": "web", "image": "nginx:2", "resources": {}}])
    );
}

#[test]
fn several_conflicts_are_grouped_by_manager() {
    let mut live = stored(cm(json!({"a": "1", "b": "2", "c": "3"})));
    track_update(None, &mut live, "zeta", None, &configmaps(), T0);
    let mut next = live.clone();
    next["data"]["c"] = json!("4");
    track_update(Some(&live), &mut next, "alpha", None, &configmaps(), T1);
    let err = apply_cm(Some(&next), json!({"a": "x", "b": "y", "c": "z"}), "me", false, T2).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 3 conflicts: conflicts with \"alpha\" using v1:\n- .data.c\nconflicts with \"zeta\" using v1:\n- .data.a\n- .data.b"
    );
    assert_eq!(err.to_api_error().causes.len(), 3);
}

#[test]
fn track_update_moves_ownership_and_forgets_removed_fields() {
    let s = configmaps();
    let mut created = stored(cm(json!({"a": "1", "b": "2"})));
    track_update(None, &mut created, "creator", None, &s, T0);

    let mut updated = created.clone();
    updated["data"] = json!({"a": "10"});
    track_update(Some(&created), &mut updated, "editor", None, &s, T1);
    assert_eq!(
        entries(&updated),
        vec![
            ("creator".into(), "Update".into(), json!({"f:data": {}})),
            ("editor".into(), "Update".into(), json!({"f:data": {"f:a": {}}})),
        ]
    );

    // A write that changes nothing keeps every entry and time.
    let mut same = updated.clone();
    track_update(Some(&updated), &mut same, "noop", None, &s, T2);
    assert_eq!(same["metadata"]["managedFields"], updated["metadata"]["managedFields"]);

    // Status writes are recorded with their subresource.
    let nodes = schema("io.k8s.api.core.v1.Node");
    let mut node = stored(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "labels": {"a": "b"}}}));
    track_update(None, &mut node, "kubelet", None, &nodes, T0);
    let mut with_status = node.clone();
    with_status["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
    track_update(Some(&node), &mut with_status, "kubelet", Some("status"), &nodes, T1);
    let status_entry = &with_status["metadata"]["managedFields"][1];
    assert_eq!(status_entry["subresource"], "status");
    assert_eq!(
        status_entry["fieldsV1"],
        json!({"f:status": {"f:conditions": {".": {}, "k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}}}})
    );
    // Managed fields sent to a subresource are ignored.
    let mut sneaky = with_status.clone();
    sneaky["metadata"]["managedFields"] = json!([]);
    track_update(Some(&with_status), &mut sneaky, "kubelet", Some("status"), &nodes, T2);
    assert_eq!(sneaky["metadata"]["managedFields"], with_status["metadata"]["managedFields"]);
}

#[test]
fn create_tracking_matches_go_zero_objects() {
    let s = deployments();
    let mut created = stored(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}}
        }
    }));
    track_update(None, &mut created, "kubectl-create", None, &s, T0);
    assert_eq!(
        created["metadata"]["managedFields"][0]["fieldsV1"],
        json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}}, "f:type": {}},
                "f:template": {
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}, "f:resources": {}}}}
                }
            }
        })
    );
}

#[test]
fn reset_and_untracked_objects() {
    let s = configmaps();
    let mut created = stored(cm(json!({"a": "1"})));
    track_update(None, &mut created, "creator", None, &s, T0);
    let mut reset = created.clone();
    reset["metadata"]["managedFields"] = json!([]);
    track_update(Some(&created), &mut reset, "editor", None, &s, T1);
    assert!(reset["metadata"].get("managedFields").is_none());
    // An existing object without managed fields is not tracked by updates…
    let mut edited = reset.clone();
    edited["data"]["b"] = json!("2");
    track_update(Some(&reset), &mut edited, "editor", None, &s, T1);
    assert!(edited["metadata"].get("managedFields").is_none());
    // …but the first apply attributes what is there to before-first-apply.
    let applied = apply_cm(Some(&edited), json!({"a": "1"}), "applier", false, T2).unwrap();
    assert_eq!(
        entries(&applied),
        vec![
            ("applier".into(), "Apply".into(), json!({"f:data": {"f:a": {}}})),
            ("before-first-apply".into(), "Update".into(), json!({"f:data": {".": {}, "f:a": {}, "f:b": {}}})),
        ]
    );
    // Managed fields written by the client replace the stored ones.
    let mut rewritten = applied.clone();
    rewritten["metadata"]["managedFields"] = json!([{
        "manager": "someone", "operation": "Update", "apiVersion": "v1", "time": T0,
        "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:b": {}}}
    }]);
    track_update(Some(&applied), &mut rewritten, "editor", None, &s, T2);
    assert_eq!(entries(&rewritten), vec![("someone".into(), "Update".into(), json!({"f:data": {"f:b": {}}}))]);
}

#[test]
fn update_entries_are_capped_into_ancient_changes() {
    let s = configmaps();
    let mut object = stored(cm(json!({})));
    track_update(None, &mut object, "creator", None, &s, "2025-05-01T00:00:00Z");
    for i in 0..11 {
        let mut next = object.clone();
        next["data"][format!("k{i}")] = json!("v");
        track_update(Some(&object), &mut next, &format!("m{i:02}"), None, &s, &format!("2025-05-01T01:{i:02}:00Z"));
        object = next;
    }
    let list = entries(&object);
    assert_eq!(list.len(), 10);
    assert_eq!(list[0].0, "ancient-changes");
    assert_eq!(list[0].2, json!({"f:data": {".": {}, "f:k0": {}, "f:k1": {}}}));
    assert_eq!(list[1].0, "m02");
}

#[test]
fn kubectl_upgrades_from_client_side_apply() {
    let s = configmaps();
    let last = cm(json!({"a": "1"})).to_string();
    let mut live = stored(cm(json!({"a": "1"})));
    live["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/last-applied-configuration": last});
    track_update(None, &mut live, "kubectl-client-side-apply", None, &s, T0);

    // kubectl's server-side apply sends the manifest without the annotation.
    let config = cm(json!({"a": "2"}));
    // Another manager name gets the conflict…
    assert!(apply(Some(&live), &config, "other", false, &s, T1).is_err());
    // …kubectl's server-side apply takes over the fields the annotation claims, and the
    // annotation follows the applied configuration.
    let out = apply(Some(&live), &config, "kubectl", false, &s, T1).unwrap();
    assert_eq!(out["data"], json!({"a": "2"}));
    assert_eq!(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "{\"apiVersion\":\"v1\",\"data\":{\"a\":\"2\"},\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"cm\",\"namespace\":\"default\"}}\n"
    );
    assert_eq!(entries(&out)[0], ("kubectl".into(), "Apply".into(), json!({"f:data": {"f:a": {}}})));

    // A field changed since the last client-side apply is not claimed by the annotation.
    let mut drifted = live.clone();
    drifted["data"]["a"] = json!("5");
    let mut tracked = drifted.clone();
    track_update(Some(&live), &mut tracked, "kubectl-edit", None, &s, T1);
    let err = apply(Some(&tracked), &config, "kubectl", false, &s, T2).unwrap_err();
    assert_eq!(err.to_string(), r#"Apply failed with 1 conflict: conflict with "kubectl-edit" using v1: .data.a"#);
}

#[test]
fn sets_atomic_lists_and_reset_fields() {
    let pods = schema("io.k8s.api.core.v1.Pod");
    let config = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "finalizers": ["example.com/f"]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], "tolerations": [{"operator": "Exists"}], "nodeSelector": {"a": "b"}},
        "status": {"phase": "Running"}
    });
    let scope = WriteScope { subresource: None, reset_fields: &["status"] };
    let out = apply_with(None, &config, "mgr", false, &pods, T0, &scope).unwrap();
    assert_eq!(
        out["metadata"]["managedFields"][0]["fieldsV1"],
        json!({
            "f:metadata": {"f:finalizers": {"v:\"example.com/f\"": {}}},
            "f:spec": {
                "f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}},
                "f:nodeSelector": {},
                "f:tolerations": {}
            }
        })
    );
}

#[test]
fn invalid_configurations_are_rejected() {
    let s = deployments();
    let mut config = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "ns"},
        "spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}, "bogus": 1}
    });
    let err = apply(None, &config, "m", false, &s, T0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to create typed patch object (ns/web; apps/v1, Kind=Deployment): errors:\n  .spec.template.spec.containers: duplicate entries for key [name=\"a\"]\n  .spec.bogus: field not declared in schema"
    );
    assert_eq!(err.to_api_error().code, 500);

    config["metadata"]["managedFields"] = json!([]);
    assert_eq!(apply(None, &config, "m", false, &s, T0).unwrap_err(), ApplyError::ManagedFieldsSet);
    assert_eq!(apply(None, &json!("x"), "m", false, &s, T0).unwrap_err().to_api_error().code, 400);

    let sa = schema("io.k8s.api.core.v1.ServiceAccount");
    let err = apply(None, &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "s"}, "secrets": [{"namespace": "x"}]}), "m", false, &sa, T0)
        .unwrap_err();
    assert!(err.to_string().contains("omits key field \"name\""), "{err}");
}

#[test]
fn custom_resources_with_list_map_keys() {
    let crd = from_openapi_v3(&json!({
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {
            "workers": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "size": {"type": "integer"}}}
            },
            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }}}
    }));
    let obj = |workers: Value| json!({"apiVersion": "example.com/v1", "kind": "Pool", "metadata": {"name": "p"}, "spec": {"workers": workers, "extra": {"x": {"y": 1}}}});
    let first = apply(None, &obj(json!([{"name": "a", "size": 1}])), "one", false, &crd, T0).unwrap();
    assert_eq!(
        first["metadata"]["managedFields"][0]["fieldsV1"],
        json!({"f:spec": {"f:extra": {"f:x": {".": {}, "f:y": {}}}, "f:workers": {"k:{\"name\":\"a\"}": {".": {}, "f:name": {}, "f:size": {}}}}})
    );
    let second = apply(Some(&stored(first)), &obj(json!([{"name": "b", "size": 2}])), "two", false, &crd, T1).unwrap();
    assert_eq!(second["spec"]["workers"], json!([{"name": "a", "size": 1}, {"name": "b", "size": 2}]));
    let err = apply(Some(&second), &obj(json!([{"name": "a", "size": 5}])), "two", false, &crd, T2).unwrap_err();
    assert_eq!(err.to_string(), r#"Apply failed with 1 conflict: conflict with "one": .spec.workers[name="a"].size"#);
}

#[test]
fn hostile_managed_fields_do_not_panic() {
    let s = configmaps();
    for bad in [
        json!("x"),
        json!([1]),
        json!([{"operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": 3}}]),
    ] {
        let mut live = stored(cm(json!({"a": "1"})));
        live["metadata"]["managedFields"] = bad;
        let _ = apply_cm(Some(&live), json!({"a": "2"}), "m", true, T0).unwrap();
        let mut next = live.clone();
        track_update(Some(&live), &mut next, "m", None, &s, T0);
    }
    let mut not_object = json!(5);
    track_update(None, &mut not_object, "m", None, &s, T0);
    assert_eq!(not_object, json!(5));
}

#[test]
fn reapplying_the_same_configuration_is_a_no_op() {
    let s = deployments();
    let config = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
    });
    let mut first = stored(apply(None, &config, "kubectl", false, &s, T0).unwrap());
    // The server stores objects without Go's empty structs; a no-op must not add them back.
    first["spec"].as_object_mut().unwrap().remove("strategy");
    first.as_object_mut().unwrap().remove("status");
    let again = apply(Some(&first), &config, "kubectl", false, &s, T1).unwrap();
    assert_eq!(again, first);
    assert_eq!(again["metadata"]["managedFields"][0]["time"], T0);
}
