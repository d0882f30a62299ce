//! What the nodes tell each other through PostgreSQL's `NOTIFY`: the invalidations the
//! triggers of `cluster.sql` announce inside each changing transaction, and the barriers a
//! writer announces after its commit. Pure: parsing only.

use crate::cache::hot::Invalidation;
use crate::domain::token::TokenHash;

/// The channel the triggers announce changes on.
pub(crate) const INVALIDATE: &str = "authkeys_invalidate";
/// The channel barriers are announced on (the payload is the barrier's number).
pub(crate) const BARRIER: &str = "authkeys_barrier";

/// One notification, as the listener acts on it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Notice {
    Invalidate(Invalidation),
    /// Every change committed before this barrier has been announced before it.
    Barrier(i64),
}

impl Notice {
    /// The notice behind a notification, or `None` for one that is not ours (a channel we
    /// did not `LISTEN` to cannot arrive; a payload we cannot read is a bug, logged by the
    /// caller, which then drops everything to stay safe).
    pub(crate) fn parse(channel: &str, payload: &str) -> Option<Notice> {
        match channel {
            INVALIDATE => invalidation(payload).map(Notice::Invalidate),
            BARRIER => payload.parse().ok().map(Notice::Barrier),
            _ => None,
        }
    }
}

/// `*`, or `s` / `k` and a token hash in hex (see `cluster.sql`).
fn invalidation(payload: &str) -> Option<Invalidation> {
    if payload == "*" {
        return Some(Invalidation::Everything);
    }
    let (kind, hex) = payload.split_at_checked(1)?;
    let mut hash = [0; 32];
    hex::decode_to_slice(hex, &mut hash).ok()?;
    let hash = TokenHash(hash);
    match kind {
        "s" => Some(Invalidation::Session(hash)),
        "k" => Some(Invalidation::Key(hash)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_triggers_and_barriers_send_and_nothing_else() {
        let hash = TokenHash::of("t");
        let hex = hex::encode(hash.0);
        let parse = |channel, payload: &str| Notice::parse(channel, payload);
        assert_eq!(
            parse(INVALIDATE, "*"),
            Some(Notice::Invalidate(Invalidation::Everything))
        );
        assert_eq!(
            parse(INVALIDATE, &format!("s{hex}")),
            Some(Notice::Invalidate(Invalidation::Session(hash)))
        );
        assert_eq!(
            parse(INVALIDATE, &format!("k{hex}")),
            Some(Notice::Invalidate(Invalidation::Key(hash)))
        );
        assert_eq!(parse(BARRIER, "42"), Some(Notice::Barrier(42)));
        for (channel, payload) in [
            (INVALIDATE, ""),
            (INVALIDATE, "s"),
            (INVALIDATE, &format!("x{hex}")),
            (INVALIDATE, &format!("s{}", &hex[2..])),
            (INVALIDATE, "sé"),
            (BARRIER, "x"),
            ("other", "*"),
        ] {
            assert_eq!(parse(channel, payload), None, "{channel} {payload}");
        }
    }
}
