//! The legacy Endpoints controller: for every Service with a selector, a core/v1 Endpoints object
//! of the same name whose subsets list the selected pods' addresses — ready ones under
//! `addresses`, others under `notReadyAddresses` — grouped by their resolved ports, as
//! `kubectl get endpoints` shows them. Endpoints of deleted Services are removed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::endpointslice::{self as slices, PodMapper, key};
use crate::podtemplate;

/// The label marking Endpoints this controller manages, which the mirroring controller skips.
pub const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing pods of service {service}: {source}")]
    ListPods { service: String, source: kube::Error },
    #[error("writing endpoints {service}: {source}")]
    Write { service: String, source: kube::Error },
}

struct Ctx {
    client: Client,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let services: Api<Service> = Api::all(client.clone());
    let endpoints: Api<Endpoints> = Api::all(client.clone());
    let controller = Controller::new(services, watcher::Config::default());
    let mapper = PodMapper::new(controller.store());
    let ctx = Arc::new(Ctx { client: client.clone() });
    let same_name = |ep: Endpoints| {
        let namespace = ep.namespace().unwrap_or_default();
        Some(ObjectRef::<Service>::new(&ep.name_any()).within(&namespace))
    };
    let main = controller
        .watches(endpoints.clone(), watcher::Config::default(), same_name)
        .watches(Api::<Pod>::all(client.clone()), watcher::Config::default(), move |pod| mapper.services_of(&pod))
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "endpoints reconcile failed");
            }
        });
    let managed = watcher::Config::default().labels(&format!("{SKIP_MIRROR}=true"));
    // A deleted Service does not touch its Endpoints: the orphan check also watches Services.
    let same_name_endpoints = |svc: Service| {
        let namespace = svc.namespace().unwrap_or_default();
        Some(ObjectRef::<Endpoints>::new(&svc.name_any()).within(&namespace))
    };
    let orphans = Controller::new(endpoints, managed)
        .watches(Api::<Service>::all(client), watcher::Config::default(), same_name_endpoints)
        .run(delete_orphan, orphan_error_policy, ctx)
        .for_each(|_| async {});
    futures::future::join(main, orphans).await;
    Ok(())
}

fn error_policy(_svc: Arc<Service>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "endpoints controller");
    Action::requeue(Duration::from_secs(1))
}

fn orphan_error_policy(_ep: Arc<Endpoints>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "endpoints controller: orphaned endpoints");
    Action::requeue(Duration::from_secs(5))
}

/// The most addresses one Endpoints object holds; beyond it the list is truncated.
pub const MAX_ADDRESSES: usize = 1000;
/// The annotation marking truncated Endpoints.
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";

/// Keeps at most `max` addresses, ready ones first; says whether anything was dropped.
pub fn truncate(mut subsets: Vec<EndpointSubset>, max: usize) -> (Vec<EndpointSubset>, bool) {
    let total: usize = subsets
        .iter()
        .map(|s| s.addresses.as_ref().map_or(0, Vec::len) + s.not_ready_addresses.as_ref().map_or(0, Vec::len))
        .sum();
    if total <= max {
        return (subsets, false);
    }
    let mut room = max;
    for s in &mut subsets {
        if let Some(l) = s.addresses.as_mut() {
            l.truncate(room);
            room -= l.len();
        }
    }
    for s in &mut subsets {
        if let Some(l) = s.not_ready_addresses.as_mut() {
            l.truncate(room);
            room -= l.len();
        }
    }
    subsets.retain(|s| {
        s.addresses.as_ref().is_some_and(|l| !l.is_empty())
            || s.not_ready_addresses.as_ref().is_some_and(|l| !l.is_empty())
    });
    for s in &mut subsets {
        for list in [&mut s.addresses, &mut s.not_ready_addresses] {
            if list.as_ref().is_some_and(Vec::is_empty) {
                *list = None;
            }
        }
    }
    (subsets, true)
}

/// Resolved ports as (name, port, protocol), identifying a subset.
type PortsKey = Vec<(String, i32, String)>;

/// The subsets for the Service's pods: one per distinct set of resolved ports, addresses sorted
/// by IP.
pub fn subsets(svc: &Service, pods: &[Pod]) -> Vec<EndpointSubset> {
    let publish = slices::publish_not_ready(svc);
    let spec = svc.spec.clone().unwrap_or_default();
    let service_ports = spec.ports.unwrap_or_default();
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let mut groups: BTreeMap<PortsKey, (Vec<EndpointPort>, EndpointSubset)> = BTreeMap::new();
    for pod in pods.iter().filter(|p| slices::selects(svc, p)) {
        let Some(ip) = slices::pod_ip(pod) else { continue };
        if pod.metadata.deletion_timestamp.is_some() && !publish {
            continue;
        }
        let ports: Vec<EndpointPort> = service_ports
            .iter()
            .filter_map(|p| {
                Some(EndpointPort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port: slices::resolve_port(p, pod)?,
                    protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: p.app_protocol.clone(),
                })
            })
            .collect();
        if ports.is_empty() && !(service_ports.is_empty() && headless) {
            continue;
        }
        let address = EndpointAddress {
            ip: ip.to_string(),
            hostname: slices::hostname(svc, pod),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(slices::pod_ref(pod)),
        };
        let group_key = ports
            .iter()
            .map(|p| (p.name.clone().unwrap_or_default(), p.port, p.protocol.clone().unwrap_or_default()))
            .collect();
        let (_, subset) = groups.entry(group_key).or_insert_with(|| (ports.clone(), EndpointSubset::default()));
        let list =
            if publish || podtemplate::is_ready(pod) { &mut subset.addresses } else { &mut subset.not_ready_addresses };
        list.get_or_insert_default().push(address);
    }
    groups
        .into_values()
        .map(|(ports, mut subset)| {
            for list in [&mut subset.addresses, &mut subset.not_ready_addresses].into_iter().flatten() {
                list.sort_by(|a, b| a.ip.cmp(&b.ip));
            }
            subset.ports = (!ports.is_empty()).then_some(ports);
            subset
        })
        .collect()
}

/// The labels of the Service's Endpoints: the Service's own, the skip-mirror mark and, for
/// headless Services, `service.kubernetes.io/headless`.
fn labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    labels.insert(SKIP_MIRROR.into(), "true".into());
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    }
    labels
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if slices::selector(&svc).is_none() || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let fail = |source| Error::Write { service: key(&svc), source };
    let pods = slices::selected_pods(&ctx.client, &svc)
        .await
        .map_err(|source| Error::ListPods { service: key(&svc), source })?;
    let (subsets, truncated) = truncate(subsets(&svc, &pods), MAX_ADDRESSES);
    let labels = labels(&svc);
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let name = svc.name_any();
    match api.get_opt(&name).await.map_err(fail)? {
        Some(mut current) => {
            let same_subsets = current.subsets.clone().unwrap_or_default() == subsets;
            let marked = current.annotations().contains_key(OVER_CAPACITY);
            if same_subsets && current.metadata.labels.as_ref() == Some(&labels) && marked == truncated {
                return Ok(Action::await_change());
            }
            current.subsets = Some(subsets);
            current.metadata.labels = Some(labels);
            let annotations = current.metadata.annotations.get_or_insert_default();
            if truncated {
                annotations.insert(OVER_CAPACITY.into(), "truncated".into());
            } else {
                annotations.remove(OVER_CAPACITY);
            }
            api.replace(&name, &PostParams::default(), &current).await.map_err(fail)?;
        }
        None => {
            let endpoints = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(labels),
                    annotations: truncated.then(|| BTreeMap::from([(OVER_CAPACITY.into(), "truncated".into())])),
                    ..ObjectMeta::default()
                },
                subsets: Some(subsets),
            };
            api.create(&PostParams::default(), &endpoints).await.map_err(fail)?;
        }
    }
    tracing::debug!(service = %key(&svc), "updated endpoints");
    Ok(Action::await_change())
}

/// Deletes managed Endpoints whose Service no longer exists.
async fn delete_orphan(ep: Arc<Endpoints>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = ep.namespace().unwrap_or_default();
    let name = ep.name_any();
    let fail = |source| Error::Write { service: format!("{ns}/{name}"), source };
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    if services.get_opt(&name).await.map_err(fail)?.is_some() {
        return Ok(Action::await_change());
    }
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions { uid: ep.uid(), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(Action::await_change()),
        Err(source) => Err(fail(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ready_and_unready_pods_land_in_their_lists_with_resolved_ports() {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))
        .unwrap();
        let pod = |name: &str, ip: &str, ready: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}},
                "spec": {"containers": []},
                "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}}))
            .unwrap()
        };
        let other: Pod =
            serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "ns", "labels": {"app": "db"}},
            "status": {"phase": "Running", "podIP": "10.0.0.9"}}))
            .unwrap();
        let subsets = subsets(
            &svc,
            &[pod("b", "10.0.0.2", "True"), pod("a", "10.0.0.1", "True"), pod("c", "10.0.0.3", "False"), other],
        );
        assert_eq!(subsets.len(), 1);
        let ips = |l: &Option<Vec<EndpointAddress>>| l.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>();
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.0.0.3"]);
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
        let (kept, truncated) = truncate(subsets.clone(), 2);
        assert!(truncated);
        assert_eq!(
            (ips(&kept[0].addresses), kept[0].not_ready_addresses.clone()),
            (vec!["10.0.0.1".to_string(), "10.0.0.2".to_string()], None)
        );
        assert!(!truncate(subsets, 3).1, "three addresses fit in three");
    }
}
