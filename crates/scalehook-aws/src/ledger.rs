//! The DynamoDB ledger.
//!
//! Table (fixed with `infra/aws`): partition key `pk` (String), no sort key, TTL attribute
//! `expires_at` (Number, epoch seconds), on-demand billing. Items:
//!
//! - `job#<job id>`: `pool`, `state` (`waiting|queued|in_progress|completed`), `runner`
//!   (when known), `updated_at` (epoch seconds of the last applied transition), `expires_at`;
//! - `pool#<pool name>`: counters `queued` and `running` (Numbers), and `busy`, a string set
//!   of `<job id>:<runner name>` entries, one per in-progress job that names its runner.
//!
//! A transition is one `TransactWriteItems`: a `Put` of the job item conditioned on the
//! state it was read in (`attribute_not_exists(pk)` for a new job), and an `ADD`/`DELETE`
//! update of the pool item by the core's [`count_delta`]. Both commit or neither does, so
//! the counters change exactly once per applied transition, however many copies of a
//! delivery race. A lost race (the condition failed, or DynamoDB cancelled the transaction
//! for a conflicting one) re-reads the job and tries again, a bounded number of times.
//!
//! `expires_at` is a backstop only: reconcile expires stale jobs (moving the counters) and
//! forgets completed ones past retention long before DynamoDB's TTL deletes anything.

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use scalehook_core::config::LedgerTtl;
use scalehook_core::ledger::{count_delta, expiry, Expired, Expiry};
use scalehook_core::{JobState, Ledger, LedgerError, PoolLedger, Recorded, Transition};
use std::collections::HashMap;
use std::time::Duration;

/// How many times a transition is re-read and retried after losing a race. Each retry
/// means another delivery of the same job committed first, so a handful is plenty.
pub const MAX_TRANSITION_ATTEMPTS: u32 = 8;

type Item = HashMap<String, AttributeValue>;

/// The DynamoDB ledger over one table.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
    ttl: LedgerTtl,
}

/// A job item as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredJob {
    job_id: u64,
    pool: String,
    state: JobState,
    runner: Option<String>,
    updated_at: u64,
}

/// Why a conditional write did not happen.
enum WriteError {
    /// Another writer got there first: re-read and decide again.
    Lost,
    Failed(LedgerError),
}

/// The pause before re-reading after a lost race: exponential from about 5-20 ms, capped
/// at 320 ms, jittered by job and time so that a burst of deliveries for one pool (which
/// all update the pool's counters) spreads out instead of colliding again. The sum over
/// all attempts stays near 1.3 s, well inside the per-delivery budget.
fn lost_race_backoff(job_id: u64, attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = (job_id ^ u64::from(nanos)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60; // 0..=15
    Duration::from_millis((5 + jitter) << attempt.min(4))
}

fn job_key(job_id: u64) -> String {
    format!("job#{job_id}")
}

fn pool_key(pool: &str) -> String {
    format!("pool#{pool}")
}

fn busy_entry(job_id: u64, runner: &str) -> String {
    format!("{job_id}:{runner}")
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

impl DynamoLedger {
    /// `ttl` must be the configuration's: it sets each item's `expires_at` backstop.
    pub fn new(client: Client, table: impl Into<String>, ttl: LedgerTtl) -> Self {
        Self {
            client,
            table: table.into(),
            ttl,
        }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig, table: impl Into<String>, ttl: LedgerTtl) -> Self {
        Self::new(Client::new(sdk), table, ttl)
    }

    /// When DynamoDB may delete a job item: past retention, and for unfinished jobs past
    /// their state's time-to-live plus retention (reconcile will have expired them first).
    fn expires_at(&self, state: JobState, at: u64) -> u64 {
        let live = match state {
            JobState::Waiting | JobState::Queued => self.ttl.queued,
            JobState::InProgress => self.ttl.in_progress,
            JobState::Completed => Duration::ZERO,
        };
        at.saturating_add(live.as_secs())
            .saturating_add(self.ttl.retention.as_secs())
    }

    async fn get_job(&self, job_id: u64) -> Result<Option<StoredJob>, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(job_key(job_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        out.item().map(parse_job).transpose()
    }

    /// Writes one transition of a job read in state `from`, with the pool counters, in
    /// one transaction. `runner` is the job's runner (the record's, else the delivery's).
    async fn write_transition(
        &self,
        job_id: u64,
        pool: &str,
        from: Option<JobState>,
        to: JobState,
        runner: Option<&str>,
        at: u64,
    ) -> Result<(), WriteError> {
        let build = |e: aws_sdk_dynamodb::error::BuildError| {
            WriteError::Failed(LedgerError::Unavailable(format!(
                "building TransactWriteItems: {e}"
            )))
        };
        let mut job = HashMap::from([
            ("pk".to_string(), s(job_key(job_id))),
            ("pool".to_string(), s(pool)),
            ("state".to_string(), s(to.as_str())),
            ("updated_at".to_string(), n(at)),
            ("expires_at".to_string(), n(self.expires_at(to, at))),
        ]);
        if let Some(r) = runner {
            job.insert("runner".into(), s(r));
        }
        let mut put = Put::builder().table_name(&self.table).set_item(Some(job));
        put = match from {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(state) => put
                .condition_expression("#state = :from")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":from", s(state.as_str())),
        };
        let mut items = vec![TransactWriteItem::builder()
            .put(put.build().map_err(build)?)
            .build()];

        let (dq, dr) = count_delta(from, to);
        let mut adds = Vec::new();
        let mut values = HashMap::new();
        let mut names = HashMap::new();
        if dq != 0 {
            adds.push("#queued :dq");
            names.insert("#queued".to_string(), "queued".to_string());
            values.insert(":dq".to_string(), n(dq));
        }
        if dr != 0 {
            adds.push("#running :dr");
            names.insert("#running".to_string(), "running".to_string());
            values.insert(":dr".to_string(), n(dr));
        }
        let mut deletes = Vec::new();
        if let Some(r) = runner {
            let entry = AttributeValue::Ss(vec![busy_entry(job_id, r)]);
            if to == JobState::InProgress {
                adds.push("#busy :busy");
                names.insert("#busy".to_string(), "busy".to_string());
                values.insert(":busy".to_string(), entry);
            } else if from == Some(JobState::InProgress) {
                deletes.push("#busy :busy");
                names.insert("#busy".to_string(), "busy".to_string());
                values.insert(":busy".to_string(), entry);
            }
        }
        if !values.is_empty() {
            let mut expr = String::new();
            if !adds.is_empty() {
                expr.push_str("ADD ");
                expr.push_str(&adds.join(", "));
            }
            if !deletes.is_empty() {
                expr.push_str(" DELETE ");
                expr.push_str(&deletes.join(", "));
            }
            let update = Update::builder()
                .table_name(&self.table)
                .key("pk", s(pool_key(pool)))
                .update_expression(expr.trim())
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .build()
                .map_err(build)?;
            items.push(TransactWriteItem::builder().update(update).build());
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
                // The job's condition failed (another delivery applied first) or the
                // transaction collided with another on the same items: either way, re-read.
                Some(TransactWriteItemsError::TransactionCanceledException(c))
                    if c.cancellation_reasons().iter().all(|r| {
                        matches!(
                            r.code(),
                            None | Some("None" | "ConditionalCheckFailed" | "TransactionConflict")
                        )
                    }) =>
                {
                    WriteError::Lost
                }
                Some(TransactWriteItemsError::TransactionInProgressException(_)) => {
                    WriteError::Lost
                }
                _ => WriteError::Failed(unavailable("TransactWriteItems", e)),
            }),
        }
    }

    /// Deletes a completed job item past retention (conditioned on it still being the
    /// record that was read). Returns false when it changed meanwhile.
    async fn forget(&self, job: &StoredJob) -> Result<bool, LedgerError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(job_key(job.job_id)))
            .condition_expression("#state = :completed AND #updated = :updated")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_values(":completed", s(JobState::Completed.as_str()))
            .expression_attribute_values(":updated", n(job.updated_at))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(unavailable("DeleteItem", e)),
        }
    }

    /// Job items that may be due for expiry at `now` (the filter narrows what is
    /// returned; the core's [`expiry`] decides). A `Scan` reads the whole table.
    async fn scan_candidates(&self, now: u64) -> Result<Vec<StoredJob>, LedgerError> {
        let cut = |d: Duration| n(now.saturating_sub(d.as_secs()));
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(
                    "begins_with(pk, :job) AND ((#state IN (:queued, :waiting) AND #updated <= :queued_cut) \
                     OR (#state = :running AND #updated <= :running_cut) \
                     OR (#state = :completed AND #updated <= :retention_cut))",
                )
                .expression_attribute_names("#state", "state")
                .expression_attribute_names("#updated", "updated_at")
                .expression_attribute_values(":job", s("job#"))
                .expression_attribute_values(":queued", s(JobState::Queued.as_str()))
                .expression_attribute_values(":waiting", s(JobState::Waiting.as_str()))
                .expression_attribute_values(":running", s(JobState::InProgress.as_str()))
                .expression_attribute_values(":completed", s(JobState::Completed.as_str()))
                .expression_attribute_values(":queued_cut", cut(self.ttl.queued))
                .expression_attribute_values(":running_cut", cut(self.ttl.in_progress))
                .expression_attribute_values(":retention_cut", cut(self.ttl.retention))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("Scan", e))?;
            for item in page.items() {
                out.push(parse_job(item)?);
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Ledger for DynamoLedger {
    async fn record(&self, t: &Transition) -> Result<Recorded, LedgerError> {
        for attempt in 0..MAX_TRANSITION_ATTEMPTS {
            let existing = self.get_job(t.job_id).await?;
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
            let runner = existing
                .as_ref()
                .and_then(|j| j.runner.as_deref())
                .or(t.runner.as_deref());
            match self
                .write_transition(t.job_id, pool, current, to, runner, t.at)
                .await
            {
                Ok(()) => {
                    return Ok(Recorded::Applied {
                        from: current,
                        since: existing.as_ref().map(|j| j.updated_at),
                    })
                }
                Err(WriteError::Lost) => {
                    tracing::debug!(
                        job_id = t.job_id,
                        attempt,
                        "ledger write lost a race; re-reading"
                    );
                    tokio::time::sleep(lost_race_backoff(t.job_id, attempt)).await;
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
        let key = pool_key(pool);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(key.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", e))?;
        let Some(item) = out.item() else {
            return Ok(PoolLedger::default());
        };
        let busy_runners = match item.get("busy") {
            None => Vec::new(),
            Some(AttributeValue::Ss(entries)) => entries
                .iter()
                .map(|e| {
                    e.split_once(':')
                        .map(|(_, runner)| runner.to_string())
                        .ok_or_else(|| corrupt(&key, "busy"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(corrupt(&key, "busy")),
        };
        Ok(PoolLedger {
            queued: counter(item, &key, "queued")?,
            running: counter(item, &key, "running")?,
            busy_runners,
        })
    }

    async fn expire(&self, now: u64, ttl: &LedgerTtl) -> Result<Expired, LedgerError> {
        let mut done = Expired::default();
        for job in self.scan_candidates(now).await? {
            match expiry(job.state, job.updated_at, now, ttl) {
                Expiry::Keep => {}
                Expiry::Forget => {
                    if self.forget(&job).await? {
                        done.forgotten += 1;
                    }
                }
                Expiry::Expire => {
                    match self
                        .write_transition(
                            job.job_id,
                            &job.pool,
                            Some(job.state),
                            JobState::Completed,
                            job.runner.as_deref(),
                            now,
                        )
                        .await
                    {
                        Ok(()) => done.expired += 1,
                        // A delivery moved it meanwhile: the next pass looks again.
                        Err(WriteError::Lost) => {}
                        Err(WriteError::Failed(e)) => return Err(e),
                    }
                }
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_items_round_trip() {
        let item = HashMap::from([
            ("pk".to_string(), s("job#14541957942")),
            ("pool".to_string(), s("linux")),
            ("state".to_string(), s("in_progress")),
            ("runner".to_string(), s("gh-i-0abc")),
            ("updated_at".to_string(), n(100)),
        ]);
        let job = parse_job(&item).expect("valid item");
        assert_eq!(job.job_id, 14_541_957_942);
        assert_eq!(job.state, JobState::InProgress);
        assert_eq!(job.runner.as_deref(), Some("gh-i-0abc"));
        let mut bad = item.clone();
        bad.insert("state".into(), s("started"));
        assert!(parse_job(&bad).is_err());
        let mut bad = item;
        bad.insert("pk".into(), s("pool#linux"));
        assert!(parse_job(&bad).is_err());
    }

    #[test]
    fn lost_race_backoff_is_bounded() {
        let total: Duration = (0..MAX_TRANSITION_ATTEMPTS)
            .map(|a| lost_race_backoff(14_541_957_942, a))
            .sum();
        assert!(
            total <= Duration::from_millis(20 * (1 + 2 + 4 + 8 + 16 * 4)),
            "{total:?}"
        );
        assert!(lost_race_backoff(1, 0) >= Duration::from_millis(5));
    }

    #[test]
    fn negative_counter_is_damage_not_zero() {
        let item = HashMap::from([("queued".to_string(), n(-1))]);
        assert!(counter(&item, "pool#p", "queued").is_err());
        assert_eq!(
            counter(&item, "pool#p", "running").expect("absent is zero"),
            0
        );
    }
}
