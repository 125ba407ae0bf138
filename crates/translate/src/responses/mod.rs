//! Placeholder until the Responses translator lands (built on branch wip-responses): the
//! signatures the server is wired against. Every function here refuses.

use bytes::{Bytes, BytesMut};
use tollgate_core::JsonObject;

use crate::{ChatTarget, Failure, StreamTranslator, TranslateError};

pub fn to_chat(_body: &JsonObject, _target: &ChatTarget) -> Result<JsonObject, TranslateError> {
    Err(TranslateError::new(
        "",
        "the Responses translator is not built yet",
    ))
}

pub struct ReplyContext {
    pub id: String,
    pub model: String,
}

pub fn reply_context(
    _body: &JsonObject,
    id: String,
    model: String,
) -> Result<ReplyContext, TranslateError> {
    Ok(ReplyContext { id, model })
}

pub fn from_chat_response(_chat: &[u8], _ctx: &ReplyContext) -> Result<Bytes, TranslateError> {
    Err(TranslateError::new(
        "",
        "the Responses translator is not built yet",
    ))
}

pub struct ChatToResponses;

impl ChatToResponses {
    pub fn new(_ctx: ReplyContext) -> Self {
        ChatToResponses
    }
}

impl StreamTranslator for ChatToResponses {
    fn event(&mut self, _data: &[u8], _out: &mut BytesMut) {}
    fn finish(&mut self, _out: &mut BytesMut) {}
    fn fail(&mut self, _failure: &Failure<'_>, _out: &mut BytesMut) {}
}
