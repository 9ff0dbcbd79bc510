//! Work a pass left, handed on: [`Service::continue_left_work`] runs, after the delivery that
//! stopped early has been answered, the passes that finish what this process's passes left
//! (see `work_left`). A pass stops at its time budget so the delivery answers within
//! GitHub's 10 s; the records it deferred to itself would otherwise wait for the next
//! delivery of the pool or the next scheduled reconcile, which after the last delivery of a
//! burst is a minute away. The adapters call it once their answer is sent: the Lambda
//! bootstrap before it asks the Runtime API for the next event (the invocation is still
//! running, so nothing is frozen mid-pass), the HTTP routes of `serve` and the Azure handler
//! in a task of the process.

use super::converge::{Pass, PassInput};
use super::Service;
use crate::policy::Trigger;
use crate::report::CloudFailure;
use std::time::Instant;

/// At most this many rounds of continuation passes per call (each pass has its own budget).
pub const MAX_CONTINUATIONS: u32 = 8;

impl Service {
    /// Whether a pass of this process stopped with work left.
    pub fn has_work_left(&self) -> bool {
        self.work_left.any()
    }

    /// Runs a reconcile-like pass (the pool's account, fleet and, with a GitHub App, its
    /// runners; both ways) for every pool a pass of this process left work in, until none
    /// is left or [`MAX_CONTINUATIONS`] rounds. A pool whose lease another process holds is
    /// that process's: its pass reads the account after giving the lease back (invariant
    /// 10) and, if it stops early too, hands on in turn. Returns the passes run.
    pub async fn continue_left_work(&self) -> u32 {
        let mut passes = 0;
        for _ in 0..MAX_CONTINUATIONS {
            let pools = self.work_left.pools();
            if pools.is_empty() {
                break;
            }
            for name in pools {
                let Some(pool) = self.config.pools.iter().find(|p| p.name == name) else {
                    self.work_left.note(&self.metrics, &name, 0);
                    continue;
                };
                let input = PassInput {
                    trigger: Trigger::Reconcile,
                    recorded: None,
                    finished: None,
                    started_on: None,
                    runners: None,
                    started: Instant::now(),
                };
                let result =
                    tokio::time::timeout(self.config.cloud_timeout, self.converge(pool, input))
                        .await
                        .unwrap_or(Err(CloudFailure::Timeout));
                passes += 1;
                match result {
                    Ok(Pass::Applied { first, .. }) => {
                        // The pass noted whether it left work again.
                        self.metrics.scale_action(&pool.name, first.capacity.name());
                    }
                    Ok(Pass::Unchanged { .. }) => self.work_left.note(&self.metrics, &name, 0),
                    Ok(Pass::Deferred { .. }) => {
                        self.metrics.scale_action(&pool.name, "deferred");
                        self.work_left.note(&self.metrics, &name, 0);
                    }
                    Err(e) => {
                        // Still noted (and in the metric): the next delivery's pass or the
                        // scheduled reconcile converges it.
                        tracing::warn!(pool = %name, error = %e.message(), "continuing a pass failed: left to the next pass");
                        return passes;
                    }
                }
            }
        }
        passes
    }
}
