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
    routes(service, webhook_paths, get(status))
}

fn routes(
    service: Arc<Service>,
    webhook_paths: &[&str],
    status: axum::routing::MethodRouter<Arc<Service>>,
) -> Router {
    let limit = service.config().max_body_bytes;
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/status", status);
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

/// [`router`] whose `/status?job=<id>` answers one job's record (state, pool, runner, last
/// transition time, repository) and the decisions kept for its pool since: for `serve`
/// only, on loopback. The cloud adapters use [`router`], whose `/status` shows no job.
pub fn router_with_jobs(service: Arc<Service>, webhook_paths: &[&str]) -> Router {
    routes(service, webhook_paths, get(status_or_job))
}

async fn status_or_job(
    State(service): State<Arc<Service>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let json = [(http::header::CONTENT_TYPE, "application/json")];
    let error = |status: StatusCode, reason: &str| {
        (
            status,
            [(http::header::CONTENT_TYPE, "application/json")],
            format!(
                "{{\"status\":\"error\",\"reason\":{}}}",
                json_string(reason)
            ),
        )
            .into_response()
    };
    let job = query.as_deref().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("job="))
            .map(str::to_string)
    });
    let Some(job) = job else {
        return status(State(service)).await;
    };
    let Ok(job_id) = job.trim().parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "job must be a workflow job id (digits)",
        );
    };
    match service.job(job_id).await {
        Ok(Some((record, decisions))) => (
            json,
            serde_json::json!({
                "job": {
                    "id": record.job_id,
                    "state": record.state.as_str(),
                    "pool": record.pool,
                    "runner": record.runner,
                    "updated_at": record.updated_at,
                    "repository": record.repository,
                },
                "decisions_since_updated_at": decisions,
            })
            .to_string(),
        )
            .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no record of this job in the ledger"),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

/// `{"github": "github-app"|"webhook-only", "github_note": …, "deliveries": the webhook whose
/// failed deliveries reconcile redelivers (`app-hook`, `org-hook:<id>`, `repo-hook:<id>`,
/// `none`), "pools": [{"name", "desired",
/// "queued", "running", "warm" (only when not 0)}]}` for every configured pool (the metrics' gauges only cover pools a
/// delivery touched); 503 when the ledger or fleet fails, with a fixed reason and a
/// correlation id (the failure's text, which may name an account or a resource, goes to the
/// log line with the same id).
async fn status(State(service): State<Arc<Service>>) -> Response {
    let json = [(http::header::CONTENT_TYPE, "application/json")];
    match service.summary().await {
        Ok(pools) => (
            json,
            serde_json::json!({
                "github": service.github_mode(),
                "github_note": service.github_note(),
                "deliveries": service.github().deliveries_source(),
                "pools": pools,
            })
            .to_string(),
        )
            .into_response(),
        Err(e) => {
            let id = scalehook_core::report::new_correlation_id();
            tracing::warn!(target: "scalehook::status", correlation_id = id.as_str(), error = e.as_str(), "status: the ledger or fleet failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json,
                serde_json::json!({
                    "status": "error",
                    "reason": "the ledger or fleet failed",
                    "correlation_id": id,
                })
                .to_string(),
            )
                .into_response()
        }
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
        assert_eq!(v["deliveries"], "none");
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

    /// Issue 24: `serve`'s `/status?job=<id>` gives the job's record and the decisions
    /// taken for its pool since; a bad id is a 400, an unknown one a 404; the cloud
    /// adapters' router shows no job.
    #[tokio::test]
    async fn status_of_one_job_for_serve_only() {
        let service = Arc::new(Service::new(
            Config::embedded_default(),
            WebhookSecrets::new(["s"]).expect("secret"),
            Arc::new(MemoryLedger::new()),
            Arc::new(LocalFleet::new()),
        ));
        let body = r#"{"action":"queued","workflow_job":{"id":42,"run_id":7,"labels":["self-hosted","linux","x64"],"status":"queued"},"repository":{"full_name":"acme/app"}}"#;
        let post = http::Request::post(WEBHOOK_PATH)
            .header("X-GitHub-Event", "workflow_job")
            .header("X-GitHub-Delivery", "d-42")
            .header("Content-Type", "application/json")
            .header(
                "X-Hub-Signature-256",
                scalehook_core::signature::sign(b"s", body.as_bytes()),
            )
            .body(Body::from(body))
            .expect("request");
        let local = router_with_jobs(service.clone(), &[WEBHOOK_PATH]);
        let res = local.clone().oneshot(post).await.expect("response");
        assert_eq!(res.status().as_u16(), 200);
        let get = |app: &Router, uri: &str| {
            let app = app.clone();
            let uri = uri.to_string();
            async move {
                let req = http::Request::get(uri)
                    .body(Body::empty())
                    .expect("request");
                let res = app.oneshot(req).await.expect("response");
                let status = res.status().as_u16();
                let body = res.into_body().collect().await.expect("body").to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let (status, body) = get(&local, "/status?job=42").await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["job"]["state"], "queued");
        assert_eq!(v["job"]["pool"], "linux-x64");
        assert_eq!(v["job"]["repository"], "acme/app");
        let decisions = v["decisions_since_updated_at"]
            .as_array()
            .expect("decisions");
        assert!(
            decisions
                .iter()
                .any(|d| d["action"] == "scale_out" && d["queued"] == 1),
            "{body}"
        );
        assert_eq!(get(&local, "/status?job=x1").await.0, 400);
        assert_eq!(get(&local, "/status?job=7").await.0, 404);
        let (status, body) = get(&local, "/status").await;
        assert!(status == 200 && body.contains("\"pools\""), "{body}");
        let cloud = router(service, &[WEBHOOK_PATH]);
        let (status, body) = get(&cloud, "/status?job=42").await;
        assert_eq!(status, 200);
        assert!(!body.contains("\"job\""), "{body}");
    }

    /// A fleet that fails the way the AWS SDK does: its message names the account and role.
    struct LeakyFleet;

    const ARN: &str = "arn:aws:sts::123456789012:assumed-role/scalehook-fn/scalehook";

    #[async_trait::async_trait]
    impl scalehook_core::Fleet for LeakyFleet {
        async fn describe(
            &self,
            _: &scalehook_core::PoolConfig,
        ) -> Result<scalehook_core::FleetState, scalehook_core::FleetError> {
            Err(scalehook_core::FleetError::Unavailable(format!(
                "AccessDenied: User: {ARN} is not authorized to perform: autoscaling:DescribeAutoScalingGroups"
            )))
        }
        async fn set_desired(
            &self,
            _: &scalehook_core::PoolConfig,
            _: u32,
        ) -> Result<(), scalehook_core::FleetError> {
            Ok(())
        }
        async fn remove_instance(
            &self,
            _: &scalehook_core::PoolConfig,
            _: &str,
        ) -> Result<(), scalehook_core::FleetError> {
            Ok(())
        }
        async fn set_protection(
            &self,
            _: &scalehook_core::PoolConfig,
            _: &[String],
            _: bool,
        ) -> Result<(), scalehook_core::FleetError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn status_failure_names_no_account_only_a_correlation_id() {
        let service = Service::new(
            Config::embedded_default(),
            WebhookSecrets::new(["s"]).expect("secret"),
            Arc::new(MemoryLedger::new()),
            Arc::new(LeakyFleet),
        );
        let req = http::Request::get("/status")
            .body(Body::empty())
            .expect("request");
        let res = router(Arc::new(service), &[WEBHOOK_PATH])
            .oneshot(req)
            .await
            .expect("response");
        assert_eq!(res.status().as_u16(), 503);
        let body = res.into_body().collect().await.expect("body").to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(
            !body.contains("123456789012") && !body.contains("arn:"),
            "{body}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["reason"], "the ledger or fleet failed");
        assert_eq!(v["correlation_id"].as_str().map(str::len), Some(16), "{v}");
    }
}
