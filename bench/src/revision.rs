//! `authkeys-bench revision --authkeys PATH --seeder PATH [--name NAME] [--quick]`:
//! random-token whoami of another build of authkeys (an earlier revision, built by
//! `scripts/compare-revision`; NAME in the table) and of this one, each against this tree's
//! lookup server on its own database, round by round in one run.
//!
//! The scale scenario's ratio to one lookup moves with the lookup server as well as with
//! authkeys: the lookup runs on authkeys-http, so making the fork cheaper speeds it up too and
//! lowers the ratio of an unchanged authkeys. Two builds measured against the same lookup
//! server in the same run tell whether authkeys itself got faster or slower. Each build reads
//! a database seeded by its own `authkeys-bench seed` (`--seeder`), in its own schema.
//!
//! Each round loads a build's authkeys, then its lookup, as the scale scenario does: what a
//! server's sweeper still writes after its load (the last usage stamps) falls on its own
//! lookup's load, not on the other build's.

use crate::orchestrate::{Harness, Row, load_figure, render_by, row};
use crate::wrk::{Load, Request};
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) fn revision_command(args: &[String]) -> Result<(), String> {
    let required = |name: &str| {
        crate::flag(args, name)
            .map(PathBuf::from)
            .ok_or_else(|| format!("{name} is required"))
    };
    let (other, seeder) = (required("--authkeys")?, required("--seeder")?);
    let other_name =
        crate::flag(args, "--name").map_or_else(|| other.display().to_string(), str::to_string);
    let h = Harness::new(args.iter().any(|a| a == "--quick"))?;
    let (ours_db, ours_tokens) = h.seed_scale("ours")?;
    let (other_db, other_tokens) = seed_with(&h, &seeder, "other")?;
    let servers = [
        h.authkeys_from(&other, &other_db, &[], "authkeys-other")?,
        h.ceiling("lookup", Some(&other_db), "lookup-other")?,
        h.authkeys(&ours_db, &[], "authkeys-ours")?,
        h.ceiling("lookup", Some(&ours_db), "lookup-ours")?,
    ];
    let other_tokens = other_tokens.to_string_lossy();
    let ours_tokens = ours_tokens.to_string_lossy();
    let whoami = |tokens_file| Request::GetRandomBearer {
        path: "/v1/auth/whoami",
        tokens_file,
    };
    let (other_whoami, ours_whoami) = (whoami(&other_tokens), whoami(&ours_tokens));
    let requests = [&other_whoami, &other_whoami, &ours_whoami, &ours_whoami];
    let loads: Vec<_> = servers
        .iter()
        .zip(requests)
        .map(|(server, request)| (server.url.as_str(), request))
        .collect();
    let medians = h.interleaved_loads(&loads, 32)?;
    if let Some(failed) = medians.iter().find(|load| load.failures > 0) {
        // A build answering 401 (a database it cannot read) would look fast.
        return Err(format!(
            "failed requests: {}; see the logs in {}",
            load_figure(failed),
            h.work.display()
        ));
    }
    let mut rows = Vec::new();
    rows.extend(build_rows(&h, &other_name, &medians[0], &medians[1]));
    rows.extend(build_rows(&h, "this tree", &medians[2], &medians[3]));
    println!("{}", render_by("authkeys-bench revision", &h.plan, &rows));
    Ok(())
}

/// One build's two rows: its lookup, and its whoami as a share of that lookup.
fn build_rows(h: &Harness, build: &str, authkeys: &Load, lookup: &Load) -> [Row; 2] {
    let rows_n = h.plan.scale_rows;
    [
        row(
            &format!("ceiling: one lookup, {rows_n} rows, random tokens ({build}'s database)"),
            load_figure(lookup),
            "",
            None,
        ),
        row(
            &format!("whoami, random tokens: {build}"),
            format!(
                "{} = {:.0}% of lookup",
                load_figure(authkeys),
                authkeys.rps / lookup.rps * 100.0
            ),
            "",
            None,
        ),
    ]
}

/// The scale database (`Harness::scale_seed`), seeded by another build's `authkeys-bench
/// seed`, then synced, as this build's seeding is: pages still being written back would slow
/// the first rounds.
fn seed_with(h: &Harness, seeder: &Path, name: &str) -> Result<(PathBuf, PathBuf), String> {
    let (db, tokens) = h.seed_paths(name);
    let seed = h.scale_seed();
    let status = Command::new(seeder)
        .arg("seed")
        .arg("--db")
        .arg(&db)
        .args(["--keys", &seed.keys.to_string()])
        .args(["--machines", &seed.machines.to_string()])
        .arg("--tokens")
        .arg(&tokens)
        .status()
        .map_err(|err| format!("running {}: {err}", seeder.display()))?;
    if !status.success() {
        return Err(format!("{} seed failed: {status}", seeder.display()));
    }
    for file in [&db, &tokens] {
        std::fs::File::open(file)
            .and_then(|file| file.sync_all())
            .map_err(|err| format!("syncing {}: {err}", file.display()))?;
    }
    Ok((db, tokens))
}
