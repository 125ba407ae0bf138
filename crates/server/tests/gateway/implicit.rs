//! Connector types usable by name with no `backends:` entry (SPEC §1): named where a backend
//! is expected they are built with the type's defaults; named only by a request's prefix they
//! route but are not listed.

use tollgate_testkit::client::{get, post};

use crate::common::*;

#[tokio::test]
async fn a_type_named_by_a_request_prefix_routes_with_no_configuration() {
    let gw = start("{}").await;
    let r = post(
        gw.addr,
        CHAT,
        &[],
        r#"{"model":"mock:mock-1","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tollgate-backend"), Some("mock"));
    // Built on demand, not configured: nothing is listed, and readiness says so.
    let models = get(gw.addr, "/v1/models", &[]).await;
    assert_eq!(models.json()["data"], serde_json::json!([]));
    let ready = get(gw.addr, "/health/ready", &[]).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["reason"], "no backends are configured");
    // A prefix that is no type still goes nowhere.
    let r = post(gw.addr, CHAT, &[], r#"{"model":"llama3:8b","messages":[]}"#).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn a_type_named_as_default_backend_is_built_and_listed() {
    let gw = start("default_backend: mock\nroutes:\n  fast: [\"mock:mock-1\"]\n").await;
    let r = post(
        gw.addr,
        CHAT,
        &[],
        r#"{"model":"anything","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ids: Vec<String> = get(gw.addr, "/v1/models", &[]).await.json()["data"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, ["fast", "mock:mock-1"]);
    assert_eq!(get(gw.addr, "/health/ready", &[]).await.status, 200);
}
