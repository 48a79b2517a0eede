//! Each isolate's short-lived memory of the keys it has authenticated, so a
//! busy key costs one D1 read per isolate per `auth.key_cache_ms` instead of
//! one per request (D1 sits on the request's path: in production a round trip
//! to the database's region, under `wrangler dev` most of the gateway's CPU).
//!
//! Only keys D1 found active are remembered; an unknown or revoked key is
//! looked up every time, so auth still fails closed. The price is a bounded
//! delay: a key revoked (or re-limited) through another isolate keeps working
//! in this one for at most the TTL. The isolate that served the admin call
//! forgets at once (`clear`). Entries are keyed by the key's SHA-256 hash,
//! never the key.

use std::collections::HashMap;

use crate::keys::KeyGrant;

/// Most keys one isolate remembers; past it, expired entries go first, then
/// the oldest.
pub const MAX_ENTRIES: usize = 4096;

struct Entry {
    grant: KeyGrant,
    stored_ms: u64,
}

/// Active keys by hash, each valid for `ttl_ms` after it was read from D1.
#[derive(Default)]
pub struct KeyCache {
    entries: HashMap<String, Entry>,
}

impl KeyCache {
    /// The remembered grant for `key_hash`, if read less than `ttl_ms` ago.
    pub fn get(&self, key_hash: &str, now_ms: u64, ttl_ms: u64) -> Option<KeyGrant> {
        let e = self.entries.get(key_hash)?;
        // A clock that went backwards counts as expired, never as fresh.
        let age = now_ms.checked_sub(e.stored_ms)?;
        (age < ttl_ms).then(|| e.grant.clone())
    }

    /// Remembers an active key read from D1 at `now_ms`.
    pub fn insert(&mut self, key_hash: &str, grant: KeyGrant, now_ms: u64, ttl_ms: u64) {
        if ttl_ms == 0 {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(key_hash) {
            self.entries
                .retain(|_, e| now_ms.saturating_sub(e.stored_ms) < ttl_ms);
            if self.entries.len() >= MAX_ENTRIES {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.stored_ms)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(
            key_hash.to_owned(),
            Entry {
                grant,
                stored_ms: now_ms,
            },
        );
    }

    /// Forgets every key: after any admin change to keys or projects.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(id: &str) -> KeyGrant {
        serde_json::from_value(serde_json::json!({"id": id, "name": id})).unwrap()
    }

    #[test]
    fn remembers_for_the_ttl_and_not_a_millisecond_longer() {
        let mut c = KeyCache::default();
        c.insert("h1", grant("k1"), 1_000, 5_000);
        assert_eq!(c.get("h1", 1_000, 5_000).unwrap().id, "k1");
        assert_eq!(c.get("h1", 5_999, 5_000).unwrap().id, "k1");
        assert!(c.get("h1", 6_000, 5_000).is_none());
        assert!(c.get("h2", 1_000, 5_000).is_none());
    }

    #[test]
    fn a_zero_ttl_remembers_nothing() {
        let mut c = KeyCache::default();
        c.insert("h1", grant("k1"), 1_000, 0);
        assert!(c.is_empty());
        assert!(c.get("h1", 1_000, 0).is_none());
    }

    #[test]
    fn a_clock_that_went_backwards_is_a_miss() {
        let mut c = KeyCache::default();
        c.insert("h1", grant("k1"), 10_000, 5_000);
        assert!(c.get("h1", 9_999, 5_000).is_none());
    }

    #[test]
    fn clear_forgets_everything() {
        let mut c = KeyCache::default();
        c.insert("h1", grant("k1"), 1_000, 5_000);
        c.insert("h2", grant("k2"), 1_000, 5_000);
        c.clear();
        assert!(c.get("h1", 1_001, 5_000).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn stays_bounded_dropping_expired_then_oldest() {
        let mut c = KeyCache::default();
        for i in 0..MAX_ENTRIES {
            c.insert(&format!("h{i}"), grant("k"), i as u64, 1_000_000);
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        c.insert("new", grant("n"), 5_000, 1_000_000);
        assert_eq!(c.len(), MAX_ENTRIES);
        assert!(c.get("h0", 5_000, 1_000_000).is_none(), "oldest dropped");
        assert!(c.get("h1", 5_000, 1_000_000).is_some());
        assert!(c.get("new", 5_000, 1_000_000).is_some());
        // Expired entries go before any live one.
        let mut c = KeyCache::default();
        for i in 0..MAX_ENTRIES {
            c.insert(&format!("h{i}"), grant("k"), 0, 100);
        }
        c.insert("new", grant("n"), 1_000, 100);
        assert_eq!(c.len(), 1);
    }
}
