//! A small Azure Resource Manager REST client: bearer token from the managed identity (within
//! the call's deadline), bounded retries that honour `Retry-After`, Compute throttling kept
//! per policy ([`crate::throttle`]), and long-running operations that are never waited for
//! inside a call: an accepted write yields an [`Operation`], settled later by one GET
//! ([`ArmClient::settle`]) once its `Retry-After` has passed.
//!
//! Docs: ARM throttling and `Retry-After`
//! (learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling),
//! async operations (Azure/azure-resource-manager-rpc, `v1.0/async-api-reference.md`):
//! `Azure-AsyncOperation` answers `{"status": ...}` (terminal: Succeeded, Failed, Canceled);
//! `Location` answers 202 while running and, once done, the operation's final response, an
//! error status when it failed.

use crate::http::{backoff, error_chain, header_url, retry_after, retryable, unix_now};
pub use crate::http::{error_text, snippet};
use crate::identity::{ManagedIdentity, ARM_AUDIENCE};
pub use crate::throttle::ThrottleStats;
use crate::throttle::{request_kind, Throttle};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};
use scalehook_core::sleep::{Sleeper, TokioSleeper};
use scalehook_core::FleetError;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The one ARM Compute api-version scalehook speaks (GA).
pub const ARM_API_VERSION: &str = "2024-11-01";
/// Public-cloud ARM.
pub const DEFAULT_ARM_ENDPOINT: &str = "https://management.azure.com";

/// How long one fleet call may take, and how retries and operation reads are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArmBudget {
    /// Everything one fleet call does (token, requests, retries) ends within this.
    pub call: Duration,
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// Longest single wait between attempts; a longer `Retry-After` ends the call as
    /// unavailable (a redelivery or the next reconcile repairs capacity).
    pub max_wait: Duration,
    /// An operation is never read sooner than this after the last answer about it, whatever
    /// `Retry-After` says (the Azure SDKs keep at least 1 s too).
    pub min_poll: Duration,
    /// When an accepted operation comes without `Retry-After`, the first read waits this long.
    pub default_poll: Duration,
}

impl Default for ArmBudget {
    fn default() -> Self {
        // The core gives a delivery 7 s for the ledger and the fleet together; a scale
        // action is describe + one write, so each call gets at most 3 s. Operations are
        // settled by a later describe, never waited for inside a call.
        Self {
            call: Duration::from_secs(3),
            attempts: 4,
            max_wait: Duration::from_secs(2),
            min_poll: Duration::from_secs(1),
            default_poll: Duration::from_secs(10),
        }
    }
}

/// A response read in full.
#[derive(Debug)]
pub struct ArmResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl ArmResponse {
    pub fn json(&self) -> Result<Value, FleetError> {
        serde_json::from_slice(&self.body).map_err(|_| {
            FleetError::Unavailable(format!(
                "ARM answered {} with a body that is not JSON",
                self.status
            ))
        })
    }
}

/// An accepted long-running operation, to be read later.
#[derive(Debug, Clone)]
pub struct Operation {
    /// What it does, for logs (`PATCH capacity 4`, `POST delete 3`).
    pub what: String,
    url: Url,
    /// Followed by `Location` (status codes) rather than `Azure-AsyncOperation` (a body).
    by_location: bool,
    /// Not read before this (`Retry-After`, at least [`ArmBudget::min_poll`]).
    pub not_before: Instant,
    /// Reads that could not tell how it went (bounded by the caller).
    pub unreadable: u32,
}

/// What one read of an operation told.
#[derive(Debug)]
pub enum Settled {
    /// Still running (or not due yet): keep it.
    Running(Operation),
    Succeeded,
    /// Failed or canceled, with ARM's error.
    Failed(String),
    /// Cannot be known (no permission to read operations, or it expired): forget it.
    Unknown(String),
}

/// Below this many calls left in a Compute throttling policy, callers skip what they can
/// (a fresh VM list is reused, broken VMs wait for a later pass).
pub const RATE_LOW: u32 = 20;
/// Below this many, every request is also spaced out (a short pause first).
pub const RATE_CRITICAL: u32 = 5;

pub struct ArmClient {
    http: reqwest::Client,
    endpoint: Url,
    identity: Arc<ManagedIdentity>,
    pub budget: ArmBudget,
    /// Every wait (Retry-After, backoff, spacing) goes through this.
    sleeper: Arc<dyn Sleeper>,
    throttle: Throttle,
    operations_failed: AtomicU64,
}

/// What the client counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArmStats {
    pub throttle: ThrottleStats,
    /// Accepted operations that ended Failed or Canceled.
    pub operations_failed: u64,
}

/// The lowest remaining count among an answer's `x-ms-ratelimit-remaining-resource`
/// entries (`Microsoft.Compute/GetVMScaleSet3Min;107,...`) and subscription reads/writes.
pub fn remaining_calls(headers: &HeaderMap) -> Option<u32> {
    crate::throttle::policy_counts(headers)
        .into_iter()
        .map(|(_, n)| n)
        .min()
}

impl ArmClient {
    pub fn new(
        http: reqwest::Client,
        endpoint: &str,
        identity: Arc<ManagedIdentity>,
        budget: ArmBudget,
    ) -> Result<Self, String> {
        let endpoint = Url::parse(endpoint.trim_end_matches('/'))
            .map_err(|e| format!("ARM endpoint {endpoint:?} is not a URL: {e}"))?;
        if !matches!(endpoint.scheme(), "https" | "http") {
            return Err(format!("ARM endpoint {endpoint} must be http(s)"));
        }
        Ok(Self {
            http,
            endpoint,
            identity,
            budget,
            sleeper: Arc::new(TokioSleeper),
            throttle: Throttle::default(),
            operations_failed: AtomicU64::new(0),
        })
    }

    /// Waits with `sleeper` instead of tokio's timer (tests record the waits asked for).
    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// Calls left in the tightest throttling policy ARM reported within three minutes.
    pub fn rate_remaining(&self) -> Option<u32> {
        self.throttle.remaining(unix_now())
    }

    /// True when calls that can wait should wait (see [`RATE_LOW`]).
    pub fn rate_low(&self) -> bool {
        self.rate_remaining().is_some_and(|n| n <= RATE_LOW)
    }

    pub fn stats(&self) -> ArmStats {
        ArmStats {
            throttle: self.throttle.stats(),
            operations_failed: self.operations_failed.load(Ordering::Relaxed),
        }
    }

    /// The URL of `resource_path` (a resource id plus an optional suffix) with the pinned
    /// api-version.
    pub fn url(&self, resource_path: &str) -> Result<Url, FleetError> {
        let mut url = self.endpoint.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}{resource_path}"));
        url.set_query(Some(&format!("api-version={ARM_API_VERSION}")));
        Ok(url)
    }

    /// One request with bounded retries on throttling (429), server errors and transport
    /// failures. Answers with the first non-retryable response; error statuses are mapped
    /// by [`error_for`]. A request whose throttling policy is blocked fails at once.
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<ArmResponse, FleetError> {
        self.request(method, url, body, deadline, true).await
    }

    /// [`Self::send`]; with `map_errors` false, a non-retryable error answer is handed back
    /// as it is (an operation's final response is read by its status).
    async fn request(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        deadline: Instant,
        map_errors: bool,
    ) -> Result<ArmResponse, FleetError> {
        self.check_origin(&url)?;
        let kind = request_kind(method.as_str(), url.path());
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Only the first attempt asks: a retry comes after the Retry-After it honoured.
            if attempt == 1 {
                if let Some((policy, left)) = self.throttle.blocked(&kind, Instant::now()) {
                    tracing::warn!(
                        target: "scalehook::azure",
                        event = "arm_throttled_fast_fail",
                        method = %method,
                        path = url.path(),
                        policy = %policy,
                        blocked_for_s = left.as_secs(),
                        "ARM throttling policy still closed; not calling ARM"
                    );
                    return Err(FleetError::Unavailable(format!(
                        "ARM {method} {}: throttling policy {policy} is closed for another {} s",
                        url.path(),
                        left.as_secs().max(1)
                    )));
                }
            }
            // Nearly out of calls in a Compute policy: space requests out rather than run
            // into 429s (bounded: never past half of what is left of the call budget).
            if self.rate_remaining().is_some_and(|n| n <= RATE_CRITICAL) {
                let left = deadline.saturating_duration_since(Instant::now());
                self.sleeper
                    .sleep(Duration::from_millis(500).min(left / 2))
                    .await;
            }
            if deadline <= Instant::now() {
                return Err(FleetError::Unavailable(format!(
                    "ARM {method} {} did not finish within the call budget",
                    url.path()
                )));
            }
            let token = self
                .identity
                .token_by(ARM_AUDIENCE, deadline)
                .await
                .map_err(|e| FleetError::Unavailable(e.to_string()))?;
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, format!("Bearer {token}"));
            if let Some(b) = body {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(b.to_string());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(FleetError::Unavailable(format!(
                    "ARM {method} {} did not finish within the call budget",
                    url.path()
                )));
            }
            let outcome = match tokio::time::timeout(left, req.send()).await {
                Err(_) => Err(format!("timed out after {left:?}")),
                Ok(Err(e)) => Err(error_chain(&e.without_url())),
                Ok(Ok(res)) => {
                    let status = res.status();
                    let headers = res.headers().clone();
                    match tokio::time::timeout(
                        deadline.saturating_duration_since(Instant::now()),
                        res.bytes(),
                    )
                    .await
                    {
                        Ok(Ok(body)) => {
                            self.throttle.observe(
                                &kind,
                                status,
                                &headers,
                                &body,
                                Instant::now(),
                                unix_now(),
                            );
                            Ok(ArmResponse {
                                status,
                                headers,
                                body,
                            })
                        }
                        Ok(Err(e)) => Err(error_chain(&e.without_url())),
                        Err(_) => Err("timed out reading the body".to_string()),
                    }
                }
            };
            if let Some(n) = outcome
                .as_ref()
                .ok()
                .and_then(|r| remaining_calls(&r.headers))
            {
                if n <= RATE_LOW {
                    tracing::warn!(
                        target: "scalehook::azure",
                        remaining = n,
                        "ARM throttling budget is low; skipping what can wait"
                    );
                }
            }
            let (retry_after, problem) = match outcome {
                Ok(res) if retryable(res.status) => (
                    retry_after(&res.headers),
                    format!("{} {}", res.status, error_text(&res.body)),
                ),
                Ok(res) if res.status.is_success() || !map_errors => return Ok(res),
                Ok(res) => return Err(error_for(&method, &url, &res)),
                Err(problem) => (None, problem),
            };
            let wait = retry_after.unwrap_or_else(|| backoff(attempt));
            let left = deadline.saturating_duration_since(Instant::now());
            if attempt >= self.budget.attempts || wait > self.budget.max_wait || wait >= left {
                tracing::warn!(
                    target: "scalehook::azure",
                    method = %method,
                    path = url.path(),
                    attempts = attempt,
                    retry_after_ms = retry_after.map(|d| d.as_millis() as u64),
                    problem = %problem,
                    "ARM request gave up"
                );
                return Err(FleetError::Unavailable(format!(
                    "ARM {method} {} failed after {attempt} attempt(s): {problem}",
                    url.path()
                )));
            }
            self.sleeper.sleep(wait).await;
        }
    }

    /// The operation an accepted write started, to settle later; `None` when ARM reports
    /// none to follow (the change is done as far as ARM tells).
    pub fn operation(&self, what: &str, accepted: &ArmResponse) -> Option<Operation> {
        let async_op = header_url(&accepted.headers, "azure-asyncoperation");
        let location = header_url(&accepted.headers, LOCATION.as_str());
        let (url, by_location) = match (async_op, location) {
            (Some(u), _) => (u, false),
            (None, Some(u)) if accepted.status == StatusCode::ACCEPTED => (u, true),
            _ => return None,
        };
        let Ok(url) = Url::parse(&url) else {
            tracing::warn!(target: "scalehook::azure", what, "ARM gave an operation URL that is not a URL; not following it");
            return None;
        };
        Some(Operation {
            what: what.to_string(),
            url,
            by_location,
            not_before: self.next_read(&accepted.headers),
            unreadable: 0,
        })
    }

    /// When to read an operation next: `Retry-After`, else the default, never sooner than
    /// the minimum interval.
    fn next_read(&self, headers: &HeaderMap) -> Instant {
        let wait = retry_after(headers).unwrap_or(self.budget.default_poll);
        Instant::now() + wait.max(self.budget.min_poll)
    }

    /// Reads `op` once if it is due (else hands it back as running). The read gets what is
    /// left of `deadline`; a read that fails for a transient reason keeps the operation.
    pub async fn settle(&self, mut op: Operation, deadline: Instant) -> Settled {
        if Instant::now() < op.not_before {
            return Settled::Running(op);
        }
        let res = match self
            .request(Method::GET, op.url.clone(), None, deadline, false)
            .await
        {
            Ok(res) => res,
            Err(e) => {
                tracing::info!(target: "scalehook::azure", operation = %op.what, problem = %e, "ARM operation status unreadable for now");
                op.unreadable += 1;
                op.not_before = Instant::now() + self.budget.min_poll;
                return Settled::Running(op);
            }
        };
        match res.status.as_u16() {
            // No `Microsoft.Compute/locations/operations/read`, or the operation expired.
            403 | 404 => {
                return Settled::Unknown(format!(
                    "operation status answered {}: {}",
                    res.status,
                    error_text(&res.body)
                ))
            }
            // `Location`: a finished operation answers with its final response, an error
            // status when it failed (the RPC; the SDKs' Location pollers read it so too).
            _ if !res.status.is_success() => {
                return self.failed(&op, format!("{} {}", res.status, error_text(&res.body)))
            }
            _ => {}
        }
        op.not_before = self.next_read(&res.headers);
        if op.by_location {
            return if res.status == StatusCode::ACCEPTED {
                Settled::Running(op)
            } else {
                Settled::Succeeded
            };
        }
        let status = res
            .json()
            .ok()
            .and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_string));
        match status.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("succeeded") => Settled::Succeeded,
            Some("failed") | Some("canceled") | Some("cancelled") => {
                let why = format!("{}: {}", status.unwrap_or_default(), error_text(&res.body));
                self.failed(&op, why)
            }
            // InProgress, or a provider-specific running state.
            _ => Settled::Running(op),
        }
    }

    fn failed(&self, op: &Operation, why: String) -> Settled {
        self.operations_failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            target: "scalehook::azure",
            event = "arm_operation_failed",
            operation = %op.what,
            problem = %why,
            "ARM operation failed; the next describe sees its VMs"
        );
        Settled::Failed(why)
    }

    /// The bearer token goes only to the configured ARM origin: `nextLink` and operation
    /// URLs come from responses, and a token must never follow one elsewhere.
    fn check_origin(&self, url: &Url) -> Result<(), FleetError> {
        if url.origin() == self.endpoint.origin() {
            Ok(())
        } else {
            Err(FleetError::Unavailable(format!(
                "ARM returned a URL outside {} ({}); not following it",
                self.endpoint.origin().ascii_serialization(),
                url.origin().ascii_serialization()
            )))
        }
    }
}

/// Maps a non-retryable error answer (after retries) to the core's fleet error.
fn error_for(method: &Method, url: &Url, res: &ArmResponse) -> FleetError {
    let what = format!(
        "ARM {method} {} answered {}: {}",
        url.path(),
        res.status,
        error_text(&res.body)
    );
    match res.status.as_u16() {
        404 => FleetError::NotFound(what),
        // Compute's answer for an instance that is gone (or going): 400 `InvalidParameter`
        // on `instanceIds`, "... is not an active Virtual Machine Scale Set VM instanceId".
        400 if instance_not_active(&res.body) => FleetError::NotFound(what),
        // Another operation on the scale set is in progress: transient.
        409 => FleetError::Unavailable(what),
        _ => FleetError::Rejected(what),
    }
}

fn instance_not_active(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let e = v.get("error").unwrap_or(&v);
    let code = e.get("code").and_then(Value::as_str).unwrap_or("");
    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
    code == "InstanceIdsListInstanceIdNotActiveVM"
        || (code == "InvalidParameter" && message.contains("not an active"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn remaining_calls_takes_the_tightest_policy() {
        let mut h = HeaderMap::new();
        assert_eq!(remaining_calls(&h), None);
        h.append(
            "x-ms-ratelimit-remaining-resource",
            HeaderValue::from_static(
                "Microsoft.Compute/GetVMScaleSet3Min;107,Microsoft.Compute/GetVMScaleSet30Min;587",
            ),
        );
        assert_eq!(remaining_calls(&h), Some(107));
        h.append(
            "x-ms-ratelimit-remaining-resource",
            HeaderValue::from_static("Microsoft.Compute/VMScaleSetVMViews3Min;12"),
        );
        assert_eq!(remaining_calls(&h), Some(12));
        let mut junk = HeaderMap::new();
        junk.append(
            "x-ms-ratelimit-remaining-resource",
            HeaderValue::from_static("garbage"),
        );
        assert_eq!(remaining_calls(&junk), None);
    }
}
