//! `scalehook serve` on a free port, `scalehook replay --url` against it: every fixture
//! and every scenario trace, checked against expected summaries and against the same
//! replay in process.

use scalehook_e2e::{replay, scalehook, scenarios, Server, SECRET};
use serde_json::{json, Value};
use std::io::{Read as _, Write as _};

/// (file, http_status, answer) of every delivery: what must match between a replay in
/// process and over HTTP (delivery ids are fresh each run).
fn answers(r: &scalehook_e2e::Replay) -> Vec<(String, Value, Value)> {
    r.deliveries
        .iter()
        .map(|d| {
            (
                format!("{}:{}", d["file"].as_str().unwrap_or(""), d["line"]),
                d["http_status"].clone(),
                d["answer"].clone(),
            )
        })
        .collect()
}

fn pools(summary: &Value) -> Value {
    summary["pools"].clone()
}

#[test]
fn every_fixture_over_http_matches_in_process() {
    let server = Server::start(None);
    let remote = replay(&["--url", &server.url, "fixtures/github/"]);
    assert!(remote.output.status.success(), "{remote:?}");
    let stderr = String::from_utf8_lossy(&remote.output.stderr);
    // Every payload fixture is delivered; the signature vectors are skipped with a note.
    let payloads = std::fs::read_dir(scalehook_e2e::workspace_root().join("fixtures/github"))
        .expect("fixtures")
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".json") && !name.starts_with("signature-vectors")
        })
        .count();
    assert_eq!(remote.deliveries.len(), payloads);
    assert!(
        stderr.contains("skipped fixtures/github/signature-vectors.json"),
        "{stderr}"
    );

    let by_file = |suffix: &str| {
        remote
            .deliveries
            .iter()
            .find(|d| d["file"].as_str().is_some_and(|f| f.ends_with(suffix)))
            .unwrap_or_else(|| panic!("no delivery of {suffix}"))
            .clone()
    };
    for d in &remote.deliveries {
        let file = d["file"].as_str().unwrap_or("");
        let expected = if file.contains("/ping.") {
            200
        } else {
            d["http_status"].as_u64().unwrap_or(0)
        };
        assert!(matches!(expected, 200 | 202), "{d}");
        if file.contains("/ping.") {
            assert_eq!(d["http_status"], 200, "{d}");
            assert_eq!(d["answer"], json!({"status": "pong"}), "{d}");
        }
    }
    let capture = by_file("delivery-capture.workflow_run.in_progress.github-app.cogni.json");
    assert_eq!(capture["event"], "workflow_run");
    assert_eq!(capture["delivery"], "16056910-a6ff-11f0-880c-569b494ebd7a");
    assert_eq!(capture["http_status"], 202);
    let hosted = by_file("workflow_job.queued.octokit.json");
    assert_eq!(
        hosted["http_status"], 202,
        "GitHub-hosted jobs are not ours"
    );
    let started = by_file("workflow_job.started.obsolete-action.octokit.json");
    assert_eq!(started["http_status"], 202);
    let k8s = by_file("workflow_job.queued.self-hosted-k8s.with-deployment.octokit.json");
    assert_eq!(k8s["answer"]["pool"], "k8s");
    assert_eq!(k8s["answer"]["action"], "scale_out");
    let old = by_file("workflow_job.queued.self-hosted.2021-capture.philips-labs.json");
    assert_eq!(old["answer"]["pool"], "linux-x64");
    assert_eq!(old["answer"]["desired"], 2);
    // The waiting event of the already queued k8s job moves nothing back.
    let waiting = by_file("workflow_job.waiting.self-hosted-k8s.octokit.json");
    assert_eq!(waiting["answer"]["duplicate"], true);

    let expected = json!([
        {"name": "linux-x64", "desired": 2, "queued": 1, "running": 0},
        {"name": "k8s", "desired": 1, "queued": 1, "running": 0},
    ]);
    assert_eq!(pools(&remote.summary), expected);
    assert_eq!(server.status()["pools"], expected, "GET /status agrees");

    let local = replay(&["fixtures/github/"]);
    assert!(local.output.status.success());
    assert_eq!(local.summary, remote.summary);
    assert_eq!(answers(&local), answers(&remote));

    // One JSON log line per delivery, none with the secret.
    let log = server.log();
    assert_eq!(server.delivery_log().len(), payloads, "{log}");
    assert!(!log.contains(SECRET));
}

#[test]
fn every_scenario_over_http_matches_its_expectation_and_in_process() {
    let all = scenarios();
    assert!(all.len() >= 5, "scenario traces missing");
    for s in all {
        let server = Server::start(s.config.as_deref());
        let remote = replay(&["--url", &server.url, &s.path]);
        assert!(remote.output.status.success(), "{}: {remote:?}", s.path);
        assert_eq!(remote.summary, s.expected, "{} over HTTP", s.path);
        let mut args = vec![];
        if let Some(c) = &s.config {
            args.extend(["--config", c.as_str()]);
        }
        args.push(&s.path);
        let local = replay(&args);
        assert_eq!(local.summary, s.expected, "{} in process", s.path);
        assert_eq!(answers(&local), answers(&remote), "{}", s.path);
        assert!(remote.deliveries.iter().all(|d| d["line"].is_u64()));
    }
}

#[test]
fn scenario_details() {
    // lifecycle: scale-in removes idle instances only, while a busy runner is kept.
    let r = replay(&["fixtures/traces/scenarios/lifecycle.jsonl"]);
    let actions: Vec<&str> = r
        .deliveries
        .iter()
        .map(|d| d["answer"]["action"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        actions,
        [
            "scale_out",
            "scale_out",
            "hold",
            "hold",
            "hold",
            "hold",
            "hold",
            "remove_idle",
            "hold",
            "remove_idle"
        ]
    );
    // two pools: unroutable jobs, a ping and another event are all 202/200, never handled.
    let r = replay(&["fixtures/traces/scenarios/two-pools-unroutable.jsonl"]);
    let statuses: Vec<u64> = r
        .deliveries
        .iter()
        .map(|d| d["http_status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 200, 202, 202, 202, 202, 200, 202]
    );
}

#[test]
fn reconcile_in_process_restores_standby() {
    let r = replay(&[
        "--reconcile",
        "fixtures/github/ping.github-app.octocrab.json",
    ]);
    assert!(r.output.status.success(), "{r:?}");
    let reconcile = r.reconcile.expect("a reconcile line");
    assert_eq!(reconcile["pools"][0]["pool"], "linux-x64");
    assert_eq!(reconcile["pools"][0]["action"], "scale_out");
    assert_eq!(
        pools(&r.summary),
        json!([
            {"name": "linux-x64", "desired": 1, "queued": 0, "running": 0},
            {"name": "k8s", "desired": 0, "queued": 0, "running": 0},
        ])
    );
    // A server reconciles on its own schedule: --reconcile with --url is refused.
    let out = scalehook()
        .args([
            "replay",
            "--reconcile",
            "--url",
            "http://127.0.0.1:9/webhook",
            "fixtures/github/",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--reconcile"));
}

#[test]
fn readable_output_has_a_summary_table() {
    let out = scalehook()
        .args(["replay", "fixtures/traces/scenarios/burst.jsonl"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("5 deliveries: 5 x 200"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("linux-x64 "))
        .unwrap_or_else(|| panic!("no linux-x64 row: {text}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["linux-x64", "6", "5", "0"]
    );
}

#[test]
fn a_wrong_secret_fails_the_replay() {
    let server = Server::start(None);
    let out = scalehook()
        .env("SCALEHOOK_WEBHOOK_SECRET", "not-the-server-secret")
        .args([
            "replay",
            "--json",
            "--url",
            &server.url,
            "fixtures/traces/scenarios/burst.jsonl",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("\"http_status\":401").count(), 5, "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    assert_eq!(server.status()["pools"][0]["queued"], 0);
}

/// A server that answers every request 503, like an adapter whose ledger is down.
fn failing_server(requests: usize) -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/webhook", listener.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        for _ in 0..requests {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
            // Read the whole request (headers, then content-length bytes) before answering.
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stream.read(&mut chunk) {
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let body = r#"{"status":"error","reason":"ledger unavailable"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, handle)
}

#[test]
fn a_5xx_fails_the_replay_and_says_so() {
    // Two deliveries, then GET /status (also 503: the summary is reported missing).
    let (url, handle) = failing_server(3);
    let out = scalehook()
        .args([
            "replay",
            "--json",
            "--url",
            &url,
            "fixtures/github/ping.github-app.octocrab.json",
            "fixtures/github/ping.organization.octokit.json",
        ])
        .output()
        .expect("run");
    let _ = handle.join();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("\"http_status\":503").count(), 2, "{stdout}");
    assert!(stdout.contains("\"summary\":null"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 deliveries got a 5xx"), "{stderr}");
}

/// Many deliveries at once, each job twice (a redelivery racing the original): the
/// server's counts stay exact and capacity ends at the policy's target.
#[test]
fn concurrent_deliveries_keep_exact_counts() {
    use scalehook_core::signature::sign;
    let server = Server::start(None);
    let send = |action: &str, id: u64| {
        let body = json!({
            "action": action,
            "workflow_job": {"id": id, "run_id": 1, "labels": ["self-hosted", "linux", "x64"], "runner_name": null, "runner_id": 0},
        })
        .to_string();
        let sig = sign(SECRET.as_bytes(), body.as_bytes());
        let delivery = format!("{action}-{id}");
        let headers = [
            ("content-type", "application/json"),
            ("x-github-event", "workflow_job"),
            ("x-github-delivery", delivery.as_str()),
            ("x-hub-signature-256", sig.as_str()),
        ];
        scalehook_e2e::request(&server.url, "POST", &headers, Some(body.as_bytes())).0
    };
    let jobs: Vec<u64> = (1..=60).collect();
    let phase = |action: &str| {
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..6)
                .map(|w| {
                    let jobs = &jobs;
                    let send = &send;
                    let action = action.to_string();
                    s.spawn(move || {
                        // Every worker sends every job whose id is in its half of the
                        // list, so each job goes out from two workers at once.
                        jobs.iter()
                            .filter(|id| *id % 3 == w % 3)
                            .map(|id| send(&action, *id))
                            .collect::<Vec<u16>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("worker"))
                .collect::<Vec<u16>>()
        })
    };
    let statuses = phase("queued");
    assert_eq!(statuses.len(), 120);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        server.status()["pools"][0],
        json!({"name": "linux-x64", "desired": 20, "queued": 60, "running": 0})
    );
    let statuses = phase("completed");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // 120 completions, each removing at most one idle instance: back to standby 1.
    assert_eq!(
        server.status()["pools"][0],
        json!({"name": "linux-x64", "desired": 1, "queued": 0, "running": 0})
    );
}
