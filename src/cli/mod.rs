//! The command-line interface: `serve`, the machine commands (`login`, `whoami`, `logout`)
//! and the admin commands. Client commands talk to a server over HTTP only.

mod admin;
pub mod args;
mod client;
mod credentials;
mod output;
mod scan;
mod serve;
mod session;

pub use args::Cli;
use args::Command;
use authkeys::TokenKind;
use authkeys::{Database, StartError, ops};
use output::say;
use std::process::ExitCode;

/// A failure to report as one line on stderr, with a non-zero exit status. `main` prints it
/// with its whole `source()` chain, redacted.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A mistake or state the message alone explains.
    #[error("{0}")]
    Message(String),
    /// `context` failed because of an I/O or decoding error underneath.
    #[error("{context}")]
    Caused {
        context: String,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server could not start, or an operation on its database failed.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A request to a server failed.
    #[error(transparent)]
    Request(#[from] client::RequestError),
}

impl CliError {
    fn caused(
        context: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> CliError {
        CliError::Caused {
            context: context.into(),
            cause: cause.into(),
        }
    }
}

/// Runs one command. `scan` chooses its own exit status (found, none, error); every other
/// command succeeds or fails.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Scan(args) => Ok(scan::scan(&args)),
        command => run_command(command).map(|()| ExitCode::SUCCESS),
    }
}

fn run_command(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve(args) => {
            // Only the server logs. Client commands stay quiet: an HTTP library's trace output
            // would include the Authorization header.
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
                .init();
            serve::serve(args)
        }
        Command::Login(args) => session::login(args),
        Command::Whoami(output) => session::whoami(&output),
        Command::Logout => session::logout(),
        Command::Apps(command) => admin::apps(command),
        Command::Keys(command) => admin::keys(command),
        Command::Machines(command) => admin::machines(command),
        Command::Backup(args) => backup(&args),
        Command::RotateAdminToken(args) => {
            let file =
                ops::rotate_admin_token(&Database::from_arg(&args.db)).map_err(CliError::from)?;
            say!(
                "wrote a new admin token to {}; restart the server to use it",
                file.display()
            );
            Ok(())
        }
        Command::GenerateKey => {
            say!("{}", ops::generate_token(TokenKind::AuthKey).expose());
            Ok(())
        }
        Command::Scan(_) => unreachable!("`run` runs scan itself"),
    }
}

/// `authkeys backup --db PATH OUT`
fn backup(args: &args::BackupArgs) -> Result<(), CliError> {
    let Database::File(source) = Database::from_arg(&args.db) else {
        return Err(CliError::Message(
            "a :memory: database lives inside its server process and cannot be backed up".into(),
        ));
    };
    let done = ops::backup(&source, &args.out).map_err(CliError::from)?;
    say!(
        "backed up {} to {} ({} bytes)",
        source.display(),
        args.out.display(),
        done.bytes
    );
    Ok(())
}

/// Reports a command-line mistake. Help and version go to stdout with status 0; a usage error
/// becomes one redacted line (a key typed without `--auth-key` must not be echoed) and status 2.
pub fn usage_error(err: &clap::Error) -> ExitCode {
    if !err.use_stderr() {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    let rendered = err.render().to_string();
    let first_line = rendered.lines().next().unwrap_or("invalid arguments");
    let message = first_line.strip_prefix("error: ").unwrap_or(first_line);
    eprintln!(
        "authkeys: error: {}; see `authkeys --help`",
        ops::redact_secrets(message)
    );
    ExitCode::from(2)
}
