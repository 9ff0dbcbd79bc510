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

/// scalehook's naming rule, the one the boot scripts, JIT minting, the matcher and the
/// read before removal share: the runner of instance key `instance_key` in `pool` is named
/// `<pool>-<instance key>`, and with several runners per instance `<pool>-<instance key>-<n>`
/// for `n` in `1..=runners_per_instance`. The first name is the one JIT minting uses.
pub fn runner_names(pool: &PoolConfig, instance_key: &str) -> Vec<String> {
    let base = format!("{}-{}", pool.name, instance_key);
    let rpi = pool.runners_per_instance.max(1);
    let mut names = vec![base.clone()];
    if rpi > 1 {
        names.extend((1..=rpi).map(|n| format!("{base}-{n}")));
    }
    names
}

impl Runner {
    /// scalehook's naming convention ([`runner_names`]): a pool's runners are named
    /// `<pool>-<instance key>[-n]` (the instance key is the EC2 instance id, the VM computer
    /// name, or the local id). Pool names never begin with another pool's name and `-`
    /// (refused at start-up), so a name belongs to one pool at most.
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

/// What the jobs API says about a job, with "not found" split by whether the installation
/// can see the repository at all: for an installation token GitHub answers 404 both for a
/// job that does not exist and for a repository outside the installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobLookup {
    /// 200: the job's state.
    Found(JobStatus),
    /// 404 for a repository the installation can see: GitHub has no such job (deleted with
    /// its run, or never existed). Safe to count as completed.
    Gone,
    /// 404 and the repository itself answers 404 to the installation: the job's state is
    /// unknown, never "completed".
    NotVisible,
}

/// Where failed webhook deliveries are read and redelivered: the webhook scalehook's
/// deliveries come from (`[github] hook_id`, see `config::DeliveriesSource`).
pub use crate::config::DeliveriesSource;

/// One webhook delivery that did not succeed.
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
    /// Secondary rate limits met since the client was built (403/429 whose message says
    /// "secondary rate limit", or with `retry-after`); each one blocks every call for at
    /// least 60 s.
    pub secondary_limited: u64,
    /// While the client is blocked by a rate limit: Unix seconds when it may call again.
    pub blocked_until: Option<u64>,
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
    /// One runner by id, `None` when GitHub has no such runner (404): the read the core
    /// makes right before removing an instance whose runner id it saved at JIT minting.
    /// One request. The default lists every runner ([`GitHub::runners`]).
    async fn runner(&self, runner_id: u64) -> Result<Option<Runner>, GitHubError> {
        Ok(self
            .runners()
            .await?
            .into_iter()
            .find(|r| r.id == runner_id))
    }
    /// The runners named exactly `name` (GitHub's documented `name` filter of the list
    /// endpoint is an exact match, not a prefix: ask once per `<pool>-<instance key>[-n]`).
    /// One request per 100 matches. The default lists every runner.
    async fn runners_named(&self, name: &str) -> Result<Vec<Runner>, GitHubError> {
        Ok(self
            .runners()
            .await?
            .into_iter()
            .filter(|r| r.name.eq_ignore_ascii_case(name))
            .collect())
    }
    /// The runners of runner group `group_id` (organization scope; a repository has no
    /// runner groups, so there it is every runner of the repository). One request per 100
    /// runners of the group. The default lists every runner.
    async fn runners_in_group(&self, group_id: u64) -> Result<Vec<Runner>, GitHubError> {
        let _ = group_id;
        self.runners().await
    }
    /// The id of the runner group `pool`'s runners join: its `runner_group_id`, or its
    /// `runner_group` looked up by name (cached), or the default group 1. An unknown group
    /// name is [`GitHubError::Rejected`] naming it.
    async fn pool_runner_group(&self, pool: &PoolConfig) -> Result<u64, GitHubError> {
        match pool.runner_group_to_look_up() {
            None => Ok(pool.runner_group_id),
            Some(name) => Err(GitHubError::Rejected(format!(
                "pool {:?}: runner group {name:?} cannot be looked up without a GitHub App",
                pool.name
            ))),
        }
    }
    /// A job's state from the jobs API (`repository` is `owner/name`); `None` if GitHub has
    /// no such job (404). Prefer [`GitHub::job_state`]: `GitHubApp` answers a job of a
    /// repository the installation cannot see with [`GitHubError::Rejected`] here (unknown,
    /// never `None`).
    async fn job(&self, repository: &str, job_id: u64) -> Result<Option<JobStatus>, GitHubError>;
    /// A job's state from the jobs API, telling a job GitHub no longer has
    /// ([`JobLookup::Gone`], safe to count as completed) from one in a repository the
    /// installation cannot see ([`JobLookup::NotVisible`]: unknown). The default maps
    /// [`GitHub::job`] (for implementations where every repository is visible).
    async fn job_state(&self, repository: &str, job_id: u64) -> Result<JobLookup, GitHubError> {
        Ok(match self.job(repository, job_id).await? {
            Some(s) => JobLookup::Found(s),
            None => JobLookup::Gone,
        })
    }
    /// Which webhook's deliveries [`GitHub::deliveries`] reads: `app-hook`,
    /// `org-hook:<id>` or `repo-hook:<id>` (what `/status` shows); `none` without an App.
    fn deliveries_source(&self) -> String {
        "app-hook".to_string()
    }
    /// One page of the configured webhook's deliveries ([`GitHub::deliveries_source`]),
    /// newest first, starting at `cursor`.
    async fn deliveries(&self, cursor: Option<&str>) -> Result<DeliveryPage, GitHubError>;
    /// Asks GitHub to deliver a delivery of that webhook again (to its URL).
    async fn redeliver(&self, delivery_id: u64) -> Result<(), GitHubError>;
    /// Registers an ephemeral just-in-time runner named `name` with the pool's labels and
    /// runner group, and returns its configuration.
    async fn jit_runner(&self, pool: &PoolConfig, name: &str) -> Result<JitRunner, GitHubError>;
    /// Re-runs one job of a workflow run, and the jobs that depend on it (`POST
    /// /repos/{owner}/{repo}/actions/jobs/{job_id}/rerun`): a job interrupted with its
    /// instance. GitHub re-runs jobs of a finished run only (and within 30 days):
    /// [`Rerun::NotYet`] while the run goes on, so the caller asks again later. The default
    /// refuses, for implementations that cannot re-run.
    async fn rerun_job(&self, repository: &str, job_id: u64) -> Result<Rerun, GitHubError> {
        let _ = (repository, job_id);
        Err(GitHubError::Rejected(
            "re-running jobs is not supported here".into(),
        ))
    }
    /// Calls made and the last rate-limit figure seen.
    fn rate_limit(&self) -> RateLimit {
        RateLimit::default()
    }
}

/// What GitHub did with a re-run request ([`GitHub::rerun_job`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rerun {
    /// The job is queued again (201).
    Started,
    /// Refused for now (403): its workflow run has not completed yet.
    NotYet,
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
    async fn runner(&self, _runner_id: u64) -> Result<Option<Runner>, GitHubError> {
        disabled()
    }
    async fn runners_named(&self, _name: &str) -> Result<Vec<Runner>, GitHubError> {
        disabled()
    }
    async fn runners_in_group(&self, _group_id: u64) -> Result<Vec<Runner>, GitHubError> {
        disabled()
    }
    async fn pool_runner_group(&self, _pool: &PoolConfig) -> Result<u64, GitHubError> {
        disabled()
    }
    async fn job(&self, _repo: &str, _job_id: u64) -> Result<Option<JobStatus>, GitHubError> {
        disabled()
    }
    async fn job_state(&self, _repo: &str, _job_id: u64) -> Result<JobLookup, GitHubError> {
        disabled()
    }
    fn deliveries_source(&self) -> String {
        "none".to_string()
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

mod local;
pub use local::{
    not_visible, unknown_group, CallHook, LocalCall, LocalGitHub, DEFAULT_RUNNER_GROUP,
    LOCAL_DELIVERIES_PER_PAGE,
};

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
    fn runner_names_follow_the_one_rule() {
        assert_eq!(runner_names(&pool(""), "i-0abc"), vec!["linux-i-0abc"]);
        assert_eq!(
            runner_names(&pool("runners_per_instance = 2"), "vm7"),
            vec!["linux-vm7", "linux-vm7-1", "linux-vm7-2"]
        );
        let r = Runner {
            id: 1,
            name: runner_names(&pool(""), "i-0abc").swap_remove(0),
            online: true,
            busy: false,
            labels: vec![],
        };
        assert!(r.in_pool("linux"));
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

    fn pool(extra: &str) -> PoolConfig {
        crate::Config::from_toml(&format!(
            "[[pools]]\nname = \"linux\"\nlabels = [\"self-hosted\"]\nmax = 3\n{extra}"
        ))
        .expect("config")
        .pools
        .remove(0)
    }

    #[tokio::test]
    async fn local_scoped_reads() {
        let g = LocalGitHub::new();
        let frontend = g.add_runner_group("Frontend");
        let a = g.register("linux-i-1", &[]);
        g.register("linux-i-1-2", &[]);
        let c = g.register_in_group("web-i-3", &[], frontend);
        assert_eq!(
            g.runner(a).await.expect("ok").map(|r| r.name),
            Some("linux-i-1".into())
        );
        assert_eq!(g.runner(999).await, Ok(None));
        let named = g.runners_named("linux-i-1").await.expect("ok");
        assert_eq!(
            named.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![a],
            "exact name, not a prefix"
        );
        let group = g.runners_in_group(frontend).await.expect("ok");
        assert_eq!(group.iter().map(|r| r.id).collect::<Vec<_>>(), vec![c]);
        assert_eq!(
            g.runners_in_group(DEFAULT_RUNNER_GROUP)
                .await
                .expect("ok")
                .len(),
            2
        );
        assert_eq!(
            g.calls(),
            vec![
                LocalCall::Runner(a),
                LocalCall::Runner(999),
                LocalCall::RunnersNamed("linux-i-1".into()),
                LocalCall::RunnersInGroup(frontend),
                LocalCall::RunnersInGroup(DEFAULT_RUNNER_GROUP),
            ]
        );
    }

    #[tokio::test]
    async fn local_runner_group_by_name() {
        let g = LocalGitHub::new();
        let frontend = g.add_runner_group("Frontend");
        let named = pool("runner_group = \"frontend\"");
        assert_eq!(g.pool_runner_group(&named).await, Ok(frontend));
        let jit = g.jit_runner(&named, "linux-i-7").await.expect("minted");
        let in_group = g.runners_in_group(frontend).await.expect("ok");
        assert_eq!(
            in_group.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![jit.runner_id]
        );
        let unknown = pool("runner_group = \"Nope\"");
        match g.jit_runner(&unknown, "linux-i-8").await {
            Err(GitHubError::Rejected(m)) => assert!(m.contains("\"Nope\""), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            g.pool_runner_group(&pool("runner_group_id = 5")).await,
            Ok(5)
        );
        assert!(NoGitHub.pool_runner_group(&named).await.is_err());
    }

    #[tokio::test]
    async fn local_job_state_tells_gone_from_not_visible() {
        let g = LocalGitHub::new();
        g.hide_repository("Acme/Secret");
        assert_eq!(g.job_state("acme/app", 1).await, Ok(JobLookup::Gone));
        assert_eq!(
            g.job_state("acme/secret", 1).await,
            Ok(JobLookup::NotVisible)
        );
        assert_eq!(g.job("acme/app", 1).await, Ok(None));
        assert!(matches!(
            g.job("acme/secret", 1).await,
            Err(GitHubError::Rejected(_))
        ));
        g.register("linux-i-1", &[]);
        assert!(g.assign_job("linux-i-1", 5));
        assert!(!g.assign_job("linux-i-1", 6), "busy: no second job");
        assert!(
            matches!(g.job_state("acme/secret", 5).await, Ok(JobLookup::Found(s)) if s.status == "in_progress")
        );
        assert_eq!(g.finish_job(5).as_deref(), Some("linux-i-1"));
        assert!(!g.registered()[0].busy);
        assert_eq!(
            g.job("acme/app", 5).await.expect("ok").map(|s| s.status),
            Some("completed".into())
        );
    }

    #[tokio::test]
    async fn the_call_hook_runs_before_each_answer() {
        let g = LocalGitHub::new();
        g.register("linux-i-1", &[]);
        // GitHub registers a runner and gives it a job between the list and the removal.
        g.before_each_call(|gh, n, call| {
            if n == 1 {
                assert!(matches!(call, LocalCall::RemoveRunner(_)));
                gh.register("linux-i-2", &[]);
                gh.assign_job("linux-i-1", 9);
            }
        });
        let listed = g.runners().await.expect("ok");
        assert_eq!(listed.len(), 1);
        assert_eq!(g.remove_runner(listed[0].id).await, Ok(RunnerRemoval::Busy));
        assert_eq!(g.registered().len(), 2);
        let lost = g.lose_delivery("guid-1", "queued", 100);
        assert_eq!(g.deliveries(None).await.expect("ok").deliveries[0].id, lost);
        assert_eq!(g.deliveries_source(), "app-hook");
        g.set_deliveries_source(&DeliveriesSource::OrgHook {
            org: "a".into(),
            hook_id: 3,
        });
        assert_eq!(g.deliveries_source(), "org-hook:3");
        assert_eq!(NoGitHub.deliveries_source(), "none");
    }

    /// An implementation with only the required methods (as the test wrappers of other
    /// crates are): the scoped reads fall back to the whole listing, correctly.
    struct OnlyRequired(LocalGitHub);

    #[async_trait]
    impl GitHub for OnlyRequired {
        async fn runners(&self) -> Result<Vec<Runner>, GitHubError> {
            self.0.runners().await
        }
        async fn remove_runner(&self, id: u64) -> Result<RunnerRemoval, GitHubError> {
            self.0.remove_runner(id).await
        }
        async fn job(&self, r: &str, id: u64) -> Result<Option<JobStatus>, GitHubError> {
            self.0.job(r, id).await
        }
        async fn deliveries(&self, c: Option<&str>) -> Result<DeliveryPage, GitHubError> {
            self.0.deliveries(c).await
        }
        async fn redeliver(&self, id: u64) -> Result<(), GitHubError> {
            self.0.redeliver(id).await
        }
        async fn jit_runner(&self, p: &PoolConfig, n: &str) -> Result<JitRunner, GitHubError> {
            self.0.jit_runner(p, n).await
        }
    }

    #[tokio::test]
    async fn the_default_scoped_reads_filter_the_whole_listing() {
        let g = OnlyRequired(LocalGitHub::new());
        let a = g.0.register("linux-i-1", &[]);
        g.0.register("Linux-i-1-2", &[]);
        assert_eq!(g.runner(a).await.expect("ok").map(|r| r.id), Some(a));
        assert_eq!(g.runner(77).await, Ok(None));
        assert_eq!(g.runners_named("LINUX-I-1").await.expect("ok").len(), 1);
        assert_eq!(g.runners_in_group(5).await.expect("ok").len(), 2);
        assert_eq!(g.job_state("a/b", 1).await, Ok(JobLookup::Gone));
        assert_eq!(g.deliveries_source(), "app-hook");
        assert_eq!(g.pool_runner_group(&pool("")).await, Ok(1));
        assert!(g
            .pool_runner_group(&pool("runner_group = \"x\""))
            .await
            .is_err());
    }
}
