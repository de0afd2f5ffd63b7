//! Scheduled destruction (docs/lifecycle.md, "Scheduled destruction"): the store's wait and
//! purge protection, scheduling on `C_DestroyObject`, invisibility, cancel, and the shredding
//! of the material when the wait ends (on a hand-set clock), keeping the metadata and the audit
//! history; the daemon store's defaults and its minimum without quorum approval.

#![allow(missing_docs, clippy::cast_possible_wrap, clippy::many_single_char_names)]

mod attack_support;

use std::path::Path;
use std::sync::Arc;

use attack_support::*;
use bulwark_core::attr::AttrType;
use bulwark_core::destruction::{DestroySettings, DAY};
use bulwark_core::kernel::as_caller;
use bulwark_core::lifecycle::{Clock, KeyState, ManualClock, Transition};
use bulwark_core::token::{DestroyOutcome, SecurityPolicy};
use bulwark_core::{Error, Token, UserType};

/// "Now" for the hand-set clock: the real time, so that a login (which carries out due
/// destructions by the system clock before the test sets its own) finds nothing due.
fn t0() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn store(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("t.db");
    Token::init_with(&p, "t", &so(), Some(&user()), FAST).unwrap();
    p
}

fn open_as(p: &Path, who: UserType, clock: &Arc<ManualClock>) -> Token {
    let t = Token::open(p).unwrap();
    let pin = if who == UserType::So { so() } else { user() };
    t.login(who, &pin).unwrap();
    t.set_clock(clock.clone());
    t
}

fn set_wait(p: &Path, clock: &Arc<ManualClock>, wait: u64) {
    let t = open_as(p, UserType::So, clock);
    t.set_destroy_settings(Some(wait), None, false).unwrap();
}

fn row_exists(p: &Path, h: u64) -> bool {
    let c = rusqlite::Connection::open(p).unwrap();
    c.query_row("SELECT count(*) FROM objects WHERE handle = ?", [h as i64], |r| r.get::<_, i64>(0))
        .unwrap()
        == 1
}

fn secret_column(p: &Path, h: u64) -> Option<Vec<u8>> {
    let c = rusqlite::Connection::open(p).unwrap();
    c.query_row("SELECT secret FROM objects WHERE handle = ?", [h as i64], |r| r.get(0)).unwrap()
}

fn audit_lines(p: &Path) -> String {
    let t = Token::open(p).unwrap();
    t.login(UserType::So, &so()).unwrap();
    t.audit_export(0).unwrap().join("\n")
}

fn enc_key(t: &Token, l: &str) -> u64 {
    aes(t, l, true, &[b(AttrType::Encrypt, true), b(AttrType::Decrypt, true)]).unwrap()
}

/// An embedded store keeps SoftHSM behaviour by default: the wait is 0, and `C_DestroyObject`
/// removes the row at once.
#[test]
fn embedded_default_is_immediate() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let clock = ManualClock::new(t0());
    let t = open_as(&p, UserType::User, &clock);
    assert_eq!(t.destroy_settings().unwrap(), DestroySettings::embedded());
    let k = enc_key(&t, "k");
    assert_eq!(t.destroy_key_object(k).unwrap(), DestroyOutcome::Destroyed);
    assert!(!row_exists(&p, k));
    assert!(t.scheduled_keys(None).unwrap().is_empty());
}

/// With a wait, destroying schedules: the key is invisible and unusable at once, can be
/// cancelled (and then works exactly as before), and when the wait ends its material is
/// removed from the row while its attributes stay, in state destroyed; a cancel is then
/// refused. Every step is audited.
#[test]
fn schedule_cancel_and_shred() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let now = t0();
    let clock = ManualClock::new(now);
    set_wait(&p, &clock, 30 * DAY);
    let t = open_as(&p, UserType::User, &clock);
    let k = enc_key(&t, "victim");
    let ct = t.encrypt(k, &gcm(), b"old data").unwrap();
    let before = secret_column(&p, k).unwrap();

    assert_eq!(t.destroy_key_object(k).unwrap(), DestroyOutcome::Scheduled { due: now + 30 * DAY });
    // Invisible: not found by label, nor in the full list; the handle is invalid.
    assert!(t.find_by_label("victim").unwrap().is_empty());
    assert!(t.list().unwrap().iter().all(|o| o.handle != k));
    assert!(matches!(t.encrypt(k, &gcm(), b"x"), Err(Error::ObjectHandleInvalid)));
    assert!(matches!(t.decrypt(k, &gcm(), &ct), Err(Error::ObjectHandleInvalid)));
    assert!(matches!(t.destroy_object(k), Err(Error::ObjectHandleInvalid)));
    // The material is still there until the wait ends.
    assert_eq!(secret_column(&p, k).unwrap(), before);
    let listed = t.scheduled_keys(None).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].handle, listed[0].due, listed[0].shredded), (k, now + 30 * DAY, false));

    // Cancel: usable again, same material, same results.
    clock.advance(29 * DAY);
    assert_eq!(t.cancel_destroy(k).unwrap(), KeyState::Active);
    assert_eq!(t.decrypt(k, &gcm(), &ct).unwrap().expose_secret(), b"old data");
    assert_eq!(t.find_by_label("victim").unwrap().len(), 1);
    assert!(t.scheduled_keys(None).unwrap().is_empty());
    assert!(matches!(t.cancel_destroy(k), Err(Error::ActionProhibited(_))), "not scheduled");

    // Schedule again; one second before the end nothing happens, at the end it is shredded.
    let due = clock.now() + 30 * DAY;
    assert_eq!(t.destroy_key_object(k).unwrap(), DestroyOutcome::Scheduled { due });
    clock.set(due - 1);
    assert_eq!(t.apply_due_destructions().unwrap(), 0);
    assert!(secret_column(&p, k).is_some());
    clock.set(due);
    assert_eq!(t.apply_due_destructions().unwrap(), 1);
    assert_eq!(t.apply_due_destructions().unwrap(), 0, "idempotent");
    assert!(row_exists(&p, k), "the metadata stays");
    assert_eq!(secret_column(&p, k), None, "the material is gone");
    assert!(matches!(t.cancel_destroy(k), Err(Error::ActionProhibited(_))));
    let shown = t.scheduled_keys(Some("victim")).unwrap();
    assert_eq!(shown.len(), 1);
    assert!(shown[0].shredded);
    assert_eq!(shown[0].attrs.bytes(AttrType::Label), Some(&b"victim"[..]));
    assert_eq!(shown[0].attrs.ulong(AttrType::BulwarkState), Some(KeyState::Destroyed.to_raw()));
    assert_eq!(shown[0].attrs.ulong(AttrType::BulwarkDestroyDate), Some(due));
    assert!(t.find_by_label("victim").unwrap().is_empty(), "still invisible");
    drop(t);

    let lines = audit_lines(&p);
    assert!(lines.contains("\"destroy-settings\""), "{lines}");
    assert!(lines.contains(&format!("scheduled: due {}", now + 30 * DAY)), "{lines}");
    assert!(lines.contains("\"destroy-cancel\""), "{lines}");
    assert!(lines.contains("\"destroy-due\""), "{lines}");
    assert!(lines.contains("material shredded, destroyed"), "{lines}");
}

/// A compromised key ends destroyed-compromised; a key pair's halves are scheduled one by
/// one; a schedule survives reopening, and the first login after the wait carries it out.
#[test]
fn compromised_pairs_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let now = t0();
    let clock = ManualClock::new(now);
    set_wait(&p, &clock, 7 * DAY);
    let t = open_as(&p, UserType::User, &clock);
    let (pubk, privk) = ec_pair(&t, "pair", true, &[]).unwrap();
    t.transition_keys(&[pubk, privk], Transition::Compromise).unwrap();
    for h in [privk, pubk] {
        assert!(matches!(t.destroy_key_object(h).unwrap(), DestroyOutcome::Scheduled { .. }));
    }
    assert!(t.find_by_label("pair").unwrap().is_empty());
    assert_eq!(t.scheduled_keys(None).unwrap().len(), 2);
    drop(t);
    // Reopened 8 days later (the real clock is the test's here: set it before the login by
    // advancing the hand clock and carrying the destructions out explicitly).
    clock.advance(8 * DAY);
    let t = open_as(&p, UserType::User, &clock);
    assert_eq!(t.scheduled_keys(None).unwrap().len(), 0, "listing carries out due ones");
    let shown = t.scheduled_keys(Some("pair")).unwrap();
    assert_eq!(shown.len(), 2);
    for s in &shown {
        assert!(s.shredded);
        assert_eq!(
            s.attrs.ulong(AttrType::BulwarkState),
            Some(KeyState::DestroyedCompromised.to_raw())
        );
    }
    assert_eq!(secret_column(&p, privk), None);
}

/// Purge protection: once on it stays on, and the wait can then only grow.
#[test]
fn purge_protection_forbids_shortening() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let clock = ManualClock::new(t0());
    let t = open_as(&p, UserType::So, &clock);
    t.set_destroy_settings(Some(10 * DAY), Some(true), false).unwrap();
    let before = std::fs::read(&p).unwrap();
    assert!(matches!(
        t.set_destroy_settings(Some(9 * DAY), None, true),
        Err(Error::ActionProhibited(_))
    ));
    assert!(matches!(
        t.set_destroy_settings(None, Some(false), true),
        Err(Error::ActionProhibited(_))
    ));
    assert!(matches!(t.set_destroy_settings(Some(0), None, true), Err(Error::ActionProhibited(_))));
    assert_eq!(std::fs::read(&p).unwrap(), before, "a refusal changes nothing");
    let s = t.set_destroy_settings(Some(20 * DAY), None, false).unwrap();
    assert_eq!((s.wait_secs, s.purge_protection), (20 * DAY, true));
    drop(t);
    // Only the security officer changes the settings.
    let u = open_as(&p, UserType::User, &clock);
    assert!(matches!(
        u.set_destroy_settings(Some(30 * DAY), None, false),
        Err(Error::ActionProhibited(_))
    ));
    assert_eq!(u.destroy_settings().unwrap().wait_secs, 20 * DAY);
}

/// A daemon (quorum) store waits 30 days by default; below 7 days needs quorum approval (the
/// daemon says so after checking the approvals); a crypto officer may not change it; its
/// destroy schedules.
#[test]
fn daemon_store_defaults_and_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let sp = dir.path().join("q.db");
    let t = open_unsealed(&sp, &quorum_store(&sp, &SecurityPolicy::for_daemon()));
    let clock = ManualClock::new(t0());
    t.set_clock(clock.clone());
    assert_eq!(t.destroy_settings().unwrap(), DestroySettings::daemon());
    let so = admin(&t);
    let officer = keeper(&t);
    as_caller(caller(&so, 0), || {
        let r = t.set_destroy_settings(Some(DAY), None, false);
        assert!(matches!(r, Err(Error::ActionProhibited(m)) if m.contains("quorum")), "{r:?}");
        assert_eq!(t.set_destroy_settings(Some(7 * DAY), None, false).unwrap().wait_secs, 7 * DAY);
        assert_eq!(t.set_destroy_settings(Some(DAY), None, true).unwrap().wait_secs, DAY);
    });
    as_caller(caller(&officer, 1), || {
        assert!(matches!(
            t.set_destroy_settings(Some(30 * DAY), None, false),
            Err(Error::ActionProhibited(_))
        ));
        let k = enc_key(&t, "dk");
        let due = clock.now() + DAY;
        assert_eq!(t.destroy_key_object(k).unwrap(), DestroyOutcome::Scheduled { due });
        assert!(t.find_by_label("dk").unwrap().is_empty());
        assert_eq!(t.cancel_destroy(k).unwrap(), KeyState::Active);
        assert_eq!(t.find_by_label("dk").unwrap().len(), 1);
    });
    // A data object is not a key: it goes at once.
    as_caller(caller(&officer, 1), || {
        let d = data_object(&t, "d", true).unwrap();
        assert_eq!(t.destroy_key_object(d).unwrap(), DestroyOutcome::Destroyed);
    });
}

/// Tampering with the schedule in the store (removing the index record, or the attribute) is an
/// integrity failure like any other edit.
#[test]
fn schedule_is_authenticated() {
    let dir = tempfile::tempdir().unwrap();
    let p = store(dir.path());
    let clock = ManualClock::new(t0());
    set_wait(&p, &clock, 30 * DAY);
    let t = open_as(&p, UserType::User, &clock);
    let k = enc_key(&t, "k");
    t.destroy_key_object(k).unwrap();
    drop(t);
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute("DELETE FROM records WHERE kind = 'destroy-due'", []).unwrap();
    drop(c);
    let t = Token::open(&p).unwrap();
    let r = t.login(UserType::User, &user());
    assert_integrity(r, "a deleted destroy-due record");
}
