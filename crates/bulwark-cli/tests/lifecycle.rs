//! End-to-end tests of `bulwark key state|activate|suspend|resume|deactivate|compromise|dates`
//! and the lifecycle dates of `key generate` on an embedded store (docs/lifecycle.md): states
//! show in `key state`, `key show` and `key list`; refused transitions and refused key uses
//! are one clear line on stderr and a non-zero exit, and change nothing.

mod common;

use std::process::Output;

use common::{stderr, Env};

/// An environment with a message file `msg` to sign.
fn env() -> Env {
    let e = Env::new();
    std::fs::write(e.path("msg"), b"hello").unwrap();
    e
}

impl Env {
    fn state(&self, label: &str) -> Vec<String> {
        let out = self.ok(&["key", "state", label, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array().unwrap().iter().map(|o| o["state"].as_str().unwrap().to_owned()).collect()
    }

    fn sign(&self, key: &str) -> Output {
        self.run(&["sign", "--key", key, "--in", &self.s("msg"), "--out", &self.s("sig")])
    }

    fn verify(&self, key: &str) -> Output {
        self.run(&["verify", "--key", key, "--in", &self.s("msg"), "--sig", &self.s("sig")])
    }
}

#[test]
fn transitions_and_the_gate_through_the_cli() {
    let e = env();
    e.ok(&["key", "generate", "--type", "ec-p256", "--label", "k"]);
    // A key made without lifecycle options is active; both halves of the pair.
    assert_eq!(e.state("k"), ["active", "active"]);
    assert!(e.sign("k").status.success());
    let list = e.ok(&["key", "list"]);
    assert!(list.contains("STATE") && list.contains("active"), "{list}");

    e.ok(&["key", "suspend", "k"]);
    assert_eq!(e.state("k"), ["suspended", "suspended"]);
    let o = e.sign("k");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("suspended"), "{}", stderr(&o));
    assert!(!e.verify("k").status.success(), "a suspended key does nothing");
    e.fails(&["key", "activate", "k"], "only a pre-activation key can be activated");
    e.fails(&["key", "suspend", "k"], "key \"k\" is suspended");
    assert_eq!(e.state("k"), ["suspended", "suspended"], "a refused change changes nothing");

    e.ok(&["key", "resume", "k"]);
    assert!(e.sign("k").status.success());
    e.ok(&["key", "deactivate", "k"]);
    let show = e.ok(&["key", "show", "k"]);
    assert!(show.contains("state deactivated"), "{show}");
    assert!(show.contains("CKA_BULWARK_DEACTIVATION_DATE"), "{show}");
    // Deactivated: verifies old signatures, signs nothing new.
    let v = e.verify("k");
    assert!(v.status.success(), "{}", stderr(&v));
    // The response says the key only processes old data.
    assert!(stderr(&v).contains("note: key \"k\" is deactivated"), "{}", stderr(&v));
    let o = e.sign("k");
    assert!(!o.status.success() && stderr(&o).contains("deactivated"), "{}", stderr(&o));
    e.fails(&["key", "resume", "k"], "only a suspended key can be resumed");

    e.ok(&["key", "compromise", "k"]);
    assert_eq!(e.state("k"), ["compromised", "compromised"]);
    assert!(e.verify("k").status.success());
    e.fails(&["key", "compromise", "k"], "already marked compromised");
    let shown: serde_json::Value =
        serde_json::from_str(&e.ok(&["key", "show", "k", "--json"])).unwrap();
    assert_eq!(shown[0]["state"], "compromised");
    assert!(shown[0]["lifecycle"]["compromise_date"].is_string());

    e.fails(&["key", "activate", "nope"], "no key labelled");
}

#[test]
fn dates_at_generation_and_later() {
    let e = env();
    // Activation in the future: pre-activation, usable for nothing.
    e.ok(&[
        "key",
        "generate",
        "--type",
        "aes-256",
        "--label",
        "later",
        "--activate-at",
        "2999-01-01T00:00:00Z",
    ]);
    assert_eq!(e.state("later"), ["pre-activation"]);
    let enc = ["encrypt", "--key", "later", "--in", &e.s("msg"), "--out", &e.s("ct")];
    let o = e.run(&enc);
    assert!(!o.status.success() && stderr(&o).contains("not yet active"), "{}", stderr(&o));
    let text = e.ok(&["key", "state", "later"]);
    assert!(text.contains("pre-activation") && text.contains("2999-01-01T00:00:00Z"), "{text}");
    e.ok(&["key", "activate", "later"]);
    let o = e.run(&enc);
    assert!(o.status.success());
    assert!(!stderr(&o).contains("note"), "an active key needs no note");

    // Activation in the past, deactivation in the past: deactivated by the dates alone.
    e.ok(&[
        "key",
        "generate",
        "--type",
        "aes-256",
        "--label",
        "old",
        "--activate-at",
        "2020-01-01T00:00:00Z",
        "--deactivate-at",
        "2021-01-01T00:00:00+02:00",
    ]);
    assert_eq!(e.state("old"), ["deactivated"]);
    let text = e.ok(&["key", "state", "old"]);
    assert!(text.contains("deactivated (stored: pre-activation, moved by its dates)"), "{text}");
    let out = e.ok(&["key", "state", "old", "--json"]);
    assert!(out.contains("2020-12-31T22:00:00Z"), "{out}");

    // Later: a deactivation date in the past deactivates an active key at once.
    e.ok(&["key", "generate", "--type", "ec-p256", "--label", "k"]);
    assert!(e.sign("k").status.success());
    e.ok(&["key", "dates", "k", "--deactivate-at", "2001-01-01T00:00:00Z"]);
    assert_eq!(e.state("k"), ["deactivated", "deactivated"]);
    assert!(!e.sign("k").status.success());
    assert!(e.verify("k").status.success());

    // Bad dates: clear errors, nothing made or changed.
    e.fails(
        &["key", "generate", "--type", "aes-256", "--label", "bad", "--activate-at", "tomorrow"],
        "rfc 3339",
    );
    e.fails(
        &[
            "key",
            "generate",
            "--type",
            "aes-256",
            "--label",
            "bad",
            "--activate-at",
            "2030-01-01T00:00:00Z",
            "--deactivate-at",
            "2029-01-01T00:00:00Z",
        ],
        "after the activation date",
    );
    e.fails(&["key", "state", "bad"], "no key labelled");
    e.fails(&["key", "dates", "k", "--activate-at", "2030-01-01T00:00:00Z"], "activation date");
    e.fails(&["key", "dates", "k"], "give --activate-at");
}
