//! The handler's wiring: app settings -> config, secrets, Table ledger, VMSS fleet ->
//! service -> router. Every problem found here stops the start with a message that names
//! the setting (or the pool) to fix.

use crate::arm::{ArmBudget, ArmClient, DEFAULT_ARM_ENDPOINT};
use crate::envelope;
use crate::identity::ManagedIdentity;
use crate::ledger::TableLedger;
use crate::table::{TableAuth, TableClient};
use crate::vmss::VmssFleet;
use axum::Router;
use scalehook_core::config::{CONFIG_PATH_ENV, CONFIG_TOML_ENV};
use scalehook_core::{Config, FleetTarget, Service, WebhookSecrets};
use std::sync::Arc;

/// The port the Functions host tells the handler to listen on.
pub const PORT_ENV: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";
pub const TABLE_ENDPOINT_ENV: &str = "SCALEHOOK_TABLE_ENDPOINT";
pub const TABLE_NAME_ENV: &str = "SCALEHOOK_TABLE_NAME";
pub const TABLE_KEY_ENV: &str = "SCALEHOOK_TABLE_ACCOUNT_KEY";
pub const ARM_ENDPOINT_ENV: &str = "SCALEHOOK_ARM_ENDPOINT";
pub const DEFAULT_TABLE_NAME: &str = "scalehookledger";

/// A start-up problem (shown to the operator; never contains a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// What the handler serves with.
pub struct App {
    pub service: Arc<Service>,
    pub port: u16,
    pub ledger: Arc<TableLedger>,
}

/// The one HTTP client (see [`crate::http::client`]).
pub fn http_client() -> Result<reqwest::Client, StartupError> {
    crate::http::client().map_err(StartupError)
}

/// Builds the app from the settings `lookup` gives (the environment in production).
pub fn build(lookup: impl Fn(&str) -> Option<String>) -> Result<App, StartupError> {
    let var = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
    let port = var(PORT_ENV)
        .ok_or_else(|| {
            StartupError(format!(
                "{PORT_ENV} is not set (the Functions host sets it)"
            ))
        })?
        .trim()
        .parse::<u16>()
        .map_err(|_| StartupError(format!("{PORT_ENV} is not a port number")))?;

    let config = match (var(CONFIG_TOML_ENV), var(CONFIG_PATH_ENV)) {
        (Some(text), _) => Config::from_toml(&text),
        (None, Some(path)) => Config::from_file(&path),
        (None, None) => {
            return Err(StartupError(format!(
                "{CONFIG_TOML_ENV} is not set: the handler needs its pools (with azure_vmss)"
            )))
        }
    }
    .map_err(|e| StartupError(format!("configuration: {e}")))?;
    for pool in &config.pools {
        if !matches!(pool.fleet, FleetTarget::AzureVmss(_)) {
            return Err(StartupError(format!(
                "configuration: pool {:?}: azure_vmss: every pool needs a scale set resource id on Azure (it has a {} fleet)",
                pool.name,
                pool.fleet.kind()
            )));
        }
    }
    let secrets = WebhookSecrets::from_lookup(&lookup).map_err(|e| StartupError(e.to_string()))?;
    // The GitHub App key comes the way the webhook secret does: an app setting
    // (SCALEHOOK_GITHUB_APP_KEY), typically a Key Vault reference the platform resolves; an
    // unresolved reference refuses the start. With [github] and no key: refused, naming it.
    let github_key =
        scalehook_github::key_from_lookup(&lookup).map_err(|e| StartupError(e.to_string()))?;
    let github = scalehook_github::from_config(&config, github_key, scalehook_github::APP_KEY_ENV)
        .map_err(|e| StartupError(e.to_string()))?;

    let http = http_client()?;
    let identity = ManagedIdentity::from_lookup(http.clone(), &lookup).map(Arc::new);

    let table_endpoint = var(TABLE_ENDPOINT_ENV).ok_or_else(|| {
        StartupError(format!(
            "{TABLE_ENDPOINT_ENV} is not set (e.g. https://<account>.table.core.windows.net)"
        ))
    })?;
    let table_name = var(TABLE_NAME_ENV).unwrap_or_else(|| DEFAULT_TABLE_NAME.to_string());
    let table_auth = match var(TABLE_KEY_ENV) {
        Some(key) => {
            TableAuth::shared_key_from_settings(TABLE_ENDPOINT_ENV, &table_endpoint, TABLE_KEY_ENV, &key)
                .map_err(StartupError)?
        }
        None => TableAuth::Identity(identity.clone().ok_or_else(|| {
            StartupError(format!(
                "no managed identity (IDENTITY_ENDPOINT/IDENTITY_HEADER unset) and no {TABLE_KEY_ENV}: enable the app's managed identity"
            ))
        })?),
    };
    let table = TableClient::new(http.clone(), &table_endpoint, &table_name, table_auth)
        .map_err(|e| StartupError(format!("{TABLE_ENDPOINT_ENV}/{TABLE_NAME_ENV}: {e}")))?;
    // Expiry gets half the pass's cloud budget; what does not fit resumes next pass.
    let ledger = Arc::new(TableLedger::new(table).with_expiry_budget(config.cloud_timeout / 2));

    let identity = identity.ok_or_else(|| {
        StartupError(
            "no managed identity (IDENTITY_ENDPOINT/IDENTITY_HEADER unset): enable the app's managed identity for the scale set role".into(),
        )
    })?;
    let arm_endpoint = var(ARM_ENDPOINT_ENV).unwrap_or_else(|| DEFAULT_ARM_ENDPOINT.to_string());
    let arm = ArmClient::new(
        http.clone(),
        &arm_endpoint,
        identity.clone(),
        arm_budget(&config),
    )
    .map_err(|e| StartupError(format!("{ARM_ENDPOINT_ENV}: {e}")))?;
    // With a GitHub App and the JIT container endpoint, every describe provisions new VMs.
    let fleet = crate::blob::with_provisioning(
        Arc::new(VmssFleet::new(arm)),
        ledger.clone(),
        github.clone(),
        &config,
        http,
        identity,
        &lookup,
    )
    .map_err(StartupError)?;

    let service = Service::new(config, secrets, ledger.clone(), fleet);
    let service = match github {
        Some(github) => service.with_github(github),
        None => service,
    };
    Ok(App {
        service: Arc::new(service),
        port,
        ledger,
    })
}

/// Each fleet call gets under half the delivery's cloud budget (describe, then one write).
fn arm_budget(config: &Config) -> ArmBudget {
    let mut budget = ArmBudget::default();
    let half = config.cloud_timeout / 2;
    budget.call = budget.call.min(half);
    budget.max_wait = budget.max_wait.min(budget.call);
    budget
}

/// The forwarded webhook (`/api/webhook`), `/healthz`, `/metrics`, and the timer envelope
/// route (`/reconcile`).
pub fn router(service: Arc<Service>) -> Router {
    scalehook_http::router(service.clone(), &[envelope::WEBHOOK_PATH])
        .merge(envelope::router(service))
}
