//! `scalehook simulate`: replays a timed trace against simulated instances that take time
//! to boot. Owned by the simulation work (issue 9, crate `scalehook-sim`); this placeholder
//! only keeps the command's interface in place until it lands.

use crate::cli::SimulateArgs;

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("`scalehook simulate` is not built yet (see issue 9)")
}
