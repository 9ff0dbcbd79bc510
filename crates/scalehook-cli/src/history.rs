//! `scalehook history`: the organisation's (or repository's) recent workflow jobs, read with
//! the GitHub App (crates/scalehook-github: its client, pagination and rate-limit handling),
//! written as a timed trace that `scalehook simulate` reads (the format is the core's
//! `trace` module: `history_lines`; docs/traces.md).

use crate::cli::HistoryArgs;
use crate::setup::load_config;
use anyhow::Context as _;
use scalehook_core::config::{GitHubConfig, RunnerScope};
use scalehook_core::trace::{history_lines, Written};
use scalehook_github::client::HistoryProgress;
use scalehook_github::{Budget, GitHubApp, APP_KEY_ENV};
use std::io::Write as _;

pub fn run(args: HistoryArgs) -> anyhow::Result<()> {
    let (config, _) = load_config(args.config.as_deref())?;
    let client = client(&args, config.github.as_ref())?;
    let since = since(args.days)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} repositories {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let written = runtime.block_on(write_trace(&client, &since, &args.out, |p| {
        bar.set_length(p.repositories);
        bar.set_position(p.repositories_done);
        bar.set_message(format!(
            "{} runs, {} jobs{}",
            p.runs,
            p.jobs,
            if p.waited_secs > 0 {
                format!(", {} s waited for rate limits", p.waited_secs)
            } else {
                String::new()
            }
        ));
    }))?;
    bar.finish_and_clear();
    println!(
        "scalehook history: {} jobs since {since} written to {} ({} lines); {} left out (not completed)",
        written.jobs,
        args.out.display(),
        written.lines,
        written.left_out
    );
    Ok(())
}

/// The App's client, or with `--token-env` one that sends the user's token.
fn client(args: &HistoryArgs, github: Option<&GitHubConfig>) -> anyhow::Result<GitHubApp> {
    let Some(name) = &args.token_env else {
        let github = github.context(
            "scalehook history reads the jobs with the GitHub App: the configuration needs a [github] section \
             (docs/github.md), or give a token with --token-env",
        )?;
        let key =
            scalehook_github::key_from_lookup(|k| std::env::var(k).ok())?.with_context(|| {
                format!("no GitHub App key: set {APP_KEY_ENV}, or give a token with --token-env")
            })?;
        return Ok(GitHubApp::new(github, key, Budget::default()));
    };
    let token = std::env::var(name)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .with_context(|| format!("--token-env {name}: the variable is not set"))?;
    let scope = match (&args.organization, &args.repository, github) {
        (Some(org), _, _) => RunnerScope::Organization(org.clone()),
        (None, Some(repo), _) => RunnerScope::Repository(repo.clone()),
        (None, None, Some(g)) => g.scope.clone(),
        (None, None, None) => {
            anyhow::bail!("--token-env: say whose jobs to read with --organization or --repository")
        }
    };
    let api_url = args
        .api_url
        .clone()
        .or_else(|| github.map(|g| g.api_url.clone()))
        .unwrap_or_else(|| "https://api.github.com".into());
    // The rule [github] api_url follows.
    anyhow::ensure!(
        api_url.starts_with("https://") || api_url.starts_with("http://"),
        "--api-url must be an http(s) URL such as https://api.github.com or https://ghe.example.com/api/v3"
    );
    let config = GitHubConfig {
        app_id: 0,
        installation_id: 0,
        api_url,
        scope,
        boot_grace: scalehook_core::config::DEFAULT_BOOT_GRACE,
        recheck_after: scalehook_core::config::DEFAULT_RECHECK_AFTER,
        deliveries: scalehook_core::config::DeliveriesSource::AppHook,
    };
    Ok(GitHubApp::with_token(
        &config,
        token.trim().to_string(),
        Budget::default(),
    ))
}

/// `days` before now, as RFC 3339 (whole seconds, UTC).
fn since(days: u64) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("clock before 1970")?
        .as_secs();
    Ok(scalehook_sim::report::rfc3339(
        now.saturating_sub(days.saturating_mul(86_400)),
    ))
}

/// Reads the jobs and writes the trace to `out`.
pub async fn write_trace(
    client: &GitHubApp,
    since: &str,
    out: &std::path::Path,
    progress: impl FnMut(&HistoryProgress),
) -> anyhow::Result<Written> {
    let jobs = client
        .workflow_jobs(since, progress)
        .await
        .context("cannot read the workflow jobs")?;
    let organization = match client.scope() {
        RunnerScope::Organization(o) => Some(o.clone()),
        RunnerScope::Repository(_) => None,
    };
    let (text, written) = history_lines(&jobs, organization.as_deref());
    let mut file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalehook_core::{Config, RecordingSleeper};
    use scalehook_github_double::{GitHubDouble, TEST_APP_KEY};
    use scalehook_sim::{simulate, SimOptions, Workload};
    use std::time::Duration;

    const LABELS: &[&str] = &["self-hosted", "linux", "x64"];

    /// Issue 24: `history` reads an organisation's jobs from the API (installation
    /// repositories, then runs, then jobs, every listing paginated; every request checked
    /// against GitHub's OpenAPI description by the double), waits out a rate limit longer
    /// than a page's budget, and writes a trace `simulate` reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_the_orgs_jobs_into_a_trace_simulate_reads() {
        let double = GitHubDouble::start();
        // 120 jobs in one run: two pages of jobs; a second repository; one job still running.
        for n in 0..120u64 {
            let start = format!("2030-01-06T09:{:02}:{:02}Z", n / 60, n % 60);
            let queued = format!("2030-01-06T08:59:{:02}Z", n % 60);
            let end = format!("2030-01-06T10:{:02}:{:02}Z", n / 60, n % 60);
            double.add_finished_job(
                "acme/app",
                500,
                1000 + n,
                LABELS,
                [&queued, &start],
                Some(&end),
            );
        }
        double.add_finished_job(
            "acme/lib",
            600,
            2000,
            &["self-hosted", "k8s"],
            ["2030-01-06T11:00:00Z", "2030-01-06T11:00:30Z"],
            Some("2030-01-06T11:05:30Z"),
        );
        double.add_finished_job(
            "acme/lib",
            601,
            2001,
            LABELS,
            ["2030-01-06T12:00:00Z", "2030-01-06T12:00:10Z"],
            None,
        );
        // The first request is refused for 30 s: longer than a page's budget.
        double.throttle_next(1, 403, Some(30), None);
        let config = Config::from_toml(&format!(
            "[[pools]]\nname = \"x\"\nlabels = [\"x\"]\nmax = 1\n{}",
            double.config_toml("acme")
        ))
        .expect("config");
        let key = scalehook_github::AppKey::from_pem(TEST_APP_KEY, APP_KEY_ENV).expect("key");
        let sleeper = RecordingSleeper::new();
        let client = GitHubApp::new(
            config.github.as_ref().expect("[github]"),
            key,
            Budget::default(),
        )
        .with_sleeper(sleeper.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("history.jsonl");
        let mut last = HistoryProgress::default();
        let written = write_trace(&client, "2030-01-01T00:00:00Z", &out, |p| last = *p)
            .await
            .expect("history");
        assert_eq!(
            written,
            Written {
                jobs: 121,
                left_out: 1,
                lines: 363
            }
        );
        assert_eq!(
            (
                last.repositories,
                last.repositories_done,
                last.runs,
                last.jobs
            ),
            (2, 2, 3, 122)
        );
        assert!(
            sleeper.take().contains(&Duration::from_secs(30)),
            "the rate limit was waited out"
        );
        assert_eq!(
            double.count("actions/list-jobs-for-workflow-run"),
            4,
            "run 500 took two pages"
        );
        assert!(double.take_violations().is_empty());

        let workload = Workload::from_file(&out).expect("simulate reads the trace");
        assert_eq!(workload.jobs.len(), 121);
        let report = simulate(
            &Config::embedded_default(),
            workload,
            &SimOptions::default(),
        )
        .await
        .expect("simulates");
        let pool = report.pool("linux-x64").expect("routed");
        assert_eq!(pool.policies[0].jobs, 120);
        assert!(report.pool("k8s").is_some());
    }

    /// `--token-env`: the same walk with the user's token, the organisation's repositories
    /// from `GET /orgs/{org}/repos`, no App call (the double would refuse a token on /app/*
    /// and records every request).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_with_a_users_token() {
        let double = GitHubDouble::start();
        double.add_finished_job(
            "acme/app",
            500,
            1000,
            LABELS,
            ["2030-01-06T09:00:00Z", "2030-01-06T09:00:30Z"],
            Some("2030-01-06T09:05:00Z"),
        );
        double.add_finished_job(
            "other/app",
            501,
            1001,
            LABELS,
            ["2030-01-06T09:00:00Z", "2030-01-06T09:00:30Z"],
            Some("2030-01-06T09:05:00Z"),
        );
        let token = double.issue_user_token();
        std::env::set_var("SCALEHOOK_TEST_HISTORY_TOKEN", &token);
        let dir = tempfile::tempdir().expect("tempdir");
        let args = HistoryArgs {
            config: None,
            days: 7,
            out: dir.path().join("h.jsonl"),
            token_env: Some("SCALEHOOK_TEST_HISTORY_TOKEN".into()),
            organization: Some("acme".into()),
            repository: None,
            api_url: Some(double.base_url().to_string()),
        };
        let reader = client(&args, None).expect("token client");
        let written = write_trace(&reader, "2030-01-01T00:00:00Z", &args.out, |_| {})
            .await
            .expect("history");
        assert_eq!((written.jobs, written.lines), (1, 3));
        assert_eq!(double.count("repos/list-for-org"), 1);
        assert_eq!(double.count("apps/create-installation-access-token"), 0);
        assert_eq!(
            double.count("apps/list-repos-accessible-to-installation"),
            0
        );
        assert!(double.take_violations().is_empty());
        let mut bad = args;
        bad.organization = None;
        let e = client(&bad, None).expect_err("no scope");
        assert!(e.to_string().contains("--organization"), "{e}");
    }
}
