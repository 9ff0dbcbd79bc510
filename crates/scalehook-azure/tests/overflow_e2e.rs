//! Issue 23 end to end on Azure's adapter code: a Spot pool whose scale set cannot allocate
//! spills its demand to its on-demand overflow pool's scale set, within that pool's max, and
//! takes it back once allocation succeeds again. The real `VmssFleet` (ARM REST) against two
//! ARM doubles (one scale set each; each double checks every request and answer against
//! Compute's REST description), the real `TableLedger` on Azurite (where the spill cursor
//! lives), the core's `Service` driven by deliveries and reconcile passes as the custom
//! handler drives it. The handler binary serves one ARM endpoint, so the two scale sets are
//! two doubles behind a per-pool fleet here.

mod common;

use async_trait::async_trait;
use base64::Engine;
use common::arm_double::{ArmDouble, VMSS_ID};
use common::azurite::{Azurite, ACCOUNT, KEY};
use common::fleet::fleet_with;
use http::{HeaderMap, HeaderValue, Method};
use scalehook_azure::{ArmBudget, TableAuth, TableClient, TableLedger, VmssFleet};
use scalehook_core::overflow::spill_cursor;
use scalehook_core::signature::sign;
use scalehook_core::{
    Config, Fleet, FleetError, FleetState, Ledger, LogFormat, PoolConfig, Service, WebhookSecrets,
};
use std::sync::Arc;

const SECRET: &str = "overflow-e2e-secret";
/// Passes a phase may take before its condition must hold (each a reconcile of both pools).
const MAX_PASSES: u32 = 12;

/// The scale set of each pool: the Spot pool's on one double, the overflow pool's on the
/// other (routing only; every call is the real `VmssFleet`'s).
struct ScaleSets {
    spot: VmssFleet,
    on_demand: VmssFleet,
}

impl ScaleSets {
    fn of(&self, pool: &PoolConfig) -> &VmssFleet {
        match pool.name.as_str() {
            "spot" => &self.spot,
            _ => &self.on_demand,
        }
    }
}

#[async_trait]
impl Fleet for ScaleSets {
    async fn describe(&self, pool: &PoolConfig) -> Result<FleetState, FleetError> {
        self.of(pool).describe(pool).await
    }
    async fn set_desired(&self, pool: &PoolConfig, desired: u32) -> Result<(), FleetError> {
        self.of(pool).set_desired(pool, desired).await
    }
    async fn remove_instance(&self, pool: &PoolConfig, id: &str) -> Result<(), FleetError> {
        self.of(pool).remove_instance(pool, id).await
    }
    async fn replace_instance(&self, pool: &PoolConfig, id: &str) -> Result<(), FleetError> {
        self.of(pool).replace_instance(pool, id).await
    }
}

async fn table_ledger(endpoint: &str) -> TableLedger {
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .expect("key");
    let client = TableClient::new(
        scalehook_azure::app::http_client().expect("client"),
        endpoint,
        "overflowledger",
        TableAuth::SharedKey {
            account: ACCOUNT.into(),
            key,
        },
    )
    .expect("table client");
    client.ensure_table().await.expect("create table");
    TableLedger::new(client)
}

async fn deliver(service: &Service, action: &str, job: u64) -> u16 {
    let body = serde_json::json!({
        "action": action,
        "workflow_job": {"id": job, "run_id": 7, "labels": ["self-hosted", "spot"],
                         "runner_name": null, "runner_id": null},
        "repository": {"full_name": "octo-org/app", "owner": {"login": "octo-org"}}
    })
    .to_string()
    .into_bytes();
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-github-event", HeaderValue::from_static("workflow_job"));
    h.insert(
        "x-github-delivery",
        HeaderValue::from_str(&format!("{job}-{action}")).expect("id"),
    );
    h.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&sign(SECRET.as_bytes(), &body)).expect("sig"),
    );
    service.handle(&Method::POST, &h, &body).await.status
}

async fn spill(ledger: &TableLedger) -> Option<String> {
    ledger
        .cursor(&spill_cursor("od", "spot"))
        .await
        .expect("cursor")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_scale_set_without_capacity_spills_to_the_overflow_scale_set_and_back() {
    let azurite = Azurite::start();
    let ledger = Arc::new(table_ledger(&azurite.endpoint()).await);
    let spot_set = ArmDouble::start(0).await;
    let od_set = ArmDouble::start(0).await;
    spot_set.lock().fail_allocation = Some("SkuNotAvailable");
    let fleet = Arc::new(ScaleSets {
        spot: fleet_with(&spot_set, ArmBudget::default()),
        on_demand: fleet_with(&od_set, ArmBudget::default()),
    });
    let config = Config::from_toml(&format!(
        "[[pools]]\nname = \"spot\"\nlabels = [\"self-hosted\", \"spot\"]\nmin = 0\nmax = 10\n\
         azure_vmss = \"{VMSS_ID}\"\ncapacity = \"spot\"\noverflow = \"od\"\n\
         [[pools]]\nname = \"od\"\nlabels = [\"self-hosted\", \"od\"]\nmin = 0\nmax = 3\n\
         azure_vmss = \"{VMSS_ID}\"\n"
    ))
    .expect("config");
    let service = Service::new(
        config,
        WebhookSecrets::new([SECRET]).expect("secret"),
        ledger.clone(),
        fleet.clone(),
    )
    .with_log(LogFormat::Off);

    for job in 1..=4 {
        assert_eq!(deliver(&service, "queued", job).await, 200, "job {job}");
    }
    assert_eq!(spot_set.capacity(), 4, "the Spot pool asks for its target");
    // The Spot VMs fail allocation: the demand goes to the on-demand scale set.
    let mut spilled = None;
    for _ in 0..MAX_PASSES {
        service.reconcile().await;
        service.continue_left_work().await;
        spilled = spill(&ledger).await;
        if spilled.as_deref() == Some("4") && od_set.capacity() == 3 {
            break;
        }
    }
    assert_eq!(
        spilled.as_deref(),
        Some("4"),
        "4 Spot VMs wanted, none allocated"
    );
    assert_eq!(
        od_set.capacity(),
        3,
        "the overflow pool within its own max of 3"
    );
    assert_eq!(
        spot_set.capacity(),
        4,
        "the Spot scale set keeps its capacity (failed VMs replaced: Azure is asked again)"
    );
    assert_eq!(service.metrics().spilled("spot", "od"), Some(4));

    // Spot capacity is back: the Spot VMs run, the spill goes to 0, and the overflow
    // pool's idle VMs are deleted by the normal rule.
    spot_set.lock().fail_allocation = None;
    let mut back = false;
    for _ in 0..MAX_PASSES {
        service.reconcile().await;
        service.continue_left_work().await;
        if spill(&ledger).await.as_deref() == Some("0") && od_set.capacity() == 0 {
            back = true;
            break;
        }
    }
    assert!(
        back,
        "spill {:?}, overflow capacity {}",
        spill(&ledger).await,
        od_set.capacity()
    );
    assert_eq!(service.metrics().spilled("spot", "od"), Some(0));
    let running = spot_set
        .lock()
        .vms
        .iter()
        .filter(|v| v.state == "Succeeded")
        .count();
    assert_eq!(running, 4, "the Spot pool serves its own demand again");
    for (name, double) in [("spot", &spot_set), ("od", &od_set)] {
        assert!(
            double.violations().is_empty(),
            "{name}: {:?}",
            double.violations()
        );
    }
}
