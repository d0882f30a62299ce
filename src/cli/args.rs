//! Command-line arguments (clap derive). Secrets are read from the environment, never
//! required on argv, and clap never prints their values in `--help`.

use super::duration;
use authkeys::config;
use authkeys::http;
use clap::{Args, Parser, Subcommand};

/// What each exit status means, for `--help` and the man page (docs/cli.md says the same).
pub const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  the server refused the request (or another failure)
  2  usage: a mistake in the command line or its input, found before anything was sent
  3  the server could not be reached, or what answered is not an authkeys server";

#[derive(Parser, Debug)]
#[command(
    name = "authkeys",
    version,
    about = "Issue, verify and revoke auth keys for machines",
    after_help = EXIT_STATUS
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Log this machine in with an auth key (or an OIDC ID token) and save the session.
    Login(LoginArgs),
    /// Show the app and machine of the saved session.
    Whoami(WhoamiArgs),
    /// End the saved session.
    Logout(LogoutArgs),
    /// Print the saved session's token, for `Authorization: Bearer` (forward auth) in scripts.
    SessionToken,
    /// Manage apps (needs AUTHKEYS_ADMIN_TOKEN).
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Manage auth keys (needs AUTHKEYS_ADMIN_TOKEN).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage logged-in machines (needs AUTHKEYS_ADMIN_TOKEN).
    #[command(subcommand)]
    Machines(MachinesCommand),
    /// Manage scoped admin tokens (needs the root AUTHKEYS_ADMIN_TOKEN).
    #[command(subcommand)]
    AdminTokens(super::admin_tokens::AdminTokensCommand),
    /// Read the audit log (needs a token with audit:read).
    Audit(super::audit::AuditArgs),
    /// Manage webhooks (needs the root AUTHKEYS_ADMIN_TOKEN).
    #[command(subcommand)]
    Webhooks(super::webhooks::WebhooksCommand),
    /// Manage OIDC trust policies: CI jobs log in with their ID token, no key (needs a token
    /// with trust_policies:write).
    #[command(subcommand)]
    TrustPolicies(super::oidc::TrustPoliciesCommand),
    /// Run a local OIDC issuer minting GitHub-Actions-shaped ID tokens, to try trust policies.
    DevOidcIssuer(super::oidc::DevIssuerArgs),
    /// Copy a database consistently, even while a server is using it.
    Backup(BackupArgs),
    /// Copy a SQLite database (upgraded first) into an empty PostgreSQL database, in one
    /// transaction; stop the server first.
    Migrate(MigrateArgs),
    /// Print a new random auth key for a seed file (`serve --seed`); nothing stores it.
    GenerateKey,
    /// Find auth keys, session tokens and admin tokens in files, directories (recursively)
    /// or standard input (`-`); exit 1 if any was found, 0 if none, 2 on error.
    Scan(ScanArgs),
    /// Replace the generated admin token with a new one in `<db>.admin-token`; restart the
    /// server afterwards.
    RotateAdminToken(DbArg),
    /// Print a shell completion script: `source <(authkeys completions bash)`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a directory.
    Man {
        /// Write authkeys.1 and a page for every subcommand into DIR instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<std::path::PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct DbArg {
    /// The server's database.
    #[arg(long, env = "AUTHKEYS_DB", default_value = config::DEFAULT_DB)]
    pub db: String,
}

/// Files larger than this are skipped by `authkeys scan` unless `--max-file-size` says
/// otherwise: source text is far smaller, and large files are mostly data or build output.
pub const DEFAULT_SCAN_MAX_FILE_SIZE: u64 = 10 * 1024 * 1024;

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// Files or directories to scan; directories recursively, skipping `.git`, binary files
    /// and symbolic links. `-` reads standard input.
    #[arg(value_name = "PATH", default_value = ".")]
    pub paths: Vec<std::path::PathBuf>,
    /// Skip files larger than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_SCAN_MAX_FILE_SIZE)]
    pub max_file_size: u64,
    /// Revoke every auth key found and log out the machine of every session token found
    /// (needs AUTHKEYS_ADMIN_TOKEN and --server).
    #[arg(long)]
    pub revoke: bool,
    #[command(flatten)]
    pub server: ServerArg,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The database to copy.
    #[arg(long, env = "AUTHKEYS_DB", default_value = config::DEFAULT_DB)]
    pub db: String,
    /// Where to write the copy (created or replaced, mode 0600).
    #[arg(value_name = "OUT")]
    pub out: std::path::PathBuf,
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The SQLite database file to copy.
    #[arg(long, value_name = "FILE")]
    pub from: String,
    /// The empty PostgreSQL database to copy it into: postgres://USER:PASSWORD@HOST:PORT/DB.
    /// From the environment, it stays out of `ps` and shell history.
    #[arg(long, value_name = "URL", env = "AUTHKEYS_DB", hide_env_values = true)]
    pub to: String,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// SQLite database file, `:memory:` for a throwaway instance, or a PostgreSQL URL
    /// (`postgres://user:password@host:5432/name`) for several nodes on one database.
    #[arg(long, env = "AUTHKEYS_DB", default_value = config::DEFAULT_DB)]
    pub db: String,
    /// PostgreSQL only: read connections per node, at most (plus one for writes).
    #[arg(long, env = "AUTHKEYS_PG_POOL_SIZE", value_name = "N",
          default_value_t = config::DEFAULT_PG_POOL_SIZE as u64,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub pg_pool_size: u64,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "AUTHKEYS_LISTEN", default_value = config::DEFAULT_LISTEN)]
    pub listen: String,
    /// How long after login machines of ephemeral keys are logged out (3600, 1h).
    #[arg(long, env = "AUTHKEYS_EPHEMERAL_TTL", value_name = "DURATION",
          default_value_t = config::DEFAULT_EPHEMERAL_TTL_SECS,
          value_parser = duration::positive)]
    pub ephemeral_ttl: u64,
    /// Time between sweeps of expired machines and writes of usage stamps (60, 1m).
    #[arg(long, env = "AUTHKEYS_SWEEP_INTERVAL", value_name = "DURATION",
          default_value_t = config::DEFAULT_SWEEP_INTERVAL_SECS,
          value_parser = duration::positive)]
    pub sweep_interval: u64,
    /// JSON file of apps and keys to create at start if missing (see docs/testing.md, "A
    /// seeded start").
    #[arg(long, env = "AUTHKEYS_SEED", value_name = "FILE")]
    pub seed: Option<std::path::PathBuf>,
    /// Failed authentication attempts (logins, verifies, session and admin tokens) one client
    /// address may make in a burst before it gets 429 with Retry-After; 0 turns throttling off.
    #[arg(long, env = "AUTHKEYS_LOGIN_FAILURES_BURST", value_name = "N",
          default_value_t = config::DEFAULT_THROTTLE_BURST)]
    pub login_failures_burst: u32,
    /// How many failed authentication attempts a client address earns back per minute once its
    /// burst is spent; 0 turns throttling off.
    #[arg(long, env = "AUTHKEYS_LOGIN_FAILURES_PER_MINUTE", value_name = "N",
          default_value_t = config::DEFAULT_THROTTLE_PER_MINUTE)]
    pub login_failures_per_minute: u32,
    /// Most connections open at once; when all are taken, the one idle longest is closed.
    #[arg(long, env = "AUTHKEYS_MAX_CONNECTIONS", value_name = "N",
          default_value_t = http::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
    /// Most connections one client address (IPv6: its /64) may hold; default half of
    /// --max-connections. Peers in --trusted-proxy ranges are exempt.
    #[arg(long, env = "AUTHKEYS_MAX_CONNECTIONS_PER_CLIENT", value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections_per_client: Option<usize>,
    /// A proxy (CIDR range or address) whose X-Forwarded-For names the client; repeatable.
    #[arg(long = "trusted-proxy", env = "AUTHKEYS_TRUSTED_PROXIES", value_name = "CIDR",
          value_delimiter = ',', value_parser = http::parse_trusted_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Turns on GitLab's Token Revocation API (`/v1/revocable_token_types`,
    /// `/v1/revoke_tokens`) with the token GitLab sends; at least 32 characters. Prefer the
    /// environment variable, which stays out of `ps`.
    #[arg(
        long,
        env = "AUTHKEYS_REVOCATION_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub revocation_api_token: Option<String>,
    /// Turns on GitHub secret scanning (`/v1/secret-scanning/github`): a JSON file of
    /// GitHub's public keys, as GitHub publishes them.
    #[arg(
        long,
        env = "AUTHKEYS_GITHUB_SECRET_SCANNING_KEYS",
        value_name = "FILE"
    )]
    pub github_secret_scanning_keys: Option<std::path::PathBuf>,
    /// How long audit events are kept; the sweeper deletes older ones (7776000, 90d).
    #[arg(long, env = "AUTHKEYS_AUDIT_RETENTION", value_name = "DURATION",
          default_value_t = config::DEFAULT_AUDIT_RETENTION_SECS,
          value_parser = duration::positive)]
    pub audit_retention: u64,
    /// Milliseconds one webhook delivery attempt may take (tests).
    #[arg(long, hide = true, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_timeout_ms: Option<u64>,
    /// Milliseconds between looks for events to deliver (tests).
    #[arg(long, hide = true, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_poll_ms: Option<u64>,
    /// Milliseconds before the first retry of a failed delivery, doubling after (tests).
    #[arg(long, hide = true, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_first_retry_ms: Option<u64>,
    /// How long a connection may wait for a request to start (tests).
    #[arg(long, hide = true, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_idle_timeout_ms: Option<u64>,
    /// How long a client may take to send a whole request (tests).
    #[arg(long, hide = true, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_request_timeout_ms: Option<u64>,
    /// Milliseconds between sweeps, instead of --sweep-interval (tests).
    #[arg(long, hide = true, value_name = "MS", conflicts_with = "sweep_interval",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sweep_interval_ms: Option<u64>,
    /// How long a statement waits for another process's SQLite lock (tests).
    #[arg(long, hide = true, value_name = "MS")]
    pub sqlite_busy_timeout_ms: Option<u64>,
    /// The least session_ttl and idle_timeout a key may have, instead of 60 s (tests).
    #[arg(long, hide = true, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub min_key_timeout_secs: Option<u64>,
    /// Keep hot whoami and verify answers in memory (on), or read the database on every
    /// request (off).
    #[arg(long, env = "AUTHKEYS_CACHE", value_name = "on|off", default_value = "on",
          value_parser = ["on", "off"])]
    pub cache: String,
    /// Milliseconds a node's lease to use its cache runs, with several nodes (tests).
    #[arg(long, hide = true, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(100..))]
    pub node_lease_ms: Option<u64>,
    /// Trust OIDC issuers served over plain http:// (for a local test issuer only).
    #[arg(long, env = "AUTHKEYS_OIDC_ALLOW_INSECURE_ISSUER")]
    pub oidc_allow_insecure_issuer: bool,
    /// How long a fetch of an OIDC issuer's discovery document or JWKS may take (tests).
    #[arg(long, hide = true, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub oidc_fetch_timeout_ms: Option<u64>,
    /// The least time between two fetches of one issuer's JWKS, instead of 60 s (tests).
    #[arg(long, hide = true, value_name = "MS")]
    pub oidc_refetch_interval_ms: Option<u64>,
    /// The longest a fetched JWKS is trusted before it is fetched again, instead of 1 h (tests).
    #[arg(long, hide = true, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub oidc_jwks_max_age_ms: Option<u64>,
}

#[derive(Args, Debug)]
pub struct ServerArg {
    /// The authkeys server's URL: scheme, host and port, no path.
    #[arg(long, env = "AUTHKEYS_SERVER", value_name = "URL", default_value = DEFAULT_SERVER,
          value_parser = server_url)]
    pub server: String,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// How long a command waits for the server.
#[derive(Args, Debug)]
pub struct TimeoutArg {
    /// Give up on a server that has not answered after this long (30s, 2m; a bare number is
    /// seconds).
    #[arg(long, env = "AUTHKEYS_TIMEOUT", value_name = "DURATION", default_value = "10s",
          value_parser = duration::positive)]
    pub timeout: u64,
}

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7373";

/// An http(s) URL naming a server, without a path: the API lives at the server's root, so
/// `http://host:7373/v1` is a mistake that would otherwise surface as a puzzling 404.
fn server_url(value: &str) -> Result<String, String> {
    let uri: ureq::http::Uri = value
        .parse()
        .map_err(|_| format!("expected a URL such as {DEFAULT_SERVER}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!("expected a URL such as {DEFAULT_SERVER}"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        let root = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("http"),
            uri.authority().map_or("", |a| a.as_str())
        );
        return Err(format!(
            "the server's URL takes no path: authkeys serves its API at the root, so use {root}"
        ));
    }
    Ok(value.to_string())
}

#[derive(Args, Debug)]
pub struct OutputArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Only forget the saved session, without telling the server (when it is gone for good);
    /// the machine stays logged in there until an admin logs it out.
    #[arg(long)]
    pub local: bool,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

#[derive(Args, Debug)]
pub struct WhoamiArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// An auth key as a user hands it over.
#[derive(Args, Debug)]
pub struct AuthKeyArg {
    /// The auth key (`ena_…`), or `file:PATH` to read it from a file; prefer
    /// AUTHKEYS_AUTH_KEY, which stays out of `ps`.
    #[arg(
        long,
        env = "AUTHKEYS_AUTH_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub auth_key: Option<String>,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    #[command(flatten)]
    pub auth_key: AuthKeyArg,
    #[command(flatten)]
    pub id_token: super::oidc::IdTokenArgs,
    #[command(flatten)]
    pub server: ServerArg,
    /// Name shown for this machine; defaults to the host name.
    #[arg(long, value_name = "NAME")]
    pub machine: Option<String>,
    /// Leave the session this login replaces logged in on its server (by default it is
    /// logged out); its token is forgotten either way.
    #[arg(long)]
    pub keep_old: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    pub server: ServerArg,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// How much of a list to print: everything (following the server's pages) unless limited.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print at most N rows (and fetch no more).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum AppsCommand {
    /// Create an app.
    Create {
        /// Id: 1-63 of a-z, 0-9 and '-'.
        id: String,
        /// Display name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List apps, by id.
    List {
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete an app: revokes its keys and logs out its machines.
    Delete {
        /// The app's id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// A new key's lifetime unless `--expires-in` or `--no-expiry` says otherwise: the
/// dashboard's default too.
pub const DEFAULT_KEY_EXPIRY: &str = "90d";

/// What a key carries besides its flags (API.md v2, "Key policy").
#[derive(Args, Debug)]
pub struct KeyPolicyArgs {
    /// A tag its machines carry (`tag:ci`); repeatable, up to 16.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// A metadata entry its machines carry, as KEY=VALUE (a string); repeatable.
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = metadata_entry)]
    pub metadata: Vec<(String, String)>,
    /// How many logins the key allows in all; more than one makes it reusable.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_uses: Option<u64>,
    /// How long after login its machines are logged out, instead of the server's ephemeral
    /// TTL (needs --ephemeral; 1m to 365d).
    #[arg(long, value_name = "DURATION", value_parser = duration::positive,
          requires = "ephemeral")]
    pub session_ttl: Option<u64>,
    /// Log out a machine of this key that makes no authenticated request for this long
    /// (1m to 365d).
    #[arg(long, value_name = "DURATION", value_parser = duration::positive)]
    pub idle_timeout: Option<u64>,
}

fn metadata_entry(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err("expected KEY=VALUE, such as team=infra".into()),
    }
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Generate an auth key; it is shown once.
    Create {
        /// The app the key logs machines in as.
        #[arg(long)]
        app: String,
        /// What the key is for, shown in listings.
        #[arg(long)]
        description: Option<String>,
        /// The key can log in any number of machines (dangerous if stolen).
        #[arg(long)]
        reusable: bool,
        /// Machines logged in with the key are logged out after the server's ephemeral TTL
        /// (one hour unless it was started with another --ephemeral-ttl), or --session-ttl.
        #[arg(long)]
        ephemeral: bool,
        #[command(flatten)]
        policy: KeyPolicyArgs,
        /// The key stops accepting new logins after this long (90d, 12h; a bare number is
        /// seconds).
        #[arg(long, value_name = "DURATION", value_parser = duration::positive,
              default_value = DEFAULT_KEY_EXPIRY)]
        expires_in: u64,
        /// The key never expires (instead of --expires-in).
        #[arg(long, conflicts_with = "expires_in")]
        no_expiry: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List an app's keys, newest first.
    List {
        /// The app whose keys to list.
        #[arg(long)]
        app: String,
        /// Include revoked keys.
        #[arg(long)]
        include_revoked: bool,
        /// Only keys with this tag; repeatable: keys with every one of them.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke a key and log out every machine it logged in.
    Revoke {
        /// The app the key belongs to.
        #[arg(long)]
        app: String,
        /// The key's id (`key_…`).
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Replace a key with a new one (shown once) of the same settings; the old one keeps
    /// working for the grace period, and its machines stay logged in.
    Rotate {
        /// The app the key belongs to.
        #[arg(long)]
        app: String,
        /// The key's id (`key_…`).
        id: String,
        /// How long the old key still accepts logins (0 to 30d).
        #[arg(long, value_name = "DURATION", value_parser = duration::seconds,
              default_value = "1h")]
        grace: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Check an auth key without using it up: valid (exit 0) or why not (exit 1).
    Verify {
        #[command(flatten)]
        auth_key: AuthKeyArg,
        #[command(flatten)]
        server: ServerArg,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum MachinesCommand {
    /// List active machines, newest first: an app's, or every app's.
    List {
        /// The app whose machines to list; every app's when absent.
        #[arg(long)]
        app: Option<String>,
        /// Only the machines logged in with this key (`key_…`).
        #[arg(long, value_name = "KEY_ID")]
        key: Option<String>,
        /// Only the machines with this tag; repeatable: machines with every one of them.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Log out one machine.
    Logout {
        /// The app the machine belongs to.
        #[arg(long)]
        app: String,
        /// The machine's id (`mch_…`).
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}
