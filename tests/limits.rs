//! Budgets that survive the process (SQLite) and hold across replicas (Redis), with the real
//! binary: `kill -9` and restart, three gateways on one Redis, Redis stopped and back.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{temp_dir, Tollgate};
use tollgate_testkit::client::{get, post, Collected};
use tollgate_testkit::redis::RedisServer;
use tollgate_testkit::{Answer, FakeUpstream, Gate, Options, Recorded};

const KEY: &str = "team-key-1";
const AUTH: [(&str, &str); 1] = [("authorization", "Bearer team-key-1")];

/// An upstream whose usage is 10 prompt tokens plus all of `max_tokens`; a request whose
/// first message says `hang` is held for a minute.
async fn greedy_upstream() -> FakeUpstream {
    let gate: Gate = Arc::new(|req: &Recorded| {
        let body = req.json();
        let asked = body["max_tokens"].as_u64().unwrap_or(16);
        let answer = serde_json::json!({
            "id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": asked, "total_tokens": 10 + asked}
        });
        let answer = Answer::json(200, &answer.to_string());
        if body["messages"][0]["content"] == "hang" {
            return Some(answer.after(Duration::from_secs(60)));
        }
        Some(answer)
    });
    FakeUpstream::start_with(Options {
        gate: Some(gate),
        ..Options::default()
    })
    .await
}

fn ask(max_tokens: u64) -> String {
    format!(
        r#"{{"model":"up:m","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"hi"}}]}}"#
    )
}

fn write_config(dir: &Path, url: &str, state: &str, limits: &str) {
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "backends:\n  up: {{ type: openai, api_url: \"{url}\", api_key: sk-up }}\nauth:\n  keys:\n    - {{ name: team, key: {KEY}, limits: {limits} }}\nstate: {state}\nfailure_handling:\n  retries: 0\nserver:\n  request_timeout: 5\n"
        ),
    )
    .expect("write config");
}

async fn chat(addr: SocketAddr, body: &str, extra: &[(&str, &str)]) -> Collected {
    let mut headers = AUTH.to_vec();
    headers.extend_from_slice(extra);
    post(addr, "/v1/chat/completions", &headers, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_budget_and_idempotency_keys_survive_kill_9_with_sqlite() {
    let up = greedy_upstream().await;
    let dir = temp_dir("limits_sqlite");
    let db = dir.join("state.db");
    write_config(
        &dir,
        &up.url(),
        &format!("{{ store: sqlite, path: \"{}\" }}", db.display()),
        "{ tokens_per_day: 1000 }",
    );
    let mut gw = Tollgate::start(&["--config", "config.yaml"], &[], &dir);
    // 600 of 1000 used: 10 prompt + 590 generated.
    let r = chat(gw.addr, &ask(590), &[("idempotency-key", "order-7")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The answers are written behind, about every second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    gw.child.kill().expect("kill -9");
    let _ = gw.child.wait();
    drop(gw);

    let gw = Tollgate::start(&["--config", "config.yaml"], &[], &dir);
    let r = chat(gw.addr, &ask(500), &[]).await;
    assert_eq!(
        r.status,
        429,
        "a restart is no way round a budget: {}",
        r.text()
    );
    assert!(r.text().contains("tokens_per_day"));
    let calls = up.calls().len();
    let again = chat(gw.addr, &ask(590), &[("idempotency-key", "order-7")]).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        up.calls().len(),
        calls,
        "the replay did not reach the upstream"
    );
    // What is left still serves: 390 tokens.
    let r = chat(gw.addr, &ask(300), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Three gateways on one Redis.
fn replicas(dir: &Path, n: usize) -> Vec<Tollgate> {
    (0..n)
        .map(|_| Tollgate::start(&["--config", "config.yaml"], &[], dir))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_exactly_across_three_replicas_on_one_redis() {
    let Some(redis) = RedisServer::start("limits_hold_exactly_across_three_replicas") else {
        return;
    };
    let up = FakeUpstream::start().await;
    let dir = temp_dir("limits_redis_rpm");
    write_config(
        &dir,
        &up.url(),
        &format!("{{ store: redis, url: \"{}\" }}", redis.url()),
        "{ rpm: 100 }",
    );
    let gws = replicas(&dir, 3);
    let addrs: Vec<SocketAddr> = gws.iter().map(|g| g.addr).collect();
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let addr = addrs[i % 3];
            tokio::spawn(async move {
                let r = chat(addr, &ask(5), &[]).await;
                (r.status, r.text())
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, text) = t.await.expect("task");
        match status.as_u16() {
            200 => ok += 1,
            429 => refused += 1,
            other => panic!("unexpected status {other}: {text}"),
        }
    }
    assert_eq!((ok, refused), (100, 200), "100 rpm across three replicas");
    assert_eq!(up.calls().len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_budget_is_exact_across_replicas() {
    let Some(redis) = RedisServer::start("a_daily_budget_is_exact_across_replicas") else {
        return;
    };
    let up = greedy_upstream().await;
    let dir = temp_dir("limits_redis_budget");
    write_config(
        &dir,
        &up.url(),
        &format!("{{ store: redis, url: \"{}\" }}", redis.url()),
        "{ tokens_per_day: 2000 }",
    );
    let gws = replicas(&dir, 3);
    let addrs: Vec<SocketAddr> = gws.iter().map(|g| g.addr).collect();
    // 30 requests at once, spread over the three. Each reserves 99 tokens (9 of prompt, 90 of
    // output) and uses 100: whatever the interleaving of admissions and settlements, exactly
    // 20 fit (the 21st would need 1980 + 99 > 2000 even with nothing settled yet).
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let addr = addrs[i % 3];
            tokio::spawn(async move { chat(addr, &ask(90), &[]).await.status })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        if t.await.expect("task") == 200 {
            admitted += 1;
        }
    }
    let used: u64 = up
        .calls()
        .iter()
        .map(|c| 10 + c.json()["max_tokens"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!((admitted, used), (20, 2000), "exact across replicas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_burst_loses_no_settled_usage_and_leaks_no_reservation() {
    let Some(redis) = RedisServer::start("a_replica_killed_mid_burst") else {
        return;
    };
    let up = greedy_upstream().await;
    let dir = temp_dir("limits_redis_kill");
    write_config(
        &dir,
        &up.url(),
        &format!("{{ store: redis, url: \"{}\" }}", redis.url()),
        "{ tokens_per_day: 1000 }",
    );
    let mut gws = replicas(&dir, 2);
    let (victim, survivor) = (gws[0].addr, gws[1].addr);
    // One request settles on the victim: 100 tokens used.
    assert_eq!(chat(victim, &ask(90), &[]).await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Two more hang upstream, holding 2 × 209 tokens, when the victim is killed with -9.
    let hang = r#"{"model":"up:m","max_tokens":200,"messages":[{"role":"user","content":"hang"}]}"#;
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { chat(victim, hang, &[]).await.status }))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while up
        .calls()
        .iter()
        .filter(|c| c.json()["messages"][0]["content"] == "hang")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the hanging requests never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut killed = gws.remove(0);
    killed.child.kill().expect("kill -9");
    let _ = killed.child.wait();
    for h in held {
        let _ = h.await;
    }
    // 100 used + 418 held by the dead replica: 500 more do not fit...
    let r = chat(survivor, &ask(491), &[]).await;
    assert_eq!(
        r.status, 429,
        "the dead replica's reservations hold until their lease ends"
    );
    // ...until the lease (request_timeout 5 s + 10 s) has passed: then only the settled 100
    // count, so 904 (895 + 9) does not fit but 500 does.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let r = chat(survivor, &ask(895), &[]).await;
    assert_eq!(
        r.status,
        429,
        "the victim's settled usage is kept: {}",
        r.text()
    );
    let r = chat(survivor, &ask(491), &[]).await;
    assert_eq!(
        r.status,
        200,
        "no reservation outlives its lease: {}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_on_error_decides_and_service_recovers_when_it_returns() {
    let Some(mut redis) = RedisServer::start("while_redis_is_down") else {
        return;
    };
    let up = FakeUpstream::start().await;
    let closed = temp_dir("limits_redis_closed");
    let open = temp_dir("limits_redis_open");
    for (dir, on_error) in [(&closed, "closed"), (&open, "open")] {
        write_config(
            dir,
            &up.url(),
            &format!(
                "{{ store: redis, url: \"{}\", on_error: {on_error} }}",
                redis.url()
            ),
            "{ rpm: 1000 }",
        );
    }
    let gw_closed = Tollgate::start(&["--config", "config.yaml"], &[], &closed);
    let gw_open = Tollgate::start(&["--config", "config.yaml"], &[], &open);
    assert_eq!(chat(gw_closed.addr, &ask(5), &[]).await.status, 200);

    redis.stop();
    let r = chat(gw_closed.addr, &ask(5), &[]).await;
    assert_eq!(r.status, 503, "on_error: closed refuses: {}", r.text());
    assert!(r.text().contains("limits store"), "{}", r.text());
    assert_eq!(
        chat(gw_open.addr, &ask(5), &[]).await.status,
        200,
        "on_error: open admits"
    );
    let ready = get(gw_closed.addr, "/health/ready", &[]).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["state"]["status"], "unreachable");
    let metrics = get(gw_closed.addr, "/metrics", &[]).await.text();
    assert!(metrics.contains("tollgate_state_store_up 0"), "{metrics}");

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = chat(gw_closed.addr, &ask(5), &[]).await.status;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after Redis came back: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(get(gw_closed.addr, "/health/ready", &[]).await.status, 200);
}
