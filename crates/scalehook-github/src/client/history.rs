//! Recent workflow jobs, for `scalehook history`: the repositories the installation sees
//! (`GET /installation/repositories`; with a given token, `GET /orgs/{org}/repos`), or the
//! one configured repository, each one's
//! workflow runs created since a time (`GET /repos/{owner}/{repo}/actions/runs?created=>=T`),
//! and each run's jobs (`GET /repos/{owner}/{repo}/actions/runs/{run_id}/jobs`), every
//! listing paginated. A rate limit longer than a page's budget is waited out here (the
//! command has time; a delivery does not), at most [`MAX_RATE_LIMIT_WAITS`] times a page.

use super::{GitHubApp, MAX_PAGES, PER_PAGE};
use crate::http::{next_link_param, query_value, repo_path, status_error, Answer, Auth};
use scalehook_core::config::RunnerScope;
use scalehook_core::github::GitHubError;
use serde::Deserialize;
use std::time::Duration;

/// A page refused for a rate limit is asked again after the wait, this many times.
pub const MAX_RATE_LIMIT_WAITS: u32 = 5;

pub use scalehook_core::trace::HistoryJob;

/// What the walk did so far, for a progress bar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryProgress {
    pub repositories: u64,
    pub repositories_done: u64,
    pub runs: u64,
    pub jobs: u64,
    /// Seconds waited for rate limits.
    pub waited_secs: u64,
}

impl GitHubApp {
    /// Whose runners and jobs this client reads.
    pub fn scope(&self) -> &RunnerScope {
        &self.scope
    }

    /// Every job of the workflow runs created at or after `since` (RFC 3339) in the
    /// installation's repositories (or the configured repository), per repository (owner/name).
    /// `progress` is called after every page.
    pub async fn workflow_jobs(
        &self,
        since: &str,
        mut progress: impl FnMut(&HistoryProgress),
    ) -> Result<Vec<(String, HistoryJob)>, GitHubError> {
        let mut p = HistoryProgress::default();
        let repositories = match &self.scope {
            RunnerScope::Repository(r) => vec![r.clone()],
            // A given token is no installation's: the organization's repositories it sees.
            RunnerScope::Organization(org) if self.fixed_token.is_some() => {
                self.organization_repositories(org, &mut p).await?
            }
            RunnerScope::Organization(_) => self.installation_repositories(&mut p).await?,
        };
        p.repositories = repositories.len() as u64;
        progress(&p);
        let mut out = Vec::new();
        for repo in repositories {
            let base = repo_path(&repo)?;
            let mut runs = Vec::new();
            let path = format!(
                "{base}/actions/runs?per_page={PER_PAGE}&created={}",
                query_value(&format!(">={since}"))
            );
            self.pages("workflow runs", path, &mut p, |answer| {
                #[derive(Deserialize)]
                struct Run {
                    id: u64,
                }
                #[derive(Deserialize)]
                struct Page {
                    workflow_runs: Vec<Run>,
                }
                let page: Page = answer.json("workflow runs")?;
                runs.extend(page.workflow_runs.into_iter().map(|r| r.id));
                Ok(())
            })
            .await?;
            p.runs += runs.len() as u64;
            progress(&p);
            for run in runs {
                let path = format!("{base}/actions/runs/{run}/jobs?per_page={PER_PAGE}");
                self.pages("workflow jobs", path, &mut p, |answer| {
                    #[derive(Deserialize)]
                    struct Page {
                        jobs: Vec<HistoryJob>,
                    }
                    let page: Page = answer.json("workflow jobs")?;
                    out.extend(page.jobs.into_iter().map(|j| (repo.clone(), j)));
                    Ok(())
                })
                .await?;
                p.jobs = out.len() as u64;
                progress(&p);
            }
            p.repositories_done += 1;
            progress(&p);
        }
        Ok(out)
    }

    async fn organization_repositories(
        &self,
        org: &str,
        p: &mut HistoryProgress,
    ) -> Result<Vec<String>, GitHubError> {
        #[derive(Deserialize)]
        struct Repo {
            full_name: String,
        }
        let mut names = Vec::new();
        let path = format!(
            "/orgs/{}/repos?per_page={PER_PAGE}",
            crate::http::segment(org, "organization")?
        );
        self.pages("organization repositories", path, p, |answer| {
            let page: Vec<Repo> = answer.json("organization repositories")?;
            names.extend(page.into_iter().map(|r| r.full_name));
            Ok(())
        })
        .await?;
        Ok(names)
    }

    async fn installation_repositories(
        &self,
        p: &mut HistoryProgress,
    ) -> Result<Vec<String>, GitHubError> {
        let mut names = Vec::new();
        let path = format!("/installation/repositories?per_page={PER_PAGE}");
        self.pages("installation repositories", path, p, |answer| {
            #[derive(Deserialize)]
            struct Repo {
                full_name: String,
            }
            #[derive(Deserialize)]
            struct Page {
                repositories: Vec<Repo>,
            }
            let page: Page = answer.json("installation repositories")?;
            names.extend(page.repositories.into_iter().map(|r| r.full_name));
            Ok(())
        })
        .await?;
        Ok(names)
    }

    /// Every page of a listing (`path` has its `per_page`), following the `Link` header's
    /// `next` page on the configured base URL; a rate-limited page is asked again after
    /// GitHub's wait.
    async fn pages(
        &self,
        what: &str,
        path: String,
        p: &mut HistoryProgress,
        mut page: impl FnMut(&Answer) -> Result<(), GitHubError>,
    ) -> Result<(), GitHubError> {
        let mut next = path.clone();
        for _ in 0..MAX_PAGES {
            let mut waits = 0;
            let answer = loop {
                match self
                    .within(what, self.get(Auth::Installation, next.clone()))
                    .await
                {
                    Err(GitHubError::RateLimited { retry_after_secs })
                        if waits < MAX_RATE_LIMIT_WAITS =>
                    {
                        waits += 1;
                        p.waited_secs += retry_after_secs;
                        tracing::info!(target: "scalehook::github", what, retry_after_secs, "rate limited: waiting");
                        self.sleeper
                            .sleep(Duration::from_secs(retry_after_secs))
                            .await;
                        self.limits.waited();
                    }
                    other => break other?,
                }
            };
            if answer.status != 200 {
                return Err(status_error(what, &answer));
            }
            page(&answer)?;
            match answer
                .header("link")
                .and_then(|l| next_link_param(l, "page"))
                .and_then(|n| n.parse::<u32>().ok())
            {
                Some(n) => next = format!("{path}&page={n}"),
                None => return Ok(()),
            }
        }
        Err(GitHubError::Unavailable(format!(
            "{what}: more than {MAX_PAGES} pages"
        )))
    }
}
