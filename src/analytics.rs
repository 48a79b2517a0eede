//! The usage API's pure half: query parameters, the SQL (constant fragments,
//! every value bound), the metrics every view shares, and exact
//! percentiles from a value histogram. `handlers/usage.rs` runs the statements.
//!
//! Totals, series and groups read `usage_rollup` (migration 0010): one row
//! per hour (per day once compacted by the retention job) and grouping,
//! added to by every ledger write. They are hour-granular: a range covers
//! the buckets that start in `[from rounded down to the hour, to)`. The
//! latency and TTFT percentiles, the most expensive requests and the
//! per-user grouping need single rows and read the retained ledger
//! (`requests`) with the exact range.

use serde::{Deserialize, Serialize};

use crate::ledger::SqlValue;

pub const HOUR_MS: u64 = 3_600_000;
pub const DAY_MS: u64 = 86_400_000;
/// Longest range one query may cover (a year and a bit).
pub const MAX_RANGE_MS: u64 = 400 * DAY_MS;
/// Most points a series may have.
pub const MAX_POINTS: u64 = 2_000;
/// Most groups a query returns before the cut to `limit`.
pub const GROUP_SCAN_LIMIT: u32 = 1_000;

/// What a usage query is filtered by.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filter {
    pub from_ms: u64,
    pub to_ms: u64,
    pub key_id: Option<String>,
    pub provider: Option<String>,
    /// `provider/model` as the groups name it (split at the first `/`).
    pub model: Option<String>,
    pub feature: Option<String>,
}

/// A grouping dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dimension {
    Key,
    Team,
    User,
    Feature,
    Provider,
    Model,
}

impl Dimension {
    pub const ALL: [Self; 6] = [
        Self::Key,
        Self::Team,
        Self::User,
        Self::Feature,
        Self::Provider,
        Self::Model,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Team => "team",
            Self::User => "user",
            Self::Feature => "feature",
            Self::Provider => "provider",
            Self::Model => "model",
        }
    }

    /// The group expression over `requests`.
    fn ledger_expr(self) -> &'static str {
        match self {
            Self::Key => "key_id",
            Self::Team => "COALESCE(CAST(json_extract(metadata, '$.team') AS TEXT), '')",
            Self::User => "COALESCE(CAST(json_extract(metadata, '$.user') AS TEXT), '')",
            Self::Feature => "COALESCE(CAST(json_extract(metadata, '$.feature') AS TEXT), '')",
            Self::Provider => "COALESCE(provider, '')",
            Self::Model => "COALESCE(provider || '/' || model_used, '')",
        }
    }

    /// The same expression over `usage_rollup`; `None` for `user`, which the
    /// aggregates do not keep (too many values), so it reads the ledger.
    fn rollup_expr(self) -> Option<&'static str> {
        match self {
            Self::Key => Some("key_id"),
            Self::Team => Some("team"),
            Self::User => None,
            Self::Feature => Some("feature"),
            Self::Provider => Some("provider"),
            Self::Model => {
                Some("CASE WHEN provider = '' THEN '' ELSE provider || '/' || model END")
            }
        }
    }
}

/// Time bucket of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            _ => None,
        }
    }

    pub fn ms(self) -> u64 {
        match self {
            Self::Hour => HOUR_MS,
            Self::Day => DAY_MS,
        }
    }
}

/// A parsed usage query: the filter plus what each view needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub filter: Filter,
    pub bucket: Bucket,
    pub by: Dimension,
    pub limit: u32,
}

fn bad(param: &str, why: &str) -> (String, String) {
    (param.to_owned(), why.to_owned())
}

/// Parses the query string of any usage view. `now_ms` fills the defaults:
/// the last 24 hours, hourly buckets, grouped by model, 20 rows.
/// Errors are `(param, message)`.
pub fn parse_query<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    now_ms: u64,
) -> Result<Query, (String, String)> {
    let mut from = None;
    let mut to = None;
    let mut q = Query {
        filter: Filter::default(),
        bucket: Bucket::Hour,
        by: Dimension::Model,
        limit: 20,
    };
    let text = |param: &str, v: &str| -> Result<Option<String>, (String, String)> {
        if v.is_empty() {
            return Ok(None);
        }
        if v.len() > 256 || v.chars().any(char::is_control) {
            return Err(bad(param, "must be at most 256 printable characters"));
        }
        Ok(Some(v.to_owned()))
    };
    for (k, v) in pairs {
        match k {
            "from" => {
                from = Some(
                    v.parse::<u64>()
                        .map_err(|_| bad("from", "must be ms since the epoch"))?,
                )
            }
            "to" => {
                to = Some(
                    v.parse::<u64>()
                        .map_err(|_| bad("to", "must be ms since the epoch"))?,
                )
            }
            "key_id" => q.filter.key_id = text("key_id", v)?,
            "provider" => q.filter.provider = text("provider", v)?,
            "model" => q.filter.model = text("model", v)?,
            "feature" => q.filter.feature = text("feature", v)?,
            "bucket" => {
                q.bucket = Bucket::parse(v).ok_or_else(|| bad("bucket", "must be hour or day"))?;
            }
            "by" => {
                q.by = Dimension::parse(v).ok_or_else(|| {
                    bad("by", "must be key, team, user, feature, provider or model")
                })?;
            }
            "limit" => {
                q.limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| bad("limit", "must be an integer from 1 to 100"))?;
            }
            other => return Err(bad(other, "is not a usage query parameter")),
        }
    }
    let to = to.unwrap_or(now_ms.saturating_add(1));
    let from = from.unwrap_or(to.saturating_sub(DAY_MS));
    if from >= to {
        return Err(bad("from", "must be before 'to'"));
    }
    if to - from > MAX_RANGE_MS {
        return Err(bad("from", "the range may cover at most 400 days"));
    }
    if (to - from).div_ceil(q.bucket.ms()) > MAX_POINTS {
        return Err(bad(
            "bucket",
            "too many points; use bucket=day for long ranges",
        ));
    }
    q.filter.from_ms = from;
    q.filter.to_ms = to;
    Ok(q)
}

/// Sums every view reports, from either source (column aliases are shared).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metrics {
    #[serde(deserialize_with = "number")]
    pub requests: u64,
    #[serde(deserialize_with = "number")]
    pub ok: u64,
    #[serde(deserialize_with = "number")]
    pub rejected: u64,
    #[serde(deserialize_with = "number")]
    pub upstream_error: u64,
    #[serde(deserialize_with = "number")]
    pub upstream_truncated: u64,
    #[serde(deserialize_with = "number")]
    pub client_aborted: u64,
    #[serde(deserialize_with = "number")]
    pub status_4xx: u64,
    #[serde(deserialize_with = "number")]
    pub status_5xx: u64,
    #[serde(deserialize_with = "number")]
    pub rate_limited: u64,
    #[serde(deserialize_with = "number")]
    pub budget_refused: u64,
    #[serde(deserialize_with = "number")]
    pub cache_hits: u64,
    #[serde(deserialize_with = "number")]
    pub semantic_hits: u64,
    #[serde(deserialize_with = "number")]
    pub upstream: u64,
    #[serde(deserialize_with = "number")]
    pub fallbacks: u64,
    #[serde(deserialize_with = "number")]
    pub prompt_tokens: u64,
    #[serde(deserialize_with = "number")]
    pub completion_tokens: u64,
    #[serde(deserialize_with = "number")]
    pub total_tokens: u64,
    #[serde(deserialize_with = "number")]
    pub cost_micros: u64,
    #[serde(deserialize_with = "number")]
    pub saved_micros: u64,
    #[serde(deserialize_with = "number")]
    pub unpriced: u64,
    #[serde(deserialize_with = "number")]
    pub latency_ms_sum: u64,
    #[serde(deserialize_with = "number")]
    pub ttft_ms_sum: u64,
    #[serde(deserialize_with = "number")]
    pub ttft_count: u64,
}

impl Metrics {
    /// Field-wise sum.
    pub fn add(&mut self, o: &Self) {
        let Self {
            requests,
            ok,
            rejected,
            upstream_error,
            upstream_truncated,
            client_aborted,
            status_4xx,
            status_5xx,
            rate_limited,
            budget_refused,
            cache_hits,
            semantic_hits,
            upstream,
            fallbacks,
            prompt_tokens,
            completion_tokens,
            total_tokens,
            cost_micros,
            saved_micros,
            unpriced,
            latency_ms_sum,
            ttft_ms_sum,
            ttft_count,
        } = o;
        self.requests += requests;
        self.ok += ok;
        self.rejected += rejected;
        self.upstream_error += upstream_error;
        self.upstream_truncated += upstream_truncated;
        self.client_aborted += client_aborted;
        self.status_4xx += status_4xx;
        self.status_5xx += status_5xx;
        self.rate_limited += rate_limited;
        self.budget_refused += budget_refused;
        self.cache_hits += cache_hits;
        self.semantic_hits += semantic_hits;
        self.upstream += upstream;
        self.fallbacks += fallbacks;
        self.prompt_tokens += prompt_tokens;
        self.completion_tokens += completion_tokens;
        self.total_tokens += total_tokens;
        self.cost_micros += cost_micros;
        self.saved_micros += saved_micros;
        self.unpriced += unpriced;
        self.latency_ms_sum += latency_ms_sum;
        self.ttft_ms_sum += ttft_ms_sum;
        self.ttft_count += ttft_count;
    }

    /// Requests that did not end `ok`.
    pub fn errors(&self) -> u64 {
        self.requests.saturating_sub(self.ok)
    }

    /// The rates and averages the API shows beside the sums.
    pub fn derived(&self) -> Derived {
        Derived {
            error_rate: ratio(self.errors(), self.requests),
            cache_hit_rate: ratio(self.cache_hits, self.requests),
            semantic_hit_rate: ratio(self.semantic_hits, self.requests),
            fallback_rate: ratio(self.fallbacks, self.upstream),
            latency_ms_avg: ratio(self.latency_ms_sum, self.requests),
            ttft_ms_avg: ratio(self.ttft_ms_sum, self.ttft_count),
        }
    }
}

/// `num / den`, `None` for an empty denominator.
#[expect(clippy::cast_precision_loss, reason = "counts far below 2^53")]
pub fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Derived {
    /// Requests not `ok` over all requests.
    pub error_rate: Option<f64>,
    /// Exact-cache hits over all requests.
    pub cache_hit_rate: Option<f64>,
    /// Semantic-cache hits over all requests.
    pub semantic_hit_rate: Option<f64>,
    /// Requests that tried more than one provider/model over those that
    /// made an upstream attempt.
    pub fallback_rate: Option<f64>,
    pub latency_ms_avg: Option<f64>,
    pub ttft_ms_avg: Option<f64>,
}

/// Nearest-rank percentiles (p in 0–100) of a histogram of `(value, count)`.
pub fn percentiles(hist: &[(u64, u64)], ps: &[f64]) -> Vec<Option<u64>> {
    let mut sorted: Vec<(u64, u64)> = hist.iter().copied().filter(|(_, n)| *n > 0).collect();
    sorted.sort_unstable_by_key(|(v, _)| *v);
    let total: u64 = sorted.iter().map(|(_, n)| n).sum();
    ps.iter()
        .map(|p| {
            if total == 0 {
                return None;
            }
            #[expect(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a rank between 1 and total"
            )]
            let rank = ((p / 100.0 * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            sorted.iter().find_map(|(v, n)| {
                seen += n;
                (seen >= rank).then_some(*v)
            })
        })
        .collect()
}

/// p50, p95 and p99 of a histogram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    pub p99: Option<u64>,
}

impl Percentiles {
    pub fn of(hist: &[(u64, u64)]) -> Self {
        let v = percentiles(hist, &[50.0, 95.0, 99.0]);
        Self {
            p50: v.first().copied().flatten(),
            p95: v.get(1).copied().flatten(),
            p99: v.get(2).copied().flatten(),
        }
    }
}

/// The metric columns over `requests` (aliases match [`Metrics`]).
const LEDGER_METRICS: &str = "COUNT(*) AS requests, \
    COALESCE(SUM(outcome = 'ok'), 0) AS ok, \
    COALESCE(SUM(outcome = 'rejected'), 0) AS rejected, \
    COALESCE(SUM(outcome = 'upstream_error'), 0) AS upstream_error, \
    COALESCE(SUM(outcome = 'upstream_truncated'), 0) AS upstream_truncated, \
    COALESCE(SUM(outcome = 'client_aborted'), 0) AS client_aborted, \
    COALESCE(SUM(status >= 400 AND status < 500), 0) AS status_4xx, \
    COALESCE(SUM(status >= 500), 0) AS status_5xx, \
    COALESCE(SUM(status = 429), 0) AS rate_limited, \
    COALESCE(SUM(status = 402), 0) AS budget_refused, \
    COALESCE(SUM(cache_status = 'hit'), 0) AS cache_hits, \
    COALESCE(SUM(cache_status = 'semantic_hit'), 0) AS semantic_hits, \
    COALESCE(SUM(attempt_count > 0), 0) AS upstream, \
    COALESCE(SUM(fallback), 0) AS fallbacks, \
    COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens, \
    COALESCE(SUM(completion_tokens), 0) AS completion_tokens, \
    COALESCE(SUM(total_tokens), 0) AS total_tokens, \
    COALESCE(SUM(cost_micros), 0) AS cost_micros, \
    COALESCE(SUM(saved_micros), 0) AS saved_micros, \
    COALESCE(SUM(cost_micros IS NULL), 0) AS unpriced, \
    COALESCE(SUM(latency_ms), 0) AS latency_ms_sum, \
    COALESCE(SUM(ttft_ms), 0) AS ttft_ms_sum, \
    COUNT(ttft_ms) AS ttft_count";

/// The same columns over `usage_rollup`.
const ROLLUP_METRICS: &str = "COALESCE(SUM(requests), 0) AS requests, \
    COALESCE(SUM(CASE WHEN outcome = 'ok' THEN requests END), 0) AS ok, \
    COALESCE(SUM(CASE WHEN outcome = 'rejected' THEN requests END), 0) AS rejected, \
    COALESCE(SUM(CASE WHEN outcome = 'upstream_error' THEN requests END), 0) AS upstream_error, \
    COALESCE(SUM(CASE WHEN outcome = 'upstream_truncated' THEN requests END), 0) AS upstream_truncated, \
    COALESCE(SUM(CASE WHEN outcome = 'client_aborted' THEN requests END), 0) AS client_aborted, \
    COALESCE(SUM(CASE WHEN status >= 400 AND status < 500 THEN requests END), 0) AS status_4xx, \
    COALESCE(SUM(CASE WHEN status >= 500 THEN requests END), 0) AS status_5xx, \
    COALESCE(SUM(CASE WHEN status = 429 THEN requests END), 0) AS rate_limited, \
    COALESCE(SUM(CASE WHEN status = 402 THEN requests END), 0) AS budget_refused, \
    COALESCE(SUM(CASE WHEN cache_status = 'hit' THEN requests END), 0) AS cache_hits, \
    COALESCE(SUM(CASE WHEN cache_status = 'semantic_hit' THEN requests END), 0) AS semantic_hits, \
    COALESCE(SUM(upstream), 0) AS upstream, \
    COALESCE(SUM(fallbacks), 0) AS fallbacks, \
    COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens, \
    COALESCE(SUM(completion_tokens), 0) AS completion_tokens, \
    COALESCE(SUM(total_tokens), 0) AS total_tokens, \
    COALESCE(SUM(cost_micros), 0) AS cost_micros, \
    COALESCE(SUM(saved_micros), 0) AS saved_micros, \
    COALESCE(SUM(unpriced), 0) AS unpriced, \
    COALESCE(SUM(latency_ms_sum), 0) AS latency_ms_sum, \
    COALESCE(SUM(ttft_ms_sum), 0) AS ttft_ms_sum, \
    COALESCE(SUM(ttft_count), 0) AS ttft_count";

/// A statement: constant SQL text and the values for its `?N` placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub values: Vec<SqlValue>,
}

/// `WHERE …` over `requests` for a filter. Only fixed fragments are joined;
/// every value is bound (placeholders numbered after `first`).
fn ledger_where(f: &Filter, values: &mut Vec<SqlValue>) -> String {
    let mut push = |v: SqlValue| {
        values.push(v);
        values.len()
    };
    let from = push(int(f.from_ms));
    let to = push(int(f.to_ms));
    let mut sql = format!("created_at >= ?{from} AND created_at < ?{to}");
    if let Some(k) = &f.key_id {
        let n = push(SqlValue::Text(k.clone()));
        sql.push_str(&format!(" AND key_id = ?{n}"));
    }
    let (provider, model) = split_model(f);
    if let Some(p) = provider {
        let n = push(SqlValue::Text(p));
        sql.push_str(&format!(" AND provider = ?{n}"));
    }
    if let Some(m) = model {
        let n = push(SqlValue::Text(m));
        sql.push_str(&format!(" AND model_used = ?{n}"));
    }
    if let Some(feat) = &f.feature {
        let n = push(SqlValue::Text(feat.clone()));
        sql.push_str(&format!(" AND json_extract(metadata, '$.feature') = ?{n}"));
    }
    sql
}

/// `WHERE …` over `usage_rollup`: the buckets that start in the range, from
/// the hour the range starts in (aggregates are hour-granular; compacted
/// days count from their start).
fn rollup_where(f: &Filter, values: &mut Vec<SqlValue>) -> String {
    let mut push = |v: SqlValue| {
        values.push(v);
        values.len()
    };
    let from = push(int(f.from_ms - f.from_ms % HOUR_MS));
    let to = push(int(f.to_ms));
    let mut sql = format!("bucket >= ?{from} AND bucket < ?{to}");
    if let Some(k) = &f.key_id {
        let n = push(SqlValue::Text(k.clone()));
        sql.push_str(&format!(" AND key_id = ?{n}"));
    }
    let (provider, model) = split_model(f);
    if let Some(p) = provider {
        let n = push(SqlValue::Text(p));
        sql.push_str(&format!(" AND provider = ?{n}"));
    }
    if let Some(m) = model {
        let n = push(SqlValue::Text(m));
        sql.push_str(&format!(" AND model = ?{n}"));
    }
    if let Some(feat) = &f.feature {
        let n = push(SqlValue::Text(feat.clone()));
        sql.push_str(&format!(" AND feature = ?{n}"));
    }
    sql
}

/// The provider and model to filter on: `model=provider/model` names both
/// (provider names never contain `/`); `provider=` alone names one.
fn split_model(f: &Filter) -> (Option<String>, Option<String>) {
    match f.model.as_deref().and_then(|m| m.split_once('/')) {
        Some((p, m)) => (Some(p.to_owned()), Some(m.to_owned())),
        None => (f.provider.clone(), f.model.clone()),
    }
}

fn int(v: u64) -> SqlValue {
    SqlValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Totals over the aggregates.
pub fn totals_sql(f: &Filter) -> Statement {
    let mut v = Vec::new();
    let w = rollup_where(f, &mut v);
    Statement {
        sql: format!("SELECT {ROLLUP_METRICS} FROM usage_rollup WHERE {w}"),
        values: v,
    }
}

/// Exact histograms of latency and of time to first token (retained ledger).
pub fn histogram_sql(f: &Filter) -> [Statement; 2] {
    let mut lv = Vec::new();
    let lw = ledger_where(f, &mut lv);
    [
        Statement {
            sql: format!(
                "SELECT latency_ms AS v, COUNT(*) AS n FROM requests WHERE {lw} GROUP BY latency_ms"
            ),
            values: lv.clone(),
        },
        Statement {
            sql: format!(
                "SELECT ttft_ms AS v, COUNT(*) AS n FROM requests WHERE {lw} AND ttft_ms IS NOT NULL GROUP BY ttft_ms"
            ),
            values: lv,
        },
    ]
}

/// A time series over the aggregates; each row `t` (bucket start) + metrics.
pub fn series_sql(f: &Filter, bucket: Bucket) -> Statement {
    let mut v = Vec::new();
    let w = rollup_where(f, &mut v);
    // D1 binds JS numbers as REAL: integer division needs the cast.
    v.push(int(bucket.ms()));
    let b = v.len();
    Statement {
        sql: format!(
            "SELECT (bucket / CAST(?{b} AS INTEGER)) * CAST(?{b} AS INTEGER) AS t, {ROLLUP_METRICS} \
             FROM usage_rollup WHERE {w} GROUP BY t ORDER BY t"
        ),
        values: v,
    }
}

/// Groups by a dimension, most expensive first; each row `g` + metrics.
/// `user` reads the ledger, everything else the aggregates.
pub fn groups_sql(f: &Filter, by: Dimension) -> Statement {
    let mut v = Vec::new();
    let sql = match by.rollup_expr() {
        Some(e) => {
            let w = rollup_where(f, &mut v);
            format!(
                "SELECT {e} AS g, {ROLLUP_METRICS} FROM usage_rollup WHERE {w} GROUP BY g \
                 ORDER BY cost_micros DESC, requests DESC LIMIT {GROUP_SCAN_LIMIT}"
            )
        }
        None => {
            let w = ledger_where(f, &mut v);
            let e = by.ledger_expr();
            format!(
                "SELECT {e} AS g, {LEDGER_METRICS} FROM requests WHERE {w} GROUP BY g \
                 ORDER BY cost_micros DESC, requests DESC LIMIT {GROUP_SCAN_LIMIT}"
            )
        }
    };
    Statement { sql, values: v }
}

/// The most expensive requests in range: ledger metadata only (the ledger
/// never holds prompt or answer text).
pub fn top_sql(f: &Filter, limit: u32) -> Statement {
    let mut v = Vec::new();
    let w = ledger_where(f, &mut v);
    v.push(SqlValue::Int(i64::from(limit)));
    let n = v.len();
    Statement {
        sql: format!(
            "SELECT request_id, created_at, key_id, endpoint, model_requested, provider, model_used, \
             stream, status, outcome, error_code, cache_status, prompt_tokens, completion_tokens, \
             total_tokens, cost_micros, saved_micros, latency_ms, ttft_ms, attempt_count, fallback, metadata \
             FROM requests WHERE {w} AND cost_micros IS NOT NULL ORDER BY cost_micros DESC LIMIT ?{n}"
        ),
        values: v,
    }
}

/// One row of a series or group result: its key and metrics.
#[derive(Debug, Clone, Deserialize)]
pub struct KeyedRow<K: KeyValue> {
    #[serde(alias = "t", alias = "g", deserialize_with = "K::deserialize_key")]
    pub k: K,
    #[serde(flatten)]
    pub m: Metrics,
}

/// A series or group key as D1 returns it.
pub trait KeyValue: Sized {
    fn deserialize_key<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

impl KeyValue for u64 {
    fn deserialize_key<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        number(d)
    }
}

impl KeyValue for String {
    fn deserialize_key<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Metadata values may be numbers or booleans; NULL groups are ''.
        Ok(match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        })
    }
}

/// A non-negative integer that D1 may hand back as a JS number (an `f64`
/// once buffered by serde); NULL reads as 0.
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    match v {
        None | Some(serde_json::Value::Null) => Ok(0),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0)
                    .map(|f| {
                        #[expect(
                            clippy::cast_possible_truncation,
                            clippy::cast_sign_loss,
                            reason = "checked: a non-negative integral f64"
                        )]
                        let u = f as u64;
                        u
                    })
            })
            .ok_or_else(|| serde::de::Error::custom("expected a non-negative integer")),
        Some(_) => Err(serde::de::Error::custom("expected a number")),
    }
}

/// Merges keyed rows from both sources (sums per key), in key order.
pub fn merge_keyed<K: KeyValue + Ord + Clone>(
    a: Vec<KeyedRow<K>>,
    b: Vec<KeyedRow<K>>,
) -> Vec<(K, Metrics)> {
    let mut map = std::collections::BTreeMap::<K, Metrics>::new();
    for r in a.into_iter().chain(b) {
        map.entry(r.k).or_default().add(&r.m);
    }
    map.into_iter().collect()
}

/// Groups sorted by cost (then requests) and cut to `limit`.
pub fn top_groups(mut groups: Vec<(String, Metrics)>, limit: u32) -> Vec<(String, Metrics)> {
    groups.sort_by(|(ka, a), (kb, b)| {
        b.cost_micros
            .cmp(&a.cost_micros)
            .then(b.requests.cmp(&a.requests))
            .then(ka.cmp(kb))
    });
    groups.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    groups
}

/// D1 hands numbers back as JS numbers; counts here are integers.
pub fn histogram_rows(rows: &[serde_json::Value]) -> Vec<(u64, u64)> {
    rows.iter()
        .filter_map(|r| {
            let v = r.get("v")?.as_f64()?;
            let n = r.get("n")?.as_f64()?;
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "non-negative integers stored by the gateway"
            )]
            Some((v.max(0.0) as u64, n.max(0.0) as u64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Result<Query, (String, String)> {
        let pairs: Vec<(&str, &str)> = s
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect();
        parse_query(pairs, 10 * DAY_MS)
    }

    #[test]
    fn defaults_are_the_last_day_by_hour() {
        let q = q("").unwrap();
        assert_eq!(q.filter.to_ms, 10 * DAY_MS + 1);
        assert_eq!(q.filter.from_ms, 9 * DAY_MS + 1);
        assert_eq!(q.bucket, Bucket::Hour);
        assert_eq!(q.by, Dimension::Model);
        assert_eq!(q.limit, 20);
    }

    #[test]
    fn rejects_bad_parameters() {
        assert_eq!(q("from=5&to=5").unwrap_err().0, "from");
        assert_eq!(q("from=x").unwrap_err().0, "from");
        assert_eq!(q("bucket=minute").unwrap_err().0, "bucket");
        assert_eq!(q("by=prompt").unwrap_err().0, "by");
        assert_eq!(q("limit=0").unwrap_err().0, "limit");
        assert_eq!(q("limit=101").unwrap_err().0, "limit");
        assert_eq!(q("sql=1").unwrap_err().0, "sql");
        assert_eq!(
            q(&format!("from=0&to={}", 401 * DAY_MS)).unwrap_err().0,
            "from"
        );
        // 200 days by hour is 4,800 points.
        assert_eq!(
            q(&format!("from=0&to={}&bucket=hour", 200 * DAY_MS))
                .unwrap_err()
                .0,
            "bucket"
        );
        assert!(q(&format!("from=0&to={}&bucket=day", 200 * DAY_MS)).is_ok());
        assert_eq!(
            q("key_id=a%0Ab").map(|q| q.filter.key_id),
            Ok(Some("a%0Ab".into()))
        );
        assert_eq!(q("key_id=a\nb").unwrap_err().0, "key_id");
    }

    #[test]
    fn filters_are_bound_never_spliced() {
        let f = Filter {
            from_ms: HOUR_MS + 5,
            to_ms: 2 * HOUR_MS,
            key_id: Some("k'; DROP TABLE requests; --".into()),
            provider: None,
            model: Some("openrouter/anthropic/claude".into()),
            feature: Some("search".into()),
        };
        let t = totals_sql(&f);
        assert!(!t.sql.contains("DROP"));
        let h = i64::try_from(HOUR_MS).unwrap();
        assert_eq!(
            t.values,
            vec![
                // Aggregates are hour-granular: from the hour the range starts in.
                SqlValue::Int(h),
                SqlValue::Int(2 * h),
                SqlValue::Text("k'; DROP TABLE requests; --".into()),
                SqlValue::Text("openrouter".into()),
                SqlValue::Text("anthropic/claude".into()),
                SqlValue::Text("search".into()),
            ]
        );
        assert!(t.sql.ends_with(
            "FROM usage_rollup WHERE bucket >= ?1 AND bucket < ?2 AND key_id = ?3 AND provider = ?4 \
             AND model = ?5 AND feature = ?6"
        ));
        // The ledger keeps the exact range.
        let [lat, ttft] = histogram_sql(&f);
        assert_eq!(lat.values.first(), Some(&SqlValue::Int(h + 5)));
        assert!(lat.sql.contains(
            "created_at >= ?1 AND created_at < ?2 AND key_id = ?3 AND provider = ?4 AND model_used = ?5 \
             AND json_extract(metadata, '$.feature') = ?6"
        ));
        let user = groups_sql(&f, Dimension::User);
        assert!(user.sql.contains("FROM requests WHERE created_at >= ?1"));
        let model = groups_sql(&f, Dimension::Model);
        assert!(model.sql.contains("FROM usage_rollup WHERE bucket >= ?1"));
        let series = series_sql(&f, Bucket::Day);
        // D1 binds JS numbers as REAL: integer division needs the cast.
        assert!(series
            .sql
            .starts_with("SELECT (bucket / CAST(?7 AS INTEGER)) * CAST(?7 AS INTEGER) AS t"));
        assert_eq!(
            series.values.last(),
            Some(&SqlValue::Int(i64::try_from(DAY_MS).unwrap()))
        );
        let top = top_sql(&f, 7);
        assert!(top.sql.ends_with("ORDER BY cost_micros DESC LIMIT ?7"));
        assert!(!top.sql.contains("body"));
        // Every placeholder has a value and every value a placeholder.
        for s in [t, lat, ttft, user, model, series, top] {
            let max = (1..=20)
                .filter(|n| s.sql.contains(&format!("?{n}")))
                .max()
                .unwrap_or(0);
            assert_eq!(max, s.values.len(), "{}", s.sql);
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        // 1..=100, once each.
        let hist: Vec<(u64, u64)> = (1..=100).map(|v| (v, 1)).collect();
        assert_eq!(
            percentiles(&hist, &[50.0, 95.0, 99.0, 100.0, 0.0]),
            vec![Some(50), Some(95), Some(99), Some(100), Some(1)]
        );
        // Counts, unsorted input.
        let hist = [(3000, 1), (10, 98), (500, 1)];
        let p = Percentiles::of(&hist);
        assert_eq!((p.p50, p.p95, p.p99), (Some(10), Some(10), Some(500)));
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
        assert_eq!(Percentiles::of(&[(7, 0)]).p50, None);
    }

    #[test]
    fn merging_sums_both_sources() {
        let row = |k: u64, n: u64, cost: u64| KeyedRow {
            k,
            m: Metrics {
                requests: n,
                ok: n,
                cost_micros: cost,
                ..Default::default()
            },
        };
        let merged = merge_keyed(vec![row(2, 1, 5), row(1, 2, 1)], vec![row(1, 3, 4)]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].0, 1);
        assert_eq!(merged[0].1.requests, 5);
        assert_eq!(merged[0].1.cost_micros, 5);
        let groups = vec![
            (
                "b".to_owned(),
                Metrics {
                    cost_micros: 1,
                    requests: 9,
                    ..Default::default()
                },
            ),
            (
                "a".to_owned(),
                Metrics {
                    cost_micros: 7,
                    requests: 1,
                    ..Default::default()
                },
            ),
            (
                "c".to_owned(),
                Metrics {
                    cost_micros: 1,
                    requests: 10,
                    ..Default::default()
                },
            ),
        ];
        let top: Vec<String> = top_groups(groups, 2).into_iter().map(|(k, _)| k).collect();
        assert_eq!(top, vec!["a", "c"]);
    }

    #[test]
    fn metrics_deserialize_from_d1_numbers_and_derive_rates() {
        let v = serde_json::json!({"t": 3600000.0, "requests": 10.0, "ok": 8.0, "upstream": 8.0,
            "fallbacks": 2.0, "cache_hits": 1.0, "latency_ms_sum": 1000.0, "ttft_count": 0.0});
        let r: KeyedRow<u64> = serde_json::from_value(v).unwrap();
        assert_eq!(r.k, 3_600_000);
        let d = r.m.derived();
        assert_eq!(d.error_rate, Some(0.2));
        assert_eq!(d.fallback_rate, Some(0.25));
        assert_eq!(d.cache_hit_rate, Some(0.1));
        assert_eq!(d.latency_ms_avg, Some(100.0));
        assert_eq!(d.ttft_ms_avg, None);
        let g: KeyedRow<String> =
            serde_json::from_value(serde_json::json!({"g": "openai/gpt-4o", "requests": 1.0}))
                .unwrap();
        assert_eq!(g.k, "openai/gpt-4o");
        assert_eq!(
            histogram_rows(&[serde_json::json!({"v": 12.0, "n": 3.0})]),
            vec![(12, 3)]
        );
    }
}

/// The SQL above and the retention SQL of `ops.rs`, run in real SQLite over
/// the real schema (every migration) with rows written by the real ledger
/// statements — what D1 runs.
#[cfg(test)]
mod sqlite_tests {
    use super::*;
    use crate::ledger::{AttemptRow, Endpoint, Outcome, RequestRow};

    fn db() -> rusqlite::Connection {
        crate::test_db::migrated()
    }

    fn value(v: &SqlValue) -> rusqlite::types::Value {
        match v {
            SqlValue::Null => rusqlite::types::Value::Null,
            SqlValue::Int(n) => rusqlite::types::Value::Integer(*n),
            SqlValue::Text(t) => rusqlite::types::Value::Text(t.clone()),
        }
    }

    fn write(db: &rusqlite::Connection, row: &RequestRow) {
        crate::test_db::write_rows(db, std::slice::from_ref(row));
    }

    /// Rows of a statement as JSON objects (what D1 hands the Worker).
    fn query(db: &rusqlite::Connection, s: &Statement) -> Vec<serde_json::Value> {
        let mut stmt = db.prepare(&s.sql).unwrap();
        let names: Vec<String> = stmt.column_names().map(str::to_owned).collect();
        let v: Vec<_> = s.values.iter().map(value).collect();
        let mut rows = stmt.query(rusqlite::params_from_iter(v)).unwrap();
        let mut out = Vec::new();
        while let Some(r) = rows.next().unwrap() {
            let mut o = serde_json::Map::new();
            for (i, n) in names.iter().enumerate() {
                let v = match r.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Null => serde_json::Value::Null,
                    rusqlite::types::ValueRef::Integer(n) => serde_json::json!(n),
                    rusqlite::types::ValueRef::Real(f) => serde_json::json!(f),
                    rusqlite::types::ValueRef::Text(t) => {
                        serde_json::json!(String::from_utf8_lossy(t))
                    }
                    rusqlite::types::ValueRef::Blob(_) => serde_json::Value::Null,
                };
                o.insert(n.clone(), v);
            }
            out.push(serde_json::Value::Object(o));
        }
        out
    }

    fn metrics(db: &rusqlite::Connection, s: &Statement) -> Metrics {
        serde_json::from_value(query(db, s).remove(0)).unwrap()
    }

    const T0: u64 = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS;

    #[expect(clippy::too_many_arguments, reason = "a test row builder")]
    fn row(
        id: &str,
        at: u64,
        key: &str,
        outcome: Outcome,
        cost: Option<u64>,
        latency: u64,
        metadata: &str,
        fallback: bool,
    ) -> RequestRow {
        let attempt = |provider: &str| AttemptRow {
            attempt: 1,
            provider: provider.into(),
            model: "m".into(),
            started_at_ms: at,
            latency_ms: 1,
            status: Some(200),
            ok: true,
            failure: None,
        };
        RequestRow {
            request_id: id.into(),
            created_at_ms: at,
            key_id: key.into(),
            endpoint: Endpoint::ChatCompletions,
            model_requested: Some("m".into()),
            provider: Some("openai".into()),
            model_used: Some("m".into()),
            stream: false,
            status: if outcome == Outcome::Ok { 200 } else { 502 },
            outcome,
            error_code: None,
            usage: Some(crate::usage::Usage {
                prompt_tokens: 2,
                completion_tokens: 3,
                total_tokens: 5,
                cached_prompt_tokens: None,
                reasoning_tokens: None,
            }),
            usage_estimated: false,
            latency_ms: latency,
            ttft_ms: None,
            metadata: Some(metadata.into()),
            attempts: if fallback {
                vec![attempt("openai"), attempt("groq")]
            } else {
                vec![attempt("openai")]
            },
            cache_status: None,
            cost_micros: cost,
            saved_micros: None,
            pricing: cost.map(|_| "priced"),
            project_id: None,
            guardrails: Vec::new(),
            queue_ms: None,
        }
    }

    #[test]
    fn views_and_retention_over_real_sqlite() {
        let db = db();
        let m = r#"{"feature":"search","user":"u1","team":"core"}"#;
        let rows = [
            row("a", T0 + 10, "k1", Outcome::Ok, Some(100), 10, m, false),
            row(
                "b",
                T0 + HOUR_MS + 1,
                "k1",
                Outcome::Ok,
                Some(50),
                20,
                m,
                true,
            ),
            row(
                "c",
                T0 + HOUR_MS + 2,
                "k2",
                Outcome::UpstreamError,
                Some(0),
                30,
                r#"{"feature":"chat"}"#,
                false,
            ),
            row(
                "d",
                T0 + DAY_MS + 5,
                "k2",
                Outcome::Ok,
                None,
                40,
                r#"{"user":"u2"}"#,
                false,
            ),
        ];
        for r in &rows {
            write(&db, r);
        }
        let all = Filter {
            from_ms: T0,
            to_ms: T0 + 2 * DAY_MS,
            ..Default::default()
        };
        let t = metrics(&db, &totals_sql(&all));
        assert_eq!(
            (t.requests, t.ok, t.upstream_error, t.status_5xx),
            (4, 3, 1, 1)
        );
        assert_eq!(
            (t.cost_micros, t.unpriced, t.fallbacks, t.upstream),
            (150, 1, 1, 4)
        );
        assert_eq!((t.total_tokens, t.latency_ms_sum), (20, 100));
        // Filters.
        let k1 = Filter {
            key_id: Some("k1".into()),
            ..all.clone()
        };
        assert_eq!(metrics(&db, &totals_sql(&k1)).requests, 2);
        let search = Filter {
            feature: Some("search".into()),
            ..all.clone()
        };
        assert_eq!(metrics(&db, &totals_sql(&search)).requests, 2);
        let model = Filter {
            model: Some("openai/m".into()),
            ..all.clone()
        };
        assert_eq!(metrics(&db, &totals_sql(&model)).requests, 4);
        // Hour-granular: a range from inside the first hour still counts it.
        let late = Filter {
            from_ms: T0 + 30,
            ..all.clone()
        };
        assert_eq!(metrics(&db, &totals_sql(&late)).requests, 4);
        // Series and groups.
        let series: Vec<KeyedRow<u64>> = query(&db, &series_sql(&all, Bucket::Hour))
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect();
        let points: Vec<(u64, u64)> = series.iter().map(|r| (r.k, r.m.requests)).collect();
        assert_eq!(points, vec![(T0, 1), (T0 + HOUR_MS, 2), (T0 + DAY_MS, 1)]);
        let groups = |by| -> Vec<(String, u64)> {
            query(&db, &groups_sql(&all, by))
                .into_iter()
                .map(|v| {
                    let r: KeyedRow<String> = serde_json::from_value(v).unwrap();
                    (r.k, r.m.requests)
                })
                .collect()
        };
        assert_eq!(
            groups(Dimension::Key),
            vec![("k1".into(), 2), ("k2".into(), 2)]
        );
        let mut feature = groups(Dimension::Feature);
        feature.sort();
        assert_eq!(
            feature,
            vec![(String::new(), 1), ("chat".into(), 1), ("search".into(), 2)]
        );
        let mut user = groups(Dimension::User);
        user.sort();
        assert_eq!(
            user,
            vec![(String::new(), 1), ("u1".into(), 2), ("u2".into(), 1)]
        );
        assert_eq!(groups(Dimension::Model), vec![("openai/m".into(), 4)]);
        // Percentiles and top-N from the ledger.
        let [lat, _] = histogram_sql(&all);
        let p = Percentiles::of(&histogram_rows(&query(&db, &lat)));
        assert_eq!((p.p50, p.p99), (Some(20), Some(40)));
        let top: Vec<String> = query(&db, &top_sql(&all, 2))
            .into_iter()
            .map(|v| v["request_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(top, vec!["a", "b"]);

        // Retention at day 1 + 1 ms with max_age_days = 1: ledger rows before T0 + 1 ms go,
        // hour aggregates of day 0 become one day row.
        let r = crate::ops::Retention {
            max_age_days: 1,
            ..Default::default()
        };
        let now = T0 + 2 * DAY_MS + 1;
        let cutoff = crate::ops::retention_cutoff(&r, now);
        assert_eq!(cutoff, T0 + DAY_MS + 1);
        db.execute(
            crate::ops::DELETE_ATTEMPTS_SQL,
            [i64::try_from(cutoff - 1).unwrap()],
        )
        .unwrap();
        let deleted = db
            .execute(
                crate::ops::DELETE_REQUESTS_SQL,
                [i64::try_from(cutoff - 1).unwrap()],
            )
            .unwrap();
        assert_eq!(deleted, 3);
        let day = i64::try_from(crate::ops::compaction_cutoff(&r, now)).unwrap();
        db.execute(crate::ops::COMPACT_SQL, [day]).unwrap();
        let compacted = db.execute(crate::ops::DELETE_COMPACTED_SQL, [day]).unwrap();
        assert_eq!(compacted, 3, "three hour rows of day 0");
        let after = metrics(&db, &totals_sql(&all));
        assert_eq!(after, t, "totals unchanged");
        let series: Vec<KeyedRow<u64>> = query(&db, &series_sql(&all, Bucket::Hour))
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect();
        let points: Vec<(u64, u64)> = series.iter().map(|r| (r.k, r.m.requests)).collect();
        assert_eq!(points, vec![(T0, 3), (T0 + DAY_MS, 1)]);
        // Compacting again changes nothing.
        db.execute(crate::ops::COMPACT_SQL, [day]).unwrap();
        assert_eq!(
            db.execute(crate::ops::DELETE_COMPACTED_SQL, [day]).unwrap(),
            0
        );
        assert_eq!(metrics(&db, &totals_sql(&all)), t);
    }
}
