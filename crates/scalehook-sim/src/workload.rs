//! The workload: a timed trace read as jobs (arrival, how long each runs), not as deliveries.
//!
//! A job's `queued` line gives its arrival; its `in_progress` and `completed` lines give how
//! long it runs (completed.at - in_progress.at). When it *starts* in the simulation depends on
//! the simulated runners, not on the trace. A job that completed without ever starting
//! (cancelled while queued) keeps its cancellation time instead of a run time.

use crate::SimError;
use scalehook_core::event::{Event, JobAction};
use scalehook_core::trace::parse_trace;
use std::collections::HashMap;
use std::path::Path;

/// What a job does once a runner takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Runs this many seconds.
    Runs(u64),
    /// Never ran in the trace: cancelled at this time (unix seconds). In the simulation it
    /// leaves the queue then, or stops then if a runner took it earlier.
    CancelledAt(u64),
}

/// One job of the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: u64,
    /// Unix seconds of its `queued` delivery (or of `in_progress` when the trace has no
    /// `queued` line for it).
    pub arrival: u64,
    pub work: Work,
    /// The job's first payload in the trace: the simulated deliveries are this payload with
    /// `action`, `status`, runner and conclusion set, so labels, repository and
    /// organization reach the service exactly as the trace has them.
    pub payload: serde_json::Value,
    /// 1-based trace line of its first delivery.
    pub line: usize,
}

/// A trace read for simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Jobs in arrival order (ties by trace order).
    pub jobs: Vec<Job>,
    /// Earliest and latest `at` of the trace (unix seconds).
    pub start: u64,
    pub end: u64,
    /// Jobs left out because the trace lacks their `completed` line (still running when
    /// the trace ends) or has only a `completed` line (no arrival time).
    pub incomplete_jobs: u32,
    /// Lines of events other than `workflow_job` (`ping`, ...), which simulate skips.
    pub other_events: u32,
}

#[derive(Default)]
struct Sighting {
    first_line: usize,
    payload: Option<serde_json::Value>,
    queued: Option<u64>,
    in_progress: Option<u64>,
    completed: Option<u64>,
}

fn earliest(slot: &mut Option<u64>, at: u64) {
    *slot = Some(slot.map_or(at, |t| t.min(at)));
}

impl Workload {
    /// Reads a `*.jsonl` trace file (`payload_file` paths are relative to its folder).
    pub fn from_file(path: &Path) -> Result<Workload, SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::Read {
            path: path.display().to_string(),
            problem: e.to_string(),
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Workload::from_text(&text, &path.display().to_string(), base)
    }

    /// Reads a trace's text. Every line needs an `at` time; redelivered lines (the same
    /// job and action twice) count once, at their earliest time.
    pub fn from_text(text: &str, path: &str, base: &Path) -> Result<Workload, SimError> {
        let deliveries = parse_trace(text, path, base).map_err(|e| SimError::Trace {
            path: e.path,
            line: e.line,
            problem: e.problem,
        })?;
        let err = |line: usize, problem: String| SimError::Trace {
            path: path.to_string(),
            line,
            problem,
        };
        let mut jobs: HashMap<u64, Sighting> = HashMap::new();
        let mut order: Vec<u64> = Vec::new();
        let (mut start, mut end) = (u64::MAX, 0u64);
        let mut other_events = 0;
        for d in &deliveries {
            let at = d.at.ok_or_else(|| {
                err(
                    d.line,
                    "simulate needs an \"at\" time (RFC 3339) on every line".into(),
                )
            })?;
            start = start.min(at);
            end = end.max(at);
            if d.event != "workflow_job" {
                other_events += 1;
                continue;
            }
            let event = Event::parse(&d.event, &d.body).map_err(|e| err(d.line, e.to_string()))?;
            let Event::WorkflowJob(job) = event else {
                continue;
            };
            let entry = jobs.entry(job.workflow_job.id).or_insert_with(|| {
                order.push(job.workflow_job.id);
                Sighting {
                    first_line: d.line,
                    ..Sighting::default()
                }
            });
            if entry.payload.is_none() {
                // Parsed above as a workflow_job, so it is a JSON object.
                entry.payload = serde_json::from_slice(&d.body).ok();
            }
            match job.action {
                JobAction::Queued => earliest(&mut entry.queued, at),
                JobAction::InProgress => earliest(&mut entry.in_progress, at),
                JobAction::Completed => earliest(&mut entry.completed, at),
                // `waiting` is not demand; other actions are not job transitions.
                JobAction::Waiting | JobAction::Other(_) => {}
            }
        }
        if deliveries.is_empty() || start == u64::MAX {
            return Err(SimError::Read {
                path: path.to_string(),
                problem: "the trace has no deliveries".into(),
            });
        }
        let mut out = Vec::with_capacity(order.len());
        let mut incomplete_jobs = 0;
        for id in order {
            let Some(s) = jobs.remove(&id) else { continue };
            let (Some(arrival), Some(completed), Some(payload)) =
                (s.queued.or(s.in_progress), s.completed, s.payload)
            else {
                incomplete_jobs += 1;
                continue;
            };
            let work = match s.in_progress {
                Some(began) => Work::Runs(completed.saturating_sub(began.max(arrival))),
                None => Work::CancelledAt(completed.max(arrival)),
            };
            out.push(Job {
                id,
                arrival,
                work,
                payload,
                line: s.first_line,
            });
        }
        // Stable: equal arrivals keep trace order.
        out.sort_by_key(|j| j.arrival);
        Ok(Workload {
            jobs: out,
            start,
            end,
            incomplete_jobs,
            other_events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(action: &str, id: u64, at: &str) -> String {
        format!(
            r#"{{"event":"workflow_job","delivery":"d-{id}-{action}","at":"{at}","payload":{{"action":"{action}","workflow_job":{{"id":{id},"run_id":1,"labels":["self-hosted","linux","x64"]}}}}}}"#
        )
    }

    #[test]
    fn jobs_from_lines() {
        let text = [
            line("queued", 1, "2024-05-01T09:00:00Z"),
            line("queued", 2, "2024-05-01T09:00:10Z"),
            line("in_progress", 1, "2024-05-01T09:00:30Z"),
            // a redelivery: counts once, at the earliest time
            line("queued", 1, "2024-05-01T09:05:00Z"),
            line("completed", 1, "2024-05-01T09:02:30Z"),
            line("completed", 2, "2024-05-01T09:01:00Z"),
            line("queued", 3, "2024-05-01T09:03:00Z"),
            line("in_progress", 3, "2024-05-01T09:03:05Z"),
            r#"{"event":"ping","payload":{"zen":"z"},"at":"2024-05-01T09:06:00Z"}"#.to_string(),
        ]
        .join("\n");
        let w = Workload::from_text(&text, "t.jsonl", Path::new(".")).expect("valid");
        assert_eq!(w.jobs.len(), 2);
        assert_eq!(w.jobs[0].id, 1);
        assert_eq!(w.jobs[0].arrival, 1_714_554_000);
        assert_eq!(w.jobs[0].work, Work::Runs(120));
        assert_eq!(w.jobs[1].work, Work::CancelledAt(1_714_554_060));
        assert_eq!(w.incomplete_jobs, 1, "job 3 never completes");
        assert_eq!(w.other_events, 1);
        assert_eq!(w.start, 1_714_554_000);
        assert_eq!(w.end, 1_714_554_360);
    }

    #[test]
    fn missing_time_is_an_error_with_its_line() {
        let text = format!(
            "{}\n{}",
            line("queued", 1, "2024-05-01T09:00:00Z"),
            r#"{"event":"workflow_job","payload":{"action":"queued","workflow_job":{"id":2,"run_id":1}}}"#
        );
        let e = Workload::from_text(&text, "t.jsonl", Path::new(".")).expect_err("no at");
        assert!(e.to_string().contains("t.jsonl:2"), "{e}");
        assert!(e.to_string().contains("\"at\""), "{e}");
    }

    #[test]
    fn malformed_payload_is_an_error() {
        let text =
            r#"{"event":"workflow_job","payload":{"action":"queued"},"at":"2024-05-01T09:00:00Z"}"#;
        let e = Workload::from_text(text, "t.jsonl", Path::new(".")).expect_err("bad");
        assert!(e.to_string().contains("t.jsonl:1"), "{e}");
        let e = Workload::from_text("# only a comment\n", "t.jsonl", Path::new("."))
            .expect_err("empty");
        assert_eq!(e.to_string(), "trace t.jsonl: the trace has no deliveries");
        let e = Workload::from_file(Path::new("/nonexistent/t.jsonl")).expect_err("missing");
        assert!(
            e.to_string().starts_with("trace /nonexistent/t.jsonl: "),
            "{e}"
        );
    }
}
