//! Faster and cheaper capacity: the warm pool (stopped instances that start in
//! `warm_boot_seconds` instead of a cold boot) and spot instances (reclaimed by the cloud at
//! random, the interrupted job re-run once, on on-demand capacity, when the pool says so; a failed spot launch
//! spills to the pool's on-demand `overflow` pool while it has room). World-level, like the
//! cloud group itself: every policy launching into a pool gets the same warm pool and the
//! same reclaims.

use crate::rng;
use crate::workload::{Job, Workload};
use crate::world::World;
use crate::SimError;
use scalehook_core::event::WorkflowJob;
use scalehook_core::reroute::{route_attempt, Attempt, JobKey};
use scalehook_core::Config;
use std::collections::HashSet;

/// The workload with room for one re-run per job: job `n`'s re-run is job `n + offset`
/// (`offset` = the trace's job count), a new job of its own (GitHub gives a re-run a new job
/// id, the same `run_id` and `name`, and `run_attempt` 2), which arrives only if a reclaim
/// interrupts job `n`. A trace job without a `name` is given `job <id>`, so its re-run can
/// be matched to it.
///
/// The re-run's pool is the core's [`route_attempt`] (the re-run of an interrupted job goes
/// to the on-demand `overflow` pool of its pool). GitHub gives a job to a runner by labels,
/// so a re-run sent elsewhere than its labels route asks for that pool's labels, as a
/// workflow's `runs-on` can on `github.run_attempt`: the overflow pool needs a label its spot
/// pool lacks, or no runner could tell the re-run from a first attempt.
pub(crate) fn with_reruns(
    mut workload: Workload,
    config: &Config,
) -> Result<(Workload, usize), SimError> {
    let offset = workload.jobs.len();
    let first_id = workload.jobs.iter().map(|j| j.id).max().unwrap_or(0) + 1;
    let mut reruns = Vec::with_capacity(offset);
    for (n, j) in workload.jobs.iter_mut().enumerate() {
        let not_object = || SimError::Internal(format!("job {}: payload is not an object", j.id));
        let wj = j
            .payload
            .get_mut("workflow_job")
            .and_then(serde_json::Value::as_object_mut)
            .ok_or_else(not_object)?;
        if !wj.get("name").is_some_and(serde_json::Value::is_string) {
            wj.insert("name".into(), format!("job {}", j.id).into());
        }
        let id = first_id + n as u64;
        let mut payload = j.payload.clone();
        let wj = payload
            .get_mut("workflow_job")
            .and_then(serde_json::Value::as_object_mut)
            .ok_or_else(not_object)?;
        wj.insert("id".into(), id.into());
        wj.insert("run_attempt".into(), 2.into());
        let job: WorkflowJob = serde_json::from_value(serde_json::Value::Object(wj.clone()))
            .map_err(|e| SimError::Internal(format!("job {}: {e}", j.id)))?;
        let name = job.name.clone().unwrap_or_default();
        // Only interrupted jobs are re-run: the ledger would remember this one.
        let interrupted = HashSet::from([JobKey {
            run_id: job.run_id,
            name: name.clone(),
        }]);
        let attempt = Attempt {
            run_id: job.run_id,
            name: Some(&name),
            run_attempt: job.run_attempt,
        };
        let routed = config.route(&job.labels).map(|p| &p.name);
        let rerouted = route_attempt(config, &job.labels, attempt, &interrupted);
        if let Some(to) = rerouted.filter(|p| Some(&p.name) != routed) {
            if config.route(&to.labels).map(|p| &p.name) != Some(&to.name) {
                return Err(SimError::Options(format!(
                    "pool {} re-runs interrupted jobs on its overflow pool {}, whose labels \
                     route to another pool: give {} a label of its own (such as \"on-demand\") \
                     for re-runs to ask for",
                    routed.map_or("?", |n| n.as_str()),
                    to.name,
                    to.name
                )));
            }
            wj.insert("labels".into(), to.labels.clone().into());
        }
        reruns.push(Job {
            id,
            payload,
            ..j.clone()
        });
    }
    workload.jobs.extend(reruns);
    Ok((workload, offset))
}

impl World {
    /// Launches one instance into `pool` as a cloud group scaling out does: from the warm
    /// pool when one of its instances is warmed (its runners register `warm_boot_seconds`
    /// later), else cold (`boot_seconds`). A warm instance taken is replaced in the warm
    /// pool by a cold-booted one; an instance never goes back to the warm pool.
    ///
    /// On spot, the launch fails with `spot_launch_failure`; then, when the pool names an
    /// `overflow` pool below its `max` (its own instances and the overflow instances it
    /// hosts), an on-demand instance is launched instead, for this pool's jobs; else the
    /// group owes the launch (`short`) and retries it at the next tick
    /// ([`World::retry_launches`]). Returns whether an instance was launched.
    pub fn boot(&mut self, pool: usize) -> bool {
        let now = self.now;
        if self.pools[pool].spot && self.spot_launch_fails() {
            let Some(to) = self.overflow_room(pool) else {
                self.pools[pool].short += 1;
                return false;
            };
            self.launch(pool, now + self.boot_seconds);
            if let Some(i) = self.pools[pool].instances.last_mut() {
                i.overflow_to = Some(to);
                i.reclaim_at = None;
            }
            return true;
        }
        let p = &mut self.pools[pool];
        let ready_at = match p.warm.iter().position(|&warmed| warmed <= now) {
            Some(k) => {
                p.warm.swap_remove(k);
                now + self.warm_boot_seconds
            }
            None => now + self.boot_seconds,
        };
        self.launch(pool, ready_at);
        self.refill_warm(pool);
        true
    }

    /// Retries the launches every group owes (every tick).
    pub fn retry_launches(&mut self) {
        for pool in 0..self.pools.len() {
            for _ in 0..std::mem::take(&mut self.pools[pool].short) {
                self.boot(pool);
            }
        }
    }

    fn spot_launch_fails(&mut self) -> bool {
        if self.spot_launch_failure <= 0.0 {
            return false;
        }
        self.spot_launches += 1;
        rng::unit(self.seed, rng::LAUNCH, self.spot_launches) < self.spot_launch_failure
    }

    /// The overflow pool of `pool`, when it has room for one more instance.
    fn overflow_room(&self, pool: usize) -> Option<usize> {
        let name = self.pools[pool].config.overflow.as_deref()?;
        let to = self.pool_index(name)?;
        let hosted = self
            .pools
            .iter()
            .flat_map(|p| p.instances.iter())
            .filter(|i| i.overflow_to == Some(to))
            .count();
        let used = (self.pools[to].instances.len() + hosted) as u32;
        (used < self.pools[to].config.max).then_some(to)
    }

    /// Tops the warm pool of `pool` up to its `warm_pool`, warming from now.
    pub fn refill_warm(&mut self, pool: usize) {
        let warmed = self.now + self.boot_seconds;
        let p = &mut self.pools[pool];
        while (p.warm.len() as u32) < p.config.warm_pool {
            p.warm.push(warmed);
        }
    }

    /// When the instance numbered `n` of `pool` is reclaimed: exponentially distributed
    /// from its launch at `reclaims_per_hour` (memoryless, as reclaims are modelled), seeded
    /// by the instance's number. `None` off spot.
    pub(crate) fn draw_reclaim(&self, pool: usize, n: u64) -> Option<u64> {
        let rate = self.reclaims_per_hour;
        if !self.pools[pool].spot || rate <= 0.0 {
            return None;
        }
        let u = rng::unit(self.seed, rng::RECLAIM, n);
        let secs = -(1.0 - u).ln() / rate * 3600.0;
        // At least a second after launch; beyond a year means never in a simulation.
        Some(self.now + secs.clamp(1.0, 365.0 * 86_400.0) as u64)
    }

    /// The next reclaim after now.
    pub fn next_reclaim(&self) -> Option<u64> {
        self.pools
            .iter()
            .flat_map(|p| p.instances.iter())
            .filter_map(|i| i.reclaim_at)
            .filter(|&t| t > self.now)
            .min()
    }

    /// Reclaims the spot instances due now. A running job is interrupted (reported like any
    /// other interruption) and, in a `rerun_interrupted` pool, queued for its one re-run;
    /// the group launches a replacement at once, keeping its desired capacity.
    pub fn reclaim_due(&mut self) -> u32 {
        let now = self.now;
        let mut reclaimed = 0;
        for pool in 0..self.pools.len() {
            let due: Vec<String> = self.pools[pool]
                .instances
                .iter()
                .filter(|i| i.reclaim_at.is_some_and(|t| t <= now))
                .map(|i| i.id.clone())
                .collect();
            for id in due {
                let before = self.interrupted.len();
                self.remove_instance(pool, &id);
                let rerun = self.pools[pool].config.rerun_interrupted;
                if let (true, Some(offset)) = (rerun, self.rerun_offset) {
                    let jobs: Vec<usize> = self.interrupted[before..]
                        .iter()
                        .map(|(job, _)| *job)
                        .filter(|&job| job < offset)
                        .collect();
                    self.reruns.extend(jobs.into_iter().map(|job| job + offset));
                }
                self.boot(pool);
                reclaimed += 1;
            }
        }
        reclaimed
    }
}

#[cfg(test)]
mod tests {
    use crate::world::{JobStatus, World};
    use scalehook_core::{Capacity, Config};

    fn world(extra: &str) -> World {
        let toml = format!("[[pools]]\nname = \"p\"\nlabels = [\"self-hosted\"]\nmax = 5\n{extra}");
        let config = Config::from_toml(&toml).expect("valid");
        World::new(&config.pools, 4, 0, 90)
    }

    #[test]
    fn a_warm_instance_boots_fast_and_is_replaced_cold() {
        let mut w = world("warm_pool = 1");
        w.warm_boot_seconds = 20;
        w.refill_warm(0);
        w.pools[0].warm = vec![0];
        w.boot(0);
        assert_eq!(w.pools[0].instances[0].ready_at, 20, "from the warm pool");
        assert_eq!(w.pools[0].warm, vec![90], "refilled by a cold boot");
        w.boot(0);
        assert_eq!(
            w.pools[0].instances[1].ready_at, 90,
            "warm pool still warming"
        );
        for t in [20, 90, 100] {
            w.advance_to(t);
        }
        let u = w.pools[0].usage;
        // Warming (0..90) is paid in full, warm (90..100) at the warm ratio.
        assert_eq!((u.warm_secs, u.booting_secs), (10, 90 + 20 + 90));
        w.remove_instance(0, &w.pools[0].instances[0].id.clone());
        assert_eq!(w.pools[0].warm.len(), 1, "a used instance never goes back");
    }

    #[test]
    fn a_failed_spot_launch_spills_to_the_overflow_pool_within_its_max() {
        let toml = "[[pools]]\nname = \"s\"\nlabels = [\"x\"]\nmax = 5\ncapacity = \"spot\"\noverflow = \"od\"\n[[pools]]\nname = \"od\"\nlabels = [\"x\"]\nmax = 2\n";
        let config = Config::from_toml(toml).expect("valid");
        let mut w = World::new(&config.pools, 0, 0, 90);
        w.spot_launch_failure = 1.0;
        w.launch(1, 0); // the overflow pool's own instance
        assert!(w.boot(0), "spilled");
        let i = &w.pools[0].instances[0];
        assert_eq!((i.overflow_to, i.reclaim_at), (Some(1), None));
        assert!(!w.boot(0), "od: 1 own + 1 hosted = its max");
        assert_eq!(w.pools[0].short, 1, "owed, retried at the next tick");
        w.spot_launch_failure = 0.0;
        w.retry_launches();
        assert_eq!((w.pools[0].instances.len(), w.pools[0].short), (2, 0));
        assert_eq!(w.pools[0].instances[1].overflow_to, None, "spot again");
        w.advance_to(60);
        assert_eq!(w.pools[0].usage.overflow_secs, 60);
    }

    fn one_job(labels: &[&str]) -> crate::workload::Workload {
        let payload = serde_json::json!({"action": "queued", "workflow_job": {
            "id": 10, "run_id": 7, "run_attempt": 1, "labels": labels}});
        crate::workload::Workload {
            jobs: vec![crate::workload::Job {
                id: 10,
                arrival: 0,
                work: crate::workload::Work::Runs(60),
                payload,
                line: 1,
            }],
            start: 0,
            end: 60,
            incomplete_jobs: 0,
            other_events: 0,
        }
    }

    #[test]
    fn a_rerun_asks_for_the_overflow_pool_of_its_pool() {
        let spot = "[[pools]]\nname = \"s\"\nlabels = [\"x\"]\nmax = 5\ncapacity = \"spot\"\nrerun_interrupted = true\noverflow = \"od\"\n";
        let config = Config::from_toml(&format!(
            "{spot}[[pools]]\nname = \"od\"\nlabels = [\"x\", \"on-demand\"]\nmax = 2\n"
        ))
        .expect("valid");
        let (w, offset) = super::with_reruns(one_job(&["x"]), &config).expect("re-runs");
        assert_eq!((offset, w.jobs.len()), (1, 2));
        let (first, rerun) = (
            &w.jobs[0].payload["workflow_job"],
            &w.jobs[1].payload["workflow_job"],
        );
        assert_eq!(
            first["labels"],
            serde_json::json!(["x"]),
            "the first attempt stays"
        );
        assert_eq!(first["name"], "job 10", "named, so its re-run matches it");
        assert_eq!(rerun["labels"], serde_json::json!(["x", "on-demand"]));
        assert_eq!(
            (
                &rerun["run_id"],
                &rerun["name"],
                &rerun["run_attempt"],
                &rerun["id"]
            ),
            (
                &first["run_id"],
                &first["name"],
                &serde_json::json!(2),
                &serde_json::json!(11)
            )
        );
        // An overflow pool with the same labels: no runner could tell the re-run apart.
        let same = Config::from_toml(&format!(
            "{spot}[[pools]]\nname = \"od\"\nlabels = [\"x\"]\nmax = 2\n"
        ))
        .expect("valid");
        let e = super::with_reruns(one_job(&["x"]), &same).expect_err("refused");
        assert!(e.to_string().contains("label of its own"), "{e}");
        // No overflow pool: the re-run keeps its labels.
        let alone =
            Config::from_toml(spot.replace("overflow = \"od\"\n", "").as_str()).expect("valid");
        let (w, _) = super::with_reruns(one_job(&["x"]), &alone).expect("re-runs");
        assert_eq!(
            w.jobs[1].payload["workflow_job"]["labels"],
            serde_json::json!(["x"])
        );
    }

    #[test]
    fn a_reclaim_interrupts_replaces_and_reruns_once() {
        let mut w = world("capacity = \"spot\"\nrerun_interrupted = true");
        assert_eq!(w.pools[0].config.capacity, Capacity::Spot);
        w.reclaims_per_hour = 1.0;
        w.rerun_offset = Some(2);
        w.launch(0, 0);
        let at = w.next_reclaim().expect("spot instances are reclaimed");
        w.enqueue(0, Some(0));
        w.start_one().expect("started");
        w.advance_to(at);
        assert_eq!(w.reclaim_due(), 1);
        assert_eq!(w.interrupted.len(), 1);
        assert!(matches!(
            w.jobs[0],
            JobStatus::Done {
                interrupted: true,
                ..
            }
        ));
        assert_eq!(w.reruns, vec![2], "job 0 re-runs as job 2");
        assert_eq!(w.pools[0].instances.len(), 1, "replaced");
        // A re-run interrupted in turn is not re-run again.
        w.reruns.clear();
        w.enqueue(2, Some(0));
        w.advance_to(w.pools[0].instances[0].ready_at);
        w.start_one().expect("the re-run starts");
        let at = w.next_reclaim().expect("reclaimed too");
        w.advance_to(at);
        assert_eq!(w.reclaim_due(), 1);
        assert!(w.reruns.is_empty());
        // On-demand pools are never reclaimed.
        let mut w = world("");
        w.reclaims_per_hour = 1.0;
        w.launch(0, 0);
        assert_eq!(w.next_reclaim(), None);
    }
}
