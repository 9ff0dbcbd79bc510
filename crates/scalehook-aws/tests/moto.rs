//! The ASG fleet and the DynamoDB ledger against a real moto server, driven through the
//! core's service exactly as the Lambda drives them.

mod common;

use aws_config::SdkConfig;
use common::*;
use scalehook_aws::secrets::SecretSource;
use scalehook_aws::{AsgFleet, DynamoLedger};
use scalehook_core::{Ledger, LogFormat, Service, WebhookSecrets};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

/// One moto server for the tests of this binary that do not stop it (each test has a group
/// and a table of its own). It exits with the test process (see `tests/moto_server.py`).
fn shared_moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(Moto::start)
}

/// A test's own group and table on the shared server.
struct Env {
    sdk: SdkConfig,
    asg: String,
    table: String,
}

async fn setup(asg: (i32, i32, i32)) -> Env {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let env = Env {
        sdk: sdk(&shared_moto().endpoint).await,
        asg: format!("runners-{n}"),
        table: format!("ledger-{n}"),
    };
    create_asg(&env.sdk, &env.asg, asg.0, asg.1, asg.2).await;
    create_table(&env.sdk, &env.table).await;
    env
}

/// The ledger as the tests read it back (fixture timeouts: moto may be busy).
fn ledger(sdk: &SdkConfig, table: &str) -> DynamoLedger {
    DynamoLedger::new(ddb_client(sdk), table, Default::default())
}

async fn counts(sdk: &SdkConfig, table: &str) -> (u32, u32, usize) {
    let l = ledger(sdk, table);
    let p = l.pool("linux").await.expect("pool account");
    let busy = l.busy_runners("linux").await.expect("busy runners");
    (p.queued, p.running, busy.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_scales_out_and_duplicates_change_nothing() {
    let env = setup((0, 5, 0)).await;
    let svc = service(
        &env.sdk,
        &env.table,
        config(&env.asg, 0, 3, 0),
        TestClock::new(),
    );

    let a = deliver(&svc, "queued", 1, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let body = json(&a);
    assert_eq!(body["action"], "scale_out");
    assert_eq!(body["desired"], 1);
    assert_eq!(body["duplicate"], false);
    let g = group(&env.sdk, &env.asg).await;
    assert_eq!((g.desired, g.instances.len()), (1, 1));

    // A redelivery of the same event: recorded once, capacity untouched.
    let dup = deliver(&svc, "queued", 1, None).await;
    assert_eq!(dup.status, 200, "{}", dup.body);
    assert_eq!(json(&dup)["duplicate"], true);
    assert_eq!(json(&dup)["action"], "hold");
    assert_eq!(group(&env.sdk, &env.asg).await.desired, 1);
    assert_eq!(counts(&env.sdk, &env.table).await, (1, 0, 0));

    for job in 2..=4 {
        assert_eq!(deliver(&svc, "queued", job, None).await.status, 200);
    }
    // Four queued jobs, pool max 3.
    assert_eq!(group(&env.sdk, &env.asg).await.desired, 3);
    assert_eq!(counts(&env.sdk, &env.table).await, (4, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_in_removes_only_idle_instances() {
    let env = setup((0, 5, 0)).await;
    let svc = service(
        &env.sdk,
        &env.table,
        config(&env.asg, 0, 5, 0),
        TestClock::new(),
    );
    for job in [1, 2] {
        assert_eq!(deliver(&svc, "queued", job, None).await.status, 200);
    }
    let g = group(&env.sdk, &env.asg).await;
    assert_eq!(g.instances.len(), 2);
    let busy = g.instances[1].0.clone();

    // Job 1 starts on the second instance (runner name contains the instance id).
    let runner = format!("gh-runner-{busy}");
    let a = deliver(&svc, "in_progress", 1, Some(&runner)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let g = group(&env.sdk, &env.asg).await;
    assert!(
        g.instances.iter().any(|(id, p)| *id == busy && *p),
        "the busy instance is protected from scale-in: {g:?}"
    );

    // Job 2 is cancelled before it started: one instance is now surplus, and only the idle
    // one may go, although it is the older one.
    let a = deliver(&svc, "completed", 2, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(json(&a)["action"], "remove_idle");
    let g = group(&env.sdk, &env.asg).await;
    assert_eq!(g.desired, 1);
    assert_eq!(
        g.instances,
        vec![(busy.clone(), true)],
        "the busy instance survives"
    );
    assert_eq!(counts(&env.sdk, &env.table).await, (0, 1, 1));

    // Job 1 completes: its instance is idle now and goes too.
    let a = deliver(&svc, "completed", 1, Some(&runner)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let g = group(&env.sdk, &env.asg).await;
    assert_eq!((g.desired, g.instances.len()), (0, 0), "{g:?}");
    assert_eq!(counts(&env.sdk, &env.table).await, (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_and_group_bounds_are_respected() {
    // The group allows 0..=2, the pool 1..=5: capacity stays within 1..=2.
    let env = setup((0, 2, 0)).await;
    let svc = service(
        &env.sdk,
        &env.table,
        config(&env.asg, 1, 5, 0),
        TestClock::new(),
    );
    let mut highest = 0;
    for job in 1..=4 {
        let a = deliver(&svc, "queued", job, None).await;
        assert_eq!(a.status, 200, "{}", a.body);
        highest = highest.max(group(&env.sdk, &env.asg).await.desired);
    }
    assert_eq!(
        highest, 2,
        "never above the group's max (moto itself would allow it)"
    );
    let mut lowest = i32::MAX;
    for job in 1..=4 {
        let a = deliver(&svc, "completed", job, None).await;
        assert_eq!(a.status, 200, "{}", a.body);
        lowest = lowest.min(group(&env.sdk, &env.asg).await.desired);
    }
    assert_eq!(lowest, 1, "never below the pool's min");
    assert_eq!(counts(&env.sdk, &env.table).await, (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_converges_after_dropped_deliveries() {
    let env = setup((0, 5, 0)).await;
    let clock = TestClock::new();
    let mut config = config(&env.asg, 0, 5, 0);
    config.ledger.queued = std::time::Duration::from_secs(600);
    let svc = service(&env.sdk, &env.table, config, clock.clone());
    for job in [1, 2] {
        assert_eq!(deliver(&svc, "queued", job, None).await.status, 200);
    }
    assert_eq!(group(&env.sdk, &env.asg).await.desired, 2);

    // Both jobs' later deliveries are lost. Before the queued TTL nothing changes...
    let r = svc.reconcile().await;
    assert!(r.ok(), "{r:?}");
    assert_eq!((r.expired, group(&env.sdk, &env.asg).await.desired), (0, 2));
    // ...after it, reconcile expires them and removes the idle instances.
    clock.advance(601);
    let r = svc.reconcile().await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.expired, 2);
    assert_eq!(r.pools[0].action, Some("remove_idle"));
    let g = group(&env.sdk, &env.asg).await;
    assert_eq!((g.desired, g.instances.len()), (0, 0), "{g:?}");
    assert_eq!(counts(&env.sdk, &env.table).await, (0, 0, 0));

    // A queued job whose scale-out was undone behind scalehook's back: reconcile restores it.
    assert_eq!(deliver(&svc, "queued", 3, None).await.status, 200);
    asg_client(&env.sdk)
        .set_desired_capacity()
        .auto_scaling_group_name(&env.asg)
        .desired_capacity(0)
        .send()
        .await
        .expect("external change");
    let r = svc.reconcile().await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(group(&env.sdk, &env.asg).await.desired, 1);
    // The late queued of an expired job stays a no-op.
    let late = deliver(&svc, "queued", 1, None).await;
    assert_eq!(json(&late)["duplicate"], true);
    assert_eq!(counts(&env.sdk, &env.table).await, (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deliveries_leave_exact_counts() {
    let env = setup((0, 40, 0)).await;
    let svc = Arc::new(service(
        &env.sdk,
        &env.table,
        config(&env.asg, 0, 40, 0),
        TestClock::new(),
    ));
    // 80 deliveries for 20 jobs, with duplicates and out-of-order arrivals:
    // jobs 1..=20 queued twice, 1..=10 in progress (6..=10 twice), 1..=5 completed twice.
    let mut deliveries: Vec<(&str, u64)> = Vec::new();
    for job in 1..=20 {
        deliveries.extend([("queued", job), ("queued", job)]);
    }
    for job in 1..=10 {
        deliveries.push(("in_progress", job));
    }
    for job in 6..=10 {
        deliveries.push(("in_progress", job));
    }
    for job in 1..=5 {
        deliveries.extend([("completed", job), ("completed", job)]);
    }
    for job in 11..=15 {
        deliveries.push(("queued", job));
    }
    assert!(deliveries.len() >= 50);
    let barrier = Arc::new(tokio::sync::Barrier::new(deliveries.len()));
    let tasks: Vec<_> = deliveries
        .iter()
        .map(|&(action, job)| {
            let svc = Arc::clone(&svc);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                let runner = format!("gh-runner-job{job}");
                let runner = (action != "queued").then_some(runner.as_str());
                barrier.wait().await;
                deliver(&svc, action, job, runner).await
            })
        })
        .collect();
    let mut failed = Vec::new();
    for (t, &(action, job)) in tasks.into_iter().zip(&deliveries) {
        let a = t.await.expect("task");
        match a.status {
            200 => {}
            // moto can be slower than the per-delivery budget under this load; a 5xx is
            // the documented answer, and GitHub's redelivery is the repair.
            500..=599 => failed.push((action, job)),
            _ => panic!("{} {}", a.status, a.body),
        }
    }
    for (action, job) in &failed {
        let runner = format!("gh-runner-job{job}");
        let runner = (*action != "queued").then_some(runner.as_str());
        let a = deliver(&svc, action, *job, runner).await;
        assert_eq!(a.status, 200, "redelivery: {}", a.body);
    }
    println!(
        "{} concurrent deliveries, {} answered 5xx and were redelivered",
        deliveries.len(),
        failed.len()
    );
    // Queued: 11..=20; running: 6..=10, each with its runner in the busy set.
    assert_eq!(counts(&env.sdk, &env.table).await, (10, 5, 5));
    let mut busy = ledger(&env.sdk, &env.table)
        .busy_runners("linux")
        .await
        .expect("busy runners");
    busy.sort();
    let mut expected: Vec<String> = (6..=10).map(|j| format!("gh-runner-job{j}")).collect();
    expected.sort();
    assert_eq!(busy, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_group_is_5xx_and_a_redelivery_repairs() {
    let sdk = sdk(&shared_moto().endpoint).await;
    create_table(&sdk, "ledger-late").await;
    let svc = service(
        &sdk,
        "ledger-late",
        config("late-group", 0, 3, 0),
        TestClock::new(),
    );

    let a = deliver(&svc, "queued", 1, None).await;
    assert_eq!(a.status, 502, "{}", a.body);
    // A fixed reason and a correlation id; the SDK's text (it names the group) stays in the log.
    assert!(a.body.contains("fleet call failed"), "{}", a.body);
    assert!(a.body.contains("correlation_id"), "{}", a.body);
    assert!(!a.body.contains("late-group"), "{}", a.body);
    assert_eq!(
        counts(&sdk, "ledger-late").await,
        (1, 0, 0),
        "recorded once"
    );
    assert_eq!(deliver(&svc, "queued", 1, None).await.status, 502);
    assert_eq!(counts(&sdk, "ledger-late").await, (1, 0, 0), "still once");

    create_asg(&sdk, "late-group", 0, 3, 0).await;
    let a = deliver(&svc, "queued", 1, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(json(&a)["duplicate"], true);
    assert_eq!(json(&a)["desired"], 1);
    assert_eq!(group(&sdk, "late-group").await.desired, 1);
    assert_eq!(counts(&sdk, "ledger-late").await, (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_fleet_endpoint_is_5xx_and_a_redelivery_repairs() {
    // The ledger on one moto, the Auto Scaling API on another that goes away.
    let ledger_moto = Moto::start();
    let ledger_sdk = sdk(&ledger_moto.endpoint).await;
    create_table(&ledger_sdk, "ledger").await;
    let mut asg_moto = Moto::start();
    let asg_sdk = sdk(&asg_moto.endpoint).await;
    create_asg(&asg_sdk, "runners", 0, 3, 0).await;
    let build = |fleet_sdk: &aws_config::SdkConfig| {
        let config = config("runners", 0, 3, 0);
        Service::new(
            config.clone(),
            WebhookSecrets::new([SECRET]).expect("secret"),
            Arc::new(DynamoLedger::from_sdk(&ledger_sdk, "ledger", config.ledger)),
            Arc::new(AsgFleet::from_sdk(fleet_sdk)),
        )
        .with_clock(TestClock::new())
        .with_log(LogFormat::Off)
    };
    let svc = build(&asg_sdk);
    assert_eq!(deliver(&svc, "queued", 1, None).await.status, 200);

    asg_moto.stop();
    let a = deliver(&svc, "queued", 2, None).await;
    assert!(a.status >= 500, "{} {}", a.status, a.body);
    assert_eq!(
        counts(&ledger_sdk, "ledger").await,
        (2, 0, 0),
        "ledger exact"
    );
    let r = svc.reconcile().await;
    assert!(
        !r.ok(),
        "a reconcile pass without the fleet reports failure"
    );

    // The Auto Scaling API is back (a new endpoint holding the group at its old size).
    let asg_moto = Moto::start();
    let asg_sdk = sdk(&asg_moto.endpoint).await;
    create_asg(&asg_sdk, "runners", 0, 3, 1).await;
    let svc = build(&asg_sdk);
    let a = deliver(&svc, "queued", 2, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(json(&a)["duplicate"], true);
    assert_eq!(
        group(&asg_sdk, "runners").await.desired,
        2,
        "capacity repaired"
    );
    assert_eq!(counts(&ledger_sdk, "ledger").await, (2, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_ledger_is_503_and_the_fleet_is_untouched() {
    let mut moto = Moto::start();
    let sdk = sdk(&moto.endpoint).await;
    create_asg(&sdk, "runners", 0, 3, 0).await;
    create_table(&sdk, "ledger").await;
    let svc = service(&sdk, "ledger", config("runners", 0, 3, 0), TestClock::new());
    moto.stop();
    let a = deliver(&svc, "queued", 1, None).await;
    assert_eq!(a.status, 503, "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_ssm_and_secrets_manager() {
    let sdk = sdk(&shared_moto().endpoint).await;
    ssm_client(&sdk)
        .put_parameter()
        .name("/scalehook/webhook-secret")
        .value("current-secret\nprevious-secret\n")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("PutParameter");
    secretsmanager_client(&sdk)
        .create_secret()
        .name("scalehook/webhook")
        .secret_string("from-secrets-manager")
        .send()
        .await
        .expect("CreateSecret");

    let ssm = SecretSource::Ssm("/scalehook/webhook-secret".into())
        .load(&sdk)
        .await
        .expect("SSM secret");
    assert_eq!(ssm.len(), 2);
    for s in ["current-secret", "previous-secret"] {
        let sig = scalehook_core::signature::sign(s.as_bytes(), b"{}");
        assert!(ssm.verify(Some(&sig), b"{}").is_ok(), "{s}");
    }
    let sm = SecretSource::SecretsManager("scalehook/webhook".into())
        .load(&sdk)
        .await
        .expect("Secrets Manager secret");
    let sig = scalehook_core::signature::sign(b"from-secrets-manager", b"{}");
    assert!(sm.verify(Some(&sig), b"{}").is_ok());

    let missing = SecretSource::Ssm("/nope".into())
        .load(&sdk)
        .await
        .expect_err("missing parameter");
    assert!(missing.to_string().contains("/nope"), "{missing}");
}

/// Standby instances are not the pool's capacity (an operator took them out of service), and
/// replacing an instance terminates it without lowering the desired capacity, so the group
/// launches a fresh one in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_is_not_capacity_and_replace_keeps_desired() {
    use scalehook_core::Fleet;
    let env = setup((0, 5, 3)).await;
    let fleet = AsgFleet::from_sdk(&env.sdk);
    let config = config(&env.asg, 0, 5, 0);
    let pool = &config.pools[0];
    let before = fleet.describe(pool).await.expect("describe");
    assert_eq!((before.desired, before.instances.len()), (3, 3));
    let standby = before.instances[0].id.clone();
    asg_client(&env.sdk)
        .enter_standby()
        .auto_scaling_group_name(&env.asg)
        .instance_ids(&standby)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .expect("EnterStandby");
    let state = fleet.describe(pool).await.expect("describe");
    assert!(
        state.instances.iter().all(|i| i.id != standby),
        "a Standby instance is not live: {state:?}"
    );
    assert_eq!((state.desired, state.instances.len()), (2, 2), "{state:?}");

    let old = state.instances[0].id.clone();
    fleet.replace_instance(pool, &old).await.expect("replace");
    let g = group(&env.sdk, &env.asg).await;
    assert_eq!(g.desired, 2, "the desired capacity stays: {g:?}");
    assert!(g.instances.iter().all(|(id, _)| *id != old), "{g:?}");
    let after = fleet.describe(pool).await.expect("describe");
    assert_eq!(
        after.instances.len(),
        2,
        "a fresh instance took its place: {after:?}"
    );
}

/// A pool with `warm_pool > 0` reads its group's warm pool (`DescribeWarmPool`) and reports
/// warm instances apart from capacity. moto keeps the warm pool's configuration but lists no
/// warm instances (its DescribeWarmPool answers an empty `Instances`), so here the figure is
/// 0 and the instances are the group's; the mapping of `Warmed:*` instances is a unit test
/// (`fleet.rs`, `warm_pool_instances_are_counted_apart`). A group whose warm pool call
/// fails fails the describe like any other fleet call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_is_read_and_never_counted_as_capacity() {
    use scalehook_core::Fleet;
    let env = setup((0, 5, 2)).await;
    asg_client(&env.sdk)
        .put_warm_pool()
        .auto_scaling_group_name(&env.asg)
        .min_size(2)
        .pool_state(aws_sdk_autoscaling::types::WarmPoolState::Stopped)
        .send()
        .await
        .expect("PutWarmPool");
    let fleet = AsgFleet::from_sdk(&env.sdk);
    let toml = format!(
        "[[pools]]\nname = \"linux\"\nlabels = [\"self-hosted\"]\nmax = 5\nwarm_pool = 2\naws_asg = \"{}\"\n",
        env.asg
    );
    let config = scalehook_core::Config::from_toml(&toml).expect("config");
    let state = fleet.describe(&config.pools[0]).await.expect("describe");
    assert_eq!(
        (state.desired, state.instances.len(), state.warm),
        (2, 2, 0)
    );
    let missing = format!(
        "[[pools]]\nname = \"linux\"\nlabels = [\"self-hosted\"]\nmax = 5\nwarm_pool = 1\naws_asg = \"{}-gone\"\n",
        env.asg
    );
    let missing = scalehook_core::Config::from_toml(&missing).expect("config");
    assert!(fleet.describe(&missing.pools[0]).await.is_err());
}

/// The ledger's hooks for convergence and reconcile on DynamoDB: the pool lease is exclusive
/// until released or expired, cursors persist, `unfinished_before` reads the due index oldest
/// first, and expiry reads only due records, resuming from its cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_cursor_unfinished_and_expiry_on_dynamodb() {
    use scalehook_core::{JobState, Transition};
    let env = setup((0, 1, 0)).await;
    let l = ledger(&env.sdk, &env.table);
    assert!(l.acquire_lease("p", "a", 100, 110).await.expect("lease"));
    assert!(!l.acquire_lease("p", "b", 105, 115).await.expect("lease"));
    assert!(l.acquire_lease("q", "b", 105, 115).await.expect("per pool"));
    assert!(l.acquire_lease("p", "a", 105, 115).await.expect("renewal"));
    l.release_lease("p", "b").await.expect("not b's: no-op");
    assert!(!l.acquire_lease("p", "b", 106, 116).await.expect("lease"));
    l.release_lease("p", "a").await.expect("release");
    assert!(l.acquire_lease("p", "b", 106, 116).await.expect("free"));
    assert!(l.acquire_lease("p", "a", 116, 126).await.expect("expired"));

    assert_eq!(l.cursor("hooks").await.expect("cursor"), None);
    l.set_cursor("hooks", "42").await.expect("set");
    assert_eq!(
        l.cursor("hooks").await.expect("cursor").as_deref(),
        Some("42")
    );
    l.delete_cursor("hooks").await.expect("delete");
    assert_eq!(l.cursor("hooks").await.expect("cursor"), None, "deleted");
    l.delete_cursor("hooks")
        .await
        .expect("deleting none is fine");

    // Jobs over three days: 1 queued on day 0, 2 running on day 1, 3 queued on day 2,
    // 4 completed on day 1 (never due).
    let day = 86_400;
    let t0 = 1_800_000_000 - 1_800_000_000 % day;
    let tr = |job_id, to, at, runner: Option<&str>| Transition {
        job_id,
        pool: "linux".into(),
        to,
        runner: runner.map(String::from),
        at,
        repository: Some("octo-org/app".into()),
    };
    l.record(&tr(1, JobState::Queued, t0 + 10, None))
        .await
        .expect("1");
    l.record(&tr(2, JobState::InProgress, t0 + day + 10, Some("r2")))
        .await
        .expect("2");
    l.record(&tr(3, JobState::Queued, t0 + 2 * day + 10, None))
        .await
        .expect("3");
    l.record(&tr(4, JobState::Queued, t0 + day, None))
        .await
        .expect("4");
    l.record(&tr(4, JobState::Completed, t0 + day + 20, None))
        .await
        .expect("4");
    let ids =
        |v: Vec<scalehook_core::ledger::JobRecord>| v.iter().map(|r| r.job_id).collect::<Vec<_>>();
    let before = t0 + 2 * day + 100;
    assert_eq!(
        ids(l.unfinished_before(before, 10).await.expect("due")),
        vec![1, 2, 3]
    );
    assert_eq!(
        ids(l.unfinished_before(before, 2).await.expect("due")),
        vec![1, 2]
    );
    assert_eq!(
        ids(l.unfinished_before(t0 + day + 10, 10).await.expect("due")),
        vec![1, 2]
    );
    let rec = l.record_of(2).await.expect("read").expect("job 2");
    assert_eq!(
        (rec.state, rec.repository.as_deref()),
        (JobState::InProgress, Some("octo-org/app"))
    );

    // Queued TTL 1 day, in progress 2 days: at t0 + 3 days + 20, jobs 1 and 2 are due.
    let ttl = scalehook_core::config::LedgerTtl {
        queued: std::time::Duration::from_secs(2 * day),
        in_progress: std::time::Duration::from_secs(2 * day),
        retention: std::time::Duration::from_secs(4 * day),
    };
    let now = t0 + 3 * day + 20;
    let done = l.expire(now, &ttl).await.expect("expire");
    assert_eq!(done.expired, 2, "{done:?}");
    let p = l.pool("linux").await.expect("account");
    assert_eq!((p.queued, p.running), (1, 0));
    assert!(l.busy_runners("linux").await.expect("busy").is_empty());
    assert_eq!(
        ids(l.unfinished_before(now, 10).await.expect("due")),
        vec![3]
    );
    // The next pass finds nothing more to do, and job 3 expires in its turn.
    assert_eq!(l.expire(now, &ttl).await.expect("expire").expired, 0);
    assert_eq!(l.expire(now + day, &ttl).await.expect("expire").expired, 1);
    let p = l.pool("linux").await.expect("account");
    assert_eq!((p.queued, p.running), (0, 0), "{p:?}");
}

/// A spot pool with an overflow reads its group's scaling activities beside the describe
/// (issue 23). moto never fails a launch and answers `DescribeScalingActivities` with no
/// activities, so against moto the fleet reports no failure: what this shows is that the
/// call is made and accepted; the classification of failed activities is tested as a pure
/// function (`fleet::tests::the_newest_launch_activity_says_whether_launches_fail`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_pool_with_an_overflow_reads_its_activities_and_moto_reports_no_failure() {
    use scalehook_core::Fleet;
    let env = setup((0, 5, 0)).await;
    let fleet = AsgFleet::from_sdk(&env.sdk);
    let config = scalehook_core::Config::from_toml(&format!(
        "[[pools]]\nname = \"linux\"\nlabels = [\"self-hosted\", \"linux\"]\nmax = 5\n\
         aws_asg = \"{}\"\ncapacity = \"spot\"\noverflow = \"od\"\n\
         [[pools]]\nname = \"od\"\nlabels = [\"self-hosted\", \"linux\"]\nmax = 5\n\
         aws_asg = \"{}-od\"\n",
        env.asg, env.asg
    ))
    .expect("config");
    let spot = &config.pools[0];
    fleet.set_desired(spot, 2).await.expect("scale out");
    let state = fleet
        .describe(spot)
        .await
        .expect("describe with activities");
    assert_eq!((state.desired, state.instances.len()), (2, 2));
    assert_eq!(state.launch_failure, None);
    let activities = asg_client(&env.sdk)
        .describe_scaling_activities()
        .auto_scaling_group_name(&env.asg)
        .send()
        .await
        .expect("moto answers DescribeScalingActivities");
    // moto's limit, asserted so that the day it records activities this test says so.
    assert!(
        activities.activities().is_empty(),
        "moto now records scaling activities: test a failed launch against it"
    );
    assert_eq!(
        scalehook_aws::fleet::launch_failure(activities.activities()),
        None,
        "{activities:?}"
    );
}
