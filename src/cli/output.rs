//! Human-readable output: aligned tables and `-` for absent values.

use serde_json::Value;

/// Prints `rows` under `headers`, each column as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
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
        println!("{}", padded.join("  ").trim_end());
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

/// Like `field`, with the text to show when the value is absent (`never` for an expiry).
pub fn field_or(value: &Value, name: &str, absent: &str) -> String {
    match value.get(name) {
        None | Some(Value::Null) => absent.to_string(),
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

pub fn json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialise")
    );
}
