//! Selected-key backups and the restores that change a store already in use (docs/backup.md):
//! a selected-key file adds its keys to a store of the same security domain with identical
//! results; conflicts, another domain, a modified file and a whole-store file into a non-empty
//! store are refused and leave the target unchanged byte for byte; a whole-store restore with
//! a rebase takes a store back to the backup and re-bases its anti-rollback mark, audited.

#![allow(missing_docs, clippy::many_single_char_names)]

mod attack_support;

use std::path::{Path, PathBuf};

use attack_support::*;
use bulwark_core::attr::{AttrType, ObjectClass};
use bulwark_core::mechanism::Mechanism;
use bulwark_core::secret::SecretBytes;
use bulwark_core::token::{read_backup_header, RestoreOptions, Unlock, BACKUP_VERSION_SELECTED};
use bulwark_core::{Error, Token, UserType};

fn pass() -> SecretBytes {
    SecretBytes::from_slice(b"correct horse battery staple")
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

fn hash_store(p: &Path) -> Vec<Vec<u8>> {
    ["", "-wal"]
        .iter()
        .map(|s| {
            let mut f = p.as_os_str().to_owned();
            f.push(s);
            std::fs::read(&f).unwrap_or_default()
        })
        .collect()
}

fn one(t: &Token, l: &str, class: ObjectClass) -> u64 {
    let h = t.find(&[label(l), ulong(AttrType::Class, class.to_raw())]).unwrap();
    assert_eq!(h.len(), 1, "{l}: {h:?}");
    h[0]
}

fn labels(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn restore(p: &Path, file: &Path) -> Result<bulwark_core::token::RestoreSummary, Error> {
    as_so(p).restore(file, &pass(), &mut |_, _| {})
}

/// Two stores of one security domain: `a` and `b` (a restored copy of `a`'s first keys).
fn domain_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let a = init(dir, "a.db");
    aes(&as_user(&a), "base", true, &[b(AttrType::Encrypt, true)]).unwrap();
    let whole = dir.join("whole.bwb");
    as_so(&a).backup(&whole, &pass(), FAST, &mut |_, _| {}).unwrap();
    let b = init(dir, "b.db");
    restore(&b, &whole).unwrap();
    (a, b)
}

#[test]
fn selected_keys_join_a_store_of_the_same_domain() {
    let dir = tempfile::tempdir().unwrap();
    let (a, bs) = domain_pair(dir.path());
    let ta = as_user(&a);
    let enc = [b(AttrType::Encrypt, true), b(AttrType::Decrypt, true)];
    let k = aes(&ta, "new-aes", true, &enc).unwrap();
    let (pk, _) = ec_pair(&ta, "new-ec", true, &[]).unwrap();
    aes(&ta, "stays", true, &enc).unwrap();
    let ct = ta.encrypt(k, &gcm(), b"old data").unwrap();
    drop(ta);

    let file = dir.path().join("sel.bwb");
    let mut last = (0, 0);
    let s = as_so(&a)
        .backup_selected(&file, &labels(&["new-aes", "new-ec"]), &pass(), FAST, &mut |d, n| {
            last = (d, n);
        })
        .unwrap();
    assert_eq!((s.objects, last), (3, (3, 3)));
    assert_eq!(s.keys, labels(&["new-aes", "new-ec"]));
    let h = read_backup_header(&file).unwrap();
    assert_eq!((h.version, h.objects), (BACKUP_VERSION_SELECTED, 3));
    // Only the security officer backs up; an unknown label is refused.
    assert!(as_user(&a)
        .backup_selected(
            &dir.path().join("x"),
            &labels(&["new-aes"]),
            &pass(),
            FAST,
            &mut |_, _| {}
        )
        .is_err());
    let e = as_so(&a)
        .backup_selected(&dir.path().join("y"), &labels(&["nope"]), &pass(), FAST, &mut |_, _| {})
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");

    let r = restore(&bs, &file).unwrap();
    assert_eq!((r.objects, r.keys.len(), r.rebased), (3, 2, None));
    let tb = as_user(&bs);
    assert_eq!(
        tb.decrypt(one(&tb, "new-aes", ObjectClass::SecretKey), &gcm(), &ct)
            .unwrap()
            .expose_secret(),
        b"old data"
    );
    let sig = tb
        .sign(one(&tb, "new-ec", ObjectClass::PrivateKey), &Mechanism::EcdsaSha256, b"m")
        .unwrap();
    as_user(&a).verify(pk, &Mechanism::EcdsaSha256, b"m", &sig).unwrap();
    assert!(tb.find_by_label("stays").unwrap().is_empty(), "only the selected keys");
    assert_eq!(tb.find_by_label("base").unwrap().len(), 1, "what was there stays");
    drop(tb);
    assert_eq!(as_so(&bs).verify_store().unwrap(), 4);

    // Refusals change nothing, byte for byte. A label of the next file names another key
    // here; the store is unchanged from the moment its officer is logged in.
    aes(&as_user(&a), "clash", true, &enc).unwrap();
    aes(&as_user(&bs), "clash", true, &enc).unwrap();
    let clash = dir.path().join("clash.bwb");
    as_so(&a).backup_selected(&clash, &labels(&["clash"]), &pass(), FAST, &mut |_, _| {}).unwrap();
    let mut bytes = std::fs::read(&clash).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 1;
    let bad = dir.path().join("bad.bwb");
    std::fs::write(&bad, &bytes).unwrap();
    let whole = dir.path().join("whole.bwb");
    let wrong = SecretBytes::from_slice(b"not the passphrase at all");
    let rebase = RestoreOptions { rebase: true };

    let t = as_so(&bs);
    let before = hash_store(&bs);
    let cases: Vec<(&str, Result<_, Error>)> = vec![
        ("already in this store", t.restore(&file, &pass(), &mut |_, _| {})),
        ("has a label of the backup", t.restore(&clash, &pass(), &mut |_, _| {})),
        ("modified", t.restore(&bad, &pass(), &mut |_, _| {})),
        ("wrong backup passphrase", t.restore(&clash, &wrong, &mut |_, _| {})),
        (
            "cannot rebase",
            t.restore_with_options(&clash, Unlock::Passphrase(&pass()), rebase, &mut |_, _| {}),
        ),
        ("not empty", t.restore(&whole, &pass(), &mut |_, _| {})),
    ];
    for (needle, r) in cases {
        let e = r.unwrap_err();
        assert!(e.to_string().contains(needle), "{needle}: {e}");
        assert!(hash_store(&bs) == before, "{needle}: the store changed");
    }
    drop(t);

    let other = init(dir.path(), "other.db");
    let t = as_so(&other);
    let before = hash_store(&other);
    let e = t.restore(&file, &pass(), &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("another security domain"), "{e}");
    assert!(hash_store(&other) == before, "another domain: the store changed");
}

#[test]
fn rebase_takes_a_store_back_and_resets_the_mark() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("BULWARK_STATE_DIR", dir.path().join("state"));
    let a = init(dir.path(), "a.db");
    let enc = [b(AttrType::Encrypt, true), b(AttrType::Decrypt, true)];
    let k1 = aes(&as_user(&a), "k1", true, &enc).unwrap();
    let ct = as_user(&a).encrypt(k1, &gcm(), b"kept").unwrap();
    let file = dir.path().join("t1.bwb");
    as_so(&a).backup(&file, &pass(), FAST, &mut |_, _| {}).unwrap();
    // Later: a new key, and k1 destroyed.
    let t = as_user(&a);
    aes(&t, "k2", true, &enc).unwrap();
    t.destroy_object(k1).unwrap();
    drop(t);

    let opts = RestoreOptions { rebase: true };
    let r = as_so(&a)
        .restore_with_options(&file, Unlock::Passphrase(&pass()), opts, &mut |_, _| {})
        .unwrap();
    let g = r.rebased.expect("rebased");
    let t = as_user(&a);
    assert!(t.find_by_label("k2").unwrap().is_empty(), "the store is back at the backup");
    let k = one(&t, "k1", ObjectClass::SecretKey);
    assert_eq!(t.decrypt(k, &gcm(), &ct).unwrap().expose_secret(), b"kept");
    drop(t);
    let uid = store_uid(&a);
    let mark = std::fs::read_to_string(
        dir.path().join("state").join(format!("{}.generation", hex::encode(uid))),
    )
    .unwrap();
    let (digits, tag) = mark.trim().split_once(' ').expect("a sealed mark");
    assert_eq!(digits.parse::<u64>().unwrap(), g);
    assert_eq!(tag.len(), 64, "re-based, still sealed");
    assert!(dir.path().join("state").join(format!("{}.rebased", hex::encode(uid))).exists());
    let lines = as_so(&a).audit_export(0).unwrap().join("\n");
    assert!(lines.contains("anti-rollback baseline reset to generation"), "{lines}");
    assert_eq!(as_so(&a).verify_store().unwrap(), 1);

    // Only the security officer; another domain is refused; nothing changes.
    let u = as_user(&a);
    let before = hash_store(&a);
    let e = u
        .restore_with_options(&file, Unlock::Passphrase(&pass()), opts, &mut |_, _| {})
        .unwrap_err();
    assert!(e.to_string().contains("only the security officer"), "{e}");
    assert!(hash_store(&a) == before, "not the officer: the store changed");
    drop(u);
    let other = init(dir.path(), "o.db");
    aes(&as_user(&other), "x", true, &enc).unwrap();
    let t = as_so(&other);
    let ob = hash_store(&other);
    let e = t
        .restore_with_options(&file, Unlock::Passphrase(&pass()), opts, &mut |_, _| {})
        .unwrap_err();
    assert!(e.to_string().contains("another security domain"), "{e}");
    assert!(hash_store(&other) == ob, "another domain: the store changed");
}

fn secret_column(p: &Path, h: u64) -> Option<Vec<u8>> {
    let c = rusqlite::Connection::open(p).unwrap();
    #[allow(clippy::cast_possible_wrap)]
    let h = h as i64;
    c.query_row("SELECT secret FROM objects WHERE handle = ?", [h], |r| r.get(0)).unwrap()
}

/// Archival: a deactivated key goes to an archive file and leaves the live store (its
/// metadata stays, every use is refused), and the archive's restore brings it back usable for
/// decrypt and verify.
#[test]
fn archive_round_trip() {
    use bulwark_core::lifecycle::Transition;
    let dir = tempfile::tempdir().unwrap();
    let a = init(dir.path(), "a.db");
    let t = as_user(&a);
    let enc = [b(AttrType::Encrypt, true), b(AttrType::Decrypt, true)];
    let k = aes(&t, "old", true, &enc).unwrap();
    let (pk, sk) = ec_pair(&t, "oldsig", true, &[]).unwrap();
    let ct = t.encrypt(k, &gcm(), b"archived data").unwrap();
    let sig = t.sign(sk, &Mechanism::EcdsaSha256, b"m").unwrap();
    drop(t);

    let so_t = as_so(&a);
    let out = dir.path().join("old.archive");
    let e = so_t.archive_key("old", &out, &pass(), FAST).unwrap_err();
    assert!(e.to_string().contains("deactivate it first"), "{e}");
    assert!(!out.exists());
    let u = as_user(&a);
    u.transition_keys(&[k], Transition::Deactivate).unwrap();
    u.transition_keys(&[pk, sk], Transition::Compromise).unwrap();
    drop(u);
    let e = as_user(&a).archive_key("old", &out, &pass(), FAST).unwrap_err();
    assert!(e.to_string().contains("security officer"), "{e}");

    let s = so_t.archive_key("old", &out, &pass(), FAST).unwrap();
    assert_eq!(s.objects, 1);
    let s2 = so_t.archive_key("oldsig", &dir.path().join("sig.archive"), &pass(), FAST).unwrap();
    assert_eq!(s2.objects, 2);
    assert_eq!(secret_column(&a, k), None, "the material left the live store");
    assert_eq!(secret_column(&a, sk), None);
    let e = so_t.archive_key("old", &dir.path().join("again"), &pass(), FAST).unwrap_err();
    assert!(e.to_string().contains("already archived"), "{e}");

    let u = as_user(&a);
    let listed = u.find_by_label("old").unwrap();
    assert_eq!(listed.len(), 1, "the metadata stays");
    assert_eq!(listed[0].attrs.ulong(AttrType::BulwarkArchived), Some(s.archived_at));
    let e = u.decrypt(k, &gcm(), &ct).unwrap_err();
    assert!(e.to_string().contains("archived"), "{e}");
    assert!(u.verify(pk, &Mechanism::EcdsaSha256, b"m", &sig).is_err());
    drop(u);

    let r = so_t.restore(&out, &pass(), &mut |_, _| {}).unwrap();
    assert_eq!(r.objects, 1);
    so_t.restore(&dir.path().join("sig.archive"), &pass(), &mut |_, _| {}).unwrap();
    drop(so_t);
    let u = as_user(&a);
    assert_eq!(u.decrypt(k, &gcm(), &ct).unwrap().expose_secret(), b"archived data");
    assert!(u.encrypt(k, &gcm(), b"new").is_err(), "still deactivated: no new data");
    u.verify(pk, &Mechanism::EcdsaSha256, b"m", &sig).unwrap();
    assert!(u.find_by_label("old").unwrap()[0].attrs.ulong(AttrType::BulwarkArchived).is_none());
    drop(u);
    assert_eq!(as_so(&a).verify_store().unwrap(), 3);
}
