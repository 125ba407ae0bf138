//! Logging setup: tracing with a `pretty` or `json` format, written to stderr by a thread of
//! its own in batches, so a request's log line costs the runtime a copy into a buffer — not a
//! `write(2)`, nor a wake-up of another thread. When the writer falls behind (stderr piped to
//! something slow, or stopped), lines are dropped and counted
//! (`tollgate_log_lines_dropped_total`), never waited for: the thread logging is a tokio
//! worker, and blocking it would stall every connection it serves.
//!
//! The JSON format is written by hand: the line per request is on the hot path, and a
//! direct writer costs a fraction of a general-purpose serializer. Its shape is the usual
//! `{"timestamp","level","fields":{"message",…},"target"}`.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tollgate_core::config::LogFormat;
use tollgate_core::Config;
use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Bytes of log lines waiting to be written. A line that does not fit is dropped and counted;
/// below it, appending a line is a lock and a copy.
const BACKLOG: usize = 8 * 1024 * 1024;
/// How long the writer sleeps between batches when nothing presses it.
const BATCH: Duration = Duration::from_millis(20);

/// Lines appended by every thread, written out by one.
struct Sink {
    pending: Mutex<Vec<u8>>,
    /// Wakes the writer early (a large backlog, or lines being dropped).
    changed: Condvar,
    /// Held while lines are taken and written, so two writers never reorder them.
    writing: Mutex<()>,
    /// Lines dropped since the writer last said so in the log.
    dropped: AtomicU64,
    /// The format of the writer's own notice about dropped lines.
    json: bool,
}

static SINK: OnceLock<Arc<Sink>> = OnceLock::new();

/// Installs the global subscriber for `config.logging`.
pub fn init(config: &Config) {
    let filter =
        EnvFilter::try_new(&config.logging.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(QueueWriter::start(config.logging.format == LogFormat::Json));
    let installed = match config.logging.format {
        LogFormat::Json => builder.event_format(JsonLine).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    if installed.is_ok() && config.logging.format == LogFormat::Json {
        // The line every request ends with skips tracing's event path: the same bytes, less
        // work on the request's thread.
        tollgate_server::set_line_writer(write_request_line);
    }
    if let Err(e) = installed {
        eprintln!("tollgate: logging was already set up: {e}");
    }
}

/// Writes every pending line now. Called before exit.
pub fn flush() {
    if let Some(sink) = SINK.get() {
        sink.write_pending(&mut std::io::stderr());
    }
}

impl Sink {
    fn new(json: bool) -> Sink {
        Sink {
            pending: Mutex::new(Vec::with_capacity(64 * 1024)),
            changed: Condvar::new(),
            writing: Mutex::new(()),
            dropped: AtomicU64::new(0),
            json,
        }
    }

    /// Takes the pending lines and writes them, in order.
    fn write_pending(&self, out: &mut impl std::io::Write) {
        let _order = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let batch = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let capacity = pending.capacity();
            std::mem::replace(&mut *pending, Vec::with_capacity(capacity))
        };
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if !batch.is_empty() {
            let _ = out.write_all(&batch);
        }
        if dropped > 0 {
            let _ = out.write_all(self.dropped_notice(dropped).as_bytes());
        }
        if !batch.is_empty() || dropped > 0 {
            let _ = out.flush();
        }
    }

    /// One line saying how many lines were lost, in the log's own format.
    fn dropped_notice(&self, dropped: u64) -> String {
        let message = "log lines dropped: the log writer fell behind";
        if !self.json {
            return format!("tollgate: {message} ({dropped} lines)\n");
        }
        let mut line = String::from("{\"timestamp\":\"");
        push_timestamp(&mut line, SystemTime::now());
        line.push_str("\",\"level\":\"WARN\",\"fields\":{\"message\":");
        push_json_str(&mut line, message);
        line.push_str(",\"dropped\":");
        push_u64(&mut line, dropped);
        line.push_str("},\"target\":\"tollgate::logging\"}\n");
        line
    }

    fn run(&self) {
        let mut out = std::io::stderr();
        loop {
            {
                let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                if pending.len() < BACKLOG / 4 {
                    let _ = self.changed.wait_timeout(pending, BATCH);
                }
            }
            self.write_pending(&mut out);
        }
    }
}

/// Appends formatted lines to the sink.
#[derive(Clone)]
struct QueueWriter {
    sink: Arc<Sink>,
}

impl QueueWriter {
    fn start(json: bool) -> QueueWriter {
        let sink = SINK
            .get_or_init(|| {
                let sink = Arc::new(Sink::new(json));
                let runner = sink.clone();
                let spawned = std::thread::Builder::new()
                    .name("tollgate-log".into())
                    .spawn(move || runner.run());
                if let Err(e) = spawned {
                    eprintln!("tollgate: cannot start the log writer: {e}");
                }
                sink
            })
            .clone();
        QueueWriter { sink }
    }
}

impl Sink {
    /// Appends one whole line, or drops and counts it when the backlog is full.
    fn append(&self, buf: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() + buf.len() > BACKLOG {
            drop(pending);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tollgate_server::Metrics::log_lines_dropped(1);
            self.changed.notify_all();
            return;
        }
        pending.extend_from_slice(buf);
        if pending.len() >= BACKLOG / 4 {
            self.changed.notify_all();
        }
    }
}

impl std::io::Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The fmt layer writes each event whole, in one call: a dropped write is a whole line.
        // A dropped line is reported as written: the subscriber has nothing better to do.
        self.sink.append(buf);
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

/// The JSON line format. The line is built in a buffer with plain pushes — no `fmt`
/// machinery per field — and handed to the writer in one piece.
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
        thread_local! {
            static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
            /// The last callsite written on this thread, and which of its field names need
            /// escaping: the request line comes from one callsite, so its names are looked at
            /// once per thread rather than once per line.
            static NAMES: std::cell::RefCell<Option<(Identifier, u64)>> = const { std::cell::RefCell::new(None) };
        }
        let meta = event.metadata();
        let escaped = NAMES.with(|names| {
            let fields = meta.fields();
            let id = meta.callsite();
            let mut names = names.borrow_mut();
            match &*names {
                Some((last, escaped)) if *last == id => *escaped,
                _ => {
                    let escaped = names_to_escape(fields);
                    *names = Some((id, escaped));
                    escaped
                }
            }
        });
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            line.push_str("{\"timestamp\":\"");
            push_timestamp(&mut line, SystemTime::now());
            line.push_str("\",\"level\":\"");
            line.push_str(meta.level().as_str());
            line.push_str("\",\"fields\":{");
            let mut fields = Fields {
                line: &mut line,
                first: true,
                scratch: String::new(),
                escaped,
            };
            event.record(&mut fields);
            line.push_str("},\"target\":");
            push_json_str(&mut line, meta.target());
            line.push_str("}\n");
            w.write_str(&line)
        })
    }
}

/// Bit `i` set: the name of field `i` needs escaping. Fields past the 64th are always
/// escaped as needed (`Fields::name` checks them each time).
fn names_to_escape(fields: &tracing::field::FieldSet) -> u64 {
    fields
        .iter()
        .take(64)
        .enumerate()
        .filter(|(_, f)| needs_escape(f.name().as_bytes()))
        .fold(0, |mask, (i, _)| mask | 1 << i)
}

/// Writes an event's fields as JSON members.
struct Fields<'a> {
    line: &'a mut String,
    first: bool,
    /// For values only `Debug` can print.
    scratch: String,
    /// The callsite's names that need escaping (`names_to_escape`).
    escaped: u64,
}

impl Fields<'_> {
    fn name(&mut self, field: &Field) -> &mut String {
        if !self.first {
            self.line.push(',');
        }
        self.first = false;
        let plain = field.index() < 64 && self.escaped & (1 << field.index()) == 0;
        if plain {
            self.line.push('"');
            self.line.push_str(field.name());
            self.line.push_str("\":");
        } else {
            push_json_str(self.line, field.name());
            self.line.push(':');
        }
        self.line
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        push_json_str(self.name(field), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        push_u64(self.name(field), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        let line = self.name(field);
        if value < 0 {
            line.push('-');
        }
        push_u64(line, value.unsigned_abs());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        push_f64(self.name(field), value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.name(field)
            .push_str(if value { "true" } else { "false" });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = std::mem::take(&mut self.scratch);
        text.clear();
        let _ = write!(text, "{value:?}");
        push_json_str(self.name(field), &text);
        self.scratch = text;
    }
}

/// Appends a number with three decimals: plenty for what is logged (milliseconds), and far
/// cheaper than the shortest round-trip form.
fn push_f64(line: &mut String, value: f64) {
    if !value.is_finite() {
        line.push_str("null");
    } else if value.abs() < 1e15 {
        let thousandths = (value.abs() * 1000.0).round() as u64;
        if value < 0.0 && thousandths > 0 {
            line.push('-');
        }
        push_u64(line, thousandths / 1000);
        line.push('.');
        push_padded(line, thousandths % 1000, 3);
    } else {
        let _ = write!(line, "{value}");
    }
}

/// Writes a request's line to the sink: what `JsonLine` writes for `RequestLine::log`'s event.
fn write_request_line(request: &tollgate_server::RequestLine<'_>) {
    thread_local! {
        static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    let Some(sink) = SINK.get() else {
        return request.log();
    };
    LINE.with(|line| {
        let mut line = line.borrow_mut();
        line.clear();
        push_request_line(&mut line, request, SystemTime::now());
        sink.append(line.as_bytes());
    });
}

fn push_request_line(line: &mut String, r: &tollgate_server::RequestLine<'_>, now: SystemTime) {
    /// `,"name":value` for each, the value written by `push`.
    fn fields<T: Copy>(line: &mut String, fields: &[(&str, T)], push: fn(&mut String, T)) {
        for &(name, value) in fields {
            line.push_str(name);
            push(line, value);
        }
    }
    let texts = |line: &mut String, f: &[(&str, &str)]| fields(line, f, push_json_str);
    let numbers = |line: &mut String, f: &[(&str, u64)]| fields(line, f, push_u64);
    line.push_str("{\"timestamp\":\"");
    push_timestamp(line, now);
    line.push_str("\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\"");
    texts(
        line,
        &[
            (",\"request_id\":", r.request_id),
            (",\"key\":", r.key),
            (",\"door\":", r.door),
            (",\"endpoint\":", r.endpoint),
        ],
    );
    line.push_str(if r.stream {
        ",\"stream\":true"
    } else {
        ",\"stream\":false"
    });
    texts(
        line,
        &[(",\"backend\":", r.backend), (",\"model\":", r.model)],
    );
    numbers(line, &[(",\"status\":", u64::from(r.status))]);
    texts(line, &[(",\"error\":", r.error)]);
    numbers(line, &[(",\"attempts\":", u64::from(r.attempts))]);
    line.push_str(",\"latency_ms\":");
    push_f64(line, r.latency_ms);
    if let Some(ttft) = r.ttft_ms {
        line.push_str(",\"ttft_ms\":");
        push_f64(line, ttft);
    }
    numbers(
        line,
        &[
            (",\"prompt_tokens\":", r.prompt_tokens),
            (",\"completion_tokens\":", r.completion_tokens),
        ],
    );
    line.push_str(if r.completed {
        ",\"completed\":true},\"target\":\"tollgate::request\"}\n"
    } else {
        ",\"completed\":false},\"target\":\"tollgate::request\"}\n"
    });
}

/// Appends `s` as a JSON string; text without anything to escape (the usual case) is copied
/// whole.
fn push_json_str(line: &mut String, s: &str) {
    line.push('"');
    if !needs_escape(s.as_bytes()) {
        line.push_str(s);
        line.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                line.push_str("\\u00");
                push_padded_hex(line, c as u32);
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

/// Whether `s` holds a byte JSON must escape: a control character, a quote or a backslash.
/// Eight bytes are tested at once (every field name and value of the request line goes
/// through here); a byte-at-a-time test cost most of the line's formatting.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether any byte of `x` is zero; exact as a whole (a borrow only starts at a zero byte).
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let x = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // A byte below 0x20 (bytes of 0x80 and above have their high bit masked off by `!x`);
        // a byte equal to `"` or `\\` is zero after the xor.
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS != 0;
        if control
            || has_zero(x ^ (ONES * u64::from(b'"')))
            || has_zero(x ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

fn push_padded_hex(line: &mut String, v: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    line.push(HEX[(v >> 4) as usize & 0xf] as char);
    line.push(HEX[v as usize & 0xf] as char);
}

/// Appends the decimal digits of `v`.
fn push_u64(line: &mut String, v: u64) {
    line.push_str(tollgate_core::Decimal::new(v).as_str());
}

/// Appends `v` with at least `width` digits.
fn push_padded(line: &mut String, v: u64, width: usize) {
    let mut n = 1;
    let mut bound = 10;
    while v >= bound && n < 20 {
        n += 1;
        bound = bound.saturating_mul(10);
    }
    for _ in n..width {
        line.push('0');
    }
    push_u64(line, v);
}

/// RFC 3339 in UTC with microseconds: `2026-11-22T00:53:10.237925Z`. Written into a fixed
/// buffer and copied once (every line starts with one); a year past 9999, which does not fit
/// the buffer, is written number by number.
fn push_timestamp(line: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    if year > 9999 {
        return push_timestamp_by_parts(line, since);
    }
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut out[0..4], year.max(0) as u64);
    put_digits(&mut out[5..7], u64::from(month));
    put_digits(&mut out[8..10], u64::from(day));
    put_digits(&mut out[11..13], rest / 3600);
    put_digits(&mut out[14..16], rest % 3600 / 60);
    put_digits(&mut out[17..19], rest % 60);
    put_digits(&mut out[20..26], u64::from(since.subsec_micros()));
    // ASCII digits and separators: the check cannot fail.
    line.push_str(std::str::from_utf8(&out).unwrap_or_default());
}

/// Writes the last `out.len()` decimal digits of `v` into `out`, zero-padded.
fn put_digits(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// [`push_timestamp`] for any year, one number at a time.
fn push_timestamp_by_parts(line: &mut String, since: Duration) {
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    push_padded(line, year.max(0) as u64, 4);
    line.push('-');
    push_padded(line, u64::from(month), 2);
    line.push('-');
    push_padded(line, u64::from(day), 2);
    line.push('T');
    push_padded(line, rest / 3600, 2);
    line.push(':');
    push_padded(line, rest % 3600 / 60, 2);
    line.push(':');
    push_padded(line, rest % 60, 2);
    line.push('.');
    push_padded(line, u64::from(since.subsec_micros()), 6);
    line.push('Z');
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
    fn numbers() {
        let mut s = String::new();
        for v in [0, 7, 10, 12345, u64::MAX] {
            s.clear();
            push_u64(&mut s, v);
            assert_eq!(s, v.to_string());
        }
        s.clear();
        push_padded(&mut s, 5, 3);
        assert_eq!(s, "005");
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let mut s = String::new();
        push_timestamp(
            &mut s,
            UNIX_EPOCH + Duration::from_micros(1_795_308_790_237_925),
        );
        assert_eq!(s, "2026-11-22T00:53:10.237925Z");
    }

    #[test]
    fn timestamps_read_as_written_by_parts() {
        // Every field's carries and ends: epoch, leap days, year ends, the last
        // microsecond of a day, and a pseudo-random walk over four centuries.
        let mut moments: Vec<Duration> = [
            0u64,
            951_782_400_000_000,
            1_795_308_790_237_925,
            1_767_225_599_999_999,
            253_402_300_799_999_999,
        ]
        .into_iter()
        .map(Duration::from_micros)
        .collect();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            moments.push(Duration::from_micros(x % 12_622_780_800_000_000));
        }
        for since in moments {
            let (mut fast, mut parts) = (String::new(), String::new());
            push_timestamp(&mut fast, UNIX_EPOCH + since);
            push_timestamp_by_parts(&mut parts, since);
            assert_eq!(fast, parts, "{since:?}");
        }
        // Past 9999 the year takes more digits, as before.
        let mut far = String::new();
        push_timestamp(&mut far, UNIX_EPOCH + Duration::from_secs(253_402_300_800));
        assert_eq!(far, "10000-01-01T00:00:00.000000Z");
    }

    /// The lines `log` writes through the JSON line format.
    fn json_lines(log: impl FnOnce()) -> String {
        use tracing_subscriber::layer::SubscriberExt;
        let sink = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = {
            let sink = sink.clone();
            move || Capture(sink.clone())
        };
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLine)
                .with_writer(writer),
        );
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(sink.lock().expect("lock").clone()).expect("utf8");
        text
    }

    #[test]
    fn a_line_is_one_json_object() {
        let text = json_lines(|| {
            tracing::info!(target: "t", id = "a\"b", n = 7u64, neg = -3i64, ms = 1.2345f64, ok = true, "hello {}", 1);
        });
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).expect("one JSON line");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "t");
        let f = &v["fields"];
        assert_eq!(f["message"], "hello 1");
        assert_eq!(f["id"], "a\"b");
        assert_eq!(f["n"], 7);
        assert_eq!(f["neg"], -3);
        assert_eq!(f["ms"], 1.235);
        assert_eq!(f["ok"], true);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn the_request_line_is_written_as_through_tracing() {
        let mut request = tollgate_server::RequestLine {
            request_id: "r-\"1\"",
            key: "team\\a",
            door: "messages",
            endpoint: "chat",
            stream: true,
            backend: "up",
            model: "meta/llama3-70b",
            status: 200,
            error: "",
            attempts: 2,
            latency_ms: 12.3456,
            ttft_ms: Some(0.5),
            prompt_tokens: 11,
            completion_tokens: 22,
            completed: true,
        };
        let without_time =
            |line: &str| line[line.find("\",\"level\"").expect("level")..].to_owned();
        for round in 0..3 {
            if round == 1 {
                request.ttft_ms = None;
                request.stream = false;
                request.completed = false;
                request.error = "upstream_error";
            }
            if round == 2 {
                request.latency_ms = f64::NAN;
                request.status = 499;
            }
            let traced = json_lines(|| request.log());
            let mut direct = String::new();
            push_request_line(&mut direct, &request, SystemTime::now());
            assert_eq!(
                without_time(&direct),
                without_time(&traced),
                "round {round}"
            );
            let v: serde_json::Value = serde_json::from_str(direct.trim_end()).expect("JSON");
            assert_eq!(v["fields"]["request_id"], "r-\"1\"");
            assert_eq!(v["fields"].get("ttft_ms").is_some(), round == 0);
        }
    }

    #[test]
    fn field_names_are_escaped_per_callsite() {
        let text = json_lines(|| {
            // Two callsites taking turns, each twice: the cache of one never serves the other.
            for _ in 0..2 {
                tracing::info!(target: "t", plain = 1u64, "q\"uote" = 2u64, "back\\slash" = 3u64);
                tracing::info!(target: "t", other = 4u64, "a\tb" = 5u64);
            }
        });
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 4);
        for pair in lines.chunks(2) {
            let f = &pair[0]["fields"];
            assert_eq!(
                (&f["plain"], &f["q\"uote"], &f["back\\slash"]),
                (&1.into(), &2.into(), &3.into())
            );
            let g = &pair[1]["fields"];
            assert_eq!((&g["other"], &g["a\tb"]), (&4.into(), &5.into()));
        }
    }

    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_writer_that_falls_behind_costs_dropped_lines_not_waits() {
        use std::io::Write as _;
        // No writer thread: nothing drains the backlog, as with a stopped stderr reader.
        let sink = Arc::new(Sink::new(true));
        let mut writer = QueueWriter { sink: sink.clone() };
        let mut line = vec![b'x'; 64 * 1024 - 1];
        line.push(b'\n');
        let lines = BACKLOG / line.len() + 50;
        let before = tollgate_server::Metrics::new().render();
        let counted = |text: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix("tollgate_log_lines_dropped_total "))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let started = std::time::Instant::now();
        for _ in 0..lines {
            assert_eq!(writer.write(&line).expect("never fails"), line.len());
        }
        assert!(started.elapsed() < Duration::from_secs(5), "writes waited");
        let dropped = sink.dropped.load(Ordering::Relaxed);
        assert!(dropped >= 50, "{dropped}");
        assert!(sink.pending.lock().expect("lock").len() <= BACKLOG);
        // Every gateway's /metrics shows the process-wide count.
        let after = tollgate_server::Metrics::new().render();
        assert!(counted(&after) >= counted(&before) + dropped, "{after}");
        // The writer says so in the log, in its format, once it catches up.
        let mut out = Vec::new();
        sink.write_pending(&mut out);
        let text = String::from_utf8(out).expect("utf8");
        let notice = text.lines().last().expect("a notice");
        let v: serde_json::Value = serde_json::from_str(notice).expect("a JSON line");
        assert_eq!(v["fields"]["dropped"], dropped);
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 0);
    }

    /// The byte-at-a-time test `needs_escape` replaced, kept as the reference.
    fn needs_escape_reference(s: &[u8]) -> bool {
        s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
    }

    #[test]
    fn needs_escape_agrees_with_a_byte_at_a_time_test() {
        // Every byte value at every place of strings up to three words long, among plain
        // bytes and among high ones (whose bits could fool a word-wide test).
        for background in [b'a', 0x80, 0xff, 0x21] {
            for len in 0..=24 {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut text = vec![background; len];
                        text[at] = b;
                        assert_eq!(
                            needs_escape(&text),
                            needs_escape_reference(&text),
                            "{text:?}"
                        );
                    }
                }
            }
        }
        // And mixed strings from a fixed pseudo-random sequence.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 33) as usize;
            let text: Vec<u8> = (0..len)
                .map(|i| (x.rotate_left(i as u32 * 7) as u8) | if i % 3 == 0 { 0x20 } else { 0 })
                .collect();
            assert_eq!(
                needs_escape(&text),
                needs_escape_reference(&text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let parsed: String = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
    }
}
