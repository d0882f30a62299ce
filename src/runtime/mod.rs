//! The running server: its settings (`config`), assembly and shutdown (`server`), where the
//! admin token comes from (`admin_token`), the background sweeper thread (`sweeper`) and the
//! CPU priority of its backlog (`priority`).

pub(crate) mod admin_token;
pub mod config;
pub(crate) mod priority;
pub mod server;
pub(crate) mod sweeper;
pub mod webhooks;
