//! A **test double** of Azure Resource Manager (one Uniform VM Scale Set) and of the App
//! Service managed-identity endpoint. ARM has no emulator, so this in-test axum server stands
//! in for it. It is not Azure: it checks each request against the shapes the Azure REST
//! reference documents and records every violation, and simulates just enough behaviour
//! (instances, capacity, async operations, throttling, failures) to exercise the fleet.
//!
//! Documented shapes it checks (api-version pinned by scalehook, `ARM_API_VERSION`):
//! - `GET {vmss}` — learn.microsoft.com/rest/api/compute/virtual-machine-scale-sets/get
//! - `GET {vmss}/virtualMachines` (paged by `nextLink`; `$expand=instanceView` adds each
//!   VM's `instanceView.statuses`, among them `PowerState/<state>`; `timeCreated` is in the
//!   properties from api-version 2021-11-01) —
//!   learn.microsoft.com/rest/api/compute/virtual-machine-scale-set-vms/list
//! - Compute throttling: each answer carries `x-ms-ratelimit-remaining-resource`
//!   (`Microsoft.Compute/<policy>;<count>,...`) when `rate_remaining` is set, and a request
//!   past the limit gets 429 —
//!   learn.microsoft.com/troubleshoot/azure/virtual-machines/troubleshooting-throttling-errors
//! - `PATCH {vmss}` with `{"sku":{"capacity":n}}` —
//!   learn.microsoft.com/rest/api/compute/virtual-machine-scale-sets/update
//! - `POST {vmss}/delete` with `{"instanceIds":[...]}` —
//!   learn.microsoft.com/rest/api/compute/virtual-machine-scale-sets/delete-instances
//! - async operations: 202 + `Azure-AsyncOperation` (+ `Retry-After`), then
//!   `{"status":"InProgress|Succeeded|Failed"}` —
//!   learn.microsoft.com/azure/azure-resource-manager/management/async-operations
//! - throttling: 429 + `Retry-After` —
//!   learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling
//! - managed identity: `GET $IDENTITY_ENDPOINT?resource=…&api-version=2019-08-01` with
//!   `X-IDENTITY-HEADER` — learn.microsoft.com/azure/app-service/overview-managed-identity

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

pub const API_VERSION: &str = "2024-11-01";
pub const IDENTITY_HEADER: &str = "double-identity-header-value";
/// The user-assigned identity's client id the handler is given (`AZURE_CLIENT_ID`) and
/// must pass on as `client_id`.
pub const CLIENT_ID: &str = "00000000-0000-0000-0000-00000000c11e";
pub const VMSS_ID: &str =
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-runners/providers/Microsoft.Compute/virtualMachineScaleSets/runners";
/// The double lists this many VMs per page, so describe must follow `nextLink`.
pub const PAGE_SIZE: usize = 2;

/// A scripted failure for the next ARM request (not the identity endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After: <secs>`.
    Throttle(u64),
    /// A 5xx.
    Server(u16),
}

#[derive(Debug, Clone)]
pub struct Vm {
    pub instance_id: u32,
    pub computer_name: String,
    /// Provisioning state: Creating, Succeeded, Failed, Deleting.
    pub state: &'static str,
    /// Power state (the `PowerState/<x>` status): running, deallocated, stopped, ...
    pub power: &'static str,
    /// `timeCreated`, RFC 3339 with 7 fraction digits and an offset, as ARM writes it.
    pub time_created: String,
}

#[derive(Debug, Default)]
pub struct DoubleState {
    pub capacity: u32,
    pub orchestration: String,
    pub vms: Vec<Vm>,
    next_instance: u32,
    pub tokens_issued: u32,
    pub faults: VecDeque<Fault>,
    /// Async operations: id -> polls left before it ends, and whether it fails.
    ops: HashMap<String, (u32, bool)>,
    /// How many polls an operation answers InProgress before it ends.
    pub op_polls: u32,
    /// Make the next operation end Failed.
    pub fail_next_op: bool,
    /// Answer operation reads with 403 (an identity without
    /// `Microsoft.Compute/locations/operations/read`).
    pub forbid_ops: bool,
    /// Accept writes with a `Location` header (202 until done, then 200) instead of
    /// `Azure-AsyncOperation`.
    pub location_ops: bool,
    /// Calls left in the Compute throttling policy (`None`: no rate-limit headers). Each ARM
    /// request spends one; at 0 the answer is 429.
    pub rate_remaining: Option<u32>,
    /// Every request: (method, path with query).
    pub log: Vec<String>,
    /// Everything that did not match the documented API.
    pub violations: Vec<String>,
}

impl DoubleState {
    fn launch(&mut self) {
        let id = self.next_instance;
        self.next_instance += 1;
        self.vms.push(Vm {
            instance_id: id,
            // Uniform computer names: prefix + 6 base-36 digits.
            computer_name: format!("runnervmss{id:06}"),
            state: "Creating",
            power: "starting",
            // 2026-11-29T12:00:00Z plus a minute per instance.
            time_created: format!("2026-11-29T12:{:02}:00.1234567+00:00", id % 60),
        });
    }
}

#[derive(Clone)]
pub struct ArmDouble {
    pub base: String,
    pub state: Arc<Mutex<DoubleState>>,
}

impl ArmDouble {
    /// Starts the double with `instances` running VMs (capacity = instances).
    pub async fn start(instances: u32) -> ArmDouble {
        let mut st = DoubleState {
            orchestration: "Uniform".into(),
            op_polls: 1,
            ..DoubleState::default()
        };
        for _ in 0..instances {
            st.launch();
        }
        for vm in &mut st.vms {
            vm.state = "Succeeded";
            vm.power = "running";
        }
        st.capacity = instances;
        let state = Arc::new(Mutex::new(st));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the ARM double");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = Router::new()
            .fallback(any(handle))
            .with_state((state.clone(), base.clone()));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ArmDouble { base, state }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, DoubleState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The app settings that point scalehook at this double.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "IDENTITY_ENDPOINT".into(),
                format!("{}/msi/token", self.base),
            ),
            ("IDENTITY_HEADER".into(), IDENTITY_HEADER.into()),
            ("AZURE_CLIENT_ID".into(), CLIENT_ID.into()),
            ("SCALEHOOK_ARM_ENDPOINT".into(), self.base.clone()),
        ]
    }

    pub fn capacity(&self) -> u32 {
        self.lock().capacity
    }

    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }
}

type Shared = (Arc<Mutex<DoubleState>>, String);

fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn handle(
    State((state, base)): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path() == "/msi/token" {
        let query = parse_query(&uri);
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.log.push(format!("{method} {}", uri));
        return identity(&mut st, &method, &headers, &query);
    }
    // Compute's throttling policy: every ARM request spends a call; past the limit, 429.
    let left = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        match st.rate_remaining {
            Some(0) => {
                st.log.push(format!("{method} {}", uri));
                let mut res = arm_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "OperationNotAllowed",
                    "The server rejected the request because too many requests have been received for this subscription.",
                );
                res.headers_mut()
                    .insert("retry-after", axum::http::HeaderValue::from_static("30"));
                return res;
            }
            Some(n) => {
                st.rate_remaining = Some(n - 1);
                Some(n - 1)
            }
            None => None,
        }
    };
    let mut res = handle_arm(state, base, method, uri, headers, body).await;
    if let Some(n) = left {
        let value = format!(
            "Microsoft.Compute/GetVMScaleSet3Min;{n},Microsoft.Compute/GetVMScaleSet30Min;{}",
            n + 400
        );
        res.headers_mut().insert(
            "x-ms-ratelimit-remaining-resource",
            axum::http::HeaderValue::from_str(&value).expect("header"),
        );
    }
    res
}

fn parse_query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.replace("%24", "$"), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

async fn handle_arm(
    state: Arc<Mutex<DoubleState>>,
    base: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = parse_query(&uri);
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    st.log.push(format!("{method} {}", uri));

    // Every ARM request: the pinned api-version and the issued bearer token.
    if query.get("api-version").map(String::as_str) != Some(API_VERSION) {
        st.violations
            .push(format!("{method} {uri}: api-version is not {API_VERSION}"));
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            "bad api-version",
        );
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let valid_token = auth
        .strip_prefix("Bearer ")
        .and_then(|t| t.strip_prefix("arm-token-"))
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n >= 1 && n <= st.tokens_issued);
    if !valid_token {
        st.violations
            .push(format!("{method} {uri}: no valid bearer token"));
        return arm_error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "no valid token",
        );
    }
    if let Some(fault) = st.faults.pop_front() {
        return match fault {
            Fault::Throttle(secs) => (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
                Json(json!({"error": {"code": "TooManyRequests", "message": "throttled"}})),
            )
                .into_response(),
            Fault::Server(code) => arm_error(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "InternalServerError",
                "simulated failure",
            ),
        };
    }

    if let Some(op) = path.strip_prefix(
        "/subscriptions/00000000-0000-0000-0000-000000000001/providers/Microsoft.Compute/locations/westeurope/operations/",
    ) {
        if method != Method::GET {
            st.violations.push(format!("{method} {uri}: operations are read with GET"));
        }
        if st.forbid_ops {
            return arm_error(
                StatusCode::FORBIDDEN,
                "AuthorizationFailed",
                "no authorization to perform action 'Microsoft.Compute/locations/operations/read'",
            );
        }
        let Some((left, fails)) = st.ops.get(op).copied() else {
            return arm_error(StatusCode::NOT_FOUND, "NotFound", "no such operation");
        };
        let location = st.location_ops;
        if left > 0 {
            st.ops.insert(op.to_string(), (left - 1, fails));
            if location {
                return (StatusCode::ACCEPTED, [("retry-after", "0")]).into_response();
            }
            return ([("retry-after", "0")], Json(json!({"status": "InProgress"}))).into_response();
        }
        for vm in &mut st.vms {
            if vm.state == "Creating" {
                vm.state = "Succeeded";
                vm.power = "running";
            }
        }
        if location {
            return StatusCode::OK.into_response();
        }
        return if fails {
            Json(json!({"status": "Failed", "error": {"code": "AllocationFailed", "message": "no capacity in region"}}))
                .into_response()
        } else {
            Json(json!({"status": "Succeeded"})).into_response()
        };
    }

    let json_body = || serde_json::from_slice::<Value>(&body).ok();
    let is_json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));

    match (method.clone(), path.as_str()) {
        (Method::GET, p) if p == VMSS_ID => {
            let (capacity, mode) = (st.capacity, st.orchestration.clone());
            Json(json!({
                "id": VMSS_ID,
                "name": "runners",
                "type": "Microsoft.Compute/virtualMachineScaleSets",
                "location": "westeurope",
                "sku": {"name": "Standard_D2s_v5", "tier": "Standard", "capacity": capacity},
                "properties": {"orchestrationMode": mode, "provisioningState": "Succeeded",
                               "upgradePolicy": {"mode": "Manual"}}
            }))
            .into_response()
        }
        (Method::GET, p) if p == format!("{VMSS_ID}/virtualMachines") => {
            let skip: usize = query
                .get("$skiptoken")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            // The documented `$expand` value is `instanceView`; anything else is refused.
            let expand = match query.get("$expand").map(String::as_str) {
                None => false,
                Some("instanceView") => true,
                Some(other) => {
                    st.violations
                        .push(format!("GET {uri}: $expand={other} is not instanceView"));
                    return arm_error(StatusCode::BAD_REQUEST, "InvalidParameter", "bad $expand");
                }
            };
            let page: Vec<Value> = st
                .vms
                .iter()
                .skip(skip)
                .take(PAGE_SIZE)
                .map(|vm| {
                    let mut props = json!({
                        "provisioningState": vm.state,
                        "osProfile": {"computerName": vm.computer_name},
                        "latestModelApplied": true,
                        "timeCreated": vm.time_created
                    });
                    if expand {
                        props["instanceView"] = json!({
                            "computerName": vm.computer_name,
                            "statuses": [
                                {"code": format!("ProvisioningState/{}", vm.state.to_ascii_lowercase()),
                                 "level": "Info"},
                                {"code": format!("PowerState/{}", vm.power), "level": "Info"}
                            ]
                        });
                    }
                    json!({
                        "id": format!("{VMSS_ID}/virtualMachines/{}", vm.instance_id),
                        "instanceId": vm.instance_id.to_string(),
                        "name": format!("runners_{}", vm.instance_id),
                        "properties": props
                    })
                })
                .collect();
            let mut out = json!({ "value": page });
            if skip + PAGE_SIZE < st.vms.len() {
                // ARM's nextLink keeps the request's own query.
                let expand = if expand { "&$expand=instanceView" } else { "" };
                out["nextLink"] = json!(format!(
                    "{base}{VMSS_ID}/virtualMachines?api-version={API_VERSION}{expand}&$skiptoken={}",
                    skip + PAGE_SIZE
                ));
            }
            Json(out).into_response()
        }
        (Method::PATCH, p) if p == VMSS_ID => {
            let capacity = json_body()
                .filter(|b| b.as_object().is_some_and(|o| o.len() == 1))
                .and_then(|b| b.pointer("/sku/capacity").and_then(Value::as_u64))
                .filter(|_| is_json);
            let Some(capacity) = capacity else {
                st.violations.push(format!(
                    "PATCH {uri}: body is not {{\"sku\":{{\"capacity\":n}}}} JSON"
                ));
                return arm_error(StatusCode::BAD_REQUEST, "InvalidRequestContent", "bad body");
            };
            let capacity = capacity as u32;
            while st.capacity < capacity {
                st.capacity += 1;
                st.launch();
            }
            // Lowering capacity by PATCH lets Azure pick victims (the newest here).
            while st.capacity > capacity {
                st.capacity -= 1;
                st.vms.pop();
            }
            accepted(&mut st, &base)
        }
        (Method::POST, p) if p == format!("{VMSS_ID}/delete") => {
            let ids: Option<Vec<u32>> = json_body()
                .filter(|_| is_json)
                .and_then(|b| b.get("instanceIds").cloned())
                .and_then(|v| v.as_array().cloned())
                .and_then(|a| a.iter().map(|i| i.as_str()?.parse().ok()).collect());
            let Some(ids) = ids.filter(|i| !i.is_empty()) else {
                st.violations.push(format!(
                    "POST {uri}: body is not {{\"instanceIds\":[\"id\",...]}}"
                ));
                return arm_error(StatusCode::BAD_REQUEST, "InvalidRequestContent", "bad body");
            };
            if let Some(missing) = ids
                .iter()
                .find(|id| !st.vms.iter().any(|v| v.instance_id == **id))
            {
                return arm_error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("instance {missing} not found"),
                );
            }
            st.vms.retain(|v| !ids.contains(&v.instance_id));
            st.capacity -= ids.len() as u32;
            accepted(&mut st, &base)
        }
        _ => {
            st.violations
                .push(format!("{method} {uri}: not a documented VMSS operation"));
            arm_error(StatusCode::NOT_FOUND, "ResourceNotFound", "unknown path")
        }
    }
}

/// 202 with an `Azure-AsyncOperation` to poll.
fn accepted(st: &mut DoubleState, base: &str) -> Response {
    let id = format!("op-{}", st.ops.len() + 1);
    let fails = std::mem::take(&mut st.fail_next_op);
    st.ops.insert(id.clone(), (st.op_polls, fails));
    let url = format!(
        "{base}/subscriptions/00000000-0000-0000-0000-000000000001/providers/Microsoft.Compute/locations/westeurope/operations/{id}?api-version={API_VERSION}"
    );
    let header = if st.location_ops {
        "location"
    } else {
        "azure-asyncoperation"
    };
    (
        StatusCode::ACCEPTED,
        [(header, url), ("retry-after", "0".to_string())],
    )
        .into_response()
}

fn identity(
    st: &mut DoubleState,
    method: &Method,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Response {
    let header_ok = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
        == Some(IDENTITY_HEADER);
    let resource = query
        .get("resource")
        .map(|r| r.replace("%3A", ":").replace("%2F", "/"));
    if method != Method::GET
        || !header_ok
        || query.get("api-version").map(String::as_str) != Some("2019-08-01")
        || resource.as_deref() != Some("https://management.azure.com/")
        || query.get("client_id").map(String::as_str) != Some(CLIENT_ID)
    {
        st.violations.push(format!(
            "identity request does not match the documented shape (header ok: {header_ok}, resource: {resource:?})"
        ));
        return (StatusCode::BAD_REQUEST, "bad identity request").into_response();
    }
    st.tokens_issued += 1;
    let expires_on = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600;
    Json(json!({
        "access_token": format!("arm-token-{}", st.tokens_issued),
        "expires_on": expires_on.to_string(),
        "resource": "https://management.azure.com/",
        "token_type": "Bearer",
        "client_id": CLIENT_ID
    }))
    .into_response()
}
