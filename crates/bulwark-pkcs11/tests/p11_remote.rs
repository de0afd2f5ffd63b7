//! The PKCS#11 suite against a **remote slot**: the module talks to a real `bulwarkd` (dev mode,
//! in-process, loopback ephemeral port) over mutual-TLS gRPC, as the dev crypto officer. The
//! bodies are those of `p11.rs` (`suite/mod.rs`); they share the one remote token, so they run
//! one at a time. Then the remote-only checks: wrong password, a crypto user outside its access
//! list, and a sealed HSM.

#![allow(missing_docs)]

mod common;
mod suite;

use std::path::Path;
use std::sync::OnceLock;

use bulwarkd::dev::DevServer;
use common::{p11, rv};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

struct Daemon {
    _dir: tempfile::TempDir,
    server: DevServer,
}

fn env_value(dir: &Path, file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(dir.join(file)).expect("env file");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("export {key}=")).map(|v| v.trim_matches('\'').to_owned())
        })
        .expect("env key")
}

/// The daemon, started once; the module is switched to remote mode before it loads.
fn daemon() -> &'static Daemon {
    static D: OnceLock<Daemon> = OnceLock::new();
    D.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        // Anti-rollback marks of this run's stores stay in the temp dir (set before any thread
        // of the daemon reads the environment).
        std::env::set_var("BULWARK_STATE_DIR", dir.path().join("state"));
        // The shared suite checks standard PKCS#11 semantics (wrap under any wrapping key the
        // user may use); a daemon's default policy — keys leave only under trusted keys — has
        // its own tests (bulwark-cli tests/remote.rs, bulwark-core tests/attack_gate.rs).
        let policy = bulwark_core::token::SecurityPolicy::default();
        let server = DevServer::start_with_policy(&dir.path().join("dev"), &policy, |_| ())
            .expect("start bulwarkd");
        let d = &server.dir;
        let pki = d.join("pki");
        let slot_toml = format!(
            "[[slot]]\nlabel = \"remote\"\nendpoint = \"https://{}\"\nca_cert = \"{}\"\n\
             client_cert = \"{}\"\nclient_key = \"{}\"\n",
            server.addr,
            pki.join("ca.pem").display(),
            pki.join("crypto.pem").display(),
            pki.join("crypto-key.pem").display(),
        );
        common::use_remote(common::Remote {
            slot_toml,
            user_pin: format!("crypto:{}", env_value(d, "officer.env", "BULWARK_PASSWORD")),
            so_pin: format!("so:{}", env_value(d, "so.env", "BULWARK_PASSWORD")),
        });
        Daemon { _dir: dir, server }
    })
}

macro_rules! wrap {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let _one_at_a_time = common::serial();
                daemon();
                suite::$name();
            }
        )*
    };
}

crate::for_each_p11_test!(wrap);

/// A `bulwark-client` connection to the test daemon, logged in as `who` (officer.env / so.env).
fn admin(env: &str) -> bulwark_client::Client {
    let s = &daemon().server;
    let user = env_value(&s.dir, env, "BULWARK_USER");
    let pki = s.dir.join("pki");
    let cfg = bulwark_client::ClientConfig::from_files(
        &format!("https://{}", s.addr),
        &pki.join("ca.pem"),
        Some(&pki.join(format!("{user}.pem"))),
        Some(&pki.join(format!("{user}-key.pem"))),
    )
    .expect("client config");
    let mut c = bulwark_client::Client::connect(&cfg).expect("connect");
    c.login(&user, &env_value(&s.dir, env, "BULWARK_PASSWORD")).expect("login");
    c
}

#[test]
fn remote_wrong_password_and_unsupported_calls() {
    let _one_at_a_time = common::serial();
    daemon();
    let slot = common::fresh_token();
    let info = p11().get_token_info(slot).unwrap();
    assert!(info.token_initialized() && info.user_pin_initialized());
    assert_eq!(info.model(), "remote");
    let s = p11().open_rw_session(slot).unwrap();
    let wrong = AuthPin::new("crypto:not-the-password".into());
    assert_eq!(rv(s.login(UserType::User, Some(&wrong))), RvError::PinIncorrect);
    assert_eq!(
        rv(s.login(UserType::User, Some(&AuthPin::new("no-user".into())))),
        RvError::PinIncorrect
    );
    // The security officer's password is not a CKU_USER credential, nor the officer's a CKU_SO.
    assert_eq!(rv(s.login(UserType::User, Some(&common::so_pin()))), RvError::PinIncorrect);
    assert_eq!(rv(s.login(UserType::So, Some(&common::user_pin()))), RvError::PinIncorrect);
    // Users and the token are managed on the daemon.
    s.login(UserType::So, Some(&common::so_pin())).unwrap();
    assert_eq!(rv(s.init_pin(&AuthPin::new("x:yyyyyyyy".into()))), RvError::FunctionNotSupported);
    s.logout().unwrap();
    s.login(UserType::User, Some(&common::user_pin())).unwrap();
    assert_eq!(
        rv(s.set_pin(&common::user_pin(), &AuthPin::new("crypto:new-password".into()))),
        RvError::FunctionNotSupported
    );
    drop(s);
    assert_eq!(
        rv(p11().init_token(slot, &common::so_pin(), "again")),
        RvError::FunctionNotSupported
    );
}

#[test]
fn remote_crypto_user_is_bound_by_its_access_list() {
    let _one_at_a_time = common::serial();
    daemon();
    let slot = common::fresh_token();
    // The crypto officer makes two token key pairs through PKCS#11.
    let s = p11().open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&common::user_pin())).unwrap();
    let pair = |label: &[u8]| {
        s.generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(P256.to_vec()),
                Attribute::Verify(true),
                Attribute::Label(label.to_vec()),
            ],
            &[Attribute::Token(true), Attribute::Sign(true), Attribute::Label(label.to_vec())],
        )
        .unwrap()
    };
    let (_, granted) = pair(b"granted");
    let (_, verify_only) = pair(b"verify-only");
    let (_, hidden) = pair(b"hidden");
    drop(s);
    // A crypto user with grants on two of them (the daemon's access lists, by label).
    let so = admin("so.env");
    let _ = so.delete_user("alice");
    so.create_user("alice", "crypto-user", "alice-password", false).unwrap();
    let co = admin("officer.env");
    co.set_key_access("granted", &[("user:alice", &["sign", "verify"][..])]).unwrap();
    co.set_key_access("verify-only", &[("user:alice", &["verify"][..])]).unwrap();

    let s = p11().open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::new("alice:alice-password".into()))).unwrap();
    let find = |label: &[u8]| {
        s.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.to_vec()),
        ])
        .unwrap()
    };
    assert_eq!(find(b"granted"), vec![granted]);
    assert_eq!(find(b"verify-only"), vec![verify_only]);
    // Keys outside the access lists are invisible, as if they did not exist.
    assert!(find(b"hidden").is_empty());
    assert_eq!(rv(s.sign(&Mechanism::EcdsaSha256, hidden, b"m")), RvError::KeyHandleInvalid);
    // Granted: works. Visible but not granted for signing: refused.
    s.sign(&Mechanism::EcdsaSha256, granted, b"m").unwrap();
    assert_eq!(
        rv(s.sign(&Mechanism::EcdsaSha256, verify_only, b"m")),
        RvError::KeyFunctionNotPermitted
    );
    // Crypto users create session objects only; token objects are the officers'.
    let data = |token| {
        vec![
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(token),
            Attribute::Private(false),
        ]
    };
    s.create_object(&data(false)).unwrap();
    assert_eq!(rv(s.create_object(&data(true))), RvError::ActionProhibited);
    assert_eq!(rv(s.destroy_object(granted)), RvError::ActionProhibited);
    // Copying needs the right to manage the key: a copy would escape the access list.
    assert_eq!(
        rv(s.copy_object(verify_only, &[Attribute::Token(false)])),
        RvError::ActionProhibited
    );
    drop(s);
    so.delete_user("alice").unwrap();
}

/// Unseals again however the test ends, so the other tests keep their HSM.
struct Unseal<'a>(&'a DevServer);
impl Drop for Unseal<'_> {
    fn drop(&mut self) {
        if self.0.state.is_sealed() {
            let c = {
                let pki = self.0.dir.join("pki");
                let cfg = bulwark_client::ClientConfig::from_files(
                    &format!("https://{}", self.0.addr),
                    &pki.join("ca.pem"),
                    Some(&pki.join("so.pem")),
                    Some(&pki.join("so-key.pem")),
                )
                .expect("client config");
                bulwark_client::Client::connect(&cfg).expect("connect")
            };
            for i in 1..=2 {
                let share = std::fs::read(self.0.dir.join(format!("shares/share-{i}.json")))
                    .expect("share");
                c.unseal(&share).expect("unseal");
            }
        }
    }
}

#[test]
fn remote_sealed_hsm_is_a_device_error() {
    let _one_at_a_time = common::serial();
    let d = daemon();
    let slot = common::fresh_token();
    let s = p11().open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&common::user_pin())).unwrap();
    let data = s.generate_random_vec(16).unwrap();
    assert_eq!(data.len(), 16);

    let _unseal = Unseal(&d.server);
    admin("so.env").seal().unwrap();
    // A logged-in application sees the device fail, and must log in again.
    assert_eq!(rv(s.generate_random_vec(16)), RvError::DeviceError);
    assert_eq!(rv(s.login(UserType::User, Some(&common::user_pin()))), RvError::DeviceError);
    drop(s);
}
