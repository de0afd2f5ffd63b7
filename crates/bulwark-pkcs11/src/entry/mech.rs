//! `CK_MECHANISM` → [`Mechanism`] / [`KeyGenMechanism`]: parameter structures are copied out of
//! C memory here and validated; anything malformed is `CKR_MECHANISM_PARAM_INVALID`, anything
//! unknown `CKR_MECHANISM_INVALID`.

use bulwark_core::mechanism::{DigestAlg, EcdhKdf, EdDsaParams, KeyGenMechanism, Mechanism};
use cryptoki_sys as ck;

use super::{read_param, slice};
use crate::error::{Error, Result};

/// Copies the `CK_MECHANISM` itself.
///
/// # Safety
/// `p` must be NULL or point to a readable `CK_MECHANISM`.
pub(crate) unsafe fn read(p: *const ck::CK_MECHANISM) -> Result<ck::CK_MECHANISM> {
    if p.is_null() || !p.is_aligned() {
        return Err(Error::ArgumentsBad);
    }
    // SAFETY: non-NULL, aligned, and readable per the caller; CK_MECHANISM is plain data.
    Ok(unsafe { std::ptr::read(p) })
}

/// A parameter struct of exactly type `T`.
///
/// # Safety
/// The mechanism's `pParameter` must be valid for `ulParameterLen` bytes.
unsafe fn param<T: Copy>(m: &ck::CK_MECHANISM) -> Result<T> {
    // SAFETY: forwarded caller contract; every `T` used here is a C struct of integers and
    // pointers.
    unsafe { read_param::<T>(m.pParameter, m.ulParameterLen) }.ok_or(Error::MechanismParamInvalid)
}

/// Bytes that a parameter struct points at.
///
/// # Safety
/// `p` must be NULL or valid for `n` bytes.
unsafe fn bytes(p: *const u8, n: ck::CK_ULONG) -> Result<Vec<u8>> {
    // SAFETY: forwarded caller contract.
    unsafe { slice(p, n) }.map(<[u8]>::to_vec).map_err(|_| Error::MechanismParamInvalid)
}

fn no_param(m: &ck::CK_MECHANISM) -> Result<()> {
    if m.ulParameterLen != 0 {
        return Err(Error::MechanismParamInvalid);
    }
    Ok(())
}

fn digest(ckm: ck::CK_MECHANISM_TYPE) -> Result<DigestAlg> {
    DigestAlg::from_ck_digest(ckm).ok_or(Error::MechanismParamInvalid)
}

/// PSS parameters (hash, MGF1 hash, salt length).
///
/// # Safety
/// As [`param`].
unsafe fn pss(m: &ck::CK_MECHANISM) -> Result<(DigestAlg, DigestAlg, usize)> {
    // SAFETY: forwarded caller contract.
    let p: ck::CK_RSA_PKCS_PSS_PARAMS = unsafe { param(m)? };
    let hash = digest(p.hashAlg)?;
    let mgf = DigestAlg::from_ck_mgf(p.mgf).ok_or(Error::MechanismParamInvalid)?;
    let salt = usize::try_from(p.sLen).map_err(|_| Error::MechanismParamInvalid)?;
    Ok((hash, mgf, salt))
}

/// Parses an operation mechanism (everything but key generation).
///
/// # Safety
/// The mechanism's parameter pointer must be valid for its length, and any pointers inside the
/// parameter structure valid for their lengths (the PKCS#11 caller contract).
pub(crate) unsafe fn operation(m: &ck::CK_MECHANISM) -> Result<Mechanism> {
    let plain = |mech: Mechanism| -> Result<Mechanism> {
        no_param(m)?;
        Ok(mech)
    };
    match m.mechanism {
        ck::CKM_RSA_PKCS => plain(Mechanism::RsaPkcs),
        ck::CKM_SHA256_RSA_PKCS => plain(Mechanism::Sha256RsaPkcs),
        ck::CKM_SHA384_RSA_PKCS => plain(Mechanism::Sha384RsaPkcs),
        ck::CKM_SHA512_RSA_PKCS => plain(Mechanism::Sha512RsaPkcs),
        ck::CKM_RSA_PKCS_PSS => {
            // SAFETY: forwarded caller contract.
            let (hash, mgf_hash, salt_len) = unsafe { pss(m)? };
            Ok(Mechanism::RsaPkcsPss { hash, mgf_hash, salt_len })
        }
        ck::CKM_SHA256_RSA_PKCS_PSS | ck::CKM_SHA384_RSA_PKCS_PSS | ck::CKM_SHA512_RSA_PKCS_PSS => {
            // SAFETY: forwarded caller contract.
            let (hash, mgf_hash, salt_len) = unsafe { pss(m)? };
            Ok(match m.mechanism {
                ck::CKM_SHA256_RSA_PKCS_PSS => {
                    Mechanism::Sha256RsaPkcsPss { hash, mgf_hash, salt_len }
                }
                ck::CKM_SHA384_RSA_PKCS_PSS => {
                    Mechanism::Sha384RsaPkcsPss { hash, mgf_hash, salt_len }
                }
                _ => Mechanism::Sha512RsaPkcsPss { hash, mgf_hash, salt_len },
            })
        }
        ck::CKM_RSA_PKCS_OAEP => {
            // SAFETY: forwarded caller contract.
            let p: ck::CK_RSA_PKCS_OAEP_PARAMS = unsafe { param(m)? };
            let hash = digest(p.hashAlg)?;
            let mgf_hash = DigestAlg::from_ck_mgf(p.mgf).ok_or(Error::MechanismParamInvalid)?;
            let label = match p.source {
                // SAFETY: pSourceData is valid for ulSourceDataLen bytes (caller).
                ck::CKZ_DATA_SPECIFIED => unsafe {
                    bytes(p.pSourceData.cast::<u8>().cast_const(), p.ulSourceDataLen)?
                },
                0 if p.ulSourceDataLen == 0 => Vec::new(),
                _ => return Err(Error::MechanismParamInvalid),
            };
            Ok(Mechanism::RsaOaep { hash, mgf_hash, label })
        }
        ck::CKM_ECDSA => plain(Mechanism::Ecdsa),
        ck::CKM_ECDSA_SHA256 => plain(Mechanism::EcdsaSha256),
        ck::CKM_ECDSA_SHA384 => plain(Mechanism::EcdsaSha384),
        ck::CKM_ECDSA_SHA512 => plain(Mechanism::EcdsaSha512),
        ck::CKM_EDDSA => {
            if m.ulParameterLen == 0 {
                return Ok(Mechanism::EdDsa(None));
            }
            // SAFETY: forwarded caller contract.
            let p: ck::CK_EDDSA_PARAMS = unsafe { param(m)? };
            // SAFETY: pContextData is valid for ulContextDataLen bytes (caller).
            let context = unsafe { bytes(p.pContextData.cast_const(), p.ulContextDataLen)? };
            Ok(Mechanism::EdDsa(Some(EdDsaParams { prehash: p.phFlag != 0, context })))
        }
        ck::CKM_ML_DSA => {
            if m.ulParameterLen == 0 {
                return Ok(Mechanism::MlDsa { context: Vec::new() });
            }
            // SAFETY: forwarded caller contract.
            let p: ck::CK_SIGN_ADDITIONAL_CONTEXT = unsafe { param(m)? };
            // SAFETY: pContext is valid for ulContextLen bytes (caller).
            let context = unsafe { bytes(p.pContext.cast_const(), p.ulContextLen)? };
            Ok(Mechanism::MlDsa { context })
        }
        ck::CKM_SHA256_HMAC => plain(Mechanism::Hmac(DigestAlg::Sha256)),
        ck::CKM_SHA384_HMAC => plain(Mechanism::Hmac(DigestAlg::Sha384)),
        ck::CKM_SHA512_HMAC => plain(Mechanism::Hmac(DigestAlg::Sha512)),
        ck::CKM_AES_GCM => {
            // SAFETY: forwarded caller contract.
            let p: ck::CK_GCM_PARAMS = unsafe { param(m)? };
            // SAFETY: pIv / pAAD are valid for their lengths (caller).
            let iv = unsafe { bytes(p.pIv.cast_const(), p.ulIvLen)? };
            // SAFETY: as above.
            let aad = unsafe { bytes(p.pAAD.cast_const(), p.ulAADLen)? };
            let tag_bits =
                usize::try_from(p.ulTagBits).map_err(|_| Error::MechanismParamInvalid)?;
            Ok(Mechanism::AesGcm { iv, aad, tag_bits })
        }
        ck::CKM_AES_ECB => plain(Mechanism::AesEcb),
        ck::CKM_AES_CMAC => plain(Mechanism::AesCmac),
        ck::CKM_AES_CMAC_GENERAL => {
            // SAFETY: forwarded caller contract (CK_MAC_GENERAL_PARAMS is a CK_ULONG).
            let n: ck::CK_ULONG = unsafe { param(m)? };
            let mac_len = usize::try_from(n).map_err(|_| Error::MechanismParamInvalid)?;
            if !(1..=16).contains(&mac_len) {
                return Err(Error::MechanismParamInvalid);
            }
            Ok(Mechanism::AesCmacGeneral { mac_len })
        }
        ck::CKM_AES_CBC | ck::CKM_AES_CBC_PAD => {
            // SAFETY: forwarded caller contract.
            let iv: [u8; 16] = unsafe { param(m)? };
            Ok(if m.mechanism == ck::CKM_AES_CBC {
                Mechanism::AesCbc { iv }
            } else {
                Mechanism::AesCbcPad { iv }
            })
        }
        ck::CKM_AES_CTR => {
            // SAFETY: forwarded caller contract.
            let p: ck::CK_AES_CTR_PARAMS = unsafe { param(m)? };
            let counter_bits =
                usize::try_from(p.ulCounterBits).map_err(|_| Error::MechanismParamInvalid)?;
            if !(1..=128).contains(&counter_bits) {
                return Err(Error::MechanismParamInvalid);
            }
            Ok(Mechanism::AesCtr { counter_block: p.cb, counter_bits })
        }
        ck::CKM_AES_KEY_WRAP => {
            if m.ulParameterLen != 0 {
                // Only the default IV (A6A6A6A6A6A6A6A6) is supported.
                // SAFETY: forwarded caller contract.
                let iv: [u8; 8] = unsafe { param(m)? };
                if iv != [0xA6; 8] {
                    return Err(Error::MechanismParamInvalid);
                }
            }
            Ok(Mechanism::AesKeyWrap)
        }
        ck::CKM_AES_KEY_WRAP_KWP => {
            if m.ulParameterLen != 0 {
                // SAFETY: forwarded caller contract.
                let iv: [u8; 4] = unsafe { param(m)? };
                if iv != [0xA6, 0x59, 0x59, 0xA6] {
                    return Err(Error::MechanismParamInvalid);
                }
            }
            Ok(Mechanism::AesKeyWrapPad)
        }
        ck::CKM_ECDH1_DERIVE => {
            // SAFETY: forwarded caller contract.
            let p: ck::CK_ECDH1_DERIVE_PARAMS = unsafe { param(m)? };
            let kdf = EcdhKdf::from_ck(p.kdf).ok_or(Error::MechanismParamInvalid)?;
            // SAFETY: pSharedData / pPublicData are valid for their lengths (caller).
            let shared_data = unsafe { bytes(p.pSharedData.cast_const(), p.ulSharedDataLen)? };
            // SAFETY: as above.
            let public_data = unsafe { bytes(p.pPublicData.cast_const(), p.ulPublicDataLen)? };
            if public_data.is_empty() || (kdf == EcdhKdf::Null && !shared_data.is_empty()) {
                return Err(Error::MechanismParamInvalid);
            }
            Ok(Mechanism::Ecdh1Derive { kdf, shared_data, public_data })
        }
        ck::CKM_HKDF_DERIVE => {
            // SAFETY: forwarded caller contract.
            let p: ck::CK_HKDF_PARAMS = unsafe { param(m)? };
            let hash = digest(p.prfHashMechanism)?;
            let salt = match p.ulSaltType {
                ck::CKF_HKDF_SALT_NULL => None,
                ck::CKF_HKDF_SALT_DATA => {
                    // SAFETY: pSalt is valid for ulSaltLen bytes (caller).
                    let salt = unsafe { bytes(p.pSalt.cast_const(), p.ulSaltLen)? };
                    Some(salt)
                }
                _ => return Err(Error::MechanismParamInvalid),
            };
            // SAFETY: pInfo is valid for ulInfoLen bytes (caller).
            let info = unsafe { bytes(p.pInfo.cast_const(), p.ulInfoLen)? };
            Ok(Mechanism::Hkdf {
                extract: p.bExtract != 0,
                expand: p.bExpand != 0,
                hash,
                salt,
                info,
            })
        }
        ck::CKM_ML_KEM => plain(Mechanism::MlKem),
        ck::CKM_SHA_1 => plain(Mechanism::Digest(DigestAlg::Sha1)),
        ck::CKM_SHA224 => plain(Mechanism::Digest(DigestAlg::Sha224)),
        ck::CKM_SHA256 => plain(Mechanism::Digest(DigestAlg::Sha256)),
        ck::CKM_SHA384 => plain(Mechanism::Digest(DigestAlg::Sha384)),
        ck::CKM_SHA512 => plain(Mechanism::Digest(DigestAlg::Sha512)),
        _ => Err(Error::MechanismInvalid),
    }
}

/// Parses a key-generation mechanism (parameters are ignored: none of these take any).
pub(crate) fn keygen(m: &ck::CK_MECHANISM) -> Result<KeyGenMechanism> {
    Ok(match m.mechanism {
        ck::CKM_AES_KEY_GEN => KeyGenMechanism::AesKeyGen,
        ck::CKM_GENERIC_SECRET_KEY_GEN => KeyGenMechanism::GenericSecretKeyGen,
        ck::CKM_RSA_PKCS_KEY_PAIR_GEN => KeyGenMechanism::RsaPkcsKeyPairGen,
        ck::CKM_EC_KEY_PAIR_GEN => KeyGenMechanism::EcKeyPairGen,
        ck::CKM_EC_EDWARDS_KEY_PAIR_GEN => KeyGenMechanism::EcEdwardsKeyPairGen,
        ck::CKM_EC_MONTGOMERY_KEY_PAIR_GEN => KeyGenMechanism::EcMontgomeryKeyPairGen,
        ck::CKM_ML_DSA_KEY_PAIR_GEN => KeyGenMechanism::MlDsaKeyPairGen,
        ck::CKM_ML_KEM_KEY_PAIR_GEN => KeyGenMechanism::MlKemKeyPairGen,
        _ => return Err(Error::MechanismInvalid),
    })
}
