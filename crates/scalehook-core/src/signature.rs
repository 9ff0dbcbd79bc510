//! Webhook signature verification: HMAC-SHA256 over the raw body, `X-Hub-Signature-256` only.
//!
//! SHA-1 (`X-Hub-Signature`) is never a fallback. Comparison is constant time
//! (`ring::hmac::verify`), and several secrets may be active at once so a secret can be
//! rotated without dropping deliveries.
//!
//! The MAC is ring's: its assembly SHA-256 is about twice as fast as the portable Rust one
//! on x86-64 CPUs without the SHA extensions, and hashing the body is most of the cost of a
//! delivery (see `bench/RESULTS.md`).

use ring::hmac;
use std::fmt;

/// The header GitHub puts the SHA-256 signature in.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
const PREFIX: &str = "sha256=";

/// Why a delivery's signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("malformed X-Hub-Signature-256 header: expected sha256= and 64 hex digits")]
    Malformed,
    #[error("signature does not match any active webhook secret")]
    Mismatch,
}

/// The active webhook secrets (current first, then previous ones during a rotation).
///
/// `Debug` never prints the secret bytes, so a secret cannot leak through a log of a
/// config or an error.
#[derive(Clone)]
pub struct WebhookSecrets {
    secrets: Vec<Vec<u8>>,
    /// One HMAC key per secret, in the same order, padded once rather than per delivery.
    keys: Vec<hmac::Key>,
}

/// Returned when no usable secret is configured: scalehook fails closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no webhook secret configured: set SCALEHOOK_WEBHOOK_SECRET (and optionally SCALEHOOK_WEBHOOK_SECRET_PREVIOUS during a rotation)")]
pub struct NoSecret;

/// Why the configured secrets could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    #[error(transparent)]
    None(#[from] NoSecret),
    #[error(transparent)]
    Unresolved(#[from] UnresolvedReference),
}

/// A setting that holds a platform's secret reference (`@Microsoft.KeyVault(...)`, ...)
/// instead of the secret: the platform could not resolve it and passed the reference text
/// on. Names the setting, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} holds an unresolved secret reference ({kind}), not a secret: the platform could not read the secret (check the reference, that the secret exists and that the app's identity may read it); refusing to start")]
pub struct UnresolvedReference {
    /// The setting (environment variable, parameter) that holds the reference.
    pub setting: String,
    /// Which kind of reference it looks like, e.g. "Azure Key Vault reference".
    pub kind: &'static str,
}

/// The reference syntaxes a platform substitutes for a secret, and passes on as text when it
/// cannot: matched case-insensitively at the start of the (trimmed) value.
const REFERENCE_PREFIXES: &[(&str, &str)] = &[
    ("@microsoft.keyvault(", "Azure Key Vault reference"),
    (
        "@microsoft.appconfiguration(",
        "Azure App Configuration reference",
    ),
    ("{{resolve:", "CloudFormation dynamic reference"),
];

fn reference_kind(value: &str) -> Option<&'static str> {
    let head: String = value.trim_start().chars().take(32).collect();
    let head = head.to_ascii_lowercase();
    REFERENCE_PREFIXES
        .iter()
        .find(|(prefix, _)| head.starts_with(prefix))
        .map(|(_, kind)| *kind)
}

/// Does `value` look like a platform secret reference that was never resolved (the literal
/// `@Microsoft.KeyVault(...)`, `@Microsoft.AppConfiguration(...)` or `{{resolve:...}}` text)
/// rather than a secret? For every secret-bearing setting (webhook secrets, the GitHub App
/// private key): used as a secret, such a value fails every request while the app looks
/// healthy.
pub fn looks_like_unresolved_reference(value: &str) -> bool {
    reference_kind(value).is_some()
}

/// `Err` naming `setting` (never the value) when `value` is an unresolved reference.
pub fn refuse_unresolved_reference(setting: &str, value: &str) -> Result<(), UnresolvedReference> {
    match reference_kind(value) {
        Some(kind) => Err(UnresolvedReference {
            setting: setting.to_string(),
            kind,
        }),
        None => Ok(()),
    }
}

/// The environment variable that holds the current webhook secret.
pub const SECRET_ENV: &str = "SCALEHOOK_WEBHOOK_SECRET";
/// The environment variable that holds the previous secret while a rotation is under way.
pub const PREVIOUS_SECRET_ENV: &str = "SCALEHOOK_WEBHOOK_SECRET_PREVIOUS";

impl WebhookSecrets {
    /// Builds the set from candidate secrets; empty ones are dropped, and none left is an error.
    pub fn new<I, S>(secrets: I) -> Result<Self, NoSecret>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .map(|s| s.as_ref().to_vec())
            .filter(|s| !s.is_empty())
            .collect();
        if secrets.is_empty() {
            return Err(NoSecret);
        }
        let keys = secrets.iter().map(|s| key_for(s)).collect();
        Ok(Self { secrets, keys })
    }

    /// Builds the set from secrets read from configuration, each with the name of the
    /// setting it came from (an environment variable, a parameter). This is where every
    /// configured secret is checked: a value that is an unresolved platform reference
    /// (see [`looks_like_unresolved_reference`]) refuses the start, naming its setting.
    pub fn from_settings<I, N, S>(settings: I) -> Result<Self, SecretsError>
    where
        I: IntoIterator<Item = (N, S)>,
        N: AsRef<str>,
        S: AsRef<[u8]>,
    {
        let mut values = Vec::new();
        for (setting, value) in settings {
            let value = value.as_ref();
            refuse_unresolved_reference(setting.as_ref(), &String::from_utf8_lossy(value))?;
            values.push(value.to_vec());
        }
        Ok(Self::new(values)?)
    }

    /// Reads `SCALEHOOK_WEBHOOK_SECRET` and `SCALEHOOK_WEBHOOK_SECRET_PREVIOUS`.
    pub fn from_env() -> Result<Self, SecretsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`WebhookSecrets::from_env`], over any variable lookup (tests, cloud secret stores).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SecretsError> {
        let current = lookup(SECRET_ENV).unwrap_or_default();
        let previous = lookup(PREVIOUS_SECRET_ENV).unwrap_or_default();
        if current.is_empty() {
            // A previous secret alone is a half-finished rotation; refuse rather than guess.
            return Err(NoSecret.into());
        }
        Self::from_settings([(SECRET_ENV, current), (PREVIOUS_SECRET_ENV, previous)])
    }

    /// How many secrets are active.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// Always false: a `WebhookSecrets` holds at least one secret.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Does `value` (a secret candidate) equal one of the active secrets? Used by tests that
    /// check a secret never appears in output.
    pub fn contains_in(&self, text: &str) -> bool {
        self.secrets
            .iter()
            .filter_map(|s| std::str::from_utf8(s).ok())
            .any(|s| text.contains(s))
    }

    /// Verifies a `X-Hub-Signature-256` header value against the raw body.
    pub fn verify(&self, header: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let digest = parse_header(header)?;
        for key in &self.keys {
            if hmac::verify(key, body, &digest).is_ok() {
                return Ok(());
            }
        }
        Err(SignatureError::Mismatch)
    }

    /// The header value the current secret gives `body` (for `scalehook sign` and replay).
    pub fn sign(&self, body: &[u8]) -> String {
        header_for(&self.keys[0], body)
    }
}

impl fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookSecrets({} active, redacted)", self.secrets.len())
    }
}

/// `sha256=` + lowercase hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    header_for(&key_for(secret), body)
}

fn key_for(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret)
}

fn header_for(key: &hmac::Key, body: &[u8]) -> String {
    let tag = hmac::sign(key, body);
    format!("{PREFIX}{}", hex::encode(tag.as_ref()))
}

/// Parses `sha256=<64 hex>` into the 32-byte digest. Upper-case hex is accepted (hex is
/// case-insensitive); anything else (other algorithms, wrong length, junk) is malformed.
pub fn parse_header(header: &str) -> Result<[u8; 32], SignatureError> {
    let hex_part = header
        .trim()
        .strip_prefix(PREFIX)
        .ok_or(SignatureError::Malformed)?;
    if hex_part.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut digest).map_err(|_| SignatureError::Malformed)?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(s: &[&str]) -> WebhookSecrets {
        WebhookSecrets::new(s.iter().map(|s| s.as_bytes())).expect("secret")
    }

    #[test]
    fn unresolved_references_are_refused_by_setting_name() {
        for value in [
            "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/hook/)",
            "  @microsoft.keyvault(VaultName=kv;SecretName=hook)",
            "@Microsoft.AppConfiguration(Endpoint=https://x.azconfig.io; Key=k)",
            "{{resolve:secretsmanager:hook:SecretString}}",
        ] {
            assert!(looks_like_unresolved_reference(value), "{value}");
            let err =
                WebhookSecrets::from_lookup(|name| (name == SECRET_ENV).then(|| value.to_string()))
                    .expect_err("refused");
            let msg = err.to_string();
            assert!(msg.contains(SECRET_ENV), "{msg}");
            assert!(!msg.contains("hook"), "the value leaked: {msg}");
        }
        // The previous secret is checked too, and named.
        let err = WebhookSecrets::from_lookup(|name| match name {
            SECRET_ENV => Some("current-secret".into()),
            PREVIOUS_SECRET_ENV => Some("@Microsoft.KeyVault(SecretUri=x)".into()),
            _ => None,
        })
        .expect_err("refused");
        assert!(err.to_string().contains(PREVIOUS_SECRET_ENV), "{err}");
        // Real secrets, including ones that mention the syntax later on, are fine.
        for value in [
            "0123abcd",
            "my@Microsoft.KeyVault(",
            "resolve:x",
            "{{not-a-ref}}",
        ] {
            assert!(!looks_like_unresolved_reference(value), "{value}");
        }
        assert!(refuse_unresolved_reference("SCALEHOOK_GITHUB_APP_KEY", "-----BEGIN").is_ok());
    }

    #[test]
    fn github_docs_vector() {
        let s = secrets(&["It's a Secret to Everybody"]);
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(s.sign(b"Hello, World!"), sig);
        assert_eq!(s.verify(Some(sig), b"Hello, World!"), Ok(()));
        assert_eq!(
            s.verify(Some(sig), b"Hello, World?"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn typed_errors() {
        let s = secrets(&["k"]);
        assert_eq!(s.verify(None, b"x"), Err(SignatureError::Missing));
        assert_eq!(
            s.verify(Some("sha1=00"), b"x"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            s.verify(Some("sha256=zz"), b"x"),
            Err(SignatureError::Malformed)
        );
        let bad_hex = format!("sha256={}", "g".repeat(64));
        assert_eq!(
            s.verify(Some(&bad_hex), b"x"),
            Err(SignatureError::Malformed)
        );
        let wrong = format!("sha256={}", "0".repeat(64));
        assert_eq!(s.verify(Some(&wrong), b"x"), Err(SignatureError::Mismatch));
    }

    #[test]
    fn rotation_accepts_either_secret() {
        let s = secrets(&["new", "old"]);
        assert!(s.verify(Some(&sign(b"old", b"body")), b"body").is_ok());
        assert!(s.verify(Some(&sign(b"new", b"body")), b"body").is_ok());
        assert_eq!(
            s.verify(Some(&sign(b"other", b"body")), b"body"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn upper_case_hex_is_accepted() {
        let s = secrets(&["k"]);
        let sig = sign(b"k", b"b");
        let upper = format!("sha256={}", sig["sha256=".len()..].to_uppercase());
        assert!(s.verify(Some(&upper), b"b").is_ok());
    }

    #[test]
    fn no_secret_fails_closed() {
        assert_eq!(
            WebhookSecrets::new(Vec::<&str>::new()).err(),
            Some(NoSecret)
        );
        assert_eq!(WebhookSecrets::new([""]).err(), Some(NoSecret));
        assert!(WebhookSecrets::from_lookup(|_| None).is_err());
        assert!(
            WebhookSecrets::from_lookup(|n| (n == PREVIOUS_SECRET_ENV).then(|| "x".into()))
                .is_err()
        );
        let both = WebhookSecrets::from_lookup(|_| Some("x".into())).expect("two secrets");
        assert_eq!(both.len(), 2);
    }

    #[test]
    fn debug_is_redacted() {
        let s = secrets(&["hunter2"]);
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
