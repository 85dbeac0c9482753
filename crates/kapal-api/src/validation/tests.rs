//! End-to-end checks through the public entry points, with the messages a kubectl user sees.

use serde_json::{Value, json};

use super::*;
use crate::status::ApiError;

fn lines(causes: &[Cause]) -> Vec<String> {
    causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
}

fn deployment(selector: Value, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 1, "selector": selector,
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
    })
}

#[test]
fn configmap_with_bad_name_reads_like_kube_apiserver() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name", "namespace": "default"}});
    let causes = validate("", "ConfigMap", &cm);
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].reason, "FieldValueInvalid");
    assert_eq!(causes[0].field, "metadata.name");
    assert!(causes[0].message.starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"));
    let err = ApiError::invalid("", "ConfigMap", "Bad_Name", causes);
    assert_eq!(
        err.message,
        "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    );
}

#[test]
fn deployment_with_mismatched_selector() {
    let d = deployment(json!({"matchLabels": {"app": "api"}}), json!({"app": "web"}));
    assert_eq!(
        lines(&validate("apps", "Deployment", &d)),
        [
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"
        ]
    );
    let ok = deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "web", "tier": "front"}));
    assert!(validate("apps", "Deployment", &ok).is_empty());
}

#[test]
fn pod_with_two_containers_named_alike() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "a", "image": "busybox"}, {"name": "a", "image": "busybox"}]}});
    let causes = validate("", "Pod", &pod);
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].reason, "FieldValueDuplicate");
    assert_eq!(causes[0].field, "spec.containers[1].name");
    assert_eq!(causes[0].message, "Duplicate value: \"a\"");
}

#[test]
fn pods_may_not_be_created_with_ephemeral_containers() {
    let pod = json!({"metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "a", "image": "busybox"}], "ephemeralContainers": [{"name": "dbg", "image": "busybox"}]}});
    assert_eq!(lines(&validate("", "Pod", &pod)), ["spec.ephemeralContainers: Forbidden: cannot be set on create"]);
}

#[test]
fn deployment_selector_is_immutable_on_update() {
    let old = deployment(json!({"matchLabels": {"app": "web"}}), json!({"app": "web"}));
    let new = deployment(json!({"matchLabels": {"app": "web", "v": "2"}}), json!({"app": "web", "v": "2"}));
    let causes = validate_update("apps", "Deployment", &new, &old);
    assert_eq!(
        lines(&causes),
        [
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"v\":\"2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
        ]
    );
    let mut scaled = old.clone();
    scaled["spec"]["replicas"] = json!(5);
    assert!(validate_update("apps", "Deployment", &scaled, &old).is_empty());
}

#[test]
fn pod_spec_changes_are_forbidden_on_update() {
    let old = json!({"metadata": {"name": "p", "namespace": "default", "uid": "1"},
        "spec": {"containers": [{"name": "a", "image": "busybox", "command": ["sleep", "1"]}]}});
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("busybox:1.36");
    assert!(validate_update("", "Pod", &new, &old).is_empty());
    new["spec"]["containers"][0]["command"] = json!(["sleep", "2"]);
    let causes = validate_update("", "Pod", &new, &old);
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].field, "spec");
    assert!(
        causes[0]
            .message
            .starts_with("Forbidden: pod updates may not change fields other than `spec.containers[*].image`")
    );
}

#[test]
fn metadata_identity_is_immutable_on_update() {
    let old = json!({"metadata": {"name": "a", "namespace": "default", "uid": "u1"}});
    let new = json!({"metadata": {"name": "a", "namespace": "default", "uid": "u2"}});
    assert_eq!(
        lines(&validate_update("", "ConfigMap", &new, &old)),
        ["metadata.uid: Invalid value: \"u2\": field is immutable"]
    );
}

#[test]
fn immutable_secrets_keep_their_data() {
    let old = json!({"metadata": {"name": "s", "namespace": "default"}, "immutable": true, "data": {"k": "YQ=="}});
    let mut new = old.clone();
    new["data"]["k"] = json!("Yg==");
    assert_eq!(
        lines(&validate_update("", "Secret", &new, &old)),
        ["data: Forbidden: field is immutable when `immutable` is set"]
    );
}

#[test]
fn service_cluster_ip_is_immutable() {
    let old = json!({"metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"], "ports": [{"port": 80}]}});
    let mut new = old.clone();
    new["spec"]["clusterIP"] = json!("10.43.0.21");
    new["spec"]["clusterIPs"] = json!(["10.43.0.21"]);
    assert_eq!(
        lines(&validate_update("", "Service", &new, &old)),
        ["spec.clusterIPs[0]: Invalid value: []string{\"10.43.0.21\"}: may not change once set"]
    );
}

#[test]
fn job_template_is_immutable() {
    let job = json!({"metadata": {"name": "j", "namespace": "default"}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
    assert!(validate("batch", "Job", &job).is_empty());
    let mut new = job.clone();
    new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("alpine");
    let causes = validate_update("batch", "Job", &new, &job);
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].field, "spec.template");
}

#[test]
fn namespace_and_service_name_rules() {
    let ns = json!({"metadata": {"name": "team.a"}});
    assert_eq!(
        lines(&validate("", "Namespace", &ns)),
        ["metadata.name: Invalid value: \"team.a\": must not contain dots"]
    );
    let svc = json!({"metadata": {"name": "9web", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}});
    assert!(validate("", "Service", &svc)[0].message.contains("a DNS-1035 label must consist of"));
    let scoped = json!({"metadata": {"name": "x", "namespace": "default"}});
    assert_eq!(lines(&validate("", "Namespace", &scoped)), ["metadata.namespace: Forbidden: not allowed on this type"]);
}

#[test]
fn builtin_finalizers_must_be_standard_or_qualified() {
    let cm = json!({"metadata": {"name": "c", "namespace": "default", "finalizers": ["mine"]}});
    assert_eq!(
        lines(&validate("", "ConfigMap", &cm)),
        [
            "metadata.finalizers[0]: Invalid value: \"mine\": name is neither a standard finalizer name nor is it fully qualified"
        ]
    );
}

#[test]
fn unknown_kinds_are_left_to_the_caller() {
    let widget = json!({"metadata": {"name": "Bad_Name"}});
    assert!(!is_known("example.com", "Widget"));
    assert!(validate("example.com", "Widget", &widget).is_empty());
    assert!(validate_update("example.com", "Widget", &widget, &widget).is_empty());
    assert!(!validate_object_meta(&widget, true, name_rule("example.com", "Widget")).is_empty());
    assert!(is_known("policy", "PodDisruptionBudget"));
}

#[test]
fn crd_with_wrong_name() {
    let crd = json!({"metadata": {"name": "widgets.example.org"}, "spec": {"group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}}]}});
    assert_eq!(
        lines(&validate("apiextensions.k8s.io", "CustomResourceDefinition", &crd)),
        ["metadata.name: Invalid value: \"widgets.example.org\": must be spec.names.plural+\".\"+spec.group"]
    );
}

/// Replaces, one at a time, every value of `v` by values of every JSON type and validates the
/// result: no combination may panic.
fn mutate_everywhere(v: &Value, apply: &mut dyn FnMut(&Value)) {
    let junk = [json!(null), json!(true), json!(-1), json!(1.5), json!("x"), json!([1, "a", null]), json!({"a": 1})];
    fn paths(v: &Value, prefix: String, out: &mut Vec<String>) {
        out.push(prefix.clone());
        match v {
            Value::Object(m) => m
                .iter()
                .for_each(|(k, x)| paths(x, format!("{prefix}/{}", k.replace('~', "~0").replace('/', "~1")), out)),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| paths(x, format!("{prefix}/{i}"), out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    paths(v, String::new(), &mut all);
    for p in all {
        for j in &junk {
            let mut copy = v.clone();
            if let Some(slot) = copy.pointer_mut(&p) {
                *slot = j.clone();
            }
            apply(&copy);
        }
    }
}

#[test]
fn no_input_makes_validation_panic() {
    let samples = [
        (
            "",
            "Pod",
            json!({"metadata": {"name": "p", "namespace": "d", "labels": {"a": "b"}, "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "n", "uid": "u"}]},
            "spec": {"containers": [{"name": "a", "image": "b", "ports": [{"containerPort": 80, "hostPort": 80}],
                "env": [{"name": "E", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['x']"}}}],
                "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}},
                "volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "a"}],
                "livenessProbe": {"httpGet": {"port": 80, "httpHeaders": [{"name": "X"}]}},
                "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}],
                "volumes": [{"name": "v", "projected": {"sources": [{"configMap": {"name": "c", "items": [{"key": "k", "path": "p"}]}}]}}],
                "tolerations": [{"key": "k", "operator": "Exists"}], "dnsConfig": {"nameservers": ["1.1.1.1"]},
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "z", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"a": "b"}}}]}}),
        ),
        (
            "",
            "Service",
            json!({"metadata": {"name": "s", "namespace": "d"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.0.0.1", "fd00::1"],
            "ports": [{"port": 80, "nodePort": 30000, "targetPort": "http"}], "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10}}, "loadBalancerSourceRanges": ["10.0.0.0/8"]}}),
        ),
        (
            "",
            "Secret",
            json!({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}, "stringData": {"tls.key": "k"}}),
        ),
        (
            "apps",
            "Deployment",
            deployment(
                json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}),
                json!({"app": "web"}),
            ),
        ),
        (
            "apps",
            "StatefulSet",
            json!({"metadata": {"name": "s", "namespace": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}, "template": {"metadata": {"labels": {"a": "b"}}}}}),
        ),
        (
            "batch",
            "CronJob",
            json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {"schedule": "*/5 * * * *", "timeZone": "UTC",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}}}}),
        ),
        (
            "networking.k8s.io",
            "Ingress",
            json!({"metadata": {"name": "i", "namespace": "d"}, "spec": {"tls": [{"hosts": ["*.a.com"]}],
            "rules": [{"host": "a.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"name": "http"}}}}]}}]}}),
        ),
        (
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            json!({"metadata": {"name": "ws.e.com"}, "spec": {"group": "e.com", "scope": "Cluster",
            "names": {"plural": "ws", "kind": "W"}, "versions": [{"name": "v1", "storage": true, "schema": {"openAPIV3Schema": {"type": "object",
                "properties": {"a": {"type": "array", "items": {"type": "string"}}}}}}]}}),
        ),
        (
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "s", "namespace": "d"}]}),
        ),
    ];
    for (group, kind, obj) in samples {
        mutate_everywhere(&obj, &mut |mutated| {
            let _ = validate(group, kind, mutated);
            let _ = validate_update(group, kind, mutated, &obj);
            let _ = validate_update(group, kind, &obj, mutated);
        });
    }
}

#[test]
fn valid_samples_stay_valid() {
    let sts = json!({"metadata": {"name": "db", "namespace": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "serviceName": "db",
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    assert!(validate("apps", "StatefulSet", &sts).is_empty());
    let lease = json!({"metadata": {"name": "kapal-scheduler", "namespace": "kube-system"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}});
    assert!(validate("coordination.k8s.io", "Lease", &lease).is_empty());
    let role = json!({"metadata": {"name": "system:reader", "namespace": "d"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]});
    assert!(validate("rbac.authorization.k8s.io", "Role", &role).is_empty());
    let pvc = json!({"metadata": {"name": "data", "namespace": "d"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    assert!(validate("", "PersistentVolumeClaim", &pvc).is_empty());
    let node = json!({"metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}}, "spec": {"podCIDRs": ["10.42.0.0/24"]}});
    assert!(validate("", "Node", &node).is_empty());
}
