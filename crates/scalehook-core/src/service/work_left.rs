//! What passes of this process left undone: a pass that stops at its time or iteration
//! bound while the pool's account still moves (records of deliveries it deferred) notes the
//! pool here, with how far the account moved past what it applied; a pass that ends on a
//! settled account clears it. `hand_on` runs the passes that finish the work; the metric
//! `scalehook_pass_work_left` shows it.

use crate::ledger::PoolLedger;
use crate::metrics::Metrics;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Pools with work left by this process's last pass over them, and how much.
#[derive(Debug, Default)]
pub(super) struct WorkLeft(Mutex<BTreeMap<String, u32>>);

impl WorkLeft {
    /// Notes how a pass over `pool` ended: `left` is 0 when it settled.
    pub(super) fn note(&self, metrics: &Metrics, pool: &str, left: u32) {
        let mut pools = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if left == 0 {
            pools.remove(pool);
        } else {
            pools.insert(pool.to_string(), left);
        }
        metrics.set_work_left(pool, left);
    }

    /// Asks for a pass over `pool` after the answer (a spot pool's spill into it changed),
    /// unless work is noted there already. The pass itself clears it.
    pub(super) fn hand_on(&self, pool: &str) {
        let mut pools = self.0.lock().unwrap_or_else(|p| p.into_inner());
        pools.entry(pool.to_string()).or_insert(1);
    }

    /// The pools with work left, in name order.
    pub(super) fn pools(&self) -> Vec<String> {
        let pools = self.0.lock().unwrap_or_else(|p| p.into_inner());
        pools.keys().cloned().collect()
    }

    pub(super) fn any(&self) -> bool {
        !self.0.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }
}

/// How far `now` is past `applied`, the account a pass last decided on: the job counts that
/// moved (at least 1 when the accounts differ, 0 when they are the same).
pub(super) fn moved(applied: Option<&PoolLedger>, now: &PoolLedger) -> u32 {
    match applied {
        Some(a) if a == now => 0,
        Some(a) => (a.queued.abs_diff(now.queued) + a.running.abs_diff(now.running)).max(1),
        None => 1,
    }
}
