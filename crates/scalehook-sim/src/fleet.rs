//! The simulated fleet the real scalehook service drives: instances appear at once as
//! `launching` and register their runners `boot_seconds` later, on the virtual clock.
//! Removing an instance removes it for real: a job running on it is interrupted. A pool
//! with a warm pool launches from it first ([`World::boot`]); warm instances are not
//! listed, as a cloud group's warm pool is not part of its capacity.

use crate::world::World;
use async_trait::async_trait;
use scalehook_core::{Fleet, FleetError, FleetState, Instance, PoolConfig};
use std::sync::{Arc, Mutex, MutexGuard};

/// A [`Fleet`] over the simulated world. Like a cloud group it accepts any desired
/// capacity (the policy keeps it within the pool's bounds), and lowering desired capacity
/// removes the newest unprotected instances.
#[derive(Debug, Clone)]
pub(crate) struct SimFleet {
    world: Arc<Mutex<World>>,
}

impl SimFleet {
    pub fn new(world: Arc<Mutex<World>>) -> Self {
        Self { world }
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn pool_index(world: &World, pool: &PoolConfig) -> Result<usize, FleetError> {
    world
        .pool_index(&pool.name)
        .ok_or_else(|| FleetError::NotFound(format!("simulated pool {}", pool.name)))
}

#[async_trait]
impl Fleet for SimFleet {
    async fn describe(&self, pool: &PoolConfig) -> Result<FleetState, FleetError> {
        let w = self.lock();
        let p = &w.pools[pool_index(&w, pool)?];
        Ok(FleetState {
            // Launches owed (failed spot launches) are still desired, as in a cloud group.
            desired: p.instances.len() as u32 + p.short,
            min: None,
            max: None,
            instances: p
                .instances
                .iter()
                .map(|i| Instance {
                    id: i.id.clone(),
                    runner_key: i.id.clone(),
                    launching: !i.ready(w.now),
                    protected: i.protected,
                    launched_at: Some(i.launched_at),
                })
                .collect(),
            supports_protection: true,
            ..FleetState::default()
        })
    }

    async fn set_desired(&self, pool: &PoolConfig, desired: u32) -> Result<(), FleetError> {
        let mut w = self.lock();
        let n = pool_index(&w, pool)?;
        // A launch that fails (no spot capacity, no overflow room) is owed: the group
        // retries it every tick (World::retry_launches).
        let held = |w: &World| w.pools[n].instances.len() as u32 + w.pools[n].short;
        while held(&w) < desired {
            w.boot(n);
        }
        while held(&w) > desired && w.pools[n].short > 0 {
            w.pools[n].short -= 1;
        }
        while (w.pools[n].instances.len() as u32) > desired {
            let Some(victim) = w.pools[n].instances.iter().rposition(|i| !i.protected) else {
                break;
            };
            let id = w.pools[n].instances[victim].id.clone();
            w.remove_instance(n, &id);
        }
        Ok(())
    }

    async fn remove_instance(
        &self,
        pool: &PoolConfig,
        instance_id: &str,
    ) -> Result<(), FleetError> {
        let mut w = self.lock();
        let n = pool_index(&w, pool)?;
        if w.remove_instance(n, instance_id) {
            Ok(())
        } else {
            Err(FleetError::NotFound(format!("instance {instance_id}")))
        }
    }

    async fn replace_instance(
        &self,
        pool: &PoolConfig,
        instance_id: &str,
    ) -> Result<(), FleetError> {
        let mut w = self.lock();
        let n = pool_index(&w, pool)?;
        if !w.remove_instance(n, instance_id) {
            return Err(FleetError::NotFound(format!("instance {instance_id}")));
        }
        w.boot(n);
        Ok(())
    }

    async fn set_protection(
        &self,
        pool: &PoolConfig,
        instance_ids: &[String],
        protected: bool,
    ) -> Result<(), FleetError> {
        let mut w = self.lock();
        let n = pool_index(&w, pool)?;
        for i in w.pools[n].instances.iter_mut() {
            if instance_ids.contains(&i.id) {
                i.protected = protected;
            }
        }
        Ok(())
    }
}
