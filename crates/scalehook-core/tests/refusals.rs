//! Signed deliveries that must change nothing (docs/threat-model.md): a job older than the
//! ledger's retention (a replay the ledger can no longer recognise), a delivery for another
//! installation of the App; and a 5xx answer that names no account or resource.

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue, Method};
use scalehook_core::clock::format_rfc3339;
use scalehook_core::report::Refusal;
use scalehook_core::signature::sign;
use scalehook_core::{
    Answer, Config, Fleet, FleetError, FleetState, LogFormat, ManualClock, MemoryLedger,
    PoolConfig, Service, WebhookSecrets,
};
use std::sync::Arc;

const SECRET: &str = "refusals-secret";
const NOW: u64 = 1_800_000_000;
const DAY: u64 = 24 * 3600;
const POOL: &str = r#"
[[pools]]
name = "linux"
labels = ["self-hosted", "linux"]
max = 10
"#;

/// A `workflow_job` body whose job times are `started` (and `completed` for a completion).
fn job(
    action: &str,
    id: u64,
    runner: Option<&str>,
    started: u64,
    installation: Option<u64>,
) -> Vec<u8> {
    let mut v = serde_json::json!({
        "action": action,
        "workflow_job": {"id": id, "run_id": 1, "labels": ["self-hosted", "linux"],
                         "runner_name": runner, "runner_id": runner.map(|_| 3),
                         "created_at": format_rfc3339(started - 5),
                         "started_at": format_rfc3339(started),
                         "completed_at": (action == "completed").then(|| format_rfc3339(started + 60))},
        "repository": {"full_name": "octo-org/app", "owner": {"login": "octo-org"}}
    });
    if let Some(i) = installation {
        v["installation"] = serde_json::json!({"id": i});
    }
    v.to_string().into_bytes()
}

async fn deliver(service: &Service, body: &[u8]) -> Answer {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-github-event", HeaderValue::from_static("workflow_job"));
    h.insert("x-github-delivery", HeaderValue::from_static("d-1"));
    h.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&sign(SECRET.as_bytes(), body)).expect("signature"),
    );
    service.handle(&Method::POST, &h, body).await
}

fn build(config: &str, fleet: Arc<dyn Fleet>) -> (Service, Arc<MemoryLedger>) {
    let ledger = Arc::new(MemoryLedger::new());
    let service = Service::new(
        Config::from_toml(config).expect("config"),
        WebhookSecrets::new([SECRET]).expect("secret"),
        ledger.clone(),
        fleet,
    )
    .with_clock(Arc::new(ManualClock::new(NOW)))
    .with_log(LogFormat::Off);
    (service, ledger)
}

fn local() -> Arc<dyn Fleet> {
    Arc::new(scalehook_core::LocalFleet::new())
}

#[tokio::test]
async fn a_job_older_than_the_retention_is_refused_and_counted() {
    let (service, ledger) = build(POOL, local());
    // Retention is 4 days by default: a replayed in_progress of a job that started 5 days
    // ago is answered 202, counted, and recorded nowhere.
    let old = deliver(
        &service,
        &job("in_progress", 1, Some("linux-0001"), NOW - 5 * DAY, None),
    )
    .await;
    assert_eq!(old.status, 202, "{}", old.body);
    assert_eq!(old.report.refused, Some(Refusal::StaleJob));
    assert!(old.body.contains("retention"), "{}", old.body);
    assert!(ledger.is_empty());
    assert_eq!(service.metrics().refused(Refusal::StaleJob), 1);
    assert!(service
        .metrics()
        .render_prometheus()
        .contains("scalehook_refused_deliveries_total{reason=\"stale_job\"} 1"));
    // A GitHub redelivery 3 days late (its window) is still handled.
    let late = deliver(&service, &job("queued", 2, None, NOW - 3 * DAY, None)).await;
    assert_eq!(late.status, 200, "{}", late.body);
    assert_eq!(late.report.refused, None);
    // A completion of a job that ran for 5 days carries a fresh completed_at: handled.
    let long = deliver(
        &service,
        &job("completed", 2, Some("linux-0001"), NOW - 60, None),
    )
    .await;
    assert_eq!(long.status, 200, "{}", long.body);
    assert_eq!(service.metrics().refused(Refusal::StaleJob), 1);
}

#[tokio::test]
async fn another_installation_of_the_app_is_refused_with_a_2xx() {
    let config =
        format!("[github]\napp_id = 1\ninstallation_id = 7\norganization = \"octo-org\"\n{POOL}");
    let (service, ledger) = build(&config, local());
    let foreign = deliver(&service, &job("queued", 1, None, NOW, Some(8))).await;
    assert_eq!(foreign.status, 202, "{}", foreign.body);
    assert_eq!(foreign.report.refused, Some(Refusal::ForeignInstallation));
    assert!(ledger.is_empty());
    assert_eq!(service.metrics().refused(Refusal::ForeignInstallation), 1);
    let ours = deliver(&service, &job("queued", 2, None, NOW, Some(7))).await;
    assert_eq!(ours.status, 200, "{}", ours.body);
    // A repository or organization hook's delivery carries no installation.
    let hook = deliver(&service, &job("queued", 3, None, NOW, None)).await;
    assert_eq!(hook.status, 200, "{}", hook.body);
    // Webhook-only mode has no installation to compare with.
    let (open, _) = build(POOL, local());
    assert_eq!(
        deliver(&open, &job("queued", 1, None, NOW, Some(8)))
            .await
            .status,
        200
    );
}

/// A fleet failing the way the AWS SDK and ARM do: the message names the account, the role
/// and the resource.
struct LeakyFleet;

const LEAK: &str = "AccessDenied: User: arn:aws:sts::123456789012:assumed-role/scalehook-fn/x is not authorized on /subscriptions/0000-1111/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/pool";

#[async_trait]
impl Fleet for LeakyFleet {
    async fn describe(&self, _: &PoolConfig) -> Result<FleetState, FleetError> {
        Err(FleetError::Unavailable(LEAK.into()))
    }
    async fn set_desired(&self, _: &PoolConfig, _: u32) -> Result<(), FleetError> {
        Err(FleetError::Unavailable(LEAK.into()))
    }
    async fn remove_instance(&self, _: &PoolConfig, _: &str) -> Result<(), FleetError> {
        Err(FleetError::Unavailable(LEAK.into()))
    }
    async fn set_protection(
        &self,
        _: &PoolConfig,
        _: &[String],
        _: bool,
    ) -> Result<(), FleetError> {
        Err(FleetError::Unavailable(LEAK.into()))
    }
}

#[tokio::test]
async fn a_fleet_error_reaches_the_log_not_the_answer() {
    let (service, _) = build(POOL, Arc::new(LeakyFleet));
    let a = deliver(&service, &job("queued", 1, None, NOW, None)).await;
    assert_eq!(a.status, 502, "{}", a.body);
    for secret in ["123456789012", "arn:aws", "/subscriptions/", "AccessDenied"] {
        assert!(!a.body.contains(secret), "{secret} in {}", a.body);
    }
    let body: serde_json::Value = serde_json::from_str(&a.body).expect("json");
    assert_eq!(body["reason"], "fleet call failed: redeliver");
    let id = body["correlation_id"].as_str().expect("a correlation id");
    assert_eq!(id.len(), 16);
    // The log line (on Lambda the EMF line) carries the details under the same id.
    assert_eq!(a.report.correlation_id.as_deref(), Some(id));
    let line = scalehook_core::metrics::emf_line(&a.report, 0);
    assert!(line.contains(LEAK) && line.contains(id), "{line}");
    // Each 5xx gets its own id.
    let again = deliver(&service, &job("queued", 1, None, NOW, None)).await;
    assert_ne!(again.report.correlation_id.as_deref(), Some(id));
}
