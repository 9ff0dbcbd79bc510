//! The timer function's route: the Functions host POSTs `/reconcile` (the function's folder
//! name) with its `{"Data": {...}, "Metadata": {...}}` invocation envelope, and reads back
//! `{"Outputs": {}, "Logs": [...], "ReturnValue": null}`.
//!
//! Transport only: the pass itself is the core's [`Service::reconcile`].
//!
//! Defence in depth: the handler's port is not public, but host issue #6251 shows requests
//! from outside can reach handler paths named after non-HTTP functions. So this route
//! answers only requests that carry the host's headers (`X-Azure-Functions-InvocationId`,
//! `User-Agent: Azure-Functions-Host/<version>`) and the envelope's JSON shape; anything
//! else is refused (403 / 400) before any work is done.
//!
//! A failed pass answers 500: the host then marks the invocation failed (it calls
//! `EnsureSuccessStatusCode`), which shows in the Functions monitor and App Insights as a
//! failed execution. Timers are not retried, and the next tick converges anyway; what
//! matters is that a failure is visible rather than logged as a success.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use scalehook_core::report::ReconcileReport;
use scalehook_core::Service;
use serde_json::{json, Value};
use std::sync::Arc;

/// The timer function's name (its folder in the function app) and so its path.
pub const RECONCILE_PATH: &str = "/reconcile";
/// The forwarded webhook's path: route `webhook` under the default `api` prefix.
pub const WEBHOOK_PATH: &str = "/api/webhook";

/// The host's invocation-id header.
pub const INVOCATION_HEADER: &str = "x-azure-functions-invocationid";
/// The host's user agent prefix.
pub const HOST_AGENT_PREFIX: &str = "Azure-Functions-Host/";

/// An envelope is small (timer info and metadata); anything larger is not one.
const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// The `/reconcile` route.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route(RECONCILE_PATH, post(reconcile))
        .layer(DefaultBodyLimit::max(MAX_ENVELOPE_BYTES))
        .with_state(service)
}

/// Why an envelope request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not from the Functions host (403).
    NotHost(&'static str),
    /// From the host but not the envelope shape (400).
    Shape(&'static str),
}

/// Checks the host headers and the envelope shape; returns the timer's `IsPastDue`.
pub fn check(headers: &HeaderMap, body: &[u8]) -> Result<bool, Refusal> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if header(INVOCATION_HEADER).is_none() {
        return Err(Refusal::NotHost("missing X-Azure-Functions-InvocationId"));
    }
    if !header("user-agent").is_some_and(|ua| ua.starts_with(HOST_AGENT_PREFIX)) {
        return Err(Refusal::NotHost("user agent is not the Functions host"));
    }
    let Ok(Value::Object(envelope)) = serde_json::from_slice::<Value>(body) else {
        return Err(Refusal::Shape("body is not a JSON object"));
    };
    let Some(Value::Object(data)) = envelope.get("Data") else {
        return Err(Refusal::Shape("envelope has no Data object"));
    };
    if !matches!(envelope.get("Metadata"), Some(Value::Object(_))) {
        return Err(Refusal::Shape("envelope has no Metadata object"));
    }
    // Timer info: every field optional (ScheduleStatus may be null, host issue #7391).
    let past_due = data
        .values()
        .filter_map(|v| v.get("IsPastDue"))
        .any(|v| v.as_bool() == Some(true));
    Ok(past_due)
}

async fn reconcile(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return refuse(e.status(), "body could not be read or is too large"),
    };
    let past_due = match check(&headers, &body) {
        Ok(p) => p,
        Err(Refusal::NotHost(why)) => {
            tracing::warn!(target: "scalehook::azure", reason = why, "refused a non-host request to /reconcile");
            return refuse(StatusCode::FORBIDDEN, why);
        }
        Err(Refusal::Shape(why)) => return refuse(StatusCode::BAD_REQUEST, why),
    };
    let report = service.reconcile().await;
    let mut logs = log_lines(&report);
    if past_due {
        logs.insert(0, "timer is past due".to_string());
    }
    let status = if report.ok() {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (
        status,
        Json(json!({ "Outputs": {}, "Logs": logs, "ReturnValue": null })),
    )
        .into_response()
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    (status, Json(json!({ "status": "error", "reason": reason }))).into_response()
}

/// The invocation's log lines (the host writes them to App Insights as traces).
pub fn log_lines(report: &ReconcileReport) -> Vec<String> {
    let mut lines = vec![format!(
        "reconcile {}: expired {}, forgotten {}",
        if report.ok() { "ok" } else { "failed" },
        report.expired,
        report.forgotten
    )];
    if let Some(e) = &report.ledger_error {
        lines.push(format!("ledger: {e}"));
    }
    for p in &report.pools {
        lines.push(match (&p.error, p.action) {
            (Some(e), _) => format!("pool {}: error: {e}", p.pool),
            (None, Some(a)) => format!(
                "pool {}: {a} {} -> {}",
                p.pool,
                p.before.unwrap_or_default(),
                p.after.unwrap_or_default()
            ),
            (None, None) => format!("pool {}: no action", p.pool),
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(INVOCATION_HEADER, "6f0b".parse().expect("value"));
        h.insert(
            "user-agent",
            "Azure-Functions-Host/4.1036.1".parse().expect("value"),
        );
        h
    }

    const TIMER: &[u8] = br#"{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":true}},"Metadata":{"sys":{"MethodName":"reconcile"}}}"#;

    #[test]
    fn accepts_the_host_envelope() {
        assert_eq!(check(&host_headers(), TIMER), Ok(true));
        let minimal = br#"{"Data":{},"Metadata":{}}"#;
        assert_eq!(check(&host_headers(), minimal), Ok(false));
    }

    #[test]
    fn refuses_without_host_headers() {
        let mut h = host_headers();
        h.remove(INVOCATION_HEADER);
        assert!(matches!(check(&h, TIMER), Err(Refusal::NotHost(_))));
        let mut h = host_headers();
        h.insert("user-agent", "curl/8".parse().expect("value"));
        assert!(matches!(check(&h, TIMER), Err(Refusal::NotHost(_))));
    }

    #[test]
    fn refuses_other_shapes() {
        for body in [
            &b"[]"[..],
            b"{}",
            br#"{"Data":1,"Metadata":{}}"#,
            br#"{"Data":{}}"#,
            b"nope",
        ] {
            assert!(
                matches!(check(&host_headers(), body), Err(Refusal::Shape(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
