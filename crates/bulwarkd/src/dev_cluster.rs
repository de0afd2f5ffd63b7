//! `bulwarkd --dev --nodes N --dir DIR`: a cluster in one command, for trying cluster mode out
//! (NOT FOR PRODUCTION: shares, passwords, the CA key and a `trust`-authenticated database all
//! sit in one directory).
//!
//! What it does: starts a private PostgreSQL from the system's `postgresql` package in
//! `DIR/pg` (free loopback port, socket in `DIR/pg/sock`), creates the quorum store in its
//! database `bulwark` with the dev users (`user`, `crypto`, `so`) and 3 shares (threshold 2) in
//! `DIR/shares`, then runs N node processes (`bulwarkd --config DIR/node-K/bulwarkd.toml`, each
//! unsealing itself with shares 1 and 2 from `DIR/shares`) on free loopback ports, and writes
//! `DIR/node-K/{dev,officer,so}.env` (whose `BULWARK_ENDPOINT` lists node K first, then the
//! others: the client's failover list) and `DIR/node-K/pid`. Ctrl-C or SIGTERM stops the nodes
//! and the database. Running it again on the same directory reuses the database and the store.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulwark_core::kernel::Role;
use bulwark_core::token::InitialUser;
use bulwark_store_pg::devserver::DevPg;
use zeroize::Zeroizing;

use crate::config::{ClusterConfig, Config, TlsConfig};
use crate::error::DaemonError;

/// The banner printed on start.
pub const BANNER: &str = "\
*************************************************************************
*  bulwarkd is running a DEV CLUSTER. NOT FOR PRODUCTION.               *
*  Unseal shares, passwords, the CA key and a password-less database    *
*  are all in the dev directory. Never put real keys in a dev cluster.  *
*************************************************************************";

/// The database of the dev cluster.
const DB: &str = "bulwark";

/// A running dev cluster: the database and the node processes.
#[derive(Debug)]
pub struct DevCluster {
    /// The dev directory.
    pub dir: PathBuf,
    /// The database server.
    pub pg: DevPg,
    /// The nodes, in order (node 1 first).
    pub nodes: Vec<DevNode>,
}

/// One node process.
#[derive(Debug)]
pub struct DevNode {
    /// `node-K`.
    pub id: String,
    /// Its gRPC address.
    pub addr: std::net::SocketAddr,
    child: Child,
}

impl DevNode {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn write_private(path: &Path, data: &str) -> Result<(), DaemonError> {
    bulwark_core::fsutil::write_private(path, data.as_bytes())
        .map_err(|e| DaemonError::file("write", path, e))
}

fn random_password() -> Result<Zeroizing<String>, DaemonError> {
    let mut b = [0u8; 18];
    bulwark_core::crypto::Provider::get().and_then(|p| p.random(&mut b))?;
    Ok(Zeroizing::new(hex::encode(b)))
}

/// Starts a dev cluster of `nodes` nodes in `dir` with leases of `lease_ms`.
pub fn start(dir: &Path, nodes: u8, lease_ms: u64) -> Result<DevCluster, DaemonError> {
    if nodes == 0 {
        return Err(DaemonError::Config("--nodes: at least 1".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| DaemonError::file("create", dir, e))?;
    let dir = dir.canonicalize().map_err(|e| DaemonError::file("resolve", dir, e))?;
    let pg =
        DevPg::start(&dir.join("pg"), false).map_err(DaemonError::Setup)?.ok_or_else(|| {
            DaemonError::Setup(
                "no PostgreSQL 15+ server binaries (/usr/lib/postgresql/*/bin): install the \
                 `postgresql` package (or set BULWARK_PG_BIN)"
                    .into(),
            )
        })?;
    pg.create_database(DB).map_err(DaemonError::Setup)?;
    let url = pg.url(DB);
    let pki = dir.join("pki");
    if !pki.join("ca.pem").exists() {
        crate::pki::init(&pki, &["localhost".into(), "127.0.0.1".into(), "::1".into()])
            .map_err(DaemonError::Setup)?;
    }
    for who in ["user", "crypto", "so"] {
        if !pki.join(format!("{who}.pem")).exists() {
            crate::pki::issue_client(&pki, who).map_err(DaemonError::Setup)?;
        }
    }
    let passwords = dir.join("passwords.env");
    let node_cfg = |k: u8| -> Config {
        let nd = dir.join(format!("node-{k}"));
        Config {
            listen: ([127, 0, 0, 1], 0).into(),
            store: PathBuf::from(&url),
            users: None,
            workers: 0,
            http_listen: Some(([127, 0, 0, 1], 0).into()),
            unix_socket: Some(nd.join("bulwarkd.sock")),
            approvals: None,
            session_ttl_secs: 3600,
            max_login_failures: crate::users::MAX_LOGIN_FAILURES,
            connections: crate::config::ConnectionLimits::default(),
            tls: TlsConfig {
                ca: pki.join("ca.pem"),
                cert: pki.join("server.pem"),
                key: pki.join("server-key.pem"),
            },
            cluster: Some(ClusterConfig {
                node_id: format!("node-{k}"),
                data_dir: nd.join("data"),
                endpoint: String::new(),
                lease_ms,
                password_file: None,
                ca: None,
                pool_size: 8,
            }),
        }
    };
    let (u, c, s) = if passwords.exists() {
        let v = |k: &str| {
            env_value(&passwords, k).map(Zeroizing::new).ok_or_else(|| {
                DaemonError::Setup(format!(
                    "{} is incomplete: use a new --dir",
                    passwords.display()
                ))
            })
        };
        (v("USER_PASSWORD")?, v("CRYPTO_PASSWORD")?, v("SO_PASSWORD")?)
    } else {
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
        let policy = bulwark_core::token::SecurityPolicy::for_daemon();
        crate::cluster_open::init_pg(
            &node_cfg(1),
            &url,
            "bulwark-dev-cluster",
            (crate::dev::DEV_SHARES, crate::dev::DEV_THRESHOLD),
            &dir.join("shares"),
            &[],
            &policy,
            &users,
        )?;
        write_private(
            &passwords,
            &format!(
                "export USER_PASSWORD='{}'\nexport CRYPTO_PASSWORD='{}'\nexport SO_PASSWORD='{}'\n",
                u.as_str(),
                c.as_str(),
                s.as_str()
            ),
        )?;
        (u, c, s)
    };
    let mut cluster = DevCluster { dir: dir.clone(), pg, nodes: Vec::new() };
    for k in 1..=nodes {
        let cfg = node_cfg(k);
        let nd = dir.join(format!("node-{k}"));
        bulwark_core::fsutil::create_private_dir(&nd)
            .map_err(|e| DaemonError::file("create", &nd, e))?;
        let toml_path = nd.join("bulwarkd.toml");
        write_private(&toml_path, &cfg.to_toml())?;
        let node = spawn_node(&toml_path, &dir.join("shares"), &format!("node-{k}"))?;
        write_private(&nd.join("pid"), &format!("{}\n", node.pid()))?;
        cluster.nodes.push(node);
    }
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| format!("https://{}", n.addr)).collect();
    for (i, n) in cluster.nodes.iter().enumerate() {
        let mut list = vec![addrs[i].clone()];
        list.extend(addrs.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, a)| a.clone()));
        let endpoint = list.join(",");
        let nd = dir.join(&n.id);
        let env = |user: &str, pw: &str| {
            format!(
                "# bulwarkd dev cluster (NOT FOR PRODUCTION): source this file to use the CLI as \
                 {user} on {id} (then the other nodes)\n\
                 export BULWARK_ENDPOINT='{endpoint}'\n\
                 export BULWARK_CA_CERT='{}'\n\
                 export BULWARK_CLIENT_CERT='{}'\n\
                 export BULWARK_CLIENT_KEY='{}'\n\
                 export BULWARK_USER='{user}'\n\
                 export BULWARK_PASSWORD='{pw}'\n",
                pki.join("ca.pem").display(),
                pki.join(format!("{user}.pem")).display(),
                pki.join(format!("{user}-key.pem")).display(),
                id = n.id,
            )
        };
        write_private(&nd.join("dev.env"), &env("user", &u))?;
        write_private(&nd.join("officer.env"), &env("crypto", &c))?;
        write_private(&nd.join("so.env"), &env("so", &s))?;
    }
    Ok(cluster)
}

fn env_value(file: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("export ")?.strip_prefix(key)?.strip_prefix('=')?;
        Some(rest.trim_matches('\'').to_owned())
    })
}

/// Runs one node (`bulwarkd --config FILE --dev-unseal-from SHARES`) and waits until it is
/// listening and unsealed; its output is passed on, prefixed with its id.
fn spawn_node(config: &Path, shares: &Path, id: &str) -> Result<DevNode, DaemonError> {
    let exe = std::env::current_exe().map_err(|e| DaemonError::Setup(e.to_string()))?;
    let mut child = Command::new(exe)
        .arg("--config")
        .arg(config)
        .arg("--dev-unseal-from")
        .arg(shares)
        .env_remove("BULWARK_STATE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| DaemonError::Setup(format!("cannot start {id}: {e}")))?;
    let out = child.stdout.take().ok_or_else(|| DaemonError::Setup("no stdout".into()))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let tag = id.to_owned();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            // Written, not println!: a closed stdout must not end the forwarding with a panic.
            let _ = writeln!(std::io::stdout(), "[{tag}] {line}");
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut addr = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(DaemonError::Setup(format!("{id} did not start (see its output)")));
        };
        if let Some(a) = line.strip_prefix("listening on ") {
            addr = a.split_whitespace().next().and_then(|a| a.parse().ok());
        }
        if line.starts_with("unsealed") {
            break;
        }
    }
    let addr = addr.ok_or_else(|| DaemonError::Setup(format!("{id}: no listening address")))?;
    Ok(DevNode { id: id.to_owned(), addr, child })
}

impl DevCluster {
    /// Stops every node (SIGTERM, then SIGKILL after 10 s) and the database.
    pub fn stop(mut self) {
        for n in &self.nodes {
            if let Ok(pid) = i32::try_from(n.pid()) {
                if let Some(p) = rustix::process::Pid::from_raw(pid) {
                    // A stopped node must run to handle SIGTERM.
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::CONT);
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in &mut self.nodes {
            loop {
                match n.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Ok(None) => {
                        let _ = n.child.kill();
                        let _ = n.child.wait();
                        break;
                    }
                }
            }
            let _ = std::fs::remove_file(self.dir.join(&n.id).join("pid"));
        }
        self.pg.stop();
    }
}
