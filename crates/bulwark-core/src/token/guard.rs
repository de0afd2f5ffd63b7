//! The one dispatch point of the embedded token: every public operation of [`Token`] passes
//! through [`Token::audited`], which refuses service while a tamper alarm is active, runs the
//! operation, appends its audit record (durably, before the result is returned), and turns
//! integrity failures, rollbacks, self-test failures, SO PIN failures past policy and a
//! configured tamper file into the configured tamper response (`alarm` or `zeroize`).
//!
//! The operation bodies live in `auth.rs`, `objects.rs` and `ops.rs` as `*_unaudited`
//! functions; the public, audited names of the administrative and audit operations are defined
//! here, those of object management and cryptography in `entry.rs`. Nothing here ever records key
//! material, plaintext or PINs: records carry names, ids, labels and result codes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::state::kind;
use super::{read, KeyRef, SessionId, Token, Usage, UserType, SESSION_HANDLE_BASE};
use crate::attr::AttrType;
use crate::audit::{self, Actor, AuditEvent, AuditLog, AuditSigner, Checkpoint, Proof};
use crate::error::{Error, Result};
use crate::hierarchy::{IntegrityKeys, KdfParams, Vault};
use crate::mechanism::Mechanism;
use crate::secret::Pin;
use crate::store::{HeaderNote, SqliteStore, Store};

/// The reserved uid under which the audit signing key is sealed (never an object handle).
const AUDIT_KEY_UID: [u8; 16] = *b"bulwark-auditkey";

/// What the token does when it detects tampering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TamperResponse {
    /// Record it, then refuse all service (except SO login, audit export and `tamper clear`)
    /// until the security officer clears the alarm.
    Alarm,
    /// Record it, then zeroize the store.
    Zeroize,
}

/// The store's security policy, fixed at init (stored in the store's metadata, authenticated
/// under the master key and checked at every login).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::struct_excessive_bools)] // independent switches of a stored policy, not a state
pub struct SecurityPolicy {
    /// Response to tampering.
    pub tamper_response: TamperResponse,
    /// Consecutive SO PIN failures that count as tampering (0: never).
    pub so_failure_limit: u32,
    /// A file whose appearance is an external tamper signal (an enclosure switch stand-in).
    pub tamper_file: Option<PathBuf>,
    /// Treat a tracer (debugger) attached to a process using the store as tampering.
    pub tracer_is_tamper: bool,
    /// Sign an audit checkpoint after this many records (0: never by count).
    pub checkpoint_every_records: u64,
    /// Sign an audit checkpoint when this many seconds passed since the last (0: never).
    pub checkpoint_every_secs: u64,
    /// How successful key uses (sign, verify, encrypt, decrypt, (de)capsulate and their
    /// `C_*Init`) are recorded: `durable` (before the result returns), `bounded` (chained before
    /// the result, durable within the audit window; the default) or `off` (only refusals).
    /// Administration, key management and every refusal are always recorded durably. Reads
    /// the boolean of older policies (`true` → durable, `false` → off); a policy without the
    /// field predates it and meant durable.
    #[serde(default = "audit_key_use_default")]
    pub audit_key_use: audit::AuditKeyUse,
    /// Keys leave the token only wrapped under a CKA_TRUSTED key (which only the security
    /// officer can mark), and unwrapped keys are always sensitive: a caller can then never
    /// wrap a sensitive key under a key it knows and unwrap it in the clear. On by default for
    /// daemon stores; embedded stores keep standard PKCS#11 behaviour for drop-in use.
    #[serde(default)]
    pub wrap_requires_trusted: bool,
    /// AES-GCM encryption only with IVs the token generates (`CKG_GENERATE_RANDOM` through the
    /// PKCS#11 3.0 message API, `Mechanism::AesGcmGenerated`): a caller can then never reuse a
    /// nonce. Off by default (standard PKCS#11 callers choose their IVs).
    #[serde(default)]
    pub require_token_iv: bool,
}

fn audit_key_use_default() -> audit::AuditKeyUse {
    audit::AuditKeyUse::Durable
}

impl Default for SecurityPolicy {
    fn default() -> Self {
        Self {
            tamper_response: TamperResponse::Alarm,
            so_failure_limit: 5,
            tamper_file: None,
            tracer_is_tamper: false,
            checkpoint_every_records: 1000,
            checkpoint_every_secs: 60,
            audit_key_use: audit::AuditKeyUse::Bounded,
            wrap_requires_trusted: false,
            require_token_iv: false,
        }
    }
}

impl SecurityPolicy {
    /// The defaults of a network HSM's store: as [`SecurityPolicy::default`], but keys leave
    /// only wrapped under trusted keys.
    pub fn for_daemon() -> Self {
        Self { wrap_requires_trusted: true, ..Self::default() }
    }
}

/// Options for creating a store.
#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    /// Argon2id cost of the keyslots.
    pub kdf: KdfParams,
    /// Security policy.
    pub policy: SecurityPolicy,
}

/// Audit and tamper state of one open token.
pub(crate) struct Guard {
    log: Option<AuditLog>,
    /// Why the log could not be opened (missing, foreign, rolled back), if so.
    log_broken: Option<&'static str>,
    pub(crate) policy: SecurityPolicy,
    alarm: AtomicBool,
    zeroized: AtomicBool,
    /// The tamper response sealed in the store state: 0 not yet seen, 1 alarm, 2 zeroize.
    sealed_response: std::sync::atomic::AtomicU8,
    seen_change: AtomicU64,
    next_file_check_ms: AtomicU64,
    client: RwLock<String>,
}

fn process_identity() -> String {
    #[cfg(unix)]
    let uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").map_or_else(|_| "?".into(), |m| m.uid().to_string())
    };
    #[cfg(not(unix))]
    let uid = "?";
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    format!("embedded pid={} uid={uid} exe={exe}", std::process::id())
}

/// The policy as stored, not yet authenticated (before the store is unlocked in this process):
/// used only until the first unlock, which replaces it with the authenticated one or fails.
fn policy_of<S: Store>(store: &S) -> SecurityPolicy {
    store
        .record(kind::SETTING, b"policy")
        .ok()
        .flatten()
        .and_then(|r| serde_json::from_slice(&r.value).ok())
        .unwrap_or_default()
}

impl Guard {
    /// The guard of a store; `log` is the store path whose audit log to open (none: nothing is
    /// recorded — benchmarks and store creation only).
    pub(crate) fn open_with<S: Store>(
        store: &S,
        store_uid: [u8; 16],
        zeroized: bool,
        log: Option<&Path>,
    ) -> Self {
        let policy = policy_of(store);
        let cp = audit::CheckpointPolicy {
            every_records: policy.checkpoint_every_records,
            every_ms: policy.checkpoint_every_secs.saturating_mul(1000),
        };
        let (log, log_broken) = match log {
            Some(path) => match AuditLog::open(path, store_uid, false, cp) {
                Ok(l) => (Some(l), None),
                Err(Error::Integrity(why)) => (None, Some(why)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot open the audit log");
                    (None, Some("audit log cannot be opened"))
                }
            },
            None => (None, None),
        };
        let header = store.header().ok();
        let alarm = header.as_ref().is_some_and(|h| h.alarm.is_some())
            || store.record(kind::SETTING, b"tamper_alarm").ok().flatten().is_some();
        Self {
            log,
            log_broken,
            policy,
            alarm: AtomicBool::new(alarm),
            sealed_response: std::sync::atomic::AtomicU8::new(0),
            zeroized: AtomicBool::new(zeroized),
            seen_change: AtomicU64::new(store.change_counter().unwrap_or(0)),
            next_file_check_ms: AtomicU64::new(0),
            client: RwLock::new(process_identity()),
        }
    }
}

/// Creates the audit log of a new store and records `init` (the store already holds the
/// policy and the sealed audit key).
pub(crate) fn after_init<S: Store>(
    store: &S,
    path: &Path,
    store_uid: [u8; 16],
    signer: AuditSigner,
    policy: &SecurityPolicy,
) -> Result<()> {
    store.set_header_note(HeaderNote::AuditPub, Some(&signer.public_key()))?;
    let log = AuditLog::open(path, store_uid, true, audit::CheckpointPolicy::default())?;
    log.set_signer(Some(Arc::new(signer)));
    log.append(&AuditEvent {
        actor: Actor {
            name: "so".into(),
            role: "security-officer".into(),
            client: process_identity(),
        },
        op: "init",
        result: "ok",
        detail: format!("tamper response {:?}", policy.tamper_response).to_lowercase(),
        ..AuditEvent::default()
    })?;
    // The first append signed a checkpoint already (none existed); nothing more to do.
    Ok(())
}

/// A new audit signing key and its sealed form (for the `audit_key` setting).
pub(crate) fn new_audit_key(vault: &Vault) -> Result<(AuditSigner, Vec<u8>)> {
    let (signer, der) = AuditSigner::generate()?;
    let mut nonce = [0u8; 12];
    crate::crypto::Provider::get()?.random(&mut nonce)?;
    let sealed = vault.seal_secret(&AUDIT_KEY_UID, nonce, der.expose_secret())?;
    Ok((signer, sealed))
}

/// Whether an operation may run while a tamper alarm is active.
fn allowed_in_alarm(op: &str) -> bool {
    matches!(
        op,
        "logout" | "audit-export" | "audit-public-key" | "audit-prove" | "tamper-clear" | "zeroize"
    )
}

/// Why an error is tampering, if it is.
fn tamper_reason(e: &Error) -> Option<&'static str> {
    match e {
        Error::Integrity(_) => Some("integrity failure"),
        Error::Rollback { .. } => Some("store rollback"),
        Error::ErrorState(_) => Some("self-test failure"),
        _ => None,
    }
}

/// What one audited call is about.
pub(super) struct Call {
    pub(super) op: &'static str,
    pub(super) session: SessionId,
    pub(super) mechanism: Option<u64>,
    pub(super) handle: Option<u64>,
    /// (uid, label) captured before the object went away.
    pub(super) described: Option<(String, String)>,
    pub(super) actor: Option<UserType>,
}

impl Call {
    pub(super) fn new(op: &'static str) -> Self {
        Self { op, session: 0, mechanism: None, handle: None, described: None, actor: None }
    }
    pub(super) fn mech(mut self, m: u64) -> Self {
        self.mechanism = Some(m);
        self
    }
    pub(super) fn obj(mut self, h: u64) -> Self {
        self.handle = Some(h);
        self
    }
    /// A use of a key to process data (as opposed to administration or key management).
    fn is_key_use(&self) -> bool {
        matches!(
            self.op,
            "sign"
                | "verify"
                | "encrypt"
                | "decrypt"
                | "encapsulate"
                | "decapsulate"
                | "sign-init"
                | "verify-init"
                | "encrypt-init"
                | "decrypt-init"
                | "encapsulate-init"
                | "decapsulate-init"
                // Successful lookups are as frequent as key uses and change nothing.
                | "find"
        )
    }
    pub(super) fn session(mut self, s: SessionId) -> Self {
        self.session = s;
        self
    }
}

impl<S: Store> Token<S> {
    /// The gate a prepared key passes before each use ([`crate::hsm::EmbeddedKey`]): refused
    /// while zeroized or in a tamper alarm; another connection's commit is looked for at most
    /// once a millisecond and, when seen, moves the epoch (every prepared key then passes the
    /// full gate again). Returns the current epoch.
    pub(crate) fn prepared_gate(&self) -> Result<u64> {
        if self.guard.zeroized.load(Ordering::Acquire) {
            return Err(Error::Zeroized);
        }
        if self.guard.alarm.load(Ordering::Acquire) {
            return Err(Error::TamperAlarm("an alarm is active".into()));
        }
        let start = self.live.start.get_or_init(std::time::Instant::now);
        let now = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let last = self.live.polled_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1_000_000 || last == 0 {
            self.live.polled_at.store(now.max(1), Ordering::Relaxed);
            let ch = self.store.change_counter()?;
            if self.live.polled_change.swap(ch, Ordering::AcqRel) != ch {
                self.bump_epoch();
            }
        }
        Ok(self.live.epoch.load(Ordering::Acquire))
    }

    /// Makes every prepared key pass the full gate again before its next use.
    pub(crate) fn bump_epoch(&self) {
        self.live.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The full gate for a prepared key whose epoch is old: the pre-check (alarm, zeroized,
    /// foreign commits verified) and the key's gate, as at `C_*Init`. Not a new use: nothing is
    /// recorded unless it is refused.
    pub(crate) fn regate(&self, h: u64, usage: Usage, mech: &Mechanism) -> Result<KeyRef> {
        let c = Call::new("prepared-key").obj(h).mech(mech.ck_type());
        let r = self.precheck_at(&c).and_then(|seen| self.key_for_at(h, usage, mech, Some(seen)));
        match r {
            Ok((k, _)) => Ok(k),
            Err(e) => self.finish(&c, Err(e), format!("{usage:?}").to_lowercase()),
        }
    }

    /// A counter for the uses of a prepared key (`C_Sign` after `C_SignInit`...), aggregated
    /// into one audit record per key, caller, operation and mechanism each window; `None` when
    /// the store records no key use.
    pub(crate) fn use_counter(
        &self,
        h: u64,
        usage: Usage,
        mech: &Mechanism,
    ) -> Option<audit::UseCounter> {
        self.guard.policy.audit_key_use.class()?;
        let log = self.guard.log.as_ref()?;
        let op = match usage {
            Usage::Sign => "sign",
            Usage::Verify => "verify",
            Usage::Encrypt => "encrypt",
            Usage::Decrypt => "decrypt",
            Usage::Wrap => "wrap",
            Usage::Unwrap => "unwrap",
            Usage::Derive => "derive",
            Usage::Encapsulate => "encapsulate",
            Usage::Decapsulate => "decapsulate",
        };
        let (object, label) = self.describe(h);
        let key =
            audit::UseKey::new(&self.actor(None), 0, op, Some(mech.ck_type()), &object, &label);
        Some(log.use_counter(key))
    }

    /// The store policy on caller-chosen GCM IVs.
    pub(crate) fn check_nonce_policy(&self, mech: &Mechanism) -> Result<()> {
        if self.guard.policy.require_token_iv && mech.caller_chosen_nonce() {
            return Err(Error::MechanismParamInvalid(
                "store policy: AES-GCM IVs are generated by the token (CKG_GENERATE_RANDOM)",
            ));
        }
        Ok(())
    }

    fn actor(&self, as_user: Option<UserType>) -> Actor {
        if let Some(a) = audit::current_actor() {
            return a;
        }
        let (name, role) = match as_user.or_else(|| self.logged_in()) {
            Some(UserType::So) => ("so", "security-officer"),
            Some(UserType::User) => ("user", "crypto-user"),
            None => ("-", "public"),
        };
        Actor { name: name.into(), role: role.into(), client: read(&self.guard.client).clone() }
    }

    /// Sets the client identity recorded in audit records (the daemon passes its peer).
    pub fn set_audit_client(&self, client: &str) {
        client.clone_into(&mut super::write(&self.guard.client));
    }

    /// The security policy of this store.
    pub fn security_policy(&self) -> SecurityPolicy {
        self.guard.policy.clone()
    }

    pub(super) fn describe(&self, h: u64) -> (String, String) {
        let o = if h >= SESSION_HANDLE_BASE {
            read(&self.session_objects).get(&h).cloned()
        } else {
            read(&self.cache).objects.get(&h).cloned()
        };
        o.map_or_else(
            || (format!("handle:{h}"), String::new()),
            |o| {
                (
                    hex::encode(o.uid),
                    String::from_utf8_lossy(o.attrs.bytes(AttrType::Label).unwrap_or_default())
                        .into_owned(),
                )
            },
        )
    }

    /// Refuses service in the alarm or zeroized state; checks the tamper file.
    pub(super) fn precheck(&self, c: &Call) -> Result<()> {
        self.precheck_at(c).map(|_| ())
    }

    /// [`Token::precheck`], returning the store change counter it read, for the rest of the
    /// same call to reuse (`Token::obj_at`) instead of reading it again.
    pub(super) fn precheck_at(&self, c: &Call) -> Result<u64> {
        if self.guard.zeroized.load(Ordering::Acquire) {
            return Err(Error::Zeroized);
        }
        if let Some(f) = &self.guard.policy.tamper_file {
            let now = audit::now_ms();
            if now >= self.guard.next_file_check_ms.load(Ordering::Relaxed) {
                self.guard.next_file_check_ms.store(now + 1000, Ordering::Relaxed);
                if f.exists() {
                    self.trigger("tamper file present", c.session);
                }
            }
        }
        // Another process may have raised or cleared the alarm, zeroized the store, or changed
        // rows: a foreign commit is checked against the set commitment.
        let ch = self.store.change_counter()?;
        if self.guard.seen_change.swap(ch, Ordering::AcqRel) != ch {
            let header = self.store.header()?;
            if header.zeroized {
                self.guard.zeroized.store(true, Ordering::Release);
                return Err(Error::Zeroized);
            }
            let a = header.alarm.is_some() || self.setting("tamper_alarm")?.is_some();
            self.guard.alarm.store(a, Ordering::Release);
        }
        if let Some(ik) = self.integrity() {
            if let Err(e) = self.watch_foreign_changes(&ik, ch) {
                if let Some(why) = tamper_reason(&e) {
                    self.trigger(why, c.session);
                }
                return Err(e);
            }
        }
        if let Some(why) = self.guard.log_broken {
            if !self.guard.alarm.load(Ordering::Acquire) {
                self.trigger(why, c.session);
            }
        }
        if self.guard.alarm.load(Ordering::Acquire) {
            let so_login = c.op == "login" && c.actor == Some(UserType::So);
            if !so_login && !allowed_in_alarm(c.op) {
                return Err(Error::TamperAlarm(self.tamper_alarm().unwrap_or_default()));
            }
        }
        Ok(ch)
    }

    /// Whether the store was zeroized (by this process or another one).
    pub fn is_zeroized(&self) -> bool {
        self.guard.zeroized.load(Ordering::Acquire) || self.store.header().is_ok_and(|h| h.zeroized)
    }

    /// The active tamper alarm's reason, if any (raised with or without the master key).
    pub fn tamper_alarm(&self) -> Option<String> {
        let authenticated = self
            .setting("tamper_alarm")
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        authenticated.or_else(|| self.store.header().ok().and_then(|h| h.alarm))
    }

    fn record(&self, c: &Call, result: &'static str, detail: String) -> Result<()> {
        self.record_as(c, result, detail, audit::Durability::Durable)
    }

    fn record_as(
        &self,
        c: &Call,
        result: &'static str,
        detail: String,
        class: audit::Durability,
    ) -> Result<()> {
        let Some(log) = &self.guard.log else { return Ok(()) };
        let (object, label) =
            c.described.clone().or_else(|| c.handle.map(|h| self.describe(h))).unwrap_or_default();
        log.append_with(
            &AuditEvent {
                actor: self.actor(c.actor),
                session: c.session,
                op: c.op,
                mechanism: c.mechanism,
                object,
                label,
                result,
                detail,
            },
            class,
        )?;
        Ok(())
    }

    /// Runs `f` as the audited operation `c`: pre-checks, the record (durable before the
    /// result is returned; if it cannot be written the result is withheld and the error
    /// returned instead), and the tamper response.
    #[allow(clippy::needless_pass_by_value)] // call sites read better with the Call inline
    pub(super) fn audited<T>(&self, c: Call, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let r = self.precheck(&c).and_then(|()| f());
        self.finish(&c, r, String::new())
    }

    pub(super) fn finish<T>(&self, c: &Call, r: Result<T>, detail: String) -> Result<T> {
        if matches!(r, Err(Error::Zeroized)) {
            // Nothing more can be signed for a zeroized store; its log ends with the zeroize.
            return r;
        }
        let class = if r.is_ok() && c.is_key_use() {
            // Policy: successful key uses are durable, bounded or not recorded (refusals are
            // always durable).
            match self.guard.policy.audit_key_use.class() {
                Some(class) => class,
                None => return r,
            }
        } else {
            audit::Durability::Durable
        };
        if let Err(e) = self.record_as(c, audit::result_code(&r), detail, class) {
            // A log found rolled back or broken while appending is tampering too.
            if let Some(why) = tamper_reason(&e) {
                self.trigger(why, c.session);
            }
            return Err(e);
        }
        if let Err(e) = &r {
            if let Some(why) = tamper_reason(e) {
                self.trigger(why, c.session);
            }
            if matches!(e, Error::PinIncorrect | Error::PinLocked) && c.actor == Some(UserType::So)
            {
                let limit = self.guard.policy.so_failure_limit;
                let failures = self.store.attempts(UserType::So.attempt_name()).unwrap_or(0);
                if limit > 0 && failures >= limit {
                    self.trigger("SO PIN failures past policy", c.session);
                }
            }
        }
        r
    }

    /// Signs every item of `items` with key `h` and `mech`: the policy gate runs once, and the
    /// items' audit records (one per item, exactly as single `sign` calls would write them)
    /// are appended in **one** durable commit before any result is returned. A failing item
    /// fails the batch (every item's own result is recorded). For a front door serving batch
    /// requests (the daemon's `BatchSign`).
    pub fn sign_batch(&self, h: u64, mech: &Mechanism, items: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
        self.batch(h, Usage::Sign, mech, items.len(), |key, i| match key {
            KeyRef::Private(k) => k.sign(self.provider, mech, &items[i]),
            KeyRef::Public(_) => Err(Error::KeyTypeInconsistent),
        })
    }

    /// Encrypts every item with key `h`, each with its own mechanism (their own IVs; all of
    /// the type of the first), with the records in one durable commit as in
    /// [`Token::sign_batch`].
    pub fn encrypt_batch(&self, h: u64, items: &[(Mechanism, Vec<u8>)]) -> Result<Vec<Vec<u8>>> {
        let Some((first, _)) = items.first() else { return Ok(Vec::new()) };
        if items.iter().any(|(m, _)| m.ck_type() != first.ck_type()) {
            return Err(Error::ArgumentsBad("a batch uses one mechanism type"));
        }
        self.batch(h, Usage::Encrypt, first, items.len(), |key, i| {
            let (m, data) = &items[i];
            match key {
                KeyRef::Private(k) => k.encrypt(self.provider, m, data),
                KeyRef::Public(k) => k.encrypt(self.provider, m, data),
            }
        })
    }

    fn batch<T>(
        &self,
        h: u64,
        usage: Usage,
        mech: &Mechanism,
        count: usize,
        item: impl Fn(&KeyRef, usize) -> Result<T>,
    ) -> Result<Vec<T>> {
        let op = match usage {
            Usage::Sign => "sign",
            Usage::Encrypt => "encrypt",
            _ => return Err(Error::ArgumentsBad("batches are for sign and encrypt")),
        };
        let c = Call::new(op).obj(h).mech(mech.ck_type());
        let key = match self.precheck(&c).and_then(|()| self.key_for_unaudited(h, usage, mech)) {
            Ok(k) => k,
            Err(e) => return self.finish(&c, Err(e), String::new()),
        };
        let results: Vec<Result<T>> = (0..count).map(|i| item(&key, i)).collect();
        if let Some(log) = &self.guard.log {
            let (object, label) = self.describe(h);
            let actor = self.actor(None);
            let class = self.guard.policy.audit_key_use.class();
            let every = class.is_some();
            let evs: Vec<AuditEvent> = results
                .iter()
                .filter(|r| every || r.is_err())
                .map(|r| AuditEvent {
                    actor: actor.clone(),
                    session: 0,
                    op,
                    mechanism: Some(mech.ck_type()),
                    object: object.clone(),
                    label: label.clone(),
                    result: audit::result_code(r),
                    detail: String::new(),
                })
                .collect();
            if !evs.is_empty() {
                // No result leaves before its record is sequenced; durable before the reply
                // unless every item succeeded under the bounded key-use policy.
                let all_ok = results.iter().all(Result::is_ok);
                let class = class.filter(|_| all_ok).unwrap_or(audit::Durability::Durable);
                log.append_all_with(&evs, class)?;
            }
        }
        results.into_iter().collect()
    }

    /// An external tamper signal (daemon SIGUSR1, a tracer seen by the CLI, an enclosure
    /// sensor): recorded, then the configured response.
    pub fn tamper_signal(&self, reason: &str) {
        self.trigger(reason, 0);
    }

    /// Remembers the tamper response sealed in the store state (authentic, unlike the policy
    /// record read at open).
    pub(crate) fn note_sealed_response(&self, zeroize: bool) {
        self.guard.sealed_response.store(if zeroize { 2 } else { 1 }, Ordering::Release);
    }

    fn trigger(&self, reason: &str, session: SessionId) {
        // The sealed response once the state was opened; before that, the policy as read.
        let response = match self.guard.sealed_response.load(Ordering::Acquire) {
            2 => TamperResponse::Zeroize,
            1 => TamperResponse::Alarm,
            _ => self.guard.policy.tamper_response,
        };
        tracing::error!(reason, ?response, "tamper detected");
        let c = Call::new("tamper").session(session);
        let code = match response {
            TamperResponse::Alarm => "alarm",
            TamperResponse::Zeroize => "zeroize",
        };
        if let Err(e) = self.record(&c, code, reason.to_owned()) {
            tracing::error!(error = %e, "cannot record the tamper event");
        }
        match response {
            TamperResponse::Alarm => {
                // Unauthenticated first (works without the master key), then authenticated
                // when the store is unlocked here: deleting the header note alone does not
                // clear it.
                if let Err(e) =
                    self.store.set_header_note(HeaderNote::Alarm, Some(reason.as_bytes()))
                {
                    tracing::error!(error = %e, "cannot persist the tamper alarm");
                }
                if let Some(ik) = self.integrity() {
                    let r = self.write(&ik, |a| {
                        a.put_record(kind::SETTING, b"tamper_alarm", reason.as_bytes())
                    });
                    if let Err(e) = r {
                        tracing::error!(error = %e, "cannot authenticate the tamper alarm");
                    }
                }
                self.guard.alarm.store(true, Ordering::Release);
                self.bump_epoch();
            }
            TamperResponse::Zeroize => {
                if let Err(e) = self.zeroize_now() {
                    tracing::error!(error = %e, "zeroize after tamper failed");
                }
            }
        }
    }

    fn zeroize_now(&self) -> Result<()> {
        if let Some(log) = &self.guard.log {
            // The last checkpoint the audit key ever signs covers the zeroize record, and the
            // log takes no record after it (refused requests included), so it keeps verifying.
            if let Err(e) = log.finalize() {
                tracing::error!(error = %e, "final audit checkpoint failed");
            }
            log.set_signer(None);
        }
        self.store.zeroize()?;
        self.guard.zeroized.store(true, Ordering::Release);
        self.bump_epoch();
        self.lock_unaudited();
        Ok(())
    }

    /// The security policy, authenticated (a missing or forged policy is an integrity
    /// failure, never a default).
    pub(super) fn policy_verified(&self, ik: &IntegrityKeys) -> Result<SecurityPolicy> {
        let pj = self
            .verified_setting(ik, "policy")?
            .ok_or(Error::Integrity("security policy missing"))?;
        serde_json::from_slice(&pj).map_err(|_| Error::Integrity("security policy malformed"))
    }

    /// After a successful unlock: the policy must be the authenticated one (the guard was
    /// opened with the unauthenticated copy), an alarm raised without the master key is made
    /// authentic, and the audit signer is installed.
    fn after_login(&self) -> Result<()> {
        let (vault, ik) = {
            let a = read(&self.auth);
            match (&a.vault, &a.integrity) {
                (Some(v), Some(i)) => (v.clone(), i.clone()),
                _ => return Ok(()),
            }
        };
        let policy = self.policy_verified(&ik)?;
        if policy != self.guard.policy {
            return Err(Error::Integrity("security policy changed since the store was opened"));
        }
        if let Some(reason) = self.store.header()?.alarm {
            if self.verified_setting(&ik, "tamper_alarm")?.is_none() {
                self.write(&ik, |a| {
                    a.put_record(kind::SETTING, b"tamper_alarm", reason.as_bytes())
                })?;
            }
        }
        let Some(log) = &self.guard.log else { return Ok(()) };
        if log.signer().is_some() {
            return Ok(());
        }
        let sealed = self
            .verified_setting(&ik, "audit_key")?
            .ok_or(Error::Integrity("audit key missing"))?;
        let der = vault.open_secret(&AUDIT_KEY_UID, &sealed)?;
        log.set_signer(Some(Arc::new(AuditSigner::from_pkcs8(der.expose_secret())?)));
        Ok(())
    }

    fn require_so(&self) -> Result<()> {
        if self.logged_in() == Some(UserType::So) {
            Ok(())
        } else {
            Err(Error::UserNotLoggedIn)
        }
    }

    fn log(&self) -> Result<&AuditLog> {
        self.guard.log.as_ref().ok_or(Error::NotSupported("the audit log is not open"))
    }

    // --- administrative operations -------------------------------------------------------

    /// `C_Login`: authenticates `user` with `pin` and unlocks the master key. Failures are
    /// audited; SO failures past the policy limit are tampering.
    pub fn login(&self, user: UserType, pin: &Pin) -> Result<()> {
        let c = Call { actor: Some(user), ..Call::new("login") };
        let r = self.precheck(&c).and_then(|()| self.login_unaudited(user, pin));
        let r = r.and_then(|()| {
            self.after_login().inspect_err(|_| {
                self.lock_unaudited();
            })
        });
        self.finish(&c, r, String::new())
    }

    /// Quorum policy: installs a master key reconstructed from unseal shares (see
    /// `unseal_unaudited` in auth.rs); audited as `unseal`, and installs the audit signer.
    pub fn unseal(&self, vault: Vault, ik: IntegrityKeys) -> Result<()> {
        let c = Call::new("unseal");
        let r = self.precheck(&c).and_then(|()| self.unseal_unaudited(vault, ik));
        let r = r.and_then(|()| {
            self.after_login().inspect_err(|_| {
                self.lock_unaudited();
            })
        });
        self.finish(&c, r, String::new())
    }

    /// `C_Logout`: forgets who is logged in and wipes every parsed key from the cache.
    pub fn logout(&self) -> Result<()> {
        let c = Call { actor: self.logged_in(), ..Call::new("logout") };
        self.audited(c, || self.logout_unaudited())
    }

    /// Wipes the master key, the audit key and every cache from memory (`C_Finalize`).
    pub fn lock(&self) {
        if let Some(log) = &self.guard.log {
            log.set_signer(None);
        }
        self.lock_unaudited();
    }

    /// `C_InitPIN`: the logged-in SO sets the user PIN (this also unlocks a locked user).
    pub fn init_pin(&self, new_pin: &Pin) -> Result<()> {
        self.audited(Call::new("init-pin"), || self.init_pin_unaudited(new_pin))
    }

    /// Re-checks the logged-in user's PIN (`C_Login(CKU_CONTEXT_SPECIFIC)` before using a
    /// CKA_ALWAYS_AUTHENTICATE key). Changes nothing but the failure counter.
    pub fn check_pin(&self, pin: &Pin) -> Result<()> {
        let c = Call { actor: self.logged_in(), ..Call::new("check-pin") };
        self.audited(c, || self.check_pin_unaudited(pin))
    }

    /// `C_SetPIN`: changes the PIN of the logged-in user (or the normal user's when nobody is
    /// logged in) after checking the old one.
    pub fn set_pin(&self, old_pin: &Pin, new_pin: &Pin) -> Result<()> {
        let who = self.logged_in().unwrap_or(UserType::User);
        let c = Call { actor: Some(who), ..Call::new("set-pin") };
        self.audited(c, || self.set_pin_unaudited(old_pin, new_pin))
    }

    /// Zeroizes the store (SO only): records the event, signs a last checkpoint covering it,
    /// destroys every master-key wrapping, every object and the sealed audit key, rewrites the
    /// file, and wipes the master key and caches from memory. Irreversible.
    pub fn zeroize(&self) -> Result<()> {
        let c = Call::new("zeroize");
        self.precheck(&c)?;
        if let Err(e) = self.require_so() {
            return self.finish(&c, Err(e), String::new());
        }
        self.record(&c, "ok", String::new())?;
        self.zeroize_now()
    }

    /// Zeroizes a quorum-policy store on behalf of the front door that holds it unsealed and
    /// has authenticated its own security officer (and any quorum approvals): the daemon.
    /// `detail` (who approved) goes into the audit record. Same effect as [`Token::zeroize`].
    pub fn zeroize_unsealed(&self, detail: String) -> Result<()> {
        let c = Call::new("zeroize");
        self.precheck(&c)?;
        let allowed = self.store.header().and_then(|m| {
            if m.policy != crate::seal::QUORUM_POLICY {
                Err(Error::ArgumentsBad("store does not use the quorum unlock policy"))
            } else if read(&self.auth).vault.is_none() {
                Err(Error::UserNotLoggedIn)
            } else if self.who().role != Some(crate::kernel::Role::SecurityOfficer) {
                Err(Error::ActionProhibited("only the security officer zeroizes"))
            } else {
                Ok(())
            }
        });
        if let Err(e) = allowed {
            return self.finish(&c, Err(e), String::new());
        }
        self.record(&c, "ok", detail)?;
        self.zeroize_now()
    }

    /// Clears an active tamper alarm (SO only). Refused while the tamper file is still
    /// present or the audit log is broken.
    pub fn clear_tamper(&self) -> Result<()> {
        self.audited(Call::new("tamper-clear"), || {
            self.require_so()?;
            self.clear_tamper_unaudited()
        })
    }

    /// [`Token::clear_tamper`] for the front door that holds a quorum store unsealed and has
    /// authenticated its own security officer (the daemon).
    pub fn clear_tamper_unsealed(&self) -> Result<()> {
        self.audited(Call::new("tamper-clear"), || {
            if self.store.header()?.policy != crate::seal::QUORUM_POLICY {
                return Err(Error::ArgumentsBad("store does not use the quorum unlock policy"));
            }
            if self.who().role != Some(crate::kernel::Role::SecurityOfficer) {
                return Err(Error::ActionProhibited("only the security officer clears an alarm"));
            }
            self.clear_tamper_unaudited()
        })
    }

    fn clear_tamper_unaudited(&self) -> Result<()> {
        {
            if self.guard.policy.tamper_file.as_ref().is_some_and(|f| f.exists()) {
                return Err(Error::ActionProhibited("the tamper file is still present"));
            }
            if self.guard.log_broken.is_some() {
                return Err(Error::Integrity("the audit log is broken; restore it first"));
            }
            let (_, ik) = self.require_vault()?;
            self.write(&ik, |a| a.delete_record(kind::SETTING, b"tamper_alarm").map(|_| ()))?;
            self.store.set_header_note(HeaderNote::Alarm, None)?;
            self.guard.alarm.store(false, Ordering::Release);
            Ok(())
        }
    }

    // --- audit log access (SO) ------------------------------------------------------------

    /// Exports the log from `since` as JSON lines, ending with a fresh signed checkpoint over
    /// every record (SO only; on a zeroized store, without login and without a new checkpoint:
    /// the last one was signed at zeroization).
    pub fn audit_export(&self, since: u64) -> Result<Vec<String>> {
        self.audit_export_iter(since)?.map(|l| l.and_then(|l| audit::line_json(&l))).collect()
    }

    /// [`Token::audit_export`] as a stream of lines read in constant memory (for exports of
    /// any size: the CLI writes them to a file, the daemon streams them).
    pub fn audit_export_iter(&self, since: u64) -> Result<audit::ExportIter> {
        let zeroized = self.store.header()?.zeroized;
        if !zeroized {
            self.audited(Call::new("audit-export"), || self.require_so())?;
            self.tamper_check(self.log()?.checkpoint())?;
        }
        self.tamper_check(self.log()?.export_iter(since))
    }

    /// The audit public key (raw Ed25519; SO only, or anyone on a zeroized store).
    pub fn audit_public_key(&self) -> Result<Vec<u8>> {
        let header = self.store.header()?;
        if header.zeroized {
            return header.audit_pub.ok_or(Error::Zeroized);
        }
        self.audited(Call::new("audit-public-key"), || {
            self.require_so()?;
            Ok(self.log()?.signer().ok_or(Error::UserNotLoggedIn)?.public_key())
        })
    }

    /// An inclusion proof of record `seq` in a fresh checkpoint (SO only).
    pub fn audit_prove(&self, seq: u64) -> Result<Proof> {
        self.audited(Call::new("audit-prove"), || self.require_so())?;
        self.tamper_check(self.log()?.prove(seq))
    }

    /// Signs a checkpoint now (any logged-in user).
    pub fn audit_checkpoint(&self) -> Result<Checkpoint> {
        self.tamper_check(self.log()?.checkpoint())
    }

    /// Applies the tamper response to a tamper-class error of an unaudited step (the audit
    /// log's own verification before it signs).
    fn tamper_check<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if let Some(why) = tamper_reason(e) {
                self.trigger(
                    if matches!(e, Error::Integrity(_)) { "audit chain break" } else { why },
                    0,
                );
            }
        }
        r
    }

    /// The audit log, for a front door (the daemon) that records its own events.
    pub fn audit_log(&self) -> Option<&AuditLog> {
        self.guard.log.as_ref()
    }
}

impl Token<SqliteStore> {
    /// `C_InitToken` on an existing store: checks the SO PIN, then replaces the store with a
    /// fresh one. The old audit log gets a `reinit` record and is kept beside the store as
    /// `<store>-audit.<old store id>`; the new store starts a new log.
    pub fn reinit(path: &Path, label: &str, so_pin: &Pin) -> Result<()> {
        if !path.exists() {
            return Self::init(path, label, so_pin, None);
        }
        let old_uid = SqliteStore::open(path)?.header()?.store_uid;
        let r = Self::reinit_unaudited(path, label, so_pin);
        let ev = AuditEvent {
            actor: Actor {
                name: "so".into(),
                role: "security-officer".into(),
                client: process_identity(),
            },
            op: "reinit",
            result: audit::result_code(&r),
            ..AuditEvent::default()
        };
        let old_log = audit::log_path_for(path);
        if r.is_ok() {
            if let Ok(l) = AuditLog::open(path, old_uid, false, audit::CheckpointPolicy::default())
            {
                l.append(&ev)?;
            }
            let mut kept = old_log.as_os_str().to_owned();
            kept.push(format!(".{}", hex::encode(old_uid)));
            if old_log.exists() {
                std::fs::rename(&old_log, PathBuf::from(kept)).map_err(|e| {
                    Error::Store(format!("cannot keep the old audit log: {}", e.kind()))
                })?;
            }
            let tmp_log = audit::log_path_for(&path.with_extension("reinit-tmp"));
            std::fs::rename(tmp_log, &old_log)
                .map_err(|e| Error::Store(format!("cannot install the audit log: {}", e.kind())))?;
        } else if let Ok(t) = Self::open(path) {
            let c = Call { actor: Some(UserType::So), ..Call::new("reinit") };
            t.record(&c, ev.result, String::new())?;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::AttrValue;
    use crate::audit::error_code;
    use crate::mechanism::KeyGenMechanism;

    #[test]
    fn every_error_has_a_code_and_tamper_errors_are_recognized() {
        assert_eq!(error_code(&Error::PinIncorrect), "pin-incorrect");
        assert!(tamper_reason(&Error::Integrity("x")).is_some());
        assert!(tamper_reason(&Error::Rollback { found: 1, seen: 2 }).is_some());
        assert!(tamper_reason(&Error::PinIncorrect).is_none());
    }

    #[test]
    fn self_test_failure_triggers_the_response() {
        use crate::crypto::{Fault, Provider};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let pin = Pin::new(b"pin-12345".to_vec());
        let opts = InitOptions {
            kdf: KdfParams { m_cost: 256, t_cost: 1, p_cost: 1 },
            policy: SecurityPolicy::default(),
        };
        Token::init_with_options(&path, "t", &pin, Some(&pin), &opts).unwrap();
        let mut t = Token::open(&path).unwrap();
        t.login(UserType::User, &pin).unwrap();
        // A provider whose pairwise-consistency test fails: key generation enters the error
        // state, which is a tamper trigger.
        std::sync::Arc::get_mut(&mut t.0).unwrap().provider =
            Box::leak(Box::new(Provider::with_fault(Fault::Pct)));
        let r = t.generate_key_pair(
            KeyGenMechanism::EcEdwardsKeyPairGen,
            &[(AttrType::Token, AttrValue::Bool(true))],
            &[(AttrType::Token, AttrValue::Bool(true))],
            1,
        );
        assert!(matches!(r, Err(Error::ErrorState(_))), "{r:?}");
        assert!(t.tamper_alarm().is_some_and(|a| a.contains("self-test")));
        assert!(matches!(t.random(&mut [0; 4]), Err(Error::TamperAlarm(_))));
    }
}
