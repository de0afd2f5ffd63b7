//! Mechanisms: the PKCS#11 `CKM_*` operations the engine performs, with their parameters already
//! parsed into Rust types.
//!
//! This module owns the mechanism catalogue (what `C_GetMechanismList` / `C_GetMechanismInfo`
//! serve) and which key types each mechanism accepts. It must never hold a secret: IVs, labels,
//! salts, context strings and peer public points are not secret, key bytes are never here.

use cryptoki_sys as ck;

use crate::crypto::{Curve, KeySpec};
use crate::token::Usage;

/// A hash function, as used by digest, HMAC, HKDF, PSS, OAEP and the ECDH KDFs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DigestAlg {
    /// SHA-1: only for OAEP and digesting, never for signatures or MACs.
    Sha1,
    /// SHA-224: digesting only.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl DigestAlg {
    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            DigestAlg::Sha1 => 20,
            DigestAlg::Sha224 => 28,
            DigestAlg::Sha256 => 32,
            DigestAlg::Sha384 => 48,
            DigestAlg::Sha512 => 64,
        }
    }

    /// The `CKM_SHA*` digest mechanism.
    pub fn ck_digest(self) -> u64 {
        match self {
            DigestAlg::Sha1 => ck::CKM_SHA_1,
            DigestAlg::Sha224 => ck::CKM_SHA224,
            DigestAlg::Sha256 => ck::CKM_SHA256,
            DigestAlg::Sha384 => ck::CKM_SHA384,
            DigestAlg::Sha512 => ck::CKM_SHA512,
        }
    }

    /// The hash for a `CKM_SHA*` digest mechanism value (as found in PSS/OAEP/HKDF parameters).
    pub fn from_ck_digest(ckm: u64) -> Option<DigestAlg> {
        [
            DigestAlg::Sha1,
            DigestAlg::Sha224,
            DigestAlg::Sha256,
            DigestAlg::Sha384,
            DigestAlg::Sha512,
        ]
        .into_iter()
        .find(|d| d.ck_digest() == ckm)
    }

    /// The hash for a `CKG_MGF1_*` value.
    pub fn from_ck_mgf(ckg: u64) -> Option<DigestAlg> {
        match ckg {
            ck::CKG_MGF1_SHA1 => Some(DigestAlg::Sha1),
            ck::CKG_MGF1_SHA224 => Some(DigestAlg::Sha224),
            ck::CKG_MGF1_SHA256 => Some(DigestAlg::Sha256),
            ck::CKG_MGF1_SHA384 => Some(DigestAlg::Sha384),
            ck::CKG_MGF1_SHA512 => Some(DigestAlg::Sha512),
            _ => None,
        }
    }

    /// The `CKM_SHA*_HMAC` mechanism for this hash.
    pub fn ck_hmac(self) -> u64 {
        match self {
            DigestAlg::Sha1 => ck::CKM_SHA_1_HMAC,
            DigestAlg::Sha224 => ck::CKM_SHA224_HMAC,
            DigestAlg::Sha256 => ck::CKM_SHA256_HMAC,
            DigestAlg::Sha384 => ck::CKM_SHA384_HMAC,
            DigestAlg::Sha512 => ck::CKM_SHA512_HMAC,
        }
    }
}

/// The key-derivation function applied to an ECDH shared secret (`CK_EC_KDF_TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EcdhKdf {
    /// `CKD_NULL`: the raw shared secret (the x-coordinate for EC, the X25519 output).
    Null,
    /// `CKD_SHA*_KDF`: the ANSI X9.63 KDF with this hash.
    X963(DigestAlg),
}

impl EcdhKdf {
    /// Parses a `CKD_*` value.
    pub fn from_ck(ckd: u64) -> Option<EcdhKdf> {
        Some(match ckd {
            ck::CKD_NULL => EcdhKdf::Null,
            ck::CKD_SHA1_KDF => EcdhKdf::X963(DigestAlg::Sha1),
            ck::CKD_SHA224_KDF => EcdhKdf::X963(DigestAlg::Sha224),
            ck::CKD_SHA256_KDF => EcdhKdf::X963(DigestAlg::Sha256),
            ck::CKD_SHA384_KDF => EcdhKdf::X963(DigestAlg::Sha384),
            ck::CKD_SHA512_KDF => EcdhKdf::X963(DigestAlg::Sha512),
            _ => return None,
        })
    }
}

/// Optional `CK_EDDSA_PARAMS`. Only pure Ed25519 (no parameters) is supported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdDsaParams {
    /// `phFlag`: Ed25519ph.
    pub prehash: bool,
    /// The context string (Ed25519ctx / Ed25519ph).
    pub context: Vec<u8>,
}

/// A cryptographic operation with its parameters. Holds no secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// `CKM_RSA_PKCS`: sign/verify (and sign/verify-recover) pad any input of up to k−11 bytes
    /// with PKCS#1 v1.5 type 1 as given (a `DigestInfo`, a raw TLS hash pair...); encrypt/decrypt
    /// is PKCS#1 v1.5 encryption.
    RsaPkcs,
    /// `CKM_SHA256_RSA_PKCS` (message input).
    Sha256RsaPkcs,
    /// `CKM_SHA384_RSA_PKCS` (message input).
    Sha384RsaPkcs,
    /// `CKM_SHA512_RSA_PKCS` (message input).
    Sha512RsaPkcs,
    /// `CKM_RSA_PKCS_PSS` (input is the digest): any hash (SHA-1 to SHA-512), MGF1 hash and salt
    /// length the key size allows.
    RsaPkcsPss {
        /// The hash the input digest was made with.
        hash: DigestAlg,
        /// MGF1 hash.
        mgf_hash: DigestAlg,
        /// Salt length in bytes.
        salt_len: usize,
    },
    /// `CKM_SHA256_RSA_PKCS_PSS` (message input); `hash` must be SHA-256.
    Sha256RsaPkcsPss {
        /// Must be SHA-256.
        hash: DigestAlg,
        /// MGF1 hash.
        mgf_hash: DigestAlg,
        /// Salt length in bytes.
        salt_len: usize,
    },
    /// `CKM_SHA384_RSA_PKCS_PSS` (message input); `hash` must be SHA-384.
    Sha384RsaPkcsPss {
        /// Must be SHA-384.
        hash: DigestAlg,
        /// MGF1 hash.
        mgf_hash: DigestAlg,
        /// Salt length in bytes.
        salt_len: usize,
    },
    /// `CKM_SHA512_RSA_PKCS_PSS` (message input); `hash` must be SHA-512.
    Sha512RsaPkcsPss {
        /// Must be SHA-512.
        hash: DigestAlg,
        /// MGF1 hash.
        mgf_hash: DigestAlg,
        /// Salt length in bytes.
        salt_len: usize,
    },
    /// `CKM_RSA_PKCS_OAEP`. `mgf_hash` must equal `hash`.
    RsaOaep {
        /// OAEP hash.
        hash: DigestAlg,
        /// MGF1 hash.
        mgf_hash: DigestAlg,
        /// The label (`pSourceData`), empty for none.
        label: Vec<u8>,
    },
    /// `CKM_ECDSA`: input is a digest of 20..=64 bytes (truncated or left-padded per FIPS 186-5).
    /// Output is `r || s`, each the curve's field size.
    Ecdsa,
    /// `CKM_ECDSA_SHA256` (message input).
    EcdsaSha256,
    /// `CKM_ECDSA_SHA384` (message input).
    EcdsaSha384,
    /// `CKM_ECDSA_SHA512` (message input).
    EcdsaSha512,
    /// `CKM_EDDSA`: pure Ed25519 only (`None`); any parameters are rejected.
    EdDsa(Option<EdDsaParams>),
    /// `CKM_ML_DSA`: pure ML-DSA (hedged); a non-empty context is rejected.
    MlDsa {
        /// The context string; must be empty.
        context: Vec<u8>,
    },
    /// `CKM_SHA*_HMAC`, full-length tags (SHA-256/384/512).
    Hmac(DigestAlg),
    /// `CKM_AES_GCM` with a caller-chosen IV. Output is `ciphertext || tag`. Only 12-byte IVs
    /// and 128-bit tags. [`Mechanism::caller_chosen_nonce`] is true for encryption with it.
    AesGcm {
        /// The IV (12 bytes).
        iv: Vec<u8>,
        /// Additional authenticated data.
        aad: Vec<u8>,
        /// Tag length in bits (128).
        tag_bits: usize,
    },
    /// `CKM_AES_GCM` encryption with an IV the token generates (PKCS#11 3.0 `CKG_GENERATE` /
    /// `CKG_GENERATE_RANDOM`): 12 bytes, `fixed` followed by random bytes from the token's DRBG.
    /// Output is `iv || ciphertext || tag`; the front door hands the IV back to the caller.
    /// Encryption only.
    AesGcmGenerated {
        /// The caller's fixed leading IV bytes (`ulIvFixedBits / 8`; at most 8, so at least 32
        /// bits are random).
        fixed: Vec<u8>,
        /// Additional authenticated data.
        aad: Vec<u8>,
        /// Tag length in bits (128).
        tag_bits: usize,
    },
    /// `CKM_AES_CBC_PAD` (PKCS#7 padding).
    AesCbcPad {
        /// The IV.
        iv: [u8; 16],
    },
    /// `CKM_AES_CBC_PAD` for a part of a multi-part operation that is not the last: whole
    /// blocks, chained from `iv`, with no padding added or removed (what `C_EncryptUpdate` /
    /// `C_DecryptUpdate` return for CBC-PAD). Gated, allowed and audited as `CKM_AES_CBC_PAD`;
    /// only [`crate::stream::CipherStream`] makes it.
    AesCbcPadPart {
        /// The chaining value (the previous ciphertext block, or the IV).
        iv: [u8; 16],
    },
    /// `CKM_AES_ECB`: whole blocks, no padding.
    AesEcb,
    /// `CKM_AES_CBC` without padding: input must be a multiple of 16 bytes.
    AesCbc {
        /// The IV.
        iv: [u8; 16],
    },
    /// `CKM_AES_CTR`. The low `counter_bits` of the block are the counter; input that would
    /// wrap the counter is rejected.
    AesCtr {
        /// The initial counter block.
        counter_block: [u8; 16],
        /// Width of the counter in bits (1..=128).
        counter_bits: usize,
    },
    /// `CKM_AES_CMAC` (NIST SP 800-38B): a full 16-byte tag.
    AesCmac,
    /// `CKM_AES_CMAC_GENERAL`: the tag truncated to `mac_len` bytes (1..=16).
    AesCmacGeneral {
        /// Tag length in bytes.
        mac_len: usize,
    },
    /// `CKM_AES_KEY_WRAP` (RFC 3394, default IV).
    AesKeyWrap,
    /// `CKM_AES_KEY_WRAP_KWP` (RFC 5649 / NIST SP 800-38F KWP).
    AesKeyWrapPad,
    /// `CKM_ECDH1_DERIVE` (EC and X25519 keys).
    Ecdh1Derive {
        /// The KDF applied to the shared secret.
        kdf: EcdhKdf,
        /// X9.63 `SharedInfo`; must be empty with `EcdhKdf::Null`.
        shared_data: Vec<u8>,
        /// The peer's public value: a raw point (or X25519 u-coordinate), or a DER OCTET STRING
        /// wrapping it.
        public_data: Vec<u8>,
    },
    /// `CKM_HKDF_DERIVE` (`CK_HKDF_PARAMS`).
    Hkdf {
        /// Run HKDF-Extract.
        extract: bool,
        /// Run HKDF-Expand.
        expand: bool,
        /// The PRF hash (SHA-256/384/512).
        hash: DigestAlg,
        /// The salt; `None` is `CKF_HKDF_SALT_NULL` (hash-length zeros).
        salt: Option<Vec<u8>>,
        /// The info string for Expand.
        info: Vec<u8>,
    },
    /// `CKM_ML_KEM` (encapsulate / decapsulate).
    MlKem,
    /// `CKM_SHA*` digesting.
    Digest(DigestAlg),
}

impl Mechanism {
    /// The PKCS#11 `CKM_*` value.
    pub fn ck_type(&self) -> u64 {
        match self {
            Mechanism::RsaPkcs => ck::CKM_RSA_PKCS,
            Mechanism::Sha256RsaPkcs => ck::CKM_SHA256_RSA_PKCS,
            Mechanism::Sha384RsaPkcs => ck::CKM_SHA384_RSA_PKCS,
            Mechanism::Sha512RsaPkcs => ck::CKM_SHA512_RSA_PKCS,
            Mechanism::RsaPkcsPss { .. } => ck::CKM_RSA_PKCS_PSS,
            Mechanism::Sha256RsaPkcsPss { .. } => ck::CKM_SHA256_RSA_PKCS_PSS,
            Mechanism::Sha384RsaPkcsPss { .. } => ck::CKM_SHA384_RSA_PKCS_PSS,
            Mechanism::Sha512RsaPkcsPss { .. } => ck::CKM_SHA512_RSA_PKCS_PSS,
            Mechanism::RsaOaep { .. } => ck::CKM_RSA_PKCS_OAEP,
            Mechanism::Ecdsa => ck::CKM_ECDSA,
            Mechanism::EcdsaSha256 => ck::CKM_ECDSA_SHA256,
            Mechanism::EcdsaSha384 => ck::CKM_ECDSA_SHA384,
            Mechanism::EcdsaSha512 => ck::CKM_ECDSA_SHA512,
            Mechanism::EdDsa(_) => ck::CKM_EDDSA,
            Mechanism::MlDsa { .. } => ck::CKM_ML_DSA,
            Mechanism::Hmac(d) => d.ck_hmac(),
            Mechanism::AesGcm { .. } | Mechanism::AesGcmGenerated { .. } => ck::CKM_AES_GCM,
            Mechanism::AesCbcPad { .. } | Mechanism::AesCbcPadPart { .. } => ck::CKM_AES_CBC_PAD,
            Mechanism::AesEcb => ck::CKM_AES_ECB,
            Mechanism::AesCmac => ck::CKM_AES_CMAC,
            Mechanism::AesCmacGeneral { .. } => ck::CKM_AES_CMAC_GENERAL,
            Mechanism::AesCbc { .. } => ck::CKM_AES_CBC,
            Mechanism::AesCtr { .. } => ck::CKM_AES_CTR,
            Mechanism::AesKeyWrap => ck::CKM_AES_KEY_WRAP,
            Mechanism::AesKeyWrapPad => ck::CKM_AES_KEY_WRAP_KWP,
            Mechanism::Ecdh1Derive { .. } => ck::CKM_ECDH1_DERIVE,
            Mechanism::Hkdf { .. } => ck::CKM_HKDF_DERIVE,
            Mechanism::MlKem => ck::CKM_ML_KEM,
            Mechanism::Digest(d) => d.ck_digest(),
        }
    }

    /// PSS parameters for a hash with the only salt/MGF combination the engine supports.
    pub fn pss(hash: DigestAlg, prehashed: bool) -> Mechanism {
        let (mgf_hash, salt_len) = (hash, hash.output_len());
        match (prehashed, hash) {
            (false, DigestAlg::Sha384) => Mechanism::Sha384RsaPkcsPss { hash, mgf_hash, salt_len },
            (false, DigestAlg::Sha512) => Mechanism::Sha512RsaPkcsPss { hash, mgf_hash, salt_len },
            (false, _) => Mechanism::Sha256RsaPkcsPss { hash, mgf_hash, salt_len },
            (true, _) => Mechanism::RsaPkcsPss { hash, mgf_hash, salt_len },
        }
    }

    /// Whether a key of `spec` can be used with this mechanism at all (any operation).
    pub fn key_fits(&self, spec: KeySpec) -> bool {
        match self {
            Mechanism::RsaPkcs
            | Mechanism::Sha256RsaPkcs
            | Mechanism::Sha384RsaPkcs
            | Mechanism::Sha512RsaPkcs
            | Mechanism::RsaPkcsPss { .. }
            | Mechanism::Sha256RsaPkcsPss { .. }
            | Mechanism::Sha384RsaPkcsPss { .. }
            | Mechanism::Sha512RsaPkcsPss { .. }
            | Mechanism::RsaOaep { .. } => matches!(spec, KeySpec::Rsa { .. }),
            Mechanism::Ecdsa
            | Mechanism::EcdsaSha256
            | Mechanism::EcdsaSha384
            | Mechanism::EcdsaSha512 => matches!(spec, KeySpec::Ec(_)),
            Mechanism::EdDsa(_) => spec == KeySpec::Ed25519,
            Mechanism::MlDsa { .. } => matches!(spec, KeySpec::MlDsa(_)),
            Mechanism::MlKem => matches!(spec, KeySpec::MlKem(_)),
            Mechanism::Hmac(_) | Mechanism::Hkdf { .. } => {
                matches!(spec, KeySpec::GenericSecret { .. })
            }
            Mechanism::AesGcm { .. }
            | Mechanism::AesGcmGenerated { .. }
            | Mechanism::AesCbcPad { .. }
            | Mechanism::AesCbcPadPart { .. }
            | Mechanism::AesEcb
            | Mechanism::AesCmac
            | Mechanism::AesCmacGeneral { .. }
            | Mechanism::AesCbc { .. }
            | Mechanism::AesCtr { .. } => matches!(spec, KeySpec::Aes { .. }),
            // aws-lc-rs offers AES-KW/KWP with 128- and 256-bit KEKs only.
            Mechanism::AesKeyWrap | Mechanism::AesKeyWrapPad => {
                matches!(spec, KeySpec::Aes { bytes: 16 | 32 })
            }
            Mechanism::Ecdh1Derive { .. } => matches!(
                spec,
                KeySpec::Ec(Curve::P256 | Curve::P384 | Curve::P521) | KeySpec::X25519
            ),
            Mechanism::Digest(_) => false,
        }
    }

    /// Whether this mechanism can serve `usage` at all (the `CKF_*` function flags of its
    /// table row): `C_EncryptInit` with a signature mechanism, or `C_SignInit` with a cipher,
    /// is `CKR_MECHANISM_INVALID` before any key is looked at. A token-generated GCM IV is for
    /// encryption only.
    pub fn allows(&self, usage: Usage) -> bool {
        let flag = match usage {
            Usage::Sign => ck::CKF_SIGN,
            Usage::Verify => ck::CKF_VERIFY,
            Usage::Encrypt => ck::CKF_ENCRYPT,
            Usage::Decrypt => ck::CKF_DECRYPT,
            Usage::Wrap => ck::CKF_WRAP,
            Usage::Unwrap => ck::CKF_UNWRAP,
            Usage::Derive => ck::CKF_DERIVE,
            Usage::Encapsulate => ck::CKF_ENCAPSULATE,
            Usage::Decapsulate => ck::CKF_DECAPSULATE,
        };
        if matches!(self, Mechanism::AesGcmGenerated { .. }) && usage != Usage::Encrypt {
            return false;
        }
        mechanism_info(self.ck_type()).is_some_and(|m| m.flags & flag != 0)
    }

    /// True when this mechanism encrypts under a nonce the **caller** chose: `CKM_AES_GCM`
    /// with an explicit IV ([`Mechanism::AesGcm`]), where reusing an IV under one key breaks
    /// both confidentiality and authenticity. [`Mechanism::AesGcmGenerated`] (the token makes
    /// the IV) is false. A store policy that requires token-generated GCM IVs refuses
    /// `Usage::Encrypt` with any mechanism for which this is true.
    pub fn caller_chosen_nonce(&self) -> bool {
        matches!(self, Mechanism::AesGcm { .. })
    }
}

/// Key-generation mechanisms (`C_GenerateKey` / `C_GenerateKeyPair`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyGenMechanism {
    /// `CKM_AES_KEY_GEN`.
    AesKeyGen,
    /// `CKM_GENERIC_SECRET_KEY_GEN` (HMAC and HKDF keys).
    GenericSecretKeyGen,
    /// `CKM_RSA_PKCS_KEY_PAIR_GEN`.
    RsaPkcsKeyPairGen,
    /// `CKM_EC_KEY_PAIR_GEN` (P-256/384/521, secp256k1).
    EcKeyPairGen,
    /// `CKM_EC_EDWARDS_KEY_PAIR_GEN` (Ed25519).
    EcEdwardsKeyPairGen,
    /// `CKM_EC_MONTGOMERY_KEY_PAIR_GEN` (X25519).
    EcMontgomeryKeyPairGen,
    /// `CKM_ML_DSA_KEY_PAIR_GEN`.
    MlDsaKeyPairGen,
    /// `CKM_ML_KEM_KEY_PAIR_GEN`.
    MlKemKeyPairGen,
}

impl KeyGenMechanism {
    /// The PKCS#11 `CKM_*` value.
    pub fn ck_type(&self) -> u64 {
        match self {
            KeyGenMechanism::AesKeyGen => ck::CKM_AES_KEY_GEN,
            KeyGenMechanism::GenericSecretKeyGen => ck::CKM_GENERIC_SECRET_KEY_GEN,
            KeyGenMechanism::RsaPkcsKeyPairGen => ck::CKM_RSA_PKCS_KEY_PAIR_GEN,
            KeyGenMechanism::EcKeyPairGen => ck::CKM_EC_KEY_PAIR_GEN,
            KeyGenMechanism::EcEdwardsKeyPairGen => ck::CKM_EC_EDWARDS_KEY_PAIR_GEN,
            KeyGenMechanism::EcMontgomeryKeyPairGen => ck::CKM_EC_MONTGOMERY_KEY_PAIR_GEN,
            KeyGenMechanism::MlDsaKeyPairGen => ck::CKM_ML_DSA_KEY_PAIR_GEN,
            KeyGenMechanism::MlKemKeyPairGen => ck::CKM_ML_KEM_KEY_PAIR_GEN,
        }
    }

    /// Whether this mechanism generates keys of `spec`.
    pub fn key_fits(&self, spec: KeySpec) -> bool {
        match self {
            KeyGenMechanism::AesKeyGen => matches!(spec, KeySpec::Aes { .. }),
            KeyGenMechanism::GenericSecretKeyGen => matches!(spec, KeySpec::GenericSecret { .. }),
            KeyGenMechanism::RsaPkcsKeyPairGen => matches!(spec, KeySpec::Rsa { .. }),
            KeyGenMechanism::EcKeyPairGen => matches!(spec, KeySpec::Ec(_)),
            KeyGenMechanism::EcEdwardsKeyPairGen => spec == KeySpec::Ed25519,
            KeyGenMechanism::EcMontgomeryKeyPairGen => spec == KeySpec::X25519,
            KeyGenMechanism::MlDsaKeyPairGen => matches!(spec, KeySpec::MlDsa(_)),
            KeyGenMechanism::MlKemKeyPairGen => matches!(spec, KeySpec::MlKem(_)),
        }
    }
}

/// One row of the mechanism table (`CK_MECHANISM_INFO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MechanismInfo {
    /// The `CKM_*` value.
    pub ck_type: u64,
    /// Minimum key size: bits for RSA and EC, bytes for AES and generic secrets (as PKCS#11
    /// specifies per key type), the parameter set number for ML-DSA/ML-KEM.
    pub min_key_size: u64,
    /// Maximum key size, same unit.
    pub max_key_size: u64,
    /// `CKF_*` flags.
    pub flags: u64,
}

/// The mechanisms this engine implements, with truthful key-size ranges and flags.
pub fn supported_mechanisms() -> Vec<MechanismInfo> {
    use ck::{
        CKF_DECAPSULATE as DECAP, CKF_DECRYPT as DEC, CKF_DERIVE as DER, CKF_DIGEST as DIG,
        CKF_ENCAPSULATE as ENCAP, CKF_ENCRYPT as ENC, CKF_GENERATE as GEN,
        CKF_GENERATE_KEY_PAIR as GKP, CKF_MESSAGE_DECRYPT as MDEC, CKF_MESSAGE_ENCRYPT as MENC,
        CKF_SIGN as SIG, CKF_SIGN_RECOVER as SR, CKF_UNWRAP as UNW, CKF_VERIFY as VER,
        CKF_VERIFY_RECOVER as VR, CKF_WRAP as WRP,
    };
    let row = |ck_type, min_key_size, max_key_size, flags| MechanismInfo {
        ck_type,
        min_key_size,
        max_key_size,
        flags,
    };
    let mut v = vec![
        row(ck::CKM_RSA_PKCS_KEY_PAIR_GEN, 2048, 4096, GKP),
        row(ck::CKM_RSA_PKCS, 2048, 8192, SIG | VER | SR | VR | ENC | DEC | WRP | UNW),
        row(ck::CKM_RSA_PKCS_OAEP, 2048, 8192, ENC | DEC | WRP | UNW),
        row(ck::CKM_RSA_PKCS_PSS, 2048, 8192, SIG | VER),
        row(ck::CKM_EC_KEY_PAIR_GEN, 256, 521, GKP),
        row(ck::CKM_ECDSA, 256, 521, SIG | VER),
        row(ck::CKM_ECDH1_DERIVE, 255, 521, DER),
        row(ck::CKM_EC_EDWARDS_KEY_PAIR_GEN, 255, 255, GKP),
        row(ck::CKM_EDDSA, 255, 255, SIG | VER),
        row(ck::CKM_EC_MONTGOMERY_KEY_PAIR_GEN, 255, 255, GKP),
        row(ck::CKM_ML_DSA_KEY_PAIR_GEN, 1, 3, GKP),
        row(ck::CKM_ML_DSA, 1, 3, SIG | VER),
        row(ck::CKM_ML_KEM_KEY_PAIR_GEN, 1, 3, GKP),
        row(ck::CKM_ML_KEM, 1, 3, ENCAP | DECAP),
        row(ck::CKM_AES_KEY_GEN, 16, 32, GEN),
        row(ck::CKM_AES_GCM, 16, 32, ENC | DEC | MENC | MDEC),
        row(ck::CKM_AES_ECB, 16, 32, ENC | DEC),
        row(ck::CKM_AES_CMAC, 16, 32, SIG | VER),
        row(ck::CKM_AES_CMAC_GENERAL, 16, 32, SIG | VER),
        row(ck::CKM_AES_CBC, 16, 32, ENC | DEC),
        row(ck::CKM_AES_CBC_PAD, 16, 32, ENC | DEC),
        row(ck::CKM_AES_CTR, 16, 32, ENC | DEC),
        row(ck::CKM_AES_KEY_WRAP, 16, 32, WRP | UNW),
        row(ck::CKM_AES_KEY_WRAP_KWP, 16, 32, WRP | UNW),
        row(ck::CKM_GENERIC_SECRET_KEY_GEN, 1, 512, GEN),
        row(ck::CKM_HKDF_DERIVE, 1, 512, DER),
    ];
    for (hmac, rsa, pss, ecdsa) in [
        (
            ck::CKM_SHA256_HMAC,
            ck::CKM_SHA256_RSA_PKCS,
            ck::CKM_SHA256_RSA_PKCS_PSS,
            ck::CKM_ECDSA_SHA256,
        ),
        (
            ck::CKM_SHA384_HMAC,
            ck::CKM_SHA384_RSA_PKCS,
            ck::CKM_SHA384_RSA_PKCS_PSS,
            ck::CKM_ECDSA_SHA384,
        ),
        (
            ck::CKM_SHA512_HMAC,
            ck::CKM_SHA512_RSA_PKCS,
            ck::CKM_SHA512_RSA_PKCS_PSS,
            ck::CKM_ECDSA_SHA512,
        ),
    ] {
        v.push(row(hmac, 1, 512, SIG | VER));
        v.push(row(rsa, 2048, 8192, SIG | VER));
        v.push(row(pss, 2048, 8192, SIG | VER));
        v.push(row(ecdsa, 256, 521, SIG | VER));
    }
    for d in [
        DigestAlg::Sha1,
        DigestAlg::Sha224,
        DigestAlg::Sha256,
        DigestAlg::Sha384,
        DigestAlg::Sha512,
    ] {
        v.push(row(d.ck_digest(), 0, 0, DIG));
    }
    v
}

/// The row for one mechanism, if supported.
pub fn mechanism_info(ck_type: u64) -> Option<MechanismInfo> {
    supported_mechanisms().into_iter().find(|m| m.ck_type == ck_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{MlDsaParam, MlKemParam};

    #[test]
    fn ck_values_match_the_spec() {
        assert_eq!(Mechanism::MlDsa { context: vec![] }.ck_type(), 29);
        assert_eq!(Mechanism::MlKem.ck_type(), 23);
        assert_eq!(Mechanism::AesKeyWrapPad.ck_type(), 0x210B);
        assert_eq!(Mechanism::Hmac(DigestAlg::Sha256).ck_type(), 0x251);
        assert_eq!(KeyGenMechanism::EcEdwardsKeyPairGen.ck_type(), 0x1055);
        assert_eq!(DigestAlg::from_ck_digest(0x250), Some(DigestAlg::Sha256));
        assert_eq!(DigestAlg::from_ck_mgf(ck::CKG_MGF1_SHA384), Some(DigestAlg::Sha384));
        assert_eq!(EcdhKdf::from_ck(ck::CKD_SHA256_KDF), Some(EcdhKdf::X963(DigestAlg::Sha256)));
        assert_eq!(EcdhKdf::from_ck(0xdead), None);
    }

    #[test]
    fn table_has_no_duplicates_and_covers_every_mechanism() {
        let t = supported_mechanisms();
        let mut types: Vec<u64> = t.iter().map(|m| m.ck_type).collect();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), t.len());
        let all = [
            Mechanism::RsaPkcs,
            Mechanism::pss(DigestAlg::Sha384, false),
            Mechanism::Ecdsa,
            Mechanism::EcdsaSha512,
            Mechanism::EdDsa(None),
            Mechanism::MlDsa { context: vec![] },
            Mechanism::Hmac(DigestAlg::Sha512),
            Mechanism::AesKeyWrap,
            Mechanism::AesKeyWrapPad,
            Mechanism::Hkdf {
                extract: true,
                expand: true,
                hash: DigestAlg::Sha256,
                salt: None,
                info: vec![],
            },
            Mechanism::MlKem,
            Mechanism::Digest(DigestAlg::Sha1),
        ];
        for m in all {
            assert!(mechanism_info(m.ck_type()).is_some(), "{m:?}");
        }
        assert!(mechanism_info(ck::CKM_SHA_1_HMAC).is_none());
    }

    #[test]
    fn key_fits_is_strict() {
        assert!(Mechanism::Ecdsa.key_fits(KeySpec::Ec(Curve::Secp256k1)));
        assert!(!Mechanism::Ecdsa.key_fits(KeySpec::Ed25519));
        assert!(!Mechanism::AesKeyWrap.key_fits(KeySpec::Aes { bytes: 24 }));
        assert!(!Mechanism::AesKeyWrapPad.key_fits(KeySpec::Aes { bytes: 24 }));
        assert!(Mechanism::AesCtr { counter_block: [0; 16], counter_bits: 128 }
            .key_fits(KeySpec::Aes { bytes: 24 }));
        assert!(!Mechanism::Hmac(DigestAlg::Sha256).key_fits(KeySpec::Aes { bytes: 32 }));
        assert!(Mechanism::MlKem.key_fits(KeySpec::MlKem(MlKemParam::MlKem768)));
        assert!(!Mechanism::MlKem.key_fits(KeySpec::MlDsa(MlDsaParam::MlDsa65)));
        let ecdh =
            Mechanism::Ecdh1Derive { kdf: EcdhKdf::Null, shared_data: vec![], public_data: vec![] };
        assert!(ecdh.key_fits(KeySpec::X25519));
        assert!(!ecdh.key_fits(KeySpec::Ec(Curve::Secp256k1)));
        assert!(KeyGenMechanism::EcKeyPairGen.key_fits(KeySpec::Ec(Curve::P521)));
        assert!(!KeyGenMechanism::EcKeyPairGen.key_fits(KeySpec::Ed25519));
    }
}
