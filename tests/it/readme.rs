//! The README's quick start, pasted verbatim: its blocks are read from README.md and run by
//! bash against the real binary, so the first thing a new user tries cannot silently rot.

use crate::support::{BIN, Options, TestServer};
use std::path::Path;
use std::process::Command;

const README: &str = include_str!("../../README.md");

/// The shell block that follows the HTML comment starting with `marker`.
fn block_after(marker: &str) -> &'static str {
    let start = README
        .find(marker)
        .unwrap_or_else(|| panic!("README.md has no {marker:?} marker"));
    let rest = &README[start..];
    let open = rest
        .find("```sh\n")
        .expect("a shell block follows the marker")
        + "```sh\n".len();
    let len = rest[open..].find("```").expect("the shell block is closed");
    &rest[open..open + len]
}

/// Runs `script` with bash as a user's shell would (stopping at the first failure), in `dir`,
/// with the binary first on `PATH` and nothing of the test's own environment that would change
/// what the README's commands do.
fn paste(script: &str, dir: &Path, server_url: &str) -> String {
    let bin_dir = Path::new(BIN).parent().expect("the binary has a directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("PATH", path)
        .env("AUTHKEYS_SERVER", server_url)
        .env("AUTHKEYS_CONFIG_DIR", dir.join("config"))
        .env_remove("AUTHKEYS_ADMIN_TOKEN")
        .env_remove("AUTHKEYS_AUTH_KEY")
        .output()
        .expect("running bash");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the README block failed ({}):\n{script}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The README's server command, run as the harness runs every server: `authkeys serve` in the
/// directory the rest of the quick start uses, on a free port (`--listen 127.0.0.1:0`, the
/// only change, since the user's default port may be taken here), with a generated token.
fn start_readme_server() -> TestServer {
    assert_eq!(
        block_after("<!-- quickstart-server").trim(),
        "authkeys serve"
    );
    TestServer::start_with(Options {
        generated_admin_token: true,
        ..Options::default()
    })
}

#[test]
fn the_quick_start_works_pasted_verbatim() {
    let server = start_readme_server();
    let out = paste(
        block_after("<!-- quickstart:"),
        server.dir.path(),
        &server.url,
    );
    assert!(
        out.contains("app:       my-app (My App)"),
        "whoami output:\n{out}"
    );
    assert!(out.contains("(ci-runner-7)"), "whoami output:\n{out}");
    assert!(
        out.contains("expires:"),
        "an ephemeral machine shows its expiry:\n{out}"
    );
}

/// The key policy example runs where the quick start left off (its admin token and app), in
/// the same shell.
#[test]
fn the_tagged_and_rotated_key_example_works_pasted_verbatim() {
    let server = start_readme_server();
    let script = format!(
        "{}{}",
        block_after("<!-- quickstart:"),
        block_after("<!-- quickstart-policy")
    );
    let out = paste(&script, server.dir.path(), &server.url);
    let rotated = out
        .lines()
        .find(|line| line.starts_with("Rotated key "))
        .unwrap_or_else(|| panic!("no rotation reported:\n{out}"));
    assert!(rotated.contains("stops accepting logins at"), "{rotated}");
    for shown in [
        "tags:         tag:ci",
        "max uses:     5",
        "session TTL:  2h after login",
    ] {
        assert!(out.contains(shown), "the new key shows {shown:?}:\n{out}");
    }
    let old = out
        .lines()
        .find(|line| line.contains(" to key_"))
        .unwrap_or_else(|| panic!("the listing shows the old key rotated:\n{out}"));
    let new = out
        .lines()
        .find(|line| line.contains(" from key_"))
        .unwrap_or_else(|| panic!("the listing shows the new key:\n{out}"));
    for row in [old, new] {
        assert!(row.contains("tag:ci") && row.contains("0/5"), "{row}");
    }
}

#[test]
fn the_quick_start_over_curl_works_pasted_verbatim() {
    let server = start_readme_server();
    let out = paste(
        block_after("<!-- quickstart-curl"),
        server.dir.path(),
        &server.url,
    );
    let answers: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|err| panic!("the output is not a stream of JSON values ({err}):\n{out}"));
    assert_eq!(
        answers.len(),
        4,
        "created app, whoami, rotated key, refused whoami:\n{out}"
    );
    assert_eq!(answers[0]["id"], "web");
    assert_eq!(answers[1]["app"]["id"], "web");
    assert_eq!(answers[1]["machine"]["app"], "web");
    assert_eq!(answers[1]["machine"]["tags"], serde_json::json!(["tag:ci"]));
    assert_eq!(
        answers[1]["machine"]["metadata"],
        serde_json::json!({"team": "web"})
    );
    assert_eq!(answers[2]["rotated_from"], answers[1]["machine"]["key_id"]);
    assert_eq!(answers[2]["tags"], serde_json::json!(["tag:ci"]));
    assert_eq!(
        answers[3]["error"]["code"], "invalid_credentials",
        "after revocation:\n{out}"
    );
}
