//! Housekeeping of unread runner configurations: a JIT configuration stored for an instance
//! that never took it (an abandoned launch, a launch event retried after its instance was
//! replaced) stays in the store forever and keeps a registered runner's credential there.
//! Reconcile deletes one once it is older than [`UNREAD_CONFIG_MAX_AGE`] and its instance is
//! gone or past launching (its boot script reads and deletes it within the first minutes).
//!
//! The decision is [`unread_to_delete`], a pure function of (stored configurations, the
//! fleets' states, now); the I/O is the store's ([`UnreadConfigs`], implemented next to its
//! `RunnerConfigStore` by each store that needs it), driven by [`sweep`].

use crate::config::PoolConfig;
use crate::fleet::{Fleet, FleetState};
use async_trait::async_trait;
use std::time::Duration;

/// A configuration this old is past any boot: the launch lifecycle hook gives an instance
/// at most an hour (its heartbeat timeout, `infra/aws/runners`), and the boot script takes
/// its configuration in its first minutes.
pub const UNREAD_CONFIG_MAX_AGE: u64 = 2 * 3600;

/// One configuration in a store, not yet taken by its instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConfig {
    /// The instance key it was stored for (the EC2 instance id on AWS).
    pub instance_key: String,
    /// Unix seconds of the write.
    pub stored_at: u64,
}

/// The housekeeping side of a runner configuration store. Stores that expire their own
/// (Azure's one-day lifecycle rule on the JIT container) do not implement it.
#[async_trait]
pub trait UnreadConfigs: Send + Sync {
    /// The configurations stored and not yet taken.
    async fn unread(&self) -> Result<Vec<StoredConfig>, String>;
    /// Deletes the configuration of `instance_key`; one already gone is not an error.
    async fn delete(&self, instance_key: &str) -> Result<(), String>;
}

/// At most this many configurations are deleted per pass (the rest on the next pass), so a
/// backlog cannot hold a reconcile pass.
pub const MAX_DELETES_PER_PASS: usize = 50;

/// The instance keys whose configurations to delete: older than `max_age`, and no instance
/// of any fleet with that key is still launching. `fleets` must be every pool's state the
/// store serves (an incomplete picture would delete a launching instance's configuration:
/// [`sweep`] runs only when every describe succeeded).
pub fn unread_to_delete(
    stored: &[StoredConfig],
    fleets: &[FleetState],
    now: u64,
    max_age: u64,
) -> Vec<String> {
    let launching = |key: &str| {
        fleets
            .iter()
            .flat_map(|f| &f.instances)
            .any(|i| i.launching && i.runner_key == key)
    };
    stored
        .iter()
        .filter(|c| now.saturating_sub(c.stored_at) >= max_age)
        .filter(|c| !launching(&c.instance_key))
        .map(|c| c.instance_key.clone())
        .take(MAX_DELETES_PER_PASS)
        .collect()
}

/// Lists the store's unread configurations, decides, deletes; returns how many it deleted.
/// A configuration deleted meanwhile (its instance took it) is not an error.
pub async fn sweep(
    store: &dyn UnreadConfigs,
    fleets: &[FleetState],
    now: u64,
) -> Result<u32, String> {
    let stored = store.unread().await?;
    let mut deleted = 0;
    for key in unread_to_delete(&stored, fleets, now, UNREAD_CONFIG_MAX_AGE) {
        store.delete(&key).await?;
        deleted += 1;
    }
    Ok(deleted)
}

/// Reconcile's housekeeping step: describes every pool (all must answer, or nothing is
/// deleted), then [`sweep`]s, all within `timeout`; writes one log line with the outcome.
pub async fn run(
    store: &dyn UnreadConfigs,
    fleet: &dyn Fleet,
    pools: &[PoolConfig],
    now: u64,
    timeout: Duration,
) -> Result<u32, String> {
    let work = async {
        let mut fleets = Vec::with_capacity(pools.len());
        for pool in pools {
            fleets.push(fleet.describe(pool).await.map_err(|e| e.to_string())?);
        }
        sweep(store, &fleets, now).await
    };
    let outcome = tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err("did not finish within cloud_timeout_ms".into()));
    match &outcome {
        Ok(deleted) => tracing::info!(
            target: "scalehook::housekeeping",
            deleted,
            "unread runner configurations deleted"
        ),
        Err(error) => tracing::warn!(
            target: "scalehook::housekeeping",
            error = error.as_str(),
            "runner configuration housekeeping failed (next pass retries)"
        ),
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Instance;

    fn instance(key: &str, launching: bool) -> Instance {
        Instance {
            id: key.into(),
            runner_key: key.into(),
            launching,
            protected: false,
            launched_at: None,
        }
    }

    fn fleet(instances: Vec<Instance>) -> FleetState {
        FleetState {
            desired: instances.len() as u32,
            min: None,
            max: None,
            instances,
            supports_protection: true,
            ..FleetState::default()
        }
    }

    fn stored(key: &str, at: u64) -> StoredConfig {
        StoredConfig {
            instance_key: key.into(),
            stored_at: at,
        }
    }

    #[test]
    fn old_configs_of_gone_or_booted_instances_go_launching_and_recent_ones_stay() {
        let now = 100_000;
        let old = now - UNREAD_CONFIG_MAX_AGE;
        let configs = [
            stored("i-gone", old),
            stored("i-booted", old),
            stored("i-launching", old),
            stored("i-fresh", now - 60),
        ];
        let fleets = [
            fleet(vec![instance("i-booted", false)]),
            fleet(vec![instance("i-launching", true)]),
        ];
        assert_eq!(
            unread_to_delete(&configs, &fleets, now, UNREAD_CONFIG_MAX_AGE),
            vec!["i-gone", "i-booted"]
        );
        assert!(unread_to_delete(&configs, &fleets, old, UNREAD_CONFIG_MAX_AGE).is_empty());
    }

    #[test]
    fn a_pass_deletes_a_bounded_number() {
        let configs: Vec<_> = (0..MAX_DELETES_PER_PASS + 5)
            .map(|i| stored(&format!("i-{i}"), 0))
            .collect();
        assert_eq!(
            unread_to_delete(&configs, &[], UNREAD_CONFIG_MAX_AGE, UNREAD_CONFIG_MAX_AGE).len(),
            MAX_DELETES_PER_PASS
        );
    }
}
