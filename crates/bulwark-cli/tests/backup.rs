//! `bulwark backup` and `bulwark restore` end to end: keys restored into a new store give the
//! same results as the originals, and every refusal exits 2 with one clear line and leaves the
//! target store without objects.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SO_PIN: &str = "so-secret-1234";
const PIN: &str = "user-pin-5678";
const PASS: &str = "a long backup passphrase";

/// One store in its own directory (the audit log and state sit beside it).
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let e = Self { dir: tempfile::tempdir().unwrap() };
        e.ok(&["init", "--label", "test"]);
        e
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store.db")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bulwark"));
        c.env("BULWARK_STORE", self.store())
            .env("BULWARK_SO_PIN", SO_PIN)
            .env("BULWARK_PIN", PIN)
            .env("BULWARK_BACKUP_PASSPHRASE", PASS)
            .env("BULWARK_STATE_DIR", self.dir.path().join("state"))
            .stdin(Stdio::null());
        c
    }

    fn run_with(&self, args: &[&str], pass: Option<&str>) -> Output {
        let mut c = self.cmd();
        match pass {
            Some(p) => c.env("BULWARK_BACKUP_PASSPHRASE", p),
            None => c.env_remove("BULWARK_BACKUP_PASSPHRASE"),
        };
        c.args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd().args(args).output().unwrap();
        assert!(o.status.success(), "{args:?} failed: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    }

    /// Expects exit code 2 and one line on stderr containing `needle`.
    fn fails_with(&self, args: &[&str], pass: Option<&str>, needle: &str) {
        let o = self.run_with(args, pass);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?} should fail with 2; stderr: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err:?}");
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }

    fn objects(&self) -> u64 {
        let s = self.ok(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        v["objects"].as_u64().unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn backup_then_restore_into_a_new_store_gives_the_same_results() {
    let a = Env::new();
    for (ty, label) in
        [("aes-256", "data"), ("ec-p256", "ec"), ("ed25519", "ed"), ("hmac-sha256", "mac")]
    {
        a.ok(&["key", "generate", "--type", ty, "--label", label]);
    }
    let file = a.path("store.bwb");
    let out = a.ok(&["backup", "--out", s(&file)]);
    assert!(out.contains("backup written") && out.contains("objects"), "{out}");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    // An existing file is never overwritten.
    a.fails_with(&["backup", "--out", s(&file)], Some(PASS), "already exists");

    let b = Env::new();
    let out = b.ok(&["restore", "--in", s(&file)]);
    assert!(out.contains("restored"), "{out}");
    assert_eq!(b.objects(), a.objects());

    // Data encrypted by the original decrypts with the restored key.
    let pt = a.path("pt");
    std::fs::write(&pt, b"kept across stores").unwrap();
    let ct = a.path("ct");
    a.ok(&["encrypt", "--key", "data", "--in", s(&pt), "--out", s(&ct)]);
    let back = b.path("back");
    b.ok(&["decrypt", "--key", "data", "--in", s(&ct), "--out", s(&back)]);
    assert_eq!(std::fs::read(&back).unwrap(), b"kept across stores");

    // Signatures made by the restored keys verify on the original store.
    for label in ["ec", "ed", "mac"] {
        let sig = b.path(&format!("{label}.sig"));
        b.ok(&["sign", "--key", label, "--in", s(&pt), "--out", s(&sig)]);
        a.ok(&["verify", "--key", label, "--in", s(&pt), "--sig", s(&sig)]);
    }
}

#[test]
fn refused_restores_exit_2_and_change_nothing() {
    let a = Env::new();
    a.ok(&["key", "generate", "--type", "aes-256", "--label", "data"]);
    let file = a.path("store.bwb");
    a.ok(&["backup", "--out", s(&file)]);
    let good = std::fs::read(&file).unwrap();

    let b = Env::new();
    let bad = b.path("bad.bwb");
    b.fails_with(
        &["restore", "--in", s(&file)],
        Some("not the passphrase"),
        "wrong backup passphrase",
    );
    b.fails_with(&["restore", "--in", s(&file)], None, "no backup passphrase given");
    for off in [200, good.len() / 2, good.len() - 3] {
        let mut v = good.clone();
        v[off] ^= 0x40;
        std::fs::write(&bad, &v).unwrap();
        b.fails_with(&["restore", "--in", s(&bad)], Some(PASS), "modified, truncated or corrupted");
    }
    std::fs::write(&bad, &good[..good.len() - 10]).unwrap();
    b.fails_with(&["restore", "--in", s(&bad)], Some(PASS), "modified, truncated or corrupted");
    std::fs::write(&bad, b"not a backup at all, but long enough to hold a header of 142 bytes")
        .unwrap();
    b.fails_with(&["restore", "--in", s(&bad)], Some(PASS), "not a Bulwark backup");
    // A passphrase file others can read is refused.
    let pf = b.path("pass.txt");
    std::fs::write(&pf, PASS).unwrap();
    std::fs::set_permissions(&pf, std::fs::Permissions::from_mode(0o644)).unwrap();
    b.fails_with(&["restore", "--in", s(&file), "--passphrase-file", s(&pf)], None, "chmod 600");
    assert_eq!(b.objects(), 0);

    // From a 0600 passphrase file it works; then the store is not empty any more.
    std::fs::set_permissions(&pf, std::fs::Permissions::from_mode(0o600)).unwrap();
    b.ok(&["restore", "--in", s(&file), "--passphrase-file", s(&pf)]);
    assert_eq!(b.objects(), 1);
    b.fails_with(&["restore", "--in", s(&file)], Some(PASS), "not empty");
    // A store of another domain with keys of its own refuses it.
    a.fails_with(&["restore", "--in", s(&file)], Some(PASS), "not empty");
    let c = Env::new();
    c.ok(&["key", "generate", "--type", "aes-256", "--label", "own"]);
    c.fails_with(&["restore", "--in", s(&file)], Some(PASS), "another security domain");
    assert_eq!(c.objects(), 1);
}

#[test]
fn custodian_shares_replace_the_passphrase() {
    let a = Env::new();
    a.ok(&["key", "generate", "--type", "aes-256", "--label", "data"]);
    let file = a.path("split.bwb");
    let shares = a.path("custodians");
    let out = a.ok(&[
        "backup",
        "--out",
        s(&file),
        "--shares",
        "3",
        "--threshold",
        "2",
        "--share-dir",
        s(&shares),
    ]);
    assert_eq!(out.matches("custodian share written").count(), 3, "{out}");
    let share = |i: u8| shares.join(format!("split.bwb.share-{i}-of-3.json"));
    for i in 1..=3 {
        let m = std::fs::metadata(share(i)).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
    }
    let b = Env::new();
    b.fails_with(&["restore", "--in", s(&file)], Some(PASS), "give 2 share files with --share");
    b.fails_with(
        &["restore", "--in", s(&file), "--share", s(&share(2))],
        Some(PASS),
        "not enough custodian shares",
    );
    assert_eq!(b.objects(), 0);
    b.ok(&["restore", "--in", s(&file), "--share", s(&share(3)), "--share", s(&share(1))]);
    assert_eq!(b.objects(), 1);
    // A passphrase backup does not take shares.
    let plain = a.path("plain.bwb");
    a.ok(&["backup", "--out", s(&plain)]);
    let c = Env::new();
    c.fails_with(
        &["restore", "--in", s(&plain), "--share", s(&share(1))],
        Some(PASS),
        "protected by a passphrase",
    );
}
