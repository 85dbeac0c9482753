//! `batch/v1`: Jobs and CronJobs.

use jiff::Timestamp;
use serde_json::Value;

use super::duration::{age, human_duration, parse_time, since};
use super::format::{containers, int, items, label_selector, len_of, name, text};
use super::{AGE, CONTAINERS, Col, IMAGES, NAME, Printer};

const SELECTOR_DESC: &str = "A label query over pods that should match the pod count.";

pub(super) static JOB: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Status", "Status of the job."),
        Col::string("Completions", "The number of pods which reached phase Succeeded."),
        Col::string("Duration", "Time required to complete the job."),
        AGE,
        CONTAINERS,
        IMAGES,
        Col::string("Selector", SELECTOR_DESC).wide(),
    ],
    cells: job,
};

fn job(obj: &Value, now: Timestamp) -> Vec<Value> {
    let (spec, status) = (&obj["spec"], &obj["status"]);
    let (names, images) = containers(&spec["template"]["spec"]);
    vec![
        name(obj),
        Value::from(job_status(obj)),
        Value::from(completions(obj)),
        Value::from(job_duration(status, now)),
        age(obj, now),
        names,
        images,
        Value::from(label_selector(&spec["selector"])),
    ]
}

/// The first of Complete, Failed, Terminating, Suspended, FailureTarget that applies, else
/// Running.
fn job_status(obj: &Value) -> &'static str {
    let conditions = items(&obj["status"]["conditions"]);
    // Only the first condition of a type counts.
    let holds =
        |kind: &str| conditions.iter().find(|c| text(&c["type"]) == kind).is_some_and(|c| text(&c["status"]) == "True");
    if holds("Complete") {
        "Complete"
    } else if holds("Failed") {
        "Failed"
    } else if !obj["metadata"]["deletionTimestamp"].is_null() {
        "Terminating"
    } else if holds("Suspended") {
        "Suspended"
    } else if holds("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

/// `2/3`, `0/1 of 4` for a work queue with parallelism, else `0/1`.
fn completions(obj: &Value) -> String {
    let succeeded = int(&obj["status"]["succeeded"]);
    let spec = &obj["spec"];
    if spec["completions"].is_number() {
        return format!("{succeeded}/{}", int(&spec["completions"]));
    }
    match int(&spec["parallelism"]) {
        p if p > 1 => format!("{succeeded}/1 of {p}"),
        _ => format!("{succeeded}/1"),
    }
}

/// Running time so far, or start to completion; empty before the job started.
fn job_duration(status: &Value, now: Timestamp) -> String {
    let Some(start) = parse_time(&status["startTime"]) else {
        return String::new();
    };
    let end = parse_time(&status["completionTime"]).unwrap_or(now);
    human_duration(end.duration_since(start))
}

pub(super) static CRON_JOB: Printer = Printer {
    columns: &[
        NAME,
        Col::string("Schedule", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
        Col::string(
            "Timezone",
            "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones.",
        ),
        Col::typed(
            "Suspend",
            "boolean",
            "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.",
        ),
        Col::integer("Active", "A list of pointers to currently running jobs."),
        Col::string("Last Schedule", "Information when was the last time the job was successfully scheduled."),
        AGE,
        CONTAINERS,
        IMAGES,
        Col::string("Selector", SELECTOR_DESC).wide(),
    ],
    cells: |obj, now| {
        let (spec, status) = (&obj["spec"], &obj["status"]);
        let job_spec = &spec["jobTemplate"]["spec"];
        let (names, images) = containers(&job_spec["template"]["spec"]);
        let time_zone = match &spec["timeZone"] {
            Value::String(tz) => tz.as_str(),
            _ => "<none>",
        };
        // CronJob defaulting sets suspend to false.
        let suspend = if spec["suspend"].as_bool() == Some(true) { "True" } else { "False" };
        let last_schedule = if status["lastScheduleTime"].is_null() {
            "<none>".to_string()
        } else {
            since(&status["lastScheduleTime"], now)
        };
        vec![
            name(obj),
            Value::from(text(&spec["schedule"])),
            Value::from(time_zone),
            Value::from(suspend),
            Value::from(len_of(&status["active"])),
            Value::from(last_schedule),
            age(obj, now),
            names,
            images,
            Value::from(label_selector(&job_spec["selector"])),
        ]
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn running_job() {
        let job = json!({
            "metadata": {"name": "pi", "creationTimestamp": "2025-06-01T11:58:00Z"},
            "spec": {"completions": 3, "parallelism": 1,
                     "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "8f1c"}},
                     "template": {"spec": {"containers": [{"name": "pi", "image": "perl:5.34"}]}}},
            "status": {"startTime": "2025-06-01T11:58:05Z", "succeeded": 2, "active": 1},
        });
        let cells = (JOB.cells)(&job, now());
        assert_eq!(cells.len(), JOB.columns.len());
        assert_eq!(
            cells,
            vec![
                json!("pi"),
                json!("Running"),
                json!("2/3"),
                json!("115s"),
                json!("2m"),
                json!("pi"),
                json!("perl:5.34"),
                json!("batch.kubernetes.io/controller-uid=8f1c"),
            ]
        );
    }

    #[test]
    fn finished_job_duration_is_fixed() {
        let job = json!({"status": {"startTime": "2025-06-01T10:00:00Z", "completionTime": "2025-06-01T10:00:42Z", "succeeded": 1,
                                    "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]},
                         "spec": {"completions": 1}});
        let cells = (JOB.cells)(&job, now());
        assert_eq!(cells[1..4], [json!("Complete"), json!("1/1"), json!("42s")]);
        assert_eq!((JOB.cells)(&json!({}), now())[1..4], [json!("Running"), json!("0/1"), json!("")]);
    }

    #[test]
    fn job_status_precedence() {
        let with = |conditions: Value, deleting: bool| {
            let mut job = json!({"status": {"conditions": conditions}});
            if deleting {
                job["metadata"] = json!({"deletionTimestamp": "2025-06-01T11:00:00Z"});
            }
            job_status(&job)
        };
        assert_eq!(
            with(json!([{"type": "Failed", "status": "True"}, {"type": "Complete", "status": "True"}]), true),
            "Complete"
        );
        assert_eq!(with(json!([{"type": "Failed", "status": "True"}]), true), "Failed");
        assert_eq!(with(json!([{"type": "Suspended", "status": "True"}]), true), "Terminating");
        assert_eq!(with(json!([{"type": "Suspended", "status": "True"}]), false), "Suspended");
        assert_eq!(
            with(json!([{"type": "Suspended", "status": "False"}, {"type": "Suspended", "status": "True"}]), false),
            "Running"
        );
        assert_eq!(with(json!([{"type": "FailureTarget", "status": "True"}]), false), "FailureTarget");
    }

    #[test]
    fn completions_without_a_count() {
        assert_eq!(completions(&json!({"spec": {"parallelism": 4}, "status": {"succeeded": 1}})), "1/1 of 4");
        assert_eq!(completions(&json!({"spec": {"parallelism": 1}})), "0/1");
    }

    #[test]
    fn cron_job_row() {
        let cj = json!({
            "metadata": {"name": "backup", "creationTimestamp": "2025-05-30T12:00:00Z"},
            "spec": {"schedule": "*/5 * * * *", "suspend": false,
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "backup-1"}], "lastScheduleTime": "2025-06-01T11:55:00Z"},
        });
        let cells = (CRON_JOB.cells)(&cj, now());
        assert_eq!(cells.len(), CRON_JOB.columns.len());
        assert_eq!(
            cells,
            vec![
                json!("backup"),
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("5m"),
                json!("2d"),
                json!("b"),
                json!("busybox"),
                json!("<none>"),
            ]
        );
        let suspended = json!({"spec": {"suspend": true, "timeZone": "Etc/UTC"}});
        let cells = (CRON_JOB.cells)(&suspended, now());
        assert_eq!(cells[2..6], [json!("Etc/UTC"), json!("True"), json!(0), json!("<none>")]);
    }
}
