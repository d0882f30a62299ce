//! The integration suite: the real server on 127.0.0.1:0, real HTTP, real SQLite files.

mod adapter;
mod admin_api;
mod cli;
mod hot_path;
mod machine_auth;
mod process;
mod reliability;
mod support;
