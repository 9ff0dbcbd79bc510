//! Azurite (the real Storage emulator, from npm): its Table or Blob service on a free
//! loopback port, one per test, stopped when dropped.
#![allow(dead_code)] // each test binary uses one service or the other

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Azurite's well-known development account and key (public, documented by Azurite).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Which Azurite service: each is its own binary (`azurite-table`, `azurite-blob`) with its
/// own `--<service>Host`/`--<service>Port` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Table,
    Blob,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Table => "table",
            Service::Blob => "blob",
        }
    }

    /// `azurite-<service>`: next to `$SCALEHOOK_AZURITE_TABLE` (exported by mk/azure.mk),
    /// else under `.tools/azurite/node_modules/.bin/` in the workspace root.
    pub fn binary(self) -> PathBuf {
        let table = match std::env::var("SCALEHOOK_AZURITE_TABLE") {
            Ok(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../.tools/azurite/node_modules/.bin/azurite-table"),
        };
        table.with_file_name(format!("azurite-{}", self.name()))
    }
}

pub struct Azurite {
    child: Child,
    pub port: u16,
}

impl Azurite {
    /// The Table service.
    pub fn start() -> Azurite {
        Self::start_service(Service::Table)
    }

    pub fn start_service(service: Service) -> Azurite {
        let bin = service.binary();
        assert!(
            bin.exists(),
            "{} not found: run `make test-deps` (or `make azure-deps`) first",
            bin.display()
        );
        let name = service.name();
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .args([format!("--{name}Host"), "127.0.0.1".into()])
                .args([format!("--{name}Port"), port.to_string()])
                .args(["--inMemoryPersistence", "--disableTelemetry", "--silent"])
                .current_dir(std::env::temp_dir())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let stdout = child.stdout.take().expect("stdout");
            let mut started = false;
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                // Table: "... successfully started"; Blob: "... successfully listens".
                if line.contains("successfully started") || line.contains("successfully listens") {
                    started = true;
                    break;
                }
                last = line;
            }
            // Keep draining so Azurite never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            if started && wait_listening(port) {
                return Azurite { child, port };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("azurite-{name} did not start: {last}");
    }

    /// The account's endpoint (path-style, as Azurite serves it).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (for any local server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Whether the port accepts connections within 20 s (a bound against a hung start-up only).
fn wait_listening(port: u16) -> bool {
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
