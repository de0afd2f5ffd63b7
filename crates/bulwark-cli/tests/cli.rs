//! End-to-end tests of the `bulwark` binary on an embedded store, checked with OpenSSL (and
//! Python for ML-DSA). OpenSSL and the Python packages are installed by `scripts/test.sh`; a
//! missing tool fails the test rather than skipping it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SO_PIN: &str = "so-secret-1234";
const PIN: &str = "user-pin-5678";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let e = Self { dir: tempfile::tempdir().unwrap() };
        let o = e.run(&["init", "--label", "test"]);
        assert!(o.status.success(), "init failed: {}", stderr(&o));
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
            .env("BULWARK_STATE_DIR", self.dir.path().join("state"))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "{args:?} failed: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs and expects a clean error: exit code 2 and one line on stderr containing `needle`.
    fn fails(&self, args: &[&str], needle: &str) -> String {
        let o = self.run(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?} should fail with 2; stderr: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err:?}");
        assert!(
            err.to_lowercase().contains(&needle.to_lowercase()),
            "{args:?}: {err:?} lacks {needle:?}"
        );
        err
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tool(name: &str) -> Command {
    let c = Command::new(name);
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .unwrap()
            .status
            .success(),
        "{name} is not installed: run the tests through scripts/test.sh, which installs it"
    );
    c
}

fn openssl(args: &[&str]) -> Output {
    tool("openssl").args(args).output().unwrap()
}

fn write(p: &Path, data: &[u8]) {
    std::fs::write(p, data).unwrap();
}

#[test]
fn every_key_type_generates_and_signature_defaults_verify_with_openssl() {
    let e = Env::new();
    let msg = e.path("msg.txt");
    write(&msg, b"attack at dawn\n");
    for (ty, how) in [
        ("rsa-2048", "dgst"),
        ("ec-p256", "dgst-sha256"),
        ("ec-p384", "dgst-sha384"),
        ("ec-p521", "dgst-sha512"),
        ("ec-secp256k1", "dgst-sha256"),
        ("ed25519", "rawin"),
    ] {
        let label = format!("k-{ty}");
        e.ok(&["key", "generate", "--type", ty, "--label", &label]);
        let pem = e.path(&format!("{ty}.pem"));
        let sig = e.path(&format!("{ty}.sig"));
        e.ok(&["key", "public", &label, "--out", pem.to_str().unwrap()]);
        let o = openssl(&["pkey", "-pubin", "-in", pem.to_str().unwrap(), "-noout", "-text"]);
        assert!(o.status.success(), "openssl cannot read the {ty} public key: {}", stderr(&o));
        e.ok(&[
            "sign",
            "--key",
            &label,
            "--in",
            msg.to_str().unwrap(),
            "--out",
            sig.to_str().unwrap(),
        ]);
        let o = if how == "rawin" {
            openssl(&[
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                pem.to_str().unwrap(),
                "-rawin",
                "-in",
                msg.to_str().unwrap(),
                "-sigfile",
                sig.to_str().unwrap(),
            ])
        } else {
            let d = match how {
                "dgst-sha384" => "-sha384",
                "dgst-sha512" => "-sha512",
                _ => "-sha256",
            };
            openssl(&[
                "dgst",
                d,
                "-verify",
                pem.to_str().unwrap(),
                "-signature",
                sig.to_str().unwrap(),
                msg.to_str().unwrap(),
            ])
        };
        assert!(
            o.status.success(),
            "openssl rejects the {ty} signature: {} {}",
            stderr(&o),
            String::from_utf8_lossy(&o.stdout)
        );
        // Our own verify agrees, and a tampered message is caught with exit code 1.
        e.ok(&[
            "verify",
            "--key",
            &label,
            "--in",
            msg.to_str().unwrap(),
            "--sig",
            sig.to_str().unwrap(),
        ]);
        let bad = e.path("bad.txt");
        write(&bad, b"attack at dusk\n");
        let o = e.run(&[
            "verify",
            "--key",
            &label,
            "--in",
            bad.to_str().unwrap(),
            "--sig",
            sig.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{ty}: tampered message must give exit 1");
        // OpenSSL rejects the tampered message too (the check above is not vacuous).
        let o = openssl(&[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            pem.to_str().unwrap(),
            "-rawin",
            "-in",
            bad.to_str().unwrap(),
            "-sigfile",
            sig.to_str().unwrap(),
        ]);
        if how == "rawin" {
            assert!(!o.status.success());
        }
    }
    for ty in [
        "rsa-3072",
        "rsa-4096",
        "ml-dsa-44",
        "ml-dsa-65",
        "ml-dsa-87",
        "ml-kem-768",
        "aes-128",
        "aes-256",
        "hmac-sha256",
    ] {
        e.ok(&["key", "generate", "--type", ty, "--label", &format!("k-{ty}")]);
    }
    let list = e.ok(&["key", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 6 * 2 + 6 * 2 + 3, "{list}");
}

#[test]
fn rsa_4096_and_pss_verify_with_openssl() {
    let e = Env::new();
    let msg = e.path("m");
    write(&msg, &[7u8; 1000]);
    e.ok(&["key", "generate", "--type", "rsa-3072", "--label", "r"]);
    let pem = e.path("r.pem");
    e.ok(&["key", "public", "r", "--out", pem.to_str().unwrap()]);
    let sig = e.path("r.sig");
    e.ok(&[
        "sign",
        "--key",
        "r",
        "--in",
        msg.to_str().unwrap(),
        "--out",
        sig.to_str().unwrap(),
        "--mechanism",
        "rsa-pss-sha256",
    ]);
    let o = openssl(&[
        "dgst",
        "-sha256",
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        "rsa_pss_saltlen:32",
        "-verify",
        pem.to_str().unwrap(),
        "-signature",
        sig.to_str().unwrap(),
        msg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn ml_dsa_signature_verifies_with_an_independent_implementation() {
    let e = Env::new();
    let msg = e.path("m");
    write(&msg, b"post-quantum hello");
    for (ty, class) in
        [("ml-dsa-44", "ML_DSA_44"), ("ml-dsa-65", "ML_DSA_65"), ("ml-dsa-87", "ML_DSA_87")]
    {
        e.ok(&["key", "generate", "--type", ty, "--label", ty]);
        let pem = e.path(&format!("{ty}.pem"));
        let sig = e.path(&format!("{ty}.sig"));
        e.ok(&["key", "public", ty, "--out", pem.to_str().unwrap()]);
        e.ok(&["sign", "--key", ty, "--in", msg.to_str().unwrap(), "--out", sig.to_str().unwrap()]);
        // dilithium-py (FIPS 204), from PyPI; the public key is the BIT STRING of the SPKI.
        let py = format!(
            r"
import base64, sys
from dilithium_py.ml_dsa import {class} as A
pem = open(sys.argv[1]).read()
der = base64.b64decode(''.join(l for l in pem.splitlines() if not l.startswith('-----')))
def tlv(b, i):
    t = b[i]; l = b[i+1]; i += 2
    if l & 0x80:
        n = l & 0x7f; l = int.from_bytes(b[i:i+n], 'big'); i += n
    return t, i, l
t, i, l = tlv(der, 0)            # SEQUENCE
t, j, l2 = tlv(der, i)           # AlgorithmIdentifier
t, k, l3 = tlv(der, j + l2)      # BIT STRING
pk = der[k+1:k+l3]
msg = open(sys.argv[2], 'rb').read(); sig = open(sys.argv[3], 'rb').read()
ok = A.verify(pk, msg, sig)
bad = A.verify(pk, msg + b'x', sig)
print(ok, bad)
sys.exit(0 if ok and not bad else 1)
"
        );
        let o = tool("python3")
            .args(["-c", &py, pem.to_str().unwrap(), msg.to_str().unwrap(), sig.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{ty}: dilithium-py: {} {}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        );
    }
}

#[test]
fn encrypt_decrypt_round_trip_and_tamper() {
    let e = Env::new();
    e.ok(&["key", "generate", "--type", "aes-256", "--label", "data"]);
    let pt = e.path("pt");
    let ct = e.path("ct");
    let back = e.path("back");
    write(&pt, b"the quick brown fox");
    e.ok(&[
        "encrypt",
        "--key",
        "data",
        "--in",
        pt.to_str().unwrap(),
        "--out",
        ct.to_str().unwrap(),
    ]);
    let c = std::fs::read(&ct).unwrap();
    // The envelope names the key version that made it (docs/cli.md).
    assert_eq!(&c[..8], b"BWK2\0\0\0\x01");
    assert_eq!(c.len(), 8 + 12 + 19 + 16);
    e.ok(&[
        "decrypt",
        "--key",
        "data",
        "--in",
        ct.to_str().unwrap(),
        "--out",
        back.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&back).unwrap(), b"the quick brown fox");
    // Two encryptions use different nonces.
    let ct2 = e.path("ct2");
    e.ok(&[
        "encrypt",
        "--key",
        "data",
        "--in",
        pt.to_str().unwrap(),
        "--out",
        ct2.to_str().unwrap(),
    ]);
    assert_ne!(std::fs::read(&ct2).unwrap()[4..16], c[4..16]);
    let mut t = c.clone();
    let last = t.len() - 1;
    t[last] ^= 1;
    write(&ct, &t);
    e.fails(
        &[
            "decrypt",
            "--key",
            "data",
            "--in",
            ct.to_str().unwrap(),
            "--out",
            back.to_str().unwrap(),
        ],
        "invalid",
    );
}

#[test]
fn export_is_refused_for_sensitive_and_private_keys() {
    let e = Env::new();
    e.ok(&["key", "generate", "--type", "aes-256", "--label", "s"]);
    e.fails(&["key", "export", "s"], "sensitive");
    e.ok(&["key", "generate", "--type", "aes-128", "--label", "x", "--extractable"]);
    e.fails(&["key", "export", "x"], "sensitive");
    e.ok(&["key", "generate", "--type", "ec-p256", "--label", "p", "--extractable"]);
    e.fails(&["key", "export", "p"], "private keys never leave");
    e.ok(&["key", "generate", "--type", "aes-128", "--label", "open", "--not-sensitive"]);
    let hex = e.ok(&["key", "export", "open"]);
    assert_eq!(hex.trim().len(), 32);
    let show = e.ok(&["key", "show", "s", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    let a = &v[0]["attributes"];
    assert_eq!(a["CKA_SENSITIVE"], true);
    assert_eq!(a["CKA_EXTRACTABLE"], false);
    assert_eq!(a["CKA_ALWAYS_SENSITIVE"], true);
    assert_eq!(a["CKA_NEVER_EXTRACTABLE"], true);
    assert_eq!(a["CKA_LOCAL"], true);
    assert!(a.get("CKA_VALUE").is_none(), "no key material in show output");
}

#[test]
fn clear_errors_for_bad_input() {
    let e = Env::new();
    e.ok(&["key", "generate", "--type", "ec-p256", "--label", "k"]);
    e.fails(&["key", "show", "nope"], "no key labelled");
    e.fails(&["key", "generate", "--type", "dsa-1024", "--label", "z"], "unknown key type");
    e.fails(&["key", "generate", "--type", "ec-p256", "--label", "k"], "already exists");
    let o = e.cmd().env("BULWARK_PIN", "wrong-pin").args(["key", "list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("incorrect PIN"), "{}", stderr(&o));
    let o =
        e.cmd().env("BULWARK_STORE", e.path("missing.db")).args(["key", "list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no store at"), "{}", stderr(&o));
    let o = e.cmd().env_remove("BULWARK_PIN").args(["key", "list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("BULWARK_PIN"), "{}", stderr(&o));
    // A PIN can come from a file.
    let pf = e.path("pin");
    write(&pf, format!("{PIN}\n").as_bytes());
    // ... but not from one others can read (like ssh with an unprotected key).
    std::fs::set_permissions(&pf, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let o = e
        .cmd()
        .env_remove("BULWARK_PIN")
        .args(["--pin-file", pf.to_str().unwrap(), "key", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    std::fs::set_permissions(&pf, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let o = e
        .cmd()
        .env_remove("BULWARK_PIN")
        .args(["--pin-file", pf.to_str().unwrap(), "key", "list"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Refusing to init over an existing store.
    e.fails(&["init", "--label", "again"], "already exists");
}

#[test]
fn lockout_after_ten_failures_and_so_unlock() {
    let e = Env::new();
    for _ in 0..10 {
        let o = e.cmd().env("BULWARK_PIN", "bad-pin-0").args(["key", "list"]).output().unwrap();
        assert!(stderr(&o).contains("incorrect PIN"), "{}", stderr(&o));
    }
    // Locked now, even with the right PIN.
    e.fails(&["key", "list"], "locked");
    let st = e.ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_eq!(v["user_pin_locked"], true);
    // The SO sets a new user PIN, which unlocks.
    let o =
        e.cmd().env("BULWARK_NEW_PIN", "fresh-pin-99").args(["pin", "init-user"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = e.cmd().env("BULWARK_PIN", "fresh-pin-99").args(["key", "list"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    e.fails(&["key", "list"], "incorrect PIN");
    // The user changes their PIN.
    let o = e
        .cmd()
        .env("BULWARK_PIN", "fresh-pin-99")
        .env("BULWARK_NEW_PIN", "third-pin-77")
        .args(["pin", "change"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = e.cmd().env("BULWARK_PIN", "third-pin-77").args(["key", "list"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn tampered_store_says_integrity() {
    let e = Env::new();
    e.ok(&["key", "generate", "--type", "ec-p256", "--label", "k"]);
    let conn = rusqlite_free_edit(
        &e.store(),
        "UPDATE objects SET label = CAST('evil' AS BLOB) WHERE label = CAST('k' AS BLOB)",
    );
    assert!(conn, "edit applied");
    e.fails(&["key", "list"], "integrity");
}

/// Edits the store with the sqlite3 shell if present, else through Python's sqlite3 module
/// (both independent of our code). Returns whether a row changed.
fn rusqlite_free_edit(db: &Path, sql: &str) -> bool {
    let py = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nn=c.execute(sys.argv[2]).rowcount\nc.commit()\nprint(n)";
    let o = tool("python3").args(["-c", py, db.to_str().unwrap(), sql]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).trim() != "0"
}

#[test]
fn rolled_back_store_is_detected() {
    let e = Env::new();
    e.ok(&["key", "generate", "--type", "aes-256", "--label", "a"]);
    // Snapshot the store (checkpointed into the main file), then change it.
    let py = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.execute('PRAGMA wal_checkpoint(TRUNCATE)')\nc.close()";
    assert!(tool("python3")
        .args(["-c", py, e.store().to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    let snap = e.path("snap.db");
    std::fs::copy(e.store(), &snap).unwrap();
    e.ok(&["key", "generate", "--type", "aes-256", "--label", "b"]);
    assert!(tool("python3")
        .args(["-c", py, e.store().to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    // Roll back: old file in place, no WAL.
    let _ = std::fs::remove_file(e.store().with_extension("db-wal"));
    let _ = std::fs::remove_file(e.store().with_extension("db-shm"));
    std::fs::copy(&snap, e.store()).unwrap();
    e.fails(&["key", "list"], "integrity");
}

#[test]
fn random_selftest_status() {
    let e = Env::new();
    let h = e.ok(&["random", "--bytes", "32", "--hex"]);
    assert_eq!(h.trim().len(), 64);
    assert_ne!(h, e.ok(&["random", "--bytes", "32", "--hex"]));
    let raw = e.cmd().args(["random", "--bytes", "100"]).output().unwrap();
    assert_eq!(raw.stdout.len(), 100);
    e.fails(&["random", "--bytes", "0"], "between");
    let st = e.ok(&["selftest"]);
    assert!(st.contains("PASS") && !st.contains("FAIL"), "{st}");
    assert!(st.lines().count() >= 10, "a KAT per algorithm family: {st}");
    let s = e.ok(&["status"]);
    assert!(s.contains("label:        test"), "{s}");
}

#[test]
fn two_processes_see_each_others_changes() {
    let e = Env::new();
    // A long-running reader process lists keys twice with a writer in between; a fresh
    // process each time is the simple case, so also check a concurrent writer race.
    let mut kids = Vec::new();
    for i in 0..4 {
        let mut c = e.cmd();
        c.args(["key", "generate", "--type", "ec-p256", "--label", &format!("par-{i}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        kids.push(c.spawn().unwrap());
    }
    for k in kids {
        let o = k.wait_with_output().unwrap();
        assert!(o.status.success(), "concurrent writer failed: {}", stderr(&o));
    }
    let v: serde_json::Value = serde_json::from_str(&e.ok(&["key", "list", "--json"])).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 8);
}

#[test]
fn killed_writer_leaves_a_usable_store() {
    let e = Env::new();
    e.ok(&["key", "generate", "--type", "aes-256", "--label", "before"]);
    for round in 0..6 {
        let mut c = e.cmd();
        c.args(["key", "generate", "--type", "rsa-2048", "--label", &format!("victim-{round}")]);
        let mut child = c.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(40 + round * 35));
        let _ = child.kill();
        let _ = child.wait();
    }
    // Whatever got committed is whole, and everything listed verifies.
    let v: serde_json::Value = serde_json::from_str(&e.ok(&["key", "list", "--json"])).unwrap();
    for o in v.as_array().unwrap() {
        let label = o["attributes"]["CKA_LABEL"].as_str().unwrap();
        e.ok(&["key", "show", label]);
    }
    let pt = e.path("pt");
    write(&pt, b"x");
    e.ok(&[
        "encrypt",
        "--key",
        "before",
        "--in",
        pt.to_str().unwrap(),
        "--out",
        e.path("ct").to_str().unwrap(),
    ]);
}

/// `key wrap` exports a key under a wrapping key (RFC 5649 by default); stock OpenSSL unwraps
/// it to the same bytes. Unextractable keys and unknown mechanisms are refused.
#[test]
fn key_wrap_output_unwraps_with_openssl() {
    let e = Env::new();
    e.ok(&["key", "generate", "--type", "aes-256", "--label", "kek", "--not-sensitive"]);
    e.ok(&["key", "generate", "--type", "aes-128", "--label", "dk", "--not-sensitive"]);
    e.ok(&["key", "generate", "--type", "aes-128", "--label", "locked"]);
    let out = e.path("w.bin");
    let o = out.to_str().unwrap();
    e.ok(&["key", "wrap", "dk", "--wrapping-key", "kek", "--out", o]);
    let kek = e.ok(&["key", "export", "kek"]);
    let dk = e.ok(&["key", "export", "dk"]);
    let plain = openssl(&[
        "enc",
        "-d",
        "-id-aes256-wrap-pad",
        "-K",
        kek.trim(),
        "-iv",
        "A65959A6",
        "-in",
        o,
    ]);
    assert!(plain.status.success(), "openssl: {}", stderr(&plain));
    assert_eq!(hex::encode(&plain.stdout), dk.trim());
    e.fails(&["key", "wrap", "locked", "--wrapping-key", "kek", "--out", o], "not extractable");
    e.fails(
        &["key", "wrap", "dk", "--wrapping-key", "kek", "--out", o, "--mechanism", "x"],
        "mechanism",
    );
    e.fails(&["key", "wrap", "dk", "--wrapping-key", "nope", "--out", o], "nope");
}
