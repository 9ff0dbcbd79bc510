//! The command line: every command and flag of `scalehook`, as `--help` shows them.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

const ABOUT: &str =
    "scalehook: autoscale GitHub Actions self-hosted runners from workflow_job webhooks.

Runs scalehook's real delivery code offline (local fleet, in-memory ledger), replays
payloads and traces against it or against a deployed function, signs bodies, simulates a
job history under scaling policies, and reads that history from GitHub.

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
    /// Read the organisation's (or repository's) recent workflow jobs with the GitHub App
    /// and write them as a timed trace for `scalehook simulate`.
    ///
    /// Needs the configuration's [github] section and SCALEHOOK_GITHUB_APP_KEY (the App
    /// needs the Actions (read) permission), or a token (--token-env). Lists the repositories the installation sees
    /// (or the configured repository), the workflow runs created in the last --days days,
    /// and their jobs, page by page, waiting out rate limits; a progress bar on stderr.
    /// Jobs not completed yet are left out (and counted).
    History(HistoryArgs),
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Configuration file (TOML) with the [github] section; default: SCALEHOOK_CONFIG_TOML,
    /// SCALEHOOK_CONFIG, else the embedded default (which has none).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Read the workflow runs created in the last N days.
    #[arg(long, value_name = "N", default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=90))]
    pub days: u64,
    /// Where to write the trace (*.jsonl).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Read with the token in this environment variable (e.g. a fine-grained personal access
    /// token with Actions: read) instead of the GitHub App; the organisation's repositories
    /// are those the token sees. Whose jobs: --organization or --repository, else the
    /// configuration's [github] section.
    #[arg(long, value_name = "NAME")]
    pub token_env: Option<String>,
    /// With --token-env: the organisation whose jobs to read.
    #[arg(long, value_name = "ORG", requires = "token_env")]
    pub organization: Option<String>,
    /// With --token-env: the repository (owner/name) whose jobs to read.
    #[arg(long, requires = "token_env", conflicts_with = "organization")]
    pub repository: Option<String>,
    /// With --token-env: the REST API's base URL (GitHub Enterprise Server:
    /// https://HOST/api/v3); default: the configuration's, else https://api.github.com.
    #[arg(long, value_name = "URL", requires = "token_env")]
    pub api_url: Option<String>,
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
    /// How runners live in every pool: persistent (one runner takes job after job) or
    /// ephemeral (one job each, then the runner exits). Default: each pool's own
    /// `ephemeral` setting, as deployed; the report says which was used.
    #[arg(long, value_name = "MODE", value_enum)]
    pub runners: Option<RunnerMode>,
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
    /// Seconds for an instance taken from a pool's warm pool (`warm_pool = N` in the
    /// configuration) to take jobs.
    #[arg(long, value_name = "N", default_value_t = scalehook_sim::DEFAULT_WARM_BOOT_SECONDS)]
    pub warm_boot_seconds: u64,
    /// A warm (stopped) instance-hour's cost as a fraction of the price per hour (default:
    /// a stopped instance pays only its EBS volume, see docs/simulate.md).
    #[arg(long, value_name = "R", default_value_t = scalehook_sim::DEFAULT_WARM_COST_RATIO)]
    pub warm_cost_ratio: f64,
    /// Put every pool on spot (except pools named as another pool's overflow).
    #[arg(long)]
    pub spot: bool,
    /// The spot price as a fraction of the price per hour.
    #[arg(long, value_name = "R", default_value_t = scalehook_sim::DEFAULT_SPOT_PRICE_RATIO)]
    pub spot_price_ratio: f64,
    /// Spot interruptions (reclaims) per instance-hour, drawn from the seed.
    #[arg(long, value_name = "R", default_value_t = 0.0)]
    pub spot_interruptions_per_hour: f64,
    /// Probability (0 to 1) that a spot launch fails for want of capacity; the demand then
    /// spills to the pool's `overflow` pool (on-demand, within its max).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub spot_launch_failure_rate: f64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Search each pool's standby and max for the cheapest setting under which scalehook
    /// keeps the p95 queue wait at or below --target-p95-seconds (and interrupts and
    /// strands no job), and print the TOML to paste. A bounded grid of simulations of
    /// the same trace, options and seed.
    #[arg(long, requires = "target_p95_seconds", conflicts_with_all = ["svg", "json"])]
    pub suggest: bool,
    /// The p95 queue wait --suggest aims for, in seconds.
    #[arg(long, value_name = "N", requires = "suggest")]
    pub target_p95_seconds: Option<u64>,
}

/// `--runners`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunnerMode {
    Persistent,
    Ephemeral,
}
