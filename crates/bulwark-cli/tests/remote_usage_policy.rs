//! `bulwark --endpoint ... key policy | use-approvers | use-request` and `--use-approval`
//! against a real bulwarkd (dev mode, in-process, loopback ephemeral port): quotas, principals
//! by user name, and per-use quorum through the daemon's `KeyPolicy` / `SetKeyPolicy` /
//! `SetUseApprovers` and the approvals metadata of `Sign`.

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
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

#[test]
fn remote_usage_policy_and_per_use_quorum() {
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("BULWARK_STATE_DIR", tmp.path().join("state"));
    let server = DevServer::start(&tmp.path().join("dev")).unwrap();
    let dir = server.dir.clone();
    let f = |n: &str| tmp.path().join(n).display().to_string();
    let officer = |args: &[&str]| bulwark_as(&dir, "officer.env", args);
    std::fs::write(tmp.path().join("msg"), b"m").unwrap();
    let (msg, sig) = (f("msg"), f("sig"));
    let sign = |key: &str, extra: &[&str]| {
        let mut a = vec!["sign", "--key", key, "--in", &msg, "--out", &sig];
        a.extend_from_slice(extra);
        officer(&a)
    };

    // A quota set at generation, enforced by the daemon's token.
    ok(&officer(&["key", "generate", "--type", "hmac-sha256", "--label", "k", "--max-uses", "2"]));
    let p: serde_json::Value =
        serde_json::from_str(&ok(&officer(&["key", "policy", "k", "--json"]))).unwrap();
    assert_eq!(p["max_uses"], 2);
    ok(&sign("k", &[]));
    ok(&sign("k", &[]));
    fails(&sign("k", &[]), "maximum number of uses");
    let text = ok(&officer(&["key", "policy", "k"]));
    assert!(text.contains("uses         2 of 2"), "{text}");
    // Principals by user name: only the dev crypto user, so the officer is refused.
    ok(&officer(&["key", "policy", "k", "--clear", "all", "--principals", "user"]));
    let text = ok(&officer(&["key", "policy", "k"]));
    assert!(text.contains("principals   user"), "{text}");
    fails(&sign("k", &[]), "does not list you");
    fails(&officer(&["key", "policy", "k", "--principals", "nobody-here"]), "nobody-here");
    ok(&officer(&["key", "policy", "k", "--clear", "all"]));
    ok(&sign("k", &[]));

    // Per-use quorum: the security officer sets the approvers; each signature needs two.
    let mut keys = Vec::new();
    for name in ["alice", "bob"] {
        let out = ok(&officer(&["approval", "keygen", "--name", name, "--out", &f(name)]));
        let at = out.find("public_key = \"").unwrap() + "public_key = \"".len();
        keys.push(format!("{name}={}", &out[at..at + 64]));
    }
    fails(&officer(&["key", "use-approvers", "--approver", &keys[0]]), "not permitted for role");
    ok(&bulwark_as(
        &dir,
        "so.env",
        &["key", "use-approvers", "--approver", &keys[0], "--approver", &keys[1]],
    ));
    ok(&officer(&["key", "generate", "--type", "ec-p256", "--label", "root", "--quorum", "2"]));
    fails(&sign("root", &[]), "quorum approval required");
    ok(&officer(&["key", "use-request", "root", "--op", "sign", "--out", &f("req.json")]));
    for name in ["alice", "bob"] {
        let out = f(&format!("{name}.approval"));
        ok(&officer(&[
            "approval",
            "sign",
            "--key",
            &f(name),
            "--request",
            &f("req.json"),
            "--out",
            &out,
        ]));
    }
    let (a1, a2) = (f("alice.approval"), f("bob.approval"));
    fails(&sign("root", &["--use-approval", &a1]), "1 valid approvals");
    ok(&sign("root", &["--use-approval", &a1, "--use-approval", &a2]));
    fails(&sign("root", &["--use-approval", &a1, "--use-approval", &a2]), "already used");
    let p: serde_json::Value =
        serde_json::from_str(&ok(&officer(&["key", "policy", "root", "--json"]))).unwrap();
    assert_eq!((p["uses"].as_u64(), p["quorum"].as_u64()), (Some(1), Some(2)));

    // BYOK over the network: a key wrapped out under a KEK comes back in under a new label
    // with a policy (ImportWrappedKey), and decrypts what the original encrypted.
    ok(&officer(&["key", "generate", "--type", "aes-256", "--label", "kek"]));
    ok(&officer(&["key", "generate", "--type", "aes-256", "--label", "src", "--extractable"]));
    // The dev store lets keys leave only under trusted keys: the security officer marks it.
    ok(&bulwark_as(&dir, "so.env", &["trust", "kek"]));
    ok(&officer(&["key", "wrap", "src", "--wrapping-key", "kek", "--out", &f("src.kwp")]));
    let import = |label: &str, extra: &[&str]| {
        let w = f("src.kwp");
        let mut a = vec!["key", "import", "--wrapped", &w, "--unwrap-with", "kek"];
        a.extend_from_slice(&["--mechanism", "aes-kwp", "--type", "aes-256", "--label", label]);
        a.extend_from_slice(extra);
        officer(&a)
    };
    ok(&import("copy", &["--max-uses", "2"]));
    fails(&import("copy", &[]), "already exists");
    let p: serde_json::Value =
        serde_json::from_str(&ok(&officer(&["key", "policy", "copy", "--json"]))).unwrap();
    assert_eq!(p["max_uses"], 2);
    let (ct, pt) = (f("ct"), f("pt"));
    ok(&officer(&["encrypt", "--key", "src", "--in", &msg, "--out", &ct]));
    ok(&officer(&["decrypt", "--key", "copy", "--in", &ct, "--out", &pt]));
    assert_eq!(std::fs::read(&pt).unwrap(), b"m");
    let mut bad = std::fs::read(f("src.kwp")).unwrap();
    bad[3] ^= 1;
    std::fs::write(f("src.kwp"), bad).unwrap();
    fails(&import("y", &[]), "wrapped key is invalid");
}
