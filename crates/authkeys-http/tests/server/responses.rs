//! What the server writes (CHANGES-authkeys.md, rows `Header::from_bytes`, "name, `Server`
//! header" and `write_message_header`).

use std::io::{self, Write};

use authkeys_http::{HTTPVersion, Header, Response};

/// Row `Header::from_bytes`: an empty name, or a control character other than tab in a name
/// or value, is refused, so that a value echoing request data cannot inject a header
/// (upstream accepted any ASCII, CR LF included).
#[test]
fn a_header_with_a_control_character_or_an_empty_name_is_refused() {
    let refused: &[(&str, &str)] = &[
        ("X-Echo", "a\r\nSet-Cookie: evil=1"),
        ("X-Echo", "a\rb"),
        ("X-Echo", "a\nb"),
        ("X-Echo", "a\0b"),
        ("X-Echo\r\nSet-Cookie", "evil=1"),
        ("", "value"),
    ];
    for (name, value) in refused {
        assert!(
            Header::from_bytes(name.as_bytes(), value.as_bytes()).is_err(),
            "{:?}: {:?} was accepted",
            name,
            value
        );
    }
    let tabbed = Header::from_bytes(&b"X-Echo"[..], &b"a\tb"[..]).expect("a tab is fine");
    assert_eq!(tabbed.value.as_str(), "a\tb");
}

#[test]
fn every_byte_is_judged_alike_wherever_it_stands_in_a_long_value() {
    // The check runs many bytes at a time; a byte must be refused or kept the same at every
    // position, in the name as in the value.
    for byte in 0..=u8::MAX {
        let allowed = byte == b'\t' || (b' '..=b'~').contains(&byte);
        for position in [0, 7, 15, 16, 31, 32, 63, 99] {
            let mut text = vec![b'a'; 100];
            text[position] = byte;
            let as_value = Header::from_bytes(&b"X-Long"[..], text.clone()).is_ok();
            let as_name = Header::from_bytes(text, &b"v"[..]).is_ok();
            assert_eq!(
                as_value, allowed,
                "byte {byte:#04x} at {position} in a value"
            );
            assert_eq!(as_name, allowed, "byte {byte:#04x} at {position} in a name");
        }
    }
}

/// Records every `write` call it receives.
#[derive(Default)]
struct Writes(Vec<Vec<u8>>);

impl Write for Writes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Row `write_message_header`: the status line and every header go out in one write
/// (upstream made four per header, each taking the connection's writer lock).
#[test]
fn the_status_line_and_headers_are_written_at_once() {
    let mut response = Response::from_string("hello");
    for name in ["X-A", "X-B", "X-C", "X-D"] {
        response.add_header(Header::from_bytes(name.as_bytes(), &b"value"[..]).unwrap());
    }
    let mut writes = Writes::default();
    response
        .raw_print(&mut writes, HTTPVersion(1, 1), &[], false, None)
        .expect("writing");
    let first = String::from_utf8(writes.0[0].clone()).expect("text");
    assert!(
        first.starts_with("HTTP/1.1 200 OK\r\n") && first.ends_with("\r\n\r\n"),
        "the first write is not the whole head: {:?}",
        first
    );
    for name in ["X-A", "X-B", "X-C", "X-D", "Content-Length", "Date"] {
        assert!(
            first.contains(&format!("\r\n{name}: ")),
            "{} missing: {:?}",
            name,
            first
        );
    }
    assert_eq!(writes.0[1..].concat(), b"hello");
}

/// Row "name, `Server` header": a response names the server `authkeys-http`, so that a scanner
/// does not take the fork for tiny-http as published (upstream wrote `tiny-http (Rust)`).
#[test]
fn responses_name_the_server_authkeys_http_not_tiny_http() {
    let mut writes = Writes::default();
    Response::from_string("hello")
        .raw_print(&mut writes, HTTPVersion(1, 1), &[], false, None)
        .expect("writing");
    let head = String::from_utf8(writes.0[0].clone()).expect("text");
    assert!(
        head.contains("\r\nServer: authkeys-http\r\n") && !head.contains("tiny"),
        "{:?}",
        head
    );
}
