//! Provisioning: every new instance of a pool gets its own just-in-time runner.
//!
//! The cloud adapters find new instances (AWS: the Auto Scaling launch lifecycle hook; Azure:
//! the scale set's VM list) and call [`Service::provision`] with the instance's fleet and key
//! (the EC2 instance id, the VM computer name). The core decides: which pool the fleet
//! belongs to, the runner's name (`<pool>-<instance key>`, the naming convention the rest of
//! scalehook relies on), minting it with the pool's labels and runner group through
//! [`GitHub::jit_runner`], and handing its configuration to a [`RunnerConfigStore`] that
//! only that instance can read. A minted runner whose configuration could not be stored is
//! unregistered again, so no offline registration is left behind.

use crate::config::{Config, FleetTarget, PoolConfig};
use crate::github::{GitHub, GitHubError, JitRunner};
use crate::service::Service;
use async_trait::async_trait;

/// Where a new instance picks up its runner configuration: the cloud's per-instance store.
#[async_trait]
pub trait RunnerConfigStore: Send + Sync {
    /// Whether a configuration for `instance_key` is stored and not yet taken. A
    /// redelivered launch event finds it and mints nothing.
    async fn exists(&self, instance_key: &str) -> Result<bool, StoreError>;
    /// Stores the configuration for `instance_key` (readable by that instance only).
    /// [`StoreError::AlreadyStored`] when one is stored already (a concurrent delivery).
    async fn put(&self, instance_key: &str, runner: &JitRunner) -> Result<(), StoreError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("a runner configuration for this instance is already stored")]
    AlreadyStored,
    #[error("runner configuration store failed: {0}")]
    Failed(String),
}

/// What provisioning did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioned {
    /// A new runner was registered and its configuration stored for the instance.
    Stored {
        pool: String,
        runner_id: u64,
        name: String,
    },
    /// The instance has a configuration already (a redelivered event): nothing minted.
    AlreadyStored { pool: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    #[error("no pool has this fleet: {0}")]
    UnknownFleet(String),
    #[error("invalid instance key {0:?}: expected letters, digits, '-', '_' or '.'")]
    BadInstanceKey(String),
    #[error("no GitHub App is configured: scalehook cannot mint runners (webhook-only mode)")]
    NoGitHub,
    #[error("minting the JIT runner failed: {0}")]
    Mint(GitHubError),
    #[error(transparent)]
    Store(StoreError),
}

/// The name of an instance's runner: `<pool>-<instance key>`.
pub fn runner_name(pool: &PoolConfig, instance_key: &str) -> String {
    format!("{}-{}", pool.name, instance_key)
}

/// The pool whose fleet is `fleet` (AWS: group names compare exactly; Azure: resource ids
/// compare case-insensitively, as ARM does).
pub fn pool_of_fleet<'a>(config: &'a Config, fleet: &FleetTarget) -> Option<&'a PoolConfig> {
    config.pools.iter().find(|p| match (&p.fleet, fleet) {
        (FleetTarget::AwsAsg(a), FleetTarget::AwsAsg(b)) => a == b,
        (FleetTarget::AzureVmss(a), FleetTarget::AzureVmss(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    })
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Mints `pool`'s runner for one instance and stores its configuration for that instance.
pub async fn provision(
    github: &dyn GitHub,
    store: &dyn RunnerConfigStore,
    pool: &PoolConfig,
    instance_key: &str,
) -> Result<Provisioned, ProvisionError> {
    if !valid_key(instance_key) {
        return Err(ProvisionError::BadInstanceKey(
            instance_key.chars().take(80).collect(),
        ));
    }
    if !github.enabled() {
        return Err(ProvisionError::NoGitHub);
    }
    let already = || Provisioned::AlreadyStored {
        pool: pool.name.clone(),
    };
    if store
        .exists(instance_key)
        .await
        .map_err(ProvisionError::Store)?
    {
        return Ok(already());
    }
    let name = runner_name(pool, instance_key);
    let runner = github
        .jit_runner(pool, &name)
        .await
        .map_err(ProvisionError::Mint)?;
    match store.put(instance_key, &runner).await {
        Ok(()) => {
            tracing::info!(pool = %pool.name, runner = %runner.name, runner_id = runner.runner_id, "JIT runner provisioned");
            Ok(Provisioned::Stored {
                pool: pool.name.clone(),
                runner_id: runner.runner_id,
                name: runner.name,
            })
        }
        Err(e) => {
            // Nobody will ever start this registration: remove it (best effort; GitHub also
            // drops JIT runners that never connect).
            if let Err(r) = github.remove_runner(runner.runner_id).await {
                tracing::warn!(pool = %pool.name, runner = %runner.name, error = %r, "could not remove an unused JIT runner");
            }
            match e {
                StoreError::AlreadyStored => Ok(already()),
                e => Err(ProvisionError::Store(e)),
            }
        }
    }
}

impl Service {
    /// Provisions the runner of a new instance of `fleet` (see the module documentation).
    pub async fn provision(
        &self,
        fleet: &FleetTarget,
        instance_key: &str,
        store: &dyn RunnerConfigStore,
    ) -> Result<Provisioned, ProvisionError> {
        let pool = pool_of_fleet(self.config(), fleet).ok_or_else(|| {
            ProvisionError::UnknownFleet(match fleet {
                FleetTarget::AwsAsg(n) | FleetTarget::AzureVmss(n) => n.clone(),
                other => format!("{other:?}"),
            })
        })?;
        provision(self.github(), store, pool, instance_key).await
    }
}

/// A store in memory, for tests and the local server.
#[derive(Debug, Default)]
pub struct MemoryConfigStore {
    inner: std::sync::Mutex<std::collections::HashMap<String, String>>,
    fail: std::sync::atomic::AtomicBool,
}

impl MemoryConfigStore {
    pub fn new() -> Self {
        Self::default()
    }
    /// Makes every later `put` fail.
    pub fn fail_puts(&self, fail: bool) {
        self.fail.store(fail, std::sync::atomic::Ordering::SeqCst);
    }
    /// Takes (reads and deletes) an instance's configuration, as the instance does.
    pub fn take(&self, instance_key: &str) -> Option<String> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(instance_key)
    }
}

#[async_trait]
impl RunnerConfigStore for MemoryConfigStore {
    async fn exists(&self, instance_key: &str) -> Result<bool, StoreError> {
        Ok(self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(instance_key))
    }
    async fn put(&self, instance_key: &str, runner: &JitRunner) -> Result<(), StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Failed("injected failure".into()));
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.contains_key(instance_key) {
            return Err(StoreError::AlreadyStored);
        }
        g.insert(instance_key.to_string(), runner.encoded_jit_config.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::github::{LocalGitHub, NoGitHub};

    fn config() -> Config {
        Config::from_toml(
            "[[pools]]\nname = \"linux-x64\"\nlabels = [\"self-hosted\", \"linux\", \"x64\"]\nmax = 4\naws_asg = \"runners-x64\"\n\
             [[pools]]\nname = \"linux-gpu\"\nlabels = [\"self-hosted\", \"linux\", \"x64\", \"gpu\"]\nmax = 2\naws_asg = \"runners-gpu\"\n",
        )
        .expect("valid config")
    }

    #[tokio::test]
    async fn mints_a_runner_named_after_the_instance_with_the_pools_labels() {
        let config = config();
        let gh = LocalGitHub::new();
        let store = MemoryConfigStore::new();
        let pool = pool_of_fleet(&config, &FleetTarget::AwsAsg("runners-gpu".into())).unwrap();
        let out = provision(&gh, &store, pool, "i-0abc").await.unwrap();
        assert!(
            matches!(&out, Provisioned::Stored { pool, name, .. } if pool == "linux-gpu" && name == "linux-gpu-i-0abc"),
            "{out:?}"
        );
        let runners = gh.registered();
        assert_eq!(runners.len(), 1);
        assert_eq!(runners[0].name, "linux-gpu-i-0abc");
        assert!(runners[0].in_pool("linux-gpu") && !runners[0].in_pool("linux-x64"));
        assert_eq!(runners[0].labels, ["self-hosted", "linux", "x64", "gpu"]);
        assert_eq!(store.take("i-0abc").as_deref(), Some("local-jit-1"));
    }

    #[tokio::test]
    async fn a_redelivered_event_mints_nothing() {
        let config = config();
        let gh = LocalGitHub::new();
        let store = MemoryConfigStore::new();
        let pool = &config.pools[0];
        provision(&gh, &store, pool, "i-1").await.unwrap();
        let again = provision(&gh, &store, pool, "i-1").await.unwrap();
        assert_eq!(
            again,
            Provisioned::AlreadyStored {
                pool: "linux-x64".into()
            }
        );
        assert_eq!(gh.registered().len(), 1);
    }

    #[tokio::test]
    async fn a_failed_store_unregisters_the_minted_runner() {
        let config = config();
        let gh = LocalGitHub::new();
        let store = MemoryConfigStore::new();
        store.fail_puts(true);
        let err = provision(&gh, &store, &config.pools[0], "i-2")
            .await
            .unwrap_err();
        assert!(matches!(err, ProvisionError::Store(_)), "{err:?}");
        assert!(gh.registered().is_empty());
        assert_eq!(gh.removed(), vec!["linux-x64-i-2".to_string()]);
    }

    #[tokio::test]
    async fn refuses_without_github_or_with_a_bad_key() {
        let config = config();
        let store = MemoryConfigStore::new();
        let pool = &config.pools[0];
        assert_eq!(
            provision(&NoGitHub, &store, pool, "i-3").await,
            Err(ProvisionError::NoGitHub)
        );
        let gh = LocalGitHub::new();
        for bad in ["", "i-1/../x", "a b", &"x".repeat(65)] {
            assert!(matches!(
                provision(&gh, &store, pool, bad).await,
                Err(ProvisionError::BadInstanceKey(_))
            ));
        }
        assert!(gh.registered().is_empty());
    }

    #[test]
    fn fleets_map_to_their_pool() {
        let config = config();
        assert_eq!(
            pool_of_fleet(&config, &FleetTarget::AwsAsg("runners-x64".into())).map(|p| &p.name[..]),
            Some("linux-x64")
        );
        assert!(pool_of_fleet(&config, &FleetTarget::AwsAsg("other".into())).is_none());
        assert!(pool_of_fleet(&config, &FleetTarget::AzureVmss("runners-x64".into())).is_none());
    }
}
