//! The peer-to-peer engine: one QUIC endpoint per node (libp2p), a closed fleet, and
//! blobs fetched from peers piece by piece.
//!
//! # Pieces
//! - [`swarm`]: the libp2p driver (QUIC, Kademlia provider records per blob, mDNS,
//!   bootstrap peers, the block list); the only task that touches the swarm.
//! - [`hello`]: the fleet handshake, once per connection, on the public protocol
//!   `/shoal/<fleet id>/wire/1`. A peer that does not prove the fleet key within
//!   [`hello::HELLO_TIMEOUT`] is disconnected and shut out for a while.
//! - [`serve`]: answers verified peers on the members-only protocol (maps, pieces,
//!   fetch and tag requests); [`fetch`]: gets a blob from several peers at once;
//!   [`elect`]: who in the fleet fetches a blob nobody holds yet from the origin.
//! - [`table`]: who is connected, verified, banned, what they hold, how they are named.
//! - [`announce`]: tells peers what this node holds, and a new peer its name and groups.
//!
//! # The closed fleet
//! Three locks, each enough to refuse a stranger: the handshake (a keyed proof over
//! both peer ids); every request is answered only for a peer the table holds as
//! verified; and the members-only protocols (Kademlia, transfers) have names derived
//! from the fleet key ([`FleetKey::private_protocol_name`]), which a node opens only
//! to verified peers, so a stranger cannot even negotiate them.

pub mod announce;
pub mod config;
pub mod elect;
pub mod fetch;
pub mod hello;
pub mod identity;
pub mod io;
pub mod packs;
pub mod serve;
pub mod small;
pub mod swarm;
pub mod table;
pub mod tags;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use serde::{Deserialize, Serialize};

use shoal_protocol::Digest;
use shoal_protocol::manifest::Descriptor;
use shoal_protocol::wire::{FleetKey, Role};
use tokio::sync::{mpsc, oneshot, watch};

pub use config::P2pConfig;
use swarm::Command;
use table::{BanView, PeerTable, PeerView};

use crate::blobs::{Blobs, FetchState, Source};
use crate::stats::Stats;
use crate::store::Store;

/// The node's peer-to-peer side.
pub struct P2p {
    pub(crate) config: P2pConfig,
    local: PeerId,
    pub(crate) table: Arc<PeerTable>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) store: Arc<dyn Store>,
    control: libp2p_stream::Control,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    news: mpsc::UnboundedSender<announce::News>,
    wire: StreamProtocol,
    listening: Arc<Mutex<Vec<Multiaddr>>>,
    /// Set once the blob service exists (it is built with this handle).
    blobs: OnceLock<Weak<Blobs>>,
    /// The node's config, for the upstreams a peer's fetch request names.
    pub(crate) node: OnceLock<Arc<crate::config::NodeConfig>>,
    /// Carries out seed orders from peers (set once the node exists).
    seeds: OnceLock<Arc<crate::seed::Seeds>>,
    /// Packs made for peers.
    packs: packs::Maker,
    /// Blob sizes as manifests this node served give them ([`P2p::note_sizes`]).
    // std Mutex: map operations only.
    sizes: Mutex<HashMap<Digest, u64>>,
}

/// Why the peer side is not usable for a request.
#[derive(Debug, thiserror::Error)]
#[error("the node is shutting down")]
pub struct ShuttingDown;

impl From<ShuttingDown> for io::StreamError {
    fn from(_: ShuttingDown) -> Self {
        io::StreamError::Io(std::io::Error::other("the node is shutting down"))
    }
}

/// What `shoal peers --json` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeersReport {
    /// This node's peer id.
    pub peer_id: String,
    /// This node's name.
    #[serde(default)]
    pub name: String,
    /// The groups this node is in.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The fleet's public id.
    pub fleet_id: String,
    /// Where this node listens for peers.
    pub listening: Vec<String>,
    /// Connected peers.
    pub peers: Vec<PeerView>,
    /// Peers shut out now.
    pub banned: Vec<BanView>,
}

impl P2p {
    /// Starts the endpoint: loads (or creates) the node's identity in `data_dir`,
    /// listens, dials the bootstrap peers, and answers the fleet.
    pub fn start(
        config: P2pConfig,
        data_dir: &Path,
        store: Arc<dyn Store>,
        stats: Arc<Stats>,
    ) -> anyhow::Result<Arc<P2p>> {
        let key = identity::load_or_create(data_dir)?;
        let local = key.public().to_peer_id();
        let swarm = swarm::build(key, &config)?;
        let mut control = swarm.behaviour().streams.new_control();
        let hello = protocol(config.fleet_key.fleet_id().protocol_name())?;
        let wire = protocol(config.fleet_key.private_protocol_name("wire"))?;
        let hellos = control
            .accept(hello.clone())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let wires = control
            .accept(wire.clone())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (dialled, dialled_rx) = mpsc::unbounded_channel();
        let (news, news_rx) = mpsc::unbounded_channel();
        let table = Arc::new(PeerTable::default());
        let listening = Arc::new(Mutex::new(Vec::new()));
        tracing::info!(
            peer_id = %local,
            fleet = %config.fleet_key.fleet_id(),
            key_file = %config.fleet_key_file.display(),
            mdns = config.mdns,
            "peer-to-peer exchange on: only nodes holding the fleet key are answered"
        );
        let driver = swarm::Driver {
            swarm,
            commands: commands_rx,
            table: Arc::clone(&table),
            stats: Arc::clone(&stats),
            bootstrap: config.bootstrap.clone(),
            dialled,
            listening: Arc::clone(&listening),
        };
        let p2p = Arc::new(P2p {
            config,
            local,
            table,
            stats,
            store,
            control,
            commands,
            news,
            wire,
            listening,
            blobs: OnceLock::new(),
            node: OnceLock::new(),
            seeds: OnceLock::new(),
            packs: packs::Maker::default(),
            sizes: Mutex::new(HashMap::new()),
        });
        tokio::spawn(driver.run());
        tokio::spawn(Arc::clone(&p2p).greet_dialled(dialled_rx, hello));
        tokio::spawn(Arc::clone(&p2p).answer_hellos(hellos));
        tokio::spawn(Arc::clone(&p2p).answer_wires(wires));
        tokio::spawn(announce::run(Arc::clone(&p2p), news_rx));
        tokio::spawn(announce::provide_all(Arc::clone(&p2p)));
        Ok(p2p)
    }

    /// Hands the endpoint the blob service it serves from and fetches into.
    pub fn attach(&self, blobs: &Arc<Blobs>, node: Arc<crate::config::NodeConfig>) {
        let _ = self.blobs.set(Arc::downgrade(blobs));
        let _ = self.node.set(node);
    }

    /// Hands the endpoint the service that carries out seed orders.
    pub fn attach_seeds(&self, seeds: Arc<crate::seed::Seeds>) {
        let _ = self.seeds.set(seeds);
    }

    pub(crate) fn seeds(&self) -> Result<&Arc<crate::seed::Seeds>, ShuttingDown> {
        self.seeds.get().ok_or(ShuttingDown)
    }

    pub(crate) fn blobs(&self) -> Result<Arc<Blobs>, ShuttingDown> {
        self.blobs.get().and_then(Weak::upgrade).ok_or(ShuttingDown)
    }

    /// This node's peer id.
    pub fn local_id(&self) -> PeerId {
        self.local
    }

    /// What `shoal peers` shows.
    pub fn report(&self) -> PeersReport {
        let (peers, banned) = self.table.views();
        PeersReport {
            peer_id: self.local.to_string(),
            name: self.config.name.clone(),
            groups: self.config.groups.clone(),
            fleet_id: self.config.fleet_key.fleet_id().to_string(),
            listening: self
                .listening
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|a| format!("{a}/p2p/{}", self.local))
                .collect(),
            peers,
            banned,
        }
    }

    /// Shuts `peer` out for the configured ban time.
    pub(crate) fn ban(&self, peer: PeerId, why: String) {
        tracing::warn!(%peer, "banning a peer for {} s: {why}", self.config.ban.as_secs());
        self.table.ban(peer, self.config.ban, why);
        let _ = self.commands.send(Command::Ban(peer));
    }

    /// Announces that this node holds `digest`: a DHT provider record, and `Have` to
    /// every verified peer.
    pub fn provide(&self, digest: Digest) {
        let _ = self.commands.send(Command::Provide(digest));
        let _ = self.news.send(announce::News::Holds(digest));
    }

    /// Peers the DHT says hold `digest`, asked for at most `deadline`.
    async fn providers(&self, digest: Digest, deadline: Duration) -> Vec<PeerId> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Providers(digest, tx)).is_err() {
            return Vec::new();
        }
        match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(found)) => found,
            _ => Vec::new(),
        }
    }

    /// Opens a members-only stream to a verified peer.
    pub(crate) async fn open_wire(&self, peer: PeerId) -> Result<Stream, io::StreamError> {
        if !self.table.is_verified(&peer) {
            return Err(io::StreamError::Io(std::io::Error::other(
                "the peer has not proved fleet membership",
            )));
        }
        let mut control = self.control.clone();
        let open = control.open_stream(peer, self.wire.clone());
        match tokio::time::timeout(Duration::from_secs(5), open).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(io::StreamError::Io(std::io::Error::other(e.to_string()))),
            Err(_) => Err(io::StreamError::Io(std::io::Error::other(
                "the peer did not accept a stream within 5 s",
            ))),
        }
    }

    /// Fetches `digest` from the fleet into the store (progress on `tx`): from peers
    /// that hold it, or from the node the fleet elects to fetch it from the origin once.
    /// An error means the caller should fetch from the origin itself; what peers
    /// delivered stays stored for it to resume.
    pub async fn fetch(
        self: &Arc<Self>,
        source: &Source,
        digest: Digest,
        tx: &watch::Sender<FetchState>,
        origin_rate: Option<u64>,
    ) -> Result<(), fetch::PeerFetchError> {
        self.fetch_with_floor(source, digest, tx, self.pace_floor(origin_rate))
            .await
    }

    /// [`P2p::fetch`] with no pace under which peers lose the blob: for when the
    /// origin, the one other source, is down. Stalled peers still do.
    pub async fn fetch_at_any_pace(
        self: &Arc<Self>,
        source: &Source,
        digest: Digest,
        tx: &watch::Sender<FetchState>,
    ) -> Result<(), fetch::PeerFetchError> {
        self.fetch_with_floor(source, digest, tx, 0).await
    }

    /// Remembers the sizes `descriptors` give their blobs: a manifest this node
    /// verified and served says how long each blob is, and a peer's map that says
    /// otherwise lies (the size reaches the engine as the response's length, before
    /// any byte can be checked). Most [`MAX_NOTED_SIZES`] at once.
    pub fn note_sizes<'a>(&self, descriptors: impl IntoIterator<Item = &'a Descriptor>) {
        let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        for d in descriptors {
            if sizes.len() >= MAX_NOTED_SIZES {
                sizes.clear();
            }
            sizes.insert(d.digest, d.size);
        }
    }

    /// The size a served manifest gave blob `digest`, if any.
    pub(crate) fn noted_size(&self, digest: &Digest) -> Option<u64> {
        self.sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .copied()
    }

    async fn fetch_with_floor(
        self: &Arc<Self>,
        source: &Source,
        digest: Digest,
        tx: &watch::Sender<FetchState>,
        floor: u64,
    ) -> Result<(), fetch::PeerFetchError> {
        let mut candidates = self.candidates(&digest);
        if candidates.len() < 2 {
            for peer in self
                .providers(digest, self.config.lookup_deadline / 2)
                .await
            {
                if peer != self.local && !candidates.contains(&peer) && !self.table.is_banned(&peer)
                {
                    candidates.push(peer);
                }
            }
        }
        candidates.retain(|p| self.table.is_verified(p));
        if !candidates.is_empty() {
            let expected = self.noted_size(&digest);
            match fetch::fetch_from_peers(self, digest, expected, tx, candidates, floor).await {
                Err(fetch::PeerFetchError::NoPeers(_)) => {}
                other => return other,
            }
        }
        // No pace here: the elected node streams what the origin gives it, so the
        // origin would be no faster, and a fleet that lost patience with it would
        // stampede the origin, the one thing the election is for.
        elect::fetch_through_elected(self, source, digest, tx).await
    }

    /// The pace, in bytes per second, under which peers lose a blob to the origin:
    /// `min_peer_rate`, or `slow_peer_fraction` of the origin's recent rate if higher.
    fn pace_floor(&self, origin_rate: Option<u64>) -> u64 {
        let relative =
            origin_rate.map_or(0, |r| (r as f64 * self.config.slow_peer_fraction) as u64);
        self.config.min_peer_rate.max(relative)
    }

    /// Verified peers other than `chosen` to swarm with for `digest` while `chosen`
    /// fetches it from the origin, in an order of this node's own (so that each node
    /// starts with different partners).
    fn swarm_partners(&self, digest: &Digest, chosen: PeerId) -> Vec<PeerId> {
        let mut rest: Vec<PeerId> = self
            .table
            .verified()
            .into_iter()
            .filter(|p| *p != chosen && *p != self.local)
            .collect();
        let mut salt = digest.as_bytes().to_vec();
        salt.extend_from_slice(&self.local.to_bytes());
        rest.sort_by_key(|p| {
            let mut h = blake3::Hasher::new();
            h.update(&salt);
            h.update(&p.to_bytes());
            *h.finalize().as_bytes()
        });
        rest
    }

    /// Verified peers to ask for `digest`: those that announced it first, then the
    /// rest in the blob's rendezvous order (so askers spread over the fleet alike).
    fn candidates(&self, digest: &Digest) -> Vec<PeerId> {
        let holders = self.table.holders(digest);
        let mut rest: Vec<PeerId> = self
            .table
            .verified()
            .into_iter()
            .filter(|p| !holders.contains(p))
            .collect();
        rest.sort_by_key(|p| std::cmp::Reverse(elect::score(p, digest)));
        holders.into_iter().chain(rest).collect()
    }

    async fn greet_dialled(
        self: Arc<Self>,
        mut dialled: mpsc::UnboundedReceiver<PeerId>,
        hello: StreamProtocol,
    ) {
        while let Some(peer) = dialled.recv().await {
            if self.table.is_verified(&peer) {
                continue;
            }
            let p2p = Arc::clone(&self);
            let hello = hello.clone();
            tokio::spawn(async move {
                let stream = p2p.control.clone().open_stream(peer, hello).await;
                match stream {
                    Ok(stream) => p2p.greeted(peer, Role::Dialer, stream).await,
                    Err(e) => {
                        // A node of another fleet does not know our fleet's hello.
                        p2p.refuse(
                            peer,
                            format!("it does not speak this fleet's handshake: {e}"),
                        );
                    }
                }
            });
        }
    }

    async fn answer_hellos(self: Arc<Self>, mut hellos: libp2p_stream::IncomingStreams) {
        while let Some((peer, stream)) = hellos.next().await {
            if self.table.is_banned(&peer) {
                continue;
            }
            tokio::spawn(Arc::clone(&self).greeted(peer, Role::Listener, stream));
        }
    }

    async fn greeted(self: Arc<Self>, peer: PeerId, role: Role, stream: Stream) {
        let key: &FleetKey = &self.config.fleet_key;
        let result = hello::run(stream, role, key, &self.local.to_bytes(), &peer.to_bytes()).await;
        match result {
            Ok(_) => {
                if self.table.verify(&peer) {
                    tracing::info!(%peer, "peer verified: it holds the fleet key");
                    let _ = self.commands.send(Command::Verified(peer));
                    let _ = self.news.send(announce::News::Joined(peer));
                    Stats::set(&self.stats.peers, self.table.verified().len() as u64);
                }
            }
            Err(e) if e.is_stranger() => self.refuse(peer, e.to_string()),
            Err(e) => tracing::debug!(%peer, "fleet handshake did not finish: {e}"),
        }
    }

    fn refuse(&self, peer: PeerId, why: String) {
        tracing::warn!(%peer, "refusing a peer outside the fleet: {why}");
        self.table.ban(peer, self.config.ban, why);
        let _ = self.commands.send(Command::Ban(peer));
    }

    async fn answer_wires(self: Arc<Self>, mut wires: libp2p_stream::IncomingStreams) {
        while let Some((peer, stream)) = wires.next().await {
            if self.table.is_verified(&peer) {
                tokio::spawn(serve::serve_stream(Arc::clone(&self), peer, stream));
            } else if self.table.is_connected(&peer) {
                tokio::spawn(Arc::clone(&self).serve_once_verified(peer, stream));
            } else {
                tracing::warn!(%peer, "dropping a transfer stream from an unverified peer");
            }
        }
    }

    /// A stream on the members-only protocol from a connected peer this node has not
    /// verified yet: the side of a handshake that verifies first may open one before
    /// its own proof reaches this node (only a key holder can name the protocol). It is
    /// served once the handshake here completes, or dropped unread (a stranger learns
    /// nothing, not even an error) if it does not within [`VERIFY_GRACE`].
    async fn serve_once_verified(self: Arc<Self>, peer: PeerId, stream: Stream) {
        let until = tokio::time::Instant::now() + VERIFY_GRACE;
        while !self.table.is_verified(&peer) {
            if tokio::time::Instant::now() >= until || !self.table.is_connected(&peer) {
                tracing::warn!(%peer, "dropping a transfer stream from an unverified peer");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        serve::serve_stream(self, peer, stream).await;
    }
}

/// How long a members-only stream from a peer whose handshake is still finishing waits
/// for it.
const VERIFY_GRACE: Duration = Duration::from_secs(2);

/// Most blob sizes [`P2p::note_sizes`] keeps (beyond, it forgets them all).
const MAX_NOTED_SIZES: usize = 1 << 16;

fn protocol(name: String) -> anyhow::Result<StreamProtocol> {
    StreamProtocol::try_from_owned(name).map_err(|e| anyhow::anyhow!("bad protocol name: {e}"))
}
