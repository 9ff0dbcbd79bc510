//! The hand-checked trace (`fixtures/traces/sim-small.jsonl`): every figure below is worked
//! out by hand in `docs/simulate.md` ("The hand-checked trace"), and asserted exactly.

mod common;

use scalehook_core::Config;
use scalehook_sim::{simulate, Policy, PolicyFigures, SimOptions, SimReport, Workload};
use std::path::PathBuf;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

async fn small(config: &Config) -> SimReport {
    let workload =
        Workload::from_file(&fixture("fixtures/traces/sim-small.jsonl")).expect("trace reads");
    simulate(config, workload, &SimOptions::default())
        .await
        .expect("simulates")
}

fn figures(report: &SimReport, policy: Policy) -> &PolicyFigures {
    report
        .pool("linux-x64")
        .and_then(|p| p.policy(policy))
        .expect("linux-x64 figures")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[tokio::test]
async fn window_and_routing() {
    let r = small(&common::config()).await;
    assert_eq!(r.boot_seconds, 60);
    // 09:00:00 .. 09:25:01: every policy is done by the trace's last line.
    assert_eq!(r.window.start_utc, "2024-05-06T09:00:00Z");
    assert_eq!(r.window.end - r.window.start, 1501);
    assert_eq!(r.jobs, 5);
    assert_eq!(r.ignored_jobs, 1, "ubuntu-latest routes to no pool");
    assert_eq!(r.incomplete_jobs, 0);
    assert_eq!(r.pools.len(), 1, "no job routes to k8s");
    for f in &r.pools[0].policies {
        assert_eq!((f.jobs, f.started, f.interrupted), (4, 4, 0), "{f:?}");
    }
}

#[tokio::test]
async fn scalehook_figures() {
    let r = small(&common::config()).await;
    let f = figures(&r, Policy::Scalehook);
    // waits: 1001 0 s (standby runner), 1002 30 s, 1003 50 s, 1004 0 s
    assert!(close(f.queue_wait_secs.mean, 20.0), "{f:?}");
    assert_eq!(
        (
            f.queue_wait_secs.p50,
            f.queue_wait_secs.p95,
            f.queue_wait_secs.max
        ),
        (0, 50, 50)
    );
    // booting 4 x 60 s; busy 300 + 120 + 60 + 600 s; idle 601 + 120 + 30 + 50 + 540 s
    assert!(close(f.booting_instance_minutes, 4.0), "{f:?}");
    assert!(close(f.busy_instance_minutes, 18.0), "{f:?}");
    assert!(close(f.idle_instance_minutes, 1341.0 / 60.0), "{f:?}");
    assert_eq!(f.peak_capacity, 4);
    assert!(close(f.cost, 2661.0 / 3600.0 * 0.10), "{f:?}");
}

#[tokio::test]
async fn cpu_threshold_figures() {
    let r = small(&common::config()).await;
    let f = figures(&r, Policy::CpuThreshold);
    // one instance; 100% busy from 09:00, 5th high sample at 09:04 launches a second,
    // in service at 09:05 when 1001 also ends: 1002 waits 270 s, 1003 260 s.
    assert!(close(f.queue_wait_secs.mean, 132.5), "{f:?}");
    assert_eq!(
        (
            f.queue_wait_secs.p50,
            f.queue_wait_secs.p95,
            f.queue_wait_secs.max
        ),
        (0, 270, 270)
    );
    assert!(close(f.booting_instance_minutes, 1.0), "{f:?}");
    assert!(close(f.busy_instance_minutes, 18.0), "{f:?}");
    assert!(close(f.idle_instance_minutes, 1622.0 / 60.0), "{f:?}");
    assert_eq!(f.peak_capacity, 2);
    assert!(close(f.cost, 2762.0 / 3600.0 * 0.10), "{f:?}");
}

#[tokio::test]
async fn fixed_size_figures() {
    let r = small(&common::config()).await;
    let f = figures(&r, Policy::FixedSize);
    assert!(close(f.queue_wait_secs.mean, 0.0), "{f:?}");
    assert_eq!(f.queue_wait_secs.max, 0);
    assert!(close(f.booting_instance_minutes, 0.0), "{f:?}");
    assert!(close(f.busy_instance_minutes, 18.0), "{f:?}");
    // 20 instances x 1501 s, less the 1080 busy seconds
    assert!(close(f.idle_instance_minutes, 28_940.0 / 60.0), "{f:?}");
    assert_eq!(f.peak_capacity, 20);
    assert!(close(f.cost, 30_020.0 / 3600.0 * 0.10), "{f:?}");
}

#[tokio::test]
async fn best_column() {
    let r = small(&common::config()).await;
    let best = &r.pools[0].best;
    assert_eq!(best["queue_wait_mean_secs"], "fixed-size");
    assert_eq!(best["queue_wait_p50_secs"], "tie");
    // With no loss and no delay, scalehook with and without a GitHub App scale alike.
    assert_eq!(
        best["idle_instance_minutes"],
        "scalehook = scalehook-webhook-only"
    );
    assert_eq!(best["interrupted_jobs"], "tie");
    assert_eq!(best["stranded_jobs"], "tie");
    assert!(
        !best.contains_key("busy_instance_minutes"),
        "the work itself"
    );
    assert_eq!(best["peak_capacity"], "cpu-threshold");
    assert_eq!(best["cost"], "scalehook = scalehook-webhook-only");
    let table = r.table();
    assert!(table.contains("pool linux-x64 (4 jobs"), "{table}");
    assert!(table.contains("idle instance-minutes"), "{table}");
}

/// The scalehook column comes from the real service and config: without standby, the
/// first job waits for a boot, and the pool rests at zero instances.
#[tokio::test]
async fn scalehook_follows_the_pool_config() {
    let text = common::POOLS.replacen("standby = 1", "standby = 0", 1);
    let config = Config::from_toml(&text).expect("valid");
    let r = small(&config).await;
    let f = figures(&r, Policy::Scalehook);
    // 1001 waits 60 s for the first boot; 1004 too.
    assert_eq!(f.queue_wait_secs.max, 60, "{f:?}");
    let capped = common::POOLS.replacen("max = 20", "max = 2", 1);
    let r = small(&Config::from_toml(&capped).expect("valid")).await;
    let f = figures(&r, Policy::Scalehook);
    assert_eq!(f.peak_capacity, 2, "{f:?}");
    assert_eq!(figures(&r, Policy::FixedSize).peak_capacity, 2);
}

fn job_lines(id: u64, labels: &str, lines: &[(&str, &str)]) -> String {
    lines
        .iter()
        .map(|(action, at)| {
            format!(
                r#"{{"event":"workflow_job","at":"2024-05-06T09:{at}Z","payload":{{"action":"{action}","workflow_job":{{"id":{id},"run_id":1,"labels":{labels}}}}}}}"#
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn run_text(config: &Config, text: &str) -> SimReport {
    let workload =
        Workload::from_text(text, "inline.jsonl", std::path::Path::new(".")).expect("trace reads");
    simulate(config, workload, &SimOptions::default())
        .await
        .expect("simulates")
}

/// A job cancelled before its runner boots: the service launched an instance for it and,
/// on the `completed` delivery, removes it while still booting.
#[tokio::test]
async fn cancelled_while_queued() {
    let config =
        Config::from_toml(&common::POOLS.replacen("standby = 1", "standby = 0", 1)).expect("valid");
    let text = job_lines(
        7,
        r#"["self-hosted","linux","x64"]"#,
        &[("queued", "00:00"), ("completed", "00:30")],
    );
    let r = run_text(&config, &text).await;
    let f = figures(&r, Policy::Scalehook);
    assert_eq!((f.jobs, f.started, f.cancelled_before_start), (1, 0, 1));
    // launched at 0, removed at 30 while booting
    assert!(close(f.booting_instance_minutes, 0.5), "{f:?}");
    assert!(close(
        f.idle_instance_minutes + f.busy_instance_minutes,
        0.0
    ));
    assert_eq!(f.peak_capacity, 1);
    assert!(r.table().contains("1 cancelled while queued"));
}

/// Two runners per instance (`k8s`, standby 0): two jobs share one instance; the window
/// runs past the trace's last line to the simulated end.
#[tokio::test]
async fn two_runners_per_instance() {
    let k8s = r#"["self-hosted","k8s"]"#;
    let text = [
        job_lines(
            1,
            k8s,
            &[
                ("queued", "00:00"),
                ("in_progress", "00:05"),
                ("completed", "02:05"),
            ],
        ),
        job_lines(
            2,
            k8s,
            &[
                ("queued", "00:00"),
                ("in_progress", "00:05"),
                ("completed", "02:05"),
            ],
        ),
    ]
    .join("\n");
    let r = run_text(&common::config(), &text).await;
    assert_eq!(
        r.window.end - r.window.start,
        180,
        "both start at 60 s, run 120 s"
    );
    let pool = r.pool("k8s").expect("k8s reported");
    let f = pool.policy(Policy::Scalehook).expect("scalehook");
    // one instance for both (ceil(2 / 2)), booted at 60, both busy to 180, then removed
    assert_eq!(f.peak_capacity, 1);
    assert_eq!((f.queue_wait_secs.p50, f.queue_wait_secs.max), (60, 60));
    assert!(close(f.booting_instance_minutes, 1.0), "{f:?}");
    assert!(close(f.busy_instance_minutes, 2.0), "{f:?}");
    assert!(close(f.idle_instance_minutes, 0.0), "{f:?}");
    // cpu-threshold: its floor instance (2 slots) takes both at once, idle 120-180
    let c = pool.policy(Policy::CpuThreshold).expect("cpu");
    assert_eq!(c.queue_wait_secs.max, 0);
    assert!(close(c.busy_instance_minutes, 2.0) && close(c.idle_instance_minutes, 1.0));
    // fixed-size: 10 instances x 180 s. GitHub gives each job a random idle runner of the
    // 20 (seed 1): the two land on two instances, each busy 120 s.
    let x = pool.policy(Policy::FixedSize).expect("fixed");
    assert!(
        close(x.idle_instance_minutes, (1800.0 - 240.0) / 60.0),
        "{x:?}"
    );
}

/// With the default options (persistent runners, no loss, no delay) the service scales
/// alike with and without a GitHub App: the App only adds what GitHub can repair.
#[tokio::test]
async fn webhook_only_matches_scalehook_without_loss() {
    let r = small(&common::config()).await;
    let mut app = figures(&r, Policy::Scalehook).clone();
    let plain = figures(&r, Policy::ScalehookWebhookOnly);
    app.policy = plain.policy;
    assert_eq!(&app, plain);
    let s = r.service(Policy::ScalehookWebhookOnly).expect("run");
    // 4 queued + 4 in_progress + 4 completed + the ignored job's queued.
    assert_eq!((s.deliveries, s.lost, s.redelivered), (13, 0, 0));
}
