//! scalehook on Azure Functions: a custom handler (binary `handler`) that serves the
//! forwarded webhook and the reconcile timer, a VM Scale Set [`vmss::VmssFleet`] over ARM
//! REST with the managed identity, and a Table Storage [`ledger::TableLedger`].
//!
//! Adapters translate transport and nothing else: every decision is the core's.

pub mod app;
pub mod arm;
pub mod blob;
pub mod envelope;
pub mod http;
pub mod identity;
pub mod ledger;
pub mod table;
pub mod throttle;
pub mod vmss;

pub use app::{build, router, App, StartupError};
pub use arm::{ArmBudget, ArmClient, ArmStats, ARM_API_VERSION};
pub use identity::ManagedIdentity;
pub use ledger::TableLedger;
pub use table::{TableAuth, TableClient};
pub use vmss::VmssFleet;
