//! The `authkeys` binary: parse arguments, run one command, exit 0 or print one error line.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = authkeys::cli::Cli::parse();
    match authkeys::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("authkeys: error: {err}");
            ExitCode::FAILURE
        }
    }
}
