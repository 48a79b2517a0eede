//! Incremental Server-Sent Events decoder (bytes → frames) and a tiny encoder.
//!
//! The decoder follows the WHATWG HTML "event stream" parsing rules
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>)
//! and gives identical results whatever the chunk boundaries of the input:
//! one big slice, 1-byte slices, splits inside `\r\n`, splits inside
//! multi-byte UTF-8 sequences.
//!
//! Choices made where the spec leaves room (or where forwarding needs more
//! than the spec's event model):
//!
//! * **Every blank line produces a frame.** A blank line ends the block that
//!   precedes it; that block becomes one [`SseFrame`] whose `raw` holds all of
//!   its bytes, blank line included. A block made only of comments (`: ping`)
//!   or unknown fields gives a frame with `data: None` (the spec would not
//!   dispatch it, but a proxy wants to forward keep-alives). A blank line with
//!   nothing before it (e.g. the third `\n` of `\n\n\n`) gives a frame whose
//!   fields are all `None` and whose `raw` is just that blank line. So the
//!   concatenation of every frame's `raw`, followed by [`SseDecoder::finish`],
//!   is exactly the input, and `finish` is `None` for a stream that ended on a
//!   block boundary. Consumers that only care about events should skip frames
//!   whose `data` is `None`.
//! * **A `\r` that is the last byte seen so far is held back** until the next
//!   byte shows whether it is a lone `\r` or the first half of `\r\n`, so the
//!   `\n` always lands in the same frame's `raw`. Consequence: a stream whose
//!   very last byte is a lone `\r` ending a block (e.g. `data: x\r\r`, or a
//!   `\r\n` stream cut between `\r` and `\n`) does not dispatch that last
//!   block; its bytes come back from [`SseDecoder::finish`] like any
//!   incomplete block.
//! * `event`, `id` and `retry` are per frame (what this block said), not the
//!   spec's stream-wide "last event ID". An `id` value containing NUL is
//!   ignored, as the spec says. `retry` must be only ASCII digits and fit in a
//!   `u64`, otherwise it is ignored. `event:` with an empty value gives
//!   `Some("")`.
//! * Field values are decoded as strict UTF-8 ([`SseError::InvalidUtf8`])
//!   rather than with replacement characters, but only for the fields used
//!   (`data`, `event`, `id`, `retry`); comments and unknown fields are never
//!   decoded.
//! * After an error the decoder is poisoned: every later `push` returns the
//!   same error.

use std::fmt;

/// Default for [`SseDecoder::new`]'s `max_line_bytes`: 4 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// The OpenAI stream terminator frame.
pub const DONE_FRAME: &str = "data: [DONE]\n\n";

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One blank-line-terminated block of an event stream, as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseFrame {
    /// The exact bytes of the block, including its terminating blank line, so a proxy can forward it untouched.
    pub raw: Vec<u8>,
    /// `event:` field, if any (last one wins).
    pub event: Option<String>,
    /// `data:` lines joined with '\n' per the spec; `None` when the block had no data line (comments-only / keep-alive block).
    pub data: Option<String>,
    /// `id:` field, if any (last one wins; values containing NUL are ignored).
    pub id: Option<String>,
    /// `retry:` field, if a valid integer (ASCII digits only, fits in `u64`).
    pub retry: Option<u64>,
}

impl SseFrame {
    /// True when `data` is exactly `[DONE]` (OpenAI's terminator).
    pub fn is_done(&self) -> bool {
        self.data.as_deref() == Some("[DONE]")
    }
}

/// Why an event stream could not be decoded. Errors are terminal for a decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// A single line grew past the configured limit without a line ending.
    LineTooLong {
        /// The configured maximum line length in bytes (line ending excluded).
        limit: usize,
    },
    /// A field value was not valid UTF-8.
    InvalidUtf8,
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LineTooLong { limit } => {
                write!(f, "event stream line longer than {limit} bytes")
            }
            Self::InvalidUtf8 => f.write_str("event stream field is not valid UTF-8"),
        }
    }
}

impl std::error::Error for SseError {}

/// Fields accumulated for the block being read.
#[derive(Debug, Default)]
struct Pending {
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
}

impl Pending {
    /// Applies one complete, non-blank line (line ending and BOM removed).
    fn apply(&mut self, line: &[u8]) -> Result<(), SseError> {
        if line.first() == Some(&b':') {
            return Ok(()); // comment
        }
        let mut parts = line.splitn(2, |&b| b == b':');
        let name = parts.next().unwrap_or_default();
        let value = match parts.next() {
            Some(v) => v.strip_prefix(b" ").unwrap_or(v),
            None => &[],
        };
        match name {
            b"data" => {
                let value = utf8(value)?;
                match &mut self.data {
                    Some(buf) => {
                        buf.push('\n');
                        buf.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                }
            }
            b"event" => self.event = Some(utf8(value)?.to_owned()),
            b"id" if !value.contains(&0) => self.id = Some(utf8(value)?.to_owned()),
            b"retry" => {
                if let Some(ms) = parse_digits(value) {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn into_frame(self, raw: Vec<u8>) -> SseFrame {
        SseFrame {
            raw,
            event: self.event,
            data: self.data,
            id: self.id,
            retry: self.retry,
        }
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, SseError> {
    std::str::from_utf8(bytes).map_err(|_| SseError::InvalidUtf8)
}

/// Non-empty, ASCII digits only, no overflow.
fn parse_digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Incremental event-stream decoder. Feed bytes with [`push`](Self::push), then call
/// [`finish`](Self::finish) at end of input.
#[derive(Debug)]
pub struct SseDecoder {
    max_line_bytes: usize,
    /// Bytes of the current (undispatched) block; always starts at a block boundary between calls.
    buf: Vec<u8>,
    /// Start of the current block in `buf` (non-zero only inside `push`).
    block_start: usize,
    /// Start of the current, not yet terminated, line in `buf`.
    line_start: usize,
    /// Where to resume looking for a line ending (everything before it was scanned).
    scan: usize,
    /// No line has been completed yet (a leading BOM is still to be skipped).
    at_stream_start: bool,
    pending: Pending,
    error: Option<SseError>,
}

impl Default for SseDecoder {
    /// A decoder with [`DEFAULT_MAX_LINE_BYTES`].
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE_BYTES)
    }
}

impl SseDecoder {
    /// `max_line_bytes`: a line longer than this (line ending excluded) yields
    /// [`SseError::LineTooLong`] (guards memory against a hostile upstream).
    /// [`DEFAULT_MAX_LINE_BYTES`] = 4 MiB.
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            max_line_bytes,
            buf: Vec::new(),
            block_start: 0,
            line_start: 0,
            scan: 0,
            at_stream_start: true,
            pending: Pending::default(),
            error: None,
        }
    }

    /// Feeds bytes; returns every frame completed by them, in order.
    ///
    /// On error, frames completed earlier in the same call are dropped and the
    /// decoder is poisoned (later calls return the same error).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseFrame>, SseError> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        self.buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        let result = self.read_lines(&mut frames);
        // Drop the dispatched prefix once per call (never once per frame: that would be quadratic).
        if self.block_start > 0 {
            let cut = self.block_start;
            self.buf.drain(..cut);
            self.block_start = 0;
            self.line_start = self.line_start.saturating_sub(cut);
            self.scan = self.scan.saturating_sub(cut);
        }
        match result {
            Ok(()) => Ok(frames),
            Err(err) => {
                self.error = Some(err.clone());
                Err(err)
            }
        }
    }

    /// At end of input: returns the bytes of an incomplete trailing block (if
    /// any) so the caller can tell a stream that ended mid-event. Per the spec
    /// an incomplete block is NOT dispatched as a frame. `None` when the input
    /// ended exactly at a block boundary.
    pub fn finish(self) -> Option<Vec<u8>> {
        let mut rest = self.buf;
        rest.drain(..self.block_start.min(rest.len()));
        (!rest.is_empty()).then_some(rest)
    }

    /// Processes every complete line from `self.scan` on.
    fn read_lines(&mut self, frames: &mut Vec<SseFrame>) -> Result<(), SseError> {
        loop {
            let unscanned = self.buf.get(self.scan..).unwrap_or_default();
            let Some(offset) = unscanned.iter().position(|&b| b == b'\r' || b == b'\n') else {
                self.scan = self.buf.len();
                return self.check_len(self.buf.len());
            };
            let eol = self.scan + offset;
            let eol_len = match (self.buf.get(eol), self.buf.get(eol + 1)) {
                (Some(b'\r'), Some(b'\n')) => 2,
                (Some(b'\r'), None) => {
                    // Lone `\r` or first half of `\r\n`? Wait for the next byte.
                    self.scan = eol;
                    return self.check_len(eol);
                }
                _ => 1,
            };
            self.check_len(eol)?;
            let next = eol + eol_len;

            let mut line = self.buf.get(self.line_start..eol).unwrap_or_default();
            if self.at_stream_start {
                self.at_stream_start = false;
                line = line.strip_prefix(BOM).unwrap_or(line);
            }
            if line.is_empty() {
                let raw = self
                    .buf
                    .get(self.block_start..next)
                    .unwrap_or_default()
                    .to_vec();
                frames.push(std::mem::take(&mut self.pending).into_frame(raw));
                self.block_start = next;
            } else {
                self.pending.apply(line)?;
            }
            self.line_start = next;
            self.scan = next;
        }
    }

    /// Errors if the current line, ending (exclusively) at `end`, is over the limit.
    fn check_len(&self, end: usize) -> Result<(), SseError> {
        if end.saturating_sub(self.line_start) > self.max_line_bytes {
            Err(SseError::LineTooLong {
                limit: self.max_line_bytes,
            })
        } else {
            Ok(())
        }
    }
}

/// Splits on `\r\n`, `\r` and `\n`, like `str::split` (keeps a trailing empty piece).
fn sse_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            Some(i) => {
                let (line, tail) = current.split_at(i);
                let tail = tail
                    .strip_prefix("\r\n")
                    .or_else(|| tail.get(1..))
                    .unwrap_or_default();
                rest = Some(tail);
                Some(line)
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// Encodes one `data:` frame (`data: {payload}\n\n`); if the payload contains
/// line breaks (`\n`, `\r\n` or `\r`), emits one `data:` line per line as the
/// spec allows, so decoding gives the payload back with `\n` line breaks.
pub fn encode_data(payload: &str) -> String {
    let mut out = String::with_capacity(payload.len() + 8);
    for line in sse_lines(payload) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// Encodes a frame with an `event:` name (Anthropic style):
/// `event: {name}\ndata: {payload}\n\n`. Line breaks in `name` are dropped
/// (they would otherwise inject fields); `payload` is handled as in [`encode_data`].
pub fn encode_event(name: &str, payload: &str) -> String {
    let mut out = String::with_capacity(name.len() + payload.len() + 16);
    out.push_str("event: ");
    out.extend(name.chars().filter(|&c| c != '\r' && c != '\n'));
    out.push('\n');
    out.push_str(&encode_data(payload));
    out
}

/// The idle limit of a stream being forwarded, checked when its one timer
/// fires: `None` when no chunk came for `idle_ms` (end the stream), else how
/// much longer to wait. Chunks only move `last_chunk_at_ms`; re-arming a timer
/// per chunk (a `setTimeout` and a `clearTimeout` each) would cost more than
/// the chunk's own forwarding on a long stream.
pub fn idle_wait_left(last_chunk_at_ms: u64, now_ms: u64, idle_ms: u64) -> Option<u64> {
    let idle_for = now_ms.saturating_sub(last_chunk_at_ms);
    (idle_for < idle_ms).then(|| idle_ms - idle_for)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Decoded = (Vec<SseFrame>, Option<Vec<u8>>);

    fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Result<Decoded, SseError> {
        let mut dec = SseDecoder::new(DEFAULT_MAX_LINE_BYTES);
        let mut frames = Vec::new();
        for chunk in chunks {
            frames.extend(dec.push(chunk)?);
        }
        Ok((frames, dec.finish()))
    }

    fn decode(input: &[u8]) -> Decoded {
        decode_chunks([input]).unwrap()
    }

    /// Deterministic pseudo-random chunk sizes in 1..=13.
    fn lcg_chunks(input: &[u8], seed: u64) -> Vec<&[u8]> {
        let mut state = seed;
        let mut rest = input;
        let mut out = Vec::new();
        while !rest.is_empty() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let size = usize::try_from((state >> 33) % 13).unwrap() + 1;
            let (head, tail) = rest.split_at(size.min(rest.len()));
            out.push(head);
            rest = tail;
        }
        out
    }

    fn reassemble((frames, rest): &Decoded) -> Vec<u8> {
        let mut out: Vec<u8> = frames.iter().flat_map(|f| f.raw.iter().copied()).collect();
        out.extend(rest.iter().flatten());
        out
    }

    /// Decodes `input` whole, at every split point, byte by byte and in
    /// pseudo-random slices; asserts identical results and lossless `raw`.
    fn decode_all_ways(input: &[u8]) -> Decoded {
        let reference = decode(input);
        assert_eq!(
            reassemble(&reference),
            input,
            "raw + finish must reproduce input"
        );
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            assert_eq!(
                decode_chunks([a, b]).unwrap(),
                reference,
                "split at {split}"
            );
        }
        assert_eq!(
            decode_chunks(input.chunks(1)).unwrap(),
            reference,
            "1-byte slices"
        );
        for seed in 1..=16 {
            let chunks = lcg_chunks(input, seed);
            assert_eq!(decode_chunks(chunks).unwrap(), reference, "lcg seed {seed}");
        }
        reference
    }

    fn datas(frames: &[SseFrame]) -> Vec<Option<&str>> {
        frames.iter().map(|f| f.data.as_deref()).collect()
    }

    fn events(frames: &[SseFrame]) -> Vec<Option<&str>> {
        frames.iter().map(|f| f.event.as_deref()).collect()
    }

    const OPENAI: &str = concat!(
        "data: {\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\",\"created\":1717000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\",\"created\":1717000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
        ": keep-alive\n\n",
        "data: {\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\",\"created\":1717000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo wörld 👋\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\",\"created\":1717000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\",\"created\":1717000000,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n\n",
        "data: [DONE]\n\n",
    );

    const ANTHROPIC: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-3-5-sonnet-20241022\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Héllo\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" 世界 👋\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    #[test]
    fn openai_stream_any_chunking() {
        let (frames, rest) = decode_all_ways(OPENAI.as_bytes());
        assert_eq!(rest, None);
        assert_eq!(frames.len(), 7);
        assert!(frames.iter().all(|f| f.event.is_none() && f.id.is_none()));
        let data = datas(&frames);
        assert!(data[0].unwrap().starts_with("{\"id\":\"chatcmpl-9x\""));
        assert!(data[1].unwrap().contains("\"content\":\"Hel\""));
        assert_eq!(data[2], None, "keep-alive comment block has no data");
        assert_eq!(frames[2].raw, b": keep-alive\n\n");
        assert!(data[3].unwrap().contains("lo wörld 👋"));
        assert!(frames[6].is_done());
        assert_eq!(frames[6].raw, DONE_FRAME.as_bytes());
        assert_eq!(frames.iter().filter(|f| f.is_done()).count(), 1);
        // Each data payload is the line after "data: ", untouched.
        for (frame, block) in frames.iter().zip(OPENAI.split_inclusive("\n\n")) {
            assert_eq!(frame.raw, block.as_bytes());
            if let Some(d) = &frame.data {
                assert_eq!(format!("data: {d}\n\n"), block);
            }
        }
    }

    #[test]
    fn anthropic_stream_any_chunking() {
        let (frames, rest) = decode_all_ways(ANTHROPIC.as_bytes());
        assert_eq!(rest, None);
        assert_eq!(
            events(&frames),
            [
                Some("message_start"),
                Some("content_block_start"),
                Some("ping"),
                Some("content_block_delta"),
                Some("content_block_delta"),
                Some("content_block_stop"),
                Some("message_delta"),
                Some("message_stop"),
            ]
        );
        assert_eq!(frames[2].data.as_deref(), Some("{\"type\": \"ping\"}"));
        assert!(frames[3]
            .data
            .as_deref()
            .unwrap()
            .contains("\"text\":\"Héllo\""));
        assert!(frames[4].data.as_deref().unwrap().contains("\" 世界 👋\""));
        assert_eq!(
            frames[7].data.as_deref(),
            Some("{\"type\":\"message_stop\"}")
        );
        assert!(frames.iter().all(|f| !f.is_done()));
        assert_eq!(
            frames[0].raw,
            ANTHROPIC.split_inclusive("\n\n").next().unwrap().as_bytes()
        );
    }

    #[test]
    fn crlf_stream_any_chunking() {
        let input = "event: a\r\ndata: one\r\ndata: two\r\n\r\n: c\r\n\r\ndata: three\r\n\r\n";
        let (frames, rest) = decode_all_ways(input.as_bytes());
        assert_eq!(rest, None);
        assert_eq!(datas(&frames), [Some("one\ntwo"), None, Some("three")]);
        assert_eq!(frames[0].event.as_deref(), Some("a"));
        assert_eq!(frames[0].raw, b"event: a\r\ndata: one\r\ndata: two\r\n\r\n");
        assert_eq!(frames[1].raw, b": c\r\n\r\n");
    }

    #[test]
    fn lone_cr_stream_any_chunking() {
        let input = "data: a\rdata: b\r\rid: 7\rdata: c\r\r\n";
        let (frames, rest) = decode_all_ways(input.as_bytes());
        assert_eq!(rest, None);
        assert_eq!(datas(&frames), [Some("a\nb"), Some("c")]);
        assert_eq!(frames[0].raw, b"data: a\rdata: b\r\r");
        assert_eq!(frames[1].raw, b"id: 7\rdata: c\r\r\n");
        assert_eq!(frames[1].id.as_deref(), Some("7"));
    }

    #[test]
    fn mixed_line_endings_any_chunking() {
        let input = "data: a\n\rdata: b\r\n\ndata: c\r\r\n\n";
        let (frames, rest) = decode_all_ways(input.as_bytes());
        assert_eq!(rest, None);
        // "\n\r": the "\r" is a blank line of its own; "\r\n\n": CRLF then blank.
        assert_eq!(datas(&frames), [Some("a"), Some("b"), Some("c"), None]);
        assert_eq!(frames[0].raw, b"data: a\n\r");
        assert_eq!(frames[1].raw, b"data: b\r\n\n");
        assert_eq!(frames[2].raw, b"data: c\r\r\n");
        assert_eq!(frames[3].raw, b"\n");
    }

    #[test]
    fn cr_then_lf_in_next_chunk_is_one_line_ending() {
        let mut dec = SseDecoder::new(64);
        assert_eq!(dec.push(b"data: x\r").unwrap(), []);
        assert_eq!(dec.push(b"\n\r").unwrap(), []);
        let frames = dec.push(b"\n").unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].data.as_deref(), Some("x"));
        assert_eq!(frames[0].raw, b"data: x\r\n\r\n");
        // The "\n" completing the CRLF is not a stray blank line.
        assert_eq!(dec.push(b"data: y\r").unwrap(), []);
        // The blank line's lone `\r` is only decided by the next byte.
        assert_eq!(dec.push(b"\r").unwrap(), []);
        let frames = dec.push(b"data: z").unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].data.as_deref(), Some("y"));
        assert_eq!(frames[0].raw, b"data: y\r\r");
        assert_eq!(dec.finish().as_deref(), Some(&b"data: z"[..]));
    }

    #[test]
    fn trailing_lone_cr_is_held_until_finish() {
        // Documented corner: the last byte is a `\r` that might be half of `\r\n`.
        let (frames, rest) = decode_all_ways(b"data: a\r\rdata: b\r\r");
        assert_eq!(datas(&frames), [Some("a")]);
        assert_eq!(rest.as_deref(), Some(&b"data: b\r\r"[..]));
    }

    #[test]
    fn multibyte_utf8_split_at_every_byte() {
        let input = "event: délta 世界\ndata: héllo 👋 世界\ndata: ünï\nid: ïd-👋\n\n";
        let (frames, rest) = decode_all_ways(input.as_bytes());
        assert_eq!(rest, None);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].event.as_deref(), Some("délta 世界"));
        assert_eq!(frames[0].data.as_deref(), Some("héllo 👋 世界\nünï"));
        assert_eq!(frames[0].id.as_deref(), Some("ïd-👋"));
    }

    #[test]
    fn comments_and_keep_alive() {
        let input = ": ping\n\n:\n\ndata: a\n: in-block comment\ndata: b\n\n";
        let (frames, rest) = decode_all_ways(input.as_bytes());
        assert_eq!(rest, None);
        assert_eq!(datas(&frames), [None, None, Some("a\nb")]);
        assert_eq!(frames[0].raw, b": ping\n\n");
        assert_eq!(frames[0].event, None);
        assert!(!frames[0].is_done());
    }

    #[test]
    fn multi_line_data_and_spacing() {
        let input = "data: a\ndata:\ndata:  b\ndata:c\ndata: \n\n";
        let (frames, _) = decode_all_ways(input.as_bytes());
        // One leading space stripped, only one; `data:` empty lines are kept.
        assert_eq!(datas(&frames), [Some("a\n\n b\nc\n")]);
    }

    #[test]
    fn spaceless_data() {
        let (frames, _) = decode_all_ways(b"data:x\n\ndata:[DONE]\n\n");
        assert_eq!(datas(&frames), [Some("x"), Some("[DONE]")]);
        assert!(frames[1].is_done());
    }

    #[test]
    fn is_done_is_exact() {
        let (frames, _) =
            decode_all_ways(b"data: [DONE] \n\ndata: [done]\n\ndata: [DONE]\ndata: x\n\n");
        assert!(frames.iter().all(|f| !f.is_done()));
    }

    #[test]
    fn empty_data_vs_no_data() {
        let input = "data:\n\ndata\n\nevent: ping\n\ndata\ndata\n\n";
        let (frames, _) = decode_all_ways(input.as_bytes());
        assert_eq!(datas(&frames), [Some(""), Some(""), None, Some("\n")]);
        assert_eq!(frames[2].event.as_deref(), Some("ping"));
    }

    #[test]
    fn event_id_retry_fields() {
        let input = concat!(
            "event: first\nevent: second\nid: 42\nretry: 3000\ndata: x\n\n",
            "retry: 12a\nretry:\nretry: -1\nid: a\0b\ndata: y\n\n",
            "retry: 99999999999999999999999\nevent\nid\ndata: z\n\n",
            "retry:10\nfoo: bar\nDATA: no\ndata : no\n\n",
        );
        let (frames, _) = decode_all_ways(input.as_bytes());
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0].event.as_deref(), Some("second"));
        assert_eq!(frames[0].id.as_deref(), Some("42"));
        assert_eq!(frames[0].retry, Some(3000));
        assert_eq!(frames[0].data.as_deref(), Some("x"));
        // Invalid retry values ignored; id with NUL ignored; fields are per frame.
        assert_eq!(frames[1].retry, None);
        assert_eq!(frames[1].id, None);
        assert_eq!(frames[1].event, None);
        // Overflowing retry ignored; colon-less fields have empty values.
        assert_eq!(frames[2].retry, None);
        assert_eq!(frames[2].event.as_deref(), Some(""));
        assert_eq!(frames[2].id.as_deref(), Some(""));
        // Unknown / case-mismatched / space-in-name fields are ignored.
        assert_eq!(frames[3].retry, Some(10));
        assert_eq!(frames[3].data, None);
    }

    #[test]
    fn leading_bom_skipped_only_once() {
        let input = "\u{FEFF}data: x\n\n\u{FEFF}data: y\n\n";
        let (frames, _) = decode_all_ways(input.as_bytes());
        assert_eq!(datas(&frames), [Some("x"), None]);
        assert_eq!(frames[0].raw, "\u{FEFF}data: x\n\n".as_bytes());
        // BOM then a blank line: a stray blank frame, BOM kept in raw.
        let (frames, rest) = decode_all_ways("\u{FEFF}\ndata: z\n\n".as_bytes());
        assert_eq!(datas(&frames), [None, Some("z")]);
        assert_eq!(frames[0].raw, "\u{FEFF}\n".as_bytes());
        assert_eq!(rest, None);
    }

    #[test]
    fn stray_blank_lines_become_empty_frames() {
        let input = "\n\r\ndata: a\n\n\n\r\r\n";
        let (frames, rest) = decode_all_ways(input.as_bytes());
        assert_eq!(
            rest, None,
            "extra blank lines at the end are not a truncation"
        );
        let empty = |raw: &[u8]| SseFrame {
            raw: raw.to_vec(),
            event: None,
            data: None,
            id: None,
            retry: None,
        };
        assert_eq!(frames.len(), 6);
        assert_eq!(frames[0], empty(b"\n"));
        assert_eq!(frames[1], empty(b"\r\n"));
        assert_eq!(frames[2].data.as_deref(), Some("a"));
        assert_eq!(frames[2].raw, b"data: a\n\n");
        assert_eq!(frames[3], empty(b"\n"));
        assert_eq!(frames[4], empty(b"\r"));
        assert_eq!(frames[5], empty(b"\r\n"));
    }

    #[test]
    fn truncated_stream_returns_partial_block() {
        let (frames, rest) = decode_all_ways(b"data: a\n\nevent: x\ndata: {\"par");
        assert_eq!(datas(&frames), [Some("a")]);
        assert_eq!(rest.as_deref(), Some(&b"event: x\ndata: {\"par"[..]));

        // Complete lines but no terminating blank line: still incomplete, not dispatched.
        let (frames, rest) = decode_all_ways(b"data: a\n\ndata: b\n");
        assert_eq!(frames.len(), 1);
        assert_eq!(rest.as_deref(), Some(&b"data: b\n"[..]));

        let (frames, rest) = decode_all_ways(b": ping\n");
        assert!(frames.is_empty());
        assert_eq!(rest.as_deref(), Some(&b": ping\n"[..]));
    }

    #[test]
    fn stream_ending_at_boundary_has_no_rest() {
        assert_eq!(decode(b"data: a\n\n").1, None);
        assert_eq!(decode(b"data: a\r\n\r\n").1, None);
        assert_eq!(decode(b"").1, None);
        assert_eq!(SseDecoder::default().finish(), None);
    }

    #[test]
    fn line_too_long_in_small_pieces() {
        let limit = 16;
        let mut dec = SseDecoder::new(limit);
        let line = b"data: 0123456789X"; // 17 bytes
        let (ok, last) = line.split_at(limit);
        for piece in ok.chunks(3) {
            assert_eq!(dec.push(piece).unwrap(), []);
        }
        assert_eq!(dec.push(last), Err(SseError::LineTooLong { limit }));
        // Poisoned afterwards.
        assert_eq!(dec.push(b"\n\n"), Err(SseError::LineTooLong { limit }));

        // Over the limit inside a single push, terminated or not.
        let mut dec = SseDecoder::new(limit);
        assert_eq!(
            dec.push(b"data: 0123456789X\n\n"),
            Err(SseError::LineTooLong { limit })
        );
        let mut dec = SseDecoder::new(limit);
        assert_eq!(
            dec.push(b"data: a\n\ndata: 0123456789X"),
            Err(SseError::LineTooLong { limit })
        );
    }

    #[test]
    fn line_of_exactly_limit_is_fine() {
        let limit = 16;
        let input = b"data: 0123456789\r\n\r\ndata: 0123456789\r\r\n: 34567890123456\n\n";
        for chunks in [
            input.chunks(1).collect::<Vec<_>>(),
            vec![&input[..]],
            lcg_chunks(input, 7),
        ] {
            let mut dec = SseDecoder::new(limit);
            let mut frames = Vec::new();
            for chunk in chunks {
                frames.extend(dec.push(chunk).unwrap());
            }
            assert_eq!(
                datas(&frames),
                [Some("0123456789"), Some("0123456789"), None]
            );
            assert_eq!(dec.finish(), None);
        }
        // The limit counts only the line, not the blocks or the other lines.
        let mut dec = SseDecoder::new(limit);
        let many = "data: 0123456789\n".repeat(100);
        assert_eq!(dec.push(many.as_bytes()).unwrap(), []);
        let frames = dec.push(b"\n").unwrap();
        assert_eq!(frames[0].data.as_deref().unwrap().len(), 100 * 11 - 1);
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_panic() {
        assert_eq!(
            decode_chunks([&b"data: \xff\xfe\n\n"[..]]),
            Err(SseError::InvalidUtf8)
        );
        assert_eq!(
            decode_chunks([&b"event: \xc3\n\n"[..]]),
            Err(SseError::InvalidUtf8)
        );
        // Truncated multi-byte sequence at the end of a line, fed bytewise.
        let input = "data: é\n\n".as_bytes();
        let mut bad = input.to_vec();
        bad.remove(7); // drop the continuation byte of é
        assert_eq!(decode_chunks(bad.chunks(1)), Err(SseError::InvalidUtf8));
        // Comments and unknown fields are never decoded.
        let (frames, _) = decode(b": \xff\nfoo: \xff\ndata: ok\n\n");
        assert_eq!(datas(&frames), [Some("ok")]);
        let mut dec = SseDecoder::default();
        assert_eq!(dec.push(b"data: \xff\n"), Err(SseError::InvalidUtf8));
        assert_eq!(dec.push(b"\n"), Err(SseError::InvalidUtf8));
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            SseError::LineTooLong { limit: 5 }.to_string(),
            "event stream line longer than 5 bytes"
        );
        assert!(!SseError::InvalidUtf8.to_string().is_empty());
    }

    #[test]
    fn encoder_round_trip() {
        assert_eq!(encode_data("{\"a\":1}"), "data: {\"a\":1}\n\n");
        assert_eq!(encode_event("ping", "{}"), "event: ping\ndata: {}\n\n");
        assert_eq!(encode_data("a\nb"), "data: a\ndata: b\n\n");
        for payload in [
            "{\"a\":1}",
            "",
            " lead",
            "héllo 👋 世界",
            "a\nb",
            "a\n\nb\n",
            "\n",
            "[DONE]",
        ] {
            let (frames, rest) = decode_all_ways(encode_data(payload).as_bytes());
            assert_eq!(rest, None);
            assert_eq!(datas(&frames), [Some(payload)], "payload {payload:?}");

            let (frames, _) =
                decode_all_ways(encode_event("content_block_delta", payload).as_bytes());
            assert_eq!(events(&frames), [Some("content_block_delta")]);
            assert_eq!(datas(&frames), [Some(payload)]);
        }
        // Other line breaks are normalised to '\n' and never leak out of the data field.
        let (frames, _) = decode_all_ways(encode_data("a\r\nb\rc\r\r\nd").as_bytes());
        assert_eq!(datas(&frames), [Some("a\nb\nc\n\nd")]);
        let (frames, _) = decode_all_ways(encode_event("x\n\ndata: evil\r", "p").as_bytes());
        assert_eq!(events(&frames), [Some("xdata: evil")]);
        assert_eq!(datas(&frames), [Some("p")]);
    }

    #[test]
    fn done_frame_decodes_as_done() {
        let (frames, rest) = decode_all_ways(DONE_FRAME.as_bytes());
        assert_eq!(rest, None);
        assert_eq!(frames.len(), 1);
        assert!(frames[0].is_done());
        assert_eq!(encode_data("[DONE]"), DONE_FRAME);
    }

    #[test]
    fn many_frames_in_one_push() {
        let input = encode_data("x").repeat(10_000);
        let (frames, rest) = decode(input.as_bytes());
        assert_eq!(frames.len(), 10_000);
        assert!(frames
            .iter()
            .all(|f| f.data.as_deref() == Some("x") && f.raw == b"data: x\n\n"));
        assert_eq!(rest, None);
    }

    #[test]
    fn long_line_byte_by_byte_is_linear() {
        // 512 KiB fed one byte at a time; a rescan-from-start decoder would take ~10^11 steps.
        let payload = "y".repeat(512 * 1024);
        let input = encode_data(&payload);
        let mut dec = SseDecoder::default();
        let mut frames = Vec::new();
        for byte in input.as_bytes().chunks(1) {
            frames.extend(dec.push(byte).unwrap());
        }
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].data.as_deref(), Some(payload.as_str()));
        assert_eq!(dec.finish(), None);
    }

    #[test]
    fn an_idle_timer_ends_a_stream_only_after_a_whole_quiet_window() {
        // Fired with no chunk since it was armed: the window is over.
        assert_eq!(idle_wait_left(1_000, 31_000, 30_000), None);
        assert_eq!(idle_wait_left(1_000, 31_005, 30_000), None);
        // Chunks kept coming: wait out the rest of the window from the last one.
        assert_eq!(idle_wait_left(20_000, 31_000, 30_000), Some(19_000));
        // A clock that has not moved (or moved back) never ends it early.
        assert_eq!(idle_wait_left(31_000, 31_000, 30_000), Some(30_000));
        assert_eq!(idle_wait_left(32_000, 31_000, 30_000), Some(30_000));
        assert_eq!(idle_wait_left(1_001, 31_000, 30_000), Some(1));
    }
}
