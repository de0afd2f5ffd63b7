//! Backup and restore throughput (docs/backup.md): a store of N token keys (default 10 000;
//! `BULWARK_BENCH_KEYS` to change it) — nine AES-256 keys for every P-256 key pair — is backed
//! up with the production Argon2id costs and restored into a fresh store. Prints objects per
//! second and the file size; asserts nothing about speed. The store is filled by eight threads
//! (group commit); the populate time is printed too.
//!
//! `cargo bench -p bulwark-core --bench backup`

#![allow(missing_docs, clippy::cast_precision_loss)]

use std::time::Instant;

use bulwark_core::attr::{AttrType, AttrValue};
use bulwark_core::crypto::Curve;
use bulwark_core::hierarchy::KdfParams;
use bulwark_core::mechanism::KeyGenMechanism;
use bulwark_core::secret::{Pin, SecretBytes};
use bulwark_core::token::BACKUP_KDF;
use bulwark_core::{Token, UserType};

/// Populating threads: several, so creations are group-committed (one durable write per
/// group, not per key).
const THREADS: usize = 8;

const FAST: KdfParams = KdfParams { m_cost: 256, t_cost: 1, p_cost: 1 };

fn main() {
    let n: usize =
        std::env::var("BULWARK_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    let so = Pin::new(b"so-pin-1234".to_vec());
    let user = Pin::new(b"user-pin-1234".to_vec());
    let src = dir.path().join("src.db");
    Token::init_with(&src, "src", &so, Some(&user), FAST).unwrap();
    let t = Token::open(&src).unwrap();
    t.login(UserType::User, &user).unwrap();
    let start = Instant::now();
    std::thread::scope(|s| {
        for w in 0..THREADS {
            let t = &t;
            s.spawn(move || {
                let tok = (AttrType::Token, AttrValue::Bool(true));
                for i in (w..n).step_by(THREADS) {
                    let label = (AttrType::Label, AttrValue::Bytes(format!("k{i}").into_bytes()));
                    if i % 10 == 9 {
                        let params =
                            (AttrType::EcParams, AttrValue::Bytes(Curve::P256.oid_der().to_vec()));
                        t.generate_key_pair(
                            KeyGenMechanism::EcKeyPairGen,
                            &[tok.clone(), label.clone(), params],
                            &[tok.clone(), label, (AttrType::Sign, AttrValue::Bool(true))],
                            1,
                        )
                        .unwrap();
                    } else {
                        t.generate_key(
                            KeyGenMechanism::AesKeyGen,
                            &[tok.clone(), label, (AttrType::ValueLen, AttrValue::Ulong(32))],
                            1,
                        )
                        .unwrap();
                    }
                }
            });
        }
    });
    drop(t);
    println!("populated {n} keys in {:.1} s", start.elapsed().as_secs_f64());

    let pass = SecretBytes::from_slice(b"benchmark backup passphrase");
    let file = dir.path().join("b.bwb");
    let t = Token::open(&src).unwrap();
    t.login(UserType::So, &so).unwrap();
    let start = Instant::now();
    let s = t.backup(&file, &pass, BACKUP_KDF, &mut |_, _| {}).unwrap();
    let took = start.elapsed().as_secs_f64();
    drop(t);
    // Counts far below 2^52: exact in f64.
    let per_s = |count: u64, per: f64| count as f64 / per;
    println!(
        "backup:  {} objects in {took:.2} s = {:.0} objects/s (Argon2id {} KiB x {} included), \
         file {} bytes ({} bytes/object)",
        s.objects,
        per_s(s.objects, took),
        BACKUP_KDF.m_cost,
        BACKUP_KDF.t_cost,
        s.bytes,
        s.bytes / s.objects.max(1)
    );

    let dst = dir.path().join("dst.db");
    Token::init_with(&dst, "dst", &so, Some(&user), FAST).unwrap();
    let t = Token::open(&dst).unwrap();
    t.login(UserType::So, &so).unwrap();
    let start = Instant::now();
    let r = t.restore(&file, &pass, &mut |_, _| {}).unwrap();
    let took = start.elapsed().as_secs_f64();
    println!(
        "restore: {} objects in {took:.2} s = {:.0} objects/s (verify pass + one authenticated \
         write, Argon2id included)",
        r.objects,
        per_s(r.objects, took)
    );
    assert_eq!(r.objects, s.objects);
}
