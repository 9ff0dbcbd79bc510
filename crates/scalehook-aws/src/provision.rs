//! The Auto Scaling launch lifecycle hook: each new runner instance gets its own JIT runner.
//!
//! EventBridge delivers `"detail-type": "EC2 Instance-launch Lifecycle Action"` for the
//! runner groups (infra/aws/runners) to the same Lambda. The core decides and mints
//! ([`Service::provision`]); this module is the transport: the configuration goes into the SSM
//! SecureString `<prefix>/<instance id>`, tagged with the instance's ARN (the instance role
//! may read and delete only parameters carrying its own `ec2:SourceInstanceARN`), then the
//! lifecycle action is completed: CONTINUE, or ABANDON when provisioning failed (the group
//! then terminates the instance and launches another, which is the retry).
//!
//! With a warm pool the hook fires twice per instance (Auto Scaling user guide, "Warm pool
//! example events and patterns"): once as the instance launches into the warm pool
//! (`Destination: WarmPool`): it is CONTINUEd without a runner, since a warm instance is not
//! capacity and must hold nothing secret while it waits; and again when scale-out takes it
//! (`Origin: WarmPool`, `Destination: AutoScalingGroup`): that is when its runner is minted.

use async_trait::async_trait;
use aws_sdk_ssm::types::{ParameterStringFilter, ParameterType, Tag};
use scalehook_core::github::JitRunner;
use scalehook_core::housekeeping::{StoredConfig, UnreadConfigs};
use scalehook_core::provision::{Provisioned, RunnerConfigStore, StoreError};
use scalehook_core::{FleetTarget, Service};
use serde::Deserialize;
use serde_json::{json, Value};

/// The SSM path of the JIT parameters (infra/aws/runners' `jit_parameter_prefix`).
pub const JIT_PREFIX_ENV: &str = "SCALEHOOK_JIT_PARAMETER_PREFIX";
pub const DEFAULT_JIT_PREFIX: &str = "/scalehook/jit";
/// Optional customer managed KMS key for the parameters (default: alias/aws/ssm).
pub const JIT_KMS_KEY_ENV: &str = "SCALEHOOK_JIT_KMS_KEY_ID";
/// The tag naming the one instance allowed to read a parameter (see infra/aws/runners/iam.tf).
pub const INSTANCE_TAG_KEY: &str = "scalehook-instance-arn";
pub const LAUNCH_DETAIL_TYPE: &str = "EC2 Instance-launch Lifecycle Action";
const LAUNCHING: &str = "autoscaling:EC2_INSTANCE_LAUNCHING";

#[derive(Debug, Deserialize)]
struct LaunchEvent {
    account: String,
    region: String,
    /// When the lifecycle action began (RFC 3339): the instance's launch, or its start from
    /// the warm pool. Saved with the runner's id, so boot grace runs from it.
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    resources: Vec<String>,
    detail: LaunchDetail,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LaunchDetail {
    lifecycle_action_token: String,
    auto_scaling_group_name: String,
    lifecycle_hook_name: String,
    #[serde(rename = "EC2InstanceId")]
    ec2_instance_id: String,
    lifecycle_transition: String,
    /// `EC2`, `AutoScalingGroup` or `WarmPool`; absent on groups without a warm pool (older
    /// events): then the instance goes into service.
    #[serde(default)]
    destination: Option<String>,
}

/// The `Destination` of a launch into the warm pool.
const WARM_POOL: &str = "WarmPool";

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("malformed lifecycle event: {0}")]
    Malformed(String),
    #[error("CompleteLifecycleAction failed: {0}")]
    Complete(String),
}

/// The JIT parameters in SSM Parameter Store.
pub struct SsmConfigStore {
    client: aws_sdk_ssm::Client,
    prefix: String,
    kms_key_id: Option<String>,
    /// `arn:<partition>:ec2:<region>:<account>:instance/`
    instance_arn_prefix: String,
}

impl SsmConfigStore {
    pub fn parameter_name(&self, instance_id: &str) -> String {
        format!("{}/{instance_id}", self.prefix.trim_end_matches('/'))
    }
}

fn ssm_error(e: impl std::error::Error) -> StoreError {
    StoreError::Failed(aws_sdk_ssm::error::DisplayErrorContext(e).to_string())
}

#[async_trait]
impl RunnerConfigStore for SsmConfigStore {
    async fn exists(&self, instance_id: &str) -> Result<bool, StoreError> {
        // Metadata only: scalehook never reads a configuration back.
        let filter = ParameterStringFilter::builder()
            .key("Name")
            .option("Equals")
            .values(self.parameter_name(instance_id))
            .build()
            .map_err(ssm_error)?;
        let out = self
            .client
            .describe_parameters()
            .parameter_filters(filter)
            .send()
            .await
            .map_err(ssm_error)?;
        Ok(!out.parameters().is_empty())
    }

    async fn put(&self, instance_id: &str, runner: &JitRunner) -> Result<(), StoreError> {
        let tag = Tag::builder()
            .key(INSTANCE_TAG_KEY)
            .value(format!("{}{instance_id}", self.instance_arn_prefix))
            .build()
            .map_err(ssm_error)?;
        let mut put = self
            .client
            .put_parameter()
            .name(self.parameter_name(instance_id))
            .description(format!(
                "scalehook JIT runner {} (read once by its instance)",
                runner.name
            ))
            .value(&runner.encoded_jit_config)
            .r#type(ParameterType::SecureString)
            // Never overwrite: a stored configuration belongs to a runner already minted.
            .overwrite(false)
            .tags(tag);
        if let Some(key) = &self.kms_key_id {
            put = put.key_id(key);
        }
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_already_exists()) =>
            {
                Err(StoreError::AlreadyStored)
            }
            Err(e) => Err(ssm_error(e)),
        }
    }
}

/// Which CompleteLifecycleAction refusals mean the action was already completed (a
/// redelivered event), so nothing is left to do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// None: the delivery fails and is retried.
    Fails,
    /// Any: the runner is already stored, so an earlier delivery completed the action.
    Any,
    /// Auto Scaling's ValidationError ("no active lifecycle action"): a warm-pool entry
    /// has nothing stored to tell a redelivery by.
    NoActiveAction,
}

/// At most this many DescribeParameters pages (50 each) per housekeeping pass.
const MAX_PARAMETER_PAGES: usize = 20;

/// The JIT parameters under the prefix, for reconcile's housekeeping: metadata only
/// (`ssm:DescribeParameters`; values are never read back), deleted with
/// `ssm:DeleteParameter` on the JIT path.
#[async_trait]
impl UnreadConfigs for LaunchHook {
    async fn unread(&self) -> Result<Vec<StoredConfig>, String> {
        let under = format!("{}/", self.prefix.trim_end_matches('/'));
        let filter = ParameterStringFilter::builder()
            .key("Name")
            .option("BeginsWith")
            .values(&under)
            .build()
            .map_err(|e| ssm_error(e).to_string())?;
        let mut out = Vec::new();
        let mut token = None;
        for _ in 0..MAX_PARAMETER_PAGES {
            let page = self
                .ssm
                .describe_parameters()
                .parameter_filters(filter.clone())
                .max_results(50)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| ssm_error(e).to_string())?;
            for p in page.parameters() {
                let key = p.name().and_then(|n| n.strip_prefix(&under));
                // Only `<prefix>/<instance id>`: anything deeper is not scalehook's.
                if let Some(key) = key.filter(|k| !k.is_empty() && !k.contains('/')) {
                    out.push(StoredConfig {
                        instance_key: key.to_string(),
                        stored_at: p
                            .last_modified_date()
                            .map_or(0, |d| u64::try_from(d.secs()).unwrap_or(0)),
                    });
                }
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn delete(&self, instance_key: &str) -> Result<(), String> {
        let name = format!("{}/{instance_key}", self.prefix.trim_end_matches('/'));
        match self.ssm.delete_parameter().name(name).send().await {
            Ok(_) => Ok(()),
            // Its instance took it meanwhile.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                Ok(())
            }
            Err(e) => Err(ssm_error(e).to_string()),
        }
    }
}

/// What the Lambda needs to answer launch lifecycle events.
#[derive(Clone)]
pub struct LaunchHook {
    ssm: aws_sdk_ssm::Client,
    autoscaling: aws_sdk_autoscaling::Client,
    prefix: String,
    kms_key_id: Option<String>,
}

impl LaunchHook {
    pub fn new(
        ssm: aws_sdk_ssm::Client,
        autoscaling: aws_sdk_autoscaling::Client,
        prefix: impl Into<String>,
        kms_key_id: Option<String>,
    ) -> Self {
        Self {
            ssm,
            autoscaling,
            prefix: prefix.into(),
            kms_key_id,
        }
    }

    /// From the shared SDK configuration and the environment ([`JIT_PREFIX_ENV`],
    /// [`JIT_KMS_KEY_ENV`]). Builds clients only; no AWS call.
    pub fn from_sdk(sdk: &aws_config::SdkConfig) -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self::new(
            aws_sdk_ssm::Client::new(sdk),
            aws_sdk_autoscaling::Client::new(sdk),
            env(JIT_PREFIX_ENV).unwrap_or_else(|| DEFAULT_JIT_PREFIX.into()),
            env(JIT_KMS_KEY_ENV),
        )
    }

    /// Handles one launch lifecycle event: provision, then complete the action.
    pub async fn handle(&self, service: &Service, event: Value) -> Result<Value, LaunchError> {
        let event: LaunchEvent =
            serde_json::from_value(event).map_err(|e| LaunchError::Malformed(e.to_string()))?;
        let d = &event.detail;
        if d.lifecycle_transition != LAUNCHING {
            return Err(LaunchError::Malformed(format!(
                "lifecycle transition {:?}, expected {LAUNCHING}",
                d.lifecycle_transition.chars().take(64).collect::<String>()
            )));
        }
        let partition = event
            .resources
            .first()
            .and_then(|arn| arn.split(':').nth(1))
            .filter(|p| !p.is_empty())
            .unwrap_or("aws");
        let store = SsmConfigStore {
            client: self.ssm.clone(),
            prefix: self.prefix.clone(),
            kms_key_id: self.kms_key_id.clone(),
            instance_arn_prefix: format!(
                "arn:{partition}:ec2:{}:{}:instance/",
                event.region, event.account
            ),
        };
        let fleet = FleetTarget::AwsAsg(d.auto_scaling_group_name.clone());
        if d.destination.as_deref() == Some(WARM_POOL) {
            // Warming: the boot script installs the runner and waits; no runner yet.
            let answer =
                json!({"status": "warming", "instance": d.ec2_instance_id, "result": "CONTINUE"});
            return self
                .complete(d, "CONTINUE", answer, Refusal::NoActiveAction)
                .await;
        }
        let launched_at = event
            .time
            .as_deref()
            .and_then(scalehook_core::clock::parse_rfc3339);
        let outcome = service
            .provision(&fleet, &d.ec2_instance_id, &store, launched_at)
            .await;
        let (result, mut answer) = match &outcome {
            Ok(Provisioned::Stored {
                pool,
                runner_id,
                name,
            }) => (
                "CONTINUE",
                json!({"status": "provisioned", "pool": pool, "runner": name, "runner_id": runner_id}),
            ),
            Ok(Provisioned::AlreadyStored { pool }) => (
                "CONTINUE",
                json!({"status": "already_provisioned", "pool": pool}),
            ),
            Err(e) => {
                tracing::error!(group = %d.auto_scaling_group_name, instance = %d.ec2_instance_id, error = %e, "provisioning failed: abandoning the launch");
                (
                    "ABANDON",
                    json!({"status": "abandoned", "reason": e.to_string()}),
                )
            }
        };
        answer["instance"] = d.ec2_instance_id.clone().into();
        answer["result"] = result.into();
        let refusal = match outcome {
            Ok(Provisioned::AlreadyStored { .. }) => Refusal::Any,
            _ => Refusal::Fails,
        };
        self.complete(d, result, answer, refusal).await
    }

    /// CompleteLifecycleAction; `refusal` says which refusals mean "already completed".
    async fn complete(
        &self,
        d: &LaunchDetail,
        result: &str,
        answer: Value,
        refusal: Refusal,
    ) -> Result<Value, LaunchError> {
        let completed = self
            .autoscaling
            .complete_lifecycle_action()
            .auto_scaling_group_name(&d.auto_scaling_group_name)
            .lifecycle_hook_name(&d.lifecycle_hook_name)
            .lifecycle_action_token(&d.lifecycle_action_token)
            .instance_id(&d.ec2_instance_id)
            .lifecycle_action_result(result)
            .send()
            .await;
        match completed {
            Ok(_) => Ok(answer),
            Err(e)
                if refusal == Refusal::Any
                    || (refusal == Refusal::NoActiveAction
                        && e.as_service_error().and_then(|s| s.meta().code())
                            == Some("ValidationError")) =>
            {
                tracing::info!(instance = %d.ec2_instance_id, error = %aws_sdk_autoscaling::error::DisplayErrorContext(&e), "lifecycle action already completed");
                Ok(answer)
            }
            Err(e) => Err(LaunchError::Complete(
                aws_sdk_autoscaling::error::DisplayErrorContext(&e).to_string(),
            )),
        }
    }
}
