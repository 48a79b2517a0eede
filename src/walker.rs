//! The fallback walker: which upstream attempt to make next, when to wait, and
//! when to give up — as a pure state machine over an injected clock, so every
//! decision is unit-tested with a fake one.
//!
//! Rules (anchors-reliability F1–F6):
//! - One retry layer. Each link may be retried `retries` times on a retryable
//!   failure (connect error, reset, timeout, 408/429/5xx/529, an error frame
//!   before the first byte), with exponential backoff and jitter.
//! - `Retry-After` is honoured when it fits inside both the cap and the
//!   request's remaining deadline; otherwise the walker moves to the next link
//!   at once instead of sleeping past the client's patience.
//! - A non-retryable failure (e.g. 400, 401) ends the request with that error,
//!   unless the link's `on_status_codes` lists its status, which means "fall
//!   back on this too".
//! - `max_attempts` caps upstream attempts over the whole chain, and one global
//!   deadline covers every attempt and every wait.

use crate::routing::Link;

/// Why a timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// No response headers / first stream frame in time.
    Ttfb,
    /// A non-streamed body did not finish in time.
    Total,
}

impl TimeoutKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ttfb => "ttfb_timeout",
            Self::Total => "total_timeout",
        }
    }
}

/// How one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The provider answered with this status.
    Status {
        status: u16,
        retry_after_ms: Option<u64>,
    },
    Timeout(TimeoutKind),
    /// Connect error or reset before any byte.
    Unreachable,
    /// 2xx with a body the gateway cannot use (or a stream that opened with an error frame).
    BadResponse,
    /// The provider is configured without its key, or the circuit is open:
    /// not attempted at all.
    Skipped(&'static str),
}

impl Failure {
    /// Worth another try (same link or the next).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                matches!(status, 408 | 409 | 425 | 429 | 529) || *status >= 500
            }
            Self::Timeout(_) | Self::Unreachable | Self::BadResponse => true,
            Self::Skipped(_) => false,
        }
    }

    /// A short label for the trace header and the ledger.
    pub fn label(&self) -> String {
        match self {
            Self::Status { status, .. } => format!("status_{status}"),
            Self::Timeout(k) => k.as_str().to_owned(),
            Self::Unreachable => "unreachable".to_owned(),
            Self::BadResponse => "bad_response".to_owned(),
            Self::Skipped(why) => (*why).to_owned(),
        }
    }
}

/// Request-wide limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Absolute time (ms) after which nothing new starts.
    pub deadline_at_ms: u64,
    /// Upstream attempts over the whole chain.
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Longest `Retry-After` the gateway will wait for.
    pub retry_after_cap_ms: u64,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Call `links[link]`; timeouts already clipped to the remaining deadline.
    Attempt {
        link: usize,
        /// 1-based over the whole request.
        attempt: u32,
        ttfb_ms: u64,
        total_ms: u64,
    },
    /// Wait before the next attempt.
    Sleep { ms: u64 },
    /// Nothing more to try.
    GiveUp,
}

/// One line of the trace: a link and how the request left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    pub link: usize,
    pub attempts: u32,
    /// `ok`, or the last failure's label.
    pub result: String,
}

pub struct Walker<'a> {
    links: &'a [Link],
    budget: Budget,
    current: usize,
    retries_used: u32,
    attempts: u32,
    pending_sleep: Option<u64>,
    done: bool,
    trace: Vec<TraceEntry>,
    /// Attempts spent on the link currently being tried.
    link_attempts: u32,
    /// The current link's last failure, while a retry of it is pending.
    pending_failure: Option<String>,
}

impl<'a> Walker<'a> {
    pub fn new(links: &'a [Link], budget: Budget) -> Self {
        Self {
            links,
            budget,
            current: 0,
            retries_used: 0,
            attempts: 0,
            pending_sleep: None,
            done: links.is_empty(),
            trace: Vec::new(),
            link_attempts: 0,
            pending_failure: None,
        }
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn trace(&self) -> &[TraceEntry] {
        &self.trace
    }

    pub fn next(&mut self, now_ms: u64) -> Step {
        if self.done {
            return Step::GiveUp;
        }
        let remaining = self.budget.deadline_at_ms.saturating_sub(now_ms);
        if remaining == 0 || self.attempts >= self.budget.max_attempts {
            self.pending_sleep = None;
            // A retry was pending: the trace still owes this link's line.
            if let Some(result) = self.pending_failure.take() {
                self.trace.push(TraceEntry {
                    link: self.current,
                    attempts: self.link_attempts,
                    result,
                });
            }
            self.done = true;
            return Step::GiveUp;
        }
        // A retry's wait comes after the cap check: no pointless backoff
        // before giving up.
        if let Some(ms) = self.pending_sleep.take() {
            return Step::Sleep { ms };
        }
        let Some(link) = self.links.get(self.current) else {
            self.done = true;
            return Step::GiveUp;
        };
        self.attempts += 1;
        self.link_attempts += 1;
        Step::Attempt {
            link: self.current,
            attempt: self.attempts,
            ttfb_ms: link.ttfb_ms.min(remaining),
            total_ms: link.total_ms.min(remaining),
        }
    }

    /// The attempt succeeded (the response is being committed).
    pub fn succeeded(&mut self) {
        self.pending_failure = None;
        self.trace.push(TraceEntry {
            link: self.current,
            attempts: self.link_attempts,
            result: "ok".to_owned(),
        });
        self.done = true;
    }

    /// The link `next` just returned was not called after all (missing key,
    /// open circuit): the attempt is not counted, the trace says why, and the
    /// walker moves on.
    pub fn skipped(&mut self, failure: &Failure) {
        self.attempts = self.attempts.saturating_sub(1);
        self.trace.push(TraceEntry {
            link: self.current,
            attempts: 0,
            result: failure.label(),
        });
        self.advance();
    }

    /// The attempt failed; `jitter` is a random number in [0, 1).
    pub fn failed(&mut self, now_ms: u64, failure: &Failure, jitter: f64) {
        let Some(link) = self.links.get(self.current) else {
            self.done = true;
            return;
        };
        let status = match failure {
            Failure::Status { status, .. } => Some(*status),
            _ => None,
        };
        let listed = status.is_some_and(|s| link.on_status_codes.contains(&s));
        if !failure.is_retryable() && !listed {
            // A client-side error: another provider would say the same.
            self.trace.push(TraceEntry {
                link: self.current,
                attempts: self.link_attempts,
                result: failure.label(),
            });
            self.done = true;
            return;
        }
        let remaining = self.budget.deadline_at_ms.saturating_sub(now_ms);
        if failure.is_retryable() && self.retries_used < link.retries {
            let backoff = self.backoff_ms(jitter);
            let wait = match failure {
                Failure::Status {
                    retry_after_ms: Some(ra),
                    ..
                } => {
                    if *ra <= self.budget.retry_after_cap_ms && *ra < remaining {
                        Some((*ra).max(backoff))
                    } else {
                        // The provider wants longer than we can give: next link now.
                        None
                    }
                }
                _ => Some(backoff),
            };
            if let Some(wait) = wait.filter(|w| *w < remaining) {
                self.retries_used += 1;
                self.pending_failure = Some(failure.label());
                if wait > 0 {
                    self.pending_sleep = Some(wait);
                }
                return;
            }
        }
        self.trace.push(TraceEntry {
            link: self.current,
            attempts: self.link_attempts,
            result: failure.label(),
        });
        self.advance();
    }

    fn advance(&mut self) {
        self.pending_failure = None;
        self.current += 1;
        self.retries_used = 0;
        self.link_attempts = 0;
        if self.current >= self.links.len() {
            self.done = true;
        }
    }

    /// Exponential backoff with "equal jitter": half fixed, half random.
    fn backoff_ms(&self, jitter: f64) -> u64 {
        let exp = self
            .budget
            .backoff_base_ms
            .saturating_mul(1u64 << self.retries_used.min(16));
        let capped = exp.min(self.budget.backoff_max_ms);
        let half = capped / 2;
        let jitter = jitter.clamp(0.0, 1.0);
        // Values here are at most a few seconds; the f64 round trip is exact.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "milliseconds below 2^52, jitter in [0, 1]"
        )]
        let random = (half as f64 * jitter) as u64;
        half + random
    }
}

/// `x-tollgate-trace`: each link tried, in order, as
/// `provider/model;attempts=N;result=…`, comma-separated.
pub fn trace_header(links: &[Link], trace: &[TraceEntry]) -> String {
    trace
        .iter()
        .filter_map(|t| {
            let link = links.get(t.link)?;
            Some(format!(
                "{}/{};attempts={};result={}",
                link.provider, link.model, t.attempts, t.result
            ))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, retries: u32) -> Link {
        Link {
            provider: name.into(),
            model: "m".into(),
            params: None,
            ttfb_ms: 2_000,
            idle_ms: 30_000,
            total_ms: 10_000,
            retries,
            on_status_codes: vec![],
        }
    }

    fn budget(now: u64) -> Budget {
        Budget {
            deadline_at_ms: now + 5_000,
            max_attempts: 10,
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            retry_after_cap_ms: 3_000,
        }
    }

    fn attempt_link(step: Step) -> usize {
        match step {
            Step::Attempt { link, .. } => link,
            other => panic!("expected an attempt, got {other:?}"),
        }
    }

    #[test]
    fn hung_first_link_falls_back_after_its_ttfb_and_within_the_deadline() {
        let links = [link("a", 0), link("b", 0)];
        let mut w = Walker::new(&links, budget(0));
        let Step::Attempt { ttfb_ms, .. } = w.next(0) else {
            panic!()
        };
        assert_eq!(ttfb_ms, 2_000);
        w.failed(2_000, &Failure::Timeout(TimeoutKind::Ttfb), 0.5);
        assert_eq!(attempt_link(w.next(2_000)), 1);
        w.succeeded();
        assert_eq!(w.next(2_100), Step::GiveUp);
        assert_eq!(
            trace_header(&links, w.trace()),
            "a/m;attempts=1;result=ttfb_timeout, b/m;attempts=1;result=ok"
        );
    }

    #[test]
    fn timeouts_are_clipped_to_the_remaining_deadline() {
        let links = [link("a", 0), link("b", 0)];
        let mut w = Walker::new(&links, budget(0));
        w.next(0);
        w.failed(4_000, &Failure::Unreachable, 0.0);
        let Step::Attempt {
            ttfb_ms, total_ms, ..
        } = w.next(4_000)
        else {
            panic!()
        };
        assert_eq!((ttfb_ms, total_ms), (1_000, 1_000));
        w.failed(5_000, &Failure::Unreachable, 0.0);
        assert_eq!(w.next(5_000), Step::GiveUp);
    }

    #[test]
    fn retry_after_that_fits_is_honoured_on_the_same_link() {
        let links = [link("a", 1), link("b", 0)];
        let mut w = Walker::new(&links, budget(0));
        w.next(0);
        w.failed(
            10,
            &Failure::Status {
                status: 429,
                retry_after_ms: Some(1_000),
            },
            0.0,
        );
        assert_eq!(w.next(10), Step::Sleep { ms: 1_000 });
        assert_eq!(attempt_link(w.next(1_010)), 0, "same link again");
    }

    #[test]
    fn retry_after_too_long_moves_on_at_once() {
        let links = [link("a", 3), link("b", 0)];
        let mut w = Walker::new(&links, budget(0));
        w.next(0);
        w.failed(
            10,
            &Failure::Status {
                status: 429,
                retry_after_ms: Some(86_400_000),
            },
            0.0,
        );
        assert_eq!(attempt_link(w.next(10)), 1, "no sleep, next link");
    }

    #[test]
    fn client_errors_end_the_request_unless_listed() {
        let links = [link("a", 3), link("b", 0)];
        let mut w = Walker::new(&links, budget(0));
        w.next(0);
        w.failed(
            10,
            &Failure::Status {
                status: 401,
                retry_after_ms: None,
            },
            0.0,
        );
        assert_eq!(w.next(10), Step::GiveUp);
        assert_eq!(w.attempts(), 1);

        let mut listed = link("a", 3);
        listed.on_status_codes = vec![401];
        let links = [listed, link("b", 0)];
        let mut w = Walker::new(&links, budget(0));
        w.next(0);
        w.failed(
            10,
            &Failure::Status {
                status: 401,
                retry_after_ms: None,
            },
            0.0,
        );
        assert_eq!(
            attempt_link(w.next(10)),
            1,
            "401 listed: fall back, but never retry it"
        );
    }

    #[test]
    fn max_attempts_caps_the_whole_chain() {
        let links = [link("a", 5), link("b", 5)];
        let mut b = budget(0);
        b.max_attempts = 3;
        b.deadline_at_ms = 1_000_000;
        let mut w = Walker::new(&links, b);
        let mut attempts = 0;
        let mut now = 0;
        loop {
            match w.next(now) {
                Step::Attempt { .. } => {
                    attempts += 1;
                    w.failed(
                        now,
                        &Failure::Status {
                            status: 500,
                            retry_after_ms: None,
                        },
                        0.3,
                    );
                }
                Step::Sleep { ms } => now += ms,
                Step::GiveUp => break,
            }
        }
        assert_eq!(attempts, 3);
        // The link being retried when the cap struck still gets its trace line.
        assert_eq!(
            trace_header(&links, w.trace()),
            "a/m;attempts=3;result=status_500"
        );
    }

    #[test]
    fn backoff_grows_with_jitter_inside_bounds() {
        let links = [link("a", 4)];
        let mut w = Walker::new(
            &links,
            Budget {
                deadline_at_ms: 1_000_000,
                ..budget(0)
            },
        );
        let mut sleeps = vec![];
        let mut now = 0;
        loop {
            match w.next(now) {
                Step::Attempt { .. } => w.failed(now, &Failure::Unreachable, 0.999),
                Step::Sleep { ms } => {
                    sleeps.push(ms);
                    now += ms;
                }
                Step::GiveUp => break,
            }
        }
        assert_eq!(sleeps.len(), 4);
        // base 100: 100, 200, 400, 800 → each in [x/2, x]; the cap (1000) bounds the rest.
        for (s, full) in sleeps.iter().zip([100u64, 200, 400, 800]) {
            assert!(*s >= full / 2 && *s <= full, "{s} vs {full}");
        }
    }

    #[test]
    fn skipped_links_are_traced_and_passed() {
        let links = [link("a", 0), link("b", 0)];
        let mut w = Walker::new(&links, budget(0));
        assert_eq!(attempt_link(w.next(0)), 0);
        w.skipped(&Failure::Skipped("circuit_open"));
        assert_eq!(attempt_link(w.next(0)), 1);
        assert_eq!(w.attempts(), 1);
        w.succeeded();
        assert_eq!(
            trace_header(&links, w.trace()),
            "a/m;attempts=0;result=circuit_open, b/m;attempts=1;result=ok"
        );
    }
}
