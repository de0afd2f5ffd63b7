//! Core `Error` → gRPC `Status`, in one match.
//!
//! Caller mistakes map to INVALID_ARGUMENT / NOT_FOUND / ALREADY_EXISTS / PERMISSION_DENIED,
//! authentication failures to UNAUTHENTICATED, state problems to FAILED_PRECONDITION, integrity
//! failures to DATA_LOSS (the word "integrity" is kept so operators recognise tampering), and
//! internal faults to INTERNAL with a generic message. Failed decryptions, unwraps and signature
//! checks stay opaque (no oracle).

use bulwark_core::{Error, ErrorKind};
use tonic::{Code, Status};

/// The message of the FAILED_PRECONDITION status every key operation gets while sealed.
pub const SEALED: &str = "sealed";

/// The metadata key of a status's [`Reason`].
pub const REASON_KEY: &str = "bulwark-reason";

/// Why a call was refused, where a client acts on it: carried in the status metadata
/// ([`REASON_KEY`]), so that no client classifies a status by its message text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The HSM is sealed (or was sealed during the call): unseal it, then log in again.
    Sealed,
    /// The operation needs quorum approvals (the message says which digest to sign).
    QuorumRequired,
    /// The daemon has no store yet: only the bootstrap service answers.
    NotInitialized,
}

impl Reason {
    fn name(self) -> &'static str {
        match self {
            Reason::Sealed => "sealed",
            Reason::QuorumRequired => "quorum-required",
            Reason::NotInitialized => "not-initialized",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        [Reason::Sealed, Reason::QuorumRequired, Reason::NotInitialized]
            .into_iter()
            .find(|r| r.name() == s)
    }
}

/// `st` with `reason` attached.
pub fn with_reason(mut st: Status, reason: Reason) -> Status {
    st.metadata_mut()
        .insert(REASON_KEY, tonic::metadata::MetadataValue::from_static(reason.name()));
    st
}

/// The reason a status carries, if any.
pub fn reason(st: &Status) -> Option<Reason> {
    Reason::from_name(st.metadata().get(REASON_KEY)?.to_str().ok()?)
}

/// The FAILED_PRECONDITION status of a call refused because the HSM is sealed.
pub fn sealed() -> Status {
    with_reason(Status::failed_precondition(SEALED), Reason::Sealed)
}

/// The FAILED_PRECONDITION status of a call that needs quorum approvals; `message` says what
/// to sign.
pub fn quorum_required(message: impl Into<String>) -> Status {
    with_reason(Status::failed_precondition(message), Reason::QuorumRequired)
}

/// The gRPC status for a core error. The message is safe to send to the caller.
pub fn status_from_core(e: &Error) -> Status {
    let code = code_of(e.kind());
    if e.kind() == ErrorKind::UseApprovalRequired {
        return quorum_required(e.to_string());
    }
    let msg = match e.kind() {
        ErrorKind::PinIncorrect => "authentication failed".to_owned(),
        ErrorKind::NotInitialized => "store not initialized".to_owned(),
        ErrorKind::Store => "store unavailable".to_owned(),
        ErrorKind::Internal => "internal error".to_owned(),
        _ => e.to_string(),
    };
    Status::new(code, msg)
}

/// The gRPC code of each kind of core error: the one table, exhaustive (a new kind does not
/// compile until it is mapped here).
// Arms with equal bodies stay apart: each group is a different reason (caller mistake, opaque
// crypto failure, ...) that may get its own code later.
#[allow(clippy::match_same_arms)]
pub fn code_of(k: ErrorKind) -> Code {
    match k {
        ErrorKind::ArgumentsBad
        | ErrorKind::AttributeTypeInvalid
        | ErrorKind::AttributeValueInvalid
        | ErrorKind::AttributeReadOnly
        | ErrorKind::TemplateIncomplete
        | ErrorKind::TemplateInconsistent
        | ErrorKind::MechanismInvalid
        | ErrorKind::MechanismParamInvalid
        | ErrorKind::KeyTypeInconsistent
        | ErrorKind::KeySizeRange
        | ErrorKind::KeyInvalid
        | ErrorKind::DataLenRange
        | ErrorKind::EncryptedDataLenRange
        | ErrorKind::SignatureLenRange
        | ErrorKind::PinLenRange
        | ErrorKind::BufferTooSmall => Code::InvalidArgument,
        // Opaque on purpose: no cause, no oracle.
        ErrorKind::EncryptedDataInvalid
        | ErrorKind::WrappedKeyInvalid
        | ErrorKind::CryptoFailed => Code::InvalidArgument,
        ErrorKind::SignatureInvalid => Code::InvalidArgument,
        ErrorKind::AttributeSensitive
        | ErrorKind::KeyFunctionNotPermitted
        | ErrorKind::KeyUnextractable
        | ErrorKind::ActionProhibited => Code::PermissionDenied,
        ErrorKind::UsageLimit => Code::ResourceExhausted,
        ErrorKind::UseApprovalRequired => Code::FailedPrecondition,
        ErrorKind::ObjectHandleInvalid | ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Ambiguous => Code::FailedPrecondition,
        ErrorKind::Exists | ErrorKind::AlreadyInitialized => Code::AlreadyExists,
        ErrorKind::PinIncorrect => Code::Unauthenticated,
        ErrorKind::PinLocked => Code::PermissionDenied,
        ErrorKind::UserNotLoggedIn | ErrorKind::UserPinNotInitialized => Code::Unauthenticated,
        ErrorKind::UserAlreadyLoggedIn | ErrorKind::AnotherUserLoggedIn => Code::FailedPrecondition,
        ErrorKind::NotInitialized => Code::FailedPrecondition,
        ErrorKind::Zeroized | ErrorKind::ErrorState | ErrorKind::TamperAlarm => {
            Code::FailedPrecondition
        }
        ErrorKind::Integrity | ErrorKind::Rollback => Code::DataLoss,
        ErrorKind::SchemaUnsupported => Code::FailedPrecondition,
        ErrorKind::NotSupported => Code::Unimplemented,
        ErrorKind::Store => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_travel_in_metadata_not_in_the_message() {
        assert_eq!(reason(&sealed()), Some(Reason::Sealed));
        assert_eq!(reason(&quorum_required("sign this")), Some(Reason::QuorumRequired));
        // The same words without the marker are no reason.
        assert_eq!(reason(&Status::failed_precondition(SEALED)), None);
        let st = with_reason(Status::failed_precondition("x"), Reason::NotInitialized);
        assert_eq!(reason(&st), Some(Reason::NotInitialized));
    }

    #[test]
    fn every_kind_has_a_code() {
        for k in ErrorKind::ALL {
            let c = code_of(*k);
            assert!(!matches!(c, Code::Ok | Code::Unknown), "{k:?}");
            if c == Code::Internal {
                assert_eq!(*k, ErrorKind::Internal);
            }
        }
        let s = status_from_core(&Error::TamperAlarm("SIGUSR1".into()));
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().contains("tamper"));
    }

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
