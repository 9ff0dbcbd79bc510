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
//! while a busy runner maps to no instance (it could be on any of them).

use crate::config::PoolConfig;
use crate::fleet::{FleetState, Instance};
use crate::ledger::PoolLedger;

/// What caused the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A job was queued, is waiting, or started: capacity may only go up.
    Demand,
    /// A job completed: capacity may go down by one instance.
    Release,
    /// The scheduled pass: converge both ways.
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
}

impl CapacityAction {
    /// The action's name in logs, metrics and HTTP answers.
    pub fn name(&self) -> &'static str {
        match self {
            CapacityAction::Hold => "hold",
            CapacityAction::ScaleOut { .. } => "scale_out",
            CapacityAction::CancelLaunches { .. } => "cancel_launches",
            CapacityAction::Remove { .. } => "remove_idle",
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
        }
    }
}

/// The capacity, in instances, the pool should have for its account.
pub fn target(pool: &PoolConfig, ledger: &PoolLedger, fleet: &FleetState) -> u32 {
    let slots = u64::from(ledger.running) + u64::from(ledger.queued) + u64::from(pool.standby);
    let rpi = u64::from(pool.runners_per_instance.max(1));
    let instances = u32::try_from(slots.div_ceil(rpi)).unwrap_or(u32::MAX);
    let lo = pool.min.max(fleet.min.unwrap_or(0));
    let hi = pool.max.min(fleet.max.unwrap_or(u32::MAX)).max(lo);
    instances.clamp(lo, hi)
}

pub fn decide(
    trigger: Trigger,
    pool: &PoolConfig,
    ledger: &PoolLedger,
    fleet: &FleetState,
) -> Decision {
    let current = fleet.desired;
    let target = target(pool, ledger, fleet);
    let busy = BusyMap::new(&fleet.instances, &ledger.busy_runners);
    let (protect, unprotect) = protection_changes(fleet, &busy);
    let decision = |capacity, reason| Decision {
        current,
        target,
        capacity,
        protect: protect.clone(),
        unprotect: unprotect.clone(),
        reason,
    };

    if target > current {
        return decision(CapacityAction::ScaleOut { to: target }, "below target");
    }
    if target == current {
        return decision(CapacityAction::Hold, "at target");
    }
    if trigger == Trigger::Demand {
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
    let idle_slots = (u64::from(current) * u64::from(rpi))
        .saturating_sub(u64::from(ledger.running) + u64::from(ledger.queued));
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

/// Which instances busy runners map to.
struct BusyMap {
    busy_ids: Vec<String>,
    /// Busy runners that map to no live instance.
    unmapped: usize,
}

impl BusyMap {
    fn new(instances: &[Instance], busy_runners: &[String]) -> Self {
        let mut busy_ids = Vec::new();
        let mut unmapped = 0;
        for runner in busy_runners {
            let mut mapped = false;
            for i in instances.iter().filter(|i| i.runs(runner)) {
                mapped = true;
                if !busy_ids.contains(&i.id) {
                    busy_ids.push(i.id.clone());
                }
            }
            if !mapped {
                unmapped += 1;
            }
        }
        Self { busy_ids, unmapped }
    }

    fn is_busy(&self, id: &str) -> bool {
        self.busy_ids.iter().any(|b| b == id)
    }
}

fn protection_changes(fleet: &FleetState, busy: &BusyMap) -> (Vec<String>, Vec<String>) {
    if !fleet.supports_protection {
        return (Vec::new(), Vec::new());
    }
    let protect = fleet
        .instances
        .iter()
        .filter(|i| busy.is_busy(&i.id) && !i.protected)
        .map(|i| i.id.clone())
        .collect();
    // With an unmapped busy runner any protected instance may be its host: keep them.
    let unprotect = if busy.unmapped > 0 {
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

    fn account(queued: u32, running: u32) -> PoolLedger {
        PoolLedger {
            queued,
            running,
            busy_runners: (0..running).map(|i| format!("runner-i-{i}")).collect(),
        }
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
            let d = decide(
                Trigger::Demand,
                &pool(0, max, standby, 1),
                &account(queued, running),
                &fleet(current),
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
            let d = decide(
                Trigger::Release,
                &pool(min, 10, standby, 1),
                &account(0, running),
                &fleet(current),
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
        assert_eq!(target(&p, &account(6, 0), &fleet(0)), 2); // ceil(7/4)
        assert_eq!(target(&p, &account(7, 0), &fleet(0)), 2); // ceil(8/4)
        assert_eq!(target(&p, &account(8, 0), &fleet(0)), 3);
        // 2 instances = 8 slots, 3 running: idle 5 >= standby 1 + 4: remove one
        let on_first = |n: usize| PoolLedger {
            queued: 0,
            running: n as u32,
            busy_runners: (0..n).map(|k| format!("i-0-runner-{k}")).collect(),
        };
        let d = decide(Trigger::Release, &p, &on_first(3), &fleet(2));
        assert_eq!(
            d.capacity,
            CapacityAction::Remove {
                instance_ids: vec!["i-1".into()]
            }
        );
        // 4 running: idle 4 < 5: keep
        let d = decide(Trigger::Release, &p, &on_first(4), &fleet(2));
        assert_eq!(d.capacity, CapacityAction::Hold);
    }

    #[test]
    fn fleet_bounds_clamp_target() {
        let mut f = fleet(0);
        f.max = Some(3);
        f.min = Some(1);
        assert_eq!(target(&pool(0, 10, 0, 1), &account(9, 0), &f), 3);
        assert_eq!(target(&pool(0, 10, 0, 1), &account(0, 0), &f), 1);
    }

    #[test]
    fn scale_in_never_picks_busy_instance() {
        let p = pool(0, 10, 0, 1);
        // 3 instances, runner on i-1 busy
        let acc = PoolLedger {
            queued: 0,
            running: 1,
            busy_runners: vec!["gh-i-1".into()],
        };
        let d = decide(Trigger::Reconcile, &p, &acc, &fleet(3));
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
        let acc = PoolLedger {
            queued: 0,
            running: 1,
            busy_runners: vec!["somewhere-else".into()],
        };
        let mut f = fleet(3);
        f.instances[0].protected = true;
        let d = decide(Trigger::Reconcile, &p, &acc, &f);
        assert_eq!(d.capacity, CapacityAction::Hold);
        assert!(d.unprotect.is_empty());
    }

    #[test]
    fn idle_protected_instances_are_unprotected() {
        let mut f = fleet(2);
        f.instances[1].protected = true;
        let d = decide(Trigger::Demand, &pool(2, 10, 0, 1), &account(0, 0), &f);
        assert_eq!(d.unprotect, vec!["i-1".to_string()]);
        assert_eq!(d.capacity, CapacityAction::Hold);
    }

    #[test]
    fn a_removed_instance_is_not_also_unprotected() {
        let mut f = fleet(2);
        f.instances[1].protected = true;
        let d = decide(Trigger::Release, &pool(0, 10, 0, 1), &account(0, 0), &f);
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
        let d = decide(Trigger::Reconcile, &pool(0, 10, 0, 1), &account(0, 0), &f);
        assert_eq!(d.capacity, CapacityAction::CancelLaunches { to: 2 });
        let d = decide(Trigger::Release, &pool(0, 10, 0, 1), &account(0, 0), &f);
        assert_eq!(d.capacity, CapacityAction::CancelLaunches { to: 4 });
    }

    #[test]
    fn launching_instances_are_removed_first() {
        let mut f = fleet(3);
        f.instances[0].launching = true;
        let d = decide(Trigger::Release, &pool(0, 10, 0, 1), &account(0, 0), &f);
        assert_eq!(
            d.capacity,
            CapacityAction::Remove {
                instance_ids: vec!["i-0".into()]
            }
        );
    }
}
