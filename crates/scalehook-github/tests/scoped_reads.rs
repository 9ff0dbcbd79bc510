//! `make bench-github-reads` (ignored by `make test`): GitHub requests and wall time of the
//! runner reads one scale-in and one reconcile make, the whole-organization listing against
//! the scoped reads, with 100, 1,000 and 10,000 runners in the organization and
//! `BENCH_GITHUB_LATENCY_MS` (default 300) added to every answer by the OpenAPI-checked
//! double. Prints one `SCALEHOOK-BENCH {json}` line per figure (bench/measure.py renders
//! them into bench/RESULTS.md).
//!
//! - scale-in: removing one instance whose single runner is idle. Whole org: list every
//!   runner (all pages), then DELETE it. By id: `GET .../runners/{id}` (the id saved at JIT
//!   minting), then DELETE. By name: the list endpoint's `name` filter, then DELETE.
//! - reconcile: reading the runners of a pool of 20 instances (one runner each). Whole org: every runner. By
//!   group: the pool's runner group (`/runner-groups/{id}/runners`). By id: one `GET` per
//!   instance's saved runner id.

use scalehook_core::github::GitHub;
use scalehook_core::Config;
use scalehook_github::{AppKey, Budget, GitHubApp, APP_KEY_ENV};
use scalehook_github_double::{GitHubDouble, RunnerState, TEST_APP_KEY};
use std::time::{Duration, Instant};

/// The pool's instances: three are removed by the scale-in figures, leaving 20 for the
/// reconcile figures.
const POOL_INSTANCES: usize = 23;

fn client(double: &GitHubDouble) -> GitHubApp {
    let toml = format!(
        "[[pools]]\nname = \"linux\"\nlabels = [\"self-hosted\", \"linux\"]\nmax = 50\n\n{}",
        double.config_toml("acme")
    );
    let config = Config::from_toml(&toml).expect("config");
    let key = AppKey::from_pem(TEST_APP_KEY, APP_KEY_ENV).expect("key");
    // A page may take its latency and the double's own time; the figures are the point.
    let budget = Budget {
        request: Duration::from_secs(20),
        call: Duration::from_secs(20),
        connect: Duration::from_secs(5),
    };
    GitHubApp::new(config.github.as_ref().expect("[github]"), key, budget)
}

struct Measure<'a> {
    double: &'a GitHubDouble,
    org_runners: usize,
    latency_ms: u64,
}

impl Measure<'_> {
    async fn run<F: std::future::Future<Output = ()>>(&self, kind: &str, read: &str, f: F) {
        let before = self.double.requests().len();
        let started = Instant::now();
        f.await;
        let wall = started.elapsed();
        let requests = self.double.requests().len() - before;
        println!(
            "SCALEHOOK-BENCH {}",
            serde_json::json!({
                "bench": "github-reads",
                "org_runners": self.org_runners,
                "latency_ms": self.latency_ms,
                "kind": kind,
                "read": read,
                "requests": requests,
                "wall_ms": wall.as_millis() as u64,
            })
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: make bench-github-reads"]
async fn github_reads_per_scale_in_and_reconcile() {
    let latency_ms: u64 = std::env::var("BENCH_GITHUB_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for org_runners in [100usize, 1_000, 10_000] {
        let double = GitHubDouble::start();
        let group = double.add_runner_group("linux");
        let others: Vec<String> = (0..org_runners - POOL_INSTANCES)
            .map(|i| format!("other-{i:05}"))
            .collect();
        double.add_runners("acme", &others, 1);
        let pool: Vec<(u64, String)> = (0..POOL_INSTANCES)
            .map(|i| {
                let name = format!("linux-i-{i:04}");
                let id = double.add_runner_in_group("acme", &name, RunnerState::Idle, group);
                (id, name)
            })
            .collect();
        let gh = client(&double);
        // The installation token is cached before measuring: steady state.
        gh.runner(pool[0].0).await.expect("warm");
        double.set_latency_ms(latency_ms);
        let m = Measure {
            double: &double,
            org_runners,
            latency_ms,
        };

        let (id, name) = pool[1].clone();
        m.run("scale-in", "whole org", async {
            let all = gh.runners().await.expect("list");
            let mine: Vec<u64> = all
                .iter()
                .filter(|r| r.name == name)
                .map(|r| r.id)
                .collect();
            assert_eq!(mine, vec![id]);
            gh.remove_runner(id).await.expect("removed");
        })
        .await;
        let (id, _) = pool[2].clone();
        m.run("scale-in", "by id", async {
            let r = gh.runner(id).await.expect("get").expect("registered");
            assert!(!r.busy);
            gh.remove_runner(id).await.expect("removed");
        })
        .await;
        let (id, name) = pool[3].clone();
        m.run("scale-in", "by name", async {
            let rs = gh.runners_named(&name).await.expect("by name");
            assert_eq!(rs.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id]);
            gh.remove_runner(id).await.expect("removed");
        })
        .await;

        let left = POOL_INSTANCES - 3;
        m.run("reconcile", "whole org", async {
            let all = gh.runners().await.expect("list");
            assert_eq!(all.len(), org_runners - 3);
        })
        .await;
        m.run("reconcile", "by group", async {
            assert_eq!(gh.runners_in_group(group).await.expect("group").len(), left);
        })
        .await;
        let ids: Vec<u64> = std::iter::once(&pool[0])
            .chain(&pool[4..])
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(ids.len(), left);
        m.run("reconcile", "by id", async {
            for id in &ids {
                assert!(gh.runner(*id).await.expect("get").is_some());
            }
        })
        .await;
    }
}
