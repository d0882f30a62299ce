//! The reliability and security suite: what must hold under concurrent load, `kill -9`, time,
//! hostile input and guessing. Every test runs the real binary on `127.0.0.1:0` with a real
//! SQLite file, and checks the database itself (read-only) as well as the HTTP answers.

mod bad_input;
mod brute_force;
mod connections;
mod crashes;
mod expiry;
pub(crate) mod races;
pub mod raw;
mod stamps;
