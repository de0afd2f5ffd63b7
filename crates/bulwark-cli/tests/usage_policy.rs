//! End-to-end tests of `bulwark key policy`, the policy options of `key generate`, `key show`'s
//! use count, and per-use quorum (`key use-approvers`, `key use-request`, `approval sign`,
//! `--use-approval`) on an embedded store (docs/lifecycle.md, "Usage policy").

mod common;

use std::process::Output;

use common::{stderr, Env};

fn env() -> Env {
    let e = Env::new();
    std::fs::write(e.path("msg"), b"hello").unwrap();
    e
}

impl Env {
    fn sign(&self, key: &str, extra: &[&str]) -> Output {
        let (msg, sig) = (self.s("msg"), self.s("sig"));
        let mut args = vec!["sign", "--key", key, "--in", &msg, "--out", &sig];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn policy(&self, label: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["key", "policy", label, "--json"])).unwrap()
    }

    /// Makes an approver key; returns its public key (hex).
    fn approver(&self, name: &str) -> String {
        let out = self.ok(&["approval", "keygen", "--name", name, "--out", &self.s(name)]);
        let at = out.find("public_key = \"").unwrap() + "public_key = \"".len();
        out[at..at + 64].to_owned()
    }
}

#[test]
fn quota_and_rate_through_the_cli() {
    let e = env();
    e.ok(&["key", "generate", "--type", "hmac-sha256", "--label", "k", "--max-uses", "3"]);
    assert_eq!(e.policy("k")["max_uses"], 3);
    for _ in 0..3 {
        let o = e.sign("k", &[]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = e.sign("k", &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("maximum number of uses"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let show = e.ok(&["key", "show", "k"]);
    assert!(show.contains("uses         3 of 3"), "{show}");
    assert!(show.contains("CKA_BULWARK_MAX_USES"), "{show}");
    let json: serde_json::Value =
        serde_json::from_str(&e.ok(&["key", "show", "k", "--json"])).unwrap();
    assert_eq!(json[0]["usage_policy"]["uses"], 3);

    // Raised by the officer (the embedded user), the count stays.
    e.ok(&["key", "policy", "k", "--max-uses", "4", "--rate", "100/h"]);
    assert!(e.sign("k", &[]).status.success());
    assert!(!e.sign("k", &[]).status.success());
    let p = e.policy("k");
    assert_eq!((p["uses"].as_u64(), p["rate"].as_str()), (Some(4), Some("100/h")));

    // Only principals: the SO is not the user.
    e.ok(&["key", "policy", "k", "--clear", "max-uses,rate", "--principals", "so"]);
    let o = e.sign("k", &[]);
    assert!(stderr(&o).contains("does not list you"), "{}", stderr(&o));
    e.ok(&["key", "policy", "k", "--clear", "all"]);
    assert!(e.ok(&["key", "policy", "k"]).contains("no usage policy"));
    assert!(e.sign("k", &[]).status.success());

    // Bad options: one clear line, nothing changed.
    e.fails(&["key", "policy", "k", "--rate", "fast"], "rate must be n/period");
    e.fails(&["key", "policy", "k", "--principals", "alice"], "principal");
    e.fails(&["key", "policy", "k", "--clear", "everything"], "--clear");
    e.fails(&["key", "policy", "nope", "--max-uses", "1"], "no key labelled");
    assert!(e.ok(&["key", "policy", "k"]).contains("no usage policy"));
}

#[test]
fn per_use_quorum_end_to_end() {
    let e = env();
    let alice = e.approver("alice");
    let bob = e.approver("bob");
    e.approver("mallory");
    e.ok(&[
        "key",
        "use-approvers",
        "--approver",
        &format!("alice={alice}"),
        "--approver",
        &format!("bob={bob}"),
    ]);
    assert!(e.ok(&["key", "use-approvers"]).contains(&alice));
    e.ok(&["key", "generate", "--type", "ec-p256", "--label", "root", "--quorum", "2"]);
    let o = e.sign("root", &[]);
    assert!(stderr(&o).contains("quorum approval required"), "{}", stderr(&o));
    assert!(stderr(&o).contains("use-request"), "{}", stderr(&o));

    e.ok(&["key", "use-request", "root", "--op", "sign", "--out", &e.s("req.json")]);
    for who in ["alice", "bob", "mallory"] {
        e.ok(&[
            "approval",
            "sign",
            "--key",
            &e.s(who),
            "--request",
            &e.s("req.json"),
            "--out",
            &e.s(&format!("{who}.approval")),
        ]);
    }
    // One approval, or one plus a stranger's: refused, nothing counted.
    let (a1, a2, am) = (e.s("alice.approval"), e.s("bob.approval"), e.s("mallory.approval"));
    let o = e.sign("root", &["--use-approval", &a1]);
    assert!(stderr(&o).contains("1 valid approvals"), "{}", stderr(&o));
    let o = e.sign("root", &["--use-approval", &a1, "--use-approval", &am]);
    assert!(!o.status.success());
    // Two valid approvals: the signature is made and verifies.
    let o = e.sign("root", &["--use-approval", &a1, "--use-approval", &a2]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = e.run(&[
        "verify",
        "--key",
        "root",
        "--in",
        &e.s("msg"),
        "--sig",
        &e.s("sig"),
        "--use-approval",
        &a1,
    ]);
    // Verifying is a use of the public key, which has no policy: the approval is not needed.
    assert!(v.status.success(), "{}", stderr(&v));
    // Replayed: refused.
    let o = e.sign("root", &["--use-approval", &a1, "--use-approval", &a2]);
    assert!(stderr(&o).contains("already used"), "{}", stderr(&o));
    assert_eq!(e.policy("root")["uses"], 1);
    // Only the security officer sets approvers: a bad key is refused.
    e.fails(&["key", "use-approvers", "--approver", "eve=00"], "raw ed25519");
}
