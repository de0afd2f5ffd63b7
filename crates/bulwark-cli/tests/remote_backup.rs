//! `bulwark --endpoint URL backup` / `restore` against two real bulwarkd instances (dev mode,
//! in-process): a backup of one HSM restored into a fresh one signs and decrypts like the
//! original; refusals exit 2 with one line and change nothing.

use std::path::Path;
use std::process::{Command, Output};

use bulwarkd::dev::DevServer;

const PASS: &str = "remote backup passphrase";

fn env_file(dir: &Path, file: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

fn bulwark(dir: &Path, env: &str, pass: &str, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bulwark"));
    c.args(args).env_remove("BULWARK_STORE").env("BULWARK_BACKUP_PASSPHRASE", pass);
    for (k, v) in env_file(dir, env) {
        c.env(k, v);
    }
    c.output().unwrap()
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
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err:?}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

#[test]
fn remote_backup_restores_into_a_fresh_hsm() {
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("BULWARK_STATE_DIR", tmp.path().join("state"));
    let one = DevServer::start(&tmp.path().join("one")).unwrap();
    let two = DevServer::start(&tmp.path().join("two")).unwrap();
    let (d1, d2) = (one.dir.clone(), two.dir.clone());
    let f = |n: &str| tmp.path().join(n).display().to_string();

    ok(&bulwark(
        &d1,
        "officer.env",
        PASS,
        &["key", "generate", "--type", "ec-p256", "--label", "web"],
    ));
    ok(&bulwark(
        &d1,
        "officer.env",
        PASS,
        &["key", "generate", "--type", "aes-256", "--label", "data"],
    ));
    std::fs::write(tmp.path().join("msg"), b"kept across HSMs").unwrap();
    ok(&bulwark(
        &d1,
        "officer.env",
        PASS,
        &["encrypt", "--key", "data", "--in", &f("msg"), "--out", &f("msg.enc")],
    ));

    // Only the security officer takes a backup.
    fails(
        &bulwark(&d1, "officer.env", PASS, &["backup", "--out", &f("no.bwb")]),
        "not permitted for role crypto-officer",
    );
    assert!(!tmp.path().join("no.bwb").exists());
    let out = ok(&bulwark(&d1, "so.env", PASS, &["backup", "--out", &f("one.bwb")]));
    assert!(out.contains("backup written") && out.contains("3 objects"), "{out}");
    assert!(!tmp.path().join("one.bwb.part").exists());

    // Refused: a wrong passphrase, a store with keys; nothing changes on either HSM.
    fails(
        &bulwark(&d2, "so.env", "not the passphrase", &["restore", "--in", &f("one.bwb")]),
        "wrong backup passphrase",
    );
    fails(&bulwark(&d1, "so.env", PASS, &["restore", "--in", &f("one.bwb")]), "not empty");
    let list = ok(&bulwark(&d2, "officer.env", PASS, &["key", "list"]));
    assert!(!list.contains("web"), "{list}");

    let out = ok(&bulwark(&d2, "so.env", PASS, &["restore", "--in", &f("one.bwb")]));
    assert!(out.contains("restored 3 objects"), "{out}");
    // The restored HSM decrypts what the original encrypted, and its signature verifies there.
    ok(&bulwark(
        &d2,
        "officer.env",
        PASS,
        &["decrypt", "--key", "data", "--in", &f("msg.enc"), "--out", &f("msg.dec")],
    ));
    assert_eq!(std::fs::read(tmp.path().join("msg.dec")).unwrap(), b"kept across HSMs");
    ok(&bulwark(
        &d2,
        "officer.env",
        PASS,
        &["sign", "--key", "web", "--in", &f("msg"), "--out", &f("msg.sig")],
    ));
    ok(&bulwark(
        &d1,
        "officer.env",
        PASS,
        &["verify", "--key", "web", "--in", &f("msg"), "--sig", &f("msg.sig")],
    ));
}
