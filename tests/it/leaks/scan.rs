//! `authkeys scan`: the real binary over real files, directories and standard input; hints
//! only, checksum-verified, the documented exit statuses; `--revoke` against a real server.

use super::*;
use authkeys::TokenKind;
use authkeys::ops::generate_token;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `authkeys scan args…` in `dir` with `stdin` and no `AUTHKEYS_*` from outside.
fn scan(dir: &Path, args: &[&str], envs: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("scan")
        .args(args)
        .current_dir(dir)
        .env_remove("AUTHKEYS_ADMIN_TOKEN")
        .env_remove("AUTHKEYS_SERVER")
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("running authkeys scan");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("writing stdin");
    child.wait_with_output().expect("waiting for authkeys scan")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn explain(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn hint(token: &str) -> String {
    let prefix_len = token.find('_').expect("a prefix") + 1;
    let body = &token[prefix_len..];
    format!(
        "{}{}…{}",
        &token[..prefix_len],
        &body[..4],
        &body[body.len() - 4..]
    )
}

fn write(path: &Path, contents: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

#[test]
fn finds_every_kind_in_a_tree_and_prints_only_hints() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let key = generate_token(TokenKind::AuthKey).expose().to_string();
    let session = generate_token(TokenKind::Session).expose().to_string();
    let admin = generate_token(TokenKind::Admin).expose().to_string();
    let mut look_alike = key.clone();
    look_alike.replace_range(key.len() - 1.., if key.ends_with('a') { "b" } else { "a" });
    write(
        &root.join("src/config.rs"),
        format!("// setup\nconst KEY: &str = \"{key}\";\n").as_bytes(),
    );
    write(
        &root.join("deploy/run.sh"),
        format!("curl 'https://x.test/login?token={session}&v=1'\nexport T={admin}\n").as_bytes(),
    );
    write(
        &root.join("notes.txt"),
        format!("not a key: {look_alike}\n{key}x\n").as_bytes(),
    );
    write(&root.join(".git/objects/ab"), key.as_bytes());
    write(
        &root.join("image.png"),
        &[b"\x89PNG\0\0".as_slice(), key.as_bytes()].concat(),
    );
    let large = format!("{key}\n{}", "x".repeat(2000));
    write(&root.join("big.log"), large.as_bytes());

    let output = scan(root, &["--max-file-size", "1000"], &[], b"");
    assert_eq!(output.status.code(), Some(1), "{}", explain(&output));
    assert_eq!(
        stdout(&output),
        format!(
            "./deploy/run.sh:1:34: session_token {}\n\
             ./deploy/run.sh:2:10: admin_token {}\n\
             ./src/config.rs:2:20: auth_key {}\n",
            hint(&session),
            hint(&admin),
            hint(&key)
        )
    );
    let everything = format!(
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    for secret in [&key, &session, &admin] {
        assert!(
            !everything.contains(secret.as_str()),
            "a whole token was printed"
        );
    }
    assert!(String::from_utf8_lossy(&output.stderr).contains("skipped 1 file(s) over 1000 bytes"));

    // Without the size limit the large file is scanned too.
    let output = scan(root, &["big.log"], &[], b"");
    assert_eq!(
        stdout(&output),
        format!("big.log:1:1: auth_key {}\n", hint(&key))
    );
}

#[test]
fn exit_status_is_0_for_nothing_and_2_for_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("clean.txt"),
        b"ena_ is our prefix; ena_x is not a key\n",
    );
    let output = scan(dir.path(), &[], &[], b"");
    assert_eq!(output.status.code(), Some(0), "{}", explain(&output));
    assert_eq!(stdout(&output), "");

    let key = generate_token(TokenKind::AuthKey).expose().to_string();
    write(&dir.path().join("leak.txt"), key.as_bytes());
    let output = scan(dir.path(), &["leak.txt", "missing.txt"], &[], b"");
    assert_eq!(output.status.code(), Some(2), "{}", explain(&output));
    assert!(
        stdout(&output).contains("leak.txt:1:1: auth_key"),
        "found ones are still shown"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.txt"));
}

#[test]
fn reads_standard_input_and_answers_json() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_token(TokenKind::AuthKey).expose().to_string();
    let input = format!("diff --git a/x b/x\n+AUTH=\"{key}\"\n");
    let output = scan(dir.path(), &["-", "--json"], &[], input.as_bytes());
    assert_eq!(output.status.code(), Some(1), "{}", explain(&output));
    let answer: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        answer,
        json!({"findings": [{"path": "-", "line": 2, "column": 8, "kind": "auth_key",
                             "hint": hint(&key)}],
               "errors": []})
    );
}

#[test]
fn a_token_across_two_reads_is_found_once_at_its_place() {
    // Reads are 4 MiB: tokens straddling, ending at and starting right after that boundary.
    let chunk = 4 * 1024 * 1024;
    let keys: Vec<String> = (0..3)
        .map(|_| generate_token(TokenKind::AuthKey).expose().to_string())
        .collect();
    let line = "abcdefghijklmnopqrstuvwxyz 0123456789 ;;\n";
    let mut text = String::new();
    let mut expected = Vec::new();
    for (key, start) in keys
        .iter()
        .zip([chunk - 20, chunk + 2 * 42, 2 * chunk - 40])
    {
        while text.len() + 1 < start {
            text.push_str(&line[..line.len().min(start - 1 - text.len())]);
            if !text.ends_with('\n') && text.len() + 1 < start {
                text.push('\n');
            }
        }
        text.push(' ');
        let line_number = text.matches('\n').count() + 1;
        let column = text.len() - text.rfind('\n').map_or(0, |at| at + 1) + 1;
        expected.push(format!("-:{line_number}:{column}: auth_key {}", hint(key)));
        text.push_str(key);
        text.push('\n');
    }
    let dir = tempfile::tempdir().unwrap();
    let output = scan(dir.path(), &["-"], &[], text.as_bytes());
    assert_eq!(output.status.code(), Some(1), "{}", explain(&output));
    assert_eq!(stdout(&output).lines().collect::<Vec<_>>(), expected);
}

#[test]
fn revoke_sends_what_was_found_to_the_server() {
    let server = TestServer::start();
    let (key, _) = key_with_machine(&server, "leaky");
    let (other_key, session) = key_with_machine(&server, "bystander");
    let unknown = generate_token(TokenKind::AuthKey).expose().to_string();
    let admin = generate_token(TokenKind::Admin).expose().to_string();
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("leak.env"),
        format!("A={key}\nB={unknown}\nC={session}\nD={admin}\nE={key}\n").as_bytes(),
    );
    let envs = [
        ("AUTHKEYS_ADMIN_TOKEN", ADMIN_TOKEN),
        ("AUTHKEYS_SERVER", server.url.as_str()),
    ];

    let output = scan(dir.path(), &["--revoke"], &envs, b"");
    assert_eq!(output.status.code(), Some(1), "{}", explain(&output));
    let lines: Vec<String> = stdout(&output).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 5, "{}", explain(&output));
    assert!(
        lines[0].contains("(revoked key key_") && lines[0].ends_with("of app leaky)"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].ends_with("(not revoked: not_found)"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("(machine mch_") && lines[2].ends_with("logged out)"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].ends_with("(not revoked: admin_token)"),
        "{}",
        lines[3]
    );
    assert_eq!(
        lines[4].split(" (").nth(1),
        lines[0].split(" (").nth(1),
        "sent once"
    );
    assert!(revoked(&server, &key));
    assert!(!session_alive(&server, &session));
    assert_eq!(verify(&server, &other_key)["valid"], true);

    // Without the admin token nothing is revoked and the scan says why, with status 2.
    let output = scan(
        dir.path(),
        &["--revoke"],
        &[("AUTHKEYS_SERVER", server.url.as_str())],
        b"",
    );
    assert_eq!(output.status.code(), Some(2), "{}", explain(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("AUTHKEYS_ADMIN_TOKEN is not set"));
}
