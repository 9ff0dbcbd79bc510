//! GitHub webhook events as plain serde types: `ping` and `workflow_job`, nothing else.
//!
//! Only the fields scalehook uses are modelled; everything optional is `Option` with a
//! default, because real payloads differ by era (the 2021 captures lack `runner_*`,
//! `run_attempt` and `created_at`) and by source (GitHub-hosted vs self-hosted).

use crate::clock::parse_rfc3339;
use serde::{Deserialize, Deserializer};

/// A parsed delivery, dispatched on the `X-GitHub-Event` header.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Ping(Ping),
    WorkflowJob(Box<WorkflowJobEvent>),
    /// Any other event name: acknowledged and ignored.
    Other(String),
}

/// Why a body could not be parsed as the event its header names.
#[derive(Debug, thiserror::Error)]
#[error("malformed {event} payload: {source}")]
pub struct ParseError {
    pub event: String,
    #[source]
    pub source: serde_json::Error,
}

impl Event {
    /// Parses `body` as the event named by the `X-GitHub-Event` header value.
    /// Events other than `ping` and `workflow_job` are not parsed at all.
    pub fn parse(event_name: &str, body: &[u8]) -> Result<Event, ParseError> {
        let err = |source| ParseError {
            event: event_name.to_string(),
            source,
        };
        match event_name {
            "ping" => serde_json::from_slice(body).map(Event::Ping).map_err(err),
            "workflow_job" => serde_json::from_slice(body)
                .map(|j| Event::WorkflowJob(Box::new(j)))
                .map_err(err),
            other => Ok(Event::Other(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Ping {
    #[serde(default)]
    pub zen: Option<String>,
    #[serde(default)]
    pub hook_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WorkflowJobEvent {
    pub action: JobAction,
    pub workflow_job: WorkflowJob,
    #[serde(default)]
    pub repository: Option<Repository>,
    #[serde(default)]
    pub organization: Option<Organization>,
    /// The App installation the delivery is for: present in a GitHub App's deliveries,
    /// absent from repository and organization hooks.
    #[serde(default)]
    pub installation: Option<Installation>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Installation {
    pub id: u64,
}

/// The `action` of a `workflow_job` delivery. Unknown actions (such as the 2021 beta's
/// `started`) parse as `Other` so they can be ignored rather than rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobAction {
    Queued,
    Waiting,
    InProgress,
    Completed,
    Other(String),
}

impl JobAction {
    pub fn as_str(&self) -> &str {
        match self {
            JobAction::Queued => "queued",
            JobAction::Waiting => "waiting",
            JobAction::InProgress => "in_progress",
            JobAction::Completed => "completed",
            JobAction::Other(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for JobAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "queued" => JobAction::Queued,
            "waiting" => JobAction::Waiting,
            "in_progress" => JobAction::InProgress,
            "completed" => JobAction::Completed,
            _ => JobAction::Other(s),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WorkflowJob {
    /// Job ids exceed 2^31 in practice; 64 bits.
    pub id: u64,
    pub run_id: u64,
    #[serde(default)]
    pub run_attempt: Option<u64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub runner_id: Option<u64>,
    #[serde(default)]
    pub runner_name: Option<String>,
    #[serde(default)]
    pub runner_group_name: Option<String>,
    #[serde(default)]
    pub conclusion: Option<String>,
    /// RFC 3339 times GitHub stamps on the job (`created_at` is missing before 2022).
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
}

impl WorkflowJob {
    /// The runner the job ran on, if any. GitHub reports "no runner" as a missing or null
    /// `runner_name`, an empty name, or `runner_id == 0` (cancelled before start).
    pub fn runner(&self) -> Option<&str> {
        if self.runner_id == Some(0) {
            return None;
        }
        self.runner_name.as_deref().filter(|n| !n.is_empty())
    }

    /// The newest of the job's times (unix seconds): when the event this delivery reports
    /// happened at the latest. `None` when the payload has no time scalehook can read; an
    /// unreadable time is skipped rather than refused, so a format change on GitHub's side
    /// cannot stop every delivery (the times are signed, so a sender cannot forge them).
    pub fn newest_time(&self) -> Option<u64> {
        [&self.created_at, &self.started_at, &self.completed_at]
            .into_iter()
            .filter_map(|t| t.as_deref().and_then(parse_rfc3339))
            .max()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Repository {
    pub full_name: String,
    #[serde(default)]
    pub owner: Option<Account>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Organization {
    pub login: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Account {
    pub login: String,
}

impl WorkflowJobEvent {
    /// The organization (or user) that owns the repository, for allow-lists.
    pub fn owner(&self) -> Option<&str> {
        self.organization
            .as_ref()
            .map(|o| o.login.as_str())
            .or_else(|| {
                self.repository
                    .as_ref()
                    .and_then(|r| r.owner.as_ref().map(|o| o.login.as_str()))
            })
            .or_else(|| {
                self.repository
                    .as_ref()
                    .and_then(|r| r.full_name.split_once('/').map(|(o, _)| o))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_event_is_not_parsed() {
        assert_eq!(
            Event::parse("push", b"not json").expect("ignored"),
            Event::Other("push".into())
        );
    }

    #[test]
    fn malformed_json_is_an_error() {
        let e = Event::parse("workflow_job", b"{").expect_err("malformed");
        assert!(e.to_string().contains("workflow_job"));
        assert!(Event::parse("workflow_job", br#"{"action":"queued"}"#).is_err());
    }

    #[test]
    fn minimal_job_and_null_fields() {
        let body = br#"{"action":"completed","workflow_job":{"id":18446744073709551615,"run_id":1,
            "labels":["self-hosted"],"runner_id":null,"runner_name":null,"conclusion":null}}"#;
        let Event::WorkflowJob(e) = Event::parse("workflow_job", body).expect("parse") else {
            panic!("not a job")
        };
        assert_eq!(e.workflow_job.id, u64::MAX);
        assert_eq!(e.action, JobAction::Completed);
        assert_eq!(e.workflow_job.runner(), None);
    }

    #[test]
    fn runner_id_zero_means_no_runner() {
        let body = br#"{"action":"completed","workflow_job":{"id":1,"run_id":1,"labels":[],
            "runner_id":0,"runner_name":"x"}}"#;
        let Event::WorkflowJob(e) = Event::parse("workflow_job", body).expect("parse") else {
            panic!("not a job")
        };
        assert_eq!(e.workflow_job.runner(), None);
    }

    #[test]
    fn newest_time_is_the_latest_readable_one() {
        let body = br#"{"action":"completed","workflow_job":{"id":1,"run_id":1,
            "created_at":"2024-05-01T09:00:00Z","started_at":"2024-05-01T09:30:00Z",
            "completed_at":"not a time"},"installation":{"id":42}}"#;
        let Event::WorkflowJob(e) = Event::parse("workflow_job", body).expect("parse") else {
            panic!("not a job")
        };
        assert_eq!(e.workflow_job.newest_time(), Some(1_714_555_800));
        assert_eq!(e.installation, Some(Installation { id: 42 }));
        let bare = br#"{"action":"queued","workflow_job":{"id":1,"run_id":1}}"#;
        let Event::WorkflowJob(e) = Event::parse("workflow_job", bare).expect("parse") else {
            panic!("not a job")
        };
        assert_eq!(e.workflow_job.newest_time(), None);
        assert_eq!(e.installation, None);
    }

    #[test]
    fn unknown_action_is_other() {
        let body = br#"{"action":"started","workflow_job":{"id":1,"run_id":1}}"#;
        let Event::WorkflowJob(e) = Event::parse("workflow_job", body).expect("parse") else {
            panic!("not a job")
        };
        assert_eq!(e.action, JobAction::Other("started".into()));
    }
}
