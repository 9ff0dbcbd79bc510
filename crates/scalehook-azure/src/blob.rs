//! Runner configurations in Blob Storage: the Azure [`RunnerConfigStore`] (docs/azure.md,
//! "Runner provisioning").
//!
//! Each pool has a private container, `jit-<pool>` (created by `infra/azure/runners`). A new
//! VM's JIT configuration is the blob `jit-<pool>/<computer name>`, written once with
//! `If-None-Match: *` (a second process or a redelivery gets 409 and mints nothing more); the
//! VM's boot script reads it with the pool's identity and deletes it. Because the VM deletes
//! it, scalehook also writes a record that outlives the read, the empty blob
//! `jit-<pool>/minted/<computer name>` (boot scripts never read it): the VM was provisioned,
//! whatever happened to its configuration since. Records of deleted VMs are removed by the
//! storage account's lifecycle rule (see the Azure example).
//!
//! Auth: a bearer token for `https://storage.azure.com/` from the function app's managed
//! identity (role "Storage Blob Data Contributor" on the pools' containers only), or
//! SharedKey with the account key (Azurite; doc
//! learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key). REST reference:
//! learn.microsoft.com/rest/api/storageservices/put-blob, get-blob-properties,
//! specifying-conditional-headers-for-blob-service-operations.

use crate::http::{account_of, backoff, retryable, send_authorized, snippet, StorageAuth};
use crate::identity::ManagedIdentity;
use async_trait::async_trait;
use reqwest::{Method, StatusCode, Url};
use scalehook_core::github::JitRunner;
use scalehook_core::provision::{RunnerConfigStore, RunnerConfigStores, StoreError};
use scalehook_core::{Config, PoolConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The Blob service version sent (the boot script sends the same; ≥ 2017-11-09 for Entra ID).
pub const BLOB_API_VERSION: &str = "2021-08-06";
/// Where the "provisioned" records live inside a pool's container.
pub const MINTED_PREFIX: &str = "minted/";
const ATTEMPTS: u32 = 3;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// How Blob requests are authorized: SharedKey with the account key, or the managed
/// identity's bearer tokens (the same credential the Table client takes).
pub type BlobAuth = StorageAuth;

/// The container of a pool's JIT configurations: `jit-<pool>` (what `infra/azure/runners`
/// creates), or an error when that is not a valid container name.
pub fn container_of(pool: &PoolConfig) -> Result<String, String> {
    let name = format!("jit-{}", pool.name);
    let ok = name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.contains("--")
        && !name.ends_with('-');
    if ok {
        Ok(name)
    } else {
        Err(format!(
            "pool {:?}: its JIT container {name:?} is not a valid blob container name (pool names on Azure: lower-case letters, digits and single '-', at most 59 characters)",
            pool.name
        ))
    }
}

struct BlobResponse {
    status: StatusCode,
    body: bytes::Bytes,
}

/// A thin Blob REST client for one storage account.
pub struct BlobClient {
    http: reqwest::Client,
    /// The blob endpoint without a trailing slash, e.g. `https://acct.blob.core.windows.net`
    /// (Azurite: `http://127.0.0.1:10000/devstoreaccount1`).
    endpoint: Url,
    auth: BlobAuth,
    requests: AtomicU64,
}

impl BlobClient {
    pub fn new(http: reqwest::Client, endpoint: &str, auth: BlobAuth) -> Result<Self, String> {
        let endpoint = Url::parse(endpoint.trim_end_matches('/'))
            .map_err(|_| "the blob endpoint is not a URL".to_string())?;
        if !matches!(endpoint.scheme(), "https" | "http") {
            return Err("the blob endpoint must be an http(s) URL".into());
        }
        if endpoint.query().is_some() {
            return Err("the blob endpoint must not have a query (no SAS tokens)".into());
        }
        if account_of(&endpoint).is_none() {
            return Err("no account name in the blob endpoint".into());
        }
        Ok(Self {
            http,
            endpoint,
            auth,
            requests: AtomicU64::new(0),
        })
    }

    /// Requests sent (every attempt counts).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn url(&self, path: &str, query: Option<&str>) -> Url {
        let mut url = self.endpoint.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}/{path}"));
        url.set_query(query);
        url
    }

    /// Creates a container (for tests and local runs: on Azure, Terraform creates them).
    pub async fn create_container(&self, container: &str) -> Result<(), String> {
        let url = self.url(container, Some("restype=container"));
        let res = self.send(Method::PUT, &url, None, &[]).await?;
        match res.status.as_u16() {
            201 | 409 => Ok(()),
            _ => Err(format!(
                "create container {container}: {}",
                status_text(&res)
            )),
        }
    }

    /// Whether a blob exists.
    pub async fn exists(&self, container: &str, blob: &str) -> Result<bool, String> {
        let url = self.url(&format!("{container}/{blob}"), None);
        let res = self.send(Method::HEAD, &url, None, &[]).await?;
        match res.status.as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(format!("HEAD {container}/{blob}: {}", status_text(&res))),
        }
    }

    /// A blob's content, `None` when there is none.
    pub async fn get(&self, container: &str, blob: &str) -> Result<Option<Vec<u8>>, String> {
        let url = self.url(&format!("{container}/{blob}"), None);
        let res = self.send(Method::GET, &url, None, &[]).await?;
        match res.status.as_u16() {
            200 => Ok(Some(res.body.to_vec())),
            404 => Ok(None),
            _ => Err(format!("GET {container}/{blob}: {}", status_text(&res))),
        }
    }

    /// Deletes a blob (what a VM's boot script does after reading its configuration).
    /// `Ok(false)`: there was none.
    pub async fn delete(&self, container: &str, blob: &str) -> Result<bool, String> {
        let url = self.url(&format!("{container}/{blob}"), None);
        let res = self.send(Method::DELETE, &url, None, &[]).await?;
        match res.status.as_u16() {
            202 => Ok(true),
            404 => Ok(false),
            _ => Err(format!("DELETE {container}/{blob}: {}", status_text(&res))),
        }
    }

    /// Writes a block blob only if none exists (`If-None-Match: *`). `Ok(false)`: one
    /// exists. A retried write that meets 409 compares the stored content with its own, so
    /// an answer lost in transit does not turn the caller's own write into someone else's.
    pub async fn create(&self, container: &str, blob: &str, body: &[u8]) -> Result<bool, String> {
        let url = self.url(&format!("{container}/{blob}"), None);
        let headers = [
            ("x-ms-blob-type", "BlockBlob"),
            ("if-none-match", "*"),
            ("content-type", "application/octet-stream"),
        ];
        let mut attempt = 0;
        loop {
            attempt += 1;
            let problem = match self
                .send_once(&Method::PUT, &url, Some(body), &headers)
                .await
            {
                Ok(res) if res.status == StatusCode::CREATED => return Ok(true),
                Ok(res) if matches!(res.status.as_u16(), 409 | 412) => {
                    if attempt == 1 {
                        return Ok(false);
                    }
                    return Ok(self.get(container, blob).await?.as_deref() == Some(body));
                }
                Ok(res) if retryable(res.status) => status_text(&res),
                Ok(res) => return Err(format!("PUT {container}/{blob}: {}", status_text(&res))),
                Err(problem) => problem,
            };
            if attempt >= ATTEMPTS {
                return Err(format!(
                    "PUT {container}/{blob}: {problem} (after {attempt} attempts)"
                ));
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// One idempotent request, retried on connection failures, throttling and 5xx.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&[u8]>,
        headers: &[(&'static str, &str)],
    ) -> Result<BlobResponse, String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let problem = match self.send_once(&method, url, body, headers).await {
                Ok(res) if retryable(res.status) => status_text(&res),
                Ok(res) => return Ok(res),
                Err(problem) => problem,
            };
            if attempt >= ATTEMPTS {
                return Err(format!(
                    "{method} {}: {problem} (after {attempt} attempts)",
                    url.path()
                ));
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
        headers: &[(&'static str, &str)],
    ) -> Result<BlobResponse, String> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .timeout(REQUEST_TIMEOUT)
            .header("x-ms-date", &date)
            .header("x-ms-version", BLOB_API_VERSION);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let length = body.map_or(0, <[u8]>::len);
        if let Some(b) = body.filter(|b| !b.is_empty()) {
            req = req.body(b.to_vec());
        } else if *method == Method::PUT {
            // An empty PUT still states its length (the service answers 411 otherwise).
            req = req.header("content-length", "0");
        }
        let authorization = self
            .auth
            .authorization(|account| {
                let mut signed: Vec<(&str, &str)> = headers.to_vec();
                signed.push(("x-ms-date", &date));
                signed.push(("x-ms-version", BLOB_API_VERSION));
                string_to_sign(account, method, length, &signed, url)
            })
            .await?;
        let res = send_authorized(req, authorization).await?;
        Ok(BlobResponse {
            status: res.status,
            body: res.body,
        })
    }
}

fn status_text(res: &BlobResponse) -> String {
    // Blob errors are XML (<Code>…</Code><Message>…</Message>); the code is enough.
    let text = String::from_utf8_lossy(&res.body);
    match (text.find("<Code>"), text.find("</Code>")) {
        (Some(a), Some(b)) if a + 6 <= b => format!("{} {}", res.status, &text[a + 6..b]),
        _ if res.body.is_empty() => res.status.to_string(),
        _ => format!("{} {}", res.status, snippet(&res.body)),
    }
}

/// The Blob service's SharedKey string to sign (version 2015-02-21 and later: an empty
/// Content-Length line when there is no body).
fn string_to_sign(
    account: &str,
    method: &Method,
    content_length: usize,
    headers: &[(&str, &str)],
    url: &Url,
) -> String {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| *v)
    };
    let length = if content_length == 0 {
        String::new()
    } else {
        content_length.to_string()
    };
    let mut ms: Vec<(String, &str)> = headers
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-ms-"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim()))
        .collect();
    ms.sort();
    let canonical_headers: String = ms.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let mut resource = format!("/{account}{}", url.path());
    let mut query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect();
    query.sort();
    for (k, v) in query {
        resource.push_str(&format!("\n{k}:{v}"));
    }
    format!(
        "{method}\n{}\n{}\n{length}\n{}\n{}\n\n{}\n{}\n{}\n{}\n{}\n{canonical_headers}{resource}",
        header("content-encoding"),
        header("content-language"),
        header("content-md5"),
        header("content-type"),
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    )
}

/// One pool's JIT configurations: `<container>/<computer name>` and the record
/// `<container>/minted/<computer name>`.
pub struct BlobConfigStore {
    client: Arc<BlobClient>,
    container: String,
}

impl BlobConfigStore {
    pub fn new(client: Arc<BlobClient>, container: impl Into<String>) -> Self {
        Self {
            client,
            container: container.into(),
        }
    }

    pub fn container(&self) -> &str {
        &self.container
    }
}

fn failed(e: String) -> StoreError {
    StoreError::Failed(e)
}

#[async_trait]
impl RunnerConfigStore for BlobConfigStore {
    /// The record, or a configuration not yet taken (its record's write may have failed).
    async fn exists(&self, instance_key: &str) -> Result<bool, StoreError> {
        let c = &self.container;
        if self
            .client
            .exists(c, &format!("{MINTED_PREFIX}{instance_key}"))
            .await
            .map_err(failed)?
        {
            return Ok(true);
        }
        self.client.exists(c, instance_key).await.map_err(failed)
    }

    async fn put(&self, instance_key: &str, runner: &JitRunner) -> Result<(), StoreError> {
        let c = &self.container;
        if !self
            .client
            .create(c, instance_key, runner.encoded_jit_config.as_bytes())
            .await
            .map_err(failed)?
        {
            return Err(StoreError::AlreadyStored);
        }
        // The configuration is stored: the VM will boot with it whatever happens next. A
        // record that cannot be written leaves `exists` to the configuration until the VM
        // takes it; a later pass still finds the VM's registered runner.
        if let Err(e) = self
            .client
            .create(c, &format!("{MINTED_PREFIX}{instance_key}"), b"")
            .await
        {
            tracing::warn!(target: "scalehook::provision", container = %c, instance = %instance_key, error = %e, "could not write the provisioned record");
        }
        Ok(())
    }
}

/// Every pool's store, one container per pool on one account.
pub struct BlobStores {
    stores: HashMap<String, Arc<BlobConfigStore>>,
}

impl BlobStores {
    /// One [`BlobConfigStore`] per pool of `config`, in container `jit-<pool>`.
    pub fn new(client: Arc<BlobClient>, config: &Config) -> Result<Self, String> {
        let mut stores = HashMap::new();
        for pool in &config.pools {
            let container = container_of(pool)?;
            stores.insert(
                pool.name.clone(),
                Arc::new(BlobConfigStore::new(client.clone(), container)),
            );
        }
        Ok(Self { stores })
    }
}

impl RunnerConfigStores for BlobStores {
    fn for_pool(&self, pool: &PoolConfig) -> Option<Arc<dyn RunnerConfigStore>> {
        self.stores
            .get(&pool.name)
            .map(|s| s.clone() as Arc<dyn RunnerConfigStore>)
    }
}

/// The blob endpoint of the pools' JIT containers, e.g. `https://<account>.blob.core.windows.net`.
pub const JIT_BLOB_ENDPOINT_ENV: &str = "SCALEHOOK_JIT_BLOB_ENDPOINT";
/// The account key for it (Azurite and local runs only; on Azure the managed identity).
pub const JIT_BLOB_KEY_ENV: &str = "SCALEHOOK_JIT_BLOB_ACCOUNT_KEY";
/// No new mint starts after this share of the cloud budget into a describe.
const PROVISION_SHARE: u32 = 3;

/// The scale set fleet, wrapped so that every describe provisions new VMs
/// ([`ProvisioningFleet`](scalehook_core::provision::ProvisioningFleet)), when a GitHub App
/// and [`JIT_BLOB_ENDPOINT_ENV`] are both set; otherwise `fleet` unchanged (warned when only
/// one of them is).
pub fn with_provisioning(
    fleet: Arc<dyn scalehook_core::Fleet>,
    github: Option<Arc<dyn scalehook_core::GitHub>>,
    config: &Config,
    http: reqwest::Client,
    identity: Arc<ManagedIdentity>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn scalehook_core::Fleet>, String> {
    use scalehook_core::provision::{Provisioner, ProvisioningFleet};
    let var = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
    let (github, endpoint) = match (github, var(JIT_BLOB_ENDPOINT_ENV)) {
        (Some(g), Some(e)) => (g, e),
        (Some(_), None) => {
            tracing::warn!(target: "scalehook::provision", "{JIT_BLOB_ENDPOINT_ENV} is not set: new VMs get no JIT runner from scalehook (infra/azure/runners VMs wait for one and power off)");
            return Ok(fleet);
        }
        (None, Some(_)) => {
            tracing::warn!(target: "scalehook::provision", "{JIT_BLOB_ENDPOINT_ENV} is set but no GitHub App is configured: no runner can be minted");
            return Ok(fleet);
        }
        (None, None) => return Ok(fleet),
    };
    let auth = match var(JIT_BLOB_KEY_ENV) {
        Some(key) => StorageAuth::shared_key_from_settings(
            JIT_BLOB_ENDPOINT_ENV,
            &endpoint,
            JIT_BLOB_KEY_ENV,
            &key,
        )?,
        None => StorageAuth::Identity(identity),
    };
    let client = BlobClient::new(http, &endpoint, auth)
        .map_err(|e| format!("{JIT_BLOB_ENDPOINT_ENV}: {e}"))?;
    let stores =
        BlobStores::new(Arc::new(client), config).map_err(|e| format!("configuration: {e}"))?;
    let provisioner = Provisioner::new(
        github,
        Arc::new(stores),
        config.cloud_timeout / PROVISION_SHARE,
    );
    Ok(Arc::new(ProvisioningFleet::new(
        fleet,
        Arc::new(provisioner),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str) -> PoolConfig {
        let toml = format!("[[pools]]\nname = \"{name}\"\nlabels = [\"self-hosted\"]\nmax = 1\n");
        Config::from_toml(&toml).expect("config").pools.remove(0)
    }

    #[test]
    fn containers_are_named_after_pools() {
        assert_eq!(
            container_of(&pool("linux-x64")).as_deref(),
            Ok("jit-linux-x64")
        );
        assert!(container_of(&pool("Linux")).is_err());
        assert!(container_of(&pool("a--b")).is_err());
        assert!(container_of(&pool("a_b")).is_err());
    }

    #[test]
    fn shared_key_signs_the_documented_string() {
        let url = Url::parse("http://127.0.0.1:1/devstoreaccount1/jit-p/vm1?restype=container")
            .expect("url");
        let headers = [
            ("x-ms-version", BLOB_API_VERSION),
            ("if-none-match", "*"),
            ("x-ms-date", "Sun, 22 Nov 2026 00:00:00 GMT"),
            ("content-type", "application/octet-stream"),
        ];
        assert_eq!(
            string_to_sign("devstoreaccount1", &Method::PUT, 5, &headers, &url),
            "PUT\n\n\n5\n\napplication/octet-stream\n\n\n\n*\n\n\n\
x-ms-date:Sun, 22 Nov 2026 00:00:00 GMT\nx-ms-version:2021-08-06\n\
/devstoreaccount1/devstoreaccount1/jit-p/vm1\nrestype:container"
        );
    }

    #[test]
    fn endpoints_are_checked() {
        let http = crate::http::client().expect("client");
        let auth = || BlobAuth::SharedKey {
            account: "a".into(),
            key: vec![1],
        };
        assert!(
            BlobClient::new(http.clone(), "https://acct.blob.core.windows.net/", auth()).is_ok()
        );
        assert!(BlobClient::new(http.clone(), "not a url", auth()).is_err());
        assert!(BlobClient::new(http, "https://acct.blob.core.windows.net/?sv=x", auth()).is_err());
    }
}
