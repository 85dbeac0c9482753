//! Kapal's controller manager.
//!
//! Every controller is a client of the API server through kube-rs, level-triggered: it compares
//! what the API says should be with what is, and acts on the difference. Each controller is one
//! module named after the resource it reconciles, with a `run(client)` that returns only when the
//! controller fails for good. kube-rs' `Controller` gives each of them per-key work queues that
//! never reconcile one object twice at once and never drop a queued key.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod garbagecollector;
pub mod horizontalpodautoscaler;
pub mod job;
pub mod leader;
pub mod namespace;
pub mod nodelifecycle;
pub mod podcache;
pub mod podgc;
pub mod podtemplate;
pub mod replicaset;
pub mod resourcequota;
pub mod serviceaccount;
pub mod settings;
pub mod statefulset;
pub mod tainteviction;
pub mod workqueue;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kube::Client;

type Running = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Controllers that read pods from the shared [`podcache::PodCache`].
const POD_READERS: [&str; 4] = ["replicaset", "nodelifecycle", "tainteviction", "podgc"];

/// Every controller of the manager, by name. `pods` is the shared pod cache (for those of
/// [`POD_READERS`] that run).
fn controllers(
    client: &Client,
    settings: &settings::Settings,
    pods: &Arc<podcache::PodCache>,
) -> Vec<(&'static str, Running)> {
    vec![
        ("namespace", Box::pin(namespace::run(client.clone()))),
        ("garbagecollector", Box::pin(garbagecollector::run(client.clone()))),
        ("podgc", Box::pin(podgc::run_shared(client.clone(), podgc::Settings::default(), pods.clone()))),
        ("nodelifecycle", Box::pin(nodelifecycle::run_shared(client.clone(), settings.clone(), pods.clone()))),
        ("tainteviction", Box::pin(tainteviction::run_shared(client.clone(), settings.clone(), pods.clone()))),
        ("disruption", Box::pin(disruption::run(client.clone()))),
        ("replicaset", Box::pin(replicaset::run_with(client.clone(), pods.clone()))),
        ("deployment", Box::pin(deployment::run(client.clone()))),
        ("job", Box::pin(job::run(client.clone()))),
        ("endpointslice", Box::pin(endpointslice::run(client.clone()))),
        ("endpoints", Box::pin(endpoints::run(client.clone()))),
        ("serviceaccount", Box::pin(serviceaccount::run(client.clone()))),
        ("cronjob", Box::pin(cronjob::run(client.clone()))),
        ("resourcequota", Box::pin(resourcequota::run(client.clone()))),
        ("horizontalpodautoscaler", Box::pin(horizontalpodautoscaler::run(client.clone()))),
        ("statefulset", Box::pin(statefulset::run(client.clone()))),
        ("daemonset", Box::pin(daemonset::run(client.clone()))),
    ]
}

/// Runs every controller with kube-controller-manager's default timings; returns when the first
/// one stops (with its error), so that the caller can restart the set.
pub async fn run(client: Client) -> anyhow::Result<()> {
    run_with(client, settings::Settings::default()).await
}

/// Runs every controller with the given timings.
pub async fn run_with(client: Client, settings: settings::Settings) -> anyhow::Result<()> {
    let mut set = tokio::task::JoinSet::new();
    let pods = if POD_READERS.iter().any(|name| settings.enabled(name)) {
        podcache::PodCache::start(client.clone())
    } else {
        Arc::new(podcache::PodCache::default())
    };
    let all = controllers(&client, &settings, &pods);
    if let Some(unknown) = settings
        .controllers
        .iter()
        .map(|c| c.trim_start_matches('-'))
        .find(|c| *c != "*" && !all.iter().any(|(n, _)| n == c))
    {
        anyhow::bail!("--controllers: unknown controller {unknown:?}");
    }
    for (name, controller) in all.into_iter().filter(|(name, _)| settings.enabled(name)) {
        set.spawn(async move { (name, controller.await) });
    }
    let Some(first) = set.join_next().await else { return Ok(()) };
    set.abort_all();
    match first {
        Ok((name, Ok(()))) => anyhow::bail!("{name} controller stopped"),
        Ok((name, Err(e))) => Err(e.context(format!("{name} controller"))),
        Err(e) => Err(anyhow::anyhow!("a controller panicked: {e}")),
    }
}
