//! The access log's output path: one line per request, collected in a buffer that reaches stderr
//! in one write when it fills and at least every second (what nginx's `access_log ... buffer=`
//! does), instead of one write per request. Whether a request is logged is still `RUST_LOG`'s
//! call (target `access`), and lines keep env_logger's layout.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

/// Size at which the buffer is written out without waiting for the flusher.
pub const DEFAULT_BUFFER_BYTES: usize = 64 * 1024;
/// Longest time a line waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

pub struct AccessLog {
    buf: Mutex<Vec<u8>>,
    limit: usize,
    /// Set once shutdown starts: from then on every line is written at once, because nothing
    /// flushes the buffer after the process exits.
    unbuffered: AtomicBool,
}

impl AccessLog {
    pub fn new(limit: usize) -> Self {
        AccessLog {
            buf: Mutex::new(Vec::with_capacity(limit)),
            limit,
            unbuffered: AtomicBool::new(false),
        }
    }

    /// Whether `RUST_LOG` lets access lines through; checked before anything is formatted.
    pub fn enabled() -> bool {
        log::log_enabled!(target: "access", log::Level::Info)
    }

    /// Appends one line, and writes the buffer out if it is full.
    pub fn line(&self, message: fmt::Arguments<'_>) {
        let full = {
            let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
            // Writing into a Vec cannot fail.
            let _ = writeln!(
                buf,
                "[{} INFO  access] {message}",
                humantime::format_rfc3339_seconds(SystemTime::now())
            );
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
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_INTERVAL) => self.log.flush(),
                _ = shutdown.changed() => {
                    self.log.stop_buffering();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_until_the_buffer_fills() {
        let log = AccessLog::new(1 << 20);
        log.line(format_args!("outcome=routed status=200"));
        let buf = log.buf.lock().unwrap();
        let text = std::str::from_utf8(&buf).unwrap();
        assert!(
            text.ends_with(" INFO  access] outcome=routed status=200\n"),
            "{text}"
        );
        assert!(text.starts_with('['));
    }

    #[test]
    fn a_full_buffer_is_written_out() {
        let log = AccessLog::new(16);
        log.line(format_args!("a line longer than sixteen bytes"));
        assert!(log.buf.lock().unwrap().is_empty());
    }
}
