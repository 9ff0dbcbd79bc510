//! Azurite's Table service (the real emulator, from npm) on a free loopback port, one per
//! test, stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Azurite's well-known development account and key (public, documented by Azurite).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    child: Child,
    pub port: u16,
}

impl Azurite {
    /// The `azurite-table` binary: `$SCALEHOOK_AZURITE_TABLE` (exported by mk/azure.mk),
    /// else `.tools/azurite/node_modules/.bin/azurite-table` under the workspace root.
    pub fn binary() -> PathBuf {
        if let Ok(p) = std::env::var("SCALEHOOK_AZURITE_TABLE") {
            if !p.is_empty() {
                return PathBuf::from(p);
            }
        }
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../.tools/azurite/node_modules/.bin/azurite-table")
    }

    pub fn start() -> Azurite {
        let bin = Self::binary();
        assert!(
            bin.exists(),
            "azurite-table not found at {}: run `make test-deps` (or `make azure-deps`) first",
            bin.display()
        );
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .args(["--tableHost", "127.0.0.1", "--tablePort"])
                .arg(port.to_string())
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
                if line.contains("successfully started") {
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
        panic!("azurite-table did not start: {last}");
    }

    /// The account's table endpoint (path-style, as Azurite serves it).
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

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
