//! The command-line interface: `serve`, the machine commands (`login`, `whoami`, `logout`)
//! and the admin commands. Client commands talk to a server over HTTP only.

mod admin;
pub mod args;
mod client;
mod credentials;
mod output;
mod serve;
mod session;

pub use args::Cli;
use args::Command;
use std::fmt;

/// A failure to report as one line on stderr, with a non-zero exit status.
#[derive(Debug)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::token::redact_secrets(&self.0))
    }
}

impl std::error::Error for CliError {}

pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Login(args) => session::login(args),
        Command::Whoami(output) => session::whoami(&output),
        Command::Logout => session::logout(),
        Command::Apps(command) => admin::apps(command),
        Command::Keys(command) => admin::keys(command),
        Command::Machines(command) => admin::machines(command),
    }
}
