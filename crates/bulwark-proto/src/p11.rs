//! The PKCS#11 remote-slot protocol (`proto/bulwark/p11/v1/token.proto`): its generated types,
//! and the conversions both ends share, so that the daemon and the module agree bit for bit:
//! attributes (platform-independent PKCS#11 encoding), mechanisms (typed parameter fields), and
//! core errors (carried in the `bulwark-error` metadata key, so the module returns the same
//! `CKR_*` an embedded slot would).
//!
//! Nothing here holds key material: mechanism parameters are public, and attribute values that
//! cross the wire are those the token reveals to the caller anyway.

use bulwark_core::attr::{AttrKind, AttrType, AttrValue};
use bulwark_core::mechanism::{DigestAlg, EcdhKdf, EdDsaParams, KeyGenMechanism, Mechanism};
use bulwark_core::token::Usage;
use bulwark_core::Error;
use cryptoki_sys as ck;
use tonic::Status;

/// Generated types of package `bulwark.p11.v1`.
pub mod v1 {
    #![allow(clippy::pedantic, missing_docs)]
    tonic::include_proto!("bulwark.p11.v1");
}

use v1 as pb;

/// The metadata key that carries a core error.
pub const ERROR_KEY: &str = "bulwark-error";

/// Stands in for the `&'static str` detail of a core error that crossed the wire.
const REMOTE: &str = "reported by the HSM";

// --- attributes ------------------------------------------------------------------------------

const UL: usize = 8;

/// One attribute in wire encoding (`CK_ULONG` as 8 bytes little-endian).
pub fn attr_to_pb(t: AttrType, v: &AttrValue) -> pb::Attribute {
    let value = match v {
        AttrValue::Ulong(n) => n.to_le_bytes().to_vec(),
        AttrValue::MechanismList(l) => l.iter().flat_map(|m| m.to_le_bytes()).collect(),
        other => other.to_raw(),
    };
    pb::Attribute { r#type: t.to_raw(), value }
}

/// A template in wire encoding.
pub fn template_to_pb(t: &[(AttrType, AttrValue)]) -> Vec<pb::Attribute> {
    t.iter().map(|(k, v)| attr_to_pb(*k, v)).collect()
}

/// Parses one wire attribute.
///
/// # Errors
/// `AttributeTypeInvalid` for an unknown type, `AttributeValueInvalid` for a malformed value.
pub fn attr_from_pb(a: &pb::Attribute) -> Result<(AttrType, AttrValue), Error> {
    let t = AttrType::from_raw(a.r#type).ok_or(Error::AttributeTypeInvalid(a.r#type))?;
    bulwark_core::limits::check_attr_len(t, a.value.len())?;
    let v = match t.kind() {
        AttrKind::Ulong | AttrKind::MechanismList => {
            if a.value.len() % UL != 0 || (t.kind() == AttrKind::Ulong && a.value.len() != UL) {
                return Err(Error::AttributeValueInvalid(t));
            }
            let native: Vec<u8> = a
                .value
                .chunks_exact(UL)
                .flat_map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; UL])).to_ne_bytes())
                .collect();
            AttrValue::from_raw(t, &native)?
        }
        _ => AttrValue::from_raw(t, &a.value)?,
    };
    Ok((t, v))
}

/// Parses a wire template with the same rules as a C template (`template::parse_raw`): unknown
/// types, malformed values and contradicting duplicates are refused.
///
/// # Errors
/// As [`attr_from_pb`], and `TemplateInconsistent` for contradicting duplicates.
pub fn template_from_pb(t: &[pb::Attribute]) -> Result<Vec<(AttrType, AttrValue)>, Error> {
    bulwark_core::limits::check_template_len(t.len())?;
    let mut out: Vec<(AttrType, AttrValue)> = Vec::with_capacity(t.len());
    for a in t {
        let (k, v) = attr_from_pb(a)?;
        if let Some((_, prev)) = out.iter().find(|(pk, _)| *pk == k) {
            if *prev != v {
                return Err(Error::TemplateInconsistent(
                    "attribute given twice with different values",
                ));
            }
            continue;
        }
        out.push((k, v));
    }
    Ok(out)
}

// --- mechanisms ------------------------------------------------------------------------------

fn digest_of(ckm: u64) -> Result<DigestAlg, Error> {
    DigestAlg::from_ck_digest(ckm).ok_or(Error::MechanismParamInvalid("hash"))
}

fn kdf_to_ck(k: EcdhKdf) -> u64 {
    match k {
        EcdhKdf::Null => ck::CKD_NULL,
        EcdhKdf::X963(DigestAlg::Sha1) => ck::CKD_SHA1_KDF,
        EcdhKdf::X963(DigestAlg::Sha224) => ck::CKD_SHA224_KDF,
        EcdhKdf::X963(DigestAlg::Sha256) => ck::CKD_SHA256_KDF,
        EcdhKdf::X963(DigestAlg::Sha384) => ck::CKD_SHA384_KDF,
        EcdhKdf::X963(DigestAlg::Sha512) => ck::CKD_SHA512_KDF,
    }
}

fn iv16(b: &[u8]) -> Result<[u8; 16], Error> {
    b.try_into().map_err(|_| Error::MechanismParamInvalid("IV must be 16 bytes"))
}

/// A mechanism in wire form.
pub fn mechanism_to_pb(m: &Mechanism) -> pb::Mechanism {
    let mut p = pb::Mechanism { ckm: m.ck_type(), ..pb::Mechanism::default() };
    match m {
        Mechanism::RsaPkcsPss { hash, mgf_hash, salt_len }
        | Mechanism::Sha256RsaPkcsPss { hash, mgf_hash, salt_len }
        | Mechanism::Sha384RsaPkcsPss { hash, mgf_hash, salt_len }
        | Mechanism::Sha512RsaPkcsPss { hash, mgf_hash, salt_len } => {
            p.hash = hash.ck_digest();
            p.mgf_hash = mgf_hash.ck_digest();
            p.length = *salt_len as u64;
        }
        Mechanism::RsaOaep { hash, mgf_hash, label } => {
            p.hash = hash.ck_digest();
            p.mgf_hash = mgf_hash.ck_digest();
            p.data.clone_from(label);
        }
        Mechanism::EdDsa(Some(e)) => {
            p.has_params = true;
            p.prehash = e.prehash;
            p.data.clone_from(&e.context);
        }
        Mechanism::MlDsa { context } => p.data.clone_from(context),
        Mechanism::AesGcm { iv, aad, tag_bits } => {
            p.iv.clone_from(iv);
            p.data.clone_from(aad);
            p.length = *tag_bits as u64;
        }
        Mechanism::AesGcmGenerated { fixed, aad, tag_bits } => {
            p.generate_iv = true;
            p.iv.clone_from(fixed);
            p.data.clone_from(aad);
            p.length = *tag_bits as u64;
        }
        Mechanism::AesCbcPad { iv } | Mechanism::AesCbc { iv } => p.iv = iv.to_vec(),
        Mechanism::AesCbcPadPart { iv } => {
            p.iv = iv.to_vec();
            p.part = true;
        }
        Mechanism::AesCmacGeneral { mac_len } => p.length = *mac_len as u64,
        Mechanism::AesCtr { counter_block, counter_bits } => {
            p.iv = counter_block.to_vec();
            p.length = *counter_bits as u64;
        }
        Mechanism::Ecdh1Derive { kdf, shared_data, public_data } => {
            p.kdf = kdf_to_ck(*kdf);
            p.data.clone_from(shared_data);
            p.public_data.clone_from(public_data);
        }
        Mechanism::Hkdf { extract, expand, hash, salt, info } => {
            p.extract = *extract;
            p.expand = *expand;
            p.hash = hash.ck_digest();
            p.salt.clone_from(salt);
            p.data.clone_from(info);
        }
        Mechanism::RsaPkcs
        | Mechanism::Sha256RsaPkcs
        | Mechanism::Sha384RsaPkcs
        | Mechanism::Sha512RsaPkcs
        | Mechanism::Ecdsa
        | Mechanism::EcdsaSha256
        | Mechanism::EcdsaSha384
        | Mechanism::EcdsaSha512
        | Mechanism::EdDsa(None)
        | Mechanism::Hmac(_)
        | Mechanism::AesKeyWrap
        | Mechanism::AesKeyWrapPad
        | Mechanism::AesEcb
        | Mechanism::AesCmac
        | Mechanism::MlKem
        | Mechanism::Digest(_) => {}
    }
    p
}

/// Parses a wire mechanism. The engine validates the parameters again when it runs.
///
/// # Errors
/// `MechanismInvalid` for an unknown `CKM_*`, `MechanismParamInvalid` for bad parameters.
pub fn mechanism_from_pb(p: &pb::Mechanism) -> Result<Mechanism, Error> {
    let pss = || -> Result<(DigestAlg, DigestAlg, usize), Error> {
        let salt = usize::try_from(p.length).map_err(|_| Error::MechanismParamInvalid("salt"))?;
        Ok((digest_of(p.hash)?, digest_of(p.mgf_hash)?, salt))
    };
    let len = || usize::try_from(p.length).map_err(|_| Error::MechanismParamInvalid("length"));
    Ok(match p.ckm {
        ck::CKM_RSA_PKCS => Mechanism::RsaPkcs,
        ck::CKM_SHA256_RSA_PKCS => Mechanism::Sha256RsaPkcs,
        ck::CKM_SHA384_RSA_PKCS => Mechanism::Sha384RsaPkcs,
        ck::CKM_SHA512_RSA_PKCS => Mechanism::Sha512RsaPkcs,
        ck::CKM_RSA_PKCS_PSS => {
            let (hash, mgf_hash, salt_len) = pss()?;
            Mechanism::RsaPkcsPss { hash, mgf_hash, salt_len }
        }
        ck::CKM_SHA256_RSA_PKCS_PSS => {
            let (hash, mgf_hash, salt_len) = pss()?;
            Mechanism::Sha256RsaPkcsPss { hash, mgf_hash, salt_len }
        }
        ck::CKM_SHA384_RSA_PKCS_PSS => {
            let (hash, mgf_hash, salt_len) = pss()?;
            Mechanism::Sha384RsaPkcsPss { hash, mgf_hash, salt_len }
        }
        ck::CKM_SHA512_RSA_PKCS_PSS => {
            let (hash, mgf_hash, salt_len) = pss()?;
            Mechanism::Sha512RsaPkcsPss { hash, mgf_hash, salt_len }
        }
        ck::CKM_RSA_PKCS_OAEP => Mechanism::RsaOaep {
            hash: digest_of(p.hash)?,
            mgf_hash: digest_of(p.mgf_hash)?,
            label: p.data.clone(),
        },
        ck::CKM_ECDSA => Mechanism::Ecdsa,
        ck::CKM_ECDSA_SHA256 => Mechanism::EcdsaSha256,
        ck::CKM_ECDSA_SHA384 => Mechanism::EcdsaSha384,
        ck::CKM_ECDSA_SHA512 => Mechanism::EcdsaSha512,
        ck::CKM_EDDSA => Mechanism::EdDsa(
            p.has_params.then(|| EdDsaParams { prehash: p.prehash, context: p.data.clone() }),
        ),
        ck::CKM_ML_DSA => Mechanism::MlDsa { context: p.data.clone() },
        ck::CKM_SHA256_HMAC => Mechanism::Hmac(DigestAlg::Sha256),
        ck::CKM_SHA384_HMAC => Mechanism::Hmac(DigestAlg::Sha384),
        ck::CKM_SHA512_HMAC => Mechanism::Hmac(DigestAlg::Sha512),
        ck::CKM_AES_GCM if p.generate_iv => Mechanism::AesGcmGenerated {
            fixed: p.iv.clone(),
            aad: p.data.clone(),
            tag_bits: len()?,
        },
        ck::CKM_AES_GCM => {
            Mechanism::AesGcm { iv: p.iv.clone(), aad: p.data.clone(), tag_bits: len()? }
        }
        ck::CKM_AES_CBC_PAD if p.part => Mechanism::AesCbcPadPart { iv: iv16(&p.iv)? },
        ck::CKM_AES_CBC_PAD => Mechanism::AesCbcPad { iv: iv16(&p.iv)? },
        ck::CKM_AES_ECB => Mechanism::AesEcb,
        ck::CKM_AES_CMAC => Mechanism::AesCmac,
        ck::CKM_AES_CMAC_GENERAL => Mechanism::AesCmacGeneral { mac_len: len()? },
        ck::CKM_AES_CBC => Mechanism::AesCbc { iv: iv16(&p.iv)? },
        ck::CKM_AES_CTR => Mechanism::AesCtr { counter_block: iv16(&p.iv)?, counter_bits: len()? },
        ck::CKM_AES_KEY_WRAP => Mechanism::AesKeyWrap,
        ck::CKM_AES_KEY_WRAP_KWP => Mechanism::AesKeyWrapPad,
        ck::CKM_ECDH1_DERIVE => Mechanism::Ecdh1Derive {
            kdf: EcdhKdf::from_ck(p.kdf).ok_or(Error::MechanismParamInvalid("kdf"))?,
            shared_data: p.data.clone(),
            public_data: p.public_data.clone(),
        },
        ck::CKM_HKDF_DERIVE => Mechanism::Hkdf {
            extract: p.extract,
            expand: p.expand,
            hash: digest_of(p.hash)?,
            salt: p.salt.clone(),
            info: p.data.clone(),
        },
        ck::CKM_ML_KEM => Mechanism::MlKem,
        other => match DigestAlg::from_ck_digest(other) {
            Some(d) => Mechanism::Digest(d),
            None => return Err(Error::MechanismInvalid(other)),
        },
    })
}

/// A key-generation mechanism from its `CKM_*` value.
///
/// # Errors
/// `MechanismInvalid`.
pub fn keygen_from_ck(ckm: u64) -> Result<KeyGenMechanism, Error> {
    Ok(match ckm {
        ck::CKM_AES_KEY_GEN => KeyGenMechanism::AesKeyGen,
        ck::CKM_GENERIC_SECRET_KEY_GEN => KeyGenMechanism::GenericSecretKeyGen,
        ck::CKM_RSA_PKCS_KEY_PAIR_GEN => KeyGenMechanism::RsaPkcsKeyPairGen,
        ck::CKM_EC_KEY_PAIR_GEN => KeyGenMechanism::EcKeyPairGen,
        ck::CKM_EC_EDWARDS_KEY_PAIR_GEN => KeyGenMechanism::EcEdwardsKeyPairGen,
        ck::CKM_EC_MONTGOMERY_KEY_PAIR_GEN => KeyGenMechanism::EcMontgomeryKeyPairGen,
        ck::CKM_ML_DSA_KEY_PAIR_GEN => KeyGenMechanism::MlDsaKeyPairGen,
        ck::CKM_ML_KEM_KEY_PAIR_GEN => KeyGenMechanism::MlKemKeyPairGen,
        other => return Err(Error::MechanismInvalid(other)),
    })
}

/// A usage in wire form.
pub fn usage_to_pb(u: Usage) -> pb::Usage {
    match u {
        Usage::Sign => pb::Usage::Sign,
        Usage::Verify => pb::Usage::Verify,
        Usage::Encrypt => pb::Usage::Encrypt,
        Usage::Decrypt => pb::Usage::Decrypt,
        Usage::Wrap => pb::Usage::Wrap,
        Usage::Unwrap => pb::Usage::Unwrap,
        Usage::Derive => pb::Usage::Derive,
        Usage::Encapsulate => pb::Usage::Encapsulate,
        Usage::Decapsulate => pb::Usage::Decapsulate,
    }
}

/// Parses a wire usage.
///
/// # Errors
/// `ArgumentsBad` for an unknown or unspecified usage.
pub fn usage_from_pb(u: i32) -> Result<Usage, Error> {
    Ok(match pb::Usage::try_from(u) {
        Ok(pb::Usage::Sign) => Usage::Sign,
        Ok(pb::Usage::Verify) => Usage::Verify,
        Ok(pb::Usage::Encrypt) => Usage::Encrypt,
        Ok(pb::Usage::Decrypt) => Usage::Decrypt,
        Ok(pb::Usage::Wrap) => Usage::Wrap,
        Ok(pb::Usage::Unwrap) => Usage::Unwrap,
        Ok(pb::Usage::Derive) => Usage::Derive,
        Ok(pb::Usage::Encapsulate) => Usage::Encapsulate,
        Ok(pb::Usage::Decapsulate) => Usage::Decapsulate,
        _ => return Err(Error::ArgumentsBad("unknown key usage")),
    })
}

// --- errors ----------------------------------------------------------------------------------

/// The wire name of a core error (`Variant` or `Variant:arg[:arg]`). Carries no secret: only
/// the variant and its numeric fields.
fn error_code(e: &Error) -> String {
    let attr = |name: &str, t: &AttrType| format!("{name}:{}", t.to_raw());
    match e {
        Error::ArgumentsBad(_) => "ArgumentsBad".into(),
        Error::AttributeTypeInvalid(n) => format!("AttributeTypeInvalid:{n}"),
        Error::AttributeValueInvalid(t) => attr("AttributeValueInvalid", t),
        Error::AttributeReadOnly(t) => attr("AttributeReadOnly", t),
        Error::AttributeSensitive(t) => attr("AttributeSensitive", t),
        Error::TemplateIncomplete(t) => attr("TemplateIncomplete", t),
        Error::TemplateInconsistent(_) => "TemplateInconsistent".into(),
        Error::MechanismInvalid(n) => format!("MechanismInvalid:{n}"),
        Error::MechanismParamInvalid(_) => "MechanismParamInvalid".into(),
        Error::KeyTypeInconsistent => "KeyTypeInconsistent".into(),
        Error::KeyFunctionNotPermitted(_) => "KeyFunctionNotPermitted".into(),
        Error::KeyUnextractable(_) => "KeyUnextractable".into(),
        Error::KeySizeRange => "KeySizeRange".into(),
        Error::KeyInvalid => "KeyInvalid".into(),
        Error::ObjectHandleInvalid => "ObjectHandleInvalid".into(),
        Error::NotFound(_) => "NotFound".into(),
        Error::Ambiguous(_) => "Ambiguous".into(),
        Error::Exists(_) => "Exists".into(),
        Error::DataLenRange => "DataLenRange".into(),
        Error::EncryptedDataInvalid => "EncryptedDataInvalid".into(),
        Error::EncryptedDataLenRange => "EncryptedDataLenRange".into(),
        Error::WrappedKeyInvalid => "WrappedKeyInvalid".into(),
        Error::SignatureInvalid => "SignatureInvalid".into(),
        Error::SignatureLenRange => "SignatureLenRange".into(),
        Error::ActionProhibited(_) => "ActionProhibited".into(),
        Error::UsageLimit(_) => "UsageLimit".into(),
        Error::UseApprovalRequired(_) => "UseApprovalRequired".into(),
        Error::PinIncorrect => "PinIncorrect".into(),
        Error::PinLocked => "PinLocked".into(),
        Error::PinLenRange { min, max } => format!("PinLenRange:{min}:{max}"),
        Error::UserNotLoggedIn => "UserNotLoggedIn".into(),
        Error::UserAlreadyLoggedIn => "UserAlreadyLoggedIn".into(),
        Error::AnotherUserLoggedIn => "AnotherUserLoggedIn".into(),
        Error::UserPinNotInitialized => "UserPinNotInitialized".into(),
        Error::NotInitialized(_) => "NotInitialized".into(),
        Error::AlreadyInitialized(_) => "AlreadyInitialized".into(),
        Error::Zeroized => "Zeroized".into(),
        Error::TamperAlarm(_) => "TamperAlarm".into(),
        Error::Integrity(_) => "Integrity".into(),
        Error::Rollback { found, seen } => format!("Rollback:{found}:{seen}"),
        Error::SchemaUnsupported(v) => format!("SchemaUnsupported:{v}"),
        Error::Store(_) => "Store".into(),
        Error::ErrorState(_) => "ErrorState".into(),
        Error::CryptoFailed => "CryptoFailed".into(),
        Error::NotSupported(_) => "NotSupported".into(),
        Error::BufferTooSmall => "BufferTooSmall".into(),
        Error::Internal(_) => "Internal".into(),
    }
}

/// Parses [`error_code`]'s output; `message` is the status message (safe to show).
fn error_from_code(code: &str, message: &str) -> Option<Error> {
    let mut parts = code.split(':');
    let name = parts.next()?;
    let mut num = || parts.next().and_then(|s| s.parse::<u64>().ok());
    let msg = || message.to_owned();
    let attr = |n: Option<u64>| n.and_then(AttrType::from_raw);
    Some(match name {
        "ArgumentsBad" => Error::ArgumentsBad(REMOTE),
        "AttributeTypeInvalid" => Error::AttributeTypeInvalid(num()?),
        "AttributeValueInvalid" => Error::AttributeValueInvalid(attr(num())?),
        "AttributeReadOnly" => Error::AttributeReadOnly(attr(num())?),
        "AttributeSensitive" => Error::AttributeSensitive(attr(num())?),
        "TemplateIncomplete" => Error::TemplateIncomplete(attr(num())?),
        "TemplateInconsistent" => Error::TemplateInconsistent(REMOTE),
        "MechanismInvalid" => Error::MechanismInvalid(num()?),
        "MechanismParamInvalid" => Error::MechanismParamInvalid(REMOTE),
        "KeyTypeInconsistent" => Error::KeyTypeInconsistent,
        "KeyFunctionNotPermitted" => Error::KeyFunctionNotPermitted(REMOTE),
        "KeyUnextractable" => Error::KeyUnextractable(REMOTE),
        "KeySizeRange" => Error::KeySizeRange,
        "KeyInvalid" => Error::KeyInvalid,
        "ObjectHandleInvalid" => Error::ObjectHandleInvalid,
        "NotFound" => Error::NotFound(msg()),
        "Ambiguous" => Error::Ambiguous(msg()),
        "Exists" => Error::Exists(msg()),
        "DataLenRange" => Error::DataLenRange,
        "EncryptedDataInvalid" => Error::EncryptedDataInvalid,
        "EncryptedDataLenRange" => Error::EncryptedDataLenRange,
        "WrappedKeyInvalid" => Error::WrappedKeyInvalid,
        "SignatureInvalid" => Error::SignatureInvalid,
        "SignatureLenRange" => Error::SignatureLenRange,
        "ActionProhibited" => Error::ActionProhibited(REMOTE),
        "UsageLimit" => Error::UsageLimit(REMOTE),
        "UseApprovalRequired" => Error::UseApprovalRequired(msg()),
        "PinIncorrect" => Error::PinIncorrect,
        "PinLocked" => Error::PinLocked,
        "PinLenRange" => {
            let min = usize::try_from(num()?).ok()?;
            let max = usize::try_from(num()?).ok()?;
            Error::PinLenRange { min, max }
        }
        "UserNotLoggedIn" => Error::UserNotLoggedIn,
        "UserAlreadyLoggedIn" => Error::UserAlreadyLoggedIn,
        "AnotherUserLoggedIn" => Error::AnotherUserLoggedIn,
        "UserPinNotInitialized" => Error::UserPinNotInitialized,
        "NotInitialized" => Error::NotInitialized(msg()),
        "AlreadyInitialized" => Error::AlreadyInitialized(msg()),
        "Zeroized" => Error::Zeroized,
        "TamperAlarm" => Error::TamperAlarm(msg()),
        "Integrity" => Error::Integrity(REMOTE),
        "Rollback" => Error::Rollback { found: num()?, seen: num()? },
        "SchemaUnsupported" => Error::SchemaUnsupported(i64::try_from(num()?).ok()?),
        "Store" => Error::Store(msg()),
        "ErrorState" => Error::ErrorState(msg()),
        "CryptoFailed" => Error::CryptoFailed,
        "NotSupported" => Error::NotSupported(REMOTE),
        "BufferTooSmall" => Error::BufferTooSmall,
        "Internal" => Error::Internal(REMOTE),
        _ => return None,
    })
}

/// The status for a core error: [`crate::status_from_core`] plus the error itself in the
/// `bulwark-error` metadata key.
pub fn status_with_error(e: &Error) -> Status {
    with_error(crate::status_from_core(e), e)
}

/// Attaches a core error to a status (keeps its code and message).
pub fn with_error(mut st: Status, e: &Error) -> Status {
    if let Ok(v) = error_code(e).parse() {
        st.metadata_mut().insert(ERROR_KEY, v);
    }
    st
}

/// The core error a status carries, if it carries one.
pub fn error_from_status(st: &Status) -> Option<Error> {
    let code = st.metadata().get(ERROR_KEY)?.to_str().ok()?;
    error_from_code(code, st.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_mechanism() -> Vec<Mechanism> {
        use DigestAlg::*;
        vec![
            Mechanism::RsaPkcs,
            Mechanism::Sha256RsaPkcs,
            Mechanism::Sha384RsaPkcs,
            Mechanism::Sha512RsaPkcs,
            Mechanism::RsaPkcsPss { hash: Sha384, mgf_hash: Sha256, salt_len: 48 },
            Mechanism::Sha256RsaPkcsPss { hash: Sha256, mgf_hash: Sha256, salt_len: 32 },
            Mechanism::Sha384RsaPkcsPss { hash: Sha384, mgf_hash: Sha384, salt_len: 0 },
            Mechanism::Sha512RsaPkcsPss { hash: Sha512, mgf_hash: Sha1, salt_len: 64 },
            Mechanism::RsaOaep { hash: Sha1, mgf_hash: Sha224, label: b"label".to_vec() },
            Mechanism::RsaOaep { hash: Sha512, mgf_hash: Sha512, label: Vec::new() },
            Mechanism::Ecdsa,
            Mechanism::EcdsaSha256,
            Mechanism::EcdsaSha384,
            Mechanism::EcdsaSha512,
            Mechanism::EdDsa(None),
            Mechanism::EdDsa(Some(EdDsaParams { prehash: false, context: Vec::new() })),
            Mechanism::EdDsa(Some(EdDsaParams { prehash: true, context: b"ctx".to_vec() })),
            Mechanism::MlDsa { context: Vec::new() },
            Mechanism::MlDsa { context: b"c".to_vec() },
            Mechanism::Hmac(Sha256),
            Mechanism::Hmac(Sha384),
            Mechanism::Hmac(Sha512),
            Mechanism::AesGcm { iv: vec![7; 12], aad: b"aad".to_vec(), tag_bits: 128 },
            Mechanism::AesCbcPad { iv: [1; 16] },
            Mechanism::AesCbc { iv: [2; 16] },
            Mechanism::AesCtr { counter_block: [3; 16], counter_bits: 32 },
            Mechanism::AesKeyWrap,
            Mechanism::AesKeyWrapPad,
            Mechanism::Ecdh1Derive {
                kdf: EcdhKdf::Null,
                shared_data: Vec::new(),
                public_data: vec![4; 65],
            },
            Mechanism::Ecdh1Derive {
                kdf: EcdhKdf::X963(Sha384),
                shared_data: b"info".to_vec(),
                public_data: vec![5; 32],
            },
            Mechanism::Hkdf {
                extract: true,
                expand: false,
                hash: Sha256,
                salt: None,
                info: Vec::new(),
            },
            Mechanism::Hkdf {
                extract: false,
                expand: true,
                hash: Sha512,
                salt: Some(Vec::new()),
                info: b"i".to_vec(),
            },
            Mechanism::Hkdf {
                extract: true,
                expand: true,
                hash: Sha384,
                salt: Some(b"salt".to_vec()),
                info: b"info".to_vec(),
            },
            Mechanism::MlKem,
            Mechanism::AesEcb,
            Mechanism::AesCmac,
            Mechanism::AesCmacGeneral { mac_len: 8 },
            Mechanism::AesCbcPadPart { iv: [3; 16] },
            Mechanism::AesGcmGenerated {
                fixed: vec![1, 2, 3, 4],
                aad: b"a".to_vec(),
                tag_bits: 128,
            },
            Mechanism::AesGcmGenerated { fixed: vec![], aad: vec![], tag_bits: 128 },
            Mechanism::Digest(Sha1),
            Mechanism::Digest(Sha224),
            Mechanism::Digest(Sha256),
            Mechanism::Digest(Sha384),
            Mechanism::Digest(Sha512),
        ]
    }

    #[test]
    fn every_mechanism_round_trips() {
        let all = every_mechanism();
        for m in &all {
            let wire = mechanism_to_pb(m);
            // Through the protobuf encoding as well, not just the message struct.
            let bytes = prost::Message::encode_to_vec(&wire);
            let back: pb::Mechanism = prost::Message::decode(&bytes[..]).unwrap();
            assert_eq!(&mechanism_from_pb(&back).unwrap(), m, "{m:?}");
        }
        // Every CKM_* of the catalogue that is not a key generation is covered above.
        for info in bulwark_core::mechanism::supported_mechanisms() {
            if keygen_from_ck(info.ck_type).is_ok() {
                continue;
            }
            assert!(all.iter().any(|m| m.ck_type() == info.ck_type), "0x{:x}", info.ck_type);
        }
    }

    #[test]
    fn keygen_and_usage_round_trip() {
        for info in bulwark_core::mechanism::supported_mechanisms() {
            if let Ok(k) = keygen_from_ck(info.ck_type) {
                assert_eq!(k.ck_type(), info.ck_type);
            }
        }
        assert!(keygen_from_ck(ck::CKM_DES_KEY_GEN).is_err());
        for u in [
            Usage::Sign,
            Usage::Verify,
            Usage::Encrypt,
            Usage::Decrypt,
            Usage::Wrap,
            Usage::Unwrap,
            Usage::Derive,
            Usage::Encapsulate,
            Usage::Decapsulate,
        ] {
            assert_eq!(usage_from_pb(usage_to_pb(u) as i32).unwrap(), u);
        }
        assert!(usage_from_pb(0).is_err());
    }

    #[test]
    fn bad_mechanisms_are_refused() {
        let m = pb::Mechanism { ckm: ck::CKM_DES_CBC, ..Default::default() };
        assert!(matches!(mechanism_from_pb(&m), Err(Error::MechanismInvalid(_))));
        let m = pb::Mechanism { ckm: ck::CKM_AES_CBC, iv: vec![0; 8], ..Default::default() };
        assert!(matches!(mechanism_from_pb(&m), Err(Error::MechanismParamInvalid(_))));
        let m = pb::Mechanism { ckm: ck::CKM_RSA_PKCS_OAEP, hash: 0x9999, ..Default::default() };
        assert!(matches!(mechanism_from_pb(&m), Err(Error::MechanismParamInvalid(_))));
    }

    #[test]
    fn attributes_round_trip() {
        let t = vec![
            (AttrType::Class, AttrValue::Ulong(4)),
            (AttrType::Token, AttrValue::Bool(true)),
            (AttrType::Label, AttrValue::Bytes(b"k".to_vec())),
            (AttrType::StartDate, AttrValue::Date(Some(*b"20260101"))),
            (AttrType::EndDate, AttrValue::Date(None)),
            (AttrType::AllowedMechanisms, AttrValue::MechanismList(vec![1, 0x1087])),
        ];
        let wire = template_to_pb(&t);
        assert_eq!(wire[0].value, 4u64.to_le_bytes());
        assert_eq!(template_from_pb(&wire).unwrap(), t);
        let bad = [pb::Attribute { r#type: AttrType::Class.to_raw(), value: vec![1, 2] }];
        assert!(matches!(template_from_pb(&bad), Err(Error::AttributeValueInvalid(_))));
        let unknown = [pb::Attribute { r#type: 0x7fff_0000, value: vec![] }];
        assert!(matches!(template_from_pb(&unknown), Err(Error::AttributeTypeInvalid(_))));
        let twice = [
            pb::Attribute { r#type: AttrType::Token.to_raw(), value: vec![1] },
            pb::Attribute { r#type: AttrType::Token.to_raw(), value: vec![0] },
        ];
        assert!(matches!(template_from_pb(&twice), Err(Error::TemplateInconsistent(_))));
    }

    #[test]
    fn errors_round_trip_to_the_same_variant() {
        let all = [
            Error::ArgumentsBad("x"),
            Error::AttributeTypeInvalid(0x1234),
            Error::AttributeValueInvalid(AttrType::Label),
            Error::AttributeReadOnly(AttrType::Class),
            Error::AttributeSensitive(AttrType::Value),
            Error::TemplateIncomplete(AttrType::EcParams),
            Error::TemplateInconsistent("x"),
            Error::MechanismInvalid(0x1081),
            Error::MechanismParamInvalid("x"),
            Error::KeyTypeInconsistent,
            Error::KeyFunctionNotPermitted("x"),
            Error::KeyUnextractable("x"),
            Error::KeySizeRange,
            Error::KeyInvalid,
            Error::ObjectHandleInvalid,
            Error::NotFound("k".into()),
            Error::Ambiguous("k".into()),
            Error::Exists("k".into()),
            Error::DataLenRange,
            Error::EncryptedDataInvalid,
            Error::EncryptedDataLenRange,
            Error::WrappedKeyInvalid,
            Error::SignatureInvalid,
            Error::SignatureLenRange,
            Error::ActionProhibited("x"),
            Error::PinIncorrect,
            Error::PinLocked,
            Error::PinLenRange { min: 4, max: 255 },
            Error::UserNotLoggedIn,
            Error::UserAlreadyLoggedIn,
            Error::AnotherUserLoggedIn,
            Error::UserPinNotInitialized,
            Error::NotInitialized("p".into()),
            Error::AlreadyInitialized("p".into()),
            Error::Zeroized,
            Error::TamperAlarm("r".into()),
            Error::Integrity("x"),
            Error::Rollback { found: 3, seen: 9 },
            Error::SchemaUnsupported(7),
            Error::Store("busy".into()),
            Error::ErrorState("kat".into()),
            Error::CryptoFailed,
            Error::NotSupported("x"),
            Error::BufferTooSmall,
            Error::Internal("x"),
        ];
        for e in &all {
            let st = status_with_error(e);
            let back = error_from_status(&st).unwrap_or_else(|| panic!("{e:?}"));
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(e),
                "{e:?} came back as {back:?}"
            );
            // Numeric fields survive exactly.
            assert_eq!(error_code(&back), error_code(e));
        }
        assert!(error_from_status(&Status::internal("x")).is_none());
    }
}
