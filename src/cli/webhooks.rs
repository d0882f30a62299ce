//! `authkeys webhooks create|list|delete|deliveries` (root only).

use super::CliError;
use super::admin::{client, done};
use super::admin_tokens::{joined, print_listing, shown_once};
use super::args::{AdminArgs, ListArgs};
use super::client::segment;
use super::output;
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum WebhooksCommand {
    /// Send matching audit events to a URL, signed; the signing secret is shown once.
    Create {
        /// Where to POST events (http or https).
        #[arg(long)]
        url: String,
        /// An action, `<type>.*` or `*` (repeatable), e.g. key.revoked, machine.*.
        #[arg(long = "event", value_name = "PATTERN", required = true)]
        events: Vec<String>,
        /// What the webhook is for.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List webhooks, newest first.
    List {
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete a webhook: its deliveries stop.
    Delete {
        /// The webhook's id (`whk_…`).
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// A webhook's deliveries, newest event first: attempts and the last status or error.
    Deliveries {
        /// The webhook's id (`whk_…`).
        id: String,
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

pub fn run(command: WebhooksCommand) -> Result<(), CliError> {
    match command {
        WebhooksCommand::Create {
            url,
            events,
            description,
            admin,
        } => {
            let body = json!({"url": url, "events": events, "description": description});
            let created = client(&admin)?.post("/v1/webhooks", &body)?;
            let summary = format!(
                "Created webhook {} to {} for {}.",
                output::field(&created, "id"),
                output::field(&created, "url"),
                joined(&created["events"], "-")
            );
            shown_once(&admin, &created, &summary, "Signing secret", "secret");
        }
        WebhooksCommand::List { list, admin } => {
            let listing = client(&admin)?.list("/v1/webhooks", "webhooks", &[], &list)?;
            let headers = ["ID", "URL", "EVENTS", "DESCRIPTION", "CREATED"];
            let table = (&headers[..], "No webhooks.");
            print_listing(&admin, &listing, "webhooks", table, |webhook| {
                vec![
                    output::field(webhook, "id"),
                    output::field(webhook, "url"),
                    joined(&webhook["events"], "-"),
                    output::field(webhook, "description"),
                    output::field(webhook, "created_at"),
                ]
            });
        }
        WebhooksCommand::Delete { id, admin } => {
            client(&admin)?.delete(&format!("/v1/webhooks/{}", segment(&id)))?;
            done(&admin, &format!("Deleted webhook {id}."));
        }
        WebhooksCommand::Deliveries { id, list, admin } => {
            let path = format!("/v1/webhooks/{}/deliveries", segment(&id));
            let listing = client(&admin)?.list(&path, "deliveries", &[], &list)?;
            let columns = [
                "seq",
                "attempts",
                "last_status",
                "last_error",
                "delivered_at",
            ];
            let headers = ["SEQ", "ATTEMPTS", "STATUS", "ERROR", "DELIVERED"];
            let table = (&headers[..], "No deliveries yet.");
            print_listing(&admin, &listing, "deliveries", table, |delivery| {
                columns
                    .iter()
                    .map(|name| output::field(delivery, name))
                    .collect()
            });
        }
    }
    Ok(())
}
