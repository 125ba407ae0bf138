//! `/v1/models` and the health endpoints.

use tollgate_testkit::client::get;
use tollgate_testkit::{FakeUpstream, Options};

use crate::common::*;

#[tokio::test]
async fn models_are_listed_as_backend_colon_model_with_routes() {
    let up = FakeUpstream::start_with(Options {
        models: vec!["gpt-4o".into(), "blocked-model".into()],
        ..Default::default()
    })
    .await;
    let gw = start(&format!(
        "backends:\n  up: {{ type: openai, api_url: \"{}\", denied_models: [\"blocked*\"] }}\n  mock: {{ models: [\"m1\", \"m2\"] }}\nroutes:\n  fast: [\"mock:m1\"]\n",
        up.url()
    ))
    .await;
    let r = get(gw.addr, "/v1/models", &[]).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["fast", "mock:m1", "mock:m2", "up:gpt-4o"]);
    assert_eq!(v["data"][0]["object"], "model");

    let r = get(gw.addr, "/v1/models/up:gpt-4o", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], "up:gpt-4o");
    let r = get(gw.addr, "/v1/models/up%3Agpt-4o", &[]).await;
    assert_eq!(r.json()["id"], "up:gpt-4o");
    let r = get(gw.addr, "/v1/models/up:blocked-model", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    assert!(up.received().iter().any(|r| r.path == "/v1/models"));
}

#[tokio::test]
async fn health_reports_live_and_ready() {
    let gw = start("backends:\n  mock: {}\n").await;
    let r = get(gw.addr, "/health/live", &[]).await;
    assert_eq!(r.status, 200);
    let r = get(gw.addr, "/health/ready", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["backends"]["mock"]["status"], "ok");

    let empty = start("{}").await;
    let r = get(empty.addr, "/health/ready", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.json()["reason"]
        .as_str()
        .is_some_and(|s| s.contains("no backends")));
}
