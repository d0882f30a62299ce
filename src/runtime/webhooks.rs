//! The webhook delivery thread. The audit log is the outbox: each webhook remembers the last
//! `seq` it is done with (`webhooks.after_seq`), and each pass reads the events after it, in
//! `seq` order, and POSTs the next matching one, signed. A webhook whose receiver fails waits
//! for its back-off (kept in `webhook_deliveries`, so it survives a restart) without holding
//! up the others, and never gets a later event first. Nothing here runs on a request path:
//! requests only append events, in their own transactions.
//!
//! The HTTP client is ureq (already the CLI's): a timeout on the whole exchange, no redirects
//! (a 30x is a failed attempt), a bounded response body (a larger one is a failed attempt).

use crate::cluster::{Cluster, Exclusive};
use crate::domain::audit::Event;
use crate::domain::error::Result;
use crate::domain::model::Timestamp;
use crate::domain::webhook::{self, Outcome, Retry, Target};
use crate::store::Store;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Events read per query while looking for a webhook's next match.
const READ_BATCH: usize = 100;
/// Events one webhook may be sent per pass, so that a busy one does not starve the others.
const SENT_PER_PASS: usize = 100;
/// A receiver's answer body is read up to this (to reuse the connection); a longer one is a
/// failed attempt.
pub(crate) const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// How the delivery thread talks to receivers and how often it looks for work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The longest one attempt may take, connection to last byte.
    pub timeout: Duration,
    /// How often the thread looks for new events.
    pub poll_interval: Duration,
    pub(crate) retry: Retry,
}

impl Default for Delivery {
    fn default() -> Delivery {
        Delivery {
            timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            retry: Retry::default(),
        }
    }
}

impl Delivery {
    /// With the first retry after `first_retry` instead of 5 s (tests).
    pub fn with_first_retry(mut self, first_retry: Duration) -> Delivery {
        self.retry.first = first_retry;
        self
    }
}

/// Sends what is due to every webhook once; returns how many events were delivered.
pub(crate) fn deliver_pass(
    store: &Store,
    agent: &ureq::Agent,
    delivery: &Delivery,
) -> Result<usize> {
    let mut delivered = 0;
    for target in store.read(|r| r.targets())? {
        delivered += deliver_to(store, agent, delivery, &target)?;
    }
    Ok(delivered)
}

/// Sends `target` its due events in `seq` order, stopping at the first failure (the event is
/// retried after its back-off, before any later one).
fn deliver_to(
    store: &Store,
    agent: &ureq::Agent,
    delivery: &Delivery,
    target: &Target,
) -> Result<usize> {
    let mut after = target.after_seq;
    let mut delivered = 0;
    while delivered < SENT_PER_PASS {
        let events = store.read(|r| r.events_after(after, READ_BATCH))?;
        let Some(last) = events.last().map(|event| event.seq) else {
            return Ok(delivered);
        };
        let Some(event) = events
            .into_iter()
            .find(|event| webhook::matches(&target.events, &event.action))
        else {
            // Nothing of interest up to `last`: done with it, so the next pass starts there.
            store.write(|w| w.advance_webhook(target.pk, last))?;
            after = last;
            continue;
        };
        let now = Timestamp::now();
        let previous = store.read(|r| r.delivery(target.pk, event.seq))?;
        if previous
            .as_ref()
            .and_then(|attempted| attempted.next_attempt_at)
            .is_some_and(|due| due > now)
        {
            return Ok(delivered);
        }
        let outcome = post(agent, target, &event);
        let now = Timestamp::now();
        let attempts = previous.map_or(1, |attempted| attempted.attempts + 1);
        let done = match &outcome {
            Outcome::Delivered(_) => true,
            _ => delivery.retry.given_up(event.at, now),
        };
        let next = (!done).then(|| delivery.retry.next_attempt(attempts, now));
        if !matches!(outcome, Outcome::Delivered(_)) {
            log::warn!(
                "webhook {}: event {} not delivered (attempt {attempts}{}): {}",
                target.id,
                event.seq,
                if done { ", giving up" } else { "" },
                outcome.error().unwrap_or_default()
            );
        }
        store.write(|w| {
            w.record_attempt(target.pk, event.seq, &outcome, next, now)?;
            if done {
                w.advance_webhook(target.pk, event.seq)?;
            }
            Ok(())
        })?;
        if !done {
            return Ok(delivered);
        }
        delivered += usize::from(matches!(outcome, Outcome::Delivered(_)));
        after = event.seq;
    }
    Ok(delivered)
}

/// One signed POST of `event` to `target`.
fn post(agent: &ureq::Agent, target: &Target, event: &Event) -> Outcome {
    let body = serde_json::to_vec(event).expect("an event always serialises");
    let t = Timestamp::now().0.div_euclid(1000);
    let result = agent
        .post(&target.url)
        .header("Content-Type", "application/json")
        .header("Authkeys-Webhook-Id", &target.id)
        .header("Authkeys-Event-Seq", event.seq.to_string())
        .header(
            "Authkeys-Signature",
            webhook::sign(&target.secret, t, &body),
        )
        .send(&body[..]);
    let mut response = match result {
        Ok(response) => response,
        Err(err) => return Outcome::Failed(err.to_string()),
    };
    let status = response.status().as_u16();
    // Read (bounded) so that a receiver cannot stream forever at us.
    let read = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_vec();
    match (status, read) {
        (_, Err(err)) => Outcome::Failed(format!(
            "reading the answer ({status}): {err} (at most {MAX_RESPONSE_BYTES} bytes are read)"
        )),
        (200..=299, Ok(_)) => Outcome::Delivered(status),
        (_, Ok(_)) => Outcome::Refused(status),
    }
}

fn agent(delivery: &Delivery) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(delivery.timeout))
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent("authkeys-webhooks")
        .build()
        .into()
}

/// Owns the delivery thread. Dropping it stops the thread (after the attempt in progress,
/// at most `timeout`) and joins it.
pub(crate) struct Deliverer {
    stop: SyncSender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Deliverer {
    /// With a `cluster`, one node at a time delivers (each pass under `Cluster::exclusive`):
    /// the progress is in the database, so whichever node delivers next goes on from there.
    pub(crate) fn start(
        store: Arc<Store>,
        delivery: Delivery,
        cluster: Option<Arc<Cluster>>,
    ) -> Deliverer {
        let (stop, stopped) = mpsc::sync_channel::<()>(1);
        let thread = thread::Builder::new()
            .name("webhooks".into())
            .spawn(move || {
                let agent = agent(&delivery);
                let pass = || deliver_pass(&store, &agent, &delivery);
                loop {
                    let delivered = match &cluster {
                        None => pass(),
                        Some(cluster) => cluster
                            .exclusive(Exclusive::Webhooks, pass)
                            .and_then(|done| done.unwrap_or(Ok(0))),
                    };
                    if let Err(err) = delivered {
                        log::warn!("webhook delivery failed, will retry: {err}");
                    }
                    match stopped.recv_timeout(delivery.poll_interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
            .expect("spawning the webhook delivery thread");
        Deliverer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Deliverer {
    fn drop(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("the webhook delivery thread panicked");
        }
    }
}
