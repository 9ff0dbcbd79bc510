//! Issue 12's assignment race on the VMSS fleet over the ARM double: a job is assigned to
//! an idle runner between the scale-in decision and the removal. GitHub refuses to
//! deregister it (422), so its VM stays in the scale set; without the race it is deleted.

mod common;

use common::arm_double::{ArmDouble, VMSS_ID};
use http::{HeaderMap, HeaderValue, Method};
use scalehook_azure::{ArmBudget, ArmClient, ManagedIdentity, VmssFleet};
use scalehook_core::signature::sign;
use scalehook_core::{
    Config, Fleet, LocalGitHub, LogFormat, ManualClock, MemoryLedger, Service, WebhookSecrets,
};
use std::collections::HashMap;
use std::sync::Arc;

const SECRET: &str = "vmss-race-secret";

fn fleet(double: &ArmDouble) -> VmssFleet {
    let env: HashMap<String, String> = double.env().into_iter().collect();
    let http = scalehook_azure::app::http_client().expect("client");
    let identity =
        ManagedIdentity::from_lookup(http.clone(), |k| env.get(k).cloned()).expect("identity");
    let arm = ArmClient::new(
        http,
        &env["SCALEHOOK_ARM_ENDPOINT"],
        Arc::new(identity),
        ArmBudget::default(),
    )
    .expect("arm client");
    VmssFleet::new(arm)
}

async fn deliver(service: &Service, action: &str, job_id: u64) -> (u16, serde_json::Value) {
    let body = serde_json::json!({
        "action": action,
        "workflow_job": {"id": job_id, "run_id": 7, "labels": ["self-hosted", "linux"],
                         "runner_name": null, "runner_id": null},
        "repository": {"full_name": "octo-org/app", "owner": {"login": "octo-org"}}
    })
    .to_string()
    .into_bytes();
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-github-event", HeaderValue::from_static("workflow_job"));
    let delivery = format!("{job_id}-{action}");
    h.insert(
        "x-github-delivery",
        HeaderValue::from_str(&delivery).expect("id"),
    );
    h.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&sign(SECRET.as_bytes(), &body)).expect("sig"),
    );
    let a = service.handle(&Method::POST, &h, &body).await;
    (a.status, serde_json::from_str(&a.body).expect("json"))
}

struct Outcome {
    status: u16,
    body: serde_json::Value,
    /// The computer name of the VM the job's runner ran on.
    computer: String,
    /// Computer names of the scale set's VMs after the completion.
    vms: Vec<String>,
    capacity: u32,
    registered: Vec<String>,
    removed: Vec<String>,
    violations: Vec<String>,
}

async fn race(assign_during_removal: bool) -> Outcome {
    let double = ArmDouble::start(0).await;
    let config = Config::from_toml(&format!(
        "[[pools]]\nname = \"linux\"\nlabels = [\"self-hosted\", \"linux\"]\nmax = 3\n\
         azure_vmss = \"{VMSS_ID}\"\n"
    ))
    .expect("config");
    let pool = config.pool("linux").expect("pool").clone();
    let fleet = Arc::new(fleet(&double));
    let github = Arc::new(LocalGitHub::new());
    let svc = Service::new(
        config,
        WebhookSecrets::new([SECRET]).expect("secret"),
        Arc::new(MemoryLedger::new()),
        fleet.clone(),
    )
    .with_github(github.clone())
    .with_clock(Arc::new(ManualClock::new(1_800_000_000)))
    .with_log(LogFormat::Off);

    let (status, body) = deliver(&svc, "queued", 1).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(double.capacity(), 1);
    let computer = double.lock().vms[0].computer_name.clone();
    // The VM's runner registers, named by the convention `<pool>-<computer name>`.
    let runners = github.register_instances(
        &pool,
        &fleet.describe(&pool).await.expect("describe").instances,
    );
    assert_eq!(runners, vec![format!("linux-{computer}")]);
    if assign_during_removal {
        github.assign_on_removal(&runners[0]);
    }

    // Job 1 is cancelled before it starts: the pool is above target, its VM idle.
    let (status, body) = deliver(&svc, "completed", 1).await;
    let vms = double
        .lock()
        .vms
        .iter()
        .map(|v| v.computer_name.clone())
        .collect();
    Outcome {
        status,
        body,
        computer,
        vms,
        capacity: double.capacity(),
        registered: github.registered().into_iter().map(|r| r.name).collect(),
        removed: github.removed(),
        violations: double.violations(),
    }
}

#[tokio::test]
async fn a_runner_assigned_during_scale_in_keeps_its_vmss_instance() {
    let o = race(true).await;
    assert_eq!(o.status, 200, "{}", o.body);
    assert_eq!(o.vms, vec![o.computer.clone()], "the busy VM survives");
    assert_eq!(o.capacity, 1, "capacity was not decremented");
    assert_eq!(o.registered, vec![format!("linux-{}", o.computer)]);
    assert!(o.removed.is_empty(), "{:?}", o.removed);
    assert!(o.violations.is_empty(), "{:?}", o.violations);

    let o = race(false).await;
    assert_eq!(o.status, 200, "{}", o.body);
    assert_eq!(o.body["action"], "remove_idle", "{}", o.body);
    assert!(o.vms.is_empty(), "the idle VM is deleted: {:?}", o.vms);
    assert_eq!(o.capacity, 0);
    assert!(o.registered.is_empty(), "{:?}", o.registered);
    assert_eq!(o.removed, vec![format!("linux-{}", o.computer)]);
    assert!(o.violations.is_empty(), "{:?}", o.violations);
}
