//! An in-memory engine, for tests: the content store's rules run over it unchanged.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::StoreError;
use super::engine::{Batch, Engine, Snapshot, Table, Visit};

/// Every table's entries, keyed by (table, key).
type Tables = BTreeMap<(Table, Vec<u8>), Vec<u8>>;

/// Tables in ordered maps behind one lock.
#[derive(Default)]
pub struct MemoryEngine {
    // A std Mutex: every section is a few map operations with no await inside.
    tables: Mutex<Tables>,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        // A panic while holding the lock cannot leave a map half-updated (each
        // operation is a single insert or remove), so a poisoned lock is still sound.
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Engine for MemoryEngine {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tables().get(&(table, key.to_vec())).cloned())
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let mut tables = self.tables();
        for (table, key, value) in batch.ops {
            match value {
                Some(v) => tables.insert((table, key), v),
                None => tables.remove(&(table, key)),
            };
        }
        Ok(())
    }

    fn keys_with_prefix(&self, table: Table, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .tables()
            .range((table, prefix.to_vec())..)
            .take_while(|((t, k), _)| *t == table && k.starts_with(prefix))
            .map(|((_, k), _)| k.clone())
            .collect())
    }

    fn keys(&self, table: Table) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .tables()
            .range((table, Vec::new())..)
            .take_while(|((t, _), _)| *t == table)
            .map(|((_, k), _)| k.clone())
            .collect())
    }

    fn with_snapshot(
        &self,
        f: &mut dyn FnMut(&dyn Snapshot) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // A copy of everything, taken under the lock: fine for the test engine.
        let copy = MemorySnapshot(self.tables().clone());
        f(&copy)
    }
}

/// A copy of the tables.
struct MemorySnapshot(Tables);

impl Snapshot for MemorySnapshot {
    fn scan(&self, table: Table, f: &mut Visit<'_>) -> Result<(), StoreError> {
        for ((_, k), v) in self
            .0
            .range((table, Vec::new())..)
            .take_while(|((t, _), _)| *t == table)
        {
            if f(k, v).is_break() {
                break;
            }
        }
        Ok(())
    }
}
