//! Verifying an auth key for another service, without consuming it.

use super::{Authority, KeyProblem, judge_key};
use crate::cache::hot::CachedKey;
use crate::domain::error::Result;
use crate::domain::model::Timestamp;
use crate::domain::token::{self, TokenKind};
use std::sync::Arc;

impl Authority {
    /// Whether `auth_key` would be accepted by a login at `now`. Never consumes the key.
    pub(crate) fn verify(
        &self,
        auth_key: &str,
        now: Timestamp,
    ) -> Result<std::result::Result<Arc<CachedKey>, KeyProblem>> {
        let Ok(hash) = token::parse(TokenKind::AuthKey, auth_key) else {
            return Ok(Err(KeyProblem::Malformed));
        };
        let found = self
            .cache
            .key_or_load(hash, || self.store.read(|r| r.key_status(&hash)))?;
        let Some(key) = found else {
            return Ok(Err(KeyProblem::NotFound));
        };
        if let Err(problem) = judge_key(&key, now) {
            return Ok(Err(problem));
        }
        self.stamps.key_used(key.pk, hash, now);
        Ok(Ok(key))
    }
}
