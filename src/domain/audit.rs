//! The audit log's vocabulary: who made a change (`Actor`) and from where, what it was
//! (`Action`), and the event as stored and shown (`Event`). An event is written by the store
//! writer in the same transaction as the change it records (`store::audit`).

use crate::domain::model::Timestamp;
use serde::Serialize;
use serde_json::value::RawValue;

/// The kind of actor behind a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ActorType {
    Root,
    AdminToken,
    Machine,
    /// The sweeper: expiry, idleness, `key.expiring`.
    System,
    /// An outside leak reporter (GitLab's Token Revocation API, GitHub secret scanning).
    LeakReport,
}

impl ActorType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ActorType::Root => "root",
            ActorType::AdminToken => "admin_token",
            ActorType::Machine => "machine",
            ActorType::System => "system",
            ActorType::LeakReport => "leak_report",
        }
    }
}

/// Who made a change, and the client address it came from (`None` for the sweeper). The id
/// is an admin token's or machine's public id, or a leak reporter's name: never a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Actor {
    pub(crate) kind: ActorType,
    pub(crate) id: Option<String>,
    pub(crate) client_addr: Option<String>,
}

impl Actor {
    pub(crate) fn system() -> Actor {
        Actor {
            kind: ActorType::System,
            id: None,
            client_addr: None,
        }
    }

    /// The outside leak reporter `reporter` (`gitlab`, `github`), reporting from `client_addr`.
    pub(crate) fn leak_report(reporter: &str, client_addr: Option<String>) -> Actor {
        Actor {
            kind: ActorType::LeakReport,
            id: Some(reporter.to_string()),
            client_addr,
        }
    }

    /// The machine `id` acting for itself (logging in, logging out) from `client_addr`.
    pub(crate) fn machine(id: &str, client_addr: Option<String>) -> Actor {
        Actor {
            kind: ActorType::Machine,
            id: Some(id.to_string()),
            client_addr,
        }
    }
}

/// Everything the log records. `key.expiring` is written by the sweeper once per key, seven
/// days before the key expires, so that webhooks (fed from this log) can announce it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    AppCreated,
    AppDeleted,
    KeyCreated,
    KeyRotated,
    KeyRevoked,
    KeyExpiring,
    MachineLoggedIn,
    MachineLoggedOut,
    AdminTokenCreated,
    AdminTokenRevoked,
    TrustPolicyCreated,
    TrustPolicyDeleted,
    WebhookCreated,
    WebhookDeleted,
}

impl Action {
    pub(crate) const ALL: [Action; 14] = [
        Action::AppCreated,
        Action::AppDeleted,
        Action::KeyCreated,
        Action::KeyRotated,
        Action::KeyRevoked,
        Action::KeyExpiring,
        Action::MachineLoggedIn,
        Action::MachineLoggedOut,
        Action::AdminTokenCreated,
        Action::AdminTokenRevoked,
        Action::TrustPolicyCreated,
        Action::TrustPolicyDeleted,
        Action::WebhookCreated,
        Action::WebhookDeleted,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::AppCreated => "app.created",
            Action::AppDeleted => "app.deleted",
            Action::KeyCreated => "key.created",
            Action::KeyRotated => "key.rotated",
            Action::KeyRevoked => "key.revoked",
            Action::KeyExpiring => "key.expiring",
            Action::MachineLoggedIn => "machine.logged_in",
            Action::MachineLoggedOut => "machine.logged_out",
            Action::AdminTokenCreated => "admin_token.created",
            Action::AdminTokenRevoked => "admin_token.revoked",
            Action::TrustPolicyCreated => "trust_policy.created",
            Action::TrustPolicyDeleted => "trust_policy.deleted",
            Action::WebhookCreated => "webhook.created",
            Action::WebhookDeleted => "webhook.deleted",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Action> {
        Action::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
    }

    /// What kind of object the action is about (`target.type`).
    pub(crate) fn target_type(self) -> &'static str {
        match self {
            Action::AppCreated | Action::AppDeleted => "app",
            Action::KeyCreated | Action::KeyRotated | Action::KeyRevoked | Action::KeyExpiring => {
                "key"
            }
            Action::MachineLoggedIn | Action::MachineLoggedOut => "machine",
            Action::AdminTokenCreated | Action::AdminTokenRevoked => "admin_token",
            Action::TrustPolicyCreated | Action::TrustPolicyDeleted => "trust_policy",
            Action::WebhookCreated | Action::WebhookDeleted => "webhook",
        }
    }
}

/// A change about to be recorded, in the change's own transaction.
pub(crate) struct NewEvent<'a> {
    pub(crate) at: Timestamp,
    pub(crate) action: Action,
    pub(crate) actor: &'a Actor,
    pub(crate) app: Option<&'a str>,
    pub(crate) target_id: &'a str,
    pub(crate) details: serde_json::Value,
}

/// `{"type", "id"}`, of an actor or a target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Named {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) id: Option<String>,
}

/// A recorded event, as `GET /v1/audit` shows it and webhooks send it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Event {
    pub(crate) seq: i64,
    pub(crate) at: Timestamp,
    pub(crate) action: String,
    pub(crate) actor: Named,
    pub(crate) app: Option<String>,
    pub(crate) target: Named,
    pub(crate) client_addr: Option<String>,
    /// Stored as JSON text, sent as it is.
    pub(crate) details: Box<RawValue>,
}

/// Which events `GET /v1/audit` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct EventFilter {
    /// Events after this `seq` only.
    pub(crate) after: i64,
    pub(crate) app: Option<String>,
    pub(crate) action: Option<Action>,
    /// Descending `seq` (`?order=desc`), for a reader that shows the latest first.
    pub(crate) newest_first: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(action));
            assert!(action.as_str().starts_with(action.target_type()));
        }
        assert_eq!(Action::parse("key.*"), None);
    }
}
