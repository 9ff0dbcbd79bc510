//! Replay traces: `*.jsonl`, one delivery a line:
//! `{"event": "workflow_job", "delivery": "<guid>", "payload": {...}, "at": "<RFC 3339>"}`,
//! or `"payload_file": "path"` (relative to the trace) instead of `payload`. Read by
//! [`parse_trace`] (replay, simulate); written from the jobs API by [`history_lines`]
//! (`scalehook history`).

use crate::clock::format_rfc3339;
pub use crate::clock::parse_rfc3339;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::path::{Path, PathBuf};

/// One delivery of a trace, with its payload bytes resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceDelivery {
    pub event: String,
    pub delivery: Option<String>,
    /// The exact body to sign and send.
    pub body: Vec<u8>,
    /// Unix seconds, from `at`.
    pub at: Option<u64>,
    /// 1-based line number in the trace.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: {problem}")]
pub struct TraceError {
    pub path: String,
    pub line: usize,
    pub problem: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine<'a> {
    event: String,
    #[serde(default)]
    delivery: Option<String>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    payload_file: Option<String>,
    #[serde(default)]
    at: Option<String>,
}

/// Parses a trace's text. `base` is the folder `payload_file` paths are relative to.
pub fn parse_trace(text: &str, path: &str, base: &Path) -> Result<Vec<TraceDelivery>, TraceError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |problem: String| TraceError {
            path: path.to_string(),
            line: line_no,
            problem,
        };
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let raw: RawLine = serde_json::from_str(trimmed).map_err(|e| err(e.to_string()))?;
        let body = match (raw.payload, raw.payload_file) {
            (Some(p), None) => p.get().as_bytes().to_vec(),
            (None, Some(f)) => {
                let file: PathBuf = base.join(&f);
                std::fs::read(&file)
                    .map_err(|e| err(format!("payload_file {}: {e}", file.display())))?
            }
            _ => return Err(err("give exactly one of payload or payload_file".into())),
        };
        let at = match raw.at {
            None => None,
            Some(s) => Some(parse_rfc3339(&s).ok_or_else(|| err(format!("bad time {s:?}")))?),
        };
        out.push(TraceDelivery {
            event: raw.event,
            delivery: raw.delivery,
            body,
            at,
            line: line_no,
        });
    }
    Ok(out)
}

/// The job times of a `workflow_job` body moved forward together so that the newest is
/// `now`, for replaying captured payloads: scalehook refuses a job older than the ledger's
/// retention (a replay, docs/threat-model.md), and the real payloads in `fixtures/github/`
/// are years old. `None` when there is nothing to move (another event, no readable time, or
/// the newest already at or after `now`). Only the time strings change, everywhere they
/// occur; every other byte stays as captured.
pub fn restamp_job_times(event: &str, body: &[u8], now: u64) -> Option<Vec<u8>> {
    if event != "workflow_job" {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let job = value.get("workflow_job")?;
    let times: Vec<(&str, u64)> = ["created_at", "started_at", "completed_at"]
        .iter()
        .filter_map(|k| job.get(*k)?.as_str())
        .filter_map(|s| Some((s, parse_rfc3339(s)?)))
        .collect();
    let newest = times.iter().map(|(_, t)| *t).max()?;
    let shift = now.checked_sub(newest).filter(|s| *s > 0)?;
    let mut text = String::from_utf8(body.to_vec()).ok()?;
    for (old, t) in times {
        let new = format_rfc3339(t + shift);
        text = text.replace(&format!("\"{old}\""), &format!("\"{new}\""));
    }
    Some(text.into_bytes())
}

/// One job as the jobs listing gives it (the fields a trace needs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HistoryJob {
    pub id: u64,
    pub run_id: u64,
    pub status: String,
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub runner_name: Option<String>,
    #[serde(default)]
    pub runner_group_name: Option<String>,
}

/// What a written trace holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub jobs: usize,
    /// Not completed yet (or without the times a trace needs): left out.
    pub left_out: usize,
    pub lines: usize,
}

/// The trace: per completed job, `queued` at its `created_at`, `in_progress` at its
/// `started_at` (none when it never started) and `completed` at its `completed_at`, sorted
/// by time. The payloads carry what routing needs (labels, runner group, repository,
/// organization).
pub fn history_lines(
    jobs: &[(String, HistoryJob)],
    organization: Option<&str>,
) -> (String, Written) {
    let mut lines: Vec<(u64, String)> = Vec::new();
    let mut left_out = 0;
    let mut kept = 0;
    for (repository, job) in jobs {
        let time = |t: &Option<String>| {
            t.as_deref()
                .and_then(|s| parse_rfc3339(s).map(|u| (u, s.to_string())))
        };
        let (Some(created), Some(completed)) = (time(&job.created_at), time(&job.completed_at))
        else {
            left_out += 1;
            continue;
        };
        if job.status != "completed" {
            left_out += 1;
            continue;
        }
        // A job that never ran (cancelled or skipped while queued) has no start.
        let started = time(&job.started_at)
            .filter(|s| job.conclusion.as_deref() != Some("skipped") && s.0 < completed.0);
        kept += 1;
        let mut steps = vec![("queued", created.clone())];
        if let Some(s) = started {
            steps.push(("in_progress", s));
        }
        steps.push(("completed", completed));
        for (action, (at, text)) in steps {
            let mut workflow_job = serde_json::json!({
                "id": job.id, "run_id": job.run_id, "labels": job.labels,
                "status": action, "runner_group_name": job.runner_group_name,
            });
            if action != "queued" {
                workflow_job["runner_name"] = serde_json::json!(job.runner_name);
            }
            if action == "completed" {
                workflow_job["conclusion"] = serde_json::json!(job.conclusion);
            }
            let mut payload = serde_json::json!({
                "action": action, "workflow_job": workflow_job,
                "repository": {"full_name": repository},
            });
            if let Some(org) = organization {
                payload["organization"] = serde_json::json!({ "login": org });
            }
            let line = serde_json::json!({
                "event": "workflow_job",
                "delivery": format!("history-{}-{action}", job.id),
                "at": text,
                "payload": payload,
            });
            lines.push((at, line.to_string()));
        }
    }
    lines.sort_by_key(|(at, _)| *at);
    let mut text = String::new();
    for (_, l) in &lines {
        text.push_str(l);
        text.push('\n');
    }
    (
        text,
        Written {
            jobs: kept,
            left_out,
            lines: lines.len(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-05-01T09:30:00Z"), Some(1_714_555_800));
        assert_eq!(
            parse_rfc3339("2024-05-01T11:30:00.123+02:00"),
            Some(1_714_555_800)
        );
        assert_eq!(parse_rfc3339("2024-05-01 09:30:00Z"), Some(1_714_555_800));
        assert_eq!(parse_rfc3339("2024-13-01T09:30:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2024-05-01T09:30:00"), None);
        // A multi-byte character where the offset starts is an error, not a panic.
        assert_eq!(parse_rfc3339("2024-05-01T09:30:00\u{e9}0:00"), None);
        assert_eq!(parse_rfc3339("2024-05-01T09:30:00+0\u{e9}00"), None);
    }

    #[test]
    fn restamping_moves_the_job_times_together_and_nothing_else() {
        let body =
            br#"{"action":"completed","workflow_job":{"id":1, "created_at":"2021-08-05T10:33:58Z",
            "started_at":"2021-08-05T10:34:58Z","completed_at":"2021-08-05T10:38:16Z"},
            "repository":{"pushed_at":"2021-08-05T10:33:00Z"}}"#;
        let now = 1_714_555_800;
        let out = restamp_job_times("workflow_job", body, now).expect("restamped");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        let t = |k: &str| parse_rfc3339(v["workflow_job"][k].as_str().expect("time"));
        assert_eq!(t("completed_at"), Some(now));
        assert_eq!(t("started_at"), Some(now - 198));
        assert_eq!(t("created_at"), Some(now - 258));
        assert_eq!(v["repository"]["pushed_at"], "2021-08-05T10:33:00Z");
        assert!(String::from_utf8_lossy(&out)
            .starts_with(r#"{"action":"completed","workflow_job":{"id":1, "#));
        assert_eq!(restamp_job_times("ping", body, now), None);
        assert_eq!(restamp_job_times("workflow_job", body, 0), None);
        assert_eq!(
            restamp_job_times("workflow_job", br#"{"workflow_job":{"id":1}}"#, now),
            None
        );
    }

    #[test]
    fn trace_lines() {
        let text = "# comment\n\n{\"event\":\"ping\",\"delivery\":\"d1\",\"payload\":{\"zen\":\"x\"},\"at\":\"2024-05-01T09:30:00Z\"}\n";
        let t = parse_trace(text, "t.jsonl", Path::new(".")).expect("valid");
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].body, br#"{"zen":"x"}"#);
        assert_eq!(t[0].line, 3);
        assert_eq!(t[0].at, Some(1_714_555_800));
        let bad =
            parse_trace("{\"event\":\"ping\"}", "t.jsonl", Path::new(".")).expect_err("no payload");
        assert_eq!(bad.line, 1);
        assert!(parse_trace("{", "t.jsonl", Path::new(".")).is_err());
    }

    #[test]
    fn history_lines_are_the_trace_parse_trace_reads() {
        let job = |id: u64, started: Option<&str>, conclusion: &str| HistoryJob {
            id,
            run_id: 9,
            status: "completed".into(),
            conclusion: Some(conclusion.into()),
            created_at: Some("2024-05-01T09:30:00Z".into()),
            started_at: started.map(str::to_string),
            completed_at: Some("2024-05-01T09:40:00Z".into()),
            labels: vec!["self-hosted".into()],
            runner_name: Some("linux-i-1".into()),
            runner_group_name: Some("Default".into()),
        };
        let mut running = job(3, None, "success");
        running.status = "in_progress".into();
        let jobs = [
            (
                "o/r".to_string(),
                job(1, Some("2024-05-01T09:35:00Z"), "success"),
            ),
            // Cancelled while queued: no start.
            ("o/r".to_string(), job(2, None, "cancelled")),
            ("o/r".to_string(), running),
        ];
        let (text, written) = history_lines(&jobs, Some("o"));
        assert_eq!((written.jobs, written.left_out, written.lines), (2, 1, 5));
        let t = parse_trace(&text, "h.jsonl", Path::new(".")).expect("a trace parse_trace reads");
        let at: Vec<u64> = t.iter().filter_map(|d| d.at).collect();
        assert!(at.windows(2).all(|w| w[0] <= w[1]), "sorted by time");
        let actions: Vec<String> = t
            .iter()
            .map(|d| {
                let v: serde_json::Value = serde_json::from_slice(&d.body).expect("json");
                format!(
                    "{}:{}",
                    v["workflow_job"]["id"],
                    v["action"].as_str().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(
            actions,
            [
                "1:queued",
                "2:queued",
                "1:in_progress",
                "1:completed",
                "2:completed"
            ]
        );
    }
}
