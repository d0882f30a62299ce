//! Webhooks as root manages them: create (the secret is returned here and never again),
//! list, delete, and each one's deliveries. The delivery itself is `runtime::webhooks`.

use super::Authority;
use super::audit::record;
use crate::domain::audit::{Action, Actor};
use crate::domain::error::{Error, Result};
use crate::domain::model::Timestamp;
use crate::domain::page::{Page, PageRequest};
use crate::domain::token::{self, Secret};
use crate::domain::validate;
use crate::domain::webhook::{self, Delivery, Webhook};
use crate::store::NewWebhook;

impl Authority {
    pub(crate) fn create_webhook(
        &self,
        url: &str,
        events: &[String],
        description: Option<&str>,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<(Webhook, Secret)> {
        webhook::check_new(url, events)?;
        if let Some(description) = description {
            validate::text("description", description, validate::MAX_APP_NAME_CHARS)?;
        }
        let secret = token::webhook_secret();
        let created = self.store.write(|w| {
            let id = token::random_id("whk_");
            let details = serde_json::json!({"url": url, "events": events});
            // Its own creation is the last event it does not receive.
            let after_seq = w.record(&crate::domain::audit::NewEvent {
                at: now,
                action: Action::WebhookCreated,
                actor,
                app: None,
                target_id: &id,
                details,
            })?;
            let new = NewWebhook {
                id,
                url,
                events,
                description,
                secret: secret.expose(),
                after_seq,
            };
            w.insert_webhook(&new, now)
        })?;
        log::info!("created webhook {} to {}", created.id, created.url);
        Ok((created, secret))
    }

    pub(crate) fn webhooks(&self, page: &PageRequest) -> Result<Page<Webhook>> {
        self.store.read(|r| r.webhooks(page))
    }

    /// Deletes the webhook: no delivery starts after this returns.
    pub(crate) fn delete_webhook(&self, id: &str, actor: &Actor, now: Timestamp) -> Result<()> {
        self.store.write(|w| {
            let deleted = w.delete_webhook(id)?.ok_or(Error::WebhookNotFound)?;
            let details = serde_json::json!({"url": deleted.url, "events": deleted.events});
            record(w, actor, now, Action::WebhookDeleted, None, id, details)
        })
    }

    pub(crate) fn deliveries(&self, id: &str, page: &PageRequest) -> Result<Page<Delivery>> {
        self.store.snapshot(|r| {
            let pk = r.webhook_pk(id)?.ok_or(Error::WebhookNotFound)?;
            r.deliveries(pk, page)
        })
    }
}
