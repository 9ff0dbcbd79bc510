//! Load and soak test of the real `scalehook serve` on loopback (issue 8).
//!
//! A burst of 10 000 signed `workflow_job` deliveries (2 500 jobs through their lifecycle,
//! 4 000 of the deliveries duplicates, in random order, 32 in flight), then a soak burst of
//! 10 000 more that are all redeliveries. Checks: every delivery answered 2xx, the server's
//! `/status` counts equal the ground truth, its `/metrics` and its log account for every
//! delivery (nothing lost), the secret is in no log line, and memory: after the first burst
//! RSS (`VmRSS` of the server process) stays within the baseline plus the ledger records it
//! must keep (completed records are retained for GitHub's redelivery window) plus a fixed
//! allowance, and the soak burst, which adds no record, does not grow it further.
//!
//! Bounded: a fixed number of requests, 32 threads, a deadline per burst, loopback only.

use scalehook_core::signature::sign;
use scalehook_core::trace::restamp_job_times;
use scalehook_e2e::{scalehook, workspace_root, Server, SECRET};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const JOBS: u64 = 2_500;
const BURST: usize = 10_000;
const SOAK: usize = 10_000;
const WARM_UP_JOBS: u64 = 100;
const IN_FLIGHT: usize = 32;
/// Each burst must finish within this, or the test fails (it never hangs).
const BURST_DEADLINE: Duration = Duration::from_secs(240);
/// After a burst, how long RSS may take to come within its bound (in-flight work and the
/// allocator's trimming finishing): the test polls for the bound, this only stops the wait.
const SETTLE_BOUND: Duration = Duration::from_secs(30);
/// Memory allowed per retained ledger record (a job id, pool name, state, runner name and
/// time in a hash map: about 150 bytes; 1 KiB leaves room for map growth by doubling).
const BYTES_PER_RECORD: u64 = 1024;
/// Fixed allowance over the baseline: allocator arenas for 32 concurrent connections and
/// the runtime's worker buffers, which the first burst brings into use and keeps.
const FIXED_ALLOWANCE_KIB: u64 = 8 * 1024;
/// The soak burst adds no record: RSS may not grow by more than this across it (a leak of
/// 200 bytes per delivery would).
const SOAK_ALLOWANCE_KIB: u64 = 2 * 1024;

/// SplitMix64, seeded: the same workload every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// One delivery, ready to send.
struct Delivery {
    guid: String,
    body: Vec<u8>,
    signature: String,
}

/// The embedded default's pools: (name, labels, max).
const POOLS: [(&str, &[&str], u64); 2] = [
    ("linux-x64", &["self-hosted", "linux", "x64"], 20),
    ("k8s", &["self-hosted", "k8s"], 10),
];

/// A realistic body: the octokit `workflow_job` fixture (8 KB) with this job's fields.
fn body(template: &Value, action: &str, id: u64, labels: &[&str], runner: Option<&str>) -> Vec<u8> {
    let mut v = template.clone();
    v["action"] = action.into();
    let job = &mut v["workflow_job"];
    job["id"] = id.into();
    job["run_id"] = (id / 4 + 1).into();
    job["status"] = action.into();
    job["labels"] = labels.iter().map(|l| Value::from(*l)).collect();
    job["runner_name"] = runner.map_or(Value::Null, Value::from);
    job["runner_id"] = runner.map_or(Value::Null, |_| Value::from(77));
    serde_json::to_vec(&v).expect("body")
}

fn delivery(guid: String, body: Vec<u8>) -> Delivery {
    let signature = sign(SECRET.as_bytes(), &body);
    Delivery {
        guid,
        body,
        signature,
    }
}

/// The events of `jobs` jobs from `first_id`, and the counts they leave per pool.
/// Job i: i % 5 == 0 stays queued, == 1 stays in progress, else completes; one in 50 has a
/// label no pool has (answered 202, counted nowhere).
fn workload(template: &Value, first_id: u64, jobs: u64) -> (Vec<Delivery>, [(u32, u32); 2]) {
    let mut out = Vec::new();
    let mut counts = [(0u32, 0u32); 2];
    for i in 0..jobs {
        let id = first_id + i;
        let p = (i % 2) as usize;
        let (pool, pool_labels, max) = POOLS[p];
        let unroutable = i % 50 == 49;
        let labels: &[&str] = if unroutable {
            &["ubuntu-latest"]
        } else {
            pool_labels
        };
        let runner = format!("{pool}-{:04}", 1 + i % max);
        let reach = i % 5;
        let mut push = |action: &str, runner: Option<&str>| {
            let guid = format!("load-{id}-{action}");
            out.push(delivery(guid, body(template, action, id, labels, runner)));
        };
        push("queued", None);
        if reach >= 1 {
            push("in_progress", Some(&runner));
        }
        if reach >= 2 {
            push("completed", Some(&runner));
        }
        if !unroutable {
            match reach {
                0 => counts[p].0 += 1,
                1 => counts[p].1 += 1,
                _ => {}
            }
        }
    }
    (out, counts)
}

/// `scalehook serve` on a free loopback port (the e2e [`Server`]), with its memory.
struct Serve {
    server: Server,
    origin: String,
}

impl Serve {
    fn start() -> Serve {
        let mut cmd = scalehook();
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        let server = Server::spawn(cmd);
        assert!(
            server.origin.starts_with("http://127.0.0.1:"),
            "loopback only: {}",
            server.origin
        );
        Serve {
            origin: server.origin.clone(),
            server,
        }
    }

    /// (VmRSS, VmHWM) in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.server.pid()))
            .expect("/proc/<pid>/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/<pid>/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// (VmRSS, VmHWM) once VmRSS is at most `limit_kib`, polled for at most SETTLE_BOUND;
    /// past that, the last reading (which the caller's assertion then reports).
    fn memory_within(&self, limit_kib: u64) -> (u64, u64) {
        let deadline = Instant::now() + SETTLE_BOUND;
        loop {
            let reading = self.memory_kib();
            if reading.0 <= limit_kib || Instant::now() >= deadline {
                return reading;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn get(&self, path: &str) -> String {
        let agent = agent();
        let mut res = agent
            .get(format!("{}{path}", self.origin))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(res.status().as_u16(), 200, "GET {path}");
        res.body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .expect("body")
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Sends `order` (indexes into `deliveries`) with IN_FLIGHT threads, each on one kept-alive
/// connection. Returns how many answers had each status.
fn burst(url: &str, deliveries: &Arc<Vec<Delivery>>, order: Vec<usize>) -> Vec<(u16, usize)> {
    let order = Arc::new(order);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (order, next, deliveries, url) = (
                order.clone(),
                next.clone(),
                deliveries.clone(),
                url.to_string(),
            );
            std::thread::spawn(move || {
                let agent = agent();
                let mut statuses = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&d) = order.get(i) else { break };
                    if started.elapsed() > BURST_DEADLINE {
                        statuses.push(0);
                        continue;
                    }
                    let d = &deliveries[d];
                    let answer = agent
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-github-event", "workflow_job")
                        .header("x-github-delivery", &d.guid)
                        .header("x-hub-signature-256", &d.signature)
                        .send(&d.body[..]);
                    statuses.push(match answer {
                        Ok(mut r) => {
                            let _ = r.body_mut().read_to_string();
                            r.status().as_u16()
                        }
                        Err(_) => 1,
                    });
                }
                statuses
            })
        })
        .collect();
    let mut by_status = std::collections::BTreeMap::new();
    for t in threads {
        for s in t.join().expect("client thread") {
            *by_status.entry(s).or_insert(0usize) += 1;
        }
    }
    assert!(
        !by_status.contains_key(&0),
        "the burst did not finish within {BURST_DEADLINE:?}"
    );
    by_status.into_iter().collect()
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

#[test]
fn ten_thousand_deliveries_with_duplicates_lose_nothing_and_memory_returns() {
    let captured =
        std::fs::read(workspace_root().join("fixtures/github/workflow_job.queued.octokit.json"))
            .expect("fixture");
    // Its job times moved to now, as `replay` does: a job from 2021 is refused as a replay.
    let now = scalehook_core::Clock::now(&scalehook_core::SystemClock);
    let captured = restamp_job_times("workflow_job", &captured, now).unwrap_or(captured);
    let template: Value = serde_json::from_slice(&captured).expect("fixture JSON");
    let (warm, warm_counts) = workload(&template, 9_000_000, WARM_UP_JOBS);
    let (events, counts) = workload(&template, 1_000_000, JOBS);
    let expected = [
        (
            warm_counts[0].0 + counts[0].0,
            warm_counts[0].1 + counts[0].1,
        ),
        (
            warm_counts[1].0 + counts[1].0,
            warm_counts[1].1 + counts[1].1,
        ),
    ];
    let distinct = events.len();
    let events = Arc::new(events);
    let warm = Arc::new(warm);
    let mut rng = Rng(8);

    let serve = Serve::start();
    let url = format!("{}/webhook", serve.origin);

    // Warm-up (allocator, lazy statics, connection pool), then the baseline.
    let warm_order: Vec<usize> = (0..warm.len()).collect();
    let warm_statuses = burst(&url, &warm, warm_order);
    // Every warm-up delivery has been answered: nothing runs in the server now.
    let (baseline, _) = serve.memory_kib();
    let records = WARM_UP_JOBS + JOBS;
    let budget = baseline + FIXED_ALLOWANCE_KIB + records * BYTES_PER_RECORD / 1024;

    // Burst: every event once, plus duplicates, shuffled.
    let mut order: Vec<usize> = (0..distinct).collect();
    while order.len() < BURST {
        order.push(rng.below(distinct));
    }
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let duplicates = BURST - distinct;
    let burst_statuses = burst(&url, &events, order);
    let (after_burst, peak_burst) = serve.memory_within(budget);

    // Soak: as many again, every one a redelivery.
    let soak_order: Vec<usize> = (0..SOAK).map(|_| rng.below(distinct)).collect();
    let soak_statuses = burst(&url, &events, soak_order);
    let (after_soak, peak) = serve.memory_within(after_burst + SOAK_ALLOWANCE_KIB);

    // Every delivery answered 2xx: none lost at the door.
    let sent = warm.len() + BURST + SOAK;
    let mut answered_2xx = 0;
    for (status, n) in warm_statuses
        .iter()
        .chain(&burst_statuses)
        .chain(&soak_statuses)
    {
        assert!(
            (200..300).contains(status),
            "{n} deliveries answered {status} (warm-up {warm_statuses:?}, burst {burst_statuses:?}, soak {soak_statuses:?})"
        );
        answered_2xx += n;
    }
    assert_eq!(answered_2xx, sent);

    // Exact counts: the ledger holds the ground truth.
    let status: Value = serde_json::from_str(&serve.get("/status")).expect("status JSON");
    for (p, (name, _, max)) in POOLS.iter().enumerate() {
        let pool = status["pools"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == *name))
            .unwrap_or_else(|| panic!("pool {name} in /status: {status}"));
        assert_eq!(
            (pool["queued"].as_u64(), pool["running"].as_u64()),
            (
                Some(u64::from(expected[p].0)),
                Some(u64::from(expected[p].1))
            ),
            "pool {name}: {pool}"
        );
        assert!(pool["desired"].as_u64().is_some_and(|d| d <= *max));
    }

    // Every delivery was handled (or ignored, for the unroutable jobs) and counted once.
    let metrics = serve.get("/metrics");
    let handled = metric(&metrics, "scalehook_deliveries_total{outcome=\"handled\"}");
    let ignored = metric(&metrics, "scalehook_deliveries_total{outcome=\"ignored\"}");
    assert_eq!(handled + ignored, sent as u64, "{metrics}");
    for outcome in ["ledger_error", "fleet_error", "timeout", "unauthorized"] {
        let series = format!("scalehook_deliveries_total{{outcome=\"{outcome}\"}}");
        assert_eq!(metric(&metrics, &series), 0, "{series}");
    }
    // One log line per delivery, and never the secret.
    let log = serve.server.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("\"scalehook::delivery\""))
        .count();
    assert_eq!(lines, sent, "delivery log lines");
    assert!(!log.contains(SECRET), "the secret is in the server log");

    // Memory: back near the baseline once the burst is over, and flat across the soak.
    println!(
        "load: {sent} deliveries ({} warm-up, {BURST} burst with {duplicates} duplicates, {SOAK} soak redeliveries), \
         {IN_FLIGHT} in flight, lost 0; VmRSS baseline {baseline} KiB, after burst {after_burst} KiB \
         (peak {peak_burst} KiB), after soak {after_soak} KiB (peak {peak} KiB); budget {budget} KiB for {records} retained records",
        warm.len()
    );
    assert!(
        after_burst <= budget,
        "RSS after the burst {after_burst} KiB exceeds baseline {baseline} KiB + {FIXED_ALLOWANCE_KIB} KiB + {records} records x {BYTES_PER_RECORD} B"
    );
    assert!(
        after_soak <= after_burst + SOAK_ALLOWANCE_KIB,
        "RSS grew across the soak (no new records): {after_burst} -> {after_soak} KiB"
    );
}
