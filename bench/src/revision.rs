//! `authkeys-bench revision --authkeys PATH --seeder PATH [--name NAME] [--quick]`:
//! random-token whoami of another build of authkeys (an earlier revision, built by
//! `scripts/compare-revision`; NAME in the table) and of this one, each against one lookup on
//! its own database, round by round in one run.
//!
//! The scale scenario's ratio to one lookup moves with the lookup server as well as with
//! authkeys: the lookup runs on authkeys-http, so making the fork cheaper speeds it up too and
//! lowers the ratio of an unchanged authkeys. Two revisions measured against the same lookup
//! in the same run tell whether authkeys itself got faster or slower. Each revision reads a
//! database seeded by its own `authkeys-bench seed` (`--seeder`), in its own schema.

use crate::orchestrate::{Harness, load_figure, render, row};
use crate::wrk::Request;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) fn revision_command(args: &[String]) -> Result<(), String> {
    let required = |name: &str| {
        crate::flag(args, name)
            .map(PathBuf::from)
            .ok_or_else(|| format!("{name} is required"))
    };
    let (other, seeder) = (required("--authkeys")?, required("--seeder")?);
    let name =
        crate::flag(args, "--name").map_or_else(|| other.display().to_string(), str::to_string);
    let h = Harness::new(args.iter().any(|a| a == "--quick"))?;
    let (ours_db, ours_tokens) = h.seed_scale("ours")?;
    let (other_db, other_tokens) = seed_with(&h, &seeder, "other")?;
    let servers = [
        h.ceiling("lookup", Some(&other_db), "lookup-other")?,
        h.authkeys_from(&other, &other_db, &[], "authkeys-other")?,
        h.ceiling("lookup", Some(&ours_db), "lookup-ours")?,
        h.authkeys(&ours_db, &[], "authkeys-ours")?,
    ];
    let files = [other_tokens, ours_tokens].map(|tokens| tokens.to_string_lossy().into_owned());
    let [other_whoami, ours_whoami] =
        [&files[0], &files[1]].map(|tokens_file| Request::GetRandomBearer {
            path: "/v1/auth/whoami",
            tokens_file,
        });
    let requests = [&other_whoami, &other_whoami, &ours_whoami, &ours_whoami];
    let loads: Vec<_> = servers
        .iter()
        .zip(requests)
        .map(|(server, request)| (server.url.as_str(), request))
        .collect();
    let medians = h.interleaved_loads(&loads, 32)?;
    let rows_n = h.plan.scale_rows;
    let mut rows = Vec::new();
    for (name, lookup, authkeys) in [
        (name, &medians[0], &medians[1]),
        ("this build".to_string(), &medians[2], &medians[3]),
    ] {
        rows.push(row(
            &format!("ceiling: one lookup, {rows_n} rows, random tokens ({name}'s database)"),
            load_figure(lookup),
            "",
            None,
        ));
        rows.push(row(
            &format!("whoami, random tokens: {name}"),
            format!(
                "{} = {:.0}% of lookup",
                load_figure(authkeys),
                authkeys.rps / lookup.rps * 100.0
            ),
            "",
            None,
        ));
    }
    println!("{}", render(&h.plan, &rows));
    Ok(())
}

/// The scale database, seeded by another revision's `authkeys-bench seed`.
fn seed_with(h: &Harness, seeder: &Path, name: &str) -> Result<(PathBuf, PathBuf), String> {
    let db = h.work.join(format!("{name}.db"));
    let tokens = h.work.join(format!("{name}.tokens"));
    let rows = h.plan.scale_rows.to_string();
    let status = Command::new(seeder)
        .arg("seed")
        .arg("--db")
        .arg(&db)
        .args(["--keys", &rows, "--machines", &rows, "--tokens"])
        .arg(&tokens)
        .status()
        .map_err(|err| format!("running {}: {err}", seeder.display()))?;
    if !status.success() {
        return Err(format!("{} seed failed: {status}", seeder.display()));
    }
    Ok((db, tokens))
}
