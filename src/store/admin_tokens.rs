//! Scoped admin tokens' SQL: creating, listing, revoking, the lookup that authenticates one
//! (a read: no write on the request path), and the batched `last_used_at` stamps.

use super::read::Reader;
use super::sql::{Row, SqlResult, args};
use super::write::{Writer, stamp_sql};
use crate::cache::usage::Stamp;
use crate::domain::access::{AdminToken, Grant, KeyLimits, NewAdminToken, Scope};
use crate::domain::error::Result;
use crate::domain::model::Timestamp;
use crate::domain::page::{Page, PageRequest, Position};
use crate::domain::token::TokenHash;

const TOKEN_COLUMNS: &str = "pk, id, name, scopes, apps, hint, created_at, expires_at, \
                             last_used_at, revoked_at, max_key_lifetime, allowed_tags, \
                             ephemeral_only, hash";

impl Writer<'_> {
    pub(crate) fn insert_admin_token(
        &self,
        id: String,
        hash: &TokenHash,
        hint: String,
        new: &NewAdminToken,
        now: Timestamp,
    ) -> Result<AdminToken> {
        let expires_at = new.expires_in_secs.map(|secs| now.plus_secs(secs));
        let scopes: Vec<&str> = new.scopes.iter().map(|scope| scope.as_str()).collect();
        let pk = self.insert(
            "INSERT INTO admin_tokens (id, hash, hint, name, scopes, apps, created_at,
                                       expires_at, max_key_lifetime, allowed_tags,
                                       ephemeral_only)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            "pk",
            args![
                id,
                hash.as_bytes(),
                hint,
                new.name,
                json_text(&scopes),
                new.apps.as_ref().map(json_text),
                now.0,
                expires_at.map(|at| at.0),
                new.limits.max_key_lifetime.map(|secs| secs as i64),
                new.limits.allowed_tags.as_ref().map(json_text),
                new.limits.ephemeral_only,
            ],
        )?;
        Ok(AdminToken {
            pk,
            id,
            name: new.name.clone(),
            scopes: new.scopes.clone(),
            apps: new.apps.clone(),
            hint,
            created_at: now,
            expires_at,
            last_used_at: None,
            revoked_at: None,
            max_key_lifetime: new.limits.max_key_lifetime,
            allowed_tags: new.limits.allowed_tags.clone(),
            ephemeral_only: new.limits.ephemeral_only,
        })
    }

    /// Marks the unrevoked token `id` revoked; returns it, or `None` if there is none.
    pub(crate) fn revoke_admin_token(
        &self,
        id: &str,
        now: Timestamp,
    ) -> Result<Option<AdminToken>> {
        self.optional(
            &format!(
                "UPDATE admin_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL
                 RETURNING {TOKEN_COLUMNS}"
            ),
            args![id, now.0],
            |row| Ok(token_from_row(row)?.0),
        )
    }

    /// Moves `last_used_at` forward for each stamp whose row still holds its hash.
    pub(crate) fn stamp_admin_tokens_used(&self, stamps: &[Stamp]) -> Result<usize> {
        let sql = stamp_sql(
            self.conn().dialect(),
            "admin_tokens",
            "last_used_at",
            "hash",
        );
        self.stamp_rows(&sql, stamps)
    }
}

impl Reader<'_> {
    /// What the token with this hash may do, if it exists, is unrevoked and unexpired at `now`.
    pub(crate) fn admin_grant(&self, hash: &TokenHash, now: Timestamp) -> Result<Option<Grant>> {
        let token = self.optional(
            &format!("SELECT {TOKEN_COLUMNS} FROM admin_tokens WHERE hash = ?1"),
            args![hash.as_bytes()],
            token_from_row,
        )?;
        Ok(token.and_then(|(token, hash)| {
            let live = token.revoked_at.is_none() && token.expires_at.is_none_or(|at| at > now);
            live.then_some(Grant {
                pk: token.pk,
                id: token.id,
                hash,
                scopes: token.scopes,
                apps: token.apps,
                limits: KeyLimits {
                    max_key_lifetime: token.max_key_lifetime,
                    allowed_tags: token.allowed_tags,
                    ephemeral_only: token.ephemeral_only,
                },
            })
        }))
    }

    /// A page of the admin tokens, revoked ones included, newest first.
    pub(crate) fn admin_tokens(&self, page: &PageRequest) -> Result<Page<AdminToken>> {
        let before = page.resume(|position| match position {
            Position::AdminToken { pk } => Some(*pk),
            _ => None,
        })?;
        let rows = self.collect(
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM admin_tokens WHERE pk < ?1 ORDER BY pk DESC LIMIT ?2"
            ),
            args![before.unwrap_or(i64::MAX), page.fetch()],
            |row| Ok(token_from_row(row)?.0),
        )?;
        Ok(Page::from_rows(rows, page, |token| Position::AdminToken {
            pk: token.pk,
        }))
    }
}

fn json_text<T: serde::Serialize>(value: T) -> String {
    serde_json::to_string(&value).expect("a list of strings always serialises")
}

/// A JSON array of strings stored in column `index`.
fn strings(row: &Row, index: usize) -> SqlResult<Option<Vec<String>>> {
    let text: Option<String> = row.get(index)?;
    text.map(|text| serde_json::from_str(&text).map_err(|err| Row::bad_column(index, err)))
        .transpose()
}

fn token_from_row(row: &Row) -> SqlResult<(AdminToken, TokenHash)> {
    let scopes = strings(row, 3)?
        .unwrap_or_default()
        .iter()
        .filter_map(|scope| Scope::parse(scope))
        .collect();
    let hash: [u8; 32] = row.get(13)?;
    let token = AdminToken {
        pk: row.get(0)?,
        id: row.get(1)?,
        name: row.get(2)?,
        scopes,
        apps: strings(row, 4)?,
        hint: row.get(5)?,
        created_at: Timestamp(row.get(6)?),
        expires_at: row.get::<Option<i64>>(7)?.map(Timestamp),
        last_used_at: row.get::<Option<i64>>(8)?.map(Timestamp),
        revoked_at: row.get::<Option<i64>>(9)?.map(Timestamp),
        max_key_lifetime: row.get::<Option<i64>>(10)?.map(|secs| secs as u64),
        allowed_tags: strings(row, 11)?,
        ephemeral_only: row.get(12)?,
    };
    Ok((token, TokenHash(hash)))
}
