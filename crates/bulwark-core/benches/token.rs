//! Per-operation cost of the embedded token on stored (token-object) keys with a warm key
//! cache: `Token::sign` / `encrypt` (which re-check visibility, usage policy and the store's
//! change counter on every call) and an operation on the prepared key that `Hsm::prepare`
//! returns (what the PKCS#11 module does after `C_SignInit`), each next to the raw aws-lc-rs
//! call. The difference is the core's overhead. The store is created with
//! `audit_key_use = off` (key uses are not written to the audit log), so these figures are the
//! token's own cost; see `benches/audit.rs` for the cost of the `bounded` (default) and
//! `durable` records.

#![allow(missing_docs, clippy::wildcard_imports, clippy::cloned_ref_to_slice_refs)]

use std::sync::OnceLock;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair};
use bulwark_core::attr::{AttrType, AttrValue, ObjectClass};
use bulwark_core::crypto::Curve;
use bulwark_core::hierarchy::KdfParams;
use bulwark_core::hsm::Hsm as _;
use bulwark_core::mechanism::{DigestAlg, KeyGenMechanism, Mechanism};
use bulwark_core::secret::Pin;
use bulwark_core::token::{InitOptions, SecurityPolicy, Usage};
use bulwark_core::{Token, UserType};
use divan::{black_box, Bencher};

fn main() {
    divan::main();
}

const MSG: &[u8] = b"a 32-byte message to be signed..";

struct Fixture {
    _dir: tempfile::TempDir,
    token: Token,
    ec: u64,
    ed: u64,
    aes: u64,
    hmac: u64,
}

fn fx() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.db");
        let pin = Pin::new(b"bench-pin".to_vec());
        let fast = KdfParams { m_cost: 256, t_cost: 1, p_cost: 1 };
        let opts = InitOptions {
            kdf: fast,
            policy: SecurityPolicy {
                audit_key_use: bulwark_core::audit::AuditKeyUse::Off,
                ..SecurityPolicy::default()
            },
        };
        Token::init_with_options(&path, "bench", &pin, Some(&pin), &opts).unwrap();
        let token = Token::open(&path).unwrap();
        token.login(UserType::User, &pin).unwrap();
        let tok = (AttrType::Token, AttrValue::Bool(true));
        let ec = token
            .generate_key_pair(
                KeyGenMechanism::EcKeyPairGen,
                &[
                    tok.clone(),
                    (AttrType::EcParams, AttrValue::Bytes(Curve::P256.oid_der().to_vec())),
                ],
                &[tok.clone()],
                1,
            )
            .unwrap()
            .1;
        let ed = token
            .generate_key_pair(
                KeyGenMechanism::EcEdwardsKeyPairGen,
                &[tok.clone()],
                &[tok.clone()],
                1,
            )
            .unwrap()
            .1;
        let aes = token
            .generate_key(
                KeyGenMechanism::AesKeyGen,
                &[tok.clone(), (AttrType::ValueLen, AttrValue::Ulong(32))],
                1,
            )
            .unwrap();
        let hmac = token
            .generate_key(
                KeyGenMechanism::GenericSecretKeyGen,
                &[tok, (AttrType::ValueLen, AttrValue::Ulong(32))],
                1,
            )
            .unwrap();
        Fixture { _dir: dir, token, ec, ed, aes, hmac }
    })
}

fn gcm() -> Mechanism {
    Mechanism::AesGcm { iv: vec![7; 12], aad: Vec::new(), tag_bits: 128 }
}

#[divan::bench_group]
mod ecdsa_p256_sign {
    use super::*;

    #[divan::bench]
    fn token_sign(b: Bencher) {
        let f = fx();
        b.bench(|| f.token.sign(f.ec, &Mechanism::EcdsaSha256, black_box(MSG)).unwrap());
    }

    /// The prepared key the PKCS#11 module holds after C_SignInit: each use passes the gate
    /// (two atomic loads and a clock read on the fast path).
    #[divan::bench]
    fn prepared(b: Bencher) {
        let f = fx();
        let k = f.token.prepare(f.ec, Usage::Sign, &Mechanism::EcdsaSha256).unwrap();
        b.bench(|| k.sign(&Mechanism::EcdsaSha256, black_box(MSG)).unwrap());
    }

    #[divan::bench]
    fn raw(b: Bencher) {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let kp =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref())
                .unwrap();
        b.bench(|| kp.sign(&rng, black_box(MSG)).unwrap());
    }
}

#[divan::bench_group]
mod ed25519_sign {
    use super::*;

    #[divan::bench]
    fn token_sign(b: Bencher) {
        let f = fx();
        b.bench(|| f.token.sign(f.ed, &Mechanism::EdDsa(None), black_box(MSG)).unwrap());
    }

    #[divan::bench]
    fn raw(b: Bencher) {
        let kp = Ed25519KeyPair::generate().unwrap();
        b.bench(|| kp.sign(black_box(MSG)));
    }
}

#[divan::bench_group]
mod aes256_gcm_4k {
    use super::*;

    #[divan::bench]
    fn token_encrypt(b: Bencher) {
        let f = fx();
        let data = vec![5u8; 4096];
        let m = gcm();
        b.bench(|| f.token.encrypt(f.aes, &m, black_box(&data)).unwrap());
    }

    #[divan::bench]
    fn raw(b: Bencher) {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[3; 32]).unwrap());
        let data = vec![5u8; 4096];
        b.bench(|| {
            let mut buf = black_box(&data).clone();
            key.seal_in_place_append_tag(
                Nonce::assume_unique_for_key([7; 12]),
                Aad::empty(),
                &mut buf,
            )
            .unwrap();
            buf
        });
    }
}

#[divan::bench_group]
mod hmac_sha256_64b {
    use super::*;

    #[divan::bench]
    fn token_sign(b: Bencher) {
        let f = fx();
        let data = [9u8; 64];
        let m = Mechanism::Hmac(DigestAlg::Sha256);
        b.bench(|| f.token.sign(f.hmac, &m, black_box(&data)).unwrap());
    }

    #[divan::bench]
    fn raw(b: Bencher) {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[1; 32]);
        let data = [9u8; 64];
        b.bench(|| hmac::sign(&key, black_box(&data)));
    }
}

/// A full verification of the store (every row's MAC and the set commitment), by store size:
/// what an unlock costs when the store is not yet verified in the process, and what another
/// connection's commit costs a quorum store.
#[divan::bench_group(sample_count = 10)]
mod verify_store {
    use super::*;

    fn store_of(n: usize) -> (tempfile::TempDir, Token) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("verify.db");
        let pin = Pin::new(b"bench-pin".to_vec());
        let opts = InitOptions {
            kdf: KdfParams { m_cost: 256, t_cost: 1, p_cost: 1 },
            policy: SecurityPolicy {
                audit_key_use: bulwark_core::audit::AuditKeyUse::Off,
                ..SecurityPolicy::default()
            },
        };
        Token::init_with_options(&path, "bench", &pin, Some(&pin), &opts).unwrap();
        let token = Token::open(&path).unwrap();
        token.login(UserType::User, &pin).unwrap();
        for i in 0..n {
            let t = [
                (AttrType::Class, AttrValue::Ulong(ObjectClass::Data.to_raw())),
                (AttrType::Token, AttrValue::Bool(true)),
                (AttrType::Label, AttrValue::Bytes(format!("object-{i}").into_bytes())),
                (AttrType::Value, AttrValue::Bytes(vec![7; 64])),
            ];
            token.create_object(&t, 1).unwrap();
        }
        (dir, token)
    }

    #[divan::bench(args = [1_000, 10_000])]
    fn rows(b: Bencher, n: usize) {
        let (_dir, token) = store_of(n);
        b.bench(|| token.verify_store().unwrap());
    }
}
