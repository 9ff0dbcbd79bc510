//! The command line: every command and flag of `scalehook`, as `--help` shows them.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

const ABOUT: &str =
    "scalehook: autoscale GitHub Actions self-hosted runners from workflow_job webhooks.

Runs scalehook's real delivery code offline (local fleet, in-memory ledger), replays
payloads and traces against it or against a deployed function, and signs bodies.

Secrets come only from the environment: SCALEHOOK_WEBHOOK_SECRET (and
SCALEHOOK_WEBHOOK_SECRET_PREVIOUS during a rotation). Configuration: --config FILE, else
SCALEHOOK_CONFIG_TOML (inline TOML), else SCALEHOOK_CONFIG (a path), else the embedded
default (pools linux-x64 and k8s, local fleets). Logs: one JSON line per event on stderr,
filtered by RUST_LOG (default: info for serve, warn otherwise).";

#[derive(Debug, Parser)]
#[command(name = "scalehook", version, about = ABOUT, long_about = ABOUT)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the webhook locally: POST /webhook, GET /healthz, GET /metrics, GET /status.
    ///
    /// Every pool runs on the local (simulated) fleet with an in-memory ledger: the same
    /// code path as the cloud adapters, nothing leaves the machine. A pool with a cloud
    /// target (aws_asg or azure_vmss) is refused: deploy the Lambda or Azure Functions
    /// adapter for those, or remove the target to simulate the pool locally. Refuses to
    /// start without SCALEHOOK_WEBHOOK_SECRET. Stops gracefully on SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Deliver payload files (*.json) and traces (*.jsonl), signed, and summarize.
    ///
    /// Without --url, in process against a fresh service built from the configuration
    /// (local fleet, in-memory ledger), exactly as `scalehook serve` would handle them.
    /// With --url, POSTed to that webhook URL; the summary then comes from GET /status on
    /// the URL's origin. Directories are read recursively in path order: *.json payloads and *.jsonl
    /// traces, skipping (with a note) JSON files that are not payloads. Bodies are signed
    /// with SCALEHOOK_WEBHOOK_SECRET (required with --url; in process, a throwaway secret
    /// when it is not set). Exits 1 when a delivery got a 5xx (a cloud
    /// dependency failed) or a 401 (the server has another secret).
    Replay(ReplayArgs),
    /// Print the X-Hub-Signature-256 header value (sha256=...) for a body.
    ///
    /// Signs the file's bytes exactly as they are, with the same code that verifies
    /// deliveries. Job times are not moved (the signature must match the bytes you send):
    /// a workflow_job older than the ledger's retention is refused (202) as a replay; use
    /// `replay --url`, which re-stamps them, to send captured payloads.
    Sign(SignArgs),
    /// Replay a timed trace against simulated instances that take time to boot and a
    /// simulated GitHub; report queue wait, interrupted and stranded jobs, idle
    /// instance-minutes, peak capacity and cost, per policy.
    Simulate(SimulateArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML); default: SCALEHOOK_CONFIG_TOML, SCALEHOOK_CONFIG, else
    /// the embedded default.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on. Port 0 picks a free port (the address is printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Run a reconcile pass every SECONDS (expire stale jobs, converge every pool), like
    /// the scheduled reconcile of the cloud adapters. Default: never.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub reconcile_every: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Configuration file (TOML) for in-process replay; default: SCALEHOOK_CONFIG_TOML,
    /// SCALEHOOK_CONFIG, else the embedded default. Not used with --url.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// POST the deliveries to this webhook URL (e.g. http://127.0.0.1:8080/webhook)
    /// instead of handling them in process.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// After the deliveries, run one reconcile pass (in process only; a server
    /// reconciles on its own schedule, see `serve --reconcile-every`).
    #[arg(long, conflicts_with = "url")]
    pub reconcile: bool,
    /// Print one JSON object per delivery, then {"summary": {"pools": [...]}}.
    #[arg(long)]
    pub json: bool,
    /// Send workflow_job payloads with their job times (created_at, started_at,
    /// completed_at) as captured. By default they are moved forward together so that the
    /// newest is now, before signing: scalehook refuses (202) a job older than the ledger's
    /// retention as a replay, and captured payloads are usually older.
    #[arg(long)]
    pub keep_times: bool,
    /// Payload files (*.json), traces (*.jsonl) or directories of them.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The webhook secret; default: SCALEHOOK_WEBHOOK_SECRET. Mind that a secret on a
    /// command line is visible to other local users and kept in shell history.
    #[arg(long, value_name = "S")]
    pub secret: Option<String>,
    /// The body to sign, byte for byte ("-" reads stdin).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Configuration file (TOML); default: SCALEHOOK_CONFIG_TOML, SCALEHOOK_CONFIG, else
    /// the embedded default.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The timed trace (*.jsonl with an "at" time on every line).
    #[arg(value_name = "TRACE")]
    pub trace: PathBuf,
    /// Seconds a new instance takes to boot and register its runner.
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub boot_seconds: u64,
    /// Write a chart of capacity and demand over time to FILE (SVG).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Price of one instance-hour, to put a cost on idle capacity.
    #[arg(long, value_name = "PRICE")]
    pub price_per_hour: Option<f64>,
    /// How runners live: persistent (one runner takes job after job) or ephemeral (one job
    /// each, then the runner exits; sets every pool `ephemeral = true`).
    #[arg(long, value_name = "MODE", value_enum, default_value_t = RunnerMode::Persistent)]
    pub runners: RunnerMode,
    /// Probability (0 to 1) that GitHub fails to deliver a webhook delivery; a lost
    /// delivery can be redelivered by scalehook with a GitHub App.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub lose_deliveries: f64,
    /// Seconds from GitHub assigning a job to a runner to the in_progress delivery
    /// reaching scalehook.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub delivery_delay_seconds: u64,
    /// Seed of GitHub's random choices (which idle runner takes a job, which deliveries
    /// are lost): the same seed gives the same report.
    #[arg(long, value_name = "N", default_value_t = scalehook_sim::DEFAULT_SEED)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--runners`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunnerMode {
    Persistent,
    Ephemeral,
}
