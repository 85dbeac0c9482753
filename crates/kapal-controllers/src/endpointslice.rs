//! The EndpointSlice controller: for every Service with a selector, EndpointSlices listing the
//! selected pods that have an IP, with their readiness, at most 100 endpoints per slice and one
//! set of resolved ports per slice. Services without a selector are left alone.
//!
//! This module also holds what the legacy Endpoints controller shares with it: which pods a
//! Service selects, how a Service port resolves on a pod, and the pod-to-Service mapping.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tracing::Instrument;

use crate::podtemplate::{self, controller_ref};

/// The label naming a slice's Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages a slice.
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// The most endpoints one slice holds (upstream's `--max-endpoints-per-slice` default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing pods of service {service}: {source}")]
    ListPods { service: String, source: kube::Error },
    #[error("listing endpoint slices of service {service}: {source}")]
    ListSlices { service: String, source: kube::Error },
    #[error("writing endpoint slice {slice} of service {service}: {source}")]
    Write { service: String, slice: String, source: kube::Error },
}

struct Ctx {
    client: Client,
    nodes: Store<Node>,
}

/// The label with a node's zone, copied to its endpoints.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let services: Api<Service> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY}={CONTROLLER_NAME}"));
    let controller = Controller::new(services, watcher::Config::default());
    let mapper = PodMapper::new(controller.store());
    let (nodes, writer) = reflector::store::<Node>();
    // Only node zones are read: keep names and labels, not status (a copy for every node).
    let node_watch = watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|node| {
            let meta = std::mem::take(&mut node.metadata);
            node.metadata = ObjectMeta { name: meta.name, labels: meta.labels, ..ObjectMeta::default() };
            node.spec = None;
            node.status = None;
        })
        .reflect(writer)
        .for_each(|_| async {});
    let ctx = Arc::new(Ctx { client: client.clone(), nodes });
    let slices_loop = controller
        .owns(slices.clone(), managed.clone())
        .watches(Api::<Pod>::all(client.clone()), watcher::Config::default(), move |pod| mapper.services_of(&pod))
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "endpointslice reconcile failed");
            }
        });
    // A deleted Service touches none of its slices: the orphan check also watches Services.
    let orphan_controller = Controller::new(slices, managed);
    let known = orphan_controller.store();
    let slices_of = move |svc: Service| {
        let (ns, name) = (svc.namespace(), svc.name_any());
        known
            .state()
            .iter()
            .filter(|s| s.namespace() == ns && s.labels().get(SERVICE_NAME) == Some(&name))
            .map(|s| ObjectRef::from_obj(&**s))
            .collect::<Vec<_>>()
    };
    let orphans = orphan_controller
        .watches(Api::<Service>::all(client), watcher::Config::default(), slices_of)
        .run(delete_orphan, orphan_error_policy, ctx)
        .for_each(|_| async {});
    futures::future::join3(slices_loop, orphans, node_watch).await;
    Ok(())
}

fn error_policy(_svc: Arc<Service>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "endpointslice controller");
    Action::requeue(Duration::from_secs(1))
}

fn orphan_error_policy(_slice: Arc<EndpointSlice>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "endpointslice controller: orphaned slice");
    Action::requeue(Duration::from_secs(5))
}

pub(crate) fn key(svc: &Service) -> String {
    format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
}

/// The Service's selector, if it has a non-empty one.
pub(crate) fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec.as_ref()?.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether `svc` selects `pod`.
pub(crate) fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(selector) = selector(svc) else { return false };
    svc.namespace() == pod.namespace()
        && selector.iter().all(|(k, v)| pod.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
}

/// The pods the Service selects.
pub(crate) async fn selected_pods(client: &Client, svc: &Service) -> Result<Vec<Pod>, kube::Error> {
    let Some(selector) = selector(svc) else { return Ok(Vec::new()) };
    let query = selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let api: Api<Pod> = Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default());
    Ok(api.list(&ListParams::default().labels(&query)).await?.items)
}

/// Whether the Service publishes pods before they are ready.
pub(crate) fn publish_not_ready(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false)
}

/// The pod's IP, if it has one and has not finished.
pub(crate) fn pod_ip(pod: &Pod) -> Option<&str> {
    if matches!(podtemplate::phase(pod), "Succeeded" | "Failed") {
        return None;
    }
    pod.status.as_ref()?.pod_ip.as_deref().filter(|ip| !ip.is_empty())
}

/// The port a Service port reaches on `pod`: the numeric targetPort, the container port of that
/// name (with the same protocol), or the Service port itself when targetPort is unset.
pub(crate) fn resolve_port(port: &ServicePort, pod: &Pod) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(s)) if s.parse::<i32>().is_ok() => s.parse().ok(),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            spec.containers.iter().flat_map(|c| c.ports.iter().flatten()).find_map(|p| {
                (p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                    .then_some(p.container_port)
            })
        }
    }
}

/// The pod as the target of an endpoint.
pub(crate) fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.namespace(),
        name: Some(pod.name_any()),
        uid: pod.uid(),
        ..ObjectReference::default()
    }
}

/// The pod's hostname in the Service's DNS, when the pod names this Service as its subdomain.
pub(crate) fn hostname(svc: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let name = spec.hostname.as_ref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == Some(svc.name_any().as_str())).then(|| name.clone())
}

/// A pod's namespace and name.
type PodKey = (String, String);

/// Maps a pod event to the Services that select the pod now or selected it at its last event,
/// so that a pod whose labels change is also removed from the Services it left.
#[derive(Clone)]
pub(crate) struct PodMapper {
    services: Store<Service>,
    last: Arc<Mutex<HashMap<PodKey, Vec<ObjectRef<Service>>>>>,
}

impl PodMapper {
    pub(crate) fn new(services: Store<Service>) -> PodMapper {
        PodMapper { services, last: Arc::default() }
    }

    pub(crate) fn services_of(&self, pod: &Pod) -> Vec<ObjectRef<Service>> {
        let now: Vec<ObjectRef<Service>> =
            self.services.state().iter().filter(|s| selects(s, pod)).map(|s| ObjectRef::from_obj(&**s)).collect();
        let key = (pod.namespace().unwrap_or_default(), pod.name_any());
        let Ok(mut last) = self.last.lock() else { return now };
        let mut all = if pod.metadata.deletion_timestamp.is_some() && now.is_empty() {
            last.remove(&key).unwrap_or_default()
        } else {
            last.insert(key, now.clone()).unwrap_or_default()
        };
        for r in now {
            if !all.contains(&r) {
                all.push(r);
            }
        }
        all
    }
}

/// The address family of the Service's slices.
fn address_type(svc: &Service) -> &str {
    let family = svc.spec.as_ref().and_then(|s| s.ip_families.as_ref()).and_then(|f| f.first());
    if family.is_some_and(|f| f == "IPv6") { "IPv6" } else { "IPv4" }
}

fn family_of(ip: &str) -> &'static str {
    if ip.contains(':') { "IPv6" } else { "IPv4" }
}

/// The endpoint of one pod, with its conditions.
fn endpoint(svc: &Service, pod: &Pod, ip: &str, zone_of: &dyn Fn(&str) -> Option<String>) -> Endpoint {
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let serving = publish_not_ready(svc) || podtemplate::is_ready(pod);
    Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(publish_not_ready(svc) || (serving && !terminating)),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: hostname(svc, pod),
        zone: node_name.as_deref().and_then(zone_of),
        node_name,
        target_ref: Some(pod_ref(pod)),
        ..Endpoint::default()
    }
}

/// The slice ports of a pod: every Service port that resolves on it.
fn ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let service_ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
    service_ports
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(resolve_port(p, pod)?),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

/// The endpoints the Service should have, grouped by their resolved ports, each group sorted.
/// `zone_of` gives a node's zone.
pub fn desired(
    svc: &Service,
    pods: &[Pod],
    zone_of: &dyn Fn(&str) -> Option<String>,
) -> Vec<(Vec<EndpointPort>, Vec<Endpoint>)> {
    let family = address_type(svc);
    let mut groups: Vec<(Vec<EndpointPort>, Vec<Endpoint>)> = Vec::new();
    for pod in pods.iter().filter(|p| selects(svc, p)) {
        let ips = pod.status.as_ref().and_then(|s| s.pod_ips.as_ref());
        let listed = ips.into_iter().flatten().map(|i| i.ip.as_str()).find(|ip| family_of(ip) == family);
        let Some(ip) = pod_ip(pod).and_then(|first| if family_of(first) == family { Some(first) } else { listed })
        else {
            continue;
        };
        let ports = ports(svc, pod);
        let ep = endpoint(svc, pod, ip, zone_of);
        match groups.iter_mut().find(|(p, _)| *p == ports) {
            Some((_, eps)) => eps.push(ep),
            None => groups.push((ports, vec![ep])),
        }
    }
    for (_, eps) in &mut groups {
        eps.sort_by(|a, b| target_name(a).cmp(target_name(b)));
    }
    groups
}

fn target_name(ep: &Endpoint) -> &str {
    ep.target_ref.as_ref().and_then(|r| r.name.as_deref()).unwrap_or_default()
}

fn target_uid(ep: &Endpoint) -> Option<&str> {
    ep.target_ref.as_ref()?.uid.as_deref()
}

/// What to write: slices to create (without names) and to update, and names of slices to delete.
#[derive(Debug, Default)]
pub struct Plan {
    /// New slices, named by the server from `<service>-`.
    pub create: Vec<EndpointSlice>,
    /// Existing slices with new content.
    pub update: Vec<EndpointSlice>,
    /// Names of slices no longer needed.
    pub delete: Vec<String>,
}

/// Packs the desired endpoints into slices, keeping endpoints in the slice that already holds
/// them, filling existing slices before creating new ones and writing only what changes.
pub fn plan(svc: &Service, existing: &[EndpointSlice], desired: Vec<(Vec<EndpointPort>, Vec<Endpoint>)>) -> Plan {
    let labels = slice_labels(svc);
    let family = address_type(svc).to_string();
    let mut plan = Plan::default();
    let mut used: Vec<bool> = vec![false; existing.len()];
    let groups = if desired.iter().all(|(_, eps)| eps.is_empty()) {
        // A Service with no endpoints keeps one empty placeholder slice.
        vec![(Vec::new(), Vec::new())]
    } else {
        desired
    };
    for (ports, endpoints) in groups {
        let candidates: Vec<usize> = (0..existing.len())
            .filter(|i| existing[*i].address_type == family && existing[*i].ports.clone().unwrap_or_default() == ports)
            .collect();
        let mut fill: Vec<Vec<Endpoint>> = vec![Vec::new(); candidates.len()];
        let mut homeless = Vec::new();
        for ep in endpoints {
            let home = candidates.iter().position(|i| {
                existing[*i].endpoints.iter().any(|e| target_uid(e).is_some() && target_uid(e) == target_uid(&ep))
            });
            match home {
                Some(h) if fill[h].len() < MAX_ENDPOINTS_PER_SLICE => fill[h].push(ep),
                _ => homeless.push(ep),
            }
        }
        let mut new: Vec<Endpoint> = Vec::new();
        for ep in homeless {
            match fill.iter().position(|f| f.len() < MAX_ENDPOINTS_PER_SLICE) {
                Some(h) => fill[h].push(ep),
                None => new.push(ep),
            }
        }
        let keep_empty = new.is_empty() && fill.iter().all(Vec::is_empty);
        let port_list = (!ports.is_empty()).then(|| ports.clone());
        for (n, mut eps) in fill.into_iter().enumerate() {
            if eps.is_empty() && !(keep_empty && n == 0) {
                continue;
            }
            let i = candidates[n];
            used[i] = true;
            eps.sort_by(|a, b| target_name(a).cmp(target_name(b)));
            let old = &existing[i];
            if old.endpoints != eps || old.ports != port_list || !has_labels(old, &labels) {
                let mut slice = old.clone();
                slice.endpoints = eps;
                slice.ports = port_list.clone();
                slice.metadata.labels.get_or_insert_default().extend(labels.clone());
                plan.update.push(slice);
            }
        }
        let fresh = |eps: Vec<Endpoint>| new_slice(svc, &family, &ports, &labels, eps);
        if keep_empty && candidates.is_empty() {
            plan.create.push(fresh(Vec::new()));
        }
        for chunk in new.chunks(MAX_ENDPOINTS_PER_SLICE) {
            plan.create.push(fresh(chunk.to_vec()));
        }
    }
    plan.delete = existing.iter().zip(used).filter(|(_, u)| !u).map(|(s, _)| s.name_any()).collect();
    plan
}

fn has_labels(slice: &EndpointSlice, labels: &BTreeMap<String, String>) -> bool {
    let have = slice.metadata.labels.clone().unwrap_or_default();
    labels.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// The slice labels: the Service's own, plus the service name, the manager and, for headless
/// Services, `service.kubernetes.io/headless`.
fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    labels.insert(SERVICE_NAME.into(), svc.name_any());
    labels.insert(MANAGED_BY.into(), CONTROLLER_NAME.into());
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    }
    labels
}

fn new_slice(
    svc: &Service,
    family: &str,
    ports: &[EndpointPort],
    labels: &BTreeMap<String, String>,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", svc.name_any())),
            namespace: svc.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![controller_ref(svc)]),
            ..ObjectMeta::default()
        },
        address_type: family.to_string(),
        endpoints,
        ports: (!ports.is_empty()).then(|| ports.to_vec()),
    }
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let external_name = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName");
    if selector(&svc).is_none() || svc.metadata.deletion_timestamp.is_some() || external_name {
        return Ok(Action::await_change());
    }
    let span = tracing::debug_span!("reconcile endpointslices", service = %key(&svc));
    sync(&svc, &ctx).instrument(span).await
}

async fn sync(svc: &Service, ctx: &Ctx) -> Result<Action, Error> {
    let ns = svc.namespace().unwrap_or_default();
    let pods = selected_pods(&ctx.client, svc).await.map_err(|source| Error::ListPods { service: key(svc), source })?;
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let mine = format!("{SERVICE_NAME}={},{MANAGED_BY}={CONTROLLER_NAME}", svc.name_any());
    let existing = api
        .list(&ListParams::default().labels(&mine))
        .await
        .map_err(|source| Error::ListSlices { service: key(svc), source })?
        .items;
    let uid = svc.uid();
    let (existing, foreign): (Vec<_>, Vec<_>) = existing
        .into_iter()
        .partition(|s| podtemplate::controller_of(&s.metadata).is_some_and(|r| Some(&r.uid) == uid.as_ref()));
    let zone_of = |node: &str| {
        let node = ctx.nodes.get(&ObjectRef::new(node))?;
        node.labels().get(ZONE_LABEL).cloned()
    };
    let mut plan = plan(svc, &existing, desired(svc, &pods, &zone_of));
    plan.delete.extend(foreign.iter().map(ResourceExt::name_any));
    let fail = |slice: String| move |source| Error::Write { service: key(svc), slice, source };
    for slice in &plan.update {
        let name = slice.name_any();
        api.replace(&name, &PostParams::default(), slice).await.map_err(fail(name))?;
    }
    for slice in &plan.create {
        let created = api.create(&PostParams::default(), slice).await.map_err(fail(svc.name_any()))?;
        tracing::info!(service = %key(svc), slice = %created.name_any(), endpoints = slice.endpoints.len(), "created endpoint slice");
    }
    for name in &plan.delete {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(fail(name.clone())(source)),
        }
    }
    Ok(Action::await_change())
}

/// Deletes a managed slice whose Service is gone (or was recreated), as the garbage collector
/// would through the ownerReference.
async fn delete_orphan(slice: Arc<EndpointSlice>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = slice.namespace().unwrap_or_default();
    let Some(owner) = podtemplate::controller_of(&slice.metadata) else { return Ok(Action::await_change()) };
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let fail = |source| Error::Write { service: format!("{ns}/{}", owner.name), slice: slice.name_any(), source };
    let live = services.get_opt(&owner.name).await.map_err(fail)?;
    if live.is_some_and(|s| s.uid().as_deref() == Some(owner.uid.as_str())) {
        return Ok(Action::await_change());
    }
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    match api.delete(&slice.name_any(), &DeleteParams::background()).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::await_change()),
        Err(source) => Err(fail(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_zone(_: &str) -> Option<String> {
        None
    }

    fn svc(extra: serde_json::Value) -> Service {
        let mut v = json!({"metadata": {"name": "web", "namespace": "ns", "uid": "s1", "labels": {"team": "a"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}});
        if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, ip: &str, ready: bool, container_port: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": container_port}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_split_slices() {
        let s = svc(json!({}));
        let pods =
            [pod("a", "10.0.0.1", true, 8080), pod("b", "10.0.0.2", true, 9090), pod("c", "10.0.0.3", true, 8080)];
        let groups = desired(&s, &pods, &no_zone);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0[0].port, Some(8080));
        assert_eq!(groups[0].1.len(), 2);
        assert_eq!(groups[1].0[0].port, Some(9090));
        let plan = plan(&s, &[], groups);
        assert_eq!(plan.create.len(), 2);
        assert!(plan.create.iter().all(|sl| sl.metadata.labels.as_ref().unwrap()[MANAGED_BY] == CONTROLLER_NAME));
    }

    #[test]
    fn readiness_and_termination_set_the_conditions() {
        let s = svc(json!({}));
        let mut gone = pod("t", "10.0.0.4", true, 8080);
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        let groups = desired(&s, &[pod("r", "10.0.0.1", false, 8080), gone], &no_zone);
        let conds: Vec<_> = groups[0].1.iter().map(|e| e.conditions.clone().unwrap()).collect();
        assert_eq!((conds[0].ready, conds[0].serving, conds[0].terminating), (Some(false), Some(false), Some(false)));
        assert_eq!((conds[1].ready, conds[1].serving, conds[1].terminating), (Some(false), Some(true), Some(true)));
        let publish = svc(json!({"publishNotReadyAddresses": true}));
        let groups = desired(&publish, &[pod("r", "10.0.0.1", false, 8080)], &no_zone);
        assert_eq!(groups[0].1[0].conditions.as_ref().unwrap().ready, Some(true));
    }

    #[test]
    fn more_than_a_hundred_endpoints_take_several_slices_and_stay_put() {
        let s = svc(json!({}));
        let pods: Vec<Pod> =
            (0..250).map(|i| pod(&format!("p{i:03}"), &format!("10.0.{}.{}", i / 200, i % 200), true, 80)).collect();
        let first = plan(&s, &[], desired(&s, &pods, &no_zone));
        assert_eq!(first.create.iter().map(|s| s.endpoints.len()).collect::<Vec<_>>(), [100, 100, 50]);
        let existing: Vec<EndpointSlice> = first
            .create
            .into_iter()
            .enumerate()
            .map(|(i, mut sl)| {
                sl.metadata.name = Some(format!("web-{i}"));
                sl
            })
            .collect();
        // Nothing changed: nothing to write.
        let again = plan(&s, &existing, desired(&s, &pods, &no_zone));
        assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty(), "{again:?}");
        // One pod gone: only its slice changes.
        let fewer = plan(&s, &existing, desired(&s, &pods[1..], &no_zone));
        assert_eq!(fewer.update.len(), 1);
        assert!(fewer.create.is_empty() && fewer.delete.is_empty());
    }

    #[test]
    fn a_service_without_endpoints_keeps_one_empty_slice() {
        let s = svc(json!({}));
        let p = plan(&s, &[], desired(&s, &[], &no_zone));
        assert_eq!(p.create.len(), 1);
        assert!(p.create[0].endpoints.is_empty());
    }
}
