//! What the audit log costs.
//!
//! 1. `AuditLog` alone: the cost of one record in the `durable` class (returns once its record
//!    is synced: one WAL `fdatasync`, shared by concurrent callers through group commit) and in
//!    the `bounded` class (sequenced and chained in memory; written and synced by the flusher
//!    within the window), by number of concurrent callers; and the cost of counting one use on
//!    a pre-registered `UseCounter` (one relaxed atomic add).
//! 2. ECDSA P-256 `Token::sign` throughput on three stores that differ only in
//!    `audit_key_use` (`off`, `bounded`, `durable`), by number of concurrent callers.
//!
//! Figures, never assertions. Each point is the best of `BULWARK_BENCH_RUNS` (default 2) runs
//! of `BULWARK_BENCH_SECS` (default 1) seconds; `BULWARK_BENCH_THREADS` (default "1,4,16,64")
//! are the caller counts. The store lives in a temporary directory under the current one (a
//! real disk, not tmpfs). Run: `cargo bench -p bulwark-core --bench audit`, or
//! `scripts/audit-bench.sh` to regenerate the tables in docs/benchmarks-core.md. The tables are
//! printed between `--- tables ---` and `--- end ---`.

#![allow(missing_docs, clippy::cast_precision_loss)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_core::attr::{AttrType, AttrValue};
use bulwark_core::audit::{
    Actor, AuditEvent, AuditKeyUse, AuditLog, CheckpointPolicy, Durability, UseKey,
};
use bulwark_core::crypto::Curve;
use bulwark_core::hierarchy::KdfParams;
use bulwark_core::mechanism::{KeyGenMechanism, Mechanism};
use bulwark_core::secret::Pin;
use bulwark_core::token::{InitOptions, SecurityPolicy};
use bulwark_core::{Token, UserType};

/// Runs `op` on `threads` threads for `secs` seconds; returns operations per second.
fn rate(threads: usize, secs: f64, op: &(dyn Fn() + Sync)) -> f64 {
    let stop = AtomicBool::new(false);
    let count = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    op();
                    n += 1;
                }
                count.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
    });
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn best(runs: usize, f: impl Fn() -> f64) -> f64 {
    (0..runs).map(|_| f()).fold(0.0, f64::max)
}

fn per_op(ops_per_sec: f64) -> String {
    let ns = 1e9 / ops_per_sec;
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn log_costs(dir: &Path, threads: &[usize], secs: f64, runs: usize) {
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id).unwrap();
    let log = AuditLog::open(&dir.join("log.db"), id, true, CheckpointPolicy::default()).unwrap();
    let ev = AuditEvent {
        actor: Actor { name: "user".into(), role: "crypto-user".into(), client: "bench".into() },
        op: "sign",
        mechanism: Some(0x1041),
        object: "0123456789abcdef0123456789abcdef".into(),
        label: "web-tls".into(),
        result: "ok",
        ..AuditEvent::default()
    };
    println!("### One audit record, by durability class\n");
    println!("Window: {:?} or {} records.\n", log.window().max_delay, log.window().max_records);
    println!("| callers | durable (records/s) | durable (per record, one caller's wait) | bounded (records/s) | bounded (per record, per caller) |");
    println!("|---:|---:|---:|---:|---:|");
    for &n in threads {
        let d = best(runs, || {
            rate(n, secs, &|| {
                log.append(&ev).unwrap();
            })
        });
        let b = best(runs, || {
            rate(n, secs, &|| {
                log.append_with(&ev, Durability::Bounded).unwrap();
            })
        });
        println!("| {n} | {d:.0} | {} | {b:.0} | {} |", per_op(d / n as f64), per_op(b / n as f64));
        log.flush().unwrap();
    }
    println!();
    println!("### Counting one use of a prepared key (`UseCounter::hit`)\n");
    println!("| callers | hits/s | per hit, per caller |");
    println!("|---:|---:|---:|");
    let actor = Actor { name: "user".into(), role: "crypto-user".into(), client: "bench".into() };
    for &n in threads.iter().filter(|&&n| n <= 4) {
        let counters: Vec<_> = (0..n)
            .map(|t| {
                log.use_counter(UseKey::new(&actor, t as u64, "sign", Some(0x1041), "ab", "k"))
            })
            .collect();
        let next = AtomicU64::new(0);
        let r = best(runs, || {
            next.store(0, Ordering::Relaxed);
            let stop = AtomicBool::new(false);
            let count = AtomicU64::new(0);
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..n {
                    s.spawn(|| {
                        let i = usize::try_from(next.fetch_add(1, Ordering::Relaxed)).unwrap();
                        let c = &counters[i % counters.len()];
                        let mut k = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            for _ in 0..1000 {
                                c.hit();
                            }
                            k += 1000;
                        }
                        count.fetch_add(k, Ordering::Relaxed);
                    });
                }
                std::thread::sleep(Duration::from_secs_f64(secs));
                stop.store(true, Ordering::Relaxed);
            });
            count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
        });
        println!("| {n} | {r:.0} | {} |", per_op(r / n as f64));
    }
    println!();
    drop(log);
}

fn token(dir: &Path, name: &str, policy: AuditKeyUse, pin: &Pin) -> (Arc<Token>, u64) {
    let path = dir.join(format!("{name}.db"));
    let opts = InitOptions {
        kdf: KdfParams { m_cost: 256, t_cost: 1, p_cost: 1 },
        policy: SecurityPolicy { audit_key_use: policy, ..SecurityPolicy::default() },
    };
    Token::init_with_options(&path, "bench", pin, Some(pin), &opts).unwrap();
    let t = Arc::new(Token::open(&path).unwrap());
    t.login(UserType::User, pin).unwrap();
    let tok = (AttrType::Token, AttrValue::Bool(true));
    let key = t
        .generate_key_pair(
            KeyGenMechanism::EcKeyPairGen,
            &[tok.clone(), (AttrType::EcParams, AttrValue::Bytes(Curve::P256.oid_der().to_vec()))],
            &[tok],
            1,
        )
        .unwrap()
        .1;
    (t, key)
}

fn sign_costs(dir: &Path, threads: &[usize], secs: f64, runs: usize) {
    let pin = Pin::new(b"bench-pin".to_vec());
    let stores: Vec<(AuditKeyUse, Arc<Token>, u64)> =
        [AuditKeyUse::Off, AuditKeyUse::Bounded, AuditKeyUse::Durable]
            .into_iter()
            .map(|p| {
                let (t, k) = token(dir, p.as_str(), p, &pin);
                (p, t, k)
            })
            .collect();
    println!("### ECDSA P-256 `Token::sign` by `audit_key_use`\n");
    println!("| callers | off (signs/s) | bounded (signs/s) | bounded vs off | durable (signs/s) | durable vs off |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for &n in threads {
        // Alternate the stores and keep each one's best run: the machine is shared, and the
        // best run is the least disturbed one.
        let mut r = [0f64; 3];
        for _ in 0..runs {
            for (i, (_, t, k)) in stores.iter().enumerate() {
                let v = rate(n, secs, &|| {
                    t.sign(*k, &Mechanism::EcdsaSha256, b"a 32-byte message to be signed..")
                        .unwrap();
                });
                r[i] = r[i].max(v);
            }
        }
        println!(
            "| {n} | {:.0} | {:.0} | {:+.1} % | {:.0} | {:+.1} % |",
            r[0],
            r[1],
            (r[1] / r[0] - 1.0) * 100.0,
            r[2],
            (r[2] / r[0] - 1.0) * 100.0
        );
    }
    println!();
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` smoke mode
    }
    let env = |k: &str| std::env::var(k).ok();
    let secs: f64 = env("BULWARK_BENCH_SECS").and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let runs: usize = env("BULWARK_BENCH_RUNS").and_then(|s| s.parse().ok()).unwrap_or(2);
    let threads: Vec<usize> = env("BULWARK_BENCH_THREADS")
        .unwrap_or_else(|| "1,4,16,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = tempfile::Builder::new().prefix("bulwark-audit-bench").tempdir_in(".").unwrap();
    // Marks of these throw-away logs go to the temporary directory, not the user's state.
    std::env::set_var("BULWARK_STATE_DIR", dir.path().join("state"));
    println!("--- tables ---");
    log_costs(dir.path(), &threads, secs, runs);
    sign_costs(dir.path(), &threads, secs, runs);
    println!("--- end ---");
}
