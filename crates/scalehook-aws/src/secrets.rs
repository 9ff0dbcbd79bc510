//! Where the webhook secret comes from, read once at start (cold start):
//!
//! - `SCALEHOOK_WEBHOOK_SECRET` (+ `SCALEHOOK_WEBHOOK_SECRET_PREVIOUS` during a rotation);
//! - `SCALEHOOK_WEBHOOK_SECRET_SSM_PARAMETER`: the name of an SSM SecureString parameter,
//!   read with decryption;
//! - `SCALEHOOK_WEBHOOK_SECRET_ARN`: a Secrets Manager secret id or ARN (its `SecretString`).
//!
//! A stored value may hold several secrets, one per line, current first (rotation).
//! Exactly one source must be configured; none (or an empty value) refuses to start.
//! Errors name the source, never the value.
//!
//! The GitHub App's private key (PEM) comes from the same three kinds of source, through
//! the same code: `SCALEHOOK_GITHUB_APP_KEY`, `SCALEHOOK_GITHUB_APP_KEY_SSM_PARAMETER` or
//! `SCALEHOOK_GITHUB_APP_KEY_ARN` ([`SecretSource::app_key_from_lookup`],
//! [`SecretSource::load_app_key`]). It is needed only with a `[github]` section.

use scalehook_core::signature::{PREVIOUS_SECRET_ENV, SECRET_ENV};
use scalehook_core::{SecretsError, UnresolvedReference, WebhookSecrets};
use scalehook_github::{AppKey, APP_KEY_ENV};

pub const SSM_PARAMETER_ENV: &str = "SCALEHOOK_WEBHOOK_SECRET_SSM_PARAMETER";
pub const SECRET_ARN_ENV: &str = "SCALEHOOK_WEBHOOK_SECRET_ARN";
/// The GitHub App key as an SSM SecureString parameter name.
pub const APP_KEY_SSM_PARAMETER_ENV: &str = "SCALEHOOK_GITHUB_APP_KEY_SSM_PARAMETER";
/// The GitHub App key as a Secrets Manager secret id or ARN.
pub const APP_KEY_ARN_ENV: &str = "SCALEHOOK_GITHUB_APP_KEY_ARN";

/// The configured source of the webhook secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The secrets themselves, from the environment (never printed: see `Debug`).
    Env(Redacted),
    /// An SSM parameter name.
    Ssm(String),
    /// A Secrets Manager secret id or ARN.
    SecretsManager(String),
}

/// Secret text that never shows in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(Vec<String>);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redacted({} values)", self.0.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("no webhook secret configured: set {SECRET_ENV}, {SSM_PARAMETER_ENV} (an SSM SecureString name) or {SECRET_ARN_ENV} (a Secrets Manager secret id)")]
    None,
    #[error("several webhook secret sources are configured ({0}): set exactly one")]
    Ambiguous(String),
    #[error("{SECRET_ENV} is empty while {PREVIOUS_SECRET_ENV} is set: a rotation needs the current secret")]
    OnlyPrevious,
    #[error("cannot read the webhook secret from {source_name}: {problem}")]
    Read {
        source_name: String,
        problem: String,
    },
    #[error("the webhook secret in {0} is empty")]
    Empty(String),
    #[error(transparent)]
    Unresolved(#[from] UnresolvedReference),
    /// The GitHub App key's source or value is wrong (names the setting, never the key).
    #[error("GitHub App key: {0}")]
    AppKey(String),
}

fn non_empty(lookup: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    lookup(name).filter(|v| !v.is_empty())
}

impl SecretSource {
    /// Picks the source from environment variables (any lookup, for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SecretError> {
        let current = non_empty(&lookup, SECRET_ENV);
        let previous = non_empty(&lookup, PREVIOUS_SECRET_ENV);
        let ssm = non_empty(&lookup, SSM_PARAMETER_ENV);
        let arn = non_empty(&lookup, SECRET_ARN_ENV);
        let set: Vec<&str> = [
            (current.is_some() || previous.is_some()).then_some(SECRET_ENV),
            ssm.is_some().then_some(SSM_PARAMETER_ENV),
            arn.is_some().then_some(SECRET_ARN_ENV),
        ]
        .into_iter()
        .flatten()
        .collect();
        if set.len() > 1 {
            return Err(SecretError::Ambiguous(set.join(", ")));
        }
        if let Some(name) = ssm {
            return Ok(SecretSource::Ssm(name));
        }
        if let Some(id) = arn {
            return Ok(SecretSource::SecretsManager(id));
        }
        match (current, previous) {
            (Some(c), p) => Ok(SecretSource::Env(Redacted(
                std::iter::once(c).chain(p).collect(),
            ))),
            (None, Some(_)) => Err(SecretError::OnlyPrevious),
            (None, None) => Err(SecretError::None),
        }
    }

    /// Reads the secrets (one SDK call for a stored secret; none for the environment).
    pub async fn load(&self, sdk: &aws_config::SdkConfig) -> Result<WebhookSecrets, SecretError> {
        match self {
            SecretSource::Env(Redacted(values)) => {
                let names = [SECRET_ENV, PREVIOUS_SECRET_ENV];
                WebhookSecrets::from_settings(names.into_iter().zip(values)).map_err(|e| match e {
                    SecretsError::Unresolved(e) => e.into(),
                    SecretsError::None(_) => SecretError::None,
                })
            }
            stored => {
                let (source_name, value) = stored.read_stored(sdk).await?;
                parse_stored(&source_name, &value)
            }
        }
    }

    /// Where the GitHub App key comes from: `None` when no source is set (webhook-only
    /// mode, or a `[github]` section, which the caller then refuses).
    pub fn app_key_from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, SecretError> {
        let env = non_empty(&lookup, APP_KEY_ENV);
        let ssm = non_empty(&lookup, APP_KEY_SSM_PARAMETER_ENV);
        let arn = non_empty(&lookup, APP_KEY_ARN_ENV);
        let set: Vec<&str> = [
            env.is_some().then_some(APP_KEY_ENV),
            ssm.is_some().then_some(APP_KEY_SSM_PARAMETER_ENV),
            arn.is_some().then_some(APP_KEY_ARN_ENV),
        ]
        .into_iter()
        .flatten()
        .collect();
        if set.len() > 1 {
            return Err(SecretError::AppKey(format!(
                "several sources are configured ({}): set exactly one",
                set.join(", ")
            )));
        }
        Ok(match (env, ssm, arn) {
            (Some(pem), _, _) => Some(SecretSource::Env(Redacted(vec![pem]))),
            (_, Some(name), _) => Some(SecretSource::Ssm(name)),
            (_, _, Some(id)) => Some(SecretSource::SecretsManager(id)),
            _ => None,
        })
    }

    /// Reads and parses the GitHub App key (one SDK call for a stored key). An unresolved
    /// reference or a value that is not a key refuses, naming the setting or store.
    pub async fn load_app_key(&self, sdk: &aws_config::SdkConfig) -> Result<AppKey, SecretError> {
        let (setting, value) = match self {
            SecretSource::Env(Redacted(values)) => (
                APP_KEY_ENV.to_string(),
                values.first().cloned().unwrap_or_default(),
            ),
            stored => stored.read_stored(sdk).await?,
        };
        scalehook_github::key_from_setting(&setting, Some(&value))
            .map_err(|e| SecretError::AppKey(e.to_string()))?
            .ok_or(SecretError::Empty(setting))
    }

    /// The text of a stored secret (an SSM SecureString, or a Secrets Manager
    /// `SecretString`) and the store's name for messages.
    async fn read_stored(
        &self,
        sdk: &aws_config::SdkConfig,
    ) -> Result<(String, String), SecretError> {
        match self {
            SecretSource::Env(_) => Err(SecretError::None),
            SecretSource::Ssm(name) => {
                let source_name = format!("SSM parameter {name}");
                let out = aws_sdk_ssm::Client::new(sdk)
                    .get_parameter()
                    .name(name)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| SecretError::Read {
                        source_name: source_name.clone(),
                        problem: aws_sdk_ssm::error::DisplayErrorContext(&e).to_string(),
                    })?;
                let value = out.parameter().and_then(|p| p.value()).unwrap_or("");
                Ok((source_name, value.to_string()))
            }
            SecretSource::SecretsManager(id) => {
                let source_name = format!("Secrets Manager secret {id}");
                let out = aws_sdk_secretsmanager::Client::new(sdk)
                    .get_secret_value()
                    .secret_id(id)
                    .send()
                    .await
                    .map_err(|e| SecretError::Read {
                        source_name: source_name.clone(),
                        problem: aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
                    })?;
                let value = out.secret_string().ok_or_else(|| SecretError::Read {
                    source_name: source_name.clone(),
                    problem: "the secret has no SecretString (binary secrets are not supported)"
                        .into(),
                })?;
                Ok((source_name, value.to_string()))
            }
        }
    }
}

/// A stored value: one secret per line, current first. Line endings (`\n`, `\r\n`) and
/// empty lines are dropped; other characters are part of the secret.
/// `source_name` names the store in errors (an unresolved reference, or nothing in it).
pub fn parse_stored(source_name: &str, value: &str) -> Result<WebhookSecrets, SecretError> {
    let lines = value
        .lines()
        .map(|l| (source_name, l.trim_end_matches('\r')));
    WebhookSecrets::from_settings(lines).map_err(|e| match e {
        SecretsError::Unresolved(e) => e.into(),
        SecretsError::None(_) => SecretError::Empty(source_name.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn picks_exactly_one_source() {
        assert_eq!(SecretSource::from_lookup(env(&[])), Err(SecretError::None));
        assert_eq!(
            SecretSource::from_lookup(env(&[(SSM_PARAMETER_ENV, "/gh/secret")])),
            Ok(SecretSource::Ssm("/gh/secret".into()))
        );
        assert_eq!(
            SecretSource::from_lookup(env(&[(SECRET_ARN_ENV, "arn:x")])),
            Ok(SecretSource::SecretsManager("arn:x".into()))
        );
        assert!(matches!(
            SecretSource::from_lookup(env(&[(SECRET_ENV, "a"), (SSM_PARAMETER_ENV, "p")])),
            Err(SecretError::Ambiguous(_))
        ));
        assert_eq!(
            SecretSource::from_lookup(env(&[(PREVIOUS_SECRET_ENV, "old")])),
            Err(SecretError::OnlyPrevious)
        );
        // empty values count as unset
        assert_eq!(
            SecretSource::from_lookup(env(&[(SECRET_ENV, ""), (SSM_PARAMETER_ENV, "p")])),
            Ok(SecretSource::Ssm("p".into()))
        );
    }

    #[test]
    fn env_source_never_prints_the_secret() {
        let source = SecretSource::from_lookup(env(&[(SECRET_ENV, "hunter2")])).expect("env");
        assert!(!format!("{source:?}").contains("hunter2"));
    }

    #[test]
    fn app_key_source_is_optional_but_unambiguous() {
        assert_eq!(SecretSource::app_key_from_lookup(env(&[])), Ok(None));
        assert_eq!(
            SecretSource::app_key_from_lookup(env(&[(APP_KEY_SSM_PARAMETER_ENV, "/gh/key")])),
            Ok(Some(SecretSource::Ssm("/gh/key".into())))
        );
        assert_eq!(
            SecretSource::app_key_from_lookup(env(&[(APP_KEY_ARN_ENV, "arn:k")])),
            Ok(Some(SecretSource::SecretsManager("arn:k".into())))
        );
        let e = SecretSource::app_key_from_lookup(env(&[
            (APP_KEY_ENV, "pem"),
            (APP_KEY_ARN_ENV, "arn:k"),
        ]))
        .expect_err("ambiguous");
        assert!(e.to_string().contains(APP_KEY_ARN_ENV), "{e}");
        let s = SecretSource::app_key_from_lookup(env(&[(APP_KEY_ENV, "-----BEGIN secret")]))
            .expect("env")
            .expect("some");
        assert!(!format!("{s:?}").contains("BEGIN"));
    }

    #[test]
    fn stored_values_hold_one_secret_per_line() {
        let s = parse_stored("p", "new-secret\r\nold-secret\n\n").expect("two secrets");
        assert_eq!(s.len(), 2);
        let sig = scalehook_core::signature::sign(b"old-secret", b"body");
        assert!(s.verify(Some(&sig), b"body").is_ok());
        assert_eq!(
            parse_stored("p", "\n\r\n").err(),
            Some(SecretError::Empty("p".into()))
        );
        assert!(parse_stored("p", "").is_err());
    }

    #[test]
    fn stored_unresolved_references_are_refused_by_name() {
        let err = parse_stored(
            "SSM parameter /gh/secret",
            "{{resolve:ssm-secure:/gh/real:1}}\nold-secret",
        )
        .expect_err("refused");
        let msg = err.to_string();
        assert!(msg.contains("SSM parameter /gh/secret"), "{msg}");
        assert!(!msg.contains("/gh/real"), "{msg}");
    }
}
