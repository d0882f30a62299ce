//! Runs `wrk` (keep-alive HTTP load, C, epoll) with a generated Lua script whose `done`
//! callback prints one JSON line of results, so nothing parses wrk's human output.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One load run's results.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Socket errors plus responses with status ≥ 400.
    pub failures: u64,
}

/// What to send.
pub enum Request<'a> {
    Get {
        path: &'a str,
        bearer: Option<&'a str>,
    },
    PostJson {
        path: &'a str,
        body: &'a str,
    },
    /// GET `path` with a bearer token drawn at random from `tokens_file` (one per line).
    GetRandomBearer {
        path: &'a str,
        tokens_file: &'a str,
    },
}

const DONE: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"failures":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50), latency:percentile(99)))
end
"#;

fn script(request: &Request) -> String {
    let setup = match request {
        Request::Get { path, bearer } => {
            let auth = bearer
                .map(|t| format!("wrk.headers[\"Authorization\"] = \"Bearer {t}\"\n"))
                .unwrap_or_default();
            format!("wrk.method = \"GET\"\nwrk.path = \"{path}\"\n{auth}")
        }
        Request::PostJson { path, body } => format!(
            "wrk.method = \"POST\"\nwrk.path = \"{path}\"\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[{body}]]\n"
        ),
        Request::GetRandomBearer { path, tokens_file } => format!(
            "local tokens = nil\n\
             init = function(args)\n\
               tokens = {{}}\n\
               for line in io.lines(\"{tokens_file}\") do tokens[#tokens + 1] = line end\n\
               math.randomseed(os.time() + tonumber(tostring(tokens):sub(8), 16))\n\
             end\n\
             request = function()\n\
               local t = tokens[math.random(#tokens)]\n\
               return wrk.format(\"GET\", \"{path}\", {{[\"Authorization\"] = \"Bearer \" .. t}})\n\
             end\n"
        ),
    };
    format!("{setup}{DONE}")
}

/// Runs wrk against `url` with `connections` keep-alive connections for `seconds`.
pub fn run(url: &str, request: &Request, connections: u32, seconds: u64) -> Result<Load, String> {
    let dir = std::env::temp_dir().join(format!("authkeys-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|err| err.to_string())?;
    // Several loads run at once (three nodes): each gets its own script, or one run's write
    // truncates the file another wrk is reading and that run prints no result.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let script_path = dir.join(format!("load-{}.lua", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&script_path, script(request)).map_err(|err| err.to_string())?;
    warm_up(url, connections + 8)?;
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
        ])
        .arg("-s")
        .arg(&script_path)
        .arg(url)
        .output()
        .map_err(|err| format!("running wrk (is it installed?): {err}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .ok_or_else(|| {
            format!(
                "wrk printed no result:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let json: serde_json::Value = serde_json::from_str(line).map_err(|err| err.to_string())?;
    let number = |name: &str| json[name].as_f64().unwrap_or(0.0);
    Ok(Load {
        rps: number("requests") / (number("duration_us") / 1e6),
        p50_ms: number("p50_us") / 1000.0,
        p99_ms: number("p99_us") / 1000.0,
        failures: number("failures") as u64,
    })
}

/// Opens `connections` keep-alive connections one after another, each answered before the
/// next opens, and closes them all, so that a server with a thread per connection starts the
/// run with that many threads.
///
/// tiny_http 0.12.0 as published needs it to be measured fairly: its `TaskPool` spawns a
/// thread for a new connection only when it sees no idle one, and counts a woken thread idle
/// until it runs, so when wrk opens 32 connections at once most are queued behind the few
/// threads that took the first ones, and those connections are never served for the whole run
/// (4 of 32 answered in one second, measured). wrk records no latency for a request that never
/// completes, so the ceiling would report the throughput and p99 of the few connections it
/// serves. Warmed, its idle threads outnumber wrk's connections and every connection is served.
/// Every server measured is warmed alike.
fn warm_up(url: &str, connections: u32) -> Result<(), String> {
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let mut open = Vec::new();
    for _ in 0..connections {
        let mut stream = TcpStream::connect(address).map_err(|err| format!("warm-up: {err}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|err| err.to_string())?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
            .map_err(|err| format!("warm-up: {err}"))?;
        // The first bytes of the answer are enough: a thread has taken the connection.
        let mut first = [0u8; 1];
        stream
            .read_exact(&mut first)
            .map_err(|err| format!("warm-up: no answer from {address}: {err}"))?;
        open.push(stream);
    }
    Ok(())
}
