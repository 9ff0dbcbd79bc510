//! scalehook's GitHub client: [`GitHubApp`] implements the core's
//! [`scalehook_core::github::GitHub`] over GitHub's REST API (github.com or GitHub
//! Enterprise Server) as a GitHub App. See docs/github.md.
//!
//! Adapters call [`from_config`] once at start with the App's key (read where each adapter
//! reads its secrets): with a `[github]` section it returns the client to hand to
//! `Service::with_github`; without one it logs that scalehook runs webhook-only.

pub mod client;
mod http;
pub mod key;
mod limits;

pub use client::{Budget, GitHubApp, API_VERSION};
pub use http::next_link_param;
pub use key::{AppKey, KeyError, APP_KEY_ENV};
pub use limits::{SECONDARY_LIMIT_MAX_WAIT, SECONDARY_LIMIT_WAIT};

use scalehook_core::github::GitHub;
use scalehook_core::Config;
use std::sync::Arc;

/// Why the GitHub client cannot be set up. Names the setting to fix; never a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("the configuration has a [github] section (App {app_id}) but no App private key: set {setting}")]
    NoKey { app_id: u64, setting: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Unresolved(#[from] scalehook_core::UnresolvedReference),
}

/// The App key from a setting's text (an environment variable or a platform's app
/// setting). `None` when it is unset or empty; an unresolved platform reference
/// (`@Microsoft.KeyVault(...)`, ...) or a value that is not a key refuses, naming
/// `setting`.
pub fn key_from_setting(setting: &str, value: Option<&str>) -> Result<Option<AppKey>, SetupError> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    scalehook_core::refuse_unresolved_reference(setting, value)?;
    Ok(Some(AppKey::from_pem(value, setting)?))
}

/// The App key from `SCALEHOOK_GITHUB_APP_KEY` in `lookup` (the environment).
pub fn key_from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<AppKey>, SetupError> {
    key_from_setting(APP_KEY_ENV, lookup(APP_KEY_ENV).as_deref())
}

/// The GitHub client for `config`: `Some` with `[github]` and a key; an error naming
/// `key_setting` with `[github]` and no key; `None` (webhook-only, warned) without
/// `[github]`. The client's per-call budget fits in `config.cloud_timeout`.
pub fn from_config(
    config: &Config,
    key: Option<AppKey>,
    key_setting: &str,
) -> Result<Option<Arc<dyn GitHub>>, SetupError> {
    match (&config.github, key) {
        (Some(g), Some(key)) => {
            tracing::info!(
                target: "scalehook::github",
                app_id = g.app_id,
                installation_id = g.installation_id,
                api_url = %g.api_url,
                "GitHub App configured"
            );
            Ok(Some(Arc::new(GitHubApp::new(
                g,
                key,
                Budget::for_delivery(config.cloud_timeout),
            ))))
        }
        (Some(g), None) => Err(SetupError::NoKey {
            app_id: g.app_id,
            setting: key_setting.to_string(),
        }),
        (None, key) => {
            tracing::warn!(target: "scalehook::github", "{}", scalehook_core::service::WEBHOOK_ONLY_NOTE);
            if key.is_some() {
                tracing::warn!(target: "scalehook::github", "{key_setting} is set but the configuration has no [github] section: the key is not used");
            }
            Ok(None)
        }
    }
}
