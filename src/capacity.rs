//! Provider capacity: how close each provider account is to its rate limit,
//! so routing can prefer other links before the provider starts answering
//! 429 (issue 12).
//!
//! Two sources, the larger share wins:
//! - the provider's own rate-limit response headers, which describe the
//!   whole account (every gateway isolate, and anything else using the key):
//!   OpenAI/Groq/Together-style `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`
//!   and Anthropic's `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`;
//!   a reading counts until its reset time;
//! - the gateway's own count of requests sent in the last minute against
//!   the provider's configured `rpm_limit` (per isolate: a floor, not the
//!   truth); requests count as they leave.
//!
//! Readings are kept per provider and model (OpenAI and Anthropic report
//! limits per model), the own count per provider. Links at or above the
//! threshold (default 90 %) move behind the others, keeping their order;
//! when every link is that busy the request waits for room in the
//! saturation queue (`queue.rs`), which [`ProviderLoad::room`] tells in
//! slots and the time the next one frees.

use std::collections::VecDeque;

/// Longest a header reading is trusted without a reset time.
const DEFAULT_READING_TTL_MS: u64 = 60_000;

/// One rate-limit reading from a provider's response headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// When the response carrying it arrived.
    pub observed_at_ms: u64,
    /// The request window, when reported.
    pub requests: Option<Window>,
    /// The token window, when reported.
    pub tokens: Option<Window>,
}

/// One dimension (requests or tokens) of a provider's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: u64,
    pub remaining: u64,
    /// When the provider says the window resets (a default TTL when it did not say).
    pub reset_at_ms: u64,
}

/// The rate-limit headers [`reading_from_headers`] reads, per family (OpenAI
/// and the OpenAI-compatible providers, then Anthropic), each `remaining`
/// header first: without one of those no window can be read, so a caller
/// that fetches headers one by one can stop after two misses.
pub const RATE_LIMIT_HEADER_FAMILIES: [[&str; 6]; 2] = [
    [
        "x-ratelimit-remaining-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-limit-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
    ],
    [
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-reset",
    ],
];

/// Parses the rate-limit headers of one response (lowercase names).
pub fn reading_from_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    now_ms: u64,
) -> Option<Reading> {
    let mut req = RawWindow::default();
    let mut tok = RawWindow::default();
    for (name, value) in headers {
        let value = value.trim();
        let (window, field) = match name {
            "x-ratelimit-limit-requests" | "anthropic-ratelimit-requests-limit" => (&mut req, 0),
            "x-ratelimit-remaining-requests" | "anthropic-ratelimit-requests-remaining" => {
                (&mut req, 1)
            }
            "x-ratelimit-reset-requests" | "anthropic-ratelimit-requests-reset" => (&mut req, 2),
            "x-ratelimit-limit-tokens" | "anthropic-ratelimit-tokens-limit" => (&mut tok, 0),
            "x-ratelimit-remaining-tokens" | "anthropic-ratelimit-tokens-remaining" => {
                (&mut tok, 1)
            }
            "x-ratelimit-reset-tokens" | "anthropic-ratelimit-tokens-reset" => (&mut tok, 2),
            _ => continue,
        };
        match field {
            0 => window.limit = value.parse().ok(),
            1 => window.remaining = value.parse().ok(),
            _ => window.reset_ms = reset_in_ms(value, now_ms),
        }
    }
    let window = |w: RawWindow| {
        let (limit, remaining) = (w.limit?, w.remaining?);
        (limit > 0).then(|| Window {
            limit,
            remaining: remaining.min(limit),
            reset_at_ms: now_ms.saturating_add(w.reset_ms.unwrap_or(DEFAULT_READING_TTL_MS)),
        })
    };
    let (requests, tokens) = (window(req), window(tok));
    if requests.is_none() && tokens.is_none() {
        return None;
    }
    Some(Reading {
        observed_at_ms: now_ms,
        requests,
        tokens,
    })
}

#[derive(Default, Clone, Copy)]
struct RawWindow {
    limit: Option<u64>,
    remaining: Option<u64>,
    reset_ms: Option<u64>,
}

/// `6m0s`, `1.5s`, `120ms`, `20` (seconds), or an RFC 3339 time
/// (Anthropic) → milliseconds from now.
fn reset_in_ms(value: &str, now_ms: u64) -> Option<u64> {
    if let Some(at) = rfc3339_ms(value) {
        return Some(at.saturating_sub(now_ms));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then_some((secs * 1000.0) as u64);
    }
    // Go duration: a sequence of <number><unit>, units h, m, s, ms.
    let mut total = 0.0f64;
    let mut rest = value;
    while !rest.is_empty() {
        let n_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let number: f64 = rest.get(..n_len)?.parse().ok()?;
        rest = rest.get(n_len..)?;
        let (unit_ms, unit_len) = if rest.starts_with("ms") {
            (1.0, 2)
        } else if rest.starts_with('h') {
            (3_600_000.0, 1)
        } else if rest.starts_with('m') {
            (60_000.0, 1)
        } else if rest.starts_with('s') {
            (1_000.0, 1)
        } else {
            return None;
        };
        total += number * unit_ms;
        rest = rest.get(unit_len..)?;
    }
    Some(total as u64)
}

/// `2026-11-22T10:00:30Z` (UTC, optional fraction) → ms since the epoch.
fn rfc3339_ms(v: &str) -> Option<u64> {
    let b = v.as_bytes();
    if b.len() < 20 || b.get(4) != Some(&b'-') || b.get(10) != Some(&b'T') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| v.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !v.ends_with('Z') {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3_600 + mi * 60 + s;
    u64::try_from(secs).ok()?.checked_mul(1_000)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Requests a window of `limit` admits while staying below `threshold_pct`:
/// a request may go while `sent < cap` (so "saturated" is `sent >= cap`).
fn cap(limit: u64, threshold_pct: u8) -> u64 {
    (limit.saturating_mul(u64::from(threshold_pct))).div_ceil(100)
}

/// How much room a provider account (or one of its models) has now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Room {
    /// Share of the limit in use (0 when unknown), as routing shows it.
    pub used: f64,
    /// Requests that may still go before the threshold (`u64::MAX`: no limit known).
    pub slots: u64,
    /// With no slot left: when one frees (`None`: not predictable).
    pub free_at_ms: Option<u64>,
}

impl Room {
    pub const FREE: Room = Room {
        used: 0.0,
        slots: u64::MAX,
        free_at_ms: None,
    };

    /// The tighter of two limits on the same link (the account's own
    /// count and the model's reading): both must have room.
    pub fn and(self, other: Room) -> Room {
        let free_at_ms = match (self.slots, other.slots) {
            (0, 0) => self.free_at_ms.zip(other.free_at_ms).map(|(a, b)| a.max(b)),
            (0, _) => self.free_at_ms,
            (_, 0) => other.free_at_ms,
            _ => None,
        };
        Room {
            used: self.used.max(other.used),
            slots: self.slots.min(other.slots),
            free_at_ms,
        }
    }

    fn limited(sent: u64, limit: u64, threshold_pct: u8, free_at_ms: Option<u64>) -> Room {
        let slots = cap(limit, threshold_pct).saturating_sub(sent);
        Room {
            used: sent as f64 / limit as f64,
            slots,
            free_at_ms: if slots == 0 { free_at_ms } else { None },
        }
    }
}

/// What one isolate knows about one provider account (or one model of it).
#[derive(Debug, Clone, Default)]
pub struct ProviderLoad {
    reading: Option<Reading>,
    /// Times (ms) requests were sent: the last minute, and everything since
    /// the reading was taken.
    sent: VecDeque<u64>,
}

impl ProviderLoad {
    pub fn observe(&mut self, reading: Reading) {
        self.reading = Some(reading);
    }

    /// A request to this account (or model) leaves now.
    pub fn sent(&mut self, now_ms: u64) {
        self.prune(now_ms);
        self.sent.push_back(now_ms);
    }

    fn prune(&mut self, now_ms: u64) {
        if let Some(r) = self.reading {
            // Past the projected next window nothing is known any more.
            if r.requests.is_none_or(|w| now_ms >= projected_end(&r, &w))
                && r.tokens.is_none_or(|w| now_ms >= w.reset_at_ms)
            {
                self.reading = None;
            }
        }
        let keep_from = self.reading.map_or(u64::MAX, |r| r.observed_at_ms);
        while self
            .sent
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= 60_000 && *t < keep_from)
        {
            self.sent.pop_front();
        }
    }

    fn sent_since(&self, from_ms: u64) -> u64 {
        self.sent.iter().filter(|t| **t >= from_ms).count() as u64
    }

    /// Share of the account's limit in use now (0 when unknown).
    pub fn used(&mut self, now_ms: u64, rpm_limit: Option<u32>) -> f64 {
        self.room(now_ms, rpm_limit, 100).used
    }

    /// The room left now under `threshold_pct`, from the reading and from
    /// the own count of the last minute against `rpm_limit`.
    ///
    /// The request window of a reading counts the requests sent since it was
    /// taken on top of what the provider reported; once it resets, the next
    /// window is assumed to be like the last (as long, as large) and counts
    /// the requests sent since the reset, so a provider that allows one
    /// request a second gets one a second, not every waiting one at once.
    pub fn room(&mut self, now_ms: u64, rpm_limit: Option<u32>, threshold_pct: u8) -> Room {
        self.prune(now_ms);
        let mut room = Room::FREE;
        if let Some(l) = rpm_limit.filter(|l| *l > 0) {
            let limit = u64::from(l);
            let count = self
                .sent
                .iter()
                .filter(|t| now_ms.saturating_sub(**t) < 60_000);
            let recent: Vec<u64> = count.copied().collect();
            let over = (recent.len() as u64).saturating_sub(cap(limit, threshold_pct));
            // The count falls below the cap when the `over`-th oldest ages out.
            let free_at = usize::try_from(over)
                .ok()
                .and_then(|i| recent.get(i))
                .map(|t| t + 60_000);
            room = room.and(Room::limited(
                recent.len() as u64,
                limit,
                threshold_pct,
                free_at,
            ));
        }
        let Some(r) = self.reading else {
            return room;
        };
        if let Some(w) = r.requests {
            let window = if now_ms < w.reset_at_ms {
                let used = w.limit - w.remaining + self.sent_since(r.observed_at_ms);
                Some((used, w.reset_at_ms))
            } else if now_ms < projected_end(&r, &w) {
                Some((self.sent_since(w.reset_at_ms), projected_end(&r, &w)))
            } else {
                None
            };
            if let Some((used, until)) = window {
                room = room.and(Room::limited(used, w.limit, threshold_pct, Some(until)));
            }
        }
        if let Some(w) = r.tokens.filter(|w| now_ms < w.reset_at_ms) {
            // Tokens are not counted here: the reading holds until its reset.
            let used = w.limit - w.remaining;
            let full = used >= cap(w.limit, threshold_pct);
            room = room.and(Room {
                used: used as f64 / w.limit as f64,
                slots: if full { 0 } else { u64::MAX },
                free_at_ms: full.then_some(w.reset_at_ms),
            });
        }
        room
    }
}

/// The end of the window after `w`'s reset, assumed as long as the time
/// from the reading to the reset.
fn projected_end(r: &Reading, w: &Window) -> u64 {
    let period = w.reset_at_ms.saturating_sub(r.observed_at_ms).max(1);
    w.reset_at_ms.saturating_add(period)
}

/// Moves links (labelled `provider/model`, with the share `used` of their
/// rate limit in use) at or above `threshold` behind the others, stably.
/// Returns the new order (indices) and, when anything moved, an explanation.
pub fn prefer_unsaturated(
    labels: &[String],
    used: &[f64],
    threshold: f64,
) -> (Vec<usize>, Option<String>) {
    let busy = |i: usize| used.get(i).copied().unwrap_or(0.0) >= threshold;
    let (free, saturated): (Vec<usize>, Vec<usize>) = (0..labels.len()).partition(|&i| !busy(i));
    if saturated.is_empty() || free.is_empty() {
        return ((0..labels.len()).collect(), None);
    }
    let mut moved: Vec<String> = Vec::new();
    for &i in &saturated {
        let name = labels.get(i).map_or("?", String::as_str);
        let pct = (used.get(i).copied().unwrap_or(0.0) * 100.0).round();
        let s = format!("{name}={pct}%");
        if !moved.contains(&s) {
            moved.push(s);
        }
    }
    let order = free.into_iter().chain(saturated).collect();
    (
        order,
        Some(format!("capacity:saturated {}", moved.join(","))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name a caller fetches is one the parser reads: a family's six
    /// headers give both windows, in full.
    #[test]
    fn each_rate_limit_header_family_is_read_whole() {
        for family in RATE_LIMIT_HEADER_FAMILIES {
            let values = ["7", "70", "10", "100", "1s", "2s"];
            let r = reading_from_headers(family.into_iter().zip(values), 1_000).unwrap();
            let (req, tok) = (r.requests.unwrap(), r.tokens.unwrap());
            assert_eq!((req.limit, req.remaining, req.reset_at_ms), (10, 7, 2_000));
            assert_eq!(
                (tok.limit, tok.remaining, tok.reset_at_ms),
                (100, 70, 3_000)
            );
            // The two `remaining` headers come first.
            assert!(family[..2].iter().all(|n| n.contains("remaining")));
        }
    }

    #[test]
    fn openai_style_headers() {
        let r = reading_from_headers(
            [
                ("x-ratelimit-limit-requests", "100"),
                ("x-ratelimit-remaining-requests", "7"),
                ("x-ratelimit-reset-requests", "6m0s"),
                ("x-ratelimit-limit-tokens", "10000"),
                ("x-ratelimit-remaining-tokens", "9000"),
                ("x-ratelimit-reset-tokens", "120ms"),
                ("content-type", "application/json"),
            ],
            1_000,
        )
        .unwrap();
        let w = |limit, remaining, reset_at_ms| Window {
            limit,
            remaining,
            reset_at_ms,
        };
        assert_eq!(r.requests, Some(w(100, 7, 1_000 + 360_000)));
        assert_eq!(r.tokens, Some(w(10_000, 9_000, 1_000 + 120)));
        let mut load = ProviderLoad::default();
        load.observe(r);
        assert!((load.used(1_000, None) - 0.93).abs() < 1e-9);
    }

    #[test]
    fn anthropic_style_headers_with_rfc3339_reset() {
        let now = rfc3339_ms("2026-11-22T10:00:00Z").unwrap();
        let r = reading_from_headers(
            [
                ("anthropic-ratelimit-requests-limit", "50"),
                ("anthropic-ratelimit-requests-remaining", "5"),
                ("anthropic-ratelimit-requests-reset", "2026-11-22T10:00:30Z"),
            ],
            now,
        )
        .unwrap();
        assert_eq!(
            r.requests,
            Some(Window {
                limit: 50,
                remaining: 5,
                reset_at_ms: now + 30_000
            })
        );
    }

    #[test]
    fn no_or_broken_headers_say_nothing() {
        assert!(reading_from_headers([("x-ratelimit-limit-requests", "100")], 0).is_none());
        assert!(reading_from_headers(
            [
                ("x-ratelimit-limit-requests", "0"),
                ("x-ratelimit-remaining-requests", "0")
            ],
            0
        )
        .is_none());
        assert_eq!(reset_in_ms("1.5s", 0), Some(1_500));
        assert_eq!(reset_in_ms("1h2m3s", 0), Some(3_723_000));
        assert_eq!(reset_in_ms("soon", 0), None);
    }

    fn reading(observed_at_ms: u64, limit: u64, remaining: u64, reset_at_ms: u64) -> Reading {
        Reading {
            observed_at_ms,
            requests: Some(Window {
                limit,
                remaining,
                reset_at_ms,
            }),
            tokens: None,
        }
    }

    #[test]
    fn load_counts_until_reset_and_own_requests_per_minute() {
        let mut load = ProviderLoad::default();
        assert_eq!(load.used(0, Some(10)), 0.0);
        load.observe(reading(0, 100, 5, 5_000));
        assert_eq!(load.used(4_999, None), 0.95);
        assert_eq!(
            load.used(5_000, None),
            0.0,
            "past its reset the reading is stale"
        );
        let mut load = ProviderLoad::default();
        for t in 0..9 {
            load.sent(10_000 + t);
        }
        assert!((load.used(10_100, Some(10)) - 0.9).abs() < 1e-9);
        assert_eq!(load.used(70_009, Some(10)), 0.0, "a minute later");
    }

    #[test]
    fn own_count_room_frees_when_the_oldest_request_ages_out() {
        let mut load = ProviderLoad::default();
        // rpm_limit 10 at 90 %: 9 requests a minute.
        for t in [1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 7_000, 8_000] {
            load.sent(t);
        }
        let room = load.room(9_000, Some(10), 90);
        assert_eq!((room.slots, room.free_at_ms), (1, None));
        load.sent(9_000);
        let room = load.room(9_500, Some(10), 90);
        assert_eq!(room.slots, 0);
        assert_eq!(room.free_at_ms, Some(61_000), "when the first ages out");
        load.sent(9_600); // over the cap (sent anyway, e.g. by another route)
        let room = load.room(9_700, Some(10), 90);
        assert_eq!(room.free_at_ms, Some(62_000), "two must age out");
        assert_eq!(load.room(62_000, Some(10), 90).slots, 1);
        assert_eq!(load.room(0, None, 90), Room::FREE);
    }

    #[test]
    fn reading_room_counts_own_sends_then_assumes_the_next_window_is_alike() {
        let mut load = ProviderLoad::default();
        // The provider allows 2 requests per 300 ms window; one is left.
        load.observe(reading(1_000, 2, 1, 1_300));
        let room = load.room(1_010, None, 90);
        assert_eq!((room.slots, room.used), (1, 0.5));
        load.sent(1_020);
        let room = load.room(1_030, None, 90);
        assert_eq!((room.slots, room.free_at_ms), (0, Some(1_300)));
        // After the reset: a window like the last one, 2 requests until 1_600.
        assert_eq!(load.room(1_300, None, 90).slots, 2);
        load.sent(1_310);
        load.sent(1_320);
        let room = load.room(1_330, None, 90);
        assert_eq!((room.slots, room.free_at_ms), (0, Some(1_600)));
        assert_eq!(
            load.room(1_600, None, 90),
            Room::FREE,
            "nothing known any more"
        );
    }

    #[test]
    fn token_readings_close_the_link_until_their_reset() {
        let r = reading_from_headers(
            [
                ("x-ratelimit-limit-tokens", "1000"),
                ("x-ratelimit-remaining-tokens", "50"),
                ("x-ratelimit-reset-tokens", "2s"),
            ],
            0,
        )
        .unwrap();
        let mut load = ProviderLoad::default();
        load.observe(r);
        let room = load.room(10, None, 90);
        assert_eq!((room.slots, room.free_at_ms), (0, Some(2_000)));
        assert!((room.used - 0.95).abs() < 1e-9);
        assert_eq!(load.room(2_000, None, 90), Room::FREE);
    }

    #[test]
    fn room_of_a_link_is_the_tighter_of_both() {
        let closed = |at| Room {
            used: 0.95,
            slots: 0,
            free_at_ms: Some(at),
        };
        let open = Room {
            used: 0.5,
            slots: 3,
            free_at_ms: None,
        };
        assert_eq!(
            open.and(closed(5)),
            Room {
                used: 0.95,
                ..closed(5)
            }
        );
        assert_eq!(closed(5).and(closed(9)).free_at_ms, Some(9));
        assert_eq!(
            closed(5)
                .and(Room {
                    free_at_ms: None,
                    ..closed(1)
                })
                .free_at_ms,
            None
        );
        assert_eq!(open.and(Room::FREE).slots, 3);
    }

    #[test]
    fn saturated_providers_move_last_unless_all_are() {
        let labels: Vec<String> = ["openai/a", "openai/b", "groq/c", "anthropic/d"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let (order, why) = prefer_unsaturated(&labels, &[0.93, 0.95, 0.2, 0.2], 0.9);
        assert_eq!(order, [2, 3, 0, 1]);
        assert_eq!(
            why.as_deref(),
            Some("capacity:saturated openai/a=93%,openai/b=95%")
        );
        let (order, why) = prefer_unsaturated(&labels, &[0.99; 4], 0.9);
        assert_eq!(order, [0, 1, 2, 3]);
        assert!(why.is_none());
    }
}
