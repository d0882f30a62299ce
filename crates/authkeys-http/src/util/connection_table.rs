//! authkeys patch: the connections being served, so that no client can lock others out.
//! Upstream accepted every connection and gave each its own thread, without bound; a plain cap
//! (our first patch) let one client take every place with connections it kept open and silent.
//!
//! - At most `max` connections at once, and at most `max_per_client` from one client (its
//!   group, chosen by the application: authkeys groups IPv6 by /64 and exempts trusted
//!   proxies). A connection over its client's share is refused at once.
//! - When every place is taken, an idle connection (waiting for its next request, keep-alive
//!   or silent since it opened) is shut down to make room: one of the client holding the most
//!   connections, the longest idle of those. So a flooding client's reconnects close its own
//!   connections, not others' keep-alive ones. A connection in the middle of a request is
//!   never chosen; only when none is idle does a new connection wait (in the listen backlog)
//!   for a place.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::net::{IpAddr, Shutdown};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::connection::Connection;

pub struct ConnectionTable {
    table: Mutex<Table>,
    freed: Condvar,
    max: usize,
    max_per_client: usize,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Entry>,
    per_client: HashMap<IpAddr, usize>,
    /// Entries shut down to make room whose threads have not ended yet: they no longer count
    /// against `max`.
    evicted: usize,
}

struct Entry {
    /// The group counted against `max_per_client`; `None` is exempt (a trusted proxy).
    client: Option<IpAddr>,
    /// `Some(since)` while the connection waits for a request to start.
    idle_since: Option<Instant>,
    evicted: bool,
    /// A handle on the socket, to shut it down when evicted (the connection's thread is
    /// blocked reading it).
    socket: Connection,
}

/// Why a connection was not given a place.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its client already holds `max_per_client` connections.
    OverShare,
    /// Every place is taken by a connection in the middle of a request.
    Full,
}

/// One connection's place; dropping it frees the place.
pub struct Slot {
    table: Arc<ConnectionTable>,
    id: u64,
}

impl ConnectionTable {
    pub fn new(max: usize, max_per_client: usize) -> Arc<ConnectionTable> {
        Arc::new(ConnectionTable {
            table: Mutex::new(Table::default()),
            freed: Condvar::new(),
            max: max.max(1),
            max_per_client: max_per_client.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives a new connection from `client` a place, closing the longest-idle connection if
    /// every place is taken. `socket` is a handle used to close this connection in turn.
    pub fn admit(
        self: &Arc<Self>,
        client: Option<IpAddr>,
        socket: Connection,
    ) -> Result<Slot, (Refusal, Connection)> {
        let mut table = self.lock();
        if let Some(client) = client {
            if table.per_client.get(&client).copied().unwrap_or(0) >= self.max_per_client {
                return Err((Refusal::OverShare, socket));
            }
        }
        if table.open.len() - table.evicted >= self.max && !table.evict_idle() {
            return Err((Refusal::Full, socket));
        }
        table.next_id += 1;
        let id = table.next_id;
        if let Some(client) = client {
            *table.per_client.entry(client).or_insert(0) += 1;
        }
        table.open.insert(
            id,
            Entry {
                client,
                idle_since: None,
                evicted: false,
                socket,
            },
        );
        Ok(Slot {
            table: Arc::clone(self),
            id,
        })
    }

    /// Waits at most `timeout` for a place to be freed (after `admit` found none).
    pub fn wait_for_room(&self, timeout: Duration) {
        let table = self.lock();
        let _unused = self
            .freed
            .wait_timeout_while(table, timeout, |table| {
                table.open.len() - table.evicted >= self.max
                    && !table.open.values().any(|entry| entry.idle_since.is_some())
            })
            .unwrap_or_else(|e| e.into_inner());
    }
}

impl Table {
    /// Shuts down an idle connection of the client holding the most connections (exempt ones
    /// count as holding none), the longest idle of those; `false` if none is idle.
    fn evict_idle(&mut self) -> bool {
        let per_client = &self.per_client;
        let held = |entry: &Entry| {
            entry
                .client
                .map_or(0, |c| per_client.get(&c).copied().unwrap_or(0))
        };
        let chosen = self
            .open
            .values_mut()
            .filter(|entry| !entry.evicted)
            .filter_map(|entry| Some((Reverse(held(entry)), entry.idle_since?, entry)))
            .min_by_key(|(held, since, _)| (*held, *since));
        let Some((_, _, entry)) = chosen else {
            return false;
        };
        entry.evicted = true;
        entry.socket.shutdown(Shutdown::Both).ok();
        self.evicted += 1;
        true
    }
}

impl Slot {
    /// The connection now waits for a request to start: it may be closed to make room.
    pub fn idle(&self) {
        if let Some(entry) = self.table.lock().open.get_mut(&self.id) {
            entry.idle_since = Some(Instant::now());
        }
        self.table.freed.notify_one();
    }

    /// A request has started. `false` if the connection was closed to make room before that
    /// (its first byte raced the shutdown): the connection must end.
    pub fn busy(&self) -> bool {
        match self.table.lock().open.get_mut(&self.id) {
            Some(entry) if !entry.evicted => {
                entry.idle_since = None;
                true
            }
            _ => false,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.table.lock();
        if let Some(entry) = table.open.remove(&self.id) {
            if entry.evicted {
                table.evicted -= 1;
            }
            if let Some(client) = entry.client {
                if let Some(count) = table.per_client.get_mut(&client) {
                    *count -= 1;
                    if *count == 0 {
                        table.per_client.remove(&client);
                    }
                }
            }
        }
        drop(table);
        self.table.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::{ConnectionTable, Refusal, Slot};
    use crate::connection::Connection;
    use std::io::Read;
    use std::net::IpAddr;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    /// A socket for the table, and the peer's end, which sees EOF once it is shut down.
    fn socket() -> (Connection, UnixStream) {
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        (Connection::from(ours), theirs)
    }

    fn admit(
        table: &Arc<ConnectionTable>,
        client: Option<&str>,
    ) -> Result<(Slot, UnixStream), Refusal> {
        let (socket, peer) = socket();
        let client = client.map(|c| c.parse::<IpAddr>().unwrap());
        table
            .admit(client, socket)
            .map(|slot| (slot, peer))
            .map_err(|(why, _)| why)
    }

    fn was_shut_down(peer: &mut UnixStream) -> bool {
        peer.set_nonblocking(true).unwrap();
        matches!(peer.read(&mut [0u8]), Ok(0))
    }

    #[test]
    fn a_client_over_its_share_is_refused_and_exempt_peers_are_not_counted() {
        let table = ConnectionTable::new(10, 2);
        let _a = admit(&table, Some("192.0.2.1")).unwrap();
        let b = admit(&table, Some("192.0.2.1")).unwrap();
        assert_eq!(
            admit(&table, Some("192.0.2.1")).err(),
            Some(Refusal::OverShare)
        );
        assert!(admit(&table, Some("192.0.2.2")).is_ok());
        for _ in 0..5 {
            assert!(admit(&table, None).is_ok());
        }
        drop(b);
        assert!(
            admit(&table, Some("192.0.2.1")).is_ok(),
            "a freed place is reusable"
        );
    }

    #[test]
    fn at_capacity_the_top_holders_longest_idle_connection_makes_room_and_busy_ones_never() {
        let table = ConnectionTable::new(4, 4);
        let (busy, mut busy_peer) = admit(&table, Some("192.0.2.9")).unwrap();
        let (old, mut old_peer) = admit(&table, Some("192.0.2.1")).unwrap();
        let (new, mut new_peer) = admit(&table, Some("192.0.2.1")).unwrap();
        let (other, mut other_peer) = admit(&table, Some("192.0.2.2")).unwrap();
        assert!(busy.busy());
        old.idle();
        other.idle();
        new.idle();
        // 192.0.2.1 holds the most; of its two, `old` has been idle longest.
        let _first = admit(&table, Some("192.0.2.3")).unwrap();
        assert!(was_shut_down(&mut old_peer));
        assert!(
            !old.busy(),
            "a shut-down connection does not start a request"
        );
        drop(old);
        // Now each holds one: the longest idle goes, `other` before `new`.
        let _second = admit(&table, Some("192.0.2.3")).unwrap();
        assert!(was_shut_down(&mut other_peer));
        drop(other);
        let _third = admit(&table, Some("192.0.2.4")).unwrap();
        assert!(was_shut_down(&mut new_peer));
        drop(new);
        // Only busy connections (and idle ones being shut down) are left: full.
        assert!(!was_shut_down(&mut busy_peer));
        assert_eq!(admit(&table, Some("192.0.2.5")).err(), Some(Refusal::Full));
        drop(busy);
        assert!(admit(&table, Some("192.0.2.5")).is_ok());
    }
}
