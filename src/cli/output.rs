//! Human-readable output: aligned tables and `-` for absent values.

use super::duration;
use serde_json::Value;

/// `println!` for the CLI's output. A reader that has gone away (`authkeys keys list | head`)
/// ends the command quietly with status 0, as a closed pipe ends `cat`, where `println!` would
/// panic; any other failure to write is one error line and status 1.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}
pub(crate) use say;

pub fn line(text: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(text)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(err) = written {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("authkeys: error: writing to standard output: {err}");
        std::process::exit(1);
    }
}

/// Prints `rows` under `headers`, each column as wide as its widest cell; or, when there are
/// none, `empty` (`No keys.`) rather than a lone header row.
pub fn table(headers: &[&str], rows: &[Vec<String>], empty: &str) {
    if rows.is_empty() {
        say!("{empty}");
        return;
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        say!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A field of a JSON object as display text: strings bare, `null` and absent as `-`.
pub fn field(value: &Value, name: &str) -> String {
    field_or(value, name, "-")
}

/// Like `field`, with the text to show when the value is absent (`never` for an expiry). A
/// list (tags) is its items joined by commas, and absent when empty.
pub fn field_or(value: &Value, name: &str, absent: &str) -> String {
    match value.get(name) {
        None | Some(Value::Null) => absent.to_string(),
        Some(Value::Array(items)) if items.is_empty() => absent.to_string(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map_or_else(|| item.to_string(), str::to_string)
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// "reusable, ephemeral" / "single-use" from a key or machine object.
pub fn key_type(key: &Value) -> String {
    let flag = |name: &str| key.get(name).and_then(Value::as_bool).unwrap_or(false);
    let mut kinds = vec![if flag("reusable") {
        "reusable"
    } else {
        "single-use"
    }];
    if flag("ephemeral") {
        kinds.push("ephemeral");
    }
    kinds.join(", ")
}

/// A key's logins: `3`, or `3/5` when it allows at most 5.
pub fn uses(key: &Value) -> String {
    match key.get("max_uses") {
        Some(max @ Value::Number(_)) => format!("{}/{max}", field(key, "uses")),
        _ => field(key, "uses"),
    }
}

/// Where a key stands in a rotation: `to key_…` (its replacement), `from key_…`, both, or `-`.
pub fn rotation(key: &Value) -> String {
    let links: Vec<String> = [("from", "rotated_from"), ("to", "rotated_to")]
        .iter()
        .filter_map(|(word, name)| key[*name].as_str().map(|id| format!("{word} {id}")))
        .collect();
    if links.is_empty() {
        "-".into()
    } else {
        links.join(", ")
    }
}

/// What a new key carries, one `label: value` line each, for the one-time display.
pub fn key_policy(key: &Value) -> Vec<String> {
    let seconds = |name: &str| key[name].as_u64().map(duration::display);
    let mut lines = Vec::new();
    if key["tags"].as_array().is_some_and(|tags| !tags.is_empty()) {
        lines.push(format!("tags:         {}", field(key, "tags")));
    }
    if key["metadata"]
        .as_object()
        .is_some_and(|map| !map.is_empty())
    {
        lines.push(format!("metadata:     {}", key["metadata"]));
    }
    if key["max_uses"].is_number() {
        lines.push(format!("max uses:     {}", field(key, "max_uses")));
    }
    if let Some(ttl) = seconds("session_ttl") {
        lines.push(format!("session TTL:  {ttl} after login"));
    }
    if let Some(idle) = seconds("idle_timeout") {
        lines.push(format!("idle timeout: {idle}"));
    }
    lines.push(format!(
        "expires:      {}",
        field_or(key, "expires_at", "never")
    ));
    lines
}

pub fn json(value: &Value) {
    say!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialise")
    );
}
