//! Packs on the wire: asking a peer for a layer as a pack, and making packs for
//! peers. What a pack is and how it is made and applied is [`crate::packs`].
//!
//! The maker stores each pack it made as a blob of its own and answers with its
//! digest, so the asker fetches it like any blob (pieces checked by BLAKE3, the whole
//! by sha256), and a second asker naming the same held layers gets the same pack
//! without a second making. A node that received a pack and rebuilt the layer from it
//! keeps it and answers the same question with it, as its maker would: each pack is
//! made once per (layer, held layers) in a fleet, however many nodes later hold the
//! layer and are asked. One pack is made at a time per node; making is CPU-bound for
//! seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use libp2p::PeerId;
use shoal_diff::pack::Options;
use shoal_protocol::Digest;
use shoal_protocol::wire::{Message, Unavailable};
use tokio::sync::watch;

use super::P2p;
use super::config::PeerFault;
use super::io::{FrameReader, FrameWriter, StreamError};
use crate::blobs::{FetchState, Outcome, Source};
use crate::packs::{self, RebuildError, Rebuilt};
use crate::stats::Stats;
use crate::store::read_piece;

/// Longest wait for a maker's answer: making a pack of a large layer takes a while.
const MAKE_DEADLINE: Duration = Duration::from_secs(150);

/// Packs a maker remembers (beyond, it forgets them all and makes them again).
const MAX_REMEMBERED: usize = 4096;

/// Largest pack fetched: it is applied from memory.
const MAX_PACK: u64 = 1 << 30;

/// The maker's side: packs made so far, and the lock that keeps making to one at a
/// time.
#[derive(Default)]
pub struct Maker {
    /// (layer, held layers as asked) → the pack stored, made here or received and
    /// rebuilt from. Declines are not remembered: most are cheap (no recipe yet), and
    /// a layer may gain its recipe.
    // std Mutex: map operations only.
    made: Mutex<HashMap<(Digest, Vec<Digest>), PackInfo>>,
    making: tokio::sync::Mutex<()>,
    /// The thread packs are made on, started at the first pack.
    // std Mutex: a sender cloned or replaced.
    thread: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
}

impl Maker {
    /// Remembers `pack` as the answer to `key`: one this node made, or one it received
    /// and rebuilt a layer from.
    fn remember(&self, key: (Digest, Vec<Digest>), pack: PackInfo) {
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if made.len() >= MAX_REMEMBERED {
            made.clear();
        }
        made.insert(key, pack);
    }
}

/// Work for the maker's thread.
type Job = Box<dyn FnOnce() + Send>;

impl Maker {
    /// Runs `work` on the maker's own thread; `None` if it panicked.
    ///
    /// Making is the node's largest transient allocation (tens of MiB of content,
    /// zstd contexts, deltas). On tokio's blocking pool each make could land on another
    /// thread, and the C allocator keeps what a thread freed in that thread's arena:
    /// one make's memory per pool thread stayed resident (the load test's node grew
    /// 250 MiB over its bound). One thread reuses one arena's memory.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(work());
        });
        if !self.submit(job) {
            return None;
        }
        rx.await.ok()
    }

    /// Hands `job` to the maker's thread, starting it if it is not running (it exits
    /// when a make panics); false if no thread could take it.
    fn submit(&self, mut job: Job) -> bool {
        let mut thread = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..2 {
            let sender = match thread.as_ref() {
                Some(sender) => sender.clone(),
                None => {
                    let (sender, jobs) = std::sync::mpsc::channel::<Job>();
                    let spawned =
                        std::thread::Builder::new()
                            .name("pack-maker".into())
                            .spawn(move || {
                                for job in jobs {
                                    job();
                                }
                            });
                    if let Err(e) = spawned {
                        tracing::warn!("cannot start the pack-making thread: {e}");
                        return false;
                    }
                    thread.insert(sender).clone()
                }
            };
            match sender.send(job) {
                Ok(()) => return true,
                Err(std::sync::mpsc::SendError(back)) => {
                    job = back;
                    *thread = None;
                }
            }
        }
        false
    }
}

/// A pack this node made and stores.
#[derive(Clone, Copy, Debug)]
struct PackInfo {
    pack: Digest,
    size: u64,
    blob_size: u64,
}

/// Why a layer did not come as a pack.
#[derive(Debug, thiserror::Error)]
pub enum PackMiss {
    /// No peer that holds the layer would make one: nothing was spent.
    #[error("no peer offered a pack")]
    NotOffered,
    /// A pack came but did not rebuild the layer; the layer is to be fetched whole.
    #[error(transparent)]
    Failed(#[from] RebuildError),
    /// The pack itself could not be fetched.
    #[error("fetching the pack from {peer}: {why}")]
    Fetch {
        /// Who offered it.
        peer: PeerId,
        /// What went wrong.
        why: String,
    },
}

impl P2p {
    /// Gets `layer` as a pack from a peer that holds it, naming `held` (layers of the
    /// same repository this node holds), and rebuilds it into the store: the blob
    /// complete and verified, and its recipe. `held` must not be empty.
    pub async fn fetch_by_pack(
        self: &Arc<Self>,
        source: &Source,
        layer: Digest,
        held: Vec<Digest>,
    ) -> Result<Rebuilt, PackMiss> {
        let mut holders: Vec<PeerId> = self
            .table
            .holders(&layer)
            .into_iter()
            .filter(|p| !self.table.is_banned(p))
            .take(2)
            .collect();
        if holders.is_empty() {
            // Nobody holds it yet: the fleet's elected node fetches it from the origin
            // (asked now, if no member asked it yet) and makes the pack once it holds
            // the layer. Members that hold an older version wait for that instead of
            // taking the whole layer in pieces.
            let chosen = super::elect::elected(self, &layer);
            if chosen == self.local_id() {
                return Err(PackMiss::NotOffered);
            }
            let asked = tokio::time::timeout(
                self.config.lookup_deadline.max(Duration::from_secs(5)),
                super::elect::ask_to_fetch(self, chosen, source, layer),
            )
            .await;
            if !matches!(asked, Ok(Ok(true))) {
                return Err(PackMiss::NotOffered);
            }
            holders.push(chosen);
        }
        for peer in holders {
            let offer = match tokio::time::timeout(
                MAKE_DEADLINE,
                self.ask_pack(peer, layer, held.clone()),
            )
            .await
            {
                Ok(Ok(Some(offer))) => offer,
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, %layer, "asking for a pack: {e}");
                    continue;
                }
                Err(_) => {
                    tracing::debug!(%peer, %layer, "no pack within {} s", MAKE_DEADLINE.as_secs());
                    continue;
                }
            };
            if offer.size > MAX_PACK {
                continue;
            }
            let pack = self.fetch_pack(peer, offer).await?;
            Stats::add(&self.stats.bytes_delta, offer.size);
            let store = Arc::clone(&self.store);
            let rebuilt = tokio::task::spawn_blocking(move || {
                let rebuilt = packs::rebuild(store.as_ref(), &layer, offer.blob_size, &pack);
                if rebuilt.is_err()
                    && let Err(e) = store.remove_blob(&offer.pack)
                {
                    tracing::warn!(pack = %offer.pack, "cannot drop a pack that failed: {e}");
                }
                rebuilt
            })
            .await
            .map_err(|e| PackMiss::Fetch {
                peer,
                why: format!("the rebuilding task died: {e}"),
            })?;
            return match rebuilt {
                Ok(rebuilt) => {
                    // It rebuilt the layer: this node now answers the same question
                    // with the same pack, so the fleet makes it once.
                    self.packs.remember((layer, held), offer);
                    Ok(rebuilt)
                }
                Err(e) => {
                    if e.blames_peer() {
                        Stats::add(&self.stats.bad_peer_pieces, 1);
                        self.ban(peer, format!("it sent a bad pack for {layer}: {e}"));
                    }
                    Err(e.into())
                }
            };
        }
        Err(PackMiss::NotOffered)
    }

    /// Asks `peer` for a pack; `None` if it declines.
    async fn ask_pack(
        &self,
        peer: PeerId,
        layer: Digest,
        held: Vec<Digest>,
    ) -> Result<Option<PackInfo>, StreamError> {
        let stream = self.open_wire(peer).await?;
        let (read, write) = futures_util::io::AsyncReadExt::split(stream);
        let mut reader = FrameReader::new(read);
        let mut writer = FrameWriter::new(write);
        writer.send(&Message::PackRequest { layer, held }).await?;
        let answer = reader.recv().await?;
        let _ = writer.send(&Message::Bye).await;
        Ok(match answer {
            Some(Message::Pack {
                layer: l,
                pack,
                size,
                blob_size,
            }) if l == layer => Some(PackInfo {
                pack,
                size,
                blob_size,
            }),
            _ => None,
        })
    }

    /// Fetches the pack `offer` names from `peer` into the store and reads it into
    /// memory. It stays in the store, to be passed on if it rebuilds the layer.
    async fn fetch_pack(
        self: &Arc<Self>,
        peer: PeerId,
        offer: PackInfo,
    ) -> Result<Vec<u8>, PackMiss> {
        let failed = |why: String| PackMiss::Fetch { peer, why };
        let store = Arc::clone(&self.store);
        let digest = offer.pack;
        // A pack left from an interrupted try is fetched afresh.
        let _lease = self
            .blobs()
            .map_err(|e| failed(e.to_string()))?
            .leases()
            .take(digest);
        tokio::task::spawn_blocking(move || store.discard_partial(&digest))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))?;
        let (tx, _rx) = watch::channel(FetchState {
            size: None,
            pieces: Vec::new(),
            outcome: Outcome::Running,
        });
        super::fetch::fetch_from_peers(self, digest, Some(offer.size), &tx, vec![peer], 0)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let record = store
                .blob(&digest)
                .map_err(|e| e.to_string())?
                .ok_or("the fetched pack is not in the store")?;
            let mut bytes = BytesMut::with_capacity(record.size as usize);
            for id in &record.pieces {
                bytes
                    .extend_from_slice(&read_piece(store.as_ref(), id).map_err(|e| e.to_string())?);
            }
            Ok::<_, String>(bytes.to_vec())
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)
    }
}

/// How long a maker waits for a layer it is fetching to complete, and then for its
/// recipe (ingest runs once the blob is complete, if this node served an image that
/// has the layer; otherwise no recipe comes, and the pack is declined).
const WAIT_FOR_BLOB: Duration = Duration::from_secs(90);
const WAIT_FOR_RECIPE: Duration = Duration::from_secs(5);

/// How long a request waits for the maker to be free.
const MAKING_QUEUE: Duration = Duration::from_secs(30);

/// Waits until the node holds `layer` complete with its recipe, while it is on its way.
async fn layer_ready(p2p: &Arc<P2p>, layer: &Digest) -> Result<(), String> {
    let blobs = p2p.blobs().map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    while blobs.in_flight(layer) {
        if started.elapsed() > WAIT_FOR_BLOB {
            return Err("the layer is still being fetched".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let complete = std::time::Instant::now();
    loop {
        let store = Arc::clone(&p2p.store);
        let d = *layer;
        let (blob, recipe) = tokio::task::spawn_blocking(move || {
            let blob = match store.blob(&d).map_err(|e| e.to_string())? {
                // A config or anything else that is no layer gets no recipe.
                Some(record) => match record.pieces.first() {
                    Some(id) => looks_like_layer(
                        &read_piece(store.as_ref(), id).map_err(|e| e.to_string())?,
                    ),
                    None => false,
                },
                None => false,
            };
            Ok::<_, String>((blob, store.recipe(&d).map_err(|e| e.to_string())?.is_some()))
        })
        .await
        .map_err(|e| e.to_string())??;
        match (blob, recipe) {
            (true, true) => return Ok(()),
            (false, _) => return Err("no layer of that digest is held".into()),
            (true, false) if complete.elapsed() > WAIT_FOR_RECIPE => {
                return Err("the layer has no recipe".into());
            }
            (true, false) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// How a node makes packs: within a working-memory budget that keeps a node serving
/// many engines and peers under its memory bound (`tests/tests/load.rs`): deltas
/// within 128 MiB, zstd at level 9 (a level-19 context alone is over 100 MiB), and the
/// literal stream's window at 8 MiB (new content seldom repeats from further back).
pub fn maker_options() -> Options {
    let mut options = Options::default();
    options.budget.memory = 128 << 20;
    options.level = 9;
    options.recipe_level = 9;
    options.large_level = 6;
    options.literal_window_log = 23;
    options
}

/// Whether a blob starting with `head` is a layer: gzip, zstd or a tar.
fn looks_like_layer(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (head.len() >= 262 && &head[257..262] == b"ustar")
}

/// Answers a peer's `PackRequest`: the pack made earlier for the same question, or a
/// new one, stored as a blob; or `PieceUnavailable` if this node makes none.
pub(super) async fn pack_for_peer(p2p: &Arc<P2p>, layer: Digest, held: Vec<Digest>) -> Message {
    let declined = |reason| Message::PieceUnavailable {
        digest: layer,
        index: 0,
        reason,
    };
    if !p2p.config.packs {
        return declined(Unavailable::UnknownBlob);
    }
    if let Err(e) = layer_ready(p2p, &layer).await {
        tracing::debug!(%layer, "no pack: {e}");
        return declined(Unavailable::UnknownBlob);
    }
    let key = (layer, held.clone());
    // One pack is made at a time; an asker does not queue long behind others' packs
    // (it fetches pieces instead), but one asking for the pack being made waits for it.
    let Ok(_making) = tokio::time::timeout(MAKING_QUEUE, p2p.packs.making.lock()).await else {
        return declined(Unavailable::Busy);
    };
    let known = p2p
        .packs
        .made
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .copied();
    let store = Arc::clone(&p2p.store);
    let info = match known {
        Some(info) if matches!(store.blob(&info.pack), Ok(Some(_))) => Some(info),
        _ => {
            let started = std::time::Instant::now();
            let lie = p2p.config.fault == Some(PeerFault::BadPack);
            let made = p2p
                .packs
                .run(move || {
                    let made = packs::make(store.as_ref(), &layer, &held, &maker_options())?;
                    let Some(mut made) = made else {
                        return Ok(None);
                    };
                    if lie && let Some(b) = made.pack.last_mut() {
                        // Test mode: the last byte is the literal stream's, or a delta's.
                        *b ^= 0x55;
                    }
                    let digest = Digest::of(&made.pack);
                    store.put_blob(&digest, &made.pack, None)?;
                    Ok::<_, packs::make::MakeError>(Some((digest, made)))
                })
                .await;
            let info = match made {
                Some(Ok(Some((pack, made)))) => {
                    Stats::add(&p2p.stats.packs_made, 1);
                    tracing::info!(
                        %layer,
                        %pack,
                        pack_bytes = made.pack.len(),
                        blob_bytes = made.blob_size,
                        deltas = made.summary.delta_files,
                        literal_bytes = made.summary.literal_bytes,
                        reused_bytes = made.summary.reused_bytes,
                        ms = started.elapsed().as_millis() as u64,
                        "pack made for a peer"
                    );
                    Some(PackInfo {
                        pack,
                        size: made.pack.len() as u64,
                        blob_size: made.blob_size,
                    })
                }
                Some(Ok(None)) => None,
                Some(Err(e)) => {
                    tracing::warn!(%layer, "cannot make a pack: {e}");
                    return declined(Unavailable::Busy);
                }
                None => {
                    tracing::warn!(%layer, "the pack-making thread died");
                    return declined(Unavailable::Busy);
                }
            };
            if let Some(info) = info {
                p2p.packs.remember(key, info);
            }
            info
        }
    };
    match info {
        Some(info) => Message::Pack {
            layer,
            pack: info.pack,
            size: info.size,
            blob_size: info.blob_size,
        },
        None => declined(Unavailable::UnknownBlob),
    }
}
