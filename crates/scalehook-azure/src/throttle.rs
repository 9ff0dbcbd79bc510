//! ARM and Compute throttling as documented: every answer carries one
//! `x-ms-ratelimit-remaining-resource` entry per Compute policy that charged it
//! (`Microsoft.Compute/GetVMScaleSet3Min;107`, one header per policy or several
//! comma-separated), and ARM's own `x-ms-ratelimit-remaining-subscription-reads` / `-writes`.
//! A 429 names the exhausted policy (its entry at `;0`, and `details[].target` of the
//! `OperationNotAllowed` error) and says how long it stays closed (`Retry-After`, 1200 s in
//! Microsoft's example). Docs: learn.microsoft.com/troubleshoot/azure/virtual-machines/
//! troubleshooting-throttling-errors, …/azure-resource-manager/management/request-limits-and-throttling.
//!
//! [`Throttle`] keeps, per policy, the last count and a blocked-until from a 429's
//! `Retry-After`; per kind of request (method and path shape), the policies that charged it
//! last. A request whose policies are blocked fails at once, without a call to ARM, and is
//! counted ([`ThrottleStats`]).

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Compute's shortest throttling window: a count older than this says nothing.
pub const RATE_WINDOW_SECS: u64 = 180;
/// How long a 429 without `Retry-After` closes its policies.
const DEFAULT_BLOCK: Duration = Duration::from_secs(10);
/// ARM's subscription-wide counters, kept as two more policies.
const SUBSCRIPTION_READS: &str = "Microsoft.Resources/subscription-reads";
const SUBSCRIPTION_WRITES: &str = "Microsoft.Resources/subscription-writes";

/// What throttling cost so far (log-based alerts read the warnings; tests read these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThrottleStats {
    /// 429 answers from ARM.
    pub throttled: u64,
    /// Requests refused here because a policy they charge is blocked.
    pub fast_failed: u64,
}

#[derive(Debug, Clone)]
struct Policy {
    remaining: u32,
    /// Unix seconds of the count.
    at: u64,
    blocked_until: Option<Instant>,
}

#[derive(Default)]
struct State {
    policies: HashMap<String, Policy>,
    /// Request kind -> the policies its last answer named.
    kinds: HashMap<String, Vec<String>>,
    stats: ThrottleStats,
}

#[derive(Default)]
pub struct Throttle {
    state: Mutex<State>,
}

/// The kind of a request for throttling: its method and the path after the scale set
/// (`GET virtualMachines`, `POST delete`, `PATCH`), or `GET operation`.
pub fn request_kind(method: &str, path: &str) -> String {
    if path.contains("/operations/") {
        return format!("{method} operation");
    }
    let lower = path.to_ascii_lowercase();
    let tail = match lower.find("/virtualmachinescalesets/") {
        Some(i) => {
            let rest = &path[i + "/virtualMachineScaleSets/".len()..];
            rest.split_once('/').map(|(_, t)| t).unwrap_or("")
        }
        None => path,
    };
    format!("{method} {tail}").trim_end().to_string()
}

/// Every policy count an answer carries: Compute's per-policy entries and ARM's
/// subscription reads/writes.
pub fn policy_counts(headers: &HeaderMap) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = headers
        .get_all("x-ms-ratelimit-remaining-resource")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| entry.trim().rsplit_once(';'))
        .filter_map(|(name, n)| Some((name.trim().to_string(), n.trim().parse::<u32>().ok()?)))
        .filter(|(name, _)| !name.is_empty())
        .collect();
    for (header, name) in [
        (
            "x-ms-ratelimit-remaining-subscription-reads",
            SUBSCRIPTION_READS,
        ),
        (
            "x-ms-ratelimit-remaining-subscription-writes",
            SUBSCRIPTION_WRITES,
        ),
    ] {
        if let Some(n) = headers
            .get(header)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            out.push((name.to_string(), n));
        }
    }
    out
}

/// The policies a 429 names: entries at `;0`, and the error's `details[].target`
/// (`HighCostGet30Min`, read as `Microsoft.Compute/HighCostGet30Min`).
fn exhausted(counts: &[(String, u32)], body: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = counts
        .iter()
        .filter(|(_, n)| *n == 0)
        .map(|(p, _)| p.clone())
        .collect();
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let err = v.get("error").unwrap_or(&v);
        for d in err
            .get("details")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = d.get("target").and_then(Value::as_str) {
                let name = if t.contains('/') {
                    t.to_string()
                } else {
                    format!("Microsoft.Compute/{t}")
                };
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
    }
    out
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The blocked policy a request of `kind` would charge, and how long it stays blocked.
    /// Counted as a fast failure when it answers `Some`.
    pub fn blocked(&self, kind: &str, now: Instant) -> Option<(String, Duration)> {
        let mut st = self.lock();
        let names = st.kinds.get(kind).cloned().unwrap_or_default();
        let hit = names.iter().find_map(|name| {
            let until = st.policies.get(name)?.blocked_until?;
            (until > now).then(|| (name.clone(), until - now))
        });
        if hit.is_some() {
            st.stats.fast_failed += 1;
        }
        hit
    }

    /// Records what an answer to a request of `kind` says about throttling.
    pub fn observe(
        &self,
        kind: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        now: Instant,
        now_unix: u64,
    ) {
        let retry_after = crate::http::retry_after(headers);
        let counts = policy_counts(headers);
        let mut st = self.lock();
        for (name, n) in &counts {
            let p = st.policies.entry(name.clone()).or_insert(Policy {
                remaining: *n,
                at: now_unix,
                blocked_until: None,
            });
            p.remaining = *n;
            p.at = now_unix;
        }
        let mut names: Vec<String> = counts.into_iter().map(|(n, _)| n).collect();
        if status == StatusCode::TOO_MANY_REQUESTS {
            st.stats.throttled += 1;
            let mut closed = exhausted(
                &names
                    .iter()
                    .filter_map(|n| Some((n.clone(), st.policies.get(n)?.remaining)))
                    .collect::<Vec<_>>(),
                body,
            );
            // A 429 that names no policy closes this kind of request by itself.
            if closed.is_empty() {
                closed.push(format!("request:{kind}"));
            }
            let until = now + retry_after.unwrap_or(DEFAULT_BLOCK);
            for name in &closed {
                let p = st.policies.entry(name.clone()).or_insert(Policy {
                    remaining: 0,
                    at: now_unix,
                    blocked_until: None,
                });
                p.remaining = 0;
                p.at = now_unix;
                p.blocked_until = Some(until);
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        if !names.is_empty() {
            st.kinds.insert(kind.to_string(), names);
        }
    }

    /// Calls left in the tightest policy counted within [`RATE_WINDOW_SECS`].
    pub fn remaining(&self, now_unix: u64) -> Option<u32> {
        self.lock()
            .policies
            .values()
            .filter(|p| now_unix.saturating_sub(p.at) <= RATE_WINDOW_SECS)
            .map(|p| p.remaining)
            .min()
    }

    pub fn stats(&self) -> ThrottleStats {
        self.lock().stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn counts_per_policy_and_subscription() {
        let mut h = HeaderMap::new();
        assert!(policy_counts(&h).is_empty());
        h.append(
            "x-ms-ratelimit-remaining-resource",
            HeaderValue::from_static(
                "Microsoft.Compute/GetVMScaleSet3Min;107,Microsoft.Compute/GetVMScaleSet30Min;587",
            ),
        );
        h.append(
            "x-ms-ratelimit-remaining-resource",
            HeaderValue::from_static("Microsoft.Compute/VMScaleSetBatchedVMRequests5Min;12"),
        );
        h.append(
            "x-ms-ratelimit-remaining-subscription-reads",
            HeaderValue::from_static("11999"),
        );
        h.append(
            "x-ms-ratelimit-remaining-resource",
            HeaderValue::from_static("garbage"),
        );
        let c = policy_counts(&h);
        assert_eq!(c.len(), 4, "{c:?}");
        assert!(c.contains(&(
            "Microsoft.Compute/VMScaleSetBatchedVMRequests5Min".into(),
            12
        )));
        assert!(c.contains(&(SUBSCRIPTION_READS.into(), 11999)));
        let t = Throttle::default();
        t.observe("GET", StatusCode::OK, &h, b"", Instant::now(), 1000);
        assert_eq!(t.remaining(1000), Some(12));
        assert_eq!(
            t.remaining(1000 + RATE_WINDOW_SECS + 1),
            None,
            "stale counts say nothing"
        );
    }

    #[test]
    fn a_429_blocks_its_policy_for_retry_after_and_only_requests_that_charge_it() {
        let t = Throttle::default();
        let now = Instant::now();
        let mut ok = HeaderMap::new();
        ok.append(
            "x-ms-ratelimit-remaining-resource",
            HeaderValue::from_static("Microsoft.Compute/GetVMScaleSet3Min;3"),
        );
        t.observe("GET", StatusCode::OK, &ok, b"", now, 1000);
        let mut other = HeaderMap::new();
        other.append(
            "x-ms-ratelimit-remaining-resource",
            HeaderValue::from_static("Microsoft.Compute/VMScaleSetBatchedVMRequests5Min;50"),
        );
        t.observe("POST delete", StatusCode::OK, &other, b"", now, 1000);
        let mut throttled = HeaderMap::new();
        throttled.append(
            "x-ms-ratelimit-remaining-resource",
            HeaderValue::from_static("Microsoft.Compute/GetVMScaleSet3Min;0"),
        );
        throttled.append("retry-after", HeaderValue::from_static("1200"));
        let body = br#"{"error":{"code":"OperationNotAllowed","message":"too many","details":[{"code":"TooManyRequests","target":"GetVMScaleSet30Min","message":"{}"}]}}"#;
        t.observe(
            "GET",
            StatusCode::TOO_MANY_REQUESTS,
            &throttled,
            body,
            now,
            1000,
        );
        let (policy, left) = t.blocked("GET", now).expect("blocked");
        assert!(
            policy.starts_with("Microsoft.Compute/GetVMScaleSet"),
            "{policy}"
        );
        assert_eq!(left, Duration::from_secs(1200));
        assert!(t.blocked("POST delete", now).is_none(), "another policy");
        assert!(t.blocked("GET", now + Duration::from_secs(1201)).is_none());
        assert_eq!(
            t.stats(),
            ThrottleStats {
                throttled: 1,
                fast_failed: 1
            }
        );
        // A 429 that names nothing closes its own kind of request.
        let mut bare = HeaderMap::new();
        bare.append("retry-after", HeaderValue::from_static("5"));
        t.observe(
            "PATCH",
            StatusCode::TOO_MANY_REQUESTS,
            &bare,
            b"",
            now,
            1000,
        );
        assert!(t.blocked("PATCH", now).is_some());
    }

    #[test]
    fn request_kinds() {
        let vmss = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/runners";
        assert_eq!(request_kind("GET", vmss), "GET");
        assert_eq!(
            request_kind("GET", &format!("{vmss}/virtualMachines")),
            "GET virtualMachines"
        );
        assert_eq!(
            request_kind("POST", &format!("{vmss}/delete")),
            "POST delete"
        );
        assert_eq!(
            request_kind(
                "GET",
                "/subscriptions/s/providers/Microsoft.Compute/locations/x/operations/1"
            ),
            "GET operation"
        );
    }
}
