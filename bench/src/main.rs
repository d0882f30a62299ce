//! `authkeys-bench`: the benchmark harness behind `scripts/bench`.
//!
//! - `run [--quick]` measures everything and prints (and writes) the table;
//! - `cost` counts instructions (callgrind) and system calls (strace) per request, for
//!   authkeys and for the empty server on unmodified tiny_http;
//! - `ceiling empty|lookup --db PATH` serves the two reference servers;
//! - `seed …` fills a database with millions of rows directly, not through HTTP;
//! - `insert-loop --db PATH --seconds N` is the login baseline: the same insert-and-commit
//!   done through rusqlite in a loop;
//! - `hot [--quick] [-- SERVE-FLAGS…]` runs only the hot requests of `run` (`/healthz`, whoami
//!   and verify against both empty ceilings), authkeys started with the `serve` flags given;
//! - `scale [--quick]` runs only the scale scenario of `run` (random-token whoami over the
//!   large database against one lookup, its RSS and start-up);
//! - `revision --authkeys PATH --seeder PATH [--name NAME] [--quick]` runs the scale
//!   scenario's random-token whoami for another build of authkeys (on a database seeded by its
//!   own `authkeys-bench`, `--seeder`) and for this one, each against this tree's lookup
//!   server on its own database, in one run (`scripts/compare-revision`);
//! - `sweep [--quick]` runs only the sweep under load scenario of `run`;
//! - `scan [--quick]` runs only the `authkeys scan` against grep scenario of `run`;
//! - `postgres [--quick]` runs only the PostgreSQL scenario of `run` (three nodes against a
//!   SQLite node).
//!
//! This is a measuring tool, not the product: it writes SQL directly where the product would
//! go through the store, to generate data fast and to measure SQLite itself.

mod ceiling;
mod cost;
mod orchestrate;
mod postgres_run;
mod revision;
mod scan;
mod seed;
mod wrk;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => orchestrate::run(args.iter().any(|a| a == "--quick")),
        Some("ceiling") => ceiling::serve(&args[1..]),
        Some("cost") => cost::cost_command(),
        Some("seed") => seed::seed_command(&args[1..]),
        Some("insert-loop") => seed::insert_loop_command(&args[1..]),
        Some("hot") => hot(&args[1..]),
        Some("revision") => revision::revision_command(&args[1..]),
        Some("scale") => orchestrate::scale_command(args.iter().any(|a| a == "--quick")),
        Some("sweep") => orchestrate::sweep_command(args.iter().any(|a| a == "--quick")),
        Some("scan") => scan::scan_command(args.iter().any(|a| a == "--quick")),
        Some("postgres") => postgres_run::postgres_command(args.iter().any(|a| a == "--quick")),
        _ => Err(
            "usage: authkeys-bench run [--quick] | cost | ceiling empty|lookup --db PATH | \
             seed --db PATH --keys N --machines N [--expired] --tokens PATH | \
             insert-loop --db PATH --seconds N | hot [--quick] [-- SERVE-FLAGS…] | scale [--quick] | \
             revision --authkeys PATH --seeder PATH [--name NAME] [--quick] | sweep [--quick] | scan [--quick] | \
             postgres [--quick]"
                .to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("authkeys-bench: error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `hot [--quick] [-- SERVE-FLAGS…]`: flags before `--` other than `--quick` are refused, so
/// a `serve` flag given without `--` cannot be silently left out of an A/B run.
fn hot(args: &[String]) -> Result<(), String> {
    let ours = args.iter().take_while(|arg| *arg != "--");
    let serve_flags: Vec<&str> = args
        .iter()
        .skip_while(|arg| *arg != "--")
        .skip(1)
        .map(String::as_str)
        .collect();
    let mut quick = false;
    for arg in ours {
        match arg.as_str() {
            "--quick" => quick = true,
            other => {
                return Err(format!(
                    "hot: unknown flag {other} (serve flags go after --)"
                ));
            }
        }
    }
    orchestrate::hot_command(quick, &serve_flags)
}

/// The value after `--name` in `args`.
pub fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// A required numeric flag.
pub fn number_flag(args: &[String], name: &str) -> Result<u64, String> {
    flag(args, name)
        .ok_or_else(|| format!("{name} is required"))?
        .parse()
        .map_err(|err| format!("{name}: {err}"))
}
