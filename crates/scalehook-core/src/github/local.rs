//! [`LocalGitHub`]: GitHub in memory, for `serve`, `replay`, `simulate` and the tests, with
//! a call hook for interleaving harnesses.

use super::{
    DeliveriesSource, Delivery, DeliveryPage, GitHub, GitHubError, JitRunner, JobLookup, JobStatus,
    RateLimit, Runner, RunnerRemoval,
};
use crate::config::PoolConfig;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One call the service made to [`LocalGitHub`], as its call hook and [`LocalGitHub::calls`]
/// see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalCall {
    Runners,
    Runner(u64),
    RunnersNamed(String),
    RunnersInGroup(u64),
    PoolRunnerGroup(String),
    RemoveRunner(u64),
    Job(u64),
    Deliveries,
    Redeliver(u64),
    JitRunner(String),
}

/// What GitHub may do at a call, before answering it (see [`LocalGitHub::before_each_call`]).
pub type CallHook = dyn Fn(&LocalGitHub, u64, &LocalCall) + Send + Sync;

#[derive(Default)]
struct HookSlot(Option<Arc<CallHook>>);

impl std::fmt::Debug for HookSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(<hook>)"
        } else {
            "None"
        })
    }
}

/// Runners kept in memory: what `serve`, `replay`, `simulate` and the tests use as GitHub.
/// Tests drive it (`register`, `assign_job`, `finish_job`, ...) the way GitHub's runner
/// service would.
///
/// **Interleavings.** [`LocalGitHub::before_each_call`] installs a hook that runs at every
/// trait call, before the call is answered and with no lock held, given the call's number
/// (0, 1, ...) and what it is ([`LocalCall`]). The hook may do to this GitHub whatever
/// GitHub may do meanwhile: register a runner ([`LocalGitHub::register`]), give an idle
/// runner a job ([`LocalGitHub::assign_job`]), finish one ([`LocalGitHub::finish_job`]),
/// record a delivery nobody answered ([`LocalGitHub::lose_delivery`]). A harness that
/// explores "an event at call k" runs the scenario once per k:
///
/// ```
/// # use scalehook_core::github::{LocalGitHub, LocalCall};
/// let github = LocalGitHub::new();
/// let at = 2; // inject at the third call
/// github.before_each_call(move |gh, n, _call| {
///     if n == at {
///         gh.register("linux-i-9", &["self-hosted".into()]);
///         gh.assign_job("linux-i-9", 42);
///     }
/// });
/// ```
#[derive(Debug, Default)]
pub struct LocalGitHub {
    inner: Mutex<LocalInner>,
    requests: AtomicU64,
    hook: Mutex<HookSlot>,
}

#[derive(Debug, Default)]
struct LocalInner {
    next_id: u64,
    runners: Vec<Runner>,
    /// Runner id -> its runner group (absent: the default group 1).
    groups: HashMap<u64, u64>,
    /// Runner groups by name (besides `Default` = 1).
    group_names: Vec<(String, u64)>,
    jobs: HashMap<u64, JobStatus>,
    /// Repositories (lower case `owner/name`) the installation cannot see.
    hidden_repositories: Vec<String>,
    /// Runners whose registration was removed (by name), for tests.
    removed: Vec<String>,
    /// The hook's deliveries, any order (listed newest first by id).
    deliveries: Vec<Delivery>,
    /// `deliveries_source()`'s answer; `app-hook` unless set.
    deliveries_source: Option<String>,
    /// Ids of deliveries scalehook asked to redeliver, in order (accepted requests only).
    redelivered: Vec<u64>,
    /// Delivery id -> how many more redelivery requests for it fail (GitHub answering 5xx).
    failing_redeliveries: HashMap<u64, u32>,
    /// Job ids asked of the jobs API, in order.
    jobs_asked: Vec<u64>,
    /// Every call, in order.
    calls: Vec<LocalCall>,
    /// Runners GitHub assigns a job at the moment their removal is asked (the race between
    /// listing a runner idle and deregistering it).
    assigned_on_removal: Vec<String>,
}

/// Deliveries per page of [`LocalGitHub::deliveries`] (GitHub's `per_page` maximum).
pub const LOCAL_DELIVERIES_PER_PAGE: usize = 100;

/// GitHub's default runner group.
pub const DEFAULT_RUNNER_GROUP: u64 = 1;

impl LocalGitHub {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LocalInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `hook` at every later call, before it is answered (see the type's docs). One
    /// hook at a time; a new one replaces the last.
    pub fn before_each_call(
        &self,
        hook: impl Fn(&LocalGitHub, u64, &LocalCall) + Send + Sync + 'static,
    ) {
        self.hook.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(Arc::new(hook));
    }

    /// Registers an online, idle runner in the default group; returns its id.
    pub fn register(&self, name: &str, labels: &[String]) -> u64 {
        self.register_in_group(name, labels, DEFAULT_RUNNER_GROUP)
    }

    /// Registers an online, idle runner in runner group `group`; returns its id.
    pub fn register_in_group(&self, name: &str, labels: &[String], group: u64) -> u64 {
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
        g.groups.insert(id, group);
        id
    }

    /// Creates runner group `name` (what `pool_runner_group` finds); returns its id.
    pub fn add_runner_group(&self, name: &str) -> u64 {
        let mut g = self.lock();
        let id = 2 + g.group_names.len() as u64;
        g.group_names.push((name.to_string(), id));
        id
    }

    /// Marks a runner busy or idle (GitHub assigning it a job, or the job ending).
    pub fn set_busy(&self, name: &str, busy: bool) {
        let mut g = self.lock();
        for r in g.runners.iter_mut().filter(|r| r.name == name) {
            r.busy = busy;
        }
    }

    /// GitHub gives runner `name` job `job_id`: the runner is busy and the jobs API says
    /// `in_progress` on it. False (nothing done) when no such runner is registered, online
    /// and idle.
    pub fn assign_job(&self, name: &str, job_id: u64) -> bool {
        let mut g = self.lock();
        let Some(r) = g
            .runners
            .iter_mut()
            .find(|r| r.name == name && r.online && !r.busy)
        else {
            return false;
        };
        r.busy = true;
        g.jobs.insert(
            job_id,
            JobStatus {
                status: "in_progress".into(),
                runner_name: Some(name.to_string()),
            },
        );
        true
    }

    /// Job `job_id` ends: the jobs API says `completed` and its runner is idle again (an
    /// ephemeral runner then leaves: [`LocalGitHub::unregister`]). Returns the runner's name.
    pub fn finish_job(&self, job_id: u64) -> Option<String> {
        let mut g = self.lock();
        let job = g.jobs.get_mut(&job_id)?;
        job.status = "completed".into();
        let name = job.runner_name.clone()?;
        for r in g.runners.iter_mut().filter(|r| r.name == name) {
            r.busy = false;
        }
        Some(name)
    }

    /// A `workflow_job` delivery nobody answered (status 0), as a lost delivery shows in the
    /// hook's log; returns its id.
    pub fn lose_delivery(&self, guid: &str, action: &str, delivered_at: u64) -> u64 {
        let mut g = self.lock();
        let id = g.deliveries.iter().map(|d| d.id).max().unwrap_or(0) + 1;
        g.deliveries.push(Delivery {
            id,
            guid: guid.to_string(),
            delivered_at,
            event: "workflow_job".into(),
            action: Some(action.to_string()),
            status_code: 0,
            redelivery: false,
        });
        id
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

    /// The installation cannot see `repository` (`owner/name`): its jobs are
    /// [`JobLookup::NotVisible`].
    pub fn hide_repository(&self, repository: &str) {
        self.lock()
            .hidden_repositories
            .push(repository.to_ascii_lowercase());
    }

    /// What [`GitHub::deliveries_source`] answers (`app-hook` unless set).
    pub fn set_deliveries_source(&self, source: &DeliveriesSource) {
        self.lock().deliveries_source = Some(source.to_string());
    }

    /// Adds a delivery of the hook (what `GET .../hook/deliveries` lists).
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

    /// Every call scalehook made, in order.
    pub fn calls(&self) -> Vec<LocalCall> {
        self.lock().calls.clone()
    }

    /// Names of runners whose registration scalehook removed, in order.
    pub fn removed(&self) -> Vec<String> {
        self.lock().removed.clone()
    }

    /// A copy of the registered runners.
    pub fn registered(&self) -> Vec<Runner> {
        self.lock().runners.clone()
    }

    /// Counts the call, runs the hook (no lock held), then records it.
    fn count(&self, call: LocalCall) {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        let hook = self
            .hook
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone();
        if let Some(hook) = hook {
            hook(self, n, &call);
        }
        self.lock().calls.push(call);
    }

    fn group_by_name(&self, name: &str) -> Option<u64> {
        if name.eq_ignore_ascii_case("default") {
            return Some(DEFAULT_RUNNER_GROUP);
        }
        let g = self.lock();
        g.group_names
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, id)| *id)
    }
}

#[async_trait]
impl GitHub for LocalGitHub {
    async fn runners(&self) -> Result<Vec<Runner>, GitHubError> {
        self.count(LocalCall::Runners);
        Ok(self.lock().runners.clone())
    }

    async fn runner(&self, runner_id: u64) -> Result<Option<Runner>, GitHubError> {
        self.count(LocalCall::Runner(runner_id));
        Ok(self
            .lock()
            .runners
            .iter()
            .find(|r| r.id == runner_id)
            .cloned())
    }

    async fn runners_named(&self, name: &str) -> Result<Vec<Runner>, GitHubError> {
        self.count(LocalCall::RunnersNamed(name.to_string()));
        Ok(self
            .lock()
            .runners
            .iter()
            .filter(|r| r.name.eq_ignore_ascii_case(name))
            .cloned()
            .collect())
    }

    async fn runners_in_group(&self, group_id: u64) -> Result<Vec<Runner>, GitHubError> {
        self.count(LocalCall::RunnersInGroup(group_id));
        let g = self.lock();
        Ok(g.runners
            .iter()
            .filter(|r| g.groups.get(&r.id).copied().unwrap_or(DEFAULT_RUNNER_GROUP) == group_id)
            .cloned()
            .collect())
    }

    async fn pool_runner_group(&self, pool: &PoolConfig) -> Result<u64, GitHubError> {
        let Some(name) = pool.runner_group_to_look_up() else {
            return Ok(pool.runner_group_id);
        };
        self.count(LocalCall::PoolRunnerGroup(name.to_string()));
        self.group_by_name(name)
            .ok_or_else(|| unknown_group(pool, name))
    }

    async fn remove_runner(&self, runner_id: u64) -> Result<RunnerRemoval, GitHubError> {
        self.count(LocalCall::RemoveRunner(runner_id));
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

    async fn job(&self, repo: &str, job_id: u64) -> Result<Option<JobStatus>, GitHubError> {
        match self.job_state(repo, job_id).await? {
            JobLookup::Found(s) => Ok(Some(s)),
            JobLookup::Gone => Ok(None),
            JobLookup::NotVisible => Err(not_visible(repo)),
        }
    }

    async fn job_state(&self, repo: &str, job_id: u64) -> Result<JobLookup, GitHubError> {
        self.count(LocalCall::Job(job_id));
        let mut g = self.lock();
        g.jobs_asked.push(job_id);
        if let Some(s) = g.jobs.get(&job_id) {
            return Ok(JobLookup::Found(s.clone()));
        }
        let repo = repo.to_ascii_lowercase();
        Ok(if g.hidden_repositories.contains(&repo) {
            JobLookup::NotVisible
        } else {
            JobLookup::Gone
        })
    }

    fn deliveries_source(&self) -> String {
        self.lock()
            .deliveries_source
            .clone()
            .unwrap_or_else(|| DeliveriesSource::AppHook.to_string())
    }

    async fn deliveries(&self, cursor: Option<&str>) -> Result<DeliveryPage, GitHubError> {
        self.count(LocalCall::Deliveries);
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
        self.count(LocalCall::Redeliver(delivery_id));
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
        self.count(LocalCall::JitRunner(name.to_string()));
        let group = match pool.runner_group_to_look_up() {
            None => pool.runner_group_id,
            Some(n) => self
                .group_by_name(n)
                .ok_or_else(|| unknown_group(pool, n))?,
        };
        let mut g = self.lock();
        g.next_id += 1;
        let runner_id = g.next_id;
        g.runners.push(Runner {
            id: runner_id,
            name: name.to_string(),
            online: false,
            busy: false,
            labels: pool.labels.clone(),
        });
        g.groups.insert(runner_id, group);
        Ok(JitRunner {
            runner_id,
            name: name.to_string(),
            encoded_jit_config: format!("local-jit-{runner_id}"),
        })
    }

    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            requests: self.requests.load(Ordering::Relaxed),
            ..RateLimit::default()
        }
    }
}

/// The error for a pool whose `runner_group` GitHub does not know.
pub fn unknown_group(pool: &PoolConfig, name: &str) -> GitHubError {
    GitHubError::Rejected(format!(
        "pool {:?}: runner group {name:?} does not exist in the organization (runner_group; set runner_group_id or create the group)",
        pool.name
    ))
}

/// The error `job()` gives for a job of a repository the installation cannot see.
pub fn not_visible(repository: &str) -> GitHubError {
    GitHubError::Rejected(format!(
        "repository {repository:?} is not visible to the App's installation: the job's state is unknown"
    ))
}
