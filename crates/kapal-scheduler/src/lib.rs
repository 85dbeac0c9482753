//! Kapal's scheduler: places pods on nodes through the `pods/binding` subresource.
//!
//! A client of the API only (kube-rs): watchers fill a node/pod [`cache`] and a scheduling
//! [`queue`]; the [`framework`] runs the default profile's [`plugins`] on one pod at a time;
//! the chosen node is *assumed* at once and the [`binder`] binds asynchronously. Everything is
//! level-triggered: a relist replaces the scheduler's view, so missed events heal.

pub mod binder;
pub mod cache;
pub mod events;
pub mod framework;
pub mod informer;
pub mod message;
pub mod nominations;
pub mod plugins;
pub mod podinfo;
pub mod preemption;
pub mod queue;
pub mod resources;
pub mod scheduler;

use std::sync::Arc;

use kube::Client;
use tokio::task::JoinSet;

use crate::binder::Binder;
use crate::scheduler::Scheduler;

/// Runs the default scheduler until it fails for good. Dropping the future stops everything.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let scheduler = Arc::new(Scheduler::new(Binder::new(client.clone())));
    let mut tasks = JoinSet::new();
    tasks.spawn(informer::nodes(client.clone(), scheduler.clone()));
    tasks.spawn(informer::pods(client.clone(), scheduler.clone()));
    tasks.spawn(informer::disruption_budgets(client.clone(), scheduler.clone()));
    tasks.spawn(informer::namespaces(client.clone(), scheduler.clone()));
    tasks.spawn(informer::priority_classes(client, scheduler.clone()));
    tasks.spawn(scheduler.clone().flush_loop());
    tasks.spawn(scheduler.schedule_loop());
    tracing::info!("scheduler started");
    // None of the tasks ends on its own; if one does, stop all and let the caller restart us.
    match tasks.join_next().await {
        Some(Err(e)) if e.is_panic() => anyhow::bail!("a scheduler task panicked: {e}"),
        _ => anyhow::bail!("a scheduler task stopped"),
    }
}
