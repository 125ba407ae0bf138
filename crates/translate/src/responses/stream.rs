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
use crate::chat::Chunk;
use crate::{sse, Failure, StreamTranslator};

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
    response: Option<ResponseView<'a>>,
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

/// Writes `event` with the next sequence number. A free function over the counter, so an
/// event may borrow the translator's items while it is written.
fn write(out: &mut BytesMut, seq: &mut u64, mut event: Event<'_>) {
    event.sequence_number = *seq;
    *seq += 1;
    sse::write_named(out, event.kind, &event);
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
        }
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        for kind in ["response.created", "response.in_progress"] {
            let response = ResponseView {
                ctx: &self.ctx,
                outcome: Outcome::InProgress,
                output: &[],
                usage: None,
                error: None,
            };
            write(
                out,
                &mut self.seq,
                Event {
                    kind,
                    response: Some(response),
                    ..Event::default()
                },
            );
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

    fn reasoning_delta(&mut self, out: &mut BytesMut, delta: &str) {
        let Some(index) = self.items.len().checked_sub(1) else {
            return;
        };
        let item = &mut self.items[index];
        let Body::Reasoning { text, summary } = &mut item.body else {
            return;
        };
        text.push_str(delta);
        let event = if *summary {
            Event {
                kind: "response.reasoning_summary_text.delta",
                summary_index: Some(0),
                ..Event::default()
            }
        } else {
            Event {
                kind: "response.reasoning_text.delta",
                content_index: Some(0),
                ..Event::default()
            }
        };
        write(
            out,
            &mut self.seq,
            Event {
                output_index: Some(index),
                item_id: Some(&item.id),
                delta: Some(delta),
                ..event
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

    fn part_delta(&mut self, out: &mut BytesMut, delta: &str) {
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
        part.text.push_str(delta);
        let event = if part.refusal {
            Event {
                kind: "response.refusal.delta",
                ..Event::default()
            }
        } else {
            Event {
                kind: "response.output_text.delta",
                logprobs: Some([]),
                ..Event::default()
            }
        };
        write(
            out,
            &mut self.seq,
            Event {
                output_index: Some(index),
                item_id: Some(&item.id),
                content_index: Some(content_index),
                delta: Some(delta),
                ..event
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

    fn on_reasoning(&mut self, out: &mut BytesMut, text: &str) {
        if self.calls_started {
            match self.trailing.last_mut() {
                Some(Trailing::Reasoning(t)) => t.push_str(text),
                _ => self.trailing.push(Trailing::Reasoning(text.to_owned())),
            }
            return;
        }
        if self.open != Some(Open::Reasoning) {
            self.close_open(out, Status::Completed);
            self.open_reasoning(out);
        }
        self.reasoning_delta(out, text);
    }

    fn on_text(&mut self, out: &mut BytesMut, text: &str, refusal: bool) {
        if self.calls_started {
            match self.trailing.last_mut() {
                Some(Trailing::Text {
                    refusal: r,
                    text: t,
                }) if *r == refusal => t.push_str(text),
                _ => self.trailing.push(Trailing::Text {
                    refusal,
                    text: text.to_owned(),
                }),
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
                    self.part_delta(out, &text);
                }
                Trailing::Reasoning(text) => {
                    self.open_reasoning(out);
                    self.reasoning_delta(out, &text);
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
        write(
            out,
            &mut self.seq,
            Event {
                kind,
                response: Some(response),
                ..Event::default()
            },
        );
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
                self.on_reasoning(out, text);
            }
            if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
                self.on_text(out, text, false);
            }
            if let Some(text) = delta.refusal.as_deref().filter(|t| !t.is_empty()) {
                self.on_text(out, text, true);
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
        write(
            out,
            &mut self.seq,
            Event {
                kind: "response.failed",
                response: Some(response),
                ..Event::default()
            },
        );
        self.ended = true;
    }
}
