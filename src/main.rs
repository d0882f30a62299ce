//! The `authkeys` binary: parse arguments, run one command, exit 0 or report the failure
//! (`cli::report`: one redacted line, or JSON, and an exit status saying what kind it was).

#![forbid(unsafe_code)]

mod cli;

use clap::Parser;
use cli::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return cli::report::usage(&err),
    };
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => cli::report::failure(&err),
    }
}
