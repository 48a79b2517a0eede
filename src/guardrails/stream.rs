//! Output guardrails on a streamed answer. Per choice, the content deltas go
//! through a scanner with a holdback (text is released only once no match
//! can still start in it or grow over it) and then through the placeholder
//! restorer; each OpenAI chunk leaves with the released text as its content.
//! A `block` match ends the stream with an error frame instead of the text.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{non_overlapping, output_placeholder, replace_hits, scan, Action, OutputGuard, Tally};
use super::{Rule, StreamRestorer};
use crate::sse::{encode_data, SseDecoder, SseError, DEFAULT_MAX_LINE_BYTES};

/// Bytes of unreleased text kept so a match cut by a chunk boundary is still
/// seen whole: longer than every bounded built-in match (an email address is
/// at most 254 characters in practice; cards, phones, IBANs, keys far less).
pub const HOLDBACK_BYTES: usize = 256;
/// Text already released, kept as left context for boundary checks.
const CONTEXT_BYTES: usize = 32;
/// Most text held for one open match (an unterminated private key block)
/// before it is released redacted anyway.
const MAX_PENDING_BYTES: usize = 64 * 1024;

/// The largest char boundary of `s` not above `i`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Scans a text that arrives in pieces.
#[derive(Debug, Clone)]
pub struct StreamScanner {
    rules: Vec<Rule>,
    context: String,
    pending: String,
}

impl StreamScanner {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules,
            context: String::new(),
            pending: String::new(),
        }
    }

    /// Text in; redacted text safe to release now, or `Err(detector)`.
    pub fn push(&mut self, text: &str, tally: &mut Tally) -> Result<String, String> {
        if self.rules.is_empty() {
            return Ok(text.to_owned());
        }
        self.pending.push_str(text);
        self.release(false, tally)
    }

    /// The text ended: release everything.
    pub fn finish(&mut self, tally: &mut Tally) -> Result<String, String> {
        if self.rules.is_empty() {
            return Ok(std::mem::take(&mut self.pending));
        }
        self.release(true, tally)
    }

    fn release(&mut self, all: bool, tally: &mut Tally) -> Result<String, String> {
        let offset = self.context.len();
        // The held-back window, rescanned once per delta: the released left
        // context plus the unreleased text, never the whole answer so far.
        let mut window = String::with_capacity(offset + self.pending.len());
        window.push_str(&self.context);
        window.push_str(&self.pending);
        let hits: Vec<_> = scan(&self.rules, &window)
            .into_iter()
            .filter(|h| h.start >= offset)
            .map(|mut h| {
                h.start -= offset;
                h.end -= offset;
                h
            })
            .collect();
        let len = self.pending.len();
        let mut cut = if all || len > MAX_PENDING_BYTES {
            len
        } else {
            floor_boundary(&self.pending, len.saturating_sub(HOLDBACK_BYTES))
        };
        if !all && len <= MAX_PENDING_BYTES {
            // Never cut through a match, and hold a match that reaches the
            // end: it may still grow.
            loop {
                let straddling = hits
                    .iter()
                    .filter(|h| h.start < cut && (h.end > cut || h.end == len))
                    .map(|h| h.start)
                    .min();
                match straddling {
                    Some(s) if s < cut => cut = s,
                    _ => break,
                }
            }
        }
        let done: Vec<_> = hits
            .into_iter()
            .filter(|h| h.end <= cut || (all && h.start < cut))
            .collect();
        for h in &done {
            if let Some(r) = self.rules.get(h.rule) {
                tally.add(&r.name, r.action, 1);
            }
        }
        if let Some(r) = done
            .iter()
            .filter_map(|h| self.rules.get(h.rule))
            .find(|r| r.action == Action::Block)
        {
            self.pending.clear();
            return Err(r.name.clone());
        }
        let rest = self.pending.split_off(cut);
        let ready = std::mem::replace(&mut self.pending, rest);
        let keep = non_overlapping(&done, &self.rules);
        let out = replace_hits(&ready, &keep, |h, _| {
            self.rules
                .get(h.rule)
                .map_or_else(String::new, output_placeholder)
        });
        let mut context = std::mem::take(&mut self.context);
        context.push_str(&ready);
        let from = floor_boundary(&context, context.len().saturating_sub(CONTEXT_BYTES));
        self.context = context.split_off(from);
        Ok(out)
    }
}

/// One choice's text path: scanner, then restorer.
#[derive(Debug, Clone)]
struct ChoiceText {
    scanner: StreamScanner,
    restorer: StreamRestorer,
}

impl ChoiceText {
    fn push(&mut self, text: &str, tally: &mut Tally) -> Result<String, String> {
        let scanned = self.scanner.push(text, tally)?;
        Ok(self.restorer.push(&scanned))
    }

    fn finish(&mut self, tally: &mut Tally) -> Result<String, String> {
        let scanned = self.scanner.finish(tally)?;
        let mut out = self.restorer.push(&scanned);
        out.push_str(&self.restorer.finish());
        Ok(out)
    }
}

/// Rewrites an OpenAI-format chat SSE stream through an [`OutputGuard`].
#[derive(Debug)]
pub struct SseGuard {
    guard: OutputGuard,
    decoder: SseDecoder,
    choices: BTreeMap<u64, ChoiceText>,
    /// The last chunk's data, whose envelope (id, model, created) a chunk
    /// that carries text still held when the stream ends without a finish
    /// reuses. Kept as text and parsed only then (rarely), not cloned as a
    /// JSON value on every delta.
    last_chunk: Option<String>,
    tally: Tally,
    blocked: Option<String>,
}

impl SseGuard {
    pub fn new(guard: OutputGuard) -> Self {
        Self {
            guard,
            decoder: SseDecoder::new(DEFAULT_MAX_LINE_BYTES),
            choices: BTreeMap::new(),
            last_chunk: None,
            tally: Tally::default(),
            blocked: None,
        }
    }

    /// What the guardrails did so far (for the ledger).
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// The detector that blocked the answer, if one did.
    pub fn blocked(&self) -> Option<&str> {
        self.blocked.as_deref()
    }

    fn choice(&mut self, index: u64) -> &mut ChoiceText {
        let guard = &self.guard;
        self.choices.entry(index).or_insert_with(|| ChoiceText {
            scanner: StreamScanner::new(guard.rules.clone()),
            restorer: StreamRestorer::new(guard.restore.clone()),
        })
    }

    /// Upstream (already OpenAI-format) bytes in; client bytes out.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, SseError> {
        if self.blocked.is_some() {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(bytes.len());
        for frame in self.decoder.push(bytes)? {
            let Some(data) = frame.data.as_deref() else {
                out.extend_from_slice(&frame.raw);
                continue;
            };
            if data == "[DONE]" {
                match self.flush_all() {
                    Ok(tail) => out.extend_from_slice(tail.as_bytes()),
                    Err(frame) => {
                        out.extend_from_slice(frame.as_bytes());
                        return Ok(out);
                    }
                }
                out.extend_from_slice(&frame.raw);
                continue;
            }
            match self.chunk(data) {
                Ok(None) => out.extend_from_slice(&frame.raw),
                Ok(Some(rewritten)) => out.extend_from_slice(rewritten.as_bytes()),
                Err(error_frame) => {
                    out.extend_from_slice(error_frame.as_bytes());
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// The stream ended (with or without `[DONE]`): anything still held.
    pub fn end(&mut self) -> Vec<u8> {
        if self.blocked.is_some() {
            return Vec::new();
        }
        match self.flush_all() {
            Ok(tail) | Err(tail) => tail.into_bytes(),
        }
    }

    fn block(&mut self, detector: String) -> String {
        let error = OutputGuard::blocked_error(&detector);
        self.blocked = Some(detector);
        encode_data(&error.to_body().to_string())
    }

    /// One data frame: `None` to forward it as it was, else its replacement.
    fn chunk(&mut self, data: &str) -> Result<Option<String>, String> {
        let Ok(mut chunk) = serde_json::from_str::<Value>(data) else {
            return Ok(None);
        };
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else {
            return Ok(None);
        };
        let mut changed = false;
        let mut edits: Vec<(usize, Option<String>, bool)> = Vec::new();
        for (i, c) in choices.iter().enumerate() {
            let content = c
                .get("delta")
                .and_then(|d| d.get("content"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let finished = c.get("finish_reason").is_some_and(|r| !r.is_null());
            if content.is_some() || finished {
                edits.push((i, content, finished));
            }
        }
        let mut results = Vec::new();
        for (i, content, finished) in edits {
            let index = choices
                .get(i)
                .and_then(|c| c.get("index"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let mut tally = std::mem::take(&mut self.tally);
            let state = self.choice(index);
            let mut text = match content.as_deref() {
                Some(t) => state.push(t, &mut tally),
                None => Ok(String::new()),
            };
            if finished {
                text = text.and_then(|mut t| {
                    t.push_str(&state.finish(&mut tally)?);
                    Ok(t)
                });
                self.choices.remove(&index);
            }
            self.tally = tally;
            match text {
                Ok(t) => results.push((i, content, t)),
                Err(detector) => return Err(self.block(detector)),
            }
        }
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else {
            return Ok(None);
        };
        for (i, original, text) in results {
            if original.as_deref() == Some(text.as_str()) {
                continue;
            }
            if original.is_none() && text.is_empty() {
                continue;
            }
            if let Some(delta) = choices
                .get_mut(i)
                .and_then(|c| c.get_mut("delta"))
                .and_then(Value::as_object_mut)
            {
                delta.insert("content".to_owned(), Value::String(text));
                changed = true;
            }
        }
        match &mut self.last_chunk {
            Some(last) => {
                last.clear();
                last.push_str(data);
            }
            None => self.last_chunk = Some(data.to_owned()),
        }
        Ok(changed.then(|| encode_data(&json_text(&chunk))))
    }

    /// Releases every choice's held text as one chunk (normally nothing is
    /// held: a choice's finish flushes it).
    fn flush_all(&mut self) -> Result<String, String> {
        let mut tally = std::mem::take(&mut self.tally);
        let mut parts = Vec::new();
        let mut blocked = None;
        for (index, state) in std::mem::take(&mut self.choices) {
            let mut state = state;
            match state.finish(&mut tally) {
                Ok(t) if !t.is_empty() => parts.push((index, t)),
                Ok(_) => {}
                Err(d) => {
                    blocked = Some(d);
                    break;
                }
            }
        }
        self.tally = tally;
        if let Some(d) = blocked {
            return Err(self.block(d));
        }
        if parts.is_empty() {
            return Ok(String::new());
        }
        let mut chunk = self
            .last_chunk
            .as_deref()
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
            .filter(Value::is_object)
            .unwrap_or_else(
                || serde_json::json!({"object": "chat.completion.chunk", "choices": []}),
            );
        if let Some(o) = chunk.as_object_mut() {
            o.remove("usage");
            o.insert(
                "choices".to_owned(),
                Value::Array(
                    parts
                        .into_iter()
                        .map(|(index, t)| {
                            serde_json::json!({"index": index, "delta": {"content": t}, "finish_reason": null})
                        })
                        .collect(),
                ),
            );
        }
        Ok(encode_data(&json_text(&chunk)))
    }
}

/// A JSON value as text, written straight into a `String` (`Value`'s
/// `Display` goes through a formatter adapter and costs about twice as much
/// on every rewritten delta).
fn json_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| v.to_string())
}

/// Guards a whole SSE body at once (a cache replay).
pub fn guard_sse_body(guard: OutputGuard, body: &[u8]) -> (Vec<u8>, Tally, Option<String>) {
    let mut g = SseGuard::new(guard);
    let mut out = g.push(body).unwrap_or_else(|_| body.to_vec());
    out.extend(g.end());
    let blocked = g.blocked().map(str::to_owned);
    (out, g.tally, blocked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guardrails::{Guard, GuardrailPolicy, InputOutcome, Placeholders};
    use crate::sse::DONE_FRAME;
    use serde_json::json;

    fn output_guard(policy: Value, placeholders: &[(&str, &str)]) -> OutputGuard {
        let p: GuardrailPolicy = serde_json::from_value(policy).unwrap();
        let g = Guard::compile(&p).unwrap().unwrap();
        let mut map = Placeholders::default();
        for (tag, value) in placeholders {
            map.placeholder(tag, value);
        }
        g.output(&InputOutcome {
            events: vec![],
            placeholders: map,
        })
        .unwrap()
    }

    fn sse(pieces: &[&str]) -> String {
        let mut s = String::new();
        for p in pieces {
            let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]});
            s += &encode_data(&chunk.to_string());
        }
        let fin = json!({"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        s += &encode_data(&fin.to_string());
        s += DONE_FRAME;
        s
    }

    fn content(out: &str) -> String {
        let mut text = String::new();
        for line in out.lines() {
            if let Some(v) = line
                .strip_prefix("data: ")
                .and_then(|d| serde_json::from_str::<Value>(d).ok())
            {
                if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                    text.push_str(c);
                }
            }
        }
        text
    }

    fn run(guard: &OutputGuard, body: &str, piece: usize) -> (String, Tally) {
        let mut g = SseGuard::new(guard.clone());
        let mut out = Vec::new();
        for chunk in body.as_bytes().chunks(piece) {
            out.extend(g.push(chunk).unwrap());
        }
        out.extend(g.end());
        (String::from_utf8(out).unwrap(), g.tally().clone())
    }

    /// A placeholder or a card number split over deltas at every point is
    /// restored / redacted exactly as in the whole text.
    #[test]
    fn every_delta_split_gives_the_whole_text_result() {
        let guard = output_guard(
            json!({"input": {"email": "redact"}, "output": {"card": "redact"}, "reversible": true}),
            &[("EMAIL", "jane@example.com")],
        );
        let answer = "Dear <EMAIL_1>, your card 4111 1111 1111 1111 is on file. Bye <EMAIL_1>";
        let expected =
            "Dear jane@example.com, your card <CARD_REDACTED> is on file. Bye jane@example.com";
        for a in 0..=answer.len() {
            for b in (a..=answer.len()).step_by(3) {
                let body = sse(&[&answer[..a], &answer[a..b], &answer[b..]]);
                let (out, tally) = run(&guard, &body, 4096);
                assert_eq!(content(&out), expected, "split at {a}/{b}");
                assert!(out.ends_with(DONE_FRAME));
                assert_eq!(tally.events("output").len(), 1);
            }
        }
        // And byte-sliced transport on top.
        let body = sse(&answer.split_inclusive(' ').collect::<Vec<_>>());
        for piece in [1, 7, 64] {
            assert_eq!(content(&run(&guard, &body, piece).0), expected);
        }
    }

    #[test]
    fn block_ends_the_stream_with_an_error_frame_and_no_leak() {
        let guard = output_guard(json!({"output": {"api_key": "block"}}), &[]);
        let body = sse(&["here: sk-abc123def4", "56ghi789jkl012 done"]);
        let (out, tally) = run(&guard, &body, 4096);
        assert!(!out.contains("sk-abc"), "{out}");
        assert!(out.contains("guardrail_blocked"));
        assert!(!out.contains("[DONE]"));
        assert_eq!(tally.blocked(), Some("api_key"));
    }

    #[test]
    fn restore_only_holds_back_partial_placeholders() {
        let guard = output_guard(
            json!({"input": {"email": "redact"}, "reversible": true}),
            &[("EMAIL", "a@b.io")],
        );
        let mut g = SseGuard::new(guard);
        let chunk = |t: &str| {
            encode_data(
                &json!({"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]})
                    .to_string(),
            )
        };
        // No output detectors: no 256-byte holdback, only the partial placeholder waits.
        let first = String::from_utf8(g.push(chunk("Hi <EMA").as_bytes()).unwrap()).unwrap();
        assert_eq!(content(&first), "Hi ");
        let second = String::from_utf8(g.push(chunk("IL_1>!").as_bytes()).unwrap()).unwrap();
        assert_eq!(content(&second), "a@b.io!");
    }

    #[test]
    fn unterminated_private_key_is_held_then_redacted() {
        let guard = output_guard(json!({"output": {"private_key": "redact"}}), &[]);
        let body = sse(&[
            "key:\n-----BEGIN PRIVATE KEY-----\nMIIE",
            &"A".repeat(600),
            "\n-----END PRIVATE KEY-----\nok",
        ]);
        for piece in [5, 4096] {
            let (out, _) = run(&guard, &body, piece);
            assert_eq!(content(&out), "key:\n<PRIVATE_KEY_REDACTED>\nok");
        }
    }
}
