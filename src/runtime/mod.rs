//! The running server: its settings (`config`), assembly and shutdown (`server`), where the
//! admin token comes from (`admin_token`) and the background sweeper thread (`sweeper`).

pub(crate) mod admin_token;
pub mod config;
pub mod server;
pub(crate) mod sweeper;
pub mod webhooks;
