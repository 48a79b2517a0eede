//! Circuit breaker per provider+model: after `failures_to_open` consecutive
//! health failures (5xx, 429, timeouts, connect errors, unusable responses)
//! the link is skipped for `cool_down_ms`; then one probe request is let
//! through — success closes the circuit, failure opens it for another
//! cool-down.
//!
//! The authoritative state lives in a Durable Object per provider+model
//! (`circuit_do.rs`), so one isolate's lesson reaches the others; each isolate
//! keeps a view it updates at once from its own outcomes and refreshes from
//! the Durable Object after the response (never on the request's path).

use serde::{Deserialize, Serialize};

/// When a circuit opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the circuit; 0 disables the breaker.
    pub failures_to_open: u32,
    pub cool_down_ms: u64,
}

/// One circuit's state (what the Durable Object stores and returns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerState {
    pub consecutive_failures: u32,
    /// While `now < open_until_ms` the circuit is open; after it, until the
    /// next success, it is half-open (one probe at a time).
    pub open_until_ms: u64,
}

/// Whether a request may use the link now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Closed,
    /// Cool-down over: this request is the probe.
    Probe,
    Open,
}

impl BreakerState {
    pub fn admission(&self, now_ms: u64, probe_in_flight: bool) -> Admission {
        if self.open_until_ms == 0 {
            Admission::Closed
        } else if now_ms < self.open_until_ms || probe_in_flight {
            Admission::Open
        } else {
            Admission::Probe
        }
    }

    /// Applies one attempt's outcome. `healthy` is false only for failures
    /// that say something about the provider (not the client's 400s).
    pub fn record(&mut self, healthy: bool, now_ms: u64, policy: BreakerPolicy) {
        if policy.failures_to_open == 0 {
            *self = Self::default();
            return;
        }
        if healthy {
            *self = Self::default();
            return;
        }
        let half_open = self.open_until_ms != 0 && now_ms >= self.open_until_ms;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if half_open || self.consecutive_failures >= policy.failures_to_open {
            self.open_until_ms = now_ms.saturating_add(policy.cool_down_ms);
        }
    }
}

/// How often an isolate reports *healthy* attempts on a clean circuit to the
/// link's Durable Object. Every report is a Durable Object round trip and
/// storage work, so one per request per isolate was most of the breaker's
/// cost; failures, and the first success after a failure, are still reported
/// at once, and the answer to each report is how an isolate learns of a
/// circuit opened elsewhere — within this interval plus one request.
pub const HEALTHY_REPORT_INTERVAL_MS: u64 = 1_000;

/// Whether an attempt's outcome must go to the Durable Object now: always for
/// a failure or right after the isolate saw one (`after_failure`), otherwise
/// once per [`HEALTHY_REPORT_INTERVAL_MS`] per link.
pub fn must_report(
    healthy: bool,
    after_failure: bool,
    last_report_ms: Option<u64>,
    now_ms: u64,
) -> bool {
    !healthy
        || after_failure
        || last_report_ms.is_none_or(|t| now_ms.saturating_sub(t) >= HEALTHY_REPORT_INTERVAL_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_reports_are_throttled_failures_are_not() {
        assert!(must_report(true, false, None, 0), "first report of a link");
        assert!(!must_report(true, false, Some(1_000), 1_999));
        assert!(must_report(true, false, Some(1_000), 2_000));
        assert!(
            must_report(false, false, Some(1_000), 1_001),
            "a failure goes at once"
        );
        assert!(
            must_report(true, true, Some(1_000), 1_001),
            "the success that ends a failure streak goes at once"
        );
    }

    const POLICY: BreakerPolicy = BreakerPolicy {
        failures_to_open: 3,
        cool_down_ms: 1_000,
    };

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_cool_down() {
        let mut s = BreakerState::default();
        for t in 0..2 {
            s.record(false, t, POLICY);
            assert_eq!(s.admission(t, false), Admission::Closed);
        }
        s.record(false, 10, POLICY);
        assert_eq!(s.admission(11, false), Admission::Open);
        assert_eq!(s.admission(1_009, false), Admission::Open);
        assert_eq!(s.admission(1_010, false), Admission::Probe);
        assert_eq!(
            s.admission(1_010, true),
            Admission::Open,
            "one probe at a time"
        );
        // Probe fails: open for another cool-down.
        s.record(false, 1_020, POLICY);
        assert_eq!(s.admission(1_500, false), Admission::Open);
        assert_eq!(s.admission(2_020, false), Admission::Probe);
        // Probe succeeds: closed.
        s.record(true, 2_030, POLICY);
        assert_eq!(s, BreakerState::default());
        assert_eq!(s.admission(2_031, false), Admission::Closed);
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut s = BreakerState::default();
        s.record(false, 0, POLICY);
        s.record(false, 1, POLICY);
        s.record(true, 2, POLICY);
        s.record(false, 3, POLICY);
        s.record(false, 4, POLICY);
        assert_eq!(s.admission(5, false), Admission::Closed);
    }

    #[test]
    fn disabled_policy_never_opens() {
        let off = BreakerPolicy {
            failures_to_open: 0,
            cool_down_ms: 1_000,
        };
        let mut s = BreakerState::default();
        for t in 0..100 {
            s.record(false, t, off);
        }
        assert_eq!(s.admission(100, false), Admission::Closed);
    }
}
