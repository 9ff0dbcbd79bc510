//! The job ledger in Azure Table Storage (one table), laid out so that what one delivery
//! does is the same number of requests on entities of the same size whether the pool has
//! ten jobs or ten thousand, and so that reconcile reads only records that are due.
//!
//! Layout (PartitionKey / RowKey):
//!
//! - **job** `job-<id>` / `job`: the authoritative record (state, first pool, runner,
//!   repository, updated-at). Every transition is an ETag-conditional write (insert: 409 if
//!   it exists; replace with `If-Match`: 412 if another writer got there first), retried
//!   after a re-read, and applies the core's forward-only rule.
//! - **pool partition** `pool-<pool>`:
//!   - counter shards `c-00`..`c-15` (`Queued`, `Running`, and `Changes`: how many
//!     transitions changed the shard, its share of the account's change stamp; absent on
//!     shards written before it, read as 0); a job always uses shard `id % 16`, so
//!     concurrent deliveries of different jobs rarely meet on one ETag;
//!   - one marker `m-<id>` per *unfinished* (queued or in-progress) job, with its state and
//!     runner. A marker and its shard change together in one **entity group transaction**
//!     (`$batch`, same partition, all or nothing, each operation `If-Match`), by the core's
//!     [`count_delta`] from the marker's state to the job's. So the counters always equal
//!     the markers, and a completed job's marker is deleted: the partition holds live jobs
//!     and 16 counters, never history. Busy runners are the in-progress markers' runners.
//! - **due hints** `due-<k>-<yyyymmddhh>` / `<updated-at:020>-<id:020>`, `k` = `q` (waiting
//!   or queued), `r` (in progress), `c` (completed): one per (job, state), in the hour
//!   bucket of the transition's time. Reconcile's expiry and [`Ledger::unfinished_before`]
//!   range-read only the buckets whose records can be due (`updated_at <= now - ttl` of that
//!   kind), oldest first, within a time budget, resuming from a stored cursor. A hint is
//!   written *before* its job write, so a job never lacks one; a hint whose job has moved on
//!   is stale and is deleted when read (after re-syncing that job's marker: the repair path).
//! - **lease** `lease` / `<pool>` (`Holder`, `Until`) and **cursors** `cursor` / `n-<name>`.
//!
//! The job write and the pool write cannot be one transaction (different partitions; the
//! job partition must be found by job id alone, and the pool partition is shared). The pool
//! write is therefore derived from the job *as stored*: after writing a marker that is not
//! final, the writer re-reads the job and, if a concurrent delivery moved it further (and
//! synced before our marker landed), syncs again. A delivery that fails between the two
//! writes answers 5xx; its redelivery (stale, but it syncs) or the next expiry pass over the
//! job's hint repairs the marker. Counters never drift from markers in any case.
//!
//! Per delivery (a new transition): read job, write hint, write job, read marker and shard
//! (in parallel), one batch, re-read job = 7 requests, each on one entity of bounded size.
//! `pool()` is one range read of the 16 shards (counts and change stamp): one request of 16
//! entities however many jobs run. `busy_runners()` queries the in-progress markers (one
//! page per 1000 busy runners); the core reads it only in passes that may take instances
//! out (reconcile, completions), never for a queued or in-progress delivery.

use crate::table::{BatchOp, BatchOutcome, Page, TableClient, BATCH_LIMIT};
use async_trait::async_trait;
use scalehook_core::config::LedgerTtl;
use scalehook_core::ledger::{
    count_delta, expiry, recorded_runner, Expired, Expiry, JobRecord, JobState, Ledger,
    LedgerError, PoolLedger, Recorded, Transition,
};
use serde_json::{json, Map, Value};
use std::time::Duration;
use tokio::time::Instant;

/// Counter shards per pool.
pub const SHARDS: u64 = 16;
/// Optimistic-concurrency rounds before a write gives up as contention.
const MAX_ROUNDS: usize = 24;
/// Hints read per page by expiry and `unfinished_before`.
const HINT_PAGE: usize = 100;
/// Default time one expiry pass may spend (the core bounds the whole call by
/// `cloud_timeout_ms`; this ends it cleanly before, with its cursor saved).
pub const DEFAULT_EXPIRY_BUDGET: Duration = Duration::from_secs(4);

/// The ledger in one table (see the module docs for the layout and why).
pub struct TableLedger {
    client: TableClient,
    expiry_budget: Duration,
    /// (pool, holder) -> the ETag of the lease version that holder wrote: its release is
    /// then one conditional delete.
    held: std::sync::Mutex<std::collections::HashMap<(String, String), String>>,
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
fn pool_pk(pool: &str) -> String {
    format!("pool-{pool}")
}
fn marker_rk(job_id: u64) -> String {
    format!("m-{job_id}")
}
fn shard_rk(job_id: u64) -> String {
    format!("c-{:02}", job_id % SHARDS)
}
const LEASE_PK: &str = "lease";
const CURSOR_PK: &str = "cursor";

/// The hint kind of a state: `q`, `r` or `c`.
fn kind(state: JobState) -> &'static str {
    match state {
        JobState::Waiting | JobState::Queued => "q",
        JobState::InProgress => "r",
        JobState::Completed => "c",
    }
}

/// `yyyymmddhh` (UTC) of Unix seconds.
pub fn hour_bucket(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let hour = (secs % 86_400) / 3600;
    // Civil from days (H. Hinnant's algorithm), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}{hour:02}")
}

fn hint_pk(state: JobState, at: u64) -> String {
    format!("due-{}-{}", kind(state), hour_bucket(at))
}
fn hint_rk(at: u64, job_id: u64) -> String {
    format!("{at:020}-{job_id:020}")
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

fn etag_of(e: &Map<String, Value>) -> Option<String> {
    text(e, "odata.etag").map(str::to_string)
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

fn marker_entity(r: &JobRecord) -> Value {
    json!({
        "PartitionKey": pool_pk(&r.pool),
        "RowKey": marker_rk(r.job_id),
        "Kind": "marker",
        "State": r.state.as_str(),
        "Runner": r.runner.clone().unwrap_or_default(),
        "UpdatedAt": r.updated_at.to_string(),
        "UpdatedAt@odata.type": "Edm.Int64",
    })
}

/// A counter shard: counts and its share of the change stamp.
struct Shard {
    queued: u64,
    running: u64,
    changes: u64,
}

impl Shard {
    fn read(e: &Map<String, Value>) -> Shard {
        Shard {
            queued: int64(e.get("Queued")).unwrap_or(0),
            running: int64(e.get("Running")).unwrap_or(0),
            // Written before the change stamp: 0.
            changes: int64(e.get("Changes")).unwrap_or(0),
        }
    }
}

fn shard_entity(pool: &str, row: &str, shard: &Shard) -> Value {
    json!({
        "PartitionKey": pool_pk(pool),
        "RowKey": row,
        "Kind": "counter",
        "Queued": shard.queued.to_string(),
        "Queued@odata.type": "Edm.Int64",
        "Running": shard.running.to_string(),
        "Running@odata.type": "Edm.Int64",
        "Changes": shard.changes.to_string(),
        "Changes@odata.type": "Edm.Int64",
    })
}

fn hint_entity(r: &JobRecord) -> Value {
    json!({
        "PartitionKey": hint_pk(r.state, r.updated_at),
        "RowKey": hint_rk(r.updated_at, r.job_id),
        "Kind": "hint",
        "JobId": r.job_id.to_string(),
        "State": r.state.as_str(),
        "Pool": r.pool,
        "UpdatedAt": r.updated_at.to_string(),
        "UpdatedAt@odata.type": "Edm.Int64",
    })
}

/// Row keys may not hold `/ \ # ?` or control characters, `'` would end the key in a URL
/// and `%` would be decoded from it: anything but letters, digits and `-_.:@` is written as
/// `~XX` (hex of each UTF-8 byte; `~` itself too, so the mapping is one to one).
fn cursor_rk(name: &str) -> String {
    let mut out = String::from("n-");
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@') {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("~{b:02X}"));
            }
        }
    }
    out
}

/// A due hint as read.
struct Hint {
    pk: String,
    rk: String,
    etag: String,
    job_id: u64,
    pool: String,
    state: JobState,
    updated_at: u64,
}

impl Hint {
    fn from(e: &Map<String, Value>) -> Option<Hint> {
        Some(Hint {
            pk: text(e, "PartitionKey")?.to_string(),
            rk: text(e, "RowKey")?.to_string(),
            etag: etag_of(e).unwrap_or_else(|| "*".into()),
            job_id: text(e, "JobId")?.parse().ok()?,
            pool: text(e, "Pool")?.to_string(),
            state: state_of(e).ok()?,
            updated_at: int64(e.get("UpdatedAt"))?,
        })
    }

    /// Does the job still stand where this hint says?
    fn current(&self, job: &JobRecord) -> bool {
        job.state == self.state && job.updated_at == self.updated_at
    }
}

/// The filter of the hints of kind `k` last updated at or before `horizon`, optionally from
/// a resume point.
fn hint_filter(k: &str, horizon: u64, from: Option<(&str, &str)>) -> String {
    let upper = format!("due-{k}-{}", hour_bucket(horizon));
    let due = format!("RowKey lt '{:020}'", horizon.saturating_add(1));
    match from {
        Some((pk, rk)) if pk.starts_with(&format!("due-{k}-")) => {
            format!("PartitionKey eq '{pk}' and RowKey ge '{rk}' and {due}")
        }
        _ => format!("PartitionKey ge 'due-{k}-' and PartitionKey le '{upper}' and {due}"),
    }
}

/// After a resume filter over one bucket is done, the rest: the buckets after it.
fn hint_filter_after(k: &str, horizon: u64, pk: &str) -> String {
    let upper = format!("due-{k}-{}", hour_bucket(horizon));
    format!(
        "PartitionKey gt '{pk}' and PartitionKey le '{upper}' and RowKey lt '{:020}'",
        horizon.saturating_add(1)
    )
}

impl TableLedger {
    pub fn new(client: TableClient) -> Self {
        Self {
            client,
            expiry_budget: DEFAULT_EXPIRY_BUDGET,
            held: Default::default(),
        }
    }

    fn held_leases(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), String>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long one expiry pass may run before it saves its cursor and stops.
    pub fn with_expiry_budget(mut self, budget: Duration) -> Self {
        self.expiry_budget = budget;
        self
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

    /// Brings the job's marker (and its counter shard) to the job's state as stored, and
    /// keeps doing so while a concurrent delivery moves the job on (see module docs).
    async fn sync_pool(&self, job: &JobRecord) -> Result<(), LedgerError> {
        let mut target = job.clone();
        for _ in 0..MAX_ROUNDS {
            let wrote = self.sync_marker(&target).await?;
            if !wrote || target.state == JobState::Completed {
                return Ok(());
            }
            match self.read_job(target.job_id).await? {
                Some(s) if s.record.state > target.state => target = s.record,
                _ => return Ok(()),
            }
        }
        Err(LedgerError::Contention(format!(
            "job {} kept moving while its pool marker was synced",
            job.job_id
        )))
    }

    /// One marker + shard move, forward only. `Ok(true)` when this call wrote.
    async fn sync_marker(&self, job: &JobRecord) -> Result<bool, LedgerError> {
        if job.state == JobState::Waiting {
            // Not counted; a waiting job has no marker.
            return Ok(false);
        }
        let pk = pool_pk(&job.pool);
        let mrk = marker_rk(job.job_id);
        let srk = shard_rk(job.job_id);
        for round in 0..MAX_ROUNDS {
            let (marker, shard) =
                tokio::try_join!(self.client.get(&pk, &mrk), self.client.get(&pk, &srk))?;
            let from = match &marker {
                Some((m, _)) => Some(state_of(m)?),
                None => None,
            };
            if from.is_some_and(|f| f >= job.state) {
                return Ok(false);
            }
            if from.is_none() && job.state == JobState::Completed {
                return Ok(false);
            }
            let mut ops = Vec::with_capacity(2);
            ops.push(match (&marker, job.state) {
                (Some((_, etag)), JobState::Completed) => BatchOp::Delete {
                    row: mrk.clone(),
                    etag: etag.clone(),
                },
                (Some((_, etag)), _) => BatchOp::Replace {
                    row: mrk.clone(),
                    etag: etag.clone(),
                    entity: marker_entity(job),
                },
                (None, _) => BatchOp::Insert(marker_entity(job)),
            });
            let (dq, dr) = count_delta(from, job.state);
            if (dq, dr) != (0, 0) {
                let old = shard.as_ref().map_or(
                    Shard {
                        queued: 0,
                        running: 0,
                        changes: 0,
                    },
                    |(s, _)| Shard::read(s),
                );
                // The change stamp moves with the counts (and so with the busy markers).
                let new = Shard {
                    queued: old.queued.saturating_add_signed(dq.into()),
                    running: old.running.saturating_add_signed(dr.into()),
                    changes: old.changes.saturating_add(1),
                };
                let entity = shard_entity(&job.pool, &srk, &new);
                ops.push(match &shard {
                    Some((_, etag)) => BatchOp::Replace {
                        row: srk.clone(),
                        etag: etag.clone(),
                        entity,
                    },
                    None => BatchOp::Insert(entity),
                });
            }
            match self.client.batch(&pk, &ops).await? {
                BatchOutcome::Committed => return Ok(true),
                BatchOutcome::Conflict(_) => jitter(round).await,
            }
        }
        Err(LedgerError::Contention(format!(
            "pool marker and counter of job {} kept changing",
            job.job_id
        )))
    }

    /// A hint whose job moved on (or is gone): re-sync that job's marker, then drop it.
    async fn retire_hint(&self, hint: &Hint, job: Option<&JobRecord>) -> Result<(), LedgerError> {
        match job {
            Some(j) => self.sync_pool(j).await?,
            None => {
                // Forgotten job: a marker left behind (its delivery died mid-way) goes too.
                let gone = JobRecord {
                    job_id: hint.job_id,
                    pool: hint.pool.clone(),
                    state: JobState::Completed,
                    runner: None,
                    updated_at: hint.updated_at,
                    repository: None,
                };
                self.sync_marker(&gone).await?;
            }
        }
        self.client.delete(&hint.pk, &hint.rk, &hint.etag).await?;
        Ok(())
    }

    /// Expires, forgets or retires one due hint. Returns what it did.
    async fn process_hint(
        &self,
        hint: &Hint,
        now: u64,
        ttl: &LedgerTtl,
        done: &mut Expired,
    ) -> Result<(), LedgerError> {
        let stored = match self.read_job(hint.job_id).await? {
            Some(s) if hint.current(&s.record) => s,
            other => {
                return self
                    .retire_hint(hint, other.map(|s| s.record).as_ref())
                    .await
            }
        };
        match expiry(stored.record.state, stored.record.updated_at, now, ttl) {
            Expiry::Keep => Ok(()),
            Expiry::Expire => {
                let mut expired = stored.record.clone();
                expired.state = JobState::Completed;
                expired.runner =
                    recorded_runner(stored.record.runner.as_deref(), JobState::Completed, None);
                expired.updated_at = now;
                self.client
                    .upsert(
                        &hint_pk(expired.state, now),
                        &hint_rk(now, expired.job_id),
                        &hint_entity(&expired),
                    )
                    .await?;
                if self
                    .client
                    .replace(
                        &job_pk(expired.job_id),
                        JOB_RK,
                        &stored.etag,
                        &job_entity(&expired),
                    )
                    .await?
                    .is_some()
                {
                    done.expired += 1;
                    self.sync_pool(&expired).await?;
                    self.client.delete(&hint.pk, &hint.rk, &hint.etag).await?;
                }
                // Else a delivery moved it meanwhile: this hint is stale next pass.
                Ok(())
            }
            Expiry::Forget => {
                // A completed job has no marker, unless a delivery died mid-way.
                self.sync_marker(&stored.record).await?;
                if self
                    .client
                    .delete(&job_pk(hint.job_id), JOB_RK, &stored.etag)
                    .await?
                {
                    done.forgotten += 1;
                    self.client.delete(&hint.pk, &hint.rk, &hint.etag).await?;
                }
                Ok(())
            }
        }
    }

    /// Writes the entities `count` in-progress jobs (ids from `first_id`, runner
    /// `runner-<id>`) would have in the shared partitions (markers and counters in the pool
    /// partition, hints in their bucket) in bulk with entity group transactions, and with
    /// `job_entities` their job entities too (single inserts: slow on Azurite), to measure a
    /// large pool quickly. Not for production use: it assumes the ids are new.
    #[doc(hidden)]
    pub async fn seed_in_progress(
        &self,
        pool: &str,
        first_id: u64,
        count: u64,
        at: u64,
        job_entities: bool,
    ) -> Result<(), LedgerError> {
        let records: Vec<JobRecord> = (first_id..first_id + count)
            .map(|id| JobRecord {
                job_id: id,
                pool: pool.to_string(),
                state: JobState::InProgress,
                runner: Some(format!("runner-{id}")),
                updated_at: at,
                repository: Some("octo-org/octo-repo".into()),
            })
            .collect();
        let mut added = vec![0u64; SHARDS as usize];
        for r in &records {
            added[(r.job_id % SHARDS) as usize] += 1;
        }
        let pk = pool_pk(pool);
        let hints = hint_pk(JobState::InProgress, at);
        let chunks: Vec<&[JobRecord]> = records.chunks(BATCH_LIMIT).collect();
        for chunk in &chunks {
            let markers: Vec<BatchOp> = chunk
                .iter()
                .map(|r| BatchOp::Insert(marker_entity(r)))
                .collect();
            let hint_ops: Vec<BatchOp> = chunk
                .iter()
                .map(|r| BatchOp::Insert(hint_entity(r)))
                .collect();
            let (a, b) = tokio::try_join!(
                self.client.batch(&pk, &markers),
                self.client.batch(&hints, &hint_ops)
            )?;
            if a != BatchOutcome::Committed || b != BatchOutcome::Committed {
                return Err(LedgerError::Contention("seed batch refused".into()));
            }
        }
        for chunk in records.chunks(32).filter(|_| job_entities) {
            let entities: Vec<Value> = chunk.iter().map(job_entity).collect();
            let writes = entities.iter().map(|e| self.client.insert(e));
            for written in futures_join_all(writes).await {
                written?;
            }
        }
        for (i, n) in added.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let row = format!("c-{i:02}");
            loop {
                let shard = self.client.get(&pk, &row).await?;
                let ok = match shard {
                    Some((s, etag)) => {
                        let mut shard = Shard::read(&s);
                        shard.running += n;
                        shard.changes += n;
                        self.client
                            .replace(&pk, &row, &etag, &shard_entity(pool, &row, &shard))
                            .await?
                            .is_some()
                    }
                    None => {
                        let shard = Shard {
                            queued: 0,
                            running: *n,
                            changes: *n,
                        };
                        self.client
                            .insert(&shard_entity(pool, &row, &shard))
                            .await?
                            .is_some()
                    }
                };
                if ok {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Reads due hints of kind `k` page by page (resuming from `cursor` when given) and
    /// hands each to `f` until `f` says stop, the range ends, or `deadline` passes.
    async fn scan_hints(
        &self,
        k: &str,
        horizon: u64,
        cursor: Option<&(String, String)>,
        deadline: Instant,
        mut f: impl FnMut(Hint) -> bool,
    ) -> Result<Scan, LedgerError> {
        let mut filters = Vec::new();
        match cursor {
            Some((pk, rk)) if pk.starts_with(&format!("due-{k}-")) => {
                filters.push(hint_filter(k, horizon, Some((pk, rk))));
                filters.push(hint_filter_after(k, horizon, pk));
            }
            _ => filters.push(hint_filter(k, horizon, None)),
        }
        for filter in filters {
            let mut from: Option<(String, Option<String>)> = None;
            loop {
                if Instant::now() >= deadline {
                    return Ok(Scan::Stopped(
                        from.map(|(pk, rk)| (pk, rk.unwrap_or_default())),
                    ));
                }
                let Page { items, next } = self
                    .client
                    .query_page(&filter, None, Some(HINT_PAGE), from.as_ref())
                    .await?;
                for e in &items {
                    let Some(h) = Hint::from(e) else { continue };
                    let at = (h.pk.clone(), h.rk.clone());
                    if !f(h) {
                        return Ok(Scan::Stopped(Some(at)));
                    }
                }
                match next {
                    Some(n) => from = Some(n),
                    None => break,
                }
            }
        }
        Ok(Scan::Done)
    }
}

/// How a hint scan ended.
enum Scan {
    /// The whole due range was read.
    Done,
    /// Stopped early; the next read starts here (`None`: where it started).
    Stopped(Option<(String, String)>),
}

/// Awaits every future (in order), without another dependency.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let handles: Vec<_> = futures.map(Box::pin).collect();
    let mut out = Vec::with_capacity(handles.len());
    // Drive them together: poll all until each is done.
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(results.into_iter().flatten());
    out
}

/// A short, growing, jittered pause before another optimistic round.
async fn jitter(round: usize) {
    let base = 5u64 << round.min(5);
    let spread = u64::from(std::process::id() ^ (unix_nanos() as u32)) % base.max(1);
    tokio::time::sleep(Duration::from_millis(base / 2 + spread)).await;
}

fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos().into())
        .unwrap_or(0)
}

#[async_trait]
impl Ledger for TableLedger {
    async fn record(&self, t: &Transition) -> Result<Recorded, LedgerError> {
        for round in 0..MAX_ROUNDS {
            // A queued (or waiting) job is nearly always new: the first round writes it as
            // its first sighting (an insert, refused if the job exists) without reading it;
            // a refusal reads and decides again. One round trip fewer for every new job.
            let optimistic = round == 0 && matches!(t.to, JobState::Queued | JobState::Waiting);
            let stored = if optimistic {
                None
            } else {
                self.read_job(t.job_id).await?
            };
            let current = stored.as_ref().map(|s| s.record.state);
            let Some(to) = JobState::advance(current, t.to) else {
                // Stale: still make sure the pool matches the job (repairs a delivery that
                // failed after its job write), then report where the job is.
                return match stored {
                    Some(s) => {
                        self.sync_pool(&s.record).await?;
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
            // The hint first: a job entity never exists without the hint that makes
            // reconcile look at it (a hint without its job write is retired when read).
            self.client
                .upsert(
                    &hint_pk(record.state, record.updated_at),
                    &hint_rk(record.updated_at, record.job_id),
                    &hint_entity(&record),
                )
                .await?;
            let written = match &stored {
                None => self.client.insert(&job_entity(&record)).await?,
                Some(s) => {
                    self.client
                        .replace(&job_pk(t.job_id), JOB_RK, &s.etag, &job_entity(&record))
                        .await?
                }
            }
            .is_some();
            if written {
                self.sync_pool(&record).await?;
                return Ok(Recorded::Applied {
                    from: current,
                    since: existing.map(|r| r.updated_at),
                });
            }
            // Another delivery of this job wrote first (or the job was not new after all):
            // read again and re-decide.
            if !optimistic {
                jitter(round).await;
            }
        }
        Err(LedgerError::Contention(format!(
            "job {} kept changing under concurrent deliveries",
            t.job_id
        )))
    }

    async fn pool(&self, pool: &str) -> Result<PoolLedger, LedgerError> {
        let pk = pool_pk(pool);
        let shards = self
            .client
            .query(
                &format!("PartitionKey eq '{pk}' and RowKey ge 'c-' and RowKey lt 'c.'"),
                Some("Queued,Running,Changes"),
            )
            .await?;
        let (mut queued, mut running, mut changes) = (0u64, 0u64, 0u64);
        for s in shards.iter().map(Shard::read) {
            queued += s.queued;
            running += s.running;
            changes = changes.saturating_add(s.changes);
        }
        Ok(PoolLedger {
            queued: u32::try_from(queued).unwrap_or(u32::MAX),
            running: u32::try_from(running).unwrap_or(u32::MAX),
            changes,
        })
    }

    async fn busy_runners(&self, pool: &str) -> Result<Vec<String>, LedgerError> {
        let pk = pool_pk(pool);
        // Every page (1000 markers each): the policy takes instances out only with all of them.
        let markers = self
            .client
            .query(
                &format!(
                    "PartitionKey eq '{pk}' and RowKey ge 'm-' and RowKey lt 'm.' and State eq 'in_progress'"
                ),
                Some("Runner"),
            )
            .await?;
        Ok(markers
            .iter()
            .filter_map(|m| text(m, "Runner").map(str::to_string))
            .collect())
    }

    async fn expire(&self, now: u64, ttl: &LedgerTtl) -> Result<Expired, LedgerError> {
        let deadline = Instant::now() + self.expiry_budget;
        let mut done = Expired::default();
        let kinds = [
            ("q", ttl.queued),
            ("r", ttl.in_progress),
            ("c", ttl.retention),
        ];
        for (k, age) in kinds {
            let Some(horizon) = now.checked_sub(age.as_secs()) else {
                continue;
            };
            let cursor_name = format!("x-expire-{k}");
            let stored_cursor =
                self.client
                    .get(CURSOR_PK, &cursor_name)
                    .await?
                    .and_then(|(e, _)| {
                        Some((
                            text(&e, "Bucket")?.to_string(),
                            text(&e, "Row")?.to_string(),
                        ))
                    });
            let mut cursor = stored_cursor.clone();
            loop {
                // A page's worth at a time (the scan's callback cannot await), then act.
                let mut hints = Vec::new();
                let scan = self
                    .scan_hints(k, horizon, cursor.as_ref(), deadline, |h| {
                        hints.push(h);
                        hints.len() < HINT_PAGE
                    })
                    .await?;
                for h in &hints {
                    let here = Some((h.pk.clone(), h.rk.clone()));
                    if Instant::now() >= deadline {
                        self.save_cursor(&cursor_name, here).await?;
                        return Ok(done);
                    }
                    if let Err(e) = self.process_hint(h, now, ttl, &mut done).await {
                        // The next pass goes on just after this hint (row keys have one
                        // length, so `<rk>!` sorts before the next one), so one hint that
                        // keeps failing cannot stall expiry; it is visited again once a pass
                        // reaches the end of the range and the cursor is cleared.
                        let after = Some((h.pk.clone(), format!("{}!", h.rk)));
                        self.save_cursor(&cursor_name, after).await?;
                        return Err(e);
                    }
                }
                match scan {
                    Scan::Done => {
                        if stored_cursor.is_some() {
                            self.save_cursor(&cursor_name, None).await?;
                        }
                        break;
                    }
                    Scan::Stopped(at) => {
                        if let Some(at) = at {
                            cursor = Some(at);
                        }
                        if Instant::now() >= deadline {
                            if cursor != stored_cursor {
                                self.save_cursor(&cursor_name, cursor).await?;
                            }
                            return Ok(done);
                        }
                    }
                }
            }
        }
        Ok(done)
    }

    async fn record_of(&self, job_id: u64) -> Result<Option<JobRecord>, LedgerError> {
        Ok(self.read_job(job_id).await?.map(|s| s.record))
    }

    async fn unfinished_before(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<JobRecord>, LedgerError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + self.expiry_budget;
        let mut out: Vec<JobRecord> = Vec::new();
        for k in ["q", "r"] {
            let mut hints = Vec::new();
            self.scan_hints(k, before, None, deadline, |h| {
                hints.push(h);
                hints.len() < limit * 2
            })
            .await?;
            for h in hints {
                if Instant::now() >= deadline {
                    break;
                }
                let job = self.read_job(h.job_id).await?.map(|s| s.record);
                match job {
                    Some(j) if h.current(&j) => out.push(j),
                    other => self.retire_hint(&h, other.as_ref()).await?,
                }
            }
        }
        out.sort_by_key(|j| (j.updated_at, j.job_id));
        out.truncate(limit);
        Ok(out)
    }

    async fn acquire_lease(
        &self,
        pool: &str,
        holder: &str,
        now: u64,
        until: u64,
    ) -> Result<bool, LedgerError> {
        let entity = json!({
            "PartitionKey": LEASE_PK,
            "RowKey": pool,
            "Kind": "lease",
            "Holder": holder,
            "Until": until.to_string(),
            "Until@odata.type": "Edm.Int64",
        });
        // A released lease is deleted, so a free pool has no lease entity: try the insert
        // first (one round trip); read only when it exists.
        let mut written = self.client.insert(&entity).await?;
        for round in 0..=4 {
            if let Some(etag) = written {
                self.held_leases()
                    .insert((pool.to_string(), holder.to_string()), etag);
                return Ok(true);
            }
            if round == 4 {
                break;
            }
            written = match self.client.get(LEASE_PK, pool).await? {
                None => self.client.insert(&entity).await?,
                Some((e, etag)) => {
                    let mine = text(&e, "Holder") == Some(holder);
                    let expired = int64(e.get("Until")).unwrap_or(0) <= now;
                    if !mine && !expired {
                        return Ok(false);
                    }
                    self.client.replace(LEASE_PK, pool, &etag, &entity).await?
                }
            };
            // None: someone else wrote the lease between our read and write: look again.
        }
        Ok(false)
    }

    async fn release_lease(&self, pool: &str, holder: &str) -> Result<(), LedgerError> {
        // The version this holder wrote, when it took the lease through this ledger: a
        // delete conditional on it needs no read first.
        let held = self
            .held_leases()
            .remove(&(pool.to_string(), holder.to_string()));
        let etag = match held {
            Some(etag) if !etag.is_empty() => etag,
            _ => match self.client.get(LEASE_PK, pool).await? {
                Some((e, etag)) if text(&e, "Holder") == Some(holder) => etag,
                _ => return Ok(()),
            },
        };
        // 412: someone took it over after it expired; theirs now.
        self.client.delete(LEASE_PK, pool, &etag).await?;
        Ok(())
    }

    async fn cursor(&self, name: &str) -> Result<Option<String>, LedgerError> {
        Ok(self
            .client
            .get(CURSOR_PK, &cursor_rk(name))
            .await?
            .and_then(|(e, _)| e.get("Value").and_then(Value::as_str).map(str::to_string)))
    }

    async fn set_cursor(&self, name: &str, value: &str) -> Result<(), LedgerError> {
        let rk = cursor_rk(name);
        self.client
            .upsert(
                CURSOR_PK,
                &rk,
                &json!({"PartitionKey": CURSOR_PK, "RowKey": rk, "Kind": "cursor", "Value": value}),
            )
            .await
    }

    async fn delete_cursor(&self, name: &str) -> Result<(), LedgerError> {
        // 404: none stored; fine.
        self.client.delete(CURSOR_PK, &cursor_rk(name), "*").await?;
        Ok(())
    }
}

impl TableLedger {
    async fn save_cursor(
        &self,
        name: &str,
        at: Option<(String, String)>,
    ) -> Result<(), LedgerError> {
        match at {
            Some((bucket, row)) => {
                self.client
                    .upsert(
                        CURSOR_PK,
                        name,
                        &json!({"PartitionKey": CURSOR_PK, "RowKey": name, "Kind": "cursor",
                                "Bucket": bucket, "Row": row}),
                    )
                    .await
            }
            None => self.client.delete(CURSOR_PK, name, "*").await.map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_buckets_are_utc_calendar_hours() {
        assert_eq!(hour_bucket(0), "1970010100");
        assert_eq!(hour_bucket(3599), "1970010100");
        assert_eq!(hour_bucket(3600), "1970010101");
        // 2026-11-29T12:41:07Z
        assert_eq!(hour_bucket(1_795_956_067), "2026112912");
        // 2000-02-29T23:00:00Z (leap day)
        assert_eq!(hour_bucket(951_865_200), "2000022923");
    }

    #[test]
    fn hint_keys_sort_by_time_then_id() {
        assert!(hint_rk(99, 5) < hint_rk(100, 1));
        assert!(hint_rk(100, 1) < hint_rk(100, 2));
        assert_eq!(hint_pk(JobState::Waiting, 0), "due-q-1970010100");
        assert_eq!(hint_pk(JobState::InProgress, 0), "due-r-1970010100");
    }

    #[test]
    fn cursor_names_become_safe_row_keys() {
        assert_eq!(cursor_rk("deliveries"), "n-deliveries");
        assert_eq!(cursor_rk("a/b#c?d'e~"), "n-a~2Fb~23c~3Fd~27e~7E");
    }

    #[test]
    fn shards_spread_jobs() {
        assert_eq!(shard_rk(17), "c-01");
        assert_eq!(shard_rk(u64::MAX), format!("c-{:02}", u64::MAX % SHARDS));
    }
}
