//! Replay traces: `*.jsonl`, one delivery a line:
//! `{"event": "workflow_job", "delivery": "<guid>", "payload": {...}, "at": "<RFC 3339>"}`,
//! or `"payload_file": "path"` (relative to the trace) instead of `payload`.

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
}
