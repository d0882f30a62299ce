//! Throttling of failed authentication attempts (auth keys, session tokens, the admin token)
//! per client address: a token bucket per address, drained by failures and refilled at a
//! steady rate. Generated tokens carry 178 bits of entropy, so this does not protect their
//! keyspace; it keeps a guessing loop from spending the server's CPU and database, and slows
//! guessing a configured admin token. Time is passed in, so the arithmetic is tested without
//! sleeping. Which requests ask, and what counts as a failure, is `http::throttling`.
//!
//! An attempt reserves one failure before it runs (`Throttle::admit`) and gives it back unless
//! it is marked failed: however many attempts one address sends at once, no more of them run
//! than its bucket allows, and a throttled address never reaches a credential check.

use crate::domain::model::Timestamp;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Failures one address may make in a burst: enough that a legitimate test suite hammering a
/// single-use key (a burst of 200 losing logins) is never refused.
pub const DEFAULT_BURST: u32 = 300;
/// How fast an address earns failures back: five a second slows a guessing loop from
/// thousands of attempts a second to five, and refills a whole burst within a minute.
pub const DEFAULT_PER_MINUTE: u32 = 300;
/// Addresses tracked at most, so that a flood of source addresses cannot grow memory without
/// bound. Only addresses with recent failures are tracked at all.
pub(crate) const MAX_TRACKED_CLIENTS: usize = 10_000;

/// The configured allowance. Either value 0 turns throttling off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub burst: u32,
    pub per_minute: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            burst: DEFAULT_BURST,
            per_minute: DEFAULT_PER_MINUTE,
        }
    }
}

/// How long a refused client should wait before its next attempt can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryAfter {
    pub(crate) secs: u64,
}

/// Whom a bucket belongs to: an IPv4 address, or an IPv6 /64 (one subscriber's network, which
/// a single attacker can draw any number of addresses from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    V4(u32),
    V6Prefix(u64),
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Client::V4(_) => write!(f, "{}", self.network()),
            Client::V6Prefix(_) => write!(f, "{}/64", self.network()),
        }
    }
}

/// The network that stands for the client at `ip`, as this throttle groups clients: the IPv4
/// address, or the first address of the IPv6 /64. The connection shares use it too.
pub(crate) fn client_network(ip: IpAddr) -> IpAddr {
    Client::of(ip).network()
}

impl Client {
    fn network(self) -> IpAddr {
        match self {
            Client::V4(bits) => IpAddr::V4(Ipv4Addr::from(bits)),
            Client::V6Prefix(bits) => IpAddr::V6(Ipv6Addr::from(u128::from(bits) << 64)),
        }
    }

    fn of(ip: IpAddr) -> Client {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Client::V4(u32::from(v4)),
            IpAddr::V6(v6) => Client::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Failures still allowed; fractional while refilling.
    tokens: f64,
    updated: Timestamp,
    /// Whether running dry has been logged; reset once the bucket is full again, so a
    /// sustained loop is logged once, not once per refused attempt.
    warned: bool,
}

pub(crate) struct Throttle {
    /// `None`: throttling is off.
    rate: Option<Rate>,
    buckets: Mutex<HashMap<Client, Bucket>>,
    max_clients: usize,
}

#[derive(Debug, Clone, Copy)]
struct Rate {
    burst: f64,
    tokens_per_ms: f64,
}

impl Throttle {
    pub(crate) fn new(limits: Limits) -> Throttle {
        Throttle::with_capacity(limits, MAX_TRACKED_CLIENTS)
    }

    fn with_capacity(limits: Limits, max_clients: usize) -> Throttle {
        let rate = (limits.burst > 0 && limits.per_minute > 0).then(|| Rate {
            burst: f64::from(limits.burst),
            tokens_per_ms: f64::from(limits.per_minute) / 60_000.0,
        });
        Throttle {
            rate,
            buckets: Mutex::new(HashMap::new()),
            max_clients: max_clients.max(1),
        }
    }

    /// Admits an attempt from `ip` at `now`, reserving one failure for it, or refuses it with
    /// how long to wait. Without an address (not a TCP client) there is nothing to key on.
    pub(crate) fn admit(
        &self,
        ip: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<Attempt<'_>, RetryAfter> {
        let (Some(rate), Some(ip)) = (self.rate, ip) else {
            return Ok(Attempt {
                reserved: None,
                throttle: self,
            });
        };
        let client = Client::of(ip);
        let mut buckets = self.lock();
        if !buckets.contains_key(&client) && buckets.len() >= self.max_clients {
            evict(&mut buckets, self.max_clients, rate, now);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: rate.burst,
            updated: now,
            warned: false,
        });
        refill(bucket, rate, now);
        if bucket.tokens < 1.0 {
            let wait_ms = (1.0 - bucket.tokens) / rate.tokens_per_ms;
            let secs = (wait_ms / 1000.0).ceil().max(1.0) as u64;
            return Err(RetryAfter { secs });
        }
        bucket.tokens -= 1.0;
        Ok(Attempt {
            reserved: Some(client),
            throttle: self,
        })
    }

    /// How many addresses are tracked now (for the tests of the bound).
    #[cfg(test)]
    fn tracked_clients(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Client, Bucket>> {
        // The map holds only arithmetic; a panic elsewhere cannot leave it inconsistent.
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives back the failure an attempt reserved. A bucket that is full again is forgotten:
    /// it carries no information.
    fn give_back(&self, client: Client) {
        let Some(rate) = self.rate else { return };
        let mut buckets = self.lock();
        if let Some(bucket) = buckets.get_mut(&client) {
            bucket.tokens = (bucket.tokens + 1.0).min(rate.burst);
            if bucket.tokens >= rate.burst {
                buckets.remove(&client);
            }
        }
    }
}

/// One admitted attempt. Dropping it gives its reserved failure back; `failed` keeps it spent.
pub(crate) struct Attempt<'a> {
    reserved: Option<Client>,
    throttle: &'a Throttle,
}

impl Attempt<'_> {
    /// The attempt failed (a refused credential): it counts against the client's allowance.
    pub(crate) fn failed(mut self) {
        let Some(client) = self.reserved.take() else {
            return;
        };
        let mut buckets = self.throttle.lock();
        if let Some(bucket) = buckets.get_mut(&client)
            && bucket.tokens < 1.0
            && !bucket.warned
        {
            bucket.warned = true;
            log::warn!("throttling {client}: too many failed authentication attempts");
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.reserved.take() {
            self.throttle.give_back(client);
        }
    }
}

/// The failures `bucket` allows at `now`. A clock that stepped backwards refills nothing
/// rather than draining the bucket.
fn tokens_at(bucket: &Bucket, rate: Rate, now: Timestamp) -> f64 {
    let elapsed_ms = (now.0 - bucket.updated.0).max(0) as f64;
    (bucket.tokens + elapsed_ms * rate.tokens_per_ms).min(rate.burst)
}

fn refill(bucket: &mut Bucket, rate: Rate, now: Timestamp) {
    bucket.tokens = tokens_at(bucket, rate, now);
    bucket.updated = now;
    if bucket.tokens >= rate.burst {
        bucket.warned = false;
    }
}

/// Makes room for one more address: first forgets every bucket that has refilled (no loss),
/// then, if that freed nothing, the bucket left alone longest.
fn evict(buckets: &mut HashMap<Client, Bucket>, max_clients: usize, rate: Rate, now: Timestamp) {
    buckets.retain(|_, bucket| tokens_at(bucket, rate, now) < rate.burst);
    if buckets.len() >= max_clients {
        let oldest = buckets
            .iter()
            .min_by_key(|(_, bucket)| bucket.updated)
            .map(|(client, _)| *client);
        if let Some(client) = oldest {
            buckets.remove(&client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)));

    fn at(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    /// Makes `n` failed attempts from `ip` at `now`; panics if one is refused.
    fn fail(throttle: &Throttle, ip: Option<IpAddr>, n: u32, now: Timestamp) {
        for i in 0..n {
            throttle
                .admit(ip, now)
                .unwrap_or_else(|retry| panic!("attempt {i} refused: {retry:?}"))
                .failed();
        }
    }

    fn limits(burst: u32, per_minute: u32) -> Limits {
        Limits { burst, per_minute }
    }

    #[test]
    fn a_burst_passes_then_the_client_waits_for_the_refill() {
        let throttle = Throttle::new(limits(5, 60)); // one failure back per second
        fail(&throttle, A, 5, at(0));
        assert_eq!(throttle.admit(A, at(0)).err(), Some(RetryAfter { secs: 1 }));
        assert_eq!(
            throttle.admit(A, at(999)).err(),
            Some(RetryAfter { secs: 1 })
        );
        fail(&throttle, A, 1, at(1000));
        assert!(throttle.admit(A, at(1000)).is_err());
        // After a long rest the whole burst is back, and no more than that.
        fail(&throttle, A, 5, at(3_600_000));
        assert!(throttle.admit(A, at(3_600_000)).is_err());
    }

    #[test]
    fn retry_after_is_whole_seconds_until_the_next_failure_is_allowed() {
        let throttle = Throttle::new(limits(2, 6)); // one back every ten seconds
        fail(&throttle, A, 2, at(0));
        assert_eq!(
            throttle.admit(A, at(0)).err(),
            Some(RetryAfter { secs: 10 })
        );
        assert_eq!(
            throttle.admit(A, at(500)).err(),
            Some(RetryAfter { secs: 10 })
        );
        assert_eq!(
            throttle.admit(A, at(9_001)).err(),
            Some(RetryAfter { secs: 1 })
        );
        assert!(throttle.admit(A, at(10_000)).is_ok());
    }

    #[test]
    fn successes_are_never_counted() {
        let throttle = Throttle::new(limits(3, 1));
        for _ in 0..1000 {
            drop(
                throttle
                    .admit(A, at(0))
                    .expect("a success never drains the bucket"),
            );
        }
        fail(&throttle, A, 3, at(0));
        assert!(throttle.admit(A, at(0)).is_err());
        // A refilled bucket is forgotten: only clients with recent failures take memory.
        let throttle = Throttle::new(limits(3, 1));
        drop(throttle.admit(A, at(0)));
        assert_eq!(throttle.tracked_clients(), 0);
    }

    #[test]
    fn attempts_in_flight_hold_their_reservation() {
        // Concurrent attempts from one address cannot overrun its allowance: each one reserves
        // a failure before it runs.
        let throttle = Throttle::new(limits(3, 1));
        let in_flight: Vec<_> = (0..3).map(|_| throttle.admit(A, at(0)).unwrap()).collect();
        assert!(throttle.admit(A, at(0)).is_err());
        drop(in_flight);
        assert!(throttle.admit(A, at(0)).is_ok());
    }

    #[test]
    fn other_clients_are_unaffected() {
        let throttle = Throttle::new(limits(2, 1));
        fail(&throttle, A, 2, at(0));
        assert!(throttle.admit(A, at(0)).is_err());
        fail(&throttle, B, 2, at(0));
        assert!(throttle.admit(B, at(0)).is_err());
    }

    #[test]
    fn ipv6_clients_are_grouped_by_their_64_and_mapped_ipv4_is_ipv4() {
        let throttle = Throttle::new(limits(2, 1));
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        fail(&throttle, ip("2001:db8:1:2::1"), 1, at(0));
        fail(&throttle, ip("2001:db8:1:2:ffff::9"), 1, at(0));
        assert!(throttle.admit(ip("2001:db8:1:2::77"), at(0)).is_err());
        assert!(throttle.admit(ip("2001:db8:1:3::1"), at(0)).is_ok());

        let mapped = Ipv6Addr::from(0xffff_c000_0201_u128); // ::ffff:192.0.2.1
        fail(&throttle, A, 2, at(0));
        assert!(throttle.admit(Some(IpAddr::V6(mapped)), at(0)).is_err());
    }

    #[test]
    fn zero_turns_throttling_off_and_no_address_is_never_throttled() {
        for off in [limits(0, 60), limits(60, 0)] {
            let throttle = Throttle::new(off);
            fail(&throttle, A, 10_000, at(0));
            assert_eq!(throttle.tracked_clients(), 0);
        }
        let throttle = Throttle::new(limits(1, 1));
        fail(&throttle, None, 100, at(0));
    }

    #[test]
    fn memory_is_bounded_and_eviction_prefers_what_carries_no_information() {
        let throttle = Throttle::with_capacity(limits(2, 60), 3);
        let client = |n: u8| Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)));
        for n in 0..50 {
            fail(&throttle, client(n), 2, at(i64::from(n)));
            assert!(throttle.tracked_clients() <= 3);
        }
        // The newest throttled clients are still remembered.
        assert!(throttle.admit(client(49), at(49)).is_err());
        assert!(throttle.admit(client(48), at(49)).is_err());
        // A bucket that has refilled is dropped before a throttled one is.
        let throttle = Throttle::with_capacity(limits(2, 60), 2);
        fail(&throttle, client(1), 2, at(0));
        fail(&throttle, client(2), 1, at(0));
        fail(&throttle, client(3), 1, at(1_000)); // client 2 has refilled by now
        // Client 1 is still remembered: one failure earned back, not a fresh burst of two.
        fail(&throttle, client(1), 1, at(1_000));
        assert!(throttle.admit(client(1), at(1_000)).is_err());
        assert_eq!(throttle.tracked_clients(), 2);
    }

    #[test]
    fn a_clock_stepping_backwards_refills_nothing() {
        let throttle = Throttle::new(limits(1, 60));
        fail(&throttle, A, 1, at(10_000));
        assert!(throttle.admit(A, at(0)).is_err());
        assert!(throttle.admit(A, at(1_000)).is_ok());
    }
}
