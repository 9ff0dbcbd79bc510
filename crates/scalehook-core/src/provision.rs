//! Provisioning: every new instance of a pool gets its own just-in-time runner.
//!
//! The cloud adapters find new instances (AWS: the Auto Scaling launch lifecycle hook; Azure:
//! the scale set's VM list) and call [`Service::provision`] with the instance's fleet and key
//! (the EC2 instance id, the VM computer name). The core decides: which pool the fleet
//! belongs to, the runner's name (`<pool>-<instance key>`, the naming convention the rest of
//! scalehook relies on), minting it with the pool's labels and runner group through
//! [`GitHub::jit_runner`], and handing its configuration to a [`RunnerConfigStore`] that
//! only that instance can read. A minted runner whose configuration could not be stored is
//! unregistered again, so no offline registration is left behind. The runner's id (and the
//! launch time the hook reported) is saved in the ledger ([`crate::minted`]), where the
//! removal of that instance reads it.
//!
//! Clouds without a launch hook (Azure) find new instances in their fleet's describe: a
//! [`Provisioner`] looks at every describe of a pool ([`ProvisioningFleet`] wraps the fleet
//! so every describe of deliveries and reconcile goes through it) and provisions each
//! instance that has no configuration stored yet and no registered runner, once.

use crate::config::{Config, FleetTarget, PoolConfig};
use crate::fleet::{Fleet, FleetError, FleetState};
use crate::github::{GitHub, GitHubError, JitRunner, Runner};
use crate::ledger::Ledger;
use crate::minted::Minted;
use crate::service::Service;
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// The name of an instance's (JIT) runner: `<pool>-<instance key>`, the first of
/// [`crate::github::runner_names`].
pub fn runner_name(pool: &PoolConfig, instance_key: &str) -> String {
    crate::github::runner_names(pool, instance_key).swap_remove(0)
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

/// Where the ids of minted runners are saved ([`crate::minted`]), and the instance's launch
/// time when the caller knows it (the AWS launch hook's event time).
#[derive(Clone, Copy, Default)]
pub struct SaveMinted<'a> {
    pub ledger: Option<&'a dyn Ledger>,
    pub launched_at: Option<u64>,
}

/// Mints `pool`'s runner for one instance and stores its configuration for that instance.
pub async fn provision(
    github: &dyn GitHub,
    store: &dyn RunnerConfigStore,
    save: SaveMinted<'_>,
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
    mint_and_store(github, store, save, pool, instance_key).await
}

/// Mints the instance's runner and stores its configuration, without looking first.
async fn mint_and_store(
    github: &dyn GitHub,
    store: &dyn RunnerConfigStore,
    save: SaveMinted<'_>,
    pool: &PoolConfig,
    instance_key: &str,
) -> Result<Provisioned, ProvisionError> {
    let already = || Provisioned::AlreadyStored {
        pool: pool.name.clone(),
    };
    let name = runner_name(pool, instance_key);
    let runner = github
        .jit_runner(pool, &name)
        .await
        .map_err(ProvisionError::Mint)?;
    match store.put(instance_key, &runner).await {
        Ok(()) => {
            tracing::info!(pool = %pool.name, runner = %runner.name, runner_id = runner.runner_id, "JIT runner provisioned");
            if let Some(ledger) = save.ledger {
                let minted = Minted {
                    runner_ids: vec![runner.runner_id],
                    launched_at: save.launched_at,
                };
                // Without the record, removal reads the runner by its name instead.
                if let Err(e) = crate::minted::save(ledger, &pool.name, instance_key, &minted).await
                {
                    tracing::warn!(pool = %pool.name, runner = %runner.name, error = %e, "saving the minted runner's id failed: its instance's removal reads it by name");
                }
            }
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
    /// `launched_at`: the instance's launch (Unix s), when the caller's event says when
    /// (boot grace then runs from it).
    pub async fn provision(
        &self,
        fleet: &FleetTarget,
        instance_key: &str,
        store: &dyn RunnerConfigStore,
        launched_at: Option<u64>,
    ) -> Result<Provisioned, ProvisionError> {
        let pool = pool_of_fleet(self.config(), fleet).ok_or_else(|| {
            ProvisionError::UnknownFleet(match fleet {
                FleetTarget::AwsAsg(n) | FleetTarget::AzureVmss(n) => n.clone(),
                other => format!("{other:?}"),
            })
        })?;
        let save = SaveMinted {
            ledger: Some(self.ledger()),
            launched_at,
        };
        provision(self.github(), store, save, pool, instance_key).await
    }
}

/// The configuration store of each pool (Azure: one private blob container per pool).
pub trait RunnerConfigStores: Send + Sync {
    /// `None`: the pool's instances are not provisioned by scalehook.
    fn for_pool(&self, pool: &PoolConfig) -> Option<Arc<dyn RunnerConfigStore>>;
}

/// One store for every pool (tests, and clouds whose store is keyed by instance alone).
impl<T: RunnerConfigStore + 'static> RunnerConfigStores for Arc<T> {
    fn for_pool(&self, _pool: &PoolConfig) -> Option<Arc<dyn RunnerConfigStore>> {
        Some(self.clone() as Arc<dyn RunnerConfigStore>)
    }
}

/// What one look at a pool's instances did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRunners {
    /// Runner keys of the instances provisioned by this look.
    pub provisioned: Vec<String>,
    /// Runner keys of new instances still without a runner (failed or deferred): the next
    /// look tries again.
    pub waiting: Vec<String>,
    /// Runners minted and stored for new instances.
    pub minted: u32,
    /// New instances whose provisioning failed (tried again on the next look).
    pub failed: u32,
    /// New instances left for the next look (the per-look cap or time budget was reached,
    /// or GitHub's runners could not be listed).
    pub deferred: u32,
}

/// At most this many runners are minted per look at a pool; the rest wait for the next
/// describe (a delivery or reconcile), so one large scale-out cannot hold a pass.
pub const MAX_MINTS_PER_LOOK: usize = 8;

/// Finds the new instances of a pool in a fleet description and provisions each once.
///
/// An instance is provisioned when it has a runner key (its computer name; a VM gets one
/// when it is created, before it boots), no registered runner of the pool runs on it, and
/// its store has no record of it ([`RunnerConfigStore::exists`]: the store keeps a record
/// that outlives the instance taking its configuration). The store's conditional write is
/// what makes it once across processes; the keys seen provisioned are remembered in
/// process, so a warm process looks an instance up in the store once, not on every pass.
pub struct Provisioner {
    github: Arc<dyn GitHub>,
    stores: Arc<dyn RunnerConfigStores>,
    budget: Duration,
    /// Where minted runners' ids are saved ([`crate::minted`]); `None`: nowhere.
    ledger: Option<Arc<dyn Ledger>>,
    /// Per pool: runner keys (lower-cased) known to be provisioned, pruned to live instances.
    known: Mutex<HashMap<String, HashSet<String>>>,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Provisioner {
    /// `budget`: no new mint starts after this long into a look (one in flight finishes:
    /// cancelling between minting and storing would leave a registration nobody starts).
    pub fn new(
        github: Arc<dyn GitHub>,
        stores: Arc<dyn RunnerConfigStores>,
        budget: Duration,
    ) -> Self {
        Self {
            github,
            stores,
            budget,
            ledger: None,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Saves the ids of the runners it mints in `ledger` (the service's), for removal.
    pub fn with_ledger(mut self, ledger: Arc<dyn Ledger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Provisions the new instances of `pool` in `state`. `runners`: GitHub's runners when
    /// the caller has them; otherwise they are listed once, only if a new instance is found.
    pub async fn provision_new(
        &self,
        pool: &PoolConfig,
        state: &FleetState,
        runners: Option<&[Runner]>,
    ) -> NewRunners {
        let mut out = NewRunners::default();
        if !self.github.enabled() {
            return out;
        }
        let Some(store) = self.stores.for_pool(pool) else {
            return out;
        };
        let started = Instant::now();
        let live: Vec<(String, &crate::fleet::Instance)> = state
            .instances
            .iter()
            .filter(|i| valid_key(&i.runner_key))
            .map(|i| (i.runner_key.to_ascii_lowercase(), i))
            .collect();
        let mut candidates: Vec<&crate::fleet::Instance> = {
            let mut known = self.known();
            let set = known.entry(pool.name.clone()).or_default();
            let alive: HashSet<&str> = live.iter().map(|(k, _)| k.as_str()).collect();
            set.retain(|k| alive.contains(k.as_str()));
            live.iter()
                .filter(|(k, _)| !set.contains(k))
                .map(|(_, i)| *i)
                .collect()
        };
        if candidates.is_empty() {
            return out;
        }
        let has_runner = |i: &crate::fleet::Instance, all: &[Runner]| {
            all.iter().any(|r| r.in_pool(&pool.name) && i.runs(&r.name))
        };
        if let Some(all) = runners {
            let (registered, rest): (Vec<_>, Vec<_>) =
                candidates.into_iter().partition(|i| has_runner(i, all));
            self.remember(pool, registered.iter().map(|i| i.runner_key.as_str()));
            candidates = rest;
        }
        let mut pending = Vec::new();
        for i in candidates {
            match store.exists(&i.runner_key).await {
                Ok(true) => self.remember(pool, [i.runner_key.as_str()]),
                Ok(false) => pending.push(i),
                Err(e) => {
                    out.failed += 1;
                    out.waiting.push(i.runner_key.clone());
                    tracing::warn!(target: "scalehook::provision", pool = %pool.name, instance = %i.runner_key, error = %e, "runner configuration store unreadable");
                }
            }
        }
        if pending.is_empty() {
            return out;
        }
        if runners.is_none() {
            // A VM with a registered runner is not new (it registered some other way, or
            // took its configuration already): GitHub's list says so.
            match self.github.runners().await {
                Ok(all) => {
                    let (registered, rest): (Vec<_>, Vec<_>) =
                        pending.into_iter().partition(|i| has_runner(i, &all));
                    self.remember(pool, registered.iter().map(|i| i.runner_key.as_str()));
                    pending = rest;
                }
                Err(e) => {
                    out.deferred += pending.len() as u32;
                    out.waiting
                        .extend(pending.iter().map(|i| i.runner_key.clone()));
                    tracing::warn!(target: "scalehook::provision", pool = %pool.name, error = %e, "listing runners failed: new instances wait for the next pass");
                    return out;
                }
            }
        }
        for (n, i) in pending.iter().enumerate() {
            if n >= MAX_MINTS_PER_LOOK || started.elapsed() >= self.budget {
                out.deferred += (pending.len() - n) as u32;
                out.waiting
                    .extend(pending[n..].iter().map(|i| i.runner_key.clone()));
                break;
            }
            let save = SaveMinted {
                ledger: self.ledger.as_deref(),
                launched_at: None,
            };
            match mint_and_store(
                self.github.as_ref(),
                store.as_ref(),
                save,
                pool,
                &i.runner_key,
            )
            .await
            {
                Ok(Provisioned::Stored { .. }) => {
                    out.minted += 1;
                    out.provisioned.push(i.runner_key.clone());
                    self.remember(pool, [i.runner_key.as_str()]);
                }
                Ok(Provisioned::AlreadyStored { .. }) => {
                    self.remember(pool, [i.runner_key.as_str()])
                }
                Err(e) => {
                    out.failed += 1;
                    out.waiting.push(i.runner_key.clone());
                    tracing::warn!(target: "scalehook::provision", pool = %pool.name, instance = %i.runner_key, error = %e, "provisioning a new instance failed: retried on the next pass");
                }
            }
        }
        if out.minted + out.failed + out.deferred > 0 {
            tracing::info!(target: "scalehook::provision", pool = %pool.name, minted = out.minted, failed = out.failed, deferred = out.deferred, "new instances provisioned");
        }
        out
    }

    fn remember<'a>(&self, pool: &PoolConfig, keys: impl IntoIterator<Item = &'a str>) {
        let mut known = self.known();
        let set = known.entry(pool.name.clone()).or_default();
        set.extend(keys.into_iter().map(str::to_ascii_lowercase));
    }
}

/// A fleet whose every describe also provisions the pool's new instances (see
/// [`Provisioner`]): how a cloud without a launch hook gets its runners, with no change to
/// the service. Provisioning never fails a describe; its problems are logged and retried
/// on the next one.
pub struct ProvisioningFleet {
    inner: Arc<dyn Fleet>,
    provisioner: Arc<Provisioner>,
}

impl ProvisioningFleet {
    pub fn new(inner: Arc<dyn Fleet>, provisioner: Arc<Provisioner>) -> Self {
        Self { inner, provisioner }
    }

    pub fn provisioner(&self) -> &Provisioner {
        &self.provisioner
    }
}

#[async_trait]
impl Fleet for ProvisioningFleet {
    /// An instance provisioned by this describe, or new and still waiting for its runner, is
    /// reported `launching`: its runner was registered after GitHub's runners were read (or
    /// is not registered yet), so the pass must not take it for an orphan (an in-service
    /// instance with no registered runner). The next look, with the runner listed, reports
    /// it as the cloud does.
    async fn describe(&self, pool: &PoolConfig) -> Result<FleetState, FleetError> {
        let mut state = self.inner.describe(pool).await?;
        let new = self.provisioner.provision_new(pool, &state, None).await;
        for i in state.instances.iter_mut() {
            if new.provisioned.contains(&i.runner_key) || new.waiting.contains(&i.runner_key) {
                i.launching = true;
            }
        }
        Ok(state)
    }
    async fn set_desired(&self, pool: &PoolConfig, desired: u32) -> Result<(), FleetError> {
        self.inner.set_desired(pool, desired).await
    }
    async fn remove_instance(
        &self,
        pool: &PoolConfig,
        instance_id: &str,
    ) -> Result<(), FleetError> {
        self.inner.remove_instance(pool, instance_id).await
    }
    async fn replace_instance(
        &self,
        pool: &PoolConfig,
        instance_id: &str,
    ) -> Result<(), FleetError> {
        self.inner.replace_instance(pool, instance_id).await
    }
    async fn set_protection(
        &self,
        pool: &PoolConfig,
        instance_ids: &[String],
        protected: bool,
    ) -> Result<(), FleetError> {
        self.inner
            .set_protection(pool, instance_ids, protected)
            .await
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
             [[pools]]\nname = \"linux-gpu\"\nlabels = [\"self-hosted\", \"linux\", \"x64\", \"gpu\"]\nmax = 2\naws_asg = \"runners-gpu\"\nrunner_group_id = 5\n",
        )
        .expect("valid config")
    }

    #[tokio::test]
    async fn mints_a_runner_named_after_the_instance_with_the_pools_labels() {
        let config = config();
        let gh = LocalGitHub::new();
        let store = MemoryConfigStore::new();
        let pool = pool_of_fleet(&config, &FleetTarget::AwsAsg("runners-gpu".into())).unwrap();
        let out = provision(&gh, &store, SaveMinted::default(), pool, "i-0abc")
            .await
            .unwrap();
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

    /// The minted runner's id and the hook's launch time are saved for the instance's
    /// removal ([`crate::minted`]), by the launch hook's path and by the describe's.
    #[tokio::test]
    async fn the_minted_runner_id_is_saved_in_the_ledger() {
        use crate::ledger::MemoryLedger;
        let gh = Arc::new(LocalGitHub::new());
        let ledger = Arc::new(MemoryLedger::new());
        let service = Service::new(
            config(),
            crate::WebhookSecrets::new(["s"]).expect("secret"),
            ledger.clone(),
            Arc::new(crate::LocalFleet::new()),
        )
        .with_github(gh.clone());
        let store = MemoryConfigStore::new();
        let fleet = FleetTarget::AwsAsg("runners-x64".into());
        let out = service
            .provision(&fleet, "i-0abc", &store, Some(1_800_000_000))
            .await
            .expect("provisioned");
        let Provisioned::Stored { runner_id, .. } = out else {
            panic!("{out:?}")
        };
        let saved = crate::minted::load(ledger.as_ref(), "linux-x64", "i-0abc").await;
        assert_eq!(
            saved,
            Ok(Some(Minted {
                runner_ids: vec![runner_id],
                launched_at: Some(1_800_000_000),
            }))
        );
        let p = Provisioner::new(
            gh.clone(),
            Arc::new(Arc::new(MemoryConfigStore::new())),
            Duration::from_secs(5),
        )
        .with_ledger(ledger.clone());
        let pool = &service.config().pools[0];
        assert_eq!(
            p.provision_new(pool, &state(&["vm1"]), None).await.minted,
            1
        );
        let saved = crate::minted::load(ledger.as_ref(), "linux-x64", "vm1")
            .await
            .expect("read")
            .expect("saved");
        assert_eq!(saved.runner_ids.len(), 1);
        assert_eq!(saved.launched_at, None, "the describe's VM has timeCreated");
    }

    #[tokio::test]
    async fn a_redelivered_event_mints_nothing() {
        let config = config();
        let gh = LocalGitHub::new();
        let store = MemoryConfigStore::new();
        let pool = &config.pools[0];
        provision(&gh, &store, SaveMinted::default(), pool, "i-1")
            .await
            .unwrap();
        let again = provision(&gh, &store, SaveMinted::default(), pool, "i-1")
            .await
            .unwrap();
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
        let err = provision(&gh, &store, SaveMinted::default(), &config.pools[0], "i-2")
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
            provision(&NoGitHub, &store, SaveMinted::default(), pool, "i-3").await,
            Err(ProvisionError::NoGitHub)
        );
        let gh = LocalGitHub::new();
        for bad in ["", "i-1/../x", "a b", &"x".repeat(65)] {
            assert!(matches!(
                provision(&gh, &store, SaveMinted::default(), pool, bad).await,
                Err(ProvisionError::BadInstanceKey(_))
            ));
        }
        assert!(gh.registered().is_empty());
    }

    /// LocalGitHub with switches that make minting, or listing the runners, fail.
    #[derive(Default)]
    struct FlakyGitHub {
        inner: LocalGitHub,
        fail_mint: std::sync::atomic::AtomicBool,
        fail_list: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl GitHub for FlakyGitHub {
        async fn runners(&self) -> Result<Vec<Runner>, GitHubError> {
            if self.fail_list.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(GitHubError::Unavailable("injected".into()));
            }
            self.inner.runners().await
        }
        async fn remove_runner(
            &self,
            id: u64,
        ) -> Result<crate::github::RunnerRemoval, GitHubError> {
            self.inner.remove_runner(id).await
        }
        async fn job(
            &self,
            repo: &str,
            id: u64,
        ) -> Result<Option<crate::github::JobStatus>, GitHubError> {
            self.inner.job(repo, id).await
        }
        async fn deliveries(
            &self,
            cursor: Option<&str>,
        ) -> Result<crate::github::DeliveryPage, GitHubError> {
            self.inner.deliveries(cursor).await
        }
        async fn redeliver(&self, id: u64) -> Result<(), GitHubError> {
            self.inner.redeliver(id).await
        }
        async fn jit_runner(
            &self,
            pool: &PoolConfig,
            name: &str,
        ) -> Result<JitRunner, GitHubError> {
            if self.fail_mint.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(GitHubError::Unavailable("injected".into()));
            }
            self.inner.jit_runner(pool, name).await
        }
    }

    fn instance(key: &str) -> crate::fleet::Instance {
        crate::fleet::Instance {
            id: key.into(),
            runner_key: key.into(),
            launching: true,
            protected: false,
            launched_at: None,
        }
    }

    fn counts(n: &NewRunners) -> (u32, u32, u32) {
        (n.minted, n.failed, n.deferred)
    }

    fn state(keys: &[&str]) -> FleetState {
        FleetState {
            desired: keys.len() as u32,
            instances: keys.iter().map(|k| instance(k)).collect(),
            ..FleetState::default()
        }
    }

    #[tokio::test]
    async fn each_new_instance_is_minted_once_across_looks_and_processes() {
        let config = config();
        let pool = &config.pools[0];
        let gh = Arc::new(FlakyGitHub::default());
        let store = Arc::new(MemoryConfigStore::new());
        let p = Provisioner::new(gh.clone(), Arc::new(store.clone()), Duration::from_secs(5));
        let s = state(&["vm0", "vm1", ""]);
        let out = p.provision_new(pool, &s, None).await;
        assert_eq!(counts(&out), (2, 0, 0));
        assert_eq!(out.provisioned, ["vm0", "vm1"]);
        let names: Vec<String> = gh.inner.registered().into_iter().map(|r| r.name).collect();
        assert_eq!(
            names,
            ["linux-x64-vm0", "linux-x64-vm1"],
            "the VM without a name waits"
        );
        // The same process again: nothing is looked up or minted.
        let requests = gh.inner.rate_limit().requests;
        assert_eq!(p.provision_new(pool, &s, None).await, NewRunners::default());
        assert_eq!(gh.inner.rate_limit().requests, requests);
        // Another process: the store's records say so.
        let other = Provisioner::new(gh.clone(), Arc::new(store.clone()), Duration::from_secs(5));
        assert_eq!(
            other.provision_new(pool, &s, None).await,
            NewRunners::default()
        );
        // vm0 took its configuration: its registered runner says it is not new.
        assert!(store.take("vm0").is_some());
        assert_eq!(
            other.provision_new(pool, &s, None).await,
            NewRunners::default()
        );
        assert_eq!(gh.inner.registered().len(), 2);
    }

    /// A store that cannot be read.
    struct UnreadableStore;

    #[async_trait]
    impl RunnerConfigStore for UnreadableStore {
        async fn exists(&self, _instance_key: &str) -> Result<bool, StoreError> {
            Err(StoreError::Failed("injected".into()))
        }
        async fn put(&self, _instance_key: &str, _runner: &JitRunner) -> Result<(), StoreError> {
            Err(StoreError::Failed("injected".into()))
        }
    }

    #[tokio::test]
    async fn what_cannot_be_looked_up_waits_and_is_counted() {
        let config = config();
        let pool = &config.pools[0];
        let gh = Arc::new(FlakyGitHub::default());
        // The store unreadable: each new instance failed, waiting, nothing minted.
        let p = Provisioner::new(
            gh.clone(),
            Arc::new(Arc::new(UnreadableStore)),
            Duration::from_secs(5),
        );
        let out = p.provision_new(pool, &state(&["vm0", "vm1"]), None).await;
        assert_eq!(counts(&out), (0, 2, 0));
        assert_eq!(out.waiting, ["vm0", "vm1"]);
        // GitHub's runner list unreadable: every pending instance deferred to the next pass.
        gh.fail_list
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let store = Arc::new(MemoryConfigStore::new());
        let p = Provisioner::new(gh.clone(), Arc::new(store), Duration::from_secs(5));
        let out = p
            .provision_new(pool, &state(&["vm0", "vm1", "vm2"]), None)
            .await;
        assert_eq!(counts(&out), (0, 0, 3));
        assert_eq!(out.waiting, ["vm0", "vm1", "vm2"]);
        assert!(gh.inner.registered().is_empty());
    }

    #[tokio::test]
    async fn the_provisioning_fleet_acts_on_the_cloud_fleet_and_reports_waiting_instances_launching(
    ) {
        let config = config();
        let pool = &config.pools[0];
        let local = Arc::new(crate::fleet::LocalFleet::new());
        // The store unreadable: the new instances wait for their runners.
        let p = Provisioner::new(
            Arc::new(FlakyGitHub::default()),
            Arc::new(Arc::new(UnreadableStore)),
            Duration::from_secs(5),
        );
        let fleet = ProvisioningFleet::new(local.clone(), Arc::new(p));
        fleet.set_desired(pool, 3).await.expect("set");
        assert_eq!(local.describe(pool).await.expect("d").instances.len(), 3);
        let seen = fleet.describe(pool).await.expect("describe");
        assert!(
            seen.instances.iter().all(|i| i.launching),
            "waiting for a runner: launching, not orphans"
        );
        let ids: Vec<String> = seen.instances.iter().map(|i| i.id.clone()).collect();
        fleet
            .set_protection(pool, &ids[..1], true)
            .await
            .expect("protect");
        let inner = local.describe(pool).await.expect("d");
        assert!(inner.instances[0].protected);
        fleet.remove_instance(pool, &ids[1]).await.expect("remove");
        fleet
            .replace_instance(pool, &ids[2])
            .await
            .expect("replace");
        let left: Vec<String> = local
            .describe(pool)
            .await
            .expect("d")
            .instances
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(left.len(), 2);
        assert!(left.contains(&ids[0]) && !left.contains(&ids[1]) && !left.contains(&ids[2]));
    }

    #[tokio::test]
    async fn an_instance_with_a_registered_runner_is_not_provisioned() {
        let config = config();
        let pool = &config.pools[0];
        let gh = Arc::new(FlakyGitHub::default());
        gh.inner.register("linux-x64-vm7", &pool.labels);
        let store = Arc::new(MemoryConfigStore::new());
        let p = Provisioner::new(gh.clone(), Arc::new(store.clone()), Duration::from_secs(5));
        let out = p.provision_new(pool, &state(&["vm7", "vm8"]), None).await;
        assert_eq!(out.minted, 1);
        assert!(store.take("vm7").is_none());
        assert!(store.take("vm8").is_some());
    }

    #[tokio::test]
    async fn a_failed_mint_stores_nothing_and_is_retried() {
        let config = config();
        let pool = &config.pools[0];
        let gh = Arc::new(FlakyGitHub::default());
        gh.fail_mint
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let store = Arc::new(MemoryConfigStore::new());
        let p = Provisioner::new(gh.clone(), Arc::new(store.clone()), Duration::from_secs(5));
        let s = state(&["vm1"]);
        let failed = p.provision_new(pool, &s, None).await;
        assert_eq!(counts(&failed), (0, 1, 0));
        assert_eq!(failed.waiting, ["vm1"]);
        assert!(store.take("vm1").is_none());
        assert!(gh.inner.registered().is_empty());
        gh.fail_mint
            .store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(p.provision_new(pool, &s, None).await.minted, 1);
        // A failed store: the minted runner is unregistered, the instance retried later.
        let s2 = state(&["vm2"]);
        store.fail_puts(true);
        assert_eq!(p.provision_new(pool, &s2, None).await.failed, 1);
        assert_eq!(gh.inner.removed(), ["linux-x64-vm2"]);
        store.fail_puts(false);
        assert_eq!(p.provision_new(pool, &s2, None).await.minted, 1);
    }

    #[tokio::test]
    async fn a_large_scale_out_is_minted_over_several_looks() {
        let config = config();
        let pool = &config.pools[0];
        let gh = Arc::new(FlakyGitHub::default());
        let store = Arc::new(MemoryConfigStore::new());
        let p = Provisioner::new(gh.clone(), Arc::new(store.clone()), Duration::from_secs(5));
        let keys: Vec<String> = (0..MAX_MINTS_PER_LOOK + 3)
            .map(|n| format!("vm{n}"))
            .collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let s = state(&refs);
        let first = p.provision_new(pool, &s, None).await;
        assert_eq!(
            (first.minted, first.deferred),
            (MAX_MINTS_PER_LOOK as u32, 3)
        );
        assert_eq!(p.provision_new(pool, &s, None).await.minted, 3);
        assert_eq!(gh.inner.registered().len(), MAX_MINTS_PER_LOOK + 3);
    }

    #[tokio::test]
    async fn webhook_only_or_no_store_provisions_nothing() {
        struct NoStores;
        impl RunnerConfigStores for NoStores {
            fn for_pool(&self, _: &PoolConfig) -> Option<Arc<dyn RunnerConfigStore>> {
                None
            }
        }
        let config = config();
        let pool = &config.pools[0];
        let store = Arc::new(MemoryConfigStore::new());
        let p = Provisioner::new(
            Arc::new(NoGitHub),
            Arc::new(store.clone()),
            Duration::from_secs(5),
        );
        assert_eq!(
            p.provision_new(pool, &state(&["vm1"]), None).await,
            NewRunners::default()
        );
        let gh = Arc::new(LocalGitHub::new());
        let p = Provisioner::new(gh.clone(), Arc::new(NoStores), Duration::from_secs(5));
        assert_eq!(
            p.provision_new(pool, &state(&["vm1"]), None).await,
            NewRunners::default()
        );
        assert!(gh.registered().is_empty());
    }

    #[tokio::test]
    async fn the_provisioning_fleet_provisions_on_every_describe_of_the_service() {
        use crate::ledger::MemoryLedger;
        use crate::signature::WebhookSecrets;
        let config = Config::from_toml(
            "[[pools]]\nname = \"linux-x64\"\nlabels = [\"self-hosted\", \"linux\", \"x64\"]\nmin = 2\nmax = 4\n",
        )
        .expect("valid config");
        let gh = Arc::new(LocalGitHub::new());
        let store = Arc::new(MemoryConfigStore::new());
        let provisioner = Arc::new(Provisioner::new(
            gh.clone(),
            Arc::new(store.clone()),
            Duration::from_secs(5),
        ));
        let local = Arc::new(crate::fleet::LocalFleet::new());
        let fleet = Arc::new(ProvisioningFleet::new(local.clone(), provisioner));
        let service = Service::new(
            config,
            WebhookSecrets::new(["s"]).expect("secret"),
            Arc::new(MemoryLedger::new()),
            fleet,
        )
        .with_github(gh.clone())
        .with_log(crate::service::LogFormat::Off);
        let report = service.reconcile().await;
        assert!(report.ok(), "{report:?}");
        let mut names: Vec<String> = gh.registered().into_iter().map(|r| r.name).collect();
        names.sort();
        assert_eq!(
            names,
            ["linux-x64-linux-x64-0001", "linux-x64-linux-x64-0002"]
        );
        assert!(store.take("linux-x64-0001").is_some());
        service.reconcile().await;
        assert_eq!(gh.registered().len(), 2, "a second pass mints nothing");
        // The new instances were reported launching to the pass that provisioned them, so
        // it did not take them for orphans (no runner in the list it read before): kept.
        let ids: Vec<String> = local
            .describe(&service.config().pools[0])
            .await
            .expect("describe")
            .instances
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids, ["linux-x64-0001", "linux-x64-0002"]);
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
        // A scale set's resource id compares as ARM compares it: case-insensitively.
        let id = "/subscriptions/0000/resourceGroups/ci/providers/Microsoft.Compute/virtualMachineScaleSets/runners";
        let azure = Config::from_toml(&format!(
            "[[pools]]\nname = \"linux\"\nlabels = [\"self-hosted\"]\nmax = 2\nazure_vmss = \"{id}\"\n"
        ))
        .expect("valid config");
        let found = pool_of_fleet(&azure, &FleetTarget::AzureVmss(id.to_uppercase()));
        assert_eq!(found.map(|p| &p.name[..]), Some("linux"));
        assert!(pool_of_fleet(&azure, &FleetTarget::AwsAsg(id.into())).is_none());
    }
}
