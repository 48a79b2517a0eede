//! The optional small-model complexity call (issue 12): a `complexity`
//! route with `classifier = { model = "openai/gpt-4o-mini", deadline_ms = 300 }`
//! asks that model for the tier before routing, and falls back to the local
//! heuristics (`complexity.rs`) on a timeout, an error or an answer that is
//! not exactly one tier name.
//!
//! Pure: the config, the request sent (a fixed instruction and the last user
//! turn, `max_tokens` 3, temperature 0) and the strict parse of the answer.
//! The call itself is in `handlers/quality.rs`, bounded by `deadline_ms`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::complexity::Tier;

/// The default and the largest deadline of the classifier call: it sits on
/// the request's path before the first upstream byte.
pub const DEFAULT_DEADLINE_MS: u64 = 300;
pub const MAX_DEADLINE_MS: u64 = 5_000;
/// The last user turn is cut to this many characters (the instruction asks
/// for a judgement, not an answer; a long prompt is long enough to judge).
pub const MAX_TURN_CHARS: usize = 8_000;
/// The ledger's key id for classifier calls (not a virtual key).
pub const LEDGER_KEY: &str = "gateway:complexity-classifier";

/// The instruction sent as the system message. Fixed: a change is a change
/// of routing behaviour and goes through review like code.
pub const INSTRUCTION: &str = "You route requests to language models. Rate how hard the user's \
request is to answer well. Reply with exactly one word: simple (a lookup, a short fact, a \
translation, a classification, small talk), moderate (an explanation, a summary, ordinary \
writing or code), or complex (multi-step reasoning, a proof, non-trivial code or design, deep \
analysis). Do not answer the request itself.";

/// `classifier = { model = "…", deadline_ms = 300 }` on a `complexity` route.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// `"provider/model"` or a `models` alias of a configured provider.
    pub model: String,
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

impl ClassifierConfig {
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms.unwrap_or(DEFAULT_DEADLINE_MS)
    }

    /// Problems with the block (the model is checked by the caller).
    pub fn validate(&self, at: &str) -> Vec<String> {
        match self.deadline_ms {
            Some(d) if !(1..=MAX_DEADLINE_MS).contains(&d) => {
                vec![format!("{at}.deadline_ms: 1 to {MAX_DEADLINE_MS}")]
            }
            _ => Vec::new(),
        }
    }
}

/// Text of the last `user` message (text parts joined), cut to
/// [`MAX_TURN_CHARS`]; `None` when there is none or it has no text.
pub fn last_user_text(messages: &[Value]) -> Option<String> {
    let m = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    let text = match m.get("content")? {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => return None,
    };
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(text.chars().take(MAX_TURN_CHARS).collect())
}

/// The classifier request (canonical chat format; the model is set when
/// the provider call is planned).
pub fn request_body(turn: &str) -> Map<String, Value> {
    let body = json!({
        "messages": [
            {"role": "system", "content": INSTRUCTION},
            {"role": "user", "content": turn},
        ],
        "max_tokens": 3,
        "temperature": 0,
    });
    match body {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The tier in a classifier answer: exactly one tier name, in any case,
/// with surrounding whitespace, quotes or one final period allowed; anything
/// else (a sentence, two names, an empty answer) is `None`.
pub fn parse(answer: &str) -> Option<Tier> {
    let t = answer
        .trim()
        .trim_matches(|c| c == '"' || c == '\'' || c == '`');
    let t = t.strip_suffix('.').unwrap_or(t).trim();
    match t.to_ascii_lowercase().as_str() {
        "simple" => Some(Tier::Simple),
        "moderate" => Some(Tier::Moderate),
        "complex" => Some(Tier::Complex),
        _ => None,
    }
}

/// What the classifier call produced, for routing and the decision header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The model named this tier.
    Model(Tier),
    /// The heuristics decide; why the model did not (`model timeout`,
    /// `model error`, `model unparseable`, `no user text`).
    Heuristic(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_strict() {
        assert_eq!(parse("complex"), Some(Tier::Complex));
        assert_eq!(parse("  Simple.\n"), Some(Tier::Simple));
        assert_eq!(parse("\"moderate\""), Some(Tier::Moderate));
        for bad in [
            "",
            "hard",
            "complex or moderate",
            "This is complex.",
            "simple!",
            "simple..",
            "moderately",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_request_is_the_instruction_and_the_last_user_turn() {
        let messages = vec![
            json!({"role": "system", "content": "be nice"}),
            json!({"role": "user", "content": "first"}),
            json!({"role": "assistant", "content": "ok"}),
            json!({"role": "user", "content": [
                {"type": "text", "text": "prove it"},
                {"type": "image_url", "image_url": {"url": "data:x"}},
                {"type": "text", "text": "twice"}
            ]}),
        ];
        let turn = last_user_text(&messages).unwrap();
        assert_eq!(turn, "prove it\ntwice");
        let body = Value::Object(request_body(&turn));
        assert_eq!(body["messages"][0]["content"], INSTRUCTION);
        assert_eq!(body["messages"][1]["content"], "prove it\ntwice");
        assert_eq!(body["messages"].as_array().unwrap().len(), 2);
        assert_eq!(body["max_tokens"], 3);
        assert_eq!(body["temperature"], 0);
        assert!(body.get("stream").is_none());
        let long = "x".repeat(MAX_TURN_CHARS + 10);
        let cut = last_user_text(&[json!({"role": "user", "content": long})]).unwrap();
        assert_eq!(cut.len(), MAX_TURN_CHARS);
        assert_eq!(
            last_user_text(&[json!({"role": "assistant", "content": "x"})]),
            None
        );
        assert_eq!(
            last_user_text(&[json!({"role": "user", "content": "  "})]),
            None
        );
    }

    #[test]
    fn deadline_is_bounded() {
        let c: ClassifierConfig = serde_json::from_value(json!({"model": "openai/m"})).unwrap();
        assert_eq!(c.deadline_ms(), DEFAULT_DEADLINE_MS);
        assert!(c.validate("c").is_empty());
        let c = ClassifierConfig {
            deadline_ms: Some(0),
            ..c
        };
        assert_eq!(c.validate("c").len(), 1);
        assert!(serde_json::from_value::<ClassifierConfig>(
            json!({"model": "openai/m", "max_tokens": 5})
        )
        .is_err());
    }
}
