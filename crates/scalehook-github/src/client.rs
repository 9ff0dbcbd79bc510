//! [`GitHubApp`]: the core's [`GitHub`] trait over GitHub's REST API as a GitHub App.
//!
//! - The App JWT (RS256, see [`crate::key`]) authenticates the `/app/*` calls (hook
//!   deliveries, redelivery) and the exchange for an installation token
//!   (`POST /app/installations/{id}/access_tokens`); every other call uses that token, cached
//!   until [`TOKEN_REFRESH_MARGIN`] before its `expires_at`. A 401 on a cached token drops it
//!   and retries once with a fresh one.
//! - Every call has a budget ([`Budget`]): a deadline for the whole call (pages, token
//!   exchange, retries and rate-limit waits included) and a timeout per request. One retry
//!   after a network error or a 5xx, if the deadline allows.
//! - Rate limits: `x-ratelimit-remaining` / `x-ratelimit-reset` are read on every answer. A
//!   403/429 with `retry-after`, with `x-ratelimit-remaining: 0`, or whose message says it is
//!   a *secondary* rate limit (then at least [`crate::SECONDARY_LIMIT_WAIT`], doubling while they
//!   repeat: GitHub's documented rule) is waited out when the wait fits in the call's
//!   budget, else the call fails with [`GitHubError::RateLimited`]. Either way the client
//!   remembers until when it is blocked and fails every call fast until then, without
//!   spending a request.
//! - Scoped runner reads: one runner by id, runners by exact name (the list endpoint's `name`
//!   filter), a runner group's runners; a listing's budget is per page ([`Budget::call`]
//!   for each), so reading more runners takes longer instead of failing.
//! - Jobs: a 404 from the jobs API is "gone" only when the installation can see the
//!   repository (`GET /repos/{owner}/{repo}`, cached per repository).
//! - The HTTPS client (rustls with bundled roots) is built on the first call, not at start.
//! - Pagination: the `Link` header's `next` relation; only its `page` (runners) or `cursor`
//!   (deliveries) is taken, and the request is rebuilt on the configured base URL, so an
//!   answer can never send the token to another host.

use crate::http::{
    next_link_param, path_only, query_value, read_answer, repo_path, segment, status_error,
    unix_now, Answer, ApiRunner, Auth, Request,
};
use crate::key::{AppKey, KeyError};
use crate::limits::Limits;
use async_trait::async_trait;
use scalehook_core::config::{DeliveriesSource, GitHubConfig, PoolConfig, RunnerScope};
use scalehook_core::github::{
    Delivery, DeliveryPage, GitHub, GitHubError, JitRunner, JobLookup, JobStatus, RateLimit,
    Runner, RunnerRemoval,
};
use scalehook_core::sleep::{Sleeper, TokioSleeper};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The REST API version every request asks for.
pub const API_VERSION: &str = "2022-11-28";
/// A cached installation token is replaced this long before it expires.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Runners per page (GitHub's maximum).
pub const PER_PAGE: u32 = 100;
/// At most this many pages per listing (10,000 runners): a guard against a loop.
pub const MAX_PAGES: u32 = 100;
/// A repository found not visible to the installation is asked again after this long (an
/// installation's repositories can be changed).
pub const NOT_VISIBLE_TTL: Duration = Duration::from_secs(600);

/// Time limits of GitHub calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// One HTTP request (connect, send, read the answer).
    pub request: Duration,
    /// One trait call, all of its requests, retries and waits included.
    pub call: Duration,
    /// Connecting to GitHub.
    pub connect: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            request: Duration::from_millis(2500),
            call: Duration::from_millis(3500),
            connect: Duration::from_secs(2),
        }
    }
}

impl Budget {
    /// Fits a delivery whose cloud calls must end within `cloud_timeout` (7 s by default,
    /// inside GitHub's 10 s): a GitHub call gets at most half of it.
    pub fn for_delivery(cloud_timeout: Duration) -> Self {
        let d = Self::default();
        let call = d
            .call
            .min(cloud_timeout / 2)
            .max(Duration::from_millis(100));
        Self {
            call,
            request: d.request.min(call),
            connect: d.connect.min(call),
        }
    }
}

struct CachedToken {
    token: String,
    /// Unix seconds.
    expires_at: u64,
}

/// The App's client: one per process, shared by every delivery.
pub struct GitHubApp {
    app_id: u64,
    installation_id: u64,
    api_url: String,
    scope: RunnerScope,
    key: AppKey,
    budget: Budget,
    /// Every wait (retry pause, rate limit, reset) goes through this.
    sleeper: Arc<dyn Sleeper>,
    http: OnceLock<reqwest::Client>,
    token: Mutex<Option<CachedToken>>,
    requests: AtomicU64,
    /// What is known of the rate limits.
    limits: Limits,
    /// Whose webhook's deliveries are read and redelivered.
    deliveries: DeliveriesSource,
    /// Runner group ids by lower-cased name, once looked up.
    groups: std::sync::Mutex<HashMap<String, u64>>,
    /// Repository (lower case) -> visible to the installation, and when that was learnt.
    visible: std::sync::Mutex<HashMap<String, (bool, Instant)>>,
}

impl std::fmt::Debug for GitHubApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubApp")
            .field("app_id", &self.app_id)
            .field("installation_id", &self.installation_id)
            .field("api_url", &self.api_url)
            .field("scope", &self.scope)
            .field("deliveries", &self.deliveries)
            .field("key", &self.key)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl GitHubApp {
    /// The client for `config`'s App installation, signing with `key`.
    pub fn new(config: &GitHubConfig, key: AppKey, budget: Budget) -> Self {
        Self {
            app_id: config.app_id,
            installation_id: config.installation_id,
            api_url: config.api_url.trim_end_matches('/').to_string(),
            scope: config.scope.clone(),
            key,
            budget,
            sleeper: Arc::new(TokioSleeper),
            http: OnceLock::new(),
            token: Mutex::new(None),
            requests: AtomicU64::new(0),
            limits: Limits::default(),
            deliveries: config.deliveries.clone(),
            groups: std::sync::Mutex::new(HashMap::new()),
            visible: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Waits with `sleeper` instead of tokio's timer (tests record the waits asked for).
    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// The HTTPS client, built on first use (rustls, bundled web PKI roots, no redirects).
    fn http(&self) -> Result<&reqwest::Client, GitHubError> {
        if let Some(c) = self.http.get() {
            return Ok(c);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(self.budget.connect)
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("scalehook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GitHubError::Unavailable(format!("HTTP client: {e}")))?;
        let _ = self.http.set(client);
        self.http
            .get()
            .ok_or_else(|| GitHubError::Unavailable("HTTP client".into()))
    }

    /// The scope's API path: `/orgs/{org}` or `/repos/{owner}/{repo}`.
    fn scope_path(&self) -> Result<String, GitHubError> {
        match &self.scope {
            RunnerScope::Organization(org) => {
                Ok(format!("/orgs/{}", segment(org, "organization")?))
            }
            RunnerScope::Repository(repo) => repo_path(repo),
        }
    }

    fn jwt(&self) -> Result<String, GitHubError> {
        self.key
            .jwt(self.app_id, unix_now())
            .map_err(|e: KeyError| {
                GitHubError::Unauthorized(format!("cannot sign the App JWT: {e}"))
            })
    }

    /// One trait call: `f` within the call budget.
    async fn within<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, GitHubError>>,
    ) -> Result<T, GitHubError> {
        match tokio::time::timeout(self.budget.call, f).await {
            Ok(r) => r,
            Err(_) => Err(GitHubError::Unavailable(format!(
                "{what}: no answer within {} ms",
                self.budget.call.as_millis()
            ))),
        }
    }

    /// A cached installation token, or a new one. `stale` is a token GitHub just refused:
    /// if it is still the cached one it is replaced.
    async fn installation_token(
        &self,
        deadline: Instant,
        stale: Option<&str>,
    ) -> Result<String, GitHubError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            let fresh = unix_now() + TOKEN_REFRESH_MARGIN.as_secs() < t.expires_at;
            if fresh && stale != Some(t.token.as_str()) {
                return Ok(t.token.clone());
            }
        }
        *cached = None;
        let jwt = self.jwt()?;
        let req = Request {
            method: reqwest::Method::POST,
            path: format!("/app/installations/{}/access_tokens", self.installation_id),
            body: None,
        };
        let answer = self.execute(&req, &jwt, deadline).await?;
        if answer.status != 201 {
            return Err(match answer.status {
                401 | 403 | 404 => GitHubError::Unauthorized(format!(
                    "installation token for installation {}: {}",
                    self.installation_id,
                    answer.message()
                )),
                _ => status_error("installation token", &answer),
            });
        }
        #[derive(Deserialize)]
        struct Token {
            token: String,
            expires_at: String,
        }
        let t: Token = answer.json("installation token")?;
        let expires_at = scalehook_core::trace::parse_rfc3339(&t.expires_at).ok_or_else(|| {
            GitHubError::Unavailable("installation token: expires_at is not a time".into())
        })?;
        tracing::debug!(target: "scalehook::github", expires_at, "new installation token");
        *cached = Some(CachedToken {
            token: t.token.clone(),
            expires_at,
        });
        Ok(t.token)
    }

    /// A request authenticated as `auth`, with one token refresh on a 401.
    async fn call(
        &self,
        auth: Auth,
        req: Request,
        deadline: Instant,
    ) -> Result<Answer, GitHubError> {
        match auth {
            Auth::App => {
                let jwt = self.jwt()?;
                self.execute(&req, &jwt, deadline).await
            }
            Auth::Installation => {
                let token = self.installation_token(deadline, None).await?;
                let answer = self.execute(&req, &token, deadline).await?;
                if answer.status != 401 {
                    return Ok(answer);
                }
                tracing::info!(target: "scalehook::github", "installation token refused (401): refreshing it once");
                let token = self.installation_token(deadline, Some(&token)).await?;
                self.execute(&req, &token, deadline).await
            }
        }
    }

    /// Sends one request (retrying once after a network error or 5xx, and waiting out a
    /// rate limit that fits before `deadline`); answers every other status as it came.
    async fn execute(
        &self,
        req: &Request,
        credential: &str,
        deadline: Instant,
    ) -> Result<Answer, GitHubError> {
        let mut retried = false;
        let mut waits = 0;
        loop {
            self.limits
                .before_request(self.sleeper.as_ref(), deadline)
                .await?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(GitHubError::Unavailable(format!(
                    "{} {}: call budget spent",
                    req.method,
                    path_only(&req.path)
                )));
            }
            let url = format!("{}{}", self.api_url, req.path);
            let mut builder = self
                .http()?
                .request(req.method.clone(), &url)
                .timeout(self.budget.request.min(left))
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", API_VERSION)
                .header("Authorization", format!("Bearer {credential}"));
            if let Some(body) = &req.body {
                builder = builder
                    .header("Content-Type", "application/json")
                    .body(body.clone());
            }
            let started = Instant::now();
            self.requests.fetch_add(1, Ordering::Relaxed);
            let answer = match builder.send().await {
                Ok(resp) => read_answer(resp).await,
                Err(e) => Err(e),
            };
            let answer = match answer {
                Ok(a) => a,
                Err(e) => {
                    let problem = format!(
                        "{} {}: {}",
                        req.method,
                        path_only(&req.path),
                        e.without_url()
                    );
                    if !retried && deadline > Instant::now() + Duration::from_millis(100) {
                        retried = true;
                        tracing::info!(target: "scalehook::github", %problem, "retrying once");
                        self.sleeper.sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    return Err(GitHubError::Unavailable(problem));
                }
            };
            self.limits.note(&answer);
            tracing::debug!(
                target: "scalehook::github",
                method = %req.method,
                path = %path_only(&req.path),
                status = answer.status,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "github request"
            );
            if let Some(wait) = self.limits.wait_for(&answer) {
                if waits < 2 && Instant::now() + wait < deadline {
                    waits += 1;
                    tracing::info!(target: "scalehook::github", wait_ms = wait.as_millis() as u64, "rate limited: waiting");
                    self.sleeper.sleep(wait).await;
                    self.limits.waited();
                    continue;
                }
                return Err(GitHubError::RateLimited {
                    retry_after_secs: wait.as_secs().max(1),
                });
            }
            if answer.status >= 500 {
                if !retried && deadline > Instant::now() + Duration::from_millis(100) {
                    retried = true;
                    self.sleeper.sleep(Duration::from_millis(50)).await;
                    continue;
                }
                return Err(status_error(
                    &format!("{} {}", req.method, path_only(&req.path)),
                    &answer,
                ));
            }
            return Ok(answer);
        }
    }

    /// A GET of `path` with a fresh call deadline.
    async fn get(&self, auth: Auth, path: String) -> Result<Answer, GitHubError> {
        let req = Request {
            method: reqwest::Method::GET,
            path,
            body: None,
        };
        self.call(auth, req, self.deadline()).await
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.budget.call
    }

    /// Walks a paginated listing (`base`: path with `per_page`), handing each page's answer
    /// to `page` until it returns `true` (found what it looked for; the walk returns
    /// `true`) or the last page (`false`). Each page has its own budget ([`Budget::call`]),
    /// so a larger listing takes longer rather than failing at a fixed time; at most
    /// [`MAX_PAGES`] pages.
    async fn walk_pages(
        &self,
        what: &str,
        base: String,
        mut page: impl FnMut(&Answer) -> Result<bool, GitHubError>,
    ) -> Result<bool, GitHubError> {
        let mut path = base.clone();
        for _ in 0..MAX_PAGES {
            let answer = self
                .within(what, self.get(Auth::Installation, path))
                .await?;
            if answer.status != 200 {
                return Err(status_error(what, &answer));
            }
            if page(&answer)? {
                return Ok(true);
            }
            match answer
                .header("link")
                .and_then(|l| next_link_param(l, "page"))
                .and_then(|p| p.parse::<u32>().ok())
            {
                Some(n) => path = format!("{base}&page={n}"),
                None => return Ok(false),
            }
        }
        Err(GitHubError::Unavailable(format!(
            "{what}: more than {MAX_PAGES} pages"
        )))
    }

    /// Every runner a runners listing gives, all pages.
    async fn list_runners_at(&self, what: &str, base: String) -> Result<Vec<Runner>, GitHubError> {
        #[derive(Deserialize)]
        struct Page {
            runners: Vec<ApiRunner>,
        }
        let mut out = Vec::new();
        self.walk_pages(what, base, |answer| {
            let page: Page = answer.json(what)?;
            out.extend(page.runners.into_iter().map(ApiRunner::into_runner));
            Ok(false)
        })
        .await?;
        Ok(out)
    }

    /// The runner group id named `name` (`GET /orgs/{org}/actions/runner-groups`, pages
    /// until found), cached for the process.
    async fn runner_group_named(&self, pool: &PoolConfig, name: &str) -> Result<u64, GitHubError> {
        let key = name.to_ascii_lowercase();
        let cached = |key: &str| {
            self.groups
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(key)
                .copied()
        };
        if let Some(id) = cached(&key) {
            return Ok(id);
        }
        let RunnerScope::Organization(org) = &self.scope else {
            return Err(GitHubError::Rejected(format!(
                "pool {:?}: runner_group {name:?}: runner groups belong to an organization; a repository's runners have none (remove runner_group or use organization scope)",
                pool.name
            )));
        };
        #[derive(Deserialize)]
        struct Page {
            runner_groups: Vec<Group>,
        }
        #[derive(Deserialize)]
        struct Group {
            id: u64,
            name: String,
        }
        let base = format!(
            "/orgs/{}/actions/runner-groups?per_page={PER_PAGE}",
            segment(org, "organization")?
        );
        let what = "list runner groups";
        self.walk_pages(what, base, |answer| {
            let page: Page = answer.json(what)?;
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            for g in page.runner_groups {
                groups.insert(g.name.to_ascii_lowercase(), g.id);
            }
            Ok(groups.contains_key(&key))
        })
        .await?;
        cached(&key).ok_or_else(|| scalehook_core::github::unknown_group(pool, name))
    }

    /// Whether the installation can see `repository` (`GET /repos/{owner}/{repo}`: 404 =
    /// not visible). Visible is cached for the process, not visible for [`NOT_VISIBLE_TTL`].
    async fn repository_visible(&self, repository: &str) -> Result<bool, GitHubError> {
        let key = repository.to_ascii_lowercase();
        if let Some((visible, at)) = self
            .visible
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if *visible || at.elapsed() < NOT_VISIBLE_TTL {
                return Ok(*visible);
            }
        }
        let answer = self.get(Auth::Installation, repo_path(repository)?).await?;
        let visible = match answer.status {
            200 => true,
            404 => false,
            _ => return Err(status_error("get repository", &answer)),
        };
        self.visible
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (visible, Instant::now()));
        Ok(visible)
    }

    /// The deliveries listing and redelivery paths of the configured webhook, and how they
    /// authenticate (the App's hook takes the JWT; an org or repo hook the installation
    /// token with `organization_hooks` / `repository_hooks`).
    fn hook_path(&self) -> Result<(String, Auth), GitHubError> {
        Ok(match &self.deliveries {
            DeliveriesSource::AppHook => ("/app/hook".to_string(), Auth::App),
            DeliveriesSource::OrgHook { org, hook_id } => (
                format!("/orgs/{}/hooks/{hook_id}", segment(org, "organization")?),
                Auth::Installation,
            ),
            DeliveriesSource::RepoHook {
                repository,
                hook_id,
            } => (
                format!("{}/hooks/{hook_id}", repo_path(repository)?),
                Auth::Installation,
            ),
        })
    }

    /// A 403/404 from a hook endpoint, saying which permission the installation needs.
    fn hook_error(&self, what: &str, answer: &Answer) -> GitHubError {
        let need = match &self.deliveries {
            DeliveriesSource::AppHook => return status_error(what, answer),
            DeliveriesSource::OrgHook { .. } => {
                "the App needs the organization permission Webhooks (organization_hooks): read to list deliveries, write to redeliver"
            }
            DeliveriesSource::RepoHook { .. } => {
                "the App needs the repository permission Webhooks (repository_hooks): read to list deliveries, write to redeliver"
            }
        };
        match answer.status {
            403 | 404 => GitHubError::Unauthorized(format!(
                "{what} ({}): {} ({need}; is hook_id right?)",
                self.deliveries,
                answer.message()
            )),
            _ => status_error(what, answer),
        }
    }
}

#[async_trait]
impl GitHub for GitHubApp {
    async fn runners(&self) -> Result<Vec<Runner>, GitHubError> {
        let base = format!("{}/actions/runners?per_page={PER_PAGE}", self.scope_path()?);
        self.list_runners_at("list runners", base).await
    }

    async fn runner(&self, runner_id: u64) -> Result<Option<Runner>, GitHubError> {
        self.within("get runner", async {
            let path = format!("{}/actions/runners/{runner_id}", self.scope_path()?);
            let answer = self.get(Auth::Installation, path).await?;
            match answer.status {
                200 => Ok(Some(answer.json::<ApiRunner>("get runner")?.into_runner())),
                404 => Ok(None),
                _ => Err(status_error("get runner", &answer)),
            }
        })
        .await
    }

    async fn runners_named(&self, name: &str) -> Result<Vec<Runner>, GitHubError> {
        let base = format!(
            "{}/actions/runners?name={}&per_page={PER_PAGE}",
            self.scope_path()?,
            query_value(name)
        );
        self.list_runners_at("list runners by name", base).await
    }

    async fn runners_in_group(&self, group_id: u64) -> Result<Vec<Runner>, GitHubError> {
        let base = match &self.scope {
            RunnerScope::Organization(org) => format!(
                "/orgs/{}/actions/runner-groups/{group_id}/runners?per_page={PER_PAGE}",
                segment(org, "organization")?
            ),
            // A repository's runners have no groups: all of them.
            RunnerScope::Repository(_) => {
                format!("{}/actions/runners?per_page={PER_PAGE}", self.scope_path()?)
            }
        };
        self.list_runners_at("list runners in group", base).await
    }

    async fn pool_runner_group(&self, pool: &PoolConfig) -> Result<u64, GitHubError> {
        match pool.runner_group_to_look_up() {
            None => Ok(pool.runner_group_id),
            Some(name) => self.runner_group_named(pool, name).await,
        }
    }

    async fn remove_runner(&self, runner_id: u64) -> Result<RunnerRemoval, GitHubError> {
        self.within("remove runner", async {
            let req = Request {
                method: reqwest::Method::DELETE,
                path: format!("{}/actions/runners/{runner_id}", self.scope_path()?),
                body: None,
            };
            let answer = self.call(Auth::Installation, req, self.deadline()).await?;
            match answer.status {
                204 => Ok(RunnerRemoval::Removed),
                // GitHub refuses to remove a runner that is running a job:
                // `422 Bad request - Runner "x" is still running a job`.
                422 => Ok(RunnerRemoval::Busy),
                404 => Ok(RunnerRemoval::Gone),
                _ => Err(status_error("remove runner", &answer)),
            }
        })
        .await
    }

    async fn job(&self, repository: &str, job_id: u64) -> Result<Option<JobStatus>, GitHubError> {
        match self.job_state(repository, job_id).await? {
            JobLookup::Found(s) => Ok(Some(s)),
            JobLookup::Gone => Ok(None),
            JobLookup::NotVisible => Err(scalehook_core::github::not_visible(repository)),
        }
    }

    async fn job_state(&self, repository: &str, job_id: u64) -> Result<JobLookup, GitHubError> {
        self.within("get job", async {
            let path = format!("{}/actions/jobs/{job_id}", repo_path(repository)?);
            let answer = self.get(Auth::Installation, path).await?;
            match answer.status {
                200 => {
                    #[derive(Deserialize)]
                    struct Job {
                        status: String,
                        runner_name: Option<String>,
                    }
                    let j: Job = answer.json("get job")?;
                    Ok(JobLookup::Found(JobStatus {
                        status: j.status,
                        runner_name: j.runner_name.filter(|n| !n.is_empty()),
                    }))
                }
                // An installation token gets 404 for a repository outside the installation
                // too: "gone" only where the repository itself is visible.
                404 => Ok(if self.repository_visible(repository).await? {
                    JobLookup::Gone
                } else {
                    JobLookup::NotVisible
                }),
                _ => Err(status_error("get job", &answer)),
            }
        })
        .await
    }

    fn deliveries_source(&self) -> String {
        self.deliveries.to_string()
    }

    async fn deliveries(&self, cursor: Option<&str>) -> Result<DeliveryPage, GitHubError> {
        self.within("list hook deliveries", async {
            let (hook, auth) = self.hook_path()?;
            let mut path = format!("{hook}/deliveries?per_page={PER_PAGE}");
            if let Some(c) = cursor {
                path.push_str("&cursor=");
                path.push_str(&query_value(c));
            }
            let req = Request {
                method: reqwest::Method::GET,
                path,
                body: None,
            };
            let answer = self.call(auth, req, self.deadline()).await?;
            if answer.status != 200 {
                return Err(self.hook_error("list hook deliveries", &answer));
            }
            #[derive(Deserialize)]
            struct Item {
                id: u64,
                guid: String,
                delivered_at: String,
                redelivery: bool,
                status_code: u16,
                event: String,
                action: Option<String>,
            }
            let items: Vec<Item> = answer.json("list hook deliveries")?;
            let deliveries = items
                .into_iter()
                .map(|i| Delivery {
                    id: i.id,
                    guid: i.guid,
                    delivered_at: scalehook_core::trace::parse_rfc3339(&i.delivered_at)
                        .unwrap_or(0),
                    event: i.event,
                    action: i.action,
                    status_code: i.status_code,
                    redelivery: i.redelivery,
                })
                .collect();
            let next = answer
                .header("link")
                .and_then(|l| next_link_param(l, "cursor"));
            Ok(DeliveryPage { deliveries, next })
        })
        .await
    }

    async fn redeliver(&self, delivery_id: u64) -> Result<(), GitHubError> {
        self.within("redeliver", async {
            let (hook, auth) = self.hook_path()?;
            let req = Request {
                method: reqwest::Method::POST,
                path: format!("{hook}/deliveries/{delivery_id}/attempts"),
                body: None,
            };
            let answer = self.call(auth, req, self.deadline()).await?;
            match answer.status {
                202 => Ok(()),
                _ => Err(self.hook_error("redeliver", &answer)),
            }
        })
        .await
    }

    async fn jit_runner(&self, pool: &PoolConfig, name: &str) -> Result<JitRunner, GitHubError> {
        self.within("generate JIT config", async {
            if pool.labels.is_empty() {
                return Err(GitHubError::Rejected(format!(
                    "pool {:?} has no labels for its JIT runners",
                    pool.name
                )));
            }
            let runner_group_id = self.pool_runner_group(pool).await?;
            let body = serde_json::json!({
                "name": name,
                "runner_group_id": runner_group_id,
                "labels": pool.labels,
                "work_folder": "_work",
            });
            let req = Request {
                method: reqwest::Method::POST,
                path: format!("{}/actions/runners/generate-jitconfig", self.scope_path()?),
                body: Some(body.to_string().into_bytes()),
            };
            let answer = self.call(Auth::Installation, req, self.deadline()).await?;
            if answer.status != 201 {
                return Err(status_error("generate JIT config", &answer));
            }
            #[derive(Deserialize)]
            struct Jit {
                runner: JitRunnerInfo,
                encoded_jit_config: String,
            }
            #[derive(Deserialize)]
            struct JitRunnerInfo {
                id: u64,
                name: String,
            }
            let j: Jit = answer.json("generate JIT config")?;
            Ok(JitRunner {
                runner_id: j.runner.id,
                name: j.runner.name,
                encoded_jit_config: j.encoded_jit_config,
            })
        })
        .await
    }

    fn rate_limit(&self) -> RateLimit {
        self.limits.report(self.requests.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_fits_the_delivery() {
        let b = Budget::for_delivery(Duration::from_millis(7000));
        assert_eq!(b.call, Duration::from_millis(3500));
        assert!(b.request <= b.call);
        let b = Budget::for_delivery(Duration::from_millis(1000));
        assert_eq!(b.call, Duration::from_millis(500));
        assert_eq!(b.request, Duration::from_millis(500));
    }
}
