//! Replay traces: `*.jsonl`, one delivery a line:
//! `{"event": "workflow_job", "delivery": "<guid>", "payload": {...}, "at": "<RFC 3339>"}`,
//! or `"payload_file": "path"` (relative to the trace) instead of `payload`.

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

/// Unix seconds of an RFC 3339 timestamp (`2024-05-01T09:30:00Z`, fractions and offsets
/// allowed). Fractions are dropped.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        // Bytes, not string slices: `rest` may start inside a multi-byte character
        // (a panic the `trace` fuzz target reproduces: fuzz/regressions/trace/).
        _ if rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':' =>
        {
            let oh = num(s.len() - 5..s.len() - 3)?;
            let om = num(s.len() - 2..s.len())?;
            let sign = if rest.as_bytes()[0] == b'+' { 1 } else { -1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let (y, mo) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    u64::try_from(secs).ok()
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
