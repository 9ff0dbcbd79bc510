//! Replayed deliveries over time (docs/threat-model.md, "Replayed deliveries"): a captured,
//! validly signed delivery replayed within the ledger's retention is a no-op; replayed after
//! the record is forgotten, a `queued` is demand again, bounded to one job's slot until the
//! queued time-to-live expires it.

use http::{HeaderMap, HeaderValue, Method};
use scalehook_core::signature::sign;
use scalehook_core::{
    Config, LocalFleet, LogFormat, ManualClock, MemoryLedger, Service, WebhookSecrets,
};
use std::sync::Arc;

const SECRET: &str = "replay-window-secret";
const DAY: u64 = 24 * 3600;
const CONFIG: &str = r#"
[ledger]
queued_ttl_secs = 7200
in_progress_ttl_secs = 86400
retention_secs = 345600

[[pools]]
name = "linux"
labels = ["self-hosted", "linux"]
min = 0
max = 10
standby = 0
"#;

fn job(action: &str, id: u64, runner: Option<&str>) -> Vec<u8> {
    serde_json::json!({
        "action": action,
        "workflow_job": {"id": id, "run_id": 1, "labels": ["self-hosted", "linux"],
                         "runner_name": runner, "runner_id": runner.map(|_| 3)},
        "repository": {"full_name": "octo-org/app"}
    })
    .to_string()
    .into_bytes()
}

async fn deliver(service: &Service, body: &[u8]) -> serde_json::Value {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-github-event", HeaderValue::from_static("workflow_job"));
    h.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&sign(SECRET.as_bytes(), body)).expect("signature"),
    );
    let a = service.handle(&Method::POST, &h, body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    serde_json::from_str(&a.body).expect("json")
}

async fn counts(service: &Service) -> (u32, u32, u32) {
    let p = &service.summary().await.expect("summary")[0];
    (p.desired, p.queued, p.running)
}

#[tokio::test]
async fn replay_is_a_no_op_within_retention_and_bounded_after_it() {
    let clock = Arc::new(ManualClock::new(1_700_000_000));
    let service = Service::new(
        Config::from_toml(CONFIG).expect("config"),
        WebhookSecrets::new([SECRET]).expect("secret"),
        Arc::new(MemoryLedger::new()),
        Arc::new(LocalFleet::new()),
    )
    .with_clock(clock.clone())
    .with_log(LogFormat::Off);

    let queued = job("queued", 99, None);
    deliver(&service, &queued).await;
    deliver(&service, &job("in_progress", 99, Some("linux-0001"))).await;
    deliver(&service, &job("completed", 99, Some("linux-0001"))).await;
    assert_eq!(counts(&service).await, (0, 0, 0));

    // Three days later (GitHub's redelivery window), the captured `queued` replayed: no-op.
    clock.advance(3 * DAY);
    assert!(service.reconcile().await.ok());
    let answer = deliver(&service, &queued).await;
    assert_eq!(answer["duplicate"], true);
    assert_eq!(counts(&service).await, (0, 0, 0));

    // Past retention the record is forgotten; a replay is then new demand for one slot...
    clock.advance(DAY + 1);
    let report = service.reconcile().await;
    assert_eq!(report.forgotten, 1);
    let answer = deliver(&service, &queued).await;
    assert_eq!(answer["duplicate"], false);
    assert_eq!(counts(&service).await, (1, 1, 0));
    // ...and replaying it again is a no-op once more.
    assert_eq!(deliver(&service, &queued).await["duplicate"], true);
    assert_eq!(counts(&service).await, (1, 1, 0));

    // The queued time-to-live expires it, and reconcile gives the capacity back.
    clock.advance(7200);
    let report = service.reconcile().await;
    assert_eq!(report.expired, 1);
    assert_eq!(counts(&service).await, (0, 0, 0));
}
