//! The `RollingUpdate` strategy: surge the new ReplicaSet up to `replicas + maxSurge` pods in
//! total, and scale old ones down while at least `replicas - maxUnavailable` stay available.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::sync::Sync;
use super::{Error, history, replicas, rs_available, rs_replicas};

/// Available pods of a ReplicaSet that may be counted on: never more than it wants. Right after
/// a scale-down its status still reports the pods about to go; counting them would let the next
/// step delete below `replicas - maxUnavailable`.
fn dependable(rs: &ReplicaSet) -> i32 {
    rs_available(rs).min(rs_replicas(rs))
}

/// A percentage or count resolved against `total`: percentages round up when `round_up`,
/// down otherwise (upstream `GetScaledValueFromIntOrPercent`).
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let scaled = percent * i64::from(total);
            let resolved = if round_up { (scaled + 99).div_euclid(100) } else { scaled.div_euclid(100) };
            i32::try_from(resolved).map_err(|_| format!("{s} of {total} is out of range"))
        }
    }
}

/// `(maxSurge, maxUnavailable)` for `desired` replicas; when both resolve to 0, one pod may be
/// unavailable so that the rollout can progress (upstream `ResolveFenceposts`).
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), String> {
    let quarter = IntOrString::String("25%".into());
    let surge = scaled_value(max_surge.unwrap_or(&quarter), desired, true)?;
    let unavailable = scaled_value(max_unavailable.unwrap_or(&quarter), desired, false)?;
    if surge == 0 && unavailable == 0 { Ok((0, 1)) } else { Ok((surge, unavailable)) }
}

/// Whether the Deployment rolls out with `RollingUpdate` (the default).
pub fn is_rolling(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// `(maxSurge, maxUnavailable)` of a Deployment, both 0 for `Recreate`; maxUnavailable is capped
/// at `spec.replicas` (upstream `MaxSurge` and `MaxUnavailable`).
pub fn fenceposts(d: &Deployment) -> Result<(i32, i32), String> {
    if !is_rolling(d) {
        return Ok((0, 0));
    }
    let desired = replicas(d);
    let params = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    let (surge, unavailable) = resolve_fenceposts(
        params.and_then(|p| p.max_surge.as_ref()),
        params.and_then(|p| p.max_unavailable.as_ref()),
        desired,
    )?;
    let unavailable = if desired == 0 { 0 } else { unavailable.min(desired) };
    Ok((surge, unavailable))
}

/// The size for the new ReplicaSet in this step (upstream `NewRSNewReplicas`).
pub fn new_rs_new_replicas(d: &Deployment, all_replicas: i32, new_replicas: i32, surge: i32) -> i32 {
    if !is_rolling(d) {
        return replicas(d);
    }
    let max_total = replicas(d) + surge;
    if all_replicas >= max_total {
        return new_replicas;
    }
    let up = (max_total - all_replicas).min(replicas(d) - new_replicas);
    new_replicas + up
}

/// Sum of `spec.replicas`.
pub fn spec_sum<'a>(sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    sets.into_iter().map(rs_replicas).sum()
}

impl Sync {
    /// One step of a rolling update.
    pub async fn rollout_rolling(&mut self, new: Option<ReplicaSet>, mut old: Vec<ReplicaSet>) -> Result<(), Error> {
        let mut new = match new {
            Some(rs) => rs,
            None => self.create_new_replica_set(&old).await?,
        };
        if self.reconcile_new(&mut new, &old).await? {
            return self.sync_rollout_status(&old, Some(&new)).await;
        }
        if self.reconcile_old(&new, &mut old).await? {
            return self.sync_rollout_status(&old, Some(&new)).await;
        }
        if super::status::deployment_complete(&self.d, self.d.status.as_ref()) {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(&old, Some(&new)).await
    }

    async fn reconcile_new(&self, new: &mut ReplicaSet, old: &[ReplicaSet]) -> Result<bool, Error> {
        let desired = replicas(&self.d);
        let current = rs_replicas(new);
        if current == desired {
            return Ok(false);
        }
        if current > desired {
            return self.scale_and_record(new, desired).await;
        }
        let all = spec_sum(old) + current;
        let target = new_rs_new_replicas(&self.d, all, current, self.surge);
        self.scale_and_record(new, target).await
    }

    async fn reconcile_old(&self, new: &ReplicaSet, old: &mut [ReplicaSet]) -> Result<bool, Error> {
        let old_count = spec_sum(old.iter());
        if old_count == 0 {
            return Ok(false);
        }
        let all = old_count + rs_replicas(new);
        let min_available = replicas(&self.d) - self.unavailable;
        let new_unavailable = rs_replicas(new) - dependable(new);
        let max_scaled_down = all - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        history::sort_by_creation(old);
        let cleaned = self.cleanup_unhealthy(old, max_scaled_down).await?;
        let scaled = self.scale_down_old_available(new, old).await?;
        Ok(cleaned + scaled > 0)
    }

    /// Scales old ReplicaSets down by their unavailable pods first, oldest first: those pods
    /// cost no availability.
    async fn cleanup_unhealthy(&self, old: &mut [ReplicaSet], max_cleanup: i32) -> Result<i32, Error> {
        let mut total = 0;
        for rs in old.iter_mut() {
            if total >= max_cleanup {
                break;
            }
            let (wanted, available) = (rs_replicas(rs), rs_available(rs));
            // Just scaled down, its status may still count more available pods than it wants:
            // nothing unhealthy to remove (upstream refuses the negative step with an error).
            if wanted == 0 || available >= wanted {
                continue;
            }
            let down = (max_cleanup - total).min(wanted - available);
            self.scale_and_record(rs, wanted - down).await?;
            total += down;
        }
        Ok(total)
    }

    /// Scales available old pods down, oldest ReplicaSet first, while availability stays at or
    /// above `replicas - maxUnavailable`.
    async fn scale_down_old_available(&self, new: &ReplicaSet, old: &mut [ReplicaSet]) -> Result<i32, Error> {
        let min_available = replicas(&self.d) - self.unavailable;
        let available: i32 = old.iter().map(dependable).sum::<i32>() + dependable(new);
        if available <= min_available {
            return Ok(0);
        }
        let budget = available - min_available;
        let mut total = 0;
        for rs in old.iter_mut() {
            if total >= budget {
                break;
            }
            let wanted = rs_replicas(rs);
            if wanted == 0 {
                continue;
            }
            let down = wanted.min(budget - total);
            self.scale_and_record(rs, wanted - down).await?;
            total += down;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &str) -> IntOrString {
        IntOrString::String(v.into())
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        assert_eq!(resolve_fenceposts(Some(&s("25%")), Some(&s("25%")), 10), Ok((3, 2)));
        assert_eq!(resolve_fenceposts(Some(&s("25%")), Some(&s("25%")), 1), Ok((1, 0)));
        assert_eq!(resolve_fenceposts(Some(&IntOrString::Int(0)), Some(&s("10%")), 5), Ok((0, 1)));
        assert_eq!(resolve_fenceposts(Some(&IntOrString::Int(2)), Some(&IntOrString::Int(1)), 5), Ok((2, 1)));
        assert!(resolve_fenceposts(Some(&s("lots")), None, 5).is_err());
    }

    #[test]
    fn recreate_has_no_surge_and_unavailable_is_capped() {
        let d: Deployment = serde_json::from_value(json!({"spec": {"replicas": 2, "selector": {}, "template": {},
            "strategy": {"type": "Recreate"}}}))
        .unwrap();
        assert_eq!(fenceposts(&d), Ok((0, 0)));
        let d: Deployment = serde_json::from_value(json!({"spec": {"replicas": 2, "selector": {}, "template": {},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 5}}}}))
        .unwrap();
        assert_eq!(fenceposts(&d), Ok((0, 2)));
    }

    #[test]
    fn the_new_replica_set_grows_within_the_surge() {
        let d: Deployment =
            serde_json::from_value(json!({"spec": {"replicas": 10, "selector": {}, "template": {}}})).unwrap();
        assert_eq!(new_rs_new_replicas(&d, 10, 0, 3), 3);
        assert_eq!(new_rs_new_replicas(&d, 13, 3, 3), 3);
        assert_eq!(new_rs_new_replicas(&d, 11, 8, 3), 10);
    }
}
