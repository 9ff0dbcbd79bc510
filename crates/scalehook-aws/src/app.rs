//! Start-up: environment -> configuration -> secrets -> ledger -> fleet -> service.
//! Everything a wrong deployment can get wrong is checked here, once, with an error that
//! names the variable or pool; only the secret read (SSM / Secrets Manager) calls AWS.

use crate::fleet::AsgFleet;
use crate::ledger::DynamoLedger;
use crate::secrets::{SecretError, SecretSource};
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
}

/// What the environment says, checked, before any AWS call.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub table: String,
    pub secret: SecretSource,
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
        Ok(Self {
            config,
            table,
            secret,
        })
    }

    /// Reads the secret and builds the service: DynamoDB ledger, ASG fleet, EMF logs.
    pub async fn build(self, sdk: &aws_config::SdkConfig) -> Result<Service, StartupError> {
        let secrets = self.secret.load(sdk).await?;
        let ledger = DynamoLedger::from_sdk(sdk, self.table, self.config.ledger);
        let fleet = AsgFleet::from_sdk(sdk);
        Ok(
            Service::new(self.config, secrets, Arc::new(ledger), Arc::new(fleet))
                .with_log(LogFormat::Emf),
        )
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
    }
}
