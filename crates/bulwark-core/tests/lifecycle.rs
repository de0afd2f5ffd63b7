//! Key lifecycle states (docs/lifecycle.md): every allowed and every refused transition, the
//! gate's refusals per state and operation, date-driven changes on a hand-set clock (prepared
//! keys included), who may change a state, persistence across reopen, tampering with the
//! stored state, the audit record, and backup → restore keeping states.

// Handles are small row ids; short names are the tokens, keys and paths of each scene.
#![allow(
    missing_docs,
    clippy::too_many_lines,
    clippy::cast_possible_wrap,
    clippy::many_single_char_names
)]

mod attack_support;

use std::path::Path;
use std::sync::Arc;

use attack_support::*;
use bulwark_core::attr::{AttrType, AttrValue, ObjectClass};
use bulwark_core::hsm::Hsm;
use bulwark_core::kernel::{as_caller, Ops, Role};
use bulwark_core::lifecycle::{KeyState, ManualClock, Transition, TRANSITIONS};
use bulwark_core::mechanism::{DigestAlg, KeyGenMechanism, Mechanism};
use bulwark_core::secret::SecretBytes;
use bulwark_core::token::{LifecycleDates, Usage};
use bulwark_core::{Error, Token, UserType};

/// A fixed "now" for the hand-set clock (2026-01-01T00:00:00Z).
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

fn date(t: AttrType, v: u64) -> (AttrType, AttrValue) {
    (t, AttrValue::Ulong(v))
}

fn all_uses() -> Vec<(AttrType, AttrValue)> {
    [AttrType::Encrypt, AttrType::Decrypt, AttrType::Wrap, AttrType::Unwrap, AttrType::Derive]
        .into_iter()
        .map(|a| b(a, true))
        .collect()
}

/// The transitions that take a pre-activation key to `s`.
fn path_to(s: KeyState) -> &'static [Transition] {
    use Transition as T;
    match s {
        KeyState::PreActivation => &[],
        KeyState::Active => &[T::Activate],
        KeyState::Suspended => &[T::Activate, T::Suspend],
        KeyState::Deactivated => &[T::Activate, T::Deactivate],
        KeyState::Compromised => &[T::Activate, T::Compromise],
        KeyState::Destroyed => &[T::Activate, T::Deactivate, T::Destroy],
        KeyState::DestroyedCompromised => &[T::Activate, T::Deactivate, T::Destroy, T::Compromise],
    }
}

fn state(t: &Token, h: u64) -> KeyState {
    t.key_lifecycle(h).unwrap().1
}

fn secret_column(p: &Path, h: u64) -> Option<Vec<u8>> {
    let c = rusqlite::Connection::open(p).unwrap();
    c.query_row("SELECT secret FROM objects WHERE handle = ?", [h as i64], |r| r.get(0)).unwrap()
}

/// Every (state, transition) pair: the table's transitions succeed and lead where the table
/// says; every other pair is refused with a clear error and changes nothing (attributes and
/// stored row identical).
#[test]
fn every_transition_from_every_state() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let clock = ManualClock::new(T0);
    let t = open(&p, &clock);
    let mut allowed = 0;
    let mut refused = 0;
    for (i, from) in KeyState::ALL.iter().enumerate() {
        for (j, tr) in Transition::ALL.iter().enumerate() {
            let l = format!("k-{i}-{j}");
            // Created with an activation date a year away: pre-activation.
            let h = aes(&t, &l, true, &[date(AttrType::BulwarkActivationDate, T0 + 365 * DAY)])
                .unwrap();
            assert_eq!(state(&t, h), KeyState::PreActivation);
            for step in path_to(*from) {
                t.transition_keys(&[h], *step).unwrap();
            }
            assert_eq!(state(&t, h), *from, "{l}: path to {from}");
            let before = t.object_info(h).unwrap().attrs;
            let secret_before = secret_column(&p, h);
            let expect = TRANSITIONS.iter().find(|(f, x, _)| f == from && x == tr);
            match (expect, t.transition_keys(&[h], *tr)) {
                (Some((_, _, to)), Ok(got)) => {
                    allowed += 1;
                    assert_eq!(got, vec![*to], "{from} {tr:?}");
                    assert_eq!(state(&t, h), *to);
                    if !to.has_material() {
                        assert_eq!(secret_column(&p, h), None, "{from} {tr:?}: material gone");
                        // Metadata stays.
                        assert_eq!(t.object_info(h).unwrap().attrs.label(), l);
                    }
                }
                (None, Err(Error::ActionProhibited(why))) => {
                    refused += 1;
                    assert!(!why.is_empty());
                    assert_eq!(t.object_info(h).unwrap().attrs, before, "{from} {tr:?}");
                    assert_eq!(secret_column(&p, h), secret_before, "{from} {tr:?}");
                    assert_eq!(state(&t, h), *from);
                }
                other => panic!("{from} {tr:?}: {other:?}"),
            }
        }
    }
    assert_eq!(allowed, TRANSITIONS.len());
    assert_eq!(allowed + refused, KeyState::ALL.len() * Transition::ALL.len());
    // A key that never had a state is active: it can be suspended and resumed.
    let legacy = aes(&t, "legacy", true, &[]).unwrap();
    assert_eq!(t.key_lifecycle(legacy).unwrap().0.state, None);
    assert_eq!(state(&t, legacy), KeyState::Active);
    assert_eq!(t.transition_keys(&[legacy], Transition::Suspend).unwrap(), [KeyState::Suspended]);
    assert_eq!(t.transition_keys(&[legacy], Transition::Resume).unwrap(), [KeyState::Active]);
}

/// What each state lets a key do, operation by operation (AES: encrypt, decrypt, wrap, unwrap;
/// EC: sign, verify; HMAC: sign, verify), including through a prepared key.
#[test]
fn the_gate_refuses_by_state_and_operation() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let clock = ManualClock::new(T0);
    let t = open(&p, &clock);
    let target = aes(&t, "target", true, &[b(AttrType::Extractable, true)]).unwrap();
    let kwp = Mechanism::AesKeyWrapPad;
    let hmac = Mechanism::Hmac(DigestAlg::Sha256);
    let unwrap_t = [
        b(AttrType::Token, false),
        ulong(AttrType::Class, ObjectClass::SecretKey.to_raw()),
        ulong(AttrType::KeyType, bulwark_core::attr::KeyType::Aes.to_raw()),
    ];
    for s in KeyState::ALL {
        let n = s.name();
        // Keys made without a state (as every existing key), used while active, then moved.
        let (k, pair, mac) = if *s == KeyState::PreActivation {
            let later = [date(AttrType::BulwarkActivationDate, T0 + DAY)];
            let mut at = all_uses();
            at.extend_from_slice(&later);
            let k = aes(&t, &format!("aes-{n}"), true, &at).unwrap();
            let l = format!("ec-{n}");
            let pair = t
                .generate_key_pair(
                    KeyGenMechanism::EcKeyPairGen,
                    &[
                        b(AttrType::Token, true),
                        label(&l),
                        b(AttrType::Verify, true),
                        bytes(AttrType::EcParams, bulwark_core::crypto::Curve::P256.oid_der()),
                        later[0].clone(),
                    ],
                    &[
                        b(AttrType::Token, true),
                        label(&l),
                        b(AttrType::Sign, true),
                        later[0].clone(),
                    ],
                    S,
                )
                .unwrap();
            let mac = t
                .generate_key(
                    KeyGenMechanism::GenericSecretKeyGen,
                    &[
                        b(AttrType::Token, true),
                        label(&format!("mac-{n}")),
                        ulong(AttrType::ValueLen, 32),
                        b(AttrType::Sign, true),
                        b(AttrType::Verify, true),
                        later[0].clone(),
                    ],
                    S,
                )
                .unwrap();
            (k, pair, mac)
        } else {
            let k = aes(&t, &format!("aes-{n}"), true, &all_uses()).unwrap();
            let pair = ec_pair(&t, &format!("ec-{n}"), true, &[]).unwrap();
            let mac = t
                .generate_key(
                    KeyGenMechanism::GenericSecretKeyGen,
                    &[
                        b(AttrType::Token, true),
                        label(&format!("mac-{n}")),
                        ulong(AttrType::ValueLen, 32),
                        b(AttrType::Sign, true),
                        b(AttrType::Verify, true),
                    ],
                    S,
                )
                .unwrap();
            (k, pair, mac)
        };
        let (ct, wrapped, sig, tag) = if *s == KeyState::PreActivation {
            (vec![0u8; 40], vec![0u8; 40], vec![0u8; 64], vec![0u8; 32])
        } else {
            (
                t.encrypt(k, &gcm(), b"old data").unwrap(),
                t.wrap_key(k, &kwp, target).unwrap(),
                t.sign(pair.1, &Mechanism::EcdsaSha256, b"old data").unwrap(),
                t.sign(mac, &hmac, b"old data").unwrap(),
            )
        };
        // A prepared decrypt made while active must follow the state too.
        let prepared = (*s != KeyState::PreActivation)
            .then(|| Hsm::prepare(&t, k, Usage::Decrypt, &gcm()).unwrap());
        let prepared_enc = (*s != KeyState::PreActivation)
            .then(|| Hsm::prepare(&t, k, Usage::Encrypt, &gcm()).unwrap());
        let steps: &[Transition] = match s {
            KeyState::PreActivation | KeyState::Active => &[],
            KeyState::Suspended => &[Transition::Suspend],
            KeyState::Deactivated => &[Transition::Deactivate],
            KeyState::Compromised => &[Transition::Compromise],
            KeyState::Destroyed => &[Transition::Deactivate, Transition::Destroy],
            KeyState::DestroyedCompromised => {
                &[Transition::Deactivate, Transition::Destroy, Transition::Compromise]
            }
        };
        for st in steps {
            t.transition_keys(&[k], *st).unwrap();
            t.transition_keys(&[pair.1, pair.0], *st).unwrap();
            t.transition_keys(&[mac], *st).unwrap();
        }
        assert_eq!(state(&t, k), *s);
        assert_eq!(state(&t, pair.0), *s);
        let ok = |u: Usage| s.permits(u).is_ok();
        let check = |what: &str, u: Usage, r: Result<(), Error>| match (ok(u), r) {
            (true, Ok(())) => {}
            (false, Err(Error::KeyFunctionNotPermitted(why))) => {
                assert!(why.contains(if s.has_material() { n } else { "destroyed" }), "{why}");
            }
            (want, got) => panic!("{n} {what}: allowed={want}, got {got:?}"),
        };
        check("encrypt", Usage::Encrypt, t.encrypt(k, &gcm(), b"new").map(|_| ()));
        check("decrypt", Usage::Decrypt, t.decrypt(k, &gcm(), &ct).map(|_| ()));
        check("wrap", Usage::Wrap, t.wrap_key(k, &kwp, target).map(|_| ()));
        check("unwrap", Usage::Unwrap, t.unwrap_key(k, &kwp, &wrapped, &unwrap_t, S).map(|_| ()));
        check("sign", Usage::Sign, t.sign(pair.1, &Mechanism::EcdsaSha256, b"x").map(|_| ()));
        check(
            "verify",
            Usage::Verify,
            t.verify(pair.0, &Mechanism::EcdsaSha256, b"old data", &sig),
        );
        check("mac", Usage::Sign, t.sign(mac, &hmac, b"x").map(|_| ()));
        check("mac-verify", Usage::Verify, t.verify(mac, &hmac, b"old data", &tag));
        if let (Some(d), Some(e)) = (&prepared, &prepared_enc) {
            check("prepared decrypt", Usage::Decrypt, d.decrypt(&gcm(), &ct).map(|_| ()));
            check("prepared encrypt", Usage::Encrypt, e.encrypt(&gcm(), b"new").map(|_| ()));
        }
        if s.has_material() {
            assert!(secret_column(&p, k).is_some());
        } else {
            assert_eq!(secret_column(&p, k), None);
            assert_eq!(secret_column(&p, pair.1), None);
        }
    }
}

/// Activation, protect-stop and deactivation dates move keys without anyone acting, on the
/// token's clock; a prepared key follows the date.
#[test]
fn dates_move_states_on_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let clock = ManualClock::new(T0);
    let t = open(&p, &clock);
    let k = aes(
        &t,
        "dated",
        true,
        &[
            b(AttrType::Encrypt, true),
            b(AttrType::Decrypt, true),
            date(AttrType::BulwarkActivationDate, T0 + 100),
            date(AttrType::BulwarkDeactivationDate, T0 + 200),
        ],
    )
    .unwrap();
    assert_eq!(state(&t, k), KeyState::PreActivation);
    assert!(matches!(t.encrypt(k, &gcm(), b"x"), Err(Error::KeyFunctionNotPermitted(_))));
    // The vendor attribute shows the state now.
    let raw = |t: &Token| t.attribute(k, AttrType::BulwarkState).unwrap();
    assert_eq!(raw(&t), AttrValue::Ulong(KeyState::PreActivation.to_raw()));
    clock.set(T0 + 100);
    assert_eq!(state(&t, k), KeyState::Active);
    assert_eq!(raw(&t), AttrValue::Ulong(KeyState::Active.to_raw()));
    let ct = t.encrypt(k, &gcm(), b"x").unwrap();
    let enc = Hsm::prepare(&t, k, Usage::Encrypt, &gcm()).unwrap();
    let dec = Hsm::prepare(&t, k, Usage::Decrypt, &gcm()).unwrap();
    enc.encrypt(&gcm(), b"y").unwrap();
    clock.set(T0 + 199);
    enc.encrypt(&gcm(), b"y").unwrap();
    clock.set(T0 + 200);
    assert_eq!(state(&t, k), KeyState::Deactivated);
    assert!(matches!(enc.encrypt(&gcm(), b"y"), Err(Error::KeyFunctionNotPermitted(_))));
    assert_eq!(dec.decrypt(&gcm(), &ct).unwrap().expose_secret(), b"x");
    assert_eq!(t.decrypt(k, &gcm(), &ct).unwrap().expose_secret(), b"x");
    // The stored state is still pre-activation: the dates alone moved it.
    assert_eq!(t.key_lifecycle(k).unwrap().0.state, Some(KeyState::PreActivation));

    // The protect-stop date, set later, deactivates too.
    let k2 =
        aes(&t, "ps", true, &[b(AttrType::Encrypt, true), b(AttrType::Decrypt, true)]).unwrap();
    let dates = LifecycleDates { protect_stop: Some(T0 + 300), ..LifecycleDates::default() };
    t.set_key_dates(&[k2], dates).unwrap();
    t.encrypt(k2, &gcm(), b"x").unwrap();
    clock.set(T0 + 300);
    assert_eq!(state(&t, k2), KeyState::Deactivated);
    assert!(t.encrypt(k2, &gcm(), b"x").is_err());

    // Dates are checked: no activation date for an active key, no stop before activation,
    // no stop date for a deactivated key; a refused change changes nothing.
    let k3 = aes(&t, "k3", true, &[]).unwrap();
    let before = t.object_info(k3).unwrap().attrs;
    let act = LifecycleDates { activation: Some(T0 + 1000), ..LifecycleDates::default() };
    assert!(matches!(t.set_key_dates(&[k3], act), Err(Error::ActionProhibited(_))));
    assert_eq!(t.object_info(k3).unwrap().attrs, before);
    let dead = LifecycleDates { deactivation: Some(T0 + 5000), ..LifecycleDates::default() };
    assert!(matches!(t.set_key_dates(&[k2], dead), Err(Error::ActionProhibited(_))));
    let bad = [
        date(AttrType::BulwarkActivationDate, T0 + 500),
        date(AttrType::BulwarkDeactivationDate, T0 + 400),
    ];
    assert!(matches!(aes(&t, "bad", true, &bad), Err(Error::TemplateInconsistent(_))));
    // The state itself is never set through attributes.
    let st = [ulong(AttrType::BulwarkState, KeyState::Active.to_raw())];
    assert!(matches!(aes(&t, "st", true, &st), Err(Error::AttributeReadOnly(_))));
    assert!(matches!(t.set_attributes(k, &st), Err(Error::AttributeReadOnly(_))));
    let d = [date(AttrType::BulwarkDeactivationDate, T0 + 9999)];
    assert!(matches!(t.set_attributes(k3, &d), Err(Error::AttributeReadOnly(_))));

    // An explicit activation before the date: active now, dated now.
    let k4 = aes(&t, "k4", true, &[date(AttrType::BulwarkActivationDate, T0 + 10 * DAY)]).unwrap();
    t.transition_keys(&[k4], Transition::Activate).unwrap();
    let (l, s) = t.key_lifecycle(k4).unwrap();
    assert_eq!((s, l.activation), (KeyState::Active, Some(T0 + 300)));
}

/// Only whoever may manage a key changes its state: a crypto user granted every use may not
/// suspend, compromise or destroy it; an embedded public session does not even see it.
#[test]
fn only_managers_change_states() {
    let dir = tempfile::tempdir().unwrap();
    let sp = dir.path().join("q.db");
    let policy = bulwark_core::token::SecurityPolicy::default();
    let t = open_unsealed(&sp, &quorum_store(&sp, &policy));
    let so = admin(&t);
    as_caller(caller(&so, 0), || {
        t.create_user("carol", Role::CryptoUser, b"carol-password", None).unwrap();
    });
    let carol = t
        .authenticate(&bulwark_core::token::Credentials {
            name: "carol",
            password: b"carol-password",
            totp: None,
            cert_sha256: None,
        })
        .unwrap();
    let officer = keeper(&t);
    let h = as_caller(caller(&officer, 1), || {
        let h = aes(&t, "managed", true, &[b(AttrType::Encrypt, true)]).unwrap();
        t.set_grant(h, &to("carol"), Some(Ops::ALL)).unwrap();
        h
    });
    for tr in Transition::ALL {
        let r = as_caller(caller(&carol, 2), || t.transition_keys(&[h], *tr));
        assert!(matches!(r, Err(Error::ActionProhibited(_))), "{tr:?}: {r:?}");
        let r = as_caller(caller(&so, 0), || t.transition_keys(&[h], *tr));
        assert!(r.is_err(), "the security officer does not manage private keys: {tr:?}");
    }
    let d = LifecycleDates { deactivation: Some(now_secs() + DAY), ..LifecycleDates::default() };
    let r = as_caller(caller(&carol, 2), || t.set_key_dates(&[h], d));
    assert!(matches!(r, Err(Error::ActionProhibited(_))), "{r:?}");
    as_caller(caller(&carol, 2), || t.encrypt(h, &gcm(), b"x")).unwrap();
    let r = as_caller(caller(&officer, 1), || t.transition_keys(&[h], Transition::Compromise));
    assert_eq!(r.unwrap(), [KeyState::Compromised]);
    let r = as_caller(caller(&carol, 2), || t.encrypt(h, &gcm(), b"x"));
    assert!(matches!(r, Err(Error::KeyFunctionNotPermitted(_))), "{r:?}");

    // Embedded: a public session cannot see (so not change) a private key.
    let dir2 = tempfile::tempdir().unwrap();
    let p = store(dir2.path());
    let clock = ManualClock::new(T0);
    let k = aes(&open(&p, &clock), "k", true, &[]).unwrap();
    let public = Token::open(&p).unwrap();
    let r = public.transition_keys(&[k], Transition::Compromise);
    assert!(matches!(r, Err(Error::ObjectHandleInvalid | Error::UserNotLoggedIn)), "{r:?}");
}

/// States persist across reopen; each change is one audited key-management record.
#[test]
fn states_persist_and_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let clock = ManualClock::new(T0);
    let (k, pair) = {
        let t = open(&p, &clock);
        let k = aes(&t, "persist", true, &[b(AttrType::Encrypt, true)]).unwrap();
        let pair = ec_pair(&t, "pair", true, &[]).unwrap();
        t.transition_keys(&[k], Transition::Suspend).unwrap();
        t.transition_keys(&[pair.1, pair.0], Transition::Compromise).unwrap();
        let r = t.transition_keys(&[k], Transition::Activate);
        assert!(matches!(r, Err(Error::ActionProhibited(_))));
        (k, pair)
    };
    let t = open(&p, &clock);
    assert_eq!(state(&t, k), KeyState::Suspended);
    assert_eq!(state(&t, pair.0), KeyState::Compromised);
    assert_eq!(state(&t, pair.1), KeyState::Compromised);
    assert_eq!(t.key_lifecycle(pair.1).unwrap().0.compromise, Some(T0));
    assert!(t.encrypt(k, &gcm(), b"x").is_err());
    drop(t);
    let so_t = Token::open(&p).unwrap();
    so_t.login(UserType::So, &so()).unwrap();
    let lines = so_t.audit_export(0).unwrap().join("\n");
    assert!(lines.contains("\"key-state\""), "{lines}");
    assert!(lines.contains("suspend -> suspended"), "{lines}");
    assert!(lines.contains("compromise -> compromised"), "{lines}");
    // The refused activation is recorded too.
    assert!(lines.contains("action-prohibited"), "{lines}");
}

/// The state is part of the authenticated record: replaying the row saved before a key was
/// marked compromised, or editing the stored state, is an integrity failure like any edit.
#[test]
fn tampering_with_the_stored_state_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let clock = ManualClock::new(T0);
    let k = aes(&open(&p, &clock), "victim", true, &[b(AttrType::Encrypt, true)]).unwrap();
    let uid = store_uid(&p);
    let saved: (Vec<u8>, Vec<u8>) = {
        let c = rusqlite::Connection::open(&p).unwrap();
        c.query_row("SELECT attrs, mac FROM objects WHERE handle = ?", [k as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
    };
    open(&p, &clock).transition_keys(&[k], Transition::Compromise).unwrap();
    checkpoint(&p);
    let marks = Marks::save(&uid);
    let pristine = dir.path().join("pristine");
    std::fs::create_dir_all(&pristine).unwrap();
    copy_store(&p, &pristine.join("t.db"));

    // 1. Replay the pre-compromise row (attributes and their MAC).
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        c.execute(
            "UPDATE objects SET attrs = ?, mac = ? WHERE handle = ?",
            rusqlite::params![saved.0, saved.1, k as i64],
        )
        .unwrap();
    }
    let t = Token::open(&p).unwrap();
    assert_integrity(t.login(UserType::User, &user()), "replayed pre-compromise row");
    drop(t);

    // 2. Edit the stored state value in place (compromised → active).
    marks.restore();
    copy_store(&pristine.join("t.db"), &p);
    let _ = std::fs::remove_file(dir.path().join("t.db-wal"));
    {
        let c = rusqlite::Connection::open(&p).unwrap();
        let attrs: Vec<u8> = c
            .query_row("SELECT attrs FROM objects WHERE handle = ?", [k as i64], |r| r.get(0))
            .unwrap();
        // type (8, big-endian) ‖ kind tag ‖ len (4) ‖ value (8): find the state attribute.
        let ty = bulwark_core::attr::vendor::CKA_BULWARK_STATE.to_be_bytes();
        let at = attrs.windows(8).position(|w| w == ty).expect("state stored in the record");
        let mut edited = attrs.clone();
        let v = at + 8 + 1 + 4;
        edited[v..v + 8].copy_from_slice(&KeyState::Active.to_raw().to_be_bytes());
        c.execute(
            "UPDATE objects SET attrs = ? WHERE handle = ?",
            rusqlite::params![edited, k as i64],
        )
        .unwrap();
    }
    let t = Token::open(&p).unwrap();
    assert_integrity(t.login(UserType::User, &user()), "edited state");
    drop(t);
    marks.restore();
}

/// A backup carries every state and date; the restored keys behave as before.
#[test]
fn backup_and_restore_keep_states() {
    let dir = tempfile::tempdir().unwrap();
    let src = store(dir.path());
    let clock = ManualClock::new(T0);
    let t = open(&src, &clock);
    let uses = [b(AttrType::Encrypt, true), b(AttrType::Decrypt, true)];
    let active = aes(&t, "active", true, &uses).unwrap();
    let ct = t.encrypt(active, &gcm(), b"kept").unwrap();
    let mut dated_t = uses.to_vec();
    dated_t.push(date(AttrType::BulwarkActivationDate, T0 + 100));
    dated_t.push(date(AttrType::BulwarkDeactivationDate, T0 + 200));
    aes(&t, "dated", true, &dated_t).unwrap();
    for (l, steps) in [
        ("suspended", &[Transition::Suspend][..]),
        ("compromised", &[Transition::Compromise][..]),
        ("destroyed", &[Transition::Deactivate, Transition::Destroy][..]),
    ] {
        let h = aes(&t, l, true, &uses).unwrap();
        for s in steps {
            t.transition_keys(&[h], *s).unwrap();
        }
    }
    // The deactivated key encrypted this before it was deactivated.
    let dk = aes(&t, "deactivated", true, &uses).unwrap();
    let old = t.encrypt(dk, &gcm(), b"old").unwrap();
    t.transition_keys(&[dk], Transition::Deactivate).unwrap();
    drop(t);
    let file = dir.path().join("b.bwb");
    let pass = SecretBytes::from_slice(b"correct horse battery staple");
    {
        let s = Token::open(&src).unwrap();
        s.login(UserType::So, &so()).unwrap();
        s.backup(&file, &pass, FAST, &mut |_, _| {}).unwrap();
    }
    let dst_dir = tempfile::tempdir().unwrap();
    let dst = store(dst_dir.path());
    {
        let d = Token::open(&dst).unwrap();
        d.login(UserType::So, &so()).unwrap();
        d.restore(&file, &pass, &mut |_, _| {}).unwrap();
    }
    let a = open(&src, &clock);
    let z = open(&dst, &clock);
    for l in ["active", "dated", "suspended", "compromised", "destroyed", "deactivated"] {
        let hs = z.find_by_label(l).unwrap();
        let hd = a.find_by_label(l).unwrap();
        assert_eq!(hs.len(), 1, "{l}");
        assert_eq!(hs[0].attrs, hd[0].attrs, "{l}: every attribute, the lifecycle included");
        assert_eq!(z.key_lifecycle(hs[0].handle).unwrap(), a.key_lifecycle(hd[0].handle).unwrap());
    }
    let one = |t: &Token, l: &str| t.find_by_label(l).unwrap()[0].handle;
    assert_eq!(state(&z, one(&z, "suspended")), KeyState::Suspended);
    assert_eq!(state(&z, one(&z, "compromised")), KeyState::Compromised);
    assert_eq!(state(&z, one(&z, "destroyed")), KeyState::Destroyed);
    assert_eq!(secret_column(&dst, one(&z, "destroyed")), None);
    assert_eq!(state(&z, one(&z, "dated")), KeyState::PreActivation);
    clock.set(T0 + 150);
    assert_eq!(state(&z, one(&z, "dated")), KeyState::Active);
    clock.set(T0 + 250);
    assert_eq!(state(&z, one(&z, "dated")), KeyState::Deactivated);
    assert_eq!(z.decrypt(one(&z, "active"), &gcm(), &ct).unwrap().expose_secret(), b"kept");
    assert_eq!(z.decrypt(one(&z, "deactivated"), &gcm(), &old).unwrap().expose_secret(), b"old");
    assert!(z.encrypt(one(&z, "deactivated"), &gcm(), b"x").is_err());
    assert!(z.encrypt(one(&z, "suspended"), &gcm(), b"x").is_err());
}

/// Two connections to one store (two processes): a key compromised by one is compromised for
/// the other at once, its prepared key included, and the other cannot move it back.
#[test]
fn another_connection_sees_a_state_change_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let clock = ManualClock::new(T0);
    let one = open(&p, &clock);
    let two = open(&p, &clock);
    let k = aes(&one, "shared", true, &[b(AttrType::Encrypt, true)]).unwrap();
    let prepared = Hsm::prepare(&one, k, Usage::Encrypt, &gcm()).unwrap();
    prepared.encrypt(&gcm(), b"x").unwrap();
    assert_eq!(state(&one, k), KeyState::Active);
    two.transition_keys(&[k], Transition::Compromise).unwrap();
    // The prepared key polls the store at most once a millisecond.
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(matches!(prepared.encrypt(&gcm(), b"x"), Err(Error::KeyFunctionNotPermitted(_))));
    assert_eq!(state(&one, k), KeyState::Compromised);
    let r = one.transition_keys(&[k], Transition::Suspend);
    assert!(matches!(r, Err(Error::ActionProhibited(_))), "{r:?}");
    assert_eq!(state(&two, k), KeyState::Compromised);
}

/// A key's state cannot be laundered: a copy keeps it, a compromised key never leaves the HSM
/// (wrapped or in plaintext), and session keys have states too.
#[test]
fn states_survive_copies_and_compromised_keys_stay_inside() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let clock = ManualClock::new(T0);
    let t = open(&p, &clock);
    let kek = aes(&t, "kek", true, &[b(AttrType::Wrap, true)]).unwrap();
    let kwp = Mechanism::AesKeyWrapPad;
    let x =
        [b(AttrType::Encrypt, true), b(AttrType::Extractable, true), b(AttrType::Sensitive, false)];
    let k = aes(&t, "leaky", true, &x).unwrap();
    t.transition_keys(&[k], Transition::Deactivate).unwrap();
    // A deactivated key may still be exported (it is not compromised).
    t.wrap_key(kek, &kwp, k).unwrap();
    t.export_secret(k).unwrap();
    t.transition_keys(&[k], Transition::Compromise).unwrap();
    assert!(matches!(t.wrap_key(kek, &kwp, k), Err(Error::KeyUnextractable(_))));
    assert!(matches!(t.export_secret(k), Err(Error::KeyUnextractable(_))));
    let copy = t.copy_object(k, &[label("copy")], S).unwrap();
    assert_eq!(state(&t, copy), KeyState::Compromised);
    assert!(t.encrypt(copy, &gcm(), b"x").is_err());
    let st = [ulong(AttrType::BulwarkState, KeyState::Active.to_raw())];
    assert!(matches!(t.copy_object(k, &st, S), Err(Error::AttributeReadOnly(_))));

    // A session key: suspended, resumed, deactivated, destroyed (its material dropped).
    let s = aes(&t, "session", false, &[b(AttrType::Encrypt, true), b(AttrType::Decrypt, true)])
        .unwrap();
    let ct = t.encrypt(s, &gcm(), b"x").unwrap();
    t.transition_keys(&[s], Transition::Suspend).unwrap();
    assert!(t.encrypt(s, &gcm(), b"x").is_err());
    t.transition_keys(&[s], Transition::Resume).unwrap();
    t.transition_keys(&[s], Transition::Deactivate).unwrap();
    assert_eq!(t.decrypt(s, &gcm(), &ct).unwrap().expose_secret(), b"x");
    t.transition_keys(&[s], Transition::Destroy).unwrap();
    assert_eq!(state(&t, s), KeyState::Destroyed);
    let r = t.decrypt(s, &gcm(), &ct);
    assert!(matches!(r, Err(Error::KeyFunctionNotPermitted(_))), "{r:?}");
    // Both halves or neither: a refused transition on one key leaves the other unchanged.
    let a = aes(&t, "a", true, &[]).unwrap();
    let d = aes(&t, "d", true, &[]).unwrap();
    t.transition_keys(&[d], Transition::Suspend).unwrap();
    let r = t.transition_keys(&[a, d], Transition::Suspend);
    assert!(matches!(r, Err(Error::ActionProhibited(_))), "{r:?}");
    assert_eq!(state(&t, a), KeyState::Active);
}
