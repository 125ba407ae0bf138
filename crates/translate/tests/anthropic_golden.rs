//! Golden translations of real Claude Code 2.1.330 requests (tests/fixtures/clients): the
//! chat body must keep the conversation's shape and pass the strict fake NIM.

use serde_json::{json, Value};
use tollgate_core::JsonObject;
use tollgate_testkit::nim::{forbidden_fields, schema_error};
use tollgate_testkit::Answer;
use tollgate_translate::anthropic::{estimate_input_tokens, reply_context, to_chat};
use tollgate_translate::{ChatTarget, Reasoning};

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../../tests/fixtures/clients/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// The body of the fixture's `n`-th request, as the door receives it.
fn request(name: &str, n: usize) -> (Value, JsonObject) {
    let body = fixture(name)["requests"][n]["body"].clone();
    let object = JsonObject::parse(body.to_string().as_bytes()).expect("object");
    (body, object)
}

fn chat_of(object: &JsonObject, target: &ChatTarget) -> (Value, Vec<u8>) {
    let chat = to_chat(object, target)
        .expect("translates")
        .to_bytes()
        .to_vec();
    (serde_json::from_slice(&chat).expect("json"), chat)
}

fn strict_nim_accepts(chat: &[u8]) {
    if let Some(Answer::Json { body, .. }) = schema_error(chat) {
        panic!("strict NIM refuses {:?}", forbidden_fields(body.as_bytes()));
    }
    assert!(schema_error(chat).is_none());
}

fn roles(chat: &Value) -> Vec<&str> {
    chat["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["role"].as_str().expect("role"))
        .collect()
}

const TOOLS: [&str; 12] = [
    "Agent",
    "Bash",
    "Edit",
    "ListAgents",
    "Read",
    "ReportFindings",
    "ScheduleWakeup",
    "Skill",
    "ToolSearch",
    "Workflow",
    "DeferredToolPlaceholder",
    "Write",
];

/// What both turns of the tool-turn fixture share.
fn common(client: &Value, chat: &Value) {
    let mut keys: Vec<&str> = chat
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["max_tokens", "messages", "model", "stream", "tools", "user"],
        "thinking, context_management, output_config and metadata are not forwarded"
    );
    assert_eq!(chat["model"], "claude-opus-5-5");
    assert_eq!(chat["max_tokens"], 128000);
    assert_eq!(chat["stream"], true);
    assert_eq!(chat["user"], client["metadata"]["user_id"]);

    // The system prompt's blocks, joined, in front.
    let system = chat["messages"][0]["content"]
        .as_str()
        .expect("system text");
    assert!(system.starts_with("x-anthropic-billing-header: cc_version=2.1.330"));
    assert!(system.contains("You are a Claude agent, built on Anthropic's Claude Agent SDK."));
    assert!(system.contains("# Harness"));

    // The user's two text blocks, one string.
    let user = chat["messages"][1]["content"].as_str().expect("user text");
    assert!(user.starts_with("<system-reminder>"));
    assert!(user.ends_with("read secret.txt and tell me what it says"));

    // Claude Code's `role: "system"` environment note stays a system message, in place.
    assert_eq!(chat["messages"][2]["role"], "system");
    assert!(chat["messages"][2]["content"]
        .as_str()
        .expect("text")
        .starts_with("# Environment"));

    let tools = chat["tools"].as_array().expect("tools");
    let names: Vec<&str> = tools
        .iter()
        .map(|t| t["function"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, TOOLS);
    for (tool, original) in tools.iter().zip(client["tools"].as_array().expect("tools")) {
        assert_eq!(tool["type"], "function");
        let params = &tool["function"]["parameters"];
        assert!(
            params.get("$schema").is_none(),
            "{}",
            tool["function"]["name"]
        );
        let mut expected = original["input_schema"].clone();
        expected.as_object_mut().expect("schema").remove("$schema");
        assert_eq!(*params, expected, "the schema is otherwise untouched");
        assert_eq!(tool["function"]["description"], original["description"]);
        assert!(
            tool.get("defer_loading").is_none() && tool["function"].get("defer_loading").is_none()
        );
    }
    let text = chat.to_string();
    for gone in [
        "cache_control",
        "defer_loading",
        "ephemeral",
        "clear_thinking_20251015",
    ] {
        assert!(!text.contains(gone), "{gone} leaked into the chat body");
    }
}

#[test]
fn claude_code_first_turn() {
    let (client, body) = request("claude-code-2.1.330-tool-turn.json", 0);
    let (chat, bytes) = chat_of(&body, &ChatTarget::default());
    strict_nim_accepts(&bytes);
    assert_eq!(roles(&chat), ["system", "user", "system"]);
    common(&client, &chat);
}

#[test]
fn claude_code_tool_result_turn() {
    let (client, body) = request("claude-code-2.1.330-tool-turn.json", 1);
    let (chat, bytes) = chat_of(&body, &ChatTarget::default());
    strict_nim_accepts(&bytes);
    assert_eq!(
        roles(&chat),
        ["system", "user", "system", "assistant", "tool"]
    );
    common(&client, &chat);
    let assistant = &chat["messages"][3];
    assert_eq!(assistant["content"], "I'll use the Read tool.");
    let calls = assistant["tool_calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["id"], "toolu_fake_1");
    assert_eq!(calls[0]["function"]["name"], "Read");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().expect("string"))
            .expect("arguments are JSON text");
    assert_eq!(args, json!({"file_path": "/home/dev/project/secret.txt"}));
    assert_eq!(
        chat["messages"][4],
        json!({"role": "tool", "tool_call_id": "toolu_fake_1", "content": "1\tMAGIC-42 the secret line\n2\t"})
    );
}

#[test]
fn claude_code_reasoning_for_backends_that_have_a_control() {
    // Claude Code sends `thinking: adaptive` with `output_config.effort: medium`.
    let (_, body) = request("claude-code-2.1.330-tool-turn.json", 1);
    let effort = ChatTarget {
        reasoning: Reasoning::Effort,
        top_k: false,
    };
    let (chat, bytes) = chat_of(&body, &effort);
    assert_eq!(chat["reasoning_effort"], "medium");
    let Some(Answer::Json { body: refusal, .. }) = schema_error(&bytes) else {
        panic!("strict NIM's schema has no reasoning_effort")
    };
    assert_eq!(forbidden_fields(refusal.as_bytes()), ["reasoning_effort"]);

    let flag = ChatTarget {
        reasoning: Reasoning::TemplateFlag("enable_thinking".into()),
        top_k: false,
    };
    let (chat, _) = chat_of(&body, &flag);
    assert_eq!(
        chat["chat_template_kwargs"],
        json!({"enable_thinking": true})
    );
    assert!(chat.get("reasoning_effort").is_none());
}

#[test]
fn claude_code_probe_turn_and_its_estimate() {
    // The probes fixture's POST is a whole `say hi` turn (the body Claude Code also counts).
    let (client, body) = request("claude-code-2.1.330-probes.json", 1);
    let (chat, bytes) = chat_of(&body, &ChatTarget::default());
    strict_nim_accepts(&bytes);
    assert_eq!(roles(&chat), ["system", "user", "system"]);
    assert!(chat["messages"][1]["content"]
        .as_str()
        .expect("text")
        .ends_with("say hi"));
    assert_eq!(chat["tools"].as_array().map(Vec::len), Some(12));

    // ~50 KB of English prompt and JSON schemas: about 12 000 tokens by the 4-bytes rule.
    let estimate = estimate_input_tokens(&body);
    let size = client.to_string().len() as u64;
    assert!(
        (size / 6..=size / 3).contains(&estimate),
        "estimate {estimate} for a {size}-byte body"
    );
    let ctx = reply_context(&body, "msg_1".into(), "claude-opus-5-5".into());
    assert_eq!(ctx.input_tokens.get(), estimate);
    assert!(ctx.thinking, "adaptive thinking is shown");
}
