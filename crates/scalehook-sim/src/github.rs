//! The simulated GitHub the scalehook service talks to through the [`GitHub`] trait: the
//! runners registered on the simulated instances, removing a registration (refused while
//! the runner is busy), the true state of every job, and the App hook's delivery log with
//! redelivery. Every call is counted.

use crate::workload::Workload;
use crate::world::{JobStatus as SimJob, Slot, World};
use async_trait::async_trait;
use scalehook_core::github::{
    Delivery, DeliveryPage, JitRunner, JobStatus, RateLimit, Runner, RunnerRemoval,
};
use scalehook_core::{GitHub, GitHubError, PoolConfig};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Deliveries per page, newest first (GitHub's `per_page` maximum).
pub const DELIVERIES_PER_PAGE: usize = 100;

/// The GitHub API calls the simulated scalehook made, by endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GitHubCalls {
    /// List the runners (one call per page of 100 runners).
    pub runners: u64,
    pub remove_runner: u64,
    pub job: u64,
    /// List the hook's deliveries (one call per page).
    pub deliveries: u64,
    pub redeliver: u64,
    pub jit_runner: u64,
}

impl GitHubCalls {
    pub fn total(&self) -> u64 {
        self.runners
            + self.remove_runner
            + self.job
            + self.deliveries
            + self.redeliver
            + self.jit_runner
    }
}

/// [`GitHub`] over the simulated world.
pub(crate) struct SimGitHub {
    world: Arc<Mutex<World>>,
    jobs: HashMap<u64, usize>,
    calls: Mutex<GitHubCalls>,
}

impl SimGitHub {
    pub fn new(world: Arc<Mutex<World>>, workload: &Workload) -> Self {
        Self {
            world,
            jobs: workload
                .jobs
                .iter()
                .enumerate()
                .map(|(n, j)| (j.id, n))
                .collect(),
            calls: Mutex::new(GitHubCalls::default()),
        }
    }

    pub fn calls(&self) -> GitHubCalls {
        *self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut GitHubCalls)) {
        f(&mut self.calls.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl GitHub for SimGitHub {
    async fn runners(&self) -> Result<Vec<Runner>, GitHubError> {
        let w = self.world();
        let now = w.now;
        let list: Vec<Runner> = w
            .pools
            .iter()
            .flat_map(|p| {
                p.instances
                    .iter()
                    .filter(move |i| i.ready(now))
                    .flat_map(|i| i.runners.iter())
                    .filter(|r| r.slot != Slot::Gone)
                    .map(|r| Runner {
                        id: r.id,
                        name: r.name.clone(),
                        online: true,
                        busy: matches!(r.slot, Slot::Busy(_)),
                        labels: p.config.labels.clone(),
                    })
            })
            .collect();
        let pages = list.len().div_ceil(100).max(1) as u64;
        self.count(|c| c.runners += pages);
        Ok(list)
    }

    async fn remove_runner(&self, runner_id: u64) -> Result<RunnerRemoval, GitHubError> {
        self.count(|c| c.remove_runner += 1);
        let mut w = self.world();
        let now = w.now;
        let found = w.pools.iter_mut().find_map(|p| {
            p.instances
                .iter_mut()
                .filter(|i| i.ready(now))
                .flat_map(|i| i.runners.iter_mut())
                .find(|r| r.id == runner_id)
        });
        Ok(match found {
            None => RunnerRemoval::Gone,
            Some(r) => match r.slot {
                Slot::Gone => RunnerRemoval::Gone,
                Slot::Busy(_) => RunnerRemoval::Busy,
                Slot::Idle => {
                    r.slot = Slot::Gone;
                    RunnerRemoval::Removed
                }
            },
        })
    }

    async fn job(&self, _repository: &str, job_id: u64) -> Result<Option<JobStatus>, GitHubError> {
        self.count(|c| c.job += 1);
        let Some(&n) = self.jobs.get(&job_id) else {
            return Ok(None);
        };
        let w = self.world();
        let status = |status: &str, runner: Option<&String>| {
            Some(JobStatus {
                status: status.to_string(),
                runner_name: runner.cloned(),
            })
        };
        Ok(match &w.jobs[n] {
            SimJob::NotArrived | SimJob::Ignored => None,
            SimJob::Queued { .. } => status("queued", None),
            SimJob::Running { runner, .. } => status("in_progress", Some(runner)),
            SimJob::Done { runner, .. } => status("completed", runner.as_ref()),
        })
    }

    async fn deliveries(&self, cursor: Option<&str>) -> Result<DeliveryPage, GitHubError> {
        self.count(|c| c.deliveries += 1);
        let w = self.world();
        let log = &w.hook.log;
        // The cursor is the number of (oldest) attempts still to list.
        let end = match cursor {
            None => log.len(),
            Some(c) => c
                .parse::<usize>()
                .ok()
                .filter(|&n| n <= log.len())
                .ok_or_else(|| GitHubError::Rejected(format!("bad cursor {c:?}")))?,
        };
        let start = end.saturating_sub(DELIVERIES_PER_PAGE);
        let deliveries = log[start..end]
            .iter()
            .rev()
            .map(|a| Delivery {
                id: a.id,
                guid: a.guid.clone(),
                delivered_at: a.at,
                event: "workflow_job".into(),
                action: Some(a.message.action.as_str().into()),
                status_code: a.status_code,
                redelivery: a.redelivery,
            })
            .collect();
        Ok(DeliveryPage {
            deliveries,
            next: (start > 0).then(|| start.to_string()),
        })
    }

    async fn redeliver(&self, delivery_id: u64) -> Result<(), GitHubError> {
        self.count(|c| c.redeliver += 1);
        let mut w = self.world();
        let Some(a) = w.hook.log.iter().find(|a| a.id == delivery_id) else {
            return Err(GitHubError::Rejected(format!("no delivery {delivery_id}")));
        };
        let again = (a.guid.clone(), a.message.clone());
        w.hook.redeliver.push(again);
        Ok(())
    }

    async fn jit_runner(&self, _pool: &PoolConfig, _name: &str) -> Result<JitRunner, GitHubError> {
        // The simulated instances register their runners themselves when they boot.
        self.count(|c| c.jit_runner += 1);
        Err(GitHubError::Rejected(
            "simulate: runners register when their instance boots".into(),
        ))
    }

    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            remaining: None,
            requests: self.calls().total(),
        }
    }
}
