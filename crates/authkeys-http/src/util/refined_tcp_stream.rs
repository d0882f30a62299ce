use std::io::Result as IoResult;
use std::io::{Error as IoError, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use crate::util::Deadline;

use crate::connection::Connection;

pub struct RefinedTcpStream {
    // authkeys patch: a plain connection; upstream's `Stream` enum also held a TLS stream,
    // removed with the TLS code.
    stream: Connection,
    close_read: bool,
    close_write: bool,
    deadline: Option<Deadline>,
    // authkeys patch: the read timeout the socket has now (`None`: not set by us).
    timeout: Option<Duration>,
}

impl RefinedTcpStream {
    pub(crate) fn new(stream: Connection) -> IoResult<(RefinedTcpStream, RefinedTcpStream)> {
        // authkeys patch: upstream's `Clone` panicked (killing the accept thread) when the
        // process was out of file descriptors.
        let (read, write) = (stream.try_clone()?, stream);

        let read = RefinedTcpStream {
            stream: read,
            close_read: true,
            close_write: false,
            deadline: None,
            timeout: None,
        };

        let write = RefinedTcpStream {
            stream: write,
            close_read: false,
            close_write: true,
            deadline: None,
            timeout: None,
        };

        Ok((read, write))
    }

    /// authkeys patch: every read from now on ends by `deadline`, with `TimedOut`.
    pub(crate) fn set_deadline(&mut self, deadline: Deadline) {
        self.deadline = Some(deadline);
    }

    pub(crate) fn peer_addr(&mut self) -> IoResult<Option<SocketAddr>> {
        self.stream.peer_addr()
    }
}

impl Drop for RefinedTcpStream {
    fn drop(&mut self) {
        if self.close_read {
            self.stream.shutdown(Shutdown::Read).ok();
        }

        if self.close_write {
            self.stream.shutdown(Shutdown::Write).ok();
        }
    }
}

impl Read for RefinedTcpStream {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        // authkeys patch: upstream set no read timeout at all, so a silent client held its
        // thread forever. No read blocks past the deadline: the socket's timeout is never
        // longer than the time left.
        let Some(deadline) = self.deadline.as_ref() else {
            return self.stream.read(buf);
        };
        loop {
            let Some(left) = deadline.remaining() else {
                return self.stream.read(buf);
            };
            if left.is_zero() {
                return Err(IoError::new(ErrorKind::TimedOut, "read deadline passed"));
            }
            // Setting the timeout is a system call, so it is set only when the one the socket
            // has is longer than the time left, and then to 15/16 of that time: the next
            // reads, and the next requests' (whose deadlines are as far away), fit under it
            // without setting it again. Setting it before every read (as this patch first did)
            // cost one setsockopt per request.
            if self.timeout.is_none_or(|timeout| timeout > left) {
                let timeout = Some(left - left / 16)
                    .filter(|t| !t.is_zero())
                    .unwrap_or(left);
                self.stream.set_read_timeout(Some(timeout))?;
                self.timeout = Some(timeout);
            }
            match self.stream.read(buf) {
                // A socket read timeout surfaces as WouldBlock on Unix. The socket's timeout
                // may be shorter than the time left: then wait again, with a timeout set to
                // what is left (so an idle connection wakes a few times, not every
                // `timeout`).
                Err(err) if err.kind() == ErrorKind::WouldBlock => self.timeout = None,
                result => return result,
            }
        }
    }
}

impl Write for RefinedTcpStream {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> IoResult<()> {
        self.stream.flush()
    }
}
