//! The `Hsm` service API: the one narrow interface every front door (the PKCS#11 module first,
//! later the daemon's gRPC service and the CLI) calls to reach a token.
//!
//! It mirrors the embedded [`Token`]'s methods so that the embedded implementation is a thin
//! forwarding layer, and so that a remote implementation (`bulwark-client`, gRPC) can plug in
//! without the PKCS#11 layer noticing. The hot path is split in two: [`Hsm::prepare`] runs the
//! policy gate once (at `C_SignInit` and friends) and returns a [`PreparedKey`]; the operation
//! itself then runs on that object without touching the token again. Embedded mode keeps the
//! parsed key inside it; a remote implementation would keep a server-side handle.
//!
//! This module must never widen what a caller can do: every method is exactly as strict as the
//! [`Token`] method it forwards to.

use std::sync::Arc;

use crate::attr::{AttrType, AttrValue, Attributes};
use crate::crypto::Provider;
use crate::error::{Error, Result};
use crate::mechanism::{DigestAlg, KeyGenMechanism, Mechanism};
use crate::secret::{Pin, SecretBytes};
use crate::store::{SqliteStore, Store};
use crate::template::Template;
use crate::token::{KeyRef, SessionId, Token, TokenStatus, Usage};
use crate::UserType;

/// A key that passed the policy gate for one usage and mechanism, ready for repeated use.
///
/// Holding one does not keep anyone logged in; it is the PKCS#11 layer's job to drop it when the
/// operation ends. Implementations hold no lock while an operation runs, so two threads using
/// two prepared keys (or the same one) never wait for each other.
pub trait PreparedKey: Send + Sync + std::fmt::Debug {
    /// Signs (or MACs) `data`.
    fn sign(&self, mech: &Mechanism, data: &[u8]) -> Result<Vec<u8>>;
    /// Verifies `sig` over `data`.
    fn verify(&self, mech: &Mechanism, data: &[u8], sig: &[u8]) -> Result<()>;
    /// `C_VerifyRecover` (`CKM_RSA_PKCS`): the data `sig` was made over. (`C_SignRecover` is
    /// [`PreparedKey::sign`]: for `CKM_RSA_PKCS` the signature is the same.)
    fn verify_recover(&self, mech: &Mechanism, sig: &[u8]) -> Result<Vec<u8>>;
    /// Encrypts `data`. Multi-part encryption is a [`crate::stream::CipherStream`] of such
    /// calls, each gated like a single-part one.
    fn encrypt(&self, mech: &Mechanism, data: &[u8]) -> Result<Vec<u8>>;
    /// Decrypts `data` into a secret buffer.
    fn decrypt(&self, mech: &Mechanism, data: &[u8]) -> Result<SecretBytes>;
    /// Exact (maximum) signature length for `mech`; 0 if the key cannot sign with it.
    fn signature_len(&self, mech: &Mechanism) -> usize;
    /// Exact ciphertext length for `in_len` plaintext bytes.
    fn encrypt_len(&self, mech: &Mechanism, in_len: usize) -> usize;
    /// Upper bound on the plaintext length for `in_len` ciphertext bytes.
    fn decrypt_len_max(&self, mech: &Mechanism, in_len: usize) -> usize;
    /// KEM encapsulation with a public key: (ciphertext, shared secret).
    fn encapsulate(&self) -> Result<(Vec<u8>, SecretBytes)>;
    /// KEM decapsulation with a private key: the shared secret.
    fn decapsulate(&self, ciphertext: &[u8]) -> Result<SecretBytes>;
    /// The key's `CKA_ALWAYS_AUTHENTICATE` as the policy gate read it, when known (then the
    /// caller need not ask for the attribute separately).
    fn always_authenticate(&self) -> Option<bool> {
        None
    }
}

/// The narrow interface to one token (embedded store or remote HSM partition).
///
/// Session identifiers are the caller's (`C_OpenSession` handles); the HSM only uses them to
/// own and drop session objects.
pub trait Hsm: Send + Sync + std::fmt::Debug {
    /// Token status (label, serial, PIN state, who is logged in).
    fn status(&self) -> Result<TokenStatus>;
    /// Who is logged in.
    fn logged_in(&self) -> Option<UserType>;
    /// `C_Login`.
    fn login(&self, user: UserType, pin: &Pin) -> Result<()>;
    /// `C_Logout`.
    fn logout(&self) -> Result<()>;
    /// Wipes the master key and every cached key (`C_Finalize`).
    fn lock(&self);
    /// `C_InitPIN` (SO logged in).
    fn init_pin(&self, pin: &Pin) -> Result<()>;
    /// `C_SetPIN`.
    fn set_pin(&self, old: &Pin, new: &Pin) -> Result<()>;
    /// Checks the PIN of the logged-in user without changing who is logged in
    /// (`C_Login(CKU_CONTEXT_SPECIFIC)` for keys with CKA_ALWAYS_AUTHENTICATE). A wrong PIN
    /// counts as a failed login.
    fn check_pin(&self, pin: &Pin) -> Result<()>;
    /// `C_FindObjects*`: visible objects matching `t`.
    fn find(&self, t: &Template) -> Result<Vec<u64>>;
    /// The non-secret attributes of a visible object.
    fn attributes(&self, h: u64) -> Result<Attributes>;
    /// One attribute as `C_GetAttributeValue` may reveal it.
    fn attribute(&self, h: u64, t: AttrType) -> Result<AttrValue>;
    /// `C_CreateObject`.
    fn create_object(&self, t: &Template, session: SessionId) -> Result<u64>;
    /// `C_CopyObject`.
    fn copy_object(&self, h: u64, t: &Template, session: SessionId) -> Result<u64>;
    /// `C_DestroyObject`.
    fn destroy_object(&self, h: u64) -> Result<()>;
    /// `C_SetAttributeValue`.
    fn set_attributes(&self, h: u64, t: &Template) -> Result<()>;
    /// Drops the session objects of a closed session.
    fn close_session(&self, session: SessionId);
    /// The policy gate: key `h` may be used for `usage` with `mech`. Returns the prepared key.
    fn prepare(&self, h: u64, usage: Usage, mech: &Mechanism) -> Result<Arc<dyn PreparedKey>>;
    /// `C_GenerateKey`.
    fn generate_key(&self, mech: KeyGenMechanism, t: &Template, session: SessionId) -> Result<u64>;
    /// `C_GenerateKeyPair`: returns (public handle, private handle).
    fn generate_key_pair(
        &self,
        mech: KeyGenMechanism,
        pub_t: &Template,
        priv_t: &Template,
        session: SessionId,
    ) -> Result<(u64, u64)>;
    /// `C_WrapKey`.
    fn wrap_key(&self, wrapping: u64, mech: &Mechanism, target: u64) -> Result<Vec<u8>>;
    /// `C_UnwrapKey`.
    fn unwrap_key(
        &self,
        unwrapping: u64,
        mech: &Mechanism,
        wrapped: &[u8],
        t: &Template,
        session: SessionId,
    ) -> Result<u64>;
    /// `C_DeriveKey`.
    fn derive_key(
        &self,
        base: u64,
        mech: &Mechanism,
        t: &Template,
        session: SessionId,
    ) -> Result<u64>;
    /// `C_GenerateRandom`.
    fn random(&self, out: &mut [u8]) -> Result<()>;
    /// `C_Digest` (one shot).
    fn digest(&self, alg: DigestAlg, data: &[u8]) -> Result<Vec<u8>>;
}

/// The embedded prepared key: the parsed key, the provider that runs it, and the token whose
/// gate it passes again on every use.
///
/// Each data call (C_Sign after C_SignInit, every C_EncryptUpdate...) first asks the token: not
/// zeroized, no tamper alarm, and — when anything that can change access happened since the key
/// was prepared (a logout, this token's own writes, another connection's commit, polled at most
/// once a millisecond) — the whole gate again: visibility, grant, usage flags, dates, the
/// mechanism. A prepared key therefore stops working when its grant is revoked, its user is
/// deleted or demoted, or the key is destroyed. The fast path is two atomic loads and a clock
/// read; no store access.
pub struct EmbeddedKey<S: Store = SqliteStore> {
    token: Token<S>,
    h: u64,
    usage: Usage,
    mech: Mechanism,
    /// (the token's epoch the key was last gated at, the parsed key)
    state: std::sync::RwLock<(u64, KeyRef)>,
    always_authenticate: bool,
    /// Every successful use is counted into the audit log (one aggregated record per window).
    uses: Option<crate::audit::UseCounter>,
    /// When a lifecycle date next changes the key's state (Unix seconds; `u64::MAX`: never):
    /// from then on the key passes the full gate again.
    horizon: std::sync::atomic::AtomicU64,
    /// Whether the key's usage policy counts every use in the store (refreshed at each full
    /// gate pass): then each use is counted durably before it runs.
    metered: std::sync::atomic::AtomicBool,
}

impl<S: Store> std::fmt::Debug for EmbeddedKey<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EmbeddedKey(handle {}, {:?})", self.h, self.usage)
    }
}

impl<S: Store> EmbeddedKey<S> {
    /// Runs `f` on the key after the gate (see the type's documentation), and counts the use.
    fn with_key<T>(&self, f: impl FnOnce(&KeyRef, &'static Provider) -> Result<T>) -> Result<T> {
        let epoch = self.token.prepared_gate()?;
        let horizon = self.horizon.load(std::sync::atomic::Ordering::Acquire);
        let due = horizon != u64::MAX && self.token.now() >= horizon;
        let r = {
            let st = self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if st.0 == epoch && !due {
                if self.metered.load(std::sync::atomic::Ordering::Acquire) {
                    self.token.meter_prepared(self.h, self.usage, &self.mech)?;
                }
                Some(f(&st.1, self.token.provider()))
            } else {
                drop(st);
                let k = self.token.regate(self.h, self.usage, &self.mech)?;
                self.horizon.store(
                    self.token.state_horizon(self.h).unwrap_or(u64::MAX),
                    std::sync::atomic::Ordering::Release,
                );
                let metered = self.token.handle_metered(self.h);
                self.metered.store(metered, std::sync::atomic::Ordering::Release);
                if metered {
                    self.token.meter_prepared(self.h, self.usage, &self.mech)?;
                }
                let r = f(&k, self.token.provider());
                *self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner) = (epoch, k);
                Some(r)
            }
        };
        let r = r.ok_or(Error::Internal("prepared key"))?;
        // A metered use was recorded durably when it was counted.
        if r.is_ok() && !self.metered.load(std::sync::atomic::Ordering::Acquire) {
            if let Some(c) = &self.uses {
                c.hit();
            }
        }
        r
    }

    /// The parsed key without a gate check: only for lengths (no data is processed).
    fn peek<T>(&self, f: impl FnOnce(&KeyRef) -> T) -> T {
        f(&self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner).1)
    }
}

impl<S: Store + 'static> PreparedKey for EmbeddedKey<S> {
    fn sign(&self, mech: &Mechanism, data: &[u8]) -> Result<Vec<u8>> {
        self.with_key(|key, p| match key {
            KeyRef::Private(k) => k.sign(p, mech, data),
            KeyRef::Public(_) => Err(Error::KeyTypeInconsistent),
        })
    }

    fn verify(&self, mech: &Mechanism, data: &[u8], sig: &[u8]) -> Result<()> {
        self.with_key(|key, p| match key {
            KeyRef::Private(k) => k.verify(p, mech, data, sig),
            KeyRef::Public(k) => k.verify(p, mech, data, sig),
        })
    }

    fn verify_recover(&self, mech: &Mechanism, sig: &[u8]) -> Result<Vec<u8>> {
        self.with_key(|key, p| match key {
            KeyRef::Private(k) => k.verify_recover(p, mech, sig),
            KeyRef::Public(k) => k.verify_recover(p, mech, sig),
        })
    }

    fn encrypt(&self, mech: &Mechanism, data: &[u8]) -> Result<Vec<u8>> {
        self.token.check_nonce_policy(mech)?;
        self.with_key(|key, p| match key {
            KeyRef::Private(k) => k.encrypt(p, mech, data),
            KeyRef::Public(k) => k.encrypt(p, mech, data),
        })
    }

    fn decrypt(&self, mech: &Mechanism, data: &[u8]) -> Result<SecretBytes> {
        self.with_key(|key, p| match key {
            KeyRef::Private(k) => k.decrypt(p, mech, data),
            KeyRef::Public(_) => Err(Error::KeyTypeInconsistent),
        })
    }

    fn signature_len(&self, mech: &Mechanism) -> usize {
        self.peek(|key| match key {
            KeyRef::Private(k) => k.signature_len(mech),
            KeyRef::Public(k) => k.signature_len(mech),
        })
    }

    fn encrypt_len(&self, mech: &Mechanism, in_len: usize) -> usize {
        self.peek(|key| match key {
            KeyRef::Private(k) => k.encrypt_len(mech, in_len),
            KeyRef::Public(k) => k.encrypt_len(mech, in_len),
        })
    }

    fn decrypt_len_max(&self, mech: &Mechanism, in_len: usize) -> usize {
        self.peek(|key| match key {
            KeyRef::Private(k) => k.decrypt_len_max(mech, in_len),
            KeyRef::Public(_) => 0,
        })
    }

    fn encapsulate(&self) -> Result<(Vec<u8>, SecretBytes)> {
        self.with_key(|key, p| match key {
            KeyRef::Public(k) => k.encapsulate(p),
            KeyRef::Private(k) => {
                k.loaded_public().ok_or(Error::KeyTypeInconsistent)?.encapsulate(p)
            }
        })
    }

    fn decapsulate(&self, ciphertext: &[u8]) -> Result<SecretBytes> {
        self.with_key(|key, p| match key {
            KeyRef::Private(k) => k.decapsulate(p, ciphertext),
            KeyRef::Public(_) => Err(Error::KeyTypeInconsistent),
        })
    }

    fn always_authenticate(&self) -> Option<bool> {
        Some(self.always_authenticate)
    }
}

impl<S: Store + 'static> Hsm for Token<S> {
    fn status(&self) -> Result<TokenStatus> {
        Token::status(self)
    }

    fn logged_in(&self) -> Option<UserType> {
        Token::logged_in(self)
    }

    fn login(&self, user: UserType, pin: &Pin) -> Result<()> {
        Token::login(self, user, pin)
    }

    fn logout(&self) -> Result<()> {
        Token::logout(self)
    }

    fn lock(&self) {
        Token::lock(self);
    }

    fn init_pin(&self, pin: &Pin) -> Result<()> {
        Token::init_pin(self, pin)
    }

    fn set_pin(&self, old: &Pin, new: &Pin) -> Result<()> {
        Token::set_pin(self, old, new)
    }

    fn check_pin(&self, pin: &Pin) -> Result<()> {
        Token::check_pin(self, pin)
    }

    fn find(&self, t: &Template) -> Result<Vec<u64>> {
        Token::find(self, t)
    }

    fn attributes(&self, h: u64) -> Result<Attributes> {
        Ok(Token::object_info(self, h)?.attrs)
    }

    fn attribute(&self, h: u64, t: AttrType) -> Result<AttrValue> {
        Token::attribute(self, h, t)
    }

    fn create_object(&self, t: &Template, session: SessionId) -> Result<u64> {
        Token::create_object(self, t, session)
    }

    fn copy_object(&self, h: u64, t: &Template, session: SessionId) -> Result<u64> {
        Token::copy_object(self, h, t, session)
    }

    fn destroy_object(&self, h: u64) -> Result<()> {
        Token::destroy_object(self, h)
    }

    fn set_attributes(&self, h: u64, t: &Template) -> Result<()> {
        Token::set_attributes(self, h, t)
    }

    fn close_session(&self, session: SessionId) {
        Token::close_session(self, session);
    }

    fn prepare(&self, h: u64, usage: Usage, mech: &Mechanism) -> Result<Arc<dyn PreparedKey>> {
        // The epoch before the gate: a change during it makes the first use re-check.
        let epoch = self.live.epoch.load(std::sync::atomic::Ordering::Acquire);
        let (key, always_authenticate) = self.key_for_auth(h, usage, mech)?;
        Ok(Arc::new(EmbeddedKey {
            token: self.clone(),
            h,
            usage,
            mech: mech.clone(),
            state: std::sync::RwLock::new((epoch, key)),
            always_authenticate,
            uses: self.use_counter(h, usage, mech),
            horizon: std::sync::atomic::AtomicU64::new(self.state_horizon(h).unwrap_or(u64::MAX)),
            metered: std::sync::atomic::AtomicBool::new(self.handle_metered(h)),
        }))
    }

    fn generate_key(&self, mech: KeyGenMechanism, t: &Template, session: SessionId) -> Result<u64> {
        Token::generate_key(self, mech, t, session)
    }

    fn generate_key_pair(
        &self,
        mech: KeyGenMechanism,
        pub_t: &Template,
        priv_t: &Template,
        session: SessionId,
    ) -> Result<(u64, u64)> {
        Token::generate_key_pair(self, mech, pub_t, priv_t, session)
    }

    fn wrap_key(&self, wrapping: u64, mech: &Mechanism, target: u64) -> Result<Vec<u8>> {
        Token::wrap_key(self, wrapping, mech, target)
    }

    fn unwrap_key(
        &self,
        unwrapping: u64,
        mech: &Mechanism,
        wrapped: &[u8],
        t: &Template,
        session: SessionId,
    ) -> Result<u64> {
        Token::unwrap_key(self, unwrapping, mech, wrapped, t, session)
    }

    fn derive_key(
        &self,
        base: u64,
        mech: &Mechanism,
        t: &Template,
        session: SessionId,
    ) -> Result<u64> {
        Token::derive_key(self, base, mech, t, session)
    }

    fn random(&self, out: &mut [u8]) -> Result<()> {
        Token::random(self, out)
    }

    fn digest(&self, alg: DigestAlg, data: &[u8]) -> Result<Vec<u8>> {
        self.provider().digest(alg, data)
    }
}

#[cfg(test)]
mod tests {
    fn assert_object_safe(_: Option<&dyn super::Hsm>, _: Option<&dyn super::PreparedKey>) {}

    #[test]
    fn traits_are_object_safe_and_shareable() {
        fn send_sync<T: Send + Sync + ?Sized>() {}
        send_sync::<dyn super::Hsm>();
        send_sync::<super::EmbeddedKey>();
        assert_object_safe(None, None);
    }
}
