//! The NVIDIA connector's own documented one-liner, on a bare machine: with only
//! `NVIDIA_API_KEY` set and no configuration file,
//! `tollgate --default-backend nvidia --force-model meta/llama3-70b` builds an implicit `nvidia`
//! backend (the type's defaults and key variable) and serves through it.

mod common;

use common::{run, temp_dir, Tollgate};
use tollgate_testkit::client::{post, stream_text};
use tollgate_testkit::{nim, Answer};

const SEED: [&str; 4] = [
    "--default-backend",
    "nvidia",
    "--force-model",
    "meta/llama3-70b",
];
const KEY: &str = "nvapi-SECRET-seed-0123";

#[test]
fn the_seed_line_checks_and_shows_an_implicit_backend() {
    let dir = temp_dir("seed_check");
    let env = [("NVIDIA_API_KEY", KEY)];
    let (code, out, err) = run(&[&SEED[..], &["check"]].concat(), &env, &dir);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok (1 backend"), "{out}");

    let (code, out, err) = run(&[&SEED[..], &["config", "--sources"]].concat(), &env, &dir);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("backends.nvidia.type: \"nvidia\"  # implicit"),
        "{out}"
    );
    assert!(
        out.contains(
            "backends.nvidia.api_url: \"https://integrate.api.nvidia.com/v1\"  # implicit"
        ),
        "{out}"
    );
    assert!(
        out.contains("backends.nvidia.api_key: \"***\"  # env NVIDIA_API_KEY"),
        "{out}"
    );
    assert!(!out.contains("SECRET"), "the key leaked: {out}");

    let (code, out, _) = run(&[&SEED[..], &["config"]].concat(), &env, &dir);
    assert_eq!(code, 0);
    let v: serde_yaml::Value = serde_yaml::from_str(&out).expect("yaml");
    assert_eq!(
        v["backends"]["nvidia"]["api_url"],
        "https://integrate.api.nvidia.com/v1"
    );
    assert!(!out.contains("SECRET"));

    // Without the key the check still passes (the key is a fallback), and says it is unset.
    let (code, out, _) = run(&[&SEED[..], &["config", "--sources"]].concat(), &[], &dir);
    assert_eq!(code, 0);
    assert!(
        out.contains("backends.nvidia.api_key: null  # env NVIDIA_API_KEY is not set"),
        "{out}"
    );
    // An explicit entry wins over the implicit one.
    std::fs::write(
        dir.join("config.yaml"),
        "backends:\n  nvidia: { api_url: \"http://127.0.0.1:9/v1\" }\n",
    )
    .expect("write");
    let (code, out, _) = run(&[&SEED[..], &["config", "--sources"]].concat(), &env, &dir);
    assert_eq!(code, 0);
    assert!(!out.contains("# implicit"), "{out}");
    assert!(out.contains("backends.nvidia.api_url: \"http://127.0.0.1:9/v1\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_line_serves_a_chat_a_stream_and_lists_models() {
    let up = nim::start(&["meta/llama3-70b", "meta/llama-3.1-8b-instruct"]).await;
    up.push(Answer::chat("pong"));
    up.push(Answer::chat_stream(&["po", "ng"]));
    let dir = temp_dir("seed_serve");
    let url = up.url();
    // The env layer points the backend at the fake; nothing else is configured.
    let env = [
        ("NVIDIA_API_KEY", KEY),
        ("TOLLGATE__BACKENDS__NVIDIA__API_URL", url.as_str()),
        ("TOLLGATE__BACKENDS__NVIDIA__HEALTH_CHECK", "false"),
    ];
    let gw = Tollgate::start(&SEED, &env, &dir);

    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"ping"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("pong"));
    let sent = up.last_call();
    assert_eq!(
        sent.json()["model"],
        "meta/llama3-70b",
        "force_model applies"
    );
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );

    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"x","stream":true,"messages":[{"role":"user","content":"ping"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(stream_text(&r.body), "pong");
    assert!(!r.text().contains("SECRET"));
    drop(gw);

    let args = [&SEED[..], &["models"]].concat();
    let (code, out, err) = tokio::task::spawn_blocking(move || run(&args, &env_owned(&url), &dir))
        .await
        .expect("join");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "nvidia:meta/llama-3.1-8b-instruct",
            "nvidia:meta/llama3-70b"
        ]
    );
    assert!(up.model_lists() >= 1);
}

fn env_owned(url: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("NVIDIA_API_KEY", KEY),
        ("TOLLGATE__BACKENDS__NVIDIA__API_URL", url),
        ("TOLLGATE__BACKENDS__NVIDIA__HEALTH_CHECK", "false"),
    ]
}
