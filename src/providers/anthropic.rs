//! OpenAI chat/completions ⇄ Anthropic Messages API (`POST /v1/messages`).
//!
//! Pure translation: [`to_wire`] builds the Anthropic request body from the
//! typed OpenAI request, [`from_wire`] turns a non-streamed Anthropic message
//! into a `chat.completion`, [`StreamState`] folds Anthropic stream events into
//! `chat.completion.chunk`s, and [`map_error`] turns an Anthropic error status
//! and body into the OpenAI-shaped [`GatewayError`]. No I/O and no `worker`
//! types, so all of it runs under native `cargo test`.
//!
//! Wire references: the Messages API (<https://docs.claude.com/en/api/messages>),
//! streaming (<https://docs.claude.com/en/docs/build-with-claude/streaming>),
//! errors (<https://docs.claude.com/en/api/errors>) and the versions page
//! (<https://docs.claude.com/en/api/versioning>). Requests are sent with
//! `anthropic-version: 2023-06-01` ([`API_VERSION`]); version `2026-10-21`
//! removes `temperature`/`top_p`/`top_k`, so moving to it means revisiting the
//! sampling mapping below.
//!
//! # Requests
//!
//! * `system` and `developer` messages, wherever they appear, become the
//!   top-level `system` (a string for one text, text blocks for several).
//!   `user` / `assistant` turns keep their order; consecutive turns of the same
//!   role are merged into one, and each `tool` message becomes a `tool_result`
//!   block in a `user` turn (so a run of tool messages plus a following user
//!   message is one turn, tool results first, as Anthropic requires). Assistant
//!   `tool_calls` become `tool_use` blocks whose `input` is the parsed
//!   `arguments` (an empty string counts as `{}`; anything that is not a JSON
//!   object is a 400 naming `messages[i].tool_calls[j].function.arguments`).
//!   Empty text is dropped (Anthropic rejects empty text blocks) and a turn left
//!   empty is dropped. Message `name`s have no Anthropic equivalent and are
//!   ignored.
//! * Images: `data:<mime>;base64,…` URLs become `base64` sources (JPEG, PNG,
//!   GIF and WebP only, as Anthropic accepts), `http(s)` URLs become `url`
//!   sources; `detail` is ignored. Audio, file and other content parts are a
//!   400: Anthropic does not take them through this gateway.
//! * `max_completion_tokens` (else `max_tokens`) → `max_tokens`, which
//!   Anthropic requires. Without either the gateway sends
//!   [`DEFAULT_MAX_TOKENS`] = 4096: the largest output every current and
//!   legacy Claude model accepts (Claude 3 Haiku's limit), and plenty for a
//!   chat answer. With reasoning on, the thinking budget is added to it (see
//!   below).
//! * `temperature` must be within Anthropic's 0–1 (a 400 otherwise; it is never
//!   clamped, which would silently change sampling). `top_p` is passed on, and
//!   so is the non-OpenAI `top_k` extension when it is a non-negative integer.
//!   `stop` → `stop_sequences`, `user` (else `safety_identifier`) →
//!   `metadata.user_id`.
//! * Rejected with `400 unsupported_parameter` naming the field, because
//!   Anthropic cannot honour them and ignoring them would change the answer's
//!   meaning: `n` > 1, non-zero `presence_penalty` / `frequency_penalty`, a
//!   non-empty `logit_bias`, `logprobs: true` / `top_logprobs` > 0, `audio`,
//!   `modalities` containing `"audio"`, `prediction`, `web_search_options`.
//!   Their default values (`n: 1`, penalties `0`, `logprobs: false`), which
//!   many SDKs always send, are accepted. Ignored: `seed` (best effort even at
//!   OpenAI, which does not promise determinism), `store`, `service_tier`,
//!   `metadata`, `prompt_cache_key`, `parallel_tool_calls: true` and other
//!   unknown fields.
//! * Tools → `{name, description, input_schema}` (`parameters`, or an empty
//!   object schema); `strict` is ignored. `tool_choice`: `auto` → `auto`,
//!   `required` → `any`, a named function → `tool`, `none` → `none`;
//!   `parallel_tool_calls: false` sets `disable_parallel_tool_use` on it
//!   (an `auto` choice is added when the client gave none). Without tools no
//!   `tool_choice` is sent.
//!
//! # JSON mode
//!
//! `response_format` `json_object` / `json_schema` is implemented with a forced
//! tool named [`JSON_TOOL_NAME`] whose `input_schema` is the client's schema
//! (an open object schema for `json_object`): Claude must call it, and its
//! `input` — a JSON object by construction — becomes the message `content`
//! with `finish_reason: "stop"` (streamed as content deltas). The tool is
//! forced by name when the client has no tools (or `tool_choice: "none"`);
//! with client tools and `auto`, the choice becomes `any`, so Claude either
//! calls one of the client's tools (an ordinary `tool_calls` answer) or answers
//! through the JSON tool. A client `tool_choice` of `required` or a named tool
//! conflicts with JSON mode and is a 400, as is JSON mode with
//! `reasoning_effort` (Anthropic rejects thinking together with forced tool
//! use). Clients may not define a tool with the reserved name. Prose Claude
//! writes next to the JSON tool call is dropped so that `content` always
//! parses. Anthropic's native structured outputs (`output_config.format`)
//! would avoid the tool, but only some models accept it; the forced tool works
//! on every Claude model with tool use.
//!
//! # Reasoning
//!
//! `reasoning_effort` enables thinking in the form the target model accepts
//! (decided from `upstream_model`: Claude 4.6 and later — including the
//! Claude 5 family and the unversioned `mythos` models — accept only, or
//! prefer, adaptive thinking and reject a manual budget with a 400; older
//! models know only the manual budget):
//!
//! | `reasoning_effort` | budget form (≤ 4.5): `thinking.budget_tokens` | adaptive form (≥ 4.6): `output_config.effort` |
//! |---|---|---|
//! | `none` | no thinking sent | no thinking sent |
//! | `minimal` | 1024 (Anthropic's minimum) | `low` |
//! | `low` | 2048 | `low` |
//! | `medium` | 8192 | `medium` |
//! | `high` | 16384 | `high` |
//! | `xhigh` | 24576 | `xhigh` |
//!
//! Thinking tokens count towards `max_tokens`, so without a client limit the
//! gateway sends `DEFAULT_MAX_TOKENS + budget` (so the visible answer keeps its
//! 4096); a client limit is kept as the total, as OpenAI's
//! `max_completion_tokens` also counts reasoning tokens, and with the budget
//! form it must exceed the budget (a 400 otherwise, naming both). Thinking
//! blocks come back as `reasoning_content` (message field, or delta field when
//! streaming); `redacted_thinking` blocks and signatures are dropped.
//!
//! # Responses
//!
//! Text blocks are concatenated into `content` (`null` when the answer is
//! only tool calls), `tool_use` blocks become `tool_calls` with `arguments` the
//! compact JSON of `input`, other blocks (server tools, their results) are
//! skipped. `stop_reason`: `end_turn` / `stop_sequence` / `pause_turn` →
//! `stop`, `max_tokens` / `model_context_window_exceeded` → `length`,
//! `tool_use` → `tool_calls`, `refusal` → `content_filter`. Usage:
//! `prompt_tokens` = `input_tokens + cache_read_input_tokens +
//! cache_creation_input_tokens` (Anthropic's `input_tokens` excludes both),
//! `completion_tokens` = `output_tokens`, `prompt_tokens_details.cached_tokens`
//! = `cache_read_input_tokens`, and `completion_tokens_details.reasoning_tokens`
//! = `output_tokens_details.thinking_tokens` when Anthropic reports it. The
//! chunk and completion `model` is the one Anthropic reports.
//!
//! # Streams
//!
//! See [`StreamState::on_frame`]. OpenAI tool-call indexes count `tool_use`
//! blocks (0, 1, …), never Anthropic's block index, which also counts text,
//! thinking and server-tool blocks; argument fragments are routed by the block
//! they belong to, so interleaved or parallel tool calls stay separate and
//! server-tool input never leaks into a client tool call.
//!
//! Errors produced here that have no configured provider name at hand
//! (unreadable bodies in [`from_wire`]) name the provider `anthropic`;
//! [`StreamState::with_provider`] sets the name for stream errors.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::GatewayError;
use crate::openai::{
    AssistantMessage, ChatChunk, ChatCompletion, ChatRequest, Choice, ChunkChoice,
    CompletionTokensDetails, Content, ContentPart, Delta, FunctionCall, FunctionCallDelta,
    ImageUrl, Message, PromptTokensDetails, ToolCall, ToolCallDelta, ToolChoice, UsageBody,
};
use crate::secret::scrub_key_like;
use crate::sse::SseFrame;

/// Sent as the `anthropic-version` header.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` when the client gives none (Anthropic requires it): the output
/// limit of the smallest Claude model still served, so valid for every model.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The tool that carries JSON-mode answers (see the module docs). Reserved:
/// client tools may not use this name.
pub const JSON_TOOL_NAME: &str = "tollgate_json_response";

/// Provider label for errors raised where no configured name is known.
const PROVIDER: &str = "anthropic";

/// Longest provider message passed on to a client.
const MAX_MESSAGE_CHARS: usize = 500;

/// Image types Anthropic accepts as base64 sources.
const IMAGE_MEDIA_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// URL for the Messages API under the provider's base URL (base like
/// `https://api.anthropic.com/v1`).
pub fn endpoint(base_url: &str) -> String {
    format!("{}/messages", base_url.trim_end_matches('/'))
}

// ------------------------------------------------------------ request wire types

#[derive(Debug, Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<WireSystem<'a>>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<WireMetadata<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<WireThinking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<WireOutputConfig>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum WireSystem<'a> {
    Text(&'a str),
    Blocks(Vec<WireBlock<'a>>),
}

#[derive(Debug, Serialize)]
struct WireMessage<'a> {
    role: Role,
    content: WireContent<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Role {
    User,
    Assistant,
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
    Text {
        text: &'a str,
    },
    Image {
        source: ImageSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<WireContent<'a>>,
    },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Debug, Serialize)]
struct WireMetadata<'a> {
    user_id: &'a str,
}

#[derive(Debug, Serialize)]
struct WireTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    input_schema: Value,
}

#[derive(Debug, Serialize)]
struct WireToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireThinking {
    Enabled { budget_tokens: u64 },
    Adaptive,
}

#[derive(Debug, Serialize)]
struct WireOutputConfig {
    effort: &'static str,
}

// ------------------------------------------------------------------ to_wire

/// Request body for Anthropic. `upstream_model` is the provider's model id.
pub fn to_wire(
    req: &ChatRequest,
    upstream_model: &str,
    stream: bool,
) -> Result<Value, GatewayError> {
    reject_unsupported(req)?;

    let reasoning = match req.reasoning_effort.as_deref() {
        Some(effort) => Reasoning::parse(effort, upstream_model)?,
        None => None,
    };
    let max_tokens = max_tokens(req, reasoning.as_ref())?;

    if let Some(t) = req.temperature {
        if !(0.0..=1.0).contains(&t) {
            return Err(GatewayError::invalid_param(
                "temperature",
                format!("Anthropic accepts a temperature between 0 and 1; got {t}."),
            ));
        }
    }
    let top_k = match req.extra.get("top_k") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            GatewayError::invalid_param("top_k", "'top_k' must be a non-negative integer.")
        })?),
    };

    let (system, messages) = convert_messages(&req.messages)?;
    let (tools, tool_choice) = convert_tools(req, reasoning.is_some())?;

    let user_id = req
        .user
        .as_deref()
        .or_else(|| req.extra.get("safety_identifier").and_then(Value::as_str));

    let (thinking, output_config) = match reasoning {
        Some(Reasoning::Budget(budget_tokens)) => {
            (Some(WireThinking::Enabled { budget_tokens }), None)
        }
        Some(Reasoning::Adaptive { effort, .. }) => (
            Some(WireThinking::Adaptive),
            Some(WireOutputConfig { effort }),
        ),
        None => (None, None),
    };

    let wire = WireRequest {
        model: upstream_model,
        max_tokens,
        system,
        messages,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k,
        stop_sequences: req
            .stop
            .as_ref()
            .map(|s| s.to_vec())
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect(),
        stream,
        metadata: user_id.map(|user_id| WireMetadata { user_id }),
        tools,
        tool_choice,
        thinking,
        output_config,
    };
    serde_json::to_value(&wire).map_err(|_| GatewayError::Internal)
}

/// A 400 for an OpenAI parameter Anthropic cannot honour.
fn unsupported(param: &str, why: &str) -> GatewayError {
    GatewayError::InvalidRequest {
        message: format!("'{param}' is not supported for Anthropic models on this gateway: {why}"),
        param: Some(param.to_owned()),
        code: "unsupported_parameter",
    }
}

fn reject_unsupported(req: &ChatRequest) -> Result<(), GatewayError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(unsupported(
            "n",
            "Anthropic returns one choice per request.",
        ));
    }
    let nonzero = |v: Option<f64>| v.is_some_and(|v| v != 0.0);
    if nonzero(req.presence_penalty) {
        return Err(unsupported(
            "presence_penalty",
            "Anthropic has no presence penalty.",
        ));
    }
    if nonzero(req.frequency_penalty) {
        return Err(unsupported(
            "frequency_penalty",
            "Anthropic has no frequency penalty.",
        ));
    }
    if req.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(unsupported("logit_bias", "Anthropic has no logit bias."));
    }
    if req.logprobs == Some(true) {
        return Err(unsupported(
            "logprobs",
            "Anthropic does not return logprobs.",
        ));
    }
    if req.top_logprobs.is_some_and(|n| n > 0) {
        return Err(unsupported(
            "top_logprobs",
            "Anthropic does not return logprobs.",
        ));
    }
    for key in ["audio", "prediction", "web_search_options"] {
        if req.extra.get(key).is_some_and(|v| !v.is_null()) {
            return Err(unsupported(
                key,
                "this OpenAI feature has no Anthropic equivalent.",
            ));
        }
    }
    let wants_audio = req
        .extra
        .get("modalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|v| v.as_str() == Some("audio")));
    if wants_audio {
        return Err(unsupported(
            "modalities",
            "Anthropic does not produce audio.",
        ));
    }
    Ok(())
}

/// How `reasoning_effort` is sent, per the module docs' table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reasoning {
    /// `thinking: {type: "enabled", budget_tokens}` (Claude 4.5 and older).
    Budget(u64),
    /// `thinking: {type: "adaptive"}` + `output_config.effort` (Claude 4.6+).
    /// `budget` only sizes the default `max_tokens`.
    Adaptive { effort: &'static str, budget: u64 },
}

impl Reasoning {
    /// `None` for `reasoning_effort: "none"`.
    fn parse(value: &str, model: &str) -> Result<Option<Self>, GatewayError> {
        let (budget, effort) = match value {
            "none" => return Ok(None),
            "minimal" => (1024, "low"),
            "low" => (2048, "low"),
            "medium" => (8192, "medium"),
            "high" => (16384, "high"),
            "xhigh" => (24576, "xhigh"),
            other => {
                return Err(GatewayError::invalid_param(
                    "reasoning_effort",
                    format!(
                        "Unsupported reasoning_effort '{other}'; use none, minimal, low, medium, high or xhigh."
                    ),
                ))
            }
        };
        Ok(Some(if uses_adaptive_thinking(model) {
            Self::Adaptive { effort, budget }
        } else {
            Self::Budget(budget)
        }))
    }

    fn budget(self) -> u64 {
        match self {
            Self::Budget(b) | Self::Adaptive { budget: b, .. } => b,
        }
    }
}

/// Whether `model` takes adaptive thinking (`claude-sonnet-4-6`, `claude-opus-4-7`,
/// `claude-sonnet-5`, `claude-fable-5-1`, `claude-mythos-preview`) rather than
/// a manual budget (`claude-sonnet-4-5-20250929`, `claude-3-7-sonnet-20250219`).
/// The version is the first one- or two-digit number in the id and the one
/// right after it, if any (an eight-digit date is not a version). A name with
/// no version keeps the budget form, except Mythos, which only ever shipped
/// with adaptive thinking.
/// <https://docs.aws.amazon.com/bedrock/latest/userguide/claude-messages-adaptive-thinking.html>
fn uses_adaptive_thinking(model: &str) -> bool {
    let model = model.to_ascii_lowercase();
    let mut numbers = model.split(['-', '.', '@', '/', ':']).map(|part| {
        if part.len() <= 2 {
            part.parse::<u32>().ok()
        } else {
            None
        }
    });
    let major = numbers.by_ref().flatten().next();
    let Some(major) = major else {
        return model.contains("mythos");
    };
    // The minor version must directly follow the major one.
    let minor = numbers.next().flatten().unwrap_or(0);
    (major, minor) >= (4, 6)
}

fn max_tokens(req: &ChatRequest, reasoning: Option<&Reasoning>) -> Result<u64, GatewayError> {
    let Some(limit) = req.max_output_tokens() else {
        return Ok(DEFAULT_MAX_TOKENS + reasoning.map_or(0, |r| r.budget()));
    };
    if let Some(Reasoning::Budget(budget)) = reasoning {
        if limit <= *budget {
            let param = if req.max_completion_tokens.is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(GatewayError::invalid_param(
                param,
                format!(
                    "'{param}' ({limit}) must be greater than the thinking budget ({budget} tokens) \
                     that this reasoning_effort uses on Anthropic; raise it or lower reasoning_effort."
                ),
            ));
        }
    }
    Ok(limit)
}

/// A turn being built; consecutive turns of one role are merged.
struct Turn<'a> {
    role: Role,
    blocks: Vec<WireBlock<'a>>,
}

fn push_turn<'a>(turns: &mut Vec<Turn<'a>>, role: Role, blocks: Vec<WireBlock<'a>>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => last.blocks.extend(blocks),
        _ => turns.push(Turn { role, blocks }),
    }
}

type Converted<'a> = (Option<WireSystem<'a>>, Vec<WireMessage<'a>>);

fn convert_messages(messages: &[Message]) -> Result<Converted<'_>, GatewayError> {
    let mut system: Vec<&str> = Vec::new();
    let mut turns: Vec<Turn<'_>> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match m.role.as_str() {
            "system" | "developer" => system.extend(text_only(m, i)?),
            "user" => push_turn(&mut turns, Role::User, user_blocks(m.content.as_ref(), i)?),
            "assistant" => push_turn(&mut turns, Role::Assistant, assistant_blocks(m, i)?),
            "tool" => {
                let tool_use_id = m.tool_call_id.as_deref().ok_or_else(|| {
                    GatewayError::invalid_param(
                        &format!("messages[{i}].tool_call_id"),
                        format!("messages[{i}] has role 'tool' but no tool_call_id."),
                    )
                })?;
                let content = match &m.content {
                    None => None,
                    Some(Content::Text(t)) if t.is_empty() => None,
                    Some(Content::Text(t)) => Some(WireContent::Text(t)),
                    Some(Content::Parts(_)) => {
                        let blocks = user_blocks(m.content.as_ref(), i)?;
                        single_text(blocks)
                    }
                };
                push_turn(
                    &mut turns,
                    Role::User,
                    vec![WireBlock::ToolResult {
                        tool_use_id,
                        content,
                    }],
                );
            }
            other => {
                return Err(GatewayError::invalid_param(
                    &format!("messages[{i}].role"),
                    format!(
                        "Role '{other}' is not supported for Anthropic models; use system, developer, user, assistant or tool."
                    ),
                ))
            }
        }
    }
    if turns.is_empty() {
        return Err(GatewayError::invalid_param(
            "messages",
            "Anthropic needs at least one user or assistant message with content.",
        ));
    }
    let system = match system.as_slice() {
        [] => None,
        [one] => Some(WireSystem::Text(one)),
        many => Some(WireSystem::Blocks(
            many.iter().map(|text| WireBlock::Text { text }).collect(),
        )),
    };
    let messages = turns
        .into_iter()
        .filter_map(|t| {
            Some(WireMessage {
                role: t.role,
                content: single_text(t.blocks)?,
            })
        })
        .collect();
    Ok((system, messages))
}

/// One text block becomes a plain string; `None` for no blocks.
fn single_text(blocks: Vec<WireBlock<'_>>) -> Option<WireContent<'_>> {
    if blocks.is_empty() {
        return None;
    }
    if let [WireBlock::Text { text }] = blocks.as_slice() {
        return Some(WireContent::Text(text));
    }
    Some(WireContent::Blocks(blocks))
}

/// The non-empty texts of a system/developer message.
fn text_only(m: &Message, i: usize) -> Result<Vec<&str>, GatewayError> {
    match &m.content {
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
            "Content parts of type '{kind}' are not supported here: Anthropic does not accept them \
             through this gateway (text and image_url parts are supported in user messages)."
        ),
    )
}

fn user_blocks(content: Option<&Content>, i: usize) -> Result<Vec<WireBlock<'_>>, GatewayError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(t)) if t.is_empty() => Ok(Vec::new()),
        Some(Content::Text(t)) => Ok(vec![WireBlock::Text { text: t }]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .filter_map(|(j, p)| match p {
                ContentPart::Text { text } if text.is_empty() => None,
                ContentPart::Text { text } => Some(Ok(WireBlock::Text { text })),
                ContentPart::ImageUrl { image_url } => Some(image_block(image_url, i, j)),
                other => Some(Err(unsupported_part(other, i, j))),
            })
            .collect(),
    }
}

fn image_block(image: &ImageUrl, i: usize, j: usize) -> Result<WireBlock<'_>, GatewayError> {
    let param = || format!("messages[{i}].content[{j}].image_url.url");
    if image.url.starts_with("data:") {
        let Some((media_type, data)) = image.as_data() else {
            return Err(GatewayError::invalid_param(
                &param(),
                "Image data URLs must be base64: data:<mime>;base64,<data>.",
            ));
        };
        if !IMAGE_MEDIA_TYPES.contains(&media_type) {
            return Err(GatewayError::invalid_param(
                &param(),
                format!(
                    "Anthropic accepts image/jpeg, image/png, image/gif and image/webp images; got '{media_type}'."
                ),
            ));
        }
        return Ok(WireBlock::Image {
            source: ImageSource::Base64 { media_type, data },
        });
    }
    let lower = image
        .url
        .get(..8)
        .unwrap_or(&image.url)
        .to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        return Ok(WireBlock::Image {
            source: ImageSource::Url { url: &image.url },
        });
    }
    Err(GatewayError::invalid_param(
        &param(),
        "Image URLs must be http(s) URLs or base64 data URLs.",
    ))
}

fn assistant_blocks(m: &Message, i: usize) -> Result<Vec<WireBlock<'_>>, GatewayError> {
    let mut blocks = Vec::new();
    match &m.content {
        Some(Content::Text(t)) if !t.is_empty() => blocks.push(WireBlock::Text { text: t }),
        None | Some(Content::Text(_)) => {}
        Some(Content::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let text = match p {
                    ContentPart::Text { text } => Some(text.as_str()),
                    // OpenAI's assistant `refusal` part.
                    ContentPart::Other(v)
                        if v.get("type").and_then(Value::as_str) == Some("refusal") =>
                    {
                        v.get("refusal").and_then(Value::as_str)
                    }
                    other => return Err(unsupported_part(other, i, j)),
                };
                if let Some(text) = text.filter(|t| !t.is_empty()) {
                    blocks.push(WireBlock::Text { text });
                }
            }
        }
    }
    if blocks.is_empty() {
        if let Some(refusal) = m.refusal.as_deref().filter(|r| !r.is_empty()) {
            blocks.push(WireBlock::Text { text: refusal });
        }
    }
    for (j, call) in m.tool_calls.iter().flatten().enumerate() {
        let param = format!("messages[{i}].tool_calls[{j}].function.arguments");
        blocks.push(WireBlock::ToolUse {
            id: &call.id,
            name: &call.function.name,
            input: parse_arguments(&call.function.arguments, &param)?,
        });
    }
    Ok(blocks)
}

fn parse_arguments(arguments: &str, param: &str) -> Result<Value, GatewayError> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(GatewayError::invalid_param(
            param,
            format!("'{param}' must be a JSON object (Anthropic tool input is an object)."),
        )),
        Err(e) => Err(GatewayError::invalid_param(
            param,
            format!("'{param}' is not valid JSON: {e}."),
        )),
    }
}

/// The client's `tool_choice`, normalised.
enum ClientChoice<'a> {
    Unset,
    Auto,
    None,
    Required,
    Named(&'a str),
}

fn client_choice(req: &ChatRequest) -> Result<ClientChoice<'_>, GatewayError> {
    Ok(match &req.tool_choice {
        None => ClientChoice::Unset,
        Some(ToolChoice::Mode(m)) => match m.as_str() {
            "auto" => ClientChoice::Auto,
            "none" => ClientChoice::None,
            "required" => ClientChoice::Required,
            other => {
                return Err(GatewayError::invalid_param(
                    "tool_choice",
                    format!("Unsupported tool_choice '{other}'; use none, auto, required or a named function."),
                ))
            }
        },
        Some(ToolChoice::Named(n)) if n.kind == "function" => ClientChoice::Named(&n.function.name),
        Some(ToolChoice::Named(n)) => {
            return Err(GatewayError::invalid_param(
                "tool_choice.type",
                format!("Unsupported tool_choice type '{}'; use 'function'.", n.kind),
            ))
        }
    })
}

fn choice<'a>(
    kind: &'static str,
    name: Option<&'a str>,
    no_parallel: bool,
) -> Option<WireToolChoice<'a>> {
    Some(WireToolChoice {
        kind,
        name,
        disable_parallel_tool_use: (no_parallel && kind != "none").then_some(true),
    })
}

type ConvertedTools<'a> = (Vec<WireTool<'a>>, Option<WireToolChoice<'a>>);

fn convert_tools(req: &ChatRequest, thinking: bool) -> Result<ConvertedTools<'_>, GatewayError> {
    let mut tools = Vec::new();
    for (i, t) in req.tools.iter().flatten().enumerate() {
        if t.kind != "function" {
            return Err(GatewayError::invalid_param(
                &format!("tools[{i}].type"),
                format!(
                    "Tool type '{}' is not supported for Anthropic models; use 'function'.",
                    t.kind
                ),
            ));
        }
        if t.function.name == JSON_TOOL_NAME {
            return Err(GatewayError::invalid_param(
                &format!("tools[{i}].function.name"),
                format!("The tool name '{JSON_TOOL_NAME}' is reserved by the gateway."),
            ));
        }
        tools.push(WireTool {
            name: &t.function.name,
            description: t.function.description.clone(),
            input_schema: t
                .function
                .parameters
                .clone()
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
        });
    }
    let has_client_tools = !tools.is_empty();
    let no_parallel = req.parallel_tool_calls == Some(false);
    let client = client_choice(req)?;

    let Some(json_tool) = json_mode_tool(req)? else {
        if !has_client_tools {
            return Ok((tools, None));
        }
        let wire = match client {
            ClientChoice::Unset if no_parallel => choice("auto", None, true),
            ClientChoice::Unset => None,
            ClientChoice::Auto => choice("auto", None, no_parallel),
            ClientChoice::None => choice("none", None, false),
            ClientChoice::Required => choice("any", None, no_parallel),
            ClientChoice::Named(name) => choice("tool", Some(name), no_parallel),
        };
        return Ok((tools, wire));
    };

    if thinking {
        return Err(GatewayError::invalid_param(
            "response_format",
            "response_format json_object/json_schema cannot be combined with reasoning_effort on \
             Anthropic models: JSON mode uses a forced tool call, which Anthropic does not allow \
             together with thinking.",
        ));
    }
    let wire = match client {
        ClientChoice::Required | ClientChoice::Named(_) => {
            return Err(GatewayError::invalid_param(
                "tool_choice",
                "tool_choice 'required' or a named function cannot be combined with \
                 response_format json_object/json_schema on Anthropic models.",
            ))
        }
        ClientChoice::Unset | ClientChoice::Auto if has_client_tools => {
            choice("any", None, no_parallel)
        }
        _ => choice("tool", Some(JSON_TOOL_NAME), false),
    };
    tools.push(json_tool);
    Ok((tools, wire))
}

/// The forced tool for `response_format` JSON modes, if asked for.
fn json_mode_tool(req: &ChatRequest) -> Result<Option<WireTool<'static>>, GatewayError> {
    let Some(format) = &req.response_format else {
        return Ok(None);
    };
    const PREAMBLE: &str = "Give your final answer by calling this tool; its input is the answer.";
    match format.kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(WireTool {
            name: JSON_TOOL_NAME,
            description: Some(format!("{PREAMBLE} The answer is a JSON object.")),
            input_schema: serde_json::json!({"type": "object"}),
        })),
        "json_schema" => {
            let Some(spec) = &format.json_schema else {
                return Err(GatewayError::invalid_param(
                    "response_format.json_schema",
                    "response_format of type 'json_schema' needs a 'json_schema' object.",
                ));
            };
            let schema = spec
                .schema
                .clone()
                .unwrap_or_else(|| serde_json::json!({"type": "object"}));
            let root_type = schema.get("type").and_then(Value::as_str);
            if !matches!(root_type, None | Some("object")) {
                return Err(GatewayError::invalid_param(
                    "response_format.json_schema.schema",
                    "Anthropic JSON mode needs a schema whose root is an object.",
                ));
            }
            let mut description = format!("{PREAMBLE} It follows the schema '{}'.", spec.name);
            if let Some(d) = spec.description.as_deref().filter(|d| !d.is_empty()) {
                description.push(' ');
                description.push_str(d);
            }
            Ok(Some(WireTool {
                name: JSON_TOOL_NAME,
                description: Some(description),
                input_schema: schema,
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

// ---------------------------------------------------------- response wire types

#[derive(Debug, Deserialize)]
struct WireResponse {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<WireBlockIn>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// A response content block (also `content_block_start`'s block). Blocks the
/// gateway does not translate (`redacted_thinking`, server tools and their
/// results, …) are `Other`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlockIn {
    Text {
        #[serde(default)]
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    output_tokens_details: Option<WireOutputDetails>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct WireOutputDetails {
    thinking_tokens: Option<u64>,
}

/// Usage counters seen so far (stream) or reported (non-stream).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct UsageAcc {
    input: u64,
    output: u64,
    cache_creation: u64,
    cache_read: u64,
    thinking: Option<u64>,
}

impl UsageAcc {
    /// Anthropic's counters are cumulative totals: overwrite what is present.
    fn apply(&mut self, u: &WireUsage) {
        let set = |slot: &mut u64, v: Option<u64>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut self.input, u.input_tokens);
        set(&mut self.output, u.output_tokens);
        set(&mut self.cache_creation, u.cache_creation_input_tokens);
        set(&mut self.cache_read, u.cache_read_input_tokens);
        if let Some(t) = u
            .output_tokens_details
            .as_ref()
            .and_then(|d| d.thinking_tokens)
        {
            self.thinking = Some(t);
        }
    }

    fn body(self) -> UsageBody {
        let prompt = self
            .input
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_creation);
        UsageBody {
            prompt_tokens: prompt,
            completion_tokens: self.output,
            total_tokens: prompt.saturating_add(self.output),
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: self.cache_read,
            }),
            completion_tokens_details: self
                .thinking
                .map(|reasoning_tokens| CompletionTokensDetails { reasoning_tokens }),
        }
    }
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
fn finish_reason(stop_reason: Option<&str>, has_tool_calls: bool) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("refusal") => "content_filter",
        _ if has_tool_calls => "tool_calls",
        // Including `tool_use` for the JSON-mode tool alone: a finished JSON answer.
        _ => "stop",
    }
}

/// Compact JSON of a tool input (`{}` when absent).
fn compact(input: &Value) -> String {
    if input.is_null() {
        return "{}".to_owned();
    }
    serde_json::to_string(input).unwrap_or_else(|_| "{}".to_owned())
}

// ---------------------------------------------------------------- from_wire

/// A non-streamed Anthropic response → OpenAI `chat.completion` (id/created
/// supplied by the gateway; model from the response).
pub fn from_wire(body: &[u8], id: &str, created: u64) -> Result<ChatCompletion, GatewayError> {
    let invalid = || GatewayError::UpstreamInvalidResponse {
        provider: PROVIDER.to_owned(),
    };
    let wire: WireResponse = serde_json::from_slice(body).map_err(|_| invalid())?;
    if wire.kind == "error" {
        let status = error_detail(body).map_or(500, |d| status_for_error_type(&d.kind));
        return Err(map_error(PROVIDER, status, body, None));
    }
    if wire.kind != "message" {
        return Err(invalid());
    }

    let mut text = String::new();
    let mut saw_text = false;
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    let mut json_answer: Option<String> = None;
    for block in &wire.content {
        match block {
            WireBlockIn::Text { text: t } => {
                saw_text = true;
                text.push_str(t);
            }
            WireBlockIn::Thinking { thinking } => reasoning.push_str(thinking),
            WireBlockIn::ToolUse { name, input, .. } if name == JSON_TOOL_NAME => {
                json_answer = Some(compact(input));
            }
            WireBlockIn::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id: id.clone(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: name.clone(),
                    arguments: compact(input),
                },
            }),
            WireBlockIn::Other => {}
        }
    }
    let finish = finish_reason(wire.stop_reason.as_deref(), !tool_calls.is_empty());
    let content = match json_answer {
        Some(json) => Some(json),
        None if saw_text || tool_calls.is_empty() => Some(text),
        None => None,
    };
    let usage = wire.usage.as_ref().map(|u| {
        let mut acc = UsageAcc::default();
        acc.apply(u);
        acc.body()
    });
    Ok(ChatCompletion {
        id: id.to_owned(),
        object: "chat.completion".to_owned(),
        created,
        model: wire.model,
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
        usage,
    })
}

// ------------------------------------------------------------ stream wire types

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: WireStartMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: WireBlockIn,
    },
    ContentBlockDelta {
        index: u64,
        delta: WireDelta,
    },
    ContentBlockStop {},
    MessageDelta {
        #[serde(default)]
        delta: WireMessageDelta,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop {},
    Ping {},
    Error {},
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
struct WireStartMessage {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireDelta {
    TextDelta {
        #[serde(default)]
        text: String,
    },
    InputJsonDelta {
        #[serde(default)]
        partial_json: String,
    },
    ThinkingDelta {
        #[serde(default)]
        thinking: String,
    },
    /// `signature_delta`, `citations_delta` and anything newer.
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, Deserialize)]
struct WireMessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

// -------------------------------------------------------------- StreamState

/// Per-stream translation state: one decoded Anthropic SSE frame in, zero or
/// more OpenAI chunks out. See the module docs for the mapping.
#[derive(Debug)]
pub struct StreamState {
    id: String,
    created: u64,
    model: String,
    provider: String,
    /// The `role: "assistant"` chunk has been emitted.
    opened: bool,
    /// Anthropic block index → OpenAI tool-call index.
    tool_index: HashMap<u64, u32>,
    /// `tool_use` blocks seen so far (the next OpenAI tool-call index).
    tool_count: u32,
    /// Blocks of the JSON-mode tool, streamed as content.
    json_blocks: HashSet<u64>,
    usage: Option<UsageAcc>,
    finish_sent: bool,
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
            tool_index: HashMap::new(),
            tool_count: 0,
            json_blocks: HashSet::new(),
            usage: None,
            finish_sent: false,
            finished: false,
        }
    }

    /// Names the configured provider in errors from this stream (default
    /// `anthropic`).
    pub fn with_provider(mut self, provider: &str) -> Self {
        provider.clone_into(&mut self.provider);
        self
    }

    /// One decoded frame → chunks.
    ///
    /// * `message_start` → the first chunk, `delta: {role: "assistant", content: ""}`
    ///   (the chunk model becomes the one Anthropic reports); usage recorded.
    /// * `content_block_start`: `tool_use` → a tool-call delta with `index`
    ///   (the count of earlier `tool_use` blocks), `id`, `type: "function"`,
    ///   `function: {name, arguments: ""}`; text/thinking → their initial text
    ///   if any (normally none); other blocks → nothing.
    /// * `content_block_delta`: `text_delta` → `content`, `input_json_delta` →
    ///   `arguments` of the tool call that block maps to (or `content` for the
    ///   JSON-mode tool; nothing for server tools), `thinking_delta` →
    ///   `reasoning_content`, `signature_delta` and others → nothing. Empty
    ///   fragments are skipped.
    /// * `message_delta` → an empty-delta chunk with `finish_reason`; usage recorded.
    /// * `message_stop` → a final `choices: []` chunk carrying the usage (when
    ///   Anthropic reported any), then [`finished`](Self::finished) is true.
    /// * `ping`, `content_block_stop`, frames without data and unknown event
    ///   types → nothing (never fatal; Anthropic may add event types).
    ///
    /// Every chunk except the usage chunk has `usage: null`.
    ///
    /// Err for an `error` event (mapped as [`map_error`] maps the same error
    /// type: `overloaded_error` → 503, `rate_limit_error` → 429, `api_error` →
    /// 502, …) or a frame that is not a JSON event.
    pub fn on_frame(&mut self, frame: &SseFrame) -> Result<Vec<ChatChunk>, GatewayError> {
        let Some(data) = frame.data.as_deref() else {
            return Ok(Vec::new());
        };
        if self.finished {
            return Ok(Vec::new());
        }
        let event: WireEvent =
            serde_json::from_str(data).map_err(|_| GatewayError::UpstreamInvalidResponse {
                provider: self.provider.clone(),
            })?;
        let mut out = Vec::new();
        match event {
            WireEvent::MessageStart { message } => {
                if let Some(model) = message.model.filter(|m| !m.is_empty()) {
                    self.model = model;
                }
                if let Some(u) = &message.usage {
                    self.usage.get_or_insert_with(UsageAcc::default).apply(u);
                }
                self.open(&mut out);
            }
            WireEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                WireBlockIn::Text { text } => self.push_content(&mut out, text),
                WireBlockIn::Thinking { thinking } => self.push_reasoning(&mut out, thinking),
                WireBlockIn::ToolUse { name, .. } if name == JSON_TOOL_NAME => {
                    self.json_blocks.insert(index);
                    self.open(&mut out);
                }
                WireBlockIn::ToolUse { id, name, input } => {
                    let tool = self.tool_count;
                    self.tool_count += 1;
                    self.tool_index.insert(index, tool);
                    // Anthropic sends `input: {}` here and the arguments as
                    // deltas; a proxy that sends the whole input up front still works.
                    let arguments = match &input {
                        Value::Object(o) if !o.is_empty() => compact(&input),
                        _ => String::new(),
                    };
                    self.open(&mut out);
                    out.push(self.chunk(
                        Delta {
                            tool_calls: Some(vec![ToolCallDelta {
                                index: tool,
                                id: Some(id),
                                kind: Some("function".to_owned()),
                                function: FunctionCallDelta {
                                    name: Some(name),
                                    arguments: Some(arguments),
                                },
                            }]),
                            ..Delta::default()
                        },
                        None,
                    ));
                }
                WireBlockIn::Other => {}
            },
            WireEvent::ContentBlockDelta { index, delta } => match delta {
                WireDelta::TextDelta { text } => self.push_content(&mut out, text),
                WireDelta::ThinkingDelta { thinking } => self.push_reasoning(&mut out, thinking),
                WireDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                    if let Some(&tool) = self.tool_index.get(&index) {
                        self.open(&mut out);
                        out.push(self.chunk(
                            Delta {
                                tool_calls: Some(vec![ToolCallDelta {
                                    index: tool,
                                    id: None,
                                    kind: None,
                                    function: FunctionCallDelta {
                                        name: None,
                                        arguments: Some(partial_json),
                                    },
                                }]),
                                ..Delta::default()
                            },
                            None,
                        ));
                    } else if self.json_blocks.contains(&index) {
                        self.push_content(&mut out, partial_json);
                    }
                }
                WireDelta::InputJsonDelta { .. } | WireDelta::Other => {}
            },
            WireEvent::MessageDelta { delta, usage } => {
                if let Some(u) = &usage {
                    self.usage.get_or_insert_with(UsageAcc::default).apply(u);
                }
                if let Some(stop) = delta.stop_reason.as_deref() {
                    self.push_finish(&mut out, Some(stop));
                }
            }
            WireEvent::MessageStop {} => {
                self.push_finish(&mut out, None);
                if let Some(usage) = self.usage() {
                    out.push(ChatChunk::usage_only(
                        &self.id,
                        self.created,
                        &self.model,
                        usage,
                    ));
                }
                self.finished = true;
            }
            WireEvent::Error {} => {
                let status =
                    error_detail(data.as_bytes()).map_or(500, |d| status_for_error_type(&d.kind));
                return Err(map_error(&self.provider, status, data.as_bytes(), None));
            }
            WireEvent::ContentBlockStop {} | WireEvent::Ping {} | WireEvent::Unknown => {}
        }
        Ok(out)
    }

    /// True after `message_stop` (the caller then writes `data: [DONE]`).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Usage seen so far (input from `message_start`, output from
    /// `message_delta`, cache fields from either).
    pub fn usage(&self) -> Option<UsageBody> {
        self.usage.map(UsageAcc::body)
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

    fn push_content(&mut self, out: &mut Vec<ChatChunk>, text: String) {
        self.open(out);
        if text.is_empty() {
            return;
        }
        out.push(self.chunk(
            Delta {
                content: Some(text),
                ..Delta::default()
            },
            None,
        ));
    }

    fn push_reasoning(&mut self, out: &mut Vec<ChatChunk>, text: String) {
        self.open(out);
        if text.is_empty() {
            return;
        }
        out.push(self.chunk(
            Delta {
                reasoning_content: Some(text),
                ..Delta::default()
            },
            None,
        ));
    }

    /// The finish chunk, once; without a `stop_reason` (a `message_stop` with
    /// no earlier `message_delta`) the answer is complete all the same.
    fn push_finish(&mut self, out: &mut Vec<ChatChunk>, stop_reason: Option<&str>) {
        if self.finish_sent {
            return;
        }
        self.finish_sent = true;
        self.open(out);
        let finish = finish_reason(stop_reason, self.tool_count > 0);
        out.push(self.chunk(Delta::default(), Some(finish.to_owned())));
    }
}

// ------------------------------------------------------------------ errors

/// `error.type`, `error.message` and `error.details.error_code` of an
/// Anthropic error body `{"type":"error","error":{…},"request_id":…}`.
struct ErrorDetail {
    kind: String,
    message: Option<String>,
    error_code: Option<String>,
}

fn error_detail(body: &[u8]) -> Option<ErrorDetail> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    Some(ErrorDetail {
        kind: text(e.get("type")).unwrap_or_default(),
        message: text(e.get("message")).or_else(|| text(Some(e))),
        error_code: text(e.get("details").and_then(|d| d.get("error_code"))),
    })
}

/// The HTTP status Anthropic uses for an error type (for errors that arrive
/// inside a stream or a 200 body). <https://docs.claude.com/en/api/errors>
fn status_for_error_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// Whether a 400 is Anthropic's "the prompt does not fit" error.
fn is_context_length(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("prompt is too long")
        || m.contains("exceed context limit")
        || m.contains("context window")
        || m.contains("context length")
}

/// A `Retry-After` value worth passing on: delta-seconds only.
fn sane_retry_after(v: Option<&str>) -> Option<String> {
    let v = v?.trim();
    (!v.is_empty() && v.len() <= 6 && v.bytes().all(|b| b.is_ascii_digit())).then(|| v.to_owned())
}

/// Anthropic error status + body → the OpenAI-shaped error with the same
/// meaning. Provider text is passed on (scrubbed of anything key-shaped and
/// cut to 500 characters) only where the client can act on it: 400/404/413/422.
///
/// | Anthropic | client |
/// |---|---|
/// | 400 `invalid_request_error` | 400 `upstream_invalid_request` with the message |
/// | 400 prompt too long | 400 `context_length_exceeded` |
/// | 400 credit balance too low, 402 `billing_error` | 502 `upstream_billing_error` (the operator's account) |
/// | 401 / 403 | 502 `upstream_auth_failed`, message not relayed |
/// | 404 `not_found_error` | 404 `upstream_not_found` |
/// | 413 `request_too_large` | 413 `upstream_invalid_request` |
/// | 429 `rate_limit_error` | 429 `upstream_rate_limited` + `retry-after` |
/// | 429 with `enforced_spend_limit_reached` | 429 `upstream_quota_exceeded`, no `retry-after` (waiting does not help) |
/// | 529 `overloaded_error` | 503 `upstream_overloaded` |
/// | 500 `api_error`, other 5xx | 502 `upstream_error` (503/504 kept) |
/// | 3xx | 502 `upstream_redirect` |
pub fn map_error(
    provider: &str,
    status: u16,
    body: &[u8],
    retry_after: Option<&str>,
) -> GatewayError {
    let detail = error_detail(body);
    let message = detail.as_ref().and_then(|d| d.message.as_deref()).map(|m| {
        scrub_key_like(m)
            .chars()
            .take(MAX_MESSAGE_CHARS)
            .collect::<String>()
    });
    let upstream = |status: u16, code: &'static str, message: String, retry: Option<String>| {
        GatewayError::Upstream {
            provider: provider.to_owned(),
            status,
            message,
            code,
            retry_after: retry,
        }
    };
    let rejected = |m: Option<&str>| match m {
        Some(m) => format!("Provider '{provider}' rejected the request: {m}"),
        None => format!("Provider '{provider}' rejected the request (HTTP {status})."),
    };
    let billing = || {
        upstream(
            502,
            "upstream_billing_error",
            format!(
                "Provider '{provider}' refused the request for billing reasons (HTTP {status}); \
                 the operator should check the account's credit."
            ),
            None,
        )
    };
    match status {
        300..=399 => GatewayError::UpstreamRedirect {
            provider: provider.to_owned(),
        },
        400 | 413 | 422 => {
            let text = message.as_deref().unwrap_or_default();
            if is_context_length(text) {
                upstream(
                    400,
                    "context_length_exceeded",
                    rejected(message.as_deref()),
                    None,
                )
            } else if text.to_ascii_lowercase().contains("credit balance") {
                billing()
            } else {
                upstream(
                    status,
                    "upstream_invalid_request",
                    rejected(message.as_deref()),
                    None,
                )
            }
        }
        402 => billing(),
        401 | 403 => upstream(
            502,
            "upstream_auth_failed",
            format!(
                "Provider '{provider}' rejected the gateway's credentials (HTTP {status}); \
                 the operator should check its API key."
            ),
            None,
        ),
        404 => upstream(
            404,
            "upstream_not_found",
            rejected(message.as_deref()),
            None,
        ),
        429 if detail.as_ref().and_then(|d| d.error_code.as_deref())
            == Some("enforced_spend_limit_reached") =>
        {
            upstream(
                429,
                "upstream_quota_exceeded",
                format!(
                    "Provider '{provider}' reports that the account's spend limit is reached; \
                     retrying will not help until the operator raises it."
                ),
                None,
            )
        }
        429 => upstream(
            429,
            "upstream_rate_limited",
            format!("Provider '{provider}' is rate limiting requests; retry later."),
            sane_retry_after(retry_after),
        ),
        529 => upstream(
            503,
            "upstream_overloaded",
            format!("Provider '{provider}' is overloaded (HTTP 529); retry later."),
            sane_retry_after(retry_after),
        ),
        _ => upstream(
            if status == 503 || status == 504 {
                status
            } else {
                502
            },
            "upstream_error",
            format!("Provider '{provider}' returned an error (HTTP {status})."),
            sane_retry_after(retry_after),
        ),
    }
}

/// Whether a failure with this status is worth another attempt (on this or
/// another provider): timeouts, conflicts, rate limits, 5xx and 529
/// (overloaded). Other 4xx would fail again. A 429 for a reached spend limit
/// is not worth retrying either; its mapped code (`upstream_quota_exceeded`)
/// tells it apart.
pub fn is_retryable(status: u16) -> bool {
    matches!(status, 408 | 409 | 429 | 500..=599)
}

#[cfg(test)]
mod tests {
    //! Golden tests over `tests/fixtures/anthropic/` (sources in its README)
    //! plus unit tests for each rule in the module docs.
    //!
    //! Case matrix — every case, and where it is covered ("n/a" says why a
    //! direction does not apply):
    //!
    //! | case | request (`to_wire`) | response (`from_wire`) | stream (`StreamState`) |
    //! |---|---|---|---|
    //! | text | `request.text` | `response.text` | `stream.text` |
    //! | system / developer | `request.text`, `request.tools` | n/a: responses have no system part | n/a |
    //! | multi-turn, merged same-role turns | `request.text`, `request.tools` | n/a | n/a |
    //! | tools | `request.tools` | `response.tool_use` | `stream.tool_use` |
    //! | parallel tools | `request.tools` (two calls in history) | `response.parallel_tools` | `stream.parallel_tools` |
    //! | tool-result round trip | `request.tools` | n/a: tool results only travel in requests | n/a |
    //! | image, base64 and URL | `request.image` | n/a: Claude returns no images | n/a |
    //! | JSON mode | `request.json_schema`, `json_object_*` units | `response.json_mode` | `stream.json_mode` |
    //! | reasoning / thinking | `request.reasoning`, `request.reasoning_adaptive` | `response.thinking` | `stream.thinking`, `stream.refusal` |
    //! | stop sequence | `request.text` (`stop`) | `response.stop_sequence` | `stream_stop_sequence` unit |
    //! | length cut | n/a | `response.max_tokens` | `stream.max_tokens` |
    //! | refusal / content filter | n/a | `response.refusal` | `stream.refusal` |
    //! | prompt-cache usage | n/a | `response.cached` | `stream.parallel_tools`, `stream.text` |
    //! | server tools (skipped) | n/a | `server_tool_blocks_are_skipped` | `stream.server_tool` |
    //! | each error class | n/a | `error.*` (400, context, credit, 401, 403, 404, 413, 429, spend limit, 500, 529) | `stream.error` (overloaded), `stream_error_events_map_by_type` |
    //!
    //! Expected files for responses, streams and errors were generated by this
    //! code and reviewed by hand; `TOLLGATE_BLESS=1 cargo test anthropic`
    //! rewrites them after a deliberate change (review the diff).

    use super::*;
    use crate::openai::ChatRequest;
    use crate::sse::SseDecoder;
    use serde_json::json;

    macro_rules! fixture {
        ($name:literal) => {
            (
                $name,
                include_str!(concat!("../../tests/fixtures/anthropic/", $name)),
            )
        };
    }

    const ID: &str = "chatcmpl-tollgate-test";
    const CREATED: u64 = 1_760_000_000;

    /// Compares `actual` with an expected fixture (or rewrites it when blessing).
    fn golden(expected: (&str, &str), actual: &Value) {
        let (name, text) = expected;
        if std::env::var_os("TOLLGATE_BLESS").is_some() {
            let path = format!(
                "{}/tests/fixtures/anthropic/{name}",
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

    fn parse_req(body: &str) -> ChatRequest {
        let v: Value = serde_json::from_str(body).unwrap();
        ChatRequest::from_body(v.as_object().unwrap()).unwrap()
    }

    fn req(v: Value) -> ChatRequest {
        ChatRequest::from_body(v.as_object().unwrap()).unwrap()
    }

    const SONNET_45: &str = "claude-sonnet-4-5-20250929";

    fn wire(v: Value) -> Value {
        to_wire(&req(v), SONNET_45, false).unwrap()
    }

    fn wire_err(v: Value) -> GatewayError {
        to_wire(&req(v), SONNET_45, false).unwrap_err()
    }

    fn user(text: &str) -> Value {
        json!([{"role": "user", "content": text}])
    }

    fn err_json(e: &GatewayError) -> Value {
        json!({"status": e.status(), "retry_after": e.retry_after(), "body": e.to_body()})
    }

    // ------------------------------------------------------------ requests

    #[test]
    fn golden_requests() {
        let cases = [
            (
                fixture!("request.text.openai.json"),
                fixture!("request.text.json"),
                SONNET_45,
            ),
            (
                fixture!("request.tools.openai.json"),
                fixture!("request.tools.json"),
                SONNET_45,
            ),
            (
                fixture!("request.image.openai.json"),
                fixture!("request.image.json"),
                "claude-haiku-4-5-20251001",
            ),
            (
                fixture!("request.json_schema.openai.json"),
                fixture!("request.json_schema.json"),
                SONNET_45,
            ),
            (
                fixture!("request.reasoning.openai.json"),
                fixture!("request.reasoning.json"),
                SONNET_45,
            ),
            (
                fixture!("request.reasoning_adaptive.openai.json"),
                fixture!("request.reasoning_adaptive.json"),
                "claude-opus-4-7",
            ),
        ];
        for ((name, input), expected, model) in cases {
            let r = parse_req(input);
            let actual = to_wire(&r, model, r.stream.unwrap_or(false))
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            // Request fixtures are hand-written: never blessed.
            let (exp_name, exp_text) = expected;
            let want: Value = serde_json::from_str(exp_text).unwrap();
            assert_eq!(
                want,
                actual,
                "{exp_name}; actual:\n{}",
                serde_json::to_string_pretty(&actual).unwrap()
            );
        }
    }

    #[test]
    fn endpoint_appends_messages() {
        assert_eq!(
            endpoint("https://api.anthropic.com/v1"),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:9/v1/"),
            "http://127.0.0.1:9/v1/messages"
        );
    }

    #[test]
    fn max_tokens_default_and_client_limit() {
        assert_eq!(
            wire(json!({"model": "m", "messages": user("hi")}))["max_tokens"],
            4096
        );
        let w = wire(json!({"model": "m", "messages": user("hi"), "max_tokens": 10}));
        assert_eq!(w["max_tokens"], 10);
        let w = wire(
            json!({"model": "m", "messages": user("hi"), "max_tokens": 10, "max_completion_tokens": 20}),
        );
        assert_eq!(w["max_tokens"], 20);
        assert!(w.get("thinking").is_none() && w.get("tool_choice").is_none());
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
            let w = wire(json!({"model": "m", "messages": user("hi"), "reasoning_effort": effort}));
            assert_eq!(
                w["thinking"],
                json!({"type": "enabled", "budget_tokens": budget}),
                "{effort}"
            );
            assert_eq!(w["max_tokens"], 4096 + budget, "{effort}");
        }
        let w = wire(json!({"model": "m", "messages": user("hi"), "reasoning_effort": "none"}));
        assert!(w.get("thinking").is_none() && w.get("output_config").is_none());
        assert_eq!(w["max_tokens"], 4096);

        for (effort, wire_effort) in [
            ("minimal", "low"),
            ("low", "low"),
            ("medium", "medium"),
            ("high", "high"),
            ("xhigh", "xhigh"),
        ] {
            let r = req(json!({"model": "m", "messages": user("hi"), "reasoning_effort": effort}));
            let w = to_wire(&r, "claude-sonnet-4-6", false).unwrap();
            assert_eq!(w["thinking"], json!({"type": "adaptive"}));
            assert_eq!(w["output_config"], json!({"effort": wire_effort}));
        }

        let e =
            wire_err(json!({"model": "m", "messages": user("hi"), "reasoning_effort": "extreme"}));
        assert_eq!((e.status(), e.param()), (400, Some("reasoning_effort")));
    }

    #[test]
    fn budget_thinking_needs_room_in_max_tokens() {
        let e = wire_err(
            json!({"model": "m", "messages": user("hi"), "reasoning_effort": "high", "max_completion_tokens": 16384}),
        );
        assert_eq!(e.param(), Some("max_completion_tokens"));
        assert!(e.message().contains("16384"), "{}", e.message());
        let e = wire_err(
            json!({"model": "m", "messages": user("hi"), "reasoning_effort": "low", "max_tokens": 1000}),
        );
        assert_eq!(e.param(), Some("max_tokens"));
        let w = wire(
            json!({"model": "m", "messages": user("hi"), "reasoning_effort": "low", "max_tokens": 2049}),
        );
        assert_eq!(w["max_tokens"], 2049);
        // Adaptive thinking has no budget to fit.
        let r = req(
            json!({"model": "m", "messages": user("hi"), "reasoning_effort": "high", "max_tokens": 100}),
        );
        assert_eq!(
            to_wire(&r, "claude-opus-4-7", false).unwrap()["max_tokens"],
            100
        );
    }

    #[test]
    fn thinking_form_follows_the_model_version() {
        let adaptive = [
            "claude-sonnet-4-6",
            "claude-opus-4-6",
            "claude-opus-4-7",
            "claude-opus-4-8",
            "claude-sonnet-5",
            "claude-opus-5",
            "claude-fable-5-1",
            "claude-haiku-5-5",
            "claude-mythos-preview",
            "anthropic.claude-opus-4-7",
            "claude-sonnet-4.6",
        ];
        let budget = [
            "claude-sonnet-4-5-20250929",
            "claude-sonnet-4-5",
            "claude-haiku-4-5-20251001",
            "claude-opus-4-1-20250805",
            "claude-sonnet-4-20250514",
            "claude-3-7-sonnet-20250219",
            "claude-3-5-haiku-latest",
            "my-custom-model",
        ];
        for m in adaptive {
            assert!(uses_adaptive_thinking(m), "{m}");
        }
        for m in budget {
            assert!(!uses_adaptive_thinking(m), "{m}");
        }
    }

    #[test]
    fn unsupported_parameters_are_named_and_defaults_pass() {
        let cases = [
            ("n", json!(2)),
            ("presence_penalty", json!(0.5)),
            ("frequency_penalty", json!(-1)),
            ("logit_bias", json!({"50256": -100})),
            ("logprobs", json!(true)),
            ("top_logprobs", json!(3)),
            ("audio", json!({"voice": "alloy", "format": "wav"})),
            ("prediction", json!({"type": "content", "content": "x"})),
            ("web_search_options", json!({})),
            ("modalities", json!(["text", "audio"])),
        ];
        for (param, value) in cases {
            let mut body = json!({"model": "m", "messages": user("hi")});
            body[param] = value;
            let e = wire_err(body);
            assert_eq!(
                (e.status(), e.param(), e.code()),
                (400, Some(param), "unsupported_parameter"),
                "{param}"
            );
            assert!(e.message().contains(param), "{}", e.message());
        }
        // Defaults many SDKs always send, and ignored fields.
        let w = wire(json!({
            "model": "m", "messages": user("hi"), "n": 1, "presence_penalty": 0, "frequency_penalty": 0.0,
            "logit_bias": {}, "logprobs": false, "top_logprobs": 0, "seed": 42, "store": true,
            "service_tier": "auto", "modalities": ["text"], "metadata": {"a": "b"}, "parallel_tool_calls": true,
            "prompt_cache_key": "k"
        }));
        let keys: Vec<&String> = w.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 4, "{keys:?}"); // model, max_tokens, messages, stream
    }

    #[test]
    fn sampling_parameters() {
        let e = wire_err(json!({"model": "m", "messages": user("hi"), "temperature": 1.5}));
        assert_eq!((e.status(), e.param()), (400, Some("temperature")));
        assert!(e.message().contains("between 0 and 1"));
        let w = wire(
            json!({"model": "m", "messages": user("hi"), "temperature": 1, "top_p": 0.5, "top_k": 40}),
        );
        assert_eq!(
            (
                w["temperature"].as_f64(),
                w["top_p"].as_f64(),
                w["top_k"].as_u64()
            ),
            (Some(1.0), Some(0.5), Some(40))
        );
        let e = wire_err(json!({"model": "m", "messages": user("hi"), "top_k": "forty"}));
        assert_eq!(e.param(), Some("top_k"));
        let w = wire(json!({"model": "m", "messages": user("hi"), "stop": "END"}));
        assert_eq!(w["stop_sequences"], json!(["END"]));
        let w = wire(json!({"model": "m", "messages": user("hi"), "safety_identifier": "hash-1"}));
        assert_eq!(w["metadata"], json!({"user_id": "hash-1"}));
    }

    #[test]
    fn stream_flag_is_sent() {
        let r = req(json!({"model": "m", "messages": user("hi")}));
        assert_eq!(to_wire(&r, SONNET_45, true).unwrap()["stream"], true);
        assert_eq!(to_wire(&r, SONNET_45, false).unwrap()["stream"], false);
    }

    #[test]
    fn content_parts_anthropic_cannot_take_are_rejected() {
        let parts = [
            json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}),
            json!({"type": "file", "file": {"file_id": "file-abc"}}),
        ];
        for part in parts {
            let kind = part["type"].as_str().unwrap().to_owned();
            let e = wire_err(
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, part]}]}),
            );
            assert_eq!(e.param(), Some("messages[0].content[1]"));
            assert!(
                e.message().contains(&kind) && e.message().contains("Anthropic"),
                "{}",
                e.message()
            );
        }
        let bad_images = [
            "data:image/bmp;base64,Qk0=",
            "data:image/png,rawbytes",
            "ftp://example.com/a.png",
            "file:///etc/passwd",
        ];
        for url in bad_images {
            let e = wire_err(
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}),
            );
            assert_eq!(
                e.param(),
                Some("messages[0].content[0].image_url.url"),
                "{url}"
            );
        }
        let e = wire_err(json!({"model": "m", "messages": [
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            {"role": "user", "content": "hi"}
        ]}));
        assert_eq!(e.param(), Some("messages[0].content[0]"));
        let e = wire_err(
            json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]}),
        );
        assert_eq!(e.param(), Some("messages[0].role"));
    }

    #[test]
    fn tool_call_arguments_must_be_a_json_object() {
        for (args, what) in [("{\"a\":", "not valid JSON"), ("[1,2]", "JSON object")] {
            let e = wire_err(json!({"model": "m", "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "b", "type": "function", "function": {"name": "f", "arguments": args}}
                ]}
            ]}));
            assert_eq!(
                e.param(),
                Some("messages[1].tool_calls[1].function.arguments")
            );
            assert!(e.message().contains(what), "{}", e.message());
        }
        let e = wire_err(json!({"model": "m", "messages": [{"role": "tool", "content": "42"}]}));
        assert_eq!(e.param(), Some("messages[0].tool_call_id"));
    }

    #[test]
    fn empty_turns_are_dropped_and_refusals_replayed() {
        let w = wire(json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": null, "refusal": "I can't help with that."},
            {"role": "user", "content": [{"type": "text", "text": "ok"}]}
        ]}));
        assert_eq!(
            w["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}]},
                {"role": "assistant", "content": "I can't help with that."},
                {"role": "user", "content": "ok"}
            ])
        );
        let e = wire_err(
            json!({"model": "m", "messages": [{"role": "system", "content": "only a system prompt"}]}),
        );
        assert_eq!(e.param(), Some("messages"));
    }

    #[test]
    fn tool_choice_mapping() {
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
        let cases = [
            (json!(null), json!(null), None),
            (json!("auto"), json!(null), Some(json!({"type": "auto"}))),
            (json!("none"), json!(null), Some(json!({"type": "none"}))),
            (json!("required"), json!(null), Some(json!({"type": "any"}))),
            (
                json!({"type": "function", "function": {"name": "f"}}),
                json!(null),
                Some(json!({"type": "tool", "name": "f"})),
            ),
            (
                json!(null),
                json!(false),
                Some(json!({"type": "auto", "disable_parallel_tool_use": true})),
            ),
            (
                json!("required"),
                json!(false),
                Some(json!({"type": "any", "disable_parallel_tool_use": true})),
            ),
            (json!("none"), json!(false), Some(json!({"type": "none"}))),
            (
                json!({"type": "function", "function": {"name": "f"}}),
                json!(false),
                Some(json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true})),
            ),
        ];
        for (choice, parallel, want) in cases {
            let mut body = json!({"model": "m", "messages": user("hi"), "tools": tools});
            if !choice.is_null() {
                body["tool_choice"] = choice.clone();
            }
            if !parallel.is_null() {
                body["parallel_tool_calls"] = parallel.clone();
            }
            let w = wire(body);
            assert_eq!(w.get("tool_choice").cloned(), want, "{choice} {parallel}");
        }
        // No tools: no tool_choice, whatever the client said.
        let w = wire(json!({"model": "m", "messages": user("hi"), "tool_choice": "required"}));
        assert!(w.get("tool_choice").is_none() && w.get("tools").is_none());
        let e = wire_err(
            json!({"model": "m", "messages": user("hi"), "tools": tools, "tool_choice": "sometimes"}),
        );
        assert_eq!(e.param(), Some("tool_choice"));
        let e = wire_err(
            json!({"model": "m", "messages": user("hi"), "tools": [{"type": "custom", "function": {"name": "g"}}]}),
        );
        assert_eq!(e.param(), Some("tools[0].type"));
        let e = wire_err(
            json!({"model": "m", "messages": user("hi"), "tools": [{"type": "function", "function": {"name": JSON_TOOL_NAME}}]}),
        );
        assert_eq!(e.param(), Some("tools[0].function.name"));
    }

    #[test]
    fn json_object_without_tools_forces_the_json_tool() {
        let w = wire(
            json!({"model": "m", "messages": user("hi"), "response_format": {"type": "json_object"}}),
        );
        assert_eq!(
            w["tool_choice"],
            json!({"type": "tool", "name": JSON_TOOL_NAME})
        );
        assert_eq!(w["tools"][0]["name"], JSON_TOOL_NAME);
        assert_eq!(w["tools"][0]["input_schema"], json!({"type": "object"}));
        let w = wire(
            json!({"model": "m", "messages": user("hi"), "response_format": {"type": "text"}}),
        );
        assert!(w.get("tools").is_none());
    }

    #[test]
    fn json_object_with_client_tools() {
        let tools = json!([{"type": "function", "function": {"name": "lookup"}}]);
        let w = wire(
            json!({"model": "m", "messages": user("hi"), "tools": tools, "response_format": {"type": "json_object"}}),
        );
        assert_eq!(w["tool_choice"], json!({"type": "any"}));
        let names: Vec<&str> = w["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["lookup", JSON_TOOL_NAME]);
        let w = wire(
            json!({"model": "m", "messages": user("hi"), "tools": tools, "tool_choice": "none", "response_format": {"type": "json_object"}}),
        );
        assert_eq!(
            w["tool_choice"],
            json!({"type": "tool", "name": JSON_TOOL_NAME})
        );
        for choice in [
            json!("required"),
            json!({"type": "function", "function": {"name": "lookup"}}),
        ] {
            let e = wire_err(
                json!({"model": "m", "messages": user("hi"), "tools": tools, "tool_choice": choice, "response_format": {"type": "json_object"}}),
            );
            assert_eq!(e.param(), Some("tool_choice"));
        }
    }

    #[test]
    fn json_mode_conflicts_and_bad_schemas() {
        let e = wire_err(
            json!({"model": "m", "messages": user("hi"), "reasoning_effort": "low", "response_format": {"type": "json_object"}}),
        );
        assert_eq!(e.param(), Some("response_format"));
        // reasoning_effort "none" is no thinking, so JSON mode is fine.
        wire(
            json!({"model": "m", "messages": user("hi"), "reasoning_effort": "none", "response_format": {"type": "json_object"}}),
        );
        let e = wire_err(
            json!({"model": "m", "messages": user("hi"), "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array"}}}}),
        );
        assert_eq!(e.param(), Some("response_format.json_schema.schema"));
        let e = wire_err(
            json!({"model": "m", "messages": user("hi"), "response_format": {"type": "json_schema"}}),
        );
        assert_eq!(e.param(), Some("response_format.json_schema"));
        let e = wire_err(
            json!({"model": "m", "messages": user("hi"), "response_format": {"type": "grammar"}}),
        );
        assert_eq!(e.param(), Some("response_format.type"));
    }

    // ----------------------------------------------------------- responses

    #[test]
    fn golden_responses() {
        let cases = [
            (
                fixture!("response.text.json"),
                fixture!("response.text.openai.json"),
            ),
            (
                fixture!("response.tool_use.json"),
                fixture!("response.tool_use.openai.json"),
            ),
            (
                fixture!("response.parallel_tools.json"),
                fixture!("response.parallel_tools.openai.json"),
            ),
            (
                fixture!("response.thinking.json"),
                fixture!("response.thinking.openai.json"),
            ),
            (
                fixture!("response.json_mode.json"),
                fixture!("response.json_mode.openai.json"),
            ),
            (
                fixture!("response.stop_sequence.json"),
                fixture!("response.stop_sequence.openai.json"),
            ),
            (
                fixture!("response.max_tokens.json"),
                fixture!("response.max_tokens.openai.json"),
            ),
            (
                fixture!("response.refusal.json"),
                fixture!("response.refusal.openai.json"),
            ),
            (
                fixture!("response.cached.json"),
                fixture!("response.cached.openai.json"),
            ),
        ];
        for ((name, body), expected) in cases {
            let c =
                from_wire(body.as_bytes(), ID, CREATED).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            golden(expected, &serde_json::to_value(&c).unwrap());
        }
    }

    #[test]
    fn response_usage_adds_cache_tokens_to_prompt() {
        let c = from_wire(fixture!("response.cached.json").1.as_bytes(), ID, CREATED).unwrap();
        let u = c.usage.unwrap();
        assert_eq!(u.prompt_tokens, 3 + 411 + 28443);
        assert_eq!(u.completion_tokens, 253);
        assert_eq!(u.total_tokens, 3 + 411 + 28443 + 253);
        assert_eq!(u.prompt_tokens_details.unwrap().cached_tokens, 28443);
        assert!(u.completion_tokens_details.is_none());
    }

    #[test]
    fn server_tool_blocks_are_skipped() {
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "weather"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "text", "text": "Sunny."}
        ], "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 2}});
        let c = from_wire(body.to_string().as_bytes(), ID, CREATED).unwrap();
        let m = &c.choices[0].message;
        assert_eq!(
            (m.content.as_deref(), m.tool_calls.is_none()),
            (Some("Sunny."), true)
        );
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn response_edge_cases() {
        // Only tool calls: content is null.
        let c = from_wire(
            fixture!("response.parallel_tools.json").1.as_bytes(),
            ID,
            CREATED,
        )
        .unwrap();
        assert_eq!(c.choices[0].message.content, None);
        // An empty answer is "" (not null) and has no usage when none was sent.
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[],"stop_reason":"end_turn"}"#;
        let c = from_wire(body, ID, CREATED).unwrap();
        assert_eq!(c.choices[0].message.content.as_deref(), Some(""));
        assert!(c.usage.is_none());
        for (stop, want) in [
            ("pause_turn", "stop"),
            ("model_context_window_exceeded", "length"),
            ("something_new", "stop"),
        ] {
            let body = json!({"type": "message", "model": "m", "content": [{"type": "text", "text": "x"}], "stop_reason": stop});
            let c = from_wire(body.to_string().as_bytes(), ID, CREATED).unwrap();
            assert_eq!(c.choices[0].finish_reason.as_deref(), Some(want), "{stop}");
        }
        for bad in [&b"not json"[..], b"[]", br#"{"type":"completion"}"#, b""] {
            let e = from_wire(bad, ID, CREATED).unwrap_err();
            assert_eq!((e.status(), e.code()), (502, "upstream_invalid_response"));
        }
        // An error body that arrived with a 2xx is still an error.
        let e = from_wire(fixture!("error.529.json").1.as_bytes(), ID, CREATED).unwrap_err();
        assert_eq!((e.status(), e.code()), (503, "upstream_overloaded"));
    }

    // ------------------------------------------------------------- streams

    type StreamCase = ((&'static str, &'static str), (&'static str, &'static str));

    const STREAM_CASES: [StreamCase; 9] = [
        (
            fixture!("stream.text.sse"),
            fixture!("stream.text.openai.json"),
        ),
        (
            fixture!("stream.tool_use.sse"),
            fixture!("stream.tool_use.openai.json"),
        ),
        (
            fixture!("stream.parallel_tools.sse"),
            fixture!("stream.parallel_tools.openai.json"),
        ),
        (
            fixture!("stream.thinking.sse"),
            fixture!("stream.thinking.openai.json"),
        ),
        (
            fixture!("stream.json_mode.sse"),
            fixture!("stream.json_mode.openai.json"),
        ),
        (
            fixture!("stream.max_tokens.sse"),
            fixture!("stream.max_tokens.openai.json"),
        ),
        (
            fixture!("stream.refusal.sse"),
            fixture!("stream.refusal.openai.json"),
        ),
        (
            fixture!("stream.error.sse"),
            fixture!("stream.error.openai.json"),
        ),
        (
            fixture!("stream.server_tool.sse"),
            fixture!("stream.server_tool.openai.json"),
        ),
    ];

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
        let mut st = StreamState::new(ID.to_owned(), CREATED, "requested-model".to_owned());
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
        for ((name, sse), expected) in STREAM_CASES {
            let outcome = translate(&decode([sse.as_bytes()]));
            assert_stream_invariants(name, &outcome);
            golden(expected, &outcome.to_json());
        }
    }

    /// The same chunks whatever the network split: every two-piece split,
    /// and one byte at a time.
    #[test]
    fn streams_are_identical_under_every_split() {
        for ((name, sse), _) in STREAM_CASES {
            let bytes = sse.as_bytes();
            let reference = translate(&decode([bytes]));
            for k in 0..=bytes.len() {
                let (a, b) = bytes.split_at(k);
                assert_eq!(translate(&decode([a, b])), reference, "{name} split at {k}");
            }
            let singles = translate(&decode(bytes.chunks(1)));
            assert_eq!(singles, reference, "{name} byte by byte");
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
            "{name}: one finish chunk per finished stream"
        );
        for (i, c) in o.chunks.iter().enumerate() {
            let is_usage_chunk = c.choices.is_empty();
            if is_usage_chunk {
                assert_eq!(i, o.chunks.len() - 1, "{name}: usage chunk is last");
                assert!(matches!(c.usage, Some(Some(_))), "{name}");
            } else {
                assert_eq!(c.usage, Some(None), "{name}: chunk {i} carries usage: null");
            }
            assert_eq!(
                (c.id.as_str(), c.created, c.object.as_str()),
                (ID, CREATED, "chat.completion.chunk")
            );
        }
        // Tool indexes: 0, 1, … in order of first appearance, id/type/name on the first fragment only.
        let mut seen: Vec<u32> = Vec::new();
        for d in o
            .chunks
            .iter()
            .filter_map(|c| c.choices.first())
            .filter_map(|ch| ch.delta.tool_calls.as_ref())
        {
            for t in d {
                if seen.contains(&t.index) {
                    assert!(t.id.is_none() && t.function.name.is_none(), "{name}");
                } else {
                    assert_eq!(
                        t.index as usize,
                        seen.len(),
                        "{name}: contiguous tool indexes"
                    );
                    assert!(
                        t.id.is_some()
                            && t.kind.as_deref() == Some("function")
                            && t.function.name.is_some(),
                        "{name}"
                    );
                    seen.push(t.index);
                }
            }
        }
    }

    /// Text and tool arguments reassembled from chunks.
    fn accumulate(chunks: &[ChatChunk]) -> (String, String, Vec<(String, String, String)>) {
        let (mut content, mut reasoning, mut tools) = (
            String::new(),
            String::new(),
            Vec::<(String, String, String)>::new(),
        );
        for ch in chunks.iter().filter_map(|c| c.choices.first()) {
            content.push_str(ch.delta.content.as_deref().unwrap_or(""));
            reasoning.push_str(ch.delta.reasoning_content.as_deref().unwrap_or(""));
            for t in ch.delta.tool_calls.iter().flatten() {
                let i = t.index as usize;
                if i == tools.len() {
                    tools.push((
                        t.id.clone().unwrap(),
                        t.function.name.clone().unwrap(),
                        String::new(),
                    ));
                }
                tools[i]
                    .2
                    .push_str(t.function.arguments.as_deref().unwrap_or(""));
            }
        }
        (content, reasoning, tools)
    }

    #[test]
    fn streamed_tool_calls_reassemble_to_valid_arguments() {
        let o = translate(&decode([fixture!("stream.parallel_tools.sse")
            .1
            .as_bytes()]));
        let (content, _, tools) = accumulate(&o.chunks);
        assert_eq!(content, "Checking both.");
        assert_eq!(tools.len(), 2);
        assert_eq!(
            (tools[0].1.as_str(), tools[1].1.as_str()),
            ("get_weather", "get_time")
        );
        let a: Value = serde_json::from_str(&tools[0].2).unwrap();
        let b: Value = serde_json::from_str(&tools[1].2).unwrap();
        assert_eq!(
            (a, b),
            (
                json!({"location": "San Francisco, CA"}),
                json!({"timezone": "America/Los_Angeles"})
            )
        );

        let o = translate(&decode([fixture!("stream.tool_use.sse").1.as_bytes()]));
        let (content, _, tools) = accumulate(&o.chunks);
        assert_eq!(
            content,
            "Okay, let's check the weather for San Francisco, CA:"
        );
        let args: Value = serde_json::from_str(&tools[0].2).unwrap();
        assert_eq!(
            args,
            json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
        );

        let o = translate(&decode([fixture!("stream.json_mode.sse").1.as_bytes()]));
        let (content, _, tools) = accumulate(&o.chunks);
        assert!(tools.is_empty());
        assert_eq!(
            serde_json::from_str::<Value>(&content).unwrap(),
            json!({"city": "Mexico City", "country": "Mexico"})
        );

        let o = translate(&decode([fixture!("stream.server_tool.sse").1.as_bytes()]));
        let (content, _, tools) = accumulate(&o.chunks);
        assert!(
            tools.is_empty(),
            "server tool input must not become a client tool call"
        );
        assert!(!content.contains("query"));
    }

    fn frame(data: &str) -> SseFrame {
        SseFrame {
            raw: Vec::new(),
            event: None,
            data: Some(data.to_owned()),
            id: None,
            retry: None,
        }
    }

    fn run(events: &[Value]) -> Outcome {
        let frames: Vec<SseFrame> = events.iter().map(|e| frame(&e.to_string())).collect();
        translate(&frames)
    }

    fn start(usage: Value) -> Value {
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [], "usage": usage}})
    }

    #[test]
    fn stream_stop_sequence() {
        let o = run(&[
            start(json!({"input_tokens": 21, "output_tokens": 1})),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "1, 2, 3, 4, "}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "stop_sequence", "stop_sequence": "5"}, "usage": {"output_tokens": 12}}),
            json!({"type": "message_stop"}),
        ]);
        let finish = &o.chunks[o.chunks.len() - 2].choices[0];
        assert_eq!(finish.finish_reason.as_deref(), Some("stop"));
        assert_eq!(finish.delta, Delta::default());
        let u = o.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (21, 12, 33)
        );
        assert_eq!(
            o.chunks[0].model, "claude-x",
            "chunks carry the model Anthropic reports"
        );
    }

    #[test]
    fn tool_indexes_count_tool_blocks_not_anthropic_blocks() {
        let o = run(&[
            start(json!({"input_tokens": 1, "output_tokens": 1})),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "plan"}}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "t_a", "name": "a", "input": {}}}),
            json!({"type": "content_block_start", "index": 3, "content_block": {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}}),
            json!({"type": "content_block_start", "index": 4, "content_block": {"type": "tool_use", "id": "t_b", "name": "b", "input": {}}}),
            // Fragments interleaved across blocks still land on the right call.
            json!({"type": "content_block_delta", "index": 4, "delta": {"type": "input_json_delta", "partial_json": "{\"b\":"}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}}),
            json!({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "{\"query\":\"x\"}"}}),
            json!({"type": "content_block_delta", "index": 4, "delta": {"type": "input_json_delta", "partial_json": "2}"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
            json!({"type": "message_stop"}),
        ]);
        let (_, reasoning, tools) = accumulate(&o.chunks);
        assert_eq!(reasoning, "plan");
        assert_eq!(
            tools,
            vec![
                ("t_a".to_owned(), "a".to_owned(), "{\"a\":1}".to_owned()),
                ("t_b".to_owned(), "b".to_owned(), "{\"b\":2}".to_owned())
            ]
        );
        let finish = o
            .chunks
            .iter()
            .find_map(|c| c.choices.first()?.finish_reason.clone());
        assert_eq!(finish.as_deref(), Some("tool_calls"));
    }

    #[test]
    fn stream_robustness() {
        let mut st = StreamState::new(ID.into(), CREATED, "m".into());
        // Keep-alive comments and unknown events produce nothing.
        let comment = SseFrame {
            data: None,
            ..frame("")
        };
        assert!(st.on_frame(&comment).unwrap().is_empty());
        assert!(st
            .on_frame(&frame(r#"{"type":"brand_new_event","x":1}"#))
            .unwrap()
            .is_empty());
        assert!(st
            .on_frame(&frame(r#"{"type":"ping"}"#))
            .unwrap()
            .is_empty());
        // Content before message_start still opens with the role chunk.
        let out = st
            .on_frame(&frame(r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#))
            .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].choices[0].delta.role.as_deref(), Some("assistant"));
        assert_eq!(out[1].choices[0].delta.content.as_deref(), Some("hi"));
        // Unknown delta types (citations, signatures, newer ones) produce nothing.
        assert!(st
            .on_frame(&frame(r#"{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":{}}}"#))
            .unwrap()
            .is_empty());
        // message_stop without a message_delta: finish "stop", no usage chunk (none seen);
        // extra fields (Bedrock adds metrics to message_stop) are fine.
        let out = st
            .on_frame(&frame(r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":3}}"#))
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].choices[0].finish_reason.as_deref(), Some("stop"));
        assert!(st.finished() && st.usage().is_none());
        // Anything after the end is ignored.
        assert!(st
            .on_frame(&frame(r#"{"type":"message_stop"}"#))
            .unwrap()
            .is_empty());

        let mut st = StreamState::new(ID.into(), CREATED, "m".into()).with_provider("claude-eu");
        for bad in ["not json", "{\"type\":\"content_block_delta\"}", "[1]"] {
            let e = st.on_frame(&frame(bad)).unwrap_err();
            assert_eq!(
                (e.status(), e.code()),
                (502, "upstream_invalid_response"),
                "{bad}"
            );
            assert!(e.message().contains("claude-eu"));
        }
    }

    #[test]
    fn stream_usage_is_cumulative_and_overwritten() {
        let mut st = StreamState::new(ID.into(), CREATED, "m".into());
        st.on_frame(&frame(
            &start(json!({"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1}))
                .to_string(),
        ))
        .unwrap();
        assert_eq!(st.usage().unwrap().completion_tokens, 1);
        st.on_frame(&frame(
            r#"{"type":"message_delta","delta":{},"usage":{"output_tokens":7}}"#,
        ))
        .unwrap();
        st.on_frame(&frame(r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9,"output_tokens_details":{"thinking_tokens":4}}}"#))
            .unwrap();
        let u = st.usage().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (15, 9, 24)
        );
        assert_eq!(u.prompt_tokens_details.unwrap().cached_tokens, 5);
        assert_eq!(u.completion_tokens_details.unwrap().reasoning_tokens, 4);
    }

    #[test]
    fn stream_error_events_map_by_type() {
        let cases = [
            ("overloaded_error", 503, "upstream_overloaded"),
            ("rate_limit_error", 429, "upstream_rate_limited"),
            ("api_error", 502, "upstream_error"),
            ("timeout_error", 504, "upstream_error"),
            ("invalid_request_error", 400, "upstream_invalid_request"),
            ("something_new", 502, "upstream_error"),
        ];
        for (kind, status, code) in cases {
            let mut st = StreamState::new(ID.into(), CREATED, "m".into()).with_provider("claude");
            let data = json!({"type": "error", "error": {"type": kind, "message": "Overloaded sk-ant-api03-SECRETSECRET"}});
            let e = st.on_frame(&frame(&data.to_string())).unwrap_err();
            assert_eq!((e.status(), e.code()), (status, code), "{kind}");
            assert!(!e.to_body().to_string().contains("SECRETSECRET"));
            assert!(e.message().contains("'claude'"));
        }
    }

    // -------------------------------------------------------------- errors

    #[test]
    fn golden_errors() {
        let cases = [
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
                fixture!("error.400_credit.json"),
                fixture!("error.400_credit.openai.json"),
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
                403,
                None,
                fixture!("error.403.json"),
                fixture!("error.403.openai.json"),
            ),
            (
                404,
                None,
                fixture!("error.404.json"),
                fixture!("error.404.openai.json"),
            ),
            (
                413,
                None,
                fixture!("error.413.json"),
                fixture!("error.413.openai.json"),
            ),
            (
                429,
                Some("20"),
                fixture!("error.429.json"),
                fixture!("error.429.openai.json"),
            ),
            (
                429,
                Some("20"),
                fixture!("error.429_spend.json"),
                fixture!("error.429_spend.openai.json"),
            ),
            (
                500,
                Some("3"),
                fixture!("error.500.json"),
                fixture!("error.500.openai.json"),
            ),
            (
                529,
                Some("7"),
                fixture!("error.529.json"),
                fixture!("error.529.openai.json"),
            ),
        ];
        for (status, retry_after, (_, body), expected) in cases {
            let e = map_error("anthropic", status, body.as_bytes(), retry_after);
            golden(expected, &err_json(&e));
        }
    }

    #[test]
    fn error_messages_are_scrubbed_and_bounded() {
        let e = map_error(
            "anthropic",
            400,
            fixture!("error.400_key_echo.json").1.as_bytes(),
            None,
        );
        let text = e.to_body().to_string();
        assert!(!text.contains("CANARY"), "{text}");
        assert!(text.contains("tools.0.custom.name"));
        let long = json!({"type": "error", "error": {"type": "invalid_request_error", "message": "x".repeat(5000)}});
        let e = map_error("anthropic", 400, long.to_string().as_bytes(), None);
        assert!(e.message().len() < 700);
        // Auth failures never relay the provider's text.
        let e = map_error("anthropic", 401, br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key sk-ant-api03-abc"}}"#, None);
        assert!(!e.message().contains("x-api-key"));
    }

    #[test]
    fn error_status_edges() {
        let cases = [
            (301, 502, "upstream_redirect"),
            (402, 502, "upstream_billing_error"),
            (422, 422, "upstream_invalid_request"),
            (409, 502, "upstream_error"),
            (503, 503, "upstream_error"),
            (504, 504, "upstream_error"),
            (502, 502, "upstream_error"),
        ];
        for (status, want, code) in cases {
            let e = map_error("anthropic", status, b"<html>gateway</html>", None);
            assert_eq!((e.status(), e.code()), (want, code), "{status}");
        }
        // A non-JSON 413 (Cloudflare answers before Anthropic) still maps.
        let e = map_error(
            "anthropic",
            413,
            b"<html>413 Request Entity Too Large</html>",
            None,
        );
        assert_eq!((e.status(), e.code()), (413, "upstream_invalid_request"));
        assert!(e.message().contains("HTTP 413"));
        // Only delta-seconds retry-after values are passed on.
        let e = map_error(
            "anthropic",
            429,
            b"{}",
            Some("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(e.retry_after(), None);
        let e = map_error("anthropic", 429, b"{}", Some(" 12 "));
        assert_eq!(e.retry_after(), Some("12"));
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 409, 429, 500, 502, 503, 504, 529] {
            assert!(is_retryable(s), "{s}");
        }
        for s in [200, 301, 400, 401, 402, 403, 404, 413, 422] {
            assert!(!is_retryable(s), "{s}");
        }
    }
}
