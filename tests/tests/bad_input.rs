//! Every kind of bad input to `scalehook serve`'s webhook gets the status and JSON body of
//! the answers in README.md ("HTTP answers"), and changes no state.

use scalehook_core::signature::sign;
use scalehook_e2e::{request, Server, SECRET};
use serde_json::{json, Value};

fn job(action: &str, id: u64) -> Vec<u8> {
    json!({
        "action": action,
        "workflow_job": {"id": id, "run_id": 1, "labels": ["self-hosted", "linux", "x64"], "runner_name": null},
        "repository": {"full_name": "octo-org/app"}
    })
    .to_string()
    .into_bytes()
}

fn post(server: &Server, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let (status, text) = request(&server.url, "POST", headers, Some(body));
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("answer {status} is not JSON ({e}): {text}"));
    (status, body)
}

#[test]
fn bad_inputs_are_answered_and_change_nothing() {
    let server = Server::start(None);
    // Some state first, so "unchanged" means something: one queued job.
    let queued = job("queued", 7001);
    let sig = sign(SECRET.as_bytes(), &queued);
    let good = [
        ("content-type", "application/json"),
        ("x-github-event", "workflow_job"),
        ("x-github-delivery", "e2e-1"),
        ("x-hub-signature-256", sig.as_str()),
    ];
    let (status, body) = post(&server, &good, &queued);
    assert_eq!(status, 200, "{body}");
    let before = server.status();
    assert_eq!(
        before["pools"][0],
        json!({"name": "linux-x64", "desired": 2, "queued": 1, "running": 0})
    );

    // Each bad request carries a delivery that would change state if it were accepted.
    let completed = job("completed", 7001);
    let new_job = job("queued", 7002);
    let sig_completed = sign(SECRET.as_bytes(), &completed);
    let sig_new = sign(SECRET.as_bytes(), &new_job);
    let wrong_secret = sign(b"another secret", &new_job);
    let malformed = br#"{"action": "queued", "workflow_job": {"id": 7003,"#;
    let sig_malformed = sign(SECRET.as_bytes(), malformed);
    let wrong_shape = br#"{"action": "queued", "workflow_job": {"id": "seven"}}"#;
    let sig_wrong_shape = sign(SECRET.as_bytes(), wrong_shape);
    let mut oversized = new_job.clone();
    oversized.pop();
    oversized.extend(std::iter::repeat_n(b' ', 1024 * 1024));
    oversized.push(b'}');
    let sig_oversized = sign(SECRET.as_bytes(), &oversized);

    let ct = ("content-type", "application/json");
    let ev = ("x-github-event", "workflow_job");
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a [u8], u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "no signature",
            vec![ct, ev],
            &new_job,
            401,
            "missing X-Hub-Signature-256",
        ),
        (
            "wrong secret",
            vec![ct, ev, ("x-hub-signature-256", &wrong_secret)],
            &new_job,
            401,
            "does not match",
        ),
        (
            "signature of another body",
            vec![ct, ev, ("x-hub-signature-256", &sig_new)],
            &completed,
            401,
            "does not match",
        ),
        (
            "sha1 only",
            vec![
                ct,
                ev,
                (
                    "x-hub-signature-256",
                    "sha1=0123456789abcdef0123456789abcdef01234567",
                ),
            ],
            &new_job,
            401,
            "malformed",
        ),
        (
            "malformed JSON",
            vec![ct, ev, ("x-hub-signature-256", &sig_malformed)],
            malformed,
            400,
            "malformed workflow_job payload",
        ),
        (
            "wrong field type",
            vec![ct, ev, ("x-hub-signature-256", &sig_wrong_shape)],
            wrong_shape,
            400,
            "malformed workflow_job payload",
        ),
        (
            "no event header",
            vec![ct, ("x-hub-signature-256", &sig_completed)],
            &completed,
            400,
            "X-GitHub-Event",
        ),
        (
            "form-encoded",
            vec![
                ("content-type", "application/x-www-form-urlencoded"),
                ev,
                ("x-hub-signature-256", &sig_completed),
            ],
            &completed,
            415,
            "application/json",
        ),
        (
            "no content type",
            vec![ev, ("x-hub-signature-256", &sig_completed)],
            &completed,
            415,
            "application/json",
        ),
        (
            "oversized",
            vec![ct, ev, ("x-hub-signature-256", &sig_oversized)],
            &oversized,
            413,
            "max_body_bytes",
        ),
    ];
    for (name, headers, body, want, reason) in &cases {
        let (status, answer) = post(&server, headers, body);
        assert_eq!(status, *want, "{name}: {answer}");
        assert_eq!(answer["status"], "error", "{name}: {answer}");
        let got = answer["reason"].as_str().unwrap_or("");
        assert!(
            got.contains(reason),
            "{name}: reason {got:?} lacks {reason:?}"
        );
        assert_eq!(server.status(), before, "{name} changed state");
    }
    for method in ["GET", "PUT", "DELETE"] {
        let (status, text) = request(
            &server.url,
            method,
            &[ct, ev, ("x-hub-signature-256", &sig_completed)],
            None,
        );
        assert_eq!(status, 405, "{method}");
        let answer: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(answer["status"], "error");
        assert_eq!(server.status(), before, "{method} changed state");
    }

    // Every rejection was counted and logged, and the secret appears nowhere.
    let (_, metrics) = server.get("/metrics");
    for line in [
        "scalehook_deliveries_total{outcome=\"unauthorized\"} 4",
        "scalehook_deliveries_total{outcome=\"bad_request\"} 3",
        "scalehook_deliveries_total{outcome=\"unsupported_media_type\"} 2",
        "scalehook_deliveries_total{outcome=\"payload_too_large\"} 1",
        "scalehook_deliveries_total{outcome=\"method_not_allowed\"} 3",
        "scalehook_signature_failures_total 4",
    ] {
        assert!(metrics.contains(line), "metrics lack {line}:\n{metrics}");
    }
    assert_eq!(server.delivery_log().len(), 1 + cases.len() + 3);
    assert!(!server.log().contains(SECRET));
    assert!(!metrics.contains(SECRET));

    // The server still works, and the real completion goes through.
    let (status, body) = post(
        &server,
        &[ct, ev, ("x-hub-signature-256", &sig_completed)],
        &completed,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.status()["pools"][0]["queued"], 0);
}

#[test]
fn health_metrics_status_and_unknown_paths() {
    let server = Server::start(None);
    let (status, body) = server.get("/healthz");
    assert_eq!((status, body.as_str()), (200, "{\"status\":\"ok\"}"));
    let (status, body) = server.get("/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE scalehook_deliveries_total counter"));
    let pools = server.status()["pools"].clone();
    assert_eq!(
        pools.as_array().map(Vec::len),
        Some(2),
        "every pool, touched or not"
    );
    assert_eq!(server.get("/nope").0, 404);
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    let server = Server::start(None);
    assert_eq!(server.get("/healthz").0, 200);
    let log_path_text = server.log();
    assert!(
        log_path_text.contains("\"message\":\"listening\""),
        "{log_path_text}"
    );
    assert!(server.terminate(), "serve exits 0 on SIGTERM");
}

#[test]
fn serve_reconciles_on_its_schedule() {
    // Reconcile restores linux-x64's standby instance without any delivery. Polled, bounded:
    // the test waits for the effect, it does not time it. The pass sets the capacity before it
    // writes its log line, so the test waits for all three (capacity, metric, log line).
    let server = Server::start_with(None, &["--reconcile-every", "1"]);
    let scaled_out = "scalehook_scale_actions_total{pool=\"linux-x64\",action=\"scale_out\"} 1";
    let mut seen = (Value::Null, String::new(), String::new());
    for _ in 0..300 {
        seen = (
            server.status()["pools"][0]["desired"].clone(),
            server.get("/metrics").1,
            server.log(),
        );
        if seen.0 == 1 && seen.1.contains(scaled_out) && seen.2.contains("scalehook::reconcile") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "no reconcile pass (desired 1, {scaled_out}, a scalehook::reconcile log line) within 30 s: \
         desired {}\n{}\n{}",
        seen.0, seen.1, seen.2
    );
}
