//! The usage ledger: one D1 row per request, written after the response in
//! `ctx.wait_until`, idempotent on the gateway's request id (`INSERT OR
//! IGNORE`, so a retried write never doubles a row).
//!
//! This module builds the row and its bound values; `store.rs` runs the SQL.

use crate::usage::{StreamEnd, Usage};

/// Which endpoint a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Embeddings,
    /// Anthropic's `POST /v1/messages`: a chat request in another format.
    Messages,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat.completions",
            Self::Embeddings => "embeddings",
            Self::Messages => "messages",
        }
    }

    /// The endpoint routing, caching and providers work with: a Messages
    /// request is translated to a chat completion first (`messages.rs`).
    pub fn canonical(self) -> Self {
        match self {
            Self::Messages => Self::ChatCompletions,
            other => other,
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A complete, successful response.
    Ok,
    /// Rejected by the gateway before any upstream call (validation, model
    /// not allowed, provider not configured…).
    Rejected,
    /// The provider answered with an error, or could not be reached.
    UpstreamError,
    /// A stream broke after bytes had reached the client.
    UpstreamTruncated,
    /// The client went away before the response finished.
    ClientAborted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Rejected => "rejected",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamTruncated => "upstream_truncated",
            Self::ClientAborted => "client_aborted",
        }
    }

    pub fn from_stream_end(end: StreamEnd) -> Self {
        match end {
            StreamEnd::Completed => Self::Ok,
            StreamEnd::UpstreamErrorFrame => Self::UpstreamError,
            StreamEnd::Truncated => Self::UpstreamTruncated,
            StreamEnd::ClientAborted => Self::ClientAborted,
        }
    }
}

/// A value bound to a `?N` placeholder; converted to a JS value by the store,
/// or written as plain JSON (`null`, a number, a string) for `json_each`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum SqlValue {
    Null,
    Int(i64),
    Text(String),
}

impl From<Option<u64>> for SqlValue {
    fn from(v: Option<u64>) -> Self {
        v.map_or(Self::Null, |n| {
            Self::Int(i64::try_from(n).unwrap_or(i64::MAX))
        })
    }
}

impl From<Option<String>> for SqlValue {
    fn from(v: Option<String>) -> Self {
        v.map_or(Self::Null, Self::Text)
    }
}

impl RequestRow {
    /// Prices the row's usage: `price` is the answering model's, `None` when
    /// unpriced. A cache hit costs 0 and records what it saved.
    pub fn apply_price(&mut self, priced: Option<(&crate::pricing::Price, &'static str)>) {
        let Some(usage) = self.usage else {
            self.cost_micros = Some(0);
            self.pricing = priced.map(|(_, how)| how);
            return;
        };
        let Some((price, how)) = priced else {
            self.pricing = Some("unpriced");
            return;
        };
        let cost = crate::pricing::cost_micros(price, &usage);
        self.pricing = Some(how);
        if matches!(self.cache_status, Some("hit" | "semantic_hit")) {
            self.cost_micros = Some(0);
            self.saved_micros = Some(cost);
        } else {
            self.cost_micros = Some(cost);
        }
    }
}

/// One request's row.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRow {
    pub request_id: String,
    pub created_at_ms: u64,
    pub key_id: String,
    pub endpoint: Endpoint,
    pub model_requested: Option<String>,
    pub provider: Option<String>,
    /// The model the provider says answered (falls back to the model sent).
    pub model_used: Option<String>,
    pub stream: bool,
    /// HTTP status the client received.
    pub status: u16,
    pub outcome: Outcome,
    pub error_code: Option<String>,
    pub usage: Option<Usage>,
    /// `usage` is the gateway's estimate, not the provider's count.
    pub usage_estimated: bool,
    pub latency_ms: u64,
    /// Time to the first byte sent to the client, for streams.
    pub ttft_ms: Option<u64>,
    /// Compact JSON from `x-tollgate-metadata`.
    pub metadata: Option<String>,
    /// One per upstream attempt, in order.
    pub attempts: Vec<AttemptRow>,
    /// `hit` when answered from the exact cache (not billed), `miss`,
    /// `refresh` or `skip` when the cache was consulted, `None` when it was off.
    pub cache_status: Option<&'static str>,
    /// What the request cost, in micro-USD (0 for cache hits).
    pub cost_micros: Option<u64>,
    /// What a cache hit would have cost, in micro-USD.
    pub saved_micros: Option<u64>,
    /// `priced` (the table or an override), `default` (the configured
    /// default price) or `unpriced` (cost unknown — shown, never 0).
    pub pricing: Option<&'static str>,
    /// The key's team/project at request time (for grouping; NULL = none).
    pub project_id: Option<String>,
    /// Guardrail decisions (a `guardrail_events` row each).
    pub guardrails: Vec<crate::guardrails::GuardEvent>,
    /// How long the request waited for provider capacity (`queue.rs`);
    /// `None` when it did not wait.
    pub queue_ms: Option<u64>,
}

impl RequestRow {
    /// A row for a request that has not run yet: status 200, outcome `ok`,
    /// nothing measured; the caller fills in what happens.
    pub fn new(request_id: String, created_at_ms: u64, key_id: String, endpoint: Endpoint) -> Self {
        Self {
            request_id,
            created_at_ms,
            key_id,
            endpoint,
            model_requested: None,
            provider: None,
            model_used: None,
            stream: false,
            status: 200,
            outcome: Outcome::Ok,
            error_code: None,
            usage: None,
            usage_estimated: false,
            latency_ms: 0,
            ttft_ms: None,
            metadata: None,
            attempts: Vec::new(),
            cache_status: None,
            cost_micros: None,
            saved_micros: None,
            pricing: None,
            project_id: None,
            guardrails: Vec::new(),
            queue_ms: None,
        }
    }
}

/// One upstream attempt of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub attempt: u32,
    pub provider: String,
    pub model: String,
    pub started_at_ms: u64,
    pub latency_ms: u64,
    pub status: Option<u16>,
    pub ok: bool,
    /// The walker's failure label when not ok.
    pub failure: Option<String>,
}

pub const INSERT_ATTEMPT_SQL: &str = "INSERT OR IGNORE INTO attempts (\
    request_id, attempt, provider, model, started_at, latency_ms, status, outcome, failure) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

impl AttemptRow {
    /// Values for [`INSERT_ATTEMPT_SQL`].
    pub fn bind_values(&self, request_id: &str) -> Vec<SqlValue> {
        vec![
            SqlValue::Text(request_id.to_owned()),
            SqlValue::Int(i64::from(self.attempt)),
            SqlValue::Text(self.provider.clone()),
            SqlValue::Text(self.model.clone()),
            Some(self.started_at_ms).into(),
            Some(self.latency_ms).into(),
            self.status.map(u64::from).into(),
            SqlValue::Text(if self.ok { "ok" } else { "failed" }.to_owned()),
            self.failure.clone().into(),
        ]
    }
}

pub const INSERT_GUARDRAIL_SQL: &str = "INSERT OR IGNORE INTO guardrail_events (\
    request_id, seq, stage, detector, action, count, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

impl RequestRow {
    /// Values for [`INSERT_GUARDRAIL_SQL`], one list per decision.
    pub fn guardrail_values(&self) -> Vec<Vec<SqlValue>> {
        self.guardrails
            .iter()
            .enumerate()
            .map(|(i, e)| {
                vec![
                    SqlValue::Text(self.request_id.clone()),
                    SqlValue::Int(i64::try_from(i).unwrap_or(i64::MAX)),
                    SqlValue::Text(e.stage.to_owned()),
                    SqlValue::Text(e.detector.clone()),
                    SqlValue::Text(e.action.to_owned()),
                    SqlValue::Int(i64::from(e.count)),
                    Some(self.created_at_ms).into(),
                ]
            })
            .collect()
    }
}

pub const INSERT_REQUEST_SQL: &str = "INSERT OR IGNORE INTO requests (\
    request_id, created_at, key_id, endpoint, model_requested, provider, model_used, stream, \
    status, outcome, error_code, prompt_tokens, completion_tokens, total_tokens, \
    cached_prompt_tokens, reasoning_tokens, usage_source, latency_ms, ttft_ms, metadata, cache_status, \
    cost_micros, saved_micros, pricing, project_id, attempt_count, fallback, queue_ms) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)";

/// Adds a request to its hour's row of `usage_rollup` (migration 0010) —
/// only when the `INSERT OR IGNORE` of the request just before it in the same
/// batch inserted a row (`changes() = 1`), so a replayed write adds nothing.
pub const INSERT_ROLLUP_SQL: &str = "INSERT INTO usage_rollup (bucket, span, key_id, provider, model, \
    team, feature, outcome, status, cache_status, requests, upstream, fallbacks, prompt_tokens, \
    completion_tokens, total_tokens, cost_micros, saved_micros, unpriced, latency_ms_sum, ttft_ms_sum, ttft_count) \
    SELECT ?1, 3600000, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20 \
    WHERE changes() = 1 \
    ON CONFLICT (bucket, span, key_id, provider, model, team, feature, outcome, status, cache_status) DO UPDATE SET \
    requests = requests + excluded.requests, upstream = upstream + excluded.upstream, \
    fallbacks = fallbacks + excluded.fallbacks, prompt_tokens = prompt_tokens + excluded.prompt_tokens, \
    completion_tokens = completion_tokens + excluded.completion_tokens, \
    total_tokens = total_tokens + excluded.total_tokens, cost_micros = cost_micros + excluded.cost_micros, \
    saved_micros = saved_micros + excluded.saved_micros, unpriced = unpriced + excluded.unpriced, \
    latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum, \
    ttft_ms_sum = ttft_ms_sum + excluded.ttft_ms_sum, ttft_count = ttft_count + excluded.ttft_count";

/// A gateway request id: `req_` + 32 hex characters, of which the first 12
/// are the time in ms and the other 20 are `random` (80 bits).
///
/// Time first, so ids made later sort later: the ledger's primary key and
/// the attempts' (`request_id`, `attempt`) then grow at their right edge
/// instead of at a random leaf. A group commit of 70 rows dirtied ~93 b-tree
/// pages with fully random ids and ~10 with these (SQLite, a 60,000-row
/// ledger; bench/README.md, sixth pass), which is what a D1 write costs.
pub fn request_id(now_ms: u64, random: [u8; 10]) -> String {
    format!(
        "req_{:012x}{}",
        now_ms & 0xffff_ffff_ffff,
        hex::encode(random)
    )
}

/// A metadata field as SQLite's `CAST(json_extract(…) AS TEXT)` renders it
/// ('' when absent), so aggregates and ledger queries group alike.
pub fn metadata_text(metadata: Option<&str>, field: &str) -> String {
    let value = metadata
        .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        .and_then(|v| v.get(field).cloned());
    match value {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::Bool(b)) => u8::from(b).to_string(),
        _ => String::new(),
    }
}

impl RequestRow {
    /// Values for [`INSERT_ROLLUP_SQL`], in placeholder order.
    pub fn rollup_values(&self) -> Vec<SqlValue> {
        let u = self.usage;
        let hour = self.created_at_ms - self.created_at_ms % 3_600_000;
        let int = |v: u64| SqlValue::Int(i64::try_from(v).unwrap_or(i64::MAX));
        vec![
            int(hour),
            SqlValue::Text(self.key_id.clone()),
            SqlValue::Text(self.provider.clone().unwrap_or_default()),
            SqlValue::Text(self.model_used.clone().unwrap_or_default()),
            SqlValue::Text(metadata_text(self.metadata.as_deref(), "team")),
            SqlValue::Text(metadata_text(self.metadata.as_deref(), "feature")),
            SqlValue::Text(self.outcome.as_str().to_owned()),
            SqlValue::Int(i64::from(self.status)),
            SqlValue::Text(self.cache_status.unwrap_or_default().to_owned()),
            int(u64::from(!self.attempts.is_empty())),
            int(u64::from(self.fell_back())),
            int(u.map_or(0, |u| u.prompt_tokens)),
            int(u.map_or(0, |u| u.completion_tokens)),
            int(u.map_or(0, |u| u.total_tokens)),
            int(self.cost_micros.unwrap_or(0)),
            int(self.saved_micros.unwrap_or(0)),
            int(u64::from(self.cost_micros.is_none())),
            int(self.latency_ms),
            int(self.ttft_ms.unwrap_or(0)),
            int(u64::from(self.ttft_ms.is_some())),
        ]
    }
}

impl RequestRow {
    /// Whether more than one provider/model was tried (a fallback; retries
    /// on the same link are not one).
    pub fn fell_back(&self) -> bool {
        self.attempts.first().is_some_and(|first| {
            self.attempts
                .iter()
                .any(|a| a.provider != first.provider || a.model != first.model)
        })
    }
}

impl RequestRow {
    /// Values for [`INSERT_REQUEST_SQL`], in placeholder order.
    pub fn bind_values(&self) -> Vec<SqlValue> {
        let u = self.usage;
        // `provider` when the provider reported usage; `none` when it did not
        // (errors, truncated streams) so nobody mistakes a missing count for 0.
        let usage_source = match (u, self.usage_estimated) {
            (Some(_), false) => "provider",
            (Some(_), true) => "estimated",
            (None, _) => "none",
        };
        vec![
            SqlValue::Text(self.request_id.clone()),
            Some(self.created_at_ms).into(),
            SqlValue::Text(self.key_id.clone()),
            SqlValue::Text(self.endpoint.as_str().to_owned()),
            self.model_requested.clone().into(),
            self.provider.clone().into(),
            self.model_used.clone().into(),
            SqlValue::Int(i64::from(self.stream)),
            SqlValue::Int(i64::from(self.status)),
            SqlValue::Text(self.outcome.as_str().to_owned()),
            self.error_code.clone().into(),
            u.map(|u| u.prompt_tokens).into(),
            u.map(|u| u.completion_tokens).into(),
            u.map(|u| u.total_tokens).into(),
            u.and_then(|u| u.cached_prompt_tokens).into(),
            u.and_then(|u| u.reasoning_tokens).into(),
            SqlValue::Text(usage_source.to_owned()),
            Some(self.latency_ms).into(),
            self.ttft_ms.into(),
            self.metadata.clone().into(),
            self.cache_status.map(str::to_owned).into(),
            self.cost_micros.into(),
            self.saved_micros.into(),
            self.pricing.map(str::to_owned).into(),
            self.project_id.clone().into(),
            SqlValue::Int(i64::try_from(self.attempts.len()).unwrap_or(i64::MAX)),
            SqlValue::Int(i64::from(self.fell_back())),
            self.queue_ms.into(),
        ]
    }
}

/// The ledger write for a group of rows: a few statements, each with one
/// parameter — a JSON array holding one values list per row, which SQLite
/// reads with `json_each`. Binding the ~60 values of every request one by one
/// cost more of the Worker's CPU (a JS value and a D1 shim step each) than
/// the rest of a pass-through request; here a group costs four strings.
///
/// The statements are the per-row ones above, rewritten (`?N` → the row's
/// element N), in this order: the rollup (only for requests not yet in the
/// ledger — what `changes() = 1` says per row), the requests (`INSERT OR
/// IGNORE`), their attempts, their guardrail decisions. Run as one D1 batch
/// (one transaction), a replay of the group adds nothing.
pub fn ledger_statements(rows: &[RequestRow]) -> Vec<(&'static str, String)> {
    let sql = batch_sql();
    let mut out = Vec::with_capacity(4);
    let rollups: Vec<Vec<SqlValue>> = rows
        .iter()
        .map(|r| {
            let mut v = vec![SqlValue::Text(r.request_id.clone())];
            v.extend(r.rollup_values());
            v
        })
        .collect();
    out.push((sql.rollups.as_str(), json_rows(&rollups)));
    let requests: Vec<Vec<SqlValue>> = rows.iter().map(RequestRow::bind_values).collect();
    out.push((sql.requests.as_str(), json_rows(&requests)));
    let attempts: Vec<Vec<SqlValue>> = rows
        .iter()
        .flat_map(|r| r.attempts.iter().map(|a| a.bind_values(&r.request_id)))
        .collect();
    if !attempts.is_empty() {
        out.push((sql.attempts.as_str(), json_rows(&attempts)));
    }
    let guardrails: Vec<Vec<SqlValue>> =
        rows.iter().flat_map(RequestRow::guardrail_values).collect();
    if !guardrails.is_empty() {
        out.push((sql.guardrails.as_str(), json_rows(&guardrails)));
    }
    out
}

/// The four statements of [`ledger_statements`], derived once from the
/// per-row SQL so the two can never list different columns.
struct BatchSql {
    rollups: String,
    requests: String,
    attempts: String,
    guardrails: String,
}

fn batch_sql() -> &'static BatchSql {
    static SQL: std::sync::OnceLock<BatchSql> = std::sync::OnceLock::new();
    SQL.get_or_init(|| BatchSql {
        // Element 0 is the request id, so the rollup's `?N` is element N.
        rollups: json_each_placeholders(INSERT_ROLLUP_SQL, 0).replace(
            "WHERE changes() = 1",
            "FROM json_each(?1) WHERE NOT EXISTS \
             (SELECT 1 FROM requests WHERE requests.request_id = json_extract(value, '$[0]'))",
        ),
        requests: values_from_json_each(INSERT_REQUEST_SQL),
        attempts: values_from_json_each(INSERT_ATTEMPT_SQL),
        guardrails: values_from_json_each(INSERT_GUARDRAIL_SQL),
    })
}

/// `INSERT … (cols) VALUES (?1, …)` → `INSERT … (cols) SELECT <elements> FROM json_each(?1)`.
fn values_from_json_each(sql: &str) -> String {
    match sql.split_once(" VALUES (") {
        Some((head, values)) => {
            let values = values.strip_suffix(')').unwrap_or(values);
            format!(
                "{head} SELECT {} FROM json_each(?1)",
                json_each_placeholders(values, 1)
            )
        }
        None => sql.to_owned(),
    }
}

/// Replaces each `?N` with element `N - shift` of json_each's `value`.
fn json_each_placeholders(sql: &str, shift: usize) -> String {
    let mut out = String::with_capacity(sql.len() * 3);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '?' {
            out.push(c);
            continue;
        }
        let mut n = 0usize;
        let mut digits = 0;
        while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
            n = n * 10 + d as usize;
            digits += 1;
            chars.next();
        }
        if digits == 0 {
            out.push('?');
        } else {
            out.push_str(&format!(
                "json_extract(value, '$[{}]')",
                n.saturating_sub(shift)
            ));
        }
    }
    out
}

/// Rows of values as one JSON array of arrays (integers stay exact: SQLite's
/// JSON reader takes them as 64-bit integers).
fn json_rows(rows: &[Vec<SqlValue>]) -> String {
    // Cannot fail for these types; were it to, D1 would refuse the empty
    // parameter and the batch would be logged as failed, not lost quietly.
    serde_json::to_string(rows).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_fixed_length_hex_and_sort_by_time() {
        let a = request_id(1_763_000_000_000, [0xff; 10]);
        let b = request_id(1_763_000_000_001, [0x00; 10]);
        assert_eq!(a, "req_019a7afd1e00ffffffffffffffffffff");
        assert_eq!(b.len(), 36);
        assert!(b.starts_with("req_") && b[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert!(a < b, "a later id sorts after an earlier one");
        // The same ms: the random part keeps ids apart.
        assert_ne!(
            request_id(5, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
            request_id(5, [1, 2, 3, 4, 5, 6, 7, 8, 9, 11])
        );
        // Past 48 bits of ms (year 10889) the time wraps rather than widening the id.
        assert_eq!(request_id(1 << 48, [0; 10]).len(), 36);
    }

    #[test]
    fn bind_values_match_placeholders() {
        let row = RequestRow {
            request_id: "req_1".into(),
            created_at_ms: 1_700_000_000_000,
            key_id: "key_1".into(),
            endpoint: Endpoint::ChatCompletions,
            model_requested: Some("fast".into()),
            provider: Some("demo".into()),
            model_used: Some("echo".into()),
            stream: true,
            status: 200,
            outcome: Outcome::Ok,
            error_code: None,
            usage: Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7,
                cached_prompt_tokens: None,
                reasoning_tokens: Some(1),
            }),
            usage_estimated: false,
            latency_ms: 12,
            ttft_ms: Some(5),
            metadata: Some(r#"{"user":"u"}"#.into()),
            attempts: vec![],
            cache_status: None,
            cost_micros: None,
            saved_micros: None,
            pricing: None,
            project_id: None,
            guardrails: Vec::new(),
            queue_ms: None,
        };
        let v = row.bind_values();
        let placeholders = INSERT_REQUEST_SQL.matches('?').count();
        assert_eq!(v.len(), placeholders);
        let columns = INSERT_REQUEST_SQL
            .split_once('(')
            .unwrap()
            .1
            .split_once(')')
            .unwrap()
            .0
            .split(',')
            .count();
        assert_eq!(columns, placeholders);
        assert_eq!(v[0], SqlValue::Text("req_1".into()));
        assert_eq!(v[7], SqlValue::Int(1));
        assert_eq!(v[11], SqlValue::Int(3));
        assert_eq!(v[14], SqlValue::Null);
        assert_eq!(v[16], SqlValue::Text("provider".into()));
        assert_eq!(v[18], SqlValue::Int(5));
    }

    #[test]
    fn fallback_means_another_link_not_a_retry() {
        let attempt = |provider: &str, model: &str| AttemptRow {
            attempt: 1,
            provider: provider.into(),
            model: model.into(),
            started_at_ms: 0,
            latency_ms: 1,
            status: Some(503),
            ok: false,
            failure: None,
        };
        let mut row = RequestRow {
            request_id: "req_1".into(),
            created_at_ms: 0,
            key_id: "k".into(),
            endpoint: Endpoint::ChatCompletions,
            ..RequestRow::new(String::new(), 0, String::new(), Endpoint::ChatCompletions)
        };
        assert!(!row.fell_back());
        row.attempts = vec![attempt("openai", "a"), attempt("openai", "a")];
        assert!(!row.fell_back());
        let v = row.bind_values();
        assert_eq!(v[25], SqlValue::Int(2));
        assert_eq!(v[26], SqlValue::Int(0));
        row.attempts.push(attempt("groq", "a"));
        assert!(row.fell_back());
        assert_eq!(row.bind_values()[26], SqlValue::Int(1));
    }

    #[test]
    fn rollup_values_match_placeholders_and_the_row() {
        let row = RequestRow {
            request_id: "req_1".into(),
            created_at_ms: 7_200_000 + 59_999,
            key_id: "k".into(),
            endpoint: Endpoint::ChatCompletions,
            model_requested: Some("m".into()),
            status: 400,
            outcome: Outcome::Rejected,
            latency_ms: 9,
            metadata: Some(r#"{"team":"core","feature":7,"user":"u"}"#.into()),
            ..RequestRow::new(String::new(), 0, String::new(), Endpoint::ChatCompletions)
        };
        let v = row.rollup_values();
        let max = (1..=30)
            .filter(|n| {
                INSERT_ROLLUP_SQL.contains(&format!("?{n} "))
                    || INSERT_ROLLUP_SQL.contains(&format!("?{n},"))
            })
            .max();
        assert_eq!(max, Some(v.len()));
        assert_eq!(v[0], SqlValue::Int(7_200_000));
        assert_eq!(v[2], SqlValue::Text(String::new()));
        assert_eq!(v[4], SqlValue::Text("core".into()));
        assert_eq!(v[5], SqlValue::Text("7".into()));
        assert_eq!(v[7], SqlValue::Int(400));
        assert_eq!(v[8], SqlValue::Text(String::new()));
        assert_eq!(v[9], SqlValue::Int(0), "no upstream attempt");
        assert_eq!(v[16], SqlValue::Int(1), "unpriced");
        assert_eq!(v[17], SqlValue::Int(9));
        assert_eq!(v[19], SqlValue::Int(0));
        assert!(INSERT_ROLLUP_SQL.contains("WHERE changes() = 1"));
        assert_eq!(metadata_text(Some(r#"{"team":true}"#), "team"), "1");
        assert_eq!(metadata_text(Some("not json"), "team"), "");
        assert_eq!(metadata_text(None, "team"), "");
    }

    #[test]
    fn attempt_values_match_placeholders() {
        let a = AttemptRow {
            attempt: 2,
            provider: "groq".into(),
            model: "llama".into(),
            started_at_ms: 10,
            latency_ms: 3,
            status: Some(503),
            ok: false,
            failure: Some("status_503".into()),
        };
        let v = a.bind_values("req_1");
        assert_eq!(v.len(), INSERT_ATTEMPT_SQL.matches('?').count());
        assert_eq!(v[6], SqlValue::Int(503));
        assert_eq!(v[7], SqlValue::Text("failed".into()));
    }

    #[test]
    fn pricing_a_row_and_a_cache_hit() {
        let price = crate::pricing::Price::flat(2_500_000, 10_000_000); // $2.50 / $10 per 1M
        let mut row = RequestRow {
            request_id: "r".into(),
            created_at_ms: 0,
            key_id: "k".into(),
            endpoint: Endpoint::ChatCompletions,
            model_requested: None,
            provider: Some("openai".into()),
            model_used: Some("gpt-4o".into()),
            stream: false,
            status: 200,
            outcome: Outcome::Ok,
            error_code: None,
            usage: Some(Usage {
                prompt_tokens: 1_000,
                completion_tokens: 100,
                total_tokens: 1_100,
                cached_prompt_tokens: None,
                reasoning_tokens: None,
            }),
            usage_estimated: false,
            latency_ms: 1,
            ttft_ms: None,
            metadata: None,
            attempts: vec![],
            cache_status: None,
            cost_micros: None,
            saved_micros: None,
            pricing: None,
            project_id: None,
            guardrails: Vec::new(),
            queue_ms: None,
        };
        row.apply_price(Some((&price, "priced")));
        // 1000 × 2.5 + 100 × 10 = 3500 micro-USD.
        assert_eq!(
            (row.cost_micros, row.saved_micros, row.pricing),
            (Some(3_500), None, Some("priced"))
        );
        row.cache_status = Some("hit");
        row.apply_price(Some((&price, "priced")));
        assert_eq!((row.cost_micros, row.saved_micros), (Some(0), Some(3_500)));
        row.cache_status = None;
        row.cost_micros = None;
        row.apply_price(None);
        assert_eq!(
            (row.cost_micros, row.pricing),
            (None, Some("unpriced")),
            "unknown, never 0"
        );
    }

    #[test]
    fn missing_usage_is_marked_not_zero() {
        let row = RequestRow {
            request_id: "r".into(),
            created_at_ms: 0,
            key_id: "k".into(),
            endpoint: Endpoint::Embeddings,
            status: 502,
            outcome: Outcome::UpstreamError,
            error_code: Some("upstream_unreachable".into()),
            latency_ms: 1,
            ..RequestRow::new(String::new(), 0, String::new(), Endpoint::ChatCompletions)
        };
        let v = row.bind_values();
        assert_eq!(v[11], SqlValue::Null);
        assert_eq!(v[16], SqlValue::Text("none".into()));
    }
    /// A group of rows goes to D1 as one JSON parameter per table; what
    /// lands is what the rows say, big integers exact, and a replayed group
    /// that overlaps the first adds only its new rows — to the ledger and to
    /// the hourly aggregates.
    #[test]
    fn a_group_written_as_json_lands_whole_and_replays_add_only_new_rows() {
        let db = crate::test_db::migrated();
        let row = |id: &str, cost: u64, team: &str| {
            let mut r = RequestRow::new(
                id.into(),
                1_700_000_000_000,
                "key_1".into(),
                Endpoint::ChatCompletions,
            );
            r.provider = Some("openai".into());
            r.model_used = Some("gpt-4o-mini".into());
            r.cost_micros = Some(cost);
            r.metadata = Some(format!(r#"{{"team":"{team}","note":"it's \"quoted\""}}"#));
            r.usage = Some(Usage {
                prompt_tokens: 2,
                completion_tokens: 3,
                total_tokens: 5,
                cached_prompt_tokens: None,
                reasoning_tokens: None,
            });
            r.attempts = vec![AttemptRow {
                attempt: 1,
                provider: "openai".into(),
                model: "gpt-4o-mini".into(),
                started_at_ms: 1_700_000_000_001,
                latency_ms: 4,
                status: Some(200),
                ok: true,
                failure: None,
            }];
            r
        };
        let big = (1u64 << 53) + 1; // not exact as a JS number
        crate::test_db::write_rows(
            &db,
            &[row("a", 10, "x"), row("b", 20, "x"), row("c", big, "y")],
        );
        crate::test_db::write_rows(
            &db,
            &[row("b", 20, "x"), row("c", big, "y"), row("d", 40, "y")],
        );
        let (requests, attempts, spend): (i64, i64, i64) = db
            .query_row(
                "SELECT (SELECT COUNT(*) FROM requests), (SELECT COUNT(*) FROM attempts), \
                 (SELECT SUM(cost_micros) FROM requests)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((requests, attempts), (4, 4));
        assert_eq!(spend, 10 + 20 + 40 + i64::try_from(big).unwrap());
        let by_team: Vec<(String, i64, i64)> = db
            .prepare("SELECT team, requests, total_tokens FROM usage_rollup ORDER BY team")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(by_team, vec![("x".into(), 2, 10), ("y".into(), 2, 10)]);
        let metadata: String = db
            .query_row(
                "SELECT metadata FROM requests WHERE request_id = 'a'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(metadata, r#"{"team":"x","note":"it's \"quoted\""}"#);
        let stream: i64 = db
            .query_row("SELECT typeof(stream) = 'integer' AND typeof(created_at) = 'integer' FROM requests WHERE request_id = 'd'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stream, 1, "integers land as integers, not text or reals");
    }

    /// The real schema (every migration, in order, in SQLite — what D1 runs)
    /// and the real statements: a replayed ledger write adds nothing.
    #[test]
    fn replaying_the_ledger_write_adds_nothing() {
        let db = crate::test_db::migrated();
        let attempt = |n: u32, ok: bool| AttemptRow {
            attempt: n,
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            started_at_ms: 10 + u64::from(n),
            latency_ms: 3,
            status: Some(if ok { 200 } else { 500 }),
            ok,
            failure: (!ok).then(|| "status_500".into()),
        };
        let row = RequestRow {
            request_id: "req_replay".into(),
            created_at_ms: 1_700_000_000_000,
            key_id: "key_1".into(),
            endpoint: Endpoint::ChatCompletions,
            model_requested: Some("fast".into()),
            provider: Some("openai".into()),
            model_used: Some("gpt-4o-mini".into()),
            stream: false,
            status: 200,
            outcome: Outcome::Ok,
            error_code: None,
            usage: Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7,
                cached_prompt_tokens: None,
                reasoning_tokens: None,
            }),
            usage_estimated: false,
            latency_ms: 12,
            ttft_ms: None,
            metadata: None,
            attempts: vec![attempt(1, false), attempt(2, false), attempt(3, true)],
            cache_status: None,
            cost_micros: Some(42),
            saved_micros: None,
            pricing: Some("priced"),
            project_id: Some("search".into()),
            guardrails: vec![crate::guardrails::GuardEvent {
                stage: "input",
                detector: "email".into(),
                action: "redact",
                count: 2,
            }],
            queue_ms: Some(250),
        };
        let write = || crate::test_db::write_rows(&db, std::slice::from_ref(&row));
        let totals = || -> (i64, i64, i64) {
            db.query_row(
                "SELECT (SELECT COUNT(*) FROM requests), (SELECT COUNT(*) FROM attempts), \
                 (SELECT SUM(cost_micros) FROM requests)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
        };
        write();
        assert_eq!(totals(), (1, 3, 42));
        write();
        write();
        assert_eq!(totals(), (1, 3, 42), "a replay adds no row and no spend");
        let rollup: (i64, i64, i64, i64, i64) = db
            .query_row(
                "SELECT COUNT(*), SUM(requests), SUM(cost_micros), SUM(upstream), SUM(total_tokens) FROM usage_rollup",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(
            rollup,
            (1, 1, 42, 1, 7),
            "a replay adds nothing to the aggregates either"
        );
        let project: String = db
            .query_row("SELECT project_id FROM requests", [], |r| r.get(0))
            .unwrap();
        assert_eq!(project, "search");
        let waited: i64 = db
            .query_row("SELECT queue_ms FROM requests", [], |r| r.get(0))
            .unwrap();
        assert_eq!(waited, 250, "migration 0013's column");
        let guard: (String, String, i64) = db
            .query_row(
                "SELECT COUNT(*) || ':' || detector, action, SUM(count) FROM guardrail_events",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(guard, ("1:email".to_owned(), "redact".to_owned(), 2));
    }
}
