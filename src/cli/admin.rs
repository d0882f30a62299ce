//! Admin commands over HTTP, authenticated by `AUTHKEYS_ADMIN_TOKEN`: apps, keys, machines.

use super::args::{AdminArgs, AppsCommand, KeysCommand, ListArgs, MachinesCommand, ServerArg};
use super::client::{Client, RequestError, segment};
use super::output::say;
use super::{CliError, output};
use authkeys::Secret;
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

    /// The list at `path` (with the `filters` query), following `next_cursor` page by page
    /// to its end, or until `list.limit` items: pages as large as the server allows, the last
    /// one cut to what is left, so nothing beyond the limit is fetched. Answers in the shape
    /// of one page: `{"<field>": [every item], "next_cursor": where the next item starts
    /// (null at the end)}`.
    fn list(
        &self,
        path: &str,
        field: &str,
        filters: &[(&str, &str)],
        list: &ListArgs,
    ) -> Result<Value, CliError> {
        let mut items: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let left = list
                .limit
                .map_or(u64::MAX, |limit| limit.saturating_sub(items.len() as u64));
            if left == 0 {
                break;
            }
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.extend_pairs(filters);
            query.append_pair(
                "limit",
                &left.min(authkeys::MAX_PAGE_LIMIT as u64).to_string(),
            );
            if let Some(cursor) = &cursor {
                query.append_pair("cursor", cursor);
            }
            let page = self.get(&format!("{path}?{}", query.finish()))?;
            items.extend(page[field].as_array().cloned().unwrap_or_default());
            cursor = page["next_cursor"].as_str().map(str::to_string);
            if cursor.is_none() {
                break;
            }
        }
        let mut listing = serde_json::Map::new();
        listing.insert(field.to_string(), Value::Array(items));
        listing.insert("next_cursor".to_string(), cursor.into());
        Ok(Value::Object(listing))
    }
}

/// After a table cut short by `--limit`, says so.
fn note_more(listing: &Value) {
    if listing["next_cursor"].is_string() {
        say!("(more rows follow: raise or drop --limit to see them)");
    }
}

fn admin_refused(err: RequestError) -> CliError {
    match err {
        RequestError::Api {
            status: 401,
            code: Some(code),
            ..
        } => CliError::Message(format!(
            "the server did not accept AUTHKEYS_ADMIN_TOKEN ({code}, HTTP 401)"
        )),
        other => other.into(),
    }
}

fn client(args: &AdminArgs) -> Result<Admin, CliError> {
    server_client(&args.server)
}

fn server_client(server: &ServerArg) -> Result<Admin, CliError> {
    let token = std::env::var("AUTHKEYS_ADMIN_TOKEN")
        .ok()
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            CliError::Message(
                "AUTHKEYS_ADMIN_TOKEN is not set: admin commands need the server's admin token \
                 (a generated one is in <db>.admin-token)"
                    .into(),
            )
        })?;
    Ok(Admin(Client::new(&server.server, Some(Secret::new(token)))))
}

/// `POST /v1/keys/revoke-by-value` for `authkeys scan --revoke`: each call revokes one leaked
/// auth key (or logs out the machine of one session token) and returns the server's answer.
pub struct Revoker(Admin);

impl Revoker {
    pub fn new(server: &ServerArg) -> Result<Revoker, CliError> {
        server_client(server).map(Revoker)
    }

    pub fn revoke(&self, token: &Secret) -> Result<Value, CliError> {
        self.0
            .post("/v1/keys/revoke-by-value", &json!({"key": token.expose()}))
    }
}

pub fn apps(command: AppsCommand) -> Result<(), CliError> {
    match command {
        AppsCommand::Create { id, name, admin } => {
            let app = client(&admin)?.post("/v1/apps", &json!({"id": id, "name": name}))?;
            if admin.output.json {
                output::json(&app);
            } else {
                say!(
                    "Created app {} ({}).",
                    output::field(&app, "id"),
                    output::field(&app, "name")
                );
            }
        }
        AppsCommand::List { list, admin } => {
            let listing = client(&admin)?.list("/v1/apps", "apps", &[], &list)?;
            if admin.output.json {
                output::json(&listing);
            } else {
                let rows = rows(&listing["apps"], &["id", "name", "created_at"]);
                output::table(&["ID", "NAME", "CREATED"], &rows);
                note_more(&listing);
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
                say!(
                    "Created {} key {} for app {}.",
                    output::key_type(&key),
                    output::field(&key, "id"),
                    output::field(&key, "app")
                );
                say!("Store it now (in a vault or CI secret): it cannot be shown again.\n");
                say!("  {secret}\n");
                // The key goes in the environment, not argv, where `ps` would show it.
                say!("Log a machine in with:\n\n  AUTHKEYS_AUTH_KEY={secret} authkeys login");
            }
        }
        KeysCommand::List {
            app,
            include_revoked,
            list,
            admin,
        } => {
            let filters: &[(&str, &str)] = if include_revoked {
                &[("include_revoked", "true")]
            } else {
                &[]
            };
            let path = format!("/v1/apps/{}/keys", segment(&app));
            let listing = client(&admin)?.list(&path, "keys", filters, &list)?;
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
                note_more(&listing);
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
        MachinesCommand::List {
            app,
            key,
            list,
            admin,
        } => {
            let filters: Vec<(&str, &str)> =
                key.iter().map(|key| ("key_id", key.as_str())).collect();
            let path = format!("/v1/apps/{}/machines", segment(&app));
            let listing = client(&admin)?.list(&path, "machines", &filters, &list)?;
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
                note_more(&listing);
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
        say!("{message}");
    }
}
