//! Prometheus metrics of the API server, with upstream's metric names where one exists.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use kapal_store::{KeyValue, ListPage, Result, Revision, Store, WatchStream};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub verb: String,
    pub group: String,
    pub resource: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub operation: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: HistogramFamily<LatencyLabels>,
    pub watchers: Gauge,
    pub store_latency: HistogramFamily<StoreLabels>,
    pub objects: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily<LatencyLabels> = Family::new_with_constructor(latency_histogram);
        let watchers = Gauge::default();
        let store_latency: HistogramFamily<StoreLabels> = Family::new_with_constructor(latency_histogram);
        let objects = Gauge::default();
        registry.register("apiserver_request", "Requests by verb, resource and HTTP code", requests.clone());
        registry.register(
            "apiserver_request_duration_seconds",
            "Request latency by verb and resource",
            latency.clone(),
        );
        registry.register("apiserver_longrunning_requests", "Open watch streams", watchers.clone());
        registry.register("etcd_request_duration_seconds", "Store operation latency", store_latency.clone());
        registry.register("apiserver_storage_objects", "Objects in the watch cache", objects.clone());
        Metrics { registry, requests, latency, watchers, store_latency, objects }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// A store wrapper that records operation latency.
pub struct Metered {
    pub inner: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
}

impl Metered {
    fn observe(&self, op: &str, start: Instant) {
        self.metrics
            .store_latency
            .get_or_create(&StoreLabels { operation: op.to_string() })
            .observe(start.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl Store for Metered {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.observe("get", t);
        r
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListPage> {
        let t = Instant::now();
        let r = self.inner.list(prefix, start_after, limit, revision).await;
        self.observe("list", t);
        r
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        let t = Instant::now();
        let r = self.inner.create(key, value).await;
        self.observe("create", t);
        r
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue> {
        let t = Instant::now();
        let r = self.inner.update(key, value, expected).await;
        self.observe("update", t);
        r
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let t = Instant::now();
        let r = self.inner.delete(key, expected).await;
        self.observe("delete", t);
        r
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        self.inner.watch(prefix, after).await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.compact(revision).await;
        self.observe("compact", t);
        r
    }

    fn current_revision(&self) -> Revision {
        self.inner.current_revision()
    }

    fn compacted_revision(&self) -> Revision {
        self.inner.compacted_revision()
    }
}
