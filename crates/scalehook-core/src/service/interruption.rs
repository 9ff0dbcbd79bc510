//! Spot interruptions in the service: [`Service::interruption`] acts on a cloud's notice
//! (the pure decision is [`crate::interruption::decide`]), a `completed` delivery records
//! the job a reclaim interrupted, re-runs it once (`rerun_interrupted`), and routes its
//! re-run to the pool's on-demand `overflow` pool ([`crate::reroute::route_attempt`]);
//! reconcile asks again for re-runs GitHub refused while their run went on.
//!
//! The pool's interruptions are one ledger cursor (`interrupted:<pool>`), read and written
//! only while holding the pool's lease, so two processes never lose each other's writes.

use super::converge::{Pass, PassInput};
use super::Service;
use crate::config::{Capacity, PoolConfig};
use crate::event::WorkflowJobEvent;
use crate::github::{Rerun, RunnerRemoval};
use crate::interruption::{self, Completion, InstanceAction, Interruptions, Notice, RerunState};
use crate::policy::Trigger;
use crate::report::CloudFailure;
use crate::reroute::{route_attempt, Attempt};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Re-runs reconcile asks for per pool and pass, at most.
pub const MAX_RERUNS_PER_PASS: usize = 5;

/// What a notice did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InterruptionReport {
    pub instance: String,
    pub kind: &'static str,
    /// The spot pool whose fleet has the instance; `None`: no pool has it (ignored).
    pub pool: Option<String>,
    /// `replaced`, `kept_out_of_capacity` or `ignored`.
    pub action: &'static str,
    pub runners_deregistered: u32,
    /// Busy runners whose jobs are interrupted (their completions are recorded).
    pub interrupted_runners: Vec<String>,
    /// The desired capacity the pass after the notice left (as capacity: without instances
    /// kept out of it).
    pub desired_after: Option<u32>,
}

impl Service {
    /// Acts on a notice that the cloud reclaims (or may soon reclaim) an instance: finds the
    /// spot pool whose fleet has it, and under that pool's lease deregisters its idle
    /// runners, replaces it when no job runs there or else keeps it out of capacity, notes
    /// it in the pool's interruptions; then a pass over the pool launches the replacement.
    /// A failed ledger, fleet or GitHub call is an error naming what failed (the adapter
    /// fails the invocation, so the event is retried).
    pub async fn interruption(&self, notice: Notice) -> Result<InterruptionReport, String> {
        self.on_notice(notice).await.map_err(|f| f.message())
    }

    async fn on_notice(&self, notice: Notice) -> Result<InterruptionReport, CloudFailure> {
        let mut report = InterruptionReport {
            instance: notice.instance_id.clone(),
            kind: notice.kind.as_str(),
            action: "ignored",
            ..InterruptionReport::default()
        };
        let limit = self.config.cloud_timeout;
        let mut found = None;
        for pool in self
            .config
            .pools
            .iter()
            .filter(|p| p.capacity == Capacity::Spot)
        {
            let state = tokio::time::timeout(limit, self.fleet.describe(pool))
                .await
                .map_err(|_| CloudFailure::Timeout)??;
            if let Some(i) = state.instances.iter().find(|i| i.id == notice.instance_id) {
                found = Some((pool, i.clone()));
                break;
            }
        }
        let Some((pool, instance)) = found else {
            tracing::info!(target: "scalehook::interruption", instance = %notice.instance_id, kind = notice.kind.as_str(), "no spot pool has this instance: ignored");
            return Ok(report);
        };
        report.pool = Some(pool.name.clone());
        let started = Instant::now();
        self.hold_lease(pool, started).await?;
        let acted = async {
            let name = cursor_name(pool);
            let github = async {
                match self.github.enabled() {
                    true => {
                        let minted = self.minted(pool, &instance).await;
                        self.instance_runners(pool, &instance, minted.as_ref(), None)
                            .await
                    }
                    false => Some(Vec::new()),
                }
            };
            let (runners, busy, stored) = tokio::join!(
                github,
                self.ledger.busy_runners(&pool.name),
                self.ledger.cursor(&name)
            );
            let (busy, stored) = (busy?, stored?);
            let mut plan = match &runners {
                Some(runners) => {
                    interruption::decide(&notice, &pool.name, &instance, runners, &busy)
                }
                // GitHub could not be read: nothing is known to be idle, so nothing is
                // deregistered or removed; the replacement still starts.
                None => interruption::Plan {
                    deregister: Vec::new(),
                    interrupted_runners: Vec::new(),
                    instance: InstanceAction::KeepOutOfCapacity,
                },
            };
            // Without an App nothing can be deregistered; a rebalance recommendation is no
            // certain reclaim, so its instance is not taken out under a runner that may be
            // taking a job.
            if !self.github.enabled() && notice.kind == interruption::NoticeKind::Rebalance {
                plan.instance = InstanceAction::KeepOutOfCapacity;
            }
            for id in plan.deregister.clone() {
                match tokio::time::timeout(limit, self.github.remove_runner(id)).await {
                    Ok(Ok(RunnerRemoval::Removed)) => report.runners_deregistered += 1,
                    Ok(Ok(RunnerRemoval::Gone)) => {}
                    // It took a job since the read: its instance stays with it.
                    Ok(Ok(RunnerRemoval::Busy)) => {
                        plan.instance = InstanceAction::KeepOutOfCapacity;
                        if let (interruption::NoticeKind::Interruption, Some(r)) =
                            (notice.kind, runners.iter().flatten().find(|r| r.id == id))
                        {
                            plan.interrupted_runners.push(r.name.clone());
                        }
                    }
                    _ => {
                        tracing::warn!(target: "scalehook::github", runner = id, instance = %instance.id, "deregistering a runner of a noticed instance failed: it stays");
                        plan.instance = InstanceAction::KeepOutOfCapacity;
                    }
                }
            }
            if plan.instance == InstanceAction::Replace {
                // Replaced, not removed: the cloud launches the replacement at once.
                match self.fleet.replace_instance(pool, &instance.id).await {
                    Err(crate::fleet::FleetError::Rejected(_)) => {
                        self.fleet.remove_instance(pool, &instance.id).await?
                    }
                    other => other?,
                }
            }
            let mut memory = Interruptions::parse(stored.as_deref());
            let now = self.clock.now();
            memory.prune(now);
            memory.note(&notice, &plan, now);
            self.ledger.set_cursor(&name, &memory.to_json()).await?;
            Ok::<_, CloudFailure>(plan)
        };
        let acted = tokio::time::timeout(limit, acted).await;
        let _ = self.ledger.release_lease(&pool.name, &self.holder).await;
        let plan = acted.map_err(|_| CloudFailure::Timeout)??;
        report.action = match plan.instance {
            InstanceAction::Replace => "replaced",
            InstanceAction::KeepOutOfCapacity => "kept_out_of_capacity",
        };
        report.interrupted_runners = plan.interrupted_runners;
        tracing::info!(target: "scalehook::interruption", pool = %pool.name, instance = %instance.id, kind = notice.kind.as_str(), action = report.action, busy_runners = report.interrupted_runners.len(), "spot notice");
        // The pass: the instance kept out of capacity makes the pool short by one, so it
        // scales out now (a removed one likewise).
        let pass = self
            .converge(
                pool,
                PassInput {
                    trigger: Trigger::Demand,
                    recorded: None,
                    finished: None,
                    started_on: None,
                    runners: None,
                    started,
                },
            )
            .await?;
        if let Pass::Applied { desired, .. } = pass {
            report.desired_after = Some(desired);
        }
        Ok(report)
    }

    /// The pool a job routes to, given that a re-run of a job a reclaim interrupted goes
    /// to the pool's on-demand `overflow` pool. Only a re-run (`run_attempt` above 1) of a
    /// job routed by labels to a pool with an overflow reads the pool's interruptions; a
    /// failed read keeps the label route.
    pub(super) async fn route_rerun<'c>(
        &'c self,
        pool: &'c PoolConfig,
        job: &WorkflowJobEvent,
    ) -> &'c PoolConfig {
        let j = &job.workflow_job;
        if pool.overflow.is_none() || j.labels.is_empty() || j.run_attempt.is_none_or(|a| a < 2) {
            return pool;
        }
        let stored = tokio::time::timeout(
            self.config.cloud_timeout,
            self.ledger.cursor(&cursor_name(pool)),
        )
        .await;
        let Ok(Ok(stored)) = stored else {
            tracing::warn!(target: "scalehook::ledger", pool = %pool.name, "reading interruptions failed: a re-run keeps its label route");
            return pool;
        };
        let keys = Interruptions::parse(stored.as_deref()).keys();
        let attempt = Attempt {
            run_id: j.run_id,
            name: j.name.as_deref(),
            run_attempt: j.run_attempt,
        };
        route_attempt(&self.config, &j.labels, attempt, &keys).unwrap_or(pool)
    }

    /// A `completed` delivery of a spot pool's job: when its runner was busy on an
    /// instance the cloud warned about and it did not succeed, the job is recorded
    /// interrupted (counted once), and with `rerun_interrupted` its re-run is asked for.
    /// Reads the pool's interruptions first without the lease: most completions match
    /// nothing and cost that one read.
    pub(super) async fn interrupted_completion(
        &self,
        pool: &PoolConfig,
        job: &WorkflowJobEvent,
        started: Instant,
    ) -> Result<(), CloudFailure> {
        let j = &job.workflow_job;
        let completion = Completion {
            job_id: j.id,
            run_id: j.run_id,
            repository: job.repository.as_ref().map(|r| r.full_name.as_str()),
            name: j.name.as_deref(),
            runner: j.runner(),
            conclusion: j.conclusion.as_deref(),
        };
        if pool.capacity != Capacity::Spot || completion.runner.is_none() {
            return Ok(());
        }
        let name = cursor_name(pool);
        let now = self.clock.now();
        let rerun = pool.rerun_interrupted && self.github.enabled();
        let peek = Interruptions::parse(self.ledger.cursor(&name).await?.as_deref());
        if peek.clone().complete(&completion, rerun, now).is_none() {
            return Ok(());
        }
        self.hold_lease(pool, started).await?;
        let recorded = async {
            let mut memory = Interruptions::parse(self.ledger.cursor(&name).await?.as_deref());
            let job = memory.complete(&completion, rerun, now).cloned();
            if job.is_some() {
                memory.prune(now);
                self.ledger.set_cursor(&name, &memory.to_json()).await?;
            }
            Ok::<_, CloudFailure>(job)
        }
        .await;
        let _ = self.ledger.release_lease(&pool.name, &self.holder).await;
        let Some(job) = recorded? else {
            return Ok(());
        };
        self.metrics.job_interrupted(&pool.name);
        tracing::info!(target: "scalehook::interruption", pool = %pool.name, job_id = job.job_id, run_id = job.run_id, instance = %job.instance, rerun = ?job.rerun, "job interrupted by a spot reclaim");
        if job.rerun == RerunState::Pending {
            self.rerun(pool, &[job.job_id], started).await;
        }
        Ok(())
    }

    /// Reconcile's share: asks again for the re-runs GitHub refused while their runs went
    /// on, at most [`MAX_RERUNS_PER_PASS`] per pool.
    pub(super) async fn retry_reruns(&self) {
        for pool in self
            .config
            .pools
            .iter()
            .filter(|p| p.capacity == Capacity::Spot && p.rerun_interrupted)
        {
            let stored = tokio::time::timeout(
                self.config.cloud_timeout,
                self.ledger.cursor(&cursor_name(pool)),
            )
            .await;
            let Ok(Ok(stored)) = stored else {
                tracing::warn!(target: "scalehook::ledger", pool = %pool.name, "reading interruptions failed: re-runs wait for the next pass");
                continue;
            };
            let pending = Interruptions::parse(stored.as_deref()).pending(MAX_RERUNS_PER_PASS);
            if !pending.is_empty() {
                self.rerun(pool, &pending, Instant::now()).await;
            }
        }
    }

    /// Asks GitHub to re-run `jobs`, each at most once: its state is written `Requesting`
    /// (under the lease) before the call and the answer after it. A process that dies in
    /// between leaves `Requesting`, which nobody asks again: a job is never re-run twice,
    /// at the price of a re-run lost to a crash (logged as `requesting` in the record).
    async fn rerun(&self, pool: &PoolConfig, jobs: &[u64], started: Instant) {
        let name = cursor_name(pool);
        let claimed = self
            .update_interruptions(pool, started, |m| {
                let mut claimed = Vec::new();
                for &id in jobs {
                    if m.set_rerun(id, RerunState::Pending, RerunState::Requesting) {
                        if let Some(j) = m.job(id) {
                            claimed.push((id, j.repository.clone()));
                        }
                    }
                }
                claimed
            })
            .await;
        let claimed = match claimed {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(target: "scalehook::interruption", pool = %pool.name, error = %e.message(), "claiming re-runs failed: asked on a later pass");
                return;
            }
        };
        let mut answers = Vec::with_capacity(claimed.len());
        for (id, repository) in claimed {
            let answer = tokio::time::timeout(
                self.config.cloud_timeout,
                self.github.rerun_job(&repository, id),
            )
            .await;
            let to = match answer {
                Ok(Ok(Rerun::Started)) => RerunState::Started,
                Ok(Ok(Rerun::NotYet)) => RerunState::Pending,
                Ok(Err(e)) => {
                    tracing::warn!(target: "scalehook::github", pool = %pool.name, job_id = id, error = %e, "re-running an interrupted job failed: not asked again");
                    RerunState::Failed
                }
                Err(_) => {
                    tracing::warn!(target: "scalehook::github", pool = %pool.name, job_id = id, "re-running an interrupted job timed out: not asked again (it may have been queued)");
                    RerunState::Failed
                }
            };
            if to == RerunState::Started {
                self.metrics.job_rerun(&pool.name);
                tracing::info!(target: "scalehook::interruption", pool = %pool.name, job_id = id, "interrupted job re-run");
            }
            answers.push((id, to));
        }
        if answers.is_empty() {
            return;
        }
        let written = self
            .update_interruptions(pool, Instant::now(), |m| {
                for (id, to) in &answers {
                    m.set_rerun(*id, RerunState::Requesting, *to);
                }
            })
            .await;
        if let Err(e) = written {
            tracing::warn!(target: "scalehook::interruption", pool = %pool.name, cursor = %name, error = %e.message(), "recording re-run answers failed: those jobs stay `requesting` and are not asked again");
        }
    }

    /// Reads, changes and writes the pool's interruptions under its lease.
    async fn update_interruptions<T>(
        &self,
        pool: &PoolConfig,
        started: Instant,
        change: impl FnOnce(&mut Interruptions) -> T,
    ) -> Result<T, CloudFailure> {
        let name = cursor_name(pool);
        self.hold_lease(pool, started).await?;
        let result = async {
            let mut memory = Interruptions::parse(self.ledger.cursor(&name).await?.as_deref());
            let before = memory.clone();
            let out = change(&mut memory);
            if memory != before {
                self.ledger.set_cursor(&name, &memory.to_json()).await?;
            }
            Ok::<_, CloudFailure>(out)
        };
        let result = tokio::time::timeout(self.config.cloud_timeout, result)
            .await
            .map_err(|_| CloudFailure::Timeout);
        let _ = self.ledger.release_lease(&pool.name, &self.holder).await;
        result?
    }

    /// Takes the pool's lease, waiting (bounded by the pass budget from `started`) while
    /// another process's pass holds it.
    async fn hold_lease(&self, pool: &PoolConfig, started: Instant) -> Result<(), CloudFailure> {
        let mut wait = Duration::from_millis(20);
        loop {
            let now = self.clock.now();
            if self
                .ledger
                .acquire_lease(&pool.name, &self.holder, now, now + self.lease_secs())
                .await?
            {
                return Ok(());
            }
            if started.elapsed() + wait >= self.pass_budget() {
                return Err(CloudFailure::Timeout);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(250));
        }
    }
}

fn cursor_name(pool: &PoolConfig) -> String {
    format!("{}:{}", interruption::CURSOR, pool.name)
}
