//! How a backend's key and headers are sent: `auth_header` templates, `default_headers`.

use tollgate_testkit::client::post;
use tollgate_testkit::{Answer, FakeUpstream};

use crate::common::*;

const BODY: &str = r#"{"model":"up:m","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn an_auth_header_template_sends_exactly_that_header() {
    let up = FakeUpstream::start().await;
    up.set_default(Answer::chat("ok"));
    let gw = start(&format!(
        "{}    auth_header: \"X-Api-Key: {{{{ key }}}}\"\n    default_headers: {{ anthropic-version: \"2023-06-01\", x-extra: \"one\" }}\n    headers: {{ x-extra: \"fixed\" }}\n",
        openai_backend(&up.url())
    ))
    .await;
    let r = post(gw.addr, CHAT, &[], BODY).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = up.last_call();
    assert_eq!(sent.header("x-api-key"), Some(UPSTREAM_KEY));
    assert_eq!(
        sent.header("authorization"),
        None,
        "no Authorization besides the template"
    );
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        sent.header("x-extra"),
        Some("fixed"),
        "a configured header wins over a default"
    );
}

#[tokio::test]
async fn the_default_is_bearer() {
    let up = FakeUpstream::start().await;
    let gw = start(&openai_backend(&up.url())).await;
    assert_eq!(post(gw.addr, CHAT, &[], BODY).await.status, 200);
    assert_eq!(
        up.last_call().header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
}

#[test]
fn templates_without_exactly_one_placeholder_are_refused() {
    for (template, why) in [
        ("X-Api-Key: key", "no {{ key }}"),
        ("X-Api-Key: {{ key }}{{ key }}", "2 {{ key }} placeholders"),
    ] {
        let yaml = format!("backends:\n  up: {{ type: openai, auth_header: \"{template}\" }}\n");
        let config: tollgate_core::Config = serde_yaml::from_str(&yaml).expect("yaml");
        let problems = config.validate(&["openai"]);
        assert!(
            problems
                .iter()
                .any(|p| p.path == "backends.up.auth_header" && p.message.contains(why)),
            "{template}: {problems:?}"
        );
    }
}
