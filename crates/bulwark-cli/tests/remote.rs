//! `bulwark --endpoint` against a real bulwarkd (dev mode, in-process, loopback ephemeral port):
//! the CLI as a crypto officer and as the security officer, and custodians unsealing one share
//! per call. Credentials travel only in the environment, as `officer.env` / `so.env` set them.

use std::path::Path;
use std::process::{Command, Output};

use bulwarkd::dev::DevServer;

fn env_file(dir: &Path, file: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default() // "none": no credentials at all
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

fn bulwark(dir: &Path, env: &str, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bulwark"));
    c.args(args).env_remove("BULWARK_STORE");
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

#[test]
fn remote_cli_keys_sign_seal_unseal() {
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("BULWARK_STATE_DIR", tmp.path().join("state"));
    let server = DevServer::start(&tmp.path().join("dev")).unwrap();
    let dir = server.dir.clone();
    let tmp_file = |n: &str| tmp.path().join(n).display().to_string();

    ok(&bulwark(&dir, "officer.env", &["key", "generate", "--type", "ec-p256", "--label", "web"]));
    let list = ok(&bulwark(&dir, "officer.env", &["key", "list"]));
    assert!(list.contains("web") && list.contains("PrivateKey"), "{list}");
    ok(&bulwark(&dir, "officer.env", &["key", "public", "web", "--out", &tmp_file("web.pem")]));
    std::fs::write(tmp.path().join("msg"), b"signed through bulwarkd").unwrap();
    ok(&bulwark(
        &dir,
        "officer.env",
        &["sign", "--key", "web", "--in", &tmp_file("msg"), "--out", &tmp_file("msg.sig")],
    ));
    let verified = ok(&bulwark(
        &dir,
        "officer.env",
        &["verify", "--key", "web", "--in", &tmp_file("msg"), "--sig", &tmp_file("msg.sig")],
    ));
    assert!(verified.contains("signature OK"));
    let osl = Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            &tmp_file("web.pem"),
            "-signature",
            &tmp_file("msg.sig"),
            &tmp_file("msg"),
        ])
        .output()
        .unwrap();
    assert!(osl.status.success(), "openssl: {}", String::from_utf8_lossy(&osl.stdout));
    std::fs::write(tmp.path().join("other"), b"not what was signed").unwrap();
    let bad = bulwark(
        &dir,
        "officer.env",
        &["verify", "--key", "web", "--in", &tmp_file("other"), "--sig", &tmp_file("msg.sig")],
    );
    assert_eq!(bad.status.code(), Some(1));
    let rnd = ok(&bulwark(&dir, "officer.env", &["random", "--bytes", "16", "--hex"]));
    assert_eq!(rnd.trim().len(), 32);

    // A crypto officer cannot seal; the security officer can.
    let denied = bulwark(&dir, "officer.env", &["seal"]);
    assert_eq!(denied.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("not permitted"));
    ok(&bulwark(&dir, "so.env", &["seal"]));
    let st = ok(&bulwark(&dir, "officer.env", &["status"]));
    assert!(st.contains("SEALED (unseal progress 0/2)"), "{st}");
    let refused = bulwark(&dir, "officer.env", &["key", "list"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("sealed"));

    // Custodians: one share per call, progress reported; a repeated share does not count.
    let share = |i: u8| dir.join("shares").join(format!("share-{i}.json")).display().to_string();
    let progress = ok(&bulwark(&dir, "officer.env", &["unseal", "--share", &share(3)]));
    assert!(progress.contains("1/2 (still sealed)"), "{progress}");
    let again = bulwark(&dir, "officer.env", &["unseal", "--share", &share(3)]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already presented"));
    let progress = ok(&bulwark(&dir, "officer.env", &["unseal", "--share", &share(1)]));
    assert!(progress.contains("unsealed"), "{progress}");
    // The security officer manages users; a crypto officer cannot.
    let mut add = Command::new(env!("CARGO_BIN_EXE_bulwark"));
    add.args(["user", "add", "carol", "--role", "crypto-user", "--totp"]);
    for (k, v) in env_file(&dir, "so.env") {
        add.env(k, v);
    }
    let added = ok(&add.env("BULWARK_NEW_PASSWORD", "carol-password").output().unwrap());
    assert!(added.contains("otpauth://totp/"), "{added}");
    ok(&bulwark(&dir, "officer.env", &["access", "web", "--grant", "user:carol=sign,verify"]));
    let users = ok(&bulwark(&dir, "so.env", &["user", "list"]));
    assert!(users.contains("carol") && users.contains("crypto-user"), "{users}");
    assert_eq!(bulwark(&dir, "officer.env", &["user", "list"]).status.code(), Some(2));
    let bad = bulwark(&dir, "officer.env", &["access", "web", "--grant", "carol"]);
    assert_eq!(bad.status.code(), Some(2));
    ok(&bulwark(&dir, "so.env", &["user", "delete", "carol"]));
    assert!(!ok(&bulwark(&dir, "so.env", &["user", "list"])).contains("carol"));
    let json = ok(&bulwark(&dir, "officer.env", &["status", "--json"]));
    assert!(json.contains("\"sealed\": false"), "{json}");
    ok(&bulwark(
        &dir,
        "officer.env",
        &["verify", "--key", "web", "--in", &tmp_file("msg"), "--sig", &tmp_file("msg.sig")],
    ));
}

fn fails(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(2), "stdout {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Approvers make their keys and sign requests with the CLI; the security officer's user
/// changes and zeroization go through only with a quorum of them; auditors export the log.
#[test]
fn remote_cli_quorum_approvals_audit_export_and_zeroize() {
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("BULWARK_STATE_DIR", tmp.path().join("state"));
    let p = |n: &str| tmp.path().join(n).display().to_string();
    // Approver keys, made offline; the printed line goes into the daemon's configuration.
    let mut approvers = Vec::new();
    for name in ["ann", "ben", "cat"] {
        let out = ok(&bulwark(
            tmp.path(),
            "none",
            &["approval", "keygen", "--name", name, "--out", &p(&format!("{name}.key"))],
        ));
        let hex =
            out.split("public_key = \"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        approvers.push(bulwarkd::config::Approver { name: name.into(), public_key: hex });
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(tmp.path().join(format!("{name}.key"))).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "approver keys are private");
    }
    // An existing key file is never overwritten.
    fails(&bulwark(
        tmp.path(),
        "none",
        &["approval", "keygen", "--name", "ann", "--out", &p("ann.key")],
    ));
    let server = DevServer::start_with(&tmp.path().join("dev"), |cfg| {
        cfg.approvals = Some(bulwarkd::config::ApprovalsConfig { threshold: 2, approvers });
    })
    .unwrap();
    let dir = server.dir.clone();
    let so = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bulwark"));
        c.args(args).env_remove("BULWARK_STORE").env("BULWARK_NEW_PASSWORD", "hal-password-1");
        for (k, v) in env_file(&dir, "so.env") {
            c.env(k, v);
        }
        c.output().unwrap()
    };

    // Without approvals: refused, and the request is written for the approvers.
    let err = fails(&so(&[
        "user",
        "add",
        "hal",
        "--role",
        "auditor",
        "--approval-request-out",
        &p("req.json"),
    ]));
    assert!(err.contains("quorum approval required") && err.contains("approval sign"), "{err}");
    let req: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p("req.json")).unwrap()).unwrap();
    assert_eq!(req["op"], "create-user");
    assert_eq!(req["fields"][1], "auditor");
    for a in ["ann", "cat"] {
        let shown = ok(&bulwark(
            tmp.path(),
            "none",
            &[
                "approval",
                "sign",
                "--key",
                &p(&format!("{a}.key")),
                "--request",
                &p("req.json"),
                "--out",
                &p(&format!("{a}.ok")),
            ],
        ));
        assert!(shown.contains("create-user") && shown.contains("hal"), "{shown}");
    }
    // One approval is not enough; an approval of another request does not count.
    fails(&so(&["user", "add", "hal", "--role", "auditor", "--approval", &p("ann.ok")]));
    let err = fails(&so(&[
        "user",
        "add",
        "hal",
        "--role",
        "crypto-user",
        "--approval",
        &p("ann.ok"),
        "--approval",
        &p("cat.ok"),
    ]));
    assert!(err.contains("different request"), "{err}");
    assert!(!ok(&so(&["user", "list"])).contains("hal"));
    ok(&so(&[
        "user",
        "add",
        "hal",
        "--role",
        "auditor",
        "--approval",
        &p("ann.ok"),
        "--approval",
        &p("cat.ok"),
    ]));
    assert!(ok(&so(&["user", "list"])).contains("hal"));

    // The auditor exports the log over the API; it verifies offline.
    let auditor = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bulwark"));
        c.args(args).env_remove("BULWARK_STORE");
        for (k, v) in env_file(&dir, "so.env") {
            c.env(k, v);
        }
        c.env("BULWARK_USER", "hal").env("BULWARK_PASSWORD", "hal-password-1");
        c.output().unwrap()
    };
    ok(&auditor(&["audit", "export", "--out", &p("log.jsonl")]));
    ok(&auditor(&["audit", "public-key", "--out", &p("audit.pem")]));
    let v = ok(&bulwark(
        tmp.path(),
        "none",
        &["audit", "verify", "--log", &p("log.jsonl"), "--public-key", &p("audit.pem")],
    ));
    assert!(v.starts_with("OK: "), "{v}");
    let log = std::fs::read_to_string(p("log.jsonl")).unwrap();
    assert!(log.contains("approved by [ann,cat]"), "the approvers are in the log");
    assert!(!log.contains("hal-password-1"));
    // A crypto officer may not read it.
    fails(&bulwark(&dir, "officer.env", &["audit", "export", "--out", &p("nope.jsonl")]));

    // Key export under wrap (crypto officer): needs its own quorum too.
    let officer = |args: &[&str]| bulwark(&dir, "officer.env", args);
    ok(&officer(&["key", "generate", "--type", "aes-256", "--label", "kek"]));
    ok(&officer(&["key", "generate", "--type", "aes-256", "--label", "dk", "--extractable"]));
    // A daemon's keys leave only under keys its security officer marked trusted.
    fails(&officer(&["trust", "kek"]));
    ok(&so(&["trust", "kek"]));
    let wrap = ["key", "wrap", "dk", "--wrapping-key", "kek", "--out"];
    let err =
        fails(&officer(&with(&wrap, &[&p("dk.wrapped"), "--approval-request-out", &p("x.json")])));
    assert!(err.contains("quorum approval required"), "{err}");
    for a in ["ann", "ben"] {
        let key = p(&format!("{a}.key"));
        let out = p(&format!("{a}.x"));
        let req = p("x.json");
        ok(&bulwark(
            tmp.path(),
            "none",
            &["approval", "sign", "--key", &key, "--request", &req, "--out", &out],
        ));
    }
    let (ann, ben) = (p("ann.x"), p("ben.x"));
    ok(&officer(&with(&wrap, &[&p("dk.wrapped"), "--approval", &ann, "--approval", &ben])));
    assert_eq!(std::fs::read(p("dk.wrapped")).unwrap().len(), 40, "RFC 5649 wrap of 32 bytes");
    // Those approvals were for that one request, once.
    fails(&officer(&with(&wrap, &[&p("dk.wrapped2"), "--approval", &ann, "--approval", &ben])));

    // Zeroize: needs its own quorum.
    ok(&bulwark(
        &dir,
        "officer.env",
        &["key", "generate", "--type", "aes-256", "--label", "doomed"],
    ));
    fails(&so(&["zeroize", "--yes", "--approval-request-out", &p("z.json")]));
    fails(&so(&["zeroize", "--yes", "--approval", &p("ann.ok"), "--approval", &p("cat.ok")]));
    ok(&bulwark(&dir, "officer.env", &["key", "show", "doomed"]));
    for a in ["ben", "cat"] {
        ok(&bulwark(
            tmp.path(),
            "none",
            &[
                "approval",
                "sign",
                "--key",
                &p(&format!("{a}.key")),
                "--request",
                &p("z.json"),
                "--out",
                &p(&format!("{a}.z")),
            ],
        ));
    }
    ok(&so(&["zeroize", "--yes", "--approval", &p("ben.z"), "--approval", &p("cat.z")]));
    let st = ok(&so(&["status"]));
    assert!(st.contains("ZEROIZED"), "{st}");
    let err = fails(&bulwark(&dir, "officer.env", &["key", "show", "doomed"]));
    assert!(!err.is_empty());
}

#[test]
fn remote_cli_bench_reports_rates_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("BULWARK_STATE_DIR", tmp.path().join("state"));
    let server = DevServer::start(&tmp.path().join("dev")).unwrap();
    let dir = server.dir.clone();
    for op in ["sign", "encrypt"] {
        let out = ok(&bulwark(
            &dir,
            "officer.env",
            &["bench", "--op", op, "--clients", "2", "--seconds", "1", "--batch", "4", "--json"],
        ));
        let runs: Vec<serde_json::Value> =
            out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(runs.len(), 2, "{out}");
        for r in &runs {
            assert!(r["ops"].as_u64().unwrap() > 0 && r["errors"] == 0, "{r}");
            assert!(r["p99_ms"].as_f64().unwrap() >= r["p50_ms"].as_f64().unwrap());
        }
    }
    // The temporary keys are gone.
    let list = ok(&bulwark(&dir, "officer.env", &["key", "list"]));
    assert!(!list.contains("bench-"), "{list}");
    // Bad input: a clear error, exit 2.
    let o = bulwark(&dir, "officer.env", &["bench", "--clients", "0"]);
    assert_eq!(o.status.code(), Some(2));
}

fn with<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    [base, more].concat()
}
