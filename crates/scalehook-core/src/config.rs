//! Configuration: the pools, ledger time-to-lives, limits and allow-lists, from TOML.
//!
//! Secrets are never part of the configuration (they come from the environment or the
//! cloud's secret store, see [`crate::signature::WebhookSecrets`]).

use serde::Deserialize;
use std::time::Duration;

/// Path to a TOML configuration file.
pub const CONFIG_PATH_ENV: &str = "SCALEHOOK_CONFIG";
/// Inline TOML configuration, for serverless environments.
pub const CONFIG_TOML_ENV: &str = "SCALEHOOK_CONFIG_TOML";

/// The configuration `make run` and the tests start from: one local pool.
pub const EMBEDDED_DEFAULT: &str = include_str!("default-config.toml");

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub pools: Vec<PoolConfig>,
    pub ledger: LedgerTtl,
    /// Largest accepted body, in bytes.
    pub max_body_bytes: usize,
    /// Upper bound on the cloud calls of one delivery, so GitHub (10 s) gets an answer.
    pub cloud_timeout: Duration,
    /// When non-empty, only jobs of these `owner/repo` names are handled (case-insensitive).
    /// Empty with `[github] repository = ...`: that repository.
    pub allowed_repositories: Vec<String>,
    /// When non-empty, only jobs of repositories owned by these organizations/users are handled.
    /// Empty with `[github] organization = ...`: that organization.
    pub allowed_organizations: Vec<String>,
    /// The GitHub App scalehook works with (`[github]`); `None` is webhook-only mode, where
    /// scale-in is not runner-safe and lost deliveries are not repaired.
    pub github: Option<GitHubConfig>,
    /// `(repository, pool)`: label-less `queued`/`waiting` jobs of these repositories (lower
    /// case `owner/name`) route to the pool, from its `label_less_queued_repositories`. GitHub
    /// sends a `runs-on: group: X` job's queued event with no labels and no group.
    pub label_less_queued: Vec<(String, String)>,
}

/// The `[github]` section: which App installation, where, and the reconcile timings. The
/// App's private key is a secret and never part of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubConfig {
    pub app_id: u64,
    pub installation_id: u64,
    /// REST API base URL: `https://api.github.com`, or `https://<host>/api/v3` (GHES).
    pub api_url: String,
    /// Whose runners: an organization, or one repository.
    pub scope: RunnerScope,
    /// An instance this long past launch with no registered runner is an orphan.
    pub boot_grace: Duration,
    /// Queued/in-progress records not updated for this long are re-checked with the jobs API.
    pub recheck_after: Duration,
    /// The webhook whose failed deliveries are found and redelivered.
    pub deliveries: DeliveriesSource,
}

/// The webhook scalehook's deliveries come from, whose failed deliveries reconcile reads
/// and redelivers. `[github] hook_id` picks an organization or repository webhook (the id
/// is in the webhook's settings URL and in every delivery's `X-GitHub-Hook-ID`); without
/// it, the App's own webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveriesSource {
    /// The GitHub App's webhook (`/app/hook/deliveries`, App JWT).
    AppHook,
    /// An organization webhook (`/orgs/{org}/hooks/{hook_id}/deliveries`, installation
    /// token with the organization permission `organization_hooks`).
    OrgHook { org: String, hook_id: u64 },
    /// A repository webhook (`/repos/{owner}/{repo}/hooks/{hook_id}/deliveries`,
    /// installation token with the repository permission `repository_hooks`).
    RepoHook { repository: String, hook_id: u64 },
}

impl std::fmt::Display for DeliveriesSource {
    /// `app-hook`, `org-hook:<id>` or `repo-hook:<id>`: what `/status` shows.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeliveriesSource::AppHook => f.write_str("app-hook"),
            DeliveriesSource::OrgHook { hook_id, .. } => write!(f, "org-hook:{hook_id}"),
            DeliveriesSource::RepoHook { hook_id, .. } => write!(f, "repo-hook:{hook_id}"),
        }
    }
}

/// Where the pools' runners are registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerScope {
    Organization(String),
    /// `owner/name`.
    Repository(String),
}

/// One runner pool: a fleet of identical instances serving jobs whose labels it has.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    /// Lower-cased labels; a job routes here when all its labels are among them.
    pub labels: Vec<String>,
    pub min: u32,
    pub max: u32,
    /// Idle runner slots to keep ready for the next job.
    pub standby: u32,
    pub runners_per_instance: u32,
    pub fleet: FleetTarget,
    /// Each runner takes one job and exits; the instance it ran on is then removed (or
    /// replaced, when the pool is not above target).
    pub ephemeral: bool,
    /// The runner group new runners join (`runner_group_id` of generate-jitconfig; GitHub's
    /// default group is 1). [`RUNNER_GROUP_BY_NAME`] (0, never a GitHub id) when the pool
    /// names its group (`runner_group`) without an id: the GitHub client looks the id up by
    /// name ([`PoolConfig::runner_group_to_look_up`]).
    pub runner_group_id: u64,
    /// Jobs with `runs-on: group: <name>` route here by group name.
    pub runner_group: Option<String>,
    /// Instances kept stopped and ready to start (an AWS warm pool): not capacity, no
    /// runner until taken; a used instance never goes back. At most `max`.
    pub warm_pool: u32,
    /// What the pool's instances run on.
    pub capacity: Capacity,
    /// The on-demand pool this pool's demand spills to while its spot launches fail
    /// (within that pool's own `max`).
    pub overflow: Option<String>,
    /// Re-run a job interrupted by a spot reclaim, once per job (off by default: a re-run
    /// repeats the job's side effects).
    pub rerun_interrupted: bool,
}

/// A pool's purchase option.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capacity {
    #[default]
    OnDemand,
    /// Spare capacity at a discount that the cloud can reclaim with a two-minute warning.
    Spot,
}

/// `runner_group_id` of a pool whose group id is looked up by its `runner_group` name.
pub const RUNNER_GROUP_BY_NAME: u64 = 0;

impl PoolConfig {
    /// The runner group name whose id the GitHub client must look up: `runner_group` when
    /// `runner_group_id` was not given.
    pub fn runner_group_to_look_up(&self) -> Option<&str> {
        (self.runner_group_id == RUNNER_GROUP_BY_NAME)
            .then_some(self.runner_group.as_deref())
            .flatten()
    }
}

/// Which fleet serves a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetTarget {
    /// Simulated instances in process (local runs, replay, simulate).
    Local,
    /// An AWS Auto Scaling Group, by name.
    AwsAsg(String),
    /// An Azure VM Scale Set, by resource id.
    AzureVmss(String),
}

impl FleetTarget {
    pub fn kind(&self) -> &'static str {
        match self {
            FleetTarget::Local => "local",
            FleetTarget::AwsAsg(_) => "aws_asg",
            FleetTarget::AzureVmss(_) => "azure_vmss",
        }
    }
}

/// How long ledger records live. Stale `queued`/`in_progress` records are expired by the
/// reconcile pass; completed records are kept for the redelivery window so a late or
/// redelivered event stays a no-op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerTtl {
    pub queued: Duration,
    pub in_progress: Duration,
    pub retention: Duration,
}

impl Default for LedgerTtl {
    fn default() -> Self {
        Self {
            // GitHub cancels a self-hosted job queued for 24 h (it can take up to 48 h).
            queued: Duration::from_secs(48 * 3600),
            // A self-hosted job may run up to 5 days (GitHub's limit): expire a running
            // record only after 6, since expiring it early would let scale-in see its
            // runner as idle. With a GitHub App, reconcile re-checks stale records with the
            // jobs API long before (`recheck_after`); the TTL is the fallback.
            in_progress: Duration::from_secs(6 * 24 * 3600),
            // GitHub's redelivery window is 3 days; keep one more.
            retention: Duration::from_secs(4 * 24 * 3600),
        }
    }
}

/// A configuration problem, naming the pool and field where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration is not valid TOML: {0}")]
    Syntax(String),
    #[error("pool {pool:?}: {field}: {problem}")]
    Pool {
        pool: String,
        field: &'static str,
        problem: String,
    },
    #[error("{field}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
    #[error("cannot read configuration file {path}: {problem}")]
    Read { path: String, problem: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    pools: Vec<RawPool>,
    #[serde(default)]
    ledger: Option<RawLedger>,
    #[serde(default)]
    max_body_bytes: Option<usize>,
    #[serde(default)]
    cloud_timeout_ms: Option<u64>,
    #[serde(default)]
    allowed_repositories: Vec<String>,
    #[serde(default)]
    allowed_organizations: Vec<String>,
    #[serde(default)]
    github: Option<RawGitHub>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGitHub {
    app_id: u64,
    installation_id: u64,
    #[serde(default)]
    api_url: Option<String>,
    #[serde(default)]
    organization: Option<String>,
    #[serde(default)]
    repository: Option<String>,
    #[serde(default)]
    boot_grace_secs: Option<u64>,
    #[serde(default)]
    recheck_after_secs: Option<u64>,
    #[serde(default)]
    hook_id: Option<u64>,
    #[serde(default)]
    hook_repository: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    queued_ttl_secs: Option<u64>,
    in_progress_ttl_secs: Option<u64>,
    retention_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    name: String,
    labels: Vec<String>,
    #[serde(default)]
    min: u32,
    max: u32,
    #[serde(default)]
    standby: u32,
    #[serde(default = "one")]
    runners_per_instance: u32,
    #[serde(default)]
    aws_asg: Option<String>,
    #[serde(default)]
    azure_vmss: Option<String>,
    #[serde(default)]
    ephemeral: bool,
    #[serde(default)]
    runner_group_id: Option<u64>,
    #[serde(default)]
    runner_group: Option<String>,
    #[serde(default)]
    label_less_queued_repositories: Vec<String>,
    #[serde(default)]
    warm_pool: u32,
    #[serde(default)]
    capacity: Capacity,
    #[serde(default)]
    overflow: Option<String>,
    #[serde(default)]
    rerun_interrupted: bool,
}

fn one() -> u32 {
    1
}

/// 1 MiB: `workflow_job` payloads are 8-14 KB; GitHub's own cap is 25 MB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Leaves GitHub's 10 s budget room for the ledger and the answer.
pub const DEFAULT_CLOUD_TIMEOUT: Duration = Duration::from_secs(7);

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.message().to_string()))?;
        let mut pools = Vec::with_capacity(raw.pools.len());
        let mut label_less_queued = Vec::new();
        for mut p in raw.pools {
            let repos = std::mem::take(&mut p.label_less_queued_repositories);
            let pool = validate_pool(p, &pools)?;
            for r in repos {
                let bad = |problem: &str| ConfigError::Pool {
                    pool: pool.name.clone(),
                    field: "label_less_queued_repositories",
                    problem: problem.into(),
                };
                if pool.runner_group.is_none() {
                    return Err(bad(
                        "needs runner_group: only runs-on: group jobs are label-less",
                    ));
                }
                if r.split('/').count() != 2 || r.split('/').any(|x| x.trim().is_empty()) {
                    return Err(bad("each entry must be owner/name"));
                }
                let r = r.to_ascii_lowercase();
                if let Some((_, other)) = label_less_queued.iter().find(|(x, _)| *x == r) {
                    return Err(bad(&format!("{r} already routes to pool {other}")));
                }
                label_less_queued.push((r, pool.name.clone()));
            }
            pools.push(pool);
        }
        if pools.is_empty() {
            return Err(ConfigError::Field {
                field: "pools",
                problem: "at least one [[pools]] entry is required".into(),
            });
        }
        check_overflow(&pools)?;
        let defaults = LedgerTtl::default();
        let ledger = match raw.ledger {
            None => defaults,
            Some(l) => LedgerTtl {
                queued: l
                    .queued_ttl_secs
                    .map(Duration::from_secs)
                    .unwrap_or(defaults.queued),
                in_progress: l
                    .in_progress_ttl_secs
                    .map(Duration::from_secs)
                    .unwrap_or(defaults.in_progress),
                retention: l
                    .retention_secs
                    .map(Duration::from_secs)
                    .unwrap_or(defaults.retention),
            },
        };
        if ledger.retention < Duration::from_secs(3 * 24 * 3600) {
            return Err(ConfigError::Field {
                field: "ledger.retention_secs",
                problem: "must be at least 259200 (GitHub's 3-day redelivery window)".into(),
            });
        }
        if ledger.queued.is_zero() || ledger.in_progress.is_zero() {
            return Err(ConfigError::Field {
                field: "ledger",
                problem: "time-to-lives must be positive".into(),
            });
        }
        let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 {
            return Err(ConfigError::Field {
                field: "max_body_bytes",
                problem: "must be positive".into(),
            });
        }
        let cloud_timeout = raw
            .cloud_timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_CLOUD_TIMEOUT);
        if cloud_timeout.is_zero() || cloud_timeout > Duration::from_secs(9) {
            return Err(ConfigError::Field {
                field: "cloud_timeout_ms",
                problem: "must be between 1 and 9000 (GitHub waits 10 s)".into(),
            });
        }
        if let Some((a, b)) = label_overlaps(&pools).first() {
            return Err(ConfigError::Pool {
                pool: b.clone(),
                field: "labels",
                problem: format!(
                    "has every label of pool {a:?} and is in the same runner group: GitHub gives a job \
                     to any idle runner having all its labels, so {b:?}'s runners would take {a:?}'s jobs \
                     (and {b:?}'s own jobs wait). Give each pool a label the other lacks, or each pool its \
                     own runner_group (docs/configuration.md, \"Labels on GitHub's side\")"
                ),
            });
        }
        let github = raw.github.map(validate_github).transpose()?;
        let mut allowed_repositories = lower_all(raw.allowed_repositories);
        let mut allowed_organizations = lower_all(raw.allowed_organizations);
        // With an App, runners register where `[github]` says, so only that organization's
        // (or repository's) jobs are demand they can serve: the default allow-list.
        match github.as_ref().map(|g| &g.scope) {
            Some(RunnerScope::Organization(o)) if allowed_organizations.is_empty() => {
                allowed_organizations.push(o.to_ascii_lowercase());
            }
            Some(RunnerScope::Repository(r)) if allowed_repositories.is_empty() => {
                allowed_repositories.push(r.to_ascii_lowercase());
            }
            _ => {}
        }
        Ok(Config {
            pools,
            ledger,
            max_body_bytes,
            cloud_timeout,
            allowed_repositories,
            allowed_organizations,
            github,
            label_less_queued,
        })
    }

    /// `SCALEHOOK_CONFIG_TOML`, else the file in `SCALEHOOK_CONFIG`, else `None`.
    pub fn from_env() -> Result<Option<Config>, ConfigError> {
        if let Ok(text) = std::env::var(CONFIG_TOML_ENV) {
            return Config::from_toml(&text).map(Some);
        }
        match std::env::var(CONFIG_PATH_ENV) {
            Ok(path) => Config::from_file(&path).map(Some),
            Err(_) => Ok(None),
        }
    }

    pub fn from_file(path: &str) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_string(),
            problem: e.to_string(),
        })?;
        Config::from_toml(&text)
    }

    /// The embedded default: one local pool, for `make run` and offline use.
    pub fn embedded_default() -> Config {
        Config::from_toml(EMBEDDED_DEFAULT).unwrap_or_else(|e| unreachable!("embedded config: {e}"))
    }

    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The first pool (config order) that has every one of the job's labels, compared
    /// case-insensitively. A job with no labels routes nowhere: GitHub sends label-less
    /// `completed` events for check runs inside jobs, and they are not runner demand.
    pub fn route<S: AsRef<str>>(&self, job_labels: &[S]) -> Option<&PoolConfig> {
        if job_labels.is_empty() {
            return None;
        }
        self.pools.iter().find(|pool| {
            job_labels.iter().all(|l| {
                let l = l.as_ref();
                pool.labels.iter().any(|p| p.eq_ignore_ascii_case(l))
            })
        })
    }

    /// Where a job goes: by labels when it has any ([`Config::route`]); a label-less job by
    /// its `runner_group_name` (set once a runner took it) to the pool with that
    /// `runner_group`; a label-less `queued`/`waiting` job without a group (a
    /// `runs-on: group:` job, as GitHub sends it) by its repository to the pool that lists
    /// it in `label_less_queued_repositories`. Anything else label-less routes nowhere.
    pub fn route_job<S: AsRef<str>>(
        &self,
        job_labels: &[S],
        runner_group: Option<&str>,
        repository: Option<&str>,
        demand: bool,
    ) -> Option<&PoolConfig> {
        if !job_labels.is_empty() {
            return self.route(job_labels);
        }
        if let Some(g) = runner_group.filter(|g| !g.is_empty()) {
            return self.pools.iter().find(|p| {
                p.runner_group
                    .as_deref()
                    .is_some_and(|x| x.eq_ignore_ascii_case(g))
            });
        }
        let repository = repository.filter(|_| demand)?;
        self.label_less_queued
            .iter()
            .find(|(r, _)| r.eq_ignore_ascii_case(repository))
            .and_then(|(_, pool)| self.pool(pool))
    }

    /// Whether the allow-lists admit a job of this repository/owner.
    pub fn admits(&self, repository: Option<&str>, owner: Option<&str>) -> bool {
        let repo_ok = self.allowed_repositories.is_empty()
            || repository.is_some_and(|r| {
                self.allowed_repositories
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(r))
            });
        let org_ok = self.allowed_organizations.is_empty()
            || owner.is_some_and(|o| {
                self.allowed_organizations
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(o))
            });
        repo_ok && org_ok
    }
}

/// Pairs `(a, b)` of pools in one runner group where `b`'s labels contain all of `a`'s: a
/// runner registers with its pool's labels and GitHub hands a job to any idle runner of the
/// group having all the job's labels, so `b`'s runners can take every job routed to `a`.
/// Refused at load rather than warned about: in webhook-only mode `b`'s ledger does not know
/// its runner is busy with `a`'s job and scale-in may remove that instance under the job,
/// and a warning in a function's log is read after the bill (docs/configuration.md). A pool
/// and the pool it names as `overflow` are exempt: sharing jobs is what the overflow is for
/// (runner-safe with a GitHub App, whose check right before a removal keeps an instance
/// whose runner is busy).
pub fn label_overlaps(pools: &[PoolConfig]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for a in pools {
        for b in pools {
            let contained = a.labels.iter().all(|l| b.labels.contains(l));
            // A pool and its overflow share their jobs on purpose: that is what it is for.
            let overflow_pair = a.overflow.as_deref() == Some(b.name.as_str())
                || b.overflow.as_deref() == Some(a.name.as_str());
            if a.name != b.name && contained && !overflow_pair && same_runner_group(a, b) {
                out.push((a.name.clone(), b.name.clone()));
            }
        }
    }
    out
}

/// Whether two pools' runners register in the same runner group, as far as the configuration
/// tells: the same id, or the same name when neither gives an id. A name against an id is
/// not known before the GitHub client looks the name up, and is not reported.
pub fn same_runner_group(a: &PoolConfig, b: &PoolConfig) -> bool {
    let by_name = |p: &PoolConfig| p.runner_group_id == RUNNER_GROUP_BY_NAME;
    match (by_name(a), by_name(b)) {
        (false, false) => a.runner_group_id == b.runner_group_id,
        (true, true) => match (&a.runner_group, &b.runner_group) {
            (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
            _ => false,
        },
        _ => false,
    }
}

fn lower_all(v: Vec<String>) -> Vec<String> {
    v.into_iter().map(|s| s.to_ascii_lowercase()).collect()
}

/// Does `<short>-` begin `long` (case-insensitively, as runner names compare)?
fn name_prefixes(short: &str, long: &str) -> bool {
    long.len() > short.len()
        && long.as_bytes()[short.len()] == b'-'
        && long[..short.len()].eq_ignore_ascii_case(short)
}

fn validate_pool(p: RawPool, earlier: &[PoolConfig]) -> Result<PoolConfig, ConfigError> {
    let err = |field: &'static str, problem: String| ConfigError::Pool {
        pool: p.name.clone(),
        field,
        problem,
    };
    if p.name.trim().is_empty() {
        return Err(err("name", "must not be empty".into()));
    }
    if !p
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(err(
            "name",
            "use only letters, digits, '-', '_' and '.' (it becomes a metric dimension and a storage key)".into(),
        ));
    }
    if earlier.iter().any(|q| q.name == p.name) {
        return Err(err("name", "duplicate pool name".into()));
    }
    // Runners are named `<pool>-<instance key>[-n]`: if `linux-` began another pool's name,
    // `linux`'s sweeps would take `linux-arm`'s runners for its own.
    if let Some(q) = earlier
        .iter()
        .find(|q| name_prefixes(&q.name, &p.name) || name_prefixes(&p.name, &q.name))
    {
        return Err(err(
            "name",
            format!(
                "pool names {:?} and {:?}: one followed by '-' begins the other, so their runner names (`<pool>-<instance key>`) could not be told apart; rename one",
                q.name, p.name
            ),
        ));
    }
    if p.labels.is_empty() {
        return Err(err("labels", "must list at least one label".into()));
    }
    if p.labels.iter().any(|l| l.trim().is_empty()) {
        return Err(err("labels", "labels must not be empty strings".into()));
    }
    if p.min > p.max {
        return Err(err(
            "min",
            format!("min ({}) is greater than max ({})", p.min, p.max),
        ));
    }
    if p.max == 0 {
        return Err(err("max", "must be at least 1".into()));
    }
    if p.runners_per_instance == 0 {
        return Err(err("runners_per_instance", "must be at least 1".into()));
    }
    if p.warm_pool > p.max {
        return Err(err(
            "warm_pool",
            format!(
                "warm_pool ({}) is greater than max ({})",
                p.warm_pool, p.max
            ),
        ));
    }
    // AWS allows no warm pool on a group with a mixed instances policy or spot instances.
    if p.warm_pool > 0 && p.capacity == Capacity::Spot {
        return Err(err(
            "warm_pool",
            "a spot pool cannot have a warm pool: choose one".into(),
        ));
    }
    let fleet = match (p.aws_asg.clone(), p.azure_vmss.clone()) {
        (None, None) => FleetTarget::Local,
        (Some(a), None) if !a.trim().is_empty() => FleetTarget::AwsAsg(a),
        (None, Some(v)) if is_vmss_id(&v) => FleetTarget::AzureVmss(v),
        (None, Some(_)) => {
            return Err(err(
                "azure_vmss",
                "expected /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachineScaleSets/<name>".into(),
            ))
        }
        (Some(_), None) => return Err(err("aws_asg", "must not be empty".into())),
        (Some(_), Some(_)) => {
            return Err(err(
                "aws_asg",
                "a pool has one fleet: set aws_asg or azure_vmss, not both".into(),
            ))
        }
    };
    let runner_group = p.runner_group.clone().filter(|g| !g.trim().is_empty());
    // A named group without an id is looked up by name (not silently the default group).
    let runner_group_id = match (p.runner_group_id, &runner_group) {
        (Some(RUNNER_GROUP_BY_NAME), _) => {
            return Err(err(
                "runner_group_id",
                "must be a runner group's id (1 is the default group)".into(),
            ))
        }
        (Some(id), _) => id,
        (None, Some(_)) => RUNNER_GROUP_BY_NAME,
        (None, None) => 1,
    };
    Ok(PoolConfig {
        labels: lower_all(p.labels),
        name: p.name,
        min: p.min,
        max: p.max,
        standby: p.standby,
        runners_per_instance: p.runners_per_instance,
        fleet,
        ephemeral: p.ephemeral,
        runner_group_id,
        runner_group,
        warm_pool: p.warm_pool,
        capacity: p.capacity,
        overflow: p.overflow,
        rerun_interrupted: p.rerun_interrupted,
    })
}

/// `overflow` names another, on-demand pool, and following overflows never comes back.
fn check_overflow(pools: &[PoolConfig]) -> Result<(), ConfigError> {
    for p in pools {
        let err = |problem: String| ConfigError::Pool {
            pool: p.name.clone(),
            field: "overflow",
            problem,
        };
        let Some(first) = &p.overflow else { continue };
        let mut seen = vec![p.name.as_str()];
        let mut next = Some(first);
        while let Some(name) = next {
            if seen.contains(&name.as_str()) {
                return Err(err(format!(
                    "overflows back to {name}: {} -> {name}",
                    seen.join(" -> ")
                )));
            }
            let Some(q) = pools.iter().find(|q| &q.name == name) else {
                return Err(err(format!("no pool is named {name:?}")));
            };
            if q.capacity == Capacity::Spot {
                return Err(err(format!(
                    "{name} is a spot pool: overflow goes to on-demand"
                )));
            }
            seen.push(&q.name);
            next = q.overflow.as_ref();
        }
    }
    Ok(())
}

/// Default boot grace: a runner normally registers within a few minutes of launch.
pub const DEFAULT_BOOT_GRACE: Duration = Duration::from_secs(600);
/// Default age after which a queued/in-progress record is re-checked with the jobs API.
pub const DEFAULT_RECHECK_AFTER: Duration = Duration::from_secs(300);

fn validate_github(g: RawGitHub) -> Result<GitHubConfig, ConfigError> {
    let err = |field: &'static str, problem: &str| ConfigError::Field {
        field,
        problem: problem.into(),
    };
    if g.app_id == 0 {
        return Err(err("github.app_id", "must be the App's numeric id"));
    }
    if g.installation_id == 0 {
        return Err(err(
            "github.installation_id",
            "must be the installation's numeric id",
        ));
    }
    let api_url = g
        .api_url
        .unwrap_or_else(|| "https://api.github.com".into())
        .trim_end_matches('/')
        .to_string();
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        return Err(err(
            "github.api_url",
            "must be an http(s) URL such as https://api.github.com or https://ghe.example.com/api/v3",
        ));
    }
    let scope = match (g.organization, g.repository) {
        (Some(o), None) if !o.trim().is_empty() => RunnerScope::Organization(o),
        (None, Some(r)) if r.split('/').count() == 2 && r.split('/').all(|p| !p.is_empty()) => {
            RunnerScope::Repository(r)
        }
        (None, Some(_)) => return Err(err("github.repository", "must be owner/name")),
        _ => {
            return Err(err(
                "github.organization",
                "set exactly one of organization or repository (where the runners register)",
            ))
        }
    };
    let deliveries = match (g.hook_id, g.hook_repository) {
        (None, None) => DeliveriesSource::AppHook,
        (None, Some(_)) => {
            return Err(err(
                "github.hook_repository",
                "needs github.hook_id: the id of that repository's webhook (Settings > Webhooks, or X-GitHub-Hook-ID of a delivery)",
            ))
        }
        (Some(0), _) => {
            return Err(err(
                "github.hook_id",
                "must be the webhook's numeric id (Settings > Webhooks: the number in its URL, or X-GitHub-Hook-ID of a delivery)",
            ))
        }
        (Some(hook_id), Some(r)) => {
            if !(r.split('/').count() == 2 && r.split('/').all(|p| !p.trim().is_empty())) {
                return Err(err("github.hook_repository", "must be owner/name"));
            }
            DeliveriesSource::RepoHook {
                repository: r,
                hook_id,
            }
        }
        (Some(hook_id), None) => match &scope {
            RunnerScope::Organization(org) => DeliveriesSource::OrgHook {
                org: org.clone(),
                hook_id,
            },
            RunnerScope::Repository(r) => DeliveriesSource::RepoHook {
                repository: r.clone(),
                hook_id,
            },
        },
    };
    Ok(GitHubConfig {
        deliveries,
        app_id: g.app_id,
        installation_id: g.installation_id,
        api_url,
        scope,
        boot_grace: g
            .boot_grace_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_BOOT_GRACE),
        recheck_after: g
            .recheck_after_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_RECHECK_AFTER),
    })
}

fn is_vmss_id(id: &str) -> bool {
    let parts: Vec<&str> = id.trim_start_matches('/').split('/').collect();
    parts.len() == 8
        && parts[0].eq_ignore_ascii_case("subscriptions")
        && parts[2].eq_ignore_ascii_case("resourceGroups")
        && parts[4].eq_ignore_ascii_case("providers")
        && parts[5].eq_ignore_ascii_case("Microsoft.Compute")
        && parts[6].eq_ignore_ascii_case("virtualMachineScaleSets")
        && parts.iter().all(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_toml(extra: &str) -> String {
        format!("[[pools]]\nname = \"a\"\nlabels = [\"self-hosted\", \"Linux\"]\nmax = 3\n{extra}")
    }

    #[test]
    fn embedded_default_parses() {
        let c = Config::embedded_default();
        assert!(!c.pools.is_empty());
        assert_eq!(c.pools[0].fleet, FleetTarget::Local);
    }

    #[test]
    fn defaults_and_lowercasing() {
        let c = Config::from_toml(&pool_toml("")).expect("valid");
        let p = &c.pools[0];
        assert_eq!(p.labels, vec!["self-hosted", "linux"]);
        assert_eq!((p.min, p.standby, p.runners_per_instance), (0, 0, 1));
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(c.ledger, LedgerTtl::default());
    }

    fn pool_error(text: &str) -> (String, &'static str) {
        match Config::from_toml(text) {
            Err(ConfigError::Pool { pool, field, .. }) => (pool, field),
            other => panic!("expected a pool error, got {other:?}"),
        }
    }

    #[test]
    fn validation_names_pool_and_field() {
        assert_eq!(pool_error(&pool_toml("min = 4")), ("a".into(), "min"));
        assert_eq!(
            pool_error(&pool_toml("runners_per_instance = 0")),
            ("a".into(), "runners_per_instance")
        );
        assert_eq!(
            pool_error("[[pools]]\nname = \"e\"\nlabels = []\nmax = 1"),
            ("e".into(), "labels")
        );
        let dup = format!("{}\n{}", pool_toml(""), pool_toml(""));
        assert_eq!(pool_error(&dup), ("a".into(), "name"));
        assert_eq!(
            pool_error(&pool_toml("aws_asg = \"g\"\nazure_vmss = \"x\"")),
            ("a".into(), "aws_asg")
        );
        assert_eq!(
            pool_error(&pool_toml("azure_vmss = \"/subscriptions/x\"")),
            ("a".into(), "azure_vmss")
        );
        let msg = Config::from_toml(&pool_toml("min = 4"))
            .expect_err("invalid")
            .to_string();
        assert!(msg.contains("\"a\"") && msg.contains("min"), "{msg}");
    }

    #[test]
    fn syntax_and_unknown_fields_are_errors() {
        assert!(matches!(
            Config::from_toml("[[pools]"),
            Err(ConfigError::Syntax(_))
        ));
        assert!(matches!(
            Config::from_toml(&pool_toml("maxx = 3")),
            Err(ConfigError::Syntax(_))
        ));
        assert!(matches!(
            Config::from_toml(""),
            Err(ConfigError::Field { .. })
        ));
    }

    #[test]
    fn fleet_targets() {
        let c = Config::from_toml(&pool_toml("aws_asg = \"runners\"")).expect("valid");
        assert_eq!(c.pools[0].fleet, FleetTarget::AwsAsg("runners".into()));
        let id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/v";
        let c = Config::from_toml(&pool_toml(&format!("azure_vmss = \"{id}\""))).expect("valid");
        assert_eq!(c.pools[0].fleet, FleetTarget::AzureVmss(id.into()));
    }

    #[test]
    fn routing_is_case_insensitive_subset_first_match() {
        let c = Config::from_toml(
            r#"
            [[pools]]
            name = "gpu"
            labels = ["self-hosted", "linux", "gpu"]
            max = 2
            [[pools]]
            name = "linux"
            labels = ["self-hosted", "linux", "x64", "gpu"]
            max = 2
            runner_group_id = 5
            "#,
        )
        .expect("valid");
        let name = |labels: &[&str]| c.route(labels).map(|p| p.name.clone());
        assert_eq!(name(&["Self-Hosted", "GPU"]), Some("gpu".into()));
        assert_eq!(name(&["self-hosted", "x64"]), Some("linux".into()));
        assert_eq!(name(&["ubuntu-latest"]), None);
        assert_eq!(name(&["self-hosted", "windows"]), None);
        assert_eq!(name(&[]), None);
    }

    #[test]
    fn runner_group_jobs_route_by_group_or_allow_listed_repository() {
        let c = Config::from_toml(
            r#"
            [[pools]]
            name = "linux"
            labels = ["self-hosted", "linux"]
            max = 2
            [[pools]]
            name = "grp"
            labels = ["self-hosted", "grp"]
            max = 2
            runner_group = "Frontend"
            label_less_queued_repositories = ["Octo-Org/App"]
            "#,
        )
        .expect("valid");
        let none: &[&str] = &[];
        let name = |g: Option<&str>, repo: Option<&str>, demand: bool| {
            c.route_job(none, g, repo, demand).map(|p| p.name.clone())
        };
        assert_eq!(name(Some("frontend"), None, false), Some("grp".into()));
        assert_eq!(name(Some("other"), Some("octo-org/app"), true), None);
        assert_eq!(name(None, Some("octo-org/app"), true), Some("grp".into()));
        // label-less completed events without a group (check runs) stay out
        assert_eq!(name(None, Some("octo-org/app"), false), None);
        assert_eq!(name(None, Some("octo-org/other"), true), None);
        assert_eq!(
            c.route_job(&["self-hosted", "linux"], Some("Frontend"), None, true)
                .map(|p| p.name.as_str()),
            Some("linux"),
            "labels decide when there are any"
        );
        let no_group = Config::from_toml(&pool_toml("label_less_queued_repositories = [\"o/r\"]"));
        assert!(
            matches!(
                no_group,
                Err(ConfigError::Pool {
                    field: "label_less_queued_repositories",
                    ..
                })
            ),
            "{no_group:?}"
        );
    }

    #[test]
    fn warm_pool_capacity_and_overflow() {
        let two = |a: &str, b: &str| {
            format!(
                "[[pools]]\nname = \"a\"\nlabels = [\"x\"]\nmax = 3\n{a}\n[[pools]]\nname = \"b\"\nlabels = [\"y\"]\nmax = 3\n{b}"
            )
        };
        let c = Config::from_toml(&two(
            "capacity = \"spot\"\noverflow = \"b\"\nrerun_interrupted = true",
            "warm_pool = 3",
        ))
        .expect("valid");
        let (a, b) = (&c.pools[0], &c.pools[1]);
        assert_eq!(
            (a.capacity, a.overflow.as_deref(), a.rerun_interrupted),
            (Capacity::Spot, Some("b"), true)
        );
        assert_eq!(
            (b.capacity, b.warm_pool, b.overflow.as_deref()),
            (Capacity::OnDemand, 3, None)
        );
        assert_eq!(
            pool_error(&pool_toml("warm_pool = 4")),
            ("a".into(), "warm_pool")
        );
        assert_eq!(
            pool_error(&pool_toml("warm_pool = 1\ncapacity = \"spot\"")),
            ("a".into(), "warm_pool")
        );
        for (a, b) in [
            ("overflow = \"a\"", ""),
            ("overflow = \"nope\"", ""),
            ("overflow = \"b\"", "overflow = \"a\""),
            ("overflow = \"b\"", "capacity = \"spot\""),
        ] {
            assert_eq!(pool_error(&two(a, b)).1, "overflow", "{a} / {b}");
        }
        assert!(matches!(
            Config::from_toml(&pool_toml("capacity = \"reserved\"")),
            Err(ConfigError::Syntax(_))
        ));
    }

    #[test]
    fn pool_names_that_begin_another_pools_name_are_refused() {
        let two = |a: &str, b: &str| {
            Config::from_toml(&format!(
                "[[pools]]\nname = \"{a}\"\nlabels = [\"x\"]\nmax = 1\n\
                 [[pools]]\nname = \"{b}\"\nlabels = [\"y\"]\nmax = 1\n"
            ))
        };
        for (a, b) in [
            ("linux", "linux-arm"),
            ("Linux-ARM", "linux"),
            ("a-b", "a-b-c"),
        ] {
            match two(a, b) {
                Err(ConfigError::Pool {
                    field: "name",
                    problem,
                    ..
                }) => {
                    assert!(problem.contains("begins the other"), "{problem}")
                }
                other => panic!("{a} / {b}: {other:?}"),
            }
        }
        for (a, b) in [
            ("linux", "linuxarm"),
            ("linux-x64", "linux-gpu"),
            ("arm-linux", "linux"),
        ] {
            assert!(two(a, b).is_ok(), "{a} / {b}");
        }
    }

    #[test]
    fn allow_lists() {
        let c = Config::from_toml(&format!(
            "allowed_organizations = [\"Octo-Org\"]\n{}",
            pool_toml("")
        ))
        .expect("valid");
        assert!(c.admits(Some("octo-org/x"), Some("octo-org")));
        assert!(!c.admits(Some("evil/x"), Some("evil")));
        assert!(!c.admits(None, None));
        let open = Config::from_toml(&pool_toml("")).expect("valid");
        assert!(open.admits(None, None));
    }

    fn github_section(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!(
            "{}\n[github]\napp_id = 1\ninstallation_id = 2\n{extra}\n",
            pool_toml("")
        ))
    }

    #[test]
    fn deliveries_come_from_the_webhook_hook_id_names() {
        let source = |extra: &str| {
            github_section(extra)
                .expect("valid")
                .github
                .expect("gh")
                .deliveries
        };
        assert_eq!(source("organization = \"acme\""), DeliveriesSource::AppHook);
        assert_eq!(
            source("organization = \"acme\"\nhook_id = 42"),
            DeliveriesSource::OrgHook {
                org: "acme".into(),
                hook_id: 42
            }
        );
        assert_eq!(
            source("repository = \"acme/app\"\nhook_id = 7"),
            DeliveriesSource::RepoHook {
                repository: "acme/app".into(),
                hook_id: 7
            }
        );
        assert_eq!(
            source("organization = \"acme\"\nhook_id = 7\nhook_repository = \"acme/web\""),
            DeliveriesSource::RepoHook {
                repository: "acme/web".into(),
                hook_id: 7
            }
        );
        assert_eq!(
            source("organization = \"acme\"\nhook_id = 42").to_string(),
            "org-hook:42"
        );
        assert_eq!(DeliveriesSource::AppHook.to_string(), "app-hook");
        assert_eq!(
            source("repository = \"a/b\"\nhook_id = 7").to_string(),
            "repo-hook:7"
        );
        for (extra, field) in [
            ("organization = \"acme\"\nhook_id = 0", "github.hook_id"),
            (
                "organization = \"acme\"\nhook_repository = \"acme/web\"",
                "github.hook_repository",
            ),
            (
                "organization = \"acme\"\nhook_id = 3\nhook_repository = \"acme\"",
                "github.hook_repository",
            ),
        ] {
            match github_section(extra) {
                Err(ConfigError::Field { field: f, problem }) => {
                    assert_eq!(f, field, "{extra}: {problem}");
                    assert!(!problem.is_empty());
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_named_runner_group_without_an_id_is_looked_up_by_name() {
        let c = Config::from_toml(&pool_toml("runner_group = \"Frontend\"")).expect("valid");
        assert_eq!(c.pools[0].runner_group_id, RUNNER_GROUP_BY_NAME);
        assert_eq!(c.pools[0].runner_group_to_look_up(), Some("Frontend"));
        let c = Config::from_toml(&pool_toml(
            "runner_group = \"Frontend\"\nrunner_group_id = 4",
        ))
        .expect("valid");
        assert_eq!(
            (
                c.pools[0].runner_group_id,
                c.pools[0].runner_group_to_look_up()
            ),
            (4, None)
        );
        let c = Config::from_toml(&pool_toml("")).expect("valid");
        assert_eq!(
            (
                c.pools[0].runner_group_id,
                c.pools[0].runner_group_to_look_up()
            ),
            (1, None)
        );
        assert_eq!(
            pool_error(&pool_toml("runner_group_id = 0")).1,
            "runner_group_id"
        );
    }

    /// Issue 24 finding 6: in one runner group, a pool whose labels contain another's would
    /// take its jobs on GitHub's side; refused, naming both pools. Disjoint labels, or a
    /// runner group each (by id or by name), load.
    #[test]
    fn a_pool_whose_labels_contain_another_pools_in_one_group_is_refused() {
        let two = |cpu_extra: &str, gpu_labels: &str, gpu_extra: &str| {
            format!(
                "[[pools]]\nname = \"cpu\"\nlabels = [\"self-hosted\", \"linux\", \"x64\"]\nmax = 2\n{cpu_extra}\n\
                 [[pools]]\nname = \"gpu\"\nlabels = {gpu_labels}\nmax = 2\n{gpu_extra}\n"
            )
        };
        let superset = "[\"self-hosted\", \"Linux\", \"x64\", \"gpu\"]";
        let e = Config::from_toml(&two("", superset, "")).expect_err("overlap refused");
        let text = e.to_string();
        assert!(
            text.contains("pool \"gpu\"")
                && text.contains("\"cpu\"")
                && text.contains("runner_group"),
            "{text}"
        );
        let named = two("runner_group = \"ci\"", superset, "runner_group = \"CI\"");
        assert!(Config::from_toml(&named).is_err(), "the same group by name");
        for ok in [
            two("", "[\"self-hosted\", \"linux\", \"gpu\"]", ""),
            two("", superset, "runner_group_id = 7"),
            two("runner_group = \"cpu\"", superset, "runner_group = \"gpu\""),
        ] {
            Config::from_toml(&ok).unwrap_or_else(|e| panic!("{e}\n{ok}"));
        }
        let c = Config::from_toml(&two("", superset, "runner_group_id = 7")).expect("valid");
        let mut pools = c.pools.clone();
        pools[1].runner_group_id = 1;
        assert_eq!(label_overlaps(&pools), vec![("cpu".into(), "gpu".into())]);
    }

    #[test]
    fn allow_lists_default_to_where_the_app_registers_runners() {
        let app = |scope: &str, lists: &str| {
            Config::from_toml(&format!(
                "{lists}\n[github]\napp_id = 1\ninstallation_id = 2\n{scope}\n{}",
                pool_toml("")
            ))
            .expect("valid")
        };
        let org = app("organization = \"Octo-Org\"", "");
        assert_eq!(org.allowed_organizations, vec!["octo-org"]);
        assert!(org.admits(Some("octo-org/x"), Some("Octo-Org")));
        assert!(!org.admits(Some("evil/x"), Some("evil")));
        let repo = app("repository = \"Octo-Org/App\"", "");
        assert_eq!(repo.allowed_repositories, vec!["octo-org/app"]);
        assert!(!repo.admits(Some("octo-org/other"), Some("octo-org")));
        // A list the operator wrote stays as written.
        let own = app(
            "organization = \"octo-org\"",
            "allowed_organizations = [\"a\", \"b\"]",
        );
        assert_eq!(own.allowed_organizations, vec!["a", "b"]);
    }
}
