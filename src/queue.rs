//! The saturation queue (issue 12, "Provider capacity"): when every link of a
//! request is at its provider's capacity threshold, the request waits here —
//! up to a deadline — instead of failing at once, and the room that frees is
//! handed out by priority (a key's tier, `paid` first), first come first
//! served within a tier.
//!
//! Pure bookkeeping: who waits, in which order, for which links, and who gets
//! the next free slot. Each waiter wakes itself on its own timer (see
//! `handlers/capacity_queue.rs` for why) and asks [`Queue::turn`] whether the
//! room there is now is its to take.

use serde::{Deserialize, Serialize};

/// A key's tier: who goes first when provider capacity is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Background work: waits behind everyone.
    Batch,
    #[default]
    Standard,
    /// Paying customers: first.
    Paid,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::Standard => "standard",
            Self::Paid => "paid",
        }
    }

    /// The stored value (D1 `virtual_keys.priority`); an unknown one reads as
    /// `standard` — a tier only orders waiting, it grants nothing.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "batch" => Some(Self::Batch),
            "standard" => Some(Self::Standard),
            "paid" => Some(Self::Paid),
            _ => None,
        }
    }
}

/// One link of a waiting request: the capacity resources it uses (the
/// provider account's own count, the model's reading), all of which must
/// have a slot.
pub type LinkResources = Vec<String>;

#[derive(Debug, Clone)]
struct Waiter {
    id: u64,
    key: String,
    priority: Priority,
    links: Vec<LinkResources>,
}

/// Why a request may not wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The key already has `max_per_key` requests waiting.
    KeyFull,
    /// The isolate's queue is full.
    QueueFull,
}

/// The waiting requests of one isolate, in arrival order.
#[derive(Debug, Default)]
pub struct Queue {
    waiters: Vec<Waiter>,
    next_id: u64,
}

impl Queue {
    /// Adds a request; ids grow, so they also record arrival order.
    pub fn join(
        &mut self,
        key: &str,
        priority: Priority,
        links: Vec<LinkResources>,
        max_per_key: u32,
        max_total: u32,
    ) -> Result<u64, Refused> {
        let of_key = self.waiters.iter().filter(|w| w.key == key).count();
        if of_key >= max_per_key as usize {
            return Err(Refused::KeyFull);
        }
        if self.waiters.len() >= max_total as usize {
            return Err(Refused::QueueFull);
        }
        self.next_id += 1;
        self.waiters.push(Waiter {
            id: self.next_id,
            key: key.to_owned(),
            priority,
            links,
        });
        Ok(self.next_id)
    }

    /// Removes a request (admitted, timed out, or gone).
    pub fn leave(&mut self, id: u64) {
        self.waiters.retain(|w| w.id != id);
    }

    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Whether `id` may go now, and on which of its links (index): the free
    /// slots (`slots(resource)`) are handed out to the waiters in priority
    /// order (arrival order within a priority), each taking a slot on the
    /// first of its links that has one on every resource. A waiter whose
    /// links are all full takes nothing, so one behind it that needs another
    /// link is not held up.
    pub fn turn(&self, id: u64, slots: &dyn Fn(&str) -> u64) -> Option<usize> {
        let mut order: Vec<&Waiter> = self.waiters.iter().collect();
        // Stable: arrival order within a priority.
        order.sort_by_key(|w| std::cmp::Reverse(w.priority));
        let mut taken: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        for w in order {
            let free = |r: &String| {
                let used = taken.get(r.as_str()).copied().unwrap_or(0);
                slots(r).saturating_sub(used) > 0
            };
            let Some(link) = w.links.iter().position(|l| l.iter().all(free)) else {
                continue;
            };
            if w.id == id {
                return Some(link);
            }
            for r in w.links.get(link).into_iter().flatten() {
                *taken.entry(r.as_str()).or_insert(0) += 1;
            }
        }
        None
    }
}

/// `Retry-After` (seconds, at least 1) for a request refused for capacity:
/// until the earliest of its links frees, or 1 s when that is not known.
pub fn retry_after_secs(now_ms: u64, earliest_free_ms: Option<u64>) -> u64 {
    earliest_free_ms
        .map_or(1_000, |t| t.saturating_sub(now_ms))
        .div_ceil(1_000)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(r: &[&str]) -> LinkResources {
        r.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn paid_first_then_first_come_first_served() {
        let mut q = Queue::default();
        let both = || vec![link(&["openai", "openai/m"]), link(&["groq", "groq/m"])];
        let s1 = q.join("std", Priority::Standard, both(), 8, 100).unwrap();
        let p1 = q.join("paid", Priority::Paid, both(), 8, 100).unwrap();
        let s2 = q.join("std", Priority::Standard, both(), 8, 100).unwrap();
        let p2 = q.join("paid", Priority::Paid, both(), 8, 100).unwrap();
        let b1 = q.join("bg", Priority::Batch, both(), 8, 100).unwrap();
        let none = |_: &str| 0;
        assert!([s1, p1, s2, p2, b1]
            .iter()
            .all(|id| q.turn(*id, &none).is_none()));
        // One slot on openai: the first paid request's.
        let one = |r: &str| u64::from(r.starts_with("openai"));
        assert_eq!(q.turn(p1, &one), Some(0));
        assert_eq!(q.turn(p2, &one), None);
        assert_eq!(q.turn(s1, &one), None);
        // Two slots: one per provider → both paid requests.
        let each = |_: &str| 1;
        assert_eq!(q.turn(p1, &each), Some(0));
        assert_eq!(q.turn(p2, &each), Some(1));
        assert_eq!(q.turn(s1, &each), None);
        let mut admitted = Vec::new();
        for _ in 0..5 {
            let next = [s1, p1, s2, p2, b1]
                .into_iter()
                .find(|id| q.turn(*id, &one).is_some())
                .unwrap();
            q.leave(next);
            admitted.push(next);
        }
        assert_eq!(admitted, [p1, p2, s1, s2, b1]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_waiter_for_a_full_link_does_not_hold_up_one_for_a_free_link() {
        let mut q = Queue::default();
        let paid = q
            .join("a", Priority::Paid, vec![link(&["openai"])], 8, 100)
            .unwrap();
        let std = q
            .join("b", Priority::Standard, vec![link(&["groq"])], 8, 100)
            .unwrap();
        let groq_only = |r: &str| u64::from(r == "groq");
        assert_eq!(q.turn(paid, &groq_only), None);
        assert_eq!(q.turn(std, &groq_only), Some(0));
    }

    #[test]
    fn a_link_needs_room_on_every_resource() {
        let mut q = Queue::default();
        let id = q
            .join(
                "a",
                Priority::Standard,
                vec![link(&["openai", "openai/a"]), link(&["openai", "openai/b"])],
                8,
                100,
            )
            .unwrap();
        // The account has room, model a's reading does not: model b.
        let slots = |r: &str| u64::from(r != "openai/a");
        assert_eq!(q.turn(id, &slots), Some(1));
    }

    #[test]
    fn bounds_per_key_and_overall() {
        let mut q = Queue::default();
        let l = || vec![link(&["x"])];
        let first = q.join("k", Priority::Paid, l(), 2, 3).unwrap();
        q.join("k", Priority::Paid, l(), 2, 3).unwrap();
        assert_eq!(
            q.join("k", Priority::Paid, l(), 2, 3),
            Err(Refused::KeyFull)
        );
        q.join("other", Priority::Batch, l(), 2, 3).unwrap();
        assert_eq!(
            q.join("third", Priority::Paid, l(), 2, 3),
            Err(Refused::QueueFull)
        );
        q.leave(first);
        assert!(q.join("k", Priority::Paid, l(), 2, 3).is_ok());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(1_000, Some(1_001)), 1);
        assert_eq!(retry_after_secs(1_000, Some(3_500)), 3);
        assert_eq!(retry_after_secs(1_000, Some(500)), 1);
        assert_eq!(retry_after_secs(1_000, None), 1);
        assert_eq!(Priority::parse("paid").map(Priority::as_str), Some("paid"));
        assert!(Priority::Paid > Priority::Standard && Priority::Standard > Priority::Batch);
    }
}
