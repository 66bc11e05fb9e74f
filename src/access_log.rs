//! One JSON object per line per request, written when the request ends (for a WebSocket,
//! when it closes). The `path` field is only ever built by `redact::target`.
//!
//! Lines are collected in memory and written in batches — when 32 KiB have piled up, by the
//! background flush every 200 ms, and when the log is dropped at exit — because one write
//! system call per request cost more than everything else ticketgate adds to a request.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

const FLUSH_AT_BYTES: usize = 32 * 1024;
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// The `access_log.path` setting: stdout or a file.
pub enum AccessLogTarget {
    Stdout,
    File(PathBuf),
}

pub struct AccessLog {
    pending: Mutex<Vec<u8>>,
    out: Mutex<Box<dyn Write + Send>>,
}

#[derive(Serialize)]
pub struct Entry<'a> {
    pub ts: String,
    pub method: &'a str,
    /// `HTTP/1.1` or `HTTP/2`: with `tls.http2`, which one a client picked.
    pub protocol: &'a str,
    /// Already redacted.
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    pub subject: Option<&'a str>,
    pub auth: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

fn writer(target: &AccessLogTarget) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        AccessLogTarget::Stdout => Box::new(std::io::stdout()),
        AccessLogTarget::File(path) => {
            Box::new(OpenOptions::new().create(true).append(true).open(path)?)
        }
    })
}

impl AccessLog {
    pub fn open(target: &AccessLogTarget) -> std::io::Result<Self> {
        Ok(AccessLog {
            pending: Mutex::new(Vec::with_capacity(FLUSH_AT_BYTES)),
            out: Mutex::new(writer(target)?),
        })
    }

    /// Writes out what is pending, then continues in `target` opened anew: on a reload,
    /// so that a rotated file (logrotate without `copytruncate`) is let go of.
    pub fn reopen(&self, target: &AccessLogTarget) -> std::io::Result<()> {
        let fresh = writer(target)?;
        self.flush();
        if let Ok(mut out) = self.out.lock() {
            *out = fresh;
        }
        Ok(())
    }

    pub fn write(&self, entry: &Entry) {
        let full = {
            let Ok(mut pending) = self.pending.lock() else {
                return;
            };
            let mut line = serde_json::Serializer::with_formatter(&mut *pending, LineSafe);
            if entry.serialize(&mut line).is_err() {
                return;
            }
            pending.push(b'\n');
            pending.len() >= FLUSH_AT_BYTES
        };
        if full {
            self.flush();
        }
    }

    /// Writes out every line collected so far.
    pub fn flush(&self) {
        let batch = match self.pending.lock() {
            Ok(mut pending) if !pending.is_empty() => std::mem::take(&mut *pending),
            _ => return,
        };
        let Ok(mut out) = self.out.lock() else { return };
        if let Err(e) = out.write_all(&batch).and_then(|()| out.flush()) {
            log::warn!("cannot write the access log: {e}");
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// JSON as `serde_json` writes it, with U+2028 and U+2029 escaped too: valid JSON either
/// way, but JavaScript-era line splitters (and some log viewers) break a line at them, so a
/// client could otherwise show a forged second log line.
struct LineSafe;

impl serde_json::ser::Formatter for LineSafe {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut rest = fragment;
        while let Some(at) = rest.find(['\u{2028}', '\u{2029}']) {
            writer.write_all(&rest.as_bytes()[..at])?;
            let separator = if rest[at..].starts_with('\u{2028}') {
                b"\\u2028"
            } else {
                b"\\u2029"
            };
            writer.write_all(separator)?;
            rest = &rest[at + '\u{2028}'.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_separators_are_escaped_and_the_line_reads_back() {
        let subject = "mallory\u{2028}{\"forged\":1}\u{2029}x\u{85}";
        let entry = Entry {
            ts: crate::clock::timestamp(),
            method: "GET",
            protocol: "HTTP/1.1",
            path: "/ws",
            route: "/ws",
            status: 200,
            duration_ms: 1.0,
            subject: Some(subject),
            auth: "jwt",
            reason: None,
        };
        let mut line = Vec::new();
        entry
            .serialize(&mut serde_json::Serializer::with_formatter(
                &mut line, LineSafe,
            ))
            .expect("serialises");
        let text = String::from_utf8(line).expect("UTF-8");
        assert!(!text.contains(['\u{2028}', '\u{2029}', '\n']), "{text}");
        assert!(text.contains("mallory\\u2028{\\\"forged\\\":1}\\u2029x"));
        let read: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(read["subject"], subject);
    }
}
