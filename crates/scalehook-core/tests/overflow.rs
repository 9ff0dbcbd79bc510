//! A spot pool whose launches fail spills its unmet demand to its on-demand overflow pool
//! (issue 23), through the whole service: deliveries, the ledger's spill cursor, the pass
//! handed on after the answer (`continue_left_work`, as the adapters run it), the overflow
//! pool's max, and the way back once spot launches succeed again (an overflow instance that
//! runs a spot pool's job stays until the job is done).

use http::{HeaderMap, HeaderValue, Method};
use scalehook_core::overflow::spill_cursor;
use scalehook_core::signature::sign;
use scalehook_core::{
    Config, Fleet, Ledger, LocalFleet, LogFormat, MemoryLedger, Service, WebhookSecrets,
};
use std::sync::Arc;

const SECRET: &str = "overflow-secret";

fn service(ledger: Arc<MemoryLedger>, fleet: Arc<LocalFleet>) -> Service {
    let config = Config::from_toml(
        "[[pools]]\nname = \"spot\"\nlabels = [\"self-hosted\", \"spot\"]\nmin = 0\nmax = 10\n\
         capacity = \"spot\"\noverflow = \"od\"\n\
         [[pools]]\nname = \"od\"\nlabels = [\"self-hosted\", \"od\"]\nmin = 0\nmax = 4\n",
    )
    .expect("config");
    Service::new(
        config,
        WebhookSecrets::new([SECRET]).expect("secret"),
        ledger,
        fleet,
    )
    .with_log(LogFormat::Off)
}

async fn deliver(service: &Service, action: &str, job: u64) -> u16 {
    let body = serde_json::json!({
        "action": action,
        "workflow_job": {"id": job, "run_id": 7, "labels": ["self-hosted", "spot"],
                         "runner_name": if action == "queued" { None } else { Some("od-0001") }},
        "repository": {"full_name": "octo-org/app", "owner": {"login": "octo-org"}}
    })
    .to_string()
    .into_bytes();
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-github-event", HeaderValue::from_static("workflow_job"));
    h.insert(
        "x-github-delivery",
        HeaderValue::from_str(&format!("d-{job}-{action}")).expect("id"),
    );
    h.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&sign(SECRET.as_bytes(), &body)).expect("sig"),
    );
    service.handle(&Method::POST, &h, &body).await.status
}

/// (desired, instances) of a pool.
async fn capacity(service: &Service, fleet: &LocalFleet, pool: &str) -> (u32, usize) {
    let pool = service.config().pool(pool).expect("pool").clone();
    let s = fleet.describe(&pool).await.expect("describe");
    (s.desired, s.instances.len())
}

#[tokio::test]
async fn failed_spot_launches_spill_to_the_overflow_pool_and_come_back() {
    let ledger = Arc::new(MemoryLedger::new());
    let fleet = Arc::new(LocalFleet::new());
    let svc = service(ledger.clone(), fleet.clone());
    let spot = svc.config().pool("spot").expect("pool").clone();
    fleet.fail_launches(&spot, Some("InsufficientInstanceCapacity"));

    for job in 1..=6 {
        assert_eq!(deliver(&svc, "queued", job).await, 200, "job {job}");
    }
    // The spot pool asks for its target and gets nothing: the cloud keeps trying.
    assert_eq!(capacity(&svc, &fleet, "spot").await, (6, 0));
    assert_eq!(
        ledger
            .cursor(&spill_cursor("od", "spot"))
            .await
            .expect("cursor"),
        Some("6".into()),
        "the spill is in the ledger, where every function instance sees it"
    );
    assert_eq!(svc.metrics().spilled("spot", "od"), Some(6));
    // The overflow pool's pass runs once the answer is sent (as the adapters run it).
    assert!(
        svc.has_work_left(),
        "no pass over the overflow pool handed on"
    );
    svc.continue_left_work().await;
    assert_eq!(
        capacity(&svc, &fleet, "od").await,
        (4, 4),
        "6 spilled, within the overflow pool's own max of 4"
    );
    assert!(svc
        .metrics()
        .render_prometheus()
        .contains("scalehook_overflow_spilled_instances{pool=\"spot\",overflow=\"od\"} 6"));

    // Spot capacity is back: its launches come up, the spill goes to 0, and the overflow
    // pool's idle instances go by the normal rule.
    fleet.fail_launches(&spot, None);
    assert_eq!(capacity(&svc, &fleet, "spot").await, (6, 6));
    assert_eq!(deliver(&svc, "in_progress", 1).await, 200);
    assert_eq!(
        ledger
            .cursor(&spill_cursor("od", "spot"))
            .await
            .expect("cursor"),
        Some("0".into())
    );
    assert_eq!(svc.metrics().spilled("spot", "od"), Some(0));
    svc.continue_left_work().await;
    // Job 1 (recorded in the spot pool's account) runs on od-0001: that instance stays.
    let od = svc.config().pool("od").expect("pool").clone();
    let left: Vec<String> = fleet
        .describe(&od)
        .await
        .expect("describe")
        .instances
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(
        left,
        ["od-0001"],
        "a spot job's overflow instance was taken out"
    );
    assert_eq!(capacity(&svc, &fleet, "spot").await, (6, 6));
    assert!(!svc.has_work_left());
    // Once it completes, the next reconcile takes the idle instance out.
    assert_eq!(deliver(&svc, "completed", 1).await, 200);
    svc.reconcile().await;
    assert_eq!(capacity(&svc, &fleet, "od").await, (0, 0));
}
