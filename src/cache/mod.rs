//! What the read paths keep in memory: the hot whoami and verify answers (`hot`), apps by pk
//! (`app`) and the pending usage stamps (`usage`). Each is bounded.

pub(crate) mod app;
pub(crate) mod hot;
pub(crate) mod usage;

use std::sync::OnceLock;

/// The HTTP layer's encoding of a cached value, made on first use and kept with the entry, so
/// it lives and dies with it. The caches hold it and never look inside: encoding is the HTTP
/// layer's business.
#[derive(Debug)]
pub(crate) struct Encoded<T>(OnceLock<T>);

impl<T> Encoded<T> {
    /// The encoding, made by `encode` the first time it is asked for.
    pub(crate) fn get_or_encode(&self, encode: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(encode)
    }
}

impl<T> Default for Encoded<T> {
    fn default() -> Encoded<T> {
        Encoded(OnceLock::new())
    }
}
