//! Kapal's controller manager.
//!
//! Every controller is a client of the API server through kube-rs, level-triggered: it compares
//! what the API says should be with what is, and acts on the difference. Each controller is one
//! module named after the resource it reconciles.

pub mod leader;
pub mod namespace;

use kube::Client;

/// Runs every controller until one of them fails for good.
pub async fn run(client: Client) -> anyhow::Result<()> {
    namespace::run(client).await
}
