//! The job ledger in Azure Table Storage, over the Table REST API.
//!
//! Layout (one table):
//! - the **job entity** `PartitionKey = "job-<id>"`, `RowKey = "job"`: the authoritative
//!   record (state, first pool, runner, updated-at). Every transition is an ETag-conditional
//!   write (insert, which fails with 409 if the entity exists, or replace with `If-Match`,
//!   which fails with 412 if another writer got there first), retried after a re-read.
//! - the **pool marker** `PartitionKey = "pool-<pool>"`, `RowKey = "<id>"`: a copy of the
//!   job's state in its pool's partition. Markers only move forward too (a write is
//!   conditional on the marker's ETag and skipped when the marker is already as far), and a
//!   completed job leaves a `completed` tombstone so a slower concurrent delivery cannot
//!   re-create an active marker behind it; reconcile deletes tombstones after
//!   [`TOMBSTONE_GRACE`].
//!
//! Counts are **derived**, never counters: `pool()` queries the pool's partition for
//! queued/in-progress markers and adds up the core's [`count_delta`] of each. Azurite (and
//! the choice to keep one code path) has no batch transactions, so a counter entity could
//! not change atomically with the job; a marker is one entity per job, so concurrent
//! deliveries for different jobs never contend, and duplicates of one job contend only on
//! that job's ETags. Cost: ~4 round trips per delivery to record plus one partition query,
//! whose size is the pool's active jobs (plus recent tombstones, filtered server-side).
//!
//! A delivery that fails between the job write and the marker write is repaired by the
//! redelivery (every record, stale or not, syncs the marker to the job entity) or by the
//! next reconcile pass, which compares every marker with its job entity.
//!
//! Auth: SharedKey with the account key (Azurite's `devstoreaccount1`; doc
//! learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key), else a bearer
//! token for `https://storage.azure.com/` from the managed identity (role "Storage Table
//! Data Contributor").

use crate::http::{error_chain, unix_now};
use crate::identity::{ManagedIdentity, STORAGE_AUDIENCE};
use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use scalehook_core::config::LedgerTtl;
use scalehook_core::ledger::{
    count_delta, expiry, recorded_runner, Expired, Expiry, JobRecord, JobState, Ledger,
    LedgerError, PoolLedger, Recorded, Transition,
};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The Table service version sent (needed ≥ 2019-02-02 for Entra ID tokens).
pub const TABLE_API_VERSION: &str = "2019-02-02";
/// Completed markers are kept at least this long, far beyond any delivery in flight
/// (the core bounds a delivery's cloud calls to `cloud_timeout_ms`, at most 9 s).
pub const TOMBSTONE_GRACE: Duration = Duration::from_secs(15 * 60);
/// Optimistic-concurrency rounds before a write gives up as contention.
const MAX_ROUNDS: usize = 16;
/// Attempts per Table request.
const ATTEMPTS: u32 = 3;
/// One Table request's time limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Query strings: everything but unreserved characters is percent-encoded (a `+` would be
/// read as a literal plus, not a space).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How requests are authorized.
pub enum TableAuth {
    /// SharedKey with the storage account's key (base64-decoded).
    SharedKey { account: String, key: Vec<u8> },
    /// Entra ID bearer tokens from the managed identity.
    Identity(Arc<ManagedIdentity>),
}

impl std::fmt::Debug for TableAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableAuth::SharedKey { account, .. } => write!(f, "SharedKey({account})"),
            TableAuth::Identity(_) => write!(f, "ManagedIdentity"),
        }
    }
}

/// The account name in a table endpoint: the first path segment for path-style URLs
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

/// Table names: 3–63 alphanumeric characters, starting with a letter.
pub fn valid_table_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric())
        && name.as_bytes()[0].is_ascii_alphabetic()
}

/// A response read in full.
struct TableResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
}

impl TableResponse {
    fn etag(&self) -> Option<String> {
        self.headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// A thin Table REST client for one table.
pub struct TableClient {
    http: reqwest::Client,
    /// Endpoint without a trailing slash, e.g. `https://acct.table.core.windows.net`.
    endpoint: Url,
    table: String,
    auth: TableAuth,
}

impl TableClient {
    pub fn new(
        http: reqwest::Client,
        endpoint: &str,
        table: &str,
        auth: TableAuth,
    ) -> Result<Self, String> {
        let endpoint = Url::parse(endpoint.trim_end_matches('/'))
            .map_err(|e| format!("table endpoint {endpoint:?} is not a URL: {e}"))?;
        if !valid_table_name(table) {
            return Err(format!(
                "table name {table:?} must be 3-63 letters and digits, starting with a letter"
            ));
        }
        Ok(Self {
            http,
            endpoint,
            table: table.to_string(),
            auth,
        })
    }

    fn url(&self, resource: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.endpoint.clone();
        let base = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base}/{resource}"));
        if query.is_empty() {
            url.set_query(None);
        } else {
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY)))
                .collect();
            url.set_query(Some(&q.join("&")));
        }
        url
    }

    fn entity_url(&self, pk: &str, rk: &str) -> Url {
        // Keys are made of [A-Za-z0-9-_.] only (pool names are validated by the core).
        self.url(
            &format!("{}(PartitionKey='{pk}',RowKey='{rk}')", self.table),
            &[],
        )
    }

    /// One request, retried (at most [`ATTEMPTS`] times, short backoff) when the
    /// connection fails or the service is busy (500/503). Retrying is safe for every
    /// operation here: a repeated insert meets 409 and a repeated conditional write meets
    /// 412, and both make the caller re-read.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        extra: &[(&'static str, String)],
    ) -> Result<TableResponse, LedgerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let problem = match self.send_once(&method, &url, body, extra).await {
                Ok(res) if matches!(res.status.as_u16(), 500 | 503) => {
                    format!("{} {}", res.status, crate::http::error_text(&res.body))
                }
                Ok(res) => return Ok(res),
                Err(problem) => problem,
            };
            if attempt >= ATTEMPTS {
                return Err(LedgerError::Unavailable(format!(
                    "table {method} {}: {problem} (after {attempt} attempts)",
                    url.path()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100 * 3u64.pow(attempt - 1))).await;
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&Value>,
        extra: &[(&'static str, String)],
    ) -> Result<TableResponse, String> {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let content_type = if body.is_some() {
            "application/json"
        } else {
            ""
        };
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .timeout(REQUEST_TIMEOUT)
            .header("x-ms-date", &date)
            .header("x-ms-version", TABLE_API_VERSION)
            .header("accept", "application/json;odata=nometadata")
            .header("dataserviceversion", "3.0;NetFx")
            .header("maxdataserviceversion", "3.0;NetFx");
        for (k, v) in extra {
            req = req.header(*k, v);
        }
        if let Some(b) = body {
            req = req.header("content-type", content_type).body(b.to_string());
        }
        let authorization = match &self.auth {
            TableAuth::SharedKey { account, key } => {
                shared_key(account, key, method, content_type, &date, url)
            }
            TableAuth::Identity(identity) => {
                let token = identity
                    .token(STORAGE_AUDIENCE)
                    .await
                    .map_err(|e| e.to_string())?;
                format!("Bearer {token}")
            }
        };
        let mut value = HeaderValue::from_str(&authorization)
            .map_err(|_| "authorization is not a header value".to_string())?;
        value.set_sensitive(true);
        let res = req
            .header("authorization", value)
            .send()
            .await
            .map_err(|e| error_chain(&e.without_url()))?;
        let status = res.status();
        let headers = res.headers().clone();
        let body = res
            .bytes()
            .await
            .map_err(|e| format!("response unreadable: {}", error_chain(&e.without_url())))?;
        Ok(TableResponse {
            status,
            headers,
            body,
        })
    }

    fn failure(&self, what: &str, res: &TableResponse) -> LedgerError {
        LedgerError::Unavailable(format!(
            "table {} {what}: {} {}",
            self.table,
            res.status,
            crate::http::error_text(&res.body)
        ))
    }

    /// Creates the table when missing (409 `TableAlreadyExists` is fine).
    pub async fn ensure_table(&self) -> Result<(), LedgerError> {
        let res = self
            .send(
                Method::POST,
                self.url("Tables", &[]),
                Some(&json!({ "TableName": self.table })),
                &[("prefer", "return-no-content".into())],
            )
            .await?;
        match res.status.as_u16() {
            200..=299 | 409 => Ok(()),
            _ => Err(self.failure("create", &res)),
        }
    }

    /// An entity and its ETag, or `None`.
    async fn get(
        &self,
        pk: &str,
        rk: &str,
    ) -> Result<Option<(Map<String, Value>, String)>, LedgerError> {
        let res = self
            .send(Method::GET, self.entity_url(pk, rk), None, &[])
            .await?;
        match res.status.as_u16() {
            200 => {
                let etag = res
                    .etag()
                    .ok_or_else(|| self.failure("get: no ETag", &res))?;
                let Ok(Value::Object(map)) = serde_json::from_slice(&res.body) else {
                    return Err(self.failure("get: entity is not a JSON object", &res));
                };
                Ok(Some((map, etag)))
            }
            404 => Ok(None),
            _ => Err(self.failure("get", &res)),
        }
    }

    /// Inserts; `Ok(false)` if the entity already exists.
    async fn insert(&self, entity: &Value) -> Result<bool, LedgerError> {
        let res = self
            .send(
                Method::POST,
                self.url(&self.table, &[]),
                Some(entity),
                &[("prefer", "return-no-content".into())],
            )
            .await?;
        match res.status.as_u16() {
            200..=299 => Ok(true),
            409 => Ok(false),
            _ => Err(self.failure("insert", &res)),
        }
    }

    /// Replaces if the ETag still matches; `Ok(false)` if someone else wrote (412) or
    /// deleted (404) it first.
    async fn replace(
        &self,
        pk: &str,
        rk: &str,
        etag: &str,
        entity: &Value,
    ) -> Result<bool, LedgerError> {
        let res = self
            .send(
                Method::PUT,
                self.entity_url(pk, rk),
                Some(entity),
                &[("if-match", etag.to_string())],
            )
            .await?;
        match res.status.as_u16() {
            200..=299 => Ok(true),
            404 | 412 => Ok(false),
            _ => Err(self.failure("replace", &res)),
        }
    }

    /// Deletes if the ETag still matches (`*`: any); `Ok(false)` on 404/412.
    async fn delete(&self, pk: &str, rk: &str, etag: &str) -> Result<bool, LedgerError> {
        let res = self
            .send(
                Method::DELETE,
                self.entity_url(pk, rk),
                None,
                &[("if-match", etag.to_string())],
            )
            .await?;
        match res.status.as_u16() {
            200..=299 => Ok(true),
            404 | 412 => Ok(false),
            _ => Err(self.failure("delete", &res)),
        }
    }

    /// All entities matching `filter` (all of them when `None`), following continuations.
    async fn query(
        &self,
        filter: Option<&str>,
        select: &str,
    ) -> Result<Vec<Map<String, Value>>, LedgerError> {
        let mut out = Vec::new();
        let mut next: Option<(String, Option<String>)> = None;
        loop {
            let mut q: Vec<(&str, &str)> = vec![("$select", select)];
            if let Some(f) = filter {
                q.push(("$filter", f));
            }
            if let Some((pk, rk)) = &next {
                q.push(("NextPartitionKey", pk));
                if let Some(rk) = rk {
                    q.push(("NextRowKey", rk));
                }
            }
            let url = self.url(&format!("{}()", self.table), &q);
            let res = self.send(Method::GET, url, None, &[]).await?;
            if res.status != StatusCode::OK {
                return Err(self.failure("query", &res));
            }
            let page: Value = serde_json::from_slice(&res.body)
                .map_err(|_| self.failure("query: not JSON", &res))?;
            if let Some(items) = page.get("value").and_then(Value::as_array) {
                out.extend(items.iter().filter_map(|v| v.as_object().cloned()));
            }
            let header = |k: &str| {
                res.headers
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            match header("x-ms-continuation-nextpartitionkey") {
                Some(pk) => next = Some((pk, header("x-ms-continuation-nextrowkey"))),
                None => return Ok(out),
            }
        }
    }
}

/// `SharedKey account:signature` for the Table service: the string to sign is
/// `VERB\nContent-MD5\nContent-Type\nDate\nCanonicalizedResource`, where the resource is
/// `/account/path` plus `?comp=` when present (no other query parameters).
fn shared_key(
    account: &str,
    key: &[u8],
    method: &Method,
    content_type: &str,
    date: &str,
    url: &Url,
) -> String {
    let mut resource = format!("/{account}{}", url.path());
    if let Some((_, comp)) = url.query_pairs().find(|(k, _)| k == "comp") {
        resource.push_str(&format!("?comp={comp}"));
    }
    let to_sign = format!("{method}\n\n{content_type}\n{date}\n{resource}");
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("SharedKey {account}:{sig}")
}

/// The ledger in one table (see the module docs for the layout and why).
pub struct TableLedger {
    client: TableClient,
}

/// A job entity as read.
struct StoredJob {
    record: JobRecord,
    etag: String,
}

fn job_pk(job_id: u64) -> String {
    format!("job-{job_id}")
}
const JOB_RK: &str = "job";
fn marker_pk(pool: &str) -> String {
    format!("pool-{pool}")
}

fn int64(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn text<'a>(e: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    e.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn state_of(e: &Map<String, Value>) -> Result<JobState, LedgerError> {
    text(e, "State")
        .and_then(JobState::parse)
        .ok_or_else(|| LedgerError::Unavailable("ledger entity has no valid State".into()))
}

fn job_from(job_id: u64, e: &Map<String, Value>) -> Result<JobRecord, LedgerError> {
    Ok(JobRecord {
        job_id,
        pool: text(e, "Pool")
            .ok_or_else(|| LedgerError::Unavailable(format!("job {job_id} has no Pool")))?
            .to_string(),
        state: state_of(e)?,
        runner: text(e, "Runner").map(str::to_string),
        updated_at: int64(e.get("UpdatedAt")).unwrap_or(0),
        repository: text(e, "Repository").map(str::to_string),
    })
}

fn job_entity(r: &JobRecord) -> Value {
    json!({
        "PartitionKey": job_pk(r.job_id),
        "RowKey": JOB_RK,
        "Kind": "job",
        "State": r.state.as_str(),
        "Pool": r.pool,
        "Runner": r.runner.clone().unwrap_or_default(),
        "Repository": r.repository.clone().unwrap_or_default(),
        "UpdatedAt": r.updated_at.to_string(),
        "UpdatedAt@odata.type": "Edm.Int64",
    })
}

fn marker_entity(r: &JobRecord, now: u64) -> Value {
    json!({
        "PartitionKey": marker_pk(&r.pool),
        "RowKey": r.job_id.to_string(),
        "Kind": "marker",
        "State": r.state.as_str(),
        "Runner": r.runner.clone().unwrap_or_default(),
        "UpdatedAt": now.to_string(),
        "UpdatedAt@odata.type": "Edm.Int64",
    })
}

impl TableLedger {
    pub fn new(client: TableClient) -> Self {
        Self { client }
    }

    pub fn client(&self) -> &TableClient {
        &self.client
    }

    async fn read_job(&self, job_id: u64) -> Result<Option<StoredJob>, LedgerError> {
        Ok(match self.client.get(&job_pk(job_id), JOB_RK).await? {
            Some((e, etag)) => Some(StoredJob {
                record: job_from(job_id, &e)?,
                etag,
            }),
            None => None,
        })
    }

    /// Moves the job's pool marker forward to the job's state (never back). Waiting is
    /// not counted and needs no marker; completed leaves a tombstone (see module docs).
    async fn sync_marker(&self, job: &JobRecord) -> Result<(), LedgerError> {
        if job.state == JobState::Waiting {
            return Ok(());
        }
        let pk = marker_pk(&job.pool);
        let rk = job.job_id.to_string();
        for _ in 0..MAX_ROUNDS {
            let done = match self.client.get(&pk, &rk).await? {
                Some((m, _)) if state_of(&m)? >= job.state => true,
                Some((_, etag)) => {
                    self.client
                        .replace(&pk, &rk, &etag, &marker_entity(job, unix_now()))
                        .await?
                }
                None => self.client.insert(&marker_entity(job, unix_now())).await?,
            };
            if done {
                return Ok(());
            }
        }
        Err(LedgerError::Contention(format!(
            "pool marker of job {} kept changing",
            job.job_id
        )))
    }
}

#[async_trait]
impl Ledger for TableLedger {
    async fn record(&self, t: &Transition) -> Result<Recorded, LedgerError> {
        for _ in 0..MAX_ROUNDS {
            let stored = self.read_job(t.job_id).await?;
            let current = stored.as_ref().map(|s| s.record.state);
            let Some(to) = JobState::advance(current, t.to) else {
                // Stale: still make sure the marker matches (repairs a delivery that
                // failed after its job write), then report where the job is.
                return match stored {
                    Some(s) => {
                        self.sync_marker(&s.record).await?;
                        Ok(Recorded::Stale {
                            current: s.record.state,
                        })
                    }
                    // `advance` refuses only transitions of an existing job.
                    None => Ok(Recorded::Stale { current: t.to }),
                };
            };
            let existing = stored.as_ref().map(|s| &s.record);
            let record = JobRecord {
                job_id: t.job_id,
                // A record keeps the pool of its first sighting.
                pool: existing.map_or_else(|| t.pool.clone(), |r| r.pool.clone()),
                state: to,
                runner: recorded_runner(
                    existing.and_then(|r| r.runner.as_deref()),
                    to,
                    t.runner.as_deref(),
                ),
                updated_at: t.at,
                repository: existing
                    .and_then(|r| r.repository.clone())
                    .or_else(|| t.repository.clone()),
            };
            let written = match &stored {
                None => self.client.insert(&job_entity(&record)).await?,
                Some(s) => {
                    self.client
                        .replace(&job_pk(t.job_id), JOB_RK, &s.etag, &job_entity(&record))
                        .await?
                }
            };
            if written {
                self.sync_marker(&record).await?;
                return Ok(Recorded::Applied {
                    from: current,
                    since: existing.map(|r| r.updated_at),
                });
            }
            // Another delivery of this job wrote first: read again and re-decide.
        }
        Err(LedgerError::Contention(format!(
            "job {} kept changing under concurrent deliveries",
            t.job_id
        )))
    }

    async fn pool(&self, pool: &str) -> Result<PoolLedger, LedgerError> {
        let filter = format!(
            "PartitionKey eq '{}' and (State eq 'queued' or State eq 'in_progress')",
            marker_pk(pool)
        );
        let markers = self.client.query(Some(&filter), "State,Runner").await?;
        let mut account = PoolLedger::default();
        for m in &markers {
            let state = state_of(m)?;
            // Each active job counts as the core's delta from nothing to its state.
            let (dq, dr) = count_delta(None, state);
            account.queued = account.queued.saturating_add_signed(dq);
            account.running = account.running.saturating_add_signed(dr);
            if state == JobState::InProgress {
                if let Some(r) = text(m, "Runner") {
                    account.busy_runners.push(r.to_string());
                }
            }
        }
        Ok(account)
    }

    async fn expire(&self, now: u64, ttl: &LedgerTtl) -> Result<Expired, LedgerError> {
        // One scan of the table (both kinds), then per-entity conditional writes.
        let all = self
            .client
            .query(None, "PartitionKey,RowKey,Kind,State,Pool,Runner,UpdatedAt")
            .await?;
        let mut jobs: Vec<JobRecord> = Vec::new();
        // (pool, job id) -> (marker state, updated at)
        let mut markers: HashMap<(String, u64), (JobState, u64)> = HashMap::new();
        for e in &all {
            let pk = text(e, "PartitionKey").unwrap_or_default();
            let Ok(state) = state_of(e) else { continue };
            if let Some(id) = pk.strip_prefix("job-").and_then(|s| s.parse().ok()) {
                if let Ok(job) = job_from(id, e) {
                    jobs.push(job);
                }
            } else if let (Some(pool), Some(id)) = (
                pk.strip_prefix("pool-"),
                text(e, "RowKey").and_then(|s| s.parse::<u64>().ok()),
            ) {
                markers.insert(
                    (pool.to_string(), id),
                    (state, int64(e.get("UpdatedAt")).unwrap_or(0)),
                );
            }
        }
        let mut done = Expired::default();
        for mut job in jobs {
            let key = (job.pool.clone(), job.job_id);
            match expiry(job.state, job.updated_at, now, ttl) {
                Expiry::Keep => {}
                Expiry::Forget => {
                    // Marker first: a job entity left behind is retried next pass.
                    if markers.remove(&key).is_some() {
                        self.client
                            .delete(&marker_pk(&job.pool), &job.job_id.to_string(), "*")
                            .await?;
                    }
                    let Some(stored) = self.read_job(job.job_id).await? else {
                        continue;
                    };
                    if expiry(stored.record.state, stored.record.updated_at, now, ttl)
                        == Expiry::Forget
                        && self
                            .client
                            .delete(&job_pk(job.job_id), JOB_RK, &stored.etag)
                            .await?
                    {
                        done.forgotten += 1;
                    }
                    continue;
                }
                Expiry::Expire => {
                    // Re-read for the ETag; a delivery may have moved the job meanwhile.
                    let Some(stored) = self.read_job(job.job_id).await? else {
                        continue;
                    };
                    if expiry(stored.record.state, stored.record.updated_at, now, ttl)
                        != Expiry::Expire
                    {
                        continue;
                    }
                    let mut expired = stored.record.clone();
                    expired.state = JobState::Completed;
                    expired.runner =
                        recorded_runner(stored.record.runner.as_deref(), JobState::Completed, None);
                    expired.updated_at = now;
                    if self
                        .client
                        .replace(
                            &job_pk(job.job_id),
                            JOB_RK,
                            &stored.etag,
                            &job_entity(&expired),
                        )
                        .await?
                    {
                        done.expired += 1;
                        job = expired;
                    } else {
                        continue;
                    }
                }
            }
            // Repair: an active marker behind its job, or a missing marker of an active
            // job (a delivery that failed between its two writes).
            let marker = markers.remove(&key);
            let active = matches!(job.state, JobState::Queued | JobState::InProgress);
            let behind = match marker {
                Some((m, _)) => m < job.state,
                None => active,
            };
            if behind {
                self.sync_marker(&job).await?;
            }
        }
        // Whatever markers are left: tombstones past their grace, and orphans whose job
        // entity is gone.
        for ((pool, id), (state, updated_at)) in markers {
            if now.saturating_sub(updated_at) < TOMBSTONE_GRACE.as_secs() {
                continue;
            }
            if state == JobState::Completed || self.read_job(id).await?.is_none() {
                self.client
                    .delete(&marker_pk(&pool), &id.to_string(), "*")
                    .await?;
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn table_names() {
        assert!(valid_table_name("scalehookledger"));
        assert!(!valid_table_name("1abc"));
        assert!(!valid_table_name("ab"));
        assert!(!valid_table_name("a-b-c"));
    }

    #[test]
    fn shared_key_signs_the_documented_string() {
        // Independent check of the string-to-sign layout with a known key.
        let url = Url::parse("http://127.0.0.1:1/devstoreaccount1/t1(PartitionKey='a',RowKey='b')")
            .expect("url");
        let got = shared_key(
            "devstoreaccount1",
            b"key",
            &Method::GET,
            "",
            "Sun, 22 Nov 2026 00:00:00 GMT",
            &url,
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").expect("key");
        mac.update(
            b"GET\n\n\nSun, 22 Nov 2026 00:00:00 GMT\n/devstoreaccount1/devstoreaccount1/t1(PartitionKey='a',RowKey='b')",
        );
        let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(got, format!("SharedKey devstoreaccount1:{want}"));
    }
}
