//! The dashboard through the real binary: in Debian's chromium, headless, driven by
//! Playwright's Python package (tests/browser/dashboard.py: no console errors, a chat stream
//! in flight within 1 s then finished with its status, its timeline's keepalives, phone
//! width, a screenshot in target/dashboard.png); and a refused reload of the file shown in
//! /dashboard/state.
//!
//! CI (.ci/run) installs `chromium` and `playwright` and sets TOLLGATE_REQUIRE_BROWSER=1, so
//! there the browser test cannot be skipped; elsewhere it skips with a message when either is
//! missing.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{replace_file, temp_dir, Tollgate};
use tollgate_testkit::client::get;

const CHROMIUM: &str = "/usr/bin/chromium";
const ADMIN_KEY: &str = "browser-admin-key-0123456789";
const CLIENT_KEY: &str = "browser-client-key-abcdef";

fn config(extra: &str) -> String {
    format!(
        "backends:\n  mock:\n    type: mock\n    reply: \"one two three\"\n    chunk_delay_ms: 1500\nfailure_handling:\n  keepalive_interval: 1\nauth:\n  keys:\n    - {{ name: ci, key: {CLIENT_KEY}, limits: {{ rpm: 600 }} }}\ndashboard:\n  enabled: true\n  key_env: DASHBOARD_ADMIN_KEY\n{extra}"
    )
}

fn start(dir: &Path) -> Tollgate {
    Tollgate::start(
        &["--config", "config.yaml"],
        &[("DASHBOARD_ADMIN_KEY", ADMIN_KEY)],
        dir,
    )
}

/// Why the browser test cannot run here, if it cannot.
fn browser_missing() -> Option<String> {
    if !Path::new(CHROMIUM).exists() {
        return Some(format!("{CHROMIUM} not found (apt-get install chromium)"));
    }
    let playwright = Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .status()
        .is_ok_and(|s| s.success());
    if !playwright {
        return Some("the playwright Python package is missing (pip install playwright)".into());
    }
    None
}

#[test]
fn the_page_in_chromium_shows_a_stream_from_start_to_end() {
    if let Some(why) = browser_missing() {
        assert!(
            std::env::var("TOLLGATE_REQUIRE_BROWSER").is_err(),
            "TOLLGATE_REQUIRE_BROWSER is set but {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let dir = temp_dir("dashboard_browser");
    std::fs::write(dir.join("config.yaml"), config("")).expect("write config");
    let gw = start(&dir);
    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/dashboard.py");
    let out = Command::new("python3")
        .arg(script)
        .arg("--url")
        .arg(format!("http://{}", gw.addr))
        .args(["--admin-key", ADMIN_KEY, "--client-key", CLIENT_KEY])
        .arg("--screenshot")
        .arg(&screenshot)
        .arg("--chromium")
        .arg(CHROMIUM)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser check failed:\n{stdout}\n{stderr}\ngateway log:\n{}",
        gw.logs().join("\n")
    );
    assert!(stdout.lines().any(|l| l == "ok"), "{stdout}");
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
    eprintln!("{stdout}screenshot: {}", screenshot.display());
    // The admin key never reached a log line.
    assert!(!gw.logs().iter().any(|l| l.contains(ADMIN_KEY)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_of_the_file_is_shown_with_its_problems() {
    let dir = temp_dir("dashboard_reload");
    let file = dir.join("config.yaml");
    std::fs::write(&file, config("")).expect("write config");
    let gw = start(&dir);
    let admin = format!("Bearer {ADMIN_KEY}");
    let headers = [("authorization", admin.as_str())];
    let reloads = |s: &serde_json::Value| s["config"]["reloads"].clone();
    let before = reloads(&get(gw.addr, "/dashboard/state", &headers).await.json());
    assert_eq!(before["refused"], 0);

    // An unknown key and a bad value: refused, and the running configuration stays.
    replace_file(
        &file,
        &config("routes:\n  fast: []\nfailure_handling_typo: 1\n"),
    );
    let until = Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let r = reloads(&get(gw.addr, "/dashboard/state", &headers).await.json());
        if r["refused"] == 1 {
            break r;
        }
        assert!(Instant::now() < until, "no refusal recorded: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refused["last_failed"], true);
    let problems = refused["last_refused"]["problems"].to_string();
    assert!(problems.contains("failure_handling_typo"), "{problems}");
    assert!(
        problems.contains("config.yaml"),
        "located in the file: {problems}"
    );

    // A good edit: loaded, and the refusal is history.
    replace_file(&file, &config("routes:\n  fast: [\"mock:mock-1\"]\n"));
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let r = reloads(&get(gw.addr, "/dashboard/state", &headers).await.json());
        if r["succeeded"] == 1 {
            assert_eq!(r["last_failed"], false);
            assert!(r["loaded_at"].as_u64() > before["loaded_at"].as_u64());
            assert_eq!(r["refused"], 1, "kept: {r}");
            break;
        }
        assert!(Instant::now() < until, "the good edit was not loaded: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
