//! The service: the whole flow of one delivery (verify, parse, route, record, decide, act,
//! answer) and of a reconcile pass. Every adapter calls this; none repeats any of it.

use crate::config::{Config, PoolConfig};
use crate::event::{Event, JobAction, WorkflowJobEvent};
use crate::fleet::{Fleet, FleetError};
use crate::github::{GitHub, NoGitHub};
use crate::ledger::{Expired, JobState, Ledger, LedgerError, PoolLedger, Transition};
use crate::metrics::{Metrics, PoolGauges};
use crate::policy::{decide, CapacityAction, Decision, Trigger};
use crate::report::{DeliveryReport, Outcome};
use crate::signature::{WebhookSecrets, SIGNATURE_HEADER};
use http::{HeaderMap, Method};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The event header.
pub const EVENT_HEADER: &str = "x-github-event";
/// The delivery GUID header.
pub const DELIVERY_HEADER: &str = "x-github-delivery";

/// Where "now" comes from: the system clock, or a virtual one (tests, `simulate`).
pub trait Clock: Send + Sync {
    /// Unix seconds.
    fn now(&self) -> u64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(now: u64) -> Self {
        Self(AtomicU64::new(now))
    }
    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::SeqCst);
    }
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

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

/// The answer to one delivery: status, small JSON body, and the report behind them.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub report: DeliveryReport,
}

impl Answer {
    fn from_report(report: DeliveryReport) -> Self {
        Self {
            status: report.outcome.status(),
            body: report.answer_body(),
            report,
        }
    }

    /// As an `http` response with `content-type: application/json` (and `allow: POST`
    /// on a 405), for adapters built on the `http` types.
    pub fn into_http(self) -> http::Response<String> {
        let mut builder = http::Response::builder()
            .status(self.status)
            .header(http::header::CONTENT_TYPE, "application/json");
        if self.status == 405 {
            builder = builder.header(http::header::ALLOW, "POST");
        }
        builder
            .body(self.body)
            .unwrap_or_else(|_| http::Response::new(String::new()))
    }
}

/// One pool's figures, for `replay --json` summaries and diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolSummary {
    pub name: String,
    pub desired: u32,
    pub queued: u32,
    pub running: u32,
}

/// What a reconcile pass did for one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolReconcile {
    pub pool: String,
    pub action: Option<&'static str>,
    pub before: Option<u32>,
    pub after: Option<u32>,
    pub error: Option<String>,
}

/// What a reconcile pass did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    pub expired: u32,
    pub forgotten: u32,
    pub ledger_error: Option<String>,
    pub pools: Vec<PoolReconcile>,
}

impl ReconcileReport {
    /// True when every step succeeded.
    pub fn ok(&self) -> bool {
        self.ledger_error.is_none() && self.pools.iter().all(|p| p.error.is_none())
    }
}

/// A failure of a cloud dependency while handling a delivery or a pool.
#[derive(Debug)]
enum CloudFailure {
    Ledger(LedgerError),
    Fleet(FleetError),
    Timeout,
}

impl CloudFailure {
    fn outcome(&self) -> Outcome {
        match self {
            CloudFailure::Ledger(_) => Outcome::LedgerError,
            CloudFailure::Fleet(_) => Outcome::FleetError,
            CloudFailure::Timeout => Outcome::Timeout,
        }
    }
    fn message(&self) -> String {
        match self {
            CloudFailure::Ledger(e) => e.to_string(),
            CloudFailure::Fleet(e) => e.to_string(),
            CloudFailure::Timeout => "cloud calls did not finish within cloud_timeout_ms".into(),
        }
    }
}

impl From<LedgerError> for CloudFailure {
    fn from(e: LedgerError) -> Self {
        CloudFailure::Ledger(e)
    }
}

impl From<FleetError> for CloudFailure {
    fn from(e: FleetError) -> Self {
        CloudFailure::Fleet(e)
    }
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
    /// One lock per pool around read-decide-apply, so concurrent deliveries in this process
    /// cannot apply decisions made on stale reads (e.g. a later, lower scale-out undoing a
    /// higher one). Across processes (Lambda instances) the residual race is bounded by
    /// scale-in protection of busy instances and repaired by the next delivery or reconcile.
    pool_locks: std::collections::HashMap<String, tokio::sync::Mutex<()>>,
}

impl Service {
    pub fn new(
        config: Config,
        secrets: WebhookSecrets,
        ledger: Arc<dyn Ledger>,
        fleet: Arc<dyn Fleet>,
    ) -> Self {
        let pool_locks = config
            .pools
            .iter()
            .map(|p| (p.name.clone(), tokio::sync::Mutex::new(())))
            .collect();
        Self {
            pool_locks,
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

    pub fn github(&self) -> &dyn GitHub {
        self.github.as_ref()
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

    /// Handles one webhook request: any method, headers (case-insensitive) and the raw body.
    pub async fn handle(&self, method: &Method, headers: &HeaderMap, body: &[u8]) -> Answer {
        let started = Instant::now();
        let mut report = self.handle_inner(method, headers, body).await;
        report.latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.metrics.observe(&report);
        self.write_log(&report);
        Answer::from_report(report)
    }

    /// The answer to a body the transport refused to read past `max_body_bytes` (a
    /// streamed body can be over the limit before it is all read), counted like any other.
    pub fn too_large(&self, headers: &HeaderMap) -> Answer {
        let mut report = DeliveryReport::new(Outcome::PayloadTooLarge);
        report.reason = Some("body exceeds max_body_bytes".into());
        report.delivery = header_text(headers, DELIVERY_HEADER);
        self.metrics.observe(&report);
        self.write_log(&report);
        Answer::from_report(report)
    }

    async fn handle_inner(
        &self,
        method: &Method,
        headers: &HeaderMap,
        body: &[u8],
    ) -> DeliveryReport {
        let reject = |outcome, reason: &str| {
            let mut r = DeliveryReport::new(outcome);
            r.reason = Some(reason.to_string());
            r
        };
        if method != Method::POST {
            return reject(Outcome::MethodNotAllowed, "only POST is accepted");
        }
        if body.len() > self.config.max_body_bytes {
            return reject(Outcome::PayloadTooLarge, "body exceeds max_body_bytes");
        }
        if !is_json(headers) {
            return reject(
                Outcome::UnsupportedMediaType,
                "content type must be application/json (set it on the GitHub webhook)",
            );
        }
        let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
        if let Err(e) = self.secrets.verify(signature, body) {
            let mut r = reject(Outcome::Unauthorized, &e.to_string());
            r.delivery = header_text(headers, DELIVERY_HEADER);
            return r;
        }
        let mut report = DeliveryReport::new(Outcome::Ignored);
        report.delivery = header_text(headers, DELIVERY_HEADER);
        let Some(event_name) = header_text(headers, EVENT_HEADER) else {
            report.outcome = Outcome::BadRequest;
            report.reason = Some("missing X-GitHub-Event header".into());
            return report;
        };
        report.event = Some(event_name.clone());
        match Event::parse(&event_name, body) {
            Err(e) => {
                report.outcome = Outcome::BadRequest;
                report.reason = Some(e.to_string());
                report
            }
            Ok(Event::Ping(_)) => {
                report.outcome = Outcome::Pong;
                report
            }
            Ok(Event::Other(name)) => {
                report.reason = Some(format!("event {name} is not handled"));
                report
            }
            Ok(Event::WorkflowJob(job)) => self.handle_job(*job, report).await,
        }
    }

    async fn handle_job(
        &self,
        job: WorkflowJobEvent,
        mut report: DeliveryReport,
    ) -> DeliveryReport {
        report.action = Some(job.action.as_str().to_string());
        report.job_id = Some(job.workflow_job.id);
        let (state, trigger) = match job.action {
            JobAction::Waiting => (JobState::Waiting, Trigger::Demand),
            JobAction::Queued => (JobState::Queued, Trigger::Demand),
            JobAction::InProgress => (JobState::InProgress, Trigger::Demand),
            JobAction::Completed => (JobState::Completed, Trigger::Release),
            JobAction::Other(ref a) => {
                report.reason = Some(format!("workflow_job action {a} is not handled"));
                return report;
            }
        };
        let repository = job.repository.as_ref().map(|r| r.full_name.as_str());
        if !self.config.admits(repository, job.owner()) {
            report.reason = Some("repository or organization is not allowed".into());
            return report;
        }
        let Some(pool) = self.config.route(&job.workflow_job.labels) else {
            self.metrics.unroutable_job();
            report.reason = Some("no pool has all of the job's labels".into());
            return report;
        };
        report.pool = Some(pool.name.clone());
        let transition = Transition {
            job_id: job.workflow_job.id,
            pool: pool.name.clone(),
            to: state,
            runner: job.workflow_job.runner().map(str::to_string),
            at: self.clock.now(),
            repository: job.repository.as_ref().map(|r| r.full_name.clone()),
        };
        let work = async {
            let recorded = self.ledger.record(&transition).await?;
            report.duplicate = Some(!recorded.is_applied());
            // Queue wait / run time, from the ledger's own times: once per job.
            let sli = self
                .metrics
                .job_recorded(&pool.name, state, &recorded, transition.at);
            (report.queue_wait_secs, report.run_secs) = (sli.queue_wait_secs, sli.run_secs);
            // Duplicates go on to decide and apply too: applying is idempotent, and a
            // redelivery after a failed cloud call is what repairs capacity.
            self.converge(pool, trigger).await
        };
        match tokio::time::timeout(self.config.cloud_timeout, work).await {
            Ok(Ok((account, decision))) => {
                report.outcome = Outcome::Handled;
                report.decision = Some(decision.capacity.name());
                report.capacity_before = Some(decision.current);
                report.capacity_after = Some(decision.desired_after());
                report.queued = Some(account.queued);
                report.running = Some(account.running);
            }
            Ok(Err(failure)) => {
                report.outcome = failure.outcome();
                report.reason = Some(failure.message());
            }
            Err(_) => {
                report.outcome = Outcome::Timeout;
                report.reason = Some(CloudFailure::Timeout.message());
            }
        }
        report
    }

    /// Reads the pool's account and fleet, decides, applies, and updates the pool gauges.
    async fn converge(
        &self,
        pool: &PoolConfig,
        trigger: Trigger,
    ) -> Result<(PoolLedger, Decision), CloudFailure> {
        let _serialized = match self.pool_locks.get(&pool.name) {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let account = self.ledger.pool(&pool.name).await?;
        let fleet = self.fleet.describe(pool).await?;
        let decision = decide(trigger, pool, &account, &fleet);
        self.apply(pool, &decision).await?;
        let desired = decision.desired_after();
        // At max against the effective bound: the group's own max (an ASG's max_size) when
        // it is lower than the pool's, since the policy clamps to both.
        let max = fleet
            .max
            .map_or(pool.max, |group_max| group_max.min(pool.max));
        self.metrics.set_pool(
            &pool.name,
            PoolGauges {
                desired,
                queued: account.queued,
                running: account.running,
                at_max_with_queue: u32::from(desired >= max && account.queued > 0),
            },
        );
        Ok((account, decision))
    }

    async fn apply(&self, pool: &PoolConfig, d: &Decision) -> Result<(), FleetError> {
        // Protect busy instances before anything is removed.
        if !d.protect.is_empty() {
            self.fleet.set_protection(pool, &d.protect, true).await?;
        }
        match &d.capacity {
            CapacityAction::Hold => {}
            CapacityAction::ScaleOut { to } | CapacityAction::CancelLaunches { to } => {
                self.fleet.set_desired(pool, *to).await?
            }
            CapacityAction::Remove { instance_ids } => {
                for id in instance_ids {
                    self.fleet.remove_instance(pool, id).await?;
                }
            }
        }
        if !d.unprotect.is_empty() {
            self.fleet.set_protection(pool, &d.unprotect, false).await?;
        }
        Ok(())
    }

    /// The scheduled pass: expire stale ledger records, then converge every pool to its
    /// target. A failing pool does not stop the others; the report says which failed.
    pub async fn reconcile(&self) -> ReconcileReport {
        let now = self.clock.now();
        // Bounded like every other cloud call, so a hung ledger cannot hold the pass until
        // the function's own timeout kills it (and the pools' convergence with it).
        let expiry = tokio::time::timeout(
            self.config.cloud_timeout,
            self.ledger.expire(now, &self.config.ledger),
        )
        .await;
        let (expired, ledger_error) = match expiry {
            Ok(Ok(e)) => (e, None),
            Ok(Err(e)) => (Expired::default(), Some(e.to_string())),
            Err(_) => (Expired::default(), Some(CloudFailure::Timeout.message())),
        };
        let mut pools = Vec::with_capacity(self.config.pools.len());
        for pool in &self.config.pools {
            let result = tokio::time::timeout(
                self.config.cloud_timeout,
                self.converge(pool, Trigger::Reconcile),
            )
            .await
            .unwrap_or(Err(CloudFailure::Timeout));
            pools.push(match result {
                Ok((_, d)) => {
                    self.metrics.scale_action(&pool.name, d.capacity.name());
                    PoolReconcile {
                        pool: pool.name.clone(),
                        action: Some(d.capacity.name()),
                        before: Some(d.current),
                        after: Some(d.desired_after()),
                        error: None,
                    }
                }
                Err(f) => {
                    self.metrics.cloud_error(&pool.name, f.outcome());
                    PoolReconcile {
                        pool: pool.name.clone(),
                        action: None,
                        before: None,
                        after: None,
                        error: Some(f.message()),
                    }
                }
            });
        }
        let report = ReconcileReport {
            expired: expired.expired,
            forgotten: expired.forgotten,
            ledger_error,
            pools,
        };
        self.metrics.reconciled(report.ok());
        self.observe_state(now).await;
        if self.log == LogFormat::Emf {
            let ms = unix_millis();
            for pool in &self.config.pools {
                if let Some(g) = self.metrics.pool(&pool.name) {
                    println!("{}", crate::metrics::emf_pool_line(&pool.name, &g, ms));
                }
            }
            println!("{}", crate::metrics::emf_reconcile_line(&report, ms));
        } else if self.log != LogFormat::Off {
            tracing::info!(
                target: "scalehook::reconcile",
                ok = report.ok(),
                report = %serde_json::to_string(&report).unwrap_or_default(),
                "reconcile"
            );
        }
        report
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
            });
        }
        Ok(out)
    }

    /// Reconcile's cheap SLI pass (metrics only, never fails the pass): queued jobs waiting
    /// past the threshold per pool, from the ledger's oldest unfinished records, and the
    /// GitHub client's rate limit; written as EMF lines on Lambda.
    async fn observe_state(&self, now: u64) {
        let threshold = self.metrics.wait_threshold_secs();
        let unfinished = tokio::time::timeout(
            self.config.cloud_timeout,
            self.ledger
                .unfinished_before(now.saturating_sub(threshold), 1000),
        )
        .await;
        if let Ok(Ok(records)) = unfinished {
            let pools: Vec<&str> = self.config.pools.iter().map(|p| p.name.as_str()).collect();
            let counts = crate::metrics::queued_records_by_pool(&records);
            self.metrics.set_waiting_over(&pools, &counts);
        }
        if self.github.enabled() {
            let limit = self.github.rate_limit();
            self.metrics.github(limit.remaining, limit.requests);
        }
        if self.log == LogFormat::Emf {
            for line in crate::metrics::emf_state_lines(&self.metrics, unix_millis()) {
                println!("{line}");
            }
        }
    }

    fn write_log(&self, report: &DeliveryReport) {
        match self.log {
            LogFormat::Off => {}
            LogFormat::Emf => {
                println!("{}", crate::metrics::emf_line(report, unix_millis()));
            }
            LogFormat::Tracing => {
                tracing::info!(
                    target: "scalehook::delivery",
                    delivery = report.delivery.as_deref(),
                    event = report.event.as_deref(),
                    action = report.action.as_deref(),
                    job_id = report.job_id,
                    pool = report.pool.as_deref(),
                    outcome = report.outcome.as_str(),
                    reason = report.reason.as_deref(),
                    decision = report.decision,
                    duplicate = report.duplicate,
                    capacity_before = report.capacity_before,
                    capacity_after = report.capacity_after,
                    queued = report.queued,
                    running = report.running,
                    queue_wait_secs = report.queue_wait_secs,
                    run_secs = report.run_secs,
                    latency_us = report.latency_us,
                    "delivery"
                );
            }
        }
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `application/json`, with or without parameters, any case.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// A header as text for logs: printable ASCII only, at most 100 characters.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    if v.is_empty() {
        return None;
    }
    Some(
        v.chars()
            .filter(|c| c.is_ascii_graphic())
            .take(100)
            .collect(),
    )
}
