//! The integration suite: the real server on 127.0.0.1:0, real HTTP, real SQLite files; one
//! module per boundary (see ARCHITECTURE.md).

mod adapter;
mod admin_api;
mod audit;
mod cli;
mod cli_oversight;
mod cluster;
mod dashboard;
mod hostile_http;
mod hot_path;
mod integrations;
mod key_policy;
mod leaks;
mod lists;
mod machine_auth;
mod nodes;
mod oidc;
mod pg_ops;
mod process;
mod readme;
mod reliability;
mod schema;
mod scopes;
mod support;
mod webhooks;
