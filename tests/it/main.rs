//! The integration suite: the real `authkeys` binary on `127.0.0.1:0` with real SQLite files.

// Each suite uses a different part of the harness.
#[allow(dead_code)]
mod support;

mod adapter;
mod cli;
mod reliability;
