//! The DynamoDB ledger.
//!
//! Table (fixed with `infra/aws`): partition key `pk` (String), sort key `sk` (String), TTL
//! attribute `expires_at` (Number, epoch seconds), on-demand billing, and one sparse global
//! secondary index `due` (partition key `due` (String), sort key `updated_at` (Number),
//! all attributes projected). Items:
//!
//! | pk | sk | attributes |
//! |---|---|---|
//! | `job#<job id>` | `job` | `pool`, `state`, `runner`, `repository`, `updated_at`; `due` while unfinished; `expires_at` once completed |
//! | `pool#<pool>` | `count#<shard>` | `queued`, `running`: the counts of the pool's jobs whose id hashes to the shard; `changes`: how many transitions changed them (the shard's share of the change stamp) |
//! | `pool#<pool>` | `busy#<job id>` | `runner`: one item per in-progress job that names its runner |
//! | `lease#<pool>` | `lease` | `holder`, `expires_at`: the pool's convergence lease |
//! | `cursor#<name>` | `cursor` | `value`: a named cursor |
//! | `meta#expiry` | `cursor` | `q`, `r`: the first day whose due records may not be expired yet |
//!
//! Every item is a few hundred bytes at most, whatever the number of jobs: nothing grows
//! in place. A transition is one `TransactWriteItems` of at most four items: the job `Put`,
//! conditioned on the state it was read in (`attribute_not_exists(pk)` for a new job); an
//! `ADD` on the job's counter shard by the core's [`count_delta`]; the `Put` of its busy item
//! (to `in_progress`) or the `Delete` of it (from `in_progress`). A job always lands on the
//! same shard, so each shard is itself an exact, non-negative count, and concurrent
//! deliveries of different jobs touch different items (16 shards per pool), so they seldom
//! conflict. [`Ledger::pool`] is one strongly consistent `Query` of the 16 counter shards
//! (`begins_with(sk, "count#")`), summed: the account and its change stamp (`changes`, added
//! by 1 in the same `ADD` as the counts), the same size whatever the number of jobs.
//! [`Ledger::busy_runners`] is a separate strongly consistent `Query` of the `busy#` items,
//! page by page (1 MB, about 16,000 runners, per page), read only by passes that may take
//! instances out (reconcile, completions).
//!
//! Migration: shards written before the change stamp lack `changes`, which reads as 0; the
//! first transition on a shard creates it (`ADD`). While old and new code both write (a
//! deployment's few seconds), the old code's transitions do not move the stamp: a pass could
//! then take an account with equal counts for unchanged; the next delivery that changes the
//! account, or reconcile (every minute, deciding from the complete busy list), converges it.
//!
//! The `due` index holds only unfinished job items, under `due#q#<yyyymmdd>` (waiting or
//! queued) and `due#r#<yyyymmdd>` (in progress), the day of `updated_at`: expiry and
//! [`Ledger::unfinished_before`] query the days that can hold due records, with
//! `updated_at <= cut`, and read nothing else. Index reads are eventually consistent: a record
//! read there is only ever acted on through a conditional write on the table itself, so a
//! stale entry fails its condition and is skipped, and an entry not there yet is seconds old,
//! not due. Completed job items leave the index and get `expires_at` (retention): DynamoDB's
//! TTL deletes them. Unfinished items have no `expires_at`, so TTL never deletes a record
//! that still counts.

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use scalehook_core::config::LedgerTtl;
use scalehook_core::ledger::{count_delta, expiry, recorded_runner, Expired, Expiry, JobRecord};
use scalehook_core::{JobState, Ledger, LedgerError, PoolLedger, Recorded, Transition};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How many times a transition is re-read and retried after losing a race or being
/// cancelled for a conflict or throttling.
pub const MAX_TRANSITION_ATTEMPTS: u32 = 8;
/// The most time the retries of one transition may sleep in all: well inside the core's
/// per-delivery budget (`cloud_timeout_ms`, 7 s by default).
pub const RETRY_BUDGET: Duration = Duration::from_millis(2500);
/// Counter shards per pool. A job's counts always live on the shard its id hashes to.
pub const COUNTER_SHARDS: u64 = 16;
/// The name of the sparse index over unfinished job items.
pub const DUE_INDEX: &str = "due";
/// The default time an expiry pass may take before it stops and leaves the rest to the
/// next pass (the Lambda sets half of `cloud_timeout_ms`).
pub const DEFAULT_EXPIRY_BUDGET: Duration = Duration::from_secs(3);
/// Where the first expiry pass of a table starts: this many days before the cut.
const FIRST_PASS_LOOKBACK_DAYS: u64 = 7;
const DAY: u64 = 86_400;

type Item = HashMap<String, AttributeValue>;

/// The DynamoDB ledger over one table.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
    ttl: LedgerTtl,
    expiry_budget: Duration,
    busy_page: Option<i32>,
}

/// A job item as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredJob {
    job_id: u64,
    pool: String,
    state: JobState,
    runner: Option<String>,
    updated_at: u64,
    repository: Option<String>,
}

impl StoredJob {
    fn record(self) -> JobRecord {
        JobRecord {
            job_id: self.job_id,
            pool: self.pool,
            state: self.state,
            runner: self.runner,
            updated_at: self.updated_at,
            repository: self.repository,
        }
    }
}

/// Why a transaction did not commit.
#[derive(Debug)]
enum WriteError {
    /// The job's condition failed: another writer moved it first. Re-read and decide again.
    Moved,
    /// Cancelled for a conflicting transaction or throttling (or one in progress on the
    /// same items): nothing was written; back off, re-read and try again.
    Busy(String),
    Failed(LedgerError),
}

/// A cancelled transaction, by its reasons (one per item, in order).
fn classify_cancellation<'a>(codes: impl Iterator<Item = Option<&'a str>>) -> WriteError {
    let codes: Vec<&str> = codes.map(|c| c.unwrap_or("None")).collect();
    if codes.contains(&"ConditionalCheckFailed") {
        return WriteError::Moved;
    }
    let retryable = |c: &str| {
        matches!(
            c,
            "None" | "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"
        )
    };
    let text = codes.join(",");
    if codes.iter().all(|c| retryable(c)) {
        WriteError::Busy(text)
    } else {
        WriteError::Failed(LedgerError::Unavailable(format!(
            "TransactWriteItems cancelled: {text}"
        )))
    }
}

/// A pseudo-random number from the clock, the job and a process-wide counter (no shared
/// state between processes, none needed: it only spreads retries out).
fn jitter(job_id: u64) -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut z = job_id
        ^ u64::from(nanos)
        ^ CALLS
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The pause before retrying a cancelled transaction: "equal jitter" exponential back-off,
/// half of 10 ms << attempt (capped at 400 ms) plus a random part of the other half.
fn busy_backoff(job_id: u64, attempt: u32) -> Duration {
    let cap = (10u64 << attempt.min(6)).min(400);
    Duration::from_millis(cap / 2 + jitter(job_id) % (cap / 2 + 1))
}

/// The counter shard of a job (`count#<shard>`, two digits): a fixed mix of its id, so a
/// job's increments and decrements meet on one item. Public for tests that seed a table.
pub fn counter_shard(job_id: u64) -> u64 {
    let mut z = job_id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % COUNTER_SHARDS
}

fn job_key(job_id: u64) -> String {
    format!("job#{job_id}")
}

fn pool_key(pool: &str) -> String {
    format!("pool#{pool}")
}

const JOB_SK: &str = "job";
const COUNT_PREFIX: &str = "count#";
const BUSY_PREFIX: &str = "busy#";
/// Busy items per page of [`Ledger::busy_runners`] by default: as many as fit in DynamoDB's
/// 1 MB page.
pub const DEFAULT_BUSY_PAGE: Option<i32> = None;
const EXPIRY_CURSOR_PK: &str = "meta#expiry";

/// Which half of the due index a state lives in: each has its own time-to-live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DueKind {
    /// Waiting or queued.
    Queued,
    InProgress,
}

impl DueKind {
    fn of(state: JobState) -> Option<DueKind> {
        match state {
            JobState::Waiting | JobState::Queued => Some(DueKind::Queued),
            JobState::InProgress => Some(DueKind::InProgress),
            JobState::Completed => None,
        }
    }

    fn letter(self) -> &'static str {
        match self {
            DueKind::Queued => "q",
            DueKind::InProgress => "r",
        }
    }

    fn ttl(self, ttl: &LedgerTtl) -> Duration {
        match self {
            DueKind::Queued => ttl.queued,
            DueKind::InProgress => ttl.in_progress,
        }
    }
}

/// `(year, month, day)` of a count of days since 1970-01-01 (proleptic Gregorian).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(m <= 2), m, d)
}

/// The `due` attribute of a job item in `state` last updated at `at` (Unix seconds):
/// `due#q#<yyyymmdd>` or `due#r#<yyyymmdd>`, none once completed. Public for tests that seed
/// a table.
pub fn due_partition(state: JobState, at: u64) -> Option<String> {
    DueKind::of(state).map(|kind| due_key(kind, at / DAY))
}

/// The due-index partition of a kind and day (days since the epoch): `due#q#20261129`.
fn due_key(kind: DueKind, day: u64) -> String {
    let (y, m, d) = civil(day);
    format!("due#{}#{y:04}{m:02}{d:02}", kind.letter())
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn unavailable<E>(call: &str, err: SdkError<E>) -> LedgerError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(ref service) => LedgerError::Unavailable(format!(
            "{call}: {}: {}",
            service.err().code().unwrap_or("Unknown"),
            service.err().message().unwrap_or("no message")
        )),
        other => LedgerError::Unavailable(format!("{call}: {}", DisplayErrorContext(&other))),
    }
}

fn conditional_failed<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    err.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

fn corrupt(key: &str, what: &str) -> LedgerError {
    LedgerError::Unavailable(format!("ledger item {key} is malformed: {what}"))
}

fn number(item: &Item, key: &str, attr: &str) -> Result<u64, LedgerError> {
    match item.get(attr) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| corrupt(key, attr)),
        None => Ok(0),
        Some(_) => Err(corrupt(key, attr)),
    }
}

fn text<'a>(item: &'a Item, attr: &str) -> Option<&'a str> {
    match item.get(attr) {
        Some(AttributeValue::S(v)) => Some(v),
        _ => None,
    }
}

fn parse_job(item: &Item) -> Result<StoredJob, LedgerError> {
    let key = text(item, "pk").unwrap_or("?");
    let job_id = key
        .strip_prefix("job#")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| corrupt(key, "pk"))?;
    Ok(StoredJob {
        job_id,
        pool: text(item, "pool")
            .ok_or_else(|| corrupt(key, "pool"))?
            .to_string(),
        state: text(item, "state")
            .and_then(JobState::parse)
            .ok_or_else(|| corrupt(key, "state"))?,
        runner: text(item, "runner").map(str::to_string),
        updated_at: number(item, key, "updated_at")?,
        repository: text(item, "repository").map(str::to_string),
    })
}

fn counter(item: &Item, key: &str, attr: &str) -> Result<u32, LedgerError> {
    match item.get(attr) {
        None => Ok(0),
        Some(AttributeValue::N(v)) => {
            // Never negative by construction; a negative stored value is damage, not zero.
            v.parse::<u32>().map_err(|_| corrupt(key, attr))
        }
        Some(_) => Err(corrupt(key, attr)),
    }
}

/// Sums counter shards into `into` (a missing `changes`, written before the change stamp,
/// reads as 0).
fn add_shards(pool_pk: &str, items: &[Item], into: &mut PoolLedger) -> Result<(), LedgerError> {
    for item in items {
        let sk = text(item, "sk").unwrap_or("");
        if !sk.starts_with(COUNT_PREFIX) {
            continue;
        }
        let key = format!("{pool_pk}/{sk}");
        into.queued = into.queued.saturating_add(counter(item, &key, "queued")?);
        into.running = into.running.saturating_add(counter(item, &key, "running")?);
        into.changes = into.changes.saturating_add(number(item, &key, "changes")?);
    }
    Ok(())
}

/// Adds the runners of one page of busy items to `into`.
fn add_busy(pool_pk: &str, items: &[Item], into: &mut Vec<String>) -> Result<(), LedgerError> {
    for item in items {
        let sk = text(item, "sk").unwrap_or("");
        if !sk.starts_with(BUSY_PREFIX) {
            continue;
        }
        let runner = text(item, "runner").ok_or_else(|| corrupt(pool_pk, sk))?;
        into.push(runner.to_string());
    }
    Ok(())
}

/// One write of a transition: the job read in state `from` (or absent) moves to `to`.
struct Write<'a> {
    job_id: u64,
    pool: &'a str,
    from: Option<JobState>,
    to: JobState,
    runner: Option<&'a str>,
    repository: Option<&'a str>,
    at: u64,
}

impl DynamoLedger {
    /// `ttl` must be the configuration's: completed records keep `expires_at = updated_at +
    /// retention`, after which DynamoDB's TTL deletes them.
    pub fn new(client: Client, table: impl Into<String>, ttl: LedgerTtl) -> Self {
        Self {
            client,
            table: table.into(),
            ttl,
            expiry_budget: DEFAULT_EXPIRY_BUDGET,
            busy_page: DEFAULT_BUSY_PAGE,
        }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: impl Into<String>, ttl: LedgerTtl) -> Self {
        Self::new(Client::new(sdk), table, ttl)
    }

    /// At most this many busy items per page of [`Ledger::busy_runners`] (default: a 1 MB
    /// page); tests use it to read the list across several pages without 16,000 jobs.
    pub fn with_busy_page(mut self, items: Option<i32>) -> Self {
        self.busy_page = items;
        self
    }

    /// Queries one partition's items whose sort key starts with `prefix`, every page,
    /// strongly consistent, handing each page to `f`.
    async fn query_prefix(
        &self,
        pk: &str,
        prefix: &str,
        attributes: &[&str],
        limit: Option<i32>,
        mut f: impl FnMut(&[Item]) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        // Every projected name through a placeholder: none can clash with a reserved word.
        let projection = (0..attributes.len())
            .map(|i| format!("#a{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let names: HashMap<String, String> = attributes
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("#a{i}"), a.to_string()))
            .collect();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":prefix", s(prefix))
                .projection_expression(&projection)
                .set_expression_attribute_names(Some(names.clone()))
                .consistent_read(true)
                .set_limit(limit)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("Query", e))?;
            f(page.items())?;
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(()),
            }
        }
    }

    /// How long one expiry pass may work; the rest waits for the next pass.
    pub fn with_expiry_budget(mut self, budget: Duration) -> Self {
        self.expiry_budget = budget;
        self
    }

    async fn get_job(&self, job_id: u64) -> Result<Option<StoredJob>, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(job_key(job_id)))
            .key("sk", s(JOB_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        out.item().map(parse_job).transpose()
    }

    /// Writes one transition with its counter shard and busy item, in one transaction.
    async fn write_transition(&self, w: &Write<'_>) -> Result<(), WriteError> {
        let build = |e: aws_sdk_dynamodb::error::BuildError| {
            WriteError::Failed(LedgerError::Unavailable(format!(
                "building TransactWriteItems: {e}"
            )))
        };
        let mut job = HashMap::from([
            ("pk".to_string(), s(job_key(w.job_id))),
            ("sk".to_string(), s(JOB_SK)),
            ("pool".to_string(), s(w.pool)),
            ("state".to_string(), s(w.to.as_str())),
            ("updated_at".to_string(), n(w.at)),
        ]);
        if let Some(r) = w.runner {
            job.insert("runner".into(), s(r));
        }
        if let Some(r) = w.repository {
            job.insert("repository".into(), s(r));
        }
        match due_partition(w.to, w.at) {
            Some(due) => {
                job.insert("due".into(), s(due));
            }
            None => {
                let until = w.at.saturating_add(self.ttl.retention.as_secs());
                job.insert("expires_at".into(), n(until));
            }
        }
        let mut put = Put::builder().table_name(&self.table).set_item(Some(job));
        put = match w.from {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(state) => put
                .condition_expression("#state = :from")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":from", s(state.as_str())),
        };
        let mut items = vec![TransactWriteItem::builder()
            .put(put.build().map_err(build)?)
            .build()];

        let pool_pk = pool_key(w.pool);
        let (dq, dr) = count_delta(w.from, w.to);
        if (dq, dr) != (0, 0) {
            let update = Update::builder()
                .table_name(&self.table)
                .key("pk", s(&pool_pk))
                .key(
                    "sk",
                    s(format!("{COUNT_PREFIX}{:02}", counter_shard(w.job_id))),
                )
                // The change stamp moves with the counts: every transition that changes the
                // account (its counts, and with them its busy items) adds one.
                .update_expression("ADD #queued :dq, #running :dr, #changes :one")
                .expression_attribute_names("#queued", "queued")
                .expression_attribute_names("#running", "running")
                .expression_attribute_names("#changes", "changes")
                .expression_attribute_values(":dq", n(dq))
                .expression_attribute_values(":dr", n(dr))
                .expression_attribute_values(":one", n(1))
                .build()
                .map_err(build)?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        let busy_sk = format!("{BUSY_PREFIX}{}", w.job_id);
        if w.to == JobState::InProgress {
            if let Some(r) = w.runner {
                let busy = Put::builder()
                    .table_name(&self.table)
                    .item("pk", s(&pool_pk))
                    .item("sk", s(&busy_sk))
                    .item("runner", s(r))
                    .build()
                    .map_err(build)?;
                items.push(TransactWriteItem::builder().put(busy).build());
            }
        } else if w.from == Some(JobState::InProgress) {
            let gone = Delete::builder()
                .table_name(&self.table)
                .key("pk", s(&pool_pk))
                .key("sk", s(&busy_sk))
                .build()
                .map_err(build)?;
            items.push(TransactWriteItem::builder().delete(gone).build());
        }

        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                    classify_cancellation(c.cancellation_reasons().iter().map(|r| r.code()))
                }
                Some(TransactWriteItemsError::TransactionInProgressException(_)) => {
                    WriteError::Busy("TransactionInProgress".into())
                }
                _ => WriteError::Failed(unavailable("TransactWriteItems", e)),
            }),
        }
    }

    /// One page of the due index: `kind`'s records of `day` last updated at or before
    /// `cut`, oldest first.
    async fn due_page(
        &self,
        kind: DueKind,
        day: u64,
        cut: u64,
        start: Option<Item>,
    ) -> Result<(Vec<StoredJob>, Option<Item>), LedgerError> {
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(DUE_INDEX)
            .key_condition_expression("#due = :due AND #updated <= :cut")
            .expression_attribute_names("#due", "due")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_values(":due", s(due_key(kind, day)))
            .expression_attribute_values(":cut", n(cut))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| unavailable("Query", e))?;
        let jobs = page
            .items()
            .iter()
            .map(parse_job)
            .collect::<Result<Vec<_>, _>>()?;
        let next = page.last_evaluated_key().filter(|k| !k.is_empty()).cloned();
        Ok((jobs, next))
    }

    /// The expiry pass's cursor: per kind, the first day that may still hold records.
    async fn expiry_cursor(&self) -> Result<(Option<u64>, Option<u64>), LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(EXPIRY_CURSOR_PK))
            .key("sk", s("cursor"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let Some(item) = out.item() else {
            return Ok((None, None));
        };
        let day = |attr: &str| match item.get(attr) {
            Some(AttributeValue::N(v)) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| corrupt(EXPIRY_CURSOR_PK, "cursor")),
            _ => Ok(None),
        };
        Ok((day("q")?, day("r")?))
    }

    async fn set_expiry_cursor(&self, q: u64, r: u64) -> Result<(), LedgerError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(EXPIRY_CURSOR_PK))
            .item("sk", s("cursor"))
            .item("q", n(q))
            .item("r", n(r))
            .send()
            .await
            .map_err(|e| unavailable("PutItem", e))?;
        Ok(())
    }

    /// Expires the due records of one kind from day `first` on, until the budget runs out.
    /// Returns the new first day that may hold records (every day before it is empty).
    async fn expire_kind(
        &self,
        kind: DueKind,
        first: u64,
        now: u64,
        ttl: &LedgerTtl,
        deadline: Instant,
        done: &mut Expired,
    ) -> Result<u64, LedgerError> {
        let cut = now.saturating_sub(kind.ttl(ttl).as_secs());
        let last = cut / DAY;
        let mut cursor = first;
        let mut day = first;
        while day <= last {
            let mut clean = true;
            let mut start = None;
            loop {
                if Instant::now() >= deadline {
                    return Ok(cursor);
                }
                let (jobs, next) = self.due_page(kind, day, cut, start).await?;
                for job in jobs {
                    if Instant::now() >= deadline {
                        return Ok(cursor);
                    }
                    if expiry(job.state, job.updated_at, now, ttl) != Expiry::Expire {
                        // A stale index entry of a record that moved on (it left this
                        // day's partition on the table already), or a changed TTL.
                        clean = false;
                        continue;
                    }
                    let write = Write {
                        job_id: job.job_id,
                        pool: &job.pool,
                        from: Some(job.state),
                        to: JobState::Completed,
                        runner: job.runner.as_deref(),
                        repository: job.repository.as_deref(),
                        at: now,
                    };
                    match self.write_transition(&write).await {
                        Ok(()) => done.expired += 1,
                        // A delivery moved it meanwhile: it is no longer in this partition.
                        Err(WriteError::Moved) => {}
                        // Conflict or throttling: the next pass tries again.
                        Err(WriteError::Busy(_)) => clean = false,
                        Err(WriteError::Failed(e)) => return Err(e),
                    }
                }
                match next {
                    Some(k) => start = Some(k),
                    None => break,
                }
            }
            // A whole day before the cut, read to the end with every record expired, stays
            // empty: new records are written under the day they are written.
            if clean && day < last && cursor == day {
                cursor = day + 1;
            }
            day += 1;
        }
        Ok(cursor)
    }
}

#[async_trait]
impl Ledger for DynamoLedger {
    async fn record(&self, t: &Transition) -> Result<Recorded, LedgerError> {
        let started = Instant::now();
        let mut slept = Duration::ZERO;
        for attempt in 0..MAX_TRANSITION_ATTEMPTS {
            // A queued (or waiting) job is nearly always new: write first, as its first
            // sighting (the write is conditional on no record), and read only if that
            // fails. One round trip fewer on the path of every new job.
            let first_sighting =
                attempt == 0 && matches!(t.to, JobState::Queued | JobState::Waiting);
            let existing = if first_sighting {
                None
            } else {
                self.get_job(t.job_id).await?
            };
            let current = existing.as_ref().map(|j| j.state);
            let Some(to) = JobState::advance(current, t.to) else {
                return Ok(Recorded::Stale {
                    current: current.unwrap_or(t.to),
                });
            };
            // A record keeps the pool of its first sighting and the runner it started on.
            let pool = existing
                .as_ref()
                .map_or(t.pool.as_str(), |j| j.pool.as_str());
            let runner = recorded_runner(
                existing.as_ref().and_then(|j| j.runner.as_deref()),
                to,
                t.runner.as_deref(),
            );
            let repository = existing
                .as_ref()
                .and_then(|j| j.repository.as_deref())
                .or(t.repository.as_deref());
            let write = Write {
                job_id: t.job_id,
                pool,
                from: current,
                to,
                runner: runner.as_deref(),
                repository,
                at: t.at,
            };
            match self.write_transition(&write).await {
                Ok(()) => {
                    return Ok(Recorded::Applied {
                        from: current,
                        since: existing.as_ref().map(|j| j.updated_at),
                    })
                }
                // Another delivery of this job committed first: the re-read decides.
                Err(WriteError::Moved) => {
                    tracing::debug!(
                        job_id = t.job_id,
                        attempt,
                        "job moved meanwhile; re-reading"
                    );
                }
                Err(WriteError::Busy(reasons)) => {
                    let pause = busy_backoff(t.job_id, attempt);
                    if slept + pause > RETRY_BUDGET {
                        return Err(LedgerError::Contention(format!(
                            "job {}: transaction cancelled ({reasons}) {} times in {} ms",
                            t.job_id,
                            attempt + 1,
                            started.elapsed().as_millis()
                        )));
                    }
                    tracing::debug!(job_id = t.job_id, attempt, %reasons, "transaction cancelled; retrying");
                    tokio::time::sleep(pause).await;
                    slept += pause;
                }
                Err(WriteError::Failed(e)) => return Err(e),
            }
        }
        Err(LedgerError::Contention(format!(
            "job {} lost {MAX_TRANSITION_ATTEMPTS} conditional writes in a row",
            t.job_id
        )))
    }

    async fn pool(&self, pool: &str) -> Result<PoolLedger, LedgerError> {
        let pk = pool_key(pool);
        let mut account = PoolLedger::default();
        // At most 16 small items: always one page.
        self.query_prefix(
            &pk,
            COUNT_PREFIX,
            &["sk", "queued", "running", "changes"],
            None,
            |items| add_shards(&pk, items, &mut account),
        )
        .await?;
        Ok(account)
    }

    async fn busy_runners(&self, pool: &str) -> Result<Vec<String>, LedgerError> {
        let pk = pool_key(pool);
        let mut busy = Vec::new();
        self.query_prefix(
            &pk,
            BUSY_PREFIX,
            &["sk", "runner"],
            self.busy_page,
            |items| add_busy(&pk, items, &mut busy),
        )
        .await?;
        Ok(busy)
    }

    async fn expire(&self, now: u64, ttl: &LedgerTtl) -> Result<Expired, LedgerError> {
        let deadline = Instant::now() + self.expiry_budget;
        let (q, r) = self.expiry_cursor().await?;
        let first = |kind: DueKind, cursor: Option<u64>| {
            cursor.unwrap_or_else(|| {
                (now.saturating_sub(kind.ttl(ttl).as_secs()) / DAY)
                    .saturating_sub(FIRST_PASS_LOOKBACK_DAYS)
            })
        };
        let (q0, r0) = (first(DueKind::Queued, q), first(DueKind::InProgress, r));
        let mut done = Expired::default();
        let mut result = Ok(());
        let q1 = match self
            .expire_kind(DueKind::Queued, q0, now, ttl, deadline, &mut done)
            .await
        {
            Ok(day) => day,
            Err(e) => {
                result = Err(e);
                q0
            }
        };
        let r1 = if result.is_ok() {
            match self
                .expire_kind(DueKind::InProgress, r0, now, ttl, deadline, &mut done)
                .await
            {
                Ok(day) => day,
                Err(e) => {
                    result = Err(e);
                    r0
                }
            }
        } else {
            r0
        };
        if (Some(q1), Some(r1)) != (q, r) {
            self.set_expiry_cursor(q1, r1).await?;
        }
        result.map(|()| done)
    }

    async fn record_of(&self, job_id: u64) -> Result<Option<JobRecord>, LedgerError> {
        Ok(self.get_job(job_id).await?.map(StoredJob::record))
    }

    async fn unfinished_before(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<JobRecord>, LedgerError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (q, r) = self.expiry_cursor().await?;
        let last = before / DAY;
        let lookback = last.saturating_sub(FIRST_PASS_LOOKBACK_DAYS);
        let from_q = q.unwrap_or(lookback).min(last + 1);
        let from_r = r.unwrap_or(lookback).min(last + 1);
        let mut found: Vec<StoredJob> = Vec::new();
        for day in from_q.min(from_r)..=last {
            for kind in [DueKind::Queued, DueKind::InProgress] {
                let from = if kind == DueKind::Queued {
                    from_q
                } else {
                    from_r
                };
                if day < from {
                    continue;
                }
                let mut start = None;
                loop {
                    let (jobs, next) = self.due_page(kind, day, before, start).await?;
                    // Index entries may lag the table: keep only what still qualifies.
                    found.extend(jobs.into_iter().filter(|j| j.updated_at <= before));
                    match next {
                        Some(k) if found.len() < limit * 2 => start = Some(k),
                        _ => break,
                    }
                }
            }
            // Later days hold only later records: this day's oldest are the answer.
            if found.len() >= limit {
                break;
            }
        }
        found.sort_by_key(|j| (j.updated_at, j.job_id));
        found.dedup_by_key(|j| j.job_id);
        found.truncate(limit);
        Ok(found.into_iter().map(StoredJob::record).collect())
    }

    async fn acquire_lease(
        &self,
        pool: &str,
        holder: &str,
        now: u64,
        until: u64,
    ) -> Result<bool, LedgerError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("lease#{pool}")))
            .key("sk", s("lease"))
            .update_expression("SET #holder = :me, #until = :until")
            // Free, expired (as the in-memory ledger: held while `until > now`), or ours.
            .condition_expression("attribute_not_exists(pk) OR #until <= :now OR #holder = :me")
            .expression_attribute_names("#holder", "holder")
            .expression_attribute_names("#until", "expires_at")
            .expression_attribute_values(":me", s(holder))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if conditional_failed(&e) => Ok(false),
            Err(e) => Err(unavailable("UpdateItem", e)),
        }
    }

    async fn release_lease(&self, pool: &str, holder: &str) -> Result<(), LedgerError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("lease#{pool}")))
            .key("sk", s("lease"))
            .condition_expression("#holder = :me")
            .expression_attribute_names("#holder", "holder")
            .expression_attribute_values(":me", s(holder))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Ok(()),
            Err(e) => Err(unavailable("DeleteItem", e)),
        }
    }

    async fn cursor(&self, name: &str) -> Result<Option<String>, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("cursor#{name}")))
            .key("sk", s("cursor"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        Ok(out
            .item()
            .and_then(|i| text(i, "value"))
            .map(str::to_string))
    }

    async fn set_cursor(&self, name: &str, value: &str) -> Result<(), LedgerError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("cursor#{name}")))
            .item("sk", s("cursor"))
            .item("value", s(value))
            .send()
            .await
            .map_err(|e| unavailable("PutItem", e))?;
        Ok(())
    }

    async fn delete_cursor(&self, name: &str) -> Result<(), LedgerError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("cursor#{name}")))
            .key("sk", s("cursor"))
            .send()
            .await
            .map_err(|e| unavailable("DeleteItem", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_items_round_trip() {
        let item = HashMap::from([
            ("pk".to_string(), s("job#14541957942")),
            ("sk".to_string(), s("job")),
            ("pool".to_string(), s("linux")),
            ("state".to_string(), s("in_progress")),
            ("runner".to_string(), s("gh-i-0abc")),
            ("repository".to_string(), s("octo-org/app")),
            ("updated_at".to_string(), n(100)),
        ]);
        let job = parse_job(&item).expect("valid item");
        assert_eq!(job.job_id, 14_541_957_942);
        assert_eq!(job.state, JobState::InProgress);
        assert_eq!(job.runner.as_deref(), Some("gh-i-0abc"));
        assert_eq!(job.repository.as_deref(), Some("octo-org/app"));
        let mut bad = item.clone();
        bad.insert("state".into(), s("started"));
        assert!(parse_job(&bad).is_err());
        let mut bad = item;
        bad.insert("pk".into(), s("pool#linux"));
        assert!(parse_job(&bad).is_err());
    }

    #[test]
    fn busy_backoff_is_jittered_and_bounded() {
        let total: Duration = (0..MAX_TRANSITION_ATTEMPTS)
            .map(|a| busy_backoff(14_541_957_942, a))
            .sum();
        assert!(total <= Duration::from_millis(10 + 20 + 40 + 80 + 160 + 320 + 400 + 400));
        for attempt in 0..MAX_TRANSITION_ATTEMPTS {
            let cap = (10u64 << attempt.min(6)).min(400);
            let b = busy_backoff(7, attempt).as_millis() as u64;
            assert!((cap / 2..=cap).contains(&b), "{attempt}: {b}");
        }
        let spread: std::collections::BTreeSet<_> = (0..50).map(|_| busy_backoff(7, 5)).collect();
        assert!(spread.len() > 5, "jittered: {spread:?}");
    }

    #[test]
    fn cancellations_by_reason() {
        let c = |codes: &[Option<&str>]| classify_cancellation(codes.iter().copied());
        assert!(matches!(
            c(&[Some("ConditionalCheckFailed"), Some("None")]),
            WriteError::Moved
        ));
        assert!(matches!(
            c(&[None, Some("TransactionConflict")]),
            WriteError::Busy(_)
        ));
        assert!(matches!(
            c(&[Some("ThrottlingError"), Some("None")]),
            WriteError::Busy(_)
        ));
        assert!(matches!(
            c(&[Some("ProvisionedThroughputExceeded")]),
            WriteError::Busy(_)
        ));
        assert!(matches!(
            c(&[Some("ValidationError"), Some("None")]),
            WriteError::Failed(_)
        ));
    }

    #[test]
    fn shards_are_fixed_per_job_and_spread() {
        assert_eq!(counter_shard(42), counter_shard(42));
        let used: std::collections::BTreeSet<u64> = (1..=200).map(counter_shard).collect();
        assert_eq!(used.len() as u64, COUNTER_SHARDS);
    }

    #[test]
    fn due_keys_name_the_day() {
        assert_eq!(due_key(DueKind::Queued, 0), "due#q#19700101");
        // 2026-11-29 is day 20_786.
        assert_eq!(due_key(DueKind::InProgress, 20_786), "due#r#20261129");
        assert_eq!(
            due_key(DueKind::Queued, 1_800_000_000 / DAY),
            "due#q#20270115"
        );
        assert_eq!(civil(11_016), (2000, 2, 29));
    }

    #[test]
    fn negative_counter_is_damage_not_zero() {
        let item = HashMap::from([
            ("sk".to_string(), s("count#03")),
            ("queued".to_string(), n(-1)),
        ]);
        let mut account = PoolLedger::default();
        assert!(add_shards("pool#p", &[item], &mut account).is_err());
        // A shard written before the change stamp has no `changes`: 0.
        let old = HashMap::from([
            ("sk".to_string(), s("count#04")),
            ("queued".to_string(), n(2)),
        ]);
        let new = HashMap::from([
            ("sk".to_string(), s("count#05")),
            ("running".to_string(), n(1)),
            ("changes".to_string(), n(7)),
        ]);
        add_shards("pool#p", &[old, new], &mut account).expect("valid");
        assert_eq!(
            account,
            PoolLedger {
                queued: 2,
                running: 1,
                changes: 7,
            }
        );
        let busy = HashMap::from([
            ("sk".to_string(), s("busy#7")),
            ("runner".to_string(), s("gh-i-1")),
        ]);
        let mut runners = Vec::new();
        add_busy("pool#p", &[busy], &mut runners).expect("valid");
        assert_eq!(runners, vec!["gh-i-1".to_string()]);
        let nameless = HashMap::from([("sk".to_string(), s("busy#8"))]);
        assert!(add_busy("pool#p", &[nameless], &mut runners).is_err());
    }
}
