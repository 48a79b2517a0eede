//! The gateway's side of a committed stream, chunk by chunk: what the client
//! is sent for each piece of the provider's stream, when the stream counts as
//! cut, and the report the ledger gets however it ends. Pure (the clock comes
//! in as arguments); the reading, the timer and the abort are
//! `upstream::relay`'s.

use futures::channel::oneshot;

use crate::messages::StreamEncoder;
use crate::providers::StreamPipeline;
use crate::usage::{truncation_error_frame, StreamEnd, StreamSummary};

/// What a finished stream reports to the ledger writer.
#[derive(Debug)]
pub struct StreamReport {
    pub summary: StreamSummary,
    /// Milliseconds from request start to the first byte sent to the client.
    pub ttft_ms: Option<u64>,
    pub ended_at_ms: u64,
}

/// Forwards an OpenAI-format SSE stream chunk by chunk and reports how it
/// ended — also when the client goes away. Pure: the clock comes in as
/// arguments, the platform (reading, timers, aborting) is the caller's.
pub struct StreamRelay {
    observer: Option<StreamPipeline>,
    /// Re-encodes what the client is sent (Anthropic events on `/v1/messages`).
    encoder: Option<StreamEncoder>,
    /// Bytes taken from the source before the response was committed.
    prefix: Option<Vec<u8>>,
    report: Option<oneshot::Sender<StreamReport>>,
    started_at_ms: u64,
    /// Longest the provider may stay silent (see [`Self::idle_left`]).
    idle_ms: u64,
    last_chunk_at_ms: u64,
    ttft_ms: Option<u64>,
    done: bool,
    encode_error: Option<String>,
}

impl StreamRelay {
    pub fn new(
        observer: StreamPipeline,
        prefix: Vec<u8>,
        encoder: Option<StreamEncoder>,
        started_at_ms: u64,
        idle_ms: u64,
        report: oneshot::Sender<StreamReport>,
    ) -> Self {
        Self {
            observer: Some(observer),
            encoder,
            prefix: Some(prefix),
            report: Some(report),
            started_at_ms,
            idle_ms,
            last_chunk_at_ms: started_at_ms,
            ttft_ms: None,
            done: false,
            encode_error: None,
        }
    }

    /// The committed first output, in the client's format (empty once taken).
    pub fn take_prefix(&mut self, now: u64) -> Vec<u8> {
        let Some(prefix) = self.prefix.take() else {
            return Vec::new();
        };
        self.ttft_ms = Some(now.saturating_sub(self.started_at_ms));
        self.last_chunk_at_ms = now;
        self.encode(prefix)
    }

    /// One chunk from the provider: the client's bytes (maybe none).
    pub fn push(&mut self, bytes: &[u8], now: u64) -> Result<Vec<u8>, crate::sse::SseError> {
        self.last_chunk_at_ms = now;
        let Some(observer) = self.observer.as_mut().filter(|_| !self.done) else {
            return Ok(Vec::new());
        };
        let out = observer.push(bytes)?;
        let out = self.encode(out);
        if !out.is_empty() && self.ttft_ms.is_none() {
            self.ttft_ms = Some(now.saturating_sub(self.started_at_ms));
        }
        Ok(out)
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The longest the provider may stay silent.
    pub fn idle_ms(&self) -> u64 {
        self.idle_ms
    }

    /// The provider's stream ended: what a translated stream still owes (e.g.
    /// Gemini's usage and `[DONE]`), then — for a stream cut without
    /// `[DONE]` — the truncation notice; and invalid SSE at the end, if any.
    pub fn end(&mut self, now: u64) -> (Vec<u8>, Option<crate::sse::SseError>) {
        if self.done {
            return (Vec::new(), None);
        }
        self.done = true;
        let (tail, error) = match self.observer.as_mut().map(StreamPipeline::end) {
            Some(Ok(bytes)) => (bytes, None),
            Some(Err(e)) => (Vec::new(), Some(e)),
            None => (Vec::new(), None),
        };
        let mut tail = self.encode(tail);
        if self.send_report(false, None, now) == Some(StreamEnd::Truncated) {
            // Cut without `[DONE]`: tell the client instead of ending as if
            // the answer were complete.
            tail.extend_from_slice(&self.truncation_notice());
        }
        (tail, error)
    }

    /// Ends the stream after an upstream failure (broken, invalid, idle):
    /// reports it truncated; the client's error frame.
    pub fn fail(&mut self, now: u64) -> Vec<u8> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        self.send_report(false, Some(StreamEnd::Truncated), now);
        self.truncation_notice()
    }

    /// The client went away: reported as such, nothing more is sent.
    pub fn client_gone(&mut self, now: u64) {
        self.done = true;
        self.send_report(true, None, now);
    }

    /// With a read of the provider's stream pending since `waiting_since`:
    /// how long the idle limit has left, `None` once it is over. The limit
    /// counts the provider's silence only — from the last chunk, or from when
    /// the gateway asked for the next one if that was later (a client that
    /// stops reading holds the next read back, and is not the provider's
    /// silence).
    pub fn idle_left(&self, now: u64, waiting_since: u64) -> Option<u64> {
        let since = self.last_chunk_at_ms.max(waiting_since);
        crate::sse::idle_wait_left(since, now, self.idle_ms)
    }

    fn send_report(
        &mut self,
        client_aborted: bool,
        forced_end: Option<StreamEnd>,
        now: u64,
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
                ended_at_ms: now,
            });
        }
        Some(end)
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
                self.encode_error = Some(e.to_string());
                encoder.truncated()
            }
        }
    }

    /// Why re-encoding failed last (once), for the log.
    pub fn take_encode_error(&mut self) -> Option<String> {
        self.encode_error.take()
    }
}

impl Drop for StreamRelay {
    fn drop(&mut self) {
        // Dropped before the end: the client went away (or the runtime
        // dropped the stream). Still report, so the ledger gets its row.
        if self.report.is_some() {
            let ended = self.last_chunk_at_ms;
            self.send_report(true, None, ended);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{truncation_error_frame, ChatStreamObserver};

    const ROLE: &[u8] = b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
    const HELLO: &[u8] = b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n";
    const USAGE: &[u8] = b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n";
    const DONE: &[u8] = b"data: [DONE]\n\n";

    /// A relay whose first output (the role frame) was committed at t=1000,
    /// for a request started at t=900, with a 500 ms idle limit.
    fn relay() -> (StreamRelay, oneshot::Receiver<StreamReport>) {
        let mut pipeline = StreamPipeline::passthrough(ChatStreamObserver::new(false, None));
        let first = pipeline.push(ROLE).expect("role frame");
        let (tx, rx) = oneshot::channel();
        (StreamRelay::new(pipeline, first, None, 900, 500, tx), rx)
    }

    fn report(mut rx: oneshot::Receiver<StreamReport>) -> StreamReport {
        rx.try_recv().expect("channel open").expect("report sent")
    }

    #[test]
    fn forwards_the_prefix_then_each_chunk_and_reports_a_completed_stream() {
        let (mut r, rx) = relay();
        assert_eq!(r.take_prefix(1000), ROLE);
        assert!(r.take_prefix(1001).is_empty(), "the prefix is sent once");
        assert_eq!(r.push(HELLO, 1010).expect("valid"), HELLO);
        assert_eq!(r.push(USAGE, 1020).expect("valid"), USAGE);
        assert_eq!(r.push(DONE, 1030).expect("valid"), DONE);
        assert!(!r.is_done());
        let (tail, error) = r.end(1040);
        assert!(tail.is_empty() && error.is_none());
        assert!(r.is_done());
        let rep = report(rx);
        assert_eq!(rep.summary.end, StreamEnd::Completed);
        assert_eq!(rep.ttft_ms, Some(100));
        assert_eq!(rep.ended_at_ms, 1040);
        assert_eq!(rep.summary.usage.map(|u| u.completion_tokens), Some(1));
    }

    #[test]
    fn a_stream_cut_before_done_ends_with_the_truncation_notice() {
        let (mut r, rx) = relay();
        r.take_prefix(1000);
        r.push(HELLO, 1010).expect("valid");
        let (tail, _) = r.end(1020);
        assert_eq!(tail, truncation_error_frame().into_bytes());
        assert_eq!(report(rx).summary.end, StreamEnd::Truncated);
    }

    #[test]
    fn a_failure_sends_the_notice_once_and_nothing_after_it() {
        let (mut r, rx) = relay();
        r.take_prefix(1000);
        assert_eq!(r.fail(1010), truncation_error_frame().into_bytes());
        assert!(r.is_done());
        assert!(r.fail(1011).is_empty());
        assert!(r.push(HELLO, 1012).expect("ignored").is_empty());
        assert_eq!(r.end(1013).0, Vec::<u8>::new());
        assert_eq!(report(rx).summary.end, StreamEnd::Truncated);
    }

    #[test]
    fn a_line_over_the_limit_is_an_error_for_the_caller_to_end_the_stream_on() {
        let (mut r, _rx) = relay();
        r.take_prefix(1000);
        let long = vec![b'x'; crate::sse::DEFAULT_MAX_LINE_BYTES + 1];
        assert!(r.push(&long, 1010).is_err());
    }

    #[test]
    fn the_client_going_away_is_reported_as_such() {
        let (mut r, rx) = relay();
        r.take_prefix(1000);
        r.push(HELLO, 1010).expect("valid");
        r.client_gone(1020);
        assert!(r.is_done());
        let rep = report(rx);
        assert_eq!(rep.summary.end, StreamEnd::ClientAborted);
        assert_eq!(rep.ended_at_ms, 1020);
    }

    #[test]
    fn a_relay_dropped_before_its_end_still_reports() {
        let (mut r, rx) = relay();
        r.take_prefix(1000);
        drop(r);
        assert_eq!(report(rx).summary.end, StreamEnd::ClientAborted);
    }

    #[test]
    fn the_idle_limit_counts_from_the_last_chunk() {
        let (mut r, _rx) = relay();
        r.take_prefix(1000);
        assert_eq!(r.idle_left(1100, 1000), Some(400));
        r.push(HELLO, 1200).expect("valid");
        assert_eq!(r.idle_left(1600, 1200), Some(100));
        assert_eq!(r.idle_left(1700, 1200), None);
    }

    #[test]
    fn a_client_that_stops_reading_does_not_use_up_the_idle_limit() {
        let (mut r, _rx) = relay();
        r.take_prefix(1000);
        r.push(HELLO, 1010).expect("valid");
        // The client read nothing for 5 s; the next read went out at 6000.
        assert_eq!(r.idle_left(6100, 6000), Some(400));
        assert_eq!(r.idle_left(6500, 6000), None);
    }

    #[test]
    fn an_anthropic_client_gets_events_and_an_error_event_on_a_cut() {
        let mut pipeline = StreamPipeline::passthrough(ChatStreamObserver::new(false, None));
        let first = pipeline.push(ROLE).expect("role frame");
        let (tx, rx) = oneshot::channel();
        let encoder = StreamEncoder::new("msg_1".to_owned());
        let mut r = StreamRelay::new(pipeline, first, Some(encoder), 900, 500, tx);
        let prefix = String::from_utf8(r.take_prefix(1000)).expect("utf-8");
        assert!(prefix.contains("event: message_start"), "{prefix}");
        let hello = String::from_utf8(r.push(HELLO, 1010).expect("valid")).expect("utf-8");
        assert!(hello.contains("\"text\":\"Hello\""), "{hello}");
        let notice = String::from_utf8(r.fail(1020)).expect("utf-8");
        assert!(notice.contains("event: error"), "{notice}");
        assert_eq!(report(rx).summary.end, StreamEnd::Truncated);
    }
}
