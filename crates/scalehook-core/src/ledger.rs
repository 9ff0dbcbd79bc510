//! The job ledger: one record per job id, moving forward only, with exact per-pool counts.
//!
//! The state machine lives here as pure functions ([`JobState::advance`], [`count_delta`]) so
//! every backend (in memory, DynamoDB, Table Storage) applies exactly the same rules; a
//! backend only adds the atomicity its storage offers (a mutex, condition expressions, ETags).

use crate::config::LedgerTtl;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;

/// Where a job is in its life. The order is the only order a job may move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobState {
    /// Waiting for an environment approval: recorded, not demand.
    Waiting,
    /// Waiting for a runner: demand.
    Queued,
    /// A runner took it: that runner is busy.
    InProgress,
    /// Done (success, failure, cancelled, skipped, or expired by reconcile).
    Completed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Queued => "queued",
            JobState::InProgress => "in_progress",
            JobState::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "waiting" => JobState::Waiting,
            "queued" => JobState::Queued,
            "in_progress" => JobState::InProgress,
            "completed" => JobState::Completed,
            _ => return None,
        })
    }

    /// The forward-only rule: a job moves to `to` only if `to` is later than where it is.
    /// `None` means the event is stale (a duplicate, a redelivery or a late arrival).
    pub fn advance(current: Option<JobState>, to: JobState) -> Option<JobState> {
        match current {
            Some(c) if c >= to => None,
            _ => Some(to),
        }
    }
}

/// What one delivery asks the ledger to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub job_id: u64,
    /// The pool the job routes to. A record keeps the pool of its first sighting, so a
    /// config change never moves counts between pools half-way through a job.
    pub pool: String,
    pub to: JobState,
    /// The runner, for `in_progress` (and `completed`, informational).
    pub runner: Option<String>,
    /// Unix seconds of the delivery's processing.
    pub at: u64,
    /// `owner/name` of the job's repository, kept so reconcile can ask the jobs API.
    pub repository: Option<String>,
}

/// What recording a transition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The record moved (or was created) from `from` to the transition's state. `since` is
    /// when the record entered `from` (Unix seconds), so a queued -> in_progress transition
    /// gives the job's queue wait exactly once.
    Applied {
        from: Option<JobState>,
        since: Option<u64>,
    },
    /// Nothing changed: the record was already at `current` or later.
    Stale { current: JobState },
}

impl Recorded {
    pub fn is_applied(&self) -> bool {
        matches!(self, Recorded::Applied { .. })
    }
}

/// One pool's account: the figures the policy needs, read in O(1) whatever the number of
/// jobs. The busy runners (one per running job) are not part of it: they are read with
/// [`Ledger::busy_runners`], only by a pass whose decision needs the complete list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolLedger {
    pub queued: u32,
    pub running: u32,
    /// The change stamp: moved by every transition that changes the account (its counts or
    /// its busy runners; only a waiting job's transitions change neither), never moved back.
    /// Two reads with the same stamp saw the same counts *and* the same busy runners, even
    /// when concurrent transitions left `queued`/`running` where they were.
    pub changes: u64,
}

/// How a transition changes a pool's counters: (queued delta, running delta).
/// Counters only ever change together with the record, so they cannot go negative.
pub fn count_delta(from: Option<JobState>, to: JobState) -> (i32, i32) {
    let weight = |s: Option<JobState>| match s {
        Some(JobState::Queued) => (1, 0),
        Some(JobState::InProgress) => (0, 1),
        _ => (0, 0),
    };
    let (q0, r0) = weight(from);
    let (q1, r1) = weight(Some(to));
    (q1 - q0, r1 - r0)
}

/// The runner a record holds after moving to `to`. Only `in_progress` names the runner
/// (queued payloads sometimes carry a bogus one); a completed record keeps the runner it
/// started on, because that is the one that leaves the busy list.
pub fn recorded_runner(
    existing: Option<&str>,
    to: JobState,
    event: Option<&str>,
) -> Option<String> {
    match to {
        JobState::InProgress => event.map(str::to_string),
        JobState::Completed => existing.or(event).map(str::to_string),
        JobState::Waiting | JobState::Queued => None,
    }
}

/// A ledger record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub job_id: u64,
    pub pool: String,
    pub state: JobState,
    pub runner: Option<String>,
    /// Unix seconds of the last applied transition.
    pub updated_at: u64,
    /// `owner/name`, when the delivery carried it.
    pub repository: Option<String>,
}

/// Which records a reconcile pass expires or forgets at `now` (pure; backends share it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Keep,
    /// A stale queued/in-progress record: move it to completed (counts drop).
    Expire,
    /// A completed record past the retention window: delete it.
    Forget,
}

pub fn expiry(record_state: JobState, updated_at: u64, now: u64, ttl: &LedgerTtl) -> Expiry {
    let age = now.saturating_sub(updated_at);
    match record_state {
        JobState::Queued | JobState::Waiting if age >= ttl.queued.as_secs() => Expiry::Expire,
        JobState::InProgress if age >= ttl.in_progress.as_secs() => Expiry::Expire,
        JobState::Completed if age >= ttl.retention.as_secs() => Expiry::Forget,
        _ => Expiry::Keep,
    }
}

/// What an expiry pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Stale queued/waiting/in-progress records moved to completed.
    pub expired: u32,
    /// Completed records past retention removed.
    pub forgotten: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The storage could not be reached or refused the call; the delivery should be
    /// answered 5xx so it can be redelivered.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    /// Optimistic concurrency lost too many times in a row.
    #[error("ledger contention: {0}")]
    Contention(String),
}

/// The job ledger. Implementations must make `record` atomic with the pool counters:
/// concurrent and duplicate deliveries leave counts exact.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Applies the forward-only rule to the job's record and the pool's counters.
    async fn record(&self, transition: &Transition) -> Result<Recorded, LedgerError>;
    /// The pool's current account: counts and change stamp, the same size and cost however
    /// many jobs run (every delivery reads it, at least twice).
    async fn pool(&self, pool: &str) -> Result<PoolLedger, LedgerError>;
    /// Runner names of the pool's in-progress jobs, complete (one entry per job; a name may
    /// repeat when a runner's old job has not been seen to complete yet), read page by page.
    /// It grows with the running jobs, so only passes that may take instances out or clear
    /// their protection read it (see [`crate::policy::Busy`]). Read after [`Ledger::pool`], it
    /// holds at least the runners of that account's jobs that are still running.
    async fn busy_runners(&self, pool: &str) -> Result<Vec<String>, LedgerError>;
    /// Expires stale records and forgets old completed ones (see [`expiry`]).
    async fn expire(&self, now: u64, ttl: &LedgerTtl) -> Result<Expired, LedgerError>;

    /// One job's record, when the backend can read it (an ephemeral pool's `completed`
    /// without a runner name takes the runner from it). Default: not supported.
    async fn record_of(&self, _job_id: u64) -> Result<Option<JobRecord>, LedgerError> {
        Ok(None)
    }

    /// Up to `limit` queued/waiting/in-progress records last updated at or before `before`,
    /// oldest first: reconcile re-checks them with the jobs API.
    async fn unfinished_before(
        &self,
        _before: u64,
        _limit: usize,
    ) -> Result<Vec<JobRecord>, LedgerError> {
        Ok(Vec::new())
    }

    /// Takes the pool's convergence lease for `holder` until `until` (Unix seconds) if nobody
    /// else holds an unexpired one. True when `holder` now holds it. Backends without a
    /// shared store answer true: the service's in-process lock is then the only serializer.
    async fn acquire_lease(
        &self,
        _pool: &str,
        _holder: &str,
        _now: u64,
        _until: u64,
    ) -> Result<bool, LedgerError> {
        Ok(true)
    }

    /// Gives the lease back (only if `holder` still holds it).
    async fn release_lease(&self, _pool: &str, _holder: &str) -> Result<(), LedgerError> {
        Ok(())
    }

    /// A named cursor kept across passes (e.g. the newest hook delivery already examined).
    async fn cursor(&self, _name: &str) -> Result<Option<String>, LedgerError> {
        Ok(None)
    }

    /// Stores a named cursor.
    async fn set_cursor(&self, _name: &str, _value: &str) -> Result<(), LedgerError> {
        Ok(())
    }

    /// Deletes a named cursor (none is fine). The default stores an empty value, which
    /// every reader takes as none; backends that store cursors delete the item.
    async fn delete_cursor(&self, name: &str) -> Result<(), LedgerError> {
        self.set_cursor(name, "").await
    }
}

/// The in-memory ledger: a mutex over a map, for local runs, replay, simulate and tests.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    jobs: HashMap<u64, JobRecord>,
    pools: HashMap<String, PoolLedger>,
    /// Busy runners per pool (one entry per in-progress job that names its runner).
    busy: HashMap<String, Vec<String>>,
    /// Convergence leases: pool -> (holder, until).
    leases: HashMap<String, (String, u64)>,
    cursors: HashMap<String, String>,
}

impl MemoryLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of one record (tests and diagnostics).
    pub fn job(&self, job_id: u64) -> Option<JobRecord> {
        self.lock().jobs.get(&job_id).cloned()
    }

    /// How many job records are held.
    pub fn pool_len(&self) -> usize {
        self.lock().jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pool_len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // A panic while holding the lock cannot leave a half-applied transition (each
        // mutation below is completed before any call that could panic), so recover.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl MemoryInner {
    fn apply(&mut self, pool: &str, from: Option<JobState>, to: JobState, runner: Option<&str>) {
        let (dq, dr) = count_delta(from, to);
        if (dq, dr) == (0, 0) {
            // A waiting job's transitions: neither counts nor busy runners change.
            return;
        }
        let counts = self.pools.entry(pool.to_string()).or_default();
        counts.queued = counts.queued.saturating_add_signed(dq);
        counts.running = counts.running.saturating_add_signed(dr);
        counts.changes += 1;
        let busy = self.busy.entry(pool.to_string()).or_default();
        if from == Some(JobState::InProgress) {
            if let Some(r) = runner {
                if let Some(i) = busy.iter().position(|b| b == r) {
                    busy.swap_remove(i);
                }
            }
        }
        if to == JobState::InProgress {
            if let Some(r) = runner {
                busy.push(r.to_string());
            }
        }
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn record(&self, t: &Transition) -> Result<Recorded, LedgerError> {
        let mut inner = self.lock();
        let existing = inner.jobs.get(&t.job_id).cloned();
        let current = existing.as_ref().map(|r| r.state);
        let Some(to) = JobState::advance(current, t.to) else {
            return Ok(Recorded::Stale {
                current: current.unwrap_or(t.to),
            });
        };
        let pool = existing
            .as_ref()
            .map(|r| r.pool.clone())
            .unwrap_or_else(|| t.pool.clone());
        let runner = recorded_runner(
            existing.as_ref().and_then(|r| r.runner.as_deref()),
            to,
            t.runner.as_deref(),
        );
        inner.apply(&pool, current, to, runner.as_deref());
        let since = existing.as_ref().map(|r| r.updated_at);
        let repository = existing
            .as_ref()
            .and_then(|r| r.repository.clone())
            .or_else(|| t.repository.clone());
        inner.jobs.insert(
            t.job_id,
            JobRecord {
                job_id: t.job_id,
                pool,
                state: to,
                runner,
                updated_at: t.at,
                repository,
            },
        );
        Ok(Recorded::Applied {
            from: current,
            since,
        })
    }

    async fn pool(&self, pool: &str) -> Result<PoolLedger, LedgerError> {
        Ok(self.lock().pools.get(pool).cloned().unwrap_or_default())
    }

    async fn busy_runners(&self, pool: &str) -> Result<Vec<String>, LedgerError> {
        Ok(self.lock().busy.get(pool).cloned().unwrap_or_default())
    }

    async fn record_of(&self, job_id: u64) -> Result<Option<JobRecord>, LedgerError> {
        Ok(self.job(job_id))
    }

    async fn unfinished_before(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<JobRecord>, LedgerError> {
        let inner = self.lock();
        let mut out: Vec<JobRecord> = inner
            .jobs
            .values()
            .filter(|r| r.state != JobState::Completed && r.updated_at <= before)
            .cloned()
            .collect();
        out.sort_by_key(|r| (r.updated_at, r.job_id));
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
        let mut inner = self.lock();
        match inner.leases.get(pool) {
            Some((h, u)) if h != holder && *u > now => Ok(false),
            _ => {
                inner
                    .leases
                    .insert(pool.to_string(), (holder.to_string(), until));
                Ok(true)
            }
        }
    }

    async fn release_lease(&self, pool: &str, holder: &str) -> Result<(), LedgerError> {
        let mut inner = self.lock();
        if inner.leases.get(pool).is_some_and(|(h, _)| h == holder) {
            inner.leases.remove(pool);
        }
        Ok(())
    }

    async fn cursor(&self, name: &str) -> Result<Option<String>, LedgerError> {
        Ok(self.lock().cursors.get(name).cloned())
    }

    async fn set_cursor(&self, name: &str, value: &str) -> Result<(), LedgerError> {
        self.lock()
            .cursors
            .insert(name.to_string(), value.to_string());
        Ok(())
    }

    async fn delete_cursor(&self, name: &str) -> Result<(), LedgerError> {
        self.lock().cursors.remove(name);
        Ok(())
    }

    async fn expire(&self, now: u64, ttl: &LedgerTtl) -> Result<Expired, LedgerError> {
        let mut inner = self.lock();
        let mut done = Expired::default();
        let ids: Vec<u64> = inner.jobs.keys().copied().collect();
        for id in ids {
            let Some(rec) = inner.jobs.get(&id).cloned() else {
                continue;
            };
            match expiry(rec.state, rec.updated_at, now, ttl) {
                Expiry::Keep => {}
                Expiry::Forget => {
                    inner.jobs.remove(&id);
                    done.forgotten += 1;
                }
                Expiry::Expire => {
                    inner.apply(
                        &rec.pool,
                        Some(rec.state),
                        JobState::Completed,
                        rec.runner.as_deref(),
                    );
                    if let Some(r) = inner.jobs.get_mut(&id) {
                        r.state = JobState::Completed;
                        r.updated_at = now;
                    }
                    done.expired += 1;
                }
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(job_id: u64, to: JobState, runner: Option<&str>) -> Transition {
        Transition {
            job_id,
            pool: "p".into(),
            to,
            runner: runner.map(String::from),
            at: 100,
            repository: None,
        }
    }

    #[test]
    fn advance_is_forward_only() {
        use JobState::*;
        assert_eq!(JobState::advance(None, Queued), Some(Queued));
        assert_eq!(
            JobState::advance(Some(Queued), InProgress),
            Some(InProgress)
        );
        assert_eq!(JobState::advance(Some(Completed), Queued), None);
        assert_eq!(JobState::advance(Some(Queued), Queued), None);
        assert_eq!(JobState::advance(Some(Waiting), Queued), Some(Queued));
        assert_eq!(JobState::advance(Some(InProgress), Waiting), None);
    }

    #[tokio::test]
    async fn lifecycle_counts() {
        let l = MemoryLedger::new();
        assert!(l
            .record(&t(1, JobState::Queued, None))
            .await
            .expect("ok")
            .is_applied());
        assert!(!l
            .record(&t(1, JobState::Queued, None))
            .await
            .expect("ok")
            .is_applied());
        let p = l.pool("p").await.expect("ok");
        assert_eq!((p.queued, p.running), (1, 0));
        l.record(&t(1, JobState::InProgress, Some("r1")))
            .await
            .expect("ok");
        let p = l.pool("p").await.expect("ok");
        assert_eq!((p.queued, p.running), (0, 1));
        assert_eq!(
            l.busy_runners("p").await.expect("ok"),
            vec!["r1".to_string()]
        );
        l.record(&t(1, JobState::Completed, None))
            .await
            .expect("ok");
        let p = l.pool("p").await.expect("ok");
        assert_eq!((p.queued, p.running), (0, 0));
        assert!(l.busy_runners("p").await.expect("ok").is_empty());
        // late queued after completed: no-op
        assert_eq!(
            l.record(&t(1, JobState::Queued, None)).await.expect("ok"),
            Recorded::Stale {
                current: JobState::Completed
            }
        );
        assert_eq!(l.pool("p").await.expect("ok").queued, 0);
    }

    #[tokio::test]
    async fn lease_is_exclusive_until_released_or_expired() {
        let l = MemoryLedger::new();
        assert!(l.acquire_lease("p", "a", 100, 110).await.expect("ok"));
        assert!(!l.acquire_lease("p", "b", 105, 115).await.expect("ok"));
        assert!(
            l.acquire_lease("q", "b", 105, 115).await.expect("ok"),
            "per pool"
        );
        assert!(
            l.acquire_lease("p", "a", 105, 115).await.expect("ok"),
            "renewal"
        );
        l.release_lease("p", "b").await.expect("ok");
        assert!(
            !l.acquire_lease("p", "b", 106, 116).await.expect("ok"),
            "not b's"
        );
        l.release_lease("p", "a").await.expect("ok");
        assert!(l.acquire_lease("p", "b", 106, 116).await.expect("ok"));
        assert!(
            l.acquire_lease("p", "a", 116, 126).await.expect("ok"),
            "expired"
        );
    }

    #[tokio::test]
    async fn unfinished_before_is_oldest_first_and_bounded() {
        let l = MemoryLedger::new();
        for (id, at) in [(1, 300), (2, 100), (3, 200), (4, 50)] {
            let mut tr = t(id, JobState::Queued, None);
            tr.at = at;
            l.record(&tr).await.expect("ok");
        }
        let mut done = t(4, JobState::Completed, None);
        done.at = 60;
        l.record(&done).await.expect("ok");
        let ids: Vec<u64> = l
            .unfinished_before(250, 10)
            .await
            .expect("ok")
            .iter()
            .map(|r| r.job_id)
            .collect();
        assert_eq!(ids, vec![2, 3]);
        assert_eq!(l.unfinished_before(1000, 1).await.expect("ok").len(), 1);
        assert_eq!(l.cursor("c").await.expect("ok"), None);
        l.set_cursor("c", "42").await.expect("ok");
        assert_eq!(l.cursor("c").await.expect("ok").as_deref(), Some("42"));
        l.delete_cursor("c").await.expect("ok");
        assert_eq!(l.cursor("c").await.expect("ok"), None);
    }

    #[tokio::test]
    async fn completed_for_unknown_job_never_goes_negative() {
        let l = MemoryLedger::new();
        l.record(&t(9, JobState::Completed, None))
            .await
            .expect("ok");
        let p = l.pool("p").await.expect("ok");
        assert_eq!((p.queued, p.running), (0, 0));
        // the late queued and in_progress are ignored
        l.record(&t(9, JobState::Queued, None)).await.expect("ok");
        l.record(&t(9, JobState::InProgress, Some("r")))
            .await
            .expect("ok");
        assert_eq!(l.pool("p").await.expect("ok"), PoolLedger::default());
    }

    #[tokio::test]
    async fn the_change_stamp_moves_with_every_change_of_the_account() {
        let l = MemoryLedger::new();
        l.record(&t(1, JobState::Queued, None)).await.expect("ok");
        l.record(&t(2, JobState::InProgress, Some("r2")))
            .await
            .expect("ok");
        let before = l.pool("p").await.expect("ok");
        // Job 1 starts on r1, job 2 completes, job 3 is queued: the same counts, other
        // busy runners; only the stamp tells the accounts apart.
        l.record(&t(1, JobState::InProgress, Some("r1")))
            .await
            .expect("ok");
        l.record(&t(2, JobState::Completed, None))
            .await
            .expect("ok");
        l.record(&t(3, JobState::Queued, None)).await.expect("ok");
        let after = l.pool("p").await.expect("ok");
        assert_eq!(
            (before.queued, before.running),
            (after.queued, after.running)
        );
        assert_ne!(before, after);
        assert_eq!(after.changes, before.changes + 3);
        assert_eq!(
            l.busy_runners("p").await.expect("ok"),
            vec!["r1".to_string()]
        );
        // Stale events and a waiting job change nothing: the stamp stays.
        l.record(&t(3, JobState::Queued, None)).await.expect("ok");
        l.record(&t(4, JobState::Waiting, None)).await.expect("ok");
        assert_eq!(l.pool("p").await.expect("ok"), after);
    }

    #[tokio::test]
    async fn record_keeps_first_pool() {
        let l = MemoryLedger::new();
        l.record(&t(1, JobState::Queued, None)).await.expect("ok");
        let mut moved = t(1, JobState::InProgress, Some("r"));
        moved.pool = "other".into();
        l.record(&moved).await.expect("ok");
        assert_eq!(l.pool("p").await.expect("ok").running, 1);
        assert_eq!(l.pool("other").await.expect("ok").running, 0);
    }

    #[tokio::test]
    async fn expiry_drops_stale_and_forgets_old() {
        let ttl = LedgerTtl {
            queued: std::time::Duration::from_secs(10),
            in_progress: std::time::Duration::from_secs(20),
            retention: std::time::Duration::from_secs(30),
        };
        let l = MemoryLedger::new();
        l.record(&t(1, JobState::Queued, None)).await.expect("ok");
        l.record(&t(2, JobState::Queued, None)).await.expect("ok");
        l.record(&t(2, JobState::InProgress, Some("r")))
            .await
            .expect("ok");
        assert_eq!(l.expire(105, &ttl).await.expect("ok"), Expired::default());
        assert_eq!(l.expire(110, &ttl).await.expect("ok").expired, 1);
        assert_eq!(l.pool("p").await.expect("ok").queued, 0);
        assert_eq!(l.pool("p").await.expect("ok").running, 1);
        assert_eq!(l.expire(120, &ttl).await.expect("ok").expired, 1);
        let p = l.pool("p").await.expect("ok");
        assert_eq!((p.queued, p.running), (0, 0));
        assert!(l.busy_runners("p").await.expect("ok").is_empty());
        // completed at 110 and 120; forgotten 30 s later
        assert_eq!(l.expire(150, &ttl).await.expect("ok").forgotten, 2);
        assert!(l.is_empty());
    }
}
