//! The `authkeys` binary: parse arguments, run one command, exit 0 or print one error line
//! (the error and every cause under it, redacted).

#![forbid(unsafe_code)]

mod cli;

use authkeys::ops;
use clap::Parser;
use cli::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return cli::usage_error(&err),
    };
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("authkeys: error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// `err` and each `source()` under it, joined by ": ", with anything shaped like a token
/// redacted (a message may quote user input).
fn one_line(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        line.push_str(": ");
        line.push_str(&err.to_string());
        cause = err.source();
    }
    ops::redact_secrets(&line)
}
