//! Rate limits as GitHub's "Rate limits for the REST API" page says to handle them, kept
//! across calls: the primary limit (`x-ratelimit-remaining` / `x-ratelimit-reset`),
//! `retry-after`, and secondary limits (a 403/429 whose message says so, or a 429 without
//! hints: at least [`SECONDARY_LIMIT_WAIT`], doubling while they repeat). Every wait goes
//! through the client's `Sleeper`; until a limit's end every call fails fast.

use crate::http::{unix_now, Answer};
use scalehook_core::github::{GitHubError, RateLimit};
use scalehook_core::sleep::Sleeper;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The least wait after a secondary rate limit without `retry-after` (GitHub: "wait for at
/// least one minute before retrying").
pub const SECONDARY_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// Repeated secondary limits double the wait up to this.
pub const SECONDARY_LIMIT_MAX_WAIT: Duration = Duration::from_secs(960);

/// What the client knows of its rate limits.
#[derive(Debug)]
pub(crate) struct Limits {
    /// `x-ratelimit-remaining` of the last answer; `u64::MAX` before the first.
    remaining: AtomicU64,
    /// `x-ratelimit-reset` (Unix seconds) of the last answer that had one.
    reset_at: AtomicU64,
    /// Unix seconds until which a rate limit blocks every call (0: not blocked).
    blocked_until: AtomicU64,
    /// Secondary rate limits met, and how many in a row (the back-off doubles).
    secondary_limited: AtomicU64,
    secondary_streak: AtomicU32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            remaining: AtomicU64::new(u64::MAX),
            reset_at: AtomicU64::new(0),
            blocked_until: AtomicU64::new(0),
            secondary_limited: AtomicU64::new(0),
            secondary_streak: AtomicU32::new(0),
        }
    }
}

impl Limits {
    /// Reads the primary limit's headers of any answer.
    pub(crate) fn note(&self, answer: &Answer) {
        if let Some(r) = answer
            .header("x-ratelimit-remaining")
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            self.remaining.store(r, Ordering::Relaxed);
        }
        if let Some(r) = answer
            .header("x-ratelimit-reset")
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            self.reset_at.store(r, Ordering::Relaxed);
        }
        if (200..300).contains(&answer.status) {
            self.secondary_streak.store(0, Ordering::Relaxed);
        }
    }

    /// How long a 403/429 asks to wait (`None`: not a rate limit, e.g. a missing
    /// permission); the client is blocked until then. GitHub's rules: `retry-after` seconds
    /// when present; until `x-ratelimit-reset` when `x-ratelimit-remaining` is 0; otherwise,
    /// for a secondary limit (its message says so, or a 429), at least a minute, longer
    /// while they repeat.
    pub(crate) fn wait_for(&self, answer: &Answer) -> Option<Duration> {
        if answer.status != 403 && answer.status != 429 {
            return None;
        }
        let secondary = answer
            .message()
            .to_ascii_lowercase()
            .contains("secondary rate limit");
        if secondary || answer.header("retry-after").is_some() {
            self.secondary_limited.fetch_add(1, Ordering::Relaxed);
        }
        let wait = if let Some(secs) = answer
            .header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Duration::from_secs(secs)
        } else if answer.header("x-ratelimit-remaining").map(str::trim) == Some("0") {
            let reset = answer
                .header("x-ratelimit-reset")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            Duration::from_secs(reset.saturating_sub(unix_now()).max(1))
        } else if secondary || answer.status == 429 {
            let streak = self.secondary_streak.fetch_add(1, Ordering::Relaxed).min(4);
            (SECONDARY_LIMIT_WAIT * 2u32.pow(streak)).min(SECONDARY_LIMIT_MAX_WAIT)
        } else {
            return None;
        };
        self.blocked_until
            .fetch_max(unix_now() + wait.as_secs().max(1), Ordering::Relaxed);
        Some(wait)
    }

    /// A wait of [`Limits::wait_for`] was slept through.
    pub(crate) fn waited(&self) {
        self.blocked_until.store(0, Ordering::Relaxed);
    }

    /// While a rate limit blocks the client (a secondary limit's wait, `retry-after`, or
    /// the primary limit spent until its reset), waits for its end if that fits before
    /// `deadline`, else fails without spending a request.
    pub(crate) async fn before_request(
        &self,
        sleeper: &dyn Sleeper,
        deadline: Instant,
    ) -> Result<(), GitHubError> {
        let blocked = self.blocked_until.load(Ordering::Relaxed);
        let now = unix_now();
        if blocked > now {
            let wait = Duration::from_secs(blocked - now);
            if Instant::now() + wait >= deadline {
                return Err(GitHubError::RateLimited {
                    retry_after_secs: blocked - now,
                });
            }
            sleeper.sleep(wait).await;
            self.waited();
        }
        if self.remaining.load(Ordering::Relaxed) != 0 {
            return Ok(());
        }
        let reset = self.reset_at.load(Ordering::Relaxed);
        let now = unix_now();
        if reset <= now {
            return Ok(());
        }
        let wait = Duration::from_secs(reset - now);
        if Instant::now() + wait < deadline {
            sleeper.sleep(wait).await;
            self.remaining.store(u64::MAX, Ordering::Relaxed);
            return Ok(());
        }
        Err(GitHubError::RateLimited {
            retry_after_secs: reset - now,
        })
    }

    /// The figures `GitHub::rate_limit` reports.
    pub(crate) fn report(&self, requests: u64) -> RateLimit {
        let remaining = self.remaining.load(Ordering::Relaxed);
        let blocked = self.blocked_until.load(Ordering::Relaxed);
        RateLimit {
            remaining: (remaining != u64::MAX).then_some(remaining),
            requests,
            secondary_limited: self.secondary_limited.load(Ordering::Relaxed),
            blocked_until: (blocked > unix_now()).then_some(blocked),
        }
    }
}
