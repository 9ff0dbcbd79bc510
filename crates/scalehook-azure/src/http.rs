//! The HTTP pieces every Azure client here shares: the one `reqwest` client, retry rules
//! (which statuses, backoff, `Retry-After`), and turning error answers and transport errors
//! into short messages; and how Storage (Table, Blob) requests are authorized: SharedKey
//! signing or a bearer token ([`StorageAuth`]). `arm`, `identity`, `table` and `blob` depend on
//! this module and never on each other for these; it depends on none of them.

use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The one HTTP client (rustls, bundled web PKI roots), with connect and request limits.
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("scalehook/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// Statuses worth another attempt: throttling and transient server errors.
pub(crate) fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// 200 ms, doubling per attempt, capped at 1.6 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64 << attempt.min(4).saturating_sub(1))
}

/// `Retry-After` in seconds (ARM sends delta-seconds).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    v.parse::<u64>().ok().map(Duration::from_secs)
}

/// A non-empty header holding a URL (operation status, `Location`).
pub(crate) fn header_url(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|s| !s.is_empty())
}

/// An error with its causes ("error sending request: connection closed before …").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `code: message` from ARM's error body (`{"error":{"code","message"}}`), else a snippet.
pub fn error_text(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            let e = v.get("error").unwrap_or(&v);
            match (
                e.get("code").and_then(Value::as_str),
                e.get("message").and_then(Value::as_str),
            ) {
                (Some(c), Some(m)) => format!("{c}: {}", truncate(m, 300)),
                (Some(c), None) => c.to_string(),
                _ => snippet(body),
            }
        }
        Err(_) => snippet(body),
    }
}

/// The start of a body for an error message (printable characters, at most 200).
pub fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    truncate(s.trim(), 200)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}

/// Unix seconds now (0 if the clock is before 1970).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where Storage bearer tokens come from: the managed identity (implemented in `identity`,
/// for the audience `https://storage.azure.com/`).
#[async_trait]
pub trait StorageTokens: Send + Sync {
    async fn storage_token(&self) -> Result<String, String>;
}

/// How Storage requests (Table, Blob) are authorized.
pub enum StorageAuth {
    /// SharedKey with the storage account's key (base64-decoded). Doc:
    /// learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key.
    SharedKey { account: String, key: Vec<u8> },
    /// Entra ID bearer tokens from the managed identity.
    Identity(Arc<dyn StorageTokens>),
}

impl std::fmt::Debug for StorageAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageAuth::SharedKey { account, .. } => write!(f, "SharedKey({account})"),
            StorageAuth::Identity(_) => write!(f, "ManagedIdentity"),
        }
    }
}

impl StorageAuth {
    /// SharedKey from two settings: the service endpoint (the account is named in it) and
    /// the account key (base64). Errors name the setting at fault, never the key.
    pub fn shared_key_from_settings(
        endpoint_setting: &str,
        endpoint: &str,
        key_setting: &str,
        key: &str,
    ) -> Result<Self, String> {
        let url = Url::parse(endpoint.trim_end_matches('/'))
            .map_err(|_| format!("{endpoint_setting} is not a URL"))?;
        let account =
            account_of(&url).ok_or_else(|| format!("{endpoint_setting}: no account name in it"))?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(key.trim())
            .map_err(|_| format!("{key_setting} is not base64"))?;
        Ok(StorageAuth::SharedKey { account, key })
    }

    /// The `Authorization` header of one request, marked sensitive. `string_to_sign` gives
    /// the service's string to sign for the account named (called for SharedKey only).
    pub(crate) async fn authorization(
        &self,
        string_to_sign: impl FnOnce(&str) -> String,
    ) -> Result<HeaderValue, String> {
        let value = match self {
            StorageAuth::SharedKey { account, key } => {
                shared_key(account, key, &string_to_sign(account))
            }
            StorageAuth::Identity(tokens) => format!("Bearer {}", tokens.storage_token().await?),
        };
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| "authorization is not a header value".to_string())?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// `SharedKey <account>:<base64 HMAC-SHA256 of string_to_sign with the key>`.
pub(crate) fn shared_key(account: &str, key: &[u8], string_to_sign: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(string_to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("SharedKey {account}:{sig}")
}

/// The account name in a Storage endpoint: the first path segment for path-style URLs
/// (Azurite: `http://127.0.0.1:10002/devstoreaccount1`), else the host's first label.
pub fn account_of(endpoint: &Url) -> Option<String> {
    let first_segment = endpoint
        .path_segments()
        .and_then(|mut s| s.next())
        .filter(|s| !s.is_empty());
    let name = match first_segment {
        Some(s) => s.to_string(),
        None => endpoint.host_str()?.split('.').next()?.to_string(),
    };
    (!name.is_empty()).then_some(name)
}

/// A response read in full.
pub(crate) struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

/// Sends `req` with `authorization` and reads the whole answer; transport failures become
/// short messages (never the URL).
pub(crate) async fn send_authorized(
    req: reqwest::RequestBuilder,
    authorization: HeaderValue,
) -> Result<Response, String> {
    let res = req
        .header("authorization", authorization)
        .send()
        .await
        .map_err(|e| error_chain(&e.without_url()))?;
    let status = res.status();
    let headers = res.headers().clone();
    let body = res
        .bytes()
        .await
        .map_err(|e| format!("response unreadable: {}", error_chain(&e.without_url())))?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_key_is_the_hmac_of_the_string_to_sign() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").expect("key");
        mac.update(b"GET\n\n\nSun, 22 Nov 2026 00:00:00 GMT\n/acct/acct/t1");
        let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(
            shared_key(
                "acct",
                b"key",
                "GET\n\n\nSun, 22 Nov 2026 00:00:00 GMT\n/acct/acct/t1"
            ),
            format!("SharedKey acct:{want}")
        );
    }

    #[test]
    fn account_names_from_endpoints() {
        let u = |s: &str| Url::parse(s).expect("url");
        assert_eq!(
            account_of(&u("http://127.0.0.1:10002/devstoreaccount1")).as_deref(),
            Some("devstoreaccount1")
        );
        assert_eq!(
            account_of(&u("https://acct.table.core.windows.net")).as_deref(),
            Some("acct")
        );
    }

    #[test]
    fn shared_key_settings_name_the_setting_at_fault() {
        let auth = StorageAuth::shared_key_from_settings(
            "E",
            "https://acct.blob.core.windows.net/",
            "K",
            "a2V5",
        )
        .expect("valid");
        assert!(
            matches!(auth, StorageAuth::SharedKey { ref account, ref key } if account == "acct" && key == b"key")
        );
        let err =
            |e: &str, k: &str| StorageAuth::shared_key_from_settings("E", e, "K", k).unwrap_err();
        assert_eq!(err("not a url", "a2V5"), "E is not a URL");
        assert_eq!(
            err("https://acct.blob.core.windows.net", "%%"),
            "K is not base64"
        );
    }

    #[test]
    fn error_text_reads_arm_errors() {
        let body = br#"{"error":{"code":"OperationNotAllowed","message":"quota"}}"#;
        assert_eq!(error_text(body), "OperationNotAllowed: quota");
        assert_eq!(
            error_text(b"<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(9), Duration::from_millis(1600));
    }
}
