//! `authkeys audit [--app] [--action] [--after] [--follow]`: the audit log, oldest first;
//! `--follow` keeps printing new events as they are recorded (polling), until interrupted.

use super::CliError;
use super::admin::{Admin, client, note_more};
use super::args::{AdminArgs, ListArgs};
use super::output::{self, say};
use clap::Args;
use serde_json::Value;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only this app's events.
    #[arg(long)]
    pub app: Option<String>,
    /// Only this action (e.g. key.revoked).
    #[arg(long)]
    pub action: Option<String>,
    /// Only events after this seq.
    #[arg(long, value_name = "SEQ")]
    pub after: Option<u64>,
    /// Keep printing new events as they are recorded (one JSON object a line with --json).
    #[arg(long, conflicts_with = "limit")]
    pub follow: bool,
    /// How often --follow asks for new events.
    #[arg(long, value_name = "MS", default_value_t = 1000, hide = true,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub poll_ms: u64,
    #[command(flatten)]
    pub list: ListArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
}

const COLUMNS: [&str; 6] = ["SEQ", "AT", "ACTION", "ACTOR", "APP", "TARGET"];

fn row(event: &Value) -> Vec<String> {
    let named = |value: &Value| match value["id"].as_str() {
        Some(id) => format!("{} {id}", output::field(value, "type")),
        None => output::field(value, "type"),
    };
    vec![
        output::field(event, "seq"),
        output::field(event, "at"),
        output::field(event, "action"),
        named(&event["actor"]),
        output::field(event, "app"),
        named(&event["target"]),
    ]
}

pub fn run(args: AuditArgs) -> Result<(), CliError> {
    let admin = client(&args.admin)?;
    let mut filters: Vec<(&str, String)> = Vec::new();
    if let Some(app) = &args.app {
        filters.push(("app", app.clone()));
    }
    if let Some(action) = &args.action {
        filters.push(("action", action.clone()));
    }
    let after = args.after.unwrap_or(0);
    let query = |after: u64| {
        let mut pairs = filters.clone();
        pairs.push(("after", after.to_string()));
        pairs
    };
    let pairs = query(after);
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let listing = admin.list("/v1/audit", "events", &borrowed, &args.list)?;
    let events = listing["events"].as_array().cloned().unwrap_or_default();
    if !args.follow {
        if args.admin.output.json {
            output::json(&listing);
        } else {
            output::table(
                &COLUMNS,
                &events.iter().map(row).collect::<Vec<_>>(),
                "No events.",
            );
            note_more(&listing);
        }
        return Ok(());
    }
    let json = args.admin.output.json;
    if !json {
        output::table(
            &COLUMNS,
            &events.iter().map(row).collect::<Vec<_>>(),
            "No events yet.",
        );
    }
    let mut last = after;
    for event in &events {
        if json {
            say!("{event}");
        }
        last = event["seq"].as_u64().unwrap_or(last);
    }
    follow(
        &admin,
        &query,
        last,
        json,
        Duration::from_millis(args.poll_ms),
    )
}

/// Prints every event after `last` as it is recorded, forever (until interrupted or an
/// error: a server that goes away ends the command with that error).
fn follow(
    admin: &Admin,
    query: &dyn Fn(u64) -> Vec<(&'static str, String)>,
    mut last: u64,
    json: bool,
    poll: Duration,
) -> Result<(), CliError> {
    let all = ListArgs { limit: None };
    loop {
        std::thread::sleep(poll);
        let pairs = query(last);
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let listing = admin.list("/v1/audit", "events", &borrowed, &all)?;
        for event in listing["events"].as_array().into_iter().flatten() {
            if json {
                say!("{event}");
            } else {
                say!("{}", row(event).join("  "));
            }
            last = event["seq"].as_u64().unwrap_or(last);
        }
    }
}
