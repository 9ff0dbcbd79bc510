//! The launch lifecycle hook end to end: an "EC2 Instance-launch Lifecycle Action" event, as
//! EventBridge delivers it, through the Lambda's dispatch -> the core mints a JIT runner
//! (LocalGitHub) -> the SecureString parameter on moto, tagged with the instance's ARN ->
//! CompleteLifecycleAction CONTINUE; the failure paths ABANDON. One test mints through the
//! real client (`scalehook_github::GitHubApp`) against the GitHub API double, which checks
//! the generate-jitconfig request against GitHub's OpenAPI description.
//!
//! moto 5.2.5 stores lifecycle hooks (PutLifecycleHook / DescribeLifecycleHooks, used below)
//! but does not implement CompleteLifecycleAction and never holds instances in Pending:Wait
//! nor emits EventBridge events. So the event is built here from the hook moto describes and
//! a real instance of the group, and CompleteLifecycleAction goes to a loopback stand-in that
//! answers the documented Query-protocol shapes: it accepts the pending action's token once
//! and refuses any other with ValidationError, as Auto Scaling does.

mod common;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::{asg_client, create_asg, sdk, ssm_client, Moto, REGION, SECRET};
use scalehook_aws::lambda::{self, InvocationError};
use scalehook_aws::provision::{LaunchHook, INSTANCE_TAG_KEY};
use scalehook_core::github::{
    DeliveryPage, GitHub, GitHubError, JitRunner, JobStatus, LocalGitHub, Runner, RunnerRemoval,
};
use scalehook_core::{Config, LocalFleet, MemoryLedger, PoolConfig, Service, WebhookSecrets};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const GROUP: &str = "runners-linux-x64";
const HOOK: &str = "scalehook-provision";
const PREFIX: &str = "/scalehook/jit";
const ACCOUNT: &str = "123456789012";

/// token -> (group, hook, instance).
type PendingActions = Arc<Mutex<HashMap<String, (String, String, String)>>>;

/// CompleteLifecycleAction, as Auto Scaling answers it.
#[derive(Clone, Default)]
struct Completions {
    /// token -> (group, hook, instance) of the actions still waiting.
    pending: PendingActions,
    /// (instance, result) of every accepted completion, in order.
    done: Arc<Mutex<Vec<(String, String)>>>,
}

fn form(body: &str) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

async fn complete(State(c): State<Completions>, body: String) -> (StatusCode, String) {
    let f = form(&body);
    assert_eq!(
        f.get("Action").map(String::as_str),
        Some("CompleteLifecycleAction"),
        "{f:?}"
    );
    let token = f.get("LifecycleActionToken").cloned().unwrap_or_default();
    let expected = c.pending.lock().unwrap().get(&token).cloned();
    let got = (
        f.get("AutoScalingGroupName").cloned().unwrap_or_default(),
        f.get("LifecycleHookName").cloned().unwrap_or_default(),
        f.get("InstanceId").cloned().unwrap_or_default(),
    );
    let result = f.get("LifecycleActionResult").cloned().unwrap_or_default();
    if expected.as_ref() != Some(&got) || !["CONTINUE", "ABANDON"].contains(&result.as_str()) {
        let xml = format!(
            "<ErrorResponse xmlns=\"http://autoscaling.amazonaws.com/doc/2011-01-01/\"><Error><Type>Sender</Type><Code>ValidationError</Code><Message>No active Lifecycle Action found with token {token}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"
        );
        return (StatusCode::BAD_REQUEST, xml);
    }
    c.pending.lock().unwrap().remove(&token);
    c.done.lock().unwrap().push((got.2, result));
    (
        StatusCode::OK,
        "<CompleteLifecycleActionResponse xmlns=\"http://autoscaling.amazonaws.com/doc/2011-01-01/\"><CompleteLifecycleActionResult/><ResponseMetadata><RequestId>r-2</RequestId></ResponseMetadata></CompleteLifecycleActionResponse>".into(),
    )
}

async fn completions_stand_in() -> (Completions, String) {
    let c = Completions::default();
    let app = Router::new()
        .route("/", post(complete))
        .with_state(c.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (c, format!("http://{addr}"))
}

/// A GitHub whose JIT minting fails (an outage, a missing App permission).
struct FailingMint(LocalGitHub);

#[async_trait]
impl GitHub for FailingMint {
    async fn runners(&self) -> Result<Vec<Runner>, GitHubError> {
        self.0.runners().await
    }
    async fn remove_runner(&self, id: u64) -> Result<RunnerRemoval, GitHubError> {
        self.0.remove_runner(id).await
    }
    async fn job(&self, r: &str, id: u64) -> Result<Option<JobStatus>, GitHubError> {
        self.0.job(r, id).await
    }
    async fn deliveries(&self, c: Option<&str>) -> Result<DeliveryPage, GitHubError> {
        self.0.deliveries(c).await
    }
    async fn redeliver(&self, id: u64) -> Result<(), GitHubError> {
        self.0.redeliver(id).await
    }
    async fn jit_runner(&self, _: &PoolConfig, _: &str) -> Result<JitRunner, GitHubError> {
        Err(GitHubError::Unavailable(
            "503 from generate-jitconfig".into(),
        ))
    }
}

struct World {
    _moto: Moto,
    sdk: aws_config::SdkConfig,
    completions: Completions,
    hook: LaunchHook,
}

async fn world() -> World {
    let moto = Moto::start();
    let sdk = sdk(&moto.endpoint).await;
    create_asg(&sdk, GROUP, 0, 4, 2).await;
    asg_client(&sdk)
        .put_lifecycle_hook()
        .auto_scaling_group_name(GROUP)
        .lifecycle_hook_name(HOOK)
        .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
        .default_result("ABANDON")
        .heartbeat_timeout(300)
        .send()
        .await
        .expect("moto stores the hook");
    let (completions, endpoint) = completions_stand_in().await;
    let autoscaling = aws_sdk_autoscaling::Client::from_conf(
        aws_sdk_autoscaling::config::Builder::from(&sdk)
            .endpoint_url(endpoint)
            .build(),
    );
    let hook = LaunchHook::new(aws_sdk_ssm::Client::new(&sdk), autoscaling, PREFIX, None);
    World {
        _moto: moto,
        sdk,
        completions,
        hook,
    }
}

fn config() -> Config {
    Config::from_toml(&format!(
        "[[pools]]\nname = \"linux-x64\"\nlabels = [\"self-hosted\", \"linux\", \"x64\"]\nmax = 4\naws_asg = \"{GROUP}\"\n"
    ))
    .unwrap()
}

fn service(github: Arc<dyn GitHub>) -> Service {
    service_with(config(), github)
}

fn service_with(config: Config, github: Arc<dyn GitHub>) -> Service {
    Service::new(
        config,
        WebhookSecrets::new([SECRET]).unwrap(),
        Arc::new(MemoryLedger::new()),
        Arc::new(LocalFleet::new()),
    )
    .with_github(github)
}

impl World {
    /// The group's instances on moto, and the hook moto describes.
    async fn launch_event(&self, instance: &str, token: &str) -> Value {
        let hooks = asg_client(&self.sdk)
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(GROUP)
            .send()
            .await
            .unwrap();
        let hook = &hooks.lifecycle_hooks()[0];
        assert_eq!(
            hook.lifecycle_transition(),
            Some("autoscaling:EC2_INSTANCE_LAUNCHING")
        );
        assert_eq!(hook.default_result(), Some("ABANDON"));
        let hook_name = hook.lifecycle_hook_name().unwrap().to_string();
        self.completions.pending.lock().unwrap().insert(
            token.into(),
            (GROUP.into(), hook_name.clone(), instance.into()),
        );
        // The shape EventBridge delivers (Auto Scaling user guide, "EC2 Instance-launch
        // Lifecycle Action").
        json!({
            "version": "0",
            "id": "12345678-1234-1234-1234-123456789012",
            "detail-type": "EC2 Instance-launch Lifecycle Action",
            "source": "aws.autoscaling",
            "account": ACCOUNT,
            "time": "2026-11-29T12:00:00Z",
            "region": REGION,
            "resources": [format!("arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:a-b-c:autoScalingGroupName/{GROUP}")],
            "detail": {
                "LifecycleActionToken": token,
                "AutoScalingGroupName": GROUP,
                "LifecycleHookName": hook_name,
                "EC2InstanceId": instance,
                "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
                "Origin": "EC2",
                "Destination": "AutoScalingGroup"
            }
        })
    }

    async fn instances(&self) -> Vec<String> {
        common::group(&self.sdk, GROUP)
            .await
            .instances
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    async fn parameter(&self, instance: &str) -> Option<(String, HashMap<String, String>)> {
        let ssm = ssm_client(&self.sdk);
        let name = format!("{PREFIX}/{instance}");
        let p = match ssm
            .get_parameter()
            .name(&name)
            .with_decryption(true)
            .send()
            .await
        {
            Ok(p) => p.parameter.unwrap(),
            Err(_) => return None,
        };
        assert_eq!(
            p.r#type(),
            Some(&aws_sdk_ssm::types::ParameterType::SecureString)
        );
        let tags = ssm
            .list_tags_for_resource()
            .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
            .resource_id(&name)
            .send()
            .await
            .unwrap();
        let tags = tags
            .tag_list()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        Some((p.value.unwrap(), tags))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_event_mints_stores_and_continues() {
    let w = world().await;
    let instances = w.instances().await;
    assert_eq!(instances.len(), 2, "moto launched the group's instances");
    let github = Arc::new(LocalGitHub::new());
    let service = service(github.clone());

    let instance = &instances[0];
    let event = w.launch_event(instance, "token-1").await;
    let answer = lambda::invoke_with(&service, Some(&w.hook), event.clone())
        .await
        .expect("provisioned");
    assert_eq!(answer["status"], "provisioned", "{answer}");
    assert_eq!(answer["result"], "CONTINUE");
    let name = format!("linux-x64-{instance}");
    assert_eq!(answer["runner"], name.as_str());

    // The runner: registered (offline until it starts) with the pool's name and labels.
    let runners = github.registered();
    assert_eq!(runners.len(), 1);
    assert_eq!(runners[0].name, name);
    assert!(runners[0].in_pool("linux-x64"));
    assert_eq!(runners[0].labels, ["self-hosted", "linux", "x64"]);
    // Its configuration: a SecureString named after the instance, tagged with its ARN.
    let (value, tags) = w.parameter(instance).await.expect("parameter written");
    assert_eq!(value, format!("local-jit-{}", runners[0].id));
    assert_eq!(
        tags.get(INSTANCE_TAG_KEY).map(String::as_str),
        Some(format!("arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance}").as_str())
    );
    assert!(
        w.parameter(&instances[1]).await.is_none(),
        "nothing for the other instance"
    );
    // The lifecycle action: completed once, CONTINUE.
    assert_eq!(
        *w.completions.done.lock().unwrap(),
        vec![(instance.clone(), "CONTINUE".to_string())]
    );

    // EventBridge delivers at least once: the same event again mints nothing and succeeds
    // (the action is already completed; Auto Scaling refuses the token, which is fine).
    let again = lambda::invoke_with(&service, Some(&w.hook), event)
        .await
        .expect("a redelivery is not an error");
    assert_eq!(again["status"], "already_provisioned", "{again}");
    assert_eq!(github.registered().len(), 1);
    assert_eq!(w.completions.done.lock().unwrap().len(), 1);

    // Without the launch hook (a process that was not given one), the event is refused.
    let e = lambda::invoke(&service, w.launch_event(&instances[1], "token-2").await)
        .await
        .unwrap_err();
    assert!(matches!(e, InvocationError::UnsupportedEvent(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_minting_abandons_and_stores_nothing() {
    let w = world().await;
    let instance = w.instances().await.remove(0);
    let service = service(Arc::new(FailingMint(LocalGitHub::new())));
    let answer = lambda::invoke_with(
        &service,
        Some(&w.hook),
        w.launch_event(&instance, "t-9").await,
    )
    .await
    .expect("abandoning is an answer, not an invocation error");
    assert_eq!(answer["status"], "abandoned", "{answer}");
    assert_eq!(answer["result"], "ABANDON");
    assert!(answer["reason"]
        .as_str()
        .unwrap()
        .contains("generate-jitconfig"));
    assert!(w.parameter(&instance).await.is_none());
    assert_eq!(
        *w.completions.done.lock().unwrap(),
        vec![(instance, "ABANDON".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_group_and_webhook_only_mode_abandon() {
    let w = world().await;
    let instances = w.instances().await;
    // Webhook-only mode: no GitHub App, nothing can be minted.
    let service_no_app = Service::new(
        config(),
        WebhookSecrets::new([SECRET]).unwrap(),
        Arc::new(MemoryLedger::new()),
        Arc::new(LocalFleet::new()),
    );
    let a = lambda::invoke_with(
        &service_no_app,
        Some(&w.hook),
        w.launch_event(&instances[0], "t-a").await,
    )
    .await
    .unwrap();
    assert_eq!(a["result"], "ABANDON", "{a}");
    // A group that is no pool's.
    let mut event = w.launch_event(&instances[1], "t-b").await;
    event["detail"]["AutoScalingGroupName"] = "someone-elses-group".into();
    w.completions.pending.lock().unwrap().insert(
        "t-b".into(),
        (
            "someone-elses-group".into(),
            HOOK.into(),
            instances[1].clone(),
        ),
    );
    let github = Arc::new(LocalGitHub::new());
    let b = lambda::invoke_with(&service(github.clone()), Some(&w.hook), event)
        .await
        .unwrap();
    assert_eq!(b["result"], "ABANDON", "{b}");
    assert!(github.registered().is_empty());
    // A completion that Auto Scaling refuses for a new runner is an invocation error, so
    // Lambda retries it (and the retry finds the stored parameter).
    let c = lambda::invoke_with(&service(github.clone()), Some(&w.hook), {
        let mut e = w.launch_event(&instances[1], "t-c").await;
        e["detail"]["LifecycleActionToken"] = "not-a-pending-token".into();
        e
    })
    .await
    .unwrap_err();
    assert!(matches!(c, InvocationError::LaunchFailed(_)), "{c}");
    assert!(w.parameter(&instances[1]).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_event_mints_through_the_github_app_against_the_openapi_double() {
    use scalehook_github::{AppKey, Budget, GitHubApp, APP_KEY_ENV};
    use scalehook_github_double::{GitHubDouble, TEST_APP_KEY};

    let w = world().await;
    let instance = w.instances().await.remove(0);
    let double = tokio::task::spawn_blocking(GitHubDouble::start)
        .await
        .expect("the double starts");
    let config = Config::from_toml(&format!(
        "[[pools]]\nname = \"linux-x64\"\nlabels = [\"self-hosted\", \"linux\", \"x64\"]\nmax = 4\naws_asg = \"{GROUP}\"\nephemeral = true\nrunner_group_id = 3\n\n{}",
        double.config_toml("acme")
    ))
    .expect("config");
    let app = GitHubApp::new(
        config.github.as_ref().expect("[github]"),
        AppKey::from_pem(TEST_APP_KEY, APP_KEY_ENV).expect("test key"),
        Budget::default(),
    );
    let service = service_with(config, Arc::new(app));

    let answer = lambda::invoke_with(
        &service,
        Some(&w.hook),
        w.launch_event(&instance, "token-1").await,
    )
    .await
    .expect("provisioned");
    assert_eq!(answer["status"], "provisioned", "{answer}");
    assert_eq!(answer["result"], "CONTINUE");
    let name = format!("linux-x64-{instance}");

    // GitHub registered it in the organization, in the pool's group, with its labels.
    let runners = double.runners();
    assert_eq!(runners.len(), 1, "{runners:?}");
    let r = &runners[0];
    assert_eq!(r.name, name);
    assert_eq!(r.scope, "org:acme");
    assert_eq!(r.runner_group_id, 3);
    let labels: Vec<&str> = r.labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(labels, ["self-hosted", "linux", "x64"]);
    // The request was GitHub's generate-jitconfig, valid against the OpenAPI description
    // (the double answers 400 and records a violation otherwise; dropping it checks).
    let jit: Vec<_> = double
        .requests()
        .into_iter()
        .filter(|q| q.operation.as_deref() == Some("actions/generate-runner-jitconfig-for-org"))
        .collect();
    assert_eq!(jit.len(), 1, "one generate-jitconfig call");
    assert_eq!(jit[0].status, 201);
    assert!(jit[0].violations.is_empty(), "{:?}", jit[0].violations);
    // The configuration GitHub returned is what the instance will read.
    let (value, _) = w.parameter(&instance).await.expect("parameter written");
    assert!(
        !value.is_empty() && !value.starts_with("local-jit"),
        "GitHub's encoded config"
    );
    assert_eq!(
        *w.completions.done.lock().unwrap(),
        vec![(instance.clone(), "CONTINUE".to_string())]
    );
}

/// A warm pool: the hook fires as the instance launches into the warm pool and again when
/// scale-out takes it. The group's warm pool is set up on moto (PutWarmPool and
/// DescribeWarmPool are implemented; moto 5.2.5 neither creates warm instances nor emits the
/// events, so the two events are built as the Auto Scaling user guide's "Warm pool example
/// events and patterns" shows them, for a real instance of the group).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pool_entry_continues_without_a_runner_and_the_exit_mints() {
    let w = world().await;
    let asg = asg_client(&w.sdk);
    asg.put_warm_pool()
        .auto_scaling_group_name(GROUP)
        .pool_state(aws_sdk_autoscaling::types::WarmPoolState::Stopped)
        .min_size(2)
        .instance_reuse_policy(
            aws_sdk_autoscaling::types::InstanceReusePolicy::builder()
                .reuse_on_scale_in(false)
                .build(),
        )
        .send()
        .await
        .expect("moto stores the warm pool");
    let pool = asg
        .describe_warm_pool()
        .auto_scaling_group_name(GROUP)
        .send()
        .await
        .expect("moto describes it");
    let pool = pool.warm_pool_configuration().expect("a warm pool");
    assert_eq!(
        pool.pool_state(),
        Some(&aws_sdk_autoscaling::types::WarmPoolState::Stopped)
    );
    let instance = w.instances().await.remove(0);
    let github = Arc::new(LocalGitHub::new());
    let service = service(github.clone());

    // Into the warm pool: CONTINUE, and no runner, no configuration on a warm instance.
    let mut warming = w.launch_event(&instance, "token-warm").await;
    warming["detail"]["Origin"] = "EC2".into();
    warming["detail"]["Destination"] = "WarmPool".into();
    let answer = lambda::invoke_with(&service, Some(&w.hook), warming.clone())
        .await
        .expect("warming");
    assert_eq!(answer["status"], "warming", "{answer}");
    assert_eq!(answer["result"], "CONTINUE");
    assert!(github.registered().is_empty(), "no runner while warm");
    assert!(
        w.parameter(&instance).await.is_none(),
        "nothing secret while warm"
    );
    assert_eq!(
        *w.completions.done.lock().unwrap(),
        vec![(instance.clone(), "CONTINUE".to_string())]
    );
    // A redelivery of it: Auto Scaling refuses the spent token; still no runner, no error.
    let again = lambda::invoke_with(&service, Some(&w.hook), warming)
        .await
        .expect("a redelivered warm entry is not an error");
    assert_eq!(again["status"], "warming");
    assert!(github.registered().is_empty());

    // Out of the warm pool into service: now its runner is minted.
    let mut taken = w.launch_event(&instance, "token-start").await;
    taken["detail"]["Origin"] = "WarmPool".into();
    taken["detail"]["Destination"] = "AutoScalingGroup".into();
    let answer = lambda::invoke_with(&service, Some(&w.hook), taken)
        .await
        .expect("provisioned");
    assert_eq!(answer["status"], "provisioned", "{answer}");
    assert_eq!(github.registered().len(), 1);
    assert!(w.parameter(&instance).await.is_some());
    assert_eq!(
        *w.completions.done.lock().unwrap(),
        vec![
            (instance.clone(), "CONTINUE".to_string()),
            (instance, "CONTINUE".to_string())
        ]
    );
}

/// Issue 21, finding 6: JIT parameters no instance took (an abandoned launch, a retried
/// launch event) are deleted by reconcile's housekeeping once they are older than the bound
/// and their instance is gone or past launching; a launching instance's stays, and so does
/// anything that is not `<prefix>/<instance id>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn housekeeping_deletes_unread_parameters_of_gone_or_booted_instances() {
    use scalehook_core::housekeeping::{sweep, UnreadConfigs, UNREAD_CONFIG_MAX_AGE};
    use scalehook_core::{FleetState, Instance};
    let w = world().await;
    let ssm = ssm_client(&w.sdk);
    let names = [
        format!("{PREFIX}/i-gone"),
        format!("{PREFIX}/i-launching"),
        format!("{PREFIX}/i-booted"),
        format!("{PREFIX}/nested/i-gone"),
        "/elsewhere/i-gone".to_string(),
    ];
    for name in &names {
        ssm.put_parameter()
            .name(name)
            .value("encoded-jit-config")
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send()
            .await
            .expect("moto stores the parameter");
    }
    let instance = |id: &str, launching: bool| Instance {
        id: id.into(),
        runner_key: id.into(),
        launching,
        protected: false,
        launched_at: None,
    };
    let fleets = [FleetState {
        desired: 2,
        min: None,
        max: None,
        instances: vec![instance("i-launching", true), instance("i-booted", false)],
        supports_protection: true,
        ..FleetState::default()
    }];
    let mut unread: Vec<String> = w
        .hook
        .unread()
        .await
        .expect("describe")
        .into_iter()
        .map(|c| c.instance_key)
        .collect();
    unread.sort();
    assert_eq!(unread, ["i-booted", "i-gone", "i-launching"]);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert_eq!(sweep(&w.hook, &fleets, now).await, Ok(0), "fresh ones stay");
    let later = now + UNREAD_CONFIG_MAX_AGE + 60;
    assert_eq!(sweep(&w.hook, &fleets, later).await, Ok(2));
    let mut left = Vec::new();
    for name in &names {
        if ssm.get_parameter().name(name).send().await.is_ok() {
            left.push(name.clone());
        }
    }
    assert_eq!(
        left,
        [
            format!("{PREFIX}/i-launching"),
            format!("{PREFIX}/nested/i-gone"),
            "/elsewhere/i-gone".to_string()
        ]
    );
    // Deleting one that is gone already (its instance took it) is not an error.
    assert_eq!(w.hook.delete("i-gone").await, Ok(()));
}
