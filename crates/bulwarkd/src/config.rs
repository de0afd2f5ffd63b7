//! Daemon configuration: a TOML file, then `BULWARKD_*` environment overrides.
//!
//! ```toml
//! listen = "127.0.0.1:7443"
//! store = "/var/lib/bulwark/store.db"
//! workers = 32             # worker pool size (default: 16 x cores, at least 32)
//! http_listen = "127.0.0.1:9464"   # optional: /health, /status, /metrics (plain HTTP)
//! unix_socket = "/run/bulwark/bulwarkd.sock"   # optional: local admin, no TLS, mode 0600
//! session_ttl_secs = 3600
//! [connections]            # per listener (gRPC TCP, unix socket, HTTP); all optional
//! max_connections = 1024   # more are closed as soon as they are accepted
//! handshake_timeout_secs = 10
//! header_timeout_secs = 10 # first bytes after the handshake; HTTP/1 request headers
//! idle_timeout_secs = 300  # nothing received for this long: closed (gRPC clients are pinged)
//! [tls]
//! ca = "/etc/bulwark/pki/ca.pem"          # client certificates must chain to this CA
//! cert = "/etc/bulwark/pki/server.pem"
//! key = "/etc/bulwark/pki/server-key.pem"
//! ```
//! Cluster mode (docs/cluster.md): `store = "postgresql://bulwark@db1:5432,db2:5432/bulwark?target_session_attrs=read-write"`
//! and a `[cluster]` section (`node_id`, `data_dir`, `endpoint`, `lease_ms`, `password_file`,
//! `ca`, `pool_size`); the password comes from `password_file` or `BULWARKD_PG_PASSWORD`.
//!
//! Overrides: `BULWARKD_LISTEN`, `BULWARKD_HTTP_LISTEN`, `BULWARKD_UNIX_SOCKET`, `BULWARKD_STORE`, `BULWARKD_USERS`, `BULWARKD_WORKERS`,
//! `BULWARKD_SESSION_TTL_SECS`, `BULWARKD_TLS_CA`, `BULWARKD_TLS_CERT`, `BULWARKD_TLS_KEY`,
//! `BULWARKD_MAX_CONNECTIONS`, `BULWARKD_HANDSHAKE_TIMEOUT_SECS`, `BULWARKD_HEADER_TIMEOUT_SECS`,
//! `BULWARKD_IDLE_TIMEOUT_SECS` (the last four also in dev mode).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::DaemonError;
pub use crate::listen::ConnectionLimits;

/// TLS files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TlsConfig {
    /// CA certificate(s) that client certificates must chain to.
    pub ca: PathBuf,
    /// Server certificate chain.
    pub cert: PathBuf,
    /// Server private key.
    pub key: PathBuf,
}

/// One quorum approver: a name and an Ed25519 public key (raw 32 bytes, hex).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Approver {
    /// Approver name, as it appears in requests and audit records.
    pub name: String,
    /// Raw Ed25519 public key, hex.
    pub public_key: String,
}

/// Quorum approvals for user changes: `threshold` of `approvers` must sign each request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApprovalsConfig {
    /// Distinct approvals needed.
    pub threshold: usize,
    /// Who may approve.
    pub approvers: Vec<Approver>,
}

/// Cluster mode: this node, on a PostgreSQL store (`store = "postgres://..."`; docs/cluster.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// This node's id (unique in the cluster; names its lease row).
    pub node_id: String,
    /// Local directory of this node: its audit log and its anti-rollback watermark. Never
    /// shared with another node.
    pub data_dir: PathBuf,
    /// The endpoint clients reach this node at (shown by `bulwark cluster status`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// Lease length: a node that has not renewed for this long is out (and stops serving a
    /// little before). Revocations wait at most about this long for a node that stopped.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// A file holding the database password (first line); `BULWARKD_PG_PASSWORD` overrides.
    /// Never on a command line or in the URL of a file others can read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) the database server's certificate must chain to: TLS to the
    /// database is then required. Without it only Unix sockets and loopback are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Most database connections of this node (default 8).
    #[serde(default = "default_pool")]
    pub pool_size: usize,
}

fn default_lease_ms() -> u64 {
    5000
}

fn default_pool() -> usize {
    8
}

/// Where the store is.
#[derive(Clone, Copy, Debug)]
pub enum StoreLocation<'a> {
    /// A SQLite file.
    File(&'a Path),
    /// A PostgreSQL database (libpq-style URL or key/value string).
    Postgres(&'a str),
}

/// The daemon configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    /// TCP listen address (mTLS).
    pub listen: SocketAddr,
    /// Store file (quorum policy).
    pub store: PathBuf,
    /// The user file of older daemons (users now live in the store): only named to warn that
    /// it is no longer read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<PathBuf>,
    /// Worker pool size (0 = 16 per core, at least 32).
    #[serde(default)]
    pub workers: usize,
    /// Unix-socket listener for local administration (no TLS; the socket is created 0600, so
    /// only the daemon's own user can connect). None when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_socket: Option<PathBuf>,
    /// Plain-HTTP listener for `/health`, `/status`, `/metrics` (none when absent). No
    /// secrets are served there; keep it on loopback or a management network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<SocketAddr>,
    /// Quorum approvals for creating and deleting users (none when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<ApprovalsConfig>,
    /// Session lifetime.
    #[serde(default = "default_ttl")]
    pub session_ttl_secs: u64,
    /// Consecutive failed logins (password, certificate or second factor) that lock a user
    /// until the security officer unlocks it (at least 1).
    #[serde(default = "default_max_login_failures")]
    pub max_login_failures: u32,
    /// TLS files.
    pub tls: TlsConfig,
    /// Connection limits and deadlines of every listener (`[connections]`).
    #[serde(default)]
    pub connections: ConnectionLimits,
    /// Cluster mode (`[cluster]`), required with a PostgreSQL store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

fn default_ttl() -> u64 {
    3600
}

fn default_max_login_failures() -> u32 {
    crate::users::MAX_LOGIN_FAILURES
}

impl Config {
    /// Reads `path` and applies environment overrides.
    pub fn load(path: &Path) -> Result<Self, DaemonError> {
        let text = std::fs::read_to_string(path).map_err(|e| DaemonError::file("read", path, e))?;
        let mut c: Config = toml::from_str(&text)
            .map_err(|e| DaemonError::Config(format!("{}: {e}", path.display())))?;
        c.apply_env()?;
        Ok(c)
    }

    /// Applies `BULWARKD_*` overrides.
    pub fn apply_env(&mut self) -> Result<(), DaemonError> {
        self.apply_env_values().map_err(DaemonError::Config)?;
        self.connections.apply_env()
    }

    fn apply_env_values(&mut self) -> Result<(), String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(v) = var("BULWARKD_LISTEN") {
            self.listen = v.parse().map_err(|_| format!("BULWARKD_LISTEN: bad address {v:?}"))?;
        }
        if let Some(v) = var("BULWARKD_HTTP_LISTEN") {
            self.http_listen =
                Some(v.parse().map_err(|_| format!("BULWARKD_HTTP_LISTEN: bad address {v:?}"))?);
        }
        if let Some(v) = var("BULWARKD_UNIX_SOCKET") {
            self.unix_socket = Some(v.into());
        }
        if let Some(v) = var("BULWARKD_STORE") {
            self.store = v.into();
        }
        if let Some(v) = var("BULWARKD_USERS") {
            self.users = Some(v.into());
        }
        if let Some(v) = var("BULWARKD_WORKERS") {
            self.workers = v.parse().map_err(|_| "BULWARKD_WORKERS: not a number".to_owned())?;
        }
        if let Some(v) = var("BULWARKD_SESSION_TTL_SECS") {
            self.session_ttl_secs =
                v.parse().map_err(|_| "BULWARKD_SESSION_TTL_SECS: not a number".to_owned())?;
        }
        if let Some(v) = var("BULWARKD_MAX_LOGIN_FAILURES") {
            self.max_login_failures =
                v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    "BULWARKD_MAX_LOGIN_FAILURES: a number of at least 1".to_owned()
                })?;
        }
        if let Some(v) = var("BULWARKD_TLS_CA") {
            self.tls.ca = v.into();
        }
        if let Some(v) = var("BULWARKD_TLS_CERT") {
            self.tls.cert = v.into();
        }
        if let Some(v) = var("BULWARKD_TLS_KEY") {
            self.tls.key = v.into();
        }
        if let Some(v) = var("BULWARKD_NODE_ID") {
            if let Some(c) = self.cluster.as_mut() {
                c.node_id = v;
            }
        }
        Ok(())
    }

    /// Where the store is: `store` starting with `postgres://` or `postgresql://` (or a
    /// key/value string with `host=`) names a PostgreSQL database, anything else a file.
    pub fn store_location(&self) -> StoreLocation<'_> {
        let s = self.store.to_str().unwrap_or_default();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") || s.starts_with("host=")
        {
            StoreLocation::Postgres(s)
        } else {
            StoreLocation::File(&self.store)
        }
    }

    /// The store as shown in messages: the file, or the database's hosts (never a password).
    pub fn store_shown(&self) -> String {
        match self.store_location() {
            StoreLocation::File(p) => p.display().to_string(),
            StoreLocation::Postgres(_) => "the PostgreSQL store".to_owned(),
        }
    }

    /// The worker pool size.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        // Every key operation appends an audit record durably (group commit): a worker spends
        // most of an operation waiting for the fsync, not on a core. A pool of a few workers
        // per core would cap the group size and with it the throughput, so the default allows
        // 16 per core (at least 32); CPU use is still bounded by the cores.
        std::thread::available_parallelism().map_or(32, |n| (n.get() * 16).max(32))
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::{Config, StoreLocation};

    fn config(extra: &str) -> Config {
        toml::from_str(&format!(
            "listen = \"127.0.0.1:7443\"\n{extra}\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn a_postgres_url_is_a_cluster_store_and_anything_else_a_file() {
        for url in [
            "postgres://bulwark@db1:5432,db2:5432/bulwark?target_session_attrs=read-write",
            "postgresql://bulwark@db/bulwark",
            "host=/run/postgresql port=5432 dbname=bulwark",
        ] {
            let c = config(&format!("store = {url:?}"));
            assert!(matches!(c.store_location(), StoreLocation::Postgres(u) if u == url));
            assert_eq!(c.store_shown(), "the PostgreSQL store", "never the URL");
        }
        let c = config("store = \"/var/lib/bulwark/store.db\"");
        assert!(matches!(c.store_location(), StoreLocation::File(p) if p.ends_with("store.db")));
        assert!(c.cluster.is_none());
    }

    #[test]
    fn the_cluster_section_has_defaults_and_survives_a_round_trip() {
        let c = config(
            "store = \"postgresql://db/bulwark\"\n[cluster]\nnode_id = \"a\"\ndata_dir = \"/x\"",
        );
        let k = c.cluster.as_ref().unwrap();
        assert_eq!((k.lease_ms, k.pool_size), (5000, 8));
        assert!(k.password_file.is_none() && k.ca.is_none());
        let again: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(again.cluster.unwrap().node_id, "a");
    }
}
