//! The VM Scale Set fleet over ARM REST (Uniform orchestration).
//!
//! - describe: `GET {vmss}` (`sku.capacity`, `properties.orchestrationMode`,
//!   `properties.overprovision`) and `GET {vmss}/virtualMachines` (paged by `nextLink`) for
//!   the instances (learn.microsoft.com/rest/api/compute/virtual-machine-scale-sets/get,
//!   …/virtual-machine-scale-set-vms/list); a scale set that overprovisions is refused;
//! - scale out: `PATCH {vmss}` with `{"sku":{"capacity":n}}`
//!   (…/virtual-machine-scale-sets/update);
//! - scale in: `POST {vmss}/delete` with `{"instanceIds":["<id>"]}`, which deletes exactly
//!   the chosen idle instance and lowers the capacity with it
//!   (…/virtual-machine-scale-sets/delete-instances). Capacity is never lowered by PATCH:
//!   that lets Azure choose the VMs (balance zones, then fault domains, then the highest
//!   instance id), which can be a running one. `set_desired` below the capacity deletes the
//!   VMs that serve no runner instead (broken ones left in place, then launching ones).
//! - operations: writes are never waited for. The accepted operation is remembered and read
//!   by a later describe once its `Retry-After` has passed (a few per describe); a failed one
//!   is logged and counted, and its VMs show as `Failed` in the list.
//! - broken VMs: the list is read with `$expand=instanceView`; a VM whose provisioning
//!   state is `Failed`, or whose power state is deallocated/deallocating/stopped/stopping
//!   (a Spot eviction deallocates), is not live capacity. describe leaves it out and
//!   replaces it: `POST {vmss}/delete` for those instances (which lowers the capacity), then
//!   `PATCH` the capacity back, so the scale set creates fresh VMs in their place;
//! - launch failures (a Spot scale set without capacity, issue 23): a VM Compute could not
//!   allocate ends `Failed` with `ProvisioningState/failed/<code>` in its instance view
//!   (`SkuNotAvailable`, `AllocationFailed`, `ZonalAllocationFailed`,
//!   `OverconstrainedAllocationRequest`, `OverconstrainedZonalAllocationRequest`). Azure
//!   does not retry a failed VM, so it is replaced like any broken VM (the replacement is
//!   the retry), and `FleetState::launch_failure` names the code from that list until a
//!   list shows no failed allocation and nothing still creating. Read from the same list
//!   describe reads anyway: no extra call;
//! - `replace_instance` (an ephemeral runner's VM) is the same delete-then-restore;
//! - `launched_at` comes from the VM's `properties.timeCreated` (api-version 2021-11-01+);
//! - throttling: see [`crate::throttle`]; when a Compute policy runs low, describe reuses the
//!   VM list it read within the last [`LIST_REUSE`], leaves broken VMs and operations for a
//!   later pass, and near the limit every request is spaced out. Writes in one pass (remove,
//!   replace, lower) reuse what the pass's describe read instead of reading it again.
//!
//! A runner maps to its VM by the documented naming convention: the runner name contains
//! the VM's computer name (`properties.osProfile.computerName`, e.g. `runnervmss000003`),
//! which is the instance's `runner_key`.
//!
//! Instance protection is not used (`supports_protection: false`): on Azure it guards only
//! against Azure Autoscale and scale-set actions, never against an explicit delete, and
//! scalehook only ever deletes instances it chose as idle. Flexible orchestration has no
//! VMSS-VM API and is refused with a clear error (see docs/azure.md).

use crate::arm::{ArmClient, ArmResponse, Operation, Settled};
use async_trait::async_trait;
use reqwest::{Method, Url};
use scalehook_core::trace::parse_rfc3339;
use scalehook_core::{Fleet, FleetError, FleetState, FleetTarget, Instance, PoolConfig};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Upper bound on `nextLink` pages followed in one describe (a scale set has at most 1000
/// instances, 1000 per page is far above that).
const MAX_PAGES: usize = 50;
/// How old a VM list may be and still be reused when the throttling budget is low.
pub const LIST_REUSE: Duration = Duration::from_secs(30);
/// How old the capacity a describe read may be and still serve a write in the same pass.
const PASS_REUSE: Duration = Duration::from_secs(10);
/// Accepted operations remembered per scale set (the newest are kept).
const MAX_OPERATIONS: usize = 16;
/// Operations read per describe (each read is one ARM GET).
const SETTLE_PER_DESCRIBE: usize = 4;
/// An operation whose status stays unreadable this many times is forgotten.
const MAX_UNREADABLE: u32 = 5;

pub struct VmssFleet {
    arm: ArmClient,
    /// Per scale set: the last describe (capacity, live instances) and when.
    listed: Mutex<HashMap<String, Listed>>,
    /// Per scale set: accepted operations not yet settled.
    operations: Mutex<HashMap<String, Vec<Operation>>>,
    /// Per scale set: the allocation error code of the last VM that failed for lack of
    /// capacity, kept until a list shows every launch since come up (see [`still_failing`]).
    failing: Mutex<HashMap<String, String>>,
}

#[derive(Clone)]
struct Listed {
    at: Instant,
    capacity: u32,
    instances: Vec<Instance>,
    /// Broken VMs the describe left in place (they count in the capacity, serve nothing).
    broken: Vec<String>,
}

/// What one VM of the list is to scalehook.
#[derive(Debug, PartialEq, Eq)]
enum Vm {
    /// Launching or in service.
    Live(Instance),
    /// Failed to provision, or deallocated/stopped: not capacity; to be replaced.
    /// `allocation`: the error code when it failed for lack of capacity.
    Broken {
        id: String,
        why: String,
        allocation: Option<String>,
    },
    /// Being deleted: gone already as far as capacity goes.
    Deleting,
}

impl VmssFleet {
    pub fn new(arm: ArmClient) -> Self {
        Self {
            arm,
            listed: Mutex::new(HashMap::new()),
            operations: Mutex::new(HashMap::new()),
            failing: Mutex::new(HashMap::new()),
        }
    }

    pub fn arm(&self) -> &ArmClient {
        &self.arm
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.arm.budget.call
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Listed>> {
        self.listed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn operations(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Operation>>> {
        self.operations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers the operation an accepted write started, to settle it in a later describe.
    fn track(&self, vmss: &str, what: &str, accepted: &ArmResponse) {
        if let Some(op) = self.arm.operation(what, accepted) {
            let mut ops = self.operations();
            let list = ops.entry(vmss.to_string()).or_default();
            list.push(op);
            let excess = list.len().saturating_sub(MAX_OPERATIONS);
            list.drain(..excess);
        }
    }

    /// Accepted operations of `vmss` still remembered (tests, logs).
    pub fn pending_operations(&self, vmss: &str) -> usize {
        self.operations().get(vmss).map_or(0, Vec::len)
    }

    /// Reads the operations of `vmss` that are due (one GET each, a few per describe): a
    /// failed one is logged and counted (its VMs show as `Failed` in the list), a finished
    /// one is forgotten, a running one is kept for a later describe.
    async fn settle_due(&self, vmss: &str, deadline: Instant) {
        let ops = self.operations().remove(vmss).unwrap_or_default();
        // Reading operations may spend a quarter of the call, never what describe needs.
        let settle_by = deadline.min(Instant::now() + self.arm.budget.call / 4);
        let mut keep = Vec::with_capacity(ops.len());
        let mut read = 0;
        for op in ops {
            let now = Instant::now();
            if read >= SETTLE_PER_DESCRIBE
                || self.arm.rate_low()
                || now < op.not_before
                || now >= settle_by
            {
                keep.push(op);
                continue;
            }
            read += 1;
            match self.arm.settle(op, settle_by).await {
                Settled::Running(op) if op.unreadable < MAX_UNREADABLE => keep.push(op),
                Settled::Running(op) => {
                    tracing::warn!(target: "scalehook::azure", vmss, operation = %op.what, "ARM operation status stayed unreadable; forgetting it");
                }
                Settled::Succeeded | Settled::Failed(_) => {}
                Settled::Unknown(why) => {
                    tracing::info!(target: "scalehook::azure", vmss, problem = %why, "ARM operation status cannot be read; the next describe shows what happened");
                }
            }
        }
        if !keep.is_empty() {
            let mut all = self.operations();
            let list = all.entry(vmss.to_string()).or_default();
            keep.append(list);
            *list = keep;
        }
    }

    /// Keeps what a list showed of failed allocations (see [`still_failing`]).
    fn note_failure(&self, vmss: &str, listed: Option<String>, launching: bool) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(code) = still_failing(failing.remove(vmss), listed, launching) {
            failing.insert(vmss.to_string(), code);
        }
    }

    fn cached(&self, vmss: &str, max_age: Duration) -> Option<Listed> {
        self.cache()
            .get(vmss)
            .filter(|l| l.at.elapsed() <= max_age)
            .cloned()
    }

    async fn vms(&self, vmss: &str, deadline: Instant) -> Result<Vec<Vm>, FleetError> {
        let mut out = Vec::new();
        let mut first = self.arm.url(&format!("{vmss}/virtualMachines"))?;
        first
            .query_pairs_mut()
            .append_pair("$expand", "instanceView");
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(FleetError::Unavailable(format!(
                    "{vmss}: more than {MAX_PAGES} pages of instances"
                )));
            }
            let page = self
                .arm
                .send(Method::GET, url, None, deadline)
                .await?
                .json()?;
            let items = page
                .get("value")
                .and_then(Value::as_array)
                .ok_or_else(|| bad_shape(vmss, "virtualMachines list without value[]"))?;
            out.extend(items.iter().filter_map(vm_of));
            next = match page.get("nextLink").and_then(Value::as_str) {
                Some(link) if !link.is_empty() => {
                    Some(Url::parse(link).map_err(|_| bad_shape(vmss, "nextLink is not a URL"))?)
                }
                _ => None,
            };
        }
        Ok(out)
    }

    /// `POST {vmss}/delete` for `ids`, then the capacity back to `capacity`: the scale set
    /// creates as many fresh VMs. Waits for neither operation.
    async fn delete_and_restore(
        &self,
        vmss: &str,
        ids: &[String],
        capacity: u32,
        deadline: Instant,
    ) -> Result<(), FleetError> {
        self.post_delete(vmss, ids, deadline).await?;
        self.patch_capacity(vmss, capacity, deadline).await
    }

    /// `POST {vmss}/delete` for `ids` (the scale set's capacity goes down with them); the
    /// operation is settled by a later describe.
    async fn post_delete(
        &self,
        vmss: &str,
        ids: &[String],
        deadline: Instant,
    ) -> Result<(), FleetError> {
        let res = self
            .arm
            .send(
                Method::POST,
                self.arm.url(&format!("{vmss}/delete"))?,
                Some(&json!({ "instanceIds": ids })),
                deadline,
            )
            .await?;
        self.track(vmss, &format!("POST delete {}", ids.join(",")), &res);
        Ok(())
    }

    /// `PATCH {vmss}` with the capacity (the documented answer: 200 with the scale set);
    /// the operation is settled by a later describe.
    async fn patch_capacity(
        &self,
        vmss: &str,
        capacity: u32,
        deadline: Instant,
    ) -> Result<(), FleetError> {
        let res = self
            .arm
            .send(
                Method::PATCH,
                self.arm.url(vmss)?,
                Some(&json!({ "sku": { "capacity": capacity } })),
                deadline,
            )
            .await?;
        if let Some(l) = self.cache().get_mut(vmss) {
            l.capacity = capacity;
        }
        self.track(vmss, &format!("PATCH capacity {capacity}"), &res);
        Ok(())
    }

    /// The VMs that serve no runner, best to delete first: broken ones left in place, then
    /// launching ones (newest first). From this pass's describe, else read.
    async fn spare_vms(
        &self,
        vmss: &str,
        deadline: Instant,
    ) -> Result<(u32, Vec<String>), FleetError> {
        let listed = match self.cached(vmss, PASS_REUSE) {
            Some(l) => l,
            None => {
                let capacity = self.capacity(vmss, deadline).await?;
                let (instances, broken, _) = split(self.vms(vmss, deadline).await?);
                Listed {
                    at: Instant::now(),
                    capacity,
                    instances,
                    broken: broken.into_iter().map(|(id, _)| id).collect(),
                }
            }
        };
        let mut launching: Vec<&Instance> =
            listed.instances.iter().filter(|i| i.launching).collect();
        launching.sort_by_key(|i| std::cmp::Reverse(i.id.parse::<u64>().unwrap_or(0)));
        let spare = listed
            .broken
            .iter()
            .cloned()
            .chain(launching.into_iter().map(|i| i.id.clone()))
            .collect();
        Ok((listed.capacity, spare))
    }

    /// The scale set's capacity: from this pass's describe when fresh, else read.
    async fn capacity(&self, vmss: &str, deadline: Instant) -> Result<u32, FleetError> {
        if let Some(l) = self.cached(vmss, PASS_REUSE) {
            return Ok(l.capacity);
        }
        let set = self
            .arm
            .send(Method::GET, self.arm.url(vmss)?, None, deadline)
            .await?
            .json()?;
        capacity_of(vmss, &set)
    }

    fn forget_instance(&self, vmss: &str, instance_id: &str, capacity_change: i64) {
        if let Some(l) = self.cache().get_mut(vmss) {
            l.instances.retain(|i| i.id != instance_id);
            l.broken.retain(|id| id != instance_id);
            l.capacity = u32::try_from(i64::from(l.capacity) + capacity_change).unwrap_or(0);
        }
    }
}

/// The pool's scale set resource id, or a clear error for a pool of another fleet kind.
pub fn vmss_id(pool: &PoolConfig) -> Result<&str, FleetError> {
    match &pool.fleet {
        FleetTarget::AzureVmss(id) => Ok(id.trim_end_matches('/')),
        other => Err(FleetError::NotFound(format!(
            "pool {:?} has a {} fleet, not azure_vmss",
            pool.name,
            other.kind()
        ))),
    }
}

/// Live instances, broken VMs with why, and the allocation error of a VM that failed for
/// lack of capacity (the first one listed), if any.
fn split(vms: Vec<Vm>) -> (Vec<Instance>, Vec<(String, String)>, Option<String>) {
    let mut live = Vec::with_capacity(vms.len());
    let mut broken = Vec::new();
    let mut failure = None;
    for vm in vms {
        match vm {
            Vm::Live(i) => live.push(i),
            Vm::Broken {
                id,
                why,
                allocation,
            } => {
                failure = failure.or(allocation);
                broken.push((id, why));
            }
            Vm::Deleting => {}
        }
    }
    (live, broken, failure)
}

/// The error codes Compute gives a VM it could not allocate for lack of capacity
/// (learn.microsoft.com/azure/virtual-machines/error-codes-spot: `SkuNotAvailable`, "not
/// enough Azure Spot Virtual Machine capacity"; learn.microsoft.com/troubleshoot/azure/
/// virtual-machines/windows/allocation-failure: `AllocationFailed`, `ZonalAllocationFailed`,
/// `OverconstrainedAllocationRequest`, `OverconstrainedZonalAllocationRequest`).
const ALLOCATION_ERRORS: [&str; 5] = [
    "SkuNotAvailable",
    "AllocationFailed",
    "ZonalAllocationFailed",
    "OverconstrainedAllocationRequest",
    "OverconstrainedZonalAllocationRequest",
];

/// The allocation error of a failed VM: its instance view's `ProvisioningState/failed/<code>`
/// status, when the code is one of [`ALLOCATION_ERRORS`].
fn allocation_error(statuses: Option<&Vec<Value>>) -> Option<String> {
    statuses?.iter().find_map(|s| {
        let code = s.get("code").and_then(Value::as_str)?;
        let (state, error) = code.split_at_checked("ProvisioningState/failed/".len())?;
        (state.eq_ignore_ascii_case("ProvisioningState/failed/")
            && ALLOCATION_ERRORS
                .iter()
                .any(|e| e.eq_ignore_ascii_case(error)))
        .then(|| error.to_string())
    })
}

/// Whether launches still fail after a list: a VM failed allocation in it (`listed`), or one
/// did before (`before`) and the VMs created since are still `Creating` (`launching`): a
/// replacement of a failed VM has not shown it can be had yet. Cleared once a list shows no
/// failed allocation and nothing launching: every launch since came up.
fn still_failing(
    before: Option<String>,
    listed: Option<String>,
    launching: bool,
) -> Option<String> {
    listed.or(before.filter(|_| launching))
}

fn bad_shape(vmss: &str, what: &str) -> FleetError {
    FleetError::Unavailable(format!("{vmss}: unexpected ARM answer: {what}"))
}

fn capacity_of(vmss: &str, set: &Value) -> Result<u32, FleetError> {
    set.pointer("/sku/capacity")
        .and_then(Value::as_u64)
        .map(|c| u32::try_from(c).unwrap_or(u32::MAX))
        .ok_or_else(|| bad_shape(vmss, "no sku.capacity"))
}

fn valid_instance_id(instance_id: &str) -> Result<(), FleetError> {
    // Uniform instance ids are decimal; anything else did not come from describe.
    if instance_id.is_empty() || !instance_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FleetError::Rejected(format!(
            "{instance_id:?} is not a Uniform scale set instance id"
        )));
    }
    Ok(())
}

/// One VMSS VM of the list (read with `$expand=instanceView`).
fn vm_of(vm: &Value) -> Option<Vm> {
    let id = vm.get("instanceId").and_then(Value::as_str)?.to_string();
    let props = vm.get("properties");
    let state = props
        .and_then(|p| p.get("provisioningState"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if state.eq_ignore_ascii_case("deleting") {
        return Some(Vm::Deleting);
    }
    let statuses = props
        .and_then(|p| p.pointer("/instanceView/statuses"))
        .and_then(Value::as_array);
    if state.eq_ignore_ascii_case("failed") {
        let allocation = allocation_error(statuses);
        return Some(Vm::Broken {
            id,
            why: match &allocation {
                Some(code) => format!("provisioning failed: {code}"),
                None => "provisioning failed".into(),
            },
            allocation,
        });
    }
    // `PowerState/<state>` among the instance view's statuses.
    let power = statuses
        .and_then(|statuses| {
            statuses.iter().find_map(|s| {
                s.get("code")
                    .and_then(Value::as_str)
                    .and_then(|c| c.strip_prefix("PowerState/"))
            })
        })
        .unwrap_or("");
    if matches!(
        power.to_ascii_lowercase().as_str(),
        "deallocated" | "deallocating" | "stopped" | "stopping"
    ) {
        return Some(Vm::Broken {
            id,
            why: format!("power state {power}"),
            allocation: None,
        });
    }
    let computer_name = props
        .and_then(|p| p.pointer("/osProfile/computerName"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let policy = props.and_then(|p| p.get("protectionPolicy"));
    let flag = |k: &str| {
        policy
            .and_then(|p| p.get(k))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let launched_at = props
        .and_then(|p| p.get("timeCreated"))
        .and_then(Value::as_str)
        .and_then(parse_rfc3339);
    Some(Vm::Live(Instance {
        id,
        runner_key: computer_name,
        launching: state.eq_ignore_ascii_case("creating"),
        protected: flag("protectFromScaleIn") || flag("protectFromScaleSetActions"),
        launched_at,
    }))
}

#[async_trait]
impl Fleet for VmssFleet {
    async fn describe(&self, pool: &PoolConfig) -> Result<FleetState, FleetError> {
        let vmss = vmss_id(pool)?;
        let deadline = self.deadline();
        self.settle_due(vmss, deadline).await;
        let set = self
            .arm
            .send(Method::GET, self.arm.url(vmss)?, None, deadline)
            .await?
            .json()?;
        // Overprovisioning (the API's default) creates extra VMs that boot and are deleted
        // by Azure on its own choice: a runner could start on one, and the list would hold
        // VMs that are not capacity. Refused rather than guessed.
        if set
            .pointer("/properties/overprovision")
            .and_then(Value::as_bool)
            != Some(false)
        {
            return Err(FleetError::Rejected(format!(
                "{vmss} has overprovision enabled (or not set: Azure's default is on); scalehook needs overprovision = false"
            )));
        }
        let mode = set
            .pointer("/properties/orchestrationMode")
            .and_then(Value::as_str)
            .unwrap_or("Uniform");
        if !mode.eq_ignore_ascii_case("uniform") {
            return Err(FleetError::Rejected(format!(
                "{vmss} uses {mode} orchestration; scalehook supports Uniform scale sets only"
            )));
        }
        let capacity = capacity_of(vmss, &set)?;
        // Low on calls: a recent list will do (the capacity above is always fresh). The
        // list waits for the scale set's answer on purpose: that answer's remaining-calls
        // header decides whether the list is worth a call.
        let reuse = if self.arm.rate_low() {
            self.cached(vmss, LIST_REUSE)
        } else {
            None
        };
        let (instances, left_broken) = match reuse {
            Some(l) => (l.instances, l.broken),
            None => {
                let (live, broken, failure) = split(self.vms(vmss, deadline).await?);
                self.note_failure(vmss, failure, live.iter().any(|i| i.launching));
                for (id, why) in &broken {
                    tracing::warn!(target: "scalehook::azure", vmss, instance = %id, why = %why, "VM is not capacity; replacing it");
                }
                let broken: Vec<String> = broken.into_iter().map(|(id, _)| id).collect();
                let mut left = Vec::new();
                if !broken.is_empty() {
                    if self.arm.rate_low() {
                        tracing::warn!(target: "scalehook::azure", vmss, count = broken.len(), "throttling budget low: broken VMs wait for a later pass");
                        left = broken;
                    } else if let Err(e) = self
                        .delete_and_restore(vmss, &broken, capacity, deadline)
                        .await
                    {
                        // The pass goes on with the live VMs; the next one tries again.
                        tracing::warn!(target: "scalehook::azure", vmss, problem = %e, "replacing broken VMs failed");
                        left = broken;
                    }
                }
                (live, left)
            }
        };
        self.cache().insert(
            vmss.to_string(),
            Listed {
                at: Instant::now(),
                capacity,
                instances: instances.clone(),
                broken: left_broken,
            },
        );
        Ok(FleetState {
            desired: capacity,
            // A scale set has no bounds of its own (Autoscale settings do; see docs).
            min: None,
            max: None,
            instances,
            supports_protection: false,
            launch_failure: self
                .failing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(vmss)
                .map(|code| format!("VM allocation failed: {code}")),
            ..FleetState::default()
        })
    }

    /// Raises the capacity with a PATCH. Lowers it only by deleting chosen VMs: a PATCH
    /// down lets Azure pick the VMs (balance zones, then fault domains, then the highest
    /// instance id), which can be a running one. So lowering deletes broken VMs left in
    /// place, then launching ones, and never more; what cannot be lowered that way stays
    /// (logged), and a later pass removes idle VMs by id.
    async fn set_desired(&self, pool: &PoolConfig, desired: u32) -> Result<(), FleetError> {
        let vmss = vmss_id(pool)?;
        let deadline = self.deadline();
        let capacity = self.capacity(vmss, deadline).await?;
        if desired >= capacity {
            return self.patch_capacity(vmss, desired, deadline).await;
        }
        let (capacity, spare) = self.spare_vms(vmss, deadline).await?;
        let want = capacity.saturating_sub(desired) as usize;
        let ids: Vec<String> = spare.into_iter().take(want).collect();
        if ids.len() < want {
            tracing::warn!(
                target: "scalehook::azure",
                event = "capacity_not_lowered",
                vmss,
                capacity,
                desired,
                deletable = ids.len(),
                "lowering capacity by PATCH would let Azure pick running VMs; deleting only VMs that serve no runner"
            );
        }
        if ids.is_empty() {
            return Ok(());
        }
        self.post_delete(vmss, &ids, deadline).await?;
        for id in &ids {
            self.forget_instance(vmss, id, -1);
        }
        Ok(())
    }

    async fn remove_instance(
        &self,
        pool: &PoolConfig,
        instance_id: &str,
    ) -> Result<(), FleetError> {
        let vmss = vmss_id(pool)?;
        valid_instance_id(instance_id)?;
        let deadline = self.deadline();
        self.post_delete(vmss, &[instance_id.to_string()], deadline)
            .await?;
        self.forget_instance(vmss, instance_id, -1);
        Ok(())
    }

    async fn replace_instance(
        &self,
        pool: &PoolConfig,
        instance_id: &str,
    ) -> Result<(), FleetError> {
        let vmss = vmss_id(pool)?;
        valid_instance_id(instance_id)?;
        let deadline = self.deadline();
        // Deleting instances lowers the capacity with them; the capacity goes back up at
        // once, so the scale set creates a fresh VM in its place.
        let capacity = self.capacity(vmss, deadline).await?;
        self.delete_and_restore(vmss, &[instance_id.to_string()], capacity, deadline)
            .await?;
        self.forget_instance(vmss, instance_id, 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_from_vm_list_items() {
        let vm = json!({
            "instanceId": "3",
            "properties": {
                "provisioningState": "Creating",
                "osProfile": {"computerName": "runnervmss000003"},
                "protectionPolicy": {"protectFromScaleIn": true}
            }
        });
        let Some(Vm::Live(i)) = vm_of(&vm) else {
            panic!("live")
        };
        assert_eq!(i.id, "3");
        assert_eq!(i.runner_key, "runnervmss000003");
        assert!(i.launching && i.protected);
        assert!(i.runs("gh-runnervmss000003-1"));
        let deleting = json!({"instanceId": "4", "properties": {"provisioningState": "Deleting"}});
        assert_eq!(vm_of(&deleting), Some(Vm::Deleting));
        let bare = json!({"instanceId": "5"});
        let Some(Vm::Live(i)) = vm_of(&bare) else {
            panic!("live")
        };
        assert!(!i.launching && i.runner_key.is_empty() && i.launched_at.is_none());
    }

    #[test]
    fn a_vm_that_failed_allocation_names_its_error_code() {
        let vm = |code: &str| {
            json!({"instanceId": "7", "properties": {
                "provisioningState": "Failed",
                "instanceView": {"statuses": [
                    {"code": code, "level": "Error", "displayStatus": "Provisioning failed",
                     "message": "Allocation failed. We do not have sufficient capacity."},
                    {"code": "PowerState/deallocated", "level": "Info"}
                ]}
            }})
        };
        for code in ALLOCATION_ERRORS {
            let Some(Vm::Broken {
                allocation, why, ..
            }) = vm_of(&vm(&format!("ProvisioningState/failed/{code}")))
            else {
                panic!("broken")
            };
            assert_eq!(allocation.as_deref(), Some(code));
            assert!(why.contains(code));
        }
        // Failed for another reason (an extension, a secret): not a lack of capacity.
        let Some(Vm::Broken { allocation, .. }) =
            vm_of(&vm("ProvisioningState/failed/VMExtensionProvisioningError"))
        else {
            panic!("broken")
        };
        assert_eq!(allocation, None);
        let Some(Vm::Broken { allocation, .. }) = vm_of(&vm("ProvisioningState/failed")) else {
            panic!("broken")
        };
        assert_eq!(allocation, None);
    }

    #[test]
    fn launches_fail_until_a_list_shows_every_launch_since_come_up() {
        let code = || Some("SkuNotAvailable".to_string());
        // A failed allocation in the list.
        assert_eq!(still_failing(None, code(), false), code());
        // Its replacement is still creating: not shown to succeed yet.
        assert_eq!(still_failing(code(), None, true), code());
        // Nothing failed, nothing launching: launches succeed again.
        assert_eq!(still_failing(code(), None, false), None);
        // Never failed: a launching VM is just a launch.
        assert_eq!(still_failing(None, None, true), None);
    }

    #[test]
    fn failed_and_deallocated_vms_are_not_capacity() {
        let failed = json!({"instanceId": "1", "properties": {"provisioningState": "Failed"}});
        assert!(matches!(vm_of(&failed), Some(Vm::Broken { .. })));
        let evicted = json!({"instanceId": "2", "properties": {
            "provisioningState": "Succeeded",
            "timeCreated": "2026-11-29T12:00:00.1234567+00:00",
            "instanceView": {"statuses": [
                {"code": "ProvisioningState/succeeded"},
                {"code": "PowerState/deallocated"}
            ]}
        }});
        assert!(
            matches!(vm_of(&evicted), Some(Vm::Broken { ref why, .. }) if why.contains("deallocated"))
        );
        let running = json!({"instanceId": "3", "properties": {
            "provisioningState": "Succeeded",
            "timeCreated": "2026-11-29T12:00:00.1234567+00:00",
            "instanceView": {"statuses": [{"code": "PowerState/running"}]}
        }});
        let Some(Vm::Live(i)) = vm_of(&running) else {
            panic!("live")
        };
        assert_eq!(i.launched_at, Some(1_795_953_600));
    }
}
