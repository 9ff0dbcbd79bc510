//! Round trips on the path of one delivery (`make bench-round-trips`; ignored by `make test`):
//! the real service over `TableLedger` on Azurite and `VmssFleet` on the ARM double, with a
//! recording reverse proxy in front of each (the clients are the handler's own
//! `app::http_client()`, pointed at the proxies), which notes every request's start and end.
//! Per job, four deliveries in turn: a new queued job, the same queued delivery again (a
//! duplicate), in_progress on the VM it scaled out, completed. Each delivery is handled by a
//! new `Service` (another process: no in-process memory of earlier passes; the managed
//! identity token is cached per `ManagedIdentity`, which one Functions host keeps across
//! invocations, so it is shared) and, in a second round, all by one `Service`. Each delivery
//! prints one `SCALEHOOK-BENCH {json}` line with its calls in order (name, start and end in
//! µs from the delivery's start); `bench/measure.py` finds the longest chain of
//! non-overlapping calls and renders bench/RESULTS.md.
//!
//! With `SCALEHOOK_BENCH_LATENCY=1` (`make bench-answer-times`) a [`FaultProxy`] behind each
//! recording proxy delays every request by the service's round trip ([`TABLE_LATENCY`],
//! [`ARM_LATENCY`], operation reads included), no faults; the lines are then the
//! `answer-times` bench, `SCALEHOOK_BENCH_JOBS` jobs per mode (default 3). That run also has
//! the GitHub App (`GitHubApp` against the OpenAPI-checked GitHub double, through a proxy
//! adding [`GITHUB_LATENCY`]; a new `Service` gets a new App, so it mints its own token), and
//! the VM's runner registered in the double (busy while the job runs, idle when it
//! completes), so the completed delivery reads and deregisters it before the removal. Its
//! requests, timed by that proxy, are among the calls as `gh:<method> <resource>`.

mod common;
#[path = "../../scalehook-core/tests/model_support/fault_proxy.rs"]
mod fault_proxy;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::Response;
use base64::Engine;
use common::arm_double::{ArmDouble, VMSS_ID};
use common::azurite::{Azurite, ACCOUNT, KEY};
use fault_proxy::{FaultProxy, Flavor};
use http::header;
use scalehook_azure::{
    ArmBudget, ArmClient, ManagedIdentity, TableAuth, TableClient, TableLedger, VmssFleet,
};
use scalehook_core::signature::sign;
use scalehook_core::{Config, LogFormat, Service, WebhookSecrets};
use scalehook_github::{AppKey, Budget, GitHubApp, APP_KEY_ENV};
use scalehook_github_double::{GitHubDouble, RunnerState, TEST_APP_KEY};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "round-trips-secret";

/// A Table Storage request's round trip from a Functions host in the same region.
const TABLE_LATENCY: Duration = Duration::from_millis(12);
/// An ARM request's (reads and accepted writes alike; a control plane: ~300 ms).
const ARM_LATENCY: Duration = Duration::from_millis(300);
/// A GitHub REST request's (api.github.com from a cloud region: a few hundred ms).
const GITHUB_LATENCY: Duration = Duration::from_millis(250);

/// Whether this run models cloud latencies, and how many jobs per mode it delivers.
fn latency_model() -> (bool, u64) {
    let on = std::env::var("SCALEHOOK_BENCH_LATENCY").is_ok_and(|v| v == "1");
    let jobs = std::env::var("SCALEHOOK_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    (on, jobs)
}

/// `origin` (`http://127.0.0.1:<port>`), or a proxy in front of it that adds `latency`.
async fn delayed(origin: &str, flavor: Flavor, latency: Option<Duration>) -> String {
    let Some(latency) = latency else {
        return origin.to_string();
    };
    let upstream = origin
        .trim_start_matches("http://")
        .parse()
        .expect("a loopback address");
    let proxy = FaultProxy::start(upstream, flavor, 0, 1).await;
    proxy.set_latency(latency);
    proxy.endpoint
}

#[derive(Debug, Clone)]
struct Call {
    name: String,
    start: Instant,
    end: Instant,
}

type Log = Arc<Mutex<Vec<Call>>>;

/// A reverse proxy to `upstream` that records each request; links in answers that point at
/// `links` (ARM's `nextLink`, `Azure-AsyncOperation`) are rewritten to the proxy.
struct Proxy {
    upstream: String,
    links: String,
    base: String,
    kind: &'static str,
    client: reqwest::Client,
    log: Log,
}

async fn start_proxy(upstream: &str, links: &str, kind: &'static str, log: Log) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let proxy = Arc::new(Proxy {
        upstream: upstream.trim_end_matches('/').to_string(),
        links: links.trim_end_matches('/').to_string(),
        base: base.clone(),
        kind,
        client: reqwest::Client::new(),
        log,
    });
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

async fn forward(
    State(p): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let start = Instant::now();
    let path = uri.path_and_query().map_or("/", |x| x.as_str());
    let mut req = p
        .client
        .request(method.clone(), format!("{}{path}", p.upstream));
    for (k, v) in &headers {
        if ![header::HOST, header::CONTENT_LENGTH, header::CONNECTION].contains(k) {
            req = req.header(k, v);
        }
    }
    let name = call_name(p.kind, &method, &uri, &headers, &body);
    let (status, out_headers, out_body) = match req.body(body).send().await {
        Ok(res) => {
            let status = res.status();
            let h = res.headers().clone();
            let b = res.bytes().await.unwrap_or_default();
            (status, h, b)
        }
        Err(e) => (
            http::StatusCode::BAD_GATEWAY,
            HeaderMap::new(),
            Bytes::from(e.to_string()),
        ),
    };
    p.log.lock().unwrap_or_else(|e| e.into_inner()).push(Call {
        name,
        start,
        end: Instant::now(),
    });
    let rewrite = |s: &str| s.replace(&p.links, &p.base);
    let mut res = Response::builder().status(status);
    for (k, v) in &out_headers {
        if [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::CONNECTION,
        ]
        .contains(k)
        {
            continue;
        }
        let v = match v.to_str() {
            Ok(s) if s.contains(&p.links) => {
                HeaderValue::from_str(&rewrite(s)).unwrap_or_else(|_| v.clone())
            }
            _ => v.clone(),
        };
        res = res.header(k, v);
    }
    let out_body = match std::str::from_utf8(&out_body) {
        Ok(s) if s.contains(&p.links) => Bytes::from(rewrite(s)),
        _ => out_body,
    };
    res.body(Body::from(out_body)).expect("response")
}

/// The kind of entity a partition key names (`job-1` → job, `pool-linux` → pool, `lease`).
fn pk_kind(pk: &str) -> &str {
    pk.split('-').next().unwrap_or(pk)
}

/// `table:GetEntity(job)`, `table:Query(pool counters)`, `arm:PATCH vmss`, `msi:token`, ...
fn call_name(kind: &str, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> String {
    let path = percent_encoding::percent_decode_str(uri.path()).decode_utf8_lossy();
    let query = percent_encoding::percent_decode_str(uri.query().unwrap_or_default())
        .decode_utf8_lossy()
        .replace('+', " ");
    if kind == "arm" {
        if path.ends_with("/msi/token") {
            return "msi:token".into();
        }
        let what = if path.contains("/operations/") {
            "operation"
        } else if path.ends_with("/virtualMachines") {
            "virtualMachines"
        } else if path.ends_with(VMSS_ID) {
            "vmss"
        } else {
            path.rsplit('/').next().unwrap_or_default()
        };
        return format!("arm:{method} {what}");
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    let quoted = |text: &str, key: &str| -> Option<String> {
        let at = text.find(key)? + key.len();
        Some(
            text[at..]
                .split('\'')
                .next()
                .unwrap_or_default()
                .to_string(),
        )
    };
    if last == "$batch" {
        let text = String::from_utf8_lossy(body);
        // Entities in the URL (updates, deletes) or in the JSON body (inserts).
        let pk = quoted(&text, "PartitionKey='")
            .or_else(|| quoted(&text.replace('"', "'"), "'PartitionKey':'"))
            .map_or_else(String::new, |pk| pk_kind(&pk).to_string());
        return format!("table:Batch({pk})");
    }
    if let Some(pk) = quoted(last, "PartitionKey='") {
        let op = match method.as_str() {
            "GET" => "GetEntity",
            "PUT" if headers.contains_key(header::IF_MATCH) => "Replace",
            "PUT" => "Upsert",
            "MERGE" => "Merge",
            "DELETE" => "Delete",
            other => other,
        };
        return format!("table:{op}({})", pk_kind(&pk));
    }
    if let Some(pk) = quoted(&query, "PartitionKey eq '") {
        let rows = if query.contains("RowKey ge 'c-'") {
            " counters"
        } else if query.contains("RowKey ge 'm-'") {
            " markers"
        } else {
            ""
        };
        return format!("table:Query({}{rows})", pk_kind(&pk));
    }
    if method == Method::POST && !last.is_empty() {
        let text = String::from_utf8_lossy(body);
        let pk = text
            .split(r#""PartitionKey":""#)
            .nth(1)
            .map(|s| s.split('"').next().unwrap_or_default().to_string())
            .unwrap_or_default();
        return format!("table:Insert({})", pk_kind(&pk));
    }
    format!("table:{method} {last}")
}

/// The pool, and with `github` (a `[github]` section) the App.
fn config(github: &str) -> Config {
    Config::from_toml(&format!(
        "cloud_timeout_ms = 8000\n[[pools]]\nname = \"linux\"\nlabels = [\"self-hosted\", \"linux\"]\n\
         min = 0\nmax = 10\nazure_vmss = \"{VMSS_ID}\"\n\n{github}"
    ))
    .expect("config")
}

async fn deliver(
    service: &Service,
    action: &str,
    job: u64,
    runner: Option<&str>,
) -> (u16, String, Option<&'static str>) {
    let body = serde_json::json!({
        "action": action,
        "workflow_job": {"id": job, "run_id": 7, "labels": ["self-hosted", "linux"],
                         "runner_name": runner, "runner_id": runner.map(|_| 11)},
        "repository": {"full_name": "octo-org/app", "owner": {"login": "octo-org"}}
    })
    .to_string()
    .into_bytes();
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-github-event", HeaderValue::from_static("workflow_job"));
    h.insert(
        "x-github-delivery",
        HeaderValue::from_str(&format!("rt-{job}-{action}")).expect("id"),
    );
    h.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&sign(SECRET.as_bytes(), &body)).expect("sig"),
    );
    let a = service.handle(&Method::POST, &h, &body).await;
    (a.status, a.body, a.report.decision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: make bench-round-trips"]
async fn round_trips_per_delivery_on_azurite_and_the_arm_double() {
    let az = Azurite::start();
    let double = ArmDouble::start(0).await;
    let log: Log = Arc::default();
    // Azurite's endpoint is path-style (`http://127.0.0.1:<port>/devstoreaccount1`): the
    // proxy forwards paths as they are, so the shared-key signature still matches.
    let az_base = az.endpoint();
    let az_root = az_base.trim_end_matches(&format!("/{ACCOUNT}"));
    let (latency, jobs) = latency_model();
    let bench = if latency {
        "answer-times"
    } else {
        "round-trips"
    };
    let table_upstream = delayed(
        az_root,
        Flavor::TableStorage,
        latency.then_some(TABLE_LATENCY),
    )
    .await;
    let arm_upstream = delayed(&double.base, Flavor::Plain, latency.then_some(ARM_LATENCY)).await;
    // With latencies, the App against the GitHub double behind its own delaying proxy.
    let github = if latency {
        let double = tokio::task::spawn_blocking(GitHubDouble::start)
            .await
            .expect("the GitHub double starts");
        let proxy = FaultProxy::start(
            double
                .base_url()
                .trim_start_matches("http://")
                .parse()
                .expect("a loopback address"),
            Flavor::Plain,
            0,
            1,
        )
        .await;
        proxy.set_latency(GITHUB_LATENCY);
        let toml = double
            .config_toml("octo-org")
            .replace(double.base_url(), &proxy.endpoint);
        Some((double, proxy, toml))
    } else {
        None
    };
    let github_toml = github.as_ref().map_or("", |(_, _, toml)| toml.as_str());
    let table_proxy = start_proxy(&table_upstream, az_root, "table", log.clone()).await;
    let arm_proxy = start_proxy(&arm_upstream, &double.base, "arm", log.clone()).await;
    let env: HashMap<String, String> = double
        .env()
        .into_iter()
        .map(|(k, v)| (k, v.replace(&double.base, &arm_proxy)))
        .collect();
    let http = scalehook_azure::app::http_client().expect("client");
    let identity = Arc::new(
        ManagedIdentity::from_lookup(http.clone(), |k| env.get(k).cloned()).expect("identity"),
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .expect("key");
    let table_client = || {
        TableClient::new(
            http.clone(),
            &format!("{table_proxy}/{ACCOUNT}"),
            "roundtrips",
            TableAuth::SharedKey {
                account: ACCOUNT.into(),
                key: key.clone(),
            },
        )
        .expect("table client")
    };
    table_client().ensure_table().await.expect("create table");
    let new_service = || {
        let arm = ArmClient::new(
            http.clone(),
            &env["SCALEHOOK_ARM_ENDPOINT"],
            identity.clone(),
            ArmBudget::default(),
        )
        .expect("arm client");
        let config = config(github_toml);
        let service = Service::new(
            config.clone(),
            WebhookSecrets::new([SECRET]).expect("secret"),
            Arc::new(TableLedger::new(table_client())),
            Arc::new(VmssFleet::new(arm)),
        )
        .with_log(LogFormat::Off);
        match &config.github {
            Some(g) => service.with_github(Arc::new(GitHubApp::new(
                g,
                AppKey::from_pem(TEST_APP_KEY, APP_KEY_ENV).expect("test key"),
                Budget::default(),
            ))),
            None => service,
        }
    };
    // Warm up: the table exists, the identity token is cached, connections are open.
    let warm = new_service();
    assert_eq!(deliver(&warm, "queued", 1, None).await.0, 200);
    // With the App, the VM's runner registered, so the completed removes it as without.
    let vm = double.lock().vms.last().map(|vm| vm.computer_name.clone());
    let mut warm_runner = None;
    if let (Some((gh, _, _)), Some(vm)) = (&github, vm) {
        let name = format!("linux-{vm}");
        gh.add_runner("octo-org", &name, RunnerState::Idle);
        warm_runner = Some(name);
    }
    let (status, body, decision) = deliver(&warm, "completed", 1, warm_runner.as_deref()).await;
    assert_eq!((status, decision), (200, Some("remove_idle")), "{body}");
    log.lock().unwrap_or_else(|e| e.into_inner()).clear();
    if let Some((_, proxy, _)) = &github {
        proxy.take_exchanges();
    }

    let shared = new_service();
    let mut next_job = 1_000;
    for mode in ["own process", "one warm process"] {
        for _ in 0..jobs {
            next_job += 1;
            let job = next_job;
            let mut runner = None;
            for (kind, action) in [
                ("queued (new job)", "queued"),
                ("queued (duplicate)", "queued"),
                ("in_progress", "in_progress"),
                ("completed", "completed"),
            ] {
                if action == "in_progress" {
                    // The job runs on the VM its queued delivery scaled out.
                    let vm = double.lock().vms.last().map(|vm| vm.computer_name.clone());
                    runner = vm.as_ref().map(|vm| format!("{vm}-1"));
                    if let (Some((gh, _, _)), Some(vm)) = (&github, vm) {
                        // With the App, the naming rule's name (`<pool>-<VM>`), busy.
                        let name = format!("linux-{vm}");
                        gh.add_runner("octo-org", &name, RunnerState::Busy);
                        runner = Some(name);
                    }
                }
                if let (Some((gh, _, _)), Some(name), "completed") = (&github, &runner, action) {
                    gh.set_busy(name, false);
                }
                let fresh;
                let service = if mode == "own process" {
                    fresh = new_service();
                    &fresh
                } else {
                    &shared
                };
                log.lock().unwrap_or_else(|e| e.into_inner()).clear();
                let started = Instant::now();
                let (status, body, decision) =
                    deliver(service, action, job, runner.as_deref()).await;
                let total = started.elapsed();
                assert!(status < 500, "{kind}: {status} {body}");
                let mut calls = std::mem::take(&mut *log.lock().unwrap_or_else(|e| e.into_inner()));
                if let Some((_, proxy, _)) = &github {
                    calls.extend(proxy.take_exchanges().into_iter().map(|e| Call {
                        name: format!("gh:{}", e.name),
                        start: e.start,
                        end: e.end,
                    }));
                }
                calls.sort_by_key(|c| c.start);
                let calls: Vec<serde_json::Value> = calls
                    .into_iter()
                    .map(|c| {
                        serde_json::json!({
                            "name": c.name,
                            "start_us": c.start.saturating_duration_since(started).as_micros() as u64,
                            "end_us": c.end.saturating_duration_since(started).as_micros() as u64,
                        })
                    })
                    .collect();
                println!(
                    "SCALEHOOK-BENCH {}",
                    serde_json::json!({
                        "bench": bench,
                        "cloud": "azure",
                        "backends": "Table Storage on Azurite, VMSS on the ARM double",
                        "latency_ms": latency.then(|| serde_json::json!({
                            "Table Storage": TABLE_LATENCY.as_millis() as u64,
                            "ARM": ARM_LATENCY.as_millis() as u64,
                            "GitHub": GITHUB_LATENCY.as_millis() as u64,
                        })),
                        "github_app": github.is_some(),
                        "mode": mode,
                        "kind": kind,
                        "job": job,
                        "status": status,
                        "decision": decision,
                        "total_us": total.as_micros() as u64,
                        "calls": calls,
                    })
                );
            }
        }
    }
    assert!(double.violations().is_empty(), "{:?}", double.violations());
    if let Some((gh, _, _)) = &github {
        assert!(gh.violations().is_empty(), "{:?}", gh.violations());
    }
}
