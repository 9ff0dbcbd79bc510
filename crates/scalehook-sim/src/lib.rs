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

mod capacity;
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
/// Default start of a warm-pool instance: a stopped instance starting, the runner already
/// installed, then minting and registering its runner.
pub const DEFAULT_WARM_BOOT_SECONDS: u64 = 20;
/// Default cost of a warm (stopped) instance-hour, as a fraction of the running price: a
/// stopped EC2 instance pays only its EBS volumes. 30 GiB of gp3 at 0.08 USD per GB-month
/// (us-east-1) is 2.40 USD a month, 0.0033 USD an hour, against 0.10 an hour for
/// [`DEFAULT_PRICE_PER_HOUR`] (docs/simulate.md).
pub const DEFAULT_WARM_COST_RATIO: f64 = 0.033;
/// Default spot price as a fraction of on-demand: AWS quotes up to 90% off; 0.35 is a
/// typical, not a best, discount for small general-purpose Linux instances (docs/simulate.md).
pub const DEFAULT_SPOT_PRICE_RATIO: f64 = 0.35;

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
    /// Seconds for an instance taken from a pool's warm pool (`warm_pool`) to take jobs.
    pub warm_boot_seconds: u64,
    /// A warm instance-hour's cost as a fraction of `price_per_hour`.
    pub warm_cost_ratio: f64,
    /// Every pool on spot (except pools named as another's `overflow`).
    pub spot: bool,
    /// The spot price as a fraction of `price_per_hour`.
    pub spot_price_ratio: f64,
    /// Spot reclaims per instance-hour (seeded).
    pub spot_interruptions_per_hour: f64,
    /// Probability that a spot launch fails (seeded); the demand then spills to the pool's
    /// `overflow` pool.
    pub spot_launch_failure_rate: f64,
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
            warm_boot_seconds: DEFAULT_WARM_BOOT_SECONDS,
            warm_cost_ratio: DEFAULT_WARM_COST_RATIO,
            spot: false,
            spot_price_ratio: DEFAULT_SPOT_PRICE_RATIO,
            spot_interruptions_per_hour: 0.0,
            spot_launch_failure_rate: 0.0,
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
        if self.boot_seconds.max(self.warm_boot_seconds) > 7 * 24 * 3600 {
            return Err(SimError::Options(
                "boot seconds must be at most 604800 (a week)".into(),
            ));
        }
        let fraction = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
        if !fraction(self.warm_cost_ratio) || !fraction(self.spot_price_ratio) {
            return Err(SimError::Options(
                "warm cost and spot price ratios must be fractions from 0 to 1".into(),
            ));
        }
        if !fraction(self.spot_launch_failure_rate) {
            return Err(SimError::Options(
                "spot launch failure rate must be a probability from 0 to 1".into(),
            ));
        }
        // More than one a minute is no spot market: a typo.
        if !self.spot_interruptions_per_hour.is_finite()
            || !(0.0..=60.0).contains(&self.spot_interruptions_per_hour)
        {
            return Err(SimError::Options(
                "spot interruptions per hour must be a number from 0 to 60".into(),
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
    let mut config = config.clone();
    let forced = match options.runners {
        Runners::PerPool => None,
        Runners::Persistent => Some(false),
        Runners::Ephemeral => Some(true),
    };
    for pool in &mut config.pools {
        pool.ephemeral = forced.unwrap_or(pool.ephemeral);
    }
    if options.spot {
        put_on_spot(&mut config)?;
    }
    let reruns = options.spot_interruptions_per_hour > 0.0
        && config
            .pools
            .iter()
            .any(|p| p.rerun_interrupted && p.capacity == scalehook_core::Capacity::Spot);
    let (workload, rerun_offset) = if reruns {
        let (w, offset) = capacity::with_reruns(workload, &config)?;
        (w, Some(offset))
    } else {
        (workload, None)
    };
    let workload = Arc::new(workload);
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
        world.warm_boot_seconds = options.warm_boot_seconds;
        world.reclaims_per_hour = options.spot_interruptions_per_hour;
        world.spot_launch_failure = options.spot_launch_failure_rate;
        world.rerun_offset = rerun_offset;
        for n in 0..config.pools.len() {
            // Warmed long before the window, like the booted capacity.
            world.refill_warm(n);
            world.pools[n].warm.fill(workload.start);
        }
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

    let originals = rerun_offset.unwrap_or(workload.jobs.len());
    let ignored_jobs = routes[..originals].iter().filter(|r| r.is_none()).count() as u32;
    let mut pools = Vec::new();
    for (n, pool) in config.pools.iter().enumerate() {
        let figures: Vec<PolicyFigures> = runs
            .iter()
            .map(|(policy, e)| {
                PolicyFigures::from_world(*policy, n, &lock(&e.world), &workload, options)
            })
            .collect();
        // A pool no job routes to is left out, unless its runners took other pools' jobs
        // (overlapping labels) or re-runs went to it (an overflow pool): then its cost is
        // part of the story.
        let hosts_jobs = runs
            .iter()
            .any(|(_, e)| lock(&e.world).jobs.iter().any(|s| s.pool() == Some(n)));
        if figures
            .iter()
            .all(|f| f.jobs == 0 && f.busy_instance_minutes == 0.0)
            && !hosts_jobs
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
        warm_boot_seconds: options.warm_boot_seconds,
        warm_cost_ratio: options.warm_cost_ratio,
        spot: options.spot,
        spot_price_ratio: options.spot_price_ratio,
        spot_interruptions_per_hour: options.spot_interruptions_per_hour,
        spot_launch_failure_rate: options.spot_launch_failure_rate,
        services,
        window: Window::new(workload.start, end),
        jobs: originals as u32,
        ignored_jobs,
        incomplete_jobs: workload.incomplete_jobs,
        pools,
    })
}

/// `--spot`: every pool on spot, except the on-demand pools others overflow to. A pool with
/// a warm pool cannot be (AWS allows no warm pool on a group with spot instances).
fn put_on_spot(config: &mut Config) -> Result<(), SimError> {
    let overflows: Vec<String> = config
        .pools
        .iter()
        .filter_map(|p| p.overflow.clone())
        .collect();
    for pool in &mut config.pools {
        if overflows.contains(&pool.name) {
            continue;
        }
        if pool.warm_pool > 0 {
            return Err(SimError::Options(format!(
                "--spot: pool {} has a warm pool, and a spot pool cannot have one",
                pool.name
            )));
        }
        pool.capacity = scalehook_core::Capacity::Spot;
    }
    Ok(())
}

fn lock(world: &Mutex<World>) -> std::sync::MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|p| p.into_inner())
}
