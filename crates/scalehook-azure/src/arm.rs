//! A small Azure Resource Manager REST client: bearer token from the managed identity,
//! bounded retries that honour `Retry-After`, and long-running-operation polling
//! (`Azure-AsyncOperation`, else `Location`), all inside a time budget so a delivery still
//! answers within the core's `cloud_timeout_ms`.
//!
//! Docs: ARM throttling and `Retry-After`
//! (learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling),
//! async operations (…/azure-resource-manager/management/async-operations).

use crate::http::{backoff, error_chain, header_url, retry_after, retryable, unix_now};
pub use crate::http::{error_text, snippet};
use crate::identity::{ManagedIdentity, ARM_AUDIENCE};
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

/// How long one fleet call may take, and how retries and polling spend it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArmBudget {
    /// Everything one fleet call does (requests, retries, polling) ends within this.
    pub call: Duration,
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// Longest single wait between attempts; a longer `Retry-After` ends the call as
    /// unavailable (a redelivery or the next reconcile repairs capacity).
    pub max_wait: Duration,
    /// Polling of an accepted long-running operation stops after this; the operation
    /// goes on in Azure and the next describe sees its result.
    pub poll: Duration,
}

impl Default for ArmBudget {
    fn default() -> Self {
        // The core gives a delivery 7 s for the ledger and the fleet together; a scale
        // action is describe + one write, so each call gets at most 3 s. Scale operations
        // take minutes, so polling is short: it catches an operation that fails at once,
        // and a reconcile pass that removes several instances still fits its budget.
        Self {
            call: Duration::from_secs(3),
            attempts: 4,
            max_wait: Duration::from_secs(2),
            poll: Duration::from_secs(1),
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

/// Below this many calls left in a Compute throttling policy, callers skip what they can
/// (a fresh VM list is reused, broken VMs wait for a later pass).
pub const RATE_LOW: u32 = 20;
/// Below this many, every request is also spaced out (a short pause first).
pub const RATE_CRITICAL: u32 = 5;
/// Compute's shortest throttling window: a reading older than this says nothing.
const RATE_WINDOW_SECS: u64 = 180;

pub struct ArmClient {
    http: reqwest::Client,
    endpoint: Url,
    identity: Arc<ManagedIdentity>,
    pub budget: ArmBudget,
    /// Every wait (Retry-After, backoff, spacing, polling) goes through this.
    sleeper: Arc<dyn Sleeper>,
    /// The lowest `x-ms-ratelimit-remaining-resource` count of the last answer that had one
    /// (`u64::MAX`: none seen), and when (Unix seconds).
    remaining: AtomicU64,
    remaining_at: AtomicU64,
}

/// The lowest remaining count in `x-ms-ratelimit-remaining-resource` headers, whose values
/// list policies as `Microsoft.Compute/GetVMScaleSet3Min;107,Microsoft.Compute/GetVMScaleSet30Min;587`
/// (one header per policy, or several in one, comma-separated).
pub fn remaining_calls(headers: &HeaderMap) -> Option<u32> {
    headers
        .get_all("x-ms-ratelimit-remaining-resource")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| entry.rsplit_once(';'))
        .filter_map(|(_, n)| n.trim().parse::<u32>().ok())
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
            remaining: AtomicU64::new(u64::MAX),
            remaining_at: AtomicU64::new(0),
        })
    }

    /// Waits with `sleeper` instead of tokio's timer (tests record the waits asked for).
    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// Calls left in the tightest Compute throttling policy ARM last reported, if it
    /// reported one within the last three minutes.
    pub fn rate_remaining(&self) -> Option<u32> {
        let n = self.remaining.load(Ordering::Relaxed);
        let at = self.remaining_at.load(Ordering::Relaxed);
        (n != u64::MAX && unix_now().saturating_sub(at) <= RATE_WINDOW_SECS)
            .then(|| u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// True when calls that can wait should wait (see [`RATE_LOW`]).
    pub fn rate_low(&self) -> bool {
        self.rate_remaining().is_some_and(|n| n <= RATE_LOW)
    }

    fn note_rate(&self, headers: &HeaderMap) {
        if let Some(n) = remaining_calls(headers) {
            self.remaining.store(u64::from(n), Ordering::Relaxed);
            self.remaining_at.store(unix_now(), Ordering::Relaxed);
            if n <= RATE_LOW {
                tracing::warn!(
                    target: "scalehook::azure",
                    remaining = n,
                    "ARM Compute throttling budget is low; skipping what can wait"
                );
            }
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
    /// by [`error_for`].
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<ArmResponse, FleetError> {
        self.check_origin(&url)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Nearly out of calls in a Compute policy: space requests out rather than run
            // into 429s (bounded: never past half of what is left of the call budget).
            if self.rate_remaining().is_some_and(|n| n <= RATE_CRITICAL) {
                let left = deadline.saturating_duration_since(Instant::now());
                self.sleeper
                    .sleep(Duration::from_millis(500).min(left / 2))
                    .await;
            }
            let token = self
                .identity
                .token(ARM_AUDIENCE)
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
                    self.note_rate(&headers);
                    match tokio::time::timeout(
                        deadline.saturating_duration_since(Instant::now()),
                        res.bytes(),
                    )
                    .await
                    {
                        Ok(Ok(body)) => Ok(ArmResponse {
                            status,
                            headers,
                            body,
                        }),
                        Ok(Err(e)) => Err(error_chain(&e.without_url())),
                        Err(_) => Err("timed out reading the body".to_string()),
                    }
                }
            };
            let (retry_after, problem) = match outcome {
                Ok(res) if retryable(res.status) => (
                    retry_after(&res.headers),
                    format!("{} {}", res.status, error_text(&res.body)),
                ),
                Ok(res) if res.status.is_success() => return Ok(res),
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

    /// Follows an accepted long-running operation until it ends or the poll budget is
    /// spent. `Ok(true)`: it succeeded; `Ok(false)`: still running when polling stopped
    /// (the change is accepted; Azure carries it out). A failed or cancelled operation is
    /// an error.
    pub async fn wait(
        &self,
        accepted: &ArmResponse,
        deadline: Instant,
    ) -> Result<bool, FleetError> {
        let async_op = header_url(&accepted.headers, "azure-asyncoperation");
        let location = header_url(&accepted.headers, LOCATION.as_str());
        let (url, by_status) = match (async_op, location) {
            (Some(u), _) => (u, false),
            (None, Some(u)) if accepted.status == StatusCode::ACCEPTED => (u, true),
            // 200/201 with no operation to follow: done as far as ARM tells.
            _ => return Ok(true),
        };
        let url = Url::parse(&url).map_err(|_| {
            FleetError::Unavailable("ARM gave an operation URL that is not a URL".into())
        })?;
        let poll_until = deadline.min(Instant::now() + self.budget.poll);
        let mut wait = retry_after(&accepted.headers).unwrap_or(Duration::from_millis(500));
        loop {
            // Honour Retry-After: never poll sooner than ARM asks. If that is past the
            // poll budget, stop here: the operation is accepted and goes on without us.
            if Instant::now() + wait >= poll_until {
                tracing::info!(
                    target: "scalehook::azure",
                    operation = url.path(),
                    "ARM operation still running when the poll budget ended"
                );
                return Ok(false);
            }
            self.sleeper.sleep(wait).await;
            let res = match self.send(Method::GET, url.clone(), None, deadline).await {
                Ok(res) => res,
                // The change itself was accepted; not knowing how it goes is no reason to
                // fail the delivery. (Reading the operation needs
                // `Microsoft.Compute/locations/operations/read`; a 403 lands here too.)
                Err(e) => {
                    tracing::warn!(
                        target: "scalehook::azure",
                        problem = %e,
                        "cannot read the ARM operation status; treating the accepted change as in progress"
                    );
                    return Ok(false);
                }
            };
            wait = retry_after(&res.headers).unwrap_or(Duration::from_millis(500));
            if by_status {
                if res.status == StatusCode::ACCEPTED {
                    continue;
                }
                return Ok(true);
            }
            let Ok(status) = res.json() else {
                return Ok(false);
            };
            match status.get("status").and_then(Value::as_str) {
                Some("Succeeded") => return Ok(true),
                Some("Failed") | Some("Canceled") => {
                    return Err(FleetError::Rejected(format!(
                        "ARM operation {}: {}",
                        status["status"].as_str().unwrap_or_default(),
                        error_text(&res.body)
                    )))
                }
                // InProgress, or a provider-specific running state.
                _ => continue,
            }
        }
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
        // Another operation on the scale set is in progress: transient.
        409 => FleetError::Unavailable(what),
        _ => FleetError::Rejected(what),
    }
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
