//! `scalehook serve` after a replay over HTTP: `/metrics` has the job SLI and delivery
//! latency histograms filled in, and the exposition parses with Prometheus's own parser
//! (`promtool check metrics`; required when `SCALEHOOK_PROMTOOL` names it, as `make test`
//! does, else used when `promtool` is on PATH).

use scalehook_e2e::{replay, Server};
use std::io::Write as _;
use std::process::{Command, Stdio};

/// The value of the one sample `series` (exact name and labels) in `text`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .expect("a number")
}

#[test]
fn replayed_lifecycle_fills_the_histograms_and_parses() {
    let server = Server::start(None);
    let r = replay(&[
        "--url",
        &server.url,
        "fixtures/traces/scenarios/lifecycle.jsonl",
    ]);
    assert!(r.output.status.success(), "{r:?}");
    let (code, text) = server.get("/metrics");
    assert_eq!(code, 200);

    // Two jobs went queued -> in_progress -> completed: each measured once, despite the
    // trace's duplicate queued and completed and its out-of-order third job.
    let pool = "{pool=\"linux-x64\"}";
    assert_eq!(
        sample(
            &text,
            &format!("scalehook_job_queue_wait_seconds_count{pool}")
        ),
        2.0
    );
    assert_eq!(
        sample(&text, &format!("scalehook_job_run_seconds_count{pool}")),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "scalehook_job_queue_wait_seconds_bucket{pool=\"linux-x64\",le=\"+Inf\"}"
        ),
        2.0
    );
    let deliveries = r.deliveries.len() as f64;
    assert!(deliveries >= 10.0);
    assert_eq!(
        sample(&text, "scalehook_delivery_duration_seconds_count"),
        deliveries
    );
    assert_eq!(
        sample(
            &text,
            "scalehook_delivery_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        deliveries
    );
    assert!(text.contains("# TYPE scalehook_job_queue_wait_seconds histogram"));

    let promtool = match std::env::var("SCALEHOOK_PROMTOOL") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => Command::new("promtool")
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| "promtool".to_string()),
    };
    let Some(promtool) = promtool else {
        eprintln!("promtool not found: the exposition was not checked by Prometheus's parser");
        return;
    };
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {promtool}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the exposition");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
