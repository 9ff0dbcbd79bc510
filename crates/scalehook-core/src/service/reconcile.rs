//! The scheduled reconcile pass: with a GitHub App, repair from GitHub first (re-check stale
//! records with the jobs API, redeliver failed deliveries), expire stale records, converge
//! every pool (the same pass a delivery runs, with the `Reconcile` trigger), deregister
//! stranded runners, and observe the state the metrics report.

use super::converge::{listing_scope, ListingScope, Pass, PassInput};
use super::{LogFormat, Service};
use crate::clock::unix_millis;
use crate::config::PoolConfig;
use crate::fleet::FleetState;
use crate::github::{JobLookup, Runner, RunnerRemoval};
use crate::ledger::{Expired, JobState, LedgerError, Transition};
use crate::policy::{CapacityAction, Trigger};
use crate::report::{CloudFailure, GitHubReconcile, PoolReconcile, ReconcileReport};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The ledger cursor of the newest hook delivery reconcile has examined.
pub const DELIVERIES_CURSOR: &str = "hook-deliveries";
/// Pages of hook deliveries reconcile reads per pass, at most.
pub const MAX_DELIVERY_PAGES: usize = 3;
/// Failed deliveries reconcile redelivers per pass, at most.
pub const MAX_REDELIVERIES: usize = 25;
/// Queued/in-progress records reconcile re-checks with the jobs API per pass, at most.
pub const MAX_JOB_RECHECKS: usize = 20;
/// The ledger cursor of the failed deliveries reconcile tracks until they are repaired
/// (JSON, see [`TrackedDelivery`]).
pub const REDELIVERIES_CURSOR: &str = "hook-redeliveries";
/// Where a walk of the deliveries cut short by [`MAX_DELIVERY_PAGES`] goes on next pass
/// (`<page cursor> <newest id seen>`), so no delivery between it and the stored cursor
/// goes unread; empty when the walk reached the cursor.
pub const DELIVERIES_RESUME_CURSOR: &str = "hook-deliveries-resume";
/// Redelivery requests per failed delivery (its first and the retries), at most.
pub const MAX_REDELIVERY_ATTEMPTS: u32 = 5;
/// Failed deliveries tracked at once, at most (the oldest beyond are given up on).
pub const MAX_TRACKED_REDELIVERIES: usize = 100;
/// The ledger cursor of the stale-record re-check: the last record checked
/// (`<updated_at>:<job_id>`), so each pass goes on where the last one stopped.
pub const RECHECK_CURSOR: &str = "job-recheck";
/// Stale records the re-check rotates over, at most (oldest first). The scan reads each
/// candidate record (on Table Storage one request each, within the expiry budget), so it
/// stays small: a backlog beyond it is re-checked as the oldest leave it.
pub const MAX_RECHECK_SCAN: usize = 100;
/// The re-check stops while GitHub's `x-ratelimit-remaining` is below this, leaving the
/// rest of the hour's budget to scale-in (runner listing, deregistration) and JIT runners.
pub const RECHECK_RATE_RESERVE: u64 = 500;
/// GitHub keeps hook deliveries (and redelivers them) for 3 days.
const DELIVERY_WINDOW_SECS: u64 = 3 * 24 * 3600;

/// A failed `workflow_job` delivery reconcile redelivers until it is repaired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
struct TrackedDelivery {
    /// The delivery's GUID: its redeliveries share it, so a 2xx one repairs it.
    guid: String,
    /// The delivery to redeliver (the newest failed one of the GUID).
    id: u64,
    /// When the original was delivered (GitHub redelivers for 3 days after).
    since: u64,
    /// Redelivery requests made so far.
    attempts: u32,
    /// The last request was accepted: waiting for the redelivery's outcome.
    sent: bool,
}

impl GitHubReconcile {
    /// A ledger step of reconcile within `limit`: its value, or `None` with the first
    /// failure kept for the report.
    async fn within<T>(
        &mut self,
        limit: Duration,
        step: impl std::future::Future<Output = Result<T, LedgerError>>,
    ) -> Option<T> {
        match tokio::time::timeout(limit, step).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.error.get_or_insert_with(|| e.to_string());
                None
            }
            Err(_) => {
                self.error
                    .get_or_insert_with(|| CloudFailure::Timeout.message());
                None
            }
        }
    }
}

impl Service {
    /// The scheduled pass: expire stale ledger records, then converge every pool to its
    /// target. A failing pool does not stop the others; the report says which failed.
    pub async fn reconcile(&self) -> ReconcileReport {
        let mut github = self.github.enabled().then(GitHubReconcile::default);
        let requests_before = self.github.rate_limit().requests;
        // With a GitHub App, lost deliveries are repaired first: stale records are re-checked
        // with the jobs API (TTL expiry below stays the fallback when GitHub is unreachable),
        // and failed deliveries are redelivered.
        if let Some(g) = github.as_mut() {
            self.recheck_jobs(g).await;
            self.redeliver_failed(g).await;
            // Re-runs GitHub refused while their runs went on (`rerun_interrupted`).
            self.retry_reruns().await;
        }
        let now = self.clock.now();
        // Bounded like every other cloud call, so a hung ledger cannot hold the pass until
        // the function's own timeout kills it (and the pools' convergence with it).
        let expiry = tokio::time::timeout(
            self.config.cloud_timeout,
            self.ledger.expire(now, &self.config.ledger),
        )
        .await;
        let (expired, ledger_error) = match expiry {
            Ok(Ok(e)) => (e, None),
            Ok(Err(e)) => (Expired::default(), Some(e.to_string())),
            Err(_) => (Expired::default(), Some(CloudFailure::Timeout.message())),
        };
        // GitHub's runners once per scope (the organization, or a pool's own runner group),
        // each read before the fleet of the pools that use it is described: then every
        // runner listed whose instance is alive has that instance in the description.
        let mut listings: Vec<(ListingKey, Option<Vec<Runner>>)> = Vec::new();
        let mut pools = Vec::with_capacity(self.config.pools.len());
        for pool in &self.config.pools {
            let runners = match github.as_mut() {
                Some(g) => {
                    let key = listing_key(pool);
                    let cached = listings
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map(|(_, r)| r.clone());
                    let r = match cached {
                        Some(r) => r,
                        None => {
                            let r = self.read_runners(pool, self.listing_bound()).await;
                            listings.push((key, r.clone()));
                            r
                        }
                    };
                    if r.is_none() && g.error.is_none() {
                        g.error = Some("listing runners failed: no orphan replaced".into());
                    }
                    r
                }
                None => None,
            };
            let result = tokio::time::timeout(
                self.config.cloud_timeout,
                self.converge(
                    pool,
                    PassInput {
                        trigger: Trigger::Reconcile,
                        recorded: None,
                        finished: None,
                        started_on: None,
                        runners: runners.clone(),
                        started: Instant::now(),
                    },
                ),
            )
            .await
            .unwrap_or(Err(CloudFailure::Timeout));
            pools.push(match result {
                Ok(Pass::Applied {
                    first,
                    desired,
                    fleet,
                    runners_removed,
                    ..
                }) => {
                    self.metrics.scale_action(&pool.name, first.capacity.name());
                    if let (Some(g), Some(all)) = (github.as_mut(), runners.as_deref()) {
                        g.runners_removed += runners_removed;
                        g.runners_removed +=
                            self.remove_stranded_runners(pool, &fleet, all, g).await;
                    }
                    PoolReconcile {
                        pool: pool.name.clone(),
                        action: Some(first.capacity.name()),
                        before: Some(first.current),
                        after: Some(desired),
                        error: None,
                    }
                }
                Ok(Pass::Unchanged { last, .. }) => PoolReconcile {
                    pool: pool.name.clone(),
                    action: Some(CapacityAction::Hold.name()),
                    before: Some(last.desired),
                    after: Some(last.desired),
                    error: None,
                },
                Ok(Pass::Deferred { .. }) => {
                    self.metrics.scale_action(&pool.name, "deferred");
                    PoolReconcile {
                        pool: pool.name.clone(),
                        action: Some("deferred"),
                        before: None,
                        after: None,
                        error: None,
                    }
                }
                Err(f) => {
                    self.metrics.cloud_error(&pool.name, f.outcome());
                    PoolReconcile {
                        pool: pool.name.clone(),
                        action: None,
                        before: None,
                        after: None,
                        error: Some(f.message()),
                    }
                }
            });
        }
        if let Some(store) = &self.unread_configs {
            let (fleet, pools) = (self.fleet.as_ref(), &self.config.pools);
            let timeout = self.config.cloud_timeout;
            let _ = crate::housekeeping::run(store.as_ref(), fleet, pools, now, timeout).await;
        }
        if let Some(g) = github.as_mut() {
            g.requests = self
                .github
                .rate_limit()
                .requests
                .saturating_sub(requests_before);
        }
        let report = ReconcileReport {
            expired: expired.expired,
            forgotten: expired.forgotten,
            ledger_error,
            pools,
            github,
        };
        self.metrics.reconciled(report.ok());
        if let Some(g) = &report.github {
            self.metrics.github_reconcile(g);
        }
        self.observe_state(now).await;
        if self.log == LogFormat::Emf {
            let ms = unix_millis();
            for pool in &self.config.pools {
                if let Some(g) = self.metrics.pool(&pool.name) {
                    println!("{}", crate::metrics::emf_pool_line(&pool.name, &g, ms));
                }
            }
            println!("{}", crate::metrics::emf_reconcile_line(&report, ms));
        } else if self.log != LogFormat::Off {
            tracing::info!(
                target: "scalehook::reconcile",
                ok = report.ok(),
                report = %serde_json::to_string(&report).unwrap_or_default(),
                "reconcile"
            );
        }
        report
    }

    /// Re-checks queued/in-progress records older than `recheck_after` with the jobs API and
    /// records GitHub's state (completed, or in progress on its runner; a job GitHub no longer has
    /// in a repository the installation sees: completed; one in a repository it cannot see:
    /// unknown, left to TTL expiry).
    /// Up to [`MAX_JOB_RECHECKS`] records per pass, rotating over the oldest
    /// [`MAX_RECHECK_SCAN`] stale ones: each pass goes on after the last record the previous
    /// one checked (ledger cursor [`RECHECK_CURSOR`]) and wraps around, so a backlog of `n`
    /// is covered within `ceil(n / MAX_JOB_RECHECKS)` passes even while older records stay
    /// queued on GitHub. A pass stops early at half the cloud timeout, when GitHub's
    /// remaining rate limit is below [`RECHECK_RATE_RESERVE`], or when GitHub or the ledger
    /// fails (that record is then the next pass's first; a job GitHub refuses is skipped).
    async fn recheck_jobs(&self, g: &mut GitHubReconcile) {
        let now = self.clock.now();
        let started = Instant::now();
        let limit = self.config.cloud_timeout;
        let before = now.saturating_sub(self.recheck_after_secs());
        let read = async {
            let records = self
                .ledger
                .unfinished_before(before, MAX_RECHECK_SCAN)
                .await?;
            let cursor = self.ledger.cursor(RECHECK_CURSOR).await?;
            Ok::<_, LedgerError>((records, cursor))
        };
        let Some((mut records, cursor)) = g.within(limit, read).await else {
            return;
        };
        let key = |r: &crate::ledger::JobRecord| (r.updated_at, r.job_id);
        records.sort_by_key(key);
        let after: Option<(u64, u64)> = cursor.as_deref().and_then(|c| {
            let (at, id) = c.split_once(':')?;
            Some((at.parse().ok()?, id.parse().ok()?))
        });
        let start = after.map_or(0, |a| records.partition_point(|r| key(r) <= a));
        let mut last: Option<(u64, u64)> = None;
        for i in 0..records.len().min(MAX_JOB_RECHECKS) {
            let record = &records[(start + i) % records.len()];
            if started.elapsed() >= self.pass_budget() {
                break;
            }
            if self
                .github
                .rate_limit()
                .remaining
                .is_some_and(|r| r < RECHECK_RATE_RESERVE)
            {
                g.error
                    .get_or_insert_with(|| "GitHub rate limit low: job re-checks deferred".into());
                break;
            }
            let Some(repository) = record.repository.as_deref() else {
                last = Some(key(record));
                continue;
            };
            g.rechecked += 1;
            let answer =
                tokio::time::timeout(limit, self.github.job_state(repository, record.job_id)).await;
            let lookup = match answer {
                Ok(Ok(s)) => s,
                Ok(Err(e @ crate::github::GitHubError::Rejected(_))) => {
                    // This job only (e.g. a repository the App cannot read): go on.
                    g.error.get_or_insert_with(|| e.to_string());
                    last = Some(key(record));
                    continue;
                }
                Ok(Err(e)) => {
                    // GitHub unreachable: TTL expiry stays the fallback.
                    g.error.get_or_insert_with(|| e.to_string());
                    break;
                }
                Err(_) => {
                    g.error
                        .get_or_insert_with(|| "the jobs API timed out".to_string());
                    break;
                }
            };
            let (to, runner) = match lookup {
                // GitHub has no such job in a repository the installation sees.
                JobLookup::Gone => (JobState::Completed, None),
                // 404 from a repository the installation cannot see: unknown, never
                // completed (TTL expiry stays the fallback).
                JobLookup::NotVisible => {
                    g.error.get_or_insert_with(|| {
                        format!("repository {repository} is not visible to the installation: job {} not re-checked", record.job_id)
                    });
                    last = Some(key(record));
                    continue;
                }
                JobLookup::Found(s) => match s.status.as_str() {
                    "completed" => (JobState::Completed, s.runner_name),
                    "in_progress" => (JobState::InProgress, s.runner_name),
                    _ => (record.state, None),
                },
            };
            if to > record.state {
                let transition = Transition {
                    job_id: record.job_id,
                    pool: record.pool.clone(),
                    to,
                    runner,
                    at: now,
                    repository: None,
                };
                match g.within(limit, self.ledger.record(&transition)).await {
                    Some(r) if r.is_applied() => g.advanced += 1,
                    Some(_) => {}
                    None => break,
                }
            }
            last = Some(key(record));
        }
        if let Some((at, id)) = last {
            let value = format!("{at}:{id}");
            let write = self.ledger.set_cursor(RECHECK_CURSOR, &value);
            g.within(limit, write).await;
        }
    }

    /// Redelivers the App hook's failed `workflow_job` deliveries until each is repaired.
    /// Deliveries newer than the ledger's cursor are read newest first (stopping at the
    /// cursor, at GitHub's 3-day window or after [`MAX_DELIVERY_PAGES`] pages); a delivery
    /// failed when its status was not 2xx and no delivery with the same GUID succeeded. Each
    /// failed original is tracked (ledger cursor [`REDELIVERIES_CURSOR`]) until a 2xx
    /// delivery of its GUID is seen: a failed request, or a redelivery that failed again, is
    /// retried on a later pass, up to [`MAX_REDELIVERY_ATTEMPTS`] requests and while GitHub
    /// still redelivers it (3 days); then it is given up on (counted; TTL expiry and the
    /// jobs API re-check stay the fallback). At most [`MAX_REDELIVERIES`] requests per pass,
    /// fewest attempts first, then oldest; a failure other than a refusal of that one
    /// delivery (GitHub unavailable, rate limited, timed out) ends the pass's requests.
    async fn redeliver_failed(&self, g: &mut GitHubReconcile) {
        let now = self.clock.now();
        let started = Instant::now();
        let limit = self.config.cloud_timeout;
        let read = async {
            let cursor = self.ledger.cursor(DELIVERIES_CURSOR).await?;
            let tracked = self.ledger.cursor(REDELIVERIES_CURSOR).await?;
            let resume = self.ledger.cursor(DELIVERIES_RESUME_CURSOR).await?;
            Ok::<_, LedgerError>((cursor, tracked, resume))
        };
        let Some((stored, tracked_text, resume)) = g.within(limit, read).await else {
            return;
        };
        let stored = stored.and_then(|c| c.parse::<u64>().ok());
        // A walk cut short last pass goes on from its page, down to the stored cursor.
        let had_resume = resume.as_deref().is_some_and(|r| !r.is_empty());
        let resume: Option<(String, u64)> = resume.as_deref().and_then(|r| {
            let (page, newest) = r.split_once(' ')?;
            Some((page.to_string(), newest.parse().ok()?))
        });
        let mut tracked: Vec<TrackedDelivery> = tracked_text
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default();
        let mut newest: Option<u64> = resume.as_ref().map(|(_, n)| *n);
        let mut succeeded: std::collections::HashSet<String> = Default::default();
        // GUID -> (its newest failed delivery, the oldest one's time, an original among them).
        let mut failed: std::collections::HashMap<String, (u64, u64, bool)> = Default::default();
        let mut page_cursor: Option<String> = resume.map(|(page, _)| page);
        // Set when the page bound cut the walk short: where the next pass goes on.
        let mut cut_short: Option<String> = None;
        'pages: for n in 0..MAX_DELIVERY_PAGES {
            let page =
                match tokio::time::timeout(limit, self.github.deliveries(page_cursor.as_deref()))
                    .await
                {
                    Ok(Ok(p)) => p,
                    Ok(Err(e)) => {
                        g.error.get_or_insert_with(|| e.to_string());
                        return;
                    }
                    Err(_) => {
                        g.error
                            .get_or_insert_with(|| "listing deliveries timed out".into());
                        return;
                    }
                };
            for d in &page.deliveries {
                if stored.is_some_and(|c| d.id <= c)
                    || d.delivered_at.saturating_add(DELIVERY_WINDOW_SECS) < now
                {
                    break 'pages;
                }
                newest = newest.max(Some(d.id));
                if d.event != "workflow_job" {
                    continue;
                }
                if (200..300).contains(&d.status_code) {
                    succeeded.insert(d.guid.clone());
                } else if !succeeded.contains(&d.guid) {
                    // Newest first: the first failure seen of a GUID is its newest.
                    let f = failed
                        .entry(d.guid.clone())
                        .or_insert((d.id, d.delivered_at, false));
                    f.1 = f.1.min(d.delivered_at);
                    f.2 |= !d.redelivery;
                }
            }
            match page.next {
                Some(next) if n + 1 == MAX_DELIVERY_PAGES => cut_short = Some(next),
                Some(next) => page_cursor = Some(next),
                None => break,
            }
        }
        // What the new deliveries say about the tracked ones: repaired (a 2xx of the GUID),
        // or failed again (retry the newest failure).
        tracked.retain(|t| !succeeded.contains(&t.guid));
        for t in &mut tracked {
            if let Some((id, _, _)) = failed.remove(&t.guid) {
                t.id = t.id.max(id);
                t.sent = false;
            }
        }
        // New failed originals (a failed redelivery of an untracked GUID is not ours, or
        // one given up on: it is left to the jobs API re-check).
        let mut new: Vec<TrackedDelivery> = failed
            .into_iter()
            .filter(|(guid, (_, _, original))| *original && !succeeded.contains(guid))
            .map(|(guid, (id, since, _))| TrackedDelivery {
                guid,
                id,
                since,
                attempts: 0,
                sent: false,
            })
            .collect();
        tracked.append(&mut new);
        tracked.sort_by_key(|t| (t.since, t.id));
        // Given up on: past GitHub's window, attempts spent (and the last one failed, or
        // never heard of), or beyond the tracking bound (the oldest go first).
        let before = tracked.len();
        tracked.retain(|t| {
            t.since.saturating_add(DELIVERY_WINDOW_SECS) >= now
                && (t.sent || t.attempts < MAX_REDELIVERY_ATTEMPTS)
        });
        let excess = tracked.len().saturating_sub(MAX_TRACKED_REDELIVERIES);
        tracked.drain(..excess);
        let mut abandoned = before - tracked.len();
        // Fewest attempts first, then oldest: a delivery that keeps failing goes behind the
        // ones not tried yet, so it cannot hold them up.
        let mut order: Vec<usize> = (0..tracked.len()).filter(|i| !tracked[*i].sent).collect();
        order.sort_by_key(|i| (tracked[*i].attempts, tracked[*i].since, tracked[*i].id));
        order.truncate(MAX_REDELIVERIES);
        let mut keep = vec![true; tracked.len()];
        for i in order {
            // Slow answers must not hold up the rest of reconcile: what is left waits for
            // the next pass (the tracked list below is saved either way).
            if started.elapsed() >= self.pass_budget() {
                break;
            }
            let t = &mut tracked[i];
            t.attempts += 1;
            let stop = match tokio::time::timeout(limit, self.github.redeliver(t.id)).await {
                Ok(Ok(())) => {
                    t.sent = true;
                    g.redelivered += 1;
                    false
                }
                Ok(Err(e)) => {
                    g.redelivery_failures += 1;
                    let refused = matches!(e, crate::github::GitHubError::Rejected(_));
                    g.error.get_or_insert_with(|| e.to_string());
                    !refused
                }
                Err(_) => {
                    g.redelivery_failures += 1;
                    g.error.get_or_insert_with(|| "redelivery timed out".into());
                    true
                }
            };
            if !t.sent && t.attempts >= MAX_REDELIVERY_ATTEMPTS {
                tracing::warn!(target: "scalehook::github", delivery = t.id, guid = %t.guid, attempts = t.attempts, "redelivery failed every attempt: given up (the jobs API re-check and TTL expiry remain)");
                keep[i] = false;
                abandoned += 1;
            }
            if stop {
                break;
            }
        }
        let mut keep = keep.into_iter();
        tracked.retain(|_| keep.next().unwrap_or(true));
        g.redeliveries_abandoned += u32::try_from(abandoned).unwrap_or(u32::MAX);
        g.redeliveries_pending = u32::try_from(tracked.len()).unwrap_or(u32::MAX);
        // Every failed delivery read is tracked now. When the walk reached the stored
        // cursor, the cursor may pass all of them; when the page bound cut it short, the
        // cursor stays and the next pass goes on from where this one stopped.
        let text = serde_json::to_string(&tracked).unwrap_or_default();
        let changed = tracked_text.as_deref().unwrap_or("[]") != text;
        let resuming = resume_text_of(&cut_short, newest);
        let write = async {
            if changed {
                self.ledger.set_cursor(REDELIVERIES_CURSOR, &text).await?;
            }
            match &resuming {
                Some(r) => self.ledger.set_cursor(DELIVERIES_RESUME_CURSOR, r).await?,
                None => {
                    if let Some(c) = newest.filter(|c| stored.is_none_or(|s| *c > s)) {
                        self.ledger
                            .set_cursor(DELIVERIES_CURSOR, &c.to_string())
                            .await?;
                    }
                    if had_resume {
                        self.ledger.set_cursor(DELIVERIES_RESUME_CURSOR, "").await?;
                    }
                }
            }
            Ok::<_, LedgerError>(())
        };
        g.within(limit, write).await;
    }

    /// Deregisters the pool's offline, idle runners whose instance is gone (in `fleet`, the
    /// description read after `runners` was listed, so a live instance would be in it).
    async fn remove_stranded_runners(
        &self,
        pool: &PoolConfig,
        fleet: &FleetState,
        runners: &[Runner],
        g: &mut GitHubReconcile,
    ) -> u32 {
        let mut removed = 0;
        for r in runners.iter().filter(|r| {
            r.in_pool(&pool.name)
                && !r.online
                && !r.busy
                && !fleet.instances.iter().any(|i| i.runs(&r.name))
        }) {
            match tokio::time::timeout(self.config.cloud_timeout, self.github.remove_runner(r.id))
                .await
            {
                Ok(Ok(RunnerRemoval::Removed)) => removed += 1,
                Ok(Ok(RunnerRemoval::Busy)) => {
                    self.metrics.runner_removal_refused(&pool.name, "busy");
                }
                Ok(Ok(RunnerRemoval::Gone)) => {}
                Ok(Err(e)) => {
                    g.error.get_or_insert_with(|| e.to_string());
                    break;
                }
                Err(_) => break,
            }
        }
        removed
    }

    /// Reconcile's cheap SLI pass (metrics only, never fails the pass): queued jobs waiting
    /// past the threshold per pool, from the ledger's oldest unfinished records, and the
    /// GitHub client's rate limit; written as EMF lines on Lambda.
    async fn observe_state(&self, now: u64) {
        let threshold = self.metrics.wait_threshold_secs();
        let unfinished = tokio::time::timeout(
            self.config.cloud_timeout,
            self.ledger
                .unfinished_before(now.saturating_sub(threshold), 1000),
        )
        .await;
        if let Ok(Ok(records)) = unfinished {
            let pools: Vec<&str> = self.config.pools.iter().map(|p| p.name.as_str()).collect();
            let counts = crate::metrics::queued_records_by_pool(&records);
            self.metrics.set_waiting_over(&pools, &counts);
        }
        if self.github.enabled() {
            let limit = self.github.rate_limit();
            self.metrics.github(limit.remaining, limit.requests);
            self.metrics
                .github_secondary_limits(limit.secondary_limited);
        }
        if self.log == LogFormat::Emf {
            for line in crate::metrics::emf_state_lines(&self.metrics, unix_millis()) {
                println!("{line}");
            }
        } else if self.log == LogFormat::Tracing {
            // The same figures under the same names, for log-based dashboards (Azure).
            tracing::info!(
                target: "scalehook::state",
                state = %crate::metrics::state_json(&self.metrics),
                "state"
            );
        }
    }
}

/// The resume point of a deliveries walk cut short: its next page and the newest delivery
/// seen since the stored cursor.
fn resume_text_of(cut_short: &Option<String>, newest: Option<u64>) -> Option<String> {
    let page = cut_short.as_ref()?;
    // A page cursor with a space would not read back; GitHub's are opaque tokens without.
    (!page.contains(' ')).then(|| format!("{page} {}", newest.unwrap_or(0)))
}

/// What a reconcile pass lists once and shares between pools: the organization's runners,
/// or one runner group's (by id, or by the name still to be looked up).
type ListingKey = (ListingScope, u64, Option<String>);

fn listing_key(pool: &PoolConfig) -> ListingKey {
    match listing_scope(pool) {
        ListingScope::Organization => (ListingScope::Organization, 0, None),
        ListingScope::Group => (
            ListingScope::Group,
            pool.runner_group_id,
            pool.runner_group_to_look_up()
                .map(|n| n.to_ascii_lowercase()),
        ),
    }
}

impl Service {
    /// How long reconcile's runner listing may take: more than a delivery's (one cloud
    /// timeout), since no webhook answer waits on it, and the client already gives each
    /// page its own budget; still bounded, so the pools' convergence runs in the same pass.
    fn listing_bound(&self) -> Duration {
        self.config.cloud_timeout * LISTING_BOUND_TIMEOUTS
    }
}

/// Reconcile's runner listing is bounded at this many cloud timeouts (14 s at the default
/// 7 s: 46 pages of 100 runners at 300 ms each).
pub const LISTING_BOUND_TIMEOUTS: u32 = 2;
