//! HTTP/1.1 on the wire for tollgate's own upstream pool ([`crate::h1`]), after RFC 9112: the
//! request head it writes, the response head it reads (with `httparse`), and the framing of the
//! response body — a length, chunked, or up to the connection's close. Nothing here does I/O:
//! each piece works on bytes already read, so each is tested on bytes alone.

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};

/// The longest response head read; past it the exchange fails (hyper's limit is near it).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a response head may have (hyper's default too).
const MAX_HEADERS: usize = 100;
/// The most bytes of chunk extensions and trailers one body may carry.
const MAX_CHUNK_META: usize = 16 * 1024;

/// Why bytes from an upstream were not HTTP/1.1 this pool can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub &'static str);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for WireError {}

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

/// Writes a chunk's size line (`{hex}\r\n`); its data and `\r\n` follow it.
pub fn chunk_head(dst: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&digits[i..]);
    dst.extend_from_slice(b"\r\n");
}

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

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
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    // Which framing fields are there, noted on the way: most heads have no
    // `transfer-encoding` and no `connection`, and then they are not looked up.
    let (mut te, mut cl, mut conn) = (false, false, false);
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| WireError("a response header name is invalid"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| WireError("a response header value is invalid"))?;
        te |= name == TRANSFER_ENCODING;
        cl |= name == CONTENT_LENGTH;
        conn |= name == CONNECTION;
        headers.append(name, value);
    }
    let (framing, framed_by_length) = if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        (Framing::Empty, true)
    } else if te {
        if last_coding_is_chunked(&headers) {
            // With both, transfer-encoding wins, and the connection may have been smuggled
            // on: it is not used again (RFC 9112 §6.3); nor after chunked HTTP/1.0, a faulty
            // framing (§6.1).
            (Framing::Chunked, !cl && version != Version::HTTP_10)
        } else {
            (Framing::UntilClose, false)
        }
    } else if cl {
        match content_length(&headers) {
            Some(0) => (Framing::Empty, true),
            Some(n) => (Framing::Length(n), true),
            None => return Err(WireError("the response's content-length is invalid")),
        }
    } else {
        (Framing::UntilClose, false)
    };
    let keep_alive = framed_by_length
        && match version {
            Version::HTTP_10 => conn && has_token(&headers, "keep-alive"),
            _ => !conn || !has_token(&headers, "close"),
        };
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Parsed::Head(
        Head {
            response,
            framing,
            keep_alive,
        },
        len,
    ))
}

/// Whether a `connection` header lists `token`.
pub fn has_token(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Whether the codings end with `chunked`, applied once (twice is the sender's error, which a
/// proxy on the way may read otherwise).
fn last_coding_is_chunked(headers: &HeaderMap) -> bool {
    let codings = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty());
    let mut chunked = 0;
    let mut last_is_chunked = false;
    for coding in codings {
        last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
        chunked += usize::from(last_is_chunked);
    }
    last_is_chunked && chunked == 1
}

/// The one length every `content-length` value names (`5, 5` is 5); `None` when they differ or
/// one is not a number.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut found = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if found.is_some_and(|f| f != n) {
                return None;
            }
            found = Some(n);
        }
    }
    found
}

/// Decodes a chunked body as its bytes arrive, in any pieces.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    /// Bytes of extensions and trailers seen so far.
    meta: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the size's hex digits (`digits` read so far).
    Size {
        size: u64,
        digits: u8,
    },
    /// White space after the size: `;` or CR due.
    SizeWs {
        size: u64,
    },
    /// In `;extensions`, up to CR.
    Ext {
        size: u64,
    },
    /// CR read after the size line; LF due.
    SizeLf {
        size: u64,
    },
    /// In a chunk's data, this much left.
    Data(u64),
    /// After a chunk's data: CR due.
    DataCr,
    /// LF due.
    DataLf,
    /// At the start of a trailer line (or the empty line that ends the body).
    TrailerStart,
    /// In a trailer field, up to CR.
    Trailer,
    /// CR read at the end of a trailer field; LF due.
    TrailerLf,
    /// CR read on the empty last line; LF due.
    EndLf,
    Done,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size { size: 0, digits: 0 },
            meta: 0,
        }
    }
}

impl Chunked {
    /// Whether the last chunk and the trailers have all been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The data bytes still owed by the current chunk, for a size hint.
    pub fn in_chunk(&self) -> u64 {
        match self.state {
            State::Data(n) => n,
            _ => 0,
        }
    }

    /// Reads what it can of `buf`, handing every piece of chunk data to `data`; returns how
    /// many bytes of `buf` it used (all of them, unless the body ended inside `buf`).
    pub fn decode(&mut self, buf: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, WireError> {
        let mut i = 0;
        while i < buf.len() {
            if let State::Data(left) = self.state {
                let n = (buf.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                data(&buf[i..i + n]);
                i += n;
                let left = left - n as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data(left)
                };
                continue;
            }
            let b = buf[i];
            i += 1;
            self.state = match self.state {
                State::Size { size, digits } => match hex(b) {
                    // Leading zeros are allowed in any number; a size past 64 bits is not.
                    Some(d) if size >> 60 == 0 => State::Size {
                        size: size << 4 | u64::from(d),
                        digits: digits.saturating_add(1),
                    },
                    Some(_) => return Err(WireError("a chunk size is too large")),
                    None if digits == 0 => return Err(WireError("a chunk size is missing")),
                    None => match b {
                        b'\r' => State::SizeLf { size },
                        b';' => State::Ext { size },
                        b' ' | b'\t' => State::SizeWs { size },
                        _ => return Err(WireError("a chunk size line is invalid")),
                    },
                },
                State::SizeWs { size } => match b {
                    b' ' | b'\t' => {
                        self.count_meta()?;
                        State::SizeWs { size }
                    }
                    b';' => State::Ext { size },
                    b'\r' => State::SizeLf { size },
                    _ => return Err(WireError("a chunk size line is invalid")),
                },
                State::Ext { size } => match b {
                    b'\r' => State::SizeLf { size },
                    b if is_field_text(b) => {
                        self.count_meta()?;
                        State::Ext { size }
                    }
                    _ => return Err(WireError("a chunk extension is invalid")),
                },
                State::SizeLf { size } => match b {
                    b'\n' if size == 0 => State::TrailerStart,
                    b'\n' => State::Data(size),
                    _ => return Err(WireError("a chunk size line is invalid")),
                },
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err(WireError("a chunk's data runs past its size")),
                },
                State::DataLf => match b {
                    b'\n' => State::Size { size: 0, digits: 0 },
                    _ => return Err(WireError("a chunk's data runs past its size")),
                },
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    // A field line starts with its name: no white space, no control byte.
                    b if is_field_text(b) && b != b' ' && b != b'\t' => {
                        self.count_meta()?;
                        State::Trailer
                    }
                    _ => return Err(WireError("a trailer line is invalid")),
                },
                State::Trailer => match b {
                    b'\r' => State::TrailerLf,
                    b if is_field_text(b) => {
                        self.count_meta()?;
                        State::Trailer
                    }
                    _ => return Err(WireError("a trailer line is invalid")),
                },
                State::TrailerLf => match b {
                    b'\n' => State::TrailerStart,
                    _ => return Err(WireError("a trailer line is invalid")),
                },
                State::EndLf => match b {
                    b'\n' => {
                        self.state = State::Done;
                        return Ok(i);
                    }
                    _ => return Err(WireError("a chunked body's end is invalid")),
                },
                State::Data(_) => unreachable!("handled above"),
                State::Done => return Ok(i - 1),
            };
        }
        Ok(i)
    }

    fn count_meta(&mut self) -> Result<(), WireError> {
        self.meta += 1;
        if self.meta > MAX_CHUNK_META {
            return Err(WireError(
                "a chunked body's extensions or trailers are too long",
            ));
        }
        Ok(())
    }
}

/// A byte allowed in a field line or a chunk extension: visible text, obs-text, space and tab
/// (RFC 9110 §5.5), never a control byte.
fn is_field_text(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn decode_all(pieces: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), WireError> {
        let mut d = Chunked::default();
        let mut out = Vec::new();
        let mut used = 0;
        for p in pieces {
            used += d.decode(p, |s| out.extend_from_slice(s))?;
        }
        Ok((out, used, d.is_done()))
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let body = b"5\r\nhello\r\n7;name=value\r\n, world\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        let (out, used, done) = decode_all(&[body]).expect("decodes");
        assert_eq!(out, b"hello, world");
        assert!(done);
        assert_eq!(used, body.len() - 4, "stops at the body's end");
        let (out, _, done) = decode_all(&[b"A\r\n0123456789\r\n0\r\n\r\n"]).expect("ok");
        assert_eq!(out, b"0123456789");
        assert!(done);
        let (_, _, done) = decode_all(&[b"3\r\nabc\r\n"]).expect("ok");
        assert!(!done);
        // Leading zeros, white space before an extension, a trailer with obs-text.
        let (out, _, done) = decode_all(&[
            b"00000000000000000003 ;x=\"y z\"\r\nabc\r\n0\r\nx-t: caf\xc3\xa9\r\n\r\n",
        ])
        .expect("decodes");
        assert_eq!(out, b"abc");
        assert!(done);
        for bad in [
            &b"\r\n"[..],
            b"zz\r\n",
            b"3\r\nabcd\r\n",
            b"3\nabc\r\n",
            b"11111111111111111\r\n",
            b"0\r\n\r\r",
            b"0\r\nx\n",
            b"5 6\r\nhello\r\n",
            b"5;a\x00b\r\nhello\r\n",
            b"0\r\n\x01garbage\r\n\r\n",
            b"0\r\n folded\r\n\r\n",
            b"10000000000000000\r\n",
        ] {
            assert!(
                decode_all(&[bad]).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut huge = b"1;".to_vec();
        huge.resize(MAX_CHUNK_META + 8, b'x');
        assert!(decode_all(&[&huge]).is_err());
    }

    proptest! {
        /// Any body, chunked any way and cut into any pieces, decodes to itself.
        #[test]
        fn chunked_decoding_ignores_where_reads_split(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            sizes in proptest::collection::vec(1usize..80, 1..20),
            cuts in proptest::collection::vec(0usize..700, 0..12),
        ) {
            let mut wire = Vec::new();
            let mut rest = &data[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                chunk_head(&mut wire, n);
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            wire.extend_from_slice(LAST_CHUNK);
            let body_len = wire.len();
            // What follows the body (the next answer, or junk) is never taken as the body's.
            wire.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(wire.len())).collect();
            cuts.push(0);
            cuts.push(wire.len());
            cuts.sort_unstable();
            let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &wire[w[0]..w[1]]).collect();
            let (out, used, done) = decode_all(&pieces).expect("decodes");
            prop_assert_eq!(out, data);
            prop_assert_eq!(used, body_len);
            prop_assert!(done);
        }

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

        /// No input makes the decoder panic or claim more bytes than it was given: random
        /// bytes alone, and after a valid start (random bytes alone mostly fail at once).
        #[test]
        fn chunked_decoding_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            start in prop_oneof![
                Just(&b""[..]),
                Just(&b"5\r\nhello\r\n"[..]),
                Just(&b"3;"[..]),
                Just(&b"0\r\n"[..]),
            ],
        ) {
            let mut d = Chunked::default();
            let mut input = start.to_vec();
            input.extend_from_slice(&bytes);
            if let Ok(used) = d.decode(&input, |_| {}) {
                prop_assert!(used <= input.len());
            }
        }
    }
}
