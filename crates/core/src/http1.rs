//! HTTP/1.1 framing shared by tollgate's two ends of the wire (RFC 9112): the upstream pool
//! (`tollgate-openai`'s `h1`) and the edge's own HTTP/1.1 server (`tollgate-server`'s `h1`).
//! The header checks that decide how a body is delimited, and the chunked coding both ways.
//! Nothing here does I/O: each piece works on bytes already read.

use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Version};

/// The most bytes of chunk extensions and trailers one body may carry.
pub const MAX_CHUNK_META: usize = 16 * 1024;

/// Why bytes from the other end were not HTTP/1.1 tollgate can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub &'static str);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for WireError {}

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
pub fn last_coding_is_chunked(headers: &HeaderMap) -> bool {
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
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = Length::default();
    for value in headers.get_all(CONTENT_LENGTH) {
        length.add(value.as_bytes());
    }
    length.get()
}

/// The length `content-length` fields name, gathered field by field as a head is read (the
/// rules of [`content_length`], without looking the fields up again).
#[derive(Debug, Clone, Copy, Default)]
pub struct Length {
    found: Option<u64>,
    invalid: bool,
}

impl Length {
    /// Adds one field's value.
    pub fn add(&mut self, value: &[u8]) {
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                self.invalid = true;
                return;
            }
            let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if self.found.is_some_and(|f| f != n) {
                self.invalid = true;
                return;
            }
            self.found = Some(n);
        }
    }

    /// The length, when every value named the same one.
    pub fn get(&self) -> Option<u64> {
        self.found.filter(|_| !self.invalid)
    }
}

/// A head's header fields as a map, and what they say of the message's framing, noted on the
/// way (most heads have no `transfer-encoding` and no `connection`, which are then never
/// looked up).
#[derive(Debug, Default)]
pub struct Fields {
    pub headers: HeaderMap,
    pub transfer_encoding: bool,
    pub content_length: bool,
    pub connection: bool,
    pub expect: bool,
    /// What the `content-length` fields name.
    pub length: Length,
}

impl Fields {
    /// Whether the message lets its connection carry another (RFC 9112 §9.3): HTTP/1.0 only
    /// with `connection: keep-alive`, HTTP/1.1 unless `connection: close`.
    pub fn keep_alive(&self, version: Version) -> bool {
        match version {
            Version::HTTP_10 => self.connection && has_token(&self.headers, "keep-alive"),
            _ => !self.connection || !has_token(&self.headers, "close"),
        }
    }
}

/// The version `httparse` read (its minor digit): HTTP/1.0, else HTTP/1.1.
pub fn version(minor: Option<u8>) -> Version {
    match minor {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    }
}

/// Which part of a header field was not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadField {
    Name,
    Value,
}

/// Reads the fields `httparse` found into a [`Fields`].
pub fn read_fields(parsed: &[httparse::Header<'_>]) -> Result<Fields, BadField> {
    let mut fields = Fields {
        headers: HeaderMap::with_capacity(parsed.len()),
        ..Fields::default()
    };
    for field in parsed {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| BadField::Name)?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| BadField::Value)?;
        fields.transfer_encoding |= name == TRANSFER_ENCODING;
        if name == CONTENT_LENGTH {
            fields.content_length = true;
            fields.length.add(field.value);
        }
        fields.connection |= name == CONNECTION;
        fields.expect |= name == EXPECT;
        fields.headers.append(name, value);
    }
    Ok(fields)
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
    /// In a trailer field's name, up to its colon.
    TrailerName,
    /// In a trailer field's value, up to CR.
    TrailerValue,
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
                // A trailer line is a field, `name: value` (RFC 9112 §7.1.2): a line of any
                // other shape (a request line, say) is refused, never read past.
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    b if is_token(b) => {
                        self.count_meta()?;
                        State::TrailerName
                    }
                    _ => return Err(WireError("a trailer line is invalid")),
                },
                State::TrailerName => match b {
                    b':' => State::TrailerValue,
                    b if is_token(b) => {
                        self.count_meta()?;
                        State::TrailerName
                    }
                    _ => return Err(WireError("a trailer line is invalid")),
                },
                State::TrailerValue => match b {
                    b'\r' => State::TrailerLf,
                    b if is_field_text(b) => {
                        self.count_meta()?;
                        State::TrailerValue
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

/// A byte of a token, such as a field name (RFC 9110 §5.6.2).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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
            b"0\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            b"0\r\nno-colon\r\n\r\n",
            b"0\r\n: empty-name\r\n\r\n",
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

    #[test]
    fn content_lengths_must_all_name_one_number() {
        let of = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(
                    CONTENT_LENGTH,
                    http::HeaderValue::from_str(v).expect("value"),
                );
            }
            let mut length = Length::default();
            values.iter().for_each(|v| length.add(v.as_bytes()));
            assert_eq!(length.get(), content_length(&headers), "{values:?}");
            length.get()
        };
        assert_eq!(of(&["5"]), Some(5));
        assert_eq!(of(&["5, 5", " 5 "]), Some(5));
        assert_eq!(of(&["007"]), Some(7));
        assert_eq!(of(&[]), None);
        for bad in [
            &["5", "6"][..],
            &["+5"],
            &["5,"],
            &["-1"],
            &["5 5"],
            &["99999999999999999999"],
        ] {
            assert_eq!(of(bad), None, "{bad:?}");
        }
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
