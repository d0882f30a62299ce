//! What the read paths keep in memory: the hot whoami and verify answers (`hot`), apps by pk
//! (`app`) and the pending usage stamps (`usage`). Each is bounded.

pub(crate) mod app;
pub(crate) mod hot;
pub(crate) mod usage;
