//! scalehook's core: everything that decides, nothing that talks to a cloud.
//!
//! The flow of one delivery is [`service::Service::handle`]: verify the signature
//! ([`signature`]), parse the event ([`event`]), route the job to a pool
//! ([`config::Config::route`]), record the job's transition in the [`ledger::Ledger`],
//! decide with the pure [`policy::decide`], act on the [`fleet::Fleet`], and answer.
//! Adapters (Lambda, Azure Functions, the local server) build a `Service` and translate
//! their transport to [`service::Service::handle`] and [`service::Service::reconcile`].

pub mod clock;
pub mod config;
pub mod event;
pub mod fleet;
pub mod github;
pub mod housekeeping;
pub mod interruption;
pub mod ledger;
pub mod metrics;
pub mod minted;
pub mod overflow;
pub mod policy;
pub mod provision;
pub mod report;
pub mod reroute;
pub mod service;
pub mod signature;
pub mod sleep;
pub mod trace;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Capacity, Config, FleetTarget, GitHubConfig, PoolConfig, RunnerScope};
pub use fleet::{Fleet, FleetError, FleetState, Instance, LocalFleet};
pub use github::{GitHub, GitHubError, LocalGitHub, NoGitHub, Runner, RunnerRemoval};
pub use ledger::{JobState, Ledger, LedgerError, MemoryLedger, PoolLedger, Recorded, Transition};
pub use report::{Answer, DeliveryReport, Outcome, ReconcileReport};
pub use service::{LogFormat, Service};
pub use signature::{
    looks_like_unresolved_reference, refuse_unresolved_reference, SecretsError, SignatureError,
    UnresolvedReference, WebhookSecrets,
};
pub use sleep::{RecordingSleeper, Sleeper, TokioSleeper};
