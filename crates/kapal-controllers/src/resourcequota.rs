//! The ResourceQuota controller: keeps every quota's `status.hard` (a copy of `spec.hard`) and
//! `status.used` (what the namespace's objects really use, for the resources the quota limits).
//!
//! The API server charges creates to `status.used` as it admits them; this controller is what
//! makes the figures exact again: it gives back what deleted and finished objects held and
//! corrects charges for creates that failed after admission. It recomputes a quota whenever a
//! counted object of its namespace changes and, level-triggered, every few minutes anyway. The
//! status is written with the resourceVersion read before counting, so that a charge admitted
//! meanwhile makes the write conflict and the count is redone instead of losing the charge.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota, ResourceQuotaStatus, Secret, Service,
};
use kapal_api::quota::{self, Amount, ResourceList};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;

/// How often every quota is recounted even when nothing it watches changed (upstream's
/// `--resource-quota-sync-period`).
pub const RESYNC: Duration = Duration::from_secs(300);
/// How often quotas that count kinds this controller does not watch are recounted.
pub const UNWATCHED_RESYNC: Duration = Duration::from_secs(15);

/// The kinds whose changes trigger a recount of their namespace's quotas.
const WATCHED: &[&str] = &[
    "pods",
    "services",
    "persistentvolumeclaims",
    "configmaps",
    "secrets",
    "replicationcontrollers",
    "resourcequotas",
];

/// What can go wrong recounting one quota.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading resourcequota {0}: {1}")]
    Get(String, #[source] kube::Error),
    #[error("resourcequota {0} has an invalid spec.hard: {1}")]
    Hard(String, #[source] quota::QuantityError),
    #[error("discovering {resource} for resourcequota {quota}: {source}")]
    Discover { quota: String, resource: String, source: kube::Error },
    #[error("listing {resource} for resourcequota {quota}: {source}")]
    List { quota: String, resource: String, source: kube::Error },
    #[error("encoding resourcequota {0}: {1}")]
    Encode(String, #[source] serde_json::Error),
    #[error("updating status of resourcequota {0}: {1}")]
    Status(String, #[source] kube::Error),
}

struct Ctx {
    client: Client,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let quotas: Api<ResourceQuota> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client: client.clone() });
    let controller = Controller::new(quotas.clone(), watcher::Config::default());
    let store = controller.store();
    let config = watcher::Config::default;
    controller
        .watches(Api::<Pod>::all(client.clone()), config(), namespace_quotas(&store))
        .watches(Api::<Service>::all(client.clone()), config(), namespace_quotas(&store))
        .watches(Api::<PersistentVolumeClaim>::all(client.clone()), config(), namespace_quotas(&store))
        .watches(Api::<ConfigMap>::all(client.clone()), config(), namespace_quotas(&store))
        .watches(Api::<Secret>::all(client.clone()), config(), namespace_quotas(&store))
        .watches(Api::<ReplicationController>::all(client.clone()), config(), namespace_quotas(&store))
        .watches(quotas, config(), namespace_quotas(&store))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "resourcequota reconcile failed");
            }
        })
        .await;
    Ok(())
}

/// Maps a changed object to every quota of its namespace.
fn namespace_quotas<K: Resource>(store: &Store<ResourceQuota>) -> impl Fn(K) -> Vec<ObjectRef<ResourceQuota>> + use<K> {
    let store = store.clone();
    move |object: K| {
        let namespace = object.meta().namespace.clone();
        store
            .state()
            .iter()
            .filter(|q| namespace.is_some() && q.namespace() == namespace)
            .map(|q| ObjectRef::from_obj(q.as_ref()))
            .collect()
    }
}

fn error_policy(quota: Arc<ResourceQuota>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(resourcequota = %key(&quota), %error, "resourcequota sync failed");
    Action::requeue(Duration::from_secs(2))
}

fn key(quota: &ResourceQuota) -> String {
    format!("{}/{}", quota.namespace().unwrap_or_default(), quota.name_any())
}

#[tracing::instrument(skip_all, fields(resourcequota = %key(&cached)))]
async fn reconcile(cached: Arc<ResourceQuota>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let namespace = cached.namespace().unwrap_or_default();
    let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = cached.name_any();
    let mut quota = match api.get_opt(&name).await.map_err(|e| Error::Get(key(&cached), e))? {
        Some(q) if q.uid() == cached.uid() && q.metadata.deletion_timestamp.is_none() => q,
        _ => return Ok(Action::await_change()),
    };
    let object = serde_json::to_value(&quota).map_err(|e| Error::Encode(key(&quota), e))?;
    let hard = quota::parse_list(object.pointer("/spec/hard")).map_err(|e| Error::Hard(key(&quota), e))?;
    let (used, unwatched) = calculate_usage(&ctx.client, &namespace, &object, &hard).await?;
    let status = ResourceQuotaStatus { hard: Some(to_quantities(&hard)), used: Some(to_quantities(&used)) };
    let current = quota.status.clone().unwrap_or_default();
    let same = |a: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
                b: &ResourceList| canonical(a) == to_quantities(b);
    let resync = if unwatched { UNWATCHED_RESYNC } else { RESYNC };
    if same(&current.hard, &hard) && same(&current.used, &used) {
        return Ok(Action::requeue(resync));
    }
    quota.status = Some(status);
    match api.replace_status(&name, &PostParams::default(), &quota).await {
        Ok(_) => {
            tracing::debug!(used = %quota::pretty(&used), "updated quota usage");
            Ok(Action::requeue(resync))
        }
        // An admission charged the quota while we counted: count again.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Action::requeue(Duration::from_millis(50))),
        Err(e) => Err(Error::Status(key(&quota), e)),
    }
}

type Quantities = BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>;

fn to_quantities(list: &ResourceList) -> Quantities {
    list.iter()
        .map(|(k, v)| (k.clone(), k8s_openapi::apimachinery::pkg::api::resource::Quantity(v.to_string())))
        .collect()
}

/// A stored list in canonical form (unparsable entries kept as written, so they differ).
fn canonical(list: &Option<Quantities>) -> Quantities {
    list.iter()
        .flatten()
        .map(|(k, v)| {
            let text = Amount::parse(&v.0).map(|a| a.to_string()).unwrap_or_else(|_| v.0.clone());
            (k.clone(), k8s_openapi::apimachinery::pkg::api::resource::Quantity(text))
        })
        .collect()
}

/// What the namespace's objects use of the resources in `hard`, counting only objects the quota
/// covers; and whether some counted kind is not watched (and so needs a faster resync).
async fn calculate_usage(
    client: &Client,
    namespace: &str,
    quota: &Value,
    hard: &ResourceList,
) -> Result<(ResourceList, bool), Error> {
    let quota_key = format!("{namespace}/{}", quota.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(""));
    let mut kinds: BTreeMap<(String, String), Vec<&String>> = BTreeMap::new();
    for name in hard.keys() {
        if let Some(kind) = quota::counted_resource(name) {
            kinds.entry(kind).or_default().push(name);
        }
    }
    let now = jiff::Timestamp::now().as_second();
    let mut used = ResourceList::new();
    let mut unwatched = false;
    for ((group, plural), names) in kinds {
        let resource = quota::count_name(&group, &plural);
        unwatched |= !(group.is_empty() && WATCHED.contains(&plural.as_str()));
        let Some(api_resource) = api_resource(client, &group, &plural).await.map_err(|source| Error::Discover {
            quota: quota_key.clone(),
            resource: resource.clone(),
            source,
        })?
        else {
            continue;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &api_resource);
        let objects = api.list(&ListParams::default()).await.map_err(|source| Error::List {
            quota: quota_key.clone(),
            resource: resource.clone(),
            source,
        })?;
        let mut sum: ResourceList = names.iter().map(|n| ((*n).clone(), Amount::zero())).collect();
        for object in objects.items {
            let object = serde_json::to_value(&object).map_err(|e| Error::Encode(quota_key.clone(), e))?;
            if quota::covers(quota, &group, &plural, &object) {
                sum =
                    quota::add(&sum, &quota::mask(&quota::usage(&group, &plural, &object, now), names.iter().copied()));
            }
        }
        used.extend(sum);
    }
    Ok((used, unwatched))
}

/// How to list `plural` in `group`: known core kinds directly, others through discovery; `None`
/// when the server does not serve them.
async fn api_resource(client: &Client, group: &str, plural: &str) -> Result<Option<ApiResource>, kube::Error> {
    let core = |kind: &str| ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    if group.is_empty() {
        let kind = match plural {
            "pods" => Some("Pod"),
            "services" => Some("Service"),
            "persistentvolumeclaims" => Some("PersistentVolumeClaim"),
            "configmaps" => Some("ConfigMap"),
            "secrets" => Some("Secret"),
            "replicationcontrollers" => Some("ReplicationController"),
            "resourcequotas" => Some("ResourceQuota"),
            _ => None,
        };
        if let Some(kind) = kind {
            return Ok(Some(core(kind)));
        }
    }
    let discovered = match kube::discovery::group(client, group).await {
        Ok(g) => g,
        Err(kube::Error::Discovery(_)) => return Ok(None),
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(discovered.recommended_resources().into_iter().map(|(r, _)| r).find(|r| r.plural == plural))
}
