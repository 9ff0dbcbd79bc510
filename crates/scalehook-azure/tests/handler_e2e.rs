//! The `handler` binary end to end, started as the Functions host starts it (environment,
//! `FUNCTIONS_CUSTOMHANDLER_PORT`), with the ledger in Azurite and the fleet on the ARM
//! test double: forwarded webhook requests, timer envelopes, failures and repairs.

mod common;

use common::arm_double::{ArmDouble, Fault, VMSS_ID};
use common::azurite::{free_port, Azurite, KEY};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "e2e-webhook-secret-3f9a";
const FIXTURE: &str = include_str!(
    "../../../fixtures/github/workflow_job.queued.self-hosted.2021-capture.philips-labs.json"
);

struct Handler {
    child: Child,
    port: u16,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_toml() -> String {
    format!(
        "[[pools]]\nname = \"linux\"\nlabels = [\"self-hosted\", \"linux\"]\nmin = 0\nmax = 5\nstandby = 0\nazure_vmss = \"{VMSS_ID}\"\n"
    )
}

/// The variables the Functions host and the app settings give the handler.
fn host_env(double: &ArmDouble, az: &Azurite, port: u16) -> Env {
    let mut env = double.env();
    env.extend([
        ("FUNCTIONS_CUSTOMHANDLER_PORT".into(), port.to_string()),
        (
            "FUNCTIONS_CUSTOMHANDLER_WORKER_ID".into(),
            "e2e-worker".into(),
        ),
        (
            "FUNCTIONS_APP_ROOT_PATH".into(),
            std::env::temp_dir().display().to_string(),
        ),
        ("SCALEHOOK_CONFIG_TOML".into(), config_toml()),
        ("SCALEHOOK_WEBHOOK_SECRET".into(), SECRET.into()),
        ("SCALEHOOK_TABLE_ENDPOINT".into(), az.endpoint()),
        ("SCALEHOOK_TABLE_NAME".into(), "e2eledger".into()),
        ("SCALEHOOK_TABLE_ACCOUNT_KEY".into(), KEY.into()),
    ]);
    env
}

fn spawn(env: &[(String, String)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_handler"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start handler")
}

async fn start(env: &[(String, String)], port: u16) -> Handler {
    let mut child = spawn(env);
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let lines = stdout.clone();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
    let h = Handler {
        child,
        port,
        stdout,
    };
    let client = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            return h;
        }
        assert!(Instant::now() < until, "handler did not answer /healthz");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn job(action: &str, id: u64, runner: Option<&str>) -> Vec<u8> {
    // The capture's job times moved to now, as `scalehook replay` does: a job from 2021 is
    // refused as a replay.
    let now = scalehook_core::Clock::now(&scalehook_core::SystemClock);
    let body = scalehook_core::trace::restamp_job_times("workflow_job", FIXTURE.as_bytes(), now)
        .unwrap_or_else(|| FIXTURE.as_bytes().to_vec());
    let mut v: Value = serde_json::from_slice(&body).expect("fixture");
    v["action"] = json!(action);
    v["workflow_job"]["id"] = json!(id);
    v["workflow_job"]["labels"] = json!(["self-hosted", "Linux"]);
    v["workflow_job"]["runner_name"] = json!(runner);
    serde_json::to_vec(&v).expect("json")
}

/// A webhook request as the host forwards it (`enableForwardingHttpRequest`): GitHub's
/// method, headers and body, to `/api/webhook`.
async fn deliver(h: &Handler, delivery: &str, body: &[u8], secret: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/api/webhook", h.port))
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/0d1e2f3")
        .header("x-github-event", "workflow_job")
        .header("x-github-delivery", delivery)
        .header(
            "x-hub-signature-256",
            scalehook_core::signature::sign(secret.as_bytes(), body),
        )
        .body(body.to_vec())
        .send()
        .await
        .expect("webhook answer");
    let status = res.status().as_u16();
    let body = res.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// Environment variables, in order.
type Env = Vec<(String, String)>;

const TIMER_ENVELOPE: &str = r#"{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"2026-11-22T03:00:00+00:00","Next":"2026-11-22T03:05:00+00:00","LastUpdated":"2026-11-22T03:00:00+00:00"},"IsPastDue":false}},"Metadata":{"sys":{"MethodName":"reconcile","UtcNow":"2026-11-22T03:05:00.0123Z","RandGuid":"5a1c"}}}"#;

async fn timer(h: &Handler, from_host: bool) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/reconcile", h.port))
        .header("content-type", "application/json")
        .body(TIMER_ENVELOPE);
    if from_host {
        req = req
            .header(
                "x-azure-functions-invocationid",
                "0b6f3f1e-1d2c-4a7a-9f0e-7c1f2a3b4c5d",
            )
            .header("x-azure-functions-hostversion", "4.1036.1.23224")
            .header("user-agent", "Azure-Functions-Host/4.1036.1.23224");
    }
    let res = req.send().await.expect("timer answer");
    let status = res.status().as_u16();
    (status, res.json::<Value>().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_serves_webhooks_and_timers_like_the_host_calls_it() {
    let az = Azurite::start();
    let double = ArmDouble::start(0).await;
    let port = free_port();
    let h = start(&host_env(&double, &az, port), port).await;

    // A queued job: scale out from 0 to 1.
    let (status, body) = deliver(&h, "d-1", &job("queued", 101, None), SECRET).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "handled", "{body}");
    assert_eq!(double.capacity(), 1);

    // Another queued job, and a redelivery of the first: 2, not 3.
    assert_eq!(
        deliver(&h, "d-2", &job("queued", 102, None), SECRET)
            .await
            .0,
        200
    );
    assert_eq!(
        deliver(&h, "d-1", &job("queued", 101, None), SECRET)
            .await
            .0,
        200
    );
    assert_eq!(double.capacity(), 2);

    // A bad signature: 401, nothing changes.
    let (status, _) = deliver(&h, "d-x", &job("queued", 103, None), "not-the-secret").await;
    assert_eq!(status, 401);
    assert_eq!(double.capacity(), 2);

    // Job 101 starts on VM 0 (runner name contains its computer name); job 102 is
    // cancelled before it starts: one idle instance above target goes, and it is VM 1.
    let (status, _) = deliver(
        &h,
        "d-3",
        &job("in_progress", 101, Some("gh-runnervmss000000-a")),
        SECRET,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = deliver(&h, "d-4", &job("completed", 102, None), SECRET).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(double.capacity(), 1);
    let left: Vec<u32> = double.lock().vms.iter().map(|v| v.instance_id).collect();
    assert_eq!(left, vec![0], "the busy VM stays");

    // The timer path refuses callers that are not the host (issue #6251)...
    let (status, _) = timer(&h, false).await;
    assert_eq!(status, 403);
    // ...and answers the host's envelope with the host's shape.
    let (status, body) = timer(&h, true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Outputs"], json!({}));
    assert_eq!(body["ReturnValue"], Value::Null);
    let logs = body["Logs"].as_array().expect("Logs[]");
    assert!(
        logs.iter()
            .any(|l| l.as_str().is_some_and(|s| s.starts_with("reconcile ok"))),
        "{body}"
    );
    assert_eq!(double.capacity(), 1, "at target: running 1, queued 0");

    // ARM fails: the delivery answers 5xx (GitHub shows it failed), the ledger keeps
    // the job; the redelivery repairs capacity.
    double.lock().faults.extend([Fault::Server(500); 8]);
    let (status, body) = deliver(&h, "d-5", &job("queued", 104, None), SECRET).await;
    assert!(status >= 500, "{status} {body}");
    assert_eq!(double.capacity(), 1);
    double.lock().faults.clear();
    let (status, body) = deliver(&h, "d-5", &job("queued", 104, None), SECRET).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(double.capacity(), 2);

    // A failing reconcile makes the invocation fail visibly (non-2xx to the host).
    double.lock().faults.extend([Fault::Server(503); 8]);
    let (status, _) = timer(&h, true).await;
    assert_eq!(status, 500);
    double.lock().faults.clear();

    // Prometheus text on the handler's port.
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", h.port))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("scalehook_deliveries_total"), "{metrics}");

    // Logs: JSON lines, one per delivery, never the secret or the tokens.
    // The lines are written before each answer; the reader thread may lag a little.
    let delivery_lines = |lines: &[String]| -> Vec<Value> {
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "scalehook::delivery")
            .collect()
    };
    let until = Instant::now() + Duration::from_secs(10);
    let (lines, deliveries) = loop {
        let lines = h.stdout.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let deliveries = delivery_lines(&lines);
        if deliveries.len() >= 8 || Instant::now() > until {
            break (lines, deliveries);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(deliveries.len(), 8, "{lines:#?}");
    assert!(deliveries.iter().any(|d| d["outcome"] == "unauthorized"));
    for l in &lines {
        assert!(serde_json::from_str::<Value>(l).is_ok(), "not JSON: {l}");
        assert!(!l.contains(SECRET) && !l.contains("arm-token-") && !l.contains(KEY));
    }
    assert!(double.violations().is_empty(), "{:?}", double.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_errors_name_what_to_fix() {
    let double = ArmDouble::start(0).await;
    let base: Env = {
        let mut env = double.env();
        env.extend([
            (
                "FUNCTIONS_CUSTOMHANDLER_PORT".into(),
                free_port().to_string(),
            ),
            ("SCALEHOOK_CONFIG_TOML".into(), config_toml()),
            ("SCALEHOOK_WEBHOOK_SECRET".into(), SECRET.into()),
            (
                "SCALEHOOK_TABLE_ENDPOINT".into(),
                "http://127.0.0.1:9/devstoreaccount1".into(),
            ),
            ("SCALEHOOK_TABLE_ACCOUNT_KEY".into(), KEY.into()),
        ]);
        env
    };
    let fails_with = |change: &dyn Fn(&mut Env), needle: &str| {
        let mut env = base.clone();
        change(&mut env);
        let out = spawn(&env).wait_with_output().expect("handler ran");
        assert!(!out.status.success(), "should refuse to start ({needle})");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{needle:?} not in {err}");
        assert!(!err.contains(SECRET));
    };
    let set = |k: &'static str, v: String| {
        move |env: &mut Env| {
            env.retain(|(n, _)| n != k);
            env.push((k.to_string(), v.clone()));
        }
    };
    let unset = |k: &'static str| move |env: &mut Env| env.retain(|(n, _)| n != k);
    fails_with(
        &unset("SCALEHOOK_WEBHOOK_SECRET"),
        "SCALEHOOK_WEBHOOK_SECRET",
    );
    fails_with(
        &set(
            "SCALEHOOK_CONFIG_TOML",
            "[[pools]]\nname = \"local-one\"\nlabels = [\"x\"]\nmax = 1\n".into(),
        ),
        "pool \"local-one\": azure_vmss",
    );
    fails_with(&unset("SCALEHOOK_CONFIG_TOML"), "SCALEHOOK_CONFIG_TOML");
    fails_with(
        &unset("SCALEHOOK_TABLE_ENDPOINT"),
        "SCALEHOOK_TABLE_ENDPOINT",
    );
    fails_with(
        &unset("FUNCTIONS_CUSTOMHANDLER_PORT"),
        "FUNCTIONS_CUSTOMHANDLER_PORT",
    );
    fails_with(&unset("IDENTITY_ENDPOINT"), "managed identity");
    // A Key Vault reference the platform could not resolve reaches the handler as its text:
    // refused at start, naming the setting, never showing the reference.
    let unresolved =
        "@Microsoft.KeyVault(SecretUri=https://kv-scalehook.vault.azure.net/secrets/hook-secret/)";
    for setting in [
        "SCALEHOOK_WEBHOOK_SECRET",
        "SCALEHOOK_WEBHOOK_SECRET_PREVIOUS",
    ] {
        let mut env = base.clone();
        set(setting, unresolved.into())(&mut env);
        let out = spawn(&env).wait_with_output().expect("handler ran");
        assert!(
            !out.status.success(),
            "should refuse an unresolved {setting}"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{setting} holds an unresolved secret reference")),
            "{err}"
        );
        assert!(
            !err.contains("kv-scalehook") && !err.contains("hook-secret"),
            "{err}"
        );
        assert!(!err.contains(SECRET));
    }
}
