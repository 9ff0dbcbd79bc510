//! The VMSS fleet against the ARM test double (see `common/arm_double.rs`: a double that
//! checks requests against the documented REST shapes, not Azure itself).

mod common;

use common::arm_double::{ArmDouble, Fault, VMSS_ID};
use common::fleet::{arm_client, count, fleet_with, pool, settle_at_once};
use scalehook_azure::{ArmBudget, ArmClient, ManagedIdentity, VmssFleet};
use scalehook_core::{Fleet, FleetError, RecordingSleeper};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn fleet(double: &ArmDouble) -> VmssFleet {
    fleet_with(double, ArmBudget::default())
}

fn operation_reads(double: &ArmDouble) -> usize {
    count(double, "/operations/")
}

#[tokio::test]
async fn describe_follows_pages_and_maps_computer_names() {
    let double = ArmDouble::start(5).await;
    let f = fleet(&double);
    let s = f.describe(&pool()).await.expect("describe");
    assert_eq!(s.desired, 5);
    assert!(!s.supports_protection);
    let ids: Vec<&str> = s.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["0", "1", "2", "3", "4"], "all three pages were read");
    assert_eq!(s.instances[3].runner_key, "runnervmss000003");
    assert!(s.instances[3].runs("gh-runnervmss000003"));
    assert!(s.instances.iter().all(|i| !i.launching));
    // One token for all five requests: it is cached.
    let st = double.lock();
    assert_eq!(st.tokens_issued, 1);
    assert_eq!(
        st.log
            .iter()
            .filter(|l| l.contains("virtualMachines"))
            .count(),
        3
    );
    assert!(st.violations.is_empty(), "{:?}", st.violations);
}

#[tokio::test]
async fn scale_out_patches_capacity_and_settles_the_operation_in_later_describes() {
    let double = ArmDouble::start(1).await;
    double.lock().op_polls = 2;
    let f = fleet_with(&double, settle_at_once());
    f.set_desired(&pool(), 4).await.expect("scale out");
    assert_eq!(double.capacity(), 4);
    // The answer never waits for the operation: not one read of it inside the call.
    assert_eq!(operation_reads(&double), 0);
    assert_eq!(f.pending_operations(VMSS_ID), 1);
    // Each describe reads it once: InProgress twice, then Succeeded (and forgotten).
    for _ in 0..3 {
        f.describe(&pool()).await.expect("describe");
    }
    assert_eq!(operation_reads(&double), 3);
    assert_eq!(f.pending_operations(VMSS_ID), 0);
    let s = f.describe(&pool()).await.expect("describe");
    assert_eq!(s.instances.len(), 4);
    assert!(s.instances.iter().all(|i| !i.launching));
    assert!(double.violations().is_empty(), "{:?}", double.violations());
}

#[tokio::test]
async fn scale_in_deletes_exactly_the_chosen_instance() {
    let double = ArmDouble::start(3).await;
    let f = fleet(&double);
    f.remove_instance(&pool(), "1").await.expect("remove");
    assert_eq!(double.capacity(), 2);
    let left: Vec<u32> = double.lock().vms.iter().map(|v| v.instance_id).collect();
    assert_eq!(left, vec![0, 2]);
    // An instance that is gone is NotFound (Compute answers 400 InvalidParameter, "not an
    // active ... instanceId"); a malformed id never reaches ARM.
    assert!(matches!(
        f.remove_instance(&pool(), "1").await,
        Err(FleetError::NotFound(_))
    ));
    let before = double.lock().log.len();
    assert!(matches!(
        f.remove_instance(&pool(), "1'/../x").await,
        Err(FleetError::Rejected(_))
    ));
    assert_eq!(double.lock().log.len(), before);
    assert!(double.violations().is_empty(), "{:?}", double.violations());
}

#[tokio::test]
async fn throttling_is_retried_after_retry_after() {
    let double = ArmDouble::start(2).await;
    double
        .lock()
        .faults
        .extend([Fault::Throttle(1), Fault::Server(503)]);
    // A call budget far above the waits, so whether a wait fits never depends on how fast
    // the double answers; the waits are recorded, not slept.
    let budget = ArmBudget {
        call: Duration::from_secs(20),
        ..ArmBudget::default()
    };
    let waits = RecordingSleeper::new();
    let f = VmssFleet::new(arm_client(&double, budget).with_sleeper(waits.clone()));
    let s = f.describe(&pool()).await.expect("describe after retries");
    assert_eq!(s.desired, 2);
    // The 429 reported its policy at `;0`: from then on every request is first spaced out
    // (500 ms), as near any exhausted policy.
    let spacing = Duration::from_millis(500);
    assert_eq!(
        waits.take(),
        vec![
            Duration::from_secs(1),
            spacing,
            Duration::from_millis(400),
            spacing,
            spacing
        ],
        "Retry-After: 1 honoured after the 429, then the second attempt's backoff after the 503"
    );
    let st = double.lock();
    // GET vmss three times (429, 503, 200), then the VM list.
    let gets = st
        .log
        .iter()
        .filter(|l| l.starts_with("GET") && l.contains("runners?api-version"))
        .count();
    assert_eq!(gets, 3);
}

#[tokio::test]
async fn long_throttling_and_persistent_failures_are_unavailable() {
    let double = ArmDouble::start(2).await;
    // Retry-After beyond what a delivery can wait: give up at once, capacity unchanged.
    double.lock().faults.push_back(Fault::Throttle(30));
    let f = fleet(&double);
    let err = f.set_desired(&pool(), 5).await.expect_err("throttled");
    assert!(matches!(err, FleetError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("429"), "{err}");
    assert_eq!(double.capacity(), 2);

    // 5xx on every attempt: bounded retries, then unavailable.
    double.lock().faults.extend([Fault::Server(500); 10]);
    let budget = ArmBudget {
        attempts: 3,
        ..ArmBudget::default()
    };
    let f = fleet_with(&double, budget);
    let arm_requests = |d: &ArmDouble| d.lock().log.iter().filter(|l| !l.contains("/msi/")).count();
    let before = arm_requests(&double);
    let err = f.describe(&pool()).await.expect_err("5xx");
    assert!(matches!(err, FleetError::Unavailable(_)), "{err}");
    assert_eq!(arm_requests(&double) - before, 3, "exactly 3 attempts");
    // The token never appears in an error.
    assert!(!err.to_string().contains("arm-token"));
}

#[tokio::test]
async fn a_new_vm_is_launching_until_it_runs() {
    let double = ArmDouble::start(1).await;
    double.lock().op_polls = 1000;
    let f = fleet(&double);
    f.set_desired(&pool(), 2).await.expect("accepted");
    assert_eq!(double.capacity(), 2);
    let s = f.describe(&pool()).await.expect("describe");
    assert!(
        s.instances.iter().any(|i| i.launching),
        "the new VM is still creating"
    );
}

#[tokio::test]
async fn flexible_orchestration_is_refused_clearly() {
    let double = ArmDouble::start(1).await;
    double.lock().orchestration = "Flexible".into();
    let err = fleet(&double)
        .describe(&pool())
        .await
        .expect_err("flexible");
    assert!(matches!(err, FleetError::Rejected(_)));
    assert!(err.to_string().contains("Uniform"), "{err}");
}

#[tokio::test]
async fn a_wrong_identity_header_is_refused_and_reported() {
    let double = ArmDouble::start(1).await;
    let mut env: HashMap<String, String> = double.env().into_iter().collect();
    env.insert("IDENTITY_HEADER".into(), "wrong".into());
    let http = scalehook_azure::app::http_client().expect("client");
    let identity =
        ManagedIdentity::from_lookup(http.clone(), |k| env.get(k).cloned()).expect("identity");
    let arm =
        ArmClient::new(http, &double.base, Arc::new(identity), ArmBudget::default()).expect("arm");
    let err = VmssFleet::new(arm)
        .describe(&pool())
        .await
        .expect_err("no token");
    assert!(err.to_string().contains("managed identity"), "{err}");
    assert!(
        !err.to_string().contains("wrong"),
        "the identity header is not echoed"
    );
}

#[tokio::test]
async fn location_operations_are_settled_by_their_status_code() {
    let double = ArmDouble::start(1).await;
    {
        let mut st = double.lock();
        st.location_ops = true;
        st.op_polls = 2;
    }
    let f = fleet_with(&double, settle_at_once());
    f.remove_instance(&pool(), "0").await.expect("accepted");
    assert_eq!(operation_reads(&double), 0);
    for _ in 0..3 {
        f.describe(&pool()).await.expect("describe");
    }
    assert_eq!(operation_reads(&double), 3, "202 twice, then 200");
    assert_eq!(f.pending_operations(VMSS_ID), 0);
    assert_eq!(f.arm().stats().operations_failed, 0);
    assert!(double.violations().is_empty(), "{:?}", double.violations());
}

#[tokio::test]
async fn an_unreadable_operation_is_forgotten_not_retried() {
    let double = ArmDouble::start(2).await;
    double.lock().forbid_ops = true;
    let f = fleet_with(&double, settle_at_once());
    f.remove_instance(&pool(), "0").await.expect("accepted");
    assert_eq!(double.capacity(), 1);
    f.describe(&pool()).await.expect("describe");
    f.describe(&pool()).await.expect("describe");
    assert_eq!(operation_reads(&double), 1, "one 403 and no retry of it");
    assert_eq!(f.pending_operations(VMSS_ID), 0);
}

#[tokio::test]
async fn failed_and_deallocated_vms_are_left_out_and_replaced() {
    let double = ArmDouble::start(4).await;
    {
        let mut st = double.lock();
        st.vms[1].state = "Failed";
        // A Spot eviction (deallocate policy) leaves the VM deallocated.
        st.vms[2].power = "deallocated";
    }
    let f = fleet(&double);
    let s = f.describe(&pool()).await.expect("describe");
    let ids: Vec<&str> = s.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["0", "3"], "only running VMs are capacity");
    assert_eq!(s.desired, 4);
    // timeCreated of instance 0: 2026-11-29T12:00:00.1234567+00:00
    assert_eq!(s.instances[0].launched_at, Some(1_795_953_600));
    assert_eq!(s.instances[1].launched_at, Some(1_795_953_600 + 3 * 60));
    {
        let st = double.lock();
        assert!(st.violations.is_empty(), "{:?}", st.violations);
        assert!(
            st.log.iter().any(|l| l.contains("%24expand=instanceView")),
            "{:?}",
            st.log
        );
        // Deleted together, then the capacity put back: two fresh VMs in their place.
        let writes: Vec<&String> = st
            .log
            .iter()
            .filter(|l| l.starts_with("POST") || l.starts_with("PATCH"))
            .collect();
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert!(writes[0].starts_with("POST") && writes[0].contains("/delete"));
        assert!(writes[1].starts_with("PATCH"));
        assert_eq!(st.capacity, 4);
        let left: Vec<u32> = st.vms.iter().map(|v| v.instance_id).collect();
        assert_eq!(left, vec![0, 3, 4, 5]);
    }
    let s = f.describe(&pool()).await.expect("describe");
    assert_eq!(s.instances.len(), 4);
}

#[tokio::test]
async fn replace_instance_keeps_the_capacity_and_reuses_the_pass_describe() {
    let double = ArmDouble::start(3).await;
    let f = fleet(&double);
    f.describe(&pool()).await.expect("describe");
    let gets_before = double
        .lock()
        .log
        .iter()
        .filter(|l| l.starts_with("GET") && l.contains("runners?api-version"))
        .count();
    f.replace_instance(&pool(), "1").await.expect("replace");
    {
        let st = double.lock();
        assert_eq!(st.capacity, 3, "capacity unchanged");
        let left: Vec<u32> = st.vms.iter().map(|v| v.instance_id).collect();
        assert_eq!(left, vec![0, 2, 3], "1 deleted, a fresh 3 launched");
        let gets = st
            .log
            .iter()
            .filter(|l| l.starts_with("GET") && l.contains("runners?api-version"))
            .count();
        assert_eq!(
            gets, gets_before,
            "the capacity came from the pass's describe"
        );
        assert!(st.violations.is_empty(), "{:?}", st.violations);
    }
    // Without a describe first it reads the capacity itself.
    let g = fleet(&double);
    g.replace_instance(&pool(), "0").await.expect("replace");
    assert_eq!(double.capacity(), 3);
    assert!(matches!(
        g.replace_instance(&pool(), "../x").await,
        Err(FleetError::Rejected(_))
    ));
}

#[tokio::test]
async fn a_low_throttling_budget_skips_what_can_wait() {
    let double = ArmDouble::start(3).await;
    double.lock().rate_remaining = Some(100);
    let f = fleet(&double);
    f.describe(&pool()).await.expect("describe");
    // GET vmss + 2 pages of VMs = 3 calls spent.
    assert_eq!(f.arm().rate_remaining(), Some(97));
    // Low: a broken VM waits, and the fresh list is reused.
    {
        let mut st = double.lock();
        st.rate_remaining = Some(15);
        st.vms[0].state = "Failed";
    }
    let before = double.lock().log.len();
    f.describe(&pool()).await.expect("describe");
    // Still low after the GET of the scale set: the list read a moment ago is reused.
    let s = f.describe(&pool()).await.expect("describe");
    assert_eq!(s.instances.len(), 3);
    {
        let st = double.lock();
        let since: Vec<&String> = st.log[before..].iter().collect();
        assert!(
            since
                .iter()
                .all(|l| l.starts_with("GET") && !l.contains("virtualMachines")),
            "{since:?}"
        );
        assert_eq!(st.capacity, 3, "nothing deleted");
    }
    // Out of calls: 429 with a Retry-After beyond what a delivery waits: unavailable.
    double.lock().rate_remaining = Some(0);
    let err = f.describe(&pool()).await.expect_err("throttled");
    assert!(matches!(err, FleetError::Unavailable(_)), "{err}");
    assert!(double.violations().is_empty(), "{:?}", double.violations());
}

/// A Spot scale set without capacity (issue 23): the VMs it creates fail allocation
/// (`ProvisioningState/failed/SkuNotAvailable` in their instance view, as the double writes
/// it against the API description). describe leaves them out of the capacity, reports the
/// launch failure (so the pool's demand spills to its overflow pool) while their
/// replacements are still creating, and stops once a list shows every launch come up.
#[tokio::test]
async fn a_spot_scale_set_without_capacity_reports_failed_launches_until_they_come_up() {
    let double = ArmDouble::start(1).await;
    double.lock().fail_allocation = Some("SkuNotAvailable");
    let f = fleet(&double);
    let s = f.describe(&pool()).await.expect("describe");
    assert_eq!(s.launch_failure, None, "nothing launched yet");
    f.set_desired(&pool(), 3).await.expect("scale out");
    // The first list shows the new VMs creating, the next one failed.
    let mut failure = None;
    for _ in 0..3 {
        let s = f.describe(&pool()).await.expect("describe");
        assert_eq!(
            s.desired, 3,
            "the scale set keeps its capacity: Azure is asked again"
        );
        assert_eq!(
            s.instances.iter().filter(|i| !i.launching).count(),
            1,
            "a VM that failed allocation is not capacity"
        );
        if s.launch_failure.is_some() {
            failure = s.launch_failure;
            break;
        }
    }
    assert_eq!(
        failure.as_deref(),
        Some("VM allocation failed: SkuNotAvailable")
    );
    // The failed VMs were deleted and the capacity restored: their replacements are
    // creating, and launches still count as failing until one comes up.
    let s = f.describe(&pool()).await.expect("describe");
    assert!(
        s.launch_failure.is_some(),
        "cleared before a launch came up"
    );
    // Capacity is back: the next VMs run, and the failure clears.
    double.lock().fail_allocation = None;
    let mut cleared = false;
    for _ in 0..6 {
        let s = f.describe(&pool()).await.expect("describe");
        if s.launch_failure.is_none() {
            assert_eq!(s.instances.len(), 3);
            assert!(s.instances.iter().all(|i| !i.launching));
            cleared = true;
            break;
        }
    }
    assert!(cleared, "launches never counted as succeeding again");
    assert!(double.violations().is_empty(), "{:?}", double.violations());
}
