//! The resources the server serves right now: the built-in ones plus those that CRDs add.
//!
//! Readers take a cheap snapshot (`Arc`) and never hold a lock across a request; CRD changes
//! replace the snapshot.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kapal_api::registry::{self, ResourceInfo, Scope, Subresource};
use kapal_api::{Gvk, registry::builtin_resources};
use serde_json::Value;

/// What a CRD adds beyond the [`ResourceInfo`] of one of its versions.
#[derive(Debug, Clone)]
pub struct CustomInfo {
    /// The CRD's name (`widgets.example.com`).
    pub crd_name: String,
    /// This version's openAPIV3Schema, if any.
    pub schema: Option<Value>,
    pub printer_columns: Vec<Value>,
    /// The version objects are stored at.
    pub storage_version: String,
    /// `.spec.replicas`-style paths of the scale subresource.
    pub scale: Option<ScalePaths>,
}

/// JSON paths of a CRD's scale subresource.
#[derive(Debug, Clone)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// One served resource at one version.
#[derive(Debug, Clone)]
pub struct Served {
    pub info: ResourceInfo,
    pub custom: Option<CustomInfo>,
}

impl Served {
    pub fn is_custom(&self) -> bool {
        self.custom.is_some()
    }
}

/// An immutable view of everything served.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub all: Vec<Arc<Served>>,
    by_path: HashMap<(String, String, String), Arc<Served>>,
    /// Bumped on every change, for discovery and OpenAPI caches.
    pub generation: u64,
}

impl Snapshot {
    fn build(all: Vec<Arc<Served>>, generation: u64) -> Snapshot {
        let by_path = all
            .iter()
            .map(|s| ((s.info.group.clone(), s.info.version.clone(), s.info.plural.clone()), s.clone()))
            .collect();
        Snapshot { all, by_path, generation }
    }

    /// The resource served at `/apis/<group>/<version>/<plural>`.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<Served>> {
        self.by_path.get(&(group.to_string(), version.to_string(), plural.to_string()))
    }

    /// The resource of a kind at a version.
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<&Arc<Served>> {
        self.all.iter().find(|s| s.info.group == group && s.info.version == version && s.info.kind == kind)
    }

    /// Groups in discovery order with their versions (preferred first).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for s in &self.all {
            match groups.iter_mut().find(|(g, _)| *g == s.info.group) {
                Some((_, versions)) => {
                    if !versions.contains(&s.info.version) {
                        versions.push(s.info.version.clone());
                    }
                }
                None => groups.push((s.info.group.clone(), vec![s.info.version.clone()])),
            }
        }
        groups
    }

    /// Every resource of one group/version.
    pub fn in_group_version<'a>(&'a self, group: &'a str, version: &'a str) -> impl Iterator<Item = &'a Arc<Served>> {
        self.all.iter().filter(move |s| s.info.group == group && s.info.version == version)
    }
}

/// The live registry.
pub struct Resources {
    builtins: Vec<Arc<Served>>,
    custom: RwLock<HashMap<String, Vec<Arc<Served>>>>,
    snapshot: RwLock<Arc<Snapshot>>,
}

impl Default for Resources {
    fn default() -> Self {
        Self::new()
    }
}

impl Resources {
    pub fn new() -> Resources {
        let builtins: Vec<Arc<Served>> =
            builtin_resources().iter().map(|info| Arc::new(Served { info: info.clone(), custom: None })).collect();
        let snapshot = Arc::new(Snapshot::build(builtins.clone(), 1));
        Resources { builtins, custom: RwLock::new(HashMap::new()), snapshot: RwLock::new(snapshot) }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Adds, replaces or (with `None`) removes the resources of one CRD.
    pub fn set_crd(&self, crd_name: &str, crd: Option<&Value>) {
        let served = crd.map(served_from_crd).unwrap_or_default();
        let mut custom = match self.custom.write() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if served.is_empty() {
            if custom.remove(crd_name).is_none() {
                return;
            }
        } else {
            custom.insert(crd_name.to_string(), served);
        }
        let mut all = self.builtins.clone();
        let mut names: Vec<&String> = custom.keys().collect();
        names.sort();
        for name in names {
            for s in &custom[name] {
                let clash = all.iter().any(|b| {
                    b.info.group == s.info.group && b.info.plural == s.info.plural && b.info.version == s.info.version
                });
                if !clash {
                    all.push(s.clone());
                }
            }
        }
        let mut snapshot = match self.snapshot.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let generation = snapshot.generation + 1;
        *snapshot = Arc::new(Snapshot::build(all, generation));
    }
}

/// The served versions of a CRD object, established ones only.
pub fn served_from_crd(crd: &Value) -> Vec<Arc<Served>> {
    let spec = &crd["spec"];
    let (Some(group), Some(kind), Some(plural)) =
        (spec["group"].as_str(), spec["names"]["kind"].as_str(), spec["names"]["plural"].as_str())
    else {
        return Vec::new();
    };
    if crd["metadata"]["deletionTimestamp"].is_string() {
        return Vec::new();
    }
    let crd_name = crd["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let names = &spec["names"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
    };
    let scope = if spec["scope"].as_str() == Some("Cluster") { Scope::Cluster } else { Scope::Namespaced };
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v["storage"].as_bool() == Some(true))
        .and_then(|v| v["name"].as_str())
        .unwrap_or_default()
        .to_string();
    let mut out = Vec::new();
    for v in versions.iter().filter(|v| v["served"].as_bool() != Some(false)) {
        let Some(version) = v["name"].as_str() else { continue };
        let mut subresources = Vec::new();
        let subs = &v["subresources"];
        if subs["status"].is_object() {
            subresources.push(Subresource {
                name: "status".into(),
                kind: Gvk::new(group, version, kind),
                verbs: vec!["get".into(), "patch".into(), "update".into()],
            });
        }
        let scale = subs["scale"].as_object().map(|s| ScalePaths {
            spec_replicas: s.get("specReplicasPath").and_then(|p| p.as_str()).unwrap_or(".spec.replicas").to_string(),
            status_replicas: s
                .get("statusReplicasPath")
                .and_then(|p| p.as_str())
                .unwrap_or(".status.replicas")
                .to_string(),
            label_selector: s.get("labelSelectorPath").and_then(|p| p.as_str()).map(String::from),
        });
        if scale.is_some() {
            subresources.push(Subresource {
                name: "scale".into(),
                kind: Gvk::new("autoscaling", "v1", "Scale"),
                verbs: vec!["get".into(), "patch".into(), "update".into()],
            });
        }
        let info = ResourceInfo {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            list_kind: names["listKind"].as_str().map(String::from).unwrap_or_else(|| format!("{kind}List")),
            plural: plural.to_string(),
            singular: names["singular"].as_str().map(String::from).unwrap_or_else(|| kind.to_lowercase()),
            scope,
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            verbs: ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            subresources,
            schema_name: None,
        };
        let schema = v["schema"]["openAPIV3Schema"].as_object().map(|_| v["schema"]["openAPIV3Schema"].clone());
        let printer_columns = v["additionalPrinterColumns"].as_array().cloned().unwrap_or_default();
        out.push(Arc::new(Served {
            info,
            custom: Some(CustomInfo {
                crd_name: crd_name.clone(),
                schema,
                printer_columns,
                storage_version: storage_version.clone(),
                scale,
            }),
        }));
    }
    out
}

/// Whether a kind is built in (and so handled by the built-in strategies).
pub fn is_builtin(group: &str, version: &str, kind: &str) -> bool {
    registry::builtin_by_kind(group, version, kind).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crds_add_and_remove_resources() {
        let r = Resources::new();
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"}}}]}
        });
        r.set_crd("widgets.example.com", Some(&crd));
        let snap = r.snapshot();
        let w = snap.get("example.com", "v1", "widgets").unwrap();
        assert_eq!(w.info.short_names, ["wd"]);
        assert!(w.info.has_status());
        assert_eq!(w.custom.as_ref().unwrap().scale.as_ref().unwrap().spec_replicas, ".spec.size");
        r.set_crd("widgets.example.com", None);
        assert!(r.snapshot().get("example.com", "v1", "widgets").is_none());
        assert!(r.snapshot().generation > snap.generation);
    }
}
