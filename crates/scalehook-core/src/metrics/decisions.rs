//! The decisions taken for each pool, the last [`DECISIONS_PER_POOL`] of them, in memory:
//! what `serve`'s `/status?job=<id>` shows next to a job's record, so "why does my job
//! wait?" has an answer (the pool's demand, target and action at each pass). Bounded, so a
//! long-running process holds the same memory whatever its traffic; per process, so a
//! cloud function's copy lives only as long as its instance (the clouds' answer is the log
//! query in docs/runbook.md).

use crate::ledger::PoolLedger;
use crate::policy::Decision;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

/// Decisions kept per pool.
pub const DECISIONS_PER_POOL: usize = 64;

/// One decision as `/status?job=` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoggedDecision {
    /// Unix seconds.
    pub at: u64,
    /// The ledger's counts the decision read.
    pub queued: u32,
    pub running: u32,
    /// Desired capacity before, the policy's target, and after the action.
    pub current: u32,
    pub target: u32,
    pub desired_after: u32,
    pub action: &'static str,
    pub reason: &'static str,
    /// Instances the action takes out (removed or replaced).
    pub leaving: Vec<String>,
}

#[derive(Debug, Default)]
pub struct DecisionLog {
    pools: Mutex<BTreeMap<String, VecDeque<LoggedDecision>>>,
}

impl DecisionLog {
    /// Keeps `decision` (taken at `at` over `account`), dropping the pool's oldest past
    /// [`DECISIONS_PER_POOL`].
    pub fn note(&self, pool: &str, at: u64, decision: &Decision, account: &PoolLedger) {
        let entry = LoggedDecision {
            at,
            queued: account.queued,
            running: account.running,
            current: decision.current,
            target: decision.target,
            desired_after: decision.desired_after(),
            action: decision.capacity.name(),
            reason: decision.reason,
            leaving: decision
                .capacity
                .leaving()
                .into_iter()
                .map(str::to_string)
                .collect(),
        };
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let log = pools.entry(pool.to_string()).or_default();
        if log.len() == DECISIONS_PER_POOL {
            log.pop_front();
        }
        log.push_back(entry);
    }

    /// The pool's kept decisions taken at or after `since`, oldest first.
    pub fn since(&self, pool: &str, since: u64) -> Vec<LoggedDecision> {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools
            .get(pool)
            .map(|log| log.iter().filter(|d| d.at >= since).cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::CapacityAction;

    #[test]
    fn keeps_the_last_decisions_per_pool() {
        let log = DecisionLog::default();
        let d = Decision {
            current: 1,
            target: 2,
            capacity: CapacityAction::ScaleOut { to: 2 },
            protect: vec![],
            unprotect: vec![],
            reason: "demand",
        };
        let account = PoolLedger {
            queued: 1,
            running: 0,
            changes: 1,
        };
        for at in 0..(DECISIONS_PER_POOL as u64 + 10) {
            log.note("a", at, &d, &account);
        }
        log.note("b", 5, &d, &account);
        let a = log.since("a", 0);
        assert_eq!(a.len(), DECISIONS_PER_POOL);
        assert_eq!(a[0].at, 10, "the oldest are dropped");
        assert_eq!(log.since("a", 70).len(), 4);
        assert_eq!(log.since("b", 0)[0].action, "scale_out");
        assert!(log.since("c", 0).is_empty());
    }
}
