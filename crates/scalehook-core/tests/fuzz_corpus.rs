//! The fuzz targets' bodies (`fuzz/src/lib.rs`) as plain tests, so every `cargo test` runs
//! each target over its seed corpus (made from `fixtures/`) and over every input kept in
//! `fuzz/regressions/<target>/` (crashes found so far, fixed, and kept). The libFuzzer runs
//! themselves are `make fuzz-smoke` (in `make test`) and `make fuzz` (see mk/reliability.mk).

#[path = "../../../fuzz/src/lib.rs"]
mod bodies;

use std::collections::BTreeMap;

fn target(name: &str) -> fn(&[u8]) {
    bodies::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no fuzz target named {name}"))
}

#[test]
fn every_target_passes_its_seed_corpus() {
    let seeds = bodies::seeds(&bodies::fixtures_dir()).expect("fixtures readable");
    let mut per_target: BTreeMap<&str, usize> = BTreeMap::new();
    for seed in &seeds {
        target(seed.target)(&seed.data);
        *per_target.entry(seed.target).or_default() += 1;
    }
    for (name, _) in bodies::TARGETS {
        assert!(
            per_target.get(name).copied().unwrap_or(0) >= 3,
            "target {name} has too few seeds: {per_target:?}"
        );
    }
}

#[test]
fn every_kept_regression_input_passes() {
    let root = bodies::fixtures_dir().join("../fuzz/regressions");
    let mut ran = 0;
    for dir in std::fs::read_dir(&root).expect("fuzz/regressions") {
        let dir = dir.expect("entry").path();
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("target folder name")
            .to_string();
        let body = target(&name);
        for file in std::fs::read_dir(&dir).expect("target folder") {
            let file = file.expect("entry").path();
            body(&std::fs::read(&file).expect("regression input"));
            ran += 1;
        }
    }
    assert!(ran > 0, "no regression inputs under {}", root.display());
}

/// The seeds really reach past verification: a signed fixture is handled, and the same
/// body with a wrong signature is refused (so the `service` seeds test the deep path).
#[test]
fn service_seed_format_signs_and_routes() {
    let seeds = bodies::seeds(&bodies::fixtures_dir()).expect("fixtures readable");
    let queued = seeds
        .iter()
        .find(|s| s.target == "service" && s.name == "workflow_job.queued.octokit.json")
        .expect("queued seed");
    let requests = bodies::parse_requests(&queued.data);
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    let secrets = scalehook_core::WebhookSecrets::new([bodies::CURRENT_SECRET]).expect("secret");
    let header = r
        .headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    assert_eq!(secrets.verify(header, &r.body), Ok(()));
    let bad = seeds
        .iter()
        .find(|s| s.name == "bad-signature")
        .expect("bad seed");
    let bad = &bodies::parse_requests(&bad.data)[0];
    let header = bad
        .headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    assert!(secrets.verify(header, &bad.body).is_err());
}

/// Not a check: `make fuzz-corpus` runs it to write the seeds where libFuzzer reads its
/// corpus (`fuzz/corpus/<target>/seed-<name>`), reusing this already-built test binary.
#[test]
#[ignore = "writes fuzz/corpus; run by make fuzz-corpus"]
fn write_seed_corpus() {
    let fixtures = bodies::fixtures_dir();
    let corpus = fixtures.join("../fuzz/corpus");
    let seeds = bodies::seeds(&fixtures).expect("fixtures readable");
    for seed in &seeds {
        let dir = corpus.join(seed.target);
        std::fs::create_dir_all(&dir).expect("corpus folder");
        std::fs::write(dir.join(format!("seed-{}", seed.name)), &seed.data).expect("seed");
    }
    println!("{} seeds into {}", seeds.len(), corpus.display());
}
