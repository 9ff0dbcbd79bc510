//! The policies compared: scalehook itself (the real service, fed the deliveries the
//! simulated GitHub sends, with and without a GitHub App) and two baselines that act on the
//! world directly.

use crate::fleet::SimFleet;
use crate::github::{GitHubCalls, SimGitHub};
use crate::rng;
use crate::workload::Workload;
use crate::world::{Action, Ending, HookAttempt, Message, Started, World};
use crate::SimError;
use async_trait::async_trait;
use http::{HeaderMap, HeaderValue, Method};
use scalehook_core::{Config, LogFormat, ManualClock, MemoryLedger, Service, WebhookSecrets};
use serde::Serialize;

/// What decides capacity, told about everything that happens to jobs.
#[async_trait]
pub(crate) trait Controller: Send {
    /// The pools' resting capacity at the window's start (booted at once by the engine:
    /// the autoscaler has been running long before the trace begins).
    async fn warm_up(&mut self) -> Result<(), SimError>;
    /// A job arrives; GitHub queues it for `pool`'s runners (`None`: no pool has its labels).
    async fn queued(&mut self, job: usize, pool: Option<usize>) -> Result<(), SimError>;
    async fn started(&mut self, started: &Started) -> Result<(), SimError>;
    async fn finished(
        &mut self,
        job: usize,
        runner: Option<&str>,
        ending: Ending,
    ) -> Result<(), SimError>;
    /// Every [`crate::TICK_SECS`].
    async fn tick(&mut self) -> Result<(), SimError>;
    /// When the controller next has something to do between job events (a delivery on its
    /// way, a redelivery).
    fn next_wake(&self) -> Option<u64> {
        None
    }
    /// Does what is due now.
    async fn wake(&mut self) -> Result<(), SimError> {
        Ok(())
    }
    /// What the webhook and GitHub saw (the scalehook runs).
    fn service_figures(&self) -> Option<ServiceFigures> {
        None
    }
}
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The policies, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The real scalehook service with a GitHub App (the simulated GitHub behind the
    /// [`scalehook_core::GitHub`] trait): webhook deliveries plus the reconcile pass, which
    /// can ask GitHub.
    Scalehook,
    /// The real scalehook service without a GitHub App ([`scalehook_core::NoGitHub`]): it
    /// knows only what the deliveries that reach it say.
    ScalehookWebhookOnly,
    /// A CPU-utilisation alarm on the group ([`CpuThreshold`]).
    CpuThreshold,
    /// Every pool at its `max` all the time, no autoscaler.
    FixedSize,
}

impl Policy {
    pub const ALL: [Policy; 4] = [
        Policy::Scalehook,
        Policy::ScalehookWebhookOnly,
        Policy::CpuThreshold,
        Policy::FixedSize,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Scalehook => "scalehook",
            Policy::ScalehookWebhookOnly => "scalehook-webhook-only",
            Policy::CpuThreshold => "cpu-threshold",
            Policy::FixedSize => "fixed-size",
        }
    }

    /// Driven by webhook deliveries (the real service).
    pub fn is_scalehook(self) -> bool {
        matches!(self, Policy::Scalehook | Policy::ScalehookWebhookOnly)
    }
}

/// The CPU-threshold baseline: the classic target-less step scaling on a CPU alarm, as an
/// ASG with CloudWatch alarms or a VMSS autoscale rule does it. Utilisation is runner slots
/// running a job / runner slots in service (booted), sampled every [`crate::TICK_SECS`] (60 s): a
/// busy runner counts as a busy CPU, an idle one as an idle CPU. A booting instance reports
/// nothing, and with no instance in service there is no sample (a CPU metric cannot see
/// queued jobs), which is why the pool keeps at least one instance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuThreshold {
    /// Scale out when utilisation is above this (0.70 = 70%) ...
    pub high: f64,
    /// ... for this many consecutive 1-minute samples (5: a CloudWatch alarm with
    /// 5 x 1-minute evaluation periods), ...
    pub high_samples: u32,
    /// ... by this many instances.
    pub step: u32,
    /// Scale in (one idle instance) when utilisation is below this (0.30) ...
    pub low: f64,
    /// ... for this many consecutive samples (15).
    pub low_samples: u32,
    /// No scaling action for this long after one (300 s, the ASG default cooldown).
    pub cooldown_secs: u64,
    /// Never fewer instances than this (nor than the pool's `min`).
    pub floor: u32,
}

impl Default for CpuThreshold {
    fn default() -> Self {
        Self {
            high: 0.70,
            high_samples: 5,
            step: 1,
            low: 0.30,
            low_samples: 15,
            cooldown_secs: 300,
            floor: 1,
        }
    }
}

fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|p| p.into_inner())
}

/// The secret the in-process deliveries are signed with. Simulation only: nothing leaves
/// the process, and the service verifies each delivery exactly as it would GitHub's.
const SIM_SECRET: &str = "scalehook-simulate-in-process";

/// How the simulated GitHub delivers the webhook.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Delivering {
    /// Probability that a delivery never reaches the service (GitHub logs it as failed).
    pub lose: f64,
    /// Seconds from a runner taking a job to its `in_progress` delivery reaching the service.
    pub in_progress_delay_secs: u64,
    pub seed: u64,
}

/// What the webhook and GitHub saw of one scalehook run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ServiceFigures {
    /// Deliveries GitHub sent (first attempts), including lost ones and deliveries for
    /// jobs no pool takes.
    pub deliveries: u64,
    /// First attempts that never reached the service.
    pub lost: u64,
    /// Redeliveries the service asked for that reached it.
    pub redelivered: u64,
    /// Reconcile passes.
    pub reconciles: u64,
    /// GitHub API calls (all zero without a GitHub App).
    pub github_calls: GitHubCalls,
}

/// A delivery on its way.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    due: u64,
    /// Order of sending, for equal times.
    seq: u64,
}

/// scalehook: the real [`Service`] over a [`MemoryLedger`] and a [`SimFleet`], on the
/// virtual clock, with the simulated GitHub (a GitHub App) or without one.
pub(crate) struct ScalehookController {
    service: Service,
    github: Option<Arc<SimGitHub>>,
    workload: Arc<Workload>,
    world: Arc<Mutex<World>>,
    delivering: Delivering,
    in_flight: BinaryHeap<Reverse<(InFlight, usize)>>,
    /// Deliveries on their way: (guid, message, redelivery), indexed by `in_flight`.
    messages: Vec<Option<(String, Message, bool)>>,
    seq: u64,
    attempts: u64,
    figures: ServiceFigures,
}

impl ScalehookController {
    pub fn new(
        config: Config,
        workload: Arc<Workload>,
        world: Arc<Mutex<World>>,
        clock: Arc<ManualClock>,
        with_app: bool,
        delivering: Delivering,
    ) -> Result<Self, SimError> {
        let secrets =
            WebhookSecrets::new([SIM_SECRET]).map_err(|e| SimError::Internal(e.to_string()))?;
        let mut service = Service::new(
            config,
            secrets,
            Arc::new(MemoryLedger::new()),
            Arc::new(SimFleet::new(world.clone())),
        )
        .with_clock(clock)
        .with_log(LogFormat::Off);
        let github = with_app.then(|| Arc::new(SimGitHub::new(world.clone(), &workload)));
        if let Some(g) = &github {
            service = service.with_github(g.clone());
        }
        Ok(Self {
            service,
            github,
            workload,
            world,
            delivering,
            in_flight: BinaryHeap::new(),
            messages: Vec::new(),
            seq: 0,
            attempts: 0,
            figures: ServiceFigures::default(),
        })
    }

    pub fn figures(&self) -> ServiceFigures {
        let mut f = self.figures;
        if let Some(g) = &self.github {
            f.github_calls = g.calls();
        }
        f
    }

    /// GitHub sends a new delivery: lost with the configured probability (decided by the
    /// seed, the job and the action, so both scalehook runs lose the same ones), and the
    /// `in_progress` one after the configured delay.
    async fn send(&mut self, message: Message) -> Result<(), SimError> {
        self.figures.deliveries += 1;
        let guid = format!("sim-{}", self.figures.deliveries);
        let now = lock(&self.world).now;
        let due = match message.action {
            Action::InProgress => now + self.delivering.in_progress_delay_secs,
            Action::Queued | Action::Completed => now,
        };
        if due == now {
            self.attempt(guid, message, false).await
        } else {
            self.schedule(due, guid, message, false);
            Ok(())
        }
    }

    fn schedule(&mut self, due: u64, guid: String, message: Message, redelivery: bool) {
        self.seq += 1;
        self.messages.push(Some((guid, message, redelivery)));
        self.in_flight.push(Reverse((
            InFlight { due, seq: self.seq },
            self.messages.len() - 1,
        )));
    }

    fn lost(&self, message: &Message) -> bool {
        let p = self.delivering.lose;
        if p <= 0.0 {
            return false;
        }
        let index = message.job as u64 * 4
            + match message.action {
                Action::Queued => 0,
                Action::InProgress => 1,
                Action::Completed => 2,
            };
        rng::unit(self.delivering.seed, rng::LOSE, index) < p
    }

    /// One attempt to deliver: logged by GitHub with the status the service answered, or 0
    /// when it was lost (first attempts only: a redelivery is asked for once the outage is
    /// over, so it arrives).
    async fn attempt(
        &mut self,
        guid: String,
        message: Message,
        redelivery: bool,
    ) -> Result<(), SimError> {
        let lost = !redelivery && self.lost(&message);
        let status = if lost {
            self.figures.lost += 1;
            0
        } else {
            if redelivery {
                self.figures.redelivered += 1;
            }
            self.deliver(&guid, &message).await?
        };
        self.attempts += 1;
        let mut w = lock(&self.world);
        let at = w.now;
        w.hook.log.push(HookAttempt {
            id: self.attempts,
            guid,
            at,
            status_code: status,
            redelivery,
            message,
        });
        drop(w);
        self.collect_redeliveries();
        Ok(())
    }

    /// Redeliveries the service asked GitHub for reach it at the next step.
    fn collect_redeliveries(&mut self) {
        let (asked, now) = {
            let mut w = lock(&self.world);
            (std::mem::take(&mut w.hook.redeliver), w.now)
        };
        for (guid, message) in asked {
            self.schedule(now + 1, guid, message, true);
        }
    }

    /// Sends the delivery, signed, through the service; returns the status it answered.
    async fn deliver(&mut self, guid: &str, message: &Message) -> Result<u16, SimError> {
        let j = &self.workload.jobs[message.job];
        let action = message.action.as_str();
        let mut payload = j.payload.clone();
        // The workload parsed this payload as a workflow_job event, so both are objects;
        // checked anyway rather than indexed, which would panic otherwise.
        let not_object = || SimError::Internal(format!("job {}: payload is not an object", j.id));
        let event = payload.as_object_mut().ok_or_else(not_object)?;
        event.insert("action".into(), action.into());
        let wj = event
            .get_mut("workflow_job")
            .and_then(serde_json::Value::as_object_mut)
            .ok_or_else(not_object)?;
        wj.insert("status".into(), action.into());
        let runner = message.runner.as_deref();
        wj.insert(
            "runner_name".into(),
            runner.map_or(serde_json::Value::Null, Into::into),
        );
        // GitHub's "no runner" is runner_id 0/null; any non-zero id names a runner.
        wj.insert(
            "runner_id".into(),
            runner.map_or(serde_json::Value::Null, |_| 1.into()),
        );
        wj.insert(
            "conclusion".into(),
            message
                .ending
                .map_or(serde_json::Value::Null, |e| e.conclusion().into()),
        );
        let body = serde_json::to_vec(&payload).map_err(|e| SimError::Internal(e.to_string()))?;
        let mut headers = HeaderMap::new();
        let text =
            |s: &str| HeaderValue::try_from(s).map_err(|e| SimError::Internal(e.to_string()));
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert("x-github-event", HeaderValue::from_static("workflow_job"));
        headers.insert("x-github-delivery", text(guid)?);
        headers.insert(
            "x-hub-signature-256",
            text(&self.service.secrets().sign(&body))?,
        );
        let answer = self.service.handle(&Method::POST, &headers, &body).await;
        match answer.status {
            200 | 202 => {
                // The service routes by the same rule GitHub queues by.
                let routed = answer
                    .report
                    .pool
                    .as_deref()
                    .and_then(|name| lock(&self.world).pool_index(name));
                let expected = lock(&self.world).jobs[message.job].pool();
                if answer.status == 200 && expected.is_some() && routed != expected {
                    return Err(SimError::Internal(format!(
                        "job {}: the service routed it to {:?}, GitHub queued it for {:?}",
                        j.id, answer.report.pool, expected
                    )));
                }
                Ok(answer.status)
            }
            status => Err(SimError::Service {
                line: j.line,
                job: j.id,
                action: action.to_string(),
                status,
                body: answer.body,
            }),
        }
    }
}

#[async_trait]
impl Controller for ScalehookController {
    async fn warm_up(&mut self) -> Result<(), SimError> {
        self.tick().await?;
        // The warm-up pass is the autoscaler's past, not the window's.
        self.figures.reconciles = 0;
        Ok(())
    }

    async fn queued(&mut self, job: usize, _pool: Option<usize>) -> Result<(), SimError> {
        self.send(Message {
            job,
            action: Action::Queued,
            runner: None,
            ending: None,
        })
        .await
    }

    async fn started(&mut self, started: &Started) -> Result<(), SimError> {
        self.send(Message {
            job: started.job,
            action: Action::InProgress,
            runner: Some(started.runner.clone()),
            ending: None,
        })
        .await
    }

    async fn finished(
        &mut self,
        job: usize,
        runner: Option<&str>,
        ending: Ending,
    ) -> Result<(), SimError> {
        self.send(Message {
            job,
            action: Action::Completed,
            runner: runner.map(str::to_string),
            ending: Some(ending),
        })
        .await
    }

    async fn tick(&mut self) -> Result<(), SimError> {
        let report = self.service.reconcile().await;
        self.figures.reconciles += 1;
        self.collect_redeliveries();
        if report.ok() {
            Ok(())
        } else {
            Err(SimError::Internal(format!(
                "reconcile failed: {}",
                serde_json::to_string(&report).unwrap_or_default()
            )))
        }
    }

    fn next_wake(&self) -> Option<u64> {
        self.in_flight.peek().map(|Reverse((f, _))| f.due)
    }

    async fn wake(&mut self) -> Result<(), SimError> {
        let now = lock(&self.world).now;
        while let Some(Reverse((f, n))) = self.in_flight.peek().cloned() {
            if f.due > now {
                break;
            }
            self.in_flight.pop();
            if let Some((guid, message, redelivery)) = self.messages[n].take() {
                self.attempt(guid, message, redelivery).await?;
            }
        }
        if self.in_flight.is_empty() {
            self.messages.clear();
        }
        Ok(())
    }

    fn service_figures(&self) -> Option<ServiceFigures> {
        Some(self.figures())
    }
}

/// Routing, as GitHub queues a job for a pool's runners: the same rule the service applies
/// (allow-lists, then the first pool with all of the job's labels).
pub(crate) fn route(config: &Config, payload: &serde_json::Value) -> Option<usize> {
    let body = serde_json::to_vec(payload).ok()?;
    let scalehook_core::event::Event::WorkflowJob(job) =
        scalehook_core::event::Event::parse("workflow_job", &body).ok()?
    else {
        return None;
    };
    let repository = job.repository.as_ref().map(|r| r.full_name.as_str());
    if !config.admits(repository, job.owner()) {
        return None;
    }
    let pool = config.route(&job.workflow_job.labels)?;
    config.pools.iter().position(|p| p.name == pool.name)
}

#[derive(Debug, Clone, Copy, Default)]
struct Alarm {
    high_streak: u32,
    low_streak: u32,
    cooldown_until: u64,
}

/// The CPU-threshold baseline (see [`CpuThreshold`]). With ephemeral runners, an instance
/// whose runners have all exited (powered off, as the runner's boot script does) is
/// replaced at the next tick, as a cloud group's health check would replace it.
pub(crate) struct CpuController {
    config: Config,
    params: CpuThreshold,
    world: Arc<Mutex<World>>,
    alarms: Vec<Alarm>,
}

impl CpuController {
    pub fn new(config: Config, params: CpuThreshold, world: Arc<Mutex<World>>) -> Self {
        let alarms = vec![Alarm::default(); config.pools.len()];
        Self {
            config,
            params,
            world,
            alarms,
        }
    }

    fn bounds(&self, pool: usize) -> (u32, u32) {
        let p = &self.config.pools[pool];
        let lo = p.min.max(self.params.floor).min(p.max);
        (lo, p.max)
    }
}

#[async_trait]
impl Controller for CpuController {
    async fn warm_up(&mut self) -> Result<(), SimError> {
        let mut w = lock(&self.world);
        let now = w.now;
        for n in 0..w.pools.len() {
            let (lo, _) = self.bounds(n);
            for _ in 0..lo {
                w.launch(n, now);
            }
        }
        Ok(())
    }

    async fn queued(&mut self, _: usize, _: Option<usize>) -> Result<(), SimError> {
        Ok(())
    }

    async fn started(&mut self, _: &Started) -> Result<(), SimError> {
        Ok(())
    }

    async fn finished(&mut self, _: usize, _: Option<&str>, _: Ending) -> Result<(), SimError> {
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), SimError> {
        let mut w = lock(&self.world);
        let now = w.now;
        for n in 0..w.pools.len() {
            w.replace_dead(n);
            let (lo, hi) = self.bounds(n);
            let alarm = &mut self.alarms[n];
            // Powered-off instances (runners exited) report no CPU.
            let (slots, busy) = w.pools[n].ready_slots(now);
            if slots == 0 {
                // No instance in service reports a metric: no data, no breach.
                alarm.high_streak = 0;
                alarm.low_streak = 0;
            } else {
                let utilisation = f64::from(busy) / f64::from(slots);
                alarm.high_streak = if utilisation > self.params.high {
                    alarm.high_streak + 1
                } else {
                    0
                };
                alarm.low_streak = if utilisation < self.params.low {
                    alarm.low_streak + 1
                } else {
                    0
                };
            }
            if now < alarm.cooldown_until {
                continue;
            }
            let count = w.pools[n].instances.len() as u32;
            if alarm.high_streak >= self.params.high_samples && count < hi {
                for _ in 0..self.params.step.min(hi - count) {
                    w.boot(n);
                }
                alarm.cooldown_until = now + self.params.cooldown_secs;
            } else if alarm.low_streak >= self.params.low_samples && count > lo {
                // One idle instance: a booting one first, else the newest idle one.
                let p = &w.pools[n];
                let victim = p
                    .instances
                    .iter()
                    .rposition(|i| !i.ready(now))
                    .or_else(|| p.instances.iter().rposition(|i| !i.busy()));
                if let Some(v) = victim {
                    let id = p.instances[v].id.clone();
                    w.remove_instance(n, &id);
                    alarm.cooldown_until = now + self.params.cooldown_secs;
                }
            }
        }
        Ok(())
    }
}

/// The fixed-size baseline: every pool at its `max`, booted all the time. With ephemeral
/// runners, dead instances are replaced at the next tick (see [`CpuController`]).
pub(crate) struct FixedController {
    config: Config,
    world: Arc<Mutex<World>>,
}

impl FixedController {
    pub fn new(config: Config, world: Arc<Mutex<World>>) -> Self {
        Self { config, world }
    }
}

#[async_trait]
impl Controller for FixedController {
    async fn warm_up(&mut self) -> Result<(), SimError> {
        let mut w = lock(&self.world);
        let now = w.now;
        for (n, pool) in self.config.pools.iter().enumerate() {
            for _ in 0..pool.max {
                w.launch(n, now);
            }
        }
        Ok(())
    }

    async fn queued(&mut self, _: usize, _: Option<usize>) -> Result<(), SimError> {
        Ok(())
    }

    async fn started(&mut self, _: &Started) -> Result<(), SimError> {
        Ok(())
    }

    async fn finished(&mut self, _: usize, _: Option<&str>, _: Ending) -> Result<(), SimError> {
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), SimError> {
        let mut w = lock(&self.world);
        for n in 0..w.pools.len() {
            w.replace_dead(n);
        }
        Ok(())
    }
}
