//! Start-up: environment -> configuration -> secrets -> ledger -> fleet -> service.
//! Everything a wrong deployment can get wrong is checked here, once, with an error that
//! names the variable or pool; only the secret read (SSM / Secrets Manager) calls AWS.

use crate::fleet::AsgFleet;
use crate::ledger::DynamoLedger;
use crate::secrets::{SecretError, SecretSource, APP_KEY_ARN_ENV, APP_KEY_SSM_PARAMETER_ENV};
use scalehook_core::config::{ConfigError, CONFIG_TOML_ENV};
use scalehook_core::{Config, FleetTarget, LogFormat, Service};
use std::sync::Arc;

pub const TABLE_ENV: &str = "SCALEHOOK_DYNAMODB_TABLE";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{CONFIG_TOML_ENV} is not set: it holds the pools' TOML configuration")]
    NoConfig,
    #[error("{CONFIG_TOML_ENV}: {0}")]
    Config(#[from] ConfigError),
    #[error("pool {0:?} has no aws_asg: every pool of the Lambda needs the name of its Auto Scaling group (aws_asg = \"<group name>\")")]
    PoolWithoutAsg(String),
    #[error("{TABLE_ENV} is not set: it names the DynamoDB ledger table")]
    NoTable,
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    GitHub(#[from] scalehook_github::SetupError),
}

/// What the environment says, checked, before any AWS call.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub table: String,
    pub secret: SecretSource,
    /// The GitHub App key's source; set whenever the configuration has `[github]`.
    pub github_key: Option<SecretSource>,
}

impl Settings {
    pub fn from_env() -> Result<Self, StartupError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, StartupError> {
        let text = lookup(CONFIG_TOML_ENV)
            .filter(|t| !t.trim().is_empty())
            .ok_or(StartupError::NoConfig)?;
        let config = Config::from_toml(&text)?;
        if let Some(pool) = config
            .pools
            .iter()
            .find(|p| !matches!(p.fleet, FleetTarget::AwsAsg(_)))
        {
            return Err(StartupError::PoolWithoutAsg(pool.name.clone()));
        }
        let table = lookup(TABLE_ENV)
            .filter(|t| !t.trim().is_empty())
            .ok_or(StartupError::NoTable)?;
        let secret = SecretSource::from_lookup(&lookup)?;
        let github_key = SecretSource::app_key_from_lookup(&lookup)?;
        if let (Some(g), None) = (&config.github, &github_key) {
            return Err(StartupError::GitHub(scalehook_github::SetupError::NoKey {
                app_id: g.app_id,
                setting: format!(
                    "{} (or {APP_KEY_SSM_PARAMETER_ENV}, {APP_KEY_ARN_ENV})",
                    scalehook_github::APP_KEY_ENV
                ),
            }));
        }
        Ok(Self {
            config,
            table,
            secret,
            github_key,
        })
    }

    /// Reads the secret and builds the service: DynamoDB ledger, ASG fleet, EMF logs.
    pub async fn build(self, sdk: &aws_config::SdkConfig) -> Result<Service, StartupError> {
        let secrets = self.secret.load(sdk).await?;
        let key = match &self.github_key {
            Some(source) => Some(source.load_app_key(sdk).await?),
            None => None,
        };
        // With [github]: the App client (its HTTPS client is built on its first call);
        // without: webhook-only mode, warned about here.
        let github =
            scalehook_github::from_config(&self.config, key, scalehook_github::APP_KEY_ENV)?;
        // Expiry stops at half the per-call budget and resumes on the next pass (its cursor).
        let ledger = DynamoLedger::from_sdk(sdk, self.table, self.config.ledger)
            .with_expiry_budget(self.config.cloud_timeout / 2);
        let fleet = AsgFleet::from_sdk(sdk);
        let service = Service::new(self.config, secrets, Arc::new(ledger), Arc::new(fleet))
            .with_log(LogFormat::Emf);
        Ok(match github {
            Some(github) => service.with_github(github),
            None => service,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: &str =
        "[[pools]]\nname = \"linux\"\nlabels = [\"self-hosted\"]\nmax = 2\naws_asg = \"runners\"\n";

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, StartupError> {
        Settings::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn complete_environment() {
        let s = settings(&[
            (CONFIG_TOML_ENV, POOL),
            (TABLE_ENV, "ledger"),
            ("SCALEHOOK_WEBHOOK_SECRET", "s"),
        ])
        .expect("valid");
        assert_eq!(s.table, "ledger");
        assert_eq!(
            s.config.pools[0].fleet,
            FleetTarget::AwsAsg("runners".into())
        );
    }

    #[test]
    fn each_missing_piece_is_named() {
        let err = |vars: &[(&str, &str)]| settings(vars).expect_err("invalid").to_string();
        assert!(err(&[]).contains(CONFIG_TOML_ENV));
        let local = "[[pools]]\nname = \"laptop\"\nlabels = [\"x\"]\nmax = 1\n";
        let msg = err(&[(CONFIG_TOML_ENV, local), (TABLE_ENV, "t")]);
        assert!(
            msg.contains("\"laptop\"") && msg.contains("aws_asg"),
            "{msg}"
        );
        assert!(err(&[(CONFIG_TOML_ENV, POOL)]).contains(TABLE_ENV));
        let msg = err(&[(CONFIG_TOML_ENV, POOL), (TABLE_ENV, "t")]);
        assert!(msg.contains("no webhook secret"), "{msg}");
        let msg = err(&[(CONFIG_TOML_ENV, "[[pools]"), (TABLE_ENV, "t")]);
        assert!(msg.contains("TOML"), "{msg}");
        let with_github =
            format!("{POOL}[github]\napp_id = 1\ninstallation_id = 2\norganization = \"acme\"\n");
        let msg = err(&[
            (CONFIG_TOML_ENV, &with_github),
            (TABLE_ENV, "t"),
            ("SCALEHOOK_WEBHOOK_SECRET", "s"),
        ]);
        assert!(msg.contains("SCALEHOOK_GITHUB_APP_KEY"), "{msg}");
        let s = settings(&[
            (CONFIG_TOML_ENV, &with_github),
            (TABLE_ENV, "t"),
            ("SCALEHOOK_WEBHOOK_SECRET", "s"),
            (APP_KEY_SSM_PARAMETER_ENV, "/scalehook/app-key"),
        ])
        .expect("key from SSM");
        assert_eq!(
            s.github_key,
            Some(SecretSource::Ssm("/scalehook/app-key".into()))
        );
    }
}
