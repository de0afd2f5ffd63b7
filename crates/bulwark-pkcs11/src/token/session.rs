//! One PKCS#11 session and the state of the operations running in it.
//!
//! An operation holds the [`PreparedKey`] that passed the policy gate at `C_*Init`, the parsed
//! mechanism, and any buffered input (multi-part calls on mechanisms that hash or authenticate
//! the whole message). Buffers that may hold plaintext are zeroized when the operation ends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bulwark_core::hsm::{Hsm, PreparedKey};
use bulwark_core::mechanism::{DigestAlg, Mechanism};
use bulwark_core::secret::Pin;
use bulwark_core::stream::CipherStream;
use zeroize::{Zeroize, Zeroizing};

use super::lock;
use crate::error::{Error, Result};

/// One session.
pub(crate) struct Session {
    pub(crate) handle: u64,
    pub(crate) slot: usize,
    pub(crate) rw: bool,
    pub(crate) hsm: Arc<dyn Hsm>,
    pub(crate) state: Mutex<SessionState>,
}

impl Session {
    pub(crate) fn new(handle: u64, slot: usize, rw: bool, hsm: Arc<dyn Hsm>) -> Session {
        Session { handle, slot, rw, hsm, state: Mutex::new(SessionState::default()) }
    }

    /// `C_Login(CKU_CONTEXT_SPECIFIC)`: re-authenticates for the one operation in progress whose
    /// key has `CKA_ALWAYS_AUTHENTICATE`.
    pub(crate) fn context_login(&self, pin: &Pin) -> Result<()> {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let op = [st.sign.as_mut(), st.decrypt.as_mut(), st.sign_recover.as_mut()]
            .into_iter()
            .flatten()
            .find(|o| o.needs_auth)
            .ok_or(Error::OperationNotInitialized)?;
        // The embedded token checks the PIN of the logged-in user (and counts failures).
        self.hsm.check_pin(pin)?;
        op.authed = true;
        Ok(())
    }
}

/// Operations in progress in one session (at most one of each kind).
#[derive(Default)]
pub(crate) struct SessionState {
    pub(crate) find: Option<VecDeque<u64>>,
    pub(crate) sign: Option<CryptoOp>,
    pub(crate) verify: Option<CryptoOp>,
    pub(crate) encrypt: Option<CryptoOp>,
    pub(crate) decrypt: Option<CryptoOp>,
    pub(crate) digest: Option<DigestOp>,
    /// PKCS#11 3.2 `C_VerifySignature*`: the operation and the signature given at init.
    pub(crate) verify_sig: Option<(CryptoOp, Vec<u8>)>,
    /// `C_SignRecover*`.
    pub(crate) sign_recover: Option<CryptoOp>,
    /// `C_VerifyRecover*`.
    pub(crate) verify_recover: Option<CryptoOp>,
    /// PKCS#11 3.0 message-based encryption (`C_MessageEncryptInit` ...).
    pub(crate) msg_encrypt: Option<MessageOp>,
    /// PKCS#11 3.0 message-based decryption.
    pub(crate) msg_decrypt: Option<MessageOp>,
}

impl SessionState {
    /// True if any operation is in progress (for `C_GetOperationState`).
    pub(crate) fn any_active(&self) -> bool {
        self.find.is_some()
            || self.sign.is_some()
            || self.verify.is_some()
            || self.encrypt.is_some()
            || self.decrypt.is_some()
            || self.digest.is_some()
            || self.verify_sig.is_some()
            || self.sign_recover.is_some()
            || self.verify_recover.is_some()
            || self.msg_encrypt.is_some()
            || self.msg_decrypt.is_some()
    }
}

/// A message-based (PKCS#11 3.0) AES-GCM operation: the prepared key, and the message being
/// assembled by `C_*MessageBegin` / `C_*MessageNext`, if any.
pub(crate) struct MessageOp {
    pub(crate) key: Arc<dyn PreparedKey>,
    /// The message in progress: its parameters (from `Begin`) and the parts so far (wiped).
    pub(crate) part: Option<(super::message::GcmMessage, Zeroizing<Vec<u8>>)>,
}

/// A key operation in progress.
pub(crate) struct CryptoOp {
    pub(crate) key: Arc<dyn PreparedKey>,
    pub(crate) mech: Mechanism,
    /// Input collected by `C_*Update` (sign and verify); wiped on drop (see the `Drop` impl).
    pub(crate) buf: Vec<u8>,
    /// The multi-part stream of `C_EncryptUpdate` / `C_DecryptUpdate`, made at the first one.
    pub(crate) stream: Option<CipherStream>,
    /// True once `C_*Update` was called: the operation must end with `C_*Final`.
    pub(crate) multipart: bool,
    /// The key has `CKA_ALWAYS_AUTHENTICATE`: a context-specific login must come first.
    pub(crate) needs_auth: bool,
    pub(crate) authed: bool,
    /// A computed result the caller has not yet received (length query or short buffer).
    pub(crate) pending: Option<super::Output>,
}

impl CryptoOp {
    pub(crate) fn new(key: Arc<dyn PreparedKey>, mech: Mechanism, needs_auth: bool) -> CryptoOp {
        CryptoOp {
            key,
            mech,
            buf: Vec::new(),
            stream: None,
            multipart: false,
            needs_auth,
            authed: false,
            pending: None,
        }
    }
}

impl Drop for CryptoOp {
    fn drop(&mut self) {
        // Only multi-part operations buffer input: a single-part one (the common case, once
        // per `C_Sign` / `C_Encrypt`) has nothing to wipe and skips the wiping call.
        if self.buf.capacity() > 0 {
            self.buf.zeroize();
        }
    }
}

/// A digest in progress.
pub(crate) struct DigestOp {
    pub(crate) alg: DigestAlg,
    pub(crate) buf: Zeroizing<Vec<u8>>,
    pub(crate) multipart: bool,
}
