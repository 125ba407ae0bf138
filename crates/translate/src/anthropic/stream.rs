//! chat.completions stream → Messages event stream.
//!
//! The Messages grammar allows one content block open at a time, each index opened and closed
//! once, indices counting up from 0. A chat stream has no such order: reasoning, text and the
//! fragments of several tool calls may arrive in any mix, and some servers interleave the
//! fragments of parallel calls. So fragments go out at once when they extend the open block,
//! and wait in a queue otherwise; the open block is closed when the next queued fragment
//! needs another one — except a tool call whose arguments are not yet a whole JSON value,
//! which stays open (closing it would cut its `input` short: LiteLLM #25321, and a second
//! `content_block_stop` made Claude Code run the tool twice: #37273). When a tool block
//! opens, every queued fragment of that call goes out with it, so its `input` is whole and
//! in order.
//!
//! Deltas are written in full as they come: the first text after a thinking block is never
//! folded into `content_block_start` and lost (LiteLLM #30765). The end (`message_delta`,
//! `message_stop`) waits for [`StreamTranslator::finish`], since the usage chunk may come
//! after the `finish_reason` chunk.
//!
//! Cost: a plain text or reasoning chunk is read without a parse (scan.rs) and its fragment
//! copied, still escaped, into a hand-written delta; every other chunk takes one full parse.

use std::collections::VecDeque;

use bytes::BytesMut;
use tollgate_core::Usage;

use super::errors::classify;
use super::events::{
    write_delta, BlockOut, DeltaKind, DeltaUsageOut, ErrorOut, Event, Frag, Input, MessageDeltaOut,
    MessageOut, UsageOut,
};
use super::reply::{matched_stop, stop_reason, tool_use_id, ReplyContext};
use super::scan::Scanner;
use super::text::text_tokens;
use crate::chat::{Chunk, ToolCallDelta};
use crate::{Failure, StreamTranslator};

/// Translates one chat.completions stream into the Messages events of one answer.
#[derive(Debug)]
pub struct ChatToMessages {
    ctx: ReplyContext,
    /// `message_start` was written.
    started: bool,
    /// `message_stop` or `error` was written: nothing may follow.
    ended: bool,
    open: Open,
    /// The index the next block gets.
    next_index: u32,
    /// Tool calls in the order they first appeared.
    calls: Vec<Call>,
    /// Fragments waiting for their block, in arrival order, JSON-escaped.
    queue: VecDeque<(Kind, String)>,
    finish_reason: Option<String>,
    stop_sequence: Option<String>,
    usage: Option<Usage>,
    /// Output tokens estimated from what was written, for backends that report no usage.
    output_estimate: u64,
    /// Reads plain text chunks without a parse.
    scanner: Scanner,
}

/// The block currently open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Block { kind: Kind, index: u32 },
}

/// What a fragment extends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Thinking,
    Text,
    /// A tool call, by its position in `calls`.
    Tool(usize),
}

/// One tool call of the answer.
#[derive(Debug)]
struct Call {
    /// The chat stream's `index` for it.
    upstream: u32,
    id: Option<String>,
    name: Option<String>,
    /// Its arguments so far, as a JSON scanner sees them.
    shape: JsonShape,
    /// Its block was opened (and so can never be opened again).
    opened: bool,
    /// Some argument text was written into its block.
    wrote_arguments: bool,
}

impl ChatToMessages {
    pub fn new(ctx: ReplyContext) -> Self {
        ChatToMessages {
            ctx,
            started: false,
            ended: false,
            open: Open::None,
            next_index: 0,
            calls: Vec::new(),
            queue: VecDeque::new(),
            finish_reason: None,
            stop_sequence: None,
            usage: None,
            output_estimate: 0,
            scanner: Scanner::default(),
        }
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let message = MessageOut::new(
            &self.ctx.id,
            &self.ctx.model,
            UsageOut::new(self.ctx.input_tokens.get().max(1), 0),
        );
        Event::MessageStart { message }.write(out);
    }

    /// The call a fragment belongs to. A fragment with an id names its call (some servers
    /// reuse `index` 0 for every call); without one it extends the latest call with its
    /// `index`, or its position in the chunk when the server sends no index.
    fn call_for(&mut self, delta: &ToolCallDelta<'_>, position: usize) -> usize {
        let upstream = delta.index.unwrap_or(position as u32);
        let id = delta.id.as_deref().filter(|id| !id.is_empty());
        let found = match id {
            Some(id) => self.calls.iter().position(|c| c.id.as_deref() == Some(id)),
            None => self.calls.iter().rposition(|c| c.upstream == upstream),
        };
        let at = match found {
            Some(at) => at,
            // A new id at an index whose call has an id already: a new call.
            None => {
                self.calls.push(Call {
                    upstream,
                    id: None,
                    name: None,
                    shape: JsonShape::default(),
                    opened: false,
                    wrote_arguments: false,
                });
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[at];
        if let (None, Some(id)) = (&call.id, id) {
            call.id = Some(id.to_owned());
        }
        if let Some(name) = delta
            .function
            .as_ref()
            .and_then(|f| f.name.as_deref())
            .filter(|n| !n.is_empty())
        {
            if call.name.is_none() {
                call.name = Some(name.to_owned());
            }
        }
        at
    }

    /// Takes one fragment: written now when it extends the open block, queued otherwise.
    /// Tool arguments come as plain text: their JSON shape is followed as they arrive.
    fn push(&mut self, kind: Kind, text: Frag<'_>, out: &mut BytesMut) {
        if let (Kind::Tool(c), Frag::Plain(args)) = (kind, text) {
            self.calls[c].shape.feed(args);
        }
        match (self.open, kind) {
            // The open tool call takes its fragments at once: whatever of it was queued went
            // out when its block opened. Text and thinking keep arrival order.
            (Open::Block { kind: open, index }, _)
                if open == kind && (matches!(kind, Kind::Tool(_)) || self.queue.is_empty()) =>
            {
                self.delta(kind, index, text, out);
            }
            (_, Kind::Tool(c)) if self.calls[c].opened => {
                // More arguments for a call whose block is closed: its JSON looked whole when
                // the block closed, so this can only be trailing white space.
            }
            _ => self.enqueue(kind, text),
        }
        self.drain(false, out);
    }

    fn enqueue(&mut self, kind: Kind, text: Frag<'_>) {
        if let Some((last, queued)) = self.queue.back_mut() {
            if *last == kind {
                text.push_escaped(queued);
                return;
            }
        }
        if text.is_empty() && !matches!(kind, Kind::Tool(_)) {
            return;
        }
        // An empty tool fragment still holds the call's place in the order of blocks.
        if text.is_empty() && self.queue.iter().any(|(k, _)| *k == kind) {
            return;
        }
        let mut queued = String::new();
        text.push_escaped(&mut queued);
        self.queue.push_back((kind, queued));
    }

    /// Opens blocks for queued fragments while the open block may close. `finishing` lifts
    /// the wait for tool arguments and tool names: the stream is over.
    fn drain(&mut self, finishing: bool, out: &mut BytesMut) {
        loop {
            if let Open::Block {
                kind: Kind::Tool(c),
                ..
            } = self.open
            {
                if !finishing && !self.calls[c].shape.is_whole() {
                    return;
                }
            }
            let Some(&(kind, _)) = self.queue.front() else {
                return;
            };
            if let Kind::Tool(c) = kind {
                // A block opens with the tool's name; wait for the fragment that carries it.
                if !finishing && self.calls[c].name.is_none() {
                    return;
                }
            }
            let Some((kind, text)) = self.queue.pop_front() else {
                return;
            };
            let index = match self.open {
                Open::Block { kind: open, index } if open == kind => index,
                _ => {
                    self.close(out);
                    self.open_block(kind, out)
                }
            };
            self.delta(kind, index, Frag::Escaped(&text), out);
            if let Kind::Tool(_) = kind {
                // The rest of this call's queued arguments, in order, behind what just went.
                let mut rest = String::new();
                self.queue.retain(|(k, t)| {
                    if *k == kind {
                        rest.push_str(t);
                        false
                    } else {
                        true
                    }
                });
                self.delta(kind, index, Frag::Escaped(&rest), out);
            }
        }
    }

    fn open_block(&mut self, kind: Kind, out: &mut BytesMut) -> u32 {
        let index = self.next_index;
        self.next_index += 1;
        self.open = Open::Block { kind, index };
        let generated;
        let content_block = match kind {
            Kind::Text => BlockOut::Text { text: "" },
            Kind::Thinking => BlockOut::Thinking {
                thinking: "",
                signature: "",
            },
            Kind::Tool(c) => {
                let call = &mut self.calls[c];
                call.opened = true;
                let id = match &call.id {
                    Some(id) => id.as_str(),
                    None => {
                        generated = tool_use_id(&self.ctx.id, c);
                        generated.as_str()
                    }
                };
                BlockOut::ToolUse {
                    id,
                    name: call.name.as_deref().unwrap_or_default(),
                    input: Input::Empty,
                }
            }
        };
        Event::ContentBlockStart {
            index,
            content_block,
        }
        .write(out);
        index
    }

    fn delta(&mut self, kind: Kind, index: u32, text: Frag<'_>, out: &mut BytesMut) {
        let (Frag::Escaped(t) | Frag::Plain(t)) = text;
        if t.is_empty() {
            return;
        }
        // Escapes count a little extra: an estimate, replaced by the backend's count.
        self.output_estimate += text_tokens(t);
        let kind = match kind {
            Kind::Text => DeltaKind::Text,
            Kind::Thinking => DeltaKind::Thinking,
            Kind::Tool(c) => {
                self.calls[c].wrote_arguments = true;
                DeltaKind::InputJson
            }
        };
        write_delta(out, index, kind, text);
    }

    fn close(&mut self, out: &mut BytesMut) {
        let Open::Block { kind, index } = self.open else {
            return;
        };
        if let Kind::Tool(c) = kind {
            if !self.calls[c].wrote_arguments {
                // A call with no arguments (or whose arguments never came): its `input` is
                // `{}`, said as a delta so that clients accumulating deltas see valid JSON.
                self.delta(kind, index, Frag::Escaped("{}"), out);
            }
        }
        Event::ContentBlockStop { index }.write(out);
        self.open = Open::None;
    }
}

impl StreamTranslator for ChatToMessages {
    fn event(&mut self, data: &[u8], out: &mut BytesMut) {
        if self.ended || data.trim_ascii() == b"[DONE]" {
            return;
        }
        self.start(out);
        // Most chunks are one text or reasoning fragment: read without a parse and copied out
        // still escaped. Everything else takes the one full parse.
        if let Some(fragments) = self.scanner.fragments(data) {
            if let (true, Some(thinking)) = (self.ctx.thinking, fragments.reasoning) {
                if !thinking.is_empty() {
                    self.push(Kind::Thinking, Frag::Escaped(thinking), out);
                }
            }
            if let Some(text) = fragments.content.filter(|t| !t.is_empty()) {
                self.push(Kind::Text, Frag::Escaped(text), out);
            }
            return;
        }
        let Some(chunk) = Chunk::read(data) else {
            return;
        };
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        // Messages has one answer: a second choice (`n` > 1) has nowhere to go.
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else {
            return;
        };
        let delta = &choice.delta;
        if self.ctx.thinking {
            if let Some(thinking) = delta.reasoning_text() {
                self.push(Kind::Thinking, Frag::Plain(thinking), out);
            }
        }
        for text in [delta.content.as_deref(), delta.refusal.as_deref()]
            .into_iter()
            .flatten()
        {
            if !text.is_empty() {
                self.push(Kind::Text, Frag::Plain(text), out);
            }
        }
        for (position, call) in delta.tool_calls.iter().enumerate() {
            let c = self.call_for(call, position);
            let args = call
                .function
                .as_ref()
                .and_then(|f| f.arguments.as_ref())
                .map_or("", |a| a.as_str());
            self.push(Kind::Tool(c), Frag::Plain(args), out);
        }
        if let Some(reason) = choice.finish_reason.as_deref() {
            if reason == "stop" {
                self.stop_sequence = matched_stop(data, &self.ctx);
            }
            self.finish_reason = Some(reason.to_owned());
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        self.start(out);
        self.drain(true, out);
        self.close(out);
        let (stop_reason, stop_sequence) = stop_reason(
            self.finish_reason.as_deref(),
            !self.calls.is_empty(),
            self.stop_sequence.as_deref(),
        );
        let usage = match self.usage {
            Some(u) => DeltaUsageOut {
                input_tokens: (u.prompt_tokens > 0).then_some(u.prompt_tokens),
                output_tokens: u.completion_tokens,
            },
            None => DeltaUsageOut {
                input_tokens: None,
                output_tokens: self.output_estimate.max(1),
            },
        };
        Event::MessageDelta {
            delta: MessageDeltaOut {
                stop_reason,
                stop_sequence,
            },
            usage,
        }
        .write(out);
        Event::MessageStop.write(out);
        self.ended = true;
    }

    fn fail(&mut self, failure: &Failure<'_>, out: &mut BytesMut) {
        if self.ended {
            return;
        }
        // No `message_stop`: a broken answer must not read as a finished one. The SDKs raise
        // on an `error` event whatever came before it.
        let (_, kind) = classify(failure.status);
        Event::Error {
            error: ErrorOut {
                kind,
                message: failure.message,
            },
        }
        .write(out);
        self.ended = true;
    }
}

/// Follows a JSON value's nesting as its text arrives, to tell when tool arguments are a whole
/// value, without parsing them.
#[derive(Debug, Default)]
struct JsonShape {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// A whole top-level object, array or string has been seen.
    closed: bool,
}

impl JsonShape {
    fn feed(&mut self, text: &str) {
        for b in text.bytes() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    self.closed |= self.depth == 0;
                }
                continue;
            }
            match b {
                b'{' | b'[' => {
                    self.depth += 1;
                    self.closed = false;
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.closed |= self.depth == 0;
                }
                b'"' => {
                    self.in_string = true;
                    self.closed = false;
                }
                _ => {}
            }
        }
    }

    fn is_whole(&self) -> bool {
        self.closed && self.depth == 0 && !self.in_string
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_tells_whole_values() {
        let mut s = JsonShape::default();
        for (piece, whole) in [
            ("", false),
            ("{\"a\":", false),
            ("\"x}\\\"", false),
            ("\"", false),
            ("}", true),
            (" ", true),
        ] {
            s.feed(piece);
            assert_eq!(s.is_whole(), whole, "after {piece:?}");
        }
        let mut s = JsonShape::default();
        s.feed(r#"{"a":[1,{"b":2}]}"#);
        assert!(s.is_whole());
    }
}
