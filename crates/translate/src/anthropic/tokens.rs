//! A local estimate of a Messages request's input tokens, for `count_tokens` and for
//! `message_start`, which must carry a count before the backend reports one.
//!
//! Method: the text the model will read — system prompt, message text, tool calls' inputs,
//! tool results — is counted with [`text_tokens`] (a quarter token per ASCII byte, one per
//! other character); each message adds 4 tokens for the chat template's framing, each image
//! 1 600 (the most Anthropic bills for one image at its default size), each base64 PDF 1 600
//! per 100 KB. `tools` is counted as its JSON text, unparsed: chat templates show the model
//! the tool definitions as JSON, and half of a Claude Code request is its tool schemas, so
//! reading them costs more than the count is worth. Thinking blocks of past turns are not
//! counted: they are not sent to a chat backend. No tokenizer is loaded: the backend's own
//! count replaces the estimate as soon as it reports one.

use tollgate_core::JsonObject;

use super::messages::{Block, Content, MessageParam};
use super::request::decode;
use super::text::text_tokens;

const PER_MESSAGE: u64 = 4;
const PER_IMAGE: u64 = 1600;
/// Base64 bytes of a PDF counted as one image's worth of tokens.
const PDF_BYTES_PER_IMAGE: u64 = 100 * 1024;
/// The assistant turn's opening the template adds after the last message.
const REPLY_PRIMING: u64 = 3;

/// Estimated input tokens of a Messages request; never 0. A body whose fields cannot be read
/// is estimated from what can be.
pub fn estimate_input_tokens(body: &JsonObject) -> u64 {
    let mut total = REPLY_PRIMING;
    if let Ok(Some(system)) = decode::<Content<'_>>(body, "system") {
        total += PER_MESSAGE + content_tokens(&system);
    }
    if let Ok(Some(messages)) = decode::<Vec<MessageParam<'_>>>(body, "messages") {
        for message in &messages {
            total += PER_MESSAGE + content_tokens(&message.content);
        }
    }
    if let Some(tools) = body.get("tools").filter(|t| t.starts_with('[')) {
        total += text_tokens(tools);
    }
    total.max(1)
}

fn content_tokens(content: &Content<'_>) -> u64 {
    match content {
        Content::Text(t) => text_tokens(t),
        Content::Blocks(blocks) => blocks.iter().map(block_tokens).sum(),
    }
}

fn block_tokens(block: &Block<'_>) -> u64 {
    let nested = || block.content.as_ref().map_or(0, content_tokens);
    match block.kind.as_str() {
        "text" => block.text.map_or(0, |t| text_tokens(t.escaped())),
        "image" => PER_IMAGE,
        "tool_use" => {
            block.name.as_deref().map_or(0, text_tokens)
                + block.input.map_or(0, |input| text_tokens(input.get()))
        }
        "tool_result" | "search_result" | "mid_conv_system" => {
            block.title.as_deref().map_or(0, text_tokens) + nested()
        }
        "tool_reference" => block.tool_name.as_deref().map_or(0, text_tokens),
        "document" => {
            let Some(source) = &block.source else {
                return 0;
            };
            let title = block.title.as_deref().map_or(0, text_tokens);
            title
                + match source.kind.as_str() {
                    "text" => source.data.map_or(0, |d| text_tokens(d.escaped())),
                    "content" => source.content.as_ref().map_or(0, content_tokens),
                    "base64" => {
                        let bytes = source.data.map_or(0, |d| d.escaped().len()) as u64;
                        PER_IMAGE * bytes.div_ceil(PDF_BYTES_PER_IMAGE).max(1)
                    }
                    _ => PER_IMAGE,
                }
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(json: &str) -> u64 {
        estimate_input_tokens(&JsonObject::parse(json.as_bytes()).expect("object"))
    }

    #[test]
    fn counts_text_messages_and_framing() {
        // 40 ASCII bytes → 10 tokens, one message (4), the reply priming (3).
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
            "a".repeat(40)
        );
        assert_eq!(estimate(&body), 10 + 4 + 3);
    }

    #[test]
    fn grows_with_system_tools_images_and_results() {
        let base = estimate(r#"{"messages":[{"role":"user","content":"hi"}]}"#);
        let with_system =
            estimate(r#"{"system":"be brief","messages":[{"role":"user","content":"hi"}]}"#);
        assert!(with_system > base);
        let tools =
            r#"[{"name":"Read","description":"reads a file","input_schema":{"type":"object"}}]"#;
        let with_tool = estimate(&format!(
            r#"{{"messages":[{{"role":"user","content":"hi"}}],"tools":{tools}}}"#
        ));
        assert_eq!(with_tool, base + text_tokens(tools));
        let with_image = estimate(
            r#"{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://x/y.png"}}]}]}"#,
        );
        assert_eq!(with_image, PER_IMAGE + PER_MESSAGE + REPLY_PRIMING);
        let with_result = estimate(
            r#"{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"abcdefgh"}]}]}]}"#,
        );
        assert_eq!(with_result, 2 + PER_MESSAGE + REPLY_PRIMING);
    }

    #[test]
    fn is_never_zero() {
        assert!(estimate("{}") >= 1);
        assert!(estimate(r#"{"messages":"not a list"}"#) >= 1);
    }
}
