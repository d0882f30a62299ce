//! The reference servers every ratio is measured against: authkeys-http with the same number of
//! worker threads as authkeys, answering a small JSON body either directly (`empty`) or after
//! one indexed SQLite lookup of the bearer token's hash (`lookup`). As authkeys does, the empty
//! server answers on the connection's own thread (authkeys-http's inline handler: what is in
//! memory needs no handoff), and the lookup server on its workers (what reads a database is
//! bounded by them).

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub fn serve(args: &[String]) -> Result<(), String> {
    let lookup = match args.first().map(String::as_str) {
        Some("empty") => false,
        Some("lookup") => true,
        _ => return Err("ceiling takes empty or lookup".into()),
    };
    let db = crate::flag(args, "--db").unwrap_or(":memory:").to_string();
    let inline = (!lookup).then(|| {
        Arc::new(|request: authkeys_http::Request| {
            let _ = request.respond(empty_response());
            None
        }) as Arc<authkeys_http::InlineHandler>
    });
    let server = authkeys_http::Server::new(authkeys_http::ServerConfig {
        addr: authkeys_http::ConfigListenAddr::from_socket_addrs("127.0.0.1:0")
            .map_err(|err| err.to_string())?,
        limits: authkeys_http::Limits::default(),
        inline,
    })
    .map_err(|err| err.to_string())?;
    let address = server.server_addr().to_ip().expect("an IP listener");
    let server = Arc::new(server);
    let workers: Vec<_> = (0..authkeys::config::DEFAULT_WORKERS)
        .map(|_| {
            let server = Arc::clone(&server);
            let db = db.clone();
            std::thread::spawn(move || {
                let conn = lookup.then(|| {
                    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                    Connection::open_with_flags(&db, flags).expect("opening the database")
                });
                while let Ok(request) = server.recv() {
                    let response = match &conn {
                        None => empty_response(),
                        Some(conn) => json_response(lookup_body(conn, &request)),
                    };
                    let _ = request.respond(response);
                }
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({"url": format!("http://{address}")})
    );
    for worker in workers {
        let _ = worker.join();
    }
    Ok(())
}

fn empty_response() -> authkeys_http::Response<std::io::Cursor<Vec<u8>>> {
    json_response(r#"{"status":"ok"}"#.to_string())
}

fn json_response(body: String) -> authkeys_http::Response<std::io::Cursor<Vec<u8>>> {
    let header = authkeys_http::Header::from_bytes("Content-Type", "application/json")
        .expect("a valid header");
    authkeys_http::Response::from_string(body).with_header(header)
}

fn lookup_body(conn: &Connection, request: &authkeys_http::Request) -> String {
    let token = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().trim_start_matches("Bearer ").to_string())
        .unwrap_or_default();
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let found: Option<String> = conn
        .prepare_cached("SELECT id FROM machines WHERE token_hash = ?1")
        .and_then(|mut stmt| stmt.query_row([&hash[..]], |row| row.get(0)).optional())
        .expect("the lookup query");
    serde_json::json!({"machine": found}).to_string()
}
