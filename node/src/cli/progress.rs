//! Progress on stderr for long commands: a bar on a terminal; otherwise (logs, CI) a
//! plain line when the stage changes and every few seconds.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::remote::mib;

/// How often a plain progress line is printed within a stage.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// What the bar counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes (shown as sizes, with a rate).
    Bytes,
    /// Items (removals, blobs).
    Items,
}

/// One progress display.
pub struct Display {
    command: &'static str,
    unit: Unit,
    bar: Option<ProgressBar>,
    last_line: Option<(Instant, String)>,
}

impl Display {
    /// A display for `command` counting in `unit`.
    pub fn new(command: &'static str, unit: Unit) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let template = match unit {
                Unit::Bytes => {
                    "{spinner} {msg:<28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
                }
                Unit::Items => "{spinner} {msg:<28} [{bar:30}] {pos}/{len} {eta}",
            };
            let bar = ProgressBar::new(0);
            // The templates are constants: they parse.
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Display {
            command,
            unit,
            bar,
            last_line: None,
        }
    }

    /// Shows `done` of `total` in stage `stage`.
    pub fn update(&mut self, stage: &str, done: u64, total: u64) {
        let total = total.max(done);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(stage.to_owned());
            return;
        }
        let due = self
            .last_line
            .as_ref()
            .is_none_or(|(at, last)| last != stage || at.elapsed() >= LINE_EVERY);
        if due {
            self.last_line = Some((Instant::now(), stage.to_owned()));
            let (done, total) = match self.unit {
                Unit::Bytes => (mib(done), mib(total)),
                Unit::Items => (done.to_string(), total.to_string()),
            };
            eprintln!("{}: {stage}; {done} of {total}", self.command);
        }
    }

    /// Clears the bar.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
