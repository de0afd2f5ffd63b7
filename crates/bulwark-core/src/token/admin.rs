//! The administrative operations of the embedded token (login, unseal, PINs, zeroize, tamper
//! clear), the audit log's creation and the SO's access to it. Each runs through the dispatch
//! in guard.rs.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::guard::{tamper_reason, Call};
use super::policy::SecurityPolicy;
use super::state::kind;
use super::{outbox, read, Token, UserType};
use crate::audit::{self, Actor, AuditEvent, AuditLog, AuditSigner, Checkpoint, Proof};
use crate::error::{Error, Result};
use crate::hierarchy::{IntegrityKeys, Vault};
use crate::secret::Pin;
use crate::store::{HeaderNote, SqliteStore, Store};

/// The reserved uid under which the audit signing key is sealed (never an object handle).
const AUDIT_KEY_UID: [u8; 16] = *b"bulwark-auditkey";

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
            client: super::guard::process_identity(),
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
    // Through the provider: error state, self-tests and the pairwise check on the new key.
    let provider = crate::crypto::Provider::get()?;
    let key = provider.generate(crate::crypto::KeySpec::Ed25519)?;
    let der = key.material.expose_secret();
    let signer = AuditSigner::from_pkcs8(der)?;
    let mut nonce = [0u8; 12];
    provider.random(&mut nonce)?;
    let sealed = vault.seal_secret(&AUDIT_KEY_UID, nonce, der)?;
    Ok((signer, sealed))
}

impl<S: Store> Token<S> {
    pub(super) fn zeroize_now(&self) -> Result<()> {
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

    /// After a successful unlock: the policy must be the authenticated one (the guard was
    /// opened with the unauthenticated copy), an alarm raised without the master key is made
    /// authentic, and the audit signer is installed.
    pub(super) fn after_login(&self) -> Result<()> {
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
        if log.signer().is_none() {
            let sealed = self
                .verified_setting(&ik, "audit_key")?
                .ok_or(Error::Integrity("audit key missing"))?;
            let der = vault.open_secret(&AUDIT_KEY_UID, &sealed)?;
            log.set_signer(Some(Arc::new(AuditSigner::from_pkcs8(der.expose_secret())?)));
        }
        // Changes committed without their audit record (a crash in between) are recorded now.
        self.recover_outbox_with(&ik, outbox::OUTBOX_GRACE)?;
        Ok(())
    }

    pub(super) fn require_so(&self) -> Result<()> {
        if self.logged_in() == Some(UserType::So) {
            Ok(())
        } else {
            Err(Error::UserNotLoggedIn)
        }
    }

    pub(super) fn log(&self) -> Result<&AuditLog> {
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
        self.finish(&c, r, String::new()).inspect(|()| self.destructions_after_unlock())
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
        self.finish(&c, r, String::new()).inspect(|()| self.destructions_after_unlock())
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
    pub(super) fn tamper_check<T>(&self, r: Result<T>) -> Result<T> {
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
                client: super::guard::process_identity(),
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
