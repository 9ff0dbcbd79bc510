//! The simulated world: per pool, the instances (booting or in service, each with its runner
//! slots and their GitHub registrations), GitHub's queue of jobs waiting for a runner, and
//! the usage accounting; and GitHub's side of the webhook (the hook's delivery log, the
//! redeliveries asked for). It knows nothing of policies: the scalehook runs change it
//! through [`crate::fleet::SimFleet`] and [`crate::github::SimGitHub`], the baselines
//! directly.

use crate::rng;
use scalehook_core::PoolConfig;
use std::collections::VecDeque;

/// The conclusion a simulated `completed` delivery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Success,
    Cancelled,
    /// The job's instance was removed while it ran.
    Failure,
}

impl Ending {
    pub fn conclusion(self) -> &'static str {
        match self {
            Ending::Success => "success",
            Ending::Cancelled => "cancelled",
            Ending::Failure => "failure",
        }
    }
}

/// A runner slot of an instance, as GitHub sees its registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Registered once the instance has booted; no job.
    Idle,
    /// Running this job (GitHub's `busy`), from the moment GitHub assigned it.
    Busy(usize),
    /// No registration any more: the ephemeral runner exited after its job, or scalehook
    /// removed the registration. It never takes a job again; the instance stays (and is
    /// paid) until something removes it.
    Gone,
}

/// One runner slot: its registration id and name, and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SimRunner {
    /// GitHub's runner id (allocated at launch, listed once the instance has booted).
    pub id: u64,
    /// `<pool>-<instance id>`, with `-<n>` when the instance has several runners.
    pub name: String,
    pub slot: Slot,
}

/// One simulated instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SimInstance {
    /// `i-<nnnnnn>`, unique across pools: also its runner key (its runners' names contain
    /// it).
    pub id: String,
    pub launched_at: u64,
    /// When its runners register (launch time + boot seconds).
    pub ready_at: u64,
    /// One per `runners_per_instance`.
    pub runners: Vec<SimRunner>,
    /// Scale-in protection, as set by the scalehook service (the baselines ignore it).
    pub protected: bool,
    /// When the cloud reclaims it (spot pools only; drawn at launch).
    pub reclaim_at: Option<u64>,
    /// An on-demand instance launched for this spot pool when a spot launch failed,
    /// counted against this pool's `max` (the `overflow` pool).
    pub overflow_to: Option<usize>,
}

impl SimInstance {
    pub fn ready(&self, now: u64) -> bool {
        self.ready_at <= now
    }
    pub fn busy(&self) -> bool {
        self.runners.iter().any(|r| matches!(r.slot, Slot::Busy(_)))
    }
    /// Booted, and every runner is gone (exited or deregistered): paid, useless.
    pub fn dead(&self, now: u64) -> bool {
        self.ready(now) && self.runners.iter().all(|r| r.slot == Slot::Gone)
    }
}

/// Usage of one pool, integrated exactly over time (instance-seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub booting_secs: u64,
    /// Booted and running no job (dead instances, whose runners are gone, included).
    pub idle_secs: u64,
    pub busy_secs: u64,
    /// Warm-pool instances once warmed (stopped, paid at the warm cost ratio); their
    /// warming is paid in full and counted in `booting_secs`.
    pub warm_secs: u64,
    /// Seconds (all states) of on-demand overflow instances of a spot pool: paid in full.
    pub overflow_secs: u64,
    /// Most instances (booting included) held for a positive length of time.
    pub peak_instances: u32,
}

/// A point of the chart: sampled at every tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Sample {
    /// Unix seconds.
    pub at: u64,
    /// Jobs queued + running (one runner slot each).
    pub demand_slots: u32,
    /// Runner slots of every launched instance, booting included (instances x
    /// runners_per_instance): what is paid for.
    pub capacity_slots: u32,
    /// Registered runners (booted, not exited or deregistered): what can take a job now or
    /// is running one.
    pub ready_slots: u32,
    /// Runner slots of the warm pool's instances (warming or warm): not capacity.
    pub warm_slots: u32,
}

#[derive(Debug)]
pub(crate) struct PoolWorld {
    pub config: PoolConfig,
    pub instances: Vec<SimInstance>,
    /// GitHub's queue: jobs waiting for a runner, oldest first.
    pub queue: VecDeque<usize>,
    pub running: u32,
    pub usage: Usage,
    pub series: Vec<Sample>,
    /// The warm pool: when each of its instances is (or was) warmed.
    pub warm: Vec<u64>,
    /// On spot: instances are reclaimed at random and cost the spot price.
    pub spot: bool,
    /// Launches the group still owes: spot launches that failed with no overflow room,
    /// retried every tick as a cloud group retries to reach its desired capacity.
    pub short: u32,
}

impl PoolWorld {
    fn new(config: PoolConfig) -> Self {
        Self {
            spot: config.capacity == scalehook_core::Capacity::Spot,
            warm: Vec::new(),
            short: 0,
            config,
            instances: Vec::new(),
            queue: VecDeque::new(),
            running: 0,
            usage: Usage::default(),
            series: Vec::new(),
        }
    }

    pub fn rpi(&self) -> u32 {
        self.config.runners_per_instance.max(1)
    }

    /// Registered runner slots and how many of them run a job.
    pub fn ready_slots(&self, now: u64) -> (u32, u32) {
        let mut total = 0;
        let mut busy = 0;
        for r in self
            .instances
            .iter()
            .filter(|i| i.ready(now))
            .flat_map(|i| i.runners.iter())
        {
            match r.slot {
                Slot::Idle => total += 1,
                Slot::Busy(_) => {
                    total += 1;
                    busy += 1;
                }
                Slot::Gone => {}
            }
        }
        (total, busy)
    }

    fn integrate(&mut self, from: u64, to: u64) {
        let dt = to.saturating_sub(from);
        if dt == 0 {
            return;
        }
        for &warmed in &self.warm {
            // Warming is a full boot, paid in full; then the instance waits stopped.
            let booting = warmed.clamp(from, to) - from;
            self.usage.booting_secs += booting;
            self.usage.warm_secs += dt - booting;
        }
        for i in &self.instances {
            if i.overflow_to.is_some() {
                self.usage.overflow_secs += dt;
            }
            // The engine stops at every ready_at, so no interval straddles one.
            if !i.ready(from) {
                self.usage.booting_secs += dt;
            } else if i.busy() {
                self.usage.busy_secs += dt;
            } else {
                self.usage.idle_secs += dt;
            }
        }
        self.usage.peak_instances = self.usage.peak_instances.max(self.instances.len() as u32);
    }
}

/// Where a job is in the simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobStatus {
    NotArrived,
    /// No pool takes it.
    Ignored,
    Queued {
        pool: usize,
    },
    Running {
        pool: usize,
        /// The pool whose runner took it: another pool's when that pool's runners have
        /// all the job's labels in the same runner group (GitHub's choice, not scalehook's).
        runner_pool: usize,
        instance: String,
        slot: usize,
        started: u64,
        runner: String,
    },
    Done {
        pool: usize,
        /// When a runner took it; `None` when it was cancelled while queued.
        started: Option<u64>,
        /// Its instance was removed while it ran.
        interrupted: bool,
        runner: Option<String>,
    },
}

impl JobStatus {
    /// The pool GitHub queued the job for, once it arrived.
    pub fn pool(&self) -> Option<usize> {
        match *self {
            JobStatus::NotArrived | JobStatus::Ignored => None,
            JobStatus::Queued { pool }
            | JobStatus::Running { pool, .. }
            | JobStatus::Done { pool, .. } => Some(pool),
        }
    }
}

/// A job that just started on a runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Started {
    pub job: usize,
    pub pool: usize,
    pub runner: String,
}

/// The webhook actions the simulated GitHub sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Queued,
    InProgress,
    Completed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Queued => "queued",
            Action::InProgress => "in_progress",
            Action::Completed => "completed",
        }
    }
}

/// What one `workflow_job` delivery says (the payload is rebuilt from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub job: usize,
    pub action: Action,
    pub runner: Option<String>,
    pub ending: Option<Ending>,
}

/// One attempt of the App hook to deliver, as GitHub's delivery log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HookAttempt {
    /// The attempt's id (what a redeliver call names).
    pub id: u64,
    /// `X-GitHub-Delivery`: the same for a delivery and its redeliveries.
    pub guid: String,
    pub at: u64,
    /// 0 when the delivery never reached the service (lost), else the service's answer.
    pub status_code: u16,
    pub redelivery: bool,
    pub message: Message,
}

/// GitHub's side of the webhook.
#[derive(Debug, Default)]
pub(crate) struct Hook {
    /// Every attempt, oldest first.
    pub log: Vec<HookAttempt>,
    /// Redeliveries asked for and not yet sent: (guid, message).
    pub redeliver: Vec<(String, Message)>,
}

#[derive(Debug)]
pub(crate) struct World {
    pub now: u64,
    pub boot_seconds: u64,
    /// Seconds for an instance taken from the warm pool to register its runners.
    pub warm_boot_seconds: u64,
    /// Spot reclaims per instance-hour (spot pools).
    pub reclaims_per_hour: f64,
    /// Probability that a spot launch fails (no spot capacity).
    pub spot_launch_failure: f64,
    /// Spot launches tried so far (indexes their draws).
    pub spot_launches: u64,
    /// Job `n`'s one re-run is job `n + offset` (when re-runs are simulated).
    pub rerun_offset: Option<usize>,
    /// Jobs a spot reclaim interrupted whose re-run is due, not yet queued.
    pub reruns: Vec<usize>,
    /// Seeds GitHub's choice of runner.
    pub seed: u64,
    /// Per job, the other pools whose runners GitHub may give it to (their labels contain
    /// the job's, in its pool's runner group); empty for most jobs. Set by the caller.
    pub other_takers: Vec<Vec<usize>>,
    pub pools: Vec<PoolWorld>,
    pub jobs: Vec<JobStatus>,
    /// Jobs whose instance was removed under them, with their runner, not yet reported.
    pub interrupted: Vec<(usize, String)>,
    pub hook: Hook,
    next_instance: u64,
    next_runner: u64,
}

impl World {
    pub fn new(pools: &[PoolConfig], jobs: usize, now: u64, boot_seconds: u64) -> Self {
        Self {
            now,
            boot_seconds,
            warm_boot_seconds: boot_seconds,
            reclaims_per_hour: 0.0,
            spot_launch_failure: 0.0,
            spot_launches: 0,
            rerun_offset: None,
            reruns: Vec::new(),
            seed: 0,
            other_takers: Vec::new(),
            pools: pools.iter().cloned().map(PoolWorld::new).collect(),
            jobs: vec![JobStatus::NotArrived; jobs],
            interrupted: Vec::new(),
            hook: Hook::default(),
            next_instance: 0,
            next_runner: 0,
        }
    }

    pub fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.config.name == name)
    }

    /// Launches one instance of `pool` whose runners register at `ready_at`.
    pub fn launch(&mut self, pool: usize, ready_at: u64) {
        self.next_instance += 1;
        let id = format!("i-{:06}", self.next_instance);
        let reclaim_at = self.draw_reclaim(pool, self.next_instance);
        let p = &mut self.pools[pool];
        let rpi = p.rpi();
        let runners = (1..=rpi)
            .map(|n| {
                self.next_runner += 1;
                let name = if rpi == 1 {
                    format!("{}-{id}", p.config.name)
                } else {
                    format!("{}-{id}-{n}", p.config.name)
                };
                SimRunner {
                    id: self.next_runner,
                    name,
                    slot: Slot::Idle,
                }
            })
            .collect();
        p.instances.push(SimInstance {
            id,
            launched_at: self.now,
            ready_at,
            runners,
            protected: false,
            reclaim_at,
            overflow_to: None,
        });
    }

    /// Moves the clock to `t`, accounting every instance's state over the interval.
    pub fn advance_to(&mut self, t: u64) {
        let from = self.now;
        if t <= from {
            return;
        }
        for p in &mut self.pools {
            p.integrate(from, t);
        }
        self.now = t;
    }

    /// The next time an instance finishes booting, after now.
    pub fn next_ready(&self) -> Option<u64> {
        self.pools
            .iter()
            .flat_map(|p| p.instances.iter())
            .map(|i| i.ready_at)
            .filter(|&t| t > self.now)
            .min()
    }

    pub fn enqueue(&mut self, job: usize, pool: Option<usize>) {
        self.jobs[job] = match pool {
            Some(pool) => {
                self.pools[pool].queue.push_back(job);
                JobStatus::Queued { pool }
            }
            None => JobStatus::Ignored,
        };
    }

    /// GitHub assigns the longest-waiting job of some pool to one of the idle registered
    /// runners that can take it, chosen at random (seeded by the job, so every policy's run
    /// draws the same numbers): its pool's, then those of [`World::other_takers`]. One at a
    /// time, so the controller sees every start.
    pub fn start_one(&mut self) -> Option<Started> {
        let now = self.now;
        for pool_index in 0..self.pools.len() {
            let Some(&job) = self.pools[pool_index].queue.front() else {
                continue;
            };
            let others = self.other_takers.get(job).map(Vec::as_slice).unwrap_or(&[]);
            let idle: Vec<(usize, usize, usize)> = std::iter::once(pool_index)
                .chain(others.iter().copied())
                .flat_map(|p| {
                    self.pools[p]
                        .instances
                        .iter()
                        .enumerate()
                        .filter(|(_, i)| i.ready(now))
                        .flat_map(move |(n, i)| {
                            i.runners
                                .iter()
                                .enumerate()
                                .filter(|(_, r)| r.slot == Slot::Idle)
                                .map(move |(s, _)| (p, n, s))
                        })
                })
                .collect();
            if idle.is_empty() {
                continue;
            }
            let pick = rng::mix(self.seed, rng::ASSIGN, job as u64) % idle.len() as u64;
            let (runner_pool, instance, slot) = idle[pick as usize];
            self.pools[pool_index].queue.pop_front();
            let taker = &mut self.pools[runner_pool];
            taker.running += 1;
            let inst = &mut taker.instances[instance];
            let r = &mut inst.runners[slot];
            r.slot = Slot::Busy(job);
            let runner = r.name.clone();
            self.jobs[job] = JobStatus::Running {
                pool: pool_index,
                runner_pool,
                instance: inst.id.clone(),
                slot,
                started: now,
                runner: runner.clone(),
            };
            return Some(Started {
                job,
                pool: pool_index,
                runner,
            });
        }
        None
    }

    /// Ends a running job (finished or cancelled): frees its runner, or, ephemeral, the
    /// runner exits and its registration disappears. Returns its runner.
    pub fn finish(&mut self, job: usize) -> Option<String> {
        let JobStatus::Running {
            pool,
            runner_pool,
            ref instance,
            slot,
            started,
            ..
        } = self.jobs[job]
        else {
            return None;
        };
        let p = &mut self.pools[runner_pool];
        let ephemeral = p.config.ephemeral;
        let inst = p.instances.iter_mut().find(|i| &i.id == instance)?;
        let r = &mut inst.runners[slot];
        r.slot = if ephemeral { Slot::Gone } else { Slot::Idle };
        let runner = r.name.clone();
        p.running -= 1;
        self.jobs[job] = JobStatus::Done {
            pool,
            started: Some(started),
            interrupted: false,
            runner: Some(runner.clone()),
        };
        Some(runner)
    }

    /// Takes a still-queued job out of its queue (cancelled before a runner took it).
    pub fn cancel_queued(&mut self, job: usize) -> bool {
        let JobStatus::Queued { pool } = self.jobs[job] else {
            return false;
        };
        self.pools[pool].queue.retain(|&j| j != job);
        self.jobs[job] = JobStatus::Done {
            pool,
            started: None,
            interrupted: false,
            runner: None,
        };
        true
    }

    /// Removes an instance. Jobs running on it are interrupted (what a cloud does when
    /// it terminates a busy runner's machine); they are recorded, never hidden. Its
    /// runners' registrations go with it.
    pub fn remove_instance(&mut self, pool: usize, id: &str) -> bool {
        let p = &mut self.pools[pool];
        let Some(n) = p.instances.iter().position(|i| i.id == id) else {
            return false;
        };
        let inst = p.instances.remove(n);
        for r in &inst.runners {
            if let Slot::Busy(job) = r.slot {
                p.running -= 1;
                if let JobStatus::Running {
                    started,
                    pool: job_pool,
                    ..
                } = self.jobs[job]
                {
                    self.jobs[job] = JobStatus::Done {
                        pool: job_pool,
                        started: Some(started),
                        interrupted: true,
                        runner: Some(r.name.clone()),
                    };
                }
                self.interrupted.push((job, r.name.clone()));
            }
        }
        true
    }

    /// Replaces every dead instance of `pool` (booted, all runners gone) by a fresh one:
    /// what a cloud group's health check does to an instance that powered off after its
    /// ephemeral runner exited. The baselines' only runner-aware step. Returns how many.
    pub fn replace_dead(&mut self, pool: usize) -> u32 {
        let now = self.now;
        let dead: Vec<String> = self.pools[pool]
            .instances
            .iter()
            .filter(|i| i.dead(now))
            .map(|i| i.id.clone())
            .collect();
        for id in &dead {
            self.remove_instance(pool, id);
            self.boot(pool);
        }
        dead.len() as u32
    }

    /// Records a chart point for every pool.
    pub fn sample(&mut self) {
        let now = self.now;
        for p in &mut self.pools {
            let demand_slots = p.queue.len() as u32 + p.running;
            let capacity_slots = p.instances.len() as u32 * p.rpi();
            let (ready_slots, _) = p.ready_slots(now);
            p.series.push(Sample {
                at: now,
                demand_slots,
                capacity_slots,
                ready_slots,
                warm_slots: p.warm.len() as u32 * p.rpi(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalehook_core::Config;

    fn world() -> World {
        World::new(&Config::embedded_default().pools, 3, 0, 60)
    }

    #[test]
    fn jobs_wait_for_a_booted_slot_and_usage_is_exact() {
        let mut w = world();
        w.launch(0, 60);
        w.enqueue(0, Some(0));
        assert_eq!(w.start_one(), None, "instance still booting");
        w.advance_to(60);
        let s = w.start_one().expect("booted");
        assert_eq!(s.runner, "linux-x64-i-000001");
        w.advance_to(100);
        assert_eq!(w.finish(0).as_deref(), Some("linux-x64-i-000001"));
        w.advance_to(130);
        let u = w.pools[0].usage;
        assert_eq!((u.booting_secs, u.busy_secs, u.idle_secs), (60, 40, 30));
        assert_eq!(u.peak_instances, 1);
    }

    #[test]
    fn removing_a_busy_instance_interrupts_its_job() {
        let mut w = world();
        w.launch(1, 0); // k8s: 2 slots
        assert_eq!(w.pools[1].instances[0].runners[1].name, "k8s-i-000001-2");
        w.enqueue(0, Some(1));
        w.enqueue(1, Some(1));
        w.enqueue(2, None);
        assert!(w.start_one().is_some());
        assert!(w.start_one().is_some());
        assert_eq!(w.pools[1].running, 2);
        let id = w.pools[1].instances[0].id.clone();
        assert!(w.remove_instance(1, &id));
        assert_eq!(w.interrupted.len(), 2);
        assert_eq!(w.pools[1].running, 0);
        assert_eq!(w.jobs[2], JobStatus::Ignored);
        assert!(!w.remove_instance(1, &id));
    }

    #[test]
    fn cancel_takes_a_queued_job_out() {
        let mut w = world();
        w.enqueue(0, Some(0));
        assert!(w.cancel_queued(0));
        assert!(w.pools[0].queue.is_empty());
        assert!(!w.cancel_queued(0));
    }

    #[test]
    fn an_ephemeral_runner_exits_after_one_job_and_its_instance_stays() {
        let mut w = world();
        w.pools[0].config.ephemeral = true;
        w.launch(0, 0);
        w.enqueue(0, Some(0));
        w.enqueue(1, Some(0));
        assert!(w.start_one().is_some());
        assert_eq!(w.start_one(), None, "one runner, busy");
        w.advance_to(10);
        w.finish(0);
        assert_eq!(w.start_one(), None, "the runner exited: job 1 waits");
        assert_eq!(w.pools[0].instances.len(), 1, "the instance stays");
        assert!(w.pools[0].instances[0].dead(10));
        assert_eq!(w.pools[0].ready_slots(10), (0, 0));
        assert_eq!(w.replace_dead(0), 1);
        w.advance_to(70);
        assert_eq!(
            w.start_one().map(|s| s.runner).as_deref(),
            Some("linux-x64-i-000002")
        );
    }

    #[test]
    fn github_picks_among_idle_runners_at_random() {
        let mut picks = std::collections::BTreeSet::new();
        for seed in 0..20 {
            let mut w = World::new(&Config::embedded_default().pools, 1, 0, 60);
            w.seed = seed;
            for _ in 0..4 {
                w.launch(0, 0);
            }
            w.enqueue(0, Some(0));
            picks.insert(w.start_one().expect("idle runners").runner);
        }
        assert!(picks.len() > 1, "{picks:?}");
    }
}
