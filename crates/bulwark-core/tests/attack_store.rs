//! Attack suite, store side (issue 9, attacks 3, 4 and 6): whoever can write the store file
//! edits, deletes, inserts and replays rows, and the next unlock must notice.
//!
//! The attacks are generated, not hand-picked: two stores (a PIN store and a quorum store) are
//! filled with a row in every table and of every record kind, a snapshot is taken, the stores
//! are changed (a key destroyed, a PIN changed, a grant, a role and the tamper setting changed,
//! a user deleted, approvals used, failed logins counted), and then for EVERY row of EVERY
//! authenticated table (`keyslots`, `objects`, `records`), each on a fresh copy of the store:
//! the row is deleted; one byte of each column is flipped; the row is duplicated under another
//! key; and every row that differs from the snapshot is put back as it was (replay) or, if it
//! is gone, re-inserted. The next unlock (PIN login as user and as SO; quorum unseal with the
//! custodians' shares) must fail with an integrity error. The few non-integrity refusals that
//! are allowed are listed in [`Verdict`], each with its reason.
//!
//! Meta edits, the tamper-alarm note, the policy, replayed keyslots and resurrected keys under
//! a running process have their own tests below.

#![allow(missing_docs, clippy::too_many_lines)]

mod attack_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use attack_support::*;
use bulwark_core::kernel::{as_caller, Grantee, Ops, Role};
use bulwark_core::secret::Pin;
use bulwark_core::token::{Credentials, SecurityPolicy, TamperResponse};
use bulwark_core::{Error, Token, UserType};
use rusqlite::types::Value;
use rusqlite::Connection;

/// The tables whose rows are authenticated (MAC + set commitment).
const AUTHENTICATED: [&str; 3] = ["keyslots", "objects", "records"];

/// One stored row, generic over the table: every column with its value, and which columns
/// form the primary key.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    table: &'static str,
    cols: Vec<(String, Value)>,
    pk: Vec<usize>,
}

fn show(v: &Value) -> String {
    match v {
        Value::Blob(b) if b.iter().all(u8::is_ascii_graphic) => {
            format!("'{}'", String::from_utf8_lossy(b))
        }
        Value::Blob(b) => format!("x'{}'", hex::encode(&b[..b.len().min(8)])),
        Value::Text(t) => format!("'{t}'"),
        other => format!("{other:?}"),
    }
}

impl Row {
    /// "table(pk=value, ...)", for messages.
    fn id(&self) -> String {
        let pk: Vec<String> = self
            .pk
            .iter()
            .map(|&i| format!("{}={}", self.cols[i].0, show(&self.cols[i].1)))
            .collect();
        format!("{}({})", self.table, pk.join(", "))
    }

    fn same_address(&self, o: &Row) -> bool {
        self.table == o.table && self.pk.iter().all(|&i| self.cols[i] == o.cols[i])
    }

    fn where_clause(&self) -> (String, Vec<Value>) {
        let conds: Vec<String> =
            self.pk.iter().map(|&i| format!("{} IS ?", self.cols[i].0)).collect();
        (conds.join(" AND "), self.pk.iter().map(|&i| self.cols[i].1.clone()).collect())
    }

    fn col(&self, name: &str) -> &Value {
        &self.cols.iter().find(|(n, _)| n == name).unwrap().1
    }
}

fn read_rows(path: &Path) -> Vec<Row> {
    let c = Connection::open(path).unwrap();
    let mut out = Vec::new();
    for table in AUTHENTICATED {
        let mut names = Vec::new();
        let mut pk = Vec::new();
        {
            let mut st = c.prepare(&format!("PRAGMA table_info({table})")).unwrap();
            let mut rows = st.query([]).unwrap();
            while let Some(r) = rows.next().unwrap() {
                let name: String = r.get(1).unwrap();
                let pk_pos: i64 = r.get(5).unwrap();
                if pk_pos > 0 {
                    pk.push(names.len());
                }
                names.push(name);
            }
        }
        let mut st = c.prepare(&format!("SELECT {} FROM {table}", names.join(", "))).unwrap();
        let mut rows = st.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            let cols = names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), r.get::<_, Value>(i).unwrap()))
                .collect();
            out.push(Row { table, cols, pk: pk.clone() });
        }
    }
    out
}

/// The value with one byte flipped (`variant` picks which bit, for retries after a key
/// collision). An empty blob gains a byte; NULL becomes a one-byte blob.
fn flipped(v: &Value, variant: usize) -> Value {
    match v {
        Value::Integer(i) => Value::Integer(i ^ [1, 0x80, 0x100, 0x1000][variant]),
        Value::Blob(b) if b.is_empty() => Value::Blob(vec![variant as u8]),
        Value::Blob(b) => {
            let mut b = b.clone();
            let i = b.len() / 2;
            b[i] ^= 1 << variant;
            Value::Blob(b)
        }
        Value::Text(t) => {
            let mut s = t.clone().into_bytes();
            let i = s.len() / 2;
            s[i] ^= 1 << variant; // ASCII stays ASCII for bits 0..3
            Value::Text(String::from_utf8(s).unwrap())
        }
        Value::Null => Value::Blob(vec![variant as u8]),
        Value::Real(f) => Value::Real(f + 1.0),
    }
}

fn update(c: &Connection, at: &Row, to: &Row) -> rusqlite::Result<usize> {
    let (w, mut args) = at.where_clause();
    let sets: Vec<String> = to.cols.iter().map(|(n, _)| format!("{n} = ?")).collect();
    let mut vals: Vec<Value> = to.cols.iter().map(|(_, v)| v.clone()).collect();
    vals.append(&mut args);
    c.execute(
        &format!("UPDATE {} SET {} WHERE {w}", at.table, sets.join(", ")),
        rusqlite::params_from_iter(vals),
    )
}

fn insert(c: &Connection, r: &Row) -> rusqlite::Result<usize> {
    let names: Vec<&str> = r.cols.iter().map(|(n, _)| n.as_str()).collect();
    let marks = vec!["?"; names.len()].join(", ");
    c.execute(
        &format!("INSERT INTO {} ({}) VALUES ({marks})", r.table, names.join(", ")),
        rusqlite::params_from_iter(r.cols.iter().map(|(_, v)| v.clone())),
    )
}

fn delete(c: &Connection, r: &Row) -> rusqlite::Result<usize> {
    let (w, args) = r.where_clause();
    c.execute(&format!("DELETE FROM {} WHERE {w}", r.table), rusqlite::params_from_iter(args))
}

/// A copy of `r` under a key that no row has: keyslots get an unused user type, objects a new
/// handle (and, `uid` being UNIQUE, a different uid), records the key with a byte appended.
fn duplicate(all: &[Row], r: &Row) -> Row {
    let mut d = r.clone();
    match r.table {
        "keyslots" => {
            let used: Vec<&Value> =
                all.iter().filter(|x| x.table == "keyslots").map(|x| x.col("user_type")).collect();
            let free =
                [0i64, 1, 2, 3].into_iter().find(|u| !used.contains(&&Value::Integer(*u))).unwrap();
            d.cols[0].1 = Value::Integer(free);
        }
        "objects" => {
            let max = all
                .iter()
                .filter(|x| x.table == "objects")
                .map(|x| match x.col("handle") {
                    Value::Integer(h) => *h,
                    _ => 0,
                })
                .max()
                .unwrap_or(0);
            for (n, v) in &mut d.cols {
                if n == "handle" {
                    *v = Value::Integer(max + 1000);
                } else if n == "uid" {
                    *v = flipped(v, 0);
                }
            }
        }
        _ => {
            for (n, v) in &mut d.cols {
                if n == "key" {
                    if let Value::Blob(k) = v {
                        k.push(0);
                    }
                }
            }
        }
    }
    d
}

/// One attack: a name, what it does to the store, and which non-integrity refusals it may
/// legitimately meet.
struct Case {
    name: String,
    edit: Box<dyn Fn(&Connection)>,
    /// The keyslot (user type) this case touches, if any: see [`Verdict`].
    keyslot: Option<i64>,
    /// The case (re)creates a `tamper_alarm` setting: see [`Verdict`].
    raises_alarm: bool,
}

fn touches_keyslot(r: &Row) -> Option<i64> {
    match (r.table, r.col_opt("user_type")) {
        ("keyslots", Some(Value::Integer(u))) => Some(*u),
        _ => None,
    }
}

fn raises_alarm(r: &Row) -> bool {
    r.table == "records"
        && r.col_opt("kind") == Some(&Value::Text("setting".into()))
        && r.col_opt("key") == Some(&Value::Blob(b"tamper_alarm".to_vec()))
}

impl Row {
    fn col_opt(&self, name: &str) -> Option<&Value> {
        self.cols.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// Every generic attack on the rows of `base`, with replays from `snap`.
fn generic_cases(base: &Path, snap: &Path) -> (Vec<Case>, usize) {
    let now = read_rows(base);
    let old = read_rows(snap);
    for t in AUTHENTICATED {
        assert!(now.iter().any(|r| r.table == t), "the scene has rows in {t}");
    }
    let mut cases = Vec::new();
    for r in &now {
        let row = r.clone();
        cases.push(Case {
            name: format!("delete {}", r.id()),
            edit: Box::new(move |c| assert_eq!(delete(c, &row).unwrap(), 1)),
            keyslot: touches_keyslot(r),
            raises_alarm: false,
        });
        for i in 0..r.cols.len() {
            let row = r.clone();
            cases.push(Case {
                name: format!("flip a byte of {}.{}", r.id(), r.cols[i].0),
                edit: Box::new(move |c| {
                    // A flipped key column may collide with another row's key: try other bits.
                    for variant in 0..4 {
                        let mut to = row.clone();
                        to.cols[i].1 = flipped(&row.cols[i].1, variant);
                        match update(c, &row, &to) {
                            Ok(1) => return,
                            Ok(n) => panic!("{n} rows updated"),
                            Err(_) => {}
                        }
                    }
                    panic!("no flip of {} applies", row.cols[i].0);
                }),
                keyslot: touches_keyslot(r),
                raises_alarm: false,
            });
        }
        let dup = duplicate(&now, r);
        cases.push(Case {
            name: format!("duplicate {} as {}", r.id(), dup.id()),
            keyslot: None,
            raises_alarm: raises_alarm(&dup),
            edit: Box::new(move |c| assert_eq!(insert(c, &dup).unwrap(), 1)),
        });
    }
    let mut replays = 0;
    for o in &old {
        match now.iter().find(|n| n.same_address(o)) {
            Some(n) if n == o => {}
            Some(n) => {
                let (at, to) = (n.clone(), o.clone());
                replays += 1;
                cases.push(Case {
                    name: format!("replay the old version of {}", o.id()),
                    edit: Box::new(move |c| assert_eq!(update(c, &at, &to).unwrap(), 1)),
                    keyslot: touches_keyslot(o),
                    raises_alarm: raises_alarm(o),
                });
            }
            None => {
                let row = o.clone();
                replays += 1;
                cases.push(Case {
                    name: format!("re-insert the removed {}", o.id()),
                    edit: Box::new(move |c| assert_eq!(insert(c, &row).unwrap(), 1)),
                    keyslot: touches_keyslot(o),
                    raises_alarm: raises_alarm(o),
                });
            }
        }
    }
    (cases, replays)
}

/// How a scene is unlocked.
enum Unlock {
    /// PIN store: login as user (with this PIN), then as SO.
    Pin(Pin),
    /// Quorum store: unseal with these share files.
    Quorum(Vec<String>),
}

/// The result of one unlock attempt: who tried, and the error (`None`: it succeeded).
type Attempt = (&'static str, Option<String>, bool /* integrity */);

/// Judges the unlock attempts after an attack. Rules:
/// - no attempt may succeed;
/// - at least one attempt fails with an integrity error ("integrity" in the message);
/// - every other attempt fails with an integrity error too, except:
///   * the unlock THROUGH a keyslot the attack touched may fail as a wrong PIN
///     (`PinIncorrect`) or a missing PIN (`UserPinNotInitialized`), and a quorum unseal may
///     see its shares refused: a keyslot cannot be authenticated before the key it wraps is
///     recovered, and a tampered slot and a wrong PIN look the same by design
///     (`hierarchy::unwrap_mk`); the OTHER keyslot's unlock then finds the integrity error;
///   * an attack that (re)creates the `tamper_alarm` setting makes the store refuse the user
///     login with a tamper alarm before anything is verified; the SO, who may log in during an
///     alarm, then finds the integrity error.
struct Verdict;

impl Verdict {
    fn check(case: &Case, attempts: &[Attempt]) -> Result<(), String> {
        let detail = format!("{}: {attempts:?}", case.name);
        if attempts.iter().any(|(_, e, _)| e.is_none()) {
            return Err(format!("an unlock SUCCEEDED after the attack: {detail}"));
        }
        if !attempts.iter().any(|(_, _, i)| *i) {
            return Err(format!("no integrity error: {detail}"));
        }
        for (who, e, integrity) in attempts {
            if *integrity {
                continue;
            }
            let e = e.as_deref().unwrap_or_default();
            let through_touched_slot = matches!(
                (case.keyslot, *who),
                (Some(0), "so") | (Some(1), "user") | (Some(2), "unseal")
            );
            let ok = (through_touched_slot
                && (e.starts_with("PinIncorrect")
                    || e.starts_with("UserPinNotInitialized")
                    || e.starts_with("share:")))
                || (case.raises_alarm && *who == "user" && e.starts_with("TamperAlarm"));
            if !ok {
                return Err(format!("{who} failed without an integrity error: {detail}"));
            }
        }
        Ok(())
    }
}

fn attempt_pin(path: &Path, user_pin: &Pin) -> Vec<Attempt> {
    let mut out = Vec::new();
    let so_pin = so();
    for (who, ut, pin) in [("user", UserType::User, user_pin), ("so", UserType::So, &so_pin)] {
        if out.iter().any(|(_, _, integrity)| *integrity) {
            // The user's unlock already found the attack; the SO's verifies the same set
            // (it runs whenever the user's could not get that far: a touched keyslot).
            break;
        }
        let r = Token::open(path).and_then(|t| t.login(ut, pin));
        out.push(match r {
            Ok(()) => (who, None, false),
            Err(e) => (who, Some(format!("{e:?}")), is_integrity(&e)),
        });
    }
    out
}

fn attempt_quorum(path: &Path, shares: &[String]) -> Vec<Attempt> {
    let r = match Token::open(path) {
        Ok(t) => unseal(&t, path, shares),
        Err(e) => Err(UnsealFail::Core(e)),
    };
    vec![match r {
        Ok(()) => ("unseal", None, false),
        Err(f) => {
            let integrity = f.is_integrity();
            let msg = match f {
                UnsealFail::Share(s) => format!("share: {s}"),
                other => format!("{other:?}"),
            };
            ("unseal", Some(msg), integrity)
        }
    }]
}

/// A store in its final state, a snapshot of an earlier state, the host's marks as of the
/// final state, and how to unlock it.
struct Scene {
    dir: tempfile::TempDir,
    base: PathBuf,
    snap: PathBuf,
    marks: Marks,
    unlock: Unlock,
}

impl Scene {
    fn attempt(&self, path: &Path) -> Vec<Attempt> {
        match &self.unlock {
            Unlock::Pin(p) => attempt_pin(path, p),
            Unlock::Quorum(s) => attempt_quorum(path, s),
        }
    }

    /// Runs `edit` on a fresh copy of the final store (with the host marks of the final store)
    /// and returns the unlock attempts that follow.
    fn attack(&self, n: usize, edit: &dyn Fn(&Connection)) -> Vec<Attempt> {
        self.marks.restore();
        let work = self.dir.path().join(format!("case{n}/t.db"));
        copy_store(&self.base, &work);
        {
            let c = Connection::open(&work).unwrap();
            edit(&c);
        }
        let r = self.attempt(&work);
        std::fs::remove_dir_all(work.parent().unwrap()).unwrap();
        r
    }

    /// Every generic case; panics listing every case that was not caught.
    fn run_generic(&self, min_replays: usize) -> usize {
        // The untouched copy unlocks: the attacks, not the copying, cause the failures.
        let clean = self.attack(0, &|_| {});
        assert!(clean.iter().all(|(_, e, _)| e.is_none()), "clean copy: {clean:?}");
        let (cases, replays) = generic_cases(&self.base, &self.snap);
        assert!(replays >= min_replays, "only {replays} replayable rows between the snapshots");
        let mut failures = Vec::new();
        for (i, case) in cases.iter().enumerate() {
            let attempts = self.attack(i + 1, &*case.edit);
            if let Err(e) = Verdict::check(case, &attempts) {
                failures.push(e);
            }
        }
        self.marks.restore();
        assert!(
            failures.is_empty(),
            "{} of {} attacks not caught:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
        cases.len()
    }
}

fn snapshot(base: &Path, snap: &Path) {
    checkpoint(base);
    copy_store(base, snap);
}

const TOTP_SECRET: &[u8] = b"12345678901234567890";

/// A PIN store with a row in every table and of every record kind: SO and user keyslots;
/// token objects of every class (secret keys, an EC private and public key, public and private
/// data objects); settings (label, policy, audit key, audit public key, tamper alarm); users
/// and their name index, login state (known and unknown names), grants and used approvals.
/// Between the snapshot and the final state: the tamper alarm is cleared, a user's role
/// changed, a user deleted, a key destroyed (with its grants), a grant changed, the user PIN
/// changed, an approval used (and an expired one dropped), a failed login counted.
fn pin_scene() -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base/t.db");
    let snap = dir.path().join("snap/t.db");
    std::fs::create_dir_all(base.parent().unwrap()).unwrap();
    pin_store(&base, SecurityPolicy::default());
    {
        let t = Token::open(&base).unwrap();
        t.login(UserType::So, &so()).unwrap();
        t.create_user("officer", Role::CryptoOfficer, b"officer-password", None).unwrap();
        t.create_user("alice", Role::CryptoUser, b"alice-password", Some(TOTP_SECRET)).unwrap();
        t.create_user("bob", Role::CryptoUser, b"bob-password", None).unwrap();
        t.create_user("carol", Role::Auditor, b"carol-password", None).unwrap();
        t.logout().unwrap();
        t.login(UserType::User, &user()).unwrap();
        let e = [b(bulwark_core::attr::AttrType::Encrypt, true)];
        let k1 = aes(&t, "k1", true, &e).unwrap();
        let k2 = aes(&t, "k2", true, &e).unwrap();
        let (_, ec) = ec_pair(&t, "ec", true, &[]).unwrap();
        data_object(&t, "public-data", false).unwrap();
        data_object(&t, "private-data", true).unwrap();
        t.set_grant(k1, &to("alice"), Some(Ops::ENCRYPT)).unwrap();
        t.set_grant(k2, &to("alice"), Some(Ops::DECRYPT)).unwrap();
        t.set_grant(k2, &to("bob"), Some(Ops::ENCRYPT)).unwrap();
        t.set_grant(ec, &to("bob"), Some(Ops::SIGN.with(Ops::VERIFY))).unwrap();
        let cred = |name: &'static str, pw: &'static [u8]| Credentials {
            name,
            password: pw,
            totp: None,
            cert_sha256: None,
        };
        let code = totp_code(TOTP_SECRET, now_secs() / 30);
        assert!(t.authenticate(&cred("alice", b"wrong-password")).is_err());
        let ok = Credentials { totp: Some(code.as_str()), ..cred("alice", b"alice-password") };
        t.authenticate(&ok).unwrap();
        assert!(t.authenticate(&cred("nobody", b"whatever-pass")).is_err());
        t.use_approval(&[1; 32], 100, 50).unwrap();
        t.use_approval(&[2; 32], now_secs() + 3600, now_secs()).unwrap();
        // A tamper alarm, raised while unlocked: an authenticated `tamper_alarm` setting.
        t.tamper_signal("drill");
    }
    snapshot(&base, &snap);
    {
        let t = Token::open(&base).unwrap();
        t.login(UserType::So, &so()).unwrap();
        t.clear_tamper().unwrap();
        assert!(t.set_user_role("bob", Role::CryptoOfficer).unwrap().is_some());
        assert!(t.delete_user("carol").unwrap().is_some());
        t.logout().unwrap();
        t.login(UserType::User, &user()).unwrap();
        let k2 = t.find_by_label("k2").unwrap()[0].handle;
        let k1 = t.find_by_label("k1").unwrap()[0].handle;
        t.destroy_object(k2).unwrap();
        t.set_grant(k1, &to("alice"), Some(Ops::ENCRYPT.with(Ops::DECRYPT))).unwrap();
        t.use_approval(&[3; 32], now_secs() + 3600, 200).unwrap();
        let bad = Credentials {
            name: "alice",
            password: b"wrong-password",
            totp: None,
            cert_sha256: None,
        };
        assert!(t.authenticate(&bad).is_err());
        t.set_pin(&user(), &user2()).unwrap();
    }
    checkpoint(&base);
    let marks = Marks::save(&store_uid(&base));
    Scene { dir, base, snap, marks, unlock: Unlock::Pin(user2()) }
}

/// A quorum store (what the daemon serves), created with its first security officer, with
/// its quorum keyslot, token objects of every class, settings, users (and their name index,
/// login states, grants) and used approvals. Between the snapshot and the final state: a key
/// destroyed (with its grants), a grant changed, a user's role changed, a user deleted, an
/// approval used, failed logins counted.
fn quorum_scene() -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base/t.db");
    let snap = dir.path().join("snap/t.db");
    std::fs::create_dir_all(base.parent().unwrap()).unwrap();
    let shares = quorum_store(&base, &SecurityPolicy::default());
    let unknown =
        Credentials { name: "nobody", password: b"whatever-pass", totp: None, cert_sha256: None };
    let wrong =
        Credentials { name: "alice", password: b"wrong-password", totp: None, cert_sha256: None };
    {
        let t = open_unsealed(&base, &shares);
        let so = admin(&t);
        as_caller(caller(&so, 1), || {
            // Destroys delete at once here (a daemon store would schedule them): the scene
            // replays destroyed rows.
            t.set_destroy_settings(Some(0), None, true).unwrap();
            t.create_user("officer", Role::CryptoOfficer, b"officer-password", None).unwrap();
            t.create_user("alice", Role::CryptoUser, b"alice-password", None).unwrap();
            t.create_user("bob", Role::CryptoUser, b"bob-password", None).unwrap();
        });
        let keeper = keeper(&t);
        as_caller(caller(&keeper, 2), || {
            let k1 = aes(&t, "k1", true, &[]).unwrap();
            let k2 = aes(&t, "k2", true, &[]).unwrap();
            ec_pair(&t, "ec", true, &[]).unwrap();
            data_object(&t, "public-data", false).unwrap();
            data_object(&t, "private-data", true).unwrap();
            t.set_grant(k1, &to("alice"), Some(Ops::ENCRYPT)).unwrap();
            t.set_grant(k2, &to("bob"), Some(Ops::ENCRYPT)).unwrap();
            t.set_grant(k2, &Grantee::EveryCryptoUser, Some(Ops::VERIFY)).unwrap();
        });
        t.use_approval(&[1; 32], now_secs() + 3600, now_secs()).unwrap();
        assert!(t.authenticate(&unknown).is_err());
    }
    snapshot(&base, &snap);
    {
        let t = open_unsealed(&base, &shares);
        let so = admin(&t);
        as_caller(caller(&so, 1), || {
            assert!(t.set_user_role("bob", Role::CryptoOfficer).unwrap().is_some());
            assert!(t.delete_user("officer").unwrap().is_some());
        });
        let keeper = keeper(&t);
        as_caller(caller(&keeper, 2), || {
            let k1 = t.find_by_label("k1").unwrap()[0].handle;
            let k2 = t.find_by_label("k2").unwrap()[0].handle;
            t.destroy_object(k2).unwrap();
            t.set_grant(k1, &to("alice"), Some(Ops::ENCRYPT.with(Ops::DECRYPT))).unwrap();
        });
        t.use_approval(&[2; 32], now_secs() + 3600, now_secs()).unwrap();
        assert!(t.authenticate(&unknown).is_err());
        assert!(t.authenticate(&wrong).is_err());
    }
    checkpoint(&base);
    let marks = Marks::save(&store_uid(&base));
    Scene { dir, base, snap, marks, unlock: Unlock::Quorum(shares) }
}

fn record_kinds(path: &Path) -> Vec<String> {
    read_rows(path)
        .iter()
        .filter(|r| r.table == "records")
        .map(|r| match r.col("kind") {
            Value::Text(k) => k.clone(),
            _ => String::new(),
        })
        .collect()
}

#[test]
fn every_row_of_a_pin_store_deleted_edited_duplicated_or_replayed_is_detected() {
    let s = pin_scene();
    let kinds = record_kinds(&s.base);
    for k in ["setting", "user", "user-name", "login", "grant", "approval"] {
        assert!(kinds.iter().any(|x| x == k), "the scene has a {k} record: {kinds:?}");
    }
    // Replays: keyslot 1 (PIN change), the destroyed key and its grants, the changed grant,
    // bob's role, carol's four rows, alice's login state, the dropped approval, the alarm.
    let n = s.run_generic(10);
    println!("{n} attacks on the PIN store, all caught");
}

#[test]
fn every_row_of_a_quorum_store_deleted_edited_duplicated_or_replayed_is_detected() {
    let s = quorum_scene();
    let kinds = record_kinds(&s.base);
    for k in ["setting", "user", "user-name", "login", "grant", "approval"] {
        assert!(kinds.iter().any(|x| x == k), "the scene has a {k} record: {kinds:?}");
    }
    // Replays: the destroyed key and its grants, the changed grant, bob's role, the deleted
    // officer's rows, the login states.
    let n = s.run_generic(8);
    println!("{n} attacks on the quorum store, all caught");
}

/// The generic checks can fail: an "attack" that changes nothing is reported as not caught,
/// and a verdict that sees a successful unlock refuses it.
#[test]
fn the_generic_verdict_fails_when_an_attack_is_not_caught() {
    let s = quorum_scene();
    let nothing = Case {
        name: "no change".into(),
        edit: Box::new(|_| {}),
        keyslot: None,
        raises_alarm: false,
    };
    let attempts = s.attack(1, &*nothing.edit);
    assert!(Verdict::check(&nothing, &attempts).is_err(), "{attempts:?}");
    // A harmless edit outside the authenticated tables is not an attack the set can see.
    let counter = s.attack(2, &|c| {
        c.execute("UPDATE object_count SET n = n + 7", []).unwrap();
    });
    assert!(Verdict::check(&nothing, &counter).is_err(), "{counter:?}");
    // A keyslot-tolerated refusal alone (no integrity error anywhere) is not enough.
    let slot = Case { keyslot: Some(2), ..nothing };
    let shares_refused = vec![("unseal", Some("share: share is not valid".to_owned()), false)];
    assert!(Verdict::check(&slot, &shares_refused).is_err());
}

fn pin_fixture(policy: SecurityPolicy) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    pin_store(&path, policy);
    {
        let t = Token::open(&path).unwrap();
        t.login(UserType::User, &user()).unwrap();
        aes(&t, "k", true, &[]).unwrap();
    }
    (dir, path)
}

fn sql(p: &Path, q: &str) -> usize {
    Connection::open(p).unwrap().execute(q, []).unwrap()
}

/// The unauthenticated header: every edit of it either fails the unlock with an integrity
/// error or makes the store refuse every unlock (documented per edit).
#[test]
fn meta_edits_are_detected() {
    let integrity = [
        // The plain generation must agree with the sealed one.
        ("generation + 1", "UPDATE meta SET v = x'00000000000000ff' WHERE k = 'generation'"),
        ("generation - 1", "UPDATE meta SET v = x'0000000000000001' WHERE k = 'generation'"),
        ("generation deleted", "DELETE FROM meta WHERE k = 'generation'"),
        (
            "state byte flipped",
            "UPDATE meta SET v = substr(v, 1, 20) || x'ff' || substr(v, 22) WHERE k = 'state'",
        ),
        ("state emptied", "UPDATE meta SET v = x'' WHERE k = 'state'"),
        ("state deleted", "DELETE FROM meta WHERE k = 'state'"),
        // The unlock policy name: deleting it never falls back to a default.
        ("policy deleted", "DELETE FROM meta WHERE k = 'policy'"),
        ("store id deleted", "DELETE FROM meta WHERE k = 'store_uid'"),
        ("zeroized deleted", "DELETE FROM meta WHERE k = 'zeroized'"),
    ];
    for (what, q) in integrity {
        let (_d, path) = pin_fixture(SecurityPolicy::default());
        assert_eq!(sql(&path, q), 1, "{what}");
        let r = Token::open(&path).and_then(|t| t.login(UserType::User, &user()));
        assert_integrity(r, what);
        let r = Token::open(&path).and_then(|t| t.login(UserType::So, &so()));
        assert_integrity(r, what);
    }
    // Edits that make every unlock refuse without reaching the rows. None of them lets
    // anything in; they are denial of service, which whoever can write the file has anyway.
    let refused = [
        // A store marked zeroized refuses every login.
        ("zeroized set", "UPDATE meta SET v = x'01' WHERE k = 'zeroized'"),
        // Another unlock policy: a PIN store is not a quorum store.
        ("policy renamed", "UPDATE meta SET v = CAST('quorum' AS BLOB) WHERE k = 'policy'"),
        // Another store id: the keyslots (AES-GCM bound to the id) no longer open, and the
        // audit log belongs to another store.
        (
            "store id flipped",
            "UPDATE meta SET v = substr(v, 1, 7) || x'ee' || substr(v, 9) WHERE k = 'store_uid'",
        ),
    ];
    for (what, q) in refused {
        let (_d, path) = pin_fixture(SecurityPolicy::default());
        assert_eq!(sql(&path, q), 1, "{what}");
        for (ut, pin) in [(UserType::User, user()), (UserType::So, so())] {
            let r = Token::open(&path).and_then(|t| t.login(ut, &pin));
            assert!(r.is_err(), "{what}: {ut:?} logged in");
        }
    }
}

/// A tamper alarm raised while unlocked is authenticated: deleting the header note does not
/// clear it; deleting the authenticated setting too is a deleted row (integrity).
#[test]
fn deleting_the_alarm_note_does_not_clear_an_authenticated_alarm() {
    let (_d, path) = pin_fixture(SecurityPolicy::default());
    {
        let t = Token::open(&path).unwrap();
        t.login(UserType::User, &user()).unwrap();
        t.tamper_signal("enclosure opened");
        assert!(t.tamper_alarm().is_some());
    }
    assert_eq!(sql(&path, "DELETE FROM meta WHERE k = 'alarm'"), 1);
    let t = Token::open(&path).unwrap();
    assert_eq!(t.tamper_alarm().as_deref(), Some("enclosure opened"));
    assert!(matches!(t.login(UserType::User, &user()), Err(Error::TamperAlarm(_))));
    // The SO may log in during an alarm; the store verifies and the alarm is still there.
    t.login(UserType::So, &so()).unwrap();
    assert_eq!(t.logged_in(), Some(UserType::So));
    assert!(matches!(t.find(&[]), Err(Error::TamperAlarm(_))), "service is still refused");
    assert_eq!(t.tamper_alarm().as_deref(), Some("enclosure opened"));
    drop(t);
    // Both copies deleted: the authenticated one is a deleted row.
    assert_eq!(sql(&path, "DELETE FROM meta WHERE k = 'alarm'"), 0);
    assert_eq!(
        sql(
            &path,
            "DELETE FROM records WHERE kind = 'setting' AND key = CAST('tamper_alarm' AS BLOB)"
        ),
        1
    );
    let r = Token::open(&path).and_then(|t| t.login(UserType::User, &user()));
    assert_integrity(r, "alarm setting deleted");
}

/// The security policy row deleted or edited: an integrity error, never a default policy.
#[test]
fn deleting_or_forging_the_policy_is_an_integrity_failure() {
    let forged = r#"{"tamper_response":"alarm","so_failure_limit":0,"tamper_file":null,"tracer_is_tamper":false,"checkpoint_every_records":0,"checkpoint_every_secs":0,"audit_key_use":false,"wrap_requires_trusted":false}"#;
    let edits = [
        ("deleted", "DELETE FROM records WHERE kind = 'setting' AND key = CAST('policy' AS BLOB)".to_owned()),
        ("forged", format!("UPDATE records SET value = CAST('{forged}' AS BLOB) WHERE kind = 'setting' AND key = CAST('policy' AS BLOB)")),
        ("mac removed", "UPDATE records SET mac = x'' WHERE kind = 'setting' AND key = CAST('policy' AS BLOB)".to_owned()),
    ];
    for (what, q) in edits {
        let (_d, path) =
            pin_fixture(SecurityPolicy { audit_key_use: true.into(), ..SecurityPolicy::default() });
        assert_eq!(sql(&path, &q), 1, "{what}");
        for (ut, pin) in [(UserType::User, user()), (UserType::So, so())] {
            let t = Token::open(&path).unwrap();
            assert_integrity(t.login(ut, &pin), what);
            assert!(t.logged_in().is_none(), "{what}: nobody logged in");
        }
    }
}

/// The tamper response to an attack on the policy row is the one the store was initialized
/// with: a store that zeroizes on tampering must not be downgraded to an alarm by deleting or
/// forging its policy (issue 9, attack 3: "zeroize downgraded to alarm").
#[test]

fn deleting_the_policy_does_not_downgrade_a_zeroize_response() {
    let forged = r#"{"tamper_response":"alarm","so_failure_limit":5,"tamper_file":null,"tracer_is_tamper":false,"checkpoint_every_records":1000,"checkpoint_every_secs":60,"audit_key_use":true,"wrap_requires_trusted":false}"#;
    let edits = [
        ("deleted", "DELETE FROM records WHERE kind = 'setting' AND key = CAST('policy' AS BLOB)".to_owned()),
        ("forged", format!("UPDATE records SET value = CAST('{forged}' AS BLOB) WHERE kind = 'setting' AND key = CAST('policy' AS BLOB)")),
    ];
    for (what, q) in edits {
        let zeroize = SecurityPolicy {
            tamper_response: TamperResponse::Zeroize,
            ..SecurityPolicy::default()
        };
        let (_d, path) = pin_fixture(zeroize);
        assert_eq!(sql(&path, &q), 1, "{what}");
        let t = Token::open(&path).unwrap();
        assert_integrity(t.login(UserType::User, &user()), what);
        assert!(t.is_zeroized(), "{what}: the store is in {:?}, not zeroized", t.tamper_alarm());
    }
}

/// A keyslot row saved before a PIN change and put back: the old PIN unlocks nothing.
#[test]
fn a_replayed_keyslot_does_not_let_the_old_pin_in() {
    let (_d, path) = pin_fixture(SecurityPolicy::default());
    let old: (Vec<u8>, Vec<u8>, Vec<u8>) = Connection::open(&path)
        .unwrap()
        .query_row("SELECT salt, wrapped_mk, mac FROM keyslots WHERE user_type = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    {
        let t = Token::open(&path).unwrap();
        t.login(UserType::User, &user()).unwrap();
        t.set_pin(&user(), &user2()).unwrap();
    }
    {
        let t = Token::open(&path).unwrap();
        assert!(matches!(t.login(UserType::User, &user()), Err(Error::PinIncorrect)));
        t.login(UserType::User, &user2()).unwrap();
    }
    let c = Connection::open(&path).unwrap();
    let n = c
        .execute(
            "UPDATE keyslots SET salt = ?1, wrapped_mk = ?2, mac = ?3 WHERE user_type = 1",
            rusqlite::params![old.0, old.1, old.2],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(c);
    let t = Token::open(&path).unwrap();
    // The old PIN unwraps the (same) master key, and the set then gives the replay away.
    assert_integrity(t.login(UserType::User, &user()), "old PIN on the replayed keyslot");
    assert!(t.logged_in().is_none());
    assert!(t.find(&[]).unwrap_or_default().is_empty(), "nothing private is served");
}

/// A whole-store copy from before a change (every row and the sealed state consistent) is a
/// rollback: refused by the host's high-water mark.
#[test]
fn a_whole_store_replay_is_a_rollback() {
    let (d, path) = pin_fixture(SecurityPolicy::default());
    let old = d.path().join("old/t.db");
    checkpoint(&path);
    copy_store(&path, &old);
    {
        let t = Token::open(&path).unwrap();
        t.login(UserType::User, &user()).unwrap();
        t.set_pin(&user(), &user2()).unwrap();
    }
    checkpoint(&path);
    // The old store file back (the audit log stays the current one).
    std::fs::copy(&old, &path).unwrap();
    let t = Token::open(&path).unwrap();
    let r = t.login(UserType::User, &user());
    assert!(matches!(r, Err(Error::Rollback { .. })), "{r:?}");
    assert_integrity(r, "whole-store replay");
}

/// Reads one object row (every column) by handle.
fn object_row(path: &Path, handle: u64) -> Row {
    read_rows(path)
        .into_iter()
        .find(|r| {
            r.table == "objects"
                && r.col("handle") == &Value::Integer(i64::try_from(handle).unwrap())
        })
        .unwrap()
}

/// The rows of `kind` records.
fn record_rows(path: &Path, kind: &str) -> Vec<Row> {
    read_rows(path)
        .into_iter()
        .filter(|r| r.table == "records" && r.col("kind") == &Value::Text(kind.into()))
        .collect()
}

/// A destroyed key's row put back from outside while a process has the store open and
/// unlocked: that process refuses to serve it (embedded stores re-verify at most once per ten
/// times the last verification's duration, so the test retries until that window passes and
/// reports how long the key stayed usable), and a second token over the same file refuses to
/// unlock.
#[test]
fn a_resurrected_key_is_detected_by_a_running_embedded_token() {
    let (_d, path) = pin_fixture(SecurityPolicy::default());
    let t = Token::open(&path).unwrap();
    t.login(UserType::User, &user()).unwrap();
    let h = aes(&t, "doomed", true, &[]).unwrap();
    let ct = t.encrypt(h, &gcm(), b"secret").unwrap();
    let saved = object_row(&path, h);
    t.destroy_object(h).unwrap();
    assert!(t.encrypt(h, &gcm(), b"x").is_err());
    {
        let c = Connection::open(&path).unwrap();
        assert_eq!(insert(&c, &saved).unwrap(), 1);
    }
    let start = Instant::now();
    let mut served = 0u32;
    let err = loop {
        match t.decrypt(h, &gcm(), &ct) {
            Ok(_) => served += 1,
            Err(e) => break e,
        }
        assert!(start.elapsed() < Duration::from_secs(12), "never detected");
        std::thread::sleep(Duration::from_millis(5));
    };
    println!(
        "embedded: the resurrected key was served {served} times in {:?} before detection",
        start.elapsed()
    );
    assert!(is_integrity(&err), "{err:?}");
    // From then on the token refuses service (tamper alarm), the key included.
    assert!(t.decrypt(h, &gcm(), &ct).is_err());
    assert!(t.find(&[]).is_err());
    // A second token over the same file refuses to unlock.
    let t2 = Token::open(&path).unwrap();
    let r = t2.login(UserType::So, &so());
    assert_integrity(r, "second token, SO");
}

/// The same on a quorum store (the daemon's): verified at once on the next call.
#[test]
fn a_resurrected_key_is_detected_at_once_by_a_running_quorum_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let shares = quorum_store(&path, &SecurityPolicy::default());
    let t = open_unsealed(&path, &shares);
    // An immediate destruction (a daemon store would schedule it and keep the row).
    as_caller(caller(&admin(&t), 1), || t.set_destroy_settings(Some(0), None, true).unwrap());
    let keeper = keeper(&t);
    let (h, ct) = as_caller(caller(&keeper, 1), || {
        let h = aes(&t, "doomed", true, &[]).unwrap();
        (h, t.encrypt(h, &gcm(), b"secret").unwrap())
    });
    let saved = object_row(&path, h);
    as_caller(caller(&keeper, 1), || t.destroy_object(h).unwrap());
    {
        let c = Connection::open(&path).unwrap();
        assert_eq!(insert(&c, &saved).unwrap(), 1);
    }
    as_caller(caller(&keeper, 1), || {
        assert_integrity(t.decrypt(h, &gcm(), &ct), "first use after the re-insertion");
        assert!(t.decrypt(h, &gcm(), &ct).is_err());
    });
    // A second token over the same file: the first one raised the alarm, so it refuses to
    // unseal before it even looks (and the rows would not verify either).
    let t2 = Token::open(&path).unwrap();
    let r = unseal(&t2, &path, &shares);
    assert!(
        matches!(&r, Err(UnsealFail::Core(Error::TamperAlarm(why))) if why.contains("integrity")),
        "{r:?}"
    );
}

/// A used approval's record deleted from outside under a running quorum token, to use the
/// approval again: caught at the next call (issue 9, attack 6, "deleting the approvals file
/// let used approvals be replayed").
#[test]
fn a_used_approval_cannot_be_replayed_by_deleting_its_row_under_a_running_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let shares = quorum_store(&path, &SecurityPolicy::default());
    let t = open_unsealed(&path, &shares);
    let digest = [9u8; 32];
    t.use_approval(&digest, now_secs() + 3600, now_secs()).unwrap();
    assert!(t.use_approval(&digest, now_secs() + 3600, now_secs()).is_err());
    assert_eq!(record_rows(&path, "approval").len(), 1);
    assert_eq!(sql(&path, "DELETE FROM records WHERE kind = 'approval'"), 1);
    assert_integrity(t.use_approval(&digest, now_secs() + 3600, now_secs()), "approval deleted");
}

/// A user's login state (failure count) put back from outside under a running token, to
/// reset a lockout: caught at the next authentication (issue 9, attacks 4 and 6).
#[test]
fn a_lockout_cannot_be_reset_by_replaying_the_login_state_under_a_running_token() {
    // A quorum store: the daemon's, which re-verifies at once after any foreign commit.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let shares = quorum_store(&path, &SecurityPolicy::default());
    let t = open_unsealed(&path, &shares);
    let so = admin(&t);
    let alice = as_caller(caller(&so, 1), || {
        t.create_user("alice", Role::CryptoUser, b"alice-password", None).unwrap()
    });
    t.set_login_failure_limit(3);
    let cred = |pw: &'static [u8]| Credentials {
        name: "alice",
        password: pw,
        totp: None,
        cert_sha256: None,
    };
    assert!(matches!(t.authenticate(&cred(b"wrong-password")), Err(Error::PinIncorrect)));
    let early: Vec<Row> = record_rows(&path, "login")
        .into_iter()
        .filter(|r| r.col("key") == &Value::Blob(alice.0.to_vec()))
        .collect();
    assert_eq!(early.len(), 1, "alice's login state");
    for _ in 0..3 {
        let _ = t.authenticate(&cred(b"wrong-password"));
    }
    assert!(matches!(t.authenticate(&cred(b"alice-password")), Err(Error::PinLocked)));
    let late: Vec<Row> =
        record_rows(&path, "login").into_iter().filter(|r| r.same_address(&early[0])).collect();
    {
        let c = Connection::open(&path).unwrap();
        assert_eq!(update(&c, &late[0], &early[0]).unwrap(), 1);
    }
    let r = t.authenticate(&cred(b"alice-password"));
    assert!(matches!(&r, Err(e) if is_integrity(e)), "after the replay: {r:?}");
}
