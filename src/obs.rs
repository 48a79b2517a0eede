//! Observability on every response: `Server-Timing`, the request id, and a
//! structured JSON log line — for failures by default, for every request or
//! none as `[vars.GATEWAY.logging] requests` says (workers observability indexes JSON
//! logs by field). Bodies appear in logs only when the operator sets
//! `[vars.GATEWAY.logging] bodies = true`, and then PII-redacted
//! (`redact.rs`) and truncated.

use serde_json::json;
use worker::{console_log, Response};

use crate::http::{new_request_id, now_ms, set_header, REQUEST_ID_HEADER};
use crate::ops::{Logging, RequestLogs};

/// Adds what every response carries and logs the request. The proxy sets
/// its own request id (the ledger's) and a `Server-Timing` with the
/// upstream's share; every other response gets the gateway's time here.
pub fn finish(
    resp: Response,
    started_ms: u64,
    method: &str,
    path: &str,
    logs: RequestLogs,
) -> Response {
    let headers = resp.headers();
    let request_id = match headers.get(REQUEST_ID_HEADER).ok().flatten() {
        Some(id) => id,
        None => {
            let id = new_request_id();
            set_header(headers, REQUEST_ID_HEADER, &id);
            id
        }
    };
    let dur = now_ms().saturating_sub(started_ms);
    let timing = match headers.get("server-timing").ok().flatten() {
        Some(t) => t,
        None => {
            let t = format!("gateway;dur={dur}");
            set_header(headers, "server-timing", &t);
            t
        }
    };
    if !logs.logs(resp.status_code()) {
        return resp;
    }
    console_log!(
        "{}",
        json!({
            "level": if resp.status_code() >= 500 { "error" } else { "info" },
            "event": "request",
            "request_id": request_id,
            "method": method,
            "path": path,
            "status": resp.status_code(),
            "dur_ms": dur,
            "server_timing": timing,
        })
    );
    resp
}

/// Logs a request or answer body, redacted — only when the operator turned
/// body logging on.
pub fn log_body(logging: &Logging, request_id: &str, which: &str, body: &[u8]) {
    if !logging.bodies {
        return;
    }
    let max = usize::try_from(logging.max_body_chars).unwrap_or(usize::MAX);
    let text = crate::redact::redact(&String::from_utf8_lossy(body), max);
    console_log!(
        "{}",
        json!({"level": "info", "event": which, "request_id": request_id, "body": text})
    );
}
