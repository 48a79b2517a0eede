//! Calling a provider over HTTP, and the stream that carries its SSE answer
//! to the client while the gateway watches it for usage and its end.
//!
//! Outbound requests carry only headers the gateway sets itself (never the
//! client's `Authorization` or anything else of the client's), the provider
//! key goes only to that provider's configured URL, and redirects are not
//! followed (a 3xx is an upstream error).

use std::pin::Pin;

use futures::channel::oneshot;
use futures::Stream;
use wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{console_error, web_sys, AbortController, AbortSignal, Headers, Response};

use crate::error::GatewayError;
use crate::http::{declared_length, now_ms, set_header, whole_body};
use crate::messages::StreamEncoder;
use crate::providers::HttpCall;
use crate::providers::StreamPipeline;
pub use crate::relay::{StreamRelay, StreamReport};

pub const USER_AGENT: &str = concat!("tollgate/", env!("CARGO_PKG_VERSION"));

/// Sends `call` and returns the provider's response (any status). Aborting
/// `signal` cancels the request (and its body stream) at the provider.
///
/// Calls the runtime's `fetch(url, init)` directly: workers-rs would first
/// build a `Request` object from the init and then fetch that, which costs a
/// second copy of the headers and body on every call.
pub async fn send(call: &HttpCall, signal: &AbortSignal) -> Result<Upstream, GatewayError> {
    let unreachable = || GatewayError::UpstreamUnreachable {
        provider: call.provider.clone(),
    };
    let headers = Headers::new();
    set_header(&headers, "content-type", "application/json");
    let accept = if call.stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    set_header(&headers, "accept", accept);
    set_header(&headers, "user-agent", USER_AGENT);
    for (name, value) in &call.headers {
        set_header(&headers, name, value);
    }
    for (name, value) in &call.signed_headers {
        set_header(&headers, name, value.expose());
    }
    if let Some(key) = &call.key {
        // The one place a provider key leaves the process: to its own provider.
        set_header(&headers, key.name, &key.value());
    }
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers.0);
    init.set_redirect(web_sys::RequestRedirect::Manual);
    init.set_body(&js_sys::Uint8Array::from(call.body.as_slice()));
    init.set_signal(Some(signal));
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let answered = JsFuture::from(global.fetch_with_str_and_init(&call.url, &init))
        .await
        .and_then(|r| r.dyn_into::<web_sys::Response>());
    match answered {
        Ok(resp) => Ok(Upstream::new(resp)),
        Err(e) => {
            let why = js_error_text(&e);
            console_error!("fetch to provider {} failed: {why}", call.provider);
            Err(unreachable())
        }
    }
}

/// A provider's answer as the runtime handed it over. Kept as the runtime's
/// own `Response` rather than workers-rs' (whose conversion reads `cf` and
/// `webSocket` and splits off the body) because a complete answer only needs
/// its status, a few headers and `arrayBuffer()`.
pub struct Upstream {
    raw: web_sys::Response,
    headers: Headers,
}

impl Upstream {
    fn new(raw: web_sys::Response) -> Self {
        let headers = Headers(raw.headers());
        Self { raw, headers }
    }

    pub fn status_code(&self) -> u16 {
        self.raw.status()
    }

    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The body as the source of a streamed answer (`None` without one).
    pub fn into_source(self) -> Option<StreamSource> {
        self.raw.body().map(|body| StreamSource::of(&body))
    }

    /// The whole body, refusing more than `limit` bytes.
    ///
    /// A declared length (HTTP framing holds the body to it) is checked up
    /// front and the body read by the runtime in one piece (`arrayBuffer()`):
    /// one promise and one copy into wasm instead of a reader, a lock and a
    /// copy per chunk. Not for an encoded body: the runtime decompresses it,
    /// so its length says nothing about what it reads.
    pub async fn read_limited(self, limit: u64, provider: &str) -> Result<Vec<u8>, GatewayError> {
        use futures::StreamExt;
        let invalid = || GatewayError::UpstreamInvalidResponse {
            provider: provider.to_owned(),
        };
        let unreachable = |why: &dyn std::fmt::Debug| {
            console_error!("reading the body from provider {provider} failed: {why:?}");
            GatewayError::UpstreamUnreachable {
                provider: provider.to_owned(),
            }
        };
        let encoded = self
            .headers
            .get("content-encoding")
            .ok()
            .flatten()
            .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
        let declared = declared_length(&self.headers).filter(|_| !encoded);
        if let Some(len) = declared {
            if len > limit {
                console_error!("provider {provider} declared a body of {len} bytes, over {limit}");
                return Err(invalid());
            }
            return whole_body(self.raw.array_buffer())
                .await
                .map_err(|e| unreachable(&e));
        }
        if self.raw.body().is_none() {
            return Ok(Vec::new());
        }
        let mut stream = Response::from(self.raw)
            .stream()
            .map_err(|e| unreachable(&e))?;
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| unreachable(&e))?;
            if body.len() as u64 + chunk.len() as u64 > limit {
                console_error!("provider {provider} sent a body over {limit} bytes");
                return Err(invalid());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

pub type ByteSource = Pin<Box<dyn Stream<Item = Result<Vec<u8>, worker::Error>>>>;

/// Where a streamed answer's bytes come from.
pub enum StreamSource {
    /// A runtime stream (a provider's body, a Workers AI binding's answer),
    /// read through its own reader.
    Reader(web_sys::ReadableStreamDefaultReader),
    /// Bytes the gateway makes itself (the demo provider, a whole answer
    /// served as a stream).
    Chunks(ByteSource),
}

impl StreamSource {
    pub fn of(stream: &web_sys::ReadableStream) -> Self {
        Self::Reader(stream.get_reader().unchecked_into())
    }

    /// The next chunk: `None` at the end, `Err` (why, for the log) when the
    /// stream broke.
    async fn next(&mut self) -> Option<Result<Vec<u8>, String>> {
        use futures::StreamExt;
        match self {
            Self::Chunks(s) => s.next().await.map(|r| r.map_err(|e| e.to_string())),
            Self::Reader(reader) => {
                let read = match JsFuture::from(reader.read()).await {
                    Ok(r) => r,
                    Err(e) => return Some(Err(js_error_text(&e))),
                };
                let done = js_sys::Reflect::get(&read, &"done".into())
                    .ok()
                    .and_then(|d| d.as_bool())
                    .unwrap_or(true);
                if done {
                    return None;
                }
                let value = js_sys::Reflect::get(&read, &"value".into()).ok()?;
                match value.dyn_into::<js_sys::Uint8Array>() {
                    Ok(bytes) => Some(Ok(bytes.to_vec())),
                    Err(_) => Some(Err("a stream chunk that is not bytes".to_owned())),
                }
            }
        }
    }

    /// The rest of the stream, as a runtime reader for [`relay_stream`].
    fn into_reader(self) -> Result<web_sys::ReadableStreamDefaultReader, worker::Error> {
        match self {
            Self::Reader(reader) => Ok(reader),
            Self::Chunks(chunks) => match Response::from_stream(chunks)?.body() {
                worker::ResponseBody::Stream(s) => Ok(s.get_reader().unchecked_into()),
                _ => Err(worker::Error::RustError(
                    "a stream response without a stream body".to_owned(),
                )),
            },
        }
    }
}

/// A thrown value's message, for the log.
fn js_error_text(e: &wasm_bindgen::JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .unwrap_or_else(|| format!("{e:?}"))
}

/// A stream whose first client-visible bytes have arrived: the commit point.
pub struct FirstOutput {
    source: StreamSource,
    observer: StreamPipeline,
    bytes: Vec<u8>,
}

/// Reads the upstream stream until it yields its first bytes for the client.
/// Until then nothing has been sent and the attempt can still fail as a whole
/// (a clean HTTP error now; the next link of a fallback chain later): a stream
/// that breaks or ends before its first frame, is not SSE, or opens with an
/// error frame is an upstream error, not a 200.
pub async fn first_output(
    mut source: StreamSource,
    mut observer: StreamPipeline,
    provider: &str,
) -> Result<FirstOutput, GatewayError> {
    loop {
        let next = source.next().await;
        let ended = next.is_none();
        let bytes = match next {
            Some(Ok(bytes)) => Some(bytes),
            // A stream that ended may still owe translated output (Gemini's
            // last frame, usage and `[DONE]`).
            None => None,
            Some(Err(e)) => {
                console_error!("stream from provider {provider} broke before its first frame: {e}");
                return Err(GatewayError::UpstreamUnreachable {
                    provider: provider.to_owned(),
                });
            }
        };
        let pushed = match &bytes {
            Some(b) => observer.push(b),
            None => observer.end(),
        };
        let out = pushed.map_err(|e| {
            console_error!("provider {provider} sent invalid SSE: {e}");
            GatewayError::UpstreamInvalidResponse {
                provider: provider.to_owned(),
            }
        })?;
        if observer.saw_error_frame() {
            console_error!("provider {provider} opened its stream with an error frame");
            return Err(GatewayError::Upstream {
                provider: provider.to_owned(),
                status: 502,
                message: format!(
                    "Provider '{provider}' returned an error at the start of its stream."
                ),
                code: "upstream_error",
                retry_after: None,
            });
        }
        if !out.is_empty() {
            if ended {
                // Never read a finished body again.
                source = StreamSource::Chunks(Box::pin(futures::stream::empty()));
            }
            return Ok(FirstOutput {
                source,
                observer,
                bytes: out,
            });
        }
        if ended {
            console_error!("stream from provider {provider} ended before its first frame");
            return Err(GatewayError::UpstreamInvalidResponse {
                provider: provider.to_owned(),
            });
        }
    }
}

/// The client's body for a committed stream: the first output, then the rest
/// of `first`'s source, each chunk through the [`StreamRelay`]; and a
/// receiver for how it ended (sent also when the client goes away).
///
/// The chunk loop is JavaScript (`stream_relay.js`): a pull-based stream
/// that hands each chunk to the relay synchronously. A Rust stream behind
/// workers-rs' `Response::from_stream` cost a promise, a future and a
/// microtask hop or two per chunk on each side of the wasm boundary; this
/// way forwarding a chunk costs less CPU and reaches the client sooner
/// (bench/README.md, "Seventh pass").
pub fn relay(
    first: FirstOutput,
    started_at_ms: u64,
    idle_ms: u64,
    abort: Option<AbortController>,
    encoder: Option<StreamEncoder>,
) -> Result<(web_sys::ReadableStream, oneshot::Receiver<StreamReport>), worker::Error> {
    let (tx, rx) = oneshot::channel();
    let relay = StreamRelay::new(
        first.observer,
        first.bytes,
        encoder,
        started_at_ms,
        idle_ms,
        tx,
    );
    let reader = first.source.into_reader()?;
    // setTimeout treats delays past 2^31-1 ms as 0; config caps idle at 1 h.
    let idle = idle_ms.clamp(1, i32::MAX as u64) as f64;
    let body = relay_stream(&reader, StreamTap { relay, abort }, idle);
    Ok((body, rx))
}

#[wasm_bindgen::prelude::wasm_bindgen(module = "/src/stream_relay.js")]
extern "C" {
    #[wasm_bindgen(js_name = relayStream)]
    fn relay_stream(
        reader: &web_sys::ReadableStreamDefaultReader,
        tap: StreamTap,
        idle_ms: f64,
    ) -> web_sys::ReadableStream;
}

/// The [`StreamRelay`] as `stream_relay.js` drives it, with the upstream
/// call's abort controller (so the provider stops generating when the stream
/// ends early). Owned by the JavaScript stream, which frees it when it ends.
#[wasm_bindgen::prelude::wasm_bindgen]
pub struct StreamTap {
    relay: StreamRelay,
    abort: Option<AbortController>,
}

impl StreamTap {
    fn abort_upstream(&mut self) {
        if let Some(c) = self.abort.take() {
            c.abort();
        }
    }

    fn fail(&mut self) -> Vec<u8> {
        self.abort_upstream();
        self.relay.fail(now_ms())
    }

    fn log_encode_error(&mut self) {
        if let Some(e) = self.relay.take_encode_error() {
            console_error!("could not re-encode the stream: {e}");
        }
    }
}

#[wasm_bindgen::prelude::wasm_bindgen]
impl StreamTap {
    /// The first output, read before the response was committed.
    pub fn prefix(&mut self) -> Vec<u8> {
        let out = self.relay.take_prefix(now_ms());
        self.log_encode_error();
        out
    }

    /// A chunk of the provider's stream in, the client's bytes out (maybe
    /// none). After invalid SSE: the truncation notice, and [`Self::done`].
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let out = match self.relay.push(chunk, now_ms()) {
            Ok(out) => out,
            Err(e) => {
                console_error!("upstream stream is not valid SSE: {e}");
                self.fail()
            }
        };
        self.log_encode_error();
        out
    }

    /// True once the stream must end (nothing more is read or sent).
    pub fn done(&self) -> bool {
        self.relay.is_done()
    }

    /// The provider's stream ended: what the client is still owed.
    pub fn end(&mut self) -> Vec<u8> {
        let (tail, error) = self.relay.end(now_ms());
        if let Some(e) = error {
            console_error!("upstream stream ended with invalid SSE: {e}");
        }
        self.log_encode_error();
        tail
    }

    /// The provider's stream broke: the truncation notice.
    pub fn broke(&mut self, why: String) -> Vec<u8> {
        console_error!("upstream stream broke: {why}");
        self.fail()
    }

    /// Milliseconds the idle limit has left (0: over), with a read pending
    /// since `waiting_since` (ms since the epoch).
    pub fn idle_left(&self, waiting_since: f64) -> f64 {
        let since = waiting_since.max(0.0) as u64;
        self.relay.idle_left(now_ms(), since).unwrap_or(0) as f64
    }

    /// No chunk for the idle limit: the truncation notice.
    pub fn idle_expired(&mut self) -> Vec<u8> {
        console_error!(
            "upstream stream idle for over {} ms; ending it",
            self.relay.idle_ms()
        );
        self.fail()
    }

    /// The client went away (the runtime cancelled the response body).
    pub fn cancel(&mut self) {
        self.relay.client_gone(now_ms());
        self.abort_upstream();
    }
}

impl Drop for StreamTap {
    fn drop(&mut self) {
        // Freed before an end the relay saw (the runtime dropped the stream):
        // report it as the client going away, so the ledger gets its row.
        if !self.relay.is_done() {
            self.relay.client_gone(now_ms());
        }
        self.abort_upstream();
    }
}
