//! Token usage as providers report it, and the observer that watches an
//! OpenAI-format SSE stream on its way to the client.
//!
//! The observer works frame by frame (never on raw chunk boundaries), forwards
//! each frame's exact bytes, and records what the ledger needs: usage, finish
//! reason, whether `[DONE]` arrived and whether an error frame did.

use serde_json::Value;

use crate::secret::{scrub, scrub_key_like, Secret};
use crate::sse::{SseDecoder, SseError, DEFAULT_MAX_LINE_BYTES};

/// Token counts for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cached_prompt_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
}

fn count(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Reads a `usage` object (chat or embeddings shape).
pub fn usage_from_object(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let prompt = count(u, "prompt_tokens")?;
    let completion = count(u, "completion_tokens").unwrap_or(0);
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: count(u, "total_tokens").unwrap_or(prompt + completion),
        cached_prompt_tokens: u
            .get("prompt_tokens_details")
            .and_then(|d| count(d, "cached_tokens")),
        reasoning_tokens: u
            .get("completion_tokens_details")
            .and_then(|d| count(d, "reasoning_tokens")),
    })
}

/// Usage from a whole response body or one stream chunk: OpenAI's `usage`, or
/// Groq's `x_groq.usage` on its final chunk.
pub fn usage_from_response(body: &Value) -> Option<Usage> {
    body.get("usage").and_then(usage_from_object).or_else(|| {
        body.get("x_groq")
            .and_then(|x| x.get("usage"))
            .and_then(usage_from_object)
    })
}

/// What to do with one frame.
enum Forward {
    Raw,
    Replace(String),
    Drop,
}

/// How a stream ended, as far as the gateway can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// `[DONE]` arrived after content.
    Completed,
    /// The provider sent an error frame inside its 200 stream.
    UpstreamErrorFrame,
    /// The body ended (or broke) before `[DONE]`.
    Truncated,
    /// The client went away before the end.
    ClientAborted,
}

/// What the ledger needs from a finished stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSummary {
    pub end: StreamEnd,
    pub usage: Option<Usage>,
    /// Characters of content, reasoning and tool arguments the client was
    /// sent: the basis of an estimate when the provider reported no usage.
    pub delivered_chars: u64,
    /// The complete answer, when an accumulator was attached and the stream
    /// finished cleanly with usage (what the exact cache stores).
    pub completion: Option<crate::openai::ChatCompletion>,
    pub finish_reason: Option<String>,
    pub model: Option<String>,
}

/// Watches an OpenAI-format chat stream; see the module docs.
pub struct ChatStreamObserver {
    decoder: SseDecoder,
    /// Drop the usage-only chunk (`choices: []`) because the client did not ask
    /// for usage and the gateway requested it only for its own accounting.
    strip_usage_chunk: bool,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    model: Option<String>,
    saw_done: bool,
    saw_error_frame: bool,
    delivered_chars: u64,
    /// The provider key, to scrub from error frames the provider sends.
    api_key: Option<Secret>,
    /// Rebuilds the complete answer for the exact cache (fed the upstream's
    /// frames before any usage chunk is stripped).
    accumulator: Option<crate::cache::StreamAccumulator>,
}

impl ChatStreamObserver {
    pub fn new(strip_usage_chunk: bool, api_key: Option<Secret>) -> Self {
        Self {
            decoder: SseDecoder::new(DEFAULT_MAX_LINE_BYTES),
            strip_usage_chunk,
            api_key,
            accumulator: None,
            usage: None,
            finish_reason: None,
            model: None,
            saw_done: false,
            saw_error_frame: false,
            delivered_chars: 0,
        }
    }

    /// Also rebuild the whole answer, for caching (texts beyond `max_bytes`
    /// make it uncacheable).
    #[must_use]
    pub fn with_accumulator(mut self, max_bytes: usize) -> Self {
        self.accumulator = Some(crate::cache::StreamAccumulator::with_limit(max_bytes));
        self
    }

    /// Feeds upstream bytes; returns the bytes to send to the client now (whole
    /// frames only).
    pub fn on_bytes(&mut self, bytes: &[u8]) -> Result<Vec<u8>, SseError> {
        let mut out = Vec::with_capacity(bytes.len());
        for frame in self.decoder.push(bytes)? {
            if let (Some(acc), Some(data)) = (self.accumulator.as_mut(), frame.data.as_deref()) {
                acc.on_data(data);
            }
            let forward = match frame.data.as_deref() {
                Some("[DONE]") => {
                    self.saw_done = true;
                    Forward::Raw
                }
                Some(data) => self.observe_chunk(data),
                None => Forward::Raw,
            };
            match forward {
                Forward::Raw => out.extend_from_slice(&frame.raw),
                Forward::Replace(text) => out.extend_from_slice(text.as_bytes()),
                Forward::Drop => {}
            }
        }
        Ok(out)
    }

    /// Records what a data frame says; returns what to send the client.
    fn observe_chunk(&mut self, data: &str) -> Forward {
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return Forward::Raw;
        };
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            self.saw_error_frame = true;
            return Forward::Replace(self.clean_error_frame(error));
        }
        if let Some(m) = chunk.get("model").and_then(Value::as_str) {
            if self.model.is_none() {
                self.model = Some(m.to_owned());
            }
        }
        let choices = chunk.get("choices").and_then(Value::as_array);
        if let Some(choices) = choices {
            for c in choices {
                if let Some(r) = c.get("finish_reason").and_then(Value::as_str) {
                    self.finish_reason = Some(r.to_owned());
                }
                self.delivered_chars += delta_chars(c.get("delta"));
            }
        }
        let usage = usage_from_response(&chunk);
        if usage.is_some() {
            self.usage = usage;
        }
        let usage_only = usage.is_some() && choices.is_some_and(Vec::is_empty);
        if self.strip_usage_chunk && usage_only {
            Forward::Drop
        } else {
            Forward::Raw
        }
    }

    /// A provider's in-stream error, rebuilt by the gateway: the provider's
    /// message with its key and anything key-shaped scrubbed (providers echo
    /// keys in auth errors), in OpenAI's error shape. Never the raw frame.
    fn clean_error_frame(&self, error: &Value) -> String {
        let raw_message = error
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| error.as_str())
            .unwrap_or("The provider reported an error in its stream.");
        let message = match &self.api_key {
            Some(k) => scrub(raw_message, k),
            None => raw_message.to_owned(),
        };
        let message: String = scrub_key_like(&message).chars().take(500).collect();
        let body = serde_json::json!({
            "error": {
                "message": message,
                "type": "server_error",
                "param": null,
                "code": "upstream_error",
            }
        });
        crate::sse::encode_data(&body.to_string())
    }

    /// Whether an error frame has been seen (before the commit point this makes
    /// the attempt a failure rather than a response).
    pub fn saw_error_frame(&self) -> bool {
        self.saw_error_frame
    }

    /// Ends observation. `client_aborted` is true when the client went away.
    pub fn finish(self, client_aborted: bool) -> StreamSummary {
        let end = if self.saw_error_frame {
            StreamEnd::UpstreamErrorFrame
        } else if client_aborted {
            StreamEnd::ClientAborted
        } else if self.saw_done {
            StreamEnd::Completed
        } else {
            StreamEnd::Truncated
        };
        let completion = match end {
            StreamEnd::Completed => self
                .accumulator
                .and_then(crate::cache::StreamAccumulator::complete),
            _ => None,
        };
        StreamSummary {
            end,
            usage: self.usage,
            delivered_chars: self.delivered_chars,
            completion,
            finish_reason: self.finish_reason,
            model: self.model,
        }
    }
}

/// Characters of generated text in one chunk's delta.
fn delta_chars(delta: Option<&Value>) -> u64 {
    let Some(d) = delta else { return 0 };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map_or(0, |s| s.chars().count());
    let mut n = text(d.get("content")) + text(d.get("reasoning_content"));
    if let Some(calls) = d.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            n += text(c.get("function").and_then(|f| f.get("arguments")));
        }
    }
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Usage for a stream whose provider reported none (cut, or a provider that
/// does not report it): about four characters per token, rounded up — an
/// estimate, stored as such, never a silent zero.
pub fn estimate_usage(prompt_bytes: u64, delivered_chars: u64) -> Usage {
    let prompt_tokens = prompt_bytes.div_ceil(4);
    let completion_tokens = delivered_chars.div_ceil(4);
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
        cached_prompt_tokens: None,
        reasoning_tokens: None,
    }
}

/// Usage to charge when the provider reported none (a stream without a usage
/// frame, a cut stream, a body without `usage`): the request's reservation —
/// the prompt at its upper bound and the completion at its cap (`max_tokens`,
/// or the configured default) — or what visibly arrived if that is more.
/// Stored flagged `estimated`; it errs toward charging, never toward free.
pub fn unreported_usage(
    reserved_prompt_tokens: u64,
    reserved_completion_tokens: u64,
    prompt_bytes: u64,
    delivered_chars: u64,
) -> Usage {
    let seen = estimate_usage(prompt_bytes, delivered_chars);
    let prompt_tokens = reserved_prompt_tokens.max(seen.prompt_tokens);
    let completion_tokens = reserved_completion_tokens.max(seen.completion_tokens);
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens.saturating_add(completion_tokens),
        cached_prompt_tokens: None,
        reasoning_tokens: None,
    }
}

/// The frame sent to a client when a stream breaks after the commit point:
/// an error event and no `[DONE]`, so SDKs surface the failure instead of
/// presenting a cut answer as complete.
pub fn truncation_error_frame() -> String {
    let body = serde_json::json!({
        "error": {
            "message": "The upstream stream ended before the response was complete.",
            "type": "server_error",
            "param": null,
            "code": "upstream_truncated",
        }
    });
    crate::sse::encode_data(&body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(v: &Value) -> String {
        format!("data: {v}\n\n")
    }

    fn openai_stream(include_usage_chunk: bool) -> String {
        let mut s = String::new();
        s += &frame(
            &json!({"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini-2024","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}),
        );
        s += &frame(
            &json!({"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini-2024","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}),
        );
        s += &frame(
            &json!({"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini-2024","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}),
        );
        if include_usage_chunk {
            s += &frame(
                &json!({"id":"c","object":"chat.completion.chunk","model":"gpt-4o-mini-2024","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":0}}}),
            );
        }
        s += "data: [DONE]\n\n";
        s
    }

    #[test]
    fn usage_shapes() {
        let u = usage_from_response(
            &json!({"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}),
        )
        .unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (3, 2, 5)
        );
        let e =
            usage_from_response(&json!({"usage":{"prompt_tokens":7,"total_tokens":7}})).unwrap();
        assert_eq!(
            (e.prompt_tokens, e.completion_tokens, e.total_tokens),
            (7, 0, 7)
        );
        let g = usage_from_response(
            &json!({"x_groq":{"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}}),
        )
        .unwrap();
        assert_eq!(g.total_tokens, 2);
        assert_eq!(usage_from_response(&json!({"usage":null})), None);
    }

    #[test]
    fn usage_chunk_is_stripped_only_when_asked_and_counted_always() {
        let input = openai_stream(true);
        for strip in [true, false] {
            let mut obs = ChatStreamObserver::new(strip, None);
            // Feed in awkward 7-byte pieces.
            let mut out = Vec::new();
            for piece in input.as_bytes().chunks(7) {
                out.extend(obs.on_bytes(piece).unwrap());
            }
            let out = String::from_utf8(out).unwrap();
            assert_eq!(out.contains("\"choices\":[]"), !strip);
            assert!(out.ends_with("data: [DONE]\n\n"));
            let s = obs.finish(false);
            assert_eq!(s.end, StreamEnd::Completed);
            let u = s.usage.unwrap();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.total_tokens),
                (9, 1, 10)
            );
            assert_eq!(u.cached_prompt_tokens, Some(4));
            assert_eq!(s.finish_reason.as_deref(), Some("stop"));
            assert_eq!(s.model.as_deref(), Some("gpt-4o-mini-2024"));
        }
    }

    #[test]
    fn forwarded_bytes_equal_input_when_nothing_is_stripped() {
        let input = openai_stream(true);
        let mut obs = ChatStreamObserver::new(false, None);
        let mut out = Vec::new();
        for b in input.as_bytes() {
            out.extend(obs.on_bytes(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(out, input.as_bytes());
    }

    #[test]
    fn ends_are_classified() {
        let cut: String = openai_stream(false).replace("data: [DONE]\n\n", "");
        let mut obs = ChatStreamObserver::new(true, None);
        obs.on_bytes(cut.as_bytes()).unwrap();
        let s = obs.finish(false);
        assert_eq!(s.end, StreamEnd::Truncated);
        assert_eq!(s.usage, None);
        assert_eq!(s.delivered_chars, 2, "the 'Hi' that reached the client");
        let e = estimate_usage(401, s.delivered_chars);
        assert_eq!(
            (e.prompt_tokens, e.completion_tokens, e.total_tokens),
            (101, 1, 102)
        );

        let mut obs = ChatStreamObserver::new(true, None);
        obs.on_bytes(b"data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n")
            .unwrap();
        assert_eq!(obs.finish(false).end, StreamEnd::UpstreamErrorFrame);

        let mut obs = ChatStreamObserver::new(true, None);
        obs.on_bytes(openai_stream(true).as_bytes()).unwrap();
        assert_eq!(obs.finish(true).end, StreamEnd::ClientAborted);
    }

    #[test]
    fn error_frames_are_rebuilt_without_the_key() {
        let key = Secret::new("sk-CANARY-0123456789abcdef");
        let mut obs = ChatStreamObserver::new(true, Some(key));
        let first = frame(&json!({"choices":[{"index":0,"delta":{"content":"partial"}}]}));
        let bad = frame(
            &json!({"error":{"message":"Incorrect API key provided: sk-CANARY-0123456789abcdef (Bearer sk-CANARY-0123456789abcdef)","type":"invalid_request_error","code":"invalid_api_key"}}),
        );
        let out = obs.on_bytes(format!("{first}{bad}").as_bytes()).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with(&first));
        assert!(!out.contains("CANARY"), "{out}");
        assert!(!out.contains("01234567"), "{out}");
        assert!(out.contains("\"code\":\"upstream_error\""));
        assert!(out.contains("Incorrect API key provided: [redacted]"));
        assert_eq!(obs.finish(false).end, StreamEnd::UpstreamErrorFrame);
    }

    #[test]
    fn truncation_frame_is_an_sse_error_event() {
        let f = truncation_error_frame();
        assert!(f.starts_with("data: {"));
        assert!(f.ends_with("\n\n"));
        let v: Value = serde_json::from_str(f.trim_start_matches("data: ").trim()).unwrap();
        assert_eq!(v["error"]["code"], "upstream_truncated");
    }

    #[test]
    fn unreported_usage_charges_the_reservation_or_more() {
        let u = unreported_usage(1_124, 256, 100, 40);
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (1_124, 256, 1_380)
        );
        // A stream that delivered more than the cap (no max_tokens sent, a
        // default cap below what the model produced) is charged what it showed.
        let u = unreported_usage(1_124, 256, 100, 4_000);
        assert_eq!(u.completion_tokens, 1_000);
    }
}
