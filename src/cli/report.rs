//! How a failure reaches the user: one redacted line on stderr, `authkeys: error: …`, or, when
//! the command line asked for `--json`, one JSON object in the API's error shape
//! (`{"error": {"code", "message"}}`); and the exit status that says which kind of failure it
//! was (`args::EXIT_STATUS`). A usage error suggests what was probably meant and names the
//! help of the command that failed.

use super::client::RequestError;
use super::{Cli, CliError};
use authkeys::ops;
use clap::CommandFactory;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use serde_json::json;
use std::process::ExitCode;

/// Reports a command-line mistake found by clap. Help and version go to stdout with status 0;
/// a usage error becomes one redacted line (a key typed without `--auth-key` must not be
/// echoed) and status 2.
pub fn usage(err: &clap::Error) -> ExitCode {
    if !err.use_stderr() {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    let mut message = match err.kind() {
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let names: Vec<String> = failing_command()
                .1
                .get_subcommands()
                .map(|sub| sub.get_name().to_string())
                .collect();
            format!("a subcommand is needed: {}", names.join(", "))
        }
        _ => {
            let rendered = err.render().to_string();
            let first_line = rendered.lines().next().unwrap_or("invalid arguments");
            first_line
                .strip_prefix("error: ")
                .unwrap_or(first_line)
                .to_string()
        }
    };
    // clap puts these on lines of their own, after the first.
    if err.kind() == ErrorKind::MissingRequiredArgument
        && let Some(missing) = strings(err, ContextKind::InvalidArg)
    {
        message = format!("missing {}", missing.join(", "));
    }
    if let Some(valid) = strings(err, ContextKind::ValidValue) {
        message.push_str(&format!(" (possible values: {})", valid.join(", ")));
    }
    if let Some(suggested) = strings(err, ContextKind::SuggestedSubcommand)
        .or_else(|| strings(err, ContextKind::SuggestedArg))
    {
        let quoted: Vec<String> = suggested.iter().map(|name| format!("`{name}`")).collect();
        message.push_str(&format!(" (did you mean {}?)", quoted.join(" or ")));
    }
    emit("usage", &message, true);
    ExitCode::from(2)
}

/// Reports a failed command: its message and every cause under it (as JSON, a refusal's
/// message without the code that `code` already carries).
pub fn failure(err: &CliError) -> ExitCode {
    let message = match err {
        CliError::Rejected { message, .. }
        | CliError::Request(RequestError::Api { message, .. })
            if json_requested() =>
        {
            message.clone()
        }
        _ => one_line(err),
    };
    emit(&err.code(), &message, matches!(err, CliError::Usage(_)));
    ExitCode::from(err.exit_status())
}

/// `err` and each `source()` under it, joined by ": ".
pub(super) fn one_line(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        line.push_str(": ");
        line.push_str(&err.to_string());
        cause = err.source();
    }
    line
}

/// Writes the error to stderr, redacted (a message may quote user input), pointing to the
/// failing command's help when `with_help`.
fn emit(code: &str, message: &str, with_help: bool) {
    let message = ops::redact_secrets(message);
    let help = with_help.then(|| format!("{} --help", failing_command().0.join(" ")));
    if json_requested() {
        let mut error = json!({"code": code, "message": message});
        if let Some(help) = help {
            error["help"] = help.into();
        }
        eprintln!("{}", json!({ "error": error }));
    } else {
        match help {
            Some(help) => eprintln!("authkeys: error: {message}; see `{help}`"),
            None => eprintln!("authkeys: error: {message}"),
        }
    }
}

/// A piece of clap's error context as strings, if it has any.
fn strings(err: &clap::Error, kind: ContextKind) -> Option<Vec<String>> {
    let strings = match err.get(kind)? {
        ContextValue::String(one) => vec![one.clone()],
        ContextValue::Strings(many) => many.clone(),
        _ => return None,
    };
    (!strings.is_empty()).then_some(strings)
}

/// Whether the command line asks for JSON (before any `--`): checked on the raw arguments so
/// that a command line clap refused gets its error as JSON too.
fn json_requested() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|arg| arg != "--")
        .any(|arg| arg == "--json")
}

/// The deepest command the arguments reach (`authkeys keys create`), with its names:
/// subcommand names are followed from the top while the command reached has subcommands. None
/// of those commands takes an option with a value, so every other argument there is a flag or
/// a typo.
fn failing_command() -> (Vec<String>, clap::Command) {
    let mut command = Cli::command();
    let mut path = vec!["authkeys".to_string()];
    for arg in std::env::args_os().skip(1) {
        if !command.has_subcommands() {
            break;
        }
        let arg = arg.to_string_lossy();
        if arg.starts_with('-') {
            continue;
        }
        let Some(sub) = command.find_subcommand(arg.as_ref()).cloned() else {
            break;
        };
        path.push(sub.get_name().to_string());
        command = sub;
    }
    (path, command)
}
