//! authkeys patch: a read deadline shared between a connection, which moves it as a request
//! progresses, and the reads on that connection's socket, which never block past it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct Deadline(Arc<Mutex<Option<Instant>>>);

impl Deadline {
    /// Reads must finish within `within` from now.
    pub fn set(&self, within: Duration) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + within);
    }

    /// Time left before the deadline (zero once it has passed); `None` when there is none.
    pub fn remaining(&self) -> Option<Duration> {
        let deadline = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        deadline.map(|at| at.saturating_duration_since(Instant::now()))
    }
}
