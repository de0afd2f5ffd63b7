//! Persistent storage of a token: the `Store` trait and its SQLite implementation.
//!
//! The store holds only what the key hierarchy gives it: wrapped master keys, authenticated
//! rows and sealed key material. It never sees a plaintext key or a PIN, and it does not judge
//! integrity (the kernel does, with keys derived from the master key); it guarantees atomicity:
//! every authenticated change runs inside one [`Store::write`] transaction together with the
//! sealed store state (generation, set commitment), so a crash or an error leaves the previous
//! state intact.
//!
//! Three kinds of authenticated rows exist, each MACed over every column and each a member of the
//! **set commitment** sealed in the store state: keyslots (wrapped master keys), objects (the
//! PKCS#11 objects, with indexed copies of class, label, id and privacy for lookups) and records
//! (everything else the kernel keeps: settings, principals, grants, login state, used approvals,
//! the tamper alarm), addressed by `(kind, key)`. A row deleted, inserted or replayed changes the
//! set and is caught like an edited one. Only the failed-attempt counters of PIN keyslots live
//! outside the set ([`Store::count_attempt`]): they are written before a PIN is checked, when no
//! key exists to authenticate them.

mod sqlite;

pub use sqlite::SqliteStore;

use crate::error::Result;

/// A stored object row, exactly as persisted. Every field is covered by `mac`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRow {
    /// Store-wide handle; assigned by the store, never reused.
    pub handle: u64,
    /// 16 random bytes naming the object for its whole life (the key-derivation and MAC
    /// binding id).
    pub uid: [u8; 16],
    /// `CKO_*` (indexed copy of the attribute).
    pub class: u64,
    /// `CKA_LABEL` (indexed copy).
    pub label: Vec<u8>,
    /// `CKA_ID` (indexed copy).
    pub ckaid: Vec<u8>,
    /// `CKA_PRIVATE` (indexed copy).
    pub private: bool,
    /// Canonical attribute encoding (`Attributes::encode`).
    pub attrs: Vec<u8>,
    /// Sealed key material (nonce || AES-256-GCM ciphertext), if the object has any.
    pub secret: Option<Vec<u8>>,
    /// HMAC-SHA256 over all of the above, under a key derived from the master key.
    pub mac: Vec<u8>,
}

/// One keyslot: the master key wrapped under a key derived from a PIN (PIN stores) or under
/// the unseal key (quorum stores).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyslotRow {
    /// 0 = security officer, 1 = user, 2 = quorum.
    pub user_type: u8,
    /// Argon2id salt (quorum slot: the issued share digests).
    pub salt: Vec<u8>,
    /// Argon2id memory cost in KiB (quorum slot: the threshold).
    pub m_cost: u32,
    /// Argon2id iterations (quorum slot: the share count).
    pub t_cost: u32,
    /// Argon2id lanes (quorum slot: 0).
    pub p_cost: u32,
    /// nonce || AES-256-GCM(MK), associated data binds store id and user type.
    pub wrapped_mk: Vec<u8>,
    /// HMAC over every column above, under a key derived from the master key.
    pub mac: Vec<u8>,
}

/// A generic authenticated row: `(kind, key) -> value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordRow {
    /// What the row is (`setting`, `user`, `grant`, ...); a short ASCII name.
    pub kind: String,
    /// The row's key within its kind.
    pub key: Vec<u8>,
    /// The value (the kernel's encoding).
    pub value: Vec<u8>,
    /// HMAC over kind, key and value under a key derived from the master key.
    pub mac: Vec<u8>,
}

/// The store's unauthenticated header and its sealed state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreHeader {
    /// Random store id (binds keyslots, MACs and the anti-rollback record).
    pub store_uid: [u8; 16],
    /// Unlock policy (`keyslots` or `quorum`); authenticated through the keyslot rows' MACs.
    pub policy: String,
    /// Store generation, bumped by every authenticated write (plain copy, for ordering; the
    /// authenticated one is inside `state`).
    pub generation: u64,
    /// The sealed store state (generation, set commitment, object count) under a key derived
    /// from the master key. Empty on a zeroized store.
    pub state: Vec<u8>,
    /// True once the store has been zeroized (master key wrappings destroyed).
    pub zeroized: bool,
    /// The raised tamper alarm written while no master key was available, if any (the
    /// authenticated copy is a record; either one means "alarm").
    pub alarm: Option<String>,
    /// The audit log's public key (raw Ed25519), kept in the clear so that the log of a
    /// zeroized store can still be verified. The authenticated copy is a record.
    pub audit_pub: Option<Vec<u8>>,
}

/// The unauthenticated notes a header may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderNote {
    /// A tamper alarm's reason.
    Alarm,
    /// The audit public key.
    AuditPub,
}

impl HeaderNote {
    /// The note's name in the store.
    pub fn name(self) -> &'static str {
        match self {
            HeaderNote::Alarm => "alarm",
            HeaderNote::AuditPub => "audit_pub",
        }
    }
}

/// One row met by a full scan ([`Store::scan`]).
#[derive(Debug)]
pub enum ScanRow<'a> {
    /// A keyslot.
    Keyslot(&'a KeyslotRow),
    /// An object.
    Object(&'a ObjectRow),
    /// A record.
    Record(&'a RecordRow),
}

/// The operations of one authenticated write transaction ([`Store::write`]).
pub trait StoreTx {
    /// The header as of this transaction.
    fn header(&mut self) -> Result<StoreHeader>;
    /// Replaces the generation and the sealed state.
    fn set_state(&mut self, generation: u64, state: &[u8]) -> Result<()>;
    /// A keyslot.
    fn keyslot(&mut self, user_type: u8) -> Result<Option<KeyslotRow>>;
    /// Inserts or replaces a keyslot.
    fn put_keyslot(&mut self, row: &KeyslotRow) -> Result<()>;
    /// One object by handle.
    fn object(&mut self, handle: u64) -> Result<Option<ObjectRow>>;
    /// Inserts a new object; the store assigns the handle (the row's is ignored) and returns
    /// it. The MAC is set afterwards with [`StoreTx::set_object_mac`], once the handle is known.
    fn insert_object(&mut self, row: &ObjectRow) -> Result<u64>;
    /// Sets the MAC of an object row.
    fn set_object_mac(&mut self, handle: u64, mac: &[u8]) -> Result<()>;
    /// Replaces an object row (same handle and uid); `false` if there is none.
    fn update_object(&mut self, row: &ObjectRow) -> Result<bool>;
    /// Deletes an object and returns the deleted row.
    fn delete_object(&mut self, handle: u64) -> Result<Option<ObjectRow>>;
    /// One record.
    fn record(&mut self, kind: &str, key: &[u8]) -> Result<Option<RecordRow>>;
    /// Every record of a kind whose key starts with `prefix`.
    fn records(&mut self, kind: &str, prefix: &[u8]) -> Result<Vec<RecordRow>>;
    /// Inserts or replaces a record.
    fn put_record(&mut self, row: &RecordRow) -> Result<()>;
    /// Deletes a record and returns it.
    fn delete_record(&mut self, kind: &str, key: &[u8]) -> Result<Option<RecordRow>>;
}

/// Persistent storage for one token. Implementations: SQLite (embedded and single daemon),
/// PostgreSQL (cluster, later). Reads outside [`Store::write`] see the last committed state.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The header.
    fn header(&self) -> Result<StoreHeader>;
    /// A keyslot, if set.
    fn keyslot(&self, user_type: u8) -> Result<Option<KeyslotRow>>;
    /// One object by handle.
    fn object(&self, handle: u64) -> Result<Option<ObjectRow>>;
    /// Objects matching the indexed columns given (all when every filter is `None`), by
    /// ascending handle.
    fn find(
        &self,
        class: Option<u64>,
        label: Option<&[u8]>,
        ckaid: Option<&[u8]>,
    ) -> Result<Vec<ObjectRow>>;
    /// Number of objects (informational; the authenticated count is in the sealed state).
    fn count(&self) -> Result<u64>;
    /// One record.
    fn record(&self, kind: &str, key: &[u8]) -> Result<Option<RecordRow>>;
    /// Every record of a kind whose key starts with `prefix`, by key.
    fn records(&self, kind: &str, prefix: &[u8]) -> Result<Vec<RecordRow>>;
    /// A value that changes whenever another connection (or process) commits a change, and
    /// only then. Cheap.
    fn change_counter(&self) -> Result<u64>;
    /// Runs `f` in one write transaction (exclusive among writers). Nothing `f` wrote is
    /// visible to anyone unless it returns `Ok` and the commit succeeds.
    fn write(&self, f: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>) -> Result<()>;
    /// Reads the header and every authenticated row from one consistent snapshot, calling `f`
    /// for each row; returns the header of that snapshot.
    fn scan(&self, f: &mut dyn FnMut(ScanRow<'_>) -> Result<()>) -> Result<StoreHeader>;
    /// Counts one attempt of `who` (unauthenticated, durable before it returns) and returns the
    /// new count of consecutive failed attempts.
    fn count_attempt(&self, who: &str) -> Result<u32>;
    /// Consecutive failed attempts of `who`.
    fn attempts(&self, who: &str) -> Result<u32>;
    /// Clears `who`'s attempt count (after a success or an SO reset).
    fn clear_attempts(&self, who: &str) -> Result<()>;
    /// Sets (or clears) an unauthenticated header note: `alarm` (a tamper alarm raised when no
    /// master key is available to authenticate it) or `audit_pub` (see [`StoreHeader`]).
    fn set_header_note(&self, name: HeaderNote, value: Option<&[u8]>) -> Result<()>;
    /// Destroys every master-key wrapping (crypto-shredding) and every authenticated row, and
    /// marks the store zeroized.
    fn zeroize(&self) -> Result<()>;
}
