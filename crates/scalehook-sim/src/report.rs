//! The report: per pool and policy, the figures a user chooses an autoscaler by, which
//! policy is best on each, as a text table or JSON.

use crate::engine::STRANDED_SECS;
use crate::policy::{CpuThreshold, Policy, ServiceFigures};
use crate::workload::{Work, Workload};
use crate::world::{JobStatus, Sample, World};
use crate::{Runners, SimOptions};
use serde::Serialize;
use std::fmt::Write as _;

/// Queue wait (seconds from a job's arrival to a runner taking it) over the jobs that
/// started. Percentiles are nearest-rank: the smallest wait with at least p% of the waits
/// at or below it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WaitStats {
    pub mean: f64,
    pub p50: u64,
    pub p95: u64,
    pub max: u64,
}

impl WaitStats {
    pub fn of(waits: &[u64]) -> WaitStats {
        if waits.is_empty() {
            return WaitStats::default();
        }
        let mut sorted = waits.to_vec();
        sorted.sort_unstable();
        let rank = |p: u64| {
            let n = sorted.len() as u64;
            let k = (p * n).div_ceil(100).max(1);
            sorted[(k - 1) as usize]
        };
        WaitStats {
            mean: sorted.iter().sum::<u64>() as f64 / sorted.len() as f64,
            p50: rank(50),
            p95: rank(95),
            max: sorted[sorted.len() - 1],
        }
    }
}

/// One policy's figures for one pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyFigures {
    pub policy: Policy,
    /// Jobs routed to the pool.
    pub jobs: u32,
    /// Of those, jobs a runner took.
    pub started: u32,
    /// Jobs cancelled while still queued (they have no queue wait).
    pub cancelled_before_start: u32,
    /// Jobs still queued when the simulation ended ([`crate::STRANDED_SECS`] past the
    /// trace's last event at most).
    pub never_started: u32,
    /// Jobs whose instance was removed (scaled in or reclaimed) while they ran, re-runs
    /// included.
    pub interrupted: u32,
    /// Interrupted jobs queued again (`rerun_interrupted`, at most once per job). Re-runs
    /// are not in `jobs`, the queue wait or `stranded`.
    pub rerun: u32,
    /// Jobs that never completed: interrupted with no re-run, or a re-run interrupted too,
    /// or never started.
    pub lost: u32,
    /// Jobs that waited more than [`crate::STRANDED_SECS`] for a runner: never started,
    /// started late, or cancelled while still waiting after that long.
    pub stranded: u32,
    pub queue_wait_secs: WaitStats,
    /// Instance-minutes paid for while booting, idle (in service, no job) and busy.
    pub booting_instance_minutes: f64,
    pub idle_instance_minutes: f64,
    pub busy_instance_minutes: f64,
    /// Instance-minutes of the warm pool once warmed (stopped: paid at the warm cost ratio).
    pub warm_instance_minutes: f64,
    /// Instance-minutes (booting, idle and busy) of on-demand instances launched into the
    /// `overflow` pool for this spot pool's jobs: paid at the full price.
    pub overflow_instance_minutes: f64,
    /// Most instances (booting included) at once.
    pub peak_capacity: u32,
    /// (booting + idle + busy) instance-hours x price per instance-hour (x the spot price
    /// ratio on spot) + warm instance-hours x price x the warm cost ratio.
    pub cost: f64,
    /// Chart points, one per tick.
    #[serde(skip)]
    pub series: Vec<Sample>,
}

impl PolicyFigures {
    pub(crate) fn from_world(
        policy: Policy,
        pool: usize,
        world: &World,
        workload: &Workload,
        options: &SimOptions,
    ) -> PolicyFigures {
        let originals = world.rerun_offset.unwrap_or(world.jobs.len());
        let mut f = PolicyFigures {
            policy,
            jobs: 0,
            started: 0,
            cancelled_before_start: 0,
            never_started: 0,
            interrupted: 0,
            rerun: 0,
            lost: 0,
            stranded: 0,
            queue_wait_secs: WaitStats::default(),
            booting_instance_minutes: 0.0,
            idle_instance_minutes: 0.0,
            busy_instance_minutes: 0.0,
            warm_instance_minutes: 0.0,
            overflow_instance_minutes: 0.0,
            peak_capacity: 0,
            cost: 0.0,
            series: world.pools[pool].series.clone(),
        };
        let mut waits = Vec::new();
        for (n, status) in world.jobs.iter().enumerate() {
            if n >= originals {
                if let JobStatus::Done {
                    pool: p,
                    interrupted,
                    ..
                } = *status
                {
                    f.interrupted += u32::from(p == pool && interrupted);
                }
                continue;
            }
            let job = &workload.jobs[n];
            let arrival = job.arrival;
            // How long it waited for a runner; `None`: it never got one.
            let (p, started, waited) = match *status {
                JobStatus::Queued { pool: p } => {
                    if p == pool {
                        f.never_started += 1;
                        f.lost += 1;
                    }
                    (p, None, None)
                }
                JobStatus::Running {
                    pool: p, started, ..
                } => (p, Some(started), Some(started.saturating_sub(arrival))),
                JobStatus::Done {
                    pool: p,
                    started,
                    interrupted,
                    ..
                } => {
                    if p == pool {
                        f.interrupted += u32::from(interrupted);
                        f.cancelled_before_start += u32::from(started.is_none());
                        if interrupted {
                            let rerun = world.rerun_offset.map(|o| &world.jobs[n + o]);
                            f.rerun += u32::from(
                                rerun.is_some_and(|r| !matches!(r, JobStatus::NotArrived)),
                            );
                            let completed = matches!(
                                rerun,
                                Some(JobStatus::Done {
                                    interrupted: false,
                                    ..
                                })
                            );
                            f.lost += u32::from(!completed);
                        }
                    }
                    let left_queue = match (started, job.work) {
                        (Some(s), _) => Some(s),
                        // Cancelled while queued: it left the queue then.
                        (None, Work::CancelledAt(at)) => Some(at.max(arrival)),
                        (None, Work::Runs(_)) => None,
                    };
                    (p, started, left_queue.map(|t| t.saturating_sub(arrival)))
                }
                JobStatus::NotArrived | JobStatus::Ignored => continue,
            };
            if p != pool {
                continue;
            }
            f.jobs += 1;
            if waited.is_none_or(|w| w > STRANDED_SECS) {
                f.stranded += 1;
            }
            if let Some(s) = started {
                f.started += 1;
                waits.push(s.saturating_sub(arrival));
            }
        }
        f.queue_wait_secs = WaitStats::of(&waits);
        let u = world.pools[pool].usage;
        f.booting_instance_minutes = u.booting_secs as f64 / 60.0;
        f.idle_instance_minutes = u.idle_secs as f64 / 60.0;
        f.busy_instance_minutes = u.busy_secs as f64 / 60.0;
        f.peak_capacity = u.peak_instances;
        f.warm_instance_minutes = u.warm_secs as f64 / 60.0;
        f.overflow_instance_minutes = u.overflow_secs as f64 / 60.0;
        let paid_secs = u.booting_secs + u.idle_secs + u.busy_secs - u.overflow_secs;
        let price = options.price_per_hour;
        let running_price = if world.pools[pool].spot {
            price * options.spot_price_ratio
        } else {
            price
        };
        f.cost = paid_secs as f64 / 3600.0 * running_price
            + u.overflow_secs as f64 / 3600.0 * price
            + u.warm_secs as f64 / 3600.0 * price * options.warm_cost_ratio;
        f
    }
}

/// A reported figure: its key (JSON), label (table) and value; where compared, lower is
/// better.
pub struct Metric {
    pub key: &'static str,
    pub label: &'static str,
    pub value: fn(&PolicyFigures) -> f64,
    decimals: usize,
    /// Busy time is the work itself (it differs between policies only by how long
    /// cancelled jobs ran before their cancellation), so it names no winner; nor do re-runs
    /// and warm time, which follow from interruptions and the configuration.
    compared: bool,
    /// Why a figure names no winner (the table's `best` column).
    uncompared: &'static str,
}

pub const METRICS: [Metric; 15] = [
    Metric {
        key: "queue_wait_mean_secs",
        label: "queue wait mean (s)",
        value: |f| f.queue_wait_secs.mean,
        decimals: 1,
        compared: true,
        uncompared: "",
    },
    Metric {
        key: "queue_wait_p50_secs",
        label: "queue wait p50 (s)",
        value: |f| f.queue_wait_secs.p50 as f64,
        decimals: 0,
        compared: true,
        uncompared: "",
    },
    Metric {
        key: "queue_wait_p95_secs",
        label: "queue wait p95 (s)",
        value: |f| f.queue_wait_secs.p95 as f64,
        decimals: 0,
        compared: true,
        uncompared: "",
    },
    Metric {
        key: "queue_wait_max_secs",
        label: "queue wait max (s)",
        value: |f| f.queue_wait_secs.max as f64,
        decimals: 0,
        compared: true,
        uncompared: "",
    },
    Metric {
        key: "interrupted_jobs",
        label: "interrupted jobs",
        value: |f| f64::from(f.interrupted),
        decimals: 0,
        compared: true,
        uncompared: "",
    },
    Metric {
        key: "rerun_jobs",
        label: "re-run jobs",
        value: |f| f64::from(f.rerun),
        decimals: 0,
        compared: false,
        uncompared: "(not compared: follows the interruptions)",
    },
    Metric {
        key: "lost_jobs",
        label: "lost jobs (never completed)",
        value: |f| f64::from(f.lost),
        decimals: 0,
        compared: true,
        uncompared: "",
    },
    Metric {
        key: "stranded_jobs",
        label: "stranded jobs (wait > 30 min)",
        value: |f| f64::from(f.stranded),
        decimals: 0,
        compared: true,
        uncompared: "",
    },
    Metric {
        key: "idle_instance_minutes",
        label: "idle instance-minutes",
        value: |f| f.idle_instance_minutes,
        decimals: 1,
        compared: true,
        uncompared: "",
    },
    Metric {
        key: "booting_instance_minutes",
        label: "booting instance-minutes",
        value: |f| f.booting_instance_minutes,
        decimals: 1,
        compared: true,
        uncompared: "",
    },
    Metric {
        key: "busy_instance_minutes",
        label: "busy instance-minutes",
        value: |f| f.busy_instance_minutes,
        decimals: 1,
        compared: false,
        uncompared: "(not compared: the work itself)",
    },
    Metric {
        key: "warm_instance_minutes",
        label: "warm instance-minutes",
        value: |f| f.warm_instance_minutes,
        decimals: 1,
        compared: false,
        uncompared: "(not compared: the configuration's warm pool, in cost)",
    },
    Metric {
        key: "overflow_instance_minutes",
        label: "overflow instance-minutes",
        value: |f| f.overflow_instance_minutes,
        decimals: 1,
        compared: false,
        uncompared: "(not compared: follows failed spot launches)",
    },
    Metric {
        key: "peak_capacity",
        label: "peak capacity (instances)",
        value: |f| f64::from(f.peak_capacity),
        decimals: 0,
        compared: true,
        uncompared: "",
    },
    Metric {
        key: "cost",
        label: "cost",
        value: |f| f.cost,
        decimals: 2,
        compared: true,
        uncompared: "",
    },
];

/// One pool's comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolReport {
    pub pool: String,
    pub runners_per_instance: u32,
    pub min: u32,
    pub max: u32,
    pub standby: u32,
    /// `on-demand` or `spot`, as simulated.
    pub capacity: &'static str,
    pub warm_pool: u32,
    pub rerun_interrupted: bool,
    /// The runners simulated: the pool's own `ephemeral`, unless `--runners` set every pool's.
    pub ephemeral: bool,
    pub policies: Vec<PolicyFigures>,
    /// Per compared metric key: the best policy, several joined by " = " when they tie, or
    /// "tie" when all are equal.
    pub best: std::collections::BTreeMap<&'static str, String>,
}

impl PoolReport {
    pub(crate) fn new(pool: &scalehook_core::PoolConfig, policies: Vec<PolicyFigures>) -> Self {
        let mut best = std::collections::BTreeMap::new();
        for m in METRICS.iter().filter(|m| m.compared) {
            best.insert(m.key, best_of(&policies, m));
        }
        Self {
            pool: pool.name.clone(),
            runners_per_instance: pool.runners_per_instance.max(1),
            min: pool.min,
            max: pool.max,
            standby: pool.standby,
            capacity: match pool.capacity {
                scalehook_core::Capacity::OnDemand => "on-demand",
                scalehook_core::Capacity::Spot => "spot",
            },
            warm_pool: pool.warm_pool,
            rerun_interrupted: pool.rerun_interrupted,
            ephemeral: pool.ephemeral,
            policies,
            best,
        }
    }

    pub fn policy(&self, policy: Policy) -> Option<&PolicyFigures> {
        self.policies.iter().find(|f| f.policy == policy)
    }
}

fn best_of(policies: &[PolicyFigures], m: &Metric) -> String {
    // Compare at the precision shown, so the table never names a winner it prints as equal.
    let scale = 10f64.powi(m.decimals as i32);
    let shown = |f: &PolicyFigures| ((m.value)(f) * scale).round() as i64;
    let Some(low) = policies.iter().map(shown).min() else {
        return String::new();
    };
    let winners: Vec<&str> = policies
        .iter()
        .filter(|f| shown(f) == low)
        .map(|f| f.policy.name())
        .collect();
    if winners.len() == policies.len() && policies.len() > 1 {
        "tie".into()
    } else {
        winners.join(" = ")
    }
}

/// The simulation window, in unix seconds and RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    pub start: u64,
    pub end: u64,
    pub start_utc: String,
    pub end_utc: String,
}

impl Window {
    pub fn new(start: u64, end: u64) -> Self {
        Self {
            start,
            end,
            start_utc: rfc3339(start),
            end_utc: rfc3339(end),
        }
    }
}

/// What the webhook and GitHub saw of one scalehook run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceReport {
    pub policy: Policy,
    #[serde(flatten)]
    pub figures: ServiceFigures,
}

/// The whole report of one `simulate` run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    pub boot_seconds: u64,
    pub price_per_hour: f64,
    /// Seconds between reconcile passes / utilisation samples / chart points.
    pub tick_secs: u64,
    pub cpu_threshold: CpuThreshold,
    /// What the fixed-size baseline holds: each pool's `max`.
    pub fixed_size: &'static str,
    pub runners: Runners,
    /// Probability that a delivery is lost.
    pub lose_deliveries: f64,
    /// Seconds from a runner taking a job to its `in_progress` delivery arriving.
    pub delivery_delay_secs: u64,
    pub seed: u64,
    pub warm_boot_seconds: u64,
    pub warm_cost_ratio: f64,
    /// Every pool on spot (but overflow pools).
    pub spot: bool,
    pub spot_price_ratio: f64,
    pub spot_interruptions_per_hour: f64,
    pub spot_launch_failure_rate: f64,
    /// Per scalehook run: deliveries, losses, redeliveries, GitHub calls.
    pub services: Vec<ServiceReport>,
    /// From the trace's first event to its last, or to the last simulated job's end if later.
    pub window: Window,
    /// Jobs in the trace (with an arrival and a completion).
    pub jobs: u32,
    /// Jobs no pool takes (labels no pool has, or not allowed), under scalehook's routing.
    pub ignored_jobs: u32,
    /// Jobs left out: no `completed` line, or only one.
    pub incomplete_jobs: u32,
    /// Pools that received at least one job, in configuration order.
    pub pools: Vec<PoolReport>,
}

impl SimReport {
    pub fn pool(&self, name: &str) -> Option<&PoolReport> {
        self.pools.iter().find(|p| p.pool == name)
    }

    pub fn service(&self, policy: Policy) -> Option<&ServiceFigures> {
        self.services
            .iter()
            .find(|s| s.policy == policy)
            .map(|s| &s.figures)
    }

    /// The text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let hours = self.window.end.saturating_sub(self.window.start) as f64 / 3600.0;
        let _ = writeln!(
            out,
            "window {} .. {} ({hours:.1} h); {} jobs, {} ignored (no pool), {} incomplete in the trace",
            self.window.start_utc, self.window.end_utc, self.jobs, self.ignored_jobs, self.incomplete_jobs
        );
        let _ = writeln!(
            out,
            "boot {} s; reconcile and samples every {} s; cost at {:.2} per instance-hour (booting included)",
            self.boot_seconds, self.tick_secs, self.price_per_hour
        );
        let _ = writeln!(
            out,
            "{}; deliveries lost with probability {}, in_progress delivered {} s after the runner takes the job; seed {}",
            match self.runners {
                Runners::PerPool => "runners as each pool's `ephemeral` says",
                Runners::Persistent => "persistent runners in every pool (--runners)",
                Runners::Ephemeral => "ephemeral runners in every pool (--runners)",
            },
            self.lose_deliveries,
            self.delivery_delay_secs,
            self.seed
        );
        let _ = writeln!(
            out,
            "warm pools start in {} s, warm instance-hours cost {} of the price; spot: {}, at {} of the price, {} interruptions per instance-hour, launches fail with probability {}",
            self.warm_boot_seconds,
            self.warm_cost_ratio,
            if self.spot { "every pool but overflow pools" } else { "pools with capacity = \"spot\"" },
            self.spot_price_ratio,
            self.spot_interruptions_per_hour,
            self.spot_launch_failure_rate
        );
        let c = &self.cpu_threshold;
        let _ = writeln!(
            out,
            "cpu-threshold: +{} instance(s) after {} min above {:.0}% utilisation, -1 idle instance after {} min below {:.0}%, {} s cooldown, at least {} instance(s); fixed-size: the pool's max, always on",
            c.step,
            u64::from(c.high_samples) * self.tick_secs / 60,
            c.high * 100.0,
            u64::from(c.low_samples) * self.tick_secs / 60,
            c.low * 100.0,
            c.cooldown_secs,
            c.floor
        );
        if self.pools.is_empty() {
            let _ = writeln!(out, "\nno job of the trace routes to a configured pool");
        }
        for pool in &self.pools {
            let _ =
                writeln!(
                out,
                "\npool {} ({} jobs; min {}, max {}, standby {}, {} runner(s) per instance, {}, {}, warm pool {}{})",
                pool.pool,
                pool.policies.first().map_or(0, |f| f.jobs),
                pool.min,
                pool.max,
                pool.standby,
                pool.runners_per_instance,
                if pool.ephemeral { "ephemeral" } else { "persistent" },
                pool.capacity,
                pool.warm_pool,
                if pool.rerun_interrupted { ", re-runs interrupted jobs" } else { "" }
            );
            let width = |f: &PolicyFigures| f.policy.name().len().max(13);
            let _ = write!(out, "  {:<29}", "metric");
            for f in &pool.policies {
                let _ = write!(out, " {:>w$}", f.policy.name(), w = width(f));
            }
            let _ = writeln!(out, "  best");
            for m in &METRICS {
                let _ = write!(out, "  {:<29}", m.label);
                for f in &pool.policies {
                    let _ = write!(out, " {:>w$.*}", m.decimals, (m.value)(f), w = width(f));
                }
                let best = match pool.best.get(m.key) {
                    Some(b) => b.as_str(),
                    None => m.uncompared,
                };
                let _ = writeln!(out, "  {best}");
            }
            for f in &pool.policies {
                let mut notes = Vec::new();
                if f.cancelled_before_start > 0 {
                    notes.push(format!(
                        "{} cancelled while queued",
                        f.cancelled_before_start
                    ));
                }
                if f.never_started > 0 {
                    notes.push(format!("{} never started", f.never_started));
                }
                if !notes.is_empty() {
                    let _ = writeln!(out, "  {}: {}", f.policy.name(), notes.join(", "));
                }
            }
        }
        if !self.services.is_empty() {
            let _ = writeln!(out);
        }
        for s in &self.services {
            let f = &s.figures;
            let c = &f.github_calls;
            let github = if s.policy == Policy::Scalehook {
                format!(
                    "; {} GitHub calls ({} list runners, {} remove runner, {} job, {} list deliveries, {} redeliver)",
                    c.total(),
                    c.runners,
                    c.remove_runner,
                    c.job,
                    c.deliveries,
                    c.redeliver
                )
            } else {
                "; no GitHub App".to_string()
            };
            let _ = writeln!(
                out,
                "{}: {} deliveries sent, {} lost, {} redelivered; {} reconcile passes{github}",
                s.policy.name(),
                f.deliveries,
                f.lost,
                f.redelivered,
                f.reconciles
            );
        }
        out
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of unix seconds (the core's formatter, the inverse of its parser).
pub fn rfc3339(secs: u64) -> String {
    scalehook_core::clock::format_rfc3339(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalehook_core::trace::parse_rfc3339;

    #[test]
    fn nearest_rank_percentiles() {
        let w = WaitStats::of(&[40, 10, 30, 20]);
        assert_eq!((w.p50, w.p95, w.max), (20, 40, 40));
        assert_eq!(w.mean, 25.0);
        let hundred: Vec<u64> = (1..=100).collect();
        let w = WaitStats::of(&hundred);
        assert_eq!((w.p50, w.p95), (50, 95));
        assert_eq!(WaitStats::of(&[]), WaitStats::default());
        assert_eq!(WaitStats::of(&[7]).p95, 7);
    }

    #[test]
    fn rfc3339_round_trips() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59Z",
            "2024-05-06T09:30:00Z",
            "2100-03-01T00:00:00Z",
        ] {
            let t = parse_rfc3339(s).expect("valid");
            assert_eq!(rfc3339(t), s);
        }
    }
}
