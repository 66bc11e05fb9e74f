//! One JSON object per line per request, written when the request ends (for a WebSocket,
//! when it closes). The `path` field is only ever built by `redact::target`.

use std::fs::OpenOptions;
use std::io::{LineWriter, Write};
use std::sync::Mutex;

use serde::Serialize;

use crate::config::AccessLogTarget;

pub struct AccessLog {
    out: Mutex<LineWriter<Box<dyn Write + Send>>>,
}

#[derive(Serialize)]
pub struct Entry<'a> {
    pub ts: String,
    pub method: &'a str,
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

impl AccessLog {
    pub fn open(target: &AccessLogTarget) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match target {
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(path) => {
                Box::new(OpenOptions::new().create(true).append(true).open(path)?)
            }
        };
        Ok(AccessLog {
            out: Mutex::new(LineWriter::new(out)),
        })
    }

    pub fn write(&self, entry: &Entry) {
        let Ok(mut line) = serde_json::to_vec(entry) else {
            return;
        };
        line.push(b'\n');
        let Ok(mut out) = self.out.lock() else { return };
        if let Err(e) = out.write_all(&line) {
            log::warn!("cannot write the access log: {e}");
        }
    }
}

/// The current time as RFC 3339 UTC with milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
