//! A spot pool's overflow in the pass (issue 23): the I/O around the pure
//! [`crate::overflow`]. A spot pool's pass writes what it cannot launch to a ledger cursor
//! (`spill:<overflow>:<pool>`, so every function instance sees it) and hands a pass over the
//! overflow pool on when the figure changed; the overflow pool's pass adds what the pools
//! spilling into it wrote to its target (within its own max, [`crate::policy::Seen::spill`]).

use super::Service;
use crate::config::PoolConfig;
use crate::fleet::FleetState;
use crate::ledger::LedgerError;
use crate::overflow::{spill_cursor, spill_of, spilling_into, unmet};

impl Service {
    /// What the pools overflowing into `pool` spill into it now: one cursor read per such
    /// pool, none for a pool nothing overflows into.
    pub(super) async fn spill_into(&self, pool: &PoolConfig) -> Result<u32, LedgerError> {
        let mut total = 0u32;
        for spot in spilling_into(&self.config.pools, &pool.name) {
            let stored = self
                .ledger
                .cursor(&spill_cursor(&pool.name, &spot.name))
                .await?;
            total = total.saturating_add(spill_of(stored.as_deref()));
        }
        Ok(total)
    }

    /// The busy runners of the pools overflowing into `pool` (jobs recorded in their
    /// accounts) that run on `pool`'s instances: the overflow pool's scale-in must keep
    /// those instances too (invariant 6), and a spot pool's busy runner on a spot instance
    /// is none of its business (it would map to no instance here and withhold scale-in).
    pub(super) async fn spilled_busy(
        &self,
        pool: &PoolConfig,
        fleet: &FleetState,
    ) -> Result<Vec<String>, LedgerError> {
        let mut out = Vec::new();
        for spot in spilling_into(&self.config.pools, &pool.name) {
            let busy = self.ledger.busy_runners(&spot.name).await?;
            out.extend(
                busy.into_iter()
                    .filter(|r| fleet.instances.iter().any(|i| i.runs(r))),
            );
        }
        Ok(out)
    }

    /// Notes what a pool with an `overflow` cannot have for `target`, given its fleet:
    /// `noted` is what this pass knows the cursor holds (read once, on the first call).
    /// Writes the cursor and hands a pass over the overflow pool on only when the figure
    /// changed. A pool without an overflow costs nothing.
    pub(super) async fn note_spill(
        &self,
        pool: &PoolConfig,
        target: u32,
        fleet: &FleetState,
        noted: &mut Option<u32>,
    ) -> Result<(), LedgerError> {
        let Some(overflow) = pool.overflow.as_deref() else {
            return Ok(());
        };
        let in_service = fleet.instances.iter().filter(|i| !i.launching).count();
        let in_service = u32::try_from(in_service).unwrap_or(u32::MAX);
        let spill = unmet(target, in_service, fleet.launch_failure.is_some());
        let name = spill_cursor(overflow, &pool.name);
        let stored = match *noted {
            Some(n) => n,
            None => spill_of(self.ledger.cursor(&name).await?.as_deref()),
        };
        if stored != spill {
            self.ledger.set_cursor(&name, &spill.to_string()).await?;
            tracing::info!(
                target: "scalehook::overflow",
                pool = %pool.name,
                overflow,
                spill,
                launch_failure = fleet.launch_failure.as_deref().unwrap_or("none"),
                "spot launches: spill to the overflow pool changed"
            );
            // The overflow pool's pass runs after the answer (`hand_on`), or at reconcile.
            self.work_left.hand_on(overflow);
        }
        *noted = Some(spill);
        self.metrics.set_spilled(&pool.name, overflow, spill);
        Ok(())
    }
}
