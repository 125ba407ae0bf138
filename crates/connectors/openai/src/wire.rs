//! HTTP/1.1 on the wire for tollgate's own upstream pool ([`crate::h1`]), after RFC 9112: the
//! request head it writes, the response head it reads (with `httparse`), and the framing of the
//! response body — a length, chunked, or up to the connection's close. Nothing here does I/O:
//! each piece works on bytes already read, so each is tested on bytes alone.

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Response, StatusCode, Version};
use tollgate_core::http1::{self, content_length, last_coding_is_chunked, read_fields, BadField};
pub use tollgate_core::http1::{chunk_head, has_token, Chunked, WireError, LAST_CHUNK};

/// The longest response head read; past it the exchange fails (hyper's limit is near it).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a response head may have (hyper's default too).
const MAX_HEADERS: usize = 100;

/// How a request body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    /// `content-length` bytes (the head carries it).
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
}

/// Writes `method path HTTP/1.1`, the headers, and the framing header unless `headers` carry
/// one already; says how the body must then be sent. `len` is the body's exact length when it
/// is known; with none given, a body goes chunked.
pub fn encode_head(
    dst: &mut Vec<u8>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    len: Option<u64>,
) -> Result<Sending, WireError> {
    dst.extend_from_slice(method.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(path.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    // `host` first, as RFC 9112 §3.2 asks of a client.
    if let Some(host) = headers.get(HOST) {
        dst.extend_from_slice(b"host: ");
        dst.extend_from_slice(host.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    // With both, a request would be framed two ways (RFC 9112 §6.2): chunked wins.
    let chunked = headers.contains_key(TRANSFER_ENCODING);
    for (name, value) in headers {
        if name == HOST || (chunked && name == CONTENT_LENGTH) {
            continue;
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    let sending = if headers.contains_key(TRANSFER_ENCODING) {
        if !last_coding_is_chunked(headers) {
            return Err(WireError(
                "a request's transfer-encoding must end with chunked",
            ));
        }
        Sending::Chunked
    } else if headers.contains_key(CONTENT_LENGTH) {
        Sending::Length(
            content_length(headers)
                .ok_or(WireError("a request's content-length is not a length"))?,
        )
    } else {
        match len {
            // No body on a method that takes none: no framing header either, as hyper does.
            Some(0) if bodiless(method) => Sending::Length(0),
            Some(n) => {
                dst.extend_from_slice(b"content-length: ");
                let mut digits = [0u8; 20];
                dst.extend_from_slice(itoa(n, &mut digits));
                dst.extend_from_slice(b"\r\n");
                Sending::Length(n)
            }
            None => {
                dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Sending::Chunked
            }
        }
    };
    dst.extend_from_slice(b"\r\n");
    Ok(sending)
}

/// Methods whose requests carry no body by convention.
fn bodiless(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// `n` in decimal, written at the end of `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a `HEAD` request, a 204 or a 304), or one of length 0.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
    /// Everything up to the connection's close.
    UntilClose,
}

/// A response head read off the wire.
#[derive(Debug)]
pub struct Head {
    pub response: Response<()>,
    pub framing: Framing,
    /// Whether the connection may carry another request once the body is read.
    pub keep_alive: bool,
}

/// What [`parse_head`] found at the start of the buffer.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An interim answer (`100 Continue`, `103 Early Hints`) of this many bytes: skipped.
    Interim(usize),
    /// A final head of this many bytes.
    Head(Head, usize),
}

/// Reads a response head from the start of `buf`, for a request made with `method`.
pub fn parse_head(buf: &[u8], method: &Method) -> Result<Parsed, WireError> {
    if buf.is_empty() {
        return Ok(Parsed::Partial);
    }
    // Left uninitialized: httparse fills only as many as the head has.
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
            return Err(WireError("the response head is too long"))
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(WireError("the response head is too long"))
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(WireError("the response head has too many header fields"))
        }
        Err(_) => return Err(WireError("the response head is not HTTP/1.1")),
    };
    let code = parsed.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| WireError("the response status is invalid"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(WireError("the upstream switched protocols unasked"));
    }
    if status.is_informational() {
        return Ok(Parsed::Interim(len));
    }
    let version = http1::version(parsed.version);
    let fields = read_fields(parsed.headers).map_err(|e| match e {
        BadField::Name => WireError("a response header name is invalid"),
        BadField::Value => WireError("a response header value is invalid"),
    })?;
    let (framing, framed_by_length) = if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        (Framing::Empty, true)
    } else if fields.transfer_encoding {
        if last_coding_is_chunked(&fields.headers) {
            // With both, transfer-encoding wins, and the connection may have been smuggled
            // on: it is not used again (RFC 9112 §6.3); nor after chunked HTTP/1.0, a faulty
            // framing (§6.1).
            (
                Framing::Chunked,
                !fields.content_length && version != Version::HTTP_10,
            )
        } else {
            (Framing::UntilClose, false)
        }
    } else if fields.content_length {
        match fields.length.get() {
            Some(0) => (Framing::Empty, true),
            Some(n) => (Framing::Length(n), true),
            None => return Err(WireError("the response's content-length is invalid")),
        }
    } else {
        (Framing::UntilClose, false)
    };
    let keep_alive = framed_by_length && fields.keep_alive(version);
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = fields.headers;
    Ok(Parsed::Head(
        Head {
            response,
            framing,
            keep_alive,
        },
        len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn head(bytes: &[u8]) -> (Head, usize) {
        match parse_head(bytes, &Method::POST).expect("parses") {
            Parsed::Head(h, n) => (h, n),
            other => panic!("not a head: {other:?}"),
        }
    }

    #[test]
    fn request_heads_carry_their_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("up:8000"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let mut dst = Vec::new();
        let s = encode_head(&mut dst, &Method::POST, "/v1/chat", &headers, Some(17)).expect("ok");
        assert_eq!(s, Sending::Length(17));
        assert_eq!(
            String::from_utf8(dst).expect("utf-8"),
            "POST /v1/chat HTTP/1.1\r\nhost: up:8000\r\ncontent-type: application/json\r\n\
             content-length: 17\r\n\r\n"
        );
        let mut dst = Vec::new();
        let s = encode_head(&mut dst, &Method::POST, "/u", &headers, None).expect("ok");
        assert_eq!(s, Sending::Chunked);
        assert!(dst.ends_with(b"transfer-encoding: chunked\r\n\r\n"));
        // A GET without a body says nothing of one; a POST says its length is 0.
        let mut dst = Vec::new();
        encode_head(
            &mut dst,
            &Method::GET,
            "/v1/models",
            &HeaderMap::new(),
            Some(0),
        )
        .expect("ok");
        assert_eq!(dst, b"GET /v1/models HTTP/1.1\r\n\r\n");
        let mut dst = Vec::new();
        encode_head(&mut dst, &Method::POST, "/", &HeaderMap::new(), Some(0)).expect("ok");
        assert_eq!(dst, b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        // The request's own framing header is kept, and followed.
        headers.insert("content-length", HeaderValue::from_static("5"));
        let mut dst = Vec::new();
        let s = encode_head(&mut dst, &Method::POST, "/", &headers, None).expect("ok");
        assert_eq!(s, Sending::Length(5));
        assert_eq!(
            String::from_utf8_lossy(&dst)
                .matches("content-length")
                .count(),
            1
        );
        headers.remove("content-length");
        headers.insert("transfer-encoding", HeaderValue::from_static("gzip"));
        assert!(encode_head(&mut Vec::new(), &Method::POST, "/", &headers, None).is_err());
        headers.insert(
            "transfer-encoding",
            HeaderValue::from_static("gzip, chunked"),
        );
        headers.insert("content-length", HeaderValue::from_static("3"));
        let mut dst = Vec::new();
        let s = encode_head(&mut dst, &Method::POST, "/", &headers, Some(3)).expect("ok");
        assert_eq!(s, Sending::Chunked);
        assert!(
            !String::from_utf8_lossy(&dst).contains("content-length"),
            "framed one way only"
        );
    }

    #[test]
    fn chunk_heads_are_hex() {
        let mut dst = Vec::new();
        chunk_head(&mut dst, 0x1a2f);
        chunk_head(&mut dst, 1);
        chunk_head(&mut dst, 0);
        assert_eq!(dst, b"1a2f\r\n1\r\n0\r\n");
    }

    #[test]
    fn response_heads_say_how_their_body_ends() {
        let (h, n) = head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: b\r\n\r\n{\"a\":1}");
        assert_eq!(n, 47);
        assert_eq!(h.response.status(), 200);
        assert_eq!(h.framing, Framing::Length(12));
        assert!(h.keep_alive);
        assert_eq!(h.response.headers()["x-a"], "b");
        let (h, _) = head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.keep_alive);
        // Both: chunked, and the connection is not used again.
        let (h, _) =
            head(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.keep_alive);
        let (h, _) = head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n");
        assert_eq!(
            h.framing,
            Framing::UntilClose,
            "chunked twice is not chunked"
        );
        assert!(!h.keep_alive);
        let (h, _) = head(
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n",
        );
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.keep_alive, "chunked HTTP/1.0 is faulty framing");
        let (h, _) = head(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);
        let (h, _) = head(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: Close\r\n\r\n");
        assert!(!h.keep_alive);
        let (h, _) = head(b"HTTP/1.0 200 OK\r\ncontent-length: 4\r\n\r\n");
        assert!(!h.keep_alive);
        assert_eq!(h.response.version(), Version::HTTP_10);
        let (h, _) =
            head(b"HTTP/1.0 200 OK\r\ncontent-length: 4\r\nconnection: keep-alive\r\n\r\n");
        assert!(h.keep_alive);
        let (h, _) = head(b"HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n");
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive);
        let (h, _) = head(b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(5));
        match parse_head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            &Method::HEAD,
        ) {
            Ok(Parsed::Head(h, _)) => assert_eq!(h.framing, Framing::Empty),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn broken_or_partial_heads_are_told_apart() {
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-le", &Method::POST),
            Ok(Parsed::Partial)
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200", &Method::POST),
            Ok(Parsed::Interim(25))
        ));
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        ] {
            assert!(
                parse_head(bad, &Method::POST).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        long.resize(MAX_HEAD + 1, b'a');
        assert!(parse_head(&long, &Method::POST).is_err());
        long.extend_from_slice(b"\r\n\r\n");
        assert!(
            parse_head(&long, &Method::POST).is_err(),
            "whole but too long"
        );
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"x: y\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert!(parse_head(&many, &Method::POST).is_err());
    }

    proptest! {

        /// A head read in two pieces is partial until its last byte, then the same head; no
        /// bytes make the parser panic.
        #[test]
        fn heads_are_partial_until_whole(
            cut in 0usize..200,
            junk in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let whole: &[u8] = b"HTTP/1.1 201 Created\r\ncontent-type: text/plain\r\nx-a: 1\r\n\
                content-length: 2\r\n\r\nok";
            let head_len = whole.len() - 2;
            let cut = cut.min(head_len);
            match parse_head(&whole[..cut], &Method::POST) {
                Ok(Parsed::Partial) => prop_assert!(cut < head_len),
                Ok(Parsed::Head(h, n)) => {
                    prop_assert_eq!(cut, head_len);
                    prop_assert_eq!(n, head_len);
                    prop_assert_eq!(h.framing, Framing::Length(2));
                }
                other => prop_assert!(false, "{:?}", other),
            }
            let _ = parse_head(&junk, &Method::POST);
        }

    }
}
