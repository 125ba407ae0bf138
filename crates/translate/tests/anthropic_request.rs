//! Messages request → chat.completions body: every mapping, and every way peers got it
//! wrong (each named by the issue that reported it).

use serde_json::{json, Value};
use tollgate_core::JsonObject;
use tollgate_testkit::nim::{forbidden_fields, schema_error};
use tollgate_translate::anthropic::{estimate_input_tokens, to_chat};
use tollgate_translate::{ChatTarget, Reasoning, TranslateError};

fn translate_with(body: Value, target: &ChatTarget) -> Result<Value, TranslateError> {
    let body = JsonObject::parse(body.to_string().as_bytes()).expect("object");
    let chat = to_chat(&body, target)?;
    Ok(serde_json::from_slice(&chat.to_bytes()).expect("chat body is JSON"))
}

/// Translates for a plain NIM target and checks the strict NIM schema accepts the result.
fn translate(body: Value) -> Value {
    let chat = translate_with(body, &ChatTarget::default()).expect("translates");
    let bytes = serde_json::to_vec(&chat).expect("json");
    assert!(
        schema_error(&bytes).is_none(),
        "strict NIM refuses {:?}: {chat}",
        forbidden_fields(&bytes)
    );
    chat
}

fn refused(body: Value) -> TranslateError {
    translate_with(body, &ChatTarget::default()).expect_err("must be refused")
}

fn roles(chat: &Value) -> Vec<&str> {
    chat["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["role"].as_str().expect("role"))
        .collect()
}

fn base(messages: Value) -> Value {
    json!({"model": "claude-x", "max_tokens": 100, "messages": messages})
}

#[test]
fn system_string_and_blocks_become_one_system_message() {
    let chat = translate(
        json!({"model":"m","max_tokens":5,"system":"be brief","messages":[{"role":"user","content":"hi"}]}),
    );
    assert_eq!(
        chat["messages"][0],
        json!({"role":"system","content":"be brief"})
    );
    let chat = translate(json!({"model":"m","max_tokens":5,
        "system":[{"type":"text","text":"one"},{"type":"text","text":"two","cache_control":{"type":"ephemeral"}}],
        "messages":[{"role":"user","content":"hi"}]}));
    assert_eq!(
        chat["messages"][0],
        json!({"role":"system","content":"one\n\ntwo"})
    );
    assert_eq!(chat["messages"][1], json!({"role":"user","content":"hi"}));
    assert!(!chat.to_string().contains("cache_control"));
}

#[test]
fn system_entries_inside_messages_stay_system_in_place() {
    // Peers turned these into user turns, so the model read the harness's notes as the user.
    let chat = translate(base(json!([
        {"role":"user","content":"hi"},
        {"role":"system","content":[{"type":"text","text":"# Environment"}]},
        {"role":"assistant","content":"hello"},
        {"role":"user","content":"bye"}
    ])));
    assert_eq!(roles(&chat), ["user", "system", "assistant", "user"]);
    assert_eq!(chat["messages"][1]["content"], "# Environment");
}

#[test]
fn a_leading_system_entry_merges_with_the_system_prompt() {
    let chat = translate(json!({"model":"m","max_tokens":5,"system":"top",
        "messages":[{"role":"system","content":"env"},{"role":"user","content":"hi"}]}));
    assert_eq!(roles(&chat), ["system", "user"]);
    assert_eq!(chat["messages"][0]["content"], "top\n\nenv");
}

#[test]
fn images_become_image_url_parts() {
    let chat = translate(base(json!([{"role":"user","content":[
        {"type":"text","text":"what is this"},
        {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
        {"type":"image","source":{"type":"url","url":"https://example.org/cat.jpg"}}
    ]}])));
    assert_eq!(
        chat["messages"][0]["content"],
        json!([
            {"type":"text","text":"what is this"},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},
            {"type":"image_url","image_url":{"url":"https://example.org/cat.jpg"}}
        ])
    );
}

#[test]
fn text_only_user_blocks_are_one_string() {
    let chat = translate(base(json!([{"role":"user","content":[
        {"type":"text","text":"<system-reminder>x</system-reminder>"},
        {"type":"text","text":"read it"}
    ]}])));
    assert_eq!(
        chat["messages"][0]["content"],
        "<system-reminder>x</system-reminder>\n\nread it"
    );
}

fn tool_turn(result_content: Value, is_error: bool) -> Value {
    base(json!([
        {"role":"user","content":"read /x"},
        {"role":"assistant","content":[
            {"type":"text","text":"Reading."},
            {"type":"tool_use","id":"toolu_1","name":"Read","input":{"file_path":"/x","pages":""}}
        ]},
        {"role":"user","content":[
            {"type":"tool_result","tool_use_id":"toolu_1","content":result_content,"is_error":is_error,"cache_control":{"type":"ephemeral"}}
        ]}
    ]))
}

#[test]
fn tool_use_and_tool_result_pair_up() {
    let chat = translate(tool_turn(json!("line 1"), false));
    assert_eq!(roles(&chat), ["user", "assistant", "tool"]);
    let assistant = &chat["messages"][1];
    assert_eq!(assistant["content"], "Reading.");
    let call = &assistant["tool_calls"][0];
    assert_eq!(call["id"], "toolu_1");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "Read");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().expect("string"))
        .expect("arguments are JSON text");
    assert_eq!(args, json!({"file_path":"/x","pages":""}));
    assert_eq!(
        chat["messages"][2],
        json!({"role":"tool","tool_call_id":"toolu_1","content":"line 1"})
    );
}

#[test]
fn tool_result_blocks_and_errors() {
    let chat = translate(tool_turn(
        json!([{"type":"text","text":"part a"},{"type":"text","text":"part b"}]),
        false,
    ));
    assert_eq!(chat["messages"][2]["content"], "part a\n\npart b");
    let chat = translate(tool_turn(json!("No such file"), true));
    assert_eq!(
        chat["messages"][2]["content"],
        "[tool error]\n\nNo such file"
    );
}

#[test]
fn tool_result_images_follow_as_a_user_turn() {
    let chat = translate(tool_turn(
        json!([{"type":"text","text":"screenshot"},{"type":"image","source":{"type":"url","url":"https://x/s.png"}}]),
        false,
    ));
    assert_eq!(roles(&chat), ["user", "assistant", "tool", "user"]);
    assert_eq!(chat["messages"][2]["content"], "screenshot");
    assert_eq!(
        chat["messages"][3]["content"],
        json!([{"type":"image_url","image_url":{"url":"https://x/s.png"}}])
    );
}

#[test]
fn parallel_results_follow_the_order_of_the_calls_and_user_text_comes_after() {
    // A user message may hold text before its tool results; putting that text between the
    // calls and their results is refused by OpenAI-compatible servers.
    let chat = translate(base(json!([
        {"role":"user","content":"go"},
        {"role":"assistant","content":[
            {"type":"tool_use","id":"a","name":"Read","input":{"file_path":"/a"}},
            {"type":"tool_use","id":"b","name":"Read","input":{"file_path":"/b"}}
        ]},
        {"role":"user","content":[
            {"type":"text","text":"also consider this"},
            {"type":"tool_result","tool_use_id":"b","content":"B"},
            {"type":"tool_result","tool_use_id":"a","content":"A"}
        ]}
    ])));
    assert_eq!(roles(&chat), ["user", "assistant", "tool", "tool", "user"]);
    assert!(
        chat["messages"][1].get("content").is_none(),
        "no empty text beside calls"
    );
    assert_eq!(chat["messages"][2]["tool_call_id"], "a");
    assert_eq!(chat["messages"][3]["tool_call_id"], "b");
    assert_eq!(chat["messages"][4]["content"], "also consider this");
}

#[test]
fn a_tool_result_only_continuation_opens_with_a_user_turn() {
    // LiteLLM #42473: [assistant(tool_use), user(tool_result)] with no system prompt became
    // [assistant, tool], which OpenAI-compatible upstreams refuse.
    let chat = translate(base(json!([
        {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}]},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"a.txt"}]}
    ])));
    assert_eq!(roles(&chat), ["user", "assistant", "tool"]);
    assert!(!chat["messages"][0]["content"]
        .as_str()
        .expect("text")
        .is_empty());
    // With a system prompt the first turn after it is still a user turn.
    let mut body = base(json!([
        {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}]},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"a.txt"}]}
    ]));
    body["system"] = json!("sys");
    assert_eq!(
        roles(&translate(body)),
        ["system", "user", "assistant", "tool"]
    );
}

#[test]
fn a_result_without_its_call_is_told_as_user_text() {
    let chat = translate(base(json!([
        {"role":"user","content":[{"type":"tool_result","tool_use_id":"gone","content":"old output"},{"type":"text","text":"continue"}]}
    ])));
    assert_eq!(roles(&chat), ["user"]);
    assert_eq!(
        chat["messages"][0]["content"],
        "Result of tool call gone:\nold output\n\ncontinue"
    );
}

#[test]
fn a_system_note_between_call_and_result_moves_after_the_result() {
    let chat = translate(base(json!([
        {"role":"user","content":"go"},
        {"role":"assistant","content":[{"type":"tool_use","id":"t","name":"Read","input":{}}]},
        {"role":"system","content":"note"},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"r"}]}
    ])));
    assert_eq!(roles(&chat), ["user", "assistant", "tool", "system"]);
}

#[test]
fn mid_conversation_system_blocks_split_the_user_turn() {
    let chat = translate(base(json!([{"role":"user","content":[
        {"type":"text","text":"before"},
        {"type":"mid_conv_system","content":[{"type":"text","text":"rules changed"}]},
        {"type":"text","text":"after"}
    ]}])));
    assert_eq!(roles(&chat), ["user", "system", "user"]);
    assert_eq!(chat["messages"][1]["content"], "rules changed");
}

#[test]
fn thinking_in_history_is_dropped_and_no_assistant_turn_is_left_empty() {
    let chat = translate(base(json!([
        {"role":"user","content":"a"},
        {"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"sig"},{"type":"redacted_thinking","data":"xx"}]},
        {"role":"user","content":"b"},
        {"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"sig"},{"type":"text","text":"ok"}]}
    ])));
    // The thinking-only turn is gone and the two user turns around it are one.
    assert_eq!(roles(&chat), ["user", "assistant"]);
    assert_eq!(chat["messages"][0]["content"], "a\n\nb");
    assert_eq!(
        chat["messages"][1],
        json!({"role":"assistant","content":"ok"})
    );
    assert!(!chat.to_string().contains("signature"));
}

#[test]
fn server_tool_history_is_dropped() {
    let chat = translate(base(json!([
        {"role":"user","content":"search"},
        {"role":"assistant","content":[
            {"type":"server_tool_use","id":"srv","name":"web_search","input":{"query":"x"}},
            {"type":"web_search_tool_result","tool_use_id":"srv","content":[]},
            {"type":"text","text":"found it"}
        ]}
    ])));
    assert_eq!(
        chat["messages"][1],
        json!({"role":"assistant","content":"found it"})
    );
}

#[test]
fn documents_and_search_results_are_text() {
    let chat = translate(base(json!([{"role":"user","content":[
        {"type":"document","title":"notes","source":{"type":"text","media_type":"text/plain","data":"the notes"}},
        {"type":"search_result","source":"https://x","title":"hit","content":[{"type":"text","text":"snippet"}]}
    ]}])));
    assert_eq!(
        chat["messages"][0]["content"],
        "notes\n\nthe notes\n\nhit\n\nsnippet"
    );
}

#[test]
fn tools_become_functions_without_anthropic_only_members() {
    let chat = translate(
        json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],
        "tools":[
            {"name":"Read","description":"reads","cache_control":{"type":"ephemeral"},"defer_loading":true,"strict":true,
             "input_schema":{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"file_path":{"type":"string"}},"required":["file_path"],"additionalProperties":false}},
            {"name":"Noop"},
            {"type":"custom","name":"Custom","input_schema":{"type":"object"}},
            {"type":"web_search_20250305","name":"web_search","max_uses":5},
            {"type":"bash_20250124","name":"bash"},
            {"type":"text_editor_20250728","name":"str_replace_based_edit_tool"}
        ]}),
    );
    assert_eq!(
        chat["tools"],
        json!([
            {"type":"function","function":{"name":"Read","description":"reads",
                "parameters":{"type":"object","properties":{"file_path":{"type":"string"}},"required":["file_path"],"additionalProperties":false}}},
            {"type":"function","function":{"name":"Noop","parameters":{"type":"object","properties":{}}}},
            {"type":"function","function":{"name":"Custom","parameters":{"type":"object"}}}
        ])
    );
}

#[test]
fn only_server_tools_means_no_tools() {
    let chat = translate(
        json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],
        "tools":[{"type":"web_search_20250305","name":"web_search"}],"tool_choice":{"type":"auto"}}),
    );
    assert!(chat.get("tools").is_none());
    assert!(
        chat.get("tool_choice").is_none(),
        "a tool_choice without tools is refused upstream"
    );
}

fn with_choice(choice: Value) -> Value {
    json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],
        "tools":[{"name":"Read","input_schema":{"type":"object"}}],"tool_choice":choice})
}

#[test]
fn tool_choice_maps() {
    assert_eq!(
        translate(with_choice(json!({"type":"auto"})))["tool_choice"],
        "auto"
    );
    assert_eq!(
        translate(with_choice(json!({"type":"any"})))["tool_choice"],
        "required"
    );
    assert_eq!(
        translate(with_choice(json!({"type":"tool","name":"Read"})))["tool_choice"],
        json!({"type":"function","function":{"name":"Read"}})
    );
}

#[test]
fn tool_choice_none_is_kept() {
    // LiteLLM #24443 answered 500 to `tool_choice: none`.
    let chat = translate(with_choice(json!({"type":"none"})));
    assert_eq!(chat["tool_choice"], "none");
    assert!(chat["tools"].is_array());
}

#[test]
fn disable_parallel_tool_use_sets_parallel_tool_calls_false() {
    let chat = translate_with(
        with_choice(json!({"type":"auto","disable_parallel_tool_use":true})),
        &ChatTarget::default(),
    )
    .expect("translates");
    assert_eq!(chat["parallel_tool_calls"], false);
    // NIM's schema forbids it; the nvidia connector drops it (DEFAULT_DROP_FIELDS), and it is
    // the only field NIM would refuse.
    let bytes = serde_json::to_vec(&chat).expect("json");
    let refusal = schema_error(&bytes).expect("strict NIM names it");
    let tollgate_testkit::Answer::Json { body, .. } = refusal else {
        panic!("a JSON 422 expected");
    };
    assert_eq!(forbidden_fields(body.as_bytes()), ["parallel_tool_calls"]);
}

#[test]
fn bad_tool_choices_are_refused_with_their_field() {
    assert_eq!(
        refused(with_choice(json!({"type":"tool","name":"Write"})))
            .param
            .as_deref(),
        Some("tool_choice.name")
    );
    assert_eq!(
        refused(with_choice(json!({"type":"sometimes"})))
            .param
            .as_deref(),
        Some("tool_choice.type")
    );
    let no_tools = json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"tool_choice":{"type":"any"}});
    assert_eq!(refused(no_tools).param.as_deref(), Some("tool_choice"));
}

#[test]
fn sampling_and_identity_fields() {
    let chat = translate(
        json!({"model":"claude-x","max_tokens":64,"temperature":0.2,"top_p":0.9,"top_k":40,
        "stop_sequences":["END","\n\nHuman:"],"metadata":{"user_id":"u-1"},"stream":true,
        "messages":[{"role":"user","content":"hi"}]}),
    );
    assert_eq!(chat["model"], "claude-x");
    assert_eq!(chat["max_tokens"], 64);
    assert_eq!(chat["temperature"], 0.2);
    assert_eq!(chat["top_p"], 0.9);
    assert!(chat.get("top_k").is_none(), "NIM's schema has no top_k");
    assert_eq!(chat["stop"], json!(["END", "\n\nHuman:"]));
    assert_eq!(chat["user"], "u-1");
    assert_eq!(chat["stream"], true);
    assert!(
        chat.get("stream_options").is_none(),
        "the connector adds it where accepted"
    );
    assert!(chat.get("metadata").is_none());
    let vllm = ChatTarget {
        top_k: true,
        ..ChatTarget::default()
    };
    let chat = translate_with(
        json!({"model":"m","max_tokens":5,"top_k":40,"messages":[{"role":"user","content":"hi"}]}),
        &vllm,
    )
    .expect("translates");
    assert_eq!(chat["top_k"], 40);
}

#[test]
fn unknown_and_anthropic_only_fields_are_never_forwarded() {
    let chat = translate(
        json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],
        "context_management":{"edits":[{"type":"clear_thinking_20251015","keep":"all"}]},
        "output_config":{"effort":"medium"},"safeguards":{"x":1},"service_tier":"auto","container":"c",
        "mcp_servers":[],"inference_geo":"us","cache_control":{"type":"ephemeral"},"reasoning_effort":"high",
        "thinking":{"type":"enabled","budget_tokens":2048},"brand_new_field":true,"stop_sequences":[]}),
    );
    let mut keys: Vec<&str> = chat
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["max_tokens", "messages", "model"]);
}

#[test]
fn structured_output_becomes_response_format() {
    let chat = translate(
        json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],
        "output_config":{"format":{"type":"json_schema","schema":{"type":"object","properties":{"a":{"type":"string"}}}}}}),
    );
    assert_eq!(
        chat["response_format"],
        json!({"type":"json_schema","json_schema":{"name":"output","schema":{"type":"object","properties":{"a":{"type":"string"}}}}})
    );
}

fn reasoning_of(
    thinking: Option<Value>,
    effort: Option<&str>,
    target: &Reasoning,
) -> (Value, Value) {
    let mut body = json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]});
    if let Some(t) = thinking {
        body["thinking"] = t;
    }
    if let Some(e) = effort {
        body["output_config"] = json!({"effort": e});
    }
    let target = ChatTarget {
        reasoning: target.clone(),
        top_k: false,
    };
    let chat = translate_with(body, &target).expect("translates");
    (
        chat["reasoning_effort"].clone(),
        chat["chat_template_kwargs"].clone(),
    )
}

#[test]
fn thinking_maps_to_reasoning_effort() {
    let e = Reasoning::Effort;
    let enabled = |b: u64| Some(json!({"type":"enabled","budget_tokens":b}));
    assert_eq!(reasoning_of(enabled(1024), None, &e).0, "low");
    assert_eq!(reasoning_of(enabled(10000), None, &e).0, "medium");
    assert_eq!(reasoning_of(enabled(31999), None, &e).0, "high");
    assert_eq!(
        reasoning_of(Some(json!({"type":"adaptive"})), None, &e).0,
        "medium"
    );
    assert_eq!(
        reasoning_of(Some(json!({"type":"adaptive"})), Some("high"), &e).0,
        "high"
    );
    assert_eq!(
        reasoning_of(Some(json!({"type":"adaptive"})), Some("max"), &e).0,
        "high"
    );
    assert_eq!(
        reasoning_of(enabled(31999), Some("low"), &e).0,
        "low",
        "effort wins over budget"
    );
    assert_eq!(
        reasoning_of(Some(json!({"type":"disabled"})), None, &e).0,
        "low"
    );
    assert_eq!(reasoning_of(None, Some("high"), &e).0, "high");
    assert!(reasoning_of(None, None, &e).0.is_null());
}

#[test]
fn thinking_maps_to_a_template_flag() {
    let flag = Reasoning::TemplateFlag("enable_thinking".into());
    assert_eq!(
        reasoning_of(Some(json!({"type":"adaptive"})), None, &flag).1,
        json!({"enable_thinking": true})
    );
    assert_eq!(
        reasoning_of(
            Some(json!({"type":"enabled","budget_tokens":2000})),
            None,
            &flag
        )
        .1,
        json!({"enable_thinking": true})
    );
    assert_eq!(
        reasoning_of(Some(json!({"type":"disabled"})), None, &flag).1,
        json!({"enable_thinking": false})
    );
    assert!(
        reasoning_of(None, Some("high"), &flag).1.is_null(),
        "no thinking field: model default"
    );
}

#[test]
fn thinking_is_dropped_for_backends_without_a_control() {
    let (effort, kwargs) = reasoning_of(
        Some(json!({"type":"enabled","budget_tokens":4000})),
        Some("high"),
        &Reasoning::Drop,
    );
    assert!(effort.is_null() && kwargs.is_null());
}

#[test]
fn malformed_requests_are_refused_naming_the_field() {
    assert_eq!(
        refused(json!({"model":"m","max_tokens":5}))
            .param
            .as_deref(),
        Some("messages")
    );
    assert_eq!(refused(base(json!([]))).param.as_deref(), Some("messages"));
    assert_eq!(
        refused(base(json!("hi"))).param.as_deref(),
        Some("messages")
    );
    assert_eq!(
        refused(base(
            json!([{"role":"user","content":"a"},{"role":"robot","content":"b"}])
        ))
        .param
        .as_deref(),
        Some("messages[1].role")
    );
    let pdf = base(
        json!([{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0="}}]}]),
    );
    let e = refused(pdf);
    assert_eq!(
        e.param.as_deref(),
        Some("messages[0].content[0].source.type")
    );
    assert!(e.message.contains("base64"), "{}", e.message);
    assert_eq!(
        refused(base(
            json!([{"role":"user","content":[{"type":"hologram"}]}])
        ))
        .param
        .as_deref(),
        Some("messages[0].content[0].type")
    );
    assert_eq!(
        refused(base(
            json!([{"role":"assistant","content":[{"type":"tool_use","name":"Read","input":{}}]}])
        ))
        .param
        .as_deref(),
        Some("messages[0].content[0].id")
    );
    assert_eq!(
        refused(base(json!([{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"f"}}]}]))).param.as_deref(),
        Some("messages[0].content[0].source.type")
    );
}

#[test]
fn estimate_counts_what_the_backend_will_read() {
    let body = |text: &str| {
        JsonObject::parse(
            base(json!([{"role":"user","content":text}]))
                .to_string()
                .as_bytes(),
        )
        .expect("object")
    };
    let short = estimate_input_tokens(&body("hi"));
    let long = estimate_input_tokens(&body(&"word ".repeat(400)));
    assert!(short >= 1);
    assert!(
        (495..=505).contains(&(long - short)),
        "2000 ASCII bytes ≈ 500 tokens, got {}",
        long - short
    );
}
