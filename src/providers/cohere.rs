//! OpenAI chat/completions ⇄ Cohere v2 Chat API (`POST /v2/chat`) and v2 Embed.
//!
//! Pure translation: [`to_wire`] builds the Cohere request body from the typed
//! OpenAI request, [`from_wire`] turns a non-streamed Cohere answer into a
//! `chat.completion`, [`StreamState`] folds Cohere stream events into
//! `chat.completion.chunk`s, [`embeddings_to_wire`] / [`embeddings_from_wire`]
//! translate `/v1/embeddings`, and [`map_error`] turns a Cohere error status
//! and body into the OpenAI-shaped [`GatewayError`]. No I/O and no `worker`
//! types, so all of it runs under native `cargo test`.
//!
//! Wire references: the OpenAPI spec Cohere publishes
//! (`cohere-ai/cohere-developer-experience:cohere-openapi.yaml`, `/v2/chat`
//! and `/v2/embed`), the chat reference (<https://docs.cohere.com/reference/chat>),
//! streaming (<https://docs.cohere.com/v2/docs/streaming>, tool-use streaming
//! at <https://docs.cohere.com/docs/tool-use-streaming>) and the error page
//! (<https://docs.cohere.com/reference/errors>). The key is sent as
//! `Authorization: Bearer <key>` ([`AUTH_HEADER`], [`AUTH_SCHEME`]).
//!
//! # Requests
//!
//! * **Roles.** `system` and `developer` messages, wherever they appear,
//!   become one `system` message at the front (a string for one text, text
//!   blocks for several): Cohere answers "system turn must be the first in the
//!   list" otherwise. `user`, `assistant` and `tool` messages keep their order,
//!   one Cohere message each. Message `name`s have no Cohere equivalent and
//!   are ignored.
//! * **User content.** A string stays a string; parts become content blocks:
//!   `text` → `{"type":"text"}` (empty ones dropped), `image_url` →
//!   `{"type":"image_url","image_url":{"url","detail"}}` for `data:` and
//!   `http(s)` URLs (Cohere's vision models read both). Audio, file and other
//!   parts are a 400.
//! * **Assistant messages.** Without tool calls: the text (parts joined, or the
//!   `refusal`) as `content`; an assistant message with neither text nor tool
//!   calls is dropped. With tool calls: `tool_calls` as
//!   `{id, type: "function", function: {name, arguments}}` (arguments must be
//!   a JSON object; empty counts as `{}`), and the text goes into `tool_plan`,
//!   because Cohere rejects text content next to tool calls ("text content is
//!   not allowed when tool_calls are provided … use 'tool_plan'", vercel/ai#5794).
//!   Without text, a `reasoning_content` field on the message (what
//!   [`from_wire`] returns for a tool plan) is sent back as the `tool_plan`;
//!   on messages without tool calls `reasoning_content` is not sent.
//! * **Tool results** → `{role: "tool", tool_call_id, content}` with the string
//!   as sent, or text parts as text blocks (other parts → 400). A missing
//!   `tool_call_id` is a 400.
//! * **Sampling.** `temperature` must be within Cohere's 0–1 (a 400 otherwise,
//!   as Cohere itself answers; never clamped). `top_p` → `p`: Cohere accepts
//!   0.01–0.99, so OpenAI's common `top_p: 1` (no truncation) is sent as 0.99
//!   and values below 0.01 as 0.01, the nearest values Cohere takes; outside
//!   0–1 it is a 400. The non-OpenAI `top_k` (or `k`) extension → `k` (0–500).
//!   `max_completion_tokens` (else `max_tokens`) → `max_tokens` (omitted
//!   without one: Cohere then uses the model's limit). `stop` →
//!   `stop_sequences`. `seed` → `seed` (must be ≥ 0). `frequency_penalty` /
//!   `presence_penalty` must be within Cohere's 0–1 (400 otherwise); a zero
//!   penalty is Cohere's default and is not sent (some models reject the two
//!   penalties together).
//! * **Rejected** with `400 unsupported_parameter`: `n` > 1, a non-empty
//!   `logit_bias`, `logprobs: true` / `top_logprobs` > 0, `audio`, `modalities`
//!   containing `"audio"`, `prediction`, `web_search_options`. Their defaults
//!   (`n: 1`, `logprobs: false`) are accepted. **Ignored:** `user`, `metadata`,
//!   `store`, `service_tier`, `stream_options` (a Cohere stream always ends
//!   with usage), `parallel_tool_calls` (Cohere has no switch) and unknown
//!   fields.
//! * **Tools** → `{type: "function", function: {name, description,
//!   parameters}}`; `parameters` is required by Cohere, so a tool without one
//!   gets an empty object schema. Per-tool `strict` is not a Cohere field
//!   (Cohere answers 422 "unknown field: parameter 'strict'"); any `strict:
//!   true` sets Cohere's request-wide `strict_tools: true` instead. Tools of a
//!   type other than `function` are a 400.
//! * **`tool_choice`.** `auto` (or none given) → omitted; `none` → `"NONE"`;
//!   `required` → `"REQUIRED"`. A named function has no Cohere form; it is
//!   **emulated**: only that tool is sent, with `"REQUIRED"`, which forces
//!   exactly the call the client asked for (a name not among `tools` is a
//!   400). `required` or a named function without tools is a 400; `none`
//!   without tools is dropped.
//! * **JSON mode.** `response_format` `json_object` → `{"type":"json_object"}`;
//!   `json_schema` → `{"type":"json_object","json_schema":<schema>}` (the
//!   schema's `name`, `description` and `strict` have no Cohere field). Cohere
//!   documents that it does not combine `response_format` with tools; such a
//!   request is passed on and Cohere's 400 is relayed.
//! * **Reasoning.** `reasoning_effort` → `thinking` (Command A Reasoning and
//!   newer): `none` → `{"type":"disabled"}`; otherwise `{"type":"enabled",
//!   "token_budget":N}` with the budgets the Anthropic translator uses:
//!   `minimal` 1024, `low` 2048, `medium` 8192, `high` 16384, `xhigh` 24576.
//!   Models without reasoning answer with Cohere's own 400.
//!
//! # Responses
//!
//! `text` blocks are concatenated into `content` (`null` when the answer is
//! only tool calls), `thinking` blocks and the `tool_plan` (in that order)
//! become `reasoning_content`, `tool_calls` keep their ids and argument text
//! (empty or `null` arguments become `{}`), citations are dropped. `finish_reason`:
//! `COMPLETE` / `STOP_SEQUENCE` → `stop` (`tool_calls` when the answer has
//! tool calls, as with `TOOL_CALL`), `MAX_TOKENS` and `TIMEOUT` → `length`
//! (the answer was cut short), `ERROR_TOXIC` → `content_filter`, `ERROR` →
//! `error`. Usage: `prompt_tokens` / `completion_tokens` from
//! `usage.tokens.input_tokens` / `output_tokens` (what the model processed),
//! each falling back to `usage.billed_units` when `tokens` lacks it;
//! `usage.cached_tokens` (already part of the input) →
//! `prompt_tokens_details.cached_tokens`. Cohere's answer names no model, so
//! the completion carries the model the gateway sent.
//!
//! # Streams
//!
//! See [`StreamState::on_frame`]. OpenAI tool-call indexes count
//! `tool-call-start` events (0, 1, …), never Cohere's `index`, which in some
//! streams also counts content blocks; argument fragments are routed by
//! Cohere's index, so interleaved calls stay separate.
//!
//! # Embeddings
//!
//! One `POST {base}/embed` per call: `texts` (at most 96, Cohere's limit),
//! `embedding_types: ["float"]`, `dimensions` → `output_dimension` (Embed v4).
//! `input_type` is required by Cohere and has no OpenAI counterpart: the
//! gateway sends **`search_document`** by default, because OpenAI embedding
//! calls mostly build an index and a query embedded as a document still
//! retrieves well, whereas documents embedded as queries degrade every
//! search; a client may send the non-OpenAI `input_type` field
//! (`search_document`, `search_query`, `classification`, `clustering`) to
//! choose. Vectors are passed on as Cohere returns them (f32 values, or
//! base64 of little-endian f32 for `encoding_format: "base64"`); `usage` comes
//! from `meta.billed_units.input_tokens` and is omitted when Cohere reports
//! none.
//!
//! Errors produced here that have no configured provider name at hand
//! (unreadable bodies in [`from_wire`] and [`embeddings_from_wire`]) name the
//! provider `cohere`; [`StreamState::with_provider`] sets the name for stream
//! errors.

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::error::GatewayError;
use crate::openai::{
    AssistantMessage, ChatChunk, ChatCompletion, ChatRequest, Choice, ChunkChoice, Content,
    ContentPart, Delta, FunctionCall, FunctionCallDelta, ImageUrl, Message, PromptTokensDetails,
    Stop, Tool, ToolCall, ToolCallDelta, ToolChoice, UsageBody,
};
use crate::secret::scrub_key_like;
use crate::sse::SseFrame;

/// Cohere's API, up to and including the version segment.
pub const DEFAULT_BASE_URL: &str = "https://api.cohere.com/v2";

/// Header carrying the key, as `Authorization: Bearer <key>`.
pub const AUTH_HEADER: &str = "authorization";

/// Scheme of [`AUTH_HEADER`].
pub const AUTH_SCHEME: &str = "Bearer";

/// `input_type` sent with embeddings unless the client chooses one (see the
/// module docs).
pub const DEFAULT_EMBED_INPUT_TYPE: &str = "search_document";

/// Provider label for errors raised where no configured name is known.
const PROVIDER: &str = "cohere";

/// Longest provider message passed on to a client.
const MAX_MESSAGE_CHARS: usize = 500;

/// Cohere embeds at most this many texts per call.
const MAX_EMBED_TEXTS: usize = 96;

/// `input_type`s a client may choose for text embeddings.
const EMBED_INPUT_TYPES: &[&str] = &[
    "search_document",
    "search_query",
    "classification",
    "clustering",
];

/// URL for the Chat API under the provider's base URL (base like
/// `https://api.cohere.com/v2`).
pub fn endpoint(base_url: &str) -> String {
    format!("{}/chat", base_url.trim_end_matches('/'))
}

/// URL for the Embed API under the provider's base URL.
pub fn embeddings_endpoint(base_url: &str) -> String {
    format!("{}/embed", base_url.trim_end_matches('/'))
}

// ------------------------------------------------------------ request wire types

#[derive(Debug, Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    k: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict_tools: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<WireThinking>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
enum WireMessage<'a> {
    System {
        content: WireContent<'a>,
    },
    User {
        content: WireContent<'a>,
    },
    Assistant {
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<Cow<'a, str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_plan: Option<Cow<'a, str>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<WireToolCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: WireContent<'a>,
    },
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(&'a str),
    Blocks(Vec<WireBlock<'a>>),
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: WireImage<'a> },
}

#[derive(Debug, Serialize)]
struct WireImage<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Debug, Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Debug, Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Debug, Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: Value,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireThinking {
    Enabled { token_budget: u64 },
    Disabled,
}

// ------------------------------------------------------------------ to_wire

/// Request body for Cohere's `POST {base}/chat`. `upstream_model` is the
/// provider's model id.
pub fn to_wire(
    req: &ChatRequest,
    upstream_model: &str,
    stream: bool,
) -> Result<Value, GatewayError> {
    reject_unsupported(req)?;
    let sampling = Sampling::from_request(req)?;
    let messages = convert_messages(&req.messages)?;
    let (tools, strict_tools, tool_choice) = convert_tools(req)?;
    let wire = WireRequest {
        model: upstream_model,
        messages,
        stream,
        temperature: sampling.temperature,
        p: sampling.p,
        k: sampling.k,
        max_tokens: req.max_output_tokens(),
        stop_sequences: match &req.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.as_str()],
            Some(Stop::Many(v)) => v.iter().map(String::as_str).collect(),
        }
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect(),
        seed: sampling.seed,
        frequency_penalty: sampling.frequency_penalty,
        presence_penalty: sampling.presence_penalty,
        tools,
        strict_tools,
        tool_choice,
        response_format: response_format(req)?,
        thinking: thinking(req.reasoning_effort.as_deref())?,
    };
    serde_json::to_value(&wire).map_err(|_| GatewayError::Internal)
}

/// A 400 for an OpenAI parameter Cohere cannot honour.
fn unsupported(param: &str, why: &str) -> GatewayError {
    GatewayError::InvalidRequest {
        message: format!("'{param}' is not supported for Cohere models on this gateway: {why}"),
        param: Some(param.to_owned()),
        code: "unsupported_parameter",
    }
}

fn reject_unsupported(req: &ChatRequest) -> Result<(), GatewayError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(unsupported("n", "Cohere returns one choice per request."));
    }
    if req.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(unsupported("logit_bias", "Cohere has no logit bias."));
    }
    if req.logprobs == Some(true) {
        return Err(unsupported(
            "logprobs",
            "Cohere's log probabilities do not map onto OpenAI's logprobs.",
        ));
    }
    if req.top_logprobs.is_some_and(|n| n > 0) {
        return Err(unsupported(
            "top_logprobs",
            "Cohere's log probabilities do not map onto OpenAI's logprobs.",
        ));
    }
    for key in ["audio", "prediction", "web_search_options"] {
        if req.extra.get(key).is_some_and(|v| !v.is_null()) {
            return Err(unsupported(
                key,
                "this OpenAI feature has no Cohere equivalent.",
            ));
        }
    }
    let wants_audio = req
        .extra
        .get("modalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|v| v.as_str() == Some("audio")));
    if wants_audio {
        return Err(unsupported("modalities", "Cohere does not produce audio."));
    }
    Ok(())
}

/// Sampling parameters, checked against Cohere's ranges.
#[derive(Debug)]
struct Sampling {
    temperature: Option<f64>,
    p: Option<f64>,
    k: Option<u64>,
    seed: Option<u64>,
    frequency_penalty: Option<f64>,
    presence_penalty: Option<f64>,
}

impl Sampling {
    fn from_request(req: &ChatRequest) -> Result<Self, GatewayError> {
        let out_of_range = |param: &str, range: &str, v: f64| {
            GatewayError::invalid_param(
                param,
                format!("Cohere accepts a {param} between {range}; got {v}."),
            )
        };
        if let Some(t) = req.temperature {
            if !(0.0..=1.0).contains(&t) {
                return Err(out_of_range("temperature", "0 and 1", t));
            }
        }
        let p = match req.top_p {
            None => None,
            Some(p) if !(0.0..=1.0).contains(&p) => {
                return Err(out_of_range("top_p", "0 and 1", p));
            }
            Some(p) => Some(p.clamp(0.01, 0.99)),
        };
        let k = match (req.extra.get("top_k"), req.extra.get("k")) {
            (Some(v), _) if !v.is_null() => Some(("top_k", v)),
            (_, Some(v)) if !v.is_null() => Some(("k", v)),
            _ => None,
        };
        let k = match k {
            None => None,
            Some((param, v)) => Some(v.as_u64().filter(|&k| k <= 500).ok_or_else(|| {
                GatewayError::invalid_param(
                    param,
                    format!("'{param}' must be an integer between 0 and 500 for Cohere models."),
                )
            })?),
        };
        let seed = match req.seed {
            None => None,
            Some(s) => Some(u64::try_from(s).map_err(|_| {
                GatewayError::invalid_param("seed", "Cohere accepts a non-negative seed.")
            })?),
        };
        let penalty = |param: &str, v: Option<f64>| -> Result<Option<f64>, GatewayError> {
            match v {
                None => Ok(None),
                Some(0.0) => Ok(None),
                Some(v) if (0.0..=1.0).contains(&v) => Ok(Some(v)),
                Some(v) => Err(out_of_range(param, "0 and 1", v)),
            }
        };
        Ok(Self {
            temperature: req.temperature,
            p,
            k,
            seed,
            frequency_penalty: penalty("frequency_penalty", req.frequency_penalty)?,
            presence_penalty: penalty("presence_penalty", req.presence_penalty)?,
        })
    }
}

fn convert_messages(messages: &[Message]) -> Result<Vec<WireMessage<'_>>, GatewayError> {
    let mut system: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match m.role.as_str() {
            "system" | "developer" => system.extend(text_only(m.content.as_ref(), i)?),
            "user" => out.push(WireMessage::User {
                content: user_content(m.content.as_ref(), i)?,
            }),
            "assistant" => {
                if let Some(msg) = assistant_message(m, i)? {
                    out.push(msg);
                }
            }
            "tool" => {
                let tool_call_id = m.tool_call_id.as_deref().ok_or_else(|| {
                    GatewayError::invalid_param(
                        &format!("messages[{i}].tool_call_id"),
                        format!("messages[{i}] has role 'tool' but no tool_call_id."),
                    )
                })?;
                let content = match &m.content {
                    None => WireContent::Text(""),
                    Some(Content::Text(t)) => WireContent::Text(t),
                    Some(Content::Parts(_)) => WireContent::Blocks(
                        text_only(m.content.as_ref(), i)?
                            .into_iter()
                            .map(|text| WireBlock::Text { text })
                            .collect(),
                    ),
                };
                out.push(WireMessage::Tool {
                    tool_call_id,
                    content,
                });
            }
            other => {
                return Err(GatewayError::invalid_param(
                    &format!("messages[{i}].role"),
                    format!(
                        "Role '{other}' is not supported for Cohere models; use system, developer, user, assistant or tool."
                    ),
                ))
            }
        }
    }
    let system = match system.as_slice() {
        [] => None,
        [one] => Some(WireContent::Text(one)),
        many => Some(WireContent::Blocks(
            many.iter().map(|text| WireBlock::Text { text }).collect(),
        )),
    };
    if let Some(content) = system {
        out.insert(0, WireMessage::System { content });
    }
    if out.is_empty() {
        return Err(GatewayError::invalid_param(
            "messages",
            "Cohere needs at least one message with content.",
        ));
    }
    Ok(out)
}

fn part_type(part: &ContentPart) -> String {
    match part {
        ContentPart::Text { .. } => "text".to_owned(),
        ContentPart::ImageUrl { .. } => "image_url".to_owned(),
        ContentPart::Other(v) => v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned(),
    }
}

fn unsupported_part(part: &ContentPart, i: usize, j: usize) -> GatewayError {
    let kind = part_type(part);
    GatewayError::invalid_param(
        &format!("messages[{i}].content[{j}]"),
        format!(
            "Content parts of type '{kind}' are not supported here: Cohere does not accept them \
             through this gateway (text parts are supported everywhere, image_url parts in user \
             messages)."
        ),
    )
}

/// The non-empty texts of a message that may only hold text.
fn text_only(content: Option<&Content>, i: usize) -> Result<Vec<&str>, GatewayError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(t)) => Ok([t.as_str()].into_iter().filter(|t| !t.is_empty()).collect()),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .filter_map(|(j, p)| match p {
                ContentPart::Text { text } if text.is_empty() => None,
                ContentPart::Text { text } => Some(Ok(text.as_str())),
                other => Some(Err(unsupported_part(other, i, j))),
            })
            .collect(),
    }
}

fn user_content(content: Option<&Content>, i: usize) -> Result<WireContent<'_>, GatewayError> {
    match content {
        None => Ok(WireContent::Text("")),
        Some(Content::Text(t)) => Ok(WireContent::Text(t)),
        Some(Content::Parts(parts)) => Ok(WireContent::Blocks(
            parts
                .iter()
                .enumerate()
                .filter_map(|(j, p)| match p {
                    ContentPart::Text { text } if text.is_empty() => None,
                    ContentPart::Text { text } => Some(Ok(WireBlock::Text { text })),
                    ContentPart::ImageUrl { image_url } => Some(image_block(image_url, i, j)),
                    other => Some(Err(unsupported_part(other, i, j))),
                })
                .collect::<Result<_, _>>()?,
        )),
    }
}

fn image_block(image: &ImageUrl, i: usize, j: usize) -> Result<WireBlock<'_>, GatewayError> {
    let param = format!("messages[{i}].content[{j}].image_url.url");
    let url = image.url.as_str();
    if url.starts_with("data:") {
        if image.as_data().is_none() {
            return Err(GatewayError::invalid_param(
                &param,
                "Image data URLs must be base64: data:<mime>;base64,<data>.",
            ));
        }
    } else {
        let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        if !(lower.starts_with("https://") || lower.starts_with("http://")) {
            return Err(GatewayError::invalid_param(
                &param,
                "Image URLs must be http(s) URLs or base64 data URLs.",
            ));
        }
    }
    Ok(WireBlock::ImageUrl {
        image_url: WireImage {
            url,
            detail: image.detail.as_deref(),
        },
    })
}

/// One Cohere assistant message, or `None` for a message with nothing to send.
fn assistant_message(m: &Message, i: usize) -> Result<Option<WireMessage<'_>>, GatewayError> {
    let mut texts: Vec<&str> = Vec::new();
    match &m.content {
        None => {}
        Some(Content::Text(t)) => texts.push(t),
        Some(Content::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                match p {
                    ContentPart::Text { text } => texts.push(text),
                    // OpenAI's assistant `refusal` part.
                    ContentPart::Other(v)
                        if v.get("type").and_then(Value::as_str) == Some("refusal") =>
                    {
                        texts.extend(v.get("refusal").and_then(Value::as_str));
                    }
                    other => return Err(unsupported_part(other, i, j)),
                }
            }
        }
    }
    texts.retain(|t| !t.is_empty());
    if texts.is_empty() {
        texts.extend(m.refusal.as_deref().filter(|r| !r.is_empty()));
    }
    let text: Option<Cow<'_, str>> = match texts.as_slice() {
        [] => None,
        [one] => Some(Cow::Borrowed(one)),
        many => Some(Cow::Owned(many.concat())),
    };
    let calls = m.tool_calls.as_deref().unwrap_or_default();
    if calls.is_empty() {
        return Ok(text.map(|text| WireMessage::Assistant {
            content: Some(text),
            tool_plan: None,
            tool_calls: Vec::new(),
        }));
    }
    let tool_calls = calls
        .iter()
        .enumerate()
        .map(|(j, call)| {
            let param = format!("messages[{i}].tool_calls[{j}].function.arguments");
            Ok(WireToolCall {
                id: &call.id,
                kind: "function",
                function: WireFunctionCall {
                    name: &call.function.name,
                    arguments: checked_arguments(&call.function.arguments, &param)?,
                },
            })
        })
        .collect::<Result<Vec<_>, GatewayError>>()?;
    let reasoning = m
        .extra
        .get("reasoning_content")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .map(Cow::Borrowed);
    Ok(Some(WireMessage::Assistant {
        content: None,
        tool_plan: text.or(reasoning),
        tool_calls,
    }))
}

/// Tool-call arguments as sent, once known to be a JSON object (`{}` for empty).
fn checked_arguments<'a>(arguments: &'a str, param: &str) -> Result<&'a str, GatewayError> {
    if arguments.trim().is_empty() {
        return Ok("{}");
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(_)) => Ok(arguments),
        Ok(_) => Err(GatewayError::invalid_param(
            param,
            format!("'{param}' must be a JSON object."),
        )),
        Err(e) => Err(GatewayError::invalid_param(
            param,
            format!("'{param}' is not valid JSON: {e}."),
        )),
    }
}

type ConvertedTools<'a> = (Vec<WireTool<'a>>, Option<bool>, Option<&'static str>);

fn convert_tools(req: &ChatRequest) -> Result<ConvertedTools<'_>, GatewayError> {
    let tools: &[Tool] = req.tools.as_deref().unwrap_or_default();
    for (i, t) in tools.iter().enumerate() {
        if t.kind != "function" {
            return Err(GatewayError::invalid_param(
                &format!("tools[{i}].type"),
                format!(
                    "Tools of type '{}' are not supported for Cohere models; use 'function'.",
                    t.kind
                ),
            ));
        }
    }
    fn wire_tool(t: &Tool) -> WireTool<'_> {
        WireTool {
            kind: "function",
            function: WireFunction {
                name: &t.function.name,
                description: t.function.description.as_deref(),
                parameters: t
                    .function
                    .parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            },
        }
    }
    let needs_tools = |choice: &str| {
        GatewayError::invalid_param(
            "tool_choice",
            format!("tool_choice '{choice}' needs at least one tool in 'tools'."),
        )
    };
    let (sent, choice): (Vec<&Tool>, Option<&'static str>) = match &req.tool_choice {
        None => (tools.iter().collect(), None),
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => (tools.iter().collect(), None),
            "none" if tools.is_empty() => (Vec::new(), None),
            "none" => (tools.iter().collect(), Some("NONE")),
            "required" if tools.is_empty() => return Err(needs_tools("required")),
            "required" => (tools.iter().collect(), Some("REQUIRED")),
            other => {
                return Err(GatewayError::invalid_param(
                    "tool_choice",
                    format!(
                        "Unsupported tool_choice '{other}'; use auto, none, required or a named function."
                    ),
                ))
            }
        },
        Some(ToolChoice::Named(named)) => {
            let name = named.function.name.as_str();
            if tools.is_empty() {
                return Err(needs_tools(name));
            }
            let Some(tool) = tools.iter().find(|t| t.function.name == name) else {
                return Err(GatewayError::invalid_param(
                    "tool_choice",
                    format!("tool_choice names the function '{name}', which is not in 'tools'."),
                ));
            };
            // Emulated: the one tool, required (see the module docs).
            (vec![tool], Some("REQUIRED"))
        }
    };
    let strict = sent.iter().any(|t| t.function.strict == Some(true));
    Ok((
        sent.into_iter().map(wire_tool).collect(),
        strict.then_some(true),
        choice,
    ))
}

fn response_format(req: &ChatRequest) -> Result<Option<Value>, GatewayError> {
    let Some(format) = &req.response_format else {
        return Ok(None);
    };
    match format.kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(json!({"type": "json_object"}))),
        "json_schema" => {
            let Some(spec) = &format.json_schema else {
                return Err(GatewayError::invalid_param(
                    "response_format.json_schema",
                    "response_format of type 'json_schema' needs a 'json_schema' object.",
                ));
            };
            Ok(Some(match &spec.schema {
                Some(schema) => json!({"type": "json_object", "json_schema": schema}),
                None => json!({"type": "json_object"}),
            }))
        }
        other => Err(GatewayError::invalid_param(
            "response_format.type",
            format!(
                "Unsupported response_format type '{other}'; use text, json_object or json_schema."
            ),
        )),
    }
}

fn thinking(effort: Option<&str>) -> Result<Option<WireThinking>, GatewayError> {
    let token_budget = match effort {
        None => return Ok(None),
        Some("none") => return Ok(Some(WireThinking::Disabled)),
        Some("minimal") => 1024,
        Some("low") => 2048,
        Some("medium") => 8192,
        Some("high") => 16384,
        Some("xhigh") => 24576,
        Some(other) => {
            return Err(GatewayError::invalid_param(
                "reasoning_effort",
                format!(
                    "Unsupported reasoning_effort '{other}'; use none, minimal, low, medium, high or xhigh."
                ),
            ))
        }
    };
    Ok(Some(WireThinking::Enabled { token_budget }))
}

// ------------------------------------------------------------------ responses

/// A token count (Cohere's schema types counts as JSON numbers).
fn count(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1e15)
            // Range-checked, so the cast is exact after rounding.
            .map(|f| f.round() as u64)
    })
}

/// `usage` of a response or `message-end` → OpenAI usage (see the module docs).
fn usage_body(usage: &Value) -> Option<UsageBody> {
    let field = |group: &str, name: &str| count(usage.get(group).and_then(|g| g.get(name)));
    let input = field("tokens", "input_tokens").or_else(|| field("billed_units", "input_tokens"));
    let output =
        field("tokens", "output_tokens").or_else(|| field("billed_units", "output_tokens"));
    if input.is_none() && output.is_none() {
        return None;
    }
    let (prompt, completion) = (input.unwrap_or(0), output.unwrap_or(0));
    Some(UsageBody {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
        prompt_tokens_details: count(usage.get("cached_tokens"))
            .map(|cached_tokens| PromptTokensDetails { cached_tokens }),
        completion_tokens_details: None,
    })
}

/// Cohere `finish_reason` → OpenAI `finish_reason`.
fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS" | "TIMEOUT" | "ERROR_LIMIT") => "length",
        Some("ERROR_TOXIC") => "content_filter",
        Some("ERROR") => "error",
        _ if has_tool_calls => "tool_calls",
        // COMPLETE, STOP_SEQUENCE, USER_CANCEL and anything newer.
        _ => "stop",
    }
}

/// Whether Cohere's argument text means "no arguments": empty, or `null`,
/// which Cohere sometimes sends for a tool without parameters (vercel/ai
/// `cohere-null-args.json`).
fn no_arguments(text: &str) -> bool {
    matches!(text.trim(), "" | "null")
}

/// Tool-call arguments from the wire: the string as sent (`{}` for no
/// arguments); an object (from a proxy that decodes them) as compact JSON.
fn arguments_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) if !no_arguments(s) => s.clone(),
        Some(v @ Value::Object(_)) => v.to_string(),
        _ => "{}".to_owned(),
    }
}

fn invalid_response(provider: &str) -> GatewayError {
    GatewayError::UpstreamInvalidResponse {
        provider: provider.to_owned(),
    }
}

/// Upstream text made safe to show: key-shaped tokens masked, cut to
/// [`MAX_MESSAGE_CHARS`].
fn clean(text: &str) -> String {
    scrub_key_like(text.trim())
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .collect()
}

/// An error object (`{"message": "…"}`) where an answer was expected.
fn reported_error(provider: &str, message: &str) -> GatewayError {
    let detail = clean(message);
    GatewayError::Upstream {
        provider: provider.to_owned(),
        status: 502,
        message: if detail.is_empty() {
            format!("Provider '{provider}' reported an error.")
        } else {
            format!("Provider '{provider}' reported an error: {detail}")
        },
        code: "upstream_error",
        retry_after: None,
    }
}

/// A non-streamed Cohere answer → OpenAI `chat.completion`. `id`, `created`
/// and `model` are the gateway's (Cohere's answer names no model).
pub fn from_wire(
    body: &[u8],
    id: &str,
    created: u64,
    model: &str,
) -> Result<ChatCompletion, GatewayError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| invalid_response(PROVIDER))?;
    let Some(obj) = v.as_object() else {
        return Err(invalid_response(PROVIDER));
    };
    let message = match obj.get("message") {
        Some(m @ Value::Object(_)) => m,
        // `{"id":…,"message":"…"}` is Cohere's error shape.
        Some(Value::String(m)) => return Err(reported_error(PROVIDER, m)),
        _ => return Err(invalid_response(PROVIDER)),
    };

    let mut text = String::new();
    let mut saw_text = false;
    let mut reasoning = String::new();
    for block in message
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                saw_text = true;
                text.push_str(block.get("text").and_then(Value::as_str).unwrap_or(""));
            }
            Some("thinking") => {
                reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or(""));
            }
            _ => {}
        }
    }
    if let Some(plan) = message.get("tool_plan").and_then(Value::as_str) {
        reasoning.push_str(plan);
    }
    let tool_calls: Vec<ToolCall> = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|call| {
            let function = call.get("function");
            let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
            ToolCall {
                id: text(call.get("id")),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: text(function.and_then(|f| f.get("name"))),
                    arguments: arguments_text(function.and_then(|f| f.get("arguments"))),
                },
            }
        })
        .collect();
    let finish = finish_reason(
        obj.get("finish_reason").and_then(Value::as_str),
        !tool_calls.is_empty(),
    );
    let content = (saw_text || tool_calls.is_empty()).then_some(text);
    Ok(ChatCompletion {
        id: id.to_owned(),
        object: "chat.completion".to_owned(),
        created,
        model: model.to_owned(),
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant".to_owned(),
                content,
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                refusal: None,
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
            },
            logprobs: None,
            finish_reason: Some(finish.to_owned()),
        }],
        usage: obj.get("usage").and_then(usage_body),
    })
}

// -------------------------------------------------------------- StreamState

/// A tool call seen in the stream.
#[derive(Debug)]
struct StreamCall {
    /// OpenAI tool-call index.
    index: u32,
    /// Some argument text has been sent for it.
    has_arguments: bool,
}

/// Per-stream translation state: one decoded Cohere SSE frame in, zero or more
/// OpenAI chunks out. See the module docs for the mapping.
#[derive(Debug)]
pub struct StreamState {
    id: String,
    created: u64,
    model: String,
    provider: String,
    /// The `role: "assistant"` chunk has been emitted.
    opened: bool,
    /// Cohere tool-call index → the call.
    calls: HashMap<u64, StreamCall>,
    /// `tool-call-start`s seen so far (the next OpenAI tool-call index).
    call_count: u32,
    usage: Option<UsageBody>,
    finished: bool,
}

impl StreamState {
    pub fn new(id: String, created: u64, model: String) -> Self {
        Self {
            id,
            created,
            model,
            provider: PROVIDER.to_owned(),
            opened: false,
            calls: HashMap::new(),
            call_count: 0,
            usage: None,
            finished: false,
        }
    }

    /// Names the configured provider in errors from this stream (default
    /// `cohere`).
    pub fn with_provider(mut self, provider: &str) -> Self {
        provider.clone_into(&mut self.provider);
        self
    }

    /// One decoded frame → chunks. The event type is the data's `type` (the
    /// SSE `event:` name when the data has none).
    ///
    /// * `message-start` → the first chunk, `delta: {role: "assistant", content: ""}`.
    /// * `content-start` / `content-delta`: `text` → `content`, `thinking` →
    ///   `reasoning_content` (empty fragments skipped).
    /// * `tool-plan-delta` → `reasoning_content`.
    /// * `tool-call-start` → a tool-call delta with `index` (the count of
    ///   earlier calls), `id`, `type: "function"`, `function: {name,
    ///   arguments}` (normally `""`); `tool-call-delta` → an `arguments`
    ///   fragment of the call with that Cohere index; `tool-call-end` → `{}`
    ///   as the arguments of a call that got none (Cohere streams no argument
    ///   text, or just `null`, for a call without parameters; OpenAI
    ///   arguments are always a JSON object). `message-end` closes any call
    ///   still open the same way.
    /// * `message-end` → an empty-delta chunk with `finish_reason`, then a
    ///   final `choices: []` chunk carrying the usage (when Cohere reported
    ///   any); [`finished`](Self::finished) is then true and later frames
    ///   give nothing.
    /// * `content-end`, `citation-start`, `citation-end`, `debug`, frames
    ///   without data, `[DONE]` and unknown event types → nothing.
    ///
    /// Every chunk except the usage chunk has `usage: null`.
    ///
    /// Err for a frame that is not a JSON object, or an error object
    /// (`{"message": "…"}` without a `type`) → 502 `upstream_error` with the
    /// scrubbed message.
    pub fn on_frame(&mut self, frame: &SseFrame) -> Result<Vec<ChatChunk>, GatewayError> {
        let Some(data) = frame.data.as_deref() else {
            return Ok(Vec::new());
        };
        if self.finished || data.trim().is_empty() || data.trim() == "[DONE]" {
            return Ok(Vec::new());
        }
        let v: Value = serde_json::from_str(data).map_err(|_| invalid_response(&self.provider))?;
        if !v.is_object() {
            return Err(invalid_response(&self.provider));
        }
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(frame.event.as_deref());
        let Some(kind) = kind else {
            return match v.get("message").and_then(Value::as_str) {
                Some(m) => Err(reported_error(&self.provider, m)),
                None => Err(invalid_response(&self.provider)),
            };
        };
        let message = v.pointer("/delta/message");
        let str_at = |path: &str| {
            message
                .and_then(|m| m.pointer(path))
                .and_then(Value::as_str)
        };
        let index = v.get("index").and_then(Value::as_u64);
        let mut out = Vec::new();
        match kind {
            "message-start" => self.open(&mut out),
            "content-start" | "content-delta" => {
                self.open(&mut out);
                if let Some(text) = str_at("/content/text") {
                    self.push_content(&mut out, text);
                }
                if let Some(thinking) = str_at("/content/thinking") {
                    self.push_reasoning(&mut out, thinking);
                }
            }
            "tool-plan-delta" => {
                self.push_reasoning(&mut out, str_at("/tool_plan").unwrap_or(""));
            }
            "tool-call-start" => {
                let call = message.and_then(|m| m.get("tool_calls"));
                // Cohere sends the call as an object; tolerate a one-element array.
                let call = match call {
                    Some(Value::Array(items)) => items.first(),
                    other => other,
                };
                let text = |path: &str| {
                    call.and_then(|c| c.pointer(path))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                };
                let arguments = match call.and_then(|c| c.pointer("/function/arguments")) {
                    Some(Value::String(s)) if !no_arguments(s) => s.clone(),
                    Some(o @ Value::Object(_)) => o.to_string(),
                    _ => String::new(),
                };
                let tool = self.call_count;
                self.call_count = self.call_count.saturating_add(1);
                let key = index.unwrap_or(u64::from(tool));
                self.calls.insert(
                    key,
                    StreamCall {
                        index: tool,
                        has_arguments: !arguments.is_empty(),
                    },
                );
                self.open(&mut out);
                out.push(self.chunk(
                    Delta {
                        tool_calls: Some(vec![ToolCallDelta {
                            index: tool,
                            id: Some(text("/id")),
                            kind: Some("function".to_owned()),
                            function: FunctionCallDelta {
                                name: Some(text("/function/name")),
                                arguments: Some(arguments),
                            },
                        }]),
                        ..Delta::default()
                    },
                    None,
                ));
            }
            "tool-call-delta" => {
                let fragment = str_at("/tool_calls/function/arguments").unwrap_or("");
                let call = index.and_then(|i| self.calls.get_mut(&i));
                // A lone `null` as the first fragment means no arguments ("{}" at the end).
                let skip = |call: &StreamCall| {
                    fragment.is_empty() || (!call.has_arguments && no_arguments(fragment))
                };
                if let Some(call) = call.filter(|c| !skip(c)) {
                    call.has_arguments = true;
                    let tool = call.index;
                    self.push_arguments(&mut out, tool, fragment.to_owned());
                }
            }
            "tool-call-end" => {
                if let Some(i) = index {
                    self.close_call(&mut out, i);
                }
            }
            "message-end" => {
                let delta = v.get("delta");
                let mut open_calls: Vec<u64> = self
                    .calls
                    .iter()
                    .filter(|(_, c)| !c.has_arguments)
                    .map(|(k, _)| *k)
                    .collect();
                open_calls.sort_unstable();
                for key in open_calls {
                    self.close_call(&mut out, key);
                }
                if let Some(u) = delta.and_then(|d| d.get("usage")).and_then(usage_body) {
                    self.usage = Some(u);
                }
                let reason = delta
                    .and_then(|d| d.get("finish_reason"))
                    .and_then(Value::as_str);
                let finish = finish_reason(reason, self.call_count > 0);
                self.open(&mut out);
                out.push(self.chunk(Delta::default(), Some(finish.to_owned())));
                if let Some(usage) = self.usage() {
                    out.push(ChatChunk {
                        id: self.id.clone(),
                        object: "chat.completion.chunk".to_owned(),
                        created: self.created,
                        model: self.model.clone(),
                        choices: Vec::new(),
                        usage: Some(Some(usage)),
                    });
                }
                self.finished = true;
            }
            // content-end, citation-start, citation-end, debug and anything newer.
            _ => {}
        }
        Ok(out)
    }

    /// True after `message-end` (the caller then writes `data: [DONE]`).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Usage reported so far (Cohere reports it once, in `message-end`).
    pub fn usage(&self) -> Option<UsageBody> {
        self.usage.clone()
    }

    fn chunk(&self, delta: Delta, finish_reason: Option<String>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            usage: Some(None),
        }
    }

    /// Emits the role chunk once, before anything else.
    fn open(&mut self, out: &mut Vec<ChatChunk>) {
        if self.opened {
            return;
        }
        self.opened = true;
        out.push(self.chunk(
            Delta {
                role: Some("assistant".to_owned()),
                content: Some(String::new()),
                ..Delta::default()
            },
            None,
        ));
    }

    fn push_content(&mut self, out: &mut Vec<ChatChunk>, text: &str) {
        self.open(out);
        if text.is_empty() {
            return;
        }
        out.push(self.chunk(
            Delta {
                content: Some(text.to_owned()),
                ..Delta::default()
            },
            None,
        ));
    }

    fn push_reasoning(&mut self, out: &mut Vec<ChatChunk>, text: &str) {
        self.open(out);
        if text.is_empty() {
            return;
        }
        out.push(self.chunk(
            Delta {
                reasoning_content: Some(text.to_owned()),
                ..Delta::default()
            },
            None,
        ));
    }

    fn push_arguments(&mut self, out: &mut Vec<ChatChunk>, tool: u32, arguments: String) {
        self.open(out);
        out.push(self.chunk(
            Delta {
                tool_calls: Some(vec![ToolCallDelta {
                    index: tool,
                    id: None,
                    kind: None,
                    function: FunctionCallDelta {
                        name: None,
                        arguments: Some(arguments),
                    },
                }]),
                ..Delta::default()
            },
            None,
        ));
    }

    /// `{}` for a call that ended without argument text.
    fn close_call(&mut self, out: &mut Vec<ChatChunk>, key: u64) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if call.has_arguments {
            return;
        }
        call.has_arguments = true;
        let tool = call.index;
        self.push_arguments(out, tool, "{}".to_owned());
    }
}

// --------------------------------------------------------------- embeddings

/// OpenAI embeddings body (validated: `model`, `input` string or array of
/// strings, optional `dimensions`, and the non-OpenAI `input_type`) → the
/// `POST {base}/embed` body.
pub fn embeddings_to_wire(
    body: &Map<String, Value>,
    upstream_model: &str,
) -> Result<Value, GatewayError> {
    let texts = crate::request::embedding_texts(body, "Cohere", MAX_EMBED_TEXTS)?;
    let input_type = match body.get("input_type") {
        None | Some(Value::Null) => DEFAULT_EMBED_INPUT_TYPE,
        Some(v) => v
            .as_str()
            .filter(|t| EMBED_INPUT_TYPES.contains(t))
            .ok_or_else(|| {
                GatewayError::invalid_param(
                    "input_type",
                    format!(
                        "'input_type' must be one of {} for Cohere embeddings.",
                        EMBED_INPUT_TYPES.join(", ")
                    ),
                )
            })?,
    };
    let mut out = json!({
        "model": upstream_model,
        "texts": texts,
        "input_type": input_type,
        "embedding_types": ["float"],
    });
    match body.get("dimensions") {
        None | Some(Value::Null) => {}
        Some(d) => {
            let d = d.as_u64().filter(|&d| d > 0).ok_or_else(|| {
                GatewayError::invalid_param(
                    "dimensions",
                    "'dimensions' must be a positive integer.",
                )
            })?;
            if let Some(obj) = out.as_object_mut() {
                obj.insert("output_dimension".to_owned(), json!(d));
            }
        }
    }
    Ok(out)
}

/// `POST {base}/embed` answer → OpenAI embeddings `list` (float, or base64 of
/// little-endian f32 when `base64`); `usage` only when Cohere reports billed
/// input tokens.
pub fn embeddings_from_wire(body: &[u8], model: &str, base64: bool) -> Result<Value, GatewayError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| invalid_response(PROVIDER))?;
    let vectors = match v.get("embeddings") {
        // `embeddings_by_type`, what v2 returns.
        Some(Value::Object(by_type)) => by_type.get("float"),
        // `embeddings_floats`, the v1 shape.
        Some(list @ Value::Array(_)) => Some(list),
        _ => None,
    };
    let Some(Value::Array(vectors)) = vectors else {
        return match v.get("message").and_then(Value::as_str) {
            Some(m) => Err(reported_error(PROVIDER, m)),
            None => Err(invalid_response(PROVIDER)),
        };
    };
    if vectors.is_empty() {
        return Err(invalid_response(PROVIDER));
    }
    let data = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let values: Vec<f32> = vector
                .as_array()
                .ok_or_else(|| invalid_response(PROVIDER))?
                .iter()
                // f32 is what the OpenAI wire carries (base64 is little-endian f32).
                .map(|x| x.as_f64().map(|f| f as f32))
                .collect::<Option<_>>()
                .ok_or_else(|| invalid_response(PROVIDER))?;
            let embedding = if base64 {
                let bytes: Vec<u8> = values.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Value::Array(values.iter().copied().map(f32_number).collect())
            };
            Ok(json!({ "object": "embedding", "index": index, "embedding": embedding }))
        })
        .collect::<Result<Vec<_>, GatewayError>>()?;
    let mut out = json!({ "object": "list", "data": data, "model": model });
    let tokens = count(v.pointer("/meta/billed_units/input_tokens"));
    if let (Some(tokens), Some(obj)) = (tokens, out.as_object_mut()) {
        obj.insert(
            "usage".to_owned(),
            json!({ "prompt_tokens": tokens, "total_tokens": tokens }),
        );
    }
    Ok(out)
}

/// An f32 as the shortest decimal that reads back as the same f32
/// (`0.03302002`, not `0.033020019531`), as OpenAI prints embeddings.
fn f32_number(x: f32) -> Value {
    let shortest = x.to_string().parse::<f64>().unwrap_or(f64::from(x));
    serde_json::Number::from_f64(shortest).map_or(Value::Null, Value::Number)
}

// ------------------------------------------------------------------ errors

/// Whether a Cohere 400 is "the prompt does not fit": Cohere prefixes those
/// with `too many tokens:` ("size limit exceeded by N tokens", "total number
/// of tokens in the prompt cannot exceed …", "multi-hop prompt is too long
/// even after truncation"), but also a `max_tokens` above the model's output
/// limit, which is an ordinary invalid request.
fn is_context_length(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    if m.contains("max tokens must") || m.contains("max_tokens must") {
        return false;
    }
    m.contains("too many tokens") || m.contains("context length") || m.contains("context window")
}

/// A `Retry-After` value worth passing on: delta-seconds only.
fn sane_retry_after(v: Option<&str>) -> Option<String> {
    let v = v?.trim();
    (!v.is_empty() && v.len() <= 6 && v.bytes().all(|b| b.is_ascii_digit())).then(|| v.to_owned())
}

/// Cohere error status + body (`{"id": "…", "message": "…"}`) → the
/// OpenAI-shaped error with the same meaning. Provider text is passed on
/// (scrubbed of anything key-shaped and cut to 500 characters) only where the
/// client can act on it.
///
/// | Cohere | client |
/// |---|---|
/// | 400, 422 (unknown field, …), other 4xx | 400 `upstream_invalid_request` with the message |
/// | 400 `too many tokens: …` (not `max tokens must …`) | 400 `context_length_exceeded` |
/// | 401 / 403 | 502 `upstream_auth_failed`, message not relayed |
/// | 402 (billing limit) | 502 `upstream_billing_error` (the operator's account) |
/// | 404 | 404 `upstream_not_found` with the message |
/// | 408 | 504 `upstream_error` |
/// | 413 | 413 `upstream_invalid_request` |
/// | 429 | 429 `upstream_rate_limited` + `retry-after` |
/// | 498 (blocked as unsafe / deny-listed token) | 400 `content_policy_violation` with the message |
/// | 499 (cancelled), 500, 501, 502, other | 502 `upstream_error` |
/// | 503 | 503 `upstream_overloaded` + `retry-after` |
/// | 504 | 504 `upstream_error` |
/// | 3xx | 502 `upstream_redirect` |
pub fn map_error(
    provider: &str,
    status: u16,
    body: &[u8],
    retry_after: Option<&str>,
) -> GatewayError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(clean))
        .filter(|m| !m.is_empty());
    let upstream = |status: u16, code: &'static str, message: String, retry: Option<String>| {
        GatewayError::Upstream {
            provider: provider.to_owned(),
            status,
            message,
            code,
            retry_after: retry,
        }
    };
    let rejected = || match &message {
        Some(m) => format!("Provider '{provider}' rejected the request: {m}"),
        None => format!("Provider '{provider}' rejected the request (HTTP {status})."),
    };
    match status {
        300..=399 => GatewayError::UpstreamRedirect {
            provider: provider.to_owned(),
        },
        401 | 403 => upstream(
            502,
            "upstream_auth_failed",
            format!(
                "Provider '{provider}' rejected the gateway's credentials (HTTP {status}); \
                 the operator should check its API key."
            ),
            None,
        ),
        402 => upstream(
            502,
            "upstream_billing_error",
            format!(
                "Provider '{provider}' refused the request for billing reasons (HTTP 402); \
                 the operator should check the account's billing."
            ),
            None,
        ),
        404 => upstream(404, "upstream_not_found", rejected(), None),
        408 => upstream(
            504,
            "upstream_error",
            format!("Provider '{provider}' timed out (HTTP 408)."),
            sane_retry_after(retry_after),
        ),
        413 => upstream(413, "upstream_invalid_request", rejected(), None),
        429 => upstream(
            429,
            "upstream_rate_limited",
            format!("Provider '{provider}' is rate limiting requests; retry later."),
            sane_retry_after(retry_after),
        ),
        498 => upstream(
            400,
            "content_policy_violation",
            match &message {
                Some(m) => format!("Provider '{provider}' blocked the request as unsafe: {m}"),
                None => format!("Provider '{provider}' blocked the request as unsafe (HTTP 498)."),
            },
            None,
        ),
        400..=497 => {
            if message.as_deref().is_some_and(is_context_length) {
                upstream(400, "context_length_exceeded", rejected(), None)
            } else {
                upstream(400, "upstream_invalid_request", rejected(), None)
            }
        }
        503 => upstream(
            503,
            "upstream_overloaded",
            format!("Provider '{provider}' is overloaded (HTTP 503); retry later."),
            sane_retry_after(retry_after),
        ),
        _ => upstream(
            if status == 504 { 504 } else { 502 },
            "upstream_error",
            format!("Provider '{provider}' returned an error (HTTP {status})."),
            sane_retry_after(retry_after),
        ),
    }
}

/// Whether a failure with this status is worth another attempt (on this or
/// another provider): timeouts, rate limits, cancelled requests (499, which
/// Cohere says to retry) and 5xx other than 501 (not implemented).
pub fn is_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 499 | 500 | 502 | 503 | 504)
}

#[cfg(test)]
mod tests {
    //! Golden tests over `tests/fixtures/cohere/` (sources in its README) plus
    //! unit tests for each rule in the module docs.
    //!
    //! Case matrix — every case, and where it is covered ("n/a" says why a
    //! direction does not apply):
    //!
    //! | case | request (`to_wire`) | response (`from_wire`) | stream (`StreamState`) |
    //! |---|---|---|---|
    //! | text | `request.text` | `response.text` | `stream.text` |
    //! | system / developer (hoisted, merged) | `request.text`, `request.tools` | n/a: answers have no system part | n/a |
    //! | multi-turn | `request.text`, `request.tools` | n/a | n/a |
    //! | tools | `request.tools`, `tool_choice_*` units | `response.null_args` | `stream.empty_args` |
    //! | parallel tools | `request.tools` (two calls in one turn) | `response.tool_calls` | `stream.tool_calls` |
    //! | tool-result round trip (tool_plan ⇄ reasoning_content) | `request.tools` | `response.tool_calls` | `stream.tool_calls` |
    //! | image | `request.image`, `image_urls_are_checked` | n/a: Cohere returns no images | n/a |
    //! | JSON mode | `request.json_schema`, `response_format_*` unit | `response.json_mode` | n/a: a JSON answer streams as text (`stream.text`) |
    //! | reasoning / thinking | `request.reasoning`, `reasoning_effort_table` | `response.thinking` | `stream.thinking` |
    //! | citations (dropped) | n/a | `response.citations` | `stream.citations` |
    //! | stop sequence | `request.text` (`stop`) | `response.stop_sequence` | `finish_reason_table` unit (same mapping) |
    //! | length cut | n/a | `response.max_tokens` | `stream.max_tokens` (also ends in `[DONE]`) |
    //! | content filter | n/a | `finish_reason_table` (`ERROR_TOXIC`; not in the v2 enum, kept for safety) | same |
    //! | generation error | n/a | `response.error_finish` (billed-units-only usage) | `stream.error_finish` |
    //! | cached-token usage | n/a | `response.text` | `stream.text` |
    //! | each error class | n/a | `error.*` (400, context, max tokens, key echo, 401, 402, 404, 422, 429, 499, 500, 503), `error_status_edges` (403, 408, 413, 498, 501, 504, 3xx) | `stream_error_objects` |
    //! | embeddings | `embed.request` | `embed.response` | n/a: embeddings do not stream |
    //!
    //! Expected files for responses, streams and errors were generated by this
    //! code and reviewed by hand; `TOLLGATE_BLESS=1 cargo test cohere` rewrites
    //! them after a deliberate change (review the diff).

    use super::*;
    use crate::sse::SseDecoder;

    macro_rules! fixture {
        ($name:literal) => {
            (
                $name,
                include_str!(concat!("../../tests/fixtures/cohere/", $name)),
            )
        };
    }

    type Fixture = (&'static str, &'static str);

    const ID: &str = "chatcmpl-tollgate-test";
    const CREATED: u64 = 1_760_000_000;
    const MODEL: &str = "command-a-03-2025";

    /// Compares `actual` with an expected fixture (or rewrites it when blessing).
    fn golden(expected: Fixture, actual: &Value) {
        let (name, text) = expected;
        if std::env::var_os("TOLLGATE_BLESS").is_some() {
            let path = format!(
                "{}/tests/fixtures/cohere/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            let pretty = serde_json::to_string_pretty(actual).unwrap();
            std::fs::write(path, pretty + "\n").unwrap();
            return;
        }
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            &expected,
            actual,
            "{name} differs; actual:\n{}",
            serde_json::to_string_pretty(actual).unwrap()
        );
    }

    fn json_of(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn req(v: Value) -> ChatRequest {
        ChatRequest::from_body(v.as_object().unwrap()).unwrap()
    }

    fn wire(v: Value) -> Value {
        to_wire(&req(v), MODEL, false).unwrap()
    }

    fn wire_err(v: Value) -> GatewayError {
        to_wire(&req(v), MODEL, false).unwrap_err()
    }

    fn user(text: &str) -> Value {
        json!([{"role": "user", "content": text}])
    }

    fn with(key: &str, value: Value) -> Value {
        let mut body = json!({"model": "m", "messages": user("hi")});
        body[key] = value;
        body
    }

    fn err_json(e: &GatewayError) -> Value {
        json!({"status": e.status(), "retry_after": e.retry_after(), "body": e.to_body()})
    }

    // -------------------------------------------------- fixture bookkeeping

    const REQUESTS: &[(Fixture, Fixture, &str)] = &[
        (
            fixture!("request.text.openai.json"),
            fixture!("request.text.json"),
            "command-a-03-2025",
        ),
        (
            fixture!("request.tools.openai.json"),
            fixture!("request.tools.json"),
            "command-a-03-2025",
        ),
        (
            fixture!("request.image.openai.json"),
            fixture!("request.image.json"),
            "command-a-vision-07-2025",
        ),
        (
            fixture!("request.json_schema.openai.json"),
            fixture!("request.json_schema.json"),
            "command-a-03-2025",
        ),
        (
            fixture!("request.reasoning.openai.json"),
            fixture!("request.reasoning.json"),
            "command-a-reasoning-08-2025",
        ),
    ];

    const RESPONSES: &[(Fixture, Fixture)] = &[
        (
            fixture!("response.text.json"),
            fixture!("response.text.openai.json"),
        ),
        (
            fixture!("response.tool_calls.json"),
            fixture!("response.tool_calls.openai.json"),
        ),
        (
            fixture!("response.null_args.json"),
            fixture!("response.null_args.openai.json"),
        ),
        (
            fixture!("response.thinking.json"),
            fixture!("response.thinking.openai.json"),
        ),
        (
            fixture!("response.max_tokens.json"),
            fixture!("response.max_tokens.openai.json"),
        ),
        (
            fixture!("response.citations.json"),
            fixture!("response.citations.openai.json"),
        ),
        (
            fixture!("response.stop_sequence.json"),
            fixture!("response.stop_sequence.openai.json"),
        ),
        (
            fixture!("response.json_mode.json"),
            fixture!("response.json_mode.openai.json"),
        ),
        (
            fixture!("response.error_finish.json"),
            fixture!("response.error_finish.openai.json"),
        ),
    ];

    const STREAMS: &[(Fixture, Fixture)] = &[
        (
            fixture!("stream.text.sse"),
            fixture!("stream.text.openai.json"),
        ),
        (
            fixture!("stream.tool_calls.sse"),
            fixture!("stream.tool_calls.openai.json"),
        ),
        (
            fixture!("stream.empty_args.sse"),
            fixture!("stream.empty_args.openai.json"),
        ),
        (
            fixture!("stream.thinking.sse"),
            fixture!("stream.thinking.openai.json"),
        ),
        (
            fixture!("stream.citations.sse"),
            fixture!("stream.citations.openai.json"),
        ),
        (
            fixture!("stream.max_tokens.sse"),
            fixture!("stream.max_tokens.openai.json"),
        ),
        (
            fixture!("stream.error_finish.sse"),
            fixture!("stream.error_finish.openai.json"),
        ),
    ];

    /// (status, retry-after header, Cohere body, expected).
    const ERRORS: &[(u16, Option<&str>, Fixture, Fixture)] = &[
        (
            400,
            None,
            fixture!("error.400.json"),
            fixture!("error.400.openai.json"),
        ),
        (
            400,
            None,
            fixture!("error.400_context.json"),
            fixture!("error.400_context.openai.json"),
        ),
        (
            400,
            None,
            fixture!("error.400_max_tokens.json"),
            fixture!("error.400_max_tokens.openai.json"),
        ),
        (
            400,
            None,
            fixture!("error.400_key_echo.json"),
            fixture!("error.400_key_echo.openai.json"),
        ),
        (
            401,
            None,
            fixture!("error.401.json"),
            fixture!("error.401.openai.json"),
        ),
        (
            402,
            None,
            fixture!("error.402.json"),
            fixture!("error.402.openai.json"),
        ),
        (
            404,
            None,
            fixture!("error.404.json"),
            fixture!("error.404.openai.json"),
        ),
        (
            422,
            None,
            fixture!("error.422.json"),
            fixture!("error.422.openai.json"),
        ),
        (
            429,
            Some("30"),
            fixture!("error.429.json"),
            fixture!("error.429.openai.json"),
        ),
        (
            499,
            None,
            fixture!("error.499.json"),
            fixture!("error.499.openai.json"),
        ),
        (
            500,
            None,
            fixture!("error.500.json"),
            fixture!("error.500.openai.json"),
        ),
        (
            503,
            Some("5"),
            fixture!("error.503.json"),
            fixture!("error.503.openai.json"),
        ),
    ];

    const EMBED_REQUEST: (Fixture, Fixture) = (
        fixture!("embed.request.openai.json"),
        fixture!("embed.request.json"),
    );
    const EMBED_RESPONSE: (Fixture, Fixture) = (
        fixture!("embed.response.json"),
        fixture!("embed.response.openai.json"),
    );

    #[test]
    fn every_fixture_is_used_and_described() {
        let mut used: Vec<&str> = Vec::new();
        for ((a, _), (b, _), _) in REQUESTS {
            used.extend([*a, *b]);
        }
        for ((a, _), (b, _)) in RESPONSES.iter().chain(STREAMS) {
            used.extend([*a, *b]);
        }
        for (_, _, (a, _), (b, _)) in ERRORS {
            used.extend([*a, *b]);
        }
        for ((a, _), (b, _)) in [EMBED_REQUEST, EMBED_RESPONSE] {
            used.extend([a, b]);
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cohere");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name == "README.md" || name.starts_with('.') {
                continue;
            }
            assert!(used.contains(&name.as_str()), "fixture {name} is unused");
        }
        let readme = std::fs::read_to_string(format!("{dir}/README.md")).unwrap();
        for name in &used {
            // Expected files are described by their pattern.
            let wire_side = !name.ends_with(".openai.json")
                || name.starts_with("request.")
                || name.starts_with("embed.request");
            if wire_side {
                let stem = name.rsplit_once('.').map_or(*name, |(s, _)| s);
                let stem = stem.strip_suffix(".openai").unwrap_or(stem);
                assert!(readme.contains(stem), "README.md does not describe {name}");
            }
        }
    }

    // ------------------------------------------------------------ requests

    #[test]
    fn golden_requests() {
        for ((name, input), (exp_name, exp_text), model) in REQUESTS {
            let r = req(json_of(input));
            let actual = to_wire(&r, model, r.stream.unwrap_or(false))
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            // Request fixtures are hand-written: never blessed.
            assert_eq!(
                json_of(exp_text),
                actual,
                "{exp_name}; actual:\n{}",
                serde_json::to_string_pretty(&actual).unwrap()
            );
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(endpoint(DEFAULT_BASE_URL), "https://api.cohere.com/v2/chat");
        assert_eq!(
            endpoint("http://127.0.0.1:9/v2/"),
            "http://127.0.0.1:9/v2/chat"
        );
        assert_eq!(
            embeddings_endpoint(DEFAULT_BASE_URL),
            "https://api.cohere.com/v2/embed"
        );
        assert_eq!(
            embeddings_endpoint("http://127.0.0.1:9/v2/"),
            "http://127.0.0.1:9/v2/embed"
        );
    }

    #[test]
    fn minimal_request_sends_only_what_was_asked() {
        let w = to_wire(
            &req(json!({"model": "m", "messages": user("hi")})),
            "command-r7b-12-2024",
            true,
        )
        .unwrap();
        assert_eq!(
            w,
            json!({"model": "command-r7b-12-2024", "messages": [{"role": "user", "content": "hi"}], "stream": true})
        );
    }

    #[test]
    fn sampling_ranges() {
        for (top_p, p) in [
            (1.0, 0.99),
            (0.995, 0.99),
            (0.5, 0.5),
            (0.0, 0.01),
            (0.005, 0.01),
        ] {
            assert_eq!(wire(with("top_p", json!(top_p)))["p"], json!(p), "{top_p}");
        }
        for (key, value) in [
            ("temperature", json!(1.5)),
            ("temperature", json!(-0.1)),
            ("top_p", json!(1.5)),
            ("frequency_penalty", json!(-0.5)),
            ("presence_penalty", json!(1.5)),
            ("seed", json!(-1)),
            ("top_k", json!(501)),
            ("top_k", json!("x")),
            ("k", json!(-1)),
        ] {
            let e = wire_err(with(key, value.clone()));
            assert_eq!((e.status(), e.param()), (400, Some(key)), "{key}={value}");
        }
        let w = wire(with("temperature", json!(1)));
        assert_eq!(w["temperature"], json!(1.0));
        let w = wire(with("k", json!(0)));
        assert_eq!(w["k"], 0);
        let w = wire(with("presence_penalty", json!(0.25)));
        assert_eq!(
            (w["presence_penalty"].as_f64(), w.get("frequency_penalty")),
            (Some(0.25), None)
        );
        // Zero penalties (what many SDKs always send) are Cohere's default: not sent.
        let w = wire(
            json!({"model": "m", "messages": user("hi"), "presence_penalty": 0, "frequency_penalty": 0}),
        );
        assert!(w.get("presence_penalty").is_none() && w.get("frequency_penalty").is_none());
        // max_tokens alone, and an empty stop.
        let w = wire(json!({"model": "m", "messages": user("hi"), "max_tokens": 10, "stop": ""}));
        assert_eq!(w["max_tokens"], 10);
        assert!(w.get("stop_sequences").is_none());
        let w = wire(with("stop", json!("END")));
        assert_eq!(w["stop_sequences"], json!(["END"]));
    }

    #[test]
    fn unsupported_parameters_are_400() {
        for (key, value) in [
            ("n", json!(2)),
            ("logit_bias", json!({"50256": -100})),
            ("logprobs", json!(true)),
            ("top_logprobs", json!(2)),
            ("audio", json!({"voice": "alloy", "format": "mp3"})),
            ("prediction", json!({"type": "content", "content": "x"})),
            ("web_search_options", json!({})),
            ("modalities", json!(["text", "audio"])),
        ] {
            let e = wire_err(with(key, value));
            assert_eq!(
                (e.status(), e.code(), e.param()),
                (400, "unsupported_parameter", Some(key)),
                "{key}"
            );
        }
        // Defaults are accepted.
        for (key, value) in [
            ("n", json!(1)),
            ("logprobs", json!(false)),
            ("top_logprobs", json!(0)),
            ("logit_bias", json!({})),
            ("modalities", json!(["text"])),
            ("parallel_tool_calls", json!(false)),
            ("metadata", json!({"a": "b"})),
            ("service_tier", json!("auto")),
        ] {
            assert!(
                to_wire(&req(with(key, value)), MODEL, false).is_ok(),
                "{key}"
            );
        }
    }

    #[test]
    fn messages_edge_cases() {
        // Unknown role, tool message without id, non-text parts where only text goes.
        let e = wire_err(json!({"model": "m", "messages": [{"role": "function", "content": "x"}]}));
        assert_eq!(e.param(), Some("messages[0].role"));
        let e = wire_err(json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}));
        assert_eq!(e.param(), Some("messages[0].tool_call_id"));
        let audio =
            json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}});
        for role in ["user", "system", "tool", "assistant"] {
            let e = wire_err(json!({"model": "m", "messages": [
                {"role": role, "tool_call_id": "c", "content": [{"type": "text", "text": "a"}, audio]}
            ]}));
            assert_eq!(e.param(), Some("messages[0].content[1]"), "{role}");
            assert!(e.message().contains("input_audio"), "{role}");
        }
        let image = json!({"type": "image_url", "image_url": {"url": "https://x/y.png"}});
        let e = wire_err(
            json!({"model": "m", "messages": [{"role": "system", "content": [image]}, {"role": "user", "content": "x"}]}),
        );
        assert_eq!(e.param(), Some("messages[0].content[0]"));
        // Only a system message is still a message; nothing at all is not.
        let w = wire(json!({"model": "m", "messages": [{"role": "system", "content": "s"}]}));
        assert_eq!(w["messages"], json!([{"role": "system", "content": "s"}]));
        let e = wire_err(json!({"model": "m", "messages": [{"role": "system", "content": ""}]}));
        assert_eq!(e.param(), Some("messages"));
        // Assistant text parts and refusals.
        let w = wire(json!({"model": "m", "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": [{"type": "text", "text": "b"}, {"type": "refusal", "refusal": "c"}]},
            {"role": "assistant", "content": null, "refusal": "no"},
            {"role": "assistant", "content": null}
        ]}));
        assert_eq!(
            w["messages"],
            json!([
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "bc"},
                {"role": "assistant", "content": "no"}
            ])
        );
        // Text wins over reasoning_content as the tool plan; no plan when neither.
        let call = json!([{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]);
        let w = wire(json!({"model": "m", "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "plan", "reasoning_content": "thought", "tool_calls": call},
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
            {"role": "assistant", "tool_calls": call},
            {"role": "tool", "tool_call_id": "c1"}
        ]}));
        assert_eq!(w["messages"][1]["tool_plan"], "plan");
        assert!(w["messages"][1].get("content").is_none());
        assert_eq!(
            w["messages"][3],
            json!({"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]})
        );
        assert_eq!(
            w["messages"][4],
            json!({"role": "tool", "tool_call_id": "c1", "content": ""})
        );
        // Arguments must be a JSON object.
        for bad in ["[1]", "{", "\"x\""] {
            let e = wire_err(json!({"model": "m", "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": bad}}]}
            ]}));
            assert_eq!(
                e.param(),
                Some("messages[1].tool_calls[0].function.arguments"),
                "{bad}"
            );
        }
    }

    #[test]
    fn image_urls_are_checked() {
        let msg = |url: &str| {
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}
            ]}]})
        };
        let w = wire(msg("HTTP://example.com/cat.jpg"));
        assert_eq!(
            w["messages"][0]["content"][0],
            json!({"type": "image_url", "image_url": {"url": "HTTP://example.com/cat.jpg"}})
        );
        for bad in [
            "ftp://x/y.png",
            "data:image/png,abc",
            "file:///etc/passwd",
            "x",
        ] {
            let e = wire_err(msg(bad));
            assert_eq!(
                e.param(),
                Some("messages[0].content[0].image_url.url"),
                "{bad}"
            );
        }
    }

    fn tools() -> Value {
        json!([
            {"type": "function", "function": {"name": "a", "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "b", "description": "B", "strict": false}}
        ])
    }

    #[test]
    fn tool_choice_modes() {
        let body = |choice: Value| json!({"model": "m", "messages": user("hi"), "tools": tools(), "tool_choice": choice});
        let w = wire(body(json!("auto")));
        assert!(w.get("tool_choice").is_none());
        assert_eq!(w["tools"].as_array().unwrap().len(), 2);
        assert!(
            w.get("strict_tools").is_none(),
            "strict: false is not strict"
        );
        assert_eq!(wire(body(json!("none")))["tool_choice"], "NONE");
        assert_eq!(wire(body(json!("required")))["tool_choice"], "REQUIRED");
        // A named function: only that tool, required.
        let w = wire(body(json!({"type": "function", "function": {"name": "b"}})));
        assert_eq!(w["tool_choice"], "REQUIRED");
        assert_eq!(
            w["tools"],
            json!([{"type": "function", "function": {"name": "b", "description": "B", "parameters": {"type": "object", "properties": {}}}}])
        );
        let e = wire_err(body(
            json!({"type": "function", "function": {"name": "zzz"}}),
        ));
        assert_eq!(e.param(), Some("tool_choice"));
        assert!(e.message().contains("zzz"));
        let e = wire_err(body(json!("sometimes")));
        assert_eq!(e.param(), Some("tool_choice"));
        // Without tools: none is dropped, required and named are 400.
        let w = wire(with("tool_choice", json!("none")));
        assert!(w.get("tool_choice").is_none() && w.get("tools").is_none());
        for choice in [
            json!("required"),
            json!({"type": "function", "function": {"name": "a"}}),
        ] {
            assert_eq!(
                wire_err(with("tool_choice", choice)).param(),
                Some("tool_choice")
            );
        }
        // Non-function tools are refused.
        let e = wire_err(with(
            "tools",
            json!([{"type": "custom", "function": {"name": "x"}}]),
        ));
        assert_eq!(e.param(), Some("tools[0].type"));
    }

    #[test]
    fn response_format_variants() {
        assert!(wire(with("response_format", json!({"type": "text"})))
            .get("response_format")
            .is_none());
        assert_eq!(
            wire(with("response_format", json!({"type": "json_object"})))["response_format"],
            json!({"type": "json_object"})
        );
        assert_eq!(
            wire(with(
                "response_format",
                json!({"type": "json_schema", "json_schema": {"name": "x"}})
            ))["response_format"],
            json!({"type": "json_object"})
        );
        let e = wire_err(with("response_format", json!({"type": "json_schema"})));
        assert_eq!(e.param(), Some("response_format.json_schema"));
        let e = wire_err(with("response_format", json!({"type": "yaml"})));
        assert_eq!(e.param(), Some("response_format.type"));
    }

    #[test]
    fn reasoning_effort_table() {
        for (effort, budget) in [
            ("minimal", 1024),
            ("low", 2048),
            ("medium", 8192),
            ("high", 16384),
            ("xhigh", 24576),
        ] {
            assert_eq!(
                wire(with("reasoning_effort", json!(effort)))["thinking"],
                json!({"type": "enabled", "token_budget": budget}),
                "{effort}"
            );
        }
        assert_eq!(
            wire(with("reasoning_effort", json!("none")))["thinking"],
            json!({"type": "disabled"})
        );
        let e = wire_err(with("reasoning_effort", json!("max")));
        assert_eq!(e.param(), Some("reasoning_effort"));
    }

    // ----------------------------------------------------------- responses

    #[test]
    fn golden_responses() {
        for ((name, body), expected) in RESPONSES {
            let c = from_wire(body.as_bytes(), ID, CREATED, MODEL)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            golden(*expected, &serde_json::to_value(&c).unwrap());
        }
    }

    #[test]
    fn response_details() {
        let c = from_wire(
            fixture!("response.tool_calls.json").1.as_bytes(),
            ID,
            CREATED,
            MODEL,
        )
        .unwrap();
        let m = &c.choices[0].message;
        assert_eq!(m.content, None, "only tool calls: content is null");
        assert!(m
            .reasoning_content
            .as_deref()
            .unwrap()
            .starts_with("I will use the weather tool"));
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("tool_calls"));
        let u = c.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (1549, 103, 1652),
            "tokens, not billed_units"
        );
        assert_eq!(u.prompt_tokens_details.unwrap().cached_tokens, 992);
        // billed_units is the fallback, per field.
        let c = from_wire(
            fixture!("response.error_finish.json").1.as_bytes(),
            ID,
            CREATED,
            MODEL,
        )
        .unwrap();
        let u = c.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (11, 3));
        assert!(u.prompt_tokens_details.is_none());
        let body = json!({"message": {"role": "assistant", "content": []}, "finish_reason": "COMPLETE",
            "usage": {"billed_units": {"input_tokens": 4, "output_tokens": 9}, "tokens": {"input_tokens": 500.0}}});
        let u = from_wire(body.to_string().as_bytes(), ID, CREATED, MODEL)
            .unwrap()
            .usage
            .unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (500, 9));
        // Empty answer: "" (not null), no usage when none was sent; objects as arguments.
        let body = json!({"id": "x", "message": {"role": "assistant", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}},
            {"id": "t2", "type": "function", "function": {"name": "g"}}
        ]}, "finish_reason": "TOOL_CALL"});
        let c = from_wire(body.to_string().as_bytes(), ID, CREATED, MODEL).unwrap();
        let calls = c.choices[0].message.tool_calls.as_ref().unwrap();
        assert_eq!(
            (
                calls[0].function.arguments.as_str(),
                calls[1].function.arguments.as_str()
            ),
            ("{\"a\":1}", "{}")
        );
        assert!(c.usage.is_none());
        let body = br#"{"id":"x","message":{"role":"assistant"},"finish_reason":"COMPLETE"}"#;
        let c = from_wire(body, ID, CREATED, MODEL).unwrap();
        assert_eq!(c.choices[0].message.content.as_deref(), Some(""));
    }

    #[test]
    fn finish_reason_table() {
        for (reason, calls, want) in [
            (Some("COMPLETE"), false, "stop"),
            (Some("STOP_SEQUENCE"), false, "stop"),
            (Some("MAX_TOKENS"), false, "length"),
            (Some("TIMEOUT"), false, "length"),
            (Some("ERROR_LIMIT"), false, "length"),
            (Some("TOOL_CALL"), true, "tool_calls"),
            (Some("COMPLETE"), true, "tool_calls"),
            (Some("TOOL_CALL"), false, "stop"),
            (Some("ERROR_TOXIC"), false, "content_filter"),
            (Some("ERROR"), false, "error"),
            (Some("SOMETHING_NEW"), false, "stop"),
            (None, false, "stop"),
        ] {
            assert_eq!(finish_reason(reason, calls), want, "{reason:?} {calls}");
        }
        // The same table drives streams.
        let body = json!({"message": {"role": "assistant", "content": [{"type": "text", "text": "x"}]}, "finish_reason": "ERROR_TOXIC"});
        let c = from_wire(body.to_string().as_bytes(), ID, CREATED, MODEL).unwrap();
        assert_eq!(
            c.choices[0].finish_reason.as_deref(),
            Some("content_filter")
        );
    }

    #[test]
    fn unreadable_and_error_bodies() {
        for bad in [&b"not json"[..], b"[]", b"{}", b"", br#"{"message": 5}"#] {
            let e = from_wire(bad, ID, CREATED, MODEL).unwrap_err();
            assert_eq!(
                (e.status(), e.code()),
                (502, "upstream_invalid_response"),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // An error body that arrived with a 2xx is still an error, scrubbed.
        let e = from_wire(
            fixture!("error.400_key_echo.json").1.as_bytes(),
            ID,
            CREATED,
            MODEL,
        )
        .unwrap_err();
        assert_eq!((e.status(), e.code()), (502, "upstream_error"));
        assert!(e.message().contains("tool names can only contain"));
        assert!(!e.message().contains("CANARY"));
    }

    // ------------------------------------------------------------- streams

    /// What a stream translates to: chunks until the end or the first error.
    #[derive(Debug, PartialEq)]
    struct Outcome {
        chunks: Vec<ChatChunk>,
        error: Option<GatewayError>,
        finished: bool,
        usage: Option<UsageBody>,
    }

    impl Outcome {
        fn to_json(&self) -> Value {
            json!({
                "chunks": self.chunks,
                "error": self.error.as_ref().map(err_json),
                "finished": self.finished,
                "usage": self.usage,
            })
        }
    }

    fn decode<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<SseFrame> {
        let mut dec = SseDecoder::default();
        let mut frames = Vec::new();
        for p in pieces {
            frames.extend(dec.push(p).unwrap());
        }
        assert_eq!(dec.finish(), None, "fixture must end on a frame boundary");
        frames
    }

    fn translate(frames: &[SseFrame]) -> Outcome {
        let mut st = StreamState::new(ID.to_owned(), CREATED, MODEL.to_owned());
        let mut chunks = Vec::new();
        let mut error = None;
        for f in frames {
            match st.on_frame(f) {
                Ok(c) => chunks.extend(c),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        Outcome {
            chunks,
            error,
            finished: st.finished(),
            usage: st.usage(),
        }
    }

    #[test]
    fn golden_streams() {
        for ((name, sse), expected) in STREAMS {
            let outcome = translate(&decode([sse.as_bytes()]));
            assert_stream_invariants(name, &outcome);
            golden(*expected, &outcome.to_json());
        }
    }

    /// The same chunks whatever the network split: every two-piece split, one
    /// byte at a time, and with CRLF line endings.
    #[test]
    fn streams_are_identical_under_every_split() {
        for ((name, sse), _) in STREAMS {
            let bytes = sse.as_bytes();
            let reference = translate(&decode([bytes]));
            for k in 0..=bytes.len() {
                let (a, b) = bytes.split_at(k);
                assert_eq!(translate(&decode([a, b])), reference, "{name} split at {k}");
            }
            assert_eq!(
                translate(&decode(bytes.chunks(1))),
                reference,
                "{name} byte by byte"
            );
            let crlf = sse.replace('\n', "\r\n");
            assert_eq!(
                translate(&decode([crlf.as_bytes()])),
                reference,
                "{name} with CRLF"
            );
        }
    }

    /// Shape rules every translated stream follows.
    fn assert_stream_invariants(name: &str, o: &Outcome) {
        let first = &o.chunks[0].choices[0].delta;
        assert_eq!(
            (first.role.as_deref(), first.content.as_deref()),
            (Some("assistant"), Some("")),
            "{name}"
        );
        let finishes = o
            .chunks
            .iter()
            .filter(|c| {
                c.choices
                    .first()
                    .is_some_and(|ch| ch.finish_reason.is_some())
            })
            .count();
        assert_eq!(
            finishes,
            usize::from(o.finished),
            "{name}: one finish chunk"
        );
        for (i, c) in o.chunks.iter().enumerate() {
            if c.choices.is_empty() {
                assert_eq!(i, o.chunks.len() - 1, "{name}: usage chunk is last");
                assert!(matches!(c.usage, Some(Some(_))), "{name}");
            } else {
                assert_eq!(c.usage, Some(None), "{name}: chunk {i} has usage: null");
            }
            assert_eq!(
                (
                    c.id.as_str(),
                    c.created,
                    c.object.as_str(),
                    c.model.as_str()
                ),
                (ID, CREATED, "chat.completion.chunk", MODEL)
            );
        }
        let (_, _, tools) = accumulate(&o.chunks);
        for (id, fname, args) in &tools {
            assert!(!id.is_empty() && !fname.is_empty(), "{name}");
            assert!(
                serde_json::from_str::<Value>(args).is_ok_and(|v| v.is_object()),
                "{name}: {fname} arguments {args:?} are a JSON object"
            );
        }
    }

    /// (content, reasoning, [(id, name, arguments)]) of a chunk list; checks
    /// that tool indexes are contiguous and id/name come on the first fragment.
    fn accumulate(chunks: &[ChatChunk]) -> (String, String, Vec<(String, String, String)>) {
        let (mut content, mut reasoning) = (String::new(), String::new());
        let mut tools: Vec<(String, String, String)> = Vec::new();
        for ch in chunks.iter().filter_map(|c| c.choices.first()) {
            content.push_str(ch.delta.content.as_deref().unwrap_or(""));
            reasoning.push_str(ch.delta.reasoning_content.as_deref().unwrap_or(""));
            for t in ch.delta.tool_calls.iter().flatten() {
                let i = t.index as usize;
                if i == tools.len() {
                    assert_eq!(t.kind.as_deref(), Some("function"));
                    tools.push((
                        t.id.clone().unwrap(),
                        t.function.name.clone().unwrap(),
                        String::new(),
                    ));
                } else {
                    assert!(t.id.is_none() && t.function.name.is_none());
                }
                tools[i]
                    .2
                    .push_str(t.function.arguments.as_deref().unwrap_or(""));
            }
        }
        (content, reasoning, tools)
    }

    #[test]
    fn streams_reassemble_like_the_non_streamed_answers() {
        let o = translate(&decode([fixture!("stream.tool_calls.sse").1.as_bytes()]));
        let (content, reasoning, tools) = accumulate(&o.chunks);
        assert_eq!(content, "");
        assert!(reasoning.starts_with("I will use the weather tool"));
        assert_eq!(
            tools,
            vec![
                (
                    "weather_e8p4pn45zt0t".to_owned(),
                    "weather".to_owned(),
                    "{\"location\": \"San Francisco\"}".to_owned()
                ),
                (
                    "cityAttractions_pyxssbwnq9fq".to_owned(),
                    "cityAttractions".to_owned(),
                    "{\"city\": \"San Francisco\"}".to_owned()
                ),
            ]
        );
        let o = translate(&decode([fixture!("stream.empty_args.sse").1.as_bytes()]));
        let (_, _, tools) = accumulate(&o.chunks);
        assert_eq!(tools[0].2, "{}");
        let o = translate(&decode([fixture!("stream.thinking.sse").1.as_bytes()]));
        let (content, reasoning, _) = accumulate(&o.chunks);
        assert_eq!(content, "The answer to 2 + 2 is 4.");
        assert!(reasoning.starts_with("The user is asking for the sum of 2 and 2."));
        let o = translate(&decode([fixture!("stream.citations.sse").1.as_bytes()]));
        assert_eq!(
            accumulate(&o.chunks).0,
            "The key benefits are automation of tasks."
        );
    }

    fn frame(event: Option<&str>, data: &str) -> SseFrame {
        SseFrame {
            raw: Vec::new(),
            event: event.map(str::to_owned),
            data: Some(data.to_owned()),
            id: None,
            retry: None,
        }
    }

    #[test]
    fn stream_robustness() {
        let mut st = StreamState::new(ID.into(), CREATED, MODEL.into());
        // Keep-alives, unknown events and debug events produce nothing.
        let comment = SseFrame {
            data: None,
            ..frame(None, "")
        };
        assert!(st.on_frame(&comment).unwrap().is_empty());
        assert!(st
            .on_frame(&frame(None, r#"{"type":"brand-new-event","x":1}"#))
            .unwrap()
            .is_empty());
        assert!(st
            .on_frame(&frame(Some("debug"), r#"{"type":"debug","prompt":"…"}"#))
            .unwrap()
            .is_empty());
        // Content before message-start still opens with the role chunk; the
        // SSE event name stands in for a missing `type`.
        let out = st
            .on_frame(&frame(
                Some("content-delta"),
                r#"{"index":0,"delta":{"message":{"content":{"text":"hi"}}}}"#,
            ))
            .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].choices[0].delta.role.as_deref(), Some("assistant"));
        assert_eq!(out[1].choices[0].delta.content.as_deref(), Some("hi"));
        // Deltas for a tool call never started are dropped; a call sent as a
        // one-element array still works; its end without arguments gives "{}".
        assert!(st
            .on_frame(&frame(None, r#"{"type":"tool-call-delta","index":7,"delta":{"message":{"tool_calls":{"function":{"arguments":"{}"}}}}}"#))
            .unwrap()
            .is_empty());
        let out = st
            .on_frame(&frame(None, r#"{"type":"tool-call-start","index":3,"delta":{"message":{"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":""}}]}}}"#))
            .unwrap();
        assert_eq!(
            out[0].choices[0].delta.tool_calls.as_ref().unwrap()[0].index,
            0
        );
        // message-end without usage or finish_reason: "tool_calls" (a call was
        // made), the pending call closed with "{}", no usage chunk.
        let out = st
            .on_frame(&frame(None, r#"{"type":"message-end","delta":{}}"#))
            .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].choices[0].delta.tool_calls.as_ref().unwrap()[0]
                .function
                .arguments
                .as_deref(),
            Some("{}")
        );
        assert_eq!(
            out[1].choices[0].finish_reason.as_deref(),
            Some("tool_calls")
        );
        assert!(st.finished() && st.usage().is_none());
        // Anything after the end, [DONE] included, is ignored.
        for data in ["[DONE]", r#"{"type":"content-delta"}"#, "junk"] {
            assert!(
                st.on_frame(&frame(None, data)).unwrap().is_empty(),
                "{data}"
            );
        }
    }

    #[test]
    fn null_arguments_become_an_empty_object() {
        let start = |args: &str| {
            json!({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls":
                {"id": "t", "type": "function", "function": {"name": "now", "arguments": args}}}}})
            .to_string()
        };
        let delta = |args: &str| {
            json!({"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls":
                {"function": {"arguments": args}}}}})
            .to_string()
        };
        let end = r#"{"type":"tool-call-end","index":0}"#.to_owned();
        let finish = r#"{"type":"message-end","delta":{"finish_reason":"TOOL_CALL"}}"#.to_owned();
        for events in [
            vec![start("null"), end.clone(), finish.clone()],
            vec![start(""), delta("null"), end.clone(), finish.clone()],
            vec![start(""), delta(" null "), finish.clone()],
        ] {
            let frames: Vec<SseFrame> = events.iter().map(|e| frame(None, e)).collect();
            let o = translate(&frames);
            assert_eq!(accumulate(&o.chunks).2[0].2, "{}", "{events:?}");
        }
        // `null` inside real arguments is kept.
        let frames: Vec<SseFrame> = [start(""), delta("{\"a\":"), delta("null"), delta("}"), end]
            .iter()
            .map(|e| frame(None, e))
            .collect();
        assert_eq!(
            accumulate(&translate(&frames).chunks).2[0].2,
            "{\"a\":null}"
        );
    }

    #[test]
    fn stream_error_objects() {
        for bad in ["not json", "[1]", "5", r#"{"index":0}"#] {
            let mut st = StreamState::new(ID.into(), CREATED, MODEL.into()).with_provider("co-eu");
            let e = st.on_frame(&frame(None, bad)).unwrap_err();
            assert_eq!(
                (e.status(), e.code()),
                (502, "upstream_invalid_response"),
                "{bad}"
            );
            assert!(e.message().contains("co-eu"));
        }
        let mut st = StreamState::new(ID.into(), CREATED, MODEL.into()).with_provider("co-eu");
        let e = st
            .on_frame(&frame(
                None,
                r#"{"id":"x","message":"internal server error for key sk-CANARYCANARY0123"}"#,
            ))
            .unwrap_err();
        assert_eq!((e.status(), e.code()), (502, "upstream_error"));
        assert!(e
            .message()
            .contains("'co-eu' reported an error: internal server error"));
        assert!(!e.message().contains("CANARY"));
    }

    // -------------------------------------------------------------- errors

    #[test]
    fn golden_errors() {
        for (status, retry_after, (name, body), expected) in ERRORS {
            let e = map_error("cohere", *status, body.as_bytes(), *retry_after);
            assert!(e.message().contains("'cohere'"), "{name}");
            golden(*expected, &err_json(&e));
        }
    }

    #[test]
    fn error_messages_are_scrubbed_and_bounded() {
        let e = map_error(
            "cohere",
            400,
            fixture!("error.400_key_echo.json").1.as_bytes(),
            None,
        );
        let text = e.to_body().to_string();
        assert!(!text.contains("CANARY"), "{text}");
        assert!(text.contains("tool names can only contain"));
        let long = json!({"message": "x".repeat(5000)});
        let e = map_error("cohere", 400, long.to_string().as_bytes(), None);
        assert!(e.message().len() < 700);
        // Auth failures never relay the provider's text.
        let e = map_error(
            "cohere",
            401,
            br#"{"message":"invalid api token sk-abcdefgh12345"}"#,
            None,
        );
        assert!(!e.message().contains("api token"));
    }

    #[test]
    fn error_status_edges() {
        let cases = [
            (301, 502, "upstream_redirect"),
            (403, 502, "upstream_auth_failed"),
            (405, 400, "upstream_invalid_request"),
            (408, 504, "upstream_error"),
            (409, 400, "upstream_invalid_request"),
            (413, 413, "upstream_invalid_request"),
            (498, 400, "content_policy_violation"),
            (501, 502, "upstream_error"),
            (502, 502, "upstream_error"),
            (504, 504, "upstream_error"),
        ];
        for (status, want, code) in cases {
            let e = map_error("cohere", status, b"<html>gateway</html>", None);
            assert_eq!((e.status(), e.code()), (want, code), "{status}");
        }
        // A non-JSON 400 still maps, naming the status.
        let e = map_error("cohere", 400, b"Bad Request", None);
        assert_eq!((e.status(), e.code()), (400, "upstream_invalid_request"));
        assert!(e.message().contains("HTTP 400"));
        // 498 relays Cohere's reason.
        let e = map_error("cohere", 498, br#"{"message":"blocked output"}"#, None);
        assert!(e.message().contains("blocked output"));
        // Only delta-seconds retry-after values are passed on.
        let e = map_error("cohere", 429, b"{}", Some("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(e.retry_after(), None);
        let e = map_error("cohere", 429, b"{}", Some(" 12 "));
        assert_eq!(e.retry_after(), Some("12"));
        // "too many tokens" about max_tokens is not a context overflow.
        assert!(is_context_length(
            "too many tokens: multi-hop prompt is too long even after truncation"
        ));
        assert!(!is_context_length(
            "too many tokens: max tokens must be less than or equal to 4096"
        ));
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 429, 499, 500, 502, 503, 504] {
            assert!(is_retryable(s), "{s}");
        }
        for s in [200, 301, 400, 401, 402, 403, 404, 413, 422, 498, 501] {
            assert!(!is_retryable(s), "{s}");
        }
    }

    // ---------------------------------------------------------- embeddings

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn embeddings_request() {
        let ((_, input), expected) = EMBED_REQUEST;
        let w = embeddings_to_wire(&obj(json_of(input)), "embed-v4.0").unwrap();
        golden_request(expected, &w);
        let w = embeddings_to_wire(
            &obj(json!({"model": "e", "input": "q", "input_type": "search_query"})),
            "embed-english-v3.0",
        )
        .unwrap();
        assert_eq!(
            w,
            json!({"model": "embed-english-v3.0", "texts": ["q"], "input_type": "search_query", "embedding_types": ["float"]})
        );
        for bad in [
            json!({"input": [[1, 2, 3]]}),
            json!({"input": 5}),
            json!({}),
            json!({"input": []}),
            json!({"input": "x", "dimensions": 0}),
            json!({"input": "x", "input_type": "image"}),
            json!({"input": "x", "input_type": 1}),
        ] {
            let e = embeddings_to_wire(&obj(bad.clone()), "m").unwrap_err();
            assert_eq!(e.status(), 400, "{bad}");
        }
        let many: Vec<String> = (0..97).map(|i| i.to_string()).collect();
        let e = embeddings_to_wire(&obj(json!({"input": many})), "m").unwrap_err();
        assert!(e.message().contains("at most 96"));
    }

    fn golden_request(expected: Fixture, actual: &Value) {
        let (name, text) = expected;
        assert_eq!(
            json_of(text),
            *actual,
            "{name}; actual:\n{}",
            serde_json::to_string_pretty(actual).unwrap()
        );
    }

    #[test]
    fn embeddings_response_float_and_base64() {
        let ((_, body), expected) = EMBED_RESPONSE;
        let got = embeddings_from_wire(body.as_bytes(), "embed-v4.0", false).unwrap();
        golden(expected, &got);
        assert_eq!(got["data"][0]["embedding"][0], json!(0.03302002));
        let b64 = embeddings_from_wire(body.as_bytes(), "embed-v4.0", true).unwrap();
        for (g, f) in b64["data"]
            .as_array()
            .unwrap()
            .iter()
            .zip(got["data"].as_array().unwrap())
        {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(g["embedding"].as_str().unwrap())
                .unwrap();
            let decoded: Vec<f32> = bytes
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let floats: Vec<f32> = serde_json::from_value(f["embedding"].clone()).unwrap();
            assert_eq!(decoded, floats);
        }
        assert_eq!(b64["usage"], got["usage"]);
    }

    #[test]
    fn embeddings_response_edges() {
        // The v1 `embeddings_floats` shape, and no usage when none is billed.
        let v = embeddings_from_wire(br#"{"embeddings": [[0.5, 0.25]]}"#, "m", false).unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([0.5, 0.25]));
        assert!(v.get("usage").is_none());
        for bad in [
            &b"{}"[..],
            br#"{"embeddings": {"int8": [[1]]}}"#,
            br#"{"embeddings": {"float": []}}"#,
            br#"{"embeddings": {"float": [["x"]]}}"#,
            br#"{"embeddings": {"float": [1]}}"#,
            b"nope",
        ] {
            let e = embeddings_from_wire(bad, "m", false).unwrap_err();
            assert_eq!(
                e.code(),
                "upstream_invalid_response",
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let e = embeddings_from_wire(br#"{"message": "bad"}"#, "m", false).unwrap_err();
        assert_eq!(e.code(), "upstream_error");
    }
}
