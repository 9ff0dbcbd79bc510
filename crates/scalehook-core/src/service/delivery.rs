//! A delivery's path: verify the request (method, size, content type, signature), parse the
//! event, route the job to a pool, record its transition in the ledger, then run (or defer)
//! the pool's convergence pass and answer.

use super::converge::{Pass, PassInput};
use super::{LogFormat, Service};
use crate::clock::unix_millis;
use crate::event::{Event, JobAction, WorkflowJobEvent};
use crate::ledger::{JobState, Transition};
use crate::policy::{CapacityAction, Trigger};
use crate::report::{Answer, CloudFailure, DeliveryReport, Outcome, Refusal};
use crate::signature::SIGNATURE_HEADER;
use http::{HeaderMap, Method};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// The event header.
pub const EVENT_HEADER: &str = "x-github-event";
/// The delivery GUID header.
pub const DELIVERY_HEADER: &str = "x-github-delivery";

impl Service {
    /// Handles one webhook request: any method, headers (case-insensitive) and the raw body.
    pub async fn handle(&self, method: &Method, headers: &HeaderMap, body: &[u8]) -> Answer {
        let started = Instant::now();
        let mut report = self.handle_inner(method, headers, body).await;
        report.latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        if report.outcome.public_reason().is_some() {
            report.correlation_id = Some(crate::report::new_correlation_id());
        }
        self.metrics.observe(&report);
        self.write_log(&report);
        Answer::from_report(report)
    }

    /// The answer to a body the transport refused to read past `max_body_bytes` (a
    /// streamed body can be over the limit before it is all read), counted like any other.
    pub fn too_large(&self, headers: &HeaderMap) -> Answer {
        let mut report = DeliveryReport::new(Outcome::PayloadTooLarge);
        report.reason = Some("body exceeds max_body_bytes".into());
        report.delivery = header_text(headers, DELIVERY_HEADER);
        self.metrics.observe(&report);
        self.write_log(&report);
        Answer::from_report(report)
    }

    async fn handle_inner(
        &self,
        method: &Method,
        headers: &HeaderMap,
        body: &[u8],
    ) -> DeliveryReport {
        let reject = |outcome, reason: &str| {
            let mut r = DeliveryReport::new(outcome);
            r.reason = Some(reason.to_string());
            r
        };
        if method != Method::POST {
            return reject(Outcome::MethodNotAllowed, "only POST is accepted");
        }
        if body.len() > self.config.max_body_bytes {
            return reject(Outcome::PayloadTooLarge, "body exceeds max_body_bytes");
        }
        if !is_json(headers) {
            return reject(
                Outcome::UnsupportedMediaType,
                "content type must be application/json (set it on the GitHub webhook)",
            );
        }
        let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
        if let Err(e) = self.secrets.verify(signature, body) {
            let mut r = reject(Outcome::Unauthorized, &e.to_string());
            r.delivery = header_text(headers, DELIVERY_HEADER);
            return r;
        }
        let mut report = DeliveryReport::new(Outcome::Ignored);
        report.delivery = header_text(headers, DELIVERY_HEADER);
        let Some(event_name) = header_text(headers, EVENT_HEADER) else {
            report.outcome = Outcome::BadRequest;
            report.reason = Some("missing X-GitHub-Event header".into());
            return report;
        };
        report.event = Some(event_name.clone());
        match Event::parse(&event_name, body) {
            Err(e) => {
                report.outcome = Outcome::BadRequest;
                report.reason = Some(e.to_string());
                report
            }
            Ok(Event::Ping(_)) => {
                report.outcome = Outcome::Pong;
                report
            }
            Ok(Event::Other(name)) => {
                report.reason = Some(format!("event {name} is not handled"));
                report
            }
            Ok(Event::WorkflowJob(job)) => self.handle_job(*job, report).await,
        }
    }

    async fn handle_job(
        &self,
        job: WorkflowJobEvent,
        mut report: DeliveryReport,
    ) -> DeliveryReport {
        report.action = Some(job.action.as_str().to_string());
        report.job_id = Some(job.workflow_job.id);
        let (state, trigger) = match job.action {
            JobAction::Waiting => (JobState::Waiting, Trigger::Demand),
            JobAction::Queued => (JobState::Queued, Trigger::Demand),
            JobAction::InProgress => (JobState::InProgress, Trigger::Demand),
            // A completion converges down like reconcile (idle instances only, standby kept):
            // its pass may cover completions other processes recorded and deferred to it, so
            // "one instance per completion" would leave their share of capacity behind.
            JobAction::Completed => (JobState::Completed, Trigger::Reconcile),
            JobAction::Other(ref a) => {
                report.reason = Some(format!("workflow_job action {a} is not handled"));
                return report;
            }
        };
        if let Some(refusal) = self.refusal(&job) {
            report.reason = Some(match refusal {
                Refusal::ForeignInstallation => format!(
                    "the delivery is for installation {}, not the configured [github].installation_id",
                    job.installation.as_ref().map_or(0, |i| i.id)
                ),
                Refusal::StaleJob => format!(
                    "the job's newest time is older than the ledger's retention ({} s): a replay, or a delivery the ledger can no longer tell from one",
                    self.config.ledger.retention.as_secs()
                ),
            });
            report.refused = Some(refusal);
            return report;
        }
        let repository = job.repository.as_ref().map(|r| r.full_name.as_str());
        if !self.config.admits(repository, job.owner()) {
            report.reason = Some("repository or organization is not allowed".into());
            return report;
        }
        let routed = self.config.route_job(
            &job.workflow_job.labels,
            job.workflow_job.runner_group_name.as_deref(),
            repository,
            matches!(state, JobState::Queued | JobState::Waiting),
        );
        // A label-less event of a job already recorded (a `runs-on: group:` job cancelled
        // before a runner took it) goes to the record's pool; check-run noise has no record.
        let routed = match routed {
            None if job.workflow_job.labels.is_empty() => {
                match self.ledger.record_of(job.workflow_job.id).await {
                    Ok(Some(r)) => self.config.pool(&r.pool),
                    _ => None,
                }
            }
            other => other,
        };
        let Some(pool) = routed else {
            self.metrics.unroutable_job();
            report.reason = Some("no pool has all of the job's labels".into());
            return report;
        };
        // The re-run of a job a spot reclaim interrupted runs on the overflow pool.
        let pool = self.route_rerun(pool, &job).await;
        report.pool = Some(pool.name.clone());
        let transition = Transition {
            job_id: job.workflow_job.id,
            pool: pool.name.clone(),
            to: state,
            runner: job.workflow_job.runner().map(str::to_string),
            at: self.clock.now(),
            repository: job.repository.as_ref().map(|r| r.full_name.clone()),
        };
        let started = Instant::now();
        let work = async {
            let recorded = self.ledger.record(&transition).await?;
            report.duplicate = Some(!recorded.is_applied());
            let reads = self
                .pool_slots
                .get(&pool.name)
                .map_or(0, |s| s.reads.load(Ordering::SeqCst));
            // Queue wait / run time, from the ledger's own times: once per job.
            let sli = self
                .metrics
                .job_recorded(&pool.name, state, &recorded, transition.at);
            (report.queue_wait_secs, report.run_secs) = (sli.queue_wait_secs, sli.run_secs);
            // An ephemeral runner that finished: its instance is the one to take out.
            let finished = if pool.ephemeral && state == JobState::Completed {
                match transition.runner.clone() {
                    Some(r) => Some(r),
                    None => self
                        .ledger
                        .record_of(transition.job_id)
                        .await?
                        .and_then(|r| r.runner),
                }
            } else {
                None
            };
            // Duplicates go on to converge too (unless this process converged the same
            // account moments ago): applying is idempotent, and a redelivery after a failed
            // cloud call is what repairs capacity.
            let pass = self
                .converge(
                    pool,
                    PassInput {
                        trigger,
                        recorded: Some((reads, !recorded.is_applied())),
                        finished,
                        started_on: (state == JobState::InProgress)
                            .then(|| transition.runner.clone())
                            .flatten(),
                        runners: None,
                        started,
                    },
                )
                .await?;
            // A job a spot reclaim interrupted: recorded (a failure is a 5xx, so the
            // redelivery records it), and re-run with `rerun_interrupted`.
            if state == JobState::Completed {
                self.interrupted_completion(pool, &job, started).await?;
            }
            Ok::<_, CloudFailure>(pass)
        };
        match tokio::time::timeout(self.config.cloud_timeout, work).await {
            Ok(Ok(pass)) => {
                report.outcome = Outcome::Handled;
                match pass {
                    Pass::Applied {
                        account,
                        first,
                        desired,
                        ..
                    } => {
                        report.decision = Some(first.capacity.name());
                        report.capacity_before = Some(first.current);
                        report.capacity_after = Some(desired);
                        report.queued = Some(account.queued);
                        report.running = Some(account.running);
                    }
                    Pass::Unchanged { account, last } => {
                        report.decision = Some(CapacityAction::Hold.name());
                        report.capacity_before = Some(last.desired);
                        report.capacity_after = Some(last.desired);
                        report.queued = Some(account.queued);
                        report.running = Some(account.running);
                    }
                    Pass::Deferred { account } => {
                        report.decision = Some("deferred");
                        report.queued = Some(account.queued);
                        report.running = Some(account.running);
                    }
                }
            }
            Ok(Err(failure)) => {
                report.outcome = failure.outcome();
                report.reason = Some(failure.message());
            }
            Err(_) => {
                report.outcome = Outcome::Timeout;
                report.reason = Some(CloudFailure::Timeout.message());
            }
        }
        report
    }

    /// Why a signed `workflow_job` delivery must change nothing, if it must:
    /// - another installation of the App (with `[github]`; a delivery without `installation`
    ///   comes from a repository or organization hook, which only the operator can set up);
    /// - a job whose newest time is older than the ledger's retention: its record may have
    ///   been forgotten, so a captured delivery would be recorded again (a replayed
    ///   `in_progress` holds scale-in until the in-progress time-to-live). A genuine delivery
    ///   is never that old: GitHub sends within seconds and redelivers for 3 days, and the
    ///   retention is at least that (config.rs). A job with no readable time is let through.
    fn refusal(&self, job: &WorkflowJobEvent) -> Option<Refusal> {
        if let (Some(github), Some(installation)) = (&self.config.github, &job.installation) {
            if installation.id != github.installation_id {
                return Some(Refusal::ForeignInstallation);
            }
        }
        let newest = job.workflow_job.newest_time()?;
        let age = self.clock.now().saturating_sub(newest);
        (age > self.config.ledger.retention.as_secs()).then_some(Refusal::StaleJob)
    }

    /// The delivery's log line: a `tracing` event, or an EMF line (log and metrics in one).
    fn write_log(&self, report: &DeliveryReport) {
        match self.log {
            LogFormat::Off => {}
            LogFormat::Emf => {
                println!("{}", crate::metrics::emf_line(report, unix_millis()));
            }
            LogFormat::Tracing => {
                tracing::info!(
                    target: "scalehook::delivery",
                    delivery = report.delivery.as_deref(),
                    event = report.event.as_deref(),
                    action = report.action.as_deref(),
                    job_id = report.job_id,
                    pool = report.pool.as_deref(),
                    outcome = report.outcome.as_str(),
                    reason = report.reason.as_deref(),
                    correlation_id = report.correlation_id.as_deref(),
                    refused = report.refused.map(|r| r.as_str()),
                    decision = report.decision,
                    duplicate = report.duplicate,
                    capacity_before = report.capacity_before,
                    capacity_after = report.capacity_after,
                    queued = report.queued,
                    running = report.running,
                    queue_wait_secs = report.queue_wait_secs,
                    run_secs = report.run_secs,
                    latency_us = report.latency_us,
                    "delivery"
                );
            }
        }
    }
}

/// `application/json`, with or without parameters, any case.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// A header as text for logs: printable ASCII only, at most 100 characters.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    if v.is_empty() {
        return None;
    }
    Some(
        v.chars()
            .filter(|c| c.is_ascii_graphic())
            .take(100)
            .collect(),
    )
}
