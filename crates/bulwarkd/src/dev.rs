//! `bulwarkd --dev`: an initialized, unsealed HSM in one command, for trying Bulwark out.
//! NOT FOR PRODUCTION: the unseal shares, the users' passwords and the CA key all sit in one
//! directory next to the store.
//!
//! Layout of the dev directory: `pki/` (CA, server, `user`, `crypto`, `so` client
//! certificates), `store.db` (quorum policy, 3 shares, threshold 2), `shares/share-{1,2,3}.json`,
//! `users.json`, `bulwarkd.toml`, and the shell exports the CLI needs: `dev.env` for the crypto
//! user `user` (uses the keys it is granted), `officer.env` for the crypto officer `crypto`
//! (creates and manages keys, grants their use) and `so.env` for the security officer `so`.
//! Re-running with the same directory reuses everything (and unseals again with shares 1 and 2).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::config::{Config, TlsConfig};
use crate::error::DaemonError;
use crate::server::{self, Running};
use bulwark_core::kernel::Role;
use bulwark_core::token::InitialUser;

/// Shares and threshold of the dev store.
pub const DEV_SHARES: u8 = 3;
/// See [`DEV_SHARES`].
pub const DEV_THRESHOLD: u8 = 2;

/// The banner printed on start.
pub const BANNER: &str = "\
*************************************************************************
*  bulwarkd is running in DEV MODE. NOT FOR PRODUCTION.                 *
*  Unseal shares, passwords and the CA key are stored in plain files    *
*  in the dev directory. Never put real keys in a dev-mode HSM.         *
*************************************************************************";

fn random_password() -> Result<Zeroizing<String>, DaemonError> {
    let mut b = [0u8; 18];
    bulwark_core::crypto::Provider::get().and_then(|p| p.random(&mut b))?;
    Ok(Zeroizing::new(hex::encode(b)))
}

fn env_value(file: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("export ")?.strip_prefix(key)?.strip_prefix('=')?;
        Some(rest.trim_matches('\'').to_owned())
    })
}

fn write_private(path: &Path, data: &str) -> Result<(), DaemonError> {
    bulwark_core::fsutil::write_private(path, data.as_bytes())
        .map_err(|e| DaemonError::file("write", path, e))
}

/// Creates a quorum store and writes one share file per custodian into `share_dir`
/// (`share-<i>.json`, 0600), each encrypted to its passphrase where one is given.
pub fn init_store(
    store: &Path,
    label: &str,
    shares: u8,
    threshold: u8,
    share_dir: &Path,
    passphrases: &[Option<Zeroizing<String>>],
) -> Result<Vec<PathBuf>, DaemonError> {
    let policy = bulwark_core::token::SecurityPolicy::default();
    init_store_with(store, label, (shares, threshold), share_dir, passphrases, &policy, &[])
}

/// [`init_store`] with a security policy; `quorum` is (shares, threshold).
pub fn init_store_with(
    store: &Path,
    label: &str,
    quorum: (u8, u8),
    share_dir: &Path,
    passphrases: &[Option<Zeroizing<String>>],
    policy: &bulwark_core::token::SecurityPolicy,
    users: &[InitialUser],
) -> Result<Vec<PathBuf>, DaemonError> {
    use bulwark_core::seal::init_quorum_store_with_users;
    let (shares, threshold) = quorum;
    bulwark_core::fsutil::check_store_path(store)?;
    std::fs::create_dir_all(share_dir).map_err(|e| DaemonError::file("create", share_dir, e))?;
    let init = init_quorum_store_with_users(store, label, shares, threshold, policy, users)?;
    write_shares(&init, share_dir, passphrases)
}

/// Writes one share file per custodian of a new store into `share_dir` (`share-<i>.json`,
/// 0600), each encrypted to its passphrase where one is given.
pub fn write_shares(
    init: &bulwark_core::seal::QuorumInit,
    share_dir: &Path,
    passphrases: &[Option<Zeroizing<String>>],
) -> Result<Vec<PathBuf>, DaemonError> {
    use bulwark_core::seal::ShareFile;
    let mut out = Vec::new();
    for (i, s) in init.shares.iter().enumerate() {
        let pass = passphrases.get(i).and_then(Option::as_ref).map(|p| p.as_bytes());
        let f = ShareFile::new(init, s, pass, bulwark_core::hierarchy::KdfParams::default())?;
        let path = share_dir.join(format!("share-{}.json", s.index()));
        write_private(&path, &f.to_json())?;
        out.push(path);
    }
    Ok(out)
}

/// The default connection limits with the `BULWARKD_*` connection overrides applied (the only
/// environment overrides dev mode reads).
fn connection_limits() -> Result<crate::config::ConnectionLimits, DaemonError> {
    let mut l = crate::config::ConnectionLimits::default();
    l.apply_env()?;
    Ok(l)
}

/// The identity dev mode's own start-up actions (unsealing with the dev shares, the daemon's
/// internal keys) are recorded under in the audit log: the system, not the crypto user the
/// unsealed token would otherwise name.
pub fn startup_actor() -> bulwark_core::audit::Actor {
    bulwark_core::audit::Actor {
        name: "bulwarkd".into(),
        role: "system".into(),
        client: "bulwarkd --dev (start-up)".into(),
    }
}

/// What the dev setup produced.
#[derive(Debug)]
pub struct DevSetup {
    /// The daemon configuration.
    pub config: Config,
    /// The dev directory.
    pub dir: PathBuf,
    user_password: Zeroizing<String>,
    crypto_password: Zeroizing<String>,
    so_password: Zeroizing<String>,
}

/// Prepares (or reuses) a dev directory.
pub fn prepare(dir: &Path, listen: SocketAddr) -> Result<DevSetup, DaemonError> {
    prepare_with(dir, listen, &bulwark_core::token::SecurityPolicy::for_daemon())
}

/// [`prepare`]; a new dev store gets `policy`.
pub fn prepare_with(
    dir: &Path,
    listen: SocketAddr,
    policy: &bulwark_core::token::SecurityPolicy,
) -> Result<DevSetup, DaemonError> {
    std::fs::create_dir_all(dir).map_err(|e| DaemonError::file("create", dir, e))?;
    let dir = dir.canonicalize().map_err(|e| DaemonError::file("resolve", dir, e))?;
    let pki = dir.join("pki");
    let store = dir.join("store.db");
    if !pki.join("ca.pem").exists() {
        crate::pki::init(&pki, &["localhost".into(), "127.0.0.1".into(), "::1".into()])
            .map_err(DaemonError::Setup)?;
    }
    for who in ["user", "crypto", "so"] {
        if !pki.join(format!("{who}.pem")).exists() {
            crate::pki::issue_client(&pki, who).map_err(DaemonError::Setup)?;
        }
    }
    let saved = |file: &str| env_value(&dir.join(file), "BULWARK_PASSWORD");
    let (user_password, crypto_password, so_password) = if store.exists() {
        match (saved("dev.env"), saved("officer.env"), saved("so.env")) {
            (Some(u), Some(c), Some(s)) => {
                (Zeroizing::new(u), Zeroizing::new(c), Zeroizing::new(s))
            }
            _ => {
                return Err(DaemonError::Setup(format!(
                    "{} holds a store but not its dev env files: use a new --dir",
                    dir.display()
                )))
            }
        }
    } else {
        // The dev users are made with the store, inside it (users live under the master key).
        let (u, c, s) = (random_password()?, random_password()?, random_password()?);
        let user = |name: &str, role, pw: &Zeroizing<String>| InitialUser {
            name: name.to_owned(),
            role,
            password: Zeroizing::new(pw.as_bytes().to_vec()),
        };
        let users = [
            user("user", Role::CryptoUser, &u),
            user("crypto", Role::CryptoOfficer, &c),
            user("so", Role::SecurityOfficer, &s),
        ];
        let quorum = (DEV_SHARES, DEV_THRESHOLD);
        init_store_with(&store, "bulwark-dev", quorum, &dir.join("shares"), &[], policy, &users)?;
        (u, c, s)
    };
    let config = Config {
        listen,
        store,
        users: None,
        workers: 0,
        http_listen: Some(SocketAddr::new(listen.ip(), 0)),
        unix_socket: Some(dir.join("bulwarkd.sock")),
        approvals: None,
        session_ttl_secs: 3600,
        max_login_failures: crate::users::MAX_LOGIN_FAILURES,
        connections: connection_limits()?,
        cluster: None,
        tls: TlsConfig {
            ca: pki.join("ca.pem"),
            cert: pki.join("server.pem"),
            key: pki.join("server-key.pem"),
        },
    };
    write_private(&dir.join("bulwarkd.toml"), &config.to_toml())?;
    Ok(DevSetup { config, dir, user_password, crypto_password, so_password })
}

impl DevSetup {
    /// Writes `dev.env`, `officer.env` and `so.env` for the bound address.
    pub fn write_env(&self, addr: SocketAddr) -> Result<(), DaemonError> {
        let pki = self.dir.join("pki");
        let env = |user: &str, pw: &str| {
            format!(
                "# bulwarkd dev mode (NOT FOR PRODUCTION): source this file to use the CLI as {user}\n\
                 export BULWARK_ENDPOINT='https://{addr}'\n\
                 export BULWARK_CA_CERT='{}'\n\
                 export BULWARK_CLIENT_CERT='{}'\n\
                 export BULWARK_CLIENT_KEY='{}'\n\
                 export BULWARK_USER='{user}'\n\
                 export BULWARK_PASSWORD='{pw}'\n",
                pki.join("ca.pem").display(),
                pki.join(format!("{user}.pem")).display(),
                pki.join(format!("{user}-key.pem")).display(),
            )
        };
        write_private(&self.dir.join("dev.env"), &env("user", &self.user_password))?;
        write_private(&self.dir.join("officer.env"), &env("crypto", &self.crypto_password))?;
        write_private(&self.dir.join("so.env"), &env("so", &self.so_password))
    }

    /// Unseals `state` with shares 1 and 2 from the dev directory. What this does is recorded
    /// as the daemon's own start-up ([`startup_actor`]), never as one of the dev users.
    pub fn unseal(&self, state: &crate::state::HsmState) -> Result<(), DaemonError> {
        bulwark_core::audit::with_actor(startup_actor(), || self.unseal_inner(state))
    }

    fn unseal_inner(&self, state: &crate::state::HsmState) -> Result<(), DaemonError> {
        unseal_from(&self.dir.join("shares"), state)
    }
}

/// Unseals `state` with shares 1 and 2 of the dev share directory `shares` (dev mode and the
/// nodes of a dev cluster), as the daemon's own start-up ([`startup_actor`]).
pub fn unseal_with_dev_shares(
    shares: &Path,
    state: &crate::state::HsmState,
) -> Result<(), DaemonError> {
    bulwark_core::audit::with_actor(startup_actor(), || unseal_from(shares, state))
}

fn unseal_from(shares: &Path, state: &crate::state::HsmState) -> Result<(), DaemonError> {
    {
        for i in 1..=DEV_THRESHOLD {
            let p = shares.join(format!("share-{i}.json"));
            let text =
                Zeroizing::new(std::fs::read(&p).map_err(|e| DaemonError::file("read", &p, e))?);
            let f = bulwark_core::seal::ShareFile::parse(&text)?;
            let s = f.share(None)?;
            state.unseal(s)?;
        }
        if state.is_sealed() {
            return Err(DaemonError::Setup("dev unseal did not complete".into()));
        }
        Ok(())
    }
}

/// Prepares `dir`, opens and unseals the HSM, starts serving on `listen` and writes the env
/// files with the bound address.
pub async fn start(dir: &Path, listen: SocketAddr) -> Result<(DevSetup, Running), DaemonError> {
    start_with(dir, listen, &bulwark_core::token::SecurityPolicy::for_daemon(), |_| ()).await
}

/// [`start`], with the configuration adjusted by `adjust` first (tests: approvals, limits).
pub async fn start_with(
    dir: &Path,
    listen: SocketAddr,
    policy: &bulwark_core::token::SecurityPolicy,
    adjust: impl FnOnce(&mut crate::config::Config),
) -> Result<(DevSetup, Running), DaemonError> {
    let mut setup = prepare_with(dir, listen, policy)?;
    adjust(&mut setup.config);
    let state = server::open_state(&setup.config, true)?;
    setup.unseal(&state)?;
    let running = server::start(&setup.config, state).await?;
    setup.write_env(running.addr)?;
    Ok((setup, running))
}

/// A dev daemon on its own runtime, for tests and tools that are not async. Stops on drop.
#[derive(Debug)]
pub struct DevServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// Bound health/metrics address.
    pub http: Option<SocketAddr>,
    /// The dev directory.
    pub dir: PathBuf,
    /// The HSM state (for white-box checks).
    pub state: std::sync::Arc<crate::state::HsmState>,
    rt: Option<tokio::runtime::Runtime>,
    running: Option<Running>,
}

impl DevServer {
    /// Starts a dev daemon on 127.0.0.1 with an ephemeral port.
    pub fn start(dir: &Path) -> Result<Self, DaemonError> {
        Self::start_with(dir, |_| ())
    }

    /// [`DevServer::start`] with an adjusted configuration.
    pub fn start_with(
        dir: &Path,
        adjust: impl FnOnce(&mut crate::config::Config),
    ) -> Result<Self, DaemonError> {
        Self::start_with_policy(dir, &bulwark_core::token::SecurityPolicy::for_daemon(), adjust)
    }

    /// [`DevServer::start_with`]; a new dev store gets `policy`.
    pub fn start_with_policy(
        dir: &Path,
        policy: &bulwark_core::token::SecurityPolicy,
        adjust: impl FnOnce(&mut crate::config::Config),
    ) -> Result<Self, DaemonError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| DaemonError::Server(e.to_string()))?;
        let listen: SocketAddr = ([127, 0, 0, 1], 0).into();
        let (setup, running) = rt.block_on(start_with(dir, listen, policy, adjust))?;
        Ok(Self {
            addr: running.addr,
            http: running.http,
            dir: setup.dir,
            state: running.state.clone(),
            rt: Some(rt),
            running: Some(running),
        })
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        if let (Some(rt), Some(r)) = (self.rt.take(), self.running.take()) {
            let _ = rt.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(5), r.shutdown()).await
            });
            rt.shutdown_background();
        }
    }
}
