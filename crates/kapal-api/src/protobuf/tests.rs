use serde_json::{Value, json};

use super::layout::{Kind, Special, all_kinds, all_messages, message_for_kind};
use super::{MAGIC, ProtobufError, decode_object};

/// A tiny protobuf encoder, enough to build test bodies.
#[derive(Default, Clone)]
struct Enc(Vec<u8>);

impl Enc {
    fn new() -> Self {
        Enc::default()
    }

    fn key(self, tag: u32, wire_type: u8) -> Self {
        self.raw_varint((u64::from(tag) << 3) | u64::from(wire_type))
    }

    fn raw_varint(mut self, mut v: u64) -> Self {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }

    fn varint(self, tag: u32, v: u64) -> Self {
        self.key(tag, 0).raw_varint(v)
    }

    fn int(self, tag: u32, v: i64) -> Self {
        self.varint(tag, v as u64)
    }

    fn bytes(self, tag: u32, b: &[u8]) -> Self {
        let mut e = self.key(tag, 2).raw_varint(b.len() as u64);
        e.0.extend_from_slice(b);
        e
    }

    fn str(self, tag: u32, s: &str) -> Self {
        self.bytes(tag, s.as_bytes())
    }

    fn msg(self, tag: u32, m: Enc) -> Self {
        self.bytes(tag, &m.0)
    }

    fn double(self, tag: u32, v: f64) -> Self {
        let mut e = self.key(tag, 1);
        e.0.extend_from_slice(&v.to_bits().to_le_bytes());
        e
    }

    fn entry(self, tag: u32, k: &str, v: &str) -> Self {
        self.msg(tag, Enc::new().str(1, k).str(2, v))
    }

    fn entry_msg(self, tag: u32, k: &str, v: Enc) -> Self {
        self.msg(tag, Enc::new().str(1, k).msg(2, v))
    }
}

fn envelope(api_version: &str, kind: &str, raw: Enc) -> Vec<u8> {
    let unknown = Enc::new().msg(1, Enc::new().str(1, api_version).str(2, kind)).msg(2, raw).str(3, "").str(4, "");
    [&MAGIC[..], &unknown.0].concat()
}

fn decode(api_version: &str, kind: &str, raw: Enc) -> Value {
    decode_object(&envelope(api_version, kind, raw)).unwrap()
}

/// ObjectMeta as Go writes it for a new object: every non-pointer field, zero or not.
fn meta(name: &str) -> Enc {
    Enc::new().str(1, name).str(2, "").str(3, "").str(4, "").str(5, "").str(6, "").varint(7, 0).msg(8, Enc::new())
}

fn int_or_string_int(v: i64) -> Enc {
    Enc::new().varint(1, 0).int(2, v).str(3, "")
}

fn int_or_string_str(s: &str) -> Enc {
    Enc::new().varint(1, 1).varint(2, 0).str(3, s)
}

// ---------------------------------------------------------------------------------------------
// Real kubectl 1.33 bodies, each next to the JSON that `kubectl create ... --dry-run=client
// -o json` prints for the same command (Kubernetes' JSON encoding of the same Go object).
// ---------------------------------------------------------------------------------------------

macro_rules! capture {
    ($name:literal) => {
        (
            $name,
            &include_bytes!(concat!("testdata/", $name, ".pb"))[..],
            include_str!(concat!("testdata/", $name, ".json")),
        )
    };
}

#[test]
fn kubectl_bodies_decode_to_the_json_kubectl_would_send() {
    let cases = [
        capture!("deployment"),
        capture!("deployment_zero"),
        capture!("namespace"),
        capture!("configmap"),
        capture!("secret"),
        capture!("service_clusterip"),
        capture!("service_nodeport"),
        capture!("job"),
        capture!("cronjob"),
        capture!("rolebinding"),
        capture!("clusterrole"),
        capture!("quota"),
        capture!("pdb"),
        capture!("pdb2"),
        capture!("priorityclass"),
        capture!("ingress"),
    ];
    let mut failures = Vec::new();
    for (name, body, json) in cases {
        let want: Value = serde_json::from_str(json).unwrap();
        match decode_object(body) {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!("{name}:\n  got  {got}\n  want {want}")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn kubectl_token_and_autoscale_bodies_decode() {
    let token = decode_object(include_bytes!("testdata/token.pb")).unwrap();
    assert_eq!(
        token,
        json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "metadata": {"creationTimestamp": null},
            "spec": {"expirationSeconds": 3600},
            "status": {"expirationTimestamp": null},
        })
    );
    let hpa = decode_object(include_bytes!("testdata/hpa.pb")).unwrap();
    assert_eq!(
        hpa,
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "creationTimestamp": null},
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}}}],
            },
            "status": {"desiredReplicas": 0},
        })
    );
}

#[test]
fn keys_come_in_kubernetes_order() {
    let got = decode_object(include_bytes!("testdata/deployment.pb")).unwrap();
    assert_eq!(
        got.to_string(),
        r#"{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"name":"web","creationTimestamp":null,"labels":{"app":"web"}},"spec":{"replicas":2,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"creationTimestamp":null,"labels":{"app":"web"}},"spec":{"containers":[{"name":"nginx","image":"nginx","resources":{}}]}},"strategy":{}},"status":{}}"#
    );
}

#[test]
fn every_prefix_of_a_real_body_fails_cleanly() {
    let body = include_bytes!("testdata/deployment.pb");
    for len in 0..body.len() {
        // Cutting a body short either fails or (at a field boundary) yields less; it never panics.
        let _ = decode_object(&body[..len]);
    }
    assert!(decode_object(&body[..body.len() - 1]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Hand-built bodies (tags from the upstream generated.proto files).
// ---------------------------------------------------------------------------------------------

#[test]
fn namespace_with_only_a_name() {
    let got = decode("v1", "Namespace", Enc::new().msg(1, Enc::new().str(1, "team-a")));
    assert_eq!(got, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}));
}

#[test]
fn configmap_data_binary_data_and_labels() {
    let raw = Enc::new()
        .msg(1, meta("settings").entry(11, "app", "web").entry(11, "tier", "front"))
        .entry(2, "mode", "fast")
        .entry(2, "empty", "")
        .msg(3, Enc::new().str(1, "blob").bytes(2, &[0, 1, 2, 0xff]))
        .varint(4, 1);
    assert_eq!(
        decode("v1", "ConfigMap", raw),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "creationTimestamp": null, "labels": {"app": "web", "tier": "front"}},
            "immutable": true,
            "data": {"mode": "fast", "empty": ""},
            "binaryData": {"blob": "AAEC/w=="},
        })
    );
}

#[test]
fn secret_bytes_become_base64() {
    let raw = Enc::new()
        .msg(1, meta("creds"))
        .msg(2, Enc::new().str(1, "password").bytes(2, b"hunter2"))
        .msg(2, Enc::new().str(1, "token").bytes(2, b""))
        .str(3, "kubernetes.io/basic-auth")
        .varint(5, 0);
    assert_eq!(
        decode("v1", "Secret", raw),
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "creds", "creationTimestamp": null},
            "immutable": false,
            "data": {"password": "aHVudGVyMg==", "token": ""},
            "type": "kubernetes.io/basic-auth",
        })
    );
}

/// `kubectl create deployment web --image=nginx --replicas=2` as Go encodes it: every
/// non-pointer field is written, zero or not.
#[test]
fn deployment_like_kubectl_create() {
    let labels = || Enc::new().str(1, "app").str(2, "web");
    let container = Enc::new()
        .str(1, "nginx")
        .str(2, "nginx")
        .str(5, "")
        .msg(8, Enc::new())
        .str(13, "")
        .str(14, "")
        .varint(16, 0)
        .varint(17, 0)
        .varint(18, 0)
        .str(20, "");
    let pod_spec = Enc::new()
        .msg(2, container)
        .str(3, "")
        .str(6, "")
        .str(8, "")
        .str(9, "")
        .str(10, "")
        .varint(11, 0)
        .varint(12, 0)
        .varint(13, 0)
        .str(16, "")
        .str(17, "")
        .str(19, "");
    let spec = Enc::new()
        .varint(1, 2)
        .msg(2, Enc::new().msg(1, labels()))
        .msg(3, Enc::new().msg(1, meta("").msg(11, labels())).msg(2, pod_spec))
        .msg(4, Enc::new().str(1, ""))
        .varint(5, 0)
        .varint(7, 0);
    let status = Enc::new().varint(1, 0).varint(2, 0).varint(3, 0).varint(4, 0).varint(5, 0).varint(7, 0);
    let raw = Enc::new().msg(1, meta("web").msg(11, labels())).msg(2, spec).msg(3, status);
    assert_eq!(
        decode("apps/v1", "Deployment", raw),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]},
                },
                "strategy": {},
            },
            "status": {},
        })
    );
}

#[test]
fn service_ports_with_int_and_named_target_ports() {
    let port = |name: &str, port: i64, target: Enc| {
        Enc::new().str(1, name).str(2, "TCP").int(3, port).msg(4, target).int(5, 0).str(6, "")
    };
    let spec = Enc::new()
        .msg(1, port("http", 80, int_or_string_int(8080)))
        .msg(1, port("metrics", 9090, int_or_string_str("metrics")))
        .entry(2, "app", "web")
        .str(3, "")
        .str(4, "ClusterIP");
    let raw = Enc::new().msg(1, meta("web")).msg(2, spec).msg(3, Enc::new().msg(1, Enc::new()));
    assert_eq!(
        decode("v1", "Service", raw),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "creationTimestamp": null},
            "spec": {
                "ports": [
                    {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                    {"name": "metrics", "protocol": "TCP", "port": 9090, "targetPort": "metrics"},
                ],
                "selector": {"app": "web"},
                "type": "ClusterIP",
            },
            "status": {"loadBalancer": {}},
        })
    );
}

#[test]
fn job_keeps_explicit_zero_pointers() {
    let container = Enc::new().str(1, "pi").str(2, "perl").str(3, "perl").str(3, "-e").str(3, "print 1");
    let template = Enc::new().msg(1, meta("")).msg(2, Enc::new().msg(2, container).str(3, "Never"));
    let spec = Enc::new().int(2, 3).msg(6, template).int(7, 0).int(8, 0);
    let status = Enc::new().varint(4, 0).varint(5, 0).varint(6, 0);
    let got = decode("batch/v1", "Job", Enc::new().msg(1, meta("pi")).msg(2, spec).msg(3, status));
    assert_eq!(
        got,
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "creationTimestamp": null},
            "spec": {
                "completions": 3,
                "template": {
                    "metadata": {"creationTimestamp": null},
                    "spec": {
                        "containers": [{"name": "pi", "image": "perl", "command": ["perl", "-e", "print 1"]}],
                        "restartPolicy": "Never",
                    },
                },
                "backoffLimit": 0,
                "ttlSecondsAfterFinished": 0,
            },
            "status": {},
        })
    );
}

#[test]
fn delete_options_decode_under_any_group_version() {
    let raw = || Enc::new().int(1, 0).msg(2, Enc::new().str(1, "uid-1")).str(4, "Foreground").str(5, "All");
    for api_version in ["v1", "apps/v1", "meta.k8s.io/v1", "batch/v1"] {
        assert_eq!(
            decode(api_version, "DeleteOptions", raw()),
            json!({
                "apiVersion": api_version, "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": "uid-1"},
                "propagationPolicy": "Foreground",
                "dryRun": ["All"],
            })
        );
    }
}

#[test]
fn subresource_bodies_decode() {
    let eviction = Enc::new().msg(1, Enc::new().str(1, "web-0").str(3, "default")).msg(2, Enc::new().int(1, 30));
    assert_eq!(
        decode("policy/v1", "Eviction", eviction),
        json!({"apiVersion": "policy/v1", "kind": "Eviction",
               "metadata": {"name": "web-0", "namespace": "default"}, "deleteOptions": {"gracePeriodSeconds": 30}})
    );
    let scale = Enc::new().msg(1, Enc::new().str(1, "web")).msg(2, Enc::new().int(1, 0));
    assert_eq!(
        decode("autoscaling/v1", "Scale", scale),
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web"}, "spec": {"replicas": 0}})
    );
    let binding =
        Enc::new().msg(1, Enc::new().str(1, "web-0")).msg(2, Enc::new().str(1, "Node").str(3, "node-1").str(5, "v1"));
    assert_eq!(
        decode("v1", "Binding", binding),
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web-0"},
               "target": {"kind": "Node", "name": "node-1", "apiVersion": "v1"}})
    );
    let token = Enc::new().msg(2, Enc::new().str(1, "https://kubernetes.default.svc").int(4, 600));
    assert_eq!(
        decode("authentication.k8s.io/v1", "TokenRequest", token),
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 600}})
    );
}

#[test]
fn times_and_micro_times() {
    let created = Enc::new().int(1, 1_704_164_645).int(2, 999);
    let renew = Enc::new().int(1, 1_704_164_645).int(2, 123_456_789);
    let zero = Enc::new().int(1, -62_135_596_800).int(2, 0);
    let raw = Enc::new()
        .msg(1, Enc::new().str(1, "leader").msg(8, created))
        .msg(2, Enc::new().str(1, "").int(2, 15).msg(3, zero).msg(4, renew).int(5, 0));
    assert_eq!(
        decode("coordination.k8s.io/v1", "Lease", raw),
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "leader", "creationTimestamp": "2024-01-02T03:04:05Z"},
            "spec": {
                "holderIdentity": "",
                "leaseDurationSeconds": 15,
                "acquireTime": null,
                "renewTime": "2024-01-02T03:04:05.123456Z",
                "leaseTransitions": 0,
            },
        })
    );
}

#[test]
fn managed_fields_carry_their_json() {
    let entry = Enc::new()
        .str(1, "kubectl")
        .str(2, "Apply")
        .str(3, "v1")
        .msg(4, Enc::new().int(1, 0))
        .str(6, "FieldsV1")
        .msg(7, Enc::new().bytes(1, br#"{"f:data":{"f:a":{}}}"#));
    let raw = Enc::new().msg(1, Enc::new().str(1, "cm").msg(17, entry));
    assert_eq!(
        decode("v1", "ConfigMap", raw)["metadata"]["managedFields"],
        json!([{
            "manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "time": "1970-01-01T00:00:00Z",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}},
        }])
    );
}

#[test]
fn raw_extensions_hold_json_or_a_nested_protobuf_object() {
    let json_data =
        Enc::new().msg(1, Enc::new().str(1, "web-1")).msg(2, Enc::new().bytes(1, br#"{"spec":{"x":1}}"#)).int(3, 1);
    assert_eq!(
        decode("apps/v1", "ControllerRevision", json_data),
        json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "web-1"},
               "data": {"spec": {"x": 1}}, "revision": 1})
    );
    let nested = envelope("v1", "Namespace", Enc::new().msg(1, Enc::new().str(1, "inner")));
    let proto_data = Enc::new().msg(2, Enc::new().bytes(1, &nested)).int(3, 2);
    assert_eq!(
        decode("apps/v1", "ControllerRevision", proto_data)["data"],
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "inner"}})
    );
    let empty = Enc::new().msg(2, Enc::new());
    assert_eq!(decode("apps/v1", "ControllerRevision", empty)["data"], Value::Null);
}

#[test]
fn wrapped_string_lists_are_arrays() {
    let extra = Enc::new().str(1, "scopes").msg(2, Enc::new().str(1, "read").str(1, "write"));
    let spec = Enc::new().str(3, "alice").str(4, "devs").msg(5, extra);
    assert_eq!(
        decode("authorization.k8s.io/v1", "SubjectAccessReview", Enc::new().msg(2, spec))["spec"],
        json!({"user": "alice", "groups": ["devs"], "extra": {"scopes": ["read", "write"]}})
    );
    let resource = Enc::new()
        .str(1, "pods")
        .str(6, "pod")
        .varint(2, 1)
        .str(3, "Pod")
        .msg(4, Enc::new().str(1, "get").str(1, "list"))
        .str(5, "po");
    let list = Enc::new().str(1, "v1").msg(2, resource);
    assert_eq!(
        decode("v1", "APIResourceList", list),
        json!({"apiVersion": "v1", "kind": "APIResourceList", "groupVersion": "v1", "resources": [{
            "name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
            "verbs": ["get", "list"], "shortNames": ["po"]}]})
    );
}

#[test]
fn quantities_in_resource_lists() {
    let quantity = |s: &str| Enc::new().str(1, s);
    let spec = Enc::new()
        .entry_msg(1, "cpu", quantity("500m"))
        .entry_msg(1, "memory", quantity("1Gi"))
        .entry_msg(1, "pods", Enc::new())
        .str(2, "BestEffort");
    assert_eq!(
        decode("v1", "ResourceQuota", Enc::new().msg(2, spec))["spec"],
        json!({"hard": {"cpu": "500m", "memory": "1Gi", "pods": "0"}, "scopes": ["BestEffort"]})
    );
}

#[test]
fn inline_structs_and_security_zeros() {
    let volume = Enc::new()
        .str(1, "config")
        .msg(2, Enc::new().msg(19, Enc::new().msg(1, Enc::new().str(1, "app-config")).int(3, 0o644)));
    let probe = Enc::new()
        .msg(
            1,
            Enc::new().msg(2, Enc::new().str(1, "/healthz").msg(2, int_or_string_int(8080)).str(3, "").str(4, "HTTP")),
        )
        .int(2, 0)
        .int(3, 1)
        .int(4, 10)
        .int(5, 1)
        .int(6, 3);
    let security = Enc::new().int(4, 0).varint(7, 0);
    let container = Enc::new().str(1, "app").str(2, "app:1").msg(10, probe).msg(15, security);
    let pod_spec = Enc::new().msg(1, volume).msg(2, container).msg(14, Enc::new().int(2, 1000).msg(4, Enc::new()));
    let got = decode("v1", "Pod", Enc::new().msg(2, pod_spec));
    assert_eq!(
        got["spec"],
        json!({
            "volumes": [{"name": "config", "configMap": {"name": "app-config", "defaultMode": 420}}],
            "containers": [{
                "name": "app", "image": "app:1",
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
                                  "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
                "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": false},
            }],
            "securityContext": {"runAsUser": 1000},
        })
    );
}

#[test]
fn repeated_numbers_packed_or_not() {
    let packed = Enc::new().bytes(4, &[1, 0xe8, 0x07]); // [1, 1000]
    let unpacked = Enc::new().int(4, 5).int(4, 6);
    let spec = Enc::new().msg(14, packed).msg(14, unpacked);
    assert_eq!(
        decode("v1", "Pod", Enc::new().msg(2, spec))["spec"]["securityContext"],
        json!({"supplementalGroups": [1, 1000, 5, 6]}),
        "a message seen twice merges, and repeated fields concatenate"
    );
}

#[test]
fn custom_resource_definition_schemas() {
    let string_schema = || Enc::new().str(5, "string");
    let props = Enc::new()
        .str(5, "object")
        .msg(8, Enc::new().bytes(1, br#"{"size":1}"#))
        .entry_msg(29, "size", Enc::new().str(5, "integer").double(9, 10.0).double(11, 0.0).varint(10, 0).varint(37, 0))
        .entry_msg(
            29,
            "color",
            string_schema().msg(20, Enc::new().bytes(1, br#""red""#)).msg(20, Enc::new().bytes(1, br#""blue""#)),
        )
        .entry_msg(29, "tags", Enc::new().str(5, "array").msg(24, Enc::new().msg(1, string_schema())))
        .entry_msg(29, "labels", Enc::new().str(5, "object").msg(30, Enc::new().varint(1, 0).msg(2, string_schema())))
        .entry_msg(29, "closed", Enc::new().str(5, "object").msg(30, Enc::new().varint(1, 0)))
        .varint(38, 1);
    let version = Enc::new().str(1, "v1").varint(2, 1).varint(3, 1).varint(7, 0).msg(4, Enc::new().msg(1, props));
    let spec = Enc::new()
        .str(1, "example.com")
        .msg(3, Enc::new().str(1, "widgets").str(2, "widget").str(4, "Widget").str(5, "WidgetList"))
        .str(4, "Namespaced")
        .msg(7, version)
        .varint(10, 0);
    let got = decode("apiextensions.k8s.io/v1", "CustomResourceDefinition", Enc::new().msg(2, spec));
    assert_eq!(
        got["spec"],
        json!({
            "group": "example.com",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "default": {"size": 1},
                "properties": {
                    "size": {"type": "integer", "maximum": 10.0, "minimum": 0.0},
                    "color": {"type": "string", "enum": ["red", "blue"]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "closed": {"type": "object", "additionalProperties": false},
                },
                "x-kubernetes-preserve-unknown-fields": true,
            }}}],
        })
    );
}

#[test]
fn unknown_fields_are_skipped() {
    let mut raw =
        Enc::new().varint(999, 7).msg(1, Enc::new().str(1, "ns").bytes(500, b"future").double(501, 1.0)).key(502, 5); // a fixed32 field
    raw.0.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(
        decode("v1", "Namespace", raw),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}})
    );
}

#[test]
fn the_envelope_may_carry_json() {
    let unknown = Enc::new()
        .msg(1, Enc::new().str(1, "v1").str(2, "Namespace"))
        .bytes(2, br#"{"metadata":{"name":"j"}}"#)
        .str(4, "application/json");
    let body = [&MAGIC[..], &unknown.0].concat();
    assert_eq!(
        decode_object(&body).unwrap(),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "j"}})
    );
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn envelope_errors() {
    assert_eq!(decode_object(b"{\"kind\":\"Namespace\"}"), Err(ProtobufError::MissingMagic));
    assert_eq!(decode_object(b"k8s"), Err(ProtobufError::MissingMagic));
    assert_eq!(decode_object(b"k8s\0"), Err(ProtobufError::MissingTypeMeta));
    assert_eq!(
        decode_object(&envelope("apps/v1beta1", "Deployment", Enc::new())),
        Err(ProtobufError::UnknownKind { api_version: "apps/v1beta1".into(), kind: "Deployment".into() })
    );
    assert_eq!(
        decode_object(&envelope("example.com/v1", "Widget", Enc::new())),
        Err(ProtobufError::UnknownKind { api_version: "example.com/v1".into(), kind: "Widget".into() })
    );
    let gzip = Enc::new().msg(1, Enc::new().str(1, "v1").str(2, "Namespace")).str(3, "gzip");
    assert_eq!(decode_object(&[&MAGIC[..], &gzip.0].concat()), Err(ProtobufError::UnsupportedEncoding("gzip".into())));
    let cbor = Enc::new().msg(1, Enc::new().str(1, "v1").str(2, "Namespace")).str(4, "application/cbor");
    assert_eq!(
        decode_object(&[&MAGIC[..], &cbor.0].concat()),
        Err(ProtobufError::UnsupportedContentType("application/cbor".into()))
    );
}

#[test]
fn malformed_bodies_name_the_field() {
    let wrong_type = Enc::new().msg(2, Enc::new().str(1, "two"));
    let err = decode_object(&envelope("apps/v1", "Deployment", wrong_type)).unwrap_err();
    assert!(matches!(&err, ProtobufError::Malformed { path, .. } if path == "spec.replicas"), "{err}");
    assert!(err.to_string().contains("at spec.replicas"), "{err}");

    let container = Enc::new().str(1, "c").msg(6, Enc::new().str(3, "eighty"));
    let pod = Enc::new().msg(2, Enc::new().msg(2, Enc::new().str(1, "a")).msg(2, container));
    let err = decode_object(&envelope("v1", "Pod", pod)).unwrap_err();
    assert!(
        matches!(&err, ProtobufError::Malformed { path, .. } if path == "spec.containers[1].ports[0].containerPort"),
        "{err}"
    );

    let bad_json = Enc::new().msg(2, Enc::new().bytes(1, b"{not json"));
    assert!(decode_object(&envelope("apps/v1", "ControllerRevision", bad_json)).is_err());

    let bad_int_or_string = Enc::new().msg(2, Enc::new().msg(1, Enc::new().msg(4, Enc::new().varint(1, 7))));
    let err = decode_object(&envelope("v1", "Service", bad_int_or_string)).unwrap_err();
    assert!(err.to_string().contains("spec.ports[0].targetPort"), "{err}");

    let far_future = Enc::new().msg(1, Enc::new().msg(8, Enc::new().int(1, i64::MAX)));
    assert!(decode_object(&envelope("v1", "Namespace", far_future)).is_err());
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    // JSONSchemaProps.not (tag 28) nests without end.
    let mut schema = Enc::new().str(5, "string");
    for _ in 0..300 {
        schema = Enc::new().msg(28, schema);
    }
    let version = Enc::new().str(1, "v1").msg(4, Enc::new().msg(1, schema));
    let body =
        envelope("apiextensions.k8s.io/v1", "CustomResourceDefinition", Enc::new().msg(2, Enc::new().msg(7, version)));
    let err = decode_object(&body).unwrap_err();
    assert!(err.to_string().contains("nested deeper"), "{err}");

    // A RawExtension holding itself, again and again.
    let mut body = envelope("apps/v1", "ControllerRevision", Enc::new());
    for _ in 0..200 {
        body = envelope("apps/v1", "ControllerRevision", Enc::new().msg(2, Enc::new().bytes(1, &body)));
    }
    assert!(decode_object(&body).is_err());
}

#[test]
fn random_bytes_never_panic() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seeds: Vec<Vec<u8>> = [
        &include_bytes!("testdata/deployment.pb")[..],
        &include_bytes!("testdata/service_nodeport.pb")[..],
        &include_bytes!("testdata/ingress.pb")[..],
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    for round in 0..3000 {
        let mut body = seeds[round % seeds.len()].clone();
        for _ in 0..1 + next() % 4 {
            let at = 4 + (next() as usize) % (body.len() - 4);
            body[at] = next() as u8;
        }
        let _ = decode_object(&body);
        let noise: Vec<u8> = MAGIC.iter().copied().chain((0..next() % 64).map(|_| next() as u8)).collect();
        let _ = decode_object(&noise);
    }
}

// ---------------------------------------------------------------------------------------------
// The generated table
// ---------------------------------------------------------------------------------------------

#[test]
fn the_table_is_consistent() {
    let messages = all_messages();
    let in_range = |i: u16| usize::from(i) < messages.len();
    for msg in messages {
        let mut tags: Vec<u16> = msg.fields.iter().map(|f| f.tag()).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), msg.fields.len(), "{} repeats a tag", msg.name);
        for f in msg.fields {
            if let Kind::Msg(i) | Kind::MapMsg(i) = f.kind() {
                assert!(in_range(i), "{}.{} points past the table", msg.name, f.json());
            }
            assert!(f.inline() || !f.json().is_empty() || msg.special != Special::None, "{}", msg.name);
        }
    }
    let kinds = all_kinds();
    assert!(kinds.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)), "KINDS must be sorted for lookup");
    for (api_version, kind, index) in kinds {
        assert_eq!(message_for_kind(api_version, kind), Some(*index));
        assert_eq!(messages[usize::from(*index)].special, Special::None, "{api_version} {kind}");
    }
    for (api_version, kind) in [
        ("v1", "Pod"),
        ("v1", "Namespace"),
        ("apps/v1", "Deployment"),
        ("batch/v1", "CronJob"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("policy/v1", "Eviction"),
        ("autoscaling/v1", "Scale"),
        ("scheduling.k8s.io/v1", "PriorityClass"),
        ("networking.k8s.io/v1", "Ingress"),
        ("authentication.k8s.io/v1", "TokenRequest"),
        ("apps/v1", "DeleteOptions"),
    ] {
        assert!(message_for_kind(api_version, kind).is_some(), "{api_version} {kind}");
    }
}

#[test]
fn json_names_that_are_not_plain_camel_case() {
    let field = |message: &str, tag: u16| {
        let msg = all_messages().iter().find(|m| m.name == message).unwrap();
        msg.fields.iter().find(|f| f.tag() == tag).unwrap().json()
    };
    assert_eq!(field("k8s.io.api.core.v1.PodStatus", 6), "podIP");
    assert_eq!(field("k8s.io.api.core.v1.PodStatus", 9), "qosClass");
    assert_eq!(field("k8s.io.api.core.v1.ServiceSpec", 3), "clusterIP");
    assert_eq!(field("k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta", 5), "uid");
    assert_eq!(field("k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps", 3), "$ref");
    assert_eq!(
        field("k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps", 38),
        "x-kubernetes-preserve-unknown-fields"
    );
    assert_eq!(
        field("k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.CustomResourceValidation", 1),
        "openAPIV3Schema"
    );
}
