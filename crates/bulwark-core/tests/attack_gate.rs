//! Attack suite, gate side (issue 9, attacks 1, 2, 7, 8, 9, 10 and the single-use rules of 6):
//! what a caller may see, use, copy, wrap and create, checked through the public `Token` API
//! with front-door principals ([`bulwark_core::kernel::as_caller`]) and the embedded logins.
//!
//! Principals are created as a daemon creates them: the quorum store is initialized with its
//! first security officer, which creates the others with [`Token::create_user`]; each is
//! authenticated with [`Token::authenticate`] and acts through `as_caller`.

#![allow(missing_docs, clippy::too_many_lines)]

mod attack_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use attack_support::*;
use bulwark_core::attr::{AttrType, AttrValue, ObjectClass};
use bulwark_core::hsm::Hsm as _;
use bulwark_core::kernel::{as_caller, Ops, Principal, Role, UserId};
use bulwark_core::mechanism::{EcdhKdf, Mechanism};
use bulwark_core::token::{Credentials, SecurityPolicy, Usage, MAX_PIN_FAILURES};
use bulwark_core::{Error, Token, UserType};

const TOTP_SECRET: &[u8] = b"attack-totp-secret-0";

struct Kernel {
    _dir: tempfile::TempDir,
    path: PathBuf,
    shares: Vec<String>,
    t: Token,
    /// The store's first security officer.
    so: Principal,
}

/// An unsealed quorum store whose first security officer has created the principals `so2`
/// (security officer), `officer` (crypto officer), `alice` and `bob` (crypto users, alice
/// with TOTP).
fn kernel(policy: &SecurityPolicy) -> Kernel {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let shares = quorum_store(&path, policy);
    let t = open_unsealed(&path, &shares);
    let so = admin(&t);
    as_(&so, 0, || {
        t.create_user("so2", Role::SecurityOfficer, b"so2-password", None).unwrap();
        t.create_user("officer", Role::CryptoOfficer, b"officer-password", None).unwrap();
        t.create_user("alice", Role::CryptoUser, b"alice-password", Some(TOTP_SECRET)).unwrap();
        t.create_user("bob", Role::CryptoUser, b"bob-password", None).unwrap();
    });
    Kernel { _dir: dir, path, shares, t, so }
}

/// A PIN store (the embedded token) with the given policy.
fn pin(policy: SecurityPolicy) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    pin_store(&path, policy);
    (dir, path)
}

fn cred<'a>(name: &'a str, password: &'a [u8], totp: Option<&'a str>) -> Credentials<'a> {
    Credentials { name, password, totp, cert_sha256: None }
}

impl Kernel {
    /// Authenticates a principal as a front door would (alice with the current TOTP code:
    /// once per test, since each step is accepted once).
    fn principal(&self, name: &str) -> Principal {
        let pw = format!("{name}-password");
        let totp = (name == "alice").then(|| totp_code(TOTP_SECRET, now_secs() / 30));
        self.t
            .authenticate(&cred(name, pw.as_bytes(), totp.as_deref()))
            .unwrap_or_else(|e| panic!("{name}: {e:?}"))
    }
}

/// Runs `f` as principal `p` in login `login`.
fn as_<T>(p: &Principal, login: u64, f: impl FnOnce() -> T) -> T {
    as_caller(caller(p, login), f)
}

fn ecdsa() -> Mechanism {
    Mechanism::EcdsaSha256
}

fn kwp() -> Mechanism {
    Mechanism::AesKeyWrapPad
}

fn secret_template(token: bool, extra: &[(AttrType, AttrValue)]) -> Vec<(AttrType, AttrValue)> {
    let mut t = vec![
        ulong(AttrType::Class, ObjectClass::SecretKey.to_raw()),
        ulong(AttrType::KeyType, 0x1f),
        ulong(AttrType::ValueLen, 32),
        b(AttrType::Token, token),
    ];
    t.extend_from_slice(extra);
    t
}

#[track_caller]
fn refused<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) -> Error {
    match r {
        Err(e) => e,
        Ok(v) => panic!("{what}: allowed ({v:?})"),
    }
}

/// Attack 1: a crypto user with only a `verify` grant on an extractable EC key, and only an
/// `encrypt` grant on an AES key, may neither copy them, nor wrap them out, nor use them for
/// anything else.
#[test]
fn attack1_a_verify_or_encrypt_grant_allows_nothing_more() {
    let k = kernel(&SecurityPolicy::default());
    let officer = k.principal("officer");
    let alice = k.principal("alice");
    let (ec_pub, ec_priv, aes_k) = as_(&officer, 1, || {
        let (p, s) =
            ec_pair(&k.t, "ec", true, &[b(AttrType::Extractable, true), b(AttrType::Derive, true)])
                .unwrap();
        let a = aes(
            &k.t,
            "data-key",
            true,
            &[
                b(AttrType::Encrypt, true),
                b(AttrType::Decrypt, true),
                b(AttrType::Extractable, true),
            ],
        )
        .unwrap();
        k.t.set_grant(p, &to("alice"), Some(Ops::VERIFY)).unwrap();
        k.t.set_grant(s, &to("alice"), Some(Ops::VERIFY)).unwrap();
        k.t.set_grant(a, &to("alice"), Some(Ops::ENCRYPT)).unwrap();
        (p, s, a)
    });
    let sig = as_(&officer, 1, || k.t.sign(ec_priv, &ecdsa(), b"msg").unwrap());
    as_(&alice, 2, || {
        // What the grants allow.
        k.t.verify(ec_pub, &ecdsa(), b"msg", &sig).unwrap();
        let ct = k.t.encrypt(aes_k, &gcm(), b"plain").unwrap();
        // Copying needs the right to manage the key.
        for (h, what) in [(ec_priv, "EC private key"), (aes_k, "AES key")] {
            for tmpl in [vec![], vec![b(AttrType::Token, false)], vec![b(AttrType::Token, true)]] {
                let e = refused(k.t.copy_object(h, &tmpl, S), what);
                assert!(matches!(e, Error::ActionProhibited(_)), "copy {what}: {e:?}");
            }
        }
        // A key alice knows, to wrap under.
        let kek = import_aes(
            &k.t,
            "alice-kek",
            false,
            &[7; 32],
            &[b(AttrType::Wrap, true), b(AttrType::Unwrap, true)],
        )
        .unwrap();
        for (h, what) in [(ec_priv, "EC private key"), (aes_k, "AES key")] {
            let e = refused(k.t.wrap_key(kek, &kwp(), h), what);
            assert!(matches!(e, Error::KeyFunctionNotPermitted(_)), "wrap {what}: {e:?}");
        }
        // No use beyond the grant.
        let e = refused(k.t.sign(ec_priv, &ecdsa(), b"msg"), "sign with a verify grant");
        assert!(matches!(e, Error::KeyFunctionNotPermitted(_)), "{e:?}");
        let e = refused(k.t.decrypt(aes_k, &gcm(), &ct), "decrypt with an encrypt grant");
        assert!(matches!(e, Error::KeyFunctionNotPermitted(_)), "{e:?}");
        let e = refused(k.t.prepare(aes_k, Usage::Decrypt, &gcm()).map(|_| ()), "decrypt-init");
        assert!(matches!(e, Error::KeyFunctionNotPermitted(_)), "{e:?}");
        let peer = k.t.public_key(ec_pub).unwrap().raw().to_vec();
        let ecdh =
            Mechanism::Ecdh1Derive { kdf: EcdhKdf::Null, shared_data: vec![], public_data: peer };
        refused(k.t.derive_key(ec_priv, &ecdh, &secret_template(false, &[]), S), "derive");
        refused(k.t.export_secret(aes_k), "export");
        refused(k.t.attribute(aes_k, AttrType::Value), "read CKA_VALUE");
        // No management either.
        refused(k.t.set_attributes(aes_k, &[b(AttrType::Decrypt, true)]), "set CKA_DECRYPT");
        refused(k.t.destroy_object(aes_k), "destroy");
        refused(k.t.set_grant(aes_k, &to("alice"), Some(Ops::ALL)), "grant itself more");
    });
    // The grants are unchanged.
    as_(&officer, 1, || {
        assert_eq!(k.t.grants(aes_k).unwrap(), vec![(to("alice"), Ops::ENCRYPT)]);
    });
}

/// Attack 1: a copy, a derived and an unwrapped token object inherit the source's grants —
/// exactly, never more — and a copy only tightens attributes.
#[test]
fn attack1_copies_derivations_and_unwraps_never_grant_more() {
    let k = kernel(&SecurityPolicy::default());
    let officer = k.principal("officer");
    let alice = k.principal("alice");
    let (src, base, peer, w, target) = as_(&officer, 1, || {
        let src = aes(
            &k.t,
            "src",
            true,
            &[
                b(AttrType::Encrypt, true),
                b(AttrType::Decrypt, false),
                b(AttrType::Extractable, false),
                (AttrType::AllowedMechanisms, AttrValue::MechanismList(vec![0x1087])), // CKM_AES_GCM
            ],
        )
        .unwrap();
        let (_, base) = ec_pair(&k.t, "base", true, &[b(AttrType::Derive, true)]).unwrap();
        let (peer, _) = ec_pair(&k.t, "peer", false, &[]).unwrap();
        let w =
            aes(&k.t, "kek", true, &[b(AttrType::Wrap, true), b(AttrType::Unwrap, true)]).unwrap();
        let target = aes(
            &k.t,
            "target",
            true,
            &[
                b(AttrType::Extractable, true),
                b(AttrType::Encrypt, true),
                b(AttrType::Decrypt, true),
            ],
        )
        .unwrap();
        k.t.set_grant(src, &to("alice"), Some(Ops::ENCRYPT)).unwrap();
        k.t.set_grant(base, &to("alice"), Some(Ops::DERIVE)).unwrap();
        k.t.set_grant(w, &to("alice"), Some(Ops::UNWRAP)).unwrap();
        (src, base, peer, w, target)
    });
    let (copy, derived, unwrapped) = as_(&officer, 1, || {
        // Copies never widen usage, the mechanism list, extractability or sensitivity.
        for (tmpl, what) in [
            (vec![b(AttrType::Decrypt, true)], "gain CKA_DECRYPT"),
            (vec![b(AttrType::Sign, true)], "gain CKA_SIGN"),
            (vec![b(AttrType::Sensitive, false)], "lose CKA_SENSITIVE"),
            (vec![b(AttrType::Extractable, true)], "gain CKA_EXTRACTABLE"),
            (
                vec![(AttrType::AllowedMechanisms, AttrValue::MechanismList(vec![]))],
                "drop the mechanism list",
            ),
            (
                vec![(AttrType::AllowedMechanisms, AttrValue::MechanismList(vec![0x1087, 0x1081]))],
                "widen the mechanism list",
            ),
        ] {
            refused(k.t.copy_object(src, &tmpl, S), what);
        }
        let copy = k.t.copy_object(src, &[b(AttrType::Token, true), label("src-copy")], S).unwrap();
        let pd = k.t.public_key(peer).unwrap().raw().to_vec();
        let ecdh =
            Mechanism::Ecdh1Derive { kdf: EcdhKdf::Null, shared_data: vec![], public_data: pd };
        let derived =
            k.t.derive_key(base, &ecdh, &secret_template(true, &[b(AttrType::Decrypt, true)]), S)
                .unwrap();
        let wrapped = k.t.wrap_key(w, &kwp(), target).unwrap();
        let unwrapped =
            k.t.unwrap_key(
                w,
                &kwp(),
                &wrapped,
                &secret_template(true, &[b(AttrType::Decrypt, true), b(AttrType::Encrypt, true)]),
                S,
            )
            .unwrap();
        assert_eq!(k.t.grants(copy).unwrap(), k.t.grants(src).unwrap(), "copy");
        assert_eq!(k.t.grants(derived).unwrap(), k.t.grants(base).unwrap(), "derived");
        assert_eq!(k.t.grants(unwrapped).unwrap(), k.t.grants(w).unwrap(), "unwrapped");
        (copy, derived, unwrapped)
    });
    let ct = as_(&officer, 1, || k.t.encrypt(unwrapped, &gcm(), b"x").unwrap());
    as_(&alice, 2, || {
        // The copy: encrypt as before, nothing more.
        k.t.encrypt(copy, &gcm(), b"x").unwrap();
        refused(k.t.decrypt(copy, &gcm(), b"whatever-ciphertext"), "decrypt with the copy");
        // The derived key carries the base's DERIVE grant only: alice cannot decrypt with it.
        refused(k.t.decrypt(derived, &gcm(), &ct), "decrypt with the derived key");
        refused(k.t.encrypt(derived, &gcm(), b"x"), "encrypt with the derived key");
        // The unwrapped key carries the KEK's UNWRAP grant only.
        refused(k.t.decrypt(unwrapped, &gcm(), &ct), "decrypt with the unwrapped key");
        // A crypto user's own derivation or unwrap may not land on the token.
        let pd = k.t.public_key(peer);
        assert!(pd.is_err(), "alice does not see the officer's session key");
        let wrapped = [0u8; 40];
        let e = refused(
            k.t.unwrap_key(w, &kwp(), &wrapped, &secret_template(true, &[]), S),
            "unwrap to the token",
        );
        assert!(
            matches!(
                e,
                Error::ActionProhibited(_) | Error::WrappedKeyInvalid | Error::EncryptedDataInvalid
            ),
            "{e:?}"
        );
        let _ = base;
    });
}

/// Attack 2: a session object belongs to the login that made it — invisible to every other
/// login (other users, the officer, and the same user's other logins) by handle, by label and
/// by search; a label resolves among the caller's visible objects, token objects first.
#[test]
fn attack2_session_objects_are_invisible_to_other_logins() {
    let k = kernel(&SecurityPolicy::default());
    let officer = k.principal("officer");
    let alice = k.principal("alice");
    let bob = k.principal("bob");
    let token_key = as_(&officer, 10, || {
        aes(&k.t, "payments", true, &[b(AttrType::Encrypt, true), b(AttrType::Decrypt, true)])
            .unwrap()
    });
    // alice squats the officer's label with a session key of a value she knows.
    let squat = as_(&alice, 20, || {
        import_aes(
            &k.t,
            "payments",
            false,
            &[0x41; 32],
            &[b(AttrType::Encrypt, true), b(AttrType::Decrypt, true)],
        )
        .unwrap()
    });
    let by_label =
        |p: &Principal, login: u64| as_(p, login, || k.t.find(&[label("payments")]).unwrap());
    assert_eq!(
        by_label(&officer, 10),
        vec![token_key],
        "the officer's label resolves to the token key"
    );
    assert_eq!(by_label(&officer, 11), vec![token_key]);
    assert_eq!(by_label(&alice, 20), vec![squat], "alice sees her own session key only");
    assert!(by_label(&alice, 21).is_empty(), "alice's other login does not see it");
    assert!(by_label(&bob, 30).is_empty());
    for (p, login, who) in
        [(&officer, 10, "officer"), (&alice, 21, "alice, another login"), (&bob, 30, "bob")]
    {
        as_(p, login, || {
            assert!(
                !k.t.find(&[b(AttrType::Token, false)]).unwrap().contains(&squat),
                "{who}: search"
            );
            assert!(!k.t.find(&[]).unwrap().contains(&squat), "{who}: search all");
            for e in [
                k.t.encrypt(squat, &gcm(), b"x").map(|_| ()),
                k.t.object_info(squat).map(|_| ()),
                k.t.attribute(squat, AttrType::Label).map(|_| ()),
                k.t.set_attributes(squat, &[label("mine")]),
                k.t.copy_object(squat, &[], S).map(|_| ()),
                k.t.destroy_object(squat),
            ] {
                assert!(matches!(e, Err(Error::ObjectHandleInvalid)), "{who}: {e:?}");
            }
        });
    }
    // Still alice's, intact.
    as_(&alice, 20, || k.t.encrypt(squat, &gcm(), b"x").unwrap());
    // The officer's session objects are equally invisible to alice.
    let officers = as_(&officer, 10, || aes(&k.t, "officer-session", false, &[]).unwrap());
    as_(&alice, 20, || {
        assert!(matches!(k.t.object_info(officers), Err(Error::ObjectHandleInvalid)));
        assert!(matches!(k.t.destroy_object(officers), Err(Error::ObjectHandleInvalid)));
    });
}

/// Attack 8 (kernel): only the security officer sets CKA_TRUSTED — not a crypto officer, not a
/// crypto user, not the embedded CKU_USER — through any template: create, generate, copy,
/// set-attribute, unwrap, derive.
#[test]
fn attack8_only_the_security_officer_sets_trusted() {
    let k = kernel(&SecurityPolicy::default());
    let officer = k.principal("officer");
    let alice = k.principal("alice");
    let so2 = k.principal("so2");
    let (w, src, base, peer) = as_(&officer, 1, || {
        let w =
            aes(&k.t, "kek", true, &[b(AttrType::Wrap, true), b(AttrType::Unwrap, true)]).unwrap();
        let src = aes(&k.t, "src", true, &[b(AttrType::Extractable, true)]).unwrap();
        let (_, base) = ec_pair(&k.t, "base", true, &[b(AttrType::Derive, true)]).unwrap();
        let (peer, _) = ec_pair(&k.t, "peer", true, &[]).unwrap();
        k.t.set_grant(w, &to("alice"), Some(Ops::ALL)).unwrap();
        k.t.set_grant(base, &to("alice"), Some(Ops::ALL)).unwrap();
        k.t.set_grant(peer, &to("alice"), Some(Ops::ALL)).unwrap();
        (w, src, base, peer)
    });
    let wrapped = as_(&officer, 1, || k.t.wrap_key(w, &kwp(), src).unwrap());
    let trusted = b(AttrType::Trusted, true);
    let attempts = |token: bool| {
        let mut out: Vec<(&str, Result<(), Error>)> = Vec::new();
        out.push((
            "create",
            import_aes(&k.t, "t", token, &[3; 32], &[trusted.clone(), b(AttrType::Wrap, true)])
                .map(|_| ()),
        ));
        out.push((
            "generate",
            aes(&k.t, "t", token, &[trusted.clone(), b(AttrType::Wrap, true)]).map(|_| ()),
        ));
        let mine = aes(&k.t, "mine", false, &[b(AttrType::Wrap, true)]).unwrap();
        out.push(("copy", k.t.copy_object(mine, std::slice::from_ref(&trusted), S).map(|_| ())));
        out.push(("set-attribute", k.t.set_attributes(mine, std::slice::from_ref(&trusted))));
        out.push((
            "unwrap",
            k.t.unwrap_key(
                w,
                &kwp(),
                &wrapped,
                &secret_template(token, std::slice::from_ref(&trusted)),
                S,
            )
            .map(|_| ()),
        ));
        let pd = k.t.public_key(peer).unwrap().raw().to_vec();
        let ecdh =
            Mechanism::Ecdh1Derive { kdf: EcdhKdf::Null, shared_data: vec![], public_data: pd };
        out.push((
            "derive",
            k.t.derive_key(base, &ecdh, &secret_template(token, std::slice::from_ref(&trusted)), S)
                .map(|_| ()),
        ));
        out
    };
    for (who, p, token) in [
        ("crypto officer", &officer, true),
        ("crypto officer", &officer, false),
        ("crypto user", &alice, false),
    ] {
        as_(p, 5, || {
            for (op, r) in attempts(token) {
                assert!(
                    matches!(r, Err(Error::AttributeReadOnly(AttrType::Trusted))),
                    "{who} {op} (token {token}): {r:?}"
                );
            }
        });
    }
    assert!(
        as_(&officer, 1, || k.t.find(std::slice::from_ref(&trusted)).unwrap()).is_empty(),
        "no trusted object was made"
    );
    // The embedded CKU_USER (a crypto officer of its own token) is refused the same way.
    let (_pd, pin_path) = pin(SecurityPolicy::default());
    let t = Token::open(&pin_path).unwrap();
    t.login(UserType::User, &user()).unwrap();
    let r = import_aes(&t, "t", true, &[3; 32], std::slice::from_ref(&trusted));
    assert!(
        matches!(r, Err(Error::AttributeReadOnly(AttrType::Trusted))),
        "CKU_USER create: {r:?}"
    );
    let r = aes(&t, "t", false, std::slice::from_ref(&trusted));
    assert!(
        matches!(r, Err(Error::AttributeReadOnly(AttrType::Trusted))),
        "CKU_USER generate: {r:?}"
    );
    t.logout().unwrap();
    // The security officer may (a public wrapping key: the SO creates public objects only),
    // as a front-door principal and as the embedded CKU_SO.
    as_(&so2, 7, || {
        import_aes(
            &k.t,
            "so-kek",
            true,
            &[5; 32],
            &[trusted.clone(), b(AttrType::Private, false), b(AttrType::Wrap, true)],
        )
        .unwrap();
    });
    t.login(UserType::So, &so()).unwrap();
    import_aes(&t, "so-kek-2", true, &[6; 32], &[trusted.clone(), b(AttrType::Private, false)])
        .unwrap();
}

/// Attack 8: a CKA_WRAP_WITH_TRUSTED key never leaves under a key the caller made.
#[test]
fn attack8_wrap_with_trusted_keys_leave_only_under_trusted_keys() {
    let k = kernel(&SecurityPolicy::default());
    let officer = k.principal("officer");
    as_(&officer, 1, || {
        let guarded = aes(
            &k.t,
            "guarded",
            true,
            &[b(AttrType::Extractable, true), b(AttrType::WrapWithTrusted, true)],
        )
        .unwrap();
        let mine = import_aes(&k.t, "known", false, &[9; 32], &[b(AttrType::Wrap, true)]).unwrap();
        let e = refused(k.t.wrap_key(mine, &kwp(), guarded), "wrap under a known key");
        assert!(matches!(e, Error::KeyUnextractable(_)), "{e:?}");
        // Nor can the flag be dropped on the key or on a copy of it.
        refused(
            k.t.set_attributes(guarded, &[b(AttrType::WrapWithTrusted, false)]),
            "drop WRAP_WITH_TRUSTED",
        );
        refused(
            k.t.copy_object(guarded, &[b(AttrType::WrapWithTrusted, false)], S),
            "copy without WRAP_WITH_TRUSTED",
        );
    });
}

/// Attack 9: with `wrap_requires_trusted`, a sensitive key never leaves under a key the caller
/// knows, and no key is unwrapped non-sensitive; without the policy (embedded default),
/// standard PKCS#11 behaviour, which is what makes this test able to fail.
#[test]
fn attack9_wrap_requires_trusted() {
    for policy_on in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        pin_store(
            &path,
            SecurityPolicy { wrap_requires_trusted: policy_on, ..SecurityPolicy::default() },
        );
        // The SO marks a (public) wrapping key trusted.
        let t = Token::open(&path).unwrap();
        t.login(UserType::So, &so()).unwrap();
        let trusted_kek = aes(
            &t,
            "trusted-kek",
            true,
            &[
                b(AttrType::Trusted, true),
                b(AttrType::Private, false),
                b(AttrType::Wrap, true),
                b(AttrType::Unwrap, true),
            ],
        )
        .unwrap();
        t.logout().unwrap();
        t.login(UserType::User, &user()).unwrap();
        let secret = aes(
            &t,
            "secret",
            true,
            &[
                b(AttrType::Extractable, true),
                b(AttrType::Decrypt, true),
                b(AttrType::Encrypt, true),
            ],
        )
        .unwrap();
        let known = import_aes(
            &t,
            "known",
            false,
            &[0x11; 32],
            &[b(AttrType::Wrap, true), b(AttrType::Unwrap, true)],
        )
        .unwrap();
        let under_known = t.wrap_key(known, &kwp(), secret);
        let non_sensitive = secret_template(
            false,
            &[b(AttrType::Sensitive, false), b(AttrType::Extractable, true)],
        );
        if policy_on {
            let e = refused(under_known, "wrap under a known key");
            assert!(matches!(e, Error::KeyUnextractable(_)), "{e:?}");
            let wrapped = t.wrap_key(trusted_kek, &kwp(), secret).unwrap();
            let e = refused(
                t.unwrap_key(trusted_kek, &kwp(), &wrapped, &non_sensitive, S),
                "unwrap non-sensitive",
            );
            assert!(matches!(e, Error::TemplateInconsistent(_)), "{e:?}");
            // Unwrapped without saying: sensitive, so its value does not come out.
            let back = t
                .unwrap_key(
                    trusted_kek,
                    &kwp(),
                    &wrapped,
                    &secret_template(false, &[b(AttrType::Extractable, true)]),
                    S,
                )
                .unwrap();
            refused(t.export_secret(back), "export the unwrapped key");
        } else {
            // Standard PKCS#11: the key leaves under the user's key and comes back readable.
            let wrapped = under_known.unwrap();
            let back = t.unwrap_key(known, &kwp(), &wrapped, &non_sensitive, S).unwrap();
            assert_eq!(t.export_secret(back).unwrap().expose_secret().len(), 32);
        }
    }
}

/// Attack 10: grants are keyed by user id and removed with the user; a new user of the same
/// name is another principal with no grant, and the deleted user's principal has no rights.
#[test]
fn attack10_grants_die_with_their_user() {
    let k = kernel(&SecurityPolicy::default());
    let officer = k.principal("officer");
    let bob = k.principal("bob");
    let key = as_(&officer, 1, || {
        let h = aes(&k.t, "k", true, &[b(AttrType::Encrypt, true)]).unwrap();
        k.t.set_grant(h, &to("bob"), Some(Ops::ENCRYPT)).unwrap();
        h
    });
    as_(&bob, 2, || k.t.encrypt(key, &gcm(), b"x").unwrap());
    assert!(as_(&k.so, 0, || k.t.delete_user("bob")).unwrap().is_some());
    as_(&officer, 1, || assert!(k.t.grants(key).unwrap().is_empty()));
    // The old principal (a session that outlived the user) can do nothing.
    as_(&bob, 2, || {
        assert!(matches!(k.t.encrypt(key, &gcm(), b"x"), Err(Error::ObjectHandleInvalid)));
        assert!(k.t.find(&[]).unwrap().iter().all(|h| *h != key));
        assert!(aes(&k.t, "s", false, &[]).is_err(), "no session objects either");
    });
    as_(&k.so, 0, || k.t.create_user("bob", Role::CryptoUser, b"bob-password", None)).unwrap();
    let bob2 = k.principal("bob");
    assert_ne!(bob2.id, bob.id, "a new id");
    as_(&bob2, 3, || {
        assert!(matches!(k.t.encrypt(key, &gcm(), b"x"), Err(Error::ObjectHandleInvalid)));
        assert!(!k.t.find(&[]).unwrap().contains(&key));
    });
    as_(&officer, 1, || assert!(k.t.grants(key).unwrap().is_empty()));
}

/// Attack 10: a demoted crypto officer loses its rights at once, in the sessions it already
/// has (the front door still holds the principal it authenticated).
/// While a tamper alarm is active, user and access-list administration is refused like every
/// other operation (only the security officer's alarm handling runs), and nothing changes.
#[test]
fn user_administration_is_refused_during_a_tamper_alarm() {
    let k = kernel(&SecurityPolicy::default());
    let officer = k.principal("officer");
    let key = as_(&officer, 1, || aes(&k.t, "k", true, &[b(AttrType::Encrypt, true)]).unwrap());
    k.t.tamper_signal("test: enclosure opened");
    let users_before = as_(&k.so, 0, || k.t.list_users().unwrap().len());
    as_(&k.so, 0, || {
        let r = k.t.create_user("mallory", Role::SecurityOfficer, b"mallory-password", None);
        assert!(matches!(r, Err(Error::TamperAlarm(_))), "{r:?}");
        assert!(matches!(k.t.delete_user("bob"), Err(Error::TamperAlarm(_))));
        assert!(matches!(
            k.t.set_user_role("bob", Role::CryptoOfficer),
            Err(Error::TamperAlarm(_))
        ));
        assert!(matches!(k.t.reset_password("bob", b"new-password-1"), Err(Error::TamperAlarm(_))));
        assert!(matches!(k.t.unlock_user("bob"), Err(Error::TamperAlarm(_))));
    });
    let r = as_(&officer, 1, || k.t.set_grant(key, &to("alice"), Some(Ops::ALL)));
    assert!(matches!(r, Err(Error::TamperAlarm(_))), "{r:?}");
    // Nothing changed: the officer clears the alarm and sees the same users.
    as_(&k.so, 0, || {
        k.t.clear_tamper_unsealed().unwrap();
        assert_eq!(k.t.list_users().unwrap().len(), users_before);
        assert!(k.t.list_users().unwrap().iter().all(|u| u.name != "mallory"));
    });
    assert!(as_(&officer, 1, || k.t.grants(key)).unwrap().is_empty());
}

#[test]
fn attack10_a_demoted_officer_loses_its_rights_at_once() {
    let k = kernel(&SecurityPolicy::default());
    let officer = k.principal("officer");
    let key = as_(&officer, 1, || aes(&k.t, "k", true, &[b(AttrType::Encrypt, true)]).unwrap());
    assert!(as_(&k.so, 0, || k.t.set_user_role("officer", Role::CryptoUser)).unwrap().is_some());
    as_(&officer, 1, || {
        assert!(aes(&k.t, "k2", true, &[]).is_err(), "create a token key");
        assert!(k.t.set_grant(key, &to("alice"), Some(Ops::ALL)).is_err(), "grant");
        assert!(k.t.encrypt(key, &gcm(), b"x").is_err(), "use an ungranted key");
        assert!(k.t.destroy_object(key).is_err(), "destroy");
        assert!(k.t.set_attributes(key, &[label("x")]).is_err(), "modify");
    });
    // A demoted security officer equally.
    let so2 = k.principal("so2");
    as_(&so2, 4, || k.t.create_user("eve", Role::CryptoUser, b"eve-password", None).unwrap());
    assert!(as_(&k.so, 0, || k.t.set_user_role("so2", Role::Auditor)).unwrap().is_some());
    as_(&so2, 4, || {
        assert!(k
            .t
            .create_user("mallory", Role::SecurityOfficer, b"mallory-password", None)
            .is_err());
        assert!(k.t.set_user_role("so2", Role::SecurityOfficer).is_err());
        assert!(k.t.delete_user("eve").is_err());
    });
}

/// The same when the demotion happens through another token over the same store (another
/// front-door process): the gate re-reads the role before creating.
#[test]
fn attack10_a_demotion_by_another_token_applies_at_once() {
    // Each demotion on a store of its own: any call that refreshes this token's view of the
    // store in between would hide the other case.
    let demoted_by_another_token = |name: &str, role: Role| {
        let k = kernel(&SecurityPolicy::default());
        let p = k.principal(name);
        // The principal acts once (its current role is now known to this token).
        as_(&p, 1, || match p.role {
            Role::SecurityOfficer => assert_eq!(k.t.list_users().unwrap().len(), 5),
            _ => {
                aes(&k.t, "k", true, &[]).unwrap();
            }
        });
        let other = open_unsealed(&k.path, &k.shares);
        let admin = admin(&other);
        assert!(as_(&admin, 0, || other.set_user_role(name, role)).unwrap().is_some());
        std::thread::sleep(std::time::Duration::from_millis(300));
        as_(&p, 1, || match p.role {
            Role::SecurityOfficer => {
                k.t.create_user("mallory", Role::SecurityOfficer, b"mallory-password", None)
                    .map(|_| ())
            }
            _ => aes(&k.t, "k2", true, &[]).map(|_| ()),
        })
    };
    let officer = demoted_by_another_token("officer", Role::CryptoUser);
    let so = demoted_by_another_token("so2", Role::Auditor);
    assert!(
        officer.is_err() && so.is_err(),
        "after a demotion by another token: the former officer creates a token key: \
         {officer:?}; the former SO creates a security officer: {so:?}"
    );
}

/// A principal a front door made up (an id that is no user of the store, or the id of the
/// embedded SO) has no role: it can neither administer users nor touch keys.
#[test]
fn forged_principals_get_no_rights_on_a_quorum_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let shares = quorum_store(&path, &SecurityPolicy::default());
    let t = open_unsealed(&path, &shares);
    let keeper = keeper(&t);
    let key = as_(&keeper, 1, || aes(&t, "k", true, &[b(AttrType::Encrypt, true)]).unwrap());
    // The unsealed token itself (no caller) has no rights.
    assert!(t.create_user("so", Role::SecurityOfficer, b"so-password", None).is_err());
    assert!(aes(&t, "x", true, &[]).is_err());
    assert!(t.encrypt(key, &gcm(), b"x").is_err());
    for (id, role) in [
        (UserId([0x42; 16]), Role::SecurityOfficer),
        (UserId([0x43; 16]), Role::CryptoOfficer),
        (bulwark_core::kernel::EMBEDDED_SO, Role::SecurityOfficer),
        (bulwark_core::kernel::EMBEDDED_USER, Role::CryptoOfficer),
    ] {
        let p = Principal { id, name: "forged".into(), role };
        as_(&p, 9, || {
            assert!(
                t.create_user("mallory", Role::SecurityOfficer, b"mallory-password", None).is_err(),
                "{role:?}"
            );
            assert!(t.find(&[]).unwrap().is_empty(), "{role:?} sees keys");
            assert!(t.encrypt(key, &gcm(), b"x").is_err(), "{role:?} uses a key");
            assert!(aes(&t, "x", true, &[]).is_err(), "{role:?} creates a token key");
            assert!(t.set_grant(key, &to("mallory"), Some(Ops::ALL)).is_err());
        });
    }
}

/// Attack 7: parallel wrong passwords never check more passwords than the limit; after the
/// limit the right password is refused, also when it comes in a parallel burst.
#[test]
fn attack7_parallel_wrong_passwords_never_check_more_than_the_limit() {
    const LIMIT: u32 = 5;
    const THREADS: usize = 16;
    let k = Arc::new(kernel(&SecurityPolicy::default()));
    k.t.set_login_failure_limit(LIMIT);
    let burst = |passwords: Vec<&'static [u8]>| -> Vec<Result<Principal, Error>> {
        let gate = Arc::new(Barrier::new(passwords.len()));
        let hs: Vec<_> = passwords
            .into_iter()
            .map(|pw| {
                let (k, gate) = (k.clone(), gate.clone());
                std::thread::spawn(move || {
                    gate.wait();
                    k.t.authenticate(&cred("bob", pw, None))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    };
    let results = burst(vec![b"wrong-password"; THREADS]);
    // A PinIncorrect is a password that was checked; PinLocked was refused unchecked.
    let checked = results.iter().filter(|r| matches!(r, Err(Error::PinIncorrect))).count();
    let locked = results.iter().filter(|r| matches!(r, Err(Error::PinLocked))).count();
    println!("{THREADS} parallel wrong passwords, limit {LIMIT}: {checked} checked, {locked} refused unchecked");
    assert!(checked <= LIMIT as usize, "{checked} passwords checked: {results:?}");
    assert_eq!(checked + locked, THREADS, "{results:?}");
    assert!(matches!(k.t.authenticate(&cred("bob", b"bob-password", None)), Err(Error::PinLocked)));
    let users = as_(&k.so, 0, || k.t.list_users()).unwrap();
    assert!(users.iter().any(|u| u.name == "bob" && u.locked), "bob is shown locked: {users:?}");
    // The right password in a parallel burst after the limit: refused too.
    let mut pws: Vec<&'static [u8]> = vec![b"wrong-password"; THREADS - 1];
    pws.insert(THREADS / 2, b"bob-password");
    let results = burst(pws);
    assert!(results.iter().all(|r| matches!(r, Err(Error::PinLocked))), "{results:?}");
    // Another user is not affected; the SO's unlock restores bob.
    k.t.authenticate(&cred("officer", b"officer-password", None)).unwrap();
    assert!(as_(&k.so, 0, || k.t.unlock_user("bob")).unwrap());
    k.t.authenticate(&cred("bob", b"bob-password", None)).unwrap();
}

/// The lockout can also not be raced with the right password in a burst that starts at the
/// limit minus one: at most LIMIT passwords are checked in total, whichever they are.
#[test]
fn attack7_a_burst_around_the_limit_checks_at_most_the_limit() {
    const LIMIT: u32 = 5;
    let k = Arc::new(kernel(&SecurityPolicy::default()));
    k.t.set_login_failure_limit(LIMIT);
    for _ in 0..LIMIT - 1 {
        assert!(matches!(
            k.t.authenticate(&cred("bob", b"wrong-password", None)),
            Err(Error::PinIncorrect)
        ));
    }
    let gate = Arc::new(Barrier::new(12));
    let hs: Vec<_> = (0..12)
        .map(|i| {
            let (k, gate) = (k.clone(), gate.clone());
            std::thread::spawn(move || {
                gate.wait();
                let pw: &[u8] = if i == 6 { b"bob-password" } else { b"wrong-password" };
                (i, k.t.authenticate(&cred("bob", pw, None)))
            })
        })
        .collect();
    let results: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    let checked_wrong =
        results.iter().filter(|(_, r)| matches!(r, Err(Error::PinIncorrect))).count();
    let right = &results.iter().find(|(i, _)| *i == 6).unwrap().1;
    // One slot was left: either the right password took it (success) or one wrong one did
    // (then the right one is locked out). Never both, never more.
    match right {
        Ok(_) => assert_eq!(checked_wrong, 0, "{results:?}"),
        Err(Error::PinLocked) => assert_eq!(checked_wrong, 1, "{results:?}"),
        other => panic!("right password: {other:?}"),
    }
}

/// Attack 7, embedded: 30 parallel wrong PINs (each through its own token, as 30 processes
/// would) run at most MAX_PIN_FAILURES PIN checks; the right PIN is then refused.
#[test]
fn attack7_parallel_wrong_pins_never_check_more_than_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("t.db");
    pin_store(&path, SecurityPolicy::default());
    let burst = |path: &Path, pin: &'static [u8], n: usize| -> Vec<Result<(), Error>> {
        let gate = Arc::new(Barrier::new(n));
        let hs: Vec<_> = (0..n)
            .map(|_| {
                let (p, gate) = (path.to_owned(), gate.clone());
                std::thread::spawn(move || {
                    let t = Token::open(&p).unwrap();
                    gate.wait();
                    t.login(UserType::User, &bulwark_core::secret::Pin::new(pin.to_vec()))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    };
    let results = burst(&path, b"wrong-pin", 30);
    let checked = results.iter().filter(|r| matches!(r, Err(Error::PinIncorrect))).count();
    let locked = results.iter().filter(|r| matches!(r, Err(Error::PinLocked))).count();
    println!("30 parallel wrong PINs: {checked} checked, {locked} refused unchecked");
    assert!(checked <= MAX_PIN_FAILURES as usize, "{checked} PINs checked");
    assert_eq!(checked + locked, 30, "{results:?}");
    let t = Token::open(&path).unwrap();
    assert!(matches!(t.login(UserType::User, &user()), Err(Error::PinLocked)));
    assert!(t.status().unwrap().user_pin_failures > MAX_PIN_FAILURES);
    // The right PIN inside a burst is refused too.
    let results = burst(&path, b"user-pin-1234", 8);
    assert!(results.iter().all(|r| matches!(r, Err(Error::PinLocked))), "{results:?}");
}

/// TOTP codes are single use: a code (of any step in the window) accepted once is refused
/// afterwards, also when it is presented by several logins at the same time.
#[test]
fn totp_codes_are_single_use() {
    let k = Arc::new(kernel(&SecurityPolicy::default()));
    let step = now_secs() / 30;
    let now_code = totp_code(TOTP_SECRET, step);
    k.t.authenticate(&cred("alice", b"alice-password", Some(&now_code))).unwrap();
    let r = k.t.authenticate(&cred("alice", b"alice-password", Some(&now_code)));
    assert!(matches!(r, Err(Error::PinIncorrect)), "replayed code: {r:?}");
    let prev = totp_code(TOTP_SECRET, step - 1);
    assert!(
        k.t.authenticate(&cred("alice", b"alice-password", Some(&prev))).is_err(),
        "older step"
    );
    assert!(k.t.authenticate(&cred("alice", b"alice-password", None)).is_err(), "no code");
    // The next step's code, presented by 8 logins at once: exactly one gets in.
    let next = totp_code(TOTP_SECRET, step + 1);
    let gate = Arc::new(Barrier::new(8));
    let hs: Vec<_> = (0..8)
        .map(|_| {
            let (k, gate, code) = (k.clone(), gate.clone(), next.clone());
            std::thread::spawn(move || {
                gate.wait();
                k.t.authenticate(&cred("alice", b"alice-password", Some(&code))).is_ok()
            })
        })
        .collect();
    let ok = hs.into_iter().map(|h| h.join().unwrap()).filter(|ok| *ok).count();
    // (If the clock moved into a new step meanwhile, `next` may be outside the window.)
    assert!(ok <= 1, "{ok} logins with one code");
    assert!(k.t.authenticate(&cred("alice", b"alice-password", Some(&next))).is_err());
}

/// An approval digest is used once, also across a reopen of the (quorum) store.
#[test]
fn an_approval_is_single_use_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let shares = quorum_store(&path, &SecurityPolicy::default());
    let digest = [0x5a; 32];
    let until = now_secs() + 3600;
    {
        let t = open_unsealed(&path, &shares);
        t.use_approval(&digest, until, now_secs()).unwrap();
        assert!(matches!(
            t.use_approval(&digest, until, now_secs()),
            Err(Error::ActionProhibited(_))
        ));
        t.use_approval(&[0x5b; 32], until, now_secs()).unwrap();
    }
    let t = open_unsealed(&path, &shares);
    assert!(matches!(t.use_approval(&digest, until, now_secs()), Err(Error::ActionProhibited(_))));
    assert!(matches!(
        t.use_approval(&[0x5b; 32], until, now_secs()),
        Err(Error::ActionProhibited(_))
    ));
    t.use_approval(&[0x5c; 32], until, now_secs()).unwrap();
}

/// The one gate also covers the data calls on a key prepared before a revocation (issue 9,
/// "one gate: every operation — including the data calls of C_Sign/C_Decrypt on a prepared
/// key"): a key prepared while the grant existed must stop working once it is revoked.
#[test]
fn a_prepared_key_stops_working_when_its_grant_is_revoked() {
    let k = kernel(&SecurityPolicy::default());
    let officer = k.principal("officer");
    let bob = k.principal("bob");
    let key = as_(&officer, 1, || {
        let h = aes(&k.t, "k", true, &[b(AttrType::Encrypt, true)]).unwrap();
        k.t.set_grant(h, &to("bob"), Some(Ops::ENCRYPT)).unwrap();
        h
    });
    let prepared = as_(&bob, 2, || k.t.prepare(key, Usage::Encrypt, &gcm()).unwrap());
    as_(&bob, 2, || prepared.encrypt(&gcm(), b"while granted").unwrap());
    as_(&officer, 1, || k.t.set_grant(key, &to("bob"), None).unwrap());
    let r = as_(&bob, 2, || prepared.encrypt(&gcm(), b"after revocation"));
    assert!(r.is_err(), "the prepared key still encrypts after the revocation");
}
