//! End-to-end tests of `bulwark backup --key`, `bulwark restore` of a selected-key file into a
//! store of the same domain, `bulwark restore --rebase`, and `bulwark key archive` with its
//! restore, on embedded stores (docs/backup.md, docs/lifecycle.md). Refused restores change
//! nothing, byte for byte.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{stderr, Env};

fn env() -> Env {
    let e = Env::new();
    std::fs::write(e.path("pt"), b"hello archive").unwrap();
    let pf = e.path("pass");
    std::fs::write(&pf, b"a long backup passphrase\n").unwrap();
    std::fs::set_permissions(&pf, std::fs::Permissions::from_mode(0o600)).unwrap();
    e
}

impl Env {
    fn on(&self, store: &Path, args: &[&str]) -> String {
        let o = self.run_on(store, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    }

    fn fails_on(&self, store: &Path, args: &[&str], needle: &str) {
        let o = self.run_on(store, args);
        assert!(!o.status.success(), "{args:?} should fail");
        let err = stderr(&o);
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn selected_backup_into_a_store_of_the_same_domain() {
    let e = env();
    let a = e.path("store.db");
    let b = e.path("b.db");
    let pf = e.s("pass");
    e.ok(&["key", "generate", "--type", "aes-256", "--label", "base"]);
    e.ok(&["backup", "--out", &e.s("whole.bwb"), "--passphrase-file", &pf]);
    e.on(&b, &["init", "--label", "b"]);
    e.on(&b, &["restore", "--in", &e.s("whole.bwb"), "--passphrase-file", &pf]);

    e.ok(&["key", "generate", "--type", "aes-256", "--label", "sel"]);
    e.ok(&["key", "generate", "--type", "ec-p256", "--label", "sig"]);
    let out = e.ok(&[
        "backup",
        "--out",
        &e.s("sel.bwb"),
        "--key",
        "sel",
        "--key",
        "sig",
        "--passphrase-file",
        &pf,
    ]);
    assert!(out.contains("3 objects") && out.contains("keys: \"sel\", \"sig\""), "{out}");
    e.ok(&["encrypt", "--key", "sel", "--in", &e.s("pt"), "--out", &e.s("ct")]);
    let out = e.on(&b, &["restore", "--in", &e.s("sel.bwb"), "--passphrase-file", &pf]);
    assert!(out.contains("keys added: \"sel\", \"sig\""), "{out}");
    e.on(&b, &["decrypt", "--key", "sel", "--in", &e.s("ct"), "--out", &e.s("back")]);
    assert_eq!(bytes(&e.path("back")), b"hello archive");

    // Refusals: the same keys again, a whole-store file into a store in use.
    // (Byte-for-byte checks are in bulwark-core's tests/backup_keys.rs: each CLI process
    // logs in, which itself writes; here the keys must be the same.)
    let before = e.on(&b, &["key", "list", "--json"]);
    e.fails_on(
        &b,
        &["restore", "--in", &e.s("sel.bwb"), "--passphrase-file", &pf],
        "already in this store",
    );
    e.fails_on(&b, &["restore", "--in", &e.s("whole.bwb"), "--passphrase-file", &pf], "not empty");
    e.fails_on(
        &b,
        &["backup", "--out", &e.s("x.bwb"), "--key", "nope", "--passphrase-file", &pf],
        "nope",
    );
    assert_eq!(e.on(&b, &["key", "list", "--json"]), before, "refused restores change nothing");

    // Rebase: store a goes back to the whole-store backup (only "base").
    let out =
        e.on(&a, &["restore", "--in", &e.s("whole.bwb"), "--rebase", "--passphrase-file", &pf]);
    assert!(out.contains("anti-rollback baseline is reset to generation"), "{out}");
    let list = e.ok(&["key", "list"]);
    assert!(list.contains("base") && !list.contains("sel"), "{list}");
}

#[test]
fn archive_and_restore() {
    let e = env();
    let pf = e.s("pass");
    e.ok(&["key", "generate", "--type", "aes-256", "--label", "arch"]);
    e.ok(&["encrypt", "--key", "arch", "--in", &e.s("pt"), "--out", &e.s("ct")]);
    let arc = e.s("arch.bwb");
    e.fails(
        &["key", "archive", "arch", "--out", &arc, "--passphrase-file", &pf],
        "deactivate it first",
    );
    e.ok(&["key", "deactivate", "arch"]);
    let out = e.ok(&["key", "archive", "arch", "--out", &arc, "--passphrase-file", &pf]);
    assert!(out.contains("archived 1 object(s)"), "{out}");
    let list = e.ok(&["key", "list"]);
    assert!(list.contains("arch") && list.contains("archived"), "{list}");
    let o = e.run(&["decrypt", "--key", "arch", "--in", &e.s("ct"), "--out", &e.s("back")]);
    assert!(!o.status.success() && stderr(&o).contains("archived"), "{}", stderr(&o));

    e.ok(&["restore", "--in", &arc, "--passphrase-file", &pf]);
    e.ok(&["decrypt", "--key", "arch", "--in", &e.s("ct"), "--out", &e.s("back")]);
    assert_eq!(bytes(&e.path("back")), b"hello archive");
    assert!(!e.ok(&["key", "list"]).contains("archived"));
}

mod remote {
    //! Through a real bulwarkd (dev mode, loopback): `backup --key` streams a selected-key
    //! file, a restore of it into the HSM that holds those keys is refused, and a rebase is
    //! refused without quorum approvals.

    use std::path::Path;
    use std::process::{Command, Output};

    use bulwarkd::dev::DevServer;

    fn bulwark(dir: &Path, who: &str, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bulwark"));
        c.args(args)
            .env_remove("BULWARK_STORE")
            .env("BULWARK_BACKUP_PASSPHRASE", "a long backup passphrase");
        let text = std::fs::read_to_string(dir.join(who)).unwrap();
        for l in text.lines().filter_map(|l| l.strip_prefix("export ")) {
            if let Some((k, v)) = l.split_once('=') {
                c.env(k, v.trim_matches('\''));
            }
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
    fn remote_selected_backup_and_rebase() {
        let tmp = tempfile::tempdir().unwrap();
        std::env::set_var("BULWARK_STATE_DIR", tmp.path().join("state"));
        let server = DevServer::start(&tmp.path().join("dev")).unwrap();
        let dir = server.dir.clone();
        ok(&bulwark(
            &dir,
            "officer.env",
            &["key", "generate", "--type", "aes-256", "--label", "rk"],
        ));
        ok(&bulwark(
            &dir,
            "officer.env",
            &["key", "generate", "--type", "aes-256", "--label", "other"],
        ));
        let sel = tmp.path().join("sel.bwb");
        let whole = tmp.path().join("whole.bwb");
        let s = |p: &Path| p.to_str().unwrap().to_owned();
        let out = ok(&bulwark(&dir, "so.env", &["backup", "--out", &s(&sel), "--key", "rk"]));
        assert!(out.contains("1 objects"), "{out}");
        let h = bulwark_core::token::read_backup_header(&sel).unwrap();
        assert_eq!(h.version, bulwark_core::token::BACKUP_VERSION_SELECTED);
        ok(&bulwark(&dir, "so.env", &["backup", "--out", &s(&whole)]));
        fails(&bulwark(&dir, "so.env", &["restore", "--in", &s(&sel)]), "already in this store");
        fails(
            &bulwark(&dir, "so.env", &["restore", "--in", &s(&whole), "--rebase"]),
            "needs quorum approvals",
        );
        fails(&bulwark(&dir, "so.env", &["restore", "--in", &s(&whole)]), "not empty");
        let list = ok(&bulwark(&dir, "officer.env", &["key", "list"]));
        assert!(list.contains("rk") && list.contains("other"), "{list}");
    }
}
