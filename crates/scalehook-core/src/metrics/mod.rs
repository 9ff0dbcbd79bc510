//! Metrics: counters, per-pool gauges and histograms kept in process, rendered as Prometheus
//! text (local server, Azure) or written as CloudWatch Embedded Metric Format lines (AWS).
//!
//! Job SLIs come from the ledger's own timestamps: a transition the ledger *applied* from
//! `queued` to `in_progress` gives the job's queue wait, one from `in_progress` to `completed`
//! its run time. The ledger applies each transition once (a duplicate or late event is
//! `Recorded::Stale`), so each job is counted once however GitHub delivers its events.

pub mod decisions;
mod emf;

pub use emf::{emf_line, emf_pool_line, emf_reconcile_line, emf_state_lines, state_json};

use crate::ledger::{JobState, Recorded};
use crate::policy::Census;
use crate::report::{DeliveryReport, GitHubReconcile, Outcome, Refusal};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// The CloudWatch namespace of scalehook's EMF metrics.
pub const EMF_NAMESPACE: &str = "Scalehook";

/// Upper bounds (seconds) of the queue wait histogram's buckets: around a runner's boot time.
pub const QUEUE_WAIT_BUCKETS: &[f64] = &[
    5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 240.0, 300.0, 450.0, 600.0, 900.0,
    1200.0, 1800.0, 3600.0,
];
/// Upper bounds (seconds) of the job run time histogram's buckets.
pub const RUN_TIME_BUCKETS: &[f64] = &[
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 7200.0, 14400.0,
    21600.0,
];
/// Upper bounds (seconds) of the delivery latency histogram's buckets (GitHub gives up at 10 s).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Default bound of the "jobs waiting too long" gauge and of the queue wait SLO: a runner's
/// typical boot time (120 s) plus 60 s.
pub const DEFAULT_WAIT_THRESHOLD_SECS: u64 = 180;

/// A Prometheus-style histogram with fixed bucket bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); one more than `bounds` for +Inf.
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: vec![0; bounds.len() + 1],
            count: 0,
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum += v;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// `name_bucket`, `name_sum`, `name_count` lines; `labels` is `k="v",` pairs or empty.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative += n;
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| format!("{b}"));
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {cumulative}");
        }
        let bare = labels.trim_end_matches(',');
        let braces = if bare.is_empty() {
            String::new()
        } else {
            format!("{{{bare}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// What one recorded transition measured of its job (each at most once per job).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobSli {
    /// Seconds from `queued` to `in_progress`.
    pub queue_wait_secs: Option<u64>,
    /// Seconds from `in_progress` to `completed`.
    pub run_secs: Option<u64>,
}

/// The measurement a transition carries: only a transition the ledger applied, from the
/// state just before, with the time the record entered that state.
pub fn job_sli(to: JobState, recorded: &Recorded, at: u64) -> JobSli {
    let mut sli = JobSli::default();
    if let Recorded::Applied {
        from: Some(from),
        since: Some(since),
    } = recorded
    {
        let secs = at.saturating_sub(*since);
        match (from, to) {
            (JobState::Queued, JobState::InProgress) => sli.queue_wait_secs = Some(secs),
            (JobState::InProgress, JobState::Completed) => sli.run_secs = Some(secs),
            _ => {}
        }
    }
    sli
}

/// Queued records per pool (of `Ledger::unfinished_before`'s answer, which also lists
/// waiting and in-progress records).
pub fn queued_records_by_pool(records: &[crate::ledger::JobRecord]) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| r.state == JobState::Queued) {
        *out.entry(r.pool.clone()).or_default() += 1;
    }
    out
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    decisions: decisions::DecisionLog,
}

#[derive(Debug, Default)]
struct Inner {
    deliveries: BTreeMap<Outcome, u64>,
    signature_failures: u64,
    unroutable_jobs: u64,
    /// Verified deliveries refused on purpose, by why (stale job, foreign installation).
    refused: BTreeMap<Refusal, u64>,
    /// (pool, action) -> count
    scale_actions: BTreeMap<(String, &'static str), u64>,
    /// (pool, kind) -> count, kind = ledger|fleet|timeout
    cloud_api_errors: BTreeMap<(String, &'static str), u64>,
    pools: BTreeMap<String, PoolGauges>,
    reconcile_runs: u64,
    reconcile_failures: u64,
    /// pool -> queue wait (s) of jobs that started.
    queue_wait: BTreeMap<String, Histogram>,
    /// pool -> run time (s) of jobs that completed.
    run_time: BTreeMap<String, Histogram>,
    /// Seconds from request to answer of every delivery.
    latency: Option<Histogram>,
    /// pool -> queued jobs waiting longer than the threshold (from the last reconcile).
    waiting_over: BTreeMap<String, u32>,
    wait_threshold_secs: Option<u64>,
    census: BTreeMap<String, Census>,
    /// (x-ratelimit-remaining, requests made) of the GitHub client.
    github: Option<(Option<u64>, u64)>,
    /// Secondary rate limits the GitHub client met (each blocks its calls >= 60 s), and how
    /// many of them an EMF line reported already.
    github_secondary_limits: u64,
    github_secondary_limits_reported: u64,
    redelivered: u64,
    /// Redeliveries not yet written as an EMF line.
    redelivered_unreported: u64,
    /// Redelivery requests GitHub failed or refused (each retried on a later pass, bounded).
    redelivery_failures: u64,
    redelivery_failures_unreported: u64,
    /// Failed deliveries reconcile gave up on (attempts or GitHub's 3-day window spent).
    redeliveries_abandoned: u64,
    redeliveries_abandoned_unreported: u64,
    /// Stale records re-checked with the jobs API.
    rechecked_jobs: u64,
    rechecked_jobs_unreported: u64,
    /// (pool, reason) -> runner deregistrations GitHub refused (reason `busy`: its 422).
    runner_removals_refused: BTreeMap<(String, &'static str), u64>,
    /// pool -> refusals not yet written as an EMF/state line.
    runner_removals_refused_unreported: BTreeMap<String, u64>,
    /// The GitHub client's request count at the last EMF/state line.
    github_requests_reported: u64,
    /// pool -> job counts the last pass of this process left unapplied when it stopped at
    /// its bound (0: it settled).
    work_left: BTreeMap<String, u32>,
    /// (spot pool, overflow pool) -> instances spilled while the spot pool's launches fail.
    spilled: BTreeMap<(String, String), u32>,
    /// pool -> jobs a spot reclaim interrupted (recorded from their completed delivery).
    jobs_interrupted: BTreeMap<String, u64>,
    /// pool -> interrupted jobs GitHub re-ran at scalehook's request.
    jobs_rerun: BTreeMap<String, u64>,
    /// pool -> (interrupted, re-run) not yet written as an EMF/state line.
    interruptions_unreported: BTreeMap<String, (u64, u64)>,
}

/// The latest known figures of one pool.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolGauges {
    pub desired: u32,
    pub queued: u32,
    pub running: u32,
    /// 1 when the pool is at its max with jobs still queued.
    pub at_max_with_queue: u32,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last decisions per pool (`serve`'s `/status?job=`).
    pub fn decisions(&self) -> &decisions::DecisionLog {
        &self.decisions
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one delivery by its report (outcome, latency, and the job SLIs it carries).
    pub fn observe(&self, report: &DeliveryReport) {
        let mut m = self.lock();
        *m.deliveries.entry(report.outcome).or_default() += 1;
        m.latency
            .get_or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(report.latency_us as f64 / 1e6);
        if report.outcome == Outcome::Unauthorized {
            m.signature_failures += 1;
        }
        if let Some(r) = report.refused {
            *m.refused.entry(r).or_default() += 1;
        }
        if report.outcome.is_cloud_error() {
            let pool = report.pool.clone().unwrap_or_default();
            *m.cloud_api_errors
                .entry((pool, cloud_kind(report.outcome)))
                .or_default() += 1;
        }
        if let (Some(pool), Some(action)) = (&report.pool, report.decision) {
            if action != "hold" {
                *m.scale_actions.entry((pool.clone(), action)).or_default() += 1;
            }
        }
    }

    /// Records the SLIs of one recorded transition of a job of `pool` (see [`job_sli`]) and
    /// returns them for the delivery's report. Call it once per `Ledger::record` result.
    pub fn job_recorded(&self, pool: &str, to: JobState, recorded: &Recorded, at: u64) -> JobSli {
        let sli = job_sli(to, recorded, at);
        let mut m = self.lock();
        if let Some(w) = sli.queue_wait_secs {
            m.queue_wait
                .entry(pool.to_string())
                .or_insert_with(|| Histogram::new(QUEUE_WAIT_BUCKETS))
                .observe(w as f64);
        }
        if let Some(r) = sli.run_secs {
            m.run_time
                .entry(pool.to_string())
                .or_insert_with(|| Histogram::new(RUN_TIME_BUCKETS))
                .observe(r as f64);
        }
        sli
    }

    /// A copy of a pool's queue wait histogram.
    pub fn queue_wait(&self, pool: &str) -> Option<Histogram> {
        self.lock().queue_wait.get(pool).cloned()
    }

    /// A copy of a pool's run time histogram.
    pub fn run_time(&self, pool: &str) -> Option<Histogram> {
        self.lock().run_time.get(pool).cloned()
    }

    /// A copy of the delivery latency histogram.
    pub fn latency(&self) -> Histogram {
        self.lock()
            .latency
            .clone()
            .unwrap_or_else(|| Histogram::new(LATENCY_BUCKETS))
    }

    /// The bound of the "jobs waiting too long" gauge, in seconds.
    pub fn wait_threshold_secs(&self) -> u64 {
        self.lock()
            .wait_threshold_secs
            .unwrap_or(DEFAULT_WAIT_THRESHOLD_SECS)
    }

    pub fn set_wait_threshold_secs(&self, secs: u64) {
        self.lock().wait_threshold_secs = Some(secs);
    }

    /// Queued jobs per pool waiting longer than [`Metrics::wait_threshold_secs`]; pools not
    /// named are set to 0.
    pub fn set_waiting_over(&self, pools: &[&str], counts: &BTreeMap<String, u32>) {
        let mut m = self.lock();
        for pool in pools {
            let n = counts.get(*pool).copied().unwrap_or(0);
            m.waiting_over.insert((*pool).to_string(), n);
        }
    }

    pub fn waiting_over(&self, pool: &str) -> Option<u32> {
        self.lock().waiting_over.get(pool).copied()
    }

    /// A pool's fleet census (reconcile).
    pub fn census(&self, pool: &str, census: Census) {
        self.lock().census.insert(pool.to_string(), census);
    }

    /// The GitHub client's figures: `x-ratelimit-remaining` (when seen) and requests made.
    pub fn github(&self, remaining: Option<u64>, requests: u64) {
        self.lock().github = Some((remaining, requests));
    }

    /// Secondary rate limits the GitHub client met since it was built
    /// ([`crate::github::RateLimit::secondary_limited`]).
    pub fn github_secondary_limits(&self, total: u64) {
        self.lock().github_secondary_limits = total;
    }

    /// Deliveries a reconcile pass asked GitHub to redeliver.
    pub fn redelivered(&self, n: u64) {
        let mut m = self.lock();
        m.redelivered += n;
        m.redelivered_unreported += n;
    }

    /// What a reconcile pass's GitHub steps did: redeliveries asked, failed and abandoned,
    /// and jobs re-checked.
    pub fn github_reconcile(&self, g: &GitHubReconcile) {
        let mut m = self.lock();
        let n = u64::from(g.redelivered);
        m.redelivered += n;
        m.redelivered_unreported += n;
        let n = u64::from(g.redelivery_failures);
        m.redelivery_failures += n;
        m.redelivery_failures_unreported += n;
        let n = u64::from(g.redeliveries_abandoned);
        m.redeliveries_abandoned += n;
        m.redeliveries_abandoned_unreported += n;
        let n = u64::from(g.rechecked);
        m.rechecked_jobs += n;
        m.rechecked_jobs_unreported += n;
    }

    /// GitHub refused to deregister a runner of `pool` (`reason`: `busy` for its 422, the
    /// runner took a job): its instance stays.
    pub fn runner_removal_refused(&self, pool: &str, reason: &'static str) {
        let mut m = self.lock();
        *m.runner_removals_refused
            .entry((pool.to_string(), reason))
            .or_default() += 1;
        *m.runner_removals_refused_unreported
            .entry(pool.to_string())
            .or_default() += 1;
    }

    /// Refusals of `pool`'s runner deregistrations for `reason` so far.
    pub fn runner_removals_refused(&self, pool: &str, reason: &'static str) -> u64 {
        self.lock()
            .runner_removals_refused
            .get(&(pool.to_string(), reason))
            .copied()
            .unwrap_or(0)
    }

    /// Deliveries refused for `reason` so far.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.lock().refused.get(&reason).copied().unwrap_or(0)
    }

    /// A job of `pool` that a spot reclaim interrupted.
    pub fn job_interrupted(&self, pool: &str) {
        let mut m = self.lock();
        *m.jobs_interrupted.entry(pool.to_string()).or_default() += 1;
        m.interruptions_unreported
            .entry(pool.to_string())
            .or_default()
            .0 += 1;
    }

    /// An interrupted job of `pool` that GitHub re-ran (201).
    pub fn job_rerun(&self, pool: &str) {
        let mut m = self.lock();
        *m.jobs_rerun.entry(pool.to_string()).or_default() += 1;
        m.interruptions_unreported
            .entry(pool.to_string())
            .or_default()
            .1 += 1;
    }

    /// (interrupted, re-run) jobs of `pool` so far.
    pub fn interruptions(&self, pool: &str) -> (u64, u64) {
        let m = self.lock();
        (
            m.jobs_interrupted.get(pool).copied().unwrap_or(0),
            m.jobs_rerun.get(pool).copied().unwrap_or(0),
        )
    }

    pub fn unroutable_job(&self) {
        self.lock().unroutable_jobs += 1;
    }

    pub fn reconciled(&self, ok: bool) {
        let mut m = self.lock();
        m.reconcile_runs += 1;
        if !ok {
            m.reconcile_failures += 1;
        }
    }

    pub fn cloud_error(&self, pool: &str, outcome: Outcome) {
        *self
            .lock()
            .cloud_api_errors
            .entry((pool.to_string(), cloud_kind(outcome)))
            .or_default() += 1;
    }

    pub fn scale_action(&self, pool: &str, action: &'static str) {
        if action != "hold" {
            *self
                .lock()
                .scale_actions
                .entry((pool.to_string(), action))
                .or_default() += 1;
        }
    }

    pub fn set_pool(&self, pool: &str, gauges: PoolGauges) {
        self.lock().pools.insert(pool.to_string(), gauges);
    }

    /// How much a pass over `pool` left when it ended (0 when it settled).
    pub fn set_work_left(&self, pool: &str, left: u32) {
        self.lock().work_left.insert(pool.to_string(), left);
    }

    /// The instances a spot pool spills into its overflow pool (0: its launches succeed).
    pub fn set_spilled(&self, pool: &str, overflow: &str, instances: u32) {
        self.lock()
            .spilled
            .insert((pool.to_string(), overflow.to_string()), instances);
    }

    pub fn spilled(&self, pool: &str, overflow: &str) -> Option<u32> {
        self.lock()
            .spilled
            .get(&(pool.to_string(), overflow.to_string()))
            .copied()
    }

    pub fn work_left(&self, pool: &str) -> Option<u32> {
        self.lock().work_left.get(pool).copied()
    }

    pub fn pool(&self, pool: &str) -> Option<PoolGauges> {
        self.lock().pools.get(pool).copied()
    }

    pub fn deliveries(&self, outcome: Outcome) -> u64 {
        self.lock().deliveries.get(&outcome).copied().unwrap_or(0)
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render_prometheus(&self) -> String {
        let m = self.lock();
        let mut out = String::with_capacity(2048);
        header(
            &mut out,
            "scalehook_deliveries_total",
            "counter",
            "Webhook deliveries by outcome.",
        );
        for o in Outcome::ALL {
            let n = m.deliveries.get(&o).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "scalehook_deliveries_total{{outcome=\"{}\"}} {n}",
                o.as_str()
            );
        }
        header(
            &mut out,
            "scalehook_signature_failures_total",
            "counter",
            "Deliveries rejected for a missing or bad signature.",
        );
        let _ = writeln!(
            out,
            "scalehook_signature_failures_total {}",
            m.signature_failures
        );
        header(
            &mut out,
            "scalehook_unroutable_jobs_total",
            "counter",
            "Jobs whose labels no pool has.",
        );
        let _ = writeln!(out, "scalehook_unroutable_jobs_total {}", m.unroutable_jobs);
        header(
            &mut out,
            "scalehook_jobs_interrupted_total",
            "counter",
            "Jobs of spot pools that a reclaim interrupted (their runner was busy on an instance the cloud warned about, and they did not succeed).",
        );
        for (pool, n) in &m.jobs_interrupted {
            let _ = writeln!(
                out,
                "scalehook_jobs_interrupted_total{{pool=\"{}\"}} {n}",
                escape(pool)
            );
        }
        header(
            &mut out,
            "scalehook_jobs_rerun_total",
            "counter",
            "Interrupted jobs GitHub re-ran at scalehook's request (rerun_interrupted), at most once each.",
        );
        for (pool, n) in &m.jobs_rerun {
            let _ = writeln!(
                out,
                "scalehook_jobs_rerun_total{{pool=\"{}\"}} {n}",
                escape(pool)
            );
        }
        header(
            &mut out,
            "scalehook_refused_deliveries_total",
            "counter",
            "Signed deliveries refused (answered 202): a job older than the ledger's retention (stale_job), another installation of the App (foreign_installation).",
        );
        for r in Refusal::ALL {
            let n = m.refused.get(&r).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "scalehook_refused_deliveries_total{{reason=\"{}\"}} {n}",
                r.as_str()
            );
        }
        header(
            &mut out,
            "scalehook_scale_actions_total",
            "counter",
            "Capacity changes by pool and action.",
        );
        for ((pool, action), n) in &m.scale_actions {
            let _ = writeln!(
                out,
                "scalehook_scale_actions_total{{pool=\"{}\",action=\"{action}\"}} {n}",
                escape(pool)
            );
        }
        header(
            &mut out,
            "scalehook_cloud_api_errors_total",
            "counter",
            "Failed ledger or fleet calls by pool and kind.",
        );
        for ((pool, kind), n) in &m.cloud_api_errors {
            let _ = writeln!(
                out,
                "scalehook_cloud_api_errors_total{{pool=\"{}\",kind=\"{kind}\"}} {n}",
                escape(pool)
            );
        }
        header(
            &mut out,
            "scalehook_reconcile_runs_total",
            "counter",
            "Reconcile passes run.",
        );
        let _ = writeln!(out, "scalehook_reconcile_runs_total {}", m.reconcile_runs);
        header(
            &mut out,
            "scalehook_reconcile_failures_total",
            "counter",
            "Reconcile passes with at least one failed pool.",
        );
        let _ = writeln!(
            out,
            "scalehook_reconcile_failures_total {}",
            m.reconcile_failures
        );
        type Gauge = (&'static str, &'static str, fn(&PoolGauges) -> u32);
        let gauges: [Gauge; 4] = [
            (
                "scalehook_pool_desired_capacity",
                "Desired capacity (instances) by pool.",
                |g| g.desired,
            ),
            ("scalehook_pool_queued_jobs", "Queued jobs by pool.", |g| {
                g.queued
            }),
            (
                "scalehook_pool_running_jobs",
                "Running jobs by pool.",
                |g| g.running,
            ),
            (
                "scalehook_pool_at_max_with_queue",
                "1 when a pool is at max capacity with jobs queued.",
                |g| g.at_max_with_queue,
            ),
        ];
        for (name, help, get) in gauges {
            header(&mut out, name, "gauge", help);
            for (pool, g) in &m.pools {
                let _ = writeln!(out, "{name}{{pool=\"{}\"}} {}", escape(pool), get(g));
            }
        }
        header(
            &mut out,
            "scalehook_pass_work_left",
            "gauge",
            "Job counts the last pass of this process over a pool left unapplied when it stopped at its time bound (0: it settled); handed on to a pass after the answer.",
        );
        for (pool, left) in &m.work_left {
            let _ = writeln!(
                out,
                "scalehook_pass_work_left{{pool=\"{}\"}} {left}",
                escape(pool)
            );
        }
        header(
            &mut out,
            "scalehook_overflow_spilled_instances",
            "gauge",
            "Instances a spot pool cannot launch (its launches fail) and spills into its on-demand overflow pool (0: its launches succeed).",
        );
        for ((pool, overflow), n) in &m.spilled {
            let _ = writeln!(
                out,
                "scalehook_overflow_spilled_instances{{pool=\"{}\",overflow=\"{}\"}} {n}",
                escape(pool),
                escape(overflow)
            );
        }
        render_slis(&m, &mut out);
        out
    }
}

/// The histograms and the reconcile-time gauges of [`Metrics::render_prometheus`].
fn render_slis(m: &Inner, out: &mut String) {
    header(
        out,
        "scalehook_job_queue_wait_seconds",
        "histogram",
        "Seconds each job waited from queued to in_progress, by pool (once per job).",
    );
    for (pool, h) in &m.queue_wait {
        h.render(out, "scalehook_job_queue_wait_seconds", &pool_label(pool));
    }
    header(
        out,
        "scalehook_job_run_seconds",
        "histogram",
        "Seconds each job ran from in_progress to completed, by pool (once per job).",
    );
    for (pool, h) in &m.run_time {
        h.render(out, "scalehook_job_run_seconds", &pool_label(pool));
    }
    header(
        out,
        "scalehook_delivery_duration_seconds",
        "histogram",
        "Seconds from a delivery's request to its answer.",
    );
    m.latency
        .clone()
        .unwrap_or_else(|| Histogram::new(LATENCY_BUCKETS))
        .render(out, "scalehook_delivery_duration_seconds", "");
    header(
        out,
        "scalehook_queue_wait_threshold_seconds",
        "gauge",
        "The bound of scalehook_pool_jobs_waiting_over_threshold.",
    );
    let threshold = m.wait_threshold_secs.unwrap_or(DEFAULT_WAIT_THRESHOLD_SECS);
    let _ = writeln!(out, "scalehook_queue_wait_threshold_seconds {threshold}");
    header(
        out,
        "scalehook_pool_jobs_waiting_over_threshold",
        "gauge",
        "Queued jobs waiting longer than the threshold, by pool (at the last reconcile).",
    );
    for (pool, n) in &m.waiting_over {
        let _ = writeln!(
            out,
            "scalehook_pool_jobs_waiting_over_threshold{{pool=\"{}\"}} {n}",
            escape(pool)
        );
    }
    header(
        out,
        "scalehook_pool_instances",
        "gauge",
        "Instances by pool and state (live, launching, busy, idle, unregistered, and warm: in the warm pool, not capacity).",
    );
    for (pool, c) in &m.census {
        let mut states = vec![
            ("live", c.live),
            ("launching", c.launching),
            ("busy", c.busy),
            ("idle", c.idle),
            ("warm", c.warm),
        ];
        if let Some(u) = c.unregistered {
            states.push(("unregistered", u));
        }
        for (state, n) in states {
            let _ = writeln!(
                out,
                "scalehook_pool_instances{{pool=\"{}\",state=\"{state}\"}} {n}",
                escape(pool)
            );
        }
    }
    header(
        out,
        "scalehook_github_rate_limit_remaining",
        "gauge",
        "x-ratelimit-remaining of the GitHub App's last answer.",
    );
    if let Some((Some(remaining), _)) = m.github {
        let _ = writeln!(out, "scalehook_github_rate_limit_remaining {remaining}");
    }
    header(
        out,
        "scalehook_github_secondary_rate_limits_total",
        "counter",
        "Secondary rate limits GitHub answered (each blocks the App's calls for at least 60 s).",
    );
    if m.github.is_some() {
        let _ = writeln!(
            out,
            "scalehook_github_secondary_rate_limits_total {}",
            m.github_secondary_limits
        );
    }
    header(
        out,
        "scalehook_github_requests_total",
        "counter",
        "Requests the GitHub App client made.",
    );
    if let Some((_, requests)) = m.github {
        let _ = writeln!(out, "scalehook_github_requests_total {requests}");
    }
    header(
        out,
        "scalehook_redelivered_deliveries_total",
        "counter",
        "Failed deliveries reconcile asked GitHub to redeliver.",
    );
    let _ = writeln!(
        out,
        "scalehook_redelivered_deliveries_total {}",
        m.redelivered
    );
    let counters: [(&str, &str, u64); 3] = [
        (
            "scalehook_redelivery_failures_total",
            "Redelivery requests GitHub failed or refused (retried on a later pass, bounded).",
            m.redelivery_failures,
        ),
        (
            "scalehook_redeliveries_abandoned_total",
            "Failed deliveries reconcile gave up redelivering (attempts or GitHub's 3-day window spent).",
            m.redeliveries_abandoned,
        ),
        (
            "scalehook_rechecked_jobs_total",
            "Stale queued/in-progress records reconcile re-checked with the jobs API.",
            m.rechecked_jobs,
        ),
    ];
    for (name, help, n) in counters {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {n}");
    }
    header(
        out,
        "scalehook_runner_removals_refused_total",
        "counter",
        "Runner deregistrations GitHub refused, by pool and reason (busy: 422, the runner took a job); the instance stays.",
    );
    for ((pool, reason), n) in &m.runner_removals_refused {
        let _ = writeln!(
            out,
            "scalehook_runner_removals_refused_total{{pool=\"{}\",reason=\"{reason}\"}} {n}",
            escape(pool)
        );
    }
}

fn pool_label(pool: &str) -> String {
    format!("pool=\"{}\",", escape(pool))
}

fn cloud_kind(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::LedgerError => "ledger",
        Outcome::Timeout => "timeout",
        _ => "fleet",
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_counts_outcomes() {
        let m = Metrics::new();
        let mut r = DeliveryReport::new(Outcome::Unauthorized);
        m.observe(&r);
        r.outcome = Outcome::Handled;
        r.pool = Some("p".into());
        r.decision = Some("scale_out");
        m.observe(&r);
        m.set_pool(
            "p",
            PoolGauges {
                desired: 3,
                queued: 1,
                running: 2,
                at_max_with_queue: 0,
            },
        );
        let text = m.render_prometheus();
        assert!(text.contains("scalehook_deliveries_total{outcome=\"unauthorized\"} 1"));
        assert!(text.contains("scalehook_signature_failures_total 1"));
        assert!(text.contains("scalehook_scale_actions_total{pool=\"p\",action=\"scale_out\"} 1"));
        assert!(text.contains("scalehook_pool_desired_capacity{pool=\"p\"} 3"));
    }

    #[test]
    fn emf_line_is_one_valid_json_object() {
        let mut r = DeliveryReport::new(Outcome::Handled);
        r.pool = Some("p".into());
        r.capacity_after = Some(2);
        r.decision = Some("scale_out");
        let line = emf_line(&r, 1_700_000_000_000);
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(v["DesiredCapacity"], 2);
        assert_eq!(v["Pool"], "p");
        assert_eq!(v["ScaleActions"], 1);
        // every metric named in a directive is a number at the root
        for d in v["_aws"]["CloudWatchMetrics"].as_array().expect("array") {
            for m in d["Metrics"].as_array().expect("metrics") {
                let name = m["Name"].as_str().expect("name");
                assert!(v[name].is_number(), "{name}");
            }
        }
    }
}
