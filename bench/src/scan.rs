//! `authkeys scan` against `grep -c ena_` on the same files, in the same run: a corpus of
//! source-like text (1 GiB; 16 MiB with `--quick`) generated once under `target/`, read warm
//! from the page cache by both, timed in interleaved rounds. Target: the scan takes less than
//! grep's time plus 50%. The scan's findings are checked too: exactly the real keys planted.

use authkeys::TokenKind;
use authkeys::ops::generate_token;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FILE_BYTES: usize = 1024 * 1024;
const FILES_PER_DIR: usize = 32;
/// One real key in every this many files; the rest holds only look-alikes.
const KEY_EVERY: usize = 64;

/// The corpus of `mib` files: generated unless a complete one is already there.
fn corpus(target: &Path, mib: usize) -> Result<(PathBuf, usize), String> {
    let dir = target.join(format!("scan-corpus-{mib}mib"));
    let done = dir.join(".complete");
    let keys = mib.div_ceil(KEY_EVERY);
    if done.exists() {
        return Ok((dir, keys));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let template = source_text(FILE_BYTES);
    for file in 0..mib {
        let sub = dir.join(format!("crate{:03}/src", file / FILES_PER_DIR));
        std::fs::create_dir_all(&sub).map_err(|err| err.to_string())?;
        let mut text = template.clone();
        if file % KEY_EVERY == 0 {
            // A real key, quoted in the middle of a line, where a leak would be.
            let key = generate_token(TokenKind::AuthKey);
            let at = text[text.len() / 2..].find('\n').expect("lines") + text.len() / 2 + 1;
            text.insert_str(at, &format!("const LEAKED: &str = \"{}\";\n", key.expose()));
        }
        std::fs::write(sub.join(format!("module{file:04}.rs")), text)
            .map_err(|err| err.to_string())?;
    }
    std::fs::write(&done, b"").map_err(|err| err.to_string())?;
    Ok((dir, keys))
}

/// About `bytes` of Rust-like lines, deterministic, with `ena_` in an identifier or a string
/// about every 20 lines (look-alikes a scanner must check and reject) and no real token.
fn source_text(bytes: usize) -> String {
    let words = [
        "athena_index",
        "request",
        "scheduler",
        "count",
        "buffer",
        "session",
        "verify",
        "gain",
        "machine",
        "token_hint",
        "sweeper",
        "ratio",
        "reader",
        "writer",
        "limit",
        "page",
        "cursor",
        "app",
        "key_id",
        "expires_at",
        "stamp",
        "pool",
        "worker",
        "queue",
    ];
    let mut text = String::with_capacity(bytes + 200);
    let mut n: u64 = 0x2545_f491_4f6c_dd1d;
    while text.len() < bytes {
        // xorshift: varied lines without a random-number dependency.
        n ^= n << 13;
        n ^= n >> 7;
        n ^= n << 17;
        let a = words[(n % 24) as usize];
        let b = words[((n >> 8) % 24) as usize];
        let _ = match (n >> 16) % 6 {
            0 => writeln!(text, "    let {a} = {b}.get({})?;", n % 1000),
            1 => writeln!(
                text,
                "    // {a} and {b}: see the module docs for why ({n:x})."
            ),
            2 => writeln!(
                text,
                "    log::debug!(\"{a} for {{}} took {{}} ms\", {b}, {});",
                n % 97
            ),
            3 => writeln!(
                text,
                "fn {a}_{}(input: &str) -> Result<{b}, Error> {{",
                n % 50
            ),
            4 => writeln!(
                text,
                "    assert_eq!({a}.len(), {}, \"the prefix of {b}\");",
                n % 31
            ),
            _ => writeln!(text, "}}\n"),
        };
    }
    text
}

/// Runs `command` to completion, its output to `out`, and returns how long it took. Not to
/// /dev/null: GNU grep notices that and stops at the first match, as `grep -q` does.
fn timed(command: &mut Command, out: &Path) -> Result<Duration, String> {
    let out = std::fs::File::create(out).map_err(|err| err.to_string())?;
    let started = Instant::now();
    let status = command
        .stdout(out)
        .stderr(Stdio::null())
        .status()
        .map_err(|err| err.to_string())?;
    // grep: 0 found, 1 none; scan: 1 found. Anything else failed.
    if !matches!(status.code(), Some(0 | 1)) {
        return Err(format!("{command:?} failed: {status}"));
    }
    Ok(started.elapsed())
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

/// The scenario's row: `(scenario, figure, target, met)`.
pub(crate) fn scan_vs_grep(
    authkeys: &Path,
    target: &Path,
    quick: bool,
) -> Result<(String, String, &'static str, bool), String> {
    let mib = if quick { 16 } else { 1024 };
    let (dir, keys) = corpus(target, mib)?;
    let grep = || {
        let mut command = Command::new("grep");
        command
            .env("LC_ALL", "C")
            .args(["-r", "-c", "ena_"])
            .arg(&dir);
        command
    };
    let scan = || {
        let mut command = Command::new(authkeys);
        command.arg("scan").arg(&dir);
        command
    };
    // The scan finds the planted keys and nothing else.
    let found = scan().output().map_err(|err| err.to_string())?;
    let lines = String::from_utf8_lossy(&found.stdout).lines().count();
    if found.status.code() != Some(1) || lines != keys {
        return Err(format!(
            "authkeys scan found {lines} tokens, {keys} planted: {found:?}"
        ));
    }
    // Warm the page cache for both, then interleave.
    let out = target.join("scan-corpus-output");
    timed(&mut grep(), &out)?;
    let (mut grep_runs, mut scan_runs) = (Vec::new(), Vec::new());
    for _ in 0..if quick { 1 } else { 5 } {
        grep_runs.push(timed(&mut grep(), &out)?);
        scan_runs.push(timed(&mut scan(), &out)?);
    }
    let _ = std::fs::remove_file(&out);
    let (grep_time, scan_time) = (median(grep_runs), median(scan_runs));
    let ratio = scan_time.as_secs_f64() / grep_time.as_secs_f64();
    Ok((
        format!(
            "authkeys scan vs grep -c ena_, {mib} MiB of source text ({} files, warm)",
            mib
        ),
        format!(
            "scan {:.2} s, grep {:.2} s = {ratio:.2}× grep",
            scan_time.as_secs_f64(),
            grep_time.as_secs_f64()
        ),
        "< 1.5× grep",
        ratio < 1.5,
    ))
}

/// `authkeys-bench scan [--quick]`: this scenario alone (the release binaries beside this one).
pub(crate) fn scan_command(quick: bool) -> Result<(), String> {
    let bench = std::env::current_exe().map_err(|err| err.to_string())?;
    let release = bench.parent().ok_or("no binary directory")?;
    let target = release.parent().ok_or("no target directory")?;
    let (scenario, figure, goal, met) = scan_vs_grep(&release.join("authkeys"), target, quick)?;
    println!(
        "{scenario}: {figure} (target {goal}: {})",
        if met { "met" } else { "NOT met" }
    );
    Ok(())
}
