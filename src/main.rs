//! The `authkeys` binary: parse arguments, run one command, exit 0 or print one error line.

mod cli;

use clap::Parser;
use cli::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return cli::usage_error(&err),
    };
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("authkeys: error: {err}");
            ExitCode::FAILURE
        }
    }
}
