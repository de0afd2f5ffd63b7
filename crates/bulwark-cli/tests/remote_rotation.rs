//! `bulwark --endpoint ... key rotate|rotation|history|min-decrypt-version` and `--key-version`
//! against a real bulwarkd (dev mode, in-process, loopback ephemeral port): versions behave as
//! on an embedded store, through the daemon's `RotateKey`, `KeyVersions` and `SetKeyRotation`
//! and the `key_version` fields; only a crypto officer rotates.

#![allow(clippy::many_single_char_names)]

use std::path::Path;
use std::process::{Command, Output};

use bulwarkd::dev::DevServer;

fn env_file(dir: &Path, file: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

fn bulwark_as(dir: &Path, who: &str, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bulwark"));
    c.args(args).env_remove("BULWARK_STORE");
    for (k, v) in env_file(dir, who) {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "stderr {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.to_lowercase().contains(needle), "{err:?} lacks {needle:?}");
}

#[test]
fn remote_cli_versions_and_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("BULWARK_STATE_DIR", tmp.path().join("state"));
    let server = DevServer::start(&tmp.path().join("dev")).unwrap();
    let dir = server.dir.clone();
    let b = |args: &[&str]| bulwark_as(&dir, "officer.env", args);
    let f = |n: &str| tmp.path().join(n).display().to_string();
    std::fs::write(tmp.path().join("m1"), b"one").unwrap();
    std::fs::write(tmp.path().join("m2"), b"two").unwrap();

    // A signing key with a rotation period; sign with v1, rotate, sign with v2.
    let out =
        ok(&b(&["key", "generate", "--type", "ec-p256", "--label", "k", "--rotate-every", "30d"]));
    assert!(out.contains("rotates every 30d; next rotation"), "{out}");
    ok(&b(&["sign", "--key", "k", "--in", &f("m1"), "--out", &f("s1")]));
    let pem1 = ok(&b(&["key", "public", "k"]));
    let out = ok(&b(&["key", "rotate", "k"]));
    assert!(out.contains("version 2 is current"), "{out}");
    ok(&b(&["sign", "--key", "k", "--in", &f("m2"), "--out", &f("s2")]));
    assert_eq!(ok(&b(&["key", "public", "k", "--key-version", "1"])), pem1);
    assert_ne!(ok(&b(&["key", "public", "k"])), pem1);
    ok(&b(&["verify", "--key", "k", "--in", &f("m2"), "--sig", &f("s2")]));
    let v = b(&["verify", "--key", "k", "--in", &f("m1"), "--sig", &f("s1")]);
    assert_eq!(v.status.code(), Some(1), "the label names v2");
    let v = b(&["verify", "--key", "k", "--key-version", "1", "--in", &f("m1"), "--sig", &f("s1")]);
    ok(&v);
    assert!(String::from_utf8_lossy(&v.stderr).contains("deactivated"));
    fails(
        &b(&["sign", "--key", "k", "--key-version", "1", "--in", &f("m1"), "--out", &f("x")]),
        "deactivated",
    );
    let show = ok(&b(&["key", "show", "k"]));
    assert!(show.contains("versions:") && show.contains("rotation: every 30d"), "{show}");

    // The history bundle from the daemon verifies both signatures offline.
    ok(&b(&["key", "history", "k", "--out", &f("k.json")]));
    let o = ok(&b(&["verify", "--bundle", &f("k.json"), "--in", &f("m1"), "--sig", &f("s1")]));
    assert!(o.contains("version 1"), "{o}");
    let o = ok(&b(&["verify", "--bundle", &f("k.json"), "--in", &f("m2"), "--sig", &f("s2")]));
    assert!(o.contains("version 2"), "{o}");

    // Envelopes name their version; the minimum decryption version retires v1.
    ok(&b(&["key", "generate", "--type", "aes-256", "--label", "d"]));
    ok(&b(&["encrypt", "--key", "d", "--in", &f("m1"), "--out", &f("c1")]));
    ok(&b(&["key", "rotate", "d"]));
    ok(&b(&["encrypt", "--key", "d", "--in", &f("m2"), "--out", &f("c2")]));
    assert_eq!(&std::fs::read(f("c1")).unwrap()[..8], b"BWK2\0\0\0\x01");
    assert_eq!(&std::fs::read(f("c2")).unwrap()[..8], b"BWK2\0\0\0\x02");
    ok(&b(&["decrypt", "--key", "d", "--in", &f("c1"), "--out", &f("p1")]));
    assert_eq!(std::fs::read(f("p1")).unwrap(), b"one");
    ok(&b(&["decrypt", "--key", "d", "--in", &f("c2"), "--out", &f("p2")]));
    assert_eq!(std::fs::read(f("p2")).unwrap(), b"two");
    ok(&b(&["key", "min-decrypt-version", "d", "2"]));
    fails(
        &b(&["decrypt", "--key", "d", "--in", &f("c1"), "--out", &f("p1")]),
        "minimum decryption",
    );
    ok(&b(&["decrypt", "--key", "d", "--in", &f("c2"), "--out", &f("p2")]));
    ok(&b(&["key", "rotation", "d", "--every", "90d"]));
    ok(&b(&["key", "rotation", "d", "--off"]));

    // A crypto user may not rotate or change rotation (the same role check as every other
    // key-management RPC).
    let u = |args: &[&str]| bulwark_as(&dir, "dev.env", args);
    fails(&u(&["key", "rotate", "k"]), "permission");
    fails(&u(&["key", "rotation", "k", "--off"]), "permission");
    fails(&u(&["key", "min-decrypt-version", "d", "2"]), "permission");
    let show = ok(&b(&["key", "show", "k"]));
    assert!(show.contains("rotation: every 30d"), "nothing changed: {show}");
}
