//! The benchmark's second ceiling: an empty server on tiny_http 0.12.0 exactly as published
//! on crates.io (this crate is outside the authkeys workspace, so its `[patch.crates-io]`, the
//! hardened fork, does not apply). Worker threads loop on `recv()` and answer every request
//! with the same small JSON body as `authkeys-bench ceiling empty`, so the difference between
//! the two ceilings is the cost of the fork's patches.
//!
//! Usage: `authkeys-upstream-ceiling [--workers N]` (default 4); prints `{"url":"http://…"}`.

use std::sync::Arc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let workers = match args.iter().position(|a| a == "--workers") {
        Some(i) => match args.get(i + 1).and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n > 0 => n,
            _ => {
                eprintln!("authkeys-upstream-ceiling: --workers takes a positive number");
                std::process::exit(2);
            }
        },
        None => 4,
    };
    let server = match tiny_http::Server::http("127.0.0.1:0") {
        Ok(server) => Arc::new(server),
        Err(err) => {
            eprintln!("authkeys-upstream-ceiling: listening: {err}");
            std::process::exit(1);
        }
    };
    let address = server.server_addr().to_ip().expect("an IP listener");
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let server = Arc::clone(&server);
            std::thread::spawn(move || {
                let header = tiny_http::Header::from_bytes("Content-Type", "application/json")
                    .expect("a valid header");
                while let Ok(request) = server.recv() {
                    let response = tiny_http::Response::from_string(r#"{"status":"ok"}"#)
                        .with_header(header.clone());
                    let _ = request.respond(response);
                }
            })
        })
        .collect();
    println!("{{\"url\":\"http://{address}\"}}");
    for thread in threads {
        let _ = thread.join();
    }
}
