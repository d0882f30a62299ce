//! The PostgreSQL run: three nodes on one database of a throwaway cluster
//! (`scripts/pg-throwaway start target/pg-bench`, or `AUTHKEYS_BENCH_POSTGRES_URL`), each figure
//! against a SQLite node measured in the same run on the same data: the PostgreSQL databases
//! are `authkeys migrate`d copies of the SQLite ones, so the very same tokens work on every
//! server. Scenarios: hot whoami per node (target: at least 80% of the SQLite node), whoami
//! with random tokens over the scale database, login throughput (one node, and three at once),
//! and the time from a revocation's start to its return with three nodes that all had the
//! key's sessions cached.

use crate::orchestrate::{
    Harness, Row, Spawned, call, credentials, load_figure, login_session, render, row,
};
use crate::seed::Seed;
use crate::wrk::{self, Load, Request};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Nodes on one database, as in README's example.
const NODES: usize = 3;
/// Revocations timed per server in a full run (quick: a tenth).
const REVOCATIONS: usize = 200;

/// `authkeys-bench postgres [--quick]`: this scenario alone, its table printed.
pub fn postgres_command(quick: bool) -> Result<(), String> {
    let h = Harness::new(quick)?;
    let rows = postgres_rows(&h)?;
    println!("{}", render(&h.plan, &rows));
    Ok(())
}

pub(crate) fn postgres_rows(h: &Harness) -> Result<Vec<Row>, String> {
    let cluster = cluster_url()?;
    let mut rows = Vec::new();

    // The hot token and key: made on a SQLite node, then the file copied to PostgreSQL.
    let (small_db, _) = h.seed(
        "pg-small",
        &Seed {
            keys: 100,
            machines: 1000,
            expired: false,
        },
    )?;
    let (key, session) = {
        let sqlite = h.authkeys(&small_db, &[], "pg-small-setup")?;
        credentials(&sqlite.url, "hot", json!({"reusable": true}))?
    };
    let small_url = fresh_database(&cluster, "authkeys_bench_small")?;
    migrate(h, &small_db, &small_url)?;
    let sqlite = h.authkeys(&small_db, &[], "pg-sqlite-small")?;
    let nodes = (0..NODES)
        .map(|n| h.authkeys(Path::new(&small_url), &[], &format!("pg-node-{n}")))
        .collect::<Result<Vec<Spawned>, String>>()?;
    let mut urls = vec![sqlite.url.as_str()];
    urls.extend(nodes.iter().map(|node| node.url.as_str()));

    let c = 32;
    let whoami = Request::Get {
        path: "/v1/auth/whoami",
        bearer: Some(&session),
    };
    let loads = h.interleaved(&urls, &whoami, c)?;
    rows.push(row(
        &format!("whoami, hot token, {c} connections: the SQLite node (baseline)"),
        load_figure(&loads[0]),
        "",
        None,
    ));
    for (n, load) in loads[1..].iter().enumerate() {
        rows.push(against_sqlite(
            &format!(
                "whoami, hot token, {c} connections: PostgreSQL node {} of {NODES}",
                n + 1
            ),
            load,
            &loads[0],
            Some(0.8),
        ));
    }

    let login_body = json!({"auth_key": key}).to_string();
    let login = Request::PostJson {
        path: "/v1/auth/login",
        body: &login_body,
    };
    let (sqlite_login, node_login) = h.compare(urls[0], urls[1], &login, 16)?;
    rows.push(row(
        "login with its audit event, 16 connections: the SQLite node (baseline)",
        load_figure(&sqlite_login),
        "",
        None,
    ));
    rows.push(against_sqlite(
        "login with its audit event, 16 connections: one PostgreSQL node",
        &node_login,
        &sqlite_login,
        None,
    ));
    let together = at_once(&urls[1..], &login, 16, h.plan.seconds)?;
    rows.push(against_sqlite(
        &format!("login, {NODES} PostgreSQL nodes × 16 connections at once (total)"),
        &together,
        &sqlite_login,
        None,
    ));

    let revocations = if h.plan.quick {
        REVOCATIONS / 10
    } else {
        REVOCATIONS
    };
    let on_sqlite = revocation_times(&urls[..1], revocations)?;
    let on_nodes = revocation_times(&urls[1..], revocations)?;
    rows.push(row(
        &format!(
            "revoke, start to return, {NODES} PostgreSQL nodes that all cached the key's \
             sessions ({revocations} revocations)"
        ),
        format!(
            "p50 {:.2} ms, p99 {:.2} ms = {:.1}× / {:.1}× the SQLite node's (p50 {:.2} ms, \
             p99 {:.2} ms)",
            on_nodes.0,
            on_nodes.1,
            on_nodes.0 / on_sqlite.0,
            on_nodes.1 / on_sqlite.1,
            on_sqlite.0,
            on_sqlite.1
        ),
        "",
        None,
    ));
    drop((sqlite, nodes));

    // Random tokens over the scale database, copied the same way.
    let n = h.plan.scale_rows;
    let (large_db, large_tokens) = h.seed_scale("pg-large")?;
    let large_url = fresh_database(&cluster, "authkeys_bench_large")?;
    let copying = migrate(h, &large_db, &large_url)?;
    rows.push(row(
        &format!("authkeys migrate of {n} keys + {n} machines into PostgreSQL"),
        format!("{:.1} s", copying.as_secs_f64()),
        "",
        None,
    ));
    let sqlite = h.authkeys(&large_db, &[], "pg-sqlite-large")?;
    let node = h.authkeys(Path::new(&large_url), &[], "pg-node-large")?;
    let tokens_file = large_tokens.to_string_lossy().to_string();
    let random = Request::GetRandomBearer {
        path: "/v1/auth/whoami",
        tokens_file: &tokens_file,
    };
    let (sqlite_random, node_random) = h.compare(&sqlite.url, &node.url, &random, c)?;
    rows.push(row(
        &format!("whoami, {n} keys + {n} machines, random tokens: the SQLite node (baseline)"),
        load_figure(&sqlite_random),
        "",
        None,
    ));
    rows.push(against_sqlite(
        &format!("whoami, {n} keys + {n} machines, random tokens: one PostgreSQL node"),
        &node_random,
        &sqlite_random,
        None,
    ));
    Ok(rows)
}

/// A row of `load` as a share of the SQLite node's; judged against `least` if given.
fn against_sqlite(scenario: &str, load: &Load, sqlite: &Load, least: Option<f64>) -> Row {
    let ratio = load.rps / sqlite.rps;
    row(
        scenario,
        format!(
            "{} = {:.0}% of the SQLite node",
            load_figure(load),
            ratio * 100.0
        ),
        &least.map_or(String::new(), |least| {
            format!("≥ {:.0}% of the SQLite node", least * 100.0)
        }),
        least.map(|least| ratio >= least && load.failures == 0),
    )
}

/// The same load on every url at once; the rates summed, the worst latencies kept.
fn at_once(
    urls: &[&str],
    request: &Request,
    connections: u32,
    seconds: u64,
) -> Result<Load, String> {
    let loads = std::thread::scope(|scope| {
        let runs: Vec<_> = urls
            .iter()
            .map(|url| scope.spawn(move || wrk::run(url, request, connections, seconds)))
            .collect();
        runs.into_iter()
            .map(|run| run.join().expect("a load thread"))
            .collect::<Result<Vec<Load>, String>>()
    })?;
    Ok(Load {
        rps: loads.iter().map(|load| load.rps).sum(),
        p50_ms: loads.iter().map(|load| load.p50_ms).fold(0.0, f64::max),
        p99_ms: loads.iter().map(|load| load.p99_ms).fold(0.0, f64::max),
        failures: loads.iter().map(|load| load.failures).sum(),
    })
}

/// Times `rounds` revocations (p50, p99 in ms): each round creates a key, logs a machine in
/// through every server and has each one answer its whoami (so every node caches it), then
/// revokes the key on the next server in turn, timing the DELETE from its start to its return.
fn revocation_times(urls: &[&str], rounds: usize) -> Result<(f64, f64), String> {
    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let created = call(
            urls[0],
            "POST",
            "/v1/apps/hot/keys",
            Some(json!({"reusable": true})),
        )?;
        let (key, id) = (
            created["key"].as_str().unwrap_or(""),
            created["id"].as_str().unwrap_or(""),
        );
        for url in urls {
            whoami(url, &login_session(url, key)?)?;
        }
        let started = Instant::now();
        call(
            urls[round % urls.len()],
            "DELETE",
            &format!("/v1/apps/hot/keys/{id}"),
            None,
        )?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let percentile =
        |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
    Ok((percentile(0.5), percentile(0.99)))
}

fn whoami(url: &str, session: &str) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    agent
        .get(&format!("{url}/v1/auth/whoami"))
        .header("Authorization", &format!("Bearer {session}"))
        .call()
        .map(drop)
        .map_err(|err| format!("whoami on {url}: {err}"))
}

/// The throwaway cluster's URL (its maintenance database `postgres`).
fn cluster_url() -> Result<String, String> {
    if let Ok(url) = std::env::var("AUTHKEYS_BENCH_POSTGRES_URL") {
        return Ok(url);
    }
    let output = Command::new("scripts/pg-throwaway")
        .args(["start", "target/pg-bench"])
        .output()
        .map_err(|err| format!("running scripts/pg-throwaway: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "scripts/pg-throwaway start target/pg-bench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Drops (if left by an earlier run) and creates database `name`; returns its URL.
fn fresh_database(cluster: &str, name: &str) -> Result<String, String> {
    let mut client = postgres::Client::connect(cluster, postgres::NoTls)
        .map_err(|err| format!("connecting to the benchmark's PostgreSQL: {err}"))?;
    // One statement each: neither may run inside a transaction block.
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        client
            .batch_execute(&statement)
            .map_err(|err| format!("{statement}: {err}"))?;
    }
    let base = cluster
        .rsplit_once('/')
        .ok_or("a URL without a database")?
        .0;
    Ok(format!("{base}/{name}"))
}

/// `authkeys migrate --from db --to url`; returns how long it took.
fn migrate(h: &Harness, db: &Path, url: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let output = Command::new(&h.authkeys)
        .args(["migrate", "--from"])
        .arg(db)
        .args(["--to", url])
        .output()
        .map_err(|err| format!("running authkeys migrate: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "authkeys migrate: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    eprintln!("  {}", String::from_utf8_lossy(&output.stdout).trim());
    Ok(started.elapsed())
}
