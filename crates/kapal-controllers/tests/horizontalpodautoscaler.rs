//! The HorizontalPodAutoscaler controller: scales a Deployment through its `scale` subresource
//! from pod metrics (a fake metrics source here), waits out stabilisation windows, and says
//! truthfully in its conditions and events when there is no metrics API.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kapal_controllers::horizontalpodautoscaler::metrics::{MetricsError, MetricsSource, PodSample};
use kapal_controllers::horizontalpodautoscaler::{self, Settings};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use common::Cluster;

/// Metrics as a test sets them: cpu usage by pod name.
#[derive(Default)]
struct FakeMetrics {
    cpu: Mutex<BTreeMap<String, String>>,
}

impl FakeMetrics {
    fn set(&self, pod: &str, cpu: &str) {
        self.cpu.lock().unwrap().insert(pod.to_string(), cpu.to_string());
    }
}

#[async_trait::async_trait]
impl MetricsSource for FakeMetrics {
    async fn pod_metrics(&self, _namespace: &str, _selector: &str) -> Result<Vec<PodSample>, MetricsError> {
        let cpu = self.cpu.lock().unwrap().clone();
        Ok(cpu
            .into_iter()
            .map(|(pod, cpu)| PodSample {
                pod,
                timestamp: jiff::Timestamp::now(),
                window: Duration::from_secs(30),
                containers: vec![("c".into(), [("cpu".to_string(), cpu)].into())],
            })
            .collect())
    }
}

fn fast() -> Settings {
    Settings {
        sync_period: Duration::from_millis(200),
        cpu_initialization_period: Duration::ZERO,
        ..Settings::default()
    }
}

/// A Deployment `web` with `replicas`, and `pods` Running and Ready pods of it requesting 100m cpu
/// each (no ReplicaSet controller runs: the pods stay as the test makes them).
async fn workload(cluster: &Cluster, ns: &str, replicas: i32, pods: usize) {
    let c = &cluster.client;
    let template = json!({"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}]}});
    let deployment = json!({"metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": template}});
    let api: Api<Deployment> = Api::namespaced(c.clone(), ns);
    api.create(&PostParams::default(), &serde_json::from_value(deployment).unwrap()).await.unwrap();
    let pods_api: Api<Pod> = Api::namespaced(c.clone(), ns);
    for i in 0..pods {
        let mut pod = template.clone();
        pod["metadata"]["name"] = json!(format!("web-{i}"));
        let pod: Pod = pods_api.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.unwrap();
        common::set_running(&pods_api, &pod, i).await;
    }
}

async fn autoscaler(cluster: &Cluster, ns: &str, extra: Value) {
    let mut spec = json!({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 1, "maxReplicas": 10,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(cluster.client.clone(), ns);
    let hpa = json!({"metadata": {"name": "web"}, "spec": spec});
    api.create(&PostParams::default(), &serde_json::from_value(hpa).unwrap()).await.unwrap();
}

async fn replicas(cluster: &Cluster, ns: &str) -> i32 {
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    api.get("web").await.unwrap().spec.unwrap().replicas.unwrap_or(1)
}

/// `(status, reason, message)` of the HPA's condition `kind`.
async fn condition(cluster: &Cluster, ns: &str, kind: &str) -> Option<(String, String, String)> {
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(cluster.client.clone(), ns);
    let hpa = api.get("web").await.unwrap();
    let conditions = hpa.status?.conditions?;
    let c = conditions.into_iter().find(|c| c.type_ == kind)?;
    Some((c.status, c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_above_target_scales_the_deployment_through_its_scale_subresource() {
    let cluster = Cluster::server_only().await;
    let ns = cluster.namespace("hpa-up").await;
    workload(&cluster, &ns, 2, 2).await;
    let metrics = Arc::new(FakeMetrics::default());
    metrics.set("web-0", "90m");
    metrics.set("web-1", "90m");
    let client = cluster.client.clone();
    let source = metrics.clone();
    let _task = tokio::spawn(async move { horizontalpodautoscaler::run_with(client, source, fast()).await.unwrap() });
    autoscaler(&cluster, &ns, json!({})).await;

    // 90 % against 50 % on 2 pods: ceil(2 × 1.8) = 4.
    cluster
        .eventually("the deployment scaled to 4", Duration::from_secs(10), || async {
            (replicas(&cluster, &ns).await == 4).then_some(())
        })
        .await;
    rescaled(&cluster, &ns, "New size: 4; reason: cpu resource utilization (percentage of request) above target").await;
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(cluster.client.clone(), &ns);
    let status = cluster
        .eventually("the status to show the new size", Duration::from_secs(10), || async {
            let status = api.get("web").await.unwrap().status?;
            (status.desired_replicas == 4).then_some(status)
        })
        .await;
    assert!(status.last_scale_time.is_some());
    let current = &status.current_metrics.unwrap()[0];
    let resource = current.resource.as_ref().unwrap();
    assert_eq!((resource.name.as_str(), resource.current.average_utilization), ("cpu", Some(90)));
    assert_eq!(resource.current.average_value.as_ref().unwrap().0, "90m");
    let active = condition(&cluster, &ns, "ScalingActive").await.unwrap();
    assert_eq!((active.0.as_str(), active.1.as_str()), ("True", "ValidMetricFound"));
    assert_eq!(
        active.2,
        "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)"
    );
    // Within the tolerance nothing changes: 52 % against 50 %.
    metrics.set("web-0", "52m");
    metrics.set("web-1", "52m");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(replicas(&cluster, &ns).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_waits_out_the_stabilization_window() {
    let cluster = Cluster::server_only().await;
    let ns = cluster.namespace("hpa-down").await;
    workload(&cluster, &ns, 4, 2).await;
    let metrics = Arc::new(FakeMetrics::default());
    metrics.set("web-0", "10m");
    metrics.set("web-1", "10m");
    let client = cluster.client.clone();
    let source = metrics.clone();
    let _task = tokio::spawn(async move { horizontalpodautoscaler::run_with(client, source, fast()).await.unwrap() });
    let behavior = json!({"behavior": {"scaleDown": {"stabilizationWindowSeconds": 3}}});
    autoscaler(&cluster, &ns, behavior).await;

    let stabilized = cluster
        .eventually("the scale-down to be held back", Duration::from_secs(5), || async {
            condition(&cluster, &ns, "AbleToScale").await.filter(|c| c.1 == "ScaleDownStabilized")
        })
        .await;
    assert_eq!(
        stabilized.2,
        "recent recommendations were higher than current one, applying the highest recent recommendation"
    );
    assert_eq!(replicas(&cluster, &ns).await, 4);
    let started = std::time::Instant::now();
    // 10 % against 50 % on 2 pods: ceil(2 × 0.2) = 1, once 4 has left the 3 s window.
    cluster
        .eventually("the deployment scaled down to 1", Duration::from_secs(10), || async {
            (replicas(&cluster, &ns).await == 1).then_some(())
        })
        .await;
    assert!(started.elapsed() > Duration::from_secs(1), "scaled down without waiting");
    rescaled(&cluster, &ns, "New size: 1; reason: All metrics below target").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_metrics_api_the_hpa_says_it_cannot_compute_replicas() {
    let cluster = Cluster::server_only().await;
    let ns = cluster.namespace("hpa-nometrics").await;
    workload(&cluster, &ns, 2, 2).await;
    let client = cluster.client.clone();
    let _task = tokio::spawn(async move { horizontalpodautoscaler::run(client).await.unwrap() });
    autoscaler(&cluster, &ns, json!({})).await;

    let active = cluster
        .eventually("ScalingActive=False", Duration::from_secs(10), || async {
            condition(&cluster, &ns, "ScalingActive").await
        })
        .await;
    let error = "failed to get cpu utilization: unable to get metrics for resource cpu: unable to fetch metrics from \
        resource metrics API: the server could not find the requested resource (get pods.metrics.k8s.io)";
    assert_eq!(
        active,
        (
            "False".into(),
            "FailedGetResourceMetric".into(),
            format!("the HPA was unable to compute the replica count: {error}")
        )
    );
    let able = condition(&cluster, &ns, "AbleToScale").await.unwrap();
    assert_eq!((able.0.as_str(), able.1.as_str()), ("True", "SucceededGetScale"));
    let events = cluster.events_for(&ns, "web").await;
    assert!(events.contains(&("FailedGetResourceMetric".into(), error.into())), "{events:?}");
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(cluster.client.clone(), &ns);
    let status = api.get("web").await.unwrap().status.unwrap();
    assert_eq!(status.current_replicas, Some(2));
    assert_eq!(replicas(&cluster, &ns).await, 2);
    let kubectl = cluster.kubectl_command();
    let (ok, out) = kubectl(&["-n", &ns, "describe", "hpa", "web"]);
    assert!(ok, "{out}");
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(rows.iter().any(|r| r.starts_with(&["ScalingActive", "False", "FailedGetResourceMetric"])), "{out}");
    assert!(rows.contains(&vec!["Deployment", "pods:", "2", "current", "/", "0", "desired"]), "{out}");
    let warnings = rows.iter().filter(|r| r.starts_with(&["Warning", "FailedGetResourceMetric"])).count();
    assert_eq!(warnings, 1, "one evaluation so far, one event: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_target_is_reported_as_unable_to_scale() {
    let cluster = Cluster::server_only().await;
    let ns = cluster.namespace("hpa-notarget").await;
    let client = cluster.client.clone();
    let metrics = Arc::new(FakeMetrics::default());
    let _task = tokio::spawn(async move { horizontalpodautoscaler::run_with(client, metrics, fast()).await.unwrap() });
    autoscaler(&cluster, &ns, json!({})).await;
    let able = cluster
        .eventually("AbleToScale=False", Duration::from_secs(10), || async {
            condition(&cluster, &ns, "AbleToScale").await
        })
        .await;
    let message = "the HPA controller was unable to get the target's current scale: deployments.apps \"web\" not found";
    assert_eq!(able, ("False".into(), "FailedGetScale".into(), message.into()));
    let events = cluster.events_for(&ns, "web").await;
    assert!(events.contains(&("FailedGetScale".into(), "deployments.apps \"web\" not found".into())), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_average_value_targets_scale_and_report_the_container_metric() {
    let cluster = Cluster::server_only().await;
    let ns = cluster.namespace("hpa-container").await;
    workload(&cluster, &ns, 2, 2).await;
    let metrics = Arc::new(FakeMetrics::default());
    metrics.set("web-0", "90m");
    metrics.set("web-1", "90m");
    let client = cluster.client.clone();
    let source = metrics.clone();
    let _task = tokio::spawn(async move { horizontalpodautoscaler::run_with(client, source, fast()).await.unwrap() });
    let metric = json!({"metrics": [{"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "c",
        "target": {"type": "AverageValue", "averageValue": "50m"}}}]});
    autoscaler(&cluster, &ns, metric).await;

    // 90m against 50m on 2 pods: ceil(2 × 1.8) = 4.
    cluster
        .eventually("the deployment scaled to 4", Duration::from_secs(10), || async {
            (replicas(&cluster, &ns).await == 4).then_some(())
        })
        .await;
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(cluster.client.clone(), &ns);
    let status = cluster
        .eventually("the status to show the container metric", Duration::from_secs(10), || async {
            let status = api.get("web").await.unwrap().status?;
            (status.desired_replicas == 4).then_some(status)
        })
        .await;
    let current = status.current_metrics.unwrap()[0].container_resource.clone().unwrap();
    assert_eq!((current.container.as_str(), current.current.average_value.unwrap().0.as_str()), ("c", "90m"));
    rescaled(&cluster, &ns, "New size: 4; reason: cpu resource above target").await;
}

/// Waits for the HPA's SuccessfulRescale event with `message`. The controller records it after
/// it has updated the scale, so a test that saw the new replica count may look before it is there.
async fn rescaled(cluster: &Cluster, ns: &str, message: &str) {
    cluster
        .eventually(&format!("the SuccessfulRescale event {message:?}"), Duration::from_secs(10), || async {
            let events = cluster.events_for(ns, "web").await;
            events.iter().any(|(reason, m)| reason == "SuccessfulRescale" && m == message).then_some(())
        })
        .await;
}
