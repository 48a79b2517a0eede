//! Thin helpers over workers-rs for requests and responses: bounded body
//! reads, JSON and error responses, ids and clocks.

use futures::StreamExt;
use serde::Serialize;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{console_error, web_sys, Headers, Request, Response};

use crate::error::GatewayError;

pub const REQUEST_ID_HEADER: &str = "x-tollgate-request-id";

/// Milliseconds since the epoch (Workers' clock advances only across I/O,
/// which is exactly the resolution latency accounting needs).
///
/// `Date.now()` rather than workers-rs' `Date::now()`, which allocates a JS
/// `Date` object per call.
pub fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// Random bytes from the platform CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], GatewayError> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).map_err(|e| {
        console_error!("getrandom failed: {e}");
        GatewayError::Internal
    })?;
    Ok(buf)
}

/// A fresh gateway request id (`ledger::request_id`: time, then 80 random
/// bits).
pub fn new_request_id() -> String {
    match random_bytes::<10>() {
        Ok(b) => crate::ledger::request_id(now_ms(), b),
        // Still unique enough to keep the ledger's primary key distinct within
        // this isolate; getrandom failing is not expected on Workers.
        Err(_) => format!("req_t{}", now_ms()),
    }
}

/// Reads a request body, refusing more than `limit` bytes (checked against
/// `Content-Length` first and again while streaming, since the header can lie).
pub async fn read_body_limited(req: &mut Request, limit: u64) -> Result<Vec<u8>, GatewayError> {
    let too_large = GatewayError::PayloadTooLarge { limit_bytes: limit };
    if let Some(len) = declared_length(req.headers()) {
        if len > limit {
            return Err(too_large);
        }
        // The runtime holds the body to its declared length (HTTP framing),
        // so it is read in one piece: one copy into wasm instead of a reader,
        // a lock and a copy per chunk.
        return req
            .bytes()
            .await
            .map_err(|_| GatewayError::invalid("Could not read the request body."));
    }
    let Ok(mut stream) = req.stream() else {
        // No body at all.
        return Ok(Vec::new());
    };
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| GatewayError::invalid("Could not read the request body."))?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A client's request to a proxy route, as the runtime handed it over:
/// its headers and body are all the proxy reads. workers-rs' `Request` is
/// built for the other routes only, because building it reads `request.cf`,
/// which in production is an object of some thirty fields made on access.
pub struct Incoming {
    raw: web_sys::Request,
    headers: Headers,
}

impl Incoming {
    pub fn new(raw: web_sys::Request) -> Self {
        let headers = Headers(raw.headers());
        Self { raw, headers }
    }

    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The body, refusing more than `limit` bytes: one `arrayBuffer()` when
    /// `Content-Length` is declared (HTTP framing holds the body to it),
    /// else [`read_body_limited`]'s counted stream.
    pub async fn read_body_limited(&self, limit: u64) -> Result<Vec<u8>, GatewayError> {
        let Some(len) = declared_length(&self.headers) else {
            let mut req = Request::from(Clone::clone(&self.raw));
            return read_body_limited(&mut req, limit).await;
        };
        if len > limit {
            return Err(GatewayError::PayloadTooLarge { limit_bytes: limit });
        }
        whole_body(self.raw.array_buffer())
            .await
            .map_err(|_| GatewayError::invalid("Could not read the request body."))
    }
}

/// `Content-Length`, when declared and a number.
pub fn declared_length(headers: &Headers) -> Option<u64> {
    headers
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|len| len.trim().parse::<u64>().ok())
}

/// A body read whole by the runtime (the promise of `arrayBuffer()`): one
/// promise and one copy into wasm, where a stream reader takes a promise, a
/// lock and a copy per chunk.
pub async fn whole_body(
    array_buffer: Result<js_sys::Promise, wasm_bindgen::JsValue>,
) -> Result<Vec<u8>, wasm_bindgen::JsValue> {
    let buffer = JsFuture::from(array_buffer?).await?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// A JSON response with the given status.
pub fn json_response<T: Serialize>(value: &T, status: u16) -> Result<Response, GatewayError> {
    let body = serde_json::to_vec(value).map_err(|_| GatewayError::Internal)?;
    let headers = Headers::new();
    set_header(&headers, "content-type", "application/json");
    Ok(Response::from_bytes(body)
        .map_err(|_| GatewayError::Internal)?
        .with_status(status)
        .with_headers(headers))
}

/// Sets a header, logging (never panicking) if the platform refuses it. The
/// log names the header but not the platform's error, which may quote the
/// value — and some values (provider keys, signatures) are credentials.
pub fn set_header(headers: &Headers, name: &str, value: &str) {
    if headers.set(name, value).is_err() {
        console_error!("could not set header {name}: the runtime refused its value");
    }
}

/// Renders an error as OpenAI's error body. Infallible by construction: if the
/// platform cannot build the JSON response, a plain one is returned instead.
pub fn error_response(err: &GatewayError, request_id: Option<&str>) -> Response {
    error_response_with(err, request_id, &err.to_body())
}

/// Renders an error in Anthropic's shape (the `/v1/messages` routes).
pub fn messages_error_response(err: &GatewayError, request_id: Option<&str>) -> Response {
    let body = crate::messages::error_body(err, request_id);
    error_response_with(err, request_id, &body)
}

/// An error's status and headers with the given body.
fn error_response_with(
    err: &GatewayError,
    request_id: Option<&str>,
    body: &serde_json::Value,
) -> Response {
    let status = err.status();
    let body = body.to_string();
    let headers = Headers::new();
    set_header(&headers, "content-type", "application/json");
    if let Some(id) = request_id {
        set_header(&headers, REQUEST_ID_HEADER, id);
    }
    if let Some(ra) = err.retry_after() {
        set_header(&headers, "retry-after", ra);
    }
    if let GatewayError::MethodNotAllowed { allowed } = err {
        set_header(&headers, "allow", allowed);
    }
    match Response::from_bytes(body.into_bytes()) {
        Ok(r) => r.with_status(status).with_headers(headers),
        Err(_) => Response::empty()
            .map(|r| r.with_status(status))
            .unwrap_or_else(|_| Response::empty().unwrap_or_else(|_| unreachable_response())),
    }
}

/// `Response::empty()` only fails if the JS runtime cannot allocate a
/// Response object at all; there is nothing better to return then.
fn unreachable_response() -> Response {
    Response::from_body(worker::ResponseBody::Empty)
        .unwrap_or_else(|_| Response::builder().with_status(500).empty())
}
