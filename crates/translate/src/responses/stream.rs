//! A chat.completions event stream → the Responses event stream, event for event as OpenAI
//! sends it: `response.created`, `response.in_progress`, then each output item opened
//! (`output_item.added`), filled (content parts, text and argument deltas, `.done` events) and
//! closed (`output_item.done`), then `response.completed` (or `response.incomplete` after
//! `finish_reason: length`, or `error` + `response.failed` after a break). Every event has the
//! next `sequence_number`; the SDK validates it, and Codex needs each delta's item opened first
//! ("OutputTextDelta without active item").
//!
//! One item is open at a time, as OpenAI's own streams do. Chat servers may interleave
//! fragments of parallel tool calls, so only the first call streams live; later calls, and
//! text or reasoning that follow a call, are buffered and sent whole when the stream ends.
//! Freeform (`custom`) calls are always buffered: their input is the one string argument of
//! the function the upstream saw, known only once its JSON is complete.

use bytes::BytesMut;
use serde::Serialize;
use tollgate_core::Usage;

use super::wire::{self, Body, Item, Outcome, Part, PartView, ResponseView, Status, View};
use super::ReplyContext;
use crate::anthropic::scan::Scanner;
use crate::chat::Chunk;
use crate::{Failure, StreamTranslator};

/// Translates one chat.completions stream into a Responses event stream.
pub struct ChatToResponses {
    ctx: ReplyContext,
    /// The next event's `sequence_number`.
    seq: u64,
    /// `response.created` and `response.in_progress` were written.
    started: bool,
    /// A terminal event was written: nothing follows it.
    ended: bool,
    /// Every item opened so far; an item's `output_index` is its position.
    items: Vec<Item>,
    /// The last item, while it is open.
    open: Option<Open>,
    /// Tool calls by upstream index, in the order they first appeared.
    calls: Vec<CallBuffer>,
    /// A tool call has appeared: text and reasoning from now on are buffered (`trailing`).
    calls_started: bool,
    trailing: Vec<Trailing>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    /// The bytes of the last delta event around its number and text.
    delta_bytes: DeltaBytes,
    /// Reads plain text chunks without a parse (`None` in tests: the full parse alone, the
    /// reference the fast path is tested against).
    scanner: Option<Scanner>,
}

/// What the open item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Reasoning,
    /// A message; `Some(refusal)` while a part of that kind is open.
    Message(Option<bool>),
    /// The first function call, streaming its arguments.
    Call,
}

/// One upstream tool call as its fragments arrive.
struct CallBuffer {
    index: u32,
    id: Option<String>,
    name: Option<String>,
    /// Arguments received while the call is not live.
    arguments: String,
    /// This call is the open item and streams its arguments.
    live: bool,
    /// A call beyond the first under `parallel_tool_calls: false`.
    ignored: bool,
}

/// Text or reasoning received after a tool call.
enum Trailing {
    Text { refusal: bool, text: String },
    Reasoning(String),
}

/// One event; absent fields are left out, so one struct serves every event type.
#[derive(Serialize, Default)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item: Option<View<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    part: Option<PartView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a str>,
    /// `[]` on text events: the SDK's `ResponseTextDeltaEvent.logprobs` is required.
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<[(); 0]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    /// `Some(())` writes `"param": null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody<'a>>,
}

/// The `error` object of an `error` event.
#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
    message: &'a str,
    param: (),
}

/// About what a `response` event takes besides its echoed parameters and output (and what
/// the events closing an item take besides its text), for reserving room in the output.
const RESPONSE_EVENT: usize = 512;

/// A text fragment: as a chat chunk's JSON had it (escaped, without its quotes; from the
/// scanner), or plain (from the full parse, or buffered).
#[derive(Debug, Clone, Copy)]
enum Frag<'a> {
    Escaped(&'a str),
    Plain(&'a str),
}

impl Frag<'_> {
    /// Appends the text, unescaped, to `text`.
    fn push_plain(self, text: &mut String) {
        match self {
            Frag::Plain(s) => text.push_str(s),
            // Without a backslash the escaped form is the text itself.
            Frag::Escaped(s) if !s.contains('\\') => text.push_str(s),
            Frag::Escaped(s) => {
                // The scanner checked that `s` is the inside of a valid JSON string.
                match serde_json::from_str::<String>(&format!("\"{s}\"")) {
                    Ok(plain) => text.push_str(&plain),
                    Err(_) => text.push_str(s),
                }
            }
        }
    }
}

/// Whether a chunk may take the scanner: it looks like one JSON object (the full parse
/// ignores anything else), and every `"index"` member in it is 0 (or it has none), so the
/// scanner's fragments belong to the first choice: the full parse passes on choice 0 only
/// (`n > 1` has no Responses form). Inside a JSON string a quote is escaped, so `"index"`
/// there is never followed by a bare quote: every match is a key.
fn first_choice_only(data: &[u8]) -> bool {
    let object = data.trim_ascii();
    if !(object.starts_with(b"{") && object.ends_with(b"}")) {
        return false;
    }
    // Built once: building a searcher costs more than searching a chunk.
    static INDEX: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"index\""));
    tollgate_core::places(&INDEX, data).all(|at| {
        let mut rest = data[at + 7..].trim_ascii_start();
        let Some(after) = rest.strip_prefix(b":") else {
            return false;
        };
        rest = after.trim_ascii_start();
        rest.first() == Some(&b'0') && !rest.get(1).is_some_and(u8::is_ascii_digit)
    })
}

/// Whether escaped JSON string text uses only the escapes serde_json writes for the same
/// text, so copying it gives the bytes a serialization would: `\"`, `\\` and the short forms
/// of control characters. A server's `\/` or `\u00e9` means the same but reads back as `/` and
/// `é`, so such a fragment takes the full parse.
fn escaped_as_serde(text: &str) -> bool {
    let bytes = text.as_bytes();
    memchr::memchr_iter(b'\\', bytes).all(|at| {
        // An escaped backslash is itself a match: its second byte then passes here too.
        matches!(
            bytes.get(at + 1),
            Some(b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't')
        )
    })
}

/// Where a delta lands inside its item, as its event names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Within {
    Content(usize),
    Summary(usize),
}

/// A delta event: the event of nearly every chunk, written by hand so an escaped fragment is
/// copied in as it is. Same bytes as the [`Event`] with these fields.
struct Delta<'a> {
    kind: &'static str,
    output_index: usize,
    item_id: &'a str,
    at: Option<Within>,
    delta: Frag<'a>,
    /// `"logprobs":[]` (text deltas).
    logprobs: bool,
}

/// The bytes of a delta event before its sequence number, between it and the text, and
/// after the text, kept while deltas go to the same place (nearly every event of a stream
/// does): a delta then costs four copies and a number.
#[derive(Default)]
struct DeltaBytes {
    /// What the bytes were written for: kind, output index, item id, place.
    kind: &'static str,
    output_index: usize,
    item_id: String,
    at: Option<Within>,
    /// `event: KIND\ndata: {"type":"KIND","sequence_number":`
    head: BytesMut,
    /// `,"output_index":…,"item_id":…[,"content_index":…],"delta":"`
    middle: BytesMut,
    /// `","logprobs":[]}\n\n` or `"}\n\n`
    after: &'static [u8],
}

impl DeltaBytes {
    fn fits(&self, d: &Delta<'_>) -> bool {
        !self.head.is_empty()
            && self.kind == d.kind
            && self.output_index == d.output_index
            && self.at == d.at
            && self.item_id == d.item_id
    }

    fn set(&mut self, d: &Delta<'_>) {
        self.kind = d.kind;
        self.output_index = d.output_index;
        self.item_id.clear();
        self.item_id.push_str(d.item_id);
        self.at = d.at;
        let head = &mut self.head;
        head.clear();
        head.extend_from_slice(b"event: ");
        head.extend_from_slice(d.kind.as_bytes());
        head.extend_from_slice(b"\ndata: {\"type\":");
        wire::push_json_str(head, d.kind);
        head.extend_from_slice(b",\"sequence_number\":");
        let middle = &mut self.middle;
        middle.clear();
        middle.extend_from_slice(b",\"output_index\":");
        wire::push_u64(middle, d.output_index as u64);
        middle.extend_from_slice(b",\"item_id\":");
        wire::push_json_str(middle, d.item_id);
        match d.at {
            Some(Within::Content(i)) => {
                middle.extend_from_slice(b",\"content_index\":");
                wire::push_u64(middle, i as u64);
            }
            Some(Within::Summary(i)) => {
                middle.extend_from_slice(b",\"summary_index\":");
                wire::push_u64(middle, i as u64);
            }
            None => {}
        }
        // Ends with the escaped text's opening quote; `after` begins with its closing one.
        middle.extend_from_slice(b",\"delta\":\"");
        self.after = if d.logprobs {
            b"\",\"logprobs\":[]}\n\n"
        } else {
            b"\"}\n\n"
        };
    }
}

fn write_delta(out: &mut BytesMut, seq: &mut u64, bytes: &mut DeltaBytes, d: Delta<'_>) {
    if !bytes.fits(&d) {
        bytes.set(&d);
    }
    let text = match d.delta {
        Frag::Escaped(s) | Frag::Plain(s) => s.len(),
    };
    out.reserve(bytes.head.len() + 20 + bytes.middle.len() + text + bytes.after.len());
    out.extend_from_slice(&bytes.head);
    wire::push_u64(out, *seq);
    *seq += 1;
    match d.delta {
        Frag::Escaped(s) => {
            out.extend_from_slice(&bytes.middle);
            out.extend_from_slice(s.as_bytes());
            out.extend_from_slice(bytes.after);
        }
        Frag::Plain(s) => {
            // The quotes come with the escaped text: without them here. (`set` above wrote
            // both, so neither is empty.)
            let (middle, after) = (&bytes.middle, bytes.after);
            out.extend_from_slice(&middle[..middle.len() - 1]);
            wire::push_json_str(out, s);
            out.extend_from_slice(&after[1..]);
        }
    }
}

/// Writes an event that carries a `response` object (`response.created` …) with the next
/// sequence number: `type`, `sequence_number`, `response`, as [`Event`] orders its fields.
fn write_response(
    out: &mut BytesMut,
    seq: &mut u64,
    kind: &'static str,
    response: &ResponseView<'_>,
) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: {\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"sequence_number\":");
    wire::push_u64(out, *seq);
    *seq += 1;
    out.extend_from_slice(b",\"response\":");
    response.write(out);
    out.extend_from_slice(b"}\n\n");
}

/// Writes `event` with the next sequence number. A free function over the counter, so an
/// event may borrow the translator's items while it is written.
fn write(out: &mut BytesMut, seq: &mut u64, mut event: Event<'_>) {
    event.sequence_number = *seq;
    *seq += 1;
    event.write(out);
}

impl Event<'_> {
    /// Appends `event: TYPE\ndata: JSON\n\n`: the bytes `sse::write_named` gives for the
    /// serde form (the tests' reference), written by hand with the fields in the struct's
    /// order and absent ones left out.
    fn write(&self, out: &mut BytesMut) {
        fn key(out: &mut BytesMut, name: &[u8]) {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name);
            out.extend_from_slice(b"\":");
        }
        fn number(out: &mut BytesMut, name: &[u8], n: Option<usize>) {
            if let Some(n) = n {
                key(out, name);
                wire::push_u64(out, n as u64);
            }
        }
        fn text(out: &mut BytesMut, name: &[u8], s: Option<&str>) {
            if let Some(s) = s {
                key(out, name);
                wire::push_json_str(out, s);
            }
        }
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(self.kind.as_bytes());
        out.extend_from_slice(b"\ndata: {\"type\":");
        wire::push_json_str(out, self.kind);
        out.extend_from_slice(b",\"sequence_number\":");
        wire::push_u64(out, self.sequence_number);
        number(out, b"output_index", self.output_index);
        text(out, b"item_id", self.item_id);
        number(out, b"content_index", self.content_index);
        number(out, b"summary_index", self.summary_index);
        if let Some(item) = &self.item {
            key(out, b"item");
            item.write(out);
        }
        if let Some(part) = &self.part {
            key(out, b"part");
            part.write(out);
        }
        text(out, b"delta", self.delta);
        text(out, b"text", self.text);
        text(out, b"refusal", self.refusal);
        text(out, b"name", self.name);
        text(out, b"arguments", self.arguments);
        text(out, b"input", self.input);
        if self.logprobs.is_some() {
            out.extend_from_slice(b",\"logprobs\":[]");
        }
        text(out, b"code", self.code);
        text(out, b"message", self.message);
        if self.param.is_some() {
            out.extend_from_slice(b",\"param\":null");
        }
        if let Some(error) = &self.error {
            key(out, b"error");
            wire::push_json(out, error);
        }
        out.extend_from_slice(b"}\n\n");
    }
}

impl ChatToResponses {
    pub fn new(ctx: ReplyContext) -> Self {
        ChatToResponses {
            ctx,
            seq: 0,
            started: false,
            ended: false,
            items: Vec::new(),
            open: None,
            calls: Vec::new(),
            calls_started: false,
            trailing: Vec::new(),
            finish_reason: None,
            usage: None,
            delta_bytes: DeltaBytes::default(),
            scanner: Some(Scanner::default()),
        }
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        // Both events at once: one allocation instead of a buffer grown step by step.
        out.reserve(2 * (RESPONSE_EVENT + self.ctx.echo.len()));
        for kind in ["response.created", "response.in_progress"] {
            let response = ResponseView {
                ctx: &self.ctx,
                outcome: Outcome::InProgress,
                output: &[],
                usage: None,
                error: None,
            };
            write_response(out, &mut self.seq, kind, &response);
        }
    }

    // --- items ---------------------------------------------------------------------------

    fn open_item(&mut self, out: &mut BytesMut, item: Item, open: Open) {
        let index = self.items.len();
        self.items.push(item);
        self.open = Some(open);
        write(
            out,
            &mut self.seq,
            Event {
                kind: "response.output_item.added",
                output_index: Some(index),
                item: Some(self.items[index].added()),
                ..Event::default()
            },
        );
    }

    /// Closes the open item (and its open part) with `status`.
    fn close_open(&mut self, out: &mut BytesMut, status: Status) {
        let Some(open) = self.open.take() else {
            return;
        };
        let Some(index) = self.items.len().checked_sub(1) else {
            return;
        };
        match open {
            Open::Reasoning => self.reasoning_done(out, index),
            Open::Message(part) => {
                if let Some(refusal) = part {
                    self.part_done(out, index, refusal);
                }
            }
            Open::Call => self.arguments_done(out, index),
        }
        self.items[index].status = status;
        write(
            out,
            &mut self.seq,
            Event {
                kind: "response.output_item.done",
                output_index: Some(index),
                item: Some(self.items[index].whole()),
                ..Event::default()
            },
        );
    }

    fn open_reasoning(&mut self, out: &mut BytesMut) {
        let index = self.items.len();
        let summary = self.ctx.summary;
        let item = Item {
            id: self.ctx.item_id("rs", index),
            status: Status::InProgress,
            body: Body::Reasoning {
                text: String::new(),
                summary,
            },
        };
        self.open_item(out, item, Open::Reasoning);
        let item_id = Some(self.items[index].id.as_str());
        let event = if summary {
            Event {
                kind: "response.reasoning_summary_part.added",
                summary_index: Some(0),
                part: Some(PartView::SummaryText { text: "" }),
                ..Event::default()
            }
        } else {
            Event {
                kind: "response.content_part.added",
                content_index: Some(0),
                part: Some(PartView::ReasoningText { text: "" }),
                ..Event::default()
            }
        };
        write(
            out,
            &mut self.seq,
            Event {
                output_index: Some(index),
                item_id,
                ..event
            },
        );
    }

    fn reasoning_delta(&mut self, out: &mut BytesMut, delta: Frag<'_>) {
        let Some(index) = self.items.len().checked_sub(1) else {
            return;
        };
        let item = &mut self.items[index];
        let Body::Reasoning { text, summary } = &mut item.body else {
            return;
        };
        delta.push_plain(text);
        let (kind, at) = if *summary {
            ("response.reasoning_summary_text.delta", Within::Summary(0))
        } else {
            ("response.reasoning_text.delta", Within::Content(0))
        };
        write_delta(
            out,
            &mut self.seq,
            &mut self.delta_bytes,
            Delta {
                kind,
                output_index: index,
                item_id: &item.id,
                at: Some(at),
                delta,
                logprobs: false,
            },
        );
    }

    fn reasoning_done(&mut self, out: &mut BytesMut, index: usize) {
        let item = &self.items[index];
        let Body::Reasoning { text, summary } = &item.body else {
            return;
        };
        let common = || Event {
            output_index: Some(index),
            item_id: Some(&item.id),
            ..Event::default()
        };
        let events = if *summary {
            [
                Event {
                    kind: "response.reasoning_summary_text.done",
                    summary_index: Some(0),
                    text: Some(text),
                    ..common()
                },
                Event {
                    kind: "response.reasoning_summary_part.done",
                    summary_index: Some(0),
                    part: Some(PartView::SummaryText { text }),
                    ..common()
                },
            ]
        } else {
            [
                Event {
                    kind: "response.reasoning_text.done",
                    content_index: Some(0),
                    text: Some(text),
                    ..common()
                },
                Event {
                    kind: "response.content_part.done",
                    content_index: Some(0),
                    part: Some(PartView::ReasoningText { text }),
                    ..common()
                },
            ]
        };
        for event in events {
            write(out, &mut self.seq, event);
        }
    }

    fn open_message(&mut self, out: &mut BytesMut) {
        let index = self.items.len();
        let item = Item {
            id: self.ctx.item_id("msg", index),
            status: Status::InProgress,
            body: Body::Message { parts: Vec::new() },
        };
        self.open_item(out, item, Open::Message(None));
    }

    fn open_part(&mut self, out: &mut BytesMut, refusal: bool) {
        let Some(index) = self.items.len().checked_sub(1) else {
            return;
        };
        let item = &mut self.items[index];
        let Body::Message { parts } = &mut item.body else {
            return;
        };
        parts.push(Part {
            refusal,
            text: String::new(),
        });
        self.open = Some(Open::Message(Some(refusal)));
        write(
            out,
            &mut self.seq,
            Event {
                kind: "response.content_part.added",
                output_index: Some(index),
                item_id: Some(&item.id),
                // Just pushed: at least one part.
                content_index: Some(parts.len() - 1),
                part: Some(PartView::of(refusal, "")),
                ..Event::default()
            },
        );
    }

    fn part_delta(&mut self, out: &mut BytesMut, delta: Frag<'_>) {
        let Some(index) = self.items.len().checked_sub(1) else {
            return;
        };
        let item = &mut self.items[index];
        let Body::Message { parts } = &mut item.body else {
            return;
        };
        let Some(content_index) = parts.len().checked_sub(1) else {
            return;
        };
        let part = &mut parts[content_index];
        delta.push_plain(&mut part.text);
        let (kind, logprobs) = if part.refusal {
            ("response.refusal.delta", false)
        } else {
            ("response.output_text.delta", true)
        };
        write_delta(
            out,
            &mut self.seq,
            &mut self.delta_bytes,
            Delta {
                kind,
                output_index: index,
                item_id: &item.id,
                at: Some(Within::Content(content_index)),
                delta,
                logprobs,
            },
        );
    }

    fn part_done(&mut self, out: &mut BytesMut, index: usize, refusal: bool) {
        let item = &self.items[index];
        let Body::Message { parts } = &item.body else {
            return;
        };
        let Some(content_index) = parts.len().checked_sub(1) else {
            return;
        };
        let part = &parts[content_index];
        let common = || Event {
            output_index: Some(index),
            item_id: Some(&item.id),
            content_index: Some(content_index),
            ..Event::default()
        };
        let done = if refusal {
            Event {
                kind: "response.refusal.done",
                refusal: Some(&part.text),
                ..common()
            }
        } else {
            Event {
                kind: "response.output_text.done",
                text: Some(&part.text),
                logprobs: Some([]),
                ..common()
            }
        };
        write(out, &mut self.seq, done);
        write(
            out,
            &mut self.seq,
            Event {
                kind: "response.content_part.done",
                part: Some(PartView::of(refusal, &part.text)),
                ..common()
            },
        );
    }

    fn arguments_delta(&mut self, out: &mut BytesMut, delta: &str) {
        let Some(index) = self.items.len().checked_sub(1) else {
            return;
        };
        let item = &mut self.items[index];
        if let Body::FunctionCall { arguments, .. } = &mut item.body {
            arguments.push_str(delta);
        }
        write_delta(
            out,
            &mut self.seq,
            &mut self.delta_bytes,
            Delta {
                kind: "response.function_call_arguments.delta",
                output_index: index,
                item_id: &item.id,
                at: None,
                delta: Frag::Plain(delta),
                logprobs: false,
            },
        );
    }

    /// Ends a function call's arguments. `.done` is sent for every call, also one with no
    /// arguments (some gateways skip it, and clients that wait for it hang).
    fn arguments_done(&mut self, out: &mut BytesMut, index: usize) {
        let appended = match &mut self.items[index].body {
            Body::FunctionCall { arguments, .. } => wire::function_arguments(arguments),
            _ => return,
        };
        if let Some(delta) = appended {
            let item = &self.items[index];
            write(
                out,
                &mut self.seq,
                Event {
                    kind: "response.function_call_arguments.delta",
                    output_index: Some(index),
                    item_id: Some(&item.id),
                    delta: Some(delta),
                    ..Event::default()
                },
            );
        }
        let item = &self.items[index];
        let Body::FunctionCall {
            name, arguments, ..
        } = &item.body
        else {
            return;
        };
        write(
            out,
            &mut self.seq,
            Event {
                kind: "response.function_call_arguments.done",
                output_index: Some(index),
                item_id: Some(&item.id),
                name: Some(name),
                arguments: Some(arguments),
                ..Event::default()
            },
        );
    }

    /// A buffered call, sent whole: added, its arguments or input in one delta, done.
    fn whole_call(&mut self, out: &mut BytesMut, item: Item, status: Status) {
        let index = self.items.len();
        let custom = matches!(item.body, Body::CustomToolCall { .. });
        self.open_item(out, item, Open::Call);
        if custom {
            self.open = None;
            let item = &self.items[index];
            let Body::CustomToolCall { input, .. } = &item.body else {
                return;
            };
            let common = || Event {
                output_index: Some(index),
                item_id: Some(&item.id),
                ..Event::default()
            };
            if !input.is_empty() {
                write(
                    out,
                    &mut self.seq,
                    Event {
                        kind: "response.custom_tool_call_input.delta",
                        delta: Some(input),
                        ..common()
                    },
                );
            }
            write(
                out,
                &mut self.seq,
                Event {
                    kind: "response.custom_tool_call_input.done",
                    input: Some(input),
                    ..common()
                },
            );
            self.items[index].status = status;
            write(
                out,
                &mut self.seq,
                Event {
                    kind: "response.output_item.done",
                    output_index: Some(index),
                    item: Some(self.items[index].whole()),
                    ..Event::default()
                },
            );
            return;
        }
        // The arguments are in the item already; the delta repeats them for the stream.
        let arguments = match &mut self.items[index].body {
            Body::FunctionCall { arguments, .. } => std::mem::take(arguments),
            _ => String::new(),
        };
        if !arguments.is_empty() {
            self.arguments_delta(out, &arguments);
        }
        self.close_open(out, status);
    }

    // --- upstream fragments --------------------------------------------------------------

    fn on_reasoning(&mut self, out: &mut BytesMut, text: Frag<'_>) {
        if self.calls_started {
            match self.trailing.last_mut() {
                Some(Trailing::Reasoning(t)) => text.push_plain(t),
                _ => {
                    let mut t = String::new();
                    text.push_plain(&mut t);
                    self.trailing.push(Trailing::Reasoning(t));
                }
            }
            return;
        }
        if self.open != Some(Open::Reasoning) {
            self.close_open(out, Status::Completed);
            self.open_reasoning(out);
        }
        self.reasoning_delta(out, text);
    }

    fn on_text(&mut self, out: &mut BytesMut, text: Frag<'_>, refusal: bool) {
        if self.calls_started {
            match self.trailing.last_mut() {
                Some(Trailing::Text {
                    refusal: r,
                    text: t,
                }) if *r == refusal => text.push_plain(t),
                _ => {
                    let mut t = String::new();
                    text.push_plain(&mut t);
                    self.trailing.push(Trailing::Text { refusal, text: t });
                }
            }
            return;
        }
        match self.open {
            Some(Open::Message(Some(r))) if r == refusal => {}
            Some(Open::Message(Some(r))) => {
                let Some(index) = self.items.len().checked_sub(1) else {
                    return;
                };
                self.part_done(out, index, r);
                self.open_part(out, refusal);
            }
            Some(Open::Message(None)) => self.open_part(out, refusal),
            _ => {
                self.close_open(out, Status::Completed);
                self.open_message(out);
                self.open_part(out, refusal);
            }
        }
        self.part_delta(out, text);
    }

    fn on_call(
        &mut self,
        out: &mut BytesMut,
        index: u32,
        id: Option<&str>,
        name: Option<&str>,
        arguments: &str,
    ) {
        if !self.calls_started {
            self.close_open(out, Status::Completed);
            self.calls_started = true;
        }
        let position = match self.calls.iter().position(|c| c.index == index) {
            Some(p) => p,
            None => {
                let ignored = self.ctx.single_call && !self.calls.is_empty();
                self.calls.push(CallBuffer {
                    index,
                    id: None,
                    name: None,
                    arguments: String::new(),
                    live: false,
                    ignored,
                });
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[position];
        if call.ignored {
            return;
        }
        // The first non-empty id and name win: some servers repeat them on every fragment.
        if call.id.is_none() {
            call.id = id.filter(|s| !s.is_empty()).map(str::to_owned);
        }
        if call.name.is_none() {
            call.name = name.filter(|s| !s.is_empty()).map(str::to_owned);
        }
        if call.live {
            if !arguments.is_empty() {
                self.arguments_delta(out, arguments);
            }
            return;
        }
        call.arguments.push_str(arguments);
        // Only the first call may stream live: a later one could still be interleaved with
        // it. It goes live once its name is known (the item must carry it).
        let Some(chat_name) = call.name.as_deref() else {
            return;
        };
        if position != 0 || self.ctx.is_custom(chat_name) {
            return;
        }
        call.live = true;
        let buffered = std::mem::take(&mut call.arguments);
        let item = self.ctx.call_item(
            self.items.len(),
            call.id.as_deref(),
            chat_name,
            String::new(),
            Status::InProgress,
        );
        self.open_item(out, item, Open::Call);
        if !buffered.is_empty() {
            self.arguments_delta(out, &buffered);
        }
    }

    /// Closes everything and writes the success ending: `response.completed`, or
    /// `response.incomplete` when the upstream stopped for length or a content filter.
    fn terminate(&mut self, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.start(out);
        let outcome = wire::outcome(self.finish_reason.as_deref());
        let status = wire::item_status(outcome);
        // The closing events repeat the open item's text about four times (its `.done`, the
        // part's, the item's, `response.completed`'s output): room for them at once.
        let text: usize = self.items.iter().map(Item::text_len).sum();
        out.reserve(RESPONSE_EVENT + self.ctx.echo.len() + 4 * (text + 3 * RESPONSE_EVENT / 2));
        self.close_open(out, status);
        for call in std::mem::take(&mut self.calls) {
            // A call whose name never came cannot be answered: there is nothing to run.
            let (false, false, Some(name)) = (call.live, call.ignored, call.name) else {
                continue;
            };
            let item = self.ctx.call_item(
                self.items.len(),
                call.id.as_deref(),
                &name,
                call.arguments,
                status,
            );
            self.whole_call(out, item, status);
        }
        for trailing in std::mem::take(&mut self.trailing) {
            match trailing {
                Trailing::Text { refusal, text } => {
                    self.open_message(out);
                    self.open_part(out, refusal);
                    self.part_delta(out, Frag::Plain(&text));
                }
                Trailing::Reasoning(text) => {
                    self.open_reasoning(out);
                    self.reasoning_delta(out, Frag::Plain(&text));
                }
            }
            self.close_open(out, status);
        }
        let kind = match outcome {
            Outcome::Incomplete(_) => "response.incomplete",
            _ => "response.completed",
        };
        let response = ResponseView {
            ctx: &self.ctx,
            outcome,
            output: &self.items,
            usage: self.usage.as_ref(),
            error: None,
        };
        write_response(out, &mut self.seq, kind, &response);
        self.ended = true;
    }
}

impl StreamTranslator for ChatToResponses {
    fn event(&mut self, data: &[u8], out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.start(out);
        if data.trim_ascii() == b"[DONE]" {
            self.terminate(out);
            return;
        }
        // Most chunks are one text or reasoning fragment of the first choice: read without a
        // parse (the Messages door's scanner) and copied out still escaped. Everything else
        // takes the one full parse.
        let fragments = match &mut self.scanner {
            Some(scanner) if first_choice_only(data) => scanner.fragments(data).filter(|f| {
                [f.content, f.reasoning]
                    .into_iter()
                    .flatten()
                    .all(escaped_as_serde)
            }),
            _ => None,
        };
        if let Some(fragments) = fragments {
            if let Some(text) = fragments.reasoning.filter(|t| !t.is_empty()) {
                self.on_reasoning(out, Frag::Escaped(text));
            }
            if let Some(text) = fragments.content.filter(|t| !t.is_empty()) {
                self.on_text(out, Frag::Escaped(text), false);
            }
            return;
        }
        // Not a chunk (an error frame the relay reports through `fail`, or noise): nothing
        // to translate.
        let Some(chunk) = Chunk::read(data) else {
            return;
        };
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        // `n > 1` has no Responses form; the first choice is the answer.
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            let delta = &choice.delta;
            if let Some(text) = delta.reasoning_text() {
                self.on_reasoning(out, Frag::Plain(text));
            }
            if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
                self.on_text(out, Frag::Plain(text), false);
            }
            if let Some(text) = delta.refusal.as_deref().filter(|t| !t.is_empty()) {
                self.on_text(out, Frag::Plain(text), true);
            }
            for (position, call) in delta.tool_calls.iter().enumerate() {
                let function = call.function.as_ref();
                self.on_call(
                    out,
                    call.index.unwrap_or(position as u32),
                    call.id.as_deref(),
                    function.and_then(|f| f.name.as_deref()),
                    function
                        .and_then(|f| f.arguments.as_ref())
                        .map_or("", |a| a.as_str()),
                );
            }
            if let Some(reason) = &choice.finish_reason {
                self.finish_reason = Some(reason.to_string());
            }
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        self.terminate(out);
    }

    /// An `error` event, then `response.failed`. The `error` event carries its fields both
    /// flat (the SDK's `ResponseErrorEvent`) and nested under `error`, as the live API sends
    /// it: the openai SDKs raise `APIError` on an event with an `error` object, and Codex
    /// (which ignores `error` events) retries on `response.failed`. The open item is not
    /// closed: an `output_item.done` would hand a half-streamed call to a client to run.
    fn fail(&mut self, failure: &Failure<'_>, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.start(out);
        let code = if failure.status == 429 {
            "rate_limit_exceeded"
        } else {
            "server_error"
        };
        write(
            out,
            &mut self.seq,
            Event {
                kind: "error",
                code: Some(failure.code),
                message: Some(failure.message),
                param: Some(()),
                error: Some(ErrorBody {
                    kind: code,
                    code: failure.code,
                    message: failure.message,
                    param: (),
                }),
                ..Event::default()
            },
        );
        if self.open.take().is_some() {
            if let Some(last) = self.items.last_mut() {
                last.status = Status::Incomplete;
            }
        }
        let response = ResponseView {
            ctx: &self.ctx,
            outcome: Outcome::Failed,
            output: &self.items,
            usage: self.usage.as_ref(),
            error: Some((code, failure.message)),
        };
        write_response(out, &mut self.seq, "response.failed", &response);
        self.ended = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn translator(fast: bool) -> ChatToResponses {
        let body = tollgate_core::JsonObject::parse(
            br#"{"model":"m","input":"x","reasoning":{"summary":"auto"}}"#,
        )
        .expect("json");
        let mut ctx = super::super::reply_context(&body, "resp_p".into(), "m".into()).expect("ctx");
        ctx.created_at = 1;
        let mut t = ChatToResponses::new(ctx);
        if !fast {
            t.scanner = None;
        }
        t
    }

    fn run(fast: bool, events: &[String]) -> String {
        let mut t = translator(fast);
        let mut out = BytesMut::new();
        for e in events {
            t.event(e.as_bytes(), &mut out);
        }
        t.finish(&mut out);
        String::from_utf8(out.to_vec()).expect("utf-8")
    }

    /// Text with what JSON escapes and what the scanner must not take for structure.
    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("a".to_owned()),
                Just("\"".to_owned()),
                Just("\\".to_owned()),
                Just("\n".to_owned()),
                Just("\u{1}".to_owned()),
                Just("\u{8}\u{c}\t\r\u{7f}/".to_owned()),
                Just("é日".to_owned()),
                Just("\"index\": 1".to_owned()),
                Just("\"finish_reason\":\"stop\"".to_owned()),
                Just("".to_owned()),
            ],
            0..5,
        )
        .prop_map(|v| v.concat())
    }

    /// One upstream event, in the shapes servers write.
    fn event() -> impl Strategy<Value = String> {
        let chunk = |choice: serde_json::Value| {
            json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[choice]})
                .to_string()
        };
        prop_oneof![
            text().prop_map(move |t| chunk(json!({"index":0,"delta":{"content":t},"finish_reason":null}))),
            text().prop_map(move |t| chunk(json!({"index":0,"delta":{"content":t},"finish_reason":null}))),
            text().prop_map(move |t| chunk(json!({"index":0,"delta":{"content":t},"finish_reason":null}))),
            text().prop_map(move |t| chunk(json!({"index":0,"delta":{"reasoning_content":t},"finish_reason":null}))),
            text().prop_map(move |t| chunk(json!({"index":0,"delta":{"reasoning":t,"content":null}}))),
            (text(), text()).prop_map(move |(r, t)| chunk(json!({"index":0,"delta":{"reasoning":r,"content":t}}))),
            text().prop_map(move |t| chunk(json!({"index":1,"delta":{"content":t}}))),
            text().prop_map(move |t| chunk(json!({"index":10,"delta":{"content":t}}))),
            text().prop_map(move |t| chunk(json!({"delta":{"content":t}}))),
            text().prop_map(move |t| chunk(json!({"index":0,"delta":{"refusal":t}}))),
            // `\u` escapes, white space around keys, a truncated object.
            Just(r#"{"choices":[{"index" : 0 ,"delta":{"content":"\u00e9\n\""}}]}"#.to_owned()),
            Just(r#" { "choices" : [ { "index" :0, "delta" : { "content" : "x" } } ] } "#.to_owned()),
            Just(r#"{"choices":[{"index":0,"delta":{"content":"cut"}}]"#.to_owned()),
            Just(r#""content":"not an object""#.to_owned()),
            Just(chunk(json!({"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":"{}"}}]}}))),
            Just(chunk(json!({"index":0,"delta":{},"finish_reason":"length"}))),
            Just(json!({"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}).to_string()),
        ]
    }

    proptest! {
        #[test]
        fn the_scanner_path_writes_what_the_full_parse_writes(
            events in prop::collection::vec(event(), 0..12),
            done in any::<bool>(),
        ) {
            let mut events = events;
            if done {
                events.push("[DONE]".to_owned());
            }
            prop_assert_eq!(run(true, &events), run(false, &events));
        }
    }

    fn items() -> Vec<Item> {
        let text = "t \"q\" \\ \n \u{1} é";
        let part = |refusal| Part {
            refusal,
            text: text.into(),
        };
        [
            Body::Message {
                parts: vec![part(false), part(true)],
            },
            Body::Message { parts: vec![] },
            Body::Reasoning {
                text: text.into(),
                summary: true,
            },
            Body::Reasoning {
                text: text.into(),
                summary: false,
            },
            Body::FunctionCall {
                call_id: "call_\"1".into(),
                name: "f".into(),
                namespace: Some("ns".into()),
                arguments: "{\"a\":1}".into(),
            },
            Body::CustomToolCall {
                call_id: "c".into(),
                name: "apply_patch".into(),
                namespace: None,
                input: text.into(),
            },
        ]
        .into_iter()
        .map(|body| Item {
            id: "msg_\"x_0".into(),
            status: Status::Incomplete,
            body,
        })
        .collect()
    }

    #[test]
    fn hand_written_events_match_the_serialized_event() {
        let items = items();
        let text = "plain \"q\" \n é";
        let mut events = vec![
            Event {
                kind: "response.output_text.done",
                output_index: Some(3),
                item_id: Some("msg_1"),
                content_index: Some(12),
                text: Some(text),
                logprobs: Some([]),
                ..Event::default()
            },
            Event {
                kind: "response.reasoning_summary_part.added",
                summary_index: Some(0),
                part: Some(PartView::SummaryText { text: "" }),
                ..Event::default()
            },
            Event {
                kind: "response.function_call_arguments.done",
                output_index: Some(0),
                item_id: Some("fc_1"),
                name: Some("f\"n"),
                arguments: Some(text),
                ..Event::default()
            },
            Event {
                kind: "response.custom_tool_call_input.done",
                input: Some(text),
                refusal: Some(text),
                delta: Some(text),
                ..Event::default()
            },
            Event {
                kind: "error",
                code: Some("server_error"),
                message: Some(text),
                param: Some(()),
                error: Some(ErrorBody {
                    kind: "server_error",
                    code: "c",
                    message: text,
                    param: (),
                }),
                ..Event::default()
            },
        ];
        for part in [
            PartView::of(false, text),
            PartView::of(true, text),
            PartView::ReasoningText { text },
            PartView::SummaryText { text },
        ] {
            events.push(Event {
                kind: "response.content_part.done",
                output_index: Some(1),
                item_id: Some("msg_1"),
                content_index: Some(0),
                part: Some(part),
                ..Event::default()
            });
        }
        for item in &items {
            for view in [item.added(), item.whole()] {
                events.push(Event {
                    kind: "response.output_item.done",
                    output_index: Some(10),
                    item: Some(view),
                    ..Event::default()
                });
            }
        }
        for (i, mut event) in events.into_iter().enumerate() {
            event.sequence_number = i as u64 * 7;
            let mut written = BytesMut::new();
            event.write(&mut written);
            let mut serde = BytesMut::new();
            crate::sse::write_named(&mut serde, event.kind, &event);
            assert_eq!(
                std::str::from_utf8(&written).expect("utf-8"),
                std::str::from_utf8(&serde).expect("utf-8")
            );
        }
    }

    #[test]
    fn hand_written_deltas_match_the_serialized_event() {
        // One cache for every case: each must see its own bytes, not the last one's.
        let mut cache = DeltaBytes::default();
        for delta in ["plain", "quote \" backslash \\ newline \n \u{1f} é"] {
            for (kind, at, logprobs) in [
                ("response.output_text.delta", Some(Within::Content(3)), true),
                (
                    "response.reasoning_summary_text.delta",
                    Some(Within::Summary(0)),
                    false,
                ),
                ("response.function_call_arguments.delta", None, false),
            ] {
                // Twice: the second from the kept bytes, with the next number.
                let (mut written, mut seq) = (BytesMut::new(), 9);
                let (mut serde, mut serde_seq) = (BytesMut::new(), 9);
                for _ in 0..2 {
                    write_delta(
                        &mut written,
                        &mut seq,
                        &mut cache,
                        Delta {
                            kind,
                            output_index: 12,
                            item_id: "msg_\"1",
                            at,
                            delta: Frag::Plain(delta),
                            logprobs,
                        },
                    );
                    write(
                        &mut serde,
                        &mut serde_seq,
                        Event {
                            kind,
                            output_index: Some(12),
                            item_id: Some("msg_\"1"),
                            content_index: match at {
                                Some(Within::Content(i)) => Some(i),
                                _ => None,
                            },
                            summary_index: match at {
                                Some(Within::Summary(i)) => Some(i),
                                _ => None,
                            },
                            delta: Some(delta),
                            logprobs: logprobs.then_some([]),
                            ..Event::default()
                        },
                    );
                }
                assert_eq!(written, serde);
            }
        }
    }
}
