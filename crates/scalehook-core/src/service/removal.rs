//! Runner truth at the moment of removal: right before an instance leaves the pool, GitHub is
//! asked about that instance's runners (not the list the pass read earlier, which a runner
//! that registered or took a job since is missing from), every one must be idle, and then
//! all of them are deregistered before the instance goes.
//!
//! An instance with no runner online (none registered yet, or all offline) is never taken
//! out on one look: it must be past its boot grace, measured from its launch time (or, where
//! the cloud does not report one, from the first time scalehook saw it without a runner),
//! and have been seen so in an earlier pass. Those sightings live in the ledger (a small
//! named cursor per pool), so they hold across function instances.
//!
//! An instance scalehook minted a JIT runner for has the runner's id saved in the ledger
//! ([`crate::minted`]): its runners are read by that id (`GET .../runners/{id}`, a 404 means
//! the runner is gone), whatever the runner is called; without a saved id, by the naming
//! rule's exact names. The record is deleted once the instance is removed.

use super::Service;
use crate::config::PoolConfig;
use crate::fleet::{FleetState, Instance};
use crate::github::{runner_names, Runner, RunnerRemoval};
use crate::minted::Minted;
use std::collections::BTreeMap;

/// The ledger cursor holding a pool's sightings of instances without a runner online:
/// `removal-sightings:<pool>`, JSON `{instance id: [first seen (Unix s), pass]}`. Only the
/// pool's current candidates are kept, so it stays a few hundred bytes.
pub const SIGHTINGS_CURSOR: &str = "removal-sightings";

/// The first sighting of an instance with no runner online, and the pass that made it.
type Sightings = BTreeMap<String, (u64, String)>;

/// What one pass learned about removals: the sightings (read from the ledger on first use)
/// and whether they changed.
pub(super) struct Removals {
    /// Names this pass (`<holder>/<read>`): a sighting by another pass is a second one.
    pass: String,
    /// Runners of an ephemeral pool whose job completed: their instances are spent (the
    /// completed event says so), whatever GitHub lists.
    finished: Vec<String>,
    sightings: Option<Sightings>,
    changed: bool,
    /// Instances this pass was about to take out.
    considered: Vec<String>,
}

impl Removals {
    pub(super) fn new(pass: String, finished: Vec<String>) -> Self {
        Self {
            pass,
            finished,
            sightings: None,
            changed: false,
            considered: Vec::new(),
        }
    }
}

/// Why an instance stays (the `reason` of the `runner_removal_refused` metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kept {
    /// GitHub could not be read or a deregistration failed: nothing is known to be safe.
    Unknown,
    /// One of its runners runs a job (listed busy, or 422 on its deregistration).
    Busy,
    /// No runner online and still within boot grace, or seen so for the first time.
    Sighting,
}

impl Kept {
    /// The `reason` label of `runner_removal_refused` (only a busy runner is counted there:
    /// the others are the normal wait of a booting instance, or a failure logged already).
    pub(super) fn counted(self) -> Option<&'static str> {
        (self == Kept::Busy).then_some("busy")
    }
}

impl Service {
    /// Clears instance `id` for removal: asks GitHub for its runners now, keeps it if any is
    /// busy or anything fails, applies boot grace and the two sightings to an instance with
    /// no runner online, then deregisters all its runners. `Ok(n)`: it may go, `n` runners
    /// were deregistered. In webhook-only mode there is nothing to ask: `Ok(0)`.
    pub(super) async fn clear_for_removal(
        &self,
        pool: &PoolConfig,
        fleet: &FleetState,
        id: &str,
        listed: Option<&mut Vec<Runner>>,
        removals: &mut Removals,
    ) -> Result<u32, Kept> {
        if !self.github.enabled() {
            return Ok(0);
        }
        let Some(instance) = fleet.instances.iter().find(|i| i.id == id) else {
            return Ok(0);
        };
        removals.considered.push(id.to_string());
        let minted = self.minted(pool, instance).await;
        let runners = self
            .instance_runners(
                pool,
                instance,
                minted.as_ref(),
                listed.as_deref().map(Vec::as_slice),
            )
            .await
            .ok_or(Kept::Unknown)?;
        if let Some(busy) = runners.iter().find(|r| r.busy) {
            tracing::info!(target: "scalehook::github", runner = %busy.name, instance = %id, "runner is busy: its instance stays");
            if let Some(listed) = listed {
                listed
                    .iter_mut()
                    .filter(|r| r.id == busy.id)
                    .for_each(|r| r.busy = true);
            }
            return Err(Kept::Busy);
        }
        let spent = pool.ephemeral && removals.finished.iter().any(|f| instance.runs(f));
        if !spent && !runners.iter().any(|r| r.online) {
            let hooked = minted.as_ref().and_then(|m| m.launched_at);
            self.sighted(pool, instance, hooked, removals).await?;
        } else {
            self.forget_sighting(pool, id, removals).await;
        }
        // Every runner was idle a moment ago; one may still take a job before its DELETE:
        // GitHub refuses that one (422), and the instance stays with the rest deregistered,
        // which is the most a sequence of single-runner calls can do.
        let mut removed = 0;
        for r in &runners {
            let answer =
                tokio::time::timeout(self.config.cloud_timeout, self.github.remove_runner(r.id))
                    .await;
            match answer {
                Ok(Ok(RunnerRemoval::Removed)) => removed += 1,
                Ok(Ok(RunnerRemoval::Gone)) => {}
                Ok(Ok(RunnerRemoval::Busy)) => {
                    tracing::info!(target: "scalehook::github", runner = %r.name, instance = %id, "runner is busy (422): its instance stays");
                    return Err(Kept::Busy);
                }
                Ok(Err(e)) => {
                    tracing::warn!(target: "scalehook::github", error = %e, runner = %r.name, "deregistering a runner failed: its instance stays");
                    return Err(Kept::Unknown);
                }
                Err(_) => {
                    tracing::warn!(target: "scalehook::github", runner = %r.name, "deregistering a runner timed out: its instance stays");
                    return Err(Kept::Unknown);
                }
            }
        }
        if let Some(listed) = listed {
            let gone = |l: &Runner| {
                runners.iter().any(|r| r.id == l.id)
                    || (l.in_pool(&pool.name) && instance.runs(&l.name))
            };
            listed.retain(|l| !gone(l));
        }
        if let Some(s) = removals.sightings.as_mut() {
            removals.changed |= s.remove(id).is_some();
        }
        Ok(removed)
    }

    /// What scalehook minted for `instance`, from the ledger; `None` when nothing was saved
    /// or the ledger cannot be read now (its runners are then read by name).
    pub(super) async fn minted(&self, pool: &PoolConfig, instance: &Instance) -> Option<Minted> {
        let load = crate::minted::load(self.ledger.as_ref(), &pool.name, &instance.runner_key);
        match tokio::time::timeout(self.config.cloud_timeout, load).await {
            Ok(Ok(m)) => m,
            _ => {
                tracing::warn!(target: "scalehook::ledger", pool = %pool.name, instance = %instance.id, "reading the instance's minted runner ids failed: its runners are read by name");
                None
            }
        }
    }

    /// Deletes the minted record of instance `id` once it has left the fleet (best effort:
    /// a record left behind is one small ledger item).
    pub(super) async fn forget_minted(&self, pool: &PoolConfig, fleet: &FleetState, id: &str) {
        let Some(instance) = fleet.instances.iter().find(|i| i.id == id) else {
            return;
        };
        if !self.github.enabled() {
            return;
        }
        let forget = crate::minted::forget(self.ledger.as_ref(), &pool.name, &instance.runner_key);
        if !matches!(
            tokio::time::timeout(self.config.cloud_timeout, forget).await,
            Ok(Ok(()))
        ) {
            tracing::warn!(target: "scalehook::ledger", pool = %pool.name, instance = %id, "deleting a removed instance's minted runner ids failed");
        }
    }

    /// GitHub's runners of `instance`, read now: by the runner ids saved at minting, else by
    /// exact name (`runner_names`); and by id any runner of the pass's list that maps to the
    /// instance and was not read so. `None` when any read fails.
    pub(super) async fn instance_runners(
        &self,
        pool: &PoolConfig,
        instance: &Instance,
        minted: Option<&Minted>,
        listed: Option<&[Runner]>,
    ) -> Option<Vec<Runner>> {
        let limit = self.config.cloud_timeout;
        let mut out: Vec<Runner> = Vec::new();
        let saved = minted.map_or(&[][..], |m| m.runner_ids.as_slice());
        let names = match saved.is_empty() {
            true => runner_names(pool, &instance.runner_key),
            false => Vec::new(),
        };
        let mut by_id: Vec<u64> = saved.to_vec();
        by_id.extend(
            listed
                .unwrap_or(&[])
                .iter()
                .filter(|r| {
                    r.in_pool(&pool.name)
                        && instance.runs(&r.name)
                        && !names.iter().any(|n| n.eq_ignore_ascii_case(&r.name))
                })
                .map(|r| r.id),
        );
        by_id.sort_unstable();
        by_id.dedup();
        for id in by_id {
            match tokio::time::timeout(limit, self.github.runner(id)).await {
                Ok(Ok(Some(found))) => out.push(found),
                // 404: that runner is gone.
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(target: "scalehook::github", error = %e, runner_id = id, "reading an instance's runner failed: it stays");
                    return None;
                }
                Err(_) => {
                    tracing::warn!(target: "scalehook::github", runner_id = id, "reading an instance's runner timed out: it stays");
                    return None;
                }
            }
        }
        for name in &names {
            match tokio::time::timeout(limit, self.github.runners_named(name)).await {
                Ok(Ok(found)) => out.extend(found),
                Ok(Err(e)) => {
                    tracing::warn!(target: "scalehook::github", error = %e, runner = %name, "reading an instance's runners failed: it stays");
                    return None;
                }
                Err(_) => {
                    tracing::warn!(target: "scalehook::github", runner = %name, "reading an instance's runners timed out: it stays");
                    return None;
                }
            }
        }
        out.sort_by_key(|r| r.id);
        out.dedup_by_key(|r| r.id);
        Some(out)
    }

    /// Notes a sighting of `instance` with no runner online: `Ok` once it is past boot grace
    /// and an earlier pass saw it so too. `hooked`: the launch time the cloud's launch hook
    /// reported (saved with the minted runner ids), for a fleet whose describe has none.
    async fn sighted(
        &self,
        pool: &PoolConfig,
        instance: &Instance,
        hooked: Option<u64>,
        removals: &mut Removals,
    ) -> Result<(), Kept> {
        let now = self.clock.now();
        let pass = removals.pass.clone();
        let (seen_at, inserted, first_pass) = {
            let sightings = self.sightings(pool, removals).await?;
            let inserted = !sightings.contains_key(&instance.id);
            let entry = sightings
                .entry(instance.id.clone())
                .or_insert_with(|| (now, pass.clone()));
            (entry.0, inserted, entry.1 == pass)
        };
        removals.changed |= inserted;
        // Where the cloud's describe reports no launch time, the launch hook's time stands in
        // for it, else the first sighting: it comes after the launch, so grace is never cut
        // short.
        let since = instance.launched_at.or(hooked).unwrap_or(seen_at);
        if since.saturating_add(self.boot_grace_secs()) > now || first_pass {
            return Err(Kept::Sighting);
        }
        Ok(())
    }

    async fn forget_sighting(&self, pool: &PoolConfig, id: &str, removals: &mut Removals) {
        let dropped = match self.sightings(pool, removals).await {
            Ok(s) => s.remove(id).is_some(),
            Err(_) => false,
        };
        removals.changed |= dropped;
    }

    /// The pool's sightings, read from the ledger on first use in this pass.
    async fn sightings<'r>(
        &self,
        pool: &PoolConfig,
        removals: &'r mut Removals,
    ) -> Result<&'r mut Sightings, Kept> {
        if removals.sightings.is_none() {
            let name = format!("{SIGHTINGS_CURSOR}:{}", pool.name);
            let stored = tokio::time::timeout(self.config.cloud_timeout, self.ledger.cursor(&name))
                .await
                .map_err(|_| Kept::Unknown)?
                .map_err(|_| Kept::Unknown)?;
            // An unreadable value only forgets sightings (the next pass sees them again).
            let parsed = stored
                .and_then(|v| serde_json::from_str(&v).ok())
                .unwrap_or_default();
            removals.sightings = Some(parsed);
        }
        Ok(removals.sightings.get_or_insert_with(Sightings::new))
    }

    /// Writes the pool's sightings back when they changed, keeping only instances still in
    /// the fleet, and with `prune` (a reconcile pass that read GitHub's runners and so
    /// looked at every candidate) only those this pass was about to take out: a sighting
    /// counts only while the instance stays without a runner online. A failed write only
    /// delays a removal by a pass.
    pub(super) async fn save_sightings(
        &self,
        pool: &PoolConfig,
        fleet: &FleetState,
        removals: &mut Removals,
        prune: bool,
    ) {
        if prune && self.sightings(pool, removals).await.is_err() {
            return;
        }
        let considered = std::mem::take(&mut removals.considered);
        let Some(s) = removals.sightings.as_mut() else {
            return;
        };
        let before = s.len();
        s.retain(|id, _| {
            fleet.instances.iter().any(|i| &i.id == id) && (!prune || considered.contains(id))
        });
        if !removals.changed && s.len() == before {
            return;
        }
        let name = format!("{SIGHTINGS_CURSOR}:{}", pool.name);
        let value = serde_json::to_string(&*s).unwrap_or_default();
        let write = self.ledger.set_cursor(&name, &value);
        if !matches!(
            tokio::time::timeout(self.config.cloud_timeout, write).await,
            Ok(Ok(()))
        ) {
            tracing::warn!(target: "scalehook::ledger", pool = %pool.name, "storing removal sightings failed");
        }
        removals.changed = false;
    }
}
