//! Store creation, login and PIN management for the `keyslots` unlock policy, and unsealing for
//! the `quorum` one.
//!
//! **An attempt is counted before the secret is checked**: a PIN login first records the
//! attempt durably ([`Store::count_attempt`]), refuses when the count is past the limit, and only
//! then runs Argon2id; a success clears the count. Parallel guesses therefore never check more
//! PINs than the limit allows. After [`MAX_PIN_FAILURES`] consecutive failures the PIN is locked
//! (the SO unlocks the user by setting a new user PIN). A successful unlock verifies the whole
//! store ([`Token::verify_set`]: every row, the set commitment, the generation and the
//! anti-rollback mark) before anything is served, so a replayed keyslot (an old PIN after a PIN
//! change) unlocks nothing. The public, audited entry points are in `guard.rs`; the bodies here
//! are `*_unaudited`.
//!
//! The attempt counters are the one piece of state outside the authenticated set: they are
//! written before any key exists to authenticate them. Whoever can write the store file can
//! reset them, but can equally copy the file and guess PINs offline against Argon2id; the
//! lockout is a defence against callers of the token's interfaces.

use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::state::{kind, Fresh};
use super::{read, write, Token, UserType, MAX_PIN_FAILURES};
use crate::crypto::Provider;
use crate::error::{Error, Result};
use crate::hierarchy::{self, IntegrityKeys, KdfParams, MasterKey, Vault};
use crate::secret::Pin;
use crate::store::{KeyslotRow, SqliteStore, Store};

fn rand_array<const N: usize>(p: &Provider) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    p.random(&mut b)?;
    Ok(b)
}

use crate::limits::check_token_label;

/// A user a new store is created with (the first security officer of a daemon, dev users).
pub struct InitialUser {
    /// Name.
    pub name: String,
    /// Role.
    pub role: crate::kernel::Role,
    /// Password.
    pub password: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for InitialUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitialUser")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Creates a store: the header, then one authenticated write with the keyslots, the label, the
/// security policy and the audit key, the initial users, then the audit log's first record.
#[allow(clippy::too_many_arguments)]
pub(crate) fn create_store(
    path: &Path,
    store_uid: [u8; 16],
    unlock_policy: &str,
    label: &str,
    slots: &[KeyslotRow],
    vault: Vault,
    policy: &super::policy::SecurityPolicy,
    users: &[InitialUser],
) -> Result<()> {
    check_token_label(label)?;
    let store = SqliteStore::create(path, store_uid, unlock_policy)?;
    create_in(store, path, store_uid, label, slots, vault, policy, users)
}

/// [`create_store`] on a store whose header `create` just wrote (any [`Store`]); the audit log
/// is `<audit_base>-audit`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn create_in<S: Store>(
    store: S,
    audit_base: &Path,
    store_uid: [u8; 16],
    label: &str,
    slots: &[KeyslotRow],
    vault: Vault,
    policy: &super::policy::SecurityPolicy,
    users: &[InitialUser],
) -> Result<()> {
    check_token_label(label)?;
    let ik = vault.integrity_keys()?;
    let token = Token::open_created(store, store_uid)?;
    let pj = serde_json::to_vec(policy).map_err(|_| Error::Internal("policy json"))?;
    let (signer, audit_key) = super::admin::new_audit_key(&vault)?;
    let tamper_zeroize = policy.tamper_response == super::policy::TamperResponse::Zeroize;
    // The security domain (docs/backup.md): a new random one; a restore may adopt another.
    let mut domain = [0u8; 16];
    Provider::get()?.random(&mut domain)?;
    token.write_with(&ik, Fresh::Init { tamper_zeroize }, |a| {
        for s in slots {
            a.put_keyslot(s)?;
        }
        a.put_record(kind::SETTING, b"label", label.as_bytes())?;
        a.put_record(kind::SETTING, b"policy", &pj)?;
        a.put_record(kind::SETTING, b"audit_key", &audit_key)?;
        a.put_record(kind::SETTING, b"audit_pub", &signer.public_key())?;
        a.put_record(kind::SETTING, super::backup::DOMAIN_SETTING.as_bytes(), &domain)?;
        Ok(())
    })?;
    if !users.is_empty() {
        {
            let mut a = write(&token.auth);
            a.vault = Some(Arc::new(vault));
            a.integrity = Some(Arc::new(ik));
        }
        for u in users {
            token.create_user_unchecked(&u.name, u.role, &u.password, None)?;
        }
    }
    token.lock_unaudited();
    // The audit log and its first record (guard.rs).
    super::admin::after_init(&token.store, audit_base, store_uid, signer, policy)
}

pub(super) fn init_store(
    p: &Provider,
    path: &Path,
    label: &str,
    so_pin: &Pin,
    user_pin: Option<&Pin>,
    kdf: KdfParams,
    policy: &super::policy::SecurityPolicy,
) -> Result<()> {
    check_token_label(label)?;
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
    create_store(path, store_uid, "keyslots", label, &slots, vault, policy, &[])
}

impl Token<SqliteStore> {
    /// `C_InitToken` on an existing store: checks the SO PIN, then replaces the store with a
    /// fresh one (new master key, SO PIN only; every object is gone). A missing store is simply
    /// created.
    pub(super) fn reinit_unaudited(path: &Path, label: &str, so_pin: &Pin) -> Result<()> {
        if !path.exists() {
            return Self::init(path, label, so_pin, None);
        }
        check_token_label(label)?;
        let old = Self::open(path)?;
        let slot = old.pin_keyslot(UserType::So)?;
        let mk = old.unwrap_counted(UserType::So, &slot, so_pin)?;
        let vault = Vault::new(mk, old.store_uid);
        let ik = vault.integrity_keys()?;
        // Only a store that verifies may be replaced by its SO: a tampered one is evidence.
        old.verify_set(&ik)?;
        let kdf = KdfParams { m_cost: slot.m_cost, t_cost: slot.t_cost, p_cost: slot.p_cost };
        let policy = old.policy_verified(&ik)?;
        drop(old);
        let _ =
            std::fs::remove_file(crate::audit::log_path_for(&path.with_extension("reinit-tmp")));
        // Build the new store beside the old one, then swap it in with one rename.
        let tmp = path.with_extension("reinit-tmp");
        let _ = std::fs::remove_file(&tmp);
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
}

impl<S: Store> Token<S> {
    /// The keyslot of a PIN user, with its KDF costs checked.
    fn pin_keyslot(&self, user: UserType) -> Result<KeyslotRow> {
        let slot = self.store.keyslot(user.slot())?.ok_or(match user {
            UserType::User => Error::UserPinNotInitialized,
            UserType::So => Error::Integrity("SO keyslot missing"),
        })?;
        KdfParams { m_cost: slot.m_cost, t_cost: slot.t_cost, p_cost: slot.p_cost }
            .check_bounds()?;
        Ok(slot)
    }

    /// Counts the attempt, refuses past the limit, then unwraps the master key with `pin`. A
    /// success clears the count.
    fn unwrap_counted(&self, user: UserType, slot: &KeyslotRow, pin: &Pin) -> Result<MasterKey> {
        let n = self.store.count_attempt(user.attempt_name())?;
        if n > MAX_PIN_FAILURES {
            return Err(Error::PinLocked);
        }
        let mk = hierarchy::unwrap_mk(slot, pin, &self.store_uid)?;
        self.store.clear_attempts(user.attempt_name())?;
        Ok(mk)
    }

    /// Counts the attempt and checks `pin` against this process's cached digest of it, if any:
    /// `Some(matched)`, or `None` when no digest is cached.
    fn check_cached_pin(&self, user: UserType, pin: &Pin) -> Result<Option<bool>> {
        let a = read(&self.auth);
        let (Some(tag), Some(ik)) = (&a.pin_tags[usize::from(user.slot())], &a.integrity) else {
            return Ok(None);
        };
        let tag = *tag;
        let ik = ik.clone();
        drop(a);
        let n = self.store.count_attempt(user.attempt_name())?;
        if n > MAX_PIN_FAILURES {
            return Err(Error::PinLocked);
        }
        let ok = bool::from(ik.pin_tag(user.slot(), pin).ct_eq(&tag));
        if ok {
            self.store.clear_attempts(user.attempt_name())?;
        }
        Ok(Some(ok))
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
        let header = self.store.header()?;
        if header.zeroized {
            return Err(Error::Zeroized);
        }
        if header.policy != "keyslots" {
            return Err(Error::ArgumentsBad("store does not use the keyslots unlock policy"));
        }
        // Fast path: this process already ran Argon2id for this PIN (DESIGN.md §9).
        let (vault, ik) = match self.check_cached_pin(user, pin)? {
            Some(true) => {
                let a = read(&self.auth);
                match (&a.vault, &a.integrity) {
                    (Some(v), Some(i)) => (v.clone(), i.clone()),
                    _ => return Err(Error::Internal("login cache")),
                }
            }
            Some(false) => return Err(Error::PinIncorrect),
            None => {
                let slot = self.pin_keyslot(user)?;
                let mk = self.unwrap_counted(user, &slot, pin)?;
                let v = Vault::new(mk, self.store_uid);
                let ik = v.integrity_keys()?;
                (Arc::new(v), Arc::new(ik))
            }
        };
        // The whole store must authenticate (every row, the set, the generation, the mark)
        // unless this process verified it and nobody else committed since.
        if !self.verified_now(self.store.change_counter()?) {
            self.verify_set(&ik)?;
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

    /// Notes a generation this process saw committed: raises the in-memory watermark and the
    /// sealed mark on disk (tagged with `ik`).
    pub(super) fn note_generation(&self, ik: &IntegrityKeys, generation: u64) {
        let prev = self.generation_seen.fetch_max(generation, std::sync::atomic::Ordering::AcqRel);
        if generation > prev {
            crate::rollback::record(&self.store_uid, generation, &|v| ik.mark_tag(v));
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
        drop(c);
        self.bump_epoch();
        Ok(())
    }

    /// Wipes the master key and every cache from memory (`C_Finalize`, shutdown).
    pub(super) fn lock_unaudited(&self) {
        *write(&self.auth) = super::Auth::default();
        let mut c = write(&self.cache);
        c.keys.clear();
        c.objects.clear();
        super::write(&self.session_objects).clear();
        *super::lock(&self.verified) = super::Verified::default();
        self.bump_epoch();
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
        self.rewrap(&vault, &ik, UserType::User, new_pin)?;
        self.store.clear_attempts(UserType::User.attempt_name())
    }

    /// Checks the logged-in user's PIN without changing anything but the failure counter
    /// (context-specific login for CKA_ALWAYS_AUTHENTICATE keys). A PIN this process already
    /// verified is checked in constant time against its keyed digest; otherwise Argon2id runs.
    pub(super) fn check_pin_unaudited(&self, pin: &Pin) -> Result<()> {
        let user = self.logged_in().ok_or(Error::UserNotLoggedIn)?;
        let ok = if let Some(ok) = self.check_cached_pin(user, pin)? {
            ok
        } else {
            let slot = self.pin_keyslot(user)?;
            match self.unwrap_counted(user, &slot, pin) {
                Ok(_) => true,
                Err(Error::PinIncorrect) => false,
                Err(e) => return Err(e),
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::PinIncorrect)
        }
    }

    /// `C_SetPIN`: changes the PIN of the logged-in user (or, when nobody is logged in, the
    /// normal user's), after checking the old one.
    pub(super) fn set_pin_unaudited(&self, old_pin: &Pin, new_pin: &Pin) -> Result<()> {
        let user = self.logged_in().unwrap_or(UserType::User);
        let slot = self.pin_keyslot(user)?;
        let mk = self.unwrap_counted(user, &slot, old_pin)?;
        let vault = Vault::new(mk, self.store_uid);
        let ik = vault.integrity_keys()?;
        if !self.verified_now(self.store.change_counter()?) {
            self.verify_set(&ik)?;
        }
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
        let kdf = self.pin_keyslot(UserType::So).map_or_else(
            |_| KdfParams::default(),
            |s| KdfParams { m_cost: s.m_cost, t_cost: s.t_cost, p_cost: s.p_cost },
        );
        let slot = hierarchy::wrap_mk(
            vault.master_key(),
            new_pin,
            &self.store_uid,
            user.slot(),
            kdf,
            rand_array(self.provider)?,
            rand_array(self.provider)?,
        )?;
        self.write(ik, |a| a.put_keyslot(&slot))?;
        write(&self.auth).pin_tags[usize::from(user.slot())] = None;
        Ok(())
    }

    /// Quorum policy: installs a master key reconstructed from unseal shares
    /// ([`crate::seal::Unsealer`]) after verifying the whole store (integrity, the set
    /// commitment and anti-rollback), as a successful login would. Unsealing logs nobody in:
    /// every operation then acts for the principal the front door set for its thread
    /// ([`crate::kernel::as_caller`], after [`Token::authenticate`]), and for nobody without
    /// one. [`Token::lock`] seals it again.
    pub(super) fn unseal_unaudited(&self, vault: Vault, ik: IntegrityKeys) -> Result<()> {
        self.provider.check()?;
        let header = self.store.header()?;
        if header.zeroized {
            return Err(Error::Zeroized);
        }
        if header.policy != crate::seal::QUORUM_POLICY {
            return Err(Error::ArgumentsBad("store does not use the quorum unlock policy"));
        }
        self.verify_set(&ik)?;
        let mut a = write(&self.auth);
        a.user = None;
        a.vault = Some(Arc::new(vault));
        a.integrity = Some(Arc::new(ik));
        a.pin_tags = [None, None];
        Ok(())
    }
}
