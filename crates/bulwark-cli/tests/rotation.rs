//! End-to-end tests of key versions and rotation on an embedded store (docs/lifecycle.md,
//! "Versions and rotation"; docs/cli.md): `key rotate`, `--key-version`, `key show` listing
//! versions and the next rotation, the BWK2 envelope naming its version (and BWK1 still read),
//! the public-key history bundle and `verify --bundle`, the minimum decryption version, and
//! refusals that are one clear line and change nothing.

#![allow(clippy::many_single_char_names)]

mod common;

use common::{stderr, Env};

/// An environment with two message files `m1`, `m2`.
fn env() -> Env {
    let e = Env::new();
    std::fs::write(e.path("m1"), b"signed by version 1").unwrap();
    std::fs::write(e.path("m2"), b"signed by version 2").unwrap();
    e
}

impl Env {
    fn verify(&self, args: &[&str]) -> (bool, String) {
        let mut a = vec!["verify"];
        a.extend_from_slice(args);
        let o = self.run(&a);
        assert!(o.status.code() == Some(0) || o.status.code() == Some(1), "{}", stderr(&o));
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned())
    }
}

#[test]
fn signing_keys_rotate_and_old_signatures_verify() {
    let e = env();
    let (m1, m2, s1, s2) = (e.s("m1"), e.s("m2"), e.s("s1"), e.s("s2"));
    e.ok(&["key", "generate", "--type", "ec-p256", "--label", "ca"]);
    e.ok(&["sign", "--key", "ca", "--in", &m1, "--out", &s1]);
    let pem1 = e.ok(&["key", "public", "ca"]);
    let out = e.ok(&["key", "rotate", "ca"]);
    assert!(out.contains("version 2 is current"), "{out}");
    e.ok(&["sign", "--key", "ca", "--in", &m2, "--out", &s2]);
    let pem2 = e.ok(&["key", "public", "ca"]);
    assert_ne!(pem1, pem2);
    assert_eq!(e.ok(&["key", "public", "ca", "--key-version", "1"]), pem1);

    // Through the HSM: the label names v2; --key-version 1 verifies the old signature.
    assert!(e.verify(&["--key", "ca", "--in", &m2, "--sig", &s2]).0);
    assert!(!e.verify(&["--key", "ca", "--in", &m1, "--sig", &s1]).0, "v2 did not sign it");
    let o = e.run(&["verify", "--key", "ca", "--key-version", "1", "--in", &m1, "--sig", &s1]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("deactivated"), "the answer says so: {}", stderr(&o));
    // The old version no longer signs.
    e.fails(
        &["sign", "--key", "ca", "--key-version", "1", "--in", &m1, "--out", &e.s("x")],
        "deactivated",
    );
    e.fails(&["key", "public", "ca", "--key-version", "9"], "version 9");

    // `key show` lists the versions, their states and which is current.
    let show = e.ok(&["key", "show", "ca"]);
    assert!(show.contains("versions:"), "{show}");
    assert!(show.contains("CKA_BULWARK_KEY_VERSION"), "{show}");
    assert!(show.contains("rotation: manual"), "{show}");
    let lines: Vec<&str> =
        show.lines().filter(|l| l.trim_start().starts_with(['1', '2'])).collect();
    assert!(lines.iter().any(|l| l.contains("deactivated")), "{show}");
    assert!(lines.iter().any(|l| l.contains("active") && l.contains("yes")), "{show}");

    // Offline, with the public-key history bundle.
    let bundle = e.s("ca.json");
    e.ok(&["key", "history", "ca", "--out", &bundle]);
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&bundle).unwrap()).unwrap();
    assert_eq!(b["format"], "bulwark-key-history");
    assert_eq!(b["versions"].as_array().unwrap().len(), 2);
    assert_eq!(b["versions"][0]["spki_pem"].as_str().unwrap(), pem1);
    let (ok, out) = e.verify(&["--bundle", &bundle, "--in", &m1, "--sig", &s1]);
    assert!(ok && out.contains("version 1"), "{out}");
    let (ok, out) = e.verify(&["--bundle", &bundle, "--in", &m2, "--sig", &s2]);
    assert!(ok && out.contains("version 2"), "{out}");
    assert!(!e.verify(&["--bundle", &bundle, "--key-version", "2", "--in", &m1, "--sig", &s1]).0);
    assert!(!e.verify(&["--bundle", &bundle, "--in", &m1, "--sig", &s2]).0);
    // --at: the version whose window covers the signing time (v1's window has ended).
    let (ok, _) =
        e.verify(&["--bundle", &bundle, "--at", "2000-01-01T00:00:00Z", "--in", &m1, "--sig", &s1]);
    assert!(ok, "v1 has no start date: it covers 2000");
    std::fs::write(e.path("bad.json"), b"{\"format\":\"x\"}").unwrap();
    e.fails(&["verify", "--bundle", &e.s("bad.json"), "--in", &m1, "--sig", &s1], "bundle");
    // A secret key has no public-key history.
    e.ok(&["key", "generate", "--type", "aes-256", "--label", "sym"]);
    assert!(!e.run(&["key", "history", "sym"]).status.success());
}

#[test]
fn envelopes_name_their_version_and_old_versions_retire() {
    let e = env();
    let (pt, c1, c2, back) = (e.s("m1"), e.s("c1"), e.s("c2"), e.s("back"));
    e.ok(&["key", "generate", "--type", "aes-256", "--label", "data"]);
    e.ok(&["encrypt", "--key", "data", "--in", &pt, "--out", &c1]);
    assert_eq!(&std::fs::read(&c1).unwrap()[..8], b"BWK2\0\0\0\x01");
    // A format-1 envelope made before versions existed (by version 1), through the core.
    let legacy = e.path("c0");
    {
        use bulwark_core::attr::ObjectClass;
        use bulwark_core::mechanism::Mechanism;
        let t = bulwark_core::Token::open(&e.path("store.db")).unwrap();
        t.login(
            bulwark_core::UserType::User,
            &bulwark_core::secret::Pin::new(common::PIN.as_bytes().to_vec()),
        )
        .unwrap();
        let h = t
            .resolve_key("data", None)
            .unwrap()
            .into_iter()
            .find(|o| o.attrs.class() == Some(ObjectClass::SecretKey))
            .unwrap()
            .handle;
        let nonce = [7u8; 12];
        let m = Mechanism::AesGcm { iv: nonce.to_vec(), aad: b"BWK1".to_vec(), tag_bits: 128 };
        let ct = t.encrypt(h, &m, b"from the old format").unwrap();
        let mut f = b"BWK1".to_vec();
        f.extend_from_slice(&nonce);
        f.extend_from_slice(&ct);
        std::fs::write(&legacy, f).unwrap();
    }
    e.ok(&["key", "rotate", "data"]);
    e.ok(&["encrypt", "--key", "data", "--in", &pt, "--out", &c2]);
    assert_eq!(&std::fs::read(&c2).unwrap()[..8], b"BWK2\0\0\0\x02", "new data uses v2");
    // Each decrypts with the version it names, without a flag.
    for c in [&c1, &c2] {
        e.ok(&["decrypt", "--key", "data", "--in", c, "--out", &back]);
        assert_eq!(std::fs::read(&back).unwrap(), b"signed by version 1");
    }
    e.ok(&["decrypt", "--key", "data", "--in", &legacy.to_string_lossy(), "--out", &back]);
    assert_eq!(std::fs::read(&back).unwrap(), b"from the old format");
    e.fails(
        &["decrypt", "--key", "data", "--key-version", "2", "--in", &c1, "--out", &back],
        "made by key version 1",
    );
    // The version in the header is authenticated: changing it breaks the tag.
    let mut forged = std::fs::read(&c1).unwrap();
    forged[7] = 2;
    std::fs::write(e.path("forged"), &forged).unwrap();
    assert!(!e
        .run(&["decrypt", "--key", "data", "--in", &e.s("forged"), "--out", &back])
        .status
        .success());

    // The minimum decryption version retires v1, with a clear error; it only goes up.
    e.fails(&["key", "min-decrypt-version", "data", "3"], "between 1 and the latest");
    e.ok(&["key", "min-decrypt-version", "data", "2"]);
    e.fails(&["decrypt", "--key", "data", "--in", &c1, "--out", &back], "minimum decryption");
    e.ok(&["decrypt", "--key", "data", "--in", &c2, "--out", &back]);
    e.fails(&["key", "min-decrypt-version", "data", "1"], "only go up");
    let show = e.ok(&["key", "show", "data"]);
    assert!(show.contains("minimum decryption version: 2"), "{show}");
}

#[test]
fn rotation_periods_at_generation_and_later() {
    let e = env();
    let out =
        e.ok(&["key", "generate", "--type", "rsa-2048", "--label", "r", "--rotate-every", "90d"]);
    assert!(out.contains("rotates every 90d; next rotation 20"), "{out}");
    let show = e.ok(&["key", "show", "r"]);
    assert!(show.contains("rotation: every 90d, next 20"), "{show}");
    let json: serde_json::Value =
        serde_json::from_str(&e.ok(&["key", "show", "r", "--json"])).unwrap();
    assert!(json[0]["next_rotation"].is_string(), "{json}");
    assert_eq!(json[0]["version"], 1);
    e.ok(&["key", "rotation", "r", "--every", "2w"]);
    assert!(e.ok(&["key", "show", "r"]).contains("rotation: every 2w"));
    e.ok(&["key", "rotation", "r", "--off"]);
    assert!(e.ok(&["key", "show", "r"]).contains("rotation: manual"));
    e.fails(&["key", "rotation", "r", "--every", "10m"], "at least one hour");
    e.fails(&["key", "rotation", "r", "--every", "soon"], "not a period");
    e.fails(&["key", "rotate", "nope"], "no key labelled");
    // A refused generation option leaves no key behind.
    e.fails(
        &["key", "generate", "--type", "aes-256", "--label", "p", "--rotate-every", "1x"],
        "not a period",
    );
    assert!(!e.run(&["key", "show", "p"]).status.success());
}
