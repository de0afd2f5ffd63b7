//! Sign throughput of the embedded token with the audit log on and off, by number of
//! concurrent callers. Every audited `Token::sign` returns only after its record is durable
//! (SQLite WAL, `synchronous=FULL`: one fsync per commit), so the cost is fsync latency
//! divided by the group-commit batch size, which grows with the number of concurrent callers.
//!
//! Each point is the best of three alternating off/on runs.
//! Run: `cargo bench -p bulwark-core --bench audit` (`BULWARK_BENCH_SECS` per run, default 2;
//! `BULWARK_BENCH_THREADS`, default "1,4,16,64,256").

#![allow(missing_docs, clippy::cast_precision_loss)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_core::attr::{AttrType, AttrValue};
use bulwark_core::crypto::Curve;
use bulwark_core::hierarchy::KdfParams;
use bulwark_core::mechanism::{KeyGenMechanism, Mechanism};
use bulwark_core::secret::Pin;
use bulwark_core::{Token, UserType};

fn rate(token: &Arc<Token>, key: u64, threads: usize, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (t, stop, count) = (token.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    t.sign(key, &Mechanism::EcdsaSha256, b"a 32-byte message to be signed..")
                        .unwrap();
                    n += 1;
                }
                count.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` smoke mode
    }
    let secs: f64 =
        std::env::var("BULWARK_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let threads: Vec<usize> = std::env::var("BULWARK_BENCH_THREADS")
        .unwrap_or_else(|_| "1,4,16,64,256".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = tempfile::Builder::new().prefix("bulwark-audit-bench").tempdir_in(".").unwrap();
    let path = dir.path().join("bench.db");
    let pin = Pin::new(b"bench-pin".to_vec());
    let fast = KdfParams { m_cost: 256, t_cost: 1, p_cost: 1 };
    Token::init_with(&path, "bench", &pin, Some(&pin), fast).unwrap();
    let on = Arc::new(Token::open(&path).unwrap());
    on.login(UserType::User, &pin).unwrap();
    let tok = (AttrType::Token, AttrValue::Bool(true));
    let key = on
        .generate_key_pair(
            KeyGenMechanism::EcKeyPairGen,
            &[tok.clone(), (AttrType::EcParams, AttrValue::Bytes(Curve::P256.oid_der().to_vec()))],
            &[tok],
            1,
        )
        .unwrap()
        .1;
    let off = Arc::new(Token::open_insecure_without_audit(&path).unwrap());
    off.login(UserType::User, &pin).unwrap();
    println!("ECDSA P-256 Token::sign throughput, audit off vs on ({secs} s per point)");
    println!("{:>8} {:>14} {:>14} {:>10}", "threads", "off (ops/s)", "on (ops/s)", "cost");
    for &n in &threads {
        // Alternate off/on three times and keep the best of each: the machine is shared, and
        // the best run is the least disturbed one.
        let (mut a, mut b) = (0f64, 0f64);
        for _ in 0..3 {
            a = a.max(rate(&off, key, n, secs));
            b = b.max(rate(&on, key, n, secs));
        }
        println!("{n:>8} {a:>14.0} {b:>14.0} {:>9.1}%", (1.0 - b / a) * 100.0);
    }
}
