//! Placeholder until the Messages translator lands (built on branch wip-anthropic): the
//! signatures the server is wired against. Every function here refuses.

use bytes::{Bytes, BytesMut};
use tollgate_core::JsonObject;

use crate::{ChatTarget, Failure, StreamTranslator, TranslateError};

pub const PING: &[u8] = b"event: ping\ndata: {\"type\": \"ping\"}\n\n";

pub fn to_chat(_body: &JsonObject, _target: &ChatTarget) -> Result<JsonObject, TranslateError> {
    Err(TranslateError::new(
        "",
        "the Messages translator is not built yet",
    ))
}

pub fn estimate_input_tokens(body: &JsonObject) -> u64 {
    (body.to_bytes().len() as u64 / 4).max(1)
}

pub struct ReplyContext {
    pub id: String,
    pub model: String,
}

pub fn reply_context(_body: &JsonObject, id: String, model: String) -> ReplyContext {
    ReplyContext { id, model }
}

pub fn from_chat_response(_chat: &[u8], _ctx: &ReplyContext) -> Result<Bytes, TranslateError> {
    Err(TranslateError::new(
        "",
        "the Messages translator is not built yet",
    ))
}

pub struct ChatToMessages;

impl ChatToMessages {
    pub fn new(_ctx: ReplyContext) -> Self {
        ChatToMessages
    }
}

impl StreamTranslator for ChatToMessages {
    fn event(&mut self, _data: &[u8], _out: &mut BytesMut) {}
    fn finish(&mut self, _out: &mut BytesMut) {}
    fn fail(&mut self, _failure: &Failure<'_>, _out: &mut BytesMut) {}
}

pub fn error_body(status: u16, message: &str) -> (u16, Bytes) {
    let body =
        serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}});
    (status, Bytes::from(body.to_string()))
}

pub fn error_from_openai(status: u16, body: &[u8]) -> (u16, Bytes) {
    error_body(status, &String::from_utf8_lossy(body))
}

pub fn clamp_max_tokens(_body: &mut JsonObject, _default: Option<u64>, _cap: Option<u64>) {}
