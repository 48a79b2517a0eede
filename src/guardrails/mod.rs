//! Guardrails: sensitive-data detectors on prompts (before anything leaves
//! the gateway) and on answers, with an action per detector — `block` (400,
//! naming the detector, never the text), `redact` (typed placeholders such as
//! `<EMAIL_1>`, optionally restored in the answer), or `log` — plus request
//! limits (input tokens, messages, `max_tokens`).
//!
//! Policy comes at three levels, like the cache policy: global
//! (`[vars.GATEWAY.guardrails]`), per key (admin API `guardrails`) and per
//! route (`routes.<name>.guardrails`); the most specific level that sets a
//! detector or a limit wins. Everything here is pure and natively tested;
//! `handlers/proxy.rs` calls [`Guard::check_input`] after parsing and wraps
//! the answer with [`OutputGuard`].

pub mod detect;
pub mod restore;
pub mod stream;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::GatewayError;
use crate::ledger::Endpoint;
use detect::{Builtin, Kind};
pub use restore::{Placeholders, StreamRestorer};

/// What a detector's match does.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Reject the request (input) or the answer (output).
    Block,
    /// Replace the match with a typed placeholder.
    Redact,
    /// Record the match in the ledger, change nothing.
    Log,
    /// Turn off a detector a less specific level enabled.
    Off,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Redact => "redact",
            Self::Log => "log",
            Self::Off => "off",
        }
    }
}

/// One level of guardrail policy; every field is optional so levels overlay.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GuardrailPolicy {
    /// Detector name → action, on prompts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input: BTreeMap<String, Action>,
    /// Detector name → action, on answers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub output: BTreeMap<String, Action>,
    /// Restore redacted values in the answer (default false: the answer
    /// keeps the placeholders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversible: Option<bool>,
    /// Operator detectors: name → regular expression (regex-lite syntax).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub patterns: BTreeMap<String, String>,
    /// Operator detectors: name → words or phrases (whole words, ASCII
    /// case-insensitive).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub words: BTreeMap<String, Vec<String>>,
    /// Largest prompt, in estimated tokens (4 bytes of text per token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_input_tokens: Option<u64>,
    /// Most `messages` in a chat request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages: Option<u64>,
    /// Largest `max_tokens` / `max_completion_tokens` a request may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}

const MAX_PATTERNS: usize = 32;
const MAX_PATTERN_LEN: usize = 512;
const MAX_WORDS: usize = 1_000;

impl GuardrailPolicy {
    /// `self` with everything `over` sets replaced (detectors one by one).
    #[must_use]
    pub fn overlay(&self, over: &GuardrailPolicy) -> GuardrailPolicy {
        let merge = |a: &BTreeMap<String, Action>, b: &BTreeMap<String, Action>| {
            let mut m = a.clone();
            m.extend(b.iter().map(|(k, v)| (k.clone(), *v)));
            m
        };
        let mut patterns = self.patterns.clone();
        patterns.extend(over.patterns.clone());
        let mut words = self.words.clone();
        words.extend(over.words.clone());
        GuardrailPolicy {
            input: merge(&self.input, &over.input),
            output: merge(&self.output, &over.output),
            reversible: over.reversible.or(self.reversible),
            patterns,
            words,
            max_input_tokens: over.max_input_tokens.or(self.max_input_tokens),
            max_messages: over.max_messages.or(self.max_messages),
            max_tokens: over.max_tokens.or(self.max_tokens),
        }
    }

    /// Every problem with this level. `inherited` are operator detector
    /// names defined at a less specific level (usable here by name).
    pub fn validate(&self, at: &str, inherited: &BTreeSet<String>) -> Vec<String> {
        let mut errors = Vec::new();
        let defined: BTreeSet<&str> = self
            .patterns
            .keys()
            .chain(self.words.keys())
            .map(String::as_str)
            .collect();
        for name in self.patterns.keys().chain(self.words.keys()) {
            let ok = !name.is_empty()
                && name.len() <= 32
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                errors.push(format!(
                    "{at}: detector name '{name}' must be 1-32 characters of a-z, 0-9 and '_'"
                ));
            }
            if Builtin::from_name(name).is_some() {
                errors.push(format!("{at}: '{name}' is a built-in detector's name"));
            }
        }
        for name in self.patterns.keys().filter(|n| self.words.contains_key(*n)) {
            errors.push(format!("{at}: '{name}' is both a pattern and a word list"));
        }
        if self.patterns.len() + self.words.len() > MAX_PATTERNS {
            errors.push(format!(
                "{at}: at most {MAX_PATTERNS} patterns and word lists"
            ));
        }
        for (name, re) in &self.patterns {
            if re.is_empty() || re.len() > MAX_PATTERN_LEN {
                errors.push(format!(
                    "{at}.patterns.{name}: 1-{MAX_PATTERN_LEN} characters"
                ));
            } else if let Err(e) = compile_pattern(re) {
                errors.push(format!("{at}.patterns.{name}: {e}"));
            }
        }
        for (name, words) in &self.words {
            if words.is_empty()
                || words.len() > MAX_WORDS
                || words.iter().any(|w| {
                    w.trim().is_empty() || w.len() > 100 || w.chars().any(char::is_control)
                })
            {
                errors.push(format!(
                    "{at}.words.{name}: 1-{MAX_WORDS} words or phrases of 1-100 printable characters"
                ));
            }
        }
        for (stage, map) in [("input", &self.input), ("output", &self.output)] {
            for name in map.keys() {
                let known = Builtin::from_name(name).is_some()
                    || defined.contains(name.as_str())
                    || inherited.contains(name);
                if !known {
                    errors.push(format!(
                        "{at}.{stage}: unknown detector '{name}' (built-in: {}; or define it under patterns or words)",
                        detect::BUILTINS
                            .iter()
                            .map(|b| b.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        for (name, v, hi) in [
            ("max_input_tokens", self.max_input_tokens, 10_000_000),
            ("max_messages", self.max_messages, 100_000),
            ("max_tokens", self.max_tokens, 10_000_000),
        ] {
            if v.is_some_and(|v| !(1..=hi).contains(&v)) {
                errors.push(format!("{at}.{name}: must be between 1 and {hi}"));
            }
        }
        errors
    }

    /// Names of the operator detectors this level defines.
    pub fn operator_detectors(&self) -> BTreeSet<String> {
        self.patterns
            .keys()
            .chain(self.words.keys())
            .cloned()
            .collect()
    }

    /// What a stored policy that no longer parses becomes: every built-in
    /// blocks (fail closed — nothing the operator may have meant to keep in
    /// leaves).
    pub fn fail_closed() -> Self {
        GuardrailPolicy {
            input: detect::BUILTINS
                .iter()
                .map(|b| (b.name().to_owned(), Action::Block))
                .collect(),
            ..Default::default()
        }
    }
}

fn compile_pattern(re: &str) -> Result<regex_lite::Regex, String> {
    regex_lite::RegexBuilder::new(re)
        .size_limit(1 << 20)
        .nest_limit(32)
        .build()
        .map_err(|e| format!("not a valid pattern ({e})"))
}

/// A detector with its action.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// Placeholder type, e.g. `EMAIL`.
    pub tag: String,
    pub kind: Kind,
    pub action: Action,
}

/// A guardrail decision for the ledger: which detector, what it did, how
/// many matches. Never the matched text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuardEvent {
    pub stage: &'static str,
    pub detector: String,
    pub action: &'static str,
    pub count: u32,
}

/// Counts of matches per (detector, action) for one stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally(BTreeMap<(String, Action), u32>);

impl Tally {
    pub fn add(&mut self, detector: &str, action: Action, n: u32) {
        *self.0.entry((detector.to_owned(), action)).or_insert(0) += n;
    }

    pub fn events(&self, stage: &'static str) -> Vec<GuardEvent> {
        self.0
            .iter()
            .map(|((detector, action), count)| GuardEvent {
                stage,
                detector: detector.clone(),
                action: action.as_str(),
                count: *count,
            })
            .collect()
    }

    pub fn blocked(&self) -> Option<&str> {
        self.0
            .keys()
            .find(|(_, a)| *a == Action::Block)
            .map(|(d, _)| d.as_str())
    }
}

/// The compiled, effective policy for one request.
#[derive(Debug, Clone)]
pub struct Guard {
    input: Vec<Rule>,
    output: Vec<Rule>,
    reversible: bool,
    max_input_tokens: Option<u64>,
    max_messages: Option<u64>,
    max_tokens: Option<u64>,
}

/// A match in one text, resolved against overlaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub rule: usize,
    pub start: usize,
    pub end: usize,
}

/// Every match of `rules` in `text`: all of them (for blocking and
/// counting), sorted by start, longest first.
pub fn scan(rules: &[Rule], text: &str) -> Vec<Hit> {
    let mut hits = Vec::new();
    let mut spans = Vec::new();
    let first_digit = detect::first_digit(text);
    for (i, r) in rules.iter().enumerate() {
        spans.clear();
        r.kind.find_with(text, first_digit, &mut spans);
        hits.extend(spans.iter().map(|&(start, end)| Hit {
            rule: i,
            start,
            end,
        }));
    }
    hits.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    hits
}

/// The hits to replace: non-overlapping, earliest and then longest first.
pub fn non_overlapping(hits: &[Hit], rules: &[Rule]) -> Vec<Hit> {
    let mut out: Vec<Hit> = Vec::new();
    for h in hits {
        let redacts = rules
            .get(h.rule)
            .is_some_and(|r| r.action == Action::Redact);
        if !redacts {
            continue;
        }
        if out.last().is_some_and(|l| h.start < l.end) {
            continue;
        }
        out.push(*h);
    }
    out
}

/// `text` with the given hits (sorted, non-overlapping) replaced.
pub fn replace_hits(
    text: &str,
    hits: &[Hit],
    mut with: impl FnMut(&Hit, &str) -> String,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for h in hits {
        out.push_str(text.get(last..h.start).unwrap_or_default());
        out.push_str(&with(h, text.get(h.start..h.end).unwrap_or_default()));
        last = h.end;
    }
    out.push_str(text.get(last..).unwrap_or_default());
    out
}

/// What passing the input guardrails gives the rest of the request.
#[derive(Debug, Clone, Default)]
pub struct InputOutcome {
    pub events: Vec<GuardEvent>,
    /// Placeholders given out (for reversible mode).
    pub placeholders: Placeholders,
}

/// Why a request was refused, with what the ledger still records.
#[derive(Debug)]
pub struct Refusal {
    pub error: GatewayError,
    pub events: Vec<GuardEvent>,
}

impl Guard {
    /// Compiles the effective policy; `None` when it asks for nothing (the
    /// request then pays no guardrail cost at all).
    pub fn compile(p: &GuardrailPolicy) -> Result<Option<Guard>, String> {
        let rules = |map: &BTreeMap<String, Action>| -> Result<Vec<Rule>, String> {
            let mut rules = Vec::new();
            for (name, action) in map.iter().filter(|(_, a)| **a != Action::Off) {
                let kind = if let Some(b) = Builtin::from_name(name) {
                    Kind::Builtin(b)
                } else if let Some(re) = p.patterns.get(name) {
                    Kind::Regex(compile_pattern(re)?)
                } else if let Some(words) = p.words.get(name) {
                    Kind::Words(
                        words
                            .iter()
                            .map(|w| w.trim().to_ascii_lowercase())
                            .filter(|w| !w.is_empty())
                            .collect(),
                    )
                } else {
                    return Err(format!("unknown detector '{name}'"));
                };
                rules.push(Rule {
                    name: name.clone(),
                    tag: name.to_ascii_uppercase(),
                    kind,
                    action: *action,
                });
            }
            Ok(rules)
        };
        let guard = Guard {
            input: rules(&p.input)?,
            output: rules(&p.output)?,
            reversible: p.reversible.unwrap_or(false),
            max_input_tokens: p.max_input_tokens,
            max_messages: p.max_messages,
            max_tokens: p.max_tokens,
        };
        let idle = guard.input.is_empty()
            && guard.output.is_empty()
            && guard.max_input_tokens.is_none()
            && guard.max_messages.is_none()
            && guard.max_tokens.is_none();
        Ok((!idle).then_some(guard))
    }

    /// Checks limits and scans every prompt text of `body`, redacting in
    /// place. A `block` match, or a limit exceeded, refuses the request.
    pub fn check_input(
        &self,
        endpoint: Endpoint,
        body: &mut Map<String, Value>,
    ) -> Result<InputOutcome, Refusal> {
        let refuse = |error| Refusal {
            error,
            events: Vec::new(),
        };
        if endpoint == Endpoint::ChatCompletions {
            let messages = body
                .get("messages")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if let Some(max) = self.max_messages {
                if messages as u64 > max {
                    return Err(refuse(GatewayError::InvalidRequest {
                        message: format!(
                            "This request has {messages} messages; this gateway allows at most {max}."
                        ),
                        param: Some("messages".to_owned()),
                        code: "too_many_messages",
                    }));
                }
            }
            if let Some(max) = self.max_tokens {
                for field in ["max_tokens", "max_completion_tokens"] {
                    let asked = body.get(field).and_then(Value::as_u64);
                    if asked.is_some_and(|n| n > max) {
                        return Err(refuse(GatewayError::InvalidRequest {
                            message: format!("'{field}' may be at most {max} on this gateway."),
                            param: Some(field.to_owned()),
                            code: "max_tokens_too_large",
                        }));
                    }
                }
            }
        }
        let mut texts = prompt_texts(endpoint, body);
        if let Some(max) = self.max_input_tokens {
            let bytes: usize = texts.iter().map(|t| t.len()).sum();
            let estimate = (bytes as u64).div_ceil(4);
            if estimate > max {
                return Err(refuse(GatewayError::InvalidRequest {
                    message: format!(
                        "The prompt is about {estimate} tokens; this gateway allows at most {max}."
                    ),
                    param: Some("messages".to_owned()),
                    code: "input_too_long",
                }));
            }
        }
        let mut tally = Tally::default();
        let mut placeholders = Placeholders::default();
        for text in &mut texts {
            let hits = scan(&self.input, text);
            if hits.is_empty() {
                continue;
            }
            for h in &hits {
                if let Some(r) = self.input.get(h.rule) {
                    tally.add(&r.name, r.action, 1);
                }
            }
            let keep = non_overlapping(&hits, &self.input);
            if !keep.is_empty() {
                let redacted = replace_hits(text, &keep, |h, value| {
                    let tag = self
                        .input
                        .get(h.rule)
                        .map_or("REDACTED", |r| r.tag.as_str());
                    placeholders.placeholder(tag, value)
                });
                **text = redacted;
            }
        }
        let events = tally.events("input");
        if let Some(detector) = tally.blocked() {
            return Err(Refusal {
                error: GatewayError::InvalidRequest {
                    message: format!(
                        "Blocked by guardrail '{detector}': the prompt contains data this gateway does not send to providers. Remove it and retry."
                    ),
                    param: Some("messages".to_owned()),
                    code: "guardrail_blocked",
                },
                events,
            });
        }
        Ok(InputOutcome {
            events,
            placeholders,
        })
    }

    /// What the answer needs: output detectors, and the placeholders to
    /// restore in reversible mode. `None` when the answer passes untouched.
    pub fn output(&self, input: &InputOutcome) -> Option<OutputGuard> {
        let restore = if self.reversible && !input.placeholders.is_empty() {
            input.placeholders.clone()
        } else {
            Placeholders::default()
        };
        if self.output.is_empty() && restore.is_empty() {
            return None;
        }
        Some(OutputGuard {
            rules: self.output.clone(),
            restore,
        })
    }
}

/// Every prompt string of a request, mutably: chat message contents (text
/// and text parts), assistant tool-call arguments, and embeddings input.
fn prompt_texts(endpoint: Endpoint, body: &mut Map<String, Value>) -> Vec<&mut String> {
    let mut out = Vec::new();
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages => {
            let Some(Value::Array(messages)) = body.get_mut("messages") else {
                return out;
            };
            for m in messages.iter_mut().filter_map(Value::as_object_mut) {
                let mut content = None;
                let mut calls = None;
                for (k, v) in m.iter_mut() {
                    match k.as_str() {
                        "content" => content = Some(v),
                        "tool_calls" => calls = Some(v),
                        _ => {}
                    }
                }
                match content {
                    Some(Value::String(s)) => out.push(s),
                    Some(Value::Array(parts)) => {
                        for part in parts.iter_mut().filter_map(Value::as_object_mut) {
                            if let Some(Value::String(s)) = part.get_mut("text") {
                                out.push(s);
                            }
                        }
                    }
                    _ => {}
                }
                if let Some(Value::Array(calls)) = calls {
                    for c in calls.iter_mut() {
                        if let Some(Value::String(args)) =
                            c.get_mut("function").and_then(|f| f.get_mut("arguments"))
                        {
                            out.push(args);
                        }
                    }
                }
            }
        }
        Endpoint::Embeddings => match body.get_mut("input") {
            Some(Value::String(s)) => out.push(s),
            Some(Value::Array(items)) => {
                for item in items.iter_mut() {
                    if let Value::String(s) = item {
                        out.push(s);
                    }
                }
            }
            _ => {}
        },
    }
    out
}

/// The answer side of a request's guardrails.
#[derive(Debug, Clone)]
pub struct OutputGuard {
    pub rules: Vec<Rule>,
    pub restore: Placeholders,
}

/// Placeholder for a value the output guardrails took out of an answer.
/// Distinct from the input's numbered placeholders, so a reversible request
/// never "restores" it into someone's data.
pub fn output_placeholder(rule: &Rule) -> String {
    format!("<{}_REDACTED>", rule.tag)
}

impl OutputGuard {
    /// Guards one complete answer text: `Err(detector)` when blocked.
    pub fn text(&self, text: &str, tally: &mut Tally) -> Result<String, String> {
        let hits = scan(&self.rules, text);
        for h in &hits {
            if let Some(r) = self.rules.get(h.rule) {
                tally.add(&r.name, r.action, 1);
            }
        }
        if let Some(d) = hits
            .iter()
            .filter_map(|h| self.rules.get(h.rule))
            .find(|r| r.action == Action::Block)
        {
            return Err(d.name.clone());
        }
        let keep = non_overlapping(&hits, &self.rules);
        let redacted = replace_hits(text, &keep, |h, _| {
            self.rules
                .get(h.rule)
                .map_or_else(String::new, output_placeholder)
        });
        Ok(self.restore.restore(&redacted))
    }

    /// Guards a complete chat completion (JSON) in place: each choice's
    /// `message.content`. `Err(detector)` when blocked.
    pub fn completion(&self, body: &mut Value, tally: &mut Tally) -> Result<(), String> {
        let Some(choices) = body.get_mut("choices").and_then(Value::as_array_mut) else {
            return Ok(());
        };
        for c in choices.iter_mut() {
            if let Some(Value::String(s)) = c.get_mut("message").and_then(|m| m.get_mut("content"))
            {
                *s = self.text(s, tally)?;
            }
        }
        Ok(())
    }

    /// The client's error when an answer is blocked.
    pub fn blocked_error(detector: &str) -> GatewayError {
        GatewayError::InvalidRequest {
            message: format!(
                "The answer was blocked by guardrail '{detector}': it contains data this gateway does not return."
            ),
            param: Some("output".to_owned()),
            code: "guardrail_blocked",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(v: Value) -> GuardrailPolicy {
        serde_json::from_value(v).unwrap()
    }

    fn guard(v: Value) -> Guard {
        let p = policy(v);
        assert!(
            p.validate("g", &BTreeSet::new()).is_empty(),
            "{:?}",
            p.validate("g", &BTreeSet::new())
        );
        Guard::compile(&p).unwrap().unwrap()
    }

    fn chat(content: Value) -> Map<String, Value> {
        json!({"model": "m", "messages": [{"role": "user", "content": content}]})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn redacts_with_typed_consistent_placeholders() {
        let g = guard(json!({"input": {"email": "redact", "phone": "redact", "card": "log"}}));
        let mut body = chat(json!(
            "Mail jane@example.com or bob@example.org, again jane@example.com; call +44 20 7946 0958. Card 4111 1111 1111 1111."
        ));
        let out = g.check_input(Endpoint::ChatCompletions, &mut body).unwrap();
        assert_eq!(
            body["messages"][0]["content"],
            "Mail <EMAIL_1> or <EMAIL_2>, again <EMAIL_1>; call <PHONE_1>. Card 4111 1111 1111 1111."
        );
        let summary: Vec<(String, &str, u32)> = out
            .events
            .iter()
            .map(|e| (e.detector.clone(), e.action, e.count))
            .collect();
        assert_eq!(
            summary,
            [
                ("card".to_owned(), "log", 1),
                ("email".to_owned(), "redact", 3),
                ("phone".to_owned(), "redact", 1)
            ]
        );
    }

    #[test]
    fn block_names_the_detector_never_the_value() {
        let g = guard(json!({"input": {"iban": "block", "email": "redact"}}));
        let mut body =
            chat(json!([{"type": "text", "text": "to DE89 3704 0044 0532 0130 00 from a@b.io"}]));
        let r = g
            .check_input(Endpoint::ChatCompletions, &mut body)
            .unwrap_err();
        assert_eq!(r.error.status(), 400);
        assert_eq!(r.error.code(), "guardrail_blocked");
        let msg = r.error.message();
        assert!(msg.contains("'iban'"), "{msg}");
        assert!(!msg.contains("DE89") && !msg.contains("a@b.io"));
        assert!(r
            .events
            .iter()
            .any(|e| e.detector == "iban" && e.action == "block"));
    }

    #[test]
    fn operator_patterns_and_words() {
        let g = guard(json!({
            "patterns": {"employee_id": "EMP-[0-9]{6}"},
            "words": {"codenames": ["Project Falcon", "bluebird"]},
            "input": {"employee_id": "redact", "codenames": "redact"}
        }));
        let mut body = chat(json!("EMP-123456 works on project falcon, not bluebirds."));
        g.check_input(Endpoint::ChatCompletions, &mut body).unwrap();
        assert_eq!(
            body["messages"][0]["content"],
            "<EMPLOYEE_ID_1> works on <CODENAMES_1>, not bluebirds."
        );
    }

    #[test]
    fn limits() {
        let g = guard(json!({"max_messages": 1, "max_tokens": 100, "max_input_tokens": 5}));
        let mut two = json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(
            g.check_input(Endpoint::ChatCompletions, &mut two)
                .unwrap_err()
                .error
                .code(),
            "too_many_messages"
        );
        let mut big = chat(json!("hi"));
        big.insert("max_completion_tokens".into(), json!(101));
        assert_eq!(
            g.check_input(Endpoint::ChatCompletions, &mut big)
                .unwrap_err()
                .error
                .code(),
            "max_tokens_too_large"
        );
        let mut long = chat(json!("x".repeat(21)));
        assert_eq!(
            g.check_input(Endpoint::ChatCompletions, &mut long)
                .unwrap_err()
                .error
                .code(),
            "input_too_long"
        );
        let mut ok = chat(json!("x".repeat(20)));
        g.check_input(Endpoint::ChatCompletions, &mut ok).unwrap();
    }

    #[test]
    fn embeddings_input_and_tool_arguments_are_scanned() {
        let g = guard(json!({"input": {"email": "redact"}}));
        let mut emb = json!({"input": ["x a@b.io", "plain"]})
            .as_object()
            .unwrap()
            .clone();
        g.check_input(Endpoint::Embeddings, &mut emb).unwrap();
        assert_eq!(emb["input"][0], "x <EMAIL_1>");
        let mut body = json!({"messages": [{"role": "assistant", "content": null, "tool_calls": [{"function": {"name": "f", "arguments": "{\"to\":\"a@b.io\"}"}}]}]})
            .as_object()
            .unwrap()
            .clone();
        g.check_input(Endpoint::ChatCompletions, &mut body).unwrap();
        assert_eq!(
            body["messages"][0]["tool_calls"][0]["function"]["arguments"],
            "{\"to\":\"<EMAIL_1>\"}"
        );
    }

    #[test]
    fn levels_overlay_per_detector_and_off_disables() {
        let global =
            policy(json!({"input": {"email": "redact", "phone": "block"}, "max_messages": 10}));
        let key = policy(json!({"input": {"phone": "off"}, "reversible": true}));
        let route = policy(json!({"input": {"email": "block"}}));
        let p = global.overlay(&key).overlay(&route);
        assert_eq!(p.input["email"], Action::Block);
        assert_eq!(p.input["phone"], Action::Off);
        assert_eq!(p.reversible, Some(true));
        assert_eq!(p.max_messages, Some(10));
        let g = Guard::compile(&p).unwrap().unwrap();
        assert_eq!(g.input.len(), 1);
        assert!(Guard::compile(&GuardrailPolicy::default())
            .unwrap()
            .is_none());
    }

    #[test]
    fn validation_is_strict() {
        let p = policy(json!({
            "input": {"emial": "redact", "mine": "log"},
            "patterns": {"Bad Name": "x", "email": "y", "broken": "(", "mine": "z"},
            "words": {"mine": []},
            "max_tokens": 0
        }));
        let errors = p.validate("guardrails", &BTreeSet::new()).join("\n");
        for needle in [
            "unknown detector 'emial'",
            "'Bad Name'",
            "'email' is a built-in",
            "patterns.broken",
            "both a pattern and a word list",
            "words.mine",
            "max_tokens",
        ] {
            assert!(errors.contains(needle), "missing {needle:?} in\n{errors}");
        }
        assert!(serde_json::from_value::<GuardrailPolicy>(json!({"inputs": {}})).is_err());
        assert!(
            serde_json::from_value::<GuardrailPolicy>(json!({"input": {"email": "mask"}})).is_err()
        );
        // A name defined at a less specific level is known.
        let key = policy(json!({"output": {"codenames": "block"}}));
        assert!(key
            .validate("k", &BTreeSet::from(["codenames".to_owned()]))
            .is_empty());
    }

    #[test]
    fn output_redacts_blocks_and_restores() {
        let g = guard(
            json!({"input": {"email": "redact"}, "output": {"card": "redact", "api_key": "block"}, "reversible": true}),
        );
        let mut body = chat(json!("I am jane@example.com"));
        let input = g.check_input(Endpoint::ChatCompletions, &mut body).unwrap();
        let out = g.output(&input).unwrap();
        let mut tally = Tally::default();
        let mut answer = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi <EMAIL_1>, card 4111111111111111"}}]});
        out.completion(&mut answer, &mut tally).unwrap();
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            "Hi jane@example.com, card <CARD_REDACTED>"
        );
        let mut leak =
            json!({"choices": [{"message": {"content": "key sk-abc123def456ghi789jkl012"}}]});
        assert_eq!(
            out.completion(&mut leak, &mut tally).unwrap_err(),
            "api_key"
        );
        // Not reversible: the placeholders stay.
        let g = guard(json!({"input": {"email": "redact"}}));
        let input = g
            .check_input(Endpoint::ChatCompletions, &mut chat(json!("a@b.io")))
            .unwrap();
        assert!(g.output(&input).is_none());
    }
}
