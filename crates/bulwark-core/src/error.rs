//! The one error type of the core.
//!
//! Every variant maps onto exactly one PKCS#11 `CKR_*` code, one gRPC
//! status and one CLI exit message. Crypto failures are opaque on purpose (no cause is carried),
//! so an error can never become a padding or MAC oracle. No variant ever carries key material,
//! plaintext or a PIN.

use crate::attr::AttrType;

/// Result alias used throughout the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong. Caller mistakes and internal faults are distinct variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- caller mistakes: arguments and templates -------------------------------------------
    /// A malformed argument (wrong length, unknown encoding) that fits no more precise variant.
    #[error("bad argument: {0}")]
    ArgumentsBad(&'static str),
    /// The attribute type is not known for this object.
    #[error("attribute type 0x{0:x} is not valid for this object")]
    AttributeTypeInvalid(u64),
    /// The attribute value is malformed or out of range.
    #[error("invalid value for attribute {0:?}")]
    AttributeValueInvalid(AttrType),
    /// The attribute may not be set or changed by the caller.
    #[error("attribute {0:?} is read-only")]
    AttributeReadOnly(AttrType),
    /// The attribute holds a secret that is never revealed.
    #[error("attribute {0:?} is sensitive and cannot be revealed")]
    AttributeSensitive(AttrType),
    /// A required attribute is missing from the template.
    #[error("template is incomplete: {0:?} is required")]
    TemplateIncomplete(AttrType),
    /// Two attributes (or an attribute and the mechanism) contradict each other.
    #[error("template is inconsistent: {0}")]
    TemplateInconsistent(&'static str),
    /// The mechanism is unknown or not supported.
    #[error("mechanism 0x{0:x} is not supported")]
    MechanismInvalid(u64),
    /// The mechanism parameters are malformed or unsupported.
    #[error("invalid mechanism parameter: {0}")]
    MechanismParamInvalid(&'static str),
    /// The key's type does not fit the mechanism.
    #[error("key type does not match the mechanism")]
    KeyTypeInconsistent,
    /// The key's usage flags or allowed-mechanism list forbid this operation.
    #[error("key usage not permitted: {0}")]
    KeyFunctionNotPermitted(&'static str),
    /// The key is non-extractable (or sensitive) and may not leave the HSM.
    #[error("key is not extractable: {0}")]
    KeyUnextractable(&'static str),
    /// The key size is outside what the mechanism supports.
    #[error("key size out of range")]
    KeySizeRange,
    /// The supplied key bytes are not a valid key.
    #[error("invalid key material")]
    KeyInvalid,
    /// No object with this handle, or it is not visible to the caller.
    #[error("object handle is invalid")]
    ObjectHandleInvalid,
    /// No key with this label.
    #[error("no key labelled {0:?}")]
    NotFound(String),
    /// More than one object matched where exactly one was needed.
    #[error("more than one object labelled {0:?}")]
    Ambiguous(String),
    /// An object with this label already exists where labels must be unique (CLI).
    #[error("an object labelled {0:?} already exists")]
    Exists(String),
    /// The input data has a length the mechanism cannot take.
    #[error("input data length out of range")]
    DataLenRange,
    /// The ciphertext is malformed or fails authentication.
    #[error("ciphertext is invalid")]
    EncryptedDataInvalid,
    /// The ciphertext length is impossible for the mechanism.
    #[error("ciphertext length out of range")]
    EncryptedDataLenRange,
    /// The wrapped key is malformed or fails authentication.
    #[error("wrapped key is invalid")]
    WrappedKeyInvalid,
    /// The signature does not verify.
    #[error("signature is invalid")]
    SignatureInvalid,
    /// The signature has an impossible length.
    #[error("signature length out of range")]
    SignatureLenRange,
    /// The operation is forbidden by an object attribute (not destroyable, not modifiable...).
    #[error("action prohibited: {0}")]
    ActionProhibited(&'static str),

    // --- authentication ----------------------------------------------------------------------
    /// Wrong PIN. The store records the failure.
    #[error("incorrect PIN")]
    PinIncorrect,
    /// Too many consecutive failures: the PIN is locked until the SO resets it.
    #[error("PIN is locked after too many failed attempts")]
    PinLocked,
    /// The new PIN is too short or too long.
    #[error("PIN length out of range ({min}..={max} bytes)")]
    PinLenRange {
        /// Minimum accepted length.
        min: usize,
        /// Maximum accepted length.
        max: usize,
    },
    /// The operation needs a logged-in user.
    #[error("user is not logged in")]
    UserNotLoggedIn,
    /// A user is already logged in.
    #[error("user is already logged in")]
    UserAlreadyLoggedIn,
    /// Another user type is logged in.
    #[error("another user type is already logged in")]
    AnotherUserLoggedIn,
    /// The user PIN was never set.
    #[error("user PIN is not initialized")]
    UserPinNotInitialized,

    // --- store and token state ---------------------------------------------------------------
    /// The store does not exist or was never initialized.
    #[error("store not initialized: {0}")]
    NotInitialized(String),
    /// Refusing to overwrite an existing store.
    #[error("store already exists: {0}")]
    AlreadyInitialized(String),
    /// The store has been zeroized; no key in it can ever be recovered.
    #[error("store has been zeroized")]
    Zeroized,
    /// A tamper response in `alarm` mode is active: service is refused until the security
    /// officer clears it. Carries the recorded (non-secret) reason.
    #[error("tamper alarm ({0}): service refused until the security officer clears it (bulwark tamper clear)")]
    TamperAlarm(String),
    /// A stored record or the store generation failed its integrity check (tampering or
    /// rollback). Always contains the word "integrity".
    #[error("integrity check failed: {0}")]
    Integrity(&'static str),
    /// The store is older than one this host has already seen (rollback).
    #[error("integrity check failed: store rolled back to generation {found} (seen {seen})")]
    Rollback {
        /// Generation found in the store.
        found: u64,
        /// Highest generation seen before.
        seen: u64,
    },
    /// The schema is newer than this build understands.
    #[error("store schema version {0} is not supported by this build")]
    SchemaUnsupported(i64),
    /// Storage I/O failed (database busy, disk full...). Details go to the log.
    #[error("store error: {0}")]
    Store(String),

    // --- crypto ------------------------------------------------------------------------------
    /// The module is in the self-test error state and refuses all cryptographic service.
    #[error("module is in the error state after a failed self-test ({0}); cryptographic service refused")]
    ErrorState(String),
    /// A cryptographic primitive failed. Deliberately carries no cause.
    #[error("cryptographic operation failed")]
    CryptoFailed,
    /// The operation or algorithm is not supported by this build.
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    /// The caller's output buffer is too small.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// An internal invariant failed; details go to the log.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        tracing::warn!(error = %e, "store error");
        // A column whose type or size does not fit the schema was written by someone else.
        if matches!(
            e,
            rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::IntegralValueOutOfRange(..)
        ) {
            return Error::Integrity("a stored record has a malformed column");
        }
        // Only the SQLite error class goes to the caller, never a statement or a value.
        let msg = match &e {
            rusqlite::Error::SqliteFailure(f, _) => format!("{:?}", f.code),
            rusqlite::Error::QueryReturnedNoRows => "record missing".to_owned(),
            _ => "database error".to_owned(),
        };
        Error::Store(msg)
    }
}

impl From<aws_lc_rs::error::Unspecified> for Error {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        Error::CryptoFailed
    }
}

impl From<aws_lc_rs::error::KeyRejected> for Error {
    fn from(_: aws_lc_rs::error::KeyRejected) -> Self {
        Error::KeyInvalid
    }
}
