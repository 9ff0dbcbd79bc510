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
            requests: self.calls().total(),
            ..RateLimit::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::{Action, HookAttempt, Message};
    use scalehook_core::Config;
    use std::path::Path;

    fn setup() -> (Arc<Mutex<World>>, SimGitHub) {
        let line = |id: u64| {
            format!(
                r#"{{"event":"workflow_job","at":"2024-05-01T09:00:00Z","payload":{{"action":"queued","workflow_job":{{"id":{id},"run_id":1,"labels":["self-hosted","linux","x64"]}}}}}}"#
            )
        };
        let text = [line(7), line(8)].join("\n");
        let completed = text.replace("\"queued\"", "\"completed\"");
        let workload =
            Workload::from_text(&format!("{text}\n{completed}"), "t.jsonl", Path::new("."))
                .expect("valid");
        let world = Arc::new(Mutex::new(World::new(
            &Config::embedded_default().pools,
            workload.jobs.len(),
            0,
            60,
        )));
        let github = SimGitHub::new(world.clone(), &workload);
        (world, github)
    }

    #[tokio::test]
    async fn runners_register_after_boot_and_busy_ones_cannot_be_removed() {
        let (world, github) = setup();
        {
            let mut w = world.lock().expect("world");
            w.launch(0, 60);
            w.launch(0, 60);
        }
        assert!(
            github.runners().await.expect("listed").is_empty(),
            "booting"
        );
        assert_eq!(github.remove_runner(1).await, Ok(RunnerRemoval::Gone));
        {
            let mut w = world.lock().expect("world");
            w.advance_to(60);
            w.enqueue(0, Some(0));
            w.start_one().expect("a runner takes job 0");
        }
        let runners = github.runners().await.expect("listed");
        assert_eq!(runners.len(), 2);
        assert!(runners.iter().all(|r| r.in_pool("linux-x64") && r.online));
        let busy = runners.iter().find(|r| r.busy).expect("one busy");
        let idle = runners.iter().find(|r| !r.busy).expect("one idle");
        assert_eq!(github.remove_runner(busy.id).await, Ok(RunnerRemoval::Busy));
        assert_eq!(
            github.remove_runner(idle.id).await,
            Ok(RunnerRemoval::Removed)
        );
        assert_eq!(github.remove_runner(idle.id).await, Ok(RunnerRemoval::Gone));
        assert_eq!(github.runners().await.expect("listed").len(), 1);
        // The jobs API tells the truth.
        let job = github
            .job("o/r", 7)
            .await
            .expect("answered")
            .expect("known");
        assert_eq!(job.status, "in_progress");
        assert_eq!(job.runner_name.as_deref(), Some(busy.name.as_str()));
        assert_eq!(github.job("o/r", 8).await, Ok(None), "not arrived yet");
        assert_eq!(github.job("o/r", 99).await, Ok(None));
        let calls = github.calls();
        assert_eq!((calls.runners, calls.remove_runner, calls.job), (3, 4, 3));
        assert!(github
            .jit_runner(&Config::embedded_default().pools[0], "x")
            .await
            .is_err());
        assert_eq!(github.rate_limit().requests, 11);
    }

    #[tokio::test]
    async fn deliveries_are_paged_newest_first_and_redelivered() {
        let (world, github) = setup();
        {
            let mut w = world.lock().expect("world");
            for id in 1..=150u64 {
                w.hook.log.push(HookAttempt {
                    id,
                    guid: format!("g-{id}"),
                    at: id,
                    status_code: if id == 3 { 0 } else { 200 },
                    redelivery: false,
                    message: Message {
                        job: 0,
                        action: Action::Queued,
                        runner: None,
                        ending: None,
                    },
                });
            }
        }
        let first = github.deliveries(None).await.expect("page");
        assert_eq!(first.deliveries.len(), DELIVERIES_PER_PAGE);
        assert_eq!(first.deliveries[0].id, 150, "newest first");
        let second = github
            .deliveries(first.next.as_deref())
            .await
            .expect("page");
        assert_eq!(second.deliveries.len(), 50);
        assert_eq!(second.next, None);
        let failed = second
            .deliveries
            .iter()
            .find(|d| d.status_code == 0)
            .expect("the lost one");
        assert_eq!((failed.id, failed.guid.as_str()), (3, "g-3"));
        github.redeliver(3).await.expect("redelivered");
        assert!(github.redeliver(999).await.is_err());
        assert!(github.deliveries(Some("bogus")).await.is_err());
        let w = world.lock().expect("world");
        assert_eq!(w.hook.redeliver.len(), 1);
        assert_eq!(w.hook.redeliver[0].0, "g-3");
    }
}
