//! The simulated world: per pool, the instances (booting or in service, each with its runner
//! slots), the queue of jobs waiting for a runner, and the usage accounting. It knows nothing
//! of policies: the scalehook run changes it through [`crate::fleet::SimFleet`], the baselines
//! directly.

use scalehook_core::PoolConfig;
use std::collections::VecDeque;

/// One simulated instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SimInstance {
    /// `<pool>-<nnnnnn>`: also its runner key (runner names contain it, see
    /// [`SimInstance::runner_name`]).
    pub id: String,
    /// When its runners register (launch time + boot seconds).
    pub ready_at: u64,
    /// Job index per runner slot (`runners_per_instance` slots).
    pub slots: Vec<Option<usize>>,
    /// Scale-in protection, as set by the scalehook service (the baselines ignore it).
    pub protected: bool,
}

impl SimInstance {
    pub fn ready(&self, now: u64) -> bool {
        self.ready_at <= now
    }
    pub fn busy(&self) -> bool {
        self.slots.iter().any(Option::is_some)
    }
    /// The fleet's runner-naming convention: the name contains the instance id.
    pub fn runner_name(&self, slot: usize) -> String {
        format!("runner-{}-{}", self.id, slot + 1)
    }
}

/// Usage of one pool, integrated exactly over time (instance-seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub booting_secs: u64,
    pub idle_secs: u64,
    pub busy_secs: u64,
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
    /// Runner slots of booted instances: what can take a job now.
    pub ready_slots: u32,
}

#[derive(Debug)]
pub(crate) struct PoolWorld {
    pub config: PoolConfig,
    pub instances: Vec<SimInstance>,
    next_instance: u64,
    pub queue: VecDeque<usize>,
    pub running: u32,
    pub usage: Usage,
    pub series: Vec<Sample>,
}

impl PoolWorld {
    fn new(config: PoolConfig) -> Self {
        Self {
            config,
            instances: Vec::new(),
            next_instance: 0,
            queue: VecDeque::new(),
            running: 0,
            usage: Usage::default(),
            series: Vec::new(),
        }
    }

    pub fn rpi(&self) -> u32 {
        self.config.runners_per_instance.max(1)
    }

    /// Launches one instance whose runners register at `ready_at`.
    pub fn launch(&mut self, ready_at: u64) {
        self.next_instance += 1;
        let id = format!("{}-{:06}", self.config.name, self.next_instance);
        self.instances.push(SimInstance {
            id,
            ready_at,
            slots: vec![None; self.rpi() as usize],
            protected: false,
        });
    }

    /// Runner slots in service (booted) and how many of them run a job.
    pub fn ready_slots(&self, now: u64) -> (u32, u32) {
        let mut total = 0;
        let mut busy = 0;
        for i in self.instances.iter().filter(|i| i.ready(now)) {
            total += i.slots.len() as u32;
            busy += i.slots.iter().filter(|s| s.is_some()).count() as u32;
        }
        (total, busy)
    }

    fn integrate(&mut self, from: u64, to: u64) {
        let dt = to.saturating_sub(from);
        if dt == 0 {
            return;
        }
        for i in &self.instances {
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
        instance: String,
        slot: usize,
        started: u64,
    },
    Done {
        pool: usize,
        /// When a runner took it; `None` when it was cancelled while queued.
        started: Option<u64>,
        /// Its instance was removed while it ran (must never happen under scalehook).
        interrupted: bool,
    },
}

/// A job that just started on a runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Started {
    pub job: usize,
    pub pool: usize,
    pub runner: String,
}

#[derive(Debug)]
pub(crate) struct World {
    pub now: u64,
    pub boot_seconds: u64,
    pub pools: Vec<PoolWorld>,
    pub jobs: Vec<JobStatus>,
    /// Jobs whose instance was removed under them, with their runner, not yet reported.
    pub interrupted: Vec<(usize, String)>,
}

impl World {
    pub fn new(pools: &[PoolConfig], jobs: usize, now: u64, boot_seconds: u64) -> Self {
        Self {
            now,
            boot_seconds,
            pools: pools.iter().cloned().map(PoolWorld::new).collect(),
            jobs: vec![JobStatus::NotArrived; jobs],
            interrupted: Vec::new(),
        }
    }

    pub fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.config.name == name)
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

    /// Gives the longest-waiting job of some pool a free runner slot, if there is one: the
    /// first booted instance (launch order) with a free slot, so work packs onto older
    /// instances and newer ones fall idle first.
    pub fn start_one(&mut self) -> Option<Started> {
        let now = self.now;
        for (pool_index, pool) in self.pools.iter_mut().enumerate() {
            let Some(&job) = pool.queue.front() else {
                continue;
            };
            let Some((instance, slot)) = pool.instances.iter().enumerate().find_map(|(n, i)| {
                if !i.ready(now) {
                    return None;
                }
                i.slots.iter().position(Option::is_none).map(|s| (n, s))
            }) else {
                continue;
            };
            pool.queue.pop_front();
            pool.running += 1;
            let inst = &mut pool.instances[instance];
            inst.slots[slot] = Some(job);
            let runner = inst.runner_name(slot);
            self.jobs[job] = JobStatus::Running {
                pool: pool_index,
                instance: inst.id.clone(),
                slot,
                started: now,
            };
            return Some(Started {
                job,
                pool: pool_index,
                runner,
            });
        }
        None
    }

    /// Ends a running job (finished or cancelled): frees its slot. Returns its runner.
    pub fn finish(&mut self, job: usize) -> Option<String> {
        let JobStatus::Running {
            pool,
            ref instance,
            slot,
            started,
        } = self.jobs[job]
        else {
            return None;
        };
        let p = &mut self.pools[pool];
        let inst = p.instances.iter_mut().find(|i| &i.id == instance)?;
        inst.slots[slot] = None;
        let runner = inst.runner_name(slot);
        p.running -= 1;
        self.jobs[job] = JobStatus::Done {
            pool,
            started: Some(started),
            interrupted: false,
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
        };
        true
    }

    /// Removes an instance. Jobs running on it are interrupted (what a cloud does when
    /// it terminates a busy runner's machine); they are recorded, never hidden.
    pub fn remove_instance(&mut self, pool: usize, id: &str) -> bool {
        let p = &mut self.pools[pool];
        let Some(n) = p.instances.iter().position(|i| i.id == id) else {
            return false;
        };
        let inst = p.instances.remove(n);
        for (slot, job) in inst.slots.iter().enumerate() {
            if let Some(job) = *job {
                p.running -= 1;
                if let JobStatus::Running { started, .. } = self.jobs[job] {
                    self.jobs[job] = JobStatus::Done {
                        pool,
                        started: Some(started),
                        interrupted: true,
                    };
                }
                self.interrupted.push((job, inst.runner_name(slot)));
            }
        }
        true
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
        w.pools[0].launch(60);
        w.enqueue(0, Some(0));
        assert_eq!(w.start_one(), None, "instance still booting");
        w.advance_to(60);
        let s = w.start_one().expect("booted");
        assert_eq!(s.runner, "runner-linux-x64-000001-1");
        w.advance_to(100);
        assert_eq!(w.finish(0).as_deref(), Some("runner-linux-x64-000001-1"));
        w.advance_to(130);
        let u = w.pools[0].usage;
        assert_eq!((u.booting_secs, u.busy_secs, u.idle_secs), (60, 40, 30));
        assert_eq!(u.peak_instances, 1);
    }

    #[test]
    fn removing_a_busy_instance_interrupts_its_job() {
        let mut w = world();
        w.pools[1].launch(0); // k8s: 2 slots
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
}
