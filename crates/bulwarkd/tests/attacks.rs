//! Issue 9's attacks on the daemon's front door, as tests: each did harm before the security
//! kernel moved into core and must be refused now.
//!
//! - a session token works only over the TLS identity that logged in (attack 10);
//! - a context login must be a fresh, unused login of the same user, and handing in another
//!   user's token neither passes nor ends that user's session (attack 10);
//! - parallel wrong passwords check at most the limit, the rest are refused unchecked (attack 7);
//! - grants die with their user and never pass to a new user of the same name (attack 10);
//! - a crypto user's session object never answers to a label the officer uses, and is invisible
//!   to every other login (attack 2).

mod common;

use std::path::Path;

use bulwark_client::remote_hsm::RemoteHsm;
use bulwark_client::{Client, ClientConfig, Code};
use bulwark_core::attr::{AttrType, AttrValue, ObjectClass};
use bulwark_core::hsm::Hsm;
use bulwark_core::kernel::{Principal, Role};
use bulwark_core::secret::Pin;
use bulwark_core::UserType;
use bulwarkd::dev::DevServer;
use common::{code, connect_as, env_value, login_as};

fn dev() -> (tempfile::TempDir, DevServer) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let d = tempfile::tempdir().unwrap();
    ONCE.call_once(|| {
        let dir = std::env::temp_dir().join(format!("bulwarkd-attacks-{}", std::process::id()));
        std::env::set_var("BULWARK_STATE_DIR", dir);
    });
    let s = DevServer::start(&d.path().join("dev")).unwrap();
    (d, s)
}

/// A connection with the client certificate `who` of the dev PKI (not logged in).
fn as_cert(s: &DevServer, who: &str) -> Client {
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

#[test]
fn a_session_token_is_bound_to_the_tls_identity_that_logged_in() {
    let (_d, s) = dev();
    let officer = login_as(&s.dir, "officer.env");
    officer.generate_key("aes-256", "bound", false).unwrap();
    let token = officer.session_token().unwrap();
    // The same certificate over a new connection: the session works.
    let mut same = as_cert(&s, "crypto");
    same.set_session_token(&token);
    assert!(same.list_keys().unwrap().iter().any(|k| k.label == "bound"));
    // Another valid client certificate presenting the stolen token: no session at all.
    for other in ["user", "so"] {
        let mut thief = as_cert(&s, other);
        thief.set_session_token(&token);
        let (c, _) = code(thief.list_keys());
        assert_eq!(c, Code::Unauthenticated, "token replayed with the {other} certificate");
        assert_eq!(code(thief.encrypt("bound", b"x")).0, Code::Unauthenticated);
    }
    // Over the local socket neither.
    let mut local = Client::connect_unix(&s.dir.join("bulwarkd.sock")).unwrap();
    local.set_session_token(&token);
    assert_eq!(code(local.list_keys()).0, Code::Unauthenticated);
}

#[test]
fn a_context_login_must_be_fresh_and_never_ends_another_users_session() {
    let (_d, s) = dev();
    let st = &s.state;
    let p = |name: &str, id: u8| Principal {
        id: bulwark_core::kernel::UserId([id; 16]),
        name: name.into(),
        role: Role::CryptoUser,
    };
    let alice = p("alice", 1);
    let bob = p("bob", 2);
    let main = st.open_session(&alice, "cert:aa").unwrap();
    assert!(st.session(&main, "cert:aa").is_some(), "the caller's own session, now used");
    // The caller's existing (used) token is not a fresh credential.
    assert!(!st.take_context_login(&main, "cert:aa", alice.id));
    // Another user's token: refused, and that user's session survives.
    let bobs = st.open_session(&bob, "cert:bb").unwrap();
    assert!(!st.take_context_login(&bobs, "cert:aa", alice.id));
    assert!(st.session(&bobs, "cert:bb").is_some(), "bob's session was not ended");
    // A fresh login of the same user over another identity: refused.
    let elsewhere = st.open_session(&alice, "cert:zz").unwrap();
    assert!(!st.take_context_login(&elsewhere, "cert:aa", alice.id));
    // A fresh, unused login of the same user over the same identity: accepted once.
    let fresh = st.open_session(&alice, "cert:aa").unwrap();
    assert!(st.take_context_login(&fresh, "cert:aa", alice.id));
    assert!(!st.take_context_login(&fresh, "cert:aa", alice.id), "single use");
    assert!(st.session(&fresh, "cert:aa").is_none(), "spent");
}

#[test]
fn parallel_wrong_passwords_never_check_more_than_the_limit() {
    let (_d, s) = dev();
    let dir = s.dir.clone();
    let results: Vec<Code> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..11)
            .map(|i| {
                let dir = dir.clone();
                sc.spawn(move || {
                    let mut c = connect_as(&dir, "officer.env");
                    code(c.login("crypto", &format!("wrong password {i}"))).0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let checked = results.iter().filter(|c| **c == Code::Unauthenticated).count();
    let refused = results.iter().filter(|c| **c == Code::PermissionDenied).count();
    assert_eq!(checked, 5, "exactly the limit was checked: {results:?}");
    assert_eq!(refused, 6, "the rest were refused unchecked: {results:?}");
    // The right password is refused too: the user is locked.
    let pw = env_value(&dir, "officer.env", "BULWARK_PASSWORD");
    assert_eq!(
        code(connect_as(&dir, "officer.env").login("crypto", &pw)).0,
        Code::PermissionDenied
    );
}

#[test]
fn grants_die_with_their_user_and_never_pass_to_a_namesake() {
    let (_d, s) = dev();
    let so = login_as(&s.dir, "so.env");
    let officer = login_as(&s.dir, "officer.env");
    officer.generate_key("ec-p256", "payroll", false).unwrap();
    so.create_user("dora", "crypto-user", "dora-password", false).unwrap();
    officer.set_key_access("payroll", &[("user:dora", &["sign"])]).unwrap();
    let mut dora = as_cert(&s, "user");
    dora.login("dora", "dora-password").unwrap();
    dora.sign("payroll", "", b"m", true).unwrap();
    so.delete_user("dora").unwrap();
    assert_eq!(
        code(dora.sign("payroll", "", b"m", true)).0,
        Code::Unauthenticated,
        "session ended"
    );
    so.create_user("dora", "crypto-user", "dora-password-2", false).unwrap();
    let mut namesake = as_cert(&s, "user");
    namesake.login("dora", "dora-password-2").unwrap();
    assert_eq!(code(namesake.sign("payroll", "", b"m", true)).0, Code::NotFound);
    assert!(namesake.list_keys().unwrap().is_empty());
}

fn remote(s: &DevServer, cert: &str, pin: &str) -> RemoteHsm {
    let pki = s.dir.join("pki");
    let cfg = ClientConfig::from_files(
        &format!("https://{}", s.addr),
        &pki.join("ca.pem"),
        Some(&pki.join(format!("{cert}.pem"))),
        Some(&pki.join(format!("{cert}-key.pem"))),
    )
    .unwrap();
    let hsm = RemoteHsm::new(&cfg).unwrap();
    hsm.login(UserType::User, &Pin::new(pin.as_bytes().to_vec())).unwrap();
    hsm
}

fn dir_pw(dir: &Path, env: &str) -> String {
    env_value(dir, env, "BULWARK_PASSWORD")
}

#[test]
fn a_session_key_under_a_taken_label_never_answers_for_it() {
    let (_d, s) = dev();
    let officer = login_as(&s.dir, "officer.env");
    officer.generate_key("aes-256", "team-key", false).unwrap();
    // The crypto user plants a session AES key with a value it knows, under the same label.
    let user = remote(&s, "user", &format!("user:{}", dir_pw(&s.dir, "dev.env")));
    let planted = user
        .create_object(
            &[
                (AttrType::Class, AttrValue::Ulong(ObjectClass::SecretKey.to_raw())),
                (AttrType::KeyType, AttrValue::Ulong(0x1f)),
                (AttrType::Token, AttrValue::Bool(false)),
                (AttrType::Encrypt, AttrValue::Bool(true)),
                (AttrType::Decrypt, AttrValue::Bool(true)),
                (AttrType::Label, AttrValue::Bytes(b"team-key".to_vec())),
                (AttrType::Value, AttrValue::Bytes(vec![0x42; 32])),
            ],
            7,
        )
        .unwrap();
    // The officer's label API encrypts with the token key: the planted key cannot decrypt it.
    let ct = officer.encrypt("team-key", b"payroll data").unwrap();
    assert_eq!(&officer.decrypt("team-key", &ct).unwrap()[..], b"payroll data");
    let key = aws_lc_rs::aead::LessSafeKey::new(
        aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, &[0x42; 32]).unwrap(),
    );
    let (nonce, body) = (&ct[4..16], &ct[16..]);
    let mut buf = body.to_vec();
    let opened = key.open_in_place(
        aws_lc_rs::aead::Nonce::try_assume_unique_for_key(nonce).unwrap(),
        aws_lc_rs::aead::Aad::from(&ct[..4]),
        &mut buf,
    );
    assert!(opened.is_err(), "the officer's data was encrypted under the planted key");
    // The officer's own PKCS#11 login neither sees the planted object nor can use its handle.
    let co = remote(&s, "crypto", &format!("crypto:{}", dir_pw(&s.dir, "officer.env")));
    let found = co.find(&[(AttrType::Label, AttrValue::Bytes(b"team-key".to_vec()))]).unwrap();
    assert!(!found.contains(&planted), "another login's session object is visible");
    assert!(matches!(co.attributes(planted), Err(bulwark_core::Error::ObjectHandleInvalid)));
    assert!(co.destroy_object(planted).is_err());
}
