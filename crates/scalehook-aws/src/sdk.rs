//! The AWS SDK configuration every client of scalehook shares: bounded retries and
//! timeouts that fit inside the core's per-delivery budget (`cloud_timeout_ms`, 7 s by
//! default, inside GitHub's 10 s).
//!
//! Endpoints and credentials come from the SDK's usual sources (`AWS_REGION`, the Lambda
//! role's credentials, and `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>`, which is how
//! the tests point the real clients at moto).

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader};
use std::time::Duration;

/// One attempt of one call: DynamoDB and Auto Scaling answer in tens of milliseconds, so
/// two seconds means the call is stuck, and a retry is the better use of the budget.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// A call with all its retries. The core's `cloud_timeout` (7 s default) still bounds a
/// whole delivery, which makes up to four calls; this keeps one slow call from using it all.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(4);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Standard retry mode (throttling and transient errors, exponential backoff with jitter),
/// with a short first backoff: GitHub is waiting for the answer.
pub const MAX_ATTEMPTS: u32 = 3;
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The retry policy of every client.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(INITIAL_BACKOFF)
        .with_max_backoff(MAX_BACKOFF)
}

/// The timeouts of every client.
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// A loader with scalehook's retries and timeouts; `.load().await` it. Loading reads the
/// environment only: credentials are resolved lazily, on the first call.
pub fn loader() -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry_config())
        .timeout_config(timeout_config())
}
