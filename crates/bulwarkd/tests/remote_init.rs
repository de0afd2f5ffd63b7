//! Remote initialization on the real `bulwarkd` process: started without a store, it serves
//! only the bootstrap service (mTLS, client certificate required) and refuses everything else
//! with "not initialized"; `Initialize` creates the store once (concurrent and later attempts
//! get ALREADY_EXISTS), and the daemon then serves the sealed HSM on the same address without a
//! restart: M shares unseal it and the first security officer logs in.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bulwark_client::{bootstrap_v1 as pb, Client, ClientConfig, ClientError, Code};
use common::code;

struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bulwarkd(args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_bulwarkd")).args(args).output().unwrap();
    assert!(o.status.success(), "bulwarkd {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A PKI (CA, server, client `so`) and a configuration whose store does not exist yet.
fn setup(d: &Path) -> PathBuf {
    let pki = d.join("pki");
    let p = pki.to_str().unwrap();
    bulwarkd(&["pki", "init", "--dir", p]);
    bulwarkd(&["pki", "client", "--dir", p, "--name", "so"]);
    let cfg = d.join("bulwarkd.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nstore = \"{0}/data/store.db\"\nusers = \"{0}/data/users.json\"\n\
             [tls]\nca = \"{1}/ca.pem\"\ncert = \"{1}/server.pem\"\nkey = \"{1}/server-key.pem\"\n",
            d.display(),
            p
        ),
    )
    .unwrap();
    cfg
}

impl Daemon {
    fn start(d: &Path, cfg: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bulwarkd"))
            .arg("--config")
            .arg(cfg)
            .env("BULWARK_STATE_DIR", d.join("state"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Self { child, lines }
    }

    /// The next "listening on ADDR[ (not initialized)]" line: (endpoint, initialized).
    fn listening(&self) -> (String, bool) {
        loop {
            let l = self.lines.recv_timeout(Duration::from_secs(20)).expect("daemon listens");
            if let Some(rest) = l.strip_prefix("listening on ") {
                let (addr, uninit) = match rest.strip_suffix(" (not initialized)") {
                    Some(a) => (a, true),
                    None => (rest, false),
                };
                return (format!("https://{addr}"), !uninit);
            }
        }
    }
}

fn client(d: &Path, endpoint: &str) -> Client {
    let pki = d.join("pki");
    let cfg = ClientConfig::from_files(
        endpoint,
        &pki.join("ca.pem"),
        Some(&pki.join("so.pem")),
        Some(&pki.join("so-key.pem")),
    )
    .unwrap();
    Client::connect(&cfg).unwrap()
}

const SO_PASSWORD: &str = "so1-password";

fn request(shares: u32, threshold: u32) -> pb::InitializeRequest {
    pb::InitializeRequest {
        label: "remote".into(),
        shares,
        threshold,
        policy: Some(pb::SecurityPolicy {
            audit_key_use: Some(false),
            ..pb::SecurityPolicy::default()
        }),
        so_name: "so1".into(),
        so_password: SO_PASSWORD.into(),
    }
}

#[test]
fn uninitialized_daemon_is_initialized_remotely_then_unsealed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cfg = setup(d);
    let store = d.join("data/store.db");
    let daemon = Daemon::start(d, &cfg);
    let (endpoint, initialized) = daemon.listening();
    assert!(!initialized);

    // Before init: the bootstrap status, and "not initialized" for everything else.
    let mut c = client(d, &endpoint);
    assert!(!c.bootstrap_status().unwrap().initialized);
    let not_init = (Code::FailedPrecondition, "not initialized".to_owned());
    assert_eq!(code(c.status()), not_init);
    assert_eq!(code(c.login("so1", SO_PASSWORD)), not_init);
    assert_eq!(code(c.list_keys()), not_init);
    assert_eq!(code(c.unseal(b"{}")), not_init);

    // The client certificate is still required.
    let pki = d.join("pki");
    let anon = ClientConfig::from_files(&endpoint, &pki.join("ca.pem"), None, None).unwrap();
    let refused = Client::connect(&anon).and_then(|a| a.bootstrap_status());
    assert!(matches!(refused, Err(ClientError::Connect(_))), "{refused:?}");

    // Bad requests create nothing.
    assert_eq!(code(c.initialize(request(3, 1))).0, Code::InvalidArgument);
    let short = pb::InitializeRequest { so_password: "short".into(), ..request(3, 2) };
    assert_eq!(code(c.initialize(short)).0, Code::InvalidArgument);
    assert!(!store.exists());

    // Two custodians' ceremonies race: exactly one initializes.
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let (d, endpoint) = (d.to_owned(), endpoint.clone());
            std::thread::spawn(move || client(&d, &endpoint).initialize(request(3, 2)))
        })
        .collect();
    let results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let (won, lost): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    assert_eq!((won.len(), lost.len()), (1, 1), "{lost:?}");
    assert_eq!(code(lost.into_iter().next().unwrap()).0, Code::AlreadyExists);
    let init = won.into_iter().next().unwrap().unwrap();
    assert!(store.exists());
    assert_eq!(init.share_files.len(), 3);
    for (i, f) in init.share_files.iter().enumerate() {
        let f = bulwark_core::seal::ShareFile::parse(f).unwrap();
        assert_eq!((usize::from(f.index), f.threshold, f.shares), (i + 1, 2, 3));
        assert_eq!(f.store_id, init.store_id);
    }

    // The same address now serves the sealed HSM, without a restart.
    let (endpoint2, initialized) = daemon.listening();
    assert_eq!((endpoint2.as_str(), initialized), (endpoint.as_str(), true));
    assert_eq!(code(c.initialize(request(3, 2))).0, Code::AlreadyExists);
    let mut c = client(d, &endpoint);
    assert!(c.bootstrap_status().unwrap().initialized);
    let s = c.status().unwrap();
    assert!(s.sealed);
    assert_eq!((s.unseal_threshold, s.unseal_shares), (2, 3));
    assert_eq!((s.label.as_str(), s.store_id.as_str()), ("remote", init.store_id.as_str()));
    assert_eq!(code(c.login("so1", SO_PASSWORD)), (Code::FailedPrecondition, "sealed".into()));

    // M shares unseal it; the first security officer logs in.
    assert!(c.unseal(&init.share_files[2]).unwrap().sealed);
    assert!(!c.unseal(&init.share_files[0]).unwrap().sealed);
    assert_eq!(c.login("so1", SO_PASSWORD).unwrap(), "security-officer");
    let users = c.list_users().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].name, "so1");
    // The store's audit log starts with the initialization.
    let log = c.audit_export(0).unwrap().join("\n");
    assert!(log.contains(r#""op":"init""#), "{log}");
    assert!(log.contains("quorum 2 of 3"), "{log}");
    assert!(!log.contains(SO_PASSWORD));

    // A restarted daemon finds its store: no bootstrap, Initialize refused.
    drop(c);
    drop(daemon);
    let daemon = Daemon::start(d, &cfg);
    let (endpoint, initialized) = daemon.listening();
    assert!(initialized);
    let c = client(d, &endpoint);
    assert!(c.bootstrap_status().unwrap().initialized);
    assert_eq!(code(c.initialize(request(3, 2))).0, Code::AlreadyExists);
    assert!(c.status().unwrap().sealed);
}

#[test]
fn sigterm_stops_an_uninitialized_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cfg = setup(d);
    let mut daemon = Daemon::start(d, &cfg);
    let (endpoint, initialized) = daemon.listening();
    assert!(!initialized);
    let pid = rustix::process::Pid::from_raw(i32::try_from(daemon.child.id()).unwrap()).unwrap();
    // SIGUSR1 (the tamper signal) does not kill it: there is nothing to protect yet.
    rustix::process::kill_process(pid, rustix::process::Signal::USR1).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!client(d, &endpoint).bootstrap_status().unwrap().initialized);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = daemon.child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < end, "daemon did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(!d.join("data/store.db").exists());
}
