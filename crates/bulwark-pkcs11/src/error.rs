//! The PKCS#11 layer's error type and the one place where errors become `CK_RV` values.
//!
//! Core errors arrive as [`Error::Core`] and are mapped 1:1 onto the spec's codes in
//! [`Error::rv`]; the other variants are conditions only this layer can see (session state,
//! operation state, argument checks at the C boundary). No variant carries secret data.

use bulwark_core::Error as CoreError;
use cryptoki_sys as ck;
use cryptoki_sys::CK_RV;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong at the PKCS#11 layer.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An error from the core (token, templates, crypto).
    Core(CoreError),
    /// `CKR_CRYPTOKI_NOT_INITIALIZED`.
    NotInitialized,
    /// `CKR_CRYPTOKI_ALREADY_INITIALIZED`.
    AlreadyInitialized,
    /// `CKR_ARGUMENTS_BAD`: NULL pointer, impossible length, misaligned array.
    ArgumentsBad,
    /// `CKR_SLOT_ID_INVALID`.
    SlotIdInvalid,
    /// `CKR_TOKEN_NOT_RECOGNIZED`: the slot's store does not exist yet (not initialized).
    TokenNotRecognized,
    /// `CKR_SESSION_HANDLE_INVALID`.
    SessionHandleInvalid,
    /// `CKR_SESSION_READ_ONLY`.
    SessionReadOnly,
    /// `CKR_SESSION_EXISTS`.
    SessionExists,
    /// `CKR_SESSION_PARALLEL_NOT_SUPPORTED`.
    SessionParallelNotSupported,
    /// `CKR_SESSION_READ_ONLY_EXISTS`.
    SessionReadOnlyExists,
    /// `CKR_SESSION_READ_WRITE_SO_EXISTS`.
    SessionReadWriteSoExists,
    /// `CKR_USER_TYPE_INVALID`.
    UserTypeInvalid,
    /// `CKR_USER_NOT_LOGGED_IN` (raised by this layer, e.g. a missing context-specific login).
    UserNotLoggedIn,
    /// `CKR_OPERATION_ACTIVE`.
    OperationActive,
    /// `CKR_OPERATION_NOT_INITIALIZED`.
    OperationNotInitialized,
    /// `CKR_KEY_HANDLE_INVALID`.
    KeyHandleInvalid,
    /// `CKR_WRAPPING_KEY_HANDLE_INVALID`.
    WrappingKeyHandleInvalid,
    /// `CKR_UNWRAPPING_KEY_HANDLE_INVALID`.
    UnwrappingKeyHandleInvalid,
    /// `CKR_BUFFER_TOO_SMALL`; carries the length the caller needs.
    BufferTooSmall(usize),
    /// `CKR_MECHANISM_INVALID`.
    MechanismInvalid,
    /// `CKR_MECHANISM_PARAM_INVALID`.
    MechanismParamInvalid,
    /// `CKR_FUNCTION_NOT_SUPPORTED`.
    FunctionNotSupported,
    /// `CKR_RANDOM_SEED_NOT_SUPPORTED`.
    RandomSeedNotSupported,
    /// `CKR_FUNCTION_NOT_PARALLEL` (legacy `C_GetFunctionStatus` / `C_CancelFunction`).
    FunctionNotParallel,
    /// `CKR_PIN_LEN_RANGE` raised before the core sees the PIN.
    PinLenRange,
    /// `CKR_KEY_INDIGESTIBLE`.
    KeyIndigestible,
    /// `CKR_STATE_UNSAVEABLE` (`C_GetOperationState` with an operation active).
    StateUnsaveable,
    /// `CKR_SAVED_STATE_INVALID` (`C_SetOperationState`).
    SavedStateInvalid,
    /// `CKR_GENERAL_ERROR`: configuration or internal failure (detail goes to the log).
    General(&'static str),
}

impl From<CoreError> for Error {
    fn from(e: CoreError) -> Self {
        Error::Core(e)
    }
}

impl Error {
    /// The `CK_RV` for this error. This is the only place errors become return codes.
    pub fn rv(&self) -> CK_RV {
        match self {
            Error::Core(e) => core_rv(e),
            Error::NotInitialized => ck::CKR_CRYPTOKI_NOT_INITIALIZED,
            Error::AlreadyInitialized => ck::CKR_CRYPTOKI_ALREADY_INITIALIZED,
            Error::ArgumentsBad => ck::CKR_ARGUMENTS_BAD,
            Error::SlotIdInvalid => ck::CKR_SLOT_ID_INVALID,
            Error::TokenNotRecognized => ck::CKR_TOKEN_NOT_RECOGNIZED,
            Error::SessionHandleInvalid => ck::CKR_SESSION_HANDLE_INVALID,
            Error::SessionReadOnly => ck::CKR_SESSION_READ_ONLY,
            Error::SessionExists => ck::CKR_SESSION_EXISTS,
            Error::SessionParallelNotSupported => ck::CKR_SESSION_PARALLEL_NOT_SUPPORTED,
            Error::SessionReadOnlyExists => ck::CKR_SESSION_READ_ONLY_EXISTS,
            Error::SessionReadWriteSoExists => ck::CKR_SESSION_READ_WRITE_SO_EXISTS,
            Error::UserTypeInvalid => ck::CKR_USER_TYPE_INVALID,
            Error::UserNotLoggedIn => ck::CKR_USER_NOT_LOGGED_IN,
            Error::OperationActive => ck::CKR_OPERATION_ACTIVE,
            Error::OperationNotInitialized => ck::CKR_OPERATION_NOT_INITIALIZED,
            Error::KeyHandleInvalid => ck::CKR_KEY_HANDLE_INVALID,
            Error::WrappingKeyHandleInvalid => ck::CKR_WRAPPING_KEY_HANDLE_INVALID,
            Error::UnwrappingKeyHandleInvalid => ck::CKR_UNWRAPPING_KEY_HANDLE_INVALID,
            Error::BufferTooSmall(_) => ck::CKR_BUFFER_TOO_SMALL,
            Error::MechanismInvalid => ck::CKR_MECHANISM_INVALID,
            Error::MechanismParamInvalid => ck::CKR_MECHANISM_PARAM_INVALID,
            Error::FunctionNotSupported => ck::CKR_FUNCTION_NOT_SUPPORTED,
            Error::RandomSeedNotSupported => ck::CKR_RANDOM_SEED_NOT_SUPPORTED,
            Error::FunctionNotParallel => ck::CKR_FUNCTION_NOT_PARALLEL,
            Error::PinLenRange => ck::CKR_PIN_LEN_RANGE,
            Error::KeyIndigestible => ck::CKR_KEY_INDIGESTIBLE,
            Error::StateUnsaveable => ck::CKR_STATE_UNSAVEABLE,
            Error::SavedStateInvalid => ck::CKR_SAVED_STATE_INVALID,
            Error::General(_) => ck::CKR_GENERAL_ERROR,
        }
    }
}

/// Core error → `CK_RV`, one arm per variant.
// One arm per variant keeps the table reviewable against the core enum, even where two variants
// share a code.
#[allow(clippy::match_same_arms)]
fn core_rv(e: &CoreError) -> CK_RV {
    match e {
        CoreError::ArgumentsBad(_) => ck::CKR_ARGUMENTS_BAD,
        CoreError::AttributeTypeInvalid(_) => ck::CKR_ATTRIBUTE_TYPE_INVALID,
        CoreError::AttributeValueInvalid(_) => ck::CKR_ATTRIBUTE_VALUE_INVALID,
        CoreError::AttributeReadOnly(_) => ck::CKR_ATTRIBUTE_READ_ONLY,
        CoreError::AttributeSensitive(_) => ck::CKR_ATTRIBUTE_SENSITIVE,
        CoreError::TemplateIncomplete(_) => ck::CKR_TEMPLATE_INCOMPLETE,
        CoreError::TemplateInconsistent(_) => ck::CKR_TEMPLATE_INCONSISTENT,
        CoreError::MechanismInvalid(_) => ck::CKR_MECHANISM_INVALID,
        CoreError::MechanismParamInvalid(_) => ck::CKR_MECHANISM_PARAM_INVALID,
        CoreError::KeyTypeInconsistent => ck::CKR_KEY_TYPE_INCONSISTENT,
        CoreError::KeyFunctionNotPermitted(_) => ck::CKR_KEY_FUNCTION_NOT_PERMITTED,
        CoreError::KeyUnextractable(_) => ck::CKR_KEY_UNEXTRACTABLE,
        CoreError::KeySizeRange => ck::CKR_KEY_SIZE_RANGE,
        // Key bytes supplied by the caller (C_CreateObject CKA_VALUE) that are not a key.
        CoreError::KeyInvalid => ck::CKR_ATTRIBUTE_VALUE_INVALID,
        CoreError::ObjectHandleInvalid => ck::CKR_OBJECT_HANDLE_INVALID,
        CoreError::NotFound(_) => ck::CKR_OBJECT_HANDLE_INVALID,
        CoreError::Ambiguous(_) | CoreError::Exists(_) => ck::CKR_FUNCTION_FAILED,
        CoreError::DataLenRange => ck::CKR_DATA_LEN_RANGE,
        CoreError::EncryptedDataInvalid => ck::CKR_ENCRYPTED_DATA_INVALID,
        CoreError::EncryptedDataLenRange => ck::CKR_ENCRYPTED_DATA_LEN_RANGE,
        CoreError::WrappedKeyInvalid => ck::CKR_WRAPPED_KEY_INVALID,
        CoreError::SignatureInvalid => ck::CKR_SIGNATURE_INVALID,
        CoreError::SignatureLenRange => ck::CKR_SIGNATURE_LEN_RANGE,
        CoreError::ActionProhibited(_) => ck::CKR_ACTION_PROHIBITED,
        CoreError::PinIncorrect => ck::CKR_PIN_INCORRECT,
        CoreError::PinLocked => ck::CKR_PIN_LOCKED,
        CoreError::PinLenRange { .. } => ck::CKR_PIN_LEN_RANGE,
        CoreError::UserNotLoggedIn => ck::CKR_USER_NOT_LOGGED_IN,
        CoreError::UserAlreadyLoggedIn => ck::CKR_USER_ALREADY_LOGGED_IN,
        CoreError::AnotherUserLoggedIn => ck::CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
        CoreError::UserPinNotInitialized => ck::CKR_USER_PIN_NOT_INITIALIZED,
        CoreError::NotInitialized(_) | CoreError::SchemaUnsupported(_) | CoreError::Zeroized => {
            ck::CKR_TOKEN_NOT_RECOGNIZED
        }
        CoreError::AlreadyInitialized(_) => ck::CKR_FUNCTION_FAILED,
        // Tampering, rollback and storage faults: the device cannot be trusted or reached.
        CoreError::Integrity(_) | CoreError::Rollback { .. } | CoreError::Store(_) => {
            ck::CKR_DEVICE_ERROR
        }
        CoreError::ErrorState(_) | CoreError::Internal(_) => ck::CKR_GENERAL_ERROR,
        CoreError::CryptoFailed => ck::CKR_FUNCTION_FAILED,
        CoreError::NotSupported(_) => ck::CKR_FUNCTION_NOT_SUPPORTED,
        CoreError::BufferTooSmall => ck::CKR_BUFFER_TOO_SMALL,
        // `bulwark_core::Error` is `#[non_exhaustive]`, so a wildcard is required; a new variant
        // must get its own arm above (the core's error tests list every variant).
        _ => ck::CKR_GENERAL_ERROR,
    }
}
