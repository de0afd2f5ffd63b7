//! Cryptographic operations: sign, verify, encrypt, decrypt, digest, random.
//!
//! Every `C_*Init` passes the policy gate once ([`Hsm::prepare`]) and keeps the prepared key in
//! the session; the data calls then never touch the token. The output-buffer convention of
//! PKCS#11 §5.2 lives in [`finish`]: a length query (`NULL` output) or a short buffer leaves the
//! operation active, with any already computed result kept for the retry; any other outcome
//! ends it.

use bulwark_core::attr::{AttrType, AttrValue};
use bulwark_core::mechanism::Mechanism;
use bulwark_core::stream::{CipherStream, Direction, StreamOutput};
use bulwark_core::token::Usage;
use bulwark_core::Error as CoreError;
use cryptoki_sys as ck;
use zeroize::Zeroizing;

use super::session::{CryptoOp, DigestOp, SessionState};
use super::{lock, Module};
use crate::error::{Error, Result};

/// What a data call hands back to the C layer.
#[derive(Debug)]
pub enum Out {
    /// Only the length (the caller passed a `NULL` output buffer).
    Len(usize),
    /// The output bytes (possibly empty).
    Data(Output),
}

/// Output bytes. Plaintext (and anything else secret) is wiped when dropped; a signature, MAC
/// or ciphertext is exactly what the caller receives, so wiping our copy protects nothing and
/// would cost a byte-wise volatile pass over every output (half the module's own time for a
/// 4 KiB AES-GCM encryption).
#[derive(Debug)]
pub enum Output {
    /// Not secret: signatures, MACs, ciphertexts.
    Public(Vec<u8>),
    /// Wiped on drop.
    Secret(Zeroizing<Vec<u8>>),
}

impl Output {
    /// An empty output.
    pub fn empty() -> Output {
        Output::Public(Vec::new())
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Output::Public(v) => v,
            Output::Secret(v) => v,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sign,
    Verify,
    Encrypt,
    Decrypt,
    SignRecover,
    VerifyRecover,
}

impl Kind {
    fn usage(self) -> Usage {
        match self {
            Kind::Sign | Kind::SignRecover => Usage::Sign,
            Kind::Verify | Kind::VerifyRecover => Usage::Verify,
            Kind::Encrypt => Usage::Encrypt,
            Kind::Decrypt => Usage::Decrypt,
        }
    }

    /// The `CKF_*` function flag the mechanism table must show for this kind.
    fn flag(self) -> u64 {
        match self {
            Kind::Sign => ck::CKF_SIGN,
            Kind::Verify => ck::CKF_VERIFY,
            Kind::Encrypt => ck::CKF_ENCRYPT,
            Kind::Decrypt => ck::CKF_DECRYPT,
            Kind::SignRecover => ck::CKF_SIGN_RECOVER,
            Kind::VerifyRecover => ck::CKF_VERIFY_RECOVER,
        }
    }

    fn slot(self, st: &mut SessionState) -> &mut Option<CryptoOp> {
        match self {
            Kind::Sign => &mut st.sign,
            Kind::Verify => &mut st.verify,
            Kind::Encrypt => &mut st.encrypt,
            Kind::Decrypt => &mut st.decrypt,
            Kind::SignRecover => &mut st.sign_recover,
            Kind::VerifyRecover => &mut st.verify_recover,
        }
    }
}

/// The stream output as this layer's [`Output`].
fn stream_output(o: StreamOutput) -> Output {
    match o {
        StreamOutput::Ciphertext(v) => Output::Public(v),
        StreamOutput::Plaintext(p) => Output::Secret(Zeroizing::new(p.expose_secret().to_vec())),
    }
}

/// Maps "no such object" on a key argument to `CKR_KEY_HANDLE_INVALID`.
pub(crate) fn key_handle(e: CoreError) -> Error {
    match e {
        CoreError::ObjectHandleInvalid => Error::KeyHandleInvalid,
        e => Error::Core(e),
    }
}

/// Runs (or replays) the final step of an operation under the output-buffer convention.
///
/// `known_len` is the exact (or maximum) output length when it is cheap to know without doing
/// the work; `run` does the work. The operation ends unless the caller only asked for the
/// length or gave too small a buffer.
fn finish(
    slot: &mut Option<CryptoOp>,
    cap: Option<usize>,
    secret: bool,
    known_len: impl FnOnce(&CryptoOp) -> usize,
    run: impl FnOnce(&mut CryptoOp) -> bulwark_core::Result<Vec<u8>>,
) -> Result<Out> {
    let op = slot.as_mut().ok_or(Error::OperationNotInitialized)?;
    if op.needs_auth && !op.authed {
        *slot = None;
        return Err(Error::UserNotLoggedIn);
    }
    if op.pending.is_none() {
        let n = known_len(op);
        if n > 0 {
            match cap {
                None => return Ok(Out::Len(n)),
                Some(c) if c < n => return Err(Error::BufferTooSmall(n)),
                Some(_) => {}
            }
        }
        match run(op) {
            Ok(v) => {
                op.pending = Some(if secret {
                    Output::Secret(Zeroizing::new(v))
                } else {
                    Output::Public(v)
                });
            }
            Err(e) => {
                *slot = None;
                return Err(e.into());
            }
        }
    }
    let n = op.pending.as_ref().map_or(0, |p| p.as_slice().len());
    match cap {
        None => Ok(Out::Len(n)),
        Some(c) if c < n => Err(Error::BufferTooSmall(n)),
        Some(_) => {
            let out = op.pending.take().unwrap_or_else(Output::empty);
            *slot = None;
            Ok(Out::Data(out))
        }
    }
}

impl Module {
    fn init(&self, sh: u64, kind: Kind, mech: Mechanism, key: u64) -> Result<()> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        let slot = kind.slot(&mut st);
        if slot.is_some() {
            return Err(Error::OperationActive);
        }
        // A mechanism of the wrong family is CKR_MECHANISM_INVALID before any key is looked
        // at (C_EncryptInit with CKM_SHA256_RSA_PKCS, C_SignRecoverInit with ECDSA...).
        let fits = bulwark_core::mechanism::mechanism_info(mech.ck_type())
            .is_some_and(|m| m.flags & kind.flag() != 0)
            && mech.allows(kind.usage());
        if !fits {
            return Err(Error::MechanismInvalid);
        }
        let prepared = s.hsm.prepare(key, kind.usage(), &mech).map_err(key_handle)?;
        // The embedded token reports the flag with the prepared key (one lookup for both).
        let needs_auth = matches!(kind, Kind::Sign | Kind::Decrypt | Kind::SignRecover)
            && prepared.always_authenticate().unwrap_or_else(|| {
                matches!(
                    s.hsm.attribute(key, AttrType::AlwaysAuthenticate),
                    Ok(AttrValue::Bool(true))
                )
            });
        *slot = Some(CryptoOp::new(prepared, mech, needs_auth));
        Ok(())
    }

    /// Buffers `data` for a multi-part operation. With `consume == false` (a length query by
    /// `C_EncryptUpdate(NULL)` / `C_DecryptUpdate(NULL)`) only checks the state: the caller will
    /// pass the same input again.
    fn update(&self, sh: u64, kind: Kind, data: &[u8], consume: bool) -> Result<()> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        let slot = kind.slot(&mut st);
        let op = slot.as_mut().ok_or(Error::OperationNotInitialized)?;
        if op.pending.is_some() {
            // A single-part call is waiting for its output buffer.
            return Err(Error::OperationActive);
        }
        if consume {
            op.multipart = true;
            op.buf.extend_from_slice(data);
        }
        Ok(())
    }

    /// `C_SignInit`.
    pub fn sign_init(&self, sh: u64, mech: Mechanism, key: u64) -> Result<()> {
        self.init(sh, Kind::Sign, mech, key)
    }

    /// `C_Sign`.
    pub fn sign(&self, sh: u64, data: &[u8], cap: Option<usize>) -> Result<Out> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        if st.sign.as_ref().is_some_and(|o| o.multipart) {
            return Err(Error::OperationActive);
        }
        finish(
            &mut st.sign,
            cap,
            false,
            |o| o.key.signature_len(&o.mech),
            |o| o.key.sign(&o.mech, data),
        )
    }

    /// `C_SignUpdate`.
    pub fn sign_update(&self, sh: u64, data: &[u8]) -> Result<()> {
        self.update(sh, Kind::Sign, data, true)
    }

    /// `C_SignFinal`.
    pub fn sign_final(&self, sh: u64, cap: Option<usize>) -> Result<Out> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        finish(
            &mut st.sign,
            cap,
            false,
            |o| o.key.signature_len(&o.mech),
            |o| o.key.sign(&o.mech, &o.buf),
        )
    }

    /// `C_VerifyInit`.
    pub fn verify_init(&self, sh: u64, mech: Mechanism, key: u64) -> Result<()> {
        self.init(sh, Kind::Verify, mech, key)
    }

    /// `C_Verify`.
    pub fn verify(&self, sh: u64, data: &[u8], sig: &[u8]) -> Result<()> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        let op = st.verify.take().ok_or(Error::OperationNotInitialized)?;
        if op.multipart {
            st.verify = Some(op);
            return Err(Error::OperationActive);
        }
        Ok(op.key.verify(&op.mech, data, sig)?)
    }

    /// `C_VerifyUpdate`.
    pub fn verify_update(&self, sh: u64, data: &[u8]) -> Result<()> {
        self.update(sh, Kind::Verify, data, true)
    }

    /// `C_VerifyFinal`.
    pub fn verify_final(&self, sh: u64, sig: &[u8]) -> Result<()> {
        let s = self.session(sh)?;
        let op = lock(&s.state).verify.take().ok_or(Error::OperationNotInitialized)?;
        Ok(op.key.verify(&op.mech, &op.buf, sig)?)
    }

    /// `C_VerifySignatureInit` (3.2): the signature comes first, the data after.
    pub fn verify_signature_init(
        &self,
        sh: u64,
        mech: Mechanism,
        key: u64,
        sig: &[u8],
    ) -> Result<()> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        if st.verify_sig.is_some() {
            return Err(Error::OperationActive);
        }
        let prepared = s.hsm.prepare(key, Usage::Verify, &mech).map_err(key_handle)?;
        st.verify_sig = Some((CryptoOp::new(prepared, mech, false), sig.to_vec()));
        Ok(())
    }

    /// `C_VerifySignature` (3.2, single part).
    pub fn verify_signature(&self, sh: u64, data: &[u8]) -> Result<()> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        let (op, sig) = st.verify_sig.take().ok_or(Error::OperationNotInitialized)?;
        if op.multipart {
            st.verify_sig = Some((op, sig));
            return Err(Error::OperationActive);
        }
        Ok(op.key.verify(&op.mech, data, &sig)?)
    }

    /// `C_VerifySignatureUpdate` (3.2).
    pub fn verify_signature_update(&self, sh: u64, data: &[u8]) -> Result<()> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        let (op, _) = st.verify_sig.as_mut().ok_or(Error::OperationNotInitialized)?;
        op.multipart = true;
        op.buf.extend_from_slice(data);
        Ok(())
    }

    /// `C_VerifySignatureFinal` (3.2).
    pub fn verify_signature_final(&self, sh: u64) -> Result<()> {
        let s = self.session(sh)?;
        let (op, sig) = lock(&s.state).verify_sig.take().ok_or(Error::OperationNotInitialized)?;
        Ok(op.key.verify(&op.mech, &op.buf, &sig)?)
    }

    /// `C_EncryptInit`.
    pub fn encrypt_init(&self, sh: u64, mech: Mechanism, key: u64) -> Result<()> {
        self.init(sh, Kind::Encrypt, mech, key)
    }

    /// `C_Encrypt`.
    pub fn encrypt(&self, sh: u64, data: &[u8], cap: Option<usize>) -> Result<Out> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        if st.encrypt.as_ref().is_some_and(|o| o.multipart) {
            return Err(Error::OperationActive);
        }
        finish(
            &mut st.encrypt,
            cap,
            false,
            |o| o.key.encrypt_len(&o.mech, data.len()),
            |o| o.key.encrypt(&o.mech, data),
        )
    }

    /// `C_EncryptUpdate`: every complete block comes back at once (see
    /// [`bulwark_core::stream`] for what each mode holds back).
    pub fn encrypt_update(&self, sh: u64, data: &[u8], cap: Option<usize>) -> Result<Out> {
        self.cipher_update(sh, Kind::Encrypt, data, cap)
    }

    /// `C_EncryptFinal`.
    pub fn encrypt_final(&self, sh: u64, cap: Option<usize>) -> Result<Out> {
        self.cipher_final(sh, Kind::Encrypt, cap)
    }

    /// One `C_EncryptUpdate` / `C_DecryptUpdate`. The output length is known before anything
    /// runs, so a length query or a short buffer consumes nothing and leaves the operation as
    /// it was; any other error ends it.
    fn cipher_update(&self, sh: u64, kind: Kind, data: &[u8], cap: Option<usize>) -> Result<Out> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        let slot = kind.slot(&mut st);
        let op = slot.as_mut().ok_or(Error::OperationNotInitialized)?;
        if op.pending.is_some() {
            // A single-part call is waiting for its output buffer.
            return Err(Error::OperationActive);
        }
        if op.needs_auth && !op.authed {
            *slot = None;
            return Err(Error::UserNotLoggedIn);
        }
        if op.stream.is_none() {
            let dir = if kind == Kind::Encrypt { Direction::Encrypt } else { Direction::Decrypt };
            op.stream = Some(if op.needs_auth {
                // A context login covers one use of the key: collect the input and decrypt it
                // in one call at C_DecryptFinal.
                CipherStream::buffered(dir, &op.mech)
            } else {
                CipherStream::new(dir, &op.mech)
            });
        }
        let key = op.key.clone();
        let stream = op.stream.as_mut().ok_or(Error::General("stream missing"))?;
        let n = stream.update_len(data.len());
        match cap {
            None => return Ok(Out::Len(n)),
            Some(c) if c < n => return Err(Error::BufferTooSmall(n)),
            Some(_) => {}
        }
        let r = stream.update(&*key, data);
        op.multipart = true;
        match r {
            Ok(out) => Ok(Out::Data(stream_output(out))),
            Err(e) => {
                *slot = None;
                Err(e.into())
            }
        }
    }

    /// `C_EncryptFinal` / `C_DecryptFinal`: the stream's last output (also for an operation
    /// that never saw an update: CBC-PAD of an empty message is one block).
    fn cipher_final(&self, sh: u64, kind: Kind, cap: Option<usize>) -> Result<Out> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        let slot = kind.slot(&mut st);
        if let Some(op) = slot.as_mut() {
            if op.stream.is_none() && op.pending.is_none() {
                let dir =
                    if kind == Kind::Encrypt { Direction::Encrypt } else { Direction::Decrypt };
                op.stream = Some(CipherStream::new(dir, &op.mech));
                op.multipart = true;
            }
        }
        finish(
            slot,
            cap,
            kind == Kind::Decrypt,
            |o| o.stream.as_ref().and_then(|st| st.finish_len(&*o.key)).unwrap_or(0),
            |o| {
                let key = o.key.clone();
                let st = o.stream.as_mut().ok_or(bulwark_core::Error::Internal("no stream"))?;
                Ok(st.finish(&*key)?.as_slice().to_vec())
            },
        )
    }

    /// `C_DecryptInit`.
    pub fn decrypt_init(&self, sh: u64, mech: Mechanism, key: u64) -> Result<()> {
        self.init(sh, Kind::Decrypt, mech, key)
    }

    /// `C_Decrypt`. The plaintext length is only known after decryption, so a length query
    /// decrypts and keeps the result for the call that follows.
    pub fn decrypt(&self, sh: u64, data: &[u8], cap: Option<usize>) -> Result<Out> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        if st.decrypt.as_ref().is_some_and(|o| o.multipart) {
            return Err(Error::OperationActive);
        }
        finish(
            &mut st.decrypt,
            cap,
            true,
            |_| 0,
            |o| Ok(o.key.decrypt(&o.mech, data)?.expose_secret().to_vec()),
        )
    }

    /// `C_DecryptUpdate`: every complete block but what the mode must hold back (CBC-PAD: the
    /// last block; GCM: everything, until the tag is checked at `C_DecryptFinal`).
    pub fn decrypt_update(&self, sh: u64, data: &[u8], cap: Option<usize>) -> Result<Out> {
        self.cipher_update(sh, Kind::Decrypt, data, cap)
    }

    /// `C_DecryptFinal`.
    pub fn decrypt_final(&self, sh: u64, cap: Option<usize>) -> Result<Out> {
        self.cipher_final(sh, Kind::Decrypt, cap)
    }

    /// `C_SignRecoverInit` (`CKM_RSA_PKCS`).
    pub fn sign_recover_init(&self, sh: u64, mech: Mechanism, key: u64) -> Result<()> {
        self.init(sh, Kind::SignRecover, mech, key)
    }

    /// `C_SignRecover`: for `CKM_RSA_PKCS` the same signature `C_Sign` makes.
    pub fn sign_recover(&self, sh: u64, data: &[u8], cap: Option<usize>) -> Result<Out> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        finish(
            &mut st.sign_recover,
            cap,
            false,
            |o| o.key.signature_len(&o.mech),
            |o| o.key.sign(&o.mech, data),
        )
    }

    /// `C_VerifyRecoverInit` (`CKM_RSA_PKCS`).
    pub fn verify_recover_init(&self, sh: u64, mech: Mechanism, key: u64) -> Result<()> {
        self.init(sh, Kind::VerifyRecover, mech, key)
    }

    /// `C_VerifyRecover`: the recovered data (a length query verifies and keeps the result).
    pub fn verify_recover(&self, sh: u64, sig: &[u8], cap: Option<usize>) -> Result<Out> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        finish(&mut st.verify_recover, cap, false, |_| 0, |o| o.key.verify_recover(&o.mech, sig))
    }

    /// `C_DigestInit`.
    pub fn digest_init(&self, sh: u64, mech: &Mechanism) -> Result<()> {
        let s = self.session(sh)?;
        let Mechanism::Digest(alg) = *mech else { return Err(Error::MechanismInvalid) };
        let mut st = lock(&s.state);
        if st.digest.is_some() {
            return Err(Error::OperationActive);
        }
        st.digest = Some(DigestOp { alg, buf: Zeroizing::new(Vec::new()), multipart: false });
        Ok(())
    }

    fn digest_out(&self, sh: u64, data: Option<&[u8]>, cap: Option<usize>) -> Result<Out> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        let op = st.digest.as_ref().ok_or(Error::OperationNotInitialized)?;
        if data.is_some() && op.multipart {
            return Err(Error::OperationActive);
        }
        let n = op.alg.output_len();
        match cap {
            None => return Ok(Out::Len(n)),
            Some(c) if c < n => return Err(Error::BufferTooSmall(n)),
            Some(_) => {}
        }
        let op = st.digest.take().ok_or(Error::OperationNotInitialized)?;
        let d = s.hsm.digest(op.alg, data.unwrap_or(&op.buf))?;
        Ok(Out::Data(Output::Secret(Zeroizing::new(d))))
    }

    /// `C_Digest`.
    pub fn digest(&self, sh: u64, data: &[u8], cap: Option<usize>) -> Result<Out> {
        self.digest_out(sh, Some(data), cap)
    }

    /// `C_DigestUpdate`.
    pub fn digest_update(&self, sh: u64, data: &[u8]) -> Result<()> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        let op = st.digest.as_mut().ok_or(Error::OperationNotInitialized)?;
        op.multipart = true;
        op.buf.extend_from_slice(data);
        Ok(())
    }

    /// `C_DigestKey`: secret key values never enter a digest here.
    pub fn digest_key(&self, sh: u64, key: u64) -> Result<()> {
        let s = self.session(sh)?;
        if lock(&s.state).digest.is_none() {
            return Err(Error::OperationNotInitialized);
        }
        s.hsm.attributes(key).map_err(key_handle)?;
        Err(Error::KeyIndigestible)
    }

    /// `C_DigestFinal`.
    pub fn digest_final(&self, sh: u64, cap: Option<usize>) -> Result<Out> {
        self.digest_out(sh, None, cap)
    }

    /// `C_GenerateRandom`.
    pub fn generate_random(&self, sh: u64, out: &mut [u8]) -> Result<()> {
        let s = self.session(sh)?;
        s.hsm.random(out)?;
        Ok(())
    }

    /// `C_SeedRandom`: the DRBG takes no caller entropy.
    pub fn seed_random(&self, sh: u64) -> Result<()> {
        self.session(sh)?;
        Err(Error::RandomSeedNotSupported)
    }
}
