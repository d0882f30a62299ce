//! The tiny_http adapter on its own: a handler that panics answers 500 in the contract's
//! shape and the same server keeps answering, and shutdown joins every worker.

use authkeys::http::{Listener, Request, Response};
use std::sync::Arc;
use std::time::Duration;

fn get(url: &str) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent.get(url).call().expect("request");
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&body).unwrap_or_default())
}

#[test]
fn a_panicking_handler_is_a_500_and_the_server_keeps_serving() {
    let handler = |request: &Request| {
        if request.path == "/panic" {
            panic!("a bug in a handler");
        }
        Response::json(200, &serde_json::json!({"path": request.path}))
    };
    // One worker: the panic happens on the very thread that must answer the next request.
    let listener = Listener::start("127.0.0.1:0", Arc::new(handler), 1).expect("listening");
    let url = format!("http://{}", listener.address());
    for _ in 0..3 {
        let (status, body) = get(&format!("{url}/panic"));
        assert_eq!(status, 500);
        assert_eq!(body["error"]["code"], "internal");
        assert_eq!(body["error"]["message"], "internal error");
        let (status, body) = get(&format!("{url}/fine"));
        assert_eq!((status, body["path"].as_str()), (200, Some("/fine")));
    }
}

#[test]
fn shutdown_joins_the_workers_and_closes_the_port() {
    let handler = |_: &Request| Response::no_content();
    let mut listener = Listener::start("127.0.0.1:0", Arc::new(handler), 4).expect("listening");
    let address = listener.address();
    assert_eq!(get(&format!("http://{address}/")).0, 204);
    listener.shutdown();
    drop(listener);
    // tiny_http's accept thread notices the close flag on its own schedule: poll briefly.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "{address} still accepts connections"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
