//! Spot interruptions end to end through the Lambda's dispatch: an "EC2 Spot Instance
//! Interruption Warning" event, as EventBridge delivers it (the shape of the EC2 user
//! guide's example, for a real instance of a moto group) -> `Service::interruption` over
//! the Auto Scaling group and the DynamoDB ledger on moto, with the real GitHub client
//! (`scalehook_github::GitHubApp`) against the GitHub API double, which checks every
//! request (the runner deregistration, the job re-run) against GitHub's OpenAPI description.
//!
//! moto emits no EC2 events and never reclaims an instance, so the event is built here and
//! the doomed instance stays listed: what the test checks is what scalehook asked of Auto
//! Scaling and GitHub.

mod common;

use common::{asg_client, create_asg, create_table, group, headers, sdk, Moto, TestClock};
use scalehook_aws::lambda;
use scalehook_core::{Config, Service};
use scalehook_github::{AppKey, Budget, GitHubApp, APP_KEY_ENV};
use scalehook_github_double::{GitHubDouble, RunnerState, TEST_APP_KEY};
use serde_json::{json, Value};
use std::sync::Arc;

const GROUP: &str = "runners-spot";
const TABLE: &str = "scalehook-ledger";
const RERUN: &str = "actions/re-run-job-for-workflow-run";

struct World {
    _moto: Moto,
    sdk: aws_config::SdkConfig,
    double: GitHubDouble,
    service: Service,
}

async fn world(desired: i32) -> World {
    let moto = tokio::task::spawn_blocking(Moto::start)
        .await
        .expect("moto starts");
    let sdk = sdk(&moto.endpoint).await;
    create_asg(&sdk, GROUP, 0, 6, desired).await;
    create_table(&sdk, TABLE).await;
    let double = tokio::task::spawn_blocking(GitHubDouble::start)
        .await
        .expect("the double starts");
    let config = Config::from_toml(&format!(
        "[[pools]]\nname = \"spot\"\nlabels = [\"self-hosted\", \"linux\", \"x64\"]\nmin = {desired}\nmax = 6\n\
         aws_asg = \"{GROUP}\"\ncapacity = \"spot\"\nrerun_interrupted = true\n\n{}",
        double.config_toml("acme")
    ))
    .expect("config");
    let app = GitHubApp::new(
        config.github.as_ref().expect("[github]"),
        AppKey::from_pem(TEST_APP_KEY, APP_KEY_ENV).expect("test key"),
        Budget::default(),
    );
    let service = common::service(&sdk, TABLE, config, TestClock::new()).with_github(Arc::new(app));
    World {
        _moto: moto,
        sdk,
        double,
        service,
    }
}

impl World {
    async fn instances(&self) -> Vec<String> {
        group(&self.sdk, GROUP)
            .await
            .instances
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    async fn desired(&self) -> i32 {
        group(&self.sdk, GROUP).await.desired
    }

    async fn deliver(&self, body: Value, delivery: &str) -> Value {
        let body = body.to_string().into_bytes();
        let answer = self
            .service
            .handle(
                &http::Method::POST,
                &headers(&body, "workflow_job", delivery),
                &body,
            )
            .await;
        assert!(answer.status < 300, "{} {}", answer.status, answer.body);
        serde_json::from_str(&answer.body).expect("json")
    }

    fn reruns(&self) -> Vec<u16> {
        self.double
            .requests()
            .into_iter()
            .filter(|q| q.operation.as_deref() == Some(RERUN))
            .map(|q| {
                assert!(q.violations.is_empty(), "{:?}", q.violations);
                q.status
            })
            .collect()
    }
}

/// The EC2 user guide's example event for a spot interruption warning, for `instance`.
fn warning(instance: &str) -> Value {
    json!({
        "version": "0",
        "id": "12345678-1234-1234-1234-123456789012",
        "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2",
        "account": "123456789012",
        "time": "2026-12-08T01:00:00Z",
        "region": "us-east-1",
        "resources": [format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance}")],
        "detail": {"instance-id": instance, "instance-action": "terminate"}
    })
}

fn job(action: &str, runner: Option<&str>, conclusion: Option<&str>) -> Value {
    json!({
        "action": action,
        "workflow_job": {"id": 4001, "run_id": 900, "run_attempt": 1, "name": "build",
                         "labels": ["self-hosted", "linux", "x64"], "runner_name": runner,
                         "runner_id": runner.map(|_| 1), "conclusion": conclusion,
                         "status": action},
        "repository": {"full_name": "acme/app", "owner": {"login": "acme"}}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_instance_is_deregistered_removed_and_replaced() {
    let w = world(2).await;
    let before = w.instances().await;
    assert_eq!(before.len(), 2);
    for id in &before {
        w.double
            .add_runner("acme", &format!("spot-{id}"), RunnerState::Idle);
    }
    let answer = lambda::invoke(&w.service, warning(&before[0]))
        .await
        .expect("handled");
    assert_eq!(answer["report"]["action"], "replaced", "{answer}");
    assert_eq!(answer["report"]["runners_deregistered"], 1, "{answer}");
    let names: Vec<String> = w.double.runners().into_iter().map(|r| r.name).collect();
    assert_eq!(names, vec![format!("spot-{}", before[1])], "deregistered");
    let after = w.instances().await;
    assert!(!after.contains(&before[0]), "removed: {after:?}");
    assert_eq!(after.len(), 2, "replaced: {after:?}");
    assert_eq!(w.desired().await, 2);
    assert!(
        w.double.violations().is_empty(),
        "{:?}",
        w.double.violations()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_instance_stays_its_job_is_recorded_and_rerun_once() {
    let w = world(2).await;
    let doomed = w.instances().await.remove(0);
    let runner = format!("spot-{doomed}");
    w.double.add_runner("acme", &runner, RunnerState::Busy);
    w.double
        .set_job("acme/app", 4001, "in_progress", Some(&runner));
    w.deliver(job("queued", None, None), "d-1").await;
    w.deliver(job("in_progress", Some(&runner), None), "d-2")
        .await;

    let answer = lambda::invoke(&w.service, warning(&doomed))
        .await
        .expect("handled");
    assert_eq!(
        answer["report"]["action"], "kept_out_of_capacity",
        "{answer}"
    );
    assert_eq!(answer["report"]["interrupted_runners"], json!([runner]));
    let instances = w.instances().await;
    assert!(instances.contains(&doomed), "the busy instance stays");
    assert_eq!(
        instances.len(),
        3,
        "one more instance started: {instances:?}"
    );
    assert_eq!(w.desired().await, 3);
    assert_eq!(
        w.double.runners().len(),
        1,
        "a busy runner is not deregistered"
    );

    // The reclaim fails the job while its run goes on: GitHub refuses the re-run for now.
    w.double.set_busy(&runner, false);
    w.deliver(job("completed", Some(&runner), Some("failure")), "d-3")
        .await;
    assert_eq!(w.service.metrics().interruptions("spot"), (1, 0));
    assert_eq!(w.reruns(), vec![403]);
    // The run completed: reconcile asks again and GitHub re-runs it; nothing asks again.
    w.double
        .set_job("acme/app", 4001, "completed", Some(&runner));
    w.service.reconcile().await;
    assert_eq!(w.reruns(), vec![403, 201]);
    assert_eq!(w.service.metrics().interruptions("spot"), (1, 1));
    w.service.reconcile().await;
    w.deliver(job("completed", Some(&runner), Some("failure")), "d-4")
        .await;
    assert_eq!(w.reruns(), vec![403, 201], "at most once");
    assert!(
        w.double.violations().is_empty(),
        "{:?}",
        w.double.violations()
    );
    // The description the group's instances come from is the only fleet call that knows
    // of them: the doomed instance was never terminated by scalehook.
    let described = asg_client(&w.sdk)
        .describe_auto_scaling_instances()
        .instance_ids(&doomed)
        .send()
        .await
        .expect("DescribeAutoScalingInstances");
    assert_eq!(described.auto_scaling_instances().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_of_no_pool_is_acknowledged_and_a_bad_event_is_refused() {
    let w = world(1).await;
    let answer = lambda::invoke(&w.service, warning("i-0fedcba9876543210"))
        .await
        .expect("acknowledged");
    assert_eq!(answer["report"]["action"], "ignored", "{answer}");
    assert_eq!(answer["report"]["pool"], Value::Null);
    let mut bad = warning("i-0fedcba9876543210");
    bad["detail"] = json!({"instance-action": "terminate"});
    let e = lambda::invoke(&w.service, bad).await.expect_err("refused");
    assert!(
        matches!(e, lambda::InvocationError::MalformedEvent(_)),
        "{e}"
    );
    assert_eq!(w.desired().await, 1);
}
