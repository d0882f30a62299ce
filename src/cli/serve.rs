//! `authkeys serve`: start the server, print the ready line, stop on SIGTERM or SIGINT.

use super::CliError;
use super::args::ServeArgs;
use authkeys::Database;
use authkeys::Secret;
use authkeys::config::{self, Config, DEFAULT_WORKERS};
use authkeys::http;
use authkeys::webhooks::Delivery;
use authkeys::{Server, ops};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::io::Write;
use std::time::Duration;

/// The HTTP settings from `serve`'s flags; an absent one keeps its default.
fn http_settings(args: &ServeArgs) -> http::Settings {
    let defaults = http::Settings::default();
    let millis = |ms: Option<u64>, default| ms.map_or(default, Duration::from_millis);
    http::Settings {
        max_connections: args.max_connections,
        max_connections_per_client: args
            .max_connections_per_client
            .unwrap_or((args.max_connections / 2).max(1)),
        trusted_proxies: http::TrustedProxies::new(args.trusted_proxies.clone()),
        idle_timeout: millis(args.http_idle_timeout_ms, defaults.idle_timeout),
        request_timeout: millis(args.http_request_timeout_ms, defaults.request_timeout),
    }
}

/// Webhook delivery from `serve`'s hidden test flags; an absent one keeps its default.
fn webhook_delivery(args: &ServeArgs) -> Delivery {
    let mut delivery = Delivery::default();
    if let Some(ms) = args.webhook_timeout_ms {
        delivery.timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = args.webhook_poll_ms {
        delivery.poll_interval = Duration::from_millis(ms);
    }
    match args.webhook_first_retry_ms {
        Some(ms) => delivery.with_first_retry(Duration::from_millis(ms)),
        None => delivery,
    }
}

pub fn serve(args: ServeArgs) -> Result<(), CliError> {
    let admin_token = match std::env::var("AUTHKEYS_ADMIN_TOKEN") {
        Ok(token) if token.is_empty() => {
            return Err(CliError::Message(
                "AUTHKEYS_ADMIN_TOKEN is set but empty".into(),
            ));
        }
        Ok(token) => Some(Secret::new(token)),
        Err(_) => None,
    };
    let database = Database::from_arg(&args.db);
    let seed = match &args.seed {
        Some(path) => Some(ops::load_seed(path).map_err(CliError::from)?),
        None => None,
    };
    let http = http_settings(&args);
    let github_secret_scanning_keys = match &args.github_secret_scanning_keys {
        Some(path) => Some(ops::load_github_keys(path).map_err(CliError::from)?),
        None => None,
    };
    let webhooks = webhook_delivery(&args);
    let config = Config {
        database: database.clone(),
        listen: args.listen,
        ephemeral_ttl: Duration::from_secs(args.ephemeral_ttl),
        sweep_interval: args.sweep_interval_ms.map_or(
            Duration::from_secs(args.sweep_interval),
            Duration::from_millis,
        ),
        admin_token,
        workers: DEFAULT_WORKERS,
        login_failures: config::ThrottleLimits {
            burst: args.login_failures_burst,
            per_minute: args.login_failures_per_minute,
        },
        seed,
        http,
        busy_timeout: args
            .sqlite_busy_timeout_ms
            .map_or(config::DEFAULT_BUSY_TIMEOUT, Duration::from_millis),
        pg_pool_size: usize::try_from(args.pg_pool_size).unwrap_or(usize::MAX),
        revocation_api_token: args.revocation_api_token.clone().map(Secret::new),
        github_secret_scanning_keys,
        audit_retention: Duration::from_secs(args.audit_retention),
        webhooks,
        min_key_timeout_secs: args
            .min_key_timeout_secs
            .unwrap_or(Config::default().min_key_timeout_secs),
        oidc: authkeys::OidcSettings {
            allow_insecure_issuer: args.oidc_allow_insecure_issuer,
            fetch_timeout: args.oidc_fetch_timeout_ms.map_or(
                authkeys::config::DEFAULT_OIDC_FETCH_TIMEOUT,
                Duration::from_millis,
            ),
            refetch_interval: args.oidc_refetch_interval_ms.map_or(
                authkeys::config::DEFAULT_OIDC_REFETCH_INTERVAL,
                Duration::from_millis,
            ),
            jwks_max_age: args.oidc_jwks_max_age_ms.map_or(
                authkeys::config::DEFAULT_OIDC_JWKS_MAX_AGE,
                Duration::from_millis,
            ),
        },
    };
    // Registered before the ready line, so a signal sent as soon as it is read is not lost.
    let mut signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|err| CliError::caused("installing signal handlers", err))?;
    let server = Server::start(config).map_err(CliError::from)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", server.ready_line(&database))
        .and_then(|()| stdout.flush())
        .map_err(|err| CliError::caused("writing the ready line", err))?;
    drop(stdout);
    if let Some(signal) = signals.forever().next() {
        log::info!("received signal {signal}: finishing in-flight requests and stopping");
    }
    server.shutdown();
    log::info!("stopped");
    Ok(())
}
