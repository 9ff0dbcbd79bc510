//! The assignment race of issue 12 (the same wrapper as `RacyGitHub` in
//! `scalehook-core/tests/github_service.rs`): GitHub assigns a job to `victim` after
//! scalehook listed it idle, just before scalehook asks to remove its registration, so
//! the removal is refused as busy (422).
#![allow(dead_code)]

use async_trait::async_trait;
use scalehook_core::github::{DeliveryPage, GitHubError, JitRunner, JobStatus, RateLimit};
use scalehook_core::{Fleet, GitHub, LocalGitHub, PoolConfig, Runner, RunnerRemoval};
use std::sync::Mutex;

#[derive(Default)]
pub struct RacyGitHub {
    pub inner: LocalGitHub,
    pub victim: Mutex<Option<String>>,
}

impl RacyGitHub {
    /// The runner named `name` takes a job at the moment scalehook deregisters it.
    pub fn race(&self, name: &str) {
        *self.victim.lock().expect("lock") = Some(name.to_string());
    }

    /// Registers an idle runner `<pool>-<instance key>` for every live instance of the
    /// pool (the naming convention JIT provisioning uses), returning their names.
    pub async fn provision(&self, fleet: &dyn Fleet, pool: &PoolConfig) -> Vec<String> {
        let state = fleet.describe(pool).await.expect("describe");
        let mut names = Vec::new();
        for i in &state.instances {
            let name = format!("{}-{}", pool.name, i.runner_key);
            self.inner.register(&name, &pool.labels);
            names.push(name);
        }
        names
    }

    /// Names of the runners still registered.
    pub fn registered(&self) -> Vec<String> {
        self.inner
            .registered()
            .into_iter()
            .map(|r| r.name)
            .collect()
    }
}

#[async_trait]
impl GitHub for RacyGitHub {
    async fn runners(&self) -> Result<Vec<Runner>, GitHubError> {
        self.inner.runners().await
    }
    async fn remove_runner(&self, runner_id: u64) -> Result<RunnerRemoval, GitHubError> {
        let victim = self.victim.lock().expect("lock").clone();
        if let Some(name) = victim {
            if self
                .inner
                .registered()
                .iter()
                .any(|r| r.id == runner_id && r.name == name)
            {
                self.inner.set_busy(&name, true);
            }
        }
        self.inner.remove_runner(runner_id).await
    }
    async fn job(&self, repo: &str, id: u64) -> Result<Option<JobStatus>, GitHubError> {
        self.inner.job(repo, id).await
    }
    async fn deliveries(&self, cursor: Option<&str>) -> Result<DeliveryPage, GitHubError> {
        self.inner.deliveries(cursor).await
    }
    async fn redeliver(&self, id: u64) -> Result<(), GitHubError> {
        self.inner.redeliver(id).await
    }
    async fn jit_runner(&self, pool: &PoolConfig, name: &str) -> Result<JitRunner, GitHubError> {
        self.inner.jit_runner(pool, name).await
    }
    fn rate_limit(&self) -> RateLimit {
        self.inner.rate_limit()
    }
}
