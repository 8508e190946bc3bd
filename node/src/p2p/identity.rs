//! The node's peer identity: an Ed25519 key kept in the data directory, so that a
//! node keeps its peer id across restarts (peers' bans, provider records and logs
//! name it).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use libp2p::identity::Keypair;

/// The key file, under the data directory.
pub const KEY_FILE: &str = "peer.key";

/// Loads the node's key from `dir`, creating it (mode 0600) on first start.
pub fn load_or_create(dir: &Path) -> anyhow::Result<Keypair> {
    let path = dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the peer key is readable by other users (mode {:o}); chmod 600 it",
                    mode & 0o777
                );
            }
            let key = Keypair::from_protobuf_encoding(&bytes).with_context(|| {
                format!(
                    "{} is not a shoal peer key; move it away to start with a new identity",
                    path.display()
                )
            })?;
            if key.key_type() != libp2p::identity::KeyType::Ed25519 {
                bail!(
                    "{} holds a {:?} key, not Ed25519",
                    path.display(),
                    key.key_type()
                );
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .context("cannot encode the new peer key")?;
            // Written at a temporary name and renamed, so a crash never leaves half a key.
            let tmp = dir.join(format!("{KEY_FILE}.tmp"));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            tracing::info!(path = %path.display(), peer_id = %key.public().to_peer_id(), "created the node's peer identity");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_survives_a_restart_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let again = load_or_create(dir.path()).unwrap();
        assert_eq!(first.public().to_peer_id(), again.public().to_peer_id());
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_key_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), b"not a key").unwrap();
        let e = load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("move it away"), "{e}");
    }
}
