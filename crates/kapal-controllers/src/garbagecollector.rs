//! The garbage collector: deletes objects whose owners are gone, and carries out foreground and
//! orphan deletion of owners.
//!
//! It watches the metadata of every resource that can be listed, watched and deleted, and keeps
//! a graph of ownerReferences (by uid). Work is per object uid on a [`WorkQueue`]:
//! - a dependent all of whose owners are gone is deleted (background; foreground if an owner
//!   is itself being deleted in the foreground); owners that are gone are dropped from a
//!   dependent that still has others;
//! - an owner being deleted with the `orphan` finalizer has its uid removed from every
//!   dependent, then the finalizer removed;
//! - an owner being deleted with the `foregroundDeletion` finalizer has its dependents deleted
//!   in the foreground, and the finalizer removed once no dependent with `blockOwnerDeletion`
//!   remains.
//!
//! Before deleting anything because an owner is missing from the graph, the owner is looked up
//! live: the graph may simply not have seen it yet.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::core::PartialObjectMeta;
use kube::discovery::{ApiResource, Discovery, Scope, verbs};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::workqueue::WorkQueue;

const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";
const WORKERS: usize = 8;
const RESYNC: Duration = Duration::from_secs(30);

/// What can go wrong with one object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("discovering resources: {0}")]
    Discovery(#[source] kube::Error),
    #[error("{action} {kind} {name}: {source}")]
    Api { action: &'static str, kind: String, name: String, source: kube::Error },
}

/// A resource the collector watches.
#[derive(Debug)]
struct Resource {
    ar: ApiResource,
    namespaced: bool,
}

/// One object in the graph.
#[derive(Debug, Clone)]
struct Object {
    resource: Arc<Resource>,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct Graph {
    objects: HashMap<String, Object>,
    /// owner uid → dependent uids.
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    fn upsert(&mut self, uid: &str, object: Object) {
        self.unlink(uid);
        for owner in &object.owners {
            self.dependents.entry(owner.uid.clone()).or_default().insert(uid.to_string());
        }
        self.objects.insert(uid.to_string(), object);
    }

    fn remove(&mut self, uid: &str) -> Option<Object> {
        self.unlink(uid);
        self.objects.remove(uid)
    }

    fn unlink(&mut self, uid: &str) {
        let Some(old) = self.objects.get(uid) else { return };
        for owner in &old.owners {
            if let Some(set) = self.dependents.get_mut(&owner.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&owner.uid);
                }
            }
        }
    }

    fn dependents_of(&self, uid: &str) -> Vec<String> {
        self.dependents.get(uid).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
}

struct Collector {
    client: Client,
    graph: Mutex<Graph>,
    queue: WorkQueue<String>,
    /// (apiVersion, kind) → resource, for looking owners up live.
    kinds: Mutex<HashMap<(String, String), Arc<Resource>>>,
}

impl Collector {
    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn resource_for(&self, api_version: &str, kind: &str) -> Option<Arc<Resource>> {
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        kinds.get(&(api_version.to_string(), kind.to_string())).cloned()
    }

    /// Records a watch event and queues what it may have changed.
    fn observe(&self, resource: &Arc<Resource>, meta: &PartialObjectMeta<DynamicObject>, gone: bool) {
        let Some(uid) = meta.uid() else { return };
        let object = Object {
            resource: resource.clone(),
            namespace: meta.namespace(),
            name: meta.name_any(),
            owners: meta.owner_references().to_vec(),
            deleting: meta.metadata.deletion_timestamp.is_some(),
            finalizers: meta.finalizers().to_vec(),
        };
        let mut graph = self.graph();
        // An owner deleting in the foreground waits for this object: let it look again.
        for owner in &object.owners {
            if graph.objects.get(&owner.uid).is_some_and(|o| o.deleting && has_our_finalizer(o)) {
                self.queue.add(owner.uid.clone());
            }
        }
        if gone {
            graph.remove(&uid);
        } else {
            let interesting = !object.owners.is_empty() || (object.deleting && has_our_finalizer(&object));
            graph.upsert(&uid, object);
            if interesting {
                self.queue.add(uid.clone());
            }
        }
        // Whatever happened to an owner matters to its dependents.
        for dependent in graph.dependents_of(&uid) {
            self.queue.add(dependent);
        }
    }

    fn resync(&self) {
        let graph = self.graph();
        for (uid, object) in &graph.objects {
            if !object.owners.is_empty() || (object.deleting && has_our_finalizer(object)) {
                self.queue.add(uid.clone());
            }
        }
    }

    fn api(&self, resource: &Resource, namespace: Option<&str>) -> Api<DynamicObject> {
        match (resource.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &resource.ar),
            _ => Api::all_with(self.client.clone(), &resource.ar),
        }
    }

    async fn process(&self, uid: &str) -> Result<(), Error> {
        let Some(object) = self.graph().objects.get(uid).cloned() else { return Ok(()) };
        if object.deleting && object.finalizers.iter().any(|f| f == ORPHAN) {
            return self.orphan_dependents(uid, &object).await;
        }
        if object.deleting && object.finalizers.iter().any(|f| f == FOREGROUND) {
            return self.delete_dependents(uid, &object).await;
        }
        if !object.owners.is_empty() {
            return self.check_owners(uid, &object).await;
        }
        Ok(())
    }

    /// Whether `owner` (of an object in `namespace`) exists with its uid; `None` when its kind
    /// is unknown and it cannot be checked.
    async fn owner_state(&self, owner: &OwnerReference, namespace: Option<&str>) -> Result<Option<Owner>, Error> {
        if let Some(object) = self.graph().objects.get(&owner.uid) {
            let foreground = object.deleting && object.finalizers.iter().any(|f| f == FOREGROUND);
            return Ok(Some(if foreground { Owner::DeletingInForeground } else { Owner::Present }));
        }
        let Some(resource) = self.resource_for(&owner.api_version, &owner.kind) else { return Ok(None) };
        let namespace = if resource.namespaced { namespace } else { None };
        let api = self.api(&resource, namespace);
        match api.get_metadata_opt(&owner.name).await {
            Ok(Some(found)) if found.uid().as_deref() == Some(owner.uid.as_str()) => Ok(Some(Owner::Present)),
            Ok(_) => Ok(Some(Owner::Gone)),
            Err(source) => Err(Error::Api {
                action: "looking up owner",
                kind: owner.kind.clone(),
                name: owner.name.clone(),
                source,
            }),
        }
    }

    async fn check_owners(&self, uid: &str, object: &Object) -> Result<(), Error> {
        let mut gone = Vec::new();
        let mut blocking_foreground = false;
        let mut alive = 0;
        for owner in &object.owners {
            match self.owner_state(owner, object.namespace.as_deref()).await? {
                Some(Owner::Gone) => gone.push(owner.uid.clone()),
                Some(Owner::DeletingInForeground) => {
                    alive += 1;
                    blocking_foreground |= owner.block_owner_deletion == Some(true);
                }
                Some(Owner::Present) | None => alive += 1,
            }
        }
        if object.deleting {
            return Ok(());
        }
        if alive == 0 {
            return self.delete(uid, object, PropagationPolicy::Background).await;
        }
        if blocking_foreground && object.owners.len() == 1 {
            return self.delete(uid, object, PropagationPolicy::Foreground).await;
        }
        if !gone.is_empty() {
            let keep: Vec<&OwnerReference> = object.owners.iter().filter(|o| !gone.contains(&o.uid)).collect();
            return self.set_owners(uid, object, &keep).await;
        }
        Ok(())
    }

    async fn delete(&self, uid: &str, object: &Object, policy: PropagationPolicy) -> Result<(), Error> {
        tracing::info!(kind = %object.resource.ar.kind, name = %object.name, namespace = ?object.namespace,
            ?policy, "deleting object whose owners are gone or going");
        let params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
            ..DeleteParams::default()
        };
        let api = self.api(&object.resource, object.namespace.as_deref());
        match api.delete(&object.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(source) => Err(Error::Api {
                action: "deleting",
                kind: object.resource.ar.kind.clone(),
                name: object.name.clone(),
                source,
            }),
        }
    }

    async fn set_owners(&self, uid: &str, object: &Object, owners: &[&OwnerReference]) -> Result<(), Error> {
        let patch = json!({"metadata": {"uid": uid, "ownerReferences": owners}});
        self.patch_metadata(object, patch, "updating ownerReferences of").await
    }

    async fn remove_finalizer(&self, uid: &str, object: &Object, finalizer: &str) -> Result<(), Error> {
        let keep: Vec<&String> = object.finalizers.iter().filter(|f| *f != finalizer).collect();
        let patch = json!({"metadata": {"uid": uid, "finalizers": keep}});
        self.patch_metadata(object, patch, "removing a finalizer of").await
    }

    /// A merge patch of `object`'s metadata, guarded by its uid; an object that is gone or was
    /// replaced needs nothing more.
    async fn patch_metadata(
        &self,
        object: &Object,
        patch: serde_json::Value,
        action: &'static str,
    ) -> Result<(), Error> {
        let api = self.api(&object.resource, object.namespace.as_deref());
        match api.patch_metadata(&object.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(source) => {
                Err(Error::Api { action, kind: object.resource.ar.kind.clone(), name: object.name.clone(), source })
            }
        }
    }

    /// The dependents of `uid` in the graph, with their uids.
    fn dependents(&self, uid: &str) -> Vec<(String, Object)> {
        let graph = self.graph();
        graph.dependents_of(uid).into_iter().filter_map(|d| graph.objects.get(&d).cloned().map(|o| (d, o))).collect()
    }

    async fn orphan_dependents(&self, uid: &str, owner: &Object) -> Result<(), Error> {
        for (dependent_uid, dependent) in self.dependents(uid) {
            let keep: Vec<&OwnerReference> = dependent.owners.iter().filter(|o| o.uid != uid).collect();
            self.set_owners(&dependent_uid, &dependent, &keep).await?;
        }
        self.remove_finalizer(uid, owner, ORPHAN).await
    }

    async fn delete_dependents(&self, uid: &str, owner: &Object) -> Result<(), Error> {
        let mut blocking = 0;
        for (dependent_uid, dependent) in &self.dependents(uid) {
            let blocks = dependent.owners.iter().any(|o| o.uid == uid && o.block_owner_deletion == Some(true));
            blocking += usize::from(blocks);
            if !dependent.deleting {
                self.delete(dependent_uid, dependent, PropagationPolicy::Foreground).await?;
            }
        }
        if blocking == 0 {
            self.remove_finalizer(uid, owner, FOREGROUND).await?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Owner {
    Present,
    DeletingInForeground,
    Gone,
}

fn has_our_finalizer(object: &Object) -> bool {
    object.finalizers.iter().any(|f| f == ORPHAN || f == FOREGROUND)
}

/// Runs the collector.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let collector = Arc::new(Collector {
        client: client.clone(),
        graph: Mutex::default(),
        queue: WorkQueue::default(),
        kinds: Mutex::default(),
    });
    for _ in 0..WORKERS {
        tokio::spawn(work(collector.clone()));
    }
    let mut watched: HashSet<(String, String)> = HashSet::new();
    let mut watchers = tokio::task::JoinSet::new();
    loop {
        match discover(&client).await {
            Ok(resources) => {
                for (resource, watch_it) in resources {
                    let key = (resource.ar.api_version.clone(), resource.ar.kind.clone());
                    collector.kinds.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), resource.clone());
                    if watch_it && watched.insert(key) {
                        watchers.spawn(watch(collector.clone(), resource));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "garbage collector discovery"),
        }
        tokio::time::sleep(RESYNC).await;
        collector.resync();
    }
}

async fn work(collector: Arc<Collector>) {
    loop {
        let uid = collector.queue.next().await;
        if let Err(error) = collector.process(&uid).await {
            tracing::warn!(%error, "garbage collector");
            let (collector, uid) = (collector.clone(), uid.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                collector.queue.add(uid);
            });
        }
        collector.queue.done(&uid);
    }
}

/// Every resource that can be listed, watched and deleted, with whether to watch it: its
/// preferred version is watched, the other versions are known only to look owners up by the
/// apiVersion their references name. Events are left alone, as upstream does.
async fn discover(client: &Client) -> Result<Vec<(Arc<Resource>, bool)>, Error> {
    let discovery = Discovery::new(client.clone()).run().await.map_err(Error::Discovery)?;
    let mut resources = Vec::new();
    for group in discovery.groups() {
        let preferred = group.preferred_version_or_latest().to_string();
        for version in group.versions() {
            for (ar, caps) in group.versioned_resources(version) {
                let usable = [verbs::LIST, verbs::WATCH, verbs::DELETE].iter().all(|v| caps.supports_operation(v));
                if !usable || ar.plural == "events" {
                    continue;
                }
                let namespaced = caps.scope == Scope::Namespaced;
                resources.push((Arc::new(Resource { ar, namespaced }), version == preferred));
            }
        }
    }
    Ok(resources)
}

async fn watch(collector: Arc<Collector>, resource: Arc<Resource>) {
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(collector.client.clone(), &resource.ar);
    let mut seen_in_relist: Option<HashSet<String>> = None;
    let mut stream = watcher::watcher(api, watcher::Config::default().any_semantic()).boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(meta)) => collector.observe(&resource, &meta, false),
            Ok(Event::Delete(meta)) => collector.observe(&resource, &meta, true),
            Ok(Event::Init) => seen_in_relist = Some(HashSet::new()),
            Ok(Event::InitApply(meta)) => {
                if let (Some(seen), Some(uid)) = (seen_in_relist.as_mut(), meta.uid()) {
                    seen.insert(uid);
                }
                collector.observe(&resource, &meta, false);
            }
            Ok(Event::InitDone) => {
                if let Some(seen) = seen_in_relist.take() {
                    forget_unseen(&collector, &resource, &seen);
                }
            }
            Err(e) => {
                tracing::debug!(kind = %resource.ar.kind, error = %e, "garbage collector watch");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// After a relist, objects of this resource that the list no longer has were deleted while the
/// watch was down: drop them and let their dependents be checked.
fn forget_unseen(collector: &Collector, resource: &Arc<Resource>, seen: &HashSet<String>) {
    let mut graph = collector.graph();
    let stale: Vec<String> = graph
        .objects
        .iter()
        .filter(|(uid, o)| Arc::ptr_eq(&o.resource, resource) && !seen.contains(*uid))
        .map(|(uid, _)| uid.clone())
        .collect();
    for uid in stale {
        graph.remove(&uid);
        for dependent in graph.dependents_of(&uid) {
            collector.queue.add(dependent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource() -> Arc<Resource> {
        Arc::new(Resource { ar: ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()), namespaced: true })
    }

    fn object(owners: &[&str]) -> Object {
        Object {
            resource: resource(),
            namespace: Some("default".into()),
            name: "x".into(),
            owners: owners
                .iter()
                .map(|uid| OwnerReference { uid: uid.to_string(), ..OwnerReference::default() })
                .collect(),
            deleting: false,
            finalizers: vec![],
        }
    }

    #[test]
    fn the_graph_indexes_dependents_by_owner_and_forgets_them() {
        let mut graph = Graph::default();
        graph.upsert("pod-1", object(&["rs"]));
        graph.upsert("pod-2", object(&["rs", "other"]));
        let mut deps = graph.dependents_of("rs");
        deps.sort();
        assert_eq!(deps, ["pod-1", "pod-2"]);
        graph.upsert("pod-2", object(&["other"]));
        assert_eq!(graph.dependents_of("rs"), ["pod-1"]);
        graph.remove("pod-1");
        assert!(graph.dependents_of("rs").is_empty());
        assert!(!graph.dependents.contains_key("rs"));
    }
}
