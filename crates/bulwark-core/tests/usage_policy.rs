//! Per-key usage policy (docs/lifecycle.md, "Usage policy"): quotas exact on every use path
//! (one-shot, prepared keys, batches, derive/wrap/unwrap) and under 16 parallel callers on two
//! connections; the rate limit on a hand-set clock; allowed principals; per-use quorum with
//! single-use approvals; who may change a policy; the vendor attributes; tampering with the
//! stored policy or counter.

// Handles are small row ids; short names are the tokens, keys and paths of each scene.
#![allow(missing_docs, clippy::too_many_lines, clippy::many_single_char_names)]

mod attack_support;

use std::path::Path;
use std::sync::Arc;

use attack_support::*;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use bulwark_core::attr::{AttrType, AttrValue};
use bulwark_core::hsm::Hsm;
use bulwark_core::kernel::{as_caller, Ops, Role, EMBEDDED_SO, EMBEDDED_USER};
use bulwark_core::lifecycle::ManualClock;
use bulwark_core::mechanism::{DigestAlg, KeyGenMechanism, Mechanism};
use bulwark_core::token::{
    use_approval_digest, with_use_approvals, Rate, Usage, UsagePolicy, UseApproval, UseApprovals,
    UseApprover,
};
use bulwark_core::{Error, Token, UserType};

const T0: u64 = 1_767_225_600;

fn store(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("t.db");
    Token::init_with(&p, "t", &so(), Some(&user()), FAST).unwrap();
    p
}

fn open(p: &Path) -> Token {
    let t = Token::open(p).unwrap();
    t.login(UserType::User, &user()).unwrap();
    t
}

fn hmac_key(t: &Token, l: &str) -> u64 {
    let tmpl = [
        b(AttrType::Token, true),
        label(l),
        ulong(AttrType::ValueLen, 32),
        b(AttrType::Sign, true),
        b(AttrType::Verify, true),
        b(AttrType::Derive, true),
    ];
    t.generate_key(KeyGenMechanism::GenericSecretKeyGen, &tmpl, S).unwrap()
}

fn mac() -> Mechanism {
    Mechanism::Hmac(DigestAlg::Sha256)
}

fn quota(n: u64) -> UsagePolicy {
    UsagePolicy { max_uses: Some(n), ..UsagePolicy::default() }
}

fn uses(t: &Token, h: u64) -> u64 {
    match t.attribute(h, AttrType::BulwarkUseCount).unwrap() {
        AttrValue::Ulong(n) => n,
        v => panic!("{v:?}"),
    }
}

fn is_limit<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::UsageLimit(_)))
}

/// The quota counts every path: one-shot calls, each data call of a prepared key, batches (n
/// items count n; a batch that does not fit is refused whole), and a refused call counts
/// nothing. The count and the quota read back as vendor attributes.
#[test]
fn the_quota_counts_every_use_path() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(&store(dir.path()));
    let h = hmac_key(&t, "k");
    t.set_usage_policy(&[h], &quota(10)).unwrap();
    assert_eq!(t.attribute(h, AttrType::BulwarkMaxUses).unwrap(), AttrValue::Ulong(10));
    assert_eq!(uses(&t, h), 0);

    // One-shot: 2 uses.
    let tag = t.sign(h, &mac(), b"m").unwrap();
    t.verify(h, &mac(), b"m", &tag).unwrap();
    assert_eq!(uses(&t, h), 2);

    // Prepared: C_SignInit is not a use, each C_Sign is.
    let p = t.prepare(h, Usage::Sign, &mac()).unwrap();
    assert_eq!(uses(&t, h), 2);
    for _ in 0..3 {
        p.sign(&mac(), b"m").unwrap();
    }
    assert_eq!(uses(&t, h), 5);

    // Batch of 4: 4 uses; then a batch of 2 with 1 left is refused and counts nothing.
    t.sign_batch(h, &mac(), &[b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]).unwrap();
    assert_eq!(uses(&t, h), 9);
    let r = t.sign_batch(h, &mac(), &[b"a".to_vec(), b"b".to_vec()]);
    assert!(is_limit(&r), "{r:?}");
    assert_eq!(uses(&t, h), 9);

    // A use the gate refuses for another reason (wrong mechanism) spends nothing.
    assert!(t.sign(h, &gcm(), b"m").is_err());
    assert_eq!(uses(&t, h), 9);

    // The last use, through the prepared key; then every path is refused.
    p.sign(&mac(), b"m").unwrap();
    assert_eq!(uses(&t, h), 10);
    assert!(is_limit(&p.sign(&mac(), b"m")));
    assert!(is_limit(&t.sign(h, &mac(), b"m")));
    assert!(is_limit(&t.prepare(h, Usage::Sign, &mac()).map(|_| ())));
    assert_eq!(uses(&t, h), 10);

    // A crypto officer raises the quota: the count stays.
    t.set_usage_policy(&[h], &quota(11)).unwrap();
    t.sign(h, &mac(), b"m").unwrap();
    assert!(is_limit(&t.sign(h, &mac(), b"m")));
    assert_eq!(uses(&t, h), 11);

    // The count survives a reopen.
    drop(p);
    drop(t);
    let t = open(&dir.path().join("t.db"));
    assert_eq!(uses(&t, h), 11);
    assert!(is_limit(&t.sign(h, &mac(), b"m")));

    // Policy changes and refusals are audited.
    drop(t);
    let so_t = Token::open(&dir.path().join("t.db")).unwrap();
    so_t.login(UserType::So, &so()).unwrap();
    let lines = so_t.audit_export(0).unwrap().join("\n");
    assert!(lines.contains("\"key-policy\""), "{lines}");
    assert!(lines.contains("max-uses=11"), "{lines}");
    assert!(lines.contains("usage-limit"), "{lines}");
}

/// Derive, wrap and unwrap are uses of the base / wrapping / unwrapping key.
#[test]
fn derive_wrap_and_unwrap_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(&store(dir.path()));
    let base = hmac_key(&t, "base");
    t.set_usage_policy(&[base], &quota(1)).unwrap();
    let hkdf = Mechanism::Hkdf {
        extract: true,
        expand: true,
        hash: DigestAlg::Sha256,
        salt: None,
        info: b"x".to_vec(),
    };
    let tmpl =
        [b(AttrType::Token, false), ulong(AttrType::KeyType, 0x10), ulong(AttrType::ValueLen, 32)];
    t.derive_key(base, &hkdf, &tmpl, S).unwrap();
    assert_eq!(uses(&t, base), 1);
    assert!(is_limit(&t.derive_key(base, &hkdf, &tmpl, S)));

    let kek = aes(&t, "kek", true, &[b(AttrType::Wrap, true), b(AttrType::Unwrap, true)]).unwrap();
    let target = aes(&t, "target", true, &[b(AttrType::Extractable, true)]).unwrap();
    t.set_usage_policy(&[kek], &quota(2)).unwrap();
    let kwp = Mechanism::AesKeyWrapPad;
    let wrapped = t.wrap_key(kek, &kwp, target).unwrap();
    let ut =
        [b(AttrType::Token, false), ulong(AttrType::KeyType, 0x1f), b(AttrType::Encrypt, true)];
    t.unwrap_key(kek, &kwp, &wrapped, &ut, S).unwrap();
    assert_eq!(uses(&t, kek), 2);
    assert!(is_limit(&t.wrap_key(kek, &kwp, target)));
    assert!(is_limit(&t.unwrap_key(kek, &kwp, &wrapped, &ut, S)));
}

/// A metered key neither leaves the HSM (wrapped or in plaintext) nor is copied: either
/// would give it a fresh count.
#[test]
fn metered_keys_are_neither_copied_nor_exported() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(&store(dir.path()));
    let kek = aes(&t, "kek", true, &[b(AttrType::Wrap, true)]).unwrap();
    let k = aes(&t, "k", true, &[b(AttrType::Extractable, true), b(AttrType::Sensitive, false)])
        .unwrap();
    t.wrap_key(kek, &Mechanism::AesKeyWrapPad, k).unwrap();
    t.set_usage_policy(&[k], &quota(5)).unwrap();
    let r = t.wrap_key(kek, &Mechanism::AesKeyWrapPad, k);
    assert!(matches!(r, Err(Error::KeyUnextractable(_))), "{r:?}");
    assert!(matches!(t.export_secret(k), Err(Error::KeyUnextractable(_))));
    let r = t.copy_object(k, &[], S);
    assert!(matches!(r, Err(Error::ActionProhibited(_))), "{r:?}");
    // The policy attributes are read-only through C_SetAttributeValue.
    let r = t.set_attributes(k, &[ulong(AttrType::BulwarkMaxUses, 1000)]);
    assert!(matches!(r, Err(Error::AttributeReadOnly(_))), "{r:?}");
    let r = t.set_attributes(k, &[ulong(AttrType::BulwarkUseCount, 0)]);
    assert!(matches!(r, Err(Error::AttributeReadOnly(_))), "{r:?}");
    // ... and may not be given in a template.
    let r = aes(&t, "k2", true, &[ulong(AttrType::BulwarkMaxUses, 5)]);
    assert!(matches!(r, Err(Error::AttributeReadOnly(_))), "{r:?}");
}

/// 16 threads on two connections (as two processes would have) race for a quota of 100: exactly
/// 100 uses succeed, every other one is refused, and the stored count is 100.
#[test]
fn the_quota_is_exact_under_sixteen_parallel_callers() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let t1 = open(&p);
    let t2 = open(&p);
    let h = hmac_key(&t1, "k");
    t1.set_usage_policy(&[h], &quota(100)).unwrap();
    let ok = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let t = if i % 2 == 0 { t1.clone() } else { t2.clone() };
            let ok = ok.clone();
            std::thread::spawn(move || {
                // Half one-shot, half through a prepared key.
                let prepared = (i % 4 < 2).then(|| t.prepare(h, Usage::Sign, &mac()).unwrap());
                for _ in 0..10 {
                    let r = match &prepared {
                        Some(p) => p.sign(&mac(), b"m"),
                        None => t.sign(h, &mac(), b"m"),
                    };
                    match r {
                        Ok(_) => {
                            ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(Error::UsageLimit(_)) => {}
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(ok.load(std::sync::atomic::Ordering::SeqCst), 100);
    assert_eq!(uses(&t1, h), 100);
    assert_eq!(uses(&t2, h), 100);
}

/// The rate limit is a token bucket in the store: `3/10s` allows a burst of 3, then one use
/// every 10/3 s; it holds across connections.
#[test]
fn the_rate_limit_follows_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let clock = ManualClock::new(T0);
    let t = open(&p);
    t.set_clock(clock.clone());
    let t2 = open(&p);
    t2.set_clock(clock.clone());
    let h = hmac_key(&t, "k");
    let pol = UsagePolicy { rate: Some(Rate::parse("3/10s").unwrap()), ..UsagePolicy::default() };
    t.set_usage_policy(&[h], &pol).unwrap();
    assert_eq!(t.attribute(h, AttrType::BulwarkRateUses).unwrap(), AttrValue::Ulong(3));
    assert_eq!(t.attribute(h, AttrType::BulwarkRatePeriod).unwrap(), AttrValue::Ulong(10));
    t.sign(h, &mac(), b"m").unwrap();
    t2.sign(h, &mac(), b"m").unwrap();
    t.sign(h, &mac(), b"m").unwrap();
    let r = t2.sign(h, &mac(), b"m");
    assert!(is_limit(&r), "{r:?}");
    clock.set(T0 + 3);
    assert!(is_limit(&t.sign(h, &mac(), b"m")));
    clock.set(T0 + 4);
    t.sign(h, &mac(), b"m").unwrap();
    assert!(is_limit(&t.sign(h, &mac(), b"m")));
    clock.set(T0 + 1000);
    for _ in 0..3 {
        t2.sign(h, &mac(), b"m").unwrap();
    }
    assert!(is_limit(&t2.sign(h, &mac(), b"m")));
    assert_eq!(uses(&t, h), 7);
}

/// Allowed principals are ids: on an embedded store the normal user is `EMBEDDED_USER`; a
/// policy naming someone else refuses the user, whatever its role.
#[test]
fn principals_bind_embedded_users() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(&store(dir.path()));
    let h = hmac_key(&t, "k");
    let only_user = UsagePolicy { principals: vec![EMBEDDED_USER], ..UsagePolicy::default() };
    t.set_usage_policy(&[h], &only_user).unwrap();
    t.sign(h, &mac(), b"m").unwrap();
    let only_so = UsagePolicy { principals: vec![EMBEDDED_SO], ..UsagePolicy::default() };
    t.set_usage_policy(&[h], &only_so).unwrap();
    let r = t.sign(h, &mac(), b"m");
    assert!(matches!(r, Err(Error::KeyFunctionNotPermitted(_))), "{r:?}");
    // Not metered: no count is kept for a principals-only policy.
    assert_eq!(uses(&t, h), 0);
}

/// On a daemon store: principals by user id; a crypto user granted the key may only tighten
/// its policy, a crypto officer changes it freely; a user outside the list is refused even
/// with a grant.
#[test]
fn principals_and_who_changes_a_policy() {
    let dir = tempfile::tempdir().unwrap();
    let sp = dir.path().join("q.db");
    let t = open_unsealed(&sp, &quorum_store(&sp, &bulwark_core::token::SecurityPolicy::default()));
    let so = admin(&t);
    let (carol_id, dave_id) = as_caller(caller(&so, 0), || {
        (
            t.create_user("carol", Role::CryptoUser, b"carol-password", None).unwrap(),
            t.create_user("dave", Role::CryptoUser, b"dave-password", None).unwrap(),
        )
    });
    let login = |name: &str, pw: &[u8]| {
        t.authenticate(&bulwark_core::token::Credentials {
            name,
            password: pw,
            totp: None,
            cert_sha256: None,
        })
        .unwrap()
    };
    let carol = login("carol", b"carol-password");
    let dave = login("dave", b"dave-password");
    let officer = keeper(&t);
    let h = as_caller(caller(&officer, 1), || {
        let h = hmac_key(&t, "shared");
        t.set_grant(h, &to("carol"), Some(Ops::ALL)).unwrap();
        t.set_grant(h, &to("dave"), Some(Ops::ALL)).unwrap();
        let p = UsagePolicy {
            principals: vec![carol_id, dave_id],
            max_uses: Some(100),
            ..UsagePolicy::default()
        };
        t.set_usage_policy(&[h], &p).unwrap();
        h
    });
    as_caller(caller(&carol, 2), || t.sign(h, &mac(), b"m")).unwrap();
    as_caller(caller(&dave, 3), || t.sign(h, &mac(), b"m")).unwrap();
    // The officer is not listed: refused too.
    let r = as_caller(caller(&officer, 1), || t.sign(h, &mac(), b"m"));
    assert!(matches!(r, Err(Error::KeyFunctionNotPermitted(_))), "{r:?}");

    // Carol tightens: only herself, 50 uses.
    let tight =
        UsagePolicy { principals: vec![carol_id], max_uses: Some(50), ..UsagePolicy::default() };
    as_caller(caller(&carol, 2), || t.set_usage_policy(&[h], &tight)).unwrap();
    let r = as_caller(caller(&dave, 3), || t.sign(h, &mac(), b"m"));
    assert!(matches!(r, Err(Error::KeyFunctionNotPermitted(_))), "{r:?}");
    // Loosening is refused to her, and changes nothing.
    let loose = UsagePolicy { principals: vec![carol_id], ..UsagePolicy::default() };
    let r = as_caller(caller(&carol, 2), || t.set_usage_policy(&[h], &loose));
    assert!(matches!(r, Err(Error::ActionProhibited(_))), "{r:?}");
    assert_eq!(as_caller(caller(&officer, 1), || t.usage_policy(h)).unwrap().0, tight);
    // Dave, no longer listed, may not change it at all.
    let r = as_caller(caller(&dave, 3), || t.set_usage_policy(&[h], &quota(1)));
    assert!(r.is_err(), "{r:?}");
    // The officer clears it.
    as_caller(caller(&officer, 1), || t.set_usage_policy(&[h], &UsagePolicy::default())).unwrap();
    as_caller(caller(&dave, 3), || t.sign(h, &mac(), b"m")).unwrap();
    // The security officer manages no private key's policy.
    let r = as_caller(caller(&so, 0), || t.set_usage_policy(&[h], &quota(1)));
    assert!(r.is_err(), "{r:?}");
}

fn approver(name: &str) -> (Ed25519KeyPair, UseApprover) {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let kp = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
    let a = UseApprover { name: name.into(), public_key: hex::encode(kp.public_key().as_ref()) };
    (kp, a)
}

/// Per-use quorum: without approvals the use is refused naming the request; with M valid
/// approvals of distinct approvers it runs once; the same approvals never serve again; a
/// forged, foreign or expired approval does not count.
#[test]
fn per_use_quorum_needs_fresh_approvals() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let t = open(&p);
    let clock = ManualClock::new(T0);
    t.set_clock(clock.clone());
    let h = hmac_key(&t, "root");
    let (k1, a1) = approver("alice");
    let (k2, a2) = approver("bob");
    let (k3, _) = approver("mallory");
    // Only the security officer sets the approver set.
    assert!(matches!(
        t.set_use_approvers(&[a1.clone(), a2.clone()]),
        Err(Error::ActionProhibited(_))
    ));
    let so_t = Token::open(&p).unwrap();
    so_t.login(UserType::So, &so()).unwrap();
    so_t.set_use_approvers(&[a1, a2]).unwrap();
    drop(so_t);
    assert_eq!(t.use_approvers().unwrap().len(), 2);

    t.set_usage_policy(&[h], &UsagePolicy { quorum: 2, ..UsagePolicy::default() }).unwrap();
    assert_eq!(t.attribute(h, AttrType::BulwarkUseQuorum).unwrap(), AttrValue::Ulong(2));
    let r = t.sign(h, &mac(), b"m");
    match &r {
        Err(Error::UseApprovalRequired(m)) => assert!(m.contains("key-use"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A prepared key is refused alike (PKCS#11 callers have no way to bring approvals).
    let pk = t.prepare(h, Usage::Sign, &mac()).unwrap();
    assert!(matches!(pk.sign(&mac(), b"m"), Err(Error::UseApprovalRequired(_))));

    let store_id = t.status().unwrap().store_id;
    let uid = match t.attribute(h, AttrType::UniqueId).unwrap() {
        AttrValue::Bytes(b) => String::from_utf8(b).unwrap(),
        v => panic!("{v:?}"),
    };
    let request = "req-000000000001";
    let not_after = T0 + 600;
    let d = use_approval_digest(&store_id, &uid, "sign", request, not_after).unwrap();
    let sig = |k: &Ed25519KeyPair, name: &str| UseApproval {
        approver: name.into(),
        signature: k.sign(&d).as_ref().to_vec(),
    };
    let with = |approvals: Vec<UseApproval>, f: &dyn Fn() -> Result<Vec<u8>, Error>| {
        with_use_approvals(UseApprovals { request_id: request.into(), not_after, approvals }, f)
    };
    // One approval, the same approver twice, a stranger's key under a known name: too few.
    for set in [
        vec![sig(&k1, "alice")],
        vec![sig(&k1, "alice"), sig(&k1, "alice")],
        vec![sig(&k1, "alice"), sig(&k3, "bob")],
        vec![sig(&k1, "alice"), sig(&k2, "mallory")],
    ] {
        let r = with(set, &|| t.sign(h, &mac(), b"m"));
        assert!(matches!(r, Err(Error::UseApprovalRequired(_))), "{r:?}");
    }
    assert_eq!(uses(&t, h), 0);
    // Approvals for a different operation do not serve this one.
    let r = with(vec![sig(&k1, "alice"), sig(&k2, "bob")], &|| {
        t.verify(h, &mac(), b"m", &[0; 32]).map(|()| Vec::new())
    });
    assert!(matches!(r, Err(Error::UseApprovalRequired(_))), "{r:?}");

    let good = || vec![sig(&k1, "alice"), sig(&k2, "bob")];
    let tag = with(good(), &|| t.sign(h, &mac(), b"m")).unwrap();
    assert_eq!(tag.len(), 32);
    assert_eq!(uses(&t, h), 1);
    // Replayed: refused, nothing counted.
    let r = with(good(), &|| t.sign(h, &mac(), b"m"));
    assert!(matches!(r, Err(Error::UseApprovalRequired(_))), "{r:?}");
    assert_eq!(uses(&t, h), 1);
    // Expired approvals are refused.
    clock.set(not_after + 1);
    let r = with(good(), &|| t.sign(h, &mac(), b"m"));
    assert!(matches!(r, Err(Error::UseApprovalRequired(_))), "{r:?}");
    // A batch of two items would need two approvals sets: refused.
    clock.set(T0);
    let d2 = use_approval_digest(&store_id, &uid, "sign", "req-000000000002", not_after).unwrap();
    let set2 = vec![
        UseApproval { approver: "alice".into(), signature: k1.sign(&d2).as_ref().to_vec() },
        UseApproval { approver: "bob".into(), signature: k2.sign(&d2).as_ref().to_vec() },
    ];
    let r = with_use_approvals(
        UseApprovals { request_id: "req-000000000002".into(), not_after, approvals: set2 },
        || t.sign_batch(h, &mac(), &[b"a".to_vec(), b"b".to_vec()]),
    );
    assert!(r.is_err(), "{r:?}");
    assert_eq!(uses(&t, h), 1);
}

/// Editing the stored policy or the counter is an integrity failure, never a reset.
#[test]
fn tampering_with_policy_or_counter_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let t = open(&p);
    let h = hmac_key(&t, "k");
    t.set_usage_policy(&[h], &quota(3)).unwrap();
    t.sign(h, &mac(), b"m").unwrap();
    drop(t);

    // The counter record rewritten to zero.
    let copy = dir.path().join("c1").join("t.db");
    copy_store(&p, &copy);
    let marks = Marks::save(&store_uid(&p));
    {
        let c = rusqlite::Connection::open(&copy).unwrap();
        let n = c
            .execute("UPDATE records SET value = zeroblob(24) WHERE kind = 'use-count'", [])
            .unwrap();
        assert_eq!(n, 1);
    }
    let r = Token::open(&copy).and_then(|t| {
        t.login(UserType::User, &user())?;
        t.sign(h, &mac(), b"m")
    });
    assert_integrity(r, "counter rewritten");
    marks.restore();

    // The counter record deleted.
    let copy = dir.path().join("c2").join("t.db");
    copy_store(&p, &copy);
    {
        let c = rusqlite::Connection::open(&copy).unwrap();
        c.execute("DELETE FROM records WHERE kind = 'use-count'", []).unwrap();
    }
    let r = Token::open(&copy).and_then(|t| {
        t.login(UserType::User, &user())?;
        t.sign(h, &mac(), b"m")
    });
    assert_integrity(r, "counter deleted");
    marks.restore();
}
