//! `spec.podFailurePolicy`: what a failed pod means for its Job — fail the Job at once, ignore
//! the failure, or count it against `backoffLimit` (the default).

use k8s_openapi::api::batch::v1::{Job, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

/// What a failed pod does to its Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Counts against `backoffLimit`.
    Count,
    /// Not counted; the pod is replaced.
    Ignore,
    /// The Job fails now, with this message.
    FailJob(String),
}

/// Judges a failed pod by the first matching rule of the Job's podFailurePolicy.
pub fn judge(job: &Job, pod: &Pod) -> Verdict {
    let Some(policy) = job.spec.as_ref().and_then(|s| s.pod_failure_policy.as_ref()) else { return Verdict::Count };
    for (index, rule) in policy.rules.iter().enumerate() {
        let Some(reason) = matches(rule, pod) else { continue };
        return match rule.action.as_str() {
            "FailJob" => Verdict::FailJob(format!("{reason} matching FailJob rule at index {index}")),
            "Ignore" => Verdict::Ignore,
            _ => Verdict::Count,
        };
    }
    Verdict::Count
}

/// Why the rule matches the pod (the start of the upstream message), or `None`.
fn matches(rule: &PodFailurePolicyRule, pod: &Pod) -> Option<String> {
    let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let status = pod.status.as_ref()?;
    if let Some(codes) = &rule.on_exit_codes {
        let containers =
            status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
        for c in containers {
            if codes.container_name.as_ref().is_some_and(|n| *n != c.name) {
                continue;
            }
            let Some(code) = c.state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code) else {
                continue;
            };
            if code == 0 {
                continue;
            }
            let listed = codes.values.contains(&code);
            if (codes.operator == "In") == listed {
                return Some(format!("Container {} for pod {key} failed with exit code {code}", c.name));
            }
        }
        return None;
    }
    for pattern in rule.on_pod_conditions.iter().flatten() {
        let found = status.conditions.iter().flatten().any(|c| c.type_ == pattern.type_ && c.status == pattern.status);
        if found {
            return Some(format!("Pod {key} has condition {}", pattern.type_));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(rules: serde_json::Value) -> Job {
        serde_json::from_value(json!({"spec": {"template": {}, "podFailurePolicy": {"rules": rules}}})).unwrap()
    }

    fn failed(code: i32, conditions: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"}, "status": {"phase": "Failed",
            "conditions": conditions,
            "containerStatuses": [{"name": "main", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code}}}]}}))
        .unwrap()
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let j = job(json!([
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1]}},
        ]));
        assert_eq!(
            judge(&j, &failed(42, json!([]))),
            Verdict::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0".into()
            )
        );
        assert_eq!(judge(&j, &failed(1, json!([{"type": "DisruptionTarget", "status": "True"}]))), Verdict::Ignore);
        assert_eq!(judge(&j, &failed(1, json!([]))), Verdict::Count);
        assert_eq!(judge(&job(json!([])), &failed(42, json!([]))), Verdict::Count);
    }

    #[test]
    fn not_in_never_matches_exit_code_zero() {
        let j = job(json!([{"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [1]}}]));
        assert_eq!(judge(&j, &failed(0, json!([]))), Verdict::Count);
        assert!(matches!(judge(&j, &failed(3, json!([]))), Verdict::FailJob(_)));
    }
}
