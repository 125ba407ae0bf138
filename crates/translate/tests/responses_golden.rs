//! Golden tests on what Codex CLI 0.169.0 really sent (`tests/fixtures/clients/
//! codex-0.169.0-tool-turn.json`): both requests translate to the chat bodies below, a strict
//! NIM accepts them, and the tool names — plain, namespaced and freeform — survive the round
//! trip through an answer that calls them and the follow-up request that replays the calls.

mod responses_support;

use bytes::Bytes;
use responses_support::{call, chunk, finish, run, usage, End};
use serde_json::{json, Value};
use tollgate_core::JsonObject;
use tollgate_translate::responses::{from_chat_response, grammar, reply_context, to_chat};
use tollgate_translate::ChatTarget;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/clients/codex-0.169.0-tool-turn.json"
);

fn requests() -> Vec<Value> {
    let text = std::fs::read_to_string(FIXTURE).expect("fixture");
    let fixture: Value = serde_json::from_str(&text).expect("fixture json");
    fixture["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| r["body"].clone())
        .collect()
}

/// Translates `body`, checks the strict NIM schema, and returns the chat body.
fn translate(body: &Value) -> Value {
    let obj = JsonObject::parse_bytes(&Bytes::from(body.to_string())).expect("json");
    let chat = to_chat(&obj, &ChatTarget::default()).expect("translates");
    let bytes = chat.to_bytes();
    assert!(
        tollgate_testkit::nim::schema_error(&bytes).is_none(),
        "strict NIM refuses: {:?}",
        tollgate_testkit::nim::schema_error(&bytes)
    );
    serde_json::from_slice(&bytes).expect("chat json")
}

/// An input message's text parts, joined by newlines as the translator joins them.
fn input_text(body: &Value, i: usize) -> String {
    body["input"][i]["content"]
        .as_array()
        .expect("parts")
        .iter()
        .map(|p| p["text"].as_str().expect("text"))
        .collect::<Vec<_>>()
        .join("\n")
}

const CHAT_TOOL_NAMES: &[&str] = &[
    "exec_command",
    "write_stdin",
    "request_user_input",
    "view_image",
    "multi_agent_v1__close_agent",
    "multi_agent_v1__resume_agent",
    "multi_agent_v1__send_input",
    "multi_agent_v1__spawn_agent",
    "multi_agent_v1__wait_agent",
    "get_goal",
    "create_goal",
    "update_goal",
];

#[test]
fn the_first_turn_translates_to_the_expected_chat_body() {
    let body = &requests()[0];
    let chat = translate(body);
    let mut keys: Vec<&str> = chat
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    // store, include, prompt_cache_key, client_metadata, reasoning (summary only) and
    // parallel_tool_calls are gone.
    assert_eq!(
        keys,
        ["messages", "model", "stream", "tool_choice", "tools"]
    );
    assert_eq!(chat["model"], "gpt-fake");
    assert_eq!(chat["stream"], true);
    assert_eq!(chat["tool_choice"], "auto");
    // The two developer messages are one system prompt; the user messages follow.
    assert_eq!(
        body["input"][1]["content"].as_array().map(Vec::len),
        Some(2),
        "the second developer message has two parts"
    );
    let expected = json!([
        {"role":"system","content": format!("{}\n\n{}", input_text(body, 0), input_text(body, 1))},
        {"role":"user","content": input_text(body, 2)},
        {"role":"user","content":"cat secret.txt"}
    ]);
    // Compared without printing the 20 KB prompt on failure.
    assert!(chat["messages"] == expected, "messages differ");
    let tools = chat["tools"].as_array().expect("tools");
    let names: Vec<&str> = tools
        .iter()
        .map(|t| t["function"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names, CHAT_TOOL_NAMES,
        "web_search dropped, the namespace flattened"
    );
    for tool in tools {
        assert_eq!(tool["type"], "function");
        assert!(tool["function"].get("strict").is_none());
    }
    // A plain function keeps its schema and description byte for byte.
    let exec = &body["tools"][0];
    assert_eq!(tools[0]["function"]["parameters"], exec["parameters"]);
    assert_eq!(tools[0]["function"]["description"], exec["description"]);
    // A namespaced one keeps its schema and says which namespace it is part of.
    let spawn = body["tools"][4]["tools"]
        .as_array()
        .expect("namespace tools")
        .iter()
        .find(|t| t["name"] == "spawn_agent")
        .expect("spawn_agent");
    let flat = &tools[7]["function"];
    assert_eq!(flat["parameters"], spawn["parameters"]);
    let description = flat["description"].as_str().expect("description");
    assert!(description.starts_with(spawn["description"].as_str().expect("d")));
    assert!(description.ends_with(
        "(Part of the multi_agent_v1 tools: Tools for spawning and managing sub-agents.)"
    ));
}

#[test]
fn the_follow_up_pairs_the_call_with_its_output() {
    let body = &requests()[1];
    let chat = translate(body);
    let messages = chat["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 5);
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().expect("role"))
        .collect();
    assert_eq!(roles, ["system", "user", "user", "assistant", "tool"]);
    assert_eq!(
        messages[3],
        json!({"role":"assistant","content":"","tool_calls":[{"id":"call_fake_1","type":"function",
            "function":{"name":"exec_command","arguments":"{\"cmd\":\"cat\\u0020secret.txt\"}"}}]})
    );
    assert_eq!(
        messages[4],
        json!({"role":"tool","tool_call_id":"call_fake_1","content": body["input"][5]["output"]})
    );
    assert_eq!(
        chat["tools"].as_array().expect("tools").len(),
        CHAT_TOOL_NAMES.len()
    );
}

/// The first request with Codex's freeform `apply_patch` tool added (this fixture's Codex run
/// did not declare it), as Codex declares it: `type: custom` with a Lark grammar.
fn with_apply_patch() -> Value {
    let mut body = requests()[0].clone();
    body["tools"].as_array_mut().expect("tools").push(json!({
        "type":"custom","name":"apply_patch",
        "description":"Edit files with a patch.",
        "format":{"type":"grammar","syntax":"lark",
                  "definition":"start: \"*** Begin Patch\" LF hunk+ \"*** End Patch\" LF?\nhunk: /.+/ LF"}
    }));
    body
}

const PATCH: &str = "*** Begin Patch\n*** Update File: a.rs\n-x\n+y\n*** End Patch\n";

#[test]
fn tool_names_survive_the_round_trip_streamed() {
    let body = with_apply_patch();
    let chat = translate(&body);
    let names: Vec<&str> = chat["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["function"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names.last(), Some(&"apply_patch"));

    let ctx = responses_support::ctx(&body);
    let patch_arguments = serde_json::to_string(&json!({"input": PATCH})).expect("json");
    let out = run(
        ctx,
        &[
            chunk(json!({"role":"assistant","content":"I'll look."})),
            call(
                0,
                Some("call_x"),
                Some("exec_command"),
                Some("{\"cmd\":\"cat secret.txt\"}"),
            ),
            call(
                1,
                Some("call_s"),
                Some("multi_agent_v1__spawn_agent"),
                Some("{\"message\":\"go\"}"),
            ),
            call(
                2,
                Some("call_p"),
                Some("apply_patch"),
                Some(&patch_arguments),
            ),
            finish("tool_calls"),
            usage(100, 20),
        ],
        End::Done,
    );
    let summary = grammar::check(&out).expect("grammar");
    assert_eq!(summary.model, "client-model");
    let got: Vec<(&str, &str, Option<&str>, &str, &str)> = summary
        .items
        .iter()
        .map(|i| {
            (
                i.kind.as_str(),
                i.name.as_str(),
                i.namespace.as_deref(),
                i.call_id.as_str(),
                i.arguments.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("message", "", None, "", ""),
            (
                "function_call",
                "exec_command",
                None,
                "call_x",
                "{\"cmd\":\"cat secret.txt\"}"
            ),
            (
                "function_call",
                "spawn_agent",
                Some("multi_agent_v1"),
                "call_s",
                "{\"message\":\"go\"}"
            ),
            ("custom_tool_call", "apply_patch", None, "call_p", PATCH),
        ]
    );
    // The echoed tools are the client's, namespace and built-in included.
    let completed = responses_support::first(&out, "response.completed");
    assert_eq!(completed["response"]["tools"], body["tools"]);
    follow_up_replays_the_chat_names(&body);
}

#[test]
fn tool_names_survive_the_round_trip_whole() {
    let body = with_apply_patch();
    let ctx = responses_support::ctx(&body);
    let answer = json!({"id":"c","object":"chat.completion","model":"nim/model","choices":[{"index":0,
        "message":{"role":"assistant","content":null,"tool_calls":[
            {"id":"call_s","type":"function","function":{"name":"multi_agent_v1__spawn_agent","arguments":"{\"message\":\"go\"}"}},
            {"id":"call_p","type":"function","function":{"name":"apply_patch","arguments": serde_json::to_string(&json!({"input": PATCH})).expect("json")}}]},
        "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}});
    let bytes = from_chat_response(answer.to_string().as_bytes(), &ctx).expect("translates");
    let response: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(response["output"][0]["type"], "function_call");
    assert_eq!(response["output"][0]["name"], "spawn_agent");
    assert_eq!(response["output"][0]["namespace"], "multi_agent_v1");
    assert_eq!(response["output"][1]["type"], "custom_tool_call");
    assert_eq!(response["output"][1]["name"], "apply_patch");
    assert_eq!(response["output"][1]["input"], PATCH);
    assert_eq!(response["model"], "client-model");
}

/// Codex's next request replays the calls as it received them; the upstream must see the
/// chat names it chose again.
fn follow_up_replays_the_chat_names(first: &Value) {
    let mut body = first.clone();
    let input = body["input"].as_array_mut().expect("input");
    input.extend([
        json!({"type":"function_call","call_id":"call_s","name":"spawn_agent","namespace":"multi_agent_v1","arguments":"{\"message\":\"go\"}"}),
        json!({"type":"custom_tool_call","call_id":"call_p","name":"apply_patch","input":PATCH}),
        json!({"type":"function_call_output","call_id":"call_s","output":"agent 7 started"}),
        json!({"type":"custom_tool_call_output","call_id":"call_p","output":"Success. Updated a.rs"}),
    ]);
    let chat = translate(&body);
    let messages = chat["messages"].as_array().expect("messages");
    let assistant = &messages[3];
    assert_eq!(
        assistant["tool_calls"],
        json!([
            {"id":"call_s","type":"function","function":{"name":"multi_agent_v1__spawn_agent","arguments":"{\"message\":\"go\"}"}},
            {"id":"call_p","type":"function","function":{"name":"apply_patch","arguments": serde_json::to_string(&json!({"input": PATCH})).expect("json")}}
        ])
    );
    assert_eq!(messages[4]["tool_call_id"], "call_s");
    assert_eq!(messages[5]["tool_call_id"], "call_p");
    assert_eq!(messages[5]["content"], "Success. Updated a.rs");
    // Every chat name the upstream can call is declared in the same request.
    let declared: Vec<&str> = chat["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["function"]["name"].as_str().expect("name"))
        .collect();
    for call in assistant["tool_calls"].as_array().expect("calls") {
        assert!(declared.contains(&call["function"]["name"].as_str().expect("name")));
    }
    // The reply context of this request maps them back the same way.
    let obj = JsonObject::parse(body.to_string().as_bytes()).expect("json");
    reply_context(&obj, "resp_2".into(), "gpt-fake".into()).expect("context");
}
