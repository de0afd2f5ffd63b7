//! The token layer: slots, sessions, login state rules and operation state, in safe Rust.
//!
//! [`Module`] is what `C_Initialize` builds and `C_Finalize` tears down. It reaches each token
//! only through the [`Hsm`] trait (embedded [`Token`] today, a remote client later), never the
//! store. Sessions live in a sharded table; each session's operation state sits behind its own
//! `Mutex`, and the session keeps its own `Arc<dyn Hsm>`, so two threads working on two sessions
//! share no lock on the hot path (only brief read locks on different or shared shards).
//!
//! Lock order: a shard lock is never held while a session mutex or a slot lock is taken.

mod message;
mod objects;
mod ops;
mod session;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bulwark_core::attr::{AttrType, AttrValue};
use bulwark_core::hsm::Hsm;
use bulwark_core::mechanism;
use bulwark_core::secret::Pin;
use bulwark_core::token::MAX_PIN_FAILURES;
use bulwark_core::{Token, UserType};
use cryptoki_sys as ck;

pub use message::MsgOut;
pub(crate) use message::{GcmMessage, IvSource};
pub use ops::{Out, Output};
pub(crate) use session::{Session, SessionState};

use crate::config::{Backend, Config, SlotConfig};
use crate::error::{Error, Result};

/// Library version reported by `C_GetInfo` and the token.
pub(crate) const VERSION: ck::CK_VERSION = ck::CK_VERSION { major: 0, minor: 1 };

const SHARDS: usize = 16;

/// One configured slot and its (lazily opened) token.
struct Slot {
    cfg: SlotConfig,
    hsm: RwLock<Option<Arc<dyn Hsm>>>,
}

impl Slot {
    fn hsm(&self) -> Result<Arc<dyn Hsm>> {
        if let Some(h) = read(&self.hsm).as_ref() {
            return Ok(h.clone());
        }
        let mut w = write(&self.hsm);
        if let Some(h) = w.as_ref() {
            return Ok(h.clone());
        }
        let t: Arc<dyn Hsm> = match &self.cfg.backend {
            Backend::Store(store) if !store.exists() => return Err(Error::TokenNotRecognized),
            Backend::Store(store) => Arc::new(Token::open(store)?),
            Backend::Remote(r) => {
                let cfg = bulwark_client::ClientConfig::from_files(
                    &r.endpoint,
                    &r.ca_cert,
                    Some(&r.client_cert),
                    Some(&r.client_key),
                )
                .map_err(|e| {
                    tracing::error!(error = %e, "remote slot configuration");
                    Error::General("cannot read the remote slot's certificates")
                })?;
                Arc::new(bulwark_client::remote_hsm::RemoteHsm::new(&cfg)?)
            }
        };
        *w = Some(t.clone());
        Ok(t)
    }
}

/// The whole module state between `C_Initialize` and `C_Finalize`.
pub struct Module {
    slots: Vec<Slot>,
    shards: [RwLock<HashMap<u64, Arc<Session>>>; SHARDS],
    next_session: AtomicU64,
    /// The process that initialized the module (a forked child must initialize again).
    pid: u32,
}

pub(crate) fn read<T: ?Sized>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn write<T: ?Sized>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Copies `s` into a blank-padded fixed field (UTF-8 cut at a character boundary).
pub(crate) fn pad<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let mut end = s.len().min(N);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&s.as_bytes()[..end]);
    out
}

impl Module {
    /// Builds the module from a configuration. Opens nothing yet.
    pub fn new(cfg: Config) -> Module {
        Module {
            slots: cfg.slot.into_iter().map(|cfg| Slot { cfg, hsm: RwLock::new(None) }).collect(),
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            next_session: AtomicU64::new(1),
            pid: std::process::id(),
        }
    }

    /// The process that initialized this module.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    fn slot(&self, id: ck::CK_SLOT_ID) -> Result<&Slot> {
        usize::try_from(id).ok().and_then(|i| self.slots.get(i)).ok_or(Error::SlotIdInvalid)
    }

    fn shard(&self, h: u64) -> &RwLock<HashMap<u64, Arc<Session>>> {
        &self.shards[(h % SHARDS as u64) as usize]
    }

    /// The session behind a handle.
    pub(crate) fn session(&self, h: ck::CK_SESSION_HANDLE) -> Result<Arc<Session>> {
        read(self.shard(h)).get(&h).cloned().ok_or(Error::SessionHandleInvalid)
    }

    fn sessions_of(&self, slot: usize) -> Vec<Arc<Session>> {
        let mut v = Vec::new();
        for s in &self.shards {
            v.extend(read(s).values().filter(|x| x.slot == slot).cloned());
        }
        v
    }

    /// `C_Finalize`: closes every session and wipes every token's keys from memory.
    pub fn finalize(&self) {
        for s in &self.shards {
            write(s).clear();
        }
        for slot in &self.slots {
            if let Some(h) = write(&slot.hsm).take() {
                h.lock();
            }
        }
    }

    /// `C_GetSlotList`. Every configured slot has a token present (possibly uninitialized).
    pub fn slot_list(&self) -> Vec<ck::CK_SLOT_ID> {
        (0..self.slots.len() as u64).collect()
    }

    /// `C_GetSlotInfo`.
    pub fn slot_info(&self, id: ck::CK_SLOT_ID) -> Result<ck::CK_SLOT_INFO> {
        let s = self.slot(id)?;
        let desc = match &s.cfg.backend {
            Backend::Store(p) => format!("Bulwark slot {id}: {}", p.display()),
            Backend::Remote(r) => format!("Bulwark slot {id}: {}", r.endpoint),
        };
        Ok(ck::CK_SLOT_INFO {
            slotDescription: pad(&desc),
            manufacturerID: pad("Bulwark"),
            flags: ck::CKF_TOKEN_PRESENT,
            hardwareVersion: VERSION,
            firmwareVersion: VERSION,
        })
    }

    /// `C_GetTokenInfo`. A slot whose store does not exist shows an uninitialized token.
    pub fn token_info(&self, id: ck::CK_SLOT_ID) -> Result<ck::CK_TOKEN_INFO> {
        let s = self.slot(id)?;
        let sessions = self.sessions_of(id as usize);
        let rw = sessions.iter().filter(|x| x.rw).count();
        let mut info = ck::CK_TOKEN_INFO {
            label: pad(&s.cfg.label),
            manufacturerID: pad("Bulwark"),
            model: pad(match s.cfg.backend {
                Backend::Store(_) => "embedded",
                Backend::Remote(_) => "remote",
            }),
            serialNumber: pad("0"),
            flags: ck::CKF_RNG | ck::CKF_LOGIN_REQUIRED,
            ulMaxSessionCount: ck::CK_EFFECTIVELY_INFINITE,
            ulSessionCount: sessions.len() as u64,
            ulMaxRwSessionCount: ck::CK_EFFECTIVELY_INFINITE,
            ulRwSessionCount: rw as u64,
            ulMaxPinLen: bulwark_core::hierarchy::PIN_MAX as u64,
            ulMinPinLen: bulwark_core::hierarchy::PIN_MIN as u64,
            ulTotalPublicMemory: ck::CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: ck::CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: ck::CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: ck::CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: VERSION,
            firmwareVersion: VERSION,
            utcTime: [b' '; 16],
        };
        let hsm = match s.hsm() {
            Ok(h) => h,
            Err(Error::TokenNotRecognized) => return Ok(info),
            Err(e) => return Err(e),
        };
        let st = hsm.status()?;
        info.label = pad(&st.label);
        info.serialNumber = pad(&st.store_id);
        info.flags |= ck::CKF_TOKEN_INITIALIZED | ck::CKF_RESTORE_KEY_NOT_NEEDED;
        if st.user_pin_initialized {
            info.flags |= ck::CKF_USER_PIN_INITIALIZED;
        }
        let pin_flags = |failures: u32, low, last, locked| match failures {
            0 => 0,
            f if f >= MAX_PIN_FAILURES => locked,
            f if f + 1 == MAX_PIN_FAILURES => low | last,
            _ => low,
        };
        info.flags |= pin_flags(
            st.user_pin_failures,
            ck::CKF_USER_PIN_COUNT_LOW,
            ck::CKF_USER_PIN_FINAL_TRY,
            ck::CKF_USER_PIN_LOCKED,
        );
        info.flags |= pin_flags(
            st.so_pin_failures,
            ck::CKF_SO_PIN_COUNT_LOW,
            ck::CKF_SO_PIN_FINAL_TRY,
            ck::CKF_SO_PIN_LOCKED,
        );
        Ok(info)
    }

    /// `C_GetMechanismList`.
    pub fn mechanism_list(&self, id: ck::CK_SLOT_ID) -> Result<Vec<ck::CK_MECHANISM_TYPE>> {
        self.slot(id)?;
        Ok(mechanism::supported_mechanisms().into_iter().map(|m| m.ck_type).collect())
    }

    /// `C_GetMechanismInfo`.
    pub fn mechanism_info(
        &self,
        id: ck::CK_SLOT_ID,
        mech: ck::CK_MECHANISM_TYPE,
    ) -> Result<ck::CK_MECHANISM_INFO> {
        self.slot(id)?;
        let m = mechanism::mechanism_info(mech).ok_or(Error::MechanismInvalid)?;
        let mut flags = m.flags;
        if matches!(
            mech,
            ck::CKM_EC_KEY_PAIR_GEN
                | ck::CKM_ECDSA
                | ck::CKM_ECDSA_SHA256
                | ck::CKM_ECDSA_SHA384
                | ck::CKM_ECDSA_SHA512
                | ck::CKM_ECDH1_DERIVE
        ) {
            flags |= ck::CKF_EC_F_P | ck::CKF_EC_OID | ck::CKF_EC_UNCOMPRESS;
        }
        Ok(ck::CK_MECHANISM_INFO {
            ulMinKeySize: m.min_key_size,
            ulMaxKeySize: m.max_key_size,
            flags,
        })
    }

    /// `C_InitToken`: (re)initializes the slot's store with an SO PIN and a label.
    pub fn init_token(&self, id: ck::CK_SLOT_ID, so_pin: &Pin, label: &str) -> Result<()> {
        let s = self.slot(id)?;
        if !self.sessions_of(id as usize).is_empty() {
            return Err(Error::SessionExists);
        }
        // A remote token is initialized on the daemon (`bulwarkd init`), never from here.
        let Backend::Store(store) = &s.cfg.backend else {
            return Err(Error::FunctionNotSupported);
        };
        // Close our own connection first: the store file is replaced underneath.
        let mut w = write(&s.hsm);
        if let Some(old) = w.take() {
            old.lock();
        }
        if let Some(dir) = store.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|_| Error::General("cannot create store folder"))?;
        }
        Token::reinit(Path::new(store), label, so_pin)?;
        Ok(())
    }

    /// `C_OpenSession`.
    pub fn open_session(&self, id: ck::CK_SLOT_ID, flags: ck::CK_FLAGS) -> Result<u64> {
        let slot = self.slot(id)?;
        if flags & ck::CKF_SERIAL_SESSION == 0 {
            return Err(Error::SessionParallelNotSupported);
        }
        let hsm = slot.hsm()?;
        let rw = flags & ck::CKF_RW_SESSION != 0;
        if !rw && hsm.logged_in() == Some(UserType::So) {
            return Err(Error::SessionReadWriteSoExists);
        }
        let h = self.next_session.fetch_add(1, Ordering::Relaxed);
        let s = Arc::new(Session::new(h, id as usize, rw, hsm));
        write(self.shard(h)).insert(h, s);
        Ok(h)
    }

    /// `C_CloseSession`. Closing the last session of a slot logs the application out.
    pub fn close_session(&self, h: ck::CK_SESSION_HANDLE) -> Result<()> {
        let s = write(self.shard(h)).remove(&h).ok_or(Error::SessionHandleInvalid)?;
        s.hsm.close_session(h);
        if self.sessions_of(s.slot).is_empty() {
            let _ = s.hsm.logout();
        }
        Ok(())
    }

    /// `C_CloseAllSessions`.
    pub fn close_all_sessions(&self, id: ck::CK_SLOT_ID) -> Result<()> {
        self.slot(id)?;
        let all = self.sessions_of(id as usize);
        for s in &all {
            write(self.shard(s.handle)).remove(&s.handle);
            s.hsm.close_session(s.handle);
        }
        if let Some(s) = all.first() {
            let _ = s.hsm.logout();
        }
        Ok(())
    }

    /// `C_GetSessionInfo`.
    pub fn session_info(&self, h: ck::CK_SESSION_HANDLE) -> Result<ck::CK_SESSION_INFO> {
        let s = self.session(h)?;
        let state = match (s.hsm.logged_in(), s.rw) {
            (None, false) => ck::CKS_RO_PUBLIC_SESSION,
            (None, true) => ck::CKS_RW_PUBLIC_SESSION,
            (Some(UserType::User), false) => ck::CKS_RO_USER_FUNCTIONS,
            (Some(UserType::User), true) => ck::CKS_RW_USER_FUNCTIONS,
            (Some(UserType::So), _) => ck::CKS_RW_SO_FUNCTIONS,
        };
        let mut flags = ck::CKF_SERIAL_SESSION;
        if s.rw {
            flags |= ck::CKF_RW_SESSION;
        }
        Ok(ck::CK_SESSION_INFO { slotID: s.slot as u64, state, flags, ulDeviceError: 0 })
    }

    /// `C_Login` / `C_LoginUser` (the user name is ignored for the embedded token).
    pub fn login(&self, h: ck::CK_SESSION_HANDLE, user: ck::CK_USER_TYPE, pin: &Pin) -> Result<()> {
        let s = self.session(h)?;
        match user {
            ck::CKU_SO => {
                if self.sessions_of(s.slot).iter().any(|x| !x.rw) {
                    return Err(Error::SessionReadOnlyExists);
                }
                s.hsm.login(UserType::So, pin)?;
            }
            ck::CKU_USER => s.hsm.login(UserType::User, pin)?,
            ck::CKU_CONTEXT_SPECIFIC => s.context_login(pin)?,
            _ => return Err(Error::UserTypeInvalid),
        }
        Ok(())
    }

    /// `C_Logout`. Every operation in progress in the slot's sessions is ended: a key prepared
    /// while logged in must not outlive the login.
    ///
    /// The application's private session objects are destroyed first (PKCS#11 §5.6: "any of
    /// the application's handles to private objects become invalid ... session objects are
    /// destroyed"), so a later login of another user never finds them.
    pub fn logout(&self, h: ck::CK_SESSION_HANDLE) -> Result<()> {
        let s = self.session(h)?;
        if s.hsm.logged_in().is_none() {
            return Err(Error::UserNotLoggedIn);
        }
        let private_session_objects: Vec<(AttrType, AttrValue)> = vec![
            (AttrType::Token, AttrValue::Bool(false)),
            (AttrType::Private, AttrValue::Bool(true)),
        ];
        for o in s.hsm.find(&private_session_objects).unwrap_or_default() {
            if let Err(e) = s.hsm.destroy_object(o) {
                tracing::warn!(error = %e, "logout: a private session object was not destroyed");
            }
        }
        s.hsm.logout()?;
        for x in self.sessions_of(s.slot) {
            *lock(&x.state) = SessionState::default();
        }
        Ok(())
    }

    /// `C_InitPIN`: needs an R/W SO session.
    pub fn init_pin(&self, h: ck::CK_SESSION_HANDLE, pin: &Pin) -> Result<()> {
        let s = self.session(h)?;
        if s.hsm.logged_in() != Some(UserType::So) {
            return Err(Error::UserNotLoggedIn);
        }
        if !s.rw {
            return Err(Error::SessionReadOnly);
        }
        s.hsm.init_pin(pin)?;
        Ok(())
    }

    /// `C_SetPIN`: needs an R/W session.
    pub fn set_pin(&self, h: ck::CK_SESSION_HANDLE, old: &Pin, new: &Pin) -> Result<()> {
        let s = self.session(h)?;
        if !s.rw {
            return Err(Error::SessionReadOnly);
        }
        s.hsm.set_pin(old, new)?;
        Ok(())
    }

    /// `C_SessionCancel`: ends the operations named by `flags` (`CKF_SIGN`, `CKF_ENCRYPT`...).
    pub fn session_cancel(&self, h: ck::CK_SESSION_HANDLE, flags: ck::CK_FLAGS) -> Result<()> {
        let s = self.session(h)?;
        let mut st = lock(&s.state);
        if flags & ck::CKF_SIGN != 0 {
            st.sign = None;
        }
        if flags & ck::CKF_VERIFY != 0 {
            st.verify = None;
            st.verify_sig = None;
        }
        if flags & ck::CKF_ENCRYPT != 0 {
            st.encrypt = None;
        }
        if flags & ck::CKF_DECRYPT != 0 {
            st.decrypt = None;
        }
        if flags & ck::CKF_DIGEST != 0 {
            st.digest = None;
        }
        if flags & ck::CKF_FIND_OBJECTS != 0 {
            st.find = None;
        }
        if flags & ck::CKF_SIGN_RECOVER != 0 {
            st.sign_recover = None;
        }
        if flags & ck::CKF_VERIFY_RECOVER != 0 {
            st.verify_recover = None;
        }
        if flags & ck::CKF_MESSAGE_ENCRYPT != 0 {
            st.msg_encrypt = None;
        }
        if flags & ck::CKF_MESSAGE_DECRYPT != 0 {
            st.msg_decrypt = None;
        }
        Ok(())
    }

    /// `C_GetOperationState`: never saved (see the entry point): `CKR_STATE_UNSAVEABLE` with an
    /// operation active, `CKR_OPERATION_NOT_INITIALIZED` without.
    pub fn operation_state(&self, h: ck::CK_SESSION_HANDLE) -> Result<()> {
        let s = self.session(h)?;
        if lock(&s.state).any_active() {
            Err(Error::StateUnsaveable)
        } else {
            Err(Error::OperationNotInitialized)
        }
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Module>();
    assert_send_sync::<Session>();
};
