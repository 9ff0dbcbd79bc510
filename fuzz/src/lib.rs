//! The bodies of scalehook's fuzz targets, and the seed inputs made from `fixtures/`.
//!
//! Each body feeds bytes to one of the core's real entry points and asserts what must hold for
//! *any* input; a panic (an assertion or a bug) is the crash libFuzzer reports. The libFuzzer
//! binaries in `fuzz/fuzz_targets/` call these bodies, and so does the plain test
//! `crates/scalehook-core/tests/fuzz_corpus.rs`, over [`seeds`] and `fuzz/regressions/`, so
//! every `cargo test` replays them without the fuzzer.
//!
//! Input formats (the seeds show them):
//! - `signature`: `secret \n header-value \n body`
//! - `event`: `event-name \n body`
//! - `config`: TOML text
//! - `trace`: a JSON-lines trace (`payload_file` names resolve in `fixtures/github/`)
//! - `service`: requests separated by [`REQUEST_SEPARATOR`], each `METHOD \n header lines \n\n
//!   body`; a signature header of `sign` (or `sign-previous`) is replaced by the body's real
//!   signature under the current (or previous) secret, so the fuzzer gets past verification.

use async_trait::async_trait;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use scalehook_core::event::Event;
use scalehook_core::fleet::{Fleet, FleetError, FleetState, LocalFleet};
use scalehook_core::ledger::{Ledger, MemoryLedger, PoolLedger};
use scalehook_core::signature::{parse_header, sign, SignatureError, WebhookSecrets};
use scalehook_core::trace::{parse_rfc3339, parse_trace};
use scalehook_core::{Config, ManualClock, PoolConfig, Service};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// A target's body.
pub type Body = fn(&[u8]);

/// The fuzz targets, by name, as `cargo fuzz` knows them.
pub const TARGETS: [(&str, Body); 5] = [
    ("signature", signature),
    ("event", event),
    ("config", config),
    ("trace", trace),
    ("service", service),
];

/// Splits at the first newline: (line, rest).
fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// `WebhookSecrets::verify` and `signature::parse_header` against an independent HMAC.
pub fn signature(data: &[u8]) {
    let (secret, rest) = split_line(data);
    let (header, body) = split_line(rest);
    // Header values reach `verify` as text (`HeaderValue::to_str`); any UTF-8 is a superset.
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    let secrets = match WebhookSecrets::new([secret]) {
        Ok(s) => s,
        Err(_) => {
            assert!(secret.is_empty(), "only an empty secret may be refused");
            return;
        }
    };
    let expected = sign(secret, body);
    let expected_digest = parse_header(&expected).expect("sign() output parses");
    match (parse_header(header), secrets.verify(Some(header), body)) {
        (Err(parse), verdict) => {
            assert_eq!(parse, SignatureError::Malformed);
            assert_eq!(verdict, Err(SignatureError::Malformed));
        }
        (Ok(digest), Ok(())) => assert_eq!(digest, expected_digest, "accepted a wrong MAC"),
        (Ok(digest), Err(SignatureError::Mismatch)) => {
            assert_ne!(digest, expected_digest, "refused the right MAC")
        }
        (Ok(_), Err(e)) => panic!("header parsed, yet verify said {e}"),
    }
    assert_eq!(secrets.verify(None, body), Err(SignatureError::Missing));
    // The true signature verifies, alone and beside another secret (rotation), in either case.
    assert_eq!(secrets.verify(Some(&expected), body), Ok(()));
    assert_eq!(
        secrets.verify(
            Some(&expected.to_uppercase().replacen("SHA256=", "sha256=", 1)),
            body
        ),
        Ok(())
    );
    let rotated = WebhookSecrets::new([b"another secret".as_slice(), secret]).expect("two secrets");
    assert_eq!(rotated.verify(Some(&expected), body), Ok(()));
    // One flipped bit of the body never verifies.
    if let Some((first, tail)) = body.split_first() {
        let mut flipped = vec![first ^ 1];
        flipped.extend_from_slice(tail);
        assert_eq!(
            secrets.verify(Some(&expected), &flipped),
            Err(SignatureError::Mismatch)
        );
    }
}

/// `Event::parse`, dispatched on the event name as the service does.
pub fn event(data: &[u8]) {
    let (name, body) = split_line(data);
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    let parsed = Event::parse(name, body);
    match parsed {
        Ok(Event::Other(other)) => {
            assert_eq!(other, name);
            assert!(name != "ping" && name != "workflow_job");
        }
        Ok(Event::Ping(_)) => assert_eq!(name, "ping"),
        Ok(Event::WorkflowJob(job)) => {
            assert_eq!(name, "workflow_job");
            // What the service reads next must not panic either, whatever the payload.
            let _ = job.owner();
            let _ = job.action.as_str();
            if let Some(runner) = job.workflow_job.runner() {
                assert!(!runner.is_empty());
                assert_ne!(job.workflow_job.runner_id, Some(0));
            }
            let _ = service_config().route(&job.workflow_job.labels);
        }
        Err(e) => {
            assert!(name == "ping" || name == "workflow_job");
            assert!(e.to_string().contains(name));
        }
    }
}

/// `Config::from_toml`: whatever it accepts is a configuration the policy can use.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let c = match Config::from_toml(text) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(!c.pools.is_empty());
    assert!(c.max_body_bytes > 0);
    assert!(!c.cloud_timeout.is_zero() && c.cloud_timeout.as_millis() <= 9000);
    assert!(c.ledger.retention.as_secs() >= 3 * 24 * 3600);
    for (i, p) in c.pools.iter().enumerate() {
        assert!(p.min <= p.max && p.max >= 1 && p.runners_per_instance >= 1);
        assert!(!p.labels.is_empty());
        assert!(p.labels.iter().all(|l| *l == l.to_ascii_lowercase()));
        assert!(
            c.pools[..i].iter().all(|q| q.name != p.name),
            "duplicate pool"
        );
        // A job with exactly a pool's labels routes to that pool or an earlier one.
        let routed = c.route(&p.labels).expect("a pool's own labels route");
        let at = c.pools.iter().position(|q| q.name == routed.name);
        assert!(at.is_some_and(|at| at <= i));
        // The target stays in [min, max] for any account, even saturated counters.
        for account in [
            PoolLedger::default(),
            PoolLedger {
                queued: u32::MAX,
                running: u32::MAX,
                changes: u64::MAX,
            },
        ] {
            let t = scalehook_core::policy::target(p, &account, &FleetState::default());
            assert!(
                p.min <= t && t <= p.max,
                "target {t} outside [{}, {}]",
                p.min,
                p.max
            );
        }
    }
}

/// `trace::parse_trace` (and `parse_rfc3339` on every line).
pub fn trace(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `payload_file` reads a file: keep the fuzzer to plain names in the fixtures folder (a
    // path such as /dev/zero would read forever; that is the operator's own input, not an
    // attack surface). Names are checked after JSON unescaping, as the parser sees them.
    for line in text.lines() {
        // serde also fills a struct from an array, so `payload_file` may be the 4th element.
        let file = match serde_json::from_str(line.trim()) {
            Ok(serde_json::Value::Object(mut map)) => map.remove("payload_file"),
            Ok(serde_json::Value::Array(mut items)) if items.len() > 3 => {
                Some(items.swap_remove(3))
            }
            _ => None,
        };
        {
            if let Some(f) = file.filter(|f| !f.is_null()) {
                let plain = f.as_str().is_some_and(|f| {
                    !f.is_empty()
                        && !f.starts_with('.')
                        && f.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
                });
                if !plain {
                    return;
                }
            }
        }
        let _ = parse_rfc3339(line);
    }
    let lines = text.lines().count();
    match parse_trace(text, "fuzz.jsonl", &fixtures_dir().join("github")) {
        Ok(deliveries) => {
            let mut last = 0;
            for d in &deliveries {
                assert!(
                    d.line > last && d.line <= lines,
                    "line {} of {lines}",
                    d.line
                );
                last = d.line;
            }
        }
        Err(e) => {
            assert!(
                e.line >= 1 && e.line <= lines,
                "error line {} of {lines}",
                e.line
            );
            assert!(e.to_string().starts_with("fuzz.jsonl:"));
        }
    }
}

/// The secrets the `service` target's service holds.
pub const CURRENT_SECRET: &str = "fuzz-current-secret-5b1c0e";
pub const PREVIOUS_SECRET: &str = "fuzz-previous-secret-a77d2f";
/// Separates the requests of one `service` input.
pub const REQUEST_SEPARATOR: &[u8] = b"\n~~~\n";
const MAX_REQUESTS: usize = 64;

/// The `service` target's pools: the embedded default's shapes (standby, two runners per
/// instance, a floor) and a body limit a fuzz input can cross.
pub const SERVICE_CONFIG: &str = r#"
max_body_bytes = 32768

[[pools]]
name = "linux-x64"
labels = ["self-hosted", "linux", "x64"]
min = 0
max = 4
standby = 1

[[pools]]
name = "k8s"
labels = ["self-hosted", "k8s"]
min = 1
max = 3
standby = 0
runners_per_instance = 2
"#;

fn service_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| Config::from_toml(SERVICE_CONFIG).expect("service config"))
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

/// One request of a `service` input.
pub struct Request {
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Splits a `service` input into requests; lines a transport would refuse are dropped.
pub fn parse_requests(data: &[u8]) -> Vec<Request> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < MAX_REQUESTS {
        let (chunk, next) = match find(rest, REQUEST_SEPARATOR) {
            Some(i) => (&rest[..i], Some(&rest[i + REQUEST_SEPARATOR.len()..])),
            None => (rest, None),
        };
        if let Some(r) = parse_request(chunk) {
            out.push(r);
        }
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_request(chunk: &[u8]) -> Option<Request> {
    let (method, mut rest) = split_line(chunk);
    let method = Method::from_bytes(method).ok()?;
    let mut headers = HeaderMap::new();
    let mut sign_with = None;
    loop {
        let (line, next) = split_line(rest);
        rest = next;
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        let Ok(name) = HeaderName::from_bytes(line[..colon].trim_ascii()) else {
            continue;
        };
        if name == "x-hub-signature-256" && (value == b"sign" || value == b"sign-previous") {
            sign_with = Some(if value == b"sign" {
                CURRENT_SECRET
            } else {
                PREVIOUS_SECRET
            });
            continue;
        }
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    let body = rest.to_vec();
    if let Some(secret) = sign_with {
        let value = HeaderValue::from_str(&sign(secret.as_bytes(), &body)).ok()?;
        headers.insert("x-hub-signature-256", value);
    }
    Some(Request {
        method,
        headers,
        body,
    })
}

/// A fleet that checks, at every change, that no instance it loses runs a job by the
/// ledger's own account (the runner -> instance mapping the policy uses).
pub struct CheckedFleet {
    pub inner: LocalFleet,
    pub ledger: Arc<MemoryLedger>,
}

impl CheckedFleet {
    async fn guard<F>(&self, pool: &PoolConfig, change: F) -> Result<(), FleetError>
    where
        F: std::future::Future<Output = Result<(), FleetError>>,
    {
        let before = self.inner.describe(pool).await?;
        let busy = self
            .ledger
            .busy_runners(&pool.name)
            .await
            .expect("memory ledger");
        change.await?;
        let after = self.inner.describe(pool).await?;
        for gone in before
            .instances
            .iter()
            .filter(|i| !after.instances.iter().any(|a| a.id == i.id))
        {
            assert!(
                !busy.iter().any(|r| gone.runs(r)),
                "instance {} was removed while a runner on it was busy ({busy:?})",
                gone.id
            );
        }
        Ok(())
    }
}

#[async_trait]
impl Fleet for CheckedFleet {
    async fn describe(&self, pool: &PoolConfig) -> Result<FleetState, FleetError> {
        self.inner.describe(pool).await
    }
    async fn set_desired(&self, pool: &PoolConfig, desired: u32) -> Result<(), FleetError> {
        self.guard(pool, self.inner.set_desired(pool, desired))
            .await
    }
    async fn remove_instance(&self, pool: &PoolConfig, id: &str) -> Result<(), FleetError> {
        self.guard(pool, self.inner.remove_instance(pool, id)).await
    }
    async fn set_protection(
        &self,
        pool: &PoolConfig,
        ids: &[String],
        protected: bool,
    ) -> Result<(), FleetError> {
        self.inner.set_protection(pool, ids, protected).await
    }
}

/// `Service::handle` with any method, headers and body, then a reconcile far in the future.
pub fn service(data: &[u8]) {
    let requests = parse_requests(data);
    runtime().block_on(async {
        let ledger = Arc::new(MemoryLedger::new());
        let fleet = Arc::new(CheckedFleet {
            inner: LocalFleet::new(),
            ledger: ledger.clone(),
        });
        let clock = Arc::new(ManualClock::new(1_700_000_000));
        let secrets = WebhookSecrets::new([CURRENT_SECRET, PREVIOUS_SECRET]).expect("secrets");
        let service = Service::new(service_config().clone(), secrets, ledger, fleet)
            .with_clock(clock.clone())
            .with_log(scalehook_core::LogFormat::Off);
        for r in &requests {
            let before = service.summary().await.expect("summary");
            let answer = service.handle(&r.method, &r.headers, &r.body).await;
            let after = service.summary().await.expect("summary");
            assert!(
                matches!(answer.status, 200 | 202 | 400 | 401 | 405 | 413 | 415),
                "status {} ({}): local fleet and memory ledger never fail",
                answer.status,
                answer.body
            );
            let body: serde_json::Value =
                serde_json::from_str(&answer.body).expect("answer body is JSON");
            assert!(body["status"].is_string(), "{}", answer.body);
            assert!(
                !answer.body.contains(CURRENT_SECRET) && !answer.body.contains(PREVIOUS_SECRET)
            );
            if answer.status != 200 || body["status"] == "pong" {
                assert_eq!(before, after, "a refused or ignored delivery changed state");
            }
            clock.advance(1);
        }
        // Far past every time-to-live: every count drains, and capacity converges to the floor.
        clock.advance(30 * 24 * 3600);
        let report = service.reconcile().await;
        assert!(report.ok(), "{report:?}");
        for p in service.summary().await.expect("summary") {
            assert_eq!((p.queued, p.running), (0, 0), "{p:?}");
            let pool = service_config().pool(&p.name).expect("pool");
            let floor = pool
                .standby
                .div_ceil(pool.runners_per_instance)
                .clamp(pool.min, pool.max);
            assert_eq!(p.desired, floor, "{p:?}");
        }
        let metrics = service.metrics().render_prometheus();
        assert!(!metrics.contains(CURRENT_SECRET) && !metrics.contains(PREVIOUS_SECRET));
    });
}

/// The repository's `fixtures/` folder (found from this crate or the core's test crate).
pub fn fixtures_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("fixtures"))
        .find(|f| f.join("github").is_dir())
        .unwrap_or_else(|| here.join("../fixtures"))
}

/// One seed input.
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub data: Vec<u8>,
}

/// Seed inputs for every target, made from `fixtures/` (payloads, signature vectors,
/// traces, scenario configs) in each target's input format.
pub fn seeds(fixtures: &Path) -> std::io::Result<Vec<Seed>> {
    let mut out = Vec::new();
    let mut push =
        |target: &'static str, name: String, data: Vec<u8>| out.push(Seed { target, name, data });
    let joined = |parts: &[&[u8]]| parts.join(&b'\n');

    // Signature vectors: as published, and with the right MAC under the wrong secret.
    let github = fixtures.join("github");
    let vectors: serde_json::Value =
        serde_json::from_slice(&std::fs::read(github.join("signature-vectors.json"))?)?;
    let extra: serde_json::Value =
        serde_json::from_slice(&std::fs::read(github.join("signature-vectors.extra.json"))?)?;
    let all = vectors
        .as_array()
        .into_iter()
        .flatten()
        .chain(extra["negative_sha256"].as_array().into_iter().flatten());
    for (i, v) in all.enumerate() {
        let text = |k: &str| v[k].as_str().unwrap_or_default().as_bytes().to_vec();
        let (secret, payload) = (text("secret"), text("payload"));
        for key in ["signature_256", "signature_1"] {
            if v[key].is_string() {
                push(
                    "signature",
                    format!("vector-{i}-{key}"),
                    joined(&[&secret, &text(key), &payload]),
                );
            }
        }
        push(
            "signature",
            format!("vector-{i}-wrong-secret"),
            joined(&[b"wrong", &text("signature_256"), &payload]),
        );
    }

    // Payloads: as events, and as signed requests to the service.
    let mut payloads: Vec<(String, String, Vec<u8>)> = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&github)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    for path in names {
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let event = file.split('.').next().unwrap_or_default().to_string();
        if event == "ping" || event == "workflow_job" {
            payloads.push((file, event, std::fs::read(&path)?));
        }
    }
    for (file, event, body) in &payloads {
        push("event", file.clone(), joined(&[event.as_bytes(), body]));
        push(
            "service",
            file.clone(),
            request("POST", event, "sign", body),
        );
    }
    let (_, _, queued) = payloads
        .iter()
        .find(|(f, _, _)| f.starts_with("workflow_job.queued"))
        .cloned()
        .unwrap_or_default();
    push("event", "other-event".into(), b"push\n{}".to_vec());
    push(
        "service",
        "rotation-previous-secret".into(),
        request("POST", "workflow_job", "sign-previous", &queued),
    );
    push(
        "service",
        "bad-signature".into(),
        request(
            "POST",
            "workflow_job",
            &format!("sha256={}", "0".repeat(64)),
            &queued,
        ),
    );
    push(
        "service",
        "wrong-method".into(),
        request("GET", "ping", "sign", b"{}"),
    );
    push(
        "service",
        "form-encoded".into(),
        b"POST\ncontent-type: application/x-www-form-urlencoded\nx-github-event: ping\nx-hub-signature-256: sign\n\npayload=%7B%7D".to_vec(),
    );
    push(
        "service",
        "over-limit".into(),
        request("POST", "ping", "sign", &vec![b' '; 33 * 1024]),
    );

    // Traces: each scenario as a trace, and its deliveries as a run of signed requests.
    let traces = fixtures.join("traces");
    let mut trace_files = vec![traces.join("sim-small.jsonl"), traces.join("day/day.jsonl")];
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(traces.join("scenarios"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    scenarios.sort();
    for path in &scenarios {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.ends_with(".toml") {
            push("config", name, std::fs::read(path)?);
        } else if name.ends_with(".jsonl") {
            trace_files.push(path.clone());
        }
    }
    for path in trace_files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        // The day trace is 1 MB: its first 60 lines make a seed of useful size.
        let text = std::fs::read_to_string(&path)?;
        let text: String = text.lines().take(60).flat_map(|l| [l, "\n"]).collect();
        let Ok(deliveries) = parse_trace(&text, &name, &github) else {
            continue;
        };
        push("trace", name.clone(), text.clone().into_bytes());
        let requests: Vec<Vec<u8>> = deliveries
            .iter()
            .map(|d| request("POST", &d.event, "sign", &d.body))
            .collect();
        push("service", name, requests.join(REQUEST_SEPARATOR));
    }
    push(
        "trace",
        "payload-file".into(),
        b"{\"event\":\"ping\",\"payload_file\":\"ping.organization.octokit.json\",\"at\":\"2024-05-01T11:30:00.5+02:00\"}\n".to_vec(),
    );

    // Configurations: the embedded default, the service target's own, and one per fleet kind.
    push(
        "config",
        "embedded-default".into(),
        scalehook_core::config::EMBEDDED_DEFAULT.as_bytes().to_vec(),
    );
    push(
        "config",
        "service".into(),
        SERVICE_CONFIG.as_bytes().to_vec(),
    );
    push(
        "config",
        "clouds".into(),
        br#"cloud_timeout_ms = 5000
allowed_repositories = ["octo-org/app"]
allowed_organizations = ["Octo-Org"]

[ledger]
queued_ttl_secs = 3600
in_progress_ttl_secs = 7200
retention_secs = 345600

[[pools]]
name = "aws"
labels = ["self-hosted", "linux"]
max = 10
aws_asg = "github-runners"

[[pools]]
name = "azure"
labels = ["self-hosted", "windows"]
min = 1
max = 5
azure_vmss = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/runners"
"#
        .to_vec(),
    );
    Ok(out)
}

/// A `service` request in the target's input format.
fn request(method: &str, event: &str, signature: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method}\ncontent-type: application/json\nx-github-event: {event}\nx-github-delivery: seed\nx-hub-signature-256: {signature}\n\n"
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}
