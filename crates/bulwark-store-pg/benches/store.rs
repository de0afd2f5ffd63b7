//! The kernel on PostgreSQL next to the kernel on SQLite, same operations, same machine: token
//! key creations per second (one authenticated write transaction each, durable before it
//! returns: SQLite `synchronous=FULL`, PostgreSQL `synchronous_commit=on` with `fsync=on`),
//! signatures per second on a stored key (each call checks the store's change counter: one
//! query on PostgreSQL), lookups by label, and one full verification of the store.
//!
//! PostgreSQL is a private server started like the tests' (Debian's `postgresql` package, a
//! Unix socket, default durability settings). Key uses are not audited (`audit_key_use = off`)
//! so that the figures are the store's; key creation is audited durably on both, as always.
//!
//! `cargo bench -p bulwark-store-pg --bench store` (`BULWARK_BENCH_KEYS`, `BULWARK_BENCH_SIGNS`
//! change the counts).

#![allow(missing_docs, clippy::cast_precision_loss)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Instant;

use bulwark_core::attr::{AttrType, AttrValue};
use bulwark_core::audit::AuditKeyUse;
use bulwark_core::crypto::Curve;
use bulwark_core::hierarchy::KdfParams;
use bulwark_core::kernel::{as_caller, Caller, Principal, Role};
use bulwark_core::mechanism::{KeyGenMechanism, Mechanism};
use bulwark_core::seal::{Progress, QuorumPolicy, ShareFile, Unsealer};
use bulwark_core::store::{SqliteStore, Store};
use bulwark_core::token::{Credentials, InitialUser, SecurityPolicy};
use bulwark_core::Token;
use bulwark_store_pg::{init_quorum, PgOptions, PgStore};

const FAST: KdfParams = KdfParams { m_cost: 256, t_cost: 1, p_cost: 1 };

fn count(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn policy() -> SecurityPolicy {
    SecurityPolicy { audit_key_use: AuditKeyUse::Off, ..SecurityPolicy::for_daemon() }
}

fn admin() -> InitialUser {
    InitialUser {
        name: "admin".into(),
        role: Role::SecurityOfficer,
        password: zeroize::Zeroizing::new(b"admin-password".to_vec()),
    }
}

fn shares(init: &bulwark_core::seal::QuorumInit) -> Vec<String> {
    init.shares.iter().map(|s| ShareFile::new(init, s, None, FAST).unwrap().to_json()).collect()
}

fn unseal<S: Store>(t: &Token<S>, policy_from: &S, shares: &[String]) {
    let mut u = Unsealer::new(QuorumPolicy::from_store(policy_from).unwrap());
    for json in shares {
        let share = ShareFile::parse(json.as_bytes()).unwrap().share(None).unwrap();
        if let Progress::Complete(keys) = u.submit(share).unwrap() {
            let (vault, ik) = *keys;
            t.unseal(vault, ik).unwrap();
            return;
        }
    }
    panic!("unseal incomplete");
}

fn caller(p: &Principal) -> Caller {
    Caller { principal: p.clone(), login: 1, client: "bench".into() }
}

fn login<S: Store>(t: &Token<S>, name: &str, password: &[u8]) -> Principal {
    t.authenticate(&Credentials { name, password, totp: None, cert_sha256: None }).unwrap()
}

fn b(t: AttrType, v: bool) -> (AttrType, AttrValue) {
    (t, AttrValue::Bool(v))
}

fn label(l: &str) -> (AttrType, AttrValue) {
    (AttrType::Label, AttrValue::Bytes(l.as_bytes().to_vec()))
}

fn report(store: &str, op: &str, n: usize, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    println!("{store:<9} {op:<34} {n:>6} {secs:>8.3} s {:>10.0} /s", n as f64 / secs);
}

fn run<S: Store>(name: &str, t: &Token<S>) {
    let keys = count("BULWARK_BENCH_KEYS", 300);
    let signs = count("BULWARK_BENCH_SIGNS", 3000);
    let admin = login(t, "admin", b"admin-password");
    as_caller(caller(&admin), || {
        t.create_user("keeper", Role::CryptoOfficer, b"keeper-password", None).unwrap();
    });
    let keeper = login(t, "keeper", b"keeper-password");
    as_caller(caller(&keeper), || {
        let start = Instant::now();
        for i in 0..keys {
            t.generate_key(
                KeyGenMechanism::AesKeyGen,
                &[
                    b(AttrType::Token, true),
                    label(&format!("aes-{i}")),
                    (AttrType::ValueLen, AttrValue::Ulong(32)),
                ],
                1,
            )
            .unwrap();
        }
        report(name, "create token AES key (durable)", keys, start);
        let (_, k) = t
            .generate_key_pair(
                KeyGenMechanism::EcKeyPairGen,
                &[
                    b(AttrType::Token, true),
                    label("ec"),
                    b(AttrType::Verify, true),
                    (AttrType::EcParams, AttrValue::Bytes(Curve::P256.oid_der().to_vec())),
                ],
                &[b(AttrType::Token, true), label("ec"), b(AttrType::Sign, true)],
                1,
            )
            .unwrap();
        t.sign(k, &Mechanism::EcdsaSha256, b"warm-up").unwrap();
        let start = Instant::now();
        for _ in 0..signs {
            t.sign(k, &Mechanism::EcdsaSha256, b"a message").unwrap();
        }
        report(name, "ECDSA P-256 sign (stored key)", signs, start);
        let start = Instant::now();
        for i in 0..keys {
            assert_eq!(t.find(&[label(&format!("aes-{i}"))]).unwrap().len(), 1);
        }
        report(name, "find by label", keys, start);
    });
    let start = Instant::now();
    let n = t.verify_store().unwrap();
    report(name, &format!("verify whole store ({n} objects)"), 1, start);
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    println!("{:<9} {:<34} {:>6} {:>10} {:>12}", "store", "operation", "n", "time", "rate");

    let path = dir.path().join("bench.db");
    let init = bulwark_core::seal::init_quorum_store_with_users(
        &path,
        "bench",
        3,
        2,
        &policy(),
        &[admin()],
    )
    .unwrap();
    let t = Token::open(&path).unwrap();
    unseal(&t, &SqliteStore::open(&path).unwrap(), &shares(&init));
    run("sqlite", &t);
    drop(t);
    raw("sqlite", &SqliteStore::open(&path).unwrap());

    let Some(server) = support::server() else { return };
    let db = support::Db::new(server);
    let base = dir.path().join("pg-node");
    let opts = PgOptions::default();
    let init = init_quorum(&db.url, &opts, Path::new(&base), "bench", 3, 2, &policy(), &[admin()])
        .unwrap();
    let t = Token::open_store(PgStore::open(&db.url, &opts).unwrap(), &base).unwrap();
    unseal(&t, &PgStore::open(&db.url, &opts).unwrap(), &shares(&init));
    run("postgres", &t);
    raw("postgres", &PgStore::open(&db.url, &opts).unwrap());
}

/// The store calls the kernel makes on every operation, alone.
fn raw<S: Store>(name: &str, s: &S) {
    let n = count("BULWARK_BENCH_SIGNS", 3000);
    let start = Instant::now();
    for _ in 0..n {
        s.change_counter().unwrap();
    }
    report(name, "change_counter (store alone)", n, start);
    let start = Instant::now();
    for _ in 0..n {
        s.header().unwrap();
    }
    report(name, "header (store alone)", n, start);
}
