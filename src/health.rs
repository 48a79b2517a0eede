//! Health probes (issue 12): the cron trigger sends each configured
//! provider/model a tiny request at `[vars.GATEWAY.health]
//! probe_interval_secs`, and the outcome goes to the link's `CircuitBreaker`
//! Durable Object like a user attempt does — marked as a probe — so a failing
//! provider's circuit opens, and a slow one loses its place in the `latency`
//! strategy, before a user request has to fail or wait on it.
//!
//! This module is the pure part, natively tested: the config and its
//! validation, which links are probed, when (the schedule inside one cron
//! run, and the slot each probe claims so that overlapping runs do not probe
//! twice), the rolling window of probe outcomes, and how an outcome moves
//! the circuit. `handlers/probes.rs` sends the probes; `circuit_do.rs` keeps
//! the state.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::breaker::{BreakerPolicy, BreakerState};
use crate::config::{GatewayConfig, ResolvedKind};

/// `[vars.GATEWAY.health]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Seconds between two probes of a link; 0 (the default) turns probes
    /// off. Probes cost money: see README "Health probes".
    pub probe_interval_secs: u64,
    /// `"provider/model"` (or `models` aliases) to probe; empty = every model
    /// that appears in a route target.
    pub links: Vec<String>,
    /// A probe that has not answered in full within this fails (a timeout).
    pub timeout_ms: u64,
    /// The probe's one user message.
    pub prompt: String,
    /// The probe's `max_tokens`.
    pub max_tokens: u32,
    /// Consecutive failed probes that open the link's circuit.
    pub failures_to_open: u32,
    /// The rolling window: the last this many probes of a link (0 = no window).
    pub window: u32,
    /// A failed probe also opens the circuit when, over a full window, this
    /// share of probes failed (catches a provider that fails every other time).
    pub max_error_rate: f64,
    /// With probes on, each isolate re-reads the circuit state of the links a
    /// request's route uses when its view is older than this (after the
    /// response, never on the request's path).
    pub refresh_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            probe_interval_secs: 0,
            links: Vec::new(),
            timeout_ms: 10_000,
            prompt: "ping".to_owned(),
            max_tokens: 1,
            failures_to_open: 2,
            window: 10,
            max_error_rate: 0.5,
            refresh_ms: 1_000,
        }
    }
}

/// Most rounds one cron run spaces out (e.g. a 10 s interval under a
/// once-a-minute cron is 6).
pub const MAX_ROUNDS_PER_RUN: usize = 60;
/// Longest window of probe outcomes kept (bits of a `u32`).
pub const MAX_WINDOW: u32 = 32;
/// Slack for cron invocations that start late, in the hold below.
pub const HOLD_GRACE_MS: u64 = 30_000;

impl HealthConfig {
    pub fn enabled(&self) -> bool {
        self.probe_interval_secs > 0
    }

    pub fn interval_ms(&self) -> u64 {
        self.probe_interval_secs.saturating_mul(1_000)
    }

    /// How long a circuit a probe opened (or found open and failed again)
    /// stays open: until the next probe has had time to run, so that probe —
    /// not a user request — is the trial that closes it.
    pub fn hold_ms(&self) -> u64 {
        self.interval_ms()
            .saturating_add(self.timeout_ms)
            .saturating_add(HOLD_GRACE_MS)
    }

    pub fn probe_policy(&self) -> ProbePolicy {
        ProbePolicy {
            failures_to_open: self.failures_to_open,
            window: self.window,
            max_error_rate: self.max_error_rate,
            hold_ms: self.hold_ms(),
        }
    }

    /// The probe's request body (canonical chat completion; the provider
    /// adapter translates it like any other).
    pub fn probe_body(&self, model: &str) -> serde_json::Map<String, serde_json::Value> {
        let mut body = serde_json::Map::new();
        body.insert("model".into(), model.into());
        body.insert(
            "messages".into(),
            serde_json::json!([{"role": "user", "content": self.prompt}]),
        );
        body.insert("max_tokens".into(), self.max_tokens.into());
        body.insert("stream".into(), false.into());
        body
    }

    /// Problems with this section, each naming its field.
    pub fn validate(&self, config: &GatewayConfig) -> Vec<String> {
        let mut errors = Vec::new();
        if self.probe_interval_secs != 0 && !(10..=86_400).contains(&self.probe_interval_secs) {
            errors.push("health.probe_interval_secs: 0 (off) or 10 to 86400 seconds".to_owned());
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            errors.push("health.timeout_ms: must be between 100 and 60000".to_owned());
        }
        if self.enabled() && self.timeout_ms >= self.interval_ms() {
            errors.push("health.timeout_ms: must be shorter than probe_interval_secs".to_owned());
        }
        let prompt_chars = self.prompt.chars().count();
        if !(1..=200).contains(&prompt_chars) {
            errors.push("health.prompt: 1 to 200 characters".to_owned());
        }
        if !(1..=64).contains(&self.max_tokens) {
            errors.push(
                "health.max_tokens: 1 to 64 (a probe should cost next to nothing)".to_owned(),
            );
        }
        if !(1..=100).contains(&self.failures_to_open) {
            errors.push("health.failures_to_open: 1 to 100".to_owned());
        }
        if self.window > MAX_WINDOW {
            errors.push(format!("health.window: 0 (off) to {MAX_WINDOW} probes"));
        }
        if !(self.max_error_rate > 0.0 && self.max_error_rate <= 1.0) {
            errors.push("health.max_error_rate: a share above 0 and at most 1".to_owned());
        }
        if !(100..=60_000).contains(&self.refresh_ms) {
            errors.push("health.refresh_ms: must be between 100 and 60000".to_owned());
        }
        for (i, link) in self.links.iter().enumerate() {
            if let Err(e) = probeable(config, link) {
                errors.push(format!("health.links[{i}]: {e}"));
            }
        }
        errors
    }
}

/// `provider/model` of a link that can be probed, or why not.
fn probeable(config: &GatewayConfig, name: &str) -> Result<(String, String), String> {
    let qualified = config.models.get(name).map_or(name, String::as_str);
    let Some((provider, model)) = qualified.split_once('/').filter(|(_, m)| !m.is_empty()) else {
        return Err(format!("'{name}' is neither an alias nor 'provider/model'"));
    };
    let Some(p) = config.providers.get(provider) else {
        return Err(format!("provider '{provider}' is not configured"));
    };
    match p.resolved_kind(provider) {
        Some(ResolvedKind::Demo) => Err(format!(
            "'{provider}' is the built-in demo provider, which cannot fail"
        )),
        Some(ResolvedKind::WorkersAiBinding) => Err(format!(
            "'{provider}' runs on the Workers AI binding, which probes do not cover yet"
        )),
        _ => Ok((provider.to_owned(), model.to_owned())),
    }
}

/// The links to probe, as `(provider, model)`, sorted and without
/// duplicates: the configured list, or every model in a route target (the
/// demo provider and binding providers left out).
pub fn probe_links(config: &GatewayConfig) -> Vec<(String, String)> {
    let names: Vec<&str> = if config.health.links.is_empty() {
        config
            .routes
            .values()
            .flat_map(|r| r.targets.iter())
            .filter_map(|t| t.model.as_deref())
            .collect()
    } else {
        config.health.links.iter().map(String::as_str).collect()
    };
    let set: BTreeSet<(String, String)> = names
        .into_iter()
        .filter_map(|n| probeable(config, n).ok())
        .collect();
    set.into_iter().collect()
}

/// The period of a cron expression that fires at a fixed rate: `* * * * *`
/// (a minute), `*/N * * * *` with N dividing 60, `M * * * *` (an hour).
/// Anything else: unknown (each run then probes once, when due).
pub fn cron_period_ms(expr: &str) -> Option<u64> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let [minute, "*", "*", "*", "*"] = fields.as_slice() else {
        return None;
    };
    let minutes = match *minute {
        "*" => 1,
        m => match m.strip_prefix("*/") {
            Some(n) => n
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=60).contains(n) && 60 % n == 0)?,
            None => m.parse::<u64>().ok().filter(|m| *m < 60).map(|_| 60)?,
        },
    };
    Some(minutes * 60_000)
}

/// The slot a probe at `t_ms` belongs to: probes of a link claim slots, so
/// two cron runs covering the same time (an overlap, a duplicate delivery,
/// a second cron expression) probe it once.
pub fn slot_ms(t_ms: u64, interval_ms: u64) -> u64 {
    if interval_ms == 0 {
        return t_ms;
    }
    t_ms / interval_ms * interval_ms
}

/// When one cron run scheduled at `scheduled_ms` probes: at once (claiming
/// the slot it falls in, which an earlier run may already have probed), then
/// at every slot boundary before the next run when the interval is shorter
/// than the cron period. `period_ms` unknown: at once only.
pub fn probe_times(scheduled_ms: u64, period_ms: Option<u64>, interval_ms: u64) -> Vec<u64> {
    let mut times = vec![scheduled_ms];
    let (Some(period), true) = (period_ms, interval_ms > 0) else {
        return times;
    };
    let end = scheduled_ms.saturating_add(period);
    let mut next = slot_ms(scheduled_ms, interval_ms).saturating_add(interval_ms);
    while next < end && times.len() < MAX_ROUNDS_PER_RUN {
        times.push(next);
        next = next.saturating_add(interval_ms);
    }
    times
}

/// How probe outcomes move a circuit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbePolicy {
    pub failures_to_open: u32,
    pub window: u32,
    pub max_error_rate: f64,
    pub hold_ms: u64,
}

/// A link's recent probe outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord {
    pub consecutive_failures: u32,
    /// One bit per probe, newest in bit 0; 1 = failed.
    pub window_bits: u32,
    /// Probes in the window (up to the configured size).
    pub window_len: u32,
}

impl ProbeRecord {
    pub fn observe(&mut self, healthy: bool, window: u32) {
        self.consecutive_failures = if healthy {
            0
        } else {
            self.consecutive_failures.saturating_add(1)
        };
        let window = window.min(MAX_WINDOW);
        if window == 0 {
            *self = Self {
                consecutive_failures: self.consecutive_failures,
                ..Self::default()
            };
            return;
        }
        let mask = if window == MAX_WINDOW {
            u32::MAX
        } else {
            (1u32 << window) - 1
        };
        self.window_bits = ((self.window_bits << 1) | u32::from(!healthy)) & mask;
        self.window_len = self.window_len.saturating_add(1).min(window);
    }

    /// Failed share of a full window; `None` until the window is full.
    pub fn error_rate(&self, window: u32) -> Option<f64> {
        let window = window.min(MAX_WINDOW);
        (window > 0 && self.window_len >= window)
            .then(|| f64::from(self.window_bits.count_ones()) / f64::from(window))
    }

    /// Whether the latest (failed) probe should open the circuit.
    pub fn says_open(&self, policy: ProbePolicy) -> bool {
        self.consecutive_failures >= policy.failures_to_open
            || self
                .error_rate(policy.window)
                .is_some_and(|r| r >= policy.max_error_rate)
    }
}

/// Applies one probe outcome to a link's circuit.
///
/// - A healthy probe closes the circuit at once (recovery is fast; a
///   provider that fails again reopens it, and the window's error rate
///   reopens a flapping one on its next failure).
/// - A failed probe counts like a failed user attempt (so user failures and
///   probe failures add up to the breaker's threshold), and opens the circuit
///   for `hold_ms` when the probe thresholds say so or when the circuit is
///   already open or half-open: the next probe is then the trial.
///
/// With the breaker off (`failures_to_open == 0` in `breaker`), probes only
/// measure (latency, statistics) and never move a circuit.
pub fn apply_probe(
    state: &mut BreakerState,
    record: &mut ProbeRecord,
    healthy: bool,
    now_ms: u64,
    breaker: BreakerPolicy,
    policy: ProbePolicy,
) {
    record.observe(healthy, policy.window);
    if breaker.failures_to_open == 0 {
        *state = BreakerState::default();
        return;
    }
    if healthy {
        *state = BreakerState::default();
        return;
    }
    let was_open = state.open_until_ms != 0;
    state.record(false, now_ms, breaker);
    if was_open || record.says_open(policy) {
        state.open_until_ms = state
            .open_until_ms
            .max(now_ms.saturating_add(policy.hold_ms));
    }
}

/// What a link's probes have done and cost (kept by its `CircuitBreaker`
/// object, shown by `GET /admin/health`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeStats {
    pub record: ProbeRecord,
    /// The latest slot a probe claimed (see [`slot_ms`]).
    pub last_slot_ms: Option<u64>,
    pub probes: u64,
    pub failures: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Priced like user requests; probes of unpriced models add nothing here
    /// and count in `unpriced_probes`.
    pub cost_micros: u64,
    pub unpriced_probes: u64,
    pub first_probe_ms: u64,
    pub last_probe_ms: u64,
    pub last_healthy: bool,
    pub last_latency_ms: u64,
    /// Why the latest failed probe failed (`status_503`, `timeout`, …).
    pub last_failure: Option<String>,
}

impl ProbeStats {
    /// Claims `slot` for a probe: true unless that slot (or a later one) was
    /// already claimed.
    pub fn claim(&mut self, slot: u64) -> bool {
        if self.last_slot_ms.is_some_and(|last| slot <= last) {
            return false;
        }
        self.last_slot_ms = Some(slot);
        true
    }
}

/// One probe's outcome, as the prober reports it to the link's object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    pub healthy: bool,
    pub latency_ms: u64,
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    /// `None`: the model has no price.
    #[serde(default)]
    pub cost_micros: Option<u64>,
    #[serde(default)]
    pub failure: Option<String>,
}

impl ProbeStats {
    pub fn count(&mut self, o: &ProbeOutcome, now_ms: u64) {
        self.probes = self.probes.saturating_add(1);
        if !o.healthy {
            self.failures = self.failures.saturating_add(1);
        }
        self.prompt_tokens = self.prompt_tokens.saturating_add(o.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(o.completion_tokens);
        match o.cost_micros {
            Some(c) => self.cost_micros = self.cost_micros.saturating_add(c),
            None => self.unpriced_probes = self.unpriced_probes.saturating_add(1),
        }
        if self.first_probe_ms == 0 {
            self.first_probe_ms = now_ms;
        }
        self.last_probe_ms = now_ms;
        self.last_healthy = o.healthy;
        self.last_latency_ms = o.latency_ms;
        self.last_failure = if o.healthy { None } else { o.failure.clone() };
    }
}

/// Probes a configuration sends per day (links × 86400 / interval; README
/// "Health probes" multiplies it by tokens and price).
pub fn daily_probes(links: usize, interval_secs: u64) -> u64 {
    if interval_secs == 0 {
        return 0;
    }
    (links as u64).saturating_mul(86_400 / interval_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BREAKER: BreakerPolicy = BreakerPolicy {
        failures_to_open: 5,
        cool_down_ms: 30_000,
    };

    fn policy() -> ProbePolicy {
        ProbePolicy {
            failures_to_open: 2,
            window: 10,
            max_error_rate: 0.5,
            hold_ms: 340_000,
        }
    }

    fn config(health: serde_json::Value) -> Result<GatewayConfig, Vec<String>> {
        GatewayConfig::from_json(json!({
            "providers": {
                "openai": {}, "groq": {},
                "demo": {"kind": "demo"},
                "wai": {"kind": "workers-ai-binding"}
            },
            "models": {"mini": "openai/gpt-4o-mini"},
            "routes": {
                "smart": {"strategy": "fallback", "targets": [
                    {"model": "mini"}, {"model": "groq/llama"}, {"route": "local"}
                ]},
                "local": {"strategy": "fallback", "targets": [
                    {"model": "demo/echo"}, {"model": "wai/@cf/x"}, {"model": "openai/gpt-4o-mini"}
                ]}
            },
            "health": health
        }))
    }

    #[test]
    fn off_by_default_and_defaults_validate() {
        let c = config(json!({})).unwrap();
        assert!(!c.health.enabled());
        assert_eq!(c.health, HealthConfig::default());
    }

    #[test]
    fn default_links_are_every_route_target_resolved_deduplicated_without_demo_or_binding() {
        let c = config(json!({"probe_interval_secs": 60})).unwrap();
        assert_eq!(
            probe_links(&c),
            [
                ("groq".to_owned(), "llama".to_owned()),
                ("openai".to_owned(), "gpt-4o-mini".to_owned())
            ]
        );
        let c = config(json!({"probe_interval_secs": 60, "links": ["groq/other"]})).unwrap();
        assert_eq!(probe_links(&c), [("groq".to_owned(), "other".to_owned())]);
    }

    #[test]
    fn validation_names_each_bad_field() {
        let errors = config(json!({
            "probe_interval_secs": 5, "timeout_ms": 50, "prompt": "", "max_tokens": 0,
            "failures_to_open": 0, "window": 33, "max_error_rate": 0.0, "refresh_ms": 10,
            "links": ["nope/x", "demo/echo", "wai/@cf/x", "bare"]
        }))
        .unwrap_err();
        for field in [
            "probe_interval_secs",
            "timeout_ms",
            "prompt",
            "max_tokens",
            "failures_to_open",
            "window",
            "max_error_rate",
            "refresh_ms",
            "links[0]: provider 'nope'",
            "links[1]: 'demo' is the built-in demo",
            "links[2]: 'wai' runs on the Workers AI binding",
            "links[3]: 'bare' is neither",
        ] {
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains(&format!("health.{field}"))),
                "{field}: {errors:?}"
            );
        }
        let errors = config(json!({"probe_interval_secs": 10, "timeout_ms": 10_000})).unwrap_err();
        assert!(
            errors[0].contains("shorter than probe_interval_secs"),
            "{errors:?}"
        );
        assert!(
            config(json!({"unknown": 1})).is_err(),
            "unknown fields are errors"
        );
    }

    #[test]
    fn cron_periods() {
        assert_eq!(cron_period_ms("* * * * *"), Some(60_000));
        assert_eq!(cron_period_ms("*/5 * * * *"), Some(300_000));
        assert_eq!(cron_period_ms("17 * * * *"), Some(3_600_000));
        assert_eq!(cron_period_ms("*/7 * * * *"), None, "irregular");
        assert_eq!(cron_period_ms("0 9 * * 1"), None);
        assert_eq!(cron_period_ms("garbage"), None);
    }

    #[test]
    fn one_probe_per_run_when_the_interval_is_at_least_the_period() {
        assert_eq!(probe_times(600_000, Some(300_000), 300_000), [600_000]);
        assert_eq!(probe_times(600_000, Some(300_000), 600_000), [600_000]);
        assert_eq!(probe_times(600_000, None, 10_000), [600_000]);
    }

    #[test]
    fn shorter_intervals_are_spaced_inside_the_run_and_runs_tile_without_overlap() {
        // 120 s under a 5-minute cron: runs at 0, 300, 600 s.
        let mut slots = Vec::new();
        let mut claimed = ProbeStats::default();
        for run in [0, 300_000, 600_000] {
            for t in probe_times(run, Some(300_000), 120_000) {
                let s = slot_ms(t, 120_000);
                if claimed.claim(s) {
                    slots.push(t);
                }
            }
        }
        assert_eq!(
            slots,
            [0, 120_000, 240_000, 360_000, 480_000, 600_000, 720_000, 840_000],
            "every 120 s: the run at 300 s finds its first slot (240) probed"
        );
        assert_eq!(probe_times(0, Some(60_000), 10_000).len(), 6);
        assert!(probe_times(0, Some(3_600_000), 10_000).len() <= MAX_ROUNDS_PER_RUN);
    }

    #[test]
    fn concurrent_runs_claim_each_slot_once() {
        let mut s = ProbeStats::default();
        assert!(s.claim(300_000));
        assert!(!s.claim(300_000), "a second run at the same time");
        assert!(!s.claim(0), "an older slot");
        assert!(s.claim(600_000));
        assert!(ProbeStats::default().claim(0), "the very first slot");
    }

    #[test]
    fn window_arithmetic() {
        let mut r = ProbeRecord::default();
        for i in 0..9 {
            r.observe(i % 2 == 0, 10);
        }
        assert_eq!(r.error_rate(10), None, "not full yet");
        r.observe(true, 10);
        assert_eq!(r.window_len, 10);
        assert_eq!(r.error_rate(10), Some(0.4));
        for _ in 0..10 {
            r.observe(true, 10);
        }
        assert_eq!(r.error_rate(10), Some(0.0), "old failures slide out");
        for _ in 0..40 {
            r.observe(false, 32);
        }
        assert_eq!(r.error_rate(32), Some(1.0));
        assert_eq!(r.consecutive_failures, 40);
        r.observe(true, 0);
        assert_eq!(
            (r.window_len, r.window_bits, r.consecutive_failures),
            (0, 0, 0)
        );
    }

    #[test]
    fn consecutive_failed_probes_open_and_hold_until_the_next_probe_then_a_success_closes() {
        let (mut s, mut r) = (BreakerState::default(), ProbeRecord::default());
        apply_probe(&mut s, &mut r, false, 1_000, BREAKER, policy());
        assert_eq!(s.open_until_ms, 0, "one failed probe is not enough");
        apply_probe(&mut s, &mut r, false, 2_000, BREAKER, policy());
        assert_eq!(s.open_until_ms, 342_000, "held past the next probe");
        // Still failing at the next probe: held again.
        apply_probe(&mut s, &mut r, false, 302_000, BREAKER, policy());
        assert_eq!(s.open_until_ms, 642_000);
        apply_probe(&mut s, &mut r, true, 602_000, BREAKER, policy());
        assert_eq!(s, BreakerState::default(), "a healthy probe closes it");
    }

    #[test]
    fn probe_and_user_failures_add_up_and_a_failed_probe_on_an_open_circuit_holds_it() {
        let (mut s, mut r) = (BreakerState::default(), ProbeRecord::default());
        for t in 0..4 {
            s.record(false, t, BREAKER);
        }
        apply_probe(&mut s, &mut r, false, 10, BREAKER, policy());
        assert_eq!(
            s.open_until_ms, 30_010,
            "fifth failure: the breaker's own cool-down"
        );
        // Half-open after the user cool-down: the probe is the trial and fails.
        apply_probe(&mut s, &mut r, false, 40_000, BREAKER, policy());
        assert_eq!(s.open_until_ms, 380_000);
    }

    #[test]
    fn a_flapping_link_opens_on_the_window_error_rate() {
        let p = ProbePolicy {
            failures_to_open: 3,
            window: 4,
            max_error_rate: 0.5,
            hold_ms: 1_000,
        };
        let (mut s, mut r) = (BreakerState::default(), ProbeRecord::default());
        let mut opened_at = None;
        for (i, ok) in [false, true, false, true, false].into_iter().enumerate() {
            apply_probe(&mut s, &mut r, ok, i as u64 * 10, BREAKER, p);
            if s.open_until_ms != 0 && opened_at.is_none() {
                opened_at = Some(i);
            }
        }
        assert_eq!(
            opened_at,
            Some(4),
            "never 3 in a row, but 2 of the last 4 (full window)"
        );
    }

    #[test]
    fn with_the_breaker_off_probes_never_open_a_circuit() {
        let off = BreakerPolicy {
            failures_to_open: 0,
            cool_down_ms: 1,
        };
        let (mut s, mut r) = (BreakerState::default(), ProbeRecord::default());
        for t in 0..10 {
            apply_probe(&mut s, &mut r, false, t, off, policy());
        }
        assert_eq!(s, BreakerState::default());
        assert_eq!(r.consecutive_failures, 10);
    }

    #[test]
    fn stats_count_cost_and_unpriced_probes() {
        let mut st = ProbeStats::default();
        let ok = ProbeOutcome {
            healthy: true,
            latency_ms: 80,
            prompt_tokens: 8,
            completion_tokens: 1,
            cost_micros: Some(2),
            failure: None,
        };
        st.count(&ok, 5);
        st.count(
            &ProbeOutcome {
                healthy: false,
                latency_ms: 9,
                failure: Some("status_503".into()),
                ..ProbeOutcome::default()
            },
            6,
        );
        assert_eq!(
            (st.probes, st.failures, st.cost_micros, st.unpriced_probes),
            (2, 1, 2, 1)
        );
        assert_eq!((st.first_probe_ms, st.last_probe_ms), (5, 6));
        assert_eq!(st.last_failure.as_deref(), Some("status_503"));
        assert_eq!(daily_probes(4, 60), 5_760);
        assert_eq!(daily_probes(4, 0), 0);
    }

    #[test]
    fn the_probe_body_is_one_short_user_message() {
        let body = HealthConfig::default().probe_body("gpt-4o-mini");
        assert_eq!(
            serde_json::Value::Object(body),
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "ping"}],
                   "max_tokens": 1, "stream": false})
        );
    }
}
