//! Who the client is. Directly connected, it is the peer. Behind a proxy in `--trusted-proxy`
//! ranges, it is the right-most address of `X-Forwarded-For` that is not itself a trusted
//! proxy: each proxy appends the address it received the request from, so entries to the left
//! of that one were written by the client and can be forged. From any other peer, forwarding
//! headers are ignored.

use ipnet::IpNet;
use std::net::IpAddr;

/// The `--trusted-proxy` ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(ranges: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(ranges)
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|range| range.contains(&ip))
    }

    /// The client's address, given the peer's and the `X-Forwarded-For` header values in the
    /// order received. When every forwarded entry is a trusted proxy, or an entry cannot be
    /// read, the nearest hop known to be real stands for the client.
    pub(crate) fn client_address<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    ) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        let hops = forwarded_for.rev().flat_map(|value| value.rsplit(','));
        for hop in hops {
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }
}

/// Parses one `X-Forwarded-For` entry: an IP address, perhaps with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>().ok().or_else(|| {
        hop.parse::<std::net::SocketAddr>()
            .ok()
            .map(|addr| addr.ip())
    })
}

/// Parses a `--trusted-proxy` value: a CIDR range, or a single address.
pub fn parse_range(value: &str) -> Result<IpNet, String> {
    let value = value.trim();
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
        .map(|range| range.trunc())
        .map_err(|_| format!("{value:?} is not a CIDR range such as 10.0.0.0/8 or an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(ranges.iter().map(|r| parse_range(r).unwrap()).collect())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let trusted = proxies(&["127.0.0.1/32", "10.0.0.0/8"]);
        let client = |peer: &str, headers: &[&str]| {
            trusted.client_address(ip(peer), headers.iter().copied())
        };
        // A forged left-most entry is ignored: the proxy's own entry is right of it.
        assert_eq!(
            client("127.0.0.1", &["6.6.6.6, 192.0.2.7"]),
            ip("192.0.2.7")
        );
        // Trusted hops are skipped, across several headers too.
        assert_eq!(
            client("127.0.0.1", &["192.0.2.7, 10.1.2.3"]),
            ip("192.0.2.7")
        );
        assert_eq!(
            client("127.0.0.1", &["192.0.2.7", "10.1.2.3"]),
            ip("192.0.2.7")
        );
        assert_eq!(
            client("127.0.0.1", &["[2001:db8::1]:443"]),
            ip("2001:db8::1")
        );
        // Nothing usable: the nearest real hop.
        assert_eq!(client("127.0.0.1", &[]), ip("127.0.0.1"));
        assert_eq!(client("127.0.0.1", &["10.1.2.3"]), ip("10.1.2.3"));
        assert_eq!(
            client("127.0.0.1", &["192.0.2.7, junk, 10.1.2.3"]),
            ip("10.1.2.3")
        );
        // An untrusted peer's header is ignored.
        assert_eq!(client("192.0.2.9", &["198.51.100.1"]), ip("192.0.2.9"));
        // A v4-mapped peer is the IPv4 address.
        assert_eq!(client("::ffff:127.0.0.1", &["192.0.2.7"]), ip("192.0.2.7"));
    }

    #[test]
    fn ranges_are_cidrs_or_addresses_and_anything_else_is_refused() {
        assert_eq!(parse_range("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_range("::1").unwrap().to_string(), "::1/128");
        for bad in ["", "10.0.0.0/33", "localhost", "10.0.0/8", "1.2.3.4/"] {
            assert!(parse_range(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
