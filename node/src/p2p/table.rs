//! What the node knows of its peers: who is connected, who proved fleet membership,
//! who is banned and why, what each announced it holds, how each is named, and the
//! bytes exchanged.
//!
//! One std `Mutex` over plain maps: every method is a few map operations with no
//! `.await`, called from the swarm driver and from transfer tasks.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use shoal_protocol::Digest;

/// Most digests remembered per peer from its announcements.
const MAX_HOLDS: usize = 100_000;

#[derive(Default)]
struct Inner {
    peers: HashMap<PeerId, Entry>,
    bans: HashMap<PeerId, Ban>,
}

struct Entry {
    addrs: BTreeSet<Multiaddr>,
    connections: usize,
    since: Instant,
    verified: bool,
    holds: HashSet<Digest>,
    info: Option<PeerInfo>,
    bytes_from: u64,
    bytes_to: u64,
}

/// How a peer introduced itself (`NodeInfo`): its name and groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The node's name.
    pub name: String,
    /// The groups it is in.
    pub groups: Vec<String>,
}

struct Ban {
    until: Instant,
    reason: String,
}

/// The peer table.
#[derive(Default)]
pub struct PeerTable {
    // std Mutex: map operations only, never held across an await.
    inner: Mutex<Inner>,
}

/// One peer as `shoal peers` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerView {
    /// The peer's id.
    pub peer_id: String,
    /// Addresses it is connected on.
    pub addrs: Vec<String>,
    /// Whether it proved it holds the fleet key.
    pub verified: bool,
    /// The name it gave, once it introduced itself.
    #[serde(default)]
    pub name: Option<String>,
    /// The groups it said it is in.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Seconds since its first open connection.
    pub connected_secs: u64,
    /// Blobs it announced it holds.
    pub blobs: usize,
    /// Verified piece bytes received from it.
    pub bytes_from: u64,
    /// Piece bytes sent to it.
    pub bytes_to: u64,
}

/// A ban as `shoal peers` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BanView {
    /// The banned peer.
    pub peer_id: String,
    /// Seconds until it may connect again.
    pub remaining_secs: u64,
    /// Why.
    pub reason: String,
}

impl PeerTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection to `peer` over `addr` opened.
    pub fn connected(&self, peer: PeerId, addr: Multiaddr) {
        let mut inner = self.lock();
        let entry = inner.peers.entry(peer).or_insert_with(|| Entry {
            addrs: BTreeSet::new(),
            connections: 0,
            since: Instant::now(),
            verified: false,
            holds: HashSet::new(),
            info: None,
            bytes_from: 0,
            bytes_to: 0,
        });
        entry.connections += 1;
        entry.addrs.insert(addr);
    }

    /// A connection to `peer` over `addr` closed; the peer is forgotten with its last.
    pub fn disconnected(&self, peer: &PeerId, addr: &Multiaddr) {
        let mut inner = self.lock();
        if let Some(entry) = inner.peers.get_mut(peer) {
            entry.connections = entry.connections.saturating_sub(1);
            entry.addrs.remove(addr);
            if entry.connections == 0 {
                inner.peers.remove(peer);
            }
        }
    }

    /// `peer` proved it holds the fleet key. Returns false if it is not connected (any
    /// more), in which case nothing is recorded.
    pub fn verify(&self, peer: &PeerId) -> bool {
        match self.lock().peers.get_mut(peer) {
            Some(entry) => {
                entry.verified = true;
                true
            }
            None => false,
        }
    }

    /// Whether `peer` is connected and verified.
    pub fn is_verified(&self, peer: &PeerId) -> bool {
        self.lock().peers.get(peer).is_some_and(|e| e.verified)
    }

    /// Every connected, verified peer.
    pub fn verified(&self) -> Vec<PeerId> {
        self.lock()
            .peers
            .iter()
            .filter(|(_, e)| e.verified)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Whether any connection to `peer` is open.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.lock().peers.contains_key(peer)
    }

    /// Peers connected for longer than `limit` without proving fleet membership.
    pub fn overdue(&self, limit: Duration) -> Vec<PeerId> {
        self.lock()
            .peers
            .iter()
            .filter(|(_, e)| !e.verified && e.since.elapsed() > limit)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Shuts `peer` out for `for_` (the swarm driver closes its connections).
    pub fn ban(&self, peer: PeerId, for_: Duration, reason: String) {
        let mut inner = self.lock();
        if let Some(entry) = inner.peers.get_mut(&peer) {
            entry.verified = false;
        }
        inner.bans.insert(
            peer,
            Ban {
                until: Instant::now() + for_,
                reason,
            },
        );
    }

    /// Whether `peer` is banned now.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.lock()
            .bans
            .get(peer)
            .is_some_and(|b| b.until > Instant::now())
    }

    /// Removes and returns the bans that ran out.
    pub fn expired_bans(&self) -> Vec<PeerId> {
        let now = Instant::now();
        let mut inner = self.lock();
        let done: Vec<PeerId> = inner
            .bans
            .iter()
            .filter(|(_, b)| b.until <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in &done {
            inner.bans.remove(p);
        }
        done
    }

    /// `peer` announced it holds `digests`.
    pub fn record_holds(&self, peer: &PeerId, digests: &[Digest]) {
        if let Some(entry) = self.lock().peers.get_mut(peer) {
            for d in digests {
                if entry.holds.len() >= MAX_HOLDS {
                    break;
                }
                entry.holds.insert(*d);
            }
        }
    }

    /// `peer` introduced itself. Kept only while it is connected and verified.
    pub fn record_info(&self, peer: &PeerId, info: PeerInfo) {
        if let Some(entry) = self.lock().peers.get_mut(peer)
            && entry.verified
        {
            entry.info = Some(info);
        }
    }

    /// Every connected, verified peer, with how it introduced itself (`None` until it
    /// did).
    pub fn members(&self) -> Vec<(PeerId, Option<PeerInfo>)> {
        self.lock()
            .peers
            .iter()
            .filter(|(_, e)| e.verified)
            .map(|(p, e)| (*p, e.info.clone()))
            .collect()
    }

    /// Verified peers that announced they hold `digest`.
    pub fn holders(&self, digest: &Digest) -> Vec<PeerId> {
        self.lock()
            .peers
            .iter()
            .filter(|(_, e)| e.verified && e.holds.contains(digest))
            .map(|(p, _)| *p)
            .collect()
    }

    /// Counts verified bytes received from `peer`.
    pub fn add_from(&self, peer: &PeerId, n: u64) {
        if let Some(e) = self.lock().peers.get_mut(peer) {
            e.bytes_from += n;
        }
    }

    /// Counts bytes sent to `peer`.
    pub fn add_to(&self, peer: &PeerId, n: u64) {
        if let Some(e) = self.lock().peers.get_mut(peer) {
            e.bytes_to += n;
        }
    }

    /// The table as `shoal peers` shows it: peers, then bans.
    pub fn views(&self) -> (Vec<PeerView>, Vec<BanView>) {
        let now = Instant::now();
        let inner = self.lock();
        let mut peers: Vec<PeerView> = inner
            .peers
            .iter()
            .map(|(p, e)| PeerView {
                peer_id: p.to_string(),
                addrs: e.addrs.iter().map(|a| a.to_string()).collect(),
                verified: e.verified,
                name: e.info.as_ref().map(|i| i.name.clone()),
                groups: e
                    .info
                    .as_ref()
                    .map(|i| i.groups.clone())
                    .unwrap_or_default(),
                connected_secs: e.since.elapsed().as_secs(),
                blobs: e.holds.len(),
                bytes_from: e.bytes_from,
                bytes_to: e.bytes_to,
            })
            .collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        let mut bans: Vec<BanView> = inner
            .bans
            .iter()
            .filter(|(_, b)| b.until > now)
            .map(|(p, b)| BanView {
                peer_id: p.to_string(),
                remaining_secs: (b.until - now).as_secs(),
                reason: b.reason.clone(),
            })
            .collect();
        bans.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        (peers, bans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
            .parse()
            .unwrap()
    }

    #[test]
    fn a_peer_is_trusted_only_after_it_proves_and_only_while_connected() {
        let t = PeerTable::default();
        let p = PeerId::random();
        assert!(!t.verify(&p), "not connected: nothing recorded");
        t.connected(p, addr(1));
        assert!(!t.is_verified(&p));
        assert!(t.verify(&p));
        assert_eq!(t.verified(), vec![p]);
        t.connected(p, addr(2));
        t.disconnected(&p, &addr(1));
        assert!(t.is_verified(&p), "one connection is still open");
        t.disconnected(&p, &addr(2));
        assert!(!t.is_verified(&p) && !t.is_connected(&p));
    }

    #[test]
    fn an_introduction_counts_only_from_a_verified_peer() {
        let t = PeerTable::default();
        let p = PeerId::random();
        let info = PeerInfo {
            name: "n1".into(),
            groups: vec!["web".into()],
        };
        t.connected(p, addr(1));
        t.record_info(&p, info.clone());
        assert_eq!(t.members(), vec![], "not verified: not a member");
        t.verify(&p);
        assert_eq!(t.members(), vec![(p, None)]);
        t.record_info(&p, info.clone());
        assert_eq!(t.members(), vec![(p, Some(info))]);
        assert_eq!(t.views().0[0].name.as_deref(), Some("n1"));
    }

    #[test]
    fn a_ban_unverifies_and_runs_out() {
        let t = PeerTable::default();
        let p = PeerId::random();
        t.connected(p, addr(1));
        t.verify(&p);
        t.record_holds(&p, &[Digest::of(b"x")]);
        assert_eq!(t.holders(&Digest::of(b"x")), vec![p]);
        t.ban(p, Duration::ZERO, "sent a bad piece".into());
        assert!(!t.is_verified(&p));
        assert!(t.holders(&Digest::of(b"x")).is_empty());
        assert_eq!(t.expired_bans(), vec![p]);
        assert!(!t.is_banned(&p));
    }
}
