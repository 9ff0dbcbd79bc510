//! What scalehook minted for an instance, saved where every process can read it: the ids
//! GitHub gave the instance's JIT runners and, where the cloud's launch hook said so, when
//! the instance launched.
//!
//! The record is a ledger cursor per instance, `runner-ids:<pool>:<instance key>` (JSON
//! [`Minted`]), written by the core's provisioning right after the configuration is stored
//! (both clouds mint through it: the AWS launch hook and the Azure describe), read by the
//! removal of that instance (`GET` the runner by id: one request, whatever the runner's
//! name) and deleted once the instance is removed. The ledger, not the clouds' per-instance
//! stores, because the instance deletes its configuration when it takes it (AWS SSM, the
//! Azure blob), because removal already holds the ledger (no cloud store in the core's
//! removal path), and because one key per instance is written once, so concurrent launches
//! never contend for one item.

use crate::ledger::{Ledger, LedgerError};
use serde::{Deserialize, Serialize};

/// The prefix of the per-instance records: `runner-ids:<pool>:<instance key>`.
pub const MINTED_CURSOR: &str = "runner-ids";

/// What was minted for one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Minted {
    /// GitHub's ids of the instance's JIT runners.
    #[serde(default)]
    pub runner_ids: Vec<u64>,
    /// Unix seconds of the instance's launch, where the launch hook reported it (AWS):
    /// boot grace then runs from it rather than from scalehook's first sighting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launched_at: Option<u64>,
}

/// The ledger cursor of `pool`'s instance `instance_key` (keys compare case-insensitively,
/// as runner names do).
pub fn cursor_name(pool: &str, instance_key: &str) -> String {
    format!(
        "{MINTED_CURSOR}:{pool}:{}",
        instance_key.to_ascii_lowercase()
    )
}

/// The record of an instance; `None` when there is none (or it is unreadable: the caller
/// then reads the instance's runners by name, as without one).
pub async fn load(
    ledger: &dyn Ledger,
    pool: &str,
    instance_key: &str,
) -> Result<Option<Minted>, LedgerError> {
    let stored = ledger.cursor(&cursor_name(pool, instance_key)).await?;
    Ok(stored
        .filter(|v| !v.is_empty())
        .and_then(|v| serde_json::from_str(&v).ok()))
}

/// Saves an instance's record.
pub async fn save(
    ledger: &dyn Ledger,
    pool: &str,
    instance_key: &str,
    minted: &Minted,
) -> Result<(), LedgerError> {
    let value = serde_json::to_string(minted).unwrap_or_default();
    ledger
        .set_cursor(&cursor_name(pool, instance_key), &value)
        .await
}

/// Deletes an instance's record (its instance is gone).
pub async fn forget(
    ledger: &dyn Ledger,
    pool: &str,
    instance_key: &str,
) -> Result<(), LedgerError> {
    ledger.delete_cursor(&cursor_name(pool, instance_key)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::MemoryLedger;

    #[tokio::test]
    async fn a_record_is_saved_read_and_forgotten_per_instance() {
        let l = MemoryLedger::new();
        assert_eq!(load(&l, "linux", "i-0abc").await, Ok(None));
        let m = Minted {
            runner_ids: vec![42],
            launched_at: Some(1_800_000_000),
        };
        save(&l, "linux", "i-0ABC", &m).await.expect("saved");
        assert_eq!(load(&l, "linux", "i-0abc").await, Ok(Some(m)));
        assert_eq!(load(&l, "gpu", "i-0abc").await, Ok(None), "per pool");
        forget(&l, "linux", "i-0abc").await.expect("deleted");
        assert_eq!(load(&l, "linux", "i-0abc").await, Ok(None));
        l.set_cursor(&cursor_name("linux", "vm1"), "not json")
            .await
            .expect("set");
        assert_eq!(load(&l, "linux", "vm1").await, Ok(None), "unreadable: none");
        assert_eq!(
            serde_json::to_string(&Minted {
                runner_ids: vec![7],
                launched_at: None
            })
            .expect("json"),
            r#"{"runner_ids":[7]}"#
        );
    }
}
