//! What one delivery did, for the log line, the metrics and the answer.

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
    /// Why, for every outcome but `handled`.
    pub reason: Option<String>,
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
        if let Some(r) = &self.reason {
            body.insert("reason".into(), r.clone().into());
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
