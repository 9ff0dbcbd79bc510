//! Issue 21, finding 3, through `scalehook serve`: a captured `in_progress` replayed after the
//! ledger forgot its job would be recorded again, and its runner (on no instance of the pool)
//! would hold scale-in until the in-progress time-to-live (6 days). scalehook refuses a job
//! older than the retention instead (202, counted, logged), and `replay` re-stamps the times
//! of captured payloads unless `--keep-times`.
//!
//! The captured `in_progress` payloads in `fixtures/github/` are of GitHub-hosted jobs
//! (`ubuntu-latest`); a pool with that label stands in for a self-hosted one.

use scalehook_e2e::{replay, unique_temp_path, Server};
use serde_json::json;

const CAPTURED: &str = "fixtures/github/workflow_job.in_progress.with-queued-steps.octokit.json";

const CONFIG: &str = r#"
[[pools]]
name = "probe"
labels = ["ubuntu-latest"]
max = 10
standby = 0
"#;

/// Five jobs queued, then completed without a runner: a trace `replay` can send.
fn five_jobs_queued_then_completed() -> String {
    let line = |action: &str, id: u64| {
        json!({
            "event": "workflow_job",
            "payload": {"action": action,
                        "workflow_job": {"id": id, "run_id": 1, "labels": ["ubuntu-latest"]},
                        "repository": {"full_name": "octo-org/app"}}
        })
        .to_string()
    };
    let mut lines: Vec<String> = (1..=5).map(|id| line("queued", id)).collect();
    lines.extend((1..=5).map(|id| line("completed", id)));
    lines.join("\n") + "\n"
}

fn desired(server: &Server) -> u64 {
    server.status()["pools"][0]["desired"]
        .as_u64()
        .expect("desired")
}

#[test]
fn a_replayed_old_in_progress_changes_nothing_and_replay_restamps_captures() {
    let config = unique_temp_path("probe.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let trace = unique_temp_path("five-jobs.jsonl");
    std::fs::write(&trace, five_jobs_queued_then_completed()).expect("trace");
    let config = config.to_string_lossy().into_owned();
    let trace = trace.to_string_lossy().into_owned();

    // Without the replay: 5 queued then completed leave nothing.
    let clean = Server::start(Some(&config));
    let r = replay(&["--url", &clean.url, &trace]);
    assert!(r.output.status.success(), "{r:?}");
    assert_eq!(desired(&clean), 0);

    // The captured delivery (2023) sent as captured, then the same 5 jobs: still nothing.
    let server = Server::start(Some(&config));
    let old = replay(&["--url", &server.url, "--keep-times", CAPTURED]);
    assert!(old.output.status.success(), "{old:?}");
    let r = replay(&["--url", &server.url, &trace]);
    assert!(r.output.status.success(), "{r:?}");
    // Without the refusal: desired 6, running 1 (the replayed runner is on no instance, so
    // scale-in is withheld) until the in-progress time-to-live.
    assert_eq!(
        server.status()["pools"][0],
        json!({"name": "probe", "desired": 0, "queued": 0, "running": 0}),
        "a replayed old in_progress must not hold scale-in"
    );
    assert_eq!(old.deliveries[0]["http_status"], 202, "{old:?}");
    assert_eq!(old.deliveries[0]["answer"]["status"], "ignored");
    // Counted and logged.
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("scalehook_refused_deliveries_total{reason=\"stale_job\"} 1"),
        "{metrics}"
    );
    let refused: Vec<_> = server
        .delivery_log()
        .into_iter()
        .filter(|l| l["refused"] == "stale_job")
        .collect();
    assert_eq!(refused.len(), 1, "{}", server.log());

    // `replay` without --keep-times moves the capture's times to now: handled.
    let fresh = replay(&["--url", &server.url, CAPTURED]);
    assert_eq!(fresh.deliveries[0]["http_status"], 200, "{fresh:?}");
    assert_eq!(fresh.deliveries[0]["answer"]["running"], 1);
}
