//! `scalehook simulate`: how well a scaling policy serves a real workload.
//!
//! A discrete-event simulation on a virtual clock. Jobs arrive at their trace `queued` time
//! and run, once a runner takes them, for the time the trace gives (`in_progress` to
//! `completed`); instances take `boot_seconds` to become runners. The same job stream is
//! played under three policies:
//! - **scalehook**: the real [`scalehook_core::Service`] over a [`scalehook_core::MemoryLedger`]
//!   and a simulated fleet, fed the signed deliveries the simulated world produces (`queued`
//!   on arrival, `in_progress` with the runner's name when a runner takes the job,
//!   `completed` when it ends) and a reconcile pass every [`TICK_SECS`];
//! - **cpu-threshold**: a CPU-alarm autoscaler with a reaction delay ([`CpuThreshold`]);
//! - **fixed-size**: every pool at its `max`, always on.
//!
//! The [`SimReport`] gives, per pool and policy, queue wait, idle/busy instance-minutes,
//! peak capacity and cost, and the best policy on each; [`chart::svg`] draws demand and
//! capacity over time.

pub mod chart;
mod engine;
mod fleet;
pub mod policy;
pub mod report;
pub mod workload;
mod world;

pub use engine::{OVERRUN_LIMIT_SECS, TICK_SECS};
pub use policy::{CpuThreshold, Policy};
pub use report::{PolicyFigures, PoolReport, SimReport, WaitStats, Window};
pub use workload::{Job, Work, Workload};
pub use world::Sample;

use engine::{Controller, Engine};
use policy::{CpuController, FixedController, ScalehookController};
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

/// How to simulate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimOptions {
    /// Seconds from launching an instance to its runners taking jobs.
    pub boot_seconds: u64,
    /// Price of one instance-hour; booting, idle and busy time are all paid.
    pub price_per_hour: f64,
    pub cpu: CpuThreshold,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            boot_seconds: DEFAULT_BOOT_SECONDS,
            price_per_hour: DEFAULT_PRICE_PER_HOUR,
            cpu: CpuThreshold::default(),
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
/// simulated like a local one); pools no job routes to are left out of the report.
pub async fn simulate(
    config: &Config,
    workload: Workload,
    options: &SimOptions,
) -> Result<SimReport, SimError> {
    options.check()?;
    let workload = Arc::new(workload);
    let mut runs = Vec::with_capacity(Policy::ALL.len());
    for policy in Policy::ALL {
        let world = Arc::new(Mutex::new(World::new(
            &config.pools,
            workload.jobs.len(),
            workload.start,
            options.boot_seconds,
        )));
        let clock = Arc::new(ManualClock::new(workload.start));
        let controller: Box<dyn Controller> = match policy {
            Policy::Scalehook => Box::new(ScalehookController::new(
                config.clone(),
                workload.clone(),
                world.clone(),
                clock.clone(),
            )?),
            Policy::CpuThreshold => Box::new(CpuController::new(
                config.clone(),
                options.cpu,
                workload.clone(),
                world.clone(),
            )),
            Policy::FixedSize => Box::new(FixedController::new(
                config.clone(),
                workload.clone(),
                world.clone(),
            )),
        };
        let mut engine = Engine::new(world, clock, controller, workload.clone());
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

    // Ignored as the real service routed them.
    let ignored_jobs = runs
        .iter()
        .find(|(policy, _)| *policy == Policy::Scalehook)
        .map_or(0, |(_, e)| {
            lock(&e.world)
                .jobs
                .iter()
                .filter(|s| matches!(s, world::JobStatus::Ignored))
                .count() as u32
        });
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
        if figures.iter().all(|f| f.jobs == 0) {
            continue;
        }
        pools.push(PoolReport::new(pool, figures));
    }
    Ok(SimReport {
        boot_seconds: options.boot_seconds,
        price_per_hour: options.price_per_hour,
        tick_secs: TICK_SECS,
        cpu_threshold: options.cpu,
        fixed_size: "pool max",
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
