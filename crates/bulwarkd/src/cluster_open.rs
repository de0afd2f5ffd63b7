//! Opening (and creating) a cluster node's store: the PostgreSQL connection options from the
//! configuration (password from a file or the environment, TLS to the database), and the
//! node's local data directory (its audit log and anti-rollback watermark).
//!
//! **Joining.** A node's local audit log is created once, when the node first starts with an
//! empty data directory (a `node-id` file records which node and store it belongs to). From
//! then on a missing or foreign log is tampering, exactly as beside a SQLite store; a data
//! directory of another store or another node id is refused; and the node's sealed
//! anti-rollback watermark (`state/<store id>.generation`, written at its first unseal) must
//! exist: a node whose data directory lost it refuses the store as tampered.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bulwark_core::store::Store as _;
use bulwark_store_pg::{PgOptions, PgStore, PgTls};
use zeroize::Zeroizing;

use crate::config::{ClusterConfig, Config};
use crate::error::DaemonError;

/// The `[cluster]` section, required with a PostgreSQL store.
pub(crate) fn node_config(cfg: &Config) -> Result<&ClusterConfig, DaemonError> {
    let c = cfg.cluster.as_ref().ok_or_else(|| {
        DaemonError::Config(
            "a PostgreSQL store needs a [cluster] section (node_id, data_dir)".into(),
        )
    })?;
    if c.node_id.is_empty()
        || c.node_id.len() > 64
        || !c.node_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(DaemonError::Config(
            "cluster.node_id: 1 to 64 characters of [A-Za-z0-9_-]".into(),
        ));
    }
    if c.lease_ms < 500 {
        return Err(DaemonError::Config("cluster.lease_ms: at least 500".into()));
    }
    Ok(c)
}

/// Connection options: the password from `BULWARKD_PG_PASSWORD` or `password_file`, TLS from
/// `ca`.
pub(crate) fn options(c: &ClusterConfig) -> Result<PgOptions, DaemonError> {
    let password = match std::env::var("BULWARKD_PG_PASSWORD").ok().filter(|p| !p.is_empty()) {
        Some(p) => Some(Zeroizing::new(p.into_bytes())),
        None => match &c.password_file {
            Some(f) => {
                let text =
                    Zeroizing::new(std::fs::read(f).map_err(|e| DaemonError::file("read", f, e))?);
                let line = text.split(|b| *b == b'\n').next().unwrap_or_default();
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                Some(Zeroizing::new(line.to_vec()))
            }
            None => None,
        },
    };
    let tls = match &c.ca {
        Some(ca) => {
            let pem = std::fs::read(ca).map_err(|e| DaemonError::file("read", ca, e))?;
            PgTls::with_ca_pem(&pem)?
        }
        None => PgTls::Disabled,
    };
    Ok(PgOptions { pool_size: c.pool_size.max(1), tls, password: password.map(Arc::new) })
}

/// Opens the store in the database.
pub(crate) fn open_pg(url: &str, c: &ClusterConfig) -> Result<PgStore, DaemonError> {
    Ok(PgStore::open(url, &options(c)?)?)
}

/// The node's local base path (`<data_dir>/node`; the audit log is `<data_dir>/node-audit`),
/// after checking — or, on first start, writing — the data directory's `node-id` file, and
/// creating the audit log on first start. A node past its first start must still hold its
/// watermark (the file is written at the first unseal): without it the node does not start —
/// deleting it is how a rollback of the database would be hidden from this node.
pub(crate) fn local_base(c: &ClusterConfig, pg: &PgStore) -> Result<PathBuf, DaemonError> {
    let dir = &c.data_dir;
    bulwark_core::fsutil::create_private_dir(dir)
        .map_err(|e| DaemonError::file("create", dir, e))?;
    let base = dir.join("node");
    let uid = pg.header()?.store_uid;
    let ident = format!("{} {}\n", c.node_id, hex::encode(uid));
    let id_file = dir.join("node-id");
    match std::fs::read_to_string(&id_file) {
        Ok(t) if t == ident => {
            if !bulwark_core::rollback::exists(&uid) {
                return Err(DaemonError::Config(format!(
                    "{}: this node's anti-rollback watermark is missing (state/{}.generation). \
                     Deleting it is how a rollback of the database would be hidden, so the node \
                     does not start. If the node never finished its first unseal, remove the \
                     directory and start the node again; otherwise investigate first",
                    dir.display(),
                    hex::encode(uid)
                )));
            }
        }
        Ok(_) => {
            return Err(DaemonError::Config(format!(
                "{} belongs to another node or another store: give each node its own data_dir",
                dir.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // First start of this node: its audit log begins here.
            bulwark_core::audit::AuditLog::open(
                &base,
                uid,
                true,
                bulwark_core::audit::CheckpointPolicy::default(),
            )?;
            bulwark_core::fsutil::write_private(&id_file, ident.as_bytes())
                .map_err(|e| DaemonError::file("write", &id_file, e))?;
            tracing::warn!(node = %c.node_id, dir = %dir.display(), "new cluster node: audit log created");
        }
        Err(e) => return Err(DaemonError::file("read", &id_file, e)),
    }
    Ok(base)
}

/// The per-node state directory for the anti-rollback watermark (`<data_dir>/state`), unless
/// `BULWARK_STATE_DIR` names one already. Call before any thread starts (it sets the
/// environment).
pub fn state_dir_for(cfg: &Config) -> Option<PathBuf> {
    if std::env::var_os("BULWARK_STATE_DIR").is_some_and(|v| !v.is_empty()) {
        return None;
    }
    match cfg.store_location() {
        crate::config::StoreLocation::Postgres(_) => {
            cfg.cluster.as_ref().map(|c| c.data_dir.join("state"))
        }
        crate::config::StoreLocation::File(_) => None,
    }
}

/// `bulwarkd init` on a PostgreSQL store: the quorum store in the database (as
/// `bulwark_store_pg::init_quorum`), the share files in `share_dir`. The creating process's
/// audit log and anti-rollback marks are scratch (each node starts its own), so this points
/// `BULWARK_STATE_DIR` at a scratch directory: call it before any other thread runs.
#[allow(clippy::too_many_arguments)] // bulwarkd init's arguments
pub fn init_pg(
    cfg: &Config,
    url: &str,
    label: &str,
    quorum: (u8, u8),
    share_dir: &Path,
    passphrases: &[Option<Zeroizing<String>>],
    policy: &bulwark_core::token::SecurityPolicy,
    users: &[bulwark_core::token::InitialUser],
) -> Result<Vec<PathBuf>, DaemonError> {
    let c = node_config(cfg)?;
    let opts = options(c)?;
    std::fs::create_dir_all(share_dir).map_err(|e| DaemonError::file("create", share_dir, e))?;
    // The creating process's audit log is a scratch one: each node keeps its own.
    let tmp = tempdir_in(share_dir)?;
    std::env::set_var("BULWARK_STATE_DIR", tmp.join("state"));
    let init = bulwark_store_pg::init_quorum(
        url,
        &opts,
        &tmp.join("init"),
        label,
        quorum.0,
        quorum.1,
        policy,
        users,
    );
    let _ = std::fs::remove_dir_all(&tmp);
    crate::dev::write_shares(&init?, share_dir, passphrases)
}

fn tempdir_in(dir: &Path) -> Result<PathBuf, DaemonError> {
    let mut r = [0u8; 8];
    bulwark_core::crypto::Provider::get().and_then(|p| p.random(&mut r))?;
    let p = dir.join(format!(".init-{}", hex::encode(r)));
    bulwark_core::fsutil::create_private_dir(&p).map_err(|e| DaemonError::file("create", &p, e))?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::node_config;
    use crate::config::{ClusterConfig, Config};

    fn cfg(node_id: &str, lease_ms: u64) -> Config {
        let mut c: Config = toml::from_str(
            "listen = \"127.0.0.1:7443\"\nstore = \"postgresql://db/b\"\n\
             [tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
        )
        .unwrap();
        c.cluster = Some(ClusterConfig {
            node_id: node_id.into(),
            data_dir: "/x".into(),
            endpoint: String::new(),
            lease_ms,
            password_file: None,
            ca: None,
            pool_size: 8,
        });
        c
    }

    #[test]
    fn node_ids_and_leases_are_checked() {
        assert!(node_config(&cfg("node-1", 5000)).is_ok());
        for bad in ["", "a b", "x/../y", &"n".repeat(65)] {
            assert!(node_config(&cfg(bad, 5000)).is_err(), "{bad:?}");
        }
        assert!(node_config(&cfg("n", 100)).is_err(), "a lease under 500 ms");
        let mut none = cfg("n", 5000);
        none.cluster = None;
        assert!(node_config(&none).is_err(), "a PostgreSQL store needs [cluster]");
    }
}
