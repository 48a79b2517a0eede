//! The exact cache's pure core: which requests may be cached, the key, the
//! stream accumulator, the stored entry and its replay, and the TTL rules. No
//! `worker` types and no I/O; the handler wires this to KV.
//!
//! Threats and the anchors they come from: `../shared/reference/anchors-reliability.md`
//! C1 (cross-tenant hits), C2 (keys missing output-affecting parameters), C4
//! (partial streams cached), C5 (hits re-billed); code-style rule 9
//! (exhaustive destructuring).
//!
//! # What may be cached ([`cacheability`])
//!
//! Every refusal is a short snake-case reason for the `SKIP` response header.
//!
//! * **Chat: only deterministic requests** — an explicit `temperature: 0`
//!   (`0` or `0.0`) or an integer `seed`. A missing temperature is *not* 0: it
//!   defaults to 1 at OpenAI (OrcaRouter #84 treated it as 0). `temperature:
//!   null` counts as missing. Reason `nondeterministic`.
//! * **`n` absent or 1.** `n > 1` asks for several different samples; a client
//!   asking for variety should get it. Reason `n_not_1`.
//! * **No `logprobs: true` / `top_logprobs`.** An entry would have to reproduce
//!   the per-token log-probabilities faithfully (and across the stream and
//!   JSON forms); it does not store them. Reason `logprobs`.
//! * **No audio output** (`audio`, or `modalities` naming anything but
//!   `text`): entries store text only. Reason `audio_output`.
//! * **No `web_search_options`**: search results change over time and arrive
//!   as annotations an entry does not store. Reason `web_search`.
//! * **No `store: true`**: it asks the provider for a side effect (a stored
//!   completion) that a hit would silently skip. Reason `store`.
//! * **Embeddings: always** — an embedding is a deterministic function of its
//!   input.
//! * Per-route and per-key policy (no tools, temperature thresholds, mode off)
//!   is the caller's, on top of this.
//!
//! # The key ([`cache_key`])
//!
//! Lowercase hex SHA-256 over a prefix-free encoding: each field is written as
//! its byte length (8 bytes, big-endian) followed by its bytes, so no two
//! different field splits give the same byte string (tenant `ab` + route `c`
//! never equals tenant `a` + route `bc`). Fields, in order:
//!
//! 1. a domain tag and [`SCHEMA_VERSION`] (bump it to orphan every old entry);
//! 2. the tenant (C1: the same body from two tenants gives two keys);
//! 3. the route identity: the requested model plus the sorted, de-duplicated
//!    `provider/model` links it can resolve to ([`route_identity`]). The key
//!    is computed before the walk, so the link that will answer is not known
//!    yet; the set of links is. Their order (fallback order, weights) is left
//!    out: it changes which of those models answers, not the set of possible
//!    answers. Changing a route's links changes every key of that route;
//! 4. the endpoint (`chat.completions` / `embeddings`);
//! 5. the namespace, tagged so that "no namespace" and an empty namespace
//!    differ. It comes from a request header and only partitions *within* the
//!    tenant: it is never a way to reach another tenant's entries (C1);
//! 6. the canonical request (below), as canonical JSON: object keys sorted by
//!    byte order at every depth, no whitespace, numbers as `serde_json` prints
//!    them. So key order and whitespace never change the key.
//!
//! ## The canonical chat request
//!
//! Built by destructuring [`ChatRequest`] exhaustively (rule 9): a field added
//! to `ChatRequest` fails to compile here until someone decides whether it
//! belongs in the key. Excluded, because each is proven not to change the
//! generated output:
//!
//! * `model` — already in the route identity (with every model it resolves to).
//! * `stream` — framing only: the same tokens arrive as one JSON body or as
//!   chunks, and entries are replayed in either form.
//! * `stream_options` (whole object, unknown members included) — its members
//!   (`include_usage`, `include_obfuscation`) only shape the stream's framing;
//!   the replay emits the usage chunk on demand from the stored usage.
//! * `user` — an end-user id for the provider's abuse monitoring; never shown
//!   to the model. Two end-users of one tenant therefore share entries; a
//!   tenant that wants them apart sends a namespace.
//! * `metadata` — tags for OpenAI's stored completions; never shown to the model.
//!
//! Everything else is included:
//!
//! * Scalars from their typed form, which normalises numbers (`0` ≡ `0.0`)
//!   and `stop` (`"x"` ≡ `["x"]`): `temperature, top_p, max_tokens,
//!   max_completion_tokens, stop, n, seed, presence_penalty,
//!   frequency_penalty, logit_bias, logprobs, top_logprobs,
//!   parallel_tool_calls, reasoning_effort`.
//! * `messages, tools, tool_choice, response_format` as the client sent them
//!   (canonicalised), not their typed form: the typed structs drop unknown
//!   nested members (`FunctionDef`, `ToolCall`, `ResponseFormat`… have no
//!   catch-all), and a new member of a tool definition must change the key.
//! * `extra` (every unknown top-level field, e.g. `prediction`,
//!   `service_tier`, `prompt_cache_key`) whole. A decision to exclude one of
//!   them later is a new named field in `ChatRequest`.
//! * Top-level `null` equals absent (as for the typed `Option`s). An explicit
//!   default (`n: 1`) does *not* equal absent: that costs a miss, never a wrong
//!   hit.
//! * A body that does not parse as a `ChatRequest` has no key (`Err`): the
//!   caller skips the cache for it rather than failing the request.
//!
//! ## The canonical embeddings request
//!
//! The body minus `model` (in the route identity), `encoding_format` (float
//! and base64 are the same vectors: entries store the vectors once and the
//! replay encodes them as the request asks, [`replay_embeddings`]) and `user`
//! (as for chat). Everything else (`input`, `dimensions`, unknown fields)
//! is included; top-level `null` equals absent.
//!
//! # Streams ([`StreamAccumulator`])
//!
//! Fed the data payload of every upstream frame — before the usage chunk is
//! stripped for a client that did not ask for it — it rebuilds the
//! `chat.completion` the stream describes. Strings are concatenated as the
//! official SDK does (`openai-python` `src/openai/lib/streaming/_deltas.py`,
//! `accumulate_delta`: strings concatenate, `index`/`type` are replaced):
//! content, reasoning_content, refusal, and per tool-call index its id, name
//! and arguments. [`StreamAccumulator::complete`] returns `Some` only when
//! (C4): `[DONE]` arrived, no error frame, usage was reported, every choice
//! has a finish reason, choice and tool-call indices are contiguous from 0,
//! and nothing the replay could not reproduce was seen — a non-JSON data
//! frame, data after `[DONE]`, non-null `logprobs`, or a non-empty delta
//! member other than `role`, `content`, `reasoning_content`, `refusal` and
//! `tool_calls` (e.g. OpenRouter's `reasoning`, audio). It cannot see a
//! client abort: the caller also requires the observer's `StreamEnd::Completed`.
//!
//! # Entries ([`CacheEntry`])
//!
//! An entry holds what is needed to rebuild the response: for chat the
//! choices; for embeddings the vectors as base64 of little-endian `f32`
//! (OpenAI's base64 format, under half the size of JSON floats in KV);
//! plus the provider and model that answered, when it was generated, and the
//! original usage. On a hit the response body carries that original usage
//! (the replay is faithful; the `HIT` header says it came from the cache)
//! while the ledger row records cost 0 and those tokens as saved (C5).
//!
//! Only complete, successful answers are stored: usage present, every
//! choice finished with `stop`, `length` or `tool_calls` (`content_filter` is
//! a moderation outcome that can change, and is not cached), no logprobs, a
//! model name; for non-streamed bodies, no non-empty message member the entry
//! would drop (`audio`, non-empty `annotations`…). Embeddings need usage,
//! finite values and indices `0..n`. Chunk and body extras such as
//! `system_fingerprint` and `service_tier` are not stored.
//!
//! Entries are JSON. [`encode_entry`] refuses one larger than the configured
//! limit ([`DEFAULT_MAX_ENTRY_BYTES`], 1 MiB; never more than KV's 25 MiB
//! value limit, [`KV_MAX_VALUE_BYTES`]). [`decode_entry`] returns `None`
//! (a miss) for anything it cannot fully trust: unparseable, another schema
//! version, or embeddings whose vectors do not decode.
//!
//! # Replay
//!
//! [`replay_json`] gives a `chat.completion` with the caller's fresh `id` and
//! `created`. [`replay_sse`] gives the frames of an OpenAI stream: per choice a
//! role chunk, reasoning_content, content and refusal pieces of at most
//! [`REPLAY_PIECE_CHARS`] characters (so clients still see a stream), each
//! tool call as a first fragment with id, type, name and empty arguments and
//! then its arguments in pieces, and a finish chunk; then the usage chunk
//! (`choices: []`) only if the client asked for usage (in which case every
//! chunk carries `"usage": null`, OpenAI's shape); then `[DONE]`. Either form
//! replays an entry made from either form. Feeding [`replay_sse`]'s frames to
//! a [`StreamAccumulator`] gives the stored completion back (tested).
//!
//! # TTL ([`effective_ttl`])
//!
//! KV refuses an `expirationTtl` under 60 s. The result is the
//! `x-tollgate-cache-ttl` header (decimal seconds) if present, else the
//! default, clamped to `[60, max(max_secs, 60)]`. A header that is not plain
//! decimal digits is a 400; so is `0` (not caching is a cache-mode decision,
//! not a TTL); a value too large for `u64` is clamped like any other large one.
//!
//! # KV names
//!
//! [`kv_name`] lays keys out as `cache/v1/<tenant hash>/<route hash>/<key>` so
//! an admin can purge a tenant or a tenant's route by KV prefix
//! ([`kv_tenant_prefix`], [`kv_route_prefix`]). The short hashes only scope
//! purges; isolation comes from the full key, which already contains both.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::GatewayError;
use crate::ledger::Endpoint;
use crate::openai::{
    AssistantMessage, ChatChunk, ChatCompletion, ChatRequest, Choice, ChunkChoice, Delta,
    FunctionCall, FunctionCallDelta, ToolCall, ToolCallDelta, UsageBody,
};
use crate::sse::{encode_data, DONE_FRAME};
use crate::usage::usage_from_object;

/// Part of every key and every entry; bump to orphan all existing entries.
pub const SCHEMA_VERSION: u32 = 1;

/// KV's smallest `expirationTtl`, in seconds.
pub const KV_MIN_TTL_SECS: u64 = 60;

/// KV's largest value: 25 MiB.
pub const KV_MAX_VALUE_BYTES: usize = 25 * 1024 * 1024;

/// Default limit for [`encode_entry`]: 1 MiB.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 1024 * 1024;

/// Largest text piece per chunk in [`replay_sse`], in characters.
pub const REPLAY_PIECE_CHARS: usize = 64;

/// The request header that asks for a TTL.
pub const TTL_HEADER: &str = "x-tollgate-cache-ttl";

/// Separates cache keys from any other SHA-256 the gateway computes.
const KEY_DOMAIN: &[u8] = b"tollgate/exact-cache";

/// Finish reasons whose answer is stored.
const CACHEABLE_FINISH: [&str; 3] = ["stop", "length", "tool_calls"];

// ------------------------------------------------------------ cacheability

/// An operator's caching policy (global, per key or per route; the most
/// specific level that sets a field wins: route, then key, then global).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CachePolicy {
    /// `off` | `opt-in` | `on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<crate::config::CacheMode>,
    /// Cache requests that carry `tools` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<bool>,
    /// Highest `temperature` whose answers are cached (default 0: only
    /// deterministic requests). A missing temperature counts as 1, the
    /// providers' default. A `seed` makes any temperature cacheable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_temperature: Option<f64>,
    /// The semantic layer: `off` | `opt-in` | `on` | `shadow` (`semantic.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic: Option<crate::semantic::SemanticMode>,
    /// Cosine similarity a semantic hit needs (0.5–1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_threshold: Option<f32>,
}

impl CachePolicy {
    /// `self` with every field `over` sets replaced.
    #[must_use]
    pub fn overlay(&self, over: &CachePolicy) -> CachePolicy {
        CachePolicy {
            mode: over.mode.or(self.mode),
            tools: over.tools.or(self.tools),
            max_temperature: over.max_temperature.or(self.max_temperature),
            semantic: over.semantic.or(self.semantic),
            semantic_threshold: over.semantic_threshold.or(self.semantic_threshold),
        }
    }

    /// Problems with the policy's values.
    pub fn validate(&self, at: &str) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(t) = self.max_temperature.filter(|t| !(0.0..=2.0).contains(t)) {
            errors.push(format!(
                "{at}.max_temperature: must be between 0 and 2, not {t}"
            ));
        }
        if let Some(t) = self.semantic_threshold.filter(|t| !(0.5..=1.0).contains(t)) {
            errors.push(format!(
                "{at}.semantic_threshold: must be between 0.5 and 1, not {t}"
            ));
        }
        errors
    }
}

/// `Ok` when the request may be cached under the default policy; otherwise
/// the reason, for the `SKIP` header. See the module docs.
pub fn cacheability(endpoint: Endpoint, body: &Map<String, Value>) -> Result<(), &'static str> {
    cacheability_with(endpoint, body, &CachePolicy::default())
}

/// [`cacheability`] under an operator's policy.
pub fn cacheability_with(
    endpoint: Endpoint,
    body: &Map<String, Value>,
    policy: &CachePolicy,
) -> Result<(), &'static str> {
    match endpoint {
        Endpoint::Embeddings => Ok(()),
        Endpoint::ChatCompletions | Endpoint::Messages => {
            let has_tools = present(body, "tools")
                .and_then(Value::as_array)
                .is_some_and(|t| !t.is_empty());
            if has_tools && policy.tools == Some(false) {
                return Err("tools_not_cached");
            }
            chat_cacheability(body, policy.max_temperature.unwrap_or(0.0))
        }
    }
}

/// The member, unless absent or `null`.
fn present<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    body.get(name).filter(|v| !v.is_null())
}

fn chat_cacheability(body: &Map<String, Value>, max_temperature: f64) -> Result<(), &'static str> {
    // A missing temperature means the provider's default, 1.
    let temperature = present(body, "temperature").map_or(Some(1.0), Value::as_f64);
    let within = temperature.is_some_and(|t| t <= max_temperature);
    let seeded = present(body, "seed").is_some_and(|s| s.is_i64() || s.is_u64());
    if !within && !seeded {
        return Err("nondeterministic");
    }
    if present(body, "n").is_some_and(|n| n.as_u64() != Some(1)) {
        return Err("n_not_1");
    }
    let logprobs = present(body, "logprobs").is_some_and(|v| v != &Value::Bool(false));
    if logprobs || present(body, "top_logprobs").is_some() {
        return Err("logprobs");
    }
    let non_text_modality = present(body, "modalities")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|x| x.as_str() != Some("text")));
    if present(body, "audio").is_some() || non_text_modality {
        return Err("audio_output");
    }
    if present(body, "web_search_options").is_some() {
        return Err("web_search");
    }
    if present(body, "store") == Some(&Value::Bool(true)) {
        return Err("store");
    }
    Ok(())
}

// --------------------------------------------------------------------- key

/// The route identity [`cache_key`] takes: the requested model (or alias) and
/// the `provider/model` links it can resolve to, sorted and de-duplicated, as
/// canonical JSON (itself unambiguous whatever the strings contain).
pub fn route_identity<S: AsRef<str>>(requested_model: &str, links: &[S]) -> String {
    let mut links: Vec<&str> = links.iter().map(AsRef::as_ref).collect();
    links.sort_unstable();
    links.dedup();
    let mut m = Map::new();
    m.insert("links".to_owned(), Value::from(links));
    m.insert("model".to_owned(), Value::from(requested_model));
    canonical_json(&Value::Object(m))
}

/// The cache key: lowercase hex SHA-256; see the module docs for what goes in.
/// `Err` when a chat body does not parse as a `ChatRequest` (skip the cache).
pub fn cache_key(
    tenant: &str,
    route_identity: &str,
    endpoint: Endpoint,
    namespace: Option<&str>,
    body: &Map<String, Value>,
) -> Result<String, GatewayError> {
    let canonical = match endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages => canonical_chat(body)?,
        Endpoint::Embeddings => canonical_embeddings(body),
    };
    Ok(digest(
        tenant,
        route_identity,
        endpoint,
        namespace,
        canonical.as_bytes(),
    ))
}

/// One length-prefixed field.
fn field(h: &mut Sha256, bytes: &[u8]) {
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    h.update(len.to_be_bytes());
    h.update(bytes);
}

fn digest(
    tenant: &str,
    route_identity: &str,
    endpoint: Endpoint,
    namespace: Option<&str>,
    canonical: &[u8],
) -> String {
    let mut h = Sha256::new();
    field(&mut h, KEY_DOMAIN);
    field(&mut h, &SCHEMA_VERSION.to_be_bytes());
    field(&mut h, tenant.as_bytes());
    field(&mut h, route_identity.as_bytes());
    field(&mut h, endpoint.as_str().as_bytes());
    match namespace {
        None => field(&mut h, &[0]),
        Some(ns) => {
            let mut tagged = Vec::with_capacity(ns.len() + 1);
            tagged.push(1);
            tagged.extend_from_slice(ns.as_bytes());
            field(&mut h, &tagged);
        }
    }
    field(&mut h, canonical);
    hex::encode(h.finalize())
}

/// The canonical request object, built field by field.
#[derive(Default)]
struct Canon(Map<String, Value>);

impl Canon {
    /// A typed value; `None` is left out (absent ≡ `null`).
    fn typed<T: Into<Value>>(&mut self, name: &str, value: Option<T>) {
        if let Some(v) = value {
            self.0.insert(name.to_owned(), v.into());
        }
    }

    /// The client's own JSON for `name`, when the typed form says it is there.
    fn raw(&mut self, body: &Map<String, Value>, name: &str, is_set: bool) {
        if let Some(v) = present(body, name).filter(|_| is_set) {
            self.0.insert(name.to_owned(), v.clone());
        }
    }
}

/// The canonical chat request the key hashes (the semantic cache's partition
/// reuses it with the last user turn masked).
pub fn canonical_chat_request(body: &Map<String, Value>) -> Result<String, GatewayError> {
    canonical_chat(body)
}

fn canonical_chat(body: &Map<String, Value>) -> Result<String, GatewayError> {
    let req = ChatRequest::from_body(body)?;
    // Rule 9: every field is named; a new one does not compile until it is
    // decided here. Reasons in the module docs.
    let ChatRequest {
        // Excluded: proven not to change the output.
        model: _,
        stream: _,
        stream_options: _,
        user: _,
        metadata: _,
        // Included as sent (their typed forms drop unknown nested members).
        messages,
        tools,
        tool_choice,
        response_format,
        // Included typed (normalised numbers; `stop` as a list).
        temperature,
        top_p,
        max_tokens,
        max_completion_tokens,
        stop,
        n,
        seed,
        presence_penalty,
        frequency_penalty,
        logit_bias,
        logprobs,
        top_logprobs,
        parallel_tool_calls,
        reasoning_effort,
        // Included whole.
        extra,
    } = req;
    let mut c = Canon::default();
    c.raw(body, "messages", !messages.is_empty());
    c.raw(body, "tools", tools.is_some());
    c.raw(body, "tool_choice", tool_choice.is_some());
    c.raw(body, "response_format", response_format.is_some());
    c.typed("temperature", temperature);
    c.typed("top_p", top_p);
    c.typed("max_tokens", max_tokens);
    c.typed("max_completion_tokens", max_completion_tokens);
    c.typed("stop", stop.map(|s| s.to_vec()));
    c.typed("n", n);
    c.typed("seed", seed);
    c.typed("presence_penalty", presence_penalty);
    c.typed("frequency_penalty", frequency_penalty);
    c.typed("logit_bias", logit_bias);
    c.typed("logprobs", logprobs);
    c.typed("top_logprobs", top_logprobs);
    c.typed("parallel_tool_calls", parallel_tool_calls);
    c.typed("reasoning_effort", reasoning_effort);
    // `extra` holds only names `ChatRequest` does not declare, so it cannot
    // overwrite anything above.
    for (name, value) in extra {
        if !value.is_null() {
            c.0.insert(name, value);
        }
    }
    Ok(canonical_json(&Value::Object(c.0)))
}

/// Embeddings fields that never change the vectors (see the module docs).
const EMBEDDINGS_EXCLUDED: [&str; 3] = ["model", "encoding_format", "user"];

fn canonical_embeddings(body: &Map<String, Value>) -> String {
    let kept: Map<String, Value> = body
        .iter()
        .filter(|(k, v)| !v.is_null() && !EMBEDDINGS_EXCLUDED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    canonical_json(&Value::Object(kept))
}

/// Compact JSON with object keys sorted by byte order at every depth, whatever
/// the map's own order (`serde_json`'s `preserve_order` may be on in a
/// dependency).
fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut members: Vec<(&String, &Value)> = m.iter().collect();
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

// ------------------------------------------------------------- KV names

fn short_hash(s: &str) -> String {
    let h = Sha256::digest(s.as_bytes());
    hex::encode(h.get(..8).unwrap_or_default())
}

/// `cache/v1/<tenant hash>/`: every entry of a tenant.
pub fn kv_tenant_prefix(tenant: &str) -> String {
    format!("cache/v{SCHEMA_VERSION}/{}/", short_hash(tenant))
}

/// `cache/v1/<tenant hash>/<route hash>/`: a tenant's entries for one route
/// (pass the requested model or alias, as an admin would name it).
pub fn kv_route_prefix(tenant: &str, route: &str) -> String {
    format!("{}{}/", kv_tenant_prefix(tenant), short_hash(route))
}

/// The route segment of KV names (to purge one route across tenants).
pub fn kv_route_segment(route: &str) -> String {
    short_hash(route)
}

/// Every entry of every tenant.
pub fn kv_all_prefix() -> String {
    format!("cache/v{SCHEMA_VERSION}/")
}

/// Whether a KV name belongs to `route` (any tenant).
pub fn kv_name_is_route(name: &str, route_segment: &str) -> bool {
    name.split('/').nth(3) == Some(route_segment)
}

/// The KV name of an entry: [`kv_route_prefix`] then the [`cache_key`].
pub fn kv_name(tenant: &str, route: &str, key: &str) -> String {
    format!("{}{key}", kv_route_prefix(tenant, route))
}

// ------------------------------------------------------------- accumulator

/// Rebuilds the `chat.completion` an OpenAI-format stream describes; see the
/// module docs.
#[derive(Debug)]
pub struct StreamAccumulator {
    id: Option<String>,
    created: Option<u64>,
    model: Option<String>,
    choices: BTreeMap<u32, ChoiceAcc>,
    usage: Option<UsageBody>,
    saw_done: bool,
    /// An error frame, or anything the replay could not reproduce.
    spoiled: bool,
    /// Text bytes accumulated so far, and the most allowed (beyond it the
    /// answer could not be stored anyway, so memory is released).
    text_bytes: usize,
    max_text_bytes: usize,
}

#[derive(Debug, Default)]
struct ChoiceAcc {
    content: Option<String>,
    reasoning_content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u32, ToolAcc>,
    finish_reason: Option<String>,
}

#[derive(Debug, Default)]
struct ToolAcc {
    id: String,
    kind: Option<String>,
    name: String,
    arguments: String,
}

impl Default for StreamAccumulator {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamAccumulator {
    /// Accumulates up to KV's value limit of text.
    pub fn new() -> Self {
        Self::with_limit(KV_MAX_VALUE_BYTES)
    }

    /// Gives up (never complete) once more than `max_text_bytes` of text has
    /// arrived: pass the entry limit given to [`encode_entry`].
    pub fn with_limit(max_text_bytes: usize) -> Self {
        Self {
            id: None,
            created: None,
            model: None,
            choices: BTreeMap::new(),
            usage: None,
            saw_done: false,
            spoiled: false,
            text_bytes: 0,
            max_text_bytes,
        }
    }

    /// Feeds one frame's data payload (`[DONE]` included).
    pub fn on_data(&mut self, data: &str) {
        if self.spoiled {
            return;
        }
        if self.saw_done {
            // Nothing may follow the terminator.
            self.spoil();
            return;
        }
        if data == "[DONE]" {
            self.saw_done = true;
            return;
        }
        let ok = serde_json::from_str::<Value>(data)
            .ok()
            .is_some_and(|chunk| self.absorb(&chunk));
        if !ok || self.text_bytes > self.max_text_bytes {
            self.spoil();
        }
    }

    /// Whether the stream can no longer complete (error frame, oversize,
    /// unreplayable content, data after `[DONE]`).
    pub fn is_spoiled(&self) -> bool {
        self.spoiled
    }

    fn spoil(&mut self) {
        self.spoiled = true;
        self.choices.clear();
    }

    /// Records one chunk; `false` when it makes the stream uncacheable.
    fn absorb(&mut self, chunk: &Value) -> bool {
        let Some(obj) = chunk.as_object() else {
            return false;
        };
        if obj.get("error").is_some_and(|e| !e.is_null()) {
            return false;
        }
        if self.id.is_none() {
            self.id = obj.get("id").and_then(Value::as_str).map(str::to_owned);
        }
        if self.created.is_none() {
            self.created = obj.get("created").and_then(Value::as_u64);
        }
        if self.model.is_none() {
            self.model = obj.get("model").and_then(Value::as_str).map(str::to_owned);
        }
        // OpenAI's `usage`, or Groq's `x_groq.usage` on its final chunk.
        let usage = obj
            .get("usage")
            .or_else(|| obj.get("x_groq").and_then(|x| x.get("usage")))
            .filter(|u| !u.is_null())
            .and_then(|u| serde_json::from_value::<UsageBody>(u.clone()).ok());
        if usage.is_some() {
            self.usage = usage;
        }
        match obj.get("choices") {
            None | Some(Value::Null) => true,
            Some(Value::Array(choices)) => choices.iter().all(|c| self.absorb_choice(c)),
            Some(_) => false,
        }
    }

    fn absorb_choice(&mut self, choice: &Value) -> bool {
        let Some(c) = choice.as_object() else {
            return false;
        };
        let Some(index) = c
            .get("index")
            .and_then(Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
        else {
            return false;
        };
        if c.get("logprobs").is_some_and(|l| !is_empty(l)) {
            return false;
        }
        let acc = self.choices.entry(index).or_default();
        let mut added = 0;
        match c.get("delta") {
            None | Some(Value::Null) => {}
            Some(Value::Object(delta)) => {
                for (name, value) in delta {
                    let ok = match name.as_str() {
                        "role" => value.is_null() || value.is_string(),
                        "content" => append(&mut acc.content, value, &mut added),
                        "reasoning_content" => {
                            append(&mut acc.reasoning_content, value, &mut added)
                        }
                        "refusal" => append(&mut acc.refusal, value, &mut added),
                        "tool_calls" => absorb_tool_calls(acc, value, &mut added),
                        _ => is_empty(value),
                    };
                    if !ok {
                        return false;
                    }
                }
            }
            Some(_) => return false,
        }
        self.text_bytes = self.text_bytes.saturating_add(added);
        match c.get("finish_reason") {
            None | Some(Value::Null) => true,
            Some(Value::String(r)) => {
                acc.finish_reason = Some(r.clone());
                true
            }
            Some(_) => false,
        }
    }

    /// The completion, if the stream was complete and successful (C4).
    pub fn complete(self) -> Option<ChatCompletion> {
        if self.spoiled || !self.saw_done || self.choices.is_empty() {
            return None;
        }
        let usage = self.usage?;
        let mut choices = Vec::with_capacity(self.choices.len());
        for (expected, (index, acc)) in (0u32..).zip(self.choices) {
            if index != expected {
                return None;
            }
            let finish_reason = Some(acc.finish_reason?);
            let mut tool_calls = Vec::with_capacity(acc.tool_calls.len());
            for (expected, (i, t)) in (0u32..).zip(acc.tool_calls) {
                let kind = t.kind.unwrap_or_else(|| "function".to_owned());
                if i != expected || t.id.is_empty() || t.name.is_empty() || kind != "function" {
                    return None;
                }
                tool_calls.push(ToolCall {
                    id: t.id,
                    kind,
                    function: FunctionCall {
                        name: t.name,
                        arguments: t.arguments,
                    },
                });
            }
            choices.push(Choice {
                index,
                message: AssistantMessage {
                    role: "assistant".to_owned(),
                    content: acc.content,
                    tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                    refusal: acc.refusal,
                    reasoning_content: acc.reasoning_content,
                },
                logprobs: None,
                finish_reason,
            });
        }
        Some(ChatCompletion {
            id: self.id.unwrap_or_default(),
            object: "chat.completion".to_owned(),
            created: self.created.unwrap_or(0),
            model: self.model.unwrap_or_default(),
            choices,
            usage: Some(usage),
        })
    }
}

/// `null`, `""`, `[]` or `{}`: says nothing the replay would lose.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Concatenates a string fragment (a `null` one is nothing; an empty one
/// still records that the field exists).
fn append(slot: &mut Option<String>, value: &Value, added: &mut usize) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => {
            slot.get_or_insert_with(String::new).push_str(s);
            *added += s.len();
            true
        }
        _ => false,
    }
}

/// Concatenates a plain string fragment into `slot`.
fn append_str(slot: &mut String, value: Option<&Value>, added: &mut usize) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => {
            slot.push_str(s);
            *added += s.len();
            true
        }
        Some(_) => false,
    }
}

fn absorb_tool_calls(acc: &mut ChoiceAcc, value: &Value, added: &mut usize) -> bool {
    let calls = match value {
        Value::Null => return true,
        Value::Array(calls) => calls,
        _ => return false,
    };
    for call in calls {
        let Some(call) = call.as_object() else {
            return false;
        };
        let Some(index) = call
            .get("index")
            .and_then(Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
        else {
            return false;
        };
        let t = acc.tool_calls.entry(index).or_default();
        for (name, value) in call {
            let ok = match name.as_str() {
                "index" => true,
                "id" => append_str(&mut t.id, Some(value), added),
                "type" => match value {
                    Value::Null => true,
                    Value::String(k) => {
                        t.kind = Some(k.clone());
                        true
                    }
                    _ => false,
                },
                "function" => match value {
                    Value::Null => true,
                    Value::Object(f) => f.iter().all(|(k, v)| match k.as_str() {
                        "name" => append_str(&mut t.name, Some(v), added),
                        "arguments" => append_str(&mut t.arguments, Some(v), added),
                        _ => is_empty(v),
                    }),
                    _ => false,
                },
                _ => is_empty(value),
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

// ------------------------------------------------------------------ entries

/// What is stored in KV; see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// [`SCHEMA_VERSION`] when written.
    pub schema: u32,
    /// Unix seconds when the answer was generated (for the entry's age).
    pub created: u64,
    /// The provider that answered, for the hit's ledger row.
    pub provider: String,
    /// The model that answered, as the provider named it.
    pub model: String,
    /// What generating the answer consumed: in the replayed body, and the
    /// ledger's "saved" tokens on a hit (whose cost is 0).
    pub usage: UsageBody,
    pub body: CachedBody,
}

/// The answer itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CachedBody {
    Chat {
        choices: Vec<Choice>,
    },
    /// One vector per input, in index order: base64 of little-endian `f32`.
    Embeddings {
        vectors: Vec<String>,
    },
}

/// Message members an entry reproduces; any other non-empty one refuses the
/// answer.
const REPLAYED_MESSAGE_MEMBERS: [&str; 5] = [
    "role",
    "content",
    "tool_calls",
    "refusal",
    "reasoning_content",
];

impl CacheEntry {
    /// An entry for a chat answer (from [`StreamAccumulator::complete`] or a
    /// parsed body), or why it must not be stored.
    pub fn from_completion(
        completion: ChatCompletion,
        provider: &str,
        created: u64,
    ) -> Result<Self, &'static str> {
        let ChatCompletion {
            model,
            choices,
            usage,
            ..
        } = completion;
        let usage = usage.ok_or("no_usage")?;
        if model.is_empty() {
            return Err("no_model");
        }
        if choices.is_empty() {
            return Err("no_choices");
        }
        let mut stored = Vec::with_capacity(choices.len());
        for (expected, mut choice) in (0u32..).zip(choices) {
            if choice.index != expected {
                return Err("choice_index");
            }
            match choice.finish_reason.as_deref() {
                None => return Err("unfinished"),
                Some(r) if !CACHEABLE_FINISH.contains(&r) => return Err("finish_reason"),
                Some(_) => {}
            }
            if choice.logprobs.as_ref().is_some_and(|l| !l.is_null()) {
                return Err("logprobs");
            }
            choice.logprobs = None;
            "assistant".clone_into(&mut choice.message.role);
            stored.push(choice);
        }
        Ok(Self {
            schema: SCHEMA_VERSION,
            created,
            provider: provider.to_owned(),
            model,
            usage,
            body: CachedBody::Chat { choices: stored },
        })
    }

    /// An entry for a non-streamed `chat.completion` body.
    pub fn from_chat_body(body: &[u8], provider: &str, created: u64) -> Result<Self, &'static str> {
        let value: Value = serde_json::from_slice(body).map_err(|_| "unparsed")?;
        let choices = value
            .get("choices")
            .and_then(Value::as_array)
            .ok_or("unparsed")?;
        for choice in choices {
            let Some(message) = choice.get("message").and_then(Value::as_object) else {
                return Err("unparsed");
            };
            let dropped = message
                .iter()
                .any(|(k, v)| !REPLAYED_MESSAGE_MEMBERS.contains(&k.as_str()) && !is_empty(v));
            if dropped {
                return Err("unreplayable_field");
            }
        }
        let completion: ChatCompletion = serde_json::from_value(value).map_err(|_| "unparsed")?;
        Self::from_completion(completion, provider, created)
    }

    /// An entry for an embeddings `list` body, in either encoding.
    pub fn from_embeddings_body(
        body: &[u8],
        provider: &str,
        created: u64,
    ) -> Result<Self, &'static str> {
        let value: Value = serde_json::from_slice(body).map_err(|_| "unparsed")?;
        let data = value
            .get("data")
            .and_then(Value::as_array)
            .ok_or("unparsed")?;
        let mut indexed = Vec::with_capacity(data.len());
        for item in data {
            let index = item
                .get("index")
                .and_then(Value::as_u64)
                .ok_or("unparsed")?;
            let floats = match item.get("embedding") {
                Some(Value::Array(xs)) => xs
                    .iter()
                    .map(|x| x.as_f64().map(|f| f as f32))
                    .collect::<Option<Vec<f32>>>()
                    .ok_or("unparsed")?,
                Some(Value::String(b64)) => decode_vector(b64).ok_or("unparsed")?,
                _ => return Err("unparsed"),
            };
            if floats.iter().any(|f| !f.is_finite()) {
                return Err("non_finite");
            }
            indexed.push((index, encode_vector(&floats)));
        }
        if indexed.is_empty() {
            return Err("no_data");
        }
        indexed.sort_unstable_by_key(|(i, _)| *i);
        if (0u64..)
            .zip(&indexed)
            .any(|(expected, (i, _))| *i != expected)
        {
            return Err("bad_index");
        }
        let usage = value
            .get("usage")
            .and_then(usage_from_object)
            .ok_or("no_usage")?;
        let model = value
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .ok_or("no_model")?;
        Ok(Self {
            schema: SCHEMA_VERSION,
            created,
            provider: provider.to_owned(),
            model: model.to_owned(),
            usage: UsageBody {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                total_tokens: usage.total_tokens,
                prompt_tokens_details: None,
                completion_tokens_details: None,
            },
            body: CachedBody::Embeddings {
                vectors: indexed.into_iter().map(|(_, v)| v).collect(),
            },
        })
    }

    /// Seconds since the answer was generated (the response's age).
    pub fn age_secs(&self, now: u64) -> u64 {
        now.saturating_sub(self.created)
    }
}

fn encode_vector(floats: &[f32]) -> String {
    let bytes: Vec<u8> = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode_vector(b64: &str) -> Option<Vec<f32>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .filter_map(|c| <[u8; 4]>::try_from(c).ok())
            .map(f32::from_le_bytes)
            .collect(),
    )
}

/// The entry as stored, or why not: `too_large` beyond `max_bytes` (itself
/// capped at [`KV_MAX_VALUE_BYTES`]).
pub fn encode_entry(entry: &CacheEntry, max_bytes: usize) -> Result<Vec<u8>, &'static str> {
    let bytes = serde_json::to_vec(entry).map_err(|_| "encode_failed")?;
    if bytes.len() > max_bytes.min(KV_MAX_VALUE_BYTES) {
        return Err("too_large");
    }
    Ok(bytes)
}

/// A stored entry, or `None` (treat as a miss) if it cannot be trusted.
pub fn decode_entry(bytes: &[u8]) -> Option<CacheEntry> {
    let entry: CacheEntry = serde_json::from_slice(bytes).ok()?;
    if entry.schema != SCHEMA_VERSION {
        return None;
    }
    match &entry.body {
        CachedBody::Chat { choices } if choices.is_empty() => None,
        CachedBody::Embeddings { vectors }
            if vectors.is_empty() || vectors.iter().any(|v| decode_vector(v).is_none()) =>
        {
            None
        }
        _ => Some(entry),
    }
}

// ------------------------------------------------------------------- replay

/// A `chat.completion` body with the caller's fresh `id` and `created`. For an
/// embeddings entry: its `list` body with float vectors (see
/// [`replay_embeddings`] to honour `encoding_format`).
pub fn replay_json(entry: &CacheEntry, id: &str, created: u64) -> Vec<u8> {
    match &entry.body {
        CachedBody::Chat { choices } => {
            let completion = ChatCompletion {
                id: id.to_owned(),
                object: "chat.completion".to_owned(),
                created,
                model: entry.model.clone(),
                choices: choices.clone(),
                usage: Some(entry.usage.clone()),
            };
            // Plain structs with string keys: serialisation cannot fail.
            serde_json::to_vec(&completion).unwrap_or_default()
        }
        CachedBody::Embeddings { .. } => replay_embeddings(entry, false).unwrap_or_default(),
    }
}

#[derive(Serialize)]
struct EmbeddingList<'a, E> {
    object: &'static str,
    data: Vec<EmbeddingItem<E>>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingItem<E> {
    object: &'static str,
    index: usize,
    embedding: E,
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// An embeddings `list` body in the requested encoding (`base64`: OpenAI's
/// little-endian `f32`; otherwise floats, each the same `f32` the provider
/// sent, printed in its shortest form — `0.0057293582` comes back as
/// `0.005729358`). `None` for a chat entry.
pub fn replay_embeddings(entry: &CacheEntry, base64: bool) -> Option<Vec<u8>> {
    let CachedBody::Embeddings { vectors } = &entry.body else {
        return None;
    };
    fn list<E: Serialize>(entry: &CacheEntry, vectors: Vec<E>) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&EmbeddingList {
            object: "list",
            data: vectors
                .into_iter()
                .enumerate()
                .map(|(index, embedding)| EmbeddingItem {
                    object: "embedding",
                    index,
                    embedding,
                })
                .collect(),
            model: &entry.model,
            usage: EmbeddingUsage {
                prompt_tokens: entry.usage.prompt_tokens,
                total_tokens: entry.usage.total_tokens,
            },
        })
    }
    let bytes = if base64 {
        list(entry, vectors.iter().map(String::as_str).collect())
    } else {
        // `decode_entry` checked every vector, so this is `Some`.
        let floats = vectors
            .iter()
            .map(|v| decode_vector(v))
            .collect::<Option<Vec<Vec<f32>>>>()?;
        list(entry, floats)
    };
    bytes.ok()
}

/// `s` in pieces of at most `max` characters (none for `""`).
fn pieces(s: &str, max: usize) -> Vec<&str> {
    let max = max.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (i, _) in s.char_indices() {
        if count == max {
            out.push(s.get(start..i).unwrap_or_default());
            start = i;
            count = 0;
        }
        count += 1;
    }
    if start < s.len() {
        out.push(s.get(start..).unwrap_or_default());
    }
    out
}

/// Pieces of an optional text; one empty piece for `Some("")` so the field
/// still exists after a round trip.
fn text_pieces(s: Option<&str>) -> Vec<&str> {
    match s {
        None => Vec::new(),
        Some("") => vec![""],
        Some(s) => pieces(s, REPLAY_PIECE_CHARS),
    }
}

/// The SSE frames of a stream replaying the entry, `[DONE]` last; see the
/// module docs. Empty for an embeddings entry (they have no stream form).
pub fn replay_sse(entry: &CacheEntry, id: &str, created: u64, include_usage: bool) -> Vec<String> {
    let CachedBody::Chat { choices } = &entry.body else {
        return Vec::new();
    };
    let frame = |choices: Vec<ChunkChoice>, usage: Option<Option<UsageBody>>| {
        let chunk = ChatChunk {
            id: id.to_owned(),
            object: "chat.completion.chunk".to_owned(),
            created,
            model: entry.model.clone(),
            choices,
            usage,
        };
        // Plain structs with string keys: serialisation cannot fail.
        encode_data(&serde_json::to_string(&chunk).unwrap_or_default())
    };
    let null_usage = include_usage.then_some(None);
    let delta_frame = |index: u32, delta: Delta, finish_reason: Option<String>| {
        frame(
            vec![ChunkChoice {
                index,
                delta,
                logprobs: None,
                finish_reason,
            }],
            null_usage.clone(),
        )
    };
    let mut frames = Vec::new();
    for choice in choices {
        let m = &choice.message;
        let index = choice.index;
        frames.push(delta_frame(
            index,
            Delta {
                role: Some("assistant".to_owned()),
                content: m.content.as_ref().map(|_| String::new()),
                ..Delta::default()
            },
            None,
        ));
        for piece in text_pieces(m.reasoning_content.as_deref()) {
            let delta = Delta {
                reasoning_content: Some(piece.to_owned()),
                ..Delta::default()
            };
            frames.push(delta_frame(index, delta, None));
        }
        // The role chunk already carried `content: ""`.
        for piece in pieces(m.content.as_deref().unwrap_or_default(), REPLAY_PIECE_CHARS) {
            let delta = Delta {
                content: Some(piece.to_owned()),
                ..Delta::default()
            };
            frames.push(delta_frame(index, delta, None));
        }
        for piece in text_pieces(m.refusal.as_deref()) {
            let delta = Delta {
                refusal: Some(piece.to_owned()),
                ..Delta::default()
            };
            frames.push(delta_frame(index, delta, None));
        }
        for (i, call) in m.tool_calls.iter().flatten().enumerate() {
            let tool_index = u32::try_from(i).unwrap_or(u32::MAX);
            let first = ToolCallDelta {
                index: tool_index,
                id: Some(call.id.clone()),
                kind: Some(call.kind.clone()),
                function: FunctionCallDelta {
                    name: Some(call.function.name.clone()),
                    arguments: Some(String::new()),
                },
            };
            let mut deltas = vec![first];
            for piece in pieces(&call.function.arguments, REPLAY_PIECE_CHARS) {
                deltas.push(ToolCallDelta {
                    index: tool_index,
                    id: None,
                    kind: None,
                    function: FunctionCallDelta {
                        name: None,
                        arguments: Some(piece.to_owned()),
                    },
                });
            }
            for d in deltas {
                let delta = Delta {
                    tool_calls: Some(vec![d]),
                    ..Delta::default()
                };
                frames.push(delta_frame(index, delta, None));
            }
        }
        frames.push(delta_frame(
            index,
            Delta::default(),
            choice.finish_reason.clone(),
        ));
    }
    if include_usage {
        frames.push(frame(Vec::new(), Some(Some(entry.usage.clone()))));
    }
    frames.push(DONE_FRAME.to_owned());
    frames
}

// ---------------------------------------------------------------------- TTL

/// The TTL to store with, in seconds; see the module docs. `Err` (400) for a
/// header that is not a positive decimal number.
pub fn effective_ttl(
    requested: Option<&str>,
    default_secs: u64,
    max_secs: u64,
) -> Result<u64, GatewayError> {
    let max = max_secs.max(KV_MIN_TTL_SECS);
    let secs = match requested.map(str::trim) {
        None => default_secs,
        Some(v) => {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(GatewayError::invalid_param(
                    TTL_HEADER,
                    format!("'{TTL_HEADER}' must be a whole number of seconds."),
                ));
            }
            // Only digits: the one possible failure is overflow, i.e. "very long".
            let secs = v.parse::<u64>().unwrap_or(u64::MAX);
            if secs == 0 {
                return Err(GatewayError::invalid_param(
                    TTL_HEADER,
                    format!(
                        "'{TTL_HEADER}' must be at least 1 (values under {KV_MIN_TTL_SECS} \
                         become {KV_MIN_TTL_SECS}); to not cache a request, turn its cache mode off."
                    ),
                ));
            }
            secs
        }
    };
    Ok(secs.clamp(KV_MIN_TTL_SECS, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_levels_and_rules() {
        let body = |v: Value| v.as_object().unwrap().clone();
        let chat = Endpoint::ChatCompletions;
        let tools = body(
            json!({"temperature": 0, "tools": [{"type": "function", "function": {"name": "f"}}]}),
        );
        assert_eq!(
            cacheability_with(chat, &tools, &CachePolicy::default()),
            Ok(())
        );
        let no_tools = CachePolicy {
            tools: Some(false),
            ..Default::default()
        };
        assert_eq!(
            cacheability_with(chat, &tools, &no_tools),
            Err("tools_not_cached")
        );
        let warm = body(json!({"temperature": 0.3}));
        assert_eq!(
            cacheability_with(chat, &warm, &CachePolicy::default()),
            Err("nondeterministic")
        );
        let lenient = CachePolicy {
            max_temperature: Some(0.5),
            ..Default::default()
        };
        assert_eq!(cacheability_with(chat, &warm, &lenient), Ok(()));
        // A missing temperature is 1: only a ceiling of 1 or more admits it.
        assert!(cacheability_with(chat, &body(json!({})), &lenient).is_err());
        let global = CachePolicy {
            tools: Some(true),
            max_temperature: Some(0.2),
            ..Default::default()
        };
        let route = CachePolicy {
            tools: Some(false),
            ..Default::default()
        };
        let eff = global.overlay(&route);
        assert_eq!((eff.tools, eff.max_temperature), (Some(false), Some(0.2)));
        assert!(!CachePolicy {
            max_temperature: Some(3.0),
            ..Default::default()
        }
        .validate("x")
        .is_empty());
    }
    use crate::openai::{CompletionTokensDetails, PromptTokensDetails};
    use crate::sse::{SseDecoder, DEFAULT_MAX_LINE_BYTES};
    use serde_json::json;
    use std::collections::HashSet;

    const CHAT_STREAM: &str = include_str!("../tests/fixtures/openai/chat.stream.sse");
    const TOOLS_STREAM: &str = include_str!("../tests/fixtures/openai/chat.tools.stream.sse");
    const CHAT_RESPONSE: &str = include_str!("../tests/fixtures/openai/chat.response.json");
    const EMBEDDINGS_RESPONSE: &str =
        include_str!("../tests/fixtures/openai/embeddings.response.json");

    const ROUTE: &str = r#"{"links":["openai/gpt-4o-mini"],"model":"gpt-4o-mini"}"#;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn chat_key(body: &Value) -> String {
        cache_key(
            "tenant-a",
            ROUTE,
            Endpoint::ChatCompletions,
            None,
            body.as_object().unwrap(),
        )
        .unwrap()
    }

    fn base_body() -> Value {
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "What is 2+2?", "name": "alice"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "add", "arguments": "{\"a\":2,\"b\":2}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "4"}
            ],
            "temperature": 0,
            "top_p": 1,
            "max_tokens": 100,
            "max_completion_tokens": 100,
            "stop": ["END"],
            "n": 1,
            "seed": 7,
            "presence_penalty": 0,
            "frequency_penalty": 0,
            "logit_bias": {"50256": -100},
            "logprobs": false,
            "tools": [{"type": "function",
                       "function": {"name": "add", "parameters": {"type": "object"}}}],
            "tool_choice": "auto",
            "parallel_tool_calls": true,
            "response_format": {"type": "text"},
            "reasoning_effort": "low",
            "stream": false,
            "stream_options": {"include_usage": true},
            "user": "u1",
            "metadata": {"a": "b"},
            "x_custom": {"b": 1, "a": 2}
        })
    }

    /// Sets `key` on the object at `parent` (a JSON pointer).
    fn with(parent: &str, key: &str, value: Value) -> Value {
        let mut b = base_body();
        b.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("no object at {parent}"))
            .insert(key.to_owned(), value);
        b
    }

    fn without(key: &str) -> Value {
        let mut b = base_body();
        b.as_object_mut().unwrap().remove(key);
        b
    }

    // ------------------------------------------------------------- the key

    #[test]
    fn changing_any_one_output_affecting_field_changes_the_key() {
        let cases = [
            ("max_tokens", with("", "max_tokens", json!(101))),
            (
                "max_completion_tokens",
                with("", "max_completion_tokens", json!(101)),
            ),
            ("stop", with("", "stop", json!(["STOP"]))),
            (
                "tools name",
                with("/tools/0/function", "name", json!("sum")),
            ),
            (
                "tools new nested member",
                with("/tools/0/function", "x_new", json!(true)),
            ),
            ("tools removed", without("tools")),
            ("tool_choice", with("", "tool_choice", json!("required"))),
            (
                "response_format",
                with("", "response_format", json!({"type": "json_object"})),
            ),
            (
                "response_format nested member",
                with("/response_format", "x_new", json!(1)),
            ),
            ("n", with("", "n", json!(2))),
            ("seed", with("", "seed", json!(8))),
            ("top_p", with("", "top_p", json!(0.9))),
            ("temperature", with("", "temperature", json!(0.5))),
            ("logit_bias", with("", "logit_bias", json!({"50256": -50}))),
            ("presence_penalty", with("", "presence_penalty", json!(0.5))),
            (
                "frequency_penalty",
                with("", "frequency_penalty", json!(0.5)),
            ),
            (
                "parallel_tool_calls",
                with("", "parallel_tool_calls", json!(false)),
            ),
            (
                "reasoning_effort",
                with("", "reasoning_effort", json!("high")),
            ),
            ("logprobs", with("", "logprobs", json!(true))),
            ("top_logprobs", with("", "top_logprobs", json!(2))),
            (
                "message content",
                with("/messages/1", "content", json!("What is 3+3?")),
            ),
            (
                "message role",
                with("/messages/1", "role", json!("developer")),
            ),
            ("message name", with("/messages/1", "name", json!("bob"))),
            (
                "message tool_calls",
                with(
                    "/messages/2/tool_calls/0/function",
                    "arguments",
                    json!("{}"),
                ),
            ),
            (
                "message tool_call_id",
                with("/messages/3", "tool_call_id", json!("call_2")),
            ),
            (
                "message unknown member",
                with("/messages/1", "x_new", json!(1)),
            ),
            (
                "system prompt",
                with("/messages/0", "content", json!("You are verbose.")),
            ),
            (
                "extra field value",
                with("", "x_custom", json!({"b": 1, "a": 3})),
            ),
            (
                "new extra field",
                with("", "prediction", json!({"type": "content"})),
            ),
        ];
        let base = chat_key(&base_body());
        let mut seen = HashSet::from([base.clone()]);
        for (what, body) in &cases {
            let k = chat_key(body);
            assert_ne!(k, base, "{what} did not change the key");
            assert!(seen.insert(k), "{what} collided with another variant");
        }
    }

    #[test]
    fn context_changes_the_key() {
        let body = obj(base_body());
        let key = |tenant, route: &str, ns| {
            cache_key(tenant, route, Endpoint::ChatCompletions, ns, &body).unwrap()
        };
        let base = key("tenant-a", ROUTE, None);
        let other_links = route_identity("gpt-4o-mini", &["azure/gpt-4o-mini"]);
        let other_model = route_identity("gpt-4o", &["openai/gpt-4o-mini"]);
        let variants = [
            key("tenant-b", ROUTE, None),
            key("tenant-a", &other_links, None),
            key("tenant-a", &other_model, None),
            key("tenant-a", ROUTE, Some("team-x")),
            key("tenant-a", ROUTE, Some("team-y")),
            key("tenant-a", ROUTE, Some("")),
            // The endpoint, everything else (canonical bytes included) equal.
            digest("tenant-a", ROUTE, Endpoint::Embeddings, None, b"{}"),
            digest("tenant-a", ROUTE, Endpoint::ChatCompletions, None, b"{}"),
        ];
        let mut seen = HashSet::from([base]);
        for v in variants {
            assert!(seen.insert(v));
        }
        assert_eq!(
            ROUTE,
            route_identity("gpt-4o-mini", &["openai/gpt-4o-mini"])
        );
    }

    #[test]
    fn non_semantic_changes_keep_the_key() {
        let base = chat_key(&base_body());
        let same = [
            ("stream", with("", "stream", json!(true))),
            ("stream absent", without("stream")),
            (
                "stream_options",
                with("", "stream_options", json!({"include_usage": false})),
            ),
            (
                "stream_options obfuscation",
                with("/stream_options", "include_obfuscation", json!(false)),
            ),
            ("stream_options absent", without("stream_options")),
            ("user", with("", "user", json!("u2"))),
            ("user absent", without("user")),
            ("metadata", with("", "metadata", json!({"c": "d"}))),
            ("metadata absent", without("metadata")),
            ("temperature 0.0", with("", "temperature", json!(0.0))),
            ("top_p 1.0", with("", "top_p", json!(1.0))),
            ("stop as a string", with("", "stop", json!("END"))),
            ("null extra", with("", "x_null", Value::Null)),
            ("null typed field", with("", "top_logprobs", Value::Null)),
        ];
        for (what, body) in &same {
            assert_eq!(chat_key(body), base, "{what} changed the key");
        }
        // Key order, at every depth, and whitespace.
        let text = serde_json::to_string(&base_body()).unwrap();
        let reordered = r#"{ "x_custom": {"a": 2, "b": 1}, "metadata": {"a": "b"}, "user": "u1",
            "stream_options": {"include_usage": true}, "stream": false, "reasoning_effort": "low",
            "response_format": {"type": "text"}, "parallel_tool_calls": true, "tool_choice": "auto",
            "tools": [{"function": {"parameters": {"type": "object"}, "name": "add"}, "type": "function"}],
            "logprobs": false, "logit_bias": {"50256": -100}, "frequency_penalty": 0,
            "presence_penalty": 0, "seed": 7, "n": 1, "stop": ["END"], "max_completion_tokens": 100,
            "max_tokens": 100, "top_p": 1, "temperature": 0,
            "messages": [
                {"content": "You are terse.", "role": "system"},
                {"name": "alice", "content": "What is 2+2?", "role": "user"},
                {"tool_calls": [{"function": {"arguments": "{\"a\":2,\"b\":2}", "name": "add"},
                                 "type": "function", "id": "call_1"}], "content": null, "role": "assistant"},
                {"content": "4", "tool_call_id": "call_1", "role": "tool"}
            ],
            "model": "gpt-4o-mini" }"#;
        assert_ne!(text.replace(' ', ""), reordered.replace([' ', '\n'], ""));
        let reordered: Value = serde_json::from_str(reordered).unwrap();
        assert_eq!(chat_key(&reordered), base);
    }

    #[test]
    fn the_encoding_is_prefix_free() {
        // Every way of cutting one string into tenant ‖ route ‖ namespace ‖
        // canonical body gives a different key.
        let s = "abcdef";
        let mut seen = HashSet::new();
        let mut n = 0;
        for i in 0..=s.len() {
            for j in i..=s.len() {
                for k in j..=s.len() {
                    let (t, r, ns, c) = (&s[..i], &s[i..j], &s[j..k], &s[k..]);
                    for namespace in [None, Some(ns)] {
                        if namespace.is_none() && !ns.is_empty() {
                            continue;
                        }
                        let key = digest(t, r, Endpoint::ChatCompletions, namespace, c.as_bytes());
                        assert!(
                            seen.insert(key),
                            "collision: {t:?} {r:?} {namespace:?} {c:?}"
                        );
                        n += 1;
                    }
                }
            }
        }
        assert!(n > 80);
        let a = digest("ab", "c", Endpoint::ChatCompletions, None, b"{}");
        let b = digest("a", "bc", Endpoint::ChatCompletions, None, b"{}");
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    }

    #[test]
    fn route_identity_is_a_set_of_links() {
        let a = route_identity("fast", &["openai/m", "groq/m", "openai/m"]);
        let b = route_identity("fast", &["groq/m", "openai/m"]);
        assert_eq!(a, b);
        assert_ne!(a, route_identity("fast", &["groq/m"]));
        assert_ne!(a, route_identity("slow", &["groq/m", "openai/m"]));
        // No delimiter games: a comma inside a name is not a second link.
        assert_ne!(
            route_identity("m", &["a/b,c/d"]),
            route_identity("m", &["a/b", "c/d"])
        );
    }

    #[test]
    fn a_chat_body_that_does_not_parse_has_no_key() {
        let bad = obj(json!({"model": "m", "messages": [{"role": "user"}], "n": "two"}));
        assert!(cache_key("t", ROUTE, Endpoint::ChatCompletions, None, &bad).is_err());
    }

    #[test]
    fn embeddings_keys_ignore_model_encoding_and_user() {
        let key = |v: Value| cache_key("t", ROUTE, Endpoint::Embeddings, None, &obj(v)).unwrap();
        let base = key(json!({"model": "e", "input": "hello", "dimensions": 8}));
        for same in [
            json!({"model": "e2", "input": "hello", "dimensions": 8}),
            json!({"model": "e", "input": "hello", "dimensions": 8, "encoding_format": "base64"}),
            json!({"model": "e", "input": "hello", "dimensions": 8, "encoding_format": "float"}),
            json!({"model": "e", "input": "hello", "dimensions": 8, "user": "x"}),
            json!({"dimensions": 8, "input": "hello", "model": "e", "x": null}),
        ] {
            assert_eq!(key(same), base);
        }
        for other in [
            json!({"model": "e", "input": "hello!", "dimensions": 8}),
            json!({"model": "e", "input": ["hello"], "dimensions": 8}),
            json!({"model": "e", "input": "hello", "dimensions": 16}),
            json!({"model": "e", "input": "hello"}),
            json!({"model": "e", "input": "hello", "dimensions": 8, "task": "query"}),
        ] {
            assert_ne!(key(other), base);
        }
    }

    #[test]
    fn kv_names_nest_under_tenant_and_route() {
        let key = chat_key(&base_body());
        let name = kv_name("tenant-a", "fast", &key);
        assert!(name.starts_with(&kv_route_prefix("tenant-a", "fast")));
        assert!(name.starts_with(&kv_tenant_prefix("tenant-a")));
        assert!(name.starts_with("cache/v1/"));
        assert!(name.ends_with(&key));
        assert!(!name.starts_with(&kv_tenant_prefix("tenant-b")));
        assert!(name.len() < 512, "KV key names are at most 512 bytes");
    }

    // -------------------------------------------------------- cacheability

    #[test]
    fn only_deterministic_chat_requests_are_cacheable() {
        let check = |v: Value| cacheability(Endpoint::ChatCompletions, &obj(v));
        let m = json!([{"role": "user", "content": "hi"}]);
        assert_eq!(
            check(json!({"model": "m", "messages": m})),
            Err("nondeterministic"),
            "a missing temperature defaults to 1"
        );
        assert_eq!(
            check(json!({"model": "m", "messages": m, "temperature": null})),
            Err("nondeterministic")
        );
        assert_eq!(
            check(json!({"model": "m", "messages": m, "temperature": 0.7})),
            Err("nondeterministic")
        );
        assert_eq!(
            check(json!({"model": "m", "messages": m, "temperature": "0"})),
            Err("nondeterministic")
        );
        assert_eq!(
            check(json!({"model": "m", "messages": m, "temperature": 0})),
            Ok(())
        );
        assert_eq!(
            check(json!({"model": "m", "messages": m, "temperature": 0.0})),
            Ok(())
        );
        assert_eq!(
            check(json!({"model": "m", "messages": m, "seed": 42})),
            Ok(())
        );
        assert_eq!(
            check(json!({"model": "m", "messages": m, "seed": 4.2})),
            Err("nondeterministic")
        );
        let det = |extra: Value| {
            let mut b = obj(json!({"model": "m", "messages": m, "temperature": 0}));
            b.extend(obj(extra));
            cacheability(Endpoint::ChatCompletions, &b)
        };
        assert_eq!(det(json!({"n": 1})), Ok(()));
        assert_eq!(det(json!({"n": 2})), Err("n_not_1"));
        assert_eq!(det(json!({"logprobs": false})), Ok(()));
        assert_eq!(det(json!({"logprobs": true})), Err("logprobs"));
        assert_eq!(det(json!({"top_logprobs": 3})), Err("logprobs"));
        assert_eq!(det(json!({"modalities": ["text"]})), Ok(()));
        assert_eq!(
            det(json!({"modalities": ["text", "audio"]})),
            Err("audio_output")
        );
        assert_eq!(
            det(json!({"audio": {"voice": "alloy"}})),
            Err("audio_output")
        );
        assert_eq!(det(json!({"web_search_options": {}})), Err("web_search"));
        assert_eq!(det(json!({"store": true})), Err("store"));
        assert_eq!(det(json!({"store": false, "stream": true})), Ok(()));
        assert_eq!(
            cacheability(
                Endpoint::Embeddings,
                &obj(json!({"model": "e", "input": "x"}))
            ),
            Ok(())
        );
    }

    // --------------------------------------------------------- accumulator

    /// The data payloads of an SSE text, as the observer's decoder sees them.
    fn datas(sse: &str) -> Vec<String> {
        let mut d = SseDecoder::new(DEFAULT_MAX_LINE_BYTES);
        d.push(sse.as_bytes())
            .unwrap()
            .into_iter()
            .filter_map(|f| f.data)
            .collect()
    }

    fn accumulate<S: AsRef<str>>(frames: &[S]) -> Option<ChatCompletion> {
        let mut acc = StreamAccumulator::new();
        for f in frames {
            acc.on_data(f.as_ref());
        }
        acc.complete()
    }

    fn accumulate_sse(sse: &str) -> Option<ChatCompletion> {
        accumulate(&datas(sse))
    }

    #[test]
    fn a_recorded_stream_equals_the_non_streamed_answer() {
        let streamed = accumulate_sse(CHAT_STREAM).expect("complete");
        let whole: ChatCompletion = serde_json::from_str(CHAT_RESPONSE).unwrap();
        assert_eq!(streamed.choices.len(), 1);
        let (s, w) = (&streamed.choices[0], &whole.choices[0]);
        assert_eq!(s.message, w.message);
        assert_eq!(
            s.message.content.as_deref(),
            Some("Hello! How can I assist you today?")
        );
        assert_eq!(s.finish_reason, w.finish_reason);
        assert_eq!(streamed.usage, whole.usage);
        assert_eq!(streamed.model, "gpt-4o-mini-2024-07-18");
        assert_eq!(streamed.object, "chat.completion");
        // And they make the same entry (apart from the model that answered).
        let a = CacheEntry::from_completion(streamed, "openai", 1).unwrap();
        let b = CacheEntry::from_chat_body(CHAT_RESPONSE.as_bytes(), "openai", 1).unwrap();
        assert_eq!((a.body, a.usage), (b.body, b.usage));
    }

    #[test]
    fn a_recorded_tool_call_stream_is_assembled() {
        let c = accumulate_sse(TOOLS_STREAM).expect("complete");
        let expected = Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant".into(),
                content: None,
                tool_calls: Some(vec![ToolCall {
                    id: "call_8wSWhuzOhClEzH8c2pYjRIiz".into(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: "get_current_weather".into(),
                        arguments: r#"{"location":"Paris"}"#.into(),
                    },
                }]),
                refusal: None,
                reasoning_content: None,
            },
            logprobs: None,
            finish_reason: Some("tool_calls".into()),
        };
        assert_eq!(c.choices, vec![expected]);
        let u = c.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (61, 15, 76)
        );
    }

    fn sixty_chunk_stream() -> Vec<String> {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
            .to_string()
        };
        let mut frames = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )];
        for i in 0..58 {
            frames.push(chunk(json!({"content": format!("t{i} ")}), Value::Null));
        }
        frames.push(chunk(json!({}), json!("stop")));
        frames.push(
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 58, "total_tokens": 63}})
            .to_string(),
        );
        frames.push("[DONE]".into());
        frames
    }

    #[test]
    fn incomplete_streams_are_not_complete() {
        let full = sixty_chunk_stream();
        assert_eq!(full.len(), 62);
        assert!(accumulate(&full).is_some());
        // Cut after 40 of 60 chunks.
        assert!(accumulate(&full[..40]).is_none());
        // Everything but [DONE].
        assert!(accumulate(&full[..full.len() - 1]).is_none());
        let cut = CHAT_STREAM.replace("data: [DONE]\n\n", "");
        assert!(accumulate_sse(&cut).is_none());
        // No usage.
        let mut no_usage = full.clone();
        no_usage.remove(60);
        assert!(accumulate(&no_usage).is_none());
        // No finish reason.
        let mut no_finish = full.clone();
        no_finish.remove(59);
        assert!(accumulate(&no_finish).is_none());
        // An error frame, first or in the middle, even if [DONE] follows.
        let error = r#"{"error":{"message":"boom","type":"server_error"}}"#.to_owned();
        for at in [0, 30] {
            let mut e = full.clone();
            e.insert(at, error.clone());
            assert!(accumulate(&e).is_none(), "error frame at {at}");
        }
        // Garbage, or anything after [DONE].
        let mut garbage = full.clone();
        garbage.insert(10, "not json".into());
        assert!(accumulate(&garbage).is_none());
        let mut after = full.clone();
        after.push(full[1].clone());
        assert!(accumulate(&after).is_none());
        // A missing choice index.
        let gap =
            json!({"choices": [{"index": 2, "delta": {"content": "x"}, "finish_reason": "stop"}]});
        let mut gapped = full.clone();
        gapped.insert(5, gap.to_string());
        assert!(accumulate(&gapped).is_none());
    }

    #[test]
    fn unreplayable_streams_are_not_complete() {
        let full = sixty_chunk_stream();
        for extra in [
            json!({"index": 0, "delta": {"reasoning": "thinking"}}),
            json!({"index": 0, "delta": {"audio": {"data": "AAAA"}}}),
            json!({"index": 0, "delta": {}, "logprobs": {"content": [{"token": "t"}]}}),
            json!({"index": 0, "delta": {"tool_calls": [{"index": 0, "type": "custom", "id": "x",
                    "function": {"name": "f"}}]}}),
        ] {
            let mut s = full.clone();
            s.insert(3, json!({"choices": [extra]}).to_string());
            assert!(accumulate(&s).is_none(), "{s:?}");
        }
        // Empty unknown members are harmless (OpenRouter sends `reasoning: null`).
        let mut s = full.clone();
        s.insert(3, json!({"choices": [{"index": 0, "delta": {"reasoning": null, "reasoning_details": []}}]}).to_string());
        assert!(accumulate(&s).is_some());
        // Too much text for the limit.
        let mut acc = StreamAccumulator::with_limit(100);
        for f in &full {
            acc.on_data(f);
        }
        assert!(acc.is_spoiled());
        assert!(acc.complete().is_none());
    }

    // ------------------------------------------------------------- replay

    fn rich_completion() -> ChatCompletion {
        let long: String = "Grüße, 世界! ".repeat(30);
        ChatCompletion {
            id: "orig".into(),
            object: "chat.completion".into(),
            created: 5,
            model: "deepseek-reasoner".into(),
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant".into(),
                    content: Some(long),
                    tool_calls: Some(vec![
                        ToolCall {
                            id: "call_a".into(),
                            kind: "function".into(),
                            function: FunctionCall {
                                name: "f".into(),
                                arguments: format!("{{\"x\":\"{}\"}}", "y".repeat(150)),
                            },
                        },
                        ToolCall {
                            id: "call_b".into(),
                            kind: "function".into(),
                            function: FunctionCall {
                                name: "g".into(),
                                arguments: String::new(),
                            },
                        },
                    ]),
                    refusal: Some(String::new()),
                    reasoning_content: Some("First, think. ".repeat(10)),
                },
                logprobs: None,
                finish_reason: Some("tool_calls".into()),
            }],
            usage: Some(UsageBody {
                prompt_tokens: 10,
                completion_tokens: 200,
                total_tokens: 210,
                prompt_tokens_details: Some(PromptTokensDetails { cached_tokens: 4 }),
                completion_tokens_details: Some(CompletionTokensDetails {
                    reasoning_tokens: 40,
                }),
            }),
        }
    }

    fn replay_round_trip(entry: &CacheEntry) {
        let frames = replay_sse(entry, "chatcmpl-new", 99, true);
        assert_eq!(frames.last().map(String::as_str), Some(DONE_FRAME));
        let text = frames.concat();
        let back = accumulate_sse(&text).expect("the replay is a complete stream");
        assert_eq!(back.id, "chatcmpl-new");
        assert_eq!(back.created, 99);
        let again = CacheEntry::from_completion(back, &entry.provider, entry.created).unwrap();
        assert_eq!(&again, entry);
    }

    #[test]
    fn replayed_streams_accumulate_back_to_the_entry() {
        for sse in [CHAT_STREAM, TOOLS_STREAM] {
            let c = accumulate_sse(sse).unwrap();
            replay_round_trip(&CacheEntry::from_completion(c, "openai", 7).unwrap());
        }
        replay_round_trip(&CacheEntry::from_completion(rich_completion(), "deepseek", 7).unwrap());
        // A non-streamed answer replays as a stream too.
        replay_round_trip(
            &CacheEntry::from_chat_body(CHAT_RESPONSE.as_bytes(), "openai", 7).unwrap(),
        );
    }

    #[test]
    fn replay_sse_has_openai_shape() {
        let entry = CacheEntry::from_completion(rich_completion(), "deepseek", 7).unwrap();
        let frames = replay_sse(&entry, "id1", 3, false);
        let chunks: Vec<Value> = frames[..frames.len() - 1]
            .iter()
            .map(|f| {
                assert!(f.starts_with("data: {") && f.ends_with("}\n\n"), "{f:?}");
                serde_json::from_str(f.trim_start_matches("data: ").trim_end()).unwrap()
            })
            .collect();
        let first = &chunks[0]["choices"][0]["delta"];
        assert_eq!(first["role"], "assistant");
        assert_eq!(first["content"], "");
        for c in &chunks {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["id"], "id1");
            assert_eq!(c["model"], "deepseek-reasoner");
            assert!(c.get("usage").is_none(), "usage not asked for");
            let d = &c["choices"][0]["delta"];
            for field in ["content", "reasoning_content"] {
                if let Some(s) = d[field].as_str() {
                    assert!(s.chars().count() <= REPLAY_PIECE_CHARS);
                }
            }
        }
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
        let tool_firsts: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0].get("id"))
            .collect();
        assert_eq!(tool_firsts, [&json!("call_a"), &json!("call_b")]);
        // Without the usage chunk the replay is (correctly) not a cacheable stream.
        assert!(accumulate_sse(&frames.concat()).is_none());

        let with_usage = replay_sse(&entry, "id1", 3, true);
        assert_eq!(with_usage.len(), frames.len() + 1);
        let usage_chunk: Value = serde_json::from_str(
            with_usage[with_usage.len() - 2]
                .trim_start_matches("data: ")
                .trim_end(),
        )
        .unwrap();
        assert_eq!(usage_chunk["choices"], json!([]));
        assert_eq!(usage_chunk["usage"]["completion_tokens"], 200);
        let other: Value =
            serde_json::from_str(with_usage[0].trim_start_matches("data: ").trim_end()).unwrap();
        assert_eq!(other["usage"], Value::Null);
        assert!(other.as_object().unwrap().contains_key("usage"));
    }

    #[test]
    fn replay_json_is_a_chat_completion_with_the_new_id() {
        let streamed =
            CacheEntry::from_completion(accumulate_sse(CHAT_STREAM).unwrap(), "openai", 7).unwrap();
        let bytes = replay_json(&streamed, "chatcmpl-fresh", 1234);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["id"], "chatcmpl-fresh");
        assert_eq!(v["created"], 1234);
        let c: ChatCompletion = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(c.model, "gpt-4o-mini-2024-07-18");
        assert_eq!(
            c.choices[0].message.content.as_deref(),
            Some("Hello! How can I assist you today?")
        );
        assert_eq!(c.usage.as_ref().map(|u| u.total_tokens), Some(29));
        // A stream hit and a JSON hit describe the same answer.
        let from_sse = accumulate_sse(&replay_sse(&streamed, "x", 1, true).concat()).unwrap();
        assert_eq!(from_sse.choices, c.choices);
        assert_eq!(from_sse.usage, c.usage);
    }

    // ------------------------------------------------------------- entries

    #[test]
    fn only_finished_answers_with_usage_become_entries() {
        let ok = rich_completion();
        assert!(CacheEntry::from_completion(ok.clone(), "p", 1).is_ok());
        let mut c = ok.clone();
        c.usage = None;
        assert_eq!(CacheEntry::from_completion(c, "p", 1), Err("no_usage"));
        let mut c = ok.clone();
        c.choices[0].finish_reason = None;
        assert_eq!(CacheEntry::from_completion(c, "p", 1), Err("unfinished"));
        let mut c = ok.clone();
        c.choices[0].finish_reason = Some("content_filter".into());
        assert_eq!(CacheEntry::from_completion(c, "p", 1), Err("finish_reason"));
        let mut c = ok.clone();
        c.choices[0].logprobs = Some(json!({"content": []}));
        assert_eq!(CacheEntry::from_completion(c, "p", 1), Err("logprobs"));
        let mut c = ok;
        c.choices[0].index = 1;
        assert_eq!(CacheEntry::from_completion(c, "p", 1), Err("choice_index"));

        let mut body: Value = serde_json::from_str(CHAT_RESPONSE).unwrap();
        body["choices"][0]["message"]["audio"] = json!({"id": "a", "data": "AAAA"});
        let bytes = serde_json::to_vec(&body).unwrap();
        assert_eq!(
            CacheEntry::from_chat_body(&bytes, "p", 1),
            Err("unreplayable_field")
        );
        assert_eq!(CacheEntry::from_chat_body(b"{", "p", 1), Err("unparsed"));
    }

    #[test]
    fn entries_round_trip_and_are_size_checked() {
        let entry =
            CacheEntry::from_completion(rich_completion(), "deepseek", 1_700_000_000).unwrap();
        let bytes = encode_entry(&entry, DEFAULT_MAX_ENTRY_BYTES).unwrap();
        assert_eq!(decode_entry(&bytes), Some(entry.clone()));
        assert_eq!(
            encode_entry(&entry, bytes.len()).map(|b| b.len()),
            Ok(bytes.len())
        );
        assert_eq!(encode_entry(&entry, bytes.len() - 1), Err("too_large"));
        assert!(
            encode_entry(&entry, usize::MAX).is_ok(),
            "limit capped at KV's, not overflowed"
        );
        assert_eq!(entry.age_secs(1_700_000_090), 90);
        assert_eq!(entry.age_secs(0), 0);

        assert_eq!(decode_entry(b"not json"), None);
        let mut v: Value = serde_json::from_slice(&bytes).unwrap();
        v["schema"] = json!(SCHEMA_VERSION + 1);
        assert_eq!(decode_entry(&serde_json::to_vec(&v).unwrap()), None);
    }

    #[test]
    fn embeddings_are_stored_once_and_replayed_in_either_encoding() {
        let entry =
            CacheEntry::from_embeddings_body(EMBEDDINGS_RESPONSE.as_bytes(), "openai", 1).unwrap();
        assert_eq!(entry.model, "text-embedding-3-small");
        assert_eq!(
            (entry.usage.prompt_tokens, entry.usage.total_tokens),
            (8, 8)
        );
        let original: Value = serde_json::from_str(EMBEDDINGS_RESPONSE).unwrap();

        // The float replay is the recorded body, each value as the same `f32`
        // (printed in its shortest form: `0.0057293582` comes back `0.005729358`).
        let as_f32 = |v: &Value| -> Vec<f32> {
            v["data"][0]["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        };
        let mut floats: Value =
            serde_json::from_slice(&replay_embeddings(&entry, false).unwrap()).unwrap();
        assert_eq!(as_f32(&floats), as_f32(&original));
        floats["data"][0]["embedding"] = original["data"][0]["embedding"].clone();
        assert_eq!(floats, original, "same shape and members");
        assert_eq!(
            replay_json(&entry, "ignored", 0),
            replay_embeddings(&entry, false).unwrap()
        );

        let b64: Value = serde_json::from_slice(&replay_embeddings(&entry, true).unwrap()).unwrap();
        let decoded = decode_vector(b64["data"][0]["embedding"].as_str().unwrap()).unwrap();
        assert_eq!(decoded, as_f32(&original));

        // A base64 answer makes the same entry as the float one.
        let from_b64 =
            CacheEntry::from_embeddings_body(&serde_json::to_vec(&b64).unwrap(), "openai", 1)
                .unwrap();
        assert_eq!(from_b64, entry);

        // Out-of-order data is sorted; gaps and missing usage are refused.
        let two = json!({"object": "list", "model": "e", "usage": {"prompt_tokens": 2, "total_tokens": 2},
            "data": [{"index": 1, "embedding": [0.5]}, {"index": 0, "embedding": [0.25]}]});
        let e =
            CacheEntry::from_embeddings_body(&serde_json::to_vec(&two).unwrap(), "p", 1).unwrap();
        let v: Value = serde_json::from_slice(&replay_embeddings(&e, false).unwrap()).unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([0.25]));
        assert_eq!(v["data"][1]["index"], 1);
        let mut gap = two.clone();
        gap["data"][0]["index"] = json!(2);
        assert_eq!(
            CacheEntry::from_embeddings_body(&serde_json::to_vec(&gap).unwrap(), "p", 1),
            Err("bad_index")
        );
        let mut no_usage = two;
        no_usage.as_object_mut().unwrap().remove("usage");
        assert_eq!(
            CacheEntry::from_embeddings_body(&serde_json::to_vec(&no_usage).unwrap(), "p", 1),
            Err("no_usage")
        );

        // Stored entries round-trip; a corrupted vector is a miss.
        let bytes = encode_entry(&entry, DEFAULT_MAX_ENTRY_BYTES).unwrap();
        assert_eq!(decode_entry(&bytes), Some(entry.clone()));
        let mut v: Value = serde_json::from_slice(&bytes).unwrap();
        v["body"]["vectors"][0] = json!("abc");
        assert_eq!(decode_entry(&serde_json::to_vec(&v).unwrap()), None);
        assert!(replay_sse(&entry, "i", 0, true).is_empty());
        let chat = CacheEntry::from_completion(rich_completion(), "p", 1).unwrap();
        assert_eq!(replay_embeddings(&chat, true), None);
    }

    #[test]
    fn pieces_split_on_characters() {
        assert_eq!(pieces("", 3), Vec::<&str>::new());
        assert_eq!(pieces("abcdefg", 3), ["abc", "def", "g"]);
        assert_eq!(pieces("äöü€", 2), ["äö", "ü€"]);
        assert_eq!(pieces("abc", 3), ["abc"]);
    }

    // ----------------------------------------------------------------- TTL

    #[test]
    fn ttl_is_clamped_to_kv_minimum_and_configured_maximum() {
        let ttl = |h: Option<&str>| effective_ttl(h, 3600, 86_400);
        assert_eq!(ttl(None), Ok(3600));
        assert_eq!(ttl(Some("120")), Ok(120));
        assert_eq!(ttl(Some(" 90 ")), Ok(90));
        assert_eq!(ttl(Some("1")), Ok(60));
        assert_eq!(ttl(Some("59")), Ok(60));
        assert_eq!(ttl(Some("999999")), Ok(86_400));
        assert_eq!(ttl(Some("99999999999999999999999")), Ok(86_400));
        for bad in ["0", "", "abc", "-5", "+5", "1.5", "1e3"] {
            let e = ttl(Some(bad)).unwrap_err();
            assert_eq!(e.status(), 400, "{bad:?}");
            assert_eq!(e.param(), Some(TTL_HEADER));
        }
        assert_eq!(
            effective_ttl(None, 10, 86_400),
            Ok(60),
            "default under KV's minimum"
        );
        assert_eq!(
            effective_ttl(None, 10_000, 600),
            Ok(600),
            "default over the maximum"
        );
        assert_eq!(
            effective_ttl(Some("300"), 60, 30),
            Ok(60),
            "maximum under KV's minimum"
        );
    }
}
