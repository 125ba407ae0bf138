//! End to end against the real Codex CLI, ignored by default because it needs the binary
//! (npm `@openai/codex`, which ships it):
//!
//! ```text
//! CODEX_BIN=/path/to/codex cargo test -p tollgate-translate --test responses_codex -- --ignored --nocapture
//! ```
//!
//! A fake backend on 127.0.0.1 takes Codex's real `/v1/responses` requests, translates each with
//! `to_chat` (checked against the strict NIM schema), answers with a scripted chat stream
//! translated by `ChatToResponses`: first a turn that calls `exec_command`, the freeform
//! `apply_patch` and a namespaced tool when Codex declares them, then a text answer. Codex must
//! run the calls (the patch creates a file), send their outputs back under the same call ids,
//! and print the answer.

mod responses_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use responses_support::{call, chunk, finish, usage};
use serde_json::{json, Value};
use tollgate_core::JsonObject;
use tollgate_translate::responses::{grammar, reply_context, to_chat, ChatToResponses};
use tollgate_translate::{ChatTarget, StreamTranslator};

const PATCH: &str =
    "*** Begin Patch\n*** Add File: hello.txt\n+hello from the gateway\n*** End Patch\n";

/// The chat stream the fake backend answers request `n` with.
fn script(n: usize, request: &Value) -> Vec<String> {
    if n > 1 {
        return vec![
            chunk(json!({"role":"assistant","content":""})),
            chunk(json!({"content":"The secret is "})),
            chunk(json!({"content":"MAGIC-42."})),
            finish("stop"),
            usage(100, 5),
        ];
    }
    let declared = |chat_name: &str| chat_tools(request).iter().any(|t| t == chat_name);
    let mut events = vec![
        chunk(json!({"reasoning_content":"I should read the file."})),
        chunk(json!({"content":"Reading it."})),
        call(
            0,
            Some("call_exec"),
            Some("exec_command"),
            Some("{\"cmd\":"),
        ),
        call(0, None, None, Some("\"cat secret.txt\"}")),
    ];
    if declared("apply_patch") {
        let arguments = serde_json::to_string(&json!({ "input": PATCH })).expect("json");
        events.push(call(
            1,
            Some("call_patch"),
            Some("apply_patch"),
            Some(&arguments),
        ));
    }
    if declared("multi_agent_v1__close_agent") {
        events.push(call(
            2,
            Some("call_ns"),
            Some("multi_agent_v1__close_agent"),
            Some("{\"target\":\"no-such-agent\"}"),
        ));
    }
    events.push(finish("tool_calls"));
    events.push(usage(90, 30));
    events
}

/// The chat tool names `to_chat` gives the request's tools.
fn chat_tools(request: &Value) -> Vec<String> {
    let obj = JsonObject::parse(request.to_string().as_bytes()).expect("json");
    let chat = to_chat(&obj, &ChatTarget::default()).expect("translates");
    let chat: Value = serde_json::from_slice(&chat.to_bytes()).expect("json");
    chat["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// Reads one HTTP/1.1 request: its path and body (Codex sends `Content-Length`).
fn read_request(stream: &TcpStream) -> Option<(String, Vec<u8>)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, body))
}

/// Serves Codex's requests until the listener is dropped; records each request body.
fn serve(listener: TcpListener, model: String, seen: Arc<Mutex<Vec<Value>>>) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { break };
        let Some((path, body)) = read_request(&stream) else {
            continue;
        };
        if !path.ends_with("/responses") {
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            continue;
        }
        let request: Value = serde_json::from_slice(&body).expect("Codex sends JSON");
        let obj = JsonObject::parse(&body).expect("json");
        let chat = to_chat(&obj, &ChatTarget::default()).expect("Codex's request translates");
        assert!(
            tollgate_testkit::nim::schema_error(&chat.to_bytes()).is_none(),
            "strict NIM refuses Codex's translated request"
        );
        let n = {
            let mut seen = seen.lock().expect("lock");
            seen.push(request.clone());
            seen.len()
        };
        let ctx = reply_context(&obj, format!("resp_{n}"), model.clone()).expect("context");
        let mut translator = ChatToResponses::new(ctx);
        let mut out = BytesMut::new();
        for event in script(n, &request) {
            translator.event(event.as_bytes(), &mut out);
        }
        translator.event(b"[DONE]", &mut out);
        grammar::check(&out).expect("the stream is valid");
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&out);
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-codex-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
#[ignore = "needs the Codex CLI: set CODEX_BIN"]
fn codex_runs_a_tool_turn_through_the_translator() {
    let Ok(codex) = std::env::var("CODEX_BIN") else {
        panic!("set CODEX_BIN to the codex binary");
    };
    let model = std::env::var("CODEX_MODEL").unwrap_or_else(|_| "gpt-5-codex".into());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    {
        let seen = Arc::clone(&seen);
        let model = model.clone();
        std::thread::spawn(move || serve(listener, model, seen));
    }
    let home = temp_dir("home");
    let project = temp_dir("project");
    std::fs::write(project.join("secret.txt"), "MAGIC-42 the secret line\n").expect("write");
    std::fs::write(
        home.join("config.toml"),
        format!(
            "model = \"{model}\"\nmodel_provider = \"tollgate\"\n\n[model_providers.tollgate]\n\
             name = \"tollgate\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\n\
             wire_api = \"responses\"\nenv_key = \"TOLLGATE_TEST_KEY\"\n"
        ),
    )
    .expect("config");
    let mut child = std::process::Command::new(codex)
        .args([
            "exec",
            "--skip-git-repo-check",
            "--sandbox",
            "workspace-write",
            "-C",
        ])
        .arg(&project)
        .arg("Read secret.txt and create hello.txt")
        .env("CODEX_HOME", &home)
        .env("TOLLGATE_TEST_KEY", "test-key")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("codex starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("codex did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("--- codex stdout\n{stdout}\n--- codex stderr\n{stderr}");
    assert!(output.status.success(), "codex failed");
    assert!(
        stdout.contains("The secret is MAGIC-42."),
        "the answer is printed"
    );
    assert!(!stderr.contains("without active item"), "no orphan deltas");

    let seen = seen.lock().expect("lock");
    assert!(seen.len() >= 2, "a follow-up request came: {}", seen.len());
    let first_tools = chat_tools(&seen[0]);
    println!("chat tools of the first request: {first_tools:?}");
    let follow_up = &seen[1]["input"];
    let items: Vec<&Value> = follow_up.as_array().expect("input").iter().collect();
    let output_of = |call_id: &str| {
        items
            .iter()
            .find(|i| {
                i["call_id"] == call_id
                    && matches!(
                        i["type"].as_str(),
                        Some("function_call_output") | Some("custom_tool_call_output")
                    )
            })
            .map(|i| i["output"].to_string())
    };
    let exec = output_of("call_exec").expect("exec_command's output came back");
    assert!(exec.contains("MAGIC-42"), "{exec}");
    if first_tools.iter().any(|t| t == "apply_patch") {
        assert!(
            output_of("call_patch").is_some(),
            "apply_patch's output came back"
        );
        let replayed = items
            .iter()
            .find(|i| i["call_id"] == "call_patch" && i["type"] == "custom_tool_call")
            .expect("the custom call is replayed");
        assert_eq!(replayed["name"], "apply_patch");
        let created = std::fs::read_to_string(project.join("hello.txt")).expect("the patch ran");
        assert_eq!(created, "hello from the gateway\n");
    }
    if first_tools
        .iter()
        .any(|t| t == "multi_agent_v1__close_agent")
    {
        assert!(
            output_of("call_ns").is_some(),
            "the namespaced call's output came back"
        );
        let replayed = items
            .iter()
            .find(|i| i["call_id"] == "call_ns" && i["type"] == "function_call")
            .expect("the namespaced call is replayed");
        println!("namespaced call replayed as {replayed}");
    }
    // The follow-up translates with the replayed calls under their chat names.
    let names = chat_tools(&seen[1]);
    assert_eq!(names, first_tools);
}
