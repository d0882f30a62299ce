//! The integration suite: one binary, one module per boundary.

mod adapter;
mod cli;
mod dashboard;
mod support;
