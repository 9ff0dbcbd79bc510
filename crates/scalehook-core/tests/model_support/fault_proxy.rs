//! A fault-injecting HTTP/1.1 proxy on loopback, between a ledger adapter and its real
//! emulator (moto, Azurite), so the adapter's own transport, retries and conditional writes
//! meet throttling, 5xx and lost answers exactly as they come over the wire. Included by path
//! by the adapters' model tests (it needs tokio's `net` and `io-util`, which they have).
//!
//! Per request, with the given per-mille rate, one of:
//! - throttled: answered at once in the service's own throttling shape, not forwarded;
//! - 5xx: answered at once with the service's internal/busy error, not forwarded;
//! - lost answer: forwarded (the write lands), then the connection is closed with no answer.
//!
//! With [`FaultProxy::set_cancellations`] (DynamoDB only), that share of `TransactWriteItems`
//! requests is answered, not forwarded, with a `TransactionCanceledException` whose reasons
//! are `TransactionConflict` or `ThrottlingError` (alternately): what DynamoDB answers when
//! transactions collide on an item or a partition is throttled. Nothing is written.
//!
//! And, while [`FaultProxy::set_black_hole`] is on, every request is read and never answered
//! (a network partition, or a service that hangs): only the client's timeouts end it.
//!
//! With [`FaultProxy::set_latency`], every request waits that long before it is forwarded
//! or answered: a cloud API's round trip (the answer-time bench, `make bench-answer-times`,
//! puts one in front of each emulator and double with that service's latency).
//! [`FaultProxy::take_exchanges`] returns the forwarded requests with when each came in and
//! when its answer went out (how that bench times the GitHub requests of a delivery).
//!
//! Requests are forwarded one connection each (`Connection: close` upstream).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Whose error shapes to answer with.
#[derive(Debug, Clone, Copy)]
pub enum Flavor {
    DynamoDb,
    TableStorage,
    /// No service of ours (the ARM double): only latency, no injected errors.
    Plain,
}

/// One forwarded request: `GET runners/{id}` ([`short_name`]), when it came in, when its
/// answer went out.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub name: String,
    pub start: Instant,
    pub end: Instant,
}

/// `DELETE runners/{id}` for `DELETE /orgs/acme/actions/runners/12?x=1`: the method and the
/// path's last named segment, `/{id}` if a number follows it.
pub fn short_name(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    let mut words = text.split_whitespace();
    let method = words.next().unwrap_or_default();
    let path = words.next().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let named = segments
        .iter()
        .rposition(|s| !s.chars().all(|c| c.is_ascii_digit()));
    match named {
        Some(i) if i + 1 < segments.len() => format!("{method} {}/{{id}}", segments[i]),
        Some(i) => format!("{method} {}", segments[i]),
        None => format!("{method} /"),
    }
}

pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub throttled: Arc<AtomicU64>,
    pub server_errors: Arc<AtomicU64>,
    pub lost_answers: Arc<AtomicU64>,
    pub forwarded: Arc<AtomicU64>,
    /// Transactions answered with a `TransactionConflict` / `ThrottlingError` cancellation.
    pub cancelled_conflict: Arc<AtomicU64>,
    pub cancelled_throttling: Arc<AtomicU64>,
    on: Arc<AtomicBool>,
    black_hole: Arc<AtomicBool>,
    cancel_per_mille: Arc<AtomicU64>,
    latency_us: Arc<AtomicU64>,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
}

struct Shared {
    upstream: SocketAddr,
    flavor: Flavor,
    per_mille: u64,
    rng: Mutex<u64>,
    on: Arc<AtomicBool>,
    black_hole: Arc<AtomicBool>,
    throttled: Arc<AtomicU64>,
    server_errors: Arc<AtomicU64>,
    lost_answers: Arc<AtomicU64>,
    forwarded: Arc<AtomicU64>,
    cancelled_conflict: Arc<AtomicU64>,
    cancelled_throttling: Arc<AtomicU64>,
    cancel_per_mille: Arc<AtomicU64>,
    latency_us: Arc<AtomicU64>,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
}

enum Fault {
    None,
    Throttle,
    ServerError,
    LoseAnswer,
}

impl Shared {
    fn next(&self) -> u64 {
        let mut s = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A cancellation for this request, if it is a DynamoDB transaction picked to fail:
    /// `Some(true)` a conflict, `Some(false)` throttling.
    fn cancel(&self, head: &[u8]) -> Option<bool> {
        let rate = self.cancel_per_mille.load(Ordering::SeqCst);
        if rate == 0 || !matches!(self.flavor, Flavor::DynamoDb) {
            return None;
        }
        let head = String::from_utf8_lossy(head).to_ascii_lowercase();
        if !head.contains("x-amz-target: dynamodb_20120810.transactwriteitems") {
            return None;
        }
        let z = self.next();
        (z % 1000 < rate).then_some((z / 1000).is_multiple_of(2))
    }

    fn cancellation(&self, conflict: bool) -> Vec<u8> {
        let (code, message) = if conflict {
            ("TransactionConflict", "Transaction is ongoing for the item")
        } else {
            (
                "ThrottlingError",
                "Throughput exceeds the current capacity for one or more global secondary indexes",
            )
        };
        let body = format!(
            r#"{{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [{code}, None]","CancellationReasons":[{{"Code":"{code}","Message":"{message}"}},{{"Code":"None"}}]}}"#
        );
        format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-ErrorType: TransactionCanceledException\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn roll(&self) -> Fault {
        if !self.on.load(Ordering::SeqCst) || matches!(self.flavor, Flavor::Plain) {
            return Fault::None;
        }
        let z = self.next();
        if z % 1000 >= self.per_mille {
            return Fault::None;
        }
        match (z / 1000) % 3 {
            0 => Fault::Throttle,
            1 => Fault::ServerError,
            _ => Fault::LoseAnswer,
        }
    }

    fn canned(&self, throttle: bool) -> Vec<u8> {
        let (status, headers, body) = match (self.flavor, throttle) {
            (Flavor::DynamoDb, true) => (
                "400 Bad Request",
                "Content-Type: application/x-amz-json-1.0\r\nx-amzn-ErrorType: ThrottlingException\r\n",
                r#"{"__type":"com.amazon.coral.availability#ThrottlingException","message":"Rate exceeded"}"#,
            ),
            (Flavor::DynamoDb, false) => (
                "500 Internal Server Error",
                "Content-Type: application/x-amz-json-1.0\r\nx-amzn-ErrorType: InternalServerError\r\n",
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"injected"}"#,
            ),
            (Flavor::TableStorage, true) => (
                "503 Server Busy",
                "Content-Type: application/json;odata=minimalmetadata\r\nx-ms-error-code: ServerBusy\r\n",
                r#"{"odata.error":{"code":"ServerBusy","message":{"lang":"en-US","value":"injected"}}}"#,
            ),
            (Flavor::Plain, _) => ("500 Internal Server Error", "", "injected"),
            (Flavor::TableStorage, false) => (
                "500 Internal Server Error",
                "Content-Type: application/json;odata=minimalmetadata\r\nx-ms-error-code: InternalError\r\n",
                r#"{"odata.error":{"code":"InternalError","message":{"lang":"en-US","value":"injected"}}}"#,
            ),
        };
        format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr, flavor: Flavor, per_mille: u64, seed: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let on = Arc::new(AtomicBool::new(true));
        let black_hole = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            upstream,
            flavor,
            per_mille,
            rng: Mutex::new(seed),
            on: on.clone(),
            black_hole: black_hole.clone(),
            throttled: Arc::new(AtomicU64::new(0)),
            server_errors: Arc::new(AtomicU64::new(0)),
            lost_answers: Arc::new(AtomicU64::new(0)),
            forwarded: Arc::new(AtomicU64::new(0)),
            cancelled_conflict: Arc::new(AtomicU64::new(0)),
            cancelled_throttling: Arc::new(AtomicU64::new(0)),
            cancel_per_mille: Arc::new(AtomicU64::new(0)),
            latency_us: Arc::new(AtomicU64::new(0)),
            exchanges: Arc::default(),
        });
        let proxy = FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            throttled: shared.throttled.clone(),
            server_errors: shared.server_errors.clone(),
            lost_answers: shared.lost_answers.clone(),
            forwarded: shared.forwarded.clone(),
            cancelled_conflict: shared.cancelled_conflict.clone(),
            cancelled_throttling: shared.cancelled_throttling.clone(),
            on,
            black_hole,
            cancel_per_mille: shared.cancel_per_mille.clone(),
            latency_us: shared.latency_us.clone(),
            exchanges: shared.exchanges.clone(),
        };
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(client, &shared).await;
                });
            }
        });
        proxy
    }

    /// Stops (or restarts) injecting faults; forwarding goes on.
    pub fn set_faults(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }

    /// Cancels this share (per mille) of DynamoDB `TransactWriteItems` requests from now on,
    /// as a conflicting transaction or throttling would (see the module comment).
    pub fn set_cancellations(&self, per_mille: u64) {
        self.cancel_per_mille.store(per_mille, Ordering::SeqCst);
    }

    /// Delays every request by `latency` from now on (before it is forwarded or answered).
    pub fn set_latency(&self, latency: std::time::Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.store(us, Ordering::SeqCst);
    }

    /// The requests forwarded and answered since the last call, in the order they ended.
    pub fn take_exchanges(&self) -> Vec<Exchange> {
        std::mem::take(&mut *self.exchanges.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Swallows every request from now on (or stops doing so).
    pub fn set_black_hole(&self, on: bool) {
        self.black_hole.store(on, Ordering::SeqCst);
    }

    pub fn injected(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
            + self.server_errors.load(Ordering::Relaxed)
            + self.lost_answers.load(Ordering::Relaxed)
    }

    /// Prints what the proxy did, `throttled` named as the service calls it.
    pub fn print_figures(&self, service: &str, throttled_as: &str) {
        println!(
            "fault proxy ({service}): {} requests forwarded, {} {throttled_as}, {} answered 500, {} answers lost after the write",
            self.forwarded.load(Ordering::Relaxed),
            self.throttled.load(Ordering::Relaxed),
            self.server_errors.load(Ordering::Relaxed),
            self.lost_answers.load(Ordering::Relaxed),
        );
    }
}

/// Reads one request (head and Content-Length body); `None` at a clean end of stream.
async fn read_request(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = buf[..end + 4].to_vec();
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let length: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let mut chunk = [0u8; 16 * 1024];
                let n = client.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + length].to_vec();
            buf.drain(..end + 4 + length);
            return Ok(Some((head, body)));
        }
        if buf.len() > 1 << 20 {
            return Ok(None);
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The request head with `Connection: close` instead of whatever it said.
fn close_head(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

async fn forward(shared: &Shared, head: &[u8], body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(shared.upstream).await?;
    up.write_all(&close_head(head)).await?;
    up.write_all(body).await?;
    let mut response = Vec::new();
    up.read_to_end(&mut response).await?;
    shared.forwarded.fetch_add(1, Ordering::Relaxed);
    Ok(response)
}

async fn serve(mut client: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some((head, body)) = read_request(&mut client, &mut buf).await? {
        let start = Instant::now();
        if shared.black_hole.load(Ordering::SeqCst) {
            // Hold the connection open, answer nothing, until the client gives up.
            let mut sink = [0u8; 1024];
            while client.read(&mut sink).await? > 0 {}
            return Ok(());
        }
        let latency = shared.latency_us.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(std::time::Duration::from_micros(latency)).await;
        }
        if let Some(conflict) = shared.cancel(&head) {
            let counter = if conflict {
                &shared.cancelled_conflict
            } else {
                &shared.cancelled_throttling
            };
            counter.fetch_add(1, Ordering::Relaxed);
            client.write_all(&shared.cancellation(conflict)).await?;
            continue;
        }
        match shared.roll() {
            Fault::Throttle => {
                shared.throttled.fetch_add(1, Ordering::Relaxed);
                client.write_all(&shared.canned(true)).await?;
            }
            Fault::ServerError => {
                shared.server_errors.fetch_add(1, Ordering::Relaxed);
                client.write_all(&shared.canned(false)).await?;
            }
            Fault::LoseAnswer => {
                let _ = forward(shared, &head, &body).await?;
                shared.lost_answers.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Fault::None => {
                let response = forward(shared, &head, &body).await?;
                // Tell the client this connection ends here, whatever the upstream said.
                match response.windows(4).position(|w| w == b"\r\n\r\n") {
                    Some(end) => {
                        client.write_all(&close_head(&response[..end + 4])).await?;
                        client.write_all(&response[end + 4..]).await?;
                    }
                    None => client.write_all(&response).await?,
                }
                shared
                    .exchanges
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Exchange {
                        name: short_name(&head),
                        start,
                        end: Instant::now(),
                    });
                // The upstream closed after answering; so does this connection.
                return Ok(());
            }
        }
    }
    Ok(())
}

/// What [`black_hole_then_heal`] saw: the answers during and after the partition, and the
/// pool's (desired, queued, running) at the end.
pub struct Partition {
    pub during: (u16, String),
    pub after: (u16, String),
    pub pool: (u32, u32, u32),
}

/// One delivery while `proxy` swallows every ledger request, then its redelivery once the
/// network is back. The first answer must come (5xx) before GitHub's 10 s are up, bounded by
/// `cloud_timeout_ms` whatever the adapter's own retries do; the redelivery must count the
/// job exactly once.
pub async fn black_hole_then_heal(
    proxy: &FaultProxy,
    ledger: Arc<dyn scalehook_core::Ledger>,
) -> Partition {
    use http::{HeaderMap, HeaderValue, Method};
    use scalehook_core::{Config, LocalFleet, LogFormat, Service, WebhookSecrets};
    const SECRET: &str = "partition-test-secret";
    let config = Config::from_toml(
        "cloud_timeout_ms = 3000\n[[pools]]\nname = \"partition\"\nlabels = [\"self-hosted\", \"linux\"]\nmax = 5\n",
    )
    .expect("config");
    let service = Service::new(
        config,
        WebhookSecrets::new([SECRET]).expect("secret"),
        ledger,
        Arc::new(LocalFleet::new()),
    )
    .with_log(LogFormat::Off);
    let body = serde_json::json!({
        "action": "queued",
        "workflow_job": {"id": 880_001, "run_id": 1, "labels": ["self-hosted", "linux"]},
        "repository": {"full_name": "octo-org/app"}
    })
    .to_string()
    .into_bytes();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("x-github-event", HeaderValue::from_static("workflow_job"));
    headers.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&scalehook_core::signature::sign(SECRET.as_bytes(), &body))
            .expect("signature"),
    );
    let github_timeout = std::time::Duration::from_secs(10);
    proxy.set_black_hole(true);
    let during = tokio::time::timeout(
        github_timeout,
        service.handle(&Method::POST, &headers, &body),
    )
    .await
    .expect("the service answered within GitHub's 10 s while the ledger hung");
    proxy.set_black_hole(false);
    let after = service.handle(&Method::POST, &headers, &body).await;
    let summary = service.summary().await.expect("summary");
    let p = &summary[0];
    Partition {
        during: (during.status, during.body),
        after: (after.status, after.body),
        pool: (p.desired, p.queued, p.running),
    }
}
