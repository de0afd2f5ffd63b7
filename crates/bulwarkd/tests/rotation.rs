//! Key versions and rotation over the daemon's API (docs/lifecycle.md, "Versions and
//! rotation"): `RotateKey`, `KeyVersions`, `SetKeyRotation` and the `key_version` fields on the
//! real daemon, reached over mTLS through `bulwark-client`. Only a crypto officer rotates; a
//! crypto user's grants carry over to the new version exactly; the label names the new version
//! at once (the label cache follows), and old data still verifies and decrypts by version.

mod common;

use bulwark_client::{Client, ClientConfig, Code};
use bulwark_core::history::KeyHistory;
use bulwarkd::dev::DevServer;
use common::{code, env_value};

fn state_dir_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dir = std::env::temp_dir().join(format!("bulwarkd-rot-state-{}", std::process::id()));
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

#[test]
fn rotation_over_the_daemon_api() {
    let dir = tempfile::tempdir().unwrap();
    state_dir_once();
    let s = DevServer::start(&dir.path().join("dev")).unwrap();
    let so = login(&s, "so.env");
    let officer = login(&s, "officer.env");
    officer.generate_key("ec-p256", "k", false).unwrap();
    officer.generate_key("aes-256", "d", false).unwrap();
    so.create_user("bob", "crypto-user", "bob-password", false).unwrap();
    officer.set_key_access("k", &[("user:bob", &["sign", "verify"])]).unwrap();
    officer.set_key_access("d", &[("user:bob", &["encrypt", "decrypt"])]).unwrap();
    let mut bob = client_as(&s, "crypto");
    bob.login("bob", "bob-password").unwrap();

    // Bob uses version 1 (the label cache now holds it).
    let sig1 = bob.sign("k", "", b"m1", true).unwrap();
    let ct1 = bob.encrypt("d", b"p1").unwrap();
    assert_eq!(&ct1[..8], b"BWK2\0\0\0\x01");

    // Neither bob nor the security officer may rotate or change rotation.
    for c in [&bob, &so] {
        assert_eq!(code(c.rotate_key("k")).0, Code::PermissionDenied);
        assert_eq!(code(c.set_rotation_period("k", Some(86_400))).0, Code::PermissionDenied);
        assert_eq!(code(c.set_min_decrypt_version("d", 1)).0, Code::PermissionDenied);
    }
    assert_eq!(officer.key_versions("k").unwrap().versions.len(), 1);

    let r = officer.rotate_key("k").unwrap();
    assert_eq!(r.versions.len(), 2);
    assert!(r.versions[1].current && r.versions[1].state == "active");
    assert_eq!(r.versions[0].state, "deactivated");
    officer.rotate_key("d").unwrap();

    // The grants came along: bob signs with v2 by label, and v1 no longer signs.
    let sig2 = bob.sign("k", "", b"m2", true).unwrap();
    assert!(bob.verify("k", "", b"m2", &sig2, true).unwrap());
    assert!(!bob.verify("k", "", b"m1", &sig1, true).unwrap(), "the label names v2 now");
    let (valid, state) = bob.verify_version("k", 1, "", b"m1", &sig1).unwrap();
    assert!(valid);
    assert_eq!(state, "deactivated");
    assert_eq!(code(bob.sign_version("k", 1, "", b"x")).0, Code::PermissionDenied);
    let ct2 = bob.encrypt("d", b"p2").unwrap();
    assert_eq!(&ct2[..8], b"BWK2\0\0\0\x02");
    assert_eq!(bob.decrypt("d", &ct1).unwrap().as_slice(), b"p1");
    assert_eq!(bob.decrypt("d", &ct2).unwrap().as_slice(), b"p2");

    // Bob sees the versions and the history bundle, which verifies both signatures offline.
    let v = bob.key_versions("k").unwrap();
    let h = KeyHistory::from_json(&v.history_json).unwrap();
    assert_eq!(h.verify(None, None, None, b"m1", &sig1).unwrap(), 1);
    assert_eq!(h.verify(None, None, None, b"m2", &sig2).unwrap(), 2);
    assert!(officer.key_versions("d").unwrap().history_json.is_empty(), "a secret key");

    // Rotation periods and the minimum decryption version, by the officer.
    let r = officer.set_rotation_period("k", Some(30 * 86_400)).unwrap();
    let cur = r.versions.iter().find(|v| v.current).unwrap();
    assert_eq!(cur.rotation_period, 30 * 86_400);
    assert!(cur.next_rotation > 0);
    assert_eq!(code(officer.set_rotation_period("k", Some(60))).0, Code::InvalidArgument);
    officer.set_rotation_period("k", None).unwrap();
    officer.set_min_decrypt_version("d", 2).unwrap();
    assert_eq!(code(bob.decrypt("d", &ct1)).0, Code::PermissionDenied);
    assert_eq!(bob.decrypt("d", &ct2).unwrap().as_slice(), b"p2");
    assert_eq!(code(officer.set_min_decrypt_version("d", 1)).0, Code::PermissionDenied);
}
