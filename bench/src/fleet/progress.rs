//! Progress while a phase runs: one line on stderr, redrawn every half second on a
//! terminal and printed every five seconds otherwise, with the time, how many nodes
//! are done, each node's share of the image, and what the origin has sent.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::net::Sampler;

/// What every node has so far, updated by the threads that drive them.
pub struct Progress {
    start: Instant,
    done: Vec<AtomicU64>,
    total: Vec<AtomicU64>,
    finished: Vec<AtomicBool>,
    note: Mutex<String>,
}

impl Progress {
    /// `nodes` nodes, nothing done, the clock started now.
    pub fn new(nodes: usize) -> Arc<Progress> {
        Arc::new(Progress {
            start: Instant::now(),
            done: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            total: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            finished: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            note: Mutex::new(String::new()),
        })
    }

    /// Node `i` holds `done` of `total` bytes.
    pub fn set(&self, i: usize, done: u64, total: u64) {
        self.done[i].store(done, Ordering::Relaxed);
        self.total[i].store(total, Ordering::Relaxed);
    }

    /// Node `i` is done.
    pub fn finish(&self, i: usize) {
        self.finished[i].store(true, Ordering::Relaxed);
        let total = self.total[i].load(Ordering::Relaxed);
        self.done[i].store(total, Ordering::Relaxed);
    }

    /// An event worth showing (a node killed, say) until the next one.
    pub fn note(&self, text: String) {
        *self.note.lock().unwrap_or_else(|e| e.into_inner()) = text;
    }

    fn line(&self, label: &str, origin_sent: Option<u64>) -> String {
        let n = self.done.len();
        let finished = self
            .finished
            .iter()
            .filter(|f| f.load(Ordering::Relaxed))
            .count();
        let shares: String = (0..n)
            .map(|i| {
                let (d, t) = (
                    self.done[i].load(Ordering::Relaxed),
                    self.total[i].load(Ordering::Relaxed),
                );
                if self.finished[i].load(Ordering::Relaxed) {
                    '#'
                } else {
                    (d * 10)
                        .checked_div(t)
                        .and_then(|tenths| char::from_digit(tenths.min(9) as u32, 10))
                        .unwrap_or('.')
                }
            })
            .collect();
        let origin = origin_sent
            .map(|b| format!("  origin sent {:.1} MB", b as f64 / 1e6))
            .unwrap_or_default();
        let note = self.note.lock().unwrap_or_else(|e| e.into_inner()).clone();
        format!(
            "{label}: {:>6.1} s  {finished}/{n} done  [{shares}]{origin}  {note}",
            self.start.elapsed().as_secs_f64()
        )
    }
}

/// Draws a [`Progress`] until dropped.
pub struct Display {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Display {
    /// Shows `progress` as `label`, with the origin's bytes sent since now from
    /// `sampler`.
    pub fn start(label: String, progress: Arc<Progress>, sampler: Arc<Sampler>) -> Display {
        let stop = Arc::new(AtomicBool::new(false));
        let tty = std::io::stderr().is_terminal();
        let base = sampler.latest().map(|s| s.origin.sent);
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let every = if tty {
                    Duration::from_millis(500)
                } else {
                    Duration::from_secs(5)
                };
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if last.elapsed() < every {
                        continue;
                    }
                    last = Instant::now();
                    let sent = sampler
                        .latest()
                        .zip(base)
                        .map(|(s, b)| s.origin.sent.saturating_sub(b));
                    let line = progress.line(&label, sent);
                    let mut err = std::io::stderr().lock();
                    if tty {
                        let _ = write!(err, "\r\x1b[2K{line}");
                    } else {
                        let _ = writeln!(err, "{line}");
                    }
                }
                if tty {
                    let _ = write!(std::io::stderr(), "\r\x1b[2K");
                }
            })
        };
        Display {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
