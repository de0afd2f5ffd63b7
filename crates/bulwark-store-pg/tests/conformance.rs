//! The store conformance suite: the same tests, generic over `S: Store`, run against the SQLite
//! store (the reference) and the PostgreSQL store. What the kernel relies on: transactions
//! commit or vanish, writers serialize, the change counter moves on another connection's commit
//! and only then, record prefix scans, one snapshot per scan, attempt counting under parallel
//! threads, zeroization, creation/opening/schema versions.
//!
//! The store does not judge MACs (the kernel does), so rows here carry arbitrary bytes.

// Test code: short names for stores and rows, `Arc`s handed to the suite's threads.
#![allow(
    missing_docs,
    clippy::too_many_lines,
    clippy::many_single_char_names,
    clippy::needless_pass_by_value,
    clippy::single_match_else,
    clippy::cast_possible_truncation
)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use bulwark_core::store::{
    HeaderNote, KeyslotRow, ObjectRow, RecordRow, ScanRow, SqliteStore, Store, StoreTx,
};
use bulwark_core::Error;
use bulwark_store_pg::{PgOptions, PgStore};

/// Where a store lives, and how to open more connections to it.
trait Backend: Send + Sync {
    type S: Store + 'static;
    fn create(&self, uid: [u8; 16], policy: &str) -> Result<Self::S, Error>;
    fn open(&self) -> Result<Self::S, Error>;
    /// Writes an unknown schema version behind the store's back.
    fn set_schema_version(&self, v: i64);
}

struct Sqlite {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Sqlite {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        Self { _dir: dir, path }
    }
}

impl Backend for Sqlite {
    type S = SqliteStore;
    fn create(&self, uid: [u8; 16], policy: &str) -> Result<SqliteStore, Error> {
        SqliteStore::create(&self.path, uid, policy)
    }
    fn open(&self) -> Result<SqliteStore, Error> {
        SqliteStore::open(&self.path)
    }
    fn set_schema_version(&self, v: i64) {
        // The SQLite store keeps its version in PRAGMA user_version.
        let c = rusqlite::Connection::open(&self.path).unwrap();
        c.pragma_update(None, "user_version", v).unwrap();
    }
}

struct Pg {
    db: support::Db,
}

impl Backend for Pg {
    type S = PgStore;
    fn create(&self, uid: [u8; 16], policy: &str) -> Result<PgStore, Error> {
        PgStore::create(&self.db.url, uid, policy, &PgOptions::default())
    }
    fn open(&self) -> Result<PgStore, Error> {
        PgStore::open(&self.db.url, &PgOptions::default())
    }
    fn set_schema_version(&self, v: i64) {
        let v = i32::try_from(v).unwrap();
        self.db.client().execute("UPDATE schema_version SET version = $1", &[&v]).unwrap();
    }
}

const UID: [u8; 16] = *b"conformance-uid!";

fn obj(uid: u8, class: u64, label: &[u8], ckaid: &[u8], secret: bool) -> ObjectRow {
    ObjectRow {
        handle: 0,
        uid: [uid; 16],
        class,
        label: label.to_vec(),
        ckaid: ckaid.to_vec(),
        private: uid % 2 == 0,
        attrs: vec![uid, 1, 2, 3],
        secret: secret.then(|| vec![0xee; 44]),
        mac: Vec::new(),
    }
}

fn rec(kind: &str, key: &[u8], value: &[u8]) -> RecordRow {
    RecordRow { kind: kind.into(), key: key.to_vec(), value: value.to_vec(), mac: vec![7; 32] }
}

fn slot(user_type: u8, tag: u8) -> KeyslotRow {
    KeyslotRow {
        user_type,
        salt: vec![tag; 16],
        m_cost: 65536,
        t_cost: u32::MAX,
        p_cost: 0,
        wrapped_mk: vec![tag; 60],
        mac: vec![tag; 32],
    }
}

/// Runs `f` as one write that bumps the generation like the kernel does.
fn write<S: Store>(
    s: &S,
    mut f: impl FnMut(&mut dyn StoreTx) -> Result<(), Error>,
) -> Result<(), Error> {
    s.write(&mut |tx| {
        let g = tx.header()?.generation;
        f(tx)?;
        tx.set_state(g + 1, &(g + 1).to_be_bytes())
    })
}

fn insert<S: Store>(s: &S, row: &ObjectRow) -> u64 {
    let mut h = 0;
    write(s, |tx| {
        h = tx.insert_object(row)?;
        tx.set_object_mac(h, &[h as u8; 32])
    })
    .unwrap();
    h
}

fn all_rows<S: Store>(s: &S) -> (Vec<KeyslotRow>, Vec<ObjectRow>, Vec<RecordRow>) {
    let (mut k, mut o, mut r) = (Vec::new(), Vec::new(), Vec::new());
    s.scan(&mut |row| {
        match row {
            ScanRow::Keyslot(x) => k.push(x.clone()),
            ScanRow::Object(x) => o.push(x.clone()),
            ScanRow::Record(x) => r.push(x.clone()),
        }
        Ok(())
    })
    .unwrap();
    k.sort_by_key(|x| x.user_type);
    o.sort_by_key(|x| x.handle);
    r.sort_by(|a, b| (&a.kind, &a.key).cmp(&(&b.kind, &b.key)));
    (k, o, r)
}

// ---------------------------------------------------------------------------------------------
// The suite.

fn create_open_and_schema<B: Backend>(b: &B) {
    assert!(matches!(b.open(), Err(Error::NotInitialized(_))), "open before create");
    let s = b.create(UID, "quorum").unwrap();
    let h = s.header().unwrap();
    assert_eq!(h.store_uid, UID);
    assert_eq!(h.policy, "quorum");
    assert_eq!(h.generation, 0);
    assert!(h.state.is_empty());
    assert!(!h.zeroized);
    assert_eq!((h.alarm, h.audit_pub), (None, None));
    assert_eq!(s.count().unwrap(), 0);
    assert!(matches!(b.create(UID, "quorum"), Err(Error::AlreadyInitialized(_))));
    drop(s);
    let s = b.open().unwrap();
    assert_eq!(s.header().unwrap().store_uid, UID);
    drop(s);
    b.set_schema_version(99);
    assert!(matches!(b.open(), Err(Error::SchemaUnsupported(99))), "unknown schema version");
}

fn header_notes<B: Backend>(b: &B) {
    let a = b.create(UID, "keyslots").unwrap();
    let other = b.open().unwrap();
    a.set_header_note(HeaderNote::Alarm, Some(b"integrity failure")).unwrap();
    a.set_header_note(HeaderNote::AuditPub, Some(&[9; 32])).unwrap();
    let h = other.header().unwrap();
    assert_eq!(h.alarm.as_deref(), Some("integrity failure"));
    assert_eq!(h.audit_pub, Some(vec![9; 32]));
    other.set_header_note(HeaderNote::Alarm, None).unwrap();
    let h = a.header().unwrap();
    assert_eq!(h.alarm, None);
    assert_eq!(h.audit_pub, Some(vec![9; 32]));
}

fn rows_round_trip<B: Backend>(b: &B) {
    let s = b.create(UID, "keyslots").unwrap();
    let h1 = insert(&s, &obj(1, 3, b"alpha", b"id1", true));
    let h2 = insert(&s, &obj(2, 2, b"alpha", b"id2", false));
    let h3 = insert(&s, &obj(3, 3, b"beta", b"id1", true));
    assert!(h1 < h2 && h2 < h3, "handles ascend");
    assert!(h3 < 1 << 31, "token handles stay below the session-handle range");
    let o1 = s.object(h1).unwrap().unwrap();
    let mut want = obj(1, 3, b"alpha", b"id1", true);
    want.handle = h1;
    want.mac = vec![h1 as u8; 32];
    assert_eq!(o1, want);
    assert_eq!(s.object(h2).unwrap().unwrap().secret, None);
    assert_eq!(s.object(9999).unwrap(), None);
    let handles = |v: Vec<ObjectRow>| v.into_iter().map(|o| o.handle).collect::<Vec<_>>();
    assert_eq!(handles(s.find(None, None, None).unwrap()), [h1, h2, h3]);
    assert_eq!(handles(s.find(Some(3), None, None).unwrap()), [h1, h3]);
    assert_eq!(handles(s.find(None, Some(b"alpha"), None).unwrap()), [h1, h2]);
    assert_eq!(handles(s.find(None, None, Some(b"id1")).unwrap()), [h1, h3]);
    assert_eq!(handles(s.find(Some(3), Some(b"alpha"), None).unwrap()), [h1]);
    assert_eq!(handles(s.find(Some(3), None, Some(b"id1")).unwrap()), [h1, h3]);
    assert_eq!(handles(s.find(None, Some(b"beta"), Some(b"id1")).unwrap()), [h3]);
    assert_eq!(handles(s.find(Some(2), Some(b"beta"), Some(b"id1")).unwrap()), Vec::<u64>::new());
    assert_eq!(s.count().unwrap(), 3);

    // Update (same handle and uid only), delete.
    write(&s, |tx| {
        let mut o = tx.object(h1)?.unwrap();
        o.label = b"renamed".to_vec();
        o.secret = None;
        o.mac = vec![1; 32];
        assert!(tx.update_object(&o)?);
        let mut wrong = o.clone();
        wrong.uid = [0x55; 16];
        assert!(!tx.update_object(&wrong)?, "another uid under the handle");
        let gone = tx.delete_object(h2)?.unwrap();
        assert_eq!(gone.label, b"alpha");
        assert!(tx.delete_object(h2)?.is_none());
        Ok(())
    })
    .unwrap();
    let o1 = s.object(h1).unwrap().unwrap();
    assert_eq!((o1.label.as_slice(), o1.secret.as_ref()), (&b"renamed"[..], None));
    assert_eq!(s.object(h2).unwrap(), None);
    assert_eq!(s.count().unwrap(), 2);
    let h4 = insert(&s, &obj(4, 3, b"x", b"", false));
    assert!(h4 > h3, "a deleted handle is never handed out again");

    // Keyslots: insert and replace.
    write(&s, |tx| {
        tx.put_keyslot(&slot(0, 1))?;
        tx.put_keyslot(&slot(2, 2))?;
        tx.put_keyslot(&slot(0, 3))
    })
    .unwrap();
    assert_eq!(s.keyslot(0).unwrap(), Some(slot(0, 3)));
    assert_eq!(s.keyslot(2).unwrap(), Some(slot(2, 2)), "u32 columns round-trip");
    assert_eq!(s.keyslot(1).unwrap(), None);

    // Records: insert, replace, delete.
    write(&s, |tx| {
        tx.put_record(&rec("user", b"u1", b"v1"))?;
        tx.put_record(&rec("user", b"u1", b"v2"))?;
        tx.put_record(&rec("grant", b"u1", b"g"))?;
        assert_eq!(tx.record("user", b"u1")?.unwrap().value, b"v2");
        let old = tx.delete_record("grant", b"u1")?.unwrap();
        assert_eq!(old.value, b"g");
        assert!(tx.delete_record("grant", b"u1")?.is_none());
        Ok(())
    })
    .unwrap();
    assert_eq!(s.record("user", b"u1").unwrap(), Some(rec("user", b"u1", b"v2")));
    assert_eq!(s.record("grant", b"u1").unwrap(), None);
    let (k, o, r) = all_rows(&s);
    assert_eq!((k.len(), o.len(), r.len()), (2, 3, 1));
    assert_eq!(s.header().unwrap().generation, 7, "one generation per write");
}

fn records_by_prefix<B: Backend>(b: &B) {
    let s = b.create(UID, "keyslots").unwrap();
    let keys: [&[u8]; 9] =
        [b"", b"a", b"ab", b"ab\x00", b"ab\xff", b"ab\xff\xff", b"ac", b"b", b"\xff\xff"];
    write(&s, |tx| {
        for k in keys {
            tx.put_record(&rec("grant", k, b"v"))?;
            tx.put_record(&rec("grantx", k, b"other kind"))?;
        }
        tx.put_record(&rec("gran", b"ab", b"shorter kind"))
    })
    .unwrap();
    let got = |p: &[u8]| -> Vec<Vec<u8>> {
        let v = s.records("grant", p).unwrap();
        assert!(v.iter().all(|r| r.kind == "grant"));
        // The transaction's view agrees with the store's.
        let mut in_tx = Vec::new();
        s.write(&mut |tx| {
            in_tx = tx.records("grant", p)?.into_iter().map(|r| r.key).collect();
            Err(Error::Internal("read only"))
        })
        .unwrap_err();
        let keys: Vec<Vec<u8>> = v.into_iter().map(|r| r.key).collect();
        assert_eq!(keys, in_tx);
        keys
    };
    let k = |v: &[&[u8]]| v.iter().map(|x| x.to_vec()).collect::<Vec<_>>();
    assert_eq!(got(b""), k(&keys), "empty prefix: all, ordered by key");
    assert_eq!(got(b"ab"), k(&[b"ab", b"ab\x00", b"ab\xff", b"ab\xff\xff"]));
    assert_eq!(got(b"ab\xff"), k(&[b"ab\xff", b"ab\xff\xff"]));
    assert_eq!(got(b"\xff"), k(&[b"\xff\xff"]));
    assert_eq!(got(b"\xff\xff"), k(&[b"\xff\xff"]));
    assert_eq!(got(b"zz"), Vec::<Vec<u8>>::new());
}

fn transactions_commit_or_vanish<B: Backend>(b: &B) {
    let s = b.create(UID, "keyslots").unwrap();
    let h1 = insert(&s, &obj(1, 3, b"keep", b"", true));
    write(&s, |tx| tx.put_record(&rec("setting", b"label", b"before"))).unwrap();
    let before = (s.header().unwrap(), all_rows(&s), s.count().unwrap());
    let other = b.open().unwrap();
    let r = s.write(&mut |tx| {
        let g = tx.header()?.generation;
        tx.insert_object(&obj(9, 3, b"ghost", b"", true))?;
        tx.delete_object(h1)?;
        tx.put_record(&rec("setting", b"label", b"after"))?;
        tx.put_record(&rec("user", b"new", b"x"))?;
        tx.put_keyslot(&slot(1, 9))?;
        tx.set_state(g + 1, b"next")?;
        // Nothing of it is visible to another connection before the commit.
        assert_eq!(other.header().unwrap().generation, g);
        assert!(other.object(h1).unwrap().is_some());
        assert!(other.record("user", b"new").unwrap().is_none());
        Err(Error::Integrity("the kernel refused"))
    });
    assert!(matches!(r, Err(Error::Integrity("the kernel refused"))));
    assert_eq!((s.header().unwrap(), all_rows(&s), s.count().unwrap()), before, "rolled back");
    assert_eq!((other.header().unwrap(), all_rows(&other)), (before.0.clone(), before.1.clone()));
    // And a committed one is visible everywhere, whole.
    write(&s, |tx| {
        tx.put_record(&rec("setting", b"label", b"after"))?;
        tx.delete_object(h1).map(|_| ())
    })
    .unwrap();
    assert_eq!(other.record("setting", b"label").unwrap().unwrap().value, b"after");
    assert_eq!(other.object(h1).unwrap(), None);
    assert_eq!(other.header().unwrap().generation, before.0.generation + 1);
    assert_eq!(other.count().unwrap(), 0);
}

/// Read-modify-write from several connections at once: without serialized writers some
/// increments would be lost.
fn writers_serialize<B: Backend + 'static>(b: Arc<B>) {
    const THREADS: u64 = 4;
    const EACH: u64 = 25;
    let s = b.create(UID, "keyslots").unwrap();
    write(&s, |tx| tx.put_record(&rec("counter", b"n", &0u64.to_be_bytes()))).unwrap();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || {
                let s = b.open().unwrap();
                for _ in 0..EACH {
                    write(&s, |tx| {
                        let r = tx.record("counter", b"n")?.unwrap();
                        let n = u64::from_be_bytes(r.value.try_into().unwrap());
                        tx.put_record(&rec("counter", b"n", &(n + 1).to_be_bytes()))
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let n = s.record("counter", b"n").unwrap().unwrap().value;
    assert_eq!(u64::from_be_bytes(n.try_into().unwrap()), THREADS * EACH);
    assert_eq!(s.header().unwrap().generation, 1 + THREADS * EACH);
}

fn change_counter_semantics<B: Backend>(b: &B) {
    let a = b.create(UID, "keyslots").unwrap();
    let other = b.open().unwrap();
    let ca = a.change_counter().unwrap();
    let co = other.change_counter().unwrap();
    assert_eq!(a.change_counter().unwrap(), ca, "stable while nothing commits");
    // Our own commits do not move our counter; they move the other connection's.
    insert(&a, &obj(1, 3, b"x", b"", true));
    assert_eq!(a.change_counter().unwrap(), ca, "own write");
    let co2 = other.change_counter().unwrap();
    assert_ne!(co2, co, "foreign write");
    assert_eq!(other.change_counter().unwrap(), co2, "seen once");
    // A rolled-back write is no change.
    let _ = a.write(&mut |tx| {
        tx.put_record(&rec("x", b"y", b"z"))?;
        Err(Error::Internal("abort"))
    });
    assert_eq!(other.change_counter().unwrap(), co2, "rolled back");
    // Every kind of commit counts: attempts, header notes, ...
    let ca = a.change_counter().unwrap();
    other.count_attempt("pin:user").unwrap();
    let ca2 = a.change_counter().unwrap();
    assert_ne!(ca2, ca, "foreign attempt counted");
    other.set_header_note(HeaderNote::Alarm, Some(b"x")).unwrap();
    let ca3 = a.change_counter().unwrap();
    assert_ne!(ca3, ca2, "foreign header note");
    let co3 = other.change_counter().unwrap();
    a.clear_attempts("pin:user").unwrap();
    let co4 = other.change_counter().unwrap();
    assert_ne!(co4, co3, "foreign attempts cleared");
    // ... and zeroization.
    a.zeroize().unwrap();
    assert_ne!(other.change_counter().unwrap(), co4, "foreign zeroization");
}

/// A scan sees one state: the writer keeps the object count, the record count and the
/// generation in step; every scan must find them equal.
fn scan_is_one_snapshot<B: Backend + 'static>(b: Arc<B>) {
    let s = b.create(UID, "keyslots").unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (b, stop) = (b.clone(), stop.clone());
        std::thread::spawn(move || {
            let w = b.open().unwrap();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 2000 {
                i += 1;
                w.write(&mut |tx| {
                    let g = tx.header()?.generation;
                    let mut o = obj(0, 3, b"o", b"", false);
                    o.uid[..4].copy_from_slice(&i.to_be_bytes());
                    let h = tx.insert_object(&o)?;
                    tx.set_object_mac(h, &[1; 32])?;
                    tx.put_record(&rec("r", &h.to_be_bytes(), b""))?;
                    tx.set_state(g + 1, &(g + 1).to_be_bytes())
                })
                .unwrap();
            }
            i
        })
    };
    let mut scans = 0;
    let mut last = 0;
    let start = std::time::Instant::now();
    // At least 40 scans, and on until some of them ran while the writer wrote (scans may read
    // on a connection of their own and never wait for the writer).
    while scans < 40 || (last < 5 && start.elapsed() < std::time::Duration::from_secs(30)) {
        let (mut objects, mut records) = (0u64, 0u64);
        let h = s
            .scan(&mut |row| {
                match row {
                    ScanRow::Object(_) => objects += 1,
                    ScanRow::Record(_) => records += 1,
                    ScanRow::Keyslot(_) => {}
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(objects, h.generation, "objects vs generation of the same snapshot");
        assert_eq!(records, h.generation, "records vs generation of the same snapshot");
        if h.generation > 0 {
            assert_eq!(h.state, h.generation.to_be_bytes());
        }
        assert!(h.generation >= last);
        last = h.generation;
        scans += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let wrote = writer.join().unwrap();
    assert!(wrote > 0);
    // A scan stops at the callback's first error and returns it.
    let mut seen = 0;
    let r = s.scan(&mut |_| {
        seen += 1;
        Err(Error::Integrity("bad row"))
    });
    assert!(matches!(r, Err(Error::Integrity("bad row"))));
    assert_eq!(seen, 1);
}

fn attempts_under_parallel_threads<B: Backend + 'static>(b: Arc<B>) {
    const THREADS: usize = 8;
    const EACH: usize = 20;
    let s = Arc::new(b.create(UID, "keyslots").unwrap());
    assert_eq!(s.attempts("pin:user").unwrap(), 0);
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            // Half share one store value (one connection or pool), half open their own.
            let (b, shared) = (b.clone(), s.clone());
            std::thread::spawn(move || {
                let own = (i % 2 == 1).then(|| b.open().unwrap());
                (0..EACH)
                    .map(|_| match &own {
                        Some(o) => o.count_attempt("pin:user").unwrap(),
                        None => shared.count_attempt("pin:user").unwrap(),
                    })
                    .collect::<Vec<u32>>()
            })
        })
        .collect();
    let mut all: Vec<u32> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    all.sort_unstable();
    let want: Vec<u32> = (1..=u32::try_from(THREADS * EACH).unwrap()).collect();
    assert_eq!(all, want, "every attempt counted once, each count handed out once");
    assert_eq!(s.attempts("pin:user").unwrap(), want.len() as u32);
    assert_eq!(s.attempts("pin:so").unwrap(), 0);
    s.clear_attempts("pin:user").unwrap();
    assert_eq!(s.attempts("pin:user").unwrap(), 0);
    assert_eq!(s.count_attempt("pin:user").unwrap(), 1);
}

fn zeroize_destroys_everything<B: Backend>(b: &B) {
    let s = b.create(UID, "keyslots").unwrap();
    write(&s, |tx| {
        tx.put_keyslot(&slot(0, 1))?;
        tx.put_record(&rec("setting", b"audit_key", b"sealed"))?;
        Ok(())
    })
    .unwrap();
    insert(&s, &obj(1, 3, b"k", b"", true));
    s.count_attempt("pin:so").unwrap();
    s.set_header_note(HeaderNote::AuditPub, Some(&[5; 32])).unwrap();
    let other = b.open().unwrap();
    s.zeroize().unwrap();
    for st in [&s, &other] {
        let h = st.header().unwrap();
        assert!(h.zeroized);
        assert!(h.state.is_empty());
        assert_eq!(h.store_uid, UID);
        assert_eq!(h.audit_pub, Some(vec![5; 32]), "the audit key stays verifiable");
        assert_eq!(st.keyslot(0).unwrap(), None);
        assert_eq!(st.count().unwrap(), 0);
        assert_eq!(st.attempts("pin:so").unwrap(), 0);
        let (k, o, r) = all_rows(st);
        assert!(k.is_empty() && o.is_empty() && r.is_empty());
    }
}

macro_rules! suite {
    ($modname:ident, $make:expr) => {
        mod $modname {
            use super::*;

            #[test]
            fn create_open_and_schema() {
                super::create_open_and_schema(&$make);
            }
            #[test]
            fn header_notes() {
                super::header_notes(&$make);
            }
            #[test]
            fn rows_round_trip() {
                super::rows_round_trip(&$make);
            }
            #[test]
            fn records_by_prefix() {
                super::records_by_prefix(&$make);
            }
            #[test]
            fn transactions_commit_or_vanish() {
                super::transactions_commit_or_vanish(&$make);
            }
            #[test]
            fn writers_serialize() {
                super::writers_serialize(Arc::new($make));
            }
            #[test]
            fn change_counter_semantics() {
                super::change_counter_semantics(&$make);
            }
            #[test]
            fn scan_is_one_snapshot() {
                super::scan_is_one_snapshot(Arc::new($make));
            }
            #[test]
            fn attempts_under_parallel_threads() {
                super::attempts_under_parallel_threads(Arc::new($make));
            }
            #[test]
            fn zeroize_destroys_everything() {
                super::zeroize_destroys_everything(&$make);
            }
        }
    };
}

suite!(sqlite, Sqlite::new());
suite!(
    postgres,
    match support::server() {
        Some(s) => Pg { db: support::Db::new(s) },
        None => {
            eprintln!("skipped: PostgreSQL is not installed");
            return;
        }
    }
);
