//! A checker for Responses event streams, written from the protocol reference (openai-python's
//! `types/responses/*_event.py`, its `ResponseStreamState` accumulator, and Codex's SSE reader)
//! rather than from the translator, so the translator's tests can catch its mistakes:
//!
//! ```text
//! response.created → response.in_progress →
//!   ( output_item.added → (content_part.added → deltas → .done → content_part.done)* /
//!     (reasoning_summary_part.added → deltas → .done → part.done)* /
//!     (arguments or input deltas → .done) → output_item.done )*
//! → response.completed | response.incomplete | [error] response.failed
//! ```
//!
//! One item is open at a time; `output_index`, `content_index` and `summary_index` count up
//! from 0 in order (the SDK indexes its snapshot with them); `sequence_number` is 0, 1, 2 …;
//! each `event:` line names the data's `type`; every `.done`, every `output_item.done` and the
//! terminal `response.output` repeat exactly what the deltas built; nothing follows the
//! terminal event. SSE comments (keepalives) are skipped.

use std::collections::HashMap;

use serde_json::Value;

/// What a valid stream said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// `completed`, `incomplete` or `failed`.
    pub status: String,
    pub response_id: String,
    pub model: String,
    /// The output items in order, as their deltas built them.
    pub items: Vec<SummaryItem>,
    pub usage: Option<SummaryUsage>,
    /// `incomplete_details.reason` of an incomplete response.
    pub incomplete_reason: Option<String>,
    /// `response.error.message` of a failed response.
    pub error: Option<String>,
    /// Events seen (comments not counted).
    pub events: usize,
}

/// One output item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummaryItem {
    /// `message`, `reasoning`, `function_call` or `custom_tool_call`.
    pub kind: String,
    pub id: String,
    /// The status in `output_item.done`; `in_progress` if it never closed.
    pub status: String,
    /// A message's `output_text`, or a reasoning item's summary or reasoning text.
    pub text: String,
    /// A message's refusal text.
    pub refusal: String,
    /// A call's tool name.
    pub name: String,
    pub namespace: Option<String>,
    pub call_id: String,
    /// A function call's arguments, or a custom tool call's input.
    pub arguments: String,
}

/// `usage` of the terminal response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SummaryUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
}

/// Checks a whole Responses SSE stream.
pub fn check(stream: &[u8]) -> Result<Summary, String> {
    let text = std::str::from_utf8(stream).map_err(|e| format!("stream is not UTF-8: {e}"))?;
    let mut checker = Checker::default();
    let mut rest = text;
    let mut number = 0usize;
    while !rest.is_empty() {
        let Some(end) = rest.find("\n\n") else {
            return Err(format!(
                "stream ends inside an event (no blank line after {rest:?})"
            ));
        };
        let block = &rest[..end];
        rest = &rest[end + 2..];
        let mut name = None;
        let mut data: Option<String> = None;
        for line in block.split('\n') {
            if line.starts_with(':') {
                continue;
            }
            if let Some(v) = line.strip_prefix("event:") {
                if name.replace(v.strip_prefix(' ').unwrap_or(v)).is_some() {
                    return Err(format!("event {number}: two event: lines"));
                }
            } else if let Some(v) = line.strip_prefix("data:") {
                let v = v.strip_prefix(' ').unwrap_or(v);
                match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(v);
                    }
                    None => data = Some(v.to_owned()),
                }
            } else if !line.is_empty() {
                return Err(format!("event {number}: unexpected line {line:?}"));
            }
        }
        match (name, data) {
            (None, None) => continue,
            (Some(name), Some(data)) => {
                let value: Value = serde_json::from_str(&data)
                    .map_err(|e| format!("event {number} ({name}): data is not JSON: {e}"))?;
                checker
                    .event(name, &value)
                    .map_err(|e| format!("event {number} ({name}): {e}"))?;
                number += 1;
            }
            (None, Some(data)) => {
                return Err(format!(
                    "event {number}: data without an event: line: {data}"
                ))
            }
            (Some(name), None) => return Err(format!("event {number} ({name}): no data")),
        }
    }
    checker.finish()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    #[default]
    Start,
    Created,
    Running,
    /// After an `error` event: only `response.failed` may follow.
    Errored,
    Done,
}

#[derive(Default)]
struct Checker {
    phase: Phase,
    seq: Option<u64>,
    summary: Summary,
    /// Per item: its parts (kind, text, text done, part done) and whether its arguments or
    /// input were closed.
    tracks: Vec<Track>,
    open: bool,
    /// Each closed item as its `output_item.done` showed it, for the terminal `output`.
    done_items: HashMap<String, Value>,
}

#[derive(Default)]
struct Track {
    parts: Vec<PartTrack>,
    summaries: Vec<PartTrack>,
    arguments_done: bool,
}

struct PartTrack {
    kind: String,
    text: String,
    text_done: bool,
    done: bool,
}

fn field<'v>(v: &'v Value, key: &str) -> Result<&'v Value, String> {
    v.get(key).ok_or_else(|| format!("missing {key}"))
}

fn string<'v>(v: &'v Value, key: &str) -> Result<&'v str, String> {
    field(v, key)?
        .as_str()
        .ok_or_else(|| format!("{key} is not a string"))
}

fn index(v: &Value, key: &str) -> Result<usize, String> {
    field(v, key)?
        .as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| format!("{key} is not an integer"))
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} is {got:?}, expected {want:?}"))
    }
}

impl Checker {
    fn event(&mut self, name: &str, v: &Value) -> Result<(), String> {
        self.summary.events += 1;
        let kind = string(v, "type")?;
        expect_eq("type", kind, name)?;
        let seq = field(v, "sequence_number")?
            .as_u64()
            .ok_or("sequence_number is not an integer")?;
        let want = self.seq.map_or(0, |s| s + 1);
        expect_eq("sequence_number", seq, want)?;
        self.seq = Some(seq);
        if self.phase == Phase::Done {
            return Err("event after the terminal event".into());
        }
        if self.phase == Phase::Errored && kind != "response.failed" {
            return Err("only response.failed may follow an error event".into());
        }
        match kind {
            "response.created" => {
                expect_eq("phase", self.phase, Phase::Start)?;
                let r = self.response(v, "in_progress")?;
                expect_eq(
                    "response.output",
                    r["output"].as_array().map(Vec::len),
                    Some(0),
                )?;
                self.summary.response_id = string(r, "id")?.to_owned();
                self.summary.model = string(r, "model")?.to_owned();
                self.phase = Phase::Created;
            }
            "response.in_progress" => {
                expect_eq("phase", self.phase, Phase::Created)?;
                self.response(v, "in_progress")?;
                self.phase = Phase::Running;
            }
            "response.output_item.added" => self.item_added(v)?,
            "response.output_item.done" => self.item_done(v)?,
            "response.content_part.added" => self.part_added(v, false)?,
            "response.reasoning_summary_part.added" => self.part_added(v, true)?,
            "response.output_text.delta" => self.part_delta(v, "output_text", false)?,
            "response.refusal.delta" => self.part_delta(v, "refusal", false)?,
            "response.reasoning_text.delta" => self.part_delta(v, "reasoning_text", false)?,
            "response.reasoning_summary_text.delta" => self.part_delta(v, "summary_text", true)?,
            "response.output_text.done" => self.text_done(v, "output_text", "text", false)?,
            "response.refusal.done" => self.text_done(v, "refusal", "refusal", false)?,
            "response.reasoning_text.done" => self.text_done(v, "reasoning_text", "text", false)?,
            "response.reasoning_summary_text.done" => {
                self.text_done(v, "summary_text", "text", true)?
            }
            "response.content_part.done" => self.part_done(v, false)?,
            "response.reasoning_summary_part.done" => self.part_done(v, true)?,
            "response.function_call_arguments.delta" => self.call_delta(v, "function_call")?,
            "response.custom_tool_call_input.delta" => self.call_delta(v, "custom_tool_call")?,
            "response.function_call_arguments.done" => {
                self.call_done(v, "function_call", "arguments")?
            }
            "response.custom_tool_call_input.done" => {
                self.call_done(v, "custom_tool_call", "input")?
            }
            "error" => {
                if !matches!(self.phase, Phase::Running) {
                    return Err("error event outside a running response".into());
                }
                string(v, "message")?;
                self.phase = Phase::Errored;
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.terminal(kind, v)?
            }
            other => return Err(format!("unknown event type {other}")),
        }
        Ok(())
    }

    /// The `response` of a lifecycle event, with the fields the SDK's `Response` requires.
    fn response<'v>(&self, v: &'v Value, status: &str) -> Result<&'v Value, String> {
        let r = field(v, "response")?;
        if !r.is_object() {
            return Err("response is not an object".into());
        }
        expect_eq("response.object", string(r, "object")?, "response")?;
        expect_eq("response.status", string(r, "status")?, status)?;
        string(r, "id")?;
        string(r, "model")?;
        field(r, "created_at")?
            .as_f64()
            .ok_or("response.created_at is not a number")?;
        field(r, "output")?
            .as_array()
            .ok_or("response.output is not an array")?;
        field(r, "tools")?
            .as_array()
            .ok_or("response.tools is not an array")?;
        field(r, "tool_choice")?;
        field(r, "parallel_tool_calls")?
            .as_bool()
            .ok_or("response.parallel_tool_calls is not a boolean")?;
        if self.phase != Phase::Start {
            expect_eq("response.id", string(r, "id")?, &self.summary.response_id)?;
        }
        Ok(r)
    }

    fn running(&self) -> Result<(), String> {
        expect_eq("phase", self.phase, Phase::Running)
    }

    /// The open item, checked against the event's `output_index` and `item_id`.
    fn open_item(&self, v: &Value, with_id: bool) -> Result<usize, String> {
        self.running()?;
        if !self.open {
            return Err("no output item is open".into());
        }
        let at = self.summary.items.len() - 1;
        expect_eq("output_index", index(v, "output_index")?, at)?;
        if with_id {
            expect_eq("item_id", string(v, "item_id")?, &self.summary.items[at].id)?;
        }
        Ok(at)
    }

    fn item_added(&mut self, v: &Value) -> Result<(), String> {
        self.running()?;
        if self.open {
            return Err("an output item is added while another is open".into());
        }
        expect_eq(
            "output_index",
            index(v, "output_index")?,
            self.summary.items.len(),
        )?;
        let item = field(v, "item")?;
        let kind = string(item, "type")?;
        let id = string(item, "id")?;
        if id.is_empty() || self.summary.items.iter().any(|i| i.id == id) {
            return Err(format!("item id {id:?} is empty or repeated"));
        }
        expect_eq("item.status", string(item, "status")?, "in_progress")?;
        let mut summary = SummaryItem {
            kind: kind.to_owned(),
            id: id.to_owned(),
            status: "in_progress".into(),
            ..SummaryItem::default()
        };
        match kind {
            "message" => {
                expect_eq("item.role", string(item, "role")?, "assistant")?;
                expect_eq(
                    "item.content",
                    field(item, "content")?,
                    &Value::Array(vec![]),
                )?;
            }
            "reasoning" => {
                expect_eq(
                    "item.summary",
                    field(item, "summary")?,
                    &Value::Array(vec![]),
                )?;
                if let Some(content) = item.get("content") {
                    expect_eq("item.content", content, &Value::Array(vec![]))?;
                }
            }
            "function_call" | "custom_tool_call" => {
                let key = if kind == "function_call" {
                    "arguments"
                } else {
                    "input"
                };
                expect_eq(&format!("item.{key}"), string(item, key)?, "")?;
                summary.name = string(item, "name")?.to_owned();
                summary.call_id = string(item, "call_id")?.to_owned();
                if summary.name.is_empty() || summary.call_id.is_empty() {
                    return Err("a call needs a name and a call_id".into());
                }
                summary.namespace = match item.get("namespace") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(ns)) => Some(ns.clone()),
                    Some(other) => return Err(format!("item.namespace is {other}")),
                };
            }
            other => return Err(format!("unknown item type {other}")),
        }
        self.summary.items.push(summary);
        self.tracks.push(Track::default());
        self.open = true;
        Ok(())
    }

    fn part_added(&mut self, v: &Value, summary: bool) -> Result<(), String> {
        let at = self.open_item(v, true)?;
        let item_kind = self.summary.items[at].kind.as_str();
        let part = field(v, "part")?;
        let kind = string(part, "type")?.to_owned();
        let allowed: &[&str] = match (item_kind, summary) {
            ("message", false) => &["output_text", "refusal"],
            ("reasoning", false) => &["reasoning_text"],
            ("reasoning", true) => &["summary_text"],
            _ => &[],
        };
        if !allowed.contains(&kind.as_str()) {
            return Err(format!("a {kind} part in a {item_kind} item"));
        }
        let track = &mut self.tracks[at];
        let (list, key) = if summary {
            (&mut track.summaries, "summary_index")
        } else {
            (&mut track.parts, "content_index")
        };
        if list.last().is_some_and(|p| !p.done) {
            return Err("a part is added while another is open".into());
        }
        expect_eq(key, index(v, key)?, list.len())?;
        let text_key = if kind == "refusal" { "refusal" } else { "text" };
        expect_eq("part text", string(part, text_key)?, "")?;
        if kind == "output_text" {
            field(part, "annotations")?
                .as_array()
                .ok_or("part.annotations is not an array")?;
        }
        list.push(PartTrack {
            kind,
            text: String::new(),
            text_done: false,
            done: false,
        });
        Ok(())
    }

    /// The open part of kind `kind`, checked against the event's index.
    fn open_part(
        &mut self,
        v: &Value,
        kind: &str,
        summary: bool,
    ) -> Result<&mut PartTrack, String> {
        let at = self.open_item(v, true)?;
        let track = &mut self.tracks[at];
        let (list, key) = if summary {
            (&mut track.summaries, "summary_index")
        } else {
            (&mut track.parts, "content_index")
        };
        let last = list.len().checked_sub(1).ok_or("no part is open")?;
        expect_eq(key, index(v, key)?, last)?;
        let part = &mut list[last];
        if part.done {
            return Err("the part is already done".into());
        }
        expect_eq("part type", part.kind.as_str(), kind)?;
        Ok(part)
    }

    fn part_delta(&mut self, v: &Value, kind: &str, summary: bool) -> Result<(), String> {
        let delta = string(v, "delta")?.to_owned();
        if kind == "output_text" {
            field(v, "logprobs")?
                .as_array()
                .ok_or("logprobs is not an array")?;
        }
        let part = self.open_part(v, kind, summary)?;
        if part.text_done {
            return Err("delta after the text's done event".into());
        }
        part.text.push_str(&delta);
        Ok(())
    }

    fn text_done(&mut self, v: &Value, kind: &str, key: &str, summary: bool) -> Result<(), String> {
        let text = string(v, key)?.to_owned();
        let part = self.open_part(v, kind, summary)?;
        if part.text_done {
            return Err("text done twice".into());
        }
        expect_eq("done text", text.as_str(), part.text.as_str())?;
        part.text_done = true;
        Ok(())
    }

    fn part_done(&mut self, v: &Value, summary: bool) -> Result<(), String> {
        let p = field(v, "part")?;
        let kind = string(p, "type")?.to_owned();
        let text_key = if kind == "refusal" { "refusal" } else { "text" };
        let text = string(p, text_key)?.to_owned();
        let part = self.open_part(v, &kind, summary)?;
        if !part.text_done {
            return Err("part done before its text's done event".into());
        }
        expect_eq("part text", text.as_str(), part.text.as_str())?;
        part.done = true;
        Ok(())
    }

    fn call_delta(&mut self, v: &Value, kind: &str) -> Result<(), String> {
        let at = self.open_item(v, true)?;
        expect_eq("item type", self.summary.items[at].kind.as_str(), kind)?;
        if self.tracks[at].arguments_done {
            return Err("delta after the arguments' done event".into());
        }
        let delta = string(v, "delta")?;
        self.summary.items[at].arguments.push_str(delta);
        Ok(())
    }

    fn call_done(&mut self, v: &Value, kind: &str, key: &str) -> Result<(), String> {
        let at = self.open_item(v, true)?;
        let item = &self.summary.items[at];
        expect_eq("item type", item.kind.as_str(), kind)?;
        if self.tracks[at].arguments_done {
            return Err("done twice".into());
        }
        expect_eq(key, string(v, key)?, item.arguments.as_str())?;
        if kind == "function_call" {
            expect_eq("name", string(v, "name")?, item.name.as_str())?;
        }
        self.tracks[at].arguments_done = true;
        Ok(())
    }

    fn item_done(&mut self, v: &Value) -> Result<(), String> {
        let at = self.open_item(v, false)?;
        let item = field(v, "item")?;
        expect_eq("item.id", string(item, "id")?, &self.summary.items[at].id)?;
        let track = &self.tracks[at];
        if track.parts.iter().chain(&track.summaries).any(|p| !p.done) {
            return Err("item done with a part still open".into());
        }
        let status = string(item, "status")?.to_owned();
        if !matches!(status.as_str(), "completed" | "incomplete") {
            return Err(format!("item done with status {status}"));
        }
        let summary = &mut self.summary.items[at];
        match summary.kind.as_str() {
            "message" => {
                expect_eq(
                    "item.content",
                    parts_of(field(item, "content")?)?,
                    texts(&track.parts),
                )?;
                for part in &track.parts {
                    if part.kind == "refusal" {
                        summary.refusal.push_str(&part.text);
                    } else {
                        summary.text.push_str(&part.text);
                    }
                }
            }
            "reasoning" => {
                expect_eq(
                    "item.summary",
                    parts_of(field(item, "summary")?)?,
                    texts(&track.summaries),
                )?;
                let content = match item.get("content") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(content) => parts_of(content)?,
                };
                expect_eq("item.content", content, texts(&track.parts))?;
                for part in track.summaries.iter().chain(&track.parts) {
                    summary.text.push_str(&part.text);
                }
            }
            kind => {
                if !track.arguments_done {
                    return Err(format!(
                        "{kind} done without its arguments' or input's done event"
                    ));
                }
                let key = if kind == "function_call" {
                    "arguments"
                } else {
                    "input"
                };
                expect_eq(key, string(item, key)?, summary.arguments.as_str())?;
                expect_eq("name", string(item, "name")?, summary.name.as_str())?;
                expect_eq(
                    "call_id",
                    string(item, "call_id")?,
                    summary.call_id.as_str(),
                )?;
            }
        }
        summary.status = status;
        self.done_items.insert(summary.id.clone(), item.clone());
        self.open = false;
        Ok(())
    }

    fn terminal(&mut self, kind: &str, v: &Value) -> Result<(), String> {
        let status = kind.trim_start_matches("response.");
        if kind == "response.failed" {
            if !matches!(self.phase, Phase::Running | Phase::Errored) {
                return Err("response.failed before the response ran".into());
            }
        } else {
            self.running()?;
            if self.open {
                return Err(format!("{kind} with an output item still open"));
            }
        }
        let r = self.response(v, status)?;
        let output = field(r, "output")?
            .as_array()
            .ok_or("response.output is not an array")?;
        expect_eq(
            "response.output length",
            output.len(),
            self.summary.items.len(),
        )?;
        for (got, item) in output.iter().zip(&self.summary.items) {
            expect_eq("output item id", string(got, "id")?, item.id.as_str())?;
            expect_eq("output item type", string(got, "type")?, item.kind.as_str())?;
            if item.status != "in_progress" {
                expect_eq(
                    "output item status",
                    string(got, "status")?,
                    item.status.as_str(),
                )?;
                expect_eq("output item", Some(got), self.done_items.get(&item.id))?;
            }
        }
        match status {
            "incomplete" => {
                let reason = field(r, "incomplete_details")?
                    .get("reason")
                    .and_then(Value::as_str)
                    .ok_or("incomplete_details.reason is missing")?;
                self.summary.incomplete_reason = Some(reason.to_owned());
            }
            "failed" => {
                let message = field(r, "error")?
                    .get("message")
                    .and_then(Value::as_str)
                    .ok_or("response.error.message is missing")?;
                self.summary.error = Some(message.to_owned());
            }
            _ => expect_eq("response.error", field(r, "error")?, &Value::Null)?,
        }
        self.summary.usage = usage(field(r, "usage")?)?;
        self.summary.status = status.to_owned();
        self.phase = Phase::Done;
        Ok(())
    }

    fn finish(self) -> Result<Summary, String> {
        if self.phase != Phase::Done {
            return Err(format!(
                "the stream ended without a terminal event (after {} events)",
                self.summary.events
            ));
        }
        Ok(self.summary)
    }
}

/// Tracked parts as `(type, text)`.
fn texts(parts: &[PartTrack]) -> Vec<(String, String)> {
    parts
        .iter()
        .map(|p| (p.kind.clone(), p.text.clone()))
        .collect()
}

/// An item's `content` or `summary` as `(type, text)`; a refusal's text is its `refusal`.
fn parts_of(v: &Value) -> Result<Vec<(String, String)>, String> {
    v.as_array()
        .ok_or("parts are not an array")?
        .iter()
        .map(|p| {
            let kind = string(p, "type")?;
            let key = if kind == "refusal" { "refusal" } else { "text" };
            Ok((kind.to_owned(), string(p, key)?.to_owned()))
        })
        .collect()
}

/// `usage` with the fields the SDK's `ResponseUsage` requires.
fn usage(v: &Value) -> Result<Option<SummaryUsage>, String> {
    if v.is_null() {
        return Ok(None);
    }
    let number = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("usage.{key} is not an integer"))
    };
    let input = field(v, "input_tokens_details")?;
    number(input, "cached_tokens")?;
    let output = field(v, "output_tokens_details")?;
    number(output, "reasoning_tokens")?;
    Ok(Some(SummaryUsage {
        input_tokens: number(v, "input_tokens")?,
        output_tokens: number(v, "output_tokens")?,
        total_tokens: number(v, "total_tokens")?,
    }))
}
