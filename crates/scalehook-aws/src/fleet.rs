//! The Auto Scaling Group fleet: one ASG per pool (`aws_asg = "<group name>"`).
//!
//! - capacity and instances: `DescribeAutoScalingGroups`;
//! - scale out (and cancelling launches that have no instance yet): `SetDesiredCapacity`;
//! - scale in: `TerminateInstanceInAutoScalingGroup` with `ShouldDecrementDesiredCapacity`
//!   on the idle instance the policy chose, so the group never picks a busy one itself;
//! - replacing an instance (an ephemeral runner's, when the pool is at target):
//!   `TerminateInstanceInAutoScalingGroup` without the decrement, so the group launches anew;
//! - busy instances: instance scale-in protection (`SetInstanceProtection`);
//! - failed launches (issue 23), for a spot pool with an `overflow` only:
//!   `DescribeScalingActivities` (the 10 newest, sent together with the describe, so one
//!   more call per describe and no more time): the newest launch activity `Failed` or
//!   `Cancelled` with a status message about capacity (insufficient capacity, no Spot
//!   capacity) sets `FleetState::launch_failure`; the group keeps retrying the launch
//!   itself, and a launch that succeeds is the newest activity again.
//! - a pool with `warm_pool > 0`: its warm instances, `DescribeWarmPool` (lifecycle states
//!   `Warmed:*`), reported apart as [`FleetState::warm`], never as capacity.
//!
//! Only groups that count capacity in instances are accepted: `DesiredCapacityType`
//! `units` (the default) and no instance weighted other than 1. Any other group is refused
//! on its first describe (`FleetError::Rejected`, naming the group and the fix).
//!
//! Runner naming convention: a runner's name contains its EC2 instance id
//! (`gh-runner-i-0abc123def4567890`, or `i-0abc123def4567890-2` with several runners per
//! instance), so the instance id is the runner key. No EC2 API is needed.

use async_trait::async_trait;
use aws_sdk_autoscaling::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_autoscaling::types::{
    Activity, AutoScalingGroup, Instance as AsgInstance, ScalingActivityStatusCode,
};
use aws_sdk_autoscaling::Client;
use scalehook_core::{Capacity, FleetError, FleetState, FleetTarget, Instance, PoolConfig};

/// At most this many `DescribeWarmPool` pages per describe.
const MAX_WARM_POOL_PAGES: usize = 10;

/// `SetInstanceProtection` takes at most 50 instance ids per call.
const PROTECTION_BATCH: usize = 50;
/// Scaling activities read per describe of a spot pool with an overflow (newest first).
const ACTIVITIES: i32 = 10;

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

    /// The group's instances waiting in its warm pool, all pages (`DescribeWarmPool`).
    async fn warm(&self, name: &str) -> Result<u32, FleetError> {
        let mut warm = 0;
        let mut token = None;
        // Bounded: a warm pool's size is at most the group's max (100 a page).
        for _ in 0..MAX_WARM_POOL_PAGES {
            let out = self
                .client
                .describe_warm_pool()
                .auto_scaling_group_name(name)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| fleet_error("DescribeWarmPool", name, e))?;
            warm += warm_instances(out.instances());
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(warm)
    }

    async fn terminate(
        &self,
        pool: &PoolConfig,
        instance_id: &str,
        decrement: bool,
    ) -> Result<(), FleetError> {
        let name = group(pool)?;
        self.client
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            .should_decrement_desired_capacity(decrement)
            .send()
            .await
            .map_err(|e| fleet_error("TerminateInstanceInAutoScalingGroup", name, e))?;
        Ok(())
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

/// Where an instance is, by its documented `LifecycleState`: launching (`Pending`,
/// `Pending:Wait`, `Pending:Proceed`), live (`InService`), or not part of the pool's capacity
/// (`Standby` and `EnteringStandby`: taken out of service by an operator; `Terminating*`,
/// `Terminated`, `Detaching`, `Detached`: on their way out; `Warmed:*`: in the warm pool;
/// `Quarantined` and any state AWS adds later). `None`: leave it out.
fn lifecycle(state: &str) -> Option<bool> {
    match state {
        "Pending" | "Pending:Wait" | "Pending:Proceed" => Some(true),
        "InService" => Some(false),
        _ => None,
    }
}

/// How many of a warm pool's instances are warm: lifecycle states `Warmed:Pending*`,
/// `Warmed:Stopped`, `Warmed:Running`, `Warmed:Hibernated` (Auto Scaling user guide, "Warm
/// pool instance lifecycle states"); one on its way out (`Warmed:Terminating*`,
/// `Warmed:Terminated`) is not.
fn warm_instances(instances: &[AsgInstance]) -> u32 {
    instances
        .iter()
        .filter(|i| {
            let state = i.lifecycle_state().map(|s| s.as_str()).unwrap_or("");
            state.starts_with("Warmed:") && !state.starts_with("Warmed:Terminat")
        })
        .count() as u32
}

/// The instances of a group that can run (or are about to run) a runner.
fn live_instances(g: &AutoScalingGroup) -> Vec<Instance> {
    g.instances()
        .iter()
        .filter_map(|i| {
            let id = i.instance_id()?;
            let launching = lifecycle(i.lifecycle_state().map(|s| s.as_str()).unwrap_or(""))?;
            Some(Instance {
                id: id.to_string(),
                runner_key: id.to_string(),
                launching,
                protected: i.protected_from_scale_in().unwrap_or(false),
                // DescribeAutoScalingGroups does not report launch times.
                launched_at: None,
            })
        })
        .collect()
}

/// scalehook counts capacity in instances: one desired unit is one instance. A group that
/// counts vCPUs or memory (`DesiredCapacityType`), or weights instance types
/// (`WeightedCapacity` other than 1), would turn every decision into the wrong number of
/// instances, so it is refused, naming the group and the fix.
fn check_units(name: &str, g: &AutoScalingGroup) -> Result<(), FleetError> {
    if let Some(kind) = g.desired_capacity_type().filter(|k| *k != "units") {
        return Err(FleetError::Rejected(format!(
            "Auto Scaling group {name} counts capacity in {kind} (DesiredCapacityType): scalehook \
             counts instances; set DesiredCapacityType to \"units\" and give every instance type \
             a weight of 1"
        )));
    }
    if let Some(i) = g
        .instances()
        .iter()
        .find(|i| i.weighted_capacity().is_some_and(|w| w.trim() != "1"))
    {
        return Err(FleetError::Rejected(format!(
            "Auto Scaling group {name}: instance {} has WeightedCapacity {}: scalehook counts \
             instances; remove the WeightedCapacity of the mixed instances policy's overrides \
             (or set it to 1)",
            i.instance_id().unwrap_or("?"),
            i.weighted_capacity().unwrap_or("?")
        )));
    }
    Ok(())
}

/// Whether the group's launches fail for lack of capacity, from its scaling activities:
/// the newest launch activity (`Launching a new EC2 instance...`, by start time) `Failed`
/// or `Cancelled` with a status message about capacity ("We currently do not have
/// sufficient ... capacity", `InsufficientInstanceCapacity`, "no Spot capacity
/// available"). The answer is a fixed reason, never the message (logs stay short). A
/// failure of another kind (a launch template, a quota) is not a lack of capacity that an
/// on-demand pool could cover by itself, and a launch that succeeded since ends it.
pub fn launch_failure(activities: &[Activity]) -> Option<&'static str> {
    let newest = activities
        .iter()
        .filter(|a| {
            a.description()
                .is_some_and(|d| d.starts_with("Launching a new EC2 instance"))
        })
        .max_by_key(|a| a.start_time().map(|t| (t.secs(), t.subsec_nanos())))?;
    if !matches!(
        newest.status_code(),
        Some(ScalingActivityStatusCode::Failed | ScalingActivityStatusCode::Cancelled)
    ) {
        return None;
    }
    let text = format!(
        "{} {}",
        newest.status_message().unwrap_or(""),
        newest.description().unwrap_or("")
    )
    .to_ascii_lowercase();
    if text.contains("spot") && text.contains("capacity") {
        Some("no Spot capacity")
    } else if text.contains("insufficientinstancecapacity")
        || (text.contains("sufficient") && text.contains("capacity"))
    {
        Some("insufficient instance capacity")
    } else {
        None
    }
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
        // Only a spot pool with somewhere to spill reads its activities (one call, beside
        // the describe).
        let spills = pool.capacity == Capacity::Spot && pool.overflow.is_some();
        let (out, activities) = tokio::join!(
            self.client
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(name)
                .send(),
            async {
                match spills {
                    true => Some(
                        self.client
                            .describe_scaling_activities()
                            .auto_scaling_group_name(name)
                            .max_records(ACTIVITIES)
                            .send()
                            .await,
                    ),
                    false => None,
                }
            }
        );
        let out = out.map_err(|e| fleet_error("DescribeAutoScalingGroups", name, e))?;
        let launch_failure = match activities {
            Some(read) => {
                let read = read.map_err(|e| fleet_error("DescribeScalingActivities", name, e))?;
                launch_failure(read.activities()).map(str::to_string)
            }
            None => None,
        };
        let g = out
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(name))
            .ok_or_else(|| FleetError::NotFound(format!("Auto Scaling group {name}")))?;
        check_units(name, g)?;
        // One more call only for a pool configured with a warm pool.
        let warm = match pool.warm_pool {
            0 => 0,
            _ => self.warm(name).await?,
        };
        Ok(FleetState {
            desired: non_negative(g.desired_capacity()).unwrap_or(0),
            min: non_negative(g.min_size()),
            max: non_negative(g.max_size()),
            instances: live_instances(g),
            supports_protection: true,
            launch_failure,
            warm,
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
        // Without the decrement the group would launch a replacement.
        self.terminate(pool, instance_id, true).await
    }

    async fn replace_instance(
        &self,
        pool: &PoolConfig,
        instance_id: &str,
    ) -> Result<(), FleetError> {
        // The desired capacity stays, so the group launches a fresh instance in its place.
        self.terminate(pool, instance_id, false).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_autoscaling::types::{Instance as AsgInstance, LifecycleState};

    fn instance(id: &str, state: &str, weight: Option<&str>) -> AsgInstance {
        AsgInstance::builder()
            .instance_id(id)
            .lifecycle_state(LifecycleState::from(state))
            .availability_zone("us-east-1a")
            .health_status("Healthy")
            .protected_from_scale_in(false)
            .set_weighted_capacity(weight.map(str::to_string))
            .build()
    }

    /// The warm pool's instances as the SDK types them (moto's DescribeWarmPool lists none,
    /// so the mapping is checked here): warm states count, instances on their way out and
    /// the group's own states do not, and none of them is capacity.
    #[test]
    fn warm_pool_instances_are_counted_apart() {
        let warm = [
            "Warmed:Pending",
            "Warmed:Pending:Wait",
            "Warmed:Pending:Proceed",
            "Warmed:Stopped",
            "Warmed:Running",
            "Warmed:Hibernated",
        ];
        let gone = [
            "Warmed:Terminating",
            "Warmed:Terminating:Wait",
            "Warmed:Terminated",
            "InService",
        ];
        let instances: Vec<AsgInstance> = warm
            .iter()
            .chain(gone.iter())
            .enumerate()
            .map(|(n, s)| instance(&format!("i-{n}"), s, None))
            .collect();
        assert_eq!(warm_instances(&instances), warm.len() as u32);
        let warm_only: Vec<AsgInstance> = instances[..warm.len()].to_vec();
        assert!(
            live_instances(&group_of(warm_only, None)).is_empty(),
            "a warm instance is never capacity"
        );
    }

    fn group_of(instances: Vec<AsgInstance>, kind: Option<&str>) -> AutoScalingGroup {
        AutoScalingGroup::builder()
            .auto_scaling_group_name("runners")
            .min_size(0)
            .max_size(10)
            .desired_capacity(instances.len() as i32)
            .default_cooldown(0)
            .availability_zones("us-east-1a")
            .health_check_type("EC2")
            .created_time(aws_sdk_autoscaling::primitives::DateTime::from_secs(0))
            .set_desired_capacity_type(kind.map(str::to_string))
            .set_instances(Some(instances))
            .build()
    }

    #[test]
    fn only_launching_and_in_service_instances_are_live() {
        let states = [
            ("Pending", Some(true)),
            ("Pending:Wait", Some(true)),
            ("Pending:Proceed", Some(true)),
            ("InService", Some(false)),
            ("Standby", None),
            ("EnteringStandby", None),
            ("Terminating", None),
            ("Terminating:Wait", None),
            ("Terminating:Proceed", None),
            ("Terminated", None),
            ("Detaching", None),
            ("Detached", None),
            ("Quarantined", None),
            ("Warmed:Pending", None),
            ("Warmed:Pending:Wait", None),
            ("Warmed:Running", None),
            ("Warmed:Stopped", None),
            ("Warmed:Hibernated", None),
            ("Warmed:Terminating", None),
        ];
        let g = group_of(
            states
                .iter()
                .enumerate()
                .map(|(k, (s, _))| instance(&format!("i-{k}"), s, None))
                .collect(),
            None,
        );
        let live = live_instances(&g);
        let want: Vec<(String, bool)> = states
            .iter()
            .enumerate()
            .filter_map(|(k, (_, l))| l.map(|l| (format!("i-{k}"), l)))
            .collect();
        let got: Vec<(String, bool)> = live.iter().map(|i| (i.id.clone(), i.launching)).collect();
        assert_eq!(got, want);
    }

    fn activity(description: &str, status: &str, message: &str, at: i64) -> Activity {
        Activity::builder()
            .activity_id(format!("a-{at}"))
            .auto_scaling_group_name("runners")
            .cause("At 2026-12-08T00:00:00Z an instance was started in response to a difference between desired and actual capacity")
            .description(description)
            .start_time(aws_sdk_autoscaling::primitives::DateTime::from_secs(at))
            .status_code(ScalingActivityStatusCode::from(status))
            .status_message(message)
            .build()
    }

    const LAUNCH: &str = "Launching a new EC2 instance.  Status Reason: see the status message";
    const NO_CAPACITY: &str = "We currently do not have sufficient m7g.large capacity in the Availability Zone you requested (us-east-1a). Launching EC2 instance failed.";
    const NO_SPOT: &str = "There is no Spot capacity available that matches your request. Launching EC2 instance failed.";

    #[test]
    fn the_newest_launch_activity_says_whether_launches_fail() {
        assert_eq!(launch_failure(&[]), None, "moto answers no activities");
        let failed = activity(LAUNCH, "Failed", NO_CAPACITY, 20);
        assert_eq!(
            launch_failure(std::slice::from_ref(&failed)),
            Some("insufficient instance capacity")
        );
        assert_eq!(
            launch_failure(&[activity(LAUNCH, "Cancelled", NO_SPOT, 20)]),
            Some("no Spot capacity")
        );
        let code = "InsufficientInstanceCapacity: launching EC2 instance failed.";
        assert_eq!(
            launch_failure(&[activity(LAUNCH, "Failed", code, 20)]),
            Some("insufficient instance capacity")
        );
        // A newer launch succeeded: the group has capacity again (order of the list aside).
        let ok = activity("Launching a new EC2 instance: i-0abc", "Successful", "", 30);
        assert_eq!(launch_failure(&[failed.clone(), ok.clone()]), None);
        assert_eq!(launch_failure(&[ok, failed.clone()]), None);
        // A termination after the failed launch is not a launch: still failing.
        let gone = activity("Terminating EC2 instance: i-0abc", "Successful", "", 40);
        assert_eq!(
            launch_failure(&[gone, failed]),
            Some("insufficient instance capacity")
        );
        // A launch that failed for another reason is not a lack of capacity.
        let template =
            "The specified launch template does not exist. Launching EC2 instance failed.";
        assert_eq!(
            launch_failure(&[activity(LAUNCH, "Failed", template, 20)]),
            None
        );
        // Still launching: not failed (yet).
        assert_eq!(
            launch_failure(&[activity(LAUNCH, "PendingSpotBidPlacement", "", 20)]),
            None
        );
    }

    #[test]
    fn groups_not_counted_in_instances_are_refused_by_name() {
        let ok = group_of(vec![instance("i-1", "InService", Some("1"))], Some("units"));
        assert!(check_units("runners", &ok).is_ok());
        assert!(check_units("runners", &group_of(vec![], None)).is_ok());
        let vcpu = group_of(vec![], Some("vcpu"));
        let msg = check_units("runners", &vcpu).expect_err("vcpu").to_string();
        assert!(
            msg.contains("runners") && msg.contains("vcpu") && msg.contains("units"),
            "{msg}"
        );
        let weighted = group_of(vec![instance("i-9", "InService", Some("4"))], None);
        let msg = check_units("runners", &weighted)
            .expect_err("weights")
            .to_string();
        assert!(
            msg.contains("runners") && msg.contains("i-9") && msg.contains("WeightedCapacity"),
            "{msg}"
        );
    }
}
