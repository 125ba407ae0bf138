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
    /// Where the data is in `raw` when the event is one `data:` line (nearly every event):
    /// found once, when the event is made, since a connector and the relay both read it.
    single: Option<(u32, u32)>,
    /// What the data carries, when the connector already scanned it (`Marks::scan`): the relay
    /// reads this instead of scanning the same bytes again.
    marks: Option<crate::usage::Marks>,
}

impl SseEvent {
    /// Wraps bytes that form one whole event (used by connectors that write their own).
    pub fn from_raw(raw: Bytes) -> Self {
        let single = single_data_line(&raw);
        SseEvent {
            raw,
            hidden: false,
            single,
            marks: None,
        }
    }

    /// Notes what `Marks::scan` found in the event's data (the data, unchanged since).
    pub fn with_marks(mut self, marks: crate::usage::Marks) -> Self {
        self.marks = Some(marks);
        self
    }

    /// What `Marks::scan` found in the data, when a connector scanned it.
    pub fn marks(&self) -> Option<crate::usage::Marks> {
        self.marks
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
        SseEvent::from_raw(Bytes::from(out))
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
        if let Some((start, end)) = self.single {
            return Some(std::borrow::Cow::Borrowed(
                &self.raw[start as usize..end as usize],
            ));
        }
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

/// The common shape, one `data:` line and the blank line: where its value is, found with one
/// search for the line's end. `None` for any other shape (or an event over 4 GiB).
fn single_data_line(raw: &[u8]) -> Option<(u32, u32)> {
    let value = raw.strip_prefix(b"data:")?;
    let end = memchr::memchr2(b'\n', b'\r', value)?;
    if !matches!(&value[end..], b"\n\n" | b"\r\n\r\n" | b"\r\r") {
        return None;
    }
    let start = if value.first() == Some(&b' ') { 6 } else { 5 };
    let end = 5 + end;
    Some((
        u32::try_from(start.min(end)).ok()?,
        u32::try_from(end).ok()?,
    ))
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

/// Where a scan for the end of an event stopped, so the next chunk resumes there instead of
/// scanning the buffered bytes again (an event trickled in many small chunks stays linear).
#[derive(Debug, Default, Clone, Copy)]
struct Scan {
    /// The first byte not yet looked at.
    at: usize,
    /// Whether `at` is inside a line (a line start is where an empty line ends the event).
    in_line: bool,
}

impl Scan {
    /// Finds the end of the first complete event in `buf`, from where the last scan stopped:
    /// the index just past its blank line. `None` when no event is complete yet (including a
    /// trailing `\r` that may be half of `\r\n`); the scan then remembers where it got to.
    fn event_end(&mut self, buf: &[u8]) -> Option<usize> {
        loop {
            if !self.in_line {
                // A line starts here; an empty line ends the event.
                match buf.get(self.at) {
                    None => return None,
                    Some(b'\n') => return Some(self.at + 1),
                    Some(b'\r') => {
                        return match buf.get(self.at + 1) {
                            None => None,
                            Some(b'\n') => Some(self.at + 2),
                            Some(_) => Some(self.at + 1),
                        }
                    }
                    Some(_) => self.in_line = true,
                }
            }
            let Some(i) = memchr::memchr2(b'\n', b'\r', &buf[self.at..]) else {
                self.at = buf.len();
                return None;
            };
            let i = self.at + i;
            self.at = if buf[i] == b'\r' {
                match buf.get(i + 1) {
                    None => {
                        // `\r` or the first half of `\r\n`: look again when more arrives.
                        self.at = i;
                        return None;
                    }
                    Some(b'\n') => i + 2,
                    Some(_) => i + 1,
                }
            } else {
                i + 1
            };
            self.in_line = false;
        }
    }
}

/// The largest upstream event the splitter holds, 16 MiB: a real chunk is at most a few
/// hundred kilobytes (a large tool-call argument), while an upstream that never ends its event
/// would otherwise grow the buffer without bound.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// An upstream event longer than the splitter's limit: the stream cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an upstream event exceeds {limit} bytes")]
pub struct EventTooLarge {
    pub limit: usize,
}

/// Cuts a byte stream into whole events. Bytes of an event that arrives in one chunk are
/// sliced out of that chunk; only events split across chunks are copied once.
#[derive(Debug)]
pub struct SseSplitter {
    /// The start of an event whose end has not arrived yet.
    partial: BytesMut,
    /// How far `partial` has been scanned.
    scan: Scan,
    /// The longest event accepted.
    limit: usize,
}

impl Default for SseSplitter {
    fn default() -> Self {
        Self::with_limit(MAX_EVENT_BYTES)
    }
}

impl SseSplitter {
    /// A splitter that refuses events over [`MAX_EVENT_BYTES`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A splitter that refuses events over `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        SseSplitter {
            partial: BytesMut::new(),
            scan: Scan::default(),
            limit,
        }
    }

    /// Feeds one chunk; complete events are pushed to `out` in order. An event longer than
    /// the limit is an error (whether it is still arriving or came whole): the bytes held are
    /// dropped and the stream must end, since what follows cannot be framed safely.
    pub fn push(&mut self, mut chunk: Bytes, out: &mut Vec<SseEvent>) -> Result<(), EventTooLarge> {
        if !self.partial.is_empty() {
            self.partial.extend_from_slice(&chunk);
            while let Some(end) = self.scan.event_end(&self.partial) {
                self.scan = Scan::default();
                let event = self.partial.split_to(end).freeze();
                self.check(event.len())?;
                out.push(SseEvent::from_raw(event));
            }
            return self.check(self.partial.len());
        }
        let mut scan = Scan::default();
        while let Some(end) = scan.event_end(&chunk) {
            scan = Scan::default();
            self.check(end)?;
            out.push(SseEvent::from_raw(chunk.split_to(end)));
        }
        if !chunk.is_empty() {
            self.check(chunk.len())?;
            self.partial.extend_from_slice(&chunk);
            self.scan = scan;
        }
        Ok(())
    }

    fn check(&mut self, len: usize) -> Result<(), EventTooLarge> {
        if len <= self.limit {
            return Ok(());
        }
        self.partial = BytesMut::new();
        self.scan = Scan::default();
        Err(EventTooLarge { limit: self.limit })
    }

    /// Bytes of an unfinished event when the stream ended (an upstream cut inside an event).
    pub fn finish(&mut self) -> Option<Bytes> {
        let rest = std::mem::take(&mut self.partial);
        self.scan = Scan::default();
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
            s.push(Bytes::copy_from_slice(c), &mut out)
                .expect("within the limit");
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
    fn an_event_over_the_limit_is_refused_whole_or_in_pieces() {
        let mut s = SseSplitter::with_limit(16);
        let mut out = Vec::new();
        s.push(Bytes::from_static(b"data: ok\n\n"), &mut out)
            .expect("small");
        assert_eq!(out.len(), 1);
        // Arriving in pieces: refused as soon as the held part passes the limit.
        s.push(Bytes::from_static(b"data: 0123"), &mut out)
            .expect("not yet");
        assert_eq!(
            s.push(Bytes::from_static(b"456789a"), &mut out),
            Err(EventTooLarge { limit: 16 })
        );
        assert_eq!(s.finish(), None, "the held bytes were dropped");
        // Arriving whole in one chunk, after a good one.
        let mut s = SseSplitter::with_limit(16);
        let mut out = Vec::new();
        assert!(s
            .push(
                Bytes::from_static(b"data: a\n\ndata: 0123456789abcdef\n\n"),
                &mut out
            )
            .is_err());
        assert_eq!(out.len(), 1);
        // An endless event is held to the limit plus one chunk, never more.
        let mut s = SseSplitter::with_limit(1 << 20);
        let mut out = Vec::new();
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut pushed = 0usize;
        let refused = loop {
            pushed += chunk.len();
            if s.push(chunk.clone(), &mut out).is_err() {
                break pushed;
            }
        };
        assert!(refused <= (1 << 20) + chunk.len(), "{refused}");
        assert!(out.is_empty());
    }

    #[test]
    fn a_long_event_in_tiny_chunks_is_scanned_once() {
        // 2 MiB one byte at a time: quadratic rescanning would take minutes.
        let mut event = b"data: ".to_vec();
        event.extend(std::iter::repeat_n(b'y', 2 << 20));
        event.extend_from_slice(b"\r\n\r\n");
        let mut s = SseSplitter::new();
        let mut out = Vec::new();
        let started = std::time::Instant::now();
        for b in &event {
            s.push(Bytes::copy_from_slice(&[*b]), &mut out)
                .expect("within the limit");
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].raw().len(), event.len());
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn a_single_data_line_reads_as_the_general_rule_reads_it() {
        let general = |raw: &[u8]| {
            // The fast path off: an `id:` line first sends every event through the line loop.
            let mut with_id = b"id: 1\n".to_vec();
            with_id.extend_from_slice(raw);
            SseEvent::from_raw(Bytes::from(with_id))
                .payload()
                .map(|p| p.into_owned())
        };
        for raw in [
            &b"data: {\"a\":1}\n\n"[..],
            b"data:{\"a\":1}\n\n",
            b"data:  two spaces\n\n",
            b"data: crlf\r\n\r\n",
            b"data: cr\r\r",
            b"data:\n\n",
            b"data: \n\n",
            b"data: a\ndata: b\n\n",
            b"data: a\r\n\n",
            b"data: [DONE]\n\n",
        ] {
            let event = SseEvent::from_raw(Bytes::copy_from_slice(raw));
            assert_eq!(
                event.payload().map(|p| p.into_owned()),
                general(raw),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert!(SseEvent::from_raw(Bytes::from_static(b"data: x\n\n"))
            .single
            .is_some());
        assert!(
            SseEvent::from_raw(Bytes::from_static(b"data: a\ndata: b\n\n"))
                .single
                .is_none()
        );
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
