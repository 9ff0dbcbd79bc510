//! The policies compared: scalehook itself (the real service, fed the deliveries the
//! simulated world produces) and two baselines that act on the world directly.

use crate::engine::{Controller, Ending};
use crate::fleet::SimFleet;
use crate::workload::Workload;
use crate::world::{Started, World};
use crate::SimError;
use async_trait::async_trait;
use http::{HeaderMap, HeaderValue, Method};
use scalehook_core::{Config, LogFormat, ManualClock, MemoryLedger, Service, WebhookSecrets};
use serde::Serialize;
use std::sync::{Arc, Mutex, MutexGuard};

/// The policies, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The real scalehook service: webhook deliveries plus the reconcile pass.
    Scalehook,
    /// A CPU-utilisation alarm on the group ([`CpuThreshold`]).
    CpuThreshold,
    /// Every pool at its `max` all the time, no autoscaler.
    FixedSize,
}

impl Policy {
    pub const ALL: [Policy; 3] = [Policy::Scalehook, Policy::CpuThreshold, Policy::FixedSize];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Scalehook => "scalehook",
            Policy::CpuThreshold => "cpu-threshold",
            Policy::FixedSize => "fixed-size",
        }
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

/// scalehook: the real [`Service`] over a [`MemoryLedger`] and a [`SimFleet`], on the
/// virtual clock.
pub(crate) struct ScalehookController {
    service: Service,
    workload: Arc<Workload>,
    world: Arc<Mutex<World>>,
    deliveries: u64,
}

impl ScalehookController {
    pub fn new(
        config: Config,
        workload: Arc<Workload>,
        world: Arc<Mutex<World>>,
        clock: Arc<ManualClock>,
    ) -> Result<Self, SimError> {
        let secrets =
            WebhookSecrets::new([SIM_SECRET]).map_err(|e| SimError::Internal(e.to_string()))?;
        let service = Service::new(
            config,
            secrets,
            Arc::new(MemoryLedger::new()),
            Arc::new(SimFleet::new(world.clone())),
        )
        .with_clock(clock)
        .with_log(LogFormat::Off);
        Ok(Self {
            service,
            workload,
            world,
            deliveries: 0,
        })
    }

    /// Sends the job's delivery for `action`, signed, through the service. Returns the pool
    /// it was handled for (`None`: ignored, 202).
    async fn deliver(
        &mut self,
        job: usize,
        action: &str,
        runner: Option<&str>,
        ending: Option<Ending>,
    ) -> Result<Option<String>, SimError> {
        let j = &self.workload.jobs[job];
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
            ending.map_or(serde_json::Value::Null, |e| e.conclusion().into()),
        );
        let body = serde_json::to_vec(&payload).map_err(|e| SimError::Internal(e.to_string()))?;
        self.deliveries += 1;
        let mut headers = HeaderMap::new();
        let text =
            |s: String| HeaderValue::try_from(s).map_err(|e| SimError::Internal(e.to_string()));
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert("x-github-event", HeaderValue::from_static("workflow_job"));
        headers.insert(
            "x-github-delivery",
            text(format!("sim-{}", self.deliveries))?,
        );
        headers.insert(
            "x-hub-signature-256",
            text(self.service.secrets().sign(&body))?,
        );
        let answer = self.service.handle(&Method::POST, &headers, &body).await;
        match answer.status {
            200 => Ok(answer.report.pool),
            202 => Ok(None),
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
        self.tick().await
    }

    async fn queued(&mut self, job: usize) -> Result<Option<usize>, SimError> {
        let pool = self.deliver(job, "queued", None, None).await?;
        Ok(pool.and_then(|name| lock(&self.world).pool_index(&name)))
    }

    async fn started(&mut self, started: &Started) -> Result<(), SimError> {
        self.deliver(started.job, "in_progress", Some(&started.runner), None)
            .await
            .map(drop)
    }

    async fn finished(
        &mut self,
        job: usize,
        runner: Option<&str>,
        ending: Ending,
    ) -> Result<(), SimError> {
        self.deliver(job, "completed", runner, Some(ending))
            .await
            .map(drop)
    }

    async fn tick(&mut self) -> Result<(), SimError> {
        let report = self.service.reconcile().await;
        if report.ok() {
            Ok(())
        } else {
            Err(SimError::Internal(format!(
                "reconcile failed: {}",
                serde_json::to_string(&report).unwrap_or_default()
            )))
        }
    }
}

/// Routing for the baselines: the same rule the service applies (allow-lists, then the
/// first pool with all of the job's labels).
fn route(config: &Config, world: &Mutex<World>, payload: &serde_json::Value) -> Option<usize> {
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
    lock(world).pool_index(&pool.name)
}

#[derive(Debug, Clone, Copy, Default)]
struct Alarm {
    high_streak: u32,
    low_streak: u32,
    cooldown_until: u64,
}

/// The CPU-threshold baseline (see [`CpuThreshold`]).
pub(crate) struct CpuController {
    config: Config,
    params: CpuThreshold,
    workload: Arc<Workload>,
    world: Arc<Mutex<World>>,
    alarms: Vec<Alarm>,
}

impl CpuController {
    pub fn new(
        config: Config,
        params: CpuThreshold,
        workload: Arc<Workload>,
        world: Arc<Mutex<World>>,
    ) -> Self {
        let alarms = vec![Alarm::default(); config.pools.len()];
        Self {
            config,
            params,
            workload,
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
                w.pools[n].launch(now);
            }
        }
        Ok(())
    }

    async fn queued(&mut self, job: usize) -> Result<Option<usize>, SimError> {
        Ok(route(
            &self.config,
            &self.world,
            &self.workload.jobs[job].payload,
        ))
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
        let boot = w.boot_seconds;
        for n in 0..w.pools.len() {
            let (lo, hi) = self.bounds(n);
            let p = &mut w.pools[n];
            let alarm = &mut self.alarms[n];
            let (slots, busy) = p.ready_slots(now);
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
            let count = p.instances.len() as u32;
            if alarm.high_streak >= self.params.high_samples && count < hi {
                for _ in 0..self.params.step.min(hi - count) {
                    p.launch(now + boot);
                }
                alarm.cooldown_until = now + self.params.cooldown_secs;
            } else if alarm.low_streak >= self.params.low_samples && count > lo {
                // One idle instance: a booting one first, else the newest idle one.
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

/// The fixed-size baseline: every pool at its `max`, booted all the time.
pub(crate) struct FixedController {
    config: Config,
    workload: Arc<Workload>,
    world: Arc<Mutex<World>>,
}

impl FixedController {
    pub fn new(config: Config, workload: Arc<Workload>, world: Arc<Mutex<World>>) -> Self {
        Self {
            config,
            workload,
            world,
        }
    }
}

#[async_trait]
impl Controller for FixedController {
    async fn warm_up(&mut self) -> Result<(), SimError> {
        let mut w = lock(&self.world);
        let now = w.now;
        for (n, pool) in self.config.pools.iter().enumerate() {
            for _ in 0..pool.max {
                w.pools[n].launch(now);
            }
        }
        Ok(())
    }

    async fn queued(&mut self, job: usize) -> Result<Option<usize>, SimError> {
        Ok(route(
            &self.config,
            &self.world,
            &self.workload.jobs[job].payload,
        ))
    }

    async fn started(&mut self, _: &Started) -> Result<(), SimError> {
        Ok(())
    }

    async fn finished(&mut self, _: usize, _: Option<&str>, _: Ending) -> Result<(), SimError> {
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), SimError> {
        Ok(())
    }
}
