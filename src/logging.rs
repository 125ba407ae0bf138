//! Logging setup: tracing with a `pretty` or `json` format, written to stderr by a thread of
//! its own, so a request's log line costs the runtime a copy into a queue, not a `write(2)`.
//!
//! The JSON format is written by hand: the line per request is on the hot path, and a
//! direct writer costs a fraction of a general-purpose serializer. Its shape is the usual
//! `{"timestamp","level","fields":{"message",…},"target"}`.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tollgate_core::config::LogFormat;
use tollgate_core::Config;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Lines waiting for the writer thread. When full, a logging thread waits: lines are not lost.
const QUEUE: usize = 16 * 1024;

enum Message {
    Line(Vec<u8>),
    /// Everything before this is written and flushed; then answer.
    Flush(SyncSender<()>),
}

static SINK: OnceLock<SyncSender<Message>> = OnceLock::new();

/// Installs the global subscriber for `config.logging`.
pub fn init(config: &Config) {
    let filter =
        EnvFilter::try_new(&config.logging.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(QueueWriter::start());
    let installed = match config.logging.format {
        LogFormat::Json => builder.event_format(JsonLine).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    if let Err(e) = installed {
        eprintln!("tollgate: logging was already set up: {e}");
    }
}

/// Waits until every queued line is written (at most one second). Called before exit.
pub fn flush() {
    let Some(sink) = SINK.get() else { return };
    let (done, wait) = sync_channel(1);
    if sink.send(Message::Flush(done)).is_ok() {
        let _ = wait.recv_timeout(Duration::from_secs(1));
    }
}

/// Hands formatted lines to the writer thread.
#[derive(Clone)]
struct QueueWriter {
    tx: SyncSender<Message>,
}

impl QueueWriter {
    fn start() -> QueueWriter {
        let tx = SINK
            .get_or_init(|| {
                let (tx, rx) = sync_channel(QUEUE);
                let spawned = std::thread::Builder::new()
                    .name("tollgate-log".into())
                    .spawn(move || write_lines(rx));
                if let Err(e) = spawned {
                    eprintln!("tollgate: cannot start the log writer: {e}");
                }
                tx
            })
            .clone();
        QueueWriter { tx }
    }
}

fn write_lines(rx: Receiver<Message>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Write everything queued, then flush once: one syscall per burst, not per line.
        while let Some(message) = next.take() {
            match message {
                Message::Line(line) => {
                    let _ = out.write_all(&line);
                }
                Message::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
}

impl std::io::Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The fmt layer writes each event whole, in one call.
        let _ = self.tx.send(Message::Line(buf.to_vec()));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = QueueWriter;

    fn make_writer(&'a self) -> QueueWriter {
        self.clone()
    }
}

/// The JSON line format.
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        w.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut w, SystemTime::now())?;
        write!(w, "\",\"level\":\"{}\",\"fields\":{{", meta.level())?;
        let mut fields = Fields {
            w: &mut w,
            first: true,
            scratch: String::new(),
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_str("},\"target\":")?;
        write_json_str(&mut w, meta.target())?;
        w.write_str("}\n")
    }
}

/// Writes an event's fields as JSON members.
struct Fields<'w, 'a> {
    w: &'w mut Writer<'a>,
    first: bool,
    /// For values only `Debug` can print.
    scratch: String,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn name(&mut self, field: &Field) -> fmt::Result {
        if !self.first {
            self.w.write_char(',')?;
        }
        self.first = false;
        write_json_str(self.w, field.name())?;
        self.w.write_char(':')
    }

    fn put(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| value(self.w));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |w| write_json_str(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, |w| {
            if value.is_finite() {
                write!(w, "{value}")
            } else {
                w.write_str("null")
            }
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = std::mem::take(&mut self.scratch);
        text.clear();
        let _ = write!(text, "{value:?}");
        self.put(field, |w| write_json_str(w, &text));
        self.scratch = text;
    }
}

/// Writes `s` as a JSON string.
fn write_json_str(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        w.write_str(&s[start..i])?;
        if escape.is_empty() {
            write!(w, "\\u{b:04x}")?;
        } else {
            w.write_str(escape)?;
        }
        start = i + 1;
    }
    w.write_str(&s[start..])?;
    w.write_char('"')
}

/// RFC 3339 in UTC with microseconds: `2026-11-22T00:53:10.237925Z`.
fn write_timestamp(w: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    write!(
        w,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_micros()
    )
}

/// Days since 1970-01-01 to a (year, month, day) date (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let mut s = String::new();
        write_timestamp(
            &mut s,
            UNIX_EPOCH + Duration::from_micros(1_795_308_790_237_925),
        )
        .expect("fmt");
        assert_eq!(s, "2026-11-22T00:53:10.237925Z");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        write_json_str(&mut s, "a\"b\\c\nd\u{1}é").expect("fmt");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let parsed: String = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
    }
}
