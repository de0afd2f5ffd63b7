//! bulwarkd: the Bulwark network HSM (DESIGN.md §1) — the one process that holds the unsealed
//! master key. gRPC over mutually authenticated TLS 1.3, the `quorum` unlock policy (sealed at
//! start, M-of-N unseal shares), password users with roles, and a bounded crypto worker pool.
//!
//! The library exists so that tests (and the CLI's tests) can run the real server in-process;
//! the `bulwarkd` binary is a thin wrapper around it.

#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod cluster;
pub mod cluster_audit;
pub mod cluster_open;
pub mod config;
pub mod dev;
pub mod dev_cluster;
pub mod error;
mod keys;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod p11;
pub mod pki;
pub mod recover;
pub mod server;
pub mod service;
pub mod state;
pub mod store;
pub mod tls;
pub mod users;
