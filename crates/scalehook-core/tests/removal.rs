//! Runner truth at the moment of removal (the service's `removal` stage): GitHub is asked
//! about an instance right before it leaves, all its runners must be idle and are all
//! deregistered first, and an instance with no runner online goes only past boot grace and
//! after a second sighting in another pass. Each test fails without the protection it names.

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue, Method};
use scalehook_core::github::{
    DeliveryPage, JitRunner, JobLookup, JobStatus, LocalCall, Runner, RunnerRemoval,
};
use scalehook_core::minted::{self, Minted};
use scalehook_core::signature::sign;
use scalehook_core::{
    Config, Fleet, GitHub, GitHubError, LocalFleet, LocalGitHub, LogFormat, ManualClock,
    MemoryLedger, PoolConfig, Service, WebhookSecrets,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const SECRET: &str = "removal-secret";
const NOW: u64 = 1_800_000_000;
const LINUX: &[&str] = &["self-hosted", "linux"];

const CONFIG: &str = r#"
[github]
app_id = 1
installation_id = 2
organization = "octo-org"
boot_grace_secs = 600

[[pools]]
name = "linux"
labels = ["self-hosted", "linux"]
min = 0
max = 4
"#;

fn job(action: &str, id: u64, runner: Option<&str>) -> Vec<u8> {
    serde_json::json!({
        "action": action,
        "workflow_job": {"id": id, "run_id": 7, "labels": LINUX, "runner_name": runner,
                         "runner_id": runner.map(|_| 11)},
        "repository": {"full_name": "octo-org/app", "owner": {"login": "octo-org"}}
    })
    .to_string()
    .into_bytes()
}

async fn deliver(service: &Service, body: Vec<u8>) -> u16 {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-github-event", HeaderValue::from_static("workflow_job"));
    h.insert("x-github-delivery", HeaderValue::from_static("d-1"));
    h.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&sign(SECRET.as_bytes(), &body)).expect("sig"),
    );
    service.handle(&Method::POST, &h, &body).await.status
}

/// LocalGitHub whose runner reads or deregistrations can be made to fail (GitHub
/// unreachable), to show what each failure keeps.
#[derive(Default)]
struct Faulty {
    inner: LocalGitHub,
    fail_reads: AtomicBool,
    fail_removals: AtomicBool,
}

impl Faulty {
    fn read(&self) -> Result<(), GitHubError> {
        match self.fail_reads.load(Ordering::SeqCst) {
            true => Err(GitHubError::Unavailable("502 Bad Gateway".into())),
            false => Ok(()),
        }
    }
}

#[async_trait]
impl GitHub for Faulty {
    async fn runners(&self) -> Result<Vec<Runner>, GitHubError> {
        self.read()?;
        self.inner.runners().await
    }
    async fn runner(&self, id: u64) -> Result<Option<Runner>, GitHubError> {
        self.read()?;
        self.inner.runner(id).await
    }
    async fn runners_named(&self, name: &str) -> Result<Vec<Runner>, GitHubError> {
        self.read()?;
        self.inner.runners_named(name).await
    }
    async fn runners_in_group(&self, group: u64) -> Result<Vec<Runner>, GitHubError> {
        self.read()?;
        self.inner.runners_in_group(group).await
    }
    async fn pool_runner_group(&self, pool: &PoolConfig) -> Result<u64, GitHubError> {
        self.inner.pool_runner_group(pool).await
    }
    async fn remove_runner(&self, id: u64) -> Result<RunnerRemoval, GitHubError> {
        if self.fail_removals.load(Ordering::SeqCst) {
            return Err(GitHubError::Unavailable("502 Bad Gateway".into()));
        }
        self.inner.remove_runner(id).await
    }
    async fn job(&self, repo: &str, id: u64) -> Result<Option<JobStatus>, GitHubError> {
        self.inner.job(repo, id).await
    }
    async fn job_state(&self, repo: &str, id: u64) -> Result<JobLookup, GitHubError> {
        self.inner.job_state(repo, id).await
    }
    async fn deliveries(&self, cursor: Option<&str>) -> Result<DeliveryPage, GitHubError> {
        self.inner.deliveries(cursor).await
    }
    async fn redeliver(&self, id: u64) -> Result<(), GitHubError> {
        self.inner.redeliver(id).await
    }
    async fn jit_runner(&self, pool: &PoolConfig, name: &str) -> Result<JitRunner, GitHubError> {
        self.inner.jit_runner(pool, name).await
    }
}

struct World {
    svc: Service,
    fleet: Arc<LocalFleet>,
    github: Arc<Faulty>,
    clock: Arc<ManualClock>,
    pool: PoolConfig,
}

impl World {
    /// `launch_times`: whether the fleet reports launch times (Azure, the local fleet) or
    /// not (an Auto Scaling group's describe).
    fn new(toml: &str, launch_times: bool) -> Self {
        let clock = Arc::new(ManualClock::new(NOW));
        let fleet = Arc::new(match launch_times {
            true => LocalFleet::new().with_clock(clock.clone()),
            false => LocalFleet::new(),
        });
        let github = Arc::new(Faulty::default());
        let svc = Service::new(
            Config::from_toml(toml).expect("config"),
            WebhookSecrets::new([SECRET]).expect("secret"),
            Arc::new(MemoryLedger::new()),
            fleet.clone(),
        )
        .with_github(github.clone())
        .with_clock(clock.clone())
        .with_log(LogFormat::Off);
        let pool = svc.config().pool("linux").expect("pool").clone();
        Self {
            svc,
            fleet,
            github,
            clock,
            pool,
        }
    }

    fn gh(&self) -> &LocalGitHub {
        &self.github.inner
    }

    async fn instances(&self) -> Vec<String> {
        let state = self.fleet.describe(&self.pool).await.expect("describe");
        state.instances.into_iter().map(|i| i.id).collect()
    }

    /// Two jobs queued (two instances); job 1 runs on linux-0001's runner; linux-0002 has
    /// no runner yet.
    async fn two_instances_one_busy(&self) {
        assert_eq!(deliver(&self.svc, job("queued", 1, None)).await, 200);
        assert_eq!(deliver(&self.svc, job("queued", 2, None)).await, 200);
        assert_eq!(self.instances().await, vec!["linux-0001", "linux-0002"]);
        self.gh().register("linux-linux-0001", &self.pool.labels);
        self.gh().set_busy("linux-linux-0001", true);
        let started = job("in_progress", 1, Some("linux-linux-0001"));
        assert_eq!(deliver(&self.svc, started).await, 200);
    }
}

/// Item 1: a runner that registers and takes a job right after the pass read GitHub's list
/// is found by the read made right before the removal, and its instance stays. Without the
/// read the instance (already sighted past grace) is removed with the job on it.
#[tokio::test]
async fn a_runner_that_registers_after_the_list_keeps_its_instance() {
    let w = World::new(CONFIG, true);
    w.two_instances_one_busy().await;
    w.clock.advance(700);
    // Past grace, no runner: a first sighting (the instance stays).
    let report = w.svc.reconcile().await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(w.instances().await, vec!["linux-0001", "linux-0002"]);
    w.clock.advance(60);
    w.gh().before_each_call(|gh, _, call| {
        if matches!(call, LocalCall::Runners)
            && !gh.registered().iter().any(|r| r.name == "linux-linux-0002")
        {
            gh.register("linux-linux-0002", &[]);
            assert!(gh.assign_job("linux-linux-0002", 3));
        }
    });
    // Job 2 is cancelled: the pool is above target and linux-0002 looks idle and runnerless.
    assert_eq!(deliver(&w.svc, job("completed", 2, None)).await, 200);
    assert_eq!(
        w.instances().await,
        vec!["linux-0001", "linux-0002"],
        "the instance whose runner holds job 3 stays"
    );
    assert!(w.gh().removed().is_empty(), "{:?}", w.gh().removed());
}

/// Item 3: where the cloud reports no launch time (an Auto Scaling group), an instance with
/// no runner is not past grace at once: grace runs from the first sighting, and it goes on
/// a later pass.
#[tokio::test]
async fn without_a_launch_time_grace_runs_from_the_first_sighting() {
    let w = World::new(CONFIG, false);
    w.two_instances_one_busy().await;
    assert_eq!(deliver(&w.svc, job("completed", 2, None)).await, 200);
    assert_eq!(
        w.instances().await,
        vec!["linux-0001", "linux-0002"],
        "no runner yet, launch time unknown: first sighting"
    );
    w.clock.advance(300);
    assert!(w.svc.reconcile().await.ok());
    assert_eq!(
        w.instances().await.len(),
        2,
        "within grace of the first sighting"
    );
    w.clock.advance(301);
    assert!(w.svc.reconcile().await.ok());
    assert_eq!(
        w.instances().await,
        vec!["linux-0001"],
        "past grace, seen before"
    );
    assert_eq!(w.fleet.describe(&w.pool).await.expect("d").desired, 1);
}

const TWO_PER_INSTANCE: &str = r#"
[github]
app_id = 1
installation_id = 2
organization = "octo-org"

[[pools]]
name = "linux"
labels = ["self-hosted", "linux"]
min = 0
max = 4
runners_per_instance = 2
"#;

/// Item 8: an instance with several runners goes with all of them or none: the first 422
/// ends its deregistrations, so it never stays with only a busy runner and idle ones gone...
/// and the one that took the job keeps its instance.
#[tokio::test]
async fn a_busy_runner_stops_the_instances_deregistrations() {
    let w = World::new(TWO_PER_INSTANCE, true);
    assert_eq!(deliver(&w.svc, job("queued", 1, None)).await, 200);
    assert_eq!(w.instances().await, vec!["linux-0001"]);
    let first = w.gh().register("linux-linux-0001-1", &w.pool.labels);
    let second = w.gh().register("linux-linux-0001-2", &w.pool.labels);
    assert!(first < second, "deregistered in id order");
    // The first runner takes a job at its DELETE (GitHub answers 422).
    w.gh().assign_on_removal("linux-linux-0001-1");
    assert_eq!(deliver(&w.svc, job("completed", 1, None)).await, 200);
    assert_eq!(w.instances().await, vec!["linux-0001"]);
    assert!(w.gh().removed().is_empty(), "{:?}", w.gh().removed());
    assert_eq!(w.gh().registered().len(), 2);
}

/// Item 12: GitHub unreadable at the moment of removal keeps the instance.
#[tokio::test]
async fn unreadable_runners_keep_the_instance() {
    let w = World::new(CONFIG, true);
    assert_eq!(deliver(&w.svc, job("queued", 1, None)).await, 200);
    w.gh().register("linux-linux-0001", &w.pool.labels);
    w.github.fail_reads.store(true, Ordering::SeqCst);
    assert_eq!(deliver(&w.svc, job("completed", 1, None)).await, 200);
    assert_eq!(w.instances().await, vec!["linux-0001"]);
    w.clock.advance(3600);
    assert!(!w.svc.reconcile().await.ok(), "the listing failed");
    assert_eq!(w.instances().await, vec!["linux-0001"]);
    assert!(w.gh().removed().is_empty());
    // Readable again: the idle runner is deregistered and its instance removed.
    w.github.fail_reads.store(false, Ordering::SeqCst);
    w.clock.advance(60);
    let report = w.svc.reconcile().await;
    assert_eq!(report.github.expect("github").runners_removed, 1);
    assert!(w.instances().await.is_empty());
    assert_eq!(w.gh().removed(), vec!["linux-linux-0001".to_string()]);
}

/// Item 12: a deregistration that fails keeps the instance (its runner may still take a
/// job).
#[tokio::test]
async fn a_failed_deregistration_keeps_the_instance() {
    let w = World::new(CONFIG, true);
    assert_eq!(deliver(&w.svc, job("queued", 1, None)).await, 200);
    w.gh().register("linux-linux-0001", &w.pool.labels);
    w.github.fail_removals.store(true, Ordering::SeqCst);
    assert_eq!(deliver(&w.svc, job("completed", 1, None)).await, 200);
    assert_eq!(w.instances().await, vec!["linux-0001"]);
    w.clock.advance(60);
    w.svc.reconcile().await;
    assert_eq!(w.instances().await, vec!["linux-0001"]);
    assert_eq!(w.gh().registered().len(), 1);
}

/// Item 11: a registered runner that never came online is dead past grace: its instance is
/// replaced after a second sighting (its registration removed first).
#[tokio::test]
async fn an_instance_whose_runner_never_came_online_is_replaced() {
    let w = World::new(&CONFIG.replace("min = 0", "min = 1"), true);
    assert_eq!(w.instances().await, vec!["linux-0001"]);
    w.gh().register("linux-linux-0001", &w.pool.labels);
    w.gh().set_online("linux-linux-0001", false);
    w.clock.advance(601);
    assert!(w.svc.reconcile().await.ok());
    assert_eq!(w.instances().await, vec!["linux-0001"], "first sighting");
    w.clock.advance(60);
    assert!(w.svc.reconcile().await.ok());
    assert_eq!(w.instances().await, vec!["linux-0002"], "second: replaced");
    assert_eq!(w.gh().removed(), vec!["linux-linux-0001".to_string()]);
    // Online again within the two passes: the sighting is forgotten.
    w.gh().register("linux-linux-0002", &w.pool.labels);
    w.gh().set_online("linux-linux-0002", false);
    w.clock.advance(601);
    w.svc.reconcile().await;
    w.gh().set_online("linux-linux-0002", true);
    w.clock.advance(60);
    w.svc.reconcile().await;
    w.gh().set_online("linux-linux-0002", false);
    w.clock.advance(60);
    w.svc.reconcile().await;
    assert_eq!(
        w.instances().await,
        vec!["linux-0002"],
        "a sighting before it came online does not count"
    );
}

/// Item 7: reconcile reads runners scoped to the pool: a pool in a runner group of its own
/// lists only that group (looked up by name), once for every pool sharing it; a pool in the
/// default group lists the organization once.
#[tokio::test]
async fn reconcile_lists_each_pools_runner_group_once() {
    let toml = format!(
        "{CONFIG}\n[[pools]]\nname = \"gpu\"\nlabels = [\"gpu\"]\nmax = 1\nrunner_group = \"GPU\"\n\
         [[pools]]\nname = \"arm\"\nlabels = [\"arm\"]\nmax = 1\nrunner_group = \"gpu\"\n"
    );
    let w = World::new(&toml, true);
    let group = w.gh().add_runner_group("gpu");
    let report = w.svc.reconcile().await;
    assert!(report.ok(), "{report:?}");
    let listings: Vec<LocalCall> = w
        .gh()
        .calls()
        .into_iter()
        .filter(|c| {
            matches!(
                c,
                LocalCall::Runners | LocalCall::RunnersInGroup(_) | LocalCall::PoolRunnerGroup(_)
            )
        })
        .collect();
    assert_eq!(
        listings,
        vec![
            LocalCall::Runners,
            LocalCall::PoolRunnerGroup("GPU".into()),
            LocalCall::RunnersInGroup(group),
        ]
    );
}

const EPHEMERAL: &str = r#"
[github]
app_id = 1
installation_id = 2
organization = "octo-org"
boot_grace_secs = 600

[[pools]]
name = "linux"
labels = ["self-hosted", "linux"]
min = 1
max = 4
ephemeral = true
"#;

/// An ephemeral pool's instance whose runner never came is an orphan like any other: it goes
/// after a second sighting past grace, not at once (only a runner whose completed event names
/// it marks an instance spent).
#[tokio::test]
async fn an_ephemeral_orphan_waits_for_its_second_sighting() {
    let w = World::new(EPHEMERAL, true);
    assert_eq!(w.instances().await, vec!["linux-0001"]);
    w.clock.advance(601);
    assert!(w.svc.reconcile().await.ok());
    assert_eq!(w.instances().await, vec!["linux-0001"], "first sighting");
    w.clock.advance(60);
    assert!(w.svc.reconcile().await.ok());
    assert_eq!(w.instances().await, vec!["linux-0002"], "second: replaced");
}

/// Issue 20, "by the runner id saved when scalehook minted the JIT config": the read before
/// a removal asks for the saved id, so a JIT runner found only by it (its name follows no
/// rule the matcher knows, and the ledger missed its job) keeps its busy instance. Without
/// the saved id the name read finds nothing, and the instance goes on its second sighting
/// with the job on it. Once idle, the runner is deregistered by that id, the instance
/// removed, and its record deleted.
#[tokio::test]
async fn a_busy_runner_found_by_its_saved_id_keeps_its_instance() {
    let w = World::new(CONFIG, true);
    assert_eq!(deliver(&w.svc, job("queued", 1, None)).await, 200);
    assert_eq!(w.instances().await, vec!["linux-0001"]);
    let id = w.gh().register("jit-7f3a", &w.pool.labels);
    w.gh().set_busy("jit-7f3a", true);
    let minted = Minted {
        runner_ids: vec![id],
        launched_at: None,
    };
    minted::save(w.svc.ledger(), "linux", "linux-0001", &minted)
        .await
        .expect("saved");
    w.clock.advance(700);
    assert_eq!(deliver(&w.svc, job("completed", 1, None)).await, 200);
    w.clock.advance(60);
    assert!(w.svc.reconcile().await.ok());
    w.clock.advance(60);
    assert!(w.svc.reconcile().await.ok());
    assert_eq!(
        w.instances().await,
        vec!["linux-0001"],
        "its runner holds a job"
    );
    assert!(w.gh().removed().is_empty(), "{:?}", w.gh().removed());
    let reads = w.gh().calls();
    assert!(reads.contains(&LocalCall::Runner(id)), "{reads:?}");
    assert!(
        !reads
            .iter()
            .any(|c| matches!(c, LocalCall::RunnersNamed(n) if n == "linux-linux-0001")),
        "a saved id replaces the name read: {reads:?}"
    );
    w.gh().set_busy("jit-7f3a", false);
    w.clock.advance(60);
    assert!(w.svc.reconcile().await.ok());
    assert!(w.instances().await.is_empty(), "idle now: it goes");
    assert_eq!(w.gh().removed(), vec!["jit-7f3a".to_string()]);
    assert_eq!(
        minted::load(w.svc.ledger(), "linux", "linux-0001").await,
        Ok(None),
        "the removed instance's record is deleted"
    );
}

/// A saved id whose runner is gone (404) is no runner: the instance is an orphan like one
/// with no registration, removed past grace on its second sighting.
#[tokio::test]
async fn a_saved_id_that_github_no_longer_has_is_no_runner() {
    let w = World::new(CONFIG, true);
    assert_eq!(deliver(&w.svc, job("queued", 1, None)).await, 200);
    let minted = Minted {
        runner_ids: vec![4242],
        launched_at: None,
    };
    minted::save(w.svc.ledger(), "linux", "linux-0001", &minted)
        .await
        .expect("saved");
    w.clock.advance(700);
    assert_eq!(deliver(&w.svc, job("completed", 1, None)).await, 200);
    assert_eq!(w.instances().await, vec!["linux-0001"], "first sighting");
    w.clock.advance(60);
    assert!(w.svc.reconcile().await.ok());
    assert!(w.instances().await.is_empty(), "second sighting: removed");
    assert!(w.gh().calls().contains(&LocalCall::Runner(4242)));
    let left = minted::load(w.svc.ledger(), "linux", "linux-0001").await;
    assert_eq!(
        left.ok(),
        Some(None),
        "the removed instance's record is deleted"
    );
}

/// Issue 20 item 3 on AWS: the Auto Scaling describe reports no launch time, but the launch
/// hook's time was saved with the minted runner: boot grace runs from it, not from the first
/// sighting, so an orphan goes on its second sighting once past grace from its launch.
/// Without it, the instance would stay until grace had passed from the first sighting.
#[tokio::test]
async fn the_launch_hooks_time_starts_boot_grace_where_the_fleet_has_none() {
    let w = World::new(CONFIG, false);
    assert_eq!(deliver(&w.svc, job("queued", 1, None)).await, 200);
    let minted = Minted {
        runner_ids: Vec::new(),
        launched_at: Some(NOW),
    };
    minted::save(w.svc.ledger(), "linux", "linux-0001", &minted)
        .await
        .expect("saved");
    w.clock.advance(700);
    assert_eq!(deliver(&w.svc, job("completed", 1, None)).await, 200);
    assert_eq!(w.instances().await, vec!["linux-0001"], "first sighting");
    w.clock.advance(60);
    assert!(w.svc.reconcile().await.ok());
    assert!(
        w.instances().await.is_empty(),
        "past grace from its launch, seen before: removed"
    );
}

/// The pass's own list names a runner of this pool that maps to the instance under another
/// name than the rule's (`linux-linux-0001-old`): it is read by id right before the removal,
/// is idle, and goes with its instance. Treating that read's answer as a failure would keep
/// the instance for ever.
#[tokio::test]
async fn a_listed_runner_under_another_name_goes_with_its_instance() {
    let w = World::new(CONFIG, true);
    assert_eq!(deliver(&w.svc, job("queued", 1, None)).await, 200);
    w.gh().register("linux-linux-0001-old", &w.pool.labels);
    assert_eq!(deliver(&w.svc, job("completed", 1, None)).await, 200);
    assert!(w.instances().await.is_empty());
    assert_eq!(w.gh().removed(), vec!["linux-linux-0001-old".to_string()]);
}

/// A runner of the pass's list that GitHub no longer has when it is read again (404) is no
/// runner: the instance, runnerless and past grace, gets its first sighting in that pass and
/// goes in the next. Taking the 404 for a failed read would keep it one pass longer each time.
#[tokio::test]
async fn a_listed_runner_gone_before_its_read_is_no_runner() {
    let w = World::new(CONFIG, true);
    assert_eq!(deliver(&w.svc, job("queued", 1, None)).await, 200);
    let id = w.gh().register("linux-linux-0001-old", &w.pool.labels);
    w.clock.advance(700);
    w.gh().before_each_call(move |gh, _, call| {
        if matches!(call, LocalCall::Runner(r) if *r == id) {
            gh.unregister("linux-linux-0001-old");
        }
    });
    assert_eq!(deliver(&w.svc, job("completed", 1, None)).await, 200);
    assert_eq!(w.instances().await, vec!["linux-0001"], "a first sighting");
    w.clock.advance(60);
    assert!(w.svc.reconcile().await.ok());
    assert!(w.instances().await.is_empty(), "the second sighting");
}

/// Boot grace is `boot_grace_secs` long: an instance seen without a runner before is taken
/// out at exactly that age, not a second later.
#[tokio::test]
async fn grace_ends_at_exactly_boot_grace_secs() {
    let w = World::new(CONFIG, true);
    assert_eq!(deliver(&w.svc, job("queued", 1, None)).await, 200);
    assert_eq!(deliver(&w.svc, job("completed", 1, None)).await, 200);
    assert_eq!(w.instances().await, vec!["linux-0001"], "within grace");
    w.clock.advance(599);
    assert!(w.svc.reconcile().await.ok());
    assert_eq!(
        w.instances().await,
        vec!["linux-0001"],
        "1 s before grace ends"
    );
    w.clock.advance(1);
    assert!(w.svc.reconcile().await.ok());
    assert!(w.instances().await.is_empty(), "grace has ended");
}

/// A sighting counts only while the instance stays without a runner online: once its runner
/// is seen online, the sighting is forgotten (in the ledger too), so when that runner later
/// drops offline the instance needs two new sightings, not one.
#[tokio::test]
async fn a_runner_seen_online_resets_the_sightings() {
    let w = World::new(CONFIG, true);
    assert_eq!(deliver(&w.svc, job("queued", 1, None)).await, 200);
    w.clock.advance(700);
    assert_eq!(deliver(&w.svc, job("completed", 1, None)).await, 200);
    assert_eq!(w.instances().await, vec!["linux-0001"], "first sighting");
    // The runner registers; its deregistration fails, so the instance stays this pass.
    w.gh().register("linux-linux-0001", &w.pool.labels);
    w.github.fail_removals.store(true, Ordering::SeqCst);
    w.clock.advance(60);
    w.svc.reconcile().await;
    assert_eq!(w.instances().await, vec!["linux-0001"]);
    // It drops offline: a first sighting again, not the second.
    w.github.fail_removals.store(false, Ordering::SeqCst);
    w.gh().set_online("linux-linux-0001", false);
    w.clock.advance(60);
    assert!(w.svc.reconcile().await.ok());
    assert_eq!(
        w.instances().await,
        vec!["linux-0001"],
        "the sighting before its runner came online no longer counts"
    );
    w.clock.advance(60);
    assert!(w.svc.reconcile().await.ok());
    assert!(w.instances().await.is_empty(), "two sightings since");
}
