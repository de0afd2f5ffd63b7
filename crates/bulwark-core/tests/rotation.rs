//! Key versions and rotation (docs/lifecycle.md, "Versions and rotation"): a rotation makes a
//! linked new version with the same type and policy and deactivates the old one; labels name
//! the current version; old data still decrypts and old signatures still verify (through the
//! HSM and offline through the public-key history bundle); the minimum decryption version
//! retires old versions; grants carry over exactly; automatic rotation by period on a hand-set
//! clock (EC and RSA), exactly once when two connections see it due at once; audit records.

#![allow(missing_docs, clippy::too_many_lines, clippy::many_single_char_names)]

mod attack_support;

use std::path::Path;
use std::sync::Arc;

use attack_support::*;
use bulwark_core::attr::{AttrType, AttrValue, ObjectClass};
use bulwark_core::crypto::{self, Curve};
use bulwark_core::history::KeyHistory;
use bulwark_core::kernel::{as_caller, Ops, Role};
use bulwark_core::lifecycle::{Clock, KeyState, ManualClock};
use bulwark_core::mechanism::{KeyGenMechanism, Mechanism};
use bulwark_core::names::{generate_labelled, LabelledKey};
use bulwark_core::token::Usage;
use bulwark_core::{Error, Token, UserType};

const T0: u64 = 1_767_225_600;
const DAY: u64 = 86_400;

fn store(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("t.db");
    Token::init_with(&p, "t", &so(), Some(&user()), FAST).unwrap();
    p
}

fn open(p: &Path, clock: &Arc<ManualClock>) -> Token {
    let t = Token::open(p).unwrap();
    t.login(UserType::User, &user()).unwrap();
    t.set_clock(clock.clone());
    t
}

fn labelled(t: &Token, spec: &str, l: &str) -> Vec<u64> {
    let k = LabelledKey {
        spec: bulwark_core::names::key_spec(spec).unwrap(),
        label: l,
        id: None,
        extractable: false,
        sensitive: true,
    };
    generate_labelled(t, &k, 1).unwrap()
}

/// The handle of `class` among the objects `label` names (current version, or version `v`).
fn handle(t: &Token, l: &str, v: Option<u64>, class: ObjectClass) -> u64 {
    let objs = t.resolve_key(l, v).unwrap();
    let hs: Vec<u64> =
        objs.iter().filter(|o| o.attrs.class() == Some(class)).map(|o| o.handle).collect();
    assert_eq!(hs.len(), 1, "{l} v{v:?} {class:?}: {hs:?}");
    hs[0]
}

fn version(t: &Token, h: u64) -> u64 {
    match t.attribute(h, AttrType::BulwarkKeyVersion).unwrap() {
        AttrValue::Ulong(v) => v,
        other => panic!("{other:?}"),
    }
}

fn state(t: &Token, h: u64) -> KeyState {
    t.key_lifecycle(h).unwrap().1
}

fn ecdsa_der(sig: &[u8]) -> Vec<u8> {
    crypto::ecdsa_raw_to_der(Curve::P256, sig).unwrap()
}

#[test]
fn a_rotation_makes_a_linked_version_of_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let clock = ManualClock::new(T0);
    let t = open(&p, &clock);
    // A pair with an allowed-mechanism list, made before any rotation: version 1, no family.
    let (pub1, priv1) = ec_pair(
        &t,
        "signer",
        true,
        &[(AttrType::AllowedMechanisms, AttrValue::MechanismList(vec![0x1044]))],
    )
    .unwrap();
    assert_eq!(version(&t, priv1), 1, "a key never rotated reads version 1");
    assert_eq!(version(&t, pub1), 1);
    let msg = b"signed by version 1";
    let sig1 = t.sign(priv1, &Mechanism::EcdsaSha256, msg).unwrap();

    clock.advance(DAY);
    let (new, v) = t.rotate_key(pub1).unwrap();
    assert_eq!(v, 2);
    assert_eq!(new.len(), 2, "a new pair");
    let priv2 = handle(&t, "signer", None, ObjectClass::PrivateKey);
    let pub2 = handle(&t, "signer", None, ObjectClass::PublicKey);
    assert_eq!(new, vec![priv2, pub2]);
    assert_eq!((version(&t, priv2), version(&t, pub2)), (2, 2));
    assert_eq!(handle(&t, "signer", Some(1), ObjectClass::PrivateKey), priv1);

    // Same label, type, policy and CKA_ID; one family; a different key.
    let a1 = t.object_info(priv1).unwrap().attrs;
    let a2 = t.object_info(priv2).unwrap().attrs;
    for a in [AttrType::Label, AttrType::Id, AttrType::KeyType, AttrType::EcParams] {
        assert_eq!(a1.get(a), a2.get(a), "{a:?}");
    }
    for a in
        [AttrType::Sign, AttrType::Sensitive, AttrType::Extractable, AttrType::AllowedMechanisms]
    {
        assert_eq!(a1.get(a), a2.get(a), "{a:?}");
    }
    let fam = a1.bytes(AttrType::BulwarkKeyFamily).unwrap();
    assert_eq!(fam.len(), 16);
    assert_eq!(a2.bytes(AttrType::BulwarkKeyFamily), Some(fam));
    assert_ne!(a1.get(AttrType::PublicKeyInfo), a2.get(AttrType::PublicKeyInfo));
    assert_eq!(a2.bool(AttrType::Local), Some(true));

    // The old version is deactivated: it verifies, never signs again.
    assert_eq!(state(&t, priv1), KeyState::Deactivated);
    assert_eq!(state(&t, priv2), KeyState::Active);
    assert_eq!(t.key_lifecycle(priv1).unwrap().0.deactivation, Some(T0 + DAY));
    let r = t.sign(priv1, &Mechanism::EcdsaSha256, msg);
    assert!(matches!(r, Err(Error::KeyFunctionNotPermitted(_))), "{r:?}");
    t.verify(pub1, &Mechanism::EcdsaSha256, msg, &sig1).unwrap();
    let sig2 = t.sign(priv2, &Mechanism::EcdsaSha256, b"v2").unwrap();
    t.verify(pub2, &Mechanism::EcdsaSha256, b"v2", &sig2).unwrap();
    assert!(t.verify(pub2, &Mechanism::EcdsaSha256, msg, &sig1).is_err());
    // The allowed-mechanism list came along.
    let r = t.sign(priv2, &Mechanism::EcdsaSha384, msg);
    assert!(matches!(r, Err(Error::MechanismInvalid(_))), "{r:?}");

    // PKCS#11 sees every version: C_FindObjects by label returns all four objects.
    let all = t.find(&[label("signer")]).unwrap();
    assert_eq!(all.len(), 4);
    // The version attributes are read-only.
    let r = t.set_attributes(priv2, &[ulong(AttrType::BulwarkKeyVersion, 9)]);
    assert!(
        matches!(r, Err(Error::AttributeReadOnly(_) | Error::AttributeTypeInvalid(_))),
        "{r:?}"
    );
    let r = aes(&t, "forged", true, &[ulong(AttrType::BulwarkKeyVersion, 5)]);
    assert!(
        matches!(r, Err(Error::AttributeReadOnly(_) | Error::AttributeTypeInvalid(_))),
        "{r:?}"
    );

    // A third version; the listing shows all three, the newest current.
    t.rotate_key(priv1).unwrap();
    let vs = t.key_versions("signer").unwrap();
    assert_eq!(vs.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(vs.iter().map(|v| v.current).collect::<Vec<_>>(), [false, false, true]);
    assert_eq!(vs[1].state, KeyState::Deactivated);
    assert!(matches!(t.resolve_key("signer", Some(7)), Err(Error::NotFound(_))));

    // Versions survive reopening the store.
    drop(t);
    let t = open(&p, &clock);
    assert_eq!(t.key_versions("signer").unwrap().len(), 3);
    assert_eq!(version(&t, handle(&t, "signer", None, ObjectClass::PrivateKey)), 3);
}

#[test]
fn old_ciphertexts_decrypt_and_the_minimum_version_retires_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let clock = ManualClock::new(T0);
    let t = open(&p, &clock);
    let k1 = labelled(&t, "aes-256", "data")[0];
    let ct1 = t.encrypt(k1, &gcm(), b"old secret").unwrap();
    let (k2, v) = t.rotate_key(k1).unwrap();
    assert_eq!(v, 2);
    let k2 = k2[0];
    assert_eq!(handle(&t, "data", None, ObjectClass::SecretKey), k2, "the label names v2");
    // New data uses the new version; the old version still decrypts, never encrypts.
    let ct2 = t.encrypt(k2, &gcm(), b"new secret").unwrap();
    assert!(matches!(t.encrypt(k1, &gcm(), b"x"), Err(Error::KeyFunctionNotPermitted(_))));
    assert_eq!(t.decrypt(k1, &gcm(), &ct1).unwrap().expose_secret(), b"old secret");
    assert_eq!(t.decrypt(k2, &gcm(), &ct2).unwrap().expose_secret(), b"new secret");
    assert!(t.decrypt(k2, &gcm(), &ct1).is_err(), "a different key");

    // Out of range and downward changes are refused and change nothing.
    assert!(matches!(t.set_min_decrypt_version(k2, 0), Err(Error::ArgumentsBad(_))));
    assert!(matches!(t.set_min_decrypt_version(k2, 3), Err(Error::ArgumentsBad(_))));
    t.decrypt(k1, &gcm(), &ct1).unwrap();
    t.set_min_decrypt_version(k2, 2).unwrap();
    let r = t.decrypt(k1, &gcm(), &ct1);
    match r {
        Err(Error::KeyFunctionNotPermitted(why)) => assert!(why.contains("minimum decryption")),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.decrypt(k2, &gcm(), &ct2).unwrap().expose_secret(), b"new secret");
    assert!(matches!(t.set_min_decrypt_version(k2, 1), Err(Error::ActionProhibited(_))));
    // A copy of a retired version stays retired.
    if let Ok(c) = t.copy_object(k1, &[b(AttrType::Token, false)], S) {
        assert!(t.decrypt(c, &gcm(), &ct1).is_err());
    }
    // The minimum passes to later versions.
    let (k3, _) = t.rotate_key(k2).unwrap();
    let a = t.object_info(k3[0]).unwrap().attrs;
    assert_eq!(a.ulong(AttrType::BulwarkMinDecryptVersion), Some(2));

    drop(t);
    let so_t = Token::open(&p).unwrap();
    so_t.login(UserType::So, &so()).unwrap();
    let lines = so_t.audit_export(0).unwrap().join("\n");
    assert!(lines.contains("\"key-rotate\""), "{lines}");
    assert!(lines.contains("-> v2"), "{lines}");
    assert!(lines.contains("\"key-min-decrypt-version\""), "{lines}");
}

#[test]
fn grants_carry_over_exactly_and_only_managers_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let sp = dir.path().join("q.db");
    let policy = bulwark_core::token::SecurityPolicy::default();
    let t = open_unsealed(&sp, &quorum_store(&sp, &policy));
    let so = admin(&t);
    as_caller(caller(&so, 0), || {
        t.create_user("carol", Role::CryptoUser, b"carol-password", None).unwrap();
        t.create_user("dave", Role::CryptoUser, b"dave-password", None).unwrap();
    });
    let login = |n: &'static str, pw: &'static [u8]| {
        t.authenticate(&bulwark_core::token::Credentials {
            name: n,
            password: pw,
            totp: None,
            cert_sha256: None,
        })
        .unwrap()
    };
    let carol = login("carol", b"carol-password");
    let dave = login("dave", b"dave-password");
    let officer = keeper(&t);
    let (pub1, priv1) = as_caller(caller(&officer, 1), || {
        let (pu, pr) = ec_pair(&t, "shared", true, &[]).unwrap();
        t.set_grant(pr, &to("carol"), Some(Ops::SIGN)).unwrap();
        t.set_grant(pu, &to("carol"), Some(Ops::VERIFY)).unwrap();
        t.set_grant(pu, &to("dave"), Some(Ops::VERIFY)).unwrap();
        (pu, pr)
    });
    // Neither a crypto user nor the security officer rotates a key.
    let r = as_caller(caller(&carol, 2), || t.rotate_key(priv1));
    assert!(matches!(r, Err(Error::ActionProhibited(_))), "{r:?}");
    let r = as_caller(caller(&so, 0), || t.rotate_key(priv1));
    assert!(r.is_err(), "{r:?}");
    // Through the public half either (the officer may manage public objects, not the private
    // half a rotation also changes).
    let r = as_caller(caller(&so, 0), || t.rotate_key(pub1));
    assert!(r.is_err(), "{r:?}");
    let r = as_caller(caller(&so, 0), || t.set_rotation_period(pub1, Some(86_400)));
    assert!(r.is_err(), "{r:?}");
    assert_eq!(as_caller(caller(&officer, 1), || t.key_versions("shared").unwrap()).len(), 1);

    let (new, _) = as_caller(caller(&officer, 1), || t.rotate_key(priv1)).unwrap();
    let (priv2, pub2) = (new[0], new[1]);
    as_caller(caller(&officer, 1), || {
        let mut g1 = t.grants(priv1).unwrap();
        let mut g2 = t.grants(priv2).unwrap();
        g1.sort_by_key(|(g, _)| g.to_wire());
        g2.sort_by_key(|(g, _)| g.to_wire());
        assert_eq!(g1, g2);
        let mut g1 = t.grants(pub1).unwrap();
        let mut g2 = t.grants(pub2).unwrap();
        g1.sort_by_key(|(g, _)| g.to_wire());
        g2.sort_by_key(|(g, _)| g.to_wire());
        assert_eq!(g1, g2);
    });
    // Carol signs with the new version (granted); dave may only verify it.
    let sig = as_caller(caller(&carol, 2), || {
        let h = handle(&t, "shared", None, ObjectClass::PrivateKey);
        assert_eq!(h, priv2);
        t.sign(h, &Mechanism::EcdsaSha256, b"m").unwrap()
    });
    as_caller(caller(&dave, 3), || {
        t.verify(pub2, &Mechanism::EcdsaSha256, b"m", &sig).unwrap();
        let r = t.sign(priv2, &Mechanism::EcdsaSha256, b"m");
        assert!(r.is_err(), "not widened: {r:?}");
    });
}

/// Rotates `l` on the clock: 89 days nothing, then due; the gate (a use of the old version)
/// or the label resolution makes exactly one new version.
fn rotates_on_period(t: &Token, clock: &ManualClock, l: &str, spec: &str, mech: &Mechanism) {
    let hs = labelled(t, spec, l);
    let priv1 = hs[0];
    let next = t.set_rotation_period(priv1, Some(90 * DAY)).unwrap();
    let now = clock.now();
    assert_eq!(next, Some(now + 90 * DAY));
    let vs = t.key_versions(l).unwrap();
    assert_eq!(vs[0].next_rotation, Some(now + 90 * DAY));
    clock.advance(89 * DAY);
    t.sign(priv1, mech, b"still v1").unwrap();
    assert_eq!(t.key_versions(l).unwrap().len(), 1);
    clock.advance(DAY);
    // Due: the next use of the current version rotates first, then sees itself deactivated.
    let r = t.sign(priv1, mech, b"due");
    assert!(matches!(r, Err(Error::KeyFunctionNotPermitted(_))), "{r:?}");
    let vs = t.key_versions(l).unwrap();
    assert_eq!(vs.len(), 2, "{vs:?}");
    assert!(vs[1].current && vs[1].state == KeyState::Active);
    assert_eq!(vs[1].rotation_period, Some(90 * DAY), "the period carries over");
    assert_eq!(vs[1].next_rotation, Some(clock.now() + 90 * DAY));
    let priv2 = handle(t, l, None, ObjectClass::PrivateKey);
    let sig = t.sign(priv2, mech, b"v2").unwrap();
    let pub2 = handle(t, l, None, ObjectClass::PublicKey);
    t.verify(pub2, mech, b"v2", &sig).unwrap();
    // Next period: the label resolution rotates (nobody used the key).
    clock.advance(90 * DAY);
    assert_eq!(version(t, handle(t, l, None, ObjectClass::PrivateKey)), 3);
    assert_eq!(t.key_versions(l).unwrap().len(), 3);
    // Off: no more automatic rotation.
    t.set_rotation_period(priv2, None).unwrap();
    clock.advance(400 * DAY);
    assert_eq!(version(t, handle(t, l, None, ObjectClass::PrivateKey)), 3);
    assert!(matches!(t.set_rotation_period(priv2, Some(60)), Err(Error::ArgumentsBad(_))));
}

#[test]
fn ec_and_rsa_keys_rotate_automatically() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let clock = ManualClock::new(T0);
    let t = open(&p, &clock);
    rotates_on_period(&t, &clock, "ec-auto", "ec-p256", &Mechanism::EcdsaSha256);
    rotates_on_period(&t, &clock, "rsa-auto", "rsa-2048", &Mechanism::Sha256RsaPkcs);
    drop(t);
    let so_t = Token::open(&p).unwrap();
    so_t.login(UserType::So, &so()).unwrap();
    let lines = so_t.audit_export(0).unwrap().join("\n");
    assert!(lines.contains("automatic -> v2"), "{lines}");
    assert!(lines.contains("\"key-rotation-period\""), "{lines}");
}

/// An automatic rotation triggered by a crypto user who may see only the private half still
/// rotates the whole pair (it is the system's rotation, not the user's).
#[test]
fn an_automatic_rotation_is_the_whole_family_whoever_triggers_it() {
    let dir = tempfile::tempdir().unwrap();
    let sp = dir.path().join("q.db");
    let policy = bulwark_core::token::SecurityPolicy::default();
    let t = open_unsealed(&sp, &quorum_store(&sp, &policy));
    let clock = ManualClock::new(T0);
    t.set_clock(clock.clone());
    let so = admin(&t);
    as_caller(caller(&so, 0), || {
        t.create_user("erin", Role::CryptoUser, b"erin-password", None).unwrap();
    });
    let erin = t
        .authenticate(&bulwark_core::token::Credentials {
            name: "erin",
            password: b"erin-password",
            totp: None,
            cert_sha256: None,
        })
        .unwrap();
    let officer = keeper(&t);
    let (pub1, priv1) = as_caller(caller(&officer, 1), || {
        let (pu, pr) = ec_pair(&t, "auto-pair", true, &[]).unwrap();
        t.set_grant(pr, &to("erin"), Some(Ops::SIGN)).unwrap();
        t.set_rotation_period(pr, Some(DAY)).unwrap();
        (pu, pr)
    });
    clock.advance(2 * DAY);
    as_caller(caller(&erin, 2), || {
        let h = handle(&t, "auto-pair", None, ObjectClass::PrivateKey);
        assert_ne!(h, priv1, "rotated at the resolution");
        t.sign(h, &Mechanism::EcdsaSha256, b"m").unwrap();
        assert!(t.rotate_key(h).is_err(), "still not erin's to rotate by hand");
    });
    as_caller(caller(&officer, 1), || {
        let vs = t.key_versions("auto-pair").unwrap();
        assert_eq!(vs.len(), 2);
        assert_eq!(vs[1].handles.len(), 2, "both halves: {vs:?}");
        assert_eq!(t.key_lifecycle(pub1).unwrap().1, KeyState::Deactivated);
    });
}

#[test]
fn a_due_rotation_seen_by_two_connections_makes_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let clock = ManualClock::new(T0);
    let k = {
        let t = open(&p, &clock);
        let k = labelled(&t, "aes-256", "busy")[0];
        t.set_rotation_period(k, Some(7 * DAY)).unwrap();
        k
    };
    clock.advance(8 * DAY);
    let tokens: Vec<Token> = (0..4).map(|_| open(&p, &clock)).collect();
    let barrier = Arc::new(std::sync::Barrier::new(8));
    std::thread::scope(|s| {
        for (i, t) in tokens.iter().enumerate() {
            for j in 0..2 {
                let barrier = barrier.clone();
                s.spawn(move || {
                    barrier.wait();
                    if (i + j) % 2 == 0 {
                        let _ = t.resolve_key("busy", None).unwrap();
                    } else {
                        let _ = t.encrypt(k, &gcm(), b"x");
                    }
                });
            }
        }
    });
    let t = open(&p, &clock);
    let vs = t.key_versions("busy").unwrap();
    assert_eq!(vs.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2], "{vs:?}");
    assert_eq!(vs.iter().filter(|v| v.state == KeyState::Active).count(), 1);
    let _ = t.rotate_due_keys().unwrap();
    assert_eq!(t.key_versions("busy").unwrap().len(), 2, "not due again");
}

#[test]
fn the_history_bundle_verifies_every_version_offline() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let clock = ManualClock::new(T0);
    let t = open(&p, &clock);
    labelled(&t, "ec-p256", "ca");
    let priv1 = handle(&t, "ca", None, ObjectClass::PrivateKey);
    let sig1 = ecdsa_der(&t.sign(priv1, &Mechanism::EcdsaSha256, b"cert 1").unwrap());
    clock.advance(10 * DAY);
    t.rotate_key(priv1).unwrap();
    clock.advance(DAY);
    let priv2 = handle(&t, "ca", None, ObjectClass::PrivateKey);
    let sig2 = ecdsa_der(&t.sign(priv2, &Mechanism::EcdsaSha256, b"cert 2").unwrap());

    let bundle = t.public_key_history("ca").unwrap();
    let h = KeyHistory::from_json(&bundle.to_json()).unwrap();
    assert_eq!(h.versions.len(), 2);
    assert_eq!(h.key_type, "ec-p256");
    assert_eq!(h.versions[0].valid_until, Some(T0 + 10 * DAY));
    assert_eq!(h.versions[1].valid_from, Some(T0 + 10 * DAY));
    assert_eq!(h.versions[1].valid_until, None);
    assert_eq!(h.versions[0].state, "deactivated");
    // Any version, by trying each; the named one; the one whose window covers a time.
    assert_eq!(h.verify(None, None, None, b"cert 1", &sig1).unwrap(), 1);
    assert_eq!(h.verify(None, None, None, b"cert 2", &sig2).unwrap(), 2);
    assert_eq!(h.verify(Some(1), None, None, b"cert 1", &sig1).unwrap(), 1);
    assert_eq!(h.verify(None, Some(T0 + DAY), None, b"cert 1", &sig1).unwrap(), 1);
    assert!(matches!(
        h.verify(Some(2), None, None, b"cert 1", &sig1),
        Err(Error::SignatureInvalid)
    ));
    assert!(matches!(
        h.verify(None, Some(T0 + 20 * DAY), None, b"cert 1", &sig1),
        Err(Error::SignatureInvalid)
    ));
    assert!(matches!(h.verify(Some(5), None, None, b"cert 1", &sig1), Err(Error::NotFound(_))));
    let mut bad = sig1.clone();
    let n = bad.len() - 2;
    bad[n] ^= 1;
    assert!(h.verify(None, None, None, b"cert 1", &bad).is_err());
    assert!(h.verify(None, None, None, b"cert X", &sig1).is_err());

    // And through the HSM: each version's public key, by explicit version.
    let raw1 = crypto::ecdsa_der_to_raw(Curve::P256, &sig1).unwrap();
    let pub1 = handle(&t, "ca", Some(1), ObjectClass::PublicKey);
    t.verify(pub1, &Mechanism::EcdsaSha256, b"cert 1", &raw1).unwrap();
    // A secret key has no public-key history.
    labelled(&t, "aes-256", "sym");
    assert!(t.public_key_history("sym").is_err());
    // Usage checks stay the gate's: the prepared (PKCS#11) path sees the rotation too.
    let k = {
        use bulwark_core::hsm::Hsm;
        t.prepare(priv2, Usage::Sign, &Mechanism::EcdsaSha256).unwrap()
    };
    k.sign(&Mechanism::EcdsaSha256, b"x").unwrap();
    t.rotate_key(priv2).unwrap();
    assert!(k.sign(&Mechanism::EcdsaSha256, b"x").is_err(), "v2 is deactivated now");
}

#[test]
fn rotation_refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let clock = ManualClock::new(T0);
    let t = open(&p, &clock);
    // A session key has no versions.
    let s = aes(&t, "sess", false, &[]).unwrap();
    assert!(matches!(t.rotate_key(s), Err(Error::ActionProhibited(_))));
    // A public key alone cannot be rotated (its private half is not in the HSM).
    let (pu, pr) = ec_pair(&t, "half", true, &[]).unwrap();
    let spki = t.public_key(pu).unwrap();
    t.destroy_object(pr).unwrap();
    assert!(matches!(t.rotate_key(pu), Err(Error::ActionProhibited(_))));
    assert_eq!(t.find(&[label("half")]).unwrap(), vec![pu]);
    assert_eq!(t.public_key(pu).unwrap(), spki);
    // A pair whose halves were given different CKA_IDs is still rotated as one pair.
    let (mpub, mpriv) = ec_pair(&t, "mixed", true, &[bytes(AttrType::Id, b"priv-id")]).unwrap();
    let (new, _) = t.rotate_key(mpub).unwrap();
    assert_eq!(new.len(), 2, "both halves");
    assert_eq!(t.key_lifecycle(mpriv).unwrap().1, KeyState::Deactivated);
    let s = t.sign(new[0], &Mechanism::EcdsaSha256, b"m").unwrap();
    t.verify(new[1], &Mechanism::EcdsaSha256, b"m", &s).unwrap();
    // Two unrelated keys under one label (no family, same CKA_ID) are ambiguous: refused.
    aes(&t, "twins", true, &[]).unwrap();
    let twin = aes(&t, "twins", true, &[]).unwrap();
    assert!(matches!(t.rotate_key(twin), Err(Error::Ambiguous(_))));
    assert_eq!(t.find(&[label("twins")]).unwrap().len(), 2, "nothing made");
    // Data objects are not keys.
    let d = data_object(&t, "doc", true).unwrap();
    assert!(t.rotate_key(d).is_err());
    let _ = KeyGenMechanism::AesKeyGen;
}
