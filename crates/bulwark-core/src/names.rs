//! The user-facing names of key types and signature mechanisms, shared by every front door that
//! takes names from people (the CLI, the daemon's API), so that `--type ec-p256` or
//! `--mechanism rsa-pss-sha256` mean the same thing everywhere, and the signature defaults (the
//! ones stock OpenSSL verifies) are decided in one place.

use crate::attr::{AttrType, AttrValue, Attributes};
use crate::crypto::{Curve, KeySpec};
use crate::error::{Error, Result};
use crate::mechanism::{DigestAlg, KeyGenMechanism, Mechanism};
use crate::token::{SessionId, Token};

/// Every key type name `key_spec` accepts, in the order help texts list them.
pub const KEY_TYPE_NAMES: &[&str] = &[
    "aes-128",
    "aes-192",
    "aes-256",
    "hmac-sha256",
    "hmac-sha384",
    "hmac-sha512",
    "rsa-2048",
    "rsa-3072",
    "rsa-4096",
    "ec-p256",
    "ec-p384",
    "ec-p521",
    "ec-secp256k1",
    "ed25519",
    "x25519",
    "ml-dsa-44",
    "ml-dsa-65",
    "ml-dsa-87",
    "ml-kem-512",
    "ml-kem-768",
    "ml-kem-1024",
];

/// The key spec for a key type name (`aes-256`, `hmac-sha256`, `rsa-3072`, `ec-secp256k1`,
/// `ml-dsa-65`, ...); `None` for an unknown name or a size that cannot be generated.
pub fn key_spec(name: &str) -> Option<KeySpec> {
    let spec = match name {
        "hmac-sha256" => KeySpec::GenericSecret { bytes: 32 },
        "hmac-sha384" => KeySpec::GenericSecret { bytes: 48 },
        "hmac-sha512" => KeySpec::GenericSecret { bytes: 64 },
        other => KeySpec::from_name(other)?,
    };
    let generable = match spec {
        KeySpec::Aes { bytes } => matches!(bytes, 16 | 24 | 32),
        KeySpec::Rsa { bits } => matches!(bits, 2048 | 3072 | 4096),
        _ => true,
    };
    generable.then_some(spec)
}

/// The default signature mechanism for a key, chosen so that stock OpenSSL verifies the result:
/// RSA → PKCS#1 v1.5 with SHA-256; EC → ECDSA with SHA-256/384/512 by curve (P-256 and
/// secp256k1: SHA-256); Ed25519 → pure Ed25519; ML-DSA → pure ML-DSA; generic secret →
/// HMAC-SHA-256/384/512 by key length. `None` for keys that cannot sign.
pub fn default_signature(spec: KeySpec) -> Option<Mechanism> {
    Some(match spec {
        KeySpec::Rsa { .. } => Mechanism::Sha256RsaPkcs,
        KeySpec::Ec(Curve::P384) => Mechanism::EcdsaSha384,
        KeySpec::Ec(Curve::P521) => Mechanism::EcdsaSha512,
        KeySpec::Ec(_) => Mechanism::EcdsaSha256,
        KeySpec::Ed25519 => Mechanism::EdDsa(None),
        KeySpec::MlDsa(_) => Mechanism::MlDsa { context: Vec::new() },
        KeySpec::GenericSecret { bytes } if bytes >= 64 => Mechanism::Hmac(DigestAlg::Sha512),
        KeySpec::GenericSecret { bytes } if bytes >= 48 => Mechanism::Hmac(DigestAlg::Sha384),
        KeySpec::GenericSecret { .. } => Mechanism::Hmac(DigestAlg::Sha256),
        _ => return None,
    })
}

/// A signature mechanism by name: `rsa-pkcs1-sha256|384|512`, `rsa-pss-sha256|384|512` (salt =
/// hash length, MGF1 with the same hash), `ecdsa-sha256|384|512`, `ed25519` (or `eddsa`),
/// `ml-dsa`, `hmac-sha256|384|512`.
pub fn signature_mechanism(name: &str) -> Option<Mechanism> {
    use DigestAlg::{Sha256, Sha384, Sha512};
    Some(match name {
        "rsa-pkcs1-sha256" => Mechanism::Sha256RsaPkcs,
        "rsa-pkcs1-sha384" => Mechanism::Sha384RsaPkcs,
        "rsa-pkcs1-sha512" => Mechanism::Sha512RsaPkcs,
        "rsa-pss-sha256" => Mechanism::pss(Sha256, false),
        "rsa-pss-sha384" => Mechanism::pss(Sha384, false),
        "rsa-pss-sha512" => Mechanism::pss(Sha512, false),
        "ecdsa-sha256" => Mechanism::EcdsaSha256,
        "ecdsa-sha384" => Mechanism::EcdsaSha384,
        "ecdsa-sha512" => Mechanism::EcdsaSha512,
        "ed25519" | "eddsa" => Mechanism::EdDsa(None),
        "ml-dsa" => Mechanism::MlDsa { context: Vec::new() },
        "hmac-sha256" => Mechanism::Hmac(Sha256),
        "hmac-sha384" => Mechanism::Hmac(Sha384),
        "hmac-sha512" => Mechanism::Hmac(Sha512),
        _ => return None,
    })
}

/// A key-wrapping mechanism by name, for a wrapping key of type `wrapping`: `aes-kwp` (RFC 5649,
/// the default for AES), `aes-kw` (RFC 3394), `rsa-oaep-sha256` (MGF1-SHA-256, no label; the
/// default for RSA). An empty name picks the default. Returns the mechanism and its name.
pub fn wrap_mechanism(name: &str, wrapping: KeySpec) -> Option<(Mechanism, &'static str)> {
    let name = match (name, wrapping) {
        ("", KeySpec::Aes { .. }) => "aes-kwp",
        ("", KeySpec::Rsa { .. }) => "rsa-oaep-sha256",
        (n, _) => n,
    };
    Some(match name {
        "aes-kwp" => (Mechanism::AesKeyWrapPad, "aes-kwp"),
        "aes-kw" => (Mechanism::AesKeyWrap, "aes-kw"),
        "rsa-oaep-sha256" => (
            Mechanism::RsaOaep {
                hash: DigestAlg::Sha256,
                mgf_hash: DigestAlg::Sha256,
                label: Vec::new(),
            },
            "rsa-oaep-sha256",
        ),
        _ => return None,
    })
}

/// The names of the usage flags (CKA_SIGN, CKA_VERIFY, ...) an object has set, in a fixed order:
/// `sign`, `verify`, `encrypt`, `decrypt`, `wrap`, `unwrap`, `derive`, `encapsulate`,
/// `decapsulate`.
pub fn usage_names(attrs: &Attributes) -> Vec<&'static str> {
    [
        (AttrType::Sign, "sign"),
        (AttrType::Verify, "verify"),
        (AttrType::Encrypt, "encrypt"),
        (AttrType::Decrypt, "decrypt"),
        (AttrType::Wrap, "wrap"),
        (AttrType::Unwrap, "unwrap"),
        (AttrType::Derive, "derive"),
        (AttrType::Encapsulate, "encapsulate"),
        (AttrType::Decapsulate, "decapsulate"),
    ]
    .iter()
    .filter(|(a, _)| attrs.bool_or(*a, false))
    .map(|(_, n)| *n)
    .collect()
}

/// A key to generate under a label (the CLI's `key generate`, the daemon's GenerateKey).
#[derive(Clone, Debug)]
pub struct LabelledKey<'a> {
    /// Algorithm and size.
    pub spec: KeySpec,
    /// CKA_LABEL of the key (both halves of a pair); must not be taken.
    pub label: &'a str,
    /// CKA_ID (both halves of a pair); 16 random bytes when `None`.
    pub id: Option<Vec<u8>>,
    /// CKA_EXTRACTABLE of the secret or private key.
    pub extractable: bool,
    /// CKA_SENSITIVE of the secret or private key (false only for secret keys).
    pub sensitive: bool,
}

/// Generates a token key or key pair named by `k.label`: private and secret halves are
/// private objects, public halves public ones; usage flags follow the algorithm. Returns the
/// handles, secret or private key first.
///
/// # Errors
/// `Exists` when the label is taken; `TemplateInconsistent` for a non-sensitive private key;
/// any generation error.
pub fn generate_labelled<S: crate::store::Store>(
    t: &Token<S>,
    k: &LabelledKey<'_>,
    session: SessionId,
) -> Result<Vec<u64>> {
    generate_labelled_with(t, k, crate::token::LifecycleDates::default(), session)
}

/// [`generate_labelled`] with lifecycle dates, set in the same write that stores the key (a
/// key given an activation date is created in pre-activation; see [`crate::lifecycle`]).
///
/// # Errors
/// As [`generate_labelled`]; `TemplateInconsistent` when a stop date does not come after the
/// activation date.
pub fn generate_labelled_with<S: crate::store::Store>(
    t: &Token<S>,
    k: &LabelledKey<'_>,
    dates: crate::token::LifecycleDates,
    session: SessionId,
) -> Result<Vec<u64>> {
    if !t.find_by_label(k.label)?.is_empty() {
        return Err(Error::Exists(k.label.to_owned()));
    }
    if k.spec.is_asymmetric() && !k.sensitive {
        return Err(Error::TemplateInconsistent("only secret keys may be non-sensitive"));
    }
    let id = if let Some(id) = &k.id {
        id.clone()
    } else {
        let mut r = vec![0u8; 16];
        t.random(&mut r)?;
        r
    };
    let b = |t: AttrType, v: bool| (t, AttrValue::Bool(v));
    let ulong = |t: AttrType, v: u64| (t, AttrValue::Ulong(v));
    let common = vec![
        b(AttrType::Token, true),
        (AttrType::Label, AttrValue::Bytes(k.label.as_bytes().to_vec())),
        (AttrType::Id, AttrValue::Bytes(id)),
    ];
    let mut common = common;
    for (a, v) in [
        (AttrType::BulwarkActivationDate, dates.activation),
        (AttrType::BulwarkProtectStopDate, dates.protect_stop),
        (AttrType::BulwarkDeactivationDate, dates.deactivation),
    ] {
        if let Some(v) = v {
            common.push(ulong(a, v));
        }
    }
    let mut secret = common.clone();
    secret.push(b(AttrType::Private, true));
    secret.push(b(AttrType::Extractable, k.extractable || !k.sensitive));
    secret.push(b(AttrType::Sensitive, k.sensitive));
    let mut public = common;
    public.push(b(AttrType::Private, false));
    let (mech, extra) = match k.spec {
        KeySpec::Aes { bytes } => {
            (KeyGenMechanism::AesKeyGen, Some(ulong(AttrType::ValueLen, bytes as u64)))
        }
        KeySpec::GenericSecret { bytes } => {
            (KeyGenMechanism::GenericSecretKeyGen, Some(ulong(AttrType::ValueLen, bytes as u64)))
        }
        KeySpec::Rsa { bits } => {
            (KeyGenMechanism::RsaPkcsKeyPairGen, Some(ulong(AttrType::ModulusBits, bits as u64)))
        }
        KeySpec::Ec(c) => (
            KeyGenMechanism::EcKeyPairGen,
            Some((AttrType::EcParams, AttrValue::Bytes(c.oid_der().to_vec()))),
        ),
        KeySpec::Ed25519 => (KeyGenMechanism::EcEdwardsKeyPairGen, None),
        KeySpec::X25519 => (KeyGenMechanism::EcMontgomeryKeyPairGen, None),
        KeySpec::MlDsa(p) => (
            KeyGenMechanism::MlDsaKeyPairGen,
            Some(ulong(AttrType::ParameterSet, p.ck_parameter_set())),
        ),
        KeySpec::MlKem(p) => (
            KeyGenMechanism::MlKemKeyPairGen,
            Some(ulong(AttrType::ParameterSet, p.ck_parameter_set())),
        ),
    };
    if k.spec.is_asymmetric() {
        public.extend(extra);
        let (ph, sh) = t.generate_key_pair(mech, &public, &secret, session)?;
        Ok(vec![sh, ph])
    } else {
        secret.extend(extra);
        Ok(vec![t.generate_key(mech, &secret, session)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_parses_and_round_trips_where_named_alike() {
        for n in KEY_TYPE_NAMES {
            let s = key_spec(n).unwrap_or_else(|| panic!("{n}"));
            if !n.starts_with("hmac") {
                assert_eq!(s.name(), *n);
            }
        }
        assert_eq!(key_spec("rsa-1024"), None);
        assert_eq!(key_spec("aes-512"), None);
        assert_eq!(key_spec("dsa-1024"), None);
    }

    #[test]
    fn defaults_and_names() {
        assert_eq!(default_signature(KeySpec::Ec(Curve::P521)), Some(Mechanism::EcdsaSha512));
        assert_eq!(default_signature(KeySpec::Aes { bytes: 32 }), None);
        assert_eq!(signature_mechanism("ecdsa-sha384"), Some(Mechanism::EcdsaSha384));
        assert_eq!(signature_mechanism("md5"), None);
    }
}
