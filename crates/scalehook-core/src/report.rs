//! What a delivery and a reconcile pass did: the outcome (one HTTP status each), the
//! per-delivery report behind the answer, the log line and the metrics, the answer itself,
//! and the reconcile report. Plain data: every stage writes these, and the metrics read them.

use crate::fleet::FleetError;
use crate::ledger::LedgerError;
use serde::Serialize;

/// How a delivery ended. Each outcome has one HTTP status (see [`Outcome::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A `workflow_job` was recorded and its decision applied.
    Handled,
    Pong,
    /// Acknowledged and dropped: another event, an unknown action, no pool, not allowed.
    Ignored,
    BadRequest,
    Unauthorized,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// The ledger failed: redeliver.
    LedgerError,
    /// The fleet failed: redeliver.
    FleetError,
    /// The cloud calls did not finish in time: redeliver.
    Timeout,
}

impl Outcome {
    pub fn status(self) -> u16 {
        match self {
            Outcome::Handled | Outcome::Pong => 200,
            Outcome::Ignored => 202,
            Outcome::BadRequest => 400,
            Outcome::Unauthorized => 401,
            Outcome::MethodNotAllowed => 405,
            Outcome::PayloadTooLarge => 413,
            Outcome::UnsupportedMediaType => 415,
            Outcome::FleetError => 502,
            Outcome::LedgerError => 503,
            Outcome::Timeout => 504,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Handled => "handled",
            Outcome::Pong => "pong",
            Outcome::Ignored => "ignored",
            Outcome::BadRequest => "bad_request",
            Outcome::Unauthorized => "unauthorized",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::PayloadTooLarge => "payload_too_large",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::LedgerError => "ledger_error",
            Outcome::FleetError => "fleet_error",
            Outcome::Timeout => "timeout",
        }
    }

    /// The fixed reason a 5xx answer carries. The failure's own text (an SDK message with
    /// an account id or role ARN, an ARM resource path) goes only to the log line, under
    /// the answer's correlation id: anyone who can read the hook's Recent Deliveries on
    /// GitHub reads the answer body.
    pub fn public_reason(self) -> Option<&'static str> {
        match self {
            Outcome::LedgerError => Some("ledger call failed: redeliver"),
            Outcome::FleetError => Some("fleet call failed: redeliver"),
            Outcome::Timeout => Some("cloud calls did not finish in time: redeliver"),
            _ => None,
        }
    }

    /// The outcomes where a cloud dependency failed.
    pub fn is_cloud_error(self) -> bool {
        matches!(
            self,
            Outcome::LedgerError | Outcome::FleetError | Outcome::Timeout
        )
    }

    pub const ALL: [Outcome; 11] = [
        Outcome::Handled,
        Outcome::Pong,
        Outcome::Ignored,
        Outcome::BadRequest,
        Outcome::Unauthorized,
        Outcome::MethodNotAllowed,
        Outcome::PayloadTooLarge,
        Outcome::UnsupportedMediaType,
        Outcome::LedgerError,
        Outcome::FleetError,
        Outcome::Timeout,
    ];
}

/// The fields of the one log line a delivery writes. Never the secret, never the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    pub delivery: Option<String>,
    pub event: Option<String>,
    pub action: Option<String>,
    pub job_id: Option<u64>,
    pub pool: Option<String>,
    pub outcome: Outcome,
    /// Why, for every outcome but `handled`. For a 5xx, the failure's details: the log's,
    /// never the answer's (see [`Outcome::public_reason`]).
    pub reason: Option<String>,
    /// Names a 5xx answer in the log: the answer carries it next to its fixed reason.
    pub correlation_id: Option<String>,
    /// Why a verified, well-formed delivery was refused (answered 202 and counted in
    /// `scalehook_refused_deliveries_total`): [`Refusal`].
    pub refused: Option<Refusal>,
    /// The capacity action name (`hold`, `scale_out`, ...).
    pub decision: Option<&'static str>,
    /// Whether the ledger had already seen this state for the job.
    pub duplicate: Option<bool>,
    pub capacity_before: Option<u32>,
    pub capacity_after: Option<u32>,
    pub queued: Option<u32>,
    pub running: Option<u32>,
    /// Seconds the job waited from queued to in_progress: on the delivery that started it.
    pub queue_wait_secs: Option<u64>,
    /// Seconds the job ran from in_progress to completed: on the delivery that ended it.
    pub run_secs: Option<u64>,
    pub latency_us: u64,
}

impl DeliveryReport {
    pub fn new(outcome: Outcome) -> Self {
        Self {
            delivery: None,
            event: None,
            action: None,
            job_id: None,
            pool: None,
            outcome,
            reason: None,
            correlation_id: None,
            refused: None,
            decision: None,
            duplicate: None,
            capacity_before: None,
            capacity_after: None,
            queued: None,
            running: None,
            queue_wait_secs: None,
            run_secs: None,
            latency_us: 0,
        }
    }

    /// The small JSON body of the HTTP answer.
    pub fn answer_body(&self) -> String {
        let mut body = serde_json::Map::new();
        let status = match self.outcome {
            Outcome::Handled | Outcome::Pong | Outcome::Ignored => self.outcome.as_str(),
            _ => "error",
        };
        body.insert("status".into(), status.into());
        match self.outcome.public_reason() {
            Some(fixed) => {
                body.insert("reason".into(), fixed.into());
                if let Some(id) = &self.correlation_id {
                    body.insert("correlation_id".into(), id.clone().into());
                }
            }
            None => {
                if let Some(r) = &self.reason {
                    body.insert("reason".into(), r.clone().into());
                }
            }
        }
        if let Some(p) = &self.pool {
            body.insert("pool".into(), p.clone().into());
        }
        if self.outcome == Outcome::Handled {
            if let Some(j) = self.job_id {
                body.insert("job_id".into(), j.into());
            }
            if let Some(d) = self.decision {
                body.insert("action".into(), d.into());
            }
            if let Some(d) = self.capacity_after {
                body.insert("desired".into(), d.into());
            }
            if let Some(q) = self.queued {
                body.insert("queued".into(), q.into());
            }
            if let Some(r) = self.running {
                body.insert("running".into(), r.into());
            }
            if let Some(d) = self.duplicate {
                body.insert("duplicate".into(), d.into());
            }
        }
        serde_json::Value::Object(body).to_string()
    }
}

/// Why a verified, well-formed `workflow_job` delivery changed nothing on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The job's newest time is older than the ledger's retention: its record may be gone,
    /// so the delivery cannot be told apart from a replay (see [`crate::event::WorkflowJob::newest_time`]).
    StaleJob,
    /// The payload's `installation.id` is not `[github].installation_id`.
    ForeignInstallation,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::StaleJob => "stale_job",
            Refusal::ForeignInstallation => "foreign_installation",
        }
    }

    pub const ALL: [Refusal; 2] = [Refusal::StaleJob, Refusal::ForeignInstallation];
}

/// A fresh correlation id: 16 hex digits from the system's CSPRNG (falling back to the
/// clock and process id, which still differ between processes).
pub fn new_correlation_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        bytes = (nanos ^ u64::from(std::process::id()).rotate_left(32)).to_be_bytes();
    }
    hex::encode(bytes)
}

/// The answer to one delivery: status, small JSON body, and the report behind them.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub report: DeliveryReport,
}

impl Answer {
    pub(crate) fn from_report(report: DeliveryReport) -> Self {
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
    /// Instances in the warm pool (not capacity; AWS warm pools). Left out of the JSON
    /// while 0, so pools without a warm pool read as they always did.
    #[serde(skip_serializing_if = "is_zero")]
    pub warm: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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
    /// What the pass did with GitHub; `None` in webhook-only mode.
    pub github: Option<GitHubReconcile>,
}

/// The GitHub steps of a reconcile pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GitHubReconcile {
    /// GitHub API requests the pass made (from [`crate::github::GitHub::rate_limit`]`.requests`).
    pub requests: u64,
    /// Failed `workflow_job` deliveries asked to be redelivered.
    pub redelivered: u32,
    /// Redelivery requests that failed (5xx, timeout, rate limit, refusal): retried on a
    /// later pass, at most [`crate::service::MAX_REDELIVERY_ATTEMPTS`] requests per delivery.
    pub redelivery_failures: u32,
    /// Failed deliveries given up on (attempts spent, or older than GitHub's 3-day window).
    pub redeliveries_abandoned: u32,
    /// Failed deliveries still tracked after the pass (to retry, or redelivered and waiting
    /// for the outcome).
    pub redeliveries_pending: u32,
    /// Queued/in-progress records re-checked with the jobs API, and how many moved.
    pub rechecked: u32,
    pub advanced: u32,
    /// Runner registrations removed (before scale-in, and offline runners of gone instances).
    pub runners_removed: u32,
    /// The first GitHub failure, if any (the pass goes on; TTL expiry stays the fallback).
    pub error: Option<String>,
}

impl ReconcileReport {
    /// True when every step succeeded.
    pub fn ok(&self) -> bool {
        self.ledger_error.is_none()
            && self.pools.iter().all(|p| p.error.is_none())
            && self.github.as_ref().is_none_or(|g| g.error.is_none())
    }
}

/// A failure of a cloud dependency while handling a delivery or a pool.
#[derive(Debug)]
pub(crate) enum CloudFailure {
    Ledger(LedgerError),
    Fleet(FleetError),
    Timeout,
}

impl CloudFailure {
    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            CloudFailure::Ledger(_) => Outcome::LedgerError,
            CloudFailure::Fleet(_) => Outcome::FleetError,
            CloudFailure::Timeout => Outcome::Timeout,
        }
    }
    pub(crate) fn message(&self) -> String {
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
