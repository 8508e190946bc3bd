//! The `[p2p]` section and its flags, turned into a validated [`P2pConfig`]. Called by
//! [`crate::config::NodeConfig::load`], which stays the one place raw input is read.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde::Deserialize;
use shoal_protocol::wire::{FleetKey, MAX_GROUPS, is_node_name};

/// The `[p2p]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct P2pSection {
    listen: Option<Vec<String>>,
    bootstrap: Option<Vec<String>>,
    fleet_key_file: Option<PathBuf>,
    mdns: Option<bool>,
    packs: Option<bool>,
    lookup_deadline_ms: Option<u64>,
    stall_timeout_secs: Option<u64>,
    ban_secs: Option<u64>,
    min_peer_rate: Option<String>,
    slow_peer_fraction: Option<f64>,
    groups: Option<Vec<String>>,
}

/// The flags of `shoal node` that concern peers.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct P2pFlags {
    /// Where the peer-to-peer QUIC endpoint listens: a UDP HOST:PORT or a multiaddr.
    /// Repeatable [default: 0.0.0.0:7070 once a fleet key is set].
    #[arg(long = "p2p-listen", value_name = "ADDR")]
    pub p2p_listen: Vec<String>,
    /// A peer to join at start: HOST:PORT (UDP) or a multiaddr. Repeatable.
    #[arg(long, value_name = "ADDR")]
    pub bootstrap: Vec<String>,
    /// The fleet's pre-shared key. Peer-to-peer exchange is off without one.
    #[arg(long, value_name = "FILE")]
    pub fleet_key: Option<PathBuf>,
    /// Do not look for peers with mDNS on the local network.
    #[arg(long)]
    pub no_mdns: bool,
    /// Neither ask for nor make packs (layers sent as what changed between image
    /// versions); `[p2p] packs = false` alike. Layers then always come as pieces.
    #[arg(long)]
    pub no_packs: bool,
    /// A group this node belongs to, which `shoal seed --group` selects nodes by
    /// (added to `[p2p] groups`). Repeatable.
    #[arg(long = "group", value_name = "NAME")]
    pub groups: Vec<String>,
    /// Test mode: misbehave towards peers (`lie`: corrupt every piece served;
    /// `stall`: never answer piece requests; `slow`: answer four pieces a second;
    /// `wrong-size`: claim every blob a byte longer; `bad-pack`, `busy`), to
    /// test that a fleet copes with a bad member. Never use it in production.
    #[arg(long, hide = true, value_enum)]
    pub test_peer_fault: Option<PeerFault>,
}

/// How a node in test mode misbehaves towards its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PeerFault {
    /// Every piece it serves has a byte flipped.
    Lie,
    /// It answers map requests but never piece requests.
    Stall,
    /// It answers piece requests, one piece every quarter of a second.
    Slow,
    /// It drops unanswered the first stream each peer asks it a blob map on, per blob,
    /// as a busy node drops streams it had no time to accept.
    Busy,
    /// Every pack it makes has a byte of its content flipped (the pack's digest is
    /// taken after, so only its content gives it away).
    BadPack,
    /// Its blob maps claim each blob one byte longer than it is.
    WrongSize,
}

/// How the node takes part in its fleet.
#[derive(Clone, Debug)]
pub struct P2pConfig {
    /// QUIC listen addresses [default: `/ip4/0.0.0.0/udp/7070/quic-v1`].
    pub listen: Vec<Multiaddr>,
    /// Peers dialled at start and whenever no connection to them is up.
    pub bootstrap: Vec<Multiaddr>,
    /// The fleet's key: only nodes that prove they hold it are talked to.
    pub fleet_key: FleetKey,
    /// Where the key was read from, for messages.
    pub fleet_key_file: PathBuf,
    /// Discover peers on the local network with mDNS [default: true].
    pub mdns: bool,
    /// Whether layers go as packs between image versions (asked for and made)
    /// [default: true].
    pub packs: bool,
    /// How long a blob lookup waits for peers to answer before the origin is asked
    /// [default: 1500 ms].
    pub lookup_deadline: Duration,
    /// How long a peer may sit on requested pieces before its requests go elsewhere
    /// [default: 10 s].
    pub stall_timeout: Duration,
    /// How long a peer that sent bad data, or failed the fleet handshake, is shut out
    /// [default: 10 min].
    pub ban: Duration,
    /// Peers delivering a blob slower than this (bytes per second, over
    /// [`crate::p2p::fetch::PACE_WINDOW`]) lose it to the origin [default: 0, off].
    pub min_peer_rate: u64,
    /// Peers delivering a blob slower than this fraction of the origin's recent rate
    /// lose it to the origin [default: 0.25].
    pub slow_peer_fraction: f64,
    /// Test mode (the hidden `--test-peer-fault`): how to misbehave towards peers.
    pub fault: Option<PeerFault>,
    /// The node's name, told to every verified peer (the node's `name`).
    pub name: String,
    /// The groups the node is in, told to every verified peer [default: none].
    pub groups: Vec<String>,
}

impl P2pConfig {
    /// The peer-to-peer config, or `None` when no fleet key is configured.
    /// `name` is the node's (already validated) name.
    pub(crate) fn build(
        section: P2pSection,
        flags: &P2pFlags,
        name: &str,
    ) -> anyhow::Result<Option<Self>> {
        let Some(key_file) = flags.fleet_key.clone().or(section.fleet_key_file) else {
            if !flags.bootstrap.is_empty()
                || !flags.p2p_listen.is_empty()
                || !flags.groups.is_empty()
            {
                bail!(
                    "--bootstrap, --p2p-listen and --group need a fleet key: pass --fleet-key FILE (or set [p2p] fleet_key_file); create one with: head -c 32 /dev/urandom > fleet.key"
                );
            }
            return Ok(None);
        };
        let mut groups = section.groups.unwrap_or_default();
        groups.extend(flags.groups.iter().cloned());
        groups.sort();
        groups.dedup();
        if let Some(bad) = groups.iter().find(|g| !is_node_name(g)) {
            bail!(
                "group name {bad:?} is not valid: use 1 to 64 ASCII letters, digits, '.', '_' and '-', starting with a letter or digit"
            );
        }
        if groups.len() > MAX_GROUPS {
            bail!(
                "a node may be in at most {MAX_GROUPS} groups ({} given)",
                groups.len()
            );
        }
        let bytes = std::fs::read(&key_file)
            .with_context(|| format!("cannot read the fleet key {}", key_file.display()))?;
        let fleet_key = FleetKey::from_file_bytes(&bytes)
            .with_context(|| format!("fleet key {} is not usable", key_file.display()))?;
        let listen = if flags.p2p_listen.is_empty() {
            section
                .listen
                .unwrap_or_else(|| vec!["0.0.0.0:7070".to_owned()])
        } else {
            flags.p2p_listen.clone()
        };
        let mut bootstrap = section.bootstrap.unwrap_or_default();
        bootstrap.extend(flags.bootstrap.iter().cloned());
        Ok(Some(P2pConfig {
            listen: listen
                .iter()
                .map(|a| quic_addr(a).with_context(|| format!("p2p listen address {a:?}")))
                .collect::<anyhow::Result<_>>()?,
            bootstrap: bootstrap
                .iter()
                .map(|a| quic_addr(a).with_context(|| format!("bootstrap address {a:?}")))
                .collect::<anyhow::Result<_>>()?,
            fleet_key,
            fleet_key_file: key_file,
            mdns: !flags.no_mdns && section.mdns.unwrap_or(true),
            packs: !flags.no_packs && section.packs.unwrap_or(true),
            lookup_deadline: Duration::from_millis(section.lookup_deadline_ms.unwrap_or(1500)),
            stall_timeout: Duration::from_secs(section.stall_timeout_secs.unwrap_or(10)),
            ban: Duration::from_secs(section.ban_secs.unwrap_or(600)),
            min_peer_rate: match &section.min_peer_rate {
                Some(v) => crate::config::parse_size(v)
                    .with_context(|| format!("[p2p] min_peer_rate {v:?}"))?,
                None => 0,
            },
            slow_peer_fraction: match section.slow_peer_fraction {
                Some(f) if (0.0..=1.0).contains(&f) => f,
                Some(f) => bail!("[p2p] slow_peer_fraction {f} is not between 0 and 1"),
                None => 0.25,
            },
            fault: flags.test_peer_fault,
            name: name.to_owned(),
            groups,
        }))
    }
}

/// A QUIC multiaddr from `HOST:PORT` (a UDP port; a name is resolved now) or from a
/// multiaddr as written.
pub fn quic_addr(text: &str) -> anyhow::Result<Multiaddr> {
    if text.starts_with('/') {
        let addr: Multiaddr = text.parse().context("not a valid multiaddr")?;
        if !addr.iter().any(|p| matches!(p, Protocol::QuicV1)) {
            bail!("shoal speaks QUIC only: the multiaddr needs /udp/PORT/quic-v1");
        }
        return Ok(addr);
    }
    let socket: SocketAddr = match text.parse() {
        Ok(s) => s,
        Err(_) => text
            .to_socket_addrs()
            .with_context(|| format!("{text} is neither HOST:PORT nor a multiaddr"))?
            .next()
            .with_context(|| format!("{text} resolves to no address"))?,
    };
    Ok(Multiaddr::empty()
        .with(socket.ip().into())
        .with(Protocol::Udp(socket.port()))
        .with(Protocol::QuicV1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_multiaddrs_become_quic_addresses() {
        assert_eq!(
            quic_addr("127.0.0.1:7070").unwrap().to_string(),
            "/ip4/127.0.0.1/udp/7070/quic-v1"
        );
        assert_eq!(
            quic_addr("[::1]:7]").map(|a| a.to_string()).ok(),
            None,
            "garbage is refused"
        );
        assert_eq!(
            quic_addr("/ip4/10.0.0.1/udp/9/quic-v1")
                .unwrap()
                .to_string(),
            "/ip4/10.0.0.1/udp/9/quic-v1"
        );
        let tcp = quic_addr("/ip4/10.0.0.1/tcp/9").unwrap_err();
        assert!(format!("{tcp:#}").contains("QUIC only"), "{tcp:#}");
    }

    #[test]
    fn no_key_means_no_peers_and_peer_flags_without_a_key_are_refused() {
        assert!(
            P2pConfig::build(P2pSection::default(), &P2pFlags::default(), "n")
                .unwrap()
                .is_none()
        );
        let flags = P2pFlags {
            bootstrap: vec!["127.0.0.1:1".into()],
            ..P2pFlags::default()
        };
        let e = P2pConfig::build(P2pSection::default(), &flags, "n").unwrap_err();
        assert!(e.to_string().contains("--fleet-key"), "{e}");
    }

    #[test]
    fn a_key_file_turns_peers_on_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.key");
        std::fs::write(&path, [7u8; 32]).unwrap();
        let flags = P2pFlags {
            fleet_key: Some(path),
            no_mdns: true,
            bootstrap: vec!["127.0.0.1:7071".into()],
            ..P2pFlags::default()
        };
        let c = P2pConfig::build(P2pSection::default(), &flags, "n")
            .unwrap()
            .unwrap();
        assert_eq!(c.listen[0].to_string(), "/ip4/0.0.0.0/udp/7070/quic-v1");
        assert!(c.groups.is_empty());
        assert_eq!(c.name, "n");
        assert_eq!(c.bootstrap.len(), 1);
        assert!(!c.mdns);
        assert_eq!(
            c.fleet_key.fleet_id(),
            FleetKey::from_secret(&[7; 32]).fleet_id()
        );
    }

    #[test]
    fn groups_come_from_the_file_and_the_flags_and_must_be_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.key");
        std::fs::write(&path, [7u8; 32]).unwrap();
        let flags = P2pFlags {
            fleet_key: Some(path),
            groups: vec!["web".into(), "edge".into()],
            ..P2pFlags::default()
        };
        let section: P2pSection = toml::from_str("groups = [\"web\", \"eu\"]").unwrap();
        let c = P2pConfig::build(section, &flags, "n").unwrap().unwrap();
        assert_eq!(c.groups, ["edge", "eu", "web"]);
        let bad: P2pSection = toml::from_str("groups = [\"web servers\"]").unwrap();
        let e = P2pConfig::build(bad, &flags, "n").unwrap_err();
        assert!(e.to_string().contains("\"web servers\""), "{e}");
        let keyless = P2pFlags {
            groups: vec!["web".into()],
            ..P2pFlags::default()
        };
        assert!(P2pConfig::build(P2pSection::default(), &keyless, "n").is_err());
    }
}
