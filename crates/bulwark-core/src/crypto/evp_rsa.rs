//! A small, audited shim over aws-lc-sys for the RSA signature mechanisms aws-lc-rs's safe API
//! does not offer: raw PKCS#1 v1.5 signatures over any input of up to k−11 bytes (`CKM_RSA_PKCS`
//! sign, verify, sign-recover and verify-recover: Java's `SHA1withRSA`, legacy `DigestInfo`s and
//! raw TLS 1.0/1.1 inputs), and RSA-PSS with any hash, MGF1 hash and salt length (aws-lc-rs
//! fixes the salt to the hash length and MGF1 to the hash, and has no SHA-1/SHA-224 PSS).
//!
//! It is the only module of the core that holds `unsafe` (the crate lints deny it everywhere
//! else). It calls the same aws-lc that aws-lc-rs links, through the `EVP_PKEY` interface only:
//! keys are parsed from the DER the engine already holds (PKCS#8 for private keys, SPKI for
//! public ones), each operation gets its own `EVP_PKEY_CTX`, and every pointer handed to C lives
//! for exactly one call. It must never expose a raw pointer, keep a borrowed buffer past a call,
//! or say why a verification failed (one opaque [`Error::SignatureInvalid`]).
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use aws_lc_sys as sys;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::mechanism::DigestAlg;

/// How an RSA signature is padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Padding {
    /// PKCS#1 v1.5 type 1 over the input as given (no `DigestInfo` added).
    Pkcs1Raw,
    /// RSASSA-PSS over a digest made with `hash`.
    Pss {
        /// The hash the input digest was made with.
        hash: DigestAlg,
        /// The MGF1 hash.
        mgf: DigestAlg,
        /// Salt length in bytes.
        salt: usize,
    },
}

fn md(d: DigestAlg) -> *const sys::EVP_MD {
    // SAFETY: the EVP_sha* functions take no arguments and return pointers to static,
    // immutable method tables that live for the whole process.
    unsafe {
        match d {
            DigestAlg::Sha1 => sys::EVP_sha1(),
            DigestAlg::Sha224 => sys::EVP_sha224(),
            DigestAlg::Sha256 => sys::EVP_sha256(),
            DigestAlg::Sha384 => sys::EVP_sha384(),
            DigestAlg::Sha512 => sys::EVP_sha512(),
        }
    }
}

/// An RSA `EVP_PKEY`, owned. Parsed once per loaded key and cached beside the aws-lc-rs objects.
pub(crate) struct EvpRsa(NonNull<sys::EVP_PKEY>);

// SAFETY: an EVP_PKEY is never mutated after parsing here (only read through per-call
// EVP_PKEY_CTXs, each of which takes its own reference); aws-lc's RSA private-key operations on
// a shared key are thread-safe (blinding state is per call / internally locked), which is how
// aws-lc-rs shares its own RSA key objects across threads.
unsafe impl Send for EvpRsa {}
// SAFETY: as for Send: shared use is read-only from Rust's side and thread-safe in aws-lc.
unsafe impl Sync for EvpRsa {}

impl Drop for EvpRsa {
    fn drop(&mut self) {
        // SAFETY: we own exactly one reference to this EVP_PKEY (from EVP_parse_*_key); it is
        // released once, here. aws-lc wipes private RSA components when the last reference goes.
        unsafe { sys::EVP_PKEY_free(self.0.as_ptr()) }
    }
}

impl std::fmt::Debug for EvpRsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EvpRsa")
    }
}

impl EvpRsa {
    /// Parses an RSA private key from PKCS#8 DER.
    pub(crate) fn from_pkcs8(der: &[u8]) -> Result<EvpRsa> {
        Self::parse(der, true)
    }

    /// Parses an RSA public key from SubjectPublicKeyInfo DER.
    pub(crate) fn from_spki(der: &[u8]) -> Result<EvpRsa> {
        Self::parse(der, false)
    }

    fn parse(der: &[u8], private: bool) -> Result<EvpRsa> {
        let mut cbs = MaybeUninit::<sys::CBS>::uninit();
        // SAFETY: CBS_init only stores the pointer and length into the CBS it is given; `der`
        // outlives the CBS, which is used only inside this function.
        unsafe { sys::CBS_init(cbs.as_mut_ptr(), der.as_ptr(), der.len()) };
        // SAFETY: initialized by CBS_init just above.
        let mut cbs = unsafe { cbs.assume_init() };
        // SAFETY: `cbs` is a valid CBS over `der`; the parsers read from it and return a new
        // EVP_PKEY (one reference, ours) or NULL.
        let raw = unsafe {
            if private {
                sys::EVP_parse_private_key(&raw mut cbs)
            } else {
                sys::EVP_parse_public_key(&raw mut cbs)
            }
        };
        let key = EvpRsa(NonNull::new(raw).ok_or(Error::KeyInvalid)?);
        // SAFETY: `cbs` is still valid (it only advanced over `der`); `key.0` is a live EVP_PKEY.
        let (rest, id) =
            unsafe { (sys::CBS_len(&raw const cbs), sys::EVP_PKEY_id(key.0.as_ptr())) };
        if rest != 0 || id != sys::EVP_PKEY_RSA as c_int {
            return Err(Error::KeyInvalid);
        }
        Ok(key)
    }

    /// The modulus length in bytes (k).
    pub(crate) fn modulus_len(&self) -> usize {
        // SAFETY: `self.0` is a live EVP_PKEY; EVP_PKEY_size only reads it.
        usize::try_from(unsafe { sys::EVP_PKEY_size(self.0.as_ptr()) }).unwrap_or(0)
    }

    /// A fresh operation context, initialized by `init` and configured for `padding`.
    fn ctx(
        &self,
        padding: Padding,
        init: unsafe extern "C" fn(*mut sys::EVP_PKEY_CTX) -> c_int,
    ) -> Result<Ctx> {
        // SAFETY: `self.0` is a live EVP_PKEY; the new context takes its own reference to it,
        // and a NULL engine is the documented default.
        let raw = unsafe { sys::EVP_PKEY_CTX_new(self.0.as_ptr(), std::ptr::null_mut()) };
        let ctx = Ctx(NonNull::new(raw).ok_or(Error::Internal("EVP_PKEY_CTX_new"))?);
        let p = ctx.0.as_ptr();
        // SAFETY: `p` is a live context; `init` is one of EVP_PKEY_{sign,verify,verify_recover}
        // _init, which take exactly such a pointer.
        if unsafe { init(p) } != 1 {
            return Err(Error::Internal("EVP_PKEY_*_init"));
        }
        let ok = match padding {
            // SAFETY: `p` is a live, initialized RSA context; the setters only store values.
            Padding::Pkcs1Raw => unsafe {
                sys::EVP_PKEY_CTX_set_rsa_padding(p, sys::RSA_PKCS1_PADDING as c_int) == 1
            },
            Padding::Pss { hash, mgf, salt } => {
                let salt = c_int::try_from(salt)
                    .map_err(|_| Error::MechanismParamInvalid("PSS salt length out of range"))?;
                // SAFETY: as above; the EVP_MD pointers are static (see `md`).
                unsafe {
                    sys::EVP_PKEY_CTX_set_rsa_padding(p, sys::RSA_PKCS1_PSS_PADDING as c_int) == 1
                        && sys::EVP_PKEY_CTX_set_signature_md(p, md(hash)) == 1
                        && sys::EVP_PKEY_CTX_set_rsa_mgf1_md(p, md(mgf)) == 1
                        && sys::EVP_PKEY_CTX_set_rsa_pss_saltlen(p, salt) == 1
                }
            }
        };
        if !ok {
            return Err(Error::MechanismParamInvalid("RSA padding parameters"));
        }
        Ok(ctx)
    }

    /// Checks the input length for `padding` before any C call, so that a bad length is the
    /// caller's error (`DataLenRange`), never an opaque failure.
    fn check_input(&self, padding: Padding, input: &[u8]) -> Result<()> {
        let k = self.modulus_len();
        match padding {
            Padding::Pkcs1Raw if input.len() + 11 > k => Err(Error::DataLenRange),
            Padding::Pss { hash, salt, .. } => {
                if input.len() != hash.output_len() {
                    return Err(Error::DataLenRange);
                }
                // RFC 8017 §9.1.1: emLen >= hLen + sLen + 2 (emLen is k, or k-1 when the
                // modulus bit length is 1 mod 8; aws-lc checks that case itself).
                if hash.output_len() + salt + 2 > k {
                    return Err(Error::MechanismParamInvalid("PSS salt too long for this key"));
                }
                Ok(())
            }
            Padding::Pkcs1Raw => Ok(()),
        }
    }

    /// Signs `input` (the raw data for [`Padding::Pkcs1Raw`], the digest for PSS).
    pub(crate) fn sign(&self, padding: Padding, input: &[u8]) -> Result<Vec<u8>> {
        self.check_input(padding, input)?;
        let ctx = self.ctx(padding, sys::EVP_PKEY_sign_init)?;
        let mut sig = vec![0u8; self.modulus_len()];
        let mut len = sig.len();
        // SAFETY: `sig` is writable for `len` bytes, `input` readable for its length; both
        // outlive the call, and `len` is updated to the bytes written (at most its input value).
        let rc = unsafe {
            sys::EVP_PKEY_sign(
                ctx.0.as_ptr(),
                sig.as_mut_ptr(),
                &raw mut len,
                input.as_ptr(),
                input.len(),
            )
        };
        if rc != 1 || len != sig.len() {
            clear_errors();
            return Err(Error::Internal("RSA signing failed"));
        }
        Ok(sig)
    }

    /// Verifies `sig` over `input`. Any failure is the one opaque `SignatureInvalid`.
    pub(crate) fn verify(&self, padding: Padding, input: &[u8], sig: &[u8]) -> Result<()> {
        if sig.len() != self.modulus_len() {
            return Err(Error::SignatureLenRange);
        }
        self.check_input(padding, input)?;
        let ctx = self.ctx(padding, sys::EVP_PKEY_verify_init)?;
        // SAFETY: both buffers are readable for their lengths and outlive the call.
        let rc = unsafe {
            sys::EVP_PKEY_verify(
                ctx.0.as_ptr(),
                sig.as_ptr(),
                sig.len(),
                input.as_ptr(),
                input.len(),
            )
        };
        if rc != 1 {
            clear_errors();
            return Err(Error::SignatureInvalid);
        }
        Ok(())
    }

    /// PKCS#1 v1.5 verify-recover: the data a raw PKCS#1 v1.5 signature was made over.
    pub(crate) fn verify_recover(&self, sig: &[u8]) -> Result<Vec<u8>> {
        if sig.len() != self.modulus_len() {
            return Err(Error::SignatureLenRange);
        }
        let ctx = self.ctx(Padding::Pkcs1Raw, sys::EVP_PKEY_verify_recover_init)?;
        let mut out = Zeroizing::new(vec![0u8; sig.len()]);
        let mut len = out.len();
        // SAFETY: `out` is writable for `len` bytes and `sig` readable for its length; `len`
        // is updated to the recovered length (at most its input value).
        let rc = unsafe {
            sys::EVP_PKEY_verify_recover(
                ctx.0.as_ptr(),
                out.as_mut_ptr(),
                &raw mut len,
                sig.as_ptr(),
                sig.len(),
            )
        };
        if rc != 1 || len > out.len() {
            clear_errors();
            return Err(Error::SignatureInvalid);
        }
        Ok(out[..len].to_vec())
    }
}

/// One `EVP_PKEY_CTX`, freed on drop.
struct Ctx(NonNull<sys::EVP_PKEY_CTX>);

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: we own this context (from EVP_PKEY_CTX_new) and free it exactly once.
        unsafe { sys::EVP_PKEY_CTX_free(self.0.as_ptr()) }
    }
}

/// Drops aws-lc's thread-local error queue after a failure we report ourselves, so a stale
/// entry never surfaces in a later, unrelated aws-lc-rs call on this thread.
fn clear_errors() {
    // SAFETY: ERR_clear_error takes no arguments and only touches the thread's error queue.
    unsafe { sys::ERR_clear_error() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::KeyPair as _;

    fn pair() -> (EvpRsa, EvpRsa, KeyPair) {
        let kp = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 =
            aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp).unwrap();
        let spki = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(
            kp.public_key(),
        )
        .unwrap();
        (EvpRsa::from_pkcs8(pkcs8.as_ref()).unwrap(), EvpRsa::from_spki(spki.as_ref()).unwrap(), kp)
    }

    #[test]
    fn raw_pkcs1_signs_any_short_input_and_recovers_it() {
        let (sk, pk, _) = pair();
        for input in [&b""[..], b"x", &[7u8; 245]] {
            let sig = sk.sign(Padding::Pkcs1Raw, input).unwrap();
            pk.verify(Padding::Pkcs1Raw, input, &sig).unwrap();
            assert_eq!(pk.verify_recover(&sig).unwrap(), input);
            let mut bad = sig.clone();
            bad[10] ^= 1;
            assert!(matches!(
                pk.verify(Padding::Pkcs1Raw, input, &bad),
                Err(Error::SignatureInvalid)
            ));
            assert!(matches!(pk.verify_recover(&bad), Err(Error::SignatureInvalid)));
        }
        assert!(matches!(sk.sign(Padding::Pkcs1Raw, &[0u8; 246]), Err(Error::DataLenRange)));
    }

    #[test]
    fn pss_any_salt_round_trips_and_is_strict() {
        let (sk, pk, _) = pair();
        let d = [5u8; 20];
        let p = Padding::Pss { hash: DigestAlg::Sha1, mgf: DigestAlg::Sha1, salt: 0 };
        let sig = sk.sign(p, &d).unwrap();
        pk.verify(p, &d, &sig).unwrap();
        let other = Padding::Pss { hash: DigestAlg::Sha1, mgf: DigestAlg::Sha1, salt: 20 };
        assert!(matches!(pk.verify(other, &d, &sig), Err(Error::SignatureInvalid)));
        assert!(matches!(sk.sign(p, &[0u8; 32]), Err(Error::DataLenRange)));
        let huge = Padding::Pss { hash: DigestAlg::Sha1, mgf: DigestAlg::Sha1, salt: 300 };
        assert!(matches!(sk.sign(huge, &d), Err(Error::MechanismParamInvalid(_))));
    }

    #[test]
    fn rejects_non_rsa_and_trailing_data() {
        assert!(EvpRsa::from_spki(b"\x30\x00").is_err());
        let (_, _, kp) = pair();
        let spki = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(
            kp.public_key(),
        )
        .unwrap();
        let mut long = spki.as_ref().to_vec();
        long.push(0);
        assert!(EvpRsa::from_spki(&long).is_err());
    }
}
