//! `scalehook simulate`: how well a scaling policy serves a real workload.
//!
//! A discrete-event simulation on a virtual clock. Jobs arrive at their trace `queued` time
//! and run, once a runner takes them, for the time the trace gives (`in_progress` to
//! `completed`); instances take `boot_seconds` to become runners. The same job stream is
//! played under four policies:
//! - **scalehook**: the real [`scalehook_core::Service`] over a [`scalehook_core::MemoryLedger`]
//!   and a simulated fleet, fed the signed deliveries the simulated GitHub sends (`queued`
//!   on arrival, `in_progress` with the runner's name when GitHub assigns the job to a
//!   runner, `completed` when it ends; some lost, `in_progress` late, as the options say)
//!   and a reconcile pass every [`TICK_SECS`], with the simulated GitHub behind the
//!   [`scalehook_core::GitHub`] trait (a GitHub App);
//! - **scalehook-webhook-only**: the same without a GitHub App
//!   ([`scalehook_core::NoGitHub`]);
//! - **cpu-threshold**: a CPU-alarm autoscaler with a reaction delay ([`CpuThreshold`]);
//! - **fixed-size**: every pool at its `max`, always on.
//!
//! GitHub is modelled: runners register when their instance has booted, GitHub assigns each
//! queued job to an idle registered runner of its pool at random (seeded), ephemeral
//! runners exit after one job, a runner's registration cannot be removed while it is busy,
//! and the jobs API tells the truth. Removing an instance interrupts the jobs running on it.
//!
//! The [`SimReport`] gives, per pool and policy, queue wait, interrupted and stranded jobs,
//! idle/busy instance-minutes, peak capacity and cost, and the best policy on each; [`chart::svg`] draws demand and
//! capacity over time.

pub mod chart;
mod engine;
mod fleet;
pub mod github;
pub mod overlap;
pub mod policy;
pub mod report;
mod rng;
pub mod suggest;
pub mod workload;
mod world;

pub use engine::{OVERRUN_LIMIT_SECS, STRANDED_SECS, TICK_SECS};
pub use github::GitHubCalls;
pub use policy::{CpuThreshold, Policy, ServiceFigures};
pub use report::{PolicyFigures, PoolReport, ServiceReport, SimReport, WaitStats, Window};
pub use workload::{Job, Work, Workload};
pub use world::Sample;

use engine::Engine;
use policy::{Controller, CpuController, Delivering, FixedController, ScalehookController};
use scalehook_core::{Config, ManualClock};
use std::sync::{Arc, Mutex};
use world::World;

/// Default price of one instance-hour (USD), roughly a small on-demand Linux VM.
pub const DEFAULT_PRICE_PER_HOUR: f64 = 0.10;
/// Default boot time: launch to a registered runner.
pub const DEFAULT_BOOT_SECONDS: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The trace cannot be simulated (unreadable, malformed, a line without a time).
    #[error("{path}:{line}: {problem}")]
    Trace {
        path: String,
        line: usize,
        problem: String,
    },
    /// The service refused a simulated delivery: a bug in the simulator or the core.
    #[error("trace line {line}: the service answered {status} to the simulated {action} delivery of job {job}: {body}")]
    Service {
        line: usize,
        job: u64,
        action: String,
        status: u16,
        body: String,
    },
    /// The trace file cannot be read, or holds no delivery.
    #[error("trace {path}: {problem}")]
    Read { path: String, problem: String },
    #[error("simulation options: {0}")]
    Options(String),
    #[error("simulation failed: {0}")]
    Internal(String),
}

/// Default seed of GitHub's random choices (runner assignment, lost deliveries).
pub const DEFAULT_SEED: u64 = 1;
/// Longest `in_progress` delivery delay accepted (an hour: anything longer is a typo).
pub const MAX_DELIVERY_DELAY_SECS: u64 = 3600;

/// How runners live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runners {
    /// As each pool's `ephemeral` setting says (what the deployment would run).
    #[default]
    PerPool,
    /// A runner takes job after job for as long as its instance lives, in every pool
    /// (every pool is configured `ephemeral = false`).
    Persistent,
    /// A runner takes one job and exits (its registration disappears; its instance stays
    /// until something removes it). Every pool is configured `ephemeral = true`.
    Ephemeral,
}

impl Runners {
    pub fn name(self) -> &'static str {
        match self {
            Runners::PerPool => "per-pool",
            Runners::Persistent => "persistent",
            Runners::Ephemeral => "ephemeral",
        }
    }
}

/// How to simulate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimOptions {
    /// Seconds from launching an instance to its runners taking jobs.
    pub boot_seconds: u64,
    /// Price of one instance-hour; booting, idle and busy time are all paid.
    pub price_per_hour: f64,
    pub cpu: CpuThreshold,
    pub runners: Runners,
    /// Probability that a webhook delivery never reaches the service (GitHub keeps it as a
    /// failed delivery, which the service can redeliver).
    pub lose_deliveries: f64,
    /// Seconds from GitHub assigning a job to a runner to its `in_progress` delivery
    /// reaching the service.
    pub delivery_delay_secs: u64,
    /// Seeds GitHub's random choices.
    pub seed: u64,
    /// Simulate this policy only (`--suggest` measures one); `None`: every policy.
    pub only: Option<Policy>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            boot_seconds: DEFAULT_BOOT_SECONDS,
            price_per_hour: DEFAULT_PRICE_PER_HOUR,
            cpu: CpuThreshold::default(),
            runners: Runners::PerPool,
            lose_deliveries: 0.0,
            delivery_delay_secs: 0,
            seed: DEFAULT_SEED,
            only: None,
        }
    }
}

impl SimOptions {
    fn check(&self) -> Result<(), SimError> {
        if !self.price_per_hour.is_finite() || self.price_per_hour < 0.0 {
            return Err(SimError::Options(
                "price per hour must be a number >= 0".into(),
            ));
        }
        // A week: anything longer is a typo, and would only stretch the overrun.
        if self.boot_seconds > 7 * 24 * 3600 {
            return Err(SimError::Options(
                "boot seconds must be at most 604800 (a week)".into(),
            ));
        }
        if !self.lose_deliveries.is_finite() || !(0.0..=1.0).contains(&self.lose_deliveries) {
            return Err(SimError::Options(
                "lost deliveries must be a probability from 0 to 1".into(),
            ));
        }
        if self.delivery_delay_secs > MAX_DELIVERY_DELAY_SECS {
            return Err(SimError::Options(format!(
                "delivery delay must be at most {MAX_DELIVERY_DELAY_SECS} seconds"
            )));
        }
        let c = &self.cpu;
        let fraction = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
        if !fraction(c.high) || !fraction(c.low) || c.low > c.high {
            return Err(SimError::Options(
                "cpu thresholds must be fractions with low <= high".into(),
            ));
        }
        if c.step == 0 || c.high_samples == 0 || c.low_samples == 0 {
            return Err(SimError::Options(
                "cpu step and sample counts must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Simulates the workload under every [`Policy`] and reports. All policies share one
/// window: from the trace's first event to the latest of its last event and every policy's
/// last job end, so idle time is counted over the same span for each.
///
/// Every pool of `config` is simulated whatever its fleet target (an ASG or VMSS pool is
/// simulated like a local one); pools no job routes to are left out of the report (unless
/// their runners took other pools' jobs).
pub async fn simulate(
    config: &Config,
    workload: Workload,
    options: &SimOptions,
) -> Result<SimReport, SimError> {
    options.check()?;
    let workload = Arc::new(workload);
    let mut config = config.clone();
    let forced = match options.runners {
        Runners::PerPool => None,
        Runners::Persistent => Some(false),
        Runners::Ephemeral => Some(true),
    };
    for pool in &mut config.pools {
        pool.ephemeral = forced.unwrap_or(pool.ephemeral);
    }
    let routes: Arc<Vec<Option<usize>>> = Arc::new(
        workload
            .jobs
            .iter()
            .map(|j| policy::route(&config, &j.payload))
            .collect(),
    );
    let other_takers: Vec<Vec<usize>> = workload
        .jobs
        .iter()
        .zip(routes.iter())
        .map(|(j, route)| route.map_or_else(Vec::new, |p| overlap::takers(&config, p, &j.payload)))
        .collect();
    let delivering = Delivering {
        lose: options.lose_deliveries,
        in_progress_delay_secs: options.delivery_delay_secs,
        seed: options.seed,
    };
    let mut runs = Vec::with_capacity(Policy::ALL.len());
    for policy in Policy::ALL
        .into_iter()
        .filter(|p| options.only.is_none_or(|o| o == *p))
    {
        let mut world = World::new(
            &config.pools,
            workload.jobs.len(),
            workload.start,
            options.boot_seconds,
        );
        world.seed = options.seed;
        world.other_takers = other_takers.clone();
        let world = Arc::new(Mutex::new(world));
        let clock = Arc::new(ManualClock::new(workload.start));
        let controller: Box<dyn Controller> = match policy {
            Policy::Scalehook | Policy::ScalehookWebhookOnly => Box::new(ScalehookController::new(
                config.clone(),
                workload.clone(),
                world.clone(),
                clock.clone(),
                policy == Policy::Scalehook,
                delivering,
            )?),
            Policy::CpuThreshold => Box::new(CpuController::new(
                config.clone(),
                options.cpu,
                world.clone(),
            )),
            Policy::FixedSize => Box::new(FixedController::new(config.clone(), world.clone())),
        };
        let mut engine = Engine::new(world, clock, controller, workload.clone(), routes.clone());
        engine.warm_up().await?;
        engine.run(workload.end).await?;
        runs.push((policy, engine));
    }
    let end = runs
        .iter()
        .map(|(_, e)| lock(&e.world).now)
        .max()
        .unwrap_or(workload.end)
        .max(workload.end);
    for (_, engine) in &mut runs {
        engine.run(end).await?;
        engine.close(end);
    }

    let ignored_jobs = routes.iter().filter(|r| r.is_none()).count() as u32;
    let mut pools = Vec::new();
    for (n, pool) in config.pools.iter().enumerate() {
        let figures: Vec<PolicyFigures> = runs
            .iter()
            .map(|(policy, e)| {
                PolicyFigures::from_world(
                    *policy,
                    n,
                    &lock(&e.world),
                    &workload,
                    options.price_per_hour,
                )
            })
            .collect();
        // A pool no job routes to is left out, unless its runners took other pools' jobs
        // (overlapping labels): then its cost is part of the story.
        if figures
            .iter()
            .all(|f| f.jobs == 0 && f.busy_instance_minutes == 0.0)
        {
            continue;
        }
        pools.push(PoolReport::new(pool, figures));
    }
    let services = runs
        .iter()
        .filter_map(|(policy, e)| {
            e.service_figures().map(|figures| ServiceReport {
                policy: *policy,
                figures,
            })
        })
        .collect();
    Ok(SimReport {
        boot_seconds: options.boot_seconds,
        price_per_hour: options.price_per_hour,
        tick_secs: TICK_SECS,
        cpu_threshold: options.cpu,
        fixed_size: "pool max",
        runners: options.runners,
        lose_deliveries: options.lose_deliveries,
        delivery_delay_secs: options.delivery_delay_secs,
        seed: options.seed,
        services,
        window: Window::new(workload.start, end),
        jobs: workload.jobs.len() as u32,
        ignored_jobs,
        incomplete_jobs: workload.incomplete_jobs,
        pools,
    })
}

fn lock(world: &Mutex<World>) -> std::sync::MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|p| p.into_inner())
}
