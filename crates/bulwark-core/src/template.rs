//! Template validation: turning a caller's attribute template into a complete, consistent
//! attribute set for a new object, and checking attribute changes on existing objects.
//!
//! Every rejection names the attribute at fault and maps 1:1 onto a `CKR_*` code:
//! unknown type → `AttributeTypeInvalid`, bad value → `AttributeValueInvalid`, not settable →
//! `AttributeReadOnly`, missing → `TemplateIncomplete`, contradictory → `TemplateInconsistent`.
//! Bulwark's defaults are the secure ones: private and secret keys are sensitive, private and
//! non-extractable unless the template says otherwise.

use std::collections::BTreeSet;

use crate::attr::{AttrType, AttrValue, Attributes, KeyType, ObjectClass};
use crate::crypto::{Curve, KeySpec, MlDsaParam, MlKemParam};
use crate::error::{Error, Result};
use crate::mechanism::KeyGenMechanism;

/// A parsed caller template: typed values, no duplicates.
pub type Template = [(AttrType, AttrValue)];

/// Parses a raw template (`(CKA_*, value bytes)` pairs). Unknown types are
/// `AttributeTypeInvalid`; malformed values `AttributeValueInvalid`; a type given twice with
/// different values `TemplateInconsistent`.
pub fn parse_raw(raw: &[(u64, &[u8])]) -> Result<Vec<(AttrType, AttrValue)>> {
    crate::limits::check_template_len(raw.len())?;
    let mut out: Vec<(AttrType, AttrValue)> = Vec::with_capacity(raw.len());
    for (t, v) in raw {
        let t = AttrType::from_raw(*t).ok_or(Error::AttributeTypeInvalid(*t))?;
        crate::limits::check_attr_len(t, v.len())?;
        let v = AttrValue::from_raw(t, v)?;
        if let Some((_, prev)) = out.iter().find(|(pt, _)| *pt == t) {
            if *prev != v {
                return Err(Error::TemplateInconsistent(
                    "attribute given twice with different values",
                ));
            }
            continue;
        }
        out.push((t, v));
    }
    Ok(out)
}

fn find(t: &Template, a: AttrType) -> Option<&AttrValue> {
    t.iter().find(|(k, _)| *k == a).map(|(_, v)| v)
}

fn find_bool(t: &Template, a: AttrType) -> Option<bool> {
    match find(t, a) {
        Some(AttrValue::Bool(b)) => Some(*b),
        _ => None,
    }
}

fn find_ulong(t: &Template, a: AttrType) -> Option<u64> {
    match find(t, a) {
        Some(AttrValue::Ulong(v)) => Some(*v),
        _ => None,
    }
}

fn find_bytes(t: &Template, a: AttrType) -> Option<&[u8]> {
    match find(t, a) {
        Some(AttrValue::Bytes(v)) => Some(v),
        _ => None,
    }
}

/// Attributes only the HSM sets (at creation) and a template may never contain.
const HSM_ONLY: &[AttrType] = &[
    AttrType::Local,
    // The state moves only by its own audited transitions; the activation, protect-stop and
    // deactivation dates may be given at creation.
    AttrType::BulwarkState,
    AttrType::BulwarkCompromiseDate,
    AttrType::BulwarkDestroyDate,
    // The usage policy changes only through its own audited call (token/usepolicy.rs).
    AttrType::BulwarkUsePrincipals,
    AttrType::BulwarkMaxUses,
    AttrType::BulwarkUseCount,
    AttrType::BulwarkRateUses,
    AttrType::BulwarkRatePeriod,
    AttrType::BulwarkUseQuorum,
    // Versions and rotation change only through their own audited calls (token/versions.rs).
    AttrType::BulwarkKeyVersion,
    AttrType::BulwarkRotationPeriod,
    AttrType::BulwarkKeyFamily,
    AttrType::BulwarkMinDecryptVersion,
    AttrType::BulwarkRotatedAt,
    AttrType::BulwarkDestroyScheduled,
    AttrType::BulwarkArchived,
    AttrType::AlwaysSensitive,
    AttrType::NeverExtractable,
    AttrType::KeyGenMechanism,
    AttrType::UniqueId,
];

const STORAGE: &[AttrType] = &[
    AttrType::Class,
    AttrType::Token,
    AttrType::Private,
    AttrType::Label,
    AttrType::Modifiable,
    AttrType::Copyable,
    AttrType::Destroyable,
    AttrType::UniqueId,
];

const KEY_COMMON: &[AttrType] = &[
    AttrType::KeyType,
    AttrType::Id,
    AttrType::StartDate,
    AttrType::EndDate,
    AttrType::Derive,
    AttrType::Local,
    AttrType::KeyGenMechanism,
    AttrType::AllowedMechanisms,
    AttrType::BulwarkState,
    AttrType::BulwarkActivationDate,
    AttrType::BulwarkProtectStopDate,
    AttrType::BulwarkDeactivationDate,
    AttrType::BulwarkCompromiseDate,
    AttrType::BulwarkDestroyDate,
    AttrType::BulwarkUsePrincipals,
    AttrType::BulwarkMaxUses,
    AttrType::BulwarkUseCount,
    AttrType::BulwarkRateUses,
    AttrType::BulwarkRatePeriod,
    AttrType::BulwarkUseQuorum,
    AttrType::BulwarkKeyVersion,
    AttrType::BulwarkRotationPeriod,
    AttrType::BulwarkKeyFamily,
    AttrType::BulwarkMinDecryptVersion,
    AttrType::BulwarkRotatedAt,
    AttrType::BulwarkDestroyScheduled,
    AttrType::BulwarkArchived,
];

const SECRET_OR_PRIVATE: &[AttrType] = &[
    AttrType::Sensitive,
    AttrType::Extractable,
    AttrType::AlwaysSensitive,
    AttrType::NeverExtractable,
    AttrType::WrapWithTrusted,
    AttrType::AlwaysAuthenticate,
    AttrType::Decrypt,
    AttrType::Sign,
    AttrType::SignRecover,
    AttrType::Unwrap,
    AttrType::Decapsulate,
];

/// The attributes an object of this class may carry (anything else in a template is
/// `AttributeTypeInvalid`).
fn allowed_for(class: ObjectClass) -> BTreeSet<AttrType> {
    let mut s: BTreeSet<AttrType> = STORAGE.iter().copied().collect();
    let key = |s: &mut BTreeSet<AttrType>| s.extend(KEY_COMMON.iter().copied());
    match class {
        ObjectClass::Data => s.extend([AttrType::Application, AttrType::ObjectId, AttrType::Value]),
        ObjectClass::Certificate => s.extend([
            AttrType::CertificateType,
            AttrType::CertificateCategory,
            AttrType::Trusted,
            AttrType::CheckValue,
            AttrType::StartDate,
            AttrType::EndDate,
            AttrType::Subject,
            AttrType::Id,
            AttrType::Issuer,
            AttrType::SerialNumber,
            AttrType::Value,
            AttrType::PublicKeyInfo,
        ]),
        ObjectClass::PublicKey => {
            key(&mut s);
            s.extend([
                AttrType::Subject,
                AttrType::Encrypt,
                AttrType::Verify,
                AttrType::VerifyRecover,
                AttrType::Wrap,
                AttrType::Trusted,
                AttrType::Encapsulate,
                AttrType::PublicKeyInfo,
                AttrType::Modulus,
                AttrType::ModulusBits,
                AttrType::PublicExponent,
                AttrType::EcParams,
                AttrType::EcPoint,
                AttrType::ParameterSet,
                AttrType::Value,
                AttrType::CheckValue,
            ]);
        }
        ObjectClass::PrivateKey => {
            key(&mut s);
            s.extend(SECRET_OR_PRIVATE.iter().copied());
            s.extend([
                AttrType::Subject,
                AttrType::PublicKeyInfo,
                AttrType::Modulus,
                AttrType::PublicExponent,
                AttrType::EcParams,
                AttrType::ParameterSet,
                AttrType::Value,
                AttrType::PrivateExponent,
                AttrType::Prime1,
                AttrType::Prime2,
                AttrType::Exponent1,
                AttrType::Exponent2,
                AttrType::Coefficient,
                AttrType::Seed,
            ]);
        }
        ObjectClass::SecretKey => {
            key(&mut s);
            s.extend(SECRET_OR_PRIVATE.iter().copied());
            s.extend([
                AttrType::Encrypt,
                AttrType::Verify,
                AttrType::Wrap,
                AttrType::Trusted,
                AttrType::Value,
                AttrType::ValueLen,
                AttrType::CheckValue,
                AttrType::Encapsulate,
            ]);
        }
    }
    s
}

fn check_allowed(class: ObjectClass, t: &Template, creating_from_value: bool) -> Result<()> {
    // The same size limits on every path (C templates, the p11 codec, the label API, the CLI).
    crate::limits::check_template(t)?;
    let allowed = allowed_for(class);
    for (a, _) in t {
        if !allowed.contains(a) {
            return Err(Error::AttributeTypeInvalid(a.to_raw()));
        }
        if HSM_ONLY.contains(a) {
            return Err(Error::AttributeReadOnly(*a));
        }
        if !creating_from_value && a.is_secret_component() {
            // Generated keys get their value from the HSM, never from the template.
            return Err(Error::TemplateInconsistent("a generated key cannot be given a value"));
        }
    }
    if let Some(c) = find_ulong(t, AttrType::Class) {
        if ObjectClass::from_raw(c) != Some(class) {
            return Err(Error::TemplateInconsistent("CKA_CLASS does not fit the operation"));
        }
    }
    if let (Some(true), Some(true)) =
        (find_bool(t, AttrType::Trusted), find_bool(t, AttrType::Private))
    {
        // Trusted public objects are an SO matter; nothing to check here beyond the type.
    }
    Ok(())
}

/// Default usage flags by key type, used when the template sets none of them. They follow the
/// algorithm: an AES key encrypts and wraps, an EC private key signs and derives, etc.
fn default_usage(class: ObjectClass, kt: KeyType) -> &'static [AttrType] {
    use AttrType as A;
    match (class, kt) {
        (ObjectClass::SecretKey, KeyType::Aes) => &[A::Encrypt, A::Decrypt, A::Wrap, A::Unwrap],
        (ObjectClass::SecretKey, KeyType::GenericSecret) => &[A::Sign, A::Verify, A::Derive],
        (ObjectClass::SecretKey, KeyType::Hkdf)
        | (ObjectClass::PrivateKey, KeyType::EcMontgomery) => &[A::Derive],
        (ObjectClass::PrivateKey, KeyType::Rsa) => &[A::Sign, A::Decrypt, A::Unwrap],
        (ObjectClass::PublicKey, KeyType::Rsa) => {
            &[A::Verify, A::VerifyRecover, A::Encrypt, A::Wrap]
        }
        (ObjectClass::PrivateKey, KeyType::Ec) => &[A::Sign, A::Derive],
        (ObjectClass::PrivateKey, KeyType::EcEdwards | KeyType::MlDsa) => &[A::Sign],
        (ObjectClass::PublicKey, KeyType::Ec | KeyType::EcEdwards | KeyType::MlDsa) => &[A::Verify],
        (ObjectClass::PrivateKey, KeyType::MlKem) => &[A::Decapsulate],
        (ObjectClass::PublicKey, KeyType::MlKem) => &[A::Encapsulate],
        _ => &[],
    }
}

const USAGE: &[AttrType] = &[
    AttrType::Encrypt,
    AttrType::Decrypt,
    AttrType::Wrap,
    AttrType::Unwrap,
    AttrType::Sign,
    AttrType::Verify,
    AttrType::Derive,
    AttrType::SignRecover,
    AttrType::VerifyRecover,
    AttrType::Encapsulate,
    AttrType::Decapsulate,
];

/// How a new object comes to be, which decides the truth of CKA_LOCAL & co.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Generated inside the HSM by this mechanism (`CKM_*`).
    Generated(u64),
    /// Imported in plaintext (C_CreateObject).
    Imported,
    /// Unwrapped or derived: never local; sensitivity history unknown (spec: ALWAYS_SENSITIVE
    /// and NEVER_EXTRACTABLE false).
    Unwrapped,
    /// Derived from a base key whose ALWAYS_SENSITIVE / NEVER_EXTRACTABLE are given.
    Derived {
        /// Base key's CKA_ALWAYS_SENSITIVE.
        always_sensitive: bool,
        /// Base key's CKA_NEVER_EXTRACTABLE.
        never_extractable: bool,
    },
}

/// Builds the full attribute set of a new object from the caller's template.
fn build(class: ObjectClass, kt: Option<KeyType>, t: &Template, origin: Origin) -> Attributes {
    let mut a = Attributes::new();
    for (k, v) in t {
        if k.is_secret_component()
            && class != ObjectClass::Data
            && class != ObjectClass::Certificate
        {
            continue; // key material is carried separately, never in the attribute set
        }
        // Kinds were checked at parse time.
        let _ = a.set(*k, v.clone());
    }
    a.set_ulong(AttrType::Class, class.to_raw());
    let is_secret = matches!(class, ObjectClass::PrivateKey | ObjectClass::SecretKey);
    let defaults: &[(AttrType, bool)] = &[
        (AttrType::Token, false),
        (AttrType::Private, is_secret),
        (AttrType::Modifiable, true),
        (AttrType::Copyable, true),
        (AttrType::Destroyable, true),
    ];
    for (k, d) in defaults {
        if !a.contains(*k) {
            a.set_bool(*k, *d);
        }
    }
    if !a.contains(AttrType::Label) {
        a.set_bytes(AttrType::Label, Vec::new());
    }
    let Some(kt) = kt else { return a };
    a.set_ulong(AttrType::KeyType, kt.to_raw());
    if !a.contains(AttrType::Id) {
        a.set_bytes(AttrType::Id, Vec::new());
    }
    for d in [AttrType::StartDate, AttrType::EndDate] {
        if !a.contains(d) {
            let _ = a.set(d, AttrValue::Date(None));
        }
    }
    // A private or secret key whose template names any usage gets exactly those usages (the
    // secure reading: nothing the caller did not ask for). A public key holds no secret, so each
    // usage it does not name takes its key type's default, as clients assume (pkcs11-tool asks
    // for CKA_ENCRYPT and CKA_VERIFY on an RSA key pair, then wraps with the public key).
    let any_usage = class != ObjectClass::PublicKey && t.iter().any(|(k, _)| USAGE.contains(k));
    let defaults = default_usage(class, kt);
    for u in USAGE {
        if !a.contains(*u) && allowed_for(class).contains(u) {
            a.set_bool(*u, !any_usage && defaults.contains(u));
        }
    }
    let (local, mech) = match origin {
        Origin::Generated(m) => (true, m),
        _ => (false, cryptoki_sys::CK_UNAVAILABLE_INFORMATION),
    };
    a.set_bool(AttrType::Local, local);
    a.set_ulong(AttrType::KeyGenMechanism, mech);
    if !a.contains(AttrType::AllowedMechanisms) {
        let _ = a.set(AttrType::AllowedMechanisms, AttrValue::MechanismList(Vec::new()));
    }
    if is_secret {
        if !a.contains(AttrType::Sensitive) {
            a.set_bool(AttrType::Sensitive, true);
        }
        if !a.contains(AttrType::Extractable) {
            a.set_bool(AttrType::Extractable, false);
        }
        for k in [AttrType::WrapWithTrusted, AttrType::AlwaysAuthenticate] {
            if !a.contains(k) {
                a.set_bool(k, false);
            }
        }
        let sensitive = a.bool_or(AttrType::Sensitive, true);
        let extractable = a.bool_or(AttrType::Extractable, false);
        let (always_s, never_x) = match origin {
            Origin::Generated(_) => (sensitive, !extractable),
            Origin::Imported | Origin::Unwrapped => (false, false),
            Origin::Derived { always_sensitive, never_extractable } => {
                (always_sensitive && sensitive, never_extractable && !extractable)
            }
        };
        a.set_bool(AttrType::AlwaysSensitive, always_s);
        a.set_bool(AttrType::NeverExtractable, never_x);
    }
    if (class == ObjectClass::PublicKey || class == ObjectClass::SecretKey)
        && !a.contains(AttrType::Trusted)
    {
        a.set_bool(AttrType::Trusted, false);
    }
    a
}

/// Validates a `C_GenerateKey` template and returns the new key's attributes and spec.
pub fn secret_key_for_generate(
    mech: KeyGenMechanism,
    t: &Template,
) -> Result<(Attributes, KeySpec)> {
    check_allowed(ObjectClass::SecretKey, t, false)?;
    let (kt, spec) = match mech {
        KeyGenMechanism::AesKeyGen => {
            let len = find_ulong(t, AttrType::ValueLen)
                .ok_or(Error::TemplateIncomplete(AttrType::ValueLen))?;
            if !matches!(len, 16 | 24 | 32) {
                return Err(Error::AttributeValueInvalid(AttrType::ValueLen));
            }
            (KeyType::Aes, KeySpec::Aes { bytes: len as usize })
        }
        KeyGenMechanism::GenericSecretKeyGen => {
            let len = find_ulong(t, AttrType::ValueLen)
                .ok_or(Error::TemplateIncomplete(AttrType::ValueLen))?;
            if !(1..=512).contains(&len) {
                return Err(Error::AttributeValueInvalid(AttrType::ValueLen));
            }
            let kt = match find_ulong(t, AttrType::KeyType).map(KeyType::from_raw) {
                Some(Some(KeyType::Hkdf)) => KeyType::Hkdf,
                _ => KeyType::GenericSecret,
            };
            (kt, KeySpec::GenericSecret { bytes: len as usize })
        }
        _ => return Err(Error::MechanismInvalid(mech.ck_type())),
    };
    if let Some(k) = find_ulong(t, AttrType::KeyType) {
        if KeyType::from_raw(k) != Some(kt) {
            return Err(Error::TemplateInconsistent("CKA_KEY_TYPE does not fit the mechanism"));
        }
    }
    let mut a = build(ObjectClass::SecretKey, Some(kt), t, Origin::Generated(mech.ck_type()));
    a.set_ulong(AttrType::ValueLen, spec_value_len(spec));
    Ok((a, spec))
}

fn spec_value_len(spec: KeySpec) -> u64 {
    match spec {
        KeySpec::Aes { bytes } | KeySpec::GenericSecret { bytes } => bytes as u64,
        _ => 0,
    }
}

/// Parses an EC/Edwards/Montgomery CKA_EC_PARAMS value into a key spec.
pub fn ec_params_to_spec(params: &[u8]) -> Result<KeySpec> {
    if let Some(c) = Curve::from_oid_der(params) {
        return Ok(KeySpec::Ec(c));
    }
    // id-Ed25519 / id-X25519 OIDs, or the PrintableString curve names of PKCS#11 3.0.
    match params {
        [0x06, 0x03, 0x2b, 0x65, 0x70] => Ok(KeySpec::Ed25519),
        [0x06, 0x03, 0x2b, 0x65, 0x6e] => Ok(KeySpec::X25519),
        [0x13, n, rest @ ..] if usize::from(*n) == rest.len() => match rest {
            b"edwards25519" => Ok(KeySpec::Ed25519),
            b"curve25519" => Ok(KeySpec::X25519),
            _ => Err(Error::AttributeValueInvalid(AttrType::EcParams)),
        },
        _ => Err(Error::AttributeValueInvalid(AttrType::EcParams)),
    }
}

/// The CKA_EC_PARAMS value Bulwark reports for a spec.
pub fn spec_to_ec_params(spec: KeySpec) -> Option<Vec<u8>> {
    match spec {
        KeySpec::Ec(c) => Some(c.oid_der().to_vec()),
        KeySpec::Ed25519 => Some(vec![0x06, 0x03, 0x2b, 0x65, 0x70]),
        KeySpec::X25519 => Some(vec![0x06, 0x03, 0x2b, 0x65, 0x6e]),
        _ => None,
    }
}

/// The key type of a spec.
pub fn spec_key_type(spec: KeySpec) -> KeyType {
    match spec {
        KeySpec::Aes { .. } => KeyType::Aes,
        KeySpec::GenericSecret { .. } => KeyType::GenericSecret,
        KeySpec::Rsa { .. } => KeyType::Rsa,
        KeySpec::Ec(_) => KeyType::Ec,
        KeySpec::Ed25519 => KeyType::EcEdwards,
        KeySpec::X25519 => KeyType::EcMontgomery,
        KeySpec::MlDsa(_) => KeyType::MlDsa,
        KeySpec::MlKem(_) => KeyType::MlKem,
    }
}

/// The CKA_PARAMETER_SET value of a post-quantum spec.
pub fn spec_parameter_set(spec: KeySpec) -> Option<u64> {
    match spec {
        KeySpec::MlDsa(p) => Some(p.ck_parameter_set()),
        KeySpec::MlKem(p) => Some(p.ck_parameter_set()),
        _ => None,
    }
}

fn ml_dsa_from(set: u64) -> Result<MlDsaParam> {
    [MlDsaParam::MlDsa44, MlDsaParam::MlDsa65, MlDsaParam::MlDsa87]
        .into_iter()
        .find(|p| p.ck_parameter_set() == set)
        .ok_or(Error::AttributeValueInvalid(AttrType::ParameterSet))
}

fn ml_kem_from(set: u64) -> Result<MlKemParam> {
    [MlKemParam::MlKem512, MlKemParam::MlKem768, MlKemParam::MlKem1024]
        .into_iter()
        .find(|p| p.ck_parameter_set() == set)
        .ok_or(Error::AttributeValueInvalid(AttrType::ParameterSet))
}

/// Validates `C_GenerateKeyPair` templates; returns (public attrs, private attrs, spec). The
/// public values (modulus, point...) are filled in by the caller after generation.
pub fn key_pair_for_generate(
    mech: KeyGenMechanism,
    pub_t: &Template,
    priv_t: &Template,
) -> Result<(Attributes, Attributes, KeySpec)> {
    check_allowed(ObjectClass::PublicKey, pub_t, false)?;
    check_allowed(ObjectClass::PrivateKey, priv_t, false)?;
    let param = |a: AttrType| find(pub_t, a).or_else(|| find(priv_t, a));
    let spec = match mech {
        KeyGenMechanism::RsaPkcsKeyPairGen => {
            let bits = find_ulong(pub_t, AttrType::ModulusBits)
                .ok_or(Error::TemplateIncomplete(AttrType::ModulusBits))?;
            if !matches!(bits, 2048 | 3072 | 4096) {
                return Err(Error::KeySizeRange);
            }
            if let Some(e) = find_bytes(pub_t, AttrType::PublicExponent) {
                let e: Vec<u8> = e.iter().copied().skip_while(|b| *b == 0).collect();
                if e != [0x01, 0x00, 0x01] {
                    // aws-lc-rs generates with e = 65537 only.
                    return Err(Error::AttributeValueInvalid(AttrType::PublicExponent));
                }
            }
            KeySpec::Rsa { bits: bits as usize }
        }
        KeyGenMechanism::EcKeyPairGen => {
            let Some(AttrValue::Bytes(p)) = param(AttrType::EcParams) else {
                return Err(Error::TemplateIncomplete(AttrType::EcParams));
            };
            match ec_params_to_spec(p)? {
                s @ KeySpec::Ec(_) => s,
                _ => {
                    return Err(Error::TemplateInconsistent(
                        "curve does not fit CKM_EC_KEY_PAIR_GEN",
                    ))
                }
            }
        }
        KeyGenMechanism::EcEdwardsKeyPairGen => match param(AttrType::EcParams) {
            None => KeySpec::Ed25519,
            Some(AttrValue::Bytes(p)) if ec_params_to_spec(p)? == KeySpec::Ed25519 => {
                KeySpec::Ed25519
            }
            Some(_) => return Err(Error::AttributeValueInvalid(AttrType::EcParams)),
        },
        KeyGenMechanism::EcMontgomeryKeyPairGen => match param(AttrType::EcParams) {
            None => KeySpec::X25519,
            Some(AttrValue::Bytes(p)) if ec_params_to_spec(p)? == KeySpec::X25519 => {
                KeySpec::X25519
            }
            Some(_) => return Err(Error::AttributeValueInvalid(AttrType::EcParams)),
        },
        KeyGenMechanism::MlDsaKeyPairGen => {
            let Some(AttrValue::Ulong(s)) = param(AttrType::ParameterSet) else {
                return Err(Error::TemplateIncomplete(AttrType::ParameterSet));
            };
            KeySpec::MlDsa(ml_dsa_from(*s)?)
        }
        KeyGenMechanism::MlKemKeyPairGen => {
            let Some(AttrValue::Ulong(s)) = param(AttrType::ParameterSet) else {
                return Err(Error::TemplateIncomplete(AttrType::ParameterSet));
            };
            KeySpec::MlKem(ml_kem_from(*s)?)
        }
        _ => return Err(Error::MechanismInvalid(mech.ck_type())),
    };
    let kt = spec_key_type(spec);
    for t in [pub_t, priv_t] {
        if let Some(k) = find_ulong(t, AttrType::KeyType) {
            if KeyType::from_raw(k) != Some(kt) {
                return Err(Error::TemplateInconsistent("CKA_KEY_TYPE does not fit the mechanism"));
            }
        }
    }
    let origin = Origin::Generated(mech.ck_type());
    let mut pub_a = build(ObjectClass::PublicKey, Some(kt), pub_t, origin);
    let mut priv_a = build(ObjectClass::PrivateKey, Some(kt), priv_t, origin);
    if let Some(p) = spec_to_ec_params(spec) {
        pub_a.set_bytes(AttrType::EcParams, p.clone());
        priv_a.set_bytes(AttrType::EcParams, p);
    }
    if let Some(s) = spec_parameter_set(spec) {
        pub_a.set_ulong(AttrType::ParameterSet, s);
        priv_a.set_ulong(AttrType::ParameterSet, s);
    }
    if let KeySpec::Rsa { bits } = spec {
        pub_a.set_ulong(AttrType::ModulusBits, bits as u64);
    }
    Ok((pub_a, priv_a, spec))
}

/// What `C_CreateObject` was asked to make.
#[derive(Debug)]
pub enum CreateKind {
    /// A data object or certificate: no key material.
    Plain,
    /// A secret key whose CKA_VALUE is in the template.
    SecretKey(KeySpec),
    /// A public key (values are in the template).
    PublicKey,
    /// A private key (components are in the template).
    PrivateKey,
}

/// Validates a `C_CreateObject` template (the object's CKA_VALUE and key components stay in the
/// template for the caller to turn into material).
pub fn object_for_create(t: &Template) -> Result<(Attributes, CreateKind)> {
    crate::limits::check_template(t)?;
    let class =
        find_ulong(t, AttrType::Class).ok_or(Error::TemplateIncomplete(AttrType::Class)).and_then(
            |c| ObjectClass::from_raw(c).ok_or(Error::AttributeValueInvalid(AttrType::Class)),
        )?;
    check_allowed(class, t, true)?;
    let kt = match class {
        ObjectClass::Data | ObjectClass::Certificate => None,
        _ => Some(
            find_ulong(t, AttrType::KeyType)
                .ok_or(Error::TemplateIncomplete(AttrType::KeyType))
                .and_then(|k| {
                    KeyType::from_raw(k).ok_or(Error::AttributeValueInvalid(AttrType::KeyType))
                })?,
        ),
    };
    let kind = match class {
        ObjectClass::Data => CreateKind::Plain,
        ObjectClass::Certificate => {
            if find_ulong(t, AttrType::CertificateType).is_none() {
                return Err(Error::TemplateIncomplete(AttrType::CertificateType));
            }
            if find_bytes(t, AttrType::Value).is_none() {
                return Err(Error::TemplateIncomplete(AttrType::Value));
            }
            CreateKind::Plain
        }
        ObjectClass::SecretKey => {
            let v =
                find_bytes(t, AttrType::Value).ok_or(Error::TemplateIncomplete(AttrType::Value))?;
            let spec = match kt {
                Some(KeyType::Aes) if matches!(v.len(), 16 | 24 | 32) => {
                    KeySpec::Aes { bytes: v.len() }
                }
                Some(KeyType::Aes) => return Err(Error::AttributeValueInvalid(AttrType::Value)),
                Some(KeyType::GenericSecret | KeyType::Hkdf) if !v.is_empty() && v.len() <= 512 => {
                    KeySpec::GenericSecret { bytes: v.len() }
                }
                Some(KeyType::GenericSecret | KeyType::Hkdf) => {
                    return Err(Error::AttributeValueInvalid(AttrType::Value))
                }
                _ => return Err(Error::TemplateInconsistent("key type is not a secret key type")),
            };
            if let Some(l) = find_ulong(t, AttrType::ValueLen) {
                if l as usize != v.len() {
                    return Err(Error::TemplateInconsistent(
                        "CKA_VALUE_LEN differs from CKA_VALUE",
                    ));
                }
            }
            CreateKind::SecretKey(spec)
        }
        ObjectClass::PublicKey => CreateKind::PublicKey,
        ObjectClass::PrivateKey => CreateKind::PrivateKey,
    };
    let mut a = build(class, kt, t, Origin::Imported);
    if let CreateKind::SecretKey(spec) = &kind {
        a.set_ulong(AttrType::ValueLen, spec_value_len(*spec));
    }
    Ok((a, kind))
}

/// Builds the attributes of a key made by unwrap or derive from the caller's template.
pub fn secret_key_for_unwrap_or_derive(
    t: &Template,
    spec: KeySpec,
    origin: Origin,
) -> Result<Attributes> {
    check_allowed(ObjectClass::SecretKey, t, false)?;
    let kt = match spec {
        KeySpec::Aes { .. } => KeyType::Aes,
        KeySpec::GenericSecret { .. } => {
            match find_ulong(t, AttrType::KeyType).map(KeyType::from_raw) {
                Some(Some(KeyType::Hkdf)) => KeyType::Hkdf,
                _ => KeyType::GenericSecret,
            }
        }
        _ => return Err(Error::TemplateInconsistent("not a secret key type")),
    };
    if let Some(k) = find_ulong(t, AttrType::KeyType) {
        if KeyType::from_raw(k) != Some(kt) {
            return Err(Error::TemplateInconsistent("CKA_KEY_TYPE does not fit the key"));
        }
    }
    let mut a = build(ObjectClass::SecretKey, Some(kt), t, origin);
    a.set_ulong(AttrType::ValueLen, spec_value_len(spec));
    Ok(a)
}

/// Attributes that can never change after creation (`C_SetAttributeValue` gives
/// `AttributeReadOnly`).
const IMMUTABLE: &[AttrType] = &[
    AttrType::Class,
    AttrType::KeyType,
    AttrType::Token,
    AttrType::Private,
    AttrType::Modifiable,
    AttrType::Local,
    AttrType::AlwaysSensitive,
    AttrType::NeverExtractable,
    AttrType::KeyGenMechanism,
    AttrType::UniqueId,
    AttrType::Value,
    AttrType::ValueLen,
    AttrType::Modulus,
    AttrType::ModulusBits,
    AttrType::PublicExponent,
    AttrType::EcParams,
    AttrType::EcPoint,
    AttrType::ParameterSet,
    AttrType::PublicKeyInfo,
    AttrType::AlwaysAuthenticate,
    AttrType::CertificateType,
    AttrType::CertificateCategory,
    AttrType::Trusted,
    AttrType::CheckValue,
    // The lifecycle changes only through its own audited transitions.
    AttrType::BulwarkState,
    AttrType::BulwarkActivationDate,
    AttrType::BulwarkProtectStopDate,
    AttrType::BulwarkDeactivationDate,
    AttrType::BulwarkCompromiseDate,
    AttrType::BulwarkDestroyDate,
    // So does the usage policy (token/usepolicy.rs).
    AttrType::BulwarkUsePrincipals,
    AttrType::BulwarkMaxUses,
    AttrType::BulwarkUseCount,
    AttrType::BulwarkRateUses,
    AttrType::BulwarkRatePeriod,
    AttrType::BulwarkUseQuorum,
    AttrType::BulwarkKeyVersion,
    AttrType::BulwarkRotationPeriod,
    AttrType::BulwarkKeyFamily,
    AttrType::BulwarkMinDecryptVersion,
    AttrType::BulwarkRotatedAt,
    AttrType::BulwarkDestroyScheduled,
    AttrType::BulwarkArchived,
];

/// Applies `C_SetAttributeValue` (or, with `copy = true`, the template of `C_CopyObject`) to
/// `current`, enforcing the one-way rules: CKA_SENSITIVE only false→true, CKA_EXTRACTABLE only
/// true→false, CKA_WRAP_WITH_TRUSTED only false→true, CKA_COPYABLE only true→false. Returns the
/// new set; `current` is untouched on error.
pub fn apply_changes(current: &Attributes, changes: &Template, copy: bool) -> Result<Attributes> {
    crate::limits::check_template(changes)?;
    let class = current.class().ok_or(Error::Internal("object without class"))?;
    if !copy && !current.bool_or(AttrType::Modifiable, true) {
        return Err(Error::ActionProhibited("object is not modifiable"));
    }
    if copy && !current.bool_or(AttrType::Copyable, true) {
        return Err(Error::ActionProhibited("object is not copyable"));
    }
    let allowed = allowed_for(class);
    let mut next = current.clone();
    for (t, v) in changes {
        if !allowed.contains(t) {
            return Err(Error::AttributeTypeInvalid(t.to_raw()));
        }
        let copy_settable =
            copy && matches!(t, AttrType::Token | AttrType::Private | AttrType::Modifiable);
        if IMMUTABLE.contains(t) && !copy_settable {
            if current.get(*t) == Some(v) {
                continue; // setting a read-only attribute to its own value is harmless
            }
            return Err(Error::AttributeReadOnly(*t));
        }
        let now = current.bool(*t);
        let want = match v {
            AttrValue::Bool(b) => Some(*b),
            _ => None,
        };
        let one_way_ok = match t {
            AttrType::Sensitive | AttrType::WrapWithTrusted => {
                !(now == Some(true) && want == Some(false))
            }
            AttrType::Extractable | AttrType::Copyable => {
                !(now == Some(false) && want == Some(true))
            }
            _ => true,
        };
        if !one_way_ok {
            return Err(Error::AttributeReadOnly(*t));
        }
        next.set(*t, v.clone())?;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(t: AttrType, v: bool) -> (AttrType, AttrValue) {
        (t, AttrValue::Bool(v))
    }
    fn u(t: AttrType, v: u64) -> (AttrType, AttrValue) {
        (t, AttrValue::Ulong(v))
    }

    #[test]
    fn aes_generate_defaults_are_secure() {
        let (a, spec) = secret_key_for_generate(
            KeyGenMechanism::AesKeyGen,
            &[u(AttrType::ValueLen, 32), b(AttrType::Token, true)],
        )
        .unwrap();
        assert_eq!(spec, KeySpec::Aes { bytes: 32 });
        assert_eq!(a.bool(AttrType::Sensitive), Some(true));
        assert_eq!(a.bool(AttrType::Extractable), Some(false));
        assert_eq!(a.bool(AttrType::Private), Some(true));
        assert_eq!(a.bool(AttrType::Local), Some(true));
        assert_eq!(a.bool(AttrType::AlwaysSensitive), Some(true));
        assert_eq!(a.bool(AttrType::NeverExtractable), Some(true));
        assert_eq!(a.bool(AttrType::Encrypt), Some(true));
        assert_eq!(a.bool(AttrType::Sign), Some(false), "AES keys do not sign by default");
    }

    #[test]
    fn template_errors_are_precise() {
        let g = |t: &Template| secret_key_for_generate(KeyGenMechanism::AesKeyGen, t).map(|_| ());
        assert!(matches!(g(&[]), Err(Error::TemplateIncomplete(AttrType::ValueLen))));
        assert!(matches!(
            g(&[u(AttrType::ValueLen, 17)]),
            Err(Error::AttributeValueInvalid(AttrType::ValueLen))
        ));
        assert!(matches!(
            g(&[u(AttrType::ValueLen, 16), b(AttrType::Local, true)]),
            Err(Error::AttributeReadOnly(AttrType::Local))
        ));
        assert!(matches!(
            g(&[u(AttrType::ValueLen, 16), u(AttrType::Class, 3)]),
            Err(Error::TemplateInconsistent(_))
        ));
        assert!(matches!(
            g(&[u(AttrType::ValueLen, 16), u(AttrType::ModulusBits, 2048)]),
            Err(Error::AttributeTypeInvalid(_))
        ));
        assert!(matches!(
            g(&[u(AttrType::ValueLen, 16), (AttrType::Value, AttrValue::Bytes(vec![0; 16]))]),
            Err(Error::TemplateInconsistent(_))
        ));
        assert!(matches!(parse_raw(&[(0xdead_beef, &[])]), Err(Error::AttributeTypeInvalid(_))));
        assert!(matches!(
            parse_raw(&[(cryptoki_sys::CKA_SIGN, &[1]), (cryptoki_sys::CKA_SIGN, &[0])]),
            Err(Error::TemplateInconsistent(_))
        ));
    }

    #[test]
    fn ec_pair_needs_params() {
        let r = key_pair_for_generate(KeyGenMechanism::EcKeyPairGen, &[], &[]);
        assert!(matches!(r, Err(Error::TemplateIncomplete(AttrType::EcParams))));
        let p = (AttrType::EcParams, AttrValue::Bytes(Curve::Secp256k1.oid_der().to_vec()));
        let (pubk, privk, spec) =
            key_pair_for_generate(KeyGenMechanism::EcKeyPairGen, &[p], &[b(AttrType::Sign, true)])
                .unwrap();
        assert_eq!(spec, KeySpec::Ec(Curve::Secp256k1));
        assert_eq!(pubk.bool(AttrType::Verify), Some(true));
        assert_eq!(privk.bool(AttrType::Sign), Some(true));
        assert_eq!(privk.bool(AttrType::Derive), Some(false), "explicit usage turns defaults off");
        assert_eq!(pubk.bool(AttrType::Private), Some(false));
    }

    #[test]
    fn one_way_attributes() {
        let (a, _) =
            secret_key_for_generate(KeyGenMechanism::AesKeyGen, &[u(AttrType::ValueLen, 16)])
                .unwrap();
        assert!(matches!(
            apply_changes(&a, &[b(AttrType::Sensitive, false)], false),
            Err(Error::AttributeReadOnly(AttrType::Sensitive))
        ));
        assert!(matches!(
            apply_changes(&a, &[b(AttrType::Extractable, true)], false),
            Err(Error::AttributeReadOnly(AttrType::Extractable))
        ));
        assert!(matches!(
            apply_changes(&a, &[u(AttrType::KeyType, 0)], false),
            Err(Error::AttributeReadOnly(AttrType::KeyType))
        ));
        let n = apply_changes(&a, &[(AttrType::Label, AttrValue::Bytes(b"x".to_vec()))], false)
            .unwrap();
        assert_eq!(n.label(), "x");
        let locked = apply_changes(&a, &[b(AttrType::Modifiable, false)], true).unwrap();
        assert!(matches!(
            apply_changes(&locked, &[b(AttrType::Sign, true)], false),
            Err(Error::ActionProhibited(_))
        ));
    }
}
