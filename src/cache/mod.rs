//! What the read paths keep in memory: the hot whoami and verify answers (`hot`), apps by pk
//! (`app`) and the pending usage stamps (`usage`). Each is bounded.

pub mod app;
pub mod hot;
pub mod usage;
