//! Who an admin request acts as: root (the configured or generated admin token) or a scoped
//! admin token (`ent_…`) with its scopes, its apps and the limits on the keys it creates.
//! Which scope each route needs is the HTTP layer's table (`http::access`); what a scope and a
//! grant are, and what a grant allows, is here.

use crate::domain::audit::{Actor, ActorType};
use crate::domain::error::{Error, Result};
use crate::domain::model::{NewKey, Timestamp};
use crate::domain::token::TokenHash;
use serde::Serialize;

/// What a scoped admin token may be allowed to do. Managing admin tokens and webhooks is no
/// scope: it is root's alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Scope {
    AppsRead,
    AppsWrite,
    KeysRead,
    KeysWrite,
    MachinesRead,
    MachinesWrite,
    AuditRead,
    TrustPoliciesWrite,
}

impl Scope {
    pub(crate) const ALL: [Scope; 8] = [
        Scope::AppsRead,
        Scope::AppsWrite,
        Scope::KeysRead,
        Scope::KeysWrite,
        Scope::MachinesRead,
        Scope::MachinesWrite,
        Scope::AuditRead,
        Scope::TrustPoliciesWrite,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scope::AppsRead => "apps:read",
            Scope::AppsWrite => "apps:write",
            Scope::KeysRead => "keys:read",
            Scope::KeysWrite => "keys:write",
            Scope::MachinesRead => "machines:read",
            Scope::MachinesWrite => "machines:write",
            Scope::AuditRead => "audit:read",
            Scope::TrustPoliciesWrite => "trust_policies:write",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == text)
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The limits a scoped token puts on every key it creates (API.md, "Admin tokens with scopes").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyLimits {
    /// A key without `expires_in` gets exactly this; a longer one is refused.
    pub(crate) max_key_lifetime: Option<u64>,
    /// Every tag of a key must be one of these (`None`: any tags).
    pub(crate) allowed_tags: Option<Vec<String>>,
    pub(crate) ephemeral_only: bool,
}

impl KeyLimits {
    /// Applies the limits to a key about to be created: fills in the lifetime, refuses a
    /// breach with `policy_violation`.
    pub(crate) fn apply(&self, new: &mut NewKey) -> Result<()> {
        if self.ephemeral_only && !new.ephemeral {
            return Err(violation("this token may create only ephemeral keys"));
        }
        if let Some(max) = self.max_key_lifetime {
            match new.expires_in_secs {
                None => new.expires_in_secs = Some(max),
                Some(secs) if secs > max => {
                    return Err(violation(&format!(
                        "this token's keys may live at most {max} s (`expires_in` {secs})"
                    )));
                }
                Some(_) => {}
            }
        }
        if let Some(allowed) = &self.allowed_tags
            && let Some(tag) = new.policy.tags.iter().find(|tag| !allowed.contains(tag))
        {
            return Err(violation(&format!(
                "this token may not create keys tagged {tag}"
            )));
        }
        Ok(())
    }
}

fn violation(reason: &str) -> Error {
    Error::PolicyViolation(reason.to_string())
}

/// A scoped admin token as authenticated: what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) pk: i64,
    pub(crate) id: String,
    pub(crate) hash: TokenHash,
    pub(crate) scopes: Vec<Scope>,
    /// The apps it may act on; `None`: every app.
    pub(crate) apps: Option<Vec<String>>,
    pub(crate) limits: KeyLimits,
}

/// Who an admin request acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Principal {
    Root,
    Scoped(Grant),
}

impl Principal {
    /// Refuses a scoped token that lacks `scope`.
    pub(crate) fn require(&self, scope: Scope) -> Result<()> {
        match self {
            Principal::Root => Ok(()),
            Principal::Scoped(grant) if grant.scopes.contains(&scope) => Ok(()),
            Principal::Scoped(_) => Err(Error::Forbidden(format!(
                "this token lacks the scope {}",
                scope.as_str()
            ))),
        }
    }

    /// Refuses anything but root.
    pub(crate) fn require_root(&self) -> Result<()> {
        match self {
            Principal::Root => Ok(()),
            Principal::Scoped(_) => Err(Error::Forbidden(
                "only the root admin token may do this".into(),
            )),
        }
    }

    /// Refuses a scoped token limited to other apps than `app`.
    pub(crate) fn require_app(&self, app: &str) -> Result<()> {
        match self {
            Principal::Scoped(Grant {
                apps: Some(apps), ..
            }) if !apps.iter().any(|allowed| allowed == app) => Err(Error::Forbidden(format!(
                "this token may not act on app {app}"
            ))),
            _ => Ok(()),
        }
    }

    /// The actor the audit log records for this principal: `root`, or the token's id.
    pub(crate) fn actor(&self, client_addr: Option<String>) -> Actor {
        let (kind, id) = match self {
            Principal::Root => (ActorType::Root, None),
            Principal::Scoped(grant) => (ActorType::AdminToken, Some(grant.id.clone())),
        };
        Actor {
            kind,
            id,
            client_addr,
        }
    }

    /// The scopes it holds: every one, for root.
    pub(crate) fn scopes(&self) -> &[Scope] {
        match self {
            Principal::Root => &Scope::ALL,
            Principal::Scoped(grant) => &grant.scopes,
        }
    }

    /// The apps this principal is limited to, if any.
    pub(crate) fn apps(&self) -> Option<&[String]> {
        match self {
            Principal::Scoped(Grant {
                apps: Some(apps), ..
            }) => Some(apps),
            _ => None,
        }
    }

    /// The limits on the keys it creates (none for root).
    pub(crate) fn key_limits(&self) -> Option<&KeyLimits> {
        match self {
            Principal::Root => None,
            Principal::Scoped(grant) => Some(&grant.limits),
        }
    }
}

/// A scoped admin token as listed: everything but the secret, which is never stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct AdminToken {
    #[serde(skip)]
    pub(crate) pk: i64,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) scopes: Vec<Scope>,
    pub(crate) apps: Option<Vec<String>>,
    pub(crate) hint: String,
    pub(crate) created_at: Timestamp,
    pub(crate) expires_at: Option<Timestamp>,
    pub(crate) last_used_at: Option<Timestamp>,
    pub(crate) revoked_at: Option<Timestamp>,
    pub(crate) max_key_lifetime: Option<u64>,
    pub(crate) allowed_tags: Option<Vec<String>>,
    pub(crate) ephemeral_only: bool,
}

/// What root asks for when creating a scoped token.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NewAdminToken {
    pub(crate) name: String,
    pub(crate) scopes: Vec<Scope>,
    pub(crate) apps: Option<Vec<String>>,
    pub(crate) expires_in_secs: Option<u64>,
    pub(crate) limits: KeyLimits,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_unknown_ones_are_none() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        for bad in ["", "admin", "keys:*", "KEYS:READ", "admin_tokens:write"] {
            assert_eq!(Scope::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn limits_fill_in_the_lifetime_and_refuse_breaches() {
        let limits = KeyLimits {
            max_key_lifetime: Some(600),
            allowed_tags: Some(vec!["tag:ci".into()]),
            ephemeral_only: true,
        };
        let ephemeral = NewKey {
            ephemeral: true,
            ..NewKey::default()
        };
        let tagged = |tag: &str| {
            let mut key = ephemeral.clone();
            key.policy.tags = vec![tag.to_string()];
            key
        };
        let mut key = tagged("tag:ci");
        limits.apply(&mut key).unwrap();
        assert_eq!(key.expires_in_secs, Some(600));
        let mut shorter = NewKey {
            expires_in_secs: Some(60),
            ..ephemeral.clone()
        };
        limits.apply(&mut shorter).unwrap();
        assert_eq!(shorter.expires_in_secs, Some(60));
        let refused =
            |mut key: NewKey| matches!(limits.apply(&mut key), Err(Error::PolicyViolation(_)));
        assert!(refused(NewKey::default()), "not ephemeral");
        let longer = NewKey {
            expires_in_secs: Some(601),
            ..ephemeral.clone()
        };
        assert!(refused(longer), "longer than allowed");
        assert!(refused(tagged("tag:prod")), "a tag not allowed");
    }
}
