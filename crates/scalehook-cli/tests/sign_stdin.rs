//! The built `scalehook` binary signs a body read from stdin.
//!
//! Being an integration test of this crate also makes `cargo test` build the `scalehook`
//! executable itself, which the end-to-end tests in `tests/` (package `scalehook-e2e`) then
//! run without building it a second time.

use std::io::Write as _;
use std::process::{Command, Stdio};

#[test]
fn sign_reads_the_body_from_stdin() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_scalehook"))
        .args(["sign", "--secret", "It's a Secret to Everybody", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn scalehook");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"Hello, World!")
        .expect("write body");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // GitHub's documented example ("Validating webhook deliveries").
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17\n"
    );
}
