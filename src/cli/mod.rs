//! The command-line interface: `serve`, the machine commands (`login`, `whoami`, `logout`)
//! and the admin commands. Client commands talk to a server over HTTP only.

mod admin;
mod admin_tokens;
pub mod args;
mod audit;
mod auth_key;
mod client;
mod credentials;
mod duration;
mod oidc;
mod output;
pub mod report;
mod scan;
mod serve;
mod session;
mod webhooks;

pub use args::Cli;
use args::Command;
use authkeys::TokenKind;
use authkeys::{Database, StartError, ops};
use clap::CommandFactory;
use output::say;
use std::process::ExitCode;

/// A failure to report as one line on stderr (JSON with `--json`), with the exit status
/// `exit_status` gives. `report` prints it with its whole `source()` chain, redacted.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A mistake in the command line or its input, found before anything was sent (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A mistake or state the message alone explains.
    #[error("{0}")]
    Message(String),
    /// The server refused: its error `code`, in terms of what the user can do about it.
    #[error("{message} ({code})")]
    Rejected { code: String, message: String },
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
    /// 1 refused (or another failure), 2 usage, 3 unreachable: `args::EXIT_STATUS`.
    pub fn exit_status(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Request(client::RequestError::Unreachable { .. }) => 3,
            CliError::Message(_)
            | CliError::Rejected { .. }
            | CliError::Caused { .. }
            | CliError::Start(_)
            | CliError::Request(client::RequestError::Api { .. }) => 1,
        }
    }

    /// The `code` of the error as JSON: the server's own when it refused, else what kind of
    /// failure it was.
    pub fn code(&self) -> String {
        match self {
            CliError::Usage(_) => "usage".into(),
            CliError::Rejected { code, .. } => code.clone(),
            CliError::Request(client::RequestError::Api { code, status, .. }) => {
                code.clone().unwrap_or_else(|| format!("http_{status}"))
            }
            CliError::Request(client::RequestError::Unreachable { .. }) => "unreachable".into(),
            CliError::Message(_) | CliError::Caused { .. } | CliError::Start(_) => "failed".into(),
        }
    }

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
            // would include the Authorization header. The PostgreSQL client logs every
            // statement's parameters at debug (a token or an id pasted into a path among them):
            // it is held to info whatever RUST_LOG says.
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
                .filter_module("tokio_postgres", log::LevelFilter::Info)
                .filter_module("postgres", log::LevelFilter::Info)
                .init();
            serve::serve(args)
        }
        Command::Login(args) => session::login(args),
        Command::Whoami(args) => session::whoami(&args),
        Command::Logout(args) => session::logout(&args),
        Command::SessionToken => session::print_token(),
        Command::Apps(command) => admin::apps(command),
        Command::Keys(command) => admin::keys(command),
        Command::Machines(command) => admin::machines(command),
        Command::AdminTokens(command) => admin_tokens::run(command),
        Command::Audit(args) => audit::run(args),
        Command::Webhooks(command) => webhooks::run(command),
        Command::TrustPolicies(command) => oidc::trust_policies(command),
        Command::DevOidcIssuer(args) => oidc::dev_issuer(args),
        Command::Backup(args) => backup(&args),
        Command::Migrate(args) => migrate(&args),
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
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "authkeys", &mut script);
            say!("{}", String::from_utf8_lossy(&script).trim_end());
            Ok(())
        }
        Command::Man { out_dir } => man(out_dir.as_deref()),
    }
}

/// `authkeys man`: the page for `authkeys` on stdout, or every command's page into a directory.
fn man(out_dir: Option<&std::path::Path>) -> Result<(), CliError> {
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), dir))
                .map_err(|err| CliError::caused(format!("writing to {}", dir.display()), err))?;
            say!("wrote the man pages to {}", dir.display());
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .expect("rendering into memory cannot fail");
            say!("{}", String::from_utf8_lossy(&page).trim_end());
        }
    }
    Ok(())
}

/// `authkeys migrate --from FILE --to postgres://…`: the URL's password is never printed.
fn migrate(args: &args::MigrateArgs) -> Result<(), CliError> {
    let Database::Postgres(target) = Database::from_arg(&args.to) else {
        return Err(CliError::Usage(
            "--to must be a postgres:// or postgresql:// URL".into(),
        ));
    };
    let Database::File(source) = Database::from_arg(&args.from) else {
        return Err(CliError::Usage(
            "--from must be a SQLite database file".into(),
        ));
    };
    let migrated = ops::migrate_to_postgres(&source, &target).map_err(CliError::from)?;
    let counts: Vec<String> = migrated
        .tables
        .iter()
        .map(|(table, rows)| format!("{table} {rows}"))
        .collect();
    say!(
        "migrated {} to {}: {}",
        source.display(),
        target,
        counts.join(", ")
    );
    Ok(())
}

/// `authkeys backup --db PATH OUT`
fn backup(args: &args::BackupArgs) -> Result<(), CliError> {
    let source = match Database::from_arg(&args.db) {
        Database::File(source) => source,
        Database::Memory => {
            return Err(CliError::Message(
                "a :memory: database lives inside its server process and cannot be backed up"
                    .into(),
            ));
        }
        Database::Postgres(_) => {
            return Err(CliError::Message(
                "authkeys backup copies a SQLite file; back a PostgreSQL database up with pg_dump"
                    .into(),
            ));
        }
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
