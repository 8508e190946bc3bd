//! "Every node, fetch image X": how a scenario gives the order, and learns when each
//! node holds the image.
//!
//! Today the order is one `shoal pull` per node (the node's pull API, which is what
//! the CLI calls), all sent at the same moment; a node that is killed during its pull
//! is asked again once it runs again (`Fleet::restart`), and its time counts from the
//! order, not from the retry.
//!
//! This is the seam for `shoal seed`: when it lands, [`fetch_everywhere`] sends one
//! `shoal seed IMAGE` to one node and reads each node's completion from the seed's
//! progress. The scenarios, the churn of kills and restarts around it, and the figures
//! stay as they are; a restarted node is then the seed's business, not this module's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::hosts::{Fleet, pull};
use super::progress::Progress;

/// When a node came to hold the image.
#[derive(Clone, Copy, Debug)]
pub struct Fetched {
    /// Seconds from the order until it held every blob.
    pub seconds: f64,
    /// Orders it was given (more than one if it was killed during a pull).
    pub attempts: u32,
    /// Bytes of blobs the image needs, as the node reported them.
    pub bytes: u64,
}

/// How long a killed node may stay down before the order to it is given up.
const RESTART_LIMIT: Duration = Duration::from_secs(180);

/// Orders every node of `fleet` to fetch `image` now; returns, per node, when it held
/// it (counted from `start`). Fails if a node that was not killed fails its pull.
pub fn fetch_everywhere(
    fleet: &Fleet,
    image: &str,
    progress: &Arc<Progress>,
    start: Instant,
) -> anyhow::Result<Vec<Fetched>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..fleet.len())
            .map(|i| scope.spawn(move || fetch_one(fleet, i, image, progress, start)))
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("the thread ordering node {i} panicked"))?
            })
            .collect()
    })
}

fn fetch_one(
    fleet: &Fleet,
    i: usize,
    image: &str,
    progress: &Progress,
    start: Instant,
) -> anyhow::Result<Fetched> {
    let mut attempts = 0;
    loop {
        let (generation, down) = fleet.lives.get(i);
        if down {
            fleet.lives.wait_restarted(i, generation, RESTART_LIMIT)?;
            continue;
        }
        attempts += 1;
        let ns = fleet.ns(i);
        match pull(&ns, image, |p| progress.set(i, p.bytes_done, p.bytes_total)) {
            Ok(report) => {
                progress.finish(i);
                return Ok(Fetched {
                    seconds: start.elapsed().as_secs_f64(),
                    attempts,
                    bytes: report.bytes,
                });
            }
            Err(e) => {
                let (now_generation, now_down) = fleet.lives.get(i);
                if now_down || now_generation != generation {
                    // Killed under the pull: ask again once it is back.
                    fleet.lives.wait_restarted(i, generation, RESTART_LIMIT)?;
                    continue;
                }
                return Err(e).with_context(|| {
                    format!("node {i} failed its pull:\n{}", fleet.node(i).log_tail())
                });
            }
        }
    }
}
