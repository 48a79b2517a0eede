//! OpenAI chat/completions ⇄ Google Gemini API (`generateContent`, `streamGenerateContent?alt=sse`, `batchEmbedContents`).
//!
//! Pure translation for the Gemini API on AI Studio
//! (`https://generativelanguage.googleapis.com/v1beta`, reference at
//! <https://ai.google.dev/api/generate-content>): no I/O and no `worker` types.
//! The caller picks the URL with [`endpoint`], sends [`to_wire`]'s body with the
//! key in [`AUTH_HEADER`], and turns the answer back with [`from_wire`],
//! [`StreamState`] or [`map_error`].
//!
//! Decisions, where OpenAI and Gemini do not line up:
//!
//! * **Model id** is a URL path segment, percent-encoded; ids containing `/`,
//!   `?`, `#`, `\` or `..` are rejected so a client-chosen string can never
//!   change the path. A leading `models/` (Gemini's resource name) is accepted
//!   and stripped. The body never carries the model.
//! * **Roles.** `system`/`developer` messages, wherever they are, become
//!   `systemInstruction` text parts (in order). `user` → `user`, `assistant` →
//!   `model`; `tool` results become `functionResponse` parts of a `user` turn.
//!   Consecutive turns of the same role are merged (Gemini wants them
//!   alternating). Empty text is dropped (Gemini rejects empty text parts) and
//!   a turn left without parts is skipped. Message `name`s have no Gemini
//!   equivalent and are ignored.
//! * **Tool results.** The function name comes from the latest earlier
//!   assistant tool call with that `tool_call_id` (400 when there is none:
//!   Gemini matches results by name). A result whose content is a JSON object
//!   is sent as the `response` object itself; anything else is sent as
//!   `{"content": "<the text>"}`.
//! * **Tool-call ids.** Gemini usually gives none. Ids are `call_<r>_<n>`:
//!   `<r>` is taken from the completion id the caller passes (unique per
//!   response), `<n>` counts calls in the response, so ids are deterministic
//!   and never repeat across turns. A Gemini-provided `id` is kept instead. Ids
//!   are never sent back: AI Studio rejects `id` in request `functionCall` /
//!   `functionResponse` parts ("Unknown name \"id\"",
//!   googleapis/java-genai#694, google-gemini/gemini-cli#13972).
//! * **Thought signatures.** Gemini 3 attaches a `thoughtSignature` to
//!   function-call parts and answers 400 when it is not sent back with the
//!   call (<https://ai.google.dev/gemini-api/docs/thought-signatures>). OpenAI
//!   tool calls have no field for it, so it rides in the tool-call id as
//!   `<id>__thought__<signature>` (LiteLLM's convention, so histories are
//!   portable); [`to_wire`] splits it off again. Calls without a signature
//!   (e.g. history made by another provider) are sent without one: no dummy
//!   signature is invented, so such a history fails on Gemini 3 with Gemini's
//!   own 400. Signatures on text/thought parts are dropped (Gemini does not
//!   validate those).
//! * **Content parts.** `image_url` data URLs → `inlineData`; `http(s)` URLs →
//!   `fileData` only when the extension names a type Gemini reads (png, jpg,
//!   jpeg, webp, heic, heif), otherwise 400 asking for a base64 data URL.
//!   `input_audio` (wav, mp3) and `file` parts with a data URL → `inlineData`;
//!   `file_id` and other part types → 400. `detail` is ignored.
//! * **generationConfig.** `temperature`, `top_p`→`topP`,
//!   `max_completion_tokens`|`max_tokens`→`maxOutputTokens`, `stop`→
//!   `stopSequences`, `n`→`candidateCount` (each candidate becomes a choice),
//!   `seed`, `presence_penalty`, `frequency_penalty`, `logprobs`→
//!   `responseLogprobs`, `top_logprobs`→`logprobs` (results mapped to OpenAI's
//!   `logprobs.content`). `response_format` `json_object` →
//!   `responseMimeType: "application/json"`; `json_schema` → that plus
//!   `responseSchema`.
//! * **Schemas** (tool parameters and `responseSchema`) are converted to the
//!   OpenAPI 3.0 subset Gemini accepts (<https://ai.google.dev/api/caching#Schema>):
//!   local `$ref`s (`#/$defs/…`, `#/definitions/…`) are inlined (recursive
//!   schemas → 400); `type` is upper-cased; `["T","null"]` and `anyOf`/`oneOf`
//!   with a `null` branch become `nullable`; `oneOf` → `anyOf`; a one-element
//!   `allOf` is inlined and a longer one merges its members' `properties` and
//!   `required`; `const` → a one-value `enum`; enum values are stringified;
//!   `required` names without a property are dropped; `format` is kept only
//!   where Gemini accepts it (string: `enum`, `date-time`; number: `float`,
//!   `double`; integer: `int32`, `int64`). Kept keywords: `type`, `format`,
//!   `title`, `description`, `nullable`, `enum`, `properties`, `required`,
//!   `items`, `anyOf`, `default`, `example`, `minimum`, `maximum`,
//!   `minItems`, `maxItems`, `minLength`, `maxLength`, `pattern`,
//!   `minProperties`, `maxProperties`, `propertyOrdering`. Everything else is
//!   dropped, notably `additionalProperties`, `$schema`, `$id`, `strict`,
//!   `examples`, `exclusiveMinimum`/`exclusiveMaximum`, `multipleOf`,
//!   `uniqueItems`, `patternProperties`, `not`, `if`/`then`/`else` and tuple
//!   `items` arrays. Function parameters without properties are omitted
//!   ("properties: should be non-empty for OBJECT type", agno-agi/agno#2112).
//! * **`reasoning_effort`** → `thinkingConfig.thinkingBudget`, with the budgets
//!   Google's own OpenAI-compatible endpoint uses
//!   (<https://ai.google.dev/gemini-api/docs/openai>): `none` → 0 (thinking
//!   off), `minimal`/`low` → 1024, `medium` → 8192, `high` → 24576. Any effort
//!   other than `none` also sets `includeThoughts`, so thought summaries come
//!   back as `reasoning_content`.
//! * **Refused, not ignored:** non-empty `logit_bias`, legacy `functions` /
//!   `function_call`, audio output (`audio`, `modalities` with `audio`) and
//!   non-`function` tools (400). **Ignored:** `user`, `metadata`, `store`,
//!   `service_tier`, `parallel_tool_calls` (Gemini has no switch for it),
//!   `stream_options` (Gemini always reports usage; [`StreamState::finish`]
//!   always emits the usage chunk and the caller strips it when the client did
//!   not ask for it) and any other field.
//! * **Responses.** Text parts → `content`, `thought: true` parts →
//!   `reasoning_content`, `functionCall` parts → `tool_calls`; other part kinds
//!   (inline images, code execution) have no OpenAI place and are dropped.
//!   `finishReason`: `STOP` → `stop` (`tool_calls` when the candidate called
//!   functions), `MAX_TOKENS` → `length`, `SAFETY`, `RECITATION`, `BLOCKLIST`,
//!   `PROHIBITED_CONTENT`, `SPII`, `IMAGE_SAFETY`, … → `content_filter`, other
//!   reasons (`MALFORMED_FUNCTION_CALL`, `OTHER`, …) → `stop`. A prompt
//!   blocked by `promptFeedback.blockReason` (no candidates) becomes one
//!   choice with empty content and `content_filter`. Content is `null` only
//!   when there are tool calls and no text, otherwise a string (possibly
//!   empty).
//! * **Usage.** `prompt_tokens` = `promptTokenCount` + `toolUsePromptTokenCount`,
//!   `completion_tokens` = `candidatesTokenCount` + `thoughtsTokenCount`
//!   (Gemini bills thoughts as output), `cached_tokens` =
//!   `cachedContentTokenCount` (already part of `promptTokenCount`),
//!   `reasoning_tokens` = `thoughtsTokenCount`. In a stream each frame repeats
//!   the running totals; the last one wins.
//! * **Embeddings.** One `batchEmbedContents` request per call (at most 100
//!   inputs: Gemini's limit), `dimensions` → `outputDimensionality`, no
//!   `taskType`. Vectors are L2-normalised, because Gemini normalises only
//!   full-size vectors and OpenAI clients assume unit length. Gemini reports no
//!   token usage for embeddings, so `usage` is **omitted** (never invented)
//!   unless a response carries `usageMetadata.promptTokenCount`.
//! * **Errors** follow [`super::map_upstream_error`], with Gemini's quirks: a
//!   bad key is a 400 `INVALID_ARGUMENT` with reason `API_KEY_INVALID` (→ 502
//!   `upstream_auth_failed`, as are 401/403); `FAILED_PRECONDITION` (region or
//!   billing) → 502 `upstream_error`; an over-long prompt → 400
//!   `context_length_exceeded`; 429 `RESOURCE_EXHAUSTED` →
//!   `upstream_rate_limited` with `retry-after` from the header or else from
//!   `RetryInfo.retryDelay`; 503 `UNAVAILABLE` → 503 `upstream_overloaded`.
//!   Messages are scrubbed of key-shaped text, including Google's `AIza…` keys.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::GatewayError;
use crate::openai::{
    AssistantMessage, ChatChunk, ChatCompletion, ChatRequest, Choice, ChunkChoice,
    CompletionTokensDetails, Content, ContentPart, Delta, FunctionCall, FunctionCallDelta,
    ImageUrl, Message, PromptTokensDetails, ResponseFormat, Stop, Tool, ToolCall, ToolCallDelta,
    ToolChoice, UsageBody,
};
use crate::secret::scrub_key_like;
use crate::sse::SseFrame;

/// Header carrying the key.
pub const AUTH_HEADER: &str = "x-goog-api-key";

/// AI Studio's Gemini API, up to and including the version segment.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

/// Joins a tool-call id and the Gemini thought signature it carries.
pub const THOUGHT_SIGNATURE_SEPARATOR: &str = "__thought__";

/// Names the provider in errors raised while reading a stream (the stream
/// state does not know the configured provider name).
const PROVIDER_KIND: &str = "gemini";

/// `batchEmbedContents` accepts at most this many requests
/// ("at most 100 requests can be in one batch").
const MAX_EMBED_BATCH: usize = 100;

/// Nesting limit for schema conversion (schemas come from clients).
const MAX_SCHEMA_DEPTH: usize = 32;

/// Upstream text passed on to clients is cut to this many characters.
const MAX_MESSAGE_CHARS: usize = 500;

// ------------------------------------------------------------------ URLs

/// URL for a chat call under the base URL (base like
/// `"https://generativelanguage.googleapis.com/v1beta"`):
/// `{base}/models/{model}:generateContent` or
/// `{base}/models/{model}:streamGenerateContent?alt=sse`.
/// The model id is percent-encoded as a path segment; ids that could alter the
/// path (`/`, `?`, `#`, `\`, `..`) are rejected.
pub fn endpoint(base_url: &str, model: &str, stream: bool) -> Result<String, GatewayError> {
    let base = base_url.trim_end_matches('/');
    let model = model_segment(model)?;
    Ok(if stream {
        format!("{base}/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("{base}/models/{model}:generateContent")
    })
}

/// `{base}/models/{model}:batchEmbedContents`.
pub fn embeddings_endpoint(base_url: &str, model: &str) -> Result<String, GatewayError> {
    let base = base_url.trim_end_matches('/');
    let model = model_segment(model)?;
    Ok(format!("{base}/models/{model}:batchEmbedContents"))
}

/// The model id as one percent-encoded path segment.
fn model_segment(model: &str) -> Result<String, GatewayError> {
    let id = model.strip_prefix("models/").unwrap_or(model);
    let alters_path = id.is_empty()
        || id == "."
        || id.contains(['/', '?', '#', '\\'])
        || id.contains("..")
        || id.chars().any(char::is_control);
    if alters_path {
        return Err(GatewayError::invalid_param(
            "model",
            "Invalid Gemini model id: it must be one path segment \
             (no '/', '?', '#', '\\' or '..'), e.g. 'gemini-2.5-flash'.",
        ));
    }
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

// ------------------------------------------------------- request wire types

/// `GenerateContentRequest`, borrowing from the client's request.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest<'a> {
    contents: Vec<WireContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation_config: Option<GenerationConfig<'a>>,
}

#[derive(Debug, Serialize)]
struct WireContent<'a> {
    role: &'static str,
    parts: Vec<ReqPart<'a>>,
}

#[derive(Debug, Serialize)]
struct SystemInstruction<'a> {
    parts: Vec<ReqPart<'a>>,
}

/// One request `Part`: exactly one data field is set, plus an optional
/// signature next to a `functionCall`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReqPart<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inline_data: Option<Blob<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_data: Option<FileData<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<ReqFunctionCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_response: Option<ReqFunctionResponse<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thought_signature: Option<&'a str>,
}

impl<'a> ReqPart<'a> {
    fn text(text: &'a str) -> Self {
        Self {
            text: Some(text),
            ..Self::default()
        }
    }

    fn blob(mime_type: &'a str, data: &'a str) -> Self {
        Self {
            inline_data: Some(Blob { mime_type, data }),
            ..Self::default()
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Blob<'a> {
    mime_type: &'a str,
    data: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileData<'a> {
    mime_type: &'static str,
    file_uri: &'a str,
}

#[derive(Debug, Serialize)]
struct ReqFunctionCall<'a> {
    name: &'a str,
    args: Value,
}

#[derive(Debug, Serialize)]
struct ReqFunctionResponse<'a> {
    name: &'a str,
    response: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WireTool<'a> {
    function_declarations: Vec<FunctionDeclaration<'a>>,
}

#[derive(Debug, Serialize)]
struct FunctionDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    function_calling_config: FunctionCallingConfig<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig<'a> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_function_names: Vec<&'a str>,
}

#[derive(Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<ThinkingConfig>,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    thinking_budget: u32,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    include_thoughts: bool,
}

// ------------------------------------------------------------------ to_wire

/// The `generateContent` body for `req`. The model goes in the URL
/// ([`endpoint`]), and the body is the same whether or not the call streams.
pub fn to_wire(req: &ChatRequest, _stream: bool) -> Result<Value, GatewayError> {
    reject_unsupported(req)?;
    let (system, contents) = contents(&req.messages)?;
    let tools = tools(req.tools.as_deref())?;
    let tool_config = if tools.is_empty() {
        None
    } else {
        tool_config(req.tool_choice.as_ref())?
    };
    let generation_config = generation_config(req)?;
    let wire = WireRequest {
        contents,
        system_instruction: system,
        tools,
        tool_config,
        generation_config: (generation_config != GenerationConfig::default())
            .then_some(generation_config),
    };
    serde_json::to_value(&wire).map_err(|_| GatewayError::Internal)
}

/// Fields Gemini cannot honour and that would change the answer if dropped.
fn reject_unsupported(req: &ChatRequest) -> Result<(), GatewayError> {
    if req.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(GatewayError::invalid_param(
            "logit_bias",
            "Gemini does not support 'logit_bias'.",
        ));
    }
    for legacy in ["functions", "function_call"] {
        if req.extra.get(legacy).is_some_and(|v| !v.is_null()) {
            return Err(GatewayError::invalid_param(
                legacy,
                format!("'{legacy}' is deprecated and not translated for Gemini; use 'tools' and 'tool_choice'."),
            ));
        }
    }
    let wants_audio = req.extra.get("audio").is_some_and(|v| !v.is_null())
        || req
            .extra
            .get("modalities")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|x| x == "audio"));
    if wants_audio {
        return Err(GatewayError::invalid_param(
            "modalities",
            "Audio output is not supported through the Gemini translation.",
        ));
    }
    Ok(())
}

type Turns<'a> = (Option<SystemInstruction<'a>>, Vec<WireContent<'a>>);

fn contents(messages: &[Message]) -> Result<Turns<'_>, GatewayError> {
    let mut system = Vec::new();
    let mut turns: Vec<WireContent<'_>> = Vec::new();
    // tool_call_id -> function name, latest assistant call wins.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        match m.role.as_str() {
            "system" | "developer" => system.extend(text_parts(m.content.as_ref(), i)?),
            "user" => push_turn(&mut turns, "user", user_parts(m.content.as_ref(), i)?),
            "assistant" => {
                let mut parts = assistant_text_parts(m, i)?;
                for call in m.tool_calls.iter().flatten() {
                    call_names.insert(call.id.as_str(), call.function.name.as_str());
                    parts.push(function_call_part(call, i)?);
                }
                push_turn(&mut turns, "model", parts);
            }
            "tool" => {
                let id = m.tool_call_id.as_deref().ok_or_else(|| {
                    bad_message(i, "a 'tool' message needs 'tool_call_id'.".to_owned())
                })?;
                let name = call_names.get(id).copied().ok_or_else(|| {
                    bad_message(
                        i,
                        "its 'tool_call_id' matches no earlier assistant tool call; \
                         Gemini needs the function name of every tool result."
                            .to_owned(),
                    )
                })?;
                let text = tool_text(m.content.as_ref(), i)?;
                let part = ReqPart {
                    function_response: Some(ReqFunctionResponse {
                        name,
                        response: tool_response(&text),
                    }),
                    ..ReqPart::default()
                };
                push_turn(&mut turns, "user", vec![part]);
            }
            other => {
                return Err(bad_message(
                    i,
                    format!("role '{other}' is not supported by the Gemini translation."),
                ))
            }
        }
    }
    if turns.is_empty() {
        return Err(GatewayError::invalid_param(
            "messages",
            "Gemini needs at least one non-empty user or assistant message.",
        ));
    }
    let system = (!system.is_empty()).then_some(SystemInstruction { parts: system });
    Ok((system, turns))
}

fn bad_message(i: usize, what: String) -> GatewayError {
    GatewayError::invalid_param("messages", format!("messages[{i}]: {what}"))
}

/// Appends `parts` as a turn, merging into the previous turn of the same role.
fn push_turn<'a>(turns: &mut Vec<WireContent<'a>>, role: &'static str, parts: Vec<ReqPart<'a>>) {
    if parts.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => last.parts.extend(parts),
        _ => turns.push(WireContent { role, parts }),
    }
}

/// Text-only content (system messages).
fn text_parts(content: Option<&Content>, i: usize) -> Result<Vec<ReqPart<'_>>, GatewayError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(s)) => Ok(non_empty_text(s).into_iter().collect()),
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text { text } => non_empty_text(text).map(Ok),
                _ => Some(Err(bad_message(
                    i,
                    "system and developer messages may only contain text for Gemini.".to_owned(),
                ))),
            })
            .collect(),
    }
}

fn non_empty_text(s: &str) -> Option<ReqPart<'_>> {
    (!s.is_empty()).then(|| ReqPart::text(s))
}

fn assistant_text_parts(m: &Message, i: usize) -> Result<Vec<ReqPart<'_>>, GatewayError> {
    let mut parts = Vec::new();
    match &m.content {
        None => {}
        Some(Content::Text(s)) => parts.extend(non_empty_text(s)),
        Some(Content::Parts(items)) => {
            for p in items {
                match p {
                    ContentPart::Text { text } => parts.extend(non_empty_text(text)),
                    ContentPart::Other(v) if part_type(v) == Some("refusal") => {
                        parts.extend(
                            v.get("refusal")
                                .and_then(Value::as_str)
                                .and_then(non_empty_text),
                        );
                    }
                    _ => {
                        return Err(bad_message(
                            i,
                            "assistant messages may only contain text and tool calls for Gemini."
                                .to_owned(),
                        ))
                    }
                }
            }
        }
    }
    if parts.is_empty() {
        parts.extend(m.refusal.as_deref().and_then(non_empty_text));
    }
    Ok(parts)
}

fn part_type(v: &Value) -> Option<&str> {
    v.get("type").and_then(Value::as_str)
}

fn user_parts(content: Option<&Content>, i: usize) -> Result<Vec<ReqPart<'_>>, GatewayError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(s)) => Ok(non_empty_text(s).into_iter().collect()),
        Some(Content::Parts(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                match p {
                    ContentPart::Text { text } => out.extend(non_empty_text(text)),
                    ContentPart::ImageUrl { image_url } => out.push(image_part(image_url, i)?),
                    ContentPart::Other(v) => out.push(other_part(v, i)?),
                }
            }
            Ok(out)
        }
    }
}

fn image_part(image: &ImageUrl, i: usize) -> Result<ReqPart<'_>, GatewayError> {
    if let Some((mime, data)) = image.as_data() {
        if mime.is_empty() || data.is_empty() {
            return Err(bad_message(
                i,
                "the image data URL has no type or no data.".to_owned(),
            ));
        }
        return Ok(ReqPart::blob(mime, data));
    }
    let url = image.url.as_str();
    let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("http" | "https") => match mime_from_extension(url) {
            Some(mime_type) => Ok(ReqPart {
                file_data: Some(FileData {
                    mime_type,
                    file_uri: url,
                }),
                ..ReqPart::default()
            }),
            None => Err(bad_message(
                i,
                "Gemini needs the image type, which this URL's extension does not give \
                 (png, jpg, jpeg, webp, heic, heif); send the image base64-encoded as a \
                 'data:<mime>;base64,…' URL instead."
                    .to_owned(),
            )),
        },
        Some("data") => Err(bad_message(
            i,
            "image data URLs must be base64 ('data:<mime>;base64,…').".to_owned(),
        )),
        _ => Err(bad_message(
            i,
            "image URLs must be https:// URLs or base64 data URLs.".to_owned(),
        )),
    }
}

/// Gemini's image types (<https://ai.google.dev/gemini-api/docs/image-understanding>),
/// by the URL path's extension.
fn mime_from_extension(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let (_, rest) = path.split_once("://")?;
    let (_, path) = rest.split_once('/')?;
    let last = path.rsplit('/').next().unwrap_or_default();
    let (_, ext) = last.rsplit_once('.')?;
    match ext.to_ascii_lowercase().as_str() {
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "webp" => Some("image/webp"),
        "heic" => Some("image/heic"),
        "heif" => Some("image/heif"),
        _ => None,
    }
}

/// `(mime, data)` of `data:<mime>;base64,<data>`.
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    (!mime.is_empty() && !data.is_empty()).then_some((mime, data))
}

/// `input_audio` and `file` parts; anything else is refused by name.
fn other_part(v: &Value, i: usize) -> Result<ReqPart<'_>, GatewayError> {
    let kind = part_type(v).unwrap_or("(untyped)");
    match kind {
        "input_audio" => {
            let audio = v.get("input_audio");
            let data = audio.and_then(|a| a.get("data")).and_then(Value::as_str);
            let format = audio.and_then(|a| a.get("format")).and_then(Value::as_str);
            let mime = match format {
                Some("wav") => "audio/wav",
                Some("mp3") => "audio/mp3",
                _ => {
                    return Err(bad_message(
                        i,
                        "input_audio format must be 'wav' or 'mp3'.".to_owned(),
                    ))
                }
            };
            match data.filter(|d| !d.is_empty()) {
                Some(data) => Ok(ReqPart::blob(mime, data)),
                None => Err(bad_message(i, "input_audio has no data.".to_owned())),
            }
        }
        "file" => {
            let file = v.get("file");
            let data_url = file
                .and_then(|f| f.get("file_data"))
                .and_then(Value::as_str)
                .and_then(parse_data_url);
            match data_url {
                Some((mime, data)) => Ok(ReqPart::blob(mime, data)),
                None => Err(bad_message(
                    i,
                    "file parts must carry 'file_data' as a base64 data URL for Gemini \
                     ('file_id' is not supported)."
                        .to_owned(),
                )),
            }
        }
        other => Err(bad_message(
            i,
            format!("content part type '{other}' is not supported by the Gemini translation."),
        )),
    }
}

/// The text of a `tool` message.
fn tool_text(content: Option<&Content>, i: usize) -> Result<String, GatewayError> {
    match content {
        None => Ok(String::new()),
        Some(Content::Text(s)) => Ok(s.clone()),
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(|p| match p {
                ContentPart::Text { text } => Ok(text.as_str()),
                _ => Err(bad_message(
                    i,
                    "tool results may only contain text for Gemini.".to_owned(),
                )),
            })
            .collect(),
    }
}

/// A JSON object result is the response itself; anything else is wrapped.
fn tool_response(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => Value::Object(o),
        _ => json!({ "content": text }),
    }
}

fn function_call_part(call: &ToolCall, i: usize) -> Result<ReqPart<'_>, GatewayError> {
    if call.kind != "function" {
        return Err(bad_message(
            i,
            format!(
                "tool call type '{}' is not supported; only 'function'.",
                call.kind
            ),
        ));
    }
    let raw = call.function.arguments.trim();
    let args = if raw.is_empty() {
        Value::Object(Map::new())
    } else {
        match serde_json::from_str::<Value>(raw) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return Err(bad_message(
                    i,
                    format!(
                        "the arguments of tool call '{}' must be a JSON object.",
                        call.function.name
                    ),
                ))
            }
        }
    };
    let signature = call
        .id
        .split_once(THOUGHT_SIGNATURE_SEPARATOR)
        .map(|(_, sig)| sig)
        .filter(|sig| !sig.is_empty());
    Ok(ReqPart {
        function_call: Some(ReqFunctionCall {
            name: &call.function.name,
            args,
        }),
        thought_signature: signature,
        ..ReqPart::default()
    })
}

fn tools(tools: Option<&[Tool]>) -> Result<Vec<WireTool<'_>>, GatewayError> {
    let Some(tools) = tools.filter(|t| !t.is_empty()) else {
        return Ok(Vec::new());
    };
    let mut declarations = Vec::with_capacity(tools.len());
    for t in tools {
        if t.kind != "function" {
            return Err(GatewayError::invalid_param(
                "tools",
                format!(
                    "Tool type '{}' is not supported by the Gemini translation; only 'function'.",
                    t.kind
                ),
            ));
        }
        let parameters = match &t.function.parameters {
            Some(p) => function_parameters(p)?,
            None => None,
        };
        declarations.push(FunctionDeclaration {
            name: &t.function.name,
            description: t.function.description.as_deref(),
            parameters,
        });
    }
    Ok(vec![WireTool {
        function_declarations: declarations,
    }])
}

/// Converted parameters, or `None` for a function without properties (Gemini
/// rejects an OBJECT schema with empty `properties`).
fn function_parameters(schema: &Value) -> Result<Option<Value>, GatewayError> {
    let mut converted = to_gemini_schema(schema, "tools")?;
    let Some(obj) = converted.as_object_mut() else {
        return Ok(None);
    };
    if !obj.get("properties").is_some_and(Value::is_object) {
        return Ok(None);
    }
    obj.entry("type").or_insert_with(|| json!("OBJECT"));
    Ok(Some(converted))
}

fn tool_config(choice: Option<&ToolChoice>) -> Result<Option<ToolConfig<'_>>, GatewayError> {
    let (mode, allowed) = match choice {
        None => return Ok(None),
        Some(ToolChoice::Mode(m)) => match m.as_str() {
            "auto" => ("AUTO", Vec::new()),
            "none" => ("NONE", Vec::new()),
            "required" => ("ANY", Vec::new()),
            _ => {
                return Err(GatewayError::invalid_param(
                    "tool_choice",
                    "'tool_choice' must be 'none', 'auto', 'required' or a named function.",
                ))
            }
        },
        Some(ToolChoice::Named(named)) => ("ANY", vec![named.function.name.as_str()]),
    };
    Ok(Some(ToolConfig {
        function_calling_config: FunctionCallingConfig {
            mode,
            allowed_function_names: allowed,
        },
    }))
}

fn generation_config(req: &ChatRequest) -> Result<GenerationConfig<'_>, GatewayError> {
    let candidate_count = match req.n {
        None | Some(1) => None,
        Some(0) => return Err(GatewayError::invalid_param("n", "'n' must be at least 1.")),
        Some(n) => Some(n),
    };
    let stop_sequences = match &req.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.as_str()],
        Some(Stop::Many(v)) => v.iter().map(String::as_str).collect(),
    };
    let top_logprobs = req.top_logprobs.filter(|&n| n > 0);
    let response_logprobs = (req.logprobs == Some(true) || top_logprobs.is_some()).then_some(true);
    let (response_mime_type, response_schema) = match &req.response_format {
        None => (None, None),
        Some(f) => response_format(f)?,
    };
    Ok(GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        max_output_tokens: req.max_output_tokens(),
        stop_sequences,
        candidate_count,
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        response_logprobs,
        logprobs: top_logprobs,
        response_mime_type,
        response_schema,
        thinking_config: thinking_config(req.reasoning_effort.as_deref())?,
    })
}

type MimeAndSchema = (Option<&'static str>, Option<Value>);

fn response_format(f: &ResponseFormat) -> Result<MimeAndSchema, GatewayError> {
    match f.kind.as_str() {
        "text" => Ok((None, None)),
        "json_object" => Ok((Some("application/json"), None)),
        "json_schema" => {
            let schema = match f.json_schema.as_ref().and_then(|s| s.schema.as_ref()) {
                Some(s) => Some(to_gemini_schema(s, "response_format")?),
                None => None,
            };
            Ok((Some("application/json"), schema))
        }
        other => Err(GatewayError::invalid_param(
            "response_format",
            format!("response_format type '{other}' is not supported by the Gemini translation."),
        )),
    }
}

/// Budgets as in <https://ai.google.dev/gemini-api/docs/openai>.
fn thinking_config(effort: Option<&str>) -> Result<Option<ThinkingConfig>, GatewayError> {
    let budget = match effort {
        None => return Ok(None),
        Some("none") => 0,
        Some("minimal" | "low") => 1024,
        Some("medium") => 8192,
        Some("high") => 24576,
        Some(_) => {
            return Err(GatewayError::invalid_param(
                "reasoning_effort",
                "'reasoning_effort' must be 'none', 'minimal', 'low', 'medium' or 'high'.",
            ))
        }
    };
    Ok(Some(ThinkingConfig {
        thinking_budget: budget,
        include_thoughts: budget > 0,
    }))
}

// ------------------------------------------------------------------ schemas

/// JSON Schema → Gemini's OpenAPI 3.0 subset (see the module docs).
fn to_gemini_schema(schema: &Value, param: &str) -> Result<Value, GatewayError> {
    let defs = schema
        .get("$defs")
        .or_else(|| schema.get("definitions"))
        .and_then(Value::as_object);
    let mut converter = SchemaConverter {
        defs,
        param,
        resolving: Vec::new(),
    };
    converter.convert(schema, 0)
}

struct SchemaConverter<'a> {
    defs: Option<&'a Map<String, Value>>,
    param: &'a str,
    /// `$ref`s being inlined, to detect recursion.
    resolving: Vec<&'a str>,
}

/// Keywords copied unchanged.
const SCHEMA_KEEP: &[&str] = &[
    "title",
    "description",
    "nullable",
    "default",
    "example",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "minProperties",
    "maxProperties",
    "propertyOrdering",
];

impl<'a> SchemaConverter<'a> {
    fn error(&self, what: &str) -> GatewayError {
        GatewayError::invalid_param(
            self.param,
            format!("Unsupported schema for Gemini: {what}."),
        )
    }

    fn convert(&mut self, schema: &'a Value, depth: usize) -> Result<Value, GatewayError> {
        if depth > MAX_SCHEMA_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        let Some(obj) = schema.as_object() else {
            // `true` / `false` schemas: no constraint Gemini can express.
            return Ok(Value::Object(Map::new()));
        };
        if let Some(reference) = obj.get("$ref").and_then(Value::as_str) {
            return self.resolve(reference, depth);
        }
        let mut out = Map::new();
        for key in SCHEMA_KEEP {
            if let Some(v) = obj.get(*key) {
                out.insert((*key).to_owned(), v.clone());
            }
        }
        // type (a list of types may carry "null").
        match obj.get("type") {
            Some(Value::String(t)) => set_type(&mut out, t),
            Some(Value::Array(types)) => {
                let mut named: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
                if named.contains(&"null") {
                    out.insert("nullable".to_owned(), Value::Bool(true));
                    named.retain(|t| *t != "null");
                }
                match named.as_slice() {
                    [] => {}
                    [one] => set_type(&mut out, one),
                    many => {
                        let variants = many
                            .iter()
                            .map(|t| json!({ "type": t.to_ascii_uppercase() }));
                        out.insert("anyOf".to_owned(), Value::Array(variants.collect()));
                    }
                }
            }
            _ => {}
        }
        if let Some(format) = obj.get("format").and_then(Value::as_str) {
            let kept = match out.get("type").and_then(Value::as_str) {
                Some("STRING") => matches!(format, "enum" | "date-time"),
                Some("NUMBER") => matches!(format, "float" | "double"),
                Some("INTEGER") => matches!(format, "int32" | "int64"),
                _ => false,
            };
            if kept {
                out.insert("format".to_owned(), json!(format));
            }
        }
        let mut values: Option<&Vec<Value>> = obj.get("enum").and_then(Value::as_array);
        let single;
        if values.is_none() {
            if let Some(c) = obj.get("const") {
                single = vec![c.clone()];
                values = Some(&single);
            }
        }
        if let Some(values) = values {
            let mut strings = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    Value::Null => {
                        out.insert("nullable".to_owned(), Value::Bool(true));
                    }
                    Value::String(s) => strings.push(Value::String(s.clone())),
                    other => strings.push(Value::String(other.to_string())),
                }
            }
            out.entry("type").or_insert_with(|| json!("STRING"));
            out.insert("enum".to_owned(), Value::Array(strings));
        }
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            let mut converted = Map::new();
            for (name, sub) in props {
                converted.insert(name.clone(), self.convert(sub, depth + 1)?);
            }
            if !converted.is_empty() {
                out.insert("properties".to_owned(), Value::Object(converted));
            }
        }
        if let Some(items) = obj.get("items").filter(|i| i.is_object()) {
            let converted = self.convert(items, depth + 1)?;
            out.insert("items".to_owned(), converted);
        }
        let branches = obj
            .get("anyOf")
            .or_else(|| obj.get("oneOf"))
            .and_then(Value::as_array);
        if let Some(branches) = branches {
            self.any_of(&mut out, branches, depth)?;
        }
        if let Some(all) = obj.get("allOf").and_then(Value::as_array) {
            self.all_of(&mut out, all, depth)?;
        }
        if let Some(required) = obj.get("required").and_then(Value::as_array) {
            let props = out.get("properties").and_then(Value::as_object);
            let kept: Vec<Value> = required
                .iter()
                .filter(|r| {
                    r.as_str()
                        .is_some_and(|r| props.is_some_and(|p| p.contains_key(r)))
                })
                .cloned()
                .collect();
            if !kept.is_empty() {
                out.insert("required".to_owned(), Value::Array(kept));
            }
        }
        Ok(Value::Object(out))
    }

    fn resolve(&mut self, reference: &'a str, depth: usize) -> Result<Value, GatewayError> {
        let name = reference
            .strip_prefix("#/$defs/")
            .or_else(|| reference.strip_prefix("#/definitions/"));
        let target = name.and_then(|n| self.defs.and_then(|d| d.get(n)));
        let Some(target) = target else {
            return Err(self.error("only local '#/$defs/…' references can be resolved"));
        };
        if self.resolving.contains(&reference) {
            return Err(self.error("recursive schemas cannot be expressed"));
        }
        self.resolving.push(reference);
        let converted = self.convert(target, depth + 1);
        self.resolving.pop();
        converted
    }

    /// `anyOf`/`oneOf`: a `null` branch becomes `nullable`; a single remaining
    /// branch is merged into the schema.
    fn any_of(
        &mut self,
        out: &mut Map<String, Value>,
        branches: &'a [Value],
        depth: usize,
    ) -> Result<(), GatewayError> {
        let mut converted = Vec::with_capacity(branches.len());
        for b in branches {
            if b.get("type").and_then(Value::as_str) == Some("null") {
                out.insert("nullable".to_owned(), Value::Bool(true));
                continue;
            }
            converted.push(self.convert(b, depth + 1)?);
        }
        if let [only] = converted.as_slice() {
            if let Some(fields) = only.as_object() {
                for (k, v) in fields {
                    out.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        } else if !converted.is_empty() {
            out.insert("anyOf".to_owned(), Value::Array(converted));
        }
        Ok(())
    }

    /// `allOf`: members' `properties` and `required` are merged (other members'
    /// keywords fill in where the schema has none).
    fn all_of(
        &mut self,
        out: &mut Map<String, Value>,
        members: &'a [Value],
        depth: usize,
    ) -> Result<(), GatewayError> {
        for m in members {
            let converted = self.convert(m, depth + 1)?;
            let Value::Object(fields) = converted else {
                continue;
            };
            for (k, v) in fields {
                match (k.as_str(), out.get_mut(&k), v) {
                    ("properties", Some(Value::Object(have)), Value::Object(add)) => {
                        have.extend(add);
                    }
                    ("required", Some(Value::Array(have)), Value::Array(add)) => {
                        have.extend(add);
                    }
                    (_, Some(_), _) => {}
                    (_, None, v) => {
                        out.insert(k, v);
                    }
                }
            }
        }
        Ok(())
    }
}

fn set_type(out: &mut Map<String, Value>, t: &str) {
    if t == "null" {
        out.insert("nullable".to_owned(), Value::Bool(true));
    } else {
        out.insert("type".to_owned(), Value::String(t.to_ascii_uppercase()));
    }
}

// ------------------------------------------------------ response wire types

/// `GenerateContentResponse` (also each stream frame), or an error body.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireResponse {
    candidates: Vec<Candidate>,
    prompt_feedback: Option<PromptFeedback>,
    usage_metadata: Option<UsageMetadata>,
    error: Option<WireError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Candidate {
    content: Option<CandidateContent>,
    finish_reason: Option<String>,
    index: Option<u32>,
    logprobs_result: Option<LogprobsResult>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CandidateContent {
    parts: Vec<RespPart>,
}

/// A response part. Kinds other than text and function calls (inline images,
/// executable code, …) deserialize to an empty part and are dropped.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RespPart {
    text: Option<String>,
    thought: bool,
    thought_signature: Option<String>,
    function_call: Option<RespFunctionCall>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RespFunctionCall {
    id: Option<String>,
    name: String,
    args: Option<Value>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: u64,
    candidates_token_count: u64,
    thoughts_token_count: u64,
    cached_content_token_count: u64,
    tool_use_prompt_token_count: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PromptFeedback {
    block_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct LogprobsResult {
    top_candidates: Vec<TopCandidates>,
    chosen_candidates: Vec<LogprobCandidate>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TopCandidates {
    candidates: Vec<LogprobCandidate>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct LogprobCandidate {
    token: String,
    log_probability: f64,
}

/// Google's error body: `{"error":{"code","message","status","details"}}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireError {
    message: String,
    status: String,
    details: Vec<Value>,
}

// ---------------------------------------------------------------- from_wire

/// A `generateContent` response → `chat.completion`. `id`, `created` and
/// `model` are the gateway's (`id` also seeds generated tool-call ids).
pub fn from_wire(
    body: &[u8],
    id: &str,
    created: u64,
    model: &str,
) -> Result<ChatCompletion, GatewayError> {
    let resp: WireResponse = serde_json::from_slice(body).map_err(|_| invalid_response())?;
    if let Some(e) = &resp.error {
        return Err(error_frame(e));
    }
    let mut ids = CallIds::new(id);
    let mut candidates = resp.candidates;
    candidates.sort_by_key(|c| c.index.unwrap_or(0));
    let choices = if candidates.is_empty() {
        if blocked(resp.prompt_feedback.as_ref()).is_none() {
            return Err(invalid_response());
        }
        vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant".to_owned(),
                content: Some(String::new()),
                ..AssistantMessage::default()
            },
            logprobs: None,
            finish_reason: Some("content_filter".to_owned()),
        }]
    } else {
        candidates
            .into_iter()
            .enumerate()
            .map(|(pos, c)| choice(c, pos, &mut ids))
            .collect()
    };
    Ok(ChatCompletion {
        id: id.to_owned(),
        object: "chat.completion".to_owned(),
        created,
        model: model.to_owned(),
        choices,
        usage: resp.usage_metadata.as_ref().map(usage_body),
    })
}

fn choice(c: Candidate, pos: usize, ids: &mut CallIds) -> Choice {
    let parts = c.content.map(|c| c.parts).unwrap_or_default();
    let out = Output::from_parts(parts, ids);
    let has_calls = !out.calls.is_empty();
    let content = if out.text.is_empty() && has_calls {
        None
    } else {
        Some(out.text)
    };
    Choice {
        index: c
            .index
            .unwrap_or_else(|| u32::try_from(pos).unwrap_or(u32::MAX)),
        message: AssistantMessage {
            role: "assistant".to_owned(),
            content,
            tool_calls: has_calls.then_some(out.calls),
            refusal: None,
            reasoning_content: (!out.reasoning.is_empty()).then_some(out.reasoning),
        },
        logprobs: c.logprobs_result.as_ref().map(logprobs),
        finish_reason: Some(
            finish_reason(c.finish_reason.as_deref().unwrap_or("STOP"), has_calls).to_owned(),
        ),
    }
}

/// What one candidate's parts say.
struct Output {
    text: String,
    reasoning: String,
    calls: Vec<ToolCall>,
}

impl Output {
    fn from_parts(parts: Vec<RespPart>, ids: &mut CallIds) -> Self {
        let mut out = Self {
            text: String::new(),
            reasoning: String::new(),
            calls: Vec::new(),
        };
        for p in parts {
            if let Some(call) = p.function_call {
                let arguments = match call.args {
                    Some(args @ Value::Object(_)) => args.to_string(),
                    _ => "{}".to_owned(),
                };
                out.calls.push(ToolCall {
                    id: ids.next(call.id, p.thought_signature),
                    kind: "function".to_owned(),
                    function: FunctionCall {
                        name: call.name,
                        arguments,
                    },
                });
            } else if let Some(text) = p.text {
                if p.thought {
                    out.reasoning.push_str(&text);
                } else {
                    out.text.push_str(&text);
                }
            }
        }
        out
    }
}

/// Tool-call ids for one response: Gemini's id if given, else `call_<r>_<n>`,
/// with the thought signature appended after [`THOUGHT_SIGNATURE_SEPARATOR`].
#[derive(Debug)]
struct CallIds {
    prefix: String,
    next: u32,
}

impl CallIds {
    fn new(completion_id: &str) -> Self {
        let base = completion_id
            .strip_prefix("chatcmpl-")
            .unwrap_or(completion_id);
        let alnum: Vec<char> = base.chars().filter(char::is_ascii_alphanumeric).collect();
        let tail: String = alnum.iter().skip(alnum.len().saturating_sub(24)).collect();
        Self {
            prefix: format!("call_{tail}_"),
            next: 0,
        }
    }

    fn next(&mut self, gemini_id: Option<String>, signature: Option<String>) -> String {
        let n = self.next;
        self.next = self.next.saturating_add(1);
        let mut id = gemini_id
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| format!("{}{n}", self.prefix));
        if let Some(sig) = signature.filter(|s| !s.is_empty()) {
            id.push_str(THOUGHT_SIGNATURE_SEPARATOR);
            id.push_str(&sig);
        }
        id
    }
}

fn finish_reason(reason: &str, has_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ if has_calls => "tool_calls",
        _ => "stop",
    }
}

fn blocked(feedback: Option<&PromptFeedback>) -> Option<&str> {
    feedback.and_then(|f| f.block_reason.as_deref())
}

fn usage_body(u: &UsageMetadata) -> UsageBody {
    let prompt = u
        .prompt_token_count
        .saturating_add(u.tool_use_prompt_token_count);
    let completion = u
        .candidates_token_count
        .saturating_add(u.thoughts_token_count);
    UsageBody {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: u.cached_content_token_count,
        }),
        completion_tokens_details: Some(CompletionTokensDetails {
            reasoning_tokens: u.thoughts_token_count,
        }),
    }
}

/// `logprobsResult` → OpenAI's `{"content":[{token, logprob, bytes, top_logprobs}]}`.
fn logprobs(r: &LogprobsResult) -> Value {
    let entry = |c: &LogprobCandidate| {
        json!({
            "token": c.token,
            "logprob": c.log_probability,
            "bytes": c.token.as_bytes(),
        })
    };
    let content: Vec<Value> = r
        .chosen_candidates
        .iter()
        .enumerate()
        .map(|(i, chosen)| {
            let top: Vec<Value> = r
                .top_candidates
                .get(i)
                .map(|t| t.candidates.iter().map(entry).collect())
                .unwrap_or_default();
            let mut e = entry(chosen);
            if let Some(obj) = e.as_object_mut() {
                obj.insert("top_logprobs".to_owned(), Value::Array(top));
            }
            e
        })
        .collect();
    json!({ "content": content, "refusal": null })
}

fn invalid_response() -> GatewayError {
    GatewayError::UpstreamInvalidResponse {
        provider: PROVIDER_KIND.to_owned(),
    }
}

/// An error object where a response was expected (stream frame or 2xx body).
fn error_frame(e: &WireError) -> GatewayError {
    let detail = clean(&e.message);
    GatewayError::Upstream {
        provider: PROVIDER_KIND.to_owned(),
        status: 502,
        message: if detail.is_empty() {
            format!("Provider '{PROVIDER_KIND}' reported an error.")
        } else {
            format!("Provider '{PROVIDER_KIND}' reported an error: {detail}")
        },
        code: "upstream_error",
        retry_after: None,
    }
}

// ------------------------------------------------------------------ streams

/// Turns `streamGenerateContent?alt=sse` frames (each a full
/// `GenerateContentResponse`) into `chat.completion.chunk`s.
#[derive(Debug)]
pub struct StreamState {
    id: String,
    created: u64,
    model: String,
    ids: CallIds,
    candidates: BTreeMap<u32, CandidateState>,
    usage: Option<UsageMetadata>,
    finished: bool,
}

#[derive(Debug, Default)]
struct CandidateState {
    role_sent: bool,
    tool_calls: u32,
    finish: Option<&'static str>,
}

impl StreamState {
    pub fn new(id: String, created: u64, model: String) -> Self {
        let ids = CallIds::new(&id);
        Self {
            id,
            created,
            model,
            ids,
            candidates: BTreeMap::new(),
            usage: None,
            finished: false,
        }
    }

    /// One SSE frame (a full GenerateContentResponse JSON) → zero or more
    /// OpenAI chunks; `Err` for an error object or an unparseable frame.
    /// Frames without data (comments, keep-alives) give no chunks.
    pub fn on_frame(&mut self, frame: &SseFrame) -> Result<Vec<ChatChunk>, GatewayError> {
        let Some(data) = frame.data.as_deref().map(str::trim) else {
            return Ok(Vec::new());
        };
        if data.is_empty() || data == "[DONE]" {
            return Ok(Vec::new());
        }
        let resp: WireResponse = serde_json::from_str(data).map_err(|_| invalid_response())?;
        if let Some(e) = &resp.error {
            return Err(error_frame(e));
        }
        if let Some(u) = resp.usage_metadata {
            self.usage = Some(u);
        }
        let mut chunks = Vec::new();
        if resp.candidates.is_empty() {
            if blocked(resp.prompt_feedback.as_ref()).is_some() {
                let state = self.candidates.entry(0).or_default();
                if state.finish.is_none() {
                    state.finish = Some("content_filter");
                    let delta = Delta {
                        role: (!state.role_sent).then(|| "assistant".to_owned()),
                        content: Some(String::new()),
                        ..Delta::default()
                    };
                    state.role_sent = true;
                    chunks.push(self.chunk(0, delta, None, None));
                    chunks.push(self.chunk(0, Delta::default(), Some("content_filter"), None));
                }
            }
            return Ok(chunks);
        }
        for (pos, c) in resp.candidates.into_iter().enumerate() {
            let index = c
                .index
                .unwrap_or_else(|| u32::try_from(pos).unwrap_or(u32::MAX));
            let parts = c.content.map(|c| c.parts).unwrap_or_default();
            let out = Output::from_parts(parts, &mut self.ids);
            let state = self.candidates.entry(index).or_default();
            if state.finish.is_some() {
                // Gemini sends nothing after a finish reason; ignore stray frames
                // rather than emit content after `finish_reason`.
                continue;
            }
            let mut delta = Delta::default();
            if !state.role_sent {
                delta.role = Some("assistant".to_owned());
                state.role_sent = true;
            }
            if !out.text.is_empty() || (delta.role.is_some() && out.calls.is_empty()) {
                delta.content = Some(out.text);
            }
            if !out.reasoning.is_empty() {
                delta.reasoning_content = Some(out.reasoning);
            }
            if !out.calls.is_empty() {
                let calls = out
                    .calls
                    .into_iter()
                    .map(|call| {
                        let index = state.tool_calls;
                        state.tool_calls = state.tool_calls.saturating_add(1);
                        ToolCallDelta {
                            index,
                            id: Some(call.id),
                            kind: Some(call.kind),
                            function: FunctionCallDelta {
                                name: Some(call.function.name),
                                arguments: Some(call.function.arguments),
                            },
                        }
                    })
                    .collect();
                delta.tool_calls = Some(calls);
            }
            let finish = c
                .finish_reason
                .as_deref()
                .map(|r| finish_reason(r, state.tool_calls > 0));
            state.finish = finish;
            let logprobs = c.logprobs_result.as_ref().map(logprobs);
            if delta != Delta::default() || logprobs.is_some() {
                chunks.push(self.chunk(index, delta, None, logprobs));
            }
            if let Some(reason) = finish {
                chunks.push(self.chunk(index, Delta::default(), Some(reason), None));
            }
        }
        Ok(chunks)
    }

    /// Call at end of the upstream stream: emits the final usage chunk
    /// (`choices: []`, `usage: Some(Some(..))`) if a finish reason was seen and
    /// Gemini reported usage; returns whether the stream ended properly (every
    /// candidate that started got a finish reason). A second call emits nothing.
    pub fn finish(&mut self) -> (Vec<ChatChunk>, bool) {
        let complete =
            !self.candidates.is_empty() && self.candidates.values().all(|c| c.finish.is_some());
        let mut chunks = Vec::new();
        if complete && !self.finished {
            if let Some(usage) = self.usage() {
                chunks.push(ChatChunk::usage_only(
                    &self.id,
                    self.created,
                    &self.model,
                    usage,
                ));
            }
        }
        self.finished = true;
        (chunks, complete)
    }

    /// Usage so far (Gemini repeats running totals in every frame).
    pub fn usage(&self) -> Option<UsageBody> {
        self.usage.as_ref().map(usage_body)
    }

    fn chunk(
        &self,
        index: u32,
        delta: Delta,
        finish_reason: Option<&str>,
        logprobs: Option<Value>,
    ) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index,
                delta,
                logprobs,
                finish_reason: finish_reason.map(str::to_owned),
            }],
            usage: Some(None),
        }
    }
}

// --------------------------------------------------------------- embeddings

/// OpenAI embeddings body (validated: `model`, `input` string or array of
/// strings, optional `dimensions`) → `batchEmbedContents` body.
pub fn embeddings_to_wire(
    body: &Map<String, Value>,
    upstream_model: &str,
) -> Result<Value, GatewayError> {
    let inputs = crate::request::embedding_texts(body, "Gemini", MAX_EMBED_BATCH)?;
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(d) => Some(d.as_u64().filter(|&d| d > 0).ok_or_else(|| {
            GatewayError::invalid_param("dimensions", "'dimensions' must be a positive integer.")
        })?),
    };
    let model = format!(
        "models/{}",
        upstream_model
            .strip_prefix("models/")
            .unwrap_or(upstream_model)
    );
    let requests: Vec<Value> = inputs
        .into_iter()
        .map(|text| {
            let mut r = json!({
                "model": model,
                "content": { "parts": [{ "text": text }] },
            });
            if let (Some(d), Some(obj)) = (dimensions, r.as_object_mut()) {
                obj.insert("outputDimensionality".to_owned(), json!(d));
            }
            r
        })
        .collect();
    Ok(json!({ "requests": requests }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireEmbeddings {
    embeddings: Vec<WireEmbedding>,
    usage_metadata: Option<EmbeddingUsage>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireEmbedding {
    values: Vec<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct EmbeddingUsage {
    prompt_token_count: Option<u64>,
}

/// `batchEmbedContents` response → OpenAI embeddings `list` (float, or
/// base64 of little-endian f32 when `base64`). Vectors are L2-normalised;
/// `usage` is present only when Gemini reports a token count.
pub fn embeddings_from_wire(body: &[u8], model: &str, base64: bool) -> Result<Value, GatewayError> {
    let resp: WireEmbeddings = serde_json::from_slice(body).map_err(|_| invalid_response())?;
    if resp.embeddings.is_empty() {
        return Err(invalid_response());
    }
    let data: Vec<Value> = resp
        .embeddings
        .iter()
        .enumerate()
        .map(|(index, e)| {
            let v = normalised(&e.values);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Value::Array(v.iter().copied().map(f32_number).collect())
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    let mut out = json!({ "object": "list", "data": data, "model": model });
    let tokens = resp.usage_metadata.and_then(|u| u.prompt_token_count);
    if let (Some(tokens), Some(obj)) = (tokens, out.as_object_mut()) {
        obj.insert(
            "usage".to_owned(),
            json!({ "prompt_tokens": tokens, "total_tokens": tokens }),
        );
    }
    Ok(out)
}

/// An f32 as the shortest decimal that reads back as the same f32 (`0.6`, not
/// `0.6000000238418579`), as OpenAI prints embeddings.
fn f32_number(x: f32) -> Value {
    let shortest = x.to_string().parse::<f64>().unwrap_or(f64::from(x));
    serde_json::Number::from_f64(shortest).map_or(Value::Null, Value::Number)
}

fn normalised(values: &[f64]) -> Vec<f32> {
    let norm = values.iter().map(|x| x * x).sum::<f64>().sqrt();
    let scale = if norm.is_finite() && norm > 0.0 {
        1.0 / norm
    } else {
        1.0
    };
    // f32 is what the OpenAI wire carries (base64 is little-endian f32).
    values.iter().map(|x| (x * scale) as f32).collect()
}

// ------------------------------------------------------------------- errors

/// Maps a non-2xx Gemini answer to the client's error (see the module docs).
pub fn map_error(
    provider: &str,
    status: u16,
    body: &[u8],
    retry_after: Option<&str>,
) -> GatewayError {
    let err = parse_error(body);
    let detail = err
        .as_ref()
        .map(|e| clean(&e.message))
        .filter(|m| !m.is_empty());
    let grpc_status = err.as_ref().map_or("", |e| e.status.as_str());
    let upstream =
        |status: u16, code: &'static str, message: String, retry_after| GatewayError::Upstream {
            provider: provider.to_owned(),
            status,
            message,
            code,
            retry_after,
        };
    let rejected = |status: u16| match &detail {
        Some(d) => format!("Provider '{provider}' rejected the request: {d}"),
        None => format!("Provider '{provider}' rejected the request (HTTP {status})."),
    };
    match status {
        300..=399 => GatewayError::UpstreamRedirect {
            provider: provider.to_owned(),
        },
        400 if err.as_ref().is_some_and(is_key_error) => auth_failed(provider, status),
        401 | 403 => auth_failed(provider, status),
        400 if grpc_status == "FAILED_PRECONDITION" => upstream(
            502,
            "upstream_error",
            match &detail {
                Some(d) => format!("Provider '{provider}' cannot serve this request: {d}"),
                None => format!("Provider '{provider}' cannot serve this request (HTTP 400)."),
            },
            None,
        ),
        400 if detail.as_deref().is_some_and(is_context_length) => {
            upstream(400, "context_length_exceeded", rejected(status), None)
        }
        404 => upstream(404, "upstream_not_found", rejected(status), None),
        400..=428 | 430..=499 => upstream(
            if status == 413 { 413 } else { 400 },
            "upstream_invalid_request",
            rejected(status),
            None,
        ),
        429 => upstream(
            429,
            "upstream_rate_limited",
            format!("Provider '{provider}' is rate limiting requests; retry later."),
            sane_retry_after(retry_after).or_else(|| err.as_ref().and_then(retry_delay)),
        ),
        503 => upstream(
            503,
            "upstream_overloaded",
            format!("Provider '{provider}' is overloaded; retry later."),
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

/// Whether a Gemini error status is worth retrying (on this or another link).
pub fn is_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

fn auth_failed(provider: &str, status: u16) -> GatewayError {
    GatewayError::Upstream {
        provider: provider.to_owned(),
        status: 502,
        message: format!(
            "Provider '{provider}' rejected the gateway's credentials (HTTP {status}); \
             the operator should check its API key."
        ),
        code: "upstream_auth_failed",
        retry_after: None,
    }
}

/// The error object of `{"error":{…}}` (or of `[{"error":{…}}]`, the shape
/// `streamGenerateContent` without `alt=sse` uses).
fn parse_error(body: &[u8]) -> Option<WireError> {
    #[derive(Deserialize)]
    struct Envelope {
        error: WireError,
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    let v = match v {
        Value::Array(items) => items.into_iter().next()?,
        other => other,
    };
    serde_json::from_value::<Envelope>(v).ok().map(|e| e.error)
}

/// AI Studio answers a bad key with 400 `INVALID_ARGUMENT`, reason `API_KEY_INVALID`.
fn is_key_error(e: &WireError) -> bool {
    let reason_says_key = e.details.iter().any(|d| {
        d.get("reason")
            .and_then(Value::as_str)
            .is_some_and(|r| r.starts_with("API_KEY"))
    });
    reason_says_key || e.message.contains("API key")
}

/// "The input token count (…) exceeds the maximum number of tokens allowed (…)."
fn is_context_length(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("token count") && m.contains("exceeds the maximum")
}

/// `RetryInfo.retryDelay` ("34.4s") rounded up to whole seconds.
fn retry_delay(e: &WireError) -> Option<String> {
    e.details.iter().find_map(|d| {
        let delay = d.get("retryDelay")?.as_str()?.strip_suffix('s')?;
        let secs: f64 = delay.parse().ok()?;
        // Range-checked, so the cast is exact.
        (secs.is_finite() && (0.0..=86_400.0).contains(&secs))
            .then(|| (secs.ceil() as u64).to_string())
    })
}

/// A `Retry-After` value worth passing on: delta-seconds only.
fn sane_retry_after(v: Option<&str>) -> Option<String> {
    let v = v?.trim();
    (!v.is_empty() && v.len() <= 6 && v.bytes().all(|b| b.is_ascii_digit())).then(|| v.to_owned())
}

/// Upstream text made safe to show: key-shaped tokens (including Google's
/// `AIza…` keys) masked, cut to [`MAX_MESSAGE_CHARS`].
fn clean(text: &str) -> String {
    let text = scrub_google_keys(&scrub_key_like(text.trim()));
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

/// Masks `AIza…` API keys (39 characters of `[A-Za-z0-9_-]`).
fn scrub_google_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("AIza") {
        let (before, from) = rest.split_at(pos);
        out.push_str(before);
        let len = from
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            .map_or(from.len(), |(i, _)| i);
        let (token, after) = from.split_at(len);
        out.push_str(if len >= 20 { "[redacted]" } else { token });
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseDecoder;

    const ID: &str = "chatcmpl-test";
    const CREATED: u64 = 1_700_000_000;
    const MODEL: &str = "gemini-test";

    fn req(v: Value) -> ChatRequest {
        ChatRequest::from_body(v.as_object().unwrap()).unwrap()
    }

    fn wire(v: Value) -> Value {
        to_wire(&req(v), false).unwrap()
    }

    fn wire_err(v: Value) -> GatewayError {
        to_wire(&req(v), false).unwrap_err()
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    fn json_of(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    // ------------------------------------------------------------ fixtures

    macro_rules! fixture {
        ($name:literal) => {
            (
                $name,
                include_str!(concat!("../../tests/fixtures/gemini/", $name)),
            )
        };
    }

    /// (wire response, expected chat.completion).
    /// (file name, contents).
    type Fixture = (&'static str, &'static str);

    const GENERATE: &[(Fixture, Fixture)] = &[
        (
            fixture!("generate.text.json"),
            fixture!("generate.text.expected.json"),
        ),
        (
            fixture!("generate.thinking.json"),
            fixture!("generate.thinking.expected.json"),
        ),
        (
            fixture!("generate.tool-call.json"),
            fixture!("generate.tool-call.expected.json"),
        ),
        (
            fixture!("generate.parallel-tool-calls.json"),
            fixture!("generate.parallel-tool-calls.expected.json"),
        ),
        (
            fixture!("generate.json-schema.json"),
            fixture!("generate.json-schema.expected.json"),
        ),
        (
            fixture!("generate.max-tokens.json"),
            fixture!("generate.max-tokens.expected.json"),
        ),
        (
            fixture!("generate.safety.json"),
            fixture!("generate.safety.expected.json"),
        ),
        (
            fixture!("generate.prompt-blocked.json"),
            fixture!("generate.prompt-blocked.expected.json"),
        ),
        (
            fixture!("generate.usage-cached.json"),
            fixture!("generate.usage-cached.expected.json"),
        ),
        (
            fixture!("generate.logprobs.json"),
            fixture!("generate.logprobs.expected.json"),
        ),
        (
            fixture!("generate.candidates.json"),
            fixture!("generate.candidates.expected.json"),
        ),
    ];

    /// (SSE stream, expected chunks including `finish()`'s, ended properly).
    const STREAMS: &[(Fixture, Fixture, bool)] = &[
        (
            fixture!("stream.text.sse"),
            fixture!("stream.text.expected.json"),
            true,
        ),
        (
            fixture!("stream.tool-call.sse"),
            fixture!("stream.tool-call.expected.json"),
            true,
        ),
        (
            fixture!("stream.parallel-tool-calls.sse"),
            fixture!("stream.parallel-tool-calls.expected.json"),
            true,
        ),
        (
            fixture!("stream.thinking.sse"),
            fixture!("stream.thinking.expected.json"),
            true,
        ),
        (
            fixture!("stream.max-tokens.sse"),
            fixture!("stream.max-tokens.expected.json"),
            true,
        ),
        (
            fixture!("stream.safety.sse"),
            fixture!("stream.safety.expected.json"),
            true,
        ),
        (
            fixture!("stream.prompt-blocked.sse"),
            fixture!("stream.prompt-blocked.expected.json"),
            true,
        ),
        (
            fixture!("stream.truncated.sse"),
            fixture!("stream.truncated.expected.json"),
            false,
        ),
    ];

    const STREAM_ERROR: Fixture = fixture!("stream.error.sse");

    /// The provider case matrix (anchors-code-style §8 rule 15): every case
    /// names the fixture or test that covers it, or says why it does not apply.
    const CASE_MATRIX: &[(&str, &str)] = &[
        ("text", "generate.text.json, stream.text.sse, request_text"),
        (
            "system",
            "request_system_and_developer_become_system_instruction",
        ),
        ("multi-turn", "request_multi_turn_merges_same_role_turns"),
        (
            "tools",
            "generate.tool-call.json, stream.tool-call.sse, request_tools_and_tool_choice",
        ),
        (
            "parallel function calls",
            "generate.parallel-tool-calls.json, stream.parallel-tool-calls.sse",
        ),
        (
            "tool-result round trip",
            "tool_call_round_trip_restores_thought_signature, request_tool_results",
        ),
        (
            "image",
            "request_images; n/a for responses and streams: images are request-only",
        ),
        (
            "JSON mode (object)",
            "request_json_object; the response is text: n/a beyond generate.json-schema.json",
        ),
        (
            "JSON mode (schema)",
            "generate.json-schema.json, request_json_schema_is_converted",
        ),
        (
            "JSON mode stream",
            "n/a: the wire is a text stream, covered by stream.text.sse",
        ),
        (
            "stop",
            "request_generation_config; n/a on the response side: Gemini reports STOP, as text",
        ),
        (
            "length cut",
            "generate.max-tokens.json, stream.max-tokens.sse",
        ),
        (
            "safety block (candidate)",
            "generate.safety.json, stream.safety.sse",
        ),
        (
            "safety block (prompt)",
            "generate.prompt-blocked.json, stream.prompt-blocked.sse",
        ),
        (
            "reasoning",
            "generate.thinking.json, stream.thinking.sse, request_reasoning_effort",
        ),
        (
            "usage (cached, tool-use, thoughts)",
            "generate.usage-cached.json",
        ),
        (
            "logprobs",
            "generate.logprobs.json; n/a in streams: same mapping per frame",
        ),
        (
            "n > 1",
            "generate.candidates.json, stream_with_two_candidates",
        ),
        ("each error class", "error_fixtures_map_to_the_right_class"),
        ("error mid-stream", "stream.error.sse"),
        ("truncated stream", "stream.truncated.sse"),
        ("embeddings", "embed.batch.json, embeddings_*"),
        ("embeddings stream", "n/a: embeddings do not stream"),
        (
            "embeddings usage",
            "n/a: Gemini reports none; usage is omitted (embeddings_usage_*)",
        ),
    ];

    #[test]
    fn every_fixture_is_used_and_the_matrix_names_real_fixtures() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gemini");
        let mut used: Vec<&str> = Vec::new();
        for ((w, _), (e, _)) in GENERATE {
            used.extend([*w, *e]);
        }
        for ((w, _), (e, _), _) in STREAMS {
            used.extend([*w, *e]);
        }
        used.push(STREAM_ERROR.0);
        used.extend(ERRORS.iter().map(|c| c.0 .0));
        used.extend(["embed.batch.json", "embed.batch.expected.json"]);
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name == "README.md" || name.starts_with('.') {
                continue;
            }
            assert!(
                used.contains(&name.as_str()),
                "fixture {name} is not used by any test"
            );
        }
        let readme = std::fs::read_to_string(format!("{dir}/README.md")).unwrap();
        for name in used.iter().filter(|n| !n.ends_with(".expected.json")) {
            assert!(readme.contains(name), "README.md does not describe {name}");
        }
        for (case, covered_by) in CASE_MATRIX {
            for word in covered_by.split([',', ' ', ';']) {
                if word.ends_with(".json") || word.ends_with(".sse") {
                    assert!(used.contains(&word), "{case}: unknown fixture {word}");
                }
            }
        }
    }

    #[test]
    fn golden_generate_responses() {
        for ((name, body), (_, expected)) in GENERATE {
            let got = from_wire(body.as_bytes(), ID, CREATED, MODEL).unwrap();
            assert_eq!(
                serde_json::to_value(&got).unwrap(),
                json_of(expected),
                "{name}"
            );
        }
    }

    /// Frames of `bytes` fed to a decoder in the given pieces.
    fn decode(pieces: &[&[u8]]) -> Vec<SseFrame> {
        let mut d = SseDecoder::default();
        let mut frames = Vec::new();
        for p in pieces {
            frames.extend(d.push(p).unwrap());
        }
        assert_eq!(d.finish(), None, "stream fixtures end on a frame boundary");
        frames
    }

    type Outcome = (
        Vec<Result<Vec<ChatChunk>, GatewayError>>,
        Vec<ChatChunk>,
        bool,
    );

    fn run(frames: &[SseFrame]) -> Outcome {
        let mut s = StreamState::new(ID.to_owned(), CREATED, MODEL.to_owned());
        let per_frame = frames.iter().map(|f| s.on_frame(f)).collect();
        let (tail, ok) = s.finish();
        (per_frame, tail, ok)
    }

    fn all_chunks(outcome: &Outcome) -> Vec<ChatChunk> {
        let mut chunks: Vec<ChatChunk> = outcome
            .0
            .iter()
            .flat_map(|r| r.as_ref().unwrap().clone())
            .collect();
        chunks.extend(outcome.1.clone());
        chunks
    }

    #[test]
    fn golden_streams() {
        for ((name, sse), (_, expected), ended) in STREAMS {
            let outcome = run(&decode(&[sse.as_bytes()]));
            let got = serde_json::to_value(all_chunks(&outcome)).unwrap();
            assert_eq!(got, json_of(expected), "{name}");
            assert_eq!(outcome.2, *ended, "{name}");
            let chunks = all_chunks(&outcome);
            for c in &chunks {
                let is_usage_chunk = c.choices.is_empty();
                assert_eq!(matches!(c.usage, Some(Some(_))), is_usage_chunk, "{name}");
                assert!(
                    c.usage.is_some(),
                    "{name}: usage is null or set, never absent"
                );
            }
            if let Some(first) = chunks.first() {
                assert_eq!(
                    first.choices[0].delta.role.as_deref(),
                    Some("assistant"),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn every_stream_fixture_gives_identical_chunks_at_any_split() {
        let mut all: Vec<Fixture> = STREAMS.iter().map(|s| s.0).collect();
        all.push(STREAM_ERROR);
        for (name, sse) in all {
            let bytes = sse.as_bytes();
            let whole = run(&decode(&[bytes]));
            for k in 0..=bytes.len() {
                let (a, b) = bytes.split_at(k);
                assert_eq!(run(&decode(&[a, b])), whole, "{name} split at {k}");
            }
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(run(&decode(&singles)), whole, "{name} byte by byte");
            let lf = sse.replace("\r\n", "\n");
            assert_eq!(
                run(&decode(&[lf.as_bytes()])),
                whole,
                "{name} with LF framing"
            );
        }
    }

    #[test]
    fn stream_error_frame_is_an_upstream_error_after_the_content_before_it() {
        let (per_frame, tail, ok) = run(&decode(&[STREAM_ERROR.1.as_bytes()]));
        let first = per_frame[0].as_ref().unwrap();
        assert_eq!(
            first[0].choices[0].delta.content.as_deref(),
            Some("Partial")
        );
        let err = per_frame[1].as_ref().unwrap_err();
        assert_eq!((err.status(), err.code()), (502, "upstream_error"));
        assert!(
            err.message().contains("An internal error has occurred"),
            "{err:?}"
        );
        assert!(tail.is_empty());
        assert!(!ok, "an error frame is not a proper end");
    }

    #[test]
    fn stream_ignores_keepalives_and_rejects_garbage() {
        let mut s = StreamState::new(ID.to_owned(), CREATED, MODEL.to_owned());
        let frames = decode(&[b": ping\r\n\r\ndata: [DONE]\r\n\r\n"]);
        for f in &frames {
            assert_eq!(s.on_frame(f).unwrap(), vec![]);
        }
        let bad = decode(&[b"data: {not json\r\n\r\n"]);
        assert_eq!(
            s.on_frame(&bad[0]).unwrap_err().code(),
            "upstream_invalid_response"
        );
        assert_eq!(
            s.finish(),
            (vec![], false),
            "nothing started, nothing finished"
        );
    }

    #[test]
    fn finish_emits_usage_once_and_not_without_usage() {
        let (_, sse) = STREAMS[0].0;
        let mut s = StreamState::new(ID.to_owned(), CREATED, MODEL.to_owned());
        for f in decode(&[sse.as_bytes()]) {
            s.on_frame(&f).unwrap();
        }
        assert_eq!(s.usage().unwrap().total_tokens, 217);
        assert_eq!(s.finish().0.len(), 1);
        let (again, ok) = s.finish();
        assert!(again.is_empty() && ok);

        let mut s = StreamState::new(ID.to_owned(), CREATED, MODEL.to_owned());
        let frame = r#"data: {"candidates": [{"content": {"parts": [{"text": "hi"}],"role": "model"},"finishReason": "STOP","index": 0}]}"#;
        let frames = decode(&[format!("{frame}\r\n\r\n").as_bytes()]);
        assert_eq!(s.on_frame(&frames[0]).unwrap().len(), 2);
        assert_eq!(s.usage(), None);
        assert_eq!(
            s.finish(),
            (vec![], true),
            "ended properly, but no usage to report"
        );
    }

    #[test]
    fn stream_with_two_candidates() {
        let sse = concat!(
            r#"data: {"candidates": [{"content": {"parts": [{"text": "Red"}],"role": "model"},"index": 0},{"content": {"parts": [{"text": "Blue"}],"role": "model"},"index": 1}]}"#,
            "\r\n\r\n",
            r#"data: {"candidates": [{"content": {"parts": [{"text": "."}],"role": "model"},"finishReason": "STOP","index": 0}]}"#,
            "\r\n\r\n",
            r#"data: {"candidates": [{"content": {"parts": [{"text": "!"}],"role": "model"},"finishReason": "MAX_TOKENS","index": 1}],"usageMetadata": {"promptTokenCount": 6,"candidatesTokenCount": 4,"totalTokenCount": 10}}"#,
            "\r\n\r\n",
        );
        let outcome = run(&decode(&[sse.as_bytes()]));
        let chunks = all_chunks(&outcome);
        type Row<'a> = (u32, Option<&'a str>, Option<&'a str>, Option<&'a str>);
        let summary: Vec<Row<'_>> = chunks
            .iter()
            .flat_map(|c| c.choices.iter())
            .map(|c| {
                (
                    c.index,
                    c.delta.role.as_deref(),
                    c.delta.content.as_deref(),
                    c.finish_reason.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, Some("assistant"), Some("Red"), None),
                (1, Some("assistant"), Some("Blue"), None),
                (0, None, Some("."), None),
                (0, None, None, Some("stop")),
                (1, None, Some("!"), None),
                (1, None, None, Some("length")),
            ]
        );
        assert!(outcome.2);
        assert_eq!(
            chunks.last().unwrap().usage,
            Some(Some(usage_body(&UsageMetadata {
                prompt_token_count: 6,
                candidates_token_count: 4,
                ..UsageMetadata::default()
            })))
        );
    }

    #[test]
    fn frames_after_a_finish_reason_are_not_turned_into_content() {
        // Seen in recorded traffic: a trailing `MALFORMED_FUNCTION_CALL` after `STOP`.
        let sse = concat!(
            r#"data: {"candidates": [{"content": {"parts": [{"text": "done"}],"role": "model"},"finishReason": "STOP"}]}"#,
            "\r\n\r\n",
            r#"data: {"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL"}]}"#,
            "\r\n\r\n",
        );
        let outcome = run(&decode(&[sse.as_bytes()]));
        assert_eq!(outcome.0[1], Ok(vec![]));
        let finishes: Vec<_> = all_chunks(&outcome)
            .iter()
            .filter_map(|c| c.choices[0].finish_reason.clone())
            .collect();
        assert_eq!(finishes, vec!["stop"]);
    }

    #[test]
    fn non_streamed_edge_cases() {
        let err = from_wire(b"<html>", ID, CREATED, MODEL).unwrap_err();
        assert_eq!(err.code(), "upstream_invalid_response");
        let err = from_wire(br#"{"candidates": []}"#, ID, CREATED, MODEL).unwrap_err();
        assert_eq!(err.code(), "upstream_invalid_response");
        let err = from_wire(
            br#"{"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}"#,
            ID,
            CREATED,
            MODEL,
        )
        .unwrap_err();
        assert_eq!((err.status(), err.code()), (502, "upstream_error"));
        // MAX_TOKENS spent entirely on thinking: a candidate without parts.
        let c = from_wire(
            br#"{"candidates": [{"content": {"role": "model"},"finishReason": "MAX_TOKENS"}]}"#,
            ID,
            CREATED,
            MODEL,
        )
        .unwrap();
        assert_eq!(c.choices[0].message.content.as_deref(), Some(""));
        assert_eq!(c.choices[0].finish_reason.as_deref(), Some("length"));
        assert_eq!(c.usage, None);
        // Gemini's own call id is kept.
        let c = from_wire(
            br#"{"candidates": [{"content": {"parts": [{"functionCall": {"id": "g-1", "name": "f", "args": {}}}]}, "finishReason": "STOP"}]}"#,
            ID,
            CREATED,
            MODEL,
        )
        .unwrap();
        let calls = c.choices[0].message.tool_calls.as_ref().unwrap();
        assert_eq!(
            (calls[0].id.as_str(), calls[0].function.arguments.as_str()),
            ("g-1", "{}")
        );
    }

    #[test]
    fn generated_call_ids_are_unique_per_response() {
        let mut a = CallIds::new("chatcmpl-req_01HZX9-abc");
        assert_eq!(a.next(None, None), "call_req01HZX9abc_0");
        assert_eq!(
            a.next(None, Some("c2lnbmF0dXJl".into())),
            "call_req01HZX9abc_1__thought__c2lnbmF0dXJl"
        );
        let mut b = CallIds::new(&"x".repeat(100));
        assert_eq!(b.next(None, None), format!("call_{}_0", "x".repeat(24)));
    }

    // -------------------------------------------------------------- requests

    #[test]
    fn request_text() {
        let w = wire(json!({"model": "m", "messages": [user("Hello")], "stream": true}));
        assert_eq!(
            w,
            json!({"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]})
        );
        assert_eq!(
            to_wire(
                &req(json!({"model": "m", "messages": [user("Hello")]})),
                true
            )
            .unwrap(),
            w,
            "the body does not depend on streaming"
        );
    }

    #[test]
    fn request_system_and_developer_become_system_instruction() {
        let w = wire(json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            user("Hi"),
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]}
        ]}));
        assert_eq!(
            w,
            json!({
                "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
                "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use metric units."}]}
            })
        );
        let err = wire_err(json!({"model": "m", "messages": [
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
            user("Hi")
        ]}));
        assert_eq!(err.param(), Some("messages"));
    }

    #[test]
    fn request_multi_turn_merges_same_role_turns() {
        let w = wire(json!({"model": "m", "messages": [
            user("One"),
            user(""),
            user("Two"),
            {"role": "assistant", "content": "Three"},
            {"role": "assistant", "content": null, "refusal": "I can't."},
            user("Four")
        ]}));
        assert_eq!(
            w["contents"],
            json!([
                {"role": "user", "parts": [{"text": "One"}, {"text": "Two"}]},
                {"role": "model", "parts": [{"text": "Three"}, {"text": "I can't."}]},
                {"role": "user", "parts": [{"text": "Four"}]}
            ])
        );
        let err = wire_err(
            json!({"model": "m", "messages": [{"role": "system", "content": "x"}, user("")]}),
        );
        assert_eq!(err.status(), 400);
        assert!(err.message().contains("at least one"), "{}", err.message());
        let err = wire_err(
            json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]}),
        );
        assert!(err.message().contains("role 'function'"));
    }

    fn weather_tool() -> Value {
        json!({"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather",
            "strict": true,
            "parameters": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name"},
                    "unit": {"type": ["string", "null"], "enum": ["c", "f"]}
                },
                "required": ["city", "missing"],
                "additionalProperties": false
            }
        }})
    }

    #[test]
    fn request_tools_and_tool_choice() {
        let base = json!({"model": "m", "messages": [user("Weather?")], "tools": [
            weather_tool(),
            {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}
        ]});
        let w = wire(base.clone());
        assert_eq!(
            w["tools"],
            json!([{"functionDeclarations": [
                {"name": "get_weather", "description": "Current weather", "parameters": {
                    "type": "OBJECT",
                    "properties": {
                        "city": {"type": "STRING", "description": "City name"},
                        "unit": {"type": "STRING", "nullable": true, "enum": ["c", "f"]}
                    },
                    "required": ["city"]
                }},
                {"name": "now"}
            ]}])
        );
        assert!(
            w.get("toolConfig").is_none(),
            "no tool_choice: Gemini's default (AUTO)"
        );
        let mode = |choice: Value| {
            let mut b = base.clone();
            b["tool_choice"] = choice;
            wire(b)["toolConfig"]["functionCallingConfig"].clone()
        };
        assert_eq!(mode(json!("auto")), json!({"mode": "AUTO"}));
        assert_eq!(mode(json!("none")), json!({"mode": "NONE"}));
        assert_eq!(mode(json!("required")), json!({"mode": "ANY"}));
        assert_eq!(
            mode(json!({"type": "function", "function": {"name": "now"}})),
            json!({"mode": "ANY", "allowedFunctionNames": ["now"]})
        );
        let mut b = base.clone();
        b["tool_choice"] = json!("sometimes");
        assert_eq!(wire_err(b).param(), Some("tool_choice"));
        let mut b = base;
        b["tools"] = json!([{"type": "code_interpreter", "function": {"name": "x"}}]);
        assert_eq!(wire_err(b).param(), Some("tools"));
    }

    #[test]
    fn request_tool_results() {
        let w = wire(json!({"model": "m", "messages": [
            user("Weather in Paris and Tokyo?"),
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_a_0__thought__c2ln", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_a_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_a_0__thought__c2ln", "content": "{\"temp\": 21}"},
            {"role": "tool", "tool_call_id": "call_a_1", "content": [{"type": "text", "text": "sunny"}]},
            user("Thanks")
        ]}));
        assert_eq!(
            w["contents"],
            json!([
                {"role": "user", "parts": [{"text": "Weather in Paris and Tokyo?"}]},
                {"role": "model", "parts": [
                    {"text": "Checking."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
                    {"functionCall": {"name": "get_weather", "args": {}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                    {"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}},
                    {"text": "Thanks"}
                ]}
            ])
        );
        let err = wire_err(json!({"model": "m", "messages": [
            user("x"),
            {"role": "tool", "tool_call_id": "nope", "content": "1"}
        ]}));
        assert!(err
            .message()
            .contains("matches no earlier assistant tool call"));
        let err = wire_err(json!({"model": "m", "messages": [
            user("x"),
            {"role": "assistant", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
            ]}
        ]}));
        assert!(err.message().contains("must be a JSON object"));
    }

    #[test]
    fn tool_call_round_trip_restores_thought_signature() {
        let (_, body) = GENERATE[2].0;
        let answer = from_wire(body.as_bytes(), ID, CREATED, MODEL).unwrap();
        let calls = answer.choices[0].message.tool_calls.clone().unwrap();
        let next = json!({"model": "m", "messages": [
            user("Weather in SF?"),
            {"role": "assistant", "content": null, "tool_calls": calls},
            {"role": "tool", "tool_call_id": calls[0].id, "content": "foggy"}
        ]});
        let w = wire(next);
        let recorded: Value = json_of(body);
        assert_eq!(
            w["contents"][1]["parts"][0], recorded["candidates"][0]["content"]["parts"][0],
            "the model turn goes back exactly as Gemini sent it"
        );
        assert_eq!(
            w["contents"][2]["parts"][0],
            json!({"functionResponse": {"name": "weather", "response": {"content": "foggy"}}})
        );
    }

    #[test]
    fn request_images() {
        let parts = |url: &str| {
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": url, "detail": "high"}}
            ]}]})
        };
        let w = wire(parts("data:image/png;base64,iVBORw0KGgo="));
        assert_eq!(
            w["contents"][0]["parts"],
            json!([{"text": "What is this?"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}])
        );
        let w = wire(parts("https://example.com/cat.JPG?size=large#top"));
        assert_eq!(
            w["contents"][0]["parts"][1],
            json!({"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.JPG?size=large#top"}})
        );
        for bad in [
            "https://example.com/image",
            "https://example.com/x.gif",
            "https://example.com/",
            "ftp://example.com/a.png",
            "data:image/png,rawbytes",
        ] {
            let err = wire_err(parts(bad));
            assert_eq!(
                (err.status(), err.param()),
                (400, Some("messages")),
                "{bad}"
            );
        }
        assert!(wire_err(parts("https://example.com/image"))
            .message()
            .contains("base64"));
        let w = wire(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}
            ]}]}),
        );
        assert_eq!(
            w["contents"][0]["parts"],
            json!([
                {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}
            ])
        );
        let err = wire_err(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "file", "file": {"file_id": "file-abc"}}
            ]}]}),
        );
        assert!(err.message().contains("file_id"));
        let err = wire_err(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "video_url", "video_url": {"url": "https://x/y.mp4"}}
            ]}]}),
        );
        assert!(err.message().contains("'video_url'"));
    }

    #[test]
    fn request_generation_config() {
        let w = wire(json!({
            "model": "m", "messages": [user("Count")],
            "temperature": 0.2, "top_p": 0.9, "max_tokens": 50, "max_completion_tokens": 40,
            "stop": ["\n\n", "END"], "n": 2, "seed": 7, "presence_penalty": 0.5,
            "frequency_penalty": -0.5, "logprobs": true, "top_logprobs": 3,
            "user": "u-1", "metadata": {"a": "b"}, "parallel_tool_calls": false,
            "stream_options": {"include_usage": true}, "store": false
        }));
        assert_eq!(
            w["generationConfig"],
            json!({
                "temperature": 0.2, "topP": 0.9, "maxOutputTokens": 40,
                "stopSequences": ["\n\n", "END"], "candidateCount": 2, "seed": 7,
                "presencePenalty": 0.5, "frequencyPenalty": -0.5,
                "responseLogprobs": true, "logprobs": 3
            })
        );
        assert_eq!(
            w.as_object().unwrap().len(),
            2,
            "ignored fields leave no trace: {w}"
        );
        let w = wire(
            json!({"model": "m", "messages": [user("x")], "stop": "STOP", "n": 1, "max_tokens": 5}),
        );
        assert_eq!(
            w["generationConfig"],
            json!({"maxOutputTokens": 5, "stopSequences": ["STOP"]})
        );
        assert_eq!(
            wire_err(json!({"model": "m", "messages": [user("x")], "n": 0})).param(),
            Some("n")
        );
    }

    #[test]
    fn request_json_object() {
        let w = wire(
            json!({"model": "m", "messages": [user("x")], "response_format": {"type": "json_object"}}),
        );
        assert_eq!(
            w["generationConfig"],
            json!({"responseMimeType": "application/json"})
        );
        let w = wire(
            json!({"model": "m", "messages": [user("x")], "response_format": {"type": "text"}}),
        );
        assert!(w.get("generationConfig").is_none());
        let err = wire_err(
            json!({"model": "m", "messages": [user("x")], "response_format": {"type": "grammar"}}),
        );
        assert_eq!(err.param(), Some("response_format"));
    }

    #[test]
    fn request_json_schema_is_converted() {
        let w = wire(
            json!({"model": "m", "messages": [user("x")], "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "person", "strict": true, "schema": {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "format": "hostname"},
                        "born": {"type": "integer", "format": "int64", "exclusiveMinimum": 0},
                        "when": {"type": "string", "format": "date-time"},
                        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true, "maxItems": 3},
                        "kind": {"const": "person"},
                        "spouse": {"anyOf": [{"$ref": "#/$defs/ref"}, {"type": "null"}]},
                        "either": {"oneOf": [{"type": "string"}, {"type": "number"}]},
                        "size": {"type": "number", "enum": [1, 2.5, null]}
                    },
                    "required": ["name", "born"],
                    "additionalProperties": false,
                    "$defs": {"ref": {"type": "object", "properties": {"name": {"type": "string"}}, "additionalProperties": false}}
                }}
            }}),
        );
        assert_eq!(
            w["generationConfig"]["responseMimeType"],
            "application/json"
        );
        assert_eq!(
            w["generationConfig"]["responseSchema"],
            json!({
                "type": "OBJECT",
                "properties": {
                    "name": {"type": "STRING", "minLength": 1},
                    "born": {"type": "INTEGER", "format": "int64"},
                    "when": {"type": "STRING", "format": "date-time"},
                    "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 3},
                    "kind": {"type": "STRING", "enum": ["person"]},
                    "spouse": {"nullable": true, "type": "OBJECT", "properties": {"name": {"type": "STRING"}}},
                    "either": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]},
                    "size": {"type": "NUMBER", "nullable": true, "enum": ["1", "2.5"]}
                },
                "required": ["name", "born"]
            })
        );
    }

    #[test]
    fn schema_conversion_edge_cases() {
        let convert = |v: Value| to_gemini_schema(&v, "tools");
        let recursive = json!({"$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
                               "$ref": "#/$defs/node"});
        let err = convert(recursive).unwrap_err();
        assert!(err.message().contains("recursive"), "{}", err.message());
        assert!(convert(json!({"$ref": "https://example.com/s.json"})).is_err());
        assert_eq!(
            convert(json!({"definitions": {"n": {"type": "integer"}}, "type": "object",
                           "properties": {"a": {"$ref": "#/definitions/n"}, "b": {"$ref": "#/definitions/n"}}}))
            .unwrap(),
            json!({"type": "OBJECT", "properties": {"a": {"type": "INTEGER"}, "b": {"type": "INTEGER"}}}),
            "a definition may be used twice (only cycles are refused)"
        );
        assert_eq!(
            convert(json!({"allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "boolean"}}, "required": ["b"]}
            ]}))
            .unwrap(),
            json!({"type": "OBJECT", "properties": {"a": {"type": "STRING"}, "b": {"type": "BOOLEAN"}}, "required": ["a", "b"]})
        );
        assert_eq!(convert(json!(true)).unwrap(), json!({}));
        assert_eq!(
            convert(json!({"type": ["integer", "string"]})).unwrap(),
            json!({"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]})
        );
        let mut deep = json!({"type": "string"});
        for _ in 0..40 {
            deep = json!({"type": "array", "items": deep});
        }
        assert!(convert(deep).is_err());
        // Parameters without properties are omitted; untyped parameters become OBJECT.
        assert_eq!(
            function_parameters(&json!({"type": "object"})).unwrap(),
            None
        );
        assert_eq!(
            function_parameters(&json!({"properties": {"q": {"type": "string"}}})).unwrap(),
            Some(json!({"properties": {"q": {"type": "STRING"}}, "type": "OBJECT"}))
        );
    }

    #[test]
    fn request_reasoning_effort() {
        let cfg = |effort: &str| {
            wire(json!({"model": "m", "messages": [user("x")], "reasoning_effort": effort}))
                ["generationConfig"]["thinkingConfig"]
                .clone()
        };
        assert_eq!(cfg("none"), json!({"thinkingBudget": 0}));
        assert_eq!(
            cfg("minimal"),
            json!({"thinkingBudget": 1024, "includeThoughts": true})
        );
        assert_eq!(
            cfg("low"),
            json!({"thinkingBudget": 1024, "includeThoughts": true})
        );
        assert_eq!(
            cfg("medium"),
            json!({"thinkingBudget": 8192, "includeThoughts": true})
        );
        assert_eq!(
            cfg("high"),
            json!({"thinkingBudget": 24576, "includeThoughts": true})
        );
        let err =
            wire_err(json!({"model": "m", "messages": [user("x")], "reasoning_effort": "max"}));
        assert_eq!(err.param(), Some("reasoning_effort"));
    }

    #[test]
    fn request_refuses_what_gemini_cannot_do() {
        let base = || json!({"model": "m", "messages": [user("x")]});
        let with = |k: &str, v: Value| {
            let mut b = base();
            b[k] = v;
            b
        };
        assert_eq!(
            wire_err(with("logit_bias", json!({"50256": -100}))).param(),
            Some("logit_bias")
        );
        assert!(to_wire(&req(with("logit_bias", json!({}))), false).is_ok());
        assert_eq!(
            wire_err(with("functions", json!([{"name": "f"}]))).param(),
            Some("functions")
        );
        assert_eq!(
            wire_err(with("modalities", json!(["text", "audio"]))).param(),
            Some("modalities")
        );
        assert!(to_wire(&req(with("modalities", json!(["text"]))), false).is_ok());
    }

    // ------------------------------------------------------------- endpoints

    #[test]
    fn endpoints() {
        let base = DEFAULT_BASE_URL;
        assert_eq!(
            endpoint(base, "gemini-2.5-flash", false).unwrap(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            endpoint(&format!("{base}/"), "models/gemini-2.5-flash", true).unwrap(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            embeddings_endpoint("http://127.0.0.1:9/v1beta", "gemini-embedding-001").unwrap(),
            "http://127.0.0.1:9/v1beta/models/gemini-embedding-001:batchEmbedContents"
        );
        assert_eq!(
            endpoint(base, "tuned:x y%2F~", false).unwrap(),
            format!("{base}/models/tuned%3Ax%20y%252F~:generateContent")
        );
    }

    #[test]
    fn endpoint_rejects_path_altering_model_ids() {
        for bad in [
            "",
            ".",
            "..",
            "../v1/files",
            "a/b",
            "models/",
            "models/a/b",
            "x?alt=json",
            "x#frag",
            "a..b",
            "a\\b",
            "x\ny",
            "%2e%2e/",
        ] {
            for result in [
                endpoint(DEFAULT_BASE_URL, bad, false),
                embeddings_endpoint(DEFAULT_BASE_URL, bad),
            ] {
                let err = result.unwrap_err();
                assert_eq!((err.status(), err.param()), (400, Some("model")), "{bad:?}");
            }
        }
    }

    // ---------------------------------------------------------------- errors

    struct ErrorCase {
        status: u16,
        retry_after: Option<&'static str>,
        want_status: u16,
        want_code: &'static str,
        want_retry_after: Option<&'static str>,
        /// Upstream text that must (true) or must not (false) reach the client.
        passes_message: bool,
    }

    const ERRORS: &[(Fixture, ErrorCase)] = &[
        (
            fixture!("error.400-api-key-invalid.json"),
            ErrorCase {
                status: 400,
                retry_after: None,
                want_status: 502,
                want_code: "upstream_auth_failed",
                want_retry_after: None,
                passes_message: false,
            },
        ),
        (
            fixture!("error.403-unregistered-caller.json"),
            ErrorCase {
                status: 403,
                retry_after: None,
                want_status: 502,
                want_code: "upstream_auth_failed",
                want_retry_after: None,
                passes_message: false,
            },
        ),
        (
            fixture!("error.400-invalid-argument.json"),
            ErrorCase {
                status: 400,
                retry_after: None,
                want_status: 400,
                want_code: "upstream_invalid_request",
                want_retry_after: None,
                passes_message: true,
            },
        ),
        (
            fixture!("error.400-batch-limit.json"),
            ErrorCase {
                status: 400,
                retry_after: None,
                want_status: 400,
                want_code: "upstream_invalid_request",
                want_retry_after: None,
                passes_message: true,
            },
        ),
        (
            fixture!("error.400-context-length.json"),
            ErrorCase {
                status: 400,
                retry_after: None,
                want_status: 400,
                want_code: "context_length_exceeded",
                want_retry_after: None,
                passes_message: true,
            },
        ),
        (
            fixture!("error.400-failed-precondition.json"),
            ErrorCase {
                status: 400,
                retry_after: None,
                want_status: 502,
                want_code: "upstream_error",
                want_retry_after: None,
                passes_message: true,
            },
        ),
        (
            fixture!("error.404-model-not-found.json"),
            ErrorCase {
                status: 404,
                retry_after: None,
                want_status: 404,
                want_code: "upstream_not_found",
                want_retry_after: None,
                passes_message: true,
            },
        ),
        (
            fixture!("error.429-resource-exhausted.json"),
            ErrorCase {
                status: 429,
                retry_after: None,
                want_status: 429,
                want_code: "upstream_rate_limited",
                want_retry_after: Some("35"),
                passes_message: false,
            },
        ),
        (
            fixture!("error.500-internal.json"),
            ErrorCase {
                status: 500,
                retry_after: None,
                want_status: 502,
                want_code: "upstream_error",
                want_retry_after: None,
                passes_message: false,
            },
        ),
        (
            fixture!("error.503-unavailable.json"),
            ErrorCase {
                status: 503,
                retry_after: Some("2"),
                want_status: 503,
                want_code: "upstream_overloaded",
                want_retry_after: Some("2"),
                passes_message: false,
            },
        ),
        (
            fixture!("error.504-deadline-exceeded.json"),
            ErrorCase {
                status: 504,
                retry_after: None,
                want_status: 504,
                want_code: "upstream_error",
                want_retry_after: None,
                passes_message: false,
            },
        ),
    ];

    #[test]
    fn error_fixtures_map_to_the_right_class() {
        for ((name, body), case) in ERRORS {
            let e = map_error("gem", case.status, body.as_bytes(), case.retry_after);
            assert_eq!(e.status(), case.want_status, "{name}");
            assert_eq!(e.code(), case.want_code, "{name}");
            assert_eq!(e.retry_after(), case.want_retry_after, "{name}");
            let upstream_text = json_of(body)["error"]["message"]
                .as_str()
                .unwrap()
                .trim()
                .to_owned();
            assert_eq!(
                e.message().contains(&upstream_text),
                case.passes_message,
                "{name}: {}",
                e.message()
            );
            assert!(
                e.message().contains("'gem'"),
                "{name}: errors name the provider"
            );
            assert_eq!(
                is_retryable(case.status),
                matches!(case.status, 429 | 500 | 503 | 504),
                "{name}"
            );
        }
    }

    #[test]
    fn error_edge_cases() {
        // A 429 header wins over RetryInfo; dates are not passed on.
        let (_, body) = ERRORS[7].0;
        assert_eq!(
            map_error("g", 429, body.as_bytes(), Some("7")).retry_after(),
            Some("7")
        );
        assert_eq!(
            map_error(
                "g",
                429,
                body.as_bytes(),
                Some("Wed, 21 Oct 2015 07:28:00 GMT")
            )
            .retry_after(),
            Some("35")
        );
        // The array shape of streamGenerateContent without alt=sse.
        let e = map_error(
            "g",
            400,
            br#"[{"error": {"code": 400, "message": "Bad field", "status": "INVALID_ARGUMENT"}}]"#,
            None,
        );
        assert!(e.message().contains("Bad field"));
        let e = map_error("g", 400, b"<html>Bad Request</html>", None);
        assert_eq!((e.status(), e.code()), (400, "upstream_invalid_request"));
        assert!(e.message().contains("HTTP 400"));
        assert_eq!(map_error("g", 302, b"", None).code(), "upstream_redirect");
        assert_eq!(
            map_error("g", 401, b"{}", None).code(),
            "upstream_auth_failed"
        );
        assert_eq!(map_error("g", 413, b"{}", None).status(), 413);
        assert_eq!(map_error("g", 409, b"{}", None).status(), 400);
        assert_eq!(map_error("g", 502, b"", None).status(), 502);
        assert!(!is_retryable(400) && !is_retryable(403) && !is_retryable(404));
    }

    #[test]
    fn upstream_text_is_scrubbed_of_keys() {
        let key = "AIzaSyD-CANARY_0123456789abcdefghijklmno";
        let body = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "message": format!("Bad value for key {key}, also sk-CANARY0123456789 and Bearer abc.def")}});
        let e = map_error("g", 400, body.to_string().as_bytes(), None);
        let text = e.to_body().to_string();
        assert!(!text.contains("CANARY"), "{text}");
        assert!(text.contains("Bad value for key [redacted]"), "{text}");
        assert_eq!(scrub_google_keys("AIza short AIzaSy"), "AIza short AIzaSy");
        let long = "x".repeat(2000);
        let e = map_error(
            "g",
            400,
            json!({"error": {"message": long}}).to_string().as_bytes(),
            None,
        );
        assert!(e.message().len() < 700);
        let frame = decode(&[format!(
            "data: {}\r\n\r\n",
            json!({"error": {"message": format!("leak {key}")}})
        )
        .as_bytes()]);
        let err = StreamState::new(ID.into(), 0, MODEL.into())
            .on_frame(&frame[0])
            .unwrap_err();
        assert!(!err.message().contains("CANARY"));
    }

    // ------------------------------------------------------------ embeddings

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn embeddings_to_wire_shapes() {
        let w = embeddings_to_wire(
            &obj(json!({"model": "e", "input": "hello"})),
            "gemini-embedding-001",
        )
        .unwrap();
        assert_eq!(
            w,
            json!({"requests": [{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello"}]}}]})
        );
        let w = embeddings_to_wire(&obj(json!({"model": "e", "input": ["a", "b"], "dimensions": 768, "encoding_format": "base64"})), "models/m").unwrap();
        assert_eq!(
            w,
            json!({"requests": [
                {"model": "models/m", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 768},
                {"model": "models/m", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 768}
            ]})
        );
        for bad in [
            json!({"input": [[1, 2, 3]]}),
            json!({"input": 5}),
            json!({"input": []}),
            json!({"input": "x", "dimensions": 0}),
        ] {
            assert_eq!(
                embeddings_to_wire(&obj(bad.clone()), "m")
                    .unwrap_err()
                    .status(),
                400,
                "{bad}"
            );
        }
        let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        let err = embeddings_to_wire(&obj(json!({"input": many})), "m").unwrap_err();
        assert!(err.message().contains("at most 100"));
    }

    #[test]
    fn embeddings_golden_float_and_base64() {
        let body = include_str!("../../tests/fixtures/gemini/embed.batch.json");
        let expected = json_of(include_str!(
            "../../tests/fixtures/gemini/embed.batch.expected.json"
        ));
        let got = embeddings_from_wire(body.as_bytes(), "gemini-embedding-001", false).unwrap();
        assert_eq!(
            got.as_object().unwrap().keys().collect::<Vec<_>>(),
            vec!["data", "model", "object"]
        );
        assert_eq!(
            (&got["object"], &got["model"]),
            (&expected["object"], &expected["model"])
        );
        let data = got["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        for (g, e) in data.iter().zip(expected["data"].as_array().unwrap()) {
            assert_eq!((&g["object"], &g["index"]), (&e["object"], &e["index"]));
            let gv: Vec<f64> = serde_json::from_value(g["embedding"].clone()).unwrap();
            let ev: Vec<f64> = serde_json::from_value(e["embedding"].clone()).unwrap();
            assert_eq!(gv.len(), ev.len());
            for (a, b) in gv.iter().zip(&ev) {
                assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            }
            let norm: f64 = gv.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "unit length: {norm}");
        }
        let b64 = embeddings_from_wire(body.as_bytes(), "gemini-embedding-001", true).unwrap();
        for (g, f) in b64["data"].as_array().unwrap().iter().zip(data) {
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
    }

    #[test]
    fn embeddings_usage_is_omitted_unless_reported() {
        let body = br#"{"embeddings": [{"values": [3, 4]}]}"#;
        let v = embeddings_from_wire(body, "m", false).unwrap();
        assert!(v.get("usage").is_none());
        assert_eq!(v["data"][0]["embedding"], json!([0.6, 0.8]));
        let body =
            br#"{"embeddings": [{"values": [1]}], "usageMetadata": {"promptTokenCount": 4}}"#;
        let v = embeddings_from_wire(body, "m", false).unwrap();
        assert_eq!(v["usage"], json!({"prompt_tokens": 4, "total_tokens": 4}));
        assert_eq!(
            embeddings_from_wire(b"{}", "m", false).unwrap_err().code(),
            "upstream_invalid_response"
        );
        let zero =
            embeddings_from_wire(br#"{"embeddings": [{"values": [0, 0]}]}"#, "m", false).unwrap();
        assert_eq!(zero["data"][0]["embedding"], json!([0.0, 0.0]));
    }
}
