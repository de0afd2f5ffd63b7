//! The embedded token: one store, its login state, its object and key caches.
//!
//! `Token` is what the CLI and the PKCS#11 module call in embedded mode. It authenticates
//! (keyslots), enforces visibility and key-usage policy, checks the integrity of every record it
//! serves, and keeps parsed keys cached so that an operation never re-parses a key. Login state
//! belongs to the application (one per `Token`), as in PKCS#11.
//!
//! Lock order: `auth` before `cache` before `session_objects`; no lock is held across a store
//! call that writes.

mod admin;
mod archive;
mod auth;
mod backup;
mod batch;
mod byok;
mod cluster;
mod destruction;
mod entry;
mod gate;
mod guard;
mod lifecycle;
mod objects;
mod ops;
mod outbox;
mod policy;
mod state;
mod usepolicy;
mod users;
mod versions;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub use archive::ArchiveSummary;
pub(crate) use auth::create_in;
pub use auth::InitialUser;
pub use backup::{
    read_backup_header, BackupHeader, BackupSummary, CustodianShare, Progress, RestoreOptions,
    RestoreSummary, Unlock, BACKUP_KDF, BACKUP_MAGIC, BACKUP_VERSION, BACKUP_VERSION_SELECTED,
    PASSPHRASE_MAX, PASSPHRASE_MIN,
};
pub use byok::{import_mechanism, import_type, WrappedImport, MAX_WRAPPED};
pub use destruction::{DestroyOutcome, ScheduledKey};
pub use lifecycle::LifecycleDates;
pub use objects::ObjectInfo;
pub(crate) use ops::KeyRef;
pub use ops::Usage;
pub use policy::{InitOptions, SecurityPolicy, TamperResponse};
pub use usepolicy::{
    current_use_approvals, usage_name, use_approval_digest, with_use_approvals, Rate, UsagePolicy,
    UseApproval, UseApprovals, UseApprover, UseCount, USE_APPROVAL_OP,
};
pub use users::{Credentials, UserInfo, UserRecord, MAX_LOGIN_FAILURES};
pub use versions::{rotation_due_at, version_of, KeyVersionInfo, MIN_ROTATION_PERIOD};

use crate::attr::Attributes;
use crate::crypto::{KeyMaterial, Provider};
use crate::error::{Error, Result};
use crate::hierarchy::{IntegrityKeys, KdfParams, Vault};
use crate::secret::Pin;
use crate::store::{SqliteStore, Store};

/// Consecutive failed logins after which a PIN is locked.
pub const MAX_PIN_FAILURES: u32 = 10;

/// Object handles at or above this value name session objects; below it, token objects (the
/// store's row ids). Every handle stays below 2^32 (session objects get 2^31 .. 2^32 - 1), so
/// handles fit a 32-bit `CK_ULONG` and read well in NSS's and other clients' logs.
pub const SESSION_HANDLE_BASE: u64 = 1 << 31;

/// One past the largest session-object handle.
pub(crate) const SESSION_HANDLE_END: u64 = 1 << 32;

/// A PKCS#11 user type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UserType {
    /// `CKU_SO`
    So,
    /// `CKU_USER`
    User,
}

impl UserType {
    fn slot(self) -> u8 {
        match self {
            UserType::So => 0,
            UserType::User => 1,
        }
    }

    /// The name under which failed PIN attempts are counted.
    fn attempt_name(self) -> &'static str {
        match self {
            UserType::So => "pin:so",
            UserType::User => "pin:user",
        }
    }
}

/// Identifies the session that owns a session object.
pub type SessionId = u64;

/// Token status, as `C_GetTokenInfo` and `bulwark status` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenStatus {
    /// Token label.
    pub label: String,
    /// Unlock policy.
    pub policy: String,
    /// Hex store id (also the serial number).
    pub store_id: String,
    /// Current store generation.
    pub generation: u64,
    /// Number of token objects.
    pub objects: u64,
    /// Whether the user PIN is set.
    pub user_pin_initialized: bool,
    /// User PIN failures so far.
    pub user_pin_failures: u32,
    /// SO PIN failures so far.
    pub so_pin_failures: u32,
    /// Who is logged in.
    pub logged_in: Option<UserType>,
    /// Whether the store was zeroized.
    pub zeroized: bool,
}

/// A cached, verified object.
pub(crate) struct Obj {
    pub(crate) handle: u64,
    pub(crate) uid: [u8; 16],
    pub(crate) attrs: Attributes,
    pub(crate) material: Material,
    /// The record MAC (token objects) that the cached parsed key was made from.
    pub(crate) mac: Vec<u8>,
    /// Owning session for session objects.
    pub(crate) session: Option<SessionId>,
    /// The login that made a session object (invisible to every other login).
    pub(crate) login: u64,
    /// False when read before any login in this process (MAC not yet checkable).
    pub(crate) verified: bool,
}

pub(crate) enum Material {
    None,
    Sealed(Vec<u8>),
    Plain(KeyMaterial),
}

#[derive(Default)]
struct Auth {
    user: Option<UserType>,
    vault: Option<Arc<Vault>>,
    integrity: Option<Arc<IntegrityKeys>>,
    pin_tags: [Option<[u8; 32]>; 2],
}

#[derive(Default)]
struct Cache {
    change: u64,
    objects: HashMap<u64, Arc<Obj>>,
    keys: HashMap<u64, (Vec<u8>, KeyRef)>,
}

/// When the whole store was last verified ([`Token::verify_set`]).
#[derive(Default)]
struct Verified {
    /// The store change counter at that verification (`None`: never in this process).
    change: Option<u64>,
    /// How long it took.
    last_took: Duration,
    /// When it ended.
    last_at: Option<Instant>,
}

/// A token over one store: the embedded token (SQLite), and the kernel the daemon serves.
/// Cheap to clone (one shared state): a prepared key holds a clone, so that each of its uses
/// passes the gate again ([`crate::hsm::PreparedKey`]).
pub struct Token<S: Store = SqliteStore>(Arc<Inner<S>>);

impl<S: Store> Clone for Token<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S: Store> std::ops::Deref for Token<S> {
    type Target = Inner<S>;
    fn deref(&self) -> &Inner<S> {
        &self.0
    }
}

/// Revocation state that prepared keys check on every use without a lock.
#[derive(Default)]
pub(crate) struct Live {
    /// Bumped by every authenticated write of this token, every logout, lock, seal and alarm,
    /// and whenever another connection's commit is noticed: a prepared key made under an
    /// older value passes the full gate again before its next use.
    pub(crate) epoch: AtomicU64,
    /// When the store's change counter was last polled for prepared keys (ns since `start`).
    pub(crate) polled_at: AtomicU64,
    /// The change counter that poll saw.
    pub(crate) polled_change: AtomicU64,
    /// The token's start, for `polled_at`.
    pub(crate) start: std::sync::OnceLock<Instant>,
}

/// The shared state of a [`Token`].
#[doc(hidden)]
pub struct Inner<S: Store> {
    store: S,
    provider: &'static Provider,
    store_uid: [u8; 16],
    auth: RwLock<Auth>,
    cache: RwLock<Cache>,
    session_objects: RwLock<HashMap<u64, Arc<Obj>>>,
    next_session_handle: AtomicU64,
    generation_seen: AtomicU64,
    /// The last full verification of the store.
    verified: Mutex<Verified>,
    /// Re-verify at once on every foreign commit (the daemon), not rate-limited.
    eager_verify: AtomicBool,
    /// The gate's cached roles and grants.
    acl: RwLock<gate::AclCache>,
    /// Failed logins that lock a front-door user.
    login_limit: std::sync::atomic::AtomicU32,
    /// Audit log and tamper state (guard.rs).
    guard: guard::Guard,
    /// What prepared keys check on each use.
    pub(crate) live: Live,
    /// Audit outbox rows whose records are appended (outbox.rs).
    outbox: outbox::Outbox,
    /// The time lifecycle dates are evaluated against (lifecycle.rs).
    clock: RwLock<Arc<dyn crate::lifecycle::Clock>>,
    /// Group commit of concurrent object creations (state.rs).
    group: state::GroupCommit,
}

impl<S: Store> std::fmt::Debug for Token<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("store", &self.store).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Token<SqliteStore> {
    /// Creates a new store at `path` with an SO PIN and (optionally) a user PIN, using the
    /// default Argon2id cost.
    pub fn init(path: &Path, label: &str, so_pin: &Pin, user_pin: Option<&Pin>) -> Result<()> {
        Self::init_with(path, label, so_pin, user_pin, KdfParams::default())
    }

    /// [`Token::init`] with explicit Argon2id parameters.
    pub fn init_with(
        path: &Path,
        label: &str,
        so_pin: &Pin,
        user_pin: Option<&Pin>,
        kdf: KdfParams,
    ) -> Result<()> {
        let opts = InitOptions { kdf, ..InitOptions::default() };
        Self::init_with_options(path, label, so_pin, user_pin, &opts)
    }

    /// [`Token::init`] with explicit Argon2id parameters and security policy.
    pub fn init_with_options(
        path: &Path,
        label: &str,
        so_pin: &Pin,
        user_pin: Option<&Pin>,
        opts: &InitOptions,
    ) -> Result<()> {
        auth::init_store(Provider::get()?, path, label, so_pin, user_pin, opts.kdf, &opts.policy)
    }

    /// Opens an existing store. Loads nothing per object (start-up is flat in the number of
    /// keys). Opening checks the audit log (missing, foreign or rolled back is tampering).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, true)
    }

    /// Opens a store **without an audit log**: nothing is recorded. For benchmarks that
    /// measure what auditing costs; never for a deployed token.
    #[doc(hidden)]
    pub fn open_insecure_without_audit(path: &Path) -> Result<Self> {
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, audit: bool) -> Result<Self> {
        let store = SqliteStore::open(path)?;
        let log = if audit { Some(path) } else { None };
        Token::open_on(store, log)
    }

    /// The store file path.
    pub fn path(&self) -> &Path {
        self.store.path()
    }
}

impl<S: Store> Token<S> {
    /// Opens a token over any store (the PostgreSQL store of a cluster, for one), as
    /// [`Token::open`] does over a SQLite file. The audit log is the local file
    /// `<audit_base>-audit` (beside a SQLite store, `audit_base` is the store file); opening
    /// checks it (missing, foreign or rolled back is tampering).
    pub fn open_store(store: S, audit_base: &Path) -> Result<Self> {
        Self::open_on(store, Some(audit_base))
    }

    /// [`Token::open_store`] **without an audit log**: nothing is recorded. For benchmarks that
    /// measure the store; never for a deployed token.
    #[doc(hidden)]
    pub fn open_store_insecure_without_audit(store: S) -> Result<Self> {
        Self::open_on(store, None)
    }

    fn open_on(store: S, log: Option<&Path>) -> Result<Self> {
        let provider = Provider::get()?;
        let header = store.header()?;
        let change = store.change_counter()?;
        let guard = guard::Guard::open_with(&store, header.store_uid, header.zeroized, log);
        Ok(Self(Arc::new(Inner {
            live: Live::default(),
            guard,
            store,
            provider,
            store_uid: header.store_uid,
            auth: RwLock::new(Auth::default()),
            cache: RwLock::new(Cache { change, ..Cache::default() }),
            session_objects: RwLock::new(HashMap::new()),
            next_session_handle: AtomicU64::new(SESSION_HANDLE_BASE),
            generation_seen: AtomicU64::new(crate::rollback::load(&header.store_uid)),
            verified: Mutex::new(Verified::default()),
            eager_verify: AtomicBool::new(header.policy == crate::seal::QUORUM_POLICY),
            acl: RwLock::new(gate::AclCache::default()),
            login_limit: std::sync::atomic::AtomicU32::new(MAX_LOGIN_FAILURES),
            outbox: outbox::Outbox::default(),
            clock: RwLock::new(crate::lifecycle::system()),
            group: state::GroupCommit::default(),
        })))
    }

    /// A token over a store just created, with no audit log yet (store creation only).
    pub(crate) fn open_created(store: S, store_uid: [u8; 16]) -> Result<Self> {
        let guard = guard::Guard::open_with(&store, store_uid, false, None);
        Ok(Self(Arc::new(Inner {
            live: Live::default(),
            guard,
            provider: Provider::get()?,
            store_uid,
            auth: RwLock::new(Auth::default()),
            cache: RwLock::new(Cache::default()),
            session_objects: RwLock::new(HashMap::new()),
            next_session_handle: AtomicU64::new(SESSION_HANDLE_BASE),
            generation_seen: AtomicU64::new(0),
            verified: Mutex::new(Verified::default()),
            eager_verify: AtomicBool::new(false),
            acl: RwLock::new(gate::AclCache::default()),
            login_limit: std::sync::atomic::AtomicU32::new(MAX_LOGIN_FAILURES),
            outbox: outbox::Outbox::default(),
            clock: RwLock::new(crate::lifecycle::system()),
            group: state::GroupCommit::default(),
            store,
        })))
    }
}

impl<S: Store> Token<S> {
    /// The crypto provider this token uses.
    pub fn provider(&self) -> &'static Provider {
        self.provider
    }

    /// Current status. The label comes from the authenticated settings (checked once the store
    /// is unlocked in this process).
    pub fn status(&self) -> Result<TokenStatus> {
        let header = self.store.header()?;
        let user = self.store.keyslot(UserType::User.slot())?;
        let label = self
            .setting("label")?
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default();
        Ok(TokenStatus {
            label,
            policy: header.policy,
            store_id: hex::encode(header.store_uid),
            generation: header.generation,
            objects: self.store.count()?,
            user_pin_initialized: user.is_some(),
            user_pin_failures: self.store.attempts(UserType::User.attempt_name())?,
            so_pin_failures: self.store.attempts(UserType::So.attempt_name())?,
            logged_in: read(&self.auth).user,
            zeroized: header.zeroized,
        })
    }

    /// Drops every cached object if another connection changed the store since we last
    /// looked. Parsed keys survive: they are re-used only if their record's MAC is unchanged.
    fn sync(&self) -> Result<()> {
        self.sync_to(self.store.change_counter()?);
        Ok(())
    }

    /// [`Token::sync`] with a change counter this same call already read (its pre-check): one
    /// store check per call instead of two. Only for a value read earlier in the same call.
    fn sync_to(&self, now: u64) {
        if read(&self.cache).change == now {
            return;
        }
        let mut c = write(&self.cache);
        c.change = now;
        c.objects.clear();
    }

    fn next_session_handle(&self) -> u64 {
        self.next_session_handle.fetch_add(1, Ordering::Relaxed)
    }

    /// The unlocked hierarchy (a PIN login happened in this process, or the quorum unsealed
    /// the store). Says nothing about who may do what: that is the gate's (gate.rs).
    fn require_vault(&self) -> Result<(Arc<Vault>, Arc<IntegrityKeys>)> {
        let a = read(&self.auth);
        match (&a.vault, &a.integrity) {
            (Some(v), Some(i)) => Ok((v.clone(), i.clone())),
            _ => Err(Error::UserNotLoggedIn),
        }
    }

    fn integrity(&self) -> Option<Arc<IntegrityKeys>> {
        read(&self.auth).integrity.clone()
    }

    /// Who is logged in.
    pub fn logged_in(&self) -> Option<UserType> {
        read(&self.auth).user
    }
}

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn token_is_send_and_sync() {
        assert_send_sync::<super::Token>();
    }
}
