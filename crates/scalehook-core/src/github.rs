//! GitHub as scalehook needs it, behind one small trait: the runners registered for the
//! App's installation, removing a runner's registration, the state of one job, failed
//! webhook deliveries and their redelivery, and just-in-time runner configurations.
//!
//! The core never speaks HTTP: `scalehook-github` implements [`GitHub`] over the REST API
//! with a GitHub App; [`NoGitHub`] is the webhook-only mode (no App configured), where
//! scale-in is not runner-safe and lost deliveries are not repaired; [`LocalGitHub`] keeps
//! runners in memory for `serve`, `replay`, `simulate` and tests.

use crate::config::PoolConfig;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A self-hosted runner as GitHub lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    pub id: u64,
    pub name: String,
    /// `status == "online"`.
    pub online: bool,
    /// Running a job now (GitHub's `busy`).
    pub busy: bool,
    pub labels: Vec<String>,
}

impl Runner {
    /// scalehook's naming convention: a pool's runners are named `<pool>-<instance key>[-n]`
    /// (the instance key is the EC2 instance id, the VM computer name, or the local id).
    pub fn in_pool(&self, pool: &str) -> bool {
        self.name.len() > pool.len()
            && self.name.as_bytes()[pool.len()] == b'-'
            && self.name[..pool.len()].eq_ignore_ascii_case(pool)
    }
}

/// What GitHub did with a request to remove a runner's registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerRemoval {
    /// 204: the registration is gone; the runner can no longer take a job.
    Removed,
    /// 422: GitHub refuses to remove a runner that is running a job.
    Busy,
    /// 404: there was no such runner (already removed, or an ephemeral runner that exited).
    Gone,
}

/// A job's state as the jobs API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// `queued`, `in_progress`, `completed`, `waiting`, `requested` or `pending`, as sent.
    pub status: String,
    pub runner_name: Option<String>,
}

/// One webhook delivery of the App's hook that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The delivery's numeric id (what the redeliver call takes).
    pub id: u64,
    /// `X-GitHub-Delivery`.
    pub guid: String,
    /// Unix seconds.
    pub delivered_at: u64,
    pub event: String,
    pub action: Option<String>,
    /// The HTTP status scalehook (or nobody) answered; 0 when the request failed.
    pub status_code: u16,
    /// A redelivery itself (GitHub's `redelivery` flag).
    pub redelivery: bool,
}

/// A page of deliveries, newest first, and where the next (older) page starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryPage {
    pub deliveries: Vec<Delivery>,
    /// Opaque cursor for the next, older page; `None` at the end.
    pub next: Option<String>,
}

/// A just-in-time runner: registered at once (offline until it starts), ephemeral.
#[derive(Clone, PartialEq, Eq)]
pub struct JitRunner {
    pub runner_id: u64,
    pub name: String,
    /// The base64 configuration the runner takes (`ACTIONS_RUNNER_INPUT_JITCONFIG` or
    /// `--jitconfig`). A credential: never logged.
    pub encoded_jit_config: String,
}

impl std::fmt::Debug for JitRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitRunner")
            .field("runner_id", &self.runner_id)
            .field("name", &self.name)
            .field("encoded_jit_config", &"<redacted>")
            .finish()
    }
}

/// What the GitHub calls of one pass cost, for reports and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// `x-ratelimit-remaining` of the last answer, when one was seen.
    pub remaining: Option<u64>,
    /// Requests made by this client since it was built.
    pub requests: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitHubError {
    /// Network failure, timeout or a 5xx after bounded retries.
    #[error("github unavailable: {0}")]
    Unavailable(String),
    /// Rate limited (403/429 with a reset or `retry-after` beyond the call's budget).
    #[error("github rate limit: retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// The App's credentials were refused (401), or it lacks a permission (403).
    #[error("github refused the credentials: {0}")]
    Unauthorized(String),
    /// Anything else GitHub refused (4xx), with its message (never a credential).
    #[error("github rejected the request: {0}")]
    Rejected(String),
}

/// GitHub through a GitHub App. Every call is bounded by the implementation's timeout.
#[async_trait]
pub trait GitHub: Send + Sync {
    /// False in webhook-only mode: the service then skips every GitHub step.
    fn enabled(&self) -> bool {
        true
    }
    /// Every self-hosted runner of the installation's scope (organization or repository),
    /// all pages. The core keeps a pool's runners with [`Runner::in_pool`].
    async fn runners(&self) -> Result<Vec<Runner>, GitHubError>;
    /// Removes a runner's registration. A busy runner is refused ([`RunnerRemoval::Busy`]).
    async fn remove_runner(&self, runner_id: u64) -> Result<RunnerRemoval, GitHubError>;
    /// A job's state from the jobs API (`repository` is `owner/name`); `None` if GitHub has
    /// no such job (404).
    async fn job(&self, repository: &str, job_id: u64) -> Result<Option<JobStatus>, GitHubError>;
    /// One page of the App hook's deliveries, newest first, starting at `cursor`.
    async fn deliveries(&self, cursor: Option<&str>) -> Result<DeliveryPage, GitHubError>;
    /// Asks GitHub to deliver a delivery again (to scalehook's webhook URL).
    async fn redeliver(&self, delivery_id: u64) -> Result<(), GitHubError>;
    /// Registers an ephemeral just-in-time runner named `name` with the pool's labels and
    /// runner group, and returns its configuration.
    async fn jit_runner(&self, pool: &PoolConfig, name: &str) -> Result<JitRunner, GitHubError>;
    /// Calls made and the last rate-limit figure seen.
    fn rate_limit(&self) -> RateLimit {
        RateLimit::default()
    }
}

/// Webhook-only mode: no GitHub App. Every call is refused; [`GitHub::enabled`] is false so
/// the service never makes one.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoGitHub;

fn disabled<T>() -> Result<T, GitHubError> {
    Err(GitHubError::Rejected("no GitHub App is configured".into()))
}

#[async_trait]
impl GitHub for NoGitHub {
    fn enabled(&self) -> bool {
        false
    }
    async fn runners(&self) -> Result<Vec<Runner>, GitHubError> {
        disabled()
    }
    async fn remove_runner(&self, _runner_id: u64) -> Result<RunnerRemoval, GitHubError> {
        disabled()
    }
    async fn job(&self, _repo: &str, _job_id: u64) -> Result<Option<JobStatus>, GitHubError> {
        disabled()
    }
    async fn deliveries(&self, _cursor: Option<&str>) -> Result<DeliveryPage, GitHubError> {
        disabled()
    }
    async fn redeliver(&self, _delivery_id: u64) -> Result<(), GitHubError> {
        disabled()
    }
    async fn jit_runner(&self, _pool: &PoolConfig, _name: &str) -> Result<JitRunner, GitHubError> {
        disabled()
    }
}

/// Runners kept in memory: what `serve`, `replay`, `simulate` and the tests use as GitHub.
/// Tests drive it (`register`, `assign`, `finish`) the way GitHub's runner service would.
#[derive(Debug, Default)]
pub struct LocalGitHub {
    inner: Mutex<LocalInner>,
    requests: AtomicU64,
}

#[derive(Debug, Default)]
struct LocalInner {
    next_id: u64,
    runners: Vec<Runner>,
    jobs: HashMap<u64, JobStatus>,
    /// Runners whose registration was removed (by name), for tests.
    removed: Vec<String>,
    /// The hook's deliveries, any order (listed newest first by id).
    deliveries: Vec<Delivery>,
    /// Ids of deliveries scalehook asked to redeliver, in order (accepted requests only).
    redelivered: Vec<u64>,
    /// Delivery id -> how many more redelivery requests for it fail (GitHub answering 5xx).
    failing_redeliveries: HashMap<u64, u32>,
    /// Job ids asked of the jobs API, in order.
    jobs_asked: Vec<u64>,
    /// Runners GitHub assigns a job at the moment their removal is asked (the race between
    /// listing a runner idle and deregistering it).
    assigned_on_removal: Vec<String>,
}

/// Deliveries per page of [`LocalGitHub::deliveries`] (GitHub's `per_page` maximum).
pub const LOCAL_DELIVERIES_PER_PAGE: usize = 100;

impl LocalGitHub {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LocalInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an online, idle runner; returns its id.
    pub fn register(&self, name: &str, labels: &[String]) -> u64 {
        let mut g = self.lock();
        g.next_id += 1;
        let id = g.next_id;
        g.runners.push(Runner {
            id,
            name: name.to_string(),
            online: true,
            busy: false,
            labels: labels.to_vec(),
        });
        id
    }

    /// Marks a runner busy or idle (GitHub assigning it a job, or the job ending).
    pub fn set_busy(&self, name: &str, busy: bool) {
        let mut g = self.lock();
        for r in g.runners.iter_mut().filter(|r| r.name == name) {
            r.busy = busy;
        }
    }

    /// GitHub will assign a job to runner `name` just as its removal is asked, after it was
    /// listed idle: the removal is then refused as busy (422), as GitHub refuses it.
    pub fn assign_on_removal(&self, name: &str) {
        self.lock().assigned_on_removal.push(name.to_string());
    }

    /// Registers an idle runner `<pool>-<instance key>` for each instance that has none (the
    /// naming convention JIT provisioning follows); returns the names, one per instance.
    pub fn register_instances(
        &self,
        pool: &PoolConfig,
        instances: &[crate::fleet::Instance],
    ) -> Vec<String> {
        let mut names = Vec::with_capacity(instances.len());
        for i in instances {
            let name = format!("{}-{}", pool.name, i.runner_key);
            if !self.lock().runners.iter().any(|r| r.name == name) {
                self.register(&name, &pool.labels);
            }
            names.push(name);
        }
        names
    }

    /// Marks a runner offline (its instance stopped) without removing it.
    pub fn set_online(&self, name: &str, online: bool) {
        let mut g = self.lock();
        for r in g.runners.iter_mut().filter(|r| r.name == name) {
            r.online = online;
        }
    }

    /// Removes a runner as an ephemeral runner's exit does.
    pub fn unregister(&self, name: &str) {
        self.lock().runners.retain(|r| r.name != name);
    }

    /// Sets what the jobs API answers for a job.
    pub fn set_job(&self, job_id: u64, status: &str, runner_name: Option<&str>) {
        self.lock().jobs.insert(
            job_id,
            JobStatus {
                status: status.to_string(),
                runner_name: runner_name.map(str::to_string),
            },
        );
    }

    /// Adds a delivery of the App's hook (what `GET /app/hook/deliveries` lists).
    pub fn add_delivery(&self, delivery: Delivery) {
        self.lock().deliveries.push(delivery);
    }

    /// Ids of the deliveries scalehook asked GitHub to redeliver, in order (requests GitHub
    /// accepted; see [`LocalGitHub::fail_redelivery`]).
    pub fn redelivered(&self) -> Vec<u64> {
        self.lock().redelivered.clone()
    }

    /// The next `times` requests to redeliver delivery `id` fail as a 5xx does
    /// ([`GitHubError::Unavailable`]); `u32::MAX`: every request.
    pub fn fail_redelivery(&self, id: u64, times: u32) {
        self.lock().failing_redeliveries.insert(id, times);
    }

    /// Job ids scalehook asked the jobs API about, in order.
    pub fn jobs_asked(&self) -> Vec<u64> {
        self.lock().jobs_asked.clone()
    }

    /// Names of runners whose registration scalehook removed, in order.
    pub fn removed(&self) -> Vec<String> {
        self.lock().removed.clone()
    }

    /// A copy of the registered runners.
    pub fn registered(&self) -> Vec<Runner> {
        self.lock().runners.clone()
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl GitHub for LocalGitHub {
    async fn runners(&self) -> Result<Vec<Runner>, GitHubError> {
        self.count();
        Ok(self.lock().runners.clone())
    }

    async fn remove_runner(&self, runner_id: u64) -> Result<RunnerRemoval, GitHubError> {
        self.count();
        let mut g = self.lock();
        let Some(i) = g.runners.iter().position(|r| r.id == runner_id) else {
            return Ok(RunnerRemoval::Gone);
        };
        if let Some(k) = g
            .assigned_on_removal
            .iter()
            .position(|n| *n == g.runners[i].name)
        {
            g.assigned_on_removal.remove(k);
            g.runners[i].busy = true;
        }
        if g.runners[i].busy {
            return Ok(RunnerRemoval::Busy);
        }
        let r = g.runners.remove(i);
        g.removed.push(r.name);
        Ok(RunnerRemoval::Removed)
    }

    async fn job(&self, _repo: &str, job_id: u64) -> Result<Option<JobStatus>, GitHubError> {
        self.count();
        let mut g = self.lock();
        g.jobs_asked.push(job_id);
        Ok(g.jobs.get(&job_id).cloned())
    }

    async fn deliveries(&self, cursor: Option<&str>) -> Result<DeliveryPage, GitHubError> {
        self.count();
        // Like GitHub's, the cursor names a place in the list (the last delivery of the page
        // before), so it stays valid while newer deliveries arrive.
        let below: Option<u64> = match cursor {
            None => None,
            Some(c) => Some(
                c.parse()
                    .map_err(|_| GitHubError::Rejected(format!("bad cursor {c:?}")))?,
            ),
        };
        let mut all: Vec<Delivery> = self
            .lock()
            .deliveries
            .iter()
            .filter(|d| below.is_none_or(|b| d.id < b))
            .cloned()
            .collect();
        all.sort_by_key(|d| std::cmp::Reverse(d.id));
        let more = all.len() > LOCAL_DELIVERIES_PER_PAGE;
        all.truncate(LOCAL_DELIVERIES_PER_PAGE);
        let next = all.last().filter(|_| more).map(|d| d.id.to_string());
        Ok(DeliveryPage {
            deliveries: all,
            next,
        })
    }

    async fn redeliver(&self, delivery_id: u64) -> Result<(), GitHubError> {
        self.count();
        let mut g = self.lock();
        if !g.deliveries.iter().any(|d| d.id == delivery_id) {
            return Err(GitHubError::Rejected("no such delivery".into()));
        }
        if let Some(left) = g.failing_redeliveries.get_mut(&delivery_id) {
            if *left > 0 {
                *left = left.saturating_sub(u32::from(*left != u32::MAX));
                return Err(GitHubError::Unavailable("502 Bad Gateway".into()));
            }
        }
        g.redelivered.push(delivery_id);
        Ok(())
    }

    async fn jit_runner(&self, pool: &PoolConfig, name: &str) -> Result<JitRunner, GitHubError> {
        let runner_id = {
            let mut g = self.lock();
            g.next_id += 1;
            let id = g.next_id;
            g.runners.push(Runner {
                id,
                name: name.to_string(),
                online: false,
                busy: false,
                labels: pool.labels.clone(),
            });
            id
        };
        self.count();
        Ok(JitRunner {
            runner_id,
            name: name.to_string(),
            encoded_jit_config: format!("local-jit-{runner_id}"),
        })
    }

    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            remaining: None,
            requests: self.requests.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_membership_by_name_prefix() {
        let r = |name: &str| Runner {
            id: 1,
            name: name.into(),
            online: true,
            busy: false,
            labels: vec![],
        };
        assert!(r("linux-x64-i-0abc").in_pool("linux-x64"));
        assert!(r("Linux-X64-i-0abc").in_pool("linux-x64"));
        assert!(!r("linux-x64").in_pool("linux-x64"), "the prefix alone");
        assert!(!r("linux-x64gpu-i-0abc").in_pool("linux-x64"));
        assert!(!r("gpu-i-0abc").in_pool("linux-x64"));
    }

    #[test]
    fn jit_config_is_redacted() {
        let j = JitRunner {
            runner_id: 7,
            name: "p-i-1".into(),
            encoded_jit_config: "c2VjcmV0".into(),
        };
        assert!(!format!("{j:?}").contains("c2VjcmV0"));
    }

    #[tokio::test]
    async fn local_refuses_busy_removal() {
        let g = LocalGitHub::new();
        let id = g.register("p-1", &[]);
        g.set_busy("p-1", true);
        assert_eq!(g.remove_runner(id).await, Ok(RunnerRemoval::Busy));
        g.set_busy("p-1", false);
        g.assign_on_removal("p-1");
        assert_eq!(
            g.remove_runner(id).await,
            Ok(RunnerRemoval::Busy),
            "assigned just now"
        );
        g.set_busy("p-1", false);
        assert_eq!(g.remove_runner(id).await, Ok(RunnerRemoval::Removed));
        assert_eq!(g.remove_runner(id).await, Ok(RunnerRemoval::Gone));
        assert_eq!(g.removed(), vec!["p-1".to_string()]);
    }
}
