//! Admin commands over HTTP, authenticated by `AUTHKEYS_ADMIN_TOKEN`: apps, keys, machines.

use super::args::{AdminArgs, AppsCommand, KeysCommand, MachinesCommand};
use super::client::{Client, RequestError, segment};
use super::{CliError, output};
use crate::token::Secret;
use serde_json::{Value, json};

/// The HTTP client with the admin token. A 401 can only mean that token was refused, so it
/// says so.
struct Admin(Client);

impl Admin {
    fn get(&self, path: &str) -> Result<Value, CliError> {
        self.0.get(path).map_err(admin_refused)
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.0.post(path, body).map_err(admin_refused)
    }

    fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.0.delete(path).map_err(admin_refused)
    }
}

fn admin_refused(err: RequestError) -> CliError {
    match err {
        RequestError::Api {
            status: 401,
            code: Some(code),
            ..
        } => CliError(format!(
            "the server did not accept AUTHKEYS_ADMIN_TOKEN ({code}, HTTP 401)"
        )),
        other => other.into(),
    }
}

fn client(args: &AdminArgs) -> Result<Admin, CliError> {
    let token = std::env::var("AUTHKEYS_ADMIN_TOKEN")
        .ok()
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            CliError(
                "AUTHKEYS_ADMIN_TOKEN is not set: admin commands need the server's admin token \
                 (a generated one is in <db>.admin-token)"
                    .into(),
            )
        })?;
    Ok(Admin(Client::new(
        &args.server.server,
        Some(Secret::new(token)),
    )))
}

pub fn apps(command: AppsCommand) -> Result<(), CliError> {
    match command {
        AppsCommand::Create { id, name, admin } => {
            let app = client(&admin)?.post("/v1/apps", &json!({"id": id, "name": name}))?;
            if admin.output.json {
                output::json(&app);
            } else {
                println!(
                    "Created app {} ({}).",
                    output::field(&app, "id"),
                    output::field(&app, "name")
                );
            }
        }
        AppsCommand::List { admin } => {
            let listing = client(&admin)?.get("/v1/apps")?;
            if admin.output.json {
                output::json(&listing);
            } else {
                let rows = rows(&listing["apps"], &["id", "name", "created_at"]);
                output::table(&["ID", "NAME", "CREATED"], &rows);
            }
        }
    }
    Ok(())
}

pub fn keys(command: KeysCommand) -> Result<(), CliError> {
    match command {
        KeysCommand::Create {
            app,
            description,
            reusable,
            ephemeral,
            expires_in,
            admin,
        } => {
            let body = json!({
                "description": description,
                "reusable": reusable,
                "ephemeral": ephemeral,
                "expires_in": expires_in,
            });
            let key = client(&admin)?.post(&format!("/v1/apps/{}/keys", segment(&app)), &body)?;
            if admin.output.json {
                output::json(&key);
            } else {
                let secret = output::field(&key, "key");
                println!(
                    "Created {} key {} for app {}.",
                    output::key_type(&key),
                    output::field(&key, "id"),
                    output::field(&key, "app")
                );
                println!("Store it now (in a vault or CI secret): it cannot be shown again.\n");
                println!("  {secret}\n");
                // The key goes in the environment, not argv, where `ps` would show it.
                println!("Log a machine in with:\n\n  AUTHKEYS_AUTH_KEY={secret} authkeys login");
            }
        }
        KeysCommand::List {
            app,
            include_revoked,
            admin,
        } => {
            let query = if include_revoked {
                "?include_revoked=true"
            } else {
                ""
            };
            let listing =
                client(&admin)?.get(&format!("/v1/apps/{}/keys{query}", segment(&app)))?;
            if admin.output.json {
                output::json(&listing);
            } else {
                let keys = listing["keys"].as_array().cloned().unwrap_or_default();
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|key| {
                        let mut row = vec![output::field(key, "id"), output::field(key, "hint")];
                        row.push(output::key_type(key));
                        for name in [
                            "uses",
                            "machines",
                            "created_at",
                            "expires_at",
                            "revoked_at",
                            "description",
                        ] {
                            row.push(output::field(key, name));
                        }
                        row
                    })
                    .collect();
                let headers = [
                    "ID",
                    "HINT",
                    "TYPE",
                    "USES",
                    "MACHINES",
                    "CREATED",
                    "EXPIRES",
                    "REVOKED",
                    "DESCRIPTION",
                ];
                output::table(&headers, &rows);
            }
        }
        KeysCommand::Revoke { app, id, admin } => {
            client(&admin)?.delete(&format!("/v1/apps/{}/keys/{}", segment(&app), segment(&id)))?;
            done(
                &admin,
                &format!("Revoked key {id}; every machine it logged in is logged out."),
            );
        }
    }
    Ok(())
}

pub fn machines(command: MachinesCommand) -> Result<(), CliError> {
    match command {
        MachinesCommand::List { app, admin } => {
            let listing = client(&admin)?.get(&format!("/v1/apps/{}/machines", segment(&app)))?;
            if admin.output.json {
                output::json(&listing);
            } else {
                let columns = [
                    "id",
                    "name",
                    "key_id",
                    "created_at",
                    "expires_at",
                    "last_seen_at",
                ];
                let rows = rows(&listing["machines"], &columns);
                output::table(
                    &["ID", "NAME", "KEY", "LOGGED IN", "EXPIRES", "LAST SEEN"],
                    &rows,
                );
            }
        }
        MachinesCommand::Logout { app, id, admin } => {
            client(&admin)?.delete(&format!(
                "/v1/apps/{}/machines/{}",
                segment(&app),
                segment(&id)
            ))?;
            done(&admin, &format!("Logged out machine {id}."));
        }
    }
    Ok(())
}

fn rows(items: &Value, columns: &[&str]) -> Vec<Vec<String>> {
    let items = items.as_array().cloned().unwrap_or_default();
    items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|name| output::field(item, name))
                .collect()
        })
        .collect()
}

/// Reports a command whose response has no body.
fn done(admin: &AdminArgs, message: &str) {
    if admin.output.json {
        output::json(&json!({"ok": true}));
    } else {
        println!("{message}");
    }
}
