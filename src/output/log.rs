//! Log lines and progress on stderr.
//!
//! Operations report through `tracing` events; events that carry a `pod`
//! field drive one indicatif line per pod when stderr is a terminal, and
//! become plain (or JSON) log lines otherwise. The core never owns a bar.

use crate::cli::LogFormat;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
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
    let filter = EnvFilter::try_from_env("KUBECTL_VAULT_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,kubectl_vault={level}")));
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
        (LogFormat::Text, true) => registry.with(ProgressLayer::default()).try_init(),
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

/// One spinner line per pod; other events print above the bars.
struct ProgressLayer {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Default for ProgressLayer {
    fn default() -> Self {
        ProgressLayer {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

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
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut text = fields.message;
        if !fields.rest.is_empty() {
            text = format!("{text} ({})", fields.rest.join(", "));
        }
        let level = *event.metadata().level();
        match fields.pod {
            Some(pod) if level >= Level::INFO => {
                let Ok(mut bars) = self.bars.lock() else {
                    return;
                };
                let bar = bars.entry(pod.clone()).or_insert_with(|| {
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {prefix:<14} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(pod);
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                });
                bar.set_message(text);
            }
            pod => {
                let prefix = if level <= Level::WARN {
                    format!("{}: ", level.as_str().to_lowercase())
                } else {
                    String::new()
                };
                let pod = pod.map(|p| format!("{p}: ")).unwrap_or_default();
                let _ = self.multi.println(format!("{prefix}{pod}{text}"));
            }
        }
    }
}
