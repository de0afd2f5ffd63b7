//! Key types: what a key is (`KeySpec`), the secret half as we store it (`KeyMaterial`) and the
//! public half with its encodings (`PublicKey`).
//!
//! `KeyMaterial` is the only type here that holds secret bytes; it zeroizes on drop, is not
//! `Clone` and never prints its bytes. Public keys are validated by aws-lc-rs when built from
//! outside bytes, so a `PublicKey` value always holds a usable key.

use std::fmt;

use aws_lc_rs::{kem, rsa, signature};
use base64::Engine as _;

use super::der::{self, oid};
use crate::error::{Error, Result};
use crate::secret::SecretBytes;

/// A named elliptic curve for ECDSA / ECDH.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384.
    P384,
    /// NIST P-521.
    P521,
    /// secp256k1 (ECDSA only; signatures are low-S normalized).
    Secp256k1,
}

const OID_DER_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_DER_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_DER_P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
const OID_DER_SECP256K1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];

impl Curve {
    /// All curves.
    pub const ALL: [Curve; 4] = [Curve::P256, Curve::P384, Curve::P521, Curve::Secp256k1];

    /// DER of the namedCurve OID (PKCS#11 `CKA_EC_PARAMS`).
    pub fn oid_der(&self) -> &'static [u8] {
        match self {
            Curve::P256 => OID_DER_P256,
            Curve::P384 => OID_DER_P384,
            Curve::P521 => OID_DER_P521,
            Curve::Secp256k1 => OID_DER_SECP256K1,
        }
    }

    /// The curve named by a DER OID (`CKA_EC_PARAMS`).
    pub fn from_oid_der(der: &[u8]) -> Option<Curve> {
        Curve::ALL.into_iter().find(|c| c.oid_der() == der)
    }

    /// Size of a field element (and of `r`, `s`) in bytes.
    pub fn field_bytes(&self) -> usize {
        match self {
            Curve::P256 | Curve::Secp256k1 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// Size of the group order in bits (PKCS#11 key size for EC keys).
    pub fn bits(&self) -> usize {
        match self {
            Curve::P256 | Curve::Secp256k1 => 256,
            Curve::P384 => 384,
            Curve::P521 => 521,
        }
    }

    /// Short name: "p256", "p384", "p521", "secp256k1".
    pub fn name(&self) -> &'static str {
        match self {
            Curve::P256 => "p256",
            Curve::P384 => "p384",
            Curve::P521 => "p521",
            Curve::Secp256k1 => "secp256k1",
        }
    }
}

/// ML-DSA parameter set (FIPS 204).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MlDsaParam {
    /// ML-DSA-44.
    MlDsa44,
    /// ML-DSA-65.
    MlDsa65,
    /// ML-DSA-87.
    MlDsa87,
}

impl MlDsaParam {
    /// `CKP_ML_DSA_44` = 1, `_65` = 2, `_87` = 3.
    pub fn ck_parameter_set(&self) -> u64 {
        match self {
            MlDsaParam::MlDsa44 => 1,
            MlDsaParam::MlDsa65 => 2,
            MlDsaParam::MlDsa87 => 3,
        }
    }

    /// The set for a `CKP_ML_DSA_*` value.
    pub fn from_ck_parameter_set(v: u64) -> Option<Self> {
        [Self::MlDsa44, Self::MlDsa65, Self::MlDsa87]
            .into_iter()
            .find(|p| p.ck_parameter_set() == v)
    }

    pub(crate) fn oid(self) -> &'static [u8] {
        match self {
            MlDsaParam::MlDsa44 => oid::ML_DSA_44,
            MlDsaParam::MlDsa65 => oid::ML_DSA_65,
            MlDsaParam::MlDsa87 => oid::ML_DSA_87,
        }
    }

    pub(crate) fn signing_alg(self) -> &'static signature::PqdsaSigningAlgorithm {
        match self {
            MlDsaParam::MlDsa44 => &signature::ML_DSA_44_SIGNING,
            MlDsaParam::MlDsa65 => &signature::ML_DSA_65_SIGNING,
            MlDsaParam::MlDsa87 => &signature::ML_DSA_87_SIGNING,
        }
    }

    pub(crate) fn verification_alg(self) -> &'static signature::PqdsaVerificationAlgorithm {
        match self {
            MlDsaParam::MlDsa44 => &signature::ML_DSA_44,
            MlDsaParam::MlDsa65 => &signature::ML_DSA_65,
            MlDsaParam::MlDsa87 => &signature::ML_DSA_87,
        }
    }
}

/// ML-KEM parameter set (FIPS 203).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MlKemParam {
    /// ML-KEM-512.
    MlKem512,
    /// ML-KEM-768.
    MlKem768,
    /// ML-KEM-1024.
    MlKem1024,
}

impl MlKemParam {
    /// `CKP_ML_KEM_512` = 1, `_768` = 2, `_1024` = 3.
    pub fn ck_parameter_set(&self) -> u64 {
        match self {
            MlKemParam::MlKem512 => 1,
            MlKemParam::MlKem768 => 2,
            MlKemParam::MlKem1024 => 3,
        }
    }

    /// The set for a `CKP_ML_KEM_*` value.
    pub fn from_ck_parameter_set(v: u64) -> Option<Self> {
        [Self::MlKem512, Self::MlKem768, Self::MlKem1024]
            .into_iter()
            .find(|p| p.ck_parameter_set() == v)
    }

    pub(crate) fn oid(self) -> &'static [u8] {
        match self {
            MlKemParam::MlKem512 => oid::ML_KEM_512,
            MlKemParam::MlKem768 => oid::ML_KEM_768,
            MlKemParam::MlKem1024 => oid::ML_KEM_1024,
        }
    }

    pub(crate) fn alg(self) -> &'static kem::Algorithm {
        match self {
            MlKemParam::MlKem512 => &kem::ML_KEM_512,
            MlKemParam::MlKem768 => &kem::ML_KEM_768,
            MlKemParam::MlKem1024 => &kem::ML_KEM_1024,
        }
    }

    /// Ciphertext length in bytes (FIPS 203 Table 3).
    pub fn ciphertext_len(self) -> usize {
        match self {
            MlKemParam::MlKem512 => 768,
            MlKemParam::MlKem768 => 1088,
            MlKemParam::MlKem1024 => 1568,
        }
    }

    /// The module rank k (2, 3, 4).
    pub(crate) fn k(self) -> usize {
        match self {
            MlKemParam::MlKem512 => 2,
            MlKemParam::MlKem768 => 3,
            MlKemParam::MlKem1024 => 4,
        }
    }

    /// The encapsulation key inside a FIPS 203 decapsulation key:
    /// `dk = dk_PKE (384k) || ek (384k + 32) || H(ek) (32) || z (32)`.
    pub(crate) fn ek_from_dk(self, dk: &[u8]) -> Option<&[u8]> {
        let k = self.k();
        if dk.len() != 768 * k + 96 {
            return None;
        }
        dk.get(384 * k..768 * k + 32)
    }
}

/// What a key is: algorithm and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// AES, 16, 24 or 32 bytes.
    Aes {
        /// Key length in bytes.
        bytes: usize,
    },
    /// A generic secret (HMAC / HKDF key), 1..=512 bytes.
    GenericSecret {
        /// Key length in bytes.
        bytes: usize,
    },
    /// RSA: generation 2048/3072/4096, import 2048..=8192 bits.
    Rsa {
        /// Modulus size in bits.
        bits: usize,
    },
    /// ECDSA / ECDH key on a named curve.
    Ec(Curve),
    /// Ed25519 signing key.
    Ed25519,
    /// X25519 key-agreement key.
    X25519,
    /// ML-DSA signing key.
    MlDsa(MlDsaParam),
    /// ML-KEM decapsulation key.
    MlKem(MlKemParam),
}

/// Largest generic secret accepted, in bytes.
pub const GENERIC_SECRET_MAX: usize = 512;

impl KeySpec {
    /// True for key pairs (everything but AES and generic secrets).
    pub fn is_asymmetric(&self) -> bool {
        !matches!(self, KeySpec::Aes { .. } | KeySpec::GenericSecret { .. })
    }

    /// A short name: "aes-256", "generic-256", "rsa-2048", "ec-p256", "ec-secp256k1", "ed25519",
    /// "x25519", "ml-dsa-65", "ml-kem-768" (secret sizes in bits).
    pub fn name(&self) -> String {
        match self {
            KeySpec::Aes { bytes } => format!("aes-{}", bytes * 8),
            KeySpec::GenericSecret { bytes } => format!("generic-{}", bytes * 8),
            KeySpec::Rsa { bits } => format!("rsa-{bits}"),
            KeySpec::Ec(c) => format!("ec-{}", c.name()),
            KeySpec::Ed25519 => "ed25519".to_owned(),
            KeySpec::X25519 => "x25519".to_owned(),
            KeySpec::MlDsa(p) => match p {
                MlDsaParam::MlDsa44 => "ml-dsa-44",
                MlDsaParam::MlDsa65 => "ml-dsa-65",
                MlDsaParam::MlDsa87 => "ml-dsa-87",
            }
            .to_owned(),
            KeySpec::MlKem(p) => match p {
                MlKemParam::MlKem512 => "ml-kem-512",
                MlKemParam::MlKem768 => "ml-kem-768",
                MlKemParam::MlKem1024 => "ml-kem-1024",
            }
            .to_owned(),
        }
    }

    /// Parses a name produced by [`KeySpec::name`] (plus "hmac" = generic-256).
    pub fn from_name(name: &str) -> Option<KeySpec> {
        let num = |s: &str| s.parse::<usize>().ok();
        let spec = match name {
            "hmac" => KeySpec::GenericSecret { bytes: 32 },
            "ed25519" => KeySpec::Ed25519,
            "x25519" => KeySpec::X25519,
            "ml-dsa-44" => KeySpec::MlDsa(MlDsaParam::MlDsa44),
            "ml-dsa-65" => KeySpec::MlDsa(MlDsaParam::MlDsa65),
            "ml-dsa-87" => KeySpec::MlDsa(MlDsaParam::MlDsa87),
            "ml-kem-512" => KeySpec::MlKem(MlKemParam::MlKem512),
            "ml-kem-768" => KeySpec::MlKem(MlKemParam::MlKem768),
            "ml-kem-1024" => KeySpec::MlKem(MlKemParam::MlKem1024),
            _ => {
                if let Some(c) = name.strip_prefix("ec-") {
                    KeySpec::Ec(Curve::ALL.into_iter().find(|x| x.name() == c)?)
                } else if let Some(b) = name.strip_prefix("aes-") {
                    let bits = num(b)?;
                    (bits % 8 == 0).then_some(KeySpec::Aes { bytes: bits / 8 })?
                } else if let Some(b) = name.strip_prefix("generic-") {
                    let bits = num(b)?;
                    (bits % 8 == 0).then_some(KeySpec::GenericSecret { bytes: bits / 8 })?
                } else {
                    KeySpec::Rsa { bits: num(name.strip_prefix("rsa-")?)? }
                }
            }
        };
        spec.check_import().ok().map(|()| spec)
    }

    /// Checks sizes acceptable for an imported (or unwrapped) key.
    pub(crate) fn check_import(&self) -> Result<()> {
        let ok = match *self {
            KeySpec::Aes { bytes } => matches!(bytes, 16 | 24 | 32),
            KeySpec::GenericSecret { bytes } => (1..=GENERIC_SECRET_MAX).contains(&bytes),
            KeySpec::Rsa { bits } => (2048..=8192).contains(&bits),
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::KeySizeRange)
        }
    }
}

/// Private or secret key bytes in the form we store (encrypted by the caller): AES/generic raw
/// bytes; RSA, EC, Ed25519, X25519, ML-DSA PKCS#8 v1 DER; ML-KEM the FIPS 203 decapsulation key.
pub struct KeyMaterial {
    spec: KeySpec,
    secret: SecretBytes,
}

impl KeyMaterial {
    /// Pairs stored bytes with their spec. Validation happens at [`super::Provider::load`].
    pub fn new(spec: KeySpec, secret: SecretBytes) -> Self {
        Self { spec, secret }
    }

    /// What this key is.
    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// The stored bytes. Every call site handles a secret.
    pub fn expose_secret(&self) -> &[u8] {
        self.secret.expose_secret()
    }

    /// Length of the stored bytes (not secret).
    pub fn len(&self) -> usize {
        self.secret.len()
    }

    /// True if empty (never for a valid key).
    pub fn is_empty(&self) -> bool {
        self.secret.is_empty()
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyMaterial({}, [REDACTED; {} bytes])", self.spec.name(), self.secret.len())
    }
}

/// The public half of a key pair, with its standard encodings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    spec: KeySpec,
    spki: Vec<u8>,
    raw: Vec<u8>,
    /// RSA public exponent (empty for other types).
    exponent: Vec<u8>,
}

impl PublicKey {
    /// What this key is.
    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// X.509 `SubjectPublicKeyInfo` DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// PEM "PUBLIC KEY" (SPKI), 64-column base64.
    pub fn to_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.spki);
        let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str("-----END PUBLIC KEY-----\n");
        out
    }

    /// EC: uncompressed point; Ed25519/X25519: 32 bytes; RSA: modulus; ML-DSA/ML-KEM: raw key.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// RSA modulus, big-endian without leading zeros.
    pub fn rsa_modulus(&self) -> Option<&[u8]> {
        matches!(self.spec, KeySpec::Rsa { .. }).then_some(self.raw.as_slice())
    }

    /// RSA public exponent, big-endian without leading zeros.
    pub fn rsa_public_exponent(&self) -> Option<&[u8]> {
        matches!(self.spec, KeySpec::Rsa { .. }).then_some(self.exponent.as_slice())
    }

    /// PKCS#11 `CKA_EC_POINT`: a DER OCTET STRING wrapping the raw point (EC, Ed25519, X25519).
    pub fn ec_point_der(&self) -> Option<Vec<u8>> {
        matches!(self.spec, KeySpec::Ec(_) | KeySpec::Ed25519 | KeySpec::X25519)
            .then(|| der::tlv(der::OCTET_STRING, &self.raw))
    }

    /// Parses any supported `SubjectPublicKeyInfo`.
    pub fn from_spki_der(spki: &[u8]) -> Result<PublicKey> {
        let (alg, params, key) = der::parse_spki(spki).ok_or(Error::KeyInvalid)?;
        let spec = match alg {
            oid::RSA_ENCRYPTION => {
                if params.is_some_and(|p| p != [der::NULL, 0]) {
                    return Err(Error::KeyInvalid);
                }
                let mut r = der::Reader::new(
                    der::read_single(key, der::SEQUENCE).ok_or(Error::KeyInvalid)?,
                );
                let n = der::read_uint(&mut r).ok_or(Error::KeyInvalid)?;
                let e = der::read_uint(&mut r).ok_or(Error::KeyInvalid)?;
                if !r.is_empty() {
                    return Err(Error::KeyInvalid);
                }
                return PublicKey::from_rsa(n, e);
            }
            oid::EC_PUBLIC_KEY => {
                KeySpec::Ec(params.and_then(Curve::from_oid_der).ok_or(Error::KeyInvalid)?)
            }
            oid::ED25519 => KeySpec::Ed25519,
            oid::X25519 => KeySpec::X25519,
            oid::ML_DSA_44 => KeySpec::MlDsa(MlDsaParam::MlDsa44),
            oid::ML_DSA_65 => KeySpec::MlDsa(MlDsaParam::MlDsa65),
            oid::ML_DSA_87 => KeySpec::MlDsa(MlDsaParam::MlDsa87),
            oid::ML_KEM_512 => KeySpec::MlKem(MlKemParam::MlKem512),
            oid::ML_KEM_768 => KeySpec::MlKem(MlKemParam::MlKem768),
            oid::ML_KEM_1024 => KeySpec::MlKem(MlKemParam::MlKem1024),
            _ => return Err(Error::NotSupported("public key algorithm")),
        };
        if !matches!(spec, KeySpec::Ec(_)) && params.is_some() {
            return Err(Error::KeyInvalid); // RFC 8410 / FIPS 203-204 SPKIs carry no parameters
        }
        PublicKey::from_parts(spec, key)
    }

    /// Builds a public key from raw public bytes (for EC, the uncompressed point or
    /// `CKA_EC_POINT`'s DER OCTET STRING). For RSA use [`PublicKey::from_rsa`].
    pub fn from_parts(spec: KeySpec, raw: &[u8]) -> Result<PublicKey> {
        let raw = match spec {
            KeySpec::Ec(curve) => {
                let point_len = 1 + 2 * curve.field_bytes();
                let point = if raw.len() == point_len {
                    raw
                } else {
                    der::read_single(raw, der::OCTET_STRING).ok_or(Error::KeyInvalid)?
                };
                if point.len() != point_len || point[0] != 0x04 {
                    return Err(Error::KeyInvalid);
                }
                // aws-lc-rs checks that the point is on the curve.
                signature::ParsedPublicKey::new(super::sign::ecdsa_verify_alg(curve), point)?;
                point
            }
            KeySpec::Ed25519 | KeySpec::X25519 => {
                let raw = if raw.len() == 34 {
                    der::read_single(raw, der::OCTET_STRING).ok_or(Error::KeyInvalid)?
                } else {
                    raw
                };
                if raw.len() != 32 {
                    return Err(Error::KeyInvalid);
                }
                if spec == KeySpec::Ed25519 {
                    signature::ParsedPublicKey::new(&signature::ED25519, raw)?;
                }
                raw
            }
            KeySpec::MlDsa(p) => {
                signature::ParsedPublicKey::new(p.verification_alg(), raw)?;
                raw
            }
            KeySpec::MlKem(p) => {
                kem::EncapsulationKey::new(p.alg(), raw)?;
                raw
            }
            KeySpec::Rsa { .. } | KeySpec::Aes { .. } | KeySpec::GenericSecret { .. } => {
                return Err(Error::KeyTypeInconsistent)
            }
        };
        Ok(Self::new_unchecked(spec, raw.to_vec(), Vec::new()))
    }

    /// Builds an RSA public key from big-endian modulus and exponent (leading zeros allowed).
    pub fn from_rsa(modulus: &[u8], exponent: &[u8]) -> Result<PublicKey> {
        let n = der::strip_zeros(modulus);
        let e = der::strip_zeros(exponent);
        let bits = n.first().map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
        let spec = KeySpec::Rsa { bits };
        spec.check_import()?;
        let mut body = Vec::with_capacity(n.len() + e.len() + 12);
        der::write_uint(&mut body, n);
        der::write_uint(&mut body, e);
        // `from_der` runs aws-lc's RSA public key checks (odd modulus, sane exponent).
        rsa::PublicKey::from_der(&der::tlv(der::SEQUENCE, &body))?;
        Ok(Self::new_unchecked(spec, n.to_vec(), e.to_vec()))
    }

    /// Builds the value from bytes that came out of aws-lc-rs itself.
    pub(crate) fn new_unchecked(spec: KeySpec, raw: Vec<u8>, exponent: Vec<u8>) -> PublicKey {
        let spki = match spec {
            KeySpec::Rsa { .. } => {
                let mut body = Vec::with_capacity(raw.len() + exponent.len() + 12);
                der::write_uint(&mut body, &raw);
                der::write_uint(&mut body, &exponent);
                der::spki(
                    oid::RSA_ENCRYPTION,
                    Some(&[der::NULL, 0]),
                    &der::tlv(der::SEQUENCE, &body),
                )
            }
            KeySpec::Ec(c) => der::spki(oid::EC_PUBLIC_KEY, Some(c.oid_der()), &raw),
            KeySpec::Ed25519 => der::spki(oid::ED25519, None, &raw),
            KeySpec::X25519 => der::spki(oid::X25519, None, &raw),
            KeySpec::MlDsa(p) => der::spki(p.oid(), None, &raw),
            KeySpec::MlKem(p) => der::spki(p.oid(), None, &raw),
            KeySpec::Aes { .. } | KeySpec::GenericSecret { .. } => Vec::new(),
        };
        PublicKey { spec, spki, raw, exponent }
    }
}

/// A freshly generated or imported key: the secret to store and, for key pairs, the public half.
#[derive(Debug)]
pub struct GeneratedKey {
    /// The secret half, to be sealed by the caller.
    pub material: KeyMaterial,
    /// The public half (key pairs only).
    pub public: Option<PublicKey>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let specs = [
            KeySpec::Aes { bytes: 32 },
            KeySpec::GenericSecret { bytes: 32 },
            KeySpec::Rsa { bits: 3072 },
            KeySpec::Ec(Curve::Secp256k1),
            KeySpec::Ec(Curve::P521),
            KeySpec::Ed25519,
            KeySpec::X25519,
            KeySpec::MlDsa(MlDsaParam::MlDsa65),
            KeySpec::MlKem(MlKemParam::MlKem1024),
        ];
        for s in specs {
            assert_eq!(KeySpec::from_name(&s.name()), Some(s), "{}", s.name());
        }
        assert_eq!(KeySpec::Aes { bytes: 32 }.name(), "aes-256");
        assert_eq!(KeySpec::Ec(Curve::P256).name(), "ec-p256");
        assert_eq!(KeySpec::from_name("aes-100"), None);
        assert_eq!(KeySpec::from_name("generic-0"), None);
        assert_eq!(KeySpec::from_name("rsa-1024"), None);
        assert!(!KeySpec::Aes { bytes: 16 }.is_asymmetric());
        assert!(KeySpec::X25519.is_asymmetric());
    }

    #[test]
    fn curve_oids_round_trip() {
        for c in Curve::ALL {
            assert_eq!(Curve::from_oid_der(c.oid_der()), Some(c));
        }
        assert_eq!(Curve::from_oid_der(&[0x06, 0x01, 0x00]), None);
        assert_eq!(MlDsaParam::from_ck_parameter_set(2), Some(MlDsaParam::MlDsa65));
        assert_eq!(MlKemParam::from_ck_parameter_set(4), None);
    }

    #[test]
    fn key_material_debug_is_redacted() {
        let m = KeyMaterial::new(KeySpec::Aes { bytes: 16 }, SecretBytes::from_slice(&[0xAB; 16]));
        let s = format!("{m:?}");
        assert!(s.contains("REDACTED") && s.contains("aes-128"), "{s}");
        assert!(!s.to_lowercase().contains("ab, ") && !s.contains("171"), "{s}");
    }

    #[test]
    fn bad_public_keys_are_rejected() {
        let mut point = vec![4u8];
        point.extend_from_slice(&[1u8; 64]); // not on the curve
        assert!(PublicKey::from_parts(KeySpec::Ec(Curve::P256), &point).is_err());
        assert!(PublicKey::from_parts(KeySpec::Ed25519, &[0u8; 31]).is_err());
        assert!(PublicKey::from_parts(KeySpec::MlKem(MlKemParam::MlKem512), &[0u8; 10]).is_err());
        assert!(PublicKey::from_rsa(&[0xff; 128], &[1, 0, 1]).is_err()); // 1024 bits
        assert!(PublicKey::from_spki_der(b"\x30\x00").is_err());
    }
}
