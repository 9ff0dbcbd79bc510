//! Managed-identity access tokens from the App Service / Functions identity endpoint.
//!
//! `GET $IDENTITY_ENDPOINT?resource=<audience>&api-version=2019-08-01` with the header
//! `X-IDENTITY-HEADER: $IDENTITY_HEADER` (doc: learn.microsoft.com, app-service
//! `overview-managed-identity`). The older `MSI_ENDPOINT`/`MSI_SECRET` pair (api-version
//! 2017-09-01, header `secret`) is a fallback for hosts that still set only those.
//! Tokens are cached per audience until [`REFRESH_MARGIN`] before they expire, so a
//! delivery normally spends no round trip on them. Token values and the identity header are
//! never logged nor put into errors.

use crate::http::{unix_now, StorageTokens};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Audience of Azure Resource Manager.
pub const ARM_AUDIENCE: &str = "https://management.azure.com/";
/// Audience of Azure Storage (Table Storage with Entra ID).
pub const STORAGE_AUDIENCE: &str = "https://storage.azure.com/";
/// A token is refreshed this long before it expires (clock skew, in-flight requests).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

const API_2019: &str = "2019-08-01";
const API_2017: &str = "2017-09-01";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("managed identity: {0}")]
pub struct IdentityError(pub String);

/// How long one token fetch (all attempts) may take when the caller gives no deadline.
pub const FETCH_BUDGET: Duration = Duration::from_secs(3);
/// Attempts per token fetch.
pub const FETCH_ATTEMPTS: u32 = 3;

/// A failed fetch: worth another attempt or not.
enum Fetch {
    Transient(IdentityError),
    Final(IdentityError),
}

/// Which protocol the platform's identity endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `IDENTITY_ENDPOINT` + `X-IDENTITY-HEADER`, api-version 2019-08-01.
    AppService2019,
    /// `MSI_ENDPOINT` + `secret`, api-version 2017-09-01.
    Msi2017,
}

/// The app's managed identity (system-assigned, or user-assigned with a client id).
pub struct ManagedIdentity {
    http: reqwest::Client,
    endpoint: String,
    header: String,
    protocol: Protocol,
    client_id: Option<String>,
    /// Per audience: (token, unix seconds it expires). The lock is held across a fetch so
    /// concurrent deliveries wait for one request instead of each sending their own.
    cache: Mutex<HashMap<String, (String, u64)>>,
}

impl std::fmt::Debug for ManagedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedIdentity")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_on: Option<serde_json::Value>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

impl ManagedIdentity {
    /// From the platform's variables (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, else
    /// `MSI_ENDPOINT`/`MSI_SECRET`) and the optional `AZURE_CLIENT_ID`. `None` when the app
    /// has no managed identity enabled.
    pub fn from_lookup(
        http: reqwest::Client,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Option<Self> {
        let var = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let (endpoint, header, protocol) = match (var("IDENTITY_ENDPOINT"), var("IDENTITY_HEADER"))
        {
            (Some(e), Some(h)) => (e, h, Protocol::AppService2019),
            _ => match (var("MSI_ENDPOINT"), var("MSI_SECRET")) {
                (Some(e), Some(h)) => (e, h, Protocol::Msi2017),
                _ => return None,
            },
        };
        Some(Self {
            http,
            endpoint,
            header,
            protocol,
            client_id: var("AZURE_CLIENT_ID"),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// A bearer token for `audience`, from the cache while it has more than
    /// [`REFRESH_MARGIN`] left; a fetch gets [`FETCH_BUDGET`].
    pub async fn token(&self, audience: &str) -> Result<String, IdentityError> {
        self.token_by(audience, Instant::now() + FETCH_BUDGET).await
    }

    /// As [`Self::token`], but a fetch (with its retries) ends by `deadline`: the token is
    /// part of the caller's call budget. Transport failures, 429 and 5xx from the identity
    /// endpoint are retried (at most [`FETCH_ATTEMPTS`] attempts).
    pub async fn token_by(
        &self,
        audience: &str,
        deadline: Instant,
    ) -> Result<String, IdentityError> {
        let mut cache = self.cache.lock().await;
        let now = unix_now();
        if let Some((token, expires)) = cache.get(audience) {
            if *expires > now + REFRESH_MARGIN.as_secs() {
                return Ok(token.clone());
            }
        }
        let mut attempt = 0;
        let (token, expires) = loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(IdentityError(format!(
                    "no token for audience {audience} within the call budget"
                )));
            }
            match tokio::time::timeout(left.min(FETCH_BUDGET), self.fetch(audience, now)).await {
                Ok(Ok(got)) => break got,
                Ok(Err(Fetch::Final(e))) => return Err(e),
                Ok(Err(Fetch::Transient(e))) if attempt >= FETCH_ATTEMPTS => return Err(e),
                Ok(Err(Fetch::Transient(e))) => {
                    tracing::warn!(target: "scalehook::azure", attempt, problem = %e, "managed identity token request failed; retrying");
                }
                Err(_) => {
                    return Err(IdentityError(format!(
                        "token request for audience {audience} timed out"
                    )))
                }
            }
            let pause = Duration::from_millis(100 << attempt.min(4));
            if Instant::now() + pause >= deadline {
                return Err(IdentityError(format!(
                    "no token for audience {audience} within the call budget"
                )));
            }
            tokio::time::sleep(pause).await;
        };
        if let Some(expires) = expires {
            cache.insert(audience.to_string(), (token.clone(), expires));
        }
        Ok(token)
    }

    async fn fetch(&self, audience: &str, now: u64) -> Result<(String, Option<u64>), Fetch> {
        let (api, header_name, client_param) = match self.protocol {
            Protocol::AppService2019 => (API_2019, "X-IDENTITY-HEADER", "client_id"),
            Protocol::Msi2017 => (API_2017, "secret", "clientid"),
        };
        let mut query = vec![("resource", audience), ("api-version", api)];
        if let Some(id) = &self.client_id {
            query.push((client_param, id));
        }
        let res = self
            .http
            .get(&self.endpoint)
            .query(&query)
            .header(header_name, &self.header)
            .send()
            .await
            .map_err(|e| {
                Fetch::Transient(IdentityError(format!(
                    "token request failed: {}",
                    crate::http::error_chain(&e.without_url())
                )))
            })?;
        let status = res.status();
        let body = res.bytes().await.map_err(|e| {
            Fetch::Transient(IdentityError(format!("token response unreadable: {e}")))
        })?;
        if !status.is_success() {
            let e = IdentityError(format!(
                "token endpoint answered {status} for audience {audience}: {}",
                crate::http::snippet(&body)
            ));
            return Err(if crate::http::retryable(status) {
                Fetch::Transient(e)
            } else {
                Fetch::Final(e)
            });
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            Fetch::Final(IdentityError(
                "token response is not the documented JSON".into(),
            ))
        })?;
        if parsed.access_token.is_empty() {
            return Err(Fetch::Final(IdentityError(
                "token response has an empty access_token".into(),
            )));
        }
        // 2019-08-01 gives epoch seconds (as a string); the 2017 protocol may give a date
        // string instead, so fall back to expires_in, else do not cache.
        let expires = number(parsed.expires_on.as_ref())
            .or_else(|| number(parsed.expires_in.as_ref()).map(|secs| now + secs));
        Ok((parsed.access_token, expires))
    }
}

fn number(v: Option<&serde_json::Value>) -> Option<u64> {
    match v? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[async_trait::async_trait]
impl StorageTokens for ManagedIdentity {
    async fn storage_token(&self) -> Result<String, String> {
        self.token(STORAGE_AUDIENCE)
            .await
            .map_err(|e| e.to_string())
    }
}
