//! ResourceQuota admission: a create that would take a namespace past one of its quotas is
//! refused with upstream's 403, and an admitted create is charged to the quotas' `status.used`
//! at once (compare-and-swap on the quota, so that two concurrent creates cannot both take the
//! last slot). The ResourceQuota controller later recomputes the exact figures.

use kapal_api::ApiError;
use kapal_api::quota::{self, ResourceList};
use kapal_store::StoreError;
use serde_json::Value;

use crate::ApiServer;
use crate::cache::{Cached, decode, set_resource_version};
use crate::handlers::Ctx;
use crate::objects;

/// Attempts at charging one quota that other writers keep changing before giving up.
const RETRIES: usize = 16;

/// What one object of a kind being created is, for quota purposes.
struct Request<'a> {
    group: &'a str,
    plural: &'a str,
    qualified: String,
    name: String,
    object: &'a Value,
    /// What the object charges, without zero entries.
    delta: ResourceList,
}

impl Request<'_> {
    /// Upstream's `admission.NewForbidden`: `pods "x" is forbidden: <why>`.
    fn forbidden(&self, why: String) -> ApiError {
        let mut e = ApiError::forbidden(format!("{} \"{}\" is forbidden: {why}", self.qualified, self.name));
        e.group = Some(self.group.to_string());
        e.kind = Some(self.plural.to_string());
        e.name = Some(self.name.clone()).filter(|n| !n.is_empty());
        e
    }
}

impl ApiServer {
    /// Refuses the creation of `obj` if it would exceed a ResourceQuota of its namespace, and
    /// otherwise (unless `dry_run`) charges its usage to every quota that covers it.
    pub(crate) async fn admit_quota(&self, ctx: &Ctx, obj: &Value, dry_run: bool) -> Result<(), ApiError> {
        let Some(namespace) = ctx.namespace() else { return Ok(()) };
        let Some(quota_info) = kapal_api::registry::builtin("", "v1", "resourcequotas") else { return Ok(()) };
        let quotas = self.cache.list(&quota_info.namespace_prefix(Some(namespace)));
        if quotas.is_empty() {
            return Ok(());
        }
        let info = &ctx.served.info;
        let now = jiff::Timestamp::now().as_second();
        let mut delta = quota::usage(&info.group, &info.plural, obj, now);
        delta.retain(|_, amount| !amount.is_zero());
        let request = Request {
            group: &info.group,
            plural: &info.plural,
            qualified: info.qualified_plural(),
            name: objects::name(obj).unwrap_or_default().to_string(),
            object: obj,
            delta,
        };
        // Check every quota before charging any, so that a refusal charges nothing.
        let mut charges = Vec::new();
        for cached in quotas {
            if check(&request, &cached.object())?.is_some() {
                charges.push(cached);
            }
        }
        if dry_run {
            return Ok(());
        }
        for cached in charges {
            self.charge(&request, cached).await?;
        }
        Ok(())
    }

    /// Adds the request's usage to one quota's `status.used`, re-checking against the quota as
    /// it is now whenever another writer changed it first.
    async fn charge(&self, request: &Request<'_>, mut cached: Cached) -> Result<(), ApiError> {
        for _ in 0..RETRIES {
            let mut quota = (*cached.object()).clone();
            let Some(used) = check(request, &quota)? else { return Ok(()) };
            quota["status"]["used"] = quota::list_json(&used);
            set_resource_version(&mut quota, cached.revision);
            match self.store.update(&cached.key, encode(&quota), cached.revision).await {
                Ok(kv) => {
                    self.cache.wait_for(kv.mod_revision, std::time::Duration::from_secs(3)).await;
                    tracing::debug!(quota = %cached.key, object = %request.name, "charged quota");
                    return Ok(());
                }
                Err(StoreError::Conflict { current: Some(now), .. }) => match decode(&now) {
                    Some(now) => cached = now,
                    None => return Ok(()),
                },
                // The quota went away meanwhile: nothing left to charge.
                Err(StoreError::Conflict { current: None, .. } | StoreError::NotFound(_)) => return Ok(()),
                Err(e) => return Err(crate::store_error(e)),
            }
        }
        let name = objects::name(&cached.object()).unwrap_or_default().to_string();
        Err(ApiError::conflict(
            "",
            "resourcequotas",
            &name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ))
    }
}

/// Checks the request against one quota (a ResourceQuota as JSON). `Ok(None)`: the quota does
/// not limit this object; `Ok(Some(used))`: allowed, and `used` is the quota's new usage.
fn check(request: &Request<'_>, quota: &Value) -> Result<Option<ResourceList>, ApiError> {
    if !quota::covers(quota, request.group, request.plural, request.object) {
        return Ok(None);
    }
    let quota_name = objects::name(quota).unwrap_or_default();
    let broken = |e: quota::QuantityError| ApiError::internal(format!("resourcequota {quota_name}: {e}"));
    let hard = quota::parse_list(quota.pointer("/status/hard")).map_err(broken)?;
    let used = quota::parse_list(quota.pointer("/status/used")).map_err(broken)?;
    let counted =
        |name: &String| quota::counted_resource(name).is_some_and(|(g, p)| g == request.group && p == request.plural);
    let restricted: Vec<&String> = hard.keys().filter(|k| counted(k)).collect();
    if restricted.is_empty() {
        return Ok(None);
    }
    if request.group.is_empty() && request.plural == "pods" {
        quota::pod_constraints(request.object, &hard)
            .map_err(|why| request.forbidden(format!("failed quota: {quota_name}: {why}")))?;
    }
    if restricted.iter().any(|k| !used.contains_key(*k)) {
        let names: Vec<&str> = restricted.iter().map(|k| k.as_str()).collect();
        return Err(
            request.forbidden(format!("status unknown for quota: {quota_name}, resources: {}", names.join(",")))
        );
    }
    let requested = quota::mask(&request.delta, hard.keys());
    if requested.is_empty() {
        return Ok(None);
    }
    let new_used = quota::add(&used, &requested);
    let over = quota::exceeded(&quota::mask(&new_used, requested.keys()), &hard);
    if !over.is_empty() {
        return Err(request.forbidden(format!(
            "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
            quota::pretty(&quota::mask(&requested, &over)),
            quota::pretty(&quota::mask(&used, &over)),
            quota::pretty(&quota::mask(&hard, &over)),
        )));
    }
    Ok(Some(new_used))
}

/// The stored form: JSON without `resourceVersion` (which is the store revision).
fn encode(obj: &Value) -> Vec<u8> {
    let mut obj = obj.clone();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&obj).unwrap_or_default()
}
