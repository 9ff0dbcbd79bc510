//! The VMSS fleet wired to the ARM double, as the tests of the fleet and the ARM client use it.

use super::arm_double::{ArmDouble, API_VERSION, VMSS_ID};
use scalehook_azure::{ArmBudget, ArmClient, ManagedIdentity, VmssFleet};
use scalehook_core::{Config, PoolConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// One pool on the double's scale set.
pub fn pool() -> PoolConfig {
    let toml = format!(
        "[[pools]]\nname = \"linux\"\nlabels = [\"self-hosted\"]\nmax = 10\nazure_vmss = \"{VMSS_ID}\"\n"
    );
    Config::from_toml(&toml).expect("config").pools.remove(0)
}

/// An ARM client with the double's identity endpoint and origin.
pub fn arm_client(double: &ArmDouble, budget: ArmBudget) -> ArmClient {
    let env: HashMap<String, String> = double.env().into_iter().collect();
    let http = scalehook_azure::app::http_client().expect("client");
    let identity =
        ManagedIdentity::from_lookup(http.clone(), |k| env.get(k).cloned()).expect("identity");
    ArmClient::new(http, &double.base, Arc::new(identity), budget).expect("arm client")
}

pub fn fleet_with(double: &ArmDouble, budget: ArmBudget) -> VmssFleet {
    VmssFleet::new(arm_client(double, budget))
}

/// Operations are read as soon as a describe comes (no minimum interval, no default wait).
pub fn settle_at_once() -> ArmBudget {
    ArmBudget {
        min_poll: Duration::ZERO,
        default_poll: Duration::ZERO,
        ..ArmBudget::default()
    }
}

/// Requests the double logged whose line contains `what`.
pub fn count(double: &ArmDouble, what: &str) -> usize {
    double
        .lock()
        .log
        .iter()
        .filter(|l| l.contains(what))
        .count()
}

/// A PATCH of the scale set with `body`, sent as any client would (not through scalehook).
pub async fn raw_patch(double: &ArmDouble, body: &serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .patch(format!(
            "{}{VMSS_ID}?api-version={API_VERSION}",
            double.base
        ))
        .bearer_auth(double.issue_token())
        .json(body)
        .send()
        .await
        .expect("patch")
}
