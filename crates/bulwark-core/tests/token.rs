//! Integration tests of the embedded token: key hierarchy, integrity of every stored field,
//! anti-rollback, login and lockout, visibility, usage policy, multi-connection coherence.

use std::path::{Path, PathBuf};

use bulwark_core::attr::{AttrType, AttrValue, ObjectClass};
use bulwark_core::crypto::Curve;
use bulwark_core::hierarchy::KdfParams;
use bulwark_core::hsm::Hsm;
use bulwark_core::mechanism::{KeyGenMechanism, Mechanism};
use bulwark_core::secret::Pin;
use bulwark_core::token::{Usage, MAX_PIN_FAILURES};
use bulwark_core::{Error, Token, UserType};

const FAST: KdfParams = KdfParams { m_cost: 256, t_cost: 1, p_cost: 1 };
const S: u64 = 1; // session id

fn so() -> Pin {
    Pin::new(b"so-pin-1234".to_vec())
}
fn user() -> Pin {
    Pin::new(b"user-pin-1234".to_vec())
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    Token::init_with(&path, "test", &so(), Some(&user()), FAST).unwrap();
    Fixture { _dir: dir, path }
}

fn open_user(p: &Path) -> Token {
    let t = Token::open(p).unwrap();
    t.login(UserType::User, &user()).unwrap();
    t
}

fn b(t: AttrType, v: bool) -> (AttrType, AttrValue) {
    (t, AttrValue::Bool(v))
}
fn label(l: &str) -> (AttrType, AttrValue) {
    (AttrType::Label, AttrValue::Bytes(l.as_bytes().to_vec()))
}
fn ulong(t: AttrType, v: u64) -> (AttrType, AttrValue) {
    (t, AttrValue::Ulong(v))
}

fn aes(t: &Token, l: &str, extra: &[(AttrType, AttrValue)]) -> u64 {
    let mut tmpl = vec![b(AttrType::Token, true), label(l), ulong(AttrType::ValueLen, 32)];
    tmpl.extend_from_slice(extra);
    t.generate_key(KeyGenMechanism::AesKeyGen, &tmpl, S).unwrap()
}

fn gcm() -> Mechanism {
    Mechanism::AesGcm { iv: vec![1; 12], aad: vec![], tag_bits: 128 }
}

fn sql(p: &Path, q: &str) -> usize {
    let c = rusqlite::Connection::open(p).unwrap();
    c.execute(q, []).unwrap()
}

fn assert_integrity<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    match r {
        Err(e @ (Error::Integrity(_) | Error::Rollback { .. })) => {
            assert!(e.to_string().contains("integrity"), "{what}: {e}");
        }
        other => panic!("{what}: expected an integrity error, got {other:?}"),
    }
}

/// Every column of an object row, edited alone, makes the next use fail with "integrity".
#[test]
fn editing_any_column_of_an_object_is_detected() {
    let edits = [
        ("uid", "UPDATE objects SET uid = randomblob(16) WHERE label = CAST('k' AS BLOB)"),
        ("class", "UPDATE objects SET class = 3 WHERE label = CAST('k' AS BLOB)"),
        ("label", "UPDATE objects SET label = CAST('j' AS BLOB) WHERE label = CAST('k' AS BLOB)"),
        ("ckaid", "UPDATE objects SET ckaid = x'01' WHERE label = CAST('k' AS BLOB)"),
        ("private", "UPDATE objects SET private = 0 WHERE label = CAST('k' AS BLOB)"),
        ("attrs", "UPDATE objects SET attrs = CAST(replace(CAST(attrs AS TEXT), 'k', 'j') AS BLOB) WHERE label = CAST('k' AS BLOB)"),
        ("attrs-bit", "UPDATE objects SET attrs = attrs || x'00' WHERE label = CAST('k' AS BLOB)"),
        ("secret", "UPDATE objects SET secret = substr(secret, 1, 20) || x'00' || substr(secret, 22) WHERE label = CAST('k' AS BLOB)"),
        ("secret-null", "UPDATE objects SET secret = NULL WHERE label = CAST('k' AS BLOB)"),
        ("mac", "UPDATE objects SET mac = randomblob(32) WHERE label = CAST('k' AS BLOB)"),
        ("handle", "UPDATE objects SET handle = handle + 100 WHERE label = CAST('k' AS BLOB)"),
    ];
    for (col, q) in edits {
        let f = fixture();
        let h = {
            let t = open_user(&f.path);
            let h = aes(&t, "k", &[]);
            t.encrypt(h, &gcm(), b"ok").unwrap();
            h
        };
        assert_eq!(sql(&f.path, q), 1, "{col}: edit applied");
        let t = Token::open(&f.path).unwrap();
        // The whole store is verified when it is unlocked: the edit is found at login.
        assert_integrity(t.login(UserType::User, &user()), col);
        // Direct use by the old handle fails too (or the object is gone) — never succeeds.
        let r = t.encrypt(h, &gcm(), b"x");
        assert!(r.is_err(), "{col}: tampered key must not be usable");
    }
}

/// Swapping one column's values between two objects is detected for every column.
#[test]
fn swapping_values_between_rows_is_detected() {
    for col in ["uid", "class", "label", "ckaid", "private", "attrs", "secret", "mac"] {
        let f = fixture();
        {
            // Two objects that differ in every column: a private secret key and a public
            // data object.
            let t = open_user(&f.path);
            aes(&t, "a", &[(AttrType::Id, AttrValue::Bytes(vec![1]))]);
            t.create_object(
                &[
                    ulong(AttrType::Class, ObjectClass::Data.to_raw()),
                    b(AttrType::Token, true),
                    b(AttrType::Private, false),
                    label("b"),
                    (AttrType::Value, AttrValue::Bytes(b"public data".to_vec())),
                ],
                S,
            )
            .unwrap();
        }
        let c = rusqlite::Connection::open(&f.path).unwrap();
        let (ha, hb): (i64, i64) = c
            .query_row("SELECT min(handle), max(handle) FROM objects", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        // Via a temporary row value, so UNIQUE constraints hold at every step.
        c.execute_batch(&format!(
            "CREATE TEMP TABLE t AS SELECT handle, {col} AS v FROM objects;
             UPDATE objects SET {col} = (SELECT v FROM t WHERE handle = {hb}) WHERE handle = {ha} AND '{col}' <> 'uid';
             UPDATE objects SET {col} = (SELECT v FROM t WHERE handle = {ha}) WHERE handle = {hb} AND '{col}' <> 'uid';"
        ))
        .unwrap();
        if col == "uid" {
            c.execute_batch(&format!(
                "UPDATE objects SET uid = x'00' WHERE handle = {ha};
                 UPDATE objects SET uid = (SELECT v FROM t WHERE handle = {ha}) WHERE handle = {hb};
                 UPDATE objects SET uid = (SELECT v FROM t WHERE handle = {hb}) WHERE handle = {ha};"
            ))
            .unwrap();
        }
        let changed: i64 = c
            .query_row(&format!("SELECT count(*) FROM objects o JOIN t ON o.handle = t.handle WHERE o.{col} IS NOT t.v"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(changed, 2, "{col}: swap applied");
        drop(c);
        let t = Token::open(&f.path).unwrap();
        assert_integrity(t.login(UserType::User, &user()), col);
    }
}

#[test]
fn rollback_to_an_older_store_copy_is_detected() {
    let f = fixture();
    let snap = f.path.with_extension("snap");
    {
        let t = open_user(&f.path);
        aes(&t, "one", &[]);
    }
    let c = rusqlite::Connection::open(&f.path).unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    drop(c);
    std::fs::copy(&f.path, &snap).unwrap();
    {
        let t = open_user(&f.path);
        aes(&t, "two", &[]);
    }
    let c = rusqlite::Connection::open(&f.path).unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    drop(c);
    std::fs::copy(&snap, &f.path).unwrap();
    let t = Token::open(&f.path).unwrap();
    let r = t.login(UserType::User, &user());
    assert!(matches!(r, Err(Error::Rollback { .. })), "{r:?}");
    assert!(r.unwrap_err().to_string().contains("integrity"));
    // Editing the generation counter itself is caught by its MAC.
    let f2 = fixture();
    let gen_bump = "UPDATE meta SET v = x'00000000000000ff' WHERE k = 'generation'";
    assert_eq!(sql(&f2.path, gen_bump), 1);
    let t = Token::open(&f2.path).unwrap();
    assert_integrity(t.login(UserType::User, &user()), "generation");
}

/// The store's anti-rollback mark file in this host's state directory.
fn mark_file(store: &Path) -> PathBuf {
    let c = rusqlite::Connection::open(store).unwrap();
    let uid: Vec<u8> =
        c.query_row("SELECT v FROM meta WHERE k = 'store_uid'", [], |r| r.get(0)).unwrap();
    bulwark_core::rollback::state_dir().unwrap().join(format!("{}.generation", hex::encode(uid)))
}

/// A store with two keys written and its sealed mark: (fixture, mark path, mark text, value, tag).
fn marked_store() -> (Fixture, PathBuf, String, u64, String) {
    let f = fixture();
    {
        let t = open_user(&f.path);
        aes(&t, "one", &[]);
        aes(&t, "two", &[]);
    }
    let mark = mark_file(&f.path);
    let sealed = std::fs::read_to_string(&mark).unwrap();
    let (digits, tag) = sealed.trim().split_once(' ').expect("a sealed mark: digits, tag");
    let gen: u64 = digits.parse().unwrap();
    assert!(gen > 1 && tag.len() == 64, "{sealed:?}");
    let tag = tag.to_owned();
    (f, mark, sealed, gen, tag)
}

#[test]
fn a_mark_lowered_or_forged_by_hand_is_tamper_evidence() {
    let (_, _, _, gen, tag) = marked_store();
    // Every store made the same way reaches the same generation.
    let mut flipped = tag.into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    let forgeries = [
        format!("{:020}\n", gen - 1),                    // lowered, unsealed
        format!("{gen:020}\n"),                          // the right value, unsealed
        format!("{:020} {flipped}\n", gen - 1),          // lowered with a made-up tag
        format!("{gen:020} {flipped}\n"),                // a flipped tag
        format!("{:020} {}\n", gen + 1, "0".repeat(64)), // raised with a made-up tag
    ];
    for forged in &forgeries {
        // Each on a store of its own (the first refusal raises a lasting tamper alarm).
        let (f, mark, _, _, _) = marked_store();
        std::fs::write(&mark, forged).unwrap();
        let t = Token::open(&f.path).unwrap();
        assert_integrity(t.login(UserType::User, &user()), forged);
    }
    // The other store's real tag on this store's value is refused too.
    let (f1, mark1, _, gen1, _) = marked_store();
    let (_f2, _, _, gen2, tag2) = marked_store();
    assert_eq!(gen1, gen2, "same history, same generation");
    std::fs::write(&mark1, format!("{gen1:020} {tag2}\n")).unwrap();
    let t = Token::open(&f1.path).unwrap();
    assert_integrity(t.login(UserType::User, &user()), "another store's tag");
}

#[test]
fn a_missing_mark_is_written_again_sealed() {
    // No mark at all (a new user or host): the store's own state is the baseline, and the
    // verification writes the sealed mark again.
    let (f, mark, sealed, _, _) = marked_store();
    std::fs::remove_file(&mark).unwrap();
    open_user(&f.path);
    assert_eq!(std::fs::read_to_string(&mark).unwrap(), sealed);
}

#[test]
fn login_lockout_and_so_reset() {
    let f = fixture();
    let t = Token::open(&f.path).unwrap();
    for i in 0..MAX_PIN_FAILURES {
        let r = t.login(UserType::User, &Pin::new(b"wrong-pin".to_vec()));
        assert!(matches!(r, Err(Error::PinIncorrect)), "attempt {i}: {r:?}");
    }
    assert!(matches!(t.login(UserType::User, &user()), Err(Error::PinLocked)));
    // Refused attempts are counted too (an attempt is counted before the PIN is looked at).
    assert_eq!(t.status().unwrap().user_pin_failures, MAX_PIN_FAILURES + 1);
    // Another process sees the lock too.
    let t2 = Token::open(&f.path).unwrap();
    assert!(matches!(t2.login(UserType::User, &user()), Err(Error::PinLocked)));
    // The SO sets a new user PIN, which unlocks.
    t.login(UserType::So, &so()).unwrap();
    assert!(matches!(t.login(UserType::User, &user()), Err(Error::AnotherUserLoggedIn)));
    t.init_pin(&Pin::new(b"new-user-pin".to_vec())).unwrap();
    t.logout().unwrap();
    t.login(UserType::User, &Pin::new(b"new-user-pin".to_vec())).unwrap();
    assert!(matches!(t.login(UserType::User, &user()), Err(Error::UserAlreadyLoggedIn)));
    // A failure count below the limit is reset by a good login.
    t.logout().unwrap();
    assert!(t.login(UserType::User, &user()).is_err());
    t.login(UserType::User, &Pin::new(b"new-user-pin".to_vec())).unwrap();
    assert_eq!(t.status().unwrap().user_pin_failures, 0);
    // PIN change: old PIN stops working, new one works, in a fresh process too.
    t.set_pin(&Pin::new(b"new-user-pin".to_vec()), &Pin::new(b"third-pin".to_vec())).unwrap();
    let t3 = Token::open(&f.path).unwrap();
    assert!(t3.login(UserType::User, &Pin::new(b"new-user-pin".to_vec())).is_err());
    t3.login(UserType::User, &Pin::new(b"third-pin".to_vec())).unwrap();
    assert!(matches!(
        t3.set_pin(&Pin::new(b"third-pin".to_vec()), &Pin::new(b"x".to_vec())),
        Err(Error::PinLenRange { .. })
    ));
}

#[test]
fn private_objects_hidden_before_login_and_session_objects_die_with_session() {
    let f = fixture();
    let t = open_user(&f.path);
    let h = aes(&t, "secret", &[]);
    let pub_data = t
        .create_object(
            &[
                ulong(AttrType::Class, ObjectClass::Data.to_raw()),
                b(AttrType::Token, true),
                b(AttrType::Private, false),
                label("note"),
                (AttrType::Value, AttrValue::Bytes(b"hello".to_vec())),
            ],
            S,
        )
        .unwrap();
    let sess = t
        .generate_key(KeyGenMechanism::AesKeyGen, &[label("eph"), ulong(AttrType::ValueLen, 16)], 7)
        .unwrap();
    assert_eq!(t.find(&[label("eph")]).unwrap(), vec![sess]);
    t.close_session(7);
    assert!(t.find(&[label("eph")]).unwrap().is_empty());
    assert!(matches!(t.encrypt(sess, &gcm(), b"x"), Err(Error::ObjectHandleInvalid)));
    t.logout().unwrap();
    assert!(matches!(t.object_info(h), Err(Error::ObjectHandleInvalid)));
    assert_eq!(t.list().unwrap().len(), 1);
    assert_eq!(
        t.attribute(pub_data, AttrType::Value).unwrap(),
        AttrValue::Bytes(b"hello".to_vec())
    );
    // A fresh process that never logged in sees only the public object.
    let t2 = Token::open(&f.path).unwrap();
    assert_eq!(t2.list().unwrap().iter().map(|o| o.handle).collect::<Vec<_>>(), vec![pub_data]);
}

#[test]
fn usage_flags_allowed_mechanisms_and_sensitivity() {
    let f = fixture();
    let t = open_user(&f.path);
    let h = aes(&t, "k", &[b(AttrType::Encrypt, true), b(AttrType::Decrypt, false)]);
    let ct = t.encrypt(h, &gcm(), b"data").unwrap();
    assert!(matches!(t.decrypt(h, &gcm(), &ct), Err(Error::KeyFunctionNotPermitted(_))));
    let cbc = [(
        AttrType::AllowedMechanisms,
        AttrValue::MechanismList(vec![Mechanism::AesCbcPad { iv: [0; 16] }.ck_type()]),
    )];
    let h2 = aes(&t, "only-cbc", &cbc);
    assert!(matches!(t.encrypt(h2, &gcm(), b"x"), Err(Error::MechanismInvalid(_))));
    t.encrypt(h2, &Mechanism::AesCbcPad { iv: [0; 16] }, b"x").unwrap();
    assert!(matches!(t.attribute(h, AttrType::Value), Err(Error::AttributeSensitive(_))));
    assert!(matches!(t.export_secret(h), Err(Error::KeyUnextractable(_))));
    // Sensitivity only tightens.
    assert!(matches!(
        t.set_attributes(h, &[b(AttrType::Sensitive, false)]),
        Err(Error::AttributeReadOnly(_))
    ));
    t.set_attributes(h, &[b(AttrType::Decrypt, true), label("renamed")]).unwrap();
    assert_eq!(t.decrypt(h, &gcm(), &ct).unwrap().expose_secret(), b"data");
    assert_eq!(t.find(&[label("renamed")]).unwrap(), vec![h]);
    // Wrong key type for the mechanism.
    assert!(matches!(
        t.sign(h, &Mechanism::EcdsaSha256, b"x"),
        Err(Error::KeyFunctionNotPermitted(_) | Error::KeyTypeInconsistent)
    ));
    // Expired keys are refused.
    let old = aes(&t, "old", &[(AttrType::EndDate, AttrValue::Date(Some(*b"20200101")))]);
    assert!(matches!(t.encrypt(old, &gcm(), b"x"), Err(Error::KeyFunctionNotPermitted(_))));
    // Not destroyable.
    let keep = aes(&t, "keep", &[b(AttrType::Destroyable, false)]);
    assert!(matches!(t.destroy_object(keep), Err(Error::ActionProhibited(_))));
}

#[test]
fn debug_output_of_keys_and_token_never_contains_key_bytes() {
    let f = fixture();
    let t = open_user(&f.path);
    let h = aes(&t, "open", &[b(AttrType::Sensitive, false), b(AttrType::Extractable, true)]);
    let key = t.export_secret(h).unwrap();
    let needle = hex::encode(key.expose_secret());
    let k = t.prepare(h, Usage::Encrypt, &gcm()).unwrap();
    let loaded = &k;
    let info = t.object_info(h).unwrap();
    for s in [
        format!("{k:?}"),
        format!("{loaded:?}"),
        format!("{t:?}"),
        format!("{info:?}"),
        format!("{key:?}"),
    ] {
        assert!(!s.contains(&needle), "key bytes in debug output: {s}");
        let lower = s.to_lowercase();
        assert!(!lower.contains(&needle.to_lowercase()));
    }
    // The byte values in decimal (as a derived Debug of a Vec<u8> would print them) are absent too.
    let dec = format!("{:?}", key.expose_secret());
    assert!(!format!("{loaded:?}{k:?}{key:?}").contains(&dec[1..dec.len() - 1]));
}

#[test]
fn two_connections_see_each_others_changes() {
    let f = fixture();
    let a = open_user(&f.path);
    let b2 = open_user(&f.path);
    assert!(b2.find(&[label("x")]).unwrap().is_empty());
    let h = aes(&a, "x", &[]);
    assert_eq!(b2.find(&[label("x")]).unwrap(), vec![h]);
    let ct = b2.encrypt(h, &gcm(), b"m").unwrap();
    assert_eq!(a.decrypt(h, &gcm(), &ct).unwrap().expose_secret(), b"m");
    // The policy gate of `C_*Init` (`key_for`) sees the other connection's commits at once too:
    // its one change check per call stands for the object lookup's.
    assert!(b2
        .prepare(h, Usage::Encrypt, &gcm())
        .is_ok_and(|k| k.always_authenticate() == Some(false)));
    a.set_attributes(h, &[b(AttrType::Encrypt, false)]).unwrap();
    assert!(matches!(b2.encrypt(h, &gcm(), b"m"), Err(Error::KeyFunctionNotPermitted(_))));
    assert!(matches!(
        b2.prepare(h, Usage::Encrypt, &gcm()),
        Err(Error::KeyFunctionNotPermitted(_))
    ));
    a.destroy_object(h).unwrap();
    assert!(matches!(b2.prepare(h, Usage::Decrypt, &gcm()), Err(Error::ObjectHandleInvalid)));
    assert!(matches!(b2.encrypt(h, &gcm(), b"m"), Err(Error::ObjectHandleInvalid)));
    assert!(b2.find(&[label("x")]).unwrap().is_empty());
}

#[test]
fn key_pairs_wrap_unwrap_and_derive() {
    let f = fixture();
    let t = open_user(&f.path);
    let ec = |l: &str| {
        t.generate_key_pair(
            KeyGenMechanism::EcKeyPairGen,
            &[
                b(AttrType::Token, true),
                label(l),
                (AttrType::EcParams, AttrValue::Bytes(Curve::P256.oid_der().to_vec())),
            ],
            &[
                b(AttrType::Token, true),
                label(l),
                b(AttrType::Derive, true),
                b(AttrType::Sign, true),
            ],
            S,
        )
        .unwrap()
    };
    let (pa, sa) = ec("alice");
    let (pb, sb) = ec("bob");
    let sig = t.sign(sa, &Mechanism::EcdsaSha256, b"msg").unwrap();
    t.verify(pa, &Mechanism::EcdsaSha256, b"msg", &sig).unwrap();
    assert!(matches!(
        t.verify(pb, &Mechanism::EcdsaSha256, b"msg", &sig),
        Err(Error::SignatureInvalid)
    ));
    assert_eq!(t.attribute(sa, AttrType::Local).unwrap(), AttrValue::Bool(true));
    assert!(matches!(t.attribute(sa, AttrType::Value), Err(Error::AttributeSensitive(_))));
    // ECDH both ways gives the same AES key.
    let point = |h: u64| t.public_key(h).unwrap().raw().to_vec();
    let derive = |base: u64, peer: Vec<u8>| {
        let m = Mechanism::Ecdh1Derive {
            kdf: bulwark_core::mechanism::EcdhKdf::Null,
            shared_data: vec![],
            public_data: peer,
        };
        t.derive_key(
            base,
            &m,
            &[
                ulong(AttrType::Class, ObjectClass::SecretKey.to_raw()),
                ulong(AttrType::KeyType, 0x1f),
                ulong(AttrType::ValueLen, 32),
            ],
            S,
        )
        .unwrap()
    };
    let ka = derive(sa, point(pb));
    let kb = derive(sb, point(pa));
    let ct = t.encrypt(ka, &gcm(), b"shared").unwrap();
    assert_eq!(t.decrypt(kb, &gcm(), &ct).unwrap().expose_secret(), b"shared");
    assert_eq!(t.attribute(ka, AttrType::Local).unwrap(), AttrValue::Bool(false));
    // Wrap an extractable key under a KEK, unwrap it, and it still decrypts.
    let kek = aes(&t, "kek", &[b(AttrType::Wrap, true), b(AttrType::Unwrap, true)]);
    let target = aes(&t, "movable", &[b(AttrType::Extractable, true)]);
    let locked = aes(&t, "stays", &[]);
    assert!(matches!(
        t.wrap_key(kek, &Mechanism::AesKeyWrapPad, locked),
        Err(Error::KeyUnextractable(_))
    ));
    let wrapped = t.wrap_key(kek, &Mechanism::AesKeyWrapPad, target).unwrap();
    let ct = t.encrypt(target, &gcm(), b"moved").unwrap();
    let back = t
        .unwrap_key(
            kek,
            &Mechanism::AesKeyWrapPad,
            &wrapped,
            &[
                ulong(AttrType::Class, ObjectClass::SecretKey.to_raw()),
                ulong(AttrType::KeyType, 0x1f),
                b(AttrType::Decrypt, true),
            ],
            S,
        )
        .unwrap();
    assert_eq!(t.decrypt(back, &gcm(), &ct).unwrap().expose_secret(), b"moved");
    let mut bad = wrapped.clone();
    bad[3] ^= 1;
    assert!(t
        .unwrap_key(kek, &Mechanism::AesKeyWrapPad, &bad, &[ulong(AttrType::KeyType, 0x1f)], S)
        .is_err());
    // Every key family generates and round-trips through the token.
    for (mech, pt, st) in [
        (KeyGenMechanism::RsaPkcsKeyPairGen, vec![ulong(AttrType::ModulusBits, 2048)], vec![]),
        (KeyGenMechanism::EcEdwardsKeyPairGen, vec![], vec![]),
        (KeyGenMechanism::MlDsaKeyPairGen, vec![ulong(AttrType::ParameterSet, 1)], vec![]),
        (KeyGenMechanism::MlKemKeyPairGen, vec![ulong(AttrType::ParameterSet, 2)], vec![]),
    ] {
        let (p, s) = t.generate_key_pair(mech, &pt, &st, S).unwrap();
        assert!(t.public_key(p).unwrap().to_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(t.public_key(s).unwrap().spki_der(), t.public_key(p).unwrap().spki_der());
        let _ = t.prepare(s, Usage::Sign, &Mechanism::EdDsa(None));
    }
}

#[test]
fn check_pin_counts_failures_and_changes_nothing_else() {
    let f = fixture();
    let t = open_user(&f.path);
    let gen = t.status().unwrap().generation;
    t.check_pin(&user()).unwrap();
    assert!(matches!(t.check_pin(&Pin::new(b"not-the-pin".to_vec())), Err(Error::PinIncorrect)));
    assert_eq!(t.status().unwrap().user_pin_failures, 1);
    t.check_pin(&user()).unwrap();
    let s = t.status().unwrap();
    assert_eq!((s.user_pin_failures, s.generation), (0, gen), "no keyslot rewrite");
    // A fresh process (no cached PIN digest) checks with Argon2id.
    let t2 = open_user(&f.path);
    t2.check_pin(&user()).unwrap();
    t2.logout().unwrap();
    assert!(matches!(t2.check_pin(&user()), Err(Error::UserNotLoggedIn)));
}

/// The object count of `C_GetTokenInfo` is kept by the store (no scan), through creation,
/// destruction, and the migration of a store made before it was kept.
#[test]
fn object_count_is_kept_through_writes_and_migration() {
    let f = fixture();
    let count = |p: &Path| -> u64 {
        let c = rusqlite::Connection::open(p).unwrap();
        u64::try_from(
            c.query_row("SELECT count(*) FROM objects", [], |r| r.get::<_, i64>(0)).unwrap(),
        )
        .unwrap()
    };
    {
        let t = open_user(&f.path);
        let hs: Vec<u64> = (0..5).map(|i| aes(&t, &format!("k{i}"), &[])).collect();
        assert_eq!(t.status().unwrap().objects, count(&f.path));
        t.destroy_object(hs[2]).unwrap();
        t.destroy_object(hs[4]).unwrap();
        assert_eq!(t.status().unwrap().objects, count(&f.path));
        assert!(t.destroy_object(hs[4]).is_err());
        assert_eq!(t.status().unwrap().objects, count(&f.path));
    }
    // A store of a schema before the authenticated set is refused with a clear error, never
    // "migrated" by trusting rows that carry no commitment.
    rusqlite::Connection::open(&f.path).unwrap().execute_batch("PRAGMA user_version = 2;").unwrap();
    let r = Token::open(&f.path);
    assert!(matches!(r, Err(Error::SchemaUnsupported(2))), "{r:?}");
}
