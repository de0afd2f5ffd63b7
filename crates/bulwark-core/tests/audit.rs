//! The audit log and the tamper response of the embedded token: refused operations are
//! recorded as refused, every tamper trigger leads to its configured response, zeroization is
//! complete and irreversible, and the log verifies offline until someone edits it.

use std::path::{Path, PathBuf};

use bulwark_core::attr::{AttrType, AttrValue};
use bulwark_core::audit::{self, ExportLine};
use bulwark_core::hierarchy::KdfParams;
use bulwark_core::hsm::Hsm as _;
use bulwark_core::mechanism::{KeyGenMechanism, Mechanism};
use bulwark_core::secret::Pin;
use bulwark_core::token::{InitOptions, SecurityPolicy, TamperResponse};
use bulwark_core::{Error, Token, UserType};

const FAST: KdfParams = KdfParams { m_cost: 256, t_cost: 1, p_cost: 1 };

fn so() -> Pin {
    Pin::new(b"so-pin-1234".to_vec())
}
fn user() -> Pin {
    Pin::new(b"user-pin-1234".to_vec())
}

struct Fx {
    dir: tempfile::TempDir,
    path: PathBuf,
}

fn fx(policy: SecurityPolicy) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let opts = InitOptions { kdf: FAST, policy };
    Token::init_with_options(&path, "test", &so(), Some(&user()), &opts).unwrap();
    Fx { dir, path }
}

fn alarm_policy() -> SecurityPolicy {
    SecurityPolicy { so_failure_limit: 3, ..SecurityPolicy::default() }
}

fn zeroize_policy() -> SecurityPolicy {
    SecurityPolicy { tamper_response: TamperResponse::Zeroize, ..alarm_policy() }
}

fn aes(t: &Token, label: &str, exportable: bool) -> u64 {
    t.generate_key(
        KeyGenMechanism::AesKeyGen,
        &[
            (AttrType::Token, AttrValue::Bool(true)),
            (AttrType::Label, AttrValue::Bytes(label.as_bytes().to_vec())),
            (AttrType::ValueLen, AttrValue::Ulong(32)),
            (AttrType::Sensitive, AttrValue::Bool(!exportable)),
            (AttrType::Extractable, AttrValue::Bool(exportable)),
        ],
        1,
    )
    .unwrap()
}

fn gcm() -> Mechanism {
    Mechanism::AesGcm { iv: vec![1; 12], aad: vec![], tag_bits: 128 }
}

/// The records of the whole log, read as the SO would export them.
fn records(path: &Path) -> Vec<audit::AuditRecord> {
    let t = Token::open(path).unwrap();
    if !t.status().unwrap().zeroized {
        t.login(UserType::So, &so()).unwrap();
    }
    t.audit_export(0)
        .unwrap()
        .iter()
        .filter_map(|l| match serde_json::from_str(l).unwrap() {
            ExportLine::Record { record, .. } => Some(record),
            _ => None,
        })
        .collect()
}

fn has(recs: &[audit::AuditRecord], op: &str, result: &str) -> bool {
    recs.iter().any(|r| r.op == op && r.result == result)
}

/// The aggregated `use-count` records of successful `op` calls (the bounded class counts
/// successful key uses instead of writing a record per call).
fn counted<'a>(recs: &'a [audit::AuditRecord], op: &str) -> Vec<&'a audit::AuditRecord> {
    recs.iter().filter(|r| r.use_count().is_some_and(|u| u.op == op)).collect()
}

/// The number of successful `op` calls the log accounts for, counted or recorded one by one.
fn uses(recs: &[audit::AuditRecord], op: &str) -> u64 {
    let one_by_one = recs.iter().filter(|r| r.op == op && r.result == "ok").count() as u64;
    counted(recs, op).iter().filter_map(|r| r.use_count()).map(|u| u.count).sum::<u64>()
        + one_by_one
}

#[test]
fn refused_operations_are_audited_as_refused() {
    let f = fx(alarm_policy());
    let t = Token::open(&f.path).unwrap();
    assert!(matches!(
        t.login(UserType::User, &Pin::new(b"wrong-pin".to_vec())),
        Err(Error::PinIncorrect)
    ));
    t.login(UserType::User, &user()).unwrap();
    let k = aes(&t, "k", false);
    // An AES key may not sign; a sensitive key may not be exported.
    assert!(t.sign(k, &Mechanism::Hmac(bulwark_core::mechanism::DigestAlg::Sha256), b"x").is_err());
    assert!(matches!(t.export_secret(k), Err(Error::KeyUnextractable(_))));
    assert!(t.encrypt(k, &gcm(), b"data").is_ok());
    drop(t);
    let recs = records(&f.path);
    assert!(has(&recs, "login", "pin-incorrect"), "{recs:#?}");
    assert!(has(&recs, "login", "ok"));
    assert!(recs.iter().any(|r| r.op == "sign" && r.result != "ok" && r.label == "k"));
    assert!(has(&recs, "export-secret", "key-unextractable"));
    // The successful encryption is counted (bounded class), under its key, user and mechanism.
    let enc = counted(&recs, "encrypt");
    assert_eq!(enc.len(), 1, "{recs:#?}");
    let enc = enc[0];
    assert_eq!((enc.result.as_str(), enc.label.as_str(), enc.actor.as_str()), ("ok", "k", "user"));
    assert_eq!(enc.mechanism, "0x00001087"); // CKM_AES_GCM
    assert_eq!(uses(&recs, "encrypt"), 1);
    // Sequence numbers are gapless from 0.
    assert!(recs.iter().enumerate().all(|(i, r)| r.seq == i as u64));
    // No record carries the PINs.
    let all = format!("{recs:?}");
    assert!(!all.contains("wrong-pin") && !all.contains("user-pin-1234"));
}

#[test]
fn exported_log_verifies_and_any_edit_is_caught() {
    let f = fx(SecurityPolicy { checkpoint_every_records: 4, ..alarm_policy() });
    let t = Token::open(&f.path).unwrap();
    t.login(UserType::User, &user()).unwrap();
    let k = aes(&t, "k", false);
    for _ in 0..12 {
        t.encrypt(k, &gcm(), b"data").unwrap();
    }
    t.logout().unwrap();
    t.login(UserType::So, &so()).unwrap();
    let pk = t.audit_public_key().unwrap();
    let lines = t.audit_export(0).unwrap();
    let rep = audit::verify_export(&lines, &pk);
    assert!(rep.ok(), "{rep:?}");
    assert!(rep.records >= 8, "{rep:?}");
    assert_eq!(rep.key_uses, 12, "{rep:?}");
    // A partial export verifies too (the header's frontier is covered by the checkpoint).
    let part = t.audit_export(6).unwrap();
    let rep = audit::verify_export(&part, &pk);
    assert!(rep.ok() && rep.since == 6, "{rep:?}");
    // Edit record 5 in the export: caught at 5.
    let edited: Vec<String> = lines
        .iter()
        .map(|l| {
            if l.contains("\"seq\":5,") {
                l.replace("\"result\":\"ok\"", "\"result\":\"x\"")
            } else {
                l.clone()
            }
        })
        .collect();
    assert_eq!(audit::verify_export(&edited, &pk).bad.unwrap().0, 5);
    // A wrong public key fails every checkpoint.
    let (other, _) = audit::AuditSigner::generate().unwrap();
    assert!(!audit::verify_export(&lines, &other.public_key()).ok());
    // Inclusion proof.
    let p = t.audit_prove(7).unwrap();
    audit::verify_proof(&p, &pk, Some(&lines)).unwrap();
    assert!(audit::verify_proof(&p, &pk, Some(&edited)).is_ok()); // record 7 untouched
    let mut bad = p.clone();
    bad.seq = 8;
    assert!(audit::verify_proof(&bad, &pk, None::<&[String]>).is_err());
}

#[test]
fn zeroize_is_complete_and_irreversible() {
    let f = fx(alarm_policy());
    let t = Token::open(&f.path).unwrap();
    t.login(UserType::User, &user()).unwrap();
    let k = aes(&t, "exportable", true);
    let key = t.export_secret(k).unwrap().expose_secret().to_vec();
    drop(t);
    let t = Token::open(&f.path).unwrap();
    // Only the SO zeroizes.
    t.login(UserType::User, &user()).unwrap();
    assert!(matches!(t.zeroize(), Err(Error::UserNotLoggedIn)));
    t.logout().unwrap();
    t.login(UserType::So, &so()).unwrap();
    let pk = t.audit_public_key().unwrap();
    t.zeroize().unwrap();
    assert!(matches!(t.encrypt(k, &gcm(), b"x"), Err(Error::Zeroized)));
    drop(t);
    for p in [f.path.clone(), f.dir.path().join("t.db-wal"), f.dir.path().join("t.db-audit")] {
        if let Ok(bytes) = std::fs::read(&p) {
            assert!(!bytes.windows(key.len()).any(|w| w == key), "key bytes found in {p:?}");
        }
    }
    let t = Token::open(&f.path).unwrap();
    assert!(t.status().unwrap().zeroized);
    for (who, pin) in [(UserType::So, so()), (UserType::User, user())] {
        assert!(matches!(t.login(who, &pin), Err(Error::Zeroized)));
    }
    assert_eq!(t.status().unwrap().objects, 0);
    assert!(!t.status().unwrap().user_pin_initialized);
    // The log survives, ends with the zeroize record, and its last checkpoint covers it.
    let lines = t.audit_export(0).unwrap();
    let rep = audit::verify_export(&lines, &pk);
    assert!(rep.ok(), "{rep:?}");
    let recs = records(&f.path);
    assert_eq!(recs.last().unwrap().op, "zeroize");
}

#[test]
fn tamper_file_raises_the_alarm_until_the_so_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("case-opened");
    let f = fx(SecurityPolicy { tamper_file: Some(flag.clone()), ..alarm_policy() });
    let t = Token::open(&f.path).unwrap();
    t.login(UserType::User, &user()).unwrap();
    let k = aes(&t, "k", false);
    drop(t);
    std::fs::write(&flag, b"").unwrap();
    let t = Token::open(&f.path).unwrap();
    assert!(matches!(t.login(UserType::User, &user()), Err(Error::TamperAlarm(_))));
    let t2 = Token::open(&f.path).unwrap();
    t2.login(UserType::So, &so()).unwrap();
    assert!(matches!(t2.clear_tamper(), Err(Error::ActionProhibited(_))));
    std::fs::remove_file(&flag).unwrap();
    t2.clear_tamper().unwrap();
    drop((t, t2));
    let t = Token::open(&f.path).unwrap();
    t.login(UserType::User, &user()).unwrap();
    t.encrypt(k, &gcm(), b"x").unwrap();
    drop(t);
    let recs = records(&f.path);
    assert!(recs
        .iter()
        .any(|r| r.op == "tamper" && r.result == "alarm" && r.detail == "tamper file present"));
    assert!(has(&recs, "login", "tamper-alarm"));
    assert!(has(&recs, "tamper-clear", "ok"));
}

#[test]
fn tamper_file_with_zeroize_response_zeroizes() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("case-opened");
    let f = fx(SecurityPolicy { tamper_file: Some(flag.clone()), ..zeroize_policy() });
    std::fs::write(&flag, b"").unwrap();
    let t = Token::open(&f.path).unwrap();
    assert!(matches!(t.login(UserType::So, &so()), Err(Error::Zeroized)));
    assert!(Token::open(&f.path).unwrap().status().unwrap().zeroized);
}

#[test]
fn so_pin_failures_past_policy_trigger_the_response() {
    let f = fx(alarm_policy());
    let t = Token::open(&f.path).unwrap();
    for _ in 0..3 {
        assert!(matches!(
            t.login(UserType::So, &Pin::new(b"guess-1234".to_vec())),
            Err(Error::PinIncorrect)
        ));
    }
    assert!(matches!(t.login(UserType::User, &user()), Err(Error::TamperAlarm(_))));
    let f = fx(zeroize_policy());
    let t = Token::open(&f.path).unwrap();
    for _ in 0..3 {
        let _ = t.login(UserType::So, &Pin::new(b"guess-1234".to_vec()));
    }
    assert!(Token::open(&f.path).unwrap().status().unwrap().zeroized);
}

fn edit_db(path: &Path, sql: &str) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(sql).unwrap();
}

#[test]
fn integrity_failure_triggers_the_response() {
    for policy in [alarm_policy(), zeroize_policy()] {
        let f = fx(policy.clone());
        let t = Token::open(&f.path).unwrap();
        t.login(UserType::User, &user()).unwrap();
        let k = aes(&t, "k", false);
        drop(t);
        edit_db(&f.path, "UPDATE objects SET label = x'6a', attrs = attrs");
        let t = Token::open(&f.path).unwrap();
        // The whole store is verified at login: the edited row is found before any use.
        let r = t.login(UserType::User, &user());
        assert!(matches!(r, Err(Error::Integrity(_))), "{r:?}");
        assert!(t.encrypt(k, &gcm(), b"x").is_err());
        let st = Token::open(&f.path).unwrap();
        match policy.tamper_response {
            TamperResponse::Alarm => assert!(st.tamper_alarm().is_some()),
            TamperResponse::Zeroize => assert!(st.status().unwrap().zeroized),
        }
    }
}

#[test]
fn store_rollback_triggers_the_response() {
    let f = fx(alarm_policy());
    let state = f.dir.path().join("state");
    std::env::set_var("BULWARK_STATE_DIR", &state); // this test binary's only env user
    let t = Token::open(&f.path).unwrap();
    t.login(UserType::User, &user()).unwrap();
    drop(t);
    let old = std::fs::read(&f.path).unwrap();
    let t = Token::open(&f.path).unwrap();
    t.login(UserType::User, &user()).unwrap();
    aes(&t, "newer", false);
    drop(t);
    std::fs::write(&f.path, old).unwrap();
    let t = Token::open(&f.path).unwrap();
    let r = t.login(UserType::User, &user());
    assert!(matches!(r, Err(Error::Rollback { .. } | Error::Integrity(_))), "{r:?}");
    assert!(Token::open(&f.path).unwrap().tamper_alarm().is_some());
}

#[test]
fn audit_chain_break_is_detected_and_triggers_the_response() {
    let f = fx(alarm_policy());
    let t = Token::open(&f.path).unwrap();
    t.login(UserType::User, &user()).unwrap();
    aes(&t, "k", false);
    drop(t);
    // The triggers refuse the edit; an attacker with the file drops them first.
    let log = f.dir.path().join("t.db-audit");
    let c = rusqlite::Connection::open(&log).unwrap();
    assert!(c.execute("UPDATE audit_batches SET chains = chains", []).is_err());
    assert!(c.execute("DELETE FROM audit_batches WHERE first_seq = 1", []).is_err());
    c.execute_batch(
        "DROP TRIGGER audit_append_only_u;
         UPDATE audit_batches SET chains = zeroblob(length(chains)) WHERE first_seq = 1;",
    )
    .unwrap();
    drop(c);
    let t = Token::open(&f.path).unwrap();
    t.login(UserType::So, &so()).unwrap();
    assert!(matches!(t.audit_export(0), Err(Error::Integrity(_))));
    assert!(Token::open(&f.path).unwrap().tamper_alarm().is_some());
}

#[test]
fn missing_audit_log_is_tampering() {
    let f = fx(alarm_policy());
    std::fs::remove_file(f.dir.path().join("t.db-audit")).unwrap();
    let t = Token::open(&f.path).unwrap();
    assert!(matches!(t.login(UserType::User, &user()), Err(Error::TamperAlarm(_))));
    // The SO cannot clear it while the log is gone.
    t.login(UserType::So, &so()).unwrap();
    assert!(t.clear_tamper().is_err());
}

#[test]
fn external_signal_triggers_the_response() {
    let f = fx(zeroize_policy());
    let t = Token::open(&f.path).unwrap();
    t.login(UserType::User, &user()).unwrap();
    t.tamper_signal("enclosure opened");
    assert!(matches!(t.random(&mut [0u8; 4]), Err(Error::Zeroized)));
    let recs = records(&f.path);
    assert!(recs.iter().any(|r| r.op == "tamper" && r.detail == "enclosure opened"));
}

#[test]
fn a_front_door_can_name_the_actor() {
    let f = fx(alarm_policy());
    let t = Token::open(&f.path).unwrap();
    t.login(UserType::User, &user()).unwrap();
    let actor = audit::Actor {
        name: "alice".into(),
        role: "crypto-user".into(),
        client: "mtls CN=alice-laptop 10.0.0.7:51234".into(),
    };
    audit::with_actor(actor, || t.random(&mut [0u8; 8])).unwrap();
    t.random(&mut [0u8; 8]).unwrap();
    drop(t);
    let recs = records(&f.path);
    // Random generation is counted per principal (bounded class).
    let r = counted(&recs, "random");
    assert_eq!(r.len(), 2, "{recs:#?}");
    let alice = r.iter().find(|r| r.actor == "alice").unwrap();
    assert!(alice.client.contains("CN=alice-laptop"));
    assert!(r.iter().any(|r| r.actor == "user" && !r.client.contains("alice")));
}

#[test]
fn key_use_through_key_for_is_audited_as_init() {
    // The PKCS#11 module authorizes a key once at C_SignInit (Hsm::prepare) and then signs
    // with the returned key: the authorization is the audited event.
    let f = fx(alarm_policy());
    let t = Token::open(&f.path).unwrap();
    t.login(UserType::User, &user()).unwrap();
    let k = aes(&t, "k", false);
    t.prepare(k, bulwark_core::token::Usage::Encrypt, &gcm()).unwrap();
    assert!(t.prepare(k, bulwark_core::token::Usage::Sign, &gcm()).is_err());
    drop(t);
    let recs = records(&f.path);
    let init = counted(&recs, "encrypt-init");
    assert!(init.len() == 1 && init[0].label == "k", "{recs:#?}");
    assert_eq!(uses(&recs, "encrypt-init"), 1);
    assert!(recs.iter().any(|r| r.op == "sign-init" && r.result != "ok"));
}

#[test]
fn reinit_keeps_the_old_log_and_starts_a_new_one() {
    let f = fx(alarm_policy());
    let old_id = Token::open(&f.path).unwrap().status().unwrap().store_id;
    assert!(Token::reinit(&f.path, "fresh", &Pin::new(b"wrong-so-pin".to_vec())).is_err());
    Token::reinit(&f.path, "fresh", &so()).unwrap();
    let kept = f.dir.path().join(format!("t.db-audit.{old_id}"));
    assert!(kept.exists(), "old log kept beside the store");
    let t = Token::open(&f.path).unwrap();
    assert_ne!(t.status().unwrap().store_id, old_id);
    t.login(UserType::So, &so()).unwrap();
    let lines = t.audit_export(0).unwrap();
    let rep = audit::verify_export(&lines, &t.audit_public_key().unwrap());
    assert!(rep.ok(), "{rep:?}");
    assert!(lines.iter().any(|l| l.contains("\"op\":\"init\"")));
    // The old log ends with the refused and the successful reinit.
    let c = rusqlite::Connection::open(&kept).unwrap();
    let n: i64 = c.query_row("SELECT sum(count) FROM audit_batches", [], |r| r.get(0)).unwrap();
    assert!(n >= 3, "{n}");
}

/// With `audit_key_use` off, successful key uses leave no record, refused ones still do, and
/// key management is always recorded; with the default policy every key use is recorded.
#[test]
fn key_use_audit_policy() {
    for on in [true, false] {
        let f = fx(SecurityPolicy { audit_key_use: on.into(), ..alarm_policy() });
        {
            let t = Token::open(&f.path).unwrap();
            t.login(UserType::User, &user()).unwrap();
            let h = aes(&t, "k", false);
            let ct = t.encrypt(h, &gcm(), b"data").unwrap();
            t.decrypt(h, &gcm(), &ct).unwrap();
            let mut bad = ct.clone();
            bad[0] ^= 1;
            assert!(t.decrypt(h, &gcm(), &bad).is_err());
        }
        let recs = records(&f.path);
        assert!(has(&recs, "generate-key", "ok"), "key management always recorded");
        let ok_uses = recs
            .iter()
            .filter(|r| (r.op == "encrypt" || r.op == "decrypt") && r.result == "ok")
            .count();
        assert_eq!(ok_uses, if on { 2 } else { 0 }, "audit_key_use = {on}");
        assert!(
            recs.iter().any(|r| r.op == "decrypt" && r.result != "ok"),
            "a refused decrypt is recorded either way (audit_key_use = {on})"
        );
    }
}

/// A batch writes one record per item, in one commit (one `audit_batches` row), before any
/// result is returned; a failing item fails the batch and is recorded as refused; with
/// `audit_key_use` off only the failures are recorded.
#[test]
fn batches_record_every_item_in_one_commit() {
    for on in [true, false] {
        let f = fx(SecurityPolicy { audit_key_use: on.into(), ..alarm_policy() });
        let log = f.dir.path().join("t.db-audit");
        let rows = || -> i64 {
            let c = rusqlite::Connection::open(&log).unwrap();
            c.query_row("SELECT count(*) FROM audit_batches", [], |r| r.get(0)).unwrap()
        };
        let t = Token::open(&f.path).unwrap();
        t.login(UserType::User, &user()).unwrap();
        let h = aes(&t, "k", false);
        let items: Vec<(Mechanism, Vec<u8>)> = (0..10u8)
            .map(|i| {
                let m = Mechanism::AesGcm { iv: vec![i; 12], aad: vec![], tag_bits: 128 };
                (m, vec![i; 100])
            })
            .collect();
        let before = rows();
        let cts = t.encrypt_batch(h, &items).unwrap();
        assert_eq!(cts.len(), 10);
        // The ten records went in with one commit: one more `audit_batches` row at most.
        assert_eq!(rows() - before, i64::from(on));
        for ((m, pt), ct) in items.iter().zip(&cts) {
            assert_eq!(t.decrypt(h, m, ct).unwrap().expose_secret(), pt.as_slice());
        }
        let recs = records(&f.path);
        let enc_ok = recs.iter().filter(|r| r.op == "encrypt" && r.result == "ok").count();
        assert_eq!(enc_ok, if on { 10 } else { 0 }, "one record per item (policy {on})");
        // Mixed mechanism types are refused; a bad item (IV of the wrong size) fails the batch
        // and is recorded as refused either way.
        let mut mixed = items.clone();
        mixed[3].0 = Mechanism::AesKeyWrapPad;
        assert!(t.encrypt_batch(h, &mixed).is_err());
        let mut bad = items.clone();
        bad[5].0 = Mechanism::AesGcm { iv: vec![0; 3], aad: vec![], tag_bits: 128 };
        assert!(t.encrypt_batch(h, &bad).is_err());
        let recs = records(&f.path);
        assert!(recs.iter().any(|r| r.op == "encrypt" && r.result != "ok"), "policy {on}");
        // A key that may not sign refuses the whole batch at the gate, recorded once.
        assert!(t.sign_batch(h, &Mechanism::EcdsaSha256, &[vec![1], vec![2]]).is_err());
        let refused =
            records(&f.path).iter().filter(|r| r.op == "sign" && r.result != "ok").count();
        assert_eq!(refused, 1);
    }
}

// --- durability classes, crash evidence, use counts (issue 10) and audit rollback, export
// --- strictness and the final log (issue 9 items 5 and 12) ----------------------------------

use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;

use bulwark_core::audit::{
    AuditEvent, AuditLog, AuditRecord, CheckpointPolicy, Durability, UseKey,
};

/// Child-process mode of this test binary (run by the tests below with `--ignored --exact`):
/// `BULWARK_AUDIT_CHILD=append:<store>:<log id hex>` appends bounded records forever, printing
/// `<n> <seq>` per record once `append_with` returned (paced); `count:<store>:<id>:<n>` counts `n`
/// uses on 4 threads and closes the log cleanly.
#[test]
#[ignore = "child process of the crash and use-count tests"]
fn child_process() {
    let Ok(spec) = std::env::var("BULWARK_AUDIT_CHILD") else { return };
    let parts: Vec<&str> = spec.split(':').collect();
    if parts[0] == "generate" {
        // Generates token keys forever through the token (store commit, then audit record).
        let t = Token::open(Path::new(parts[1])).unwrap();
        t.login(UserType::User, &user()).unwrap();
        let out = std::io::stdout();
        let mut out = out.lock();
        for n in 0u64.. {
            aes(&t, &format!("k{n}"), false);
            writeln!(out, "{n}").unwrap();
            out.flush().unwrap();
        }
    }
    let id: [u8; 16] = hex::decode(parts[2]).unwrap().try_into().unwrap();
    let log = Arc::new(
        AuditLog::open(Path::new(parts[1]), id, false, CheckpointPolicy::default()).unwrap(),
    );
    match parts[0] {
        "append" => {
            let out = std::io::stdout();
            let mut out = out.lock();
            writeln!(out, "opener {}", log.opener_id()).unwrap();
            for n in 0u64.. {
                let ev =
                    AuditEvent { op: "sign", detail: format!("n={n}"), ..AuditEvent::default() };
                let seq = log.append_with(&ev, Durability::Bounded).unwrap();
                writeln!(out, "{n} {seq}").unwrap();
                out.flush().unwrap();
                // Paced so that a kill lands anywhere: before, inside or after a window.
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
        "count" => {
            let n: u64 = parts[3].parse().unwrap();
            count_uses(&log, n, 4, "child");
        }
        m => panic!("unknown child mode {m}"),
    }
}

/// Killed at random points while generating keys (between a key's store commit and its audit
/// record included), the token never leaves a committed key without a record: whatever the
/// kills left in the outbox is recorded as `audit-recovered` at the next unlock, and every key
/// in the store is named by a record.
#[test]
fn killed_generator_leaves_no_key_without_a_record() {
    use std::io::BufRead as _;
    let f = fx(SecurityPolicy::default());
    let spec = format!("generate:{}", f.path.display());
    for round in 0..8u64 {
        let mut c = child(&spec).spawn().unwrap();
        let mut lines = std::io::BufReader::new(c.stdout.take().unwrap()).lines();
        // Past the login, into the generation loop, then a kill somewhere in it.
        // (the test harness prints its own lines first)
        let mut made = 0;
        while made <= round {
            let l = lines.next().unwrap().unwrap();
            if l.trim().parse::<u64>().is_ok() {
                made += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_micros(round * 700));
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let t = Token::open(&f.path).unwrap();
    t.login(UserType::User, &user()).unwrap();
    let recovered = t.recover_audit_outbox(std::time::Duration::ZERO).unwrap();
    let keys: Vec<String> = t
        .find(&[(AttrType::Token, AttrValue::Bool(true))])
        .unwrap()
        .into_iter()
        .map(|h| match t.attribute(h, AttrType::UniqueId).unwrap() {
            AttrValue::Bytes(b) => String::from_utf8(b).unwrap(),
            v => panic!("{v:?}"),
        })
        .collect();
    drop(t);
    let recs = records(&f.path);
    let named = |uid: &str| {
        recs.iter().any(|r| {
            (r.op == "generate-key" && r.result == "ok" && r.object == uid)
                || (r.op == "audit-recovered" && r.object.split(',').any(|o| o == uid))
        })
    };
    let missing: Vec<&String> = keys.iter().filter(|k| !named(k)).collect();
    eprintln!("{} keys, {recovered} recovered from the outbox", keys.len());
    assert!(keys.len() >= 36, "{} keys", keys.len());
    assert!(missing.is_empty(), "keys without an audit record: {missing:?}");
    assert_eq!(recs.iter().filter(|r| r.op == "audit-recovered").count(), recovered);
}

fn count_uses(log: &Arc<AuditLog>, n: u64, threads: u64, who: &str) {
    let actor = audit::Actor { name: who.into(), role: "crypto-user".into(), client: "t".into() };
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let c = log.use_counter(UseKey::new(&actor, t, "sign", Some(0x1041), "00ff", "k"));
            let share = n / threads + u64::from(t < n % threads);
            std::thread::spawn(move || {
                for _ in 0..share {
                    c.hit();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

fn child(spec: &str) -> std::process::Command {
    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
    c.args(["--ignored", "--exact", "child_process", "--nocapture", "--test-threads", "1"])
        .env("BULWARK_AUDIT_CHILD", spec)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    c
}

fn new_log(dir: &Path) -> (PathBuf, [u8; 16], Arc<audit::AuditSigner>) {
    let store = dir.join("s.db");
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id).unwrap();
    drop(AuditLog::open(&store, id, true, CheckpointPolicy::default()).unwrap());
    (store, id, Arc::new(audit::AuditSigner::generate().unwrap().0))
}

/// Opens the log (as the next opener), signs a checkpoint and returns the verified records.
fn verified_records(
    store: &Path,
    id: [u8; 16],
    signer: &Arc<audit::AuditSigner>,
) -> (Vec<AuditRecord>, audit::VerifyReport) {
    let log = AuditLog::open(store, id, false, CheckpointPolicy::default()).unwrap();
    log.set_signer(Some(signer.clone()));
    log.checkpoint().unwrap();
    let lines: Vec<String> =
        log.export_iter(0).unwrap().map(|l| audit::line_json(&l.unwrap()).unwrap()).collect();
    let rep = audit::verify_export(&lines, &signer.public_key());
    assert!(rep.ok(), "{rep:?}");
    let recs = lines
        .iter()
        .filter_map(|l| match audit::parse_line(l).unwrap() {
            ExportLine::Record { record, .. } => Some(record),
            _ => None,
        })
        .collect();
    (recs, rep)
}

/// A process appending bounded records is killed (SIGKILL) at a different point in each
/// round. After every round the log verifies, the next opener has recorded an
/// `unclean-shutdown` naming the dead opener and its last stored record, and every record the
/// child was told was sequenced is in the log at that number unless it came after that last
/// stored record: never a gap without evidence.
#[test]
fn killed_appender_leaves_an_unclean_shutdown_record_and_no_silent_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id, signer) = new_log(dir.path());
    let mut seen_unclean = 0;
    for round in 0..5u64 {
        let mut ch =
            child(&format!("append:{}:{}", store.display(), hex::encode(id))).spawn().unwrap();
        let mut lines = BufReader::new(ch.stdout.take().unwrap()).lines();
        // (The test harness prints its own text first, `test child_process ... ` included.)
        let opener = lines
            .by_ref()
            .find_map(|l| l.unwrap().split_once("opener ").map(|(_, id)| id.to_owned()))
            .unwrap();
        // Kill after a different number of records each round (some rounds mid-window).
        let target = 20 + round * 173 % 600;
        let mut got: Vec<(u64, u64)> = Vec::new();
        while (got.len() as u64) < target {
            let l = lines.next().unwrap().unwrap();
            let (n, s) = l.split_once(' ').unwrap();
            got.push((n.parse().unwrap(), s.parse().unwrap()));
        }
        ch.kill().unwrap(); // SIGKILL
        ch.wait().unwrap();
        for l in lines.map_while(std::result::Result::ok) {
            if let Some((n, s)) = l.split_once(' ') {
                if let (Ok(n), Ok(s)) = (n.parse(), s.parse()) {
                    got.push((n, s));
                }
            }
        }
        let (recs, rep) = verified_records(&store, id, &signer);
        assert!(recs.iter().enumerate().all(|(i, r)| r.seq == i as u64), "gapless numbering");
        let us: Vec<_> = rep.unclean_shutdowns.iter().filter(|u| u.opener == opener).collect();
        assert_eq!(us.len(), 1, "round {round}: one unclean-shutdown for {opener}: {rep:?}");
        seen_unclean += 1;
        assert_eq!(rep.unclean_shutdowns.len(), seen_unclean);
        let last = us[0].last_durable_seq.expect("last durable sequence number named");
        let opened = recs
            .iter()
            .find(|r| r.op == "audit-open" && r.detail.contains(&opener))
            .expect("the child registered itself")
            .seq;
        assert!(last >= opened && last < us[0].seq, "{last} {opened} {}", us[0].seq);
        let lost = got.iter().filter(|(_, seq)| *seq > last).count();
        eprintln!(
            "round {round}: {} records sequenced, {lost} after the last stored one",
            got.len()
        );
        for (n, seq) in &got {
            if *seq <= last {
                let r = &recs[usize::try_from(*seq).unwrap()];
                assert_eq!(
                    (r.op.as_str(), r.detail.clone()),
                    ("sign", format!("n={n}")),
                    "round {round}: record {seq} reported to the child is not in the log"
                );
            }
        }
        // Everything the child stored is contiguous from its first record.
        let mine: Vec<&AuditRecord> =
            recs.iter().filter(|r| r.seq > opened && r.seq <= last).collect();
        assert!(mine.iter().enumerate().all(|(k, r)| r.detail == format!("n={k}")));
    }
}

/// Uses counted on pre-registered counters by several threads of two processes are all in the
/// exported log, as aggregated `use-count` records covered by a checkpoint.
#[test]
fn every_counted_use_is_in_the_exported_log() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id, signer) = new_log(dir.path());
    let n_child = 123_457;
    let mut ch =
        child(&format!("count:{}:{}:{n_child}", store.display(), hex::encode(id))).spawn().unwrap();
    let log = Arc::new(AuditLog::open(&store, id, false, CheckpointPolicy::default()).unwrap());
    let n_here = 98_765;
    count_uses(&log, n_here, 3, "parent");
    assert!(ch.wait().unwrap().success());
    drop(log);
    let (recs, rep) = verified_records(&store, id, &signer);
    let total: u64 = recs.iter().filter_map(AuditRecord::use_count).map(|u| u.count).sum();
    assert_eq!(total, n_child + n_here);
    assert_eq!(rep.key_uses, n_child + n_here);
    let by = |who: &str| -> u64 {
        recs.iter()
            .filter(|r| r.actor == who)
            .filter_map(AuditRecord::use_count)
            .map(|u| u.count)
            .sum()
    };
    assert_eq!((by("child"), by("parent")), (n_child, n_here));
    assert!(recs.iter().filter_map(AuditRecord::use_count).all(|u| u.op == "sign"));
    assert!(rep.unclean_shutdowns.is_empty(), "both closed cleanly");
}

/// The default policy records successful key uses in the bounded class: they are in the log
/// (the export writes what is pending first), and a token's clean close writes them.
#[test]
fn bounded_key_use_records_are_exported_and_survive_a_clean_close() {
    let f = fx(alarm_policy());
    assert_eq!(SecurityPolicy::default().audit_key_use, audit::AuditKeyUse::Bounded);
    {
        let t = Token::open(&f.path).unwrap();
        t.login(UserType::User, &user()).unwrap();
        let k = aes(&t, "k", false);
        for _ in 0..25 {
            t.encrypt(k, &gcm(), b"data").unwrap();
        }
    }
    let recs = records(&f.path);
    assert_eq!(uses(&recs, "encrypt"), 25, "{recs:#?}");
    assert!(!recs.iter().any(|r| r.op == "unclean-shutdown"));
}

/// The default (bounded) policy counts every successful key use: several threads preparing
/// keys, using them and calling the one-shot API leave aggregated counts that add up to the
/// calls made, under the right key and user; the verifier's key-use total agrees; a refused use
/// is still a record of its own.
#[test]
fn every_key_use_of_a_multithreaded_run_is_counted() {
    let f = fx(alarm_policy());
    let (threads, rounds, per_prepare) = (4u64, 150u64, 3u64);
    {
        let t = Token::open(&f.path).unwrap();
        t.login(UserType::User, &user()).unwrap();
        let k = aes(&t, "k", false);
        std::thread::scope(|s| {
            for _ in 0..threads {
                let t = t.clone();
                s.spawn(move || {
                    for _ in 0..rounds {
                        let p = t.prepare(k, bulwark_core::token::Usage::Encrypt, &gcm()).unwrap();
                        for _ in 0..per_prepare {
                            p.encrypt(&gcm(), b"data").unwrap();
                        }
                        t.encrypt(k, &gcm(), b"one-shot").unwrap();
                    }
                });
            }
        });
        assert!(t.prepare(k, bulwark_core::token::Usage::Sign, &gcm()).is_err());
        // A batch of 10 is counted as 10 uses.
        let items: Vec<(Mechanism, Vec<u8>)> = (0..10u8)
            .map(|i| (Mechanism::AesGcm { iv: vec![i; 12], aad: vec![], tag_bits: 128 }, vec![i]))
            .collect();
        assert_eq!(t.encrypt_batch(k, &items).unwrap().len(), 10);
    }
    let recs = records(&f.path);
    assert_eq!(uses(&recs, "encrypt-init"), threads * rounds);
    assert_eq!(uses(&recs, "encrypt"), threads * rounds * (per_prepare + 1) + 10);
    assert!(counted(&recs, "encrypt").iter().all(|r| r.label == "k" && r.actor == "user"));
    assert!(recs.iter().any(|r| r.op == "sign-init" && r.result != "ok"));
    let t = Token::open(&f.path).unwrap();
    t.login(UserType::So, &so()).unwrap();
    let rep = audit::verify_export(&t.audit_export(0).unwrap(), &t.audit_public_key().unwrap());
    assert!(rep.ok(), "{rep:?}");
    assert_eq!(rep.key_uses, threads * rounds * (per_prepare + 1) + 10);
}

/// After zeroization the log is final: refused requests (from the token that zeroized, from
/// one opened before, and from a later one) append nothing, and the export still verifies.
#[test]
fn refused_calls_after_zeroize_leave_a_verifiable_log() {
    let f = fx(alarm_policy());
    let early = Token::open(&f.path).unwrap();
    early.login(UserType::User, &user()).unwrap();
    let k = aes(&early, "k", false);
    let t = Token::open(&f.path).unwrap();
    t.login(UserType::So, &so()).unwrap();
    let pk = t.audit_public_key().unwrap();
    t.zeroize().unwrap();
    assert!(matches!(t.encrypt(k, &gcm(), b"x"), Err(Error::Zeroized)));
    assert!(early.encrypt(k, &gcm(), b"x").is_err());
    assert!(matches!(early.login(UserType::So, &so()), Err(Error::Zeroized)));
    let log = early.audit_log().unwrap();
    assert!(matches!(
        log.append(&AuditEvent { op: "login", ..AuditEvent::default() }),
        Err(Error::Zeroized)
    ));
    drop((t, early));
    let later = Token::open(&f.path).unwrap();
    assert!(matches!(later.login(UserType::User, &user()), Err(Error::Zeroized)));
    drop(later);
    let t = Token::open(&f.path).unwrap();
    let lines = t.audit_export(0).unwrap();
    let rep = audit::verify_export(&lines, &pk);
    assert!(rep.ok(), "{rep:?}");
    let recs = records(&f.path);
    assert_eq!(recs.last().unwrap().op, "zeroize");
}

/// `verify` refuses export lines with fields it does not check, naming the line.
#[test]
fn verify_rejects_unknown_fields() {
    let f = fx(alarm_policy());
    let t = Token::open(&f.path).unwrap();
    t.login(UserType::So, &so()).unwrap();
    let pk = t.audit_public_key().unwrap();
    let lines = t.audit_export(0).unwrap();
    assert!(audit::verify_export(&lines, &pk).ok());
    for at in [0, 1, lines.len() - 1] {
        let mut edited = lines.clone();
        edited[at] = edited[at].replacen('{', "{\"approved_by\":\"mallory\",", 1);
        let rep = audit::verify_export(&edited, &pk);
        let (_, why) = rep.bad.expect("unknown field accepted");
        assert!(why.contains(&format!("line {}", at + 1)) && why.contains("approved_by"), "{why}");
    }
}

/// The flusher drains the use counters while appenders keep the log at its hold-back limit
/// (a small window, bounded batches from several threads): it never waits for room it is itself
/// to make. Before, it did, and every appender and the daemon's shutdown waited forever.
#[test]
fn counted_uses_under_hold_back_never_stop_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id, signer) = new_log(dir.path());
    let window = audit::Window { max_delay: std::time::Duration::from_millis(1), max_records: 2 };
    let log = Arc::new(
        AuditLog::open_with(&store, id, false, CheckpointPolicy::default(), window).unwrap(),
    );
    let actor = audit::Actor { name: "u".into(), role: "crypto-user".into(), client: "t".into() };
    let (tx, rx) = std::sync::mpsc::channel();
    let mut hs = Vec::new();
    for t in 0..6u64 {
        let (log, actor, tx) = (log.clone(), actor.clone(), tx.clone());
        hs.push(std::thread::spawn(move || {
            let c = log.use_counter(UseKey::new(&actor, t, "sign", None, "00ff", "k"));
            let ev = AuditEvent { op: "encrypt", result: "ok", ..AuditEvent::default() };
            for _ in 0..400 {
                c.hit();
                log.append_all_with(
                    &[ev.clone(), ev.clone(), ev.clone()],
                    audit::Durability::Bounded,
                )
                .unwrap();
            }
            tx.send(()).unwrap();
        }));
    }
    for _ in 0..6 {
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("appenders stopped: the log no longer makes progress");
    }
    for h in hs {
        h.join().unwrap();
    }
    drop(log);
    let (recs, rep) = verified_records(&store, id, &signer);
    assert!(rep.ok(), "{rep:?}");
    let counted: u64 = recs.iter().filter_map(AuditRecord::use_count).map(|u| u.count).sum();
    assert_eq!(counted, 6 * 400);
    assert_eq!(recs.iter().filter(|r| r.op == "encrypt").count(), 6 * 400 * 3);
}
