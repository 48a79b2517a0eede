//! Anthropic Messages API inbound (`POST /v1/messages`): the reverse of
//! `providers/anthropic.rs`. An Anthropic request becomes the canonical
//! OpenAI chat request ([`to_canonical`]), the canonical answer becomes an
//! Anthropic `message` ([`message_from_completion`]) or event stream
//! ([`StreamEncoder`]), and errors take Anthropic's shape ([`error_body`]).
//!
//! Pure: no I/O and no `worker` types, tested natively.
//!
//! Wire references: the Messages API (<https://docs.claude.com/en/api/messages>),
//! streaming (<https://docs.claude.com/en/docs/build-with-claude/streaming>)
//! and errors (<https://docs.claude.com/en/api/errors>).
//!
//! # Requests
//!
//! * `model`, `max_tokens` (required, as Anthropic requires it) and
//!   `messages` (non-empty, `user` / `assistant` only) are checked first.
//! * `system` (a string or text blocks) becomes one leading `system` message
//!   (a string, or text parts for several blocks).
//! * `user` content: `text` → text parts, `image` (`base64` or `url` source)
//!   → `image_url` parts (a `data:` URL for base64). Each `tool_result`
//!   block becomes a `tool` message (its text; image blocks inside a tool
//!   result are a 400, OpenAI tool messages take text only) placed before
//!   the rest of that turn, so tool answers directly follow the assistant's
//!   `tool_calls` as OpenAI requires. `is_error` has no canonical field and
//!   is dropped.
//! * `assistant` content: `text` → `content`, `tool_use` → `tool_calls`
//!   (`arguments` = the compact JSON of `input`); `thinking` /
//!   `redacted_thinking` blocks are dropped (they are Anthropic-signed and no
//!   other provider takes them back).
//! * `cache_control` on any block or tool is ignored (Anthropic prompt
//!   caching; the Anthropic pass-through keeps it, see below). Other block
//!   types (`document`, `search_result`, server tool blocks…) are a 400.
//! * `tools` (custom tools: `name`, `description`, `input_schema`) →
//!   function tools; server tools (`type` other than `custom`) are a 400.
//!   `tool_choice`: `auto` → `auto`, `any` → `required`, `tool` → the named
//!   function, `none` → `none`; `disable_parallel_tool_use: true` →
//!   `parallel_tool_calls: false`.
//! * `stop_sequences` → `stop`, `temperature`, `top_p` as they are, `top_k`
//!   kept as the non-OpenAI `top_k` extension (providers that do not take it
//!   may refuse it), `metadata.user_id` → `user`.
//! * `thinking`: `enabled` with `budget_tokens` → `reasoning_effort` `low`
//!   (< 4096), `medium` (< 16384) or `high`; `adaptive` → `medium`;
//!   `disabled` → nothing.
//! * `stream: true` also sets `stream_options.include_usage`, because the
//!   closing `message_delta` carries the usage.
//! * Unknown top-level fields are a 400, as at Anthropic; `service_tier` is
//!   accepted and ignored.
//!
//! # Responses
//!
//! Content blocks in order: `thinking` (from `reasoning_content`, with an
//! empty `signature`: no provider but Anthropic signs thinking), `text`,
//! `tool_use` (`input` = the parsed `arguments`, `{}` when empty).
//! `finish_reason` → `stop_reason`: `stop` → `end_turn`, `length` →
//! `max_tokens`, `tool_calls` → `tool_use`, `content_filter` → `refusal`.
//! OpenAI does not say which stop sequence ended an answer, so
//! `stop_sequence` is always `null`. Usage: `input_tokens` = prompt tokens
//! minus cached ones, `cache_read_input_tokens` = cached tokens,
//! `cache_creation_input_tokens` = 0, `output_tokens` = completion tokens.
//!
//! # Streams
//!
//! `message_start` (usage zero: OpenAI-format streams report usage only at
//! their end) and a `ping`, then one content block per run of thinking,
//! text or one tool call (`input_json_delta` carrying the argument
//! fragments as they arrive), `message_delta` with the `stop_reason` and the
//! whole usage (the SDKs overwrite the start's usage with it), and
//! `message_stop` at the OpenAI `[DONE]`. An error frame, or a stream cut
//! before `[DONE]`, ends the stream with an `event: error`, and no
//! `message_stop`, so SDKs raise instead of returning a cut answer.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::GatewayError;
use crate::openai::{
    ChatRequest, Content, ContentPart, FunctionCall, FunctionDef, ImageUrl, Message, NamedFunction,
    NamedToolChoice, Stop, StreamOptions, Tool, ToolCall, ToolChoice,
};
use crate::sse::{encode_event, SseDecoder, SseError, DEFAULT_MAX_LINE_BYTES};

/// The inbound request as the typed Anthropic body (top level only; content
/// blocks are read by hand for precise error paths).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesRequest {
    model: String,
    max_tokens: u64,
    messages: Vec<Value>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<u64>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    thinking: Option<Value>,
    /// Anthropic capacity tier: meaningless for other providers; ignored.
    #[serde(default)]
    #[allow(dead_code)]
    service_tier: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    #[serde(default)]
    user_id: Option<String>,
}

fn invalid(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::invalid_param(param, message)
}

fn str_field<'a>(v: &'a Value, key: &str, at: &str) -> Result<&'a str, GatewayError> {
    v.get(key).and_then(Value::as_str).ok_or_else(|| {
        invalid(
            &format!("{at}.{key}"),
            format!("{at}.{key}: Field required."),
        )
    })
}

fn block_type<'a>(block: &'a Value, at: &str) -> Result<&'a str, GatewayError> {
    if !block.is_object() {
        return Err(invalid(
            at,
            format!("{at}: a content block must be an object."),
        ));
    }
    str_field(block, "type", at)
}

/// An `image` block's `source` → an OpenAI image part.
fn image_part(block: &Value, at: &str) -> Result<ContentPart, GatewayError> {
    let source = block.get("source").ok_or_else(|| {
        invalid(
            &format!("{at}.source"),
            format!("{at}.source: Field required."),
        )
    })?;
    let at = format!("{at}.source");
    let url = match str_field(source, "type", &at)? {
        "base64" => format!(
            "data:{};base64,{}",
            str_field(source, "media_type", &at)?,
            str_field(source, "data", &at)?
        ),
        "url" => str_field(source, "url", &at)?.to_owned(),
        other => {
            return Err(invalid(
                &format!("{at}.type"),
                format!("{at}.type: image source '{other}' is not supported by this gateway (use base64 or url)."),
            ))
        }
    };
    Ok(ContentPart::ImageUrl {
        image_url: ImageUrl { url, detail: None },
    })
}

/// `content`: a string or an array of blocks (a string is one text block).
fn blocks(content: Option<&Value>, at: &str) -> Result<Vec<Value>, GatewayError> {
    match content {
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(_) => Err(invalid(
            at,
            format!("{at}: must be a string or an array of content blocks."),
        )),
        None => Err(invalid(at, format!("{at}: Field required."))),
    }
}

/// A tool result's content, as the text of a `tool` message.
fn tool_result_text(block: &Value, at: &str) -> Result<String, GatewayError> {
    match block.get("content") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(items)) => {
            let mut text = Vec::new();
            for (k, item) in items.iter().enumerate() {
                let at = format!("{at}.content[{k}]");
                match block_type(item, &at)? {
                    "text" => text.push(str_field(item, "text", &at)?.to_owned()),
                    other => {
                        return Err(invalid(
                            &at,
                            format!(
                                "{at}: '{other}' blocks inside a tool_result cannot be sent to \
                                 providers other than Anthropic; use text."
                            ),
                        ))
                    }
                }
            }
            Ok(text.join("\n"))
        }
        Some(_) => Err(invalid(
            &format!("{at}.content"),
            format!("{at}.content: must be a string or an array of blocks."),
        )),
    }
}

fn unsupported_block(at: &str, kind: &str) -> GatewayError {
    invalid(
        at,
        format!("{at}: content blocks of type '{kind}' are not supported by this gateway."),
    )
}

/// One Anthropic turn → canonical messages (tool results first for a user turn).
fn turn(m: &Value, i: usize, out: &mut Vec<Message>) -> Result<(), GatewayError> {
    let at = format!("messages[{i}]");
    if !m.is_object() {
        return Err(invalid(&at, format!("{at}: must be an object.")));
    }
    let role = str_field(m, "role", &at)?;
    let content_at = format!("{at}.content");
    let items = blocks(m.get("content"), &content_at)?;
    match role {
        "user" => {
            let mut parts = Vec::new();
            for (j, b) in items.iter().enumerate() {
                let at = format!("{content_at}[{j}]");
                match block_type(b, &at)? {
                    "text" => parts.push(ContentPart::Text {
                        text: str_field(b, "text", &at)?.to_owned(),
                    }),
                    "image" => parts.push(image_part(b, &at)?),
                    "tool_result" => out.push(Message {
                        role: "tool".to_owned(),
                        tool_call_id: Some(str_field(b, "tool_use_id", &at)?.to_owned()),
                        content: Some(Content::Text(tool_result_text(b, &at)?)),
                        ..Message::default()
                    }),
                    other => return Err(unsupported_block(&at, other)),
                }
            }
            if !parts.is_empty() {
                let content = match parts.as_slice() {
                    [ContentPart::Text { text }] => Content::Text(text.clone()),
                    _ => Content::Parts(parts),
                };
                out.push(Message {
                    role: "user".to_owned(),
                    content: Some(content),
                    ..Message::default()
                });
            }
        }
        "assistant" => {
            let mut text = String::new();
            let mut calls = Vec::new();
            for (j, b) in items.iter().enumerate() {
                let at = format!("{content_at}[{j}]");
                match block_type(b, &at)? {
                    "text" => text.push_str(str_field(b, "text", &at)?),
                    "tool_use" => {
                        let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                        calls.push(ToolCall {
                            id: str_field(b, "id", &at)?.to_owned(),
                            kind: "function".to_owned(),
                            function: FunctionCall {
                                name: str_field(b, "name", &at)?.to_owned(),
                                arguments: input.to_string(),
                            },
                        });
                    }
                    "thinking" | "redacted_thinking" => {}
                    other => return Err(unsupported_block(&at, other)),
                }
            }
            if text.is_empty() && calls.is_empty() {
                return Ok(());
            }
            out.push(Message {
                role: "assistant".to_owned(),
                content: (!text.is_empty()).then_some(Content::Text(text)),
                tool_calls: (!calls.is_empty()).then_some(calls),
                ..Message::default()
            });
        }
        other => {
            return Err(invalid(
                &format!("{at}.role"),
                format!("{at}.role: must be 'user' or 'assistant', not '{other}'."),
            ))
        }
    }
    Ok(())
}

fn system_message(system: &Value) -> Result<Option<Message>, GatewayError> {
    let content = match system {
        Value::Null => return Ok(None),
        Value::String(s) if s.is_empty() => return Ok(None),
        Value::String(s) => Content::Text(s.clone()),
        Value::Array(items) => {
            let mut parts = Vec::new();
            for (j, b) in items.iter().enumerate() {
                let at = format!("system[{j}]");
                match block_type(b, &at)? {
                    "text" => parts.push(ContentPart::Text {
                        text: str_field(b, "text", &at)?.to_owned(),
                    }),
                    other => return Err(unsupported_block(&at, other)),
                }
            }
            match parts.as_slice() {
                [] => return Ok(None),
                [ContentPart::Text { text }] => Content::Text(text.clone()),
                _ => Content::Parts(parts),
            }
        }
        _ => {
            return Err(invalid(
                "system",
                "system: must be a string or an array of text blocks.",
            ))
        }
    };
    Ok(Some(Message {
        role: "system".to_owned(),
        content: Some(content),
        ..Message::default()
    }))
}

fn tool(t: &Value, i: usize) -> Result<Tool, GatewayError> {
    let at = format!("tools[{i}]");
    if !t.is_object() {
        return Err(invalid(&at, format!("{at}: must be an object.")));
    }
    match t.get("type").and_then(Value::as_str) {
        None | Some("custom") => {}
        Some(other) => {
            return Err(invalid(
                &format!("{at}.type"),
                format!(
                    "{at}.type: server tool '{other}' is not supported by this gateway; \
                     only custom tools (name, description, input_schema) are."
                ),
            ))
        }
    }
    Ok(Tool {
        kind: "function".to_owned(),
        function: FunctionDef {
            name: str_field(t, "name", &at)?.to_owned(),
            description: t
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            parameters: Some(t.get("input_schema").cloned().ok_or_else(|| {
                invalid(
                    &format!("{at}.input_schema"),
                    format!("{at}.input_schema: Field required."),
                )
            })?),
            strict: None,
        },
    })
}

/// `tool_choice` → (canonical choice, `parallel_tool_calls`).
fn tool_choice(tc: &Value) -> Result<(ToolChoice, Option<bool>), GatewayError> {
    let kind = str_field(tc, "type", "tool_choice")?;
    let choice = match kind {
        "auto" => ToolChoice::Mode("auto".to_owned()),
        "any" => ToolChoice::Mode("required".to_owned()),
        "none" => ToolChoice::Mode("none".to_owned()),
        "tool" => ToolChoice::Named(NamedToolChoice {
            kind: "function".to_owned(),
            function: NamedFunction {
                name: str_field(tc, "name", "tool_choice")?.to_owned(),
            },
        }),
        other => {
            return Err(invalid(
                "tool_choice.type",
                format!("tool_choice.type: must be auto, any, tool or none, not '{other}'."),
            ))
        }
    };
    let parallel = tc
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .filter(|d| *d)
        .map(|_| false);
    Ok((choice, parallel))
}

/// `thinking` → `reasoning_effort`.
fn reasoning_effort(thinking: &Value) -> Result<Option<String>, GatewayError> {
    let effort = match str_field(thinking, "type", "thinking")? {
        "disabled" => return Ok(None),
        "adaptive" => "medium",
        "enabled" => {
            let budget = thinking
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    invalid(
                        "thinking.budget_tokens",
                        "thinking.budget_tokens: an integer is required.",
                    )
                })?;
            match budget {
                0..=4095 => "low",
                4096..=16383 => "medium",
                _ => "high",
            }
        }
        other => {
            return Err(invalid(
                "thinking.type",
                format!("thinking.type: must be enabled, adaptive or disabled, not '{other}'."),
            ))
        }
    };
    Ok(Some(effort.to_owned()))
}

/// An inbound Messages request, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// The canonical chat request body (what routing, cache and providers see).
    pub canonical: Map<String, Value>,
    pub model: String,
    pub stream: bool,
}

/// Reads and translates a `POST /v1/messages` body.
pub fn to_canonical(body: &Map<String, Value>) -> Result<Inbound, GatewayError> {
    let req: MessagesRequest = serde_json::from_value(Value::Object(body.clone()))
        .map_err(|e| GatewayError::invalid(format!("Invalid Messages request: {e}.")))?;
    if req.model.trim().is_empty() || req.model.len() > 256 {
        return Err(invalid(
            "model",
            "model: must be a non-empty string of at most 256 characters.",
        ));
    }
    if req.max_tokens == 0 {
        return Err(invalid("max_tokens", "max_tokens: must be at least 1."));
    }
    if req.messages.is_empty() {
        return Err(invalid(
            "messages",
            "messages: at least one message is required.",
        ));
    }
    let mut messages = Vec::new();
    if let Some(system) = req
        .system
        .as_ref()
        .map(system_message)
        .transpose()?
        .flatten()
    {
        messages.push(system);
    }
    for (i, m) in req.messages.iter().enumerate() {
        turn(m, i, &mut messages)?;
    }
    if !messages.iter().any(|m| m.role != "system") {
        return Err(invalid(
            "messages",
            "messages: the conversation has no content.",
        ));
    }
    let tools = req
        .tools
        .as_ref()
        .map(|ts| ts.iter().enumerate().map(|(i, t)| tool(t, i)).collect())
        .transpose()?
        .filter(|ts: &Vec<Tool>| !ts.is_empty());
    let (choice, parallel) = match &req.tool_choice {
        Some(tc) => {
            let (c, p) = tool_choice(tc)?;
            (Some(c), p)
        }
        None => (None, None),
    };
    let stream = req.stream.unwrap_or(false);
    let mut extra = Map::new();
    if let Some(k) = req.top_k {
        extra.insert("top_k".to_owned(), Value::from(k));
    }
    let canonical = ChatRequest {
        model: req.model.clone(),
        messages,
        stream: stream.then_some(true),
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            extra: Map::new(),
        }),
        temperature: req.temperature,
        top_p: req.top_p,
        max_tokens: Some(req.max_tokens),
        stop: req.stop_sequences.filter(|s| !s.is_empty()).map(Stop::Many),
        // A tool choice without tools means nothing to OpenAI-format providers
        // (and some reject it).
        tool_choice: tools.as_ref().and(choice),
        parallel_tool_calls: tools.as_ref().and(parallel),
        tools,
        reasoning_effort: req
            .thinking
            .as_ref()
            .map(reasoning_effort)
            .transpose()?
            .flatten(),
        user: req.metadata.and_then(|m| m.user_id),
        extra,
        ..ChatRequest::default()
    };
    let Value::Object(canonical) =
        serde_json::to_value(&canonical).map_err(|_| GatewayError::Internal)?
    else {
        return Err(GatewayError::Internal);
    };
    Ok(Inbound {
        canonical,
        model: req.model,
        stream,
    })
}

/// The client's own body for an Anthropic provider (the pass-through): as
/// sent, with the route's upstream model.
pub fn native_body(body: &Map<String, Value>, upstream_model: &str) -> Vec<u8> {
    let mut body = body.clone();
    body.insert("model".to_owned(), Value::String(upstream_model.to_owned()));
    serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
}

/// The `msg_…` id of a gateway answer.
pub fn message_id(request_id: &str) -> String {
    format!("msg_{}", request_id.trim_start_matches("req_"))
}

fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic usage from an OpenAI usage object (absent → zeros).
fn usage(u: Option<&Value>) -> Value {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let u = u.filter(|u| u.is_object());
    let prompt = n(u.and_then(|u| u.get("prompt_tokens")));
    let cached = n(u
        .and_then(|u| u.get("prompt_tokens_details"))
        .and_then(|d| d.get("cached_tokens")));
    json!({
        "input_tokens": prompt.saturating_sub(cached),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": n(u.and_then(|u| u.get("completion_tokens"))),
    })
}

/// A tool call's `arguments` as the `input` object.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

/// A canonical `chat.completion` (JSON) → an Anthropic `message`.
pub fn message_from_completion(completion: &Value, id: &str) -> Value {
    let choice = completion
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let message = choice.and_then(|c| c.get("message"));
    let text = |k: &str| {
        message
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let mut content = Vec::new();
    if let Some(t) = text("reasoning_content") {
        content.push(json!({"type": "thinking", "thinking": t, "signature": ""}));
    }
    if let Some(t) = text("content").or_else(|| text("refusal")) {
        content.push(json!({"type": "text", "text": t}));
    }
    let calls = message
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array);
    for c in calls.into_iter().flatten() {
        let f = c.get("function");
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
        content.push(json!({
            "type": "tool_use",
            "id": s(c.get("id")),
            "name": s(f.and_then(|f| f.get("name"))),
            "input": tool_input(f.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or_default()),
        }));
    }
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": completion.get("model").and_then(Value::as_str).unwrap_or_default(),
        "content": content,
        "stop_reason": stop_reason(choice.and_then(|c| c.get("finish_reason")).and_then(Value::as_str)),
        "stop_sequence": null,
        "usage": usage(completion.get("usage")),
    })
}

/// Anthropic's `error.type` for a status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 409 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// A gateway error in Anthropic's shape:
/// `{"type":"error","error":{"type","message"},"request_id"}`.
pub fn error_body(e: &GatewayError, request_id: Option<&str>) -> Value {
    let mut body = json!({
        "type": "error",
        "error": {"type": error_type(e.status()), "message": e.message()},
    });
    if let (Some(id), Value::Object(o)) = (request_id, &mut body) {
        o.insert("request_id".to_owned(), Value::String(id.to_owned()));
    }
    body
}

fn error_event(error_type: &str, message: &str) -> String {
    let body = json!({"type": "error", "error": {"type": error_type, "message": message}});
    encode_event("error", &body.to_string())
}

/// The block being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking,
    Text,
    /// A tool call, by its OpenAI `index`.
    Tool(u64),
}

/// Canonical (OpenAI) SSE bytes → Anthropic SSE bytes.
#[derive(Debug)]
pub struct StreamEncoder {
    decoder: SseDecoder,
    id: String,
    /// `true`: the upstream bytes are already Anthropic events (the
    /// pass-through); only the gateway's own truncation notice is rewritten.
    native: bool,
    started: bool,
    /// Index of the next content block.
    next_index: u64,
    open: Option<(Open, u64)>,
    /// OpenAI tool-call indexes already given a block.
    tools_seen: Vec<u64>,
    stop_reason: Option<&'static str>,
    usage: Option<Value>,
    /// `message_stop` or `error` sent: nothing more may follow.
    ended: bool,
}

impl StreamEncoder {
    /// Translates an OpenAI-format stream; `id` is the message id.
    pub fn new(id: String) -> Self {
        Self {
            decoder: SseDecoder::new(DEFAULT_MAX_LINE_BYTES),
            id,
            native: false,
            started: false,
            next_index: 0,
            open: None,
            tools_seen: Vec::new(),
            stop_reason: None,
            usage: None,
            ended: false,
        }
    }

    /// Forwards an Anthropic stream (the pass-through) unchanged.
    pub fn native(id: String) -> Self {
        Self {
            native: true,
            ..Self::new(id)
        }
    }

    pub fn is_native(&self) -> bool {
        self.native
    }

    fn event(out: &mut String, name: &str, body: &Value) {
        out.push_str(&encode_event(name, &body.to_string()));
    }

    fn start(&mut self, model: &str, out: &mut String) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        Self::event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
        Self::event(out, "ping", &json!({"type": "ping"}));
    }

    fn close(&mut self, out: &mut String) {
        if let Some((_, index)) = self.open.take() {
            Self::event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    /// Makes `kind` the open block (closing another), starting it with `block`.
    fn open(&mut self, kind: Open, block: Value, out: &mut String) -> u64 {
        if let Some((open, index)) = self.open {
            if open == kind {
                return index;
            }
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((kind, index));
        Self::event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }

    fn delta(out: &mut String, index: u64, delta: Value) {
        Self::event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }

    fn fail(&mut self, error_type: &str, message: &str, out: &mut String) {
        self.ended = true;
        out.push_str(&error_event(error_type, message));
    }

    /// One canonical chunk (JSON text).
    fn on_chunk(&mut self, data: &str, out: &mut String) {
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return self.fail("api_error", "The upstream stream could not be read.", out);
        };
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("The provider reported an error in its stream.");
            let kind = match error.get("code").and_then(Value::as_str) {
                Some("upstream_rate_limited" | "rate_limit_exceeded") => "rate_limit_error",
                _ => "api_error",
            };
            return self.fail(kind, message, out);
        }
        let model = chunk
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.start(model, out);
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first());
        let Some(choice) = choice else { return };
        let delta = choice.get("delta");
        let text = |k: &str| {
            delta
                .and_then(|d| d.get(k))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if let Some(t) = text("reasoning_content") {
            let i = self.open(
                Open::Thinking,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                out,
            );
            Self::delta(out, i, json!({"type": "thinking_delta", "thinking": t}));
        }
        if let Some(t) = text("content").or_else(|| text("refusal")) {
            let i = self.open(Open::Text, json!({"type": "text", "text": ""}), out);
            Self::delta(out, i, json!({"type": "text_delta", "text": t}));
        }
        let calls = delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array);
        for c in calls.into_iter().flatten() {
            let tool_index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let f = c.get("function");
            let is_open = self.open.map(|(o, _)| o) == Some(Open::Tool(tool_index));
            if !is_open {
                if self.tools_seen.contains(&tool_index) {
                    // Arguments for a tool call whose block is closed: Anthropic
                    // events cannot reopen it.
                    return self.fail(
                        "api_error",
                        "The provider interleaved tool calls in a way the Messages stream cannot carry.",
                        out,
                    );
                }
                self.tools_seen.push(tool_index);
                let s =
                    |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
                self.open(
                    Open::Tool(tool_index),
                    json!({
                        "type": "tool_use",
                        "id": s(c.get("id")),
                        "name": s(f.and_then(|f| f.get("name"))),
                        "input": {},
                    }),
                    out,
                );
            }
            let args = f
                .and_then(|f| f.get("arguments"))
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty());
            if let (Some(args), Some((_, i))) = (args, self.open) {
                Self::delta(
                    out,
                    i,
                    json!({"type": "input_json_delta", "partial_json": args}),
                );
            }
        }
        if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
            self.close(out);
            self.stop_reason = Some(stop_reason(Some(r)));
        }
    }

    fn finish(&mut self, out: &mut String) {
        self.start("", out);
        self.close(out);
        let usage = usage(self.usage.as_ref());
        Self::event(
            out,
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                "usage": usage,
            }),
        );
        Self::event(out, "message_stop", &json!({"type": "message_stop"}));
        self.ended = true;
    }

    /// Stream bytes in (whole frames or not); Anthropic bytes out.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, SseError> {
        if self.native {
            return Ok(bytes.to_vec());
        }
        let mut out = String::new();
        for frame in self.decoder.push(bytes)? {
            if self.ended {
                break;
            }
            match frame.data.as_deref() {
                Some("[DONE]") => self.finish(&mut out),
                Some(data) => self.on_chunk(data, &mut out),
                None => {}
            }
        }
        Ok(out.into_bytes())
    }

    /// The stream broke after the commit point (the gateway's truncation
    /// notice): an `error` event.
    pub fn truncated(&mut self) -> Vec<u8> {
        if self.ended && !self.native {
            return Vec::new();
        }
        self.ended = true;
        error_event(
            "api_error",
            "The upstream stream ended before the response was complete.",
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::anthropic;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// Anthropic SSE → the message an SDK's stream helper assembles (as
    /// `MessageStream` does: start, block starts, deltas, message_delta).
    fn assemble(sse: &[u8]) -> (Value, Vec<String>) {
        let mut dec = SseDecoder::new(DEFAULT_MAX_LINE_BYTES);
        let mut names = Vec::new();
        let mut msg = Value::Null;
        let mut json_bufs: std::collections::BTreeMap<u64, String> = Default::default();
        for f in dec.push(sse).unwrap() {
            let Some(data) = f.data else { continue };
            let e: Value = serde_json::from_str(&data).unwrap();
            let name = f
                .event
                .clone()
                .unwrap_or_else(|| e["type"].as_str().unwrap().to_owned());
            assert_eq!(e["type"], name.as_str(), "event name matches its type");
            names.push(name.clone());
            match name.as_str() {
                "message_start" => {
                    assert!(msg.is_null(), "a second message_start");
                    msg = e["message"].clone();
                }
                "content_block_start" => {
                    let i = e["index"].as_u64().unwrap();
                    assert_eq!(i as usize, msg["content"].as_array().unwrap().len());
                    msg["content"]
                        .as_array_mut()
                        .unwrap()
                        .push(e["content_block"].clone());
                }
                "content_block_delta" => {
                    let i = e["index"].as_u64().unwrap();
                    let b = &mut msg["content"][i as usize];
                    let d = &e["delta"];
                    match d["type"].as_str().unwrap() {
                        "text_delta" => {
                            b["text"] = json!(format!(
                                "{}{}",
                                b["text"].as_str().unwrap(),
                                d["text"].as_str().unwrap()
                            ))
                        }
                        "thinking_delta" => {
                            b["thinking"] = json!(format!(
                                "{}{}",
                                b["thinking"].as_str().unwrap(),
                                d["thinking"].as_str().unwrap()
                            ))
                        }
                        "signature_delta" => b["signature"] = d["signature"].clone(),
                        "input_json_delta" => json_bufs
                            .entry(i)
                            .or_default()
                            .push_str(d["partial_json"].as_str().unwrap()),
                        other => panic!("unexpected delta {other}"),
                    }
                }
                "content_block_stop" => {
                    let i = e["index"].as_u64().unwrap();
                    if let Some(buf) = json_bufs.remove(&i) {
                        msg["content"][i as usize]["input"] =
                            serde_json::from_str(&buf).unwrap_or(Value::String(buf));
                    }
                }
                "message_delta" => {
                    msg["stop_reason"] = e["delta"]["stop_reason"].clone();
                    msg["stop_sequence"] = e["delta"]["stop_sequence"].clone();
                    for (k, v) in e["usage"].as_object().into_iter().flatten() {
                        msg["usage"][k] = v.clone();
                    }
                }
                "message_stop" | "ping" | "error" => {}
                other => panic!("unexpected event {other}"),
            }
        }
        // A block cut without its stop keeps what arrived.
        for (i, buf) in json_bufs {
            msg["content"][i as usize]["input"] =
                serde_json::from_str(&buf).unwrap_or(Value::String(buf));
        }
        (msg, names)
    }

    /// OpenAI chunks (the fixtures' `*.openai.json`) as SSE bytes.
    fn openai_sse(fixture: &str) -> Vec<u8> {
        let v: Value = serde_json::from_str(fixture).unwrap();
        let mut out = String::new();
        for c in v["chunks"].as_array().unwrap() {
            out.push_str(&crate::sse::encode_data(&c.to_string()));
        }
        if v["finished"] == true {
            out.push_str(crate::sse::DONE_FRAME);
        }
        out.into_bytes()
    }

    /// Byte-at-a-time pushes, and (for short inputs) every split into two
    /// pushes, give the same output as one push.
    fn encode_all_splits(input: &[u8]) -> Vec<u8> {
        let whole = StreamEncoder::new("msg_x".into()).push(input).unwrap();
        let mut e = StreamEncoder::new("msg_x".into());
        let bytewise: Vec<u8> = input.iter().flat_map(|b| e.push(&[*b]).unwrap()).collect();
        assert_eq!(bytewise, whole, "byte by byte");
        let cuts = if input.len() <= 4096 { input.len() } else { 0 };
        for cut in 0..=cuts {
            let mut e = StreamEncoder::new("msg_x".into());
            let mut out = e.push(&input[..cut]).unwrap();
            out.extend(e.push(&input[cut..]).unwrap());
            assert_eq!(out, whole, "split at {cut}");
        }
        whole
    }

    /// Anthropic's documented example streams, through the Anthropic
    /// translator (Anthropic → OpenAI) and back through the encoder: the
    /// assembled message equals what the original stream assembles to (ids,
    /// signatures and the stop sequence aside), at every byte split.
    #[test]
    fn anthropic_streams_survive_the_round_trip() {
        let cases = [
            (
                include_str!("../tests/fixtures/anthropic/stream.text.sse"),
                include_str!("../tests/fixtures/anthropic/stream.text.openai.json"),
            ),
            (
                include_str!("../tests/fixtures/anthropic/stream.tool_use.sse"),
                include_str!("../tests/fixtures/anthropic/stream.tool_use.openai.json"),
            ),
            (
                include_str!("../tests/fixtures/anthropic/stream.parallel_tools.sse"),
                include_str!("../tests/fixtures/anthropic/stream.parallel_tools.openai.json"),
            ),
            (
                include_str!("../tests/fixtures/anthropic/stream.thinking.sse"),
                include_str!("../tests/fixtures/anthropic/stream.thinking.openai.json"),
            ),
            (
                include_str!("../tests/fixtures/anthropic/stream.max_tokens.sse"),
                include_str!("../tests/fixtures/anthropic/stream.max_tokens.openai.json"),
            ),
        ];
        for (original, openai) in cases {
            let (mut want, _) = assemble(original.as_bytes());
            let out = encode_all_splits(&openai_sse(openai));
            let (mut got, names) = assemble(&out);
            assert_eq!(names.first().map(String::as_str), Some("message_start"));
            assert_eq!(names.last().map(String::as_str), Some("message_stop"));
            assert_eq!(names.iter().filter(|n| *n == "message_start").count(), 1);
            if want.get("usage").is_none() {
                // The documentation's thinking example carries no usage at all.
                want["usage"] = json!({});
                got["usage"] = json!({});
            }
            for m in [&mut want, &mut got] {
                m["id"] = json!("msg");
                m["stop_sequence"] = Value::Null;
                if m["stop_reason"] == "stop_sequence" {
                    m["stop_reason"] = json!("end_turn");
                }
                for b in m["content"].as_array_mut().unwrap() {
                    if b["type"] == "thinking" {
                        b["signature"] = json!("");
                    }
                }
                let u = m["usage"].as_object_mut().unwrap();
                u.retain(|k, _| {
                    ["input_tokens", "output_tokens", "cache_read_input_tokens"]
                        .contains(&k.as_str())
                });
                if !u.is_empty() {
                    u.entry("cache_read_input_tokens").or_insert(json!(0));
                }
            }
            // The thinking fixture's redacted block is dropped by the translator.
            want["content"].as_array_mut().unwrap().retain(|b| {
                b["type"] != "redacted_thinking" && !(b["type"] == "text" && b["text"] == "")
            });
            assert_eq!(got, want, "{openai}");
        }
    }

    #[test]
    fn stream_events_are_exactly_anthropics() {
        let chunks = [
            json!({"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}),
            json!({"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}),
            json!({"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null}]}),
            json!({"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]},"finish_reason":null}]}),
            json!({"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},"finish_reason":null}]}),
            json!({"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
            json!({"id":"c","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4}}}),
        ];
        let mut input = String::new();
        for c in &chunks {
            input.push_str(&crate::sse::encode_data(&c.to_string()));
        }
        input.push_str(crate::sse::DONE_FRAME);
        let out = String::from_utf8(encode_all_splits(input.as_bytes())).unwrap();
        let expected = concat!(
            "event: message_start\ndata: {\"message\":{\"content\":[],\"id\":\"msg_x\",\"model\":\"gpt-4o\",\"role\":\"assistant\",\"stop_reason\":null,\"stop_sequence\":null,\"type\":\"message\",\"usage\":{\"input_tokens\":0,\"output_tokens\":0}},\"type\":\"message_start\"}\n\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: content_block_start\ndata: {\"content_block\":{\"text\":\"\",\"type\":\"text\"},\"index\":0,\"type\":\"content_block_start\"}\n\n",
            "event: content_block_delta\ndata: {\"delta\":{\"text\":\"Hi\",\"type\":\"text_delta\"},\"index\":0,\"type\":\"content_block_delta\"}\n\n",
            "event: content_block_stop\ndata: {\"index\":0,\"type\":\"content_block_stop\"}\n\n",
            "event: content_block_start\ndata: {\"content_block\":{\"id\":\"call_1\",\"input\":{},\"name\":\"f\",\"type\":\"tool_use\"},\"index\":1,\"type\":\"content_block_start\"}\n\n",
            "event: content_block_delta\ndata: {\"delta\":{\"partial_json\":\"{\\\"a\\\":\",\"type\":\"input_json_delta\"},\"index\":1,\"type\":\"content_block_delta\"}\n\n",
            "event: content_block_delta\ndata: {\"delta\":{\"partial_json\":\"1}\",\"type\":\"input_json_delta\"},\"index\":1,\"type\":\"content_block_delta\"}\n\n",
            "event: content_block_stop\ndata: {\"index\":1,\"type\":\"content_block_stop\"}\n\n",
            "event: message_delta\ndata: {\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"type\":\"message_delta\",\"usage\":{\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":4,\"input_tokens\":6,\"output_tokens\":5}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        assert_eq!(out, expected);
        // The same answer, non-streamed, is the message the stream assembles to.
        let completion = json!({"id":"c","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4}}});
        let (assembled, _) = assemble(out.as_bytes());
        assert_eq!(message_from_completion(&completion, "msg_x"), assembled);
    }

    #[test]
    fn errors_and_cuts_end_with_an_error_event() {
        let first = crate::sse::encode_data(
            &json!({"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}).to_string(),
        );
        // A cut: the gateway's truncation notice.
        let mut e = StreamEncoder::new("msg_x".into());
        let mut out = e.push(first.as_bytes()).unwrap();
        out.extend(
            e.push(crate::usage::truncation_error_frame().as_bytes())
                .unwrap(),
        );
        let (_, names) = assemble(&out);
        assert_eq!(names.last().map(String::as_str), Some("error"));
        assert!(!names.contains(&"message_stop".to_owned()));
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("event: error\ndata: {\"error\":{\"message\":\"The upstream stream ended before the response was complete.\",\"type\":\"api_error\"},\"type\":\"error\"}\n\n"), "{text}");
        // Nothing after the error, not even a late [DONE].
        assert!(e
            .push(crate::sse::DONE_FRAME.as_bytes())
            .unwrap()
            .is_empty());
        // The transport's own notice after the stream ended is not doubled.
        assert!(e.truncated().is_empty());
        // The pass-through forwards bytes and only adds the notice.
        let mut n = StreamEncoder::native("msg_x".into());
        assert_eq!(
            n.push(b"event: ping\ndata: {}\n\n").unwrap(),
            b"event: ping\ndata: {}\n\n"
        );
        assert!(String::from_utf8(n.truncated())
            .unwrap()
            .starts_with("event: error\n"));
    }

    #[test]
    fn documented_request_translates_to_canonical() {
        let body = obj(json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What's the weather in SF? Here is a map:"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Use the tool.", "signature": "sig"},
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"location": "San Francisco, CA"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "15 degrees"}]},
                    {"type": "text", "text": "Thanks!"}
                ]}
            ],
            "tools": [{"name": "get_weather", "description": "Get the weather", "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["\n\nHuman:"],
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 40,
            "metadata": {"user_id": "u-1"},
            "thinking": {"type": "enabled", "budget_tokens": 8000},
            "stream": true
        }));
        let inbound = to_canonical(&body).unwrap();
        assert!(inbound.stream);
        assert_eq!(inbound.model, "claude-sonnet-4-5");
        assert_eq!(
            Value::Object(inbound.canonical),
            json!({
                "model": "claude-sonnet-4-5",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "What's the weather in SF? Here is a map:"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
                    ]},
                    {"role": "assistant", "content": "Let me check.", "tool_calls": [
                        {"id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "toolu_01", "content": "15 degrees"},
                    {"role": "user", "content": "Thanks!"}
                ],
                "stream": true,
                "stream_options": {"include_usage": true},
                "temperature": 0.5,
                "top_p": 0.9,
                "max_tokens": 1024,
                "stop": ["\n\nHuman:"],
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}],
                "tool_choice": "required",
                "parallel_tool_calls": false,
                "reasoning_effort": "medium",
                "user": "u-1",
                "top_k": 40
            })
        );
    }

    /// Anthropic → canonical → Anthropic (the provider translator) keeps
    /// every field this module supports, for the documented request shapes.
    #[test]
    fn translating_twice_keeps_the_supported_fields() {
        let body = obj(json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 512,
            "system": "You are terse.",
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "12C"}]}
            ],
            "tools": [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "get_weather"},
            "stop_sequences": ["END"],
            "temperature": 0.2,
            "top_k": 5,
            "metadata": {"user_id": "u-9"}
        }));
        let inbound = to_canonical(&body).unwrap();
        let req = ChatRequest::from_body(&inbound.canonical).unwrap();
        let wire = anthropic::to_wire(&req, "claude-sonnet-4-5", false).unwrap();
        for k in [
            "model",
            "max_tokens",
            "system",
            "stop_sequences",
            "temperature",
            "top_k",
            "metadata",
            "tool_choice",
        ] {
            assert_eq!(wire[k], body[k], "{k}");
        }
        assert_eq!(
            wire["tools"][0]["input_schema"],
            body["tools"][0]["input_schema"]
        );
        assert_eq!(
            wire["messages"][1]["content"][0]["input"],
            json!({"city": "Paris"})
        );
        assert_eq!(wire["messages"][2]["content"][0]["tool_use_id"], "toolu_1");
    }

    #[test]
    fn invalid_requests_name_the_field() {
        let base = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
        to_canonical(&obj(base.clone())).unwrap();
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"messages": [{"role": "system", "content": "x"}]}),
                "messages[0].role",
            ),
            (json!({"messages": []}), "messages"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"tool_choice": {"type": "sometimes"}}),
                "tool_choice.type",
            ),
            (
                json!({"thinking": {"type": "enabled"}}),
                "thinking.budget_tokens",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}),
                "messages[0].content[0].source.type",
            ),
        ];
        for (patch, param) in cases {
            let mut b = base.clone();
            for (k, v) in patch.as_object().unwrap() {
                b[k] = v.clone();
            }
            let e = to_canonical(&obj(b)).unwrap_err();
            assert_eq!((e.status(), e.param()), (400, Some(param)), "{patch}");
        }
        // Unknown fields and a missing max_tokens are refused, as Anthropic does.
        let mut b = base.clone();
        b["frequency_penalty"] = json!(1);
        assert!(to_canonical(&obj(b))
            .unwrap_err()
            .message()
            .contains("frequency_penalty"));
        let mut b = base;
        b.as_object_mut().unwrap().remove("max_tokens");
        assert!(to_canonical(&obj(b))
            .unwrap_err()
            .message()
            .contains("max_tokens"));
    }

    #[test]
    fn errors_take_anthropics_shape() {
        let e = GatewayError::Unauthorized { message: "nope" };
        assert_eq!(
            error_body(&e, Some("req_1")),
            json!({"type": "error", "error": {"type": "authentication_error", "message": "nope"}, "request_id": "req_1"})
        );
        for (status, ty) in [
            (400, "invalid_request_error"),
            (402, "billing_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (502, "api_error"),
            (503, "api_error"),
            (504, "timeout_error"),
            (529, "overloaded_error"),
        ] {
            assert_eq!(error_type(status), ty);
        }
    }

    #[test]
    fn completion_becomes_a_message() {
        let c = json!({"id":"x","object":"chat.completion","created":1,"model":"gemini-2.5-flash","choices":[{"index":0,"message":{"role":"assistant","content":"Paris.","reasoning_content":"The capital…"},"finish_reason":"length"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}});
        assert_eq!(
            message_from_completion(&c, "msg_1"),
            json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "gemini-2.5-flash",
                "content": [
                    {"type": "thinking", "thinking": "The capital…", "signature": ""},
                    {"type": "text", "text": "Paris."}
                ],
                "stop_reason": "max_tokens", "stop_sequence": null,
                "usage": {"input_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 3}
            })
        );
    }
}
