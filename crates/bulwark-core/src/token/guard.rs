//! The one dispatch point of the embedded token: every public operation of [`Token`] passes
//! through [`Token::audited`], which refuses service while a tamper alarm is active, runs the
//! operation, appends its audit record (durably, before the result is returned), and turns
//! integrity failures, rollbacks, self-test failures, SO PIN failures past policy and a
//! configured tamper file into the configured tamper response (`alarm` or `zeroize`).
//!
//! The operation bodies live in `auth.rs`, `objects.rs` and `ops.rs` as `*_unaudited`
//! functions; the public, audited names of the administrative and audit operations are defined
//! in `admin.rs`, those of object management and cryptography in `entry.rs`, batches in
//! `batch.rs`, the policy in `policy.rs`. Nothing here ever records key
//! material, plaintext or PINs: records carry names, ids, labels and result codes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

use super::policy::{policy_of, SecurityPolicy, TamperResponse};
use super::state::kind;
use super::{outbox, read, KeyRef, SessionId, Token, Usage, UserType, SESSION_HANDLE_BASE};
use crate::attr::AttrType;
use crate::audit::{self, Actor, AuditEvent, AuditLog};
use crate::error::{Error, Result};
use crate::mechanism::Mechanism;
use crate::store::{HeaderNote, Store};

/// Audit and tamper state of one open token.
pub(crate) struct Guard {
    pub(super) log: Option<AuditLog>,
    /// Why the log could not be opened (missing, foreign, rolled back), if so.
    pub(super) log_broken: Option<&'static str>,
    pub(crate) policy: SecurityPolicy,
    pub(super) alarm: AtomicBool,
    pub(super) zeroized: AtomicBool,
    /// The tamper response sealed in the store state: 0 not yet seen, 1 alarm, 2 zeroize.
    sealed_response: std::sync::atomic::AtomicU8,
    seen_change: AtomicU64,
    next_file_check_ms: AtomicU64,
    client: RwLock<String>,
    /// The use counters of the bounded class, one per key, operation, mechanism, session and
    /// principal, each with the epoch it was made under (a newer epoch makes a new one: the
    /// object may have been renamed or its handle reused).
    uses: RwLock<HashMap<UseTag, (u64, audit::UseCounter)>>,
}

/// At most this many cached use counters; past it the cache starts afresh (the dropped
/// counters are still drained: no count is lost).
const USE_CACHE_MAX: usize = 4096;

/// What one cached use counter counts (the cheap part of an [`audit::UseKey`]).
#[derive(Clone, PartialEq, Eq, Hash)]
struct UseTag {
    handle: Option<u64>,
    op: &'static str,
    mechanism: Option<u64>,
    session: SessionId,
    who: Who,
}

/// The principal of a use: this process's login state (embedded), or the actor a front door
/// named for the call (the daemon).
#[derive(Clone, PartialEq, Eq, Hash)]
enum Who {
    Local(Option<UserType>),
    Front(Actor),
}

pub(super) fn process_identity() -> String {
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
            uses: RwLock::new(HashMap::new()),
        }
    }
}

/// Whether an operation may run while a tamper alarm is active.
fn allowed_in_alarm(op: &str) -> bool {
    matches!(
        op,
        "logout" | "audit-export" | "audit-public-key" | "audit-prove" | "tamper-clear" | "zeroize"
    )
}

/// Why an error is tampering, if it is.
pub(super) fn tamper_reason(e: &Error) -> Option<&'static str> {
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
                // Successful lookups and random generation are as frequent as key uses and
                // change nothing (C_GenerateRandom may be an application's RNG).
                | "find"
                | "random"
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
        let r =
            self.precheck_at(&c).and_then(|seen| self.key_for_at(h, usage, mech, Some(seen), 0));
        match r {
            Ok((k, _)) => {
                outbox::end();
                Ok(k)
            }
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
        self.cached_counter(Some(h), op, Some(mech.ck_type()), 0, None)
    }

    /// The cached counter of `op` on `handle` by the current principal (made and registered
    /// with the log on first use, and again after the epoch moved); `None` without a log.
    pub(super) fn cached_counter(
        &self,
        handle: Option<u64>,
        op: &'static str,
        mechanism: Option<u64>,
        session: SessionId,
        as_user: Option<UserType>,
    ) -> Option<audit::UseCounter> {
        let log = self.guard.log.as_ref()?;
        let who = match audit::current_actor() {
            Some(a) => Who::Front(a),
            None => Who::Local(as_user.or_else(|| self.logged_in())),
        };
        let tag = UseTag { handle, op, mechanism, session, who };
        let epoch = self.live.epoch.load(Ordering::Acquire);
        if let Some((e, c)) = read(&self.guard.uses).get(&tag) {
            if *e == epoch {
                return Some(c.clone());
            }
        }
        let (object, label) = handle.map(|h| self.describe(h)).unwrap_or_default();
        let actor = match &tag.who {
            Who::Front(a) => a.clone(),
            Who::Local(u) => self.actor(*u),
        };
        let c =
            log.use_counter(audit::UseKey::new(&actor, session, op, mechanism, &object, &label));
        let mut uses = super::write(&self.guard.uses);
        if uses.len() >= USE_CACHE_MAX {
            uses.clear();
        }
        uses.insert(tag, (epoch, c.clone()));
        Some(c)
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

    pub(super) fn actor(&self, as_user: Option<UserType>) -> Actor {
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
        super::write(&self.guard.uses).clear();
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
        outbox::begin(c.op, c.session);
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

    pub(super) fn record(&self, c: &Call, result: &'static str, detail: String) -> Result<()> {
        self.record_as(c, result, detail, audit::Durability::Durable)
    }

    pub(super) fn record_as(
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

    /// Counts the successful key use `c` (bounded class) on its cached counter.
    fn count_call(&self, c: &Call) -> Result<()> {
        let Some(log) = &self.guard.log else { return Ok(()) };
        log.check_usable()?;
        if let Some(n) = self.cached_counter(c.handle, c.op, c.mechanism, c.session, c.actor) {
            n.hit();
        }
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
        let outbox = outbox::end();
        if matches!(r, Err(Error::Zeroized)) {
            // Nothing more can be signed for a zeroized store; its log ends with the zeroize.
            return r;
        }
        let detail = match &outbox {
            Some(id) => outbox::mark(detail, id),
            None => detail,
        };
        let class = if r.is_ok() && c.is_key_use() && outbox.is_none() {
            // Policy: successful key uses are durable, bounded or not recorded (refusals are
            // always durable).
            match self.guard.policy.audit_key_use.class() {
                Some(audit::Durability::Bounded) if c.described.is_none() => {
                    // Bounded: counted, and written as an aggregated `use-count` record
                    // within the window (a broken log refuses the use as an append would).
                    return match self.count_call(c) {
                        Ok(()) => r,
                        Err(e) => {
                            if let Some(why) = tamper_reason(&e) {
                                self.trigger(why, c.session);
                            }
                            Err(e)
                        }
                    };
                }
                Some(class) => class,
                None => return r,
            }
        } else {
            audit::Durability::Durable
        };
        if let Err(e) = self.record_as(c, audit::result_code(&r), detail, class) {
            // A log found rolled back or broken while appending is tampering too. A committed
            // change keeps its outbox row: the next unlock records it.
            if let Some(why) = tamper_reason(&e) {
                self.trigger(why, c.session);
            }
            if let Some(id) = outbox {
                self.outbox_failed(id);
            }
            return Err(e);
        }
        if let Some(id) = outbox {
            self.outbox_done(id);
        }
        self.outbox_retry();
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

    pub(super) fn trigger(&self, reason: &str, session: SessionId) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::AttrValue;
    use crate::audit::error_code;
    use crate::hierarchy::KdfParams;
    use crate::mechanism::KeyGenMechanism;
    use crate::secret::Pin;
    use crate::token::InitOptions;

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
