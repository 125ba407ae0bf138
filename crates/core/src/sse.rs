//! Server-sent events: splitting an upstream byte stream into whole events without copying
//! them, and reading the few events the gateway must look inside.
//!
//! Events are forwarded as the exact bytes the upstream sent; this module only finds where
//! each one ends (a blank line, with `\n`, `\r\n` or `\r` line endings per the SSE spec).

use bytes::{Bytes, BytesMut};

/// One complete event: its lines and the blank line that ends it, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    raw: Bytes,
    /// Seen by the gateway (usage) but not sent to the client: an event it asked for itself.
    hidden: bool,
}

impl SseEvent {
    /// Wraps bytes that form one whole event (used by connectors that write their own).
    pub fn from_raw(raw: Bytes) -> Self {
        SseEvent { raw, hidden: false }
    }

    /// Marks the event as the gateway's own: read, never relayed.
    pub fn hidden(mut self) -> Self {
        self.hidden = true;
        self
    }

    pub fn is_hidden(&self) -> bool {
        self.hidden
    }

    /// Builds `data: {payload}\n\n`.
    pub fn data(payload: &[u8]) -> Self {
        let mut out = Vec::with_capacity(payload.len() + 8);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\n\n");
        SseEvent {
            raw: Bytes::from(out),
            hidden: false,
        }
    }

    /// The event's bytes as received.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Consumes the event into its bytes.
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// The event's data: its `data:` lines joined by `\n`, or `None` when it has none
    /// (a comment such as `: keepalive`, or only `event:`/`id:` fields).
    pub fn payload(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        let mut found: Option<std::borrow::Cow<'_, [u8]>> = None;
        for line in lines(&self.raw) {
            let Some(value) = line.strip_prefix(b"data") else {
                continue;
            };
            let value = match value {
                [] => value,
                [b':', b' ', rest @ ..] => rest,
                [b':', rest @ ..] => rest,
                // `dataX:` is another field name, not `data`.
                _ => continue,
            };
            found = Some(match found {
                None => std::borrow::Cow::Borrowed(value),
                Some(prev) => {
                    let mut joined = prev.into_owned();
                    joined.push(b'\n');
                    joined.extend_from_slice(value);
                    std::borrow::Cow::Owned(joined)
                }
            });
        }
        found
    }

    /// Whether this is the OpenAI end marker `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.payload().is_some_and(|p| p.trim_ascii() == b"[DONE]")
    }
}

/// Iterates the lines of an event, without their terminators.
fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match memchr::memchr2(b'\n', b'\r', rest) {
            None => {
                let line = rest;
                rest = &[];
                Some(line)
            }
            Some(i) => {
                let line = &rest[..i];
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[i + skip..];
                Some(line)
            }
        }
    })
}

/// Finds the end of the first complete event in `buf`: the index just past its blank line.
/// `None` when no event is complete yet (including a trailing `\r` that may be half of `\r\n`).
fn event_end(buf: &[u8]) -> Option<usize> {
    // Each turn starts at the beginning of a line; an empty line there ends the event.
    let mut at = 0;
    loop {
        match buf.get(at) {
            None => return None,
            Some(b'\n') => return Some(at + 1),
            Some(b'\r') => {
                return match buf.get(at + 1) {
                    None => None,
                    Some(b'\n') => Some(at + 2),
                    Some(_) => Some(at + 1),
                }
            }
            Some(_) => {}
        }
        let i = at + memchr::memchr2(b'\n', b'\r', &buf[at..])?;
        at = if buf[i] == b'\r' {
            match buf.get(i + 1) {
                None => return None,
                Some(b'\n') => i + 2,
                Some(_) => i + 1,
            }
        } else {
            i + 1
        };
    }
}

/// Cuts a byte stream into whole events. Bytes of an event that arrives in one chunk are
/// sliced out of that chunk; only events split across chunks are copied once.
#[derive(Debug, Default)]
pub struct SseSplitter {
    /// The start of an event whose end has not arrived yet.
    partial: BytesMut,
}

impl SseSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk; complete events are pushed to `out` in order.
    pub fn push(&mut self, mut chunk: Bytes, out: &mut Vec<SseEvent>) {
        if !self.partial.is_empty() {
            self.partial.extend_from_slice(&chunk);
            while let Some(end) = event_end(&self.partial) {
                out.push(SseEvent::from_raw(self.partial.split_to(end).freeze()));
            }
            return;
        }
        while let Some(end) = event_end(&chunk) {
            out.push(SseEvent::from_raw(chunk.split_to(end)));
        }
        if !chunk.is_empty() {
            self.partial.extend_from_slice(&chunk);
        }
    }

    /// Bytes of an unfinished event when the stream ended (an upstream cut inside an event).
    pub fn finish(&mut self) -> Option<Bytes> {
        let rest = std::mem::take(&mut self.partial);
        // A stream ending with only blank-line padding is complete.
        if rest.iter().all(|b| b.is_ascii_whitespace()) {
            None
        } else {
            Some(rest.freeze())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]]) -> (Vec<Bytes>, Option<Bytes>) {
        let mut s = SseSplitter::new();
        let mut out = Vec::new();
        for c in chunks {
            s.push(Bytes::copy_from_slice(c), &mut out);
        }
        (
            out.into_iter().map(SseEvent::into_raw).collect(),
            s.finish(),
        )
    }

    #[test]
    fn splits_events_in_one_chunk() {
        let (ev, rest) = split_all(&[b"data: a\n\ndata: b\n\n: c\n\ndata: [DONE]\n\n"]);
        assert_eq!(
            ev,
            ["data: a\n\n", "data: b\n\n", ": c\n\n", "data: [DONE]\n\n"]
        );
        assert_eq!(rest, None);
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let stream: &[u8] =
            b"data: {\"x\":1}\r\n\r\nevent: e\ndata: two\ndata: lines\n\n: ping\r\rdata: [DONE]\n\n";
        let (whole, _) = split_all(&[stream]);
        assert_eq!(whole.len(), 4);
        for cut in 1..stream.len() {
            let (ev, rest) = split_all(&[&stream[..cut], &stream[cut..]]);
            assert_eq!(ev, whole, "cut at {cut}");
            assert_eq!(rest, None);
        }
        // Byte by byte.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(split_all(&bytes).0, whole);
    }

    #[test]
    fn unfinished_event_is_reported() {
        let (ev, rest) = split_all(&[b"data: a\n\ndata: {\"partial"]);
        assert_eq!(ev, ["data: a\n\n"]);
        assert_eq!(rest.as_deref(), Some(&b"data: {\"partial"[..]));
    }

    #[test]
    fn payload_and_done() {
        let ev = SseEvent::from_raw(Bytes::from_static(b"event: x\ndata: a\ndata:b\n\n"));
        assert_eq!(ev.payload().as_deref(), Some(&b"a\nb"[..]));
        assert!(SseEvent::from_raw(Bytes::from_static(b"data: [DONE]\r\n\r\n")).is_done());
        assert!(!SseEvent::from_raw(Bytes::from_static(b": keepalive\n\n")).is_done());
        assert_eq!(
            SseEvent::from_raw(Bytes::from_static(b": c\n\n")).payload(),
            None
        );
        assert_eq!(
            SseEvent::data(b"{}").raw(),
            &Bytes::from_static(b"data: {}\n\n")
        );
    }
}
