//! The fleet as capacity: a spot pool's instances that got an interruption warning while
//! running a job stay (the job may still finish) but are not capacity, so the pass launches
//! their replacements early. The pass describes and sets the desired capacity through
//! these two calls; every other pool's fleet is the cloud's, as described.

use super::Service;
use crate::config::{Capacity, PoolConfig};
use crate::fleet::{FleetError, FleetState};
use crate::interruption::{self, Interruptions};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Per pool: how many instances the last description left out (what a desired capacity set
/// on that view adds back). A pool's passes in one process are serialized by its lock.
#[derive(Debug, Default)]
pub(super) struct LeftOut(Mutex<HashMap<String, u32>>);

impl Service {
    /// The pool's fleet as capacity. For a spot pool the description and the pool's
    /// interruptions are read together (one round trip); an unreadable interruption record
    /// only delays a replacement (logged), it never fails the pass.
    pub(super) async fn describe_capacity(
        &self,
        pool: &PoolConfig,
    ) -> Result<FleetState, FleetError> {
        if pool.capacity != Capacity::Spot {
            return self.fleet.describe(pool).await;
        }
        let name = format!("{}:{}", interruption::CURSOR, pool.name);
        let (described, stored) =
            tokio::join!(self.fleet.describe(pool), self.ledger.cursor(&name));
        let mut state = described?;
        let memory = match stored {
            Ok(v) => Interruptions::parse(v.as_deref()),
            Err(e) => {
                tracing::warn!(target: "scalehook::ledger", pool = %pool.name, error = %e, "reading interruptions failed: no instance left out of capacity");
                Interruptions::default()
            }
        };
        let out: HashSet<&str> = memory.out_of_capacity(self.clock.now()).collect();
        let n = interruption::discount(&mut state, &out);
        if let Ok(mut m) = self.left_out.0.lock() {
            m.insert(pool.name.clone(), n);
        }
        Ok(state)
    }

    /// Sets the desired capacity `to` of the view [`Service::describe_capacity`] gave: the
    /// instances it left out are added back.
    pub(super) async fn set_capacity(&self, pool: &PoolConfig, to: u32) -> Result<(), FleetError> {
        let n = self
            .left_out
            .0
            .lock()
            .ok()
            .and_then(|m| m.get(&pool.name).copied())
            .unwrap_or(0);
        self.fleet.set_desired(pool, to.saturating_add(n)).await
    }
}
