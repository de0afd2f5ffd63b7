//! Bulwark's gRPC protocol: the generated prost/tonic types for `proto/bulwark/v1/hsm.proto`, and
//! the one place where core errors become gRPC statuses (and back).
//!
//! This crate holds no key material and makes no network connection. Status messages it builds
//! are safe to show a remote caller: they never carry key bytes, plaintext or passwords, and
//! internal faults are reduced to a generic reason (details belong in the daemon's log).

#![forbid(unsafe_code)]
#![allow(missing_docs, unreachable_pub)] // generated code below has neither docs nor narrow visibility

/// Generated types of package `bulwark.v1`.
pub mod v1 {
    #![allow(clippy::pedantic, missing_docs)]
    tonic::include_proto!("bulwark.v1");
}

/// Generated types of package `bulwark.bootstrap.v1`: initializing a daemon that has no store
/// yet (`proto/bulwark/bootstrap/v1/bootstrap.proto`).
pub mod bootstrap {
    /// Version 1.
    pub mod v1 {
        #![allow(clippy::pedantic, missing_docs)]
        tonic::include_proto!("bulwark.bootstrap.v1");
    }
}

pub mod p11;
mod status;

pub use status::{
    code_of, quorum_required, reason, sealed, status_from_core, with_reason, Reason, REASON_KEY,
    SEALED,
};

/// The canonical name of a role given by its name or alias (`so`, `co`, `cu`, `user`), as the
/// daemon records it and as approval digests carry it.
pub fn canonical_role(s: &str) -> Option<&'static str> {
    Some(match s {
        "security-officer" | "so" => "security-officer",
        "crypto-officer" | "co" => "crypto-officer",
        "crypto-user" | "cu" | "user" => "crypto-user",
        "auditor" => "auditor",
        _ => return None,
    })
}

/// The digest M approvers sign to approve a quorum-gated request: SHA-256 over the domain
/// string, the store id (hex), the operation name, each field (length-prefixed) and the
/// not-after time (Unix seconds). The HSM and the approvers' tools compute it the same way.
pub fn approval_digest(
    store_id: &str,
    op: &str,
    fields: &[&str],
    not_after: u64,
) -> bulwark_core::Result<[u8; 32]> {
    let mut m = Vec::new();
    let mut put = |b: &[u8]| {
        m.extend_from_slice(&(b.len() as u64).to_be_bytes());
        m.extend_from_slice(b);
    };
    put(b"bulwark approval v1");
    put(store_id.as_bytes());
    put(op.as_bytes());
    for f in fields {
        put(f.as_bytes());
    }
    put(&not_after.to_be_bytes());
    let d = bulwark_core::crypto::Provider::get()?
        .digest(bulwark_core::mechanism::DigestAlg::Sha256, &m)?;
    d.try_into().map_err(|_| bulwark_core::Error::Internal("digest length"))
}

/// The metadata entry in which any key operation carries per-use quorum approvals (an
/// encoded [`v1::UseApprovals`]).
pub const USE_APPROVALS_METADATA: &str = "bulwark-use-approvals-bin";

/// Encodes per-use approvals for [`USE_APPROVALS_METADATA`].
pub fn encode_use_approvals(a: &v1::UseApprovals) -> Vec<u8> {
    prost::Message::encode_to_vec(a)
}

/// Decodes per-use approvals from [`USE_APPROVALS_METADATA`]; `None` when malformed.
pub fn decode_use_approvals(b: &[u8]) -> Option<v1::UseApprovals> {
    <v1::UseApprovals as prost::Message>::decode(b).ok()
}
