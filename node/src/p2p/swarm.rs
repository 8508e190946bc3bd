//! The libp2p driver: one task that owns the `Swarm` (QUIC transport, Kademlia, mDNS,
//! streams, the block list) and turns its events into peer-table updates, and the
//! node's commands into swarm calls.
//!
//! Nothing but this task touches the swarm; everyone else sends a [`Command`].
//! Transfers do not pass through here: they run on streams opened with
//! `libp2p_stream::Control`, each in its own task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use libp2p::allow_block_list::{self, BlockedPeers};
use libp2p::core::ConnectedPoint;
use libp2p::kad::{self, store::MemoryStore, store::MemoryStoreConfig};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, mdns};
use shoal_protocol::Digest;
use tokio::sync::{mpsc, oneshot};

use super::P2pConfig;
use super::hello::HELLO_TIMEOUT;
use super::table::PeerTable;
use crate::stats::Stats;

/// The behaviours the swarm runs.
#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    blocked: allow_block_list::Behaviour<BlockedPeers>,
    kad: kad::Behaviour<MemoryStore>,
    mdns: Toggle<mdns::tokio::Behaviour>,
    pub(super) streams: libp2p_stream::Behaviour,
}

/// What the node asks of the driver.
#[derive(Debug)]
pub enum Command {
    /// Announce in the DHT that this node holds a blob.
    Provide(Digest),
    /// Ask the DHT who holds a blob; answered with what was found when the query ends.
    Providers(Digest, oneshot::Sender<Vec<PeerId>>),
    /// A peer proved it holds the fleet key: add it to the DHT's routing table.
    Verified(PeerId),
    /// Close every connection to a peer and refuse it until its ban (already in the
    /// table) runs out.
    Ban(PeerId),
}

/// Builds the swarm: identity `key`, QUIC on `config.listen`, Kademlia on the fleet's
/// private protocol name.
pub(super) fn build(
    key: libp2p::identity::Keypair,
    config: &P2pConfig,
) -> anyhow::Result<Swarm<Behaviour>> {
    let kad_protocol =
        StreamProtocol::try_from_owned(config.fleet_key.private_protocol_name("kad"))
            .map_err(|e| anyhow::anyhow!("bad Kademlia protocol name: {e}"))?;
    let mdns_on = config.mdns;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_quic_config(|mut quic| {
            // Room for a few whole pieces in flight per stream, and several streams per
            // connection, so one peer can fill a fast link.
            quic.max_stream_data = 16 << 20;
            quic.max_connection_data = 64 << 20;
            quic.max_idle_timeout = 30_000;
            // Path MTU discovery climbs to what the path carries: 1500-byte Ethernet
            // stays at ~1450, while loopback and jumbo-frame networks get large
            // datagrams (far fewer packets, and syscalls, per piece).
            quic.mtu_upper_bound(MAX_UDP_PAYLOAD)
        })
        .with_behaviour(|key| {
            let local = key.public().to_peer_id();
            let mut kad_config = kad::Config::new(kad_protocol);
            kad_config
                .set_query_timeout(Duration::from_secs(10))
                .set_provider_record_ttl(Some(Duration::from_secs(24 * 3600)))
                .set_provider_publication_interval(Some(Duration::from_secs(12 * 3600)));
            let store = MemoryStore::with_config(
                local,
                MemoryStoreConfig {
                    max_provided_keys: 200_000,
                    max_providers_per_key: 64,
                    ..MemoryStoreConfig::default()
                },
            );
            let mut kad = kad::Behaviour::with_config(local, store, kad_config);
            // Fleet members answer each other; strangers cannot name the protocol.
            kad.set_mode(Some(kad::Mode::Server));
            let mdns = if mdns_on {
                Some(mdns::tokio::Behaviour::new(mdns::Config::default(), local)?)
            } else {
                None
            };
            Ok(Behaviour {
                blocked: allow_block_list::Behaviour::default(),
                kad,
                mdns: Toggle::from(mdns),
                streams: libp2p_stream::Behaviour::new(),
            })
        })
        .map_err(|e| anyhow::anyhow!("cannot set up the peer-to-peer endpoint: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| anyhow::anyhow!("cannot listen for peers on {addr}: {e}"))?;
    }
    Ok(swarm)
}

/// The driver's state beside the swarm.
pub(super) struct Driver {
    pub swarm: Swarm<Behaviour>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub table: Arc<PeerTable>,
    pub stats: Arc<Stats>,
    pub bootstrap: Vec<Multiaddr>,
    /// Told each connection this node dialled, so that the handshake starts there.
    pub dialled: mpsc::UnboundedSender<PeerId>,
    /// The addresses the node listens on, for `shoal peers`.
    pub listening: Arc<std::sync::Mutex<Vec<Multiaddr>>>,
}

/// The largest UDP payload QUIC may grow its packets to, if the path carries it.
const MAX_UDP_PAYLOAD: u16 = 65_000;

/// How often bootstrap peers are dialled again while no connection to them is up.
const REDIAL: Duration = Duration::from_secs(15);
/// How long a connected peer may stay unverified before this side greets it again.
const REGREET: Duration = Duration::from_secs(3);
/// A new connection to a peer replaces one dialled the same way (by the same side), or
/// one at least this old. A peer met again while a connection to it is open has
/// restarted (it dials as before), or was redialled: the old connection is dead, but
/// QUIC notices only at its idle timeout (30 s), and streams to the peer pick one of
/// its connections at random, so half of them would wait on the dead one. The two live
/// connections of a simultaneous dial are dialled by different sides and established
/// within a handshake of each other, well under this: both stay.
const SUPERSEDED_AFTER: Duration = Duration::from_secs(2);

/// One open connection to a peer.
#[derive(Clone, Copy, Debug)]
struct Open {
    id: ConnectionId,
    since: tokio::time::Instant,
    /// Whether this node dialled it.
    dialled: bool,
}

/// Each peer's open connections.
type Connections = HashMap<PeerId, Vec<Open>>;

impl Driver {
    /// Runs until the node stops (the command channel closes).
    pub async fn run(mut self) {
        let mut providers: HashMap<kad::QueryId, (Vec<PeerId>, oneshot::Sender<Vec<PeerId>>)> =
            HashMap::new();
        // The peer each bootstrap address led to, once it answered.
        let mut bootstrap_peers: HashMap<Multiaddr, PeerId> = HashMap::new();
        let mut connections = Connections::new();
        for addr in self.bootstrap.clone() {
            self.dial(addr);
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_redial = tokio::time::Instant::now();
        let mut last_kad_bootstrap: Option<tokio::time::Instant> = None;
        let mut regreeted: HashMap<PeerId, tokio::time::Instant> = HashMap::new();
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => {
                    self.on_event(event, &mut providers, &mut bootstrap_peers, &mut connections);
                }
                command = self.commands.recv() => {
                    let Some(command) = command else { return };
                    self.on_command(command, &mut providers);
                }
                _ = tick.tick() => {
                    for peer in self.table.expired_bans() {
                        self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                    }
                    // A handshake stream can be lost (a busy peer drops streams it had
                    // no time to accept): greet a peer still unverified again, from
                    // this side, every few seconds until the time limit.
                    for peer in self.table.overdue(REGREET) {
                        let due = regreeted.get(&peer).is_none_or(|t| t.elapsed() >= REGREET);
                        if due {
                            regreeted.insert(peer, tokio::time::Instant::now());
                            let _ = self.dialled.send(peer);
                        }
                    }
                    regreeted.retain(|p, _| self.table.is_connected(p) && !self.table.is_verified(p));
                    for peer in self.table.overdue(HELLO_TIMEOUT + Duration::from_secs(2)) {
                        tracing::warn!(%peer, "closing a connection that never proved fleet membership");
                        self.table.ban(peer, Duration::from_secs(60), "did not complete the fleet handshake".into());
                        self.swarm.behaviour_mut().blocked.block_peer(peer);
                    }
                    Stats::set(&self.stats.peers, self.table.verified().len() as u64);
                    if last_redial.elapsed() >= REDIAL {
                        last_redial = tokio::time::Instant::now();
                        for addr in self.bootstrap.clone() {
                            let up = bootstrap_peers.get(&addr).is_some_and(|p| self.table.is_connected(p));
                            if !up {
                                self.dial(addr);
                            }
                        }
                    }
                    let verified = !self.table.verified().is_empty();
                    let due = last_kad_bootstrap.is_none_or(|t| t.elapsed() > Duration::from_secs(300));
                    if verified && due {
                        last_kad_bootstrap = Some(tokio::time::Instant::now());
                        // Fails only with an empty routing table, which `verified` rules out
                        // but for a race with a disconnect; the next tick tries again.
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
            }
        }
    }

    fn dial(&mut self, addr: Multiaddr) {
        if let Err(e) = self.swarm.dial(addr.clone()) {
            tracing::debug!(%addr, "cannot dial: {e}");
        }
    }

    fn on_command(
        &mut self,
        command: Command,
        providers: &mut HashMap<kad::QueryId, (Vec<PeerId>, oneshot::Sender<Vec<PeerId>>)>,
    ) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        match command {
            Command::Provide(digest) => {
                if let Err(e) = kad.start_providing(kad::RecordKey::new(digest.as_bytes())) {
                    tracing::debug!(%digest, "cannot announce a blob in the DHT: {e}");
                }
            }
            Command::Providers(digest, reply) => {
                let id = kad.get_providers(kad::RecordKey::new(digest.as_bytes()));
                providers.insert(id, (Vec::new(), reply));
            }
            Command::Verified(peer) => {
                let addrs: Vec<Multiaddr> = self
                    .table
                    .views()
                    .0
                    .into_iter()
                    .find(|v| v.peer_id == peer.to_string())
                    .map(|v| v.addrs.iter().filter_map(|a| a.parse().ok()).collect())
                    .unwrap_or_default();
                for addr in addrs {
                    kad.add_address(&peer, addr);
                }
            }
            Command::Ban(peer) => {
                kad.remove_peer(&peer);
                self.swarm.behaviour_mut().blocked.block_peer(peer);
            }
        }
    }

    fn on_event(
        &mut self,
        event: SwarmEvent<BehaviourEvent>,
        providers: &mut HashMap<kad::QueryId, (Vec<PeerId>, oneshot::Sender<Vec<PeerId>>)>,
        bootstrap_peers: &mut HashMap<Multiaddr, PeerId>,
        connections: &mut Connections,
    ) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening for peers");
                self.listening
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let remote = endpoint.get_remote_address().clone();
                tracing::debug!(peer = %peer_id, %remote, "connected");
                let new = Open {
                    id: connection_id,
                    since: tokio::time::Instant::now(),
                    dialled: endpoint.is_dialer(),
                };
                let open = connections.entry(peer_id).or_default();
                for old in open.iter() {
                    if old.dialled == new.dialled
                        || new.since.duration_since(old.since) >= SUPERSEDED_AFTER
                    {
                        tracing::info!(peer = %peer_id, "connected to the peer again: closing the older connection (the peer restarted)");
                        // Its `ConnectionClosed` updates the table and `connections`.
                        self.swarm.close_connection(old.id);
                    }
                }
                open.push(new);
                self.table.connected(peer_id, remote);
                if let ConnectedPoint::Dialer { address, .. } = &endpoint {
                    if self.bootstrap.contains(address) {
                        bootstrap_peers.insert(address.clone(), peer_id);
                    }
                    // The dialling side opens the handshake.
                    let _ = self.dialled.send(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                endpoint,
                cause,
                ..
            } => {
                if let Some(open) = connections.get_mut(&peer_id) {
                    open.retain(|o| o.id != connection_id);
                    if open.is_empty() {
                        connections.remove(&peer_id);
                    }
                }
                tracing::debug!(peer = %peer_id, "connection closed: {cause:?}");
                self.table
                    .disconnected(&peer_id, endpoint.get_remote_address());
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if self.table.is_banned(&peer) || self.table.is_connected(&peer) {
                        continue;
                    }
                    tracing::debug!(%peer, %addr, "found a peer with mDNS");
                    let opts = DialOpts::peer_id(peer)
                        .addresses(vec![addr])
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    if let Err(e) = self.swarm.dial(opts) {
                        tracing::debug!(%peer, "cannot dial: {e}");
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(result),
                step,
                ..
            })) => {
                if let Ok(kad::GetProvidersOk::FoundProviders {
                    providers: found, ..
                }) = result
                    && let Some((acc, _)) = providers.get_mut(&id)
                {
                    acc.extend(found);
                }
                if step.last
                    && let Some((acc, reply)) = providers.remove(&id)
                {
                    // The asker may have given up; nothing to do then.
                    let _ = reply.send(acc);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, "dial failed: {error}");
            }
            _ => {}
        }
    }
}
