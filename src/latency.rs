//! Live latency per provider+model, and the `latency` routing strategy's
//! choice: the link answering fastest recently, with a little exploration so
//! that links not chosen lately get measured again.
//!
//! The statistic is an exponentially weighted moving average of each
//! successful attempt's latency — time to the first frame for streams, the
//! whole response otherwise — with weight [`EWMA_ALPHA`] for the newest
//! sample, so a link that slows down loses its place within a few requests.
//! It is kept per isolate (updated at once) and in the link's
//! `CircuitBreaker` Durable Object (shared by every isolate, synced after the
//! response). A statistic older than the route's `stale_after_ms` no longer
//! counts: that link is *unmeasured* again.
//!
//! Order: unmeasured links first (each gets measured), then by average,
//! fastest first. With probability `explore_rate`, one of the other links
//! (uniformly) goes first instead, so a link that was slow once is tried
//! again even if nothing else changes. The rest stay as fallbacks in order.

use serde::{Deserialize, Serialize};

/// Weight of the newest sample.
pub const EWMA_ALPHA: f64 = 0.3;
/// Default share of requests that explore another link.
pub const DEFAULT_EXPLORE_RATE: f64 = 0.05;
/// Default age after which a statistic no longer counts.
pub const DEFAULT_STALE_AFTER_MS: u64 = 300_000;

/// One link's recent latency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyStat {
    pub ewma_ms: f64,
    pub samples: u64,
    pub updated_at_ms: u64,
}

impl LatencyStat {
    /// Adds one successful attempt's latency.
    pub fn observe(&mut self, latency_ms: u64, now_ms: u64) {
        let x = latency_ms as f64;
        self.ewma_ms = if self.samples == 0 {
            x
        } else {
            EWMA_ALPHA * x + (1.0 - EWMA_ALPHA) * self.ewma_ms
        };
        self.samples = self.samples.saturating_add(1);
        self.updated_at_ms = self.updated_at_ms.max(now_ms);
    }

    /// Keeps whichever of two views of the same link is newer (the isolate's
    /// own, or the Durable Object's).
    pub fn newer(self, other: Self) -> Self {
        if other.updated_at_ms > self.updated_at_ms {
            other
        } else {
            self
        }
    }

    fn fresh(&self, now_ms: u64, stale_after_ms: u64) -> bool {
        self.samples > 0 && now_ms.saturating_sub(self.updated_at_ms) <= stale_after_ms
    }
}

/// How the `latency` strategy weighs its evidence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyPolicy {
    pub explore_rate: f64,
    pub stale_after_ms: u64,
}

/// The order in which to try links, given each link's statistic (`None`:
/// never measured), and a one-line explanation. `random` yields [0, 1).
pub fn order(
    names: &[String],
    stats: &[Option<LatencyStat>],
    now_ms: u64,
    policy: LatencyPolicy,
    random: &mut dyn FnMut() -> f64,
) -> (Vec<usize>, String) {
    let fresh = |i: usize| {
        stats
            .get(i)
            .copied()
            .flatten()
            .filter(|s| s.fresh(now_ms, policy.stale_after_ms))
    };
    let mut idx: Vec<usize> = (0..names.len()).collect();
    // Unmeasured first (in route order), then fastest first.
    idx.sort_by(|&a, &b| match (fresh(a), fresh(b)) {
        (None, None) => a.cmp(&b),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => x.ewma_ms.total_cmp(&y.ewma_ms).then(a.cmp(&b)),
    });
    let mut why = "fastest";
    if idx.first().is_some_and(|&i| fresh(i).is_none()) {
        why = "unmeasured";
    } else if idx.len() > 1 && random() < policy.explore_rate {
        let others = idx.len() - 1;
        let pick = 1 + ((random() * others as f64) as usize).min(others - 1);
        let chosen = idx.remove(pick);
        idx.insert(0, chosen);
        why = "explore";
    }
    let mut decision = format!("latency:{why}");
    for &i in &idx {
        let name = names.get(i).map_or("?", String::as_str);
        match fresh(i) {
            Some(s) => decision.push_str(&format!(" {name}={}ms", s.ewma_ms.round())),
            None => decision.push_str(&format!(" {name}=unmeasured")),
        }
    }
    (idx, decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: LatencyPolicy = LatencyPolicy {
        explore_rate: 0.0,
        stale_after_ms: 10_000,
    };

    fn stat(ms: f64, at: u64) -> Option<LatencyStat> {
        Some(LatencyStat {
            ewma_ms: ms,
            samples: 3,
            updated_at_ms: at,
        })
    }

    fn names() -> Vec<String> {
        vec!["a/x".into(), "b/y".into(), "c/z".into()]
    }

    #[test]
    fn ewma_follows_a_slowdown_within_a_few_samples() {
        let mut s = LatencyStat::default();
        s.observe(100, 1);
        assert_eq!(s.ewma_ms, 100.0);
        for t in 2..=6 {
            s.observe(1_000, t);
        }
        assert!(s.ewma_ms > 800.0, "{}", s.ewma_ms);
        assert_eq!((s.samples, s.updated_at_ms), (6, 6));
    }

    #[test]
    fn fastest_first_and_unmeasured_before_everything() {
        let (o, d) = order(
            &names(),
            &[stat(300.0, 1_000), stat(20.0, 1_000), stat(90.0, 1_000)],
            2_000,
            POLICY,
            &mut || 0.5,
        );
        assert_eq!(o, [1, 2, 0]);
        assert_eq!(d, "latency:fastest b/y=20ms c/z=90ms a/x=300ms");
        let (o, d) = order(
            &names(),
            &[stat(300.0, 1_000), None, stat(90.0, 1_000)],
            2_000,
            POLICY,
            &mut || 0.5,
        );
        assert_eq!(o, [1, 2, 0]);
        assert!(d.starts_with("latency:unmeasured b/y=unmeasured"), "{d}");
    }

    #[test]
    fn a_stale_statistic_counts_as_unmeasured() {
        let (o, _) = order(
            &names(),
            &[stat(10.0, 0), stat(20.0, 50_000), stat(30.0, 50_000)],
            50_500,
            POLICY,
            &mut || 0.5,
        );
        assert_eq!(o[0], 0, "a/x has not been measured for 50 s");
    }

    #[test]
    fn exploration_puts_another_link_first_at_the_configured_rate() {
        let policy = LatencyPolicy {
            explore_rate: 0.1,
            stale_after_ms: 10_000,
        };
        let stats = [stat(300.0, 1_000), stat(20.0, 1_000), stat(90.0, 1_000)];
        let mut state: u64 = 7;
        let mut lcg = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut not_fastest = 0;
        for _ in 0..10_000 {
            let (o, d) = order(&names(), &stats, 2_000, policy, &mut lcg);
            assert_eq!(o.len(), 3);
            if o[0] != 1 {
                not_fastest += 1;
                assert!(d.starts_with("latency:explore"), "{d}");
            }
        }
        assert!((800..=1_200).contains(&not_fastest), "{not_fastest}");
    }

    #[test]
    fn the_newer_view_wins() {
        let a = stat(10.0, 5).unwrap();
        let b = stat(99.0, 9).unwrap();
        assert_eq!(a.newer(b), b);
        assert_eq!(b.newer(a), b);
    }
}
