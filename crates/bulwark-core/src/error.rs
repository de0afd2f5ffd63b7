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
    /// The key's usage policy refuses this use now: its use quota is spent or its rate limit
    /// reached (token/usepolicy.rs).
    #[error("key usage limit: {0}")]
    UsageLimit(&'static str),
    /// The key's usage policy requires fresh quorum approvals for each use; the message names
    /// the request the approvers must sign.
    #[error("quorum approval required: {0}")]
    UseApprovalRequired(String),

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

/// What kind of error, without its details: the one value every front door maps (to a
/// `CKR_*` code, a gRPC status code, a CLI exit), each in one exhaustive `match`, so that no
/// front door ever classifies an error by its message text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// [`Error::ArgumentsBad`].
    ArgumentsBad,
    /// [`Error::AttributeTypeInvalid`].
    AttributeTypeInvalid,
    /// [`Error::AttributeValueInvalid`].
    AttributeValueInvalid,
    /// [`Error::AttributeReadOnly`].
    AttributeReadOnly,
    /// [`Error::AttributeSensitive`].
    AttributeSensitive,
    /// [`Error::TemplateIncomplete`].
    TemplateIncomplete,
    /// [`Error::TemplateInconsistent`].
    TemplateInconsistent,
    /// [`Error::MechanismInvalid`].
    MechanismInvalid,
    /// [`Error::MechanismParamInvalid`].
    MechanismParamInvalid,
    /// [`Error::KeyTypeInconsistent`].
    KeyTypeInconsistent,
    /// [`Error::KeyFunctionNotPermitted`].
    KeyFunctionNotPermitted,
    /// [`Error::KeyUnextractable`].
    KeyUnextractable,
    /// [`Error::KeySizeRange`].
    KeySizeRange,
    /// [`Error::KeyInvalid`].
    KeyInvalid,
    /// [`Error::ObjectHandleInvalid`].
    ObjectHandleInvalid,
    /// [`Error::NotFound`].
    NotFound,
    /// [`Error::Ambiguous`].
    Ambiguous,
    /// [`Error::Exists`].
    Exists,
    /// [`Error::DataLenRange`].
    DataLenRange,
    /// [`Error::EncryptedDataInvalid`].
    EncryptedDataInvalid,
    /// [`Error::EncryptedDataLenRange`].
    EncryptedDataLenRange,
    /// [`Error::WrappedKeyInvalid`].
    WrappedKeyInvalid,
    /// [`Error::SignatureInvalid`].
    SignatureInvalid,
    /// [`Error::SignatureLenRange`].
    SignatureLenRange,
    /// [`Error::ActionProhibited`].
    ActionProhibited,
    /// [`Error::UsageLimit`].
    UsageLimit,
    /// [`Error::UseApprovalRequired`].
    UseApprovalRequired,
    /// [`Error::PinIncorrect`].
    PinIncorrect,
    /// [`Error::PinLocked`].
    PinLocked,
    /// [`Error::PinLenRange`].
    PinLenRange,
    /// [`Error::UserNotLoggedIn`].
    UserNotLoggedIn,
    /// [`Error::UserAlreadyLoggedIn`].
    UserAlreadyLoggedIn,
    /// [`Error::AnotherUserLoggedIn`].
    AnotherUserLoggedIn,
    /// [`Error::UserPinNotInitialized`].
    UserPinNotInitialized,
    /// [`Error::NotInitialized`].
    NotInitialized,
    /// [`Error::AlreadyInitialized`].
    AlreadyInitialized,
    /// [`Error::Zeroized`].
    Zeroized,
    /// [`Error::TamperAlarm`].
    TamperAlarm,
    /// [`Error::Integrity`].
    Integrity,
    /// [`Error::Rollback`].
    Rollback,
    /// [`Error::SchemaUnsupported`].
    SchemaUnsupported,
    /// [`Error::Store`].
    Store,
    /// [`Error::ErrorState`].
    ErrorState,
    /// [`Error::CryptoFailed`].
    CryptoFailed,
    /// [`Error::NotSupported`].
    NotSupported,
    /// [`Error::BufferTooSmall`].
    BufferTooSmall,
    /// [`Error::Internal`].
    Internal,
}

impl ErrorKind {
    /// Every kind, for tables and tests.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::ArgumentsBad,
        ErrorKind::AttributeTypeInvalid,
        ErrorKind::AttributeValueInvalid,
        ErrorKind::AttributeReadOnly,
        ErrorKind::AttributeSensitive,
        ErrorKind::TemplateIncomplete,
        ErrorKind::TemplateInconsistent,
        ErrorKind::MechanismInvalid,
        ErrorKind::MechanismParamInvalid,
        ErrorKind::KeyTypeInconsistent,
        ErrorKind::KeyFunctionNotPermitted,
        ErrorKind::KeyUnextractable,
        ErrorKind::KeySizeRange,
        ErrorKind::KeyInvalid,
        ErrorKind::ObjectHandleInvalid,
        ErrorKind::NotFound,
        ErrorKind::Ambiguous,
        ErrorKind::Exists,
        ErrorKind::DataLenRange,
        ErrorKind::EncryptedDataInvalid,
        ErrorKind::EncryptedDataLenRange,
        ErrorKind::WrappedKeyInvalid,
        ErrorKind::SignatureInvalid,
        ErrorKind::SignatureLenRange,
        ErrorKind::ActionProhibited,
        ErrorKind::UsageLimit,
        ErrorKind::UseApprovalRequired,
        ErrorKind::PinIncorrect,
        ErrorKind::PinLocked,
        ErrorKind::PinLenRange,
        ErrorKind::UserNotLoggedIn,
        ErrorKind::UserAlreadyLoggedIn,
        ErrorKind::AnotherUserLoggedIn,
        ErrorKind::UserPinNotInitialized,
        ErrorKind::NotInitialized,
        ErrorKind::AlreadyInitialized,
        ErrorKind::Zeroized,
        ErrorKind::TamperAlarm,
        ErrorKind::Integrity,
        ErrorKind::Rollback,
        ErrorKind::SchemaUnsupported,
        ErrorKind::Store,
        ErrorKind::ErrorState,
        ErrorKind::CryptoFailed,
        ErrorKind::NotSupported,
        ErrorKind::BufferTooSmall,
        ErrorKind::Internal,
    ];
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ArgumentsBad(..) => ErrorKind::ArgumentsBad,
            Error::AttributeTypeInvalid(..) => ErrorKind::AttributeTypeInvalid,
            Error::AttributeValueInvalid(..) => ErrorKind::AttributeValueInvalid,
            Error::AttributeReadOnly(..) => ErrorKind::AttributeReadOnly,
            Error::AttributeSensitive(..) => ErrorKind::AttributeSensitive,
            Error::TemplateIncomplete(..) => ErrorKind::TemplateIncomplete,
            Error::TemplateInconsistent(..) => ErrorKind::TemplateInconsistent,
            Error::MechanismInvalid(..) => ErrorKind::MechanismInvalid,
            Error::MechanismParamInvalid(..) => ErrorKind::MechanismParamInvalid,
            Error::KeyTypeInconsistent => ErrorKind::KeyTypeInconsistent,
            Error::KeyFunctionNotPermitted(..) => ErrorKind::KeyFunctionNotPermitted,
            Error::KeyUnextractable(..) => ErrorKind::KeyUnextractable,
            Error::KeySizeRange => ErrorKind::KeySizeRange,
            Error::KeyInvalid => ErrorKind::KeyInvalid,
            Error::ObjectHandleInvalid => ErrorKind::ObjectHandleInvalid,
            Error::NotFound(..) => ErrorKind::NotFound,
            Error::Ambiguous(..) => ErrorKind::Ambiguous,
            Error::Exists(..) => ErrorKind::Exists,
            Error::DataLenRange => ErrorKind::DataLenRange,
            Error::EncryptedDataInvalid => ErrorKind::EncryptedDataInvalid,
            Error::EncryptedDataLenRange => ErrorKind::EncryptedDataLenRange,
            Error::WrappedKeyInvalid => ErrorKind::WrappedKeyInvalid,
            Error::SignatureInvalid => ErrorKind::SignatureInvalid,
            Error::SignatureLenRange => ErrorKind::SignatureLenRange,
            Error::ActionProhibited(..) => ErrorKind::ActionProhibited,
            Error::UsageLimit(..) => ErrorKind::UsageLimit,
            Error::UseApprovalRequired(..) => ErrorKind::UseApprovalRequired,
            Error::PinIncorrect => ErrorKind::PinIncorrect,
            Error::PinLocked => ErrorKind::PinLocked,
            Error::PinLenRange { .. } => ErrorKind::PinLenRange,
            Error::UserNotLoggedIn => ErrorKind::UserNotLoggedIn,
            Error::UserAlreadyLoggedIn => ErrorKind::UserAlreadyLoggedIn,
            Error::AnotherUserLoggedIn => ErrorKind::AnotherUserLoggedIn,
            Error::UserPinNotInitialized => ErrorKind::UserPinNotInitialized,
            Error::NotInitialized(..) => ErrorKind::NotInitialized,
            Error::AlreadyInitialized(..) => ErrorKind::AlreadyInitialized,
            Error::Zeroized => ErrorKind::Zeroized,
            Error::TamperAlarm(..) => ErrorKind::TamperAlarm,
            Error::Integrity(..) => ErrorKind::Integrity,
            Error::Rollback { .. } => ErrorKind::Rollback,
            Error::SchemaUnsupported(..) => ErrorKind::SchemaUnsupported,
            Error::Store(..) => ErrorKind::Store,
            Error::ErrorState(..) => ErrorKind::ErrorState,
            Error::CryptoFailed => ErrorKind::CryptoFailed,
            Error::NotSupported(..) => ErrorKind::NotSupported,
            Error::BufferTooSmall => ErrorKind::BufferTooSmall,
            Error::Internal(..) => ErrorKind::Internal,
        }
    }
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
