//! The Auto Scaling Group fleet: one ASG per pool (`aws_asg = "<group name>"`).
//!
//! - capacity and instances: `DescribeAutoScalingGroups`;
//! - scale out (and cancelling launches that have no instance yet): `SetDesiredCapacity`;
//! - scale in: `TerminateInstanceInAutoScalingGroup` with `ShouldDecrementDesiredCapacity`
//!   on the idle instance the policy chose, so the group never picks a busy one itself;
//! - busy instances: instance scale-in protection (`SetInstanceProtection`).
//!
//! Runner naming convention: a runner's name contains its EC2 instance id
//! (`gh-runner-i-0abc123def4567890`, or `i-0abc123def4567890-2` with several runners per
//! instance), so the instance id is the runner key. No EC2 API is needed.

use async_trait::async_trait;
use aws_sdk_autoscaling::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_autoscaling::types::AutoScalingGroup;
use aws_sdk_autoscaling::Client;
use scalehook_core::{FleetError, FleetState, FleetTarget, Instance, PoolConfig};

/// `SetInstanceProtection` takes at most 50 instance ids per call.
const PROTECTION_BATCH: usize = 50;

/// The ASG fleet. Holds only the client: the pool's group comes with every call.
#[derive(Debug, Clone)]
pub struct AsgFleet {
    client: Client,
}

impl AsgFleet {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig) -> Self {
        Self::new(Client::new(sdk))
    }
}

/// The ASG name of a pool; any other fleet target is a configuration error here (the
/// Lambda refuses to start with such a pool, so this is defence in depth).
fn group(pool: &PoolConfig) -> Result<&str, FleetError> {
    match &pool.fleet {
        FleetTarget::AwsAsg(name) => Ok(name),
        other => Err(FleetError::NotFound(format!(
            "pool {} has a {} fleet, not an AWS Auto Scaling group",
            pool.name,
            other.kind()
        ))),
    }
}

/// Maps an SDK failure to the core's kinds: a missing group is `NotFound`, a refused
/// request `Rejected`, anything transient (throttling after the SDK's retries, contention,
/// timeouts, no connection) `Unavailable`. All three make the delivery a 5xx.
fn fleet_error<E>(call: &str, group: &str, err: SdkError<E>) -> FleetError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::ServiceError(ref service) = err {
        let e = service.err();
        let code = e.code().unwrap_or("Unknown");
        let text = format!(
            "{call} on {group}: {code}: {}",
            e.message().unwrap_or("no message")
        );
        return match code {
            "ValidationError" if text.contains("not found") => FleetError::NotFound(text),
            "ValidationError"
            | "AccessDenied"
            | "AccessDeniedException"
            | "UnauthorizedOperation"
            | "InvalidClientTokenId"
            | "UnrecognizedClientException" => FleetError::Rejected(text),
            _ => FleetError::Unavailable(text),
        };
    }
    FleetError::Unavailable(format!("{call} on {group}: {}", DisplayErrorContext(&err)))
}

/// The instances of a group that can run (or are about to run) a runner.
fn live_instances(g: &AutoScalingGroup) -> Vec<Instance> {
    g.instances()
        .iter()
        .filter_map(|i| {
            let id = i.instance_id()?;
            let state = i.lifecycle_state().map(|s| s.as_str()).unwrap_or("");
            let launching = state.starts_with("Pending");
            // Terminating, detaching and warm-pool instances are on their way out (or not in
            // the group's capacity); standby ones stay: a runner may still be on them.
            let live = launching || matches!(state, "InService" | "EnteringStandby" | "Standby");
            live.then(|| Instance {
                id: id.to_string(),
                runner_key: id.to_string(),
                launching,
                protected: i.protected_from_scale_in().unwrap_or(false),
                launched_at: None,
            })
        })
        .collect()
}

fn non_negative(v: Option<i32>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

fn as_i32(desired: u32, group: &str) -> Result<i32, FleetError> {
    i32::try_from(desired).map_err(|_| {
        FleetError::Rejected(format!(
            "desired capacity {desired} for {group} is out of range"
        ))
    })
}

#[async_trait]
impl scalehook_core::Fleet for AsgFleet {
    async fn describe(&self, pool: &PoolConfig) -> Result<FleetState, FleetError> {
        let name = group(pool)?;
        let out = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| fleet_error("DescribeAutoScalingGroups", name, e))?;
        let g = out
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(name))
            .ok_or_else(|| FleetError::NotFound(format!("Auto Scaling group {name}")))?;
        Ok(FleetState {
            desired: non_negative(g.desired_capacity()).unwrap_or(0),
            min: non_negative(g.min_size()),
            max: non_negative(g.max_size()),
            instances: live_instances(g),
            supports_protection: true,
        })
    }

    async fn set_desired(&self, pool: &PoolConfig, desired: u32) -> Result<(), FleetError> {
        let name = group(pool)?;
        self.client
            .set_desired_capacity()
            .auto_scaling_group_name(name)
            .desired_capacity(as_i32(desired, name)?)
            // Cooldowns are for the group's own scaling policies; scalehook's decisions are
            // idempotent and must take effect when made.
            .honor_cooldown(false)
            .send()
            .await
            .map_err(|e| fleet_error("SetDesiredCapacity", name, e))?;
        Ok(())
    }

    async fn remove_instance(
        &self,
        pool: &PoolConfig,
        instance_id: &str,
    ) -> Result<(), FleetError> {
        let name = group(pool)?;
        self.client
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            // Without the decrement the group would launch a replacement.
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .map_err(|e| fleet_error("TerminateInstanceInAutoScalingGroup", name, e))?;
        Ok(())
    }

    async fn set_protection(
        &self,
        pool: &PoolConfig,
        instance_ids: &[String],
        protected: bool,
    ) -> Result<(), FleetError> {
        let name = group(pool)?;
        for batch in instance_ids.chunks(PROTECTION_BATCH) {
            self.client
                .set_instance_protection()
                .auto_scaling_group_name(name)
                .set_instance_ids(Some(batch.to_vec()))
                .protected_from_scale_in(protected)
                .send()
                .await
                .map_err(|e| fleet_error("SetInstanceProtection", name, e))?;
        }
        Ok(())
    }
}
