//! Fetching one blob from peers: pieces from several peers at once, rarest first, with
//! an end-game, every piece checked against its BLAKE3 id before it is stored, the
//! whole blob against its sha256 before it counts.
//!
//! # Shape
//! One coordinator (the blob's fetch task, [`fetch_from_peers`]) owns the state: which
//! pieces are held, requested, and available where. One worker per peer owns a
//! stream to it: it asks for the blob map, then for the pieces the coordinator assigns
//! it (pipelined: the next request goes out before the answers to the last end), and
//! reports what arrived. Workers check each piece against the id they were told to
//! expect, in parallel; the coordinator stores pieces and advances the sha256 over the
//! contiguous prefix as they land.
//!
//! # Trust
//! Piece ids come from peers' maps, so they are hints: a piece that matches its id can
//! still belong to a lie told consistently. The sha256 of the whole blob decides. A
//! peer whose piece does not match the id it was asked for, or that answers out of
//! order, is banned at once; if the assembled blob's sha256 is wrong, every peer whose
//! map supplied ids is banned and the partial is dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::io::AsyncReadExt;
use libp2p::PeerId;
use shoal_protocol::digest::DigestHasher;
use shoal_protocol::wire::{MAX_REQUEST_PIECES, Message, Unavailable};
use shoal_protocol::{Digest, PieceId, PieceLayout};
use tokio::sync::{mpsc, watch};

use super::P2p;
use super::io::{FrameReader, FrameWriter, StreamError};
use crate::blobs::FetchState;
use crate::stats::Stats;
use crate::store::{Store, StoreError, read_piece};

/// Pieces requested from one peer and not yet answered.
const WINDOW: usize = 12;
/// The same for the node the fleet elected to fetch the blob from the origin, while
/// other peers share the transfer (see [`Assembly::source`]).
const SOURCE_WINDOW: usize = 2;
/// Most peers one blob is fetched from at once.
const MAX_PEERS: usize = 8;
/// How often a peer whose map is incomplete is asked again.
const MAP_REFRESH: Duration = Duration::from_millis(150);
/// Once a transfer runs, a peer that held nothing of the blob is asked again after
/// this long (it may be fetching the blob too by then, and serve what it has)...
const ABSENT_RETRY: Duration = Duration::from_millis(500);
/// ...this many times.
const MAX_ABSENT: u32 = 6;

/// How long peers are watched before their pace is judged, and the span it is
/// measured over.
pub const PACE_WINDOW: Duration = Duration::from_secs(4);

/// Bytes peers delivered for one blob, over the last [`PACE_WINDOW`].
struct Pace {
    /// Bytes per second below which peers lose the blob to the origin (0: never).
    floor: u64,
    started: Instant,
    arrivals: VecDeque<(Instant, u64)>,
}

impl Pace {
    fn new(floor: u64, now: Instant) -> Pace {
        Pace {
            floor,
            started: now,
            arrivals: VecDeque::new(),
        }
    }

    fn arrived(&mut self, now: Instant, bytes: u64) {
        self.arrivals.push_back((now, bytes));
    }

    /// The rate over the last window, if peers have had a whole window and it is under
    /// the floor.
    fn too_slow(&mut self, now: Instant) -> Option<u64> {
        if self.floor == 0 || now.duration_since(self.started) < PACE_WINDOW {
            return None;
        }
        while let Some((at, _)) = self.arrivals.front()
            && now.duration_since(*at) > PACE_WINDOW
        {
            self.arrivals.pop_front();
        }
        let bytes: u64 = self.arrivals.iter().map(|(_, b)| b).sum();
        let rate = (bytes as f64 / PACE_WINDOW.as_secs_f64()) as u64;
        (rate < self.floor).then_some(rate)
    }
}

/// Why peers did not deliver a blob (the caller turns to the origin).
#[derive(Debug, thiserror::Error)]
pub enum PeerFetchError {
    /// No peer answered with the blob.
    #[error("no peer holds {0}")]
    NoPeers(Digest),
    /// Peers held it but stopped delivering.
    #[error("peers stopped delivering {digest} after {got} of {size} bytes: {why}")]
    Stalled {
        /// The blob.
        digest: Digest,
        /// Bytes stored so far (kept, to be resumed).
        got: u64,
        /// Its size.
        size: u64,
        /// What happened.
        why: String,
    },
    /// Peers delivered, but too slowly; what they sent is kept, to be resumed.
    #[error(
        "peers delivered {digest} at {} KiB/s, under the {} KiB/s wanted ({got} of {size} bytes held)",
        rate / 1024,
        floor / 1024
    )]
    TooSlow {
        /// The blob.
        digest: Digest,
        /// Bytes stored so far.
        got: u64,
        /// Its size.
        size: u64,
        /// What peers delivered over the last window, bytes per second.
        rate: u64,
        /// What was wanted, bytes per second.
        floor: u64,
    },
    /// The pieces peers sent assemble into the wrong blob; nothing was kept.
    #[error(
        "pieces from peers for {expected} hash to {actual}; the peers that described it were banned"
    )]
    DigestMismatch {
        /// The digest asked for.
        expected: Digest,
        /// What the bytes hashed to.
        actual: Digest,
    },
    /// The store failed.
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    /// A blocking task died (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a worker tells the coordinator.
enum Report {
    Map {
        peer: PeerId,
        size: u64,
        start: u32,
        pieces: Vec<Option<PieceId>>,
        complete: bool,
    },
    Arrived {
        peer: PeerId,
        index: u32,
        bytes: Bytes,
    },
    Unavailable {
        peer: PeerId,
        index: u32,
    },
    /// The peer holds nothing of the blob yet (or is too busy to say).
    Absent {
        peer: PeerId,
    },
    /// The stream ended.
    Gone {
        peer: PeerId,
        why: String,
        /// The stream failed (worth another try), rather than the peer saying no.
        transient: bool,
    },
    /// The peer broke the protocol or sent bad bytes: ban it.
    Lied {
        peer: PeerId,
        why: String,
    },
}

/// What the coordinator asks of a worker.
enum Work {
    Pieces(Vec<(u32, PieceId)>),
    Map { start: u32 },
}

/// What a worker's reader expects next, in the order requests went out.
enum Expect {
    Map { start: u32 },
    Piece { index: u32, id: PieceId },
}

struct Slot {
    work: mpsc::UnboundedSender<Work>,
    /// Pieces the peer said it holds.
    avail: Vec<bool>,
    complete: bool,
    /// Requested and not answered.
    outstanding: HashSet<u32>,
    last_progress: Instant,
    map_pending: bool,
    last_map: Instant,
    supplied_ids: bool,
}

/// Fetches `digest` from peers into the store, publishing progress on `tx`. `known`
/// holds the pieces already stored (a resumed partial); `expected_size` is the
/// descriptor's size when the caller knows it. Peers that deliver under `floor` bytes
/// per second over a [`PACE_WINDOW`] lose the blob: [`PeerFetchError::TooSlow`].
pub async fn fetch_from_peers(
    p2p: &Arc<P2p>,
    digest: Digest,
    expected_size: Option<u64>,
    tx: &watch::Sender<FetchState>,
    candidates: Vec<PeerId>,
    floor: u64,
) -> Result<(), PeerFetchError> {
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let mut slots: HashMap<PeerId, Slot> = HashMap::new();
    for peer in candidates.into_iter().take(MAX_PEERS) {
        slots.insert(peer, spawn_worker(p2p, peer, digest, &reports_tx));
    }
    if slots.is_empty() {
        return Err(PeerFetchError::NoPeers(digest));
    }
    // Streams that failed to open or broke, per peer: retried a few times (a busy
    // peer can drop a stream it had no time to accept).
    let mut retries: HashMap<PeerId, u32> = HashMap::new();
    let store = Arc::clone(&p2p.store);
    let mut state: Option<Assembly> = None;
    let started = Instant::now();
    let mut pace = Pace::new(floor, started);
    // Peers that held nothing when asked, to ask again (when, who), and how often each
    // was asked.
    let mut revisit: Vec<(Instant, PeerId)> = Vec::new();
    let mut absences: HashMap<PeerId, u32> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        let report = tokio::select! {
            r = reports.recv() => r,
            _ = tick.tick() => None,
        };
        // Timeouts and map refreshes, on every wake-up.
        let now = Instant::now();
        let Some(a) = state.as_mut() else {
            if let Some(report) = report {
                match report {
                    Report::Map {
                        peer,
                        size,
                        start,
                        pieces,
                        complete,
                    } => {
                        if expected_size.is_some_and(|s| s != size) {
                            lied(p2p, &mut slots, peer, "its map gives the wrong size");
                        } else {
                            let mut a =
                                Assembly::start(digest, size, tx, Arc::clone(&store)).await?;
                            a.spread_by(&p2p.local_id());
                            a.source = Some(super::elect::elected(p2p, &digest));
                            a.on_map(&mut slots, peer, start, pieces, complete);
                            state = Some(a);
                            pace = Pace::new(floor, Instant::now());
                        }
                    }
                    Report::Gone {
                        peer,
                        transient: true,
                        ..
                    } if retry(p2p, &mut retries, peer) => {
                        slots.insert(peer, spawn_worker(p2p, peer, digest, &reports_tx));
                    }
                    Report::Absent { peer } => {
                        // Asked again once a transfer runs (it may be fetching too).
                        slots.remove(&peer);
                        absences.insert(peer, 1);
                        revisit.push((now + ABSENT_RETRY, peer));
                    }
                    Report::Gone { peer, .. } | Report::Lied { peer, .. } => {
                        slots.remove(&peer);
                    }
                    _ => {}
                }
            }
            if slots.is_empty() || (state.is_none() && now - started > p2p.config.lookup_deadline) {
                return Err(PeerFetchError::NoPeers(digest));
            }
            if let Some(a) = state.as_mut() {
                a.assign_all(&mut slots);
            }
            continue;
        };
        if let Some(report) = report {
            match report {
                Report::Map {
                    peer,
                    size,
                    start,
                    pieces,
                    complete,
                } => {
                    if size != a.layout.size() && expected_size.is_some() {
                        lied(p2p, &mut slots, peer, "its map gives the wrong size");
                    } else if size != a.layout.size() {
                        // With no size known beforehand, the peer whose map came first
                        // may be the liar: this one sits the transfer out, unbanned. A
                        // lying size gives itself away by its pieces' lengths or the
                        // digest, and a fetch that fails asks the peers again.
                        tracing::warn!(%peer, %digest, size, other = a.layout.size(), "peers disagree on the blob's size; this one sits out");
                        a.release(&mut slots, peer);
                    } else {
                        a.on_map(&mut slots, peer, start, pieces, complete);
                    }
                }
                Report::Arrived { peer, index, bytes } => {
                    if let Some(slot) = slots.get_mut(&peer) {
                        slot.outstanding.remove(&index);
                        slot.last_progress = now;
                    }
                    a.in_flight.remove(&index);
                    if !a.held[index as usize] {
                        let len = bytes.len() as u64;
                        a.store(index, bytes).await?;
                        pace.arrived(now, len);
                        Stats::add(&p2p.stats.bytes_from_peers, len);
                        p2p.table.add_from(&peer, len);
                    }
                }
                Report::Unavailable { peer, index } => {
                    if let Some(slot) = slots.get_mut(&peer) {
                        slot.outstanding.remove(&index);
                        if let Some(v) = slot.avail.get_mut(index as usize) {
                            *v = false;
                        }
                        slot.complete = false;
                    }
                    a.in_flight.remove(&index);
                }
                Report::Gone {
                    peer,
                    why,
                    transient,
                } => {
                    tracing::debug!(%peer, %digest, "peer left the transfer: {why}");
                    a.release(&mut slots, peer);
                    if transient && retry(p2p, &mut retries, peer) {
                        slots.insert(peer, spawn_worker(p2p, peer, digest, &reports_tx));
                    }
                }
                Report::Lied { peer, why } => {
                    a.release(&mut slots, peer);
                    lied(p2p, &mut slots, peer, &why);
                }
                Report::Absent { peer } => {
                    a.release(&mut slots, peer);
                    let n = absences.entry(peer).or_insert(0);
                    *n += 1;
                    if *n <= MAX_ABSENT {
                        revisit.push((now + ABSENT_RETRY, peer));
                    }
                }
            }
        }
        // Peers due to be asked again, while there is room.
        revisit.retain(|(due, peer)| {
            if *due > now {
                return true;
            }
            if slots.len() < MAX_PEERS && !slots.contains_key(peer) && p2p.table.is_verified(peer) {
                slots.insert(*peer, spawn_worker(p2p, *peer, digest, &reports_tx));
            }
            false
        });
        if a.done() {
            let a = state.take().expect("`a` borrows it");
            return a.finish(p2p, &slots).await;
        }
        // Stalled peers lose their requests; incomplete maps are refreshed.
        let stalled: Vec<PeerId> = slots
            .iter()
            .filter(|(_, s)| {
                !s.outstanding.is_empty() && now - s.last_progress > p2p.config.stall_timeout
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in stalled {
            tracing::warn!(%peer, %digest, "peer stalled; its requests go elsewhere");
            a.release(&mut slots, peer);
            // The peers left get a whole stall timeout for what the staller sat on
            // (it may have held every outstanding piece, so nothing arrived meanwhile).
            if !slots.is_empty() {
                a.last_progress = now;
            }
        }
        for slot in slots.values_mut() {
            if !slot.complete && !slot.map_pending && now - slot.last_map > MAP_REFRESH {
                slot.map_pending = true;
                slot.last_map = now;
                let _ = slot.work.send(Work::Map { start: 0 });
            }
        }
        a.assign_all(&mut slots);
        if slots.is_empty() && revisit.is_empty() {
            return Err(a.stalled("every peer left"));
        }
        if now - a.last_progress > p2p.config.stall_timeout {
            return Err(a.stalled("no piece arrived in time"));
        }
        if let Some(rate) = pace.too_slow(now) {
            return Err(PeerFetchError::TooSlow {
                digest,
                got: a.held_bytes,
                size: a.layout.size(),
                rate,
                floor,
            });
        }
    }
}

/// Most times a peer's stream is opened again within one transfer.
const MAX_RETRIES: u32 = 2;

fn retry(p2p: &P2p, retries: &mut HashMap<PeerId, u32>, peer: PeerId) -> bool {
    let n = retries.entry(peer).or_insert(0);
    *n += 1;
    *n <= MAX_RETRIES && p2p.table.is_verified(&peer)
}

/// Starts the worker for `peer`; it begins by asking for the first page of the map.
fn spawn_worker(
    p2p: &Arc<P2p>,
    peer: PeerId,
    digest: Digest,
    reports: &mpsc::UnboundedSender<Report>,
) -> Slot {
    let (work_tx, work_rx) = mpsc::unbounded_channel();
    tokio::spawn(worker(
        Arc::clone(p2p),
        peer,
        digest,
        work_rx,
        reports.clone(),
    ));
    let _ = work_tx.send(Work::Map { start: 0 });
    Slot {
        work: work_tx,
        avail: Vec::new(),
        complete: false,
        outstanding: HashSet::new(),
        last_progress: Instant::now(),
        map_pending: true,
        last_map: Instant::now(),
        supplied_ids: false,
    }
}

fn lied(p2p: &P2p, slots: &mut HashMap<PeerId, Slot>, peer: PeerId, why: &str) {
    slots.remove(&peer);
    Stats::add(&p2p.stats.bad_peer_pieces, 1);
    p2p.ban(peer, why.to_owned());
}

/// The blob being put together.
struct Assembly {
    digest: Digest,
    layout: PieceLayout,
    store: Arc<dyn Store>,
    tx: watch::Sender<FetchState>,
    ids: Vec<Option<PieceId>>,
    held: Vec<bool>,
    in_flight: HashMap<u32, u8>,
    hasher: Option<DigestHasher>,
    /// The sha256 covers pieces `..hashed`.
    hashed: u64,
    last_progress: Instant,
    held_bytes: u64,
    /// A rank per piece, this node's own: among equally rare pieces a swarm's members
    /// ask for different ones first, so that they have something to trade.
    spread: Vec<u32>,
    /// The node the fleet elected for the blob ([`super::elect`]). Every member of a
    /// cold fleet asks it, and its uplink is one of many: while two or more other
    /// peers share the transfer, it is asked only for pieces none of them holds with room in its
    /// window (a stalled peer's window stays full), and at most
    /// [`SOURCE_WINDOW`] at a time. A deep queue there would hold requests for pieces
    /// that reach other members meanwhile, and it would send each piece to nearly
    /// every member instead of once.
    source: Option<PeerId>,
}

impl Assembly {
    async fn start(
        digest: Digest,
        size: u64,
        tx: &watch::Sender<FetchState>,
        store: Arc<dyn Store>,
    ) -> Result<Assembly, PeerFetchError> {
        let layout = PieceLayout::new(size);
        let count = layout.count() as usize;
        // Pieces a previous fetch stored are kept (a partial of the same size).
        let d = digest;
        let s2 = Arc::clone(&store);
        let partial = tokio::task::spawn_blocking(move || s2.partial(&d))
            .await
            .map_err(|e| PeerFetchError::Internal(e.to_string()))??;
        let mut ids = vec![None; count];
        let mut held = vec![false; count];
        if let Some(p) = partial {
            for i in 0..count {
                if let Some(id) = p.piece_at(i as u64) {
                    ids[i] = Some(id);
                    held[i] = true;
                }
            }
        }
        let held_bytes = (0..count)
            .filter(|i| held[*i])
            .map(|i| {
                let r = layout.range(i as u64);
                r.end - r.start
            })
            .sum();
        let tx = tx.clone();
        tx.send_modify(|s| {
            s.size = Some(size);
            s.pieces = ids.clone();
        });
        let mut a = Assembly {
            digest,
            layout,
            store,
            tx,
            ids,
            held,
            in_flight: HashMap::new(),
            hasher: Some(DigestHasher::new()),
            hashed: 0,
            last_progress: Instant::now(),
            held_bytes,
            spread: Vec::new(),
            source: None,
        };
        a.advance_hash(None).await?;
        Ok(a)
    }

    /// Ranks the pieces in an order of `local`'s own (see `spread`).
    fn spread_by(&mut self, local: &PeerId) {
        let mut seed = blake3::Hasher::new();
        seed.update(&local.to_bytes());
        seed.update(self.digest.as_bytes());
        let key = *seed.finalize().as_bytes();
        self.spread = (0..self.ids.len() as u32)
            .map(|i| {
                let h = blake3::keyed_hash(&key, &i.to_le_bytes());
                u32::from_le_bytes(h.as_bytes()[..4].try_into().expect("4 bytes"))
            })
            .collect();
    }

    fn on_map(
        &mut self,
        slots: &mut HashMap<PeerId, Slot>,
        peer: PeerId,
        start: u32,
        pieces: Vec<Option<PieceId>>,
        complete: bool,
    ) {
        let count = self.ids.len();
        let Some(slot) = slots.get_mut(&peer) else {
            return;
        };
        slot.avail.resize(count, false);
        let mut conflict = false;
        for (offset, id) in pieces.iter().enumerate() {
            let i = start as usize + offset;
            let Some(id) = id else { continue };
            match self.ids[i] {
                None => {
                    self.ids[i] = Some(*id);
                    slot.supplied_ids = true;
                    slot.avail[i] = true;
                }
                Some(known) if known == *id => slot.avail[i] = true,
                // Another peer (or the store) named another id for this piece: one of
                // them lies. Do not ask this peer for it; the sha256 will tell.
                Some(_) => conflict = true,
            }
        }
        if conflict {
            tracing::warn!(%peer, digest = %self.digest, "peer's map disagrees with another's");
        }
        let end = start as usize + pieces.len();
        if end < count {
            // Another page follows.
            let _ = slot.work.send(Work::Map { start: end as u32 });
        } else {
            slot.map_pending = false;
            slot.complete = complete && !conflict;
        }
    }

    /// Gives every peer work up to its window.
    fn assign_all(&mut self, slots: &mut HashMap<PeerId, Slot>) {
        let peers: Vec<PeerId> = slots.keys().copied().collect();
        for peer in peers {
            self.assign(slots, peer);
        }
    }

    fn assign(&mut self, slots: &mut HashMap<PeerId, Slot>, peer: PeerId) {
        // With one other peer, the two share the work as equals.
        let sparing = slots.len() > 2 && self.source == Some(peer);
        let window = if sparing { SOURCE_WINDOW } else { WINDOW };
        let Some(room) = slots
            .get(&peer)
            .map(|s| window.saturating_sub(s.outstanding.len()))
        else {
            return;
        };
        if room == 0 {
            return;
        }
        let count = self.ids.len();
        // How many peers hold each piece: the rarest go first. Among equals, the lowest
        // index when every peer is complete (streaming in order), and this node's own
        // order when some are still fetching too (a swarm, whose members should not all
        // ask the one complete peer for the same pieces).
        let swarm = slots.values().any(|s| !s.complete);
        let tiebreak = |i: usize| {
            if swarm {
                self.spread.get(i).copied().unwrap_or(0)
            } else {
                i as u32
            }
        };
        let mut candidates: Vec<(usize, u32, usize)> = Vec::new();
        let mut endgame: Vec<(usize, usize)> = Vec::new();
        let slot = &slots[&peer];
        for i in 0..count {
            if self.held[i] || self.ids[i].is_none() || !slot.avail.get(i).copied().unwrap_or(false)
            {
                continue;
            }
            if slot.outstanding.contains(&(i as u32)) {
                continue;
            }
            let rarity = slots
                .values()
                .filter(|s| s.avail.get(i).copied().unwrap_or(false))
                .count();
            // Spared: another holder can take the piece now. One whose window is full
            // (stalled, or slow) cannot, and then the elected node is asked after all.
            if sparing
                && slots.iter().any(|(p, s)| {
                    *p != peer
                        && s.avail.get(i).copied().unwrap_or(false)
                        && s.outstanding.len() < WINDOW
                })
            {
                continue;
            }
            match self.in_flight.get(&(i as u32)) {
                None => candidates.push((rarity, tiebreak(i), i)),
                Some(&copies) if copies < 2 => endgame.push((rarity, i)),
                Some(_) => {}
            }
        }
        candidates.sort();
        let mut picked: Vec<usize> = candidates
            .into_iter()
            .take(room)
            .map(|(_, _, i)| i)
            .collect();
        // End-game: nothing left that is not already requested, so ask a second peer
        // for what is outstanding; the first answer wins.
        if picked.is_empty() && self.in_flight.len() >= self.missing() {
            endgame.sort();
            picked = endgame
                .into_iter()
                .take(room.min(4))
                .map(|(_, i)| i)
                .collect();
        }
        if picked.is_empty() {
            return;
        }
        let slot = slots.get_mut(&peer).expect("checked above");
        let mut batch = Vec::with_capacity(picked.len());
        for i in picked {
            // `ids[i]` is Some: filtered above.
            let id = self.ids[i].expect("filtered");
            batch.push((i as u32, id));
            slot.outstanding.insert(i as u32);
            *self.in_flight.entry(i as u32).or_insert(0) += 1;
        }
        if slot.outstanding.len() == batch.len() {
            slot.last_progress = Instant::now();
        }
        for chunk in batch.chunks(MAX_REQUEST_PIECES) {
            let _ = slot.work.send(Work::Pieces(chunk.to_vec()));
        }
    }

    fn missing(&self) -> usize {
        self.held.iter().filter(|h| !**h).count()
    }

    /// Takes `peer` out of the transfer and frees what it was asked for.
    fn release(&mut self, slots: &mut HashMap<PeerId, Slot>, peer: PeerId) {
        if let Some(slot) = slots.remove(&peer) {
            for i in slot.outstanding {
                if let Some(c) = self.in_flight.get_mut(&i) {
                    *c = c.saturating_sub(1);
                    if *c == 0 {
                        self.in_flight.remove(&i);
                    }
                }
            }
        }
    }

    async fn store(&mut self, index: u32, bytes: Bytes) -> Result<(), PeerFetchError> {
        let (store, digest, size) = (Arc::clone(&self.store), self.digest, self.layout.size());
        let kept = bytes.clone();
        let id = tokio::task::spawn_blocking(move || {
            store.put_piece(&digest, size, u64::from(index), &kept)
        })
        .await
        .map_err(|e| PeerFetchError::Internal(e.to_string()))??;
        self.ids[index as usize] = Some(id);
        self.held[index as usize] = true;
        self.held_bytes += bytes.len() as u64;
        self.last_progress = Instant::now();
        self.tx.send_modify(|s| s.pieces[index as usize] = Some(id));
        self.advance_hash(Some((index, bytes))).await
    }

    /// Feeds the sha256 every held piece that now follows its prefix; `fresh` is a piece
    /// just stored, whose bytes are at hand.
    async fn advance_hash(&mut self, fresh: Option<(u32, Bytes)>) -> Result<(), PeerFetchError> {
        let count = self.ids.len() as u64;
        let mut next = Vec::new();
        let mut i = self.hashed;
        while i < count && self.held[i as usize] {
            next.push((i, self.ids[i as usize].expect("held pieces have ids")));
            i += 1;
        }
        if next.is_empty() {
            return Ok(());
        }
        let mut hasher = self
            .hasher
            .take()
            .expect("the hasher is put back after each step");
        let store = Arc::clone(&self.store);
        let hasher =
            tokio::task::spawn_blocking(move || -> Result<DigestHasher, PeerFetchError> {
                for (index, id) in next {
                    match &fresh {
                        Some((f, bytes)) if u64::from(*f) == index => hasher.update(bytes),
                        _ => {
                            let bytes = read_piece(store.as_ref(), &id).map_err(|e| {
                                PeerFetchError::Internal(format!("re-reading piece {index}: {e}"))
                            })?;
                            hasher.update(&bytes);
                        }
                    }
                }
                Ok(hasher)
            })
            .await
            .map_err(|e| PeerFetchError::Internal(e.to_string()))??;
        self.hasher = Some(hasher);
        self.hashed = i;
        Ok(())
    }

    fn done(&self) -> bool {
        self.hashed == self.ids.len() as u64
    }

    fn stalled(&self, why: &str) -> PeerFetchError {
        PeerFetchError::Stalled {
            digest: self.digest,
            got: self.held_bytes,
            size: self.layout.size(),
            why: why.to_owned(),
        }
    }

    async fn finish(
        mut self,
        p2p: &P2p,
        slots: &HashMap<PeerId, Slot>,
    ) -> Result<(), PeerFetchError> {
        let actual = self.hasher.take().expect("present until finish").finish();
        let (store, digest, size) = (Arc::clone(&self.store), self.digest, self.layout.size());
        if actual != digest {
            Stats::add(&p2p.stats.digest_mismatches, 1);
            for (peer, slot) in slots {
                if slot.supplied_ids {
                    p2p.ban(*peer, format!("its pieces of {digest} hash to {actual}"));
                }
            }
            tokio::task::spawn_blocking(move || store.discard_partial(&digest))
                .await
                .map_err(|e| PeerFetchError::Internal(e.to_string()))??;
            return Err(PeerFetchError::DigestMismatch {
                expected: digest,
                actual,
            });
        }
        tokio::task::spawn_blocking(move || store.complete(&digest, size, None))
            .await
            .map_err(|e| PeerFetchError::Internal(e.to_string()))??;
        Stats::add(&p2p.stats.peer_fetches, 1);
        Ok(())
    }
}

/// One peer's side of a transfer: a stream, requests out, answers checked and reported.
async fn worker(
    p2p: Arc<P2p>,
    peer: PeerId,
    digest: Digest,
    mut work: mpsc::UnboundedReceiver<Work>,
    reports: mpsc::UnboundedSender<Report>,
) {
    let stream = match p2p.open_wire(peer).await {
        Ok(s) => s,
        Err(e) => {
            let _ = reports.send(Report::Gone {
                peer,
                why: e.to_string(),
                transient: true,
            });
            return;
        }
    };
    let (read, write) = stream.split();
    let (expect_tx, mut expect_rx) = mpsc::unbounded_channel::<Expect>();
    let writer = async move {
        let mut writer = FrameWriter::new(write);
        while let Some(w) = work.recv().await {
            let message = match w {
                Work::Map { start } => {
                    let _ = expect_tx.send(Expect::Map { start });
                    Message::BlobMapRequest { digest, start }
                }
                Work::Pieces(batch) => {
                    let indices = batch.iter().map(|(i, _)| *i).collect();
                    for (index, id) in batch {
                        let _ = expect_tx.send(Expect::Piece { index, id });
                    }
                    Message::PieceRequest { digest, indices }
                }
            };
            writer.send(&message).await?;
        }
        // The coordinator is done with this peer.
        let _ = writer.send(&Message::Bye).await;
        writer.close().await
    };
    let reader_reports = reports.clone();
    let reader = async move {
        let mut reader = FrameReader::new(read);
        let mut layout: Option<PieceLayout> = None;
        loop {
            let Some(message) = reader.recv().await? else {
                return Ok::<_, StreamError>(Some("the peer closed the stream".to_owned()));
            };
            // Every request is queued here before it is sent, so an answer with
            // nothing queued was never asked for.
            let Ok(expected) = expect_rx.try_recv() else {
                let _ = reader_reports.send(Report::Lied {
                    peer,
                    why: format!("sent {} unasked", message.kind().name()),
                });
                return Ok(None);
            };
            let report = match (expected, message) {
                (
                    Expect::Map { start },
                    Message::BlobMap {
                        digest: d,
                        size,
                        start: s,
                        pieces,
                        complete,
                    },
                ) if d == digest && s == start => {
                    layout = Some(PieceLayout::new(size));
                    Report::Map {
                        peer,
                        size,
                        start,
                        pieces,
                        complete,
                    }
                }
                (
                    Expect::Map { .. },
                    Message::PieceUnavailable {
                        digest: d,
                        reason: Unavailable::UnknownBlob | Unavailable::Busy,
                        ..
                    },
                ) if d == digest => Report::Absent { peer },
                (
                    Expect::Piece { index, id },
                    Message::Piece {
                        digest: d,
                        index: i,
                        bytes,
                    },
                ) if d == digest && i == index => {
                    let want = layout.map(|l| {
                        let r = l.range(u64::from(index));
                        r.end - r.start
                    });
                    if want != Some(bytes.len() as u64) {
                        Report::Lied {
                            peer,
                            why: format!("piece {index} of {digest} has the wrong length"),
                        }
                    } else if !id.matches(&bytes) {
                        Report::Lied {
                            peer,
                            why: format!("piece {index} of {digest} does not match its BLAKE3 id"),
                        }
                    } else {
                        Report::Arrived { peer, index, bytes }
                    }
                }
                (
                    Expect::Piece { index, .. },
                    Message::PieceUnavailable {
                        digest: d,
                        index: i,
                        ..
                    },
                ) if d == digest && i == index => Report::Unavailable { peer, index },
                (_, other) => Report::Lied {
                    peer,
                    why: format!("answered out of turn with {}", other.kind().name()),
                },
            };
            let end = matches!(report, Report::Lied { .. } | Report::Gone { .. });
            if reader_reports.send(report).is_err() || end {
                return Ok(None);
            }
        }
    };
    let outcome = tokio::select! {
        r = writer => r.err().map(|e| e.to_string()),
        r = reader => match r {
            Ok(why) => why,
            Err(StreamError::Wire(e)) => {
                let _ = reports.send(Report::Lied { peer, why: format!("sent a bad frame: {e}") });
                None
            }
            Err(e) => Some(e.to_string()),
        },
    };
    if let Some(why) = outcome {
        let _ = reports.send(Report::Gone {
            peer,
            why,
            transient: true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn pace_is_judged_only_after_a_whole_window() {
        let t0 = Instant::now();
        let mut pace = Pace::new(10 * MIB, t0);
        assert_eq!(pace.too_slow(t0 + Duration::from_secs(1)), None);
        assert_eq!(pace.too_slow(t0 + PACE_WINDOW), Some(0));
    }

    #[test]
    fn pace_counts_only_the_last_window() {
        let t0 = Instant::now();
        let mut pace = Pace::new(2 * MIB, t0);
        // 40 MiB early on, then a trickle: the early burst ages out.
        pace.arrived(t0 + Duration::from_millis(500), 40 * MIB);
        let later = t0 + PACE_WINDOW;
        assert_eq!(pace.too_slow(later), None);
        for i in 0..4 {
            pace.arrived(later + Duration::from_secs(i), MIB);
        }
        let rate = pace
            .too_slow(later + Duration::from_secs(4))
            .expect("too slow");
        assert_eq!(rate, MIB);
    }

    #[test]
    fn a_zero_floor_never_judges() {
        let t0 = Instant::now();
        let mut pace = Pace::new(0, t0);
        assert_eq!(pace.too_slow(t0 + Duration::from_secs(3600)), None);
    }
}
