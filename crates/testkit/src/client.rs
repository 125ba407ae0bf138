//! A plain HTTP/1.1 test client: one TCP connection per request, so a test decides exactly
//! when the connection closes (to simulate a client that goes away).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A whole response.
#[derive(Debug, Clone)]
pub struct Collected {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Collected {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An open response whose body is read piece by piece.
pub struct Open {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Incoming,
    conn: tokio::task::JoinHandle<()>,
}

impl Open {
    /// The next body chunk with the time it arrived; `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<(Instant, Bytes), String>> {
        loop {
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok((Instant::now(), data)));
                    }
                }
                Err(e) => return Some(Err(e.to_string())),
            }
        }
    }

    /// Reads to the end; chunks with arrival times, and the error that ended it, if any.
    pub async fn read_all(&mut self) -> (Vec<(Instant, Bytes)>, Option<String>) {
        let mut chunks = Vec::new();
        while let Some(next) = self.next_chunk().await {
            match next {
                Ok(c) => chunks.push(c),
                Err(e) => return (chunks, Some(e)),
            }
        }
        (chunks, None)
    }

    /// Closes the connection at once, as a client that goes away.
    pub fn disconnect(self) {
        self.conn.abort();
        drop(self.body);
    }
}

/// Sends a request and returns as soon as the status line and headers arrived.
pub async fn open(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Open {
    let stream = TcpStream::connect(addr).await.expect("connect to gateway");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http/1.1 handshake");
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::new(Full::new(body.into()));
    *req.method_mut() = method;
    *req.uri_mut() = path.parse().expect("path");
    let h = req.headers_mut();
    h.insert("host", addr.to_string().parse().expect("host"));
    for (name, value) in headers {
        h.append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    if !h.contains_key("content-type") {
        h.insert("content-type", "application/json".parse().expect("static"));
    }
    let resp = sender.send_request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    Open {
        status: parts.status,
        headers: parts.headers,
        body,
        conn,
    }
}

/// Sends a request and reads the whole response (within 30 s).
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Collected {
    let fut = async {
        let mut open = open(addr, method, path, headers, body).await;
        let (chunks, error) = open.read_all().await;
        assert!(error.is_none(), "body broke: {error:?}");
        let mut body = Vec::new();
        for (_, c) in chunks {
            body.extend_from_slice(&c);
        }
        Collected {
            status: open.status,
            headers: open.headers.clone(),
            body: Bytes::from(body),
        }
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("response within 30 s")
}

/// POSTs JSON.
pub async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Collected {
    send(addr, Method::POST, path, headers, body.to_owned()).await
}

/// GETs a path.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Collected {
    send(addr, Method::GET, path, headers, Bytes::new()).await
}

/// Splits an SSE body into its events' data payloads (comments skipped), in order.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    text.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("data:")
                        .map(|d| d.strip_prefix(' ').unwrap_or(d))
                })
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// The assistant text of an OpenAI chat stream body.
pub fn stream_text(body: &[u8]) -> String {
    sse_data(body)
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}
