//! The daemon's own error type: what can stop it from starting or serving (configuration,
//! files, listeners, TLS material, the store, the user database), each a variant with typed
//! fields, so that a caller decides by variant or by the core error's kind, never by reading
//! a message. Requests are answered with gRPC statuses (bulwark-proto maps core errors);
//! this type is for start-up, set-up and the serving tasks.

use std::path::{Path, PathBuf};

/// Why the daemon cannot start or go on serving.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A configuration value is missing or invalid (the message names it).
    #[error("{0}")]
    Config(String),
    /// A file could not be read, written or created.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        /// What was being done (`read`, `write`, `create`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error (its kind and OS message; never file contents).
        source: std::io::Error,
    },
    /// A listener could not be bound or set up.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address or socket path.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TLS certificates or keys are unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// The store refused (missing, integrity, rollback, zeroized...): see its kind.
    #[error("store: {0}")]
    Store(#[from] bulwark_core::Error),
    /// A share was refused while unsealing (dev mode unseals with its own shares).
    #[error("unseal: {0}")]
    Unseal(#[from] bulwark_core::seal::UnsealError),
    /// The user database is unusable.
    #[error("user database: {0}")]
    Users(String),
    /// Setting up a new HSM (shares, certificates, dev-mode files) failed.
    #[error("{0}")]
    Setup(String),
    /// A server task ended with an error.
    #[error("server: {0}")]
    Server(String),
}

impl DaemonError {
    /// A file error.
    pub fn file(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        DaemonError::File { action, path: path.to_owned(), source }
    }

    /// The process exit code: 78 (`EX_CONFIG`) for configuration mistakes the operator fixes
    /// in the configuration, 2 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_) => 78,
            DaemonError::File { .. }
            | DaemonError::Listen { .. }
            | DaemonError::Tls(_)
            | DaemonError::Store(_)
            | DaemonError::Unseal(_)
            | DaemonError::Users(_)
            | DaemonError::Setup(_)
            | DaemonError::Server(_) => 2,
        }
    }
}

/// Result alias of the daemon's start-up and serving functions.
pub type Result<T, E = DaemonError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_are_typed_and_messages_name_the_cause() {
        let e = DaemonError::file(
            "read",
            Path::new("/etc/bulwark/x.pem"),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert!(e.to_string().contains("/etc/bulwark/x.pem"), "{e}");
        let s = DaemonError::from(bulwark_core::Error::Integrity("store set"));
        assert!(
            matches!(&s, DaemonError::Store(c) if c.kind() == bulwark_core::ErrorKind::Integrity)
        );
        assert!(s.to_string().contains("integrity"));
        assert_eq!(DaemonError::Config("x".into()).exit_code(), 78);
        assert_eq!(s.exit_code(), 2);
    }
}
