//! Round trips on the path of one delivery (`make bench-round-trips`; ignored by `make test`):
//! the real service over `DynamoLedger` on moto and `AsgFleet` on moto's Auto Scaling, each
//! SDK client with an interceptor that records every HTTP attempt's start and end. Per job,
//! four deliveries in turn: a new queued job, the same queued delivery again (a duplicate),
//! in_progress on the instance it scaled out, completed. Each delivery is handled by a new
//! `Service` (another process: no in-process memory of earlier passes, as a delivery landing
//! on another Lambda execution environment) and, in a second round, all by one `Service` (a
//! warm environment). Each delivery prints one `SCALEHOOK-BENCH {json}` line with its calls
//! in order (name, start and end in µs from the delivery's start); `bench/measure.py` orders
//! them, finds the longest chain of non-overlapping calls and renders bench/RESULTS.md.
//!
//! With `SCALEHOOK_BENCH_LATENCY=1` (`make bench-answer-times`) each client goes through a
//! [`FaultProxy`] in front of moto that delays every request by the service's round trip
//! ([`DYNAMODB_LATENCY`], [`AUTO_SCALING_LATENCY`]), no faults; the lines are then the
//! `answer-times` bench, `SCALEHOOK_BENCH_JOBS` jobs per mode (default 3). That run also has
//! the GitHub App (`GitHubApp` against the OpenAPI-checked GitHub double, through a proxy
//! adding [`GITHUB_LATENCY`]; a new `Service` gets a new App, so it mints its own token), and
//! the instance's runner registered in the double (busy while the job runs, idle when it
//! completes), so the completed delivery reads and deregisters it before the removal. Its
//! requests, timed by that proxy, are among the calls as `gh:<method> <resource>`.

mod common;
#[path = "../../scalehook-core/tests/model_support/fault_proxy.rs"]
mod fault_proxy;

use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use common::{create_asg, create_table, deliver, group, sdk, Moto, SECRET};
use fault_proxy::{FaultProxy, Flavor};
use scalehook_aws::{AsgFleet, DynamoLedger};
use scalehook_core::{Config, LogFormat, Service, WebhookSecrets};
use scalehook_github::{AppKey, Budget, GitHubApp, APP_KEY_ENV};
use scalehook_github_double::{GitHubDouble, RunnerState, TEST_APP_KEY};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TABLE: &str = "round-trips";
const ASG: &str = "round-trips";

/// A DynamoDB request's round trip from Lambda in the same region (single-digit ms).
const DYNAMODB_LATENCY: Duration = Duration::from_millis(6);
/// An Auto Scaling API call's (a control-plane API: 100-200 ms).
const AUTO_SCALING_LATENCY: Duration = Duration::from_millis(120);
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

/// The endpoint a client of `service` uses: moto's, or a proxy's that adds `latency`.
async fn endpoint(moto: &Moto, flavor: Flavor, latency: Option<Duration>) -> String {
    let Some(latency) = latency else {
        return moto.endpoint.clone();
    };
    let upstream = format!("127.0.0.1:{}", moto.port)
        .parse()
        .expect("moto address");
    let proxy = FaultProxy::start(upstream, flavor, 0, 1).await;
    proxy.set_latency(latency);
    proxy.endpoint
}

/// One HTTP attempt: its name and when it started and ended.
#[derive(Debug, Clone)]
struct Call {
    name: String,
    start: Instant,
    end: Option<Instant>,
}

/// Records every attempt of every client it is installed on.
#[derive(Debug, Default, Clone)]
struct Recorder(Arc<Mutex<Vec<Call>>>);

/// The index of this attempt's `Call`, kept in the attempt's config bag until it ends.
#[derive(Debug, Clone, Copy)]
struct Slot(usize);

impl Storable for Slot {
    type Storer = StoreReplace<Self>;
}

impl Recorder {
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// `ddb:Query(pool)`: the service, the operation and, for DynamoDB, the kinds of item the
/// request names (the `<kind>#` prefix of every `pk`-like string value: job, pool, lease,
/// cursor), so a lease take and a job write tell apart.
fn call_name(meta: Option<&Metadata>, body: Option<&[u8]>) -> String {
    let (service, op) = meta.map_or(("?", "?"), |m| (m.service(), m.name()));
    let service = match service {
        "DynamoDB" => "ddb",
        "AutoScaling" | "Auto Scaling" => "asg",
        other => other,
    };
    let mut kinds: Vec<String> = Vec::new();
    if service == "ddb" {
        let text = body.map(String::from_utf8_lossy).unwrap_or_default();
        for part in text.split(r#""S":""#).skip(1) {
            let value = part.split('"').next().unwrap_or_default();
            if let Some((kind, _)) = value.split_once('#') {
                if !kind.is_empty()
                    && kind.chars().all(|c| c.is_ascii_lowercase())
                    && !kinds.iter().any(|k| k == kind)
                {
                    kinds.push(kind.to_string());
                }
            }
        }
    }
    // A transaction's items come in no fixed order.
    kinds.sort();
    if kinds.is_empty() {
        format!("{service}:{op}")
    } else {
        format!("{service}:{op}({})", kinds.join(","))
    }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "RoundTripRecorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let name = call_name(cfg.load::<Metadata>(), context.request().body().bytes());
        let mut calls = self.0.lock().unwrap_or_else(|p| p.into_inner());
        calls.push(Call {
            name,
            start: Instant::now(),
            end: None,
        });
        cfg.interceptor_state().store_put(Slot(calls.len() - 1));
        Ok(())
    }

    fn read_after_transmit(
        &self,
        _context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let end = Instant::now();
        if let Some(Slot(i)) = cfg.load::<Slot>().copied() {
            if let Some(c) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get_mut(i) {
                c.end = Some(end);
            }
        }
        Ok(())
    }
}

/// The pool, and with `github` (a `[github]` section) the App.
fn config(github: &str) -> Config {
    let mut c = Config::from_toml(&format!(
        "[[pools]]\nname = \"linux\"\nlabels = [\"self-hosted\", \"linux\", \"x64\"]\n\
         min = 0\nmax = 10\naws_asg = \"{ASG}\"\n\n{github}"
    ))
    .expect("config");
    // moto answers in milliseconds, but its first request of a service loads it.
    c.cloud_timeout = Duration::from_secs(30);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: make bench-round-trips"]
async fn round_trips_per_delivery_on_moto() {
    let moto = Moto::start();
    let base = sdk(&moto.endpoint).await;
    create_table(&base, TABLE).await;
    create_asg(&base, ASG, 0, 10, 0).await;
    let (latency, jobs) = latency_model();
    let bench = if latency {
        "answer-times"
    } else {
        "round-trips"
    };
    let ddb_endpoint = endpoint(&moto, Flavor::DynamoDb, latency.then_some(DYNAMODB_LATENCY)).await;
    let asg_endpoint = endpoint(
        &moto,
        Flavor::Plain,
        latency.then_some(AUTO_SCALING_LATENCY),
    )
    .await;
    // With latencies, the App against the GitHub double behind its own delaying proxy.
    let github = if latency {
        let double = tokio::task::spawn_blocking(GitHubDouble::start)
            .await
            .expect("the GitHub double starts");
        let upstream = double
            .base_url()
            .trim_start_matches("http://")
            .parse()
            .expect("a loopback address");
        let proxy = FaultProxy::start(upstream, Flavor::Plain, 0, 1).await;
        proxy.set_latency(GITHUB_LATENCY);
        let toml = double
            .config_toml("octo-org")
            .replace(double.base_url(), &proxy.endpoint);
        Some((double, proxy, toml))
    } else {
        None
    };
    let github_toml = github.as_ref().map_or("", |(_, _, toml)| toml.as_str());
    let recorder = Recorder::default();
    let ddb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&base)
            .endpoint_url(ddb_endpoint)
            .interceptor(recorder.clone())
            .build(),
    );
    let asg = aws_sdk_autoscaling::Client::from_conf(
        aws_sdk_autoscaling::config::Builder::from(&base)
            .endpoint_url(asg_endpoint)
            .interceptor(recorder.clone())
            .build(),
    );
    let new_service = || {
        let config = config(github_toml);
        let service = Service::new(
            config.clone(),
            WebhookSecrets::new([SECRET]).expect("secret"),
            Arc::new(DynamoLedger::new(ddb.clone(), TABLE, config.ledger)),
            Arc::new(AsgFleet::new(asg.clone())),
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
    // Warm up: moto loads each service's backend on its first request.
    let warm = new_service();
    let a = deliver(&warm, "queued", 1, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // With the App, the instance's runner registered, so the completed removes it as without.
    let mut warm_runner = None;
    if let (Some((double, _, _)), Some((id, _))) =
        (&github, group(&base, ASG).await.instances.last())
    {
        let name = format!("linux-{id}");
        double.add_runner("octo-org", &name, RunnerState::Idle);
        warm_runner = Some(name);
    }
    let a = deliver(&warm, "completed", 1, warm_runner.as_deref()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.report.decision, Some("remove_idle"), "{}", a.body);
    recorder.take();
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
                    // The job runs on the instance its queued delivery scaled out.
                    let g = group(&base, ASG).await;
                    let id = g.instances.last().map(|(id, _)| id.clone());
                    runner = id.map(|id| format!("runner-{id}"));
                    if let (Some((double, _, _)), Some(id)) = (&github, g.instances.last()) {
                        // With the App, the naming rule's name (`<pool>-<instance>`), busy.
                        let name = format!("linux-{}", id.0);
                        double.add_runner("octo-org", &name, RunnerState::Busy);
                        runner = Some(name);
                    }
                }
                if let (Some((double, _, _)), Some(name), "completed") = (&github, &runner, action)
                {
                    double.set_busy(name, false);
                }
                let fresh;
                let service = if mode == "own process" {
                    fresh = new_service();
                    &fresh
                } else {
                    &shared
                };
                recorder.take();
                let started = Instant::now();
                let a = deliver(service, action, job, runner.as_deref()).await;
                let total = started.elapsed();
                assert!(a.status < 500, "{kind}: {} {}", a.status, a.body);
                let mut calls = recorder.take();
                if let Some((_, proxy, _)) = &github {
                    calls.extend(proxy.take_exchanges().into_iter().map(|e| Call {
                        name: format!("gh:{}", e.name),
                        start: e.start,
                        end: Some(e.end),
                    }));
                    calls.sort_by_key(|c| c.start);
                }
                let calls: Vec<serde_json::Value> = calls
                    .into_iter()
                    .map(|c| {
                        serde_json::json!({
                            "name": c.name,
                            "start_us": c.start.saturating_duration_since(started).as_micros() as u64,
                            "end_us": c.end.map(|e| e.saturating_duration_since(started).as_micros() as u64),
                        })
                    })
                    .collect();
                println!(
                    "SCALEHOOK-BENCH {}",
                    serde_json::json!({
                        "bench": bench,
                        "cloud": "aws",
                        "backends": "DynamoDB and Auto Scaling on moto",
                        "latency_ms": latency.then(|| serde_json::json!({
                            "DynamoDB": DYNAMODB_LATENCY.as_millis() as u64,
                            "Auto Scaling": AUTO_SCALING_LATENCY.as_millis() as u64,
                            "GitHub": GITHUB_LATENCY.as_millis() as u64,
                        })),
                        "github_app": github.is_some(),
                        "mode": mode,
                        "kind": kind,
                        "job": job,
                        "status": a.status,
                        "decision": a.report.decision,
                        "total_us": total.as_micros() as u64,
                        "calls": calls,
                    })
                );
            }
        }
    }
    if let Some((double, _, _)) = &github {
        assert!(double.violations().is_empty(), "{:?}", double.violations());
    }
}
