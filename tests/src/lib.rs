//! Helpers for scalehook's end-to-end tests: find (and build) the `scalehook` binary, run
//! `scalehook serve` on a free port, run `scalehook replay`, and talk HTTP to the server.

use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

/// The webhook secret every test server and replay uses.
pub const SECRET: &str = "e2e-secret-not-for-production";

/// How long a server may take to announce its address (a debug build, a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound on one HTTP request of a test.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The workspace root (fixtures are relative to it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The `scalehook` binary: `SCALEHOOK_BIN` when set; else the one cargo built next to this
/// test (`cargo test --workspace` builds it first) when it is newer than every source it is
/// built from; else built now by cargo with this test's profile. Never a stale binary.
pub fn scalehook_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SCALEHOOK_BIN") {
            return PathBuf::from(bin);
        }
        match sibling_binary() {
            Some(bin) if is_fresh(&bin) => bin,
            _ => build_scalehook(),
        }
    })
}

/// `target/<profile>/scalehook`, beside `target/<profile>/deps/<this test>`.
fn sibling_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let bin = profile_dir.join(format!("scalehook{}", std::env::consts::EXE_SUFFIX));
    bin.is_file().then_some(bin)
}

/// Is `bin` newer than every source it was built from? Cargo lists them (path
/// dependencies included) in the dep-info file beside the binary, `scalehook.d`.
fn is_fresh(bin: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return false;
    };
    let Ok(dep_info) = std::fs::read_to_string(bin.with_extension("d")) else {
        return false;
    };
    // "<target>: <source> <source> ..." with spaces in paths escaped as "\ ".
    let Some((_, sources)) = dep_info.lines().next().and_then(|l| l.split_once(": ")) else {
        return false;
    };
    let sources = sources.replace("\\ ", "\u{0}");
    let mut paths: Vec<PathBuf> = sources
        .split_whitespace()
        .map(|p| PathBuf::from(p.replace('\u{0}', " ")))
        .collect();
    paths.push(workspace_root().join("Cargo.lock"));
    !paths.is_empty()
        && paths.iter().all(|p| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m <= built)
        })
}

fn build_scalehook() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args([
        "build",
        "-p",
        "scalehook-cli",
        "--bin",
        "scalehook",
        "--message-format=json-render-diagnostics",
    ]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build -p scalehook-cli (set SCALEHOOK_BIN to use a built binary)");
    assert!(out.status.success(), "cargo build -p scalehook-cli failed");
    // The executable's path from cargo's own report: right for any target dir or profile.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "scalehook")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no scalehook executable")
}

/// `scalehook` with the test secret, no configuration from the environment, run from
/// the workspace root.
pub fn scalehook() -> Command {
    let mut cmd = Command::new(scalehook_bin());
    cmd.current_dir(workspace_root())
        .env("SCALEHOOK_WEBHOOK_SECRET", SECRET)
        .env_remove("SCALEHOOK_WEBHOOK_SECRET_PREVIOUS")
        .env_remove("SCALEHOOK_CONFIG")
        .env_remove("SCALEHOOK_CONFIG_TOML")
        .env_remove("RUST_LOG");
    cmd
}

/// A running `scalehook serve` on a free port; killed on drop.
pub struct Server {
    child: Child,
    log: PathBuf,
    /// The webhook URL, `http://127.0.0.1:<port>/webhook`.
    pub url: String,
    /// `http://127.0.0.1:<port>`.
    pub origin: String,
}

impl Server {
    /// Starts the server with the embedded default config, or `config` (relative to the
    /// workspace root).
    pub fn start(config: Option<&str>) -> Server {
        Server::start_with(config, &[])
    }

    /// Like [`Server::start`], with more `serve` arguments.
    pub fn start_with(config: Option<&str>, args: &[&str]) -> Server {
        let mut cmd = scalehook();
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(args);
        if let Some(c) = config {
            cmd.args(["--config", c]);
        }
        Server::spawn(cmd)
    }

    /// Spawns a prepared `scalehook serve --listen 127.0.0.1:0 ...` command (its environment
    /// set by the caller) and waits, bounded, for the address it announces.
    pub fn spawn(mut cmd: Command) -> Server {
        let log = unique_temp_path("serve.log");
        let log_file = std::fs::File::create(&log).expect("create the server log file");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn scalehook serve");
        let stdout = child.stdout.take().expect("stdout");
        // The server prints its address on its first stdout line; wait for it, bounded.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("scalehook serve did not announce its address within {START_TIMEOUT:?}");
            }
        };
        let url = line
            .trim()
            .strip_prefix("scalehook listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from serve: {line:?}"))
            .to_string();
        let origin = url.trim_end_matches("/webhook").to_string();
        Server {
            child,
            log,
            url,
            origin,
        }
    }

    /// The server's process id (for `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server wrote to stderr so far (its JSON log lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's `scalehook::delivery` lines, parsed.
    pub fn delivery_log(&self) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "scalehook::delivery")
            .collect()
    }

    /// Sends SIGTERM and waits (bounded) for the exit; returns whether it exited cleanly.
    pub fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill -TERM {pid}");
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("scalehook serve did not stop within 10 s of SIGTERM");
    }

    /// `GET <origin><path>`: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        request(&format!("{}{path}", self.origin), "GET", &[], None)
    }

    /// `GET /status` as JSON.
    pub fn status(&self) -> Value {
        let (code, body) = self.get("/status");
        assert_eq!(code, 200, "GET /status: {body}");
        serde_json::from_str(&body).expect("status is JSON")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A path in the temp dir no other test (or test run) uses.
pub fn unique_temp_path(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("scalehook-e2e-{}-{n}-{name}", std::process::id()))
}

/// One HTTP request with full control of method, headers and body; every status is an
/// answer. Returns status and body.
pub fn request(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(HTTP_TIMEOUT))
        .build()
        .into();
    let mut req = http_request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(body.map(<[u8]>::to_vec).unwrap_or_default())
        .expect("request");
    let mut res = agent
        .run(req)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = res.status().as_u16();
    let text = res.body_mut().read_to_string().unwrap_or_default();
    (status, text)
}

fn http_request(method: &str, url: &str) -> ureq::http::request::Builder {
    ureq::http::Request::builder().method(method).uri(url)
}

/// What `scalehook replay --json` printed, parsed.
#[derive(Debug)]
pub struct Replay {
    pub deliveries: Vec<Value>,
    /// `{"pools": [...]}`.
    pub summary: Value,
    pub reconcile: Option<Value>,
    pub output: Output,
}

/// Runs `scalehook replay --json <args>` and parses its output.
pub fn replay(args: &[&str]) -> Replay {
    let output = scalehook()
        .arg("replay")
        .arg("--json")
        .args(args)
        .output()
        .expect("run scalehook replay");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut deliveries = Vec::new();
    let mut summary = None;
    let mut reconcile = None;
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("replay printed a line that is not JSON ({e}): {line}"));
        if let Some(s) = v.get("summary") {
            summary = Some(s.clone());
        } else if let Some(r) = v.get("reconcile") {
            reconcile = Some(r.clone());
        } else {
            deliveries.push(v);
        }
    }
    let summary = summary.unwrap_or_else(|| {
        panic!(
            "replay printed no summary; stdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    Replay {
        deliveries,
        summary,
        reconcile,
        output,
    }
}

/// A trace's expected summary and companion config, from its header comments
/// (`# expect: {"summary": ...}`, `# config: FILE` relative to the trace).
pub struct Scenario {
    pub path: String,
    pub expected: Value,
    pub config: Option<String>,
}

/// Every scenario trace under `fixtures/traces/scenarios/`, by name.
pub fn scenarios() -> Vec<Scenario> {
    let dir = workspace_root().join("fixtures/traces/scenarios");
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures/traces/scenarios")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).expect("read scenario");
        let rel = format!(
            "fixtures/traces/scenarios/{}",
            path.file_name().and_then(|n| n.to_str()).expect("name")
        );
        let expected = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{rel}: no `# expect:` header line"));
        let expected: Value = serde_json::from_str(expected).expect("expect line is JSON");
        let config = text
            .lines()
            .find_map(|l| l.strip_prefix("# config: "))
            .map(|c| format!("fixtures/traces/scenarios/{}", c.trim()));
        out.push(Scenario {
            path: rel,
            expected: expected["summary"].clone(),
            config,
        });
    }
    out
}
