//! Admin commands over HTTP, authenticated by `AUTHKEYS_ADMIN_TOKEN`: apps, keys, machines.

use super::args::{AdminArgs, AppsCommand, KeyPolicyArgs, KeysCommand, ListArgs, MachinesCommand};
use super::args::{OutputArgs, ServerArg};
use super::auth_key;
use super::client::{Client, RequestError, segment};
use super::output::say;
use super::{CliError, output};
use authkeys::Secret;
use serde_json::{Value, json};

/// The HTTP client with the admin token. A 401 can only mean that token was refused, so it
/// says so.
pub(super) struct Admin(Client);

impl Admin {
    pub(super) fn get(&self, path: &str) -> Result<Value, CliError> {
        self.0.get(path).map_err(admin_refused)
    }

    pub(super) fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.0.post(path, body).map_err(admin_refused)
    }

    pub(super) fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.0.delete(path).map_err(admin_refused)
    }

    /// The list at `path` (with the `filters` query), following `next_cursor` page by page
    /// to its end, or until `list.limit` items: pages as large as the server allows, the last
    /// one cut to what is left, so nothing beyond the limit is fetched. Answers in the shape
    /// of one page: `{"<field>": [every item], "next_cursor": where the next item starts
    /// (null at the end)}`.
    pub(super) fn list(
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

fn machines_path(app: &str) -> String {
    format!("/v1/apps/{}/machines", segment(app))
}

impl Admin {
    /// The machines of every app, app by app (in the apps' order, each app's newest first),
    /// in the shape of one page, cut at `list.limit` items in all. `next_cursor` is null when
    /// nothing was left out, else the cursor within the last app listed (or `""` when only
    /// later apps were left out).
    fn machines_of_every_app(
        &self,
        filters: &[(&str, &str)],
        list: &ListArgs,
    ) -> Result<Value, CliError> {
        let apps = self.list("/v1/apps", "apps", &[], &ListArgs { limit: None })?;
        let mut machines: Vec<Value> = Vec::new();
        let mut left_out = Value::Null;
        for app in apps["apps"].as_array().into_iter().flatten() {
            let left = list
                .limit
                .map(|limit| limit.saturating_sub(machines.len() as u64));
            if left == Some(0) {
                left_out = "".into();
                break;
            }
            let app = app["id"].as_str().unwrap_or_default();
            let listing = self.list(
                &machines_path(app),
                "machines",
                filters,
                &ListArgs { limit: left },
            )?;
            machines.extend(listing["machines"].as_array().cloned().unwrap_or_default());
            left_out = listing["next_cursor"].clone();
        }
        Ok(json!({"machines": machines, "next_cursor": left_out}))
    }
}

/// `keys verify`: the server's judgement of a key, which it does not use up. A key that is not
/// valid is a refusal (exit 1) with the reason as its code.
fn verify(key: Secret, server: &ServerArg, output: &OutputArgs) -> Result<(), CliError> {
    let client = Client::new(&server.server, None, &server.timeout);
    let verdict = client.post("/v1/keys/verify", &json!({"key": key.expose()}))?;
    if verdict["valid"] != Value::Bool(true) {
        let code = output::field(&verdict, "code");
        return Err(CliError::Rejected {
            message: format!("the key is not valid: {}", invalid_reason(&code)),
            code,
        });
    }
    if output.json {
        output::json(&verdict);
    } else {
        say!(
            "Valid: key {} of app {} ({}), tags {}, {} logins left, expires {}.",
            output::field(&verdict, "key_id"),
            output::field(&verdict, "app"),
            output::key_type(&verdict),
            output::field(&verdict, "tags"),
            output::field_or(&verdict, "uses_remaining", "unlimited"),
            output::field_or(&verdict, "expires_at", "never")
        );
    }
    Ok(())
}

/// What verify's `code` means for the key's holder.
fn invalid_reason(code: &str) -> &'static str {
    match code {
        "not_found" => "no server-side record of it (wrong server, or its app was deleted)",
        "revoked" => "it was revoked",
        "expired" => "it expired",
        "used" => "it was single-use and has been used",
        "malformed" => "it is not an auth key",
        _ => "the server gave an unknown reason",
    }
}

/// Adds the policy fields that were given to a new key's body; the absent ones are left to the
/// server's defaults.
pub(super) fn add_policy(body: &mut Value, policy: KeyPolicyArgs) -> Result<(), CliError> {
    if !policy.tags.is_empty() {
        body["tags"] = json!(policy.tags);
    }
    if !policy.metadata.is_empty() {
        let mut metadata = serde_json::Map::new();
        for (key, value) in policy.metadata {
            if metadata.contains_key(&key) {
                return Err(CliError::Usage(format!("--metadata {key}= is given twice")));
            }
            metadata.insert(key, value.into());
        }
        body["metadata"] = metadata.into();
    }
    for (field, value) in [
        ("max_uses", policy.max_uses),
        ("session_ttl", policy.session_ttl),
        ("idle_timeout", policy.idle_timeout),
    ] {
        if let Some(value) = value {
            body[field] = value.into();
        }
    }
    Ok(())
}

/// The one-time display of a new key's secret, with what it carries and how to use it.
fn print_new_key(key: &Value) {
    let secret = output::field(key, "key");
    for line in output::key_policy(key) {
        say!("  {line}");
    }
    say!("Store it now (in a vault or CI secret): it cannot be shown again.\n");
    say!("  {secret}\n");
    // The key goes in the environment, not argv, where `ps` would show it.
    say!("Log a machine in with:\n\n  AUTHKEYS_AUTH_KEY={secret} authkeys login");
}

/// After a table cut short by `--limit`, says so.
pub(super) fn note_more(listing: &Value) {
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
        } => CliError::Rejected {
            code,
            message: "the server did not accept AUTHKEYS_ADMIN_TOKEN".into(),
        },
        other => other.into(),
    }
}

pub(super) fn client(args: &AdminArgs) -> Result<Admin, CliError> {
    server_client(&args.server)
}

fn server_client(server: &ServerArg) -> Result<Admin, CliError> {
    // Trimmed: a token pasted or read with `$(cat …)` may carry spaces or a newline.
    let token = std::env::var("AUTHKEYS_ADMIN_TOKEN")
        .ok()
        .map(|token| token.trim().to_string())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            CliError::Usage(
                "AUTHKEYS_ADMIN_TOKEN is not set: admin commands need the server's admin token \
                 (a generated one is in <db>.admin-token)"
                    .into(),
            )
        })?;
    Ok(Admin(Client::new(
        &server.server,
        Some(Secret::new(token)),
        &server.timeout,
    )))
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
                output::table(&["ID", "NAME", "CREATED"], &rows, "No apps.");
                note_more(&listing);
            }
        }
        AppsCommand::Delete { id, admin } => {
            client(&admin)?.delete(&format!("/v1/apps/{}", segment(&id)))?;
            done(
                &admin,
                &format!("Deleted app {id}: its keys are revoked and its machines logged out."),
            );
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
            policy,
            expires_in,
            no_expiry,
            admin,
        } => {
            let mut body = json!({
                "description": description,
                // A key of more than one use is reusable (a single-use key with max_uses > 1
                // is a contradiction the server refuses).
                "reusable": reusable || policy.max_uses.is_some_and(|uses| uses > 1),
                "ephemeral": ephemeral,
                "expires_in": (!no_expiry).then_some(expires_in),
            });
            add_policy(&mut body, policy)?;
            let key = client(&admin)?.post(&format!("/v1/apps/{}/keys", segment(&app)), &body)?;
            if admin.output.json {
                output::json(&key);
            } else {
                say!(
                    "Created {} key {} for app {}.",
                    output::key_type(&key),
                    output::field(&key, "id"),
                    output::field(&key, "app")
                );
                print_new_key(&key);
            }
        }
        KeysCommand::Rotate {
            app,
            id,
            grace,
            admin,
        } => {
            let client = client(&admin)?;
            let path = format!("/v1/apps/{}/keys/{}", segment(&app), segment(&id));
            let key = client.post(&format!("{path}/rotate"), &json!({"grace_seconds": grace}))?;
            if admin.output.json {
                output::json(&key);
            } else {
                let old = client.get(&path)?;
                say!(
                    "Rotated key {id} of app {app} into {}; {id} stops accepting logins at {} \
                     (its machines stay logged in).",
                    output::field(&key, "id"),
                    output::field(&old, "expires_at"),
                );
                print_new_key(&key);
            }
        }
        KeysCommand::List {
            app,
            include_revoked,
            tags,
            list,
            admin,
        } => {
            let mut filters: Vec<(&str, &str)> =
                tags.iter().map(|tag| ("tag", tag.as_str())).collect();
            if include_revoked {
                filters.push(("include_revoked", "true"));
            }
            let path = format!("/v1/apps/{}/keys", segment(&app));
            let listing = client(&admin)?.list(&path, "keys", &filters, &list)?;
            if admin.output.json {
                output::json(&listing);
            } else {
                let keys = listing["keys"].as_array().cloned().unwrap_or_default();
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|key| {
                        vec![
                            output::field(key, "id"),
                            output::field(key, "hint"),
                            output::key_type(key),
                            output::field(key, "tags"),
                            output::uses(key),
                            output::field(key, "machines"),
                            output::field(key, "created_at"),
                            output::field_or(key, "expires_at", "never"),
                            output::field(key, "revoked_at"),
                            output::rotation(key),
                            output::field(key, "description"),
                        ]
                    })
                    .collect();
                let headers = [
                    "ID",
                    "HINT",
                    "TYPE",
                    "TAGS",
                    "USES",
                    "MACHINES",
                    "CREATED",
                    "EXPIRES",
                    "REVOKED",
                    "ROTATED",
                    "DESCRIPTION",
                ];
                output::table(&headers, &rows, "No keys.");
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
        KeysCommand::Verify {
            auth_key,
            server,
            output,
        } => verify(auth_key::read(auth_key.auth_key)?, &server, &output)?,
    }
    Ok(())
}

pub fn machines(command: MachinesCommand) -> Result<(), CliError> {
    match command {
        MachinesCommand::List {
            app,
            key,
            tags,
            list,
            admin,
        } => {
            let mut filters: Vec<(&str, &str)> =
                key.iter().map(|key| ("key_id", key.as_str())).collect();
            filters.extend(tags.iter().map(|tag| ("tag", tag.as_str())));
            let client = client(&admin)?;
            let listing = match &app {
                Some(app) => client.list(&machines_path(app), "machines", &filters, &list)?,
                None => client.machines_of_every_app(&filters, &list)?,
            };
            if admin.output.json {
                output::json(&listing);
            } else {
                let mut columns = vec![
                    "id",
                    "name",
                    "key_id",
                    "tags",
                    "created_at",
                    "expires_at",
                    "last_seen_at",
                ];
                let mut headers = vec![
                    "ID",
                    "NAME",
                    "KEY",
                    "TAGS",
                    "LOGGED IN",
                    "EXPIRES",
                    "LAST SEEN",
                ];
                if app.is_none() {
                    columns.insert(0, "app");
                    headers.insert(0, "APP");
                }
                // A machine of a trust policy has no key: its KEY column names the policy.
                let mut machines = listing["machines"].clone();
                for machine in machines.as_array_mut().into_iter().flatten() {
                    if machine["key_id"].is_null() {
                        machine["key_id"] = machine["trust_policy_id"].clone();
                    }
                }
                let rows = rows(&machines, &columns);
                output::table(&headers, &rows, "No machines.");
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

pub(super) fn rows(items: &Value, columns: &[&str]) -> Vec<Vec<String>> {
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
pub(super) fn done(admin: &AdminArgs, message: &str) {
    if admin.output.json {
        output::json(&json!({"ok": true}));
    } else {
        say!("{message}");
    }
}
