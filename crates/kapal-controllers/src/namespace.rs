//! The namespace controller: empties a namespace that is being deleted, then releases its
//! `kubernetes` finalizer so the API server removes it. While it works it reports progress in
//! the namespace's status conditions, as upstream does, so that `kubectl describe namespace`
//! says what a stuck deletion waits for (`NamespaceContentRemaining`,
//! `NamespaceFinalizersRemaining`, `NamespaceDeletionContentFailure`,
//! `NamespaceDeletionDiscoveryFailure`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

/// The finalizer this controller owns, in `spec.finalizers`.
pub const FINALIZER: &str = "kubernetes";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("discovering namespaced resources: {0}")]
    Discovery(#[source] kube::Error),
    #[error("deleting {resource} in namespace {namespace}: {source}")]
    Delete { resource: String, namespace: String, source: kube::Error },
    #[error("finalizing namespace {0}: {1}")]
    Finalize(String, #[source] kube::Error),
    #[error("updating the status of namespace {0}: {1}")]
    Status(String, #[source] kube::Error),
}

struct Ctx {
    client: Client,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    Controller::new(namespaces, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "namespace reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(_ns: Arc<Namespace>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "namespace controller");
    Action::requeue(Duration::from_secs(2))
}

fn holds_finalizer(ns: &Namespace) -> bool {
    ns.spec.as_ref().and_then(|s| s.finalizers.as_ref()).is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_none() || !holds_finalizer(&ns) {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let progress = match delete_content(&ctx.client, &name).await {
        Ok(progress) => progress,
        Err(Error::Discovery(e)) => {
            let failed = Progress { discovery_failure: Some(e.to_string()), ..Progress::default() };
            report(&ctx.client, &ns, &failed).await?;
            return Err(Error::Discovery(e));
        }
        Err(e) => return Err(e),
    };
    report(&ctx.client, &ns, &progress).await?;
    if let Some((resource, error)) = progress.failures.into_iter().next() {
        return Err(Error::Delete { resource, namespace: name, source: error });
    }
    let remaining: usize = progress.remaining.values().sum();
    if remaining > 0 {
        tracing::info!(namespace = %name, remaining, "waiting for namespace content to go away");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let mut finalized = (*ns).clone();
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers =
            Some(spec.finalizers.take().unwrap_or_default().into_iter().filter(|f| f != FINALIZER).collect());
    }
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api.replace_subresource("finalize", &name, &PostParams::default(), &finalized).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(Error::Finalize(name, e)),
    }
    tracing::info!(namespace = %name, "namespace finalized");
    Ok(Action::await_change())
}

/// Where the deletion of a namespace's content stands after one pass.
#[derive(Debug, Default)]
struct Progress {
    /// Why discovery failed, if it did.
    discovery_failure: Option<String>,
    /// Resources (`pods`, `deployments.apps`) whose delete failed, with the error.
    failures: Vec<(String, kube::Error)>,
    /// Objects left, by resource.
    remaining: BTreeMap<String, usize>,
    /// Objects left, by finalizer they still carry.
    finalizers: BTreeMap<String, usize>,
}

/// Deletes every namespaced object in `namespace`; says what is still there.
async fn delete_content(client: &Client, namespace: &str) -> Result<Progress, Error> {
    let discovery = Discovery::new(client.clone()).run().await.map_err(Error::Discovery)?;
    let mut progress = Progress::default();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !deletable(&caps) {
                continue;
            }
            let resource = if ar.group.is_empty() { ar.plural.clone() } else { format!("{}.{}", ar.plural, ar.group) };
            match delete_all(client, namespace, &ar).await {
                Ok(left) => {
                    if !left.is_empty() {
                        progress.remaining.insert(resource, left.len());
                    }
                    for finalizer in left.iter().flat_map(|o| o.finalizers()) {
                        *progress.finalizers.entry(finalizer.clone()).or_default() += 1;
                    }
                }
                Err(error) => progress.failures.push((resource, error)),
            }
        }
    }
    Ok(progress)
}

fn deletable(caps: &ApiCapabilities) -> bool {
    caps.scope == Scope::Namespaced
        && caps.supports_operation(verbs::DELETE_COLLECTION)
        && caps.supports_operation(verbs::LIST)
}

/// Deletes a resource's objects in `namespace`; returns the metadata of those still there.
async fn delete_all(
    client: &Client,
    namespace: &str,
    ar: &ApiResource,
) -> Result<Vec<kube::core::PartialObjectMeta<DynamicObject>>, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
    match api.delete_collection(&DeleteParams::background(), &ListParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    Ok(api.list_metadata(&ListParams::default()).await?.items)
}

/// Upstream's deletion conditions for `progress`, in upstream's order, with its reasons and
/// messages.
fn conditions(progress: &Progress) -> Vec<(&'static str, bool, &'static str, String)> {
    let (discovery_failed, discovery_reason, discovery_message) = match &progress.discovery_failure {
        Some(e) => (true, "DiscoveryFailed", format!("Discovery failed for some groups, 1 failing: {e}")),
        None => (false, "ResourcesDiscovered", "All resources successfully discovered".to_string()),
    };
    let (failed, failed_reason, failed_message) = if progress.failures.is_empty() {
        (false, "ContentDeleted", "All content successfully deleted, may be waiting on finalization".to_string())
    } else {
        let errors: Vec<String> = progress.failures.iter().map(|(r, e)| format!("{r}: {e}")).collect();
        let message = format!("Failed to delete all resource types, {} remaining: {}", errors.len(), errors.join(", "));
        (true, "ContentDeletionFailed", message)
    };
    let (remain, remain_reason, remain_message) = if progress.remaining.is_empty() {
        (false, "ContentRemoved", "All content successfully removed".to_string())
    } else {
        let each: Vec<String> =
            progress.remaining.iter().map(|(r, n)| format!("{r} has {n} resource instances")).collect();
        (true, "SomeResourcesRemain", format!("Some resources are remaining: {}", each.join(", ")))
    };
    let (held, held_reason, held_message) = if progress.finalizers.is_empty() {
        (false, "ContentHasNoFinalizers", "All content-preserving finalizers finished".to_string())
    } else {
        let each: Vec<String> =
            progress.finalizers.iter().map(|(f, n)| format!("{f} in {n} resource instances")).collect();
        let message = format!("Some content in the namespace has finalizers remaining: {}", each.join(", "));
        (true, "SomeFinalizersRemain", message)
    };
    vec![
        ("NamespaceDeletionDiscoveryFailure", discovery_failed, discovery_reason, discovery_message),
        (
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".to_string(),
        ),
        ("NamespaceDeletionContentFailure", failed, failed_reason, failed_message),
        ("NamespaceContentRemaining", remain, remain_reason, remain_message),
        ("NamespaceFinalizersRemaining", held, held_reason, held_message),
    ]
}

/// Writes the deletion conditions to the namespace's status when they changed; a condition
/// keeps its transition time while its status stays the same.
async fn report(client: &Client, ns: &Namespace, progress: &Progress) -> Result<(), Error> {
    let old = ns.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let mut changed = false;
    let mut new = Vec::new();
    for (kind, status, reason, message) in conditions(progress) {
        let status = if status { "True" } else { "False" }.to_string();
        let previous = old.iter().find(|c| c.type_ == kind);
        let same = |c: &&NamespaceCondition| {
            c.status == status && c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message.as_str())
        };
        if previous.filter(same).is_none() {
            changed = true;
        }
        let since = previous.filter(|c| c.status == status).and_then(|c| c.last_transition_time.clone());
        new.push(NamespaceCondition {
            type_: kind.to_string(),
            status,
            reason: Some(reason.to_string()),
            message: Some(message),
            last_transition_time: Some(since.unwrap_or_else(|| now.clone())),
        });
    }
    // Conditions of other kinds are kept.
    new.extend(old.iter().filter(|c| !c.type_.starts_with("Namespace")).cloned());
    if !changed {
        return Ok(());
    }
    let api: Api<Namespace> = Api::all(client.clone());
    let patch = serde_json::json!({"status": {"conditions": new}});
    match api.patch_status(&ns.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::Status(ns.name_any(), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_say_what_a_deletion_waits_for_in_upstreams_words() {
        let waiting = Progress {
            remaining: [("configmaps".to_string(), 2), ("deployments.apps".to_string(), 1)].into(),
            finalizers: [("example.com/hold".to_string(), 2)].into(),
            ..Progress::default()
        };
        let by_kind: BTreeMap<_, _> = conditions(&waiting).into_iter().map(|(k, s, r, m)| (k, (s, r, m))).collect();
        assert_eq!(
            by_kind["NamespaceContentRemaining"],
            (
                true,
                "SomeResourcesRemain",
                "Some resources are remaining: configmaps has 2 resource instances, deployments.apps has 1 resource instances".to_string()
            )
        );
        assert_eq!(
            by_kind["NamespaceFinalizersRemaining"],
            (
                true,
                "SomeFinalizersRemain",
                "Some content in the namespace has finalizers remaining: example.com/hold in 2 resource instances"
                    .to_string()
            )
        );
        assert!(!by_kind["NamespaceDeletionContentFailure"].0);
        let done = conditions(&Progress::default());
        assert!(done.iter().all(|(_, status, _, _)| !status));
        assert_eq!(done.len(), 5);
    }
}
