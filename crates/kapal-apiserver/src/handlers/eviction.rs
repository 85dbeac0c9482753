//! `pods/eviction`: a delete that honours PodDisruptionBudgets, as `kubectl drain` uses it.
//!
//! The budget's `status.disruptionsAllowed` (kept by the disruption controller) is decremented
//! and the pod noted in `status.disruptedPods` before the pod is deleted, so two evictions can
//! never both spend the last allowed disruption.

use http::{Method, StatusCode};
use kapal_api::selector::LabelSelector;
use kapal_api::{ApiError, Cause};
use serde_json::{Value, json};

use super::write::{WriteError, body_object};
use super::{Ctx, Reply};
use crate::ApiServer;
use crate::bootstrap::target;
use crate::cache::Cached;
use crate::objects;

const BUDGET_VIOLATED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

impl ApiServer {
    pub(crate) async fn evict(&self, ctx: &Ctx) -> Result<Reply, ApiError> {
        let body = body_object(ctx)?;
        let name = ctx.path.name.clone().unwrap_or_default();
        let namespace = ctx.namespace().unwrap_or_default().to_string();
        if let Some(given) = body.pointer("/metadata/name").and_then(Value::as_str)
            && given != name
        {
            return Err(ApiError::bad_request(format!(
                "name in URL does not match name in Eviction object: {name} != {given}"
            )));
        }
        let options = body.get("deleteOptions").cloned().unwrap_or_else(|| json!({}));
        self.cache.sync().await;
        let cached = self.cached(ctx).await?;
        let pod = cached.object();
        let dry_run = ctx.dry_run()?;
        if !ignores_budgets(&pod) {
            self.spend_budget(&namespace, &name, &pod, dry_run).await?;
        }
        if !dry_run {
            self.mark_disruption_target(&namespace, &name, cached).await?;
        }
        let delete_ctx =
            self.internal_ctx(Method::DELETE, target("", "v1", "pods", Some(&namespace), Some(&name)), &options)?;
        let delete_ctx = Ctx { user: ctx.user.clone(), query: ctx.query.clone(), ..delete_ctx };
        self.delete(&delete_ctx).await?;
        Ok(Reply {
            status: StatusCode::CREATED,
            body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            warnings: vec![],
        })
    }

    /// Adds the `DisruptionTarget` condition (reason `EvictionByEvictionAPI`) to the pod being
    /// evicted, as upstream does before the delete, so that controllers and users can tell an
    /// eviction from a failure.
    async fn mark_disruption_target(&self, namespace: &str, name: &str, mut pod: Cached) -> Result<(), ApiError> {
        let pods_ctx =
            self.internal_ctx(Method::PUT, target("", "v1", "pods", Some(namespace), Some(name)), &json!({}))?;
        for _ in 0..8 {
            let mut updated = (*pod.object()).clone();
            let conditions = updated["status"]["conditions"].as_array().cloned().unwrap_or_default();
            if conditions.iter().any(|c| c["type"] == "DisruptionTarget" && c["status"] == "True") {
                return Ok(());
            }
            let mut kept: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != "DisruptionTarget").collect();
            kept.push(json!({"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                "message": "Eviction API: evicting", "lastTransitionTime": objects::now_rfc3339()}));
            if !updated["status"].is_object() {
                updated["status"] = json!({});
            }
            updated["status"]["conditions"] = Value::Array(kept);
            match self.store_update(&pods_ctx, &pod, updated, false).await {
                Ok(_) | Err(WriteError::Raced(None)) => return Ok(()),
                Err(WriteError::Raced(Some(now))) => pod = now,
                Err(WriteError::Api(e)) => return Err(e),
            }
        }
        Err(ApiError::stale("", "pods", name))
    }

    /// Takes one disruption from the budget covering `pod`, or says why not.
    async fn spend_budget(&self, namespace: &str, name: &str, pod: &Value, dry_run: bool) -> Result<(), ApiError> {
        let pdb_ctx = self.internal_ctx(
            Method::PUT,
            target("policy", "v1", "poddisruptionbudgets", Some(namespace), None),
            &json!({}),
        )?;
        let prefix = pdb_ctx.served.info.namespace_prefix(Some(namespace));
        let labels = pod.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut budgets: Vec<Cached> = self
            .cache
            .list(&prefix)
            .into_iter()
            .filter(|c| {
                let selector = c.object().pointer("/spec/selector").cloned().unwrap_or(Value::Null);
                LabelSelector::from_json(&selector).is_ok_and(|s| s.matches(&labels))
            })
            .collect();
        let Some(mut budget) = budgets.pop() else { return Ok(()) };
        if !budgets.is_empty() {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        let pdb_name = budget.name().to_string();
        let pdb_ctx =
            Ctx { path: target("policy", "v1", "poddisruptionbudgets", Some(namespace), Some(&pdb_name)), ..pdb_ctx };
        for _ in 0..8 {
            let object = budget.object();
            let status = object.get("status").cloned().unwrap_or_else(|| json!({}));
            let int = |k: &str| status.get(k).and_then(Value::as_i64).unwrap_or(0);
            let generation = object.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
            if int("observedGeneration") < generation {
                return Err(too_many_requests(format!(
                    "The disruption budget {pdb_name} is still being processed by the server."
                )));
            }
            if !is_ready(pod) && unhealthy_may_go(&object, int("currentHealthy"), int("desiredHealthy")) {
                return Ok(());
            }
            let allowed = int("disruptionsAllowed");
            if allowed < 0 {
                return Err(ApiError::forbidden("pdb disruptions allowed is negative"));
            }
            if allowed == 0 {
                return Err(too_many_requests(format!(
                    "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                    int("desiredHealthy"),
                    int("currentHealthy")
                )));
            }
            let mut updated = (*object).clone();
            updated["status"]["disruptionsAllowed"] = json!(allowed - 1);
            if !updated["status"]["disruptedPods"].is_object() {
                updated["status"]["disruptedPods"] = json!({});
            }
            updated["status"]["disruptedPods"][name] = json!(objects::now_rfc3339());
            match self.store_update(&pdb_ctx, &budget, updated, dry_run).await {
                Ok(_) => return Ok(()),
                Err(WriteError::Raced(Some(now))) => budget = now,
                Err(WriteError::Raced(None)) => return Ok(()),
                Err(WriteError::Api(e)) => return Err(e),
            }
        }
        Err(ApiError::stale("policy", "poddisruptionbudgets", &pdb_name))
    }
}

fn too_many_requests(cause: String) -> ApiError {
    let mut e = ApiError::new(429, "TooManyRequests", BUDGET_VIOLATED);
    e.causes.push(Cause::new("DisruptionBudget", "", cause));
    e
}

/// Pods that are not running, or already going, need no budget (upstream `canIgnorePDB`).
fn ignores_budgets(pod: &Value) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending");
    matches!(phase, "Succeeded" | "Failed" | "Pending") || objects::is_deleting(pod)
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Whether an unhealthy pod may be evicted without spending a disruption
/// (`unhealthyPodEvictionPolicy`: IfHealthyBudget by default, or AlwaysAllow).
fn unhealthy_may_go(pdb: &Value, current: i64, desired: i64) -> bool {
    match pdb.pointer("/spec/unhealthyPodEvictionPolicy").and_then(Value::as_str) {
        Some("AlwaysAllow") => true,
        _ => current >= desired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_pods_not_being_deleted_need_a_budget() {
        assert!(ignores_budgets(&json!({"status": {"phase": "Pending"}})));
        assert!(ignores_budgets(&json!({"status": {"phase": "Succeeded"}})));
        assert!(ignores_budgets(&json!({"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running"}})));
        assert!(!ignores_budgets(&json!({"status": {"phase": "Running"}})));
    }

    #[test]
    fn unhealthy_pods_go_when_the_budget_is_healthy_or_policy_allows() {
        assert!(unhealthy_may_go(&json!({"spec": {}}), 3, 3));
        assert!(!unhealthy_may_go(&json!({"spec": {}}), 2, 3));
        assert!(unhealthy_may_go(&json!({"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}}), 0, 3));
    }

    #[test]
    fn a_spent_budget_is_429_with_the_upstream_message() {
        let e = too_many_requests("The disruption budget web needs 2 healthy pods and has 2 currently".into());
        assert_eq!((e.code, e.reason.as_str(), e.message.as_str()), (429, "TooManyRequests", BUDGET_VIOLATED));
        assert_eq!(e.causes[0].reason, "DisruptionBudget");
    }
}
