//! The audit log: one JSON line per API request in `<dir>/audit.jsonl`.
//!
//! Owns the file and the line format; each line is flushed at once so tests
//! can read the log while the server runs. What goes into an entry is
//! decided by the API layer.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde_json::Value;

/// Append-only audit log.
pub struct Audit {
    file: Mutex<File>,
}

impl Audit {
    /// Opens (appending) the log at `path`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    /// Appends one entry as a JSON line and flushes it.
    pub fn record(&self, entry: &Value) {
        let mut line = entry.to_string();
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()).and_then(|()| f.flush()) {
            tracing::warn!("audit log write failed: {e}");
        }
    }
}
