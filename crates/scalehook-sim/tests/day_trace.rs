//! The generated day (`fixtures/traces/day/day.jsonl`): the shape the generator promises,
//! and the simulation's invariants and orderings on it (exact figures are in the docs; they
//! move whenever the core policy does, so they are not pinned here).

mod common;

use scalehook_sim::{simulate, Policy, SimOptions, Work, Workload};
use std::path::PathBuf;

fn day() -> Workload {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/traces/day/day.jsonl");
    let size = std::fs::metadata(&path).expect("day trace exists").len();
    assert!(size < 2 * 1024 * 1024, "day trace is {size} bytes");
    Workload::from_file(&path).expect("day trace reads")
}

#[test]
fn the_day_has_the_promised_shape() {
    let w = day();
    assert!(
        (500..=2000).contains(&w.jobs.len()),
        "{} jobs",
        w.jobs.len()
    );
    assert_eq!(w.incomplete_jobs, 0);
    // A day, starting at midnight with the nightly build.
    assert_eq!(w.start % 86_400, 0);
    assert!(w.end - w.start > 23 * 3600);
    let runs: Vec<u64> = w
        .jobs
        .iter()
        .filter_map(|j| match j.work {
            Work::Runs(s) => Some(s),
            Work::CancelledAt(_) => None,
        })
        .collect();
    let long = runs.iter().filter(|&&s| s >= 3600).count();
    assert!((3..=8).contains(&long), "{long} long jobs");
    let typical = runs.iter().filter(|&&s| (120..=900).contains(&s)).count();
    assert!(typical * 10 >= runs.len() * 8, "most jobs run 2-15 min");
    let cancelled = w.jobs.len() - runs.len();
    assert!(cancelled > 0, "some jobs are cancelled before they start");
    // Busy working hours, quiet nights.
    let in_hours = |a: u64, b: u64| {
        w.jobs
            .iter()
            .filter(|j| (a * 3600..b * 3600).contains(&(j.arrival - w.start)))
            .count()
    };
    assert!(
        in_hours(9, 18) > 10 * in_hours(0, 7),
        "working hours dominate"
    );
}

#[tokio::test]
async fn scalehook_on_the_day() {
    let config = common::config();
    let report = simulate(&config, day(), &SimOptions::default())
        .await
        .expect("simulates");
    assert!(report.ignored_jobs > 0, "ubuntu-latest jobs are ignored");
    assert_eq!(report.pools.len(), 2);
    for pool in &report.pools {
        let [scalehook, cpu, fixed] = [Policy::Scalehook, Policy::CpuThreshold, Policy::FixedSize]
            .map(|p| pool.policy(p).expect("every policy reported"));
        for f in [scalehook, cpu, fixed] {
            // Scale-in never removes a busy runner, every job is served.
            assert_eq!(f.interrupted, 0, "{}: {f:?}", pool.pool);
            assert_eq!(f.never_started, 0, "{}: {f:?}", pool.pool);
            assert_eq!(f.jobs, scalehook.jobs, "same job stream");
            assert!(f.peak_capacity <= pool.max);
            assert_eq!(f.series.len(), scalehook.series.len(), "same window");
        }
        // The orderings the comparison exists to show.
        assert!(
            scalehook.queue_wait_secs.p95 < cpu.queue_wait_secs.p95,
            "{}: webhook scaling reacts faster than a CPU alarm",
            pool.pool
        );
        assert!(scalehook.idle_instance_minutes < cpu.idle_instance_minutes);
        assert!(scalehook.cost < cpu.cost && cpu.cost < fixed.cost);
        assert!(fixed.queue_wait_secs.mean <= scalehook.queue_wait_secs.mean);
        // Both autoscalers scale in again after the evening: the CPU alarm ends the day
        // below its peak, scalehook holds no more than the night's work and standby.
        let last = cpu.series.last().expect("samples");
        assert!(last.capacity_slots < cpu.peak_capacity * pool.runners_per_instance);
        let at_3am = scalehook
            .series
            .iter()
            .find(|s| s.at == report.window.start + 3 * 3600)
            .expect("a sample at 03:00");
        if pool.pool == "linux-x64" {
            assert_eq!(
                (at_3am.demand_slots, at_3am.capacity_slots),
                (0, pool.standby)
            );
        } else {
            // the 2-hour soak test: one job, one instance of two slots
            assert_eq!((at_3am.demand_slots, at_3am.capacity_slots), (1, 2));
        }
        // Without standby, every k8s job waits for a boot, and no longer: scalehook
        // launches on the queued delivery.
        if pool.pool == "k8s" {
            assert_eq!(scalehook.queue_wait_secs.max, report.boot_seconds);
        }
    }
    // Deterministic: the same inputs give the same report.
    let again = simulate(&config, day(), &SimOptions::default())
        .await
        .expect("simulates");
    assert_eq!(report, again);
}
