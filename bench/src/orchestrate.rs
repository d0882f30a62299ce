//! `authkeys-bench run`: every scenario of the benchmark, in one run, with ratios against
//! baselines measured in the same run. Prints the table and writes it (full runs only) to
//! BENCHMARKS.md with the machine it ran on.

use crate::seed::{Seed, insert_loop, seed_database};
use crate::wrk::{self, Load, Request};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub(crate) const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";

/// Worker threads of the unmodified tiny_http ceiling: the usual `recv()` loop on 4 threads.
const UPSTREAM_WORKERS: usize = 4;

/// Sizes and durations: the full run, or a quick one for CI that only proves the harness works.
pub(crate) struct Plan {
    pub(crate) quick: bool,
    pub(crate) rounds: usize,
    pub(crate) seconds: u64,
    sweep_seconds: u64,
    pub(crate) scale_rows: u64,
    medium_rows: u64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                rounds: 1,
                seconds: 1,
                sweep_seconds: 3,
                scale_rows: 10_000,
                medium_rows: 2_000,
            }
        } else {
            Plan {
                quick,
                // Five interleaved rounds: this machine's speed drifts by up to a third within
                // a minute, and a median of three moved the scale ratio by several points
                // between otherwise identical runs.
                rounds: 5,
                seconds: 5,
                sweep_seconds: 30,
                scale_rows: 1_000_000,
                medium_rows: 20_000,
            }
        }
    }
}

/// A server process started for a scenario; killed on drop.
pub(crate) struct Spawned {
    child: Child,
    pub(crate) url: String,
    log: PathBuf,
    startup: Duration,
}

impl Spawned {
    pub(crate) fn start(mut command: Command, log: PathBuf) -> Result<Spawned, String> {
        let log_file = std::fs::File::create(&log).map_err(|err| err.to_string())?;
        let started = Instant::now();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|err| format!("spawning {command:?}: {err}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| format!("no ready line; see {}", log.display()))?;
        let startup = started.elapsed();
        let ready: Value = serde_json::from_str(&line).map_err(|err| format!("{line:?}: {err}"))?;
        let url = ready["url"]
            .as_str()
            .ok_or("ready line without url")?
            .to_string();
        Ok(Spawned {
            child,
            url,
            log,
            startup,
        })
    }

    /// Peak resident memory of the process so far, in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(f64::NAN);
        kib / 1024.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) struct Harness {
    pub(crate) plan: Plan,
    pub(crate) work: PathBuf,
    pub(crate) authkeys: PathBuf,
    bench: PathBuf,
    upstream: PathBuf,
}

impl Harness {
    /// The harness of a run: the binaries beside this one, a fresh work directory.
    pub(crate) fn new(quick: bool) -> Result<Harness, String> {
        let bench = std::env::current_exe().map_err(|err| err.to_string())?;
        let release = bench.parent().ok_or("no binary directory")?.to_path_buf();
        let work = release.join("bench-work");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(|err| err.to_string())?;
        Ok(Harness {
            plan: Plan::new(quick),
            work,
            authkeys: release.join("authkeys"),
            bench,
            upstream: release.join("authkeys-upstream-ceiling"),
        })
    }

    pub(crate) fn authkeys(
        &self,
        db: &Path,
        extra: &[&str],
        name: &str,
    ) -> Result<Spawned, String> {
        self.authkeys_from(&self.authkeys, db, extra, name)
    }

    /// `authkeys serve` of the binary at `binary` (this build's, or another revision's).
    pub(crate) fn authkeys_from(
        &self,
        binary: &Path,
        db: &Path,
        extra: &[&str],
        name: &str,
    ) -> Result<Spawned, String> {
        let mut command = Command::new(binary);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(extra)
            .env("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "info");
        Spawned::start(command, self.work.join(format!("{name}.log")))
    }

    pub(crate) fn ceiling(
        &self,
        mode: &str,
        db: Option<&Path>,
        name: &str,
    ) -> Result<Spawned, String> {
        let mut command = Command::new(&self.bench);
        command.args(["ceiling", mode]);
        if let Some(db) = db {
            command.arg("--db").arg(db);
        }
        Spawned::start(command, self.work.join(format!("{name}.log")))
    }

    /// The empty server on unmodified tiny_http 0.12.0 (`bench/upstream-ceiling`).
    fn upstream_ceiling(&self) -> Result<Spawned, String> {
        let mut command = Command::new(&self.upstream);
        command.args(["--workers", &UPSTREAM_WORKERS.to_string()]);
        Spawned::start(command, self.work.join("ceiling-upstream.log"))
    }

    /// The medians (see `median`) of `rounds` runs.
    pub(crate) fn load(
        &self,
        url: &str,
        request: &Request,
        connections: u32,
    ) -> Result<Load, String> {
        let runs = (0..self.plan.rounds)
            .map(|_| wrk::run(url, request, connections, self.plan.seconds))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(median(runs))
    }

    /// Loads a reference server and authkeys with the same requests, alternating round by
    /// round so that drift in the machine's load affects both alike; returns both medians.
    pub(crate) fn compare(
        &self,
        reference: &str,
        ours: &str,
        request: &Request,
        connections: u32,
    ) -> Result<(Load, Load), String> {
        let medians = self.interleaved(&[reference, ours], request, connections)?;
        Ok((medians[0], medians[1]))
    }

    /// Loads each server in turn with the same requests, round by round, so that drift in
    /// the machine's load affects all alike; returns each one's median, in order.
    pub(crate) fn interleaved(
        &self,
        urls: &[&str],
        request: &Request,
        connections: u32,
    ) -> Result<Vec<Load>, String> {
        let loads: Vec<_> = urls.iter().map(|url| (*url, request)).collect();
        self.interleaved_loads(&loads, connections)
    }

    /// As `interleaved`, each server with its own requests.
    pub(crate) fn interleaved_loads(
        &self,
        loads: &[(&str, &Request)],
        connections: u32,
    ) -> Result<Vec<Load>, String> {
        let mut runs = vec![Vec::new(); loads.len()];
        for _ in 0..self.plan.rounds {
            for ((url, request), runs) in loads.iter().zip(&mut runs) {
                let load = wrk::run(url, request, connections, self.plan.seconds)?;
                eprintln!("    {url}: {}", load_figure(&load));
                runs.push(load);
            }
        }
        Ok(runs.into_iter().map(median).collect())
    }

    /// The small database of the hot requests: 100 keys, `plan.medium_rows` machines.
    pub(crate) fn seed_small(&self) -> Result<(PathBuf, PathBuf), String> {
        self.seed(
            "small",
            &Seed {
                keys: 100,
                machines: self.plan.medium_rows,
                expired: false,
            },
        )
    }

    /// The scale database (`scale_seed`).
    pub(crate) fn seed_scale(&self, name: &str) -> Result<(PathBuf, PathBuf), String> {
        self.seed(name, &self.scale_seed())
    }

    /// The scale database's seed: as many keys as machines, `plan.scale_rows` of each.
    pub(crate) fn scale_seed(&self) -> Seed {
        Seed {
            keys: self.plan.scale_rows,
            machines: self.plan.scale_rows,
            expired: false,
        }
    }

    /// Where the database named `name` and its tokens go.
    pub(crate) fn seed_paths(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.work.join(format!("{name}.db")),
            self.work.join(format!("{name}.tokens")),
        )
    }

    pub(crate) fn seed(&self, name: &str, seed: &Seed) -> Result<(PathBuf, PathBuf), String> {
        let (db, tokens) = self.seed_paths(name);
        let started = Instant::now();
        seed_database(&db, seed, &tokens)?;
        eprintln!(
            "  seeded {name}: {} keys, {} machines in {:.1}s",
            seed.keys,
            seed.machines,
            started.elapsed().as_secs_f64()
        );
        Ok((db, tokens))
    }
}

/// Each figure's own median over `runs` (the rate's, p50's and p99's, each taken apart);
/// failures are summed over all runs. A p99 is taken apart from the rate because a round's
/// tail moves with what else the machine does during it: the fork's empty server, which runs
/// no code of ours, had rounds at 1.1–1.7 ms among others at 0.45–0.6 ms, so the p99 of
/// whichever round had the median rate was a draw.
pub(crate) fn median(runs: Vec<Load>) -> Load {
    fn middle(runs: &[Load], figure: fn(&Load) -> f64) -> f64 {
        let mut figures: Vec<f64> = runs.iter().map(figure).collect();
        figures.sort_by(f64::total_cmp);
        figures[figures.len() / 2]
    }
    Load {
        rps: middle(&runs, |run| run.rps),
        p50_ms: middle(&runs, |run| run.p50_ms),
        p99_ms: middle(&runs, |run| run.p99_ms),
        failures: runs.iter().map(|run| run.failures).sum(),
    }
}

/// An admin or anonymous call used to set a scenario up.
pub(crate) fn call(
    url: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let target = format!("{url}{path}");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let mut response = match (method, body) {
        ("POST", Some(body)) => agent
            .post(&target)
            .header("Authorization", &auth)
            .send_json(body),
        ("DELETE", _) => agent.delete(&target).header("Authorization", &auth).call(),
        _ => agent.get(&target).header("Authorization", &auth).call(),
    }
    .map_err(|err| err.to_string())?;
    let status = response.status().as_u16();
    if status == 204 {
        return Ok(Value::Null);
    }
    let body = response
        .body_mut()
        .read_json::<Value>()
        .map_err(|err| err.to_string())?;
    if status >= 400 {
        return Err(format!("{method} {path}: {status} {body}"));
    }
    Ok(body)
}

/// Creates an app and a reusable key, logs one machine in; returns (key, session token).
pub(crate) fn hot_credentials(url: &str) -> Result<(String, String), String> {
    credentials(url, "hot", json!({"reusable": true}))
}

/// Creates an app and a reusable key with 8 tags and 1 KiB of metadata (serialized), logs
/// one machine in with it; returns (key, session token).
fn tagged_credentials(url: &str) -> Result<(String, String), String> {
    let tags: Vec<String> = (0..8).map(|n| format!("tag:team-{n}")).collect();
    // {"note":"…"} is 11 bytes around the value.
    let metadata = json!({"note": "m".repeat(1024 - 11)});
    debug_assert_eq!(metadata.to_string().len(), 1024);
    let body = json!({"reusable": true, "tags": tags, "metadata": metadata});
    credentials(url, "tagged", body)
}

/// Creates app `app` and a key of `key_body` in it, logs one machine in with the key;
/// returns (key, session token).
pub(crate) fn credentials(
    url: &str,
    app: &str,
    key_body: Value,
) -> Result<(String, String), String> {
    call(url, "POST", "/v1/apps", Some(json!({"id": app})))?;
    let key = call(url, "POST", &format!("/v1/apps/{app}/keys"), Some(key_body))?;
    let key = key["key"]
        .as_str()
        .ok_or_else(|| format!("no key in the response: {key}"))?
        .to_string();
    let session = login_session(url, &key)?;
    Ok((key, session))
}

/// Logs a machine in with `key`; returns its session token.
pub(crate) fn login_session(url: &str, key: &str) -> Result<String, String> {
    let login = call(
        url,
        "POST",
        "/v1/auth/login",
        Some(json!({"auth_key": key})),
    )?;
    Ok(login["session_token"]
        .as_str()
        .ok_or("no session token")?
        .to_string())
}

/// `/healthz`, hot whoami and hot verify on authkeys at `url` against the two empty ceilings
/// (tiny_http 0.12.0 as published, and the fork), interleaved round by round: the ceilings'
/// rows and one row per request with its target.
fn hot_against_ceilings(
    h: &Harness,
    url: &str,
    key: &str,
    session: &str,
    c: u32,
) -> Result<Vec<Row>, String> {
    let whoami_request = Request::Get {
        path: "/v1/auth/whoami",
        bearer: Some(session),
    };
    let verify_body = json!({"key": key}).to_string();
    let verify_request = Request::PostJson {
        path: "/v1/keys/verify",
        body: &verify_body,
    };
    // The reference servers get exactly the traffic authkeys gets: tiny_http's cost grows
    // with the request's size, so a shorter request would flatter the ceiling. Two empty
    // ceilings: tiny_http as published (what the HTTP layer could cost) and the hardened fork
    // authkeys runs on (so the cost of the fork's patches shows apart from authkeys' own).
    let upstream = h.upstream_ceiling()?;
    let empty = h.ceiling("empty", None, "ceiling-empty")?;
    let healthz_request = Request::Get {
        path: "/healthz",
        bearer: None,
    };
    let servers = [upstream.url.as_str(), empty.url.as_str(), url];
    let mut measured = Vec::new();
    for (name, request) in [
        ("/healthz", &healthz_request),
        ("whoami, hot token", &whoami_request),
        ("keys/verify, hot key", &verify_request),
    ] {
        measured.push((name, h.interleaved(&servers, request, c)?));
    }
    let mut rows = Vec::new();
    for (name, loads) in &measured {
        rows.push(row(
            &format!(
                "ceilings ({name}'s requests): tiny_http 0.12.0 as published, \
                 {UPSTREAM_WORKERS} workers / authkeys-http (the fork), {} workers",
                authkeys::config::DEFAULT_WORKERS
            ),
            format!("{} / {}", load_figure(&loads[0]), load_figure(&loads[1])),
            "",
            None,
        ));
    }
    for ((name, loads), least) in measured.iter().zip([0.90, 0.85, 0.85]) {
        let (upstream, fork, ours) = (&loads[0], &loads[1], &loads[2]);
        let ratio = ours.rps / upstream.rps;
        rows.push(row(
            &format!("{name}, {c} connections"),
            format!(
                "{} = {:.0}% of tiny_http 0.12.0, {:.0}% of the fork; p99 {:.1}× tiny_http's",
                load_figure(ours),
                ratio * 100.0,
                ours.rps / fork.rps * 100.0,
                ours.p99_ms / upstream.p99_ms
            ),
            &format!(
                "≥ {:.0}% of tiny_http 0.12.0, p99 ≤ 1.5× its p99",
                least * 100.0
            ),
            Some(ratio >= least && ours.p99_ms <= 1.5 * upstream.p99_ms && ours.failures == 0),
        ));
    }
    Ok(rows)
}

/// `authkeys-bench hot [--quick] [-- SERVE-FLAGS…]`: the hot requests against the ceilings
/// alone (about 4 minutes), authkeys started with the given `serve` flags.
pub(crate) fn hot_command(quick: bool, serve_flags: &[&str]) -> Result<(), String> {
    let h = Harness::new(quick)?;
    let (db, _) = h.seed_small()?;
    let server = h.authkeys(&db, serve_flags, "authkeys-small")?;
    let (key, session) = hot_credentials(&server.url)?;
    let rows = hot_against_ceilings(&h, &server.url, &key, &session, 32)?;
    println!("{}", render(&h.plan, &rows));
    Ok(())
}

/// Hot whoami, verify and forward auth of a machine whose key has 8 tags and 1 KiB of
/// metadata, against the empty server (the fork) on the same requests, interleaved. The
/// issue's target: hot whoami at least 80% of the empty server; verify and forward auth are
/// held to the same.
fn key_policy_hot(
    h: &Harness,
    empty: &str,
    ours: &str,
    connections: u32,
) -> Result<Vec<Row>, String> {
    let (key, session) = tagged_credentials(ours)?;
    let verify_body = json!({"key": key}).to_string();
    let requests = [
        (
            "whoami",
            Request::Get {
                path: "/v1/auth/whoami",
                bearer: Some(&session),
            },
        ),
        (
            "keys/verify",
            Request::PostJson {
                path: "/v1/keys/verify",
                body: &verify_body,
            },
        ),
        (
            "forward-auth",
            Request::Get {
                path: "/v1/forward-auth",
                bearer: Some(&session),
            },
        ),
    ];
    let mut rows = Vec::new();
    for (name, request) in &requests {
        let (ceiling, load) = h.compare(empty, ours, request, connections)?;
        let ratio = load.rps / ceiling.rps;
        rows.push(row(
            &format!("{name}, hot, key with 8 tags + 1 KiB metadata, {connections} connections"),
            format!(
                "{} = {:.0}% of the empty server ({:.0} req/s)",
                load_figure(&load),
                ratio * 100.0,
                ceiling.rps
            ),
            "≥ 80% of the empty server",
            Some(ratio >= 0.8 && load.failures == 0),
        ));
    }
    Ok(rows)
}

/// One row of the result table.
pub(crate) struct Row {
    scenario: String,
    figure: String,
    target: String,
    ok: Option<bool>,
}

pub(crate) fn row(scenario: &str, figure: String, target: &str, ok: Option<bool>) -> Row {
    Row {
        scenario: scenario.into(),
        figure,
        target: target.into(),
        ok,
    }
}

pub(crate) fn load_figure(load: &Load) -> String {
    format!(
        "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} failed",
        load.rps, load.p50_ms, load.p99_ms, load.failures
    )
}

pub fn run(quick: bool) -> Result<(), String> {
    let h = Harness::new(quick)?;
    let release = h.bench.parent().ok_or("no binary directory")?.to_path_buf();
    let mut rows = Vec::new();
    let c = 32;

    eprintln!("ceilings, whoami and verify on a small database");
    let (small_db, small_tokens) = h.seed_small()?;
    let server = h.authkeys(&small_db, &[], "authkeys-small")?;
    let (key, session) = hot_credentials(&server.url)?;
    let whoami_request = Request::Get {
        path: "/v1/auth/whoami",
        bearer: Some(&session),
    };
    rows.extend(hot_against_ceilings(&h, &server.url, &key, &session, c)?);
    let lookup = h.ceiling("lookup", Some(&small_db), "ceiling-lookup-small")?;
    let lookup_whoami = h.load(&lookup.url, &whoami_request, c)?;
    drop(lookup);
    rows.push(row(
        "ceiling: + one indexed SQLite lookup (whoami's requests)",
        load_figure(&lookup_whoami),
        "",
        None,
    ));
    eprintln!("key policy: 8 tags and 1 KiB of metadata per key");
    let empty = h.ceiling("empty", None, "ceiling-empty-policy")?;
    let policy_rows = key_policy_hot(&h, &empty.url, &server.url, c)?;
    drop(empty);
    rows.extend(policy_rows);
    let login_body = json!({"auth_key": key}).to_string();
    let login = h.load(
        &server.url,
        &Request::PostJson {
            path: "/v1/auth/login",
            body: &login_body,
        },
        16,
    )?;
    let baseline_db = h
        .seed(
            "baseline",
            &Seed {
                keys: 1,
                machines: 0,
                expired: false,
            },
        )?
        .0;
    let mut direct: Vec<f64> = (0..h.plan.rounds)
        .map(|_| insert_loop(&baseline_db, Duration::from_secs(h.plan.seconds)))
        .collect::<Result<_, _>>()?;
    direct.sort_by(f64::total_cmp);
    let direct = direct[direct.len() / 2];
    let ratio = login.rps / direct;
    rows.push(row(
        // A login writes its audit event (`machine.logged_in`) in its own transaction; the
        // baseline does not, so the event's cost counts against the ratio.
        "login with its audit event, 16 connections (synchronous=FULL)",
        format!("{} = {:.0}% of direct", load_figure(&login), ratio * 100.0),
        "≥ 50% of direct",
        Some(ratio >= 0.5 && login.failures == 0),
    ));
    rows.push(row(
        "baseline: the login's insert+commit via rusqlite, in a loop",
        format!("{direct:.0} commits/s"),
        "",
        None,
    ));

    eprintln!("WAL under sustained mixed load");
    let wal = mixed_load_wal(&h, &server, &key, &small_tokens)?;
    rows.push(row(
        "WAL size, mixed login/verify/whoami, readers always active",
        format!("max {wal:.1} MiB"),
        "≤ 64 MiB",
        Some(wal <= 64.0),
    ));
    let small_rss = server.peak_rss_mib();
    rows.push(row(
        "peak RSS under load, small database",
        format!("{small_rss:.1} MiB"),
        "≤ 32 MiB",
        Some(small_rss <= 32.0),
    ));
    drop(server);

    eprintln!("scale");
    rows.extend(scale(&h, c)?);

    eprintln!("sweep under load");
    rows.extend(sweep_under_load(&h)?);

    eprintln!("PostgreSQL: three nodes on one database, against a SQLite node");
    rows.extend(crate::postgres_run::postgres_rows(&h)?);

    eprintln!("authkeys scan against grep");
    let target = release.parent().ok_or("no target directory")?;
    let (scenario, figure, goal, met) = crate::scan::scan_vs_grep(&h.authkeys, target, quick)?;
    rows.push(row(&scenario, figure, goal, Some(met)));

    let table = render(&h.plan, &rows);
    println!("{table}");
    if !h.plan.quick {
        let earlier = std::fs::read_to_string("BENCHMARKS.md").unwrap_or_default();
        let file = with_earlier_runs(&table, &earlier);
        std::fs::write("BENCHMARKS.md", file).map_err(|err| err.to_string())?;
        eprintln!("wrote BENCHMARKS.md");
    }
    Ok(())
}

/// Runs kept in BENCHMARKS.md, newest first: figures are quoted as medians over them.
const RUNS_KEPT: usize = 5;
const RUN_HEADING: &str = "\n## Run of ";

/// BENCHMARKS.md with this run's table first and up to `RUNS_KEPT - 1` earlier runs after it.
fn with_earlier_runs(table: &str, earlier: &str) -> String {
    let mut runs = vec![format!(
        "{}{}\n\n{table}",
        RUN_HEADING.trim_start(),
        authkeys::Timestamp::now().to_rfc3339()
    )];
    runs.extend(
        earlier
            .split(RUN_HEADING)
            .skip(1)
            .take(RUNS_KEPT - 1)
            .map(|run| format!("{}{}", RUN_HEADING.trim_start(), run.trim_end())),
    );
    format!(
        "# Benchmarks\n\nEach full `scripts/bench` run adds its table here, newest first; the \
         last {RUNS_KEPT} are kept. The machine's speed drifts between runs, so quote the median \
         of a figure over several runs, and compare ratios only within one run. What a request \
         costs in instructions and system calls, and why: docs/per-request-cost.md.\n\n{}\n",
        runs.join("\n\n")
    )
}

/// Runs logins, verifies and whoamis (over more sessions than the cache holds, so readers
/// are always in the database) at once, sampling the WAL's size; returns its maximum in MiB.
fn mixed_load_wal(h: &Harness, server: &Spawned, key: &str, tokens: &Path) -> Result<f64, String> {
    let wal = h.work.join("small.db-wal");
    let seconds = h.plan.seconds * 2;
    let url = server.url.clone();
    let login_body = json!({"auth_key": key}).to_string();
    let verify_body = json!({"key": key}).to_string();
    let tokens_file = tokens.to_string_lossy().to_string();
    let max = std::thread::scope(|scope| {
        let loads = [
            scope.spawn(|| {
                wrk::run(
                    &url,
                    &Request::PostJson {
                        path: "/v1/auth/login",
                        body: &login_body,
                    },
                    4,
                    seconds,
                )
            }),
            scope.spawn(|| {
                wrk::run(
                    &url,
                    &Request::PostJson {
                        path: "/v1/keys/verify",
                        body: &verify_body,
                    },
                    8,
                    seconds,
                )
            }),
            scope.spawn(|| {
                wrk::run(
                    &url,
                    &Request::GetRandomBearer {
                        path: "/v1/auth/whoami",
                        tokens_file: &tokens_file,
                    },
                    12,
                    seconds,
                )
            }),
        ];
        let mut max: u64 = 0;
        while loads.iter().any(|load| !load.is_finished()) {
            max = max.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(50));
        }
        for load in loads {
            load.join().expect("a load thread")?;
        }
        Ok::<u64, String>(max)
    })?;
    Ok(max as f64 / (1024.0 * 1024.0))
}

/// `authkeys-bench scale [--quick]`: only the scale scenario (random-token whoami against one
/// lookup on the large database, its peak RSS and start-up).
pub(crate) fn scale_command(quick: bool) -> Result<(), String> {
    let h = Harness::new(quick)?;
    let rows = scale(&h, 32)?;
    println!("{}", render(&h.plan, &rows));
    Ok(())
}

/// The scale database: whoami with random tokens against one indexed lookup, interleaved,
/// the peak RSS meanwhile and the start-up time.
fn scale(h: &Harness, c: u32) -> Result<Vec<Row>, String> {
    let rows_n = h.plan.scale_rows;
    let (large_db, large_tokens) = h.seed_scale("large")?;
    let tokens_file = large_tokens.to_string_lossy().to_string();
    let random = Request::GetRandomBearer {
        path: "/v1/auth/whoami",
        tokens_file: &tokens_file,
    };
    let mut rows = Vec::new();
    let mut startups = Vec::new();
    for n in 0..h.plan.rounds {
        startups.push(
            h.authkeys(&large_db, &[], &format!("startup-{n}"))?
                .startup
                .as_secs_f64()
                * 1000.0,
        );
    }
    startups.sort_by(f64::total_cmp);
    let startup = startups[startups.len() / 2];
    let server = h.authkeys(&large_db, &[], "authkeys-large")?;
    let lookup = h.ceiling("lookup", Some(&large_db), "ceiling-lookup-large")?;
    let (lookup_large, scale) = h.compare(&lookup.url, &server.url, &random, c)?;
    let large_rss = server.peak_rss_mib();
    drop((server, lookup));
    let ratio = scale.rps / lookup_large.rps;
    rows.push(row(
        &format!("ceiling: one lookup, {rows_n} rows, random tokens"),
        load_figure(&lookup_large),
        "",
        None,
    ));
    rows.push(row(
        &format!("whoami, {rows_n} keys + {rows_n} machines, random tokens"),
        format!("{} = {:.0}% of lookup", load_figure(&scale), ratio * 100.0),
        "≥ 90% of lookup",
        Some(ratio >= 0.9 && scale.failures == 0),
    ));
    rows.push(row(
        "peak RSS under load, large database",
        format!("{large_rss:.1} MiB"),
        "≤ 64 MiB",
        Some(large_rss <= 64.0),
    ));
    rows.push(row(
        "start-up to ready line, large database",
        format!("{startup:.1} ms"),
        "≤ 100 ms",
        Some(startup <= 100.0),
    ));
    Ok(rows)
}

pub(crate) fn sweep_command(quick: bool) -> Result<(), String> {
    let h = Harness::new(quick)?;
    let rows = sweep_under_load(&h)?;
    println!("{}", render(&h.plan, &rows));
    Ok(())
}

/// How often the probe logs a machine in while a sweep runs.
const LOGIN_PROBE_EVERY: Duration = Duration::from_millis(50);

/// A database of expired ephemeral machines, swept while clients verify a key and, every
/// `LOGIN_PROBE_EVERY`, one logs a machine in: logins write, so they wait for the sweep's
/// batches, which hold the write lock.
fn sweep_under_load(h: &Harness) -> Result<Vec<Row>, String> {
    let n = h.plan.scale_rows;
    let (db, _) = h.seed(
        "sweep",
        &Seed {
            keys: 1000,
            machines: n,
            expired: true,
        },
    )?;
    let server = h.authkeys(&db, &["--sweep-interval", "1"], "authkeys-sweep")?;
    let (key, _) = hot_credentials(&server.url)?;
    let body = json!({"key": key}).to_string();
    let verifying = std::sync::atomic::AtomicBool::new(true);
    let (load, mut logins) = std::thread::scope(|scope| {
        let probe = scope.spawn(|| {
            let mut took = Vec::new();
            while verifying.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                login_session(&server.url, &key)?;
                took.push(started.elapsed().as_secs_f64() * 1000.0);
                std::thread::sleep(LOGIN_PROBE_EVERY.saturating_sub(started.elapsed()));
            }
            Ok::<Vec<f64>, String>(took)
        });
        let load = wrk::run(
            &server.url,
            &Request::PostJson {
                path: "/v1/keys/verify",
                body: &body,
            },
            32,
            h.plan.sweep_seconds,
        );
        verifying.store(false, std::sync::atomic::Ordering::Relaxed);
        let logins = probe.join().expect("the login probe");
        Ok::<_, String>((load?, logins?))
    })?;
    // The sweeper logs one line per sweep that deleted anything, with its duration.
    let deadline = Instant::now() + Duration::from_secs(120);
    let swept_ms = loop {
        let log = std::fs::read_to_string(&server.log).unwrap_or_default();
        if let Some(ms) = log.lines().find_map(|line| {
            let rest = line.split("swept ").nth(1)?;
            let (count, rest) = rest.split_once(' ')?;
            (count.parse::<u64>().ok()? >= n).then_some(())?;
            rest.split(" in ")
                .nth(1)?
                .trim_end_matches(" ms")
                .parse::<f64>()
                .ok()
        }) {
            break ms;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the sweep did not finish; see {}",
                server.log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if logins.is_empty() {
        return Err("no login completed while the sweep ran".into());
    }
    logins.sort_by(f64::total_cmp);
    let percentile = |p: f64| logins[((logins.len() - 1) as f64 * p).round() as usize];
    let (login_p99, login_max) = (percentile(0.99), percentile(1.0));
    Ok(vec![
        row(
            &format!("keys/verify while {n} expired machines are swept"),
            load_figure(&load),
            "p99 ≤ 10 ms, none failed",
            Some(load.p99_ms <= 10.0 && load.failures == 0),
        ),
        row(
            "one login every 50 ms meanwhile (a write: waits for the sweep's batches)",
            format!(
                "{} logins, p50 {:.1} ms, p99 {login_p99:.1} ms, max {login_max:.1} ms",
                logins.len(),
                percentile(0.5)
            ),
            "p99 ≤ 2 s",
            Some(login_p99 <= 2000.0),
        ),
        row(
            &format!("sweep of {n} expired machines"),
            format!("{:.1} s", swept_ms / 1000.0),
            "≤ 60 s",
            Some(swept_ms <= 60_000.0),
        ),
    ])
}

pub(crate) fn render(plan: &Plan, rows: &[Row]) -> String {
    render_by("scripts/bench", plan, rows)
}

/// The table, headed by what measured it (`by`), on which machine, and how.
pub(crate) fn render_by(by: &str, plan: &Plan, rows: &[Row]) -> String {
    let mut out = String::new();
    let machine = machine_description();
    let _ = writeln!(
        out,
        "Measured by `{by}`{} on {machine}. Load: wrk, 2 threads, keep-alive, on \
         loopback, sharing the machine's cores with the server. Each figure is the median of \
         {} rounds of {} s; ratios compare with baselines measured in the same run.\n",
        if plan.quick {
            " --quick (small sizes, no targets)"
        } else {
            ""
        },
        plan.rounds,
        plan.seconds
    );
    let _ = writeln!(
        out,
        "| scenario | measured | target | met |\n|---|---|---|---|"
    );
    for r in rows {
        let met = match (plan.quick, r.ok) {
            (_, None) => "",
            (true, Some(_)) => "(quick)",
            (false, Some(true)) => "yes",
            (false, Some(false)) => "**no**",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {met} |",
            r.scenario, r.figure, r.target
        );
    }
    out
}

fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or("?".to_string(), |kib| {
            format!("{:.0} GiB", kib / 1024.0 / 1024.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} × {model}, {memory} RAM, Linux {}", kernel.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_runs_first() {
        let mut file = "# Benchmarks\n\nan old single table\n".to_string();
        for n in 0..RUNS_KEPT + 2 {
            file = with_earlier_runs(&format!("table {n}\n"), &file);
        }
        let runs: Vec<&str> = file.split(RUN_HEADING).skip(1).collect();
        assert_eq!(runs.len(), RUNS_KEPT);
        let newest = RUNS_KEPT + 1;
        for (i, run) in runs.iter().enumerate() {
            assert!(run.contains(&format!("table {}", newest - i)), "{run}");
        }
        assert!(!file.contains("an old single table"));
        assert!(file.starts_with("# Benchmarks\n"));
    }
}
