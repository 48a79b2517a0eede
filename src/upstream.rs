//! Calling a provider over HTTP, and the stream that carries its SSE answer
//! to the client while the gateway watches it for usage and its end.
//!
//! Outbound requests carry only headers the gateway sets itself (never the
//! client's `Authorization` or anything else of the client's), the provider
//! key goes only to that provider's configured URL, and redirects are not
//! followed (a 3xx is an upstream error).

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures::channel::oneshot;
use futures::{Future, Stream};
use wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{console_error, web_sys, AbortController, AbortSignal, Delay, Headers, Response};

use crate::error::GatewayError;
use crate::http::{declared_length, now_ms, set_header, whole_body};
use crate::messages::StreamEncoder;
use crate::providers::HttpCall;
use crate::providers::StreamPipeline;
use crate::usage::{truncation_error_frame, StreamEnd, StreamSummary};

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
            let why = e
                .dyn_ref::<js_sys::Error>()
                .map(|e| String::from(e.message()))
                .unwrap_or_else(|| format!("{e:?}"));
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

    /// The body as a stream of chunks (an SSE answer).
    pub fn into_stream(self) -> Result<ByteSource, worker::Error> {
        Ok(Box::pin(Response::from(self.raw).stream()?))
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

/// What a finished stream reports to the ledger writer.
#[derive(Debug)]
pub struct StreamReport {
    pub summary: StreamSummary,
    /// Milliseconds from request start to the first byte sent to the client.
    pub ttft_ms: Option<u64>,
    pub ended_at_ms: u64,
}

pub type ByteSource = Pin<Box<dyn Stream<Item = Result<Vec<u8>, worker::Error>>>>;

/// Forwards an OpenAI-format SSE stream frame by frame, and reports how it
/// ended through a channel — also when the client goes away, because the
/// runtime then drops the stream without finishing it.
pub struct ObservedStream {
    source: ByteSource,
    /// Aborts the upstream fetch when the stream ends early (idle timeout,
    /// client gone), so the provider stops generating.
    abort: Option<AbortController>,
    /// Longest gap allowed between upstream chunks.
    idle_ms: u64,
    /// One timer for the idle limit, re-armed only when it fires early
    /// (`sse::idle_wait_left`), not per chunk.
    idle_timer: Option<Pin<Box<Delay>>>,
    last_chunk_at_ms: u64,
    /// Bytes already taken from the source before the response was committed.
    prefix: Option<Vec<u8>>,
    observer: Option<StreamPipeline>,
    report: Option<oneshot::Sender<StreamReport>>,
    started_at_ms: u64,
    ttft_ms: Option<u64>,
    done: bool,
    /// Re-encodes what the client is sent (Anthropic events on `/v1/messages`).
    encoder: Option<StreamEncoder>,
}

impl ObservedStream {
    /// Starts forwarding. `committed` is what [`first_output`] returned: the
    /// first bytes for the client, already observed.
    pub fn new(
        committed: FirstOutput,
        started_at_ms: u64,
        idle_ms: u64,
        abort: Option<AbortController>,
        encoder: Option<StreamEncoder>,
    ) -> (Self, oneshot::Receiver<StreamReport>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                source: committed.source,
                abort,
                idle_ms,
                idle_timer: None,
                last_chunk_at_ms: started_at_ms,
                prefix: Some(committed.bytes),
                observer: Some(committed.observer),
                report: Some(tx),
                started_at_ms,
                ttft_ms: None,
                done: false,
                encoder,
            },
            rx,
        )
    }

    fn send_report(
        &mut self,
        client_aborted: bool,
        forced_end: Option<StreamEnd>,
    ) -> Option<StreamEnd> {
        let observer = self.observer.take()?;
        let mut summary = observer.finish(client_aborted);
        if let Some(end) = forced_end {
            if summary.end == StreamEnd::Completed {
                summary.end = end;
            }
        }
        let end = summary.end;
        if let Some(tx) = self.report.take() {
            let _ = tx.send(StreamReport {
                summary,
                ttft_ms: self.ttft_ms,
                ended_at_ms: now_ms(),
            });
        }
        Some(end)
    }

    fn abort_upstream(&mut self) {
        if let Some(c) = self.abort.take() {
            c.abort();
        }
    }

    fn arm_idle_timer(&mut self, ms: u64) {
        // setTimeout treats delays past 2^31-1 ms as 0; config caps idle at 1 h.
        let ms = ms.clamp(1, i32::MAX as u64);
        self.idle_timer = Some(Box::pin(Delay::from(std::time::Duration::from_millis(ms))));
    }

    /// With the source pending: true once no chunk has come for `idle_ms`.
    /// Otherwise the idle timer is armed (or re-armed for what is left of
    /// the window since the last chunk) and registered with `cx`.
    fn idle_expired(&mut self, cx: &mut TaskContext<'_>) -> bool {
        loop {
            if self.idle_timer.is_none() {
                let left =
                    crate::sse::idle_wait_left(self.last_chunk_at_ms, now_ms(), self.idle_ms);
                match left {
                    Some(ms) => self.arm_idle_timer(ms),
                    None => return true,
                }
            }
            let fired = self
                .idle_timer
                .as_mut()
                .is_some_and(|t| t.as_mut().poll(cx).is_ready());
            if !fired {
                return false;
            }
            // Fired: over, unless chunks came since it was armed.
            self.idle_timer = None;
        }
    }

    /// Ends the stream after an upstream failure: report, then one error frame.
    fn fail(&mut self) -> Poll<Option<Result<Vec<u8>, worker::Error>>> {
        self.done = true;
        self.abort_upstream();
        self.send_report(false, Some(StreamEnd::Truncated));
        Poll::Ready(Some(Ok(self.truncation_notice())))
    }

    /// The client's error frame for a stream cut after the commit point.
    fn truncation_notice(&mut self) -> Vec<u8> {
        match self.encoder.as_mut() {
            Some(e) => e.truncated(),
            None => truncation_error_frame().into_bytes(),
        }
    }

    /// OpenAI-format bytes for the client, in the client's format.
    fn encode(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        let Some(encoder) = self.encoder.as_mut() else {
            return bytes;
        };
        match encoder.push(&bytes) {
            Ok(out) => out,
            Err(e) => {
                console_error!("could not re-encode the stream: {e}");
                encoder.truncated()
            }
        }
    }
}

impl Stream for ObservedStream {
    type Item = Result<Vec<u8>, worker::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if let Some(prefix) = self.prefix.take() {
            let now = now_ms();
            self.ttft_ms = Some(now.saturating_sub(self.started_at_ms));
            self.last_chunk_at_ms = now;
            let prefix = self.encode(prefix);
            return Poll::Ready(Some(Ok(prefix)));
        }
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match self.source.as_mut().poll_next(cx) {
                Poll::Pending => {
                    if self.idle_expired(cx) {
                        console_error!(
                            "upstream stream idle for over {} ms; ending it",
                            self.idle_ms
                        );
                        return self.fail();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(bytes))) => {
                    self.last_chunk_at_ms = now_ms();
                    let Some(observer) = self.observer.as_mut() else {
                        return Poll::Ready(None);
                    };
                    let pushed = observer.push(&bytes);
                    match pushed.map(|out| self.encode(out)) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => {
                            if self.ttft_ms.is_none() {
                                self.ttft_ms = Some(now_ms().saturating_sub(self.started_at_ms));
                            }
                            return Poll::Ready(Some(Ok(out)));
                        }
                        Err(e) => {
                            console_error!("upstream stream is not valid SSE: {e}");
                            return self.fail();
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    console_error!("upstream stream broke: {e}");
                    return self.fail();
                }
                Poll::Ready(None) => {
                    self.done = true;
                    // What a translated stream still owes (e.g. Gemini's usage and `[DONE]`).
                    let mut tail = match self.observer.as_mut().map(StreamPipeline::end) {
                        Some(Ok(bytes)) => bytes,
                        Some(Err(e)) => {
                            console_error!("upstream stream ended with invalid SSE: {e}");
                            Vec::new()
                        }
                        None => Vec::new(),
                    };
                    tail = self.encode(tail);
                    if self.send_report(false, None) == Some(StreamEnd::Truncated) {
                        // Cut without `[DONE]`: tell the client instead of ending
                        // as if the answer were complete.
                        let notice = self.truncation_notice();
                        tail.extend_from_slice(&notice);
                    }
                    if tail.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(tail)));
                }
            }
        }
    }
}

/// A stream whose first client-visible bytes have arrived: the commit point.
pub struct FirstOutput {
    source: ByteSource,
    observer: StreamPipeline,
    bytes: Vec<u8>,
}

/// Reads the upstream stream until it yields its first bytes for the client.
/// Until then nothing has been sent and the attempt can still fail as a whole
/// (a clean HTTP error now; the next link of a fallback chain later): a stream
/// that breaks or ends before its first frame, is not SSE, or opens with an
/// error frame is an upstream error, not a 200.
pub async fn first_output(
    mut source: ByteSource,
    mut observer: StreamPipeline,
    provider: &str,
) -> Result<FirstOutput, GatewayError> {
    use futures::StreamExt;
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
                // Never poll a finished body again.
                source = Box::pin(futures::stream::empty());
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

impl Drop for ObservedStream {
    fn drop(&mut self) {
        // Dropped before the end: the client went away (or the runtime
        // cancelled the response). Still report, so the ledger gets its row.
        if self.report.is_some() {
            self.send_report(true, None);
        }
        self.abort_upstream();
    }
}
