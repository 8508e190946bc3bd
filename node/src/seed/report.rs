//! What the issuer tells the CLI (`POST /_shoal/seed` answers with these as job lines,
//! [`crate::jobs`]): a [`SeedProgress`] snapshot of every target twice a second, then
//! one [`SeedReport`]. These are the admin API's wire types; fields are only added.

use serde::{Deserialize, Serialize};
use shoal_protocol::wire::SeedState;

use super::Status;

/// Where a seed stands on one node, as the issuer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Ordered; the node has not started yet.
    Queued,
    /// Fetching the image.
    Fetching,
    /// The node holds the image, verified and pinned.
    Complete,
    /// It failed, or the node could not be ordered or went away; `detail` says which.
    Failed,
    /// It had not ended when the issuer's deadline passed (it may still end).
    TimedOut,
}

impl NodeState {
    /// Whether the issuer has stopped waiting for this node.
    pub fn is_over(self) -> bool {
        matches!(
            self,
            NodeState::Complete | NodeState::Failed | NodeState::TimedOut
        )
    }

    /// As the CLI prints it.
    pub fn label(self) -> &'static str {
        match self {
            NodeState::Queued => "queued",
            NodeState::Fetching => "fetching",
            NodeState::Complete => "complete",
            NodeState::Failed => "failed",
            NodeState::TimedOut => "timed out",
        }
    }
}

impl From<SeedState> for NodeState {
    fn from(s: SeedState) -> Self {
        match s {
            SeedState::Queued => NodeState::Queued,
            SeedState::Fetching => NodeState::Fetching,
            SeedState::Complete => NodeState::Complete,
            SeedState::Failed => NodeState::Failed,
        }
    }
}

/// One target of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSeed {
    /// The node's name (its peer id if it gave none; for a name the operator listed
    /// that matched no node, that name).
    pub name: String,
    /// Its peer id (empty for a listed name that matched no node, or for an issuer
    /// without a fleet key).
    pub peer_id: String,
    /// Whether it is the issuing node.
    pub local: bool,
    /// Where it stands.
    pub state: NodeState,
    /// Bytes of the image it holds.
    pub bytes_done: u64,
    /// Bytes of the image in all (0 until its manifests are fetched).
    pub bytes_total: u64,
    /// Bytes it received from the origin while seeding (node-wide: pulls running at
    /// the same time on it count too).
    pub from_origin: u64,
    /// Bytes it received from peers while seeding (likewise).
    pub from_peers: u64,
    /// Milliseconds from the order to its end (or to now).
    pub millis: u64,
    /// Why it failed or timed out, or empty.
    pub detail: String,
}

impl NodeSeed {
    /// A target that has not reported yet.
    pub fn ordered(name: String, peer_id: String, local: bool) -> Self {
        NodeSeed {
            name,
            peer_id,
            local,
            state: NodeState::Queued,
            bytes_done: 0,
            bytes_total: 0,
            from_origin: 0,
            from_peers: 0,
            millis: 0,
            detail: String::new(),
        }
    }

    /// Takes in a status the node reported, `millis` after the order. Nothing changes
    /// once the issuer stopped waiting (a late status does not revive a timed-out node).
    pub fn update(&mut self, status: &Status, millis: u64) {
        if self.state.is_over() {
            return;
        }
        self.state = status.state.into();
        self.bytes_done = status.bytes_done;
        self.bytes_total = status.bytes_total;
        self.from_origin = status.from_origin;
        self.from_peers = status.from_peers;
        self.detail = status.detail.clone();
        self.millis = millis;
    }

    /// The issuer stopped waiting at its deadline, `millis` after the order.
    pub fn time_out(&mut self, detail: String, millis: u64) {
        if !self.state.is_over() {
            self.state = NodeState::TimedOut;
            self.detail = detail;
            self.millis = millis;
        }
    }
}

/// A snapshot of every target while the order runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedProgress {
    /// Every target, in the report's order.
    pub nodes: Vec<NodeSeed>,
}

/// How an order ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedReport {
    /// The image as asked for.
    pub image: String,
    /// The order's id (16 hex digits), as the nodes' logs show it.
    pub order: String,
    /// How long each node keeps the image pinned, in seconds (0: not pinned).
    pub pin_ttl_secs: u64,
    /// Every target: this node first, then its peers by name; names that matched no
    /// node last.
    pub nodes: Vec<NodeSeed>,
    /// Milliseconds the order took, as the issuer saw it.
    pub millis: u64,
}

impl SeedReport {
    /// The targets that did not complete.
    pub fn not_seeded(&self) -> Vec<&NodeSeed> {
        self.nodes
            .iter()
            .filter(|n| n.state != NodeState::Complete)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_status_does_not_revive_a_timed_out_node() {
        let mut n = NodeSeed::ordered("n1".into(), "id".into(), false);
        let mut s = Status::queued();
        s.state = SeedState::Fetching;
        s.bytes_total = 10;
        s.bytes_done = 4;
        n.update(&s, 100);
        assert_eq!(
            (n.state, n.bytes_done, n.millis),
            (NodeState::Fetching, 4, 100)
        );
        n.time_out("not done within 1 s".into(), 1000);
        assert_eq!(n.state, NodeState::TimedOut);
        s.state = SeedState::Complete;
        n.update(&s, 2000);
        assert_eq!((n.state, n.millis), (NodeState::TimedOut, 1000));
        n.time_out("again".into(), 3000);
        assert_eq!(n.detail, "not done within 1 s");
    }

    #[test]
    fn states_serialise_in_snake_case() {
        let json = serde_json::to_string(&NodeState::TimedOut).unwrap();
        assert_eq!(json, "\"timed_out\"");
    }
}
