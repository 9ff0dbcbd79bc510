//! The ARM client against the contract Microsoft documents (issue 25): capacity lowered
//! only by deleting chosen VMs, operations settled later (never waited for inside a call,
//! `Location` failures read from the status code, a minimum interval, status in any case),
//! throttling kept per policy, the token inside the call's budget with retries, the
//! system-assigned identity, and a double that refuses what the REST description refuses.

mod common;

use common::arm_double::{ArmDouble, Fault, API_VERSION, VMSS_ID};
use common::fleet::{count, fleet_with, pool, raw_patch, settle_at_once};
use scalehook_azure::ArmBudget;
use scalehook_core::{Fleet, FleetError};
use serde_json::json;
use std::time::Duration;

fn arm_requests(double: &ArmDouble) -> usize {
    double
        .lock()
        .log
        .iter()
        .filter(|l| !l.contains("/msi/"))
        .count()
}

/// A zonal scale set: VMs 0 (zone 1), 1 (zone 2), 2 (zone 3, failed), 3 (zone 1, running a
/// job); capacity 4, so one launch is "pending" as far as the policy can tell.
async fn zonal_with_a_broken_vm() -> ArmDouble {
    let double = ArmDouble::start(0).await;
    {
        let mut st = double.lock();
        st.zones = vec!["1".into(), "2".into(), "3".into()];
    }
    // Launch through the API so zones are assigned as Azure assigns them.
    let http = reqwest::Client::new();
    let token = double.issue_token();
    let res = http
        .patch(format!(
            "{}{VMSS_ID}?api-version={API_VERSION}",
            double.base
        ))
        .bearer_auth(&token)
        .json(&json!({"sku": {"capacity": 4}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 200, "PATCH answers 200 with the scale set");
    {
        let mut st = double.lock();
        for vm in st.vms.iter_mut() {
            vm.state = "Succeeded";
            vm.power = "running";
        }
        let zones: Vec<Option<String>> = st.vms.iter().map(|v| v.zone.clone()).collect();
        assert_eq!(
            zones,
            [Some("1"), Some("2"), Some("3"), Some("1")].map(|z| z.map(String::from))
        );
        st.vms[2].state = "Failed";
        // Broken VMs are left in place while the throttling budget is low.
        st.rate_remaining = Some(15);
    }
    double
}

/// Finding 1, the double's half: lowering capacity by PATCH lets Azure choose, and Azure
/// balances zones first: zone 1 has two VMs, so its highest instance id (3, running a job)
/// goes, while the failed VM stays.
#[tokio::test]
async fn a_patch_down_lets_azure_choose_a_running_vm() {
    let double = zonal_with_a_broken_vm().await;
    let res = reqwest::Client::new()
        .patch(format!(
            "{}{VMSS_ID}?api-version={API_VERSION}",
            double.base
        ))
        .bearer_auth(double.issue_token())
        .json(&json!({"sku": {"capacity": 3}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 200);
    assert_eq!(double.instance_ids(), vec![0, 1, 2], "Azure took VM 3");
}

/// Finding 1: "cancel launches" (capacity above the live VMs) deletes the VMs that serve no
/// runner by id, never lowers the capacity by PATCH.
#[tokio::test]
async fn cancelling_launches_deletes_only_vms_that_serve_no_runner() {
    let double = zonal_with_a_broken_vm().await;
    let f = fleet_with(&double, ArmBudget::default());
    let s = f.describe(&pool()).await.expect("describe");
    assert_eq!(s.desired, 4);
    let live: Vec<&str> = s.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(live, ["0", "1", "3"], "the failed VM is not capacity");
    let patches = count(&double, "PATCH");
    f.set_desired(&pool(), 3).await.expect("cancel launches");
    assert_eq!(count(&double, "PATCH"), patches, "no PATCH down");
    assert_eq!(
        double.instance_ids(),
        vec![0, 1, 3],
        "the failed VM went, VM 3 stays"
    );
    assert_eq!(double.capacity(), 3);
    // Nothing left that serves no runner: the capacity is not lowered further.
    f.set_desired(&pool(), 2).await.expect("nothing to cancel");
    assert_eq!(double.instance_ids(), vec![0, 1, 3]);
    assert_eq!(double.capacity(), 3);
    assert!(double.violations().is_empty(), "{:?}", double.violations());
}

/// Findings 2 and 3: a failed operation is seen by a later describe and counted, whether it
/// reports through `Azure-AsyncOperation` (status Failed) or `Location` (an error status).
#[tokio::test]
async fn failed_operations_are_settled_later_and_counted() {
    for location in [false, true] {
        let double = ArmDouble::start(1).await;
        {
            let mut st = double.lock();
            st.fail_next_op = true;
            st.location_ops = location;
        }
        let f = fleet_with(&double, settle_at_once());
        f.set_desired(&pool(), 3).await.expect("accepted");
        assert_eq!(count(&double, "/operations/"), 0, "no read inside the call");
        f.describe(&pool()).await.expect("describe");
        f.describe(&pool()).await.expect("describe");
        assert_eq!(
            count(&double, "/operations/"),
            2,
            "InProgress, then the end"
        );
        assert_eq!(f.arm().stats().operations_failed, 1, "location: {location}");
        assert_eq!(f.pending_operations(VMSS_ID), 0);
        assert!(double.violations().is_empty(), "{:?}", double.violations());
    }
}

/// Finding 4: operations are read no sooner than `Retry-After` and never more often than the
/// minimum interval, whatever `Retry-After: 0` says.
#[tokio::test]
async fn operations_are_read_no_sooner_than_allowed() {
    let double = ArmDouble::start(1).await;
    {
        let mut st = double.lock();
        st.op_polls = 1000;
        st.op_retry_after = Some(0);
    }
    let budget = ArmBudget {
        min_poll: Duration::from_secs(600),
        ..ArmBudget::default()
    };
    let f = fleet_with(&double, budget);
    f.set_desired(&pool(), 2).await.expect("accepted");
    for _ in 0..5 {
        f.describe(&pool()).await.expect("describe");
    }
    assert_eq!(count(&double, "/operations/"), 0);
    assert_eq!(f.pending_operations(VMSS_ID), 1);

    // Retry-After is honoured the same way.
    let double = ArmDouble::start(1).await;
    double.lock().op_retry_after = Some(600);
    let f = fleet_with(&double, settle_at_once());
    f.set_desired(&pool(), 2).await.expect("accepted");
    f.describe(&pool()).await.expect("describe");
    assert_eq!(count(&double, "/operations/"), 0);
}

/// Finding 4: reading an operation never takes the call's whole budget: a describe whose
/// operation read hangs still describes.
#[tokio::test]
async fn a_hanging_operation_read_leaves_describe_its_budget() {
    let double = ArmDouble::start(1).await;
    let budget = ArmBudget {
        call: Duration::from_secs(1),
        ..settle_at_once()
    };
    let f = fleet_with(&double, budget);
    f.set_desired(&pool(), 2).await.expect("accepted");
    double.lock().op_delay = Duration::from_secs(5);
    let s = f
        .describe(&pool())
        .await
        .expect("describe within its budget");
    assert_eq!(s.desired, 2);
    assert_eq!(
        f.pending_operations(VMSS_ID),
        1,
        "kept for a later describe"
    );
}

/// Finding 4: the status is compared without regard to case.
#[tokio::test]
async fn operation_status_is_read_in_any_case() {
    let double = ArmDouble::start(1).await;
    {
        let mut st = double.lock();
        st.fail_next_op = true;
        st.op_polls = 0;
        st.lowercase_status = true;
    }
    let f = fleet_with(&double, settle_at_once());
    f.set_desired(&pool(), 2).await.expect("accepted");
    f.describe(&pool()).await.expect("describe");
    assert_eq!(f.arm().stats().operations_failed, 1, "\"failed\" is Failed");
}

/// Finding 5: a 429's `Retry-After` closes the policy it names; until then requests that
/// charge it fail without calling ARM, and are counted; other policies still work.
#[tokio::test]
async fn a_throttled_policy_fails_fast_until_retry_after() {
    let double = ArmDouble::start(2).await;
    double.lock().faults.push_back(Fault::Throttle(1200));
    let f = fleet_with(&double, ArmBudget::default());
    let err = f.describe(&pool()).await.expect_err("throttled");
    assert!(matches!(err, FleetError::Unavailable(_)), "{err}");
    let before = arm_requests(&double);
    let err = f.describe(&pool()).await.expect_err("still throttled");
    assert!(err.to_string().contains("GetVMScaleSet3Min"), "{err}");
    assert_eq!(
        arm_requests(&double),
        before,
        "no call to ARM while the policy is closed"
    );
    let stats = f.arm().stats();
    assert_eq!(
        (stats.throttle.throttled, stats.throttle.fast_failed),
        (1, 1)
    );
    // A delete charges another policy: it goes through.
    f.remove_instance(&pool(), "0")
        .await
        .expect("another policy");
    assert_eq!(double.capacity(), 1);
    assert!(double.violations().is_empty(), "{:?}", double.violations());
}

/// Finding 8: identity-endpoint failures are retried (bounded).
#[tokio::test]
async fn identity_endpoint_failures_are_retried() {
    let double = ArmDouble::start(1).await;
    double.lock().identity_faults.extend([500, 503]);
    let f = fleet_with(&double, ArmBudget::default());
    f.describe(&pool())
        .await
        .expect("describe after two failed token requests");
    assert_eq!(count(&double, "/msi/token"), 3);
    // Failing for good: bounded attempts, a clear error without the header's value.
    let double = ArmDouble::start(1).await;
    double.lock().identity_faults.extend([500; 10]);
    let err = fleet_with(&double, ArmBudget::default())
        .describe(&pool())
        .await
        .expect_err("no token");
    assert!(err.to_string().contains("managed identity"), "{err}");
    assert_eq!(count(&double, "/msi/token"), 3);
}

/// Finding 8: the token fetch is part of the call's budget: the call gives up when its
/// budget ends, before the slow identity endpoint has even issued the token (a fetch with
/// its own 3 s would have waited for it).
#[tokio::test]
async fn a_slow_identity_endpoint_ends_within_the_call_budget() {
    let double = ArmDouble::start(1).await;
    double.lock().identity_delay = Duration::from_secs(3600);
    let budget = ArmBudget {
        call: Duration::from_millis(200),
        ..ArmBudget::default()
    };
    let err = fleet_with(&double, budget)
        .describe(&pool())
        .await
        .expect_err("no token in time");
    assert!(matches!(err, FleetError::Unavailable(_)), "{err}");
    assert_eq!(
        double.lock().tokens_issued,
        0,
        "gave up before the token existed"
    );
    assert_eq!(arm_requests(&double), 0);
}

/// Finding 6: the app's system-assigned identity (no `AZURE_CLIENT_ID`): no `client_id`.
#[tokio::test]
async fn the_system_assigned_identity_sends_no_client_id() {
    let double = ArmDouble::start_system_assigned(2).await;
    assert!(!double.env().iter().any(|(k, _)| k == "AZURE_CLIENT_ID"));
    let s = fleet_with(&double, ArmBudget::default())
        .describe(&pool())
        .await
        .expect("describe");
    assert_eq!(s.instances.len(), 2);
    let st = double.lock();
    assert!(st
        .log
        .iter()
        .any(|l| l.contains("/msi/token") && !l.contains("client_id")));
    assert!(st.violations.is_empty(), "{:?}", st.violations);
}

/// Finding 6: a scale set that overprovisions is refused (its extra VMs boot, and Azure
/// deletes the ones it chooses).
#[tokio::test]
async fn an_overprovisioning_scale_set_is_refused() {
    let double = ArmDouble::start(1).await;
    double.lock().overprovision = true;
    let err = fleet_with(&double, ArmBudget::default())
        .describe(&pool())
        .await
        .expect_err("overprovision");
    assert!(matches!(err, FleetError::Rejected(_)), "{err}");
    assert!(err.to_string().contains("overprovision"), "{err}");
    // What the double does with it: extra VMs on a scale-out, gone when the operation ends.
    let res = reqwest::Client::new()
        .patch(format!(
            "{}{VMSS_ID}?api-version={API_VERSION}",
            double.base
        ))
        .bearer_auth(double.issue_token())
        .json(&json!({"sku": {"capacity": 2}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 200);
    assert_eq!(double.instance_ids().len(), 4, "1 + 1 requested + 2 extra");
}

/// Finding 7: the double refuses bodies the REST description does not allow.
#[tokio::test]
async fn the_double_fails_bodies_the_description_does_not_allow() {
    let double = ArmDouble::start(2).await;
    for body in [
        json!({"sku": {"capacity": "3"}}),
        json!({"capacity": 3}),
        json!({"sku": {"capacity": 3}, "id": "x"}),
        // Shapes an allow-list of `sku.capacity` let through: a sku name that is not a
        // string, and a sku property the description does not have.
        json!({"sku": {"capacity": 3, "name": 5}}),
        json!({"sku": {"capacity": 3, "size": "Standard_D2s_v5"}}),
    ] {
        let res = raw_patch(&double, &body).await;
        assert_eq!(res.status(), 400, "{body}");
        let err: serde_json::Value = res.json().await.expect("CloudError");
        assert_eq!(err["error"]["code"], "InvalidRequestContent", "{body}");
    }
    let res = reqwest::Client::new()
        .post(format!(
            "{}{VMSS_ID}/delete?api-version={API_VERSION}",
            double.base
        ))
        .bearer_auth(double.issue_token())
        .json(&json!({"instanceIds": [1]}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 400);
    assert_eq!(double.violations().len(), 6, "{:?}", double.violations());
    assert_eq!(double.capacity(), 2, "nothing changed");
}
