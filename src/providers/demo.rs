//! The built-in `demo` provider: deterministic answers in OpenAI's wire format,
//! produced inside the Worker, so a newcomer sees a full round trip (auth,
//! routing, ledger, streaming) before configuring any real provider key.
//!
//! It is clearly not a model: every reply says it comes from the demo
//! provider and echoes the last user message. Usage counts whitespace-separated
//! words, so the numbers are reproducible.

use base64::Engine;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::error::GatewayError;

/// Dimensions of demo embeddings unless the request asks for others.
const DEFAULT_DIMENSIONS: usize = 16;
const MAX_DIMENSIONS: usize = 4096;

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn words(s: &str) -> u64 {
    u64::try_from(s.split_whitespace().count()).unwrap_or(u64::MAX)
}

fn messages(body: &Map<String, Value>) -> &[Value] {
    body.get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The reply words and usage for a chat request.
fn reply(body: &Map<String, Value>) -> (Vec<String>, u64, &'static str) {
    let msgs = messages(body);
    let prompt_tokens: u64 = msgs
        .iter()
        .map(|m| words(&text_of(m.get("content").unwrap_or(&Value::Null))))
        .sum();
    let last_user = msgs
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| text_of(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    let echoed: String = last_user.chars().take(500).collect();
    let text = format!("Hello from tollgate's demo provider. You said: {echoed}");
    let mut out: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    let limit = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
        .and_then(|n| usize::try_from(n).ok());
    let mut finish = "stop";
    if let Some(limit) = limit {
        if limit < out.len() {
            out.truncate(limit);
            finish = "length";
        }
    }
    (out, prompt_tokens, finish)
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// A `chat.completion` object.
pub fn chat_completion(body: &Map<String, Value>, model: &str, id: &str, created: u64) -> Value {
    let (out, prompt, finish) = reply(body);
    let completion = u64::try_from(out.len()).unwrap_or(u64::MAX);
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": out.join(" "), "refusal": null},
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": usage(prompt, completion),
    })
}

/// The SSE frames of a streamed chat completion, one word per content chunk,
/// ending with a usage chunk and `[DONE]` (the gateway strips the usage chunk
/// when the client did not ask for it, exactly as for OpenAI).
pub fn chat_stream_frames(
    body: &Map<String, Value>,
    model: &str,
    id: &str,
    created: u64,
) -> Vec<String> {
    let (out, prompt, finish) = reply(body);
    let chunk = |delta: Value, finish_reason: Value| {
        let v = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
            "usage": null,
        });
        crate::sse::encode_data(&v.to_string())
    };
    let mut frames = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let n = out.len();
    for (i, w) in out.iter().enumerate() {
        let piece = if i + 1 < n {
            format!("{w} ")
        } else {
            w.clone()
        };
        frames.push(chunk(json!({ "content": piece }), Value::Null));
    }
    frames.push(chunk(json!({}), Value::String(finish.to_owned())));
    let completion = u64::try_from(n).unwrap_or(u64::MAX);
    let usage_chunk = json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [], "usage": usage(prompt, completion),
    });
    frames.push(crate::sse::encode_data(&usage_chunk.to_string()));
    frames.push(crate::sse::DONE_FRAME.to_owned());
    frames
}

/// A deterministic unit vector for `text`.
fn embed(text: &str, dims: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(dims);
    let mut counter: u32 = 0;
    while v.len() < dims {
        let digest = Sha256::new()
            .chain_update(counter.to_le_bytes())
            .chain_update(text.as_bytes())
            .finalize();
        for pair in digest.chunks_exact(2) {
            if v.len() == dims {
                break;
            }
            let n = u16::from_le_bytes([
                pair.first().copied().unwrap_or(0),
                pair.get(1).copied().unwrap_or(0),
            ]);
            v.push(f32::from(n) / 32768.0 - 1.0);
        }
        counter = counter.wrapping_add(1);
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    }
    v
}

/// An embeddings `list` response; honours `dimensions` and
/// `encoding_format: "base64"` (what the official SDKs request by default).
pub fn embeddings(body: &Map<String, Value>, model: &str) -> Result<Value, GatewayError> {
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => return Err(GatewayError::invalid_param("input", "'input' is required.")),
    };
    let dims = match body.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(d) => d
            .as_u64()
            .and_then(|d| usize::try_from(d).ok())
            .filter(|d| (1..=MAX_DIMENSIONS).contains(d))
            .ok_or_else(|| {
                GatewayError::invalid_param(
                    "dimensions",
                    format!("'dimensions' must be an integer from 1 to {MAX_DIMENSIONS}."),
                )
            })?,
    };
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(GatewayError::invalid_param(
                "encoding_format",
                "'encoding_format' must be 'float' or 'base64'.",
            ))
        }
    };
    let mut tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            tokens += words(text);
            let v = embed(text, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{ChatStreamObserver, StreamEnd};

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn completion_is_deterministic_and_counts_words() {
        let b = body(
            json!({"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello there"}]}),
        );
        let a = chat_completion(&b, "echo", "id1", 1);
        assert_eq!(a, chat_completion(&b, "echo", "id1", 1));
        assert_eq!(
            a["choices"][0]["message"]["content"],
            "Hello from tollgate's demo provider. You said: hello there"
        );
        assert_eq!(a["usage"]["prompt_tokens"], 4);
        assert_eq!(a["usage"]["completion_tokens"], 9);
        assert_eq!(a["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn max_tokens_truncates() {
        let b = body(json!({"max_tokens": 3, "messages":[{"role":"user","content":"x"}]}));
        let a = chat_completion(&b, "echo", "id", 1);
        assert_eq!(
            a["choices"][0]["message"]["content"],
            "Hello from tollgate's"
        );
        assert_eq!(a["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn stream_concatenates_to_the_completion_and_reports_usage() {
        let b =
            body(json!({"messages":[{"role":"user","content":[{"type":"text","text":"hi you"}]}]}));
        let frames = chat_stream_frames(&b, "echo", "id", 1);
        let mut obs = ChatStreamObserver::new(false, None);
        let mut text = String::new();
        for f in &frames {
            let out = obs.on_bytes(f.as_bytes()).unwrap();
            let out = String::from_utf8(out).unwrap();
            if let Some(data) = out.strip_prefix("data: ") {
                if let Ok(v) = serde_json::from_str::<Value>(data.trim()) {
                    if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                        text.push_str(c);
                    }
                }
            }
        }
        let full = chat_completion(&b, "echo", "id", 1);
        assert_eq!(
            text,
            full["choices"][0]["message"]["content"].as_str().unwrap()
        );
        let s = obs.finish(false);
        assert_eq!(s.end, StreamEnd::Completed);
        assert_eq!(s.usage.unwrap().completion_tokens, 9);
    }

    #[test]
    fn embeddings_float_and_base64_agree() {
        let f = embeddings(&body(json!({"input":["a b","c"]})), "e").unwrap();
        assert_eq!(f["data"].as_array().unwrap().len(), 2);
        assert_eq!(f["usage"]["prompt_tokens"], 3);
        let v: Vec<f32> = serde_json::from_value(f["data"][0]["embedding"].clone()).unwrap();
        assert_eq!(v.len(), DEFAULT_DIMENSIONS);
        let norm: f32 = v.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);

        let b = embeddings(
            &body(json!({"input":"a b","encoding_format":"base64","dimensions":8})),
            "e",
        )
        .unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        let decoded: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(decoded, embed("a b", 8));
        assert!(embeddings(&body(json!({"input":"x","dimensions":0})), "e").is_err());
        assert!(embeddings(&body(json!({"input":"x","encoding_format":"hex"})), "e").is_err());
    }
}
