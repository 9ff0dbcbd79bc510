//! The service: the whole flow of one delivery (verify, parse, route, record, decide, act,
//! answer) and of a reconcile pass. Every adapter calls this; none repeats any of it.
//!
//! [`Service`] is the one entry point; each stage of its work is a child module holding an
//! `impl Service` block:
//!
//! - `delivery`: [`Service::handle`]: verify the request and its signature, parse the
//!   event, route the job to a pool, record its transition in the ledger, run the pool's
//!   pass, answer and write the delivery's log line ([`Service::too_large`] for a body the
//!   transport refused).
//! - `converge`: the pool's convergence pass, shared by deliveries and reconcile: the
//!   debounce, the ledger lease, read, decide (the pure [`crate::policy::decide`]), apply
//!   (deregister runners, then remove or replace instances), release and read again.
//! - `removal`: runner truth at the moment of removal: GitHub is asked about an instance
//!   right before it leaves (all its runners idle, then all deregistered), and an instance
//!   with no runner online waits for boot grace and a second sighting in another pass.
//! - `spill`: a spot pool's overflow: what its failing launches leave unmet goes to a ledger
//!   cursor, and the overflow pool's pass adds it to its target (`crate::overflow`).
//! - `hand_on`: [`Service::continue_left_work`]: after the answer, the passes that finish
//!   what a pass stopped at its time budget left (`work_left` keeps which pools), and the
//!   pass over an overflow pool whose spill changed.
//! - `capacity`: the fleet as capacity (a spot pool's instances kept out of it after an
//!   interruption warning), through which the pass describes and sets desired capacity.
//! - `interruption`: [`Service::interruption`] (a spot notice), interrupted jobs recorded
//!   from their completed delivery, their re-run (at most once) and its routing.
//! - `reconcile`: [`Service::reconcile`]: the jobs API re-check, redelivery of failed
//!   deliveries, expiry, a pass over every pool, stranded runners, the state the metrics
//!   observe.
//!
//! Their results are plain data in [`crate::report`]; this module keeps the service's
//! parts, its constructor and accessors, the time bounds every stage derives from the
//! configuration, and [`Service::summary`]. Children may use this module's items; they
//! never use each other's except downwards (`delivery`, `reconcile` and `hand_on` use
//! `converge`; `converge` uses `removal`, `spill` and `capacity`; `converge`, `spill` and
//! `hand_on` use `work_left`; `delivery` and `reconcile` use `interruption`, which uses
//! `converge`, `removal` and `capacity`).

mod capacity;
mod converge;
mod delivery;
mod hand_on;
mod interruption;
mod reconcile;
mod removal;
mod spill;
mod work_left;

pub use converge::{DEBOUNCE_SECS, MAX_PASS_ITERATIONS};
pub use delivery::{DELIVERY_HEADER, EVENT_HEADER};
pub use hand_on::MAX_CONTINUATIONS;
pub use interruption::{InterruptionReport, MAX_RERUNS_PER_PASS};
pub use reconcile::{
    DELIVERIES_CURSOR, DELIVERIES_RESUME_CURSOR, MAX_DELIVERY_PAGES, MAX_JOB_RECHECKS,
    MAX_RECHECK_SCAN, MAX_REDELIVERIES, MAX_REDELIVERY_ATTEMPTS, MAX_TRACKED_REDELIVERIES,
    RECHECK_CURSOR, RECHECK_RATE_RESERVE, REDELIVERIES_CURSOR,
};
pub use removal::SIGHTINGS_CURSOR;

use converge::PoolSlot;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::fleet::Fleet;
use crate::github::{GitHub, NoGitHub};
use crate::housekeeping::UnreadConfigs;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::report::PoolSummary;
use crate::signature::WebhookSecrets;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What webhook-only mode gives up: in `/status` and in every adapter's start-up warning.
pub const WEBHOOK_ONLY_NOTE: &str = "no GitHub App: scale-in is not runner-safe (a runner can take a job just before its instance is removed) and lost deliveries are not repaired (only expired by TTL); configure [github] and the App key to get both";

/// How the per-delivery log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// A `tracing` event (the adapter's subscriber formats it, JSON in production).
    #[default]
    Tracing,
    /// A CloudWatch Embedded Metric Format line on stdout (Lambda): log and metrics in one.
    Emf,
    /// Nothing (benchmarks, simulate).
    Off,
}

/// The delivery service. Cheap to share (`Arc` it); all state is in the ledger and fleet.
pub struct Service {
    config: Arc<Config>,
    secrets: WebhookSecrets,
    ledger: Arc<dyn Ledger>,
    fleet: Arc<dyn Fleet>,
    /// The GitHub App, or [`NoGitHub`] (webhook-only mode).
    github: Arc<dyn GitHub>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    log: LogFormat,
    /// One lock per pool around a convergence pass, holding what the last pass of this
    /// process converged to. Across processes the ledger's per-pool lease serializes passes
    /// (see ARCHITECTURE.md, invariant 10).
    pool_slots: HashMap<String, PoolSlot>,
    /// This service's lease holder id (random, per instance).
    holder: String,
    /// Where runner configurations are stored, for reconcile's housekeeping of unread
    /// ones (AWS's SSM parameters); `None`: no housekeeping.
    unread_configs: Option<Arc<dyn UnreadConfigs>>,
    /// Pools a pass of this service stopped in with work left.
    work_left: work_left::WorkLeft,
    /// Per spot pool: instances the last description left out of capacity.
    left_out: capacity::LeftOut,
}

impl Service {
    pub fn new(
        config: Config,
        secrets: WebhookSecrets,
        ledger: Arc<dyn Ledger>,
        fleet: Arc<dyn Fleet>,
    ) -> Self {
        let pool_slots = config
            .pools
            .iter()
            .map(|p| (p.name.clone(), PoolSlot::default()))
            .collect();
        Self {
            pool_slots,
            holder: random_holder(),
            unread_configs: None,
            work_left: work_left::WorkLeft::default(),
            left_out: capacity::LeftOut::default(),
            config: Arc::new(config),
            secrets,
            ledger,
            fleet,
            github: Arc::new(NoGitHub),
            metrics: Arc::new(Metrics::new()),
            clock: Arc::new(SystemClock),
            log: LogFormat::Tracing,
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Works with GitHub through this client (a GitHub App): runner-safe scale-in,
    /// ephemeral pools, and reconcile from GitHub. Without it, webhook-only mode.
    pub fn with_github(mut self, github: Arc<dyn GitHub>) -> Self {
        self.github = github;
        self
    }

    /// Reconcile deletes this store's unread runner configurations of instances that are
    /// gone or past launching ([`crate::housekeeping`]).
    pub fn with_config_housekeeping(mut self, store: Arc<dyn UnreadConfigs>) -> Self {
        self.unread_configs = Some(store);
        self
    }

    pub fn github(&self) -> &dyn GitHub {
        self.github.as_ref()
    }

    pub fn ledger(&self) -> &dyn Ledger {
        self.ledger.as_ref()
    }

    /// `"github-app"` with a GitHub App, `"webhook-only"` without.
    pub fn github_mode(&self) -> &'static str {
        if self.github.enabled() {
            "github-app"
        } else {
            "webhook-only"
        }
    }

    /// What `github_mode` means for an operator, in one sentence.
    pub fn github_note(&self) -> &'static str {
        if self.github.enabled() {
            "runners are deregistered before their instances are removed; lost deliveries are redelivered and stale jobs re-checked with the jobs API"
        } else {
            WEBHOOK_ONLY_NOTE
        }
    }

    /// This service's convergence lease holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn with_log(mut self, log: LogFormat) -> Self {
        self.log = log;
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn secrets(&self) -> &WebhookSecrets {
        &self.secrets
    }

    /// The budget a pass may use before it stops starting iterations: half the cloud
    /// timeout, so the delivery that runs it is still answered in time.
    fn pass_budget(&self) -> Duration {
        self.config.cloud_timeout / 2
    }

    /// The lease a pass takes: a little longer than the cloud timeout, so a holder that died
    /// mid-pass blocks the pool for seconds, not longer.
    fn lease_secs(&self) -> u64 {
        self.config.cloud_timeout.as_secs() + 3
    }

    fn boot_grace_secs(&self) -> u64 {
        self.config
            .github
            .as_ref()
            .map_or(crate::config::DEFAULT_BOOT_GRACE, |g| g.boot_grace)
            .as_secs()
    }

    fn recheck_after_secs(&self) -> u64 {
        self.config
            .github
            .as_ref()
            .map_or(crate::config::DEFAULT_RECHECK_AFTER, |g| g.recheck_after)
            .as_secs()
    }

    /// One job's ledger record and the decisions kept for its pool since its last
    /// transition (`serve`'s `/status?job=`; never on a cloud function's endpoint).
    pub async fn job(
        &self,
        job_id: u64,
    ) -> Result<
        Option<(
            crate::ledger::JobRecord,
            Vec<crate::metrics::decisions::LoggedDecision>,
        )>,
        String,
    > {
        let Some(record) = self
            .ledger
            .record_of(job_id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let decisions = self
            .metrics
            .decisions()
            .since(&record.pool, record.updated_at);
        Ok(Some((record, decisions)))
    }

    /// Every pool's desired capacity and ledger counts.
    pub async fn summary(&self) -> Result<Vec<PoolSummary>, String> {
        let mut out = Vec::with_capacity(self.config.pools.len());
        for pool in &self.config.pools {
            let account = self
                .ledger
                .pool(&pool.name)
                .await
                .map_err(|e| e.to_string())?;
            let fleet = self.fleet.describe(pool).await.map_err(|e| e.to_string())?;
            out.push(PoolSummary {
                name: pool.name.clone(),
                desired: fleet.desired,
                queued: account.queued,
                running: account.running,
                warm: fleet.warm,
            });
        }
        Ok(out)
    }
}

/// A random lease holder id (16 hex digits, as a correlation id).
fn random_holder() -> String {
    format!("scalehook-{}", crate::report::new_correlation_id())
}
