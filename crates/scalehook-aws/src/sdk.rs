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
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::{tls, ConnectorBuilder};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
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
/// environment only: credentials are resolved lazily, on the first call, and so is the
/// HTTPS client (see [`LazyHttpsClient`]).
pub fn loader() -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry_config())
        .timeout_config(timeout_config())
        .http_client(LazyHttpsClient::default())
}

/// The SDK's default HTTPS client (hyper 1, rustls with aws-lc, proxy from the
/// environment), built when the first AWS call needs it. The SDK's own default builds it
/// when a service client is created, and that loads and parses the system's trust store
/// (every file of /etc/ssl/certs): most of the bootstrap's cold start, measured in
/// bench/RESULTS.md, though a `ping` or a duplicate-free start needs no AWS call at all.
#[derive(Debug, Clone, Default)]
pub struct LazyHttpsClient {
    client: Arc<OnceLock<SharedHttpClient>>,
}

impl LazyHttpsClient {
    fn client(&self) -> &SharedHttpClient {
        self.client.get_or_init(|| {
            aws_smithy_http_client::Builder::new().build_with_connector_fn(
                |settings, components| {
                    let mut connector = ConnectorBuilder::default().tls_provider(
                        tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc),
                    );
                    connector.set_connector_settings(settings.cloned());
                    if let Some(components) = components {
                        connector.set_sleep_impl(components.sleep_impl());
                    }
                    connector.set_proxy_config(Some(ProxyConfig::from_env()));
                    connector.build()
                },
            )
        })
    }
}

impl HttpClient for LazyHttpsClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.client().http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        Some(ConnectorMetadata::new("hyper", Some(Cow::Borrowed("1.x"))))
    }
}
