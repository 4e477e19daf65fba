//! The access log: one line per request, in the text or JSON layout of every other log line, collected
//! in a buffer that reaches stderr in one write when it fills and at least every second (what
//! nginx's `access_log ... buffer=` does), instead of one write per request. Whether a request is
//! logged is still `RUST_LOG`'s call (target `access`).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::background::wait_or_shutdown;
use crate::config::LogFormat;
use crate::outcome::Outcome;

/// Size at which the buffer is written out without waiting for the flusher.
pub const DEFAULT_BUFFER_BYTES: usize = 64 * 1024;
/// Longest time a line waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// What one access line says about one request.
#[derive(Debug, Clone)]
pub struct AccessRecord<'a> {
    pub outcome: Outcome,
    /// Status sent to the client; 0 when none was.
    pub status: u16,
    pub method: &'a str,
    /// The Host header as received, `-` when absent.
    pub host: &'a str,
    /// The path, never the query.
    pub path: &'a str,
    pub elapsed: Duration,
    /// The container, when the request reached one.
    pub upstream: Option<SocketAddr>,
}

impl AccessRecord<'_> {
    /// Microseconds are plenty, and keep the field short in both layouts.
    fn duration_ms(&self) -> f64 {
        (self.elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0
    }

    /// env_logger's layout with the fields as `key=value` pairs, as other text lines have them.
    fn write_text(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        writeln!(
            out,
            "[{} INFO  access] request outcome={} status={} method={} host={} path={} \
             duration_ms={} upstream={}",
            humantime::format_rfc3339_seconds(SystemTime::now()),
            self.outcome.label(),
            self.status,
            self.method,
            self.host,
            self.path,
            self.duration_ms(),
            OrDash(self.upstream),
        )
    }

    /// The members of every JSON log line, then the access fields (see the README's Logs).
    fn write_json(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let ts = humantime::format_rfc3339_millis(SystemTime::now());
        write!(
            out,
            "{{\"ts\":\"{ts}\",\"level\":\"INFO\",\"target\":\"access\",\"msg\":\"request\",\
             \"outcome\":\"{}\",\"status\":{},\"method\":",
            self.outcome.label(),
            self.status,
        )?;
        serde_json::to_writer(&mut *out, self.method)?;
        out.extend_from_slice(b",\"host\":");
        serde_json::to_writer(&mut *out, self.host)?;
        out.extend_from_slice(b",\"path\":");
        serde_json::to_writer(&mut *out, self.path)?;
        writeln!(
            out,
            ",\"duration_ms\":{},\"upstream\":\"{}\"}}",
            self.duration_ms(),
            OrDash(self.upstream)
        )
    }
}

/// Displays a value, or `-` when there is none, without building a string first.
struct OrDash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

pub struct AccessLog {
    format: LogFormat,
    buf: Mutex<Vec<u8>>,
    limit: usize,
    /// Set once shutdown starts: from then on every line is written at once, because nothing
    /// flushes the buffer after the process exits.
    unbuffered: AtomicBool,
}

impl AccessLog {
    pub fn new(format: LogFormat, limit: usize) -> Self {
        AccessLog {
            format,
            buf: Mutex::new(Vec::with_capacity(limit)),
            limit,
            unbuffered: AtomicBool::new(false),
        }
    }

    /// Whether `RUST_LOG` lets access lines through; checked before anything is formatted.
    pub fn enabled() -> bool {
        log::log_enabled!(target: "access", log::Level::Info)
    }

    /// Appends one request's line, and writes the buffer out if it is full.
    pub fn record(&self, record: &AccessRecord<'_>) {
        let full = {
            let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
            // Writing into a Vec fails only on a serialisation error, which strings cannot have.
            let _ = match self.format {
                LogFormat::Text => record.write_text(&mut buf),
                LogFormat::Json => record.write_json(&mut buf),
            };
            if buf.len() >= self.limit || self.unbuffered.load(Ordering::Relaxed) {
                Some(std::mem::replace(&mut *buf, Vec::with_capacity(self.limit)))
            } else {
                None
            }
        };
        if let Some(out) = full {
            write_out(&out);
        }
    }

    /// Writes out whatever is buffered.
    pub fn flush(&self) {
        let out = {
            let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
            if buf.is_empty() {
                return;
            }
            std::mem::take(&mut *buf)
        };
        write_out(&out);
    }

    fn stop_buffering(&self) {
        self.unbuffered.store(true, Ordering::Relaxed);
        self.flush();
    }
}

/// One write under stderr's lock, so a warning logged meanwhile never lands inside a line.
fn write_out(out: &[u8]) {
    let mut stderr = std::io::stderr().lock();
    if let Err(e) = stderr.write_all(out) {
        // Nowhere better to report it; the lines are lost either way.
        let _ = writeln!(stderr, "access log write failed: {e}");
    }
}

/// Flushes the access log every [`FLUSH_INTERVAL`]; on shutdown flushes and stops buffering.
pub struct AccessLogFlusher {
    log: Arc<AccessLog>,
}

impl AccessLogFlusher {
    pub fn new(log: Arc<AccessLog>) -> Self {
        AccessLogFlusher { log }
    }
}

#[async_trait]
impl BackgroundService for AccessLogFlusher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while wait_or_shutdown(FLUSH_INTERVAL, &mut shutdown).await {
            self.log.flush();
        }
        self.log.stop_buffering();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord<'static> {
        AccessRecord {
            outcome: Outcome::Routed,
            status: 200,
            method: "GET",
            host: "edit.acme.example.com",
            path: "/session/t1/\"quoted\"",
            elapsed: Duration::from_micros(3412),
            upstream: Some("10.0.3.7:4321".parse().unwrap()),
        }
    }

    fn buffered(log: &AccessLog) -> String {
        String::from_utf8(log.buf.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn text_lines_wait_until_the_buffer_fills() {
        let log = AccessLog::new(LogFormat::Text, 1 << 20);
        log.record(&record());
        let text = buffered(&log);
        assert!(text.starts_with('['), "{text}");
        assert!(
            text.ends_with(
                " INFO  access] request outcome=routed status=200 method=GET \
                 host=edit.acme.example.com path=/session/t1/\"quoted\" duration_ms=3.412 \
                 upstream=10.0.3.7:4321\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn json_lines_carry_the_documented_fields() {
        let log = AccessLog::new(LogFormat::Json, 1 << 20);
        log.record(&AccessRecord {
            upstream: None,
            status: 0,
            outcome: Outcome::ClientClosed,
            ..record()
        });
        let text = buffered(&log);
        assert_eq!(text.lines().count(), 1);
        let line: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
        assert_eq!(line["target"], "access");
        assert_eq!(line["msg"], "request");
        assert_eq!(line["outcome"], "client_closed");
        assert_eq!(line["status"], 0);
        assert_eq!(line["path"], "/session/t1/\"quoted\"");
        assert_eq!(line["duration_ms"], 3.412);
        assert_eq!(line["upstream"], "-");
        let ts = line["ts"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
    }

    #[test]
    fn a_full_buffer_is_written_out() {
        let log = AccessLog::new(LogFormat::Text, 16);
        log.record(&record());
        assert!(log.buf.lock().unwrap().is_empty());
    }
}
