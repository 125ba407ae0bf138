//! Client keys: required when configured, never forwarded upstream, and limited to their models.

use std::collections::HashMap;

use tollgate_testkit::client::{get, post};
use tollgate_testkit::FakeUpstream;

use crate::common::*;

#[tokio::test]
async fn keys_are_required_checked_and_never_forwarded() {
    let up = FakeUpstream::start().await;
    let config = format!(
        "{}auth:\n  keys:\n    - {{ name: ci, key_env: CI_PROXY_KEY, allowed_models: [\"up:allowed*\"] }}\n    - {{ name: admin, key: admin-key }}\n",
        openai_backend(&up.url())
    );
    let env = HashMap::from([("CI_PROXY_KEY".to_string(), "ci-key-123".to_string())]);
    let gw = start_with_env(&config, env).await;
    let body = r#"{"model":"up:allowed-1","messages":[]}"#;

    let r = post(gw.addr, CHAT, &[], body).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let r = post(gw.addr, CHAT, &[("authorization", "Bearer wrong")], body).await;
    assert_eq!(r.status, 401);
    assert!(
        !r.text().contains("wrong"),
        "the presented key is not echoed"
    );

    let r = post(
        gw.addr,
        CHAT,
        &[("authorization", "Bearer ci-key-123")],
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(gw.addr, CHAT, &[("x-api-key", "admin-key")], body).await;
    assert_eq!(r.status, 200);
    for call in up.calls() {
        let auth = call.header("authorization").expect("upstream auth");
        assert_eq!(auth, format!("Bearer {UPSTREAM_KEY}"));
        assert!(call.header("x-api-key").is_none());
        for (_, v) in &call.headers {
            let v = String::from_utf8_lossy(v.as_bytes());
            assert!(
                !v.contains("ci-key-123") && !v.contains("admin-key"),
                "client key forwarded"
            );
        }
    }

    let r = post(
        gw.addr,
        CHAT,
        &[("authorization", "Bearer ci-key-123")],
        r#"{"model":"up:other","messages":[]}"#,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "permission_denied");
    assert_eq!(up.calls().len(), 2);

    // Health needs no key; models does.
    assert_eq!(get(gw.addr, "/health/live", &[]).await.status, 200);
    assert_eq!(get(gw.addr, "/v1/models", &[]).await.status, 401);
}
