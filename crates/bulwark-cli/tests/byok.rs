//! Bring your own key (docs/byok.md) against an implementation we did not write: Python's
//! `cryptography` wraps keys with RSA-OAEP (SHA-256) under the HSM's public key and with AES-KWP
//! (RFC 5649) under a key-encryption key; `bulwark key import --wrapped` brings them in, and the
//! imported keys give the results Python computes (HMAC tags; the AES key wrapped out again by
//! `bulwark key wrap` unwraps in Python to the same bytes). Tampered input, a key that may not
//! unwrap, a taken label and a plaintext-exportable import under a trusted-wrap store policy
//! are refused with one clear line. `python3` with `cryptography` comes from scripts/test.sh.

mod common;

use std::process::Command;

use common::{stderr, Env};

const PY: &str = r#"
import hmac, hashlib, os, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.keywrap import (
    aes_key_wrap_with_padding, aes_key_unwrap_with_padding)

d = sys.argv[2]
p = lambda n: os.path.join(d, n)
oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
if sys.argv[1] == "one":
    pub = serialization.load_pem_public_key(open(p("rsa.pem"), "rb").read())
    open(p("one.rsa"), "wb").write(pub.encrypt(os.urandom(32), oaep))
elif sys.argv[1] == "wrap":
    pub = serialization.load_pem_public_key(open(p("rsa.pem"), "rb").read())
    kek, hm, data, hm2 = os.urandom(32), os.urandom(32), os.urandom(32), os.urandom(48)
    for n, v in [("kek", kek), ("hm", hm), ("data", data), ("hm2", hm2)]:
        open(p(n + ".bin"), "wb").write(v)
    open(p("kek.rsa"), "wb").write(pub.encrypt(kek, oaep))
    open(p("hm2.rsa"), "wb").write(pub.encrypt(hm2, oaep))
    open(p("hm.kwp"), "wb").write(aes_key_wrap_with_padding(kek, hm))
    open(p("data.kwp"), "wb").write(aes_key_wrap_with_padding(kek, data))
else:
    msg = open(p("msg"), "rb").read()
    kek = open(p("kek.bin"), "rb").read()
    tag = hmac.new(open(p("hm.bin"), "rb").read(), msg, hashlib.sha256).digest()
    tag2 = hmac.new(open(p("hm2.bin"), "rb").read(), msg, hashlib.sha384).digest()
    assert open(p("hm.sig"), "rb").read() == tag, "hmac-sha256 differs"
    assert open(p("hm2.sig"), "rb").read() == tag2, "hmac-sha384 differs"
    back = aes_key_unwrap_with_padding(kek, open(p("data.out"), "rb").read())
    assert back == open(p("data.bin"), "rb").read(), "wrapped-out key differs"
    print("ok")
"#;

fn python(e: &Env, mode: &str) {
    let has = Command::new("sh").args(["-c", "command -v python3"]).output().unwrap();
    assert!(
        has.status.success(),
        "python3 is not installed: run the tests through scripts/test.sh"
    );
    let o = Command::new("python3")
        .args(["-c", PY, mode, e.dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python {mode}: {} {} (scripts/test.sh installs `cryptography`)",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
}

#[test]
fn keys_wrapped_by_python_import_and_agree() {
    let e = Env::new();
    std::fs::write(e.path("msg"), b"bring your own key").unwrap();
    e.ok(&["key", "generate", "--type", "rsa-3072", "--label", "rsa"]);
    e.ok(&["key", "public", "rsa", "--out", &e.s("rsa.pem")]);
    python(&e, "wrap");

    // RSA-OAEP: the key-encryption key, then an HMAC-SHA384 key.
    let import = |file: &str, with: &str, mech: &str, ty: &str, label: &str, extra: &[&str]| {
        let mut a = vec![
            "key",
            "import",
            "--wrapped",
            file,
            "--unwrap-with",
            with,
            "--mechanism",
            mech,
            "--type",
            ty,
            "--label",
            label,
        ];
        a.extend_from_slice(extra);
        e.run(&a)
    };
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", stderr(&o));
    };
    ok(import(&e.s("kek.rsa"), "rsa", "rsa-oaep", "aes-256", "kek", &[]));
    ok(import(&e.s("hm2.rsa"), "rsa", "rsa-oaep", "hmac-sha384", "hm2", &[]));
    // AES-KWP under the imported KEK: an HMAC-SHA256 key and an extractable AES key.
    ok(import(&e.s("hm.kwp"), "kek", "aes-kwp", "hmac-sha256", "hm", &["--max-uses", "5"]));
    ok(import(&e.s("data.kwp"), "kek", "aes-kwp", "aes-256", "data", &["--extractable"]));
    let show = e.ok(&["key", "show", "hm"]);
    assert!(show.contains("CKA_SENSITIVE") && show.contains("uses         0 of 5"), "{show}");

    // Same results as Python: HMAC tags, and the AES key wrapped out again.
    let m = e.s("msg");
    e.ok(&["sign", "--key", "hm", "--in", &m, "--out", &e.s("hm.sig")]);
    e.ok(&["sign", "--key", "hm2", "--in", &m, "--out", &e.s("hm2.sig")]);
    e.ok(&[
        "key",
        "wrap",
        "data",
        "--wrapping-key",
        "kek",
        "--mechanism",
        "aes-kwp",
        "--out",
        &e.s("data.out"),
    ]);
    python(&e, "check");

    // Refusals: one line, non-zero exit, nothing imported.
    let mut bad = std::fs::read(e.path("data.kwp")).unwrap();
    bad[5] ^= 1;
    std::fs::write(e.path("bad.kwp"), &bad).unwrap();
    let o = import(&e.s("bad.kwp"), "kek", "aes-kwp", "aes-256", "x1", &[]);
    assert!(stderr(&o).contains("wrapped key is invalid"), "{}", stderr(&o));
    let o = import(&e.s("data.kwp"), "hm", "aes-kwp", "aes-256", "x2", &[]);
    assert!(!o.status.success(), "an HMAC key does not unwrap");
    let o = import(&e.s("data.kwp"), "kek", "aes-kwp", "aes-256", "data", &[]);
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let o = import(&e.s("data.kwp"), "kek", "rsa-pkcs", "aes-256", "x3", &[]);
    assert!(stderr(&o).contains("mechanism: rsa-oaep"), "{}", stderr(&o));
    let o = import(&e.s("data.kwp"), "kek", "aes-kwp", "rsa-2048", "x4", &[]);
    assert!(stderr(&o).contains("only secret keys"), "{}", stderr(&o));
    for l in ["x1", "x2", "x3", "x4"] {
        assert!(!e.run(&["key", "show", l]).status.success(), "{l} was not imported");
    }
    // The unwrapping key's usage policy applies: a quota on the KEK counts unwraps (from when
    // it is set).
    e.ok(&["key", "policy", "kek", "--max-uses", "1"]);
    ok(import(&e.s("data.kwp"), "kek", "aes-kwp", "aes-256", "x5", &[]));
    let o = import(&e.s("data.kwp"), "kek", "aes-kwp", "aes-256", "x6", &[]);
    assert!(stderr(&o).contains("maximum number of uses"), "{}", stderr(&o));

    // The audit log names the imports.
    e.ok(&["audit", "export", "--out", &e.s("audit.jsonl")]);
    let log = std::fs::read_to_string(e.path("audit.jsonl")).unwrap();
    assert!(log.matches("\"unwrap-key\"").count() >= 4, "{log}");
}

#[test]
fn trusted_wrap_policy_keeps_imports_sensitive() {
    let e = Env { dir: tempfile::tempdir().unwrap() };
    e.ok(&["init", "--label", "t", "--wrap-requires-trusted"]);
    e.ok(&["key", "generate", "--type", "rsa-2048", "--label", "rsa"]);
    e.ok(&["key", "public", "rsa", "--out", &e.s("rsa.pem")]);
    python(&e, "one");
    let w = e.s("one.rsa");
    let import = |label: &str, extra: &[&str]| {
        let mut a = vec!["key", "import", "--wrapped", &w, "--unwrap-with", "rsa"];
        a.extend_from_slice(&["--mechanism", "rsa-oaep", "--type", "aes-256", "--label", label]);
        a.extend_from_slice(extra);
        a.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let a = import("plain", &["--not-sensitive"]);
    e.fails(&a.iter().map(String::as_str).collect::<Vec<_>>(), "unwrapped keys are sensitive");
    let a = import("kept", &[]);
    e.ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let show = e.ok(&["key", "show", "kept"]);
    let line = show.lines().find(|l| l.contains("CKA_SENSITIVE")).unwrap();
    assert!(line.ends_with("true"), "{show}");
    e.fails(&["key", "export", "kept"], "sensitive");
}
