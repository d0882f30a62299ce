//! A webhook receiver for the tests: a small HTTP/1.1 server on std::net (one thread, one
//! request per connection) that checks each delivery's signature and records it, and can be
//! told to fail, stall, redirect, answer with a huge body, or stop and start again on the same
//! port.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Accept,
    /// 500.
    Fail,
    /// Reads the request, then says nothing for this long.
    Stall(Duration),
    /// 302 to another path.
    Redirect,
    /// 200 with a 10 MB body.
    Huge,
}

/// One delivery as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub webhook: String,
    pub seq: i64,
    pub event: Value,
    pub signature_ok: bool,
    pub answered: Behaviour,
}

pub struct Receiver {
    pub address: SocketAddr,
    /// Each webhook's secret, by id.
    secrets: Arc<Mutex<HashMap<String, String>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the receiver");
        let mut receiver = Receiver {
            address: listener.local_addr().unwrap(),
            secrets: Arc::default(),
            behaviour: Arc::new(Mutex::new(Behaviour::Accept)),
            received: Arc::default(),
            stop: Arc::default(),
            thread: None,
        };
        receiver.serve(listener);
        receiver
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    /// The secret to check webhook `id`'s signatures with.
    pub fn set_secret(&self, id: &str, secret: &str) {
        self.secrets
            .lock()
            .unwrap()
            .insert(id.to_string(), secret.to_string());
    }

    pub fn behave(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Stops listening: connections are refused until `restart`.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.address);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the receiver thread panicked");
        }
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) {
        self.stop.store(false, Ordering::SeqCst);
        let listener = TcpListener::bind(self.address).expect("binding the receiver again");
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let (secrets, behaviour, received, stop) = (
            Arc::clone(&self.secrets),
            Arc::clone(&self.behaviour),
            Arc::clone(&self.received),
            Arc::clone(&self.stop),
        );
        self.thread = Some(std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let answered = *behaviour.lock().unwrap();
                let secrets = secrets.lock().unwrap().clone();
                if let Some(delivery) = handle(stream, &secrets, answered) {
                    received.lock().unwrap().push(delivery);
                }
            }
        }));
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads one request, answers as told, and returns what was delivered.
fn handle(
    stream: TcpStream,
    secrets: &HashMap<String, String>,
    answered: Behaviour,
) -> Option<Received> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        headers.push(line);
    }
    let header = |name: &str| {
        headers.iter().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    };
    let length: usize = header("Content-Length")?.parse().ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let webhook = header("Authkeys-Webhook-Id")?;
    let secret = secrets.get(&webhook)?;
    let signature_ok =
        header("Authkeys-Signature").is_some_and(|signature| verify(secret, &signature, &body));
    let event: Value = serde_json::from_slice(&body).ok()?;
    let seq: i64 = header("Authkeys-Event-Seq")?.parse().ok()?;
    assert_eq!(event["seq"], seq, "the header and the body name one event");
    let mut stream = stream;
    let _ = match answered {
        Behaviour::Accept => stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"),
        Behaviour::Fail => stream.write_all(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ),
        Behaviour::Stall(wait) => {
            std::thread::sleep(wait);
            Ok(())
        }
        Behaviour::Redirect => stream.write_all(
            b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ),
        Behaviour::Huge => {
            let size = 10 * 1024 * 1024;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n");
            stream
                .write_all(head.as_bytes())
                .and_then(|()| stream.write_all(&vec![b'x'; size]))
        }
    };
    Some(Received {
        webhook,
        seq,
        event,
        signature_ok,
        answered,
    })
}

/// Checks `t=…,v1=…` against HMAC-SHA256(secret, "<t>.<body>"), and that `t` is recent.
fn verify(secret: &str, signature: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in signature.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => return false,
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - t).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}
