//! The PKCS#11 remote-slot service (`bulwark.p11.v1.Token`) driven through `RemoteHsm` (core's
//! `Hsm` trait) with no PKCS#11 layer in between, to show what the daemon itself enforces
//! whatever the client does: context logins for `CKA_ALWAYS_AUTHENTICATE` keys, and session
//! objects that belong to one login only.

mod common;

use bulwark_client::remote_hsm::RemoteHsm;
use bulwark_client::ClientConfig;
use bulwark_core::attr::{AttrType, AttrValue, ObjectClass};
use bulwark_core::hsm::Hsm;
use bulwark_core::mechanism::{KeyGenMechanism, Mechanism};
use bulwark_core::secret::Pin;
use bulwark_core::token::Usage;
use bulwark_core::{Error, UserType};
use bulwarkd::dev::DevServer;
use common::env_value;

const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn dev() -> (tempfile::TempDir, DevServer) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let d = tempfile::tempdir().unwrap();
    ONCE.call_once(|| {
        let dir = std::env::temp_dir().join(format!("bulwarkd-p11-state-{}", std::process::id()));
        std::env::set_var("BULWARK_STATE_DIR", dir);
    });
    let s = DevServer::start(&d.path().join("dev")).unwrap();
    (d, s)
}

/// A remote token logged in as the dev crypto officer (one login per call).
fn crypto(s: &DevServer) -> (RemoteHsm, Pin) {
    let pki = s.dir.join("pki");
    let cfg = ClientConfig::from_files(
        &format!("https://{}", s.addr),
        &pki.join("ca.pem"),
        Some(&pki.join("crypto.pem")),
        Some(&pki.join("crypto-key.pem")),
    )
    .unwrap();
    let hsm = RemoteHsm::new(&cfg).unwrap();
    let pin = || {
        Pin::new(format!("crypto:{}", env_value(&s.dir, "officer.env", "BULWARK_PASSWORD")).into())
    };
    hsm.login(UserType::User, &pin()).unwrap();
    (hsm, pin())
}

fn data_object(label: &str) -> Vec<(AttrType, AttrValue)> {
    vec![
        (AttrType::Class, AttrValue::Ulong(ObjectClass::Data as u64)),
        (AttrType::Token, AttrValue::Bool(false)),
        (AttrType::Private, AttrValue::Bool(false)),
        (AttrType::Label, AttrValue::Bytes(label.as_bytes().to_vec())),
    ]
}

#[test]
fn always_authenticate_is_enforced_by_the_daemon() {
    let (_d, s) = dev();
    let (hsm, pin) = crypto(&s);
    let (pk, sk) = hsm
        .generate_key_pair(
            KeyGenMechanism::EcKeyPairGen,
            &[
                (AttrType::Token, AttrValue::Bool(false)),
                (AttrType::EcParams, AttrValue::Bytes(P256.to_vec())),
                (AttrType::Verify, AttrValue::Bool(true)),
            ],
            &[
                (AttrType::Token, AttrValue::Bool(false)),
                (AttrType::Sign, AttrValue::Bool(true)),
                (AttrType::AlwaysAuthenticate, AttrValue::Bool(true)),
            ],
            1,
        )
        .unwrap();
    let mech = Mechanism::EcdsaSha256;
    let key = hsm.prepare(sk, Usage::Sign, &mech).unwrap();
    assert_eq!(key.signature_len(&mech), 64);
    // No context login: the daemon refuses, whatever the client-side layer would have done.
    assert!(matches!(key.sign(&mech, b"m"), Err(Error::UserNotLoggedIn)));
    // A wrong password is a failed login; the right one allows exactly one signature.
    assert!(matches!(hsm.check_pin(&Pin::new(b"crypto:wrong".to_vec())), Err(Error::PinIncorrect)));
    hsm.check_pin(&pin).unwrap();
    let sig = key.sign(&mech, b"m").unwrap();
    assert!(matches!(key.sign(&mech, b"m"), Err(Error::UserNotLoggedIn)));
    let pub_key = hsm.prepare(pk, Usage::Verify, &mech).unwrap();
    pub_key.verify(&mech, b"m", &sig).unwrap();
    assert!(matches!(pub_key.verify(&mech, b"n", &sig), Err(Error::SignatureInvalid)));
    // Still logged in: the refusals did not end the application's login.
    assert_eq!(hsm.logged_in(), Some(UserType::User));
}

#[test]
fn session_objects_belong_to_one_login() {
    let (_d, s) = dev();
    let (a, _) = crypto(&s);
    let (b, _) = crypto(&s);
    let h = a.create_object(&data_object("mine"), 1).unwrap();
    let token_obj = a
        .create_object(
            &[
                (AttrType::Class, AttrValue::Ulong(ObjectClass::Data as u64)),
                (AttrType::Token, AttrValue::Bool(true)),
                (AttrType::Label, AttrValue::Bytes(b"shared".to_vec())),
            ],
            1,
        )
        .unwrap();
    assert!(a.find(&[]).unwrap().contains(&h));
    // Another login (same user, another application) sees the token object, not the session
    // object, and cannot reach it by handle.
    let seen = b.find(&[]).unwrap();
    assert!(seen.contains(&token_obj) && !seen.contains(&h), "{seen:?}");
    assert!(matches!(b.attributes(h), Err(Error::ObjectHandleInvalid)));
    assert!(matches!(b.attribute(h, AttrType::Label), Err(Error::ObjectHandleInvalid)));
    assert!(matches!(b.destroy_object(h), Err(Error::ObjectHandleInvalid)));
    assert!(matches!(b.copy_object(h, &[], 1), Err(Error::ObjectHandleInvalid)));
    // Session 1 of `a` closes: its objects go; `b`'s session 1 is unrelated.
    let hb = b.create_object(&data_object("theirs"), 1).unwrap();
    a.close_session(1);
    assert!(!a.find(&[]).unwrap().contains(&h));
    assert!(b.find(&[]).unwrap().contains(&hb));
    // Logout drops every session object of the login.
    let h2 = a.create_object(&data_object("again"), 2).unwrap();
    a.logout().unwrap();
    assert!(a.find(&[]).unwrap().is_empty(), "nothing is visible without a login");
    let (a2, _) = crypto(&s);
    assert!(!a2.find(&[]).unwrap().contains(&h2));
    // The daemon's own keys never show.
    for h in a2.find(&[]).unwrap() {
        let label = a2.attributes(h).unwrap().label();
        assert!(!label.starts_with("bulwarkd."), "{label}");
    }
    a2.destroy_object(token_obj).unwrap();
}

#[test]
fn pins_carry_a_totp_code_for_enrolled_users() {
    let (_d, s) = dev();
    let pki = s.dir.join("pki");
    let cfg = |who: &str| {
        ClientConfig::from_files(
            &format!("https://{}", s.addr),
            &pki.join("ca.pem"),
            Some(&pki.join(format!("{who}.pem"))),
            Some(&pki.join(format!("{who}-key.pem"))),
        )
        .unwrap()
    };
    let mut so = bulwark_client::Client::connect(&cfg("so")).unwrap();
    so.login("so", &env_value(&s.dir, "so.env", "BULWARK_PASSWORD")).unwrap();
    let enrolled = so.create_user("tina", "crypto-user", "tina-password", true).unwrap();
    let secret = totp_rs::Secret::try_from_base32(&enrolled.totp_secret_base32).unwrap();
    let code =
        totp_rs::Builder::new().with_secret(secret).build().unwrap().generate_current().to_string();

    let hsm = RemoteHsm::new(&cfg("crypto")).unwrap();
    let pin = |p: &str| Pin::new(p.as_bytes().to_vec());
    // Password alone, or a wrong code: refused like a wrong password.
    assert!(matches!(
        hsm.login(UserType::User, &pin("tina:tina-password")),
        Err(Error::PinIncorrect)
    ));
    let wrong = format!("tina:tina-password:{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    assert!(matches!(hsm.login(UserType::User, &pin(&wrong)), Err(Error::PinIncorrect)));
    hsm.login(UserType::User, &pin(&format!("tina:tina-password:{code}"))).unwrap();
    assert_eq!(hsm.logged_in(), Some(UserType::User));
    // A crypto user sees no token key without grants, and may use the HSM's random generator.
    assert!(hsm.find(&[]).unwrap().iter().all(|h| {
        hsm.attributes(*h).is_ok_and(|a| !matches!(a.class(), Some(ObjectClass::PrivateKey)))
    }));
    let mut buf = [0u8; 32];
    hsm.random(&mut buf).unwrap();
    assert_ne!(buf, [0u8; 32]);
    hsm.logout().unwrap();
}

/// On an HSM whose key exports need quorum approvals, `C_WrapKey` through a remote slot is
/// refused (PKCS#11 cannot carry approvals; `bulwark key wrap --approval` is the way out).
#[test]
fn wrap_is_refused_where_exports_need_approvals() {
    let d = tempfile::tempdir().unwrap();
    let _ = dev(); // sets the state directory once
    let s = DevServer::start_with(&d.path().join("dev"), |c| {
        c.approvals = Some(bulwarkd::config::ApprovalsConfig { threshold: 2, approvers: vec![] });
    })
    .unwrap();
    let (hsm, _) = crypto(&s);
    let aes = |extractable: bool| {
        let t = vec![
            (AttrType::Token, AttrValue::Bool(false)),
            (AttrType::ValueLen, AttrValue::Ulong(32)),
            (AttrType::Wrap, AttrValue::Bool(true)),
            (AttrType::Extractable, AttrValue::Bool(extractable)),
        ];
        hsm.generate_key(KeyGenMechanism::AesKeyGen, &t, 1).unwrap()
    };
    let (kek, dk) = (aes(false), aes(true));
    let r = hsm.wrap_key(kek, &Mechanism::AesKeyWrapPad, dk);
    assert!(matches!(r, Err(Error::ActionProhibited(_))), "{r:?}");
}
