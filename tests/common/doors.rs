//! What the door tests share: an in-process gateway in front of a strict fake NIM, scripted
//! chat.completions streams (text, reasoning, tool calls in fragments), and the official Python
//! SDKs run one scenario at a time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;

use tollgate_core::{Config, Env, Registry};
use tollgate_server::{Gateway, Runtime, Serving};
use tollgate_testkit::{Answer, Step, StreamEnd};

/// The fake NIM's key: asserted never to reach a client.
pub const NIM_KEY: &str = "nvapi-SECRET-doors-0123";
/// The client key the SDK scripts send (`TOLLGATE_KEY`): asserted never to reach an upstream.
pub const CLIENT_KEY: &str = "client-SECRET-doors-4567";

pub struct DoorGateway {
    pub addr: SocketAddr,
    _serving: Serving,
}

pub fn registry() -> Registry {
    let mut r = Registry::new();
    tollgate_mock::register(&mut r);
    tollgate_openai::register(&mut r);
    tollgate_nvidia::register(&mut r);
    tollgate_openrouter::register(&mut r);
    r
}

/// A gateway for `yaml` (its whole environment: `NVIDIA_API_KEY`).
pub async fn start(yaml: &str) -> DoorGateway {
    let config: Config = serde_yaml::from_str(yaml).expect("test config parses");
    let env = Env::from_map(HashMap::from([(
        "NVIDIA_API_KEY".to_string(),
        NIM_KEY.to_string(),
    )]));
    let registry = registry();
    let runtime = match Runtime::build(config, &registry, &env, None) {
        Ok(r) => r,
        Err(problems) => panic!("test config invalid: {problems:?}"),
    };
    let serving = Serving::start(Gateway::new(runtime, registry, env), "127.0.0.1:0")
        .await
        .expect("bind");
    DoorGateway {
        addr: serving.addr(),
        _serving: serving,
    }
}

/// An `nvidia` backend at the fake, with no retries (each scripted answer is used once).
pub fn nim_config(url: &str, extra: &str) -> String {
    format!(
        "backends:\n  nvidia:\n    api_url: {url}\n    health_check: false\nfailure_handling:\n  retries: 0\n  keepalive_interval: 1\n{extra}"
    )
}

fn chunk(delta: serde_json::Value, finish: Option<&str>) -> String {
    let v = serde_json::json!({
        "id": "chatcmpl-doors",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000u64,
        "model": "meta/llama-3.1-8b-instruct",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    format!("data: {v}\n\n")
}

/// One piece of a scripted chat stream.
pub enum Piece<'a> {
    Text(&'a str),
    Reasoning(&'a str),
    /// The first fragment of tool call `index`: its id and name, no arguments yet.
    ToolStart {
        index: u32,
        id: &'a str,
        name: &'a str,
    },
    /// More arguments text for tool call `index`.
    ToolArgs {
        index: u32,
        args: &'a str,
    },
}

/// A chat stream of `pieces`, ending with `finish` and a usage chunk (prompt 11, completion 7).
pub fn chat_stream(pieces: &[Piece<'_>], finish: &str, end: StreamEnd) -> Answer {
    let mut steps = vec![Step::Raw(chunk(
        serde_json::json!({"role": "assistant", "content": ""}),
        None,
    ))];
    for piece in pieces {
        let delta = match piece {
            Piece::Text(t) => serde_json::json!({"content": t}),
            Piece::Reasoning(t) => serde_json::json!({"reasoning_content": t}),
            Piece::ToolStart { index, id, name } => serde_json::json!({"tool_calls": [
                {"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}
            ]}),
            Piece::ToolArgs { index, args } => serde_json::json!({"tool_calls": [
                {"index": index, "function": {"arguments": args}}
            ]}),
        };
        steps.push(Step::Raw(chunk(delta, None)));
    }
    if end == StreamEnd::Cut {
        return Answer::Sse {
            status: 200,
            steps,
            end,
        };
    }
    steps.push(Step::Raw(chunk(serde_json::json!({}), Some(finish))));
    let usage = serde_json::json!({
        "id": "chatcmpl-doors", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
        "model": "meta/llama-3.1-8b-instruct", "choices": [],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    });
    steps.push(Step::Raw(format!("data: {usage}\n\n")));
    steps.push(Step::Raw("data: [DONE]\n\n".into()));
    Answer::Sse {
        status: 200,
        steps,
        end,
    }
}

/// A whole chat.completion answering `content` (usage 11 + 7).
pub fn chat_answer(content: &str) -> Answer {
    let v = serde_json::json!({
        "id": "chatcmpl-doors", "object": "chat.completion", "created": 1_700_000_000u64,
        "model": "meta/llama-3.1-8b-instruct",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    });
    Answer::json(200, &v.to_string())
}

/// Whether the SDK named `module` is importable; fails instead when CI requires it.
pub fn sdk(module: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("TOLLGATE_REQUIRE_SDK").is_err(),
            "TOLLGATE_REQUIRE_SDK is set but `import {module}` fails: pip install {module}"
        );
        eprintln!("skipped: the {module} Python package is not installed");
    }
    ok
}

/// Runs `script scenario` against the gateway and returns the JSON it printed.
pub async fn run_sdk(script: &str, scenario: &str, addr: SocketAddr) -> serde_json::Value {
    let script = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let scenario = scenario.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(&script)
            .arg(&scenario)
            .env("TOLLGATE_URL", format!("http://{addr}"))
            .env("TOLLGATE_KEY", CLIENT_KEY)
            .output()
            .expect("python3 runs")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK scenario failed:\n{stdout}\n{stderr}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}
