//! The App's private key and the JWT it signs.
//!
//! GitHub issues App keys as PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`); PKCS#8
//! (`BEGIN PRIVATE KEY`, what `openssl pkcs8 -topk8` writes) is accepted too. The key is
//! parsed once, at start, by ring; the text is not kept. Nothing here ever prints the key:
//! [`AppKey`]'s `Debug` is redacted and errors name the setting, never the value.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

/// The App's private key (PEM) in the environment, or where a platform puts the secret.
pub const APP_KEY_ENV: &str = "SCALEHOOK_GITHUB_APP_KEY";

/// How long before `iat` the JWT claims to be issued (GitHub's advice against clock drift).
pub const JWT_BACKDATE_SECS: u64 = 60;
/// The JWT's lifetime from `iat`: GitHub refuses more than 10 minutes.
pub const JWT_LIFETIME_SECS: u64 = 600;

/// Why a key could not be used. Names the setting (or source); never holds key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{setting}: not a PEM private key (expected -----BEGIN RSA PRIVATE KEY----- as GitHub issues it, or -----BEGIN PRIVATE KEY-----)")]
    NotPem { setting: String },
    #[error("{setting}: a PEM {label} is not an RSA private key (expected RSA PRIVATE KEY or PRIVATE KEY)")]
    Label { setting: String, label: String },
    #[error("{setting}: encrypted PEM keys are not supported: store the key as GitHub issued it")]
    Encrypted { setting: String },
    #[error("{setting}: the PEM body is not valid base64")]
    Base64 { setting: String },
    #[error("{setting}: the key was rejected ({reason}): GitHub App keys are 2048-bit RSA")]
    Rejected { setting: String, reason: String },
    #[error("signing the App JWT failed")]
    Sign,
}

/// The App's RSA private key, ready to sign. `Debug` shows no key material.
pub struct AppKey {
    pair: RsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AppKey(<redacted>, {}-bit RSA)",
            self.pair.public().modulus_len() * 8
        )
    }
}

impl AppKey {
    /// Parses a PEM key; `setting` names where it came from, for errors.
    ///
    /// Tolerates what pasting a PEM into an environment variable does to it: `\r\n`,
    /// surrounding whitespace, and literal `\n` escapes instead of line breaks.
    pub fn from_pem(text: &str, setting: &str) -> Result<Self, KeyError> {
        let owned;
        let text = if !text.trim().contains('\n') && text.contains("\\n") {
            owned = text.replace("\\n", "\n");
            owned.as_str()
        } else {
            text
        };
        let (label, der) = pem_decode(text, setting)?;
        let pair = match label.as_str() {
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
            _ => {
                return Err(KeyError::Label {
                    setting: setting.into(),
                    label,
                })
            }
        }
        .map_err(|e| KeyError::Rejected {
            setting: setting.into(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            pair,
            rng: SystemRandom::new(),
        })
    }

    /// The public key as DER `RSAPublicKey` (what ring's RSA verification takes): tests
    /// verify the JWT with it.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.pair.public().as_ref().to_vec()
    }

    /// RS256 (RSASSA-PKCS1-v1_5 with SHA-256) of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut sig = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut sig)
            .map_err(|_| KeyError::Sign)?;
        Ok(sig)
    }

    /// The App's JWT at `now` (Unix seconds): `iat = now - 60`, `exp = iat + 600`,
    /// `iss = app id`, signed RS256.
    pub fn jwt(&self, app_id: u64, now: u64) -> Result<String, KeyError> {
        let iat = now.saturating_sub(JWT_BACKDATE_SECS);
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"iat":{iat},"exp":{},"iss":"{app_id}"}}"#,
            iat + JWT_LIFETIME_SECS
        ));
        let signing_input = format!("{header}.{claims}");
        let sig = URL_SAFE_NO_PAD.encode(self.sign(signing_input.as_bytes())?);
        Ok(format!("{signing_input}.{sig}"))
    }
}

/// The first PEM block of `text`: its label and DER bytes.
fn pem_decode(text: &str, setting: &str) -> Result<(String, Vec<u8>), KeyError> {
    let not_pem = || KeyError::NotPem {
        setting: setting.into(),
    };
    let mut lines = text.lines().map(str::trim).skip_while(|l| l.is_empty());
    let first = lines.next().ok_or_else(not_pem)?;
    let label = first
        .strip_prefix("-----BEGIN ")
        .and_then(|l| l.strip_suffix("-----"))
        .ok_or_else(not_pem)?
        .to_string();
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    let mut ended = false;
    for line in lines {
        if line == end {
            ended = true;
            break;
        }
        if line.contains(':') {
            // RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`, `DEK-Info: ...`).
            return Err(KeyError::Encrypted {
                setting: setting.into(),
            });
        }
        body.push_str(line);
    }
    if !ended {
        return Err(not_pem());
    }
    if label == "ENCRYPTED PRIVATE KEY" {
        return Err(KeyError::Encrypted {
            setting: setting.into(),
        });
    }
    let der = STANDARD
        .decode(body.as_bytes())
        .map_err(|_| KeyError::Base64 {
            setting: setting.into(),
        })?;
    Ok((label, der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_errors_name_the_setting_and_never_the_value() {
        let e = AppKey::from_pem("hunter2-not-a-key", "SOME_SETTING").expect_err("not pem");
        let msg = e.to_string();
        assert!(
            msg.contains("SOME_SETTING") && !msg.contains("hunter2"),
            "{msg}"
        );
        let e = AppKey::from_pem(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "S",
        )
        .expect_err("label");
        assert!(matches!(e, KeyError::Label { .. }), "{e}");
        let e = AppKey::from_pem(
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "S",
        )
        .expect_err("encrypted");
        assert!(matches!(e, KeyError::Encrypted { .. }), "{e}");
        let e = AppKey::from_pem(
            "-----BEGIN RSA PRIVATE KEY-----\n!!!!\n-----END RSA PRIVATE KEY-----\n",
            "S",
        )
        .expect_err("base64");
        assert!(matches!(e, KeyError::Base64 { .. }), "{e}");
        let e = AppKey::from_pem(
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "S",
        )
        .expect_err("rejected");
        assert!(matches!(e, KeyError::Rejected { .. }), "{e}");
        let e =
            AppKey::from_pem("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n", "S").expect_err("no end");
        assert!(matches!(e, KeyError::NotPem { .. }), "{e}");
    }
}
