//! The VM Scale Set fleet over ARM REST (Uniform orchestration).
//!
//! - describe: `GET {vmss}` (`sku.capacity`, `properties.orchestrationMode`) and
//!   `GET {vmss}/virtualMachines` (paged by `nextLink`) for the instances
//!   (learn.microsoft.com/rest/api/compute/virtual-machine-scale-sets/get,
//!   …/virtual-machine-scale-set-vms/list);
//! - scale out: `PATCH {vmss}` with `{"sku":{"capacity":n}}`
//!   (…/virtual-machine-scale-sets/update);
//! - scale in: `POST {vmss}/delete` with `{"instanceIds":["<id>"]}`, which deletes exactly
//!   the chosen idle instance and lowers the capacity with it
//!   (…/virtual-machine-scale-sets/delete-instances).
//!
//! A runner maps to its VM by the documented naming convention: the runner name contains
//! the VM's computer name (`properties.osProfile.computerName`, e.g. `runnervmss000003`),
//! which is the instance's `runner_key`.
//!
//! Instance protection is not used (`supports_protection: false`): on Azure it guards only
//! against Azure Autoscale and scale-set actions, never against an explicit delete, and
//! scalehook only ever deletes instances it chose as idle. Flexible orchestration has no
//! VMSS-VM API and is refused with a clear error (see docs/azure.md).

use crate::arm::ArmClient;
use async_trait::async_trait;
use reqwest::{Method, Url};
use scalehook_core::{Fleet, FleetError, FleetState, FleetTarget, Instance, PoolConfig};
use serde_json::{json, Value};
use tokio::time::Instant;

/// Upper bound on `nextLink` pages followed in one describe (a scale set has at most 1000
/// instances, 1000 per page is far above that).
const MAX_PAGES: usize = 50;

pub struct VmssFleet {
    arm: ArmClient,
}

impl VmssFleet {
    pub fn new(arm: ArmClient) -> Self {
        Self { arm }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.arm.budget.call
    }

    async fn instances(&self, vmss: &str, deadline: Instant) -> Result<Vec<Instance>, FleetError> {
        let mut out = Vec::new();
        let mut next = Some(self.arm.url(&format!("{vmss}/virtualMachines"))?);
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
            for vm in items {
                if let Some(instance) = instance_of(vm) {
                    out.push(instance);
                }
            }
            next = match page.get("nextLink").and_then(Value::as_str) {
                Some(link) if !link.is_empty() => {
                    Some(Url::parse(link).map_err(|_| bad_shape(vmss, "nextLink is not a URL"))?)
                }
                _ => None,
            };
        }
        Ok(out)
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

fn bad_shape(vmss: &str, what: &str) -> FleetError {
    FleetError::Unavailable(format!("{vmss}: unexpected ARM answer: {what}"))
}

/// One VMSS VM as an instance; `None` for one being deleted (it no longer serves jobs
/// and must not be counted or chosen again).
fn instance_of(vm: &Value) -> Option<Instance> {
    let id = vm.get("instanceId").and_then(Value::as_str)?.to_string();
    let props = vm.get("properties");
    let state = props
        .and_then(|p| p.get("provisioningState"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if state.eq_ignore_ascii_case("deleting") {
        return None;
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
    Some(Instance {
        id,
        runner_key: computer_name,
        launching: state.eq_ignore_ascii_case("creating"),
        protected: flag("protectFromScaleIn") || flag("protectFromScaleSetActions"),
        launched_at: None,
    })
}

#[async_trait]
impl Fleet for VmssFleet {
    async fn describe(&self, pool: &PoolConfig) -> Result<FleetState, FleetError> {
        let vmss = vmss_id(pool)?;
        let deadline = self.deadline();
        let set = self
            .arm
            .send(Method::GET, self.arm.url(vmss)?, None, deadline)
            .await?
            .json()?;
        let mode = set
            .pointer("/properties/orchestrationMode")
            .and_then(Value::as_str)
            .unwrap_or("Uniform");
        if !mode.eq_ignore_ascii_case("uniform") {
            return Err(FleetError::Rejected(format!(
                "{vmss} uses {mode} orchestration; scalehook supports Uniform scale sets only"
            )));
        }
        let desired = set
            .pointer("/sku/capacity")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad_shape(vmss, "no sku.capacity"))?;
        let instances = self.instances(vmss, deadline).await?;
        Ok(FleetState {
            desired: u32::try_from(desired).unwrap_or(u32::MAX),
            // A scale set has no bounds of its own (Autoscale settings do; see docs).
            min: None,
            max: None,
            instances,
            supports_protection: false,
        })
    }

    async fn set_desired(&self, pool: &PoolConfig, desired: u32) -> Result<(), FleetError> {
        let vmss = vmss_id(pool)?;
        let deadline = self.deadline();
        let body = json!({ "sku": { "capacity": desired } });
        let res = self
            .arm
            .send(Method::PATCH, self.arm.url(vmss)?, Some(&body), deadline)
            .await?;
        self.arm.wait(&res, deadline).await?;
        Ok(())
    }

    async fn remove_instance(
        &self,
        pool: &PoolConfig,
        instance_id: &str,
    ) -> Result<(), FleetError> {
        let vmss = vmss_id(pool)?;
        // Uniform instance ids are decimal; anything else did not come from describe.
        if instance_id.is_empty() || !instance_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FleetError::Rejected(format!(
                "{instance_id:?} is not a Uniform scale set instance id"
            )));
        }
        let deadline = self.deadline();
        let body = json!({ "instanceIds": [instance_id] });
        let res = self
            .arm
            .send(
                Method::POST,
                self.arm.url(&format!("{vmss}/delete"))?,
                Some(&body),
                deadline,
            )
            .await?;
        self.arm.wait(&res, deadline).await?;
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
        let i = instance_of(&vm).expect("instance");
        assert_eq!(i.id, "3");
        assert_eq!(i.runner_key, "runnervmss000003");
        assert!(i.launching && i.protected);
        assert!(i.runs("gh-runnervmss000003-1"));
        let deleting = json!({"instanceId": "4", "properties": {"provisioningState": "Deleting"}});
        assert!(instance_of(&deleting).is_none());
        let bare = json!({"instanceId": "5"});
        let i = instance_of(&bare).expect("instance");
        assert!(!i.launching && i.runner_key.is_empty());
    }
}
