//! `Ctx`: what every handler is given for one request, instead of the same five parameters
//! threaded through each.

use super::Request;
use super::throttle::Throttle;
use crate::authority::Authority;
use crate::domain::access::Principal;
use crate::domain::audit::Actor;
use crate::domain::model::Timestamp;
use crate::metrics::Metrics;

#[derive(Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub(super) authority: &'a Authority,
    pub(super) throttle: &'a Throttle,
    pub(super) metrics: &'a Metrics,
    pub(super) request: &'a Request,
    /// The time the request is judged at, passed in (never read from the clock below here).
    pub(super) now: Timestamp,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(
        authority: &'a Authority,
        throttle: &'a Throttle,
        metrics: &'a Metrics,
        request: &'a Request,
        now: Timestamp,
    ) -> Ctx<'a> {
        Ctx {
            authority,
            throttle,
            metrics,
            request,
            now,
        }
    }

    /// The client's address as the audit log records it: the listener's decision, which
    /// honours `--trusted-proxy`.
    pub(super) fn client_addr(&self) -> Option<String> {
        self.request
            .remote_addr
            .map(|addr| addr.ip().to_canonical().to_string())
    }

    /// Who the audit log says made a change: `principal`, from this request's client.
    pub(super) fn actor(&self, principal: &Principal) -> Actor {
        principal.actor(self.client_addr())
    }
}
