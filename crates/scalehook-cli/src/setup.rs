//! What every command starts from: the configuration and the webhook secrets.

use crate::cli::SignArgs;
use anyhow::Context as _;
use scalehook_core::config::ConfigError;
use scalehook_core::signature::{self, SECRET_ENV};
use scalehook_core::{Config, FleetTarget, WebhookSecrets};
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

/// Where the configuration came from, for the start-up line.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(String),
    Env,
    Embedded,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::File(p) => write!(f, "{p}"),
            ConfigSource::Env => {
                f.write_str("environment (SCALEHOOK_CONFIG_TOML or SCALEHOOK_CONFIG)")
            }
            ConfigSource::Embedded => f.write_str("embedded default"),
        }
    }
}

/// `--config FILE`, else `SCALEHOOK_CONFIG_TOML` / `SCALEHOOK_CONFIG`, else the embedded default.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<(Config, ConfigSource)> {
    if let Some(path) = path {
        let shown = path.display().to_string();
        let config = Config::from_file(&shown).map_err(config_error)?;
        return Ok((config, ConfigSource::File(shown)));
    }
    match Config::from_env().map_err(config_error)? {
        Some(config) => Ok((config, ConfigSource::Env)),
        None => Ok((Config::embedded_default(), ConfigSource::Embedded)),
    }
}

fn config_error(e: ConfigError) -> anyhow::Error {
    anyhow::anyhow!("invalid configuration: {e}")
}

/// The local fleet simulates pools; a pool aimed at a cloud group needs its cloud's adapter.
pub fn require_local_fleets(config: &Config) -> anyhow::Result<()> {
    for pool in &config.pools {
        let adapter = match pool.fleet {
            FleetTarget::Local => continue,
            FleetTarget::AwsAsg(_) => "the AWS Lambda adapter (crates/scalehook-aws)",
            FleetTarget::AzureVmss(_) => "the Azure Functions adapter (crates/scalehook-azure)",
        };
        anyhow::bail!(
            "pool {:?} targets a cloud fleet ({}), which this command does not drive: deploy {adapter} for it, \
             or remove `{}` from the pool to simulate it locally",
            pool.name,
            pool.fleet.kind(),
            pool.fleet.kind(),
        );
    }
    Ok(())
}

/// The active webhook secrets from the environment, or how to set one.
pub fn secrets_from_env() -> anyhow::Result<WebhookSecrets> {
    WebhookSecrets::from_env().map_err(|e| match e {
        scalehook_core::SecretsError::Unresolved(e) => anyhow::anyhow!("{e}"),
        scalehook_core::SecretsError::None(_) => anyhow::anyhow!(
            "no webhook secret: set {SECRET_ENV} to the secret configured on the GitHub webhook, e.g.\n  \
             export {SECRET_ENV}=\"$(openssl rand -hex 32)\"\n\
             (during a rotation, also SCALEHOOK_WEBHOOK_SECRET_PREVIOUS; `make run` sets a demo secret)"
        ),
    })
}

/// The GitHub App client when the configuration has `[github]` (its key from
/// `SCALEHOOK_GITHUB_APP_KEY`); `None` in webhook-only mode, which is logged as a warning.
/// `[github]` without a key refuses to start, naming the variable.
pub fn github_from_env(
    config: &Config,
) -> anyhow::Result<Option<std::sync::Arc<dyn scalehook_core::GitHub>>> {
    let key = scalehook_github::key_from_lookup(|k| std::env::var(k).ok())?;
    Ok(scalehook_github::from_config(
        config,
        key,
        scalehook_github::APP_KEY_ENV,
    )?)
}

/// `scalehook sign`: the header value for a body, from the same code that verifies.
pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let body = if args.file.as_os_str() == "-" {
        let mut body = Vec::new();
        std::io::stdin()
            .read_to_end(&mut body)
            .context("cannot read the body from stdin")?;
        body
    } else {
        std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?
    };
    let header = match args.secret {
        Some(secret) if !secret.is_empty() => signature::sign(secret.as_bytes(), &body),
        Some(_) => anyhow::bail!("--secret must not be empty"),
        None => secrets_from_env()?.sign(&body),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{header}").context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}
