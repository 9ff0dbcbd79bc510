//! The fleet: the cloud capacity behind a pool (an ASG, a VMSS, or simulated instances).

use crate::config::PoolConfig;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;

/// A pool's capacity as the cloud reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetState {
    /// Desired capacity, in instances.
    pub desired: u32,
    /// The cloud group's own bounds, when it has them (an ASG rejects a desired capacity
    /// outside [min, max]); the policy clamps to them as well as to the pool's.
    pub min: Option<u32>,
    pub max: Option<u32>,
    /// Live instances (launching or in service; terminating ones are left out).
    pub instances: Vec<Instance>,
    /// Whether [`Fleet::set_protection`] does anything on this fleet.
    pub supports_protection: bool,
    /// Launches are failing (no spot capacity for the pool's instance types, allocation
    /// failures), with a short reason for the log: the cloud's error code, never its whole
    /// answer. `None` while launches succeed or the fleet does not tell. A spot pool with
    /// an `overflow` spills its unmet demand there while this is set (`crate::overflow`).
    pub launch_failure: Option<String>,
    /// Instances waiting in the group's warm pool (AWS: `DescribeWarmPool`, lifecycle
    /// states `Warmed:*`). Not capacity: never in `instances`, never given a runner while
    /// warm; reported apart (the census's `warm` state).
    pub warm: u32,
}

/// One instance of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The id the cloud uses to remove this instance (EC2 instance id, VMSS instance id).
    pub id: String,
    /// What a runner name on this instance contains, by the documented naming convention
    /// (the EC2 instance id on AWS, the VM computer name on Azure).
    pub runner_key: String,
    /// Still launching: it has no runner yet.
    pub launching: bool,
    /// Protected from scale-in by scalehook (AWS instance scale-in protection).
    pub protected: bool,
    /// Unix seconds of the launch, where the cloud reports it (VMSS `timeCreated`, the local
    /// fleet); `None` where it does not (an ASG's describe): boot grace then runs from the
    /// first time scalehook saw the instance without a runner (never from "unknown").
    pub launched_at: Option<u64>,
}

impl Instance {
    /// Does a runner with this name run on this instance? Case-insensitive containment,
    /// so `gh-runner-i-0abc123-2` maps to instance `i-0abc123`.
    pub fn runs(&self, runner_name: &str) -> bool {
        // Compared in place: the policy calls this for every (busy runner, instance) pair
        // on every delivery, so lower-cased copies of both names were most of its cost.
        let key = self.runner_key.as_bytes();
        !key.is_empty()
            && runner_name
                .as_bytes()
                .windows(key.len())
                .any(|w| w.eq_ignore_ascii_case(key))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// The group does not exist or the pool has no fleet of this provider's kind.
    #[error("fleet not found: {0}")]
    NotFound(String),
    /// Throttled, timed out or a 5xx after bounded retries.
    #[error("fleet unavailable: {0}")]
    Unavailable(String),
    /// The cloud refused the request (validation, permissions).
    #[error("fleet rejected the request: {0}")]
    Rejected(String),
}

/// The capacity provider of one cloud. Implementations hold no pool state of their own:
/// the pool's target comes in with every call.
#[async_trait]
pub trait Fleet: Send + Sync {
    async fn describe(&self, pool: &PoolConfig) -> Result<FleetState, FleetError>;
    /// Sets the desired capacity. Used to scale out, and to scale in only while fewer
    /// instances are live than desired (so no running instance can be picked).
    async fn set_desired(&self, pool: &PoolConfig, desired: u32) -> Result<(), FleetError>;
    /// Removes one chosen instance and decrements the desired capacity with it.
    async fn remove_instance(&self, pool: &PoolConfig, instance_id: &str)
        -> Result<(), FleetError>;
    /// Removes one chosen instance and keeps the desired capacity, so the cloud launches a
    /// fresh one in its place (an ephemeral runner's instance when the pool is at target).
    async fn replace_instance(
        &self,
        pool: &PoolConfig,
        instance_id: &str,
    ) -> Result<(), FleetError> {
        let _ = (pool, instance_id);
        Err(FleetError::Rejected(
            "this fleet cannot replace an instance".into(),
        ))
    }
    /// Sets or clears scale-in protection on instances. Default: not supported, no-op.
    async fn set_protection(
        &self,
        _pool: &PoolConfig,
        _instance_ids: &[String],
        _protected: bool,
    ) -> Result<(), FleetError> {
        Ok(())
    }
}

/// Simulated instances in process. New instances are in service at once and are named
/// `<pool>-<nnnn>`, which is also their runner key (so a runner called `linux-x64-0003` runs on
/// instance `linux-x64-0003`). Starts every pool at its `min`. With a clock
/// ([`LocalFleet::with_clock`]) instances carry their launch time.
#[derive(Default)]
pub struct LocalFleet {
    groups: Mutex<HashMap<String, LocalGroup>>,
    clock: Option<std::sync::Arc<dyn crate::clock::Clock>>,
}

impl std::fmt::Debug for LocalFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFleet")
            .field("groups", &self.groups)
            .field("clock", &self.clock.is_some())
            .finish()
    }
}

#[derive(Debug, Default, Clone)]
struct LocalGroup {
    next: u64,
    instances: Vec<Instance>,
    /// Launches failing ([`LocalFleet::fail_launches`]): why.
    failing: Option<String>,
    /// Desired instances not launched while launches fail (a cloud group keeps trying).
    owed: u32,
}

impl LocalGroup {
    fn launch(&mut self, pool: &str, now: Option<u64>) {
        if self.failing.is_some() {
            self.owed += 1;
            return;
        }
        self.next += 1;
        let id = format!("{pool}-{:04}", self.next);
        self.instances.push(Instance {
            runner_key: id.clone(),
            id,
            launching: false,
            protected: false,
            launched_at: now,
        });
    }
}

impl LocalFleet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stamps new instances with this clock's time (`launched_at`), for boot grace.
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn crate::clock::Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Makes the pool's launches fail (`Some(reason)`, as a spot pool without capacity)
    /// or succeed again (`None`: the launches owed since come up at once).
    pub fn fail_launches(&self, pool: &PoolConfig, reason: Option<&str>) {
        self.with_group(pool, |g, now| {
            g.failing = reason.map(str::to_string);
            if g.failing.is_none() {
                for _ in 0..std::mem::take(&mut g.owed) {
                    g.launch(&pool.name, now);
                }
            }
        });
    }

    fn with_group<T>(
        &self,
        pool: &PoolConfig,
        f: impl FnOnce(&mut LocalGroup, Option<u64>) -> T,
    ) -> T {
        let now = self.clock.as_ref().map(|c| c.now());
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let group = groups.entry(pool.name.clone()).or_insert_with(|| {
            let mut g = LocalGroup::default();
            for _ in 0..pool.min {
                g.launch(&pool.name, now);
            }
            g
        });
        f(group, now)
    }
}

#[async_trait]
impl Fleet for LocalFleet {
    async fn describe(&self, pool: &PoolConfig) -> Result<FleetState, FleetError> {
        Ok(self.with_group(pool, |g, _now| FleetState {
            desired: g.instances.len() as u32 + g.owed,
            min: None,
            max: None,
            instances: g.instances.clone(),
            supports_protection: true,
            launch_failure: g.failing.clone(),
            ..FleetState::default()
        }))
    }

    async fn set_desired(&self, pool: &PoolConfig, desired: u32) -> Result<(), FleetError> {
        self.with_group(pool, |g, now| {
            while (g.instances.len() as u32) + g.owed < desired {
                g.launch(&pool.name, now);
            }
            // Lowering desired cancels launches owed first.
            let above = (g.instances.len() as u32 + g.owed).saturating_sub(desired);
            g.owed -= above.min(g.owed);
            // Like a cloud group: lowering desired removes the newest unprotected instances.
            while (g.instances.len() as u32) > desired {
                match g.instances.iter().rposition(|i| !i.protected) {
                    Some(i) => {
                        g.instances.remove(i);
                    }
                    None => break,
                }
            }
        });
        Ok(())
    }

    async fn remove_instance(
        &self,
        pool: &PoolConfig,
        instance_id: &str,
    ) -> Result<(), FleetError> {
        self.with_group(pool, |g, _now| {
            match g.instances.iter().position(|i| i.id == instance_id) {
                Some(i) => {
                    g.instances.remove(i);
                    Ok(())
                }
                None => Err(FleetError::NotFound(format!("instance {instance_id}"))),
            }
        })
    }

    async fn replace_instance(
        &self,
        pool: &PoolConfig,
        instance_id: &str,
    ) -> Result<(), FleetError> {
        self.with_group(pool, |g, now| {
            match g.instances.iter().position(|i| i.id == instance_id) {
                Some(i) => {
                    g.instances.remove(i);
                    g.launch(&pool.name, now);
                    Ok(())
                }
                None => Err(FleetError::NotFound(format!("instance {instance_id}"))),
            }
        })
    }

    async fn set_protection(
        &self,
        pool: &PoolConfig,
        instance_ids: &[String],
        protected: bool,
    ) -> Result<(), FleetError> {
        self.with_group(pool, |g, _now| {
            for i in g.instances.iter_mut() {
                if instance_ids.contains(&i.id) {
                    i.protected = protected;
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[tokio::test]
    async fn local_fleet_scales_and_removes() {
        let c = Config::embedded_default();
        let pool = &c.pools[0];
        let f = LocalFleet::new();
        assert_eq!(f.describe(pool).await.expect("ok").desired, pool.min);
        f.set_desired(pool, 3).await.expect("ok");
        let s = f.describe(pool).await.expect("ok");
        assert_eq!(s.desired, 3);
        let first = s.instances[0].id.clone();
        f.set_protection(pool, &[s.instances[2].id.clone()], true)
            .await
            .expect("ok");
        f.set_desired(pool, 2).await.expect("ok");
        let s = f.describe(pool).await.expect("ok");
        assert_eq!(s.instances.len(), 2);
        assert!(
            s.instances.iter().any(|i| i.protected),
            "protected survives"
        );
        f.remove_instance(pool, &first).await.expect("ok");
        assert_eq!(f.describe(pool).await.expect("ok").desired, 1);
        assert!(f.remove_instance(pool, "nope").await.is_err());
    }

    #[tokio::test]
    async fn local_fleet_owes_the_launches_that_fail() {
        let c = Config::embedded_default();
        let pool = &c.pools[0];
        let f = LocalFleet::new();
        let start = f.describe(pool).await.expect("ok").instances.len() as u32;
        f.fail_launches(pool, Some("no spot capacity"));
        f.set_desired(pool, start + 3).await.expect("ok");
        let s = f.describe(pool).await.expect("ok");
        assert_eq!((s.desired, s.instances.len() as u32), (start + 3, start));
        assert_eq!(s.launch_failure.as_deref(), Some("no spot capacity"));
        f.set_desired(pool, start + 2).await.expect("ok");
        f.fail_launches(pool, None);
        let s = f.describe(pool).await.expect("ok");
        assert_eq!(
            (s.desired, s.instances.len() as u32),
            (start + 2, start + 2)
        );
        assert_eq!(s.launch_failure, None);
    }

    #[test]
    fn runner_mapping_by_containment() {
        let i = Instance {
            id: "i-0abc".into(),
            runner_key: "i-0ABC".into(),
            launching: false,
            protected: false,
            launched_at: None,
        };
        assert!(i.runs("gh-i-0abc-2"));
        assert!(i.runs("I-0AbC"));
        assert!(!i.runs("gh-i-0abd"));
        assert!(!i.runs("i-0ab"), "a name shorter than the key");
        let keyless = Instance {
            runner_key: String::new(),
            ..i
        };
        assert!(!keyless.runs("anything"), "an empty key maps nothing");
    }
}
