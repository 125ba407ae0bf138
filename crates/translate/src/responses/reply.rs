//! A whole chat.completion → a Responses `response` object: reasoning, then the message, then
//! each tool call as its own output item, with the request's echoed parameters and usage.
//! `output_text` is not written: it is an SDK convenience the SDKs compute from `output`
//! (openai-python's `Response.output_text` property), not part of the wire object.

use bytes::{Bytes, BytesMut};

use super::wire::{self, Body, Item, Part, ResponseView};
use super::ReplyContext;
use crate::chat::Completion;
use crate::TranslateError;

/// Translates a chat.completions answer body into a Responses object body.
///
/// Fails only when `chat` is not a chat.completion at all; the server should answer that as
/// the upstream's fault (502), not the client's.
pub fn from_chat_response(chat: &[u8], ctx: &ReplyContext) -> Result<Bytes, TranslateError> {
    let completion = Completion::read(chat).ok_or_else(|| TranslateError {
        message: "the upstream's answer is not a chat.completion".to_owned(),
        param: None,
    })?;
    let choice = completion
        .choices
        .iter()
        .find(|c| c.index == 0)
        .or(completion.choices.first());
    let outcome = wire::outcome(choice.and_then(|c| c.finish_reason.as_deref()));
    let status = wire::item_status(outcome);
    let mut items = Vec::new();
    if let Some(choice) = choice {
        let message = &choice.message;
        if let Some(text) = message.reasoning_text() {
            items.push(Item {
                id: ctx.item_id("rs", items.len()),
                status,
                body: Body::Reasoning {
                    text: text.to_owned(),
                    summary: ctx.summary,
                },
            });
        }
        let mut parts = Vec::new();
        if let Some(text) = message.content.as_deref().filter(|t| !t.is_empty()) {
            parts.push(Part {
                refusal: false,
                text: text.to_owned(),
            });
        }
        if let Some(text) = message.refusal.as_deref().filter(|t| !t.is_empty()) {
            parts.push(Part {
                refusal: true,
                text: text.to_owned(),
            });
        }
        if !parts.is_empty() {
            items.push(Item {
                id: ctx.item_id("msg", items.len()),
                status,
                body: Body::Message { parts },
            });
        }
        let calls = if ctx.single_call {
            &message.tool_calls[..message.tool_calls.len().min(1)]
        } else {
            &message.tool_calls[..]
        };
        for call in calls {
            let arguments = call
                .function
                .arguments
                .as_ref()
                .map_or_else(String::new, |a| a.as_str().to_owned());
            let mut item = ctx.call_item(
                items.len(),
                call.id.as_deref(),
                &call.function.name,
                arguments,
                status,
            );
            if let Body::FunctionCall { arguments, .. } = &mut item.body {
                wire::function_arguments(arguments);
            }
            items.push(item);
        }
    }
    let response = ResponseView {
        ctx,
        outcome,
        output: &items,
        usage: completion.usage.as_ref(),
        error: None,
    };
    let mut out = BytesMut::with_capacity(1024 + chat.len());
    response.write(&mut out);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::responses::reply_context;
    use serde_json::{json, Value};
    use tollgate_core::JsonObject;

    fn ctx(body: Value) -> ReplyContext {
        let obj = JsonObject::parse(body.to_string().as_bytes()).expect("json");
        let mut ctx = reply_context(&obj, "resp_t".into(), "client-model".into()).expect("ctx");
        ctx.created_at = 7;
        ctx
    }

    fn answer(chat: Value, ctx: &ReplyContext) -> Value {
        let bytes = from_chat_response(chat.to_string().as_bytes(), ctx).expect("translates");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn a_text_answer_with_reasoning_and_usage() {
        let ctx = ctx(
            json!({"model":"m","input":"hi","instructions":"be nice","reasoning":{"summary":"auto"}}),
        );
        let out = answer(
            json!({"id":"c","model":"backend","choices":[{"index":0,"message":{"role":"assistant","content":"Hello","reasoning_content":"think"},"finish_reason":"stop"}],
                   "usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}),
            &ctx,
        );
        assert_eq!(out["id"], "resp_t");
        assert_eq!(out["object"], "response");
        assert_eq!(out["created_at"], 7);
        assert_eq!(out["model"], "client-model");
        assert_eq!(out["status"], "completed");
        assert_eq!(out["instructions"], "be nice");
        assert_eq!(out["error"], Value::Null);
        assert_eq!(out["incomplete_details"], Value::Null);
        assert_eq!(out["parallel_tool_calls"], true);
        assert_eq!(out["tool_choice"], "auto");
        assert_eq!(out["tools"], json!([]));
        assert!(
            out.get("output_text").is_none(),
            "an SDK convenience, not wire"
        );
        assert_eq!(
            out["output"],
            json!([
                {"type":"reasoning","id":"rs_t_0","status":"completed","summary":[{"type":"summary_text","text":"think"}]},
                {"type":"message","id":"msg_t_1","status":"completed","role":"assistant",
                 "content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Hello"}]}
            ])
        );
        assert_eq!(
            out["usage"],
            json!({"input_tokens":3,"input_tokens_details":{"cached_tokens":0,"cache_write_tokens":0},
                   "output_tokens":5,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":8})
        );
    }

    #[test]
    fn tool_calls_keep_the_client_names_and_kinds() {
        let ctx = ctx(json!({"model":"m","input":"x","tools":[
            {"type":"function","name":"exec_command"},
            {"type":"custom","name":"apply_patch"},
            {"type":"namespace","name":"multi_agent_v1","tools":[{"type":"function","name":"spawn_agent"}]}]}));
        let out = answer(
            json!({"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[
                {"id":"call_a","type":"function","function":{"name":"exec_command","arguments":"{\"cmd\":\"ls\"}"}},
                {"id":"call_b","type":"function","function":{"name":"apply_patch","arguments":"{\"input\":\"*** Begin Patch\\n*** End Patch\"}"}},
                {"id":"call_c","type":"function","function":{"name":"multi_agent_v1__spawn_agent","arguments":""}},
                {"type":"function","function":{"name":"invented","arguments":{"k":1}}}]},"finish_reason":"tool_calls"}]}),
            &ctx,
        );
        assert_eq!(
            out["output"],
            json!([
                {"type":"function_call","id":"fc_t_0","status":"completed","call_id":"call_a","name":"exec_command","arguments":"{\"cmd\":\"ls\"}"},
                {"type":"custom_tool_call","id":"ctc_t_1","status":"completed","call_id":"call_b","name":"apply_patch","input":"*** Begin Patch\n*** End Patch"},
                {"type":"function_call","id":"fc_t_2","status":"completed","call_id":"call_c","name":"spawn_agent","namespace":"multi_agent_v1","arguments":"{}"},
                {"type":"function_call","id":"fc_t_3","status":"completed","call_id":"call_t_3","name":"invented","arguments":"{\"k\":1}"}
            ])
        );
        assert_eq!(out["usage"], Value::Null);
    }

    #[test]
    fn length_is_incomplete_and_parallel_false_keeps_one_call() {
        let ctx =
            ctx(json!({"model":"m","input":"x","parallel_tool_calls":false,"max_output_tokens":5}));
        let out = answer(
            json!({"choices":[{"index":0,"message":{"content":"cut","refusal":"no","tool_calls":[
                {"id":"1","function":{"name":"a","arguments":"{}"}},{"id":"2","function":{"name":"b","arguments":"{}"}}]},"finish_reason":"length"}]}),
            &ctx,
        );
        assert_eq!(out["status"], "incomplete");
        assert_eq!(
            out["incomplete_details"],
            json!({"reason":"max_output_tokens"})
        );
        assert_eq!(out["max_output_tokens"], 5);
        assert_eq!(out["parallel_tool_calls"], false);
        let output = out["output"].as_array().expect("output");
        assert_eq!(output.len(), 2, "{output:?}");
        assert_eq!(output[0]["status"], "incomplete");
        assert_eq!(
            output[0]["content"],
            json!([{"type":"output_text","annotations":[],"logprobs":[],"text":"cut"},{"type":"refusal","refusal":"no"}])
        );
        assert_eq!(output[1]["name"], "a");
    }

    #[test]
    fn raw_reasoning_without_a_summary_request_is_reasoning_text() {
        let ctx = ctx(json!({"model":"m","input":"x"}));
        let out = answer(
            json!({"choices":[{"message":{"content":"a","reasoning":"r"},"finish_reason":"content_filter"}]}),
            &ctx,
        );
        assert_eq!(
            out["output"][0],
            json!({"type":"reasoning","id":"rs_t_0","status":"incomplete","summary":[],"content":[{"type":"reasoning_text","text":"r"}]})
        );
        assert_eq!(out["incomplete_details"]["reason"], "content_filter");
    }

    #[test]
    fn junk_is_refused() {
        let ctx = ctx(json!({"model":"m","input":"x"}));
        assert!(from_chat_response(b"<html>", &ctx).is_err());
        let empty = answer(json!({"choices":[]}), &ctx);
        assert_eq!(empty["output"], json!([]));
        assert_eq!(empty["status"], "completed");
    }
}
