//! The machine's own commands: `login` exchanges an auth key for a saved session; `whoami` and
//! `logout` use it.

use super::args::{LoginArgs, LogoutArgs, TimeoutArg, WhoamiArgs};
use super::auth_key;
use super::client::{Client, RequestError};
use super::credentials::{self, Credentials};
use super::output::say;
use super::{CliError, output};
use authkeys::MAX_MACHINE_NAME_CHARS;
use authkeys::Secret;
use serde_json::{Value, json};

pub fn login(args: LoginArgs) -> Result<(), CliError> {
    let auth_key = auth_key::read(args.auth_key.auth_key)?;
    // A saved file that cannot be read is replaced like one that can: there is nothing in
    // it to log out.
    let previous = credentials::load_if_any().ok().flatten();
    let client = Client::new(&args.server.server, None, &args.server.timeout);
    let machine = args.machine.or_else(host_name);
    let response = client.post(
        "/v1/auth/login",
        &json!({"auth_key": auth_key.expose(), "machine": machine}),
    )?;
    let token = response["session_token"].as_str().ok_or_else(|| {
        CliError::Message("the server's login response has no session token".into())
    })?;
    let machine = &response["machine"];
    let saved = credentials::save(&Credentials {
        server: client.base().to_string(),
        session_token: token.to_string(),
        app: output::field(machine, "app"),
        machine_id: output::field(machine, "id"),
    })?;
    // Only once the new session is saved: a failed login keeps the old one.
    let replaced = previous.map(|old| replace(old, args.keep_old, &args.server.timeout));
    if args.output.json {
        output::json(&json!({"machine": machine, "credentials": saved, "replaced": replaced}));
    } else {
        say!(
            "Logged in to {} as app {} (machine {}, {}); session saved to {}",
            client.base(),
            output::field(machine, "app"),
            output::field(machine, "id"),
            output::field(machine, "name"),
            saved.display()
        );
        if let Some(replaced) = &replaced {
            say!("{}", output::field(replaced, "message"));
        }
    }
    Ok(())
}

/// Deals with the session a new login replaced: logs it out on its server unless `keep`, and
/// says what became of it (`{"machine_id", "app", "logged_out", "message"}`). A failure here
/// does not fail the login, which has already succeeded.
fn replace(old: Credentials, keep: bool, timeout: &TimeoutArg) -> Value {
    let Credentials {
        server,
        session_token,
        app,
        machine_id,
    } = old;
    let (logged_out, message) = if keep {
        (
            false,
            format!(
                "The previous session (machine {machine_id} of app {app}) stays logged in \
                 (--keep-old); its token is no longer saved."
            ),
        )
    } else {
        let client = Client::new(&server, Some(Secret::new(session_token)), timeout);
        match client.post("/v1/auth/logout", &Value::Null) {
            Ok(_) => (
                true,
                format!("Logged out the previous session (machine {machine_id} of app {app})."),
            ),
            Err(RequestError::Api { status: 401, .. }) => (
                true,
                format!(
                    "The previous session (machine {machine_id} of app {app}) had already ended."
                ),
            ),
            Err(err) => (
                false,
                format!(
                    "The previous session (machine {machine_id} of app {app}) could not be \
                     logged out ({err}); an admin can: authkeys machines logout --app {app} \
                     {machine_id}"
                ),
            ),
        }
    };
    json!({"machine_id": machine_id, "app": app, "logged_out": logged_out, "message": message})
}

pub fn whoami(args: &WhoamiArgs) -> Result<(), CliError> {
    let saved = credentials::load()?;
    let client = Client::new(
        &saved.server,
        Some(Secret::new(saved.session_token)),
        &args.timeout,
    );
    let identity = client.get("/v1/auth/whoami").map_err(session_ended)?;
    if args.output.json {
        output::json(&identity);
        return Ok(());
    }
    let (app, machine) = (&identity["app"], &identity["machine"]);
    say!("server:    {}", client.base());
    say!(
        "app:       {} ({})",
        output::field(app, "id"),
        output::field(app, "name")
    );
    say!(
        "machine:   {} ({})",
        output::field(machine, "id"),
        output::field(machine, "name")
    );
    say!("key:       {}", output::field(machine, "key_id"));
    say!("logged in: {}", output::field(machine, "created_at"));
    say!(
        "expires:   {}",
        output::field_or(machine, "expires_at", "never")
    );
    Ok(())
}

/// `authkeys session-token`: the saved token alone on stdout, for
/// `curl -H "Authorization: Bearer $(authkeys session-token)"` through forward auth.
pub fn print_token() -> Result<(), CliError> {
    say!("{}", credentials::load()?.session_token);
    Ok(())
}

pub fn logout(args: &LogoutArgs) -> Result<(), CliError> {
    let saved = credentials::load()?;
    if args.local {
        credentials::remove()?;
        say!(
            "Forgot the saved session without telling the server: machine {} of app {} stays \
             logged in there until an admin runs `authkeys machines logout --app {} {}`.",
            saved.machine_id,
            saved.app,
            saved.app,
            saved.machine_id
        );
        return Ok(());
    }
    let client = Client::new(
        &saved.server,
        Some(Secret::new(saved.session_token)),
        &args.timeout,
    );
    // A session the server no longer knows is as logged out as it gets: forget it either way,
    // unless the server could not be reached at all.
    match client.post("/v1/auth/logout", &Value::Null) {
        Err(err @ RequestError::Unreachable { .. }) => Err(err.into()),
        Err(_) => {
            credentials::remove()?;
            say!("The session had already ended on the server; removed the saved credentials.");
            Ok(())
        }
        Ok(_) => {
            credentials::remove()?;
            say!(
                "Logged out machine {} of app {}.",
                saved.machine_id,
                saved.app
            );
            Ok(())
        }
    }
}

/// Explains a rejected saved session in terms of what the user can do about it.
fn session_ended(err: RequestError) -> CliError {
    match err {
        RequestError::Api {
            status: 401,
            code: Some(code),
            ..
        } => {
            let message = if code == "session_expired" {
                "the saved session expired (its key made it ephemeral, or it sat idle too \
                 long): run `authkeys login` again"
            } else {
                "the saved session is no longer valid (logged out, or its key was revoked): \
                 run `authkeys login`"
            };
            CliError::Rejected {
                code,
                message: message.into(),
            }
        }
        other => other.into(),
    }
}

/// This machine's host name, as a default machine name.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()?;
    let name: String = name.trim().chars().take(MAX_MACHINE_NAME_CHARS).collect();
    (!name.is_empty()).then_some(name)
}
