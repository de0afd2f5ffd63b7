//! Bulwark core: the part of the HSM that every front door (PKCS#11, gRPC, CLI) calls.
//!
//! It owns the PKCS#11-style object model, the crypto engine on aws-lc-rs, the key hierarchy
//! (master key, keyslots, per-object sealing), the SQLite store and the self-tests. It does no
//! network I/O and knows nothing of C, gRPC or tokio.

// Denied (not forbidden): one module, `crypto/evp_rsa.rs`, is a small audited shim over
// aws-lc-sys for the RSA mechanisms aws-lc-rs's safe API lacks, and says
// `#![allow(unsafe_code)]`; every other module fails to compile with `unsafe`.
#![deny(unsafe_code)]

pub mod attr;
pub mod audit;
pub mod crypto;
pub mod destruction;
pub mod display;
pub mod envelope;
pub mod error;
pub mod fsutil;
pub mod hierarchy;
pub mod history;
pub mod hsm;
pub mod kernel;
pub mod lifecycle;
pub mod limits;
mod mark;
pub mod mechanism;
pub mod names;
pub mod rollback;
pub mod seal;
pub mod secret;
pub mod selftest;
pub mod store;
pub mod stream;
pub mod template;
pub mod token;

pub use error::{Error, ErrorKind, Result};
pub use token::{Token, UserType};
