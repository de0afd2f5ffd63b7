//! Store creation, login and PIN management for the `keyslots` unlock policy.
//!
//! A wrong PIN is recorded before the error returns; after [`MAX_PIN_FAILURES`] consecutive
//! failures the PIN is locked (the SO unlocks the user by setting a new user PIN). A successful
//! login verifies the store generation's MAC and the anti-rollback mark before anything is
//! served. The public, audited entry points are in `guard.rs`; the bodies here are
//! `*_unaudited`.

use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::{read, write, Token, UserType, MAX_PIN_FAILURES};
use crate::crypto::Provider;
use crate::error::{Error, Result};
use crate::hierarchy::{self, IntegrityKeys, KdfParams, MasterKey, Vault};
use crate::secret::Pin;
use crate::store::{GenerationBump, SqliteStore, Store, StoreMeta};

fn rand_array<const N: usize>(p: &Provider) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    p.random(&mut b)?;
    Ok(b)
}

pub(super) fn init_store(
    p: &Provider,
    path: &Path,
    label: &str,
    so_pin: &Pin,
    user_pin: Option<&Pin>,
    kdf: KdfParams,
    policy: &super::guard::SecurityPolicy,
) -> Result<()> {
    if label.is_empty() || label.len() > 32 {
        return Err(Error::ArgumentsBad("token label must be 1 to 32 bytes"));
    }
    let store_uid: [u8; 16] = rand_array(p)?;
    let mut mk_bytes: [u8; 32] = rand_array(p)?;
    let mk = MasterKey::from_random(mk_bytes);
    zeroize::Zeroize::zeroize(&mut mk_bytes);
    let mut slots = vec![hierarchy::wrap_mk(
        &mk,
        so_pin,
        &store_uid,
        UserType::So.slot(),
        kdf,
        rand_array(p)?,
        rand_array(p)?,
    )?];
    if let Some(u) = user_pin {
        slots.push(hierarchy::wrap_mk(
            &mk,
            u,
            &store_uid,
            UserType::User.slot(),
            kdf,
            rand_array(p)?,
            rand_array(p)?,
        )?);
    }
    let vault = Vault::new(mk, store_uid);
    let ik = vault.integrity_keys()?;
    let meta = StoreMeta {
        store_uid,
        label: label.to_owned(),
        policy: "keyslots".to_owned(),
        generation: 1,
        generation_mac: ik.generation_mac(1),
        zeroized: false,
    };
    let store = SqliteStore::create(path, &meta, &slots)?;
    crate::rollback::record(&store_uid, 1);
    // The audit key, the audit log and the security policy (guard.rs).
    super::guard::after_init(&store, store_uid, &vault, &ik, policy)
}

impl Token {
    /// `C_InitToken` on an existing store: checks the SO PIN, then replaces the store with a
    /// fresh one (new master key, SO PIN only; every object is gone). A missing store is simply
    /// created.
    pub(super) fn reinit_unaudited(path: &Path, label: &str, so_pin: &Pin) -> Result<()> {
        if !path.exists() {
            return Self::init(path, label, so_pin, None);
        }
        let old = Self::open(path)?;
        let slot = old
            .store
            .keyslot(UserType::So.slot())?
            .ok_or(Error::Integrity("SO keyslot missing"))?;
        if slot.failures >= MAX_PIN_FAILURES {
            return Err(Error::PinLocked);
        }
        if let Err(e) = hierarchy::unwrap_mk(&slot, so_pin, &old.store_uid) {
            if matches!(e, Error::PinIncorrect) {
                old.store.record_failure(UserType::So.slot())?;
            }
            return Err(e);
        }
        let kdf = KdfParams { m_cost: slot.m_cost, t_cost: slot.t_cost, p_cost: slot.p_cost };
        let old_policy = old.security_policy();
        drop(old);
        let _ =
            std::fs::remove_file(crate::audit::log_path_for(&path.with_extension("reinit-tmp")));
        // Build the new store beside the old one, then swap it in with one rename.
        let tmp = path.with_extension("reinit-tmp");
        let _ = std::fs::remove_file(&tmp);
        let policy = old_policy;
        init_store(Provider::get()?, &tmp, label, so_pin, None, kdf, &policy)?;
        for ext in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(ext);
            let _ = std::fs::remove_file(side);
        }
        std::fs::rename(&tmp, path)
            .map_err(|e| Error::Store(format!("cannot replace the store: {}", e.kind())))?;
        Ok(())
    }

    /// `C_Login`: authenticates `user` with `pin` and unlocks the master key.
    pub(super) fn login_unaudited(&self, user: UserType, pin: &Pin) -> Result<()> {
        self.provider.check()?;
        {
            let a = read(&self.auth);
            match a.user {
                Some(u) if u == user => return Err(Error::UserAlreadyLoggedIn),
                Some(_) => return Err(Error::AnotherUserLoggedIn),
                None => {}
            }
        }
        let meta = self.store.meta()?;
        if meta.zeroized {
            return Err(Error::Zeroized);
        }
        let slot = self.store.keyslot(user.slot())?.ok_or(match user {
            UserType::User => Error::UserPinNotInitialized,
            UserType::So => Error::Integrity("SO keyslot missing"),
        })?;
        if slot.failures >= MAX_PIN_FAILURES {
            return Err(Error::PinLocked);
        }
        // Fast path: this process already ran Argon2id for this PIN (DESIGN.md §9).
        let cached = {
            let a = read(&self.auth);
            match (&a.pin_tags[usize::from(user.slot())], &a.integrity, &a.vault) {
                (Some(tag), Some(ik), Some(_)) => {
                    Some(bool::from(ik.pin_tag(user.slot(), pin).ct_eq(tag)))
                }
                _ => None,
            }
        };
        let (vault, ik) = if cached == Some(true) {
            let a = read(&self.auth);
            match (&a.vault, &a.integrity) {
                (Some(v), Some(i)) => (v.clone(), i.clone()),
                _ => return Err(Error::Internal("login cache")),
            }
        } else {
            match hierarchy::unwrap_mk(&slot, pin, &self.store_uid) {
                Ok(mk) => {
                    let v = Vault::new(mk, self.store_uid);
                    let ik = v.integrity_keys()?;
                    (Arc::new(v), Arc::new(ik))
                }
                Err(Error::PinIncorrect) => {
                    self.store.record_failure(user.slot())?;
                    return Err(Error::PinIncorrect);
                }
                Err(e) => return Err(e),
            }
        };
        // The store generation must authenticate and must not be older than any we saw.
        self.check_generation(&ik, meta.generation, &meta.generation_mac)?;
        if slot.failures != 0 {
            self.store.clear_failures(user.slot())?;
        }
        let mut a = write(&self.auth);
        if a.user.is_some() {
            return Err(Error::UserAlreadyLoggedIn);
        }
        a.pin_tags[usize::from(user.slot())] = Some(ik.pin_tag(user.slot(), pin));
        a.user = Some(user);
        a.vault = Some(vault);
        a.integrity = Some(ik);
        Ok(())
    }

    fn check_generation(&self, ik: &IntegrityKeys, generation: u64, mac: &[u8]) -> Result<()> {
        ik.verify_generation(generation, mac)?;
        let seen = self.generation_seen.load(std::sync::atomic::Ordering::Acquire);
        if generation < seen {
            return Err(Error::Rollback { found: generation, seen });
        }
        self.note_generation(generation);
        Ok(())
    }

    pub(super) fn note_generation(&self, generation: u64) {
        let prev = self.generation_seen.fetch_max(generation, std::sync::atomic::Ordering::AcqRel);
        if generation > prev {
            crate::rollback::record(&self.store_uid, generation);
        }
    }

    /// Prepares a generation bump for a write: verifies the current generation (integrity and
    /// rollback) and MACs the next one.
    pub(super) fn bump(&self, ik: &IntegrityKeys) -> Result<GenerationBump> {
        let meta = self.store.meta()?;
        if meta.zeroized {
            return Err(Error::Zeroized);
        }
        self.check_generation(ik, meta.generation, &meta.generation_mac)?;
        let next = meta.generation + 1;
        Ok(GenerationBump { expected: meta.generation, next, mac: ik.generation_mac(next) })
    }

    /// Runs an authenticated store write with a generation bump, retrying (with a fresh bump)
    /// when another process committed between the bump and the write; records the new
    /// generation on success.
    pub(super) fn with_bump<T>(
        &self,
        ik: &IntegrityKeys,
        write: impl Fn(&GenerationBump) -> Result<T>,
    ) -> Result<T> {
        let mut attempt: u32 = 0;
        loop {
            let b = self.bump(ik)?;
            match write(&b) {
                Ok(v) => {
                    self.note_generation(b.next);
                    return Ok(v);
                }
                Err(Error::Store(m)) if m == crate::store::CONCURRENT_CHANGE && attempt < 50 => {
                    attempt += 1;
                    // Back off a little, spread by process id, before retrying.
                    let jitter = u64::from(std::process::id() % 7 + attempt);
                    std::thread::sleep(std::time::Duration::from_millis(jitter));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `C_Logout`: forgets who is logged in and wipes every parsed key from the cache. The
    /// master key stays unlocked in this process so that the next login with the same PIN is a
    /// constant-time check instead of another Argon2id run.
    pub(super) fn logout_unaudited(&self) -> Result<()> {
        let mut a = write(&self.auth);
        if a.user.take().is_none() {
            return Err(Error::UserNotLoggedIn);
        }
        drop(a);
        let mut c = write(&self.cache);
        c.keys.clear();
        c.objects.clear();
        Ok(())
    }

    /// Wipes the master key and every cache from memory (`C_Finalize`, shutdown).
    pub(super) fn lock_unaudited(&self) {
        *write(&self.auth) = super::Auth::default();
        let mut c = write(&self.cache);
        c.keys.clear();
        c.objects.clear();
        super::write(&self.session_objects).clear();
    }

    /// `C_InitPIN`: the logged-in SO sets the user PIN (this also unlocks a locked user).
    pub(super) fn init_pin_unaudited(&self, new_pin: &Pin) -> Result<()> {
        let (vault, ik) = {
            let a = read(&self.auth);
            if a.user != Some(UserType::So) {
                return Err(Error::UserNotLoggedIn);
            }
            (
                a.vault.clone().ok_or(Error::UserNotLoggedIn)?,
                a.integrity.clone().ok_or(Error::UserNotLoggedIn)?,
            )
        };
        self.rewrap(&vault, &ik, UserType::User, new_pin)
    }

    /// `C_SetPIN`: changes the PIN of the logged-in user (or, when nobody is logged in, the
    /// normal user's), after checking the old one.
    /// Checks the logged-in user's PIN without changing anything but the failure counter
    /// (context-specific login for CKA_ALWAYS_AUTHENTICATE keys). A PIN this process already
    /// verified is checked in constant time against its keyed digest; otherwise Argon2id runs.
    pub(super) fn check_pin_unaudited(&self, pin: &Pin) -> Result<()> {
        let user = self.logged_in().ok_or(Error::UserNotLoggedIn)?;
        let slot = self.store.keyslot(user.slot())?.ok_or(Error::UserPinNotInitialized)?;
        if slot.failures >= MAX_PIN_FAILURES {
            return Err(Error::PinLocked);
        }
        let cached = {
            let a = read(&self.auth);
            match (&a.pin_tags[usize::from(user.slot())], &a.integrity) {
                (Some(tag), Some(ik)) => Some(bool::from(ik.pin_tag(user.slot(), pin).ct_eq(tag))),
                _ => None,
            }
        };
        let ok = match cached {
            Some(ok) => ok,
            None => match hierarchy::unwrap_mk(&slot, pin, &self.store_uid) {
                Ok(_) => true,
                Err(Error::PinIncorrect) => false,
                Err(e) => return Err(e),
            },
        };
        if !ok {
            self.store.record_failure(user.slot())?;
            return Err(Error::PinIncorrect);
        }
        if slot.failures != 0 {
            self.store.clear_failures(user.slot())?;
        }
        Ok(())
    }

    pub(super) fn set_pin_unaudited(&self, old_pin: &Pin, new_pin: &Pin) -> Result<()> {
        let user = self.logged_in().unwrap_or(UserType::User);
        let slot = self.store.keyslot(user.slot())?.ok_or(Error::UserPinNotInitialized)?;
        if slot.failures >= MAX_PIN_FAILURES {
            return Err(Error::PinLocked);
        }
        let mk = match hierarchy::unwrap_mk(&slot, old_pin, &self.store_uid) {
            Ok(mk) => mk,
            Err(Error::PinIncorrect) => {
                self.store.record_failure(user.slot())?;
                return Err(Error::PinIncorrect);
            }
            Err(e) => return Err(e),
        };
        let vault = Vault::new(mk, self.store_uid);
        let ik = vault.integrity_keys()?;
        self.rewrap(&vault, &ik, user, new_pin)?;
        write(&self.auth).pin_tags[usize::from(user.slot())] = None;
        Ok(())
    }

    fn rewrap(
        &self,
        vault: &Vault,
        ik: &IntegrityKeys,
        user: UserType,
        new_pin: &Pin,
    ) -> Result<()> {
        // New keyslots take the cost parameters the store was initialized with.
        let kdf = self.store.keyslot(UserType::So.slot())?.map_or_else(KdfParams::default, |s| {
            KdfParams { m_cost: s.m_cost, t_cost: s.t_cost, p_cost: s.p_cost }
        });
        let slot = hierarchy::wrap_mk(
            vault.master_key(),
            new_pin,
            &self.store_uid,
            user.slot(),
            kdf,
            rand_array(self.provider)?,
            rand_array(self.provider)?,
        )?;
        self.with_bump(ik, |b| self.store.put_keyslot(&slot, b))?;
        write(&self.auth).pin_tags[usize::from(user.slot())] = None;
        Ok(())
    }
}

// --- quorum unlock policy (issue 4; see crate::seal) ----------------------------------------
impl Token {
    /// Quorum policy: installs a master key reconstructed from unseal shares
    /// ([`crate::seal::Unsealer`]) after checking the store generation (integrity and
    /// anti-rollback), as a successful login would. The token then serves as the normal user;
    /// the daemon does its own user authentication. [`Token::lock`] seals it again.
    pub(super) fn unseal_unaudited(&self, vault: Vault, ik: IntegrityKeys) -> Result<()> {
        self.provider.check()?;
        let meta = self.store.meta()?;
        if meta.zeroized {
            return Err(Error::Zeroized);
        }
        if meta.policy != crate::seal::QUORUM_POLICY {
            return Err(Error::ArgumentsBad("store does not use the quorum unlock policy"));
        }
        self.check_generation(&ik, meta.generation, &meta.generation_mac)?;
        let mut a = write(&self.auth);
        a.user = Some(UserType::User);
        a.vault = Some(Arc::new(vault));
        a.integrity = Some(Arc::new(ik));
        a.pin_tags = [None, None];
        Ok(())
    }
}
