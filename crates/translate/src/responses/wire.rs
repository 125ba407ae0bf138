//! The Responses output as both reply translators write it: output items (as the SDK's
//! `ResponseOutputItem` union and Codex's `ResponseItem` read them), the `response` object
//! with the request's echoed parameters, and `usage` with the `*_details` objects the SDK's
//! `ResponseUsage` requires. Serialized with serde structs straight into the output buffer.

use bytes::{BufMut, BytesMut};
#[cfg(test)]
use serde::ser::SerializeMap;
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use tollgate_core::Usage;

use super::tools::Kind;
use super::ReplyContext;

/// An item's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    InProgress,
    Completed,
    Incomplete,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Incomplete => "incomplete",
        }
    }
}

/// One output item and what it has accumulated so far.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub id: String,
    pub status: Status,
    pub body: Body,
}

#[derive(Debug, Clone)]
pub(super) enum Body {
    /// An assistant message: its `output_text` and `refusal` parts, in order.
    Message { parts: Vec<Part> },
    /// Reasoning text, reported as one summary part (`summary`) or one `reasoning_text`
    /// content part.
    Reasoning { text: String, summary: bool },
    FunctionCall {
        call_id: String,
        name: String,
        namespace: Option<String>,
        arguments: String,
    },
    CustomToolCall {
        call_id: String,
        name: String,
        namespace: Option<String>,
        input: String,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Part {
    pub refusal: bool,
    pub text: String,
}

impl Item {
    /// The length of the text the item holds (for sizing buffers).
    pub fn text_len(&self) -> usize {
        match &self.body {
            Body::Message { parts } => parts.iter().map(|p| p.text.len()).sum(),
            Body::Reasoning { text, .. } => text.len(),
            Body::FunctionCall { arguments, .. } => arguments.len(),
            Body::CustomToolCall { input, .. } => input.len(),
        }
    }

    /// The item as `response.output_item.added` shows it: in progress, nothing accumulated
    /// (empty `content`/`summary`, `""` arguments), as OpenAI sends it.
    pub fn added(&self) -> View<'_> {
        self.view(true)
    }

    /// The item with everything it holds.
    pub fn whole(&self) -> View<'_> {
        self.view(false)
    }

    fn view(&self, added: bool) -> View<'_> {
        let id = self.id.as_str();
        let status = if added {
            Status::InProgress.as_str()
        } else {
            self.status.as_str()
        };
        match &self.body {
            Body::Message { parts } => View::Message {
                id,
                status,
                role: "assistant",
                content: Parts(if added { &[] } else { parts }),
            },
            Body::Reasoning { text, summary } => {
                let texts = |kind| Texts {
                    kind,
                    text: (!added).then_some(text.as_str()),
                };
                if *summary {
                    View::Reasoning {
                        id,
                        status,
                        summary: texts("summary_text"),
                        content: None,
                    }
                } else {
                    View::Reasoning {
                        id,
                        status,
                        summary: Texts {
                            kind: "summary_text",
                            text: None,
                        },
                        content: Some(texts("reasoning_text")),
                    }
                }
            }
            Body::FunctionCall {
                call_id,
                name,
                namespace,
                arguments,
            } => View::FunctionCall {
                id,
                status,
                call_id,
                name,
                namespace: namespace.as_deref(),
                arguments: if added { "" } else { arguments },
            },
            Body::CustomToolCall {
                call_id,
                name,
                namespace,
                input,
            } => View::CustomToolCall {
                id,
                status,
                call_id,
                name,
                namespace: namespace.as_deref(),
                input: if added { "" } else { input },
            },
        }
    }
}

/// An item as JSON.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum View<'a> {
    Message {
        id: &'a str,
        status: &'static str,
        role: &'static str,
        content: Parts<'a>,
    },
    Reasoning {
        id: &'a str,
        status: &'static str,
        summary: Texts<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<Texts<'a>>,
    },
    FunctionCall {
        id: &'a str,
        status: &'static str,
        call_id: &'a str,
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<&'a str>,
        arguments: &'a str,
    },
    CustomToolCall {
        id: &'a str,
        status: &'static str,
        call_id: &'a str,
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<&'a str>,
        input: &'a str,
    },
}

impl View<'_> {
    /// Appends the item as its serde form does (the tests' reference): messages, the item of
    /// every text answer, by hand; the others through serde.
    pub fn write(&self, out: &mut BytesMut) {
        let View::Message {
            id,
            status,
            role,
            content,
        } = self
        else {
            push_json(out, self);
            return;
        };
        out.extend_from_slice(b"{\"type\":\"message\",\"id\":");
        push_json_str(out, id);
        out.extend_from_slice(b",\"status\":");
        push_json_str(out, status);
        out.extend_from_slice(b",\"role\":");
        push_json_str(out, role);
        out.extend_from_slice(b",\"content\":[");
        for (i, part) in content.0.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b",");
            }
            PartView::of(part.refusal, &part.text).write(out);
        }
        out.extend_from_slice(b"]}");
    }
}

/// A message's content parts.
pub(super) struct Parts<'a>(&'a [Part]);

impl Serialize for Parts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for part in self.0 {
            seq.serialize_element(&PartView::of(part.refusal, &part.text))?;
        }
        seq.end()
    }
}

/// One content part: `output_text` (with the `annotations` the SDK requires and empty
/// `logprobs`) or `refusal`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum PartView<'a> {
    OutputText {
        annotations: [(); 0],
        logprobs: [(); 0],
        text: &'a str,
    },
    Refusal {
        refusal: &'a str,
    },
    ReasoningText {
        text: &'a str,
    },
    SummaryText {
        text: &'a str,
    },
}

impl PartView<'_> {
    /// Appends the part as its serde form does (the tests' reference).
    pub fn write(&self, out: &mut BytesMut) {
        let (head, text): (&[u8], &str) = match self {
            PartView::OutputText { text, .. } => (
                b"{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":",
                text,
            ),
            PartView::Refusal { refusal } => (b"{\"type\":\"refusal\",\"refusal\":", refusal),
            PartView::ReasoningText { text } => (b"{\"type\":\"reasoning_text\",\"text\":", text),
            PartView::SummaryText { text } => (b"{\"type\":\"summary_text\",\"text\":", text),
        };
        out.extend_from_slice(head);
        push_json_str(out, text);
        out.extend_from_slice(b"}");
    }
}

impl<'a> PartView<'a> {
    pub fn of(refusal: bool, text: &'a str) -> PartView<'a> {
        if refusal {
            PartView::Refusal { refusal: text }
        } else {
            PartView::OutputText {
                annotations: [],
                logprobs: [],
                text,
            }
        }
    }
}

/// A reasoning item's `summary` or `content`: empty, or one text part of `kind`.
pub(super) struct Texts<'a> {
    kind: &'static str,
    text: Option<&'a str>,
}

impl Serialize for Texts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Text<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            text: &'a str,
        }
        let mut seq = s.serialize_seq(Some(usize::from(self.text.is_some())))?;
        if let Some(text) = self.text {
            seq.serialize_element(&Text {
                kind: self.kind,
                text,
            })?;
        }
        seq.end()
    }
}

/// The overall status of a `response` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    InProgress,
    Completed,
    /// `length` or `content_filter`: `incomplete_details.reason`.
    Incomplete(&'static str),
    Failed,
}

/// A `response` object: identity, status, output, usage, and the echoed request parameters.
pub(super) struct ResponseView<'a> {
    pub ctx: &'a ReplyContext,
    pub outcome: Outcome,
    pub output: &'a [Item],
    pub usage: Option<&'a Usage>,
    /// `(code, message)` of a failed response.
    pub error: Option<(&'a str, &'a str)>,
}

impl ResponseView<'_> {
    /// Appends the object as compact JSON: the same bytes as its serde form (the tests'
    /// reference), written by hand so the echoed parameters are copied from the bytes
    /// [`ReplyContext`] wrote once, not serialized again for each of a stream's three
    /// `response` objects.
    pub fn write(&self, out: &mut BytesMut) {
        let status = match self.outcome {
            Outcome::InProgress => "in_progress",
            Outcome::Completed => "completed",
            Outcome::Incomplete(_) => "incomplete",
            Outcome::Failed => "failed",
        };
        out.extend_from_slice(b"{\"id\":");
        push_json_str(out, &self.ctx.id);
        out.extend_from_slice(b",\"object\":\"response\",\"created_at\":");
        push_u64(out, self.ctx.created_at);
        out.extend_from_slice(b",\"status\":\"");
        out.extend_from_slice(status.as_bytes());
        out.extend_from_slice(b"\",\"error\":");
        match self.error {
            Some((code, message)) => {
                out.extend_from_slice(b"{\"code\":");
                push_json_str(out, code);
                out.extend_from_slice(b",\"message\":");
                push_json_str(out, message);
                out.extend_from_slice(b"}");
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"incomplete_details\":");
        match self.outcome {
            Outcome::Incomplete(reason) => {
                out.extend_from_slice(b"{\"reason\":");
                push_json_str(out, reason);
                out.extend_from_slice(b"}");
            }
            _ => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"model\":");
        push_json_str(out, &self.ctx.model);
        out.extend_from_slice(b",\"output\":[");
        for (i, item) in self.output.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b",");
            }
            item.whole().write(out);
        }
        out.extend_from_slice(b"],");
        out.extend_from_slice(self.ctx.echo.as_bytes());
        out.extend_from_slice(b",\"usage\":");
        match self.usage {
            Some(usage) => write_usage(out, usage),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}");
    }
}

/// The serde form of [`ResponseView::write`], the reference its bytes are tested against.
#[cfg(test)]
impl Serialize for ResponseView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Error<'a> {
            code: &'a str,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct Incomplete {
            reason: &'static str,
        }
        struct Output<'a>(&'a [Item]);
        impl Serialize for Output<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for item in self.0 {
                    seq.serialize_element(&item.whole())?;
                }
                seq.end()
            }
        }
        let status = match self.outcome {
            Outcome::InProgress => "in_progress",
            Outcome::Completed => "completed",
            Outcome::Incomplete(_) => "incomplete",
            Outcome::Failed => "failed",
        };
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("id", &self.ctx.id)?;
        map.serialize_entry("object", "response")?;
        map.serialize_entry("created_at", &self.ctx.created_at)?;
        map.serialize_entry("status", status)?;
        map.serialize_entry(
            "error",
            &self.error.map(|(code, message)| Error { code, message }),
        )?;
        map.serialize_entry(
            "incomplete_details",
            &match self.outcome {
                Outcome::Incomplete(reason) => Some(Incomplete { reason }),
                _ => None,
            },
        )?;
        map.serialize_entry("model", &self.ctx.model)?;
        map.serialize_entry("output", &Output(self.output))?;
        let echo = tollgate_core::JsonObject::parse(format!("{{{}}}", self.ctx.echo).as_bytes())
            .map_err(serde::ser::Error::custom)?;
        for key in echo.keys() {
            let value: Option<&serde_json::value::RawValue> =
                echo.decode(key).map_err(serde::ser::Error::custom)?;
            map.serialize_entry(key, &value)?;
        }
        map.serialize_entry("usage", &self.usage.map(UsageView))?;
        map.end()
    }
}

/// Appends `value` as compact JSON (serde: an item, a string with its escapes).
pub(super) fn push_json<T: Serialize + ?Sized>(out: &mut BytesMut, value: &T) {
    // Serializing plain data (structs of strings and numbers) into memory cannot fail.
    let _ = serde_json::to_writer(out.writer(), value);
}

/// Appends `text` as a JSON string, quoted and escaped as serde_json escapes it. Ids, model
/// names and most text need no escape: those are copied between quotes in one piece.
pub(super) fn push_json_str(out: &mut BytesMut, text: &str) {
    if needs_no_escape(text.as_bytes()) {
        out.reserve(text.len() + 2);
        out.extend_from_slice(b"\"");
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\"");
    } else {
        push_json(out, text);
    }
}

/// Whether `text` holds no byte JSON escapes (a control character, `"` or `\\`). Eight
/// bytes at a time: a stream's text is checked each time an event repeats it. (Each test
/// below is exact for whether some byte of the word matches; a word that matches goes to
/// the byte loop's answer only through the serde path, which is right for any text.)
fn needs_no_escape(text: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Some byte of `w` is below `n` (n ≤ 128).
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGH;
    // Some byte of `w` is `b`.
    let has = |w: u64, b: u8| below(w ^ (ONES * u64::from(b)), 1);
    let mut words = text.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let w = u64::from_le_bytes(bytes);
        if below(w, 0x20) | has(w, b'"') | has(w, b'\\') != 0 {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// Appends `n` in decimal.
pub(super) fn push_u64(out: &mut BytesMut, n: u64) {
    // Indexes and most sequence numbers: one digit.
    if n < 10 {
        // Below 10: the cast keeps it.
        out.extend_from_slice(&[b'0' + n as u8]);
        return;
    }
    out.extend_from_slice(tollgate_core::Decimal::new(n).as_bytes());
}

/// Appends usage as [`UsageView`] serializes it.
fn write_usage(out: &mut BytesMut, u: &Usage) {
    let total = if u.total_tokens == 0 {
        u.prompt_tokens + u.completion_tokens
    } else {
        u.total_tokens
    };
    out.extend_from_slice(b"{\"input_tokens\":");
    push_u64(out, u.prompt_tokens);
    out.extend_from_slice(
        b",\"input_tokens_details\":{\"cached_tokens\":0,\"cache_write_tokens\":0},\"output_tokens\":",
    );
    push_u64(out, u.completion_tokens);
    out.extend_from_slice(b",\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":");
    push_u64(out, total);
    out.extend_from_slice(b"}");
}

/// Chat usage as Responses usage (the reference of [`write_usage`]). Chat's `prompt_tokens_details`/`completion_tokens_details`
/// are not read by `tollgate_core::Usage`, so cached and reasoning counts are reported as 0.
#[cfg(test)]
struct UsageView<'a>(&'a Usage);

#[cfg(test)]
impl Serialize for UsageView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct InputDetails {
            cached_tokens: u64,
            cache_write_tokens: u64,
        }
        #[derive(Serialize)]
        struct OutputDetails {
            reasoning_tokens: u64,
        }
        #[derive(Serialize)]
        struct Wire {
            input_tokens: u64,
            input_tokens_details: InputDetails,
            output_tokens: u64,
            output_tokens_details: OutputDetails,
            total_tokens: u64,
        }
        let u = self.0;
        let total = if u.total_tokens == 0 {
            u.prompt_tokens + u.completion_tokens
        } else {
            u.total_tokens
        };
        Wire {
            input_tokens: u.prompt_tokens,
            input_tokens_details: InputDetails {
                cached_tokens: 0,
                cache_write_tokens: 0,
            },
            output_tokens: u.completion_tokens,
            output_tokens_details: OutputDetails {
                reasoning_tokens: 0,
            },
            total_tokens: total,
        }
        .serialize(s)
    }
}

/// What a chat `finish_reason` makes of the response.
pub(super) fn outcome(finish_reason: Option<&str>) -> Outcome {
    match finish_reason {
        Some("length") => Outcome::Incomplete("max_output_tokens"),
        Some("content_filter") => Outcome::Incomplete("content_filter"),
        _ => Outcome::Completed,
    }
}

/// The status of items closed by a response's end.
pub(super) fn item_status(outcome: Outcome) -> Status {
    match outcome {
        Outcome::Completed => Status::Completed,
        _ => Status::Incomplete,
    }
}

impl ReplyContext {
    /// The item a chat tool call becomes: a `function_call` with the client's name and
    /// namespace, or a `custom_tool_call` whose `input` is the one string argument. A name
    /// the request never declared (the model made it up) is passed on as a function.
    pub(super) fn call_item(
        &self,
        index: usize,
        call_id: Option<&str>,
        chat_name: &str,
        arguments: String,
        status: Status,
    ) -> Item {
        let tool = self.tools.by_chat_name(chat_name);
        let (name, namespace) = match tool {
            Some(t) => (t.name.clone(), t.namespace.clone()),
            None => (chat_name.to_owned(), None),
        };
        let call_id = call_id
            .filter(|c| !c.is_empty())
            .map_or_else(|| self.item_id("call", index), str::to_owned);
        if tool.is_some_and(|t| t.kind == Kind::Custom) {
            Item {
                id: self.item_id("ctc", index),
                status,
                body: Body::CustomToolCall {
                    call_id,
                    name,
                    namespace,
                    input: custom_input(arguments),
                },
            }
        } else {
            Item {
                id: self.item_id("fc", index),
                status,
                // Normalized when the call is closed (`function_arguments`): a live call's
                // arguments are still growing here.
                body: Body::FunctionCall {
                    call_id,
                    name,
                    namespace,
                    arguments,
                },
            }
        }
    }

    /// Whether a call to `chat_name` becomes a `custom_tool_call`.
    pub(super) fn is_custom(&self, chat_name: &str) -> bool {
        self.tools
            .by_chat_name(chat_name)
            .is_some_and(|t| t.kind == Kind::Custom)
    }
}

/// Function arguments as clients parse them: `{}` for a call without arguments (servers
/// send `""` or nothing; Codex and the SDK parse the text as JSON). Returns the text to append
/// (the empty case), so a stream can send it as a delta too.
pub(super) fn function_arguments(arguments: &mut String) -> Option<&'static str> {
    // Only the empty text: a stream has already sent any other as deltas.
    if arguments.is_empty() {
        arguments.push_str("{}");
        Some("{}")
    } else {
        None
    }
}

/// A freeform tool's input from the arguments of the function the upstream saw:
/// `{"input":"…"}`. Models that answer with the raw text (or a JSON string) are taken at
/// their word.
pub(super) fn custom_input(arguments: String) -> String {
    #[derive(Deserialize)]
    struct Arguments {
        input: String,
    }
    if let Ok(a) = serde_json::from_str::<Arguments>(&arguments) {
        return a.input;
    }
    if let Ok(s) = serde_json::from_str::<String>(&arguments) {
        return s;
    }
    arguments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_input_reads_the_argument_or_takes_the_text() {
        assert_eq!(custom_input(r#"{"input":"a\nb"}"#.into()), "a\nb");
        assert_eq!(custom_input(r#""raw""#.into()), "raw");
        assert_eq!(custom_input("*** Begin Patch".into()), "*** Begin Patch");
        assert_eq!(custom_input(r#"{"other":1}"#.into()), r#"{"other":1}"#);
        for (given, appended, result) in [
            ("", Some("{}"), "{}"),
            (" ", None, " "),
            (r#"{"a":1}"#, None, r#"{"a":1}"#),
        ] {
            let mut arguments = given.to_owned();
            assert_eq!(function_arguments(&mut arguments), appended);
            assert_eq!(arguments, result);
        }
    }

    proptest::proptest! {
        #[test]
        fn strings_are_written_as_serde_writes_them(text in "\\PC*|[\\x00-\\x7f]*|[a-z\\x1f\\x20\\x7f\\x80é\"\\\\]{0,40}") {
            let reference = text
                .bytes()
                .all(|b| b >= 0x20 && b != b'"' && b != b'\\');
            proptest::prop_assert_eq!(needs_no_escape(text.as_bytes()), reference);
            let mut out = BytesMut::new();
            push_json_str(&mut out, &text);
            proptest::prop_assert_eq!(
                std::str::from_utf8(&out).expect("utf-8"),
                serde_json::to_string(&text).expect("json")
            );
        }
    }

    #[test]
    fn written_response_objects_match_their_serde_form() {
        let bodies = [
            r#"{"model":"m","input":"x"}"#,
            r#"{"model":"m","input":"x","instructions":"be \"nice\"\n","temperature":0.5,"metadata":{"a":"b"},"tools":[{"type":"function","name":"f"}],"user":"u","previous_response_id":null}"#,
        ];
        let items = [
            Item {
                id: "rs_1".into(),
                status: Status::Completed,
                body: Body::Reasoning {
                    text: "t\u{1}é".into(),
                    summary: true,
                },
            },
            Item {
                id: "msg_1".into(),
                status: Status::Incomplete,
                body: Body::Message {
                    parts: vec![Part {
                        refusal: false,
                        text: "hi \"there\"".into(),
                    }],
                },
            },
        ];
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 18_446_744_073_709_551,
            total_tokens: 0,
        };
        for body in bodies {
            let body = tollgate_core::JsonObject::parse(body.as_bytes()).expect("json");
            for (id, model) in [("resp_1", "m"), ("resp_\"x", "a/b\u{7f}日")] {
                let mut ctx =
                    super::super::reply_context(&body, id.into(), model.into()).expect("ctx");
                for created_at in [0, 1_700_000_000, u64::MAX] {
                    ctx.created_at = created_at;
                    for outcome in [
                        Outcome::InProgress,
                        Outcome::Completed,
                        Outcome::Incomplete("max_output_tokens"),
                        Outcome::Failed,
                    ] {
                        for output in [&items[..0], &items[..]] {
                            for usage in [None, Some(&usage)] {
                                for error in [None, Some(("server_error", "it \"broke\"\n"))] {
                                    let view = ResponseView {
                                        ctx: &ctx,
                                        outcome,
                                        output,
                                        usage,
                                        error,
                                    };
                                    let mut written = BytesMut::new();
                                    view.write(&mut written);
                                    let serde = serde_json::to_vec(&view).expect("json");
                                    assert_eq!(
                                        std::str::from_utf8(&written).expect("utf-8"),
                                        std::str::from_utf8(&serde).expect("utf-8")
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn added_items_are_empty_and_whole_items_full() {
        let item = Item {
            id: "msg_1".into(),
            status: Status::Completed,
            body: Body::Message {
                parts: vec![Part {
                    refusal: false,
                    text: "hi".into(),
                }],
            },
        };
        assert_eq!(
            serde_json::to_string(&item.added()).expect("json"),
            r#"{"type":"message","id":"msg_1","status":"in_progress","role":"assistant","content":[]}"#
        );
        assert_eq!(
            serde_json::to_string(&item.whole()).expect("json"),
            r#"{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"hi"}]}"#
        );
        let reasoning = Item {
            id: "rs_1".into(),
            status: Status::Completed,
            body: Body::Reasoning {
                text: "t".into(),
                summary: false,
            },
        };
        assert_eq!(
            serde_json::to_string(&reasoning.added()).expect("json"),
            r#"{"type":"reasoning","id":"rs_1","status":"in_progress","summary":[],"content":[]}"#
        );
        assert_eq!(
            serde_json::to_string(&reasoning.whole()).expect("json"),
            r#"{"type":"reasoning","id":"rs_1","status":"completed","summary":[],"content":[{"type":"reasoning_text","text":"t"}]}"#
        );
    }
}
