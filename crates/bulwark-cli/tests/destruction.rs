//! End-to-end tests of scheduled destruction on an embedded store (docs/lifecycle.md):
//! `bulwark settings destroy-wait|purge-protection|show`, `key destroy` scheduling (the key is
//! unusable and gone from `key list` at once), `key list --scheduled`, `key show` of a
//! scheduled key, `key destroy --cancel`, and the shredding when a (short) wait ends.

mod common;

use common::Env;

impl Env {
    fn encrypt(&self, key: &str) -> std::process::Output {
        self.run(&["encrypt", "--key", key, "--in", &self.s("pt"), "--out", &self.s("ct")])
    }

    fn decrypt(&self, key: &str) -> std::process::Output {
        self.run(&["decrypt", "--key", key, "--in", &self.s("ct"), "--out", &self.s("back")])
    }
}

fn env() -> Env {
    let e = Env::new();
    std::fs::write(e.path("pt"), b"hello").unwrap();
    e
}

#[test]
fn embedded_default_destroys_at_once() {
    let e = env();
    assert!(e.ok(&["settings", "show"]).contains("destroy-wait      0s"));
    e.ok(&["key", "generate", "--type", "aes-256", "--label", "k"]);
    let out = e.ok(&["key", "destroy", "k"]);
    assert!(out.contains("destroyed 1 object(s)"), "{out}");
    e.fails(&["key", "show", "k"], "no key labelled");
    e.fails(&["key", "destroy", "--cancel", "k"], "can still be cancelled");
}

#[test]
fn schedule_hide_cancel() {
    let e = env();
    let out = e.ok(&["settings", "destroy-wait", "30d"]);
    assert!(out.contains("destroy-wait      30d"), "{out}");
    e.ok(&["key", "generate", "--type", "aes-256", "--label", "victim"]);
    assert!(e.encrypt("victim").status.success());

    let out = e.ok(&["key", "destroy", "victim"]);
    assert!(out.contains("scheduled the destruction of 1 object(s)"), "{out}");
    assert!(out.contains("material shredded on 20"), "{out}");
    assert!(!e.ok(&["key", "list"]).contains("victim"), "invisible in the list");
    assert!(!e.decrypt("victim").status.success(), "unusable at once");
    let sched = e.ok(&["key", "list", "--scheduled"]);
    assert!(sched.contains("victim") && sched.contains("DESTROY ON"), "{sched}");
    let show = e.ok(&["key", "show", "victim"]);
    assert!(show.contains("scheduled for destruction on"), "{show}");
    assert!(show.contains("CKA_BULWARK_DESTROY_SCHEDULED"), "{show}");
    let v: serde_json::Value =
        serde_json::from_str(&e.ok(&["key", "show", "victim", "--json"])).unwrap();
    assert_eq!(v[0]["shredded"], false);

    let out = e.ok(&["key", "destroy", "--cancel", "victim"]);
    assert!(out.contains("cancelled the destruction of 1 object(s)"), "{out}");
    assert!(out.contains("state active"), "{out}");
    assert!(e.decrypt("victim").status.success(), "usable again, same key");
    assert_eq!(std::fs::read(e.path("back")).unwrap(), b"hello");
    assert!(e.ok(&["key", "list"]).contains("victim"));
    assert!(!e.ok(&["key", "list", "--scheduled"]).contains("victim"));
    e.fails(&["key", "destroy", "--cancel", "victim"], "can still be cancelled");

    // Only the security officer changes the settings; bad values are refused.
    let o = common::Env::run(&e, &["settings", "destroy-wait", "3y"]);
    assert!(!o.status.success());
    e.fails(&["settings", "purge-protection", "maybe"], "takes `on`");
}

#[test]
fn purge_protection_only_grows() {
    let e = env();
    e.ok(&["settings", "destroy-wait", "10d"]);
    let out = e.ok(&["settings", "purge-protection", "on"]);
    assert!(out.contains("purge-protection  on"), "{out}");
    let before = std::fs::read(e.path("store.db")).unwrap();
    e.fails(&["settings", "destroy-wait", "9d"], "purge protection is on");
    e.fails(&["settings", "destroy-wait", "0"], "purge protection is on");
    e.fails(&["settings", "purge-protection", "off"], "cannot be turned off");
    assert_eq!(std::fs::read(e.path("store.db")).unwrap(), before, "refusals change nothing");
    assert!(e.ok(&["settings", "destroy-wait", "20d"]).contains("20d"));
    let v: serde_json::Value =
        serde_json::from_str(&e.ok(&["settings", "show", "--json"])).unwrap();
    assert_eq!(v["purge_protection"], true);
    assert_eq!(v["destroy_wait_secs"], 20 * 86_400);
}

/// A short wait really ends: the material is shredded, the metadata stays, cancel is refused.
#[test]
fn wait_ends_and_material_is_shredded() {
    let e = env();
    e.ok(&["settings", "destroy-wait", "1s"]);
    e.ok(&["key", "generate", "--type", "ec-p256", "--label", "short"]);
    e.ok(&["key", "destroy", "short"]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    // Listing (and every login) carries due destructions out.
    assert!(!e.ok(&["key", "list", "--scheduled"]).contains("short"));
    let v: serde_json::Value =
        serde_json::from_str(&e.ok(&["key", "show", "short", "--json"])).unwrap();
    let objs = v.as_array().unwrap();
    assert_eq!(objs.len(), 2, "both halves keep their metadata");
    for o in objs {
        assert_eq!(o["shredded"], true);
        assert_eq!(o["state"], "destroyed");
        assert!(o["attributes"]["CKA_BULWARK_DESTROY_DATE"].is_string(), "{o}");
    }
    e.fails(&["key", "destroy", "--cancel", "short"], "can still be cancelled");
    let audit = e.path("audit.jsonl");
    e.ok(&["audit", "export", "--out", audit.to_str().unwrap()]);
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(log.contains("\"destroy-due\""), "{log}");
}

mod remote {
    //! The same through a real bulwarkd (dev mode, loopback): a daemon store waits 30 days by
    //! default, a wait below 7 days is refused without quorum approval, and destroy, the
    //! scheduled list, show and cancel work through the daemon's RPCs.

    use std::path::Path;
    use std::process::{Command, Output};

    use bulwarkd::dev::DevServer;

    fn bulwark(dir: &Path, who: &str, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bulwark"));
        c.args(args).env_remove("BULWARK_STORE");
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
    fn remote_scheduled_destruction() {
        let tmp = tempfile::tempdir().unwrap();
        std::env::set_var("BULWARK_STATE_DIR", tmp.path().join("state"));
        let server = DevServer::start(&tmp.path().join("dev")).unwrap();
        let dir = server.dir.clone();
        let so = |a: &[&str]| bulwark(&dir, "so.env", a);
        let officer = |a: &[&str]| bulwark(&dir, "officer.env", a);

        let show = ok(&so(&["settings", "show"]));
        assert!(show.contains("destroy-wait      30d"), "{show}");
        assert!(show.contains("minimum wait      7d"), "{show}");
        fails(&so(&["settings", "destroy-wait", "1d"]), "needs quorum approval");
        fails(&officer(&["settings", "destroy-wait", "8d"]), "not permitted");
        assert!(ok(&so(&["settings", "destroy-wait", "8d"])).contains("8d"));

        ok(&officer(&["key", "generate", "--type", "ec-p256", "--label", "rk"]));
        let out = ok(&officer(&["key", "destroy", "rk"]));
        assert!(out.contains("scheduled the destruction of 2 object(s)"), "{out}");
        assert!(!ok(&officer(&["key", "list"])).contains("rk"));
        let listed = ok(&officer(&["key", "list", "--scheduled"]));
        assert!(listed.contains("rk"), "{listed}");
        let shown = ok(&officer(&["key", "show", "rk"]));
        assert!(shown.contains("DESTROY ON") && shown.contains("rk"), "{shown}");
        let out = ok(&officer(&["key", "destroy", "--cancel", "rk"]));
        assert!(out.contains("cancelled the destruction of 2 object(s)"), "{out}");
        assert!(ok(&officer(&["key", "list"])).contains("rk"));

        ok(&so(&["settings", "purge-protection", "on"]));
        fails(&so(&["settings", "destroy-wait", "7d"]), "purge protection is on");
    }
}
