//! Backup and restore (docs/backup.md): a backup restored into a new store gives identical
//! results for every key type, and every refused restore leaves the target store unchanged,
//! byte for byte.

mod attack_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bulwark_core::attr::{AttrType, AttrValue};
use bulwark_core::crypto::Curve;
use bulwark_core::hierarchy::KdfParams;
use bulwark_core::kernel::{as_caller, Ops, Role};
use bulwark_core::mechanism::{DigestAlg, KeyGenMechanism, Mechanism};
use bulwark_core::secret::{Pin, SecretBytes};
use bulwark_core::token::{
    read_backup_header, Credentials, CustodianShare, SecurityPolicy, Unlock, BACKUP_VERSION,
};
use bulwark_core::{Error, Token, UserType};

const FAST: KdfParams = KdfParams { m_cost: 256, t_cost: 1, p_cost: 1 };
const S: u64 = 1;

fn so() -> Pin {
    Pin::new(b"so-pin-1234".to_vec())
}
fn user() -> Pin {
    Pin::new(b"user-pin-1234".to_vec())
}
fn pass() -> SecretBytes {
    SecretBytes::from_slice(b"correct horse battery staple")
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

fn gcm() -> Mechanism {
    Mechanism::AesGcm { iv: vec![7; 12], aad: b"aad".to_vec(), tag_bits: 128 }
}

fn init(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    Token::init_with(&p, name, &so(), Some(&user()), FAST).unwrap();
    p
}

fn as_user(p: &Path) -> Token {
    let t = Token::open(p).unwrap();
    t.login(UserType::User, &user()).unwrap();
    t
}

fn as_so(p: &Path) -> Token {
    let t = Token::open(p).unwrap();
    t.login(UserType::So, &so()).unwrap();
    t
}

fn one(t: &Token, l: &str, class: u64) -> u64 {
    let h = t.find(&[label(l), ulong(AttrType::Class, class)]).unwrap();
    assert_eq!(h.len(), 1, "{l}/{class}: {h:?}");
    h[0]
}

const SECRET: u64 = 4;
const PUBLIC: u64 = 2;
const PRIVATE: u64 = 3;

/// Makes one key of every family the test compares.
fn populate(t: &Token) {
    let tok = || b(AttrType::Token, true);
    t.generate_key(
        KeyGenMechanism::AesKeyGen,
        &[
            tok(),
            label("aes"),
            ulong(AttrType::ValueLen, 32),
            b(AttrType::Encrypt, true),
            b(AttrType::Decrypt, true),
        ],
        S,
    )
    .unwrap();
    t.generate_key(
        KeyGenMechanism::GenericSecretKeyGen,
        &[tok(), label("hmac"), ulong(AttrType::ValueLen, 32), b(AttrType::Sign, true)],
        S,
    )
    .unwrap();
    let pair = |l: &str, mech, pub_extra: Vec<(AttrType, AttrValue)>| {
        let mut pt = vec![tok(), label(l)];
        pt.extend(pub_extra);
        t.generate_key_pair(mech, &pt, &[tok(), label(l), b(AttrType::Sign, true)], S).unwrap();
    };
    pair(
        "ec",
        KeyGenMechanism::EcKeyPairGen,
        vec![(AttrType::EcParams, AttrValue::Bytes(Curve::P256.oid_der().to_vec()))],
    );
    pair("ed", KeyGenMechanism::EcEdwardsKeyPairGen, vec![]);
    pair("rsa", KeyGenMechanism::RsaPkcsKeyPairGen, vec![ulong(AttrType::ModulusBits, 2048)]);
    // An extractable secret, to look for its bytes in the backup file.
    t.generate_key(
        KeyGenMechanism::GenericSecretKeyGen,
        &[
            tok(),
            label("plain"),
            ulong(AttrType::ValueLen, 32),
            b(AttrType::Sensitive, false),
            b(AttrType::Extractable, true),
        ],
        S,
    )
    .unwrap();
}

fn plain_key(t: &Token) -> Vec<u8> {
    match t.attribute(one(t, "plain", SECRET), AttrType::Value).unwrap() {
        AttrValue::Bytes(v) => v,
        other => panic!("{other:?}"),
    }
}

fn hash_store(p: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for suffix in ["", "-wal"] {
        let mut f = p.as_os_str().to_owned();
        f.push(suffix);
        out.push(std::fs::read(&f).unwrap_or_default());
    }
    out
}

fn backup(src: &Path, out: &Path) {
    let t = as_so(src);
    let mut last = (0, 0);
    let s = t.backup(out, &pass(), FAST, &mut |d, n| last = (d, n)).unwrap();
    assert_eq!(s.objects, 9);
    assert_eq!(last, (9, 9));
}

#[test]
fn backup_restore_gives_identical_results_for_every_key_type() {
    let dir = tempfile::tempdir().unwrap();
    let src = init(dir.path(), "src.db");
    populate(&as_user(&src));
    let file = dir.path().join("b.bwb");
    backup(&src, &file);

    // Mode 0600, no temporary file left, no key material in the clear.
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    for e in std::fs::read_dir(dir.path()).unwrap() {
        assert!(!e.unwrap().file_name().to_string_lossy().contains(".tmp-"));
    }
    let bytes = std::fs::read(&file).unwrap();
    let plain = plain_key(&as_user(&src));
    assert!(!bytes.windows(plain.len()).any(|w| w == plain.as_slice()));
    let h = read_backup_header(&file).unwrap();
    assert_eq!(h.version, BACKUP_VERSION);
    assert_eq!(h.objects, 9);

    let dst = init(dir.path(), "dst.db");
    let r = as_so(&dst).restore(&file, &pass(), &mut |_, _| {}).unwrap();
    assert_eq!(r.objects, 9);
    assert_eq!(r.domain, h.domain);
    assert_eq!(as_so(&dst).security_domain().unwrap(), Some(h.domain));
    assert_eq!(as_so(&dst).verify_store().unwrap(), 9);

    let a = as_user(&src);
    let z = as_user(&dst);
    let aes_src = one(&a, "aes", SECRET);
    let aes_dst = one(&z, "aes", SECRET);
    let ct = a.encrypt(aes_src, &gcm(), b"across stores").unwrap();
    assert_eq!(z.decrypt(aes_dst, &gcm(), &ct).unwrap().expose_secret(), b"across stores");
    let back = Mechanism::AesGcm { iv: vec![9; 12], aad: vec![], tag_bits: 128 };
    let ct = z.encrypt(aes_dst, &back, b"and back").unwrap();
    assert_eq!(a.decrypt(aes_src, &back, &ct).unwrap().expose_secret(), b"and back");
    assert_eq!(plain_key(&z), plain_key(&a));

    let hmac = Mechanism::Hmac(DigestAlg::Sha256);
    assert_eq!(
        a.sign(one(&a, "hmac", SECRET), &hmac, b"m").unwrap(),
        z.sign(one(&z, "hmac", SECRET), &hmac, b"m").unwrap()
    );

    for (l, mech) in [
        ("ec", Mechanism::EcdsaSha256),
        ("ed", Mechanism::EdDsa(None)),
        ("rsa", Mechanism::Sha256RsaPkcs),
    ] {
        // A signature of the restored key verifies with the original public key.
        let sig = z.sign(one(&z, l, PRIVATE), &mech, b"signed data").unwrap();
        a.verify(one(&a, l, PUBLIC), &mech, b"signed data", &sig).unwrap();
        assert!(a.verify(one(&a, l, PUBLIC), &mech, b"other data", &sig).is_err(), "{l}");
        // Attributes came across unchanged, unique id included.
        for t in [AttrType::UniqueId, AttrType::PublicKeyInfo, AttrType::Label] {
            assert_eq!(
                a.attribute(one(&a, l, PRIVATE), t).unwrap(),
                z.attribute(one(&z, l, PRIVATE), t).unwrap(),
                "{l} {t:?}"
            );
        }
    }
    // The restore is audited with the source store and the counts.
    let lines = as_so(&dst).audit_export(0).unwrap().join("\n");
    assert!(lines.contains("\"restore\""), "{lines}");
    assert!(lines.contains(&hex::encode(h.source_store)), "{lines}");
}

/// A restore that must fail; the store files are hashed after the login (which counts its
/// attempt) and after the refusal.
fn refused(dst: &Path, file: &Path, passphrase: &SecretBytes, what: &str) -> Error {
    let t = as_so(dst);
    let before = hash_store(dst);
    let e = t.restore(file, passphrase, &mut |_, _| {}).unwrap_err();
    assert_eq!(hash_store(dst), before, "{what}: the target store changed");
    assert_eq!(t.verify_store().unwrap(), 0, "{what}");
    e
}

#[test]
fn every_refused_restore_leaves_the_target_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let src = init(dir.path(), "src.db");
    populate(&as_user(&src));
    let file = dir.path().join("b.bwb");
    backup(&src, &file);
    let good = std::fs::read(&file).unwrap();
    let dst = init(dir.path(), "dst.db");
    let bad = dir.path().join("bad.bwb");

    let e = refused(&dst, &file, &SecretBytes::from_slice(b"wrong passphrase!"), "passphrase");
    assert!(e.to_string().contains("wrong backup passphrase"), "{e}");

    // A flipped bit anywhere: header fields, the check, the first and later chunks, the end.
    let n = good.len();
    for off in [0, 9, 10, 12, 30, 60, 80, 100, 120, 142, 143, 144, 150, 400, n / 2, n - 1] {
        let mut v = good.clone();
        v[off] ^= 0x01;
        std::fs::write(&bad, &v).unwrap();
        let e = refused(&dst, &bad, &pass(), &format!("flip at {off}"));
        assert!(matches!(e, Error::ArgumentsBad(_)), "flip at {off}: {e:?}");
    }
    for cut in [0, 10, 142, 143, 148, n / 2, n - 1] {
        std::fs::write(&bad, &good[..cut]).unwrap();
        let e = refused(&dst, &bad, &pass(), &format!("truncated to {cut}"));
        assert!(matches!(e, Error::ArgumentsBad(_)), "cut {cut}: {e:?}");
    }
    let mut longer = good.clone();
    longer.extend_from_slice(&[0, 0, 0, 0, 16]);
    std::fs::write(&bad, &longer).unwrap();
    let e = refused(&dst, &bad, &pass(), "appended");
    assert!(e.to_string().contains("modified, truncated"), "{e}");

    // Another domain: a store with content from elsewhere.
    let other = init(dir.path(), "other.db");
    as_user(&other)
        .generate_key(
            KeyGenMechanism::AesKeyGen,
            &[b(AttrType::Token, true), label("mine"), ulong(AttrType::ValueLen, 32)],
            S,
        )
        .unwrap();
    let t = as_so(&other);
    let before = hash_store(&other);
    let e = t.restore(&file, &pass(), &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("another security domain"), "{e}");
    assert_eq!(hash_store(&other), before);
    assert_eq!(t.verify_store().unwrap(), 1);
    drop(t);

    // Not the SO: refused.
    let e = as_user(&dst).restore(&file, &pass(), &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, Error::ActionProhibited(_)), "{e:?}");
    let e = Token::open(&dst).unwrap().restore(&file, &pass(), &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, Error::UserNotLoggedIn), "{e:?}");

    // The intact file still restores, once; a second restore is refused (not empty).
    as_so(&dst).restore(&file, &pass(), &mut |_, _| {}).unwrap();
    let e = refused_nonempty(&dst, &file);
    assert!(e.to_string().contains("not empty"), "{e}");
}

fn refused_nonempty(dst: &Path, file: &Path) -> Error {
    let t = as_so(dst);
    let before = hash_store(dst);
    let e = t.restore(file, &pass(), &mut |_, _| {}).unwrap_err();
    assert_eq!(hash_store(dst), before);
    e
}

#[test]
fn backup_is_so_only_and_refuses_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = init(dir.path(), "src.db");
    populate(&as_user(&src));
    let file = dir.path().join("b.bwb");
    let e = as_user(&src).backup(&file, &pass(), FAST, &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, Error::ActionProhibited(_)), "{e:?}");
    assert!(!file.exists());
    backup(&src, &file);
    let before = std::fs::read(&file).unwrap();
    let e = as_so(&src).backup(&file, &pass(), FAST, &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), before);
    // A directory that does not exist: a clear error, no file anywhere.
    let missing = dir.path().join("no-such-dir").join("b.bwb");
    let e = as_so(&src).backup(&missing, &pass(), FAST, &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("cannot create the backup file"), "{e}");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    // Two backups of one store never share bytes beyond chance (new salt, new keys).
    let file2 = dir.path().join("b2.bwb");
    as_so(&src).backup(&file2, &pass(), FAST, &mut |_, _| {}).unwrap();
    assert_ne!(std::fs::read(&file2).unwrap()[143..200], before[143..200]);
}

const TOTP: &[u8] = b"backup-totp-secret-0";

fn alice(code: &str) -> Credentials<'_> {
    Credentials { name: "alice", password: b"alice-password", totp: Some(code), cert_sha256: None }
}

/// On quorum stores (the daemon's): users, their TOTP secrets and grants come across; the
/// target's own first security officer keeps its account, matched by name.
#[test]
fn users_grants_and_totp_come_across_between_quorum_stores() {
    use attack_support::{admin, caller, keeper, now_secs, open_unsealed, quorum_store, to};
    let dir = tempfile::tempdir().unwrap();
    let policy = SecurityPolicy::default();
    let sp = dir.path().join("q1.db");
    let t1 = open_unsealed(&sp, &quorum_store(&sp, &policy));
    let admin1 = admin(&t1);
    as_caller(caller(&admin1, 0), || {
        t1.create_user("alice", Role::CryptoUser, b"alice-password", Some(TOTP)).unwrap();
    });
    let keeper1 = keeper(&t1);
    let k1 = as_caller(caller(&keeper1, 1), || {
        let h = attack_support::aes(
            &t1,
            "shared",
            true,
            &[b(AttrType::Encrypt, true), b(AttrType::Decrypt, true)],
        )
        .unwrap();
        t1.set_grant(h, &to("alice"), Some(Ops(Ops::ENCRYPT.0 | Ops::DECRYPT.0))).unwrap();
        h
    });
    let file = dir.path().join("q.bwb");
    // A crypto officer may not take a backup.
    let e = as_caller(caller(&keeper1, 1), || t1.backup(&file, &pass(), FAST, &mut |_, _| {}))
        .unwrap_err();
    assert!(matches!(e, Error::ActionProhibited(_)), "{e:?}");
    let s =
        as_caller(caller(&admin1, 0), || t1.backup(&file, &pass(), FAST, &mut |_, _| {})).unwrap();
    assert_eq!((s.objects, s.users, s.grants), (1, 3, 1));

    let tp = dir.path().join("q2.db");
    let t2 = open_unsealed(&tp, &quorum_store(&tp, &policy));
    let admin2 = admin(&t2);
    let r = as_caller(caller(&admin2, 0), || t2.restore(&file, &pass(), &mut |_, _| {})).unwrap();
    assert_eq!((r.objects, r.users, r.grants), (1, 3, 1));
    // The target's admin is still its own (same id, same password).
    assert_eq!(admin(&t2).id, admin2.id);
    // Alice logs in on the target with her password and TOTP (sealed again there), and her
    // grant on the restored key works; the original decrypts what it made.
    let code = attack_support::totp_code(TOTP, now_secs() / 30);
    let alice2 = t2.authenticate(&alice(&code)).unwrap();
    let ct = as_caller(caller(&alice2, 2), || {
        let h = t2.find(&[label("shared")]).unwrap();
        assert_eq!(h.len(), 1);
        t2.encrypt(h[0], &gcm(), b"granted across stores")
    })
    .unwrap();
    let alice1 = t1.authenticate(&alice(&code)).unwrap();
    let pt = as_caller(caller(&alice1, 2), || t1.decrypt(k1, &gcm(), &ct)).unwrap();
    assert_eq!(pt.expose_secret(), b"granted across stores");
    // The restored crypto officer logs in too.
    keeper(&t2);
}

fn share_of(s: &CustodianShare) -> CustodianShare {
    CustodianShare::parse(s.to_json().as_bytes()).unwrap()
}

/// A backup key split 2-of-3 among custodians: any two shares restore it; one share, a share
/// twice, a share of another backup, a changed share or a passphrase are refused and change
/// nothing.
#[test]
fn custodian_shares_open_a_backup_only_at_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let src = init(dir.path(), "src.db");
    populate(&as_user(&src));
    let file = dir.path().join("s.bwb");
    let (summary, shares) = as_so(&src).backup_with_shares(&file, 2, 3, &mut |_, _| {}).unwrap();
    assert_eq!((summary.objects, shares.len()), (9, 3));
    assert_eq!(read_backup_header(&file).unwrap().custodians, Some((2, 3)));
    let first: serde_json::Value = serde_json::from_str(&shares[0].to_json()).unwrap();
    let secret_hex = first["share"].as_str().unwrap().to_owned();
    assert_eq!(secret_hex.len(), 66);
    assert!(!format!("{:?}", shares[0]).contains(&secret_hex[2..]), "Debug shows the share");
    let other = dir.path().join("o.bwb");
    let (_, foreign) = as_so(&src).backup_with_shares(&other, 2, 2, &mut |_, _| {}).unwrap();
    let pass_file = dir.path().join("p.bwb");
    as_so(&src).backup(&pass_file, &pass(), FAST, &mut |_, _| {}).unwrap();
    // A share file changed in its value.
    let json = shares[1].to_json();
    let mut edited: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut hexed = edited["share"].as_str().unwrap().to_owned();
    let last = if hexed.ends_with('0') { "1" } else { "0" };
    hexed.replace_range(hexed.len() - 1.., last);
    edited["share"] = serde_json::Value::String(hexed);
    let changed = CustodianShare::parse(edited.to_string().as_bytes()).unwrap();

    let dst = init(dir.path(), "dst.db");
    let t = as_so(&dst);
    let before = hash_store(&dst);
    let cases: Vec<(Vec<CustodianShare>, &str)> = vec![
        (vec![share_of(&shares[0])], "not enough"),
        (vec![share_of(&shares[0]), share_of(&shares[0])], "twice"),
        (vec![share_of(&shares[0]), share_of(&foreign[1])], "another backup"),
        (vec![share_of(&shares[0]), changed], "do not open"),
    ];
    for (set, needle) in &cases {
        let e = t.restore_with(&file, Unlock::Shares(set), &mut |_, _| {}).unwrap_err();
        assert!(e.to_string().contains(needle), "{needle}: {e}");
        assert_eq!(hash_store(&dst), before, "{needle}");
    }
    let e = t.restore(&file, &pass(), &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("split among custodians"), "{e}");
    let two = [share_of(&shares[0]), share_of(&shares[2])];
    let e = t.restore_with(&pass_file, Unlock::Shares(&two), &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("protected by a passphrase"), "{e}");
    assert_eq!(hash_store(&dst), before);

    let r = t.restore_with(&file, Unlock::Shares(&two), &mut |_, _| {}).unwrap();
    assert_eq!(r.objects, 9);
    drop(t);
    assert_eq!(plain_key(&as_user(&dst)), plain_key(&as_user(&src)));
}
