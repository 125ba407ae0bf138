//! A Messages event stream → a `chat.completion.chunk` stream.
//!
//! The chunks follow OpenAI's grammar, which the OpenAI SDKs' stream accumulators rely on:
//! the first chunk carries `role`; a tool call's first fragment carries its `id`, `type` and
//! `function.name` (with empty arguments), later fragments only argument text under the same
//! `index`; exactly one chunk carries a `finish_reason`; the usage chunk (no choices), when
//! the client asked for it with `stream_options.include_usage`, comes after it; `[DONE]` ends
//! a complete stream and nothing follows it. A broken stream ends with `data: {"error":…}`
//! and no `[DONE]`.
//!
//! Each upstream event is parsed once into one flat struct ([`Event`]); chunks are written
//! from borrowed text.

use bytes::BytesMut;
use serde::Serialize;
use tollgate_core::error::openai_error_body;

use super::error::{error_object, kind_and_code};
use super::reply::{arguments_text, UsageOut};
use super::wire::{finish_reason, Event, Usage};
use super::ChatReplyContext;
use crate::sse::{write_data, write_done};
use crate::{Failure, StreamTranslator};

/// Turns one Messages stream into the chat chunks of the client's request.
pub struct MessagesToChat {
    ctx: ChatReplyContext,
    role_sent: bool,
    /// The blocks opened so far, by their Anthropic index (a message has few: a linear search
    /// from the newest is the fastest lookup).
    blocks: Vec<(u32, Open)>,
    /// The chat `index` the next tool call gets: tool calls count from 0 in the order they
    /// open, whatever text or thinking blocks sit between them.
    next_tool: u32,
    stop_reason: Option<String>,
    prompt_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    /// The finish chunk (and the usage chunk) went out.
    finished: bool,
    /// `[DONE]` or an error went out: the stream is over for the client.
    closed: bool,
}

/// What an open Anthropic block turns into.
enum Open {
    Text,
    Thinking,
    Tool {
        index: u32,
        /// Bytes of argument text sent so far.
        sent: usize,
        /// The input the block opened with, when it was not the usual empty `{}`: sent at the
        /// block's end if no fragment followed (server-side tools arrive whole).
        opened_with: Option<String>,
    },
    /// Redacted thinking, server tool results …: nothing for a chat client.
    Other,
}

impl MessagesToChat {
    pub fn new(ctx: ChatReplyContext) -> Self {
        MessagesToChat {
            ctx,
            role_sent: false,
            blocks: Vec::new(),
            next_tool: 0,
            stop_reason: None,
            prompt_tokens: None,
            cached_tokens: None,
            completion_tokens: None,
            finished: false,
            closed: false,
        }
    }

    fn chunk(&self, out: &mut BytesMut, delta: DeltaOut<'_>, finish_reason: Option<&str>) {
        write_data(
            out,
            &ChunkOut {
                id: &self.ctx.id,
                object: "chat.completion.chunk",
                created: self.ctx.created,
                model: &self.ctx.model,
                choices: &[ChoiceOut {
                    index: 0,
                    delta,
                    logprobs: None,
                    finish_reason,
                }],
                usage: None,
            },
        );
    }

    /// The first chunk of every stream names the role (OpenAI sends it with empty content).
    fn role(&mut self, out: &mut BytesMut) {
        if self.role_sent {
            return;
        }
        self.role_sent = true;
        self.chunk(
            out,
            DeltaOut {
                role: Some("assistant"),
                content: Some(""),
                ..DeltaOut::default()
            },
            None,
        );
    }

    fn text(&mut self, out: &mut BytesMut, text: &str) {
        if text.is_empty() {
            return;
        }
        self.role(out);
        self.chunk(
            out,
            DeltaOut {
                content: Some(text),
                ..DeltaOut::default()
            },
            None,
        );
    }

    fn reasoning(&mut self, out: &mut BytesMut, text: &str) {
        if text.is_empty() {
            return;
        }
        self.role(out);
        self.chunk(
            out,
            DeltaOut {
                reasoning_content: Some(text),
                ..DeltaOut::default()
            },
            None,
        );
    }

    fn tool_fragment(&self, out: &mut BytesMut, index: u32, arguments: &str) {
        self.chunk(
            out,
            DeltaOut {
                tool_calls: Some([ToolCallOut {
                    index,
                    id: None,
                    kind: None,
                    function: FunctionOut {
                        name: None,
                        arguments,
                    },
                }]),
                ..DeltaOut::default()
            },
            None,
        );
    }

    fn open(&mut self, index: u32) -> Option<&mut Open> {
        self.blocks
            .iter_mut()
            .rev()
            .find(|(i, _)| *i == index)
            .map(|(_, open)| open)
    }

    fn note_usage(&mut self, usage: &Usage) {
        if let Some(p) = usage.prompt_tokens() {
            self.prompt_tokens = Some(p);
        }
        if usage.cache_read_input_tokens.is_some() {
            self.cached_tokens = usage.cache_read_input_tokens;
        }
        // Counts are cumulative: a later report holds the earlier one.
        if let Some(o) = usage.output_tokens {
            self.completion_tokens = Some(self.completion_tokens.map_or(o, |c| c.max(o)));
        }
    }

    /// The finish chunk, then the usage chunk when asked for; once.
    fn end_message(&mut self, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.role(out);
        let reason = finish_reason(self.stop_reason.as_deref());
        self.chunk(out, DeltaOut::default(), Some(reason));
        if self.ctx.include_usage {
            let usage = UsageOut::new(
                self.prompt_tokens.unwrap_or(0),
                self.completion_tokens.unwrap_or(0),
                self.cached_tokens,
            );
            write_data(
                out,
                &ChunkOut {
                    id: &self.ctx.id,
                    object: "chat.completion.chunk",
                    created: self.ctx.created,
                    model: &self.ctx.model,
                    choices: &[],
                    usage: Some(usage),
                },
            );
        }
    }

    fn block_start(&mut self, out: &mut BytesMut, event: Event<'_>) {
        let (Some(index), Some(block)) = (event.index, event.content_block) else {
            return;
        };
        let open = match &*block.kind {
            "text" => {
                self.text(out, block.text.as_deref().unwrap_or_default());
                Open::Text
            }
            "thinking" => {
                self.reasoning(out, block.thinking.as_deref().unwrap_or_default());
                Open::Thinking
            }
            "tool_use" => {
                self.role(out);
                let tool = self.next_tool;
                self.next_tool += 1;
                self.chunk(
                    out,
                    DeltaOut {
                        tool_calls: Some([ToolCallOut {
                            index: tool,
                            id: Some(block.id.as_deref().unwrap_or_default()),
                            kind: Some("function"),
                            function: FunctionOut {
                                name: Some(block.name.as_deref().unwrap_or_default()),
                                arguments: "",
                            },
                        }]),
                        ..DeltaOut::default()
                    },
                    None,
                );
                let opened_with = block
                    .input
                    .map(|raw| raw.get())
                    .filter(|text| {
                        let t = text.trim();
                        t != "{}" && t != "null" && !t.is_empty()
                    })
                    .map(str::to_owned);
                Open::Tool {
                    index: tool,
                    sent: 0,
                    opened_with,
                }
            }
            _ => Open::Other,
        };
        self.blocks.push((index, open));
    }

    fn block_delta(&mut self, out: &mut BytesMut, event: Event<'_>) {
        let Some(delta) = event.delta else {
            return;
        };
        match delta.kind.as_deref() {
            Some("text_delta") => self.text(out, delta.text.as_deref().unwrap_or_default()),
            Some("thinking_delta") => {
                self.reasoning(out, delta.thinking.as_deref().unwrap_or_default())
            }
            Some("input_json_delta") => {
                let fragment = delta.partial_json.as_deref().unwrap_or_default();
                if fragment.is_empty() {
                    return;
                }
                // Arguments only for a call whose id and name went out.
                let Some(index) = event.index else { return };
                let Some(Open::Tool { index, sent, .. }) = self.open(index) else {
                    return;
                };
                *sent += fragment.len();
                let index = *index;
                self.tool_fragment(out, index, fragment);
            }
            // `signature_delta` (thinking's signature), `citations_delta`: nothing to say.
            _ => {}
        }
    }

    fn block_stop(&mut self, out: &mut BytesMut, event: Event<'_>) {
        let Some(index) = event.index else { return };
        let Some(Open::Tool {
            index,
            sent,
            opened_with,
        }) = self.open(index)
        else {
            return;
        };
        if *sent > 0 {
            return;
        }
        // A call that got no fragment still needs JSON arguments: clients parse them.
        let index = *index;
        let whole = opened_with.take();
        *sent = 1;
        self.tool_fragment(out, index, whole.as_deref().unwrap_or(arguments_text(None)));
    }

    fn message_delta(&mut self, event: Event<'_>) {
        if let Some(reason) = event.delta.and_then(|d| d.stop_reason) {
            self.stop_reason = Some(reason.0.into_owned());
        }
        if let Some(usage) = event.usage {
            self.note_usage(&usage);
        }
    }
}

impl StreamTranslator for MessagesToChat {
    fn event(&mut self, data: &[u8], out: &mut BytesMut) {
        if self.closed {
            return;
        }
        let Ok(event) = serde_json::from_slice::<Event<'_>>(data) else {
            // Not a Messages event (a stray comment-like line): nothing to translate.
            return;
        };
        match &*event.kind {
            "message_start" => {
                if let Some(usage) = event.message.as_ref().and_then(|m| m.usage) {
                    self.note_usage(&usage);
                }
                self.role(out);
            }
            "content_block_start" => self.block_start(out, event),
            "content_block_delta" => self.block_delta(out, event),
            "content_block_stop" => self.block_stop(out, event),
            "message_delta" => self.message_delta(event),
            "message_stop" => self.end_message(out),
            "error" => {
                // The relay usually ends the stream through `fail` on an error event; fed one
                // here, it is the same ending.
                let (_, body) = error_object(event.error.as_ref(), data);
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&body);
                out.extend_from_slice(b"\n\n");
                self.closed = true;
            }
            // `ping`, and events newer than this translator.
            _ => {}
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        if self.closed {
            return;
        }
        self.end_message(out);
        write_done(out);
        self.closed = true;
    }

    fn fail(&mut self, failure: &Failure<'_>, out: &mut BytesMut) {
        if self.closed {
            return;
        }
        let (kind, _) = kind_and_code(failure.status);
        let body = openai_error_body(failure.message, kind, None, failure.code);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\n\n");
        self.closed = true;
    }
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChoiceOut<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Default, Serialize)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallOut<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}
