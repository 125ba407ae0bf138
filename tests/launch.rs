//! `tollgate code` with stand-in agents on PATH: a script named `claude` (or `codex`) records
//! its environment, sends one request to the gateway it was pointed at, and exits with a code
//! of its own. The gateway started for it answers, and is gone once the script has exited.

mod common;

use std::path::Path;

use common::{run, temp_dir};

/// Writes an executable Python stand-in named `name` into `dir`.
fn stand_in(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/usr/bin/env python3\n{body}")).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// PATH with `bin` first and the system's own directories (for python3).
fn path_with(bin: &Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

const CLAUDE: &str = r#"
import json, os, sys, urllib.request
base = os.environ["ANTHROPIC_BASE_URL"]
with open(os.environ["RECORD"], "w") as f:
    json.dump({k: v for k, v in os.environ.items() if k.startswith("ANTHROPIC")} | {"argv": sys.argv[1:]}, f)
req = urllib.request.Request(
    base + "/v1/messages/count_tokens?beta=true",
    data=json.dumps({"model": "claude-haiku-5-5", "messages": [{"role": "user", "content": "hello there"}]}).encode(),
    headers={"content-type": "application/json", "authorization": "Bearer " + os.environ["ANTHROPIC_AUTH_TOKEN"], "anthropic-version": "2023-06-01"},
)
answer = json.load(urllib.request.urlopen(req))
req = urllib.request.Request(
    base + "/v1/messages?beta=true",
    data=json.dumps({"model": os.environ["ANTHROPIC_MODEL"], "max_tokens": 64, "messages": [{"role": "user", "content": "say hi"}]}).encode(),
    headers={"content-type": "application/json", "authorization": "Bearer " + os.environ["ANTHROPIC_AUTH_TOKEN"], "anthropic-version": "2023-06-01"},
)
answer["message"] = json.load(urllib.request.urlopen(req))
with open(os.environ["RECORD"] + ".answer", "w") as f:
    json.dump(answer, f)
# Without the session key the gateway refuses.
try:
    urllib.request.urlopen(urllib.request.Request(base + "/v1/messages/count_tokens", data=b"{}", headers={"content-type": "application/json"}))
    print("open gateway", file=sys.stderr); sys.exit(1)
except urllib.error.HTTPError as e:
    assert e.code == 401, e.code
print(base)
sys.exit(7)
"#;

#[test]
fn claude_runs_against_a_session_gateway_and_its_exit_code_is_passed_on() {
    let dir = temp_dir("launch_claude");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    stand_in(&bin, "claude", CLAUDE);
    std::fs::write(
        dir.join("config.yaml"),
        "default_backend: mock\nanthropic:\n  models: { \"claude-*\": \"mock:mock-1\" }\n",
    )
    .expect("write");
    let record = dir.join("env.json");
    let path = path_with(&bin);
    let env = [
        ("PATH", path.as_str()),
        ("RECORD", record.to_str().expect("utf-8")),
        ("ANTHROPIC_API_KEY", "sk-ant-real-key-must-not-ride-along"),
    ];
    let (code, out, err) = run(
        &["code", "--model", "mock:mock-1", "--", "-p", "say hi"],
        &env,
        &dir,
    );
    assert_eq!(code, 7, "the agent's exit code: {out}{err}");
    let seen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).expect("record")).expect("json");
    let base = seen["ANTHROPIC_BASE_URL"].as_str().expect("base url");
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert!(seen["ANTHROPIC_AUTH_TOKEN"]
        .as_str()
        .is_some_and(|k| k.starts_with("tg-session-")));
    assert!(seen.get("ANTHROPIC_API_KEY").is_none(), "{seen}");
    for var in [
        "ANTHROPIC_MODEL",
        "ANTHROPIC_DEFAULT_OPUS_MODEL",
        "ANTHROPIC_DEFAULT_SONNET_MODEL",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL",
        "ANTHROPIC_CUSTOM_MODEL_OPTION",
    ] {
        assert_eq!(seen[var], "mock:mock-1", "{var}");
    }
    assert_eq!(seen["argv"], serde_json::json!(["-p", "say hi"]));
    let answer: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("env.json.answer")).expect("answer"),
    )
    .expect("json");
    assert!(
        answer["input_tokens"].as_u64().is_some_and(|n| n > 0),
        "{answer}"
    );
    // The gateway stopped with the agent.
    let addr = base.trim_start_matches("http://");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the session gateway still listens on {addr}"
    );
}

#[test]
fn codex_gets_a_generated_responses_provider() {
    let dir = temp_dir("launch_codex");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    stand_in(
        &bin,
        "codex",
        r#"
import os, shutil, sys, urllib.request
home = os.environ["CODEX_HOME"]
shutil.copy(os.path.join(home, "config.toml"), os.environ["RECORD"])
base = [l.split("=", 1)[1].strip().strip('"') for l in open(os.path.join(home, "config.toml")) if l.startswith("base_url")][0]
import json
req = urllib.request.Request(
    base + "/responses",
    data=json.dumps({"model": "mock:mock-1", "input": "hi"}).encode(),
    headers={"content-type": "application/json", "authorization": "Bearer " + os.environ["TOLLGATE_API_KEY"]},
)
answer = json.load(urllib.request.urlopen(req))
print(answer["object"], answer["status"], answer["output"][0]["content"][0]["text"])
sys.exit(0)
"#,
    );
    std::fs::write(dir.join("config.yaml"), "default_backend: mock\n").expect("write");
    let record = dir.join("config.toml.seen");
    let path = path_with(&bin);
    let env = [
        ("PATH", path.as_str()),
        ("RECORD", record.to_str().expect("utf-8")),
    ];
    let (code, out, err) = run(&["code", "--codex", "--model", "mock:mock-1"], &env, &dir);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        "response completed Hello from the tollgate mock backend."
    );
    let toml = std::fs::read_to_string(&record).expect("config.toml");
    assert!(toml.contains("model = \"mock:mock-1\""), "{toml}");
    assert!(toml.contains("model_provider = \"tollgate\""), "{toml}");
    assert!(toml.contains("wire_api = \"responses\""), "{toml}");
    assert!(toml.contains("base_url = \"http://127.0.0.1:"), "{toml}");
    assert!(toml.contains("env_key = \"TOLLGATE_API_KEY\""), "{toml}");
}

#[test]
fn without_the_agent_on_path_it_says_what_to_install() {
    let dir = temp_dir("launch_missing");
    let empty = dir.join("empty-bin");
    std::fs::create_dir_all(&empty).expect("bin");
    let path = empty.display().to_string();
    let (code, _, err) = run(&["code"], &[("PATH", path.as_str())], &dir);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`claude` is not on PATH"), "{err}");
    assert!(
        err.contains("npm install -g @anthropic-ai/claude-code"),
        "{err}"
    );
    let (code, _, err) = run(&["code", "--codex"], &[("PATH", path.as_str())], &dir);
    assert_eq!(code, 2);
    assert!(err.contains("npm install -g @openai/codex"), "{err}");
}
