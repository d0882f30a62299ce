//! `authkeys scan`: walks files and directories (or reads standard input), hands their text to
//! the library's `TokenFinder` and prints where each token is, never more of it than its hint.
//! Files are read in large chunks, several at once (one thread per core), and reported in the
//! order they were walked. `--revoke` then sends what it found to revoke-by-value.

use super::admin::Revoker;
use super::args::ScanArgs;
use super::output::{self, say};
use authkeys::TokenKind;
use authkeys::ops::{Found, MAX_TOKEN_LEN, TokenFinder};
use serde_json::{Value, json};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How much of a file is read at once: large enough that a source file is one read.
const CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// A NUL byte in a file's first this many bytes makes it binary, as for git and grep.
const BINARY_SNIFF_BYTES: usize = 8 * 1024;

/// Where to read: a file, or standard input (shown as `-`).
enum Source {
    File(PathBuf),
    Stdin,
}

impl Source {
    fn display(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Stdin => "-".to_string(),
        }
    }
}

/// One token found, with its place in its file (line and byte column, from 1).
struct Finding {
    path: String,
    line: u64,
    column: u64,
    found: Found,
}

/// What scanning one source came to.
enum Scanned {
    Findings(Vec<Finding>),
    Binary,
    Failed(String),
}

/// Runs the scan; the exit status is 2 if anything could not be read or revoked (a partial
/// scan cannot promise "nothing found"), else 1 if anything was found, else 0.
pub fn scan(args: &ScanArgs) -> ExitCode {
    let mut errors: Vec<String> = Vec::new();
    let mut sources = Vec::new();
    let mut too_large = 0u64;
    for path in &args.paths {
        if path.as_os_str() == "-" {
            sources.push(Source::Stdin);
        } else {
            walk(
                path,
                args.max_file_size,
                &mut sources,
                &mut too_large,
                &mut errors,
            );
        }
    }
    let results = scan_all(&sources);
    let mut findings = Vec::new();
    for (source, result) in sources.iter().zip(results) {
        match result {
            Scanned::Findings(found) => findings.extend(found),
            Scanned::Binary => {}
            Scanned::Failed(err) => errors.push(format!("{}: {err}", source.display())),
        }
    }
    let revocations = if args.revoke && !findings.is_empty() {
        revoke_all(args, &findings, &mut errors)
    } else {
        vec![Value::Null; findings.len()]
    };
    report(args, &findings, &revocations, &errors);
    if too_large > 0 {
        eprintln!(
            "authkeys: skipped {too_large} file(s) over {} bytes (--max-file-size)",
            args.max_file_size
        );
    }
    if !errors.is_empty() {
        ExitCode::from(2)
    } else if !findings.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Adds the files at `path` to `sources`: the file itself, or a directory's files in name
/// order, recursively, without `.git` and without following symbolic links inside it.
fn walk(
    path: &Path,
    max_file_size: u64,
    sources: &mut Vec<Source>,
    too_large: &mut u64,
    errors: &mut Vec<String>,
) {
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(err) => return errors.push(format!("{}: {err}", path.display())),
    };
    if metadata.is_file() {
        if metadata.len() > max_file_size {
            *too_large += 1;
        } else {
            sources.push(Source::File(path.to_path_buf()));
        }
        return;
    }
    if !metadata.is_dir() {
        return;
    }
    let entries = fs::read_dir(path).and_then(|entries| entries.collect::<io::Result<Vec<_>>>());
    let mut entries = match entries {
        Ok(entries) => entries,
        Err(err) => return errors.push(format!("{}: {err}", path.display())),
    };
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() || (kind.is_dir() && entry.file_name() == ".git") {
            continue;
        }
        walk(&entry.path(), max_file_size, sources, too_large, errors);
    }
}

/// Scans every source, on as many threads as there are cores; results in `sources`' order.
fn scan_all(sources: &[Source]) -> Vec<Scanned> {
    let finder = TokenFinder::default();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Scanned>>> =
        Mutex::new((0..sources.len()).map(|_| None).collect());
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(sources.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut buffer = Vec::with_capacity(CHUNK_BYTES + MAX_TOKEN_LEN);
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(source) = sources.get(index) else {
                        break;
                    };
                    let scanned = scan_source(&finder, source, &mut buffer);
                    results.lock().expect("no scan thread panics")[index] = Some(scanned);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("no scan thread panics")
        .into_iter()
        .map(|result| result.expect("every source was scanned"))
        .collect()
}

fn scan_source(finder: &TokenFinder, source: &Source, buffer: &mut Vec<u8>) -> Scanned {
    let path = source.display();
    let result = match source {
        Source::File(file) => {
            File::open(file).and_then(|file| scan_reader(finder, &path, file, buffer, true))
        }
        Source::Stdin => scan_reader(finder, &path, io::stdin().lock(), buffer, false),
    };
    match result {
        Ok(Some(findings)) => Scanned::Findings(findings),
        Ok(None) => Scanned::Binary,
        Err(err) => Scanned::Failed(err.to_string()),
    }
}

/// Reads `reader` a chunk at a time, keeping the last `MAX_TOKEN_LEN` bytes of each chunk for
/// the next so that a token split between two reads is still whole once. `None` if
/// `skip_binary` and the text starts like a binary file.
fn scan_reader(
    finder: &TokenFinder,
    path: &str,
    mut reader: impl Read,
    buffer: &mut Vec<u8>,
    skip_binary: bool,
) -> io::Result<Option<Vec<Finding>>> {
    buffer.clear();
    let mut findings = Vec::new();
    let mut lines = LineCounter::default();
    let mut first = true;
    loop {
        let eof = fill(&mut reader, buffer)?;
        if first && skip_binary {
            let sniffed = &buffer[..buffer.len().min(BINARY_SNIFF_BYTES)];
            if memchr::memchr(0, sniffed).is_some() {
                return Ok(None);
            }
        }
        first = false;
        // Unless this is the end, a token starting in the kept tail is judged next time,
        // with the byte after it in view.
        let judged = if eof {
            buffer.len()
        } else {
            buffer.len() - MAX_TOKEN_LEN
        };
        for found in finder.find(buffer) {
            if found.offset >= judged {
                break;
            }
            let (line, column) = lines.position(buffer, found.offset);
            findings.push(Finding {
                path: path.to_string(),
                line,
                column,
                found,
            });
        }
        if eof {
            return Ok(Some(findings));
        }
        lines.advance(buffer, judged);
        buffer.drain(..judged);
    }
}

/// Reads until `buffer` holds a whole chunk or the input ends; true at the end. Appends
/// without zeroing the buffer first (`read_to_end`), so a small file costs one read.
fn fill(reader: &mut impl Read, buffer: &mut Vec<u8>) -> io::Result<bool> {
    let want = CHUNK_BYTES + MAX_TOKEN_LEN;
    let missing = (want - buffer.len()) as u64;
    reader.by_ref().take(missing).read_to_end(buffer)?;
    Ok(buffer.len() < want)
}

/// Line numbers, counted only as far as a finding needs (most text has none), across the
/// chunks of one input.
struct LineCounter {
    /// The line at the buffer's `counted` offset, from 1.
    line: u64,
    /// How far into the current buffer newlines are counted.
    counted: usize,
    /// Bytes between the start of the current line and `counted`.
    column: u64,
}

impl Default for LineCounter {
    fn default() -> LineCounter {
        LineCounter {
            line: 1,
            counted: 0,
            column: 0,
        }
    }
}

impl LineCounter {
    /// Counts newlines up to `offset` of `buffer` (at or after the last position asked).
    fn count_to(&mut self, buffer: &[u8], offset: usize) {
        let span = &buffer[self.counted..offset];
        match memchr::memrchr(b'\n', span) {
            Some(last) => {
                self.line += memchr::memchr_iter(b'\n', span).count() as u64;
                self.column = (span.len() - last - 1) as u64;
            }
            None => self.column += span.len() as u64,
        }
        self.counted = offset;
    }

    /// The line and column (from 1) of `offset` in `buffer`.
    fn position(&mut self, buffer: &[u8], offset: usize) -> (u64, u64) {
        self.count_to(buffer, offset);
        (self.line, self.column + 1)
    }

    /// The buffer's first `consumed` bytes are about to be dropped.
    fn advance(&mut self, buffer: &[u8], consumed: usize) {
        self.count_to(buffer, consumed);
        self.counted = 0;
    }
}

fn kind_name(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::AuthKey => "auth_key",
        TokenKind::Session => "session_token",
        TokenKind::Admin => "admin_token",
        TokenKind::ScopedAdmin => "scoped_admin_token",
    }
}

/// Sends each distinct auth key and session token found to revoke-by-value, once. Admin tokens
/// (root's and scoped ones) are not revoked by value: the answer says what to do instead. Returns one answer per
/// finding (`null` when nothing was sent).
fn revoke_all(args: &ScanArgs, findings: &[Finding], errors: &mut Vec<String>) -> Vec<Value> {
    let revoker = match Revoker::new(&args.server) {
        Ok(revoker) => revoker,
        Err(err) => {
            errors.push(format!("--revoke: {}", super::report::one_line(&err)));
            return vec![Value::Null; findings.len()];
        }
    };
    let mut answers: Vec<(String, Value)> = Vec::new();
    findings
        .iter()
        .map(|finding| {
            let token = &finding.found.token;
            match finding.found.kind {
                TokenKind::Admin => {
                    return json!({"revoked": false, "code": "admin_token",
                        "message": "rotate it: authkeys rotate-admin-token, then restart the server"});
                }
                TokenKind::ScopedAdmin => {
                    return json!({"revoked": false, "code": "scoped_admin_token",
                        "message": "revoke it as root: DELETE /v1/admin-tokens/{id}"});
                }
                TokenKind::AuthKey | TokenKind::Session => {}
            }
            if let Some((_, answer)) = answers.iter().find(|(seen, _)| seen == token.expose()) {
                return answer.clone();
            }
            let answer = revoker.revoke(token).unwrap_or_else(|err| {
                errors.push(format!(
                    "revoking {}: {}",
                    finding.found.hint(),
                    super::report::one_line(&err)
                ));
                Value::Null
            });
            answers.push((token.expose().to_string(), answer.clone()));
            answer
        })
        .collect()
}

fn report(args: &ScanArgs, findings: &[Finding], revocations: &[Value], errors: &[String]) {
    if args.output.json {
        let findings: Vec<Value> = findings
            .iter()
            .zip(revocations)
            .map(|(finding, revocation)| {
                let mut item = json!({
                    "path": finding.path,
                    "line": finding.line,
                    "column": finding.column,
                    "kind": kind_name(finding.found.kind),
                    "hint": finding.found.hint(),
                });
                if args.revoke {
                    item["revocation"] = revocation.clone();
                }
                item
            })
            .collect();
        output::json(&json!({"findings": findings, "errors": errors}));
    } else {
        for (finding, revocation) in findings.iter().zip(revocations) {
            let place = format!("{}:{}:{}", finding.path, finding.line, finding.column);
            let what = format!("{} {}", kind_name(finding.found.kind), finding.found.hint());
            match revocation_note(revocation) {
                Some(note) => say!("{place}: {what} ({note})"),
                None => say!("{place}: {what}"),
            }
        }
    }
    for err in errors {
        eprintln!("authkeys: error: {}", authkeys::ops::redact_secrets(err));
    }
}

/// What `--revoke` did about one finding, for the text output.
fn revocation_note(answer: &Value) -> Option<String> {
    match answer["revoked"].as_bool()? {
        true => match answer["machine_id"].as_str() {
            Some(machine) => Some(format!("machine {machine} logged out")),
            None => Some(format!(
                "revoked key {} of app {}",
                output::field(answer, "key_id"),
                output::field(answer, "app")
            )),
        },
        false => Some(format!("not revoked: {}", output::field(answer, "code"))),
    }
}
