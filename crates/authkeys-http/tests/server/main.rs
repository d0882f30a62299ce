//! The fork's behaviour at its sockets, one module per area of CHANGES-authkeys.md. One test
//! binary, so that cargo runs the modules' tests in parallel rather than one binary at a time.

mod support;

mod accept_failures;
mod connections;
mod deadlines;
mod framing;
mod inline;
mod limits;
mod responses;
