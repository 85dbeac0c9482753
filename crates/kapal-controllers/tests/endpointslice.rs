//! Services with selectors get EndpointSlices and Endpoints that follow their pods' readiness
//! and deletion; Services without selectors are left alone.

mod common;

use std::time::Duration;

use common::Cluster;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn create_service(cluster: &Cluster, ns: &str, name: &str, spec: serde_json::Value) -> Service {
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), ns);
    let svc =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"tier": "front"}}, "spec": spec})).unwrap();
    api.create(&PostParams::default(), &svc).await.unwrap()
}

async fn create_pods(cluster: &Cluster, ns: &str, count: usize) {
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    for i in 0..count {
        let pod = serde_json::from_value(json!({"metadata": {"name": format!("web-{i:03}"), "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"name": "http", "containerPort": 8080}]}]}}))
        .unwrap();
        api.create(&PostParams::default(), &pod).await.unwrap();
    }
    cluster.run_pods(ns, "node-a").await;
}

async fn slices(cluster: &Cluster, ns: &str, svc: &str) -> Vec<EndpointSlice> {
    let api: Api<EndpointSlice> = Api::namespaced(cluster.client.clone(), ns);
    let selector = format!("kubernetes.io/service-name={svc}");
    api.list(&ListParams::default().labels(&selector)).await.unwrap().items
}

/// Each endpoint of the Service's slices: (pod, ready, serving, terminating).
async fn endpoints_of(cluster: &Cluster, ns: &str, svc: &str) -> Vec<(String, bool, bool, bool)> {
    let mut all: Vec<_> = slices(cluster, ns, svc)
        .await
        .iter()
        .flat_map(|s| s.endpoints.clone())
        .map(|e| {
            let c = e.conditions.unwrap_or_default();
            let pod = e.target_ref.and_then(|r| r.name).unwrap_or_default();
            (pod, c.ready.unwrap_or(false), c.serving.unwrap_or(false), c.terminating.unwrap_or(false))
        })
        .collect();
    all.sort();
    all
}

/// The legacy Endpoints: (ready IPs, not-ready IPs, ports).
async fn legacy(cluster: &Cluster, ns: &str, svc: &str) -> Option<(usize, usize, Vec<i32>)> {
    let api: Api<Endpoints> = Api::namespaced(cluster.client.clone(), ns);
    let ep = api.get_opt(svc).await.unwrap()?;
    let subsets = ep.subsets.unwrap_or_default();
    let ready = subsets.iter().map(|s| s.addresses.as_ref().map_or(0, Vec::len)).sum();
    let not_ready = subsets.iter().map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len)).sum();
    let ports = subsets.iter().flat_map(|s| s.ports.iter().flatten().map(|p| p.port)).collect();
    Some((ready, not_ready, ports))
}

async fn set_ready(cluster: &Cluster, ns: &str, pod: &str, ready: bool) {
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let current = api.get(pod).await.unwrap();
    let mut status = current.status.unwrap();
    for c in status.conditions.iter_mut().flatten() {
        if c.type_ == "Ready" || c.type_ == "ContainersReady" {
            c.status = if ready { "True" } else { "False" }.into();
        }
    }
    api.patch_status(pod, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_endpoints_follow_pod_readiness_and_deletion() {
    let mut cluster = Cluster::start().await;
    let ns = cluster.namespace("svc").await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let node = json!({"metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "zone-1"}}});
    nodes.create(&PostParams::default(), &serde_json::from_value(node).unwrap()).await.unwrap();
    create_pods(&cluster, &ns, 3).await;
    let svc = create_service(
        &cluster,
        &ns,
        "web",
        json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
    )
    .await;
    let all_ready = |n: usize| (0..n).map(|i| (format!("web-{i:03}"), true, true, false)).collect::<Vec<_>>();
    cluster
        .eventually("three ready endpoints", WAIT, || async {
            (endpoints_of(&cluster, &ns, "web").await == all_ready(3)).then_some(())
        })
        .await;
    let slice = &slices(&cluster, &ns, "web").await[0];
    let labels = slice.labels();
    assert_eq!(labels["endpointslice.kubernetes.io/managed-by"], "endpointslice-controller.k8s.io");
    assert_eq!(labels["tier"], "front", "the service's labels are copied");
    assert_eq!(slice.address_type, "IPv4");
    let port = &slice.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port, port.protocol.as_deref()), (Some("http"), Some(8080), Some("TCP")));
    let owner = &slice.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.clone()), ("Service", svc.uid().unwrap()));
    let endpoint = &slice.endpoints[0];
    assert_eq!(endpoint.node_name.as_deref(), Some("node-a"));
    assert_eq!(endpoint.zone.as_deref(), Some("zone-1"), "the zone comes from the node's label");
    assert_eq!(endpoint.target_ref.as_ref().unwrap().kind.as_deref(), Some("Pod"));
    cluster
        .eventually("legacy endpoints", WAIT, || async {
            (legacy(&cluster, &ns, "web").await == Some((3, 0, vec![8080]))).then_some(())
        })
        .await;

    set_ready(&cluster, &ns, "web-001", false).await;
    cluster
        .eventually("web-001 not ready", WAIT, || async {
            let eps = endpoints_of(&cluster, &ns, "web").await;
            (eps.get(1) == Some(&("web-001".into(), false, false, false))).then_some(())
        })
        .await;
    cluster
        .eventually("web-001 among notReadyAddresses", WAIT, || async {
            (legacy(&cluster, &ns, "web").await == Some((2, 1, vec![8080]))).then_some(())
        })
        .await;

    // Deleting a running pod: it stays in the slice as terminating until it is gone.
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    pods.delete("web-002", &DeleteParams::default()).await.unwrap();
    cluster
        .eventually("web-002 terminating", WAIT, || async {
            let eps = endpoints_of(&cluster, &ns, "web").await;
            (eps.get(2) == Some(&("web-002".into(), false, true, true))).then_some(())
        })
        .await;
    cluster
        .eventually("web-002 out of the legacy endpoints", WAIT, || async {
            (legacy(&cluster, &ns, "web").await == Some((1, 1, vec![8080]))).then_some(())
        })
        .await;

    // With the controllers down, the pod goes away and another becomes ready; a restarted
    // controller catches up.
    cluster.stop_controllers();
    cluster.reap_terminating(&ns).await;
    set_ready(&cluster, &ns, "web-001", true).await;
    cluster.start_controllers();
    cluster
        .eventually("two ready endpoints after a restart", WAIT, || async {
            (endpoints_of(&cluster, &ns, "web").await == all_ready(2)).then_some(())
        })
        .await;
    cluster
        .eventually("two ready legacy addresses", WAIT, || async {
            (legacy(&cluster, &ns, "web").await == Some((2, 0, vec![8080]))).then_some(())
        })
        .await;

    // Deleting the Service removes its slices and Endpoints.
    let services: Api<Service> = Api::namespaced(cluster.client.clone(), &ns);
    services.delete("web", &DeleteParams::default()).await.unwrap();
    cluster
        .eventually("the slices and endpoints to go", WAIT, || async {
            (slices(&cluster, &ns, "web").await.is_empty() && legacy(&cluster, &ns, "web").await.is_none())
                .then_some(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_a_hundred_pods_are_split_across_slices() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("big").await;
    create_pods(&cluster, &ns, 150).await;
    create_service(
        &cluster,
        &ns,
        "web",
        json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}),
    )
    .await;
    let sizes = cluster
        .eventually("150 endpoints", Duration::from_secs(40), || async {
            let slices = slices(&cluster, &ns, "web").await;
            let mut sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
            sizes.sort();
            (sizes.iter().sum::<usize>() == 150).then_some(sizes)
        })
        .await;
    assert!(sizes.iter().all(|n| *n <= 100), "a slice holds at most 100 endpoints: {sizes:?}");
    assert_eq!(sizes.len(), 2, "{sizes:?}");
    let eps = endpoints_of(&cluster, &ns, "web").await;
    let mut names: Vec<&String> = eps.iter().map(|e| &e.0).collect();
    names.dedup();
    assert_eq!(names.len(), 150, "every pod appears once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_without_a_selector_are_left_alone() {
    let cluster = Cluster::start().await;
    let ns = cluster.namespace("manual").await;
    create_pods(&cluster, &ns, 1).await;
    create_service(&cluster, &ns, "external", json!({"ports": [{"port": 80}]})).await;
    let api: Api<Endpoints> = Api::namespaced(cluster.client.clone(), &ns);
    let manual = serde_json::from_value(json!({"metadata": {"name": "external"},
        "subsets": [{"addresses": [{"ip": "192.0.2.7"}], "ports": [{"port": 80}]}]}))
    .unwrap();
    api.create(&PostParams::default(), &manual).await.unwrap();
    // A selector Service in the same namespace proves the controllers are running.
    create_service(&cluster, &ns, "web", json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})).await;
    cluster
        .eventually("the selector service's slice", WAIT, || async {
            (!slices(&cluster, &ns, "web").await.is_empty()).then_some(())
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(slices(&cluster, &ns, "external").await.is_empty(), "no slices for a service without selector");
    let ep = api.get("external").await.unwrap();
    assert_eq!(ep.subsets.unwrap()[0].addresses.as_ref().unwrap()[0].ip, "192.0.2.7");
}
