//! The running proxy's state: the current config compiled into services with live endpoints.
//!
//! A new config builds a new [`Snapshot`] that is swapped in atomically; requests in flight keep
//! the snapshot they started with. Endpoints (their connection pools, latency estimates and
//! ejection state) are carried over to the new snapshot when they are unchanged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::balance::{Candidate, EndpointStats};
use crate::budget::Budget;
use crate::client::{ConnectError, Connector, EndpointClient};
use crate::config::{self, Protocol, ProxyConfig};
use crate::metrics::Metrics;
use crate::route::{RouteTable, Rule};
use crate::tls::MeshTls;

/// One endpoint with its pools and stats.
pub struct Endpoint {
    /// Address.
    pub addr: SocketAddr,
    /// The SPIFFE identity the endpoint must present (meshed endpoints).
    pub identity: Option<Arc<str>>,
    /// Stats for balancing and outlier detection.
    pub stats: EndpointStats,
    /// Pooled clients.
    pub client: EndpointClient,
}

/// An endpoint with its weight in one service.
#[derive(Clone)]
pub struct Weighted {
    /// The endpoint.
    pub endpoint: Arc<Endpoint>,
    /// Its weight.
    pub weight: u32,
}

impl Candidate for Weighted {
    fn stats(&self) -> &EndpointStats {
        &self.endpoint.stats
    }
    fn weight(&self) -> u32 {
        self.weight
    }
}

/// A service ready to take traffic.
pub struct ServiceRt {
    /// Its config.
    pub cfg: config::Service,
    /// Compiled routes.
    pub routes: RouteTable,
    /// The rule used when the service has no routes.
    pub default_rule: Arc<Rule>,
    /// Endpoints.
    pub endpoints: Vec<Weighted>,
    /// Retry budget shared by all routes of this service.
    pub budget: Arc<Budget>,
    /// Whether any of its rules retries (else the budget is left alone: nothing spends it).
    pub retries: bool,
}

/// The compiled form of one config.
pub struct Snapshot {
    /// The config it was built from (served at `/config`).
    pub config: Arc<ProxyConfig>,
    /// Services by name.
    pub services: HashMap<String, Arc<ServiceRt>>,
    /// Inbound listeners' local targets, by listen address.
    pub inbound: HashMap<SocketAddr, (config::Inbound, Arc<ServiceRt>)>,
    /// Service names by the addresses that identify them (transparent outbound).
    pub by_address: HashMap<SocketAddr, String>,
}

/// Which local application an inbound connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InboundKey {
    /// The configured inbound listener with this (configured) address.
    Listen(SocketAddr),
    /// Whatever listens on 127.0.0.1 at this port (transparent inbound: the original
    /// destination port).
    Port(u16),
}

/// Where inbound traffic goes and how it is accepted.
#[derive(Clone)]
pub struct LocalTarget {
    /// Protocol hint.
    pub protocol: Protocol,
    /// Refuse plaintext.
    pub require_mtls: bool,
    /// The local application as a one-endpoint service.
    pub service: Arc<ServiceRt>,
}

fn local_service(port: u16) -> config::Service {
    config::Service {
        name: format!("inbound:{port}"),
        listen: None,
        addresses: vec![],
        protocol: Protocol::Detect,
        endpoints: vec![config::Endpoint {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            weight: 1,
            labels: Default::default(),
            identity: None,
        }],
        routes: vec![],
        retry_budget: Default::default(),
        load_balancer: Default::default(),
        outlier_detection: None,
        connect_timeout: config::Duration(Duration::from_millis(300)),
    }
}

type EndpointKey = (SocketAddr, Option<String>, Duration);

/// Everything the listeners share.
pub struct Shared {
    snapshot: RwLock<Arc<Snapshot>>,
    /// Counts the snapshots swapped in, so that a connection can tell whether what it derived
    /// from one is still current without taking the snapshot again.
    generation: AtomicU64,
    endpoints: Mutex<HashMap<EndpointKey, Arc<Endpoint>>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Mesh TLS, when the proxy has an identity.
    pub tls: Option<Arc<MeshTls>>,
    /// Write one JSON line per request to stdout.
    pub access_log: AtomicBool,
    /// Local applications reached through the transparent inbound listener, by port.
    local_ports: Mutex<HashMap<u16, Arc<ServiceRt>>>,
    /// Span export, when `--otlp-endpoint` is set.
    pub spans: Option<crate::otlp::Spans>,
    /// Bounds the mirrored requests in flight, so a slow mirror cannot pile up tasks.
    pub mirror_slots: Arc<tokio::sync::Semaphore>,
}

/// Mirrored requests in flight at most; more are not mirrored (counted as `overloaded`).
pub const MAX_MIRRORS_IN_FLIGHT: usize = 1024;

/// Why a config could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A regex failed to compile (validation should have caught it).
    #[error("compiling routes of service {service}: {source}")]
    Route {
        /// The service.
        service: String,
        /// Why.
        source: regex::Error,
    },
    /// An endpoint needs mTLS but there is no identity.
    #[error("service {service}: {source}")]
    Endpoint {
        /// The service.
        service: String,
        /// Why.
        source: ConnectError,
    },
}

impl Shared {
    /// State serving `config`.
    pub fn new(config: ProxyConfig, metrics: Arc<Metrics>, tls: Option<Arc<MeshTls>>) -> Result<Self, ApplyError> {
        let empty = Snapshot {
            config: Arc::new(config.clone()),
            services: HashMap::new(),
            inbound: HashMap::new(),
            by_address: HashMap::new(),
        };
        let shared = Shared {
            snapshot: RwLock::new(Arc::new(empty)),
            generation: AtomicU64::new(0),
            endpoints: Mutex::default(),
            metrics,
            tls,
            access_log: AtomicBool::new(false),
            local_ports: Mutex::default(),
            spans: None,
            mirror_slots: Arc::new(tokio::sync::Semaphore::new(MAX_MIRRORS_IN_FLIGHT)),
        };
        shared.apply(config)?;
        Ok(shared)
    }

    /// Which snapshot is current; read it before [`snapshot`](Self::snapshot), so that what is
    /// derived from the snapshot is never newer than the generation it is kept under.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The local target of inbound traffic. A port without a configured inbound entry gets
    /// the defaults: protocol detection, plaintext allowed.
    pub fn inbound_target(&self, key: InboundKey) -> Option<LocalTarget> {
        let snapshot = self.snapshot();
        let configured = match key {
            InboundKey::Listen(addr) => return snapshot.inbound.get(&addr).map(target),
            InboundKey::Port(port) => snapshot.inbound.values().find(|(ib, _)| ib.forward_port == port),
        };
        if let Some(found) = configured {
            return Some(target(found));
        }
        let InboundKey::Port(port) = key else { return None };
        let mut ports = self.local_ports.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(service) = ports.get(&port) {
            return Some(LocalTarget { protocol: Protocol::Detect, require_mtls: false, service: service.clone() });
        }
        let service = Arc::new(self.service(local_service(port), &mut HashMap::new(), &mut HashMap::new()).ok()?);
        ports.insert(port, service.clone());
        Some(LocalTarget { protocol: Protocol::Detect, require_mtls: false, service })
    }

    /// Compiles and swaps in a validated config.
    pub fn apply(&self, config: ProxyConfig) -> Result<(), ApplyError> {
        let previous = self.snapshot();
        let mut pool = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let mut used = HashMap::new();
        let mut services = HashMap::new();
        for svc in &config.services {
            let mut rt = self.service(svc.clone(), &mut pool, &mut used)?;
            // A reload keeps what a service's retry budget has counted while its settings stay
            // the same; else every reload would hand a failing service a fresh reserve of retries.
            if let Some(old) = previous.services.get(&svc.name).filter(|old| old.cfg.retry_budget == svc.retry_budget) {
                rt.budget = old.budget.clone();
            }
            services.insert(svc.name.clone(), Arc::new(rt));
        }
        let mut inbound = HashMap::new();
        for ib in &config.inbound {
            let local = config::Service { protocol: ib.protocol, ..local_service(ib.forward_port) };
            let rt = self.service(local, &mut pool, &mut used)?;
            inbound.insert(ib.listen, (ib.clone(), Arc::new(rt)));
        }
        // Endpoints no longer referenced are dropped (with their idle connections).
        *pool = used;
        drop(pool);
        let by_address =
            config.services.iter().flat_map(|s| s.addresses.iter().map(|a| (*a, s.name.clone()))).collect();
        let snapshot = Snapshot { config: Arc::new(config), services, inbound, by_address };
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
        // After the swap: whoever reads the new generation finds the new snapshot.
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    fn service(
        &self,
        cfg: config::Service,
        pool: &mut HashMap<EndpointKey, Arc<Endpoint>>,
        used: &mut HashMap<EndpointKey, Arc<Endpoint>>,
    ) -> Result<ServiceRt, ApplyError> {
        let routes =
            RouteTable::compile(&cfg).map_err(|source| ApplyError::Route { service: cfg.name.clone(), source })?;
        let default_rule = Rule::default_for(&cfg.name);
        let mut endpoints = Vec::new();
        for ep in &cfg.endpoints {
            let key = (ep.address, ep.identity.clone(), cfg.connect_timeout.0);
            let endpoint = match used.get(&key).or_else(|| pool.get(&key)) {
                Some(e) => e.clone(),
                None => {
                    let connector = Connector::new(
                        ep.address,
                        cfg.connect_timeout.0,
                        ep.identity.clone(),
                        self.tls.clone(),
                        self.metrics.clone(),
                    )
                    .map_err(|source| ApplyError::Endpoint { service: cfg.name.clone(), source })?;
                    Arc::new(Endpoint {
                        addr: ep.address,
                        identity: ep.identity.as_deref().map(Arc::from),
                        stats: EndpointStats::new(&cfg.load_balancer),
                        client: EndpointClient::new(connector),
                    })
                }
            };
            used.insert(key, endpoint.clone());
            endpoints.push(Weighted { endpoint, weight: ep.weight });
        }
        Ok(ServiceRt {
            budget: Arc::new(Budget::new(&cfg.retry_budget)),
            retries: routes.retries() || default_rule.retry.is_some(),
            routes,
            default_rule: Arc::new(default_rule),
            endpoints,
            cfg,
        })
    }
}

fn target((ib, service): &(config::Inbound, Arc<ServiceRt>)) -> LocalTarget {
    LocalTarget { protocol: ib.protocol, require_mtls: ib.require_mtls, service: service.clone() }
}

impl ServiceRt {
    /// Whether requests to this service go upstream as HTTP/2; `None` = as the client spoke.
    pub fn upstream_h2(&self) -> Option<bool> {
        match self.cfg.protocol {
            Protocol::Http1 => Some(false),
            Protocol::Http2 | Protocol::Grpc => Some(true),
            Protocol::Detect | Protocol::Opaque => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(route: &str, budget: &str) -> ProxyConfig {
        let yaml = format!(
            "apiVersion: kapal.dev/v1alpha1\nkind: ProxyConfig\nservices:
  - name: app
    endpoints: [{{address: '127.0.0.1:9'}}]
    routes: [{{name: {route}, retry: {{attempts: 1}}}}]
    retryBudget: {budget}
"
        );
        ProxyConfig::from_yaml(&yaml).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_keeps_the_retry_budget_while_its_settings_stay() {
        let tight = "{ratio: 0.0, minRetriesPerSecond: 1, ttl: 1s}";
        let shared = Shared::new(config("a", tight), Default::default(), None).unwrap();
        let budget = || shared.snapshot().services["app"].budget.clone();
        assert!(budget().try_withdraw());
        assert!(!budget().try_withdraw(), "the reserve of one retry is spent");
        // Routes change, the budget's settings do not: the spent reserve stays spent.
        let before = budget();
        shared.apply(config("b", tight)).unwrap();
        assert!(Arc::ptr_eq(&before, &budget()));
        assert!(!budget().try_withdraw());
        // New settings: a new budget.
        shared.apply(config("b", "{ratio: 0.0, minRetriesPerSecond: 2, ttl: 1s}")).unwrap();
        assert!(!Arc::ptr_eq(&before, &budget()));
        assert!(budget().try_withdraw());
    }
}
