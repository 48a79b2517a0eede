//! The platform seam of the guardrails (`guardrails/` is pure): the
//! effective policy for a request, and the answer rewritten — a complete
//! body at once, a stream through [`SseGuard`] frame by frame.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures::channel::oneshot;
use futures::Stream;
use serde_json::{Map, Value};
use worker::{console_error, ByteStream, Response};

use crate::config::{GatewayConfig, RouteConfig};
use crate::error::GatewayError;
use crate::guardrails::stream::{guard_sse_body, SseGuard};
use crate::guardrails::{Guard, GuardEvent, OutputGuard, Tally};
use crate::keys::KeyGrant;
use crate::ledger::Endpoint;

/// What the input guardrails leave for the rest of the request.
pub struct Checked {
    pub body: Map<String, Value>,
    pub output: Option<OutputGuard>,
}

/// Applies the effective guardrails (global, then the key's, then the
/// route's) to a parsed request: limits, then detectors. Decisions go to
/// `events` even when the request is refused.
pub fn check_input(
    config: &GatewayConfig,
    grant: &KeyGrant,
    route: Option<&RouteConfig>,
    endpoint: Endpoint,
    mut body: Map<String, Value>,
    events: &mut Vec<GuardEvent>,
) -> Result<Checked, GatewayError> {
    let mut policy = config.guardrails.clone();
    if let Some(k) = &grant.guardrails {
        policy = policy.overlay(k);
    }
    if let Some(r) = route.and_then(|r| r.guardrails.as_ref()) {
        policy = policy.overlay(r);
    }
    let guard = match Guard::compile(&policy) {
        Ok(Some(g)) => g,
        Ok(None) => return Ok(Checked { body, output: None }),
        Err(why) => {
            // Validated config and admin input cannot get here; fail closed.
            console_error!("guardrail policy does not compile: {why}");
            return Err(GatewayError::Misconfigured);
        }
    };
    match guard.check_input(endpoint, &mut body) {
        Ok(outcome) => {
            events.extend(outcome.events.iter().cloned());
            let output = match endpoint {
                Endpoint::ChatCompletions | Endpoint::Messages => guard.output(&outcome),
                Endpoint::Embeddings => None,
            };
            Ok(Checked { body, output })
        }
        Err(refusal) => {
            events.extend(refusal.events);
            Err(refusal.error)
        }
    }
}

/// Guards a complete answer (JSON, or a cache replay's SSE body).
pub async fn complete(
    mut resp: Response,
    guard: OutputGuard,
    events: &mut Vec<GuardEvent>,
) -> Result<Response, GatewayError> {
    let bytes = resp.bytes().await.map_err(|_| GatewayError::Internal)?;
    let sse = resp
        .headers()
        .get("content-type")
        .ok()
        .flatten()
        .is_some_and(|c| c.starts_with("text/event-stream"));
    let (body, tally, blocked) = if sse {
        guard_sse_body(guard, &bytes)
    } else {
        let mut tally = Tally::default();
        let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
            return Ok(resp);
        };
        let blocked = guard.completion(&mut value, &mut tally).err();
        let body = serde_json::to_vec(&value).map_err(|_| GatewayError::Internal)?;
        (body, tally, blocked)
    };
    events.extend(tally.events("output"));
    if let Some(detector) = blocked {
        return Err(OutputGuard::blocked_error(&detector));
    }
    let status = resp.status_code();
    Ok(Response::from_bytes(body)
        .map_err(|_| GatewayError::Internal)?
        .with_status(status)
        .with_headers(resp.headers().clone()))
}

/// Guards a streamed answer; the receiver gets the decisions when it ends.
pub fn streaming(
    mut resp: Response,
    guard: OutputGuard,
) -> Result<(Response, oneshot::Receiver<Tally>), GatewayError> {
    let inner = resp.stream().map_err(|_| GatewayError::Internal)?;
    let (tx, rx) = oneshot::channel();
    let stream = GuardedStream {
        inner: Some(inner),
        guard: SseGuard::new(guard),
        report: Some(tx),
    };
    let status = resp.status_code();
    let out = Response::from_stream(stream)
        .map_err(|_| GatewayError::Internal)?
        .with_status(status)
        .with_headers(resp.headers().clone());
    Ok((out, rx))
}

/// The client's stream: the gateway's own stream, through the output guard.
struct GuardedStream {
    /// `None` once finished (dropping it cancels the upstream on a block).
    inner: Option<ByteStream>,
    guard: SseGuard,
    report: Option<oneshot::Sender<Tally>>,
}

impl GuardedStream {
    fn report(&mut self) {
        if let Some(tx) = self.report.take() {
            let _ = tx.send(self.guard.tally().clone());
        }
    }
}

impl Stream for GuardedStream {
    type Item = Result<Vec<u8>, worker::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let Some(inner) = self.inner.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    let out = match self.guard.push(&bytes) {
                        Ok(out) => out,
                        Err(e) => {
                            console_error!("output guardrails: stream is not valid SSE: {e}");
                            self.inner = None;
                            self.report();
                            return Poll::Ready(None);
                        }
                    };
                    if self.guard.blocked().is_some() {
                        // Stop the upstream: nothing more of this answer is sent.
                        self.inner = None;
                        self.report();
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.inner = None;
                    self.report();
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    self.inner = None;
                    let tail = self.guard.end();
                    self.report();
                    if tail.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(tail)));
                }
            }
        }
    }
}

impl Drop for GuardedStream {
    fn drop(&mut self) {
        self.report();
    }
}
