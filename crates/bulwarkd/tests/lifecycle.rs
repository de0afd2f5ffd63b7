//! Key lifecycle states over the daemon's API (docs/lifecycle.md): `KeyState` and
//! `ChangeKeyState` on the real daemon, reached over mTLS through `bulwark-client`. A crypto
//! officer moves a key through its states; a crypto user granted the key's uses may not change
//! its state; the key's state decides what the user may still do with it.

mod common;

use bulwark_client::{Client, ClientConfig, Code};
use bulwarkd::dev::DevServer;
use common::{code, env_value};

fn state_dir_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dir = std::env::temp_dir().join(format!("bulwarkd-lc-state-{}", std::process::id()));
        std::env::set_var("BULWARK_STATE_DIR", dir);
    });
}

fn client_as(s: &DevServer, who: &str) -> Client {
    let pki = s.dir.join("pki");
    let cfg = ClientConfig::from_files(
        &format!("https://{}", s.addr),
        &pki.join("ca.pem"),
        Some(&pki.join(format!("{who}.pem"))),
        Some(&pki.join(format!("{who}-key.pem"))),
    )
    .unwrap();
    Client::connect(&cfg).unwrap()
}

fn login(s: &DevServer, env: &str) -> Client {
    let user = env_value(&s.dir, env, "BULWARK_USER");
    let mut c = client_as(s, &user);
    c.login(&user, &env_value(&s.dir, env, "BULWARK_PASSWORD")).unwrap();
    c
}

fn states(c: &Client, label: &str) -> Vec<String> {
    c.key_state(label).unwrap().objects.into_iter().map(|o| o.state).collect()
}

#[test]
fn lifecycle_over_the_daemon_api() {
    let dir = tempfile::tempdir().unwrap();
    state_dir_once();
    let s = DevServer::start(&dir.path().join("dev")).unwrap();
    let so = login(&s, "so.env");
    let officer = login(&s, "officer.env");
    officer.generate_key("ec-p256", "k", false).unwrap();
    so.create_user("bob", "crypto-user", "bob-password", false).unwrap();
    officer.set_key_access("k", &[("user:bob", &["sign", "verify"])]).unwrap();
    let mut bob = client_as(&s, "crypto");
    bob.login("bob", "bob-password").unwrap();

    assert_eq!(states(&officer, "k"), ["active", "active"]);
    let sig = bob.sign("k", "", b"m", true).unwrap();
    assert_eq!(bob.verify_noting_state("k", "", b"m", &sig, true).unwrap().1, "");

    // A user may use the key, not change its state or dates.
    for t in ["suspend", "deactivate", "compromise"] {
        assert_eq!(code(bob.change_key_state("k", t, [0; 3])).0, Code::PermissionDenied, "{t}");
    }
    assert_eq!(code(bob.change_key_state("k", "", [0, 0, 1])).0, Code::PermissionDenied);
    assert_eq!(states(&officer, "k"), ["active", "active"]);

    let changed = officer.change_key_state("k", "suspend", [0; 3]).unwrap();
    assert!(changed
        .objects
        .iter()
        .all(|o| o.state == "suspended" && o.stored_state == "suspended"));
    assert_eq!(code(bob.sign("k", "", b"m", true)).0, Code::PermissionDenied);
    // A transition the table refuses: the reason, and nothing changes.
    let (c, m) = code(officer.change_key_state("k", "activate", [0; 3]));
    assert_eq!(c, Code::PermissionDenied);
    assert!(m.contains("only a pre-activation key can be activated"), "{m}");
    assert_eq!(states(&officer, "k"), ["suspended", "suspended"]);

    officer.change_key_state("k", "resume", [0; 3]).unwrap();
    bob.sign("k", "", b"m", true).unwrap();
    officer.change_key_state("k", "deactivate", [0; 3]).unwrap();
    assert_eq!(states(&bob, "k"), ["deactivated", "deactivated"]);
    assert!(bob.verify("k", "", b"m", &sig, true).unwrap(), "deactivated keys still verify");
    let (valid, note) = bob.verify_noting_state("k", "", b"m", &sig, true).unwrap();
    assert!(valid);
    assert_eq!(note, "deactivated", "the response says so");
    let (c, m) = code(bob.sign("k", "", b"m", true));
    assert_eq!(c, Code::PermissionDenied);
    assert!(m.contains("deactivated"), "{m}");
    officer.change_key_state("k", "compromise", [0; 3]).unwrap();
    let st = officer.key_state("k").unwrap();
    assert!(st.objects.iter().all(|o| o.state == "compromised" && o.compromise_date > 0));

    // Dates: a deactivation date in the past deactivates an active key at once.
    officer.generate_key("aes-256", "dated", false).unwrap();
    officer.change_key_state("dated", "", [0, 0, 1_000_000_000]).unwrap();
    assert_eq!(states(&officer, "dated"), ["deactivated"]);
    assert_eq!(officer.key_state("dated").unwrap().objects[0].deactivation_date, 1_000_000_000);

    // Bad requests.
    let bad = [("fly", [0; 3]), ("destroy", [0; 3]), ("", [0; 3]), ("suspend", [0, 0, 5])];
    for (t, dates) in bad {
        assert_eq!(code(officer.change_key_state("k", t, dates)).0, Code::InvalidArgument, "{t}");
    }
    assert_eq!(code(officer.key_state("nope")).0, Code::NotFound);
}
