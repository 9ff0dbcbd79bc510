//! The HTTP pieces every Azure client here shares: the one `reqwest` client, retry rules
//! (which statuses, backoff, `Retry-After`), and turning error answers and transport errors
//! into short messages. `arm`, `identity` and `table` depend on this module and never on
//! each other for these.

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The one HTTP client (rustls, bundled web PKI roots), with connect and request limits.
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("scalehook/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// Statuses worth another attempt: throttling and transient server errors.
pub(crate) fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// 200 ms, doubling per attempt, capped at 1.6 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64 << attempt.min(4).saturating_sub(1))
}

/// `Retry-After` in seconds (ARM sends delta-seconds).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    v.parse::<u64>().ok().map(Duration::from_secs)
}

/// A non-empty header holding a URL (operation status, `Location`).
pub(crate) fn header_url(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|s| !s.is_empty())
}

/// An error with its causes ("error sending request: connection closed before …").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `code: message` from ARM's error body (`{"error":{"code","message"}}`), else a snippet.
pub fn error_text(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            let e = v.get("error").unwrap_or(&v);
            match (
                e.get("code").and_then(Value::as_str),
                e.get("message").and_then(Value::as_str),
            ) {
                (Some(c), Some(m)) => format!("{c}: {}", truncate(m, 300)),
                (Some(c), None) => c.to_string(),
                _ => snippet(body),
            }
        }
        Err(_) => snippet(body),
    }
}

/// The start of a body for an error message (printable characters, at most 200).
pub fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    truncate(s.trim(), 200)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}

/// Unix seconds now (0 if the clock is before 1970).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_reads_arm_errors() {
        let body = br#"{"error":{"code":"OperationNotAllowed","message":"quota"}}"#;
        assert_eq!(error_text(body), "OperationNotAllowed: quota");
        assert_eq!(
            error_text(b"<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(9), Duration::from_millis(1600));
    }
}
