//! Watches Nodes, Pods, PodDisruptionBudgets, Namespaces and PriorityClasses with kube-rs
//! watchers (list, then watch, relist on 410) and feeds the scheduler's state. A relist replaces
//! what the scheduler knows, so missed events heal. Scheduling starts once nodes, pods, priority
//! classes and namespaces are listed; a kind that cannot be listed is retried with back-off, and
//! scheduling waits for it, as kube-scheduler waits for its caches to sync.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::Client;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::podinfo::pod_key;
use crate::preemption::Budget;
use crate::scheduler::{Informer, Scheduler};

fn config() -> watcher::Config {
    watcher::Config::default().any_semantic()
}

async fn drive<K, S>(mut stream: S, what: &str, mut on: impl FnMut(Event<K>))
where
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    while let Some(event) = stream.next().await {
        match event {
            Ok(e) => on(e),
            Err(error) => tracing::warn!(%error, kind = what, "watch failed; retrying"),
        }
    }
}

/// Keeps the node cache current.
pub async fn nodes(client: Client, scheduler: Arc<Scheduler>) {
    let stream = watcher::watcher(Api::<Node>::all(client), config()).default_backoff().boxed();
    drive(stream, "Node", |event| match event {
        Event::Init => scheduler.state().nodes_relist_started(),
        Event::InitApply(n) | Event::Apply(n) => scheduler.update(|st| st.apply_node(n)),
        Event::Delete(n) => scheduler.update(|st| {
            st.delete_node(n.metadata.name.as_deref().unwrap_or_default());
            false
        }),
        Event::InitDone => {
            scheduler.update(|st| {
                st.nodes_relist_done();
                true
            });
            scheduler.mark_synced(Informer::Nodes);
        }
    })
    .await
}

/// Keeps the pod cache and the queue current.
pub async fn pods(client: Client, scheduler: Arc<Scheduler>) {
    let stream = watcher::watcher(Api::<Pod>::all(client), config()).default_backoff().boxed();
    drive(stream, "Pod", |event| match event {
        Event::Init => scheduler.state().pods_relist_started(),
        Event::InitApply(p) | Event::Apply(p) => scheduler.update(|st| st.apply_pod(p)),
        Event::Delete(p) => scheduler.update(|st| st.delete_pod(&pod_key(&p))),
        Event::InitDone => {
            scheduler.update(|st| st.pods_relist_done());
            scheduler.mark_synced(Informer::Pods);
        }
    })
    .await
}

/// Keeps PriorityClass values, to resolve `priorityClassName` when the API left `spec.priority` unset.
pub async fn priority_classes(client: Client, scheduler: Arc<Scheduler>) {
    let stream = watcher::watcher(Api::<PriorityClass>::all(client), config()).default_backoff().boxed();
    let mut listing = Vec::new();
    drive(stream, "PriorityClass", |event| match event {
        Event::Init => listing.clear(),
        Event::InitApply(pc) => listing.push(pc),
        Event::Apply(pc) => {
            scheduler.state().priority_classes.insert(pc.metadata.name.clone().unwrap_or_default(), pc.value);
        }
        Event::Delete(pc) => {
            scheduler.state().priority_classes.remove(pc.metadata.name.as_deref().unwrap_or_default());
        }
        Event::InitDone => {
            let classes =
                listing.drain(..).map(|pc| (pc.metadata.name.clone().unwrap_or_default(), pc.value)).collect();
            scheduler.state().priority_classes = classes;
            scheduler.mark_synced(Informer::PriorityClasses);
        }
    })
    .await
}

/// Keeps PodDisruptionBudgets, which preemption tries not to break. Scheduling does not wait
/// for them: until they are listed, preemption sees no budgets.
pub async fn disruption_budgets(client: Client, scheduler: Arc<Scheduler>) {
    let stream = watcher::watcher(Api::<PodDisruptionBudget>::all(client), config()).default_backoff().boxed();
    let key = |pdb: &PodDisruptionBudget| {
        format!(
            "{}/{}",
            pdb.metadata.namespace.as_deref().unwrap_or_default(),
            pdb.metadata.name.as_deref().unwrap_or_default()
        )
    };
    let mut listing = Vec::new();
    drive(stream, "PodDisruptionBudget", |event| match event {
        Event::Init => listing.clear(),
        Event::InitApply(pdb) => listing.push(pdb),
        Event::Apply(pdb) => {
            scheduler.state().budgets.insert(key(&pdb), Budget::new(&pdb));
        }
        Event::Delete(pdb) => {
            scheduler.state().budgets.remove(&key(&pdb));
        }
        Event::InitDone => {
            scheduler.state().budgets = listing.drain(..).map(|pdb| (key(&pdb), Budget::new(&pdb))).collect();
        }
    })
    .await
}

/// Keeps namespace labels, for pod affinity terms with a `namespaceSelector`. A change of labels
/// may make waiting pods schedulable. Scheduling waits for the first listing: before it, a
/// selector would match no namespace and required anti-affinity would be ignored.
pub async fn namespaces(client: Client, scheduler: Arc<Scheduler>) {
    let stream = watcher::watcher(Api::<Namespace>::all(client), config()).default_backoff().boxed();
    let name = |ns: &Namespace| ns.metadata.name.clone().unwrap_or_default();
    let labels = |ns: Namespace| ns.metadata.labels.unwrap_or_default();
    let mut listing = crate::podinfo::NamespaceLabels::new();
    drive(stream, "Namespace", |event| match event {
        Event::Init => listing.clear(),
        Event::InitApply(ns) => {
            listing.insert(name(&ns), labels(ns));
        }
        Event::Apply(ns) => scheduler.update(|st| st.cache.set_namespace(&name(&ns), Some(labels(ns)))),
        Event::Delete(ns) => scheduler.update(|st| st.cache.set_namespace(&name(&ns), None)),
        Event::InitDone => {
            let listed = std::mem::take(&mut listing);
            scheduler.update(|st| st.cache.replace_namespaces(listed));
            scheduler.mark_synced(Informer::Namespaces);
        }
    })
    .await
}
