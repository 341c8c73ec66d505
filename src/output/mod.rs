//! Everything the plugin shows: one [`Printer`] for stdout (tables, JSON,
//! YAML) and the stderr log/progress set-up.
//!
//! Owns formatting only; commands hand it rows and serializable values.
//! Whatever it writes comes after the progress bars have ended
//! ([`log::settle`]), so no redraw can overwrite a result.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod log;

use crate::cli::OutputFormat;
use serde::Serialize;
use std::io::Write;

pub struct Printer {
    format: OutputFormat,
    /// Lines of the last [`Printer::value_in_place`] table still on screen.
    in_place: std::sync::atomic::AtomicUsize,
}

impl Printer {
    pub fn new(format: OutputFormat) -> Self {
        Printer {
            format,
            in_place: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// [`Printer::value`] that replaces the previous one on a terminal
    /// (table output to a terminal); otherwise it follows it, after a blank
    /// line for tables.
    pub fn value_in_place<T: Serialize>(
        &self,
        value: &T,
        to_table: impl FnOnce(&T) -> String,
    ) -> std::io::Result<()> {
        use std::io::IsTerminal;
        use std::sync::atomic::Ordering;
        if self.format != OutputFormat::Table {
            return self.value(value, to_table);
        }
        let text = to_table(value);
        let before = self.in_place.swap(text.lines().count(), Ordering::SeqCst);
        let lead = if !std::io::stdout().is_terminal() {
            if before > 0 { "\n" } else { "" }.to_owned()
        } else if before > 0 {
            // Up to the first line of the previous table, and clear below.
            format!("\x1b[{before}F\x1b[J")
        } else {
            String::new()
        };
        if std::io::stdout().is_terminal() {
            // Lines too long for the screen are cut, not wrapped, so that
            // the next redraw knows how many lines to go up.
            self.raw(&format!("{lead}\x1b[?7l{text}\x1b[?7h"))
        } else {
            self.raw(&format!("{lead}{text}"))
        }
    }

    /// The next [`Printer::value_in_place`] starts below whatever is on
    /// screen (another line was written in between).
    pub fn forget_in_place(&self) {
        self.in_place.store(0, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// One line of plain text on stdout, after the progress bars have ended.
    pub fn line(&self, text: &str) {
        log::settle(log::Settle::Done);
        println!("{text}");
    }

    /// Text exactly as given (a document to pipe on), after the bars have ended.
    pub fn raw(&self, text: &str) -> std::io::Result<()> {
        log::settle(log::Settle::Done);
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    }

    /// A value in the chosen machine format; `table` renders with `to_table`.
    pub fn value<T: Serialize>(
        &self,
        value: &T,
        to_table: impl FnOnce(&T) -> String,
    ) -> std::io::Result<()> {
        let text = match self.format {
            OutputFormat::Table => to_table(value),
            OutputFormat::Json => {
                serde_json::to_string_pretty(value).map_err(std::io::Error::other)? + "\n"
            }
            OutputFormat::Yaml => serde_yaml::to_string(value).map_err(std::io::Error::other)?,
        };
        log::settle(log::Settle::Done);
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    }
}

/// Renders rows as an aligned table with upper-case headers, as kubectl does.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut push = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            text.push_str(cell);
            if i < last {
                text.push_str(&" ".repeat(w - cell.chars().count() + 3));
            }
        }
        text.push('\n');
    };
    push(headers.to_vec());
    for row in rows {
        push(row.iter().map(String::as_str).collect());
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_columns() {
        let t = super::table(
            &["NAME", "READY"],
            &[
                vec!["openbao-0".into(), "true".into()],
                vec!["x".into(), "false".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME        READY\nopenbao-0   true\nx           false\n"
        );
    }
}
