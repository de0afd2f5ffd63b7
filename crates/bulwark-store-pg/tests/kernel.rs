//! The security kernel (`Token<PgStore>`) on a real PostgreSQL server: a quorum store created
//! in the database, unsealed by its custodians' shares as the daemon does, users, keys,
//! signatures, a second node on the same database; then the tamper and rollback attacks of the
//! SQLite attack suite applied to the database with SQL: every authenticated row deleted,
//! edited, duplicated and replayed, the header edited, the whole database restored to an older
//! state. Each must be reported as an integrity failure at the next unseal or verification.

#![allow(missing_docs, clippy::too_many_lines)]

mod support;

use std::path::Path;

use bulwark_core::attr::{AttrType, AttrValue};
use bulwark_core::crypto::Curve;
use bulwark_core::hierarchy::KdfParams;
use bulwark_core::kernel::{as_caller, Caller, Grantee, Ops, Principal, Role};
use bulwark_core::mechanism::{KeyGenMechanism, Mechanism};
use bulwark_core::seal::{Progress, QuorumPolicy, ShareFile, UnsealError, Unsealer};
use bulwark_core::store::Store;
use bulwark_core::token::{Credentials, InitialUser, SecurityPolicy};
use bulwark_core::{Error, Token};
use bulwark_store_pg::{init_quorum, PgOptions, PgStore};

const FAST: KdfParams = KdfParams { m_cost: 256, t_cost: 1, p_cost: 1 };
const S: u64 = 1;

fn opts() -> PgOptions {
    PgOptions { pool_size: 4, ..PgOptions::default() }
}

/// A quorum store (2 of 3) in the database with its first security officer `admin`; returns
/// the custodians' share files.
fn create(url: &str, audit_base: &Path) -> Vec<String> {
    let admin = InitialUser {
        name: "admin".into(),
        role: Role::SecurityOfficer,
        password: zeroize::Zeroizing::new(b"admin-password".to_vec()),
    };
    let policy = SecurityPolicy::for_daemon();
    let init = init_quorum(url, &opts(), audit_base, "pg-kernel", 3, 2, &policy, &[admin]).unwrap();
    init.shares.iter().map(|s| ShareFile::new(&init, s, None, FAST).unwrap().to_json()).collect()
}

/// Unseals `t` as the daemon does: the store's quorum policy, one share at a time.
fn unseal<St: Store>(t: &Token<St>, policy_from: &St, shares: &[String]) -> Result<(), Error> {
    let mut u = Unsealer::new(QuorumPolicy::from_store(policy_from)?);
    for json in shares {
        let share = ShareFile::parse(json.as_bytes()).unwrap().share(None).unwrap();
        match u.submit(share) {
            Ok(Progress::Pending { .. }) => {}
            Ok(Progress::Complete(keys)) => {
                let (vault, ik) = *keys;
                return t.unseal(vault, ik);
            }
            Err(UnsealError::Core(e)) => return Err(e),
            Err(e) => return Err(Error::Store(format!("share refused: {e}"))),
        }
    }
    Err(Error::Store("unseal incomplete".into()))
}

/// One node: a token over its own pool, with its own audit log, unsealed.
fn node(url: &str, audit_base: &Path, shares: &[String]) -> Token<PgStore> {
    let t = Token::open_store(PgStore::open(url, &opts()).unwrap(), audit_base).unwrap();
    unseal(&t, &PgStore::open(url, &opts()).unwrap(), shares).unwrap();
    t
}

fn caller(p: &Principal) -> Caller {
    Caller { principal: p.clone(), login: 1, client: "pg-kernel-test".into() }
}

fn login<St: Store>(t: &Token<St>, name: &str, password: &[u8]) -> Principal {
    t.authenticate(&Credentials { name, password, totp: None, cert_sha256: None }).unwrap()
}

fn label(l: &str) -> (AttrType, AttrValue) {
    (AttrType::Label, AttrValue::Bytes(l.as_bytes().to_vec()))
}

fn flag(t: AttrType, v: bool) -> (AttrType, AttrValue) {
    (t, AttrValue::Bool(v))
}

fn ec_pair<St: Store>(t: &Token<St>, l: &str) -> (u64, u64) {
    t.generate_key_pair(
        KeyGenMechanism::EcKeyPairGen,
        &[
            flag(AttrType::Token, true),
            label(l),
            flag(AttrType::Verify, true),
            (AttrType::EcParams, AttrValue::Bytes(Curve::P256.oid_der().to_vec())),
        ],
        &[flag(AttrType::Token, true), label(l), flag(AttrType::Sign, true)],
        S,
    )
    .unwrap()
}

fn is_integrity(e: &Error) -> bool {
    matches!(e, Error::Integrity(_) | Error::Rollback { .. }) && e.to_string().contains("integrity")
}

/// Officers and keys on one node; the second node sees them at once, and a destroy on one is
/// refused on the other by the time it returns. Audit records are written on each node.
#[test]
fn the_kernel_runs_on_postgres() {
    let server = pg_or_skip!();
    let db = support::Db::new(server);
    let dir = tempfile::tempdir().unwrap();
    let base1 = dir.path().join("node1");
    let shares = create(&db.url, &base1);
    let n1 = node(&db.url, &base1, &shares);
    // Node 2 records nothing: two nodes of one store in one process would share the host's
    // audit-log mark (one log per store and host); the per-node audit chains of the cluster
    // are the rest of issue 12 (docs/cluster.md).
    let n2 =
        Token::open_store_insecure_without_audit(PgStore::open(&db.url, &opts()).unwrap()).unwrap();
    unseal(&n2, &PgStore::open(&db.url, &opts()).unwrap(), &shares).unwrap();
    let admin = login(&n1, "admin", b"admin-password");
    as_caller(caller(&admin), || {
        n1.create_user("keeper", Role::CryptoOfficer, b"keeper-password", None).unwrap();
        n1.create_user("app", Role::CryptoUser, b"app-password", None).unwrap();
    });
    // Users made on node 1 log in on node 2.
    let keeper2 = login(&n2, "keeper", b"keeper-password");
    let keeper1 = login(&n1, "keeper", b"keeper-password");
    let (pubk, privk) = as_caller(caller(&keeper1), || ec_pair(&n1, "signer"));
    let sig =
        as_caller(caller(&keeper1), || n1.sign(privk, &Mechanism::EcdsaSha256, b"msg")).unwrap();
    // Node 2 finds the key by label and verifies and signs with it.
    as_caller(caller(&keeper2), || {
        let mut found = n2.find(&[label("signer")]).unwrap();
        found.sort_unstable();
        let mut want = vec![pubk, privk];
        want.sort_unstable();
        assert_eq!(found, want);
        n2.verify(pubk, &Mechanism::EcdsaSha256, b"msg", &sig).unwrap();
        let sig2 = n2.sign(privk, &Mechanism::EcdsaSha256, b"msg2").unwrap();
        as_caller(caller(&keeper1), || {
            n1.verify(pubk, &Mechanism::EcdsaSha256, b"msg2", &sig2).unwrap();
        });
    });
    // A grant made on node 1 is honoured on node 2; its revocation too.
    let app2 = login(&n2, "app", b"app-password");
    as_caller(caller(&app2), || {
        assert!(n2.sign(privk, &Mechanism::EcdsaSha256, b"x").is_err(), "no grant yet");
    });
    as_caller(caller(&keeper1), || {
        n1.set_grant(privk, &Grantee::User("app".into()), Some(Ops::SIGN)).unwrap();
    });
    as_caller(caller(&app2), || n2.sign(privk, &Mechanism::EcdsaSha256, b"x")).unwrap();
    as_caller(caller(&keeper1), || n1.set_grant(privk, &Grantee::User("app".into()), None))
        .unwrap();
    as_caller(caller(&app2), || {
        assert!(n2.sign(privk, &Mechanism::EcdsaSha256, b"x").is_err(), "grant revoked");
    });
    // Destroyed on node 2: refused on node 1 at once.
    as_caller(caller(&keeper2), || n2.destroy_object(privk)).unwrap();
    as_caller(caller(&keeper1), || {
        let e = n1.sign(privk, &Mechanism::EcdsaSha256, b"msg").unwrap_err();
        assert!(matches!(e, Error::ObjectHandleInvalid), "{e:?}");
    });
    // Both nodes verify the whole store; each node's audit log recorded its calls.
    assert_eq!(n1.verify_store().unwrap(), n2.verify_store().unwrap());
    let log = n1.audit_log().expect("node 1 keeps an audit log");
    let lines: Vec<String> =
        log.export_iter(0).unwrap().map(|l| format!("{:?}", l.unwrap())).collect();
    // (User administration is recorded by the daemon, not the kernel.)
    for what in
        ["op: \"unseal\"", "op: \"generate-key-pair\"", "op: \"sign\"", "object-handle-invalid"]
    {
        assert!(lines.iter().any(|l| l.contains(what)), "{what} audited: {lines:?}");
    }
    // Sealing again and reopening needs the quorum again.
    n1.lock();
    let again = Token::open_store(PgStore::open(&db.url, &opts()).unwrap(), &base1).unwrap();
    let r = as_caller(caller(&admin), || again.list_users());
    assert!(r.is_err(), "sealed: nothing served");
    unseal(&again, &PgStore::open(&db.url, &opts()).unwrap(), &shares).unwrap();
    // A daemon store schedules destructions (30 days): the private key's row stays, without
    // use, until its wait ends.
    assert_eq!(again.verify_store().unwrap(), 2, "the public key and the scheduled private key");
}

// ---------------------------------------------------------------------------------------------
// Attacks with SQL.

const TABLES: [&str; 6] = ["header", "commits", "keyslots", "objects", "records", "attempts"];

/// Saves every table of the store under `name` (tables beside the store's, which it ignores).
fn snapshot(c: &mut postgres::Client, name: &str) {
    for t in TABLES {
        c.batch_execute(&format!(
            "DROP TABLE IF EXISTS {name}_{t}; CREATE TABLE {name}_{t} AS SELECT * FROM {t};"
        ))
        .unwrap();
    }
}

/// A digest of every table of the store, to tell an attack that changed nothing.
fn digest(c: &mut postgres::Client) -> String {
    TABLES
        .iter()
        .map(|t| {
            c.query_one(
                &format!("SELECT coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x"),
                &[],
            )
            .unwrap()
            .get::<_, String>(0)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Puts every table back as saved under `name`.
fn restore(c: &mut postgres::Client, name: &str) {
    use std::fmt::Write;
    let mut sql = String::from("BEGIN;");
    for t in TABLES {
        let _ = write!(sql, "DELETE FROM {t}; INSERT INTO {t} SELECT * FROM {name}_{t};");
    }
    sql.push_str("COMMIT;");
    c.batch_execute(&sql).unwrap();
}

/// One authenticated row: its table, the SQL condition that selects it, and its bytea columns.
#[derive(Debug, Clone)]
struct RowRef {
    table: &'static str,
    cond: String,
}

fn rows(c: &mut postgres::Client, snap: &str) -> Vec<RowRef> {
    let mut v = Vec::new();
    for r in c.query(&format!("SELECT user_type FROM {snap}keyslots ORDER BY 1"), &[]).unwrap() {
        let t: i16 = r.get(0);
        v.push(RowRef { table: "keyslots", cond: format!("user_type = {t}") });
    }
    for r in c.query(&format!("SELECT handle FROM {snap}objects ORDER BY 1"), &[]).unwrap() {
        let h: i64 = r.get(0);
        v.push(RowRef { table: "objects", cond: format!("handle = {h}") });
    }
    for r in c.query(&format!("SELECT kind, key FROM {snap}records ORDER BY 1, 2"), &[]).unwrap() {
        let (k, key): (String, Vec<u8>) = (r.get(0), r.get(1));
        v.push(RowRef {
            table: "records",
            cond: format!("kind = '{k}' AND key = '\\x{}'::bytea", hex::encode(key)),
        });
    }
    v
}

/// The edits of one row: delete it, change each column, duplicate it under another address.
fn edits(r: &RowRef) -> Vec<(String, String)> {
    let (t, w) = (r.table, &r.cond);
    let flip = |col: &str| {
        format!(
            "UPDATE {t} SET {col} = set_byte({col}, 0, get_byte({col}, 0) # 1) \
             WHERE {w} AND length({col}) > 0"
        )
    };
    let mut v = vec![(format!("delete {t}({w})"), format!("DELETE FROM {t} WHERE {w}"))];
    let cols: &[&str] = match t {
        "keyslots" => &["wrapped_mk", "mac"],
        "objects" => &["uid", "label", "ckaid", "attrs", "secret", "mac"],
        _ => &["value", "mac"],
    };
    for col in cols {
        v.push((format!("edit {t}.{col}({w})"), flip(col)));
    }
    match t {
        "objects" => {
            v.push((
                format!("edit {t}.class({w})"),
                format!("UPDATE {t} SET class = class # 1 WHERE {w}"),
            ));
            v.push((
                format!("edit {t}.private({w})"),
                format!("UPDATE {t} SET private = NOT private WHERE {w}"),
            ));
            v.push((
                format!("edit {t}.handle({w})"),
                format!("UPDATE {t} SET handle = handle + 1000 WHERE {w}"),
            ));
            v.push((
                format!("duplicate {t}({w})"),
                format!(
                    "INSERT INTO objects (uid, class, label, ckaid, private, attrs, secret, mac) \
                     SELECT set_byte(uid, 0, get_byte(uid, 0) # 1), class, label, ckaid, \
                     private, attrs, secret, mac FROM objects WHERE {w}"
                ),
            ));
        }
        "records" => {
            v.push((
                format!("duplicate {t}({w})"),
                format!(
                    "INSERT INTO records SELECT kind, key || '\\x00'::bytea, value, mac \
                     FROM records WHERE {w}"
                ),
            ));
            v.push((
                format!("rename {t}.kind({w})"),
                format!("UPDATE records SET kind = kind || 'x' WHERE {w}"),
            ));
        }
        _ => v.push((
            format!("duplicate {t}({w})"),
            format!(
                "INSERT INTO keyslots SELECT user_type + 10, salt, m_cost, t_cost, p_cost, \
                 wrapped_mk, mac FROM keyslots WHERE {w}"
            ),
        )),
    }
    v
}

/// A row of the old snapshot put back as it was (replay), or re-inserted if it is gone.
fn replays(c: &mut postgres::Client) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for r in rows(c, "old_") {
        let (t, w) = (r.table, &r.cond);
        let same: i64 = c
            .query_one(
                &format!(
                    "SELECT count(*) FROM (SELECT * FROM old_{t} WHERE {w} \
                     INTERSECT SELECT * FROM {t} WHERE {w}) x"
                ),
                &[],
            )
            .unwrap()
            .get(0);
        if same == 0 {
            v.push((
                format!("replay {t}({w})"),
                format!(
                    "DELETE FROM {t} WHERE {w}; INSERT INTO {t} SELECT * FROM old_{t} WHERE {w}"
                ),
            ));
        }
    }
    v
}

/// The attacks: rows of every authenticated table edited, deleted, duplicated and replayed;
/// the header edited; the whole database rolled back. Each on the same database, restored
/// between attacks; each must fail the next unseal with an integrity error.
#[test]
fn sql_tampering_is_detected_at_the_next_unseal() {
    let server = pg_or_skip!();
    let db = support::Db::new(server);
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("node");
    let shares = create(&db.url, &base);
    let mut sql = db.client();

    // A store with a row of every kind, then a snapshot of it ("old"), then changes (so that
    // replaying the old rows is an attack), then the snapshot attacks start from ("now").
    let (privk, pubk) = {
        let t = node(&db.url, &base, &shares);
        let admin = login(&t, "admin", b"admin-password");
        as_caller(caller(&admin), || {
            t.create_user("keeper", Role::CryptoOfficer, b"keeper-password", None).unwrap();
            t.create_user("app", Role::CryptoUser, b"app-password", None).unwrap();
        });
        let keeper = login(&t, "keeper", b"keeper-password");
        let app = login(&t, "app", b"app-password");
        let (pubk, privk) = as_caller(caller(&keeper), || {
            let (p, k) = ec_pair(&t, "victim");
            ec_pair(&t, "doomed");
            t.set_grant(k, &Grantee::User("app".into()), Some(Ops::SIGN)).unwrap();
            (p, k)
        });
        as_caller(caller(&app), || t.sign(privk, &Mechanism::EcdsaSha256, b"m")).unwrap();
        snapshot(&mut sql, "old");
        as_caller(caller(&keeper), || {
            // Revoke, destroy, rename: each leaves an old row worth replaying.
            t.set_grant(privk, &Grantee::User("app".into()), None).unwrap();
            let doomed = t.find(&[label("doomed")]).unwrap();
            for h in doomed {
                t.destroy_object(h).unwrap();
            }
            t.set_attributes(pubk, &[label("renamed")]).unwrap();
        });
        as_caller(caller(&admin), || t.delete_user("app").unwrap());
        t.verify_store().unwrap();
        (privk, pubk)
    };
    let _ = (privk, pubk);
    snapshot(&mut sql, "now");

    let mut attacks: Vec<(String, String)> = Vec::new();
    for r in rows(&mut sql, "") {
        attacks.extend(edits(&r));
    }
    attacks.extend(replays(&mut sql));
    attacks
        .push(("header generation".into(), "UPDATE header SET generation = generation - 1".into()));
    attacks.push((
        "header state".into(),
        "UPDATE header SET state = set_byte(state, 0, get_byte(state, 0) # 1)".into(),
    ));
    let n_replays = attacks.iter().filter(|(n, _)| n.starts_with("replay")).count();
    assert!(n_replays >= 3, "the changes left rows to replay ({n_replays})");

    let mut missed = Vec::new();
    let mut noop = 0;
    let untouched = digest(&mut sql);
    for (name, attack) in &attacks {
        restore(&mut sql, "now");
        sql.batch_execute(attack).unwrap_or_else(|e| panic!("{name}: {e}"));
        if digest(&mut sql) == untouched {
            // The edit found nothing to change (an empty CKA_ID, no key material).
            noop += 1;
            continue;
        }
        // The attacked store under a fresh node; no audit log: the store is under test here,
        // and every attack runs on the same restored database.
        let store = PgStore::open(&db.url, &opts()).unwrap();
        let r = Token::open_store_insecure_without_audit(store).and_then(|t| {
            unseal(&t, &PgStore::open(&db.url, &opts()).unwrap(), &shares)?;
            t.verify_store()
        });
        match r {
            Err(e) if is_integrity(&e) => {}
            other => missed.push(format!("{name}: {other:?}")),
        }
    }
    assert!(
        missed.is_empty(),
        "{} of {} attacks not detected:\n{}",
        missed.len(),
        attacks.len(),
        missed.join("\n")
    );
    assert!(attacks.len() - noop >= 60, "{} attacks changed the database", attacks.len() - noop);
    eprintln!(
        "{} SQL attacks, each detected as an integrity failure ({noop} edits found nothing to change)",
        attacks.len() - noop
    );

    // The untouched database still unseals (the attacks above are what failed).
    restore(&mut sql, "now");
    let t = node(&db.url, &base, &shares);
    t.verify_store().unwrap();
    drop(t);

    // The whole database rolled back to the older snapshot (a point-in-time restore): the
    // host's anti-rollback mark is past its generation.
    restore(&mut sql, "old");
    let t =
        Token::open_store_insecure_without_audit(PgStore::open(&db.url, &opts()).unwrap()).unwrap();
    let e = unseal(&t, &PgStore::open(&db.url, &opts()).unwrap(), &shares).unwrap_err();
    assert!(matches!(e, Error::Rollback { .. }), "rollback: {e:?}");
}

/// A running node: a row replayed behind its back is found by the next full verification,
/// which raises the tamper alarm; service is refused from then on.
#[test]
fn a_running_node_finds_sql_tampering_at_its_next_verification() {
    let server = pg_or_skip!();
    let db = support::Db::new(server);
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("node");
    let shares = create(&db.url, &base);
    let t = node(&db.url, &base, &shares);
    let admin = login(&t, "admin", b"admin-password");
    let mut sql = db.client();
    as_caller(caller(&admin), || {
        t.create_user("keeper", Role::CryptoOfficer, b"keeper-password", None).unwrap();
    });
    snapshot(&mut sql, "old");
    as_caller(caller(&admin), || t.delete_user("keeper").unwrap());
    // Put the deleted user's rows back.
    for (name, attack) in replays(&mut sql) {
        sql.batch_execute(&attack).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let e = t.verify_store().unwrap_err();
    assert!(is_integrity(&e), "{e:?}");
    assert!(t.tamper_alarm().is_some(), "the tamper response raised the alarm");
    let r = as_caller(caller(&admin), || t.find(&[label("anything")]));
    assert!(matches!(r, Err(Error::TamperAlarm(_))), "{r:?}");
}
