//! Providers: turning a validated request and a resolved target into an
//! upstream call, the provider's answer into OpenAI's shape (JSON or SSE), and
//! an upstream error into what the client sees.
//!
//! Pure: the platform layer supplies secrets through a lookup function and
//! performs the call.

pub mod anthropic;
pub mod bedrock;
pub mod cohere;
pub mod demo;
pub mod gemini;
pub mod openai_compat;
pub mod workers_ai;

use serde_json::{Map, Value};

use crate::config::{GatewayConfig, ResolvedKind, AZURE_DEFAULT_API_VERSION};
use crate::error::GatewayError;
use crate::ledger::Endpoint;
use crate::openai::{ChatChunk, ChatRequest};
use crate::routing::Target;
use crate::secret::{scrub, scrub_key_like, Secret};
use crate::sse::{SseDecoder, SseError, DEFAULT_MAX_LINE_BYTES, DONE_FRAME};
use crate::usage::{ChatStreamObserver, StreamSummary};

/// Which wire format the provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
    Gemini,
    Cohere,
    /// AWS event-stream framing, not SSE, on streams.
    Bedrock,
}

/// How the provider key is presented.
#[derive(Debug)]
pub struct KeyHeader {
    pub name: &'static str,
    /// `Some("Bearer")` → `name: Bearer <key>`; `None` → `name: <key>`.
    pub scheme: Option<&'static str>,
    pub key: Secret,
}

impl KeyHeader {
    pub fn value(&self) -> String {
        match self.scheme {
            Some(scheme) => format!("{scheme} {}", self.key.expose()),
            None => self.key.expose().to_owned(),
        }
    }
}

/// An HTTP call to a provider.
#[derive(Debug)]
pub struct HttpCall {
    pub provider: String,
    pub wire: Wire,
    pub url: String,
    /// The model id sent upstream (for translated answers).
    pub model: String,
    /// Sent to `url` only.
    pub key: Option<KeyHeader>,
    /// Other headers the provider requires (e.g. `anthropic-version`).
    pub headers: Vec<(&'static str, String)>,
    /// Request-signature headers (SigV4): secret-bearing, printed redacted.
    pub signed_headers: Vec<(&'static str, Secret)>,
    pub body: Vec<u8>,
    pub stream: bool,
    /// Drop the usage-only chunk before the client sees it (the gateway asked
    /// for usage, the client did not).
    pub strip_usage_chunk: bool,
    /// Embeddings: the client asked for base64 (translated providers).
    pub base64_embeddings: bool,
}

impl HttpCall {
    pub fn api_key(&self) -> Option<&Secret> {
        self.key.as_ref().map(|k| &k.key)
    }
}

/// A call to Workers AI through the Worker's binding: `run(model, inputs)`.
#[derive(Debug)]
pub struct BindingCall {
    pub provider: String,
    /// The binding's name in the Worker's environment (e.g. `AI`).
    pub binding: String,
    /// The model id, `run()`'s first argument.
    pub model: String,
    /// `run()`'s second argument.
    pub inputs: Value,
    pub stream: bool,
    /// Drop the usage-only chunk before the client sees it.
    pub strip_usage_chunk: bool,
    pub base64_embeddings: bool,
    /// What translating the answer needs to know about the request.
    pub context: workers_ai::RunContext,
}

/// How a request will be answered.
#[derive(Debug)]
pub enum Plan {
    Http(HttpCall),
    /// Answered by a binding of the Worker (Workers AI), not over HTTP.
    Binding(BindingCall),
    /// Answered inside the Worker by the demo provider.
    Demo {
        body: Map<String, Value>,
        model: String,
        stream: bool,
        strip_usage_chunk: bool,
    },
}

fn client_wants_usage(body: &Map<String, Value>) -> bool {
    body.get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// A model id used as one URL path segment (Azure deployments, Gemini
/// models): a client-controlled string must not be able to change the path.
fn path_segment(model: &str) -> Result<&str, GatewayError> {
    let ok = !model.is_empty()
        && model != "."
        && model != ".."
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(model)
    } else {
        Err(GatewayError::invalid_param(
            "model",
            format!("'{model}' is not a valid model or deployment name for this provider."),
        ))
    }
}

/// Plans a call for `endpoint`. `secret` looks up a Worker secret by name;
/// `now_ms` dates request signatures (Bedrock).
pub fn plan(
    config: &GatewayConfig,
    target: &Target,
    endpoint: Endpoint,
    mut body: Map<String, Value>,
    stream: bool,
    secret: impl Fn(&str) -> Option<Secret>,
    now_ms: u64,
) -> Result<Plan, GatewayError> {
    let provider_config =
        config
            .providers
            .get(&target.provider)
            .ok_or_else(|| GatewayError::ModelNotFound {
                model: target.qualified(),
            })?;
    let Some(kind) = provider_config.resolved_kind(&target.provider) else {
        // Config validation makes this unreachable; fail closed anyway.
        return Err(GatewayError::Misconfigured);
    };
    if kind == ResolvedKind::Demo {
        return Ok(Plan::Demo {
            strip_usage_chunk: !client_wants_usage(&body),
            body,
            model: target.model.clone(),
            stream,
        });
    }
    if kind == ResolvedKind::WorkersAiBinding {
        return plan_workers_ai_binding(provider_config, target, endpoint, &body, stream);
    }
    if kind == ResolvedKind::Bedrock {
        return plan_bedrock(
            provider_config,
            target,
            endpoint,
            &body,
            stream,
            &secret,
            now_ms,
        );
    }
    let key_optional = matches!(kind, ResolvedKind::Compat(row) if row.auth == openai_compat::Auth::OptionalBearer);
    let key = match provider_config.secret_name(&target.provider) {
        Some(name) => {
            let key = secret(&name).filter(|s| !s.is_empty());
            if key.is_none() && !key_optional {
                return Err(GatewayError::ProviderNotConfigured {
                    provider: target.provider.clone(),
                    secret_name: name,
                });
            }
            key
        }
        None => None,
    };
    let base = provider_config
        .base_url(&target.provider)
        .ok_or(GatewayError::Misconfigured)?;
    let wants_usage = client_wants_usage(&body);
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let mut headers = Vec::new();
    let (wire, url, key, json) = match kind {
        ResolvedKind::Demo | ResolvedKind::Bedrock | ResolvedKind::WorkersAiBinding => {
            return Err(GatewayError::Internal)
        }
        ResolvedKind::Cohere => {
            let (url, json) = match endpoint {
                Endpoint::ChatCompletions | Endpoint::Messages => {
                    let req = ChatRequest::from_body(&body)?;
                    (
                        cohere::endpoint(&base),
                        cohere::to_wire(&req, &target.model, stream)?,
                    )
                }
                Endpoint::Embeddings => (
                    cohere::embeddings_endpoint(&base),
                    cohere::embeddings_to_wire(&body, &target.model)?,
                ),
            };
            let key = key.map(|key| KeyHeader {
                name: cohere::AUTH_HEADER,
                scheme: Some(cohere::AUTH_SCHEME),
                key,
            });
            (Wire::Cohere, url, key, json)
        }
        ResolvedKind::Compat(row) => {
            let path = match endpoint {
                Endpoint::ChatCompletions | Endpoint::Messages => {
                    openai_compat::prepare_chat_body(row, &mut body, &target.model, stream);
                    "/chat/completions"
                }
                Endpoint::Embeddings => {
                    body.insert("model".to_owned(), Value::String(target.model.clone()));
                    "/embeddings"
                }
            };
            let key = key.map(|key| KeyHeader {
                name: "authorization",
                scheme: Some("Bearer"),
                key,
            });
            (
                Wire::OpenAi,
                format!("{base}{path}"),
                key,
                Value::Object(body),
            )
        }
        ResolvedKind::Azure => {
            // https://learn.microsoft.com/azure/ai-services/openai/reference —
            // the deployment is in the path, the model field is ignored.
            let deployment = path_segment(&target.model)?;
            let version = provider_config
                .api_version
                .as_deref()
                .unwrap_or(AZURE_DEFAULT_API_VERSION);
            let path = match endpoint {
                Endpoint::ChatCompletions | Endpoint::Messages => {
                    let row = openai_compat::row("openai").ok_or(GatewayError::Internal)?;
                    openai_compat::prepare_chat_body(row, &mut body, &target.model, stream);
                    "chat/completions"
                }
                Endpoint::Embeddings => {
                    body.insert("model".to_owned(), Value::String(target.model.clone()));
                    "embeddings"
                }
            };
            let key = key.map(|key| KeyHeader {
                name: "api-key",
                scheme: None,
                key,
            });
            let url = format!("{base}/deployments/{deployment}/{path}?api-version={version}");
            (Wire::OpenAi, url, key, Value::Object(body))
        }
        ResolvedKind::Anthropic => {
            if endpoint == Endpoint::Embeddings {
                return Err(GatewayError::invalid_param(
                    "model",
                    format!(
                        "Provider '{}' (Anthropic) has no embeddings API.",
                        target.provider
                    ),
                ));
            }
            let req = ChatRequest::from_body(&body)?;
            let json = anthropic::to_wire(&req, &target.model, stream)?;
            headers.push(("anthropic-version", anthropic::API_VERSION.to_owned()));
            let key = key.map(|key| KeyHeader {
                name: "x-api-key",
                scheme: None,
                key,
            });
            (Wire::Anthropic, anthropic::endpoint(&base), key, json)
        }
        ResolvedKind::Gemini => {
            let model = path_segment(&target.model)?;
            let (url, json) = match endpoint {
                Endpoint::ChatCompletions | Endpoint::Messages => {
                    let req = ChatRequest::from_body(&body)?;
                    (
                        gemini::endpoint(&base, model, stream)?,
                        gemini::to_wire(&req, stream)?,
                    )
                }
                Endpoint::Embeddings => (
                    gemini::embeddings_endpoint(&base, model)?,
                    gemini::embeddings_to_wire(&body, model)?,
                ),
            };
            let key = key.map(|key| KeyHeader {
                name: gemini::AUTH_HEADER,
                scheme: None,
                key,
            });
            (Wire::Gemini, url, key, json)
        }
    };
    let strip_usage_chunk = match wire {
        // Translators always emit a usage chunk; OpenAI-format providers are
        // asked for one (see `prepare_chat_body`).
        _ if !stream => false,
        _ => !wants_usage,
    };
    let body = serde_json::to_vec(&json).map_err(|_| GatewayError::Internal)?;
    Ok(Plan::Http(HttpCall {
        provider: target.provider.clone(),
        wire,
        url,
        model: target.model.clone(),
        key,
        headers,
        signed_headers: Vec::new(),
        body,
        stream,
        strip_usage_chunk,
        base64_embeddings: base64,
    }))
}

/// Bedrock Converse: the body in Bedrock's format, SigV4-signed with the
/// AWS key pair (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional
/// `AWS_SESSION_TOKEN`) for the configured region.
fn plan_bedrock(
    provider_config: &crate::config::ProviderConfig,
    target: &Target,
    endpoint: Endpoint,
    body: &Map<String, Value>,
    stream: bool,
    secret: &impl Fn(&str) -> Option<Secret>,
    now_ms: u64,
) -> Result<Plan, GatewayError> {
    if endpoint == Endpoint::Embeddings {
        return Err(GatewayError::invalid_param(
            "model",
            format!(
                "Provider '{}' (Bedrock) is configured for chat only.",
                target.provider
            ),
        ));
    }
    let region = provider_config
        .region
        .as_deref()
        .ok_or(GatewayError::Misconfigured)?;
    let base = provider_config
        .base_url(&target.provider)
        .ok_or(GatewayError::Misconfigured)?;
    let creds = bedrock::AwsCredentials::from_secrets(&target.provider, secret)?;
    let req = ChatRequest::from_body(body)?;
    let url = bedrock::endpoint(&base, &target.model, stream)?;
    let bytes = serde_json::to_vec(&bedrock::to_wire(&req)?).map_err(|_| GatewayError::Internal)?;
    let signed = bedrock::sign(
        "POST",
        &url,
        &[("content-type", bedrock::SIGNED_CONTENT_TYPE)],
        &bytes,
        &creds,
        region,
        bedrock::SERVICE,
        &bedrock::amz_date(now_ms),
    )?;
    Ok(Plan::Http(HttpCall {
        provider: target.provider.clone(),
        wire: Wire::Bedrock,
        url,
        model: target.model.clone(),
        key: None,
        headers: Vec::new(),
        signed_headers: signed
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect(),
        body: bytes,
        stream,
        strip_usage_chunk: stream && !client_wants_usage(body),
        base64_embeddings: false,
    }))
}

/// Workers AI through the binding: `run()`'s inputs for the endpoint.
fn plan_workers_ai_binding(
    provider_config: &crate::config::ProviderConfig,
    target: &Target,
    endpoint: Endpoint,
    body: &Map<String, Value>,
    stream: bool,
) -> Result<Plan, GatewayError> {
    let (inputs, context) = match endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages => {
            workers_ai::to_wire(&ChatRequest::from_body(body)?, stream)?
        }
        Endpoint::Embeddings => (
            workers_ai::embeddings_to_wire(body)?,
            workers_ai::RunContext::default(),
        ),
    };
    Ok(Plan::Binding(BindingCall {
        provider: target.provider.clone(),
        binding: provider_config.binding_name().to_owned(),
        model: target.model.clone(),
        inputs,
        stream,
        strip_usage_chunk: stream && !client_wants_usage(body),
        base64_embeddings: body.get("encoding_format").and_then(Value::as_str) == Some("base64"),
        context,
    }))
}

/// Maps a provider's error answer for any wire, then scrubs the provider key
/// from the message (translators mask key-shaped text; this removes the
/// exact key and every 8-byte window of it too).
pub fn map_error(
    call: &HttpCall,
    status: u16,
    body: &[u8],
    retry_after: Option<&str>,
) -> GatewayError {
    let key = call.api_key();
    let e = match call.wire {
        Wire::OpenAi => return map_upstream_error(&call.provider, status, body, retry_after, key),
        Wire::Anthropic => anthropic::map_error(&call.provider, status, body, retry_after),
        Wire::Gemini => gemini::map_error(&call.provider, status, body, retry_after),
        Wire::Cohere => cohere::map_error(&call.provider, status, body, retry_after),
        Wire::Bedrock => bedrock::map_error(&call.provider, status, body, retry_after),
    };
    match (e, key) {
        (
            GatewayError::Upstream {
                provider,
                status,
                message,
                code,
                retry_after,
            },
            Some(k),
        ) => GatewayError::Upstream {
            provider,
            status,
            message: scrub(&message, k),
            code,
            retry_after,
        },
        (e, _) => e,
    }
}

/// A complete 2xx answer in OpenAI's JSON shape: OpenAI-format bodies as
/// they came, translated ones rebuilt.
pub fn translate_response(
    call: &HttpCall,
    endpoint: Endpoint,
    body: Vec<u8>,
    id: &str,
    created: u64,
) -> Result<(Vec<u8>, Value), GatewayError> {
    let invalid = || GatewayError::UpstreamInvalidResponse {
        provider: call.provider.clone(),
    };
    let value: Value = match (call.wire, endpoint) {
        (Wire::OpenAi, _) => {
            let v: Value = serde_json::from_slice(&body).map_err(|_| invalid())?;
            // The provider's bytes, untouched.
            return Ok((body, v));
        }
        (Wire::Anthropic, _) => serde_json::to_value(anthropic::from_wire(&body, id, created)?)
            .map_err(|_| invalid())?,
        (Wire::Gemini, Endpoint::ChatCompletions | Endpoint::Messages) => {
            serde_json::to_value(gemini::from_wire(&body, id, created, &call.model)?)
                .map_err(|_| invalid())?
        }
        (Wire::Gemini, Endpoint::Embeddings) => {
            gemini::embeddings_from_wire(&body, &call.model, call.base64_embeddings)?
        }
        (Wire::Cohere, Endpoint::ChatCompletions | Endpoint::Messages) => {
            serde_json::to_value(cohere::from_wire(&body, id, created, &call.model)?)
                .map_err(|_| invalid())?
        }
        (Wire::Cohere, Endpoint::Embeddings) => {
            cohere::embeddings_from_wire(&body, &call.model, call.base64_embeddings)?
        }
        (Wire::Bedrock, _) => {
            serde_json::to_value(bedrock::from_wire(&body, id, created, &call.model)?)
                .map_err(|_| invalid())?
        }
    };
    let bytes = serde_json::to_vec(&value).map_err(|_| GatewayError::Internal)?;
    Ok((bytes, value))
}

/// What `run()` resolved to, for a non-streamed request, in OpenAI's JSON
/// shape.
pub fn translate_binding_response(
    call: &BindingCall,
    endpoint: Endpoint,
    body: &[u8],
    id: &str,
    created: u64,
) -> Result<(Vec<u8>, Value), GatewayError> {
    let invalid = || GatewayError::UpstreamInvalidResponse {
        provider: call.provider.clone(),
    };
    let value = match endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages => serde_json::to_value(
            workers_ai::from_wire(body, id, created, &call.model, &call.context)?,
        )
        .map_err(|_| invalid())?,
        Endpoint::Embeddings => {
            workers_ai::embeddings_from_wire(body, &call.model, call.base64_embeddings)?
        }
    };
    let bytes = serde_json::to_vec(&value).map_err(|_| GatewayError::Internal)?;
    Ok((bytes, value))
}

/// Provider SSE → OpenAI SSE, for providers with their own stream format.
enum Transcoder {
    Anthropic {
        decoder: SseDecoder,
        state: anthropic::StreamState,
        done_sent: bool,
    },
    Gemini {
        decoder: SseDecoder,
        state: gemini::StreamState,
    },
    Cohere {
        decoder: SseDecoder,
        state: cohere::StreamState,
        done_sent: bool,
    },
    Bedrock {
        decoder: bedrock::EventStreamDecoder,
        state: bedrock::StreamState,
        done_sent: bool,
    },
    WorkersAi {
        decoder: SseDecoder,
        state: workers_ai::StreamState,
        done_sent: bool,
    },
}

fn encode_chunks(chunks: &[ChatChunk], out: &mut Vec<u8>) {
    for c in chunks {
        if let Ok(json) = serde_json::to_string(c) {
            out.extend_from_slice(crate::sse::encode_data(&json).as_bytes());
        }
    }
}

fn encode_error(e: &GatewayError, out: &mut Vec<u8>) {
    out.extend_from_slice(crate::sse::encode_data(&e.to_body().to_string()).as_bytes());
}

impl Transcoder {
    /// Provider bytes in, OpenAI bytes out. With `native`, an Anthropic
    /// stream's own frames are also collected there (the Messages
    /// pass-through), error events rebuilt with key-shaped text scrubbed.
    fn push(&mut self, bytes: &[u8], native: Option<&mut Vec<u8>>) -> Result<Vec<u8>, SseError> {
        let mut out = Vec::new();
        match self {
            Self::Anthropic {
                decoder,
                state,
                done_sent,
            } => {
                let mut native = native;
                for frame in decoder.push(bytes)? {
                    if let Some(raw) = native.as_deref_mut() {
                        raw.extend_from_slice(&native_frame(&frame));
                    }
                    match state.on_frame(&frame) {
                        Ok(chunks) => encode_chunks(&chunks, &mut out),
                        Err(e) => encode_error(&e, &mut out),
                    }
                    if state.finished() && !*done_sent {
                        *done_sent = true;
                        out.extend_from_slice(DONE_FRAME.as_bytes());
                    }
                }
            }
            Self::Gemini { decoder, state } => {
                for frame in decoder.push(bytes)? {
                    match state.on_frame(&frame) {
                        Ok(chunks) => encode_chunks(&chunks, &mut out),
                        Err(e) => encode_error(&e, &mut out),
                    }
                }
            }
            Self::Cohere {
                decoder,
                state,
                done_sent,
            } => {
                for frame in decoder.push(bytes)? {
                    match state.on_frame(&frame) {
                        Ok(chunks) => encode_chunks(&chunks, &mut out),
                        Err(e) => encode_error(&e, &mut out),
                    }
                    if state.finished() && !*done_sent {
                        *done_sent = true;
                        out.extend_from_slice(DONE_FRAME.as_bytes());
                    }
                }
            }
            Self::Bedrock {
                decoder,
                state,
                done_sent,
            } => match decoder.push(bytes) {
                Ok(messages) => {
                    for m in &messages {
                        match state.on_message(m) {
                            Ok(chunks) => encode_chunks(&chunks, &mut out),
                            Err(e) => encode_error(&e, &mut out),
                        }
                        if state.finished() && !*done_sent {
                            *done_sent = true;
                            out.extend_from_slice(DONE_FRAME.as_bytes());
                        }
                    }
                }
                // Corrupt framing: an error event; the observer ends the stream.
                Err(e) => encode_error(&e, &mut out),
            },
            Self::WorkersAi {
                decoder,
                state,
                done_sent,
            } => {
                for frame in decoder.push(bytes)? {
                    match state.on_frame(&frame) {
                        Ok(chunks) => encode_chunks(&chunks, &mut out),
                        Err(e) => encode_error(&e, &mut out),
                    }
                    if state.finished() && !*done_sent {
                        *done_sent = true;
                        out.extend_from_slice(DONE_FRAME.as_bytes());
                    }
                }
            }
        }
        Ok(out)
    }

    /// At the end of the upstream body: what is still owed to the client.
    fn end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Self::Gemini { state, .. } = self {
            // Gemini has no terminator: a stream that finished properly gets
            // OpenAI's `[DONE]`; one that did not is left without it, which
            // the observer reports as truncated.
            let (chunks, proper) = state.finish();
            encode_chunks(&chunks, &mut out);
            if proper {
                out.extend_from_slice(DONE_FRAME.as_bytes());
            }
        }
        out
    }
}

/// Everything between the provider's stream bytes and the client's: the
/// wire translation (if any), then the OpenAI-format observer (usage, end,
/// error-frame scrubbing).
pub struct StreamPipeline {
    transcoder: Option<Transcoder>,
    observer: ChatStreamObserver,
    /// See [`StreamPipeline::native_output`].
    native: bool,
}

impl StreamPipeline {
    /// For the demo provider and OpenAI-format streams.
    pub fn passthrough(observer: ChatStreamObserver) -> Self {
        Self {
            transcoder: None,
            observer,
            native: false,
        }
    }

    /// Send the client the provider's own Anthropic events (the Messages
    /// pass-through) while still observing the translation for usage, the
    /// end of the stream and the cache. No effect on other wires.
    #[must_use]
    pub fn native_output(mut self) -> Self {
        self.native = matches!(self.transcoder, Some(Transcoder::Anthropic { .. }));
        self
    }

    pub fn for_call(call: &HttpCall, id: &str, created: u64) -> Self {
        let observer = ChatStreamObserver::new(call.strip_usage_chunk, call.api_key().cloned());
        let decoder = || SseDecoder::new(DEFAULT_MAX_LINE_BYTES);
        let transcoder = match call.wire {
            Wire::OpenAi => None,
            Wire::Anthropic => Some(Transcoder::Anthropic {
                decoder: decoder(),
                state: anthropic::StreamState::new(id.to_owned(), created, call.model.clone())
                    .with_provider(&call.provider),
                done_sent: false,
            }),
            Wire::Gemini => Some(Transcoder::Gemini {
                decoder: decoder(),
                state: gemini::StreamState::new(id.to_owned(), created, call.model.clone()),
            }),
            Wire::Cohere => Some(Transcoder::Cohere {
                decoder: decoder(),
                state: cohere::StreamState::new(id.to_owned(), created, call.model.clone())
                    .with_provider(&call.provider),
                done_sent: false,
            }),
            Wire::Bedrock => Some(Transcoder::Bedrock {
                decoder: bedrock::EventStreamDecoder::new(),
                state: bedrock::StreamState::new(id.to_owned(), created, call.model.clone())
                    .with_provider(&call.provider),
                done_sent: false,
            }),
        };
        Self {
            transcoder,
            observer,
            native: false,
        }
    }

    /// For a Workers AI binding stream (SSE bytes from `run()`).
    pub fn for_binding(call: &BindingCall, id: &str, created: u64) -> Self {
        Self {
            transcoder: Some(Transcoder::WorkersAi {
                decoder: SseDecoder::new(DEFAULT_MAX_LINE_BYTES),
                state: workers_ai::StreamState::new(
                    id.to_owned(),
                    created,
                    call.model.clone(),
                    call.context.clone(),
                )
                .with_provider(&call.provider),
                done_sent: false,
            }),
            // No provider key exists to scrub: the binding carries none.
            observer: ChatStreamObserver::new(call.strip_usage_chunk, None),
            native: false,
        }
    }

    /// Also rebuild the whole answer for the exact cache (see
    /// `ChatStreamObserver::with_accumulator`).
    #[must_use]
    pub fn with_accumulator(mut self, max_bytes: usize) -> Self {
        self.observer = self.observer.with_accumulator(max_bytes);
        self
    }

    /// Upstream bytes in; bytes for the client out (whole frames only).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, SseError> {
        match &mut self.transcoder {
            None => self.observer.on_bytes(bytes),
            Some(t) if self.native => {
                let mut raw = Vec::new();
                let openai = t.push(bytes, Some(&mut raw))?;
                self.observer.on_bytes(&openai)?;
                Ok(raw)
            }
            Some(t) => {
                let openai = t.push(bytes, None)?;
                self.observer.on_bytes(&openai)
            }
        }
    }

    /// The upstream body ended: anything still owed to the client.
    pub fn end(&mut self) -> Result<Vec<u8>, SseError> {
        match &mut self.transcoder {
            None => Ok(Vec::new()),
            Some(t) => {
                let openai = t.end();
                let out = self.observer.on_bytes(&openai)?;
                Ok(if self.native { Vec::new() } else { out })
            }
        }
    }

    pub fn saw_error_frame(&self) -> bool {
        self.observer.saw_error_frame()
    }

    pub fn finish(self, client_aborted: bool) -> StreamSummary {
        self.observer.finish(client_aborted)
    }
}

/// An Anthropic frame as the pass-through forwards it: as it came, except an
/// `error` event, rebuilt with its message scrubbed of anything key-shaped.
fn native_frame(frame: &crate::sse::SseFrame) -> Vec<u8> {
    if frame.event.as_deref() != Some("error") {
        return frame.raw.clone();
    }
    let error = frame
        .data
        .as_deref()
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
        .and_then(|v| v.get("error").cloned());
    let field = |k: &str, default: &str| {
        error
            .as_ref()
            .and_then(|e| e.get(k))
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    };
    let message: String = scrub_key_like(&field("message", "The provider reported an error."))
        .chars()
        .take(500)
        .collect();
    let body = serde_json::json!({"type": "error", "error": {"type": field("type", "api_error"), "message": message}});
    crate::sse::encode_event("error", &body.to_string()).into_bytes()
}

/// The `message` of an OpenAI-style error body, if there is one.
fn upstream_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let m = v.get("error")?;
    m.get("message")
        .and_then(Value::as_str)
        .or_else(|| m.as_str())
        .map(str::to_owned)
}

/// A `Retry-After` value worth passing on: delta-seconds only.
fn sane_retry_after(v: Option<&str>) -> Option<String> {
    let v = v?.trim();
    (!v.is_empty() && v.len() <= 6 && v.bytes().all(|b| b.is_ascii_digit())).then(|| v.to_owned())
}

/// Maps a non-2xx upstream answer to the client's error. Provider text is
/// passed on only for request errors the client can fix (400/404/413/422), and
/// only after scrubbing the provider key and anything key-shaped from it; auth
/// failures become a 502 that names the provider, because the credentials at
/// fault are the operator's, not the client's.
pub fn map_upstream_error(
    provider: &str,
    status: u16,
    body: &[u8],
    retry_after: Option<&str>,
    api_key: Option<&Secret>,
) -> GatewayError {
    let clean = |text: String| {
        let text = match api_key {
            Some(k) => scrub(&text, k),
            None => text,
        };
        let text = scrub_key_like(&text);
        text.chars().take(500).collect::<String>()
    };
    match status {
        300..=399 => GatewayError::UpstreamRedirect {
            provider: provider.to_owned(),
        },
        400 | 404 | 413 | 422 => {
            let detail = upstream_message(body).map(clean);
            GatewayError::Upstream {
                provider: provider.to_owned(),
                status,
                message: match detail {
                    Some(d) => format!("Provider '{provider}' rejected the request: {d}"),
                    None => format!("Provider '{provider}' rejected the request (HTTP {status})."),
                },
                code: if status == 404 {
                    "upstream_not_found"
                } else {
                    "upstream_invalid_request"
                },
                retry_after: None,
            }
        }
        401 | 403 => GatewayError::Upstream {
            provider: provider.to_owned(),
            status: 502,
            message: format!(
                "Provider '{provider}' rejected the gateway's credentials (HTTP {status}); \
                 the operator should check its API key."
            ),
            code: "upstream_auth_failed",
            retry_after: None,
        },
        429 => GatewayError::Upstream {
            provider: provider.to_owned(),
            status: 429,
            message: format!("Provider '{provider}' is rate limiting requests; retry later."),
            code: "upstream_rate_limited",
            retry_after: sane_retry_after(retry_after),
        },
        _ => GatewayError::Upstream {
            provider: provider.to_owned(),
            status: if status == 503 || status == 504 {
                status
            } else {
                502
            },
            message: format!("Provider '{provider}' returned an error (HTTP {status})."),
            code: "upstream_error",
            retry_after: sane_retry_after(retry_after),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> GatewayConfig {
        GatewayConfig::from_json(json!({
            "providers": {
                "openai": {"base_url": "http://127.0.0.1:9/v1/"},
                "groq": {},
                "local": {"kind": "ollama"},
                "demo": {"kind": "demo"}
            }
        }))
        .unwrap()
    }

    fn target(p: &str, m: &str) -> Target {
        Target {
            provider: p.into(),
            model: m.into(),
        }
    }

    fn secrets(name: &str) -> Option<Secret> {
        (name == "OPENAI_API_KEY").then(|| Secret::new("sk-openai-canary"))
    }

    #[test]
    fn http_plan_uses_operator_url_and_own_key() {
        let body = json!({"model":"x","messages":[],"stream":true})
            .as_object()
            .unwrap()
            .clone();
        let Plan::Http(call) = plan(
            &config(),
            &target("openai", "gpt-4o"),
            Endpoint::ChatCompletions,
            body,
            true,
            secrets,
            0,
        )
        .unwrap() else {
            panic!("expected http");
        };
        assert_eq!(call.url, "http://127.0.0.1:9/v1/chat/completions");
        assert_eq!(call.api_key().unwrap().expose(), "sk-openai-canary");
        assert_eq!(
            call.key.as_ref().unwrap().value(),
            "Bearer sk-openai-canary"
        );
        assert!(call.strip_usage_chunk);
        let sent: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(sent["model"], "gpt-4o");
        assert_eq!(sent["stream_options"]["include_usage"], true);
        assert!(!format!("{call:?}").contains("canary"));
    }

    #[test]
    fn missing_key_is_503_but_self_hosted_needs_none() {
        let body = Map::new();
        let e = plan(
            &config(),
            &target("groq", "llama"),
            Endpoint::ChatCompletions,
            body.clone(),
            false,
            secrets,
            0,
        )
        .unwrap_err();
        assert_eq!(e.status(), 503);
        assert!(e.message().contains("GROQ_API_KEY"));
        let Plan::Http(call) = plan(
            &config(),
            &target("local", "llama3"),
            Endpoint::Embeddings,
            body,
            false,
            secrets,
            0,
        )
        .unwrap() else {
            panic!()
        };
        assert!(call.api_key().is_none());
        assert_eq!(call.url, "http://127.0.0.1:11434/v1/embeddings");
    }

    fn provider_config() -> GatewayConfig {
        GatewayConfig::from_json(json!({
            "providers": {
                "claude": {"kind": "anthropic", "base_url": "http://127.0.0.1:9/v1"},
                "google": {"kind": "gemini"},
                "az": {"kind": "azure", "base_url": "https://res.openai.azure.com/openai", "api_version": "2024-06-01"}
            }
        }))
        .unwrap()
    }

    fn all_keys(name: &str) -> Option<Secret> {
        Some(Secret::new(format!("key-for-{name}")))
    }

    fn chat_body(stream: bool) -> Map<String, Value> {
        json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn each_wire_gets_its_url_and_key_header() {
        let c = provider_config();
        let cases = [
            ("claude", "claude-sonnet-4-5", Wire::Anthropic, "http://127.0.0.1:9/v1/messages", "x-api-key", "key-for-ANTHROPIC_API_KEY"),
            ("google", "gemini-2.5-flash", Wire::Gemini, "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", "x-goog-api-key", "key-for-GEMINI_API_KEY"),
            ("az", "my-gpt4o", Wire::OpenAi, "https://res.openai.azure.com/openai/deployments/my-gpt4o/chat/completions?api-version=2024-06-01", "api-key", "key-for-AZURE_OPENAI_API_KEY"),
        ];
        for (provider, model, wire, url, header, value) in cases {
            let Plan::Http(call) = plan(
                &c,
                &target(provider, model),
                Endpoint::ChatCompletions,
                chat_body(true),
                true,
                all_keys,
                0,
            )
            .unwrap() else {
                panic!()
            };
            assert_eq!(call.wire, wire, "{provider}");
            assert_eq!(call.url, url);
            let key = call.key.as_ref().unwrap();
            assert_eq!((key.name, key.value().as_str()), (header, value));
            assert!(call.strip_usage_chunk);
        }
        let Plan::Http(call) = plan(
            &c,
            &target("claude", "claude-sonnet-4-5"),
            Endpoint::ChatCompletions,
            chat_body(false),
            false,
            all_keys,
            0,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            call.headers,
            vec![("anthropic-version", anthropic::API_VERSION.to_owned())]
        );
        let sent: Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(sent["model"], "claude-sonnet-4-5");
    }

    #[test]
    fn path_models_cannot_escape_their_segment() {
        let c = provider_config();
        for bad in ["../x", "a/b", "m?x=1", "m#f", ".."] {
            for p in ["google", "az"] {
                let e = plan(
                    &c,
                    &target(p, bad),
                    Endpoint::ChatCompletions,
                    chat_body(false),
                    false,
                    all_keys,
                    0,
                )
                .unwrap_err();
                assert_eq!(e.status(), 400, "{p} {bad}");
            }
        }
        let e = plan(
            &c,
            &target("claude", "x"),
            Endpoint::Embeddings,
            Map::new(),
            false,
            all_keys,
            0,
        )
        .unwrap_err();
        assert!(e.message().contains("no embeddings"));
    }

    fn pipeline_text(call_wire: Wire, sse: &str, piece: usize) -> (String, StreamSummary) {
        let call = HttpCall {
            provider: "p".into(),
            wire: call_wire,
            url: String::new(),
            model: "m".into(),
            key: None,
            headers: vec![],
            signed_headers: vec![],
            body: vec![],
            stream: true,
            strip_usage_chunk: false,
            base64_embeddings: false,
        };
        let mut p = StreamPipeline::for_call(&call, "chatcmpl-1", 1);
        let mut out = Vec::new();
        for chunk in sse.as_bytes().chunks(piece) {
            out.extend(p.push(chunk).unwrap());
        }
        out.extend(p.end().unwrap());
        (String::from_utf8(out).unwrap(), p.finish(false))
    }

    fn content_of(openai_sse: &str) -> String {
        let mut text = String::new();
        for line in openai_sse.lines() {
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

    #[test]
    fn anthropic_stream_becomes_an_openai_stream_ending_in_done() {
        let sse = include_str!("../../tests/fixtures/anthropic/stream.text.sse");
        for piece in [1, 7, 4096] {
            let (out, summary) = pipeline_text(Wire::Anthropic, sse, piece);
            assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
            assert!(!content_of(&out).is_empty());
            assert_eq!(summary.end, crate::usage::StreamEnd::Completed);
            assert!(summary.usage.is_some());
        }
    }

    #[test]
    fn gemini_stream_gets_done_only_when_finished() {
        let (out, summary) = pipeline_text(
            Wire::Gemini,
            include_str!("../../tests/fixtures/gemini/stream.text.sse"),
            5,
        );
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
        assert!(!content_of(&out).is_empty());
        assert_eq!(summary.end, crate::usage::StreamEnd::Completed);
        assert!(summary.usage.unwrap().total_tokens > 0);
        let (out, summary) = pipeline_text(
            Wire::Gemini,
            include_str!("../../tests/fixtures/gemini/stream.truncated.sse"),
            5,
        );
        assert!(!out.contains("[DONE]"));
        assert_eq!(summary.end, crate::usage::StreamEnd::Truncated);
    }

    #[test]
    fn translated_errors_are_scrubbed_of_the_exact_key() {
        let call = HttpCall {
            provider: "claude".into(),
            wire: Wire::Anthropic,
            url: String::new(),
            model: "m".into(),
            key: Some(KeyHeader {
                name: "x-api-key",
                scheme: None,
                key: Secret::new("zzCANARYzz0123456789"),
            }),
            headers: vec![],
            signed_headers: vec![],
            body: vec![],
            stream: false,
            strip_usage_chunk: false,
            base64_embeddings: false,
        };
        let body = br#"{"type":"error","error":{"type":"invalid_request_error","message":"bad value zzCANARYzz0123456789 here"}}"#;
        let e = map_error(&call, 400, body, None);
        assert_eq!(e.status(), 400);
        assert!(
            !e.to_body().to_string().contains("CANARY"),
            "{}",
            e.to_body()
        );
    }

    #[test]
    fn workers_ai_binding_plan_needs_no_key_and_streams_through_the_pipeline() {
        let c = GatewayConfig::from_json(json!({"providers": {
            "cf": {"kind": "workers-ai-binding", "binding": "AI_EU"}
        }}))
        .unwrap();
        let body = json!({"model": "x", "stream": true, "max_tokens": 9, "stop": "END",
                          "messages": [{"role": "user", "content": "hi"}]})
        .as_object()
        .unwrap()
        .clone();
        let no_secrets = |_: &str| None;
        let Plan::Binding(call) = plan(
            &c,
            &target("cf", "@cf/meta/llama-3.3-70b-instruct-fp8-fast"),
            Endpoint::ChatCompletions,
            body,
            true,
            no_secrets,
            0,
        )
        .unwrap() else {
            panic!("expected a binding call")
        };
        assert_eq!(
            (call.binding.as_str(), call.model.as_str(), call.stream),
            ("AI_EU", "@cf/meta/llama-3.3-70b-instruct-fp8-fast", true)
        );
        assert!(call.strip_usage_chunk);
        assert_eq!(
            call.inputs,
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9, "stream": true})
        );
        assert_eq!(call.context.stop, vec!["END"]);
        let mut p = StreamPipeline::for_binding(&call, "chatcmpl-1", 1);
        let sse = include_str!("../../tests/fixtures/workers-ai/stream.text.sse");
        let mut out = Vec::new();
        for chunk in sse.as_bytes().chunks(3) {
            out.extend(p.push(chunk).unwrap());
        }
        out.extend(p.end().unwrap());
        let out = String::from_utf8(out).unwrap();
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
        assert_eq!(content_of(&out), "Hello! How can I help?");
        assert!(!out.contains("\"usage\":{"), "usage chunk stripped: {out}");
        let summary = p.finish(false);
        assert_eq!(summary.end, crate::usage::StreamEnd::Completed);
        assert_eq!(summary.usage.map(|u| u.total_tokens), Some(763));

        let body = json!({"model": "x", "input": ["a", "b"], "encoding_format": "base64"})
            .as_object()
            .unwrap()
            .clone();
        let Plan::Binding(call) = plan(
            &c,
            &target("cf", "@cf/baai/bge-small-en-v1.5"),
            Endpoint::Embeddings,
            body,
            false,
            no_secrets,
            0,
        )
        .unwrap() else {
            panic!("expected a binding call")
        };
        assert_eq!(call.inputs, json!({"text": ["a", "b"]}));
        assert!(call.base64_embeddings && !call.stream);
        let (bytes, v) = translate_binding_response(
            &call,
            Endpoint::Embeddings,
            br#"{"shape":[2,2],"data":[[1,0],[0,1]],"pooling":"mean"}"#,
            "chatcmpl-1",
            1,
        )
        .unwrap();
        assert_eq!(v["data"][1]["embedding"], "AAAAAAAAgD8=");
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), v);
    }

    #[test]
    fn demo_plan() {
        let body = json!({"stream_options":{"include_usage":true}})
            .as_object()
            .unwrap()
            .clone();
        let Plan::Demo {
            strip_usage_chunk,
            model,
            ..
        } = plan(
            &config(),
            &target("demo", "echo"),
            Endpoint::ChatCompletions,
            body,
            true,
            secrets,
            0,
        )
        .unwrap()
        else {
            panic!()
        };
        assert!(!strip_usage_chunk);
        assert_eq!(model, "echo");
    }

    #[test]
    fn upstream_errors_never_leak_the_key() {
        let key = Secret::new("sk-CANARY-0123456789abcdef");
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-CANARY-0123************cdef.","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        let e = map_upstream_error("openai", 401, body, None, Some(&key));
        assert_eq!(e.status(), 502);
        assert!(!e.to_body().to_string().contains("CANARY"));

        let body = br#"{"error":{"message":"Invalid 'temperature': sk-CANARY-0123456789abcdef is echoed here"}}"#;
        let e = map_upstream_error("openai", 400, body, None, Some(&key));
        assert_eq!(e.status(), 400);
        let text = e.to_body().to_string();
        assert!(text.contains("Invalid 'temperature'"));
        assert!(!text.contains("CANARY"), "{text}");
    }

    #[test]
    fn status_mapping() {
        let e = map_upstream_error("p", 429, b"", Some("7"), None);
        assert_eq!((e.status(), e.retry_after()), (429, Some("7")));
        let e = map_upstream_error("p", 429, b"", Some("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(e.retry_after(), None);
        assert_eq!(
            map_upstream_error("p", 500, b"oops", None, None).status(),
            502
        );
        assert_eq!(map_upstream_error("p", 503, b"", None, None).status(), 503);
        assert_eq!(
            map_upstream_error("p", 302, b"", None, None).code(),
            "upstream_redirect"
        );
        assert_eq!(
            map_upstream_error("p", 404, b"{}", None, None).status(),
            404
        );
    }
}
