//! authkeys patch: a connection's writer, shared by the request being answered and the
//! connection itself (which answers refusals). Replaces upstream's `SequentialWriter`, whose
//! ordering of pipelined responses cost a channel per request: a connection now has at most
//! one request in flight (see `serve_connection`), so there is nothing to order.

use std::io::{Result as IoResult, Write};
use std::sync::{Arc, Mutex};

pub struct SharedWriter<W>(Arc<Mutex<W>>);

impl<W> SharedWriter<W> {
    pub fn new(writer: W) -> SharedWriter<W> {
        SharedWriter(Arc::new(Mutex::new(writer)))
    }
}

impl<W> Clone for SharedWriter<W> {
    fn clone(&self) -> Self {
        SharedWriter(Arc::clone(&self.0))
    }
}

impl<W: Write> Write for SharedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> IoResult<()> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(buf)
    }

    fn flush(&mut self) -> IoResult<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}
