//! Persistent storage of a token: the `Store` trait and its SQLite implementation.
//!
//! The store holds only what the key hierarchy gives it: wrapped master keys, authenticated
//! attribute records and sealed key material. It never sees a plaintext key or a PIN, and it
//! does not judge integrity (the hierarchy does); it guarantees atomicity: every method that
//! writes does so in one transaction, so a crash or an error leaves the previous state intact.

mod sqlite;

pub use sqlite::SqliteStore;

use crate::error::Result;

/// The `Error::Store` message of a write whose generation bump lost a race with another
/// writer; the token retries such a write with a fresh bump.
pub const CONCURRENT_CHANGE: &str = "store changed concurrently; retry";

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

/// One user's keyslot: the master key wrapped under a key derived from the user's PIN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyslotRow {
    /// 0 = security officer, 1 = user.
    pub user_type: u8,
    /// Argon2id salt.
    pub salt: Vec<u8>,
    /// Argon2id memory cost in KiB.
    pub m_cost: u32,
    /// Argon2id iterations.
    pub t_cost: u32,
    /// Argon2id lanes.
    pub p_cost: u32,
    /// nonce || AES-256-GCM(MK), associated data binds store id and user type.
    pub wrapped_mk: Vec<u8>,
    /// Consecutive failed logins.
    pub failures: u32,
}

/// Store-wide metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreMeta {
    /// Random store id (binds keyslots, MACs and the anti-rollback record).
    pub store_uid: [u8; 16],
    /// Token label.
    pub label: String,
    /// Unlock policy (`keyslots` for embedded tokens).
    pub policy: String,
    /// Store generation, bumped by every authenticated write.
    pub generation: u64,
    /// HMAC over (store uid, generation) under a key derived from the master key.
    pub generation_mac: Vec<u8>,
    /// True once the store has been zeroized (master key wrappings destroyed).
    pub zeroized: bool,
}

/// The generation update that goes with an authenticated write: the write and the bump commit
/// together or not at all.
#[derive(Clone, Debug)]
pub struct GenerationBump {
    /// The generation the writer believes is current; the write fails if it changed.
    pub expected: u64,
    /// New generation (`expected + 1`).
    pub next: u64,
    /// MAC of the new generation.
    pub mac: Vec<u8>,
}

/// Persistent storage for one token. Implementations: SQLite (embedded), PostgreSQL (cluster,
/// later).
pub trait Store: Send + Sync {
    /// Store-wide metadata.
    fn meta(&self) -> Result<StoreMeta>;
    /// A user's keyslot, if set.
    fn keyslot(&self, user_type: u8) -> Result<Option<KeyslotRow>>;
    /// Replaces (or creates) a keyslot together with a generation bump.
    fn put_keyslot(&self, row: &KeyslotRow, bump: &GenerationBump) -> Result<()>;
    /// Records a failed login (not authenticated: no master key is available) and returns the
    /// new failure count.
    fn record_failure(&self, user_type: u8) -> Result<u32>;
    /// Clears a user's failure count.
    fn clear_failures(&self, user_type: u8) -> Result<()>;
    /// Inserts a new object; the store assigns `handle` (the row's `handle` is ignored) and the
    /// `mac_for` callback computes the MAC once the handle is known.
    fn insert_object(
        &self,
        row: &ObjectRow,
        bump: &GenerationBump,
        mac_for: &dyn Fn(&ObjectRow) -> Result<Vec<u8>>,
    ) -> Result<u64>;
    /// Replaces an object row (same handle and uid).
    fn update_object(&self, row: &ObjectRow, bump: &GenerationBump) -> Result<()>;
    /// Deletes an object; `Ok(false)` when it did not exist.
    fn delete_object(&self, handle: u64, bump: &GenerationBump) -> Result<bool>;
    /// One object by handle.
    fn object(&self, handle: u64) -> Result<Option<ObjectRow>>;
    /// Objects matching the indexed columns given (all when every filter is `None`).
    fn find(
        &self,
        class: Option<u64>,
        label: Option<&[u8]>,
        ckaid: Option<&[u8]>,
    ) -> Result<Vec<ObjectRow>>;
    /// Number of objects.
    fn count(&self) -> Result<u64>;
    /// A value that changes whenever another connection (or process) commits a change. Cheap.
    fn change_counter(&self) -> Result<u64>;
    /// Destroys every master-key wrapping (crypto-shredding) and marks the store zeroized.
    fn zeroize(&self) -> Result<()>;
}
