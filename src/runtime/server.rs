//! Assembles a running server from a `Config`: store, admin token, authority, HTTP workers and
//! sweeper. This is the library entry point; `authkeys serve` and test suites both use it.

use crate::authority::Authority;
use crate::authority::leaks::LeakReporters;
use crate::cache::hot::HotCache;
use crate::cache::usage::UsageStamps;
use crate::cluster::Cluster;
use crate::domain::error::StartError;
use crate::domain::model::Timestamp;
use crate::domain::token::Secret;
use crate::http::throttle::Throttle;
use crate::http::{self, Listener};
use crate::metrics::Metrics;
use crate::runtime::admin_token;
use crate::runtime::config::Config;
use crate::runtime::sweeper::Sweeper;
use crate::runtime::webhooks::Deliverer;
use crate::store::{self, Database, Store};
use std::sync::Arc;

/// A running authkeys server. Dropping it shuts it down: in-flight requests are answered, the
/// workers and the sweeper are joined, and pending usage stamps are written.
pub struct Server {
    url: String,
    admin_token: Option<Secret>,
    /// Whether this start generated the admin token (rather than being given it).
    token_generated: bool,
    // Field order is drop order: stop taking requests before the last sweep.
    _listener: Listener,
    _sweeper: Sweeper,
    _webhooks: Deliverer,
    /// Last: the sweeper's final pass and requests still being answered may need it.
    _cluster: Leaving,
}

/// Leaves the cluster (if any) when the server is dropped, whoever else still holds it.
struct Leaving(Option<Arc<Cluster>>);

impl Drop for Leaving {
    fn drop(&mut self) {
        if let Some(cluster) = &self.0 {
            cluster.stop();
        }
    }
}

impl Server {
    pub fn start(config: Config) -> Result<Server, StartError> {
        admin_token::check_configured(config.admin_token.as_ref())?;
        let revocation_api_token = config.revocation_api_token.as_ref();
        admin_token::check_length("AUTHKEYS_REVOCATION_API_TOKEN", revocation_api_token)?;
        let options = store::Options {
            busy_timeout: config.busy_timeout,
            pg_pool_size: config.pg_pool_size,
        };
        let store = Arc::new(Store::open_with(&config.database, options)?);
        let admin = admin_token::resolve(&store, &config.database, config.admin_token.as_ref())?;
        let stamps = Arc::new(UsageStamps::default());
        let cache = Arc::new(HotCache::default());
        if !config.cache {
            cache.set_usable(false);
        }
        // Several nodes may share a PostgreSQL database: keep this one's cache coherent with
        // theirs. SQLite: one process owns the file, nothing to do.
        let cluster = match store.postgres_url() {
            Some(url) => {
                let settings = crate::cluster::Settings {
                    lease: config.node_lease,
                };
                let cluster = Cluster::start(url, Arc::clone(&cache), config.cache, settings)?;
                Some(Arc::new(cluster))
            }
            None => None,
        };
        let authority = Arc::new(
            Authority::new(
                Arc::clone(&store),
                Arc::clone(&stamps),
                Arc::clone(&cache),
                admin.hash,
                config.ephemeral_ttl.as_secs(),
            )
            .with_min_key_timeout(config.min_key_timeout_secs)
            .with_oidc(config.oidc.clone())
            .with_cluster(cluster.clone())
            .with_leak_reporters(LeakReporters {
                revocation_api_token: config.revocation_api_token.clone(),
                github_keys: config.github_secret_scanning_keys.clone(),
            }),
        );
        if let Some(seed) = &config.seed {
            let (apps, keys) = authority
                .seed(seed, Timestamp::now())
                .map_err(|err| StartError::caused("seeding", err))?;
            log::info!("seed applied: created {apps} app(s) and {keys} key(s)");
        }
        let metrics = Arc::new(Metrics::new(http::ROUTE_LABELS));
        let throttle = Throttle::new(config.login_failures);
        let throttle = Arc::new(throttle);
        let handler = {
            let (authority, throttle) = (Arc::clone(&authority), Arc::clone(&throttle));
            let metrics = Arc::clone(&metrics);
            move |request: &http::Request| {
                http::handle(&authority, &throttle, &metrics, request, Timestamp::now())
            }
        };
        let inline = {
            let metrics = Arc::clone(&metrics);
            move |request: &http::Request| {
                http::handle_in_memory(&authority, &throttle, &metrics, request, Timestamp::now())
            }
        };
        let listener = Listener::start_with(
            &config.listen,
            Arc::new(handler),
            Some(Arc::new(inline)),
            config.workers,
            &config.http,
            Arc::clone(&metrics),
        )?;
        let webhooks = Deliverer::start(Arc::clone(&store), config.webhooks, cluster.clone());
        let sweeper = Sweeper::start(
            store,
            stamps,
            cache,
            metrics,
            cluster.clone(),
            config.sweep_interval,
            config.audit_retention,
        );
        let url = format!("http://{}", listener.address());
        log::info!("listening on {url}");
        if !listener.address().ip().to_canonical().is_loopback() {
            // The server speaks plain HTTP only: every token would cross the network readable.
            log::warn!(
                "{url} is not a loopback address and authkeys has no TLS: tokens would cross \
                 the network in clear text. Listen on 127.0.0.1 behind a TLS-terminating \
                 proxy (README, \"Operations\")"
            );
        }
        let token_generated = admin.generated.is_some();
        Ok(Server {
            url,
            admin_token: config.admin_token.or(admin.generated),
            token_generated,
            _listener: listener,
            _sweeper: sweeper,
            _webhooks: webhooks,
            _cluster: Leaving(cluster),
        })
    }

    /// Starts a throwaway server: in-memory database, free loopback port, fresh admin token.
    pub fn start_throwaway() -> Result<Server, StartError> {
        Server::start(Config::throwaway())
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin token, when this process knows it: configured, or generated by this start.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_ref().map(Secret::expose)
    }

    /// The single JSON line printed on stdout when ready. The admin token is included only when
    /// it was generated for a `:memory:` or PostgreSQL database, where it exists nowhere else
    /// (no file beside a database file; on PostgreSQL only the node that generated it prints
    /// it, once); a configured token is never echoed.
    pub fn ready_line(&self, database: &Database) -> String {
        let mut line = serde_json::json!({"url": self.url});
        if let (Database::Memory | Database::Postgres(_), true, Some(token)) =
            (database, self.token_generated, &self.admin_token)
        {
            line["admin_token"] = token.expose().into();
        }
        line.to_string()
    }

    /// Stops taking requests, answers those in flight, and joins every thread.
    pub fn shutdown(self) {
        drop(self);
    }
}
