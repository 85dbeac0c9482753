//! From a metric's recommendation to the replica count to set, as upstream's
//! `normalizeDesiredReplicas` (no `behavior`) and `normalizeDesiredReplicasWithBehaviors`:
//! stabilisation windows over recent recommendations, scaling policies that cap how fast replicas
//! are added or removed per period, and the min/max bounds — with the reasons that the
//! `AbleToScale` and `ScalingLimited` conditions show.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

/// Which policy wins when several allow different changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The policy allowing the biggest change (default).
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// One scaling policy: at most `value` pods or percent per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Whether `value` counts pods (`Pods`) or percent of the replicas (`Percent`).
    pub percent: bool,
    /// How many pods, or what percentage.
    pub value: i32,
    /// The period the limit applies to.
    pub period: Duration,
}

/// The rules for one direction of scaling, with upstream's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// How far back recommendations are considered.
    pub window: Duration,
    /// How policies combine.
    pub select: Select,
    /// The rate limits.
    pub policies: Vec<Policy>,
}

/// An HPA's `spec.behavior`, with defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behavior {
    /// Rules for adding replicas.
    pub scale_up: Rules,
    /// Rules for removing replicas.
    pub scale_down: Rules,
}

fn secs(s: i32) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

fn rules(spec: Option<&HPAScalingRules>, window: Duration, default_policies: &[Policy]) -> Rules {
    let select = match spec.and_then(|s| s.select_policy.as_deref()) {
        Some("Min") => Select::Min,
        Some("Disabled") => Select::Disabled,
        _ => Select::Max,
    };
    let policies = match spec.and_then(|s| s.policies.as_ref()) {
        Some(p) if !p.is_empty() => p
            .iter()
            .map(|p| Policy { percent: p.type_ == "Percent", value: p.value, period: secs(p.period_seconds) })
            .collect(),
        _ => default_policies.to_vec(),
    };
    let window = spec.and_then(|s| s.stabilization_window_seconds).map(secs).unwrap_or(window);
    Rules { window, select, policies }
}

impl Behavior {
    /// The behavior an HPA spec asks for; unset parts take upstream's defaults (scale up by
    /// 4 pods or 100 % per 15 s with no window; scale down by 100 % per 15 s after
    /// `down_window`).
    pub fn from_spec(spec: &HorizontalPodAutoscalerBehavior, down_window: Duration) -> Behavior {
        let fifteen = Duration::from_secs(15);
        let up = [
            Policy { percent: false, value: 4, period: fifteen },
            Policy { percent: true, value: 100, period: fifteen },
        ];
        let down = [Policy { percent: true, value: 100, period: fifteen }];
        Behavior {
            scale_up: rules(spec.scale_up.as_ref(), Duration::ZERO, &up),
            scale_down: rules(spec.scale_down.as_ref(), down_window, &down),
        }
    }
}

/// A condition the normalisation sets: `(status, reason, message)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the condition holds.
    pub status: bool,
    /// Upstream's reason.
    pub reason: &'static str,
    /// Upstream's message.
    pub message: &'static str,
}

/// The replica count to set and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The count to scale to.
    pub replicas: i32,
    /// The `AbleToScale` condition (always true here).
    pub able_to_scale: Outcome,
    /// The `ScalingLimited` condition.
    pub scaling_limited: Outcome,
}

#[derive(Debug, Clone, Copy)]
struct ScaleEvent {
    change: i32,
    at: Timestamp,
}

/// What one HPA remembers between evaluations: recent recommendations (for stabilisation) and
/// recent scalings (for the policies' rate limits). Kept in memory, as upstream does.
#[derive(Debug, Clone, Default)]
pub struct History {
    recommendations: Vec<(i32, Timestamp)>,
    scale_ups: Vec<ScaleEvent>,
    scale_downs: Vec<ScaleEvent>,
}

fn before(now: Timestamp, d: Duration) -> Timestamp {
    now - SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

const WITHIN_RANGE: Outcome = Outcome {
    status: false,
    reason: "DesiredWithinRange",
    message: "the desired count is within the acceptable range",
};
const READY: Outcome =
    Outcome { status: true, reason: "ReadyForNewScale", message: "recommended size matches current size" };
const DOWN_STABILIZED: Outcome = Outcome {
    status: true,
    reason: "ScaleDownStabilized",
    message: "recent recommendations were higher than current one, applying the highest recent recommendation",
};
const UP_STABILIZED: Outcome = Outcome {
    status: true,
    reason: "ScaleUpStabilized",
    message: "recent recommendations were lower than current one, applying the lowest recent recommendation",
};
const SCALE_UP_LIMIT: (&str, &str) =
    ("ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate");
const SCALE_DOWN_LIMIT: (&str, &str) =
    ("ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate");
const TOO_MANY: (&str, &str) = ("TooManyReplicas", "the desired replica count is more than the maximum replica count");
const TOO_FEW: (&str, &str) = ("TooFewReplicas", "the desired replica count is less than the minimum replica count");

impl History {
    /// Remembers the target's current size as the first recommendation (upstream
    /// `recordInitialRecommendation`), so that a fresh controller does not scale down at once.
    pub fn record_initial(&mut self, current: i32, now: Timestamp) {
        if self.recommendations.is_empty() {
            self.recommendations.push((current, now));
        }
    }

    /// Stabilises and limits `desired` for a target now at `current` replicas.
    #[allow(clippy::too_many_arguments)]
    pub fn normalize(
        &mut self,
        behavior: Option<&Behavior>,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        down_window: Duration,
        now: Timestamp,
    ) -> Normalized {
        match behavior {
            None => self.normalize_plain(current, desired, min, max, down_window, now),
            Some(b) => self.normalize_with(b, current, desired, min, max, now),
        }
    }

    fn record(&mut self, index: Option<usize>, desired: i32, now: Timestamp) {
        match index {
            Some(i) => self.recommendations[i] = (desired, now),
            None => self.recommendations.push((desired, now)),
        }
    }

    fn normalize_plain(
        &mut self,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        window: Duration,
        now: Timestamp,
    ) -> Normalized {
        let cutoff = before(now, window);
        let mut stabilized = desired;
        let mut old = None;
        for (i, (recommendation, at)) in self.recommendations.iter().enumerate() {
            if *at < cutoff {
                old = Some(i);
            } else {
                stabilized = stabilized.max(*recommendation);
            }
        }
        self.record(old, desired, now);
        let able_to_scale = if stabilized != desired { DOWN_STABILIZED } else { READY };
        let scale_up_limit = current.saturating_mul(2).max(4);
        let (limit, ceiling) = if max > scale_up_limit { (SCALE_UP_LIMIT, scale_up_limit) } else { (TOO_MANY, max) };
        let (replicas, limited) = if stabilized < min {
            (min, TOO_FEW)
        } else if stabilized > ceiling {
            (ceiling, limit)
        } else {
            (stabilized, (WITHIN_RANGE.reason, WITHIN_RANGE.message))
        };
        let scaling_limited = Outcome { status: replicas != stabilized, reason: limited.0, message: limited.1 };
        Normalized { replicas, able_to_scale, scaling_limited }
    }

    fn normalize_with(
        &mut self,
        behavior: &Behavior,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        now: Timestamp,
    ) -> Normalized {
        let up_cutoff = before(now, behavior.scale_up.window);
        let down_cutoff = before(now, behavior.scale_down.window);
        let (mut up, mut down) = (desired, desired);
        let mut old = None;
        for (i, (recommendation, at)) in self.recommendations.iter().enumerate() {
            if *at > up_cutoff {
                up = up.min(*recommendation);
            }
            if *at > down_cutoff {
                down = down.max(*recommendation);
            }
            if *at < up_cutoff && *at < down_cutoff {
                old = Some(i);
            }
        }
        let stabilized = current.max(up).min(down);
        self.record(old, desired, now);
        let able_to_scale = match (stabilized != desired, desired >= current) {
            (false, _) => READY,
            (true, true) => UP_STABILIZED,
            (true, false) => DOWN_STABILIZED,
        };
        let (replicas, (reason, message)) = self.limit_rate(behavior, current, stabilized, min, max, now);
        let scaling_limited = Outcome { status: replicas != stabilized, reason, message };
        Normalized { replicas, able_to_scale, scaling_limited }
    }

    /// Upstream `convertDesiredReplicasWithBehaviorRate`.
    fn limit_rate(
        &self,
        behavior: &Behavior,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
        now: Timestamp,
    ) -> (i32, (&'static str, &'static str)) {
        let within = (WITHIN_RANGE.reason, WITHIN_RANGE.message);
        if desired > current {
            let limit = self.scale_up_limit(current, &behavior.scale_up, now).max(current);
            let (ceiling, why) = if max > limit { (limit, SCALE_UP_LIMIT) } else { (max, TOO_MANY) };
            if desired > ceiling {
                return (ceiling, why);
            }
        } else if desired < current {
            let limit = self.scale_down_limit(current, &behavior.scale_down, now).min(current);
            let (floor, why) = if min < limit { (limit, SCALE_DOWN_LIMIT) } else { (min, TOO_FEW) };
            if desired < floor {
                return (floor, why);
            }
        }
        (desired, within)
    }

    fn changes_within(events: &[ScaleEvent], period: Duration, now: Timestamp) -> i32 {
        let cutoff = before(now, period);
        events.iter().filter(|e| e.at > cutoff).map(|e| e.change).sum()
    }

    /// The replica count at the start of `policy`'s period.
    fn period_start(&self, current: i32, policy: &Policy, now: Timestamp) -> i32 {
        let added = Self::changes_within(&self.scale_ups, policy.period, now);
        let removed = Self::changes_within(&self.scale_downs, policy.period, now);
        current - added + removed
    }

    fn scale_up_limit(&self, current: i32, rules: &Rules, now: Timestamp) -> i32 {
        let proposals = rules.policies.iter().map(|p| {
            let start = self.period_start(current, p, now);
            if p.percent {
                (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
            } else {
                start.saturating_add(p.value)
            }
        });
        match rules.select {
            Select::Disabled => current,
            Select::Min => proposals.min().unwrap_or(i32::MAX),
            Select::Max => proposals.max().unwrap_or(i32::MIN),
        }
    }

    fn scale_down_limit(&self, current: i32, rules: &Rules, now: Timestamp) -> i32 {
        let proposals = rules.policies.iter().map(|p| {
            let start = self.period_start(current, p, now);
            if p.percent {
                (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32
            } else {
                start.saturating_sub(p.value)
            }
        });
        match rules.select {
            Select::Disabled => current,
            Select::Min => proposals.max().unwrap_or(i32::MIN),
            Select::Max => proposals.min().unwrap_or(i32::MAX),
        }
    }

    /// Remembers a scaling from `previous` to `new` for the policies' rate limits (upstream
    /// `storeScaleEvent`); events older than the longest policy period are reused.
    pub fn record_scale(&mut self, behavior: Option<&Behavior>, previous: i32, new: i32, now: Timestamp) {
        let Some(behavior) = behavior else { return };
        let (events, rules, change) = if new > previous {
            (&mut self.scale_ups, &behavior.scale_up, new - previous)
        } else {
            (&mut self.scale_downs, &behavior.scale_down, previous - new)
        };
        let longest = rules.policies.iter().map(|p| p.period).max().unwrap_or_default();
        let cutoff = before(now, longest);
        let event = ScaleEvent { change, at: now };
        match events.iter_mut().find(|e| e.at <= cutoff) {
            Some(slot) => *slot = event,
            None => events.push(event),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn behavior(spec: serde_json::Value) -> Behavior {
        Behavior::from_spec(&serde_json::from_value(spec).unwrap(), Duration::from_secs(300))
    }

    const WINDOW: Duration = Duration::from_secs(300);

    #[test]
    fn without_behavior_scale_down_waits_for_the_highest_recommendation_of_five_minutes() {
        let mut h = History::default();
        h.record_initial(10, t(0));
        let n = h.normalize(None, 10, 4, 1, 20, WINDOW, t(15));
        assert_eq!(n.replicas, 10);
        assert_eq!(n.able_to_scale.reason, "ScaleDownStabilized");
        let n = h.normalize(None, 10, 4, 1, 20, WINDOW, t(200));
        assert_eq!(n.replicas, 10);
        // Five minutes after the recommendation of 10 it is forgotten; 4 is the highest left.
        let n = h.normalize(None, 10, 4, 1, 20, WINDOW, t(301));
        assert_eq!(n.replicas, 4);
        assert_eq!(n.able_to_scale.reason, "ReadyForNewScale");
        assert_eq!(n.scaling_limited, WITHIN_RANGE);
    }

    #[test]
    fn without_behavior_scale_up_is_at_most_double_or_four_and_bounded() {
        let mut h = History::default();
        let n = h.normalize(None, 3, 50, 1, 100, WINDOW, t(0));
        assert_eq!(n.replicas, 6);
        assert_eq!((n.scaling_limited.status, n.scaling_limited.reason), (true, "ScaleUpLimit"));
        // The recommendation of 50 stays in the window and keeps asking for more.
        let n = h.normalize(None, 1, 3, 1, 100, WINDOW, t(1));
        assert_eq!(n.replicas, 4);
        let n = History::default().normalize(None, 1, 3, 1, 100, WINDOW, t(0));
        assert_eq!(n.replicas, 3);
        let n = h.normalize(None, 5, 50, 1, 8, WINDOW, t(0));
        assert_eq!((n.replicas, n.scaling_limited.reason), (8, "TooManyReplicas"));
        let mut h = History::default();
        let n = h.normalize(None, 5, 1, 2, 8, WINDOW, t(0));
        assert_eq!((n.replicas, n.scaling_limited.reason), (2, "TooFewReplicas"));
    }

    #[test]
    fn default_behavior_adds_at_most_four_pods_or_double_per_fifteen_seconds() {
        let b = behavior(json!({}));
        let mut h = History::default();
        let n = h.normalize(Some(&b), 2, 20, 1, 100, WINDOW, t(0));
        assert_eq!(n.replicas, 6); // max(2 + 4, 2 × 2)
        h.record_scale(Some(&b), 2, 6, t(0));
        // Within the same period the limit counts from the period's start (2 replicas).
        let n = h.normalize(Some(&b), 6, 20, 1, 100, WINDOW, t(10));
        assert_eq!((n.replicas, n.scaling_limited.reason), (6, "ScaleUpLimit"));
        let n = h.normalize(Some(&b), 6, 20, 1, 100, WINDOW, t(16));
        assert_eq!(n.replicas, 12);
    }

    #[test]
    fn scale_up_stabilization_applies_the_lowest_recent_recommendation() {
        let b = behavior(json!({"scaleUp": {"stabilizationWindowSeconds": 60}}));
        let mut h = History::default();
        h.record_initial(2, t(0));
        let n = h.normalize(Some(&b), 2, 5, 1, 10, WINDOW, t(10));
        assert_eq!(n.replicas, 2);
        assert_eq!(n.able_to_scale.reason, "ScaleUpStabilized");
        let n = h.normalize(Some(&b), 2, 5, 1, 10, WINDOW, t(61));
        assert_eq!(n.replicas, 5);
    }

    #[test]
    fn scale_down_policies_limit_pods_per_period_and_select_policy_picks_one() {
        let spec = json!({"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Min", "policies": [
            {"type": "Pods", "value": 2, "periodSeconds": 60}, {"type": "Percent", "value": 50, "periodSeconds": 60}]}});
        let b = behavior(spec);
        let mut h = History::default();
        // Min change: at most 2 pods (50 % would be 5).
        let n = h.normalize(Some(&b), 10, 1, 1, 10, WINDOW, t(0));
        assert_eq!((n.replicas, n.scaling_limited.reason), (8, "ScaleDownLimit"));
        h.record_scale(Some(&b), 10, 8, t(0));
        assert_eq!(h.normalize(Some(&b), 8, 1, 1, 10, WINDOW, t(30)).replicas, 8);
        assert_eq!(h.normalize(Some(&b), 8, 1, 1, 10, WINDOW, t(61)).replicas, 6);
        let disabled = behavior(json!({"scaleDown": {"selectPolicy": "Disabled"}}));
        assert_eq!(History::default().normalize(Some(&disabled), 10, 1, 1, 10, WINDOW, t(0)).replicas, 10);
    }

    #[test]
    fn behavior_without_a_scale_down_window_uses_the_controller_default() {
        let b = behavior(json!({"scaleUp": {"selectPolicy": "Max"}}));
        assert_eq!(b.scale_down.window, WINDOW);
        assert_eq!(b.scale_up.window, Duration::ZERO);
        let mut h = History::default();
        h.record_initial(6, t(0));
        assert_eq!(h.normalize(Some(&b), 6, 3, 1, 10, WINDOW, t(100)).replicas, 6);
        assert_eq!(h.normalize(Some(&b), 6, 3, 1, 10, WINDOW, t(301)).replicas, 3);
    }
}
