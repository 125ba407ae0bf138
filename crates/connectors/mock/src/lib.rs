//! tollgate-mock: the built-in `mock` backend. It answers chat, completions and embeddings
//! deterministically with no network, optionally with latency and chunk pacing, so the
//! quickstart works with no key and benchmarks measure the gateway alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;
use tollgate_core::{
    BuildContext, Connector, Endpoint, GatewayError, Problem, Registry, Reply, ReplyBody, Request,
    SseEvent,
};

/// The `mock` backend's own keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockOptions {
    /// The answer's text; streamed one word per chunk.
    pub reply: String,
    /// Milliseconds before the response starts.
    pub latency_ms: u64,
    /// Milliseconds between stream chunks.
    pub chunk_delay_ms: u64,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            reply: "Hello from the tollgate mock backend.".into(),
            latency_ms: 0,
            chunk_delay_ms: 0,
        }
    }
}

/// Builds a chunk's `choices` from its text and finish reason.
type ChoicesFn = fn(&str, Option<&str>) -> serde_json::Value;

/// Models listed when the config names none.
const DEFAULT_MODELS: &[&str] = &["mock-1"];

pub struct Mock {
    options: MockOptions,
    /// The reply cut into stream pieces once, at build time.
    pieces: Vec<String>,
    models: Vec<String>,
    /// Makes response ids unique within the process.
    counter: AtomicU64,
}

impl Mock {
    pub fn new(options: MockOptions, models: Vec<String>) -> Self {
        let words: Vec<&str> = options.reply.split_inclusive(' ').collect();
        let pieces = if words.is_empty() {
            vec![String::new()]
        } else {
            words.into_iter().map(str::to_owned).collect()
        };
        let models = if models.is_empty() {
            DEFAULT_MODELS.iter().map(|m| m.to_string()).collect()
        } else {
            models
        };
        Mock {
            options,
            pieces,
            models,
            counter: AtomicU64::new(0),
        }
    }

    fn usage(&self, request_bytes: usize) -> serde_json::Value {
        // A rough, deterministic count: about four bytes of request per prompt token.
        let prompt = (request_bytes / 4).max(1) as u64;
        let completion = self.pieces.len() as u64;
        json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
    }

    fn complete(
        &self,
        endpoint: Endpoint,
        model: &str,
        id: &str,
        created: u64,
        usage: serde_json::Value,
    ) -> Bytes {
        let body = match endpoint {
            Endpoint::ChatCompletions => json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": self.options.reply},
                    "finish_reason": "stop"
                }],
                "usage": usage,
            }),
            Endpoint::Completions => json!({
                "id": id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": self.options.reply, "finish_reason": "stop", "logprobs": null}],
                "usage": usage,
            }),
            Endpoint::Messages | Endpoint::CountTokens | Endpoint::Responses => {
                json!({"error": {"message": "not a chat endpoint", "type": "invalid_request_error"}})
            }
            Endpoint::Embeddings => {
                let embedding: Vec<f32> = (0..8).map(|i| (i as f32 + 1.0) / 8.0).collect();
                json!({
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": embedding}],
                    "model": model,
                    "usage": {"prompt_tokens": usage["prompt_tokens"], "total_tokens": usage["prompt_tokens"]},
                })
            }
        };
        Bytes::from(body.to_string())
    }

    fn stream_events(
        &self,
        endpoint: Endpoint,
        model: &str,
        id: &str,
        created: u64,
        usage: Option<serde_json::Value>,
    ) -> Vec<SseEvent> {
        let (object, piece_json): (&str, ChoicesFn) = match endpoint {
            Endpoint::Completions => (
                "text_completion",
                |text, finish| json!([{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}]),
            ),
            _ => ("chat.completion.chunk", |text, finish| {
                let delta = if finish.is_some() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                json!([{"index": 0, "delta": delta, "finish_reason": finish}])
            }),
        };
        let chunk = |choices: serde_json::Value| {
            let v = json!({"id": id, "object": object, "created": created, "model": model, "choices": choices});
            SseEvent::data(v.to_string().as_bytes())
        };
        let mut events: Vec<SseEvent> = Vec::with_capacity(self.pieces.len() + 3);
        if endpoint == Endpoint::ChatCompletions {
            events.push(chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}])));
        }
        for piece in &self.pieces {
            events.push(chunk(piece_json(piece, None)));
        }
        events.push(chunk(piece_json("", Some("stop"))));
        if let Some(usage) = usage {
            let v = json!({"id": id, "object": object, "created": created, "model": model, "choices": [], "usage": usage});
            events.push(SseEvent::data(v.to_string().as_bytes()));
        }
        events.push(SseEvent::data(b"[DONE]"));
        events
    }
}

#[async_trait]
impl Connector for Mock {
    async fn send(&self, request: Request) -> Result<Reply, GatewayError> {
        // The mock speaks Chat only; the server translates the other doors' requests first.
        if request.endpoint.protocol() != tollgate_core::Protocol::Chat {
            return Err(GatewayError::invalid(format!(
                "the mock backend does not serve `{}` requests",
                request.endpoint.label()
            )));
        }
        if self.options.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.options.latency_ms)).await;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("mock-{n}");
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let request_bytes = request.body.to_bytes().len();
        let usage = self.usage(request_bytes);
        if !request.stream || request.endpoint == Endpoint::Embeddings {
            let body = self.complete(request.endpoint, &request.model, &id, created, usage);
            return Ok(Reply {
                headers: HeaderMap::new(),
                body: ReplyBody::Complete(body),
            });
        }
        let include_usage = request
            .body
            .decode::<serde_json::Value>("stream_options")
            .ok()
            .flatten()
            .and_then(|o| o.get("include_usage").and_then(|v| v.as_bool()))
            .unwrap_or(false);
        // Like the OpenAI-compatible connector, the usage chunk always comes, and is the
        // gateway's own (read, not relayed) when the client did not ask for it.
        let mut events =
            self.stream_events(request.endpoint, &request.model, &id, created, Some(usage));
        if !include_usage {
            if let Some(at) = events.len().checked_sub(2) {
                let chunk = events.remove(at);
                events.insert(at, chunk.hidden());
            }
        }
        let delay = Duration::from_millis(self.options.chunk_delay_ms);
        let body: tollgate_core::EventStream = if delay.is_zero() {
            Box::pin(stream::iter(events.into_iter().map(Ok)))
        } else {
            Box::pin(stream::unfold(
                (events.into_iter(), true),
                move |(mut it, first)| async move {
                    let event = it.next()?;
                    if !first {
                        tokio::time::sleep(delay).await;
                    }
                    Some((Ok(event), (it, false)))
                },
            ))
        };
        Ok(Reply {
            headers: HeaderMap::new(),
            body: ReplyBody::Events(body),
        })
    }

    async fn list_models(&self) -> Result<Vec<String>, GatewayError> {
        Ok(self.models.clone())
    }
}

/// Builds a `mock` backend.
pub fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let options: MockOptions = ctx.options("mock").map_err(|p| vec![p])?;
    Ok(Arc::new(Mock::new(options, ctx.config.models.clone())))
}

/// Registers the `mock` type.
pub fn register(registry: &mut Registry) {
    registry.register("mock", build);
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tollgate_core::{ClientRequest, Peek};

    fn request(body: &str) -> Request {
        let c = ClientRequest::parse(Endpoint::ChatCompletions, body.as_bytes()).expect("valid");
        Request {
            endpoint: c.endpoint,
            model: "mock-1".into(),
            stream: c.stream,
            body: c.body,
            request_id: "r".into(),
            headers: Default::default(),
        }
    }

    #[tokio::test]
    async fn streams_the_reply_word_by_word_with_usage_on_request() {
        let mock = Mock::new(
            MockOptions {
                reply: "a b c".into(),
                ..Default::default()
            },
            vec![],
        );
        let reply = mock
            .send(request(r#"{"model":"x","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#))
            .await
            .expect("answers");
        let ReplyBody::Events(events) = reply.body else {
            panic!("stream")
        };
        let events: Vec<SseEvent> = events.map(|e| e.expect("event")).collect().await;
        assert!(events.last().expect("events").is_done());
        let mut text = String::new();
        let mut usage = None;
        for e in &events[..events.len() - 1] {
            let payload = e.payload().expect("data");
            let v: serde_json::Value = serde_json::from_slice(&payload).expect("json");
            if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(c);
            }
            usage = usage.or(Peek::read(&payload).usage);
        }
        assert_eq!(text, "a b c");
        assert_eq!(usage.map(|u| u.completion_tokens), Some(3));
    }

    #[tokio::test]
    async fn non_streaming_has_usage_and_the_model() {
        let mock = Mock::new(MockOptions::default(), vec![]);
        let reply = mock
            .send(request(r#"{"model":"x","messages":[]}"#))
            .await
            .expect("answers");
        let ReplyBody::Complete(body) = reply.body else {
            panic!("complete")
        };
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["model"], "mock-1");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            MockOptions::default().reply
        );
        assert!(v["usage"]["total_tokens"].as_u64().is_some_and(|t| t > 0));
    }
}
