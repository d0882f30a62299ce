//! authkeys patch: a strict decoder for a chunked request body (RFC 9112 §7.1). The
//! `chunked_transfer` decoder upstream used trims the chunk-size line and parses it with
//! `from_str_radix`, so `+b`, ` b`, `b ` and `b\t` were all read as 11: a size another parser
//! reads differently (or refuses) is a way to smuggle a request. Here a chunk size is
//! `1*HEXDIG`, optionally followed by `;` and extensions (ignored), and every line ends in CRLF.

use std::io::{Error as IoError, ErrorKind, Read};

/// Why a chunked body was not read.
#[derive(Debug)]
pub enum ChunkedError {
    /// A chunk-size line, a chunk's terminator or a trailer is malformed.
    Malformed,
    /// More than `max_body` decoded bytes, or a line longer than `max_line`.
    TooLarge,
    Io(IoError),
}

impl From<IoError> for ChunkedError {
    fn from(err: IoError) -> ChunkedError {
        ChunkedError::Io(err)
    }
}

/// Reads a whole chunked body, trailers included, and returns the decoded bytes.
pub fn read_chunked_body<R: Read>(
    source: &mut R,
    max_body: usize,
    max_line: usize,
) -> Result<Vec<u8>, ChunkedError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(source, max_line)?;
        let size = chunk_size(&line)?;
        if size == 0 {
            break;
        }
        if size > max_body.saturating_sub(body.len()) {
            return Err(ChunkedError::TooLarge);
        }
        let start = body.len();
        body.resize(start + size, 0);
        source.read_exact(&mut body[start..])?;
        if !read_line(source, max_line)?.is_empty() {
            return Err(ChunkedError::Malformed); // data longer than its declared size
        }
    }
    // Trailer fields (ignored) up to the empty line that ends the body.
    while !read_line(source, max_line)?.is_empty() {}
    Ok(body)
}

/// The size on a chunk-size line: `1*HEXDIG [ ";" extensions ]`.
fn chunk_size(line: &[u8]) -> Result<usize, ChunkedError> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(ChunkedError::Malformed);
    }
    let digits = std::str::from_utf8(digits).map_err(|_| ChunkedError::Malformed)?;
    // All hex digits, so the only possible failure is overflow: too large by far.
    usize::from_str_radix(digits, 16).map_err(|_| ChunkedError::TooLarge)
}

/// One line without its CRLF. A lone CR or LF, or a control character other than tab, is
/// malformed; a line longer than `max_line` is too large.
fn read_line<R: Read>(source: &mut R, max_line: usize) -> Result<Vec<u8>, ChunkedError> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    loop {
        if source.read(&mut byte)? == 0 {
            let eof = "the connection closed inside a chunked body";
            return Err(IoError::new(ErrorKind::UnexpectedEof, eof).into());
        }
        match byte[0] {
            b'\r' => break,
            b'\t' => {}
            b if b.is_ascii_control() || !b.is_ascii() => return Err(ChunkedError::Malformed),
            _ => {}
        }
        line.push(byte[0]);
        if line.len() > max_line {
            return Err(ChunkedError::TooLarge);
        }
    }
    source.read_exact(&mut byte)?;
    if byte[0] != b'\n' {
        return Err(ChunkedError::Malformed);
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::{read_chunked_body, ChunkedError};

    fn decode(wire: &str) -> Result<Vec<u8>, ChunkedError> {
        read_chunked_body(&mut wire.as_bytes(), 64, 32)
    }

    #[test]
    fn well_formed_bodies_decode_with_extensions_and_trailers() {
        assert_eq!(
            decode("b\r\nhello world\r\n0\r\n\r\n").unwrap(),
            b"hello world"
        );
        assert_eq!(
            decode("b;ext=1\r\nhello world\r\n0\r\n\r\n").unwrap(),
            b"hello world"
        );
        assert_eq!(
            decode("5\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n").unwrap(),
            b"hello!"
        );
        assert_eq!(decode("0\r\n\r\n").unwrap(), b"");
    }

    #[test]
    fn anything_but_hex_digits_in_a_chunk_size_is_malformed() {
        for size in ["+b", " b", "b ", "b\t", "", "-1", "0x5", "zz", "b\t;e"] {
            let wire = format!("{size}\r\nhello world\r\n0\r\n\r\n");
            assert!(
                matches!(decode(&wire), Err(ChunkedError::Malformed)),
                "{:?} was accepted",
                size
            );
        }
    }

    #[test]
    fn bad_terminators_and_sizes_are_refused() {
        assert!(matches!(
            decode("5\nhello\r\n0\r\n\r\n"),
            Err(ChunkedError::Malformed)
        ));
        assert!(matches!(
            decode("5\r\nhello!\r\n0\r\n\r\n"),
            Err(ChunkedError::Malformed)
        ));
        assert!(matches!(decode("41\r\n"), Err(ChunkedError::TooLarge)));
        assert!(matches!(
            decode("fffffffffffffffffff\r\n"),
            Err(ChunkedError::TooLarge)
        ));
        assert!(matches!(decode("5\r\nhel"), Err(ChunkedError::Io(_))));
    }
}
