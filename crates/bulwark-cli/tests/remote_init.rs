//! `bulwark --endpoint URL init` against a bulwarkd that has no store (the daemon's real
//! bootstrap-then-serve path, in-process on a loopback ephemeral port): the CLI writes one
//! share file per custodian, encrypted here to the custodian's passphrase, 0600, never over an
//! existing file; everything that can fail locally fails before the HSM is initialized; a
//! second init is refused; custodians unseal with M shares and the first security officer logs
//! in. Credentials travel only in the environment and files.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use bulwark_core::seal::ShareFile;
use bulwarkd::bootstrap::DaemonThread;
use bulwarkd::config::{Config, TlsConfig};

const SO_PASSWORD: &str = "first-so-password";

struct Env {
    dir: PathBuf,
    endpoint: String,
}

impl Env {
    /// `bulwark ARGS` with the TLS files in the environment (and `extra`), no tty input.
    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let pki = self.dir.join("pki");
        let mut c = Command::new(env!("CARGO_BIN_EXE_bulwark"));
        c.args(args)
            .stdin(Stdio::null())
            .env_remove("BULWARK_STORE")
            .env_remove("BULWARK_USER")
            .env_remove("BULWARK_PASSWORD")
            .env_remove("BULWARK_NEW_PASSWORD")
            .env_remove("BULWARK_SHARE_PASSPHRASE")
            .env("BULWARK_ENDPOINT", &self.endpoint)
            .env("BULWARK_CA_CERT", pki.join("ca.pem"))
            .env("BULWARK_CLIENT_CERT", pki.join("so.pem"))
            .env("BULWARK_CLIENT_KEY", pki.join("so-key.pem"));
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn path(&self, p: &str) -> String {
        self.dir.join(p).display().to_string()
    }
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stdout {} stderr {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stdout {}", String::from_utf8_lossy(&o.stdout));
    assert!(err.contains(needle), "expected {needle:?} in {err}");
}

fn start(dir: &Path) -> DaemonThread {
    let pki = dir.join("pki");
    bulwarkd::pki::init(&pki, &["127.0.0.1".into()]).unwrap();
    bulwarkd::pki::issue_client(&pki, "so").unwrap();
    let cfg = Config {
        listen: ([127, 0, 0, 1], 0).into(),
        store: dir.join("hsm/store.db"),
        users: None,
        workers: 0,
        unix_socket: None,
        http_listen: None,
        approvals: None,
        session_ttl_secs: 3600,
        max_login_failures: 5,
        connections: bulwarkd::config::ConnectionLimits::default(),
        cluster: None,
        tls: TlsConfig {
            ca: pki.join("ca.pem"),
            cert: pki.join("server.pem"),
            key: pki.join("server-key.pem"),
        },
    };
    DaemonThread::start(cfg).unwrap()
}

fn with<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    [base, more].concat()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn remote_init_writes_encrypted_shares_and_the_hsm_unseals_with_them() {
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("BULWARK_STATE_DIR", tmp.path().join("state"));
    let daemon = start(tmp.path());
    let env = Env { dir: tmp.path().to_owned(), endpoint: format!("https://{}", daemon.addr) };
    let pass: Vec<String> = (1..=3)
        .map(|i| {
            let p = env.path(&format!("custodian-{i}.pass"));
            std::fs::write(&p, format!("custodian {i} passphrase\n")).unwrap();
            // Secret files must be private (the CLI refuses group- or world-readable ones).
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            p
        })
        .collect();
    let so = [("BULWARK_USER", "so1"), ("BULWARK_PASSWORD", SO_PASSWORD)];
    let new_pw = [("BULWARK_NEW_PASSWORD", SO_PASSWORD)];

    // Before init: status says so, everything else is refused.
    let s = ok(&env.run(&["status"], &[]));
    assert!(s.contains("UNINITIALIZED"), "{s}");
    assert!(ok(&env.run(&["status", "--json"], &[])).contains(r#""initialized": false"#));
    fails(&env.run(&["key", "list"], &so), "not initialized");

    // Without --endpoint the remote options are refused; the embedded init is untouched.
    let emb = env.path("embedded.db");
    let o = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(["--store", &emb, "init", "--label", "x", "--shares", "3", "--threshold", "2"])
        .env_remove("BULWARK_ENDPOINT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    fails(&o, "--shares initializes a remote HSM");
    assert!(!Path::new(&emb).exists());

    // Local mistakes fail before the HSM is asked: it stays uninitialized, no file is left.
    let shares = env.path("shares");
    let base = ["init", "--label", "hsm", "--shares", "3", "--threshold", "2"];
    fails(&env.run(&base, &new_pw), "needs --share-dir");
    fails(
        &env.run(&with(&base, &["--share-dir", &shares, "--so-pin-file", &pass[0]]), &new_pw),
        "--so-pin-file",
    );
    let two = with(
        &base,
        &[
            "--share-dir",
            &shares,
            "--encrypt-shares",
            "--passphrase-file",
            &pass[0],
            "--passphrase-file",
            &pass[1],
        ],
    );
    fails(&env.run(&two, &new_pw), "one per custodian (3)");
    let short_pass = env.path("short.pass");
    std::fs::write(&short_pass, "short\n").unwrap();
    let short = with(
        &base,
        &[
            "--share-dir",
            &shares,
            "--encrypt-shares",
            "--passphrase-file",
            &pass[0],
            "--passphrase-file",
            &pass[1],
            "--passphrase-file",
            &short_pass,
        ],
    );
    // A passphrase file others can read is refused before its content is looked at.
    fails(&env.run(&short, &new_pw), "chmod 600");
    std::fs::set_permissions(&short_pass, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap();
    fails(&env.run(&short, &new_pw), "at least 8 bytes");
    assert!(names(Path::new(&shares)).is_empty());
    std::fs::create_dir_all(&shares).unwrap();
    std::fs::write(Path::new(&shares).join("share-2.json"), "custodian 2's old share").unwrap();
    let full = with(
        &base,
        &[
            "--share-dir",
            &shares,
            "--encrypt-shares",
            "--so-name",
            "so1",
            "--passphrase-file",
            &pass[0],
            "--passphrase-file",
            &pass[1],
            "--passphrase-file",
            &pass[2],
        ],
    );
    fails(&env.run(&full, &new_pw), "refusing to overwrite");
    assert_eq!(names(Path::new(&shares)), ["share-2.json"]);
    assert_eq!(
        std::fs::read_to_string(Path::new(&shares).join("share-2.json")).unwrap(),
        "custodian 2's old share"
    );
    assert!(ok(&env.run(&["status"], &[])).contains("UNINITIALIZED"));
    std::fs::remove_file(Path::new(&shares).join("share-2.json")).unwrap();

    // The ceremony.
    let out = ok(&env.run(&full, &new_pw));
    assert!(out.contains("2 of 3 shares unseal it") && out.contains("encrypted"), "{out}");
    assert!(!out.contains(SO_PASSWORD));
    assert_eq!(names(Path::new(&shares)), ["share-1.json", "share-2.json", "share-3.json"]);
    for i in 1..=3u8 {
        let p = Path::new(&shares).join(format!("share-{i}.json"));
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let text = std::fs::read(&p).unwrap();
        let f = ShareFile::parse(&text).unwrap();
        assert!(f.is_encrypted() && f.share.is_none(), "share {i} is encrypted");
        assert_eq!((f.index, f.threshold, f.shares), (i, 2, 3));
    }

    // A second ceremony is refused and writes nothing.
    let again = env.path("shares-again");
    let o = env.run(&with(&base, &["--share-dir", &again]), &new_pw);
    fails(&o, "already initialized");
    assert!(names(Path::new(&again)).is_empty());

    // The same endpoint now serves the sealed HSM.
    let s = ok(&env.run(&["status"], &[]));
    assert!(s.contains("SEALED (unseal progress 0/2)") && s.contains("label:        hsm"), "{s}");
    fails(&env.run(&["user", "list"], &so), "sealed");

    // Custodians decrypt their shares locally and unseal; a wrong passphrase does not count.
    let share = |i: usize| Path::new(&shares).join(format!("share-{i}.json")).display().to_string();
    let s = ok(&env.run(&["unseal", "--share", &share(2), "--passphrase-file", &pass[1]], &[]));
    assert!(s.contains("1/2 (still sealed)"), "{s}");
    fails(
        &env.run(&["unseal", "--share", &share(3), "--passphrase-file", &pass[0]], &[]),
        "wrong passphrase",
    );
    let s = ok(&env.run(&["unseal", "--share", &share(3), "--passphrase-file", &pass[2]], &[]));
    assert!(s.contains("the HSM is unsealed"), "{s}");

    // The first security officer logs in.
    let users = ok(&env.run(&["user", "list"], &so));
    assert!(users.contains("so1") && users.contains("security-officer"), "{users}");
    drop(daemon);
}
