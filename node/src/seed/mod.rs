//! Fleet seeding (`shoal seed IMAGE`): the chosen nodes fetch an image before a deploy
//! needs it, and keep it pinned until the deploy pulls it or a time to live passes.
//!
//! # How an order goes
//! - The CLI asks its own node (`POST /_shoal/seed`, root only), which becomes the
//!   order's *issuer*: [`issue`] picks the targets among itself and its verified peers
//!   ([`select`]), sends each chosen peer a `SeedOrder` on a stream of its own, and
//!   carries the order out itself when it is chosen.
//! - A node carries an order out ([`Seeds::carry_out`]) with the fetch `shoal pull`
//!   uses ([`crate::pull::fetch_image`]): the same manifests, blob service and checks
//!   an engine's pull gets, so the fleet is asked before the origin and one copy leaves
//!   the origin however many nodes seed. Once every blob is held, the image gets a
//!   `seed` pin that lapses after the order's time to live.
//! - It reports on the order's stream at least every [`STATUS_EVERY`] and when the
//!   order ends ([`answer_order`]). The issuer streams a snapshot of every target to
//!   the CLI twice a second, and a report at the end. A target that is not connected
//!   fails at once, one that disconnects or goes silent for [`issue::SILENCE`] fails,
//!   one not done by the deadline times out; each by name.
//! - An order runs to its end on every node even if the issuer stops watching (the CLI
//!   is interrupted, the deadline passes): stopping the watch does not undo a seed.
//!   The same order id is never carried out twice at once on one node.
//! - Orders reach only the issuer's verified peers: they are not relayed. A fleet found
//!   by mDNS or bootstrap peers is a full mesh in practice, and a node the issuer cannot
//!   reach directly could not be watched either.
//!
//! # The `seed` pin
//! It keeps GC from removing the image while the fleet waits for the deploy. The first
//! `GET` of the image's manifest through the mirror (an engine's pull, the deploy)
//! removes it ([`deployed`]); from then on the image is an ordinary image that GC keeps
//! while it is used. If no deploy comes, the pin lapses after its time to live.

pub mod issue;
pub mod report;
pub mod select;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures_util::io::AsyncWrite;
use shoal_protocol::wire::{MAX_TEXT_LEN, Message, SeedState};
use tokio::sync::watch;

use crate::node::Node;
use crate::p2p::P2p;
use crate::p2p::io::{FrameWriter, StreamError};
use crate::store::images::{ImageKey, Pin};
use crate::store::unix_now;

/// The name of the pin a seed sets.
pub const SEED_PIN: &str = "seed";

/// How long a seeded image stays pinned if no deploy pulls it [default of `--pin-ttl`].
pub const DEFAULT_PIN_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long the issuer waits for every target [default of `--timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// How often a node carrying out an order reports at the latest.
pub const STATUS_EVERY: Duration = Duration::from_millis(500);

/// An order as a node carries it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// Chosen by the issuer; the same on every node.
    pub id: u64,
    /// The image as the operator wrote it, parsed by each node against its own
    /// registry configuration.
    pub image: String,
    /// How long the image stays pinned once held (zero: not pinned).
    pub pin_ttl: Duration,
}

/// An order's id as logs and the CLI show it.
pub fn order_name(id: u64) -> String {
    format!("{id:016x}")
}

/// How an order is going on the node carrying it out (the domain form of a
/// `SeedStatus`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Where it stands.
    pub state: SeedState,
    /// Bytes of the image held so far.
    pub bytes_done: u64,
    /// Bytes of the image in all (0 until its manifests are fetched).
    pub bytes_total: u64,
    /// Bytes this node received from the origin while carrying the order out.
    pub from_origin: u64,
    /// Bytes this node received from peers meanwhile.
    pub from_peers: u64,
    /// Why it failed, or empty.
    pub detail: String,
}

impl Status {
    fn queued() -> Self {
        Status {
            state: SeedState::Queued,
            bytes_done: 0,
            bytes_total: 0,
            from_origin: 0,
            from_peers: 0,
            detail: String::new(),
        }
    }

    /// Whether the order has ended here (complete or failed).
    pub fn is_over(&self) -> bool {
        matches!(self.state, SeedState::Complete | SeedState::Failed)
    }

    /// The status failed for `why`, keeping the bytes it got to.
    pub fn failed(&self, why: impl Into<String>) -> Status {
        Status {
            state: SeedState::Failed,
            detail: why.into(),
            ..self.clone()
        }
    }

    /// The `SeedStatus` for order `id`: progress clamped to its total and the detail
    /// cut to what the wire carries, so that it always encodes.
    pub fn to_wire(&self, id: u64) -> Message {
        Message::SeedStatus {
            id,
            state: self.state,
            bytes_done: self.bytes_done.min(self.bytes_total),
            bytes_total: self.bytes_total,
            from_origin: self.from_origin,
            from_peers: self.from_peers,
            detail: cut(&self.detail, MAX_TEXT_LEN),
        }
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The orders this node carries out.
pub struct Seeds {
    node: OnceLock<Weak<Node>>,
    // std Mutex: map operations only, never held across an await.
    running: Mutex<HashMap<u64, watch::Receiver<Status>>>,
}

impl Seeds {
    /// A service with no node yet ([`Seeds::bind`] gives it one).
    pub fn new() -> Arc<Seeds> {
        Arc::new(Seeds {
            node: OnceLock::new(),
            running: Mutex::new(HashMap::new()),
        })
    }

    /// Gives the service the node it fetches into (held weakly: the node owns it).
    pub fn bind(&self, node: &Arc<Node>) {
        let _ = self.node.set(Arc::downgrade(node));
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<u64, watch::Receiver<Status>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Carries `order` out on this node, or joins the run of the same id already going;
    /// its statuses arrive on the receiver, the last one complete or failed.
    pub fn carry_out(self: &Arc<Self>, order: Order) -> watch::Receiver<Status> {
        let (tx, rx) = {
            let mut running = self.running();
            if let Some(rx) = running.get(&order.id) {
                return rx.clone();
            }
            let (tx, rx) = watch::channel(Status::queued());
            running.insert(order.id, rx.clone());
            (tx, rx)
        };
        let seeds = Arc::clone(self);
        tokio::spawn(async move {
            let id = order.id;
            match seeds.node.get().and_then(Weak::upgrade) {
                Some(node) => run(&node, order, &tx).await,
                None => {
                    tx.send_replace(Status::queued().failed("the node is shutting down"));
                }
            }
            seeds.running().remove(&id);
        });
        rx
    }
}

/// Fetches the order's image and pins it, telling `tx` how it goes.
async fn run(node: &Arc<Node>, order: Order, tx: &watch::Sender<Status>) {
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let (origin_before, peers_before) = (
        count(&node.stats.bytes_from_origin),
        count(&node.stats.bytes_from_peers),
    );
    // Node-wide counters: other pulls running at the same time count too.
    let traffic = || {
        (
            count(&node.stats.bytes_from_origin).saturating_sub(origin_before),
            count(&node.stats.bytes_from_peers).saturating_sub(peers_before),
        )
    };
    tx.send_modify(|s| s.state = SeedState::Fetching);
    let ttl = order.pin_ttl;
    let result = crate::pull::fetch_image(
        node,
        &order.image,
        None,
        |p| {
            let (from_origin, from_peers) = traffic();
            tx.send_modify(|s| {
                s.bytes_total = p.bytes_total;
                s.bytes_done = p.bytes_done.min(p.bytes_total);
                s.from_origin = from_origin;
                s.from_peers = from_peers;
            });
            ControlFlow::Continue(())
        },
        |key: &ImageKey| {
            if ttl.is_zero() {
                return Ok(());
            }
            let now = unix_now();
            let pin = Pin {
                created: now,
                expires: Some(now.saturating_add(ttl.as_secs())),
            };
            node.store.set_pin(key, SEED_PIN, &pin)?;
            tracing::info!(image = %key, ttl_secs = ttl.as_secs(), "seeded image pinned");
            Ok(())
        },
    )
    .await;
    let (from_origin, from_peers) = traffic();
    let id = order_name(order.id);
    match result {
        Ok(report) => {
            tracing::info!(%id, image = %order.image, bytes = report.bytes, from_origin, from_peers, "seed order complete");
            tx.send_modify(|s| {
                s.state = SeedState::Complete;
                s.bytes_total = report.bytes;
                s.bytes_done = report.bytes;
                s.from_origin = from_origin;
                s.from_peers = from_peers;
            });
        }
        Err(e) => {
            tracing::warn!(%id, image = %order.image, "seed order failed: {e:#}");
            tx.send_modify(|s| {
                s.state = SeedState::Failed;
                s.detail = format!("{e:#}");
                s.from_origin = from_origin;
                s.from_peers = from_peers;
            });
        }
    }
}

/// Carries out an order a peer sent, answering on its stream: a status at least every
/// [`STATUS_EVERY`], and the last one as soon as the order ends.
pub(crate) async fn answer_order<W: AsyncWrite + Unpin>(
    p2p: &P2p,
    order: Order,
    writer: &mut FrameWriter<W>,
) -> Result<(), StreamError> {
    let id = order.id;
    let mut rx = match p2p.seeds() {
        Ok(seeds) => seeds.carry_out(order),
        Err(e) => {
            let failed = Status::queued().failed(e.to_string());
            return writer.send(&failed.to_wire(id)).await;
        }
    };
    loop {
        let status = rx.borrow_and_update().clone();
        writer.send(&status.to_wire(id)).await?;
        if status.is_over() {
            return Ok(());
        }
        let closed = matches!(
            tokio::time::timeout(STATUS_EVERY, rx.wait_for(Status::is_over)).await,
            Ok(Err(_))
        );
        if closed && !rx.borrow().is_over() {
            // The run ended without saying how (it panicked).
            let failed = status.failed("the seed task on this node died (see its log)");
            return writer.send(&failed.to_wire(id)).await;
        }
    }
}

/// An engine pulled the manifest of `key` through the mirror: the deploy a seed was
/// for has come, so the image's `seed` pin goes (GC keeps the image while it is used).
pub fn deployed(node: &Node, key: &ImageKey) {
    match node.store.remove_pin(key, SEED_PIN) {
        Ok(true) => tracing::info!(image = %key, "seed pin removed: an engine pulled the image"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(image = %key, "cannot remove the seed pin (it lapses by itself): {e}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_always_encodes() {
        let s = Status {
            state: SeedState::Fetching,
            bytes_done: 10,
            bytes_total: 5,
            from_origin: 1,
            from_peers: 2,
            detail: "é".repeat(MAX_TEXT_LEN),
        };
        let m = s.to_wire(7);
        m.validate().unwrap();
        let Message::SeedStatus {
            bytes_done, detail, ..
        } = m
        else {
            panic!("{m:?}");
        };
        assert_eq!(bytes_done, 5);
        assert_eq!(detail.len(), MAX_TEXT_LEN);
    }

    #[test]
    fn a_failure_keeps_the_progress_made() {
        let mut s = Status::queued();
        s.bytes_done = 3;
        s.bytes_total = 9;
        let f = s.failed("gone");
        assert!(f.is_over());
        assert_eq!(
            (f.bytes_done, f.bytes_total, f.detail.as_str()),
            (3, 9, "gone")
        );
        assert!(!s.is_over());
    }
}
