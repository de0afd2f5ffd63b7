//! Core `Error` → gRPC `Status`, in one match.
//!
//! Caller mistakes map to INVALID_ARGUMENT / NOT_FOUND / ALREADY_EXISTS / PERMISSION_DENIED,
//! authentication failures to UNAUTHENTICATED, state problems to FAILED_PRECONDITION, integrity
//! failures to DATA_LOSS (the word "integrity" is kept so operators recognise tampering), and
//! internal faults to INTERNAL with a generic message. Failed decryptions, unwraps and signature
//! checks stay opaque (no oracle).

use bulwark_core::Error;
use tonic::{Code, Status};

/// The message of the FAILED_PRECONDITION status every key operation gets while sealed.
pub const SEALED: &str = "sealed";

/// The gRPC status for a core error. The message is safe to send to the caller.
// Arms with equal bodies stay apart: each group is a different reason (caller mistake, opaque
// crypto failure, ...) that may get its own code later.
#[allow(clippy::match_same_arms)]
pub fn status_from_core(e: &Error) -> Status {
    let (code, msg): (Code, String) = match e {
        Error::ArgumentsBad(_)
        | Error::AttributeTypeInvalid(_)
        | Error::AttributeValueInvalid(_)
        | Error::AttributeReadOnly(_)
        | Error::TemplateIncomplete(_)
        | Error::TemplateInconsistent(_)
        | Error::MechanismInvalid(_)
        | Error::MechanismParamInvalid(_)
        | Error::KeyTypeInconsistent
        | Error::KeySizeRange
        | Error::KeyInvalid
        | Error::DataLenRange
        | Error::EncryptedDataLenRange
        | Error::SignatureLenRange
        | Error::PinLenRange { .. }
        | Error::BufferTooSmall => (Code::InvalidArgument, e.to_string()),
        // Opaque on purpose: no cause, no oracle.
        Error::EncryptedDataInvalid | Error::WrappedKeyInvalid | Error::CryptoFailed => {
            (Code::InvalidArgument, e.to_string())
        }
        Error::SignatureInvalid => (Code::InvalidArgument, e.to_string()),
        Error::AttributeSensitive(_)
        | Error::KeyFunctionNotPermitted(_)
        | Error::KeyUnextractable(_)
        | Error::ActionProhibited(_) => (Code::PermissionDenied, e.to_string()),
        Error::ObjectHandleInvalid | Error::NotFound(_) => (Code::NotFound, e.to_string()),
        Error::Ambiguous(_) => (Code::FailedPrecondition, e.to_string()),
        Error::Exists(_) | Error::AlreadyInitialized(_) => (Code::AlreadyExists, e.to_string()),
        Error::PinIncorrect => (Code::Unauthenticated, "authentication failed".into()),
        Error::PinLocked => (Code::PermissionDenied, e.to_string()),
        Error::UserNotLoggedIn | Error::UserPinNotInitialized => {
            (Code::Unauthenticated, e.to_string())
        }
        Error::UserAlreadyLoggedIn | Error::AnotherUserLoggedIn => {
            (Code::FailedPrecondition, e.to_string())
        }
        Error::NotInitialized(_) => (Code::FailedPrecondition, "store not initialized".into()),
        Error::Zeroized | Error::ErrorState(_) | Error::TamperAlarm(_) => {
            (Code::FailedPrecondition, e.to_string())
        }
        Error::Integrity(_) | Error::Rollback { .. } => (Code::DataLoss, e.to_string()),
        Error::SchemaUnsupported(_) => (Code::FailedPrecondition, e.to_string()),
        Error::NotSupported(_) => (Code::Unimplemented, e.to_string()),
        Error::Store(_) => (Code::Unavailable, "store unavailable".into()),
        Error::Internal(_) => (Code::Internal, "internal error".into()),
        // `Error` is non_exhaustive: a variant added later is an internal error until mapped.
        _ => (Code::Internal, "internal error".into()),
    };
    Status::new(code, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precise_codes_and_safe_messages() {
        assert_eq!(status_from_core(&Error::PinIncorrect).code(), Code::Unauthenticated);
        assert_eq!(status_from_core(&Error::NotFound("k".into())).code(), Code::NotFound);
        let s = status_from_core(&Error::Integrity("object record does not authenticate"));
        assert_eq!(s.code(), Code::DataLoss);
        assert!(s.message().contains("integrity"));
        let s = status_from_core(&Error::Store("SQLITE_BUSY at /secret/path".into()));
        assert_eq!(s.code(), Code::Unavailable);
        assert!(!s.message().contains("/secret"));
        assert_eq!(status_from_core(&Error::Internal("x")).message(), "internal error");
        assert_eq!(
            status_from_core(&Error::CryptoFailed).message(),
            "cryptographic operation failed"
        );
    }
}
