//! The `bootstrap` binary end to end: the real process and the real `lambda_runtime`
//! loop, against a stand-in for the Lambda service's runtime API (a small HTTP server in
//! this test that hands out events and collects answers, as the Lambda service does), with
//! DynamoDB, Auto Scaling and SSM on moto.

mod common;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use common::*;
use serde_json::{json, Value};
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// What the function answered to one invocation.
#[derive(Debug)]
struct Reply {
    request_id: String,
    error: bool,
    /// The `Lambda-Runtime-Function-Error-Type` header (the runtime sends `Unhandled`).
    error_header: Option<String>,
    body: Value,
    at: Instant,
}

#[derive(Clone)]
struct Api {
    next: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, Value)>>>,
    replies: mpsc::UnboundedSender<Reply>,
}

/// The runtime API stand-in (the Lambda service's side of the runtime loop).
struct RuntimeApi {
    addr: SocketAddr,
    events: mpsc::UnboundedSender<(String, Value)>,
    replies: mpsc::UnboundedReceiver<Reply>,
    counter: u32,
}

async fn next(State(api): State<Api>) -> impl IntoResponse {
    let Some((id, event)) = api.next.lock().await.recv().await else {
        return (StatusCode::GONE, HeaderMap::new(), String::new());
    };
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() + 30_000)
        .unwrap_or(0);
    let mut h = HeaderMap::new();
    h.insert("lambda-runtime-aws-request-id", id.parse().expect("id"));
    h.insert(
        "lambda-runtime-deadline-ms",
        deadline.to_string().parse().expect("deadline"),
    );
    h.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:scalehook"
            .parse()
            .expect("arn"),
    );
    h.insert(
        "lambda-runtime-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
            .parse()
            .expect("trace"),
    );
    h.insert("content-type", "application/json".parse().expect("ct"));
    (StatusCode::OK, h, event.to_string())
}

fn reply(api: &Api, id: String, error: bool, headers: &HeaderMap, body: &str) -> StatusCode {
    let _ = api.replies.send(Reply {
        request_id: id,
        error,
        error_header: headers
            .get("lambda-runtime-function-error-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
        at: Instant::now(),
    });
    StatusCode::ACCEPTED
}

async fn response(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    reply(&api, id, false, &headers, &body)
}

async fn error(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    reply(&api, id, true, &headers, &body)
}

async fn init_error(State(api): State<Api>, headers: HeaderMap, body: String) -> StatusCode {
    reply(&api, "init".into(), true, &headers, &body)
}

impl RuntimeApi {
    async fn start() -> RuntimeApi {
        let (events, rx) = mpsc::unbounded_channel();
        let (replies_tx, replies) = mpsc::unbounded_channel();
        let api = Api {
            next: Arc::new(tokio::sync::Mutex::new(rx)),
            replies: replies_tx,
        };
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(api);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RuntimeApi {
            addr,
            events,
            replies,
            counter: 0,
        }
    }

    /// Queues one event and waits for the function's answer to it.
    async fn invoke(&mut self, event: Value) -> Reply {
        self.counter += 1;
        let id = format!("req-{:04}", self.counter);
        self.events.send((id.clone(), event)).expect("queue event");
        let r = tokio::time::timeout(Duration::from_secs(60), self.replies.recv())
            .await
            .expect("the function answered within 60 s")
            .expect("reply");
        assert_eq!(r.request_id, id);
        r
    }
}

/// The bootstrap under test: `SCALEHOOK_BOOTSTRAP` (e.g. the release build), else this
/// package's debug build.
fn bootstrap_path() -> String {
    std::env::var("SCALEHOOK_BOOTSTRAP")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_bootstrap").to_string())
}

/// The environment Lambda gives a function, plus scalehook's own.
fn lambda_env(api: SocketAddr, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("AWS_LAMBDA_RUNTIME_API", api.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", "scalehook".into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/11/22/[$LATEST]0123456789abcdef".into(),
        ),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/scalehook".into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_DEFAULT_REGION", REGION.into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_SESSION_TOKEN", "testing".into()),
        ("TZ", ":UTC".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

/// A running bootstrap with its stdout and stderr collected by two drain threads. What a test
/// reads is what the threads have copied so far: a line the process wrote may not be there
/// yet, so tests wait (bounded) for the lines they expect, or for the process to end.
struct Function {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    drains: [JoinHandle<()>; 2],
}

/// How long a test waits for output it expects (or for the process to end) before failing:
/// a bound for a hung process, not a claim about speed.
const OUTPUT_WAIT: Duration = Duration::from_secs(30);

fn drain(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(String::new()));
    let out = Arc::clone(&buf);
    let thread = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            out.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    (buf, thread)
}

/// The complete lines of `text`: a last line without its newline is still being written.
fn complete_lines(text: &str) -> Vec<&str> {
    match text.rfind('\n') {
        Some(end) => text[..end].lines().collect(),
        None => Vec::new(),
    }
}

impl Function {
    fn spawn(env: &[(String, String)]) -> Function {
        let mut child = Command::new(bootstrap_path())
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start bootstrap");
        let (stdout, out_thread) = drain(child.stdout.take().expect("stdout"));
        let (stderr, err_thread) = drain(child.stderr.take().expect("stderr"));
        Function {
            child,
            stdout,
            stderr,
            drains: [out_thread, err_thread],
        }
    }

    /// Waits, at most OUTPUT_WAIT, until stdout so far satisfies `expected`; returns it.
    async fn wait_for_stdout(&self, what: &str, expected: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + OUTPUT_WAIT;
        loop {
            let stdout = self.stdout();
            if expected(&stdout) {
                return stdout;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} on stdout after {OUTPUT_WAIT:?}: {stdout}\nstderr: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits for the process to exit by itself (start-up failures) and for the drain threads
    /// to reach the end of its output, so stdout and stderr are complete.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + OUTPUT_WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                if self.drains.iter().all(JoinHandle::is_finished) {
                    return status;
                }
            }
            assert!(
                Instant::now() < deadline,
                "bootstrap did not exit, or its output did not end"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Function URL event (payload format 2.0) carrying a GitHub delivery.
fn function_url_event(body: &[u8], headers: &http::HeaderMap, base64: bool) -> Value {
    let mut h = serde_json::Map::new();
    for (k, v) in headers {
        h.insert(k.as_str().to_string(), v.to_str().expect("ascii").into());
    }
    h.insert("user-agent".into(), "GitHub-Hookshot/c8f7262".into());
    h.insert("host".into(), "abc123.lambda-url.us-east-1.on.aws".into());
    let body = if base64 {
        base64::engine::general_purpose::STANDARD.encode(body)
    } else {
        String::from_utf8(body.to_vec()).expect("utf-8")
    };
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": h,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abc123",
            "domainName": "abc123.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abc123",
            "http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1",
                     "sourceIp": "140.82.115.10", "userAgent": "GitHub-Hookshot/c8f7262"},
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": "$default",
            "stage": "$default",
            "time": "22/Nov/2026:03:00:00 +0000",
            "timeEpoch": 1_795_316_400_000u64
        },
        "body": body,
        "isBase64Encoded": base64
    })
}

fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-22T03:05:00Z",
        "region": REGION,
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/scalehook-reconcile"],
        "detail": {}
    })
}

fn job_event(action: &str, job: u64, base64: bool) -> Value {
    let body = job_body(action, job, None);
    function_url_event(
        &body,
        &headers(&body, "workflow_job", &format!("d-{job}-{action}")),
        base64,
    )
}

fn http_body(reply: &Reply) -> Value {
    let text = reply.body["body"]
        .as_str()
        .expect("payload 2.0 response body");
    serde_json::from_str(text).expect("JSON answer")
}

const POOL_TOML: &str = "[[pools]]\nname = \"linux\"\nlabels = [\"self-hosted\", \"linux\", \"x64\"]\nmax = 4\naws_asg = \"runners\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_url_and_scheduled_events_through_the_runtime_loop() {
    let moto = Moto::start();
    let sdk = sdk(&moto.endpoint).await;
    create_asg(&sdk, "runners", 0, 4, 0).await;
    create_table(&sdk, "ledger").await;
    ssm_client(&sdk)
        .put_parameter()
        .name("/scalehook/secret")
        .value(format!("{SECRET}\nolder-secret"))
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("PutParameter");

    let mut api = RuntimeApi::start().await;
    let env = lambda_env(
        api.addr,
        &[
            ("AWS_ENDPOINT_URL", moto.endpoint.clone()),
            ("SCALEHOOK_CONFIG_TOML", POOL_TOML.into()),
            ("SCALEHOOK_DYNAMODB_TABLE", "ledger".into()),
            (
                "SCALEHOOK_WEBHOOK_SECRET_SSM_PARAMETER",
                "/scalehook/secret".into(),
            ),
        ],
    );
    let function = Function::spawn(&env);

    // A queued job, plain body: scale out to 1.
    let r = api.invoke(job_event("queued", 1, false)).await;
    assert!(!r.error, "{r:?}\n{}", function.stderr());
    assert_eq!(r.body["statusCode"], 200, "{r:?}");
    assert_eq!(r.body["headers"]["content-type"], "application/json");
    assert_eq!(r.body["isBase64Encoded"], false);
    let answer = http_body(&r);
    assert_eq!(
        (answer["action"].as_str(), answer["desired"].as_u64()),
        (Some("scale_out"), Some(1))
    );

    // Another, base64-encoded (verified over the decoded bytes): scale out to 2.
    let r = api.invoke(job_event("queued", 2, true)).await;
    assert_eq!(r.body["statusCode"], 200, "{r:?}");
    assert_eq!(http_body(&r)["desired"], 2);

    // Tampered signature: 401, nothing recorded.
    let body = job_body("queued", 3, None);
    let mut h = headers(&body, "workflow_job", "d-3");
    h.insert(
        "x-hub-signature-256",
        scalehook_core::signature::sign(b"wrong", &body)
            .parse()
            .expect("header"),
    );
    let r = api.invoke(function_url_event(&body, &h, true)).await;
    assert_eq!(r.body["statusCode"], 401, "{r:?}");

    // Undecodable base64: 400.
    let mut bad = job_event("queued", 4, true);
    bad["body"] = "%%% not base64 %%%".into();
    let r = api.invoke(bad).await;
    assert_eq!(r.body["statusCode"], 400, "{r:?}");

    // GET on the URL: 405 with Allow.
    let mut get = job_event("queued", 5, false);
    get["requestContext"]["http"]["method"] = "GET".into();
    let r = api.invoke(get).await;
    assert_eq!(r.body["statusCode"], 405, "{r:?}");
    assert_eq!(r.body["headers"]["allow"], "POST");

    // The scheduled reconcile pass.
    let r = api.invoke(scheduled_event()).await;
    assert!(!r.error, "{r:?}");
    assert_eq!(r.body["status"], "reconciled", "{r:?}");
    assert_eq!(r.body["report"]["pools"][0]["after"], 2, "{r:?}");

    // Anything else: an invocation error that says what arrived, not what it held.
    let r = api
        .invoke(json!({"Records": [{"body": "private-payload"}], "source": "aws.sqs"}))
        .await;
    assert!(r.error, "{r:?}");
    assert_eq!(r.body["errorType"], "Scalehook.UnsupportedEvent", "{r:?}");
    assert!(r.error_header.is_some(), "{r:?}");
    let message = r.body["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("Records") && !message.contains("private-payload"),
        "{message}"
    );

    assert_eq!(group(&sdk, "runners").await.desired, 2);

    // stdout holds only EMF lines; nothing anywhere holds the secret. The lines are written
    // before each answer, but the drain thread may not have copied the last ones yet: wait
    // for them.
    let stdout = function
        .wait_for_stdout("EMF line for each delivery and the reconcile", |out| {
            complete_lines(out).len() >= 6 && out.contains("\"Outcome\":\"unauthorized\"")
        })
        .await;
    let lines = complete_lines(&stdout);
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["_aws"]["CloudWatchMetrics"].is_array(), "{line}");
    }
    assert!(stdout.contains("\"Outcome\":\"unauthorized\""), "{stdout}");
    let stderr = function.stderr();
    for text in [&stdout, &stderr] {
        assert!(!text.contains(SECRET) && !text.contains("older-secret"));
    }
    for line in complete_lines(&stderr) {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("stderr line not JSON ({e}): {line}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reconcile_is_an_invocation_error() {
    // No moto at all: the ledger and the group are unreachable.
    let mut api = RuntimeApi::start().await;
    let env = lambda_env(
        api.addr,
        &[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9".into()),
            ("SCALEHOOK_CONFIG_TOML", POOL_TOML.into()),
            ("SCALEHOOK_DYNAMODB_TABLE", "ledger".into()),
            ("SCALEHOOK_WEBHOOK_SECRET", SECRET.into()),
        ],
    );
    let _function = Function::spawn(&env);
    let r = api.invoke(scheduled_event()).await;
    assert!(r.error, "{r:?}");
    assert_eq!(r.body["errorType"], "Scalehook.ReconcileFailed", "{r:?}");
    // A delivery in the same state is a 5xx GitHub shows as failed (and can redeliver).
    let r = api.invoke(job_event("queued", 1, false)).await;
    assert_eq!(r.body["statusCode"], 503, "{r:?}");
}

#[test]
fn start_up_errors_name_what_is_wrong() {
    let api: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let cases: [(&[(&str, String)], &str); 5] = [
        (
            &[
                (
                    "SCALEHOOK_CONFIG_TOML",
                    "[[pools]]\nname = \"laptop\"\nlabels = [\"x\"]\nmax = 1\n".into(),
                ),
                ("SCALEHOOK_DYNAMODB_TABLE", "t".into()),
                ("SCALEHOOK_WEBHOOK_SECRET", SECRET.into()),
            ],
            "pool \\\"laptop\\\" has no aws_asg",
        ),
        (
            &[
                ("SCALEHOOK_CONFIG_TOML", POOL_TOML.into()),
                ("SCALEHOOK_DYNAMODB_TABLE", "t".into()),
            ],
            "no webhook secret configured",
        ),
        (
            &[
                ("SCALEHOOK_DYNAMODB_TABLE", "t".into()),
                ("SCALEHOOK_WEBHOOK_SECRET", SECRET.into()),
            ],
            "SCALEHOOK_CONFIG_TOML is not set",
        ),
        // A secret that is a platform reference nobody resolved: refused, named, not shown.
        (
            &[
                ("SCALEHOOK_CONFIG_TOML", POOL_TOML.into()),
                ("SCALEHOOK_DYNAMODB_TABLE", "t".into()),
                ("SCALEHOOK_WEBHOOK_SECRET", UNRESOLVED_KV.into()),
            ],
            "SCALEHOOK_WEBHOOK_SECRET holds an unresolved secret reference",
        ),
        (
            &[
                ("SCALEHOOK_CONFIG_TOML", POOL_TOML.into()),
                ("SCALEHOOK_DYNAMODB_TABLE", "t".into()),
                ("SCALEHOOK_WEBHOOK_SECRET", SECRET.into()),
                ("SCALEHOOK_WEBHOOK_SECRET_PREVIOUS", UNRESOLVED_CFN.into()),
            ],
            "SCALEHOOK_WEBHOOK_SECRET_PREVIOUS holds an unresolved secret reference",
        ),
    ];
    for (extra, expected) in cases {
        let mut f = Function::spawn(&lambda_env(api, extra));
        let status = f.wait_exit();
        assert!(!status.success());
        let stderr = f.stderr();
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in: {stderr}"
        );
        assert!(!stderr.contains(SECRET));
        assert!(
            !stderr.contains("kv-hook") && !stderr.contains("cfn-hook"),
            "{stderr}"
        );
    }
}

const UNRESOLVED_KV: &str =
    "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/kv-hook/)";
const UNRESOLVED_CFN: &str = "{{resolve:secretsmanager:cfn-hook:SecretString}}";

/// Cold start: process start to the first answered event (a signed `ping`, which needs no
/// AWS call), through the runtime loop. Not a test of timing: it prints the figures.
/// `make aws-cold-start` runs it against the release build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored (make aws-cold-start)"]
async fn cold_start_measurement() {
    let runs: usize = std::env::var("SCALEHOOK_COLD_START_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let mut api = RuntimeApi::start().await;
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let event = function_url_event(body, &headers(body, "ping", "d-ping"), false);
    let mut millis = Vec::with_capacity(runs);
    for _ in 0..runs {
        let env = lambda_env(
            api.addr,
            &[
                ("SCALEHOOK_CONFIG_TOML", POOL_TOML.into()),
                ("SCALEHOOK_DYNAMODB_TABLE", "ledger".into()),
                ("SCALEHOOK_WEBHOOK_SECRET", SECRET.into()),
            ],
        );
        // Queue the event first so the function's first poll finds it.
        api.counter += 1;
        let id = format!("req-{:04}", api.counter);
        api.events.send((id, event.clone())).expect("queue");
        let started = Instant::now();
        let f = Function::spawn(&env);
        let r = tokio::time::timeout(Duration::from_secs(30), api.replies.recv())
            .await
            .expect("answer")
            .expect("reply");
        assert_eq!(r.body["statusCode"], 200, "{r:?} {}", f.stderr());
        millis.push(r.at.duration_since(started).as_secs_f64() * 1000.0);
        drop(f);
    }
    millis.sort_by(|a, b| a.total_cmp(b));
    println!(
        "cold start of {} over {runs} runs: median {:.1} ms, min {:.1} ms, max {:.1} ms",
        bootstrap_path(),
        millis[runs / 2],
        millis[0],
        millis[runs - 1]
    );
}
