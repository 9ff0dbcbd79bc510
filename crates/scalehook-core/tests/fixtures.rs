//! The core against the real payloads and published signature vectors in `fixtures/github/`.

use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use scalehook_core::event::{Event, JobAction};
use scalehook_core::signature::{sign, SignatureError};
use scalehook_core::{Config, LocalFleet, MemoryLedger, Service, WebhookSecrets};
use std::path::PathBuf;
use std::sync::Arc;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/github")
}

fn read_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("fixture");
    serde_json::from_str(&text).expect("json")
}

#[test]
fn every_published_vector_verifies() {
    let vectors = read_json("signature-vectors.json");
    let vectors = vectors.as_array().expect("array");
    assert_eq!(vectors.len(), 6);
    for v in vectors {
        let secret = v["secret"].as_str().expect("secret");
        let payload = v["payload"].as_str().expect("payload").as_bytes();
        let sig = v["signature_256"].as_str().expect("sig");
        let secrets = WebhookSecrets::new([secret]).expect("secret");
        assert_eq!(
            secrets.verify(Some(sig), payload),
            Ok(()),
            "{}",
            v["source"]
        );
        assert_eq!(sign(secret.as_bytes(), payload), sig);
        // one flipped byte must fail
        let mut tampered = payload.to_vec();
        tampered[0] ^= 1;
        assert_eq!(
            secrets.verify(Some(sig), &tampered),
            Err(SignatureError::Mismatch)
        );
    }
}

#[test]
fn every_negative_vector_is_rejected() {
    let extra = read_json("signature-vectors.extra.json");
    for v in extra["negative_sha256"].as_array().expect("array") {
        let secrets = WebhookSecrets::new([v["secret"].as_str().expect("secret")]).expect("s");
        let payload = v["payload"].as_str().expect("payload").as_bytes();
        let result = secrets.verify(v["signature_256"].as_str(), payload);
        assert!(result.is_err(), "{}", v["why"]);
    }
    // The form-encoded vector carries only a SHA-1 signature: never a fallback.
    for v in extra["form_urlencoded_sha1_only"]
        .as_array()
        .expect("array")
    {
        let secrets = WebhookSecrets::new([v["secret"].as_str().expect("secret")]).expect("s");
        let body = v["raw_body"].as_str().expect("body").as_bytes();
        assert_eq!(
            secrets.verify(v["signature_1"].as_str(), body),
            Err(SignatureError::Malformed)
        );
    }
}

/// The real 19 KB GitHub App delivery verifies from its recorded headers, end to end.
#[tokio::test]
async fn real_delivery_capture_verifies_through_the_service() {
    let capture = read_json("delivery-capture.workflow_run.in_progress.github-app.cogni.json");
    let body = base64::engine::general_purpose::STANDARD
        .decode(capture["body_raw_base64"].as_str().expect("body"))
        .expect("base64");
    assert_eq!(body.len(), 19497);
    let vectors = read_json("signature-vectors.json");
    let secret = vectors
        .as_array()
        .expect("array")
        .iter()
        .find(|v| v.get("x_github_event").is_some())
        .and_then(|v| v["secret"].as_str())
        .expect("capture secret");
    let mut headers = HeaderMap::new();
    for (k, v) in capture["headers"].as_object().expect("headers") {
        headers.insert(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v.as_str().expect("value")).expect("value"),
        );
    }
    let service = |secret: &str| {
        Service::new(
            Config::embedded_default(),
            WebhookSecrets::new([secret]).expect("secret"),
            Arc::new(MemoryLedger::new()),
            Arc::new(LocalFleet::new()),
        )
    };
    // workflow_run is verified, then ignored
    let a = service(secret).handle(&Method::POST, &headers, &body).await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.report.event.as_deref(), Some("workflow_run"));
    assert_eq!(
        a.report.delivery.as_deref(),
        Some("16056910-a6ff-11f0-880c-569b494ebd7a")
    );
    let a = service("not the secret")
        .handle(&Method::POST, &headers, &body)
        .await;
    assert_eq!(a.status, 401);
}

#[test]
fn every_payload_parses() {
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures()).expect("dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let event = if name.starts_with("workflow_job.") {
            "workflow_job"
        } else if name.starts_with("ping.") {
            "ping"
        } else {
            continue;
        };
        let body = std::fs::read(&path).expect("read");
        let parsed = Event::parse(event, &body).unwrap_or_else(|e| panic!("{name}: {e}"));
        match (event, parsed) {
            ("ping", Event::Ping(_)) => {}
            ("workflow_job", Event::WorkflowJob(job)) => {
                assert!(job.workflow_job.id > 0, "{name}");
                let action = name.split('.').nth(1).expect("action in name");
                if action == "started" {
                    assert_eq!(job.action, JobAction::Other("started".into()));
                } else {
                    assert_eq!(job.action.as_str(), action, "{name}");
                }
            }
            (_, other) => panic!("{name}: parsed as {other:?}"),
        }
        seen += 1;
    }
    assert_eq!(seen, 14);
}

#[test]
fn job_ids_above_two_to_the_31() {
    let body =
        std::fs::read(fixtures().join("workflow_job.in_progress.with-queued-steps.octokit.json"))
            .expect("read");
    let Event::WorkflowJob(job) = Event::parse("workflow_job", &body).expect("parse") else {
        panic!("not a job")
    };
    assert_eq!(job.workflow_job.id, 14_541_957_942);
}

#[test]
fn the_2021_capture_has_no_runner_fields_and_routes() {
    let body = std::fs::read(
        fixtures().join("workflow_job.queued.self-hosted.2021-capture.philips-labs.json"),
    )
    .expect("read");
    let Event::WorkflowJob(job) = Event::parse("workflow_job", &body).expect("parse") else {
        panic!("not a job")
    };
    assert_eq!(job.workflow_job.runner(), None);
    assert_eq!(job.workflow_job.run_attempt, None);
    let config = Config::embedded_default();
    assert_eq!(
        config
            .route(&job.workflow_job.labels)
            .map(|p| p.name.as_str()),
        Some("linux-x64")
    );
}
