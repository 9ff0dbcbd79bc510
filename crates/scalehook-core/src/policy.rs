//! The scaling policy: a pure function of (trigger, pool config, ledger account, fleet state).
//!
//! With `slots = running + queued + standby` and
//! `target = clamp(ceil(slots / runners_per_instance), min, max)`:
//! - demand (`queued`, `waiting`, `in_progress`): scale out to `target` if it is above the
//!   current capacity; never lower it;
//! - release (`completed`): scale out if below target, else remove one idle instance when
//!   idle slots exceed `standby` by at least one instance's worth;
//! - reconcile: converge to `target` (out in one step, in by idle instances only).
//!
//! Scale-in never picks an instance that a busy runner maps to, and is withheld entirely
//! while a busy runner maps to no instance (it could be on any of them). Taking an instance
//! out, cancelling launches or clearing protection needs the *complete* busy list
//! ([`Busy::Complete`]); with only the runners a delivery knows ([`Busy::Known`]) the policy
//! may raise capacity and protect, nothing else.

use crate::config::PoolConfig;
use crate::fleet::{FleetState, Instance};
use crate::github::Runner;
use crate::ledger::PoolLedger;

/// The busy runners (of in-progress jobs) the ledger gives a decision, and whether that is
/// all of them. The list grows with the running jobs, so a demand pass does not read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy<'a> {
    /// Every busy runner of the pool ([`crate::Ledger::busy_runners`], read after the
    /// account). Required to remove, replace or cancel launches, and to unprotect.
    Complete(&'a [String]),
    /// Only the runners this pass knows (a demand pass: the one its own `in_progress`
    /// names). Their instances may be protected; with a partial list the policy never lowers
    /// capacity, takes an instance out or clears a protection, whatever the trigger.
    Known(&'a [String]),
}

impl<'a> Busy<'a> {
    /// The runners given (all of them or some).
    pub fn runners(&self) -> &'a [String] {
        match *self {
            Busy::Complete(r) | Busy::Known(r) => r,
        }
    }

    pub fn is_complete(&self) -> bool {
        matches!(self, Busy::Complete(_))
    }
}

/// What caused the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A job was queued, is waiting, or started: capacity may only go up.
    Demand,
    /// A job completed: capacity may go down by one instance.
    Release,
    /// The scheduled pass (or a pass that covered several completions): converge both ways.
    Reconcile,
}

/// The change to a pool's capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapacityAction {
    Hold,
    /// Raise desired capacity to `to`.
    ScaleOut {
        to: u32,
    },
    /// Lower desired capacity to `to`; only chosen while fewer instances are live than
    /// desired, so it cancels launches and cannot pick a running instance.
    CancelLaunches {
        to: u32,
    },
    /// Remove these idle instances (each removal decrements desired capacity).
    Remove {
        instance_ids: Vec<String>,
    },
    /// Take out instances whose runners are spent (an ephemeral runner finished its job) or
    /// never came (an orphan past boot grace): `remove` ones decrement desired capacity (the
    /// pool is above target), `replace` ones keep it, so the cloud launches fresh instances.
    Replace {
        remove: Vec<String>,
        replace: Vec<String>,
    },
}

impl CapacityAction {
    /// The action's name in logs, metrics and HTTP answers.
    pub fn name(&self) -> &'static str {
        match self {
            CapacityAction::Hold => "hold",
            CapacityAction::ScaleOut { .. } => "scale_out",
            CapacityAction::CancelLaunches { .. } => "cancel_launches",
            CapacityAction::Remove { .. } => "remove_idle",
            CapacityAction::Replace { replace, .. } if replace.is_empty() => "remove_spent",
            CapacityAction::Replace { .. } => "replace",
        }
    }

    /// The instances this action takes out of the pool, removed or replaced.
    pub fn leaving(&self) -> Vec<&str> {
        match self {
            CapacityAction::Remove { instance_ids } => {
                instance_ids.iter().map(String::as_str).collect()
            }
            CapacityAction::Replace { remove, replace } => remove
                .iter()
                .chain(replace.iter())
                .map(String::as_str)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A decision: the capacity action, the protection changes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub current: u32,
    pub target: u32,
    pub capacity: CapacityAction,
    /// Instances to protect from scale-in (busy, not yet protected).
    pub protect: Vec<String>,
    /// Instances to unprotect (protected, now idle).
    pub unprotect: Vec<String>,
    pub reason: &'static str,
}

impl Decision {
    /// Desired capacity once the action is applied.
    pub fn desired_after(&self) -> u32 {
        match &self.capacity {
            CapacityAction::Hold => self.current,
            CapacityAction::ScaleOut { to } | CapacityAction::CancelLaunches { to } => *to,
            CapacityAction::Remove { instance_ids } => {
                self.current.saturating_sub(instance_ids.len() as u32)
            }
            CapacityAction::Replace { remove, .. } => {
                self.current.saturating_sub(remove.len() as u32)
            }
        }
    }
}

/// What scalehook knows beyond the ledger and the fleet when it decides: GitHub's view of
/// the pool's runners (with a GitHub App) and the runners whose ephemeral job just ended.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// The registered runners (any pool's; the policy keeps the pool's by name). `None` in
    /// webhook-only mode, or when they were not read for this decision.
    pub runners: Option<&'a [Runner]>,
    /// Runners of an ephemeral pool whose job completed (from the delivery or its record):
    /// each has exited, so the instance it ran on is spent once no other runner on it is busy.
    pub finished: &'a [String],
    /// Unix seconds, for boot grace.
    pub now: u64,
    /// An instance launched this long ago with no registered runner is an orphan.
    pub boot_grace_secs: u64,
    /// Instances the spot pools that overflow into this pool cannot have (their launches
    /// fail): added to the target within the pool's max ([`crate::overflow::with_spill`])
    /// and counted as busy slots, so they are kept while spilled, and taken out by the
    /// normal rule (idle above standby) once the spill goes back to 0.
    pub spill: u32,
}

impl Seen<'static> {
    /// Nothing beyond the ledger and the fleet (webhook-only mode, no finished runner).
    pub const NOTHING: Seen<'static> = Seen {
        runners: None,
        finished: &[],
        now: 0,
        boot_grace_secs: u64::MAX,
        spill: 0,
    };
}

/// The capacity, in instances, the pool should have for its account.
pub fn target(pool: &PoolConfig, ledger: &PoolLedger, fleet: &FleetState) -> u32 {
    target_with_gone(pool, ledger, fleet, 0)
}

/// [`target`] when `gone` runner slots of live instances will never take a job (finished
/// ephemeral runners of instances that still run another): those instances count for less.
fn target_with_gone(pool: &PoolConfig, ledger: &PoolLedger, fleet: &FleetState, gone: u32) -> u32 {
    let slots = u64::from(ledger.running)
        + u64::from(ledger.queued)
        + u64::from(pool.standby)
        + u64::from(gone);
    let rpi = u64::from(pool.runners_per_instance.max(1));
    let instances = u32::try_from(slots.div_ceil(rpi)).unwrap_or(u32::MAX);
    let (lo, hi) = bounds(pool, fleet);
    instances.clamp(lo, hi)
}

/// The pool's bounds in instances: its own, within the cloud group's where it has them.
fn bounds(pool: &PoolConfig, fleet: &FleetState) -> (u32, u32) {
    let lo = pool.min.max(fleet.min.unwrap_or(0));
    let hi = pool.max.min(fleet.max.unwrap_or(u32::MAX)).max(lo);
    (lo, hi)
}

/// The scaling rule. Pure: the same inputs always give the same decision. `seen` adds
/// GitHub's busy flags to the ledger's (busy = ledger busy ∪ GitHub busy), the spent
/// instances of ephemeral pools, and (on reconcile) orphans. With [`Busy::Known`] the
/// decision is made as for demand (whatever `trigger` says) and clears no protection.
pub fn decide(
    trigger: Trigger,
    pool: &PoolConfig,
    ledger: &PoolLedger,
    busy: Busy<'_>,
    fleet: &FleetState,
    seen: &Seen<'_>,
) -> Decision {
    let complete = busy.is_complete();
    // Without every busy runner, any instance may be busy: nothing may be taken out.
    let asked = trigger;
    let trigger = if complete { trigger } else { Trigger::Demand };
    let current = fleet.desired;
    let pool_runners: Vec<&Runner> = seen
        .runners
        .unwrap_or(&[])
        .iter()
        .filter(|r| r.in_pool(&pool.name))
        .collect();
    let gone = gone_slots(pool, fleet, seen, &pool_runners);
    let target = crate::overflow::with_spill(
        target_with_gone(pool, ledger, fleet, gone),
        seen.spill,
        bounds(pool, fleet).1,
    );
    // A finished runner's own busy flag may lag behind its completed event: it has exited.
    let github_busy: Vec<String> = pool_runners
        .iter()
        .filter(|r| {
            r.busy
                && !seen
                    .finished
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(&r.name))
        })
        .map(|r| r.name.clone())
        .collect();
    let busy = BusyMap::new(&fleet.instances, busy.runners(), &github_busy);
    let (protect, unprotect) = protection_changes(fleet, &busy, complete);
    let decision = |capacity, reason| Decision {
        current,
        target,
        capacity,
        protect: protect.clone(),
        unprotect: unprotect.clone(),
        reason,
    };

    if trigger != Trigger::Demand && busy.unmapped == 0 {
        let spent = spent_instances(trigger, pool, fleet, seen, &pool_runners, &busy);
        if !spent.is_empty() {
            // Above target after the release: the spent instances go for good (as many as the
            // excess); the rest are replaced so the pool stays at target.
            let excess = current.saturating_sub(target) as usize;
            let n = excess.min(spent.len());
            let remove: Vec<String> = spent[..n].to_vec();
            let replace: Vec<String> = spent[n..].to_vec();
            let mut d = decision(
                CapacityAction::Replace { remove, replace },
                "spent or orphaned instances",
            );
            d.unprotect.retain(|id| !spent.contains(id));
            return d;
        }
    }
    if target > current {
        return decision(CapacityAction::ScaleOut { to: target }, "below target");
    }
    if target == current {
        return decision(CapacityAction::Hold, "at target");
    }
    if trigger == Trigger::Demand {
        if asked != Trigger::Demand {
            return decision(
                CapacityAction::Hold,
                "busy runners not all read: capacity never lowered",
            );
        }
        return decision(CapacityAction::Hold, "demand never lowers capacity");
    }
    let step = match trigger {
        Trigger::Release => 1,
        _ => current - target,
    };
    let live = fleet.instances.len() as u32;
    if current > live {
        // Launches not yet visible as instances: cancelling them cannot hit a runner.
        let to = current.saturating_sub(step).max(target).max(live);
        return decision(
            CapacityAction::CancelLaunches { to },
            "cancel pending launches",
        );
    }
    if busy.unmapped > 0 {
        return decision(
            CapacityAction::Hold,
            "a busy runner maps to no instance: scale-in withheld",
        );
    }
    let rpi = pool.runners_per_instance.max(1);
    // Spilled instances serve the spot pools' jobs (recorded in those pools' accounts).
    let spilled = u64::from(seen.spill) * u64::from(rpi);
    let idle_slots = (u64::from(current) * u64::from(rpi)).saturating_sub(
        u64::from(ledger.running) + u64::from(ledger.queued) + u64::from(gone) + spilled,
    );
    if idle_slots < u64::from(pool.standby) + u64::from(rpi) {
        return decision(CapacityAction::Hold, "idle slots within standby");
    }
    let mut idle: Vec<&Instance> = fleet
        .instances
        .iter()
        .filter(|i| !busy.is_busy(&i.id))
        .collect();
    // Launching instances first (they have served nothing yet), then the newest.
    idle.sort_by(|a, b| b.launching.cmp(&a.launching).then_with(|| b.id.cmp(&a.id)));
    let instance_ids: Vec<String> = idle
        .into_iter()
        .take(step as usize)
        .map(|i| i.id.clone())
        .collect();
    if instance_ids.is_empty() {
        return decision(CapacityAction::Hold, "no idle instance to remove");
    }
    // An instance removed now is leaving the group: clearing its protection would only be
    // refused (an ASG rejects calls on terminating instances).
    let mut d = decision(
        CapacityAction::Remove { instance_ids },
        "idle above standby",
    );
    if let CapacityAction::Remove { instance_ids } = &d.capacity {
        d.unprotect.retain(|id| !instance_ids.contains(id));
    }
    d
}

/// Runner slots of an ephemeral pool with several runners per instance that will never take
/// a job again: on an in-service instance some of whose runners GitHub still lists, each
/// runner missing from the list (or whose job just completed) has exited after its job. An
/// instance with none listed is booting, or spent as a whole (replaced, see
/// [`spent_instances`]). Without GitHub's list: none known.
fn gone_slots(
    pool: &PoolConfig,
    fleet: &FleetState,
    seen: &Seen<'_>,
    pool_runners: &[&Runner],
) -> u32 {
    let rpi = pool.runners_per_instance.max(1);
    if !pool.ephemeral || rpi == 1 || seen.runners.is_none() {
        return 0;
    }
    let mut gone = 0u32;
    for i in fleet.instances.iter().filter(|i| !i.launching) {
        let listed = pool_runners
            .iter()
            .filter(|r| {
                i.runs(&r.name)
                    && !seen
                        .finished
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case(&r.name))
            })
            .count();
        let listed = u32::try_from(listed).unwrap_or(u32::MAX);
        if listed > 0 {
            gone = gone.saturating_add(rpi.saturating_sub(listed));
        }
    }
    gone
}

/// Instances whose runners are done, in fleet order:
/// - ephemeral pools, on release: the instance a finished runner maps to, when no busy
///   runner (ledger or GitHub) maps to it any more;
/// - with GitHub's runner list, on reconcile: an in-service instance past boot grace (or of
///   unknown launch time) to which no online runner and no busy runner maps: an ephemeral
///   runner that exited, an orphan whose runner never came, or a dead one whose runners
///   never came online or went offline. These are candidates: the service removes one only
///   after a second sighting in another pass, past grace (`service::removal`).
fn spent_instances(
    trigger: Trigger,
    pool: &PoolConfig,
    fleet: &FleetState,
    seen: &Seen<'_>,
    pool_runners: &[&Runner],
    busy: &BusyMap,
) -> Vec<String> {
    let mut out = Vec::new();
    for i in &fleet.instances {
        if busy.is_busy(&i.id) {
            continue;
        }
        let finished = pool.ephemeral && seen.finished.iter().any(|f| i.runs(f));
        let orphan = trigger == Trigger::Reconcile
            && seen.runners.is_some()
            && !i.launching
            && i.launched_at.is_none_or(|t| {
                t.saturating_add(seen.boot_grace_secs.min(u64::MAX / 2)) <= seen.now
            })
            // A runner that never came online, or went offline, runs nothing here: the
            // instance is dead (the removal step still wants two sightings past grace).
            && !pool_runners.iter().any(|r| r.online && i.runs(&r.name));
        if finished || orphan {
            out.push(i.id.clone());
        }
    }
    out
}

/// A pool's fleet census from a reconcile pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Instances the cloud lists (launching or in service).
    pub live: u32,
    /// Instances not yet in service.
    pub launching: u32,
    /// Instances running a job.
    pub busy: u32,
    /// Instances in service without a job.
    pub idle: u32,
    /// Instances without a registered runner (only known with a GitHub App).
    pub unregistered: Option<u32>,
    /// Instances in the warm pool: not capacity, not in `live` (see [`FleetState::warm`]).
    pub warm: u32,
}

/// The pool's fleet census for metrics: live, launching, busy and idle instances, and (when
/// GitHub's runners are known) instances with no registered runner of the pool. Busy uses the
/// same mapping as [`decide`] (ledger busy ∪ GitHub busy), so it needs the complete busy
/// list: `None` with [`Busy::Known`] (a demand pass); reconcile (every minute) and
/// completions give it.
pub fn census(
    pool: &PoolConfig,
    busy: Busy<'_>,
    fleet: &FleetState,
    runners: Option<&[Runner]>,
) -> Option<Census> {
    let Busy::Complete(ledger_busy) = busy else {
        return None;
    };
    let pool_runners: Vec<&Runner> = runners
        .unwrap_or(&[])
        .iter()
        .filter(|r| r.in_pool(&pool.name))
        .collect();
    let github_busy: Vec<String> = pool_runners
        .iter()
        .filter(|r| r.busy)
        .map(|r| r.name.clone())
        .collect();
    let busy = BusyMap::new(&fleet.instances, ledger_busy, &github_busy);
    let launching = fleet.instances.iter().filter(|i| i.launching).count() as u32;
    let busy_count = fleet
        .instances
        .iter()
        .filter(|i| busy.is_busy(&i.id))
        .count() as u32;
    let live = fleet.instances.len() as u32;
    Some(Census {
        live,
        launching,
        busy: busy_count,
        idle: live.saturating_sub(launching).saturating_sub(busy_count),
        warm: fleet.warm,
        unregistered: runners.map(|_| {
            fleet
                .instances
                .iter()
                .filter(|i| !pool_runners.iter().any(|r| i.runs(&r.name)))
                .count() as u32
        }),
    })
}

/// Which instances busy runners map to.
struct BusyMap {
    busy_ids: Vec<String>,
    /// Busy runners of the ledger that map to no live instance.
    unmapped: usize,
}

impl BusyMap {
    /// `ledger_busy` may hold names that follow no convention (a runner not started by
    /// scalehook): one that maps to no instance could be on any of them. `github_busy` are
    /// the pool's runners by name; one that maps to no instance has lost its instance.
    fn new(instances: &[Instance], ledger_busy: &[String], github_busy: &[String]) -> Self {
        let mut busy_ids = Vec::new();
        let mut unmapped = 0;
        for (k, runner) in ledger_busy.iter().chain(github_busy.iter()).enumerate() {
            let mut mapped = false;
            for i in instances.iter().filter(|i| i.runs(runner)) {
                mapped = true;
                if !busy_ids.contains(&i.id) {
                    busy_ids.push(i.id.clone());
                }
            }
            if !mapped && k < ledger_busy.len() {
                unmapped += 1;
            }
        }
        Self { busy_ids, unmapped }
    }

    fn is_busy(&self, id: &str) -> bool {
        self.busy_ids.iter().any(|b| b == id)
    }
}

/// Busy instances to protect; idle protected ones to unprotect, only when `complete` (every
/// busy runner is known) and every busy runner maps to an instance.
fn protection_changes(
    fleet: &FleetState,
    busy: &BusyMap,
    complete: bool,
) -> (Vec<String>, Vec<String>) {
    if !fleet.supports_protection {
        return (Vec::new(), Vec::new());
    }
    let protect = fleet
        .instances
        .iter()
        .filter(|i| busy.is_busy(&i.id) && !i.protected)
        .map(|i| i.id.clone())
        .collect();
    // With an unmapped busy runner any protected instance may be its host, and with a
    // partial busy list any may run a job not in it: keep them.
    let unprotect = if !complete || busy.unmapped > 0 {
        Vec::new()
    } else {
        fleet
            .instances
            .iter()
            .filter(|i| i.protected && !busy.is_busy(&i.id))
            .map(|i| i.id.clone())
            .collect()
    };
    (protect, unprotect)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FleetTarget;

    fn pool(min: u32, max: u32, standby: u32, rpi: u32) -> PoolConfig {
        PoolConfig {
            name: "p".into(),
            labels: vec!["self-hosted".into()],
            min,
            max,
            standby,
            runners_per_instance: rpi,
            fleet: FleetTarget::Local,
            ephemeral: false,
            runner_group_id: 1,
            runner_group: None,
            warm_pool: 0,
            capacity: crate::config::Capacity::OnDemand,
            overflow: None,
            rerun_interrupted: false,
        }
    }

    fn fleet(n: u32) -> FleetState {
        FleetState {
            desired: n,
            instances: (0..n)
                .map(|i| Instance {
                    id: format!("i-{i}"),
                    runner_key: format!("i-{i}"),
                    launching: false,
                    protected: false,
                    launched_at: None,
                })
                .collect(),
            supports_protection: true,
            ..FleetState::default()
        }
    }

    /// An account with its complete busy list.
    #[derive(Debug, Clone)]
    struct Acct {
        queued: u32,
        running: u32,
        busy: Vec<String>,
    }

    impl Acct {
        fn ledger(&self) -> PoolLedger {
            PoolLedger {
                queued: self.queued,
                running: self.running,
                changes: 0,
            }
        }
    }

    fn account(queued: u32, running: u32) -> Acct {
        Acct {
            queued,
            running,
            busy: (0..running).map(|i| format!("runner-i-{i}")).collect(),
        }
    }

    /// `decide` with the complete busy list.
    fn decide_all(
        trigger: Trigger,
        pool: &PoolConfig,
        acct: &Acct,
        fleet: &FleetState,
        seen: &Seen<'_>,
    ) -> Decision {
        decide(
            trigger,
            pool,
            &acct.ledger(),
            Busy::Complete(&acct.busy),
            fleet,
            seen,
        )
    }

    /// Seed rule, scale out: desired = min(running + queued + standby, max).
    #[test]
    fn scale_out_table() {
        // (running, queued, standby, max, current) -> desired
        let cases = [
            (0, 1, 0, 10, 0, 1),
            (0, 1, 1, 10, 0, 2),
            (3, 2, 1, 10, 3, 6),
            (3, 2, 1, 5, 3, 5),
            (0, 50, 0, 20, 4, 20),
            (2, 0, 1, 10, 5, 5), // above target: queued never lowers
        ];
        for (running, queued, standby, max, current, want) in cases {
            let d = decide_all(
                Trigger::Demand,
                &pool(0, max, standby, 1),
                &account(queued, running),
                &fleet(current),
                &Seen::NOTHING,
            );
            assert_eq!(
                d.desired_after(),
                want,
                "case {running} {queued} {standby} {max} {current}"
            );
        }
    }

    /// Seed rule, scale in: if idle runners > standby: desired = max(current - 1, min).
    #[test]
    fn scale_in_table() {
        // (running, standby, min, current) -> desired
        let cases = [
            (0, 0, 0, 1, 0),
            (0, 1, 0, 1, 1), // idle 1 == standby: keep
            (0, 1, 0, 3, 2),
            (2, 1, 0, 3, 3), // idle 1 == standby
            (2, 0, 0, 3, 2),
            (0, 0, 2, 2, 2), // min floor
            (0, 0, 2, 5, 4), // one step at a time
        ];
        for (running, standby, min, current, want) in cases {
            let d = decide_all(
                Trigger::Release,
                &pool(min, 10, standby, 1),
                &account(0, running),
                &fleet(current),
                &Seen::NOTHING,
            );
            assert_eq!(
                d.desired_after(),
                want,
                "case {running} {standby} {min} {current}"
            );
        }
    }

    #[test]
    fn runners_per_instance_counts_instances() {
        let p = pool(0, 10, 1, 4);
        assert_eq!(target(&p, &account(6, 0).ledger(), &fleet(0)), 2); // ceil(7/4)
        assert_eq!(target(&p, &account(7, 0).ledger(), &fleet(0)), 2); // ceil(8/4)
        assert_eq!(target(&p, &account(8, 0).ledger(), &fleet(0)), 3);
        // 2 instances = 8 slots, 3 running: idle 5 >= standby 1 + 4: remove one
        let on_first = |n: usize| Acct {
            queued: 0,
            running: n as u32,
            busy: (0..n).map(|k| format!("i-0-runner-{k}")).collect(),
        };
        let d = decide_all(
            Trigger::Release,
            &p,
            &on_first(3),
            &fleet(2),
            &Seen::NOTHING,
        );
        assert_eq!(
            d.capacity,
            CapacityAction::Remove {
                instance_ids: vec!["i-1".into()]
            }
        );
        // 4 running: idle 4 < 5: keep
        let d = decide_all(
            Trigger::Release,
            &p,
            &on_first(4),
            &fleet(2),
            &Seen::NOTHING,
        );
        assert_eq!(d.capacity, CapacityAction::Hold);
    }

    #[test]
    fn fleet_bounds_clamp_target() {
        let mut f = fleet(0);
        f.max = Some(3);
        f.min = Some(1);
        assert_eq!(target(&pool(0, 10, 0, 1), &account(9, 0).ledger(), &f), 3);
        assert_eq!(target(&pool(0, 10, 0, 1), &account(0, 0).ledger(), &f), 1);
    }

    #[test]
    fn scale_in_never_picks_busy_instance() {
        let p = pool(0, 10, 0, 1);
        // 3 instances, runner on i-1 busy
        let acc = Acct {
            queued: 0,
            running: 1,
            busy: vec!["gh-i-1".into()],
        };
        let d = decide_all(Trigger::Reconcile, &p, &acc, &fleet(3), &Seen::NOTHING);
        let CapacityAction::Remove { instance_ids } = &d.capacity else {
            panic!("{d:?}")
        };
        assert_eq!(instance_ids.len(), 2);
        assert!(!instance_ids.contains(&"i-1".to_string()));
        assert_eq!(d.protect, vec!["i-1".to_string()]);
    }

    #[test]
    fn unmapped_busy_runner_withholds_scale_in() {
        let p = pool(0, 10, 0, 1);
        let acc = Acct {
            queued: 0,
            running: 1,
            busy: vec!["somewhere-else".into()],
        };
        let mut f = fleet(3);
        f.instances[0].protected = true;
        let d = decide_all(Trigger::Reconcile, &p, &acc, &f, &Seen::NOTHING);
        assert_eq!(d.capacity, CapacityAction::Hold);
        assert!(d.unprotect.is_empty());
    }

    #[test]
    fn idle_protected_instances_are_unprotected() {
        let mut f = fleet(2);
        f.instances[1].protected = true;
        let d = decide_all(
            Trigger::Demand,
            &pool(2, 10, 0, 1),
            &account(0, 0),
            &f,
            &Seen::NOTHING,
        );
        assert_eq!(d.unprotect, vec!["i-1".to_string()]);
        assert_eq!(d.capacity, CapacityAction::Hold);
    }

    #[test]
    fn a_removed_instance_is_not_also_unprotected() {
        let mut f = fleet(2);
        f.instances[1].protected = true;
        let d = decide_all(
            Trigger::Release,
            &pool(0, 10, 0, 1),
            &account(0, 0),
            &f,
            &Seen::NOTHING,
        );
        assert_eq!(
            d.capacity,
            CapacityAction::Remove {
                instance_ids: vec!["i-1".into()]
            }
        );
        assert!(d.unprotect.is_empty(), "{d:?}");
    }

    #[test]
    fn pending_launches_are_cancelled_first() {
        let mut f = fleet(2);
        f.desired = 5;
        let d = decide_all(
            Trigger::Reconcile,
            &pool(0, 10, 0, 1),
            &account(0, 0),
            &f,
            &Seen::NOTHING,
        );
        assert_eq!(d.capacity, CapacityAction::CancelLaunches { to: 2 });
        let d = decide_all(
            Trigger::Release,
            &pool(0, 10, 0, 1),
            &account(0, 0),
            &f,
            &Seen::NOTHING,
        );
        assert_eq!(d.capacity, CapacityAction::CancelLaunches { to: 4 });
    }

    #[test]
    fn launching_instances_are_removed_first() {
        let mut f = fleet(3);
        f.instances[0].launching = true;
        let d = decide_all(
            Trigger::Release,
            &pool(0, 10, 0, 1),
            &account(0, 0),
            &f,
            &Seen::NOTHING,
        );
        assert_eq!(
            d.capacity,
            CapacityAction::Remove {
                instance_ids: vec!["i-0".into()]
            }
        );
    }

    fn runner(name: &str, busy: bool) -> Runner {
        Runner {
            id: 1,
            name: name.into(),
            online: true,
            busy,
            labels: vec![],
        }
    }

    fn seen<'a>(runners: Option<&'a [Runner]>, finished: &'a [String], now: u64) -> Seen<'a> {
        Seen {
            runners,
            finished,
            now,
            boot_grace_secs: 600,
            spill: 0,
        }
    }

    #[test]
    fn a_spill_raises_the_target_within_max_and_keeps_its_instances() {
        let p = pool(0, 6, 1, 1);
        let spill = |n| Seen {
            spill: n,
            ..Seen::NOTHING
        };
        // Own target 2 (1 running + standby 1), 3 spilled: out to 5.
        let d = decide_all(Trigger::Demand, &p, &account(0, 1), &fleet(2), &spill(3));
        assert_eq!(d.capacity, CapacityAction::ScaleOut { to: 5 });
        // Within the pool's max, whatever the spill.
        let d = decide_all(Trigger::Demand, &p, &account(0, 1), &fleet(2), &spill(40));
        assert_eq!(d.capacity, CapacityAction::ScaleOut { to: 6 });
        // Spilled instances are busy slots: nothing idle above standby to take out.
        let d = decide_all(Trigger::Reconcile, &p, &account(0, 1), &fleet(5), &spill(3));
        assert_eq!(d.capacity, CapacityAction::Hold);
        // The spill back to 0: the normal rule takes the idle instances out to target.
        let d = decide_all(Trigger::Reconcile, &p, &account(0, 1), &fleet(5), &spill(0));
        assert!(
            matches!(&d.capacity, CapacityAction::Remove { instance_ids } if instance_ids.len() == 3),
            "{d:?}"
        );
    }

    #[test]
    fn spilled_instances_stay_busy_slots_above_a_lowered_max() {
        // An overflow pool of 2 runners an instance whose max was lowered to 4 below its 6
        // instances, while 6 instances are spilled into it: the spill holds all 12 slots.
        let p = pool(0, 4, 0, 2);
        let spill = Seen {
            spill: 6,
            ..Seen::NOTHING
        };
        let d = decide_all(Trigger::Reconcile, &p, &account(0, 1), &fleet(6), &spill);
        assert_eq!(d.target, 4);
        assert_eq!(d.capacity, CapacityAction::Hold, "{d:?}");
        // Without the spill the idle instances above the target go.
        let d = decide_all(
            Trigger::Reconcile,
            &p,
            &account(0, 1),
            &fleet(6),
            &Seen::NOTHING,
        );
        assert_eq!(d.capacity.leaving().len(), 5, "{d:?}");
    }

    #[test]
    fn leaving_names_the_instances_an_action_takes_out() {
        let remove = CapacityAction::Remove {
            instance_ids: vec!["i-1".into(), "i-2".into()],
        };
        assert_eq!(remove.leaving(), vec!["i-1", "i-2"]);
        let replace = CapacityAction::Replace {
            remove: vec!["i-3".into()],
            replace: vec!["i-4".into()],
        };
        assert_eq!(replace.leaving(), vec!["i-3", "i-4"]);
        assert!(CapacityAction::Hold.leaving().is_empty());
        assert!(CapacityAction::ScaleOut { to: 3 }.leaving().is_empty());
    }

    #[test]
    fn a_replacement_clears_the_protection_of_the_instances_that_stay_only() {
        // Both instances protected and idle; i-1's ephemeral runner finished: i-1 is replaced
        // (its protection goes with it), i-0's protection is cleared.
        let mut p = pool(2, 10, 0, 1);
        p.ephemeral = true;
        let mut f = fleet(2);
        f.instances.iter_mut().for_each(|i| i.protected = true);
        let finished = ["p-i-1".to_string()];
        let d = decide_all(
            Trigger::Release,
            &p,
            &account(0, 0),
            &f,
            &seen(None, &finished, 0),
        );
        assert_eq!(d.capacity.leaving(), vec!["i-1"]);
        assert_eq!(d.unprotect, vec!["i-0".to_string()]);
    }

    #[test]
    fn a_partial_busy_list_never_lowers_capacity_and_says_so() {
        let p = pool(0, 10, 0, 1);
        let acct = account(0, 0);
        let d = decide(
            Trigger::Reconcile,
            &p,
            &acct.ledger(),
            Busy::Known(&[]),
            &fleet(3),
            &Seen::NOTHING,
        );
        assert_eq!(d.capacity, CapacityAction::Hold);
        assert_eq!(
            d.reason,
            "busy runners not all read: capacity never lowered"
        );
        let d = decide_all(Trigger::Demand, &p, &acct, &fleet(3), &Seen::NOTHING);
        assert_eq!(d.reason, "demand never lowers capacity");
    }

    #[test]
    fn a_finished_ephemeral_slot_is_no_room_for_a_queued_job_above_a_lowered_max() {
        // Two runners an instance, max lowered to 1 below the 2 instances: i-0 runs a job and
        // its other runner has finished (gone); the queued job can only run on i-1, which
        // therefore stays.
        let mut p = pool(0, 1, 0, 2);
        p.ephemeral = true;
        let gh = [
            runner("p-i-0-1", true),
            runner("p-i-1-1", false),
            runner("p-i-1-2", false),
        ];
        let d = decide_all(
            Trigger::Release,
            &p,
            &account(1, 1),
            &fleet(2),
            &seen(Some(&gh), &[], 0),
        );
        assert_eq!(d.target, 1);
        assert_eq!(d.capacity, CapacityAction::Hold, "{d:?}");
    }

    #[test]
    fn a_persistent_runner_not_listed_yet_is_no_gone_slot() {
        // Persistent runners never finish: i-0's second runner, not listed yet, is still
        // coming, and the queued job will take it; no scale-out for it.
        let p = pool(0, 10, 0, 2);
        let gh = [runner("p-i-0-1", true)];
        let d = decide_all(
            Trigger::Demand,
            &p,
            &account(1, 1),
            &fleet(1),
            &seen(Some(&gh), &[], 0),
        );
        assert_eq!(d.target, 1);
        assert_eq!(d.capacity, CapacityAction::Hold, "{d:?}");
    }

    #[test]
    fn an_instance_with_no_runner_listed_yet_has_no_gone_slot() {
        // Two ephemeral runners an instance: i-0 boots, none of its runners registered yet;
        // the queued job will run there, so no second instance.
        let mut p = pool(0, 10, 0, 2);
        p.ephemeral = true;
        let d = decide_all(
            Trigger::Demand,
            &p,
            &account(1, 0),
            &fleet(1),
            &seen(Some(&[]), &[], 0),
        );
        assert_eq!(d.target, 1);
        assert_eq!(d.capacity, CapacityAction::Hold, "{d:?}");
    }

    #[test]
    fn census_counts_busy_idle_launching_and_unregistered() {
        // i-0 busy by the ledger, i-1 busy by GitHub, i-2 idle, i-3 launching with no runner
        let mut f = fleet(4);
        f.instances[3].launching = true;
        let mut acct = account(0, 1);
        acct.busy = vec!["p-i-0".into()];
        let runners = [
            runner("p-i-0", false),
            runner("p-i-1", true),
            runner("p-i-2", false),
        ];
        let c = census(
            &pool(0, 10, 0, 1),
            Busy::Complete(&acct.busy),
            &f,
            Some(&runners),
        )
        .expect("complete");
        assert_eq!(
            (c.live, c.launching, c.busy, c.idle, c.unregistered),
            (4, 1, 2, 1, Some(1))
        );
        // webhook-only: no runner list, so no unregistered figure, and only the ledger's busy
        let c = census(&pool(0, 10, 0, 1), Busy::Complete(&acct.busy), &f, None).expect("complete");
        assert_eq!((c.busy, c.idle, c.unregistered), (1, 2, None));
    }

    #[test]
    fn github_busy_runners_count_as_busy() {
        // 3 instances, target 0; GitHub says i-2's runner is busy (the ledger does not know)
        let runners = [
            runner("p-i-0", false),
            runner("p-i-1", false),
            runner("p-i-2", true),
        ];
        let d = decide_all(
            Trigger::Reconcile,
            &pool(0, 10, 0, 1),
            &account(0, 0),
            &fleet(3),
            &seen(Some(&runners), &[], 0),
        );
        assert_eq!(
            d.capacity,
            CapacityAction::Remove {
                instance_ids: vec!["i-1".into(), "i-0".into()]
            }
        );
        assert_eq!(d.protect, vec!["i-2".to_string()]);
        // runners of another pool do not count
        let other = [runner("q-i-2", true)];
        let d = decide_all(
            Trigger::Reconcile,
            &pool(0, 10, 0, 1),
            &account(0, 0),
            &fleet(3),
            &seen(Some(&other), &[], 0),
        );
        assert_eq!(d.capacity.leaving().len(), 3, "{d:?}");
    }

    #[test]
    fn ephemeral_finished_instance_is_replaced_at_target_and_removed_above() {
        let mut p = pool(2, 10, 0, 1);
        p.ephemeral = true;
        let finished = ["p-i-1".to_string()];
        // at target (min 2): replace
        let d = decide_all(
            Trigger::Release,
            &p,
            &account(0, 0),
            &fleet(2),
            &seen(None, &finished, 0),
        );
        assert_eq!(
            d.capacity,
            CapacityAction::Replace {
                remove: vec![],
                replace: vec!["i-1".into()]
            }
        );
        assert_eq!(d.desired_after(), 2);
        assert_eq!(d.capacity.name(), "replace");
        // above target: removed
        let d = decide_all(
            Trigger::Release,
            &p,
            &account(0, 0),
            &fleet(3),
            &seen(None, &finished, 0),
        );
        assert_eq!(d.capacity.name(), "remove_spent");
        assert_eq!(d.desired_after(), 2);
        // another busy runner on the same instance (ledger or GitHub): it stays
        let acc = Acct {
            queued: 0,
            running: 1,
            busy: vec!["p-i-1-2".into()],
        };
        let d = decide_all(
            Trigger::Release,
            &p,
            &acc,
            &fleet(2),
            &seen(None, &finished, 0),
        );
        assert!(d.capacity.leaving().is_empty(), "{d:?}");
        let gh = [runner("p-i-1-2", true), runner("p-i-1", true)];
        let d = decide_all(
            Trigger::Release,
            &p,
            &account(0, 0),
            &fleet(2),
            &seen(Some(&gh), &finished, 0),
        );
        assert!(d.capacity.leaving().is_empty(), "{d:?}");
        // the finished runner's own lagging busy flag does not keep it
        let gh = [runner("p-i-1", true)];
        let d = decide_all(
            Trigger::Release,
            &p,
            &account(0, 0),
            &fleet(2),
            &seen(Some(&gh), &finished, 0),
        );
        assert_eq!(d.capacity.leaving(), vec!["i-1"]);
        // a non-ephemeral pool ignores finished runners
        p.ephemeral = false;
        let d = decide_all(
            Trigger::Release,
            &p,
            &account(0, 0),
            &fleet(2),
            &seen(None, &finished, 0),
        );
        assert_eq!(d.capacity, CapacityAction::Hold);
    }

    #[test]
    fn orphans_go_after_boot_grace_on_reconcile_only() {
        let p = pool(2, 10, 0, 1);
        let mut f = fleet(2);
        f.instances[0].launched_at = Some(1000);
        f.instances[1].launched_at = Some(1000);
        let runners = [runner("p-i-0", false)];
        let at = |now| {
            decide_all(
                Trigger::Reconcile,
                &p,
                &account(0, 0),
                &f,
                &seen(Some(&runners), &[], now),
            )
        };
        assert_eq!(at(1599).capacity, CapacityAction::Hold, "within grace");
        assert_eq!(at(1600).capacity.leaving(), vec!["i-1"]);
        // not on a delivery, not without GitHub's list, not while launching
        let d = decide_all(
            Trigger::Release,
            &p,
            &account(0, 0),
            &f,
            &seen(Some(&runners), &[], 5000),
        );
        assert!(d.capacity.leaving().is_empty());
        let d = decide_all(
            Trigger::Reconcile,
            &p,
            &account(0, 0),
            &f,
            &seen(None, &[], 5000),
        );
        assert!(d.capacity.leaving().is_empty());
        f.instances[1].launching = true;
        f.instances[1].launched_at = None;
        let d = decide_all(
            Trigger::Reconcile,
            &p,
            &account(0, 0),
            &f,
            &seen(Some(&runners), &[], 5000),
        );
        assert!(d.capacity.leaving().is_empty(), "{d:?}");
        // an unmapped busy ledger runner withholds it
        f.instances[1].launching = false;
        let acc = Acct {
            queued: 0,
            running: 1,
            busy: vec!["elsewhere".into()],
        };
        let d = decide_all(
            Trigger::Reconcile,
            &p,
            &acc,
            &f,
            &seen(Some(&runners), &[], 5000),
        );
        assert!(d.capacity.leaving().is_empty(), "{d:?}");
    }

    #[test]
    fn an_instance_whose_runner_never_came_online_is_a_candidate_past_grace() {
        let p = pool(2, 10, 0, 1);
        let mut f = fleet(2);
        f.instances[0].launched_at = Some(1000);
        f.instances[1].launched_at = Some(1000);
        let mut offline = runner("p-i-1", false);
        offline.online = false;
        let runners = [runner("p-i-0", false), offline];
        let at = |now| {
            decide_all(
                Trigger::Reconcile,
                &p,
                &account(0, 0),
                &f,
                &seen(Some(&runners), &[], now),
            )
        };
        assert_eq!(at(1599).capacity, CapacityAction::Hold, "within grace");
        assert_eq!(
            at(1600).capacity.leaving(),
            vec!["i-1"],
            "registered, never online"
        );
    }

    #[test]
    fn finished_ephemeral_slots_are_not_capacity() {
        // Two runners per instance, one instance: its first runner finished its job and
        // exited (GitHub lists only the second, busy); a new job is queued. The instance
        // has no slot for it: one more instance, not zero.
        let mut p = pool(0, 10, 0, 2);
        p.ephemeral = true;
        let f = fleet(1);
        let runners = [runner("p-i-0-2", true)];
        let acct = Acct {
            queued: 1,
            running: 1,
            busy: vec!["p-i-0-2".into()],
        };
        let d = decide_all(
            Trigger::Reconcile,
            &p,
            &acct,
            &f,
            &seen(Some(&runners), &[], 0),
        );
        assert_eq!(d.capacity, CapacityAction::ScaleOut { to: 2 }, "{d:?}");
        // The same on the completion that names the runner GitHub still lists.
        let both = [runner("p-i-0-1", false), runner("p-i-0-2", true)];
        let finished = ["p-i-0-1".to_string()];
        let d = decide_all(
            Trigger::Release,
            &p,
            &acct,
            &f,
            &seen(Some(&both), &finished, 0),
        );
        assert_eq!(d.capacity, CapacityAction::ScaleOut { to: 2 }, "{d:?}");
        // Persistent runners come back after a job: the slot is capacity.
        p.ephemeral = false;
        let d = decide_all(
            Trigger::Reconcile,
            &p,
            &acct,
            &f,
            &seen(Some(&runners), &[], 0),
        );
        assert_eq!(d.capacity, CapacityAction::Hold, "{d:?}");
    }

    #[test]
    fn a_partial_busy_list_protects_and_never_takes_out_or_unprotects() {
        // Target 0, three instances, i-0 protected and idle by the complete list; the pass
        // only knows its own runner on i-2.
        let mut f = fleet(3);
        f.instances[0].protected = true;
        let known = ["p-i-2".to_string()];
        let mut p = pool(0, 10, 0, 1);
        p.ephemeral = true;
        let finished = ["p-i-1".to_string()];
        let runners = [runner("p-i-0", false), runner("p-i-1", false)];
        for trigger in [Trigger::Demand, Trigger::Release, Trigger::Reconcile] {
            let d = decide(
                trigger,
                &p,
                &account(0, 1).ledger(),
                Busy::Known(&known),
                &f,
                &seen(Some(&runners), &finished, 5000),
            );
            assert_eq!(d.capacity, CapacityAction::Hold, "{trigger:?}: {d:?}");
            assert_eq!(d.protect, vec!["i-2".to_string()], "{trigger:?}");
            assert!(d.unprotect.is_empty(), "{trigger:?}: {d:?}");
        }
        // Pending launches are not cancelled either (desired above live instances).
        f.desired = 5;
        let d = decide(
            Trigger::Reconcile,
            &p,
            &account(0, 1).ledger(),
            Busy::Known(&known),
            &f,
            &Seen::NOTHING,
        );
        assert_eq!(d.capacity, CapacityAction::Hold, "{d:?}");
        // It still scales out.
        let d = decide(
            Trigger::Reconcile,
            &p,
            &account(9, 1).ledger(),
            Busy::Known(&known),
            &f,
            &Seen::NOTHING,
        );
        assert_eq!(d.capacity, CapacityAction::ScaleOut { to: 10 });
        // The same inputs with the complete list do take out and unprotect.
        f.desired = 3;
        let d = decide(
            Trigger::Reconcile,
            &p,
            &account(0, 1).ledger(),
            Busy::Complete(&known),
            &f,
            &seen(Some(&runners), &finished, 5000),
        );
        assert!(!d.capacity.leaving().is_empty(), "{d:?}");
        // The census needs the complete list.
        assert!(census(&p, Busy::Known(&known), &f, None).is_none());
        assert!(census(&p, Busy::Complete(&known), &f, None).is_some());
    }

    mod partial_busy_list {
        use super::*;
        use proptest::prelude::*;

        fn trigger() -> impl Strategy<Value = Trigger> {
            prop_oneof![
                Just(Trigger::Demand),
                Just(Trigger::Release),
                Just(Trigger::Reconcile)
            ]
        }

        /// (fleet size, desired above live, per-instance (protected, launching, launched_at,
        /// runner busy on GitHub / registered), queued, running, known runners, finished).
        #[allow(clippy::type_complexity)]
        fn inputs() -> impl Strategy<
            Value = (
                u32,
                u32,
                Vec<(bool, bool, Option<u64>, Option<bool>)>,
                (u32, u32, u32, u32, bool),
                Vec<usize>,
                Vec<usize>,
                bool,
            ),
        > {
            (0u32..8).prop_flat_map(|n| {
                (
                    Just(n),
                    0u32..3,
                    proptest::collection::vec(
                        (
                            any::<bool>(),
                            any::<bool>(),
                            proptest::option::of(0u64..2000),
                            proptest::option::of(any::<bool>()),
                        ),
                        n as usize,
                    ),
                    (0u32..12, 0u32..12, 0u32..3, 1u32..4, any::<bool>()),
                    proptest::collection::vec(0usize..10, 0..4),
                    proptest::collection::vec(0usize..10, 0..3),
                    any::<bool>(),
                )
            })
        }

        proptest! {
            /// With a partial busy list, whatever the trigger, fleet, GitHub's runners and
            /// finished runners: no removal, replacement, cancelled launch or unprotection,
            /// and desired capacity never goes down.
            #[test]
            fn never_takes_out_or_unprotects(
                trigger in trigger(),
                (n, extra, per, (queued, running, min, rpi, ephemeral), known, finished, github) in inputs(),
            ) {
                let mut f = fleet(n);
                f.desired = n + extra;
                for (i, (protected, launching, launched_at, _)) in f.instances.iter_mut().zip(&per) {
                    i.protected = *protected;
                    i.launching = *launching;
                    i.launched_at = *launched_at;
                }
                let runners: Vec<Runner> = per
                    .iter()
                    .enumerate()
                    .filter_map(|(k, (_, _, _, r))| r.map(|busy| runner(&format!("p-i-{k}"), busy)))
                    .collect();
                let known: Vec<String> = known.iter().map(|k| format!("p-i-{k}")).collect();
                let finished: Vec<String> = finished.iter().map(|k| format!("p-i-{k}")).collect();
                let mut p = pool(min, 20, 0, rpi);
                p.ephemeral = ephemeral;
                let acct = Acct { queued, running, busy: known.clone() };
                let d = decide(
                    trigger,
                    &p,
                    &acct.ledger(),
                    Busy::Known(&known),
                    &f,
                    &seen(github.then_some(runners.as_slice()), &finished, 5000),
                );
                prop_assert!(
                    matches!(d.capacity, CapacityAction::Hold | CapacityAction::ScaleOut { .. }),
                    "{:?}", d
                );
                prop_assert!(d.capacity.leaving().is_empty());
                prop_assert!(d.unprotect.is_empty(), "{:?}", d);
                prop_assert!(d.desired_after() >= f.desired, "{:?}", d);
                // Protection only ever goes on instances a known or GitHub-busy runner maps to.
                for id in &d.protect {
                    let i = f.instances.iter().find(|i| &i.id == id).expect("instance");
                    prop_assert!(
                        known.iter().any(|r| i.runs(r))
                            || runners.iter().any(|r| r.busy && i.runs(&r.name)),
                        "{} protected", id
                    );
                }
                // The same decision with the complete list never protects less.
                let full = decide(trigger, &p, &acct.ledger(), Busy::Complete(&known), &f,
                    &seen(github.then_some(runners.as_slice()), &finished, 5000));
                for id in &d.protect {
                    prop_assert!(full.protect.contains(id));
                }
            }
        }
    }
}
