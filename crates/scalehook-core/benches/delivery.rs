//! Criterion benchmarks of the per-delivery path, on the real payloads in `fixtures/github/`.
//!
//! Run with `make bench` (or `cargo bench -p scalehook-core --bench delivery`). Groups:
//! - `verify`: HMAC-SHA256 signature check over 1 KiB, 10 KiB and 1 MiB bodies;
//! - `parse`: `Event::parse` of real `workflow_job` and `ping` payloads;
//! - `route`: label routing against the embedded default pools;
//! - `ledger`: `MemoryLedger::record` for a new job, a forward move and a duplicate;
//! - `policy`: the pure `decide` on a 10-instance pool with busy runners;
//! - `delivery`: the whole `Service::handle` (MemoryLedger + LocalFleet, `LogFormat::Off`).
//!
//! A fixed body is a duplicate after its first delivery, so the whole-delivery group measures
//! the duplicate path and the fresh path separately: fresh deliveries get a distinct job id
//! (same number of digits, so the body keeps its size) and a new signature per iteration,
//! made in criterion's untimed setup.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use http::{HeaderMap, HeaderValue, Method};
use scalehook_core::event::Event;
use scalehook_core::fleet::Fleet;
use scalehook_core::ledger::Ledger;
use scalehook_core::policy::{decide, Busy, Seen, Trigger};
use scalehook_core::signature::sign;
use scalehook_core::{
    Config, JobState, LocalFleet, LogFormat, MemoryLedger, PoolLedger, Service, Transition,
    WebhookSecrets,
};
use std::future::Future;
use std::hint::black_box;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

const SECRET: &str = "bench-webhook-secret";

/// A self-hosted `queued` job, 9,795 bytes: the 10 KB class that routes to a pool.
const QUEUED_10K: &str = "workflow_job.queued.self-hosted.2021-capture.philips-labs.json";
const QUEUED_10K_ID: u64 = 3169272040;
/// A GitHub-hosted (`ubuntu-latest`) `completed` job, 10,388 bytes: routes to no pool.
const COMPLETED_10K: &str = "workflow_job.completed.success.with-organization.octokit.json";
const IN_PROGRESS_8K: &str = "workflow_job.in_progress.octokit.json";
const HOSTED_ID: u64 = 289782451;
const PING: &str = "ping.organization.octokit.json";

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/github")
        .join(name);
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    // Job times moved to now, as `scalehook replay` does: a job older than the ledger's
    // retention is refused as a replay, which is not the path measured here.
    let now = scalehook_core::Clock::now(&scalehook_core::SystemClock);
    let event = if name.starts_with("workflow_job") {
        "workflow_job"
    } else {
        ""
    };
    scalehook_core::trace::restamp_job_times(event, &body, now).unwrap_or(body)
}

/// Replaces every occurrence of `from` in `body` (the job id, also in the check-run URL).
fn replace(body: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = std::str::from_utf8(body).expect("fixtures are UTF-8");
    assert!(text.contains(from), "{from} not in the fixture");
    text.replace(from, to).into_bytes()
}

/// A GitHub-hosted fixture turned into a self-hosted job of pool `linux-x64` that ran on
/// the local fleet's first instance: same payload, labels and runner name rewritten.
fn self_hosted(body: &[u8]) -> Vec<u8> {
    let body = replace(body, r#""ubuntu-latest""#, r#""self-hosted""#);
    replace(&body, r#""GitHub Actions 5""#, r#""linux-x64-0001""#)
}

fn headers(event: &str, body: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "x-github-event",
        HeaderValue::from_str(event).expect("event name"),
    );
    h.insert(
        "x-github-delivery",
        HeaderValue::from_static("72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    );
    h.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&sign(SECRET.as_bytes(), body)).expect("signature"),
    );
    h
}

fn secrets() -> WebhookSecrets {
    WebhookSecrets::new([SECRET]).expect("secret")
}

fn service() -> Service {
    Service::new(
        Config::embedded_default(),
        secrets(),
        Arc::new(MemoryLedger::new()),
        Arc::new(LocalFleet::new()),
    )
    .with_log(LogFormat::Off)
}

/// Runs a future that never waits (the in-memory ledger and local fleet), without a runtime,
/// so their benchmarks time the work and not an executor.
fn ready<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory ledger or local fleet call waited"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    // `Service::handle` bounds cloud calls with `tokio::time::timeout`: time must be on.
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// `n` bytes made of real fixture bytes, repeated (the MAC does not care what they say).
fn body_of_size(n: usize) -> Vec<u8> {
    let seed = fixture(COMPLETED_10K);
    seed.iter().copied().cycle().take(n).collect()
}

fn verify(c: &mut Criterion) {
    let secrets = secrets();
    let mut g = c.benchmark_group("verify");
    for (label, size) in [("1KiB", 1024), ("10KiB", 10 * 1024), ("1MiB", 1024 * 1024)] {
        let body = body_of_size(size);
        let signature = sign(SECRET.as_bytes(), &body);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(label, |b| {
            b.iter(|| secrets.verify(Some(black_box(&signature)), black_box(&body)))
        });
    }
    // A forged delivery costs the same MAC, then is refused.
    let body = body_of_size(10 * 1024);
    let forged = format!("sha256={}", "0".repeat(64));
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("10KiB-mismatch", |b| {
        b.iter(|| secrets.verify(Some(black_box(&forged)), black_box(&body)))
    });
    g.finish();
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for (label, event, name) in [
        ("workflow_job-queued-9.8KB", "workflow_job", QUEUED_10K),
        (
            "workflow_job-completed-10.4KB",
            "workflow_job",
            COMPLETED_10K,
        ),
        (
            "workflow_job-queued-13.4KB",
            "workflow_job",
            "workflow_job.queued.self-hosted-k8s.with-deployment.octokit.json",
        ),
        ("ping-2.8KB", "ping", PING),
    ] {
        let body = fixture(name);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(label, |b| {
            b.iter(|| Event::parse(black_box(event), black_box(&body)).expect("parses"))
        });
    }
    g.finish();
}

fn route(c: &mut Criterion) {
    let config = Config::embedded_default();
    let mut g = c.benchmark_group("route");
    for (label, labels) in [
        ("first-pool", vec!["self-hosted", "Linux", "X64"]),
        ("second-pool", vec!["self-hosted", "k8s"]),
        ("no-pool", vec!["ubuntu-latest"]),
    ] {
        let labels: Vec<String> = labels.into_iter().map(String::from).collect();
        g.bench_function(label, |b| {
            b.iter(|| config.route(black_box(&labels)).map(|p| p.name.len()))
        });
    }
    g.finish();
}

fn ledger(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger");
    let transition = |job_id, to, runner: Option<&str>| Transition {
        repository: None,
        job_id,
        pool: "linux-x64".into(),
        to,
        runner: runner.map(String::from),
        at: 1_700_000_000,
    };

    // A job seen for the first time: a new record and a counter change.
    let l = MemoryLedger::new();
    let next = AtomicU64::new(1);
    g.bench_function("record-new-queued", |b| {
        b.iter_batched(
            || transition(next.fetch_add(1, Ordering::Relaxed), JobState::Queued, None),
            |t| ready(l.record(black_box(&t))).expect("memory"),
            BatchSize::SmallInput,
        )
    });

    // queued -> in_progress on an existing record (the runner joins the busy list).
    let l = MemoryLedger::new();
    let next = AtomicU64::new(1);
    g.bench_function("record-queued-to-in_progress", |b| {
        b.iter_batched(
            || {
                let id = next.fetch_add(1, Ordering::Relaxed);
                ready(l.record(&transition(id, JobState::Queued, None))).expect("memory");
                transition(id, JobState::InProgress, Some("linux-x64-0001"))
            },
            |t| ready(l.record(black_box(&t))).expect("memory"),
            BatchSize::SmallInput,
        )
    });

    // A redelivery: the forward-only rule finds nothing to do.
    let l = MemoryLedger::new();
    let dup = transition(42, JobState::Queued, None);
    ready(l.record(&dup)).expect("memory");
    g.bench_function("record-duplicate", |b| {
        b.iter(|| ready(l.record(black_box(&dup))).expect("memory"))
    });

    g.bench_function("pool-account", |b| {
        b.iter(|| ready(l.pool(black_box("linux-x64"))).expect("memory"))
    });
    g.finish();
}

fn policy(c: &mut Criterion) {
    let config = Config::embedded_default();
    let pool = &config.pools[0];
    let fleet = LocalFleet::new();
    ready(fleet.set_desired(pool, 10)).expect("local");
    let state = ready(fleet.describe(pool)).expect("local");
    // Six busy runners on the first six instances, two jobs queued: target 9 < 10.
    let account = PoolLedger {
        queued: 2,
        running: 6,
        changes: 0,
    };
    let busy: Vec<String> = state.instances[..6]
        .iter()
        .map(|i| i.runner_key.clone())
        .collect();
    let mut g = c.benchmark_group("policy");
    for (label, trigger) in [
        ("demand", Trigger::Demand),
        ("release", Trigger::Release),
        ("reconcile", Trigger::Reconcile),
    ] {
        g.bench_function(label, |b| {
            b.iter(|| {
                decide(
                    black_box(trigger),
                    black_box(pool),
                    black_box(&account),
                    black_box(Busy::Complete(&busy)),
                    black_box(&state),
                    black_box(&Seen::NOTHING),
                )
            })
        });
    }
    g.finish();
}

fn delivery(c: &mut Criterion) {
    let rt = runtime();
    let post = Method::POST;
    let mut g = c.benchmark_group("delivery");

    // The same signed queued body again and again: verify, parse, route, a stale ledger
    // record, then converge (describe, decide, hold) as every duplicate does.
    let svc = service();
    let body = fixture(QUEUED_10K);
    let h = headers("workflow_job", &body);
    let first = rt.block_on(svc.handle(&post, &h, &body));
    assert_eq!(first.status, 200, "{}", first.body);
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("queued-9.8KB-duplicate", |b| {
        b.to_async(&rt)
            .iter(|| async { svc.handle(&post, black_box(&h), black_box(&body)).await })
    });

    // A new job each time: the ledger records it and the pool scales (up to its max).
    let svc = service();
    let template = fixture(QUEUED_10K);
    let next = AtomicU64::new(4_000_000_000);
    let fresh = || {
        let id = next.fetch_add(1, Ordering::Relaxed).to_string();
        let body = replace(&template, &QUEUED_10K_ID.to_string(), &id);
        (headers("workflow_job", &body), body)
    };
    let (h0, b0) = fresh();
    let first = rt.block_on(svc.handle(&post, &h0, &b0));
    assert!(first.body.contains("scale_out"), "{}", first.body);
    g.throughput(Throughput::Bytes(template.len() as u64));
    g.bench_function("queued-9.8KB-fresh", |b| {
        b.to_async(&rt).iter_batched(
            fresh,
            |(h, body)| {
                let svc = &svc;
                let post = &post;
                async move { svc.handle(post, &h, &body).await }
            },
            BatchSize::SmallInput,
        )
    });

    // A job's whole life, three deliveries: queued, in_progress (on linux-x64-0001),
    // completed. Reported per job; divide by three for the per-delivery figure.
    let svc = service();
    let in_progress = self_hosted(&fixture(IN_PROGRESS_8K));
    let completed = self_hosted(&fixture(COMPLETED_10K));
    let next = AtomicU64::new(5_000_000_000);
    let life = || {
        let id = next.fetch_add(1, Ordering::Relaxed).to_string();
        [
            replace(&template, &QUEUED_10K_ID.to_string(), &id),
            replace(&in_progress, &HOSTED_ID.to_string(), &id),
            replace(&completed, &HOSTED_ID.to_string(), &id),
        ]
        .map(|body| (headers("workflow_job", &body), body))
    };
    for (h, body) in life() {
        let a = rt.block_on(svc.handle(&post, &h, &body));
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.report.duplicate, Some(false), "{}", a.body);
    }
    g.throughput(Throughput::Elements(3));
    g.bench_function("lifecycle-3-deliveries", |b| {
        b.to_async(&rt).iter_batched(
            life,
            |deliveries| {
                let svc = &svc;
                let post = &post;
                async move {
                    for (h, body) in &deliveries {
                        black_box(svc.handle(post, h, body).await);
                    }
                }
            },
            BatchSize::SmallInput,
        )
    });

    // A GitHub-hosted job (most of an organization's deliveries): verified, parsed, 202.
    let svc = service();
    let body = fixture(COMPLETED_10K);
    let h = headers("workflow_job", &body);
    assert_eq!(rt.block_on(svc.handle(&post, &h, &body)).status, 202);
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("completed-10.4KB-hosted-ignored", |b| {
        b.to_async(&rt)
            .iter(|| async { svc.handle(&post, black_box(&h), black_box(&body)).await })
    });

    // A forged delivery: refused with 401 after one MAC.
    let mut forged = h.clone();
    forged.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&sign(b"not-the-secret", &body)).expect("signature"),
    );
    assert_eq!(rt.block_on(svc.handle(&post, &forged, &body)).status, 401);
    g.bench_function("completed-10.4KB-bad-signature", |b| {
        b.to_async(&rt).iter(|| async {
            svc.handle(&post, black_box(&forged), black_box(&body))
                .await
        })
    });

    let body = fixture(PING);
    let h = headers("ping", &body);
    assert_eq!(rt.block_on(svc.handle(&post, &h, &body)).status, 200);
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("ping-2.8KB", |b| {
        b.to_async(&rt)
            .iter(|| async { svc.handle(&post, black_box(&h), black_box(&body)).await })
    });
    g.finish();
}

criterion_group!(benches, verify, parse, route, ledger, policy, delivery);
criterion_main!(benches);
