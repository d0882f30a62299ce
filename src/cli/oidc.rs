//! Workload identity from the CLI: where `authkeys login` gets an OIDC ID token (a file,
//! stdin, or the GitHub Actions token endpoint), `authkeys trust-policies create|list|delete`,
//! and `authkeys dev-oidc-issuer`, a local issuer to try trust policies with.

use super::CliError;
use super::admin::{add_policy, client, done};
use super::admin_tokens::print_listing;
use super::args::{AdminArgs, KeyPolicyArgs, ListArgs};
use super::client::segment;
use super::output::{self, say};
use authkeys::{DevClaims, DevIssuer, Secret};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::io::{Read, Write};
use std::time::Duration;

/// The most of an ID token read: the server refuses tokens over 16 KiB.
const MAX_ID_TOKEN_BYTES: u64 = 16 * 1024;
/// GitHub's names for the token endpoint and its bearer token, set in jobs with
/// `permissions: id-token: write`.
const ACTIONS_URL: &str = "ACTIONS_ID_TOKEN_REQUEST_URL";
const ACTIONS_TOKEN: &str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";

/// `authkeys login`'s ways to present an ID token instead of an auth key.
#[derive(Args, Debug)]
pub struct IdTokenArgs {
    /// The app to log in to with an ID token (`--id-token-file` or `--github-actions`).
    #[arg(long, value_name = "APP")]
    pub app: Option<String>,
    /// Log in with the OIDC ID token in this file (`-` for stdin) instead of an auth key.
    #[arg(
        long,
        value_name = "PATH",
        requires = "app",
        conflicts_with = "github_actions"
    )]
    pub id_token_file: Option<String>,
    /// Log in with this GitHub Actions job's ID token (from ACTIONS_ID_TOKEN_REQUEST_URL with
    /// ACTIONS_ID_TOKEN_REQUEST_TOKEN; the job needs `permissions: id-token: write`).
    #[arg(long, requires = "app")]
    pub github_actions: bool,
    /// The audience asked of GitHub Actions: the trust policy's `audience`.
    #[arg(
        long,
        value_name = "AUDIENCE",
        default_value = "authkeys",
        requires = "github_actions"
    )]
    pub audience: String,
}

impl IdTokenArgs {
    /// The ID token asked for, if any, and the app it logs in to.
    pub fn read(&self, timeout: Duration) -> Result<Option<(Secret, String)>, CliError> {
        let Some(app) = &self.app else {
            return Ok(None);
        };
        let token = match (&self.id_token_file, self.github_actions) {
            (Some(path), _) => from_file(path)?,
            (None, true) => from_github_actions(&self.audience, timeout)?,
            (None, false) => {
                return Err(CliError::Usage(
                    "--app logs in with an ID token: add --id-token-file PATH or --github-actions"
                        .into(),
                ));
            }
        };
        Ok(Some((token, app.clone())))
    }
}

fn from_file(path: &str) -> Result<Secret, CliError> {
    let unreadable = |err: std::io::Error| {
        CliError::Usage(format!("cannot read the ID token from {path}: {err}"))
    };
    let mut text = String::new();
    let limit = MAX_ID_TOKEN_BYTES + 1;
    if path == "-" {
        std::io::stdin().take(limit).read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|file| file.take(limit).read_to_string(&mut text))
    }
    .map_err(unreadable)?;
    if text.len() as u64 > MAX_ID_TOKEN_BYTES {
        return Err(CliError::Usage(format!(
            "{path} is longer than {} KiB: it does not hold just an ID token",
            MAX_ID_TOKEN_BYTES / 1024
        )));
    }
    match text.trim() {
        "" => Err(CliError::Usage(format!("{path} holds no ID token"))),
        token => Ok(Secret::new(token.to_string())),
    }
}

/// Asks the Actions token endpoint for a token for `audience`, as actions/core does.
fn from_github_actions(audience: &str, timeout: Duration) -> Result<Secret, CliError> {
    let env =
        |name: &str| {
            std::env::var(name).ok().filter(|value| !value.is_empty()).ok_or_else(|| {
            CliError::Usage(format!(
                "{name} is not set: --github-actions works inside a GitHub Actions job with \
                 `permissions: id-token: write`"
            ))
        })
        };
    let (url, request_token) = (env(ACTIONS_URL)?, env(ACTIONS_TOKEN)?);
    let separator = if url.contains('?') { '&' } else { '?' };
    let audience: String = form_urlencoded::byte_serialize(audience.as_bytes()).collect();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .build()
        .into();
    let failed = |err: ureq::Error| {
        CliError::Message(format!("the GitHub Actions token endpoint refused: {err}"))
    };
    let answer: Value = agent
        .get(&format!("{url}{separator}audience={audience}"))
        .header("Authorization", &format!("Bearer {request_token}"))
        .call()
        .map_err(failed)?
        .body_mut()
        .with_config()
        .limit(2 * MAX_ID_TOKEN_BYTES)
        .read_json()
        .map_err(failed)?;
    match answer["value"].as_str() {
        Some(token) if !token.is_empty() => Ok(Secret::new(token.to_string())),
        _ => Err(CliError::Message(
            "the GitHub Actions token endpoint answered without a token (`value`)".into(),
        )),
    }
}

#[derive(Subcommand, Debug)]
pub enum TrustPoliciesCommand {
    /// Let an OIDC issuer's ID tokens log machines in to an app (a CI job without a key).
    Create {
        /// The app its machines log in to.
        #[arg(long)]
        app: String,
        /// The issuer, exactly as its tokens' `iss` (GitHub Actions:
        /// https://token.actions.githubusercontent.com).
        #[arg(long)]
        issuer: String,
        /// A token's `aud` must contain this.
        #[arg(long)]
        audience: String,
        /// A glob a token's `sub` must match (`*`: any run of characters), e.g.
        /// repo:acme/api:ref:refs/heads/main.
        #[arg(long)]
        subject: String,
        /// A claim the token must carry with exactly this value, as NAME=VALUE; repeatable.
        #[arg(long = "claim", value_name = "NAME=VALUE", value_parser = claim_entry)]
        claims: Vec<(String, String)>,
        /// What the policy is for, shown in listings.
        #[arg(long)]
        description: Option<String>,
        /// Its machines are logged out after the server's ephemeral TTL (or --session-ttl).
        #[arg(long)]
        ephemeral: bool,
        #[command(flatten)]
        policy: KeyPolicyArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List an app's trust policies, newest first.
    List {
        /// The app.
        #[arg(long)]
        app: String,
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete a trust policy and log out every machine that came through it.
    Delete {
        /// The app.
        #[arg(long)]
        app: String,
        /// The policy's id (`tp_…`).
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

fn claim_entry(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err("expected NAME=VALUE, such as repository_owner=acme".into()),
    }
}

pub fn trust_policies(command: TrustPoliciesCommand) -> Result<(), CliError> {
    match command {
        TrustPoliciesCommand::Create {
            app,
            issuer,
            audience,
            subject,
            claims,
            description,
            ephemeral,
            policy,
            admin,
        } => {
            if policy.max_uses.is_some() {
                return Err(CliError::Usage("a trust policy has no --max-uses".into()));
            }
            let mut wanted = serde_json::Map::new();
            for (name, value) in claims {
                if wanted.insert(name.clone(), value.into()).is_some() {
                    return Err(CliError::Usage(format!("--claim {name}= is given twice")));
                }
            }
            let mut body = json!({
                "issuer": issuer, "audience": audience, "subject": subject, "claims": wanted,
                "description": description, "ephemeral": ephemeral,
            });
            add_policy(&mut body, policy)?;
            let path = format!("/v1/apps/{}/trust-policies", segment(&app));
            let created = client(&admin)?.post(&path, &body)?;
            if admin.output.json {
                output::json(&created);
            } else {
                say!(
                    "Created trust policy {} for app {}: tokens of {} for {} whose sub matches {}.",
                    output::field(&created, "id"),
                    output::field(&created, "app"),
                    output::field(&created, "issuer"),
                    output::field(&created, "audience"),
                    output::field(&created, "subject")
                );
            }
        }
        TrustPoliciesCommand::List { app, list, admin } => {
            let path = format!("/v1/apps/{}/trust-policies", segment(&app));
            let listing = client(&admin)?.list(&path, "trust_policies", &[], &list)?;
            let headers = [
                "ID",
                "ISSUER",
                "AUDIENCE",
                "SUBJECT",
                "CLAIMS",
                "EPHEMERAL",
                "CREATED",
            ];
            let table = (&headers[..], "No trust policies.");
            print_listing(&admin, &listing, "trust_policies", table, |policy| {
                let claims = policy["claims"]
                    .as_object()
                    .map_or_else(String::new, |claims| {
                        let pairs = claims.iter().map(|(name, value)| {
                            format!("{name}={}", value.as_str().unwrap_or_default())
                        });
                        pairs.collect::<Vec<_>>().join(",")
                    });
                vec![
                    output::field(policy, "id"),
                    output::field(policy, "issuer"),
                    output::field(policy, "audience"),
                    output::field(policy, "subject"),
                    claims,
                    output::field(policy, "ephemeral"),
                    output::field(policy, "created_at"),
                ]
            });
        }
        TrustPoliciesCommand::Delete { app, id, admin } => {
            let path = format!("/v1/apps/{}/trust-policies/{}", segment(&app), segment(&id));
            client(&admin)?.delete(&path)?;
            done(
                &admin,
                &format!("Deleted trust policy {id}: its machines are logged out."),
            );
        }
    }
    Ok(())
}

/// `authkeys dev-oidc-issuer`.
#[derive(Args, Debug)]
pub struct DevIssuerArgs {
    /// Where to serve the issuer (plain HTTP: start the server with
    /// --oidc-allow-insecure-issuer to trust it).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// The repository (OWNER/REPO) its tokens name, as GitHub Actions' do.
    #[arg(long, default_value = "acme/api")]
    pub repository: String,
    /// The git ref its tokens name.
    #[arg(long = "ref", value_name = "REF", default_value = "refs/heads/main")]
    pub git_ref: String,
}

/// Serves a local issuer until SIGTERM or SIGINT; prints one JSON line when ready with the
/// issuer URL and what `authkeys login --github-actions` needs to use it as GitHub's token
/// endpoint.
pub fn dev_issuer(args: DevIssuerArgs) -> Result<(), CliError> {
    let mut signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|err| CliError::caused("installing signal handlers", err))?;
    let defaults = DevClaims {
        repository: args.repository,
        git_ref: args.git_ref,
        ..DevClaims::default()
    };
    let issuer = DevIssuer::start(&args.listen, defaults).map_err(CliError::from)?;
    let ready = json!({
        "issuer": issuer.url(),
        ACTIONS_URL: format!("{}/token", issuer.url()),
        ACTIONS_TOKEN: issuer.request_token(),
    });
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{ready}")
        .and_then(|()| stdout.flush())
        .map_err(|err| CliError::caused("writing the ready line", err))?;
    drop(stdout);
    signals.forever().next();
    Ok(())
}
