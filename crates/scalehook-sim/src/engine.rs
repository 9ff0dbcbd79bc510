//! The discrete-event loop: a virtual clock that jumps from one event to the next (a job
//! arrives, finishes or is cancelled; an instance finishes booting; a tick), with the world
//! accounted exactly in between. What changes capacity is the [`Controller`]: the real
//! scalehook service, or a baseline (both in [`crate::policy`]).

use crate::policy::Controller;
use crate::workload::{Work, Workload};
use crate::world::{Ending, World};
use crate::SimError;
use scalehook_core::ManualClock;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Seconds between ticks. Every tick runs the scalehook reconcile pass (an EventBridge rule
/// or Azure timer trigger at its finest schedule, once a minute), samples utilisation for the
/// CPU-threshold baseline (CloudWatch detailed monitoring, 1-minute periods), and records a
/// chart point.
pub const TICK_SECS: u64 = 60;

/// How long past the trace's last event the simulation keeps going while jobs still run or
/// deliveries are still on their way: a safeguard (GitHub ends a job after 24 hours).
pub const OVERRUN_LIMIT_SECS: u64 = 24 * 3600;

/// A job that waits longer than this for a runner is *stranded*. Past the trace's last
/// event the simulation waits at most this long for queued jobs to start (by then they
/// have waited longer than this anyway); jobs still queued then are reported as never
/// started.
pub const STRANDED_SECS: u64 = 30 * 60;

const FINISH: u8 = 0;
const CANCEL: u8 = 1;
const ARRIVE: u8 = 2;

pub(crate) struct Engine {
    pub world: Arc<Mutex<World>>,
    clock: Arc<ManualClock>,
    controller: Box<dyn Controller>,
    workload: Arc<Workload>,
    /// The pool GitHub queues each job for (the same rule the service routes by).
    routes: Arc<Vec<Option<usize>>>,
    /// (time, kind, job): at equal times, finishes free runners before arrivals take them.
    events: BinaryHeap<Reverse<(u64, u8, usize)>>,
    next_tick: u64,
}

impl Engine {
    pub fn new(
        world: Arc<Mutex<World>>,
        clock: Arc<ManualClock>,
        controller: Box<dyn Controller>,
        workload: Arc<Workload>,
        routes: Arc<Vec<Option<usize>>>,
    ) -> Self {
        // Re-runs (past the offset) arrive only when a reclaim interrupts their job.
        let originals = world
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rerun_offset
            .unwrap_or(workload.jobs.len());
        let events = workload.jobs[..originals]
            .iter()
            .enumerate()
            .map(|(n, j)| Reverse((j.arrival, ARRIVE, n)))
            .collect();
        Self {
            world,
            clock,
            controller,
            next_tick: workload.start,
            workload,
            routes,
            events,
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the pools to their resting capacity at the window's start, booted.
    pub async fn warm_up(&mut self) -> Result<(), SimError> {
        let start = self.workload.start;
        self.clock.set(start);
        self.controller.warm_up().await?;
        let mut w = self.world();
        for p in &mut w.pools {
            for i in &mut p.instances {
                i.ready_at = i.ready_at.min(start);
            }
        }
        Ok(())
    }

    /// Runs until every job is done and the ticks reach `until`: past `until`, while jobs
    /// run or deliveries are on their way (at most [`OVERRUN_LIMIT_SECS`] past the trace),
    /// and while jobs wait, at most [`STRANDED_SECS`] past the trace. Can be called again
    /// with a later `until` to extend the window.
    pub async fn run(&mut self, until: u64) -> Result<(), SimError> {
        let limit = self.workload.end + OVERRUN_LIMIT_SECS;
        let strand_limit = self.workload.end + STRANDED_SECS;
        loop {
            let wake = self.controller.next_wake();
            let (active, waiting, next_ready, next_reclaim) = {
                let w = self.world();
                let running = w.pools.iter().any(|p| p.running > 0);
                let waiting = w.pools.iter().any(|p| !p.queue.is_empty());
                (
                    running || !self.events.is_empty() || wake.is_some(),
                    waiting,
                    w.next_ready(),
                    w.next_reclaim(),
                )
            };
            let t = [
                self.events.peek().map(|Reverse((t, _, _))| *t),
                next_ready,
                next_reclaim,
                wake,
                Some(self.next_tick),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.next_tick);
            let pending = active || (waiting && t <= strand_limit);
            if (t > until && !pending) || t > limit.max(until) {
                break;
            }
            self.step(t).await?;
        }
        Ok(())
    }

    pub fn service_figures(&self) -> Option<crate::policy::ServiceFigures> {
        self.controller.service_figures()
    }

    /// Accounts the world up to `end` (after the last [`Engine::run`]).
    pub fn close(&mut self, end: u64) {
        self.world().advance_to(end);
    }

    async fn step(&mut self, t: u64) -> Result<(), SimError> {
        {
            let mut w = self.world();
            w.advance_to(t);
            w.reclaim_due();
        }
        self.clock.set(t);
        if self.controller.next_wake().is_some_and(|w| w <= t) {
            self.controller.wake().await?;
            self.settle().await?;
        }
        while let Some(&Reverse((at, kind, job))) = self.events.peek() {
            if at != t {
                break;
            }
            self.events.pop();
            match kind {
                FINISH => {
                    let runner = self.world().finish(job);
                    if let Some(runner) = runner {
                        self.controller
                            .finished(job, Some(&runner), Ending::Success)
                            .await?;
                    }
                }
                CANCEL => {
                    let (was_queued, runner) = {
                        let mut w = self.world();
                        let queued = w.cancel_queued(job);
                        (queued, if queued { None } else { w.finish(job) })
                    };
                    if was_queued || runner.is_some() {
                        self.controller
                            .finished(job, runner.as_deref(), Ending::Cancelled)
                            .await?;
                    }
                }
                _ => {
                    let pool = self.routes[job];
                    self.controller.queued(job, pool).await?;
                    self.world().enqueue(job, pool);
                    if let Work::CancelledAt(at) = self.workload.jobs[job].work {
                        self.events.push(Reverse((at.max(t), CANCEL, job)));
                    }
                }
            }
            self.settle().await?;
        }
        if t == self.next_tick {
            self.world().retry_launches();
            self.controller.tick().await?;
            self.settle().await?;
            self.world().sample();
            self.next_tick += TICK_SECS;
        }
        self.settle().await
    }

    /// Reports interrupted jobs and gives waiting jobs free runners, one at a time, so the
    /// controller sees every start before the next.
    async fn settle(&mut self) -> Result<(), SimError> {
        loop {
            let interrupted = std::mem::take(&mut self.world().interrupted);
            for (job, runner) in &interrupted {
                self.controller
                    .finished(*job, Some(runner), Ending::Failure)
                    .await?;
            }
            // GitHub queues a re-run as a new job, at once (see docs/simulate.md).
            let (reruns, now) = {
                let mut w = self.world();
                (std::mem::take(&mut w.reruns), w.now)
            };
            for job in reruns {
                self.events.push(Reverse((now, ARRIVE, job)));
            }
            let started = self.world().start_one();
            match started {
                Some(s) => {
                    if let Work::Runs(secs) = self.workload.jobs[s.job].work {
                        let now = self.world().now;
                        self.events.push(Reverse((now + secs, FINISH, s.job)));
                    }
                    self.controller.started(&s).await?;
                }
                None if interrupted.is_empty() => return Ok(()),
                None => {}
            }
        }
    }
}
