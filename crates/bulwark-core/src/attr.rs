//! The PKCS#11-style object model: classes, key types, attribute types and values.
//!
//! One model serves every front door. Attribute values are typed ([`AttrValue`]); the PKCS#11
//! layer converts raw `CK_ATTRIBUTE` bytes with [`AttrType::kind`]. Secret key material never
//! lives in an attribute set: it is carried separately (`crypto::KeyMaterial`) and sealed by the
//! key hierarchy, so an attribute set can be logged, listed or serialized without leaking a key.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

macro_rules! ck_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $val:path),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// The PKCS#11 numeric value.
            pub fn to_raw(self) -> u64 {
                match self { $(Self::$variant => $val as u64),+ }
            }
            /// From the PKCS#11 numeric value; `None` when unknown.
            pub fn from_raw(v: u64) -> Option<Self> {
                $(if v == $val as u64 { return Some(Self::$variant); })+
                None
            }
            /// Every known value.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
        }
    };
}

ck_enum! {
    /// Object class (`CKO_*`).
    ObjectClass {
        /// `CKO_DATA`
        Data = cryptoki_sys::CKO_DATA,
        /// `CKO_CERTIFICATE`
        Certificate = cryptoki_sys::CKO_CERTIFICATE,
        /// `CKO_PUBLIC_KEY`
        PublicKey = cryptoki_sys::CKO_PUBLIC_KEY,
        /// `CKO_PRIVATE_KEY`
        PrivateKey = cryptoki_sys::CKO_PRIVATE_KEY,
        /// `CKO_SECRET_KEY`
        SecretKey = cryptoki_sys::CKO_SECRET_KEY,
    }
}

ck_enum! {
    /// Key type (`CKK_*`).
    KeyType {
        /// `CKK_RSA`
        Rsa = cryptoki_sys::CKK_RSA,
        /// `CKK_EC` (P-256, P-384, P-521, secp256k1)
        Ec = cryptoki_sys::CKK_EC,
        /// `CKK_EC_EDWARDS` (Ed25519)
        EcEdwards = cryptoki_sys::CKK_EC_EDWARDS,
        /// `CKK_EC_MONTGOMERY` (X25519)
        EcMontgomery = cryptoki_sys::CKK_EC_MONTGOMERY,
        /// `CKK_GENERIC_SECRET` (HMAC keys, derived secrets)
        GenericSecret = cryptoki_sys::CKK_GENERIC_SECRET,
        /// `CKK_AES`
        Aes = cryptoki_sys::CKK_AES,
        /// `CKK_HKDF`
        Hkdf = cryptoki_sys::CKK_HKDF,
        /// `CKK_ML_DSA`
        MlDsa = cryptoki_sys::CKK_ML_DSA,
        /// `CKK_ML_KEM`
        MlKem = cryptoki_sys::CKK_ML_KEM,
    }
}

ck_enum! {
    /// Attribute type (`CKA_*`). Only the attributes Bulwark understands are listed; any other
    /// type in a template is `CKR_ATTRIBUTE_TYPE_INVALID`.
    AttrType {
        /// `CKA_CLASS`
        Class = cryptoki_sys::CKA_CLASS,
        /// `CKA_TOKEN`
        Token = cryptoki_sys::CKA_TOKEN,
        /// `CKA_PRIVATE`
        Private = cryptoki_sys::CKA_PRIVATE,
        /// `CKA_LABEL`
        Label = cryptoki_sys::CKA_LABEL,
        /// `CKA_UNIQUE_ID`
        UniqueId = cryptoki_sys::CKA_UNIQUE_ID,
        /// `CKA_APPLICATION`
        Application = cryptoki_sys::CKA_APPLICATION,
        /// `CKA_VALUE`
        Value = cryptoki_sys::CKA_VALUE,
        /// `CKA_OBJECT_ID`
        ObjectId = cryptoki_sys::CKA_OBJECT_ID,
        /// `CKA_CERTIFICATE_TYPE`
        CertificateType = cryptoki_sys::CKA_CERTIFICATE_TYPE,
        /// `CKA_ISSUER`
        Issuer = cryptoki_sys::CKA_ISSUER,
        /// `CKA_SERIAL_NUMBER`
        SerialNumber = cryptoki_sys::CKA_SERIAL_NUMBER,
        /// `CKA_TRUSTED`
        Trusted = cryptoki_sys::CKA_TRUSTED,
        /// `CKA_CERTIFICATE_CATEGORY`
        CertificateCategory = cryptoki_sys::CKA_CERTIFICATE_CATEGORY,
        /// `CKA_CHECK_VALUE`
        CheckValue = cryptoki_sys::CKA_CHECK_VALUE,
        /// `CKA_KEY_TYPE`
        KeyType = cryptoki_sys::CKA_KEY_TYPE,
        /// `CKA_SUBJECT`
        Subject = cryptoki_sys::CKA_SUBJECT,
        /// `CKA_ID`
        Id = cryptoki_sys::CKA_ID,
        /// `CKA_SENSITIVE`
        Sensitive = cryptoki_sys::CKA_SENSITIVE,
        /// `CKA_ENCRYPT`
        Encrypt = cryptoki_sys::CKA_ENCRYPT,
        /// `CKA_DECRYPT`
        Decrypt = cryptoki_sys::CKA_DECRYPT,
        /// `CKA_WRAP`
        Wrap = cryptoki_sys::CKA_WRAP,
        /// `CKA_UNWRAP`
        Unwrap = cryptoki_sys::CKA_UNWRAP,
        /// `CKA_SIGN`
        Sign = cryptoki_sys::CKA_SIGN,
        /// `CKA_SIGN_RECOVER`
        SignRecover = cryptoki_sys::CKA_SIGN_RECOVER,
        /// `CKA_VERIFY`
        Verify = cryptoki_sys::CKA_VERIFY,
        /// `CKA_VERIFY_RECOVER`
        VerifyRecover = cryptoki_sys::CKA_VERIFY_RECOVER,
        /// `CKA_DERIVE`
        Derive = cryptoki_sys::CKA_DERIVE,
        /// `CKA_START_DATE`
        StartDate = cryptoki_sys::CKA_START_DATE,
        /// `CKA_END_DATE`
        EndDate = cryptoki_sys::CKA_END_DATE,
        /// `CKA_MODULUS`
        Modulus = cryptoki_sys::CKA_MODULUS,
        /// `CKA_MODULUS_BITS`
        ModulusBits = cryptoki_sys::CKA_MODULUS_BITS,
        /// `CKA_PUBLIC_EXPONENT`
        PublicExponent = cryptoki_sys::CKA_PUBLIC_EXPONENT,
        /// `CKA_PRIVATE_EXPONENT`
        PrivateExponent = cryptoki_sys::CKA_PRIVATE_EXPONENT,
        /// `CKA_PRIME_1`
        Prime1 = cryptoki_sys::CKA_PRIME_1,
        /// `CKA_PRIME_2`
        Prime2 = cryptoki_sys::CKA_PRIME_2,
        /// `CKA_EXPONENT_1`
        Exponent1 = cryptoki_sys::CKA_EXPONENT_1,
        /// `CKA_EXPONENT_2`
        Exponent2 = cryptoki_sys::CKA_EXPONENT_2,
        /// `CKA_COEFFICIENT`
        Coefficient = cryptoki_sys::CKA_COEFFICIENT,
        /// `CKA_PUBLIC_KEY_INFO`
        PublicKeyInfo = cryptoki_sys::CKA_PUBLIC_KEY_INFO,
        /// `CKA_VALUE_BITS`
        ValueBits = cryptoki_sys::CKA_VALUE_BITS,
        /// `CKA_VALUE_LEN`
        ValueLen = cryptoki_sys::CKA_VALUE_LEN,
        /// `CKA_EXTRACTABLE`
        Extractable = cryptoki_sys::CKA_EXTRACTABLE,
        /// `CKA_LOCAL`
        Local = cryptoki_sys::CKA_LOCAL,
        /// `CKA_NEVER_EXTRACTABLE`
        NeverExtractable = cryptoki_sys::CKA_NEVER_EXTRACTABLE,
        /// `CKA_ALWAYS_SENSITIVE`
        AlwaysSensitive = cryptoki_sys::CKA_ALWAYS_SENSITIVE,
        /// `CKA_KEY_GEN_MECHANISM`
        KeyGenMechanism = cryptoki_sys::CKA_KEY_GEN_MECHANISM,
        /// `CKA_MODIFIABLE`
        Modifiable = cryptoki_sys::CKA_MODIFIABLE,
        /// `CKA_COPYABLE`
        Copyable = cryptoki_sys::CKA_COPYABLE,
        /// `CKA_DESTROYABLE`
        Destroyable = cryptoki_sys::CKA_DESTROYABLE,
        /// `CKA_EC_PARAMS`
        EcParams = cryptoki_sys::CKA_EC_PARAMS,
        /// `CKA_EC_POINT`
        EcPoint = cryptoki_sys::CKA_EC_POINT,
        /// `CKA_ALWAYS_AUTHENTICATE`
        AlwaysAuthenticate = cryptoki_sys::CKA_ALWAYS_AUTHENTICATE,
        /// `CKA_WRAP_WITH_TRUSTED`
        WrapWithTrusted = cryptoki_sys::CKA_WRAP_WITH_TRUSTED,
        /// `CKA_ALLOWED_MECHANISMS`
        AllowedMechanisms = cryptoki_sys::CKA_ALLOWED_MECHANISMS,
        /// `CKA_PARAMETER_SET` (ML-DSA / ML-KEM)
        ParameterSet = cryptoki_sys::CKA_PARAMETER_SET,
        /// `CKA_ENCAPSULATE`
        Encapsulate = cryptoki_sys::CKA_ENCAPSULATE,
        /// `CKA_DECAPSULATE`
        Decapsulate = cryptoki_sys::CKA_DECAPSULATE,
        /// `CKA_SEED`
        Seed = cryptoki_sys::CKA_SEED,
        /// `CKA_BULWARK_STATE` (vendor): the key's lifecycle state ([`crate::lifecycle`]).
        BulwarkState = vendor::CKA_BULWARK_STATE,
        /// `CKA_BULWARK_ACTIVATION_DATE` (vendor): Unix seconds.
        BulwarkActivationDate = vendor::CKA_BULWARK_ACTIVATION_DATE,
        /// `CKA_BULWARK_PROTECT_STOP_DATE` (vendor): Unix seconds.
        BulwarkProtectStopDate = vendor::CKA_BULWARK_PROTECT_STOP_DATE,
        /// `CKA_BULWARK_DEACTIVATION_DATE` (vendor): Unix seconds.
        BulwarkDeactivationDate = vendor::CKA_BULWARK_DEACTIVATION_DATE,
        /// `CKA_BULWARK_COMPROMISE_DATE` (vendor): Unix seconds.
        BulwarkCompromiseDate = vendor::CKA_BULWARK_COMPROMISE_DATE,
        /// `CKA_BULWARK_DESTROY_DATE` (vendor): Unix seconds.
        BulwarkDestroyDate = vendor::CKA_BULWARK_DESTROY_DATE,
        /// `CKA_BULWARK_USE_PRINCIPALS` (vendor): the user ids allowed to use the key.
        BulwarkUsePrincipals = vendor::CKA_BULWARK_USE_PRINCIPALS,
        /// `CKA_BULWARK_MAX_USES` (vendor): the key's use quota.
        BulwarkMaxUses = vendor::CKA_BULWARK_MAX_USES,
        /// `CKA_BULWARK_USE_COUNT` (vendor, computed): uses counted so far.
        BulwarkUseCount = vendor::CKA_BULWARK_USE_COUNT,
        /// `CKA_BULWARK_RATE_USES` (vendor): uses allowed per rate period.
        BulwarkRateUses = vendor::CKA_BULWARK_RATE_USES,
        /// `CKA_BULWARK_RATE_PERIOD` (vendor): the rate period in seconds.
        BulwarkRatePeriod = vendor::CKA_BULWARK_RATE_PERIOD,
        /// `CKA_BULWARK_USE_QUORUM` (vendor): approvals each use needs.
        BulwarkUseQuorum = vendor::CKA_BULWARK_USE_QUORUM,
        /// `CKA_BULWARK_KEY_VERSION` (vendor): the version of a rotated key (absent: 1).
        BulwarkKeyVersion = vendor::CKA_BULWARK_KEY_VERSION,
        /// `CKA_BULWARK_ROTATION_PERIOD` (vendor): automatic rotation period in seconds.
        BulwarkRotationPeriod = vendor::CKA_BULWARK_ROTATION_PERIOD,
        /// `CKA_BULWARK_KEY_FAMILY` (vendor): 16 bytes shared by every version of one key.
        BulwarkKeyFamily = vendor::CKA_BULWARK_KEY_FAMILY,
        /// `CKA_BULWARK_MIN_DECRYPT_VERSION` (vendor): older versions of the family refuse
        /// decrypt, unwrap and verify.
        BulwarkMinDecryptVersion = vendor::CKA_BULWARK_MIN_DECRYPT_VERSION,
        /// `CKA_BULWARK_ROTATED_AT` (vendor): Unix seconds when this version became current
        /// (the start of its rotation period).
        BulwarkRotatedAt = vendor::CKA_BULWARK_ROTATED_AT,
        /// `CKA_BULWARK_DESTROY_SCHEDULED` (vendor): Unix seconds when a scheduled destruction
        /// is (or was) due ([`crate::destruction`]).
        BulwarkDestroyScheduled = vendor::CKA_BULWARK_DESTROY_SCHEDULED,
        /// `CKA_BULWARK_ARCHIVED` (vendor): Unix seconds when the key's material was archived
        /// out of the live store.
        BulwarkArchived = vendor::CKA_BULWARK_ARCHIVED,
    }
}

/// Bulwark's vendor-defined attribute types (`CKA_VENDOR_DEFINED | 0x4257_xxxx`, "BW"). They
/// fit 32 bits, so they read the same through a 32-bit `CK_ULONG`. All are read-only through
/// PKCS#11: the lifecycle is changed by its own audited calls.
pub mod vendor {
    /// Bulwark's prefix inside the vendor-defined range.
    pub const CKA_BULWARK_BASE: u64 = 0x8000_0000 | 0x4257_0000;
    /// The lifecycle state, a `CK_ULONG` with KMIP's State values (suspended: 0x8000_0001).
    pub const CKA_BULWARK_STATE: u64 = CKA_BULWARK_BASE | 0x01;
    /// Activation date, a `CK_ULONG` of Unix seconds.
    pub const CKA_BULWARK_ACTIVATION_DATE: u64 = CKA_BULWARK_BASE | 0x02;
    /// Protect-stop date, a `CK_ULONG` of Unix seconds.
    pub const CKA_BULWARK_PROTECT_STOP_DATE: u64 = CKA_BULWARK_BASE | 0x03;
    /// Deactivation date, a `CK_ULONG` of Unix seconds.
    pub const CKA_BULWARK_DEACTIVATION_DATE: u64 = CKA_BULWARK_BASE | 0x04;
    /// Compromise date, a `CK_ULONG` of Unix seconds.
    pub const CKA_BULWARK_COMPROMISE_DATE: u64 = CKA_BULWARK_BASE | 0x05;
    /// Destroy date, a `CK_ULONG` of Unix seconds.
    pub const CKA_BULWARK_DESTROY_DATE: u64 = CKA_BULWARK_BASE | 0x06;
    /// The principals allowed to use the key (usage policy): 16-byte user ids, concatenated.
    pub const CKA_BULWARK_USE_PRINCIPALS: u64 = CKA_BULWARK_BASE | 0x30;
    /// The maximum number of uses of the key (usage policy), a `CK_ULONG`.
    pub const CKA_BULWARK_MAX_USES: u64 = CKA_BULWARK_BASE | 0x31;
    /// The uses of the key counted so far, a `CK_ULONG` (computed on read, never stored).
    pub const CKA_BULWARK_USE_COUNT: u64 = CKA_BULWARK_BASE | 0x32;
    /// Rate limit (usage policy): uses allowed per period, a `CK_ULONG`.
    pub const CKA_BULWARK_RATE_USES: u64 = CKA_BULWARK_BASE | 0x33;
    /// Rate limit (usage policy): the period in seconds, a `CK_ULONG`.
    pub const CKA_BULWARK_RATE_PERIOD: u64 = CKA_BULWARK_BASE | 0x34;
    /// Per-use quorum (usage policy): fresh approvals each use needs, a `CK_ULONG`.
    pub const CKA_BULWARK_USE_QUORUM: u64 = CKA_BULWARK_BASE | 0x35;
    /// Key version (rotation), a `CK_ULONG`; a key never rotated reads 1.
    pub const CKA_BULWARK_KEY_VERSION: u64 = CKA_BULWARK_BASE | 0x20;
    /// Automatic rotation period, a `CK_ULONG` of seconds.
    pub const CKA_BULWARK_ROTATION_PERIOD: u64 = CKA_BULWARK_BASE | 0x21;
    /// Key family: 16 bytes shared by every version of one key.
    pub const CKA_BULWARK_KEY_FAMILY: u64 = CKA_BULWARK_BASE | 0x22;
    /// Minimum decryption version of the key's family, a `CK_ULONG`.
    pub const CKA_BULWARK_MIN_DECRYPT_VERSION: u64 = CKA_BULWARK_BASE | 0x23;
    /// When this version became current, a `CK_ULONG` of Unix seconds.
    pub const CKA_BULWARK_ROTATED_AT: u64 = CKA_BULWARK_BASE | 0x24;
    /// When a scheduled destruction is due, a `CK_ULONG` of Unix seconds.
    pub const CKA_BULWARK_DESTROY_SCHEDULED: u64 = CKA_BULWARK_BASE | 0x40;
    /// When the key was archived (material removed, kept in an archive file), Unix seconds.
    pub const CKA_BULWARK_ARCHIVED: u64 = CKA_BULWARK_BASE | 0x41;
}

/// How an attribute's value is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrKind {
    /// `CK_BBOOL`
    Bool,
    /// `CK_ULONG`
    Ulong,
    /// A byte string (labels are UTF-8 byte strings).
    Bytes,
    /// `CK_DATE`: 8 ASCII digits `YYYYMMDD`, or empty.
    Date,
    /// An array of `CK_MECHANISM_TYPE`.
    MechanismList,
}

impl AttrType {
    /// The encoding of this attribute's value.
    pub fn kind(self) -> AttrKind {
        use AttrType as A;
        match self {
            A::Token
            | A::Private
            | A::Trusted
            | A::Sensitive
            | A::Encrypt
            | A::Decrypt
            | A::Wrap
            | A::Unwrap
            | A::Sign
            | A::SignRecover
            | A::Verify
            | A::VerifyRecover
            | A::Derive
            | A::Extractable
            | A::Local
            | A::NeverExtractable
            | A::AlwaysSensitive
            | A::Modifiable
            | A::Copyable
            | A::Destroyable
            | A::AlwaysAuthenticate
            | A::WrapWithTrusted
            | A::Encapsulate
            | A::Decapsulate => AttrKind::Bool,
            A::Class
            | A::CertificateType
            | A::CertificateCategory
            | A::KeyType
            | A::ModulusBits
            | A::ValueBits
            | A::ValueLen
            | A::KeyGenMechanism
            | A::ParameterSet
            | A::BulwarkState
            | A::BulwarkActivationDate
            | A::BulwarkProtectStopDate
            | A::BulwarkDeactivationDate
            | A::BulwarkCompromiseDate
            | A::BulwarkDestroyDate
            | A::BulwarkMaxUses
            | A::BulwarkUseCount
            | A::BulwarkRateUses
            | A::BulwarkRatePeriod
            | A::BulwarkUseQuorum
            | A::BulwarkKeyVersion
            | A::BulwarkRotationPeriod
            | A::BulwarkMinDecryptVersion
            | A::BulwarkRotatedAt
            | A::BulwarkDestroyScheduled
            | A::BulwarkArchived => AttrKind::Ulong,
            A::StartDate | A::EndDate => AttrKind::Date,
            A::AllowedMechanisms => AttrKind::MechanismList,
            _ => AttrKind::Bytes,
        }
    }

    /// Attributes that carry secret key material. They are never stored in an attribute set
    /// and are only ever revealed for keys that are neither sensitive nor unextractable.
    pub fn is_secret_component(self) -> bool {
        matches!(
            self,
            AttrType::Value
                | AttrType::PrivateExponent
                | AttrType::Prime1
                | AttrType::Prime2
                | AttrType::Exponent1
                | AttrType::Exponent2
                | AttrType::Coefficient
                | AttrType::Seed
        )
    }
}

/// A typed attribute value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrValue {
    /// Boolean.
    Bool(bool),
    /// Unsigned integer.
    Ulong(u64),
    /// Byte string.
    Bytes(Vec<u8>),
    /// `YYYYMMDD` date, or `None` for the empty date.
    Date(Option<[u8; 8]>),
    /// Mechanism list.
    MechanismList(Vec<u64>),
}

impl AttrValue {
    /// Parses the raw PKCS#11 encoding of an attribute of type `t` (native-endian `CK_ULONG`).
    pub fn from_raw(t: AttrType, raw: &[u8]) -> Result<Self> {
        const UL: usize = std::mem::size_of::<u64>();
        match t.kind() {
            AttrKind::Bool => match raw {
                [0] => Ok(AttrValue::Bool(false)),
                [1] => Ok(AttrValue::Bool(true)),
                _ => Err(Error::AttributeValueInvalid(t)),
            },
            AttrKind::Ulong => {
                let arr: [u8; UL] = raw.try_into().map_err(|_| Error::AttributeValueInvalid(t))?;
                Ok(AttrValue::Ulong(u64::from_ne_bytes(arr)))
            }
            AttrKind::Bytes => Ok(AttrValue::Bytes(raw.to_vec())),
            AttrKind::Date => {
                if raw.is_empty() {
                    return Ok(AttrValue::Date(None));
                }
                let arr: [u8; 8] = raw.try_into().map_err(|_| Error::AttributeValueInvalid(t))?;
                if !valid_date(arr) {
                    return Err(Error::AttributeValueInvalid(t));
                }
                Ok(AttrValue::Date(Some(arr)))
            }
            AttrKind::MechanismList => {
                if raw.len() % UL != 0 {
                    return Err(Error::AttributeValueInvalid(t));
                }
                Ok(AttrValue::MechanismList(
                    raw.chunks_exact(UL)
                        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; UL])))
                        .collect(),
                ))
            }
        }
    }

    /// The raw PKCS#11 encoding.
    pub fn to_raw(&self) -> Vec<u8> {
        match self {
            AttrValue::Bool(b) => vec![u8::from(*b)],
            AttrValue::Ulong(v) => v.to_ne_bytes().to_vec(),
            AttrValue::Bytes(b) => b.clone(),
            AttrValue::Date(None) => Vec::new(),
            AttrValue::Date(Some(d)) => d.to_vec(),
            AttrValue::MechanismList(l) => l.iter().flat_map(|m| m.to_ne_bytes()).collect(),
        }
    }

    fn kind(&self) -> AttrKind {
        match self {
            AttrValue::Bool(_) => AttrKind::Bool,
            AttrValue::Ulong(_) => AttrKind::Ulong,
            AttrValue::Bytes(_) => AttrKind::Bytes,
            AttrValue::Date(_) => AttrKind::Date,
            AttrValue::MechanismList(_) => AttrKind::MechanismList,
        }
    }
}

/// `YYYYMMDD` with plausible ranges (month 01–12, day 01–31).
fn valid_date(d: [u8; 8]) -> bool {
    if !d.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let num = |s: &[u8]| s.iter().fold(0u32, |a, b| a * 10 + u32::from(b - b'0'));
    let (m, day) = (num(&d[4..6]), num(&d[6..8]));
    (1..=12).contains(&m) && (1..=31).contains(&day)
}

/// One object's attributes (never secret material), ordered by type so that the encoding is
/// canonical.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes(BTreeMap<AttrType, AttrValue>);

impl Attributes {
    /// Empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a value, checking that its kind fits the type. Secret components are refused.
    pub fn set(&mut self, t: AttrType, v: AttrValue) -> Result<()> {
        if v.kind() != t.kind() || t.is_secret_component() && t != AttrType::Value {
            return Err(Error::AttributeValueInvalid(t));
        }
        self.0.insert(t, v);
        Ok(())
    }

    /// Sets a boolean.
    pub fn set_bool(&mut self, t: AttrType, v: bool) {
        debug_assert_eq!(t.kind(), AttrKind::Bool);
        self.0.insert(t, AttrValue::Bool(v));
    }

    /// Sets an unsigned integer.
    pub fn set_ulong(&mut self, t: AttrType, v: u64) {
        debug_assert_eq!(t.kind(), AttrKind::Ulong);
        self.0.insert(t, AttrValue::Ulong(v));
    }

    /// Sets a byte string.
    pub fn set_bytes(&mut self, t: AttrType, v: impl Into<Vec<u8>>) {
        debug_assert_eq!(t.kind(), AttrKind::Bytes);
        self.0.insert(t, AttrValue::Bytes(v.into()));
    }

    /// The value, if present.
    pub fn get(&self, t: AttrType) -> Option<&AttrValue> {
        self.0.get(&t)
    }

    /// Removes a value.
    pub fn remove(&mut self, t: AttrType) -> Option<AttrValue> {
        self.0.remove(&t)
    }

    /// True when present.
    pub fn contains(&self, t: AttrType) -> bool {
        self.0.contains_key(&t)
    }

    /// A boolean attribute, or `None` if absent.
    pub fn bool(&self, t: AttrType) -> Option<bool> {
        match self.0.get(&t) {
            Some(AttrValue::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    /// A boolean attribute with a default.
    pub fn bool_or(&self, t: AttrType, default: bool) -> bool {
        self.bool(t).unwrap_or(default)
    }

    /// An integer attribute.
    pub fn ulong(&self, t: AttrType) -> Option<u64> {
        match self.0.get(&t) {
            Some(AttrValue::Ulong(v)) => Some(*v),
            _ => None,
        }
    }

    /// A byte-string attribute.
    pub fn bytes(&self, t: AttrType) -> Option<&[u8]> {
        match self.0.get(&t) {
            Some(AttrValue::Bytes(v)) => Some(v),
            _ => None,
        }
    }

    /// The object class.
    pub fn class(&self) -> Option<ObjectClass> {
        self.ulong(AttrType::Class).and_then(ObjectClass::from_raw)
    }

    /// The key type.
    pub fn key_type(&self) -> Option<KeyType> {
        self.ulong(AttrType::KeyType).and_then(KeyType::from_raw)
    }

    /// The label as text (lossy for non-UTF-8 labels), empty when absent.
    pub fn label(&self) -> String {
        self.bytes(AttrType::Label)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }

    /// Iterates in canonical (type) order.
    pub fn iter(&self) -> impl Iterator<Item = (AttrType, &AttrValue)> {
        self.0.iter().map(|(k, v)| (*k, v))
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when every attribute of `template` is present here with an equal value
    /// (the `C_FindObjects` match rule).
    pub fn matches(&self, template: &[(AttrType, AttrValue)]) -> bool {
        template.iter().all(|(t, v)| self.0.get(t) == Some(v))
    }

    /// Canonical binary encoding: for each attribute in type order, `type:u64be kind:u8
    /// len:u32be value`. Deterministic, so it can be authenticated.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * 16);
        for (t, v) in &self.0 {
            let raw = match v {
                // Integers are encoded big-endian here (not native) so stores are portable.
                AttrValue::Ulong(x) => x.to_be_bytes().to_vec(),
                AttrValue::MechanismList(l) => l.iter().flat_map(|m| m.to_be_bytes()).collect(),
                other => other.to_raw(),
            };
            out.extend_from_slice(&t.to_raw().to_be_bytes());
            out.push(kind_tag(v.kind()));
            out.extend_from_slice(&u32::try_from(raw.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(&raw);
        }
        out
    }

    /// Parses [`Attributes::encode`] output. Any malformation is an integrity error: this input
    /// comes from the store and has already been authenticated, so a failure means corruption.
    pub fn decode(mut b: &[u8]) -> Result<Self> {
        const BAD: Error = Error::Integrity("attribute record malformed");
        let mut map = BTreeMap::new();
        while !b.is_empty() {
            if b.len() < 13 {
                return Err(BAD);
            }
            let t = u64::from_be_bytes(b[..8].try_into().map_err(|_| BAD)?);
            let tag = b[8];
            let len = u32::from_be_bytes(b[9..13].try_into().map_err(|_| BAD)?) as usize;
            b = &b[13..];
            if b.len() < len {
                return Err(BAD);
            }
            let (raw, rest) = b.split_at(len);
            b = rest;
            let t = AttrType::from_raw(t).ok_or(BAD)?;
            if kind_tag(t.kind()) != tag {
                return Err(BAD);
            }
            let v = match t.kind() {
                AttrKind::Ulong => {
                    AttrValue::Ulong(u64::from_be_bytes(raw.try_into().map_err(|_| BAD)?))
                }
                AttrKind::MechanismList => {
                    if raw.len() % 8 != 0 {
                        return Err(BAD);
                    }
                    AttrValue::MechanismList(
                        raw.chunks_exact(8)
                            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
                            .collect(),
                    )
                }
                _ => AttrValue::from_raw(t, raw).map_err(|_| BAD)?,
            };
            map.insert(t, v);
        }
        Ok(Self(map))
    }
}

fn kind_tag(k: AttrKind) -> u8 {
    match k {
        AttrKind::Bool => 1,
        AttrKind::Ulong => 2,
        AttrKind::Bytes => 3,
        AttrKind::Date => 4,
        AttrKind::MechanismList => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_values_round_trip() {
        let v = AttrValue::from_raw(AttrType::Sign, &[1]).unwrap();
        assert_eq!(v, AttrValue::Bool(true));
        assert!(AttrValue::from_raw(AttrType::Sign, &[2]).is_err());
        assert!(AttrValue::from_raw(AttrType::Sign, &[]).is_err());
        assert!(AttrValue::from_raw(AttrType::Class, &[0; 4]).is_err());
        assert!(AttrValue::from_raw(AttrType::StartDate, b"20261301").is_err());
        assert_eq!(
            AttrValue::from_raw(AttrType::StartDate, b"20261127").unwrap(),
            AttrValue::Date(Some(*b"20261127"))
        );
        assert!(AttrValue::from_raw(AttrType::AllowedMechanisms, &[0; 12]).is_err());
    }

    #[test]
    fn encoding_is_canonical_and_round_trips() {
        let mut a = Attributes::new();
        a.set_bytes(AttrType::Label, "k1");
        a.set_ulong(AttrType::Class, 4);
        a.set_bool(AttrType::Sign, true);
        a.set(AttrType::AllowedMechanisms, AttrValue::MechanismList(vec![1, 0x1041])).unwrap();
        a.set(AttrType::EndDate, AttrValue::Date(None)).unwrap();
        let enc = a.encode();
        let b = Attributes::decode(&enc).unwrap();
        assert_eq!(a, b);
        assert_eq!(b.encode(), enc);
        // Truncation anywhere is detected.
        for cut in 1..enc.len() {
            let r = Attributes::decode(&enc[..cut]);
            assert!(r.is_err() || r.unwrap() != a, "cut at {cut}");
        }
    }

    #[test]
    fn secret_components_refused_in_sets() {
        let mut a = Attributes::new();
        assert!(a.set(AttrType::PrivateExponent, AttrValue::Bytes(vec![1])).is_err());
        assert!(a.set(AttrType::Sign, AttrValue::Ulong(1)).is_err());
    }
}
