//! A thin client for one Azure Table Storage table over the Table REST API: point reads,
//! ETag-conditional inserts/replaces/deletes, insert-or-replace, paged queries, and entity
//! group transactions (`$batch`, one partition, all-or-nothing). The ledger built on it is
//! [`crate::ledger::TableLedger`].
//!
//! Auth: SharedKey with the account key (Azurite's `devstoreaccount1`; doc
//! learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key), else a bearer
//! token for `https://storage.azure.com/` from the managed identity (role "Storage Table
//! Data Contributor").
//!
//! Every request is counted ([`TableClient::requests`]) so tests can show what one delivery
//! costs.

use crate::http::{error_text, send_authorized, Response, StorageAuth};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode, Url};
use scalehook_core::ledger::LedgerError;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use crate::http::account_of;

/// The Table service version sent (needed ≥ 2019-02-02 for Entra ID tokens).
pub const TABLE_API_VERSION: &str = "2019-02-02";
/// Attempts per Table request.
const ATTEMPTS: u32 = 3;
/// One Table request's time limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The most operations one entity group transaction may carry (documented limit).
pub const BATCH_LIMIT: usize = 100;

/// Query strings: everything but unreserved characters is percent-encoded (a `+` would be
/// read as a literal plus, not a space).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How requests are authorized: SharedKey with the account key, or the managed identity's
/// bearer tokens (the same credential the Blob client takes).
pub type TableAuth = StorageAuth;

/// Table names: 3–63 alphanumeric characters, starting with a letter.
pub fn valid_table_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric())
        && name.as_bytes()[0].is_ascii_alphabetic()
}

/// A response read in full.
type TableResponse = Response;

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
    /// Requests sent (every attempt counts).
    requests: AtomicU64,
    /// Makes batch boundaries unique within this process.
    batches: AtomicU64,
}

/// An entity read with its ETag.
pub type Entity = (Map<String, Value>, String);

/// One operation of an entity group transaction.
#[derive(Debug, Clone)]
pub enum BatchOp {
    /// Insert; fails the transaction (409) if the entity exists.
    Insert(Value),
    /// Replace if the ETag still matches (412 otherwise; 404 if gone).
    Replace {
        row: String,
        etag: String,
        entity: Value,
    },
    /// Delete if the ETag still matches.
    Delete { row: String, etag: String },
}

/// How an entity group transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every operation was applied, together.
    Committed,
    /// Nothing was applied: a condition failed (412, 409 or 404). Re-read and re-decide.
    Conflict(u16),
}

/// One page of a query and where the next starts.
#[derive(Debug, Default)]
pub struct Page {
    pub items: Vec<Map<String, Value>>,
    /// `(NextPartitionKey, NextRowKey)` when there is more.
    pub next: Option<(String, Option<String>)>,
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
            requests: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        })
    }

    /// How many requests this client has sent (each retry attempt counts).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn table(&self) -> &str {
        &self.table
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
    /// operation here: a repeated insert meets 409, a repeated conditional write or batch
    /// meets 412, and both make the caller re-read; insert-or-replace is idempotent.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<(&str, String)>,
        extra: &[(&'static str, String)],
    ) -> Result<TableResponse, LedgerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let problem = match self.send_once(&method, &url, body.as_ref(), extra).await {
                Ok(res) if matches!(res.status.as_u16(), 500 | 503) => {
                    format!("{} {}", res.status, error_text(&res.body))
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
        body: Option<&(&str, String)>,
        extra: &[(&'static str, String)],
    ) -> Result<TableResponse, String> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let content_type = body.map_or("", |(t, _)| *t);
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .timeout(REQUEST_TIMEOUT)
            .header("x-ms-date", &date)
            .header("x-ms-version", TABLE_API_VERSION)
            .header("accept", "application/json;odata=minimalmetadata")
            .header("dataserviceversion", "3.0;NetFx")
            .header("maxdataserviceversion", "3.0;NetFx");
        for (k, v) in extra {
            req = req.header(*k, v);
        }
        if let Some((t, b)) = body {
            req = req.header("content-type", *t).body(b.clone());
        }
        let authorization = self
            .auth
            .authorization(|account| string_to_sign(account, method, content_type, &date, url))
            .await?;
        send_authorized(req, authorization).await
    }

    fn failure(&self, what: &str, res: &TableResponse) -> LedgerError {
        LedgerError::Unavailable(format!(
            "table {} {what}: {} {}",
            self.table,
            res.status,
            table_error_text(&res.body)
        ))
    }

    /// Creates the table when missing (409 `TableAlreadyExists` is fine).
    pub async fn ensure_table(&self) -> Result<(), LedgerError> {
        let res = self
            .send(
                Method::POST,
                self.url("Tables", &[]),
                Some(json_body(&json!({ "TableName": self.table }))),
                &[("prefer", "return-no-content".into())],
            )
            .await?;
        match res.status.as_u16() {
            200..=299 | 409 => Ok(()),
            _ => Err(self.failure("create", &res)),
        }
    }

    /// An entity and its ETag, or `None`.
    pub async fn get(&self, pk: &str, rk: &str) -> Result<Option<Entity>, LedgerError> {
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

    /// Inserts: `Some(etag)` of the new entity, `None` if it already exists.
    pub async fn insert(&self, entity: &Value) -> Result<Option<String>, LedgerError> {
        let res = self
            .send(
                Method::POST,
                self.url(&self.table, &[]),
                Some(json_body(entity)),
                &[("prefer", "return-no-content".into())],
            )
            .await?;
        match res.status.as_u16() {
            200..=299 => Ok(Some(res.etag().unwrap_or_default())),
            409 => Ok(None),
            _ => Err(self.failure("insert", &res)),
        }
    }

    /// Inserts or replaces, unconditionally (Insert Or Replace Entity: PUT without
    /// `If-Match`). For entities whose content is decided elsewhere (index hints).
    pub async fn upsert(&self, pk: &str, rk: &str, entity: &Value) -> Result<(), LedgerError> {
        let res = self
            .send(
                Method::PUT,
                self.entity_url(pk, rk),
                Some(json_body(entity)),
                &[],
            )
            .await?;
        match res.status.as_u16() {
            200..=299 => Ok(()),
            _ => Err(self.failure("insert or replace", &res)),
        }
    }

    /// Replaces if the ETag still matches: `Some(etag)` of the new version, `None` if
    /// someone else wrote (412) or deleted (404) it first.
    pub async fn replace(
        &self,
        pk: &str,
        rk: &str,
        etag: &str,
        entity: &Value,
    ) -> Result<Option<String>, LedgerError> {
        let res = self
            .send(
                Method::PUT,
                self.entity_url(pk, rk),
                Some(json_body(entity)),
                &[("if-match", etag.to_string())],
            )
            .await?;
        match res.status.as_u16() {
            200..=299 => Ok(Some(res.etag().unwrap_or_default())),
            404 | 412 => Ok(None),
            _ => Err(self.failure("replace", &res)),
        }
    }

    /// Deletes if the ETag still matches (`*`: any); `Ok(false)` on 404/412.
    pub async fn delete(&self, pk: &str, rk: &str, etag: &str) -> Result<bool, LedgerError> {
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

    /// One page (at most `top` entities, and never more than the service's 1000) of the
    /// entities matching `filter`, from `from` (a previous page's `next`).
    pub async fn query_page(
        &self,
        filter: &str,
        select: Option<&str>,
        top: Option<usize>,
        from: Option<&(String, Option<String>)>,
    ) -> Result<Page, LedgerError> {
        let top = top.map(|t| t.clamp(1, 1000).to_string());
        let mut q: Vec<(&str, &str)> = vec![("$filter", filter)];
        if let Some(s) = select {
            q.push(("$select", s));
        }
        if let Some(t) = &top {
            q.push(("$top", t));
        }
        if let Some((pk, rk)) = from {
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
        let page: Value =
            serde_json::from_slice(&res.body).map_err(|_| self.failure("query: not JSON", &res))?;
        let items = page
            .get("value")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|v| v.as_object().cloned())
                    .collect()
            })
            .unwrap_or_default();
        let header = |k: &str| {
            res.headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let next = header("x-ms-continuation-nextpartitionkey")
            .map(|pk| (pk, header("x-ms-continuation-nextrowkey")));
        Ok(Page { items, next })
    }

    /// All entities matching `filter`, following continuations.
    pub async fn query(
        &self,
        filter: &str,
        select: Option<&str>,
    ) -> Result<Vec<Map<String, Value>>, LedgerError> {
        let mut out = Vec::new();
        let mut from = None;
        loop {
            let page = self.query_page(filter, select, None, from.as_ref()).await?;
            out.extend(page.items);
            match page.next {
                Some(n) => from = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// An entity group transaction on partition `pk`: every operation or none
    /// (learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions).
    /// A failed condition is [`BatchOutcome::Conflict`], not an error.
    pub async fn batch(&self, pk: &str, ops: &[BatchOp]) -> Result<BatchOutcome, LedgerError> {
        if ops.is_empty() {
            return Ok(BatchOutcome::Committed);
        }
        if ops.len() > BATCH_LIMIT {
            return Err(LedgerError::Unavailable(format!(
                "a batch holds at most {BATCH_LIMIT} operations, not {}",
                ops.len()
            )));
        }
        let n = self.batches.fetch_add(1, Ordering::Relaxed);
        let nonce = format!("{:x}{n:x}", std::process::id());
        let batch = format!("batch_{nonce}");
        let changeset = format!("changeset_{nonce}");
        let mut body = String::new();
        body.push_str(&format!(
            "--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
        ));
        for op in ops {
            body.push_str(&format!(
                "--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            ));
            let (line, if_match, entity) = match op {
                BatchOp::Insert(e) => (
                    format!("POST {} HTTP/1.1", self.url(&self.table, &[])),
                    None,
                    Some(e),
                ),
                BatchOp::Replace { row, etag, entity } => (
                    format!("PUT {} HTTP/1.1", self.entity_url(pk, row)),
                    Some(etag),
                    Some(entity),
                ),
                BatchOp::Delete { row, etag } => (
                    format!("DELETE {} HTTP/1.1", self.entity_url(pk, row)),
                    Some(etag),
                    None,
                ),
            };
            body.push_str(&line);
            body.push_str("\r\nAccept: application/json;odata=minimalmetadata\r\nDataServiceVersion: 3.0;\r\n");
            if let Some(etag) = if_match {
                body.push_str(&format!("If-Match: {etag}\r\n"));
            }
            match entity {
                Some(e) => body.push_str(&format!(
                    "Content-Type: application/json\r\nPrefer: return-no-content\r\n\r\n{e}\r\n"
                )),
                None => body.push_str("\r\n"),
            }
        }
        body.push_str(&format!("--{changeset}--\r\n--{batch}--\r\n"));
        let content_type = format!("multipart/mixed; boundary={batch}");
        let res = self
            .send(
                Method::POST,
                self.url("$batch", &[]),
                Some((content_type.as_str(), body)),
                &[],
            )
            .await?;
        if res.status != StatusCode::ACCEPTED {
            return Err(self.failure("batch", &res));
        }
        // The answer is multipart too: one `HTTP/1.1 <status>` per operation, or just the
        // failed operation's when the change set was refused.
        match batch_failure(&res.body) {
            None => Ok(BatchOutcome::Committed),
            Some(status @ (404 | 409 | 412)) => Ok(BatchOutcome::Conflict(status)),
            Some(status) => Err(LedgerError::Unavailable(format!(
                "table {} batch: an operation answered {status}: {}",
                self.table,
                crate::http::snippet(&res.body)
            ))),
        }
    }
}

fn json_body(v: &Value) -> (&'static str, String) {
    ("application/json", v.to_string())
}

/// The first non-2xx status among a batch answer's parts, if any.
fn batch_failure(body: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(body);
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, m)| text.get(i + m.len()..i + m.len() + 3))
        .filter_map(|code| code.parse::<u16>().ok())
        .find(|code| !(200..300).contains(code))
}

/// Table Storage errors are `{"odata.error":{"code","message":{"value"}}}`; ARM-style ones
/// and anything else go through [`error_text`].
fn table_error_text(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(e) = v.get("odata.error") {
            let code = e.get("code").and_then(Value::as_str).unwrap_or("");
            let message = e
                .pointer("/message/value")
                .and_then(Value::as_str)
                .unwrap_or("");
            let message: String = message
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            return format!("{code}: {message}");
        }
    }
    error_text(body)
}

/// The Table service's SharedKey string to sign:
/// `VERB\nContent-MD5\nContent-Type\nDate\nCanonicalizedResource`, where the resource is
/// `/account/path` plus `?comp=` when present (no other query parameters).
fn string_to_sign(
    account: &str,
    method: &Method,
    content_type: &str,
    date: &str,
    url: &Url,
) -> String {
    let mut resource = format!("/{account}{}", url.path());
    if let Some((_, comp)) = url.query_pairs().find(|(k, _)| k == "comp") {
        resource.push_str(&format!("?comp={comp}"));
    }
    format!("{method}\n\n{content_type}\n{date}\n{resource}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        assert!(valid_table_name("scalehookledger"));
        assert!(!valid_table_name("1abc"));
        assert!(!valid_table_name("ab"));
        assert!(!valid_table_name("a-b-c"));
    }

    #[test]
    fn shared_key_signs_the_documented_string() {
        // The Table service's SharedKey layout: verb, (no MD5), type, date, resource.
        let url = Url::parse("http://127.0.0.1:1/devstoreaccount1/t1(PartitionKey='a',RowKey='b')")
            .expect("url");
        assert_eq!(
            string_to_sign(
                "devstoreaccount1",
                &Method::GET,
                "",
                "Sun, 22 Nov 2026 00:00:00 GMT",
                &url,
            ),
            "GET\n\n\nSun, 22 Nov 2026 00:00:00 GMT\n/devstoreaccount1/devstoreaccount1/t1(PartitionKey='a',RowKey='b')"
        );
        let batch =
            Url::parse("http://127.0.0.1:1/devstoreaccount1/$batch?comp=x&other=y").expect("url");
        assert!(string_to_sign("a", &Method::POST, "t", "d", &batch)
            .ends_with("/a/devstoreaccount1/$batch?comp=x"));
    }
}
