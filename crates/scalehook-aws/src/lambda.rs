//! The Lambda event shapes scalehook answers, dispatched on the event itself (one zip,
//! both roles):
//!
//! - HTTP: Function URL or API Gateway HTTP API, payload format 2.0 (`requestContext.http`)
//!   -> [`Service::handle`] with the raw body (base64-decoded first when
//!   `isBase64Encoded`), answered as a payload 2.0 response;
//! - EventBridge scheduled event (`"source": "aws.events"`, `"detail-type": "Scheduled
//!   Event"`) -> [`Service::reconcile`]; a failed pass is returned as an error so Lambda's
//!   `Errors` metric (and the alarm on it) sees it;
//! - EventBridge `"source": "aws.autoscaling"`, `"detail-type": "EC2 Instance-launch
//!   Lifecycle Action"` -> [`LaunchHook::handle`]: a JIT runner for the new instance, then
//!   CONTINUE (ABANDON when provisioning failed); a failed completion is an error (Lambda
//!   retries, and the retry finds the stored configuration);
//! - EventBridge `"source": "aws.ec2"`, `"detail-type": "EC2 Spot Instance Interruption
//!   Warning"` or `"EC2 Instance Rebalance Recommendation"` (`detail.instance-id`) ->
//!   [`Service::interruption`]: the event names no Auto Scaling group, so the service finds
//!   the spot pool whose fleet has the instance; an instance of no pool is acknowledged
//!   and ignored (logged); a failed pass is an error (EventBridge's asynchronous invocation
//!   is retried);
//! - anything else -> an error saying what arrived (its shape, never its content).

use crate::provision::{LaunchHook, LAUNCH_DETAIL_TYPE};
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use lambda_runtime::Diagnostic;
use scalehook_core::interruption::{Notice, NoticeKind};
use scalehook_core::Service;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

/// A payload 2.0 HTTP event: only what the webhook needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpEvent {
    #[serde(default)]
    headers: Option<HashMap<String, String>>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    is_base64_encoded: bool,
    request_context: RequestContext,
}

#[derive(Debug, Deserialize)]
struct RequestContext {
    http: HttpContext,
}

#[derive(Debug, Deserialize)]
struct HttpContext {
    method: String,
}

/// A failed invocation, reported to the runtime API as `errorType` / `errorMessage`.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error("reconcile pass failed: {0}")]
    ReconcileFailed(String),
    #[error("unsupported event: {0}")]
    UnsupportedEvent(String),
    #[error("launch lifecycle event: {0}")]
    LaunchFailed(String),
    #[error("spot interruption event: {0}")]
    InterruptionFailed(String),
    #[error("malformed event: {0}")]
    MalformedEvent(String),
}

impl From<InvocationError> for Diagnostic {
    fn from(e: InvocationError) -> Self {
        let error_type = match e {
            InvocationError::ReconcileFailed(_) => "Scalehook.ReconcileFailed",
            InvocationError::UnsupportedEvent(_) => "Scalehook.UnsupportedEvent",
            InvocationError::LaunchFailed(_) => "Scalehook.LaunchFailed",
            InvocationError::InterruptionFailed(_) => "Scalehook.InterruptionFailed",
            InvocationError::MalformedEvent(_) => "Scalehook.MalformedEvent",
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

/// What kind of invocation an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Http,
    Scheduled,
    Launch,
    /// A spot instance's interruption warning or rebalance recommendation.
    Interruption(NoticeKind),
    Unsupported,
}

/// EventBridge's detail-type of the two-minute spot interruption warning.
pub const INTERRUPTION_DETAIL_TYPE: &str = "EC2 Spot Instance Interruption Warning";
/// EventBridge's detail-type of a rebalance recommendation.
pub const REBALANCE_DETAIL_TYPE: &str = "EC2 Instance Rebalance Recommendation";

pub fn classify(event: &Value) -> EventKind {
    if event
        .pointer("/requestContext/http")
        .is_some_and(Value::is_object)
    {
        return EventKind::Http;
    }
    let field = |k: &str| event.get(k).and_then(Value::as_str);
    if field("source") == Some("aws.events") && field("detail-type") == Some("Scheduled Event") {
        return EventKind::Scheduled;
    }
    if field("source") == Some("aws.autoscaling")
        && field("detail-type") == Some(LAUNCH_DETAIL_TYPE)
    {
        return EventKind::Launch;
    }
    if field("source") == Some("aws.ec2") {
        match field("detail-type") {
            Some(INTERRUPTION_DETAIL_TYPE) => {
                return EventKind::Interruption(NoticeKind::Interruption)
            }
            Some(REBALANCE_DETAIL_TYPE) => return EventKind::Interruption(NoticeKind::Rebalance),
            _ => {}
        }
    }
    EventKind::Unsupported
}

/// The notice an EC2 event carries: `detail.instance-id`, an EC2 instance id
/// (`i-` and 8 or 17 hexadecimal digits).
pub fn notice(event: &Value, kind: NoticeKind) -> Result<Notice, InvocationError> {
    let id = event
        .pointer("/detail/instance-id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            InvocationError::MalformedEvent(format!(
                "{:?} without a string detail.instance-id",
                kind.as_str()
            ))
        })?;
    let hex = id.strip_prefix("i-").unwrap_or_default();
    if !matches!(hex.len(), 8 | 17) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(InvocationError::MalformedEvent(format!(
            "{:?}: detail.instance-id is not an EC2 instance id",
            kind.as_str()
        )));
    }
    Ok(Notice {
        instance_id: id.to_string(),
        kind,
    })
}

/// Handles one invocation (without launch lifecycle events: see [`invoke_with`]).
pub async fn invoke(service: &Service, event: Value) -> Result<Value, InvocationError> {
    invoke_with(service, None, event).await
}

/// Handles one invocation; launch lifecycle events go to `launch` when there is one.
pub async fn invoke_with(
    service: &Service,
    launch: Option<&LaunchHook>,
    event: Value,
) -> Result<Value, InvocationError> {
    match classify(&event) {
        EventKind::Launch => match launch {
            Some(hook) => hook
                .handle(service, event)
                .await
                .map_err(|e| InvocationError::LaunchFailed(e.to_string())),
            None => Err(InvocationError::UnsupportedEvent(
                "a launch lifecycle event, but provisioning is not set up in this process".into(),
            )),
        },
        EventKind::Interruption(kind) => {
            let notice = notice(&event, kind)?;
            let report = service
                .interruption(notice)
                .await
                .map_err(InvocationError::InterruptionFailed)?;
            Ok(json!({"status": "interruption", "report": report}))
        }
        EventKind::Http => Ok(http(service, event).await),
        EventKind::Scheduled => {
            let report = service.reconcile().await;
            if report.ok() {
                Ok(json!({"status": "reconciled", "report": report}))
            } else {
                Err(InvocationError::ReconcileFailed(
                    serde_json::to_string(&report).unwrap_or_default(),
                ))
            }
        }
        EventKind::Unsupported => Err(InvocationError::UnsupportedEvent(describe(&event))),
    }
}

/// A payload 2.0 response.
fn response(status: u16, body: String, allow_post: bool) -> Value {
    let mut headers = json!({"content-type": "application/json"});
    if allow_post {
        headers["allow"] = "POST".into();
    }
    json!({"statusCode": status, "headers": headers, "body": body, "isBase64Encoded": false})
}

fn bad_request(reason: &str) -> Value {
    tracing::warn!(reason, "webhook request refused before verification");
    response(
        400,
        json!({"status": "error", "reason": reason}).to_string(),
        false,
    )
}

async fn http(service: &Service, event: Value) -> Value {
    let event: HttpEvent = match serde_json::from_value(event) {
        Ok(e) => e,
        Err(_) => return bad_request("malformed HTTP event (expected payload format 2.0)"),
    };
    let body = match (event.body, event.is_base64_encoded) {
        (None, _) => Vec::new(),
        (Some(b), false) => b.into_bytes(),
        // The signature covers the bytes GitHub sent, which is what the base64 carries.
        (Some(b), true) => match base64::engine::general_purpose::STANDARD.decode(b) {
            Ok(bytes) => bytes,
            Err(_) => return bad_request("body is marked isBase64Encoded but is not base64"),
        },
    };
    let mut headers = HeaderMap::new();
    for (name, value) in event.headers.unwrap_or_default() {
        // Payload 2.0 header names are lower case already; anything unparsable cannot be
        // a header scalehook reads.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(n, v);
        }
    }
    let method =
        Method::from_bytes(event.request_context.http.method.as_bytes()).unwrap_or(Method::OPTIONS);
    let answer = service.handle(&method, &headers, &body).await;
    response(answer.status, answer.body, answer.status == 405)
}

/// The shape of an unsupported event, for the error: its top-level keys, not its values.
fn describe(event: &Value) -> String {
    let expected = "expected a Function URL / API Gateway HTTP API request (payload format 2.0), an EventBridge Scheduled Event, a launch lifecycle action or an EC2 spot interruption warning / rebalance recommendation";
    match event {
        Value::Object(map) if map.contains_key("httpMethod") => {
            format!("{expected}; got an API Gateway payload format 1.0 request (configure the integration for payload format 2.0)")
        }
        Value::Object(map) => {
            let mut keys: Vec<&str> = map.keys().map(String::as_str).take(12).collect();
            keys.sort_unstable();
            let source = map
                .get("source")
                .and_then(Value::as_str)
                .map(|s| format!(", source {:?}", s.chars().take(64).collect::<String>()))
                .unwrap_or_default();
            format!(
                "{expected}; got an object with keys [{}]{source}",
                keys.join(", ")
            )
        }
        Value::Array(_) => format!("{expected}; got a JSON array"),
        Value::String(_) => format!("{expected}; got a JSON string"),
        Value::Number(_) => format!("{expected}; got a JSON number"),
        Value::Bool(_) => format!("{expected}; got a JSON boolean"),
        Value::Null => format!("{expected}; got null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_shape() {
        let url = json!({"version": "2.0", "requestContext": {"http": {"method": "POST"}}});
        assert_eq!(classify(&url), EventKind::Http);
        let cron = json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
        assert_eq!(classify(&cron), EventKind::Scheduled);
        let launch = json!({"source": "aws.autoscaling", "detail-type": "EC2 Instance-launch Lifecycle Action", "detail": {}});
        assert_eq!(classify(&launch), EventKind::Launch);
        let warning = json!({"source": "aws.ec2", "detail-type": "EC2 Spot Instance Interruption Warning", "detail": {"instance-id": "i-1234567890abcdef0", "instance-action": "terminate"}});
        assert_eq!(
            classify(&warning),
            EventKind::Interruption(NoticeKind::Interruption)
        );
        let rebalance = json!({"source": "aws.ec2", "detail-type": "EC2 Instance Rebalance Recommendation", "detail": {"instance-id": "i-1234567890abcdef0"}});
        assert_eq!(
            classify(&rebalance),
            EventKind::Interruption(NoticeKind::Rebalance)
        );
        let state =
            json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification"});
        assert_eq!(classify(&state), EventKind::Unsupported);
        let other = json!({"source": "aws.s3", "detail-type": "Object Created"});
        assert_eq!(classify(&other), EventKind::Unsupported);
        assert_eq!(
            classify(&json!({"httpMethod": "POST"})),
            EventKind::Unsupported
        );
        assert_eq!(classify(&json!([1])), EventKind::Unsupported);
    }

    #[test]
    fn unsupported_events_are_described_not_dumped() {
        let e = json!({"Records": [{"body": "sekrit"}], "source": "aws.sqs"});
        let text = describe(&e);
        assert!(
            text.contains("Records") && text.contains("aws.sqs"),
            "{text}"
        );
        assert!(!text.contains("sekrit"), "{text}");
        assert!(describe(&json!({"httpMethod": "POST"})).contains("1.0"));
    }

    #[test]
    fn a_notice_needs_an_instance_id() {
        let kind = NoticeKind::Interruption;
        let ok = json!({"detail": {"instance-id": "i-1234567890abcdef0"}});
        assert_eq!(
            notice(&ok, kind).map(|n| n.instance_id).ok().as_deref(),
            Some("i-1234567890abcdef0")
        );
        assert!(notice(&json!({"detail": {"instance-id": "i-0abc1234"}}), kind).is_ok());
        for bad in [
            json!({}),
            json!({"detail": "i-1234567890abcdef0"}),
            json!({"detail": {"instance-id": 7}}),
            json!({"detail": {"instance-id": "i-123"}}),
            json!({"detail": {"instance-id": "../../etc/passwd-1234"}}),
            json!({"detail": {"instance-id": "i-1234567890abcdefg"}}),
        ] {
            let e = notice(&bad, kind).expect_err("refused");
            assert!(matches!(e, InvocationError::MalformedEvent(_)), "{e}");
        }
    }
}
