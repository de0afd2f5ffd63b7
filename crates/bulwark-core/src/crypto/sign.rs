//! Signing and verification: RSA PKCS#1 v1.5 and PSS, ECDSA (P-256/384/521, secp256k1 low-S),
//! Ed25519, ML-DSA and HMAC.
//!
//! ECDSA keeps one aws-lc-rs key per curve: digests of other sizes are truncated or left-padded
//! to the curve's native hash length, which is exactly the FIPS 186-5 rule (use the leftmost
//! `min(N, outlen)` bits), so one key serves every hash. Verification failures are reported as
//! [`Error::SignatureInvalid`] with no further cause.

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, EcdsaSigningAlgorithm, EcdsaVerificationAlgorithm, ParsedPublicKey,
};
use aws_lc_rs::{cmac, hmac};
use subtle::ConstantTimeEq;

use super::der;
use super::evp_rsa::Padding;
use super::keys::{Curve, KeySpec};
use super::loaded::{
    AesKey, GenericKey, Inner, LoadedKey, LoadedPublicKey, PubInner, RsaKey, RsaPub,
};
use super::{digest_alg, get_or_try_init, Provider};
use crate::error::{Error, Result};
use crate::mechanism::{DigestAlg, Mechanism};

pub(crate) fn ecdsa_sign_alg(c: Curve) -> &'static EcdsaSigningAlgorithm {
    match c {
        Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
        Curve::Secp256k1 => &signature::ECDSA_P256K1_SHA256_FIXED_SIGNING,
    }
}

pub(crate) fn ecdsa_verify_alg(c: Curve) -> &'static EcdsaVerificationAlgorithm {
    match c {
        Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
        Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
        Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED,
        Curve::Secp256k1 => &signature::ECDSA_P256K1_SHA256_FIXED,
    }
}

/// The hash aws-lc-rs pairs with each curve.
fn native_hash(c: Curve) -> DigestAlg {
    match c {
        Curve::P256 | Curve::Secp256k1 => DigestAlg::Sha256,
        Curve::P384 => DigestAlg::Sha384,
        Curve::P521 => DigestAlg::Sha512,
    }
}

/// Turns a digest of any length in 20..=64 into the curve's native-length digest with the same
/// FIPS 186-5 integer value: longer digests keep their leftmost bytes, shorter ones are
/// left-padded with zeros. (All four curves have byte-aligned orders of at least 256 bits, except
/// P-521, whose native 64-byte digest is never truncated.)
fn ecdsa_digest(c: Curve, d: &[u8]) -> Result<Digest> {
    if !(20..=64).contains(&d.len()) {
        return Err(Error::DataLenRange);
    }
    let native = native_hash(c);
    let n = native.output_len();
    let mut buf = [0u8; 64];
    if d.len() >= n {
        buf[..n].copy_from_slice(&d[..n]);
    } else {
        buf[n - d.len()..n].copy_from_slice(d);
    }
    Ok(Digest::import_less_safe(&buf[..n], digest_alg(native))?)
}

/// secp256k1 group order n and n/2 (SEC 2 §2.4.1).
const SECP256K1_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];
const SECP256K1_HALF_N: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

/// Replaces s by n - s when s > n/2 in a fixed-width secp256k1 `r || s` (BIP 62 / BIP 146).
/// `s` is public (it is part of the signature), so variable time is fine.
pub(crate) fn secp256k1_low_s(sig: &mut [u8]) {
    if sig.len() != 64 {
        return;
    }
    let s = &mut sig[32..];
    if *s <= SECP256K1_HALF_N[..] {
        return;
    }
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let v = i16::from(SECP256K1_N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(v < 0);
        s[i] = v.rem_euclid(256) as u8;
    }
}

/// Converts a fixed-width ECDSA signature (`r || s`, PKCS#11 format) to DER (openssl format).
///
/// # Errors
/// [`Error::SignatureLenRange`] if the length is not twice the curve's field size.
pub fn ecdsa_raw_to_der(curve: Curve, raw: &[u8]) -> Result<Vec<u8>> {
    der::ecdsa_raw_to_der(curve.field_bytes(), raw).ok_or(Error::SignatureLenRange)
}

/// Converts a strict-DER ECDSA signature to fixed-width `r || s`.
///
/// # Errors
/// [`Error::SignatureInvalid`] on malformed DER or out-of-range integers.
pub fn ecdsa_der_to_raw(curve: Curve, der_sig: &[u8]) -> Result<Vec<u8>> {
    der::ecdsa_der_to_raw(curve.field_bytes(), der_sig).ok_or(Error::SignatureInvalid)
}

fn hash_index(d: DigestAlg) -> Result<usize> {
    match d {
        DigestAlg::Sha256 => Ok(0),
        DigestAlg::Sha384 => Ok(1),
        DigestAlg::Sha512 => Ok(2),
        DigestAlg::Sha1 | DigestAlg::Sha224 => {
            Err(Error::MechanismParamInvalid("hash must be SHA-256, SHA-384 or SHA-512"))
        }
    }
}

fn pss_encoding(d: DigestAlg) -> Result<&'static signature::RsaSignatureEncoding> {
    Ok([&signature::RSA_PSS_SHA256, &signature::RSA_PSS_SHA384, &signature::RSA_PSS_SHA512]
        [hash_index(d)?])
}

/// Whether aws-lc-rs's own PSS encodings cover these parameters (salt = hash length, MGF1 =
/// hash, SHA-256/384/512); anything else goes through the `evp_rsa` shim.
fn pss_native(hash: DigestAlg, mgf_hash: DigestAlg, salt_len: usize) -> bool {
    hash_index(hash).is_ok() && mgf_hash == hash && salt_len == hash.output_len()
}

/// How an RSA signature mechanism treats its input.
enum RsaSig {
    /// Message input, hashed and padded by aws-lc-rs.
    Message(&'static signature::RsaSignatureEncoding, DigestAlg, bool),
    /// Pre-computed digest input, padded by aws-lc-rs.
    Digest(&'static signature::RsaSignatureEncoding, DigestAlg, bool),
    /// Through the `evp_rsa` shim: raw PKCS#1 v1.5 over the input, or PSS with parameters
    /// aws-lc-rs does not offer. `Some(h)`: the input is a message to hash with `h` first.
    Evp(Padding, Option<DigestAlg>),
}

fn rsa_sig(mech: &Mechanism) -> Result<Option<RsaSig>> {
    let pss_msg = |expect, hash, mgf_hash, salt_len| -> Result<RsaSig> {
        if hash != expect {
            return Err(Error::MechanismParamInvalid("PSS hash does not match the mechanism"));
        }
        Ok(if pss_native(hash, mgf_hash, salt_len) {
            RsaSig::Message(pss_encoding(hash)?, hash, true)
        } else {
            RsaSig::Evp(Padding::Pss { hash, mgf: mgf_hash, salt: salt_len }, Some(hash))
        })
    };
    Ok(Some(match *mech {
        Mechanism::RsaPkcs => RsaSig::Evp(Padding::Pkcs1Raw, None),
        Mechanism::Sha256RsaPkcs => {
            RsaSig::Message(&signature::RSA_PKCS1_SHA256, DigestAlg::Sha256, false)
        }
        Mechanism::Sha384RsaPkcs => {
            RsaSig::Message(&signature::RSA_PKCS1_SHA384, DigestAlg::Sha384, false)
        }
        Mechanism::Sha512RsaPkcs => {
            RsaSig::Message(&signature::RSA_PKCS1_SHA512, DigestAlg::Sha512, false)
        }
        Mechanism::RsaPkcsPss { hash, mgf_hash, salt_len } => {
            if pss_native(hash, mgf_hash, salt_len) {
                RsaSig::Digest(pss_encoding(hash)?, hash, true)
            } else {
                RsaSig::Evp(Padding::Pss { hash, mgf: mgf_hash, salt: salt_len }, None)
            }
        }
        Mechanism::Sha256RsaPkcsPss { hash, mgf_hash, salt_len } => {
            pss_msg(DigestAlg::Sha256, hash, mgf_hash, salt_len)?
        }
        Mechanism::Sha384RsaPkcsPss { hash, mgf_hash, salt_len } => {
            pss_msg(DigestAlg::Sha384, hash, mgf_hash, salt_len)?
        }
        Mechanism::Sha512RsaPkcsPss { hash, mgf_hash, salt_len } => {
            pss_msg(DigestAlg::Sha512, hash, mgf_hash, salt_len)?
        }
        _ => return Ok(None),
    }))
}

/// The digest carried by a digest-input RSA mechanism.
fn rsa_input_digest(data: &[u8], h: DigestAlg) -> Result<Digest> {
    if data.len() != h.output_len() {
        return Err(Error::DataLenRange);
    }
    Ok(Digest::import_less_safe(data, digest_alg(h))?)
}

/// The input the shim signs: the data itself, or its digest for message mechanisms.
fn evp_input(data: &[u8], prehash: Option<DigestAlg>) -> std::borrow::Cow<'_, [u8]> {
    match prehash {
        Some(h) => std::borrow::Cow::Owned(digest::digest(digest_alg(h), data).as_ref().to_vec()),
        None => std::borrow::Cow::Borrowed(data),
    }
}

/// What an ECDSA mechanism signs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EcdsaInput {
    /// `CKM_ECDSA`: a caller-supplied digest.
    Digest,
    /// `CKM_ECDSA_SHA*`: a message hashed with this hash.
    Message(DigestAlg),
}

fn ecdsa_input(mech: &Mechanism) -> Option<EcdsaInput> {
    match mech {
        Mechanism::Ecdsa => Some(EcdsaInput::Digest),
        Mechanism::EcdsaSha256 => Some(EcdsaInput::Message(DigestAlg::Sha256)),
        Mechanism::EcdsaSha384 => Some(EcdsaInput::Message(DigestAlg::Sha384)),
        Mechanism::EcdsaSha512 => Some(EcdsaInput::Message(DigestAlg::Sha512)),
        _ => None,
    }
}

fn wrong_mechanism(spec: KeySpec, mech: &Mechanism) -> Error {
    if mech.key_fits(spec) {
        Error::MechanismInvalid(mech.ck_type())
    } else {
        Error::KeyTypeInconsistent
    }
}

impl GenericKey {
    pub(super) fn hmac_key(&self, d: DigestAlg) -> Result<&hmac::Key> {
        let alg = [hmac::HMAC_SHA256, hmac::HMAC_SHA384, hmac::HMAC_SHA512][hash_index(d)?];
        get_or_try_init(&self.hmac[hash_index(d)?], || {
            Ok(hmac::Key::new(alg, self.key.expose_secret()))
        })
    }
}

impl AesKey {
    fn cmac_key(&self) -> Result<&cmac::Key> {
        get_or_try_init(&self.cmac, || {
            let alg = match self.key.len() {
                16 => cmac::AES_128,
                24 => cmac::AES_192,
                32 => cmac::AES_256,
                _ => return Err(Error::KeySizeRange),
            };
            Ok(cmac::Key::new(alg, self.key.expose_secret())?)
        })
    }
}

/// The tag length of a CMAC mechanism, checked (`CKM_AES_CMAC_GENERAL`: 1..=16 bytes).
fn cmac_len(mech: &Mechanism) -> Result<Option<usize>> {
    match mech {
        Mechanism::AesCmac => Ok(Some(CMAC_TAG)),
        Mechanism::AesCmacGeneral { mac_len } if (1..=CMAC_TAG).contains(mac_len) => {
            Ok(Some(*mac_len))
        }
        Mechanism::AesCmacGeneral { .. } => {
            Err(Error::MechanismParamInvalid("CMAC length must be 1..=16 bytes"))
        }
        _ => Ok(None),
    }
}

const CMAC_TAG: usize = 16;

impl RsaKey {
    fn sign(&self, mech: &Mechanism, data: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(kind) = rsa_sig(mech)? else { return Ok(None) };
        let mut sig = vec![0u8; self.kp.public_modulus_len()];
        match kind {
            RsaSig::Message(enc, _, _) => {
                self.kp.sign(enc, &SystemRandom::new(), data, &mut sig)?;
            }
            RsaSig::Digest(enc, h, _) => {
                self.kp.sign_digest(enc, &rsa_input_digest(data, h)?, &mut sig)?;
            }
            RsaSig::Evp(padding, prehash) => {
                return Ok(Some(self.evp()?.sign(padding, &evp_input(data, prehash))?));
            }
        }
        Ok(Some(sig))
    }
}

impl LoadedKey {
    /// Signs `data` (a message or a digest, per the mechanism).
    ///
    /// # Errors
    /// [`Error::KeyTypeInconsistent`] / [`Error::MechanismInvalid`] for a mechanism this key cannot
    /// sign with, [`Error::MechanismParamInvalid`], [`Error::DataLenRange`], [`Error::ErrorState`].
    pub fn sign(&self, p: &Provider, mech: &Mechanism, data: &[u8]) -> Result<Vec<u8>> {
        p.check()?;
        let out = match (&self.inner, mech) {
            (Inner::Rsa(k), _) => k.sign(mech, data)?,
            (Inner::Ec(k), _) => match ecdsa_input(mech) {
                Some(hash) => {
                    let mut sig = if hash == EcdsaInput::Message(native_hash(k.curve)) {
                        k.kp.sign(&SystemRandom::new(), data)?
                    } else {
                        let d = match hash {
                            EcdsaInput::Message(h) => digest::digest(digest_alg(h), data),
                            EcdsaInput::Digest => ecdsa_digest(k.curve, data)?,
                        };
                        k.kp.sign_digest(&ecdsa_digest(k.curve, d.as_ref())?)?
                    }
                    .as_ref()
                    .to_vec();
                    if k.curve == Curve::Secp256k1 {
                        secp256k1_low_s(&mut sig);
                    }
                    Some(sig)
                }
                None => None,
            },
            (Inner::Ed25519(kp), Mechanism::EdDsa(params)) => {
                if params.is_some() {
                    return Err(Error::MechanismParamInvalid("only pure Ed25519 is supported"));
                }
                Some(kp.try_sign(data)?.as_ref().to_vec())
            }
            (Inner::MlDsa(kp), Mechanism::MlDsa { context }) => {
                if !context.is_empty() {
                    return Err(Error::MechanismParamInvalid(
                        "ML-DSA context strings are not supported",
                    ));
                }
                let mut sig = vec![0u8; kp.algorithm().signature_len()];
                let n = kp.sign(data, &mut sig)?;
                sig.truncate(n);
                Some(sig)
            }
            (Inner::Generic(k), Mechanism::Hmac(d)) => {
                Some(hmac::sign(k.hmac_key(*d)?, data).as_ref().to_vec())
            }
            (Inner::Aes(k), _) => match cmac_len(mech)? {
                Some(n) => Some(cmac::sign(k.cmac_key()?, data)?.as_ref()[..n].to_vec()),
                None => None,
            },
            _ => None,
        };
        out.ok_or_else(|| wrong_mechanism(self.spec, mech))
    }

    /// Verifies `sig` over `data`. HMAC tags are compared in constant time.
    ///
    /// # Errors
    /// [`Error::SignatureInvalid`] when the signature does not verify;
    /// [`Error::SignatureLenRange`] for an impossible length; as [`LoadedKey::sign`] otherwise.
    pub fn verify(&self, p: &Provider, mech: &Mechanism, data: &[u8], sig: &[u8]) -> Result<()> {
        p.check()?;
        match (&self.inner, mech) {
            (Inner::Generic(k), Mechanism::Hmac(d)) => {
                let key = k.hmac_key(*d)?;
                if sig.len() != d.output_len() {
                    return Err(Error::SignatureLenRange);
                }
                hmac::verify(key, data, sig).map_err(|_| Error::SignatureInvalid)
            }
            (Inner::Aes(k), _) => {
                let n = cmac_len(mech)?.ok_or_else(|| wrong_mechanism(self.spec, mech))?;
                if sig.len() != n {
                    return Err(Error::SignatureLenRange);
                }
                let tag = cmac::sign(k.cmac_key()?, data)?;
                if bool::from(tag.as_ref()[..n].ct_eq(sig)) {
                    Ok(())
                } else {
                    Err(Error::SignatureInvalid)
                }
            }
            (Inner::Generic(_), _) => Err(wrong_mechanism(self.spec, mech)),
            _ => self.public_or_err()?.verify(p, mech, data, sig),
        }
    }

    /// `C_VerifyRecover` with the public half of a key pair.
    ///
    /// # Errors
    /// As [`LoadedPublicKey::verify_recover`].
    pub fn verify_recover(&self, p: &Provider, mech: &Mechanism, sig: &[u8]) -> Result<Vec<u8>> {
        self.public_or_err()?.verify_recover(p, mech, sig)
    }

    /// Maximum signature length for `mech` with this key (0 if it cannot sign with it).
    pub fn signature_len(&self, mech: &Mechanism) -> usize {
        match (&self.inner, mech) {
            (Inner::Generic(_), Mechanism::Hmac(d)) => d.output_len(),
            (Inner::Aes(_), _) => cmac_len(mech).ok().flatten().unwrap_or(0),
            (Inner::MlDsa(kp), Mechanism::MlDsa { .. }) => kp.algorithm().signature_len(),
            _ => self.public.as_ref().map_or(0, |p| p.signature_len(mech)),
        }
    }
}

impl RsaPub {
    fn verifier(&self, spki: &[u8], pss: bool, h: DigestAlg) -> Result<&ParsedPublicKey> {
        let i = hash_index(h)?;
        let (cell, alg): (_, &'static signature::RsaParameters) = if pss {
            (
                &self.pss[i],
                [
                    &signature::RSA_PSS_2048_8192_SHA256,
                    &signature::RSA_PSS_2048_8192_SHA384,
                    &signature::RSA_PSS_2048_8192_SHA512,
                ][i],
            )
        } else {
            (
                &self.pkcs1[i],
                [
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    &signature::RSA_PKCS1_2048_8192_SHA384,
                    &signature::RSA_PKCS1_2048_8192_SHA512,
                ][i],
            )
        };
        get_or_try_init(cell, || Ok(ParsedPublicKey::new(alg, spki)?))
    }
}

impl LoadedPublicKey {
    /// Verifies `sig` over `data`.
    ///
    /// # Errors
    /// [`Error::SignatureInvalid`] when the signature does not verify;
    /// [`Error::SignatureLenRange`] for an impossible length; [`Error::KeyTypeInconsistent`],
    /// [`Error::MechanismParamInvalid`], [`Error::DataLenRange`], [`Error::ErrorState`].
    pub fn verify(&self, p: &Provider, mech: &Mechanism, data: &[u8], sig: &[u8]) -> Result<()> {
        p.check()?;
        let bad = |_| Error::SignatureInvalid;
        match (&self.inner, mech) {
            (PubInner::Rsa(k), _) => {
                let kind = rsa_sig(mech)?.ok_or_else(|| wrong_mechanism(self.spec(), mech))?;
                if sig.len() != k.modulus_len {
                    return Err(Error::SignatureLenRange);
                }
                let spki = self.public.spki_der();
                match kind {
                    RsaSig::Message(_, h, pss) => {
                        k.verifier(spki, pss, h)?.verify_sig(data, sig).map_err(bad)
                    }
                    RsaSig::Digest(_, h, pss) => {
                        let d = rsa_input_digest(data, h)?;
                        k.verifier(spki, pss, h)?.verify_digest_sig(&d, sig).map_err(bad)
                    }
                    RsaSig::Evp(padding, prehash) => {
                        k.evp(spki)?.verify(padding, &evp_input(data, prehash), sig)
                    }
                }
            }
            (PubInner::Ec(curve, key), _) => {
                let hash = ecdsa_input(mech).ok_or_else(|| wrong_mechanism(self.spec(), mech))?;
                if sig.len() != 2 * curve.field_bytes() {
                    return Err(Error::SignatureLenRange);
                }
                if hash == EcdsaInput::Message(native_hash(*curve)) {
                    return key.verify_sig(data, sig).map_err(bad);
                }
                let d = match hash {
                    EcdsaInput::Message(h) => {
                        ecdsa_digest(*curve, digest::digest(digest_alg(h), data).as_ref())?
                    }
                    EcdsaInput::Digest => ecdsa_digest(*curve, data)?,
                };
                key.verify_digest_sig(&d, sig).map_err(bad)
            }
            (PubInner::Ed25519(key), Mechanism::EdDsa(params)) => {
                if params.is_some() {
                    return Err(Error::MechanismParamInvalid("only pure Ed25519 is supported"));
                }
                if sig.len() != 64 {
                    return Err(Error::SignatureLenRange);
                }
                key.verify_sig(data, sig).map_err(bad)
            }
            (PubInner::MlDsa(key), Mechanism::MlDsa { context }) => {
                if !context.is_empty() {
                    return Err(Error::MechanismParamInvalid(
                        "ML-DSA context strings are not supported",
                    ));
                }
                key.verify_sig(data, sig).map_err(bad)
            }
            _ => Err(wrong_mechanism(self.spec(), mech)),
        }
    }

    /// `C_VerifyRecover`: the data a `CKM_RSA_PKCS` signature was made over.
    ///
    /// # Errors
    /// [`Error::SignatureInvalid`] when the signature does not open, [`Error::SignatureLenRange`],
    /// [`Error::MechanismInvalid`] for other mechanisms, [`Error::KeyTypeInconsistent`],
    /// [`Error::ErrorState`].
    pub fn verify_recover(&self, p: &Provider, mech: &Mechanism, sig: &[u8]) -> Result<Vec<u8>> {
        p.check()?;
        match (&self.inner, mech) {
            (PubInner::Rsa(k), Mechanism::RsaPkcs) => {
                k.evp(self.public.spki_der())?.verify_recover(sig)
            }
            (PubInner::Rsa(_), _) => Err(Error::MechanismInvalid(mech.ck_type())),
            _ => Err(wrong_mechanism(self.spec(), mech)),
        }
    }

    /// Maximum signature length for `mech` with this key (0 if not a signature mechanism for it).
    pub fn signature_len(&self, mech: &Mechanism) -> usize {
        match (&self.inner, mech) {
            (PubInner::Rsa(k), _) if rsa_sig(mech).is_ok_and(|s| s.is_some()) => k.modulus_len,
            (PubInner::Ec(c, _), _) if ecdsa_input(mech).is_some() => 2 * c.field_bytes(),
            (PubInner::Ed25519(_), Mechanism::EdDsa(_)) => 64,
            (PubInner::MlDsa(_), Mechanism::MlDsa { .. }) => match self.spec() {
                KeySpec::MlDsa(p) => p.signing_alg().signature_len(),
                _ => 0,
            },
            _ => 0,
        }
    }
}

/// The DER `DigestInfo` for a SHA-256/384/512 digest (chosen by length): the input that
/// `CKM_RSA_PKCS` signs.
///
/// # Errors
/// [`Error::DataLenRange`] for other digest lengths.
pub fn rsa_digest_info(digest: &[u8]) -> Result<Vec<u8>> {
    der::digest_info(digest).ok_or(Error::DataLenRange)
}
