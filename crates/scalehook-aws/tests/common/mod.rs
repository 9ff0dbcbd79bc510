//! Shared by the moto tests: a real moto server per test (killed on drop), SDK config
//! pointed at it, an Auto Scaling group and a DynamoDB table to work on, and signed
//! `workflow_job` deliveries.
#![allow(dead_code)]

use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use http::{HeaderMap, HeaderValue, Method};
use scalehook_aws::{AsgFleet, DynamoLedger};
use scalehook_core::{Answer, Clock, Config, LogFormat, Service, WebhookSecrets};
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET: &str = "moto-test-webhook-secret";
pub const REGION: &str = "us-east-1";
pub const LABELS: &[&str] = &["self-hosted", "linux", "x64"];

/// The Python that has moto: `SCALEHOOK_MOTO_PYTHON`, else the venv `make test-deps`
/// creates under `.tools/` at the workspace root.
pub fn moto_python() -> PathBuf {
    if let Some(p) = std::env::var_os("SCALEHOOK_MOTO_PYTHON") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/moto-venv/bin/python")
}

/// moto's server, one request at a time (see `tests/moto_server.py` for why).
fn moto_launcher() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/moto_server.py")
}

/// A moto server on a free loopback port, stopped when dropped.
pub struct Moto {
    child: Option<Child>,
    /// moto exits when this closes (with the test process, whatever way it ends).
    _stdin: Option<std::process::ChildStdin>,
    pub endpoint: String,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        let exe = moto_python();
        let hint = "run `make test-deps` to install moto into .tools/moto-venv, or set SCALEHOOK_MOTO_PYTHON to a Python that has moto[server]";
        assert!(
            exe.exists(),
            "no Python with moto at {}: {hint}",
            exe.display()
        );
        // A port picked by the OS can be taken again before moto binds it: retry.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free loopback port");
            let mut child = Command::new(&exe)
                .arg(moto_launcher())
                .args(["127.0.0.1", &port.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    // moto missing from that Python exits at once (code 1, ImportError);
                    // a taken port exits too, and the next attempt takes another.
                    assert!(
                        status.code() != Some(1) || TcpStream::connect(("127.0.0.1", port)).is_ok(),
                        "moto did not start with {} ({status}): {hint}",
                        exe.display()
                    );
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Moto {
                        _stdin: child.stdin.take(),
                        child: Some(child),
                        endpoint: format!("http://127.0.0.1:{port}"),
                        port,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto did not start listening (tried 5 ports)");
    }

    /// Stops the server now (fault tests).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SDK config for moto: scalehook's retries and timeouts, the endpoint, dummy credentials.
pub async fn sdk(endpoint: &str) -> SdkConfig {
    scalehook_aws::sdk::loader()
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await
}

/// Fixture calls (creating groups and tables, reading state back) get long timeouts:
/// moto loads a service's backend on its first request, which can take seconds.
fn fixture_timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(Duration::from_secs(120))
        .operation_attempt_timeout(Duration::from_secs(120))
        .build()
}

pub fn asg_client(sdk: &SdkConfig) -> aws_sdk_autoscaling::Client {
    aws_sdk_autoscaling::Client::from_conf(
        aws_sdk_autoscaling::config::Builder::from(sdk)
            .timeout_config(fixture_timeouts())
            .build(),
    )
}

pub fn ddb_client(sdk: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk)
            .timeout_config(fixture_timeouts())
            .build(),
    )
}

pub fn ssm_client(sdk: &SdkConfig) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::config::Builder::from(sdk)
            .timeout_config(fixture_timeouts())
            .build(),
    )
}

pub fn secretsmanager_client(sdk: &SdkConfig) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(sdk)
            .timeout_config(fixture_timeouts())
            .build(),
    )
}

/// Creates a launch configuration and a group (moto launches its instances at once).
pub async fn create_asg(sdk: &SdkConfig, name: &str, min: i32, max: i32, desired: i32) {
    let asg = asg_client(sdk);
    let lc = format!("{name}-lc");
    asg.create_launch_configuration()
        .launch_configuration_name(&lc)
        .image_id("ami-12c6146b")
        .instance_type("t3.micro")
        .send()
        .await
        .expect("CreateLaunchConfiguration");
    asg.create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_configuration_name(&lc)
        .min_size(min)
        .max_size(max)
        .desired_capacity(desired)
        .availability_zones(format!("{REGION}a"))
        .send()
        .await
        .expect("CreateAutoScalingGroup");
}

/// The table as `infra/aws` creates it: `pk` (S) and `sk` (S), on-demand, TTL on
/// `expires_at`, and the sparse `due` index (`due` (S), `updated_at` (N), all attributes).
pub async fn create_table(sdk: &SdkConfig, name: &str) {
    let ddb = ddb_client(sdk);
    let attr = |name: &str, kind: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .expect("attribute")
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key")
    };
    ddb.create_table()
        .table_name(name)
        .attribute_definitions(attr("pk", ScalarAttributeType::S))
        .attribute_definitions(attr("sk", ScalarAttributeType::S))
        .attribute_definitions(attr("due", ScalarAttributeType::S))
        .attribute_definitions(attr("updated_at", ScalarAttributeType::N))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(scalehook_aws::ledger::DUE_INDEX)
                .key_schema(key("due", KeyType::Hash))
                .key_schema(key("updated_at", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .expect("index"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("CreateTable");
    ddb.update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()
                .expect("ttl"),
        )
        .send()
        .await
        .expect("UpdateTimeToLive");
}

/// A group's capacity as moto reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub desired: i32,
    /// (instance id, protected), live instances only.
    pub instances: Vec<(String, bool)>,
}

pub async fn group(sdk: &SdkConfig, name: &str) -> Group {
    let out = asg_client(sdk)
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .expect("DescribeAutoScalingGroups");
    let g = out.auto_scaling_groups().first().expect("the group exists");
    Group {
        desired: g.desired_capacity().unwrap_or(-1),
        instances: g
            .instances()
            .iter()
            .filter(|i| {
                !i.lifecycle_state()
                    .is_some_and(|s| s.as_str().starts_with("Terminat"))
            })
            .map(|i| {
                (
                    i.instance_id().unwrap_or_default().to_string(),
                    i.protected_from_scale_in().unwrap_or(false),
                )
            })
            .collect(),
    }
}

/// One pool on `asg`, with the given bounds and standby.
pub fn config(asg: &str, min: u32, max: u32, standby: u32) -> Config {
    Config::from_toml(&format!(
        "[[pools]]\nname = \"linux\"\nlabels = [\"self-hosted\", \"linux\", \"x64\"]\n\
         min = {min}\nmax = {max}\nstandby = {standby}\naws_asg = \"{asg}\"\n"
    ))
    .expect("valid config")
}

/// A clock the tests move by hand (unix seconds).
#[derive(Debug)]
pub struct TestClock(pub AtomicU64);

impl TestClock {
    pub fn new() -> Arc<TestClock> {
        Arc::new(TestClock(AtomicU64::new(1_800_000_000)))
    }
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The real service over the DynamoDB ledger and the ASG fleet.
pub fn service(sdk: &SdkConfig, table: &str, config: Config, clock: Arc<TestClock>) -> Service {
    let ledger = DynamoLedger::from_sdk(sdk, table, config.ledger);
    Service::new(
        config,
        WebhookSecrets::new([SECRET]).expect("secret"),
        Arc::new(ledger),
        Arc::new(AsgFleet::from_sdk(sdk)),
    )
    .with_clock(clock)
    .with_log(LogFormat::Off)
}

/// A `workflow_job` body.
pub fn job_body(action: &str, job_id: u64, runner: Option<&str>) -> Vec<u8> {
    serde_json::json!({
        "action": action,
        "workflow_job": {
            "id": job_id,
            "run_id": 9000 + job_id,
            "run_attempt": 1,
            "name": "build",
            "status": action,
            "labels": LABELS,
            "runner_id": runner.map(|_| 7),
            "runner_name": runner,
        },
        "repository": {"full_name": "octo-org/app", "owner": {"login": "octo-org"}},
    })
    .to_string()
    .into_bytes()
}

pub fn headers(body: &[u8], event: &str, delivery: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "x-github-event",
        HeaderValue::from_str(event).expect("event"),
    );
    h.insert(
        "x-github-delivery",
        HeaderValue::from_str(delivery).expect("delivery"),
    );
    h.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&scalehook_core::signature::sign(SECRET.as_bytes(), body))
            .expect("signature"),
    );
    h
}

/// Delivers one signed `workflow_job` event.
pub async fn deliver(service: &Service, action: &str, job_id: u64, runner: Option<&str>) -> Answer {
    let body = job_body(action, job_id, runner);
    let delivery = format!("{job_id}-{action}");
    service
        .handle(
            &Method::POST,
            &headers(&body, "workflow_job", &delivery),
            &body,
        )
        .await
}

pub fn json(answer: &Answer) -> serde_json::Value {
    serde_json::from_str(&answer.body).expect("answer body is JSON")
}

/// Counts every request (HTTP attempt) a DynamoDB client sends, by operation.
#[derive(Debug, Default, Clone)]
pub struct RequestCounter(Arc<Mutex<BTreeMap<String, u32>>>);

impl RequestCounter {
    /// The counts so far, reset to none.
    pub fn take(&self) -> BTreeMap<String, u32> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn total(&self) -> u32 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let op = cfg
            .load::<Metadata>()
            .map_or("?".to_string(), |m| m.name().to_string());
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(op)
            .or_default() += 1;
        Ok(())
    }
}

/// A DynamoDB client with scalehook's retries and timeouts whose requests `counter` counts.
pub fn counted_ddb_client(sdk: &SdkConfig, counter: &RequestCounter) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk)
            .interceptor(counter.clone())
            .build(),
    )
}
