//! One set of limits on both gRPC APIs, and caller-chosen text that cannot forge a log line.
//!
//! The PKCS#11-shaped API used to accept a 3 MB label that the label-based API refused; both now
//! apply `bulwark_core::limits`. A user name with a newline, sent to the daemon's login, used to
//! start a forged line in the daemon's log; every event is now exactly one line.

mod common;

use std::process::Stdio;

use bulwark_client::remote_hsm::RemoteHsm;
use bulwark_client::{ClientConfig, Code};
use bulwark_core::attr::{AttrType, AttrValue, ObjectClass};
use bulwark_core::hsm::Hsm;
use bulwark_core::limits::{MAX_LABEL, MAX_TEMPLATE_ATTRS};
use bulwark_core::secret::Pin;
use bulwark_core::{Error, UserType};
use common::{code, connect_as, env_value, login_as, spawn_dev_with};

fn data_object(label: Vec<u8>) -> Vec<(AttrType, AttrValue)> {
    vec![
        (AttrType::Class, AttrValue::Ulong(ObjectClass::Data as u64)),
        (AttrType::Token, AttrValue::Bool(false)),
        (AttrType::Private, AttrValue::Bool(false)),
        (AttrType::Label, AttrValue::Bytes(label)),
    ]
}

#[test]
fn both_apis_refuse_oversized_labels_and_templates() {
    let d = tempfile::tempdir().unwrap();
    let (_daemon, dir, _) = spawn_dev_with(d.path(), &[], &[], Stdio::null());
    // Label API.
    let officer = login_as(&dir, "officer.env");
    let (c, _) = code(officer.generate_key("aes-256", &"l".repeat(MAX_LABEL + 1), false));
    assert_eq!(c, Code::InvalidArgument);
    assert!(officer.generate_key("aes-256", &"l".repeat(MAX_LABEL), false).is_ok());
    // PKCS#11 API.
    let cfg = ClientConfig::from_files(
        &env_value(&dir, "officer.env", "BULWARK_ENDPOINT"),
        &dir.join("pki/ca.pem"),
        Some(&dir.join("pki/crypto.pem")),
        Some(&dir.join("pki/crypto-key.pem")),
    )
    .unwrap();
    let hsm = RemoteHsm::new(&cfg).unwrap();
    let pin = format!("crypto:{}", env_value(&dir, "officer.env", "BULWARK_PASSWORD"));
    hsm.login(UserType::User, &Pin::new(pin.into())).unwrap();
    let r = hsm.create_object(&data_object(vec![b'l'; MAX_LABEL + 1]), 1);
    assert!(matches!(r, Err(Error::AttributeValueInvalid(AttrType::Label))), "{r:?}");
    // 3 MB: over the message limit as well; refused, and the daemon keeps serving.
    let r = hsm.create_object(&data_object(vec![b'l'; 3 << 20]), 1);
    assert!(r.is_err(), "{r:?}");
    let mut t = data_object(b"ok".to_vec());
    for _ in 0..MAX_TEMPLATE_ATTRS {
        t.push((AttrType::Application, AttrValue::Bytes(b"a".to_vec())));
    }
    let r = hsm.create_object(&t, 1);
    assert!(matches!(r, Err(Error::TemplateInconsistent(_))), "{r:?}");
    assert!(hsm.create_object(&data_object(vec![b'l'; MAX_LABEL]), 1).is_ok());
    // Same limit as the label API's: nothing longer exists on either side.
    let long = bulwark_core::template::parse_raw(&[(AttrType::Label.to_raw(), &[b'l'; 300])]);
    assert!(matches!(long, Err(Error::AttributeValueInvalid(AttrType::Label))));
}

#[test]
fn a_newline_in_a_user_name_does_not_forge_a_log_line() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("bulwarkd.log");
    let (_daemon, dir, _) = spawn_dev_with(
        d.path(),
        &[],
        &[("RUST_LOG", "info")],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let forged = "2026-01-01T00:00:00.000000Z  INFO bulwarkd: login ok user=so";
    let mut c = connect_as(&dir, "dev.env");
    for name in [format!("user\n{forged}"), format!("user\r{forged}\u{1b}[2K")] {
        let (code, _) = code(c.login(&name, "wrong password"));
        assert!(matches!(code, Code::Unauthenticated | Code::InvalidArgument), "{code:?}");
    }
    // Let the log reach the file.
    let user = login_as(&dir, "dev.env");
    assert!(user.random(4).is_ok());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text}");
    assert!(text.lines().all(|l| !l.starts_with("2026-01-01T00:00:00")), "{text}");
    // The attempt is logged on its own line, without the name it gave (not a valid user name,
    // so never echoed).
    assert!(text.contains("login failed user=(invalid name)"), "{text}");
}
