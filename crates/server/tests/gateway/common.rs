//! Starting a gateway for a test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tollgate_core::{Config, Env, Registry};
use tollgate_server::{Gateway, Runtime, Serving};
use tollgate_testkit::client::Collected;

/// Upstream key used by tests; asserted never to reach a client.
pub const UPSTREAM_KEY: &str = "sk-upstream-SECRET-0123456789";

pub struct TestGateway {
    pub addr: SocketAddr,
    /// The gateway itself, for tests that reload or inspect it.
    #[allow(dead_code)]
    pub gateway: Arc<Gateway>,
    /// Serving until the test ends.
    _serving: Serving,
}

pub fn registry() -> Registry {
    let mut r = Registry::new();
    tollgate_mock::register(&mut r);
    tollgate_openai::register(&mut r);
    r
}

pub async fn start(yaml: &str) -> TestGateway {
    start_with_env(yaml, HashMap::new()).await
}

pub async fn start_with_env(yaml: &str, vars: HashMap<String, String>) -> TestGateway {
    let config: Config = serde_yaml::from_str(yaml).expect("test config parses");
    let env = Env::from_map(vars);
    let registry = registry();
    let runtime = match Runtime::build(config, &registry, &env, None) {
        Ok(r) => r,
        Err(problems) => panic!("test config invalid: {problems:?}"),
    };
    let gateway = Gateway::new(runtime, registry, env);
    let serving = Serving::start(gateway.clone(), "127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    TestGateway {
        addr: serving.addr(),
        gateway,
        _serving: serving,
    }
}

/// A config with one `openai` backend named `up` at `url`, with the test upstream key.
pub fn openai_backend(url: &str) -> String {
    format!("backends:\n  up:\n    type: openai\n    api_url: {url}\n    api_key: {UPSTREAM_KEY}\n")
}

/// No retries: each upstream answer reaches the client as it is.
pub const NO_RETRIES: &str = "failure_handling:\n  retries: 0\n";

/// Fails when the upstream key appears in any response header or in the body.
pub fn assert_no_upstream_key(resp: &Collected) {
    for (name, value) in &resp.headers {
        let v = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !v.contains(UPSTREAM_KEY) && !v.contains("SECRET"),
            "header {name} leaks the key"
        );
    }
    assert!(
        !resp.text().contains("SECRET"),
        "body leaks the key: {}",
        resp.text()
    );
}

pub const CHAT: &str = "/v1/chat/completions";
