//! A **test double** of Azure Resource Manager (one Uniform VM Scale Set) and of the App
//! Service managed-identity endpoint. ARM has no emulator, so this in-test axum server stands
//! in for it. It is not Azure. What it checks, and how it answers:
//!
//! - **Schemas.** Request bodies and the double's own answers are validated against
//!   Microsoft's REST description (Compute `2024-11-01`, `virtualMachineScaleSet.json`):
//!   `VirtualMachineScaleSetUpdate` (PATCH), `VirtualMachineScaleSetVMInstanceRequiredIDs`
//!   (POST delete), `VirtualMachineScaleSet`, `VirtualMachineScaleSetVMListResult`,
//!   `CloudError`, through the extract in `arm-spec/` (its header names the files and
//!   commits) and the validator in `swagger.rs`. A request that fails its schema gets
//!   400 `InvalidRequestContent` and is recorded as a violation; so is an answer of the
//!   double that fails its own schema.
//! - **Operations** (the five scalehook uses): method, path, `api-version` (pinned), the
//!   bearer token the identity endpoint issued. Anything else is a violation.
//! - **Status codes as documented**: GET 200; PATCH 200 with the scale set (the only success
//!   status the description gives) and `Azure-AsyncOperation`; POST delete 202 with
//!   `Azure-AsyncOperation` and `Location`. Deleting an instance that is gone answers what
//!   Compute answers: 400 `InvalidParameter`, target `instanceIds`, "The provided instanceId
//!   N is not an active Virtual Machine Scale Set VM instanceId."
//! - **Long-running operations** (Azure/azure-resource-manager-rpc `async-api-reference.md`):
//!   `Azure-AsyncOperation` reads answer `{"status": "InProgress|Succeeded|Failed"}`; with
//!   `location_ops`, writes carry only `Location`, reads answer 202 while running and then the
//!   final response: 200, or the operation's error status with a `CloudError` when it failed.
//! - **Throttling** as Compute documents it (troubleshooting-throttling-errors): every answer
//!   carries one `x-ms-ratelimit-remaining-resource` header per policy that charged it
//!   (`Microsoft.Compute/GetVMScaleSet3Min;n`, `…/HighCostGet3Min;n` for the VM list,
//!   `…/VMScaleSetBatchedVMRequests5Min;n` for writes) and ARM's
//!   `x-ms-ratelimit-remaining-subscription-reads|writes`; a throttled request gets 429 with
//!   `Retry-After`, the exhausted policy at `;0`, and `OperationNotAllowed` whose `details`
//!   name the policy (`TooManyRequests`, target = policy).
//! - **Scale-in by capacity** chooses as Azure's default scale-in policy documents
//!   (`ScaleInPolicy` in the description): balance zones, then fault domains, then the
//!   highest instance id. **Overprovisioning** (`overprovision = true`) adds extra VMs on a
//!   scale-out, which Azure deletes once the operation ends.
//! - **Managed identity**: `GET $IDENTITY_ENDPOINT?resource=…&api-version=2019-08-01` with
//!   `X-IDENTITY-HEADER`, and `client_id` exactly when a user-assigned identity is configured
//!   (learn.microsoft.com/azure/app-service/overview-managed-identity).

use super::swagger::{validate, Direction};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
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
const OPERATIONS: &str =
    "/subscriptions/00000000-0000-0000-0000-000000000001/providers/Microsoft.Compute/locations/westeurope/operations/";
/// The double lists this many VMs per page, so describe must follow `nextLink`.
pub const PAGE_SIZE: usize = 2;

/// A scripted failure for the next ARM request (not the identity endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After: <secs>`, as Compute throttles.
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
    /// The VM's zone in a zonal scale set.
    pub zone: Option<String>,
    pub fault_domain: u32,
    /// An extra VM of overprovisioning: Azure deletes it when the operation ends.
    pub overprovisioned: bool,
    /// Lists that show it `Creating` before it runs (when no operation read finishes it).
    lists_until_running: u32,
    /// Why it failed to provision (an allocation error code), shown in its instance view
    /// as `ProvisioningState/failed/<code>`.
    pub error: Option<&'static str>,
}

#[derive(Debug, Default)]
pub struct DoubleState {
    pub capacity: u32,
    pub orchestration: String,
    pub overprovision: bool,
    /// Zones of a zonal scale set (empty: regional).
    pub zones: Vec<String>,
    /// Fault domains VMs are spread over (per zone).
    pub fault_domains: u32,
    pub vms: Vec<Vm>,
    next_instance: u32,
    pub tokens_issued: u32,
    pub faults: VecDeque<Fault>,
    /// Statuses the identity endpoint answers next (then it issues tokens again).
    pub identity_faults: VecDeque<u16>,
    /// The `client_id` the identity endpoint expects (`None`: system-assigned, no client_id).
    pub client_id: Option<String>,
    /// Async operations: id -> polls left before it ends, whether it fails, its kind.
    ops: HashMap<String, (u32, bool)>,
    /// How many reads an operation answers InProgress before it ends.
    pub op_polls: u32,
    /// `Retry-After` on accepted writes and running operations (`None`: no header).
    pub op_retry_after: Option<u64>,
    /// Make the next operation end Failed.
    pub fail_next_op: bool,
    /// While set, VMs being created fail allocation with this error code (a Spot scale set
    /// without capacity: `SkuNotAvailable`, `AllocationFailed`, ...) instead of running.
    pub fail_allocation: Option<&'static str>,
    /// Write operation statuses in lower case (`failed`): clients must not care.
    pub lowercase_status: bool,
    /// How long the identity endpoint takes to answer.
    pub identity_delay: std::time::Duration,
    /// How long operation reads take to answer.
    pub op_delay: std::time::Duration,
    /// Answer operation reads with 403 (an identity without
    /// `Microsoft.Compute/locations/operations/read`).
    pub forbid_ops: bool,
    /// Accept writes with a `Location` header only (202 until done, then the final response)
    /// instead of `Azure-AsyncOperation`.
    pub location_ops: bool,
    /// Calls left before Compute throttles (`None`: no throttling). Each ARM request spends
    /// one; at 0 the answer is 429 with `throttle_retry_after`.
    pub rate_remaining: Option<u32>,
    pub throttle_retry_after: u64,
    /// Every request: (method, path with query).
    pub log: Vec<String>,
    /// Everything that did not match the documented API (requests and the double's answers).
    pub violations: Vec<String>,
}

impl DoubleState {
    fn launch(&mut self, overprovisioned: bool) {
        let id = self.next_instance;
        self.next_instance += 1;
        // Azure spreads new VMs over zones, then fault domains.
        let zone = (!self.zones.is_empty()).then(|| {
            let count = |z: &String| {
                self.vms
                    .iter()
                    .filter(|v| v.zone.as_ref() == Some(z))
                    .count()
            };
            self.zones
                .iter()
                .min_by_key(|z| count(z))
                .cloned()
                .unwrap_or_default()
        });
        let fds = self.fault_domains.max(1);
        let fault_domain = (0..fds)
            .min_by_key(|fd| {
                self.vms
                    .iter()
                    .filter(|v| v.zone == zone && v.fault_domain == *fd)
                    .count()
            })
            .unwrap_or(0);
        self.vms.push(Vm {
            instance_id: id,
            // Uniform computer names: prefix + 6 base-36 digits.
            computer_name: format!("runnervmss{id:06}"),
            state: "Creating",
            power: "starting",
            // 2026-11-29T12:00:00Z plus a minute per instance.
            time_created: format!("2026-11-29T12:{:02}:00.1234567+00:00", id % 60),
            zone,
            fault_domain,
            overprovisioned,
            lists_until_running: 1,
            error: None,
        });
    }

    /// A VM being created comes up, or fails allocation while `fail_allocation` is set.
    fn provisioned(vm: &mut Vm, fail_allocation: Option<&'static str>) {
        match fail_allocation {
            Some(code) => {
                vm.state = "Failed";
                // A VM that never got a host is deallocated.
                vm.power = "deallocated";
                vm.error = Some(code);
            }
            None => {
                vm.state = "Succeeded";
                vm.power = "running";
            }
        }
    }

    /// Azure's default scale-in choice: the zone with most VMs, in it the fault domain with
    /// most VMs, in it the highest instance id.
    fn scale_in_victim(&self) -> Option<usize> {
        let live: Vec<(usize, &Vm)> = self
            .vms
            .iter()
            .enumerate()
            .filter(|(_, v)| v.state != "Deleting")
            .collect();
        let zone_count = |z: &Option<String>| live.iter().filter(|(_, v)| &v.zone == z).count();
        let fd_count = |z: &Option<String>, fd: u32| {
            live.iter()
                .filter(|(_, v)| &v.zone == z && v.fault_domain == fd)
                .count()
        };
        live.iter()
            .max_by_key(|(_, v)| {
                (
                    zone_count(&v.zone),
                    fd_count(&v.zone, v.fault_domain),
                    v.instance_id,
                )
            })
            .map(|(i, _)| *i)
    }

    /// The operation ended: creating VMs run, overprovisioned extras are gone.
    fn finish_operation(&mut self) {
        self.vms.retain(|v| !v.overprovisioned);
        let fail = self.fail_allocation;
        for vm in &mut self.vms {
            if vm.state == "Creating" {
                Self::provisioned(vm, fail);
            }
        }
    }
}

#[derive(Clone)]
pub struct ArmDouble {
    pub base: String,
    pub state: Arc<Mutex<DoubleState>>,
}

impl ArmDouble {
    /// Starts the double with `instances` running VMs (capacity = instances), a
    /// user-assigned identity (`AZURE_CLIENT_ID`).
    pub async fn start(instances: u32) -> ArmDouble {
        Self::start_with(instances, Some(CLIENT_ID.to_string())).await
    }

    /// As [`Self::start`] with the app's system-assigned identity (no `AZURE_CLIENT_ID`).
    pub async fn start_system_assigned(instances: u32) -> ArmDouble {
        Self::start_with(instances, None).await
    }

    async fn start_with(instances: u32, client_id: Option<String>) -> ArmDouble {
        let mut st = DoubleState {
            orchestration: "Uniform".into(),
            op_polls: 1,
            op_retry_after: Some(0),
            fault_domains: 5,
            throttle_retry_after: 1200,
            client_id,
            ..DoubleState::default()
        };
        for _ in 0..instances {
            st.launch(false);
        }
        st.finish_operation();
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
        let mut env = vec![
            (
                "IDENTITY_ENDPOINT".into(),
                format!("{}/msi/token", self.base),
            ),
            ("IDENTITY_HEADER".into(), IDENTITY_HEADER.into()),
            ("SCALEHOOK_ARM_ENDPOINT".into(), self.base.clone()),
        ];
        if let Some(id) = self.lock().client_id.clone() {
            env.push(("AZURE_CLIENT_ID".into(), id));
        }
        env
    }

    pub fn capacity(&self) -> u32 {
        self.lock().capacity
    }

    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Instance ids in the scale set.
    pub fn instance_ids(&self) -> Vec<u32> {
        self.lock().vms.iter().map(|v| v.instance_id).collect()
    }

    /// A valid bearer token, as the identity endpoint would issue it (for raw requests).
    pub fn issue_token(&self) -> String {
        let mut st = self.lock();
        st.tokens_issued += 1;
        format!("arm-token-{}", st.tokens_issued)
    }
}

type Shared = (Arc<Mutex<DoubleState>>, String);

fn cloud_error(status: StatusCode, code: &str, message: &str, target: Option<&str>) -> Response {
    let mut error = json!({"code": code, "message": message});
    if let Some(t) = target {
        error["target"] = json!(t);
    }
    (status, Json(json!({ "error": error }))).into_response()
}

/// Compute's throttling policies that charge a request, by operation.
fn policies(method: &Method, path: &str) -> &'static [&'static str] {
    if path.starts_with(OPERATIONS) {
        &[]
    } else if path.ends_with("/virtualMachines") {
        &["HighCostGet3Min", "HighCostGet30Min"]
    } else if *method == Method::GET {
        &["GetVMScaleSet3Min", "GetVMScaleSet30Min"]
    } else {
        &["VMScaleSetBatchedVMRequests5Min", "VmssQueuedVMOperations"]
    }
}

fn set_header(res: &mut Response, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        res.headers_mut().append(name, v);
    }
}

fn throttled(method: &Method, path: &str, retry_after: u64) -> Response {
    let names = policies(method, path);
    let target = names.first().copied().unwrap_or("SubscriptionReads");
    let mut res = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({"error": {
            "code": "OperationNotAllowed",
            "message": "The server rejected the request because too many requests have been received for this subscription.",
            "details": [{
                "code": "TooManyRequests",
                "target": target,
                "message": format!("{{\"operationGroup\":\"{target}\",\"allowedRequestCount\":300,\"measuredRequestCount\":301}}")
            }]
        }})),
    )
        .into_response();
    set_header(&mut res, "retry-after", retry_after.to_string());
    for (i, p) in names.iter().enumerate() {
        let n = if i == 0 { 0 } else { 100 };
        set_header(
            &mut res,
            "x-ms-ratelimit-remaining-resource",
            format!("Microsoft.Compute/{p};{n}"),
        );
    }
    res
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
        let delay = state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .identity_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.log.push(format!("{method} {}", uri));
        return identity(&mut st, &method, &headers, &query);
    }
    let path = uri.path().to_string();
    if path.starts_with(OPERATIONS) {
        let delay = state.lock().unwrap_or_else(|p| p.into_inner()).op_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    // Compute's throttling: every ARM request spends a call; past the limit, 429.
    let left = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        match st.rate_remaining {
            Some(0) => {
                st.log.push(format!("{method} {}", uri));
                return throttled(&method, &path, st.throttle_retry_after);
            }
            Some(n) => {
                st.rate_remaining = Some(n - 1);
                Some(n - 1)
            }
            None => None,
        }
    };
    let mut res = handle_arm(state.clone(), base, method.clone(), uri, headers, body).await;
    if res.status() != StatusCode::TOO_MANY_REQUESTS {
        if let Some(n) = left {
            for (i, p) in policies(&method, &path).iter().enumerate() {
                let n = if i == 0 { n } else { n + 400 };
                set_header(
                    &mut res,
                    "x-ms-ratelimit-remaining-resource",
                    format!("Microsoft.Compute/{p};{n}"),
                );
            }
        }
        let which = if method == Method::GET {
            "reads"
        } else {
            "writes"
        };
        let header = if which == "reads" {
            "x-ms-ratelimit-remaining-subscription-reads"
        } else {
            "x-ms-ratelimit-remaining-subscription-writes"
        };
        set_header(&mut res, header, "11999".into());
    }
    // The double's own error answers follow CloudError.
    if !res.status().is_success() {
        let (parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        if !bytes.is_empty() {
            check_answer(&state, "CloudError", &bytes);
        }
        res = Response::from_parts(parts, axum::body::Body::from(bytes));
    }
    res
}

fn check_answer(state: &Arc<Mutex<DoubleState>>, definition: &str, bytes: &[u8]) {
    let problems = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => validate(definition, &v, Direction::Response),
        Err(_) => vec!["not JSON".to_string()],
    };
    if !problems.is_empty() {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.violations
            .push(format!("the double's {definition} answer: {problems:?}"));
    }
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

/// The JSON body of a request, checked against `definition`; the problems otherwise.
fn request_body(headers: &HeaderMap, body: &[u8], definition: &str) -> Result<Value, Vec<String>> {
    let is_json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(vec!["Content-Type is not application/json".into()]);
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|_| vec!["body is not JSON".to_string()])?;
    let problems = validate(definition, &v, Direction::Request);
    if problems.is_empty() {
        Ok(v)
    } else {
        Err(problems)
    }
}

fn scale_set_json(st: &DoubleState, provisioning: &str) -> Value {
    let mut set = json!({
        "id": VMSS_ID,
        "name": "runners",
        "type": "Microsoft.Compute/virtualMachineScaleSets",
        "location": "westeurope",
        "sku": {"name": "Standard_D2s_v5", "tier": "Standard", "capacity": st.capacity},
        "properties": {
            "orchestrationMode": st.orchestration,
            "provisioningState": provisioning,
            "overprovision": st.overprovision,
            "singlePlacementGroup": false,
            "platformFaultDomainCount": st.fault_domains,
            "upgradePolicy": {"mode": "Manual"},
            "scaleInPolicy": {"rules": ["Default"]},
            "timeCreated": "2026-11-29T11:00:00.1234567+00:00"
        }
    });
    if !st.zones.is_empty() {
        set["zones"] = json!(st.zones);
    }
    set
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
        return cloud_error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            "The api-version is not supported.",
            None,
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
        return cloud_error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed.",
            None,
        );
    }
    if let Some(fault) = st.faults.pop_front() {
        return match fault {
            Fault::Throttle(secs) => throttled(&method, &path, secs),
            Fault::Server(code) => cloud_error(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "InternalExecutionError",
                "An internal execution error occurred.",
                None,
            ),
        };
    }

    if let Some(op) = path.strip_prefix(OPERATIONS) {
        if method != Method::GET {
            st.violations
                .push(format!("{method} {uri}: operations are read with GET"));
        }
        if st.forbid_ops {
            return cloud_error(
                StatusCode::FORBIDDEN,
                "AuthorizationFailed",
                "The client does not have authorization to perform action 'Microsoft.Compute/locations/operations/read'.",
                None,
            );
        }
        let Some((left, fails)) = st.ops.get(op).copied() else {
            return cloud_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "The operation was not found.",
                None,
            );
        };
        let location = st.location_ops;
        if left > 0 {
            st.ops.insert(op.to_string(), (left - 1, fails));
            let mut res = if location {
                StatusCode::ACCEPTED.into_response()
            } else {
                Json(json!({"name": op, "status": "InProgress", "startTime": "2026-11-29T12:00:00.1234567+00:00"}))
                    .into_response()
            };
            if let Some(secs) = st.op_retry_after {
                set_header(&mut res, "retry-after", secs.to_string());
            }
            return res;
        }
        st.finish_operation();
        let error = json!({"code": "AllocationFailed", "message": "Allocation failed. We do not have sufficient capacity for the requested VM size in this region."});
        if location {
            // The final response of the operation: an error status when it failed.
            return if fails {
                (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response()
            } else {
                StatusCode::OK.into_response()
            };
        }
        let word = |w: &str| {
            if st.lowercase_status {
                w.to_ascii_lowercase()
            } else {
                w.to_string()
            }
        };
        let status = if fails {
            json!({"name": op, "status": word("Failed"), "startTime": "2026-11-29T12:00:00.1234567+00:00",
                   "endTime": "2026-11-29T12:01:00.1234567+00:00", "error": error})
        } else {
            json!({"name": op, "status": word("Succeeded"), "startTime": "2026-11-29T12:00:00.1234567+00:00",
                   "endTime": "2026-11-29T12:01:00.1234567+00:00"})
        };
        let problems = validate("OperationStatus", &status, Direction::Response);
        if !problems.is_empty() {
            st.violations
                .push(format!("the double's operation status: {problems:?}"));
        }
        return Json(status).into_response();
    }

    match (method.clone(), path.as_str()) {
        (Method::GET, p) if p == VMSS_ID => {
            let set = scale_set_json(&st, "Succeeded");
            answer(&mut st, "VirtualMachineScaleSet", set)
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
                    return cloud_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidParameter",
                        "The value of parameter $expand is invalid.",
                        Some("$expand"),
                    );
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
                        // A failed VM's provisioning status names the error, as Compute
                        // writes it: `ProvisioningState/failed/<code>`, level Error.
                        let provisioning = match vm.error {
                            Some(code) => json!({
                                "code": format!("ProvisioningState/failed/{code}"),
                                "level": "Error",
                                "displayStatus": "Provisioning failed",
                                "message": "Allocation failed. We do not have sufficient capacity for the requested VM size in this region."
                            }),
                            None => json!({
                                "code": format!("ProvisioningState/{}", vm.state.to_ascii_lowercase()),
                                "level": "Info"
                            }),
                        };
                        props["instanceView"] = json!({
                            "computerName": vm.computer_name,
                            "platformFaultDomain": vm.fault_domain,
                            "statuses": [
                                provisioning,
                                {"code": format!("PowerState/{}", vm.power), "level": "Info"}
                            ]
                        });
                    }
                    let mut item = json!({
                        "id": format!("{VMSS_ID}/virtualMachines/{}", vm.instance_id),
                        "instanceId": vm.instance_id.to_string(),
                        "name": format!("runners_{}", vm.instance_id),
                        "type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
                        "location": "westeurope",
                        "properties": props
                    });
                    if let Some(z) = &vm.zone {
                        item["zones"] = json!([z]);
                    }
                    item
                })
                .collect();
            let listed = skip..skip + PAGE_SIZE;
            let fail = st.fail_allocation;
            for (i, vm) in st.vms.iter_mut().enumerate() {
                if listed.contains(&i) && vm.state == "Creating" && !vm.overprovisioned {
                    vm.lists_until_running = vm.lists_until_running.saturating_sub(1);
                    if vm.lists_until_running == 0 {
                        DoubleState::provisioned(vm, fail);
                    }
                }
            }
            let mut out = json!({ "value": page });
            if skip + PAGE_SIZE < st.vms.len() {
                // ARM's nextLink keeps the request's own query.
                let expand = if expand { "&$expand=instanceView" } else { "" };
                out["nextLink"] = json!(format!(
                    "{base}{VMSS_ID}/virtualMachines?api-version={API_VERSION}{expand}&$skiptoken={}",
                    skip + PAGE_SIZE
                ));
            }
            answer(&mut st, "VirtualMachineScaleSetVMListResult", out)
        }
        (Method::PATCH, p) if p == VMSS_ID => {
            let update = match request_body(&headers, &body, "VirtualMachineScaleSetUpdate") {
                Ok(v) => v,
                Err(problems) => {
                    st.violations.push(format!("PATCH {uri}: {problems:?}"));
                    return cloud_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidRequestContent",
                        &format!("The request content was invalid: {problems:?}"),
                        None,
                    );
                }
            };
            // The double simulates capacity only; other valid properties are not applied.
            if update
                .as_object()
                .is_some_and(|o| o.keys().any(|k| k != "sku"))
            {
                st.violations.push(format!(
                    "PATCH {uri}: scalehook changes the capacity only, not {update}"
                ));
            }
            if let Some(capacity) = update.pointer("/sku/capacity").and_then(Value::as_u64) {
                let capacity = capacity as u32;
                let grow = capacity.saturating_sub(st.capacity);
                for _ in 0..grow {
                    st.launch(false);
                }
                if grow > 0 && st.overprovision {
                    // Azure creates extra VMs and deletes them once the requested ones run.
                    st.launch(true);
                    st.launch(true);
                }
                // Lowering capacity lets Azure pick the VMs.
                while st.vms.iter().filter(|v| !v.overprovisioned).count() > capacity as usize {
                    match st.scale_in_victim() {
                        Some(i) => {
                            st.vms.remove(i);
                        }
                        None => break,
                    }
                }
                st.capacity = capacity;
            }
            let set = scale_set_json(&st, "Updating");
            let op = start_operation(&mut st, &base);
            let mut res = answer(&mut st, "VirtualMachineScaleSet", set);
            operation_headers(&st, &mut res, &op, false);
            res
        }
        (Method::POST, p) if p == format!("{VMSS_ID}/delete") => {
            let ids = match request_body(
                &headers,
                &body,
                "VirtualMachineScaleSetVMInstanceRequiredIDs",
            ) {
                Ok(v) => v["instanceIds"].clone(),
                Err(problems) => {
                    st.violations.push(format!("POST {uri}: {problems:?}"));
                    return cloud_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidRequestContent",
                        &format!("The request content was invalid: {problems:?}"),
                        None,
                    );
                }
            };
            let ids: Vec<String> = ids
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if ids.is_empty() {
                return cloud_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameter",
                    "At least one instanceId is required.",
                    Some("instanceIds"),
                );
            }
            for id in &ids {
                let active = id.parse::<u32>().ok().is_some_and(|n| {
                    st.vms
                        .iter()
                        .any(|v| v.instance_id == n && v.state != "Deleting")
                });
                if !active {
                    return cloud_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidParameter",
                        &format!("The provided instanceId {id} is not an active Virtual Machine Scale Set VM instanceId."),
                        Some("instanceIds"),
                    );
                }
            }
            st.vms.retain(|v| !ids.contains(&v.instance_id.to_string()));
            st.capacity -= ids.len() as u32;
            let op = start_operation(&mut st, &base);
            let mut res = StatusCode::ACCEPTED.into_response();
            operation_headers(&st, &mut res, &op, true);
            res
        }
        _ => {
            st.violations
                .push(format!("{method} {uri}: not a documented VMSS operation"));
            cloud_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "The resource was not found.",
                None,
            )
        }
    }
}

/// A 200 with `body`, checked against `definition` first.
fn answer(st: &mut DoubleState, definition: &str, body: Value) -> Response {
    let problems = validate(definition, &body, Direction::Response);
    if !problems.is_empty() {
        st.violations
            .push(format!("the double's {definition} answer: {problems:?}"));
    }
    Json(body).into_response()
}

/// Starts an operation; its status URL.
fn start_operation(st: &mut DoubleState, base: &str) -> String {
    let id = format!("op-{}", st.ops.len() + 1);
    let fails = std::mem::take(&mut st.fail_next_op);
    st.ops.insert(id.clone(), (st.op_polls, fails));
    format!("{base}{OPERATIONS}{id}?api-version={API_VERSION}")
}

/// `Azure-AsyncOperation` (and `Location` on a 202), or `Location` only in `location_ops`.
fn operation_headers(st: &DoubleState, res: &mut Response, url: &str, accepted: bool) {
    if st.location_ops {
        if accepted {
            set_header(res, "location", url.to_string());
        } else {
            // A 200 that is not done yet carries the operation to follow.
            set_header(res, "azure-asyncoperation", url.to_string());
        }
    } else {
        set_header(res, "azure-asyncoperation", url.to_string());
        if accepted {
            set_header(res, "location", format!("{url}&monitor=true"));
        }
    }
    if let Some(secs) = st.op_retry_after {
        set_header(res, "retry-after", secs.to_string());
    }
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
    let client_id_ok = query.get("client_id") == st.client_id.as_ref();
    if method != Method::GET
        || !header_ok
        || query.get("api-version").map(String::as_str) != Some("2019-08-01")
        || resource.as_deref() != Some("https://management.azure.com/")
        || !client_id_ok
    {
        st.violations.push(format!(
            "identity request does not match the documented shape (header ok: {header_ok}, resource: {resource:?}, client_id ok: {client_id_ok})"
        ));
        return (StatusCode::BAD_REQUEST, "bad identity request").into_response();
    }
    if let Some(code) = st.identity_faults.pop_front() {
        return (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Json(json!({"statusCode": code, "message": "simulated identity endpoint failure"})),
        )
            .into_response();
    }
    st.tokens_issued += 1;
    let expires_on = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600;
    let mut token = json!({
        "access_token": format!("arm-token-{}", st.tokens_issued),
        "expires_on": expires_on.to_string(),
        "resource": "https://management.azure.com/",
        "token_type": "Bearer"
    });
    if let Some(id) = &st.client_id {
        token["client_id"] = json!(id);
    }
    Json(token).into_response()
}
