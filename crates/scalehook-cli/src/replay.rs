//! `scalehook replay`: deliver payload files and traces, signed, in process or to a URL, and
//! print what each delivery got and the pools' final figures.

use crate::cli::ReplayArgs;
use crate::setup;
use anyhow::Context as _;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Method};
use scalehook_core::service::{DELIVERY_HEADER, EVENT_HEADER};
use scalehook_core::signature::SIGNATURE_HEADER;
use scalehook_core::trace::{parse_trace, restamp_job_times};
use scalehook_core::{LocalFleet, MemoryLedger, Service, WebhookSecrets};
use serde::{Deserialize, Serialize};
use std::hash::{BuildHasher as _, Hasher as _};
use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Replays longer than this get a progress bar (on a terminal, without `--json`).
const PROGRESS_MIN_DELIVERIES: usize = 20;
/// Upper bound on one remote delivery, so a stuck server cannot hang the replay.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(30);

/// One delivery to send: where it came from, its headers' values and the exact body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub file: String,
    /// 1-based line of a trace; `None` for a payload file.
    pub line: Option<usize>,
    pub event: String,
    pub delivery: String,
    pub body: Vec<u8>,
}

/// One pool's figures in the final summary (the same for in-process and remote replays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolFigures {
    pub name: String,
    pub desired: u32,
    pub queued: u32,
    pub running: u32,
}

/// What one delivery got back.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    /// The answer body, when it is JSON (it always is from scalehook).
    answer: Option<serde_json::Value>,
    /// The answer body when it is not JSON (a proxy's error page), shortened.
    text: Option<String>,
}

pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let secrets = match (&args.url, setup::secrets_from_env()) {
        (_, Ok(secrets)) => secrets,
        (Some(_), Err(e)) => return Err(e),
        // In process this run both signs and verifies, so any secret proves the same
        // thing; one that dies with the process spares a first-time user the set-up.
        (None, Err(_)) => {
            eprintln!(
                "scalehook replay: SCALEHOOK_WEBHOOK_SECRET is not set: signing and verifying in process with a throwaway secret"
            );
            WebhookSecrets::new([format!("{}{}", new_delivery_id(), new_delivery_id())])
                .map_err(|e| anyhow::anyhow!("{e}"))?
        }
    };
    let mut notes = Vec::new();
    let mut deliveries = collect(&args.paths, &mut notes)?;
    if !args.keep_times {
        let now = scalehook_core::Clock::now(&scalehook_core::SystemClock);
        for d in &mut deliveries {
            if let Some(body) = restamp_job_times(&d.event, &d.body, now) {
                d.body = body;
            }
        }
    }
    for note in &notes {
        eprintln!("scalehook replay: {note}");
    }
    if deliveries.is_empty() {
        anyhow::bail!("no deliveries found in the given paths");
    }
    let mut target = match &args.url {
        Some(url) => Target::remote(url)?,
        None => {
            let (config, _) = setup::load_config(args.config.as_deref())?;
            setup::require_local_fleets(&config)?;
            Target::in_process(config, secrets.clone())?
        }
    };

    let stdout = std::io::stdout();
    let progress =
        (!args.json && stdout.is_terminal() && deliveries.len() > PROGRESS_MIN_DELIVERIES)
            .then(|| progress_bar(deliveries.len()));
    let mut out = stdout.lock();
    let mut tally = Tally::default();
    for d in &deliveries {
        let reply = target.deliver(d, &secrets)?;
        tally.count(reply.status);
        let line = if args.json {
            delivery_json(d, &reply)
        } else {
            delivery_row(d, &reply)
        };
        match &progress {
            Some(bar) => {
                bar.println(line);
                bar.inc(1);
            }
            None => writeln!(out, "{line}").context("cannot write to stdout")?,
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }

    let mut reconcile_failed = false;
    if args.reconcile {
        let report = target.reconcile()?;
        reconcile_failed = !report.ok();
        if args.json {
            let report = serde_json::to_string(&report).context("cannot write the report")?;
            writeln!(out, "{{\"reconcile\":{report}}}").context("cannot write to stdout")?;
        } else {
            writeln!(out, "\nreconcile: {}", reconcile_text(&report))
                .context("cannot write to stdout")?;
        }
    }

    let summary = target.summary();
    match (&summary, args.json) {
        (Ok(pools), true) => {
            // Through the struct, so each pool's fields keep their documented order.
            let pools = serde_json::to_string(pools).context("cannot write the summary")?;
            writeln!(out, "{{\"summary\":{{\"pools\":{pools}}}}}")
                .context("cannot write to stdout")?;
        }
        (Err(e), true) => {
            let reason = serde_json::Value::from(format!("{e:#}"));
            writeln!(out, "{{\"summary\":null,\"reason\":{reason}}}")
                .context("cannot write to stdout")?;
        }
        (Ok(pools), false) => {
            writeln!(out, "\n{}", tally.text()).context("cannot write to stdout")?;
            write!(out, "{}", summary_table(pools)).context("cannot write to stdout")?;
        }
        (Err(_), false) => {
            writeln!(out, "\n{}", tally.text()).context("cannot write to stdout")?;
        }
    }
    out.flush().context("cannot write to stdout")?;
    drop(out);
    if let Err(e) = &summary {
        eprintln!("scalehook replay: no summary: {e:#}");
    }

    let mut failed = false;
    if tally.server_errors > 0 {
        eprintln!(
            "scalehook replay: {} deliveries got a 5xx (a cloud dependency failed); redeliver them once it is back",
            tally.server_errors
        );
        failed = true;
    }
    if tally.unauthorized > 0 {
        eprintln!(
            "scalehook replay: {} deliveries got 401: the server has another webhook secret than SCALEHOOK_WEBHOOK_SECRET here",
            tally.unauthorized
        );
        failed = true;
    }
    if reconcile_failed {
        eprintln!("scalehook replay: the reconcile pass failed for at least one pool");
        failed = true;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Where deliveries go.
enum Target {
    InProcess {
        runtime: tokio::runtime::Runtime,
        service: Box<Service>,
    },
    Remote {
        agent: ureq::Agent,
        url: String,
        status_url: String,
    },
}

impl Target {
    fn in_process(config: scalehook_core::Config, secrets: WebhookSecrets) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        // The same parts `scalehook serve` builds, so the summaries match the server's.
        let service = Box::new(Service::new(
            config,
            secrets,
            Arc::new(MemoryLedger::new()),
            Arc::new(LocalFleet::new()),
        ));
        Ok(Target::InProcess { runtime, service })
    }

    fn remote(url: &str) -> anyhow::Result<Self> {
        let origin = origin(url).ok_or_else(|| {
            anyhow::anyhow!("--url must be an absolute http(s) URL, e.g. http://127.0.0.1:8080/webhook (got {url:?})")
        })?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // Every status is an answer to report, not an error.
            .http_status_as_error(false)
            .timeout_global(Some(REMOTE_TIMEOUT))
            .user_agent(concat!("scalehook-replay/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Target::Remote {
            agent,
            url: url.to_string(),
            status_url: format!("{origin}/status"),
        })
    }

    fn deliver(&mut self, d: &Delivery, secrets: &WebhookSecrets) -> anyhow::Result<Reply> {
        let signature = secrets.sign(&d.body);
        match self {
            Target::InProcess { runtime, service } => {
                let headers = headers(d, &signature)?;
                let answer = runtime.block_on(service.handle(&Method::POST, &headers, &d.body));
                Ok(reply(answer.status, &answer.body))
            }
            Target::Remote { agent, url, .. } => {
                let mut response = agent
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .header(EVENT_HEADER, d.event.as_str())
                    .header(DELIVERY_HEADER, d.delivery.as_str())
                    .header(SIGNATURE_HEADER, signature.as_str())
                    .send(&d.body[..])
                    .with_context(|| format!("cannot deliver {} to {url}", place(d)))?;
                let status = response.status().as_u16();
                let text = response
                    .body_mut()
                    .read_to_string()
                    .with_context(|| format!("cannot read the answer to {}", place(d)))?;
                Ok(reply(status, &text))
            }
        }
    }

    fn reconcile(&mut self) -> anyhow::Result<scalehook_core::report::ReconcileReport> {
        match self {
            Target::InProcess { runtime, service } => Ok(runtime.block_on(service.reconcile())),
            // clap already refuses --reconcile with --url; kept for a clear message anyway.
            Target::Remote { .. } => {
                anyhow::bail!(
                    "--reconcile runs in process only (a server reconciles on its own schedule)"
                )
            }
        }
    }

    fn summary(&mut self) -> anyhow::Result<Vec<PoolFigures>> {
        match self {
            Target::InProcess { runtime, service } => {
                let pools = runtime
                    .block_on(service.summary())
                    .map_err(|e| anyhow::anyhow!("cannot read the pools: {e}"))?;
                Ok(pools
                    .into_iter()
                    .map(|p| PoolFigures {
                        name: p.name,
                        desired: p.desired,
                        queued: p.queued,
                        running: p.running,
                    })
                    .collect())
            }
            Target::Remote {
                agent, status_url, ..
            } => {
                let mut response = agent
                    .get(status_url.as_str())
                    .call()
                    .with_context(|| format!("GET {status_url}"))?;
                let status = response.status().as_u16();
                let text = response
                    .body_mut()
                    .read_to_string()
                    .with_context(|| format!("GET {status_url}"))?;
                if status != 200 {
                    anyhow::bail!("GET {status_url} answered {status}: {}", shorten(&text));
                }
                #[derive(Deserialize)]
                struct Status {
                    pools: Vec<PoolFigures>,
                }
                let parsed: Status = serde_json::from_str(&text)
                    .with_context(|| format!("GET {status_url}: unexpected answer"))?;
                Ok(parsed.pools)
            }
        }
    }
}

/// The headers GitHub sends, for an in-process delivery.
fn headers(d: &Delivery, signature: &str) -> anyhow::Result<HeaderMap> {
    let mut h = HeaderMap::new();
    let value = |v: &str, what: &str| {
        HeaderValue::from_str(v)
            .map_err(|_| anyhow::anyhow!("{}: the {what} is not a valid header value", place(d)))
    };
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(EVENT_HEADER, value(&d.event, "event")?);
    h.insert(DELIVERY_HEADER, value(&d.delivery, "delivery id")?);
    h.insert(SIGNATURE_HEADER, value(signature, "signature")?);
    Ok(h)
}

fn reply(status: u16, body: &str) -> Reply {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(answer) => Reply {
            status,
            answer: Some(answer),
            text: None,
        },
        Err(_) => Reply {
            status,
            answer: None,
            text: Some(shorten(body)),
        },
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 200;
    let mut s: String = text.chars().take(MAX).collect();
    if text.chars().count() > MAX {
        s.push('…');
    }
    s
}

/// `scheme://authority` of an absolute http(s) URL.
fn origin(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if authority_len == 0 {
        return None;
    }
    Some(&url[..url.len() - rest.len() + authority_len])
}

fn place(d: &Delivery) -> String {
    match d.line {
        Some(line) => format!("{}:{line}", d.file),
        None => d.file.clone(),
    }
}

/// The `--json` line of one delivery (fields in this order).
#[derive(Serialize)]
struct DeliveryLine<'a> {
    file: &'a str,
    line: Option<usize>,
    event: &'a str,
    delivery: &'a str,
    http_status: u16,
    /// The answer body's fields; `null` when the body was not JSON.
    answer: &'a Option<serde_json::Value>,
    /// The (shortened) body, only when it was not JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    body: &'a Option<String>,
}

fn delivery_json(d: &Delivery, r: &Reply) -> String {
    let line = DeliveryLine {
        file: &d.file,
        line: d.line,
        event: &d.event,
        delivery: &d.delivery,
        http_status: r.status,
        answer: &r.answer,
        body: &r.text,
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// The readable row of one delivery: status, event, what the answer says, where it came from.
fn delivery_row(d: &Delivery, r: &Reply) -> String {
    let answer = match &r.answer {
        Some(serde_json::Value::Object(map)) => {
            // "handled pool=k8s action=scale_out desired=1 ...": the status word first.
            let status = map.get("status").and_then(|v| v.as_str()).unwrap_or("");
            let rest = map
                .iter()
                .filter(|(k, _)| k.as_str() != "status")
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    _ => format!("{k}={v}"),
                });
            std::iter::once(status.to_string())
                .chain(rest)
                .collect::<Vec<_>>()
                .join(" ")
        }
        Some(other) => other.to_string(),
        None => r.text.clone().unwrap_or_default(),
    };
    format!(
        "{:<3}  {:<12}  {:<60}  {}",
        r.status,
        d.event,
        answer,
        place(d)
    )
}

fn summary_table(pools: &[PoolFigures]) -> String {
    let width = pools
        .iter()
        .map(|p| p.name.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    let mut s = format!("{:<width$}  desired  queued  running\n", "pool");
    for p in pools {
        s.push_str(&format!(
            "{:<width$}  {:>7}  {:>6}  {:>7}\n",
            p.name, p.desired, p.queued, p.running
        ));
    }
    s
}

fn reconcile_text(r: &scalehook_core::report::ReconcileReport) -> String {
    let pools: Vec<String> = r
        .pools
        .iter()
        .map(|p| match (&p.error, p.action, p.before, p.after) {
            (Some(e), ..) => format!("{} failed: {e}", p.pool),
            (None, Some(a), Some(b), Some(after)) => format!("{} {a} {b}->{after}", p.pool),
            _ => p.pool.clone(),
        })
        .collect();
    let mut s = format!(
        "expired {} job(s), forgot {}; {}",
        r.expired,
        r.forgotten,
        pools.join(", ")
    );
    if let Some(e) = &r.ledger_error {
        s.push_str(&format!("; ledger failed: {e}"));
    }
    s
}

#[derive(Debug, Default)]
struct Tally {
    by_status: std::collections::BTreeMap<u16, usize>,
    server_errors: usize,
    unauthorized: usize,
}

impl Tally {
    fn count(&mut self, status: u16) {
        *self.by_status.entry(status).or_default() += 1;
        if status >= 500 {
            self.server_errors += 1;
        }
        if status == 401 {
            self.unauthorized += 1;
        }
    }

    fn text(&self) -> String {
        let total: usize = self.by_status.values().sum();
        let parts: Vec<String> = self
            .by_status
            .iter()
            .map(|(status, n)| format!("{n} x {status}"))
            .collect();
        format!("{total} deliveries: {}", parts.join(", "))
    }
}

fn progress_bar(len: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len as u64),
        indicatif::ProgressDrawTarget::stdout(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} deliveries ({eta} left)")
    {
        bar.set_style(style);
    }
    bar
}

/// Reads every path into deliveries, in order: files as given, directories in name order
/// (recursively). Files in a directory that are not payloads are skipped with a note; a
/// file named on the command line that is not one is an error.
pub fn collect(paths: &[PathBuf], notes: &mut Vec<String>) -> anyhow::Result<Vec<Delivery>> {
    let mut out = Vec::new();
    for path in paths {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            for file in files_under(path)? {
                match read_file(&file) {
                    Ok(mut d) => out.append(&mut d),
                    Err(FileProblem::NotPayload(why)) => {
                        notes.push(format!("skipped {}: {why}", file.display()))
                    }
                    Err(FileProblem::Fatal(e)) => return Err(e),
                }
            }
        } else {
            match read_file(path) {
                Ok(mut d) => out.append(&mut d),
                Err(FileProblem::NotPayload(why)) => {
                    anyhow::bail!("{} is not a payload: {why}", path.display())
                }
                Err(FileProblem::Fatal(e)) => return Err(e),
            }
        }
    }
    Ok(out)
}

enum FileProblem {
    /// A JSON file that is no webhook payload (e.g. the signature test vectors).
    NotPayload(String),
    Fatal(anyhow::Error),
}

/// `*.json` and `*.jsonl` files under `dir`, sorted by path.
fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", d.display()))?;
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("json" | "jsonl")
            ) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn read_file(path: &Path) -> Result<Vec<Delivery>, FileProblem> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|e| FileProblem::Fatal(anyhow::anyhow!("cannot read {shown}: {e}")))?;
    if path.extension().and_then(|e| e.to_str()) == Some("jsonl") {
        let text = String::from_utf8(bytes)
            .map_err(|_| FileProblem::Fatal(anyhow::anyhow!("{shown}: a trace must be UTF-8")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let trace = parse_trace(&text, &shown, base).map_err(|e| FileProblem::Fatal(e.into()))?;
        return Ok(trace
            .into_iter()
            .map(|t| Delivery {
                file: shown.clone(),
                line: Some(t.line),
                event: t.event,
                delivery: t.delivery.unwrap_or_else(new_delivery_id),
                body: t.body,
            })
            .collect());
    }
    let payload = classify(&bytes).map_err(FileProblem::NotPayload)?;
    Ok(vec![Delivery {
        file: shown,
        line: None,
        event: payload.event,
        delivery: payload.delivery.unwrap_or_else(new_delivery_id),
        body: payload.body,
    }])
}

/// A payload file's event, (captured) delivery id and exact body.
#[derive(Debug, PartialEq, Eq)]
pub struct Payload {
    pub event: String,
    pub delivery: Option<String>,
    pub body: Vec<u8>,
}

/// Infers the event of a payload file: `zen` + `hook_id` is a ping, a `workflow_job` key a
/// workflow_job; a delivery capture (`headers` + `body_raw_base64`) is sent as captured.
pub fn classify(bytes: &[u8]) -> Result<Payload, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON ({e})"))?;
    let Some(object) = value.as_object() else {
        return Err("not a JSON object".into());
    };
    if let (Some(headers), Some(raw)) = (
        object.get("headers").and_then(|h| h.as_object()),
        object.get("body_raw_base64").and_then(|b| b.as_str()),
    ) {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_str())
                .map(str::to_string)
        };
        let event = header(EVENT_HEADER)
            .ok_or_else(|| "a delivery capture without an x-github-event header".to_string())?;
        let body = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|e| format!("body_raw_base64 is not base64 ({e})"))?;
        return Ok(Payload {
            event,
            delivery: header(DELIVERY_HEADER),
            body,
        });
    }
    let event = if object.contains_key("zen") && object.contains_key("hook_id") {
        "ping"
    } else if object.contains_key("workflow_job") {
        "workflow_job"
    } else {
        return Err(
            "neither a ping (zen, hook_id), a workflow_job payload, nor a delivery capture (headers, body_raw_base64)"
                .into(),
        );
    };
    Ok(Payload {
        event: event.into(),
        delivery: None,
        body: bytes.to_vec(),
    })
}

/// A fresh GUID-shaped delivery id, like GitHub's, for payloads that carry none.
fn new_delivery_id() -> String {
    // The standard library's per-process random keys are enough to keep ids distinct.
    let random = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.finish()
    };
    let (a, b) = (random(1), random(2));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            origin("http://127.0.0.1:8080/webhook"),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            origin("https://x.example/api/webhook?code=1"),
            Some("https://x.example")
        );
        assert_eq!(origin("https://x.example"), Some("https://x.example"));
        assert_eq!(origin("ftp://x/"), None);
        assert_eq!(origin("http:///webhook"), None);
    }

    #[test]
    fn classifies_payloads() {
        let ping = classify(br#"{"zen":"z","hook_id":1}"#).expect("ping");
        assert_eq!(ping.event, "ping");
        let job = classify(br#"{"action":"queued","workflow_job":{}}"#).expect("job");
        assert_eq!(job.event, "workflow_job");
        assert_eq!(job.body, br#"{"action":"queued","workflow_job":{}}"#);
        let capture = classify(
            br#"{"headers":{"X-GitHub-Event":"workflow_run","x-github-delivery":"d-1"},"body_raw_base64":"e30="}"#,
        )
        .expect("capture");
        assert_eq!(
            capture,
            Payload {
                event: "workflow_run".into(),
                delivery: Some("d-1".into()),
                body: b"{}".to_vec()
            }
        );
        assert!(classify(b"[1]").is_err());
        assert!(classify(b"{").is_err());
        assert!(classify(br#"{"secret":"x"}"#).is_err());
    }

    #[test]
    fn delivery_ids_are_guid_shaped_and_distinct() {
        let (a, b) = (new_delivery_id(), new_delivery_id());
        assert_ne!(a, b);
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, vec![8, 4, 4, 4, 12], "{a}");
    }
}
