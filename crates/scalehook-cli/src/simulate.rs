//! `scalehook simulate`: replays a timed trace against simulated instances that take time
//! to boot, under scalehook and two baselines, and reports (the `scalehook-sim` crate does
//! the work; this is the command line around it).

use crate::cli::{RunnerMode, SimulateArgs};
use crate::setup::load_config;
use anyhow::Context as _;
use scalehook_sim::{chart, simulate, Runners, SimOptions, Workload, DEFAULT_PRICE_PER_HOUR};

/// The `--json` document: the report, with where its inputs came from.
#[derive(serde::Serialize)]
struct JsonReport<'a> {
    trace: &'a str,
    config: String,
    #[serde(flatten)]
    report: &'a scalehook_sim::SimReport,
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let (config, source) = load_config(args.config.as_deref())?;
    let workload = Workload::from_file(&args.trace)?;
    let options = SimOptions {
        boot_seconds: args.boot_seconds,
        price_per_hour: args.price_per_hour.unwrap_or(DEFAULT_PRICE_PER_HOUR),
        runners: match args.runners {
            None => Runners::PerPool,
            Some(RunnerMode::Persistent) => Runners::Persistent,
            Some(RunnerMode::Ephemeral) => Runners::Ephemeral,
        },
        lose_deliveries: args.lose_deliveries,
        delivery_delay_secs: args.delivery_delay_seconds,
        seed: args.seed,
        warm_boot_seconds: args.warm_boot_seconds,
        warm_cost_ratio: args.warm_cost_ratio,
        spot: args.spot,
        spot_price_ratio: args.spot_price_ratio,
        spot_interruptions_per_hour: args.spot_interruptions_per_hour,
        spot_launch_failure_rate: args.spot_launch_failure_rate,
        ..SimOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("cannot start the async runtime")?;
    if let (true, Some(target)) = (args.suggest, args.target_p95_seconds) {
        let found = runtime.block_on(scalehook_sim::suggest::suggest(
            &config, &workload, &options, target,
        ))?;
        println!(
            "scalehook simulate --suggest: {} (config: {source})",
            args.trace.display()
        );
        print!("{}", found.toml());
        return Ok(());
    }
    let report = runtime.block_on(simulate(&config, workload, &options))?;
    if let Some(path) = &args.svg {
        let svg = chart::svg(&report)?;
        std::fs::write(path, svg)
            .with_context(|| format!("cannot write the chart to {}", path.display()))?;
        // stderr, so `--json` output stays one JSON document.
        eprintln!("chart written to {}", path.display());
    }
    let trace = args.trace.display().to_string();
    if args.json {
        let out = JsonReport {
            trace: &trace,
            config: source.to_string(),
            report: &report,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("scalehook simulate: {trace} (config: {source})");
        print!("{}", report.table());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn args(svg: Option<PathBuf>, json: bool) -> SimulateArgs {
        SimulateArgs {
            config: None,
            trace: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../fixtures/traces/sim-small.jsonl"),
            boot_seconds: 60,
            svg,
            price_per_hour: Some(0.10),
            runners: None,
            lose_deliveries: 0.0,
            delivery_delay_seconds: 0,
            seed: 1,
            warm_boot_seconds: 20,
            warm_cost_ratio: 0.033,
            spot: false,
            spot_price_ratio: 0.35,
            spot_interruptions_per_hour: 0.0,
            spot_launch_failure_rate: 0.0,
            json,
            suggest: false,
            target_p95_seconds: None,
        }
    }

    #[test]
    fn writes_the_chart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svg = dir.path().join("small.svg");
        run(args(Some(svg.clone()), true)).expect("simulates");
        let text = std::fs::read_to_string(&svg).expect("chart written");
        assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(80)]);
        for policy in [
            "scalehook",
            "scalehook-webhook-only",
            "cpu-threshold",
            "fixed-size",
        ] {
            assert!(text.contains(policy), "panel for {policy}");
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut a = args(None, false);
        a.trace = PathBuf::from("/nonexistent/trace.jsonl");
        assert!(run(a).is_err());
        let mut a = args(None, false);
        a.price_per_hour = Some(-1.0);
        let e = run(a).expect_err("negative price");
        assert!(e.to_string().contains("price"), "{e}");
        let mut a = args(None, false);
        a.lose_deliveries = 1.5;
        let e = run(a).expect_err("not a probability");
        assert!(e.to_string().contains("lost deliveries"), "{e}");
        let mut a = args(None, false);
        a.spot_interruptions_per_hour = f64::NAN;
        let e = run(a).expect_err("not a rate");
        assert!(e.to_string().contains("spot interruptions"), "{e}");
        let mut a = args(None, false);
        a.spot_price_ratio = 1.5;
        let e = run(a).expect_err("not a fraction");
        assert!(e.to_string().contains("spot price"), "{e}");
    }
}
