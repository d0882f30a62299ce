//! Several nodes on one PostgreSQL database: keeping each node's hot cache coherent with
//! every other node's writes, and the background work that one node at a time must do.
//! SQLite has none of this (one process owns the file). ARCHITECTURE.md, "Several nodes",
//! has the argument for why a revocation that returned on one node is refused on all.
//!
//! - `schema.postgres.sql`, its last part: the `nodes` table (leases on the database's clock,
//!   acknowledged barriers), the `barriers` sequence, and the triggers that announce every
//!   change that can make a cached answer wrong, inside the changing transaction.
//! - `listener`: the thread that hears those announcements and barriers, applies and
//!   acknowledges them in commit order, and renews the lease.
//! - `gate`: when the cache may be used (registered and within the lease).
//! - `Cluster::wait_for_peers`: after a write commits, a barrier, then the wait until every
//!   other leased node has acknowledged it or its lease has run out.
//! - `Cluster::exclusive`: a session advisory lock, so one node at a time sweeps or delivers.

mod gate;
mod listener;
mod notice;

use crate::cache::hot::HotCache;
use crate::domain::error::{Error, StartError};
use crate::store::PgUrl;
use crate::store::pg_url;
use gate::Gate;
use postgres::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The `application_name` of the connection that sends barriers and holds advisory locks.
const COORDINATOR_APPLICATION_NAME: &str = "authkeys-coordinator";

/// How long a node's lease runs, and how it is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    /// A lease's length on the database's clock: the longest a writer waits for a node that
    /// stopped answering (`Config::node_lease`).
    pub(crate) lease: Duration,
}

/// The default lease: a dead node holds up revocations for at most this long.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(10);

impl Settings {
    /// The lease is renewed five times per length, so a renewal or two may be slow.
    fn renew_every(&self) -> Duration {
        self.lease / 5
    }

    /// How long before its end (by its own clock) a node stops using a lease: room for the
    /// two clocks' rates to differ, for the watchdog to wake late, and for a request that
    /// checked the cache's flag just before to finish its lookup.
    fn margin(&self) -> Duration {
        self.lease / 5
    }
}

/// What a cluster operation failed on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PgError {
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
    /// Already redacted (`pg_url::connect_with`).
    #[error("{0}")]
    Connect(String),
    #[error("the connection is closed")]
    Closed,
    #[error("the node row is gone")]
    Gone,
}

/// What the listener thread and the `Cluster` share.
pub(crate) struct Node {
    /// `node_…`, random per start; in the `nodes` table and in logs.
    id: String,
    url: PgUrl,
    config: postgres::Config,
    settings: InternalSettings,
    cache: Arc<HotCache>,
    stopping: AtomicBool,
}

#[derive(Clone, Copy)]
struct InternalSettings {
    lease: Duration,
    renew_every: Duration,
    margin: Duration,
}

impl Node {
    /// A connection named `application_name` (so `pg_stat_activity` tells them apart), on
    /// which commits need not wait for the disk unless a statement asks (acknowledgements:
    /// one lost in a crash of the database only makes a writer wait longer). Dead peers are
    /// noticed by keepalives and a TCP user timeout within about a lease.
    fn connect(&self, application_name: &str) -> Result<Client, PgError> {
        // Keepalive times are whole seconds to the kernel, at least one.
        let keepalive = Duration::from_secs(self.settings.renew_every.as_secs().max(1));
        let mut config = self.config.clone();
        // After the store's options, which keep the URL's own (a search_path, say).
        let options = format!(
            "{} -c synchronous_commit=off",
            config.get_options().unwrap_or_default()
        );
        config
            .application_name(application_name)
            .options(options.trim_start())
            .keepalives(true)
            .keepalives_idle(keepalive)
            .keepalives_interval(keepalive)
            .keepalives_retries(2)
            .tcp_user_timeout(self.settings.lease);
        pg_url::connect_with(&self.url, &config).map_err(|err| PgError::Connect(err.message))
    }

    /// `err` and its causes as one line that may be logged: without the URL's password.
    fn redact(&self, err: &PgError) -> String {
        let mut text = err.to_string();
        let mut cause = std::error::Error::source(err);
        while let Some(next) = cause {
            let next_text = next.to_string();
            if !text.contains(&next_text) {
                text = format!("{text}: {next_text}");
            }
            cause = next.source();
        }
        self.url.redact(&text)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn lease_millis(&self) -> f64 {
        self.settings.lease.as_secs_f64() * 1000.0
    }

    /// Until when a lease renewed by a statement sent at `sent` covers the cache, by this
    /// node's clock: the database set its end at least `lease` after `sent` by its clock.
    fn deadline(&self, sent: Instant) -> Instant {
        sent + self.settings.lease - self.settings.margin
    }
}

/// This node's part in the cluster. `with_cache`: a listener keeps the hot cache coherent
/// (else the cache stays off, `--cache off`, and the node holds no lease); either way, its
/// writes wait for the other nodes (`wait_for_peers`).
pub(crate) struct Cluster {
    node: Arc<Node>,
    gate: Option<Arc<Gate>>,
    coordinator: Mutex<Option<Client>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Background work done by one node at a time, each under its own advisory lock.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Exclusive {
    Sweep = 1,
    Webhooks = 2,
}

/// The class of our advisory locks in PostgreSQL's two-integer key space, which does not
/// overlap the one-bigint space (the store's locks). "ak" in ASCII.
const LOCK_CLASS: i32 = 0x616b;

impl Cluster {
    /// Joins the cluster on the database at `url`. With the cache on, this node is listening
    /// and registered before it returns (a failure is a start error); its cache is off until
    /// then.
    pub(crate) fn start(
        url: &PgUrl,
        cache: Arc<HotCache>,
        with_cache: bool,
        settings: Settings,
    ) -> Result<Cluster, StartError> {
        let node = Arc::new(Node {
            id: crate::domain::token::random_id("node_"),
            url: url.clone(),
            config: url.config()?,
            settings: InternalSettings {
                lease: settings.lease,
                renew_every: settings.renew_every(),
                margin: settings.margin(),
            },
            cache: Arc::clone(&cache),
            stopping: AtomicBool::new(false),
        });
        let mut cluster = Cluster {
            node: Arc::clone(&node),
            gate: None,
            coordinator: Mutex::new(None),
            threads: Mutex::new(Vec::new()),
        };
        // Connected now, so that the first write does not pay for it (nor a start succeed
        // that could not wait for peers).
        cluster.coordinate(|_| Ok(())).map_err(|_| {
            StartError::new(format!(
                "connecting to {url} to coordinate with the other nodes (see the log)"
            ))
        })?;
        if !with_cache {
            cache.set_usable(false);
            log::info!("cluster: node {} has no hot cache (--cache off)", node.id);
            return Ok(cluster);
        }
        let gate = Arc::new(Gate::new(cache));
        let client = listener::register(&node, &gate).map_err(|err| {
            StartError::new(format!(
                "listening for the other nodes' changes on {url}: {}",
                node.redact(&err)
            ))
        })?;
        log::info!(
            "cluster: node {} listening (application_name {}); hot cache on",
            node.id,
            listener::APPLICATION_NAME
        );
        let spawn = |name: &str, work: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(work)
                .expect("spawning a cluster thread")
        };
        let threads = vec![
            spawn("cluster-listener", {
                let (node, gate) = (Arc::clone(&node), Arc::clone(&gate));
                Box::new(move || listener::run(&node, &gate, Some(client)))
            }),
            spawn("cluster-lease", {
                let gate = Arc::clone(&gate);
                Box::new(move || gate.watch())
            }),
        ];
        cluster.gate = Some(gate);
        *cluster
            .threads
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = threads;
        Ok(cluster)
    }

    /// Returns once every other node that may be using a hot cache has applied every change
    /// committed before this call (it acknowledged a barrier announced after them), or its
    /// lease has run out by the database's clock. Call after a write commits and before it
    /// is answered. Fails, after the write committed, only if the database cannot be asked,
    /// or if a node keeps its lease without acknowledging for three leases (a bug, logged):
    /// an error answer rather than a promise that might not hold.
    pub(crate) fn wait_for_peers(&self) -> Result<(), Error> {
        let started = Instant::now();
        let barrier: i64 = self.coordinate(|client| {
            let row = client.query_one(
                "SELECT b FROM nextval('barriers') AS b, pg_notify($1, b::text) AS n",
                &[&notice::BARRIER],
            )?;
            Ok(row.get(0))
        })?;
        let mut pause = Duration::from_millis(1);
        loop {
            let waiting: Vec<String> = self.coordinate(|client| {
                let rows = client.query(
                    "SELECT id FROM nodes
                      WHERE id <> $1 AND acked < $2 AND lease_until > now()",
                    &[&self.node.id, &barrier],
                )?;
                Ok(rows.iter().map(|row| row.get(0)).collect())
            })?;
            if waiting.is_empty() {
                return Ok(());
            }
            if started.elapsed() > 3 * self.node.settings.lease {
                log::error!(
                    "cluster: nodes {waiting:?} keep their leases but have not acknowledged \
                     barrier {barrier} in {} ms",
                    started.elapsed().as_millis()
                );
                return Err(Error::Unavailable);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Runs `work` unless another node is running the same work: `None` then. The lock is a
    /// session advisory lock of the coordinator connection, held while `work` runs (a lost
    /// connection releases it, so two nodes may then overlap once: both kinds of work are
    /// safe to repeat, and their writes are serialised by the store).
    pub(crate) fn exclusive<T>(
        &self,
        which: Exclusive,
        work: impl FnOnce() -> T,
    ) -> Result<Option<T>, Error> {
        let key = which as i32;
        let locked: bool = self.coordinate(|client| {
            let row =
                client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK_CLASS, &key])?;
            Ok(row.get(0))
        })?;
        if !locked {
            return Ok(None);
        }
        let done = work();
        self.coordinate(|client| {
            client.execute("SELECT pg_advisory_unlock($1, $2)", &[&LOCK_CLASS, &key])?;
            Ok(())
        })?;
        Ok(Some(done))
    }

    /// Runs `query` on the coordinator connection, (re)connecting first if needed; a query
    /// that fails on a connection found closed is tried once more on a new one.
    fn coordinate<T>(
        &self,
        mut query: impl FnMut(&mut Client) -> Result<T, PgError>,
    ) -> Result<T, Error> {
        let mut coordinator = lock(&self.coordinator);
        for attempt in 0..2 {
            if coordinator.as_ref().is_none_or(Client::is_closed) {
                *coordinator = match self.node.connect(COORDINATOR_APPLICATION_NAME) {
                    Ok(client) => Some(client),
                    Err(err) => return Err(self.unavailable(err)),
                };
            }
            let client = coordinator.as_mut().expect("connected just above");
            match query(client) {
                Ok(value) => return Ok(value),
                Err(_) if attempt == 0 && client.is_closed() => *coordinator = None,
                Err(err) => return Err(self.unavailable(err)),
            }
        }
        unreachable!("the second attempt returns")
    }

    fn unavailable(&self, err: PgError) -> Error {
        log::error!(
            "cluster: the database cannot be reached: {}",
            self.node.redact(&err)
        );
        Error::Unavailable
    }

    /// Leaves the cluster: the listener deletes this node's row (so no writer waits for it)
    /// and the cache stays off. Idempotent.
    pub(crate) fn stop(&self) {
        self.node.stopping.store(true, Ordering::Release);
        if let Some(gate) = &self.gate {
            gate.stop();
        }
        for thread in std::mem::take(&mut *lock(&self.threads)) {
            if thread.join().is_err() {
                log::error!("a cluster thread panicked");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
