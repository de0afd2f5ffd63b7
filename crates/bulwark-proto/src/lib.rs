//! Bulwark's gRPC protocol: the generated prost/tonic types for `proto/bulwark/v1/hsm.proto`, and
//! the one place where core errors become gRPC statuses (and back).
//!
//! This crate holds no key material and makes no network connection. Status messages it builds
//! are safe to show a remote caller: they never carry key bytes, plaintext or passwords, and
//! internal faults are reduced to a generic reason (details belong in the daemon's log).

#![allow(missing_docs, unreachable_pub)] // generated code below has neither docs nor narrow visibility

/// Generated types of package `bulwark.v1`.
pub mod v1 {
    #![allow(clippy::pedantic, missing_docs)]
    tonic::include_proto!("bulwark.v1");
}

mod status;

pub use status::{status_from_core, SEALED};
