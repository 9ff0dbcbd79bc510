//! Azure JIT provisioning end to end: the service's reconcile describes the scale set (the
//! ARM test double), finds new VMs, mints `<pool>-<computer name>` (GitHub: `LocalGitHub`)
//! and writes `jit-<pool>/<computer name>` in Blob Storage (Azurite's real blob service),
//! once, across passes and processes.

mod common;

use common::arm_double::{ArmDouble, VMSS_ID};
use common::azurite::{self, Azurite, ACCOUNT, KEY};
use scalehook_azure::blob::{
    with_provisioning, BlobAuth, BlobClient, JIT_BLOB_ENDPOINT_ENV, JIT_BLOB_KEY_ENV, MINTED_PREFIX,
};
use scalehook_azure::{ArmBudget, ArmClient, ManagedIdentity, VmssFleet};
use scalehook_core::github::{DeliveryPage, JitRunner, JobStatus};
use scalehook_core::{
    Config, GitHub, GitHubError, LocalGitHub, LogFormat, MemoryLedger, PoolConfig, Runner,
    RunnerRemoval, Service, WebhookSecrets,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const CONTAINER: &str = "jit-linux";

fn config(min: u32) -> Config {
    Config::from_toml(&format!(
        "[[pools]]\nname = \"linux\"\nlabels = [\"self-hosted\", \"linux\"]\nmin = {min}\nmax = 5\nazure_vmss = \"{VMSS_ID}\"\n"
    ))
    .expect("config")
}

/// LocalGitHub whose minting can be made to fail.
#[derive(Default)]
struct GitHubStandIn {
    inner: LocalGitHub,
    fail_mint: AtomicBool,
}

#[async_trait::async_trait]
impl GitHub for GitHubStandIn {
    async fn runners(&self) -> Result<Vec<Runner>, GitHubError> {
        self.inner.runners().await
    }
    async fn remove_runner(&self, id: u64) -> Result<RunnerRemoval, GitHubError> {
        self.inner.remove_runner(id).await
    }
    async fn job(&self, repo: &str, id: u64) -> Result<Option<JobStatus>, GitHubError> {
        self.inner.job(repo, id).await
    }
    async fn deliveries(&self, cursor: Option<&str>) -> Result<DeliveryPage, GitHubError> {
        self.inner.deliveries(cursor).await
    }
    async fn redeliver(&self, id: u64) -> Result<(), GitHubError> {
        self.inner.redeliver(id).await
    }
    async fn jit_runner(&self, pool: &PoolConfig, name: &str) -> Result<JitRunner, GitHubError> {
        if self.fail_mint.load(Ordering::SeqCst) {
            return Err(GitHubError::Unavailable("503 from the test".into()));
        }
        self.inner.jit_runner(pool, name).await
    }
}

struct World {
    double: ArmDouble,
    _blob: Azurite,
    env: HashMap<String, String>,
    client: BlobClient,
    github: Arc<GitHubStandIn>,
}

impl World {
    async fn start(vms: u32) -> World {
        let double = ArmDouble::start(vms).await;
        let blob = Azurite::start_service(azurite::Service::Blob);
        let mut env: HashMap<String, String> = double.env().into_iter().collect();
        env.insert(JIT_BLOB_ENDPOINT_ENV.into(), blob.endpoint());
        env.insert(JIT_BLOB_KEY_ENV.into(), KEY.into());
        let client = blob_client(&blob.endpoint());
        client.create_container(CONTAINER).await.expect("container");
        World {
            double,
            _blob: blob,
            env,
            client,
            github: Arc::new(GitHubStandIn::default()),
        }
    }

    /// A scalehook process: its own service, fleet, provisioner and clients.
    fn process(&self, config: Config) -> Service {
        let http = scalehook_azure::app::http_client().expect("client");
        let env = self.env.clone();
        let identity = Arc::new(
            ManagedIdentity::from_lookup(http.clone(), |k| env.get(k).cloned()).expect("identity"),
        );
        let arm = ArmClient::new(
            http.clone(),
            &self.env["SCALEHOOK_ARM_ENDPOINT"],
            identity.clone(),
            ArmBudget::default(),
        )
        .expect("arm");
        let github: Arc<dyn GitHub> = self.github.clone();
        let ledger = Arc::new(MemoryLedger::new());
        let fleet = with_provisioning(
            Arc::new(VmssFleet::new(arm)),
            ledger.clone(),
            Some(github.clone()),
            &config,
            http,
            identity,
            |k| env.get(k).cloned(),
        )
        .expect("provisioning fleet");
        Service::new(
            config,
            WebhookSecrets::new(["s"]).expect("secret"),
            ledger,
            fleet,
        )
        .with_github(github)
        .with_log(LogFormat::Off)
    }

    fn computer_names(&self) -> Vec<String> {
        self.double
            .lock()
            .vms
            .iter()
            .map(|v| v.computer_name.clone())
            .collect()
    }

    fn runner_names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .github
            .inner
            .registered()
            .into_iter()
            .map(|r| r.name)
            .collect();
        n.sort();
        n
    }

    async fn config_of(&self, vm: &str) -> Option<String> {
        self.client
            .get(CONTAINER, vm)
            .await
            .expect("read blob")
            .map(|b| String::from_utf8(b).expect("utf-8"))
    }

    async fn minted(&self, vm: &str) -> bool {
        self.client
            .exists(CONTAINER, &format!("{MINTED_PREFIX}{vm}"))
            .await
            .expect("head")
    }
}

fn blob_client(endpoint: &str) -> BlobClient {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .expect("key");
    BlobClient::new(
        scalehook_azure::app::http_client().expect("client"),
        endpoint,
        BlobAuth::SharedKey {
            account: ACCOUNT.into(),
            key,
        },
    )
    .expect("blob client")
}

#[tokio::test]
async fn a_new_vm_gets_exactly_one_blob_and_one_jit_runner() {
    let w = World::start(2).await;
    let service = w.process(config(2));
    let report = service.reconcile().await;
    assert!(report.ok(), "{report:?}");
    let vms = w.computer_names();
    assert_eq!(vms, ["runnervmss000000", "runnervmss000001"]);
    assert_eq!(
        w.runner_names(),
        ["linux-runnervmss000000", "linux-runnervmss000001"]
    );
    for (vm, runner) in vms.iter().zip(w.github.inner.registered()) {
        assert_eq!(
            w.config_of(vm).await.as_deref(),
            Some(format!("local-jit-{}", runner.id).as_str()),
            "the blob is the JIT configuration of the VM's own runner"
        );
        assert!(w.minted(vm).await, "the provisioned record of {vm}");
        assert!(!runner.online, "registered, not yet started");
    }

    // A second pass, and another process: nothing minted, nothing written.
    let requests = w.github.inner.rate_limit().requests;
    let calls_before = w.github.inner.calls().len();
    service.reconcile().await;
    let other = w.process(config(2));
    other.reconcile().await;
    assert_eq!(w.github.inner.registered().len(), 2);
    assert!(
        w.github.inner.removed().is_empty(),
        "nothing minted and removed"
    );
    // The other process found the records in the store and minted nothing. Each reconcile
    // reads one deliveries page and lists the pool's runners for its three purposes (the
    // stranded-runner sweep, provisioning, the pass's scale-in safety): bounded, no mint.
    let calls = w.github.inner.calls();
    assert!(
        !calls[calls_before..]
            .iter()
            .any(|c| matches!(c, scalehook_core::github::LocalCall::JitRunner(_))),
        "{calls:?}"
    );
    let made = w.github.inner.rate_limit().requests - requests;
    assert!(made <= 8, "{made} GitHub requests: {calls:?}");

    // The VM boots: it reads and deletes its blob; its ephemeral runner ends and leaves
    // GitHub. The VM is still listed (powering off): still not minted again.
    assert!(w.client.delete(CONTAINER, &vms[0]).await.expect("delete"));
    w.github.inner.unregister("linux-runnervmss000000");
    let third = w.process(config(2));
    third.reconcile().await;
    assert_eq!(w.runner_names(), ["linux-runnervmss000001"]);
    assert_eq!(w.config_of(&vms[0]).await, None);
    assert!(
        w.double.violations().is_empty(),
        "{:?}",
        w.double.violations()
    );
}

#[tokio::test]
async fn vms_launched_by_a_scale_out_are_provisioned_by_the_next_describe() {
    let w = World::start(1).await;
    let service = w.process(config(3));
    // The first pass provisions the existing VM and raises capacity to min = 3.
    service.reconcile().await;
    assert_eq!(w.double.capacity(), 3);
    assert_eq!(w.runner_names(), ["linux-runnervmss000000"]);
    // The next describe (here a reconcile; a delivery's does the same) finds the new VMs.
    service.reconcile().await;
    assert_eq!(
        w.runner_names(),
        [
            "linux-runnervmss000000",
            "linux-runnervmss000001",
            "linux-runnervmss000002"
        ]
    );
    for vm in w.computer_names() {
        assert!(
            w.config_of(&vm).await.is_some(),
            "{vm} has its configuration"
        );
    }
}

#[tokio::test]
async fn a_failed_mint_writes_nothing_and_the_next_pass_provisions() {
    let w = World::start(1).await;
    let service = w.process(config(1));
    w.github.fail_mint.store(true, Ordering::SeqCst);
    service.reconcile().await;
    assert!(w.github.inner.registered().is_empty());
    assert_eq!(w.config_of("runnervmss000000").await, None);
    assert!(!w.minted("runnervmss000000").await);
    w.github.fail_mint.store(false, Ordering::SeqCst);
    service.reconcile().await;
    assert_eq!(w.runner_names(), ["linux-runnervmss000000"]);
    assert!(w.config_of("runnervmss000000").await.is_some());
}

#[tokio::test]
async fn two_processes_at_once_store_one_configuration_per_vm() {
    let w = World::start(2).await;
    let a = w.process(config(2));
    let b = w.process(config(2));
    let (ra, rb) = tokio::join!(a.reconcile(), b.reconcile());
    assert!(ra.ok() && rb.ok(), "{ra:?} {rb:?}");
    // Whoever lost a conditional write removed the runner it had minted.
    let registered = w.github.inner.registered();
    assert_eq!(registered.len(), 2, "{registered:?}");
    for r in &registered {
        let vm = r.name.trim_start_matches("linux-");
        assert_eq!(
            w.config_of(vm).await,
            Some(format!("local-jit-{}", r.id)),
            "the stored configuration belongs to the registered runner"
        );
    }
}

/// Issue 21, finding 1: root on one VM of a pool (when VMs can write the container) can
/// plant a configuration for a future VM's predictable computer name, with or without a
/// record. Neither counts as provisioned: scalehook deletes it and writes the VM's own.
#[tokio::test]
async fn a_planted_configuration_is_replaced_by_the_vms_own() {
    let w = World::start(2).await;
    let planted = b"attacker-jit-config";
    // VM 1: a configuration and no record. VM 0: a configuration and a record that does
    // not name it.
    for vm in ["runnervmss000000", "runnervmss000001"] {
        w.client
            .create(CONTAINER, vm, planted)
            .await
            .expect("plant")
            .expect("written");
    }
    w.client
        .create(
            CONTAINER,
            &format!("{MINTED_PREFIX}runnervmss000000"),
            b"\"0x8D000000000000\"",
        )
        .await
        .expect("plant a record")
        .expect("written");
    let service = w.process(config(2));
    let report = service.reconcile().await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(
        w.runner_names(),
        ["linux-runnervmss000000", "linux-runnervmss000001"]
    );
    for r in w.github.inner.registered() {
        let vm = r.name.trim_start_matches("linux-");
        assert_eq!(
            w.config_of(vm).await,
            Some(format!("local-jit-{}", r.id)),
            "{vm} boots the configuration of its own runner"
        );
        assert!(w.minted(vm).await);
    }
    // Another process later: provisioned, nothing minted again.
    w.process(config(2)).reconcile().await;
    assert_eq!(w.github.inner.registered().len(), 2);
    assert!(w.github.inner.removed().is_empty());
}
