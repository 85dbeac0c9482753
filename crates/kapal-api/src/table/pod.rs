//! Pods: READY, STATUS and RESTARTS as `kubectl get pods` shows them.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::duration::{age, human_duration, parse_time};
use super::format::{flag, int, items, name, or_none, text};
use super::{AGE, Col, NAME, Printer};

pub(super) static POD: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Ready", "The aggregate readiness state of this pod for accepting traffic."),
        Col::string("Status", "The aggregate status of the containers in this pod."),
        Col::string(
            "Restarts",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        AGE,
        Col::string("IP", "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.").wide(),
        Col::string("Node", "NodeName indicates in which node this pod is scheduled.").wide(),
        Col::string("Nominated Node", "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.").wide(),
        Col::string("Readiness Gates", "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\"").wide(),
    ],
    cells,
};

/// What the READY, STATUS and RESTARTS columns summarize.
#[derive(Debug, Clone, PartialEq)]
struct Summary {
    ready: usize,
    total: usize,
    reason: String,
    restarts: i64,
    last_restart: Option<Timestamp>,
}

fn cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let summary = summarize(pod);
    let restarts = match summary.last_restart {
        Some(at) if summary.restarts != 0 => {
            format!("{} ({} ago)", summary.restarts, human_duration(now.duration_since(at)))
        }
        _ => summary.restarts.to_string(),
    };
    vec![
        name(pod),
        Value::from(format!("{}/{}", summary.ready, summary.total)),
        Value::from(summary.reason),
        Value::from(restarts),
        age(pod, now),
        Value::from(or_none(pod_ip(&pod["status"]))),
        Value::from(or_none(text(&pod["spec"]["nodeName"]))),
        Value::from(or_none(text(&pod["status"]["nominatedNodeName"]))),
        Value::from(readiness_gates(pod)),
    ]
}

/// The pod's first IP. `status.podIP` wins over `status.podIPs`, as in the v1 conversion.
fn pod_ip(status: &Value) -> &str {
    match text(&status["podIP"]) {
        "" => text(&status["podIPs"][0]["ip"]),
        ip => ip,
    }
}

/// `<true gates>/<gates>`, or `<none>` without readiness gates.
fn readiness_gates(pod: &Value) -> String {
    let gates = items(&pod["spec"]["readinessGates"]);
    if gates.is_empty() {
        return "<none>".to_string();
    }
    let conditions = items(&pod["status"]["conditions"]);
    let passing = gates
        .iter()
        .filter(|gate| {
            let wanted = text(&gate["conditionType"]);
            conditions.iter().find(|c| text(&c["type"]) == wanted).is_some_and(|c| text(&c["status"]) == "True")
        })
        .count();
    format!("{passing}/{}", gates.len())
}

/// `lastState.terminated.finishedAt` when the container has a last termination; `Some(None)`
/// when it has one without a time.
fn last_termination(status: &Value) -> Option<Option<Timestamp>> {
    let terminated = &status["lastState"]["terminated"];
    terminated.is_object().then(|| parse_time(&terminated["finishedAt"]))
}

/// The later of two restart times, as Go's `lastRestartDate.Before(&terminatedDate)` keeps it.
fn later(current: Option<Timestamp>, candidate: Option<Option<Timestamp>>) -> Option<Timestamp> {
    match (current, candidate.flatten()) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn condition_true(status: &Value, kind: &str) -> bool {
    items(&status["conditions"]).iter().any(|c| text(&c["type"]) == kind && text(&c["status"]) == "True")
}

/// Upstream's `printPod` reasoning, sidecar-aware (restartable init containers count as
/// containers and their restarts survive into the main phase).
fn summarize(pod: &Value) -> Summary {
    let status = &pod["status"];
    let phase = text(&status["phase"]);
    let mut reason = match text(&status["reason"]) {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if items(&status["conditions"])
        .iter()
        .any(|c| text(&c["type"]) == "PodScheduled" && text(&c["reason"]) == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    let init_specs = items(&pod["spec"]["initContainers"]);
    let restartable = |c: &Value| text(&c["restartPolicy"]) == "Always";
    // Go keeps init containers in a map by name, so the last spec of a name wins.
    let is_sidecar = |name: &str| init_specs.iter().rev().find(|c| text(&c["name"]) == name).is_some_and(restartable);

    let mut summary = Summary {
        ready: 0,
        total: items(&pod["spec"]["containers"]).len() + init_specs.iter().filter(|c| restartable(c)).count(),
        reason: String::new(),
        restarts: 0,
        last_restart: None,
    };
    let mut sidecar_restarts = 0;
    let mut sidecar_last_restart = None;
    let mut initializing = false;

    for (i, container) in items(&status["initContainerStatuses"]).iter().enumerate() {
        let count = int(&container["restartCount"]);
        let terminated_at = last_termination(container);
        summary.restarts += count;
        summary.last_restart = later(summary.last_restart, terminated_at);
        let sidecar = is_sidecar(text(&container["name"]));
        if sidecar {
            sidecar_restarts += count;
            sidecar_last_restart = later(sidecar_last_restart, terminated_at);
        }

        let terminated = &container["state"]["terminated"];
        let waiting = &container["state"]["waiting"];
        if terminated.is_object() && int(&terminated["exitCode"]) == 0 {
            continue;
        }
        if sidecar && flag(&container["started"]) {
            if flag(&container["ready"]) {
                summary.ready += 1;
            }
            continue;
        }
        reason = if terminated.is_object() {
            match text(&terminated["reason"]) {
                "" => format!("Init:{}", exit_description(terminated)),
                r => format!("Init:{r}"),
            }
        } else if waiting.is_object() && !matches!(text(&waiting["reason"]), "" | "PodInitializing") {
            format!("Init:{}", text(&waiting["reason"]))
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true(status, "Initialized") {
        summary.restarts = sidecar_restarts;
        summary.last_restart = sidecar_last_restart;
        let mut has_running = false;
        for container in items(&status["containerStatuses"]).iter().rev() {
            summary.restarts += int(&container["restartCount"]);
            summary.last_restart = later(summary.last_restart, last_termination(container));
            let state = &container["state"];
            let waiting = &state["waiting"];
            let terminated = &state["terminated"];
            if waiting.is_object() && !text(&waiting["reason"]).is_empty() {
                reason = text(&waiting["reason"]).to_string();
            } else if terminated.is_object() && !text(&terminated["reason"]).is_empty() {
                reason = text(&terminated["reason"]).to_string();
            } else if terminated.is_object() {
                reason = exit_description(terminated);
            } else if flag(&container["ready"]) && state["running"].is_object() {
                has_running = true;
                summary.ready += 1;
            }
        }
        // A pod whose last container exited cleanly but that still runs others is not done.
        if reason == "Completed" && has_running {
            reason = if condition_true(status, "Ready") { "Running" } else { "NotReady" }.to_string();
        }
    }

    if !pod["metadata"]["deletionTimestamp"].is_null() {
        if text(&status["reason"]) == "NodeLost" {
            reason = "Unknown".to_string();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_string();
        }
    }
    summary.reason = reason;
    summary
}

/// `Signal:<n>` or `ExitCode:<n>` for a termination without a reason.
fn exit_description(terminated: &Value) -> String {
    match int(&terminated["signal"]) {
        0 => format!("ExitCode:{}", int(&terminated["exitCode"])),
        signal => format!("Signal:{signal}"),
    }
}

/// The `Completed` row condition of a pod in a terminal phase.
pub(super) fn row_conditions(pod: &Value) -> Option<Value> {
    let (reason, message) = match text(&pod["status"]["phase"]) {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{ "type": "Completed", "status": "True", "reason": reason, "message": message }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    fn row(pod: &Value) -> Vec<Value> {
        let cells = cells(pod, now());
        assert_eq!(cells.len(), POD.columns.len());
        cells
    }

    fn running(name: &str, ready: bool, restarts: i64) -> Value {
        json!({"name": name, "ready": ready, "restartCount": restarts, "started": true,
               "state": {"running": {"startedAt": "2025-06-01T10:00:00Z"}}})
    }

    fn pod(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "web-0", "creationTimestamp": "2025-06-01T11:00:00Z"}, "spec": spec, "status": status})
    }

    fn two_containers() -> Value {
        json!({"containers": [{"name": "app", "image": "nginx"}, {"name": "log", "image": "busybox"}]})
    }

    #[test]
    fn one_of_two_ready_with_recent_restarts() {
        let mut log = running("log", false, 3);
        log["lastState"] = json!({"terminated": {"exitCode": 1, "finishedAt": "2025-06-01T11:55:00Z"}});
        let p = pod(
            two_containers(),
            json!({"phase": "Running", "podIP": "10.42.0.7", "containerStatuses": [running("app", true, 0), log]}),
        );
        let cells = row(&p);
        assert_eq!(cells[0], "web-0");
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], "3 (5m ago)");
        assert_eq!(cells[4], "60m");
        assert_eq!(cells[5], "10.42.0.7");
        assert_eq!(cells[6], "<none>");
        assert_eq!(cells[7], "<none>");
        assert_eq!(cells[8], "<none>");
    }

    #[test]
    fn brand_new_pod_is_pending() {
        let p = pod(two_containers(), json!({"phase": "Pending"}));
        let cells = row(&p);
        assert_eq!(cells[1..4], [json!("0/2"), json!("Pending"), json!("0")]);
    }

    #[test]
    fn empty_object_never_panics() {
        let cells = row(&json!({}));
        assert_eq!(cells[..5], [json!(""), json!("0/0"), json!(""), json!("0"), json!("<unknown>")]);
        let garbage = json!({"spec": 5, "status": {"containerStatuses": "x", "initContainerStatuses": [1, null]}});
        assert_eq!(row(&garbage).len(), 9);
    }

    #[test]
    fn waiting_reason_wins_and_first_container_decides() {
        let statuses = json!([
            {"name": "app", "ready": false, "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2025-06-01T11:59:00Z"}}},
            {"name": "log", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}},
        ]);
        let p = pod(two_containers(), json!({"phase": "Running", "containerStatuses": statuses}));
        let cells = row(&p);
        assert_eq!(cells[1], "0/2");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "4 (60s ago)");
    }

    #[test]
    fn terminated_containers() {
        let done = |name: &str, reason: Value, code: i64, signal: i64| {
            json!({"name": name, "ready": false, "restartCount": 0,
                   "state": {"terminated": {"exitCode": code, "reason": reason, "signal": signal}}})
        };
        let spec = json!({"containers": [{"name": "a"}]});
        let status = |c: Value, phase: &str| json!({"phase": phase, "containerStatuses": [c]});
        assert_eq!(
            summarize(&pod(spec.clone(), status(done("a", json!("Completed"), 0, 0), "Succeeded"))).reason,
            "Completed"
        );
        assert_eq!(
            summarize(&pod(spec.clone(), status(done("a", json!("OOMKilled"), 137, 0), "Failed"))).reason,
            "OOMKilled"
        );
        assert_eq!(summarize(&pod(spec.clone(), status(done("a", Value::Null, 2, 0), "Failed"))).reason, "ExitCode:2");
        assert_eq!(summarize(&pod(spec, status(done("a", Value::Null, 143, 15), "Failed"))).reason, "Signal:15");
    }

    #[test]
    fn completed_with_a_running_container_reads_running_or_not_ready() {
        let statuses = json!([
            {"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}},
            {"name": "job", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        ]);
        let ready = json!([{"type": "Ready", "status": "True"}]);
        let p = pod(two_containers(), json!({"phase": "Running", "containerStatuses": statuses, "conditions": ready}));
        assert_eq!(summarize(&p).reason, "Running");
        let p = pod(two_containers(), json!({"phase": "Running", "containerStatuses": statuses}));
        assert_eq!(summarize(&p).reason, "NotReady");
    }

    #[test]
    fn init_containers_report_progress() {
        let spec = json!({"initContainers": [{"name": "i0"}, {"name": "i1"}], "containers": [{"name": "app"}]});
        let done =
            json!({"name": "i0", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
        let run = json!({"name": "i1", "restartCount": 0, "state": {"running": {}}});
        let p = pod(spec.clone(), json!({"phase": "Pending", "initContainerStatuses": [done, run]}));
        let cells = row(&p);
        assert_eq!(cells[1..4], [json!("0/1"), json!("Init:1/2"), json!("0")]);

        let waiting = json!({"name": "i0", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}});
        let p = pod(spec.clone(), json!({"phase": "Pending", "initContainerStatuses": [waiting]}));
        assert_eq!(summarize(&p).reason, "Init:0/2");

        let crash = json!({"name": "i0", "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                           "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2025-06-01T11:58:00Z"}}});
        let p = pod(spec.clone(), json!({"phase": "Pending", "initContainerStatuses": [crash]}));
        let cells = row(&p);
        assert_eq!(cells[2], "Init:CrashLoopBackOff");
        assert_eq!(cells[3], "2 (2m ago)");

        let failed = |reason: Value, signal: i64| json!({"name": "i0", "restartCount": 0, "state": {"terminated": {"exitCode": 3, "reason": reason, "signal": signal}}});
        let p = pod(spec.clone(), json!({"initContainerStatuses": [failed(json!("Error"), 0)]}));
        assert_eq!(summarize(&p).reason, "Init:Error");
        let p = pod(spec.clone(), json!({"initContainerStatuses": [failed(Value::Null, 0)]}));
        assert_eq!(summarize(&p).reason, "Init:ExitCode:3");
        let p = pod(spec, json!({"initContainerStatuses": [failed(Value::Null, 9)]}));
        assert_eq!(summarize(&p).reason, "Init:Signal:9");
    }

    #[test]
    fn sidecars_count_as_containers_and_keep_their_restarts() {
        let spec = json!({
            "initContainers": [{"name": "setup"}, {"name": "proxy", "restartPolicy": "Always"}],
            "containers": [{"name": "app"}],
        });
        let setup = json!({"name": "setup", "restartCount": 1, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                           "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2025-06-01T11:00:00Z"}}});
        let mut proxy = running("proxy", true, 2);
        proxy["lastState"] = json!({"terminated": {"exitCode": 1, "finishedAt": "2025-06-01T11:50:00Z"}});
        let p = pod(
            spec.clone(),
            json!({
                "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                "initContainerStatuses": [setup, proxy],
                "containerStatuses": [running("app", true, 1)],
            }),
        );
        let cells = row(&p);
        assert_eq!(cells[1], "2/2");
        assert_eq!(cells[2], "Running");
        // The completed init container's restart is forgotten; the sidecar's two are kept.
        assert_eq!(cells[3], "3 (10m ago)");

        // A sidecar that has not started yet holds initialization back.
        let waiting = json!({"name": "proxy", "restartCount": 0, "started": false, "state": {"waiting": {"reason": "ContainerCreating"}}});
        let done = json!({"name": "setup", "restartCount": 0, "state": {"terminated": {"exitCode": 0}}});
        let p = pod(spec, json!({"phase": "Pending", "initContainerStatuses": [done, waiting]}));
        assert_eq!(row(&p)[1..3], [json!("0/2"), json!("Init:ContainerCreating")]);
    }

    #[test]
    fn scheduling_gates_and_status_reason() {
        let p = pod(
            two_containers(),
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
        );
        assert_eq!(summarize(&p).reason, "SchedulingGated");
        let p = pod(two_containers(), json!({"phase": "Failed", "reason": "Evicted"}));
        assert_eq!(summarize(&p).reason, "Evicted");
    }

    #[test]
    fn deletion_overrides() {
        let mut p = pod(
            two_containers(),
            json!({"phase": "Running", "containerStatuses": [running("app", true, 0), running("log", true, 0)]}),
        );
        p["metadata"]["deletionTimestamp"] = json!("2025-06-01T11:59:00Z");
        assert_eq!(summarize(&p).reason, "Terminating");
        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(summarize(&p).reason, "Unknown");

        let mut done = pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "a", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        done["metadata"]["deletionTimestamp"] = json!("2025-06-01T11:59:00Z");
        assert_eq!(summarize(&done).reason, "Completed");
    }

    #[test]
    fn restarts_without_a_time_show_only_the_count() {
        let p = pod(json!({"containers": [{"name": "a"}]}), json!({"containerStatuses": [running("a", true, 5)]}));
        assert_eq!(row(&p)[3], "5");
    }

    #[test]
    fn wide_columns() {
        let mut p = pod(
            two_containers(),
            json!({
                "podIPs": [{"ip": "fd00::5"}, {"ip": "10.0.0.5"}],
                "nominatedNodeName": "n2",
                "conditions": [{"type": "example.com/lb", "status": "True"}, {"type": "example.com/dns", "status": "False"}],
            }),
        );
        p["spec"]["nodeName"] = json!("n1");
        p["spec"]["readinessGates"] =
            json!([{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}, {"conditionType": "x"}]);
        let cells = row(&p);
        assert_eq!(cells[5..], [json!("fd00::5"), json!("n1"), json!("n2"), json!("1/3")]);
    }

    #[test]
    fn completed_row_conditions() {
        let c = row_conditions(&json!({"status": {"phase": "Succeeded"}})).unwrap();
        assert_eq!(
            c,
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}])
        );
        let c = row_conditions(&json!({"status": {"phase": "Failed"}})).unwrap();
        assert_eq!(c[0]["reason"], "Failed");
        assert_eq!(row_conditions(&json!({"status": {"phase": "Running"}})), None);
        assert_eq!(row_conditions(&json!(null)), None);
    }
}
