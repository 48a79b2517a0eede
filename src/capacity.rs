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
//! - the gateway's own count of requests in the last minute against the
//!   provider's configured `rpm_limit` (per isolate: a floor, not the truth).
//!
//! Readings are kept per provider and model (OpenAI and Anthropic report
//! limits per model), the own count per provider. Links at or above the
//! threshold (default 90 %) move behind the others, keeping their order; when every link is that busy the order is
//! unchanged (the provider's 429 and the walker's fallback take over).

use std::collections::VecDeque;

/// Longest a header reading is trusted without a reset time.
const DEFAULT_READING_TTL_MS: u64 = 60_000;

/// One rate-limit reading from a provider's response headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Share of the limit already used (0..=1), the larger of requests and tokens.
    pub used: f64,
    /// Until when the reading holds.
    pub valid_until_ms: u64,
}

/// Parses the rate-limit headers of one response (lowercase names).
pub fn reading_from_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    now_ms: u64,
) -> Option<Reading> {
    let mut req = Window::default();
    let mut tok = Window::default();
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
    let readings: Vec<(f64, u64)> = [req, tok]
        .iter()
        .filter_map(|w| {
            let (limit, remaining) = (w.limit?, w.remaining?);
            if limit == 0 {
                return None;
            }
            let used = 1.0 - (remaining.min(limit) as f64 / limit as f64);
            let until = now_ms.saturating_add(w.reset_ms.unwrap_or(DEFAULT_READING_TTL_MS));
            Some((used, until))
        })
        .collect();
    let (used, valid_until_ms) =
        readings
            .iter()
            .copied()
            .fold(None, |best: Option<(f64, u64)>, r| match best {
                Some(b) if b.0 >= r.0 => Some(b),
                _ => Some(r),
            })?;
    Some(Reading {
        used,
        valid_until_ms,
    })
}

#[derive(Default, Clone, Copy)]
struct Window {
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

/// What one isolate knows about one provider account.
#[derive(Debug, Clone, Default)]
pub struct ProviderLoad {
    reading: Option<Reading>,
    /// Start times (ms) of requests sent in the last minute.
    sent: VecDeque<u64>,
}

impl ProviderLoad {
    pub fn observe(&mut self, reading: Reading) {
        self.reading = Some(reading);
    }

    pub fn sent(&mut self, now_ms: u64) {
        self.prune(now_ms);
        self.sent.push_back(now_ms);
    }

    fn prune(&mut self, now_ms: u64) {
        while self
            .sent
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= 60_000)
        {
            self.sent.pop_front();
        }
    }

    /// Share of the account's limit in use now (0 when unknown).
    pub fn used(&mut self, now_ms: u64, rpm_limit: Option<u32>) -> f64 {
        self.prune(now_ms);
        let from_headers = self
            .reading
            .filter(|r| now_ms < r.valid_until_ms)
            .map_or(0.0, |r| r.used);
        let own = rpm_limit
            .filter(|l| *l > 0)
            .map_or(0.0, |l| self.sent.len() as f64 / f64::from(l));
        from_headers.max(own)
    }
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
        assert!((r.used - 0.93).abs() < 1e-9, "{}", r.used);
        assert_eq!(r.valid_until_ms, 1_000 + 360_000);
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
        assert!((r.used - 0.9).abs() < 1e-9);
        assert_eq!(r.valid_until_ms, now + 30_000);
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

    #[test]
    fn load_counts_until_reset_and_own_requests_per_minute() {
        let mut load = ProviderLoad::default();
        assert_eq!(load.used(0, Some(10)), 0.0);
        load.observe(Reading {
            used: 0.95,
            valid_until_ms: 5_000,
        });
        assert_eq!(load.used(4_999, None), 0.95);
        assert_eq!(
            load.used(5_000, None),
            0.0,
            "past its reset the reading is stale"
        );
        for t in 0..9 {
            load.sent(10_000 + t);
        }
        assert!((load.used(10_100, Some(10)) - 0.9).abs() < 1e-9);
        assert_eq!(load.used(70_009, Some(10)), 0.0, "a minute later");
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
