//! This isolate's saturation queue (`queue.rs`): a request whose links are
//! all at their provider's capacity threshold waits here for room, up to
//! `resilience.queue_timeout_ms` (and never past the request's deadline),
//! then goes on the link that freed — or gets `429 capacity_exhausted`.
//!
//! The queue lives in the isolate, next to the capacity view it waits on
//! (`circuits.rs`), so waiting costs no round trip. Each waiter sleeps on its
//! own timer until the moment one of its links frees (the reading's reset, or
//! the oldest request of the last minute ageing out) and then asks the queue
//! whether that room is its own. Waiters never wake each other: a future
//! woken from another request's handler would run in that request's I/O
//! context on Workers, which may cancel it or refuse its I/O.

use std::cell::RefCell;
use std::time::Duration;

use worker::Delay;

use crate::capacity::Room;
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::handlers::circuits;
use crate::http::now_ms;
use crate::queue::{retry_after_secs, LinkResources, Priority, Queue, Refused};
use crate::routing::Link;

thread_local! {
    static QUEUE: RefCell<Queue> = RefCell::new(Queue::default());
}

/// Longest sleep while the room a waiter sees belongs to someone ahead of it
/// (who takes it when its own timer fires) or no free time is predictable.
const RECHECK_MS: u64 = 50;

/// A request that waited and may go now.
pub struct Admitted {
    pub waited_ms: u64,
    /// The link that has room (index into the request's links).
    pub link: usize,
}

/// A request refused for capacity: the error, and how long it waited.
pub struct Refusal {
    pub error: GatewayError,
    pub waited_ms: u64,
}

/// Removes the waiter however the wait ends (admitted, refused, or the
/// request dropped).
struct Place(u64);

impl Drop for Place {
    fn drop(&mut self) {
        QUEUE.with(|q| q.borrow_mut().leave(self.0));
    }
}

fn resources(l: &Link) -> LinkResources {
    vec![l.provider.clone(), format!("{}/{}", l.provider, l.model)]
}

/// The room of one capacity resource (a provider or a `provider/model`).
fn room(config: &GatewayConfig, resource: &str, now: u64) -> Room {
    let pct = config.resilience.capacity_threshold_pct;
    // A provider account is limited by its own count against `rpm_limit`.
    let rpm = (!resource.contains('/'))
        .then(|| config.providers.get(resource).and_then(|p| p.rpm_limit))
        .flatten();
    circuits::capacity_room(resource, now, rpm, pct)
}

/// The room of a link: every one of its resources must have some.
pub fn link_room(config: &GatewayConfig, link: &Link, now: u64) -> Room {
    resources(link)
        .iter()
        .fold(Room::FREE, |acc, r| acc.and(room(config, r, now)))
}

/// Waits, when it must, until one of `links` has room for this request.
/// `Ok(None)`: it did not have to wait (some link has room and nobody is
/// waiting, or the queue is off). Otherwise the request joins the queue with
/// its key's `priority`, and is admitted when the room that frees is its
/// turn, or refused at `deadline_at_ms` / the queue timeout.
pub async fn wait_for_room(
    config: &GatewayConfig,
    links: &[Link],
    key: &str,
    priority: Priority,
    deadline_at_ms: u64,
) -> Result<Option<Admitted>, Refusal> {
    let r = &config.resilience;
    if r.queue_timeout_ms == 0 || links.is_empty() {
        return Ok(None);
    }
    let joined = now_ms();
    let earliest_free = |now: u64| {
        links
            .iter()
            .map(|l| link_room(config, l, now))
            .filter(|room| room.slots == 0)
            .filter_map(|room| room.free_at_ms)
            .min()
    };
    let any_room = links.iter().any(|l| link_room(config, l, joined).slots > 0);
    if any_room {
        // Room, unless it is owed to requests already waiting: a request
        // that need not wait neither waits nor counts against the bounds.
        let free_now = QUEUE.with(|q| {
            let mut q = q.borrow_mut();
            if q.is_empty() {
                return true;
            }
            let Ok(id) = q.join(
                key,
                priority,
                links.iter().map(resources).collect(),
                u32::MAX,
                u32::MAX,
            ) else {
                return false;
            };
            let slots = |resource: &str| room(config, resource, joined).slots;
            let mine = q.turn(id, &slots).is_some();
            q.leave(id);
            mine
        });
        if free_now {
            return Ok(None);
        }
    }
    let refuse = |message: String, now: u64, waited_ms: u64| Refusal {
        error: GatewayError::Budget {
            status: 429,
            code: "capacity_exhausted",
            error_type: "rate_limit_error",
            message,
            retry_after: Some(retry_after_secs(now, earliest_free(now)).to_string()),
        },
        waited_ms,
    };
    let joined_as = QUEUE.with(|q| {
        q.borrow_mut().join(
            key,
            priority,
            links.iter().map(resources).collect(),
            r.queue_max_per_key,
            r.queue_max_waiting,
        )
    });
    let place = match joined_as {
        Ok(id) => Place(id),
        Err(Refused::KeyFull) => {
            return Err(refuse(
                format!(
                    "Every provider for this request is at its rate-limit capacity, and this API \
                     key already has {} requests waiting for room; retry later.",
                    r.queue_max_per_key
                ),
                joined,
                0,
            ))
        }
        Err(Refused::QueueFull) => {
            return Err(refuse(
                "Every provider for this request is at its rate-limit capacity, and the \
                 gateway's queue for room is full; retry later."
                    .to_owned(),
                joined,
                0,
            ))
        }
    };
    let until = joined
        .saturating_add(r.queue_timeout_ms)
        .min(deadline_at_ms);
    loop {
        let now = now_ms();
        let slots = |resource: &str| room(config, resource, now).slots;
        if let Some(link) = QUEUE.with(|q| q.borrow().turn(place.0, &slots)) {
            drop(place);
            return Ok(Some(Admitted {
                waited_ms: now.saturating_sub(joined),
                link,
            }));
        }
        if now >= until {
            drop(place);
            return Err(refuse(
                format!(
                    "Every provider for this request is at its rate-limit capacity and none had \
                     room within {} ms; retry later.",
                    until.saturating_sub(joined)
                ),
                now,
                now.saturating_sub(joined),
            ));
        }
        // Room there now is someone else's turn: look again shortly (they
        // take it when their timer fires); otherwise sleep until room frees.
        let owed = links.iter().any(|l| link_room(config, l, now).slots > 0);
        let wake = earliest_free(now)
            .filter(|t| *t > now && !owed)
            .unwrap_or(now + RECHECK_MS)
            .min(until);
        Delay::from(Duration::from_millis(wake.saturating_sub(now).max(1))).await;
    }
}
