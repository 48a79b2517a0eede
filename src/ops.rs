//! Operations: what the cron trigger (`scheduled` event) decides, kept pure.
//!
//! - **Operational alerts** over the ledger — daily spend, error rate, p99
//!   latency, fallback rate — each fires at most once per condition and
//!   window (recorded in D1's `alerts` table, whose unique index makes a
//!   replay add and send nothing).
//! - **The weekly summary** (spend, top consumers, cache savings, errors),
//!   once per week on the configured weekday.
//! - **Retention**: ledger rows older than the configured age are deleted
//!   (every request is already in the `usage_rollup` aggregates, added when
//!   its row was written), and hour aggregates older than that are compacted
//!   into day rows (`handlers/cron.rs` runs the SQL below).
//! - **Logging** options: request and answer bodies are not logged unless the
//!   operator turns it on, and then only through [`crate::redact`].

use serde::{Deserialize, Serialize};

use crate::analytics::{Metrics, Percentiles, DAY_MS};

/// `[vars.GATEWAY.alerts.ops]`: thresholds of the cron-evaluated alerts. An
/// absent threshold is not evaluated.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OpsAlerts {
    /// UTC-day spend above this many USD.
    pub daily_spend_usd: Option<f64>,
    /// Requests not `ok`, in percent of requests, over the window.
    pub error_rate_pct: Option<f64>,
    /// p99 of request latency over the window, in ms.
    pub p99_latency_ms: Option<u64>,
    /// Requests that fell back to another provider/model, in percent of
    /// requests that reached a provider, over the window.
    pub fallback_rate_pct: Option<f64>,
    /// The window rates and p99 are computed over, and the period in which
    /// each fires at most once (aligned to the epoch).
    pub window_minutes: u32,
    /// Rates and p99 over fewer requests than this are not judged.
    pub min_requests: u64,
    /// Send the weekly summary to the webhooks.
    pub weekly_summary: bool,
    /// The UTC weekday it is sent on (the first cron run of that day).
    pub weekly_summary_day: Weekday,
}

impl Default for OpsAlerts {
    fn default() -> Self {
        Self {
            daily_spend_usd: None,
            error_rate_pct: None,
            p99_latency_ms: None,
            fallback_rate_pct: None,
            window_minutes: 60,
            min_requests: 20,
            weekly_summary: true,
            weekly_summary_day: Weekday::Monday,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl Weekday {
    /// Days since Monday.
    fn index(self) -> u64 {
        match self {
            Self::Monday => 0,
            Self::Tuesday => 1,
            Self::Wednesday => 2,
            Self::Thursday => 3,
            Self::Friday => 4,
            Self::Saturday => 5,
            Self::Sunday => 6,
        }
    }
}

/// The UTC weekday of an instant, as days since Monday (1970-01-01 was a Thursday).
pub fn weekday_index(at_ms: u64) -> u64 {
    (at_ms / DAY_MS + 3) % 7
}

/// `[vars.GATEWAY.retention]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Ledger rows older than this many days are deleted, and hour
    /// aggregates older than that are compacted into days. 0 deletes every
    /// row older than the run (aggregates only); absent config keeps 90 days.
    pub max_age_days: u32,
    /// Rows rolled up per D1 transaction, and transactions per cron run.
    pub batch_rows: u32,
    pub max_batches: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age_days: 90,
            batch_rows: 5_000,
            max_batches: 20,
        }
    }
}

/// `[vars.GATEWAY.logging]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    /// Which requests get a JSON log line.
    pub requests: RequestLogs,
    /// Log request and answer bodies (PII-redacted, truncated). Off by default.
    pub bodies: bool,
    /// Characters kept of each logged body.
    pub max_body_chars: u32,
}

impl Default for Logging {
    fn default() -> Self {
        Self {
            requests: RequestLogs::Errors,
            bodies: false,
            max_body_chars: 4_096,
        }
    }
}

/// Which requests get a JSON log line. Every request has its ledger row
/// anyway; a line per request costs CPU on the request's isolate (under
/// `wrangler dev` each line also crosses to wrangler's Node process) and log
/// volume, so by default only failures are logged.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RequestLogs {
    /// Every request.
    All,
    /// Responses with status 400 or above.
    Errors,
    /// None.
    Off,
}

impl RequestLogs {
    /// Whether a response with `status` gets a log line.
    pub fn logs(self, status: u16) -> bool {
        match self {
            Self::All => true,
            Self::Errors => status >= 400,
            Self::Off => false,
        }
    }
}

/// Problems with the ops, retention and logging sections.
pub fn validate(alerts: &OpsAlerts, retention: &Retention, logging: &Logging) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(usd) = alerts.daily_spend_usd {
        if !(usd.is_finite() && usd > 0.0 && usd <= 1e9) {
            errors.push("alerts.ops.daily_spend_usd: a positive amount of USD".to_owned());
        }
    }
    for (name, pct) in [
        ("error_rate_pct", alerts.error_rate_pct),
        ("fallback_rate_pct", alerts.fallback_rate_pct),
    ] {
        if let Some(p) = pct {
            if !(p.is_finite() && p > 0.0 && p <= 100.0) {
                errors.push(format!(
                    "alerts.ops.{name}: a percentage above 0 and at most 100"
                ));
            }
        }
    }
    if alerts.p99_latency_ms == Some(0) {
        errors.push("alerts.ops.p99_latency_ms: must be above 0".to_owned());
    }
    if !(5..=1440).contains(&alerts.window_minutes) || 1440 % alerts.window_minutes != 0 {
        errors.push(
            "alerts.ops.window_minutes: 5 to 1440, dividing a day evenly (e.g. 15, 60)".to_owned(),
        );
    }
    if alerts.min_requests == 0 {
        errors.push("alerts.ops.min_requests: at least 1".to_owned());
    }
    if retention.max_age_days > 3650 {
        errors.push("retention.max_age_days: at most 3650".to_owned());
    }
    if !(100..=50_000).contains(&retention.batch_rows) {
        errors.push("retention.batch_rows: 100 to 50000".to_owned());
    }
    if !(1..=100).contains(&retention.max_batches) {
        errors.push("retention.max_batches: 1 to 100".to_owned());
    }
    if !(64..=1_000_000).contains(&logging.max_body_chars) {
        errors.push("logging.max_body_chars: 64 to 1000000".to_owned());
    }
    errors
}

/// A condition the cron evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    DailySpend,
    ErrorRate,
    P99Latency,
    FallbackRate,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DailySpend => "daily_spend",
            Self::ErrorRate => "error_rate",
            Self::P99Latency => "p99_latency",
            Self::FallbackRate => "fallback_rate",
        }
    }
}

/// The time range a condition is measured over and the window it fires once in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Today (UTC) so far: `[day_start, now]`.
    pub day_start_ms: u64,
    /// The trailing window `[now - window, now]`…
    pub trailing_from_ms: u64,
    /// …recorded under the aligned window it ends in.
    pub window_start_ms: u64,
    pub window_ms: u64,
}

pub fn windows(now_ms: u64, window_minutes: u32) -> Windows {
    let window_ms = u64::from(window_minutes.max(1)) * 60_000;
    Windows {
        day_start_ms: now_ms - now_ms % DAY_MS,
        trailing_from_ms: now_ms.saturating_sub(window_ms),
        window_start_ms: now_ms - now_ms % window_ms,
        window_ms,
    }
}

/// A threshold crossed: what the webhook receives and D1 records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpsAlert {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub condition: &'static str,
    /// The measured value (USD for spend, percent for rates, ms for p99).
    pub value: f64,
    pub threshold: f64,
    pub requests: u64,
    pub from_ms: u64,
    pub to_ms: u64,
    /// The window it fires once in (the UTC day for spend).
    pub window_start_ms: u64,
}

impl OpsAlert {
    /// The integer the `alerts` row's unique index keys the threshold on.
    pub fn threshold_key(&self) -> i64 {
        #[expect(clippy::cast_possible_truncation, reason = "a config value, rounded")]
        let k = (self.threshold * 1000.0).round() as i64;
        k
    }
}

#[expect(clippy::cast_precision_loss, reason = "micro-USD far below 2^53")]
fn usd(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// Which thresholds are crossed. `today` covers the UTC day so far; `recent`
/// and `recent_latency` the trailing window.
pub fn evaluate(
    cfg: &OpsAlerts,
    now_ms: u64,
    today: &Metrics,
    recent: &Metrics,
    recent_latency: &Percentiles,
) -> Vec<OpsAlert> {
    let w = windows(now_ms, cfg.window_minutes);
    let mut out = Vec::new();
    let mut push = |c: Condition, value: f64, threshold: f64, requests: u64, daily: bool| {
        out.push(OpsAlert {
            kind: "ops_alert",
            condition: c.as_str(),
            value,
            threshold,
            requests,
            from_ms: if daily {
                w.day_start_ms
            } else {
                w.trailing_from_ms
            },
            to_ms: now_ms,
            window_start_ms: if daily {
                w.day_start_ms
            } else {
                w.window_start_ms
            },
        });
    };
    if let Some(limit) = cfg.daily_spend_usd {
        let spent = usd(today.cost_micros);
        if spent > limit {
            push(Condition::DailySpend, spent, limit, today.requests, true);
        }
    }
    let judged = recent.requests >= cfg.min_requests;
    let d = recent.derived();
    if let (true, Some(limit), Some(rate)) = (judged, cfg.error_rate_pct, d.error_rate) {
        if rate * 100.0 > limit {
            push(
                Condition::ErrorRate,
                rate * 100.0,
                limit,
                recent.requests,
                false,
            );
        }
    }
    if let (true, Some(limit), Some(rate)) = (judged, cfg.fallback_rate_pct, d.fallback_rate) {
        if rate * 100.0 > limit {
            push(
                Condition::FallbackRate,
                rate * 100.0,
                limit,
                recent.requests,
                false,
            );
        }
    }
    if let (true, Some(limit), Some(p99)) = (judged, cfg.p99_latency_ms, recent_latency.p99) {
        if p99 > limit {
            #[expect(clippy::cast_precision_loss, reason = "milliseconds")]
            push(
                Condition::P99Latency,
                p99 as f64,
                limit as f64,
                recent.requests,
                false,
            );
        }
    }
    out
}

/// When the weekly summary is due: on the configured UTC weekday (the first
/// cron run of that day sends it; the day's start is its once-only key),
/// covering the 7 × 24 hours before the run. `None` on other days.
pub fn weekly_due(cfg: &OpsAlerts, now_ms: u64) -> Option<WeeklyWindow> {
    if !cfg.weekly_summary || weekday_index(now_ms) != cfg.weekly_summary_day.index() {
        return None;
    }
    Some(WeeklyWindow {
        from_ms: now_ms.saturating_sub(7 * DAY_MS),
        to_ms: now_ms + 1,
        key_ms: now_ms - now_ms % DAY_MS,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeeklyWindow {
    pub from_ms: u64,
    pub to_ms: u64,
    /// The day it is sent on: recorded so that it is sent once.
    pub key_ms: u64,
}

/// One row of a "top consumers" list in the weekly summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Consumer {
    pub name: String,
    pub requests: u64,
    pub cost_usd: f64,
}

pub fn consumer(name: String, m: &Metrics) -> Consumer {
    Consumer {
        name,
        requests: m.requests,
        cost_usd: usd(m.cost_micros),
    }
}

/// The weekly summary payload.
pub fn weekly_payload(
    from_ms: u64,
    to_ms: u64,
    totals: &Metrics,
    top_keys: Vec<Consumer>,
    top_models: Vec<Consumer>,
    now_ms: u64,
) -> serde_json::Value {
    let d = totals.derived();
    serde_json::json!({
        "type": "weekly_summary",
        "from_ms": from_ms,
        "to_ms": to_ms,
        "requests": totals.requests,
        "spend_usd": usd(totals.cost_micros),
        "unpriced_requests": totals.unpriced,
        "tokens": totals.total_tokens,
        "cache": {
            "hits": totals.cache_hits,
            "semantic_hits": totals.semantic_hits,
            "saved_usd": usd(totals.saved_micros),
            "hit_rate": d.cache_hit_rate,
        },
        "errors": {
            "total": totals.errors(),
            "rate": d.error_rate,
            "rejected": totals.rejected,
            "upstream_error": totals.upstream_error,
            "upstream_truncated": totals.upstream_truncated,
            "client_aborted": totals.client_aborted,
            "rate_limited": totals.rate_limited,
            "budget_refused": totals.budget_refused,
        },
        "fallback_rate": d.fallback_rate,
        "top_keys": top_keys,
        "top_models": top_models,
        "at_ms": now_ms,
    })
}

/// Compaction of the hour aggregates that start before `?1` (a UTC day
/// start) into one row per day and grouping, added to any day row already
/// there; [`DELETE_COMPACTED_SQL`] then removes the hour rows (same batch).
pub const COMPACT_SQL: &str = "INSERT INTO usage_rollup (bucket, span, key_id, provider, model, team, \
    feature, outcome, status, cache_status, requests, upstream, fallbacks, prompt_tokens, completion_tokens, \
    total_tokens, cost_micros, saved_micros, unpriced, latency_ms_sum, ttft_ms_sum, ttft_count) \
    SELECT (bucket / 86400000) * 86400000, 86400000, key_id, provider, model, team, feature, outcome, status, \
    cache_status, SUM(requests), SUM(upstream), SUM(fallbacks), SUM(prompt_tokens), SUM(completion_tokens), \
    SUM(total_tokens), SUM(cost_micros), SUM(saved_micros), SUM(unpriced), SUM(latency_ms_sum), \
    SUM(ttft_ms_sum), SUM(ttft_count) \
    FROM usage_rollup WHERE span = 3600000 AND bucket < ?1 GROUP BY 1, 3, 4, 5, 6, 7, 8, 9, 10 \
    ON CONFLICT (bucket, span, key_id, provider, model, team, feature, outcome, status, cache_status) DO UPDATE SET \
    requests = requests + excluded.requests, upstream = upstream + excluded.upstream, \
    fallbacks = fallbacks + excluded.fallbacks, prompt_tokens = prompt_tokens + excluded.prompt_tokens, \
    completion_tokens = completion_tokens + excluded.completion_tokens, \
    total_tokens = total_tokens + excluded.total_tokens, cost_micros = cost_micros + excluded.cost_micros, \
    saved_micros = saved_micros + excluded.saved_micros, unpriced = unpriced + excluded.unpriced, \
    latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum, \
    ttft_ms_sum = ttft_ms_sum + excluded.ttft_ms_sum, ttft_count = ttft_count + excluded.ttft_count";
pub const DELETE_COMPACTED_SQL: &str =
    "DELETE FROM usage_rollup WHERE span = 3600000 AND bucket < ?1";

/// Hour aggregates before this UTC day start are compacted into days.
pub fn compaction_cutoff(r: &Retention, now_ms: u64) -> u64 {
    let c = retention_cutoff(r, now_ms);
    c - c % DAY_MS
}

/// Attempts of the ledger rows being deleted (`?1` = the boundary).
pub const DELETE_ATTEMPTS_SQL: &str = "DELETE FROM attempts WHERE request_id IN \
    (SELECT request_id FROM requests WHERE created_at <= ?1)";
pub const DELETE_REQUESTS_SQL: &str = "DELETE FROM requests WHERE created_at <= ?1";
/// What hangs off ledger rows goes with them, in the same batch and by the
/// same boundary: guardrail decisions, quality samples (the user's request;
/// the reference call is a ledger row of its own) and semantic shadow
/// would-be hits. Each table has its own `created_at`, the request's time.
pub const DELETE_DEPENDENTS_SQL: [&str; 3] = [
    "DELETE FROM guardrail_events WHERE created_at <= ?1",
    "DELETE FROM quality_samples WHERE created_at <= ?1",
    "DELETE FROM semantic_shadow WHERE created_at <= ?1",
];
/// The `created_at` of the `?2`-th oldest row before the cutoff `?1`
/// (0-based offset): one batch's boundary.
pub const BATCH_BOUNDARY_SQL: &str = "SELECT created_at AS t FROM requests WHERE created_at < ?1 \
    ORDER BY created_at LIMIT 1 OFFSET ?2";
/// The newest row before the cutoff: the boundary when fewer than a batch remain.
pub const LAST_BEFORE_SQL: &str = "SELECT MAX(created_at) AS t FROM requests WHERE created_at < ?1";

/// The retention cutoff: rows created before it are rolled up.
pub fn retention_cutoff(r: &Retention, now_ms: u64) -> u64 {
    now_ms.saturating_sub(u64::from(r.max_age_days) * DAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The retention delete ranges over `created_at` through an index
    /// (`requests_latency_cover` since migration 0015 dropped the narrower
    /// `requests_by_time`), never a scan of the whole ledger.
    #[test]
    fn retention_delete_uses_a_created_at_index() {
        let db = crate::test_db::migrated();
        let plan: Vec<String> = db
            .prepare(&format!("EXPLAIN QUERY PLAN {DELETE_REQUESTS_SQL}"))
            .unwrap()
            .query_map([1_000], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX requests_latency_cover (created_at<?)")),
            "{plan:?}"
        );
        let gone: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'requests_by_time'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(gone, 0);
    }

    /// The retention batch against the real schema: everything at or before
    /// the boundary goes, ledger rows and what hangs off them; nothing after.
    #[test]
    fn retention_deletes_ledger_rows_and_their_dependents_up_to_the_boundary() {
        let db = crate::test_db::migrated();
        for (id, at) in [("req_old", 1_000), ("req_new", 5_000)] {
            db.execute_batch(&format!(
                "INSERT INTO requests (request_id, created_at, key_id, endpoint, status, outcome, usage_source, latency_ms, attempt_count) \
                   VALUES ('{id}', {at}, 'k', 'chat.completions', 200, 'ok', 'provider', 1, 1);
                 INSERT INTO attempts (request_id, attempt, provider, model, started_at, latency_ms, outcome) \
                   VALUES ('{id}', 1, 'openai', 'gpt-4o-mini', {at}, 1, 'ok');
                 INSERT INTO guardrail_events (request_id, seq, stage, detector, action, count, created_at) \
                   VALUES ('{id}', 0, 'input', 'email', 'redact', 1, {at});
                 INSERT INTO quality_samples (request_id, created_at, key_id, route, provider, model, reference, \
                   reference_request_id, reference_latency_ms) \
                   VALUES ('{id}', {at}, 'k', 'r', 'openai', 'gpt-4o-mini', 'openai/gpt-4o', '{id}_ref', 5);
                 INSERT INTO semantic_shadow (request_id, key_id, created_at, model, candidate_id, similarity, threshold, verdict) \
                   VALUES ('{id}', 'k', {at}, 'm', 'c', 0.95, 0.92, 'would_hit');"
            ))
            .unwrap();
        }
        let boundary = 1_000;
        let mut statements = vec![DELETE_ATTEMPTS_SQL];
        statements.extend(DELETE_DEPENDENTS_SQL);
        statements.push(DELETE_REQUESTS_SQL);
        for sql in statements {
            db.execute(sql, [boundary]).unwrap();
        }
        for table in [
            "requests",
            "attempts",
            "guardrail_events",
            "quality_samples",
            "semantic_shadow",
        ] {
            let left: Vec<String> = db
                .prepare(&format!("SELECT request_id FROM {table}"))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(left, ["req_new"], "{table}");
        }
    }

    #[test]
    fn request_logs_default_to_failures_only() {
        let l: Logging = serde_json::from_str("{}").unwrap();
        assert_eq!(l.requests, RequestLogs::Errors);
        assert!(!l.requests.logs(200) && !l.requests.logs(399));
        assert!(l.requests.logs(400) && l.requests.logs(502));
        let all: Logging = serde_json::from_str(r#"{"requests":"all"}"#).unwrap();
        assert!(all.requests.logs(200));
        let off: Logging = serde_json::from_str(r#"{"requests":"off"}"#).unwrap();
        assert!(!off.requests.logs(500));
        assert!(serde_json::from_str::<Logging>(r#"{"requests":"some"}"#).is_err());
    }

    fn metrics(requests: u64, ok: u64, upstream: u64, fallbacks: u64, cost: u64) -> Metrics {
        Metrics {
            requests,
            ok,
            upstream,
            fallbacks,
            cost_micros: cost,
            ..Default::default()
        }
    }

    fn cfg() -> OpsAlerts {
        OpsAlerts {
            daily_spend_usd: Some(100.0),
            error_rate_pct: Some(5.0),
            p99_latency_ms: Some(3000),
            fallback_rate_pct: Some(20.0),
            window_minutes: 60,
            min_requests: 20,
            ..Default::default()
        }
    }

    const NOW: u64 = 20_000 * DAY_MS + 5 * 3_600_000 + 1_234;

    #[test]
    fn windows_are_aligned() {
        let w = windows(NOW, 60);
        assert_eq!(w.day_start_ms, 20_000 * DAY_MS);
        assert_eq!(w.window_start_ms, 20_000 * DAY_MS + 5 * 3_600_000);
        assert_eq!(w.trailing_from_ms, NOW - 3_600_000);
    }

    #[test]
    fn nothing_fires_below_thresholds() {
        let p = Percentiles {
            p50: Some(10),
            p95: Some(100),
            p99: Some(3000),
        };
        // 5 % errors exactly, 20 % fallbacks exactly, p99 at the limit, $100 exactly.
        let alerts = evaluate(
            &cfg(),
            NOW,
            &metrics(1, 1, 0, 0, 100_000_000),
            &metrics(100, 95, 100, 20, 0),
            &p,
        );
        assert!(alerts.is_empty(), "{alerts:?}");
    }

    #[test]
    fn each_threshold_fires_once_crossed() {
        let p = Percentiles {
            p50: Some(10),
            p95: Some(100),
            p99: Some(3001),
        };
        let alerts = evaluate(
            &cfg(),
            NOW,
            &metrics(1, 1, 0, 0, 100_000_001),
            &metrics(100, 94, 50, 11, 0),
            &p,
        );
        let names: Vec<&str> = alerts.iter().map(|a| a.condition).collect();
        assert_eq!(
            names,
            vec!["daily_spend", "error_rate", "fallback_rate", "p99_latency"]
        );
        let spend = &alerts[0];
        assert_eq!(spend.window_start_ms, 20_000 * DAY_MS);
        assert!((spend.value - 100.000_001).abs() < 1e-9);
        let err = &alerts[1];
        assert!((err.value - 6.0).abs() < 1e-9);
        assert_eq!(err.window_start_ms, windows(NOW, 60).window_start_ms);
        assert_eq!(err.threshold_key(), 5000);
        assert!((alerts[2].value - 22.0).abs() < 1e-9);
        assert_eq!(alerts[3].value, 3001.0);
    }

    #[test]
    fn rates_need_enough_requests() {
        let p = Percentiles {
            p99: Some(99_999),
            ..Default::default()
        };
        let alerts = evaluate(
            &cfg(),
            NOW,
            &Metrics::default(),
            &metrics(19, 0, 19, 19, 0),
            &p,
        );
        assert!(alerts.is_empty());
        let unset = OpsAlerts::default();
        assert!(evaluate(
            &unset,
            NOW,
            &metrics(1, 0, 1, 1, u64::MAX / 2),
            &metrics(100, 0, 100, 100, 0),
            &p
        )
        .is_empty());
    }

    #[test]
    fn weekly_summary_on_its_day_only() {
        // 1970-01-05 was a Monday.
        assert_eq!(weekday_index(4 * DAY_MS), 0);
        assert_eq!(weekday_index(0), 3);
        let monday = 4 * DAY_MS + 7 * DAY_MS * 2900 + 3_600_000;
        let c = OpsAlerts::default();
        let w = weekly_due(&c, monday).unwrap();
        assert_eq!(w.key_ms, monday - 3_600_000);
        assert_eq!(w.to_ms, monday + 1);
        assert_eq!(w.to_ms - w.from_ms, 7 * DAY_MS + 1);
        // Later runs that day have the same key: sent once.
        assert_eq!(weekly_due(&c, monday + 3_600_000).unwrap().key_ms, w.key_ms);
        assert_eq!(weekly_due(&c, monday + DAY_MS), None);
        let off = OpsAlerts {
            weekly_summary: false,
            ..Default::default()
        };
        assert_eq!(weekly_due(&off, monday), None);
        let friday = OpsAlerts {
            weekly_summary_day: Weekday::Friday,
            ..Default::default()
        };
        assert!(weekly_due(&friday, monday + 4 * DAY_MS).is_some());
    }

    #[test]
    fn weekly_payload_has_the_summary() {
        let t = Metrics {
            requests: 10,
            ok: 8,
            upstream_error: 2,
            cost_micros: 2_500_000,
            saved_micros: 500_000,
            cache_hits: 3,
            ..Default::default()
        };
        let v = weekly_payload(1, 2, &t, vec![consumer("k".into(), &t)], vec![], 3);
        assert_eq!(v["type"], "weekly_summary");
        assert_eq!(v["spend_usd"], 2.5);
        assert_eq!(v["cache"]["saved_usd"], 0.5);
        assert_eq!(v["errors"]["total"], 2);
        assert_eq!(v["top_keys"][0]["cost_usd"], 2.5);
    }

    #[test]
    fn validation() {
        assert!(validate(
            &OpsAlerts::default(),
            &Retention::default(),
            &Logging::default()
        )
        .is_empty());
        let bad = OpsAlerts {
            daily_spend_usd: Some(-1.0),
            error_rate_pct: Some(101.0),
            p99_latency_ms: Some(0),
            window_minutes: 7,
            min_requests: 0,
            ..Default::default()
        };
        let r = Retention {
            max_age_days: 5000,
            batch_rows: 1,
            max_batches: 0,
        };
        assert_eq!(
            validate(
                &bad,
                &r,
                &Logging {
                    bodies: true,
                    max_body_chars: 1,
                    ..Logging::default()
                }
            )
            .len(),
            9
        );
        assert_eq!(
            retention_cutoff(&Retention::default(), 100 * DAY_MS),
            10 * DAY_MS
        );
        assert_eq!(
            retention_cutoff(
                &Retention {
                    max_age_days: 0,
                    ..Default::default()
                },
                5
            ),
            5
        );
    }
}
