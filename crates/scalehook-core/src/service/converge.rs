//! The convergence pass of one pool (invariant 10 in ARCHITECTURE.md): under the in-process
//! pool lock and the ledger's per-pool lease, read the account, decide (the pure
//! [`crate::policy::decide`]), apply (deregister runners first, then remove or replace
//! instances), give the lease back and read again; the debounce that lets a delivery skip
//! its own pass when one of this process already covered it.

use super::removal::Removals;
use super::{work_left, Service};
use crate::config::PoolConfig;
use crate::fleet::{FleetError, FleetState};
use crate::github::{Runner, DEFAULT_RUNNER_GROUP};
use crate::ledger::{LedgerError, PoolLedger};
use crate::metrics::PoolGauges;
use crate::policy::{decide, Busy, CapacityAction, Decision, Seen, Trigger};
use crate::report::CloudFailure;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One pool's in-process state.
#[derive(Debug, Default)]
pub(super) struct PoolSlot {
    /// Held for the whole pass; what the last successful pass converged to.
    last: tokio::sync::Mutex<Option<LastPass>>,
    /// Account reads started by this process's passes. A delivery notes the count once its
    /// record is durable: a read numbered above it started later, so it saw that record.
    pub(super) reads: AtomicU64,
}

impl PoolSlot {
    /// Numbers the next account read.
    fn next_read(&self) -> u64 {
        self.reads.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// What the last successful pass of this process converged a pool to.
#[derive(Debug, Clone)]
pub(super) struct LastPass {
    pub(super) account: PoolLedger,
    /// The number of the read that gave `account` (the last one that did).
    pub(super) read: u64,
    pub(super) at: u64,
    pub(super) desired: u32,
    pub(super) target: u32,
}

/// A delivery whose pool account equals the one this process converged to at most this
/// many seconds ago makes no fleet call (the decision would be the same).
pub const DEBOUNCE_SECS: u64 = 5;

/// At most this many decide-and-apply iterations per pass (re-reads included).
pub const MAX_PASS_ITERATIONS: u32 = 32;

/// How a convergence pass ended.
#[derive(Debug)]
pub(super) enum Pass {
    /// Decisions applied. `first` is the first decision of the pass (the delivery's own);
    /// `desired` the capacity after the last one.
    Applied {
        account: PoolLedger,
        /// The number of the last account read that gave `account`.
        read: u64,
        first: Decision,
        desired: u32,
        fleet: FleetState,
        runners_removed: u32,
    },
    /// Nothing to do: the account equals what this process converged to moments ago.
    Unchanged { account: PoolLedger, last: LastPass },
    /// Another process holds the pool's lease; its pass (or the next one) reads this record.
    Deferred { account: PoolLedger },
}

/// What a pass starts from.
pub(super) struct PassInput {
    pub(super) trigger: Trigger,
    /// For a delivery: the slot's read count once its record was durable, and whether the
    /// record was stale (a duplicate). `None` for reconcile.
    pub(super) recorded: Option<(u64, bool)>,
    /// The runner whose ephemeral job completed (ephemeral pools only).
    pub(super) finished: Option<String>,
    /// The runner the delivery's own `in_progress` names: the busy runner a demand pass
    /// knows without reading the ledger's busy list ([`Busy::Known`]).
    pub(super) started_on: Option<String>,
    /// GitHub's runners, when the caller read them already (reconcile reads them once for
    /// every pool, before any fleet is described).
    pub(super) runners: Option<Vec<Runner>>,
    pub(super) started: Instant,
}

/// What applying one decision did.
struct Applied {
    desired: u32,
    runners_removed: u32,
    /// Instances the decision took out that stayed (see [`Service::clear_for_removal`]).
    kept: u32,
    /// Instances the decision chose but left in place: the pass's budget ran out first.
    left: u32,
}

impl Service {
    /// Converges one pool: under the in-process pool lock and the ledger's pool lease, reads
    /// the account, decides and applies until the account stops changing (see invariant 10).
    pub(super) async fn converge(
        &self,
        pool: &PoolConfig,
        input: PassInput,
    ) -> Result<Pass, CloudFailure> {
        let pool_slot = self.pool_slots.get(&pool.name);
        let mut slot = match pool_slot {
            Some(s) => Some(s.last.lock().await),
            None => None,
        };
        let now = self.clock.now();
        let read = pool_slot.map_or(0, PoolSlot::next_read);
        // The last pass of this process, when a delivery may skip its own (debounce).
        let recent = match (slot.as_deref(), input.recorded) {
            (Some(Some(last)), Some(recorded))
                if input.finished.is_none()
                    && now.saturating_sub(last.at) <= DEBOUNCE_SECS
                    && (last.desired == last.target
                        || (input.trigger == Trigger::Demand && last.desired >= last.target)) =>
            {
                Some((last, recorded))
            }
            _ => None,
        };
        let (account, lease) = if recent.is_some() {
            (self.ledger.pool(&pool.name).await?, None)
        } else {
            // No pass to lean on: the account read and the lease attempt both only need to
            // follow the record, so they go together (one round trip, not two). A pass
            // that holds the lease re-reads after giving it back (invariant 10), so an
            // account read a moment before the lease was won misses nothing.
            match tokio::join!(self.ledger.pool(&pool.name), self.take_lease(pool)) {
                (Ok(account), Ok(acquired)) => (account, Some(acquired)),
                (Err(e), Ok(true)) => {
                    let _ = self.ledger.release_lease(&pool.name, &self.holder).await;
                    return Err(e.into());
                }
                (Err(e), _) | (_, Err(e)) => return Err(e.into()),
            }
        };
        if let Some((last, (reads, duplicate))) = recent {
            // Seen by the last pass: it read after this record was durable; or a duplicate
            // whose pool account is the one that pass converged to.
            if last.read > reads || (duplicate && last.account == account) {
                return Ok(Pass::Unchanged {
                    account,
                    last: last.clone(),
                });
            }
        }
        let mut acquired = match lease {
            Some(acquired) => acquired,
            None => self.take_lease(pool).await?,
        };
        if !acquired && input.finished.is_some() {
            // An ephemeral completion names the instance to take out, which no other pass
            // can know: wait (bounded) for the holder to finish rather than defer.
            let mut wait = Duration::from_millis(20);
            while !acquired && input.started.elapsed() + wait < self.pass_budget() {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(250));
                acquired = self.take_lease(pool).await?;
            }
        }
        if !acquired {
            // Counted in metrics as the decision `deferred` (by the delivery's report, or
            // by reconcile).
            return Ok(Pass::Deferred { account });
        }
        let result = self.pass(pool, pool_slot, input, (account, read)).await;
        if let Some(last) = slot.as_deref_mut() {
            *last = match &result {
                Ok(Pass::Applied {
                    account,
                    first,
                    desired,
                    read,
                    ..
                }) => Some(LastPass {
                    account: account.clone(),
                    read: *read,
                    at: now,
                    desired: *desired,
                    target: first.target,
                }),
                // A failed pass may have half-applied: the next delivery decides afresh.
                _ => None,
            };
        }
        result
    }

    async fn take_lease(&self, pool: &PoolConfig) -> Result<bool, LedgerError> {
        let now = self.clock.now();
        self.ledger
            .acquire_lease(&pool.name, &self.holder, now, now + self.lease_secs())
            .await
    }

    /// The body of a pass, holding the lease. Reads the fleet once (and GitHub's runners
    /// once, when a decision may take instances out), keeps the local copies current as it
    /// applies, and stops when the account equals the one last applied. After giving the
    /// lease back it reads the account once more: a delivery recorded after the last read
    /// found the lease taken and left its record to this pass, so if the account moved the
    /// pass takes the lease again and goes on (bounded in iterations and time).
    async fn pass(
        &self,
        pool: &PoolConfig,
        slot: Option<&PoolSlot>,
        input: PassInput,
        (mut account, mut read): (PoolLedger, u64),
    ) -> Result<Pass, CloudFailure> {
        let next_read = || slot.map_or(0, PoolSlot::next_read);
        let mut applied_read = read;
        let PassInput {
            recorded: _,
            trigger,
            finished,
            started_on,
            runners: given_runners,
            started,
        } = input;
        let mut finished: Vec<String> = finished.into_iter().collect();
        let mut removals = Removals::new(format!("{}/{read}", self.holder), finished.clone());
        let known: Vec<String> = started_on.into_iter().collect();
        // The ledger's complete busy list and the account it was read after; read only when
        // a decision may take instances out or clear protection, again once the account moves.
        let mut busy_read: Option<(PoolLedger, Vec<String>)> = None;
        let mut account_in_lease = false;
        // Set when the lease was given back and taken again: the copy may be out of date.
        let mut fleet_stale = false;
        // Whether the last decision had the complete list (the census needs it).
        let mut last_complete = false;
        let mut runners: Option<Vec<Runner>> = given_runners;
        let mut runners_read = runners.is_some();
        let mut fleet: Option<FleetState> = None;
        let mut last_applied: Option<PoolLedger> = None;
        let mut first: Option<Decision> = None;
        let mut last: Option<Decision> = None;
        let mut iter_trigger = trigger;
        let mut iterations = 0u32;
        let mut follow_up = false;
        let mut runners_removed = 0u32;
        let mut left = 0u32;
        // Overflow (issue 23): what the spot pools overflowing into this pool spill into it,
        // read with the first describe; what this pool spills, as its cursor holds it.
        let takes_spill = crate::overflow::spilling_into(&self.config.pools, &pool.name)
            .next()
            .is_some();
        let mut spill_in: Option<u32> = None;
        let mut spill_out: Option<u32> = None;
        // The busy runners of the spot pools' jobs that run on this pool's instances (their
        // records are in the spot pools' accounts): read once per pass that may take out.
        let mut spilled_busy: Option<Vec<String>> = None;
        let budget = self.pass_budget();
        let outcome: Result<(), CloudFailure> = async {
            loop {
                // At least one account read after the lease was won, whatever the budget:
                // the first account came before it (read together with the attempt), and
                // records deferred to the previous holder may be missing from it.
                while iterations < MAX_PASS_ITERATIONS
                    && (iterations == 0 || !account_in_lease || started.elapsed() < budget)
                {
                    if iterations > 0 {
                        read = next_read();
                        account = self.ledger.pool(&pool.name).await?;
                        account_in_lease = true;
                    }
                    if let Some(prev) = &last_applied {
                        if *prev == account && !follow_up {
                            applied_read = read;
                            break;
                        }
                        if *prev != account {
                            // Records of other deliveries: if jobs left the account, this pass
                            // covers their completions, and converges down like reconcile.
                            iter_trigger =
                                if load(&account) < load(prev) || trigger == Trigger::Reconcile {
                                    Trigger::Reconcile
                                } else {
                                    Trigger::Demand
                                };
                        }
                    }
                    // Only a decision that may take instances out (or clear protection) needs
                    // every busy runner and GitHub's list; a demand decision protects the
                    // runner its own delivery names and never lowers anything.
                    let takes_out = iter_trigger != Trigger::Demand || !finished.is_empty();
                    // A decision that may take instances out decides on an account read
                    // inside the lease (the pre-lease one may predate what the previous
                    // holder applied), read together with GitHub's runners and the fleet.
                    let refresh = takes_out && !account_in_lease;
                    if refresh {
                        read = next_read();
                    }
                    let read_github = self.github.enabled() && takes_out && !runners_read;
                    let (fresh_account, github_runners, described, spilled) = tokio::join!(
                        async {
                            match refresh {
                                true => Some(self.ledger.pool(&pool.name).await),
                                false => None,
                            }
                        },
                        async {
                            match read_github {
                                true => {
                                    Some(self.read_runners(pool, self.config.cloud_timeout).await)
                                }
                                false => None,
                            }
                        },
                        async {
                            match fleet.is_none() || fleet_stale {
                                true => Some(self.describe_capacity(pool).await),
                                false => None,
                            }
                        },
                        async {
                            match takes_spill && spill_in.is_none() {
                                true => Some(self.spill_into(pool).await),
                                false => None,
                            }
                        },
                    );
                    if let Some(spilled) = spilled {
                        spill_in = Some(spilled?);
                    }
                    if let Some(fresh) = fresh_account {
                        account = fresh?;
                        account_in_lease = true;
                    }
                    // The busy list follows the account it is used with: a list older than
                    // the account could miss a job the account counts as running.
                    if takes_out && busy_read.as_ref().is_none_or(|(at, _)| *at != account) {
                        let list = self.ledger.busy_runners(&pool.name).await?;
                        busy_read = Some((account.clone(), list));
                    }
                    if let Some(listed) = github_runners {
                        runners_read = true;
                        runners = listed;
                    }
                    if let Some(described) = described {
                        fleet = Some(described?);
                        fleet_stale = false;
                    }
                    let Some(state) = fleet.as_mut() else {
                        break;
                    };
                    let seen = Seen {
                        runners: runners.as_deref(),
                        finished: &finished,
                        now: self.clock.now(),
                        boot_grace_secs: self.boot_grace_secs(),
                        spill: spill_in.unwrap_or(0),
                    };
                    if takes_out && takes_spill && spilled_busy.is_none() {
                        spilled_busy = Some(self.spilled_busy(pool, state).await?);
                    }
                    let complete: Option<Vec<String>> = match (&busy_read, &spilled_busy) {
                        (Some((_, list)), Some(more)) if !more.is_empty() => {
                            Some(list.iter().chain(more).cloned().collect())
                        }
                        _ => None,
                    };
                    let busy = match (&busy_read, &complete) {
                        (Some(_), Some(all)) if takes_out => Busy::Complete(all),
                        (Some((_, list)), _) if takes_out => Busy::Complete(list),
                        _ => Busy::Known(&known),
                    };
                    last_complete = busy.is_complete();
                    let d = decide(iter_trigger, pool, &account, busy, state, &seen);
                    // A spot pool whose launches fail spills what it cannot have; its own
                    // desired stays at its target (the cloud keeps trying).
                    self.note_spill(pool, d.target, state, &mut spill_out)
                        .await?;
                    let now = self.clock.now();
                    self.metrics.decisions().note(&pool.name, now, &d, &account);
                    let applied = self
                        .apply(
                            pool,
                            &d,
                            state,
                            runners.as_mut(),
                            &mut removals,
                            started + budget,
                        )
                        .await?;
                    runners_removed += applied.runners_removed;
                    left = applied.left;
                    // An instance kept would be decided on again at once: no follow-up.
                    follow_up = matches!(d.capacity, CapacityAction::Replace { .. })
                        && applied.kept == 0
                        && applied.desired >= d.desired_after();
                    finished.clear();
                    last_applied = Some(account.clone());
                    applied_read = read;
                    if first.is_none() {
                        first = Some(d.clone());
                    }
                    last = Some(d);
                    iterations += 1;
                }
                let _ = self.ledger.release_lease(&pool.name, &self.holder).await;
                let stopped = iterations >= MAX_PASS_ITERATIONS || started.elapsed() >= budget;
                let again_read = next_read();
                let again = match self.ledger.pool(&pool.name).await {
                    Ok(again) => again,
                    Err(_) if stopped => {
                        left = left.max(1);
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                };
                if last_applied.as_ref() == Some(&again) {
                    applied_read = again_read;
                    return Ok(());
                }
                if stopped {
                    // Records no pass applied yet: handed on (`hand_on`), not left to chance.
                    left = left.max(work_left::moved(last_applied.as_ref(), &again));
                    return Ok(());
                }
                if !self.take_lease(pool).await? {
                    // Another process holds it now: its pass reads after our records.
                    return Ok(());
                }
                // The next iteration re-reads the account (it moved) and goes on. The
                // fleet is described again: while the lease was free another process may
                // have taken it and removed instances this copy still lists.
                follow_up = false;
                fleet_stale = true;
            }
        }
        .await;
        if let Some(state) = &fleet {
            let prune = trigger == Trigger::Reconcile && runners.is_some() && last_complete;
            self.save_sightings(pool, state, &mut removals, prune).await;
        }
        if let Err(e) = outcome {
            let _ = self.ledger.release_lease(&pool.name, &self.holder).await;
            return Err(e);
        }
        let (Some(first), Some(state)) = (first, fleet) else {
            return Err(CloudFailure::Timeout);
        };
        self.work_left.note(&self.metrics, &pool.name, left);
        let desired = state.desired;
        let target = last.as_ref().map_or(first.target, |d| d.target);
        // At max against the effective bound: the group's own max (an ASG's max_size) when
        // it is lower than the pool's, since the policy clamps to both.
        let max = state
            .max
            .map_or(pool.max, |group_max| group_max.min(pool.max));
        self.metrics.set_pool(
            &pool.name,
            PoolGauges {
                desired,
                queued: account.queued,
                running: account.running,
                at_max_with_queue: u32::from(desired >= max && account.queued > 0),
            },
        );
        // The census maps every busy runner: only a pass whose last decision read the
        // complete list gives it (reconcile, every minute; completions), not a demand pass.
        if let (true, Some((_, busy))) = (last_complete, &busy_read) {
            if let Some(census) =
                crate::policy::census(pool, Busy::Complete(busy), &state, runners.as_deref())
            {
                self.metrics.census(&pool.name, census);
            }
        }
        let mut first = first;
        first.target = target;
        let account = last_applied.unwrap_or(account);
        Ok(Pass::Applied {
            account,
            read: applied_read,
            first,
            desired,
            fleet: state,
            runners_removed,
        })
    }

    /// The runners a pass of `pool` decides on, or `None` (logged) when GitHub cannot be
    /// read: then no orphan is replaced, and an instance leaves only if the read right
    /// before its removal ([`Service::clear_for_removal`]) succeeds. Scoped to the pool: a
    /// pool in a runner group of its own (`runner_group_id` other than the default group 1,
    /// or `runner_group` by name) lists only that group, so the read grows with the pool,
    /// not with the organization; a pool in the default group lists every runner. The
    /// client gives each page its own budget; `bound` bounds the whole.
    pub(super) async fn read_runners(
        &self,
        pool: &PoolConfig,
        bound: Duration,
    ) -> Option<Vec<Runner>> {
        let read = async {
            match listing_scope(pool) {
                ListingScope::Organization => self.github.runners().await,
                ListingScope::Group => {
                    let group = self.github.pool_runner_group(pool).await?;
                    self.github.runners_in_group(group).await
                }
            }
        };
        match tokio::time::timeout(bound, read).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                tracing::warn!(target: "scalehook::github", pool = %pool.name, error = %e, "listing runners failed: no orphan replaced");
                None
            }
            Err(_) => {
                tracing::warn!(target: "scalehook::github", pool = %pool.name, "listing runners timed out: no orphan replaced");
                None
            }
        }
    }

    /// Applies one decision, keeping `fleet` (the pass's copy) current. With a GitHub App,
    /// every registered runner of the pool that maps to an instance is deregistered before
    /// the instance is removed or replaced; a runner GitHub reports busy (422) keeps its
    /// instance, and so does any GitHub failure: an instance is terminated only once none of
    /// its runners can take a job.
    async fn apply(
        &self,
        pool: &PoolConfig,
        d: &Decision,
        fleet: &mut FleetState,
        mut runners: Option<&mut Vec<Runner>>,
        removals: &mut Removals,
        deadline: Instant,
    ) -> Result<Applied, FleetError> {
        let mut runners_removed = 0u32;
        let mut kept_out = 0u32;
        let mut left = 0u32;
        // Protect busy instances before anything is removed.
        if !d.protect.is_empty() {
            self.fleet.set_protection(pool, &d.protect, true).await?;
            for i in fleet.instances.iter_mut() {
                if d.protect.contains(&i.id) {
                    i.protected = true;
                }
            }
        }
        match &d.capacity {
            CapacityAction::Hold => {}
            CapacityAction::ScaleOut { to } | CapacityAction::CancelLaunches { to } => {
                self.set_capacity(pool, *to).await?;
                fleet.desired = *to;
            }
            CapacityAction::Remove { .. } | CapacityAction::Replace { .. } => {
                let (remove, replace): (Vec<&String>, Vec<&String>) = match &d.capacity {
                    CapacityAction::Remove { instance_ids } => {
                        (instance_ids.iter().collect(), Vec::new())
                    }
                    CapacityAction::Replace { remove, replace } => {
                        (remove.iter().collect(), replace.iter().collect())
                    }
                    _ => (Vec::new(), Vec::new()),
                };
                let leaving = remove
                    .iter()
                    .map(|id| (*id, true))
                    .chain(replace.iter().map(|id| (*id, false)));
                let count = remove.len() + replace.len();
                for (done, (id, decrement)) in leaving.enumerate() {
                    // One call per instance: past the budget the rest is handed on, so the
                    // delivery still answers well within its time bound (`hand_on`).
                    if done > 0 && Instant::now() >= deadline {
                        left = u32::try_from(count - done).unwrap_or(u32::MAX);
                        break;
                    }
                    match self
                        .clear_for_removal(pool, fleet, id, runners.as_deref_mut(), removals)
                        .await
                    {
                        Ok(removed) => runners_removed += removed,
                        Err(kept) => {
                            kept_out += 1;
                            if let Some(reason) = kept.counted() {
                                self.metrics.runner_removal_refused(&pool.name, reason);
                            }
                            continue;
                        }
                    }
                    if decrement {
                        self.fleet.remove_instance(pool, id).await?;
                        fleet.desired = fleet.desired.saturating_sub(1);
                    } else {
                        self.fleet.replace_instance(pool, id).await?;
                    }
                    self.forget_minted(pool, fleet, id).await;
                    fleet.instances.retain(|i| &i.id != id);
                }
            }
        }
        if !d.unprotect.is_empty() {
            self.fleet.set_protection(pool, &d.unprotect, false).await?;
            for i in fleet.instances.iter_mut() {
                if d.unprotect.contains(&i.id) {
                    i.protected = false;
                }
            }
        }
        Ok(Applied {
            desired: fleet.desired,
            runners_removed,
            kept: kept_out,
            left,
        })
    }
}

/// Which runners a pool's pass lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum ListingScope {
    /// Every runner of the installation's scope (a pool in the default group 1).
    Organization,
    /// The pool's own runner group.
    Group,
}

/// The listing a pool's decisions need (see [`Service::read_runners`]).
pub(super) fn listing_scope(pool: &PoolConfig) -> ListingScope {
    match pool.runner_group_id {
        DEFAULT_RUNNER_GROUP => ListingScope::Organization,
        _ => ListingScope::Group,
    }
}

/// Jobs in the account: what a completion lowers.
fn load(account: &PoolLedger) -> u64 {
    u64::from(account.queued) + u64::from(account.running)
}
