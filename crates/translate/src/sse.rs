//! Writing SSE events: `event: NAME\ndata: JSON\n\n` (Anthropic, Responses) or `data: JSON\n\n`
//! (chat.completions). Every translator writes through these, so an event is always whole.

use bytes::BytesMut;
use serde::Serialize;

/// Appends `event: {name}\ndata: {json of data}\n\n`.
pub fn write_named<T: Serialize + ?Sized>(out: &mut BytesMut, name: &str, data: &T) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    write_json(out, data);
    out.extend_from_slice(b"\n\n");
}

/// Appends `data: {json of data}\n\n`.
pub fn write_data<T: Serialize + ?Sized>(out: &mut BytesMut, data: &T) {
    out.extend_from_slice(b"data: ");
    write_json(out, data);
    out.extend_from_slice(b"\n\n");
}

/// Appends `data: [DONE]\n\n`, the end of a chat.completions stream.
pub fn write_done(out: &mut BytesMut) {
    out.extend_from_slice(b"data: [DONE]\n\n");
}

/// Serializes `data` as compact JSON into `out`. JSON never contains a raw newline, so the
/// result is one `data:` line.
fn write_json<T: Serialize + ?Sized>(out: &mut BytesMut, data: &T) {
    let mut writer = Writer(out);
    // Serializing plain data (structs of strings and numbers, serde_json values) into memory
    // cannot fail.
    let _ = serde_json::to_writer(&mut writer, data);
}

struct Writer<'a>(&'a mut BytesMut);

impl std::io::Write for Writer<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_whole() {
        let mut out = BytesMut::new();
        write_named(&mut out, "ping", &serde_json::json!({"type": "ping"}));
        write_data(&mut out, &serde_json::json!({"a": "x\ny"}));
        write_done(&mut out);
        assert_eq!(
            &out[..],
            b"event: ping\ndata: {\"type\":\"ping\"}\n\ndata: {\"a\":\"x\\ny\"}\n\ndata: [DONE]\n\n"
        );
    }
}
