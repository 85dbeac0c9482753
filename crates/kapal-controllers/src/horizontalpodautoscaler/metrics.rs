//! Where pod metrics come from: the resource metrics API (`metrics.k8s.io/v1beta1` PodMetrics,
//! as metrics-server serves it) behind a narrow trait, so that tests can hand the controller
//! whatever usage they need.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use kapal_api::quota::Amount;
use kube::Client;
use serde::Deserialize;

use super::replicas::{PodMetric, PodMetrics};

/// One pod's sample: per-container usage (`cpu`, `memory`, … as quantity strings).
#[derive(Debug, Clone, PartialEq)]
pub struct PodSample {
    /// The pod's name.
    pub pod: String,
    /// When the sample was taken.
    pub timestamp: Timestamp,
    /// Over how long it was averaged.
    pub window: Duration,
    /// Usage by container name, then by resource name.
    pub containers: Vec<(String, BTreeMap<String, String>)>,
}

/// Why metrics could not be read; the text follows upstream's
/// "unable to fetch metrics from resource metrics API: …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to fetch metrics from resource metrics API: {0}")]
pub struct MetricsError(pub String);

/// A source of pod metrics.
#[async_trait::async_trait]
pub trait MetricsSource: Send + Sync {
    /// Samples of the pods in `namespace` matching `selector` (a label selector string).
    async fn pod_metrics(&self, namespace: &str, selector: &str) -> Result<Vec<PodSample>, MetricsError>;
}

/// The resource metrics API of the cluster, read through the API server.
pub struct MetricsApi {
    client: Client,
}

impl MetricsApi {
    /// A source reading `metrics.k8s.io/v1beta1` through `client`.
    pub fn new(client: Client) -> MetricsApi {
        MetricsApi { client }
    }
}

#[derive(Deserialize)]
struct PodMetricsList {
    #[serde(default)]
    items: Vec<RawPodMetrics>,
}

#[derive(Deserialize)]
struct RawPodMetrics {
    metadata: kube::api::ObjectMeta,
    timestamp: Option<String>,
    window: Option<String>,
    #[serde(default)]
    containers: Vec<RawContainer>,
}

#[derive(Deserialize)]
struct RawContainer {
    name: String,
    #[serde(default)]
    usage: BTreeMap<String, String>,
}

fn parse_window(text: &str) -> Duration {
    text.parse::<jiff::SignedDuration>()
        .ok()
        .or_else(|| text.parse::<jiff::Span>().ok().and_then(|s| jiff::SignedDuration::try_from(s).ok()))
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl MetricsSource for MetricsApi {
    async fn pod_metrics(&self, namespace: &str, selector: &str) -> Result<Vec<PodSample>, MetricsError> {
        let query = url_encode(selector);
        let url = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods?labelSelector={query}");
        let request = http::Request::get(url).body(Vec::new()).map_err(|e| MetricsError(e.to_string()))?;
        let list: PodMetricsList = match self.client.request(request).await {
            Ok(list) => list,
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Err(MetricsError(
                    "the server could not find the requested resource (get pods.metrics.k8s.io)".into(),
                ));
            }
            Err(kube::Error::Api(status)) => return Err(MetricsError(status.message)),
            Err(e) => return Err(MetricsError(e.to_string())),
        };
        Ok(list
            .items
            .into_iter()
            .map(|m| PodSample {
                pod: m.metadata.name.unwrap_or_default(),
                timestamp: m.timestamp.and_then(|t| t.parse().ok()).unwrap_or_else(Timestamp::now),
                window: m.window.as_deref().map(parse_window).unwrap_or_default(),
                containers: m.containers.into_iter().map(|c| (c.name, c.usage)).collect(),
            })
            .collect())
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Each pod's usage of `resource`: summed over its containers (upstream `getPodMetrics`; pods
/// missing the resource in any container are left out), or of the one `container` (upstream
/// `getContainerMetrics`; a pod without that container is an error). Errors when there are no
/// samples at all.
pub fn resource_metrics(samples: &[PodSample], resource: &str, container: Option<&str>) -> Result<PodMetrics, String> {
    if samples.is_empty() {
        return Err("no metrics returned from resource metrics API".into());
    }
    let milli = |usage: &BTreeMap<String, String>| {
        usage.get(resource).and_then(|q| Amount::parse(q).ok()).map(|a| a.milli_value())
    };
    let mut metrics = PodMetrics::new();
    for sample in samples {
        let value = match container {
            Some(wanted) => {
                let Some((_, usage)) = sample.containers.iter().find(|(name, _)| name == wanted) else {
                    return Err(format!("container {wanted} not present in metrics for pod {}", sample.pod));
                };
                milli(usage)
            }
            None => {
                let values: Option<Vec<i64>> = sample.containers.iter().map(|(_, usage)| milli(usage)).collect();
                values.filter(|v| !v.is_empty()).map(|v| v.iter().fold(0i64, |a, b| a.saturating_add(*b)))
            }
        };
        if let Some(value) = value {
            metrics.insert(sample.pod.clone(), PodMetric { value, timestamp: sample.timestamp, window: sample.window });
        }
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_sum_their_containers_and_pods_missing_a_container_value_are_skipped() {
        let sample = |pod: &str, cpu: &[Option<&str>]| PodSample {
            pod: pod.into(),
            timestamp: Timestamp::UNIX_EPOCH,
            window: Duration::from_secs(30),
            containers: cpu
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("c{i}"), c.iter().map(|v| ("cpu".to_string(), v.to_string())).collect()))
                .collect(),
        };
        let samples = [sample("a", &[Some("250m"), Some("1")]), sample("b", &[Some("1"), None])];
        let m = resource_metrics(&samples, "cpu", None).unwrap();
        assert_eq!(m["a"].value, 1250);
        assert!(!m.contains_key("b"));
        let m = resource_metrics(&samples, "cpu", Some("c1")).unwrap();
        assert_eq!((m["a"].value, m.contains_key("b")), (1000, false));
        let e = resource_metrics(&samples, "cpu", Some("c7")).unwrap_err();
        assert_eq!(e, "container c7 not present in metrics for pod a");
        assert_eq!(resource_metrics(&[], "cpu", None).unwrap_err(), "no metrics returned from resource metrics API");
        assert_eq!(parse_window("30s"), Duration::from_secs(30));
        assert_eq!(url_encode("app=web,tier in (a)"), "app%3Dweb%2Ctier%20in%20%28a%29");
    }
}
