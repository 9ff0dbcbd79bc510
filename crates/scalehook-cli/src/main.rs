//! `scalehook`: the local server, replay, sign and simulate commands.

mod cli;
mod history;
mod logging;
mod replay;
mod serve;
mod setup;
mod simulate;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(matches!(cli.command, Command::Serve(_)));
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Sign(args) => setup::sign(args),
        Command::Simulate(args) => simulate::run(args).map(|()| ExitCode::SUCCESS),
        Command::History(args) => history::run(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scalehook: {e:#}");
            ExitCode::FAILURE
        }
    }
}
