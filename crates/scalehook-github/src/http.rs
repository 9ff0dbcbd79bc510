//! HTTP plumbing of the GitHub client: requests, answers, pagination links, path segments
//! and the runner shape GitHub lists.

use scalehook_core::github::{GitHubError, Runner};
use serde::Deserialize;
use std::time::{SystemTime, UNIX_EPOCH};

/// The largest answer body read.
pub(crate) const MAX_BODY: usize = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// The App JWT (`/app/*`).
    App,
    /// The installation token.
    Installation,
}

#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: reqwest::Method,
    /// Path and query after the base URL, e.g. `/orgs/acme/actions/runners?per_page=100`.
    pub(crate) path: String,
    pub(crate) body: Option<Vec<u8>>,
}

pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn json<T: for<'de> Deserialize<'de>>(&self, what: &str) -> Result<T, GitHubError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| GitHubError::Unavailable(format!("{what}: unexpected answer: {e}")))
    }

    /// GitHub's `message`, shortened; never a credential (GitHub does not echo them).
    pub(crate) fn message(&self) -> String {
        #[derive(Deserialize)]
        struct Msg {
            message: Option<String>,
        }
        let m = serde_json::from_slice::<Msg>(&self.body)
            .ok()
            .and_then(|m| m.message)
            .unwrap_or_default();
        let m: String = m.chars().take(200).collect();
        format!("{} {}", self.status, m).trim_end().to_string()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A path segment as GitHub names it (org, owner, repo): anything else is refused rather
/// than encoded, so a name can never change the path.
pub(crate) fn segment(value: &str, what: &str) -> Result<String, GitHubError> {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value != "."
        && value != ".."
    {
        Ok(value.to_string())
    } else {
        Err(GitHubError::Rejected(format!(
            "{what} {value:?} is not a GitHub name"
        )))
    }
}

/// Percent-encodes a query value (cursors are opaque).
pub(crate) fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value of query parameter `name` in the `Link` header's `rel="next"` URL.
pub fn next_link_param(link: &str, name: &str) -> Option<String> {
    for part in link.split(',') {
        let mut pieces = part.split(';');
        let url = pieces.next()?.trim();
        let is_next = pieces.any(|p| {
            let p = p.trim();
            p == r#"rel="next""# || p == "rel=next"
        });
        if !is_next {
            continue;
        }
        let url = url.strip_prefix('<')?.strip_suffix('>')?;
        let query = url.split_once('?')?.1;
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=') {
                if k == name {
                    return Some(percent_decode(v));
                }
            }
        }
    }
    None
}

pub(crate) fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(h) = v
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(h);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Deserialize)]
pub(crate) struct ApiRunner {
    id: u64,
    name: String,
    status: String,
    busy: bool,
    #[serde(default)]
    labels: Vec<ApiLabel>,
}

#[derive(Deserialize)]
pub(crate) struct ApiLabel {
    name: String,
}

impl ApiRunner {
    pub(crate) fn into_runner(self) -> Runner {
        Runner {
            id: self.id,
            online: self.status == "online",
            name: self.name,
            busy: self.busy,
            labels: self.labels.into_iter().map(|l| l.name).collect(),
        }
    }
}

pub(crate) fn repo_path(repository: &str) -> Result<String, GitHubError> {
    let (owner, name) = repository
        .split_once('/')
        .ok_or_else(|| GitHubError::Rejected(format!("{repository:?} is not owner/name")))?;
    Ok(format!(
        "/repos/{}/{}",
        segment(owner, "owner")?,
        segment(name, "repository")?
    ))
}

pub(crate) fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

pub(crate) async fn read_answer(resp: reqwest::Response) -> Result<Answer, reqwest::Error> {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut resp = resp;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

pub(crate) fn status_error(what: &str, answer: &Answer) -> GitHubError {
    let msg = format!("{what}: {}", answer.message());
    match answer.status {
        401 | 403 => GitHubError::Unauthorized(msg),
        s if s >= 500 => GitHubError::Unavailable(msg),
        _ => GitHubError::Rejected(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link() {
        let link = r#"<https://api.github.com/orgs/a/actions/runners?per_page=100&page=2>; rel="next", <https://api.github.com/orgs/a/actions/runners?per_page=100&page=3>; rel="last""#;
        assert_eq!(next_link_param(link, "page").as_deref(), Some("2"));
        let link = r#"<https://api.github.com/orgs/a/actions/runners?page=1>; rel="prev""#;
        assert_eq!(next_link_param(link, "page"), None);
        let link = r#"<https://api.github.com/app/hook/deliveries?per_page=2&cursor=v1_12%3D>; rel="next""#;
        assert_eq!(next_link_param(link, "cursor").as_deref(), Some("v1_12="));
        assert_eq!(next_link_param("garbage", "page"), None);
    }

    #[test]
    fn names_cannot_change_the_path() {
        assert!(segment("acme-corp", "o").is_ok());
        assert!(segment("a.b_c", "o").is_ok());
        for bad in ["", "..", "a/b", "a?b", "a b", "a%2F"] {
            assert!(segment(bad, "o").is_err(), "{bad}");
        }
        assert!(repo_path("acme/app").is_ok());
        assert!(repo_path("acme").is_err());
        assert!(repo_path("acme/app/x").is_err());
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(query_value("v1_a=b&c"), "v1_a%3Db%26c");
    }
}
