//! Azurite's Blob service (the real emulator, from the same npm package as azurite-table)
//! on a free loopback port, one per test, stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::azurite::ACCOUNT;

pub struct AzuriteBlob {
    child: Child,
    pub port: u16,
}

impl AzuriteBlob {
    /// `azurite-blob`, next to the `azurite-table` the table tests use.
    pub fn binary() -> PathBuf {
        super::azurite::Azurite::binary().with_file_name("azurite-blob")
    }

    pub fn start() -> AzuriteBlob {
        let bin = Self::binary();
        assert!(
            bin.exists(),
            "azurite-blob not found at {}: run `make test-deps` (or `make azure-deps`) first",
            bin.display()
        );
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .args(["--blobHost", "127.0.0.1", "--blobPort"])
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
                if line.contains("successfully listens") || line.contains("successfully started") {
                    started = true;
                    break;
                }
                last = line;
            }
            std::thread::spawn(move || lines.for_each(drop));
            if started && wait_listening(port) {
                return AzuriteBlob { child, port };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("azurite-blob did not start: {last}");
    }

    /// The account's blob endpoint (path-style, as Azurite serves it).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }
}

impl Drop for AzuriteBlob {
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
