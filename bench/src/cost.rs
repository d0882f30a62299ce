//! `authkeys-bench cost`: what one request costs the server, in instructions (callgrind) and
//! system calls (`strace -c`), for authkeys and for the empty server on unmodified tiny_http.
//! Both counts are deterministic enough to compare on a loaded machine, where wall-clock
//! throughput is not.
//!
//! Each figure is the difference between two runs of the server under the tool, one sent
//! `SHORT` requests and one `SHORT + MEASURED`, over one keep-alive connection, divided by
//! `MEASURED`: start-up, set-up requests and shutdown cancel out. Voluntary context switches
//! (summed over the server's threads from `/proc`, no tool) are counted across the `MEASURED`
//! requests of one run.

use crate::orchestrate::{ADMIN_TOKEN, hot_credentials};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SHORT: usize = 200;
const MEASURED: usize = 1000;

/// The requests measured, as wrk sends them.
#[derive(Clone, Copy)]
enum Scenario {
    Healthz,
    Whoami,
    Verify,
}

const SCENARIOS: [Scenario; 3] = [Scenario::Healthz, Scenario::Whoami, Scenario::Verify];

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Healthz => "/healthz",
            Scenario::Whoami => "whoami, hot",
            Scenario::Verify => "verify, hot",
        }
    }

    fn request(self, host: &str, key: &str, session: &str) -> Vec<u8> {
        match self {
            Scenario::Healthz => format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            Scenario::Whoami => format!(
                "GET /v1/auth/whoami HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {session}\r\n\r\n"
            ),
            Scenario::Verify => {
                let body = json!({ "key": key }).to_string();
                format!(
                    "POST /v1/keys/verify HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
        }
        .into_bytes()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Callgrind,
    Strace,
    /// None: the server runs as it is, for its context switches.
    Bare,
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Upstream,
    Authkeys,
}

struct Paths {
    authkeys: PathBuf,
    upstream: PathBuf,
    work: PathBuf,
}

/// One server process under a tool, with the file the tool writes its counts to.
struct Traced {
    child: Child,
    url: String,
    out: PathBuf,
}

impl Traced {
    fn start(paths: &Paths, tool: Tool, target: Target, name: &str) -> Result<Traced, String> {
        let out = paths.work.join(format!("{name}.out"));
        let _ = std::fs::remove_file(&out);
        let db = paths.work.join(format!("{name}.db"));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        let mut command = match tool {
            Tool::Callgrind => {
                let mut c = Command::new("valgrind");
                c.args([
                    "--tool=callgrind",
                    "--dump-instr=no",
                    "--compress-strings=no",
                ])
                .arg(format!("--callgrind-out-file={}", out.display()));
                c
            }
            Tool::Strace => {
                let mut c = Command::new("strace");
                c.args(["-f", "-c", "-o"]).arg(&out);
                c
            }
            Tool::Bare => match target {
                Target::Upstream => Command::new(&paths.upstream),
                Target::Authkeys => Command::new(&paths.authkeys),
            },
        };
        match (tool, target) {
            (Tool::Bare, _) => &mut command,
            (_, Target::Upstream) => command.arg(&paths.upstream),
            (_, Target::Authkeys) => command.arg(&paths.authkeys),
        };
        match target {
            Target::Upstream => &mut command,
            Target::Authkeys => command
                .args(["serve", "--listen", "127.0.0.1:0", "--db"])
                .arg(&db)
                .env("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN)
                .env("RUST_LOG", "info"),
        };
        let log = std::fs::File::create(paths.work.join(format!("{name}.log")))
            .map_err(|err| err.to_string())?;
        // Its own process group, so that `stop` reaches the server itself, not only the tool
        // (strace does not pass a SIGTERM on to the process it traces).
        let mut child = command
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|err| format!("spawning {command:?}: {err}"))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .map_err(|err| err.to_string())?;
        let ready: serde_json::Value =
            serde_json::from_str(&line).map_err(|err| format!("{line:?}: {err}"))?;
        let url = ready["url"].as_str().ok_or("no url")?.to_string();
        Ok(Traced { child, url, out })
    }

    /// Stops the server with SIGTERM (the tool writes its counts as the process ends).
    fn stop(mut self) -> Result<PathBuf, String> {
        let status = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status()
            .map_err(|err| err.to_string())?;
        if !status.success() {
            return Err("kill -TERM failed".into());
        }
        let _ = self.child.wait();
        Ok(self.out.clone())
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request` `count` times over one keep-alive connection, reading each response whole.
fn send(url: &str, request: &[u8], count: usize) -> Result<(), String> {
    let address = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).map_err(|err| err.to_string())?;
    exchange(&mut stream, request, count)
}

/// Sends `request` `count` times on `stream`, reading each response whole.
fn exchange(stream: &mut TcpStream, request: &[u8], count: usize) -> Result<(), String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|err| err.to_string())?;
    let mut buffer = Vec::with_capacity(4096);
    for _ in 0..count {
        stream.write_all(request).map_err(|err| err.to_string())?;
        buffer.clear();
        loop {
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk).map_err(|err| err.to_string())?;
            if read == 0 {
                return Err("the server closed the connection".into());
            }
            buffer.extend_from_slice(&chunk[..read]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) =
                response.parse(&buffer).map_err(|err| err.to_string())?
            {
                if response.code != Some(200) {
                    return Err(format!("status {:?}", response.code));
                }
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                    .ok_or("a response without Content-Length")?;
                if buffer.len() >= head + length {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Total instructions in a callgrind output file.
fn callgrind_total(out: &Path) -> Result<f64, String> {
    let text = std::fs::read_to_string(out).map_err(|err| format!("{}: {err}", out.display()))?;
    text.lines()
        .find_map(|line| {
            line.strip_prefix("totals:")
                .or(line.strip_prefix("summary:"))
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no totals in {}", out.display()))
}

/// Calls per system call name in an `strace -c` output file.
fn strace_calls(out: &Path) -> Result<Vec<(String, f64)>, String> {
    let text = std::fs::read_to_string(out).map_err(|err| format!("{}: {err}", out.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // % time, seconds, usecs/call, calls, [errors,] syscall
            if fields.len() < 5 || fields[0].parse::<f64>().is_err() {
                return None;
            }
            let name = fields.last()?.to_string();
            (name != "total").then(|| Some((name, fields[3].parse().ok()?)))?
        })
        .collect())
}

/// Voluntary context switches (a thread going to sleep) so far, summed over the process's
/// threads: involuntary ones count the machine's other load.
fn context_switches(pid: u32) -> f64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|line| line.starts_with("voluntary_ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Context switches per request: one bare run, counted across `MEASURED` requests after
/// set-up and `SHORT` warm-up requests.
fn switches_per_request(
    paths: &Paths,
    target: Target,
    scenario: Scenario,
    credentials: &mut Option<(String, String)>,
) -> Result<f64, String> {
    let name = format!("bare-{}", scenario.name().replace(['/', ',', ' '], ""));
    let server = Traced::start(paths, Tool::Bare, target, &name)?;
    if target == Target::Authkeys {
        *credentials = Some(hot_credentials(&server.url)?);
    }
    let (key, session) = credentials.as_ref().ok_or("authkeys runs first")?;
    let host = server.url.trim_start_matches("http://").to_string();
    let request = scenario.request(&host, key, session);
    let mut stream = TcpStream::connect(&host).map_err(|err| err.to_string())?;
    exchange(&mut stream, &request, SHORT)?;
    let before = context_switches(server.child.id());
    exchange(&mut stream, &request, MEASURED)?;
    let after = context_switches(server.child.id());
    Ok((after - before) / MEASURED as f64)
}

/// One run: start under `tool`, set up, send `count` requests, stop; the tool's output file.
fn one_run(
    paths: &Paths,
    tool: Tool,
    target: Target,
    scenario: Scenario,
    count: usize,
    credentials: &mut Option<(String, String)>,
) -> Result<PathBuf, String> {
    let name = format!(
        "{}-{}-{}-{count}",
        if tool == Tool::Callgrind {
            "callgrind"
        } else {
            "strace"
        },
        if target == Target::Upstream {
            "upstream"
        } else {
            "authkeys"
        },
        scenario.name().replace(['/', ',', ' '], "")
    );
    let server = Traced::start(paths, tool, target, &name)?;
    if target == Target::Authkeys {
        *credentials = Some(hot_credentials(&server.url)?);
    }
    let (key, session) = credentials.as_ref().ok_or("authkeys runs first")?;
    let host = server.url.trim_start_matches("http://").to_string();
    send(&server.url, &scenario.request(&host, key, session), count)?;
    server.stop()
}

pub fn cost_command() -> Result<(), String> {
    let bench = std::env::current_exe().map_err(|err| err.to_string())?;
    let release = bench.parent().ok_or("no binary directory")?;
    let paths = Paths {
        authkeys: release.join("authkeys"),
        upstream: release.join("authkeys-upstream-ceiling"),
        work: release.join("cost-work"),
    };
    std::fs::create_dir_all(&paths.work).map_err(|err| err.to_string())?;
    println!(
        "Per request, over one keep-alive connection ({MEASURED} requests, minus a run of {SHORT}):\n"
    );
    println!(
        "| request | server | instructions | syscalls | syscalls by name | voluntary context switches |\n\
         |---|---|---|---|---|---|"
    );
    let mut credentials = None;
    for scenario in SCENARIOS {
        for target in [Target::Authkeys, Target::Upstream] {
            let mut per_tool = Vec::new();
            for tool in [Tool::Callgrind, Tool::Strace] {
                let short = one_run(&paths, tool, target, scenario, SHORT, &mut credentials)?;
                let long = one_run(
                    &paths,
                    tool,
                    target,
                    scenario,
                    SHORT + MEASURED,
                    &mut credentials,
                )?;
                per_tool.push((short, long));
            }
            let n = MEASURED as f64;
            let instructions =
                (callgrind_total(&per_tool[0].1)? - callgrind_total(&per_tool[0].0)?) / n;
            let (short, long) = (strace_calls(&per_tool[1].0)?, strace_calls(&per_tool[1].1)?);
            let mut by_name: Vec<(String, f64)> = long
                .iter()
                .map(|(name, calls)| {
                    let before = short.iter().find(|(n, _)| n == name).map_or(0.0, |c| c.1);
                    (name.clone(), (calls - before) / n)
                })
                .filter(|(_, per)| *per >= 0.05)
                .collect();
            by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
            let total: f64 = by_name.iter().map(|(_, per)| per).sum();
            let switches = switches_per_request(&paths, target, scenario, &mut credentials)?;
            let names: Vec<String> = by_name
                .iter()
                .map(|(name, per)| format!("{name} {per:.1}"))
                .collect();
            println!(
                "| {} | {} | {instructions:.0} | {total:.1} | {} | {switches:.2} |",
                scenario.name(),
                if target == Target::Upstream {
                    "tiny_http 0.12.0"
                } else {
                    "authkeys"
                },
                names.join(", ")
            );
        }
    }
    Ok(())
}
