//! Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it.
//!
//! Every candidate reads the Lease and writes it back guarded by its resourceVersion, so two
//! candidates can never both win the same round (fencing). A holder renews before its lease
//! runs out; others take over only after they have seen the same record unchanged for a whole
//! lease duration on their own clock, so clock skew between machines does not matter.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;

/// Timing of an election, with client-go's defaults (15 s, 10 s, 2 s).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down.
    pub renew_deadline: Duration,
    /// How often candidates try, and leaders renew.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One candidate for one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The last record seen (holder, renew time, transitions) and when we first saw it.
    observed: Option<(Observed, Instant)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    holder: Option<String>,
    renew: Option<String>,
    transitions: i32,
}

fn observed(lease: &Lease) -> Observed {
    let spec = lease.spec.clone().unwrap_or_default();
    Observed {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        renew: spec.renew_time.map(|t| t.0.to_string()),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl LeaderElector {
    /// A candidate `identity` for the Lease `namespace/name`.
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timing: Timing) -> LeaderElector {
        LeaderElector { api, name: name.to_string(), identity: identity.to_string(), timing, observed: None }
    }

    /// The candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn spec(&self, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs().max(1) as i32),
            acquire_time: acquire,
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One round: acquires the Lease if it is free or expired, renews it if held. Returns
    /// whether this candidate holds it now. A lost race is `Ok(false)`, not an error.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let current = match self.api.get_opt(&self.name).await? {
            Some(lease) => lease,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                    spec: Some(self.spec(Some(now()), 0)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(created) => {
                        self.observed = Some((observed(&created), Instant::now()));
                        Ok(true)
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
        };
        let seen = observed(&current);
        let first_seen = match &self.observed {
            Some((prev, at)) if *prev == seen => *at,
            _ => Instant::now(),
        };
        self.observed = Some((seen.clone(), first_seen));
        let mine = seen.holder.as_deref() == Some(self.identity.as_str());
        let expired = seen.holder.is_none() || first_seen.elapsed() >= self.timing.lease_duration;
        if !mine && !expired {
            return Ok(false);
        }
        let spec = current.spec.clone().unwrap_or_default();
        let next = if mine {
            LeaseSpec { renew_time: Some(now()), ..self.spec(spec.acquire_time.clone(), seen.transitions) }
        } else {
            self.spec(Some(now()), seen.transitions + 1)
        };
        let mut lease = current;
        lease.spec = Some(next);
        // The resourceVersion from the read fences the write: a competing write in between
        // makes this one fail with 409 instead of stealing the lease.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(written) => {
                self.observed = Some((observed(&written), Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (so another candidate need not wait for it to expire), if held.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else { return Ok(()) };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        lease.spec =
            Some(LeaseSpec { holder_identity: None, lease_duration_seconds: Some(1), renew_time: Some(now()), ..spec });
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits to become leader, then runs `lead` until it finishes or leadership is lost
    /// (no successful renewal within the renew deadline). Returns when leadership ends.
    pub async fn run<F, Fut>(&mut self, lead: F)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
        tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
        let work = lead();
        tokio::pin!(work);
        let mut last_renew = Instant::now();
        loop {
            tokio::select! {
                _ = &mut work => break,
                _ = tokio::time::sleep(self.timing.retry_period) => {
                    match self.try_acquire_or_renew().await {
                        Ok(true) => last_renew = Instant::now(),
                        Ok(false) => {
                            tracing::warn!(lease = %self.name, "lost the lease to another candidate");
                            return;
                        }
                        Err(e) => tracing::warn!(lease = %self.name, error = %e, "renewing the lease failed"),
                    }
                    if last_renew.elapsed() >= self.timing.renew_deadline {
                        tracing::warn!(lease = %self.name, "could not renew within the deadline; stepping down");
                        return;
                    }
                }
            }
        }
        let _ = self.release().await;
    }
}
