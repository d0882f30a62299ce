//! `Ctx`: what every handler is given for one request, instead of the same five parameters
//! threaded through each.

use super::Request;
use super::throttle::Throttle;
use crate::authority::Authority;
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
