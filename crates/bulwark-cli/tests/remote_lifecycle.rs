//! `bulwark --endpoint ... key state|suspend|resume|deactivate|compromise|dates` against a real
//! bulwarkd (dev mode, in-process, loopback ephemeral port): the lifecycle commands behave as
//! on an embedded store, through the daemon's `KeyState` / `ChangeKeyState`.

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

fn bulwark(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bulwark"));
    c.args(args).env_remove("BULWARK_STORE");
    for (k, v) in env_file(dir, "officer.env") {
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
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

fn states(dir: &Path, label: &str) -> Vec<String> {
    let out = ok(&bulwark(dir, &["key", "state", label, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array().unwrap().iter().map(|o| o["state"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn remote_cli_lifecycle() {
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("BULWARK_STATE_DIR", tmp.path().join("state"));
    let server = DevServer::start(&tmp.path().join("dev")).unwrap();
    let dir = server.dir.clone();
    let f = |n: &str| tmp.path().join(n).display().to_string();
    std::fs::write(tmp.path().join("msg"), b"m").unwrap();
    let sign = ["sign", "--key", "k", "--in", &f("msg"), "--out", &f("sig")];
    let verify = ["verify", "--key", "k", "--in", &f("msg"), "--sig", &f("sig")];

    ok(&bulwark(&dir, &["key", "generate", "--type", "ec-p256", "--label", "k"]));
    assert_eq!(states(&dir, "k"), ["active", "active"]);
    ok(&bulwark(&dir, &sign));
    ok(&bulwark(&dir, &["key", "suspend", "k"]));
    fails(&bulwark(&dir, &sign), "suspended");
    fails(&bulwark(&dir, &["key", "activate", "k"]), "only a pre-activation key can be activated");
    ok(&bulwark(&dir, &["key", "resume", "k"]));
    ok(&bulwark(&dir, &["key", "dates", "k", "--deactivate-at", "2001-01-01T00:00:00Z"]));
    assert_eq!(states(&dir, "k"), ["deactivated", "deactivated"]);
    fails(&bulwark(&dir, &sign), "deactivated");
    let v = bulwark(&dir, &verify);
    ok(&v);
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(err.contains("note: key \"k\" is deactivated"), "{err}");
    ok(&bulwark(&dir, &["key", "compromise", "k"]));
    let text = ok(&bulwark(&dir, &["key", "state", "k"]));
    assert!(text.contains("compromised") && text.contains("2001-01-01T00:00:00Z"), "{text}");
    fails(&bulwark(&dir, &["key", "state", "nope"]), "nope");

    // Dates at generation, in the same write as the key: pre-activation from the start.
    ok(&bulwark(
        &dir,
        &[
            "key",
            "generate",
            "--type",
            "aes-256",
            "--label",
            "later",
            "--activate-at",
            "2999-01-01T00:00:00Z",
        ],
    ));
    assert_eq!(states(&dir, "later"), ["pre-activation"]);
    let list = ok(&bulwark(&dir, &["key", "list"]));
    assert!(list.contains("STATE") && list.contains("pre-activation"), "{list}");
    let show = ok(&bulwark(&dir, &["key", "show", "k"]));
    assert!(show.contains("state        compromised"), "{show}");
}
