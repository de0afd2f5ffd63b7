//! The store the daemon serves: a SQLite file (one node) or a PostgreSQL database (a cluster
//! node, docs/cluster.md). One enum implementing core's `Store` by delegation, so the kernel
//! (`Token<NodeStore>`) and every handler stay one code path; the SQLite arm behaves exactly as
//! `Token::open(path)` did (same store, same audit log beside the file).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bulwark_core::store::{
    HeaderNote, KeyslotRow, ObjectRow, RecordRow, ScanRow, SqliteStore, Store, StoreHeader, StoreTx,
};
use bulwark_core::{Result, Token};
use bulwark_store_pg::PgStore;

/// The daemon's token.
pub type NodeToken = Token<NodeStore>;

/// A SQLite file or a PostgreSQL database.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per process, never moved on a hot path
pub enum NodeStore {
    /// One node: the store file.
    Sqlite(SqliteStore),
    /// A cluster node: the shared database, and this node's local base path (its audit log is
    /// `<local>-audit`; scratch files go beside it).
    Pg {
        /// The database.
        store: Arc<PgStore>,
        /// This node's local base path.
        local: PathBuf,
    },
}

impl NodeStore {
    /// The PostgreSQL store, for a cluster node.
    pub fn pg(&self) -> Option<&Arc<PgStore>> {
        match self {
            NodeStore::Sqlite(_) => None,
            NodeStore::Pg { store, .. } => Some(store),
        }
    }

    /// The local path scratch files go beside: the store file, or the node's base path.
    pub fn local_path(&self) -> &Path {
        match self {
            NodeStore::Sqlite(s) => s.path(),
            NodeStore::Pg { local, .. } => local,
        }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            NodeStore::Sqlite($s) => $e,
            NodeStore::Pg { store: $s, .. } => $e,
        }
    };
}

impl Store for NodeStore {
    fn header(&self) -> Result<StoreHeader> {
        each!(self, s => s.header())
    }
    fn keyslot(&self, user_type: u8) -> Result<Option<KeyslotRow>> {
        each!(self, s => s.keyslot(user_type))
    }
    fn object(&self, handle: u64) -> Result<Option<ObjectRow>> {
        each!(self, s => s.object(handle))
    }
    fn find(
        &self,
        class: Option<u64>,
        label: Option<&[u8]>,
        ckaid: Option<&[u8]>,
    ) -> Result<Vec<ObjectRow>> {
        each!(self, s => s.find(class, label, ckaid))
    }
    fn count(&self) -> Result<u64> {
        each!(self, s => s.count())
    }
    fn record(&self, kind: &str, key: &[u8]) -> Result<Option<RecordRow>> {
        each!(self, s => s.record(kind, key))
    }
    fn records(&self, kind: &str, prefix: &[u8]) -> Result<Vec<RecordRow>> {
        each!(self, s => s.records(kind, prefix))
    }
    fn change_counter(&self) -> Result<u64> {
        each!(self, s => s.change_counter())
    }
    fn write(&self, f: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>) -> Result<()> {
        each!(self, s => s.write(f))
    }
    fn scan(&self, f: &mut dyn FnMut(ScanRow<'_>) -> Result<()>) -> Result<StoreHeader> {
        each!(self, s => s.scan(f))
    }
    fn count_attempt(&self, who: &str) -> Result<u32> {
        each!(self, s => s.count_attempt(who))
    }
    fn attempts(&self, who: &str) -> Result<u32> {
        each!(self, s => s.attempts(who))
    }
    fn clear_attempts(&self, who: &str) -> Result<()> {
        each!(self, s => s.clear_attempts(who))
    }
    fn set_header_note(&self, name: HeaderNote, value: Option<&[u8]>) -> Result<()> {
        each!(self, s => s.set_header_note(name, value))
    }
    fn zeroize(&self) -> Result<()> {
        each!(self, s => s.zeroize())
    }
}
