//! Runner configurations in Blob Storage: the Azure [`RunnerConfigStore`] (docs/azure.md,
//! "Runner provisioning").
//!
//! Each pool has a private container, `jit-<pool>` (created by `infra/azure/runners`). A new
//! VM's JIT configuration is the blob `jit-<pool>/<computer name>`, written once with
//! `If-None-Match: *` (a second process or a redelivery gets 409 and mints nothing more); the
//! VM's boot script reads it with the pool's identity and deletes it. Because the VM deletes
//! it, scalehook also writes a record that outlives the read, the empty blob
//! `jit-<pool>/minted/<computer name>` (boot scripts never read it), holding the ETag of the
//! configuration scalehook wrote: the VM was provisioned, whatever happened to its
//! configuration since. A configuration the record does not name is not scalehook's (a VM
//! that can write the container could plant one for a predictable future computer name): it
//! is deleted and the VM provisioned (logged, `event: jit_config_not_ours`). Records of
//! deleted VMs are removed by the storage account's lifecycle rule (see the Azure example).
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
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

impl BlobResponse {
    fn etag(&self) -> Option<String> {
        self.headers
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
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

    /// A blob's ETag, `None` when there is none.
    pub async fn etag(&self, container: &str, blob: &str) -> Result<Option<String>, String> {
        let url = self.url(&format!("{container}/{blob}"), None);
        let res = self.send(Method::HEAD, &url, None, &[]).await?;
        match res.status.as_u16() {
            200 => Ok(res.etag()),
            404 => Ok(None),
            _ => Err(format!("HEAD {container}/{blob}: {}", status_text(&res))),
        }
    }

    /// Deletes the version `etag` of a blob (`If-Match`). `Ok(false)`: gone or changed.
    pub async fn delete_if_match(
        &self,
        container: &str,
        blob: &str,
        etag: &str,
    ) -> Result<bool, String> {
        let url = self.url(&format!("{container}/{blob}"), None);
        let res = self
            .send(Method::DELETE, &url, None, &[("if-match", etag)])
            .await?;
        match res.status.as_u16() {
            202 => Ok(true),
            404 | 412 => Ok(false),
            _ => Err(format!("DELETE {container}/{blob}: {}", status_text(&res))),
        }
    }

    /// Replaces the version `etag` of a blob (`If-Match`). `Ok(false)`: gone or changed.
    pub async fn replace_if_match(
        &self,
        container: &str,
        blob: &str,
        body: &[u8],
        etag: &str,
    ) -> Result<bool, String> {
        let url = self.url(&format!("{container}/{blob}"), None);
        let headers = [
            ("x-ms-blob-type", "BlockBlob"),
            ("if-match", etag),
            ("content-type", "application/octet-stream"),
        ];
        let res = self.send(Method::PUT, &url, Some(body), &headers).await?;
        match res.status.as_u16() {
            201 => Ok(true),
            404 | 412 => Ok(false),
            _ => Err(format!("PUT {container}/{blob}: {}", status_text(&res))),
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

    /// Writes a block blob only if none exists (`If-None-Match: *`): the ETag of the blob
    /// written, `Ok(None)` when one exists. A retried write that meets 409 compares the
    /// stored content with its own, so an answer lost in transit does not turn the caller's
    /// own write into someone else's.
    pub async fn create(
        &self,
        container: &str,
        blob: &str,
        body: &[u8],
    ) -> Result<Option<String>, String> {
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
                Ok(res) if res.status == StatusCode::CREATED => {
                    return res
                        .etag()
                        .map(Some)
                        .ok_or_else(|| format!("PUT {container}/{blob}: 201 without an ETag"))
                }
                Ok(res) if matches!(res.status.as_u16(), 409 | 412) => {
                    if attempt == 1 || self.get(container, blob).await?.as_deref() != Some(body) {
                        return Ok(None);
                    }
                    return self.etag(container, blob).await;
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
            headers: res.headers,
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
/// `<container>/minted/<computer name>`, whose content is the ETag of the configuration
/// scalehook wrote. A configuration is scalehook's only when the record names its ETag: a
/// blob someone else put there (a VM that can write the container could plant one for a
/// future computer name) is not "already provisioned"; it is deleted and the VM provisioned.
pub struct BlobConfigStore {
    client: Arc<BlobClient>,
    container: String,
    /// How long a configuration without a record may be another process's write in flight
    /// (its record follows within milliseconds) before it counts as not scalehook's.
    record_wait: Duration,
}

/// What a stored configuration is to scalehook.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// None stored, and no record.
    Nothing,
    /// The record, and the configuration it names or none (the VM took it).
    Ours,
    /// A configuration the record does not name (or no record): not scalehook's write.
    NotOurs { etag: String },
    /// A record without its configuration where one should be: see [`BlobConfigStore::exists`].
    RecordOnly,
}

impl BlobConfigStore {
    pub fn new(client: Arc<BlobClient>, container: impl Into<String>) -> Self {
        Self {
            client,
            container: container.into(),
            record_wait: Duration::from_secs(1),
        }
    }

    pub fn container(&self) -> &str {
        &self.container
    }

    fn record(instance_key: &str) -> String {
        format!("{MINTED_PREFIX}{instance_key}")
    }

    /// The configuration's ETag and the record's content (the ETag scalehook wrote).
    async fn look(&self, instance_key: &str) -> Result<Found, StoreError> {
        let c = &self.container;
        let record = self
            .client
            .get(c, &Self::record(instance_key))
            .await
            .map_err(failed)?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let etag = self.client.etag(c, instance_key).await.map_err(failed)?;
        Ok(match (record, etag) {
            (None, None) => Found::Nothing,
            (Some(r), Some(e)) if r == e => Found::Ours,
            (Some(_), None) => Found::RecordOnly,
            (_, Some(etag)) => Found::NotOurs { etag },
        })
    }

    /// Writes the record naming `etag` (replacing a record that names something else).
    /// `Ok(false)`: the configuration is no longer the one written (another writer won).
    async fn write_record(&self, instance_key: &str, etag: &str) -> Result<bool, StoreError> {
        let c = &self.container;
        let record = Self::record(instance_key);
        for _ in 0..3 {
            if self
                .client
                .create(c, &record, etag.as_bytes())
                .await
                .map_err(failed)?
                .is_some()
            {
                return Ok(true);
            }
            // A record exists: a stale or planted one, or another process's for its own
            // configuration. Ours stays only while the configuration is still ours.
            if self
                .client
                .etag(c, instance_key)
                .await
                .map_err(failed)?
                .as_deref()
                != Some(etag)
            {
                return Ok(false);
            }
            let Some(old) = self.client.etag(c, &record).await.map_err(failed)? else {
                continue;
            };
            if self
                .client
                .replace_if_match(c, &record, etag.as_bytes(), &old)
                .await
                .map_err(failed)?
            {
                return Ok(true);
            }
        }
        Err(StoreError::Failed(format!(
            "{c}/{record}: the record kept changing"
        )))
    }

    /// A configuration that is not scalehook's: waits (bounded) for the record of a write
    /// in flight, then deletes that version. `Ok(true)`: it was ours after all.
    async fn remove_foreign(&self, instance_key: &str, etag: &str) -> Result<bool, StoreError> {
        let until = tokio::time::Instant::now() + self.record_wait;
        loop {
            match self.look(instance_key).await? {
                Found::Ours => return Ok(true),
                Found::NotOurs { etag: now } if now == etag => {}
                // It changed under us: the caller looks again next pass.
                _ => {
                    return Err(StoreError::Failed(format!(
                        "{}/{instance_key} changed while checked",
                        self.container
                    )))
                }
            }
            if tokio::time::Instant::now() >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!(
            target: "scalehook::provision",
            event = "jit_config_not_ours",
            container = %self.container,
            instance = %instance_key,
            "a runner configuration scalehook did not write was found for this VM; deleting it and provisioning the VM"
        );
        self.client
            .delete_if_match(&self.container, instance_key, etag)
            .await
            .map_err(failed)?;
        Ok(false)
    }
}

fn failed(e: String) -> StoreError {
    StoreError::Failed(e)
}

#[async_trait]
impl RunnerConfigStore for BlobConfigStore {
    /// Provisioned when the record names the configuration stored (or the VM took it). A
    /// configuration the record does not name is not scalehook's: not provisioned.
    async fn exists(&self, instance_key: &str) -> Result<bool, StoreError> {
        // RecordOnly: the VM read and deleted its configuration (the usual end). A record
        // planted without a configuration only keeps a VM unprovisioned (no runner starts);
        // VMs must not be able to write the container at all (docs/threat-model.md).
        Ok(matches!(
            self.look(instance_key).await?,
            Found::Ours | Found::RecordOnly
        ))
    }

    async fn put(&self, instance_key: &str, runner: &JitRunner) -> Result<(), StoreError> {
        let c = &self.container;
        let body = runner.encoded_jit_config.as_bytes();
        let mut etag = self
            .client
            .create(c, instance_key, body)
            .await
            .map_err(failed)?;
        if etag.is_none() {
            // Someone's configuration is there: another process's (its record names it, or
            // follows at once), or one scalehook did not write, which is removed.
            let Found::NotOurs { etag: theirs } = self.look(instance_key).await? else {
                return Err(StoreError::AlreadyStored);
            };
            if self.remove_foreign(instance_key, &theirs).await? {
                return Err(StoreError::AlreadyStored);
            }
            etag = self
                .client
                .create(c, instance_key, body)
                .await
                .map_err(failed)?;
        }
        let Some(etag) = etag else {
            return Err(StoreError::AlreadyStored);
        };
        // The configuration is stored: the VM will boot with it. Its record makes it
        // scalehook's; a record that cannot be written leaves the VM to the next pass,
        // which finds a configuration without a record and provisions the VM again.
        match self.write_record(instance_key, &etag).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::AlreadyStored),
            Err(e) => {
                tracing::warn!(target: "scalehook::provision", container = %c, instance = %instance_key, error = %e, "could not write the provisioned record");
                Ok(())
            }
        }
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
/// one of them is). The minted runners' ids are saved in `ledger` (the service's), where the
/// removal of their VM reads them.
pub fn with_provisioning(
    fleet: Arc<dyn scalehook_core::Fleet>,
    ledger: Arc<dyn scalehook_core::Ledger>,
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
    )
    .with_ledger(ledger);
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
