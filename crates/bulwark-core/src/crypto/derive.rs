//! Key derivation and encapsulation: ECDH (P-256/384/521) and X25519 with the NULL or ANSI X9.63
//! KDF (SHA-1 to SHA-512), HKDF (RFC 5869, PKCS#11 `CK_HKDF_PARAMS` semantics) and ML-KEM.
//!
//! Derived bytes are returned as [`SecretBytes`] and never leave this module any other way;
//! intermediate shared secrets are wiped. A malformed peer public value is reported as
//! [`Error::MechanismParamInvalid`] without detail.

use aws_lc_rs::{agreement, digest, hkdf, hmac, kem};
use zeroize::Zeroizing;

use super::der;
use super::keys::{Curve, KeySpec};
use super::loaded::{Inner, LoadedKey, LoadedPublicKey, PubInner};
use super::{digest_alg, Provider};
use crate::error::{Error, Result};
use crate::mechanism::{DigestAlg, EcdhKdf, Mechanism};
use crate::secret::SecretBytes;

/// Largest derived output accepted, in bytes (HKDF's own limit is 255 hash lengths).
const MAX_DERIVE: usize = 8192;

/// An output length for `hkdf::Prk::expand`.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The raw peer value from `public_data`: the bare encoding if it has the expected length,
/// otherwise a DER OCTET STRING wrapping it (PKCS#11 allows both).
fn peer_value(public_data: &[u8], expected: usize) -> Result<&[u8]> {
    let bad = Error::MechanismParamInvalid("invalid peer public key");
    if public_data.len() == expected {
        return Ok(public_data);
    }
    match der::read_single(public_data, der::OCTET_STRING) {
        Some(inner) if inner.len() == expected => Ok(inner),
        _ => Err(bad),
    }
}

/// ANSI X9.63 KDF (SEC 1 §3.6.1): `Hash(Z || counter || SharedInfo)` blocks, counter from 1.
fn x963_kdf(hash: DigestAlg, z: &[u8], shared_info: &[u8], out_len: usize) -> Result<SecretBytes> {
    let mut out = Zeroizing::new(Vec::with_capacity(out_len + 64));
    let mut counter: u32 = 1;
    while out.len() < out_len {
        let mut ctx = digest::Context::new(digest_alg(hash));
        ctx.update(z);
        ctx.update(&counter.to_be_bytes());
        ctx.update(shared_info);
        out.extend_from_slice(ctx.finish().as_ref());
        counter = counter.checked_add(1).ok_or(Error::KeySizeRange)?;
    }
    out.truncate(out_len);
    Ok(SecretBytes::new(std::mem::take(&mut *out)))
}

/// Applies the ECDH KDF to the shared secret `z`. With `CKD_NULL` a shorter output keeps the
/// trailing bytes of `z` (as `SoftHSMv2` does); `out_len == 0` means the natural length.
fn ecdh_kdf(kdf: EcdhKdf, shared_data: &[u8], z: &[u8], out_len: usize) -> Result<SecretBytes> {
    match kdf {
        EcdhKdf::Null => {
            if !shared_data.is_empty() {
                return Err(Error::MechanismParamInvalid("CKD_NULL takes no shared data"));
            }
            let n = if out_len == 0 { z.len() } else { out_len };
            if n > z.len() {
                return Err(Error::KeySizeRange);
            }
            Ok(SecretBytes::from_slice(&z[z.len() - n..]))
        }
        EcdhKdf::X963(h) => {
            // SHA-1 and SHA-224 too: OpenSSL's default CMS envelope to an EC certificate
            // (dhSinglePass-stdDH-sha1kdf) derives its key-encryption key with CKD_SHA1_KDF. A
            // KDF over a high-entropy shared secret does not rely on SHA-1's collision resistance.
            let n = if out_len == 0 { h.output_len() } else { out_len };
            if n > MAX_DERIVE {
                return Err(Error::KeySizeRange);
            }
            x963_kdf(h, z, shared_data, n)
        }
    }
}

fn hkdf_alg(h: DigestAlg) -> Result<(hkdf::Algorithm, hmac::Algorithm)> {
    match h {
        DigestAlg::Sha256 => Ok((hkdf::HKDF_SHA256, hmac::HMAC_SHA256)),
        DigestAlg::Sha384 => Ok((hkdf::HKDF_SHA384, hmac::HMAC_SHA384)),
        DigestAlg::Sha512 => Ok((hkdf::HKDF_SHA512, hmac::HMAC_SHA512)),
        DigestAlg::Sha1 | DigestAlg::Sha224 => {
            Err(Error::MechanismParamInvalid("HKDF needs SHA-256/384/512"))
        }
    }
}

/// HKDF with PKCS#11 `CK_HKDF_PARAMS` semantics: extract and/or expand. Extract alone yields the
/// PRK (hash length); expand alone treats the key as the PRK.
pub(crate) fn hkdf(
    ikm: &[u8],
    extract: bool,
    expand: bool,
    hash: DigestAlg,
    salt: Option<&[u8]>,
    info: &[u8],
    out_len: usize,
) -> Result<SecretBytes> {
    let (alg, mac) = hkdf_alg(hash)?;
    let hlen = hash.output_len();
    // RFC 5869 §2.2: a missing salt is HashLen zeros, which HMAC treats like an empty key.
    let salt = salt.unwrap_or(&[]);
    let expand_into = |prk: hkdf::Prk| -> Result<SecretBytes> {
        if out_len == 0 || out_len > 255 * hlen {
            return Err(Error::KeySizeRange);
        }
        let mut out = SecretBytes::zeroed(out_len);
        prk.expand(&[info], Len(out_len))?.fill(out.expose_secret_mut())?;
        Ok(out)
    };
    match (extract, expand) {
        (true, true) => expand_into(hkdf::Salt::new(alg, salt).extract(ikm)),
        (false, true) => expand_into(hkdf::Prk::new_less_safe(alg, ikm)),
        (true, false) => {
            if out_len != 0 && out_len != hlen {
                return Err(Error::KeySizeRange);
            }
            let prk = hmac::sign(&hmac::Key::new(mac, salt), ikm);
            Ok(SecretBytes::from_slice(prk.as_ref()))
        }
        (false, false) => Err(Error::MechanismParamInvalid("HKDF needs extract or expand")),
    }
}

impl LoadedKey {
    /// Derives `out_len` bytes (0 = the mechanism's natural length where it has one).
    ///
    /// # Errors
    /// [`Error::MechanismParamInvalid`] (bad peer key, unsupported KDF), [`Error::KeySizeRange`]
    /// (impossible length), [`Error::KeyTypeInconsistent`], [`Error::ErrorState`].
    pub fn derive(&self, p: &Provider, mech: &Mechanism, out_len: usize) -> Result<SecretBytes> {
        p.check()?;
        match (&self.inner, mech) {
            (Inner::Ec(k), Mechanism::Ecdh1Derive { kdf, shared_data, public_data }) => {
                let sk = k.ecdh.as_ref().ok_or(Error::KeyTypeInconsistent)?;
                let peer = peer_value(public_data, 1 + 2 * k.curve.field_bytes())?;
                agree(sk, peer, |z| ecdh_kdf(*kdf, shared_data, z, out_len))
            }
            (Inner::X25519(sk), Mechanism::Ecdh1Derive { kdf, shared_data, public_data }) => {
                let peer = peer_value(public_data, 32)?;
                agree(sk, peer, |z| ecdh_kdf(*kdf, shared_data, z, out_len))
            }
            (Inner::Generic(k), Mechanism::Hkdf { extract, expand, hash, salt, info }) => hkdf(
                k.key.expose_secret(),
                *extract,
                *expand,
                *hash,
                salt.as_deref(),
                info,
                out_len,
            ),
            _ if mech.key_fits(self.spec) => Err(Error::MechanismInvalid(mech.ck_type())),
            _ => Err(Error::KeyTypeInconsistent),
        }
    }

    /// ML-KEM decapsulation: the shared secret for `ciphertext`. (ML-KEM's implicit rejection
    /// returns a pseudorandom secret for a tampered ciphertext rather than an error.)
    ///
    /// # Errors
    /// [`Error::EncryptedDataLenRange`] for a wrong-size ciphertext, [`Error::KeyTypeInconsistent`],
    /// [`Error::ErrorState`].
    pub fn decapsulate(&self, p: &Provider, ciphertext: &[u8]) -> Result<SecretBytes> {
        p.check()?;
        let (Inner::MlKem(dk), KeySpec::MlKem(param)) = (&self.inner, self.spec) else {
            return Err(Error::KeyTypeInconsistent);
        };
        if ciphertext.len() != param.ciphertext_len() {
            return Err(Error::EncryptedDataLenRange);
        }
        let ss = dk.decapsulate(kem::Ciphertext::from(ciphertext))?;
        Ok(SecretBytes::from_slice(ss.as_ref()))
    }
}

fn agree(
    sk: &agreement::PrivateKey,
    peer: &[u8],
    kdf: impl FnOnce(&[u8]) -> Result<SecretBytes>,
) -> Result<SecretBytes> {
    let peer = agreement::UnparsedPublicKey::new(sk.algorithm(), peer);
    agreement::agree(sk, peer, Error::MechanismParamInvalid("invalid peer public key"), kdf)
}

impl LoadedPublicKey {
    /// ML-KEM encapsulation: returns (ciphertext, shared secret).
    ///
    /// # Errors
    /// [`Error::KeyTypeInconsistent`] for a non-ML-KEM key, [`Error::ErrorState`].
    pub fn encapsulate(&self, p: &Provider) -> Result<(Vec<u8>, SecretBytes)> {
        p.check()?;
        let PubInner::MlKem(ek) = &self.inner else { return Err(Error::KeyTypeInconsistent) };
        let (ct, ss) = ek.encapsulate()?;
        Ok((ct.as_ref().to_vec(), SecretBytes::from_slice(ss.as_ref())))
    }

    /// The curve of an EC public key.
    pub fn curve(&self) -> Option<Curve> {
        match self.spec() {
            KeySpec::Ec(c) => Some(c),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_value_accepts_raw_and_der() {
        let raw = [4u8; 65];
        assert_eq!(peer_value(&raw, 65).unwrap(), &raw[..]);
        let wrapped = der::tlv(der::OCTET_STRING, &raw);
        assert_eq!(peer_value(&wrapped, 65).unwrap(), &raw[..]);
        assert!(peer_value(&raw[..64], 65).is_err());
    }

    #[test]
    fn null_kdf_truncates_and_rejects() {
        let z = [1u8, 2, 3, 4];
        assert_eq!(ecdh_kdf(EcdhKdf::Null, &[], &z, 0).unwrap().expose_secret(), &z);
        assert_eq!(ecdh_kdf(EcdhKdf::Null, &[], &z, 2).unwrap().expose_secret(), &[3, 4]);
        assert!(ecdh_kdf(EcdhKdf::Null, &[], &z, 5).is_err());
        assert!(ecdh_kdf(EcdhKdf::Null, b"x", &z, 0).is_err());
    }

    /// NIST CAVP, ANSI X9.63-2001 KDF component test vectors (CAVS 12.0, `ansx963_2001.rsp`):
    /// [shared secret length = 192], [SharedInfo length = 0], [key data length = 128].
    #[test]
    fn x963_cavp_vectors() {
        for (hash, z, key) in [
            (
                DigestAlg::Sha1,
                "1c7d7b5f0597b03d06a018466ed1a93e30ed4b04dc64ccdd",
                "bf71dffd8f4d99223936beb46fee8ccc",
            ),
            (
                DigestAlg::Sha1,
                "5ed096510e3fcf782ceea98e9737993e2b21370f6cda2ab1",
                "ec3e224446bfd7b3be1df404104af953",
            ),
            (
                DigestAlg::Sha256,
                "96c05619d56c328ab95fe84b18264b08725b85e33fd34f08",
                "443024c3dae66b95e6f5670601558f71",
            ),
            (
                DigestAlg::Sha256,
                "de4ec3f6b2e9b7b5b6160acd5363c1b1f250e17ee731dbd6",
                "c8df626d5caaabf8a1b2a3f9061d2420",
            ),
        ] {
            let z = hex::decode(z).unwrap();
            let out = ecdh_kdf(EcdhKdf::X963(hash), &[], &z, 16).unwrap();
            assert_eq!(hex::encode(out.expose_secret()), key, "{hash:?}");
            let mut bad = z.clone();
            bad[0] ^= 1;
            let out = ecdh_kdf(EcdhKdf::X963(hash), &[], &bad, 16).unwrap();
            assert_ne!(hex::encode(out.expose_secret()), key);
        }
    }

    #[test]
    fn x963_matches_its_definition() {
        // Two blocks: SHA-256(Z || 00000001 || info) || SHA-256(Z || 00000002 || info).
        let z = [7u8; 32];
        let out = x963_kdf(DigestAlg::Sha256, &z, b"info", 40).unwrap();
        let b1 = digest::digest(&digest::SHA256, &[&z[..], &[0, 0, 0, 1], b"info"].concat());
        let b2 = digest::digest(&digest::SHA256, &[&z[..], &[0, 0, 0, 2], b"info"].concat());
        assert_eq!(&out.expose_secret()[..32], b1.as_ref());
        assert_eq!(&out.expose_secret()[32..], &b2.as_ref()[..8]);
    }
}
