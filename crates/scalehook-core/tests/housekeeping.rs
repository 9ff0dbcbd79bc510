//! Reconcile runs the housekeeping of unread runner configurations (issue 21, finding 6):
//! with a store set, a pass deletes the old configurations whose instance is gone; the SSM
//! store itself is tested against moto (`scalehook-aws/tests/provision_moto.rs`).

use async_trait::async_trait;
use scalehook_core::housekeeping::{StoredConfig, UnreadConfigs, UNREAD_CONFIG_MAX_AGE};
use scalehook_core::{
    Config, LocalFleet, LogFormat, ManualClock, MemoryLedger, Service, WebhookSecrets,
};
use std::sync::{Arc, Mutex};

/// An in-memory store of (instance key, stored at).
#[derive(Default)]
struct Store(Mutex<Vec<StoredConfig>>);

#[async_trait]
impl UnreadConfigs for Store {
    async fn unread(&self) -> Result<Vec<StoredConfig>, String> {
        Ok(self.0.lock().expect("lock").clone())
    }
    async fn delete(&self, key: &str) -> Result<(), String> {
        self.0
            .lock()
            .expect("lock")
            .retain(|c| c.instance_key != key);
        Ok(())
    }
}

#[tokio::test]
async fn reconcile_deletes_old_configurations_of_gone_instances() {
    const NOW: u64 = 1_800_000_000;
    let store = Arc::new(Store::default());
    store.0.lock().expect("lock").extend([
        StoredConfig {
            instance_key: "i-gone".into(),
            stored_at: NOW - UNREAD_CONFIG_MAX_AGE,
        },
        StoredConfig {
            instance_key: "i-recent".into(),
            stored_at: NOW - 60,
        },
    ]);
    let service = Service::new(
        Config::embedded_default(),
        WebhookSecrets::new(["s"]).expect("secret"),
        Arc::new(MemoryLedger::new()),
        Arc::new(LocalFleet::new()),
    )
    .with_clock(Arc::new(ManualClock::new(NOW)))
    .with_log(LogFormat::Off)
    .with_config_housekeeping(store.clone());
    assert!(service.reconcile().await.ok());
    let left: Vec<String> = store
        .0
        .lock()
        .expect("lock")
        .iter()
        .map(|c| c.instance_key.clone())
        .collect();
    assert_eq!(left, ["i-recent"]);
}
