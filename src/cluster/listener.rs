//! The listener thread: its own connection (`application_name` `authkeys-listener`), on which
//! it `LISTEN`s, applies every invalidation to the hot cache in the order PostgreSQL delivers
//! them (commit order), acknowledges barriers after the invalidations before them, and renews
//! the node's lease. Losing the connection turns the cache off (`Gate::lost`) until it has
//! reconnected, listened and registered again; then the cache starts empty.

use super::gate::Gate;
use super::notice::{self, Notice};
use super::{Node, PgError};
use crate::cache::hot::Invalidation;
use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use std::time::{Duration, Instant};

/// How long the thread waits for notifications before looking at its stop flag and lease.
const SLICE: Duration = Duration::from_millis(100);
/// The longest pause between two attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The `application_name` of the listening connection: `pg_stat_activity` shows it, so an
/// operator (or a test) can find it, and `pg_terminate_backend` it.
pub(crate) const APPLICATION_NAME: &str = "authkeys-listener";

/// Runs until `node` stops: (re)connects, registers, serves.
pub(crate) fn run(node: &Node, gate: &Gate, mut client: Option<Client>) {
    let mut backoff = Duration::from_millis(50);
    while !node.stopping() {
        let mut connected = match client.take() {
            Some(client) => client,
            None => match register(node, gate) {
                Ok(client) => {
                    log::info!(
                        "cluster: node {} listening again; hot cache back on",
                        node.id
                    );
                    backoff = Duration::from_millis(50);
                    client
                }
                Err(err) => {
                    log::warn!(
                        "cluster: cannot listen yet ({}); retrying",
                        node.redact(&err)
                    );
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        match serve(node, gate, &mut connected) {
            Ok(()) => client = Some(connected),
            Err(err) => {
                gate.lost();
                log::warn!(
                    "cluster: node {} lost its listening connection ({}); hot cache off, \
                     every request reads the database until it is back",
                    node.id,
                    node.redact(&err)
                );
            }
        }
    }
    // Stopping: a clean shutdown takes this node out of every barrier now. Also when the stop
    // came before this thread first ran, with the connection `register` handed it.
    if let Some(mut connected) = client
        && let Err(err) = connected.execute("DELETE FROM nodes WHERE id = $1", &[&node.id])
    {
        log::warn!(
            "cluster: node {} could not leave cleanly ({}); writers wait for its lease to run out",
            node.id,
            node.redact(&err.into())
        );
    }
    gate.stop();
}

/// Connects, listens, then writes the node row, in that order: every change committed after
/// the `LISTEN` is heard, and every barrier numbered up to the row's `acked` was announced
/// after a change committed before now. The cache, off until then, starts empty
/// (`Gate::registered`), so nothing read before counts. Returns the listening connection.
pub(crate) fn register(node: &Node, gate: &Gate) -> Result<Client, PgError> {
    let mut client = node.connect(APPLICATION_NAME)?;
    client.batch_execute(&format!(
        "LISTEN {}; LISTEN {};",
        notice::INVALIDATE,
        notice::BARRIER
    ))?;
    let sent = Instant::now();
    let mut tx = client.transaction()?;
    // The lease is durable (acknowledgements need not be: see `Node::connect`): a lease that
    // a crash of the database forgot would let writers stop waiting for this node early.
    tx.batch_execute("SET LOCAL synchronous_commit = on")?;
    tx.execute(
        "DELETE FROM nodes WHERE lease_until < now() - interval '1 day'",
        &[],
    )?;
    tx.execute(
        "INSERT INTO nodes (id, lease_until, acked)
         SELECT $1, now() + $2::float8 * interval '1 millisecond',
                CASE WHEN is_called THEN last_value ELSE 0 END
           FROM barriers
         ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until,
                                        acked = excluded.acked",
        &[&node.id, &node.lease_millis()],
    )?;
    tx.commit()?;
    gate.registered(node.deadline(sent));
    Ok(client)
}

/// Applies notifications and renews the lease until stopping (`Ok`) or the connection fails.
fn serve(node: &Node, gate: &Gate, client: &mut Client) -> Result<(), PgError> {
    let mut renewed = Instant::now();
    while !node.stopping() {
        let barrier = apply_notifications(node, client)?;
        if client.is_closed() {
            return Err(PgError::Closed);
        }
        if let Some(number) = barrier {
            client.execute(
                "UPDATE nodes SET acked = greatest(acked, $2) WHERE id = $1",
                &[&node.id, &number],
            )?;
        }
        if renewed.elapsed() >= node.settings.renew_every {
            renewed = renew(node, gate, client)?;
        }
    }
    Ok(())
}

/// Applies what has arrived (waiting a slice for the first), in order; answers the highest
/// barrier among it, for the caller to acknowledge after all of it is applied.
fn apply_notifications(node: &Node, client: &mut Client) -> Result<Option<i64>, PgError> {
    let mut barrier = None;
    let mut notifications = client.notifications();
    let mut next = notifications.timeout_iter(SLICE).next()?;
    let mut pending = notifications.iter();
    while let Some(notification) = next {
        match Notice::parse(notification.channel(), notification.payload()) {
            Some(Notice::Invalidate(what)) => node.cache.invalidate(what),
            Some(Notice::Barrier(number)) => barrier = barrier.max(Some(number)),
            None => {
                log::error!(
                    "cluster: unreadable notification on {}; dropping the whole cache",
                    notification.channel()
                );
                node.cache.invalidate(Invalidation::Everything);
            }
        }
        next = pending.next()?;
    }
    Ok(barrier)
}

/// Extends the lease (durably); answers when the renewal was sent.
fn renew(node: &Node, gate: &Gate, client: &mut Client) -> Result<Instant, PgError> {
    let sent = Instant::now();
    let mut tx = client.transaction()?;
    tx.batch_execute("SET LOCAL synchronous_commit = on")?;
    let renewed = tx.execute(
        "UPDATE nodes SET lease_until = now() + $2::float8 * interval '1 millisecond'
          WHERE id = $1",
        &[&node.id, &node.lease_millis()],
    )?;
    tx.commit()?;
    if renewed == 0 {
        // Removed by another node's clean-up: only after a day without a lease, so this node
        // has long been off; registering again starts it cleanly.
        return Err(PgError::Gone);
    }
    gate.renewed(node.deadline(sent));
    Ok(sent)
}
