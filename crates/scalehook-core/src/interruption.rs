//! Spot interruptions (issue 23), decided purely: what a notice that the cloud will reclaim
//! an instance (AWS's two-minute spot interruption warning) or may soon (its rebalance
//! recommendation) does to the pool, and the ledger's memory of the jobs it interrupted.
//!
//! A notice names an instance, never a job: GitHub's runner object does not say which job
//! it runs, and the ledger's busy list holds runner names. So a notice records the instance
//! and its busy runners; the job is recorded interrupted when its `completed` delivery names
//! one of those runners with a conclusion other than `success` (a job that still finished
//! in the two minutes was not interrupted). That delivery carries everything a re-run and
//! its routing need: job id, run id, repository and job name.
//!
//! The memory is one small JSON value per pool in the ledger's cursor store
//! ([`CURSOR`]`:<pool>`), so every function instance sees it; it is bounded in entries and
//! age.

use crate::fleet::{FleetState, Instance};
use crate::github::Runner;
use crate::reroute::JobKey;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The ledger cursor of a pool's interruptions: `interrupted:<pool>`.
pub const CURSOR: &str = "interrupted";

/// How long a noticed busy instance stays out of capacity: AWS reclaims within two minutes
/// of the warning; past this the instance (still listed: a rebalance recommendation that
/// was not followed by a reclaim) counts again, and normal scale-in takes out any surplus.
pub const OUT_OF_CAPACITY_SECS: u64 = 600;

/// Notices kept (one per instance), newest last.
pub const MAX_NOTICES: usize = 64;
/// Interrupted jobs kept, newest last (oldest dropped first).
pub const MAX_JOBS: usize = 128;
/// How long a notice is kept (a completed delivery comes minutes after the reclaim).
pub const NOTICE_KEPT_SECS: u64 = 86_400;
/// How long a job whose re-run is settled is kept (its re-run's deliveries route by it).
pub const SETTLED_KEPT_SECS: u64 = 3 * 86_400;
/// How long a pending re-run is retried: GitHub re-runs jobs of runs up to 30 days old.
pub const PENDING_KEPT_SECS: u64 = 30 * 86_400;

/// What the cloud announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// The instance is reclaimed in about two minutes (AWS "EC2 Spot Instance Interruption
    /// Warning").
    Interruption,
    /// The instance is at elevated risk of a reclaim (AWS "EC2 Instance Rebalance
    /// Recommendation"): it may run on for a long time.
    Rebalance,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Interruption => "interruption",
            NoticeKind::Rebalance => "rebalance",
        }
    }
}

/// A notice about one instance of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub instance_id: String,
    pub kind: NoticeKind,
}

/// What happens to the noticed instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceAction {
    /// No job runs there: its runners are deregistered, then it is replaced now (the
    /// cloud launches the replacement while the doomed one is still up).
    Replace,
    /// A job runs there and may still finish: it stays, no longer counted as capacity, so
    /// the pass raises the desired capacity for a replacement.
    KeepOutOfCapacity,
}

/// The pure decision on a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Idle runners to deregister at once, so no job lands on the doomed instance.
    pub deregister: Vec<u64>,
    /// Busy runners (by name) whose jobs are interrupted: empty for a rebalance.
    pub interrupted_runners: Vec<String>,
    pub instance: InstanceAction,
}

/// Decides on `notice` for `instance`, given the runners GitHub reports on it (read right
/// now, by exact name) and the ledger's busy runners of the pool. A runner is busy when
/// either says so.
pub fn decide(
    notice: &Notice,
    pool: &str,
    instance: &Instance,
    runners: &[Runner],
    ledger_busy: &[String],
) -> Plan {
    let ledger_says_busy = |name: &str| ledger_busy.iter().any(|b| b.eq_ignore_ascii_case(name));
    let mut busy: Vec<String> = runners
        .iter()
        .filter(|r| r.busy || ledger_says_busy(&r.name))
        .map(|r| r.name.clone())
        .collect();
    // A busy runner GitHub no longer lists under the exact name (a runner that took a job
    // between the two reads) still holds the instance.
    busy.extend(
        ledger_busy
            .iter()
            .filter(|b| b.len() > pool.len() && b[..pool.len()].eq_ignore_ascii_case(pool))
            .filter(|b| instance.runs(b))
            .filter(|b| !busy.iter().any(|x| x.eq_ignore_ascii_case(b)))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let deregister = runners
        .iter()
        .filter(|r| !busy.iter().any(|b| b.eq_ignore_ascii_case(&r.name)))
        .map(|r| r.id)
        .collect();
    let instance = if busy.is_empty() {
        InstanceAction::Replace
    } else {
        InstanceAction::KeepOutOfCapacity
    };
    let interrupted_runners = match notice.kind {
        NoticeKind::Interruption => busy,
        NoticeKind::Rebalance => Vec::new(),
    };
    Plan {
        deregister,
        interrupted_runners,
        instance,
    }
}

/// Where an interrupted job's re-run stands. Written `Requesting` before the call and the
/// answer after it: a crash between the two leaves `Requesting`, which is never asked
/// again (at most once: a re-run repeats the job's side effects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RerunState {
    /// The pool does not re-run (`rerun_interrupted` off).
    Off,
    /// To be asked (again): GitHub refused for now, its run still goes on.
    Pending,
    /// Asked, answer not recorded (in flight, or the process died): never asked again.
    Requesting,
    /// GitHub queued the re-run (201).
    Started,
    /// GitHub refused for good, or the answer was lost (a timeout or 5xx: the request may
    /// have been carried out): never asked again.
    Failed,
}

/// A notice as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeRecord {
    pub instance: String,
    pub kind: NoticeKind,
    pub at: u64,
    /// The busy runners at an interruption warning: their jobs' completions are matched.
    #[serde(default)]
    pub runners: Vec<String>,
    /// The instance stayed with a job and is not capacity (until `at` +
    /// [`OUT_OF_CAPACITY_SECS`], while listed).
    #[serde(default)]
    pub out_of_capacity: bool,
}

/// An interrupted job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterruptedJob {
    pub job_id: u64,
    pub run_id: u64,
    pub repository: String,
    pub name: String,
    pub instance: String,
    pub runner: String,
    /// Unix seconds of its completed delivery.
    pub at: u64,
    pub rerun: RerunState,
}

/// A pool's interruptions: the cursor's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interruptions {
    #[serde(default)]
    pub notices: Vec<NoticeRecord>,
    #[serde(default)]
    pub jobs: Vec<InterruptedJob>,
}

/// A job's completed delivery, as far as interruptions need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion<'a> {
    pub job_id: u64,
    pub run_id: u64,
    pub repository: Option<&'a str>,
    pub name: Option<&'a str>,
    pub runner: Option<&'a str>,
    pub conclusion: Option<&'a str>,
}

impl Interruptions {
    /// Parses the cursor's value; an unreadable one is empty (it only forgets).
    pub fn parse(value: Option<&str>) -> Self {
        value
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Notes a notice. A second notice for the same instance (a rebalance recommendation,
    /// then the warning) keeps the first time and adds runners; `false` when nothing new
    /// was learned.
    pub fn note(&mut self, notice: &Notice, plan: &Plan, now: u64) -> bool {
        let out = plan.instance == InstanceAction::KeepOutOfCapacity;
        if let Some(n) = self
            .notices
            .iter_mut()
            .find(|n| n.instance == notice.instance_id)
        {
            let before = n.clone();
            for r in &plan.interrupted_runners {
                if !n.runners.iter().any(|x| x.eq_ignore_ascii_case(r)) {
                    n.runners.push(r.clone());
                }
            }
            if notice.kind == NoticeKind::Interruption {
                n.kind = NoticeKind::Interruption;
            }
            n.out_of_capacity |= out;
            return *n != before;
        }
        self.notices.push(NoticeRecord {
            instance: notice.instance_id.clone(),
            kind: notice.kind,
            at: now,
            runners: plan.interrupted_runners.clone(),
            out_of_capacity: out,
        });
        true
    }

    /// Whether this instance's new notice needs a replacement: not when an earlier notice
    /// already took it out of capacity.
    pub fn already_out(&self, instance: &str) -> bool {
        self.notices
            .iter()
            .any(|n| n.instance == instance && n.out_of_capacity)
    }

    /// Records the job of `completion` as interrupted when its runner was busy on a noticed
    /// instance and it did not succeed. Returns the job when it is newly recorded; a
    /// redelivery of the same completion records nothing.
    pub fn complete(
        &mut self,
        completion: &Completion<'_>,
        rerun: bool,
        now: u64,
    ) -> Option<&InterruptedJob> {
        let runner = completion.runner?;
        if completion.conclusion == Some("success") || completion.conclusion == Some("skipped") {
            return None;
        }
        if self.jobs.iter().any(|j| j.job_id == completion.job_id) {
            return None;
        }
        let notice = self.notices.iter().find(|n| {
            n.kind == NoticeKind::Interruption
                && n.runners.iter().any(|r| r.eq_ignore_ascii_case(runner))
        })?;
        let job = InterruptedJob {
            job_id: completion.job_id,
            run_id: completion.run_id,
            repository: completion.repository.unwrap_or_default().to_string(),
            name: completion.name.unwrap_or_default().to_string(),
            instance: notice.instance.clone(),
            runner: runner.to_string(),
            at: now,
            rerun: if rerun && completion.repository.is_some() {
                RerunState::Pending
            } else {
                RerunState::Off
            },
        };
        self.jobs.push(job);
        self.jobs.last()
    }

    /// Up to `limit` jobs whose re-run is to be asked, oldest first.
    pub fn pending(&self, limit: usize) -> Vec<u64> {
        self.jobs
            .iter()
            .filter(|j| j.rerun == RerunState::Pending)
            .take(limit)
            .map(|j| j.job_id)
            .collect()
    }

    /// Moves a job's re-run from `from` to `to`; `false` if it was not at `from` (another
    /// process got there first: the caller must not ask GitHub).
    pub fn set_rerun(&mut self, job_id: u64, from: RerunState, to: RerunState) -> bool {
        match self
            .jobs
            .iter_mut()
            .find(|j| j.job_id == job_id && j.rerun == from)
        {
            Some(j) => {
                j.rerun = to;
                true
            }
            None => false,
        }
    }

    pub fn job(&self, job_id: u64) -> Option<&InterruptedJob> {
        self.jobs.iter().find(|j| j.job_id == job_id)
    }

    /// The jobs as [`crate::reroute::route_attempt`] matches re-runs.
    pub fn keys(&self) -> HashSet<JobKey> {
        self.jobs
            .iter()
            .filter(|j| !j.name.is_empty())
            .map(|j| JobKey {
                run_id: j.run_id,
                name: j.name.clone(),
            })
            .collect()
    }

    /// Instances that stay out of capacity at `now`.
    pub fn out_of_capacity(&self, now: u64) -> impl Iterator<Item = &str> {
        self.notices
            .iter()
            .filter(move |n| n.out_of_capacity && n.at.saturating_add(OUT_OF_CAPACITY_SECS) > now)
            .map(|n| n.instance.as_str())
    }

    /// Drops what is too old or beyond the bounds (oldest first).
    pub fn prune(&mut self, now: u64) {
        self.notices
            .retain(|n| n.at.saturating_add(NOTICE_KEPT_SECS) > now);
        self.jobs.retain(|j| {
            let kept = match j.rerun {
                RerunState::Pending => PENDING_KEPT_SECS,
                _ => SETTLED_KEPT_SECS,
            };
            j.at.saturating_add(kept) > now
        });
        let extra = self.notices.len().saturating_sub(MAX_NOTICES);
        self.notices.drain(..extra);
        let extra = self.jobs.len().saturating_sub(MAX_JOBS);
        self.jobs.drain(..extra);
    }
}

/// The fleet as capacity: instances that stay out of capacity are left out, and the
/// desired capacity and the group's max lowered by as many, so the policy launches their
/// replacements. Returns how many were left out (what a desired capacity set on this view
/// must add back).
pub fn discount(state: &mut FleetState, out: &HashSet<&str>) -> u32 {
    let before = state.instances.len();
    state.instances.retain(|i| !out.contains(i.id.as_str()));
    let n = u32::try_from(before - state.instances.len()).unwrap_or(u32::MAX);
    state.desired = state.desired.saturating_sub(n);
    state.max = state.max.map(|m| m.saturating_sub(n));
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str) -> Instance {
        Instance {
            id: id.into(),
            runner_key: id.into(),
            launching: false,
            protected: false,
            launched_at: None,
        }
    }

    fn runner(id: u64, name: &str, busy: bool) -> Runner {
        Runner {
            id,
            name: name.into(),
            online: true,
            busy,
            labels: vec![],
        }
    }

    fn warning(kind: NoticeKind) -> Notice {
        Notice {
            instance_id: "i-1".into(),
            kind,
        }
    }

    #[test]
    fn an_idle_instance_is_deregistered_and_replaced() {
        let runners = [runner(7, "spot-i-1", false)];
        let plan = decide(
            &warning(NoticeKind::Interruption),
            "spot",
            &instance("i-1"),
            &runners,
            &[],
        );
        assert_eq!(plan.deregister, vec![7]);
        assert_eq!(plan.instance, InstanceAction::Replace);
        assert!(plan.interrupted_runners.is_empty());
    }

    #[test]
    fn a_busy_instance_stays_out_of_capacity_and_its_job_is_interrupted() {
        // Busy per GitHub.
        let plan = decide(
            &warning(NoticeKind::Interruption),
            "spot",
            &instance("i-1"),
            &[runner(7, "spot-i-1", true)],
            &[],
        );
        assert_eq!(plan.instance, InstanceAction::KeepOutOfCapacity);
        assert_eq!(plan.interrupted_runners, vec!["spot-i-1".to_string()]);
        assert!(plan.deregister.is_empty());
        // Busy per the ledger only (GitHub's list lags a job just taken).
        let plan = decide(
            &warning(NoticeKind::Interruption),
            "spot",
            &instance("i-1"),
            &[runner(7, "spot-i-1", false)],
            &["SPOT-i-1".to_string(), "spot-i-2".to_string()],
        );
        assert_eq!(plan.instance, InstanceAction::KeepOutOfCapacity);
        assert!(
            plan.deregister.is_empty(),
            "a busy runner is not deregistered"
        );
        // Busy per the ledger, not listed by GitHub at all.
        let plan = decide(
            &warning(NoticeKind::Interruption),
            "spot",
            &instance("i-1"),
            &[],
            &["spot-i-1".to_string()],
        );
        assert_eq!(plan.interrupted_runners, vec!["spot-i-1".to_string()]);
    }

    #[test]
    fn several_runners_only_the_idle_ones_are_deregistered() {
        let plan = decide(
            &warning(NoticeKind::Interruption),
            "spot",
            &instance("i-1"),
            &[
                runner(1, "spot-i-1-1", true),
                runner(2, "spot-i-1-2", false),
            ],
            &[],
        );
        assert_eq!(plan.deregister, vec![2]);
        assert_eq!(plan.interrupted_runners, vec!["spot-i-1-1".to_string()]);
    }

    #[test]
    fn a_rebalance_records_no_job() {
        let plan = decide(
            &warning(NoticeKind::Rebalance),
            "spot",
            &instance("i-1"),
            &[runner(1, "spot-i-1", true)],
            &[],
        );
        assert_eq!(plan.instance, InstanceAction::KeepOutOfCapacity);
        assert!(plan.interrupted_runners.is_empty());
        let mut mem = Interruptions::default();
        assert!(mem.note(&warning(NoticeKind::Rebalance), &plan, 100));
        let done = Completion {
            job_id: 5,
            run_id: 9,
            repository: Some("acme/app"),
            name: Some("build"),
            runner: Some("spot-i-1"),
            conclusion: Some("failure"),
        };
        assert!(mem.complete(&done, true, 200).is_none());
    }

    fn interrupted() -> Interruptions {
        let plan = decide(
            &warning(NoticeKind::Interruption),
            "spot",
            &instance("i-1"),
            &[runner(1, "spot-i-1", true)],
            &[],
        );
        let mut mem = Interruptions::default();
        assert!(mem.note(&warning(NoticeKind::Interruption), &plan, 100));
        assert!(!mem.note(&warning(NoticeKind::Interruption), &plan, 110));
        mem
    }

    fn completion(conclusion: &'static str, job_id: u64) -> Completion<'static> {
        Completion {
            job_id,
            run_id: 9,
            repository: Some("acme/app"),
            name: Some("build"),
            runner: Some("spot-i-1"),
            conclusion: Some(conclusion),
        }
    }

    #[test]
    fn a_failed_completion_on_a_warned_runner_is_an_interrupted_job_once() {
        let mut mem = interrupted();
        assert!(
            mem.complete(&completion("success", 5), true, 150).is_none(),
            "it finished in time"
        );
        let job = mem
            .complete(&completion("failure", 5), true, 150)
            .cloned()
            .expect("recorded");
        assert_eq!(
            (job.job_id, job.run_id, job.instance.as_str(), job.rerun),
            (5, 9, "i-1", RerunState::Pending)
        );
        assert!(mem.complete(&completion("failure", 5), true, 151).is_none());
        assert_eq!(mem.pending(10), vec![5]);
        // Another runner's job is not interrupted.
        let mut other = completion("failure", 6);
        other.runner = Some("spot-i-2");
        assert!(mem.complete(&other, true, 150).is_none());
        // Without rerun_interrupted the job is recorded, never re-run.
        let mut off = interrupted();
        let job = off
            .complete(&completion("cancelled", 5), false, 150)
            .cloned();
        assert_eq!(job.map(|j| j.rerun), Some(RerunState::Off));
        assert!(off.pending(10).is_empty());
        let keys = mem.keys();
        assert!(keys.contains(&JobKey {
            run_id: 9,
            name: "build".into()
        }));
    }

    #[test]
    fn a_rerun_is_asked_at_most_once() {
        let mut mem = interrupted();
        mem.complete(&completion("failure", 5), true, 150);
        assert!(mem.set_rerun(5, RerunState::Pending, RerunState::Requesting));
        assert!(
            !mem.set_rerun(5, RerunState::Pending, RerunState::Requesting),
            "a second asker finds it taken"
        );
        assert!(mem.pending(10).is_empty());
        // Not yet: back to pending, asked again later.
        assert!(mem.set_rerun(5, RerunState::Requesting, RerunState::Pending));
        assert_eq!(mem.pending(10), vec![5]);
    }

    #[test]
    fn out_of_capacity_instances_are_discounted_for_a_while() {
        let mem = interrupted();
        let out: HashSet<&str> = mem.out_of_capacity(200).collect();
        let mut state = FleetState {
            desired: 3,
            min: Some(0),
            max: Some(5),
            instances: vec![instance("i-0"), instance("i-1"), instance("i-2")],
            supports_protection: true,
            ..FleetState::default()
        };
        assert_eq!(discount(&mut state, &out), 1);
        assert_eq!(
            (state.desired, state.max, state.instances.len()),
            (2, Some(4), 2)
        );
        assert_eq!(mem.out_of_capacity(100 + OUT_OF_CAPACITY_SECS).count(), 0);
        // Gone from the fleet: nothing to discount.
        let mut gone = FleetState {
            desired: 2,
            instances: vec![instance("i-0")],
            ..FleetState::default()
        };
        assert_eq!(discount(&mut gone, &out), 0);
        assert_eq!(gone.desired, 2);
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut mem = Interruptions::default();
        for i in 0..(MAX_JOBS as u64 + 10) {
            mem.notices.push(NoticeRecord {
                instance: format!("i-{i}"),
                kind: NoticeKind::Interruption,
                at: 1000 + i,
                runners: vec![],
                out_of_capacity: false,
            });
            mem.jobs.push(InterruptedJob {
                job_id: i,
                run_id: 1,
                repository: "a/b".into(),
                name: format!("j{i}"),
                instance: "i".into(),
                runner: "r".into(),
                at: 1000 + i,
                rerun: RerunState::Started,
            });
        }
        mem.prune(2000);
        assert_eq!((mem.notices.len(), mem.jobs.len()), (MAX_NOTICES, MAX_JOBS));
        assert_eq!(mem.jobs[0].job_id, 10, "the oldest go first");
        mem.prune(1000 + SETTLED_KEPT_SECS + 200);
        assert!(mem.jobs.is_empty() && mem.notices.is_empty());
        assert_eq!(
            Interruptions::parse(Some("not json")),
            Interruptions::default()
        );
        assert_eq!(Interruptions::parse(Some(&mem.to_json())), mem);
    }
}
