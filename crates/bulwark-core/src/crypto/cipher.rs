//! Encryption and decryption: AES-GCM, AES-CBC (with and without PKCS#7 padding), AES-CTR,
//! RSA-OAEP and RSA PKCS#1 v1.5.
//!
//! Plaintext out of a decryption is always a [`SecretBytes`]; intermediate buffers are wiped.
//! Every authentication or padding failure is the same opaque [`Error::EncryptedDataInvalid`].
//! RSA PKCS#1 v1.5 decryption is offered because PKCS#11 applications expect `CKM_RSA_PKCS`, but
//! it is inherently a padding oracle risk (Bleichenbacher/Marvin); prefer OAEP.

use aws_lc_rs::aead::{Aad, Nonce};
use aws_lc_rs::cipher::{
    DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, PaddedBlockDecryptingKey,
    PaddedBlockEncryptingKey, UnboundCipherKey, AES_128, AES_192, AES_256,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{
    OaepAlgorithm, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, Pkcs1PrivateDecryptingKey,
    Pkcs1PublicEncryptingKey, PrivateDecryptingKey, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
    OAEP_SHA384_MGF1SHA384, OAEP_SHA512_MGF1SHA512,
};
use zeroize::Zeroizing;

use super::get_or_try_init;
use super::keys::KeySpec;
use super::loaded::{AesKey, Inner, LoadedKey, LoadedPublicKey, PubInner, RsaKey, RsaPub};
use super::Provider;
use crate::error::{Error, Result};
use crate::mechanism::{DigestAlg, Mechanism};
use crate::secret::SecretBytes;

const BLOCK: usize = 16;
const GCM_TAG: usize = 16;
const GCM_IV: usize = 12;

/// The exact ciphertext length of an AES mechanism for `in_len` plaintext bytes (0 for
/// mechanisms that do not encrypt). Shared with remote clients, which must answer length
/// queries without a round trip.
pub fn aes_encrypt_len(mech: &Mechanism, in_len: usize) -> usize {
    match mech {
        Mechanism::AesGcm { .. } => in_len + GCM_TAG,
        Mechanism::AesGcmGenerated { .. } => GCM_IV + in_len + GCM_TAG,
        Mechanism::AesCbcPad { .. } => (in_len / BLOCK + 1) * BLOCK,
        Mechanism::AesCbc { .. }
        | Mechanism::AesCtr { .. }
        | Mechanism::AesEcb
        | Mechanism::AesCbcPadPart { .. } => in_len,
        _ => 0,
    }
}

/// The largest plaintext an AES mechanism yields for `in_len` ciphertext bytes.
pub fn aes_decrypt_len_max(mech: &Mechanism, in_len: usize) -> usize {
    match mech {
        Mechanism::AesGcm { .. } => in_len.saturating_sub(GCM_TAG),
        Mechanism::AesCbcPad { .. }
        | Mechanism::AesCbc { .. }
        | Mechanism::AesCtr { .. }
        | Mechanism::AesEcb
        | Mechanism::AesCbcPadPart { .. } => in_len,
        _ => 0,
    }
}

fn unbound(key: &SecretBytes) -> Result<UnboundCipherKey> {
    let alg = match key.len() {
        16 => &AES_128,
        24 => &AES_192,
        32 => &AES_256,
        _ => return Err(Error::KeySizeRange),
    };
    Ok(UnboundCipherKey::new(alg, key.expose_secret())?)
}

fn gcm_params(iv: &[u8], tag_bits: usize) -> Result<Nonce> {
    if tag_bits != 128 {
        return Err(Error::MechanismParamInvalid("AES-GCM supports 128-bit tags only"));
    }
    Nonce::try_assume_unique_for_key(iv)
        .map_err(|_| Error::MechanismParamInvalid("AES-GCM supports 96-bit IVs only"))
}

/// Rejects CTR input that would wrap the low `counter_bits` of the counter block, the only case
/// where aws-lc's full 128-bit increment differs from PKCS#11's counter semantics.
fn ctr_check(counter_block: &[u8; 16], counter_bits: usize, len: usize) -> Result<()> {
    if !(1..=128).contains(&counter_bits) {
        return Err(Error::MechanismParamInvalid("AES-CTR counter bits must be 1..=128"));
    }
    let max = if counter_bits == 128 { u128::MAX } else { (1u128 << counter_bits) - 1 };
    let counter = u128::from_be_bytes(*counter_block) & max;
    let blocks = len.div_ceil(BLOCK) as u128;
    if blocks > 0 && (max - counter) < blocks - 1 {
        return Err(Error::DataLenRange);
    }
    Ok(())
}

fn oaep_alg(hash: DigestAlg, mgf_hash: DigestAlg) -> Result<&'static OaepAlgorithm> {
    if hash != mgf_hash {
        return Err(Error::MechanismParamInvalid("OAEP needs the MGF1 hash equal to the hash"));
    }
    match hash {
        DigestAlg::Sha1 => Ok(&OAEP_SHA1_MGF1SHA1),
        DigestAlg::Sha256 => Ok(&OAEP_SHA256_MGF1SHA256),
        DigestAlg::Sha384 => Ok(&OAEP_SHA384_MGF1SHA384),
        DigestAlg::Sha512 => Ok(&OAEP_SHA512_MGF1SHA512),
        DigestAlg::Sha224 => {
            Err(Error::MechanismParamInvalid("OAEP with SHA-224 is not supported"))
        }
    }
}

fn label(l: &[u8]) -> Option<&[u8]> {
    (!l.is_empty()).then_some(l)
}

fn wrong(spec: KeySpec, mech: &Mechanism) -> Error {
    if mech.key_fits(spec) {
        Error::MechanismInvalid(mech.ck_type())
    } else {
        Error::KeyTypeInconsistent
    }
}

/// A 12-byte GCM IV made in the token: the caller's fixed field, then DRBG output.
fn generated_iv(p: &Provider, fixed: &[u8]) -> Result<[u8; GCM_IV]> {
    if fixed.len() > GCM_IV - 4 {
        return Err(Error::MechanismParamInvalid(
            "a generated GCM IV keeps at least 32 random bits",
        ));
    }
    let mut iv = [0u8; GCM_IV];
    iv[..fixed.len()].copy_from_slice(fixed);
    p.random(&mut iv[fixed.len()..])?;
    Ok(iv)
}

impl AesKey {
    fn ecb_enc(&self) -> Result<&EncryptingKey> {
        get_or_try_init(&self.ecb_enc, || Ok(EncryptingKey::ecb(unbound(&self.key)?)?))
    }

    fn cbc_enc(&self) -> Result<&EncryptingKey> {
        get_or_try_init(&self.cbc_enc, || Ok(EncryptingKey::cbc(unbound(&self.key)?)?))
    }

    fn cbc_dec(&self) -> Result<&DecryptingKey> {
        get_or_try_init(&self.cbc_dec, || Ok(DecryptingKey::cbc(unbound(&self.key)?)?))
    }

    pub(super) fn encrypt(
        &self,
        p: &Provider,
        mech: &Mechanism,
        pt: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let mut out = pt.to_vec();
        match mech {
            Mechanism::AesGcm { iv, aad, tag_bits } => {
                let nonce = gcm_params(iv, *tag_bits)?;
                self.gcm.seal_in_place_append_tag(nonce, Aad::from(aad), &mut out)?;
            }
            Mechanism::AesGcmGenerated { fixed, aad, tag_bits } => {
                let iv = generated_iv(p, fixed)?;
                let nonce = gcm_params(&iv, *tag_bits)?;
                self.gcm.seal_in_place_append_tag(nonce, Aad::from(aad), &mut out)?;
                out.splice(0..0, iv);
            }
            Mechanism::AesEcb => {
                if pt.len() % BLOCK != 0 {
                    return Err(Error::DataLenRange);
                }
                if !pt.is_empty() {
                    self.ecb_enc()?.encrypt(&mut out)?;
                }
            }
            Mechanism::AesCbc { iv } | Mechanism::AesCbcPadPart { iv } => {
                if pt.len() % BLOCK != 0 {
                    return Err(Error::DataLenRange);
                }
                if !pt.is_empty() {
                    self.cbc_enc()?.less_safe_encrypt(
                        &mut out,
                        EncryptionContext::Iv128(FixedLength::from(iv)),
                    )?;
                }
            }
            Mechanism::AesCbcPad { iv } => {
                let k = get_or_try_init(&self.cbc_pad_enc, || {
                    Ok(PaddedBlockEncryptingKey::cbc_pkcs7(unbound(&self.key)?)?)
                })?;
                k.less_safe_encrypt(&mut out, EncryptionContext::Iv128(FixedLength::from(iv)))?;
            }
            Mechanism::AesCtr { counter_block, counter_bits } => {
                ctr_check(counter_block, *counter_bits, pt.len())?;
                if !pt.is_empty() {
                    let k = get_or_try_init(&self.ctr, || {
                        Ok(EncryptingKey::ctr(unbound(&self.key)?)?)
                    })?;
                    k.less_safe_encrypt(
                        &mut out,
                        EncryptionContext::Iv128(FixedLength::from(counter_block)),
                    )?;
                }
            }
            _ => return Ok(None),
        }
        Ok(Some(out))
    }

    pub(super) fn decrypt(&self, mech: &Mechanism, ct: &[u8]) -> Result<Option<SecretBytes>> {
        let mut buf = Zeroizing::new(ct.to_vec());
        let bad = |_| Error::EncryptedDataInvalid;
        let len = match mech {
            Mechanism::AesGcm { iv, aad, tag_bits } => {
                let nonce = gcm_params(iv, *tag_bits)?;
                if ct.len() < GCM_TAG {
                    return Err(Error::EncryptedDataLenRange);
                }
                self.gcm.open_in_place(nonce, Aad::from(aad), &mut buf).map_err(bad)?.len()
            }
            Mechanism::AesEcb => {
                if ct.len() % BLOCK != 0 {
                    return Err(Error::EncryptedDataLenRange);
                }
                if !ct.is_empty() {
                    let k = get_or_try_init(&self.ecb_dec, || {
                        Ok(DecryptingKey::ecb(unbound(&self.key)?)?)
                    })?;
                    k.decrypt(&mut buf, DecryptionContext::None).map_err(bad)?;
                }
                ct.len()
            }
            Mechanism::AesCbc { iv }
            | Mechanism::AesCbcPad { iv }
            | Mechanism::AesCbcPadPart { iv } => {
                if ct.len() % BLOCK != 0
                    || (ct.is_empty() && matches!(mech, Mechanism::AesCbcPad { .. }))
                {
                    return Err(Error::EncryptedDataLenRange);
                }
                let ctx = DecryptionContext::Iv128(FixedLength::from(iv));
                if ct.is_empty() {
                    0
                } else if !matches!(mech, Mechanism::AesCbcPad { .. }) {
                    self.cbc_dec()?.decrypt(&mut buf, ctx).map_err(bad)?.len()
                } else {
                    let k = get_or_try_init(&self.cbc_pad_dec, || {
                        Ok(PaddedBlockDecryptingKey::cbc_pkcs7(unbound(&self.key)?)?)
                    })?;
                    k.decrypt(&mut buf, ctx).map_err(bad)?.len()
                }
            }
            Mechanism::AesCtr { counter_block, counter_bits } => {
                ctr_check(counter_block, *counter_bits, ct.len())?;
                if !ct.is_empty() {
                    let k = get_or_try_init(&self.ctr, || {
                        Ok(EncryptingKey::ctr(unbound(&self.key)?)?)
                    })?;
                    k.less_safe_encrypt(
                        &mut buf,
                        EncryptionContext::Iv128(FixedLength::from(counter_block)),
                    )?;
                }
                ct.len()
            }
            _ => return Ok(None),
        };
        buf.truncate(len);
        Ok(Some(SecretBytes::new(std::mem::take(&mut *buf))))
    }
}

impl RsaKey {
    fn decrypt(&self, mech: &Mechanism, ct: &[u8]) -> Result<Option<SecretBytes>> {
        let n = self.kp.public_modulus_len();
        let mut buf = Zeroizing::new(vec![0u8; n]);
        let bad = |_| Error::EncryptedDataInvalid;
        let decrypting = || -> Result<PrivateDecryptingKey> {
            Ok(PrivateDecryptingKey::from_pkcs8(self.pkcs8.expose_secret())?)
        };
        let len = match mech {
            Mechanism::RsaOaep { hash, mgf_hash, label: l } => {
                let alg = oaep_alg(*hash, *mgf_hash)?;
                if ct.len() != n {
                    return Err(Error::EncryptedDataLenRange);
                }
                let k = get_or_try_init(&self.oaep, || {
                    Ok(OaepPrivateDecryptingKey::new(decrypting()?)?)
                })?;
                k.decrypt(alg, ct, &mut buf, label(l)).map_err(bad)?.len()
            }
            Mechanism::RsaPkcs => {
                if ct.len() != n {
                    return Err(Error::EncryptedDataLenRange);
                }
                let k = get_or_try_init(&self.pkcs1, || {
                    Ok(Pkcs1PrivateDecryptingKey::new(decrypting()?)?)
                })?;
                k.decrypt(ct, &mut buf).map_err(bad)?.len()
            }
            _ => return Ok(None),
        };
        buf.truncate(len);
        Ok(Some(SecretBytes::new(std::mem::take(&mut *buf))))
    }
}

impl LoadedKey {
    /// Encrypts. AES-GCM output is `ciphertext || tag`; RSA keys encrypt with their public half.
    ///
    /// # Errors
    /// [`Error::KeyTypeInconsistent`], [`Error::MechanismParamInvalid`], [`Error::DataLenRange`],
    /// [`Error::ErrorState`].
    pub fn encrypt(&self, p: &Provider, mech: &Mechanism, plaintext: &[u8]) -> Result<Vec<u8>> {
        p.check()?;
        match &self.inner {
            Inner::Aes(k) => k.encrypt(p, mech, plaintext)?.ok_or_else(|| wrong(self.spec, mech)),
            Inner::Rsa(_) => self.public_or_err()?.encrypt(p, mech, plaintext),
            _ => Err(wrong(self.spec, mech)),
        }
    }

    /// Decrypts into a secret buffer.
    ///
    /// # Errors
    /// [`Error::EncryptedDataInvalid`] on any authentication/padding failure (no detail),
    /// [`Error::EncryptedDataLenRange`], [`Error::KeyTypeInconsistent`],
    /// [`Error::MechanismParamInvalid`], [`Error::ErrorState`].
    pub fn decrypt(
        &self,
        p: &Provider,
        mech: &Mechanism,
        ciphertext: &[u8],
    ) -> Result<SecretBytes> {
        p.check()?;
        let out = match &self.inner {
            Inner::Aes(k) => k.decrypt(mech, ciphertext)?,
            Inner::Rsa(k) => k.decrypt(mech, ciphertext)?,
            _ => None,
        };
        out.ok_or_else(|| wrong(self.spec, mech))
    }

    /// Output length of [`LoadedKey::encrypt`] for `in_len` input bytes.
    pub fn encrypt_len(&self, mech: &Mechanism, in_len: usize) -> usize {
        match (&self.inner, mech) {
            (Inner::Aes(_), _) => aes_encrypt_len(mech, in_len),
            _ => self.public.as_ref().map_or(0, |p| p.encrypt_len(mech, in_len)),
        }
    }

    /// Upper bound on the output of [`LoadedKey::decrypt`] for `in_len` input bytes.
    pub fn decrypt_len_max(&self, mech: &Mechanism, in_len: usize) -> usize {
        match (&self.inner, mech) {
            (Inner::Aes(_), _) => aes_decrypt_len_max(mech, in_len),
            (Inner::Rsa(k), Mechanism::RsaOaep { .. } | Mechanism::RsaPkcs) => {
                k.kp.public_modulus_len()
            }
            _ => 0,
        }
    }
}

impl RsaPub {
    pub(super) fn oaep_key(&self, public: &super::PublicKey) -> Result<&OaepPublicEncryptingKey> {
        get_or_try_init(&self.oaep, || {
            Ok(OaepPublicEncryptingKey::new(RsaPub::encrypting_key(public)?)?)
        })
    }
}

impl LoadedPublicKey {
    /// Encrypts with an RSA public key (OAEP or PKCS#1 v1.5).
    ///
    /// # Errors
    /// [`Error::DataLenRange`] if the plaintext is too long, [`Error::KeyTypeInconsistent`],
    /// [`Error::MechanismParamInvalid`], [`Error::ErrorState`].
    pub fn encrypt(&self, p: &Provider, mech: &Mechanism, plaintext: &[u8]) -> Result<Vec<u8>> {
        p.check()?;
        let PubInner::Rsa(k) = &self.inner else { return Err(wrong(self.spec(), mech)) };
        let mut out = vec![0u8; k.modulus_len];
        let len = match mech {
            Mechanism::RsaOaep { hash, mgf_hash, label: l } => {
                let alg = oaep_alg(*hash, *mgf_hash)?;
                let key = k.oaep_key(&self.public)?;
                if plaintext.len() > key.max_plaintext_size(alg) {
                    return Err(Error::DataLenRange);
                }
                key.encrypt(alg, plaintext, &mut out, label(l))?.len()
            }
            Mechanism::RsaPkcs => {
                let key = get_or_try_init(&k.pkcs1_enc, || {
                    Ok(Pkcs1PublicEncryptingKey::new(RsaPub::encrypting_key(&self.public)?)?)
                })?;
                if plaintext.len() > key.max_plaintext_size() {
                    return Err(Error::DataLenRange);
                }
                key.encrypt(plaintext, &mut out)?.len()
            }
            _ => return Err(wrong(self.spec(), mech)),
        };
        out.truncate(len);
        Ok(out)
    }

    /// Output length of [`LoadedPublicKey::encrypt`] (the modulus size for RSA).
    pub fn encrypt_len(&self, mech: &Mechanism, _in_len: usize) -> usize {
        match (&self.inner, mech) {
            (PubInner::Rsa(k), Mechanism::RsaOaep { .. } | Mechanism::RsaPkcs) => k.modulus_len,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ctr_check;

    #[test]
    fn ctr_rejects_counter_wrap() {
        let mut block = [0u8; 16];
        block[15] = 0xfe;
        assert!(ctr_check(&block, 8, 32).is_ok()); // counters 0xfe, 0xff
        assert!(ctr_check(&block, 8, 33).is_err()); // would need 0x100
        assert!(ctr_check(&block, 16, 4096).is_ok());
        assert!(ctr_check(&[0xff; 16], 128, 16).is_ok());
        assert!(ctr_check(&[0xff; 16], 128, 17).is_err());
        assert!(ctr_check(&block, 0, 16).is_err());
        assert!(ctr_check(&block, 129, 16).is_err());
    }
}
