//! A model test of the whole service against any ledger backend (`Arc<dyn Ledger>`): the
//! in-memory ledger here (`tests/model.rs`), DynamoDB on moto and Table Storage on Azurite in
//! the adapters' crates (they include this file by path).
//!
//! Each case is a seeded random world: jobs are queued (some wait for an approval first, some
//! carry labels no pool has), start on a runner of a live instance with a free slot, complete
//! or are cancelled; noise `completed` events arrive for jobs never seen. Their deliveries go
//! to the service in rounds, concurrently (tokio tasks), shuffled, with duplicates, some held
//! back to a later round (late events), while the fleet and the ledger fail on purpose
//! (before or after their effect, and stalls past `cloud_timeout_ms`); a delivery answered 5xx
//! is redelivered later, as an operator would from GitHub's UI. At the end the faults stop,
//! every delivery not yet answered 2xx is redelivered, and a reconcile runs. Then:
//! - the ledger's counts (and busy runners) equal the world's ground truth, per pool;
//! - capacity converged: desired equals the policy's target for the true counts, or every
//!   instance above the target runs a job;
//! - no instance was removed while a runner on it ran a job: checked at every removal against
//!   the ledger at that moment, and against the world (jobs whose `in_progress` had been
//!   answered 2xx);
//! - no delivery got a 4xx, and every 5xx names a cloud failure.
//!
//! Rounds alternate between demand (waiting/queued/in_progress) and release (completed, and a
//! concurrent reconcile). A job only starts in a demand round, where no decision removes
//! capacity: a start racing a removal of the same idle instance is a race no webhook-driven
//! autoscaler can see (GitHub tells it after the runner took the job), so the model keeps
//! the two apart and checks everything else.
#![allow(dead_code)]

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue, Method};
use scalehook_core::config::LedgerTtl;
use scalehook_core::fleet::{Fleet, FleetError, FleetState, LocalFleet};
use scalehook_core::ledger::{Expired, Ledger, LedgerError, PoolLedger, Recorded, Transition};
use scalehook_core::signature::sign;
use scalehook_core::{Config, LogFormat, ManualClock, PoolConfig, Service, WebhookSecrets};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const SECRET: &str = "model-test-webhook-secret";
const NOW: u64 = 1_700_000_000;

/// SplitMix64: small, seedable, the same on every platform. A seed fixes a case's random
/// choices; on one thread (the paused-clock memory run) it replays the case exactly, on two
/// worker threads the interleaving, and so which call meets which fault, varies between runs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// How many cases, how big, how hostile.
#[derive(Debug, Clone)]
pub struct Options {
    pub cases: u64,
    pub first_seed: u64,
    /// New jobs per demand round, at most.
    pub jobs_per_round: u64,
    pub rounds: usize,
    /// Per mille of fleet calls that fail (half before their effect, half after it).
    pub fleet_faults: u32,
    /// Per mille of ledger calls that fail (before or after the write, or stall).
    pub ledger_faults: u32,
    /// Whether injected ledger faults include stalls past `cloud_timeout_ms` (a timeout).
    pub ledger_stalls: bool,
    /// Per mille chance that a delivery already answered is sent again in a round.
    pub duplicates: u32,
    /// Per mille chance that a new delivery is held back to a later round.
    pub hold_back: u32,
    /// Per mille chance that a release round also runs a reconcile, concurrently.
    pub reconcile: u32,
    pub cloud_timeout_ms: u64,
}

impl Options {
    /// `SCALEHOOK_MODEL_SEED=<n>` replays one case; `SCALEHOOK_MODEL_CASES=<n>` runs more.
    pub fn with_env(mut self) -> Self {
        let var = |name| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        if let Some(seed) = var("SCALEHOOK_MODEL_SEED") {
            self.first_seed = seed;
            self.cases = 1;
        } else if let Some(cases) = var("SCALEHOOK_MODEL_CASES") {
            self.cases = cases;
        }
        self
    }
}

/// What the cases did, for the closing figures.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub cases: u64,
    pub jobs: u64,
    pub deliveries: u64,
    pub duplicates: u64,
    pub redeliveries: u64,
    pub answers_5xx: u64,
    pub fleet_faults: u64,
    pub ledger_faults: u64,
    pub removals_checked: u64,
    pub reconciles: u64,
    /// The slowest answer, in milliseconds (from the service's own latency measurement).
    pub max_latency_ms: u64,
    /// Jobs still running, at the end, on an instance removed before their late
    /// `in_progress` arrived (see the capacity check).
    pub late_start_removals: u64,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.cases += o.cases;
        self.jobs += o.jobs;
        self.deliveries += o.deliveries;
        self.duplicates += o.duplicates;
        self.redeliveries += o.redeliveries;
        self.answers_5xx += o.answers_5xx;
        self.fleet_faults += o.fleet_faults;
        self.ledger_faults += o.ledger_faults;
        self.removals_checked += o.removals_checked;
        self.reconciles += o.reconciles;
        self.late_start_removals += o.late_start_removals;
        self.max_latency_ms = self.max_latency_ms.max(o.max_latency_ms);
    }
}

/// Runs `opts.cases` cases against `ledger` (shared by the cases: each case has pools of its
/// own names, so counts never mix). Panics with the failing seed; prints the totals.
pub async fn run(backend: &str, ledger: Arc<dyn Ledger>, opts: &Options) -> Totals {
    let mut totals = Totals::default();
    for seed in opts.first_seed..opts.first_seed + opts.cases {
        match run_case(seed, ledger.clone(), opts).await {
            Ok(t) => totals.add(&t),
            Err(e) => panic!(
                "model[{backend}] case seed {seed} failed (replay: SCALEHOOK_MODEL_SEED={seed}): {e}"
            ),
        }
    }
    println!(
        "model[{backend}]: {} cases (seeds {}..={}), {} jobs, {} deliveries ({} duplicates, {} redeliveries after 5xx, {} answered 5xx), {} injected fleet faults, {} injected ledger faults, {} reconciles, {} removals checked, slowest answer {} ms, 0 violations ({} jobs left running on an instance removed before their late in_progress)",
        totals.cases,
        opts.first_seed,
        opts.first_seed + opts.cases.saturating_sub(1),
        totals.jobs,
        totals.deliveries,
        totals.duplicates,
        totals.redeliveries,
        totals.answers_5xx,
        totals.fleet_faults,
        totals.ledger_faults,
        totals.reconciles,
        totals.removals_checked,
        totals.max_latency_ms,
        totals.late_start_removals,
    );
    totals
}

// ---------------------------------------------------------------------------------------
// Fault injection at the two boundaries.

/// Wraps a fleet; fails a share of calls, before the effect (the request never landed) or
/// after it (the change landed but the answer was lost: a timeout or a 5xx on the way back).
pub struct FaultyFleet {
    inner: Arc<LocalFleet>,
    on: AtomicBool,
    per_mille: u32,
    rng: Mutex<Rng>,
    pub injected: AtomicU64,
}

enum Fault {
    None,
    Before,
    After,
    Stall,
}

impl FaultyFleet {
    fn roll(&self) -> Fault {
        if !self.on.load(Ordering::SeqCst) {
            return Fault::None;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        if !rng.chance(self.per_mille) {
            return Fault::None;
        }
        self.injected.fetch_add(1, Ordering::Relaxed);
        if rng.chance(500) {
            Fault::Before
        } else {
            Fault::After
        }
    }

    fn error() -> FleetError {
        FleetError::Unavailable("injected: throttled (Rate exceeded) after retries".into())
    }

    async fn wrap<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, FleetError>>,
    ) -> Result<T, FleetError> {
        // Let other deliveries run here, as a network call would.
        tokio::task::yield_now().await;
        match self.roll() {
            Fault::Before => Err(Self::error()),
            Fault::After => {
                call.await?;
                Err(Self::error())
            }
            Fault::None | Fault::Stall => call.await,
        }
    }
}

#[async_trait]
impl Fleet for FaultyFleet {
    async fn describe(&self, pool: &PoolConfig) -> Result<FleetState, FleetError> {
        self.wrap(self.inner.describe(pool)).await
    }
    async fn set_desired(&self, pool: &PoolConfig, desired: u32) -> Result<(), FleetError> {
        self.wrap(self.inner.set_desired(pool, desired)).await
    }
    async fn remove_instance(&self, pool: &PoolConfig, id: &str) -> Result<(), FleetError> {
        self.wrap(self.inner.remove_instance(pool, id)).await
    }
    async fn set_protection(
        &self,
        pool: &PoolConfig,
        ids: &[String],
        protected: bool,
    ) -> Result<(), FleetError> {
        self.wrap(self.inner.set_protection(pool, ids, protected))
            .await
    }
}

/// Wraps any ledger; fails a share of calls: unavailable (throttled, 5xx) or contention
/// (conditional writes lost too often) before the write, the write applied but its answer
/// lost, or a stall that only the service's `cloud_timeout_ms` ends.
pub struct FaultyLedger {
    inner: Arc<dyn Ledger>,
    on: AtomicBool,
    per_mille: u32,
    stalls: bool,
    rng: Mutex<Rng>,
    pub injected: AtomicU64,
}

impl FaultyLedger {
    fn roll(&self, can_stall: bool) -> Fault {
        if !self.on.load(Ordering::SeqCst) {
            return Fault::None;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        if !rng.chance(self.per_mille) {
            return Fault::None;
        }
        self.injected.fetch_add(1, Ordering::Relaxed);
        match rng.below(4) {
            0 if can_stall && self.stalls => Fault::Stall,
            0 | 1 => Fault::Before,
            _ => Fault::After,
        }
    }

    fn error(contention: bool) -> LedgerError {
        if contention {
            LedgerError::Contention("injected: conditional write lost 16 times".into())
        } else {
            LedgerError::Unavailable("injected: ProvisionedThroughputExceeded".into())
        }
    }
}

async fn stall() {
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[async_trait]
impl Ledger for FaultyLedger {
    async fn record(&self, t: &Transition) -> Result<Recorded, LedgerError> {
        tokio::task::yield_now().await;
        match self.roll(true) {
            Fault::None => self.inner.record(t).await,
            Fault::Before => Err(Self::error(t.job_id.is_multiple_of(2))),
            Fault::After => {
                self.inner.record(t).await?;
                Err(Self::error(false))
            }
            Fault::Stall => {
                // Half the stalls land the write first: a timeout says nothing of the write.
                if t.job_id.is_multiple_of(2) {
                    self.inner.record(t).await?;
                }
                stall().await;
                Err(Self::error(false))
            }
        }
    }
    async fn pool(&self, pool: &str) -> Result<PoolLedger, LedgerError> {
        tokio::task::yield_now().await;
        match self.roll(true) {
            Fault::None | Fault::After => self.inner.pool(pool).await,
            Fault::Before => Err(Self::error(false)),
            Fault::Stall => {
                stall().await;
                Err(Self::error(false))
            }
        }
    }
    async fn busy_runners(&self, pool: &str) -> Result<Vec<String>, LedgerError> {
        tokio::task::yield_now().await;
        match self.roll(true) {
            Fault::None | Fault::After => self.inner.busy_runners(pool).await,
            Fault::Before => Err(Self::error(false)),
            Fault::Stall => {
                stall().await;
                Err(Self::error(false))
            }
        }
    }
    async fn expire(&self, now: u64, ttl: &LedgerTtl) -> Result<Expired, LedgerError> {
        // No stall here: reconcile's expiry pass is not under cloud_timeout_ms (it runs on a
        // timer with its own function timeout).
        match self.roll(false) {
            Fault::None => self.inner.expire(now, ttl).await,
            Fault::Before | Fault::Stall => Err(Self::error(false)),
            Fault::After => {
                self.inner.expire(now, ttl).await?;
                Err(Self::error(false))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Busy-instance safety: a fleet wrapper that checks every removal at the moment it happens.

pub struct SafeFleet {
    /// The fleet the service talks to (faults included).
    faulty: Arc<FaultyFleet>,
    /// The truth, without faults.
    local: Arc<LocalFleet>,
    /// The ledger without faults: what the service has recorded.
    ledger: Arc<dyn Ledger>,
    /// Instance -> job ids running there, whose `in_progress` was answered 2xx before this round.
    known_busy: Mutex<BTreeMap<String, Vec<u64>>>,
    /// Removals are only legitimate in release rounds (and reconciles).
    removals_allowed: AtomicBool,
    violations: Mutex<Vec<String>>,
    pub checked: AtomicU64,
}

/// A read the model's checks make through the ledger under test: with the fault proxy on,
/// it meets the same injected throttling as the service, which is no finding about the
/// service, so the check retries (a wrong answer, not an error, is what would be one).
async fn checker_read<T, F, Fut>(read: F) -> Result<T, LedgerError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, LedgerError>>,
{
    let mut last = None;
    for _ in 0..20 {
        match read().await {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(last.unwrap_or_else(|| LedgerError::Unavailable("no attempt".into())))
}

impl SafeFleet {
    async fn check_removal(&self, pool: &PoolConfig, ids: &[String], how: &str) {
        if ids.is_empty() {
            return;
        }
        self.checked.fetch_add(ids.len() as u64, Ordering::Relaxed);
        let mut problems = Vec::new();
        if !self.removals_allowed.load(Ordering::SeqCst) {
            problems.push(format!(
                "{how} {ids:?} in a demand round (demand never lowers capacity)"
            ));
        }
        let state = self.local.describe(pool).await.unwrap_or_default();
        match checker_read(|| self.ledger.busy_runners(&pool.name)).await {
            Ok(busy_runners) => {
                for id in ids {
                    let Some(instance) = state.instances.iter().find(|i| &i.id == id) else {
                        continue;
                    };
                    let busy: Vec<&String> =
                        busy_runners.iter().filter(|r| instance.runs(r)).collect();
                    if !busy.is_empty() {
                        problems.push(format!(
                            "{how} {id} while the ledger has runners {busy:?} busy on it"
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!("cannot read the ledger to check a removal: {e}")),
        }
        {
            let known = self.known_busy.lock().unwrap_or_else(|p| p.into_inner());
            for id in ids {
                if let Some(jobs) = known.get(id) {
                    problems.push(format!("{how} {id} while it runs jobs {jobs:?}"));
                }
            }
        }
        self.violations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(problems);
    }
}

#[async_trait]
impl Fleet for SafeFleet {
    async fn describe(&self, pool: &PoolConfig) -> Result<FleetState, FleetError> {
        self.faulty.describe(pool).await
    }
    async fn set_desired(&self, pool: &PoolConfig, desired: u32) -> Result<(), FleetError> {
        // Lowering desired capacity drops the newest unprotected instances: check those.
        let state = self.local.describe(pool).await?;
        let live = state.instances.len();
        if (desired as usize) < live {
            let mut dropped: Vec<String> = state
                .instances
                .iter()
                .rev()
                .filter(|i| !i.protected)
                .take(live - desired as usize)
                .map(|i| i.id.clone())
                .collect();
            dropped.sort();
            self.check_removal(pool, &dropped, "set_desired dropped")
                .await;
        }
        self.faulty.set_desired(pool, desired).await
    }
    async fn remove_instance(&self, pool: &PoolConfig, id: &str) -> Result<(), FleetError> {
        self.check_removal(pool, &[id.to_string()], "removed").await;
        self.faulty.remove_instance(pool, id).await
    }
    async fn set_protection(
        &self,
        pool: &PoolConfig,
        ids: &[String],
        protected: bool,
    ) -> Result<(), FleetError> {
        self.faulty.set_protection(pool, ids, protected).await
    }
}

// ---------------------------------------------------------------------------------------
// The world: jobs, their true states, and the deliveries GitHub sends about them.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Truth {
    Waiting,
    Queued,
    Running { instance: String, runner: String },
    Done,
}

#[derive(Debug)]
struct WorldJob {
    id: u64,
    /// Index of the pool it routes to; `None` for labels no pool has.
    pool: Option<usize>,
    labels: Vec<String>,
    truth: Truth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// waiting, queued: safe in any round.
    Demand,
    /// in_progress: a new start; only in demand rounds until answered 2xx.
    Start,
    /// completed: a release trigger; only in release rounds.
    Release,
}

#[derive(Debug)]
struct Delivery {
    guid: String,
    kind: Kind,
    /// The job it is about, if a world job (noise has none).
    job: Option<usize>,
    body: Vec<u8>,
    not_before: usize,
    answered: bool,
    sends: u32,
}

struct World {
    rng: Rng,
    seed: u64,
    config: Config,
    jobs: Vec<WorldJob>,
    deliveries: Vec<Delivery>,
    next_job: u64,
    hold_back: u32,
}

fn job_body(action: &str, id: u64, labels: &[String], runner: Option<&str>) -> Vec<u8> {
    serde_json::json!({
        "action": action,
        "workflow_job": {
            "id": id,
            "run_id": id / 3 + 1,
            "run_attempt": 1,
            "labels": labels,
            "status": action,
            "runner_id": runner.map(|_| 4242).unwrap_or(0),
            "runner_name": runner,
        },
        "repository": {"full_name": "octo-org/app", "owner": {"login": "octo-org"}},
        "organization": {"login": "octo-org"}
    })
    .to_string()
    .into_bytes()
}

impl World {
    fn new(seed: u64, opts: &Options) -> World {
        let mut rng = Rng::new(seed);
        let (min_a, standby_a) = (rng.below(2), rng.below(3));
        let max_a = min_a.max(1) + 1 + rng.below(4);
        let (min_b, standby_b) = (rng.below(2), rng.below(3));
        let max_b = min_b.max(1) + 1 + rng.below(3);
        let toml = format!(
            r#"
cloud_timeout_ms = {timeout}

[[pools]]
name = "m{seed}-linux"
labels = ["self-hosted", "linux", "x64"]
min = {min_a}
max = {max_a}
standby = {standby_a}

[[pools]]
name = "m{seed}-big"
labels = ["self-hosted", "linux", "big"]
min = {min_b}
max = {max_b}
standby = {standby_b}
runners_per_instance = 2
"#,
            timeout = opts.cloud_timeout_ms
        );
        let config = Config::from_toml(&toml).expect("model config");
        World {
            rng,
            seed,
            config,
            jobs: Vec::new(),
            deliveries: Vec::new(),
            next_job: seed.wrapping_mul(1_000_003) % (1 << 40) + 1,
            hold_back: opts.hold_back,
        }
    }

    fn labels_for(&mut self, pool: Option<usize>) -> Vec<String> {
        let base: &[&str] = match pool {
            Some(0) => &["self-hosted", "linux", "x64"],
            Some(_) => &["self-hosted", "big"],
            None if self.rng.chance(500) => &["ubuntu-latest"],
            None => &["self-hosted", "gpu"],
        };
        // Labels compare case-insensitively: vary the case, and sometimes drop some.
        let mut out = Vec::new();
        for l in base {
            if pool.is_some() && self.rng.chance(150) {
                continue;
            }
            out.push(if self.rng.chance(300) {
                l.to_uppercase()
            } else {
                l.to_string()
            });
        }
        out
    }

    fn emit(&mut self, round: usize, job: Option<usize>, kind: Kind, body: Vec<u8>) {
        let held = if self.rng.chance(self.hold_back) {
            1 + self.rng.below(3) as usize
        } else {
            0
        };
        let guid = format!("{:016x}-{:04}", self.seed, self.deliveries.len());
        self.deliveries.push(Delivery {
            guid,
            kind,
            job,
            body,
            not_before: round + held,
            answered: false,
            sends: 0,
        });
    }

    fn emit_job(&mut self, round: usize, j: usize, action: &str, runner: Option<&str>) {
        let kind = match action {
            "in_progress" => Kind::Start,
            "completed" => Kind::Release,
            _ => Kind::Demand,
        };
        let body = job_body(action, self.jobs[j].id, &self.jobs[j].labels, runner);
        self.emit(round, Some(j), kind, body);
    }

    /// A demand round's changes: new jobs, approvals, starts on live instances.
    async fn demand(&mut self, round: usize, opts: &Options, local: &LocalFleet) {
        for _ in 0..self.rng.below(opts.jobs_per_round + 1) {
            let pool = match self.rng.below(10) {
                0 => None,
                1..=5 => Some(0),
                _ => Some(1),
            };
            let labels = self.labels_for(pool);
            // A job whose labels were thinned may now route elsewhere (or nowhere): the
            // world routes it as the service does.
            let pool = self
                .config
                .route(&labels)
                .and_then(|p| self.config.pools.iter().position(|q| q.name == p.name));
            let waits = self.rng.chance(150);
            self.next_job += 1 + self.rng.below(1000);
            self.jobs.push(WorldJob {
                id: self.next_job,
                pool,
                labels,
                truth: if waits { Truth::Waiting } else { Truth::Queued },
            });
            let j = self.jobs.len() - 1;
            self.emit_job(round, j, if waits { "waiting" } else { "queued" }, None);
        }
        for j in 0..self.jobs.len() {
            if self.jobs[j].truth == Truth::Waiting && self.rng.chance(500) {
                self.jobs[j].truth = Truth::Queued;
                self.emit_job(round, j, "queued", None);
            }
        }
        // Starts: a queued job takes a free runner slot on a live instance of its pool.
        for (p, pool) in self.config.pools.clone().iter().enumerate() {
            let state = local.describe(pool).await.unwrap_or_default();
            let mut free: Vec<(String, String)> = Vec::new();
            for inst in &state.instances {
                for slot in 0..pool.runners_per_instance {
                    let runner = format!("gh-{}-s{slot}", inst.id);
                    let taken = self.jobs.iter().any(
                        |j| matches!(&j.truth, Truth::Running { runner: r, .. } if *r == runner),
                    );
                    if !taken {
                        free.push((inst.id.clone(), runner));
                    }
                }
            }
            self.rng.shuffle(&mut free);
            for j in 0..self.jobs.len() {
                if self.jobs[j].pool != Some(p) || self.jobs[j].truth != Truth::Queued {
                    continue;
                }
                if !self.rng.chance(600) {
                    continue;
                }
                let Some((instance, runner)) = free.pop() else {
                    break;
                };
                self.jobs[j].truth = Truth::Running {
                    instance,
                    runner: runner.clone(),
                };
                self.emit_job(round, j, "in_progress", Some(&runner));
            }
        }
    }

    /// A release round's changes: completions, cancellations, noise.
    fn release(&mut self, round: usize) {
        for j in 0..self.jobs.len() {
            match self.jobs[j].truth.clone() {
                Truth::Running { runner, .. } if self.rng.chance(400) => {
                    self.jobs[j].truth = Truth::Done;
                    self.emit_job(round, j, "completed", Some(&runner));
                }
                Truth::Queued | Truth::Waiting if self.rng.chance(80) => {
                    // Cancelled before it started: completed with no runner.
                    self.jobs[j].truth = Truth::Done;
                    self.emit_job(round, j, "completed", None);
                }
                _ => {}
            }
        }
        if self.rng.chance(300) {
            // A completed event for a job never seen (check-run noise, or a job from before
            // the ledger existed): with labels of a pool, or with none.
            self.next_job += 1 + self.rng.below(1000);
            let labels = if self.rng.chance(500) {
                self.labels_for(Some(0))
            } else {
                Vec::new()
            };
            let body = job_body("completed", self.next_job, &labels, None);
            self.emit(round, None, Kind::Release, body);
        }
    }

    /// Instance -> running job ids whose `in_progress` was answered 2xx.
    fn known_busy(&self) -> BTreeMap<String, Vec<u64>> {
        let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (j, job) in self.jobs.iter().enumerate() {
            if let Truth::Running { instance, .. } = &job.truth {
                let started_known = self
                    .deliveries
                    .iter()
                    .any(|d| d.job == Some(j) && d.kind == Kind::Start && d.answered);
                if started_known {
                    out.entry(instance.clone()).or_default().push(job.id);
                }
            }
        }
        out
    }
}

fn headers(d: &Delivery) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-github-event", HeaderValue::from_static("workflow_job"));
    if let Ok(v) = HeaderValue::from_str(&d.guid) {
        h.insert("x-github-delivery", v);
    }
    if let Ok(v) = HeaderValue::from_str(&sign(SECRET.as_bytes(), &d.body)) {
        h.insert("x-hub-signature-256", v);
    }
    h
}

/// Sends deliveries `idx` concurrently; marks the 2xx ones answered.
async fn send(
    service: &Arc<Service>,
    world: &mut World,
    idx: &[usize],
    also_reconcile: bool,
    totals: &mut Totals,
) -> Result<(), String> {
    let mut tasks = tokio::task::JoinSet::new();
    for &i in idx {
        let d = &mut world.deliveries[i];
        if d.answered {
            totals.duplicates += 1;
        } else if d.sends > 0 {
            totals.redeliveries += 1;
        }
        d.sends += 1;
        totals.deliveries += 1;
        let (service, headers, body) = (service.clone(), headers(d), d.body.clone());
        tasks.spawn(async move {
            let a = service.handle(&Method::POST, &headers, &body).await;
            (i, a.status, a.body, a.report.latency_us / 1000)
        });
    }
    if also_reconcile {
        totals.reconciles += 1;
        let service = service.clone();
        tasks.spawn(async move {
            // Its faults are the injected ones; the final reconcile is checked instead.
            let _ = service.reconcile().await;
            (usize::MAX, 200, String::new(), 0)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, status, body, latency_ms) =
            joined.map_err(|e| format!("delivery task panicked: {e}"))?;
        totals.max_latency_ms = totals.max_latency_ms.max(latency_ms);
        if i == usize::MAX {
            continue;
        }
        match status {
            200 | 202 => world.deliveries[i].answered = true,
            502..=504 => {
                totals.answers_5xx += 1;
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let reason = v["reason"].as_str().unwrap_or_default();
                let cloud = ["fleet ", "ledger ", "cloud calls did not finish"];
                if v["status"] != "error" || !cloud.iter().any(|c| reason.starts_with(c)) {
                    return Err(format!("5xx without a cloud failure: {status} {body}"));
                }
            }
            _ => {
                return Err(format!(
                    "delivery {} answered {status}: {body}",
                    world.deliveries[i].guid
                ))
            }
        }
    }
    Ok(())
}

/// The deliveries a round may send: new ones due, redeliveries of 5xx, duplicates.
fn pick(world: &mut World, round: usize, release: bool, opts: &Options) -> Vec<usize> {
    let mut idx = Vec::new();
    for i in 0..world.deliveries.len() {
        let d = &world.deliveries[i];
        let allowed = match d.kind {
            Kind::Demand => true,
            // An unanswered start may not yet be in the ledger: never beside a release.
            Kind::Start => !release || d.answered,
            Kind::Release => release,
        };
        if !allowed || d.not_before > round {
            continue;
        }
        if !d.answered {
            idx.push(i);
        } else if world.rng.chance(opts.duplicates) {
            idx.push(i);
            // Now and then the same delivery twice at once (two redeliveries in flight).
            if world.rng.chance(200) {
                idx.push(i);
            }
        }
    }
    world.rng.shuffle(&mut idx);
    idx
}

async fn run_case(seed: u64, ledger: Arc<dyn Ledger>, opts: &Options) -> Result<Totals, String> {
    let mut world = World::new(seed, opts);
    let local = Arc::new(LocalFleet::new());
    let faulty_fleet = Arc::new(FaultyFleet {
        inner: local.clone(),
        on: AtomicBool::new(true),
        per_mille: opts.fleet_faults,
        rng: Mutex::new(Rng::new(seed ^ 0xF1EE7)),
        injected: AtomicU64::new(0),
    });
    let safe = Arc::new(SafeFleet {
        faulty: faulty_fleet.clone(),
        local: local.clone(),
        ledger: ledger.clone(),
        known_busy: Mutex::new(BTreeMap::new()),
        removals_allowed: AtomicBool::new(false),
        violations: Mutex::new(Vec::new()),
        checked: AtomicU64::new(0),
    });
    let faulty_ledger = Arc::new(FaultyLedger {
        inner: ledger.clone(),
        on: AtomicBool::new(true),
        per_mille: opts.ledger_faults,
        stalls: opts.ledger_stalls,
        rng: Mutex::new(Rng::new(seed ^ 0x1ED6E7)),
        injected: AtomicU64::new(0),
    });
    let service = Arc::new(
        Service::new(
            world.config.clone(),
            WebhookSecrets::new([SECRET]).expect("secret"),
            faulty_ledger.clone(),
            safe.clone(),
        )
        .with_clock(Arc::new(ManualClock::new(NOW)))
        .with_log(LogFormat::Off),
    );
    let mut totals = Totals {
        cases: 1,
        ..Totals::default()
    };

    for round in 0..opts.rounds {
        let release = round % 2 == 1;
        if release {
            world.release(round);
        } else {
            world.demand(round, opts, &local).await;
        }
        *safe.known_busy.lock().unwrap_or_else(|p| p.into_inner()) = world.known_busy();
        safe.removals_allowed.store(release, Ordering::SeqCst);
        let idx = pick(&mut world, round, release, opts);
        let reconcile = release && world.rng.chance(opts.reconcile);
        send(&service, &mut world, &idx, reconcile, &mut totals).await?;
    }

    // The faults stop; every delivery not yet answered 2xx is redelivered (demand-side
    // first, then releases), then the scheduled reconcile runs.
    faulty_fleet.on.store(false, Ordering::SeqCst);
    faulty_ledger.on.store(false, Ordering::SeqCst);
    for pass in 0..20 {
        let release = pass % 2 == 1;
        *safe.known_busy.lock().unwrap_or_else(|p| p.into_inner()) = world.known_busy();
        safe.removals_allowed.store(release, Ordering::SeqCst);
        let idx: Vec<usize> = (0..world.deliveries.len())
            .filter(|&i| {
                let d = &world.deliveries[i];
                !d.answered
                    && match d.kind {
                        Kind::Demand => true,
                        Kind::Start => !release,
                        Kind::Release => release,
                    }
            })
            .collect();
        send(&service, &mut world, &idx, false, &mut totals).await?;
        if pass >= 1 && world.deliveries.iter().all(|d| d.answered) {
            break;
        }
    }
    if let Some(d) = world.deliveries.iter().find(|d| !d.answered) {
        return Err(format!(
            "delivery {} never answered 2xx after 20 redelivery passes without faults",
            d.guid
        ));
    }
    *safe.known_busy.lock().unwrap_or_else(|p| p.into_inner()) = world.known_busy();
    safe.removals_allowed.store(true, Ordering::SeqCst);
    // The schedule runs reconcile again a few minutes later: a pass that met a network fault
    // (a faulty-network case keeps its proxy on) is followed by the next one, up to three.
    let mut report = service.reconcile().await;
    totals.reconciles += 1;
    for _ in 1..3 {
        if report.ok() {
            break;
        }
        report = service.reconcile().await;
        totals.reconciles += 1;
    }
    if !report.ok() {
        return Err(format!("three scheduled reconciles failed: {report:?}"));
    }

    // Checks.
    let mut problems = String::new();
    let violations = safe
        .violations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for v in &violations {
        let _ = writeln!(problems, "busy-instance safety: {v}");
    }
    for (p, pool) in world.config.pools.iter().enumerate() {
        let (mut queued, mut running) = (0u32, 0u32);
        let mut runners = BTreeSet::new();
        let mut busy_instances = BTreeSet::new();
        for job in world.jobs.iter().filter(|j| j.pool == Some(p)) {
            match &job.truth {
                Truth::Queued => queued += 1,
                Truth::Running { instance, runner } => {
                    running += 1;
                    runners.insert(runner.clone());
                    busy_instances.insert(instance.clone());
                }
                Truth::Waiting | Truth::Done => {}
            }
        }
        let account = checker_read(|| ledger.pool(&pool.name))
            .await
            .map_err(|e| format!("reading the ledger: {e}"))?;
        if (account.queued, account.running) != (queued, running) {
            let _ = writeln!(
                problems,
                "pool {}: ledger counts (queued, running) = ({}, {}), truth = ({queued}, {running})",
                pool.name, account.queued, account.running
            );
        }
        let busy_runners = checker_read(|| ledger.busy_runners(&pool.name))
            .await
            .map_err(|e| format!("reading the busy runners: {e}"))?;
        let recorded: BTreeSet<String> = busy_runners.iter().cloned().collect();
        if recorded != runners || busy_runners.len() != runners.len() {
            let _ = writeln!(
                problems,
                "pool {}: ledger busy runners {busy_runners:?}, truth {runners:?}",
                pool.name
            );
        }
        let state = local.describe(pool).await.unwrap_or_default();
        let truth = PoolLedger {
            queued,
            running,
            changes: 0,
        };
        let target = scalehook_core::policy::target(pool, &truth, &state);
        let idle = state
            .instances
            .iter()
            .filter(|i| !busy_instances.contains(&i.id))
            .count();
        // A job whose `in_progress` came late may run on an instance removed while the
        // ledger did not know it (the design's limit); its runner then maps to no instance,
        // and the policy withholds scale-in: that is the conservative answer, not a fault.
        let unmapped = busy_instances
            .iter()
            .filter(|b| !state.instances.iter().any(|i| &i.id == *b))
            .count();
        totals.late_start_removals += unmapped as u64;
        let converged =
            state.desired == target || (state.desired > target && (idle == 0 || unmapped > 0));
        if !converged {
            let _ = writeln!(
                problems,
                "pool {}: desired {} after reconcile, target {target} for the true counts ({queued} queued, {running} running), {idle} idle instances",
                pool.name, state.desired
            );
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    totals.jobs = world.jobs.len() as u64;
    totals.fleet_faults = faulty_fleet.injected.load(Ordering::Relaxed);
    totals.ledger_faults = faulty_ledger.injected.load(Ordering::Relaxed);
    totals.removals_checked = safe.checked.load(Ordering::Relaxed);
    Ok(totals)
}
