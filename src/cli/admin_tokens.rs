//! `authkeys admin-tokens create|list|revoke`: scoped admin tokens, managed with the root
//! token in `AUTHKEYS_ADMIN_TOKEN`.

use super::CliError;
use super::admin::{client, done, note_more};
use super::args::{AdminArgs, ListArgs};
use super::client::segment;
use super::duration;
use super::output::{self, say};
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Subcommand, Debug)]
pub enum AdminTokensCommand {
    /// Create a scoped admin token (root only); it is shown once.
    Create {
        /// What the token is for, shown in listings.
        #[arg(long)]
        name: String,
        /// A scope it gets (repeatable): apps:read, apps:write, keys:read, keys:write,
        /// machines:read, machines:write, audit:read, trust_policies:write.
        #[arg(long = "scope", value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
        /// An app it may act on (repeatable); every app when absent.
        #[arg(long = "app", value_name = "APP")]
        apps: Vec<String>,
        /// The token stops working after this long (seconds, or 30d, 12h…).
        #[arg(long, value_name = "DURATION", value_parser = duration::positive)]
        expires_in: Option<u64>,
        /// Keys it creates live at most this long (and get exactly this without --expires-in).
        #[arg(long, value_name = "DURATION", value_parser = duration::positive)]
        max_key_lifetime: Option<u64>,
        /// A tag the keys it creates may carry (repeatable); any tag when absent.
        #[arg(long = "allowed-tag", value_name = "TAG")]
        allowed_tags: Vec<String>,
        /// It may create only ephemeral keys.
        #[arg(long)]
        ephemeral_only: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the scoped admin tokens, newest first (root only).
    List {
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke a scoped admin token: refused from the moment this returns (root only).
    Revoke {
        /// The token's id (`tok_…`).
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `[]` from clap's empty repeatable flag means "not given": `null`, every app or any tag.
fn list_or_null(values: Vec<String>) -> Value {
    if values.is_empty() {
        Value::Null
    } else {
        json!(values)
    }
}

pub fn run(command: AdminTokensCommand) -> Result<(), CliError> {
    match command {
        AdminTokensCommand::Create {
            name,
            scopes,
            apps,
            expires_in,
            max_key_lifetime,
            allowed_tags,
            ephemeral_only,
            admin,
        } => {
            let body = json!({
                "name": name,
                "scopes": scopes,
                "apps": list_or_null(apps),
                "expires_in": expires_in,
                "max_key_lifetime": max_key_lifetime,
                "allowed_tags": list_or_null(allowed_tags),
                "ephemeral_only": ephemeral_only,
            });
            let created = client(&admin)?.post("/v1/admin-tokens", &body)?;
            let summary = format!(
                "Created admin token {} ({}) with {}.",
                output::field(&created, "id"),
                output::field(&created, "name"),
                joined(&created["scopes"], "no scope"),
            );
            shown_once(&admin, &created, &summary, "Token", "token");
        }
        AdminTokensCommand::List { list, admin } => {
            let listing = client(&admin)?.list("/v1/admin-tokens", "admin_tokens", &[], &list)?;
            let headers = [
                "ID",
                "NAME",
                "SCOPES",
                "APPS",
                "HINT",
                "EXPIRES",
                "LAST USED",
                "REVOKED",
            ];
            let table = (&headers[..], "No admin tokens.");
            print_listing(&admin, &listing, "admin_tokens", table, |token| {
                vec![
                    output::field(token, "id"),
                    output::field(token, "name"),
                    joined(&token["scopes"], "-"),
                    joined(&token["apps"], "all"),
                    output::field(token, "hint"),
                    output::field_or(token, "expires_at", "never"),
                    output::field_or(token, "last_used_at", "never"),
                    output::field(token, "revoked_at"),
                ]
            });
        }
        AdminTokensCommand::Revoke { id, admin } => {
            client(&admin)?.delete(&format!("/v1/admin-tokens/{}", segment(&id)))?;
            done(&admin, &format!("Revoked admin token {id}."));
        }
    }
    Ok(())
}

/// A JSON list of strings as `a, b`, or `empty` when null or empty.
pub(super) fn joined(values: &Value, empty: &str) -> String {
    let items: Vec<&str> = values
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if items.is_empty() {
        empty.to_string()
    } else {
        items.join(", ")
    }
}

/// Reports a created object whose secret (`secret_field`) is in this answer only: all of it
/// as JSON, or `summary` and the secret, labelled, on a line of its own.
pub(super) fn shown_once(
    admin: &AdminArgs,
    created: &Value,
    summary: &str,
    label: &str,
    secret_field: &str,
) {
    if admin.output.json {
        output::json(created);
    } else {
        say!("{summary}");
        say!(
            "{label} (shown once, store it now): {}",
            output::field(created, secret_field)
        );
    }
}

/// Prints a listing (`{"<field>": [...], "next_cursor"}`): as JSON, or a table of `row` of
/// each item (`empty` when there is none), then a note if `--limit` cut it short.
pub(super) fn print_listing(
    admin: &AdminArgs,
    listing: &Value,
    field: &str,
    (headers, empty): (&[&str], &str),
    row: impl Fn(&Value) -> Vec<String>,
) {
    if admin.output.json {
        output::json(listing);
        return;
    }
    let items = listing[field].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    output::table(headers, &rows, empty);
    note_more(listing);
}
