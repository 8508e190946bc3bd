//! Leases: what the node is using right now, which the collector must not remove.
//!
//! Every reader of a blob (a client streaming it, a fetch filling it, ingest cutting
//! it into a recipe, a manifest read back from the store) holds a [`Lease`] on its
//! digest for as long as it reads. The collector removes a blob, partial or recipe only
//! through [`Leases::remove_if_idle`], which runs the removal while holding the lease
//! table's lock. So either a reader took its lease first (and the collector skips that
//! digest), or the removal finished first (and the reader finds nothing and fetches
//! again). No reader ever loses bytes under its feet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use shoal_protocol::Digest;

/// The table of digests in use, with how many holders each has.
#[derive(Debug, Default)]
pub struct Leases {
    // A std Mutex: taking or dropping a lease is a map operation. The collector also
    // holds it across one store removal (a RocksDB batch, a few milliseconds), which
    // is what makes check-then-remove atomic against new readers; no await inside.
    held: Mutex<HashMap<Digest, usize>>,
}

/// A hold on one digest; released when dropped.
#[derive(Debug)]
pub struct Lease {
    leases: Arc<Leases>,
    digest: Digest,
}

impl Leases {
    /// An empty table.
    pub fn new() -> Arc<Self> {
        Arc::new(Leases::default())
    }

    fn held(&self) -> MutexGuard<'_, HashMap<Digest, usize>> {
        // Every section is one map operation (or a removal that does not touch the
        // map), so a poisoned lock still guards a consistent map.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a lease on `digest`.
    pub fn take(self: &Arc<Self>, digest: Digest) -> Lease {
        *self.held().entry(digest).or_insert(0) += 1;
        Lease {
            leases: Arc::clone(self),
            digest,
        }
    }

    /// Whether anyone holds a lease on `digest`.
    pub fn in_use(&self, digest: &Digest) -> bool {
        self.held().contains_key(digest)
    }

    /// Runs `remove` unless `digest` is leased, with new leases waiting until it is
    /// done. Returns `None` if it was leased (nothing ran).
    pub fn remove_if_idle<T>(&self, digest: &Digest, remove: impl FnOnce() -> T) -> Option<T> {
        let held = self.held();
        if held.contains_key(digest) {
            return None;
        }
        let out = remove();
        drop(held);
        Some(out)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut held = self.leases.held();
        if let Some(n) = held.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.digest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leased_digest_is_not_removed_until_every_lease_is_gone() {
        let leases = Leases::new();
        let d = Digest::of(b"blob");
        let a = leases.take(d);
        let b = leases.take(d);
        assert_eq!(leases.remove_if_idle(&d, || "removed"), None);
        drop(a);
        assert!(leases.in_use(&d));
        assert_eq!(leases.remove_if_idle(&d, || "removed"), None);
        drop(b);
        assert!(!leases.in_use(&d));
        assert_eq!(leases.remove_if_idle(&d, || "removed"), Some("removed"));
    }
}
