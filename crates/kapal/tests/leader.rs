//! Leader election on a Lease against a real `kapal server`: at most one leader per round,
//! takeover after expiry, fencing by resourceVersion.

mod common;

use std::time::Duration;

use common::Cluster;
use k8s_openapi::api::coordination::v1::Lease;
use kapal_controllers::leader::{LeaderElector, Timing};
use kube::{Api, Client};

async fn client(c: &Cluster) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let yaml = std::fs::read_to_string(&c.kubeconfig).unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()).unwrap()
}

fn timing() -> Timing {
    Timing {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(100),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_leader_per_round_then_takeover_after_expiry() {
    let c = Cluster::start();
    let api: Api<Lease> = Api::namespaced(client(&c).await, "kube-system");
    let mut candidates: Vec<LeaderElector> =
        (0..3).map(|i| LeaderElector::new(api.clone(), "kapal-test", &format!("cand-{i}"), timing())).collect();
    let mut leader = None;
    for round in 0..20 {
        // Every candidate tries at once; the fenced writes let exactly one through.
        let results = futures::future::join_all(candidates.iter_mut().map(|c| c.try_acquire_or_renew())).await;
        let winners: Vec<usize> =
            results.iter().enumerate().filter(|(_, r)| matches!(r, Ok(true))).map(|(i, _)| i).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        if let Some(prev) = leader {
            assert_eq!(winners[0], prev, "the holder keeps renewing and nobody else takes over");
        }
        leader = Some(winners[0]);
    }
    let old = leader.unwrap();
    let lease = api.get("kapal-test").await.unwrap();
    assert_eq!(lease.spec.as_ref().unwrap().holder_identity.as_deref(), Some(format!("cand-{old}").as_str()));
    let transitions = lease.spec.unwrap().lease_transitions.unwrap_or(0);

    // The leader stops renewing: after a lease duration one other candidate takes over.
    let mut others: Vec<&mut LeaderElector> =
        candidates.iter_mut().enumerate().filter(|(i, _)| *i != old).map(|(_, c)| c).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut new_leader = None;
    while new_leader.is_none() && std::time::Instant::now() < deadline {
        for c in others.iter_mut() {
            if c.try_acquire_or_renew().await.unwrap() {
                assert!(new_leader.is_none(), "two candidates took over");
                new_leader = Some(c.identity().to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_leader = new_leader.expect("nobody took over an expired lease");
    let lease = api.get("kapal-test").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some(new_leader.as_str()));
    assert_eq!(lease.lease_transitions, Some(transitions + 1));
    // The old leader's next renewal fails: it sees someone else holding the lease.
    assert!(!candidates[old].try_acquire_or_renew().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_lease_is_taken_at_once() {
    let c = Cluster::start();
    let api: Api<Lease> = Api::namespaced(client(&c).await, "kube-system");
    let mut a = LeaderElector::new(api.clone(), "kapal-release", "a", timing());
    let mut b = LeaderElector::new(api.clone(), "kapal-release", "b", timing());
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());
    a.release().await.unwrap();
    assert!(b.try_acquire_or_renew().await.unwrap(), "a released lease is free without waiting for expiry");
}
