//! Webhooks' SQL: creating, listing and deleting them, what the delivery thread reads (the
//! live webhooks and how far each got), and each attempt it records.

use super::read::Reader;
use super::sql::{Row, SqlResult, args};
use super::write::Writer;
use crate::domain::error::Result;
use crate::domain::model::Timestamp;
use crate::domain::page::{Page, PageRequest, Position};
use crate::domain::webhook::{Delivery, Outcome, Target, Webhook};

const WEBHOOK_COLUMNS: &str = "pk, id, url, events, description, created_at";
const DELIVERY_COLUMNS: &str = "seq, attempts, last_status, last_error, delivered_at, \
                                next_attempt_at";

/// What a new webhook is made of.
pub(crate) struct NewWebhook<'a> {
    pub(crate) id: String,
    pub(crate) url: &'a str,
    pub(crate) events: &'a [String],
    pub(crate) description: Option<&'a str>,
    pub(crate) secret: &'a str,
    /// Deliveries start after this event (its own `webhook.created`).
    pub(crate) after_seq: i64,
}

impl Writer<'_> {
    pub(crate) fn insert_webhook(&self, new: &NewWebhook, now: Timestamp) -> Result<Webhook> {
        let events = serde_json::to_string(new.events).expect("strings serialise");
        let pk = self.insert(
            "INSERT INTO webhooks (id, url, events, description, secret, created_at, after_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            "pk",
            args![
                new.id,
                new.url,
                events,
                new.description,
                new.secret,
                now.0,
                new.after_seq
            ],
        )?;
        Ok(Webhook {
            pk,
            id: new.id.clone(),
            url: new.url.to_string(),
            events: new.events.to_vec(),
            description: new.description.map(str::to_string),
            created_at: now,
        })
    }

    /// Deletes the webhook and its deliveries; returns it, or `None` if there is none.
    pub(crate) fn delete_webhook(&self, id: &str) -> Result<Option<Webhook>> {
        self.optional(
            &format!("DELETE FROM webhooks WHERE id = ?1 RETURNING {WEBHOOK_COLUMNS}"),
            args![id],
            webhook_from_row,
        )
    }

    /// Records one attempt to deliver event `seq` to webhook `pk`, made at `now`; the next one,
    /// if any, is due at `next_attempt_at`.
    pub(crate) fn record_attempt(
        &self,
        webhook_pk: i64,
        seq: i64,
        outcome: &Outcome,
        next_attempt_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<()> {
        let delivered_at = matches!(outcome, Outcome::Delivered(_)).then_some(now.0);
        self.execute(
            // A webhook deleted during the attempt gets no row (and no foreign key error). The
            // casts give PostgreSQL the parameters' types, which a SELECT list does not.
            "INSERT INTO webhook_deliveries (webhook_pk, seq, attempts, last_status, last_error,
                                             delivered_at, next_attempt_at)
             SELECT CAST(?1 AS BIGINT), CAST(?2 AS BIGINT), 1, CAST(?3 AS BIGINT),
                    CAST(?4 AS TEXT), CAST(?5 AS BIGINT), CAST(?6 AS BIGINT)
              WHERE EXISTS (SELECT 1 FROM webhooks WHERE pk = ?1)
             ON CONFLICT (webhook_pk, seq) DO UPDATE SET
                 attempts = webhook_deliveries.attempts + 1,
                 last_status = excluded.last_status,
                 last_error = excluded.last_error, delivered_at = excluded.delivered_at,
                 next_attempt_at = excluded.next_attempt_at",
            args![
                webhook_pk,
                seq,
                outcome.status(),
                outcome.error(),
                delivered_at,
                next_attempt_at.map(|at| at.0)
            ],
        )
        .map(drop)
    }

    /// Marks every event of webhook `pk` up to `seq` done.
    pub(crate) fn advance_webhook(&self, webhook_pk: i64, seq: i64) -> Result<()> {
        self.execute(
            "UPDATE webhooks SET after_seq = ?2 WHERE pk = ?1 AND after_seq < ?2",
            args![webhook_pk, seq],
        )
        .map(drop)
    }
}

impl Reader<'_> {
    /// A page of the webhooks, newest first.
    pub(crate) fn webhooks(&self, page: &PageRequest) -> Result<Page<Webhook>> {
        let before = page.resume(|position| match position {
            Position::Webhook { pk } => Some(*pk),
            _ => None,
        })?;
        let rows = self.collect(
            &format!(
                "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE pk < ?1 ORDER BY pk DESC LIMIT ?2"
            ),
            args![before.unwrap_or(i64::MAX), page.fetch()],
            webhook_from_row,
        )?;
        Ok(Page::from_rows(rows, page, |webhook| Position::Webhook {
            pk: webhook.pk,
        }))
    }

    pub(crate) fn webhook_pk(&self, id: &str) -> Result<Option<i64>> {
        self.optional("SELECT pk FROM webhooks WHERE id = ?1", args![id], |row| {
            row.get(0)
        })
    }

    /// Every webhook, as the delivery thread needs it.
    pub(crate) fn targets(&self) -> Result<Vec<Target>> {
        self.collect(
            "SELECT pk, id, url, events, secret, after_seq FROM webhooks ORDER BY pk",
            args![],
            |row| {
                Ok(Target {
                    pk: row.get(0)?,
                    id: row.get(1)?,
                    url: row.get(2)?,
                    events: events(row, 3)?,
                    secret: row.get(4)?,
                    after_seq: row.get(5)?,
                })
            },
        )
    }

    /// Webhook `pk`'s delivery of event `seq`, if attempted.
    pub(crate) fn delivery(&self, webhook_pk: i64, seq: i64) -> Result<Option<Delivery>> {
        self.optional(
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
                  WHERE webhook_pk = ?1 AND seq = ?2"
            ),
            args![webhook_pk, seq],
            delivery_from_row,
        )
    }

    /// A page of webhook `pk`'s deliveries, newest event first.
    pub(crate) fn deliveries(&self, webhook_pk: i64, page: &PageRequest) -> Result<Page<Delivery>> {
        let before = page.resume(|position| match position {
            Position::Delivery { seq } => Some(*seq),
            _ => None,
        })?;
        let rows = self.collect(
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
                  WHERE webhook_pk = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
            ),
            args![webhook_pk, before.unwrap_or(i64::MAX), page.fetch()],
            delivery_from_row,
        )?;
        Ok(Page::from_rows(rows, page, |delivery| Position::Delivery {
            seq: delivery.seq,
        }))
    }
}

fn events(row: &Row, index: usize) -> SqlResult<Vec<String>> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|err| Row::bad_column(index, err))
}

fn webhook_from_row(row: &Row) -> SqlResult<Webhook> {
    Ok(Webhook {
        pk: row.get(0)?,
        id: row.get(1)?,
        url: row.get(2)?,
        events: events(row, 3)?,
        description: row.get(4)?,
        created_at: Timestamp(row.get(5)?),
    })
}

fn delivery_from_row(row: &Row) -> SqlResult<Delivery> {
    Ok(Delivery {
        seq: row.get(0)?,
        attempts: row.get(1)?,
        last_status: row.get(2)?,
        last_error: row.get(3)?,
        delivered_at: row.get::<Option<i64>>(4)?.map(Timestamp),
        next_attempt_at: row.get::<Option<i64>>(5)?.map(Timestamp),
    })
}
