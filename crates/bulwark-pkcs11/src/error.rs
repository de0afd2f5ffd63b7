//! The PKCS#11 layer's error type and the one place where errors become `CK_RV` values.
//!
//! Core errors arrive as [`Error::Core`] and are mapped 1:1 onto the spec's codes in
//! [`Error::rv`]; the other variants are conditions only this layer can see (session state,
//! operation state, argument checks at the C boundary). No variant carries secret data.

use bulwark_core::{Error as CoreError, ErrorKind};
use cryptoki_sys as ck;
use cryptoki_sys::CK_RV;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong at the PKCS#11 layer.
#[derive(Debug)]
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

/// Core error → `CK_RV`: the one table, one arm per [`ErrorKind`] (exhaustive: a new kind
/// does not compile until it is mapped here).
fn core_rv(e: &CoreError) -> CK_RV {
    kind_rv(e.kind())
}

/// [`core_rv`] by kind.
// One arm per kind keeps the table reviewable against the core enum, even where two kinds
// share a code.
#[allow(clippy::match_same_arms)]
pub fn kind_rv(k: ErrorKind) -> CK_RV {
    match k {
        ErrorKind::ArgumentsBad => ck::CKR_ARGUMENTS_BAD,
        ErrorKind::AttributeTypeInvalid => ck::CKR_ATTRIBUTE_TYPE_INVALID,
        ErrorKind::AttributeValueInvalid => ck::CKR_ATTRIBUTE_VALUE_INVALID,
        ErrorKind::AttributeReadOnly => ck::CKR_ATTRIBUTE_READ_ONLY,
        ErrorKind::AttributeSensitive => ck::CKR_ATTRIBUTE_SENSITIVE,
        ErrorKind::TemplateIncomplete => ck::CKR_TEMPLATE_INCOMPLETE,
        ErrorKind::TemplateInconsistent => ck::CKR_TEMPLATE_INCONSISTENT,
        ErrorKind::MechanismInvalid => ck::CKR_MECHANISM_INVALID,
        ErrorKind::MechanismParamInvalid => ck::CKR_MECHANISM_PARAM_INVALID,
        ErrorKind::KeyTypeInconsistent => ck::CKR_KEY_TYPE_INCONSISTENT,
        ErrorKind::KeyFunctionNotPermitted => ck::CKR_KEY_FUNCTION_NOT_PERMITTED,
        ErrorKind::KeyUnextractable => ck::CKR_KEY_UNEXTRACTABLE,
        ErrorKind::KeySizeRange => ck::CKR_KEY_SIZE_RANGE,
        // Key bytes supplied by the caller (C_CreateObject CKA_VALUE) that are not a key.
        ErrorKind::KeyInvalid => ck::CKR_ATTRIBUTE_VALUE_INVALID,
        ErrorKind::ObjectHandleInvalid => ck::CKR_OBJECT_HANDLE_INVALID,
        ErrorKind::NotFound => ck::CKR_OBJECT_HANDLE_INVALID,
        ErrorKind::Ambiguous | ErrorKind::Exists => ck::CKR_FUNCTION_FAILED,
        ErrorKind::DataLenRange => ck::CKR_DATA_LEN_RANGE,
        ErrorKind::EncryptedDataInvalid => ck::CKR_ENCRYPTED_DATA_INVALID,
        ErrorKind::EncryptedDataLenRange => ck::CKR_ENCRYPTED_DATA_LEN_RANGE,
        ErrorKind::WrappedKeyInvalid => ck::CKR_WRAPPED_KEY_INVALID,
        ErrorKind::SignatureInvalid => ck::CKR_SIGNATURE_INVALID,
        ErrorKind::SignatureLenRange => ck::CKR_SIGNATURE_LEN_RANGE,
        ErrorKind::ActionProhibited => ck::CKR_ACTION_PROHIBITED,
        // A key's usage policy (quota, rate, per-use quorum): PKCS#11 has no finer code.
        ErrorKind::UsageLimit | ErrorKind::UseApprovalRequired => {
            ck::CKR_KEY_FUNCTION_NOT_PERMITTED
        }
        ErrorKind::PinIncorrect => ck::CKR_PIN_INCORRECT,
        ErrorKind::PinLocked => ck::CKR_PIN_LOCKED,
        ErrorKind::PinLenRange => ck::CKR_PIN_LEN_RANGE,
        ErrorKind::UserNotLoggedIn => ck::CKR_USER_NOT_LOGGED_IN,
        ErrorKind::UserAlreadyLoggedIn => ck::CKR_USER_ALREADY_LOGGED_IN,
        ErrorKind::AnotherUserLoggedIn => ck::CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
        ErrorKind::UserPinNotInitialized => ck::CKR_USER_PIN_NOT_INITIALIZED,
        ErrorKind::NotInitialized | ErrorKind::SchemaUnsupported | ErrorKind::Zeroized => {
            ck::CKR_TOKEN_NOT_RECOGNIZED
        }
        ErrorKind::AlreadyInitialized => ck::CKR_FUNCTION_FAILED,
        // Tampering (a raised alarm too), rollback and storage faults: the device cannot be
        // trusted or reached (docs/pkcs11.md).
        ErrorKind::TamperAlarm | ErrorKind::Integrity | ErrorKind::Rollback | ErrorKind::Store => {
            ck::CKR_DEVICE_ERROR
        }
        ErrorKind::ErrorState | ErrorKind::Internal => ck::CKR_GENERAL_ERROR,
        ErrorKind::CryptoFailed => ck::CKR_FUNCTION_FAILED,
        ErrorKind::NotSupported => ck::CKR_FUNCTION_NOT_SUPPORTED,
        ErrorKind::BufferTooSmall => ck::CKR_BUFFER_TOO_SMALL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tamper_alarm_is_a_device_error() {
        let e = Error::Core(CoreError::TamperAlarm("SIGUSR1".into()));
        assert_eq!(e.rv(), ck::CKR_DEVICE_ERROR);
        assert_eq!(Error::Core(CoreError::Integrity("x")).rv(), ck::CKR_DEVICE_ERROR);
    }

    #[test]
    fn every_kind_has_a_specific_code() {
        for k in ErrorKind::ALL {
            let rv = kind_rv(*k);
            assert_ne!(rv, ck::CKR_OK, "{k:?}");
            // Only internal faults and the self-test error state are "general" errors.
            if rv == ck::CKR_GENERAL_ERROR {
                assert!(matches!(k, ErrorKind::ErrorState | ErrorKind::Internal), "{k:?}");
            }
        }
    }
}
