//! Quality sampling (issue 12): a configured share of a route's answers is
//! also asked, in the background, of a reference model, and the two answers'
//! agreement is recorded (D1 `quality_samples`), so routing rules that send
//! traffic to cheaper models can be checked against quality drift.
//!
//! Pure: the config, which requests may be sampled, the reference request,
//! the agreement score and the rows. The platform calls live in
//! `handlers/quality.rs`.
//!
//! Agreement (`agreement`), by the first rule that applies to the first
//! choice of each answer:
//! - `tool_calls` — either answer calls tools: the share of calls (by
//!   position) with the same function name and JSON-equal arguments, over
//!   the larger count (a call against prose scores 0).
//! - `exact` — both answers are short (at most [`SHORT_ANSWER_WORDS`] words
//!   after normalisation: lowercase, punctuation dropped, whitespace
//!   collapsed; classification, extraction, yes/no, a number): 1 when the
//!   normalised texts are equal, else 0.
//! - `json` — both answers parse as JSON objects or arrays (JSON mode): 1
//!   when equal as values (key order ignored), else the token-set score of
//!   their texts.
//! - `token_set` — prose: the Dice coefficient of the two sets of lowercase
//!   word tokens (2·|A∩B| / (|A|+|B|)). Cheap and deterministic; it rewards
//!   shared content words and punishes different facts only as far as they
//!   change the words, so it is a drift signal over many samples, not a
//!   verdict on one answer.
//! - `empty` — both answers have no text and no tool calls: 1.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::guardrails::{Action, GuardrailPolicy};
use crate::ledger::SqlValue;
use crate::openai::AssistantMessage;

/// Answers of at most this many normalised words are compared exactly.
pub const SHORT_ANSWER_WORDS: usize = 5;
/// The reference call's default time limit (headers and body).
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The ledger's key id for the reference calls (not a virtual key: never
/// charged to a key's or project's budget).
pub const LEDGER_KEY: &str = "gateway:quality-sample";

/// `quality_sampling = { fraction = 0.05, reference = "openai/gpt-4o" }` on a route.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QualitySampling {
    /// Share of eligible requests sampled, 0-1.
    pub fraction: f64,
    /// `"provider/model"` or a `models` alias of a configured provider.
    pub reference: String,
    /// Time limit of the reference call (default 30000 ms).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl QualitySampling {
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)
    }

    /// Problems with this block (the reference is checked by the caller,
    /// which knows the providers).
    pub fn validate(&self, at: &str) -> Vec<String> {
        let mut errors = Vec::new();
        if !(0.0..=1.0).contains(&self.fraction) {
            errors.push(format!("{at}.fraction: a share from 0 to 1"));
        }
        if self
            .timeout_ms
            .is_some_and(|t| !(100..=120_000).contains(&t))
        {
            errors.push(format!("{at}.timeout_ms: 100 to 120000"));
        }
        errors
    }

    /// Whether this request is in the sample (`roll` uniform in [0, 1)).
    pub fn sampled(&self, roll: f64) -> bool {
        roll < self.fraction
    }
}

/// Whether a guardrail policy marks the traffic as sensitive: any input or
/// output detector that is not `off` (redact, block or log). Such requests
/// are never sent to a second provider. Size limits alone do not count.
pub fn guardrails_active(policy: &GuardrailPolicy) -> bool {
    policy
        .input
        .values()
        .chain(policy.output.values())
        .any(|a| *a != Action::Off)
}

/// The request sent to the reference: the canonical request (after the
/// gateway's own validation), non-streamed, one choice. The reference's own
/// model replaces `model` when the provider call is planned.
pub fn reference_body(body: &Map<String, Value>) -> Map<String, Value> {
    let mut out = body.clone();
    for k in ["stream", "stream_options", "n"] {
        out.remove(k);
    }
    out
}

/// An agreement score in [0, 1] and how it was computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    pub score: f64,
    pub method: &'static str,
}

/// Lowercase words of letters and digits; everything else separates.
fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Dice coefficient of the two token sets (1 when both are empty).
pub fn token_set_similarity(a: &str, b: &str) -> f64 {
    let a: BTreeSet<String> = tokens(a).into_iter().collect();
    let b: BTreeSet<String> = tokens(b).into_iter().collect();
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let shared = a.intersection(&b).count();
    #[expect(clippy::cast_precision_loss, reason = "token counts are small")]
    let score = (2 * shared) as f64 / (a.len() + b.len()) as f64;
    score
}

fn parse_structured(text: &str) -> Option<Value> {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|s| s.strip_suffix("```"))
        .unwrap_or(t)
        .trim();
    match serde_json::from_str::<Value>(t).ok()? {
        v @ (Value::Object(_) | Value::Array(_)) => Some(v),
        _ => None,
    }
}

/// A tool call's arguments as JSON (the text when it does not parse).
fn arguments(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

/// How far `answer` agrees with `reference` (see the module docs).
pub fn agreement(answer: &AssistantMessage, reference: &AssistantMessage) -> Agreement {
    let calls = |m: &AssistantMessage| -> Vec<(String, Value)> {
        m.tool_calls
            .iter()
            .flatten()
            .map(|c| (c.function.name.clone(), arguments(&c.function.arguments)))
            .collect()
    };
    let (ca, cr) = (calls(answer), calls(reference));
    if !ca.is_empty() || !cr.is_empty() {
        let same = ca.iter().zip(&cr).filter(|(a, r)| a == r).count();
        #[expect(clippy::cast_precision_loss, reason = "tool call counts are small")]
        let score = same as f64 / ca.len().max(cr.len()) as f64;
        return Agreement {
            score,
            method: "tool_calls",
        };
    }
    let ta = answer.content.as_deref().unwrap_or_default();
    let tr = reference.content.as_deref().unwrap_or_default();
    let (wa, wr) = (tokens(ta), tokens(tr));
    if wa.is_empty() && wr.is_empty() {
        return Agreement {
            score: 1.0,
            method: "empty",
        };
    }
    if wa.len() <= SHORT_ANSWER_WORDS && wr.len() <= SHORT_ANSWER_WORDS {
        return Agreement {
            score: if wa == wr { 1.0 } else { 0.0 },
            method: "exact",
        };
    }
    if let (Some(ja), Some(jr)) = (parse_structured(ta), parse_structured(tr)) {
        let score = if ja == jr {
            1.0
        } else {
            token_set_similarity(ta, tr)
        };
        return Agreement {
            score,
            method: "json",
        };
    }
    Agreement {
        score: token_set_similarity(ta, tr),
        method: "token_set",
    }
}

/// One `quality_samples` row.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    /// The sampled (user's) request.
    pub request_id: String,
    pub created_at_ms: u64,
    pub key_id: String,
    /// The `model` the client asked for (the route's name).
    pub route: String,
    /// The link that answered the user.
    pub provider: String,
    pub model: String,
    /// `provider/model` of the reference.
    pub reference: String,
    /// `None` when the reference call failed.
    pub agreement: Option<Agreement>,
    /// The reference call's failure (an OpenAI error code), if it failed.
    pub error: Option<String>,
    /// The reference call's own ledger row.
    pub reference_request_id: String,
    pub reference_cost_micros: Option<u64>,
    pub reference_latency_ms: u64,
}

pub const INSERT_SAMPLE_SQL: &str = "INSERT OR IGNORE INTO quality_samples (\
    request_id, created_at, key_id, route, provider, model, reference, agreement, method, error, \
    reference_request_id, reference_cost_micros, reference_latency_ms) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/// How a score is stored: parts per million (an integer, so D1 binding
/// stays integral; the API divides again).
pub fn score_ppm(score: f64) -> i64 {
    #[expect(clippy::cast_possible_truncation, reason = "a score in [0, 1]")]
    let ppm = (score.clamp(0.0, 1.0) * 1_000_000.0).round() as i64;
    ppm
}

impl SampleRow {
    /// Values for [`INSERT_SAMPLE_SQL`].
    pub fn bind_values(&self) -> Vec<SqlValue> {
        vec![
            SqlValue::Text(self.request_id.clone()),
            Some(self.created_at_ms).into(),
            SqlValue::Text(self.key_id.clone()),
            SqlValue::Text(self.route.clone()),
            SqlValue::Text(self.provider.clone()),
            SqlValue::Text(self.model.clone()),
            SqlValue::Text(self.reference.clone()),
            self.agreement
                .map_or(SqlValue::Null, |a| SqlValue::Int(score_ppm(a.score))),
            self.agreement
                .map(|a| a.method.to_owned())
                .map_or(SqlValue::Null, SqlValue::Text),
            self.error.clone().into(),
            SqlValue::Text(self.reference_request_id.clone()),
            self.reference_cost_micros.into(),
            Some(self.reference_latency_ms).into(),
        ]
    }
}

/// `WHERE …` over `quality_samples` for a usage filter (the time range,
/// key, provider and `provider/model` of the answering link; `feature` does
/// not apply). Fixed fragments only; every value is bound.
fn samples_where(f: &crate::analytics::Filter, values: &mut Vec<SqlValue>) -> String {
    let mut push = |v: SqlValue| {
        values.push(v);
        values.len()
    };
    let int = |v: u64| SqlValue::Int(i64::try_from(v).unwrap_or(i64::MAX));
    let from = push(int(f.from_ms));
    let to = push(int(f.to_ms));
    let mut sql = format!("created_at >= ?{from} AND created_at < ?{to}");
    if let Some(k) = &f.key_id {
        let n = push(SqlValue::Text(k.clone()));
        sql.push_str(&format!(" AND key_id = ?{n}"));
    }
    let (provider, model) = match f.model.as_deref().and_then(|m| m.split_once('/')) {
        Some((p, m)) => (Some(p.to_owned()), Some(m.to_owned())),
        None => (f.provider.clone(), f.model.clone()),
    };
    if let Some(p) = provider {
        let n = push(SqlValue::Text(p));
        sql.push_str(&format!(" AND provider = ?{n}"));
    }
    if let Some(m) = model {
        let n = push(SqlValue::Text(m));
        sql.push_str(&format!(" AND model = ?{n}"));
    }
    sql
}

/// Columns every quality view reports: samples, scored samples, failed
/// reference calls, mean agreement (0-1, `NULL` without a score), samples
/// at or above 0.5, and what the reference calls cost.
const SAMPLE_METRICS: &str = "COUNT(*) AS samples, COUNT(agreement) AS scored, \
    SUM(error IS NOT NULL) AS errors, AVG(agreement) / 1000000.0 AS mean_agreement, \
    COALESCE(SUM(agreement >= 500000), 0) AS agreeing, \
    COALESCE(SUM(reference_cost_micros), 0) AS reference_cost_micros";

/// The statements of `GET /admin/usage/quality`: per answering model and
/// reference; the same per time bucket; the latest samples (ids and
/// scores, never text).
pub fn usage_sql(
    f: &crate::analytics::Filter,
    bucket_ms: u64,
    limit: u32,
) -> [crate::analytics::Statement; 3] {
    use crate::analytics::Statement;
    let mut v = Vec::new();
    let w = samples_where(f, &mut v);
    let by_model = Statement {
        sql: format!(
            "SELECT provider || '/' || model AS model, reference, {SAMPLE_METRICS} \
             FROM quality_samples WHERE {w} GROUP BY 1, 2 ORDER BY samples DESC, model LIMIT 200"
        ),
        values: v.clone(),
    };
    let mut sv = v.clone();
    sv.push(SqlValue::Int(i64::try_from(bucket_ms).unwrap_or(i64::MAX)));
    let b = sv.len();
    // D1 binds JS numbers as REAL: integer division needs the cast.
    let series = Statement {
        sql: format!(
            "SELECT (created_at / CAST(?{b} AS INTEGER)) * CAST(?{b} AS INTEGER) AS t, \
             provider || '/' || model AS model, {SAMPLE_METRICS} \
             FROM quality_samples WHERE {w} GROUP BY 1, 2 ORDER BY t, model LIMIT 5000"
        ),
        values: sv,
    };
    v.push(SqlValue::Int(i64::from(limit)));
    let n = v.len();
    let recent = Statement {
        sql: format!(
            "SELECT request_id, created_at, key_id, route, provider || '/' || model AS model, \
             reference, agreement / 1000000.0 AS agreement, method, error, reference_request_id, \
             reference_cost_micros, reference_latency_ms \
             FROM quality_samples WHERE {w} ORDER BY created_at DESC, request_id LIMIT ?{n}"
        ),
        values: v,
    };
    [by_model, series, recent]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(v: Value) -> AssistantMessage {
        serde_json::from_value(v).unwrap()
    }

    fn text(t: &str) -> AssistantMessage {
        msg(json!({"role": "assistant", "content": t, "refusal": null}))
    }

    fn call(name: &str, args: &str) -> AssistantMessage {
        msg(
            json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": name, "arguments": args}}
            ]}),
        )
    }

    #[test]
    fn short_answers_compare_exactly_after_normalisation() {
        let a = agreement(&text("Positive."), &text("  positive"));
        assert_eq!((a.score, a.method), (1.0, "exact"));
        let a = agreement(&text("Paris"), &text("Lyon."));
        assert_eq!((a.score, a.method), (0.0, "exact"));
        let a = agreement(&text("Yes, it is."), &text("yes it is"));
        assert_eq!(a.score, 1.0);
    }

    #[test]
    fn tool_calls_compare_name_and_arguments_as_json() {
        let a = agreement(
            &call("get_weather", r#"{"city":"Paris","unit":"c"}"#),
            &call("get_weather", r#"{ "unit": "c", "city": "Paris" }"#),
        );
        assert_eq!((a.score, a.method), (1.0, "tool_calls"));
        let a = agreement(
            &call("get_weather", r#"{"city":"Paris"}"#),
            &call("get_weather", r#"{"city":"Lyon"}"#),
        );
        assert_eq!((a.score, a.method), (0.0, "tool_calls"));
        let a = agreement(&call("get_weather", "{}"), &text("It is sunny in Paris."));
        assert_eq!((a.score, a.method), (0.0, "tool_calls"));
    }

    #[test]
    fn prose_scores_by_shared_words() {
        let reference = "The capital of France is Paris, a city on the Seine river.";
        let same = agreement(
            &text("Paris is the capital of France, a city on the river Seine."),
            &text(reference),
        );
        assert_eq!(same.method, "token_set");
        assert!(same.score > 0.9, "{same:?}");
        let other = agreement(
            &text("Bananas are yellow fruits rich in potassium and fibre."),
            &text(reference),
        );
        assert!(other.score < 0.2, "{other:?}");
        assert!(token_set_similarity("a b c d", "a b c d") == 1.0);
    }

    #[test]
    fn json_answers_compare_as_values() {
        let a = agreement(
            &text(r#"{"name": "Ada", "born": 1815, "field": "mathematics"}"#),
            &text("```json\n{\"field\": \"mathematics\", \"born\": 1815, \"name\": \"Ada\"}\n```"),
        );
        assert_eq!((a.score, a.method), (1.0, "json"));
        let a = agreement(
            &text(r#"{"name": "Ada", "born": 1815, "field": "maths"}"#),
            &text(r#"{"name": "Ada", "born": 1816, "field": "maths"}"#),
        );
        assert_eq!(a.method, "json");
        assert!(a.score < 1.0);
        let a = agreement(&text(""), &text(""));
        assert_eq!((a.score, a.method), (1.0, "empty"));
    }

    #[test]
    fn config_validation_and_sampling() {
        let q: QualitySampling =
            serde_json::from_value(json!({"fraction": 0.25, "reference": "openai/gpt-4o"}))
                .unwrap();
        assert!(q.validate("q").is_empty());
        assert_eq!(q.timeout_ms(), DEFAULT_TIMEOUT_MS);
        assert!(q.sampled(0.0) && q.sampled(0.2499) && !q.sampled(0.25));
        let none = QualitySampling {
            fraction: 0.0,
            ..q.clone()
        };
        assert!(!none.sampled(0.0));
        let all = QualitySampling {
            fraction: 1.0,
            ..q.clone()
        };
        assert!(all.sampled(0.999_999));
        let bad = QualitySampling {
            fraction: 1.5,
            timeout_ms: Some(5),
            ..q
        };
        assert_eq!(bad.validate("q").len(), 2);
        assert!(serde_json::from_value::<QualitySampling>(
            json!({"fraction": 0.1, "reference": "x/y", "extra": 1})
        )
        .is_err());
    }

    #[test]
    fn sensitive_traffic_is_recognised_and_the_reference_request_is_plain() {
        let mut p = GuardrailPolicy {
            max_input_tokens: Some(100),
            ..Default::default()
        };
        assert!(!guardrails_active(&p), "limits alone are not detectors");
        p.input.insert("email".into(), Action::Off);
        assert!(!guardrails_active(&p));
        p.output.insert("card".into(), Action::Redact);
        assert!(guardrails_active(&p));
        let body = json!({"model": "m", "messages": [], "stream": true,
            "stream_options": {"include_usage": true}, "n": 3, "temperature": 0});
        let r = reference_body(body.as_object().unwrap());
        assert_eq!(
            Value::Object(r),
            json!({"model": "m", "messages": [], "temperature": 0})
        );
    }

    #[test]
    fn usage_statements_bind_every_value() {
        let f = crate::analytics::Filter {
            from_ms: 10,
            to_ms: 20,
            key_id: Some("key_1".into()),
            model: Some("openai/mini".into()),
            ..Default::default()
        };
        let [by_model, series, recent] = usage_sql(&f, 3_600_000, 20);
        assert_eq!(by_model.values.len(), 5);
        assert!(by_model
            .sql
            .contains("key_id = ?3 AND provider = ?4 AND model = ?5"));
        assert_eq!(series.values.len(), 6);
        assert!(series.sql.contains("CAST(?6 AS INTEGER)"));
        assert_eq!(recent.values[5], SqlValue::Int(20));
        assert!(recent.sql.ends_with("LIMIT ?6"));
        let [all, ..] = usage_sql(&crate::analytics::Filter::default(), 1, 1);
        assert_eq!(all.values.len(), 2);
    }

    #[test]
    fn rows_bind_in_column_order() {
        let row = SampleRow {
            request_id: "req_1".into(),
            created_at_ms: 5,
            key_id: "key_1".into(),
            route: "tiered".into(),
            provider: "openai".into(),
            model: "mini".into(),
            reference: "openai/gpt-4o".into(),
            agreement: Some(Agreement {
                score: 0.5,
                method: "token_set",
            }),
            error: None,
            reference_request_id: "req_1_quality".into(),
            reference_cost_micros: Some(12),
            reference_latency_ms: 40,
        };
        let v = row.bind_values();
        assert_eq!(v.len(), 13);
        assert_eq!(v[7], SqlValue::Int(500_000));
        assert_eq!(v[8], SqlValue::Text("token_set".into()));
        assert_eq!(v[9], SqlValue::Null);
        assert_eq!(INSERT_SAMPLE_SQL.matches('?').count(), 13);
    }
}
