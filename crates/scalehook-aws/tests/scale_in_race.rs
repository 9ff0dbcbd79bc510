//! Issue 12's assignment race on the real ASG fleet (moto): a job is assigned to an idle
//! runner between the scale-in decision and the removal. GitHub refuses to deregister it
//! (422), so its EC2 instance stays InService; without the race it is terminated.

mod common;

use common::*;
use scalehook_aws::AsgFleet;
use scalehook_core::{Fleet, LocalGitHub, LogFormat, MemoryLedger, Service, WebhookSecrets};
use std::sync::Arc;

struct Outcome {
    status: u16,
    body: serde_json::Value,
    /// The instance the job's runner ran on.
    instance: String,
    /// The group's live (not terminating) instances after the completion.
    group: Group,
    /// Every instance of the group with its lifecycle state, as moto reports it.
    states: Vec<(String, String)>,
    registered: Vec<String>,
    removed: Vec<String>,
}

async fn states(sdk: &aws_config::SdkConfig, asg: &str) -> Vec<(String, String)> {
    let out = asg_client(sdk)
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(asg)
        .send()
        .await
        .expect("DescribeAutoScalingGroups");
    out.auto_scaling_groups()[0]
        .instances()
        .iter()
        .map(|i| {
            let state = i.lifecycle_state().map(|s| s.as_str().to_string());
            (
                i.instance_id().unwrap_or_default().to_string(),
                state.unwrap_or_default(),
            )
        })
        .collect()
}

async fn race(moto: &Moto, asg: &str, assign_during_removal: bool) -> Outcome {
    let sdk = sdk(&moto.endpoint).await;
    create_asg(&sdk, asg, 0, 3, 0).await;
    let config = config(asg, 0, 3, 0);
    let pool = config.pool("linux").expect("pool").clone();
    let fleet = Arc::new(AsgFleet::from_sdk(&sdk));
    let github = Arc::new(LocalGitHub::new());
    let svc = Service::new(
        config,
        WebhookSecrets::new([SECRET]).expect("secret"),
        Arc::new(MemoryLedger::new()),
        fleet.clone(),
    )
    .with_github(github.clone())
    .with_clock(TestClock::new())
    .with_log(LogFormat::Off);

    let a = deliver(&svc, "queued", 1, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let g = group(&sdk, asg).await;
    assert_eq!(g.instances.len(), 1, "{g:?}");
    let instance = g.instances[0].0.clone();
    // The instance's runner registers, named by the convention `<pool>-<instance id>`.
    let runners = github.register_instances(
        &pool,
        &fleet.describe(&pool).await.expect("describe").instances,
    );
    assert_eq!(runners, vec![format!("linux-{instance}")]);
    if assign_during_removal {
        github.assign_on_removal(&runners[0]);
    }

    // Job 1 is cancelled before it starts: the pool is above target, its instance idle.
    let a = deliver(&svc, "completed", 1, None).await;
    Outcome {
        status: a.status,
        body: json(&a),
        instance,
        group: group(&sdk, asg).await,
        states: states(&sdk, asg).await,
        registered: github.registered().into_iter().map(|r| r.name).collect(),
        removed: github.removed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_assigned_during_scale_in_keeps_its_asg_instance() {
    let moto = Moto::start();

    let o = race(&moto, "race-runners", true).await;
    assert_eq!(o.status, 200, "{}", o.body);
    assert_eq!(
        o.group.instances.iter().map(|i| &i.0).collect::<Vec<_>>(),
        vec![&o.instance],
        "the busy instance is still InService: {:?}",
        o.group
    );
    assert_eq!(
        o.states,
        vec![(o.instance.clone(), "InService".to_string())]
    );
    assert_eq!(o.group.desired, 1, "capacity was not decremented");
    assert_eq!(o.registered, vec![format!("linux-{}", o.instance)]);
    assert!(o.removed.is_empty(), "{:?}", o.removed);

    let o = race(&moto, "calm-runners", false).await;
    assert_eq!(o.status, 200, "{}", o.body);
    assert_eq!(o.body["action"], "remove_idle", "{}", o.body);
    assert!(
        o.group.instances.is_empty(),
        "the idle instance {} is gone or terminating: {:?}",
        o.instance,
        o.group
    );
    assert!(
        o.states
            .iter()
            .all(|(id, s)| *id != o.instance || s.starts_with("Terminat")),
        "{:?}",
        o.states
    );
    assert_eq!(o.group.desired, 0);
    assert!(o.registered.is_empty(), "{:?}", o.registered);
    assert_eq!(o.removed, vec![format!("linux-{}", o.instance)]);
}
