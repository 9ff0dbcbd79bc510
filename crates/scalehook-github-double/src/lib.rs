//! A GitHub REST API test double for scalehook's tests (docs/github.md).
//!
//! [`GitHubDouble::start`] runs `double/github_double.py` on a free loopback port: a small
//! GitHub that checks **every** request scalehook makes against GitHub's published OpenAPI
//! description (`@octokit/openapi`, pinned in `mk/github.mk`) and validates every answer it
//! sends against the same description. A request that does not match (unknown path or
//! method, a query parameter or body that fails its schema or names a property the schema
//! does not have, missing `Accept`/`X-GitHub-Api-Version`/`User-Agent`, the wrong kind of
//! credential) is answered 400 and recorded as a violation; dropping the double fails the
//! test when any violation was recorded (unless the test took them with
//! [`GitHubDouble::take_violations`]).
//!
//! It implements what scalehook uses: installation tokens (the App JWT is verified with the
//! App's public key), self-hosted runners (org or repo) with Link pagination, runner
//! removal (204 / 422 busy / 404), one runner by id, the exact `name` filter, runner groups
//! and their runners, jobs, repositories (visible or outside the installation), the App
//! hook's and organization or repository webhooks' deliveries with cursor pagination and
//! redelivery (which really POSTs the stored body, signed, to a webhook URL; the org/repo
//! hooks need the installation's Webhooks permission), JIT runner configurations,
//! rate-limit headers and forced throttling (primary, secondary, plain 403), 5xx, revoked
//! or expired tokens, and an added latency per answer for benchmarks.
//!
//! Needs the double's Python (jsonschema) and the description: `make github-test-deps`
//! installs both under `.tools/`; `SCALEHOOK_GITHUB_DOUBLE_PYTHON` and
//! `SCALEHOOK_GITHUB_OPENAPI` override where they are looked for.

use serde::Deserialize;
use serde_json::{json, Value};
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The double's App key (PKCS#1 PEM, the format GitHub issues). A throwaway test key.
pub const TEST_APP_KEY: &str = include_str!("../keys/test-app-key.pem");
/// The same key as PKCS#8 PEM.
pub const TEST_APP_KEY_PKCS8: &str = include_str!("../keys/test-app-key.pkcs8.pem");
/// A key the double does not know: JWTs signed with it are refused (401).
pub const OTHER_KEY: &str = include_str!("../keys/other-key.pem");

/// How to start the double.
#[derive(Debug, Clone)]
pub struct DoubleOptions {
    pub app_id: u64,
    pub installation_id: u64,
    /// Serve GitHub Enterprise Server's layout (`/api/v3` prefix) checked against the GHES
    /// description instead of github.com's.
    pub ghes: bool,
}

impl Default for DoubleOptions {
    fn default() -> Self {
        Self {
            app_id: 4242,
            installation_id: 77,
            ghes: false,
        }
    }
}

/// A runner's state when the test registers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerState {
    /// Online, no job.
    Idle,
    /// Online, running a job.
    Busy,
    /// Registered, not connected.
    Offline,
}

/// A runner as the double holds it.
#[derive(Debug, Clone, Deserialize)]
pub struct DoubleRunner {
    pub id: u64,
    pub name: String,
    pub status: String,
    pub busy: bool,
    pub ephemeral: bool,
    pub runner_group_id: u64,
    /// `org:<org>` or `repo:<owner>/<name>`, lower-cased.
    pub scope: String,
    pub labels: Vec<DoubleLabel>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DoubleLabel {
    pub name: String,
}

/// One stored delivery of the App's hook (the original and every redelivery attempt).
#[derive(Debug, Clone, Deserialize)]
pub struct DoubleDelivery {
    pub id: u64,
    pub guid: String,
    pub event: String,
    pub action: Option<String>,
    pub status_code: u16,
    pub redelivery: bool,
    pub body: String,
}

/// One request the double received (control routes excluded).
#[derive(Debug, Clone, Deserialize)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    /// `jwt`, `installation` (what the endpoint takes) or `none` (not matched).
    pub auth: String,
    /// The OpenAPI operation id it matched.
    pub operation: Option<String>,
    pub violations: Vec<String>,
}

/// A running double; stopped (and checked for violations) when dropped.
pub struct GitHubDouble {
    child: Child,
    _stdin: Option<ChildStdin>,
    origin: String,
    base_url: String,
    options: DoubleOptions,
    agent: ureq::Agent,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python with jsonschema: `SCALEHOOK_GITHUB_DOUBLE_PYTHON`, else `.tools/github-venv`.
pub fn double_python() -> PathBuf {
    std::env::var_os("SCALEHOOK_GITHUB_DOUBLE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/github-venv/bin/python"))
}

/// The folder of `@octokit/openapi`'s generated descriptions.
pub fn openapi_dir() -> PathBuf {
    std::env::var_os("SCALEHOOK_GITHUB_OPENAPI")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root().join(".tools/github-openapi/node_modules/@octokit/openapi/generated")
        })
}

const HINT: &str =
    "run `make github-test-deps` (installs @octokit/openapi and jsonschema under .tools/), \
or set SCALEHOOK_GITHUB_DOUBLE_PYTHON and SCALEHOOK_GITHUB_OPENAPI";

impl GitHubDouble {
    /// A github.com double with the default App (id 4242, installation 77, [`TEST_APP_KEY`]).
    pub fn start() -> Self {
        Self::start_with(DoubleOptions::default())
    }

    pub fn start_with(options: DoubleOptions) -> Self {
        let python = double_python();
        let spec = openapi_dir().join(if options.ghes {
            "ghes-3.19.json"
        } else {
            "api.github.com.json"
        });
        assert!(python.exists(), "no Python at {}: {HINT}", python.display());
        assert!(
            spec.exists(),
            "no OpenAPI description at {}: {HINT}",
            spec.display()
        );
        let key = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("keys/test-app-key.pem");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("double/github_double.py");
        let mut cmd = Command::new(&python);
        cmd.arg(&script)
            .args(["127.0.0.1", "0", "--spec"])
            .arg(&spec)
            .arg("--app-key")
            .arg(&key)
            .args(["--app-id", &options.app_id.to_string()])
            .args(["--installation-id", &options.installation_id.to_string()]);
        if options.ghes {
            cmd.args(["--prefix", "/api/v3"]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}: {HINT}", python.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the double's first line");
        let origin = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("the GitHub double did not start ({line:?}): {HINT}"))
            .to_string();
        let base_url = if options.ghes {
            format!("{origin}/api/v3")
        } else {
            origin.clone()
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let _stdin = child.stdin.take();
        GitHubDouble {
            child,
            _stdin,
            origin,
            base_url,
            options,
            agent,
        }
    }

    /// The API base URL (`http://127.0.0.1:<port>`, or `.../api/v3` for GHES): what
    /// `[github] api_url` takes.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn app_id(&self) -> u64 {
        self.options.app_id
    }

    pub fn installation_id(&self) -> u64 {
        self.options.installation_id
    }

    /// A `[github]` section pointing at this double; `scope` is `org` or `owner/name`.
    pub fn config_toml(&self, scope: &str) -> String {
        let scope_line = if scope.contains('/') {
            format!("repository = \"{scope}\"")
        } else {
            format!("organization = \"{scope}\"")
        };
        format!(
            "[github]\napp_id = {}\ninstallation_id = {}\napi_url = \"{}\"\n{scope_line}\n",
            self.options.app_id, self.options.installation_id, self.base_url
        )
    }

    fn control(&self, method: &str, what: &str, arg: Value) -> Value {
        let url = format!("{}/_double/{what}", self.origin);
        let result = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            "PATCH" => self
                .agent
                .patch(&url)
                .header("Content-Type", "application/json")
                .send(arg.to_string()),
            _ => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(arg.to_string()),
        };
        let mut resp = result.unwrap_or_else(|e| panic!("GitHub double {what}: {e}"));
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| panic!("GitHub double {what}: {e}"));
        assert_eq!(status, 200, "GitHub double {method} {what}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GitHub double {what}: {e}"))
    }

    /// Registers a runner in `scope` (`org` or `owner/name`) with the default labels
    /// (`self-hosted`, `linux`, `x64`); returns its id.
    pub fn add_runner(&self, scope: &str, name: &str, state: RunnerState) -> u64 {
        self.add_runner_with_labels(scope, name, state, &["self-hosted", "linux", "x64"])
    }

    pub fn add_runner_with_labels(
        &self,
        scope: &str,
        name: &str,
        state: RunnerState,
        labels: &[&str],
    ) -> u64 {
        self.register(scope, name, state, json!({ "labels": labels }))
    }

    /// Registers a runner in runner group `group` (org scope); returns its id.
    pub fn add_runner_in_group(
        &self,
        scope: &str,
        name: &str,
        state: RunnerState,
        group: u64,
    ) -> u64 {
        self.register(scope, name, state, json!({ "group": group }))
    }

    fn register(&self, scope: &str, name: &str, state: RunnerState, extra: Value) -> u64 {
        let key = if scope.contains('/') { "repo" } else { "org" };
        let mut arg = json!({
            key: scope,
            "name": name,
            "status": if state == RunnerState::Offline { "offline" } else { "online" },
            "busy": state == RunnerState::Busy,
        });
        if let (Some(arg), Value::Object(extra)) = (arg.as_object_mut(), extra) {
            arg.extend(extra);
        }
        let out = self.control("POST", "runners", arg);
        out["id"].as_u64().expect("runner id")
    }

    /// Registers many idle runners in `scope` and runner group `group` with one control
    /// call (benchmarks with thousands of runners); returns their ids.
    pub fn add_runners(&self, scope: &str, names: &[String], group: u64) -> Vec<u64> {
        let key = if scope.contains('/') { "repo" } else { "org" };
        let out = self.control(
            "POST",
            "runners-bulk",
            json!({key: scope, "names": names, "group": group}),
        );
        serde_json::from_value(out["ids"].clone()).expect("runner ids")
    }

    /// Creates an organization runner group named `name`; returns its id (the default group
    /// is 1, `Default`).
    pub fn add_runner_group(&self, name: &str) -> u64 {
        let out = self.control("POST", "runner-groups", json!({"name": name}));
        out["id"].as_u64().expect("group id")
    }

    /// `owner/name` is outside the App's installation: `GET /repos/{owner}/{repo}` and its
    /// jobs answer 404.
    pub fn hide_repository(&self, repository: &str) {
        self.control("POST", "repositories", json!({"hide": [repository]}));
    }

    /// The installation's permissions (`{"organization_hooks": "read", ...}`) from now on:
    /// the hook deliveries endpoints answer 403 without theirs.
    pub fn set_permissions(&self, permissions: Value) {
        self.control("POST", "permissions", json!({"permissions": permissions}));
    }

    /// Every API answer waits `ms` milliseconds first (benchmarks: GitHub's latency).
    pub fn set_latency_ms(&self, ms: u64) {
        self.control("POST", "latency", json!({"ms": ms}));
    }

    /// GitHub assigning the runner a job (`true`) or the job ending (`false`).
    pub fn set_busy(&self, name: &str, busy: bool) {
        self.control("PATCH", "runner", json!({"name": name, "busy": busy}));
    }

    /// The runner connecting (`true`) or going away (`false`).
    pub fn set_online(&self, name: &str, online: bool) {
        let status = if online { "online" } else { "offline" };
        self.control("PATCH", "runner", json!({"name": name, "status": status}));
    }

    /// Removes a registration as an ephemeral runner's exit does.
    pub fn unregister(&self, name: &str) {
        self.control("PATCH", "runner", json!({"name": name, "remove": true}));
    }

    /// Every registered runner.
    pub fn runners(&self) -> Vec<DoubleRunner> {
        serde_json::from_value(self.control("GET", "runners", Value::Null)).expect("runners")
    }

    /// Sets what the jobs API answers for `repository`'s job `job_id`.
    pub fn set_job(&self, repository: &str, job_id: u64, status: &str, runner_name: Option<&str>) {
        self.control(
            "POST",
            "jobs",
            json!({"repository": repository, "id": job_id, "status": status, "runner_name": runner_name}),
        );
    }

    /// Stores a delivery of the App's hook that got `status_code` (0: no answer), with
    /// the exact `body` a redelivery will send; returns (id, guid).
    pub fn add_delivery(
        &self,
        event: &str,
        action: Option<&str>,
        body: &str,
        status_code: u16,
    ) -> (u64, String) {
        self.add_hook_delivery("app", event, action, body, status_code)
    }

    /// Stores a delivery of an organization (`org:<org>:<hook id>`, org lower case) or
    /// repository (`repo:<owner>/<name>:<hook id>`) webhook; `app` is the App's. Returns
    /// (id, guid).
    pub fn add_hook_delivery(
        &self,
        hook: &str,
        event: &str,
        action: Option<&str>,
        body: &str,
        status_code: u16,
    ) -> (u64, String) {
        let out = self.control(
            "POST",
            "deliveries",
            json!({"hook": hook, "event": event, "action": action, "body": body, "status_code": status_code}),
        );
        (
            out["id"].as_u64().expect("delivery id"),
            out["guid"].as_str().expect("guid").to_string(),
        )
    }

    /// Every delivery attempt, oldest first (redeliveries are appended when they finish).
    pub fn deliveries(&self) -> Vec<DoubleDelivery> {
        serde_json::from_value(self.control("GET", "deliveries", Value::Null)).expect("deliveries")
    }

    /// Where redeliveries are POSTed, and the webhook secret they are signed with.
    pub fn set_webhook(&self, url: &str, secret: &str) {
        self.control("POST", "webhook", json!({"url": url, "secret": secret}));
    }

    /// The next `count` API requests are refused with `status` (403 or 429) and, when set,
    /// `retry-after: <secs>`, or `x-ratelimit-remaining: 0` with a reset `reset_in` seconds
    /// away.
    pub fn throttle_next(
        &self,
        count: u32,
        status: u16,
        retry_after: Option<u64>,
        reset_in: Option<u64>,
    ) {
        self.control(
            "POST",
            "rate-limit",
            json!({"count": count, "status": status, "retry_after": retry_after,
                   "remaining0": reset_in.is_some(), "reset_in": reset_in.unwrap_or(0)}),
        );
    }

    /// The next `count` API requests are refused with `status` (403/429) and `message`,
    /// without `retry-after` and with requests remaining (a secondary rate limit when the
    /// message says so; otherwise what a missing permission looks like).
    pub fn refuse_next(&self, count: u32, status: u16, message: &str) {
        self.control(
            "POST",
            "rate-limit",
            json!({"count": count, "status": status, "message": message}),
        );
    }

    /// The next `count` API requests fail with `status` (a 5xx).
    pub fn fail_next(&self, count: u32, status: u16) {
        self.control("POST", "fail", json!({"count": count, "status": status}));
    }

    /// Every installation token issued so far is refused from now on (401).
    pub fn revoke_tokens(&self) {
        self.control("POST", "tokens", json!({"revoke": true}));
    }

    /// Every installation token issued so far expires now (401).
    pub fn expire_tokens(&self) {
        self.control("POST", "tokens", json!({"expire": true}));
    }

    /// Lifetime of the tokens issued from now on (GitHub: 1 h).
    pub fn set_token_lifetime(&self, secs: u64) {
        self.control("POST", "tokens", json!({"lifetime": secs}));
    }

    /// Every API request so far, in order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        serde_json::from_value(self.control("GET", "log", Value::Null)).expect("request log")
    }

    /// The API requests so far that matched `operation` (an OpenAPI operation id).
    pub fn count(&self, operation: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.operation.as_deref() == Some(operation))
            .count()
    }

    /// Violations recorded so far (requests or answers that do not match the description).
    pub fn violations(&self) -> Vec<String> {
        serde_json::from_value(self.control("GET", "violations", Value::Null)).expect("violations")
    }

    /// Returns and clears the violations: for tests that send a wrong request on purpose.
    pub fn take_violations(&self) -> Vec<String> {
        let v = self.violations();
        self.control("DELETE", "violations", Value::Null);
        v
    }

    /// Sends a request as-is (for tests of the double itself); returns (status, body).
    pub fn raw(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, String) {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.base_url));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(body.unwrap_or("").as_bytes().to_vec())
            .expect("a request");
        let mut resp = self.agent.run(req).expect("the double answers");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    }

    /// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
    pub fn wait_until(&self, timeout: Duration, mut cond: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GitHubDouble {
    fn drop(&mut self) {
        let violations = if std::thread::panicking() {
            Vec::new()
        } else {
            self.violations()
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !violations.is_empty() {
            panic!(
                "the GitHub double saw {} request(s)/answer(s) that do not match GitHub's OpenAPI description:\n  {}",
                violations.len(),
                violations.join("\n  ")
            );
        }
    }
}
