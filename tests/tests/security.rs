//! Claims of docs/threat-model.md, tested on the real `scalehook serve`: secret rotation
//! (current and previous accepted, nothing else), fail-closed start-up with only a previous
//! secret, no secret in any log line, metric or status, and a replayed (captured, validly
//! signed) delivery changing nothing.

use scalehook_core::signature::sign;
use scalehook_e2e::{scalehook, Server};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

const CURRENT: &str = "rotation-current-3c8f1e0b9a";
const PREVIOUS: &str = "rotation-previous-77d0a4c2e1";

/// A `scalehook serve` started from `cmd` (its environment set by the test); killed on drop.
struct Serve {
    server: Server,
    origin: String,
}

impl Serve {
    fn start(mut cmd: Command) -> Serve {
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        let server = Server::spawn(cmd);
        Serve {
            origin: server.origin.clone(),
            server,
        }
    }

    fn post(&self, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
        let mut req = agent().post(format!("{}/webhook", self.origin));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut res = req.send(body).expect("POST /webhook");
        let text = res.body_mut().read_to_string().unwrap_or_default();
        (
            res.status().as_u16(),
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    fn deliver(&self, event: &str, secret: &str, body: &[u8]) -> (u16, Value) {
        let signature = sign(secret.as_bytes(), body);
        self.post(
            &[
                ("content-type", "application/json"),
                ("x-github-event", event),
                ("x-github-delivery", "3f0c1a2e-0000-4000-8000-000000000001"),
                ("x-hub-signature-256", &signature),
            ],
            body,
        )
    }

    fn get(&self, path: &str) -> String {
        let mut res = agent()
            .get(format!("{}{path}", self.origin))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        res.body_mut().read_to_string().unwrap_or_default()
    }

    fn log(&self) -> String {
        self.server.log()
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn rotating() -> Command {
    let mut cmd = scalehook();
    cmd.env("SCALEHOOK_WEBHOOK_SECRET", CURRENT)
        .env("SCALEHOOK_WEBHOOK_SECRET_PREVIOUS", PREVIOUS);
    cmd
}

fn job(action: &str, id: u64, runner: Option<&str>) -> Vec<u8> {
    serde_json::json!({
        "action": action,
        "workflow_job": {"id": id, "run_id": 1, "labels": ["self-hosted", "linux", "x64"],
                         "runner_name": runner, "runner_id": runner.map(|_| 5)},
        "repository": {"full_name": "octo-org/app", "owner": {"login": "octo-org"}}
    })
    .to_string()
    .into_bytes()
}

#[test]
fn rotation_accepts_current_and_previous_secret_and_nothing_else() {
    let serve = Serve::start(rotating());
    let body = job("queued", 41, None);
    assert_eq!(serve.deliver("workflow_job", CURRENT, &body).0, 200);
    assert_eq!(serve.deliver("workflow_job", PREVIOUS, &body).0, 200);
    let (status, answer) = serve.deliver("workflow_job", "a-guessed-secret", &body);
    assert_eq!(status, 401, "{answer}");
    // SHA-1 is never a fallback, even with the right secret.
    let (status, _) = serve.post(
        &[
            ("content-type", "application/json"),
            ("x-github-event", "workflow_job"),
            (
                "x-hub-signature",
                "sha1=126f2c800419c60137ce748d7672e77b65cf16d6",
            ),
        ],
        &body,
    );
    assert_eq!(status, 401);
    // The signature is over the exact bytes: one byte more and it no longer verifies.
    let signature = sign(CURRENT.as_bytes(), &body);
    let mut longer = body.clone();
    longer.push(b' ');
    let (status, _) = serve.post(
        &[
            ("content-type", "application/json"),
            ("x-github-event", "workflow_job"),
            ("x-hub-signature-256", &signature),
        ],
        &longer,
    );
    assert_eq!(status, 401);

    // Neither secret appears in the log, the metrics or the status.
    let outputs = [serve.log(), serve.get("/metrics"), serve.get("/status")];
    assert!(
        outputs[0].contains("scalehook::delivery"),
        "the log has delivery lines"
    );
    for (what, text) in ["log", "metrics", "status"].iter().zip(&outputs) {
        for secret in [CURRENT, PREVIOUS] {
            assert!(
                !text.contains(secret),
                "the {what} contains a webhook secret"
            );
        }
    }
}

#[test]
fn previous_secret_alone_refuses_to_start() {
    let out = scalehook()
        .env_remove("SCALEHOOK_WEBHOOK_SECRET")
        .env("SCALEHOOK_WEBHOOK_SECRET_PREVIOUS", PREVIOUS)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .expect("run scalehook serve");
    assert!(
        !out.status.success(),
        "serve started with only a previous secret"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stderr.contains("SCALEHOOK_WEBHOOK_SECRET"), "{stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(!stderr.contains(PREVIOUS) && !stdout.contains(PREVIOUS));
}

/// A captured delivery replayed (by an attacker, or GitHub's redelivery) is validly signed:
/// the ledger's forward-only records make it a no-op for as long as they are retained.
#[test]
fn replayed_deliveries_change_nothing() {
    let serve = Serve::start(rotating());
    let lifecycle = [
        job("queued", 7, None),
        job("in_progress", 7, Some("linux-x64-0001")),
        job("completed", 7, Some("linux-x64-0001")),
        job("queued", 8, None),
    ];
    for body in &lifecycle {
        let (status, answer) = serve.deliver("workflow_job", CURRENT, body);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["duplicate"], false);
    }
    let before = serve.get("/status");
    // Replay every captured delivery, twice, in reverse order.
    for body in lifecycle.iter().rev().chain(lifecycle.iter()) {
        let (status, answer) = serve.deliver("workflow_job", CURRENT, body);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["duplicate"], true, "{answer}");
        assert_ne!(answer["action"], "scale_out", "{answer}");
    }
    assert_eq!(
        serve.get("/status"),
        before,
        "a replay changed counts or capacity"
    );
}
