//! Log lines and progress on stderr.
//!
//! Operations report through `tracing` events; events that carry a `pod`
//! field drive one spinner line per pod when stderr is a terminal, and
//! become plain (or JSON) log lines otherwise. The core never owns a bar.
//!
//! This module is the one owner of the terminal's progress display for the
//! whole command: every line printed while bars are live goes through its
//! `MultiProgress`, and [`settle`] ends every bar with a final `✓`/`✗` line
//! (or a plain line) before anything is written to stdout and before the
//! command's error is printed. After that nothing redraws: later events are
//! plain lines.

use crate::cli::LogFormat;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Progress bars only on a terminal, only
/// with text logs and only when not disabled.
pub fn init(verbose: u8, format: LogFormat, no_progress: bool) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // The client's own error events repeat what the command reports in a
    // sentence; they show from -v on.
    let quiet = if verbose == 0 { ",kube_client=off" } else { "" };
    let filter = EnvFilter::try_from_env("KUBECTL_VAULT_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("warn{quiet},kubectl_vault={level}")));
    let registry = tracing_subscriber::registry().with(filter);
    let bars = !no_progress && format == LogFormat::Text && std::io::stderr().is_terminal();
    let result = match (format, bars) {
        (LogFormat::Json, _) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        (LogFormat::Text, true) => {
            let _ = PROGRESS.set(Progress::default());
            registry.with(ProgressLayer).try_init()
        }
        (LogFormat::Text, false) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .without_time()
                    .with_target(false)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    drop(result);
}

/// How the command ended, for the final mark on each bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// The command is reporting its result: every bar gets `✓` (or `✗` for
    /// a pod whose last word was a warning).
    Done,
    /// The command failed: bars of pods that warned get `✗`; the others
    /// end as a plain line of what they last reported, without a verdict.
    Failed,
}

/// Ends every bar: final lines replace the spinners, and from now on every
/// event is a plain line. Idempotent; a no-op without bars.
pub fn settle(how: Settle) {
    let Some(progress) = PROGRESS.get() else {
        return;
    };
    let Ok(mut state) = progress.state.lock() else {
        return;
    };
    if state.settled {
        return;
    }
    state.settled = true;
    for line in &state.lines {
        line.bar.disable_steady_tick();
        line.bar.finish_and_clear();
    }
    let _ = progress.multi.clear();
    // Pods in name order (they report concurrently), transfers after them.
    state
        .lines
        .sort_by(|a, b| (a.took.is_some(), &a.key).cmp(&(b.took.is_some(), &b.key)));
    for line in state.lines.drain(..) {
        let text = line.final_text();
        let mark = match (line.failed, how) {
            (true, _) => "✗ ",
            (false, Settle::Done) => "✓ ",
            (false, Settle::Failed) => "",
        };
        if mark.is_empty() {
            eprintln_plain(&format!("{}: {text}", line.key));
        } else {
            eprintln_plain(&format!("{mark}{:<14} {text}", line.key));
        }
    }
}

/// Runs `f` (a prompt) with the bars hidden, and draws them again after.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    match PROGRESS.get() {
        Some(progress) => progress.multi.suspend(f),
        None => f(),
    }
}

/// A byte stream's progress: bytes, rate and (with a known size) ETA on a
/// terminal, nothing otherwise (the command logs the start and the result).
/// Ends with the other bars at [`settle`].
#[derive(Clone)]
pub struct Transfer {
    bar: ProgressBar,
    /// How long the stream took, set when the reader reaches its end.
    took: Arc<OnceLock<Duration>>,
}

impl Transfer {
    /// A transfer line named `label`; `total` when the size is known.
    pub fn start(label: &str, total: Option<u64>) -> Transfer {
        let hidden = || Transfer {
            bar: ProgressBar::hidden(),
            took: Arc::default(),
        };
        let Some(progress) = PROGRESS.get() else {
            return hidden();
        };
        let Ok(mut state) = progress.state.lock() else {
            return hidden();
        };
        if state.settled {
            return hidden();
        }
        let (bar, template) = match total {
            Some(total) => (
                ProgressBar::new(total),
                "{spinner} {prefix:<14} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            ),
            None => (
                ProgressBar::new_spinner(),
                "{spinner} {prefix:<14} {bytes} {binary_bytes_per_sec}",
            ),
        };
        let bar = progress.multi.add(bar);
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_owned());
        bar.enable_steady_tick(TICK);
        let took = Arc::<OnceLock<Duration>>::default();
        state.lines.push(Line {
            key: label.to_owned(),
            bar: bar.clone(),
            text: String::new(),
            failed: false,
            took: Some(took.clone()),
        });
        Transfer { bar, took }
    }

    /// Counts `n` more bytes.
    pub fn advance(&self, n: usize) {
        self.bar.inc(n as u64);
    }

    /// `reader`, counting what is read from it on this line.
    pub fn reader<R>(&self, reader: R) -> Counting<R> {
        Counting {
            inner: reader,
            transfer: self.clone(),
        }
    }
}

/// An `AsyncRead` that advances a [`Transfer`] by what passes through it.
pub struct Counting<R> {
    inner: R,
    transfer: Transfer,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counting<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.transfer.advance(read);
        } else if matches!(polled, std::task::Poll::Ready(Ok(()))) && buf.remaining() > 0 {
            let _ = self.transfer.took.set(self.transfer.bar.elapsed());
        }
        polled
    }
}

const TICK: Duration = Duration::from_millis(120);

static PROGRESS: OnceLock<Progress> = OnceLock::new();

/// The command's one `MultiProgress` and its lines, in the order they appeared.
struct Progress {
    multi: MultiProgress,
    state: Mutex<State>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            state: Mutex::new(State::default()),
        }
    }
}

#[derive(Default)]
struct State {
    lines: Vec<Line>,
    settled: bool,
}

/// One pod's spinner (or one transfer) and what it last said.
struct Line {
    key: String,
    bar: ProgressBar,
    text: String,
    failed: bool,
    /// For a transfer: how long it took, once it ended.
    took: Option<Arc<OnceLock<Duration>>>,
}

impl Line {
    fn final_text(&self) -> String {
        let Some(took) = &self.took else {
            return self.text.clone();
        };
        let bytes = self.bar.position();
        let secs = took
            .get()
            .copied()
            .unwrap_or_else(|| self.bar.elapsed())
            .as_secs_f64();
        let rate = if secs > 0.0 {
            format!(
                ", {}/s",
                indicatif::BinaryBytes((bytes as f64 / secs) as u64)
            )
        } else {
            String::new()
        };
        format!("{} in {:.1}s{rate}", indicatif::BinaryBytes(bytes), secs)
    }
}

/// One line on stderr, outside the bars (which are gone by then).
#[allow(clippy::print_stderr)]
fn eprintln_plain(text: &str) {
    eprintln!("{text}");
}

/// Routes events to the bars of [`PROGRESS`] while they are live.
struct ProgressLayer;

#[derive(Default)]
struct Fields {
    message: String,
    pod: Option<String>,
    rest: Vec<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "pod" => self.pod = Some(value.to_owned()),
            name => self.rest.push(format!("{name}={value}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "pod" => self.pod = Some(format!("{value:?}").trim_matches('"').to_owned()),
            name => self.rest.push(format!("{name}={value:?}")),
        }
    }
}

impl<S: Subscriber> Layer<S> for ProgressLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(progress) = PROGRESS.get() else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut text = fields.message;
        if !fields.rest.is_empty() {
            text = format!("{text} ({})", fields.rest.join(", "));
        }
        let level = *event.metadata().level();
        let Ok(mut state) = progress.state.lock() else {
            return;
        };
        let prefix = if level <= Level::WARN {
            format!("{}: ", level.as_str().to_lowercase())
        } else {
            String::new()
        };
        match fields.pod {
            Some(pod) if !state.settled => {
                if level <= Level::WARN {
                    if let Some(line) = state.lines.iter_mut().find(|l| l.key == pod) {
                        line.failed = true;
                    }
                    let _ = progress.multi.println(format!("{prefix}{pod}: {text}"));
                    return;
                }
                if let Some(line) = state.lines.iter_mut().find(|l| l.key == pod) {
                    line.failed = false;
                    line.bar.set_message(text.clone());
                    line.text = text;
                    return;
                }
                let bar = progress.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:<14} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(pod.clone());
                bar.set_message(text.clone());
                bar.enable_steady_tick(TICK);
                state.lines.push(Line {
                    key: pod,
                    bar,
                    text,
                    failed: false,
                    took: None,
                });
            }
            pod => {
                let pod = pod.map(|p| format!("{p}: ")).unwrap_or_default();
                let line = format!("{prefix}{pod}{text}");
                if state.settled {
                    eprintln_plain(&line);
                } else {
                    let _ = progress.multi.println(line);
                }
            }
        }
    }
}
