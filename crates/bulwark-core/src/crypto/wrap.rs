//! Key wrapping: AES-KW (RFC 3394, secret keys), AES-KWP (RFC 5649, any key material) and
//! RSA-OAEP (secret keys).
//!
//! What is wrapped is the stored form of the key ([`KeyMaterial`]): raw bytes for secret keys,
//! PKCS#8 for private keys, the decapsulation key for ML-KEM. Unwrapping validates the result
//! against the target [`KeySpec`] before handing it back, and reports every failure as the
//! opaque [`Error::WrappedKeyInvalid`]. Whether a key may be wrapped at all (extractable,
//! wrap-with-trusted) is the caller's policy, not this module's.

use aws_lc_rs::key_wrap::{
    AesBlockCipher, KeyEncryptionKey, KeyWrap, KeyWrapPadded, AES_128, AES_256,
};
use zeroize::Zeroizing;

use super::keys::{KeyMaterial, KeySpec};
use super::loaded::{AesKey, Inner, LoadedKey, LoadedPublicKey};
use super::Provider;
use crate::error::{Error, Result};
use crate::mechanism::Mechanism;
use crate::secret::SecretBytes;

fn kek(k: &AesKey) -> Result<KeyEncryptionKey<AesBlockCipher>> {
    let cipher = match k.key.len() {
        16 => &AES_128,
        32 => &AES_256,
        _ => return Err(Error::KeySizeRange), // aws-lc-rs has no AES-192 key wrap
    };
    Ok(KeyEncryptionKey::new(cipher, k.key.expose_secret())?)
}

fn secret_only(m: &KeyMaterial) -> Result<&[u8]> {
    if m.spec().is_asymmetric() {
        return Err(Error::MechanismParamInvalid(
            "this mechanism wraps secret keys only; use AES-KWP for private keys",
        ));
    }
    Ok(m.expose_secret())
}

impl LoadedKey {
    /// Wraps `key_to_wrap` under this key.
    ///
    /// # Errors
    /// [`Error::MechanismParamInvalid`] (private key with KW/OAEP), [`Error::DataLenRange`]
    /// (KW input not a multiple of 8 or shorter than 16), [`Error::KeySizeRange`],
    /// [`Error::KeyTypeInconsistent`], [`Error::ErrorState`].
    pub fn wrap(
        &self,
        p: &Provider,
        mech: &Mechanism,
        key_to_wrap: &KeyMaterial,
    ) -> Result<Vec<u8>> {
        p.check()?;
        match (&self.inner, mech) {
            (Inner::Aes(k), Mechanism::AesKeyWrap) => {
                let data = secret_only(key_to_wrap)?;
                if data.len() % 8 != 0 || data.len() < 16 {
                    return Err(Error::DataLenRange);
                }
                let mut out = vec![0u8; data.len() + 8];
                let n = kek(k)?.wrap(data, &mut out)?.len();
                out.truncate(n);
                Ok(out)
            }
            (Inner::Aes(k), Mechanism::AesKeyWrapPad) => {
                let data = key_to_wrap.expose_secret();
                if data.is_empty() {
                    return Err(Error::DataLenRange);
                }
                let mut out = vec![0u8; data.len().div_ceil(8) * 8 + 8];
                let n = kek(k)?.wrap_with_padding(data, &mut out)?.len();
                out.truncate(n);
                Ok(out)
            }
            (Inner::Rsa(_), Mechanism::RsaOaep { .. } | Mechanism::RsaPkcs) => {
                self.public_or_err()?.wrap(p, mech, key_to_wrap)
            }
            _ if mech.key_fits(self.spec) => Err(Error::MechanismInvalid(mech.ck_type())),
            _ => Err(Error::KeyTypeInconsistent),
        }
    }

    /// Unwraps `wrapped` and validates the result as a key of `target`. For secret targets a
    /// size of 0 means "take the length from the unwrapped data"; for RSA, `bits: 0` accepts any
    /// size. Private targets must unwrap to PKCS#8 (ML-KEM: the decapsulation key).
    ///
    /// # Errors
    /// [`Error::WrappedKeyInvalid`] for anything that does not authenticate or validate,
    /// [`Error::KeyTypeInconsistent`], [`Error::ErrorState`].
    pub fn unwrap(
        &self,
        p: &Provider,
        mech: &Mechanism,
        wrapped: &[u8],
        target: KeySpec,
    ) -> Result<KeyMaterial> {
        p.check()?;
        let bad = |_| Error::WrappedKeyInvalid;
        let bytes = match (&self.inner, mech) {
            (Inner::Aes(k), Mechanism::AesKeyWrap) => {
                if wrapped.len() < 24 || wrapped.len() % 8 != 0 {
                    return Err(Error::WrappedKeyInvalid);
                }
                let mut out = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
                let n = kek(k)?.unwrap(wrapped, &mut out).map_err(bad)?.len();
                out.truncate(n);
                SecretBytes::new(std::mem::take(&mut *out))
            }
            (Inner::Aes(k), Mechanism::AesKeyWrapPad) => {
                if wrapped.len() < 16 || wrapped.len() % 8 != 0 {
                    return Err(Error::WrappedKeyInvalid);
                }
                let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
                let n = kek(k)?.unwrap_with_padding(wrapped, &mut out).map_err(bad)?.len();
                out.truncate(n);
                SecretBytes::new(std::mem::take(&mut *out))
            }
            (Inner::Rsa(_), Mechanism::RsaOaep { .. } | Mechanism::RsaPkcs) => {
                if target.is_asymmetric() {
                    return Err(Error::MechanismParamInvalid("RSA unwraps secret keys only"));
                }
                self.decrypt(p, mech, wrapped).map_err(|e| match e {
                    Error::EncryptedDataInvalid | Error::EncryptedDataLenRange => {
                        Error::WrappedKeyInvalid
                    }
                    other => other,
                })?
            }
            _ if mech.key_fits(self.spec) => return Err(Error::MechanismInvalid(mech.ck_type())),
            _ => return Err(Error::KeyTypeInconsistent),
        };
        p.material_from_unwrapped(target, bytes)
    }
}

impl LoadedPublicKey {
    /// Wraps a secret key with RSA-OAEP (or PKCS#1 v1.5, which `pkcs11-tool --wrap -m RSA-PKCS`
    /// and older clients use) under this public key.
    ///
    /// # Errors
    /// [`Error::MechanismParamInvalid`] for private keys, [`Error::DataLenRange`] if the key is
    /// too long for the modulus, [`Error::KeyTypeInconsistent`], [`Error::ErrorState`].
    pub fn wrap(
        &self,
        p: &Provider,
        mech: &Mechanism,
        key_to_wrap: &KeyMaterial,
    ) -> Result<Vec<u8>> {
        if !matches!(mech, Mechanism::RsaOaep { .. } | Mechanism::RsaPkcs) {
            return Err(Error::MechanismInvalid(mech.ck_type()));
        }
        self.encrypt(p, mech, secret_only(key_to_wrap)?)
    }
}
