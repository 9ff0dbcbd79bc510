//! scalehook on AWS: the Lambda adapter (binary `bootstrap`), the Auto Scaling Group
//! [`fleet::AsgFleet`] and the DynamoDB [`ledger::DynamoLedger`]. Transport only: every
//! decision is the core's (`scalehook-core`).

pub mod app;
pub mod fleet;
pub mod lambda;
pub mod ledger;
pub mod provision;
pub mod sdk;
pub mod secrets;

pub use app::{Settings, StartupError};
pub use fleet::AsgFleet;
pub use ledger::DynamoLedger;
