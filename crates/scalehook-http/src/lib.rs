//! The HTTP routes every HTTP-serving adapter shares: the webhook, `GET /healthz`,
//! `GET /metrics` (Prometheus text) and `GET /status` (every pool's desired capacity and
//! ledger counts, as JSON). Transport only: every decision is the core's.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use scalehook_core::{Answer, Service};
use std::sync::Arc;

/// The local server's webhook path.
pub const WEBHOOK_PATH: &str = "/webhook";

/// A router with the webhook at each of `webhook_paths` (any method: the core answers
/// 405 to all but POST), `/healthz`, `/metrics` and `/status`.
pub fn router(service: Arc<Service>, webhook_paths: &[&str]) -> Router {
    let limit = service.config().max_body_bytes;
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/status", get(status));
    for path in webhook_paths {
        r = r.route(path, any(webhook));
    }
    r.layer(DefaultBodyLimit::max(limit)).with_state(service)
}

async fn webhook(
    State(service): State<Arc<Service>>,
    method: Method,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    match body {
        Ok(body) => {
            let a = service.handle(&method, &headers, &body).await;
            if service.has_work_left() {
                // A pass stopped at its budget with work left: finished after the answer.
                let service = Arc::clone(&service);
                tokio::spawn(async move { service.continue_left_work().await });
            }
            answer(a)
        }
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            answer(service.too_large(&headers))
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            [(http::header::CONTENT_TYPE, "application/json")],
            format!(
                "{{\"status\":\"error\",\"reason\":{}}}",
                json_string(&e.body_text())
            ),
        )
            .into_response(),
    }
}

/// Turns the core's answer into an axum response.
pub fn answer(a: Answer) -> Response {
    a.into_http().into_response()
}

async fn healthz() -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"ok\"}",
    )
}

async fn metrics(State(service): State<Arc<Service>>) -> impl IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        service.metrics().render_prometheus(),
    )
}

/// `{"github": "github-app"|"webhook-only", "github_note": …, "pools": [{"name", "desired",
/// "queued", "running"}]}` for every configured pool (the metrics' gauges only cover pools a
/// delivery touched); 503 when the ledger or fleet fails.
async fn status(State(service): State<Arc<Service>>) -> Response {
    let json = [(http::header::CONTENT_TYPE, "application/json")];
    match service.summary().await {
        Ok(pools) => (
            json,
            serde_json::json!({
                "github": service.github_mode(),
                "github_note": service.github_note(),
                "pools": pools,
            })
            .to_string(),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json,
            format!("{{\"status\":\"error\",\"reason\":{}}}", json_string(&e)),
        )
            .into_response(),
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use scalehook_core::{Config, LocalFleet, MemoryLedger, WebhookSecrets};
    use tower::ServiceExt;

    fn app() -> Router {
        let mut config = Config::embedded_default();
        config.max_body_bytes = 64;
        let service = Service::new(
            config,
            WebhookSecrets::new(["s"]).expect("secret"),
            Arc::new(MemoryLedger::new()),
            Arc::new(LocalFleet::new()),
        );
        router(Arc::new(service), &[WEBHOOK_PATH])
    }

    async fn send(req: http::Request<Body>) -> (u16, String) {
        let res = app().oneshot(req).await.expect("response");
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn routes() {
        let get = |uri: &str| {
            http::Request::get(uri)
                .body(Body::empty())
                .expect("request")
        };
        assert_eq!(send(get("/healthz")).await.0, 200);
        let (status, text) = send(get("/metrics")).await;
        assert_eq!(status, 200);
        assert!(text.contains("scalehook_deliveries_total"));
        let (status, body) = send(get("/webhook")).await;
        assert_eq!(status, 405);
        assert!(body.contains("\"status\":\"error\""));
        assert_eq!(send(get("/nope")).await.0, 404);
    }

    #[tokio::test]
    async fn status_lists_every_pool() {
        let req = http::Request::get("/status")
            .body(Body::empty())
            .expect("request");
        let (status, body) = send(req).await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let names: Vec<&str> = v["pools"]
            .as_array()
            .expect("pools")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        let config = Config::embedded_default();
        let expected: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, expected);
        assert_eq!(v["pools"][0]["queued"], 0);
        assert_eq!(v["pools"][0]["desired"], config.pools[0].min);
        assert_eq!(v["github"], "webhook-only");
        assert!(v["github_note"]
            .as_str()
            .is_some_and(|n| n.contains("not runner-safe") && n.contains("not repaired")));
    }

    #[tokio::test]
    async fn oversized_body_is_413_json() {
        let req = http::Request::post("/webhook")
            .header("content-type", "application/json")
            .body(Body::from(vec![b' '; 65]))
            .expect("request");
        let (status, body) = send(req).await;
        assert_eq!(status, 413);
        assert!(body.contains("max_body_bytes"), "{body}");
    }
}
