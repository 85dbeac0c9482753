//! The registry of resource kinds: what the API serves and how each resource is addressed.
//!
//! Built-in kinds are listed once here with their real group, version, scope, short names,
//! categories and subresources; custom resources are added at run time from CRDs through the
//! same [`ResourceInfo`] type, so the rest of the server never distinguishes the two.

use std::sync::LazyLock;

/// A group/version/kind triple. The core group is the empty string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gvk {
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl Gvk {
    pub fn new(group: &str, version: &str, kind: &str) -> Self {
        Gvk { group: group.into(), version: version.into(), kind: kind.into() }
    }

    /// The `apiVersion` string: `v1` for core, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        api_version(&self.group, &self.version)
    }
}

/// The group a resource's objects are stored under (`core` for the core group). Events of
/// events.k8s.io are core Events seen through another schema, as upstream stores them.
pub fn storage_group<'a>(group: &'a str, plural: &str) -> &'a str {
    match (group, plural) {
        ("", _) | ("events.k8s.io", "events") => "core",
        (g, _) => g,
    }
}

/// `v1` for the core group, `group/version` for others.
pub fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() { version.to_string() } else { format!("{group}/{version}") }
}

/// Splits an `apiVersion` into group and version (`v1` → `("", "v1")`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Whether objects of a resource live in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Namespaced,
    Cluster,
}

/// A subresource such as `status`, `scale` or `log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subresource {
    pub name: String,
    /// The kind returned, when it differs from the parent's (e.g. `autoscaling/v1 Scale`).
    pub kind: Gvk,
    pub verbs: Vec<String>,
}

/// Everything the server needs to know to serve one resource at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub scope: Scope,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub verbs: Vec<String>,
    pub subresources: Vec<Subresource>,
    /// Name of the k8s-openapi schema (`io.k8s.api.core.v1.Pod`) for built-in kinds.
    pub schema_name: Option<String>,
}

impl ResourceInfo {
    pub fn gvk(&self) -> Gvk {
        Gvk::new(&self.group, &self.version, &self.kind)
    }

    pub fn api_version(&self) -> String {
        api_version(&self.group, &self.version)
    }

    pub fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }

    /// `deployments.apps`, or `pods` for the core group: how Status messages name a resource.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    pub fn subresource(&self, name: &str) -> Option<&Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    pub fn has_status(&self) -> bool {
        self.subresource("status").is_some()
    }

    /// The storage key prefix of this resource: `/registry/<group>/<plural>/`.
    /// All versions of a resource share one prefix, and a resource served in two groups
    /// (events) is stored once, under the group that stores it.
    pub fn key_prefix(&self) -> String {
        let group = storage_group(&self.group, &self.plural);
        format!("/registry/{group}/{}/", self.plural)
    }

    /// The storage key prefix of this resource in one namespace (or all, when `None`).
    pub fn namespace_prefix(&self, namespace: Option<&str>) -> String {
        match (self.scope, namespace) {
            (Scope::Namespaced, Some(ns)) => format!("{}{ns}/", self.key_prefix()),
            _ => self.key_prefix(),
        }
    }

    /// The storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.scope, namespace) {
            (Scope::Namespaced, Some(ns)) => format!("{}{ns}/{name}", self.key_prefix()),
            _ => format!("{}{name}", self.key_prefix()),
        }
    }
}

const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

struct Def {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    scope: Scope,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    /// Subresources: `status`, `scale` (autoscaling/v1 Scale) or named with their kind and verbs.
    subs: &'static [(&'static str, &'static str, &'static str, &'static str, &'static [&'static str])],
    schema: &'static str,
}

const NS: Scope = Scope::Namespaced;
const CL: Scope = Scope::Cluster;
const STATUS: (&str, &str, &str, &str, &[&str]) = ("status", "", "", "", STATUS_VERBS);
const SCALE: (&str, &str, &str, &str, &[&str]) = ("scale", "autoscaling", "v1", "Scale", STATUS_VERBS);

macro_rules! def {
    ($g:expr, $v:expr, $k:expr, $p:expr, $scope:expr, [$($s:expr),*], [$($c:expr),*], [$($sub:expr),*], $schema:expr) => {
        Def { group: $g, version: $v, kind: $k, plural: $p, scope: $scope, short: &[$($s),*],
              categories: &[$($c),*], subs: &[$($sub),*], schema: $schema }
    };
}

#[rustfmt::skip]
const BUILTIN: &[Def] = &[
    def!("", "v1", "Namespace", "namespaces", CL, ["ns"], [], [STATUS, ("finalize", "", "", "", &["update"])], "io.k8s.api.core.v1.Namespace"),
    def!("", "v1", "Pod", "pods", NS, ["po"], ["all"], [STATUS,
        ("binding", "", "v1", "Binding", &["create"]),
        ("eviction", "policy", "v1", "Eviction", &["create"]),
        ("log", "", "v1", "Pod", &["get"]),
        ("exec", "", "v1", "PodExecOptions", &["create", "get"]),
        ("attach", "", "v1", "PodAttachOptions", &["create", "get"]),
        ("portforward", "", "v1", "PodPortForwardOptions", &["create", "get"]),
        ("ephemeralcontainers", "", "", "", STATUS_VERBS)], "io.k8s.api.core.v1.Pod"),
    def!("", "v1", "Service", "services", NS, ["svc"], ["all"], [STATUS], "io.k8s.api.core.v1.Service"),
    def!("", "v1", "Endpoints", "endpoints", NS, ["ep"], [], [], "io.k8s.api.core.v1.Endpoints"),
    def!("", "v1", "ConfigMap", "configmaps", NS, ["cm"], [], [], "io.k8s.api.core.v1.ConfigMap"),
    def!("", "v1", "Secret", "secrets", NS, [], [], [], "io.k8s.api.core.v1.Secret"),
    def!("", "v1", "ServiceAccount", "serviceaccounts", NS, ["sa"], [], [("token", "authentication.k8s.io", "v1", "TokenRequest", &["create"])], "io.k8s.api.core.v1.ServiceAccount"),
    def!("", "v1", "Node", "nodes", CL, ["no"], [], [STATUS], "io.k8s.api.core.v1.Node"),
    def!("", "v1", "Event", "events", NS, ["ev"], [], [], "io.k8s.api.core.v1.Event"),
    def!("", "v1", "PersistentVolume", "persistentvolumes", CL, ["pv"], [], [STATUS], "io.k8s.api.core.v1.PersistentVolume"),
    def!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", NS, ["pvc"], [], [STATUS], "io.k8s.api.core.v1.PersistentVolumeClaim"),
    def!("", "v1", "LimitRange", "limitranges", NS, ["limits"], [], [], "io.k8s.api.core.v1.LimitRange"),
    def!("", "v1", "ResourceQuota", "resourcequotas", NS, ["quota"], [], [STATUS], "io.k8s.api.core.v1.ResourceQuota"),
    def!("", "v1", "PodTemplate", "podtemplates", NS, [], [], [], "io.k8s.api.core.v1.PodTemplate"),
    def!("apps", "v1", "Deployment", "deployments", NS, ["deploy"], ["all"], [STATUS, SCALE], "io.k8s.api.apps.v1.Deployment"),
    def!("apps", "v1", "ReplicaSet", "replicasets", NS, ["rs"], ["all"], [STATUS, SCALE], "io.k8s.api.apps.v1.ReplicaSet"),
    def!("apps", "v1", "StatefulSet", "statefulsets", NS, ["sts"], ["all"], [STATUS, SCALE], "io.k8s.api.apps.v1.StatefulSet"),
    def!("apps", "v1", "DaemonSet", "daemonsets", NS, ["ds"], ["all"], [STATUS], "io.k8s.api.apps.v1.DaemonSet"),
    def!("apps", "v1", "ControllerRevision", "controllerrevisions", NS, [], [], [], "io.k8s.api.apps.v1.ControllerRevision"),
    def!("batch", "v1", "Job", "jobs", NS, [], ["all"], [STATUS], "io.k8s.api.batch.v1.Job"),
    def!("batch", "v1", "CronJob", "cronjobs", NS, ["cj"], ["all"], [STATUS], "io.k8s.api.batch.v1.CronJob"),
    def!("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", NS, ["hpa"], ["all"], [STATUS], "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler"),
    // Served at v1 too (`kubectl autoscale` uses it), stored as v2 and converted.
    def!("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", NS, ["hpa"], ["all"], [STATUS], "io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler"),
    def!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", NS, [], [], [], "io.k8s.api.discovery.v1.EndpointSlice"),
    def!("coordination.k8s.io", "v1", "Lease", "leases", NS, [], [], [], "io.k8s.api.coordination.v1.Lease"),
    def!("events.k8s.io", "v1", "Event", "events", NS, ["ev"], [], [], "io.k8s.api.events.v1.Event"),
    def!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", NS, ["pdb"], [], [STATUS], "io.k8s.api.policy.v1.PodDisruptionBudget"),
    def!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", NS, ["netpol"], [], [], "io.k8s.api.networking.v1.NetworkPolicy"),
    def!("networking.k8s.io", "v1", "Ingress", "ingresses", NS, ["ing"], [], [STATUS], "io.k8s.api.networking.v1.Ingress"),
    def!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", CL, [], [], [], "io.k8s.api.networking.v1.IngressClass"),
    def!("rbac.authorization.k8s.io", "v1", "Role", "roles", NS, [], [], [], "io.k8s.api.rbac.v1.Role"),
    def!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", NS, [], [], [], "io.k8s.api.rbac.v1.RoleBinding"),
    def!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", CL, [], [], [], "io.k8s.api.rbac.v1.ClusterRole"),
    def!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", CL, [], [], [], "io.k8s.api.rbac.v1.ClusterRoleBinding"),
    def!("storage.k8s.io", "v1", "StorageClass", "storageclasses", CL, ["sc"], [], [], "io.k8s.api.storage.v1.StorageClass"),
    def!("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", CL, [], [], [], "io.k8s.api.node.v1.RuntimeClass"),
    def!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", CL, ["pc"], [], [], "io.k8s.api.scheduling.v1.PriorityClass"),
    def!("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", CL, ["crd", "crds"], [], [STATUS],
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"),
];

fn build(def: &Def) -> ResourceInfo {
    let subresources = def
        .subs
        .iter()
        .map(|&(name, g, v, k, verbs)| Subresource {
            name: name.to_string(),
            kind: if k.is_empty() { Gvk::new(def.group, def.version, def.kind) } else { Gvk::new(g, v, k) },
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
        })
        .collect();
    ResourceInfo {
        group: def.group.into(),
        version: def.version.into(),
        kind: def.kind.into(),
        list_kind: format!("{}List", def.kind),
        plural: def.plural.into(),
        singular: def.kind.to_lowercase(),
        scope: def.scope,
        short_names: def.short.iter().map(|s| s.to_string()).collect(),
        categories: def.categories.iter().map(|s| s.to_string()).collect(),
        verbs: ALL_VERBS.iter().map(|s| s.to_string()).collect(),
        subresources,
        schema_name: Some(def.schema.to_string()),
    }
}

static BUILTINS: LazyLock<Vec<ResourceInfo>> = LazyLock::new(|| BUILTIN.iter().map(build).collect());

/// Every built-in resource, in the order discovery lists them (core first, then by group).
pub fn builtin_resources() -> &'static [ResourceInfo] {
    &BUILTINS
}

/// The built-in resource serving `group/version/plural`, if any.
pub fn builtin(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    BUILTINS.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The built-in resource of a kind, if any.
pub fn builtin_by_kind(group: &str, version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    BUILTINS.iter().find(|r| r.group == group && r.version == version && r.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_namespaces_and_groups() {
        let pods = builtin("", "v1", "pods").unwrap();
        assert_eq!(pods.key(Some("default"), "web"), "/registry/core/pods/default/web");
        assert_eq!(pods.namespace_prefix(Some("a")), "/registry/core/pods/a/");
        let ns = builtin("", "v1", "namespaces").unwrap();
        assert_eq!(ns.key(None, "kube-system"), "/registry/core/namespaces/kube-system");
        let events = builtin("events.k8s.io", "v1", "events").unwrap();
        assert_eq!(events.key(Some("ns"), "e"), "/registry/core/events/ns/e");
        let deploy = builtin("apps", "v1", "deployments").unwrap();
        assert_eq!(deploy.qualified_plural(), "deployments.apps");
        assert_eq!(deploy.subresource("scale").unwrap().kind, Gvk::new("autoscaling", "v1", "Scale"));
    }

    #[test]
    fn every_builtin_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in builtin_resources() {
            assert!(seen.insert((r.group.clone(), r.version.clone(), r.plural.clone())), "{}", r.plural);
        }
    }
}
