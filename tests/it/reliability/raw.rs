//! A raw HTTP/1.1 keep-alive connection: for bytes an ordinary client will not send (invalid
//! UTF-8, NUL bytes), for several requests on one socket, and for a chosen source address on
//! the loopback network (any of 127.0.0.0/8), so that a test can be two different clients.
//! Responses are parsed with `httparse`.

use serde_json::Value;
use socket2::{Domain, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Conn {
    stream: TcpStream,
    /// Bytes read past the end of the last response.
    pending: Vec<u8>,
}

#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub json: Value,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::support::header(&self.headers, name)
    }

    /// The contract's error code, if the body is an error.
    pub fn code(&self) -> Option<&str> {
        self.json["error"]["code"].as_str()
    }
}

/// The server's socket address from its `http://IP:PORT` URL.
pub fn server_addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|err| panic!("{url} is not http://IP:PORT: {err}"))
}

impl Conn {
    pub fn open(url: &str) -> Conn {
        Conn::try_open(url, None).unwrap_or_else(|err| panic!("connecting to {url}: {err}"))
    }

    /// Connects from `source` (e.g. 127.0.0.2), so the server sees another client.
    pub fn open_from(url: &str, source: IpAddr) -> Conn {
        Conn::try_open(url, Some(source))
            .unwrap_or_else(|err| panic!("connecting to {url} from {source}: {err}"))
    }

    pub fn try_open(url: &str, source: Option<IpAddr>) -> io::Result<Conn> {
        let server = server_addr(url);
        let socket = Socket::new(Domain::for_address(server), Type::STREAM, None)?;
        if let Some(source) = source {
            socket.bind(&SocketAddr::new(source, 0).into())?;
        }
        socket.connect_timeout(&server.into(), TIMEOUT)?;
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            pending: Vec::new(),
        })
    }

    /// Sends one request and reads its response; panics on a transport error.
    pub fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> RawReply {
        self.try_send(method, target, headers, body)
            .unwrap_or_else(|err| panic!("{method} {target}: {err}"))
    }

    /// A JSON POST.
    pub fn post(&mut self, target: &str, bearer: Option<&str>, body: &Value) -> RawReply {
        let bytes = serde_json::to_vec(body).expect("serialising a test body");
        let authorization = bearer.map(|token| format!("Bearer {token}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(authorization) = &authorization {
            headers.push(("Authorization", authorization));
        }
        self.send("POST", target, &headers, &bytes)
    }

    /// Sends one request and reads its response. A server that died or closed the connection
    /// is an `Err`, so a caller can tell an unanswered request from an answered one.
    pub fn try_send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<RawReply> {
        let mut request = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n").into_bytes();
        for (name, value) in headers {
            request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        request.extend_from_slice(body);
        self.stream.write_all(&request)?;
        self.read_response()
    }

    /// Sends bytes as they are: part of a request, say.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads the response to what `write_raw` sent.
    pub fn read_reply(&mut self) -> io::Result<RawReply> {
        self.read_response()
    }

    /// Whether the server closes the connection (EOF or reset) within `wait`, sending nothing.
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        self.stream
            .set_read_timeout(Some(wait))
            .expect("setting a read timeout");
        let closed = match self.stream.read(&mut [0u8; 1]) {
            Ok(0) => true,
            Ok(_) => false,
            Err(err) => !matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        };
        self.stream
            .set_read_timeout(Some(TIMEOUT))
            .expect("setting a read timeout");
        closed
    }

    fn read_response(&mut self) -> io::Result<RawReply> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let parsed = response
                .parse(&self.pending)
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
            if let httparse::Status::Complete(head_len) = parsed {
                let status = response.code.expect("a complete response has a status");
                let headers: Vec<(String, String)> = response
                    .headers
                    .iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value).into_owned();
                        (h.name.to_string(), value)
                    })
                    .collect();
                let length = crate::support::header(&headers, "Content-Length")
                    .map(|value| value.trim().parse::<usize>())
                    .transpose()
                    .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?
                    .unwrap_or(0);
                self.fill(head_len + length)?;
                let body = self.pending[head_len..head_len + length].to_vec();
                self.pending.drain(..head_len + length);
                let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                return Ok(RawReply {
                    status,
                    headers,
                    body,
                    json,
                });
            }
            self.read_more()?;
        }
    }

    fn fill(&mut self, len: usize) -> io::Result<()> {
        while self.pending.len() < len {
            self.read_more()?;
        }
        Ok(())
    }

    fn read_more(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let read = self.stream.read(&mut chunk)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.pending.extend_from_slice(&chunk[..read]);
        Ok(())
    }
}
