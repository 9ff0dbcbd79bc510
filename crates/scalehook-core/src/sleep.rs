//! Waiting between attempts (retry pauses, rate-limit waits, operation polling) behind a
//! trait, so a client's tests can check exactly which waits it asked for ("backed off for
//! the Retry-After seconds", "gave up without waiting") instead of timing it.

use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a client waits.
#[async_trait]
pub trait Sleeper: Send + Sync {
    async fn sleep(&self, wait: Duration);
}

/// The real wait: `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

#[async_trait]
impl Sleeper for TokioSleeper {
    async fn sleep(&self, wait: Duration) {
        tokio::time::sleep(wait).await;
    }
}

/// For tests: records every wait asked for and returns at once.
#[derive(Debug, Default)]
pub struct RecordingSleeper {
    waits: Mutex<Vec<Duration>>,
}

impl RecordingSleeper {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The waits asked for since the last `take`, in order.
    pub fn take(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.waits.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[async_trait]
impl Sleeper for RecordingSleeper {
    async fn sleep(&self, wait: Duration) {
        self.waits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_recording_sleeper_records_in_order_and_returns_at_once() {
        let s = RecordingSleeper::new();
        s.sleep(Duration::from_secs(3600)).await;
        s.sleep(Duration::from_millis(50)).await;
        assert_eq!(
            s.take(),
            vec![Duration::from_secs(3600), Duration::from_millis(50)]
        );
        assert!(s.take().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_tokio_sleeper_waits_on_tokio_time() {
        let started = tokio::time::Instant::now();
        TokioSleeper.sleep(Duration::from_secs(90)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(90));
    }
}
