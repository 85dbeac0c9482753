//! Defaulting of built-in kinds, as kube-apiserver (Kubernetes 1.33) applies it to objects
//! it is given: the `SetDefaults_*` functions and `+default` markers of each API group, the
//! v1 conversion quirks users see in `-o yaml` (`resources: {}`, the `serviceAccount` alias,
//! Secret `stringData`), and the parts of admission and allocation that need no other object
//! (Priority for pods without a class, DefaultTolerationSeconds, Service IP families).
//!
//! [`apply_defaults`] is idempotent and safe on both create and update. Create-only steps
//! that upstream keeps out of defaulting because the field may change later live in
//! [`prepare_for_create`]. Nothing here allocates (cluster IPs, node ports), generates names,
//! reads other objects (ServiceAccount tokens, PriorityClasses with `globalDefault`, default
//! StorageClass) or resets status; the API server does those.

use std::sync::LazyLock;

use base64::Engine;
use regex::Regex;
use serde_json::{Map, Value, json};

type Obj = Map<String, Value>;

/// Fills in the defaults kube-apiserver gives a built-in object of `group`/`kind`, in place.
/// Unknown kinds and non-object values are left alone; fields of the wrong JSON type are
/// never overwritten (validation reports them).
///
/// Call it after `metadata.name` is generated (Namespaces copy their name into a label),
/// and again after the strategy has run if the strategy changed template labels (Jobs copy
/// template labels into empty `metadata.labels`). HorizontalPodAutoscalers are defaulted as
/// autoscaling/v2 unless their `apiVersion` says `autoscaling/v1`.
pub fn apply_defaults(group: &str, kind: &str, obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    match (group, kind) {
        ("", _) => core(kind, o),
        ("apps", _) => apps(kind, o),
        ("batch", "Job") => job(o),
        ("batch", "CronJob") => cron_job(o),
        ("autoscaling", "HorizontalPodAutoscaler") => hpa(o),
        ("discovery.k8s.io", "EndpointSlice") => endpoint_slice(o),
        ("networking.k8s.io", "NetworkPolicy") => network_policy(o),
        ("networking.k8s.io", "IngressClass") => ingress_class(o),
        ("policy", "PodDisruptionBudget") => pdb(o),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => role_binding(o),
        ("storage.k8s.io", "StorageClass") => storage_class(o),
        ("storage.k8s.io", "CSIDriver") => csi_driver(o),
        ("scheduling.k8s.io", "PriorityClass") => default_value(o, "preemptionPolicy", json!("PreemptLowerPriority")),
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => webhooks(o, false),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => webhooks(o, true),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(o),
        _ => {}
    }
}

/// Create-only changes upstream makes in registry strategies rather than in defaulting,
/// because the field may legitimately change afterwards: a new Namespace gets the
/// `kubernetes` finalizer (removed later through `/finalize`), and a Service given only
/// `clusterIP` gets the matching `clusterIPs`.
pub fn prepare_for_create(group: &str, kind: &str, obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    match (group, kind) {
        ("", "Namespace") => namespace_finalizer(o),
        ("", "Service") => service_cluster_ips(o),
        ("batch", "Job") => job_selector(o),
        _ => {}
    }
}

/// A Job without `manualSelector: true` gets a selector on its own uid, and its template the
/// labels that selector and users look for (upstream `generateSelector`). Runs after the uid is
/// assigned.
fn job_selector(job: &mut Obj) {
    let name = job.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or_default().to_string();
    let uid = job.get("metadata").and_then(|m| m.get("uid")).and_then(Value::as_str).unwrap_or_default().to_string();
    let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) else { return };
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) || uid.is_empty() {
        return;
    }
    let template = spec.entry("template").or_insert_with(|| json!({}));
    if !template["metadata"].is_object() {
        template["metadata"] = json!({});
    }
    if !template["metadata"]["labels"].is_object() {
        template["metadata"]["labels"] = json!({});
    }
    if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
        for (key, value) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels.entry(key).or_insert_with(|| json!(value));
        }
    }
    let selector = spec.entry("selector").or_insert_with(|| json!({}));
    if !selector.is_object() {
        *selector = json!({});
    }
    if !selector["matchLabels"].is_object() {
        selector["matchLabels"] = json!({});
    }
    if let Some(match_labels) = selector["matchLabels"].as_object_mut() {
        match_labels.entry("batch.kubernetes.io/controller-uid").or_insert_with(|| json!(uid));
    }
}

// ---------------------------------------------------------------------------------------------
// JSON helpers: Go's zero values are an absent key or null (and "" or 0 for non-pointers)
// ---------------------------------------------------------------------------------------------

fn is_unset(m: &Obj, key: &str) -> bool {
    matches!(m.get(key), None | Some(Value::Null))
}

/// Unset or the empty string (a Go string field's zero value).
fn is_blank(m: &Obj, key: &str) -> bool {
    is_unset(m, key) || m.get(key).and_then(Value::as_str) == Some("")
}

/// Unset or zero (a Go int field's zero value).
fn is_zero(m: &Obj, key: &str) -> bool {
    is_unset(m, key) || m.get(key).and_then(Value::as_f64) == Some(0.0)
}

/// Sets a pointer field when it is nil.
fn default_value(m: &mut Obj, key: &str, v: Value) {
    if is_unset(m, key) {
        m.insert(key.to_string(), v);
    }
}

/// Sets a string field when it is empty.
fn default_str(m: &mut Obj, key: &str, v: &str) {
    if is_blank(m, key) {
        m.insert(key.to_string(), Value::from(v));
    }
}

/// Sets an int field when it is zero.
fn default_nonzero(m: &mut Obj, key: &str, v: i64) {
    if is_zero(m, key) {
        m.insert(key.to_string(), Value::from(v));
    }
}

fn str_of<'a>(m: &'a Obj, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("")
}

fn child<'a>(m: &'a mut Obj, key: &str) -> Option<&'a mut Obj> {
    m.get_mut(key).and_then(Value::as_object_mut)
}

/// A struct-valued field, created empty when unset (Go's non-pointer structs always exist).
fn ensure<'a>(m: &'a mut Obj, key: &str) -> Option<&'a mut Obj> {
    if is_unset(m, key) {
        m.insert(key.to_string(), Value::Object(Map::new()));
    }
    child(m, key)
}

/// The object elements of a list field.
fn items<'a>(m: &'a mut Obj, key: &str) -> impl Iterator<Item = &'a mut Obj> {
    m.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten().filter_map(Value::as_object_mut)
}

fn has_items(m: &Obj, key: &str) -> bool {
    m.get(key).and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}

/// A non-empty map field, cloned.
fn non_empty_map(m: &Obj, key: &str) -> Option<Obj> {
    m.get(key).and_then(Value::as_object).filter(|o| !o.is_empty()).cloned()
}

/// Copies the entries of map `from` missing from map `to` (creating `to` when needed).
fn fill_map(m: &mut Obj, from: &str, to: &str) {
    let Some(src) = non_empty_map(m, from) else {
        return;
    };
    let Some(dst) = ensure(m, to) else { return };
    for (k, v) in src {
        dst.entry(k).or_insert(v);
    }
}

// ---------------------------------------------------------------------------------------------
// core/v1
// ---------------------------------------------------------------------------------------------

fn core(kind: &str, o: &mut Obj) {
    match kind {
        "Pod" => pod(o),
        "PodTemplate" => template_spec(o),
        "ReplicationController" => replication_controller(o),
        "Service" => service(o),
        "Secret" => secret(o),
        "Namespace" => namespace(o),
        "Node" => node(o),
        "PersistentVolume" => persistent_volume(o),
        "PersistentVolumeClaim" => persistent_volume_claim(o),
        "Endpoints" => endpoints(o),
        "LimitRange" => limit_range(o),
        _ => {}
    }
}

fn pod(o: &mut Obj) {
    let Some(spec) = ensure(o, "spec") else {
        return;
    };
    pod_spec(spec);
    default_value(spec, "enableServiceLinks", Value::Bool(true));
    for key in ["containers", "initContainers"] {
        items(spec, key).for_each(requests_from_limits);
    }
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        for key in ["containers", "initContainers"] {
            items(spec, key).for_each(host_network_ports);
        }
    }
    pod_priority(spec);
}

/// `SetDefaults_PodSpec` and everything under it; shared by pods and every pod template.
fn pod_spec(spec: &mut Obj) {
    default_str(spec, "dnsPolicy", "ClusterFirst");
    default_str(spec, "restartPolicy", "Always");
    default_value(spec, "securityContext", json!({}));
    default_value(spec, "terminationGracePeriodSeconds", json!(30));
    default_str(spec, "schedulerName", "default-scheduler");
    service_account_alias(spec);
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        items(spec, key).for_each(container);
    }
    items(spec, "volumes").for_each(volume);
}

/// The v1 conversion treats `serviceAccount` as an alias: it fills an empty
/// `serviceAccountName` and always mirrors it on output.
fn service_account_alias(spec: &mut Obj) {
    let name = [str_of(spec, "serviceAccountName"), str_of(spec, "serviceAccount")]
        .into_iter()
        .find(|s| !s.is_empty())
        .map(str::to_string);
    if let Some(name) = name {
        spec.insert("serviceAccountName".into(), Value::from(name.clone()));
        spec.insert("serviceAccount".into(), Value::from(name));
    }
}

/// The pod template of a workload spec (`spec.template.spec`).
fn template_spec(parent: &mut Obj) {
    if let Some(spec) = ensure(parent, "template").and_then(|t| ensure(t, "spec")) {
        pod_spec(spec);
    }
}

fn container(c: &mut Obj) {
    if is_blank(c, "imagePullPolicy") {
        let policy = pull_policy(str_of(c, "image"));
        c.insert("imagePullPolicy".into(), Value::from(policy));
    }
    default_str(c, "terminationMessagePath", "/dev/termination-log");
    default_str(c, "terminationMessagePolicy", "File");
    default_value(c, "resources", json!({}));
    for port in items(c, "ports") {
        default_str(port, "protocol", "TCP");
    }
    for env in items(c, "env") {
        if let Some(from) = child(env, "valueFrom") {
            object_field_refs(from);
        }
    }
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = child(c, key) {
            probe(p);
        }
    }
    if let Some(lifecycle) = child(c, "lifecycle") {
        for key in ["postStart", "preStop"] {
            if let Some(h) = child(lifecycle, key) {
                handler(h);
            }
        }
    }
}

/// `fieldRef.apiVersion` defaults to v1; `resourceFieldRef.divisor` serializes as "0".
fn object_field_refs(m: &mut Obj) {
    if let Some(field_ref) = child(m, "fieldRef") {
        default_str(field_ref, "apiVersion", "v1");
    }
    if let Some(resource_ref) = child(m, "resourceFieldRef") {
        default_value(resource_ref, "divisor", json!("0"));
    }
}

fn probe(p: &mut Obj) {
    default_nonzero(p, "timeoutSeconds", 1);
    default_nonzero(p, "periodSeconds", 10);
    default_nonzero(p, "successThreshold", 1);
    default_nonzero(p, "failureThreshold", 3);
    handler(p);
}

fn handler(h: &mut Obj) {
    if let Some(get) = child(h, "httpGet") {
        default_str(get, "path", "/");
        default_str(get, "scheme", "HTTP");
    }
    if let Some(grpc) = child(h, "grpc") {
        default_value(grpc, "service", json!(""));
    }
}

/// Pods only: each resource limited but not requested is requested at its limit.
fn requests_from_limits(c: &mut Obj) {
    if let Some(resources) = child(c, "resources") {
        fill_map(resources, "limits", "requests");
    }
}

/// Pods only: with host networking, a container port's hostPort defaults to the port.
fn host_network_ports(c: &mut Obj) {
    for port in items(c, "ports") {
        let unset = port.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0;
        if let (true, Some(p)) = (unset, port.get("containerPort").filter(|v| v.is_number()).cloned()) {
            port.insert("hostPort".into(), p);
        }
    }
}

/// Priority admission for the classes every cluster has: no class means priority 0, and
/// the two system classes have fixed values. Pods naming other classes are left to an
/// admission step that can read PriorityClass objects (and `globalDefault` ones).
fn pod_priority(spec: &mut Obj) {
    let priority = match str_of(spec, "priorityClassName") {
        "" => 0,
        "system-cluster-critical" => 2_000_000_000,
        "system-node-critical" => 2_000_001_000,
        _ => return,
    };
    default_value(spec, "priority", json!(priority));
    default_str(spec, "preemptionPolicy", "PreemptLowerPriority");
}

const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// Seconds a pod tolerates a not-ready or unreachable node unless it says otherwise
/// (kube-apiserver's `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`).
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// DefaultTolerationSeconds admission, on pod create: tolerate not-ready and unreachable nodes
/// for the given seconds unless a toleration already covers the taint (empty key or effect
/// match anything).
pub fn default_tolerations(pod: &mut Value, not_ready_seconds: i64, unreachable_seconds: i64) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let tolerates = |spec: &Obj, taint: &str| {
        let list = spec.get("tolerations").and_then(Value::as_array);
        list.into_iter().flatten().any(|t| {
            let key = t.get("key").and_then(Value::as_str).unwrap_or("");
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            (key == taint || key.is_empty()) && (effect == "NoExecute" || effect.is_empty())
        })
    };
    let missing: Vec<(&str, i64)> = [(NOT_READY, not_ready_seconds), (UNREACHABLE, unreachable_seconds)]
        .into_iter()
        .filter(|(t, _)| !tolerates(spec, t))
        .collect();
    if missing.is_empty() {
        return;
    }
    default_value(spec, "tolerations", json!([]));
    let Some(list) = spec.get_mut("tolerations").and_then(Value::as_array_mut) else {
        return;
    };
    for (key, seconds) in missing {
        list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
    }
}

static IMAGE_REFERENCE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    let component = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let host = format!(r"(?:{component}(?:\.{component})*|\[[a-fA-F0-9:]+\])");
    let domain = format!(r"{host}(?::[0-9]+)?");
    let path = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*";
    let name = format!(r"(?:{domain}/)?{path}(?:/{path})*");
    let tag = r"[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
    let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
    Regex::new(&format!(r"^({name})(?::({tag}))?(?:@({digest}))?$")).ok()
});

/// `Always` when the image's tag is `latest` or it has neither tag nor digest, else
/// `IfNotPresent` (also for references that do not parse), as kubelet's `ParseImageName`.
fn pull_policy(image: &str) -> &'static str {
    if image_tag(image).as_deref() == Some("latest") { "Always" } else { "IfNotPresent" }
}

/// The tag of a docker reference: `latest` when it has neither tag nor digest, `None`
/// when it is digest-only or does not parse.
fn image_tag(image: &str) -> Option<String> {
    let is_hex_id = image.len() == 64 && image.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let caps = IMAGE_REFERENCE.as_ref()?.captures(image).filter(|_| !is_hex_id)?;
    if caps.get(1).is_none_or(|name| name.as_str().len() > 255) {
        return None;
    }
    match (caps.get(2), caps.get(3)) {
        (Some(tag), _) => Some(tag.as_str().to_string()),
        (None, None) => Some("latest".to_string()),
        (None, Some(_)) => None,
    }
}

fn volume(v: &mut Obj) {
    if v.iter().all(|(k, val)| k == "name" || val.is_null()) {
        v.insert("emptyDir".into(), json!({}));
        return;
    }
    for key in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(source) = child(v, key) {
            default_value(source, "defaultMode", json!(420));
        }
    }
    if let Some(downward) = child(v, "downwardAPI") {
        items(downward, "items").for_each(object_field_refs);
    }
    if let Some(projected) = child(v, "projected") {
        items(projected, "sources").for_each(projection);
    }
    let claim = child(v, "ephemeral").and_then(|e| child(e, "volumeClaimTemplate")).and_then(|t| ensure(t, "spec"));
    if let Some(spec) = claim {
        pvc_spec(spec);
    }
    storage_sources(v);
}

fn projection(source: &mut Obj) {
    if let Some(token) = child(source, "serviceAccountToken") {
        default_value(token, "expirationSeconds", json!(3600));
    }
    if let Some(downward) = child(source, "downwardAPI") {
        items(downward, "items").for_each(object_field_refs);
    }
}

/// Defaults of volume sources shared by pod volumes and PersistentVolumes.
fn storage_sources(m: &mut Obj) {
    if let Some(host_path) = child(m, "hostPath") {
        default_value(host_path, "type", json!(""));
    }
    if let Some(iscsi) = child(m, "iscsi") {
        default_str(iscsi, "iscsiInterface", "default");
    }
    if let Some(rbd) = child(m, "rbd") {
        default_str(rbd, "pool", "rbd");
        default_str(rbd, "user", "admin");
        default_str(rbd, "keyring", "/etc/ceph/keyring");
    }
    if let Some(disk) = child(m, "azureDisk") {
        default_value(disk, "cachingMode", json!("ReadWrite"));
        default_value(disk, "fsType", json!("ext4"));
        default_value(disk, "readOnly", json!(false));
        default_value(disk, "kind", json!("Shared"));
    }
    if let Some(scale_io) = child(m, "scaleIO") {
        default_str(scale_io, "storageMode", "ThinProvisioned");
        default_str(scale_io, "fsType", "xfs");
    }
}

fn replication_controller(o: &mut Obj) {
    let template_labels = o
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(Value::as_object)
        .and_then(|m| non_empty_map(m, "labels"));
    if let Some(labels) = template_labels {
        copy_labels_if_empty(o, &labels);
        if let Some(spec) = child(o, "spec").filter(|s| non_empty_map(s, "selector").is_none()) {
            spec.insert("selector".into(), Value::Object(labels));
        }
    }
    let Some(spec) = ensure(o, "spec") else {
        return;
    };
    default_value(spec, "replicas", json!(1));
    // An RC's template is a pointer: only an existing one is defaulted.
    if let Some(pod) = child(spec, "template").and_then(|t| child(t, "spec")) {
        pod_spec(pod);
    }
}

/// Sets `metadata.labels` to `labels` when the object has none.
fn copy_labels_if_empty(o: &mut Obj, labels: &Obj) {
    let Some(meta) = ensure(o, "metadata") else {
        return;
    };
    if non_empty_map(meta, "labels").is_none() {
        meta.insert("labels".into(), Value::Object(labels.clone()));
    }
}

fn service(o: &mut Obj) {
    let Some(spec) = ensure(o, "spec") else {
        return;
    };
    session_affinity(spec);
    default_str(spec, "type", "ClusterIP");
    for port in items(spec, "ports") {
        service_port(port);
    }
    let kind = str_of(spec, "type").to_string();
    let external =
        matches!(kind.as_str(), "NodePort" | "LoadBalancer") || (kind == "ClusterIP" && has_items(spec, "externalIPs"));
    if external {
        default_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(kind.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        default_value(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if kind == "LoadBalancer" {
        default_value(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    ip_families(spec);
    service_status(o, kind == "LoadBalancer");
}

fn session_affinity(spec: &mut Obj) {
    default_str(spec, "sessionAffinity", "None");
    match str_of(spec, "sessionAffinity") {
        "None" => {
            spec.remove("sessionAffinityConfig");
        }
        "ClientIP" => {
            let timeout =
                spec.get("sessionAffinityConfig").and_then(|c| c.get("clientIP")).and_then(|c| c.get("timeoutSeconds"));
            if timeout.is_none_or(Value::is_null) {
                spec.insert("sessionAffinityConfig".into(), json!({"clientIP": {"timeoutSeconds": 10800}}));
            }
        }
        _ => {}
    }
}

fn service_port(port: &mut Obj) {
    default_str(port, "protocol", "TCP");
    let target_unset = is_blank(port, "targetPort") || port.get("targetPort").and_then(Value::as_i64) == Some(0);
    if let (true, Some(p)) = (target_unset, port.get("port").filter(|v| v.is_number()).cloned()) {
        port.insert("targetPort".into(), p);
    }
}

/// The IP family fields the allocator fills before allocating, for a single-stack IPv4
/// cluster: families follow any given cluster IPs; a headless Service without a selector
/// asks for both families.
fn ip_families(spec: &mut Obj) {
    if str_of(spec, "type") == "ExternalName" {
        return;
    }
    let headless_selectorless = str_of(spec, "clusterIP") == "None" && non_empty_map(spec, "selector").is_none();
    let policy = if headless_selectorless { "RequireDualStack" } else { "SingleStack" };
    default_value(spec, "ipFamilyPolicy", json!(policy));
    if has_items(spec, "ipFamilies") {
        return;
    }
    let mut families = families_of_cluster_ips(spec);
    let dual = matches!(str_of(spec, "ipFamilyPolicy"), "RequireDualStack" | "PreferDualStack");
    if headless_selectorless && dual && families.len() == 1 {
        families.push(if families[0] == "IPv4" { "IPv6" } else { "IPv4" });
    }
    spec.insert("ipFamilies".into(), json!(families));
}

fn families_of_cluster_ips(spec: &Obj) -> Vec<&'static str> {
    let listed: Vec<&str> =
        spec.get("clusterIPs").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let ips = if listed.is_empty() { vec![str_of(spec, "clusterIP")] } else { listed };
    let families: Vec<&'static str> = ips
        .into_iter()
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .map(|ip| if ip.contains(':') { "IPv6" } else { "IPv4" })
        .collect();
    if families.is_empty() { vec!["IPv4"] } else { families }
}

/// `status.loadBalancer` always serializes (`{}`); LB ingress IPs get `ipMode: VIP`.
fn service_status(o: &mut Obj, load_balancer: bool) {
    let Some(lb) = ensure(o, "status").and_then(|s| ensure(s, "loadBalancer")) else {
        return;
    };
    if !load_balancer {
        return;
    }
    for ingress in items(lb, "ingress") {
        if !str_of(ingress, "ip").is_empty() {
            default_value(ingress, "ipMode", json!("VIP"));
        }
    }
}

fn service_cluster_ips(o: &mut Obj) {
    let Some(spec) = child(o, "spec") else { return };
    let ip = str_of(spec, "clusterIP").to_string();
    if !ip.is_empty() && !has_items(spec, "clusterIPs") {
        spec.insert("clusterIPs".into(), json!([ip]));
    }
}

/// Type `Opaque`; `stringData` is merged into `data` (base64) and not kept, as the v1
/// conversion does. A `stringData` with non-string values is left for validation.
fn secret(o: &mut Obj) {
    default_str(o, "type", "Opaque");
    let all_strings = o.get("stringData").and_then(Value::as_object).is_some_and(|m| m.values().all(Value::is_string));
    let data_ok = o.get("data").is_none_or(|d| d.is_null() || d.is_object());
    if !all_strings || !data_ok {
        return;
    }
    let Some(Value::Object(string_data)) = o.remove("stringData") else {
        return;
    };
    let Some(data) = ensure(o, "data") else {
        return;
    };
    for (k, v) in string_data {
        let encoded = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
        data.insert(k, Value::from(encoded));
    }
}

fn namespace(o: &mut Obj) {
    let name = o.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("").to_string();
    if !name.is_empty()
        && let Some(labels) = ensure(o, "metadata").and_then(|m| ensure(m, "labels"))
    {
        labels.insert("kubernetes.io/metadata.name".into(), Value::from(name));
    }
    if let Some(status) = ensure(o, "status") {
        default_str(status, "phase", "Active");
    }
}

fn namespace_finalizer(o: &mut Obj) {
    let Some(spec) = ensure(o, "spec") else {
        return;
    };
    default_value(spec, "finalizers", json!([]));
    let Some(list) = spec.get_mut("finalizers").and_then(Value::as_array_mut) else {
        return;
    };
    if !list.iter().any(|f| f.as_str() == Some("kubernetes")) {
        list.push(json!("kubernetes"));
    }
}

fn node(o: &mut Obj) {
    let Some(status) = child(o, "status") else {
        return;
    };
    if is_unset(status, "allocatable")
        && let Some(capacity) = status.get("capacity").filter(|c| c.is_object()).cloned()
    {
        status.insert("allocatable".into(), capacity);
    }
}

fn persistent_volume(o: &mut Obj) {
    if let Some(spec) = ensure(o, "spec") {
        default_str(spec, "persistentVolumeReclaimPolicy", "Retain");
        default_value(spec, "volumeMode", json!("Filesystem"));
        storage_sources(spec);
    }
    if let Some(status) = ensure(o, "status") {
        default_str(status, "phase", "Pending");
    }
}

fn persistent_volume_claim(o: &mut Obj) {
    if let Some(spec) = ensure(o, "spec") {
        pvc_spec(spec);
    }
    if let Some(status) = ensure(o, "status") {
        default_str(status, "phase", "Pending");
    }
}

fn pvc_spec(spec: &mut Obj) {
    default_value(spec, "volumeMode", json!("Filesystem"));
}

fn endpoints(o: &mut Obj) {
    for subset in items(o, "subsets") {
        for port in items(subset, "ports") {
            default_str(port, "protocol", "TCP");
        }
    }
}

/// Container limits: `default` from `max`, then `defaultRequest` from `default` and `min`.
fn limit_range(o: &mut Obj) {
    let Some(spec) = child(o, "spec") else { return };
    for item in items(spec, "limits").filter(|i| str_of(i, "type") == "Container") {
        fill_map(item, "max", "default");
        fill_map(item, "default", "defaultRequest");
        fill_map(item, "min", "defaultRequest");
    }
}

// ---------------------------------------------------------------------------------------------
// apps/v1
// ---------------------------------------------------------------------------------------------

fn apps(kind: &str, o: &mut Obj) {
    let Some(spec) = ensure(o, "spec") else {
        return;
    };
    match kind {
        "Deployment" => deployment(spec),
        "ReplicaSet" => default_value(spec, "replicas", json!(1)),
        "StatefulSet" => stateful_set(spec),
        "DaemonSet" => daemon_set(spec),
        _ => return,
    }
    template_spec(spec);
}

fn deployment(spec: &mut Obj) {
    default_value(spec, "replicas", json!(1));
    if let Some(strategy) = ensure(spec, "strategy") {
        default_str(strategy, "type", "RollingUpdate");
        if str_of(strategy, "type") == "RollingUpdate"
            && let Some(rolling) = ensure(strategy, "rollingUpdate")
        {
            default_value(rolling, "maxUnavailable", json!("25%"));
            default_value(rolling, "maxSurge", json!("25%"));
        }
    }
    default_value(spec, "revisionHistoryLimit", json!(10));
    default_value(spec, "progressDeadlineSeconds", json!(600));
}

fn stateful_set(spec: &mut Obj) {
    default_str(spec, "podManagementPolicy", "OrderedReady");
    if let Some(strategy) = ensure(spec, "updateStrategy") {
        if is_blank(strategy, "type") {
            strategy.insert("type".into(), json!("RollingUpdate"));
            default_value(strategy, "rollingUpdate", json!({}));
        }
        // An explicit RollingUpdate without a rollingUpdate block gets no partition.
        let rolling = str_of(strategy, "type") == "RollingUpdate";
        if let (true, Some(ru)) = (rolling, child(strategy, "rollingUpdate")) {
            default_value(ru, "partition", json!(0));
        }
    }
    if let Some(policy) = ensure(spec, "persistentVolumeClaimRetentionPolicy") {
        default_str(policy, "whenDeleted", "Retain");
        default_str(policy, "whenScaled", "Retain");
    }
    default_value(spec, "replicas", json!(1));
    default_value(spec, "revisionHistoryLimit", json!(10));
    items(spec, "volumeClaimTemplates").for_each(claim_template);
}

/// Claim templates are PVCs: PVC defaults, and they serialize with their type meta.
fn claim_template(claim: &mut Obj) {
    default_str(claim, "apiVersion", "v1");
    default_str(claim, "kind", "PersistentVolumeClaim");
    persistent_volume_claim(claim);
}

fn daemon_set(spec: &mut Obj) {
    if let Some(strategy) = ensure(spec, "updateStrategy") {
        default_str(strategy, "type", "RollingUpdate");
        if str_of(strategy, "type") == "RollingUpdate"
            && let Some(rolling) = ensure(strategy, "rollingUpdate")
        {
            default_value(rolling, "maxUnavailable", json!(1));
            default_value(rolling, "maxSurge", json!(0));
        }
    }
    default_value(spec, "revisionHistoryLimit", json!(10));
}

// ---------------------------------------------------------------------------------------------
// batch/v1
// ---------------------------------------------------------------------------------------------

fn job(o: &mut Obj) {
    let template_labels = o
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(Value::as_object)
        .and_then(|m| non_empty_map(m, "labels"));
    if let Some(labels) = template_labels {
        copy_labels_if_empty(o, &labels);
    }
    let Some(spec) = ensure(o, "spec") else {
        return;
    };
    if is_unset(spec, "completions") && is_unset(spec, "parallelism") {
        spec.insert("completions".into(), json!(1));
    }
    default_value(spec, "parallelism", json!(1));
    let backoff = if is_unset(spec, "backoffLimitPerIndex") { 6 } else { i64::from(i32::MAX) };
    default_value(spec, "backoffLimit", json!(backoff));
    default_value(spec, "completionMode", json!("NonIndexed"));
    default_value(spec, "suspend", json!(false));
    let replacement = if is_unset(spec, "podFailurePolicy") { "TerminatingOrFailed" } else { "Failed" };
    default_value(spec, "podReplacementPolicy", json!(replacement));
    default_value(spec, "manualSelector", json!(false));
    job_spec_types(spec);
}

/// Type-level defaults of a JobSpec, which also apply inside a CronJob's job template.
fn job_spec_types(spec: &mut Obj) {
    if let Some(policy) = child(spec, "podFailurePolicy") {
        for rule in items(policy, "rules") {
            for pattern in items(rule, "onPodConditions") {
                default_str(pattern, "status", "True");
            }
        }
    }
    template_spec(spec);
}

fn cron_job(o: &mut Obj) {
    let Some(spec) = ensure(o, "spec") else {
        return;
    };
    default_str(spec, "concurrencyPolicy", "Allow");
    default_value(spec, "suspend", json!(false));
    default_value(spec, "successfulJobsHistoryLimit", json!(3));
    default_value(spec, "failedJobsHistoryLimit", json!(1));
    // Job-level defaults (parallelism, backoffLimit, …) are not applied to the template.
    if let Some(job_spec) = ensure(spec, "jobTemplate").and_then(|t| ensure(t, "spec")) {
        job_spec_types(job_spec);
    }
}

// ---------------------------------------------------------------------------------------------
// Other groups
// ---------------------------------------------------------------------------------------------

/// autoscaling/v2 (and v1, which only defaults `minReplicas`).
fn hpa(o: &mut Obj) {
    let v1 = str_of(o, "apiVersion") == "autoscaling/v1";
    let Some(spec) = ensure(o, "spec") else {
        return;
    };
    default_value(spec, "minReplicas", json!(1));
    if v1 {
        return;
    }
    if !has_items(spec, "metrics") {
        let cpu = json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}});
        spec.insert("metrics".into(), json!([cpu]));
    }
    if let Some(behavior) = child(spec, "behavior") {
        let up = json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15}]});
        let down = json!({"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]});
        scaling_rules(behavior, "scaleUp", up);
        scaling_rules(behavior, "scaleDown", down);
    }
}

/// Fills each unset field of a scaling rule from the defaults (`copyHPAScalingRules`).
fn scaling_rules(behavior: &mut Obj, key: &str, defaults: Value) {
    let Value::Object(defaults) = defaults else {
        return;
    };
    if is_unset(behavior, key) {
        behavior.insert(key.into(), Value::Object(defaults));
        return;
    }
    let Some(rules) = child(behavior, key) else {
        return;
    };
    for (k, v) in defaults {
        default_value(rules, &k, v);
    }
}

fn endpoint_slice(o: &mut Obj) {
    for port in items(o, "ports") {
        default_value(port, "name", json!(""));
        default_value(port, "protocol", json!("TCP"));
    }
}

fn network_policy(o: &mut Obj) {
    let Some(spec) = ensure(o, "spec") else {
        return;
    };
    if !has_items(spec, "policyTypes") {
        let mut types = vec!["Ingress"];
        if has_items(spec, "egress") {
            types.push("Egress");
        }
        spec.insert("policyTypes".into(), json!(types));
    }
    for key in ["ingress", "egress"] {
        for rule in items(spec, key) {
            for port in items(rule, "ports") {
                default_value(port, "protocol", json!("TCP"));
            }
        }
    }
}

fn ingress_class(o: &mut Obj) {
    if let Some(params) = child(o, "spec").and_then(|s| child(s, "parameters")) {
        default_value(params, "scope", json!("Cluster"));
    }
}

/// A new PDB's status serializes its zero counters.
fn pdb(o: &mut Obj) {
    let Some(status) = ensure(o, "status") else {
        return;
    };
    for key in ["disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods"] {
        default_value(status, key, json!(0));
    }
}

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn role_binding(o: &mut Obj) {
    if let Some(role_ref) = ensure(o, "roleRef") {
        default_str(role_ref, "apiGroup", RBAC_GROUP);
    }
    for subject in items(o, "subjects") {
        if matches!(str_of(subject, "kind"), "User" | "Group") {
            default_str(subject, "apiGroup", RBAC_GROUP);
        }
    }
}

fn storage_class(o: &mut Obj) {
    default_value(o, "reclaimPolicy", json!("Delete"));
    default_value(o, "volumeBindingMode", json!("Immediate"));
}

fn csi_driver(o: &mut Obj) {
    let Some(spec) = ensure(o, "spec") else {
        return;
    };
    default_value(spec, "attachRequired", json!(true));
    default_value(spec, "podInfoOnMount", json!(false));
    default_value(spec, "storageCapacity", json!(false));
    default_value(spec, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
    default_value(spec, "requiresRepublish", json!(false));
    if !has_items(spec, "volumeLifecycleModes") {
        spec.insert("volumeLifecycleModes".into(), json!(["Persistent"]));
    }
}

fn webhooks(o: &mut Obj, mutating: bool) {
    for hook in items(o, "webhooks") {
        default_value(hook, "failurePolicy", json!("Fail"));
        default_value(hook, "matchPolicy", json!("Equivalent"));
        default_value(hook, "namespaceSelector", json!({}));
        default_value(hook, "objectSelector", json!({}));
        default_value(hook, "timeoutSeconds", json!(10));
        if mutating {
            default_value(hook, "reinvocationPolicy", json!("Never"));
        }
        for rule in items(hook, "rules") {
            default_value(rule, "scope", json!("*"));
        }
        client_config_port(child(hook, "clientConfig"));
    }
}

/// A webhook client config's service port defaults to 443.
fn client_config_port(client_config: Option<&mut Obj>) {
    if let Some(service) = client_config.and_then(|c| child(c, "service")) {
        default_value(service, "port", json!(443));
    }
}

fn crd(o: &mut Obj) {
    let Some(spec) = ensure(o, "spec") else {
        return;
    };
    if let Some(names) = child(spec, "names") {
        crd_names(names);
    }
    default_value(spec, "conversion", json!({"strategy": "None"}));
    let webhook = child(spec, "conversion").and_then(|c| child(c, "webhook"));
    client_config_port(webhook.and_then(|w| child(w, "clientConfig")));
    let storage = spec
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name").cloned());
    if let (Some(name), Some(status)) = (storage, ensure(o, "status"))
        && !has_items(status, "storedVersions")
    {
        status.insert("storedVersions".into(), json!([name]));
    }
}

fn crd_names(names: &mut Obj) {
    let kind = str_of(names, "kind").to_string();
    if kind.is_empty() {
        return;
    }
    default_str(names, "singular", &kind.to_lowercase());
    default_str(names, "listKind", &format!("{kind}List"));
}

#[cfg(test)]
mod job_selector_tests {
    use super::*;

    #[test]
    fn jobs_select_their_own_uid_unless_the_selector_is_manual() {
        let mut job = json!({"metadata": {"name": "pi", "uid": "u-1"},
            "spec": {"template": {"metadata": {"labels": {"app": "x"}}, "spec": {}}}});
        prepare_for_create("batch", "Job", &mut job);
        assert_eq!(job["spec"]["selector"], json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}}));
        let labels = &job["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["job-name"], "pi");
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], "u-1");
        assert_eq!(labels["app"], "x");

        let mut manual = json!({"metadata": {"name": "m", "uid": "u-2"},
            "spec": {"manualSelector": true, "selector": {"matchLabels": {"a": "b"}}, "template": {}}});
        prepare_for_create("batch", "Job", &mut manual);
        assert_eq!(manual["spec"]["selector"], json!({"matchLabels": {"a": "b"}}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(group: &str, kind: &str, mut v: Value) -> Value {
        apply_defaults(group, kind, &mut v);
        let again = {
            let mut copy = v.clone();
            apply_defaults(group, kind, &mut copy);
            copy
        };
        assert_eq!(again, v, "defaulting {kind} twice must change nothing");
        v
    }

    fn pod_with(container: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [container]}})
    }

    #[test]
    fn pod_spec_and_container_defaults() {
        let pod = defaulted(
            "",
            "Pod",
            pod_with(json!({"name": "c", "image": "nginx:1.27", "ports": [{"containerPort": 80}]})),
        );
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["priority"], 0);
        assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["resources"], json!({}));
        assert_eq!(c["ports"][0], json!({"containerPort": 80, "protocol": "TCP"}));
        assert!(spec.get("serviceAccountName").is_none(), "the ServiceAccount admission step owns this");
    }

    #[test]
    fn default_tolerations_added_once() {
        let defaulted = |_: &str, _: &str, mut pod: Value| {
            default_tolerations(&mut pod, 300, 300);
            default_tolerations(&mut pod, 300, 300);
            pod
        };
        let pod = defaulted("", "Pod", pod_with(json!({"name": "c", "image": "busybox"})));
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ])
        );
        let mut tolerant = pod_with(json!({"name": "c"}));
        tolerant["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
        let pod = defaulted("", "Pod", tolerant);
        assert_eq!(pod["spec"]["tolerations"], json!([{"operator": "Exists"}]));
        let mut partial = pod_with(json!({"name": "c"}));
        partial["spec"]["tolerations"] =
            json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}]);
        let pod = defaulted("", "Pod", partial);
        assert_eq!(pod["spec"]["tolerations"].as_array().map(Vec::len), Some(3));
        let mut quick = pod_with(json!({"name": "c"}));
        default_tolerations(&mut quick, 30, 60);
        let seconds: Vec<_> =
            quick["spec"]["tolerations"].as_array().unwrap().iter().map(|t| &t["tolerationSeconds"]).collect();
        assert_eq!(seconds, [&json!(30), &json!(60)]);
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        let cases = [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("docker.io/library/nginx", "Always"),
            ("localhost:5000/app", "Always"),
            ("localhost:5000/app:v1", "IfNotPresent"),
            ("nginx:1.27", "IfNotPresent"),
            ("nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "IfNotPresent"),
            ("nginx:latest@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "Always"),
            ("Nginx", "IfNotPresent"),
            ("", "IfNotPresent"),
            ("registry.example.com/team/app:latest", "Always"),
            ("[::1]:5000/app", "Always"),
        ];
        for (image, want) in cases {
            assert_eq!(pull_policy(image), want, "{image:?}");
        }
        let pod = defaulted("", "Pod", pod_with(json!({"name": "c", "image": "nginx", "imagePullPolicy": "Never"})));
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Never");
    }

    #[test]
    fn probes_and_handlers() {
        let c = json!({"name": "c", "image": "x:1",
            "livenessProbe": {"httpGet": {"port": 8080}},
            "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 5, "timeoutSeconds": 0},
            "startupProbe": {"grpc": {"port": 9000}},
            "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/quit"}}}});
        let pod = defaulted("", "Pod", pod_with(c));
        let c = &pod["spec"]["containers"][0];
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c["readinessProbe"]["periodSeconds"], 5);
        assert_eq!(c["readinessProbe"]["timeoutSeconds"], 1);
        assert_eq!(c["startupProbe"]["grpc"]["service"], "");
        assert_eq!(c["lifecycle"]["preStop"]["httpGet"], json!({"port": 80, "path": "/quit", "scheme": "HTTP"}));
        assert!(c["livenessProbe"].get("initialDelaySeconds").is_none());
    }

    #[test]
    fn pod_only_defaults() {
        let c = json!({"name": "c", "image": "x:1", "ports": [{"containerPort": 53, "protocol": "UDP"}],
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m"}},
            "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}]});
        let mut pod = pod_with(c.clone());
        pod["spec"]["hostNetwork"] = json!(true);
        let pod = defaulted("", "Pod", pod);
        let got = &pod["spec"]["containers"][0];
        assert_eq!(got["resources"]["requests"], json!({"cpu": "100m", "memory": "128Mi"}));
        assert_eq!(got["ports"][0], json!({"containerPort": 53, "protocol": "UDP", "hostPort": 53}));
        assert_eq!(got["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(got["env"][1]["valueFrom"]["resourceFieldRef"]["divisor"], "0");

        let mut deploy = json!({"spec": {"template": {"spec": {"hostNetwork": true, "containers": [c]}}}});
        apply_defaults("apps", "Deployment", &mut deploy);
        let tspec = &deploy["spec"]["template"]["spec"];
        assert!(tspec.get("enableServiceLinks").is_none());
        assert!(tspec.get("tolerations").is_none());
        assert!(tspec.get("priority").is_none());
        assert_eq!(tspec["containers"][0]["resources"]["requests"], json!({"cpu": "100m"}));
        assert!(tspec["containers"][0]["ports"][0].get("hostPort").is_none());
    }

    #[test]
    fn priority_of_system_classes() {
        let mut pod = pod_with(json!({"name": "c"}));
        pod["spec"]["priorityClassName"] = json!("system-node-critical");
        let pod = defaulted("", "Pod", pod);
        assert_eq!(pod["spec"]["priority"], 2_000_001_000);
        let mut custom = pod_with(json!({"name": "c"}));
        custom["spec"]["priorityClassName"] = json!("high");
        let custom = defaulted("", "Pod", custom);
        assert!(custom["spec"].get("priority").is_none());
        assert!(custom["spec"].get("preemptionPolicy").is_none());
    }

    #[test]
    fn service_account_alias_is_mirrored() {
        let mut pod = pod_with(json!({"name": "c"}));
        pod["spec"]["serviceAccount"] = json!("old");
        let pod = defaulted("", "Pod", pod);
        assert_eq!(pod["spec"]["serviceAccountName"], "old");
        let mut pod = pod_with(json!({"name": "c"}));
        pod["spec"]["serviceAccountName"] = json!("new");
        let pod = defaulted("", "Pod", pod);
        assert_eq!(pod["spec"]["serviceAccount"], "new");
    }

    #[test]
    fn volume_defaults() {
        let mut pod = pod_with(json!({"name": "c"}));
        pod["spec"]["volumes"] = json!([
            {"name": "scratch"},
            {"name": "cfg", "configMap": {"name": "cm"}},
            {"name": "sec", "secret": {"secretName": "s", "defaultMode": 256}},
            {"name": "host", "hostPath": {"path": "/var/log"}},
            {"name": "info", "downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            {"name": "proj", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
            {"name": "eph", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}}}
        ]);
        let pod = defaulted("", "Pod", pod);
        let v = &pod["spec"]["volumes"];
        assert_eq!(v[0], json!({"name": "scratch", "emptyDir": {}}));
        assert_eq!(v[1]["configMap"]["defaultMode"], 420);
        assert_eq!(v[2]["secret"]["defaultMode"], 256);
        assert_eq!(v[3]["hostPath"]["type"], "");
        assert_eq!(v[4]["downwardAPI"]["defaultMode"], 420);
        assert_eq!(v[4]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(v[5]["projected"]["defaultMode"], 420);
        assert_eq!(v[5]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"], 3600);
        assert_eq!(v[6]["ephemeral"]["volumeClaimTemplate"]["spec"]["volumeMode"], "Filesystem");
    }

    #[test]
    fn deployment_defaults() {
        let d = defaulted(
            "apps",
            "Deployment",
            json!({
                "metadata": {"name": "web"},
                "spec": {"selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
            }),
        );
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        let tspec = &spec["template"]["spec"];
        assert_eq!(tspec["restartPolicy"], "Always");
        assert_eq!(tspec["containers"][0]["imagePullPolicy"], "Always");
    }

    #[test]
    fn deployment_recreate_and_partial_rolling_update() {
        let d = defaulted("apps", "Deployment", json!({"spec": {"strategy": {"type": "Recreate"}}}));
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        let d = defaulted(
            "apps",
            "Deployment",
            json!({"spec": {"replicas": 0, "strategy": {"rollingUpdate": {"maxSurge": 1}}}}),
        );
        assert_eq!(d["spec"]["replicas"], 0);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"], json!({"maxSurge": 1, "maxUnavailable": "25%"}));
    }

    #[test]
    fn replica_set_defaults() {
        let rs = defaulted(
            "apps",
            "ReplicaSet",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "a:1"}]}}}}),
        );
        assert_eq!(rs["spec"]["replicas"], 1);
        assert_eq!(rs["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    }

    #[test]
    fn stateful_set_defaults() {
        let s = defaulted(
            "apps",
            "StatefulSet",
            json!({"spec": {
                "serviceName": "db",
                "template": {"spec": {"containers": [{"name": "db", "image": "postgres:16"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]
            }}),
        );
        let spec = &s["spec"];
        assert_eq!(spec["podManagementPolicy"], "OrderedReady");
        assert_eq!(spec["updateStrategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}));
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["serviceName"], "db");
        let claim = &spec["volumeClaimTemplates"][0];
        assert_eq!(claim["apiVersion"], "v1");
        assert_eq!(claim["kind"], "PersistentVolumeClaim");
        assert_eq!(claim["spec"]["volumeMode"], "Filesystem");
        assert_eq!(claim["status"]["phase"], "Pending");

        let s = defaulted("apps", "StatefulSet", json!({"spec": {"updateStrategy": {"type": "RollingUpdate"}}}));
        assert_eq!(s["spec"]["updateStrategy"], json!({"type": "RollingUpdate"}));
        let s = defaulted("apps", "StatefulSet", json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}));
        assert_eq!(s["spec"]["updateStrategy"], json!({"type": "OnDelete"}));
    }

    #[test]
    fn daemon_set_defaults() {
        let ds =
            defaulted("apps", "DaemonSet", json!({"spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}));
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
        let ds = defaulted("apps", "DaemonSet", json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}));
        assert_eq!(ds["spec"]["updateStrategy"], json!({"type": "OnDelete"}));
    }

    #[test]
    fn job_defaults() {
        let j = defaulted(
            "batch",
            "Job",
            json!({
                "metadata": {"name": "pi"},
                "spec": {"template": {"metadata": {"labels": {"app": "pi"}},
                                      "spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl:5.34"}]}}}
            }),
        );
        let spec = &j["spec"];
        assert_eq!(spec["completions"], 1);
        assert_eq!(spec["parallelism"], 1);
        assert_eq!(spec["backoffLimit"], 6);
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["manualSelector"], false);
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(j["metadata"]["labels"], json!({"app": "pi"}));
    }

    #[test]
    fn job_count_and_policy_variants() {
        let j = defaulted("batch", "Job", json!({"spec": {"parallelism": 3}}));
        assert!(j["spec"].get("completions").is_none());
        let j = defaulted("batch", "Job", json!({"spec": {"completions": 5}}));
        assert_eq!(j["spec"]["parallelism"], 1);
        let j = defaulted(
            "batch",
            "Job",
            json!({"spec": {"backoffLimitPerIndex": 1, "completionMode": "Indexed", "completions": 2}}),
        );
        assert_eq!(j["spec"]["backoffLimit"], 2147483647);
        let j = defaulted(
            "batch",
            "Job",
            json!({"metadata": {"labels": {"own": "x"}}, "spec": {
            "template": {"metadata": {"labels": {"app": "pi"}}},
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}}}),
        );
        assert_eq!(j["spec"]["podReplacementPolicy"], "Failed");
        assert_eq!(j["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"], "True");
        assert_eq!(j["metadata"]["labels"], json!({"own": "x"}));
    }

    #[test]
    fn cron_job_defaults() {
        let cj = defaulted(
            "batch",
            "CronJob",
            json!({"spec": {"schedule": "*/1 * * * *", "jobTemplate": {"spec": {
            "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}}}),
        );
        let spec = &cj["spec"];
        assert_eq!(spec["concurrencyPolicy"], "Allow");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["successfulJobsHistoryLimit"], 3);
        assert_eq!(spec["failedJobsHistoryLimit"], 1);
        let job_spec = &spec["jobTemplate"]["spec"];
        assert!(job_spec.get("backoffLimit").is_none());
        assert!(job_spec.get("parallelism").is_none());
        assert_eq!(job_spec["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(job_spec["template"]["spec"]["schedulerName"], "default-scheduler");
    }

    #[test]
    fn service_defaults() {
        let s = defaulted(
            "",
            "Service",
            json!({"spec": {"selector": {"app": "web"}, "ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}}),
        );
        let spec = &s["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["ports"][0], json!({"port": 80, "protocol": "TCP", "targetPort": 80}));
        assert_eq!(spec["ports"][1]["targetPort"], "dns");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert!(spec.get("externalTrafficPolicy").is_none());
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert!(spec.get("clusterIP").is_none(), "allocation is the server's job");
        assert_eq!(s["status"], json!({"loadBalancer": {}}));
    }

    #[test]
    fn service_types_and_affinity() {
        let s = defaulted(
            "",
            "Service",
            json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 443, "targetPort": 0}], "sessionAffinity": "ClientIP"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"hostname": "lb.example.com"}]}}}),
        );
        let spec = &s["spec"];
        assert_eq!(spec["externalTrafficPolicy"], "Cluster");
        assert_eq!(spec["allocateLoadBalancerNodePorts"], true);
        assert_eq!(spec["ports"][0]["targetPort"], 443);
        assert_eq!(spec["sessionAffinityConfig"], json!({"clientIP": {"timeoutSeconds": 10800}}));
        assert_eq!(s["status"]["loadBalancer"]["ingress"][0]["ipMode"], "VIP");
        assert!(s["status"]["loadBalancer"]["ingress"][1].get("ipMode").is_none());

        let s = defaulted(
            "",
            "Service",
            json!({"spec": {"type": "ExternalName", "externalName": "example.com",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}}}),
        );
        assert!(s["spec"].get("internalTrafficPolicy").is_none());
        assert!(s["spec"].get("ipFamilies").is_none());
        assert!(s["spec"].get("sessionAffinityConfig").is_none());

        let s = defaulted("", "Service", json!({"spec": {"externalIPs": ["198.51.100.7"], "ports": [{"port": 1}]}}));
        assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
    }

    #[test]
    fn service_ip_families() {
        let s = defaulted("", "Service", json!({"spec": {"clusterIP": "None", "ports": [{"port": 1}]}}));
        assert_eq!(s["spec"]["ipFamilyPolicy"], "RequireDualStack");
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
        let s = defaulted("", "Service", json!({"spec": {"clusterIP": "None", "selector": {"a": "b"}}}));
        assert_eq!(s["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));
        let s = defaulted("", "Service", json!({"spec": {"clusterIPs": ["fd00::1"], "clusterIP": "fd00::1"}}));
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv6"]));
    }

    #[test]
    fn prepare_for_create_steps() {
        let mut ns = json!({"metadata": {"name": "dev"}});
        prepare_for_create("", "Namespace", &mut ns);
        prepare_for_create("", "Namespace", &mut ns);
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        let mut ns = json!({"metadata": {"name": "dev"}, "spec": {"finalizers": ["example.com/x"]}});
        prepare_for_create("", "Namespace", &mut ns);
        assert_eq!(ns["spec"]["finalizers"], json!(["example.com/x", "kubernetes"]));
        let mut svc = json!({"spec": {"clusterIP": "None"}});
        prepare_for_create("", "Service", &mut svc);
        assert_eq!(svc["spec"]["clusterIPs"], json!(["None"]));
    }

    #[test]
    fn namespace_defaults_keep_finalizers_out() {
        let ns = defaulted("", "Namespace", json!({"metadata": {"name": "dev", "labels": {"team": "a"}}}));
        assert_eq!(ns["metadata"]["labels"], json!({"team": "a", "kubernetes.io/metadata.name": "dev"}));
        assert_eq!(ns["status"]["phase"], "Active");
        assert!(ns.get("spec").is_none(), "the finalizer is create-only (prepare_for_create)");
        let ns = defaulted("", "Namespace", json!({"metadata": {"generateName": "tmp-"}}));
        assert!(ns["metadata"].get("labels").is_none());
    }

    #[test]
    fn secret_defaults_and_string_data() {
        let s = defaulted("", "Secret", json!({"stringData": {"user": "admin"}, "data": {"pass": "cHc="}}));
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["data"], json!({"pass": "cHc=", "user": "YWRtaW4="}));
        assert!(s.get("stringData").is_none());
        let s = defaulted("", "Secret", json!({"type": "kubernetes.io/tls", "stringData": {"a": 1}}));
        assert_eq!(s["type"], "kubernetes.io/tls");
        assert_eq!(s["stringData"], json!({"a": 1}), "invalid stringData is left for validation");
    }

    #[test]
    fn storage_defaults() {
        let pvc = defaulted("", "PersistentVolumeClaim", json!({"spec": {"accessModes": ["ReadWriteOnce"]}}));
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"]["phase"], "Pending");
        let pv =
            defaulted("", "PersistentVolume", json!({"spec": {"hostPath": {"path": "/data"}, "rbd": {"image": "i"}}}));
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pv["spec"]["hostPath"]["type"], "");
        assert_eq!(pv["spec"]["rbd"]["pool"], "rbd");
        assert_eq!(pv["status"]["phase"], "Pending");
        let sc = defaulted("storage.k8s.io", "StorageClass", json!({"provisioner": "x"}));
        assert_eq!(sc["reclaimPolicy"], "Delete");
        assert_eq!(sc["volumeBindingMode"], "Immediate");
        let csi = defaulted("storage.k8s.io", "CSIDriver", json!({"spec": {}}));
        assert_eq!(csi["spec"]["attachRequired"], true);
        assert_eq!(csi["spec"]["volumeLifecycleModes"], json!(["Persistent"]));
    }

    #[test]
    fn endpoints_and_slices() {
        let ep = defaulted(
            "",
            "Endpoints",
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}),
        );
        assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
        let slice =
            defaulted("discovery.k8s.io", "EndpointSlice", json!({"addressType": "IPv4", "ports": [{"port": 80}]}));
        assert_eq!(slice["ports"][0], json!({"port": 80, "name": "", "protocol": "TCP"}));
    }

    #[test]
    fn node_limit_range_and_rc() {
        let node = defaulted("", "Node", json!({"status": {"capacity": {"cpu": "4", "pods": "110"}}}));
        assert_eq!(node["status"]["allocatable"], json!({"cpu": "4", "pods": "110"}));
        let lr = defaulted(
            "",
            "LimitRange",
            json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}]}}),
        );
        let item = &lr["spec"]["limits"][0];
        assert_eq!(item["default"], json!({"cpu": "2"}));
        assert_eq!(item["defaultRequest"], json!({"cpu": "2", "memory": "64Mi"}));
        let rc = defaulted(
            "",
            "ReplicationController",
            json!({"spec": {"template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c"}]}}}}),
        );
        assert_eq!(rc["spec"]["selector"], json!({"app": "a"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "a"}));
        assert_eq!(rc["spec"]["replicas"], 1);
        assert_eq!(rc["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn networking_and_policy() {
        let np = defaulted(
            "networking.k8s.io",
            "NetworkPolicy",
            json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}}),
        );
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
        let np = defaulted("networking.k8s.io", "NetworkPolicy", json!({"spec": {"podSelector": {}}}));
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
        let ic =
            defaulted("networking.k8s.io", "IngressClass", json!({"spec": {"parameters": {"kind": "P", "name": "p"}}}));
        assert_eq!(ic["spec"]["parameters"]["scope"], "Cluster");
        let pdb = defaulted("policy", "PodDisruptionBudget", json!({"spec": {"minAvailable": 1}}));
        assert_eq!(pdb["status"]["disruptionsAllowed"], 0);
        let pc = defaulted("scheduling.k8s.io", "PriorityClass", json!({"value": 1000}));
        assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");
    }

    #[test]
    fn hpa_defaults() {
        let h = defaulted(
            "autoscaling",
            "HorizontalPodAutoscaler",
            json!({"apiVersion": "autoscaling/v2", "spec": {"maxReplicas": 5,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}),
        );
        let spec = &h["spec"];
        assert_eq!(spec["minReplicas"], 1);
        assert_eq!(spec["metrics"][0]["resource"]["target"], json!({"type": "Utilization", "averageUtilization": 80}));
        assert_eq!(
            spec["behavior"]["scaleUp"]["policies"][0],
            json!({"type": "Pods", "value": 4, "periodSeconds": 15})
        );
        assert_eq!(spec["behavior"]["scaleUp"]["stabilizationWindowSeconds"], 0);
        assert_eq!(spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 60);
        assert_eq!(spec["behavior"]["scaleDown"]["selectPolicy"], "Max");
        let h =
            defaulted("autoscaling", "HorizontalPodAutoscaler", json!({"apiVersion": "autoscaling/v2", "spec": {}}));
        assert!(h["spec"].get("behavior").is_none());
        let h =
            defaulted("autoscaling", "HorizontalPodAutoscaler", json!({"apiVersion": "autoscaling/v1", "spec": {}}));
        assert!(h["spec"].get("metrics").is_none());
        assert_eq!(h["spec"]["minReplicas"], 1);
    }

    #[test]
    fn rbac_webhooks_and_crds() {
        let rb = defaulted(
            "rbac.authorization.k8s.io",
            "RoleBinding",
            json!({"roleRef": {"kind": "Role", "name": "r"},
            "subjects": [{"kind": "User", "name": "u"}, {"kind": "ServiceAccount", "name": "s", "namespace": "n"}]}),
        );
        assert_eq!(rb["roleRef"]["apiGroup"], RBAC_GROUP);
        assert_eq!(rb["subjects"][0]["apiGroup"], RBAC_GROUP);
        assert!(rb["subjects"][1].get("apiGroup").is_none());
        let wh = defaulted(
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
            json!({"webhooks": [{"name": "w.example.com",
            "clientConfig": {"service": {"name": "s", "namespace": "n"}}, "rules": [{"operations": ["CREATE"]}], "sideEffects": "None"}]}),
        );
        let hook = &wh["webhooks"][0];
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["matchPolicy"], "Equivalent");
        assert_eq!(hook["namespaceSelector"], json!({}));
        assert_eq!(hook["timeoutSeconds"], 10);
        assert_eq!(hook["reinvocationPolicy"], "Never");
        assert_eq!(hook["rules"][0]["scope"], "*");
        assert_eq!(hook["clientConfig"]["service"]["port"], 443);
        let crd = defaulted(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            json!({"spec": {"names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1alpha1", "storage": false}, {"name": "v1", "storage": true}]}}),
        );
        assert_eq!(crd["spec"]["names"]["singular"], "widget");
        assert_eq!(crd["spec"]["names"]["listKind"], "WidgetList");
        assert_eq!(crd["spec"]["conversion"], json!({"strategy": "None"}));
        assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    }

    #[test]
    fn malformed_input_never_panics() {
        let kinds = [
            ("", "Pod"),
            ("", "Service"),
            ("apps", "Deployment"),
            ("apps", "StatefulSet"),
            ("batch", "Job"),
            ("batch", "CronJob"),
            ("", "Secret"),
            ("", "Namespace"),
            ("autoscaling", "HorizontalPodAutoscaler"),
            ("apiextensions.k8s.io", "CustomResourceDefinition"),
            ("", "LimitRange"),
            ("", "Node"),
        ];
        let inputs = [
            json!(null),
            json!([]),
            json!("x"),
            json!({"spec": 1}),
            json!({"spec": {"template": [], "containers": {}}}),
            json!({"spec": {"containers": [1, {"ports": "x", "image": 7}], "volumes": [null, {}]}, "metadata": 3}),
            json!({"spec": {"template": {"spec": {"containers": [{"livenessProbe": []}]}}, "strategy": "x", "updateStrategy": 1}}),
        ];
        for (group, kind) in kinds {
            for input in &inputs {
                let mut v = input.clone();
                apply_defaults(group, kind, &mut v);
                prepare_for_create(group, kind, &mut v);
            }
        }
    }

    #[test]
    fn unknown_kinds_are_untouched() {
        let obj = json!({"spec": {"containers": [{"name": "c"}]}});
        assert_eq!(defaulted("example.com", "Widget", obj.clone()), obj);
    }
}
