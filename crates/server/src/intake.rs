//! Reading a client's request body: bounded in size (`server.max_body_bytes`, 413).

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tollgate_core::GatewayError;

/// Reads the request body, refusing more than `limit` bytes with 413 — from
/// `content-length` before reading, or while reading a chunked body.
pub(crate) async fn read_body<B>(req: http::Request<B>, limit: u64) -> Result<Bytes, GatewayError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::RequestTooLarge { limit });
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(req.into_body(), limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(GatewayError::RequestTooLarge { limit })
        }
        Err(e) => Err(GatewayError::invalid(format!(
            "could not read the request body: {e}"
        ))),
    }
}
